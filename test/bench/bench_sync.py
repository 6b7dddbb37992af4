#!/usr/bin/python3
"""The sync worker's speed: backfill rows/s per API fake, and pgbench -S during a backfill.

Starts a throwaway PostgreSQL 15 cluster (as bench.py does), the fakes of test/fakes/ filled
with records "directly in the API", and for each API a syncbouncer whose one synced table has
no cursor yet, so that it starts with a backfill; the budget is lifted (rate_limit=100000,
sync_budget=100) so that the fake and the database set the pace. Reported:

  backfill   per API: records, seconds from the pooler's start to the end of the backfill
             (SHOW SYNCED_TABLES: sync_state idle with backfill_rows = records), rows/s
  reads      pgbench -S -c 10 -j 2 -T <t> through a syncbouncer, while a Salesforce
             backfill runs and after it ended, --rounds times (SYNC BACKFILL starts the next):
             median tps of both and their ratio per round

Benchmarks are not tests: nothing here passes or fails on speed. Run as root (drops to the
`postgres` OS user) or as a user that can run initdb:

    test/bench/bench_sync.py --syncbouncer /tmp/build-bench/syncbouncer [--records 100000]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench  # noqa: E402  (Cluster, Pooler, pgbench, ports)

FAKES = os.path.join(bench.SRC_DIR, "test", "fakes")


class Fake:
    def __init__(self, script, *args):
        self.port = bench.free_port()
        self.proc = subprocess.Popen([bench.PY, script, "--port", str(self.port), *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     preexec_fn=bench.die_with_parent)
        line = self.proc.stdout.readline().decode()
        if "listening" not in line:
            raise RuntimeError(f"{script}: {line}")
        self.url = f"http://127.0.0.1:{self.port}"

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=600) as r:
            raw = r.read()
            return json.loads(raw) if raw else None

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


TABLES = """
CREATE SCHEMA salesforce AUTHORIZATION app;
CREATE TABLE salesforce.contacts (id text PRIMARY KEY, first_name text, last_name text,
                                  email text);
