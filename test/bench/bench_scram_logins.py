#!/usr/bin/python3
"""SCRAM logins per second: syncbouncer beside pgbouncer, in one run.

A throwaway PostgreSQL cluster (initdb in a temporary directory, a free port below 30000) with
a role whose password PostgreSQL stores as a SCRAM secret; both poolers get that secret, copied
from pg_authid, in their auth_file and auth_type = scram-sha-256, so that each client login is a
full SCRAM exchange with the pooler and each server login reuses the client's proof
(ClientKey/ServerKey pass-through). The load is `pgbench -C` running `SELECT 1` (a new connection,
hence a new login, for every transaction) in session pooling; with -C pgbench's tps is logins per second.
Targets are measured one after the other in each round, so that drift on a shared machine hits
both alike; the report gives the median logins/s of each and the per-round ratios.

Not a test: nothing here passes or fails on speed. Run as root (drops to the postgres OS user)
or as a user that can run initdb:

    test/bench/bench_scram_logins.py --syncbouncer /tmp/build-bench/syncbouncer --rounds 3
"""

import argparse
import os
import pwd
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

PG_BIN = os.environ.get("SB_PG_BIN", "/usr/lib/postgresql/15/bin")


def drop_root():
    if os.geteuid() != 0:
        return
    pw = pwd.getpwnam("postgres")
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)
    os.environ["HOME"] = pw.pw_dir


def free_port():
    """A free port below 30000 (the ephemeral range is left to the kernel), in SB_PORTS if set."""
    low, high = (int(p) for p in os.environ.get("SB_PORTS", "20000-29999").split("-"))
    while True:
        p = random.randint(low, high)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p))
                return p
            except OSError:
                continue


def wait_port(port, proc, what, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited at start")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{what} does not listen after {timeout}s")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--syncbouncer", default=os.environ.get("SB_BIN",
                                                            "/tmp/build-bench/syncbouncer"))
    ap.add_argument("--pgbouncer", default="/usr/sbin/pgbouncer")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("-T", "--seconds", type=int, default=10)
    ap.add_argument("-c", "--clients", type=int, default=4)
    args = ap.parse_args()
    for b in (args.syncbouncer, args.pgbouncer):
        if not os.access(b, os.X_OK):
            sys.exit(f"{b}: not an executable")
    drop_root()
    base = tempfile.mkdtemp(prefix="sb-bench-scram-")
    procs = []
    try:
        pgport = free_port()
        datadir = os.path.join(base, "data")
        subprocess.run([os.path.join(PG_BIN, "initdb"), "-D", datadir, "-U", "postgres",
                        "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync"],
                       check=True, capture_output=True)
        with open(os.path.join(datadir, "postgresql.conf"), "a") as f:
            f.write(f"listen_addresses = '127.0.0.1'\nunix_socket_directories = '{base}'\n"
                    "fsync = off\nmax_connections = 100\n")
        pg = subprocess.Popen([os.path.join(PG_BIN, "postgres"), "-D", datadir, "-p",
                               str(pgport)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
        procs.append(pg)
        wait_port(pgport, pg, "postgres")
        time.sleep(0.5)

        def psql(sql):
            return subprocess.run(["psql", "-X", "-At", "-h", base, "-p", str(pgport), "-U",
                                   "postgres", "-c", sql], check=True, capture_output=True,
                                  text=True).stdout.strip()

        psql("SET password_encryption = 'scram-sha-256'; "
             "CREATE ROLE bench LOGIN PASSWORD 'benchpass'")
        psql("CREATE DATABASE bench OWNER bench")
        secret = psql("select rolpassword from pg_authid where rolname = 'bench'")
        assert secret.startswith("SCRAM-SHA-256$")

        targets = {}
        for name, binary in (("pgbouncer", args.pgbouncer), ("syncbouncer", args.syncbouncer)):
            work = os.path.join(base, name)
            os.mkdir(work)
            port = free_port()
            with open(os.path.join(work, "userlist.txt"), "w") as f:
                f.write(f'"bench" "{secret}"\n')
            with open(os.path.join(work, "bouncer.ini"), "w") as f:
                f.write(f"[databases]\nbench = host=127.0.0.1 port={pgport} dbname=bench\n"
                        f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n"
                        f"unix_socket_dir =\nauth_type = scram-sha-256\n"
                        f"auth_file = {work}/userlist.txt\nlogfile = {work}/log\n"
                        "pool_mode = session\ndefault_pool_size = 20\n"
                        "max_client_conn = 200\nlog_connections = 0\n"
                        "log_disconnections = 0\n")
            p = subprocess.Popen([binary, os.path.join(work, "bouncer.ini")],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(p)
            wait_port(port, p, name)
            targets[name] = port

        script = os.path.join(base, "select1.sql")
        with open(script, "w") as f:
            f.write("SELECT 1;\n")
        env = dict(os.environ, PGPASSWORD="benchpass", PGSSLMODE="disable")
        results = {name: [] for name in targets}
        for rnd in range(args.rounds):
            for name, port in targets.items():
                out = subprocess.run(
                    ["pgbench", "-n", "-C", "-f", script, "-c", str(args.clients), "-j", "2", "-T",
                     str(args.seconds), "-h", "127.0.0.1", "-p", str(port), "-U", "bench",
                     "bench"], env=env, capture_output=True, text=True)
                tps = None
                for line in out.stdout.splitlines():
                    if line.startswith("tps = "):
                        tps = float(line.split()[2])
                if tps is None or out.returncode != 0:
                    sys.exit(f"{name}: pgbench failed:\n{out.stdout}\n{out.stderr}")
                results[name].append(tps)
                print(f"round {rnd + 1}: {name}: {tps:.0f} logins/s", file=sys.stderr)
        ratios = [s / p for s, p in zip(results["syncbouncer"], results["pgbouncer"])]
        print("| target | SCRAM logins/s (median) | rounds |")
        print("|---|---|---|")
        for name in targets:
            print(f"| {name} | {statistics.median(results[name]):.0f} | "
                  f"{', '.join(f'{v:.0f}' for v in results[name])} |")
        print(f"\nsyncbouncer/pgbouncer: median {statistics.median(ratios):.2f}, "
              f"range {min(ratios):.2f}-{max(ratios):.2f} "
              f"(pgbench -C -f select1.sql -c {args.clients} -T {args.seconds}, {args.rounds} rounds)")
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
