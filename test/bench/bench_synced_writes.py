#!/usr/bin/python3
"""Synced writes: the latency syncbouncer adds over (direct write + API time), and throughput.

Part `synclat` of run_bench (`run_bench --only synclat`), or on its own:

    test/bench/bench_synced_writes.py --syncbouncer /tmp/build-bench/syncbouncer

What it measures, with the fake Salesforce (test/fakes/fake_salesforce.py, Nagle off) answering
at once and after --delays milliseconds (its `delay_ms` knob):

1. Latency, one client (pgbench -c 1 with a per-transaction log): --writes single-row INSERTs
   and as many single-row UPDATEs of the synced table `salesforce.contacts` through syncbouncer,
   then the same statements on an ordinary table of the same shape straight on PostgreSQL. The
   fake logs when each write request arrived (its request line read, before the fake parses its
   headers and body) and when the last write of its answer began: that is the API's own time for
   that write (the fake's delay as it really slept, and its own work; the loopback transfer and
   the wake-ups of its thread, some 30-70 µs, stay on syncbouncer's side). For write i, added_i = latency_i - api_i - median(direct); the report
   gives added at p50 and p99 (the target: at most 2 ms and 5 ms), beside the parts. With a
   delay, a second baseline: the same direct write from a client made by hand over the
   protocol, sent back to back and then each after the client slept as long as the fake's
   delay (its backend and the machine as quiet as in a synced write's wait); the difference
   of the two medians is added to the direct median, and added is given over that too.
2. Round trips and statements per write (deterministic, whatever the load): --count-writes
   single-row INSERTs and as many UPDATEs through a pooler run under strace, which shows the
   pooler's sends to PostgreSQL and its reads of the answers: a round trip is a run of sends on
   one connection between two reads that got data (the companion connection's intent
   included), with log_statement = all on the cluster, whose log has a line per query string
   (simple protocol) or per Execute (pipelined statements).
3. Throughput with --writers concurrent clients (pgbench -c 200 of INSERTs through syncbouncer,
   `max_in_flight` raised to the number of writers so that the API slots do not cap it), against
   what the fake answers alone: the first write request syncbouncer sent, replayed by as many
   concurrent keep-alive connections (asyncio, standard library) for the same time. The report
   gives both rates, their ratio, and the CPU each process used: when the fake is the limit,
   syncbouncer's rate is close to the fake's own and the fake's CPU is near a core.

Everything is a ratio or a difference measured in one run: no threshold, nothing passes or
fails. The standard library only (pgbench is the client).
"""

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402
from bench import DB, PY, USER, Cluster, Pooler, die_with_parent, log, proc_cpu_s  # noqa: E402

SCHEMA_SQL = f"""
    CREATE SCHEMA IF NOT EXISTS salesforce AUTHORIZATION {USER};
    CREATE TABLE IF NOT EXISTS salesforce.contacts (id text PRIMARY KEY, first_name text,
        last_name text, email text, note text);
    ALTER TABLE salesforce.contacts OWNER TO {USER};
    CREATE TABLE public.contacts_direct (id text PRIMARY KEY DEFAULT md5(random()::text),
        first_name text, last_name text, email text, note text);
    ALTER TABLE public.contacts_direct OWNER TO {USER};
    CREATE INDEX ON public.contacts_direct (last_name);
"""

# one row each; UPDATEs pick one of the 200 rows named u1..u200 (one API request of 200 makes
# them in the synced table)
SCRIPTS = {
    "insert": "\\set n random(1, 1000000000)\n"
              "INSERT INTO {table} (first_name, last_name, email) "
              "VALUES ('bench', 'x' || :n, 'b' || :n || '@example.com');\n",
    "update": "\\set k random(1, 200)\n\\set n random(1, 1000000000)\n"
              "UPDATE {table} SET note = 'note ' || :n WHERE last_name = 'u' || :k;\n",
}


