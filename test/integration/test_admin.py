"""The admin console: who gets in, every SHOW with pgbouncer 1.25's columns and types, the
states of pools, clients and servers while clients are active, idle and waiting, the stats, and
pgbouncer's error texts.

Run against Debian's pgbouncer 1.18 (SB_BIN=/usr/sbin/pgbouncer) the tests of 1.25-only
behaviour are skipped; the rest hold for both.
"""

import re
import subprocess
import threading
import time

import psycopg
import pytest

from conftest import IS_PGBOUNCER, SB_BIN

INT4, INT8, TEXT, NUMERIC, BYTEA = 23, 20, 25, 1700, 17

SOCKET_COLS = [
    ("type", TEXT), ("user", TEXT), ("database", TEXT), ("replication", TEXT), ("state", TEXT),
    ("addr", TEXT), ("port", INT4), ("local_addr", TEXT), ("local_port", INT4),
    ("connect_time", TEXT), ("request_time", TEXT), ("wait", INT4), ("wait_us", INT4),
    ("close_needed", INT4), ("ptr", TEXT), ("link", TEXT), ("remote_pid", INT4), ("tls", TEXT),
    ("application_name", TEXT), ("prepared_statements", INT4), ("id", INT4),
]
DEBUG_COLS = [(n, INT4) for n in ("recv_pos", "pkt_pos", "pkt_remain", "send_pos",
                                  "send_remain", "pkt_avail", "send_avail")]
COUNTERS = ["server_assignment_count", "xact_count", "query_count", "received", "sent",
            "xact_time", "query_time", "wait_time", "client_parse_count",
            "server_parse_count", "bind_count"]

# pgbouncer 1.25's admin console (doc/usage.md and src/admin.c, src/stats.c): name, type.
EXPECTED = {
    "POOLS": [("database", TEXT), ("user", TEXT)]
    + [(n, INT4) for n in ("cl_active", "cl_waiting", "cl_active_cancel_req",
                           "cl_waiting_cancel_req", "sv_active", "sv_active_cancel",
                           "sv_being_canceled", "sv_idle", "sv_used", "sv_tested", "sv_login",
                           "maxwait", "maxwait_us")]
    + [("pool_mode", TEXT), ("load_balance_hosts", TEXT)],
    "CLIENTS": SOCKET_COLS,
    "SERVERS": SOCKET_COLS,
    "SOCKETS": SOCKET_COLS + DEBUG_COLS,
    "ACTIVE_SOCKETS": SOCKET_COLS + DEBUG_COLS,
    "DATABASES": [("name", TEXT), ("host", TEXT), ("port", INT4), ("database", TEXT),
                  ("force_user", TEXT), ("pool_size", INT4), ("min_pool_size", INT4),
                  ("reserve_pool_size", INT4), ("server_lifetime", INT4), ("pool_mode", TEXT),
                  ("load_balance_hosts", TEXT), ("max_connections", INT4),
                  ("current_connections", INT4), ("max_client_connections", INT4),
                  ("current_client_connections", INT4), ("paused", INT4), ("disabled", INT4)],
    "USERS": [("name", TEXT), ("pool_size", TEXT), ("reserve_pool_size", TEXT),
              ("pool_mode", TEXT), ("max_user_connections", INT4),
              ("current_connections", INT4), ("max_user_client_connections", INT4),
              ("current_client_connections", INT4)],
    "STATS": [("database", TEXT)]
    + [("total_" + c, NUMERIC) for c in COUNTERS]
    + [("avg_" + ("recv" if c == "received" else c), NUMERIC) for c in COUNTERS],
    "STATS_TOTALS": [("database", TEXT)]
    + [(("bytes_" + c) if c in ("received", "sent") else c, NUMERIC) for c in COUNTERS],
    "STATS_AVERAGES": [("database", TEXT)]
    + [(("bytes_" + c) if c in ("received", "sent") else
        ("avg_" + c) if c.endswith("parse_count") or c == "bind_count" else c, NUMERIC)
       for c in COUNTERS],
    "TOTALS": [("name", TEXT), ("value", NUMERIC)],
    "CONFIG": [("key", TEXT), ("value", TEXT), ("default", TEXT), ("changeable", TEXT)],
    "LISTS": [("list", TEXT), ("items", INT4)],
    "MEM": [("name", TEXT), ("size", INT4), ("used", INT4), ("free", INT4), ("memtotal", INT4)],
    "DNS_HOSTS": [("hostname", TEXT), ("ttl", INT8), ("addrs", TEXT)],
    "DNS_ZONES": [("zonename", TEXT), ("serial", INT8), ("count", INT4)],
    "STATE": [("key", TEXT), ("value", TEXT)],
    "VERSION": [("version", TEXT)],
    "PEERS": [("peer_id", INT4), ("host", TEXT), ("port", INT4), ("pool_size", INT4)],
    "PEER_POOLS": [(n, INT4) for n in ("peer_id", "cl_active_cancel_req",
                                       "cl_waiting_cancel_req", "sv_active_cancel",
                                       "sv_login")],
}

