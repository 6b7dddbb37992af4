"""Minimal PostgreSQL wire-protocol client for tests that need to see raw messages.

libpq and psycopg hide what the tests must check: which authentication request the pooler
sends, the SQLSTATE of a refused login, and how a client that reads slowly is treated. This
speaks just enough of protocol 3.0 for that: startup, cleartext/md5/trust authentication,
simple Query, and message reading with a bounded receive buffer.
"""

import hashlib
import socket
import struct

AUTH_OK = 0
AUTH_CLEARTEXT = 3
AUTH_MD5 = 5
AUTH_SASL = 10


class WireError(Exception):
    pass


def parse_error_fields(body):
    """ErrorResponse/NoticeResponse body -> {field code: text}."""
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return fields


class WireClient:
    """One connection; every read has a timeout so a silent server fails the test."""

    def __init__(self, host, port, timeout=10.0, rcvbuf=None):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        if host.startswith("/"):
            family = socket.AF_UNIX
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        if rcvbuf:
            # Must be set before connect so the window advertised to the peer stays small.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        if family == socket.AF_UNIX:
            self.sock.connect(f"{host}/.s.PGSQL.{port}")
        else:
            self.sock.connect((host, port))
        self.buf = bytearray()
        self.pos = 0
        self.auth_requests = []
        self.params = {}

    def close(self):
        try:
            self.sock.sendall(b"X\0\0\0\4")
        except OSError:
            pass
        self.sock.close()

    def send(self, kind, body=b""):
        self.sock.sendall(kind + struct.pack("!I", len(body) + 4) + body)

    def _fill(self, n):
        while len(self.buf) - self.pos < n:
            chunk = self.sock.recv(262144)
            if not chunk:
                raise WireError("connection closed by server")
            self.buf += chunk

    def recv_some(self, limit):
        """Reads at most limit bytes from the socket into the buffer; returns how many."""
        chunk = self.sock.recv(limit)
        if not chunk:
            raise WireError("connection closed by server")
        self.buf += chunk
        return len(chunk)

    def read_msg(self):
        """Returns (type byte as str, body bytes)."""
        self._fill(5)
        p = self.pos
        kind = chr(self.buf[p])
        (length,) = struct.unpack_from("!I", self.buf, p + 1)
        if length < 4 or length > 1 << 30:
            raise WireError(f"bad message length {length}")
        self._fill(1 + length)
        body = bytes(self.buf[p + 5 : p + 1 + length])
        self.pos = p + 1 + length
        if self.pos > 1 << 20:
            del self.buf[: self.pos]
            self.pos = 0
        return kind, body

    def startup(self, user, database, password=None, **params):
        """Logs in. Returns None on success, or the ErrorResponse fields of a refused login."""
        items = {"user": user, "database": database, **params}
        body = struct.pack("!I", 196608)
        for k, v in items.items():
            body += k.encode() + b"\0" + str(v).encode() + b"\0"
        body += b"\0"
        self.sock.sendall(struct.pack("!I", len(body) + 4) + body)
        while True:
            kind, msg = self.read_msg()
            if kind == "E":
                return parse_error_fields(msg)
            if kind == "R":
                (code,) = struct.unpack("!I", msg[:4])
                self.auth_requests.append(code)
                if code == AUTH_OK:
                    continue
                if code == AUTH_CLEARTEXT:
                    self.send(b"p", (password or "").encode() + b"\0")
                elif code == AUTH_MD5:
                    salt = msg[4:8]
                    inner = hashlib.md5((password or "").encode() + user.encode()).hexdigest()
                    outer = hashlib.md5(inner.encode() + salt).hexdigest()
                    self.send(b"p", b"md5" + outer.encode() + b"\0")
                else:
                    raise WireError(f"authentication request {code} not supported here")
            elif kind == "S":
                name, value = msg[:-1].split(b"\0", 1)
                self.params[name.decode()] = value.decode()
            elif kind == "K":
                continue
            elif kind == "Z":
                return None
            elif kind == "N":
                continue
            else:
                raise WireError(f"unexpected message {kind!r} during startup")

    def query(self, sql):
        self.send(b"Q", sql.encode() + b"\0")

    def read_until_ready(self):
        """Reads one simple-query answer; returns (rows as list of lists, error fields or None)."""
        rows, error = [], None
        while True:
            kind, msg = self.read_msg()
            if kind == "D":
                (n,) = struct.unpack("!H", msg[:2])
                pos, row = 2, []
                for _ in range(n):
                    (ln,) = struct.unpack("!i", msg[pos : pos + 4])
                    pos += 4
                    if ln < 0:
                        row.append(None)
                    else:
                        row.append(msg[pos : pos + ln].decode())
                        pos += ln
                rows.append(row)
            elif kind == "E":
                error = parse_error_fields(msg)
            elif kind == "Z":
                return rows, error
