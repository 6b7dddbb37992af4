"""Hostile configuration and logins: what must be refused rather than quietly weakened.

- An empty password never logs in, whatever the auth_type (PostgreSQL refuses it everywhere;
  libpq will not even send one, so these tests speak the protocol themselves).
- A setting that would weaken security if ignored (TLS, auth methods not built yet) stops the
  start and a RELOAD, with an error naming the setting; a refused RELOAD keeps the running
  config, as pgbouncer does with a broken file.
"""

import base64
import hashlib
import hmac
import os
import struct

import psycopg
import pytest

import pgwire
from conftest import IS_PGBOUNCER

USERS = {"app": "secret", "scramuser": "scrampass", "postgres": "postgres", "nopass": ""}


def scram_login(w, user, database, password):
    """SCRAM-SHA-256 as libpq does it, for any password (libpq refuses to send an empty one).
    Returns None when logged in, else the ErrorResponse fields."""
    body = struct.pack("!I", 196608) + b"user\0" + user.encode() + b"\0database\0" + \
        database.encode() + b"\0\0"
    w.sock.sendall(struct.pack("!I", len(body) + 4) + body)
    kind, msg = w.read_msg()
    if kind == "E":
        return pgwire.parse_error_fields(msg)
    assert (kind, struct.unpack("!I", msg[:4])[0]) == ("R", pgwire.AUTH_SASL), (kind, msg)
    assert b"SCRAM-SHA-256" in msg
    cnonce = base64.b64encode(os.urandom(18)).decode()
    first_bare = f"n=,r={cnonce}"
    first = ("n,," + first_bare).encode()
    w.send(b"p", b"SCRAM-SHA-256\0" + struct.pack("!I", len(first)) + first)
    kind, msg = w.read_msg()
    if kind == "E":
        return pgwire.parse_error_fields(msg)
    assert struct.unpack("!I", msg[:4])[0] == 11, msg
    server_first = msg[4:].decode()
    attrs = dict(a.split("=", 1) for a in server_first.split(","))
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(attrs["s"]),
                                 int(attrs["i"]))
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    final_bare = f"c=biws,r={attrs['r']}"
    auth_message = f"{first_bare},{server_first},{final_bare}".encode()
    signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature))
    w.send(b"p", f"{final_bare},p={base64.b64encode(proof).decode()}".encode())
    while True:
        kind, msg = w.read_msg()
        if kind == "E":
            return pgwire.parse_error_fields(msg)
        if kind == "Z":
            return None


@pytest.mark.timeout(60)
def test_scram_refuses_an_empty_password(bouncer_factory):
    b = bouncer_factory(config={"pgbouncer": {"auth_type": "scram-sha-256"}}, users=USERS)
    # the hand-made SCRAM client logs in with a real password...
    w = b.wire()
    assert scram_login(w, "scramuser", "app", "scrampass") is None
    w.query("select current_user")
    assert w.read_until_ready() == ([["scramuser"]], None)
    w.close()
    # ...and an auth_file user whose stored password is empty cannot log in with it
    w = b.wire()
    err = scram_login(w, "nopass", "app", "")
    w.close()
    assert err is not None
    assert err["S"] == "FATAL"
    # pgbouncer's words for a failed SCRAM exchange (1.18 lets the server refuse it instead)
    assert err["M"] == "SASL authentication failed" or (
        IS_PGBOUNCER and err["M"].startswith("password authentication failed"))
    with b.connect() as conn:
        assert conn.execute("select 1").fetchone() == (1,)


@pytest.mark.parametrize("auth_type", ["plain", "md5"])
@pytest.mark.timeout(60)
def test_empty_password_refused_by_plain_and_md5(bouncer_factory, auth_type):
    b = bouncer_factory(config={"pgbouncer": {"auth_type": auth_type}}, users=USERS)
    w = b.wire()
    err = w.startup("nopass", "app", "")
    w.close()
    assert err is not None and err["S"] == "FATAL"
    if auth_type == "plain":
        # what PostgreSQL (and pgbouncer) say when a client sends an empty password
        assert err["M"] == "empty password returned by client"
    else:
        assert err["M"].startswith("password authentication failed")
    # an empty password sent in the clear never matches, not even a stored SCRAM secret
    w = b.wire()
    assert w.startup("app", "app", "secret") is None
    w.close()


