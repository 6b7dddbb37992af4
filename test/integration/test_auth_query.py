"""auth_user / auth_query / auth_dbname: users that are in no auth_file are looked up in
PostgreSQL at login; what the query returns authenticates the client and, kept on the pool, logs
its servers in."""

import hashlib
import os
import re
import time
import uuid

import pytest

import pgwire
from conftest import IS_PGBOUNCER

needs_auth_dbname = pytest.mark.skipif(IS_PGBOUNCER, reason="auth_dbname is newer than "
                                       "pgbouncer 1.18")


@pytest.fixture
def roles(pg):
    """Fresh roles for one test: an auth_user whose statements PostgreSQL logs, and users with
    an md5 and a SCRAM secret."""
    tag = uuid.uuid4().hex[:8]
    r = {"admin": f"aq_admin_{tag}", "md5": f"aq_md5_{tag}", "scram": f"aq_scram_{tag}",
         "md5admin": f"aq_md5admin_{tag}", "scramadmin": f"aq_scramadmin_{tag}"}
    pg.sql(f"CREATE ROLE {r['admin']} LOGIN SUPERUSER PASSWORD 'adminpass'")
    pg.sql(f"ALTER ROLE {r['admin']} SET log_statement = 'all'")
    # auth_users as pgbouncer set-ups often have them: the auth_file holds their md5 hash or
    # their SCRAM secret (copied from pg_authid), not the password
    pg.sql(f"SET password_encryption = 'md5';"
           f" CREATE ROLE {r['md5admin']} LOGIN SUPERUSER PASSWORD 'adminpass'")
    pg.sql(f"SET password_encryption = 'scram-sha-256';"
           f" CREATE ROLE {r['scramadmin']} LOGIN SUPERUSER PASSWORD 'adminpass'")
    pg.sql(f"SET password_encryption = 'md5'; CREATE ROLE {r['md5']} LOGIN PASSWORD 'md5pass'")
    pg.sql(f"SET password_encryption = 'scram-sha-256';"
           f" CREATE ROLE {r['scram']} LOGIN PASSWORD 'scrampass'")
    yield r
    pg.sql("select pg_terminate_backend(pid) from pg_stat_activity where usename like "
           f"'aq\\_%\\_{tag}'")
    for name in r.values():
        pg.sql(f"DROP ROLE IF EXISTS {name}")


def aq_bouncer(bouncer_factory, roles, **pgb):
    return bouncer_factory(config={"pgbouncer": {"auth_user": roles["admin"],
                                                 "log_disconnections": 1, **pgb}},
                           users={roles["admin"]: "adminpass", "postgres": "postgres"})


def login(b, user, db, password):
    w = b.wire()
    err = w.startup(user, db, password)
    if err is None:
        w.query("select current_user")
        rows, qerr = w.read_until_ready()
        assert qerr is None
        err = rows
    w.close()
    return w.auth_requests, err


def test_md5_user_from_auth_query(bouncer_factory, roles):
    b = aq_bouncer(bouncer_factory, roles)
    requests, rows = login(b, roles["md5"], "app", "md5pass")
    assert requests == [pgwire.AUTH_MD5, pgwire.AUTH_OK]
    # the server login used the secret the query returned: the user is in no file
    assert rows == [[roles["md5"]]]
    _, err = login(b, roles["md5"], "app", "wrong")
    assert err["M"] == "password authentication failed"


def test_scram_user_from_auth_query(bouncer_factory, roles):
    """The query returns a SCRAM secret: the client does SCRAM (auth_type md5 turns into SCRAM
    for it) and the server is logged in with the keys of its proof."""
    b = aq_bouncer(bouncer_factory, roles)
    requests, rows = login(b, roles["scram"], "app", "scrampass")
    assert requests == [pgwire.AUTH_SASL, pgwire.AUTH_SASL_CONTINUE, pgwire.AUTH_SASL_FINAL,
                        pgwire.AUTH_OK]
    assert rows == [[roles["scram"]]]
    with b.connect(user=roles["scram"], password="scrampass") as conn:
        assert conn.execute("select current_user").fetchone() == (roles["scram"],)


@pytest.mark.skipif(IS_PGBOUNCER, reason="pgbouncer answers 'no such user' when auth_query "
                    "finds no row")
def test_unknown_user_goes_through_the_exchange(bouncer_factory, roles):
    """pgbouncer 1.18 told the client "no such user"; the exchange with a mock secret tells an
    attacker nothing."""
    b = aq_bouncer(bouncer_factory, roles)
    requests, err = login(b, "aq_nobody", "app", "whatever")
    assert requests == [pgwire.AUTH_MD5]
    assert err["M"] == "password authentication failed"
    assert "no such user: aq_nobody" in b.log()


