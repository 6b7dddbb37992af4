#!/usr/bin/python3
"""The cost of the write-ahead intent per synced write (p50/p99), and its share of the write.

Starts a throwaway PostgreSQL 15 cluster (durable: fsync and synchronous_commit on, as in
production, since the intent's COMMIT is what costs), the fake Stripe answering at once (Nagle
off on its side), and a
syncbouncer (run with -v, whose DEBUG lines `intent N written in X us` time the write-ahead
step: the row of syncbouncer.intent, by intent_record(), and its COMMIT on the companion
connection). Then one
client sends --writes INSERTs and as many UPDATEs of a synced table, one at a time, and the
report gives, per kind, the p50 and p99 of the write-ahead step and of the whole write as the
client sees it, and the step's share of the write at p50 (a ratio: the machine's speed cancels
out). The intent's DELETE rides in the write's own apply transaction and is in the write's time.

Run as root (drops to the `postgres` OS user) or as any user that can run initdb:
  test/bench/bench_intents.py --syncbouncer /tmp/build-bench/syncbouncer [--writes 500]
Benchmarks are not tests: nothing here passes or fails on speed. See test/bench/README.md.
"""
import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import PG_BIN, die_with_parent, drop_root, free_port, log, wait_port  # noqa: E402

SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAKE = os.path.join(SRC, "test", "fakes", "fake_stripe.py")


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100.0 * (len(values) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--syncbouncer", default=os.environ.get("SB_BIN",
                                                            "/tmp/build-bench/syncbouncer"))
    ap.add_argument("--writes", type=int, default=500, help="INSERTs, then as many UPDATEs")
    ap.add_argument("--no-fsync", action="store_true", help="fsync and synchronous_commit off")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    opts = ap.parse_args()
    drop_root()
    import psycopg

    work = tempfile.mkdtemp(prefix="bench-intents-")
    procs = []
    try:
        data, port = os.path.join(work, "data"), free_port()
        subprocess.run([os.path.join(PG_BIN, "initdb"), "-D", data, "-U", "postgres",
                        "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"],
                       check=True, capture_output=True)
        with open(os.path.join(data, "postgresql.conf"), "a") as f:
            f.write(f"listen_addresses = '127.0.0.1'\nunix_socket_directories = '{work}'\n"
                    "log_min_messages = warning\n")
            if opts.no_fsync:
                f.write("fsync = off\nsynchronous_commit = off\n")
        pg = subprocess.Popen([os.path.join(PG_BIN, "postgres"), "-D", data, "-p", str(port)],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        procs.append(pg)
        wait_port(port, pg, 60, "postgres")
        time.sleep(0.5)
        with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres",
                             autocommit=True) as c:
            c.execute("CREATE ROLE app LOGIN PASSWORD 'secret'")
            c.execute("CREATE DATABASE crm OWNER app")
        with psycopg.connect(host="127.0.0.1", port=port, user="app", dbname="crm",
                             autocommit=True) as c:
            c.execute("CREATE SCHEMA billing")
            c.execute("CREATE TABLE billing.customers (id text PRIMARY KEY, email text, "
                      "name text)")

        api_port = free_port()
        # Nagle off on the fake's connections: else each answer waits for a delayed ACK
        # (about 40 ms), as fake_salesforce_nodelay.py explains
        nodelay = ("import importlib.util, sys; s = importlib.util.spec_from_file_location("
                   f"'fake_stripe', {FAKE!r}); m = importlib.util.module_from_spec(s); "
                   "s.loader.exec_module(m); m.Handler.disable_nagle_algorithm = True; "
                   "sys.argv[0] = 'fake_stripe'; m.main()")
        fake = subprocess.Popen([sys.executable, "-c", nodelay, "--port", str(api_port)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                preexec_fn=die_with_parent)
        procs.append(fake)
        assert b"listening" in fake.stdout.readline()

        sb_port = free_port()
        ini = os.path.join(work, "sb.ini")
        sblog = os.path.join(work, "sb.log")
        with open(os.path.join(work, "users.txt"), "w") as f:
            f.write('"app" "secret"\n')
        with open(ini, "w") as f:
            f.write(f"[databases]\ncrm = host=127.0.0.1 port={port} dbname=crm user=app "
                    "password=secret\n"
                    f"[apis]\nstripe = type=stripe base_url=http://127.0.0.1:{api_port} "
                    "auth=bearer token=sk_test_fake timeout=5\n"
                    "[synced_tables]\ncrm.billing.customers = api=stripe object=customers "
                    "sync_interval=0 backfill=off\n"
                    f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {sb_port}\n"
                    f"unix_socket_dir =\nauth_type = trust\nauth_file = {work}/users.txt\n"
                    f"logfile = {sblog}\nlog_connections = 0\nlog_disconnections = 0\n")
        sb = subprocess.Popen([opts.syncbouncer, "-v", ini], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                              preexec_fn=die_with_parent)
        procs.append(sb)
        wait_port(sb_port, sb, 30, "syncbouncer")

        conn = psycopg.connect(host="127.0.0.1", port=sb_port, user="app", dbname="crm",
                               autocommit=True)
        for _ in range(200):
            try:
                conn.execute("INSERT INTO billing.customers (email) VALUES ('w@b.io')")
                break
            except psycopg.errors.ObjectNotInPrerequisiteState:
                time.sleep(0.1)  # the guard trigger is still being installed
        ids = []
        for i in range(50):  # warm-up: connections, caches
            conn.execute("INSERT INTO billing.customers (email) VALUES ('w@b.io')")
        skip = len(re.findall(r"intent -?\d+ written in", open(sblog).read()))
        lat = {"insert": [], "update": []}
        log(f"{opts.writes} INSERTs, then {opts.writes} UPDATEs")
        for i in range(opts.writes):
            t0 = time.perf_counter()
            (rid,) = conn.execute("INSERT INTO billing.customers (email, name) VALUES "
                                  "(%s, %s) RETURNING id", (f"c{i}@b.io", f"c{i}")).fetchone()
            lat["insert"].append((time.perf_counter() - t0) * 1e6)
            ids.append(rid)
        for i, rid in enumerate(ids):
            t0 = time.perf_counter()
            conn.execute("UPDATE billing.customers SET name = %s WHERE id = %s", (f"u{i}", rid))
            lat["update"].append((time.perf_counter() - t0) * 1e6)
        conn.close()
        time.sleep(0.3)
        steps = [int(x) for x in re.findall(r"intent -?\d+ written in (\d+) us",
                                            open(sblog).read())][skip:]
        step = {"insert": steps[:opts.writes], "update": steps[opts.writes:2 * opts.writes]}

        print(f"\nwrite-ahead intent cost per synced write ({opts.writes} of each, one client, "
              f"fsync {'off' if opts.no_fsync else 'on'}, fake Stripe answering at once)\n")
        print("| write | intent step p50 | p99 | whole write p50 | p99 | step / write (p50) |")
        print("|---|---|---|---|---|---|")
        for kind in ("insert", "update"):
            s, w = step[kind], lat[kind]
            if len(s) != len(w):
                print(f"| {kind} | (log has {len(s)} steps for {len(w)} writes) |")
                continue
            print(f"| {kind} | {pct(s, 50):.0f} us | {pct(s, 99):.0f} us | "
                  f"{pct(w, 50) / 1000:.2f} ms | {pct(w, 99) / 1000:.2f} ms | "
                  f"{statistics.median(s) / statistics.median(w):.2f} |")
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM if p is not procs[0] else signal.SIGINT)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
        if not opts.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"kept {work}")


if __name__ == "__main__":
    main()
