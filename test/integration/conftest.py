"""Fixtures for syncbouncer's integration tests.

A throwaway PostgreSQL 15 cluster lives for the whole session; each test starts its own pooler
from a generated ini and userlist. The pooler binary comes from $SB_BIN (default: the build's
./syncbouncer, found through $SB_BUILD_DIR or the source tree), so the same suite can be pointed
at Debian's pgbouncer to prove that the tests check real pgbouncer behaviour:

    SB_BIN=/usr/sbin/pgbouncer /usr/bin/python3 -m pytest -p no:cacheprovider test/integration

Every pooler is stopped at teardown with SIGTERM (SIGKILL after 10 s, which fails the test), and
the test fails if the pooler crashed or its output holds a sanitizer report. initdb refuses to
run as root, so when started as root the suite drops to the `postgres` OS user first.
"""

import ctypes
import os
import pwd
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SRC_DIR = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(SRC_DIR, "test", "lib"))

PG_BIN = os.environ.get("SB_PG_BIN", "/usr/lib/postgresql/15/bin")
PSQL = os.path.join(PG_BIN, "psql") if os.path.exists(os.path.join(PG_BIN, "psql")) else "psql"
PGBENCH = os.path.join(PG_BIN, "pgbench")

SANITIZER_PATTERNS = [
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "AddressSanitizer:DEADLYSIGNAL",
    "runtime error:",
    "SUMMARY: UndefinedBehaviorSanitizer",
    "WARNING: ThreadSanitizer",
    "ThreadSanitizer:DEADLYSIGNAL",
]


_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def die_with_parent(sig):
    """preexec_fn: the child gets sig when pytest dies, so a killed run leaves no servers."""

    def set_pdeathsig():
        _libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)

    return set_pdeathsig


def _drop_root():
    """initdb refuses root and the pooler refuses root without -u: run as `postgres`."""
    if os.geteuid() != 0:
        return
    pw = pwd.getpwnam("postgres")
    os.setgroups([])
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)
    os.environ["HOME"] = pw.pw_dir
    os.environ["USER"] = os.environ["LOGNAME"] = "postgres"


_drop_root()


def find_binary():
    if os.environ.get("SB_BIN"):
        return os.path.abspath(os.environ["SB_BIN"])
    for d in (os.environ.get("SB_BUILD_DIR"), SRC_DIR):
        if d and os.path.exists(os.path.join(d, "syncbouncer")):
            return os.path.abspath(os.path.join(d, "syncbouncer"))
    return os.path.join(SRC_DIR, "syncbouncer")


SB_BIN = find_binary()
# Tests whose expectation differs between pgbouncer 1.18 and syncbouncer look at this.
IS_PGBOUNCER = os.path.basename(SB_BIN).startswith("pgbouncer")
# Built with --enable-sanitizers (test/run says so): memory limits are measured as growth.
SANITIZED = os.environ.get("SB_SANITIZERS", "") not in ("", "0", "no")


def have_ipv6_loopback():
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


HAVE_IPV6 = have_ipv6_loopback()

_used_ports = {}  # port -> None, in the order handed out
# test/run gives each suite it runs at the same time a range of its own (SB_PORTS=LOW-HIGH)
PORT_LOW, PORT_HIGH = (int(p) for p in os.environ.get("SB_PORTS", "20000-29999").split("-"))


def port_is_free(port):
    for fam, addr in [(socket.AF_INET, "127.0.0.1")] + (
        [(socket.AF_INET6, "::1")] if HAVE_IPV6 else []
    ):
        s = socket.socket(fam, socket.SOCK_STREAM)
        try:
            s.bind((addr, port))
        except OSError:
            return False
        finally:
            s.close()
    return True


def free_port():
    """A port below 30000 (in SB_PORTS) that is free on 127.0.0.1 (and ::1), not handed out
    before while the range has such ports; once every port of the range has been handed out,
    the free ones are handed out again, the earliest given first."""
    for _ in range(200):
        port = random.randint(PORT_LOW, PORT_HIGH)
        if port not in _used_ports and port_is_free(port):
            _used_ports[port] = None
            return port
    for port in [p for p in range(PORT_LOW, PORT_HIGH + 1) if p not in _used_ports] + list(
            _used_ports):
        if port_is_free(port):
            _used_ports.pop(port, None)
            _used_ports[port] = None
            return port
    raise RuntimeError(f"no free port in {PORT_LOW}-{PORT_HIGH}")


