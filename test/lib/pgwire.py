"""Minimal PostgreSQL wire-protocol client for tests that need to see raw messages.

libpq and psycopg hide what the tests must check: which authentication request the pooler
sends, the SQLSTATE of a refused login, and how a client that reads slowly is treated. This
speaks just enough of protocol 3.0 for that: startup, cleartext/md5/SCRAM-SHA-256/trust
authentication, simple Query, and message reading with a bounded receive buffer.
"""

import base64
import hashlib
import hmac
import os
import socket
import struct

AUTH_OK = 0
AUTH_CLEARTEXT = 3
AUTH_MD5 = 5
AUTH_SASL = 10
AUTH_SASL_CONTINUE = 11
AUTH_SASL_FINAL = 12


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
        self.address = (family, host, port, timeout)
        if family == socket.AF_UNIX:
            self.sock.connect(f"{host}/.s.PGSQL.{port}")
        else:
            self.sock.connect((host, port))
        self.buf = bytearray()
        self.pos = 0
        self.auth_requests = []
        self.params = {}
        self.backend_key = None  # BackendKeyData's process id and secret key, 8 bytes

    def close(self):
        try:
            self.sock.sendall(b"X\0\0\0\4")
        except OSError:
            pass
        self.sock.close()

    def cancel(self):
        """Sends a CancelRequest with this connection's key, on a connection of its own."""
        family, host, port, timeout = self.address
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(f"{host}/.s.PGSQL.{port}" if family == socket.AF_UNIX else (host, port))
            s.sendall(struct.pack("!II", 16, 80877102) + self.backend_key)
            s.recv(1)  # the pooler closes it, answering nothing

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
                elif code == AUTH_SASL:
                    self._scram_first(msg[4:])
                elif code == AUTH_SASL_CONTINUE:
                    self._scram_final(msg[4:], password or "")
                elif code == AUTH_SASL_FINAL:
                    if msg[4:].decode() != "v=" + self._scram["expect"]:
                        raise WireError("wrong SCRAM server signature")
                else:
                    raise WireError(f"authentication request {code} not supported here")
            elif kind == "S":
                name, value = msg[:-1].split(b"\0", 1)
                self.params[name.decode()] = value.decode()
            elif kind == "K":
                self.backend_key = bytes(msg[:8])
            elif kind == "Z":
                return None
            elif kind == "N":
                continue
            else:
                raise WireError(f"unexpected message {kind!r} during startup")

    def _scram_first(self, mechs):
        if b"SCRAM-SHA-256" not in mechs.split(b"\0"):
            raise WireError(f"no SCRAM-SHA-256 among {mechs!r}")
        nonce = base64.b64encode(os.urandom(18)).decode()
        self._scram = {"bare": f"n=,r={nonce}"}
        first = ("n,," + self._scram["bare"]).encode()
        self.send(b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first)

    def _scram_final(self, server_first, password):
        sf = server_first.decode()
        self.scram_server_first = sf
        attrs = dict(a.split("=", 1) for a in sf.split(","))
        salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(attrs["s"]),
                                     int(attrs["i"]))
        client_key = hmac.new(salted, b"Client Key", "sha256").digest()
        server_key = hmac.new(salted, b"Server Key", "sha256").digest()
        without_proof = f"c=biws,r={attrs['r']}"
        auth = f"{self._scram['bare']},{sf},{without_proof}".encode()
        sig = hmac.new(hashlib.sha256(client_key).digest(), auth, "sha256").digest()
        proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, sig))).decode()
        self._scram["expect"] = base64.b64encode(
            hmac.new(server_key, auth, "sha256").digest()).decode()
        self.send(b"p", f"{without_proof},p={proof}".encode())

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
