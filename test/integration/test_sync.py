"""The read side of synced tables: records created, changed and deleted directly in the API
(the fakes' /_records control endpoints, as another user of the API would) reach the table
through the sync worker; backfill, resume after kill -9, races with writes through
syncbouncer, and the request budget.

Intervals are short (1 s) and every wait polls with a bound that only guards against a hang.
"""

import signal
import threading
import time
import urllib.request

import psycopg
import pytest

from conftest import IS_PGBOUNCER, FakeServer
from test_synced import FakeSalesforce, start_synced

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="synced tables exist only in syncbouncer")

SF_TABLE = "crm.salesforce.contacts"


def admin(b):
    return b.connect(dbname="pgbouncer", user="postgres", password="postgres", autocommit=True)


def sync_rows(b):
    with admin(b) as conn:
        cur = conn.execute("SHOW SYNCED_TABLES")
        cols = [d.name for d in cur.description]
        return {r[0] + "." + r[1]: dict(zip(cols, r)) for r in cur.fetchall()}


def sync_now(b, table=SF_TABLE):
    with admin(b) as conn:
        conn.execute(f"SYNC {table}")


def wait_for(what, check, timeout=60):
    """Polls check() until it is truthy; the bound only guards against a hang."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.1)


def sf_rows(pg):
    return pg.sql("SELECT id, first_name, last_name, email, note FROM salesforce.contacts "
                  "ORDER BY id", dbname="crm")


def sf_records(fake, **body):
    return fake._call("POST", "/_records", dict({"object": "Contact"}, **body))


@pytest.fixture
def fake_sf():
    f = FakeSalesforce()
    yield f
    f.stop()


def test_salesforce_changes_made_in_the_api_reach_the_table(pg, bouncer_factory, fake_sf):
    b = start_synced(pg, bouncer_factory, fake_sf,
                     table_extra="columns='note:Description' sync_interval=1")
    new = sf_records(fake_sf, op="create", fields={"FirstName": "Leto", "LastName": "Atreides",
                                                   "Email": "leto@caladan.io",
                                                   "Description": "duke"})["id"]
    wait_for("the created record", lambda: sf_rows(pg) == [
        (new, "Leto", "Atreides", "leto@caladan.io", "duke")])
    sf_records(fake_sf, op="update", id=new, fields={"Email": "leto@arrakis.io"})
    wait_for("the changed record", lambda: sf_rows(pg) == [
        (new, "Leto", "Atreides", "leto@arrakis.io", "duke")])
    sf_records(fake_sf, op="delete", id=new)
    wait_for("the deleted record", lambda: sf_rows(pg) == [])
    row = sync_rows(b)[SF_TABLE]
    assert row["sync_state"] in ("idle", "polling")
    assert row["last_sync"] is not None
    assert int(row["synced_rows"]) >= 3
    # the reads were SOQL queryAll on SystemModstamp, following the documented shape
    queries = [r for r in fake_sf._call("GET", "/_requests") if r["path"].endswith("/queryAll")]
    assert queries and all("SystemModstamp" in r["query"] for r in queries)


def test_salesforce_record_changed_twice_within_one_second(pg, bouncer_factory, fake_sf):
    """SystemModstamp has whole seconds: a change made in the same second as the one a pass
    last read still reaches the table (the next pass reads that second again)."""
    b = start_synced(pg, bouncer_factory, fake_sf, table_extra="sync_interval=1")
    # at the start of a second, so that the three steps below share it
    time.sleep(1.05 - time.time() % 1)
    second = int(time.time())
    new = sf_records(fake_sf, op="create", fields={"LastName": "Twice", "Email": "a@x.io"})["id"]
    sync_now(b)
    assert sf_rows(pg)[0][3] == "a@x.io"
    sf_records(fake_sf, op="update", id=new, fields={"Email": "b@x.io"})
    if int(time.time()) != second:
        pytest.skip("the machine was too slow to make both changes within one second")
    wait_for("the second change of the same second", lambda: sf_rows(pg)[0][3] == "b@x.io")


def test_salesforce_backfill_of_100000_records_shows_progress(pg, bouncer_factory, fake_sf):
    """The records the API already holds are loaded at start, with progress in SHOW and log."""
    ids = sf_records(fake_sf, op="create", count=100000,
                     fields={"LastName": "L{n}", "Email": "c{n}@example.com"})["ids"]
    fake_sf.control(query_batch=2000)

    def start():
        # the fake's first answer sorts all 100,000 records before it pages them: on a busy
        # machine that alone outlasts the 3 s the other tests allow an API call, the page
        # fails and the backfill retries (more requests than the 50 counted below)
        return start_synced(pg, bouncer_factory, fake_sf, api_extra="rate_limit=20",
                            table_extra="columns='note:Description' sync_interval=0",
                            settle_timeout=120, api_timeout=60)

    b = start()
    # start_synced also returns on a failed pass (other tests set those up): this one waits
    # for the backfill's end, the pass that finished; the bound only guards against a hang
    row = wait_for("the backfill's end", lambda: (lambda r: r if r["last_sync"] is not None
                                                  else None)(sync_rows(b)[SF_TABLE]),
                   timeout=300)
    assert "sync failed" not in b.log(), b.log()
    assert row["backfill_rows"] == "100000" and row["backfill_total"] == "100000"
    assert row["sync_state"] == "idle" and row["last_sync"] is not None
    assert pg.sql("SELECT count(*), count(DISTINCT id) FROM salesforce.contacts",
                  dbname="crm")[0] == (100000, 100000)
    assert pg.sql("SELECT last_name, email FROM salesforce.contacts WHERE id = %s" % (
        "'" + ids[12345] + "'"), dbname="crm") == [("L12345", "c12345@example.com")]
    log = b.log()
    progress = [l for l in log.splitlines() if "backfill" in l and "rows/s" in l]
    assert any("left" in l and "/100000 rows" in l for l in progress), progress
    assert any("backfill done, 100000 rows" in l for l in progress), progress
    # 50 pages of 2000, each from the one query's nextRecordsUrl
    reqs = [r for r in fake_sf._call("GET", "/_requests") if "/query" in r["path"]]
    assert len(reqs) == 50
    assert sum(1 for r in reqs if r["path"].endswith("/queryAll")) == 1


def test_salesforce_backfill_shows_progress_while_running(pg, bouncer_factory, fake_sf):
    sf_records(fake_sf, op="create", count=3000, fields={"LastName": "L{n}"})
    fake_sf.control(query_batch=500)
    pg.sql("DROP SCHEMA IF EXISTS syncbouncer CASCADE", dbname="crm")
    from test_synced import TABLE_DDL
    pg.sql(TABLE_DDL, dbname="crm")
    api = (f"type=salesforce base_url={fake_sf.url} api_version=v59.0 auth=oauth2 "
           f"token_url={fake_sf.url}/services/oauth2/token client_id=test-client-id "
           f"client_secret=test-client-secret refresh_token=test-refresh-token "
           f"rate_limit=4 sync_budget=50")
    b = bouncer_factory(config={
        "databases": {"crm": f"host=127.0.0.1 port={pg.port} dbname=crm user=app password=secret"},
        "apis": [f"salesforce = {api}"],
        "synced_tables": [f"{SF_TABLE} = api=salesforce object=Contact sync_interval=0"],
    })
    # 6 pages at 2 requests a second: SHOW is seen in the middle of it
    row = wait_for("a backfill in progress", lambda: (lambda r: r if r["sync_state"] ==
                   "backfilling" and 0 < int(r["backfill_rows"]) < 3000 else None)(
                       sync_rows(b)[SF_TABLE]))
    assert row["backfill_total"] == "3000"
    wait_for("the backfill's end", lambda: sync_rows(b)[SF_TABLE]["backfill_rows"] == "3000"
             and sync_rows(b)[SF_TABLE]["sync_state"] == "idle")


def test_salesforce_kill_9_mid_backfill_resumes_from_the_stored_cursor(pg, bouncer_factory,
                                                                        fake_sf):
    ids = set(sf_records(fake_sf, op="create", count=20000, fields={"LastName": "L{n}"})["ids"])
    fake_sf.control(query_batch=1000)
    pg.sql("DROP SCHEMA IF EXISTS syncbouncer CASCADE", dbname="crm")
    from test_synced import TABLE_DDL
    pg.sql(TABLE_DDL, dbname="crm")
    api = (f"type=salesforce base_url={fake_sf.url} api_version=v59.0 auth=oauth2 "
           f"token_url={fake_sf.url}/services/oauth2/token client_id=test-client-id "
           f"client_secret=test-client-secret refresh_token=test-refresh-token rate_limit=8")
    config = {
        "databases": {"crm": f"host=127.0.0.1 port={pg.port} dbname=crm user=app password=secret"},
        "apis": [f"salesforce = {api}"],
        "synced_tables": [f"{SF_TABLE} = api=salesforce object=Contact sync_interval=0"],
    }
    b = bouncer_factory(config=config)
    wait_for("part of the backfill", lambda: 3000 <= pg.sql(
        "SELECT count(*) FROM salesforce.contacts", dbname="crm")[0][0])
    b.proc.send_signal(signal.SIGKILL)
    b.proc.wait(10)
    b.stopped_by_us = True
    loaded = pg.sql("SELECT count(*) FROM salesforce.contacts", dbname="crm")[0][0]
    stored = pg.sql("SELECT cursor, backfilling, backfill_rows FROM syncbouncer.sync_cursor",
                    dbname="crm")
    assert loaded < 20000 and stored[0][1] is True and stored[0][2] == loaded
    fake_sf._call("DELETE", "/_requests")
    b2 = bouncer_factory(config=config)
    wait_for("the resumed backfill's end",
             lambda: sync_rows(b2)[SF_TABLE]["last_sync"] is not None)
    got = pg.sql("SELECT id FROM salesforce.contacts", dbname="crm")
    assert len(got) == 20000 and {r[0] for r in got} == ids
    row = sync_rows(b2)[SF_TABLE]
    # the counter is stored with the rows: a page applied twice would count twice
    assert row["backfill_rows"] == "20000"
    # the second run asked from the cursor, and fetched only what was left
    first = [r for r in fake_sf._call("GET", "/_requests") if "/query" in r["path"]][0]
    assert "WHERE" in urllib.request.unquote(first["query"]).replace("+", " ")
    assert "backfill resumes from its stored cursor" in b2.log()


def test_sync_racing_writes_never_leaves_an_older_value(pg, bouncer_factory, fake_sf):
    b = start_synced(pg, bouncer_factory, fake_sf,
                     table_extra="columns='note:Description' sync_interval=0")
    with b.connect(dbname="crm", autocommit=True) as conn:
        (x,) = conn.execute("insert into salesforce.contacts (last_name, email) "
                            "values ('X', 'x0@example.com') returning id").fetchone()
        (y,) = conn.execute("insert into salesforce.contacts (last_name, email) "
                            "values ('Y', 'y0@example.com') returning id").fetchone()
    # 1. a write through syncbouncer commits after the sync's page was fetched
    sf_records(fake_sf, op="update", id=x, fields={"Email": "x-api-old@example.com"})
    fake_sf.control(query_delay_ms=1500)
    t = threading.Thread(target=sync_now, args=(b,))
    t.start()
    wait_for("the query", lambda: any(r["path"].endswith("/queryAll") and r["time"] > 0
                                      for r in fake_sf._call("GET", "/_requests")[-1:]))
    with b.connect(dbname="crm", autocommit=True) as conn:
        conn.execute("update salesforce.contacts set email = 'x-client-new@example.com' "
                     "where id = %s", (x,))
    t.join(30)
    fake_sf.control(query_delay_ms=0)
    assert pg.sql(f"SELECT email FROM salesforce.contacts WHERE id = '{x}'",
                  dbname="crm") == [("x-client-new@example.com",)]
    # 2. a write in flight (its row locked, the API not answered yet) while a page applies
    sf_records(fake_sf, op="update", id=y, fields={"Email": "y-api-mid@example.com"})
    fake_sf.control(write_delay_ms=2000)
    w = threading.Thread(target=lambda: b.connect(dbname="crm", autocommit=True).execute(
        "update salesforce.contacts set email = 'y-client@example.com' where id = %s", (y,)))
    w.start()
    wait_for("the write in flight", lambda: any(
        r["method"] == "PATCH" for r in fake_sf._call("GET", "/_requests")[-2:]))
    sync_now(b)
    w.join(30)
    fake_sf.control(write_delay_ms=0)
    assert pg.sql(f"SELECT email FROM salesforce.contacts WHERE id = '{y}'",
                  dbname="crm") == [("y-client@example.com",)]
    # the next pass brings the API's state, which is the newest
    sync_now(b)
    store = fake_sf.store()
    assert sorted(sf_rows(pg)) == sorted(
        (i, r.get("FirstName"), r.get("LastName"), r.get("Email"), r.get("Description"))
        for i, r in store.items())


def test_sync_stays_within_its_request_budget(pg, bouncer_factory, fake_sf):
    """rate_limit=4, sync_budget=50: at most 2 sync requests a second, counted at the fake."""
    sf_records(fake_sf, op="create", count=1000, fields={"LastName": "L{n}"})
    fake_sf.control(query_batch=100)
    b = start_synced(pg, bouncer_factory, fake_sf, api_extra="rate_limit=4 sync_budget=50",
                     table_extra="sync_interval=0")
    times = sorted(r["time"] for r in fake_sf._call("GET", "/_requests")
                   if "/query" in r["path"])
    assert len(times) == 10
    for i, t0 in enumerate(times):
        in_window = [t for t in times[i:] if t < t0 + 1.0]
        assert len(in_window) <= 3, times  # 2 a second, plus one for the window's edges
    assert len(times) <= 2 * (times[-1] - times[0]) + 2, times
    assert pg.sql("SELECT count(*) FROM salesforce.contacts", dbname="crm")[0][0] == 1000


def test_sync_failure_is_visible_and_retried(pg, bouncer_factory, fake_sf):
    b = start_synced(pg, bouncer_factory, fake_sf,
                     table_extra="columns='note:Description' sync_interval=1")
    fake_sf.control(fail_status=503)
    with admin(b) as conn:
        with pytest.raises(psycopg.Error, match="503"):
            conn.execute(f"SYNC {SF_TABLE}")
    row = sync_rows(b)[SF_TABLE]
    assert row["sync_state"] == "failed" and "503" in row["error"]
    assert "sync failed, retrying in" in b.log()
    fake_sf.control(fail_status=0)
    new = sf_records(fake_sf, op="create", fields={"LastName": "Back"})["id"]
    wait_for("the retried pass", lambda: [r[0] for r in sf_rows(pg)] == [new])
    assert sync_rows(b)[SF_TABLE]["sync_state"] != "failed"


STAMP = "2024-05-01T10:00:00.000+0000"
HOSTILE_PAGES = {
    "not JSON": ("<html>down for maintenance</html>", "query answer"),
    "over 8 MiB": ("x" * (9 << 20), "larger than"),
    "nested too deep": ("[" * 100000, "query answer"),
    "records not an array": ('{"totalSize": 1, "done": true, "records": {"Id": "x"}}',
                             "without records/done"),
    "done missing": ('{"totalSize": 0, "records": []}', "without records/done"),
    "done not a boolean": ('{"totalSize": 0, "done": "yes", "records": []}',
                           "without records/done"),
    "record without Id": ('{"totalSize": 1, "done": true, "records": [{"SystemModstamp": "%s"}]}'
                          % STAMP, "without Id"),
    "Id not a string": ('{"totalSize": 1, "done": true, "records": [{"Id": 7, '
                        '"SystemModstamp": "%s"}]}' % STAMP, "without Id"),
    "bad SystemModstamp": ('{"totalSize": 1, "done": true, "records": [{"Id": "003A", '
                           '"SystemModstamp": "yesterday"}]}', "SystemModstamp"),
    "more without nextRecordsUrl": ('{"totalSize": 1, "done": false, "records": []}',
                                    "no nextRecordsUrl"),
    "nextRecordsUrl to another host": ('{"totalSize": 1, "done": false, "records": [], '
                                       '"nextRecordsUrl": "http://elsewhere/x"}',
                                       "unusable nextRecordsUrl"),
    "nextRecordsUrl naming itself": ("loop", "never ends"),
}


@pytest.mark.parametrize("kind", list(HOSTILE_PAGES))
def test_hostile_query_page_fails_the_pass_and_backs_off(pg, bouncer_factory, fake_sf, kind):
    """A query answer that is not a usable page ends the pass with a clear error in SHOW
    SYNCED_TABLES and a back-off; the pooler keeps serving, and once the API answers properly
    again the sync goes on."""
    b = start_synced(pg, bouncer_factory, fake_sf,
                     table_extra="columns='note:Description' sync_interval=1")
    first = sf_records(fake_sf, op="create", fields={"LastName": "Before"})["id"]
    wait_for("the first record", lambda: [r[0] for r in sf_rows(pg)] == [first])
    body, why = HOSTILE_PAGES[kind]
    fake_sf.control(query_answer=body)
    sf_records(fake_sf, op="update", id=first, fields={"LastName": "During"})
    row = wait_for("the failed pass", lambda: (lambda r: r if r["sync_state"] == "failed"
                                                 else None)(sync_rows(b)[SF_TABLE]))
    assert why in row["error"], row
    assert "sync failed, retrying in" in b.log()
    # the pooler still serves
    with b.connect(dbname="crm", autocommit=True) as conn:
        assert conn.execute("select count(*) from salesforce.contacts").fetchone() == (1,)
    fake_sf.control(query_answer="")
    sf_records(fake_sf, op="create", fields={"LastName": "After"})
    wait_for("the sync after the API recovered",
             lambda: sorted(r[2] for r in sf_rows(pg)) == ["After", "During"])
    assert sync_rows(b)[SF_TABLE]["sync_state"] != "failed"


@pytest.fixture
def fake_stripe():
    f = FakeServer("fake_stripe.py")
    yield f
    f.stop()


@pytest.fixture
def fake_rest():
    f = FakeServer("fake_rest.py", "--token", "rest-token")
    yield f
    f.stop()


OTHER_DDL = """
DROP SCHEMA IF EXISTS syncbouncer CASCADE;
DROP SCHEMA IF EXISTS stripe CASCADE;
DROP SCHEMA IF EXISTS internal CASCADE;
CREATE SCHEMA stripe AUTHORIZATION app;
CREATE TABLE stripe.customers (id text PRIMARY KEY, email text, name text, created bigint);
ALTER TABLE stripe.customers OWNER TO app;
CREATE SCHEMA internal AUTHORIZATION app;
CREATE TABLE internal.contacts (id text PRIMARY KEY, name text, email text, version bigint);
ALTER TABLE internal.contacts OWNER TO app;
"""

REST_API = ("type=rest base_url={url} auth=bearer token=rest-token path=/contacts "
            "list_path=/contacts changed_since=updated_since cursor_field=version "
            "deleted_field=deleted list_key=data")


def start_other(pg, bouncer_factory, apis, tables):
    b = bouncer_factory(config={
        "databases": {"crm": f"host=127.0.0.1 port={pg.port} dbname=crm user=app password=secret"},
        "apis": apis,
        "synced_tables": tables,
    })
    wait_for("the first passes", lambda: all(
        r["last_sync"] is not None or r["sync_state"] == "failed"
        for r in sync_rows(b).values()))
    return b


def test_stripe_backfill_then_events_reach_the_table(pg, bouncer_factory, fake_stripe):
    pg.sql(OTHER_DDL, dbname="crm")
    made = fake_stripe.call("POST", "/_records", {"op": "create", "count": 250, "fields": {
        "email": "c{n}@example.com", "name": "C{n}"}})["data"]
    b = start_other(pg, bouncer_factory,
                    [f"stripe = type=stripe base_url={fake_stripe.url} auth=bearer "
                     "token=sk_test_fake rate_limit=50"],
                    ["crm.stripe.customers = api=stripe object=customers sync_interval=1"])
    rows = lambda: pg.sql("SELECT id, email, name FROM stripe.customers ORDER BY id", dbname="crm")
    assert rows() == sorted((o["id"], o["email"], o["name"]) for o in made)
    assert sync_rows(b)["crm.stripe.customers"]["backfill_rows"] == "250"
    # changes directly in Stripe arrive through /v1/events
    new = fake_stripe.call("POST", "/_records", {"op": "create", "fields": {
        "email": "new@example.com", "name": "New"}})
    fake_stripe.call("POST", "/_records", {"op": "update", "id": made[0]["id"],
                                           "fields": {"name": "Renamed"}})
    fake_stripe.call("POST", "/_records", {"op": "delete", "id": made[1]["id"]})
    want = sorted([(new["id"], "new@example.com", "New"), (made[0]["id"], made[0]["email"],
                                                           "Renamed")] +
                  [(o["id"], o["email"], o["name"]) for o in made[2:]])
    wait_for("the events", lambda: rows() == want)
    assert pg.sql(f"SELECT created FROM stripe.customers WHERE id = '{new['id']}'",
                  dbname="crm") == [(new["created"],)]
    log = fake_stripe.call("GET", "/_requests")
    lists = [r for r in log if r["method"] == "GET" and r["path"] == "/v1/customers"]
    events = [r for r in log if r["method"] == "GET" and r["path"] == "/v1/events"]
    assert len(lists) == 3 and "starting_after=" in lists[1]["query"]
    assert any("ending_before=" in r["query"] and "customer.deleted" in
               urllib.request.unquote(r["query"]) for r in events)


def test_rest_changes_and_deletes_reach_the_table(pg, bouncer_factory, fake_rest):
    pg.sql(OTHER_DDL, dbname="crm")
    first = fake_rest.call("POST", "/_records", {"op": "create", "fields": {
        "name": "Ann", "email": "ann@example.com"}})
    b = start_other(pg, bouncer_factory, ["internal = " + REST_API.format(url=fake_rest.url)],
                    ["crm.internal.contacts = api=internal sync_interval=1"])
    rows = lambda: pg.sql("SELECT id, name, email FROM internal.contacts ORDER BY id",
                          dbname="crm")
    assert rows() == [(first["id"], "Ann", "ann@example.com")]
    second = fake_rest.call("POST", "/_records", {"op": "create", "fields": {
        "name": "Bob", "email": "bob@example.com"}})
    fake_rest.call("POST", "/_records", {"op": "update", "id": first["id"],
                                         "fields": {"email": "ann@new.example.com"}})
    wait_for("the change", lambda: rows() == [(first["id"], "Ann", "ann@new.example.com"),
                                              (second["id"], "Bob", "bob@example.com")])
    fake_rest.call("POST", "/_records", {"op": "delete", "id": first["id"]})
    wait_for("the delete", lambda: rows() == [(second["id"], "Bob", "bob@example.com")])
    # a write through syncbouncer and the sync agree
    with b.connect(dbname="crm", autocommit=True) as conn:
        conn.execute("update internal.contacts set name = 'Robert' where id = %s",
                     (second["id"],))
    sync_now(b, "crm.internal.contacts")
    assert rows() == [(second["id"], "Robert", "bob@example.com")]
    polls = [r for r in fake_rest.call("GET", "/_requests")
             if r["method"] == "GET" and r["path"] == "/contacts"]
    assert "updated_since=" not in polls[0]["query"]
    assert all("updated_since=" in r["query"] for r in polls[1:])


def test_a_failing_table_never_stops_the_others(pg, bouncer_factory, fake_rest, fake_sf):
    pg.sql(OTHER_DDL, dbname="crm")
    from test_synced import TABLE_DDL
    pg.sql(TABLE_DDL, dbname="crm")
    fake_sf.control(fail_status=500)
    b = start_other(pg, bouncer_factory, [
        "internal = " + REST_API.format(url=fake_rest.url),
        f"salesforce = type=salesforce base_url={fake_sf.url} auth=oauth2 "
        f"token_url={fake_sf.url}/services/oauth2/token client_id=test-client-id "
        "client_secret=test-client-secret refresh_token=test-refresh-token"],
        ["crm.internal.contacts = api=internal sync_interval=1",
         f"{SF_TABLE} = api=salesforce object=Contact sync_interval=1"])
    wait_for("the failure", lambda: sync_rows(b)[SF_TABLE]["sync_state"] == "failed")
    assert "500" in sync_rows(b)[SF_TABLE]["error"]
    rec = fake_rest.call("POST", "/_records", {"op": "create", "fields": {"name": "Cy"}})
    wait_for("the other table's change", lambda: pg.sql(
        "SELECT id FROM internal.contacts", dbname="crm") == [(rec["id"],)])
    # the failing table is still being retried (failed, or in a retry), never done
    assert sync_rows(b)[SF_TABLE]["last_sync"] is None


@pytest.fixture
def fake_hubspot():
    f = FakeServer("fake_hubspot.py", "--token", "hs-token")
    yield f
    f.stop()


HS_DDL = """
DROP SCHEMA IF EXISTS syncbouncer CASCADE;
DROP SCHEMA IF EXISTS hubspot CASCADE;
CREATE SCHEMA hubspot AUTHORIZATION app;
CREATE TABLE hubspot.contacts (id text PRIMARY KEY, firstname text, lastname text, email text);
ALTER TABLE hubspot.contacts OWNER TO app;
"""


def test_hubspot_search_past_10000_limit_and_archived_records(pg, bouncer_factory,
                                                              fake_hubspot):
    """HubSpot's search stops at 10,000 results: the backfill gets past by moving the cursor."""
    pg.sql(HS_DDL, dbname="crm")
    ids = fake_hubspot.call("POST", "/_records", {"op": "create", "count": 10300,
                                                  "properties": {"firstname": "F{n}",
                                                                 "lastname": "L{n}",
                                                                 "email": "h{n}@example.com"}})["ids"]
    b = start_other(pg, bouncer_factory,
                    [f"hubspot = type=hubspot base_url={fake_hubspot.url} auth=bearer "
                     "token=hs-token rate_limit=100"],
                    ["crm.hubspot.contacts = api=hubspot object=contacts sync_interval=1 "
                     "page_size=200"])
    rows = lambda: pg.sql("SELECT id, firstname, lastname, email FROM hubspot.contacts",
                          dbname="crm")
    assert sorted(rows()) == sorted((i, f"F{n}", f"L{n}", f"h{n}@example.com")
                                    for n, i in enumerate(ids))
    searches = [r for r in fake_hubspot.call("GET", "/_requests") if r["path"].endswith("/search")]
    restarts = [r for r in searches if "after" not in r["body"]]
    assert len(restarts) == 2  # the first search, and one move of the cursor at 10,000
    assert max(int(r["body"].get("after", 0)) for r in searches) == 9800
    assert all(r["body"]["sorts"] == [{"propertyName": "hs_lastmodifieddate",
                                       "direction": "ASCENDING"}] for r in searches)
    # changes directly in HubSpot: a new contact, a change, an archived one
    new = fake_hubspot.call("POST", "/_records", {"op": "create", "properties": {
        "firstname": "New", "lastname": "Contact", "email": "new@example.com"}})["ids"][0]
    fake_hubspot.call("POST", "/_records", {"op": "update", "id": ids[0],
                                            "properties": {"email": "changed@example.com"}})
    fake_hubspot.call("POST", "/_records", {"op": "archive", "id": ids[1]})
    want = {(i, f"F{n}", f"L{n}", f"h{n}@example.com") for n, i in enumerate(ids)}
    want -= {(ids[0], "F0", "L0", "h0@example.com"), (ids[1], "F1", "L1", "h1@example.com")}
    want |= {(ids[0], "F0", "L0", "changed@example.com"), (new, "New", "Contact",
                                                           "new@example.com")}
    wait_for("the changes", lambda: set(rows()) == want)
    # a write through syncbouncer, then the sync, agree
    with b.connect(dbname="crm", autocommit=True) as conn:
        conn.execute("update hubspot.contacts set firstname = 'Via' where id = %s", (new,))
    sync_now(b, "crm.hubspot.contacts")
    assert pg.sql(f"SELECT firstname FROM hubspot.contacts WHERE id = '{new}'",
                  dbname="crm") == [("Via",)]


