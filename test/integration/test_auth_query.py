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


@pytest.mark.skipif(IS_PGBOUNCER, reason="pgbouncer 1.18 runs the auth query in whatever "
                    "session an auth_user client left on the server")
def test_auth_users_own_sessions_do_not_shape_the_auth_query(bouncer_factory, roles, pg):
    """A client logged in as auth_user shares the auth pool's servers (as in pgbouncer). In
    transaction pooling its session state stays on the server it used: here a temporary table
    that hides pg_authid and holds a forged secret for another role. The auth query must not
    run in what a client left: the forged password is refused, and the role's idle server
    never goes to the forger."""
    victim = roles["md5"]
    b = aq_bouncer(bouncer_factory, roles, pool_mode="transaction", default_pool_size=1)
    # the victim's login leaves a server logged in as the victim idle in its pool
    assert login(b, victim, "app", "md5pass")[1] == [[victim]]
    forged = "md5" + hashlib.md5(f"forged{victim}".encode()).hexdigest()
    with b.connect(user=roles["admin"], password="adminpass", autocommit=True) as conn:
        conn.execute("CREATE TEMP TABLE pg_authid (rolname name, rolvaliduntil timestamptz, "
                     "rolpassword text, rolcanlogin bool)")
        conn.execute("INSERT INTO pg_authid VALUES (%s, NULL, %s, true)", (victim, forged))
        # the session's table is there, on the auth pool's one server
        assert conn.execute("SELECT count(*) FROM pg_authid").fetchone() == (1,)
    _, err = login(b, victim, "app", "forged")
    assert isinstance(err, dict) and err["M"] == "password authentication failed", err
    assert login(b, victim, "app", "md5pass")[1] == [[victim]]


@pytest.mark.skipif(IS_PGBOUNCER, reason="pgbouncer answers 'no such user' when auth_query "
                    "finds no row")
def test_unknown_user_is_offered_what_real_users_are(bouncer_factory, roles):
    """auth_type md5 with users whose secrets are SCRAM (PostgreSQL's default since 14): real
    users are asked for SCRAM. An unknown user asked for md5 would be told apart at the first
    message; once logins have shown SCRAM to be what users have, an unknown user goes through
    a SCRAM exchange too and fails as a wrong password does."""
    b = aq_bouncer(bouncer_factory, roles)
    assert login(b, roles["scram"], "app", "scrampass")[1] == [[roles["scram"]]]
    known = login(b, roles["scram"], "app", "wrong")
    unknown = login(b, "aq_nobody", "app", "wrong")
    assert known[0] == unknown[0] == [pgwire.AUTH_SASL, pgwire.AUTH_SASL_CONTINUE]
    assert known[1]["M"] == unknown[1]["M"] == "SASL authentication failed"
    assert known[1]["C"] == unknown[1]["C"]
    # failed attempts do not count: probing a known md5 user does not turn the mock back
    for _ in range(3):
        login(b, roles["md5"], "app", "wrong")
    assert login(b, "aq_nobody", "app", "wrong")[0] == unknown[0]
    # nor do the md5 logins of the auth_file's users: an unknown user would be looked up by
    # auth_query, and is compared with the users auth_query found
    for _ in range(3):
        assert login(b, roles["admin"], "app", "adminpass")[0] == [pgwire.AUTH_MD5,
                                                                    pgwire.AUTH_OK]
    assert login(b, "aq_nobody", "app", "wrong")[0] == unknown[0]


@pytest.mark.skipif(IS_PGBOUNCER, reason="pgbouncer fails a user with an md5 secret at the "
                    "first SCRAM message, before an unknown user's exchange ends")
def test_md5_secret_under_scram_fails_like_an_unknown_user(bouncer_factory, roles):
    """auth_type scram-sha-256 and a user whose secret is an md5 hash, which cannot do SCRAM:
    as in PostgreSQL the exchange goes on with a mock secret and fails at its end, so the user
    cannot be told from an unknown one; the log says why."""
    b = aq_bouncer(bouncer_factory, roles, auth_type="scram-sha-256")
    md5user = login(b, roles["md5"], "app", "md5pass")
    unknown = login(b, "aq_nobody", "app", "md5pass")
    assert md5user[0] == unknown[0] == [pgwire.AUTH_SASL, pgwire.AUTH_SASL_CONTINUE]
    assert md5user[1]["M"] == unknown[1]["M"] == "SASL authentication failed"
    assert md5user[1]["C"] == unknown[1]["C"]
    assert "SCRAM authentication failed: user has MD5 secret" in b.log()


def peak_rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.mark.skipif(IS_PGBOUNCER, reason="pgbouncer 1.18 refuses the login with 'bouncer config "
                    "error' before the query runs")
def test_huge_auth_query_answer_is_not_gathered(bouncer_factory, roles):
    """An auth_query that answers with a 64 MB "secret" (a custom query reading a table users
    can write to, say): the answer is refused as soon as its length is known, the login fails
    as a failed query does, and the pooler does not hold the answer in memory."""
    b = aq_bouncer(bouncer_factory, roles,
                   auth_query="SELECT $1::text, repeat('x', 64 * 1024 * 1024)")
    before = peak_rss_kb(b.pid)
    _, err = login(b, roles["md5"], "app", "md5pass")
    assert isinstance(err, dict) and err["M"] == "authentication query failed", err
    assert "auth_query answer too long" in b.log()
    assert peak_rss_kb(b.pid) - before < 32 * 1024


@pytest.mark.skipif(IS_PGBOUNCER, reason="pgbouncer 1.18 refuses the login with 'bouncer config "
                    "error' before the query runs")
def test_query_timeout_ends_a_stuck_auth_query(bouncer_factory, roles, pg):
    """The auth query waits on a lock that is never released: query_timeout cancels it and
    frees the auth pool's server, as it does a client's query; the login fails and the next
    one, with the lock gone, works on the auth pool."""
    lock = 7340321
    b = aq_bouncer(bouncer_factory, roles, query_timeout=1, default_pool_size=1, auth_query=(
        "SELECT rolname, rolpassword FROM pg_authid, "
        f"LATERAL (SELECT pg_advisory_xact_lock_shared({lock})) l WHERE rolname=$1"))
    with pg.connect(dbname="app") as holder:
        holder.autocommit = True
        holder.execute(f"SELECT pg_advisory_lock({lock})")
        _, err = login(b, roles["md5"], "app", "md5pass")
        assert isinstance(err, dict) and err["M"] == "authentication query failed", err
        assert "closing because: query timeout" in b.log()
    assert login(b, roles["md5"], "app", "md5pass")[1] == [[roles["md5"]]]


@needs_auth_dbname
def test_disabled_auth_database(bouncer_factory, roles, pg):
    """DISABLE of the auth database stops the pooler from logging into it for auth_query too,
    as in pgbouncer: logins that need the query are refused until ENABLE."""
    b = bouncer_factory(config={
        "databases": {"authdb": f"host=127.0.0.1 port={pg.port} dbname=postgres"},
        "pgbouncer": {"auth_user": roles["admin"], "auth_dbname": "authdb"}},
        users={roles["admin"]: "adminpass", "postgres": "postgres"})
    with b.connect(dbname="pgbouncer", user="postgres", password="postgres", autocommit=True,
                   prepare_threshold=None) as a:
        a.execute("DISABLE authdb")
        _, err = login(b, roles["md5"], "app", "md5pass")
        assert isinstance(err, dict), err
        assert err["M"] == 'authentication database "authdb" is disabled'
        a.execute("ENABLE authdb")
    assert login(b, roles["md5"], "app", "md5pass")[1] == [[roles["md5"]]]
