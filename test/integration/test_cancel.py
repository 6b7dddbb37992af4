"""Cancel requests: an application's cancel stops its own query quickly and never another
client's."""

import socket
import struct
import threading
import time

import psycopg
import pytest

from conftest import IS_PGBOUNCER, free_port


def cancel_after(conn, delay):
    t = threading.Timer(delay, conn.cancel)
    t.start()
    return t


def cancel_when_running(pg, conn, marker):
    """Cancels conn's statement once PostgreSQL shows it running (a cancel that came before
    the statement would find nothing to cancel); gives up after 50 s."""
    def run():
        deadline = time.monotonic() + 50
        while time.monotonic() < deadline:
            if pg.sql("select 1 from pg_stat_activity where state = 'active'"
                      f" and query like '%{marker}%' and pid <> pg_backend_pid()"):
                conn.cancel()
                return
            time.sleep(0.05)

    t = threading.Thread(target=run)
    t.start()
    return t


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_cancel_of_a_long_query_ends_it(bouncer_factory, pg, mode):
    b = bouncer_factory(config={"pgbouncer": {"pool_mode": mode}})
    with b.connect(autocommit=True) as conn:
        conn.execute("select 1")
        t = cancel_when_running(pg, conn, "sb_cancel_marker")
        # ten minutes of sleep: only the cancel ends it within the test's time
        with pytest.raises(psycopg.errors.QueryCanceled, match="user request"):
            conn.execute("select pg_sleep(600) /* sb_cancel_marker */")
        t.join()
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


class CancelDelayingProxy:
    """A TCP proxy in front of PostgreSQL that passes sessions through untouched but holds
    every CancelRequest for `delay` seconds before passing it on (None: never)."""

    def __init__(self, target_port, delay):
        self.target = ("127.0.0.1", target_port)
        self.delay = delay
        self.cancels = 0
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.port = free_port()
        self.ls.bind(("127.0.0.1", self.port))
        self.ls.listen(64)
        self.stop = threading.Event()
        self.socks = []
        threading.Thread(target=self.accept_loop, daemon=True).start()

    def accept_loop(self):
        self.ls.settimeout(0.2)
        while not self.stop.is_set():
            try:
                s, _ = self.ls.accept()
            except OSError:
                continue
            self.socks.append(s)
            threading.Thread(target=self.serve, args=(s,), daemon=True).start()

    def serve(self, s):
        try:
            first = s.recv(8, socket.MSG_WAITALL)
            up = socket.create_connection(self.target)
            self.socks.append(up)
            if len(first) == 8 and struct.unpack("!II", first)[1] == 80877102:
                self.cancels += 1
                rest = s.recv(8, socket.MSG_WAITALL)
                if self.delay is None:
                    self.stop.wait()
                    return
                time.sleep(self.delay)
                up.sendall(first + rest)
                up.recv(1)  # PostgreSQL closes it once the cancel is processed
                s.close()
                return
            up.sendall(first)
            threading.Thread(target=self.pump, args=(up, s), daemon=True).start()
            self.pump(s, up)
        except OSError:
            pass

    @staticmethod
    def pump(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for x in (src, dst):
                try:
                    x.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.stop.set()
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass
        self.ls.close()


@pytest.fixture
def proxy_factory(pg):
    made = []

    def make(delay):
        p = CancelDelayingProxy(pg.port, delay)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def late_cancel_setup(bouncer_factory, proxy, **extra):
    cfg = {"pool_mode": "transaction", "default_pool_size": 1}
    cfg.update(extra)
    return bouncer_factory(config={
        "databases": {"app": f"host=127.0.0.1 port={proxy.port} dbname=app"},
        "pgbouncer": cfg})


def test_late_cancel_never_hits_the_next_clients_query(bouncer_factory, proxy_factory):
    proxy = proxy_factory(delay=1.5)
    b = late_cancel_setup(bouncer_factory, proxy)
    with b.connect(autocommit=True) as a, b.connect(autocommit=True) as c:
        a.execute("select 1")
        threading.Timer(0.2, a.cancel).start()
        # the cancel is still on its way when this ends by itself
        a.execute("select pg_sleep(0.6)")
        # c gets the same (only) backend, but only after the cancel reached PostgreSQL
        start = time.monotonic()
        # (long enough to be running when the cancel lands, were it handed on at once)
        assert c.execute("select pg_sleep(1.5), 'not cancelled'").fetchone()[1] == \
            "not cancelled"
        assert time.monotonic() - start >= 1.5
    assert proxy.cancels == 1


@pytest.mark.skipif(IS_PGBOUNCER, reason="cancel_wait_timeout is newer than pgbouncer 1.18")
def test_cancel_wait_timeout_gives_up_on_an_unanswered_cancel(bouncer_factory, proxy_factory):
    proxy = proxy_factory(delay=None)  # the cancel never arrives
    b = late_cancel_setup(bouncer_factory, proxy, cancel_wait_timeout=1)
    with b.connect(autocommit=True) as a, b.connect(autocommit=True) as c:
        a.execute("select 1")
        threading.Timer(0.1, a.cancel).start()
        a.execute("select pg_sleep(0.3)")
        assert c.execute("select 'served'").fetchone() == ("served",)
    # held back until cancel_wait_timeout gave up on the cancel, then served
    assert "cancel request not answered in time" in b.log()
