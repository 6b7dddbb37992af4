#!/usr/bin/env python3
"""A fake Stripe API for tests of type=stripe (Python standard library only).

  POST   /v1/<resource>          form-encoded fields -> the new object ("cus_..." ids for customers)
  POST   /v1/<resource>/<id>     update (an empty value clears a field)
  GET    /v1/<resource>/<id>
  DELETE /v1/<resource>/<id>     -> {"id": ..., "object": ..., "deleted": true}
  GET    /v1/<resource>          list, newest first: limit (1..100, default 10), starting_after,
                                 ending_before -> {"object": "list", "url", "has_more", "data"}
  GET    /v1/events              the same for events, filtered by types[]; every create, update
                                 and delete (through the API or /_records) makes one
                                 ("customer.created", ..., data.object = the object then)
  GET    /v1/<resource>/search   Search API, the one clause metadata['k']:'v' (query=, limit=)
                                 -> {"object": "search_result", "url", "has_more", "data",
                                 "next_page": null}; found at once (Stripe's index lags)
Needs "Authorization: Bearer <--token>". Every answer to an API request carries a Request-Id header
("req_" and 14 characters, as Stripe's), also kept in the request log. Idempotency-Key on a POST:
a repeated key returns the
first answer again without applying anything, with "Idempotent-Replayed: true" (400
idempotency_error when its path or parameters differ from the first request's). Keys are pruned
once 24 hours old (Stripe: "at least 24 hours"): a repeat after that is a new request. Validation: "email" must look like an address
(400 {"error": {"type": "invalid_request_error", "code": "email_invalid", "param": "email", ...}}).

Control API: POST /_records {"resource": "customers", "op": "create", "fields": {...}}
-> the object, {"op": "update", "id", "fields"}, {"op": "delete", "id"} (changes made directly in
Stripe, with their events); POST /_control {"delay_ms", "fail_status", "fail_count", "rate_limit",
"drop_after_apply": n (apply the next n POSTs, then close the connection without answering),
"after_drop_status": s (the request after such a drop fails with status s; a 4xx is not given
to a repeat of another key already applied, which Stripe answers with its first answer),
"in_use_count": n (the next n POSTs that carry an Idempotency-Key get Stripe's 409
idempotency_key_in_use, as while an earlier request with the key is still running; nothing is
applied), "saved_500": n (the next n POSTs that carry an Idempotency-Key get a 500 api_error
that is saved as the key's answer and replayed to every repeat, as Stripe saves a 500 once the
endpoint began; with "saved_500_applied": true the write is applied first), "age_keys_s": s
(every saved key becomes s seconds older: a test's way to let a day pass), "hold_writes": true (every POST and DELETE waits at the gate until POST /_gate/open,
then is applied as usual, also when its client has hung up meanwhile, as Stripe applies a
request whose caller went away), "reset"},
GET /_requests, GET /_store.
Run: python3 test/fakes/fake_stripe.py --port N  (prints "listening on N" when ready). The server,
the request log, the gate and the unreachable_ms knob are fake_http.py's, shared by the fakes.
"""
import json
import os
import random
import re
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fake_http  # noqa: E402

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
PREFIX = {"customers": ("cus_", "customer"), "products": ("prod_", "product")}


class State(fake_http.State):
    knobs = ("delay_ms", "fail_status", "fail_count", "rate_limit", "drop_after_apply",
             "after_drop_status", "in_use_count", "saved_500")
    flags = ("hold_writes", "saved_500_applied")
    KEY_TTL_S = 24 * 3600

    def reset(self):
        super().reset()
        self.store = {}
        self.idem = {}
        self.counter = 0
        self.drop_after_apply = 0
        self.after_drop_status = 0
        self.dropped = False
        self.dropped_key = None
        self.in_use_count = 0
        self.saved_500 = 0
        self.saved_500_applied = False
        self.hold_writes = False
        self.events = []

    def control(self, c):
        super().control(c)
        if "drop_after_apply" in c:
            self.dropped = False
        if "age_keys_s" in c:
            for k, (status, obj, first, saved) in list(self.idem.items()):
                self.idem[k] = (status, obj, first, saved - int(c["age_keys_s"]))

    def saved_answer(self, key):
        """The answer saved for key, or None when there is none (or it was pruned)."""
        if key not in self.idem:
            return None
        if time.time() - self.idem[key][3] >= self.KEY_TTL_S:
            del self.idem[key]
            return None
        return self.idem[key]


