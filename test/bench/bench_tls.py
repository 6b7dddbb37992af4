#!/usr/bin/python3
"""TLS: syncbouncer beside pgbouncer (and PostgreSQL itself), in one run.

Makes a CA and certificates with the `openssl` CLI, starts a throwaway PostgreSQL 15 cluster
with ssl = on, and for each workload runs the same pgbench command with sslmode=require against
PostgreSQL directly, pgbouncer and syncbouncer, back to back, --rounds times. Reports medians of
tps, the pooler's CPU time per transaction, and the syncbouncer/pgbouncer ratio.

Workloads (both poolers get the same ini; client_tls_sslmode = require):
  logins       pgbench -C -S -c 10: a TLS handshake and an md5 log-in per transaction
               (session pooling, server_tls_sslmode = disable): tps = TLS logins/s
  select       pgbench -S -c 50 over TLS (transaction pooling, server_tls_sslmode = disable)
  select-both  the same with TLS toward PostgreSQL too (server_tls_sslmode = require)

Benchmarks are not tests: nothing here passes or fails on speed. See test/bench/README.md.
"""

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (the shared cluster, pooler and pgbench helpers)
from bench import DB, PG_BIN, USER, PASSWORD, Cluster, Pooler, log, pgbench  # noqa: E402

TARGETS = ("direct", "pgbouncer", "syncbouncer")


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certs(d):
    """A CA, and one certificate (localhost, 127.0.0.1) shared by PostgreSQL and the poolers."""
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "30", "-subj",
            "/CN=bench CA", "-addext", "basicConstraints=critical,CA:TRUE", cwd=d)
    with open(os.path.join(d, "server.ext"), "w") as f:
        f.write("basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost",
            cwd=d)
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.crt", "-days", "30", "-extfile", "server.ext",
            cwd=d)
    os.chmod(os.path.join(d, "server.key"), 0o600)
    return {k: os.path.join(d, f"server.{k}") for k in ("crt", "key")}


def tls_ini(certs, server_mode):
    return (f"client_tls_sslmode = require\nclient_tls_key_file = {certs['key']}\n"
            f"client_tls_cert_file = {certs['crt']}\nserver_tls_sslmode = {server_mode}\n")


WORKLOADS = (
    # name, pool mode, server_tls_sslmode, pgbench options
    ("logins", "session", "disable", ["-C", "-S", "-c", "10", "-j", "2"]),
    ("select", "transaction", "disable", ["-S", "-c", "50", "-j", "2"]),
    ("select-both", "transaction", "require", ["-S", "-c", "50", "-j", "2"]),
)


