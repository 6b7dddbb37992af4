"""Signals as pgbouncer 1.23+ takes them: SIGTERM waits for the clients, SIGINT for the servers
(either again: exit at once), SIGQUIT exits at once, SIGUSR1 pauses, SIGUSR2 resumes, SIGHUP
reloads. Debian's pgbouncer 1.18 exits at once on SIGTERM, so those tests are skipped there.
"""

import os
import signal
import socket
import threading
import time

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


def wait_logged(b, line, path=None, timeout=10.0):
    """Waits until the pooler's log (or the file at path) holds line."""
    deadline = time.monotonic() + timeout
    while line not in (open(path).read() if path else b.log()):
        assert time.monotonic() < deadline, f"not logged within {timeout} s: {line!r}"
        time.sleep(0.02)


def shutting_down(b, sig):
    """Sends sig (SIGTERM or SIGINT) and returns once the pooler said it shuts down."""
    b.proc.send_signal(sig)
    wait_logged(b, f"got {sig.name}, shutting down")


def exits(b, sig=None, timeout=5.0, why="did not exit at once"):
    """Sends sig (if any) and asserts that the pooler exits within timeout; the teardown then
    takes it as stopped by the test."""
    if sig is not None:
        b.proc.send_signal(sig)
    assert exited(b, timeout), why
    b.stopped_by_us = True


@needs_125
@pytest.mark.timeout(60)
def test_sigterm_waits_for_connected_clients(bouncer):
    with bouncer.connect(autocommit=True) as c:
        shutting_down(bouncer, signal.SIGTERM)
        time.sleep(0.5)  # the time it would need to go down anyway
        assert bouncer.proc.poll() is None
        # the connected client is still served, new ones are turned away
        assert c.execute("select 'still served'").fetchone() == ("still served",)
        assert not accepts(bouncer)
    exits(bouncer, timeout=10, why="did not exit after the last client left")
    assert bouncer.proc.returncode == 0


@needs_125
@pytest.mark.timeout(60)
@pytest.mark.parametrize("first, second", [
    (signal.SIGTERM, signal.SIGTERM),
    (signal.SIGINT, signal.SIGINT),
    (signal.SIGTERM, signal.SIGINT),
], ids=["sigterm_sigterm", "sigint_sigint", "sigterm_sigint"])
def test_second_shutdown_signal_exits_at_once(bouncer, first, second):
    """A shutdown that waits (for the client, or its server in session mode) is cut short by
    a second SIGTERM or SIGINT."""
    with bouncer.connect(autocommit=True) as c:
        c.execute("select 1")  # session mode: its server stays busy
        shutting_down(bouncer, first)
        assert bouncer.proc.poll() is None
        exits(bouncer, second)
    assert bouncer.proc.returncode == 0
    assert f"got {second.name} while shutting down, fast exit" in bouncer.log()


@needs_125
@pytest.mark.timeout(60)
def test_sigint_waits_for_servers(bouncer):
    # session mode: the client's server is busy until the client leaves
    with bouncer.connect(autocommit=True) as c:
        c.execute("select 1")
        shutting_down(bouncer, signal.SIGINT)
        time.sleep(0.5)  # the time it would need to go down anyway
        assert bouncer.proc.poll() is None
        assert not accepts(bouncer)
    exits(bouncer, timeout=10, why="did not exit once the servers were released")


@needs_125
@pytest.mark.timeout(60)
def test_sigquit_exits_at_once(bouncer):
    with bouncer.connect(autocommit=True) as c:
        c.execute("select 1")
        exits(bouncer, signal.SIGQUIT)
        assert bouncer.proc.returncode == 0


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
def test_sigterm_while_suspended_exits_at_once(bouncer):
    with bouncer.connect(autocommit=True), admin(bouncer) as a:
        a.execute("SUSPEND")
        # a suspended pooler cannot wait for its clients to finish: it goes down now
        exits(bouncer, signal.SIGTERM, why="still running after SIGTERM while suspended")
        assert "suspend was in progress, going down immediately" in bouncer.log()


@needs_125
@pytest.mark.timeout(60)
def test_sigusr2_does_not_undo_a_shutdown(bouncer):
    with bouncer.connect(autocommit=True) as c:
        shutting_down(bouncer, signal.SIGTERM)
        bouncer.proc.send_signal(signal.SIGUSR2)
        wait_logged(bouncer, "got SIGUSR2 while shutting down, ignoring")
        assert not accepts(bouncer), "SIGUSR2 reopened a pooler that is shutting down"
        assert c.execute("select 'still served'").fetchone() == ("still served",)
    exits(bouncer, timeout=10, why="did not exit after the last client left")


@pytest.mark.timeout(60)
def test_sighup_reopens_a_renamed_logfile(bouncer):
    # what logrotate does (etc/syncbouncer.logrotate): rename, then SIGHUP
    log = bouncer.logfile
    with bouncer.connect() as c:
        c.execute("select 1")
    os.rename(log, log + ".1")
    bouncer.proc.send_signal(signal.SIGHUP)
    # the line that says so still goes to the renamed file
    wait_logged(bouncer, "got SIGHUP", path=log + ".1")
    # lines from now on go to a new file of the old name, and only there
    with bouncer.connect(user="scramuser", password="scrampass") as c:
        c.execute("select 1")
    deadline = time.monotonic() + 10
    while "scramuser" not in (open(log).read() if os.path.exists(log) else ""):
        assert time.monotonic() < deadline, "nothing logged to a new logfile after SIGHUP"
        time.sleep(0.05)
    assert "scramuser" not in open(log + ".1").read(), "lines still went to the renamed file"