@pytest.fixture
def fake_airtable():
    f = FakeServer("fake_airtable.py", "--token", "at-token")
    yield f
    f.stop()


AT_DDL = """
DROP SCHEMA IF EXISTS syncbouncer CASCADE;
DROP SCHEMA IF EXISTS airtable CASCADE;
CREATE SCHEMA airtable AUTHORIZATION app;
CREATE TABLE airtable.contacts (id text PRIMARY KEY, name text, email text);
ALTER TABLE airtable.contacts OWNER TO app;
"""


def test_airtable_changes_and_deletes_by_full_listing(pg, bouncer_factory, fake_airtable):
    pg.sql(AT_DDL, dbname="crm")
    ids = fake_airtable.call("POST", "/_records", {"op": "create", "count": 250, "fields": {
        "name": "N{n}", "email": "a{n}@example.com"}})["ids"]
    b = start_other(pg, bouncer_factory,
                    [f"airtable = type=airtable base_url={fake_airtable.url} base_id=appFAKE "
                     "auth=bearer token=at-token rate_limit=50"],
                    ["crm.airtable.contacts = api=airtable object=Contacts sync_interval=1 "
                     "full_sync_interval=3"])
    rows = lambda: set(pg.sql("SELECT id, name, email FROM airtable.contacts", dbname="crm"))
    want = {(i, f"N{n}", f"a{n}@example.com") for n, i in enumerate(ids)}
    assert rows() == want
    new = fake_airtable.call("POST", "/_records", {"op": "create", "fields": {
        "name": "New", "email": "new@example.com"}})["ids"][0]
    fake_airtable.call("POST", "/_records", {"op": "update", "id": ids[0],
                                             "fields": {"email": "changed@example.com"}})
    fake_airtable.call("POST", "/_records", {"op": "delete", "id": ids[1]})
    want = (want - {(ids[0], "N0", "a0@example.com"), (ids[1], "N1", "a1@example.com")}) | {
        (ids[0], "N0", "changed@example.com"), (new, "New", "new@example.com")}
    wait_for("the changes, and the delete found by a full listing", lambda: rows() == want)
    log = fake_airtable.call("GET", "/_requests")
    filtered = [r for r in log if "filterByFormula" in r["query"]]
    assert filtered and "LAST_MODIFIED_TIME" in urllib.request.unquote(filtered[0]["query"])
    assert any("offset=" in r["query"] for r in log)  # 250 records: pages of 100
    assert "full listing done, 1 row(s)" in b.log()
    # a row written through syncbouncer while a full listing runs (after the listing's
    # snapshot of ids was taken) is not taken for a deleted record by that listing's deletes
    fake_airtable.call("POST", "/_control", {"list_delay_ms": 600})
    listings = lambda: [r for r in fake_airtable.call("GET", "/_requests")
                        if r["method"] == "GET" and "filterByFormula" not in r["query"]
                        and "offset=" not in r["query"]]
    before = len(listings())
    wait_for("a full listing to start", lambda: len(listings()) > before)
    with b.connect(dbname="crm", autocommit=True) as conn:
        (mine,) = conn.execute("insert into airtable.contacts (name) values ('Mine') "
                               "returning id").fetchone()
    done = b.log().count("full listing done")
    wait_for("that full listing's end", lambda: b.log().count("full listing done") > done)
    fake_airtable.call("POST", "/_control", {"list_delay_ms": 0})
    assert (mine, "Mine", None) in rows()
    sync_now(b, "crm.airtable.contacts")
    assert (mine, "Mine", None) in rows()