# (section, key, value): one per row of the refusal table in src/config.c.
REFUSED = [
    ("pgbouncer", "disable_pqexec", "1"),
    ("pgbouncer", "scram_iterations", "100000"),
    ("pgbouncer", "unix_socket_group", "postgres"),
]
IDS = [f"{s}.{k}={v.split()[0]}" for s, k, v in REFUSED]

syncbouncer_only = pytest.mark.skipif(IS_PGBOUNCER, reason="pgbouncer implements these settings")


def with_setting(b, section, key, value):
    """The ini text of b with the setting added."""
    with open(b.ini) as f:
        text = f.read()
    if section == "pgbouncer":
        # last in the file, so that it is the value in force
        return text + f"\n[pgbouncer]\n{key} = {value}\n"
    line = f"app = host=127.0.0.1 port={b.pg.port} dbname=app"
    assert line in text
    return text.replace(line, f"{line} {key}={value}", 1)


def expected_message(section, key, value):
    if section == "pgbouncer":
        return f"{key} = {value} is not supported"
    return f"database app: {key} is not supported"


def admin(b):
    return b.connect(dbname="pgbouncer", user="postgres", password="postgres", autocommit=True,
                     prepare_threshold=None)


@syncbouncer_only
@pytest.mark.parametrize("section,key,value", REFUSED, ids=IDS)
@pytest.mark.timeout(60)
def test_unsupported_security_setting_stops_the_start(bouncer_factory, section, key, value):
    b = bouncer_factory(users=USERS, start=False)
    text = with_setting(b, section, key, value)
    with open(b.ini, "w") as f:
        f.write(text)
    b.start(wait=False)
    rc = b.proc.wait(timeout=20)
    b.stopped_by_us = True
    assert rc != 0
    out = b.output()
    assert expected_message(section, key, value) in out, out
    assert "error(s) in the configuration, not loaded" in out


@syncbouncer_only
@pytest.mark.parametrize("section,key,value", REFUSED, ids=IDS)
@pytest.mark.timeout(60)
def test_unsupported_security_setting_fails_reload_and_keeps_the_old_config(
        bouncer_factory, section, key, value):
    b = bouncer_factory(users=USERS)
    with admin(b) as a:
        before = {r[0]: r[1] for r in a.execute("SHOW CONFIG").fetchall()}
    text = with_setting(b, section, key, value)
    with open(b.ini, "w") as f:
        f.write(text)
    with admin(b) as a:
        with pytest.raises(psycopg.Error) as ei:
            a.execute("RELOAD")
        assert ei.value.diag.message_primary == "RELOAD failed, see logs for additional details"
        after = {r[0]: r[1] for r in a.execute("SHOW CONFIG").fetchall()}
        assert after == before
    assert expected_message(section, key, value) in b.log()
    # the running config still serves, with the same authentication as before
    with b.connect() as c:
        assert c.execute("select current_user").fetchone() == ("app",)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        b.connect(password="wrong")


@syncbouncer_only
@pytest.mark.parametrize("key,value", [(k, v) for s, k, v in REFUSED if s == "pgbouncer"
                                       and k not in ("disable_pqexec", "unix_socket_group")])
@pytest.mark.timeout(60)
def test_unsupported_security_setting_refused_by_set(bouncer_factory, key, value):
    b = bouncer_factory(users=USERS)
    with admin(b) as a:
        before = {r[0]: r[1] for r in a.execute("SHOW CONFIG").fetchall()}[key]
        with pytest.raises(psycopg.Error, match="SET failed"):
            a.execute(f"SET {key} = '{value}'")
        after = {r[0]: r[1] for r in a.execute("SHOW CONFIG").fetchall()}[key]
        assert after == before
    with b.connect() as c:
        assert c.execute("select 1").fetchone() == (1,)