def pg_cpu_s(pg):
    """CPU seconds of the cluster: its live processes and the children it has waited for."""
    pid = pg.proc.pid
    total = 0.0
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    total += (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")  # cutime, cstime
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = [int(x) for x in f.read().split()]
    except OSError:
        kids = []
    for k in [pid] + kids:
        try:
            total += proc_cpu_s(k)
        except OSError:
            pass
    return total


def machine_cpu():
    """(all jiffies, idle jiffies) of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v), v[3] + v[4]


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100.0 * (len(values) - 1))))]


def pgbench_log(port, script, n, work, tag):
    """Runs n transactions of one client; returns their latencies in µs, in order."""
    prefix = os.path.join(work, "pgbench-" + tag)
    for f in os.listdir(work):
        if f.startswith("pgbench-" + tag + "."):
            os.unlink(os.path.join(work, f))
    res = bench.pgbench(port, ["-f", script, "-c", "1", "-t", str(n), "-l",
                               "--log-prefix=" + prefix], timeout=n * 5 + 120)
    if res["aborted"]:
        raise RuntimeError(f"pgbench {tag} failed: {res.get('error')}")
    lat = []
    for f in sorted(os.listdir(work)):
        if f.startswith("pgbench-" + tag + "."):
            with open(os.path.join(work, f)) as fh:
                lat += [int(line.split()[2]) for line in fh if line.strip()]
    return lat


# the scripts' statements with values filled in, for the hand-made client below
HAND_SQL = {
    "insert": "INSERT INTO public.contacts_direct (first_name, last_name, email) "
              "VALUES ('bench', 'x{n}', 'b{n}@example.com')",
    "update": "UPDATE public.contacts_direct SET note = 'note {n}' WHERE last_name = 'u{k}'",
}


def hand_latencies(port, kind, n, idle_ms):
    """n single-row writes straight on PostgreSQL from a client made by hand over the protocol
    (simple Query, one connection): each sent after the client slept idle_ms (0: back to
    back). Returns their latencies in µs, from the send to ReadyForQuery."""
    import random
    sk = bench.idle_login(port)
    lat = []
    try:
        for _ in range(n):
            sql = HAND_SQL[kind].format(n=random.randint(1, 10 ** 9), k=random.randint(1, 200))
            body = sql.encode() + b"\0"
            msg = b"Q" + struct.pack("!I", len(body) + 4) + body
            if idle_ms:
                time.sleep(idle_ms / 1000.0)
            t0 = time.perf_counter_ns()
            sk.sendall(msg)
            buf, done = b"", False
            while not done:
                chunk = sk.recv(65536)
                if not chunk:
                    raise RuntimeError("PostgreSQL closed the connection")
                buf += chunk
                while len(buf) >= 5 and len(buf) >= 1 + struct.unpack("!I", buf[1:5])[0]:
                    ln = struct.unpack("!I", buf[1:5])[0]
                    typ, buf = buf[:1], buf[1 + ln:]
                    if typ == b"E":
                        raise RuntimeError(f"direct {kind} failed")
                    done = done or typ == b"Z"
            lat.append((time.perf_counter_ns() - t0) / 1000.0)
    finally:
        sk.close()
    return lat


def fake_call(url, path, method="GET", body=None):
    req = urllib.request.Request(url + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        raw = r.read()
        return json.loads(raw) if raw else None


def write_requests(url):
    """The fake's log of write requests: [(arrived, answered, entry)], in arrival order."""
    out = []
    for e in fake_call(url, "/_requests"):
        if "composite/sobjects" in e.get("path", "") and "done" in e:
            out.append((e["time"], e["done"], e))
    return out


async def _replay_one(host, port, request, deadline, counts):
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.monotonic() < deadline:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if length:
                await reader.readexactly(length)
            if not head.startswith(b"HTTP/1.1 2"):
                counts["errors"] += 1
            counts["done"] += 1
    finally:
        writer.close()


def replay(host, port, entry, clients, seconds):
    """Replays one logged write request on `clients` keep-alive connections; requests/s."""
    body = json.dumps(entry["body"]).encode()
    head = (f"{entry['method']} {entry['path']}{'?' + entry['query'] if entry['query'] else ''}"
            f" HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: {entry['authorization']}\r\n"
            f"Content-Type: {entry['content_type'] or 'application/json'}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    counts = {"done": 0, "errors": 0}

    async def run():
        deadline = time.monotonic() + seconds
        await asyncio.gather(*(_replay_one(host, port, head + body, deadline, counts)
                               for _ in range(clients)))

    t0 = time.monotonic()
    asyncio.run(run())
    wall = time.monotonic() - t0
    return counts["done"] / wall, counts["done"] - counts["errors"], counts["errors"]


def count_round_trips(pg, opts, work, extra, scripts):
    """Sends to PostgreSQL and statements per synced write, for each kind (module docstring)."""
    out = {}
    if not shutil.which("strace") or opts.count_writes <= 0:
        log("strace not found: round trips per write skipped")
        return out
    logfile = os.path.join(pg.base, "postgresql.log")
    for sql in ("ALTER SYSTEM SET log_statement = 'all'",
                "ALTER SYSTEM SET log_line_prefix = '%a|'", "SELECT pg_reload_conf()"):
        pg.sql(sql)  # one by one: psql -c runs a string of several in one transaction
    try:
        for kind in ("insert", "update"):
            trace = os.path.join(work, f"strace-synclat-{kind}.txt")
            p = Pooler("syncbouncer", opts.syncbouncer, work, pg, "transaction", extra,
                       wrapper=["strace", "-f", "-qq", "-yy", "-o", trace,
                                "-e", "trace=sendto,sendmsg,write,writev,recvfrom,recvmsg,read"])
            p.start()
            try:
                for attempt in range(100):  # until its synced tables are ready
                    try:
                        pgbench_log(p.port, scripts[kind, "synced"], 5, work, "rt-warm")
                        break
                    except RuntimeError:
                        if attempt == 99:
                            raise
                        time.sleep(0.2)
                with open(logfile, "rb") as f:
                    f.seek(0, 2)
                    log_from = f.tell()
                with open(trace) as f:
                    before = round_trips(f, pg.port)
                pgbench_log(p.port, scripts[kind, "synced"], opts.count_writes, work, "rt")
            finally:
                p.stop()
            with open(trace) as f:
                sends = round_trips(f, pg.port) - before
            with open(logfile, "rb") as f:
                f.seek(log_from)
                stmts = sum(1 for line in f.read().decode("utf-8", "replace").splitlines()
                            if line.startswith("syncbouncer mutation|")
                            and re.search(r"LOG:  (statement|execute [^:]*):", line))
            out[kind] = {"writes": opts.count_writes,
                         "round_trips": sends / opts.count_writes,
                         "statements": stmts / opts.count_writes}
            log(f"  {kind}: {sends / opts.count_writes:.2f} round trips to PostgreSQL and "
                f"{stmts / opts.count_writes:.2f} statement log lines per write")
    finally:
        for sql in ("ALTER SYSTEM RESET log_statement", "ALTER SYSTEM RESET log_line_prefix",
                    "SELECT pg_reload_conf()"):
            pg.sql(sql)
    return out


def round_trips(lines, port):
    """Round trips in strace lines: runs of sends on a connection to PostgreSQL's port, each
    ended by a read of that connection that got data."""
    pat = re.compile(r"^(?:\d+ +)?(sendto|sendmsg|write|writev|recvfrom|recvmsg|read)\((\d+)"
                     r"<TCP:\[[^\]]*->127\.0\.0\.1:" + str(port) + r"\]>.*= (-?\d+)")
    sending, n = set(), 0
    for line in lines:
        m = pat.match(line)
        if m is None or int(m.group(3)) <= 0:
            continue
        call, fd = m.group(1), m.group(2)
        if call in ("recvfrom", "recvmsg", "read"):
            sending.discard(fd)
        elif fd not in sending:
            sending.add(fd)
            n += 1
    return n


def run(pg, opts, work):
    """All the measurements against the cluster pg (bench.Cluster, already started)."""
    results = {"latency": [], "throughput": [], "writes": opts.writes,
               "writers": opts.writers, "seconds": opts.seconds}
    pg.sql(SCHEMA_SQL)
    scripts = {}
    for kind, text in SCRIPTS.items():
        for where, table in (("synced", "salesforce.contacts"),
                             ("direct", "public.contacts_direct")):
            path = os.path.join(work, f"{kind}-{where}.sql")
            with open(path, "w") as f:
                f.write(text.format(table=table))
            scripts[kind, where] = path
    pg.sql("INSERT INTO public.contacts_direct (first_name, last_name) "
           "SELECT 'bench', 'u' || g FROM generate_series(1, 200) g")

    fake, url = bench.start_fake_salesforce(bench.FAKE_SF_NODELAY)
    fport = int(url.rsplit(":", 1)[1])
    sb = None
    replayed = 0  # records the replays made in the fake's store
    try:
        extra = bench.synced_contacts_config(url, f"timeout=30 max_in_flight={opts.writers}",
                                             "sync_interval=0 backfill=off")
        bench.POOL_SIZE["transaction"] = 20
        sb = Pooler("syncbouncer", opts.syncbouncer, work, pg, "transaction", extra,
                    max_client_conn=opts.writers + 50)
        sb.start()
        deadline = time.monotonic() + 30
        while pg.sql("SELECT count(*) FROM pg_trigger WHERE tgname = 'syncbouncer_guard'") == "0":
            if time.monotonic() > deadline:
                raise RuntimeError("guard trigger not installed:\n" + sb.output()[-4000:])
            time.sleep(0.1)
        seed = os.path.join(work, "seed.sql")
        with open(seed, "w") as f:
            f.write("INSERT INTO salesforce.contacts (first_name, last_name) "
                    "SELECT 'bench', 'u' || g FROM generate_series(1, 200) g;\n")
        for _ in range(100):  # the guard trigger may still be being installed
            res = bench.pgbench(sb.port, ["-f", seed, "-c", "1", "-t", "1"], timeout=120)
            if not res["aborted"]:
                break
            time.sleep(0.2)
        if res["aborted"]:
            raise RuntimeError("synced INSERT fails: " + str(res.get("error")) + "\n"
                               + sb.output()[-4000:])
        for kind in ("insert", "update"):  # warm-up: token, connections, plans
            pgbench_log(sb.port, scripts[kind, "synced"], 30, work, "warm")
        pg.sql("CREATE INDEX IF NOT EXISTS contacts_last_name ON salesforce.contacts "
               "(last_name); ANALYZE")

        for delay in opts.delays:
            fake_call(url, "/_control", "POST", {"delay_ms": delay})
            n = opts.writes if delay == 0 else max(20, opts.writes // 4)
            for kind in ("insert", "update"):
                direct = pgbench_log(pg.port, scripts[kind, "direct"], n, work, "direct")
                fake_call(url, "/_requests", "DELETE")
                log(f"synclat: {n} {kind}s, one client, fake delay {delay} ms")
                lat = pgbench_log(sb.port, scripts[kind, "synced"], n, work, "synced")
                reqs = write_requests(url)
                if len(reqs) != len(lat):
                    raise RuntimeError(f"{len(lat)} writes but {len(reqs)} API requests")
                api = [(done - arrived) * 1e6 for arrived, done, _ in reqs]
                base = statistics.median(direct)
                added = [w - a - base for w, a in zip(lat, api)]
                row = {"kind": kind, "delay_ms": delay, "n": n,
                       "direct_p50": pct(direct, 50), "direct_p99": pct(direct, 99),
                       "api_p50": pct(api, 50), "api_p99": pct(api, 99),
                       "write_p50": pct(lat, 50), "write_p99": pct(lat, 99),
                       "added_p50": pct(added, 50), "added_p99": pct(added, 99)}
                if delay > 0:
                    # the direct write under the same idle: the client, its backend and the
                    # machine quiet for the fake's delay before each write (module docstring)
                    hand = hand_latencies(pg.port, kind, n, 0)
                    idle = hand_latencies(pg.port, kind, n, delay)
                    base_idle = base + statistics.median(idle) - statistics.median(hand)
                    added_idle = [w - a - base_idle for w, a in zip(lat, api)]
                    row.update(hand_p50=pct(hand, 50), hand_idle_p50=pct(idle, 50),
                               hand_idle_p99=pct(idle, 99),
                               added_idle_p50=pct(added_idle, 50),
                               added_idle_p99=pct(added_idle, 99))
                results["latency"].append(row)
                log(f"  {kind} delay {delay}: write p50 {row['write_p50'] / 1000:.2f} ms, "
                    f"api p50 {row['api_p50'] / 1000:.2f} ms, direct p50 "
                    f"{row['direct_p50'] / 1000:.2f} ms, added p50 "
                    f"{row['added_p50'] / 1000:.2f} ms p99 {row['added_p99'] / 1000:.2f} ms")
                if delay > 0:
                    log(f"  direct by hand: back to back p50 {row['hand_p50'] / 1000:.2f} ms, "
                        f"after {delay} ms idle p50 {row['hand_idle_p50'] / 1000:.2f} ms; added "
                        f"over the idle baseline p50 {row['added_idle_p50'] / 1000:.2f} ms "
                        f"p99 {row['added_idle_p99'] / 1000:.2f} ms")

        fake_call(url, "/_control", "POST", {"delay_ms": 0})
        log(f"synclat: round trips and statements per write ({opts.count_writes} of each)")
        results["per_write"] = count_round_trips(pg, opts, work, extra, scripts)

        for delay in opts.delays:
            fake_call(url, "/_control", "POST", {"delay_ms": delay})
            fake_call(url, "/_requests", "DELETE")
            log(f"synclat: {opts.writers} writers, fake delay {delay} ms, {opts.seconds} s")
            cpu_sb, cpu_fake, cpu_pg = sb.cpu_ns(), proc_cpu_s(fake.pid), pg_cpu_s(pg)
            all0, idle0 = machine_cpu()
            t0 = time.monotonic()
            res = bench.pgbench(sb.port, ["-f", scripts["insert", "synced"], "-c",
                                          str(opts.writers), "-j", "2", "-T", str(opts.seconds)],
                                timeout=opts.seconds * 4 + 120)
            wall = time.monotonic() - t0
            row = {"delay_ms": delay, "sb_tps": res["tps"], "sb_failed": res["aborted"],
                   "sb_cpu": (sb.cpu_ns() - cpu_sb) / 1e9 / wall,
                   "fake_cpu_with_sb": (proc_cpu_s(fake.pid) - cpu_fake) / wall,
                   "pg_cpu": (pg_cpu_s(pg) - cpu_pg) / wall}
            all1, idle1 = machine_cpu()
            row["machine_busy"] = (os.cpu_count() or 1) * (1 - (idle1 - idle0) /
                                                           max(1, all1 - all0))
            if res["aborted"]:
                row["error"] = res.get("error")
            reqs = write_requests(url)
            fake_call(url, "/_requests", "DELETE")
            cpu_fake = proc_cpu_s(fake.pid)
            t0 = time.monotonic()
            alone, created, errors = replay("127.0.0.1", fport, reqs[0][2], opts.writers,
                                            opts.seconds)
            replayed += created
            row.update(fake_alone=alone, fake_alone_errors=errors,
                       fake_cpu_alone=(proc_cpu_s(fake.pid) - cpu_fake)
                       / (time.monotonic() - t0))
            results["throughput"].append(row)
            log(f"  {opts.writers} writers, delay {delay}: syncbouncer {res['tps']} writes/s, "
                f"fake alone {alone:.0f} requests/s")
        results["rows_in_table"] = int(pg.sql("SELECT count(*) FROM salesforce.contacts"))
        results["records_in_fake"] = len(fake_call(url, "/_store").get("Contact", {})) - replayed
    finally:
        if sb is not None:
            sb.stop()
        fake.terminate()
        fake.wait(10)
    return results


def report(results, w):
    w("### Synced writes: latency added and throughput (bench_synced_writes.py)")
    w("")
    w("One client, one row per statement; ms. added = write − the fake's own time for that "
      "write − median direct write (p50 and p99 of that per-write difference).")
    w("")
    w("| write | fake delay | n | direct p50 / p99 | API p50 / p99 | through syncbouncer "
      "p50 / p99 | added p50 | added p99 | goal (p50 ≤ 2, p99 ≤ 5) |")
    w("|---|--:|--:|--:|--:|--:|--:|--:|---|")
    for r in results["latency"]:
        met = "met" if r["added_p50"] <= 2000 and r["added_p99"] <= 5000 else "not met"
        w(f"| {r['kind'].upper()} | {r['delay_ms']} ms | {r['n']} | "
          f"{r['direct_p50'] / 1000:.2f} / {r['direct_p99'] / 1000:.2f} | "
          f"{r['api_p50'] / 1000:.2f} / {r['api_p99'] / 1000:.2f} | "
          f"{r['write_p50'] / 1000:.2f} / {r['write_p99'] / 1000:.2f} | "
          f"{r['added_p50'] / 1000:.2f} | {r['added_p99'] / 1000:.2f} | {met} |")
    w("")
    idle = [r for r in results["latency"] if "hand_idle_p50" in r]
    if idle:
        w("The same, over a direct write made under the same idle: a client made by hand over "
          "the protocol sends each direct write back to back, then after sleeping as long as "
          "the fake's delay; the idle baseline is the pgbench direct p50 plus (after idle − "
          "back to back) of that client. ms.")
        w("")
        w("| write | fake delay | direct by hand, back to back p50 | after the idle p50 / p99 "
          "| idle baseline | added p50 | added p99 | goal (p50 ≤ 2, p99 ≤ 5) |")
        w("|---|--:|--:|--:|--:|--:|--:|---|")
        for r in idle:
            met = ("met" if r["added_idle_p50"] <= 2000 and r["added_idle_p99"] <= 5000
                   else "not met")
            base_idle = r["direct_p50"] + r["hand_idle_p50"] - r["hand_p50"]
            w(f"| {r['kind'].upper()} | {r['delay_ms']} ms | {r['hand_p50'] / 1000:.2f} | "
              f"{r['hand_idle_p50'] / 1000:.2f} / {r['hand_idle_p99'] / 1000:.2f} | "
              f"{base_idle / 1000:.2f} | {r['added_idle_p50'] / 1000:.2f} | "
              f"{r['added_idle_p99'] / 1000:.2f} | {met} |")
        w("")
    if results.get("per_write"):
        w("Per single-row write (deterministic): round trips to PostgreSQL (runs of sends on a "
          "connection between reads of its answers, under strace; the intent's included), and "
          "the lines of PostgreSQL's log (log_statement = all: one per query string or "
          "Execute) for the write's connections:")
        w("")
        w("| write | writes counted | round trips per write | statement log lines per write |")
        w("|---|--:|--:|--:|")
        for kind, r in results["per_write"].items():
            w(f"| {kind.upper()} | {r['writes']} | {r['round_trips']:.2f} | "
              f"{r['statements']:.2f} |")
        w("")
    w(f"{results['writers']} concurrent writers (pgbench INSERTs, {results['seconds']} s) "
      "against the fake alone (the same request replayed by as many keep-alive connections); "
      "CPU in cores:")
    w("")
    w("| fake delay | syncbouncer writes/s | fake alone requests/s | ratio | syncbouncer CPU | "
      "PostgreSQL CPU | fake CPU (with syncbouncer / alone) | machine busy |")
    w("|--:|--:|--:|--:|--:|--:|--:|--:|")
    for r in results["throughput"]:
        sb = "failed" if r["sb_failed"] else f"{r['sb_tps']:.0f}"
        ratio = r["sb_tps"] / r["fake_alone"] if r["sb_tps"] and r["fake_alone"] else None
        w(f"| {r['delay_ms']} ms | {sb} | {r['fake_alone']:.0f} | "
          f"{'%.2f' % ratio if ratio else '–'} | {r['sb_cpu']:.2f} | {r['pg_cpu']:.2f} | "
          f"{r['fake_cpu_with_sb']:.2f} / {r['fake_cpu_alone']:.2f} | "
          f"{r.get('machine_busy', 0):.2f} of {os.cpu_count()} |")
    w("")
    w(f"After the run: {results['rows_in_table']} rows in salesforce.contacts, "
      f"{results['records_in_fake']} records in the fake's store, not counting those the "
      "replays made (they must agree).")
    w("")


def add_options(ap):
    ap.add_argument("--writes", type=int, default=400,
                    help="one-client INSERTs and UPDATEs per delay (a quarter with a delay)")
    ap.add_argument("--writers", type=int, default=200)
    ap.add_argument("--count-writes", type=int, default=20,
                    help="writes of each kind counted under strace (0: not counted)")
    ap.add_argument("--seconds", type=int, default=10, help="of each throughput run")
    ap.add_argument("--delays", default="0,100", help="the fake's answer delays, ms")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--syncbouncer", default=os.environ.get("SB_BIN", bench.DEFAULT_SB))
    ap.add_argument("--json", help="raw results to this file")
    add_options(ap)
    opts = ap.parse_args()
    opts.delays = [int(x) for x in str(opts.delays).split(",")]
    bench.drop_root()
    work = tempfile.mkdtemp(prefix="bench-synclat-")
    os.chmod(work, 0o755)
    pg = Cluster(os.path.join(work, "pg"))
    os.makedirs(pg.base, mode=0o700)
    try:
        pg.start()
        pg.sql(f"SET password_encryption = 'md5'; CREATE ROLE {USER} LOGIN PASSWORD "
               f"'{bench.PASSWORD}'", db="postgres")
        pg.sql(f"CREATE DATABASE {DB} OWNER {USER}", db="postgres")
        results = run(pg, opts, work)
        report(results, print)
        if opts.json:
            with open(opts.json, "w") as f:
                json.dump(results, f, indent=1)
    finally:
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
