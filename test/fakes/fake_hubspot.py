#!/usr/bin/env python3
"""A fake HubSpot CRM API for tests of type=hubspot (Python standard library only).

  POST /crm/v3/objects/<object>/batch/create   {"inputs": [{"properties": {...},
                                                 "objectWriteTraceId": "0"}]}
  POST /crm/v3/objects/<object>/batch/update   {"inputs": [{"id", "properties"}]}
  POST /crm/v3/objects/<object>/batch/archive  {"inputs": [{"id"}]} -> 204
       answers {"status": "COMPLETE", "results": [{"id", "properties", "createdAt",
       "updatedAt", "archived": false, "objectWriteTraceId"}]}
  POST /crm/v3/objects/<object>/batch/read     {"properties": [...], "inputs": [{"id"}]} ->
       {"status": "COMPLETE", "results": [...]} with each asked-for property (null when
       unset); ids without a live record are left out and listed in "errors" (category
       OBJECT_NOT_FOUND, "numErrors"), then the answer is a 207; with "idProperty": P the
       inputs' ids are values of property P (one record each, or not found)
  A contact created with the email of another is a 409 CONFLICT ("Contact already exists"),
  as HubSpot keeps contact emails unique
  POST /crm/v3/objects/<object>/search         filterGroups on hs_lastmodifieddate (GTE, GT,
       LTE, LT, EQ), sorts on it, properties, limit (1..200), after -> {"total", "results",
       "paging": {"next": {"after", "link"}}}; like HubSpot, a search reaches at most 10,000
       results (search_max): asking past them is a 400
  GET  /crm/v3/objects/<object>?archived=true&limit=N&after=A   archived records
Records carry id ("1", "2", ...), properties with hs_object_id, createdate and
hs_lastmodifieddate ("2024-05-01T10:00:00.123Z"; every change gets a later millisecond than
the one before), createdAt/updatedAt. Needs "Authorization: Bearer <--token>".
Like HubSpot, a batch whose "email" property does not look like an address is refused whole:
400 VALIDATION_ERROR "Property values were not valid: [{...INVALID_EMAIL...}]" (the list names
the property and the value, not the input), nothing written.

Control API: POST /_records {"object": "contacts", "op": "create", "properties": {...},
"count": N ({n} in values is replaced by 0..N-1)} -> {"ids": [...]}, {"op": "update", "id",
"properties"}, {"op": "archive", "id"}: changes made directly in HubSpot;
POST /_control {"search_max", "fail_status", "fail_count", "rate_limit", "delay_ms" (a write
is applied at once but answered that much later), "reset"};
GET /_requests; GET /_store.
Run: python3 test/fakes/fake_hubspot.py --port N  (prints "listening on N" when ready). The server,
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
    knobs = ("search_max", "fail_status", "fail_count", "rate_limit", "delay_ms")

    def reset(self):
        super().reset()
        self.store = {}      # object -> id -> record
        self.archived = {}   # object -> id -> record
        self.counter = 0
        self.last_ms = 0
        self.search_max = 10000

    def now(self):
        ms = max(int(time.time() * 1000), self.last_ms + 1)
        self.last_ms = ms
        return ms

    @staticmethod
    def iso(ms):
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + ".%03dZ" % (ms % 1000)

    def save(self, obj, rid, props, created=None):
        ms = self.now()
        rec = self.store.setdefault(obj, {}).get(rid)
        if rec is None:
            rec = {"id": rid, "properties": {"hs_object_id": rid, "createdate": self.iso(ms)},
                   "createdAt": self.iso(ms), "archived": False}
            self.store[obj][rid] = rec
        for k, v in props.items():
            rec["properties"][k] = None if v is None else str(v)
        rec["properties"]["hs_lastmodifieddate"] = self.iso(ms)
        rec["properties"]["lastmodifieddate"] = self.iso(ms)
        rec["updatedAt"] = self.iso(ms)
        rec["_ms"] = ms
        return rec

    def archive(self, obj, rid):
        rec = self.store.get(obj, {}).pop(rid, None)
        if rec is None:
            return False
        ms = self.now()
        rec = dict(rec, archived=True, archivedAt=self.iso(ms))
        self.archived.setdefault(obj, {})[rid] = rec
        return True

    def create(self, obj, props):
        self.counter += 1
        return self.save(obj, str(self.counter), props)


def public(rec, props=None):
    out = {k: v for k, v in rec.items() if not k.startswith("_")}
    if props is not None:
        out["properties"] = {k: v for k, v in rec["properties"].items()
                             if k in props or k in ("hs_object_id", "createdate",
                                                    "hs_lastmodifieddate", "lastmodifieddate")}
    return out


class Handler(fake_http.Handler):
    methods = ("GET", "POST")
    server_version = "FakeHubSpot/1.0"
    content_type = "application/json;charset=utf-8"
    name = "fake_hubspot"

    def error(self, status, category, message):
        self.send(status, {"status": "error", "message": message, "category": category,
                           "correlationId": "00000000-0000-0000-0000-000000000000"})

    def api(self, method, url, raw):
        st = self.server.state
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            return self.error(400, "VALIDATION_ERROR", "Invalid input JSON")
        with st.lock:
            st.log.append({"method": method, "path": url.path, "query": url.query, "body": body,
                           "time": time.time()})
            if self.headers.get("Authorization") != "Bearer " + st.args.token:
                return self.error(401, "INVALID_AUTHENTICATION", "Authentication credentials not found.")
            status = st.take_failure()
            if status:
                return self.error(status, "INTERNAL_ERROR", "fake failure")
            if st.take_rate_limit():
                return self.error(429, "RATE_LIMITS", "You have reached your secondly limit.")
            parts = [p for p in url.path.split("/") if p]
            if len(parts) < 4 or parts[:3] != ["crm", "v3", "objects"]:
                return self.error(404, "OBJECT_NOT_FOUND", "Unknown path")
            obj = parts[3]
            if len(parts) == 4 and method == "GET":
                return self.list_archived(obj, urllib.parse.parse_qs(url.query))
            if len(parts) == 5 and parts[4] == "search" and method == "POST":
                return self.search(obj, body or {})
            if len(parts) == 6 and parts[4] == "batch" and method == "POST":
                if parts[5] == "read":
                    return self.batch_read(obj, body or {})
                return self.batch(obj, parts[5], body or {})
        return self.error(404, "OBJECT_NOT_FOUND", "Unknown path")

    def batch_read(self, obj, body):
        st = self.server.state
        inputs = body.get("inputs")
        if not isinstance(inputs, list) or len(inputs) > 100:
            return self.error(400, "VALIDATION_ERROR", "inputs must be a list of at most 100")
        props = body.get("properties") or []
        idp = body.get("idProperty")
        results, missing = [], []
        for i in inputs:
            if idp:
                same = [r for r in st.store.get(obj, {}).values()
                        if r["properties"].get(idp) == str(i.get("id"))]
                rec = same[0] if len(same) == 1 else None
            else:
                rec = st.store.get(obj, {}).get(str(i.get("id")))
            if rec is None:
                missing.append(str(i.get("id")))
                continue
            out = public(rec, set(props))
            for p in props:
                out["properties"].setdefault(p, None)
            results.append(out)
        now = st.iso(st.now())
        answer = {"status": "COMPLETE", "results": results, "startedAt": now,
                  "completedAt": now}
        if missing:
            answer["numErrors"] = 1
            answer["errors"] = [{"status": "error", "category": "OBJECT_NOT_FOUND",
                                 "message": "Could not get some CONTACT objects, they may be "
                                            "deleted or not exist. Check that ids are valid.",
                                 "context": {"ids": missing}}]
            return self.send(207, answer)
        return self.send(200, answer)

    def late(self):
        """A write applied: its answer waits delay_ms (the lock is let go meanwhile)."""
        st = self.server.state
        if st.delay_ms:
            st.unlocked_sleep(st.delay_ms)

    def batch(self, obj, verb, body):
        st = self.server.state
        inputs = body.get("inputs")
        if not isinstance(inputs, list) or len(inputs) > 100:
            return self.error(400, "VALIDATION_ERROR", "inputs must be a list of at most 100")
        if verb == "archive":
            for i in inputs:
                st.archive(obj, str(i.get("id")))
            self.late()
            return self.send(204)
        for i in inputs:
            email = (i.get("properties") or {}).get("email")
            if email and not EMAIL_RE.match(str(email)):
                msg = "Email address %s is invalid" % email
                return self.error(400, "VALIDATION_ERROR", "Property values were not valid: " +
                                  json.dumps([{"isValid": False, "message": msg,
                                               "error": "INVALID_EMAIL", "name": "email",
                                               "localizedErrorMessage": msg}]))
        results = []
        if verb == "create" and obj == "contacts":
            for i in inputs:
                email = (i.get("properties") or {}).get("email")
                same = [r for r in st.store.get(obj, {}).values()
                        if email and r["properties"].get("email") == email]
                if same:
                    return self.error(409, "CONFLICT",
                                      "Contact already exists. Existing ID: %s" % same[0]["id"])
        for i in inputs:
            props = i.get("properties") or {}
            if verb == "create":
                rec = st.create(obj, props)
            elif verb == "update":
                rid = str(i.get("id"))
                if rid not in st.store.get(obj, {}):
                    return self.error(404, "OBJECT_NOT_FOUND", "Object not found. objectId are usually numeric.")
                rec = st.save(obj, rid, props)
            else:
                return self.error(404, "OBJECT_NOT_FOUND", "Unknown batch verb")
            out = public(rec)
            if "objectWriteTraceId" in i:
                out["objectWriteTraceId"] = i["objectWriteTraceId"]
            results.append(out)
        now = st.iso(st.now())
        self.late()
        return self.send(200, {"status": "COMPLETE", "results": results, "startedAt": now,
                               "completedAt": now})

    def search(self, obj, body):
        st = self.server.state
        try:
            limit = int(body.get("limit", 10))
            after = int(body.get("after") or 0)
        except (TypeError, ValueError):
            return self.error(400, "VALIDATION_ERROR", "limit and after must be numbers")
        if not 1 <= limit <= 200:
            return self.error(400, "VALIDATION_ERROR", "limit must be between 1 and 200")
        if after + limit > st.search_max:
            return self.error(400, "VALIDATION_ERROR",
                              "paging past %d results is not allowed" % st.search_max)
        recs = list(st.store.get(obj, {}).values())
        for group in body.get("filterGroups") or []:
            for f in group.get("filters") or []:
                if f.get("propertyName") != "hs_lastmodifieddate":
                    return self.error(400, "VALIDATION_ERROR", "fake: only hs_lastmodifieddate filters")
                v = int(f.get("value"))
                op = f.get("operator")
                test = {"GTE": lambda m: m >= v, "GT": lambda m: m > v, "LTE": lambda m: m <= v,
                        "LT": lambda m: m < v, "EQ": lambda m: m == v}.get(op)
                if test is None:
                    return self.error(400, "VALIDATION_ERROR", "unknown operator %s" % op)
                recs = [r for r in recs if test(r["_ms"])]
        sorts = body.get("sorts") or []
        if sorts and sorts[0].get("propertyName") == "hs_lastmodifieddate":
            recs.sort(key=lambda r: (r["_ms"], int(r["id"])),
                      reverse=sorts[0].get("direction") == "DESCENDING")
        else:
            recs.sort(key=lambda r: int(r["id"]))
        props = set(body.get("properties") or [])
        page = recs[after:after + limit]
        out = {"total": len(recs), "results": [public(r, props) for r in page]}
        if after + limit < len(recs):
            out["paging"] = {"next": {"after": str(after + limit),
                                      "link": "?after=%d" % (after + limit)}}
        return self.send(200, out)

    def list_archived(self, obj, q):
        st = self.server.state
        if (q.get("archived") or ["false"])[0] != "true":
            recs = sorted(st.store.get(obj, {}).values(), key=lambda r: int(r["id"]))
        else:
            recs = sorted(st.archived.get(obj, {}).values(), key=lambda r: int(r["id"]))
        limit = int((q.get("limit") or ["10"])[0])
        after = int((q.get("after") or ["0"])[0])
        page = recs[after:after + limit]
        out = {"results": [public(r) for r in page]}
        if after + limit < len(recs):
            out["paging"] = {"next": {"after": str(after + limit),
                                      "link": "?after=%d" % (after + limit)}}
        return self.send(200, out)

    def records(self, c):
        st = self.server.state
        obj = c.get("object", "contacts")
        op = c.get("op")
        props = c.get("properties") or {}
        if op == "create":
            ids = [st.create(obj, fake_http.numbered(props, i))["id"]
                   for i in range(int(c.get("count", 1)))]
            return self.send(200, {"ids": ids})
        rid = str(c.get("id"))
        if op == "update" and rid in st.store.get(obj, {}):
            st.save(obj, rid, props)
            return self.send(200, {"id": rid})
        if op == "archive" and st.archive(obj, rid):
            return self.send(200, {"id": rid})
        return self.send(404, {"error": "no such record or op"})

    def store_view(self):
        return {o: {i: public(r) for i, r in recs.items()}
                for o, recs in self.server.state.store.items()}


def main():
    fake_http.serve(__doc__, Handler, State, [(("--token",), {"default": "hs-token"})])


if __name__ == "__main__":
    main()
