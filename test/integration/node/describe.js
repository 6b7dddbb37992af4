// node-pg against a synced table (test_synced_statements.py): a named statement with RETURNING
// run twice as applications run it, then a batch that describes its statement before it runs
// (Parse, Describe statement, Bind, Execute, Sync). Prints one JSON object.
// Usage: node describe.js <postgres URL>   (NODE_PATH holds the pg module)
"use strict";
const { Client } = require("pg");

const TEXT =
  "insert into salesforce.contacts (last_name) values ($1) " +
  "returning id, length(last_name) as n";

function fields(res) {
  return res.fields.map((f) => [f.name, f.dataTypeID]);
}

async function rawBatch(client, name, value) {
  // the driver's own protocol layer, as asyncpg and JDBC use it: describe before execute
  const con = client.connection;
  const seen = [];
  const names = [
    "parseComplete", "parameterDescription", "rowDescription", "noData", "bindComplete",
    "dataRow", "commandComplete", "readyForQuery", "errorMessage",
  ];
  const handlers = {};
  await new Promise((resolve) => {
    for (const n of names) {
      handlers[n] = (msg) => {
        if (n === "parameterDescription") seen.push([n, msg.dataTypeIDs]);
        else if (n === "rowDescription") seen.push([n, msg.fields.map((f) => [f.name, f.dataTypeID])]);
        else if (n === "dataRow") seen.push([n, msg.fields.map((f) => f && f.toString())]);
        else if (n === "commandComplete") seen.push([n, msg.text]);
        else if (n === "errorMessage") seen.push([n, msg.code, msg.message]);
        else seen.push([n]);
        if (n === "readyForQuery") resolve();
      };
      con.on(n, handlers[n]);
    }
    con.parse({ name, text: TEXT, types: [] });
    con.describe({ type: "S", name });
    con.bind({ statement: name, values: [value] });
    con.execute({ portal: "", rows: 0 });
    con.sync();
  });
  for (const n of names) con.removeListener(n, handlers[n]);
  return seen;
}

async function main() {
  const client = new Client({ connectionString: process.argv[2] });
  await client.connect();
  const out = { runs: [] };
  for (const last of ["Atreides", "Harkonnen"]) {
    const res = await client.query({ name: "ins", text: TEXT, values: [last] });
    out.runs.push({ fields: fields(res), n: res.rows[0].n, command: res.command });
  }
  await client.end();
  // a client of its own for the raw batch: the driver's query queue is not in the way
  const raw = new Client({ connectionString: process.argv[2] });
  await raw.connect();
  // pg's Client handles these messages too: keep it from acting on them
  raw.connection.removeAllListeners("rowDescription");
  raw.connection.removeAllListeners("dataRow");
  raw.connection.removeAllListeners("commandComplete");
  raw.connection.removeAllListeners("readyForQuery");
  raw.connection.removeAllListeners("parseComplete");
  raw.connection.removeAllListeners("bindComplete");
  raw.connection.removeAllListeners("noData");
  out.batch = await rawBatch(raw, "described", "Idaho");
  raw.connection.end();
  process.stdout.write(JSON.stringify(out) + "\n");
}

main().catch((e) => {
  process.stdout.write(JSON.stringify({ error: String(e && e.stack ? e.stack : e) }) + "\n");
  process.exit(1);
});
