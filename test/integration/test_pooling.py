"""Pool modes as an application sees them: which backend a statement runs on, what a transaction
keeps, what statement mode refuses; server choice, reset, connect_query, auto-database."""

import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time

import psycopg
import pytest

from conftest import IS_PGBOUNCER


def txn_config(**extra):
    cfg = {"pool_mode": "transaction", "default_pool_size": 1}
    cfg.update(extra)
    return {"pgbouncer": cfg}


def backend_pid(conn):
    return conn.execute("select pg_backend_pid()").fetchone()[0]


def run_in_thread(fn):
    box = {}

    def target():
        try:
            box["result"] = fn()
        except Exception as e:  # noqa: BLE001 - handed to the test
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, box


def test_transaction_mode_shares_one_server_between_idle_clients(bouncer_factory):
    b = bouncer_factory(config=txn_config())
    with b.connect(autocommit=True) as a, b.connect(autocommit=True) as c:
        pid_a = backend_pid(a)
        # a is idle between statements: c gets the same (only) backend without waiting.
        pid_c = backend_pid(c)
        assert pid_a == pid_c
        assert a.execute("select 1").fetchone() == (1,)


def test_transaction_mode_each_client_keeps_its_settings_on_a_shared_server(bouncer_factory):
    """Clients taking turns on one backend each see their own settings, whether they started
    with the same ones as the client before them or not, and after one of them changes its own."""
    b = bouncer_factory(config=txn_config())

    def show(conn):
        return conn.execute("select current_setting('TimeZone'), "
                            "current_setting('application_name'), pg_backend_pid()").fetchone()

    # simple protocol throughout (no prepare_threshold): the same on pgbouncer 1.18
    with b.connect(autocommit=True, application_name="same", prepare_threshold=None) as a, \
            b.connect(autocommit=True, application_name="same", prepare_threshold=None) as c, \
            b.connect(autocommit=True, application_name="other", prepare_threshold=None) as d:
        pids = set()
        for conn, name in ((a, "same"), (c, "same"), (a, "same"), (d, "other"), (c, "same")):
            tz, app, pid = show(conn)
            assert app == name
            pids.add(pid)
        zone = show(a)[0]
        a.execute("set timezone = 'Pacific/Chatham'")
        for conn, want_tz, name in ((c, zone, "same"), (a, "Pacific/Chatham", "same"),
                                    (a, "Pacific/Chatham", "same"), (c, zone, "same"),
                                    (d, zone, "other"), (a, "Pacific/Chatham", "same"),
                                    (c, zone, "same")):
            tz, app, pid = show(conn)
            assert (tz, app) == (want_tz, name)
            pids.add(pid)
        c.execute("set application_name = 'renamed'")
        for conn, name in ((a, "same"), (c, "renamed"), (d, "other"), (c, "renamed")):
            assert show(conn)[1] == name
        assert show(a)[0] == "Pacific/Chatham"
        # one backend for all three, or the test proves nothing
        assert len(pids) == 1


def test_transaction_mode_keeps_the_server_until_commit(bouncer_factory):
    b = bouncer_factory(config=txn_config())
    with b.connect() as a, b.connect(autocommit=True) as c:
        a.execute("create temp table if not exists t_keep (x int)")  # opens a transaction
        pid_in_txn = backend_pid(a)
        t, box = run_in_thread(lambda: backend_pid(c))
        t.join(0.7)
        assert t.is_alive(), "the other client got the server of an open transaction"
        assert backend_pid(a) == pid_in_txn
        a.commit()
        t.join(10)
        assert box.get("result") == pid_in_txn


@pytest.mark.skipif(IS_PGBOUNCER, reason="pgbouncer 1.18 gives the server back at the first "
                    "ReadyForQuery (the next batch is committed by another client)")
