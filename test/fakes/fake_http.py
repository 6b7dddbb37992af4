"""The HTTP scaffolding the fake API servers of test/fakes/ share (Python standard library only).

Each fake_<api>.py keeps its API's own routes, bodies, errors and headers; this module gives
them the rest:

  Server    a threaded HTTP/1.1 server (plain or TLS) that can go unreachable for a while:
            it stops listening and drops the connections it has, so nothing can be sent
  Handler   reads the request, answers JSON or raw bytes, drops a connection unanswered, and
            serves the control API below; the fake's own routes go to its api() method
  State     the in-memory state behind a lock, the request log, and the fault-injection knobs
            of POST /_control: the fake names those it honours in `knobs` (integers), `flags`
            (booleans) and `texts`, and uses take_failure(), take_rate_limit(), take_down(),
            unlocked_sleep() where its API meets them
  Gate      holds requests until the test opens it: an answer whose time the test decides,
            with no clock involved
  serve()   the command line (--port, --host, --verbose, --tls-cert/--tls-key and the fake's
            own options); prints "listening on N" when ready

The control API every fake answers (besides what its own docstring lists):
  POST   /_control   JSON: {"reset": true} and the knobs the fake names; "fail_status" without
                     "fail_count" fails every request, "down" without "down_count" drops every
                     one; "unreachable_ms": the port refuses connections for that long
  POST   /_records   the fake's records(c): changes made directly in the API
  GET    /_requests  the log of received API requests;  DELETE /_requests clears it
  GET    /_store     the fake's store_view()
  GET    /_gate/wait is held until POST /_gate/open (at most 60 s, then 504); GET /_gate/held
                     counts the requests that arrived there ({"held": N, "open": bool});
                     POST /_gate/close shuts the gate again and zeroes the count
"""
import argparse
import http.server
import json
import socket
import ssl
import sys
import threading
import time
import urllib.parse

METHODS = ("GET", "POST", "PATCH", "PUT", "DELETE")


def numbered(fields, n):
    """fields with "{n}" in its string values replaced by n (bulk creates of /_records)."""
    return {k: (v.replace("{n}", str(n)) if isinstance(v, str) else v) for k, v in fields.items()}


class Gate:
    """Requests wait at the gate until it opens; counts those that arrived."""

    def __init__(self):
        self.cond = threading.Condition()
        self.held = 0
        self.open = False

    def wait(self, timeout=60):
        """Holds the caller until the gate opens; False when it did not within timeout."""
        with self.cond:
            self.held += 1
            self.cond.notify_all()
            return self.cond.wait_for(lambda: self.open, timeout=timeout)

    def set_open(self, is_open):
        with self.cond:
            self.open = is_open
            if not is_open:
                self.held = 0
            self.cond.notify_all()

    def status(self):
        with self.cond:
            return {"held": self.held, "open": self.open}


class State:
    """A fake's state. Subclasses extend reset() (calling this one) and name their knobs."""

    knobs = ()   # integer knobs of /_control
    flags = ()   # boolean knobs
    texts = ()   # string knobs

    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        self.log = []
        self.delay_ms = 0
        self.fail_status = 0
        self.fail_count = -1
        self.rate_limit = 0
        self.retry_after = 1
        self.down = False
        self.down_count = -1
        self.unreachable_from = 0
        self.unreachable_until = 0

    def control(self, c):
        """Applies a POST /_control body (the lock held)."""
        if c.get("reset"):
            self.reset()
        for k in self.knobs:
            if k in c:
                setattr(self, k, int(c[k]))
        for k in self.flags:
            if k in c:
                setattr(self, k, bool(c[k]))
        for k in self.texts:
            if k in c:
                setattr(self, k, str(c[k]))
        if "fail_status" in c and "fail_count" not in c:
            self.fail_count = -1
        if "down" in c and "down" in self.flags and "down_count" not in c:
            self.down_count = -1
        if "unreachable_ms" in c:
            # from just after this answer went out
            self.unreachable_from = time.time() + 0.1
            self.unreachable_until = self.unreachable_from + int(c["unreachable_ms"]) / 1000.0

    def take_failure(self):
        """The status of the injected failure this request gets, or 0 (the lock held)."""
        if self.fail_status and self.fail_count != 0:
            if self.fail_count > 0:
                self.fail_count -= 1
            return self.fail_status
        return 0

    def take_rate_limit(self):
        """True when this request is to be refused as over the rate limit (the lock held)."""
        if self.rate_limit > 0:
            self.rate_limit -= 1
            return True
        return False

    def take_down(self):
        """True when this request is to be read and left unanswered (the lock held)."""
        down = self.down and self.down_count != 0
        if down and self.down_count > 0:
            self.down_count -= 1
        return down

    def unlocked_sleep(self, ms):
        """Sleeps ms with the lock released (it is held on entry and again on return)."""
        self.lock.release()
        try:
            time.sleep(ms / 1000.0)
        finally:
            self.lock.acquire()