class Handler(fake_http.Handler):
    methods = ("GET", "POST", "DELETE")
    name = "fake_stripe"
    request_id = None

    def answer_headers(self):
        return {"Request-Id": self.request_id} if self.request_id else {}

    def err(self, status, etype, message, code=None, param=None):
        e = {"type": etype, "message": message}
        if code:
            e["code"] = code
        if param:
            e["param"] = param
        return status, {"error": e}

    def control(self, method, url, raw):
        self.request_id = None
        return super().control(method, url, raw)

    def api(self, method, url, raw):
        st = self.server.state
        form = {k: v[0] for k, v in urllib.parse.parse_qs(raw.decode(), keep_blank_values=True).items()}
        key = self.headers.get("Idempotency-Key")
        self.request_id = "req_" + "".join(random.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
                                           for _ in range(14))
        self.arrive({"method": method, "path": url.path, "form": form,
                     "query": url.query, "time": time.time(),
                     "idempotency_key": key, "content_type": self.headers.get("Content-Type"),
                     "request_id": self.request_id})
        if self.headers.get("Authorization") != "Bearer " + st.args.token:
            return self.send(*self.err(401, "invalid_request_error", "Invalid API Key provided"))
        with st.lock:
            if st.hold_writes and method in ("POST", "DELETE"):
                self.hold_at_gate()
            status = st.take_failure()
            if status:
                return self.send(*self.err(status, "api_error", "fake failure"))
            if st.take_rate_limit():
                return self.send(*self.err(429, "rate_limit_error", "Too many requests", "rate_limit"))
            # Stripe answers a key it has applied with its first answer: a 4xx failure after a
            # drop is the answer to the dropped request's own repeat or to a new request only
            replay = method == "POST" and key and st.saved_answer(key) and key != st.dropped_key
            if st.dropped and st.after_drop_status and not (
                    replay and st.after_drop_status < 500):
                st.dropped = False
                return self.send(*self.err(st.after_drop_status, "invalid_request_error",
                                           "fake failure after a lost answer"))
            if method == "POST" and key and st.in_use_count > 0:
                st.in_use_count -= 1
                return self.send(*self.err(
                    409, "idempotency_error",
                    "There is currently another in-progress request using this Idempotent Key "
                    "(that probably means you submitted twice, and the other request is still "
                    "going through): %s. Please try again later." % key,
                    "idempotency_key_in_use"))
            if method == "GET" and url.path in ("/v1/events",) or (
                    method == "GET" and len([p for p in url.path.split("/") if p]) == 2):
                status, obj = self.listing(url)
                return self.send(status, obj)
            if method == "GET" and url.path.endswith("/search"):
                status, obj = self.search(url)
                return self.send(status, obj)
            headers = {}
            saved = method == "POST" and key and st.saved_answer(key)
            if saved:
                status, obj, first, _ = saved
                if first != (url.path, form):
                    status, obj = self.err(
                        400, "idempotency_error",
                        "Keys for idempotent requests can only be used with the same parameters "
                        "they were first used with. Try using a key other than '%s' if you meant "
                        "to execute a different request." % key)
                else:
                    headers["Idempotent-Replayed"] = "true"
            elif method == "POST" and key and st.saved_500 > 0:
                st.saved_500 -= 1
                if st.saved_500_applied:
                    self.apply(method, url.path, form)
                status, obj = self.err(500, "api_error", "fake failure, saved for the key")
                st.idem[key] = (status, obj, (url.path, form), time.time())
            else:
                status, obj = self.apply(method, url.path, form)
                if method == "POST" and key:
                    st.idem[key] = (status, obj, (url.path, form), time.time())
            drop = method == "POST" and st.drop_after_apply > 0
            if drop:
                st.drop_after_apply -= 1
                st.dropped = True
                st.dropped_key = key
        if drop:
            return self.drop()
        self.send(status, obj, headers=headers)

    def apply(self, method, path, form):
        st = self.server.state
        # each segment decoded on its own, as an HTTP server routes: "%2F" stays inside its id
        parts = [urllib.parse.unquote(p) for p in path.split("/") if p]
        if len(parts) < 2 or parts[0] != "v1":
            return self.err(404, "invalid_request_error", "Unrecognized request URL")
        res = parts[1]
        prefix, objname = PREFIX.get(res, (res[:3] + "_", res.rstrip("s")))
        recs = st.store.setdefault(res, {})
        email = form.get("email")
        if email and not EMAIL_RE.match(email):
            return self.err(400, "invalid_request_error", "Invalid email address: %s" % email,
                            "email_invalid", "email")
        if len(parts) == 2 and method == "POST":
            st.counter += 1
            rid = "%s%014d" % (prefix, st.counter)
            obj = {"id": rid, "object": objname, "created": int(time.time()), "livemode": False,
                   "metadata": {}}
            obj.update({k: v for k, v in form.items() if v != ""})
            recs[rid] = obj
            self.event(objname, "created", obj)
            return 200, obj
        if len(parts) == 3:
            rid = parts[2]
            if rid not in recs:
                return self.err(404, "invalid_request_error", "No such %s: '%s'" % (objname, rid),
                                "resource_missing", "id")
            if method == "GET":
                return 200, recs[rid]
            if method == "DELETE":
                gone = recs.pop(rid)
                self.event(objname, "deleted", dict(gone, deleted=True))
                return 200, {"id": rid, "object": objname, "deleted": True}
            if method == "POST":
                for k, v in form.items():
                    if v == "":
                        recs[rid].pop(k, None)
                    else:
                        recs[rid][k] = v
                self.event(objname, "updated", recs[rid])
                return 200, recs[rid]
        return self.err(404, "invalid_request_error", "Unrecognized request URL")

    def event(self, objname, what, obj):
        st = self.server.state
        st.counter += 1
        st.events.append({"id": "evt_%014d" % st.counter, "object": "event",
                          "type": "%s.%s" % (objname, what), "created": int(time.time()),
                          "livemode": False, "data": {"object": json.loads(json.dumps(obj))}})

    def listing(self, url):
        """Stripe's cursor pagination over a list kept oldest first."""
        st = self.server.state
        q = urllib.parse.parse_qs(url.query)
        one = lambda k: (q.get(k) or [None])[0]
        try:
            limit = int(one("limit") or 10)
        except ValueError:
            limit = 0
        if not 1 <= limit <= 100:
            return self.err(400, "invalid_request_error",
                            "Invalid integer: limit must be between 1 and 100", param="limit")
        if url.path == "/v1/events":
            types = q.get("types[]") or []
            items = [e for e in st.events if not types or e["type"] in types]
        else:
            res = url.path.split("/")[2]
            items = sorted(st.store.get(res, {}).values(), key=lambda o: o["id"])
        after, before = one("starting_after"), one("ending_before")
        if after and before:
            return self.err(400, "invalid_request_error",
                            "Received both starting_after and ending_before parameters.")
        pos = {o["id"]: i for i, o in enumerate(items)}
        cur = after or before
        if cur and cur not in pos:
            return self.err(404, "invalid_request_error", "No such object: '%s'" % cur,
                            "resource_missing", "starting_after" if after else "ending_before")
        if before:
            # the objects just newer than the cursor, still newest first
            newer = items[pos[before] + 1:]
            page = newer[:limit]
            has_more = len(newer) > limit
        else:
            older = items[:pos[after]] if after else items
            page = older[-limit:] if older else []
            has_more = len(older) > limit
        return 200, {"object": "list", "url": url.path, "has_more": has_more,
                     "data": list(reversed(page))}

    def search(self, url):
        """Stripe's Search API, for the one clause metadata['key']:'value'."""
        st = self.server.state
        q = urllib.parse.parse_qs(url.query)
        query = (q.get("query") or [""])[0]
        m = re.fullmatch(r"metadata\['([^'\[\]]+)'\]:'([^'\\]*)'", query)
        if not m:
            return self.err(400, "invalid_request_error",
                            "The fake answers only metadata['key']:'value' searches: %s" % query,
                            param="query")
        k, v = m.groups()
        res = url.path.split("/")[2]
        found = [o for o in sorted(st.store.get(res, {}).values(), key=lambda o: o["id"])
                 if o.get("metadata[%s]" % k) == v or (o.get("metadata") or {}).get(k) == v]
        limit = int((q.get("limit") or ["10"])[0])
        return 200, {"object": "search_result", "url": url.path, "has_more": len(found) > limit,
                     "data": list(reversed(found))[:limit], "next_page": None}

    def records(self, c):
        st = self.server.state
        res = c.get("resource", "customers")
        prefix, objname = PREFIX.get(res, (res[:3] + "_", res.rstrip("s")))
        recs = st.store.setdefault(res, {})
        op, rid, fields = c.get("op"), c.get("id"), c.get("fields") or {}
        if op == "create":
            n = int(c.get("count", 0)) or 1
            made = []
            for i in range(n):
                st.counter += 1
                obj = {"id": "%s%014d" % (prefix, st.counter), "object": objname,
                       "created": int(time.time()), "livemode": False, "metadata": {}}
                obj.update(fake_http.numbered(fields, i))
                recs[obj["id"]] = obj
                self.event(objname, "created", obj)
                made.append(obj)
            return self.send(200, made[0] if n == 1 and not c.get("count") else {"data": made})
        if rid not in recs:
            return self.send(404, {"error": "no such object"})
        if op == "update":
            recs[rid].update(fields)
            self.event(objname, "updated", recs[rid])
            return self.send(200, recs[rid])
        if op == "delete":
            gone = recs.pop(rid)
            self.event(objname, "deleted", dict(gone, deleted=True))
            return self.send(200, {"id": rid, "deleted": True})
        return self.send(400, {"error": "unknown op"})

    def store_view(self):
        return self.server.state.store


def main():
    fake_http.serve(__doc__, Handler, State, [(("--token",), {"default": "sk_test_fake"})])


if __name__ == "__main__":
    main()