def test_backfill_off_then_sync_backfill_from_the_console(pg, bouncer_factory, fake_sf,
                                                          fake_stripe):
    """backfill=off starts from now (what the API already held stays out, changes come in);
    SYNC BACKFILL loads everything."""
    pg.sql(OTHER_DDL, dbname="crm")
    from test_synced import TABLE_DDL
    pg.sql(TABLE_DDL, dbname="crm")
    old_sf = sf_records(fake_sf, op="create", fields={"LastName": "Old"})["id"]
    old_st = fake_stripe.call("POST", "/_records", {"op": "create", "fields": {"name": "Old"}})
    time.sleep(1.1)  # Salesforce's SystemModstamp has whole seconds: "now" is a later one
    b = start_other(pg, bouncer_factory, [
        f"salesforce = type=salesforce base_url={fake_sf.url} auth=oauth2 "
        f"token_url={fake_sf.url}/services/oauth2/token client_id=test-client-id "
        "client_secret=test-client-secret refresh_token=test-refresh-token",
        f"stripe = type=stripe base_url={fake_stripe.url} auth=bearer token=sk_test_fake"],
        [f"{SF_TABLE} = api=salesforce object=Contact sync_interval=1 backfill=off",
         "crm.stripe.customers = api=stripe object=customers sync_interval=1 backfill=off"])
    new_sf = sf_records(fake_sf, op="create", fields={"LastName": "New"})["id"]
    new_st = fake_stripe.call("POST", "/_records", {"op": "create", "fields": {"name": "New"}})
    wait_for("the new records", lambda: pg.sql(
        "SELECT id FROM salesforce.contacts", dbname="crm") == [(new_sf,)] and pg.sql(
        "SELECT id FROM stripe.customers", dbname="crm") == [(new_st["id"],)])
    assert sync_rows(b)[SF_TABLE]["backfill_rows"] == "0"
    with admin(b) as conn:
        conn.execute(f"SYNC BACKFILL {SF_TABLE}")
        conn.execute("SYNC BACKFILL crm.stripe.customers")
        with pytest.raises(psycopg.Error, match="no such synced table"):
            conn.execute("SYNC crm.nothing.here")
    wait_for("the backfills", lambda: sorted(pg.sql(
        "SELECT id FROM salesforce.contacts", dbname="crm")) == sorted([(old_sf,), (new_sf,)])
        and sorted(pg.sql("SELECT id FROM stripe.customers", dbname="crm")) == sorted(
            [(old_st["id"],), (new_st["id"],)]))
    assert "backfill requested from the console" in b.log()