class Handler(http.server.BaseHTTPRequestHandler):
    """Subclasses set `methods`, `content_type`, `name` and define api(method, url, raw),
    records(c) and store_view(); they may add control paths in extra_control()."""

    # head and body go out in two writes: without this each answer waits for a delayed ACK
    disable_nagle_algorithm = True
    protocol_version = "HTTP/1.1"
    methods = METHODS
    content_type = "application/json"
    name = "fake"

    def log_message(self, fmt, *args):
        if getattr(self.server.state.args, "verbose", False):
            sys.stderr.write("%s: %s\n" % (self.name, fmt % args))

    def setup(self):
        super().setup()
        with self.server.conns_lock:
            self.server.conns.add(self.connection)

    def finish(self):
        with self.server.conns_lock:
            self.server.conns.discard(self.connection)
        super().finish()

    # ---- plumbing ----
    def parse_request(self):
        # the request's arrival, as the API would count its own time: its first line is in,
        # the headers and the body not read or parsed yet
        self.arrived = time.time()
        return super().parse_request()

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def answer_headers(self):
        """Headers every answer to this request carries (a fake's request id, say)."""
        return {}

    def send(self, status, obj=None, raw=None, headers=None, ctype=None):
        """Answers status with obj as JSON (or the bytes raw); no body when both are None."""
        body = raw if raw is not None else (b"" if obj is None else json.dumps(obj).encode())
        self.send_response(status)
        for k, v in self.answer_headers().items():
            self.send_header(k, v)
        if status != 204:
            self.send_header("Content-Type", ctype or self.content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if not body:
            self.answered = time.time()  # the answer's last write starts
        self.end_headers()
        if body:
            self.answered = time.time()
            self.wfile.write(body)

    def drop(self):
        """Leaves the request unanswered and closes the connection: the outcome is unknown."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def arrive(self, entry):
        """Logs the request (entry), then plays what every request meets first: "down" (read,
        then dropped unanswered) and "delay_ms". False when the request was dropped."""
        st = self.server.state
        with st.lock:
            st.log.append(entry)
            delay = st.delay_ms
            down = st.take_down()
        if down:
            self.drop()
            return False
        if delay:
            time.sleep(delay / 1000.0)
        return True

    def _route(self):
        method = self.command
        if method not in self.methods:
            return self.send_error(501, "Unsupported method (%r)" % method)
        url = urllib.parse.urlsplit(self.path)
        raw = self.read_body()
        if url.path.startswith("/_"):
            return self.control(method, url, raw)
        return self.api(method, url, raw)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _route

    # ---- the control API ----
    def control(self, method, url, raw):
        st = self.server.state
        path = url.path
        if path in ("/_control", "/_records") and method == "POST":
            try:
                c = json.loads(raw or b"{}")
            except ValueError:
                return self.send(400, {"error": "bad json"})
            with st.lock:
                if path == "/_records":
                    return self.records(c)
                st.control(c)
            return self.send(200, {"ok": True})
        if path == "/_requests" and method == "GET":
            with st.lock:
                return self.send(200, st.log)
        if path == "/_requests" and method == "DELETE":
            with st.lock:
                st.log = []
            return self.send(204)
        if path == "/_store" and method == "GET":
            with st.lock:
                return self.send(200, self.store_view())
        gate = self.server.gate
        if path == "/_gate/wait":
            if not gate.wait():
                return self.send(504, raw=b"gate never opened", ctype="text/plain")
            return self.send(200, raw=b"ok", ctype="text/plain")
        if path == "/_gate/held":
            return self.send(200, gate.status())
        if path in ("/_gate/open", "/_gate/close") and method == "POST":
            gate.set_open(path == "/_gate/open")
            return self.send(200, {"ok": True})
        return self.extra_control(method, url, raw)

    def extra_control(self, method, url, raw):
        return self.send(404, {"error": "no such control path"})

    def hold_at_gate(self):
        """Holds this request at the gate with the state's lock released."""
        st = self.server.state
        st.lock.release()
        try:
            self.server.gate.wait()
        finally:
            st.lock.acquire()

    def api(self, method, url, raw):
        raise NotImplementedError

    def records(self, c):
        raise NotImplementedError

    def store_view(self):
        raise NotImplementedError


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024
    tls = None

    def __init__(self, address, handler, state):
        super().__init__(address, handler)
        self.state = state
        self.gate = Gate()
        self.conns = set()
        self.conns_lock = threading.Lock()

    def listen(self):
        if self.tls:
            self.socket = self.tls.wrap_socket(self.socket, server_side=True)

    def go_unreachable(self, until):
        """Stops listening and drops every connection until `until`: new connections are
        refused, as when the API's host is down."""
        self.socket.close()
        with self.conns_lock:
            for c in list(self.conns):
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        while time.time() < until:
            time.sleep(0.02)
        self.socket = socket.socket(self.address_family, self.socket_type)
        self.server_bind()
        self.server_activate()
        self.listen()

    def handle_error(self, request, client_address):
        # Clients that give up (timeouts, cancelled transfers) are part of the tests.
        if getattr(self.state.args, "verbose", False):
            super().handle_error(request, client_address)


def serve(doc, handler, state_class, options=()):
    """The fake's main(): options are (flags, keyword arguments) of argparse's add_argument."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--tls-cert", default="", help="serve HTTPS with this certificate (PEM)")
    ap.add_argument("--tls-key", default="", help="and this key")
    ap.add_argument("--verbose", action="store_true")
    for flags, kw in options:
        ap.add_argument(*flags, **kw)
    args = ap.parse_args()
    srv = Server((args.host, args.port), handler, state_class(args))
    if args.tls_cert:
        srv.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        srv.tls.load_cert_chain(args.tls_cert, args.tls_key or None)
        srv.tls.set_alpn_protocols(["http/1.1"])
    srv.listen()
    print("listening on %d" % srv.server_address[1], flush=True)
    srv.timeout = 0.05
    st = srv.state
    try:
        while True:
            if st.unreachable_from and time.time() >= st.unreachable_from:
                until = st.unreachable_until
                st.unreachable_from = 0
                srv.go_unreachable(until)
            srv.handle_request()
    except KeyboardInterrupt:
        pass
