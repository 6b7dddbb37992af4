"""A record of every synced write: the log_mutations line, and SHOW MUTATIONS keeping the last
mutation_history finished writes (with their outcome) beside those in flight."""

import re
import threading
import time

import psycopg
import pytest

from conftest import IS_PGBOUNCER, FakeServer, wait_synced_ready
from test_synced import FakeSalesforce, crm, start_synced

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="synced tables exist only in syncbouncer")


class FakeStripe(FakeServer):
    def __init__(self):
        super().__init__("fake_stripe.py")

    def requests(self):
        # the writes (the sync worker's reads are GETs)
        return [e for e in self.call("GET", "/_requests")
                if e["path"].startswith("/v1/") and e["method"] != "GET"]


@pytest.fixture
def fake_stripe():
    f = FakeStripe()
    yield f
    f.stop()


@pytest.fixture
def fake_sf():
    f = FakeSalesforce()
    yield f
    f.stop()


def start_stripe(pg, bouncer_factory, fake, pgbouncer):
    pg.sql("DROP SCHEMA IF EXISTS syncbouncer CASCADE", dbname="crm")
    pg.sql("CREATE SCHEMA IF NOT EXISTS stripe AUTHORIZATION app; "
           "DROP TABLE IF EXISTS stripe.customers; "
           "CREATE TABLE stripe.customers (id text PRIMARY KEY, email text, name text); "
           "ALTER TABLE stripe.customers OWNER TO app", dbname="crm")
    b = bouncer_factory(config={
        "databases": {"crm": f"host=127.0.0.1 port={pg.port} dbname=crm user=app password=secret"},
        "apis": [f"stripe = type=stripe base_url={fake.url} auth=bearer token=sk_test_fake "
                 f"timeout=5"],
        "synced_tables": ["crm.stripe.customers = api=stripe object=customers"],
        "pgbouncer": pgbouncer,
    })
    wait_synced_ready(pg, b, synced=True)
    return b


def write_lines(b):
    return [line for line in b.log().splitlines() if "synced write" in line]


def wait_lines(b, n):
    deadline = time.monotonic() + 10
    while len(write_lines(b)) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    return write_lines(b)


def test_log_mutations_one_line_per_write_with_the_apis_request_id(pg, bouncer_factory,
                                                                    fake_stripe):
    b = start_stripe(pg, bouncer_factory, fake_stripe, {"log_mutations": 1})
    with crm(b) as conn:
        cid = conn.execute("insert into stripe.customers (email, name) "
                           "values ('paul@caladan.io', 'Paul') returning id").fetchone()[0]
        conn.execute("update stripe.customers set name = 'Muad''Dib' where id = %s", (cid,))
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("insert into stripe.customers (email) values ('pauldune.co')")
        conn.execute("delete from stripe.customers where id = %s", (cid,))
    lines = wait_lines(b, 4)
    ids = [r["request_id"] for r in fake_stripe.requests()]
    assert len(lines) == 4 and len(ids) == 4, lines
    expect = [("insert", "200", "ok", "-"), ("update", "200", "ok", "-"),
              ("insert", "400", "validation", "23514"), ("delete", "200", "ok", "-")]
    for line, rid, (op, status, outcome, sqlstate) in zip(lines, ids, expect):
        # the client's connection prefix, as pgbouncer writes it
        assert re.search(r"C-0x[0-9a-f]+: crm/app@127\.0\.0\.1:\d+ synced write:", line), line
        assert f"table=stripe.customers operation={op} rows=1 api=stripe" in line, line
        assert f"http_status={status} " in line, line
        assert f"request_id={rid} " in line, line
        assert f"outcome={outcome} sqlstate={sqlstate}" in line, line
        assert re.search(r"api_latency=\d+\.\d ms latency=\d+\.\d ms", line), line
    # values only at DEBUG
    log = b.log()
    assert "paul@caladan.io" not in log and "pauldune.co" not in log and "Muad" not in log


