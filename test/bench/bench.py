#!/usr/bin/python3
"""syncbouncer side by side with pgbouncer and a direct connection, in one run.

Starts a throwaway PostgreSQL 15 cluster (initdb into a temporary directory), a pgbouncer and a
syncbouncer with the same ini settings, and runs the same pgbench workloads against all three
targets, one after another for each measurement point so that drift on the machine hits every
target alike. Reports tps, average latency, the pooler's CPU time per transaction and the
ratios syncbouncer/pgbouncer and syncbouncer/direct as a Markdown report (stdout, and --output).

Workloads:
  select     pgbench -S, -c 1/10/50, session and transaction pooling; -M prepared (transaction)
  tpcb       pgbench's default TPC-B-like script, simple protocol, -c 10, both modes
  churn      pgbench -C -S (a new connection for every transaction), session pooling
  big        one SELECT of about 100 MB streamed through: wall time and the pooler's VmHWM
  synced     -S and TPC-B through a syncbouncer whose config has [synced_tables] (the fake
             Salesforce answering at once), beside the same without; synced-table INSERTs/s
  callgrind  instructions executed by the pooler per relayed SELECT 1 (valgrind), repeatable

Run as root (drops to the `postgres` OS user, as initdb and both poolers refuse root) or as
any user that can run initdb. Benchmarks are not tests: nothing here passes or fails on speed.
See test/bench/README.md.
"""

import argparse
import ctypes
import datetime
import hashlib
import json
import os
import platform
import pwd
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
SRC_DIR = os.path.dirname(os.path.dirname(HERE))
FAKE_SF = os.path.join(SRC_DIR, "test", "fakes", "fake_salesforce.py")
FAKE_SF_NODELAY = os.path.join(HERE, "fake_salesforce_nodelay.py")
PG_BIN = os.environ.get("SB_PG_BIN", "/usr/lib/postgresql/15/bin")
DEFAULT_SB = "/tmp/build-bench/syncbouncer"
DEFAULT_PGB = "/usr/sbin/pgbouncer"
PY = "/usr/bin/python3"

DB = "bench"
USER = "app"
PASSWORD = "secret"

# pool sizes: session pooling needs a server per client (50 clients at most here); transaction
# pooling is measured with fewer servers than clients, as it is deployed
POOL_SIZE = {"session": 60, "transaction": 20}

BIG_ROWS = 100000
BIG_WIDTH = 1000  # bytes per row: about 100 MB per query

TARGETS = ("direct", "pgbouncer", "syncbouncer")
# run_workers(): the same syncbouncer with workers = 1 and workers = 2
WORKER_TARGETS = ("direct", "pgbouncer", "syncbouncer", "syncbouncer-w2")

# workloads counted per query under valgrind and strace: (pool mode, label, pgbench options)
TRACED = (
    ("session", "SELECT 1 (simple)", ["-M", "simple"]),
    ("transaction", "SELECT 1 (simple)", ["-M", "simple"]),
    ("transaction", "SELECT 1 (-M prepared)", ["-M", "prepared"]),
    ("session", "-C: log-in (md5), SELECT 1, log-out", ["-M", "simple", "-C"]),
)

# SCRAM log-ins under valgrind (role SCRAM_USER, whose secret PostgreSQL keeps as SCRAM): the
# auth_file holds the plain password (the pooler derives the keys: PBKDF2, both sides) or the
# secret from pg_authid (the client's proof logs the servers in)
SCRAM_USER = "scramapp"
TRACED_SCRAM = (
    ("session", "-C: log-in (SCRAM, plain password in auth_file), SELECT 1, log-out", "plain"),
    ("session", "-C: log-in (SCRAM, SCRAM secret in auth_file), SELECT 1, log-out", "secret"),
)


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def drop_root():
    if os.geteuid() != 0:
        return
    pw = pwd.getpwnam("postgres")
    os.setgroups([])
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)
    os.environ["HOME"] = pw.pw_dir
    os.environ["USER"] = os.environ["LOGNAME"] = "postgres"


_used_ports = set()


def free_port():
    """A free port in SB_PORTS (LOW-HIGH, as the tests take it), else below 30000."""
    low, high = (int(x) for x in os.environ.get("SB_PORTS", "20000-29999").split("-"))
    for _ in range(500):
        port = low + int.from_bytes(os.urandom(2), "little") % (high - low + 1)
        if port in _used_ports:
            continue
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            s.close()
        _used_ports.add(port)
        return port
    raise RuntimeError("no free port below 30000")


def wait_port(port, proc, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} at start")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} does not accept connections after {timeout}s")


def client_env():
    env = dict(os.environ)
    env.update(PGPASSWORD=PASSWORD, PGCONNECT_TIMEOUT="10", PGAPPNAME="")
    return env


# ------------------------------------------------------------------------------ PostgreSQL