CREATE SCHEMA hubspot AUTHORIZATION app;
CREATE TABLE hubspot.contacts (id text PRIMARY KEY, firstname text, lastname text, email text);
CREATE SCHEMA stripe AUTHORIZATION app;
CREATE TABLE stripe.customers (id text PRIMARY KEY, email text, name text, created bigint);
CREATE SCHEMA internal AUTHORIZATION app;
CREATE TABLE internal.contacts (id text PRIMARY KEY, name text, email text, version bigint);
ALTER TABLE salesforce.contacts OWNER TO app;
ALTER TABLE hubspot.contacts OWNER TO app;
ALTER TABLE stripe.customers OWNER TO app;
ALTER TABLE internal.contacts OWNER TO app;
"""


def admin_show(pooler):
    out = subprocess.run([os.path.join(bench.PG_BIN, "psql"), "-X", "-At", "-F", "\t", "-h",
                          "127.0.0.1", "-p", str(pooler.port), "-U", bench.USER, "-d",
                          "pgbouncer", "-c", "SHOW SYNCED_TABLES"], env=bench.client_env(),
                         capture_output=True, text=True)
    cols = ["database", "table", "api", "object", "state", "inserts", "updates", "deletes",
            "rejected", "error", "sync_state", "last_sync", "sync_lag_s", "synced_rows",
            "backfill_rows", "backfill_total"]
    return [dict(zip(cols, line.split("\t"))) for line in out.stdout.splitlines()]


def sync_pooler(workdir, pg, api_line, table_line):
    extra = (f"admin_users = {bench.USER}\n\n[apis]\n{api_line}\n\n"
             f"[synced_tables]\n{table_line}\n")
    return bench.Pooler("syncbouncer", ARGS.syncbouncer, workdir, pg, "transaction", extra)


def backfill_done(pooler, n):
    """The first pass (the backfill) ended; n records are in the table."""
    rows = admin_show(pooler)
    return rows and rows[0]["sync_state"] == "idle" and rows[0]["last_sync"] != ""


def wait(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up waiting for {what}")
        time.sleep(0.05)


def main():
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--syncbouncer", default=os.environ.get("SB_BIN", bench.DEFAULT_SB))
    ap.add_argument("--records", type=int, default=100000, help="records per API (default 100000)")
    ap.add_argument("--read-records", type=int, default=300000,
                    help="Salesforce records of the backfill pgbench runs beside")
    ap.add_argument("-T", type=int, default=10, help="pgbench seconds")
    ap.add_argument("--rounds", type=int, default=3,
                    help="during/after pairs of pgbench runs (the report gives medians)")
    ap.add_argument("--output")
    ARGS = ap.parse_args()
    bench.drop_root()
    base = tempfile.mkdtemp(prefix="sb-bench-sync-")
    os.chmod(base, 0o755)
    pg = bench.Cluster(base)
    fakes = []
    poolers = []
    lines = []
    try:
        bench.log("postgres")
        pg.start()
        pg.sql(f"CREATE ROLE {bench.USER} LOGIN PASSWORD '{bench.PASSWORD}'", db="postgres")
        pg.sql(f"CREATE DATABASE {bench.DB} OWNER {bench.USER}", db="postgres")
        pg.sql(TABLES)
        subprocess.run([os.path.join(bench.PG_BIN, "pgbench"), "-i", "-s", "10", "-q", "-h",
                        "127.0.0.1", "-p", str(pg.port), "-U", bench.USER, bench.DB],
                       env=bench.client_env(), check=True, capture_output=True)
        n = ARGS.records
        sf = Fake(os.path.join(HERE, "fake_salesforce_nodelay.py"))
        hs = Fake(os.path.join(FAKES, "fake_hubspot.py"), "--token", "hs-token")
        st = Fake(os.path.join(FAKES, "fake_stripe.py"))
        rs = Fake(os.path.join(FAKES, "fake_rest.py"))
        fakes += [sf, hs, st, rs]
        bench.log(f"filling the fakes with {n} records each")
        sf.call("POST", "/_records", {"object": "Contact", "op": "create", "count": n,
                                      "fields": {"FirstName": "F{n}", "LastName": "L{n}",
                                                 "Email": "c{n}@example.com"}})
        hs.call("POST", "/_records", {"op": "create", "count": n, "properties": {
            "firstname": "F{n}", "lastname": "L{n}", "email": "h{n}@example.com"}})
        st.call("POST", "/_records", {"op": "create", "count": n, "fields": {
            "email": "s{n}@example.com", "name": "S{n}"}})
        rs.call("POST", "/_records", {"op": "create", "count": n, "fields": {
            "name": "R{n}", "email": "r{n}@example.com"}})
        unlimited = "rate_limit=100000 sync_budget=100"
        cases = [
            ("salesforce", f"salesforce = type=salesforce base_url={sf.url} auth=oauth2 "
             f"token_url={sf.url}/services/oauth2/token client_id=test-client-id "
             f"client_secret=test-client-secret refresh_token=test-refresh-token {unlimited}",
             f"{bench.DB}.salesforce.contacts = api=salesforce object=Contact user=app "
             "sync_interval=0"),
            ("hubspot", f"hubspot = type=hubspot base_url={hs.url} auth=bearer token=hs-token "
             f"{unlimited}",
             f"{bench.DB}.hubspot.contacts = api=hubspot object=contacts user=app "
             "sync_interval=0 page_size=200"),
            ("stripe", f"stripe = type=stripe base_url={st.url} auth=bearer token=sk_test_fake "
             f"{unlimited}",
             f"{bench.DB}.stripe.customers = api=stripe object=customers user=app "
             "sync_interval=0"),
            ("rest", f"internal = type=rest base_url={rs.url} auth=none path=/contacts "
             "list_path=/contacts changed_since=updated_since cursor_field=version "
             f"deleted_field=deleted list_key=data {unlimited}",
             f"{bench.DB}.internal.contacts = api=internal user=app sync_interval=0 "
             "page_size=1000"),
        ]
        results = []
        for name, api_line, table_line in cases:
            bench.log(f"{name}: backfill of {n}")
            p = sync_pooler(base, pg, api_line, table_line)
            poolers.append(p)
            t0 = time.monotonic()
            p.start()
            wait(lambda: backfill_done(p, n), 3600, f"{name}'s backfill")
            secs = time.monotonic() - t0
            schema_table = table_line.split(" ")[0].split(".", 1)[1]
            got = int(pg.sql(f"SELECT count(*) FROM {schema_table}"))
            if got != n:
                raise RuntimeError(f"{name}: {got} rows after the backfill, not {n}")
            results.append((name, n, secs))
            p.stop()
        # reads beside a backfill
        m = ARGS.read_records
        bench.log(f"reads: {m} more Salesforce records, pgbench -S during and after a backfill")
        sf.call("POST", "/_records", {"object": "Contact", "op": "create", "count": m - n,
                                      "fields": {"LastName": "X{n}"}})
        pg.sql("DROP SCHEMA syncbouncer CASCADE; TRUNCATE salesforce.contacts")
        p = sync_pooler(base, pg, cases[0][1], cases[0][2])
        poolers.append(p)
        p.start()
        durings, afters, overlapped = [], [], True
        for r in range(ARGS.rounds):
            if r > 0:
                # the same backfill again, over the loaded table (upserts of every row)
                subprocess.run([os.path.join(bench.PG_BIN, "psql"), "-X", "-q", "-h", "127.0.0.1",
                                "-p", str(p.port), "-U", bench.USER, "-d", "pgbouncer", "-c",
                                f"SYNC BACKFILL {bench.DB}.salesforce.contacts"],
                               env=bench.client_env(), check=True, capture_output=True)
            wait(lambda: (admin_show(p) or [{}])[0].get("sync_state") == "backfilling", 60,
                 "the backfill's start")
            durings.append(bench.pgbench(p.port, ["-S", "-c", "10", "-j", "2", "-T", str(ARGS.T)],
                                         ARGS.T + 120))
            overlapped = overlapped and admin_show(p)[0]["sync_state"] == "backfilling"
            wait(lambda: admin_show(p)[0]["sync_state"] == "idle", 3600, "the big backfill")
            afters.append(bench.pgbench(p.port, ["-S", "-c", "10", "-j", "2", "-T", str(ARGS.T)],
                                        ARGS.T + 120))
            bench.log(f"round {r + 1}: during {durings[-1]['tps']:.0f} tps, "
                      f"after {afters[-1]['tps']:.0f} tps")
        if int(pg.sql("SELECT count(*) FROM salesforce.contacts")) != m:
            raise RuntimeError("the big backfill did not load every record")
        p.stop()
        med = lambda runs, k: statistics.median(x[k] for x in runs)
        during = {"tps": med(durings, "tps"), "lat_ms": med(durings, "lat_ms")}
        after = {"tps": med(afters, "tps"), "lat_ms": med(afters, "lat_ms")}
        ratios = [d["tps"] / a["tps"] for d, a in zip(durings, afters)]
        lines.append("## Backfill speed (fakes on loopback, budget lifted)\n")
        lines.append("| API | records | seconds | rows/s |")
        lines.append("|---|---|---|---|")
        for name, count, secs in results:
            lines.append(f"| {name} | {count} | {secs:.1f} | {count / secs:.0f} |")
        lines.append("")
        lines.append(f"## pgbench -S -c 10 -j 2 -T {ARGS.T} through syncbouncer "
                     f"(medians of {ARGS.rounds} rounds)\n")
        lines.append("| when | tps | latency ms |")
        lines.append("|---|---|---|")
        lines.append(f"| during a backfill of {m} Salesforce records | {during['tps']:.0f} | "
                     f"{during['lat_ms']:.3f} |")
        lines.append(f"| after it | {after['tps']:.0f} | {after['lat_ms']:.3f} |")
        lines.append(f"\nratio during/after: {during['tps'] / after['tps']:.2f} (per round: "
                     f"{', '.join(f'{x:.2f}' for x in ratios)})"
                     f"{'' if overlapped else '; a backfill ended before its pgbench did'}")
        text = "\n".join(lines) + "\n"
        print(text)
        if ARGS.output:
            with open(ARGS.output, "w") as f:
                f.write(text)
    finally:
        for p in poolers:
            try:
                p.stop()
            except Exception:
                pass
        for f in fakes:
            f.stop()
        pg.stop()
        if not os.environ.get("SB_KEEP_TMP"):
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
