"""Client authentication, server login, and where the pooler listens."""

import hashlib
import os
import socket

import psycopg
import pytest

import pgwire
from conftest import HAVE_IPV6, IS_PGBOUNCER


def md5_secret(user, password):
    return "md5" + hashlib.md5((password + user).encode()).hexdigest()


def test_wrong_password_is_refused_with_pgbouncer_error(bouncer):
    w = bouncer.wire()
    err = w.startup("app", "app", "wrong")
    w.close()
    assert err is not None
    assert err["S"] == "FATAL"
    # pgbouncer's words; pgbouncer sends them with a protocol-violation SQLSTATE, we with
    # PostgreSQL's invalid_password, which drivers classify as an authentication failure.
    assert err["M"] == "password authentication failed"
    assert err["C"] == ("08P01" if IS_PGBOUNCER else "28P01")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        bouncer.connect(password="wrong")
    # The pooler keeps serving the others.
    with bouncer.connect() as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_unknown_user_is_refused_like_a_wrong_password(bouncer):
    w = bouncer.wire()
    err = w.startup("nobody", "app", "secret")
    w.close()
    # Saying "no such user" would tell an attacker which names exist.
    assert err is not None and err["M"].startswith("password authentication failed")


def test_unknown_database(bouncer):
    w = bouncer.wire()
    err = w.startup("app", "nosuchdb", "secret")
    w.close()
    assert err is not None
    assert (err["S"], err["C"], err["M"]) == ("FATAL", "08P01", "no such database: nosuchdb")
    with pytest.raises(psycopg.OperationalError, match="no such database: nosuchdb"):
        bouncer.connect(dbname="nosuchdb")


@pytest.mark.parametrize(
    "auth_type,stored,request_code",
    [
        ("md5", "secret", pgwire.AUTH_MD5),
        ("md5", md5_secret("app", "secret"), pgwire.AUTH_MD5),
        ("plain", "secret", pgwire.AUTH_CLEARTEXT),
    ],
    ids=["md5-plain-userlist", "md5-hashed-userlist", "plain"],
)
def test_password_auth_against_userlist(bouncer_factory, auth_type, stored, request_code):
    b = bouncer_factory(config={"pgbouncer": {"auth_type": auth_type}},
                        users={"app": stored})
    w = b.wire()
    assert w.startup("app", "app", "secret") is None
    assert w.auth_requests == [request_code, pgwire.AUTH_OK]
    w.query("select current_user")
    assert w.read_until_ready() == ([["app"]], None)
    w.close()

    w = b.wire()
    err = w.startup("app", "app", "not-secret")
    w.close()
    assert err is not None and err["M"].startswith("password authentication failed")

    with b.connect() as conn:
        assert conn.execute("select current_user").fetchone() == ("app",)


def test_scram_client_auth(bouncer_factory):
    b = bouncer_factory(config={"pgbouncer": {"auth_type": "scram-sha-256"}})
    with b.connect() as conn:
        assert conn.execute("select current_user").fetchone() == ("app",)
    # pgbouncer says "SASL authentication failed", PostgreSQL "password authentication failed".
    with pytest.raises(psycopg.OperationalError, match="(SASL|password) authentication failed"):
        b.connect(password="wrong")


def test_trust_needs_no_password(bouncer_factory):
    b = bouncer_factory(config={"pgbouncer": {"auth_type": "trust"}})
    w = b.wire()
    assert w.startup("app", "app") is None
    assert w.auth_requests == [pgwire.AUTH_OK]
    w.query("select current_user")
    assert w.read_until_ready() == ([["app"]], None)
    w.close()
    with b.connect(password=None) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


@pytest.mark.parametrize("server_user,password", [("app", "secret"), ("scramuser", "scrampass")],
                         ids=["md5", "scram-sha-256"])
def test_server_login_password_from_databases_line(bouncer_factory, pg, server_user, password):
    # The server demands md5 over TCP; for scramuser, whose secret is SCRAM, that means SCRAM.
    stored = pg.sql(f"select rolpassword from pg_authid where rolname = '{server_user}'")
    assert stored[0][0].startswith("md5" if server_user == "app" else "SCRAM-SHA-256$")
    line = f"host=127.0.0.1 port={pg.port} dbname=app user={server_user} password={password}"
    b = bouncer_factory(config={"databases": {"forced": line},
                                "pgbouncer": {"auth_type": "trust"}},
                        users={"app": "unused"})
    with b.connect(dbname="forced", password=None) as conn:
        assert conn.execute("select current_user, current_database()").fetchone() == (
            server_user, "app")


@pytest.mark.parametrize("user,password", [("app", "secret"), ("scramuser", "scrampass")],
                         ids=["md5", "scram-sha-256"])
def test_server_login_password_from_userlist(bouncer_factory, user, password):
    b = bouncer_factory(users={user: password})
    with b.connect(user=user, password=password) as conn:
        assert conn.execute("select current_user").fetchone() == (user,)


def test_server_login_failure_reaches_client(bouncer_factory, pg):
    line = f"host=127.0.0.1 port={pg.port} dbname=app user=app password=not-the-password"
    b = bouncer_factory(config={"databases": {"badsrv": line},
                                "pgbouncer": {"auth_type": "trust"}})
    with pytest.raises(psycopg.OperationalError):
        conn = b.connect(dbname="badsrv", password=None, connect_timeout=15)
        # pgbouncer may accept the client before it logs in to the server.
        conn.execute("select 1")
    with b.connect() as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_unix_socket(bouncer_factory):
    b = bouncer_factory(config={"pgbouncer": {"unix_socket_dir": "@WORKDIR@"}})
    assert os.path.exists(os.path.join(b.workdir, f".s.PGSQL.{b.port}"))
    with b.connect(host=b.workdir) as conn:
        assert conn.execute("select current_user").fetchone() == ("app",)
        assert conn.pgconn.host.decode() == b.workdir
    w = pgwire.WireClient(b.workdir, b.port)
    assert w.startup("app", "app", "secret") is None
    w.query("select 2")
    assert w.read_until_ready() == ([["2"]], None)
    w.close()


@pytest.mark.skipif(not HAVE_IPV6, reason="no IPv6 loopback on this machine")
def test_ipv6_listen(bouncer_factory):
    b = bouncer_factory(config={"pgbouncer": {"listen_addr": "::1"}}, start=False)
    b.host = "::1"
    b.start()
    with b.connect(host="::1") as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    # Only the address asked for.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", b.port), timeout=2).close()


def test_listen_on_two_addresses(bouncer_factory):
    addrs = "127.0.0.1,::1" if HAVE_IPV6 else "127.0.0.1"
    b = bouncer_factory(config={"pgbouncer": {"listen_addr": addrs}})
    for host in addrs.split(","):
        with b.connect(host=host) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
