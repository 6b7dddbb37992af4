#!/usr/bin/env python3
"""A fake Salesforce REST API for tests (Python standard library only).

Serves what syncbouncer's Salesforce connector uses:
  POST   /services/oauth2/token                      refresh_token grant -> access token
  POST   /services/data/vNN.N/composite/sobjects     create up to 200 records
  PATCH  /services/data/vNN.N/composite/sobjects     update up to 200 records
  DELETE /services/data/vNN.N/composite/sobjects?ids=a,b&allOrNone=true
  PATCH  /services/data/vNN.N/composite/sobjects/<Type>/<ExtIdField>   upsert up to 200
                                                     records on an external id field: a record
                                                     whose field holds the value is updated,
                                                     else one is created; each result says
                                                     "created"; a value given twice fails
                                                     (DUPLICATE_VALUE)
  GET    /services/data/vNN.N/sobjects/<Type>/<id>   read one record
  GET    /services/data/vNN.N/sobjects/<Type>/<ExtIdField>/<value>   the record whose
                                                     external id is value (404 none, 300 with
                                                     the records' URLs when several)
  GET    /services/data/vNN.N/query?q=SOQL           SOQL: SELECT <fields> FROM <Type>
  GET    /services/data/vNN.N/queryAll?q=SOQL          [WHERE SystemModstamp > T
                                                      [OR (SystemModstamp = T AND Id > 'X')]]
                                                      ORDER BY SystemModstamp, Id
                                                      (queryAll also returns deleted records,
                                                      IsDeleted = true)
  GET    /services/data/vNN.N/query/<locator>-<n>    the next batch (nextRecordsUrl)
with Salesforce-shaped 18-character ids, an in-memory store per object, validation (Contact needs
LastName; Email must look like an address), allOrNone semantics and a Sforce-Limit-Info header.
Every record carries SystemModstamp (whole seconds, "2024-05-01T10:00:00.000+0000") and
IsDeleted; deleted records stay in a recycle bin that queryAll reads. A query answers
{"totalSize", "done", "nextRecordsUrl", "records": [{"attributes": {...}, ...}]} in batches of
2000 (query_batch), from a snapshot taken when the query ran.

Control API for tests:
  POST /_control  JSON, any of: {"delay_ms": 500, "fail_status": 503, "fail_count": 1,
                  "expire_token": true, "rate_limit": 2, "rate_limit_status": 403|429,
                  "retry_after": 1, "down": true, "down_count": 1, "unreachable_ms": 2000,
                  "expires_in": 3600, "reset": true}
                  down: requests are read, then the connection is dropped unanswered
                  (outcome unknown, nothing applied); "drop_after_apply": n applies the next
                  n sObject Collections writes, then drops their connections unanswered (the
                  API changed, its answer lost); unreachable_ms: the port refuses connections
                  for that long (nothing can be sent).
  GET  /_requests the log of received API requests (token and data calls; "time" it arrived:
                  its request line was read, its headers not parsed yet; and for writes
                  "done", when the answer's last write began: the API's own time is done - time)
  GET  /_store    the records, {"Contact": {"003...": {...}}}
                  query_delay_ms: a query's answer waits that long after its snapshot was
                  taken; write_delay_ms: sObject Collections calls wait that long before they
                  are applied; hold_writes: true holds them at the gate (below) until
                  POST /_gate/open
                  query_answer: "loop" (every batch says done: false and names itself as
                  nextRecordsUrl, an endless listing), or a raw body every query and batch
                  answers with 200 (a hostile page); "" is the normal answer
                  refuse_delete: "id,id": a delete of those records is refused (DELETE_FAILED,
                  as for a Contact that open Cases hold); "" refuses none
  POST /_records  change records "directly in Salesforce" (as another user would):
                  {"object": "Contact", "op": "create", "fields": {...}} -> {"id": ...};
                  {"op": "create", "count": N, "fields": {"LastName": "L{n}"}} creates N
                  ({n} is replaced by 0..N-1) -> {"ids": [...]};
                  {"op": "update", "id": ..., "fields": {...}}; {"op": "delete", "id": ...}
  DELETE /_requests  clears the log
Plain HTTP helpers for engine tests: GET /_slow?ms=N (answers "ok" after N ms),
GET /_big?bytes=N (N bytes of "x"), any method /_echo (the request back as JSON);
GET /_gate/wait is held until POST /_gate/open (at most 60 s, then 504), GET /_gate/held
counts the requests that arrived there ({"held": N, "open": bool}), POST /_gate/close shuts
the gate again and zeroes the count.

Run: python3 test/fakes/fake_salesforce.py --port N  (prints "listening on N" when ready);
--tls-cert/--tls-key serve HTTPS instead. The server, the control API's common part and the
gate are fake_http.py's, shared by the fakes.
"""
import json
import os
import re
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fake_http  # noqa: E402