def test_password_change_is_seen_at_the_next_login(bouncer_factory, roles, pg):
    """The query runs at every login: a changed password counts at once."""
    b = aq_bouncer(bouncer_factory, roles)
    assert login(b, roles["md5"], "app", "md5pass")[1] == [[roles["md5"]]]
    pg.sql(f"SET password_encryption = 'md5'; ALTER ROLE {roles['md5']} PASSWORD 'newpass'")
    assert login(b, roles["md5"], "app", "md5pass")[1]["M"] == "password authentication failed"
    assert login(b, roles["md5"], "app", "newpass")[1] == [[roles["md5"]]]


def test_auth_query_runs_no_set(bouncer_factory, roles, pg):
    """PostgreSQL logs every statement of the auth_user: only the query, as a parameterised
    statement, and no SET."""
    start = os.path.getsize(pg.logfile)
    b = aq_bouncer(bouncer_factory, roles)
    for _ in range(3):
        assert login(b, roles["md5"], "app", "md5pass")[1] == [[roles["md5"]]]
    with open(pg.logfile, errors="replace") as f:
        f.seek(start)
        log = f.read()
    statements = re.findall(r"LOG:  (?:statement|execute [^:]*): (.*)", log)
    assert any(s.startswith("SELECT rolname") for s in statements), log[-3000:]
    # (pgbouncer runs its server_reset_query on the auth connection too; nothing else)
    assert not [s for s in statements if s.upper().startswith("SET")], statements
    assert f"$1 = '{roles['md5']}'" in log


@needs_auth_dbname
def test_auth_dbname(bouncer_factory, roles, pg):
    """The query runs in the auth database, whatever database the client asked for."""
    b = bouncer_factory(config={
        "databases": {"authdb": f"host=127.0.0.1 port={pg.port} dbname=postgres"},
        "pgbouncer": {"auth_user": roles["admin"], "auth_dbname": "authdb",
                      "auth_query": "SELECT usename, passwd FROM pg_shadow "
                                    "WHERE usename=$1 AND current_database() = 'postgres'"}},
        users={roles["admin"]: "adminpass"})
    assert login(b, roles["md5"], "crm", "md5pass")[1] == [[roles["md5"]]]


@needs_auth_dbname
def test_auth_database_not_configured(bouncer_factory, roles):
    b = aq_bouncer(bouncer_factory, roles, auth_dbname="nosuchdb")
    _, err = login(b, roles["md5"], "app", "md5pass")
    assert err["M"] == "bouncer config error"
    assert 'authentication database "nosuchdb" is not configured' in b.log()


def test_auth_query_errors_are_logged(bouncer_factory, roles):
    b = aq_bouncer(bouncer_factory, roles, auth_query="SELECT passwd FROM pg_shadow "
                   "WHERE usename=$1")
    _, err = login(b, roles["md5"], "app", "md5pass")
    assert err is not None and err["S"] == "FATAL"
    assert "expected 2 columns from auth_query, not 1" in b.log()
    b2 = aq_bouncer(bouncer_factory, roles, auth_query="SELECT * FROM no_such_table "
                    "WHERE x=$1")
    _, err = login(b2, roles["md5"], "app", "md5pass")
    assert err is not None and err["S"] == "FATAL"
    assert "error response from auth_query" in b2.log()


def test_users_in_the_auth_file_need_no_query(bouncer_factory, roles, pg):
    """app is in the auth_file: its login never asks PostgreSQL."""
    start = os.path.getsize(pg.logfile)
    b = bouncer_factory(config={"pgbouncer": {"auth_user": roles["admin"]}},
                        users={roles["admin"]: "adminpass", "app": "secret"})
    assert login(b, "app", "app", "secret")[1] == [["app"]]
    with open(pg.logfile, errors="replace") as f:
        f.seek(start)
        assert "SELECT rolname" not in f.read()


def test_secret_stays_with_the_pool(bouncer_factory, roles, pg):
    """Servers launched after the login (min_pool_size) log in with the secret the login left
    on the pool, without asking PostgreSQL again; for the SCRAM user, with the keys of the
    client's proof."""
    b = aq_bouncer(bouncer_factory, roles, pool_mode="transaction", min_pool_size=3)
    for role, password in ((roles["md5"], "md5pass"), (roles["scram"], "scrampass")):
        start = os.path.getsize(pg.logfile)
        with b.connect(user=role, password=password, autocommit=True) as conn:
            assert conn.execute("select current_user").fetchone() == (role,)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and backends(pg, role) < 3:
                time.sleep(0.1)
            assert backends(pg, role) == 3
        with open(pg.logfile, errors="replace") as f:
            f.seek(start)
            assert f.read().count(f"$1 = '{role}'") == 1
    assert "server login failed" not in b.log()


