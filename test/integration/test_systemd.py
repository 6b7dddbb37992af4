"""Life under a service manager, without one: the readiness protocol through a NOTIFY_SOCKET the
test listens on, socket activation through LISTEN_FDS/LISTEN_PID with a socket the test made,
and rolling restarts with so_reuseport (a second process on the same port while the first
drains). Debian's pgbouncer 1.18 is built with systemd support, so what it shares runs there too.
"""

import os
import signal
import socket
import subprocess
import time

import psycopg
import pytest

from conftest import IS_PGBOUNCER, die_with_parent, free_port

needs_125 = pytest.mark.skipif(IS_PGBOUNCER, reason="pgbouncer 1.23+ behaviour; Debian has 1.18")
syncbouncer_only = pytest.mark.skipif(IS_PGBOUNCER, reason="syncbouncer's own behaviour")


class NotifySocket:
    """The service manager's end: an AF_UNIX datagram socket; messages as {key: value} dicts."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.messages = []

    def wait_for(self, pred, timeout=15.0, after=0):
        """The first message from the after-th on (read already or not) for which pred(msg)
        holds, or None."""
        for m in self.messages[after:]:
            if pred(m):
                return m
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                break
            m = dict(line.split("=", 1) for line in data.decode().split("\n") if "=" in line)
            self.messages.append(m)
            if pred(m):
                return m
        return None

    def drain(self):
        """Reads every message already sent (the sender is done: it answered, or exited)."""
        self.sock.setblocking(False)
        try:
            while True:
                data = self.sock.recv(4096)
                self.messages.append(dict(line.split("=", 1) for line in data.decode().split("\n")
                                          if "=" in line))
        except BlockingIOError:
            pass
        finally:
            self.sock.setblocking(True)
        return self.messages

    def count(self, key):
        return sum(1 for m in self.messages if m.get(key) == "1")

    def close(self):
        self.sock.close()


@pytest.fixture
def notify(bouncer_factory, monkeypatch):
    """A NOTIFY_SOCKET in the environment the poolers of this test start with."""
    d = bouncer_factory(start=False).workdir
    ns = NotifySocket(os.path.join(d, "notify.sock"))
    monkeypatch.setenv("NOTIFY_SOCKET", ns.path)
    yield ns
    ns.close()


def wait_listening(b, timeout=20.0):
    """For a pooler on a port another one serves too: wait_ready() cannot tell them apart."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert b.proc.poll() is None, f"exited with {b.proc.returncode}:\n{b.output()}"
        if "process up" in b.log():
            return
        time.sleep(0.05)
    pytest.fail(f"not up after {timeout}s:\n{b.output()}")


def admin(b):
    return b.connect(dbname="pgbouncer", user="postgres", password="postgres", autocommit=True,
                     prepare_threshold=None)


def accepts(host, port):
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.mark.timeout(60)
def test_ready_and_reload_are_told_to_the_service_manager(bouncer_factory, notify):
    b = bouncer_factory()
    ready = notify.wait_for(lambda m: m.get("READY") == "1")
    assert ready is not None, f"no READY=1; got {notify.messages}"
    # READY comes once it listens: a client is served at once
    with b.connect() as c:
        assert c.execute("select 1").fetchone() == (1,)
    n = len(notify.messages)
    b.proc.send_signal(signal.SIGHUP)
    reloading = notify.wait_for(lambda m: m.get("RELOADING") == "1", after=n)
    assert reloading is not None, f"no RELOADING=1 on SIGHUP; got {notify.messages}"
    after = next(i for i in range(n, len(notify.messages)) if notify.messages[i] is reloading)
    assert notify.wait_for(lambda m: m.get("READY") == "1", after=after + 1) is not None, \
        f"no READY=1 after the reload; got {notify.messages}"


@needs_125
@pytest.mark.timeout(60)
def test_reloading_carries_the_monotonic_time(bouncer_factory, notify):
    b = bouncer_factory()
    assert notify.wait_for(lambda m: m.get("READY") == "1")
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    with admin(b) as a:
        a.execute("RELOAD")
    m = notify.wait_for(lambda m: m.get("RELOADING") == "1")
    assert m is not None, f"no RELOADING=1 on RELOAD; got {notify.messages}"
    # Type=notify-reload wants the time the reload began, on CLOCK_MONOTONIC
    assert before <= int(m["MONOTONIC_USEC"]) <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


