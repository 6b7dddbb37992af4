"""Hostile input on the synced-table side: configuration, record ids and values that must not
turn into another request, show a secret, or stall the other clients.

The fake APIs (test/fakes/) record every request with its raw path, so the tests check what
left the pooler, not what the connector meant to send.
"""

import threading
import time

import psycopg
import pytest

from conftest import IS_PGBOUNCER, FakeServer, wait_synced_ready

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="synced tables exist only in syncbouncer")

STRIPE_TOKEN = "sk_test_hostile"


class FakeApi(FakeServer):
    """One fake API process (fake_<kind>.py) on a free port."""

    def __init__(self, kind, *args):
        super().__init__(f"fake_{kind}.py", *args)

    def requests(self):
        return [r for r in self.call("GET", "/_requests") if not r["path"].startswith("/_")]

    def store(self):
        return self.call("GET", "/_store")


@pytest.fixture
def fake_stripe():
    f = FakeApi("stripe", "--token", STRIPE_TOKEN)
    yield f
    f.stop()


@pytest.fixture
def fake_rest():
    f = FakeApi("rest")
    yield f
    f.stop()


def api_line(kind, fake):
    if kind == "stripe":
        return f"stripe = type=stripe base_url={fake.url} auth=bearer token={STRIPE_TOKEN} timeout=5"
    return f"rest = type=rest base_url={fake.url} auth=none path=/contacts timeout=5"


TABLES = {
    # kind: (schema.table, object=, DDL)
    "stripe": ("stripe.customers", "customers",
               "CREATE SCHEMA IF NOT EXISTS stripe AUTHORIZATION app;"
               "DROP TABLE IF EXISTS stripe.customers;"
               "CREATE TABLE stripe.customers (id text PRIMARY KEY, name text, email text);"
               "ALTER TABLE stripe.customers OWNER TO app;"),
    "rest": ("rest.contacts", "contacts",
             "CREATE SCHEMA IF NOT EXISTS rest AUTHORIZATION app;"
             "DROP TABLE IF EXISTS rest.contacts;"
             "CREATE TABLE rest.contacts (id text PRIMARY KEY, name text, email text, data jsonb);"
             "ALTER TABLE rest.contacts OWNER TO app;"),
}


def start_synced(pg, bouncer_factory, kind, fake, rows=(), pgbouncer=None, columns=""):
    """A pooler with crm.<TABLES[kind]> synced to fake; rows are (id, name, email) put into the
    table before the guard trigger exists (as a backfill would have left them); columns
    ("ADD COLUMN …, ADD COLUMN …") adds columns to the table first."""
    table, obj, ddl = TABLES[kind]
    if columns:
        ddl += f"ALTER TABLE {table} {columns};"
    pg.sql("DROP SCHEMA IF EXISTS syncbouncer CASCADE", dbname="crm")
    pg.sql(ddl, dbname="crm")
    for r in rows:
        pg.sql(f"INSERT INTO {table} (id, name, email) VALUES ('{r[0]}', '{r[1]}', '{r[2]}')",
               dbname="crm")
    b = bouncer_factory(config={
        "databases": {"crm": f"host=127.0.0.1 port={pg.port} dbname=crm user=app password=secret"},
        "apis": [api_line(kind, fake)],
        # writes only: no sync pass reads the fake meanwhile, so its request log is ours
        "synced_tables": [f"crm.{table} = api={kind} object={obj} sync_interval=0 backfill=off"],
        "pgbouncer": pgbouncer or {},
    })
    # the sync's first pass (reads of the API) is over before the test counts requests
    wait_synced_ready(pg, b, synced=True)
    b.fake = fake
    b.table = table
    return b


def crm(b, **kw):
    return b.connect(dbname="crm", autocommit=True, **kw)


def admin(b):
    return b.connect(dbname="pgbouncer", user="postgres", password="postgres", autocommit=True,
                     prepare_threshold=None)


# ---------------------------------------------------------------- credentials in a URL


