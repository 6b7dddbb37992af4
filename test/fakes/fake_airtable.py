#!/usr/bin/env python3
"""A fake Airtable Web API for tests of type=airtable (Python standard library only).

  GET    /v0/<base>/<table>?pageSize=N&offset=O&filterByFormula=F   list records
         {"records": [{"id", "createdTime", "fields"}], "offset"} (offset while more follow;
         an offset is valid for the listing it came from); F may be
         LAST_MODIFIED_TIME()>='<ISO time>' (also > ) or {Field}="text" (\\ escapes " and
         \\); anything else is a 422 INVALID_FILTER_BY_FORMULA; maxRecords=N caps the listing
  GET    /v0/<base>/<table>/<rec…>  one record {"id", "createdTime", "fields"}, or 404
         {"error": "NOT_FOUND"}
  POST   /v0/<base>/<table>     {"records": [{"fields"}]} (at most 10) -> {"records": [...]}
  PATCH  /v0/<base>/<table>     {"records": [{"id", "fields"}]} -> {"records": [...]}; with
         "performUpsert": {"fieldsToMergeOn": [F]} the records carry no id: one whose F
         matches a record's is merged into it, else created; the answer adds
         "createdRecords" and "updatedRecords" (ids)
  DELETE /v0/<base>/<table>?records[]=rec...  -> {"records": [{"id", "deleted": true}]}
Ids are "rec" + 14 characters; every change stamps the record's last modified time (kept by
the fake, not a field, as in a base without a "Last modified time" field). Needs
"Authorization: Bearer <--token>". Answers carry a Date header (Airtable's clock).

Control API: POST /_records {"table": "Contacts", "op": "create", "fields": {...},
"count": N} -> {"ids": [...]}, {"op": "update", "id", "fields"}, {"op": "delete", "id"}: changes
made directly in Airtable; POST /_control {"fail_status", "fail_count", "list_delay_ms" (list
calls answer that much later, after the page was read), "delay_ms" (a write is applied at once
but answered that much later), "reset"};
GET /_requests; GET /_store.
Run: python3 test/fakes/fake_airtable.py --port N  (prints "listening on N" when ready).
"""
import argparse
import calendar
import http.server
import json
import re
import threading
import time
import urllib.parse

FORMULA_RE = re.compile(r"^\s*LAST_MODIFIED_TIME\(\)\s*(>=|>)\s*'([^']+)'\s*$")
EQUALS_RE = re.compile(r'^\s*\{([^}]+)\}\s*=\s*"((?:[^"\\]|\\.)*)"\s*$')


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03dZ" % int((t % 1) * 1000)


