"""Signals as pgbouncer 1.23+ takes them: SIGTERM waits for the clients, SIGINT for the servers
(either again: exit at once), SIGQUIT exits at once, SIGUSR1 pauses, SIGUSR2 resumes, SIGHUP
reloads. Debian's pgbouncer 1.18 exits at once on SIGTERM, so those tests are skipped there.
"""

import os
import signal
import socket
import threading
import time

import psycopg
import pytest

from conftest import IS_PGBOUNCER

needs_125 = pytest.mark.skipif(IS_PGBOUNCER, reason="pgbouncer 1.23+ signals; Debian has 1.18")


def admin(b):
    return b.connect(dbname="pgbouncer", user="postgres", password="postgres", autocommit=True,
                     prepare_threshold=None)


def accepts(b):
    try:
        socket.create_connection((b.host, b.port), timeout=1).close()
        return True
    except OSError:
        return False


def exited(b, timeout=10.0):
    try:
        b.proc.wait(timeout=timeout)
        return True
    except Exception:
        return False


@needs_125
@pytest.mark.timeout(60)
def test_sigterm_waits_for_connected_clients(bouncer):
    c = bouncer.connect(autocommit=True)
    try:
        bouncer.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert bouncer.proc.poll() is None
        # the connected client is still served, new ones are turned away
        assert c.execute("select 'still served'").fetchone() == ("still served",)
        assert not accepts(bouncer)
    finally:
        c.close()
    assert exited(bouncer), "did not exit after the last client left"
    assert bouncer.proc.returncode == 0
    bouncer.stopped_by_us = True


@needs_125
@pytest.mark.timeout(60)
def test_second_sigterm_exits_at_once(bouncer):
    c = bouncer.connect(autocommit=True)
    try:
        bouncer.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert bouncer.proc.poll() is None
        bouncer.proc.send_signal(signal.SIGTERM)
        assert exited(bouncer, 5)
    finally:
        c.close()
    bouncer.stopped_by_us = True


@needs_125
@pytest.mark.timeout(60)
def test_sigint_waits_for_servers(bouncer):
    # session mode: the client's server is busy until the client leaves
    c = bouncer.connect(autocommit=True)
    try:
        c.execute("select 1")
        bouncer.proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        assert bouncer.proc.poll() is None
        assert not accepts(bouncer)
    finally:
        c.close()
    assert exited(bouncer), "did not exit once the servers were released"
    bouncer.stopped_by_us = True


@needs_125
@pytest.mark.timeout(60)
def test_sigquit_exits_at_once(bouncer):
    c = bouncer.connect(autocommit=True)
    try:
        c.execute("select 1")
        bouncer.proc.send_signal(signal.SIGQUIT)
        assert exited(bouncer, 5)
        assert bouncer.proc.returncode == 0
    finally:
        c.close()
    bouncer.stopped_by_us = True


@pytest.mark.timeout(60)
def test_sigusr1_pauses_and_sigusr2_resumes(bouncer_factory):
    b = bouncer_factory(config={"pgbouncer": {"pool_mode": "transaction"}})
    with b.connect(autocommit=True) as c:
        c.execute("select 1")
        b.proc.send_signal(signal.SIGUSR1)
        with admin(b) as a:
            if not IS_PGBOUNCER:
                deadline = time.monotonic() + 5
                while dict(a.execute("SHOW STATE").fetchall())["paused"] != "yes":
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
            # a query while paused waits ...
            result = []
            t = threading.Thread(target=lambda: result.append(
                c.execute("select 'after resume'").fetchone()))
            t.start()
            t.join(1.0)
            assert t.is_alive() and not result
            # ... until SIGUSR2
            b.proc.send_signal(signal.SIGUSR2)
            t.join(10)
            assert result == [("after resume",)]
            if not IS_PGBOUNCER:
                assert dict(a.execute("SHOW STATE").fetchall())["active"] == "yes"