@pytest.mark.timeout(60)
def test_base_url_with_credentials_stops_the_start(bouncer_factory, pg):
    b = bouncer_factory(config={
        "apis": ["rest = type=rest base_url=https://apiuser:hunter2@api.example.com auth=none "
                 "path=/contacts"],
    }, start=False)
    b.start(wait=False)
    assert b.proc.wait(timeout=20) != 0
    b.stopped_by_us = True
    out = b.output()
    assert "API rest: base_url= must not carry credentials" in out, out
    assert "auth=" in out
    assert "hunter2" not in out


@pytest.mark.timeout(60)
def test_base_url_with_credentials_fails_reload_and_is_never_shown(bouncer_factory, pg,
                                                                   fake_rest):
    b = start_synced(pg, bouncer_factory, "rest", fake_rest)
    with open(b.ini) as f:
        text = f.read()
    bad = fake_rest.url.replace("http://", "http://apiuser:hunter2@")
    with open(b.ini, "w") as f:
        f.write(text.replace(f"base_url={fake_rest.url}", f"base_url={bad}"))
    with admin(b) as a:
        with pytest.raises(psycopg.Error) as ei:
            a.execute("RELOAD")
        assert ei.value.diag.message_primary == "RELOAD failed, see logs for additional details"
        apis = a.execute("SHOW APIS").fetchall()
    # the running API keeps its URL, and the credentials show nowhere
    assert any(fake_rest.url in map(str, row) for row in apis), apis
    assert "hunter2" not in repr(apis)
    assert "API rest: base_url= must not carry credentials" in b.log()
    assert "hunter2" not in b.output()
    with crm(b) as conn:
        conn.execute("insert into rest.contacts (name, email) values ('a', 'a@example.com')")
    assert len(fake_rest.requests()) == 1


# ---------------------------------------------------------------- record ids in paths


@pytest.mark.parametrize("kind", ["stripe", "rest"])
@pytest.mark.timeout(90)
def test_dot_ids_stay_one_path_segment(bouncer_factory, pg, request, kind):
    """An id of "." or ".." is a name, not a step up the path: UPDATE ... WHERE id = '.' must not
    become a POST to the collection (a create, on Stripe), nor DELETE of '..' a DELETE of the
    API's root."""
    fake = request.getfixturevalue(f"fake_{kind}")
    b = start_synced(pg, bouncer_factory, kind, fake,
                     rows=[(".", "Dot", "dot@example.com"), ("..", "Dots", "dots@example.com")])
    base = "/v1/customers" if kind == "stripe" else "/contacts"
    with crm(b) as conn:
        for sql, rid in [(f"update {b.table} set name = 'X' where id = %s", "."),
                         (f"update {b.table} set name = 'X' where id = %s", ".."),
                         (f"delete from {b.table} where id = %s", "."),
                         (f"delete from {b.table} where id = %s", "..")]:
            fake.control(reset=True)
            try:
                conn.execute(sql, (rid,))
            except psycopg.Error:
                pass  # the API has no such record; what matters is where the request went
            reqs = fake.requests()
            encoded = "%2E" * len(rid)
            assert [r["path"] for r in reqs] == [f"{base}/{encoded}"], (sql, rid, reqs)
            # nothing was created or deleted anywhere else in the API
            assert all(not recs for recs in fake.store().values()), fake.store()
        # a record with an ordinary id still goes where it belongs
        if kind == "stripe":
            (cid,) = conn.execute("insert into stripe.customers (name, email) values "
                                  "('Paul', 'paul@example.com') returning id").fetchone()
        else:
            (cid,) = conn.execute("insert into rest.contacts (name, email) values "
                                  "('Paul', 'paul@example.com') returning id").fetchone()
        n = len(fake.requests())
        conn.execute(f"update {b.table} set name = 'Paul A' where id = %s", (cid,))
        assert fake.requests()[n]["path"] == f"{base}/{cid}"


