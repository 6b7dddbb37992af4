"""Anti-enumeration, as pgbouncer does it: an unknown user goes through the whole exchange of its
method and fails like a wrong password, a wrong password for an unknown database fails the
password first, and "no such database" only comes after a good login. The log says what
pgbouncer's says, so that operators' greps keep working."""

import pytest

import pgwire
from conftest import IS_PGBOUNCER


def login(b, user, db, password):
    w = b.wire()
    err = w.startup(user, db, password)
    w.close()
    return w.auth_requests, err


def msg(err):
    return (err["S"], err["C"], err["M"])


@pytest.mark.parametrize("auth_type,requests,text", [
    ("md5", [pgwire.AUTH_MD5], "password authentication failed"),
    ("plain", [pgwire.AUTH_CLEARTEXT], "password authentication failed"),
    ("scram-sha-256", [pgwire.AUTH_SASL, pgwire.AUTH_SASL_CONTINUE],
     "SASL authentication failed"),
])
def test_unknown_user_fails_like_a_wrong_password(bouncer_factory, auth_type, requests, text):
    b = bouncer_factory(config={"pgbouncer": {"auth_type": auth_type,
                                              "log_disconnections": 1}})
    known = login(b, "app", "app", "wrong")
    unknown = login(b, "nobody", "app", "wrong")
    # the same requests, the same error, field for field
    assert known[0] == unknown[0] == requests
    assert msg(known[1]) == msg(unknown[1])
    assert known[1]["M"] == text
    log = b.log()
    assert "no such user: nobody" in log
    assert f"closing because: {text}" in log


def test_unknown_user_shows_a_stable_scram_salt(bouncer_factory, pg):
    """A real SCRAM secret has one salt and iteration count; an unknown user must not show a
    new salt at every attempt (that alone would tell the name is unknown)."""
    secret = pg.sql("select rolpassword from pg_authid where rolname = 'scramuser'")[0][0]
    b = bouncer_factory(config={"pgbouncer": {"auth_type": "scram-sha-256"}},
                        users={"scramuser": secret})

    def salt_and_iterations(user):
        w = b.wire()
        w.startup(user, "app", "wrong")
        w.close()
        attrs = dict(a.split("=", 1) for a in w.scram_server_first.split(","))
        return attrs["s"], attrs["i"]

    known = [salt_and_iterations("scramuser") for _ in range(2)]
    unknown = [salt_and_iterations("nobody") for _ in range(2)]
    assert known[0] == known[1]
    assert unknown[0] == unknown[1]
    assert unknown[0][1] == known[0][1] == "4096"
    assert salt_and_iterations("nobody2")[0] != unknown[0][0]


def test_unknown_user_with_trust(bouncer_factory):
    b = bouncer_factory(config={"pgbouncer": {"auth_type": "trust"}})
    requests, err = login(b, "nobody", "app", None)
    assert requests == []
    assert err["M"] == '"trust" authentication failed'
    assert login(b, "app", "app", None) == ([pgwire.AUTH_OK], None)


@pytest.mark.parametrize("dbname", ["nosuchdb", "app"])
def test_wrong_password_fails_before_the_database_is_looked_at(bouncer, dbname):
    _, err = login(bouncer, "app", dbname, "wrong")
    assert err["M"] == "password authentication failed"
    _, err = login(bouncer, "nobody", dbname, "wrong")
    assert err["M"] == "password authentication failed"


def test_no_such_database_only_after_a_good_login(bouncer):
    requests, err = login(bouncer, "app", "nosuchdb", "secret")
    assert requests == [pgwire.AUTH_MD5]
    assert msg(err) == ("FATAL", "08P01", "no such database: nosuchdb")


def test_autodb_and_unknown_users(bouncer_factory, pg):
    """With a "*" entry every database name exists; users still must prove who they are."""
    b = bouncer_factory(config={"databases": {"*": f"host=127.0.0.1 port={pg.port}"}})
    assert login(b, "app", "crm", "secret")[1] is None
    assert login(b, "nobody", "crm", "secret")[1]["M"] == "password authentication failed"
    assert login(b, "app", "crm", "wrong")[1]["M"] == "password authentication failed"
    # an autodb name PostgreSQL does not have: the server says so, after the login
    err = login(b, "app", "nosuchdb", "secret")[1]
    assert err is not None and "nosuchdb" in err["M"]


def test_forced_user(bouncer_factory, pg):
    """A [databases] user= line logs every client in to the server as that user, but each
    client is still checked against the auth_file under its own name."""
    line = f"host=127.0.0.1 port={pg.port} dbname=app user=app password=secret"
    b = bouncer_factory(config={"databases": {"forced": line}})
    w = b.wire()
    assert w.startup("scramuser", "forced", "scrampass") is None
    w.query("select current_user")
    assert w.read_until_ready() == ([["app"]], None)
    w.close()
    assert login(b, "scramuser", "forced", "wrong")[1]["M"] == "password authentication failed"
    assert login(b, "nobody", "forced", "secret")[1]["M"] == "password authentication failed"


def test_auth_any_needs_a_forced_user(bouncer_factory, pg):
    line = f"host=127.0.0.1 port={pg.port} dbname=app user=app password=secret"
    b = bouncer_factory(config={"databases": {"forced": line},
                                "pgbouncer": {"auth_type": "any"}})
    assert login(b, "whoever", "forced", None)[1] is None
    err = login(b, "whoever", "app", None)[1]
    assert err["M"] == "bouncer config error"
    assert "auth_type=any requires forced user" in b.log()


@pytest.mark.skipif(IS_PGBOUNCER, reason="pgbouncer writes the user name as it came")
def test_user_name_cannot_forge_log_lines(bouncer_factory):
    """A user name is the client's to choose before any password: with a line break in it, it
    must not start a line of the log of its own (one saying a login from another address failed,
    for a tool that bans addresses on such lines)."""
    b = bouncer_factory(config={"pgbouncer": {"log_connections": 1,
                                              "log_disconnections": 1}})
    forged = "2026-01-01 00:00:00.000 UTC [1] LOG C-0x1: 192.0.2.7 bad"
    _, err = login(b, "x\n" + forged, "app", "wrong")
    assert err["M"] == "password authentication failed"
    log = b.log()
    assert not [line for line in log.splitlines() if line.startswith(forged[:30])], log
    assert "x\\n2026-01-01" in log