@pytest.mark.timeout(60)
def test_sighup_reloads_the_config(bouncer):
    with open(bouncer.ini) as f:
        text = f.read()
    with open(bouncer.ini, "w") as f:
        f.write(text.replace("default_pool_size = 20", "default_pool_size = 13"))
    bouncer.proc.send_signal(signal.SIGHUP)
    with admin(bouncer) as a:
        deadline = time.monotonic() + 10
        while True:
            cfg = dict((r[0], r[1]) for r in a.execute("SHOW CONFIG").fetchall())
            if cfg["default_pool_size"] == "13":
                break
            assert time.monotonic() < deadline
            time.sleep(0.05)
    with bouncer.connect() as c:
        assert c.execute("select 1").fetchone() == (1,)


@needs_125
@pytest.mark.timeout(60)
def test_sigint_during_a_sigterm_shutdown_exits_at_once(bouncer):
    c = bouncer.connect(autocommit=True)
    try:
        bouncer.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert bouncer.proc.poll() is None
        bouncer.proc.send_signal(signal.SIGINT)
        assert exited(bouncer, 5)
        assert bouncer.proc.returncode == 0
    finally:
        c.close()
    bouncer.stopped_by_us = True
    assert "got SIGINT while shutting down, fast exit" in bouncer.log()


@needs_125
@pytest.mark.timeout(60)
def test_second_sigint_exits_at_once(bouncer):
    c = bouncer.connect(autocommit=True)
    try:
        c.execute("select 1")  # session mode: its server stays busy
        bouncer.proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        assert bouncer.proc.poll() is None
        bouncer.proc.send_signal(signal.SIGINT)
        assert exited(bouncer, 5)
    finally:
        c.close()
    bouncer.stopped_by_us = True


@needs_125
@pytest.mark.timeout(60)
def test_sigterm_while_suspended_exits_at_once(bouncer):
    c = bouncer.connect(autocommit=True)
    a = admin(bouncer)
    try:
        a.execute("SUSPEND")
        bouncer.proc.send_signal(signal.SIGTERM)
        # a suspended pooler cannot wait for its clients to finish: it goes down now
        assert exited(bouncer, 5), "still running after SIGTERM while suspended"
        assert "suspend was in progress, going down immediately" in bouncer.log()
    finally:
        c.close()
        a.close()
    bouncer.stopped_by_us = True


@needs_125
@pytest.mark.timeout(60)
def test_sigusr2_does_not_undo_a_shutdown(bouncer):
    c = bouncer.connect(autocommit=True)
    try:
        bouncer.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        bouncer.proc.send_signal(signal.SIGUSR2)
        time.sleep(0.3)
        assert not accepts(bouncer), "SIGUSR2 reopened a pooler that is shutting down"
        assert c.execute("select 'still served'").fetchone() == ("still served",)
        assert "got SIGUSR2 while shutting down, ignoring" in bouncer.log()
    finally:
        c.close()
    assert exited(bouncer)
    bouncer.stopped_by_us = True


@pytest.mark.timeout(60)
def test_sighup_reopens_a_renamed_logfile(bouncer):
    # what logrotate does (etc/syncbouncer.logrotate): rename, then SIGHUP
    log = bouncer.logfile
    with bouncer.connect() as c:
        c.execute("select 1")
    os.rename(log, log + ".1")
    bouncer.proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    rotated = open(log + ".1").read()
    assert "SIGHUP" in rotated
    # lines from now on go to a new file of the old name
    with bouncer.connect(user="scramuser", password="scrampass") as c:
        c.execute("select 1")
    deadline = time.monotonic() + 10
    while "scramuser" not in (open(log).read() if os.path.exists(log) else ""):
        assert time.monotonic() < deadline, "nothing logged to a new logfile after SIGHUP"
        time.sleep(0.05)
    assert open(log + ".1").read() == rotated, "lines still went to the renamed file"