@needs_125
@pytest.mark.timeout(60)
def test_stopping_is_told_when_a_shutdown_begins(bouncer_factory, notify):
    b = bouncer_factory()
    assert notify.wait_for(lambda m: m.get("READY") == "1")
    c = b.connect(autocommit=True)
    try:
        b.proc.send_signal(signal.SIGTERM)
        assert notify.wait_for(lambda m: m.get("STOPPING") == "1") is not None, \
            f"no STOPPING=1 on SIGTERM; got {notify.messages}"
        # still waiting for its client
        assert b.proc.poll() is None
        assert c.execute("select 'served'").fetchone() == ("served",)
    finally:
        c.close()
    b.proc.wait(10)
    b.stopped_by_us = True


@syncbouncer_only
@pytest.mark.timeout(60)
def test_status_shows_client_and_server_counts(bouncer_factory, notify):
    b = bouncer_factory()
    assert notify.wait_for(lambda m: m.get("READY") == "1")
    with b.connect() as c1, b.connect() as c2:
        c1.execute("select 1")
        c2.execute("select 1")
        m = notify.wait_for(lambda m: "2 clients, 2 servers" in m.get("STATUS", ""))
        assert m is not None, f"no STATUS with the counts; got {notify.messages}"
        assert m["STATUS"].startswith("accepting connections")
    with admin(b) as a:
        a.execute("PAUSE")
        assert notify.wait_for(lambda m: m.get("STATUS", "").startswith("paused")), \
            f"no STATUS for the pause; got {notify.messages}"
        a.execute("RESUME")


@syncbouncer_only
@pytest.mark.timeout(60)
def test_a_broken_notify_socket_does_not_stop_the_pooler(bouncer_factory, monkeypatch):
    b = bouncer_factory(start=False)
    monkeypatch.setenv("NOTIFY_SOCKET", os.path.join(b.workdir, "nobody-listens.sock"))
    b.start()
    with b.connect() as c:
        assert c.execute("select 1").fetchone() == (1,)
    assert "cannot notify the service manager" in b.log()


@syncbouncer_only
@pytest.mark.timeout(60)
def test_several_workers_tell_the_service_manager_once(bouncer_factory, notify):
    b = bouncer_factory(config={"pgbouncer": {"workers": 2}})
    assert notify.wait_for(lambda m: m.get("READY") == "1")
    with admin(b) as a:
        a.execute("RELOAD")
    # RELOAD answers once every worker has applied it: what it had to say is sent
    notify.drain()
    assert (notify.count("READY"), notify.count("RELOADING")) == (2, 1), notify.messages
    b.proc.send_signal(signal.SIGTERM)
    b.proc.wait(10)
    b.stopped_by_us = True
    notify.drain()
    assert notify.count("STOPPING") == 1, notify.messages


@syncbouncer_only
@pytest.mark.timeout(60)
@pytest.mark.parametrize("broken", [
    "client_tls_sslmode = require\nclient_tls_key_file = /nonexistent/key.pem\n"
    "client_tls_cert_file = /nonexistent/cert.pem\n",
    "auth_type = hba\nauth_hba_file = /nonexistent/hba.conf\n",
], ids=["tls", "hba"])
def test_a_failed_reload_is_ready_again(bouncer_factory, notify, broken):
    b = bouncer_factory()
    assert notify.wait_for(lambda m: m.get("READY") == "1")
    keys = {line.split("=")[0].strip() for line in broken.splitlines()}
    with open(b.ini) as f:
        ini = "".join(line for line in f if line.split("=")[0].strip() not in keys)
    with open(b.ini, "w") as f:
        f.write(ini.replace("[pgbouncer]\n", "[pgbouncer]\n" + broken))
    with admin(b) as a:
        with pytest.raises(psycopg.Error, match="RELOAD failed"):
            a.execute("RELOAD")
        # the previous configuration serves on, and the service manager knows it is ready
        assert a.execute("SHOW VERSION").fetchone() is not None
    notify.drain()
    assert (notify.count("RELOADING"), notify.count("READY")) == (1, 2), notify.messages
    assert notify.messages[-1].get("READY") == "1", notify.messages


def start_with_passed_socket(b, lsock):
    """Starts the pooler the way systemd does with socket activation: the listening socket as
    fd 3, LISTEN_FDS=1 and LISTEN_PID naming the pooler's own pid."""
    fd = lsock.fileno()

    def child():
        die_with_parent(signal.SIGKILL)()
        os.dup2(fd, 3)
        os.environ["LISTEN_FDS"] = "1"
        os.environ["LISTEN_PID"] = str(os.getpid())

    b.stderr_file = open(b.stderr_path, "ab")
    b.proc = subprocess.Popen(b.command(), stdin=subprocess.DEVNULL, stdout=b.stderr_file,
                              stderr=subprocess.STDOUT, cwd=b.workdir, close_fds=False,
                              preexec_fn=child)