needs_125 = pytest.mark.skipif(IS_PGBOUNCER, reason="pgbouncer 1.25 behaviour; Debian has 1.18")


def admin(b, user="postgres", password="postgres", dbname="pgbouncer", **kw):
    # psycopg prepares a statement run five times (extended protocol): the console only
    # speaks the simple protocol, as pgbouncer's does
    kw.setdefault("prepare_threshold", None)
    return b.connect(dbname=dbname, user=user, password=password, autocommit=True, **kw)


def rows(conn, sql):
    cur = conn.execute(sql)
    names = [d.name for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def wait_for(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    return pred()


def pool_row(a, db="app", user="app"):
    for r in rows(a, "SHOW POOLS"):
        if r["database"] == db and r["user"] == user:
            return r
    return None


# ---------------------------------------------------------------- who gets in


def test_admin_user_gets_in_and_stats_user_may_only_show(bouncer_factory):
    b = bouncer_factory(config={"pgbouncer": {"stats_users": "app"}})
    with admin(b) as a:
        assert a.execute("SHOW VERSION").fetchall()
        a.execute("PAUSE app")
        a.execute("RESUME app")
    with admin(b, user="app", password="secret") as a:
        assert rows(a, "SHOW POOLS")
        with pytest.raises(psycopg.Error) as ei:
            a.execute("PAUSE")
        assert ei.value.sqlstate == "08P01"
        assert "admin access needed" in str(ei.value)
        # the connection stays usable after a refused command
        assert a.execute("SHOW VERSION").fetchone()


def test_other_users_are_not_allowed(bouncer):
    with pytest.raises(psycopg.OperationalError) as ei:
        admin(bouncer, user="scramuser", password="scrampass")
    assert "not allowed" in str(ei.value)
    with pytest.raises(psycopg.OperationalError) as ei:
        admin(bouncer, password="wrong")
    assert "password authentication failed" in str(ei.value)


@needs_125
def test_console_is_also_called_syncbouncer(bouncer):
    with admin(bouncer, dbname="syncbouncer") as a:
        assert a.execute("SHOW VERSION").fetchone()[0].startswith("syncbouncer ")


def test_pgbouncer_user_over_unix_socket_needs_no_password(bouncer_factory):
    b = bouncer_factory(config={"pgbouncer": {"unix_socket_dir": "@WORKDIR@"}})
    with psycopg.connect(host=b.workdir, port=b.port, dbname="pgbouncer", user="pgbouncer",
                         autocommit=True, connect_timeout=10) as a:
        assert a.execute("SHOW VERSION").fetchall()
        # an admin: commands are allowed
        a.execute("RECONNECT")
    # the same user over TCP is an ordinary login, which has no password
    with pytest.raises(psycopg.OperationalError):
        admin(b, user="pgbouncer", password="x")


def test_extended_protocol_is_refused(bouncer):
    with admin(bouncer) as a:
        with pytest.raises(psycopg.Error) as ei:
            a.execute("SHOW POOLS", prepare=True)
            a.execute("SHOW POOLS where %s", (1,))
        assert "extended query protocol not supported by admin console" in str(ei.value)


# ---------------------------------------------------------------- SHOW


@needs_125
@pytest.mark.parametrize("view", sorted(EXPECTED))
def test_show_columns_are_pgbouncer_125(bouncer, view):
    with admin(bouncer) as a:
        cur = a.execute(f"SHOW {view}")
        got = [(d.name, d.type_code) for d in cur.description]
        assert got == EXPECTED[view]
        cur.fetchall()


def test_show_help_is_a_notice(bouncer):
    notices = []
    with admin(bouncer) as a:
        # a Diagnostic is only valid during the callback
        a.add_notice_handler(lambda d: notices.append((d.message_primary, d.message_detail)))
        cur = a.execute("SHOW HELP")
        assert cur.description is None
        assert cur.statusmessage == "SHOW"
    assert notices and notices[0][0] == "Console usage"
    assert "SHOW HELP|CONFIG|DATABASES" in notices[0][1]


def test_select_is_an_alias_and_fake_parameters_answer(bouncer):
    with admin(bouncer) as a:
        assert [d.name for d in a.execute("SELECT POOLS").description][:2] == ["database",
                                                                            "user"]
        cur = a.execute("SHOW client_encoding")
        assert cur.fetchall() == [("UTF-8",)]
        cur = a.execute("SHOW standard_conforming_strings")
        assert cur.fetchall() == [("on",)]
        cur = a.execute("SET client_encoding = 'UTF8'")
        assert cur.statusmessage == "SET"


@pytest.mark.parametrize("sql, message", [
    ("SHOW", "invalid command 'SHOW', use SHOW HELP;"),
    ("SHOW nothing", "invalid command 'SHOW nothing', use SHOW HELP;"),
    ("FOO", "invalid command 'FOO', use SHOW HELP;"),
    ("select * from pools", "invalid command 'select * from pools', use SHOW HELP;"),
    ("SHUTDOWN NOW", "invalid command 'SHUTDOWN NOW', use SHOW HELP;"),
    ("PAUSE nosuchdb", "no such database: nosuchdb"),
    ("RECONNECT nosuchdb", "no such database: nosuchdb"),
    ("DISABLE", "a database is required"),
    ("ENABLE nosuchdb", "no such database: nosuchdb"),
    ("SET no_such_setting = 1", "SET failed"),
    ("SET default_pool_size = 'many'", "SET failed"),
])
def test_bad_commands_get_pgbouncer_errors(bouncer, sql, message):
    with admin(bouncer) as a:
        with pytest.raises(psycopg.Error) as ei:
            a.execute(sql)
        assert ei.value.sqlstate == "08P01"
        assert ei.value.diag.message_primary == message
        assert a.execute("SHOW VERSION").fetchone()


@needs_125
@pytest.mark.parametrize("sql, message", [
    ("KILL_CLIENT 987654321", "client not found"),
    ("KILL_CLIENT", "invalid client pointer supplied"),
    ("RESUME", "pooler is not paused/suspended"),
    ("RESUME app", "database app is not paused"),
    ("PAUSE pgbouncer", "cannot pause admin db: pgbouncer"),
    ("DISABLE pgbouncer", "cannot disable admin db: pgbouncer"),
    ("KILL pgbouncer", "cannot kill admin db: pgbouncer"),
])
def test_bad_commands_125(bouncer, sql, message):
    with admin(bouncer) as a:
        with pytest.raises(psycopg.Error) as ei:
            a.execute(sql)
        assert ei.value.sqlstate == "08P01"
        assert ei.value.diag.message_primary == message


@needs_125
def test_show_version_is_the_command_line_version(bouncer):
    first = subprocess.run([SB_BIN, "-V"], capture_output=True, text=True,
                           timeout=10).stdout.splitlines()[0]
    with admin(bouncer) as a:
        assert a.execute("SHOW VERSION").fetchone() == (first,)


def test_show_state_and_databases(bouncer):
    with admin(bouncer) as a:
        if not IS_PGBOUNCER:
            assert dict(a.execute("SHOW STATE").fetchall()) == {
                "active": "yes", "paused": "no", "suspended": "no"}
        dbs = {r["name"]: r for r in rows(a, "SHOW DATABASES")}
        assert set(dbs) >= {"app", "crm", "pgbouncer"}
        assert dbs["app"]["host"] == "127.0.0.1"
        assert dbs["app"]["port"] == bouncer.pg.port
        assert dbs["app"]["database"] == "app"
        assert dbs["app"]["pool_size"] == 20
        assert dbs["pgbouncer"]["pool_mode"] == "statement"


def test_show_config_and_set(bouncer):
    with admin(bouncer) as a:
        cfg = {r["key"]: r for r in rows(a, "SHOW CONFIG")}
        assert cfg["default_pool_size"]["value"] == "20"
        assert cfg["listen_port"]["changeable"] == "no"
        assert cfg["default_pool_size"]["changeable"] == "yes"
        cur = a.execute("SET default_pool_size = 7")
        assert cur.statusmessage == "SET default_pool_size=7"
        cfg = {r["key"]: r for r in rows(a, "SHOW CONFIG")}
        assert cfg["default_pool_size"]["value"] == "7"
        a.execute("SET server_reset_query = 'DISCARD ALL'")
        cfg = {r["key"]: r for r in rows(a, "SHOW CONFIG")}
        assert cfg["server_reset_query"]["value"] == "DISCARD ALL"


# ---------------------------------------------------------------- states


def test_states_of_active_idle_and_waiting_clients(bouncer_factory):
    b = bouncer_factory(config={"pgbouncer": {"default_pool_size": 1,
                                              "pool_mode": "transaction"}})
    with admin(b) as a, b.connect() as busy, b.connect(autocommit=True) as idle:
        idle.execute("select 1")
        busy.execute("select 1")  # psycopg opened a transaction: the server stays linked
        p = pool_row(a)
        assert (p["cl_active"], p["cl_waiting"], p["sv_active"], p["sv_idle"]) == (2, 0, 1, 0)
        states = sorted(r["state"] for r in rows(a, "SHOW CLIENTS") if r["database"] == "app")
        # 1.25 calls an unlinked logged-in client "idle"; 1.18 said "active"
        assert states == (["active", "active"] if IS_PGBOUNCER else ["active", "idle"])
        servers = [r for r in rows(a, "SHOW SERVERS") if r["database"] == "app"]
        assert [s["state"] for s in servers] == ["active"]
        busy_server = servers[0]
        clients = {r["ptr"]: r for r in rows(a, "SHOW CLIENTS")}
        assert clients[busy_server["link"]]["state"] == "active"

        # a third client has to wait for the only server
        done = threading.Event()

        def third():
            with b.connect(autocommit=True) as c:
                c.execute("select 3")
            done.set()

        t = threading.Thread(target=third)
        t.start()
        p = wait_for(lambda: (pool_row(a) or {}).get("cl_waiting") == 1 and pool_row(a))
        assert p["cl_waiting"] == 1
        waiting = [r for r in rows(a, "SHOW CLIENTS") if r["state"] == "waiting"]
        assert len(waiting) == 1
        time.sleep(1.1)
        assert pool_row(a)["maxwait"] >= 1
        busy.commit()
        t.join(10)
        assert done.is_set()
        p = wait_for(lambda: pool_row(a)["sv_idle"] == 1 and pool_row(a))
        assert (p["cl_waiting"], p["sv_active"], p["sv_idle"]) == (0, 0, 1)


@pytest.mark.skipif(IS_PGBOUNCER, reason="pgbouncer 1.18 sees a waiting client's close only "
                    "once a server is free for it")
def test_waiting_client_that_goes_away_leaves_the_queue(bouncer_factory):
    b = bouncer_factory(config={"pgbouncer": {"default_pool_size": 1,
                                              "pool_mode": "transaction"}})
    with admin(b) as a, b.connect() as busy:
        busy.execute("select 1")  # a transaction holds the only server
        gone = b.connect(autocommit=True)
        gone.pgconn.send_query(b"select 2")
        gone.pgconn.flush()
        assert wait_for(lambda: pool_row(a)["cl_waiting"] == 1)
        gone.close()
        # the server is still busy: only the client's own close can take it off the queue
        p = wait_for(lambda: pool_row(a)["cl_waiting"] == 0 and pool_row(a))
        assert p, "the client that closed is still counted as waiting"
        assert (p["cl_active"], p["sv_active"]) == (1, 1)
        assert not [r for r in rows(a, "SHOW CLIENTS") if r["state"] == "waiting"]
        busy.commit()
        assert busy.execute("select 3").fetchone() == (3,)


def test_sockets_lists_and_users(bouncer):
    with admin(bouncer) as a, bouncer.connect(autocommit=True) as c:
        c.execute("select 1")
        socks = rows(a, "SHOW SOCKETS")
        states = {s["state"] for s in socks}
        assert {"cl_active", "sv_active"} <= states
        lists = dict(a.execute("SHOW LISTS").fetchall())
        assert lists["pools"] >= 2
        assert lists["used_servers"] >= 1
        # app, scramuser, postgres from the auth file, and the console's own user
        assert lists["users"] == 4
        if IS_PGBOUNCER:
            return  # SHOW USERS has had these columns since 1.24
        users = {r["name"]: r for r in rows(a, "SHOW USERS")}
        assert users["app"]["current_connections"] == 1
        assert users["app"]["current_client_connections"] == 1


# ---------------------------------------------------------------- stats


def stats_row(a, db="app", view="SHOW STATS"):
    for r in rows(a, view):
        if r["database"] == db:
            return r
    return None


@needs_125
def test_stats_count_queries_transactions_and_bytes(bouncer):
    with bouncer.connect(autocommit=True) as c:
        for _ in range(4):
            c.execute("select 1")
        with c.transaction():
            c.execute("select 2")
            c.execute("select 3")
    with admin(bouncer) as a:
        s = stats_row(a)
        # 4 autocommit statements + one transaction (BEGIN, 2 selects, COMMIT)
        assert s["total_xact_count"] == 5
        assert s["total_query_count"] == 8
        assert s["total_server_assignment_count"] >= 1
        assert s["total_received"] > 0 and s["total_sent"] > 0
        assert s["total_query_time"] > 0 and s["total_xact_time"] >= s["total_query_time"] // 2
        t = stats_row(a, view="SHOW STATS_TOTALS")
        assert t["query_count"] == 8 and t["xact_count"] == 5
        # admin statements count as transactions and queries of the console
        before = stats_row(a, "pgbouncer")["total_query_count"]
        a.execute("SHOW VERSION")
        a.execute("SHOW VERSION")
        assert stats_row(a, "pgbouncer")["total_query_count"] == before + 3
        totals = dict(a.execute("SHOW TOTALS").fetchall())
        assert totals["total_query_count"] >= 8 + before


def test_stats_bytes_count_the_queries_not_the_logins(bouncer):
    # pgbouncer counts the messages it relays once logged in: a client's login (startup packet,
    # password) and a server's (authentication, ParameterStatus, BackendKeyData) are not traffic
    with bouncer.connect(autocommit=True) as c:
        c.pgconn.exec_(b"select 1")  # the simple protocol: one Query message
        with admin(bouncer) as a:
            s = stats_row(a)
    # Query: 'Q', length, "select 1\0"
    assert s["total_received"] == 1 + 4 + 9
    # RowDescription (one column "?column?"), DataRow "1", CommandComplete "SELECT 1",
    # ReadyForQuery
    assert s["total_sent"] == (1 + 4 + 2 + 9 + 18) + (1 + 4 + 2 + 4 + 1) + (1 + 4 + 9) + 6
    # nor is the client's Terminate, once it has left
    with admin(bouncer) as a:
        assert wait_for(lambda: not [r for r in rows(a, "SHOW CLIENTS")
                                     if r["database"] == "app"])
        assert stats_row(a)["total_received"] == 1 + 4 + 9


def test_stats_wait_time_counts_the_first_login_waiting_for_a_server(bouncer):
    # the pool's first login waits for a server to learn the server's parameters: wait_time
    # counts that wait, as it counts a query's wait for a server
    with bouncer.connect(autocommit=True) as c:
        c.execute("select 1")
        with admin(bouncer) as a:
            s = stats_row(a)
            p = [r for r in rows(a, "SHOW POOLS") if r["database"] == "app"][0]
    assert p["sv_idle"] + p["sv_active"] + p["sv_used"] == 1  # one server was ever needed
    assert s["total_wait_time"] > 0


@needs_125
def test_stats_period_log_line_and_averages(bouncer_factory):
    b = bouncer_factory(config={"pgbouncer": {"stats_period": 1, "log_stats": 1}})
    with b.connect(autocommit=True) as c:
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            c.execute("select 1")
            time.sleep(0.01)
    line_re = re.compile(r"LOG stats: (\d+) xacts/s, (\d+) queries/s, \d+ client parses/s, "
                         r"\d+ server parses/s, \d+ binds/s, in \d+ B/s, out \d+ B/s, "
                         r"xact \d+ us, query \d+ us, wait \d+ us")
    found = wait_for(lambda: [m for m in line_re.finditer(b.log()) if int(m.group(2)) > 0],
                     timeout=5)
    assert found, b.log()
    with admin(b) as a:
        avg = stats_row(a, view="SHOW STATS_AVERAGES")
        assert avg["query_count"] > 0
        assert avg["bytes_received"] > 0


def test_psql_show_pools_as_operators_type_it(bouncer):
    res = bouncer.psql("-c", "SHOW POOLS", dbname="pgbouncer", user="postgres",
                       password="postgres")
    header = res.stdout.splitlines()[0]
    assert [h.strip() for h in header.split("|")][:4] == ["database", "user", "cl_active",
                                                          "cl_waiting"]
    assert "pgbouncer" in res.stdout
    res = bouncer.psql("-At", "-c", "SHOW CLIENTS", dbname="pgbouncer", user="postgres",
                       password="postgres")
    assert "|postgres|pgbouncer|" in res.stdout


@needs_125
def test_stats_count_prepared_statements(bouncer_factory):
    b = bouncer_factory(config={"pgbouncer": {"pool_mode": "transaction",
                                              "max_prepared_statements": 10}})
    with b.connect(autocommit=True, prepare_threshold=0) as c:
        for i in range(3):
            assert c.execute("select %s::int + 1", (i,)).fetchone() == (i + 1,)
    with admin(b) as a:
        s = stats_row(a, view="SHOW STATS_TOTALS")
        assert s["client_parse_count"] == 1
        assert s["bind_count"] == 3
        assert s["server_parse_count"] >= 1
        totals = dict(a.execute("SHOW TOTALS").fetchall())
        assert totals["total_ps_bind_count"] == 3


@needs_125
def test_set_stats_period_takes_effect_at_once(bouncer):
    with admin(bouncer) as a:
        a.execute("SET log_stats = 1")
        a.execute("SET stats_period = 1")
    found = wait_for(lambda: "LOG stats: " in bouncer.log(), timeout=5)
    assert found, bouncer.log()