class Cluster:
    def __init__(self, base):
        self.base = base
        self.datadir = os.path.join(base, "data")
        self.port = free_port()
        self.proc = None

    def start(self):
        subprocess.run([os.path.join(PG_BIN, "initdb"), "-D", self.datadir, "-U", "postgres",
                        "--auth-local=trust", "--auth-host=md5", "-E", "UTF8", "--locale=C",
                        "--no-sync"], check=True, capture_output=True)
        with open(os.path.join(self.datadir, "postgresql.conf"), "a") as f:
            # durability off: the benchmark measures the path through the pooler, not the disk
            f.write("listen_addresses = '127.0.0.1'\n"
                    f"unix_socket_directories = '{self.base}'\n"
                    "max_connections = 500\nshared_buffers = 256MB\n"
                    "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                    "log_connections = off\nlog_min_messages = warning\n")
        self.logf = open(os.path.join(self.base, "postgresql.log"), "ab")
        self.proc = subprocess.Popen([os.path.join(PG_BIN, "postgres"), "-D", self.datadir,
                                      "-p", str(self.port)], stdin=subprocess.DEVNULL,
                                     stdout=self.logf, stderr=subprocess.STDOUT,
                                     preexec_fn=die_with_parent)
        wait_port(self.port, self.proc, 60, "postgres")
        for _ in range(100):
            if subprocess.run(self.psql_cmd("postgres", "select 1"),
                              capture_output=True).returncode == 0:
                break
            time.sleep(0.1)

    def psql_cmd(self, db, sql):
        return [os.path.join(PG_BIN, "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At",
                "-h", self.base, "-p", str(self.port), "-U", "postgres", "-d", db, "-c", sql]

    def sql(self, sql, db=DB):
        r = subprocess.run(self.psql_cmd(db, sql), capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"psql failed: {sql[:80]}: {r.stderr}")
        return r.stdout.strip()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ------------------------------------------------------------------------------ poolers


class Pooler:
    """One pooler process (pgbouncer or syncbouncer) from a generated ini."""

    def __init__(self, kind, binary, workdir, pg, mode, extra_sections="", wrapper=(),
                 max_client_conn=200, auth_type="md5", users=None):
        self.kind = kind
        self.binary = binary
        self.port = free_port()
        self.workdir = tempfile.mkdtemp(prefix=f"{kind}-{mode}-", dir=workdir)
        self.ini = os.path.join(self.workdir, "pooler.ini")
        self.wrapper = list(wrapper)
        with open(os.path.join(self.workdir, "userlist.txt"), "w") as f:
            for user, secret in (users or {USER: PASSWORD}).items():
                f.write(f'"{user}" "{secret}"\n')
        with open(self.ini, "w") as f:
            f.write(f"[databases]\n{DB} = host=127.0.0.1 port={pg.port} dbname={DB}\n\n"
                    "[pgbouncer]\n"
                    "listen_addr = 127.0.0.1\n"
                    f"listen_port = {self.port}\n"
                    "unix_socket_dir =\n"
                    f"auth_type = {auth_type}\n"
                    f"auth_file = {self.workdir}/userlist.txt\n"
                    f"logfile = {self.workdir}/pooler.log\n"
                    f"pool_mode = {mode}\n"
                    f"max_client_conn = {max_client_conn}\n"
                    f"default_pool_size = {POOL_SIZE[mode]}\n"
                    + extra_sections)
        self.out_path = os.path.join(self.workdir, "stderr.log")
        self.proc = None

    def start(self, timeout=30):
        self.out = open(self.out_path, "ab")
        self.proc = subprocess.Popen(self.wrapper + [self.binary, self.ini],
                                     stdin=subprocess.DEVNULL, stdout=self.out,
                                     stderr=subprocess.STDOUT, cwd=self.workdir,
                                     preexec_fn=die_with_parent)
        wait_port(self.port, self.proc, timeout, f"{self.kind} ({self.binary})")
        return self

    def cpu_ns(self):
        """CPU time of all the process's threads so far (schedstat: nanoseconds)."""
        total = 0
        for tid in os.listdir(f"/proc/{self.proc.pid}/task"):
            with open(f"/proc/{self.proc.pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        return total

    def status_kb(self, key):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        return None

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            # under strace, the pooler is strace's child: signal it, strace then exits with it
            victims = children(self.proc.pid) if self.wrapper[:1] == ["strace"] else []
            for pid in victims or [self.proc.pid]:
                os.kill(pid, signal.SIGTERM)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.out.close()

    def output(self):
        text = ""
        for name in ("stderr.log", "pooler.log"):
            try:
                with open(os.path.join(self.workdir, name), errors="replace") as f:
                    text += f.read()
            except FileNotFoundError:
                pass
        return text


# ------------------------------------------------------------------------------ pgbench


def pgbench(port, args, timeout, user=USER):
    cmd = [os.path.join(PG_BIN, "pgbench"), "-h", "127.0.0.1", "-p", str(port), "-U", user,
           "-n", *args, DB]
    r = subprocess.run(cmd, env=client_env(), capture_output=True, text=True, timeout=timeout)
    out = r.stdout + r.stderr

    def num(pattern):
        m = re.search(pattern, out)
        return float(m.group(1)) if m else None

    res = {
        "args": " ".join(args),
        "rc": r.returncode,
        "tps": num(r"tps = ([\d.]+)"),
        "lat_ms": num(r"latency average = ([\d.]+) ms"),
        "txns": num(r"number of transactions actually processed: (\d+)"),
        "failed": num(r"number of failed transactions: (\d+)"),
        "aborted": "Run was aborted" in out or r.returncode != 0,
    }
    if res["aborted"]:
        errs = [ln for ln in out.splitlines() if "error" in ln.lower() or "abort" in ln.lower()]
        lines = errs or out.strip().splitlines()[-1:] or ["?"]
        res["error"] = lines[0].strip()[:200]
    return res


def proc_times(pid):
    """(user s, system s, context switches) of process pid, all its threads."""
    hz = os.sysconf("SC_CLK_TCK")
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    switches = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if "ctxt_switches:" in line:  # voluntary and not
                        switches += int(line.split()[1])
        except OSError:
            pass  # a thread that ended meanwhile
    return int(fields[11]) / hz, int(fields[12]) / hz, switches


def children_cpu_s(ppid):
    """User + system seconds of the live children of ppid (PostgreSQL's backends)."""
    hz = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == ppid:
            total += (int(fields[11]) + int(fields[12])) / hz
    return total


class Bench:
    def __init__(self, opts, work):
        self.opts = opts
        self.work = work
        self.results = {"meta": {}, "runs": [], "big": [], "callgrind": [], "syscalls": [],
                        "synced_check": {}, "idle": [], "kernel": []}
        self.pg = None
        self.poolers = []

    # -- helpers

    def target_port(self, target, poolers):
        return self.pg.port if target == "direct" else poolers[target].port

    def measure(self, group, mode, label, clients, args, poolers, targets=TARGETS):
        """One measurement point: the same pgbench run against each target, back to back,
        the whole sequence repeated --rounds times (so drift hits every target alike)."""
        for rnd in range(self.opts.rounds):
            for target in targets:
                self.measure_one(group, mode, label, clients, args, poolers, target, rnd)

    def measure_one(self, group, mode, label, clients, args, poolers, target, rnd):
        p = poolers.get(target)
        load = os.getloadavg()[0]
        cpu0 = p.cpu_ns() if p else None
        res = pgbench(self.target_port(target, poolers), args,
                      timeout=self.opts.duration * 4 + 120)
        if p:
            res["pooler_cpu_s"] = (p.cpu_ns() - cpu0) / 1e9
            if res["txns"]:
                res["pooler_cpu_us_per_txn"] = res["pooler_cpu_s"] * 1e6 / res["txns"]
            if p.proc.poll() is not None:
                raise RuntimeError(f"{target} died during {label}:\n{p.output()[-4000:]}")
        res.update(group=group, mode=mode, label=label, clients=clients, target=target,
                   round=rnd, loadavg_before=load)
        self.results["runs"].append(res)
        extra = f" ERROR {res.get('error')}" if res["aborted"] else ""
        cpu = res.get("pooler_cpu_us_per_txn")
        log(f"  {group:8} {mode:11} {label:22} c={clients:<3} {target:18} r{rnd} "
            f"load={load:4.1f} "
            f"tps={res['tps'] or 0:10.1f} lat={res['lat_ms'] or 0:8.3f}ms"
            + (f" pooler={cpu:6.1f}us/txn" if cpu else "") + extra)

    def start_poolers(self, mode, extra_sb="", kinds=("pgbouncer", "syncbouncer")):
        poolers = {}
        for kind in kinds:
            binary = self.opts.pgbouncer if kind == "pgbouncer" else self.opts.syncbouncer
            p = Pooler(kind, binary, self.work, self.pg, mode,
                       extra_sb if kind != "pgbouncer" else "")
            self.poolers.append(p)
            poolers[kind] = p.start()
        return poolers

    def stop_poolers(self, poolers):
        for p in poolers.values():
            p.stop()

    def T(self):
        return ["-T", str(self.opts.duration)]

    @staticmethod
    def cj(c):
        return ["-c", str(c), "-j", str(min(2, c))]

    # -- set-up

    def setup(self):
        self.pg = Cluster(os.path.join(self.work, "pg"))
        os.makedirs(self.pg.base, mode=0o700)
        log(f"initdb + start PostgreSQL on port {self.pg.port}")
        self.pg.start()
        self.pg.sql(f"SET password_encryption = 'md5'; CREATE ROLE {USER} LOGIN PASSWORD "
                    f"'{PASSWORD}'", db="postgres")
        self.pg.sql(f"CREATE DATABASE {DB} OWNER {USER}", db="postgres")
        self.pg.sql(f"SET password_encryption = 'scram-sha-256'; CREATE ROLE {SCRAM_USER} "
                    f"LOGIN PASSWORD '{PASSWORD}'", db="postgres")
        log(f"pgbench -i -s {self.opts.scale}")
        r = subprocess.run([os.path.join(PG_BIN, "pgbench"), "-i", "-q", "-s",
                            str(self.opts.scale), "-h", "127.0.0.1", "-p", str(self.pg.port),
                            "-U", USER, DB], env=client_env(), capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError("pgbench -i failed: " + r.stderr)
        self.pg.sql(f"""
            CREATE SCHEMA salesforce AUTHORIZATION {USER};
            CREATE TABLE salesforce.contacts (id text PRIMARY KEY, first_name text,
                last_name text, email text, note text);
            ALTER TABLE salesforce.contacts OWNER TO {USER};
            CREATE TABLE public.people (id text PRIMARY KEY
                DEFAULT md5(random()::text), first_name text, last_name text, email text,
                note text);
            ALTER TABLE public.people OWNER TO {USER};
            CREATE TABLE public.contacts_archive (LIKE public.people INCLUDING ALL);
            ALTER TABLE public.contacts_archive OWNER TO {USER};""")
        self.pg.sql("VACUUM ANALYZE")
        self.scripts = {}
        for name, text in {
            "select1": "SELECT 1;\n",
            "big": f"SELECT repeat('x', {BIG_WIDTH}) FROM generate_series(1, {BIG_ROWS});\n",
            "ins_synced": "\\set n random(1, 1000000000)\n"
                          "INSERT INTO salesforce.contacts (first_name, last_name) "
                          "VALUES ('bench', 'n' || :n);\n",
            "ins_plain": "\\set n random(1, 1000000000)\n"
                         "INSERT INTO public.people (first_name, last_name) "
                         "VALUES ('bench', 'n' || :n);\n",
            # an ordinary table whose name contains the synced table's: the name scan cannot
            # rule it out, so the statement goes to the SQL parser
            "ins_similar": "\\set n random(1, 1000000000)\n"
                           "INSERT INTO public.contacts_archive (first_name, last_name) "
                           "VALUES ('bench', 'n' || :n);\n",
        }.items():
            path = os.path.join(self.work, name + ".sql")
            with open(path, "w") as f:
                f.write(text)
            self.scripts[name] = path
        m = self.results["meta"]
        m["date_utc"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
        m["cpu"] = cpu_model()
        m["cores"] = os.cpu_count()
        m["kernel"] = platform.release()
        m["mem_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30)
        m["pgbouncer"] = first_line([self.opts.pgbouncer, "--version"])
        m["syncbouncer"] = first_line([self.opts.syncbouncer, "--version"])
        m["syncbouncer_path"] = self.opts.syncbouncer
        m["postgres"] = first_line([os.path.join(PG_BIN, "postgres"), "--version"])
        m["git"] = self.opts.git
        m["duration_s"] = self.opts.duration
        m["scale"] = self.opts.scale
        m["rounds"] = self.opts.rounds

    # -- workloads

    def run_pooling(self):
        for mode in ("session", "transaction"):
            log(f"{mode} pooling")
            poolers = self.start_poolers(mode)
            for c in self.opts.clients:
                self.measure("select", mode, "-S", c, ["-S", *self.cj(c), *self.T()], poolers)
            if mode == "transaction":
                for c in self.opts.clients:
                    self.measure("select", mode, "-S -M prepared", c,
                                 ["-S", "-M", "prepared", *self.cj(c), *self.T()], poolers)
            self.measure("tpcb", mode, "TPC-B (simple)", 10, [*self.cj(10), *self.T()], poolers)
            if mode == "session":
                self.measure("churn", mode, "-C -S", 10, ["-C", "-S", *self.cj(10), *self.T()],
                             poolers)
            self.stop_poolers(poolers)

    def run_workers(self):
        """workers = 1 beside workers = 2 (and pgbouncer, direct), transaction pooling: -S -c 50,
        a pooler-bound load (SELECT 1 from many clients: the backend does next to nothing, so
        the pooler's loop is what the clients wait for), and -C -S -c 10 (a log-in each)."""
        log("workers: 1 and 2 event loops")
        mode = "transaction"
        poolers = self.start_poolers(mode)
        w2 = Pooler("syncbouncer", self.opts.syncbouncer, self.work, self.pg, mode,
                    "workers = 2\n")
        self.poolers.append(w2)
        poolers["syncbouncer-w2"] = w2.start()
        targets = WORKER_TARGETS
        self.measure("workers", mode, "-S", 50, ["-S", *self.cj(50), *self.T()], poolers,
                     targets)
        self.measure("workers", mode, "SELECT 1 (-f)", 100,
                     ["-f", self.scripts["select1"], "-c", "100", "-j", "2", *self.T()],
                     poolers, targets)
        # a log-in per transaction: the pooler's share of the work is largest here
        self.measure("workers", mode, "-C -S", 10, ["-C", "-S", *self.cj(10), *self.T()],
                     poolers, targets)
        self.stop_poolers(poolers)

    def run_big(self):
        log("large result")
        poolers = self.start_poolers("session")
        for target in TARGETS:
            p = poolers.get(target)
            cpu0 = p.cpu_ns() if p else None
            t0 = time.monotonic()
            res = pgbench(self.target_port(target, poolers),
                          ["-f", self.scripts["big"], "-c", "1", "-t", str(self.opts.big_runs)],
                          timeout=600)
            wall = (time.monotonic() - t0)
            row = {"target": target, "queries": self.opts.big_runs, "lat_ms": res["lat_ms"],
                   "aborted": res["aborted"], "wall_s_total": wall,
                   "mb": BIG_ROWS * (BIG_WIDTH + 11) / 1e6}
            if p:
                row["pooler_cpu_s_per_query"] = (p.cpu_ns() - cpu0) / 1e9 / self.opts.big_runs
                row["vmhwm_kb"] = p.status_kb("VmHWM")
                row["vmrss_kb_after"] = p.status_kb("VmRSS")
            self.results["big"].append(row)
            log(f"  big {target:12} {res['lat_ms']} ms/query"
                + (f" VmHWM={row['vmhwm_kb']} kB" if p else ""))
        self.stop_poolers(poolers)

    def run_synced(self):
        log("synced tables: fake Salesforce + a syncbouncer with [synced_tables]")
        fake, url = start_fake_salesforce(FAKE_SF_NODELAY if self.opts.fake_nodelay else FAKE_SF)
        try:
            extra = synced_contacts_config(url, "timeout=10", "")
            mode = "transaction"
            poolers = self.start_poolers(mode)
            synced = Pooler("syncbouncer", self.opts.syncbouncer, self.work, self.pg, mode, extra)
            self.poolers.append(synced)
            poolers["syncbouncer+synced"] = synced.start()
            deadline = time.monotonic() + 30
            while self.pg.sql("SELECT count(*) FROM pg_trigger "
                              "WHERE tgname = 'syncbouncer_guard'") == "0":
                if time.monotonic() > deadline:
                    raise RuntimeError("guard trigger not installed:\n" + synced.output()[-4000:])
                time.sleep(0.1)
            # one write first: the API token is fetched once, outside the measurement
            warm = pgbench(synced.port, ["-f", self.scripts["ins_synced"], "-c", "1", "-t", "1"],
                           timeout=60)
            if warm["aborted"]:
                raise RuntimeError("synced INSERT fails: " + str(warm.get("error"))
                                   + "\n" + synced.output()[-4000:])
            targets = ("pgbouncer", "syncbouncer", "syncbouncer+synced")
            for c in (1, 10):
                self.measure("synced", mode, "-S", c, ["-S", *self.cj(c), *self.T()], poolers,
                             targets)
            self.measure("synced", mode, "TPC-B (simple)", 10, [*self.cj(10), *self.T()],
                         poolers, targets)
            before = self.pg.sql("SELECT count(*) FROM salesforce.contacts")
            self.measure("inserts", mode, "INSERT ordinary table", 10,
                         ["-f", self.scripts["ins_plain"], *self.cj(10), *self.T()], poolers,
                         ("direct", "pgbouncer", "syncbouncer", "syncbouncer+synced"))
            self.measure("inserts", mode, "INSERT contacts_archive", 10,
                         ["-f", self.scripts["ins_similar"], *self.cj(10), *self.T()], poolers,
                         ("syncbouncer", "syncbouncer+synced"))
            self.measure("inserts", mode, "INSERT synced table", 10,
                         ["-f", self.scripts["ins_synced"], *self.cj(10), *self.T()], poolers,
                         ("syncbouncer+synced",))
            after = self.pg.sql("SELECT count(*) FROM salesforce.contacts")
            with urllib.request.urlopen(url + "/_store", timeout=30) as r:
                store = len(json.loads(r.read()).get("Contact", {}))
            self.results["synced_check"] = {
                "rows_in_table": int(after), "rows_before_run": int(before),
                "records_in_fake_api": store,
                "fake_api_cpu_s": proc_cpu_s(fake.pid),
            }
            log(f"  synced check: {self.results['synced_check']}")
            self.stop_poolers(poolers)
        finally:
            fake.terminate()
            fake.wait(10)

    def scram_auth(self, how):
        """traced_run()'s auth for SCRAM log-ins: the plain password or the stored secret."""
        secret = PASSWORD if how == "plain" else self.pg.sql(
            f"SELECT rolpassword FROM pg_authid WHERE rolname = '{SCRAM_USER}'")
        return {"auth_type": "scram-sha-256", "users": {SCRAM_USER: secret},
                "user": SCRAM_USER}

    def run_callgrind(self):
        if not shutil.which("valgrind"):
            log("valgrind not found: instruction counts skipped")
            return
        log("callgrind: instructions per relayed query")
        n1, n2 = self.opts.cg_queries
        for mode, label, args in TRACED:
            row = {"mode": mode, "label": label}
            for kind in ("pgbouncer", "syncbouncer"):
                counts = []
                for n in (n1, n2):
                    counts.append(self.callgrind_count(kind, mode, args, n))
                row[kind] = (counts[1] - counts[0]) / (n2 - n1)
                row[kind + "_totals"] = counts
            self.results["callgrind"].append(row)
            log(f"  {mode:11} {label:24} pgbouncer={row['pgbouncer']:.0f} "
                f"syncbouncer={row['syncbouncer']:.0f} instructions/query")
        # a log-in costs far more than a query: fewer of them tell it as well
        s1, s2 = max(1, n1 // 10), max(2, n2 // 10)
        for mode, label, how in TRACED_SCRAM:
            row = {"mode": mode, "label": label}
            for kind in ("pgbouncer", "syncbouncer"):
                counts = [self.callgrind_count(kind, mode, ["-M", "simple", "-C"], n,
                                               self.scram_auth(how)) for n in (s1, s2)]
                row[kind] = (counts[1] - counts[0]) / (s2 - s1)
                row[kind + "_totals"] = counts
            self.results["callgrind"].append(row)
            log(f"  {mode:11} {label:24} pgbouncer={row['pgbouncer']:.0f} "
                f"syncbouncer={row['syncbouncer']:.0f} instructions/log-in")

    def callgrind_count(self, kind, mode, args, n, auth=None):
        out = "/dev/null"
        if self.opts.cg_out:
            tag = re.sub(r"[^a-z0-9]+", "-", f"{kind} {mode} {' '.join(args)} {n}".lower())
            out = os.path.join(self.opts.cg_out, f"callgrind.{tag.strip('-')}.out")
        p = self.traced_run(kind, mode, args, n, ["valgrind", "--tool=callgrind",
                                                  "--callgrind-out-file=" + out], auth)
        with open(p.out_path, errors="replace") as f:
            m = re.search(r"Collected : (\d+)", f.read())
        if not m:
            raise RuntimeError(f"no callgrind total in {p.out_path}")
        return int(m.group(1))

    def traced_run(self, kind, mode, args, n, wrapper, auth=None):
        """A fresh pooler under wrapper relays n SELECT 1 of one pgbench client, then stops.
        auth: {"auth_type", "users" (the auth_file), "user" (pgbench's)}, default md5 as app."""
        auth = auth or {}
        binary = self.opts.pgbouncer if kind == "pgbouncer" else self.opts.syncbouncer
        p = Pooler(kind, binary, self.work, self.pg, mode, wrapper=wrapper,
                   auth_type=auth.get("auth_type", "md5"), users=auth.get("users"))
        self.poolers.append(p)
        p.start(timeout=120)
        res = pgbench(p.port, ["-f", self.scripts["select1"], *args, "-c", "1", "-t", str(n)],
                      timeout=900, user=auth.get("user", USER))
        p.stop()
        if res["aborted"]:
            raise RuntimeError(f"{wrapper[0]} run of {kind} failed: {res.get('error')}")
        return p

    def run_syscalls(self):
        if not shutil.which("strace"):
            log("strace not found: system call counts skipped")
            return
        log("strace: system calls per relayed query")
        n1, n2 = self.opts.cg_queries
        for mode, label, args in TRACED:
            row = {"mode": mode, "label": label}
            for kind in ("pgbouncer", "syncbouncer"):
                counts = []
                for n in (n1, n2):
                    out = os.path.join(self.work, f"strace-{kind}-{mode}-{n}.txt")
                    self.traced_run(kind, mode, args, n, ["strace", "-c", "-f", "-o", out])
                    counts.append(strace_counts(out))
                per = {}
                for name in set(counts[0]) | set(counts[1]):
                    d = (counts[1].get(name, 0) - counts[0].get(name, 0)) / (n2 - n1)
                    if d >= 0.05:
                        per[name] = d
                row[kind] = per
            self.results["syscalls"].append(row)
            log(f"  {mode:11} {label:24} pgbouncer={row['pgbouncer']} "
                f"syncbouncer={row['syncbouncer']}")

    def run_kernel(self):
        """Where each pooler's CPU goes at -S -c 50 in transaction pooling, beside the CPU of
        PostgreSQL's backends and of pgbench over the same run: the pooler's user and system
        time per transaction (/proc/PID/stat) and its context switches, and what a pooler
        that cost no CPU at all could give at most (every process's CPU per transaction,
        less the pooler's), for the tps and CPU targets."""
        log("kernel: the pooler's user and system time per transaction, -S -c 50")
        mode = "transaction"
        poolers = self.start_poolers(mode)
        args = ["-S", *self.cj(50), *self.T()]
        pg_pid = self.pg.proc.pid
        for rnd in range(self.opts.rounds):
            for kind in ("pgbouncer", "syncbouncer"):
                p = poolers[kind]
                load = os.getloadavg()[0]
                u0, s0, cs0 = proc_times(p.proc.pid)
                pg0 = children_cpu_s(pg_pid)
                c0 = os.times()
                res = pgbench(p.port, args, timeout=self.opts.duration * 4 + 120)
                c1 = os.times()
                pg1 = children_cpu_s(pg_pid)
                u1, s1, cs1 = proc_times(p.proc.pid)
                if res["aborted"] or not res["txns"]:
                    raise RuntimeError(f"{kind}: pgbench failed: {res.get('error')}")
                n = res["txns"]
                row = {"target": kind, "round": rnd, "loadavg_before": load, "tps": res["tps"],
                       "user_us": (u1 - u0) * 1e6 / n, "sys_us": (s1 - s0) * 1e6 / n,
                       "switches": (cs1 - cs0) / n, "pg_us": (pg1 - pg0) * 1e6 / n,
                       "pgbench_us": ((c1.children_user + c1.children_system)
                                      - (c0.children_user + c0.children_system)) * 1e6 / n}
                self.results["kernel"].append(row)
                log(f"  r{rnd} {kind:12} load={load:4.1f} tps={res['tps']:9.1f} "
                    f"user={row['user_us']:5.2f} sys={row['sys_us']:5.2f}us/txn "
                    f"switches={row['switches']:4.2f} pg={row['pg_us']:5.1f} "
                    f"pgbench={row['pgbench_us']:5.1f}us/txn")
        self.stop_poolers(poolers)

    def run_idle(self):
        """RSS per idle client: the pooler's VmRSS before and after opening N logged-in
        clients that then send nothing (transaction pooling: they hold no server)."""
        n = self.opts.idle_clients
        log(f"idle clients: {n} per pooler")
        for kind in ("pgbouncer", "syncbouncer"):
            binary = self.opts.pgbouncer if kind == "pgbouncer" else self.opts.syncbouncer
            p = Pooler(kind, binary, self.work, self.pg, "transaction",
                       max_client_conn=n + 100)
            self.poolers.append(p)
            p.start()
            socks = []
            try:
                # one log-in and a query first, so that the pool and its welcome exist
                res = pgbench(p.port, ["-f", self.scripts["select1"], "-c", "1", "-t", "1"],
                              timeout=120)
                if res["aborted"]:
                    raise RuntimeError(f"{kind}: first log-in failed: {res.get('error')}")
                time.sleep(0.5)
                rss0 = p.status_kb("VmRSS")
                for _ in range(n):
                    socks.append(idle_login(p.port))
                time.sleep(1)
                rss1 = p.status_kb("VmRSS")
                row = {"target": kind, "clients": n, "rss_before_kb": rss0,
                       "rss_after_kb": rss1, "bytes_per_client": (rss1 - rss0) * 1024 / n}
                self.results["idle"].append(row)
                log(f"  {kind:12} VmRSS {rss0} kB -> {rss1} kB: "
                    f"{row['bytes_per_client']:.0f} B per idle client")
            finally:
                for sk in socks:
                    sk.close()
                p.stop()

    def cleanup(self):
        for p in self.poolers:
            try:
                p.stop()
            except Exception:  # noqa: BLE001 - best effort at exit
                pass
        if self.pg:
            self.pg.stop()


def idle_login(port):
    """A client logged in over the protocol by hand (md5), left idle; returns its socket."""
    sk = socket.create_connection(("127.0.0.1", port), timeout=30)
    body = struct.pack("!I", 196608) + f"user\0{USER}\0database\0{DB}\0\0".encode()
    sk.sendall(struct.pack("!I", len(body) + 4) + body)
    buf = b""
    while True:
        while len(buf) < 5 or len(buf) < 1 + struct.unpack("!I", buf[1:5])[0]:
            chunk = sk.recv(65536)
            if not chunk:
                raise RuntimeError("pooler closed the connection during the log-in")
            buf += chunk
        typ, ln = buf[:1], struct.unpack("!I", buf[1:5])[0]
        payload, buf = buf[5:1 + ln], buf[1 + ln:]
        if typ == b"R":
            code = struct.unpack("!I", payload[:4])[0]
            if code == 5:
                inner = hashlib.md5((PASSWORD + USER).encode()).hexdigest().encode()
                pw = b"md5" + hashlib.md5(inner + payload[4:8]).hexdigest().encode() + b"\0"
                sk.sendall(b"p" + struct.pack("!I", len(pw) + 4) + pw)
            elif code != 0:
                raise RuntimeError(f"unexpected authentication request {code}")
        elif typ == b"E":
            raise RuntimeError("log-in refused: " + payload.decode(errors="replace"))
        elif typ == b"Z":
            return sk


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


_libc = ctypes.CDLL(None, use_errno=True)


def die_with_parent():
    """preexec_fn: the child gets SIGKILL when this script dies, so nothing is left running."""
    _libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG


def start_fake_salesforce(script):
    """Starts a fake Salesforce (script) on a free port: (its process, its base URL)."""
    port = free_port()
    fake = subprocess.Popen([PY, script, "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
    line = fake.stdout.readline().decode()
    if "listening" not in line:
        fake.kill()
        raise RuntimeError("fake Salesforce did not start: " + line)
    return fake, f"http://127.0.0.1:{port}"


def synced_contacts_config(url, api_extra, table_extra):
    """The [apis] and [synced_tables] sections that sync DB's salesforce.contacts with the fake
    Salesforce at url."""
    return ("\n[apis]\n"
            f"salesforce = type=salesforce base_url={url} api_version=v59.0 "
            f"auth=oauth2 token_url={url}/services/oauth2/token "
            "client_id=test-client-id client_secret=test-client-secret "
            f"refresh_token=test-refresh-token {api_extra}\n\n"
            "[synced_tables]\n"
            f"{DB}.salesforce.contacts = api=salesforce object=Contact user={USER} "
            f"columns='note:Description' {table_extra}\n")


def strace_counts(path):
    """{syscall: calls} from an `strace -c` summary."""
    counts = {}
    with open(path) as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 5 and fields[0][0].isdigit() and fields[-1] != "total":
                counts[fields[-1]] = int(fields[3])
    return counts


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def first_line(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        return "?"


def git_describe():
    try:
        return subprocess.run(["git", "-C", SRC_DIR, "describe", "--always", "--dirty"],
                              capture_output=True, text=True).stdout.strip() or "?"
    except OSError:
        return "?"


def proc_cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------------------ report


def fmt(v, digits=0):
    if v is None:
        return "–"
    return f"{v:,.{digits}f}"


def ratio(a, b):
    if not a or not b:
        return "–"
    return f"{a / b:.2f}"


def cell(res, key="tps", digits=0):
    if res is None:
        return "–"
    if res["aborted"]:
        return "fails"
    return fmt(res.get(key), digits)


def report(results):
    m = results["meta"]
    runs = results["runs"]
    out = []
    w = out.append
    w(f"Measured {m['date_utc']} UTC on {m['cores']} cores ({m['cpu']}), {m['mem_gib']} GiB, "
      f"Linux {m['kernel']}; {m['postgres']}; {m['pgbouncer']}; {m['syncbouncer']} "
      f"(built from {m['git']}). pgbench -T {m['duration_s']}, scale {m['scale']}, "
      f"{m['rounds']} round(s) per point.")
    loads = [r["loadavg_before"] for r in runs if "loadavg_before" in r]
    if loads:
        w("")
        w(f"1-minute load average before each pgbench run: median {statistics.median(loads):.1f},"
          f" min {min(loads):.1f}, max {max(loads):.1f} (the cores were shared with other work).")
    w("")
    def find(group, mode, label, clients, target):
        """The median over the rounds of one target at one point (failed if any round failed)."""
        rs = [r for r in runs if (r["group"], r["mode"], r["label"], r["clients"], r["target"])
              == (group, mode, label, clients, target)]
        if not rs:
            return None
        if any(r["aborted"] for r in rs):
            return {"aborted": True}
        med = {"aborted": False, "rounds": rs}
        for key in ("tps", "lat_ms", "pooler_cpu_us_per_txn"):
            vals = [r[key] for r in rs if r.get(key) is not None]
            med[key] = statistics.median(vals) if vals else None
        return med

    def spread(key, a, b):
        """The per-round ratios a/b of tps, as 'x–y' (each round ran a and b back to back)."""
        ra, rb = find(*key, a), find(*key, b)
        if not ra or not rb or ra["aborted"] or rb["aborted"] or len(ra["rounds"]) < 2:
            return ""
        rat = sorted(x["tps"] / y["tps"] for x, y in zip(ra["rounds"], rb["rounds"])
                     if x["tps"] and y["tps"])
        return f" ({rat[0]:.2f}–{rat[-1]:.2f})" if rat else ""

    w("### Targets")
    w("")
    w("Each row of the performance targets with what this run measured: the three targets' "
      "values where they apply, the syncbouncer/pgbouncer ratio and the goal. \"not in this "
      "run\": the part of run_bench that measures it was not run (`--only`); \"not measured\": "
      "run_bench has no workload for it.")
    w("")
    w("| target | direct | pgbouncer | syncbouncer | sb/pgb | goal | met |")
    w("|---|--:|--:|--:|--:|--:|---|")

    def ok(v):
        return v is not None and not v["aborted"]

    def target_row(name, d, p, s, digits, goal_op, goal):
        """d, p, s: numbers (None: not measured); the ratio is s / p."""
        r = s / p if s is not None and p else None
        met = "–" if r is None else ("yes" if (r <= goal if goal_op == "≤" else r >= goal)
                                     else "no")
        w(f"| {name} | {fmt(d, digits)} | {fmt(p, digits)} | {fmt(s, digits)} | "
          f"{'–' if r is None else f'{r:.2f}'} | {goal_op} {goal} | {met} |")

    def missing(name, goal, why):
        w(f"| {name} | – | – | – | – | {goal} | {why} |")

    def point(mode, label, clients, key):
        vals = []
        for t in TARGETS:
            v = find("select" if label.startswith("-S") else "churn", mode, label, clients, t)
            vals.append(v[key] if ok(v) else None)
        return vals

    have_pool = any(r["group"] in ("select", "churn") for r in runs)
    if have_pool:
        d, p, s = point("transaction", "-S", 50, "pooler_cpu_us_per_txn")
        target_row("-S -c 50 transaction: pooler CPU µs/txn", None, p, s, 1, "≤", 0.7)
        d, p, s = point("transaction", "-S", 50, "tps")
        target_row("-S -c 50 transaction: tps", d, p, s, 0, "≥", 1.15)
        for mode in ("session", "transaction"):
            d, p, s = point(mode, "-S", 1, "lat_ms")
            if d is not None and p is not None and s is not None and p > d:
                target_row(f"-S -c 1 {mode}: latency added over direct (ms)", None,
                           p - d, s - d, 3, "≤", 0.7)
            else:
                missing(f"-S -c 1 {mode}: latency added over direct (ms)", "≤ 0.7",
                        "not in this run" if None in (d, p, s) else
                        "no figure: direct was not faster than pgbouncer in this run")
        d, p, s = point("session", "-C -S", 10, "tps")
        target_row("-C -S -c 10: tps (a log-in per transaction)", d, p, s, 0, "≥", 1.1)
        d, p, s = point("transaction", "-S -M prepared", 1, "tps")
        target_row("-S -M prepared -c 1 transaction: tps (vs pgbouncer 1.18)", d, p, s, 0,
                   "≥", 1.15)
    else:
        for name, goal in (("-S -c 50 transaction: pooler CPU µs/txn", "≤ 0.7"),
                           ("-S -c 50 transaction: tps", "≥ 1.15"),
                           ("-S -c 1: latency added over direct", "≤ 0.7"),
                           ("-C -S -c 10: tps", "≥ 1.1"),
                           ("-S -M prepared -c 1 transaction: tps", "≥ 1.15")):
            missing(name, goal, "not in this run")
    cg = {(r["mode"], r["label"]): r for r in results["callgrind"]}
    for (mode, label), name, goal in (
            (("session", "SELECT 1 (simple)"), "instructions per relayed query, session", 0.7),
            (("transaction", "SELECT 1 (simple)"), "instructions per relayed query, transaction",
             0.7),
            (("transaction", "SELECT 1 (-M prepared)"),
             "instructions per relayed query, transaction -M prepared", 0.7),
            (("session", "-C: log-in (md5), SELECT 1, log-out"),
             "instructions per log-in (md5, with its query and log-out)", 1.0),
            (("session", TRACED_SCRAM[0][1]),
             "instructions per log-in (SCRAM, plain password in the auth_file)", 1.0),
            (("session", TRACED_SCRAM[1][1]),
             "instructions per log-in (SCRAM, SCRAM secret in the auth_file)", 1.0)):
        r = cg.get((mode, label))
        if r:
            target_row(name, None, r["pgbouncer"], r["syncbouncer"], 0, "≤", goal)
        else:
            missing(name, f"≤ {goal}", "not in this run")
    big = {r["target"]: r for r in results["big"]}
    if big.get("pgbouncer", {}).get("vmhwm_kb") and big.get("syncbouncer", {}).get("vmhwm_kb"):
        target_row("100 MB result: pooler peak RSS (MiB)", None,
                   big["pgbouncer"]["vmhwm_kb"] / 1024, big["syncbouncer"]["vmhwm_kb"] / 1024,
                   1, "≤", 1.0)
    else:
        missing("100 MB result: pooler peak RSS", "≤ 1.0", "not in this run")
    idle = {r["target"]: r for r in results["idle"]}
    if "pgbouncer" in idle and "syncbouncer" in idle:
        target_row(f"{idle['syncbouncer']['clients']:,} idle clients: RSS per idle client "
                   "(bytes)", None, idle["pgbouncer"]["bytes_per_client"],
                   idle["syncbouncer"]["bytes_per_client"], 0, "≤", 1.0)
    else:
        missing("10,000 idle clients: RSS per idle client", "≤ 1.0", "not in this run")
    lat = results.get("synclat", {}).get("latency", [])
    if lat:
        for r in lat:
            met = r["added_p50"] <= 2000 and r["added_p99"] <= 5000
            w(f"| synced {r['kind'].upper()}, fake answering after {r['delay_ms']} ms: latency "
              "added over direct write + API time, p50 / p99 (ms) | – | – | "
              f"{r['added_p50'] / 1000:.2f} / {r['added_p99'] / 1000:.2f} | – | "
              f"p50 ≤ 2, p99 ≤ 5 | {'yes' if met else 'no'} |")
        for r in results["synclat"]["throughput"]:
            if r["sb_tps"] and r["fake_alone"]:
                w(f"| {results['synclat']['writers']} synced writers, fake after "
                  f"{r['delay_ms']} ms: writes/s through syncbouncer of the fake's own "
                  f"requests/s | – | – | {r['sb_tps']:.0f} of {r['fake_alone']:.0f} "
                  f"({r['sb_tps'] / r['fake_alone']:.2f}) | – | the fake is the limit | – |")
    else:
        missing("synced writes: latency added over direct insert + API time", "p50 ≤ 2 ms, "
                "p99 ≤ 5 ms", "not in this run")
    w("")

    points = []
    for r in runs:
        key = (r["group"], r["mode"], r["label"], r["clients"])
        if key not in points:
            points.append(key)

    w("### Throughput and latency")
    w("")
    w("tps (higher is better); latency average in ms; pooler CPU = CPU time the pooler "
      "process used per transaction (µs, lower is better).")
    w("")
    w("| workload | mode | -c | direct tps | pgbouncer tps | syncbouncer tps | sb/pgb | "
      "sb/direct | latency ms direct / pgb / sb | pooler CPU µs/txn pgb / sb |")
    w("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|")
    for key in points:
        if key[0] not in ("select", "tpcb", "churn"):
            continue
        d, p, s = (find(*key, t) for t in TARGETS)
        st = s["tps"] if s and not s["aborted"] else None
        pt = p["tps"] if p and not p["aborted"] else None
        dt = d["tps"] if d and not d["aborted"] else None
        w(f"| {key[2]} | {key[1]} | {key[3]} | {cell(d)} | {cell(p)} | {cell(s)} | "
          f"{ratio(st, pt)}{spread(key, 'syncbouncer', 'pgbouncer')} | {ratio(st, dt)} | "
          f"{cell(d, 'lat_ms', 3)} / {cell(p, 'lat_ms', 3)}"
          f" / {cell(s, 'lat_ms', 3)} | {cell(p, 'pooler_cpu_us_per_txn', 1)} / "
          f"{cell(s, 'pooler_cpu_us_per_txn', 1)} |")
    failures = [r for r in runs if r["aborted"]]
    if failures:
        w("")
        w("Runs that failed (pgbench error):")
        w("")
        for r in failures:
            w(f"- {r['target']}, {r['mode']}, {r['label']} -c {r['clients']}: "
              f"`{r.get('error', '?')}`")
    w("")

    wpoints = [k for k in points if k[0] == "workers"]
    if wpoints:
        w("### Workers (one event loop and two)")
        w("")
        w("The same syncbouncer with `workers = 1` and `workers = 2`, transaction pooling "
          "(default_pool_size 20), pgbench -j 2. tps; pooler CPU µs/txn in brackets.")
        w("")
        w("| workload | -c | direct | pgbouncer | syncbouncer workers=1 | workers=2 | "
          "w2/w1 | w2/pgb |")
        w("|---|--:|--:|--:|--:|--:|--:|--:|")
        for key in wpoints:
            d, p, s1, s2 = (find(*key, t) for t in WORKER_TARGETS)

            def tps(v):
                return v["tps"] if ok(v) else None

            def both(v):
                return f"{cell(v)} ({cell(v, 'pooler_cpu_us_per_txn', 1)})" if v else "–"
            w(f"| {key[2]} | {key[3]} | {cell(d)} | {both(p)} | {both(s1)} | {both(s2)} | "
              f"{ratio(tps(s2), tps(s1))}{spread(key, 'syncbouncer-w2', 'syncbouncer')} | "
              f"{ratio(tps(s2), tps(p))} |")
        w("")

    if results["big"]:
        w("### Large result (one SELECT of about "
          f"{results['big'][0]['mb']:.0f} MB, {BIG_ROWS} rows, session pooling)")
        w("")
        w("| target | s per query | MB/s | pooler peak RSS (VmHWM) | pooler CPU s/query |")
        w("|---|--:|--:|--:|--:|")
        base = {r["target"]: r for r in results["big"]}
        for r in results["big"]:
            sec = r["lat_ms"] / 1000 if r["lat_ms"] else None
            w(f"| {r['target']} | {fmt(sec, 3)} | {fmt(r['mb'] / sec if sec else None, 0)} | "
              + (f"{r['vmhwm_kb'] / 1024:.1f} MiB" if r.get("vmhwm_kb") else "–")
              + f" | {fmt(r.get('pooler_cpu_s_per_query'), 3)} |")
        s, p, d = base.get("syncbouncer"), base.get("pgbouncer"), base.get("direct")
        if s and p and d and s["lat_ms"] and p["lat_ms"] and d["lat_ms"]:
            w("")
            w(f"Wall time ratio syncbouncer/pgbouncer {s['lat_ms'] / p['lat_ms']:.2f}, "
              f"syncbouncer/direct {s['lat_ms'] / d['lat_ms']:.2f}.")
        w("")

    if results["kernel"]:
        w("### Where the pooler's CPU goes (-S -c 50, transaction pooling)")
        w("")
        w("Per transaction, medians of the rounds: the pooler's user and system time and its "
          "context switches (/proc/PID/stat and status, every thread), the CPU of PostgreSQL's "
          "backends and of pgbench over the same run. The last rows are bounds, not "
          "measurements: the tps a pooler that cost no CPU at all could reach on these cores "
          "(all the CPU per transaction, less the pooler's), and the CPU share syncbouncer "
          "would have with no user-space time at all (its system time alone over "
          "pgbouncer's whole time).")
        w("")
        med = {}
        for kind in ("pgbouncer", "syncbouncer"):
            rows_k = [r for r in results["kernel"] if r["target"] == kind]
            med[kind] = {k: statistics.median(r[k] for r in rows_k)
                         for k in ("tps", "user_us", "sys_us", "switches", "pg_us",
                                   "pgbench_us")}
        p, s = med["pgbouncer"], med["syncbouncer"]
        w("| per transaction | pgbouncer | syncbouncer | sb/pgb |")
        w("|---|--:|--:|--:|")
        for key, name, nd in (("tps", "tps", 0), ("user_us", "pooler user µs", 2),
                              ("sys_us", "pooler system µs", 2),
                              ("switches", "pooler context switches", 2),
                              ("pg_us", "PostgreSQL backends µs", 1),
                              ("pgbench_us", "pgbench µs", 1)):
            w(f"| {name} | {p[key]:,.{nd}f} | {s[key]:,.{nd}f} | "
              f"{s[key] / p[key]:.2f} |" if p[key] else f"| {name} | – | – | – |")
        for kind, m in (("pgbouncer", p), ("syncbouncer", s)):
            total = m["user_us"] + m["sys_us"] + m["pg_us"] + m["pgbench_us"]
            rest = total - m["user_us"] - m["sys_us"]
            w(f"| the most a free pooler could give over {kind}: tps × "
              f"{total:.1f} / {rest:.1f} µs | | | {total / rest:.2f}× |" if rest > 0 else "")
        ptotal = p["user_us"] + p["sys_us"]
        if ptotal:
            w(f"| syncbouncer's CPU with no user-space time, over pgbouncer's | | | "
              f"{s['sys_us'] / ptotal:.2f} |")
            # the CPU per transaction 1.15x pgbouncer's tps leaves the pooler, all else equal
            need = (ptotal + p["pg_us"] + p["pgbench_us"]) / 1.15 - p["pg_us"] - p["pgbench_us"]
            w(f"| pooler CPU per transaction that 1.15× pgbouncer's tps leaves (the rest as "
              f"measured) | {ptotal:.1f} µs | {max(need, 0):.1f} µs | {max(need, 0) / ptotal:.2f} |")
        w("")

    if results["idle"]:
        w(f"### Idle clients ({results['idle'][0]['clients']:,} logged-in clients that send "
          "nothing, transaction pooling)")
        w("")
        w("| target | VmRSS before | VmRSS with the clients | bytes per idle client |")
        w("|---|--:|--:|--:|")
        for r in results["idle"]:
            w(f"| {r['target']} | {r['rss_before_kb'] / 1024:.1f} MiB | "
              f"{r['rss_after_kb'] / 1024:.1f} MiB | {r['bytes_per_client']:,.0f} |")
        w("")

    syn = [k for k in points if k[0] in ("synced", "inserts")]
    if syn:
        w("### Synced tables: the fast path and the mutation path (transaction pooling)")
        w("")
        w("`syncbouncer+synced` has `[apis]` and `[synced_tables]` (bench.salesforce.contacts "
          "→ the fake Salesforce, answering at once) for the same database; `syncbouncer` is "
          "the plain config of the other rows.")
        w("")
        w("| workload | -c | direct | pgbouncer | syncbouncer | syncbouncer+synced | "
          "synced/plain | synced/pgb | pooler CPU µs/txn sb / sb+synced |")
        w("|---|--:|--:|--:|--:|--:|--:|--:|--:|")
        for key in syn:
            d, p, s, y = (find(*key, t) for t in
                          ("direct", "pgbouncer", "syncbouncer", "syncbouncer+synced"))
            yt = y["tps"] if y and not y["aborted"] else None
            st = s["tps"] if s and not s["aborted"] else None
            pt = p["tps"] if p and not p["aborted"] else None
            w(f"| {key[2]} | {key[3]} | {cell(d)} | {cell(p)} | {cell(s)} | {cell(y)} | "
              f"{ratio(yt, st)}{spread(key, 'syncbouncer+synced', 'syncbouncer')} | "
              f"{ratio(yt, pt)} | {cell(s, 'pooler_cpu_us_per_txn', 1)} / "
              f"{cell(y, 'pooler_cpu_us_per_txn', 1)} |")
        chk = results.get("synced_check") or {}
        if chk:
            w("")
            w(f"After the run: {chk['rows_in_table']} rows in salesforce.contacts, "
              f"{chk['records_in_fake_api']} records in the fake API's store (they must agree); "
              f"the fake API (Python) used {chk['fake_api_cpu_s']:.1f} s of CPU.")
        w("")

    if results.get("synclat"):
        import bench_synced_writes
        bench_synced_writes.report(results["synclat"], w)
    if results["callgrind"]:
        w("### Instructions per relayed query (valgrind --tool=callgrind)")
        w("")
        w("Instructions executed by the pooler process per `SELECT 1` of one client (for "
          "`-C`: per connection, which logs in, runs it and logs out): (total for N2 "
          "transactions − total for N1) / (N2 − N1), so start-up cancels out. Repeatable to "
          "about a per cent; independent of machine load. Counts user-space instructions "
          "only: the kernel's share (system calls) is in the next table.")
        w("")
        w("| mode | query | pgbouncer | syncbouncer | sb/pgb |")
        w("|---|---|--:|--:|--:|")
        for r in results["callgrind"]:
            w(f"| {r['mode']} | {r['label']} | {r['pgbouncer']:,.0f} | {r['syncbouncer']:,.0f} | "
              f"{r['syncbouncer'] / r['pgbouncer']:.2f} |")
        w("")
    if results["syscalls"]:
        w("### System calls per relayed query (strace -c)")
        w("")
        w("Same method as above: the difference between two runs of N1 and N2 transactions, "
          "one client, divided by N2 − N1.")
        w("")
        w("| mode | query | pgbouncer | syncbouncer |")
        w("|---|---|---|---|")
        for r in results["syscalls"]:
            def calls(per):
                total = sum(per.values())
                parts = ", ".join(f"{k} {v:.1f}" for k, v in
                                  sorted(per.items(), key=lambda kv: -kv[1]))
                return f"**{total:.1f}**: {parts}"
            w(f"| {r['mode']} | {r['label']} | {calls(r['pgbouncer'])} | "
              f"{calls(r['syncbouncer'])} |")
        w("")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--syncbouncer", default=os.environ.get("SB_BIN", DEFAULT_SB),
                    help=f"syncbouncer binary (default $SB_BIN or {DEFAULT_SB})")
    ap.add_argument("--pgbouncer", default=DEFAULT_PGB, help=f"default {DEFAULT_PGB}")
    ap.add_argument("-T", "--duration", type=int, default=15, help="seconds per pgbench run")
    ap.add_argument("--rounds", type=int, default=1,
                    help="repeat each measurement point this often; report medians (default 1)")
    ap.add_argument("--clients", default="1,10,50", help="client counts for -S (default 1,10,50)")
    ap.add_argument("--scale", type=int, default=10, help="pgbench scale factor (default 10)")
    ap.add_argument("--big-runs", type=int, default=3, help="large-result queries per target")
    ap.add_argument("--cg-queries", default="1000,11000",
                    help="N1,N2 queries for the callgrind difference (default 1000,11000)")
    ap.add_argument("--cg-out", metavar="DIR",
                    help="keep the callgrind profiles in DIR (writable by postgres), for "
                         "callgrind_annotate")
    ap.add_argument("--only",
                    default="pooling,workers,big,synced,callgrind,syscalls,kernel,idle,synclat",
                    help="comma-separated parts to run (default all: pooling,workers,big,"
                         "synced,callgrind,syscalls,kernel,idle,synclat)")
    ap.add_argument("--idle-clients", type=int, default=10000,
                    help="idle clients per pooler for the RSS-per-client measurement")
    ap.add_argument("--fake-nagle", dest="fake_nodelay", action="store_false",
                    help="run the fake Salesforce as it is (Nagle on: ~40 ms per API call)")
    ap.add_argument("--built-from", default="",
                    help="what the syncbouncer binary was built from, for the report "
                         "(e.g. a commit); default: git describe of this source tree")
    import bench_synced_writes
    bench_synced_writes.add_options(ap)
    ap.add_argument("--output", help="write the Markdown report here too")
    ap.add_argument("--json", help="write the raw results as JSON here")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    opts = ap.parse_args()
    opts.clients = [int(x) for x in opts.clients.split(",")]
    opts.cg_queries = [int(x) for x in opts.cg_queries.split(",")]
    opts.delays = [int(x) for x in str(opts.delays).split(",")]
    parts = set(opts.only.split(","))
    for b in (opts.syncbouncer, opts.pgbouncer):
        if not os.access(b, os.X_OK):
            sys.exit(f"not an executable: {b}")
    # opened before dropping root: the report may go into the source tree
    out_md = open(opts.output, "w") if opts.output else None
    out_json = open(opts.json, "w") if opts.json else None
    git = opts.built_from or git_describe()
    drop_root()
    work = tempfile.mkdtemp(prefix="sb-bench-")
    opts.git = git
    bench = Bench(opts, work)
    try:
        bench.setup()
        if "pooling" in parts:
            bench.run_pooling()
        if "workers" in parts:
            bench.run_workers()
        if "big" in parts:
            bench.run_big()
        if "synced" in parts:
            bench.run_synced()
        if "callgrind" in parts:
            bench.run_callgrind()
        if "syscalls" in parts:
            bench.run_syscalls()
        if "kernel" in parts:
            bench.run_kernel()
        if "idle" in parts:
            bench.run_idle()
        if "synclat" in parts:
            import bench_synced_writes
            bench.results["synclat"] = bench_synced_writes.run(bench.pg, opts, work)
    finally:
        bench.cleanup()
        if opts.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    text = report(bench.results)
    print(text)
    if out_md:
        out_md.write(text + "\n")
        out_md.close()
    if out_json:
        json.dump(bench.results, out_json, indent=1)
        out_json.close()


if __name__ == "__main__":
    main()
