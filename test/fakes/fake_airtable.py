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
A field named "email" (any case) is an email field: a value that does not look like an address
is a 422 INVALID_VALUE_FOR_COLUMN 'Field "<name>" cannot accept the provided value' (naming
neither the record nor the value, as Airtable does), and nothing of the request is written.

Control API: POST /_records {"table": "Contacts", "op": "create", "fields": {...},
"count": N} -> {"ids": [...]}, {"op": "update", "id", "fields"}, {"op": "delete", "id"}: changes
made directly in Airtable; POST /_control {"fail_status", "fail_count", "list_delay_ms" (list
calls answer that much later, after the page was read), "delay_ms" (a write is applied at once
but answered that much later), "reset"};
GET /_requests; GET /_store.
Run: python3 test/fakes/fake_airtable.py --port N  (prints "listening on N" when ready). The server,
the request log, the gate and the unreachable_ms knob are fake_http.py's, shared by the fakes.
"""
import calendar
import json
import os
import re
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fake_http  # noqa: E402

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
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


class State(fake_http.State):
    knobs = ("fail_status", "fail_count", "list_delay_ms", "delay_ms")

    def reset(self):
        super().reset()
        self.tables = {}   # table -> id -> {"id", "createdTime", "fields", "_mod"}
        self.counter = 0
        self.listings = {}
        self.listing_serial = 0
        self.list_delay_ms = 0

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


class Handler(fake_http.Handler):
    methods = ("GET", "POST", "PATCH", "DELETE")
    server_version = "FakeAirtable/1.0"
    content_type = "application/json; charset=utf-8"
    name = "fake_airtable"

    def error(self, status, etype, message):
        self.send(status, {"error": {"type": etype, "message": message}})

    def api(self, method, url, raw):
        st = self.server.state
        with st.lock:
            st.log.append({"method": method, "path": url.path, "query": url.query,
                           "time": time.time()})
            if self.headers.get("Authorization") != "Bearer " + st.args.token:
                return self.error(401, "AUTHENTICATION_REQUIRED", "Authentication required")
            status = st.take_failure()
            if status:
                return self.error(status, "SERVER_ERROR", "fake failure")
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
                for r in recs:
                    for k, v in (r.get("fields") or {}).items():
                        if k.lower() == "email" and v and not EMAIL_RE.match(str(v)):
                            return self.error(422, "INVALID_VALUE_FOR_COLUMN",
                                              'Field "%s" cannot accept the provided value' % k)
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
            st.unlocked_sleep(st.delay_ms)

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
            st.unlocked_sleep(st.list_delay_ms)
        return self.send(200, out)

    def records(self, c):
        st = self.server.state
        table, op = c.get("table", "Contacts"), c.get("op")
        fields = c.get("fields") or {}
        if op == "create":
            ids = [st.save(table, st.new_id(), fake_http.numbered(fields, i))["id"]
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

    def store_view(self):
        return {t: {i: public(r) for i, r in recs.items()}
                for t, recs in self.server.state.tables.items()}


def main():
    fake_http.serve(__doc__, Handler, State, [(("--token",), {"default": "at-token"})])


if __name__ == "__main__":
    main()