def test_transaction_mode_keeps_the_server_of_a_batch_until_its_sync(bouncer_factory, pg):
    """A pipelining client sends its next batch before the Sync of the one before is answered:
    that answer does not give its server back while the next batch (an open transaction on the
    server) waits for its own Sync, and a client that leaves before that Sync takes the batch
    with it: nobody else ever commits it."""
    pg.sql("DROP TABLE IF EXISTS public.batch_rows; CREATE TABLE public.batch_rows (v text);"
           "ALTER TABLE public.batch_rows OWNER TO app",
           dbname="app")

    def insert(v):
        return [(b"P", b"\0insert into public.batch_rows values ('" + v + b"')\0\0\0"),
                (b"B", b"\0\0\0\0\0\0\0\0"), (b"E", b"\0\0\0\0\0")]

    b = bouncer_factory(config=txn_config())
    w = b.wire()
    assert w.startup("app", "app", "secret") is None
    for kind, body in insert(b"a") + [(b"S", b"")] + insert(b"b"):
        w.send(kind, body)
    while w.read_msg()[0] != "Z":
        pass
    w.close()  # without the second batch's Sync
    with b.connect(autocommit=True, prepare_threshold=None) as c:
        c.execute("insert into public.batch_rows values ('c')")
    assert sorted(r[0] for r in pg.sql("SELECT v FROM public.batch_rows", dbname="app")) == [
        "a", "c"]


def test_session_mode_keeps_the_server_for_the_session(bouncer_factory):
    b = bouncer_factory(config={"pgbouncer": {"default_pool_size": 1, "query_wait_timeout": 2}})
    with b.connect(autocommit=True) as a:
        a.execute("select 1")
        with pytest.raises(psycopg.OperationalError, match="query_wait_timeout"):
            with b.connect(autocommit=True) as c:
                c.execute("select 1")
        assert a.execute("select 2").fetchone() == (2,)


def test_statement_mode_refuses_transaction_blocks(bouncer_factory):
    b = bouncer_factory(config={"pgbouncer": {"pool_mode": "statement"}})
    with b.connect(autocommit=True) as conn:
        assert conn.execute("select 41 + 1").fetchone() == (42,)
    with b.connect(autocommit=True) as conn:
        with pytest.raises(psycopg.OperationalError,
                           match="transaction blocks not allowed in statement pooling mode"):
            conn.execute("begin")
            conn.execute("select 1")
    # the pool is fine afterwards
    with b.connect(autocommit=True) as conn:
        assert conn.execute("select 'ok'").fetchone() == ("ok",)


def test_pool_mode_user_beats_database_beats_global(bouncer_factory, pg):
    server = f"host=127.0.0.1 port={pg.port}"
    b = bouncer_factory(config={
        "databases": {"app": f"{server} dbname=app pool_mode=transaction",
                      "crm": f"{server} dbname=crm"},
        "users": {"scramuser": "pool_mode=statement"},
        "pgbouncer": {"pool_mode": "session", "default_pool_size": 1},
    })
    # app: transaction mode from the database entry, so two clients share one backend
    with b.connect(autocommit=True) as a, b.connect(autocommit=True) as c:
        assert backend_pid(a) == backend_pid(c)
    # crm: session mode from the global setting, so a second client would wait
    with b.connect(dbname="crm", autocommit=True) as a:
        pid = backend_pid(a)
        t, box = run_in_thread(lambda: backend_pid(b.connect(dbname="crm", autocommit=True)))
        t.join(0.7)
        assert t.is_alive()
    t.join(10)
    assert box.get("result") == pid
    # scramuser on app: statement mode from the user entry beats the database's transaction
    with b.connect(user="scramuser", password="scrampass", autocommit=True) as conn:
        with pytest.raises(psycopg.OperationalError, match="statement pooling mode"):
            conn.execute("begin")
            conn.execute("select 1")


@pytest.mark.parametrize("round_robin", [0, 1])
def test_server_choice_lifo_or_round_robin(bouncer_factory, round_robin):
    b = bouncer_factory(config=txn_config(default_pool_size=2, server_round_robin=round_robin))
    # warm two servers: two transactions at once
    with b.connect() as a, b.connect() as c:
        pids = {backend_pid(a), backend_pid(c)}
        assert len(pids) == 2
        a.commit()
        c.commit()
    # (no automatic prepared statements: pgbouncer 1.18 does not carry them across servers)
    with b.connect(autocommit=True, prepare_threshold=None) as conn:
        seen = [backend_pid(conn) for _ in range(6)]
    if round_robin:
        assert len(set(seen)) == 2, seen
    else:
        assert len(set(seen)) == 1, seen


