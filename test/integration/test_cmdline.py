"""Command line, pidfile, config errors and the log, as an operator meets them.

Refusing to run as root without -u needs root; test/run checks that as root.
"""

import os
import re
import signal
import socket
import subprocess
import time

import pytest

from conftest import IS_PGBOUNCER, LOG_LINE_RE, SANITIZER_PATTERNS, SB_BIN

NAME = "PgBouncer" if IS_PGBOUNCER else "syncbouncer"


def run(*args, timeout=15, env=None):
    return subprocess.run([SB_BIN, *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env=env)


def wait_for(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def accepts(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def test_version():
    for flag in ("-V", "--version"):
        res = run(flag)
        assert res.returncode == 0
        assert re.match(rf"{NAME} \d+\.\d+\.\d+\n", res.stdout), res.stdout


def test_help():
    for flag in ("-h", "--help"):
        res = run(flag)
        assert res.returncode == 0
        assert "Usage:" in res.stdout
        for opt in ("-d", "-q", "-v", "-u", "-V", "-h"):
            assert re.search(rf"^\s+{opt}\b", res.stdout, re.M), opt


def test_no_config_file_is_an_error():
    res = run()
    assert res.returncode != 0
    assert res.stderr.strip() != ""


def test_missing_config_file_is_an_error(tmp_path):
    res = run(str(tmp_path / "nonexistent.ini"))
    assert res.returncode != 0
    assert "nonexistent.ini" in res.stdout + res.stderr


@pytest.mark.skipif(IS_PGBOUNCER, reason="pgbouncer 1.18 still has the deprecated -R")
def test_online_restart_flag_is_refused_pointing_at_so_reuseport(bouncer_factory):
    b = bouncer_factory(start=False)
    for flag in ("-R", "--reboot"):
        res = run(flag, b.ini)
        assert res.returncode != 0
        out = res.stdout + res.stderr
        assert "online restart (-R) is not supported" in out
        assert "so_reuseport" in out  # what to do instead
        assert not accepts(b.port)


def test_daemon_without_pidfile_fails(bouncer_factory):
    b = bouncer_factory(start=False)
    res = run("-d", b.ini)
    assert res.returncode != 0
    assert "daemon needs pidfile configured" in res.stdout + res.stderr
    assert not accepts(b.port)


def stop_daemon(pidfile):
    if os.path.exists(pidfile):
        pid = int(open(pidfile).read())
        os.kill(pid, signal.SIGTERM)
        assert wait_for(lambda: not pid_alive(pid)), "daemon ignores SIGTERM"


def test_daemon_with_pidfile(bouncer_factory):
    b = bouncer_factory(config={"pgbouncer": {"pidfile": "@WORKDIR@/sb.pid"}}, start=False)
    pidfile = os.path.join(b.workdir, "sb.pid")
    # A daemon has no stderr: sanitizer reports go to files instead.
    env = dict(os.environ)
    asan_log = os.path.join(b.workdir, "asan")
    env["ASAN_OPTIONS"] = ":".join(filter(None, [env.get("ASAN_OPTIONS"), f"log_path={asan_log}"]))
    env["UBSAN_OPTIONS"] = ":".join(filter(None, [env.get("UBSAN_OPTIONS"),
                                                  f"log_path={asan_log}"]))
    try:
        res = run("-d", b.ini, env=env)
        # The foreground process returns at once, the daemon goes on.
        assert res.returncode == 0, res.stdout + res.stderr
        assert wait_for(lambda: os.path.exists(pidfile) and open(pidfile).read().strip())
        pid = int(open(pidfile).read())
        assert pid_alive(pid)
        assert wait_for(lambda: accepts(b.port))
        with b.connect() as conn:
            assert conn.execute("select 1").fetchone() == (1,)
        # The daemon's log lines carry its own pid, not that of the process that forked it.
        assert wait_for(lambda: "login attempt" in b.log())
        logins = [ln for ln in b.log().splitlines() if "login attempt" in ln]
        assert logins and all(f" [{pid}] " in ln for ln in logins), (pid, logins)
        # Detached from our terminal and session.
        assert os.getsid(pid) != os.getsid(0)
        # A second start with the same pidfile refuses while the first lives.
        again = run("-d", b.ini)
        assert again.returncode != 0
        assert "pidfile exists, another instance running?" in again.stdout + again.stderr
        assert pid_alive(pid)
    finally:
        stop_daemon(pidfile)
    assert not os.path.exists(pidfile), "pidfile left behind after a clean stop"
    reports = [f for f in os.listdir(b.workdir) if f.startswith("asan.")]
    assert reports == [], open(os.path.join(b.workdir, reports[0])).read()
    assert not any(p in b.log() for p in SANITIZER_PATTERNS)


def test_live_pidfile_refuses_foreground_start(bouncer_factory):
    b = bouncer_factory(config={"pgbouncer": {"pidfile": "@WORKDIR@/sb.pid"}})
    pidfile = os.path.join(b.workdir, "sb.pid")
    assert wait_for(lambda: os.path.exists(pidfile))
    assert int(open(pidfile).read()) == b.pid
    res = run(b.ini)
    assert res.returncode != 0
    assert "pidfile exists, another instance running?" in res.stdout + res.stderr
    assert int(open(pidfile).read()) == b.pid
    with b.connect() as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_stale_pidfile_is_replaced(bouncer_factory):
    b = bouncer_factory(config={"pgbouncer": {"pidfile": "@WORKDIR@/sb.pid"}}, start=False)
    pidfile = os.path.join(b.workdir, "sb.pid")
    # A pid that is not running (pids above pid_max never exist).
    with open(pidfile, "w") as f:
        f.write("4194999\n")
    b.start()
    assert wait_for(lambda: open(pidfile).read().strip() == str(b.pid))
    assert "stale pidfile, removing" in b.output()


def test_unknown_setting_warns_and_starts(bouncer_factory):
    b = bouncer_factory(config={"pgbouncer": {"no_such_setting_xyz": "1"}}, start=False)
    if IS_PGBOUNCER:
        res = run(b.ini)
        assert res.returncode != 0
        assert "unknown parameter: pgbouncer/no_such_setting_xyz" in res.stdout + res.stderr
        pytest.xfail("pgbouncer 1.18 refuses to start on an unknown setting")
    b.start()
    assert re.search(r" WARNING .*no_such_setting_xyz", b.output()), b.output()
    with b.connect() as conn:
        assert conn.execute("select 1").fetchone() == (1,)


@pytest.mark.parametrize("key,value", [("pool_mode", "bogus"), ("listen_port", "abc"),
                                       ("default_pool_size", "many")])
def test_bad_value_refuses_to_start_naming_file_and_line(bouncer_factory, key, value):
    b = bouncer_factory(config={"pgbouncer": {key: value}}, start=False)
    lines = open(b.ini).read().split("\n")
    lineno = next(i + 1 for i, line in enumerate(lines) if line.startswith(f"{key} = {value}"))
    res = run(b.ini)
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert f"{b.ini}:{lineno}" in out, out
    assert value in out
    if b.port:
        assert not accepts(b.port)


def test_syntax_error_refuses_to_start(bouncer_factory):
    b = bouncer_factory(config={"pgbouncer": {"listen_addr": "127.0.0.1"}}, start=False)
    with open(b.ini, "a") as f:
        f.write("[pgbouncer\nthis is not a setting\n")
    res = run(b.ini)
    assert res.returncode != 0
    assert b.ini in res.stdout + res.stderr


def test_log_lines_have_pgbouncer_format(bouncer):
    with bouncer.connect() as conn:
        client_port = conn.execute("select inet_client_port()").fetchone()
        assert client_port
    assert wait_for(lambda: "closing because: client close request" in bouncer.log())
    log = bouncer.log()
    lines = [line for line in log.splitlines() if line]
    assert lines, "empty log"
    for line in lines:
        assert LOG_LINE_RE.match(line), f"not in pgbouncer's format: {line!r}"
    assert re.search(r"C-0x[0-9a-f]+: app/app@127\.0\.0\.1:\d+ login attempt: db=app user=app"
                     r" tls=no", log), log
    assert re.search(r"C-0x[0-9a-f]+: app/app@127\.0\.0\.1:\d+ closing because: client close"
                     r" request", log), log
    assert re.search(r" LOG .*listening on 127\.0\.0\.1:" + str(bouncer.port), log), log
    # The pid in each line is the pooler's.
    assert f" [{bouncer.pid}] " in lines[0]


def test_log_failed_login_and_no_secrets(bouncer):
    with pytest.raises(Exception):
        bouncer.connect(password="hunter2-wrong")
    with bouncer.connect() as conn:
        conn.execute("select 'sb-secret-literal'")
    time.sleep(0.2)
    log = bouncer.output()
    assert re.search(r"(WARNING|LOG) C-0x[0-9a-f]+: app/app@127\.0\.0\.1:\d+ .*password"
                     r" authentication failed", log), log
    for secret in ("hunter2-wrong", "secret", "sb-secret-literal"):
        assert secret not in log, secret


def test_quiet_flag_silences_stderr(bouncer_factory):
    b = bouncer_factory(args=["-q"])
    with b.connect() as conn:
        conn.execute("select 1")
    assert "login attempt" in b.log()
    assert open(b.stderr_path).read() == ""


def test_verbose_flag_adds_debug_lines(bouncer_factory):
    b = bouncer_factory(args=["-v"])
    with b.connect() as conn:
        conn.execute("select 1")
    assert re.search(r" DEBUG ", b.log()), b.log()