@pytest.mark.timeout(60)
def test_socket_activation_serves_on_the_passed_socket(bouncer_factory):
    b = bouncer_factory(start=False)
    configured = b.port
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    passed = free_port()
    lsock.bind(("127.0.0.1", passed))
    lsock.listen(16)
    start_with_passed_socket(b, lsock)
    lsock.close()  # the pooler holds it now
    b.port = passed
    b.wait_ready()
    with b.connect() as c:
        assert c.execute("select current_user").fetchone() == ("app",)
    with admin(b) as a:
        assert a.execute("SHOW VERSION").fetchone()
    # the configured listen_addr/listen_port are not listened on
    assert not accepts("127.0.0.1", configured)


@syncbouncer_only
@pytest.mark.timeout(60)
def test_socket_activation_refuses_what_is_not_a_listening_socket(bouncer_factory):
    b = bouncer_factory(start=False)
    not_listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    start_with_passed_socket(b, not_listening)
    not_listening.close()
    assert b.proc.wait(15) != 0
    b.stopped_by_us = True
    assert "fd 3 passed from service manager is not a listening stream socket" in b.output()


@syncbouncer_only
@pytest.mark.timeout(60)
def test_listen_fds_for_another_process_are_left_alone(bouncer_factory, monkeypatch):
    # a LISTEN_PID that is not ours (say, inherited from a parent) means: listen as configured
    monkeypatch.setenv("LISTEN_FDS", "1")
    monkeypatch.setenv("LISTEN_PID", "1")
    b = bouncer_factory()
    with b.connect() as c:
        assert c.execute("select 1").fetchone() == (1,)


@needs_125
@pytest.mark.timeout(90)
def test_so_reuseport_rolling_restart(bouncer_factory):
    old = bouncer_factory(config={"pgbouncer": {"so_reuseport": 1}})
    held = old.connect(autocommit=True)
    held.execute("select 1")
    # the new process starts on the same port while the old one still runs
    new = bouncer_factory(config={"pgbouncer": {"so_reuseport": 1, "listen_port": old.port}},
                          start=False)
    new.start(wait=False)
    wait_listening(new)
    with new.connect() as c:
        assert c.execute("select 1").fetchone() == (1,)
    # the old one drains: its listener closes at once, its connected client keeps being served,
    # and every new connection lands on the new process
    old.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    for _ in range(20):
        with new.connect() as c:
            assert c.execute("select 1").fetchone() == (1,)
    assert held.execute("select 'still served'").fetchone() == ("still served",)
    assert old.proc.poll() is None
    held.close()
    assert old.proc.wait(15) == 0
    old.stopped_by_us = True
    with admin(new) as a:
        clients = a.execute("SHOW CLIENTS").fetchall()
    assert clients  # the admin itself, on the process that serves the port now


@syncbouncer_only
@pytest.mark.timeout(90)
def test_so_reuseport_takes_the_unix_socket_over(bouncer_factory, pg):
    shared = bouncer_factory(start=False).workdir
    cfg = {"pgbouncer": {"so_reuseport": 1, "unix_socket_dir": shared}}
    old = bouncer_factory(config=cfg)
    new = bouncer_factory(config={"pgbouncer": {**cfg["pgbouncer"], "listen_port": old.port}},
                          start=False)
    new.start(wait=False)
    wait_listening(new)
    path = os.path.join(shared, f".s.PGSQL.{old.port}")
    assert "taking it over" in new.log()
    old.proc.send_signal(signal.SIGTERM)
    old.proc.wait(15)
    old.stopped_by_us = True
    # the old process left the new one's socket file in place: unix clients still get in
    assert os.path.exists(path)
    with psycopg.connect(host=shared, port=old.port, dbname="app", user="app",
                         password="secret", connect_timeout=10) as c:
        assert c.execute("select 1").fetchone() == (1,)


@syncbouncer_only
@pytest.mark.timeout(60)
def test_a_live_unix_socket_is_refused_without_so_reuseport(bouncer_factory):
    shared = bouncer_factory(start=False).workdir
    old = bouncer_factory(config={"pgbouncer": {"unix_socket_dir": shared}})
    new = bouncer_factory(config={"pgbouncer": {"unix_socket_dir": shared,
                                                "listen_addr": "", "listen_port": old.port}},
                          start=False)
    new.start(wait=False)
    assert new.proc.wait(15) != 0
    new.stopped_by_us = True
    assert "is in use by another process" in new.output()
    with old.connect() as c:
        assert c.execute("select 1").fetchone() == (1,)