@pytest.mark.parametrize("always", [0, 1])
def test_server_reset_query_always(bouncer_factory, always):
    b = bouncer_factory(config=txn_config(server_reset_query="DISCARD ALL",
                                          server_reset_query_always=always))
    with b.connect(autocommit=True) as conn:
        conn.execute("set sbtest.flag = 'dirty'")
        value = conn.execute("select current_setting('sbtest.flag', true)").fetchone()[0]
    # with the reset after every transaction the setting is gone; without it, it leaks
    if always:
        assert value in (None, "")
    else:
        assert value == "dirty"


def test_connect_query_runs_on_each_new_server(bouncer_factory, pg):
    server = f"host=127.0.0.1 port={pg.port}"
    b = bouncer_factory(config={
        "databases": {"app": f"{server} dbname=app connect_query='"
                             "select set_config(''sbtest.cq'', ''was here'', false)'"},
    })
    with b.connect(autocommit=True) as conn:
        assert conn.execute("select current_setting('sbtest.cq', true)").fetchone() == (
            "was here",)


def test_auto_database_through_star_entry(bouncer_factory, pg):
    b = bouncer_factory(config={"databases": [f"* = host=127.0.0.1 port={pg.port}"]})
    with b.connect(dbname="crm", autocommit=True) as conn:
        assert conn.execute("select current_database()").fetchone() == ("crm",)
    with b.connect(dbname="app", autocommit=True) as conn:
        assert conn.execute("select current_database()").fetchone() == ("app",)
    with pytest.raises(psycopg.OperationalError, match='database "sb_nosuchdb" does not exist'):
        b.connect(dbname="sb_nosuchdb")


def test_application_name_add_host(bouncer_factory):
    b = bouncer_factory(config={"pgbouncer": {"application_name_add_host": 1}})
    with b.connect(application_name="billing", autocommit=True) as conn:
        name = conn.execute("select current_setting('application_name')").fetchone()[0]
    assert re.fullmatch(r"billing - 127\.0\.0\.1:\d+", name), name


def test_application_name_add_host_without_a_name(bouncer_factory):
    b = bouncer_factory(config={"pgbouncer": {"application_name_add_host": 1}})
    with b.connect(dbname="crm", user="scramuser", password="scrampass",
                   autocommit=True) as conn:
        name = conn.execute("select current_setting('application_name')").fetchone()[0]
    # pgbouncer's stand-in for a missing name
    assert re.fullmatch(r"app - 127\.0\.0\.1:\d+", name), name


def point_app_at_crm(b):
    with open(b.ini) as f:
        text = f.read()
    text = text.replace("dbname=app\n", "dbname=crm\n", 1)
    with open(b.ini, "w") as f:
        f.write(text)
    os.kill(b.pid, signal.SIGHUP)


def current_db(conn):
    return conn.execute("select current_database()").fetchone()[0]