def make_tempdir(prefix):
    d = tempfile.mkdtemp(prefix=prefix, dir=os.environ.get("SB_TMPDIR"))
    os.chmod(d, 0o700)
    return d


def read_text(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


# ---------------------------------------------------------------- PostgreSQL


class Postgres:
    def __init__(self, base):
        self.base = base
        self.datadir = os.path.join(base, "data")
        self.sockdir = base
        self.logfile = os.path.join(base, "postgresql.log")
        self.port = free_port()
        self.host = "127.0.0.1"

    def run(self, *args, **kw):
        return subprocess.run(args, check=True, capture_output=True, text=True, **kw)

    def start(self):
        self.run(
            os.path.join(PG_BIN, "initdb"), "-D", self.datadir, "-U", "postgres",
            "--auth-local=trust", "--auth-host=md5", "-E", "UTF8", "--locale=C", "--no-sync",
        )
        listen = "127.0.0.1,::1" if HAVE_IPV6 else "127.0.0.1"
        with open(os.path.join(self.datadir, "postgresql.conf"), "a") as f:
            f.write(
                f"listen_addresses = '{listen}'\n"
                f"unix_socket_directories = '{self.sockdir}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                "max_connections = 200\nshared_buffers = 32MB\n"
                # A backend notices a vanished client during a long query; the tests then
                # see whether the pooler, not the client, keeps a server busy.
                "client_connection_check_interval = 500ms\n"
                "log_connections = off\n"
            )
        # Started directly rather than through pg_ctl so that it dies with this process. The
        # port is on the command line so that a port taken meanwhile can be swapped for another.
        self.logf = open(self.logfile, "ab")
        for attempt in range(3):
            self.proc = subprocess.Popen(
                [os.path.join(PG_BIN, "postgres"), "-D", self.datadir, "-p", str(self.port)],
                stdin=subprocess.DEVNULL, stdout=self.logf, stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent(signal.SIGQUIT))
            if self.wait_ready():
                break
            if "could not bind" not in read_text(self.logfile) or attempt == 2:
                raise RuntimeError(f"postgres exited at start:\n{read_text(self.logfile)}")
            self.port = free_port()
        self.sql("SET password_encryption = 'md5'; CREATE ROLE app LOGIN PASSWORD 'secret'")
        self.sql("SET password_encryption = 'scram-sha-256';"
                 " CREATE ROLE scramuser LOGIN PASSWORD 'scrampass'")
        self.sql("CREATE DATABASE app OWNER app")
        self.sql("CREATE DATABASE crm OWNER app")

    def postmaster_pid(self):
        """The running postmaster's pid from postmaster.pid, or None."""
        try:
            with open(os.path.join(self.datadir, "postmaster.pid")) as f:
                pid = int(f.readline())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    def stop(self, sig=signal.SIGINT):
        """Fast shutdown (SIGINT; SIGQUIT: immediate, for a cluster about to be thrown away,
        which skips the shutdown checkpoint). Also stops a postmaster that a test restarted
        behind our back (pg_ctl restart), which would otherwise outlive the run."""
        pids = [self.proc.pid] if self.proc.poll() is None else []
        other = self.postmaster_pid()
        if other and other != self.proc.pid:
            pids.append(other)
        for proc_pid in pids:
            try:
                os.kill(proc_pid, sig)
            except ProcessLookupError:
                continue
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if proc_pid == self.proc.pid:
                    if self.proc.poll() is not None:
                        break
                else:
                    try:
                        os.kill(proc_pid, 0)
                    except ProcessLookupError:
                        break
                time.sleep(0.05)
            else:
                os.kill(proc_pid, signal.SIGKILL)
        self.proc.poll()
        self.logf.close()

    def restart(self):
        """Stops and starts the cluster on the same port (what a database restart looks like to
        the pooler). Use this rather than pg_ctl, so that the new postmaster dies with the run."""
        self.stop()
        self.logf = open(self.logfile, "ab")
        self.proc = subprocess.Popen(
            [os.path.join(PG_BIN, "postgres"), "-D", self.datadir, "-p", str(self.port)],
            stdin=subprocess.DEVNULL, stdout=self.logf, stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent(signal.SIGQUIT))
        if not self.wait_ready():
            raise RuntimeError(f"postgres exited at restart:\n{read_text(self.logfile)[-3000:]}")

    def wait_ready(self, timeout=60):
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            try:
                self.sql("select 1")
                return True
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        return False

    def connect(self, dbname="postgres", user="postgres", **kw):
        """Direct connection over the unix socket, bypassing the pooler."""
        import psycopg

        return psycopg.connect(host=self.sockdir, port=self.port, dbname=dbname, user=user,
                               autocommit=True, **kw)

    def sql(self, query, dbname="postgres", user="postgres"):
        with self.connect(dbname=dbname, user=user) as conn:
            cur = conn.execute(query)
            return cur.fetchall() if cur.description else None


@pytest.fixture(scope="session")
def pg():
    base = make_tempdir("sb-pg-")
    server = Postgres(base)
    try:
        server.start()
    except subprocess.CalledProcessError as e:
        shutil.rmtree(base, ignore_errors=True)
        pytest.exit(f"cannot start PostgreSQL: {e.cmd}: {e.stderr}", returncode=3)
    except Exception as e:
        if getattr(server, "proc", None):
            server.stop()
        shutil.rmtree(base, ignore_errors=True)
        pytest.exit(f"cannot start PostgreSQL: {e}", returncode=3)
    yield server
    # Immediate: the cluster is thrown away, its shutdown checkpoint would only cost time.
    # With SB_KEEP_TMP the kept cluster is shut down cleanly.
    server.stop(signal.SIGINT if os.environ.get("SB_KEEP_TMP") else signal.SIGQUIT)
    if not os.environ.get("SB_KEEP_TMP"):
        shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------- the pooler


def extra_settings():
    """SB_EXTRA_SETTINGS="key = value; key = value": settings added to every [pgbouncer]
    section the tests write (e.g. workers = 2, to run a suite on more than one event loop). A
    key the test sets itself keeps the test's value."""
    out = {}
    for item in os.environ.get("SB_EXTRA_SETTINGS", "").replace("\n", ";").split(";"):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            out[key.strip()] = value.strip()
    return out


def render_ini(sections):
    """{section: {key: value} or [raw lines]} -> ini text. A value of None drops the key."""
    out = []
    for name, body in sections.items():
        out.append(f"[{name}]")
        extra = extra_settings() if name == "pgbouncer" else {}
        if isinstance(body, dict):
            out.extend(f"{k} = {v}" for k, v in body.items() if v is not None)
            out.extend(f"{k} = {v}" for k, v in extra.items() if k not in body)
        else:
            out.extend(body)
            given = {line.partition("=")[0].strip() for line in body}
            out.extend(f"{k} = {v}" for k, v in extra.items() if k not in given)
        out.append("")
    return "\n".join(out)


def render_userlist(users):
    return "".join(f'"{u}" "{p}"\n' for u, p in users.items())


class Bouncer:
    """One pooler process started from a generated config in its own work directory."""

    def __init__(self, pg, workdir, sections, users, args):
        self.pg = pg
        self.workdir = workdir
        self.host = "127.0.0.1"
        port = str(sections["pgbouncer"].get("listen_port", ""))
        self.port = int(port) if port.isdigit() else None
        self.unix_dir = sections["pgbouncer"].get("unix_socket_dir") or None
        self.logfile = sections["pgbouncer"].get("logfile")
        self.ini = os.path.join(workdir, "syncbouncer.ini")
        self.userlist = os.path.join(workdir, "userlist.txt")
        self.stderr_path = os.path.join(workdir, "stderr.log")
        self.args = list(args)
        self.binary = SB_BIN
        self.proc = None
        self.stopped_by_us = False
        self.checked = False
        self.ups_before = 0  # "process up" lines in the output before the latest start
        with open(self.ini, "w") as f:
            f.write(render_ini(sections))
        with open(self.userlist, "w") as f:
            f.write(render_userlist(users))

    # -- process

    def command(self, *extra):
        return [self.binary, *self.args, *extra, self.ini]

    def start(self, wait=True):
        self.ups_before = self.output().count("process up:")
        self.stderr_file = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                     stdout=self.stderr_file, stderr=subprocess.STDOUT,
                                     cwd=self.workdir,
                                     preexec_fn=die_with_parent(signal.SIGKILL))
        if wait:
            self.wait_ready()
        return self

    @property
    def pid(self):
        return self.proc.pid

    def wait_ready(self, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                # Reported here; teardown then only looks for sanitizer reports.
                self.stopped_by_us = True
                pytest.fail(f"pooler exited with {self.proc.returncode} at start:\n{self.output()}")
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
                # The listener takes connections before the rest of the start (the metrics
                # endpoint, the pidfile) is done; "process up" in the log says it is.
                if not self.logs_start() or \
                        self.output().count("process up:") > self.ups_before:
                    return
            except OSError:
                pass
            # a refused connection costs nothing: ask often, the pooler is up in a few ms
            time.sleep(0.005)
        pytest.fail(f"pooler does not accept connections (or has not logged \"process up\") "
                    f"after {timeout}s:\n{self.output()}")

    def logs_start(self):
        """Whether the pooler's "process up" line reaches output() (a logfile, or stderr
        without -q)."""
        return bool(self.logfile) or "-q" not in self.args

    def stop(self):
        """SIGTERM, then SIGKILL; returns a list of problems (empty when it stopped cleanly)."""
        problems = []
        if self.proc is None or self.checked:
            return problems
        self.checked = True
        if self.proc.poll() is not None:
            if not self.stopped_by_us:
                problems.append(f"pooler died during the test (exit status {self.proc.returncode})")
        else:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                problems.append("pooler did not exit within 10 s of SIGTERM")
        self.stopped_by_us = True
        rc = self.proc.returncode
        if rc is not None and rc < 0 and rc not in (-signal.SIGTERM, -signal.SIGKILL):
            problems.append(f"pooler killed by signal {-rc}")
        self.stderr_file.close()
        out = self.output()
        for pat in SANITIZER_PATTERNS:
            if pat in out:
                problems.append(f"sanitizer report ({pat!r})")
        if problems:
            problems.append("output:\n" + out[-20000:])
        return problems

    def output(self):
        """Everything the pooler wrote: its stderr/stdout and its logfile."""
        text = read_text(self.stderr_path)
        if self.logfile:
            text += read_text(self.logfile)
        return text

    def log(self):
        return read_text(self.logfile) if self.logfile else read_text(self.stderr_path)

    def rss_kb(self, pid=None):
        with open(f"/proc/{pid or self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    # -- clients

    def connect(self, dbname="app", user="app", password="secret", **kw):
        import psycopg

        kw.setdefault("connect_timeout", 10)
        kw.setdefault("host", self.host)
        return psycopg.connect(port=self.port, dbname=dbname, user=user, password=password,
                               **kw)

    def psql(self, *args, dbname="app", user="app", password="secret", host=None, timeout=120,
             check=True, **kw):
        return run_psql(host or self.host, self.port, *args, dbname=dbname, user=user,
                        password=password, timeout=timeout, check=check, **kw)

    def wire(self, **kw):
        import pgwire

        return pgwire.WireClient(self.host, self.port, **kw)


def client_env(password):
    env = dict(os.environ)
    env.update(PGCONNECT_TIMEOUT="10", PGAPPNAME="")
    env.pop("PGPASSWORD", None)
    if password is not None:
        env["PGPASSWORD"] = password
    return env


def run_psql(host, port, *args, dbname="app", user="app", password="secret", timeout=120,
             check=True, **kw):
    cmd = [PSQL, "-X", "-v", "ON_ERROR_STOP=1", "-h", host, "-p", str(port), "-U", user,
           "-d", dbname, *args]
    res = subprocess.run(cmd, env=client_env(password), capture_output=True, text=True,
                         timeout=timeout, **kw)
    if check and res.returncode != 0:
        pytest.fail(f"psql failed ({res.returncode}): {res.stderr}")
    return res


def run_pgbench(host, port, *args, dbname="app", user="app", password="secret", timeout=300):
    cmd = [PGBENCH, "-h", host, "-p", str(port), "-U", user, *args, dbname]
    return subprocess.run(cmd, env=client_env(password), capture_output=True, text=True,
                          timeout=timeout)


class RssSampler:
    """Samples a process's VmRSS every 20 ms in a thread; .peak_kb after stop()."""

    def __init__(self, bouncer):
        self.bouncer = bouncer
        self.peak_kb = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                self.peak_kb = max(self.peak_kb, self.bouncer.rss_kb())
                self.samples += 1
            except (OSError, RuntimeError):
                return
            time.sleep(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def default_sections(pg, workdir, port):
    server = f"host=127.0.0.1 port={pg.port}"
    return {
        "databases": {
            "app": f"{server} dbname=app",
            "crm": f"{server} dbname=crm",
        },
        "pgbouncer": {
            "listen_addr": "127.0.0.1",
            "listen_port": port,
            "unix_socket_dir": "",
            "auth_type": "md5",
            "auth_file": os.path.join(workdir, "userlist.txt"),
            "logfile": os.path.join(workdir, "syncbouncer.log"),
            "pool_mode": "session",
            "max_client_conn": 100,
            "default_pool_size": 20,
            "admin_users": "postgres",
        },
    }


DEFAULT_USERS = {"app": "secret", "scramuser": "scrampass", "postgres": "postgres"}


def subst(value, workdir):
    return value.replace("@WORKDIR@", workdir) if isinstance(value, str) else value


@pytest.fixture
def bouncer_factory(pg, request):
    """make(config=None, users=None, args=(), start=True) -> Bouncer.

    config: {section: {key: value}} merged over the defaults (a value of None removes the key),
    or {section: [raw lines]} which replaces that section; "@WORKDIR@" in a value stands for
    the pooler's own work directory. users replaces the userlist.
    """
    made = []
    dirs = []

    def make(config=None, users=None, args=(), start=True):
        workdir = make_tempdir("sb-bnc-")
        dirs.append(workdir)
        sections = default_sections(pg, workdir, free_port())
        for name, body in (config or {}).items():
            if isinstance(body, dict):
                body = {k: subst(v, workdir) for k, v in body.items()}
            else:
                body = [subst(line, workdir) for line in body]
            if isinstance(body, dict) and isinstance(sections.get(name), dict):
                sections[name] = {**sections[name], **body}
            else:
                sections[name] = body
        b = Bouncer(pg, workdir, sections, DEFAULT_USERS if users is None else users, args)
        made.append(b)
        if start:
            b.start()
        return b

    yield make

    problems = []
    for b in made:
        for p in b.stop():
            problems.append(f"{b.ini}: {p}")
    if not os.environ.get("SB_KEEP_TMP"):
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def bouncer(bouncer_factory):
    """A pooler with the default config (session mode, md5 against the userlist)."""
    return bouncer_factory()


# ---------------------------------------------------------------- synced tables

def sync_settled(b):
    """True once every synced table of the pooler b has had its first sync pass (or has none)."""
    with b.connect(dbname="pgbouncer", user="postgres", password="postgres",
                   autocommit=True) as admin:
        cur = admin.execute("SHOW SYNCED_TABLES")
        cols = [d.name for d in cur.description]
        rows = [dict(zip(cols, r)) for r in cur.fetchall()]
    return all(r["state"] == "failed" or r["sync_state"] in ("off", "failed")
               or r["last_sync"] is not None for r in rows)


def wait_synced_ready(pg, b, synced=False, timeout=20, dbname="crm"):
    """Waits until the pooler b has installed the guard trigger in dbname and, with synced, until
    the first sync pass of its tables is over (so that it never takes a fault a test sets up)."""
    deadline = time.monotonic() + timeout
    while pg.sql("SELECT count(*) FROM pg_trigger WHERE tgname = 'syncbouncer_guard'",
                 dbname=dbname)[0][0] == 0:
        assert time.monotonic() < deadline, "guard trigger not installed:\n" + b.output()
        time.sleep(0.1)
    while synced and not sync_settled(b):
        assert time.monotonic() < deadline, "first sync pass not done:\n" + b.output()
        time.sleep(0.1)


# ---------------------------------------------------------------- the fake APIs

FAKES_DIR = os.path.join(SRC_DIR, "test", "fakes")


class FakeServer:
    """One fake API of test/fakes/ (script, e.g. "fake_stripe.py", with its own arguments) in a
    process of its own on a free port; call() and control() speak its control API."""

    def __init__(self, script, *args):
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(FAKES_DIR, script), "--port", str(self.port), *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        line = self.proc.stdout.readline().decode()
        assert "listening" in line, line
        self.url = f"http://127.0.0.1:{self.port}"

    def call(self, method, path, body=None):
        """A JSON request to the fake; its JSON answer (None when empty)."""
        import json
        import urllib.request

        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
            return json.loads(raw) if raw else None

    _call = call

    def control(self, **kw):
        return self.call("POST", "/_control", kw)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


def pytest_report_header(config):
    return [f"pooler binary: {SB_BIN} ({'pgbouncer' if IS_PGBOUNCER else 'syncbouncer'})",
            f"sanitizers: {SANITIZED}, ipv6: {HAVE_IPV6}, uid: {os.geteuid()}"]


LOG_LINE_RE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \w+ \[\d+\] (LOG|WARNING|ERROR|FATAL|DEBUG|NOISE) ",
    re.M,
)