KEY_PREFIX = {"Contact": "003", "Account": "001", "Lead": "00Q", "Opportunity": "006"}
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MAX_RECORDS = 200
ROLLED_BACK = {
    "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    "message": "Record rolled back because not all records were valid and the request was using AllOrNone header",
    "fields": [],
}


def id18(id15):
    """Salesforce's case-safe suffix: one letter per 5-character chunk."""
    table = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
    suffix = ""
    for chunk in range(3):
        bits = 0
        for i in range(5):
            c = id15[chunk * 5 + i]
            if "A" <= c <= "Z":
                bits |= 1 << i
        suffix += table[bits]
    return id15 + suffix


class State(fake_http.State):
    knobs = ("delay_ms", "fail_status", "fail_count", "rate_limit", "rate_limit_status",
             "retry_after", "down_count", "expires_in", "query_batch", "query_delay_ms",
             "write_delay_ms", "drop_after_apply")
    flags = ("down", "hold_writes")
    texts = ("query_answer", "refuse_delete")

    def reset(self):
        super().reset()
        self.store = {}
        self.tokens = set()
        self.token_serial = 0
        self.counter = 0
        self.usage = 0
        self.rate_limit_status = 403
        self.expires_in = 0
        self.recycle = {}
        self.queries = {}
        self.query_serial = 0
        self.query_batch = 2000
        self.query_delay_ms = 0
        self.refuse_delete = ""
        self.write_delay_ms = 0
        self.drop_after_apply = 0
        self.hold_writes = False
        self.query_answer = ""

    def stamp(self):
        return time.strftime("%Y-%m-%dT%H:%M:%S.000+0000", time.gmtime())

    def save(self, sobject, rid, image):
        """Stores a created or changed record with a new SystemModstamp."""
        image = dict(image, Id=rid, SystemModstamp=self.stamp(), IsDeleted=False)
        self.store.setdefault(sobject, {})[rid] = image
        return image

    def remove(self, rid):
        for sobject, recs in self.store.items():
            if rid in recs:
                rec = recs.pop(rid)
                self.recycle.setdefault(sobject, {})[rid] = dict(
                    rec, IsDeleted=True, SystemModstamp=self.stamp())
                return True
        return False

    def new_id(self, sobject):
        self.counter += 1
        prefix = KEY_PREFIX.get(sobject, "a00")
        # "8b000" mimics a pod/instance part; the counter is base 62 so ids stay distinct.
        digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
        n, tail = self.counter, ""
        for _ in range(7):
            tail = digits[n % 62] + tail
            n //= 62
        return id18(prefix + "8b000" + tail)

    def control(self, c):
        super().control(c)
        if c.get("expire_token"):
            self.tokens.clear()