def backends(pg, role):
    return pg.sql(f"select count(*) from pg_stat_activity where usename = '{role}'")[0][0]


def test_auth_user_with_md5_hash(bouncer_factory, roles, pg):
    """The usual pgbouncer set-up against md5 servers: auth_file holds auth_user's md5 hash, and
    the auth query's server logs in with it (md5 of the hash and the server's salt)."""
    admin = roles["md5admin"]
    md5hash = "md5" + hashlib.md5(f"adminpass{admin}".encode()).hexdigest()
    assert pg.sql(f"select rolpassword from pg_authid where rolname = '{admin}'")[0][0] == md5hash
    b = bouncer_factory(config={"pgbouncer": {"auth_user": admin}}, users={admin: md5hash})
    assert login(b, roles["md5"], "app", "md5pass")[1] == [[roles["md5"]]]
    assert login(b, roles["scram"], "app", "scrampass")[1] == [[roles["scram"]]]
    assert login(b, roles["md5"], "app", "wrong")[1]["M"] == "password authentication failed"


def scram_admin_bouncer(bouncer_factory, roles, pg):
    admin = roles["scramadmin"]
    secret = pg.sql(f"select rolpassword from pg_authid where rolname = '{admin}'")[0][0]
    assert secret.startswith("SCRAM-SHA-256$")
    return bouncer_factory(config={"pgbouncer": {"auth_user": admin, "server_login_retry": 0}},
                           users={admin: secret})


@pytest.mark.skipif(IS_PGBOUNCER, reason="pgbouncer 1.18 leaves a login waiting for the auth "
                    "query's failed server login until client_login_timeout; newer releases "
                    "fail it with the server login's reason")
def test_auth_user_with_scram_secret_needs_its_keys(bouncer_factory, roles, pg):
    """auth_file holds auth_user's SCRAM secret (copied from pg_authid). A secret alone cannot
    answer the server's SCRAM challenge: as in pgbouncer, the auth query's server login fails
    with "wrong password type" while no SCRAM login of auth_user has given the keys."""
    b = scram_admin_bouncer(bouncer_factory, roles, pg)
    _, err = login(b, roles["md5"], "app", "md5pass")
    assert err["M"] == "server login failed: wrong password type", err
    assert ("cannot do SCRAM authentication: password is SCRAM secret but client "
            "authentication did not provide SCRAM keys") in b.log()


def test_auth_user_with_scram_secret(bouncer_factory, roles, pg):
    """Once auth_user itself has logged in with SCRAM, the keys of its proof log the auth
    query's server in, and auth_query works."""
    admin = roles["scramadmin"]
    b = scram_admin_bouncer(bouncer_factory, roles, pg)
    with b.connect(user=admin, password="adminpass") as conn:
        assert conn.execute("select current_user").fetchone() == (admin,)
    assert login(b, roles["md5"], "app", "md5pass")[1] == [[roles["md5"]]]
    assert login(b, roles["scram"], "app", "scrampass")[1] == [[roles["scram"]]]


def test_auth_query_on_a_database_with_a_forced_user(bouncer_factory, roles, pg):
    """The auth database's entry forces user app (who may not read pg_authid): the auth query
    still runs as auth_user, as pgbouncer's auth pool does, and the client's session runs as the
    forced user."""
    admin = roles["md5admin"]
    md5hash = "md5" + hashlib.md5(f"adminpass{admin}".encode()).hexdigest()
    b = bouncer_factory(config={
        "databases": {"app": f"host=127.0.0.1 port={pg.port} dbname=app user=app"},
        "pgbouncer": {"auth_user": admin}},
        users={admin: md5hash, "app": "secret"})
    assert login(b, roles["md5"], "app", "md5pass")[1] == [["app"]]
    assert "permission denied" not in b.log()


def test_logins_queue_for_the_auth_pool(bouncer_factory, roles, pg):
    """With one server in the auth pool, logins that need auth_query at the same time wait for
    it in turn; each gets its own answer, and the pool keeps a single server."""
    import threading
    b = aq_bouncer(bouncer_factory, roles, default_pool_size=1)
    users = [(roles["md5"], "md5pass"), (roles["scram"], "scrampass")] * 4
    results = [None] * len(users)

    def one(i, user, password):
        results[i] = login(b, user, "app", password)[1]

    threads = [threading.Thread(target=one, args=(i, u, p)) for i, (u, p) in enumerate(users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [[[u]] for u, _ in users]
    assert backends(pg, roles["admin"]) == 1