def parse_iso(text):
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?Z$", text)
    if not m:
        raise ValueError(text)
    base = calendar.timegm(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S"))
    return base + (float("0." + m.group(2)) if m.group(2) else 0.0)


class State:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        self.tables = {}   # table -> id -> {"id", "createdTime", "fields", "_mod"}
        self.counter = 0
        self.listings = {}
        self.listing_serial = 0
        self.log = []
        self.fail_status = 0
        self.fail_count = -1
        self.list_delay_ms = 0
        self.delay_ms = 0

    def new_id(self):
        self.counter += 1
        return "rec%014d" % self.counter

    def save(self, table, rid, fields):
        recs = self.tables.setdefault(table, {})
        now = time.time()
        rec = recs.get(rid) or {"id": rid, "createdTime": iso(now), "fields": {}}
        for k, v in fields.items():
            if v is None or v == "":
                rec["fields"].pop(k, None)
            else:
                rec["fields"][k] = v
        rec["_mod"] = now
        recs[rid] = rec
        return rec


def public(rec):
    return {k: v for k, v in rec.items() if not k.startswith("_")}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeAirtable/1.0"

    def log_message(self, fmt, *args):
        pass

    def send(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)  # adds Date
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def error(self, status, etype, message):
        self.send(status, {"error": {"type": etype, "message": message}})

    def dispatch(self, method):
        st = self.server.state
        url = urllib.parse.urlsplit(self.path)
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n > 0 else b""
        if url.path.startswith("/_"):
            return self.control(method, url.path, raw)
        with st.lock:
            st.log.append({"method": method, "path": url.path, "query": url.query,
                           "time": time.time()})
            if self.headers.get("Authorization") != "Bearer " + st.args.token:
                return self.error(401, "AUTHENTICATION_REQUIRED", "Authentication required")
            if st.fail_status and st.fail_count != 0:
                if st.fail_count > 0:
                    st.fail_count -= 1
                return self.error(st.fail_status, "SERVER_ERROR", "fake failure")
            parts = [urllib.parse.unquote(p) for p in url.path.split("/") if p]
            if len(parts) == 4 and parts[0] == "v0" and method == "GET":
                rec = st.tables.get(parts[2], {}).get(parts[3])
                if rec is None:
                    return self.send(404, {"error": "NOT_FOUND"})
                return self.send(200, public(rec))
            if len(parts) != 3 or parts[0] != "v0":
                return self.error(404, "NOT_FOUND", "Could not find what you are looking for")
            table = parts[2]
            q = urllib.parse.parse_qs(url.query)
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                return self.error(422, "INVALID_REQUEST_UNKNOWN", "Invalid request: bad JSON")
            if method == "GET":
                return self.list(table, q)
            if method in ("POST", "PATCH"):
                recs = body.get("records")
                if not isinstance(recs, list) or len(recs) > 10:
                    return self.error(422, "INVALID_RECORDS", "records must be a list of at most 10")
                out = []
                upsert = body.get("performUpsert") if method == "PATCH" else None
                if upsert is not None:
                    merge = (upsert.get("fieldsToMergeOn") or [None])[0]
                    created, updated = [], []
                    for r in recs:
                        fields = r.get("fields") or {}
                        same = [x for x in st.tables.get(table, {}).values()
                                if merge and x["fields"].get(merge) == fields.get(merge)]
                        if len(same) > 1 or merge not in fields:
                            return self.error(422, "INVALID_VALUE_FOR_COLUMN",
                                              "Cannot upsert on field \"%s\"" % merge)
                        rid = same[0]["id"] if same else st.new_id()
                        (updated if same else created).append(rid)
                        out.append(public(st.save(table, rid, fields)))
                    self.late()
                    return self.send(200, {"records": out, "createdRecords": created,
                                           "updatedRecords": updated})
                for r in recs:
                    if method == "POST":
                        out.append(public(st.save(table, st.new_id(), r.get("fields") or {})))
                    else:
                        if r.get("id") not in st.tables.get(table, {}):
                            return self.error(404, "NOT_FOUND", "Could not find record")
                        out.append(public(st.save(table, r["id"], r.get("fields") or {})))
                self.late()
                return self.send(200, {"records": out})
            if method == "DELETE":
                ids = q.get("records[]") or []
                if any(i not in st.tables.get(table, {}) for i in ids):
                    return self.error(404, "NOT_FOUND", "Could not find record")
                for i in ids:
                    del st.tables[table][i]
                self.late()
                return self.send(200, {"records": [{"id": i, "deleted": True} for i in ids]})
        return self.error(404, "NOT_FOUND", "Could not find what you are looking for")

    def late(self):
        """A write applied: its answer waits delay_ms (the lock is let go meanwhile)."""
        st = self.server.state
        if st.delay_ms:
            st.lock.release()
            try:
                time.sleep(st.delay_ms / 1000.0)
            finally:
                st.lock.acquire()

    def list(self, table, q):
        st = self.server.state
        one = lambda k: (q.get(k) or [None])[0]
        size = int(one("pageSize") or 100)
        if not 1 <= size <= 100:
            return self.error(422, "INVALID_PAGE_SIZE", "pageSize must be between 1 and 100")
        offset = one("offset")
        if offset:
            m = re.match(r"^itr(\d+)/(\d+)$", offset)
            if not m or m.group(1) not in st.listings:
                return self.error(422, "LIST_RECORDS_ITERATOR_NOT_AVAILABLE", "offset expired")
            ids, start = st.listings[m.group(1)], int(m.group(2))
            serial = m.group(1)
        else:
            recs = sorted(st.tables.get(table, {}).values(), key=lambda r: r["id"])
            formula = one("filterByFormula")
            eq = EQUALS_RE.match(formula) if formula else None
            if eq:
                want = re.sub(r"\\(.)", r"\1", eq.group(2))
                recs = [r for r in recs if str(r["fields"].get(eq.group(1))) == want]
                formula = None
            if one("maxRecords"):
                recs = recs[:int(one("maxRecords"))]
            if formula:
                f = FORMULA_RE.match(formula)
                try:
                    since = parse_iso(f.group(2)) if f else None
                except ValueError:
                    since = None
                if since is None:
                    return self.error(422, "INVALID_FILTER_BY_FORMULA",
                                      "The formula for filtering records is invalid")
                recs = [r for r in recs if (r["_mod"] >= since if f.group(1) == ">="
                                            else r["_mod"] > since)]
            st.listing_serial += 1
            serial = str(st.listing_serial)
            ids, start = [r["id"] for r in recs], 0
            st.listings[serial] = ids
        live = st.tables.get(table, {})
        page = [public(live[i]) for i in ids[start:start + size] if i in live]
        out = {"records": page}
        if start + size < len(ids):
            out["offset"] = "itr%s/%d" % (serial, start + size)
        if st.list_delay_ms:
            # the listing's ids are taken: changes made meanwhile are not in it
            st.lock.release()
            try:
                time.sleep(st.list_delay_ms / 1000.0)
            finally:
                st.lock.acquire()
        return self.send(200, out)

    def control(self, method, path, raw):
        st = self.server.state
        c = json.loads(raw or b"{}") if method == "POST" else {}
        with st.lock:
            if path == "/_records" and method == "POST":
                table, op = c.get("table", "Contacts"), c.get("op")
                fields = c.get("fields") or {}
                if op == "create":
                    ids = [st.save(table, st.new_id(),
                                   {k: (v.replace("{n}", str(i)) if isinstance(v, str) else v)
                                    for k, v in fields.items()})["id"]
                           for i in range(int(c.get("count", 1)))]
                    return self.send(200, {"ids": ids})
                rid = c.get("id")
                if rid not in st.tables.get(table, {}):
                    return self.send(404, {"error": "no such record"})
                if op == "update":
                    return self.send(200, public(st.save(table, rid, fields)))
                if op == "delete":
                    del st.tables[table][rid]
                    return self.send(200, {"id": rid, "deleted": True})
                return self.send(400, {"error": "unknown op"})
            if path == "/_control" and method == "POST":
                if c.get("reset"):
                    st.reset()
                for k in ("fail_status", "fail_count", "list_delay_ms", "delay_ms"):
                    if k in c:
                        setattr(st, k, int(c[k]))
                if "fail_status" in c and "fail_count" not in c:
                    st.fail_count = -1
                return self.send(200, {"ok": True})
            if path == "/_requests":
                return self.send(200, st.log)
            if path == "/_store":
                return self.send(200, {t: {i: public(r) for i, r in recs.items()}
                                       for t, recs in st.tables.items()})
        return self.send(404, {"error": "no such control path"})

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_PATCH(self):
        self.dispatch("PATCH")

    def do_DELETE(self):
        self.dispatch("DELETE")


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    def handle_error(self, request, client_address):
        pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--token", default="at-token")
    args = ap.parse_args()
    srv = Server((args.host, args.port), Handler)
    srv.state = State(args)
    print("listening on %d" % srv.server_address[1], flush=True)
    try:
        srv.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
