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
Run: python3 test/fakes/fake_rest.py --port N  (prints "listening on N" when ready). The server,
the request log, the gate and the unreachable_ms knob are fake_http.py's, shared by the fakes.
"""
import json
import os
import re
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fake_http  # noqa: E402

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class State(fake_http.State):
    knobs = ("delay_ms", "fail_status", "fail_count", "rate_limit", "retry_after", "down_count")
    flags = ("down",)

    def reset(self):
        super().reset()
        self.store = {}
        self.counter = 0
        self.version = 0
        self.tombstones = {}


class Handler(fake_http.Handler):
    server_version = "FakeRest/1.0"
    name = "fake_rest"

    def error(self, status, code, message, field=None, headers=None):
        e = {"code": code, "message": message}
        if field:
            e["field"] = field
        self.send(status, {"error": e}, headers=headers)

    def api(self, method, url, raw):
        st = self.server.state
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            return self.error(400, "bad_json", "body is not JSON")
        if not self.arrive({"method": method, "path": url.path, "query": url.query,
                            "authorization": self.headers.get("Authorization"),
                            "body": body, "time": time.time()}):
            return
        tok = st.args.token
        hdr = st.args.token_header
        if tok and self.headers.get("Authorization") != "Bearer " + tok and \
                not (hdr and self.headers.get(hdr) == tok):
            return self.error(401, "unauthorized", "invalid or missing token")
        with st.lock:
            status = st.take_failure()
            if status:
                return self.error(status, "unavailable", "fake failure %d" % status)
            if st.take_rate_limit():
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
        if op == "create" and "count" in c:
            made = [self.create(coll, fake_http.numbered(fields, i)) for i in range(int(c["count"]))]
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

    def store_view(self):
        return self.server.state.store


def main():
    fake_http.serve(__doc__, Handler, State, [
        (("--token",), {"default": "", "help": "bearer token every request must carry"}),
        (("--token-header",), {"default": "", "help": "a header that may carry the bare token "
                                                      "instead (e.g. X-Api-Key)"})])


if __name__ == "__main__":
    main()