def run(opts, work):
    results = {"meta": {}, "runs": []}
    certdir = os.path.join(work, "certs")
    os.makedirs(certdir)
    certs = make_certs(certdir)
    pg = Cluster(os.path.join(work, "pg"))
    os.makedirs(pg.base, mode=0o700)
    log(f"initdb + start PostgreSQL (ssl = on) on port {pg.port}")
    pg.start()
    try:
        for setting in (f"ssl_cert_file = '{certs['crt']}'", f"ssl_key_file = '{certs['key']}'",
                        "ssl = on"):
            pg.sql(f"ALTER SYSTEM SET {setting}", db="postgres")
        pg.sql("SELECT pg_reload_conf()", db="postgres")
        pg.sql(f"SET password_encryption = 'md5'; CREATE ROLE {USER} LOGIN PASSWORD "
               f"'{PASSWORD}'", db="postgres")
        pg.sql(f"CREATE DATABASE {DB} OWNER {USER}", db="postgres")
        r = subprocess.run([os.path.join(PG_BIN, "pgbench"), "-i", "-q", "-s",
                            str(opts.scale), "-h", "127.0.0.1", "-p", str(pg.port), "-U", USER,
                            DB], env=bench.client_env(), capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError("pgbench -i failed: " + r.stderr)
        os.environ["PGSSLMODE"] = "require"
        m = results["meta"]
        m["date_utc"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
        m["cpu"] = bench.cpu_model()
        m["cores"] = os.cpu_count()
        m["pgbouncer"] = bench.first_line([opts.pgbouncer, "--version"])
        m["syncbouncer"] = bench.first_line([opts.syncbouncer, "--version"])
        m["git"] = opts.git
        m["openssl"] = bench.first_line(["openssl", "version"])
        m["duration_s"] = opts.duration
        m["rounds"] = opts.rounds
        for name, mode, server_mode, args in WORKLOADS:
            if opts.only and name not in opts.only:
                continue
            poolers = {}
            for kind in ("pgbouncer", "syncbouncer"):
                binary = opts.pgbouncer if kind == "pgbouncer" else opts.syncbouncer
                poolers[kind] = Pooler(kind, binary, work, pg, mode,
                                       tls_ini(certs, server_mode)).start()
            try:
                for rnd in range(opts.rounds):
                    for target in TARGETS:
                        p = poolers.get(target)
                        port = pg.port if p is None else p.port
                        cpu0 = p.cpu_ns() if p else None
                        res = pgbench(port, args + ["-T", str(opts.duration)],
                                      timeout=opts.duration * 4 + 120)
                        if p:
                            res["pooler_cpu_s"] = (p.cpu_ns() - cpu0) / 1e9
                            if res["txns"]:
                                res["pooler_cpu_us_per_txn"] = (res["pooler_cpu_s"] * 1e6
                                                                / res["txns"])
                        res.update(workload=name, target=target, round=rnd)
                        results["runs"].append(res)
                        log(f"  {name:12} {target:12} r{rnd} tps={res['tps'] or 0:10.1f}"
                            + (f" ERROR {res.get('error')}" if res["aborted"] else ""))
            finally:
                for p in poolers.values():
                    p.stop()
    finally:
        pg.stop()
    return results


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def report(results):
    m = results["meta"]
    out = ["# TLS: syncbouncer beside pgbouncer", "",
           f"{m['date_utc']} UTC, {m['cpu']} ({m['cores']} cores), {m['openssl']}; "
           f"{m['syncbouncer']} ({m['git']}) vs {m['pgbouncer']}; pgbench -T {m['duration_s']}"
           f", medians of {m['rounds']} round(s), sslmode=require.", "",
           "| workload | direct tps | pgbouncer tps | syncbouncer tps | syncbouncer/pgbouncer "
           "| pgbouncer CPU us/txn | syncbouncer CPU us/txn | CPU ratio |",
           "|---|---|---|---|---|---|---|---|"]
    for name, _, _, args in WORKLOADS:
        runs = [r for r in results["runs"] if r["workload"] == name]
        if not runs:
            continue

        def med(target, key):
            return median([r.get(key) for r in runs if r["target"] == target
                           and not r["aborted"]])

        tps = {t: med(t, "tps") for t in TARGETS}
        cpu = {t: med(t, "pooler_cpu_us_per_txn") for t in ("pgbouncer", "syncbouncer")}
        out.append(f"| {name} (`pgbench {' '.join(args)}`) | {bench.fmt(tps['direct'])} | "
                   f"{bench.fmt(tps['pgbouncer'])} | {bench.fmt(tps['syncbouncer'])} | "
                   f"{bench.ratio(tps['syncbouncer'], tps['pgbouncer'])} | "
                   f"{bench.fmt(cpu['pgbouncer'], 1)} | {bench.fmt(cpu['syncbouncer'], 1)} | "
                   f"{bench.ratio(cpu['syncbouncer'], cpu['pgbouncer'])} |")
    errors = [r for r in results["runs"] if r["aborted"]]
    for r in errors:
        out.append(f"\n{r['workload']} {r['target']} round {r['round']}: {r.get('error')}")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--syncbouncer", default=os.environ.get("SB_BIN", bench.DEFAULT_SB))
    ap.add_argument("--pgbouncer", default=bench.DEFAULT_PGB)
    ap.add_argument("-T", "--duration", type=int, default=15, help="seconds per pgbench run")
    ap.add_argument("--rounds", type=int, default=3, help="rounds; the report gives medians")
    ap.add_argument("--scale", type=int, default=10, help="pgbench scale factor")
    ap.add_argument("--only", default="", help="comma-separated workloads (default all)")
    ap.add_argument("--built-from", default="", help="the binary's source, for the report")
    ap.add_argument("--output", help="write the Markdown report here too")
    ap.add_argument("--json", help="write the raw results as JSON here")
    opts = ap.parse_args()
    opts.only = set(filter(None, opts.only.split(",")))
    for b in (opts.syncbouncer, opts.pgbouncer):
        if not os.access(b, os.X_OK):
            sys.exit(f"not an executable: {b}")
    out_md = open(opts.output, "w") if opts.output else None
    out_json = open(opts.json, "w") if opts.json else None
    opts.git = opts.built_from or bench.git_describe()
    bench.drop_root()
    work = tempfile.mkdtemp(prefix="sb-bench-tls-")
    try:
        results = run(opts, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = report(results)
    print(text)
    if out_md:
        out_md.write(text + "\n")
        out_md.close()
    if out_json:
        json.dump(results, out_json, indent=1)
        out_json.close()


if __name__ == "__main__":
    main()