def test_client_writes_go_before_sync_reads(pg, bouncer_factory, fake_sf):
    """max_in_flight=2: while a client write holds a slot of the API, no sync read is sent (one
    slot always stays free for client writes); the read goes once the write is done."""
    b = start_synced(pg, bouncer_factory, fake_sf, api_extra="max_in_flight=2",
                     table_extra="columns='note:Description' sync_interval=0")
    fake_sf.control(write_delay_ms=2000)  # within the API's timeout=3
    log = lambda: fake_sf._call("GET", "/_requests")
    before = len(log())
    w = threading.Thread(target=lambda: b.connect(dbname="crm", autocommit=True).execute(
        "insert into salesforce.contacts (last_name) values ('Slow')"))
    w.start()
    wait_for("the write in flight", lambda: any(
        r["method"] == "POST" and r["path"].endswith("/composite/sobjects") for r in log()))
    sync_now(b)  # asked while the write holds its slot
    w.join(30)
    fake_sf.control(write_delay_ms=0)
    new = log()[before:]
    write = [r for r in new if r["path"].endswith("/composite/sobjects")]
    reads = [r for r in new if r["path"].endswith("/queryAll")]
    assert len(write) == 1 and len(reads) == 1
    # the fake's own clock: the read arrived after the write's answer went out
    assert reads[0]["time"] >= write[0]["done"], (reads, write)
    assert [r[2] for r in sf_rows(pg)] == ["Slow"]
