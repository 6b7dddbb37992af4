"""The Prometheus endpoint (metrics_listen): what a scrape shows while clients read and write
synced tables, who may read it, where it listens, and the Grafana dashboard that reads it."""

import base64
import hashlib
import json
import os
import re
import socket
import subprocess
import time
import urllib.error
import urllib.request

import psycopg
import pytest

from conftest import IS_PGBOUNCER, SRC_DIR, free_port
from test_synced import FakeSalesforce, crm, start_synced

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="pgbouncer 1.18 has no metrics endpoint")

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*"'
                    r'(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*")*)?\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@pytest.fixture
def fake_sf():
    f = FakeSalesforce()
    yield f
    f.stop()


def parse(text):
    """Prometheus text format 0.0.4 -> ({(name, frozenset(labels)): value}, {family: type}).
    Fails on a line that is not a comment or a sample, and on a sample whose family has no
    TYPE line before it."""
    samples, types = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert name not in types, f"family {name} declared twice"
            types[name] = kind
            continue
        if line.startswith("#") or not line:
            continue
        m = SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in types or (family in types and types[family] == "histogram"), \
            f"sample without a TYPE: {line!r}"
        key = (name, frozenset(LABEL.findall(labels)))
        assert key not in samples, f"duplicate sample {line!r}"
        samples[key] = float(value)
    return samples, types


def get(samples, metric, **labels):
    want = set(labels.items())
    found = [v for (n, ls), v in samples.items() if n == metric and want <= set(ls)]
    assert len(found) == 1, f"{metric} {labels}: {len(found)} samples"
    return found[0]


