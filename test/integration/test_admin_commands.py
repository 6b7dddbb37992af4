"""Admin console commands with pgbouncer's semantics: PAUSE/RESUME (all and one database),
DISABLE/ENABLE, KILL, KILL_CLIENT, RECONNECT and WAIT_CLOSE, SUSPEND, SHUTDOWN and its waiting
modes."""

import threading
import time

import psycopg
import pytest

from conftest import IS_PGBOUNCER
from test_signals import accepts

needs_125 = pytest.mark.skipif(IS_PGBOUNCER, reason="pgbouncer 1.25 behaviour; Debian has 1.18")


def admin(b):
    return b.connect(dbname="pgbouncer", user="postgres", password="postgres", autocommit=True,
                     prepare_threshold=None)


def rows(conn, sql):
    cur = conn.execute(sql)
    names = [d.name for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


class Background:
    """Runs fn in a thread; .done() / .result / .error."""

    def __init__(self, fn):
        self.result = None
        self.error = None
        self._t = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._t.start()

    def _run(self, fn):
        try:
            self.result = fn()
        except Exception as e:  # noqa: BLE001 - reported to the test
            self.error = e

    def join(self, timeout):
        self._t.join(timeout)
        return not self._t.is_alive()


def backend_pid(conn):
    return conn.execute("select pg_backend_pid()").fetchone()[0]


@pytest.mark.timeout(60)
def test_pause_waits_for_a_running_transaction_then_holds_new_queries(bouncer_factory):
    b = bouncer_factory(config={"pgbouncer": {"pool_mode": "transaction"}})
    with b.connect() as tx, b.connect(autocommit=True) as other, admin(b) as a:
        tx.execute("select 1")  # a transaction is open on a server
        other.execute("select 1")
        pause = Background(lambda: admin(b).execute("PAUSE").statusmessage)
        assert not pause.join(1.0), "PAUSE returned while a transaction was running"
        tx.commit()
        assert pause.join(10), "PAUSE did not return after the transaction ended"
        assert pause.error is None and pause.result == "PAUSE"
        # paused: no server connections left, a new query waits
        if not IS_PGBOUNCER:
            assert dict(a.execute("SHOW STATE").fetchall())["paused"] == "yes"
        assert [s for s in rows(a, "SHOW SERVERS") if s["database"] == "app"] == []
        q = Background(lambda: other.execute("select 'resumed'").fetchone())
        assert not q.join(1.0)
        a.execute("RESUME")
        assert q.join(10) and q.result == ("resumed",)


@pytest.mark.timeout(60)
def test_pause_one_database_leaves_the_others_running(bouncer_factory):
    b = bouncer_factory(config={"pgbouncer": {"pool_mode": "transaction"}})
    with b.connect(autocommit=True) as app, b.connect(dbname="crm", autocommit=True) as crm, \
            admin(b) as a:
        app.execute("select 1")
        assert a.execute("PAUSE app").statusmessage == "PAUSE"
        dbs = {r["name"]: r for r in rows(a, "SHOW DATABASES")}
        assert dbs["app"]["paused"] == 1 and dbs["crm"]["paused"] == 0
        assert crm.execute("select 'crm runs'").fetchone() == ("crm runs",)
        q = Background(lambda: app.execute("select 'app back'").fetchone())
        assert not q.join(1.0)
        a.execute("RESUME app")
        assert q.join(10) and q.result == ("app back",)


@pytest.mark.timeout(60)
def test_disable_refuses_new_clients_until_enable(bouncer):
    with admin(bouncer) as a, bouncer.connect(autocommit=True) as connected:
        assert a.execute("DISABLE app").statusmessage == "DISABLE"
        # a connected client goes on
        assert connected.execute("select 1").fetchone() == (1,)
        with pytest.raises(psycopg.OperationalError) as ei:
            bouncer.connect()
        assert 'database "app" is disabled' in str(ei.value)
        assert rows(a, "SHOW DATABASES")[0]["disabled"] == 1
        assert a.execute("ENABLE app").statusmessage == "ENABLE"
    with bouncer.connect() as c:
        assert c.execute("select 2").fetchone() == (2,)


@pytest.mark.timeout(60)
def test_kill_drops_clients_and_servers_and_pauses_the_database(bouncer):
    victim = bouncer.connect(autocommit=True)
    with admin(bouncer) as a:
        victim.execute("select 1")
        assert a.execute("KILL app").statusmessage == "KILL"
        with pytest.raises(psycopg.OperationalError):
            victim.execute("select 1")
        assert [s for s in rows(a, "SHOW SERVERS") if s["database"] == "app"] == []
        if IS_PGBOUNCER:
            a.execute("RESUME app")
            return  # 1.18 leaves such a login hanging past RESUME
        # new clients of a killed database wait for RESUME
        late = Background(lambda: bouncer.connect(autocommit=True).execute(
            "select 'late'").fetchone())
        assert not late.join(1.0)
        a.execute("RESUME app")
        assert late.join(10) and late.result == ("late",), late.error
    victim.close()


@needs_125
@pytest.mark.timeout(60)
def test_kill_client_by_id(bouncer):
    victim = bouncer.connect(autocommit=True, application_name="victim")
    bystander = bouncer.connect(autocommit=True, application_name="bystander")
    with admin(bouncer) as a:
        clients = {r["application_name"]: r for r in rows(a, "SHOW CLIENTS")}
        assert a.execute(f"KILL_CLIENT {clients['victim']['id']}").statusmessage == \
            "KILL_CLIENT"
        with pytest.raises(psycopg.OperationalError) as ei:
            victim.execute("select 1")
        assert "admin forced disconnect" in str(ei.value)
        assert bystander.execute("select 'fine'").fetchone() == ("fine",)
        names = {r["application_name"] for r in rows(a, "SHOW CLIENTS")}
        assert "victim" not in names and "bystander" in names
    victim.close()
    bystander.close()


@pytest.mark.timeout(60)
def test_reconnect_replaces_servers_once_released(bouncer_factory):
    b = bouncer_factory(config={"pgbouncer": {"pool_mode": "transaction",
                                              "default_pool_size": 1}})
    with b.connect(autocommit=True) as c, admin(b) as a:
        before = backend_pid(c)
        assert backend_pid(c) == before  # the same server while nothing changes
        assert a.execute("RECONNECT app").statusmessage == "RECONNECT"
        assert a.execute("WAIT_CLOSE app").statusmessage == "WAIT_CLOSE"
        after = backend_pid(c)
        assert after != before


@pytest.mark.timeout(60)
def test_reconnect_drops_idle_servers_at_once(bouncer):
    """A server already idle when RECONNECT comes is released: it is closed then, never handed
    to the next client (a changed password or host would otherwise not reach it)."""
    with admin(bouncer) as a:
        with bouncer.connect(autocommit=True) as c:
            before = backend_pid(c)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(
                p["database"] == "app" and p["sv_idle"] == 1 for p in rows(a, "SHOW POOLS")):
            time.sleep(0.02)
        assert a.execute("RECONNECT app").statusmessage == "RECONNECT"
        with bouncer.connect(autocommit=True) as c:
            assert backend_pid(c) != before


@pytest.mark.timeout(60)
def test_wait_close_waits_for_the_busy_server(bouncer_factory):
    b = bouncer_factory(config={"pgbouncer": {"pool_mode": "transaction"}})
    with b.connect() as tx, admin(b) as a:
        tx.execute("select 1")  # holds its server in a transaction
        a.execute("RECONNECT")
        wc = Background(lambda: admin(b).execute("WAIT_CLOSE").statusmessage)
        assert not wc.join(1.0), "WAIT_CLOSE returned while the old server was busy"
        tx.commit()
        assert wc.join(10) and wc.result == "WAIT_CLOSE", wc.error


@pytest.mark.timeout(60)
def test_suspend_and_resume(bouncer):
    with bouncer.connect(autocommit=True) as c, admin(bouncer) as a:
        c.execute("select 1")
        assert a.execute("SUSPEND").statusmessage == "SUSPEND"
        if not IS_PGBOUNCER:
            assert dict(a.execute("SHOW STATE").fetchall())["suspended"] == "yes"
        with pytest.raises(psycopg.Error) as ei:
            a.execute("PAUSE")
        assert "already suspended/paused" in str(ei.value)
        q = Background(lambda: c.execute("select 'after'").fetchone())
        assert not q.join(1.0), "a query went through while suspended"
        a.execute("RESUME")
        assert q.join(10) and q.result == ("after",)


@needs_125
@pytest.mark.timeout(60)
def test_suspend_is_undone_when_its_admin_leaves(bouncer):
    with bouncer.connect(autocommit=True) as c:
        a = admin(bouncer)
        a.execute("SUSPEND")
        q = Background(lambda: c.execute("select 'back'").fetchone())
        assert not q.join(0.5)
        a.close()
        assert q.join(10) and q.result == ("back",)


@needs_125
@pytest.mark.timeout(60)
def test_shutdown_wait_for_clients(bouncer):
    c = bouncer.connect(autocommit=True)
    with admin(bouncer) as a:
        assert a.execute("SHUTDOWN WAIT_FOR_CLIENTS").statusmessage == "SHUTDOWN"
    time.sleep(0.3)
    assert bouncer.proc.poll() is None
    assert not accepts(bouncer)
    assert c.execute("select 'served'").fetchone() == ("served",)
    c.close()
    bouncer.proc.wait(10)
    assert bouncer.proc.returncode == 0
    bouncer.stopped_by_us = True


@needs_125
@pytest.mark.timeout(60)
def test_shutdown_wait_for_servers(bouncer_factory):
    b = bouncer_factory(config={"pgbouncer": {"pool_mode": "transaction"}})
    tx = b.connect()
    tx.execute("select 1")
    with admin(b) as a:
        assert a.execute("SHUTDOWN WAIT_FOR_SERVERS").statusmessage == "SHUTDOWN"
    time.sleep(0.3)
    assert b.proc.poll() is None
    tx.commit()
    b.proc.wait(10)
    assert b.proc.returncode == 0
    tx.close()
    b.stopped_by_us = True


@pytest.mark.timeout(60)
def test_shutdown_is_immediate(bouncer):
    c = bouncer.connect(autocommit=True)
    c.execute("select 1")
    a = admin(bouncer)
    with pytest.raises(psycopg.OperationalError):
        a.execute("SHUTDOWN")
    bouncer.proc.wait(10)
    c.close()
    a.close()
    bouncer.stopped_by_us = True


@needs_125
@pytest.mark.timeout(60)
def test_cancel_of_a_waiting_pause_resumes(bouncer_factory):
    b = bouncer_factory(config={"pgbouncer": {"pool_mode": "transaction"}})
    with b.connect() as tx, admin(b) as watcher:
        tx.execute("select 1")  # PAUSE has to wait for this transaction
        a = admin(b)
        pause = Background(lambda: a.execute("PAUSE"))
        assert not pause.join(0.5)
        a.cancel()
        assert pause.join(10)
        assert isinstance(pause.error, psycopg.errors.QueryCanceled)
        assert dict(watcher.execute("SHOW STATE").fetchall())["active"] == "yes"
        # the console session goes on
        assert a.execute("SHOW VERSION").fetchone()
        a.close()
        tx.commit()
        assert tx.execute("select 'running'").fetchone() == ("running",)