# ---------------------------------------------------------------- size


@pytest.mark.timeout(120)
def test_huge_captured_rows_get_54000_and_other_clients_are_served(bouncer_factory, pg,
                                                                   fake_rest):
    """A synced write whose row images are larger than the pooler reads on its event loop is
    refused by PostgreSQL's measure before the images reach the pooler; meanwhile another client
    keeps being answered."""
    b = start_synced(pg, bouncer_factory, "rest", fake_rest)
    stop = threading.Event()
    served = []  # (monotonic time, answer) of the other client's queries
    errors = []

    def other_client():
        try:
            with b.connect(autocommit=True) as conn:
                # bounded: at most 60 s, whatever happens to the main thread
                deadline = time.monotonic() + 60
                while not stop.is_set() and time.monotonic() < deadline:
                    served.append((time.monotonic(), conn.execute("select 1").fetchone()[0]))
        except Exception as e:  # reported below
            errors.append(e)

    t = threading.Thread(target=other_client)
    t.start()
    try:
        while not served and not errors and t.is_alive():
            time.sleep(0.01)
        with crm(b) as conn:
            started = time.monotonic()
            with pytest.raises(psycopg.errors.ProgramLimitExceeded) as ei:
                # a one-million-element jsonb value, built by the server from a short statement
                conn.execute("insert into rest.contacts (name, email, data) select 'big', "
                             "'big@example.com', jsonb_agg(i) "
                             "from generate_series(1, 1000000) i")
            ended = time.monotonic()
            diag = ei.value.diag
            assert diag.sqlstate == "54000"
            assert diag.message_primary == "synced-table write too large for one API request"
            assert "syncbouncer takes at most 262144 bytes per statement" in diag.message_detail
            assert "rest.contacts" in diag.message_detail
            assert diag.message_hint
            # the connection stays usable, and a value within the bound goes through
            conn.execute("insert into rest.contacts (name, email, data) select 'small', "
                         "'small@example.com', jsonb_agg(i) from generate_series(1, 1000) i")
            assert conn.execute("select name from rest.contacts").fetchall() == [("small",)]
    finally:
        stop.set()
        t.join(70)
    assert not errors, errors
    assert all(v == 1 for _, v in served)
    # the other client was answered while the big statement was being refused
    assert any(started <= at <= ended for at, _ in served), (started, ended, len(served))
    # nothing of the big row reached the API
    sent = fake_rest.requests()
    assert [(r["body"]["name"], len(r["body"]["data"])) for r in sent] == [("small", 1000)]


@pytest.mark.timeout(60)
def test_value_over_the_connectors_cap_is_54000_not_a_validation_error(bouncer_factory, pg,
                                                                        fake_stripe):
    """Stripe's form body is capped at 256 KiB by the pooler: a value that would pass it is the
    pooler's limit (54000), not something Stripe rejected (23514)."""
    b = start_synced(pg, bouncer_factory, "stripe", fake_stripe)
    with crm(b) as conn:
        (cid,) = conn.execute("insert into stripe.customers (name, email) values "
                              "('Paul', 'paul@example.com') returning id").fetchone()
        n = len(fake_stripe.requests())
        # 60,000 two-byte characters: 120 kB in the row, 360 kB once form-encoded
        with pytest.raises(psycopg.errors.ProgramLimitExceeded) as ei:
            conn.execute("update stripe.customers set name = repeat('\u00e9', 60000) "
                         "where id = %s", (cid,))
        diag = ei.value.diag
        assert diag.sqlstate == "54000"
        assert diag.message_primary == "stripe request too large"
        assert "larger than syncbouncer's limit of 262144 bytes" in diag.message_detail
        assert "nothing was sent" in diag.message_detail
        assert len(fake_stripe.requests()) == n
        assert conn.execute("select name from stripe.customers where id = %s",
                            (cid,)).fetchone() == ("Paul",)
        assert fake_stripe.store()["customers"][cid]["name"] == "Paul"