def wait_for(fn, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():
            return True
        time.sleep(0.1)
    return fn()


def test_reload_replaces_servers_of_a_changed_database_in_transaction_mode(bouncer_factory):
    b = bouncer_factory(config=txn_config(default_pool_size=2))
    with b.connect(autocommit=True, prepare_threshold=None) as conn:
        assert current_db(conn) == "app"
        point_app_at_crm(b)
        # the server is replaced once released: the client sees the new database
        assert wait_for(lambda: current_db(conn) == "crm")
    with b.connect(autocommit=True) as conn:
        assert current_db(conn) == "crm"


@pytest.mark.parametrize("fast_close", [0, 1])
def test_reload_in_session_mode_and_server_fast_close(bouncer_factory, fast_close):
    b = bouncer_factory(config={"pgbouncer": {"server_fast_close": fast_close}})
    with b.connect(autocommit=True, prepare_threshold=None) as old:
        assert current_db(old) == "app"
        point_app_at_crm(b)
        with b.connect(autocommit=True) as new:
            assert wait_for(lambda: current_db(new) == "crm")
        if fast_close:
            # the old session's server is closed as soon as it is idle: the client is told
            def closed():
                try:
                    current_db(old)
                    return False
                except psycopg.OperationalError:
                    return True
            assert wait_for(closed)
        else:
            # the session keeps its server until it ends
            time.sleep(1)
            assert current_db(old) == "app"


def test_auto_database_is_dropped_after_autodb_idle_timeout(bouncer_factory, pg):
    b = bouncer_factory(config={
        "databases": [f"* = host=127.0.0.1 port={pg.port}"],
        "pgbouncer": {"autodb_idle_timeout": 1, "server_idle_timeout": 1},
    })
    with b.connect(dbname="crm", autocommit=True) as conn:
        conn.execute("select 1")
    assert wait_for(lambda: re.search(r"dropping database '?crm'?", b.log()), timeout=15)
    # it comes back on demand
    with b.connect(dbname="crm", autocommit=True) as conn:
        assert current_db(conn) == "crm"


def accepted_keepalive(b):
    """Whether the pooler's side of a new client connection has TCP keepalive on (`ss`)."""
    with socket.create_connection(("127.0.0.1", b.port), timeout=10) as s:
        # an SSLRequest answered means the pooler has accepted the connection
        s.sendall(struct.pack("!ii", 8, 80877103))
        assert s.recv(1) in (b"N", b"S")
        me = s.getsockname()[1]
        out = subprocess.run(["ss", "-tnoH", "state", "established",
                              f"( sport = :{b.port} and dport = :{me} )"],
                             capture_output=True, text=True, check=True).stdout
        assert out.strip(), "the pooler's socket is not listed"
        return "keepalive" in out


def keepalive_seconds(ss_line):
    """The time left on a socket's keepalive timer as `ss -o` shows it ("1h59min", "7sec",
    "6.860ms" for 6.86 s, "200ms"), in seconds."""
    m = re.search(r"timer:\(keepalive,(?:(\d+)h)?(?:(\d+)min)?(?:(\d+)sec)?(?:(\d+)\.)?"
                  r"(?:(\d+)ms)?,", ss_line)
    assert m, ss_line
    h, mins, secs, secs_dot, ms = (int(g) if g else 0 for g in m.groups())
    return h * 3600 + mins * 60 + secs + secs_dot + ms / 1000


def ss_entries(args):
    """`ss -H` with args: one string per socket (the lines ss continues an entry on joined)."""
    out = subprocess.run(["ss", "-H"] + args, capture_output=True, text=True, check=True).stdout
    entries = []
    for line in out.splitlines():
        if line[:1].isspace() and entries:
            entries[-1] += " " + line.strip()
        elif line.strip():
            entries.append(line.strip())
    return entries


def test_tcp_keepalive_timings_and_buffer_size_apply_to_clients_and_servers(bouncer_factory, pg):
    b = bouncer_factory(config={"pgbouncer": {
        "tcp_keepidle": 7, "tcp_keepintvl": 3, "tcp_keepcnt": 4, "tcp_socket_buffer": 40000,
        "tcp_user_timeout": 5000}})
    def sockets(local):
        client = ss_entries(["-tnom", "state", "established",
                             f"( sport = :{b.port} and dport = :{local} )"])
        server = [e for e in ss_entries(["-tnomp", "state", "established",
                                         f"( dport = :{pg.port} )"])
                  if f"pid={b.proc.pid}," in e]
        return " ".join(client), " ".join(server)

    with b.connect(autocommit=True) as conn:
        conn.execute("select 1")
        with socket.socket(fileno=os.dup(conn.info.pgconn.socket)) as mine:
            local = mine.getsockname()[1]
        # right after an answer the timer is the retransmission one until the ACK is in
        assert wait_for(lambda: all("keepalive" in out for out in sockets(local)),
                        timeout=10), sockets(local)
        client, server = sockets(local)
    for side, out in (("client", client), ("server", server)):
        assert out.strip(), f"the pooler's {side} socket is not listed"
        # the system's default is 7200 s before the first probe
        assert 0 < keepalive_seconds(out) <= 7, (side, out)
        # the kernel doubles what SO_SNDBUF/SO_RCVBUF ask for
        assert "rb80000" in out and "tb80000" in out, (side, out)


def test_tcp_keepalive_follows_the_setting_on_accepted_clients(bouncer):
    assert accepted_keepalive(bouncer)
    with bouncer.connect(dbname="pgbouncer", user="postgres", password="postgres",
                         autocommit=True) as a:
        a.execute("SET tcp_keepalive = 0")
        assert not accepted_keepalive(bouncer)
        a.execute("SET tcp_keepalive = 1")
        assert accepted_keepalive(bouncer)
        # clients still get answers (TCP_NODELAY comes the same way)
        with bouncer.connect(autocommit=True) as c:
            assert c.execute("select 1").fetchone() == (1,)