def test_log_mutations_is_off_by_default_and_values_go_to_debug(pg, bouncer_factory,
                                                               fake_stripe):
    b = start_stripe(pg, bouncer_factory, fake_stripe, {})
    with crm(b) as conn:
        conn.execute("insert into stripe.customers (email) values ('a@caladan.io')")
    time.sleep(0.2)
    assert write_lines(b) == []
    b2 = start_stripe(pg, bouncer_factory, fake_stripe, {"log_mutations": 1, "verbose": 2})
    with crm(b2) as conn:
        conn.execute("insert into stripe.customers (email) values ('b@caladan.io')")
    lines = wait_lines(b2, 2)
    assert any("values:" in line and "b@caladan.io" in line for line in lines), lines


def admin(b):
    return b.connect(dbname="pgbouncer", user="postgres", password="postgres", autocommit=True)


def show(conn, what):
    cur = conn.execute("SHOW " + what)
    cols = [d.name for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def test_show_mutations_keeps_the_last_finished_writes_with_the_kill_client_id(
        pg, bouncer_factory, fake_sf):
    b = start_synced(pg, bouncer_factory, fake_sf, pgbouncer={"mutation_history": 2})
    with crm(b) as conn, admin(b) as adm:
        conn.execute("insert into salesforce.contacts (last_name) values ('One')")
        conn.execute("insert into salesforce.contacts (last_name) values ('Two')")
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("insert into salesforce.contacts (last_name, email) "
                         "values ('Three', 'pauldune.co')")
        rows = show(adm, "MUTATIONS")
        assert [r["state"] for r in rows] == ["done", "done"]  # the last two only, newest first
        assert [r["outcome"] for r in rows] == ["validation", "ok"]
        assert [r["sqlstate"] for r in rows] == ["23514", None]
        # sObject Collections answers 200 and reports the rejected record in the body
        assert [r["http_status"] for r in rows] == ["200", "200"]
        assert all(r["table"] == "salesforce.contacts" and r["operation"] == "insert" and
                   r["api"] == "salesforce" and r["rows"] == "1" and int(r["latency_us"]) > 0
                   for r in rows), rows
        mine = [c for c in show(adm, "CLIENTS") if c["database"] == "crm"]
        assert len(mine) == 1 and rows[0]["client"] == str(mine[0]["id"])
        # the id is the one KILL_CLIENT takes
        adm.execute(f"KILL_CLIENT {rows[0]['client']}")
        with pytest.raises(psycopg.OperationalError):
            conn.execute("select 1")
        # SET shrinks (and empties) the record at the next write
        adm.execute("SET mutation_history = 0")
    with crm(b) as conn2, admin(b) as adm:
        conn2.execute("insert into salesforce.contacts (last_name) values ('Four')")
        assert show(adm, "MUTATIONS") == []


def test_show_mutations_in_flight_row_names_its_client_id(pg, bouncer_factory, fake_sf):
    b = start_synced(pg, bouncer_factory, fake_sf)
    fake_sf.control(delay_ms=1500)
    with crm(b) as conn, admin(b) as adm:
        t = threading.Thread(target=lambda: conn.execute(
            "insert into salesforce.contacts (last_name) values ('Slow')"))
        t.start()
        deadline = time.monotonic() + 10
        rows = []
        while not rows and time.monotonic() < deadline:
            rows = [r for r in show(adm, "MUTATIONS") if r["state"] != "done"]
            time.sleep(0.05)
        assert len(rows) == 1 and rows[0]["outcome"] is None
        ids = [str(c["id"]) for c in show(adm, "CLIENTS") if c["database"] == "crm"]
        assert rows[0]["client"] in ids
        t.join(30)
        done = show(adm, "MUTATIONS")
        assert [r["state"] for r in done] == ["done"] and done[0]["outcome"] == "ok"
        assert done[0]["client"] == rows[0]["client"]