def scrape(url, auth=None):
    req = urllib.request.Request(url)
    if auth is not None:
        req.add_header("Authorization",
                       "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return r.read().decode()


def status_of(url, auth=None, method="GET"):
    req = urllib.request.Request(url, method=method)
    if auth is not None:
        req.add_header("Authorization",
                       "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers)


def check_histogram(samples, name, **labels):
    """Cumulative buckets ending in +Inf == _count; returns the count."""
    buckets = sorted(((float(dict(ls)["le"]), v) for (n, ls), v in samples.items()
                      if n == name + "_bucket" and set(labels.items()) <= set(ls)))
    assert buckets and buckets[-1][0] == float("inf"), f"{name} {labels}: no +Inf bucket"
    counts = [v for _, v in buckets]
    assert counts == sorted(counts), f"{name} {labels}: buckets not cumulative"
    count = get(samples, name + "_count", **labels)
    assert counts[-1] == count
    assert get(samples, name + "_sum", **labels) > 0
    return count


def test_scrape_during_reads_and_synced_writes(pg, bouncer_factory, fake_sf):
    port = free_port()
    b = start_synced(pg, bouncer_factory, fake_sf,
                     pgbouncer={"metrics_listen": f"127.0.0.1:{port}"})
    url = f"http://127.0.0.1:{port}/metrics"
    with crm(b) as conn:
        conn.execute("select 1")
        before, _ = parse(scrape(url))
        for i in range(20):
            conn.execute("select %s", (i,))
        for name in ("Atreides", "Harkonnen", "Corrino"):
            conn.execute("insert into salesforce.contacts (last_name) values (%s)", (name,))
        conn.execute("update salesforce.contacts set first_name = 'Paul' "
                     "where last_name = 'Atreides'")
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("insert into salesforce.contacts (last_name, email) "
                         "values ('x', 'pauldune.co')")
        # a change made in the API, brought in by a sync pass
        fake_sf._call("POST", "/_records", {"object": "Contact", "op": "create",
                                            "fields": {"LastName": "Fenring"}})
        with b.connect(dbname="pgbouncer", user="postgres", password="postgres",
                       autocommit=True) as adm:
            adm.execute("SYNC crm.salesforce.contacts")
        text = scrape(url)
    after, types = parse(text)

    assert get(after, "pgbouncer_up") == 1
    # pgbouncer's views, under the pgbouncer exporter's names
    q0 = get(before, "pgbouncer_stats_queries_pooled_total", database="crm")
    q1 = get(after, "pgbouncer_stats_queries_pooled_total", database="crm")
    assert q1 >= q0 + 20
    assert get(after, "pgbouncer_stats_received_bytes_total", database="crm") > \
        get(before, "pgbouncer_stats_received_bytes_total", database="crm")
    assert types["pgbouncer_stats_queries_pooled_total"] == "counter"
    assert get(after, "pgbouncer_pools_client_active_connections", database="crm",
               user="app") == 1
    assert types["pgbouncer_pools_server_idle_connections"] == "gauge"
    assert get(after, "pgbouncer_databases_current_connections", name="crm") >= 1
    assert get(after, "pgbouncer_config_max_client_connections") == 100
    assert get(after, "pgbouncer_used_clients") >= 1
    assert get(after, "syncbouncer_clients", database="crm", user="app", state="active") == 1
    # the synced-table side
    assert get(after, "syncbouncer_synced_table_inserts_total", table="salesforce.contacts") == 3
    assert get(after, "syncbouncer_synced_table_updates_total", table="salesforce.contacts") == 1
    assert get(after, "syncbouncer_synced_table_rejected_total", table="salesforce.contacts") == 1
    assert get(after, "syncbouncer_synced_table_state", table="salesforce.contacts",
               state="ready") == 1
    lag = [ls for (n, ls), _ in after.items() if n == "syncbouncer_synced_table_state"]
    assert len(lag) == 1 and dict(lag[0])["sync_state"] in ("idle", "polling")
    assert get(after, "syncbouncer_synced_table_synced_rows_total",
               table="salesforce.contacts") >= 1
    assert get(after, "syncbouncer_synced_table_sync_lag_seconds",
               table="salesforce.contacts") >= 0
    assert get(after, "syncbouncer_api_requests_total", api="salesforce") >= 5
    assert get(after, "syncbouncer_journal_pending_entries") == 0
    assert check_histogram(after, "syncbouncer_mutation_duration_seconds",
                           table="salesforce.contacts", operation="insert", outcome="ok") == 3
    assert check_histogram(after, "syncbouncer_mutation_duration_seconds",
                           table="salesforce.contacts", operation="update", outcome="ok") == 1
    assert check_histogram(after, "syncbouncer_mutation_duration_seconds",
                           table="salesforce.contacts", operation="insert",
                           outcome="validation") == 1
    assert check_histogram(after, "syncbouncer_api_request_duration_seconds",
                           api="salesforce", outcome="ok") == 4
    assert check_histogram(after, "syncbouncer_api_request_duration_seconds",
                           api="salesforce", outcome="validation") == 1
    # no secret of the [apis] line, no value written
    assert "test-client-secret" not in text and "pauldune.co" not in text

    # the dashboard names only metrics the endpoint exports
    with open(os.path.join(SRC_DIR, "etc", "grafana-dashboard.json")) as f:
        dash = json.load(f)
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 8
    families = set(types)
    used = set()
    for e in exprs:
        for name in re.findall(r"\b((?:pgbouncer|syncbouncer)_[a-z0-9_]+)", e):
            used.add(name)
            family = re.sub(r"_(bucket|sum|count)$", "", name)
            assert name in families or (family in families and types[family] == "histogram"), \
                f"the dashboard uses {name}, which the endpoint does not export"
    assert {"pgbouncer_pools_client_active_connections",
            "syncbouncer_synced_table_sync_lag_seconds", "syncbouncer_journal_pending_entries",
            "syncbouncer_api_request_duration_seconds_bucket",
            "syncbouncer_mutation_duration_seconds_bucket"} <= used


def test_journal_backlog(pg, bouncer_factory, fake_sf, tmp_path):
    """An entry the database cannot take yet (its table is gone) stays pending in the journal:
    the backlog gauge counts it; a pooler with an empty journal shows 0."""
    journal = tmp_path / "sb.journal"
    journal.write_text(json.dumps({
        "id": "e1", "db": "crm", "schema": "salesforce", "table": "gone", "pk": "id",
        "op": "I", "rows": [{"key": None, "image": {"id": "003X", "last_name": "Gone"},
                             "fields": {}}]}) + "\n")
    port = free_port()
    start_synced(pg, bouncer_factory, fake_sf,
                 pgbouncer={"metrics_listen": f"127.0.0.1:{port}", "journal_file": str(journal)})
    samples, types = parse(scrape(f"http://127.0.0.1:{port}/metrics"))
    assert types["syncbouncer_journal_pending_entries"] == "gauge"
    assert get(samples, "syncbouncer_journal_pending_entries") == 1
    port2 = free_port()
    start_synced(pg, bouncer_factory, fake_sf,
                 pgbouncer={"metrics_listen": f"127.0.0.1:{port2}",
                            "journal_file": str(tmp_path / "empty.journal")})
    samples, _ = parse(scrape(f"http://127.0.0.1:{port2}/metrics"))
    assert get(samples, "syncbouncer_journal_pending_entries") == 0


def test_other_paths_and_methods(bouncer_factory):
    port = free_port()
    bouncer_factory(config={"pgbouncer": {"metrics_listen": f"127.0.0.1:{port}"}})
    assert status_of(f"http://127.0.0.1:{port}/")[0] == 404
    assert status_of(f"http://127.0.0.1:{port}/metrics", method="POST")[0] == 405
    assert status_of(f"http://127.0.0.1:{port}/metrics?x=1")[0] == 200


def test_metrics_users_need_their_auth_file_password(bouncer_factory):
    port = free_port()
    md5 = "md5" + hashlib.md5(b"s3cretprom" + b"prom").hexdigest()  # password + user
    b = bouncer_factory(config={"pgbouncer": {"metrics_listen": f"127.0.0.1:{port}",
                                              "metrics_users": "prom, other"}},
                        users={"app": "secret", "postgres": "postgres", "prom": md5,
                               "other": "plainpw"})
    url = f"http://127.0.0.1:{port}/metrics"
    code, headers = status_of(url)
    assert code == 401 and headers.get("WWW-Authenticate", "").startswith("Basic")
    assert status_of(url, ("prom", "wrong"))[0] == 401
    assert status_of(url, ("app", "secret"))[0] == 401  # in auth_file, not in metrics_users
    assert status_of(url, ("nobody", "x"))[0] == 401
    assert status_of(url, ("prom", "s3cretprom"))[0] == 200  # md5 in the auth_file
    assert status_of(url, ("other", "plainpw"))[0] == 200  # plain text in the auth_file
    assert "pgbouncer_up 1" in scrape(url, ("prom", "s3cretprom"))
    assert 'authentication failed for user "prom"' in b.log()
    assert "s3cretprom" not in b.log() and "wrong" not in b.log()
    # a RELOAD that changes metrics_users applies to the next request
    ini = open(b.ini).read().replace("metrics_users = prom, other", "metrics_users = other")
    with open(b.ini, "w") as f:
        f.write(ini)
    with b.connect(dbname="pgbouncer", user="postgres", password="postgres",
                   autocommit=True) as adm:
        adm.execute("RELOAD")
    assert status_of(url, ("prom", "s3cretprom"))[0] == 401
    assert status_of(url, ("other", "plainpw"))[0] == 200


def test_unix_socket(bouncer_factory):
    b = bouncer_factory(config={"pgbouncer": {"metrics_listen": "@WORKDIR@/metrics.sock"}})
    path = os.path.join(b.workdir, "metrics.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    parse(body.decode())
    assert b"pgbouncer_up 1" in body


@pytest.mark.parametrize("value", ["127.0.0.1:notaport", "127.0.0.1:0", "no-port-here"])
def test_bad_metrics_listen_stops_the_start_with_a_reason(bouncer_factory, value):
    b = bouncer_factory(config={"pgbouncer": {"metrics_listen": value}}, start=False)
    r = subprocess.run(b.command(), stdin=subprocess.DEVNULL, capture_output=True, timeout=30,
                       cwd=b.workdir)
    out = r.stdout.decode() + r.stderr.decode() + b.output()
    assert r.returncode != 0
    assert "metrics_listen" in out, out
