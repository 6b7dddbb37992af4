"""Timeouts, each as an application meets it: what error it gets and (loosely) when, and what
becomes of the backends. The bounds here are generous: the settings promise enforcement to
within a second, a loaded test machine gets more."""

import socket
import threading
import time

import psycopg
import pytest

from conftest import IS_PGBOUNCER, free_port


def backend_alive(pg, pid):
    return bool(pg.sql(f"select 1 from pg_stat_activity where pid = {pid}"))


def wait_until(fn, timeout=10.0, step=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():
            return True
        time.sleep(step)
    return fn()


def wait_logged(b, line, timeout=10.0):
    """Waits until the pooler logged line (the timeout hit), instead of sleeping past it."""
    assert wait_until(lambda: line in b.log(), timeout, step=0.02), \
        f"not logged within {timeout} s: {line!r}\n" + b.log()[-3000:]


def test_query_timeout_ends_a_long_query(bouncer_factory, pg):
    b = bouncer_factory(config={"pgbouncer": {"query_timeout": 1}})
    with b.connect(autocommit=True) as conn:
        pid = conn.execute("select pg_backend_pid()").fetchone()[0]
        # the pooler's error, not the end of the sleep, is what says query_timeout worked
        with pytest.raises(psycopg.OperationalError, match="query timeout"):
            conn.execute("select pg_sleep(600)")
    # the backend that ran it is gone, not left sleeping
    assert wait_until(lambda: not backend_alive(pg, pid))
    with b.connect(autocommit=True) as conn:
        assert conn.execute("select 'after'").fetchone() == ("after",)


def test_query_wait_timeout_ends_a_client_that_waits_for_a_server(bouncer_factory):
    b = bouncer_factory(config={"pgbouncer": {"pool_mode": "transaction", "default_pool_size": 1,
                                              "query_wait_timeout": 1}})
    with b.connect() as hog:
        hog.execute("select 1")
        with b.connect(autocommit=True) as conn:
            start = time.monotonic()
            with pytest.raises(psycopg.OperationalError, match="query_wait_timeout"):
                conn.execute("select 1")
            # not before its time (a slow machine only makes this longer)
            assert time.monotonic() - start > 0.5
        hog.rollback()
        assert hog.execute("select 2").fetchone() == (2,)


def test_idle_transaction_timeout_closes_an_abandoned_transaction(bouncer_factory, pg):
    b = bouncer_factory(config={"pgbouncer": {"pool_mode": "transaction",
                                              "idle_transaction_timeout": 1}})
    with b.connect() as conn:
        pid = conn.execute("select pg_backend_pid()").fetchone()[0]
        wait_logged(b, "closing because: idle transaction timeout")
        with pytest.raises(psycopg.OperationalError):
            conn.execute("select 1")
    assert wait_until(lambda: not backend_alive(pg, pid))
    # an idle client outside a transaction is not touched
    with b.connect(autocommit=True) as conn:
        conn.execute("select 1")
        time.sleep(2.5)
        assert conn.execute("select 2").fetchone() == (2,)


def test_idle_transaction_timeout_message(bouncer_factory):
    import pgwire

    b = bouncer_factory(config={"pgbouncer": {"idle_transaction_timeout": 1}})
    conn = b.wire()
    assert conn.startup(user="app", database="app", password="secret") is None
    conn.query("begin")
    conn.read_until_ready()
    kind, body = conn.read_msg()  # sent by the pooler, unasked, once the timeout hits
    assert kind == "E"
    assert "idle transaction timeout" in pgwire.parse_error_fields(body)["M"]
    conn.close()


def test_client_idle_timeout_disconnects_an_idle_client(bouncer_factory):
    b = bouncer_factory(config={"pgbouncer": {"pool_mode": "transaction",
                                              "client_idle_timeout": 1}})
    with b.connect(autocommit=True) as conn:
        conn.execute("select 1")
        wait_logged(b, "closing because: client_idle_timeout")
        with pytest.raises(psycopg.OperationalError):
            conn.execute("select 1")
    # a busy client is not idle
    with b.connect(autocommit=True) as conn:
        for _ in range(8):
            conn.execute("select 1")
            time.sleep(0.3)


def test_client_login_timeout_closes_a_silent_connection(bouncer_factory):
    b = bouncer_factory(config={"pgbouncer": {"client_login_timeout": 1}})
    # the socket's timeout only guards against a hang: the pooler, not it, ends the wait
    s = socket.create_connection((b.host, b.port), timeout=45)
    data = s.recv(1024)  # nothing sent: the pooler gives up on us
    s.close()
    assert data == b"" or data[:1] == b"E"
    # a normal login is unaffected
    with b.connect(autocommit=True) as conn:
        time.sleep(1.5)
        assert conn.execute("select 1").fetchone() == (1,)


def silent_server():
    """A TCP port that accepts connections and never says anything."""
    ls = socket.socket()
    port = free_port()
    ls.bind(("127.0.0.1", port))
    ls.listen(16)
    held = []
    stop = threading.Event()

    def loop():
        ls.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(ls.accept()[0])
            except OSError:
                pass

    t = threading.Thread(target=loop, daemon=True)
    t.start()

    def close():
        stop.set()
        t.join()
        for s in held:
            s.close()
        ls.close()

    return port, close


# pgbouncer 1.18 keeps the first client of a pool whose server cannot be reached waiting until
# client_login_timeout; syncbouncer hands it the connection error at once.
@pytest.mark.skipif(IS_PGBOUNCER, reason="pgbouncer 1.18 keeps the client waiting instead")
def test_server_connect_timeout_gives_up_on_a_silent_server(bouncer_factory):
    port, close = silent_server()
    try:
        b = bouncer_factory(config={
            "databases": {"app": f"host=127.0.0.1 port={port} dbname=app"},
            "pgbouncer": {"server_connect_timeout": 1, "query_wait_timeout": 30,
                          "client_login_timeout": 30},
        })
        with pytest.raises(psycopg.OperationalError):
            b.connect(connect_timeout=40)
        # the pooler's timeout ended it (the client's own connect_timeout only guards a hang)
        assert "connect timeout" in b.log()
    finally:
        close()


@pytest.mark.skipif(IS_PGBOUNCER, reason="pgbouncer 1.18 keeps the client waiting instead")
def test_server_login_retry_spaces_out_attempts(bouncer_factory):
    port = free_port()  # nothing listens there: every connect is refused
    b = bouncer_factory(config={
        "databases": {"app": f"host=127.0.0.1 port={port} dbname=app"},
        "pgbouncer": {"server_login_retry": 2, "query_wait_timeout": 30},
    })
    start = time.monotonic()
    for _ in range(3):
        with pytest.raises(psycopg.OperationalError):
            b.connect(connect_timeout=20)
    elapsed = time.monotonic() - start
    # three refusals need at least two waits of server_login_retry in between
    assert elapsed >= 3.5
    # one attempt per client: none in between
    assert b.log().count("closing because: server login failed") == 3


def test_server_idle_timeout_closes_idle_backends(bouncer_factory, pg):
    b = bouncer_factory(config={"pgbouncer": {"pool_mode": "transaction",
                                              "server_idle_timeout": 1}})
    with b.connect(autocommit=True) as conn:
        pid = conn.execute("select pg_backend_pid()").fetchone()[0]
        assert wait_until(lambda: not backend_alive(pg, pid))
        # the client is unaffected: it gets a new backend
        assert conn.execute("select pg_backend_pid()").fetchone()[0] != pid


def test_server_lifetime_replaces_old_backends(bouncer_factory, pg):
    b = bouncer_factory(config={"pgbouncer": {"pool_mode": "transaction",
                                              "server_lifetime": 1}})
    with b.connect(autocommit=True, prepare_threshold=None) as conn:
        first = conn.execute("select pg_backend_pid()").fetchone()[0]
        time.sleep(2.5)
        conn.execute("select 1")  # released after this, past its lifetime
        assert wait_until(lambda: conn.execute("select pg_backend_pid()").fetchone()[0] != first)
    assert wait_until(lambda: not backend_alive(pg, first))


@pytest.mark.parametrize("delay", [0, 30])
def test_server_check_query_runs_after_server_check_delay(bouncer_factory, pg, delay):
    pg.sql("drop sequence if exists sb_check_seq", dbname="app")
    pg.sql("create sequence sb_check_seq; grant usage on sequence sb_check_seq to app",
           dbname="app")
    b = bouncer_factory(config={"pgbouncer": {
        "pool_mode": "transaction", "default_pool_size": 1,
        "server_check_query": "select nextval('sb_check_seq')",
        "server_check_delay": delay}})
    with b.connect(autocommit=True) as conn:
        for _ in range(5):
            conn.execute("select 1")
            time.sleep(0.05)
    used = pg.sql("select last_value, is_called from sb_check_seq", dbname="app")[0]
    checks = used[0] if used[1] else 0
    if delay == 0:
        assert checks >= 4
    else:
        assert checks == 0


@pytest.mark.skipif(IS_PGBOUNCER, reason="transaction_timeout is newer than pgbouncer 1.18")
def test_transaction_timeout_ends_a_long_transaction(bouncer_factory, pg):
    import pgwire

    b = bouncer_factory(config={"pgbouncer": {"pool_mode": "transaction",
                                              "transaction_timeout": 2}})
    conn = b.wire()
    assert conn.startup(user="app", database="app", password="secret") is None
    conn.query("begin")
    conn.read_until_ready()
    closed = False
    # busy, never idle for long: only the transaction's age ends it (the bound on the loop,
    # 30 s of statements, only guards against a hang)
    try:
        for _ in range(150):
            conn.query("select pg_sleep(0.2)")
            conn.read_until_ready()
    except (pgwire.WireError, OSError):
        closed = True
    assert closed
    assert "closing because: transaction timeout" in b.log()
    conn.close()


def test_default_server_check_query_is_harmless(bouncer_factory):
    # the default check query ("<empty>": an empty query) runs before reuse after the delay
    b = bouncer_factory(config={"pgbouncer": {"pool_mode": "transaction", "default_pool_size": 1,
                                              "server_check_delay": 0}})
    with b.connect(autocommit=True) as conn:
        for i in range(5):
            assert conn.execute("select %s::int", (i,)).fetchone() == (i,)
    assert "check query failed" not in b.log()