class Handler(fake_http.Handler):
    server_version = "FakeSalesforce/1.0"
    content_type = "application/json;charset=UTF-8"
    name = "fake_salesforce"

    swallow = False  # drop_after_apply: the write's answer is not sent

    def send(self, *args, **kwargs):
        if self.swallow:
            self.swallow = False
            return self.drop()
        return super().send(*args, **kwargs)

    def sf_error(self, status, code, message, headers=None):
        self.send(status, [{"message": message, "errorCode": code}], headers=headers)

    def api(self, method, url, body):
        st = self.server.state
        path, query = url.path, urllib.parse.parse_qs(url.query)
        entry = {"method": method, "path": path, "query": url.query,
                 "authorization": self.headers.get("Authorization"),
                 "content_type": self.headers.get("Content-Type"),
                 "time": self.arrived}
        try:
            entry["body"] = json.loads(body) if body and not path.endswith("/token") else body.decode("utf-8", "replace")
        except ValueError:
            entry["body"] = body.decode("utf-8", "replace")
        if not self.arrive(entry):
            return  # "down": read, answered with nothing, the outcome unknown
        if path == "/services/oauth2/token" and method == "POST":
            return self.token(body)
        m = re.match(r"^/services/data/(v\d+\.\d+)/(.*)$", path)
        if not m:
            return self.send(404, [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}])
        if not self.authorized():
            return self.sf_error(401, "INVALID_SESSION_ID", "Session expired or invalid")
        with st.lock:
            status = st.take_failure()
            if status:
                return self.send(status, [{"errorCode": "SERVER_UNAVAILABLE",
                                           "message": "fake failure %d" % status}])
            if st.take_rate_limit():
                hdr = {"Retry-After": str(st.retry_after)}
                if st.rate_limit_status == 429:
                    return self.sf_error(429, "REQUEST_LIMIT_EXCEEDED", "Too many requests", hdr)
                return self.sf_error(403, "REQUEST_LIMIT_EXCEEDED",
                                     "TotalRequests Limit exceeded.", hdr)
            st.usage += 1
            limit_hdr = {"Sforce-Limit-Info": "api-usage=%d/15000" % st.usage}
            rest = m.group(2)
            upsert = re.match(r"^composite/sobjects/(\w+)/(\w+)$", rest)
            if rest == "composite/sobjects" or (upsert and method == "PATCH"):
                if st.write_delay_ms:
                    st.unlocked_sleep(st.write_delay_ms)
                if st.hold_writes:
                    self.hold_at_gate()
                self.swallow = st.drop_after_apply > 0
                if self.swallow:
                    st.drop_after_apply -= 1
                self.answered = None
                answer = self.collections(method, query, body, limit_hdr,
                                          upsert.groups() if upsert else None)
                self.swallow = False
                # when the answer's last write began (a swallowed one: when it was dropped)
                entry["done"] = self.answered or time.time()
                return answer
            if rest in ("query", "queryAll") and method == "GET":
                return self.soql(m.group(1), (query.get("q") or [""])[0], rest == "queryAll",
                                 limit_hdr)
            q = re.match(r"^query/(\w+)-(\d+)$", rest)
            if q and method == "GET":
                return self.more_records(m.group(1), q.group(1), int(q.group(2)), limit_hdr)
            x = re.match(r"^sobjects/(\w+)/(\w+)/([^/]+)$", rest)
            if x and method == "GET":
                value = urllib.parse.unquote(x.group(3))
                found = [rec for rec in st.store.get(x.group(1), {}).values()
                         if str(rec.get(x.group(2))) == value]
                if not found:
                    return self.send(404, [{"errorCode": "NOT_FOUND",
                                            "message": "The requested resource does not exist"}])
                if len(found) > 1:
                    return self.send(300, ["/services/data/%s/sobjects/%s/%s"
                                           % (m.group(1), x.group(1), rec["Id"])
                                           for rec in found])
                return self.send(200, dict(found[0], attributes={"type": x.group(1)}),
                                 headers=limit_hdr)
            r = re.match(r"^sobjects/(\w+)/(\w+)$", rest)
            if r and method == "GET":
                rec = st.store.get(r.group(1), {}).get(r.group(2))
                if rec is None:
                    return self.send(404, [{"errorCode": "NOT_FOUND",
                                            "message": "The requested resource does not exist"}])
                return self.send(200, dict(rec, attributes={"type": r.group(1)}), headers=limit_hdr)
        return self.send(404, [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}])

    def authorized(self):
        st = self.server.state
        auth = self.headers.get("Authorization") or ""
        if not auth.startswith("Bearer "):
            return False
        tok = auth[len("Bearer "):]
        with st.lock:
            return tok in st.tokens or (st.args.static_token and tok == st.args.static_token)

    # ---- OAuth ----
    def token(self, body):
        st = self.server.state
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
        get = lambda k: (form.get(k) or [""])[0]
        a = st.args
        if get("grant_type") != "refresh_token":
            return self.send(400, {"error": "unsupported_grant_type", "error_description": "grant type not supported"})
        if get("client_id") != a.client_id or get("client_secret") != a.client_secret:
            return self.send(400, {"error": "invalid_client_id", "error_description": "client identifier invalid"})
        if get("refresh_token") != a.refresh_token:
            return self.send(400, {"error": "invalid_grant", "error_description": "expired access/refresh token"})
        with st.lock:
            st.token_serial += 1
            tok = "00D8b0000000001!fake.%d.%d" % (st.token_serial, int(time.time() * 1000))
            st.tokens.add(tok)
        host = self.headers.get("Host") or "127.0.0.1"
        answer = {"access_token": tok, "instance_url": "http://" + host,
                  "id": "http://%s/id/00D8b0000000001/0058b000000001" % host,
                  "token_type": "Bearer", "issued_at": str(int(time.time() * 1000)),
                  "signature": "fake"}
        if st.expires_in:
            answer["expires_in"] = st.expires_in
        self.send(200, answer)

    # ---- sObject Collections ----
    def validate(self, sobject, rec):
        if sobject == "Contact":
            if not rec.get("LastName"):
                return {"statusCode": "REQUIRED_FIELD_MISSING",
                        "message": "Required fields are missing: [LastName]", "fields": ["LastName"]}
        email = rec.get("Email")
        if email is not None and email != "" and not EMAIL_RE.match(str(email)):
            return {"statusCode": "INVALID_EMAIL_ADDRESS",
                    "message": "Email: invalid email address: %s" % email, "fields": ["Email"]}
        return None

    def collections(self, method, query, body, hdr, upsert=None):
        st = self.server.state
        if method == "DELETE":
            ids = [i for i in ",".join(query.get("ids", [])).split(",") if i]
            all_or_none = (query.get("allOrNone") or ["false"])[0].lower() == "true"
            if len(ids) > MAX_RECORDS:
                return self.sf_error(400, "EXCEEDED_ID_LIMIT", "record limit reached. cannot submit more than 200 records into this call")
            errs = []
            for i in ids:
                found = any(i in recs for recs in st.store.values())
                if i in st.refuse_delete.split(","):
                    errs.append({"statusCode": "DELETE_FAILED", "fields": [],
                                 "message": "Your attempt to delete %s could not be completed "
                                 "because it is associated with the following cases: 00001026"
                                 % i})
                else:
                    errs.append(None if found else {"statusCode": "ENTITY_IS_DELETED",
                                                    "message": "entity is deleted", "fields": []})
            return self.answer_collection(ids, errs, all_or_none, hdr, lambda: [
                st.remove(i) for i in ids])
        try:
            doc = json.loads(body)
        except ValueError:
            return self.sf_error(400, "JSON_PARSER_ERROR", "Unexpected character at [line:1, column:1]")
        records = doc.get("records") if isinstance(doc, dict) else None
        if not isinstance(records, list):
            return self.sf_error(400, "INVALID_FIELD", "records is required")
        if len(records) > MAX_RECORDS:
            return self.sf_error(400, "EXCEEDED_ID_LIMIT", "record limit reached. cannot submit more than 200 records into this call")
        all_or_none = bool(doc.get("allOrNone"))
        errs, ids, images, created = [], [], [], []
        if upsert is not None:
            # a key given twice in one upsert matches neither: both fail (Salesforce's
            # DUPLICATE_VALUE "Duplicate external id specified")
            keys = [rec.get(upsert[1]) for rec in records]
            twice = {k for k in keys if k is not None and keys.count(k) > 1}
        for rec in records:
            sobject = (rec.get("attributes") or {}).get("type")
            fields = {k: v for k, v in rec.items() if k not in ("attributes", "id", "Id")}
            rid = rec.get("id") or rec.get("Id")
            if not sobject:
                errs.append({"statusCode": "INVALID_TYPE", "message": "Must send a concrete entity type.", "fields": []})
                ids.append(None), images.append(None)
                continue
            if upsert is not None:
                utype, ufield = upsert
                value = fields.get(ufield)
                same = [k for k, r in st.store.get(utype, {}).items()
                        if value is not None and r.get(ufield) == value]
                if sobject != utype or value is None or len(same) > 1:
                    errs.append({"statusCode": "DUPLICATE_EXTERNAL_ID" if len(same) > 1
                                 else "MISSING_ARGUMENT",
                                 "message": "upsert on %s: no single record" % ufield,
                                 "fields": [ufield]})
                    ids.append(None), images.append(None), created.append(False)
                    continue
                if value in twice:
                    errs.append({"statusCode": "DUPLICATE_VALUE",
                                 "message": "Duplicate external id specified: %s" % value,
                                 "fields": [ufield]})
                    ids.append(None), images.append(None), created.append(False)
                    continue
                if same:
                    rid = same[0]
                    image = dict(st.store[utype][rid], **fields)
                    image.pop("SystemModstamp", None)
                    image.pop("IsDeleted", None)
                else:
                    rid, image = None, fields
                created.append(not same)
            elif method == "POST":
                if rid:
                    errs.append({"statusCode": "INVALID_FIELD", "message": "cannot specify Id in an insert call", "fields": ["Id"]})
                    ids.append(None), images.append(None)
                    continue
                image = fields
            elif method == "PATCH":
                old = st.store.get(sobject, {}).get(rid)
                if old is None:
                    errs.append({"statusCode": "ENTITY_IS_DELETED", "message": "entity is deleted", "fields": []})
                    ids.append(rid), images.append(None)
                    continue
                image = dict(old, **fields)
                image.pop("SystemModstamp", None)
                image.pop("IsDeleted", None)
            else:
                return self.sf_error(405, "METHOD_NOT_ALLOWED", "HTTP Method '%s' not allowed" % method)
            errs.append(self.validate(sobject, image))
            ids.append(rid)
            images.append((sobject, image))

        def apply():
            for n, img in enumerate(images):
                if img is None or errs[n] is not None:
                    continue
                sobject, image = img
                if ids[n] is None:
                    ids[n] = st.new_id(sobject)
                st.save(sobject, ids[n], image)
        return self.answer_collection(ids, errs, all_or_none, hdr, apply,
                                      creates=(method == "POST" or upsert is not None),
                                      created=created if upsert is not None else None)

    def answer_collection(self, ids, errs, all_or_none, hdr, apply, creates=False, created=None):
        failed = any(e is not None for e in errs)
        if all_or_none and failed:
            out = []
            for e in errs:
                out.append({"success": False, "errors": [e or ROLLED_BACK]})
            return self.send(200, out, headers=hdr)
        apply()
        out = []
        for n, (i, e) in enumerate(zip(ids, errs)):
            if e is None:
                out.append({"id": i, "success": True, "errors": []})
                if created is not None:
                    out[-1]["created"] = created[n]
            else:
                r = {"success": False, "errors": [e]}
                if not creates and i:
                    r["id"] = i
                out.append(r)
        return self.send(200, out, headers=hdr)

    # ---- SOQL ----
    SOQL_RE = re.compile(r"^SELECT\s+(.+?)\s+FROM\s+(\w+)(?:\s+WHERE\s+(.+?))?"
                         r"(?:\s+ORDER\s+BY\s+SystemModstamp\s*,\s*Id)?$", re.I | re.S)
    WHERE_RE = re.compile(r"^SystemModstamp\s*>\s*(\S+?)(?:\s+OR\s+\(\s*SystemModstamp\s*=\s*"
                          r"(\S+?)\s+AND\s+Id\s*>\s*'(\w*)'\s*\))?$", re.I)

    @staticmethod
    def soql_time(text):
        """A SOQL dateTime literal (2024-05-01T10:00:00Z) -> the stored format."""
        t = time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")
        return time.strftime("%Y-%m-%dT%H:%M:%S.000+0000", t)

    def soql(self, version, q, all_rows, hdr):
        st = self.server.state
        m = self.SOQL_RE.match(q.strip())
        if not m:
            return self.send(400, [{"message": "unexpected token", "errorCode": "MALFORMED_QUERY"}])
        fields = [f.strip() for f in m.group(1).split(",")]
        sobject = m.group(2)
        recs = list(st.store.get(sobject, {}).values())
        if all_rows:
            recs += list(st.recycle.get(sobject, {}).values())
        if m.group(3):
            w = self.WHERE_RE.match(m.group(3).strip())
            try:
                after = self.soql_time(w.group(1)) if w else None
                same = self.soql_time(w.group(2)) if w and w.group(2) else None
            except ValueError:
                after = None
            if after is None or (w.group(2) and same != after):
                return self.send(400, [{"message": "unexpected token in WHERE",
                                        "errorCode": "MALFORMED_QUERY"}])
            last_id = w.group(3)
            recs = [r for r in recs if r["SystemModstamp"] > after or
                    (last_id is not None and r["SystemModstamp"] == after and r["Id"] > last_id)]
        recs.sort(key=lambda r: (r["SystemModstamp"], r["Id"]))
        out = []
        for r in recs:
            o = {"attributes": {"type": sobject,
                                "url": "/services/data/%s/sobjects/%s/%s" % (version, sobject, r["Id"])}}
            for f in fields:
                o[f] = r.get(f)
            out.append(o)
        st.query_serial += 1
        locator = "01gFAKE%08d" % st.query_serial
        st.queries[locator] = out
        if st.query_delay_ms:
            st.unlocked_sleep(st.query_delay_ms)
        return self.more_records(version, locator, 0, hdr)

    def more_records(self, version, locator, start, hdr):
        st = self.server.state
        recs = st.queries.get(locator)
        if st.query_answer == "loop" and recs is not None:
            # the same batch again and again, each naming itself as the next one
            return self.send(200, {"totalSize": len(recs), "done": False,
                                   "records": recs[start:start + st.query_batch],
                                   "nextRecordsUrl": "/services/data/%s/query/%s-%d"
                                   % (version, locator, start)}, headers=hdr)
        if st.query_answer:
            return self.send(200, raw=st.query_answer.encode(), headers=hdr)
        if recs is None or start > len(recs):
            return self.send(400, [{"message": "invalid query locator", "errorCode": "INVALID_QUERY_LOCATOR"}])
        end = start + st.query_batch
        answer = {"totalSize": len(recs), "done": end >= len(recs), "records": recs[start:end]}
        if end < len(recs):
            answer["nextRecordsUrl"] = "/services/data/%s/query/%s-%d" % (version, locator, end)
        else:
            st.queries.pop(locator, None)
        return self.send(200, answer, headers=hdr)

    def records(self, c):
        """Changes made directly in Salesforce, not through syncbouncer."""
        st = self.server.state
        sobject = c.get("object", "Contact")
        op = c.get("op")
        fields = c.get("fields") or {}
        if op == "create":
            n = int(c.get("count", 0))
            if n:
                ids = []
                for i in range(n):
                    rid = st.new_id(sobject)
                    st.save(sobject, rid, fake_http.numbered(fields, i))
                    ids.append(rid)
                return self.send(200, {"ids": ids})
            rid = st.new_id(sobject)
            st.save(sobject, rid, fields)
            return self.send(200, {"id": rid})
        rid = c.get("id")
        if op == "update" and rid in st.store.get(sobject, {}):
            old = {k: v for k, v in st.store[sobject][rid].items()
                   if k not in ("SystemModstamp", "IsDeleted")}
            st.save(sobject, rid, dict(old, **fields))
            return self.send(200, {"id": rid})
        if op == "delete" and st.remove(rid):
            return self.send(200, {"id": rid})
        return self.send(404, {"error": "no such record or op"})

    def store_view(self):
        return self.server.state.store

    # ---- plain HTTP helpers ----
    def extra_control(self, method, url, body):
        query = urllib.parse.parse_qs(url.query)
        if url.path == "/_slow":
            time.sleep(int((query.get("ms") or ["500"])[0]) / 1000.0)
            return self.send(200, raw=b"ok", ctype="text/plain")
        if url.path == "/_big":
            n = int((query.get("bytes") or ["0"])[0])
            return self.send(200, raw=b"x" * n, ctype="text/plain")
        if url.path == "/_echo":
            return self.send(200, {"method": method, "path": self.path,
                                   "headers": dict(self.headers.items()),
                                   "body": body.decode("utf-8", "replace")})
        return self.send(404, {"error": "no such control path"})


def main():
    fake_http.serve(__doc__, Handler, State, [
        (("--client-id",), {"default": "test-client-id"}),
        (("--client-secret",), {"default": "test-client-secret"}),
        (("--refresh-token",), {"default": "test-refresh-token"}),
        (("--static-token",), {"default": "", "help": "a bearer token always accepted"})])


if __name__ == "__main__":
    main()
