"""Cancel requests: an application's cancel stops its own query quickly and never another
client's."""

import socket
import struct
import threading
import time

import psycopg
import pytest


def cancel_after(conn, delay):
    t = threading.Timer(delay, conn.cancel)
    t.start()
    return t


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_cancel_of_a_long_query_returns_quickly(bouncer_factory, mode):
    b = bouncer_factory(config={"pgbouncer": {"pool_mode": mode}})
    with b.connect(autocommit=True) as conn:
        conn.execute("select 1")
        t = cancel_after(conn, 0.3)
        start = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("select pg_sleep(10)")
        elapsed = time.monotonic() - start
        t.join()
        assert elapsed < 1.3  # 0.3 s before the cancel is sent, then under a second
        # the connection is fine afterwards
        assert conn.execute("select 'still here'").fetchone() == ("still here",)


def test_clients_get_the_poolers_own_backend_keys(bouncer_factory):
    b = bouncer_factory(config={"pgbouncer": {"pool_mode": "transaction"}})
    with b.connect(autocommit=True) as a, b.connect(autocommit=True) as c:
        real = a.execute("select pg_backend_pid()").fetchone()[0]
        assert a.info.backend_pid != real
        assert a.info.backend_pid != c.info.backend_pid


def test_cancel_of_an_idle_client_does_not_hit_the_backend_now_serving_another(bouncer_factory):
    b = bouncer_factory(config={"pgbouncer": {"pool_mode": "transaction",
                                              "default_pool_size": 1}})
    with b.connect(autocommit=True) as a, b.connect(autocommit=True) as c:
        pid_a = a.execute("select pg_backend_pid()").fetchone()[0]
        box = {}

        def long_query():
            try:
                box["row"] = c.execute("select pg_backend_pid(), pg_sleep(1.5)").fetchone()
            except Exception as e:  # noqa: BLE001
                box["error"] = e

        t = threading.Thread(target=long_query)
        t.start()
        time.sleep(0.4)
        a.cancel()  # a has no server now; c's query on the same backend must go on
        t.join(10)
        assert "error" not in box, box.get("error")
        assert box["row"][0] == pid_a


def test_cancel_with_an_unknown_key_is_ignored(bouncer_factory):
    b = bouncer_factory()
    with b.connect(autocommit=True) as conn:
        s = socket.create_connection((b.host, b.port))
        s.sendall(struct.pack("!IIII", 16, 80877102, 12345, 67890))
        s.settimeout(5)
        assert s.recv(64) == b""  # closed without an answer
        s.close()
        assert conn.execute("select pg_sleep(0.3), 'ok'").fetchone()[1] == "ok"


def test_many_cancels_leave_the_pool_healthy(bouncer_factory):
    b = bouncer_factory(config={"pgbouncer": {"pool_mode": "transaction",
                                              "default_pool_size": 2}})
    for _ in range(5):
        with b.connect(autocommit=True) as conn:
            t = cancel_after(conn, 0.2)
            with pytest.raises(psycopg.errors.QueryCanceled):
                conn.execute("select pg_sleep(5)")
            t.join()
    with b.connect(autocommit=True) as conn:
        assert conn.execute("select 42").fetchone() == (42,)
