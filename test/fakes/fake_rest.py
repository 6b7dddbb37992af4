#!/usr/bin/env python3
"""A fake generic JSON REST API for tests of type=rest (Python standard library only).

Resources: any collection name, e.g. /contacts:
  POST   /<coll>                 one record (JSON object) -> 201 with the stored record
  POST   /<coll>/batch           {"data": [records]} -> {"data": [stored records]} (all or none)
  GET    /<coll>/<id>            the record
  PATCH  /<coll>/<id>            merge fields -> 200 with the stored record
  PUT    /<coll>/<id>            replace fields -> 200
  DELETE /<coll>/<id>            -> 204
  DELETE /<coll>?ids=a,b         -> 204 (all or none)
  GET    /<coll>?updated_since=V&limit=N   the change feed: {"data": [records]} whose "version"
                                 is >= V (all without updated_since), by version, at most N
                                 (default 100); deleted records appear as
                                 {"id", "deleted": true, "version"}
Records get an integer-like string id ("1", "2", ...), a created_at, and a "version" that
grows with every change of any record. Validation: "email", when
present and not null, must look like an address (422 {"error": {"code": "invalid_email",
"message": ..., "field": "email"}}); an "email" already used by another record of the collection
is a 409 duplicate. With --token T every request needs "Authorization: Bearer T" (else 401), or
"<H>: T" when --token-header H is given.

Control API: POST /_records {"collection": "contacts", "op": "create", "fields": {...}} -> the
record ("count": N creates N, {n} in values replaced by 0..N-1), {"op": "update", "id",
"fields"}, {"op": "delete", "id"}: changes made directly in the API. As fake_salesforce.py: POST /_control {"delay_ms", "fail_status", "fail_count",
"rate_limit", "retry_after", "down", "down_count", "reset"}, GET /_requests, DELETE /_requests,
GET /_store.
Run: python3 test/fakes/fake_rest.py --port N  (prints "listening on N" when ready).
"""
import argparse
import http.server
import json
import re
import socket
import sys
import threading
import time
import urllib.parse

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class State:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        self.store = {}
        self.counter = 0
        self.log = []
        self.delay_ms = 0
        self.fail_status = 0
        self.fail_count = -1
        self.rate_limit = 0
        self.retry_after = 1
        self.down = False
        self.down_count = -1
        self.version = 0
        self.tombstones = {}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeRest/1.0"

    def log_message(self, fmt, *args):
        if self.server.state.args.verbose:
            sys.stderr.write("fake_rest: " + (fmt % args) + "\n")

    def send(self, status, obj=None, headers=None):
        body = b"" if obj is None else json.dumps(obj).encode()
        self.send_response(status)
        if body:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if body:
            self.wfile.write(body)

    def error(self, status, code, message, field=None, headers=None):
        e = {"code": code, "message": message}
        if field:
            e["field"] = field
        self.send(status, {"error": e}, headers)

    def dispatch(self, method):
        st = self.server.state
        url = urllib.parse.urlsplit(self.path)
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n > 0 else b""
        if url.path.startswith("/_"):
            return self.control(method, url.path, raw)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            return self.error(400, "bad_json", "body is not JSON")
        with st.lock:
            st.log.append({"method": method, "path": url.path, "query": url.query,
                           "authorization": self.headers.get("Authorization"),
                           "body": body, "time": time.time()})
            delay = st.delay_ms
            down = st.down and st.down_count != 0
            if down and st.down_count > 0:
                st.down_count -= 1
        if down:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if delay:
            time.sleep(delay / 1000.0)
        tok = st.args.token
        hdr = st.args.token_header
        if tok and self.headers.get("Authorization") != "Bearer " + tok and \
                not (hdr and self.headers.get(hdr) == tok):
            return self.error(401, "unauthorized", "invalid or missing token")
        with st.lock:
            if st.fail_status and st.fail_count != 0:
                if st.fail_count > 0:
                    st.fail_count -= 1
                return self.error(st.fail_status, "unavailable", "fake failure %d" % st.fail_status)
            if st.rate_limit > 0:
                st.rate_limit -= 1
                return self.error(429, "rate_limited", "too many requests",
                                  headers={"Retry-After": str(st.retry_after)})
            return self.resource(method, url, body)

    def check(self, coll, rec, own_id=None):
        email = rec.get("email")
        if email is not None and not EMAIL_RE.match(str(email)):
            return (422, "invalid_email", "%s is not a valid email address" % email, "email")
        if email is not None:
            for rid, other in self.server.state.store.get(coll, {}).items():
                if rid != own_id and other.get("email") == email:
                    return (409, "duplicate", "email %s is already used" % email, "email")
        return None

    def resource(self, method, url, body):
        st = self.server.state
        parts = [p for p in url.path.split("/") if p]
        if not parts:
            return self.error(404, "not_found", "no such resource")
        coll = parts[0]
        recs = st.store.setdefault(coll, {})
        if len(parts) == 1 and method == "POST":
            if not isinstance(body, dict):
                return self.error(400, "bad_request", "a JSON object is expected")
            bad = self.check(coll, body)
            if bad:
                return self.error(*bad)
            return self.send(201, self.create(coll, body))
        if len(parts) == 2 and parts[1] == "batch" and method == "POST":
            data = body.get("data") if isinstance(body, dict) else None
            if not isinstance(data, list):
                return self.error(400, "bad_request", "{\"data\": [...]} is expected")
            for rec in data:
                bad = self.check(coll, rec)
                if bad:
                    return self.error(*bad)
            return self.send(200, {"data": [self.create(coll, r) for r in data]})
        if len(parts) == 1 and method == "GET":
            q = urllib.parse.parse_qs(url.query)
            since = (q.get("updated_since") or [None])[0]
            try:
                limit = int((q.get("limit") or ["100"])[0])
                since = int(since) if since is not None else None
            except ValueError:
                return self.error(400, "bad_request", "updated_since and limit are integers")
            items = list(recs.values()) + list(st.tombstones.get(coll, {}).values())
            items = sorted((r for r in items if since is None or r["version"] >= since),
                           key=lambda r: r["version"])
            return self.send(200, {"data": items[:limit]})
        if len(parts) == 1 and method == "DELETE":
            ids = [i for i in ",".join(urllib.parse.parse_qs(url.query).get("ids", [])).split(",") if i]
            if any(i not in recs for i in ids):
                return self.error(404, "not_found", "no such record")
            for i in ids:
                self.delete(coll, i)
            return self.send(204)
        if len(parts) == 2:
            rid = urllib.parse.unquote(parts[1])
            if rid not in recs:
                return self.error(404, "not_found", "no record %s" % rid)
            if method == "GET":
                return self.send(200, recs[rid])
            if method == "DELETE":
                self.delete(coll, rid)
                return self.send(204)
            if method in ("PATCH", "PUT"):
                if not isinstance(body, dict):
                    return self.error(400, "bad_request", "a JSON object is expected")
                new = dict(recs[rid], **body) if method == "PATCH" else dict(body)
                new["id"] = rid
                new.setdefault("created_at", recs[rid].get("created_at"))
                bad = self.check(coll, new, rid)
                if bad:
                    return self.error(*bad)
                recs[rid] = self.stamp(new)
                return self.send(200, new)
        return self.error(405, "method_not_allowed", "%s %s" % (method, url.path))

    def stamp(self, rec):
        st = self.server.state
        st.version += 1
        rec["version"] = st.version
        return rec

    def delete(self, coll, rid):
        st = self.server.state
        del st.store[coll][rid]
        st.tombstones.setdefault(coll, {})[rid] = self.stamp({"id": rid, "deleted": True})

    def create(self, coll, rec):
        st = self.server.state
        st.counter += 1
        stored = dict(rec, id=str(st.counter),
                      created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        st.store.setdefault(coll, {})[stored["id"]] = self.stamp(stored)
        st.tombstones.get(coll, {}).pop(stored["id"], None)
        return stored

    def records(self, c):
        st = self.server.state
        coll, op, rid = c.get("collection", "contacts"), c.get("op"), c.get("id")
        fields = c.get("fields") or {}
        with st.lock:
            if op == "create" and "count" in c:
                made = [self.create(coll, {k: (v.replace("{n}", str(i)) if isinstance(v, str)
                                               else v) for k, v in fields.items()})
                        for i in range(int(c["count"]))]
                return self.send(200, {"data": made})
            if op == "create":
                return self.send(200, self.create(coll, fields))
            if rid not in st.store.get(coll, {}):
                return self.send(404, {"error": "no such record"})
            if op == "update":
                st.store[coll][rid].update(fields)
                return self.send(200, self.stamp(st.store[coll][rid]))
            if op == "delete":
                self.delete(coll, rid)
                return self.send(200, {"id": rid})
        return self.send(400, {"error": "unknown op"})

    def control(self, method, path, raw):
        st = self.server.state
        if path == "/_records" and method == "POST":
            return self.records(json.loads(raw or b"{}"))
        if path == "/_control" and method == "POST":
            try:
                c = json.loads(raw or b"{}")
            except ValueError:
                return self.send(400, {"error": "bad json"})
            with st.lock:
                if c.get("reset"):
                    st.reset()
                for k in ("delay_ms", "fail_status", "fail_count", "rate_limit", "retry_after",
                          "down_count"):
                    if k in c:
                        setattr(st, k, int(c[k]))
                if "fail_status" in c and "fail_count" not in c:
                    st.fail_count = -1
                if "down" in c:
                    st.down = bool(c["down"])
                    if "down_count" not in c:
                        st.down_count = -1
            return self.send(200, {"ok": True})
        with st.lock:
            if path == "/_requests" and method == "GET":
                return self.send(200, st.log)
            if path == "/_requests" and method == "DELETE":
                st.log = []
                return self.send(204)
            if path == "/_store" and method == "GET":
                return self.send(200, st.store)
        return self.send(404, {"error": "no such control path"})

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_PATCH(self):
        self.dispatch("PATCH")

    def do_PUT(self):
        self.dispatch("PUT")

    def do_DELETE(self):
        self.dispatch("DELETE")


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    def handle_error(self, request, client_address):
        if self.state.args.verbose:
            super().handle_error(request, client_address)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--token", default="", help="bearer token every request must carry")
    ap.add_argument("--token-header", default="",
                    help="a header that may carry the bare token instead (e.g. X-Api-Key)")
    ap.add_argument("--verbose", action="store_true")
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
