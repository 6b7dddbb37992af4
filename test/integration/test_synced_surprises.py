"""Synced-table writes whose answer used to surprise: an outage reported as bad credentials, and
a Stripe request given up while Stripe was still working on it.

Each test goes through a real client (psycopg) and a fake API that speaks the real API's
shapes; it checks the SQLSTATE the client gets, what reached the API and what is in the table.
"""


import psycopg
import pytest

from conftest import IS_PGBOUNCER, free_port, wait_synced_ready
from test_hostile_api import FakeApi, crm, start_synced

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="synced tables exist only in syncbouncer")

SF_DDL = """
CREATE SCHEMA IF NOT EXISTS salesforce AUTHORIZATION app;
DROP TABLE IF EXISTS salesforce.contacts;
CREATE TABLE salesforce.contacts (id text PRIMARY KEY, first_name text, last_name text,
                                  email text);
ALTER TABLE salesforce.contacts OWNER TO app;
"""


def start_salesforce(pg, bouncer_factory, base_url, token_url, client_secret, pgbouncer=None):
    pg.sql("DROP SCHEMA IF EXISTS syncbouncer CASCADE", dbname="crm")
    pg.sql(SF_DDL, dbname="crm")
    b = bouncer_factory(config={
        "pgbouncer": pgbouncer or {},
        "databases": {"crm": f"host=127.0.0.1 port={pg.port} dbname=crm user=app password=secret"},
        "apis": [f"salesforce = type=salesforce base_url={base_url} api_version=v59.0 "
                 f"auth=oauth2 token_url={token_url} client_id=test-client-id "
                 f"client_secret={client_secret} refresh_token=test-refresh-token timeout=3"],
        # writes only: no sync pass reads the fake meanwhile
        "synced_tables": ["crm.salesforce.contacts = api=salesforce object=Contact "
                          "sync_interval=0 backfill=off"],
    })
    wait_synced_ready(pg, b)
    return b


@pytest.fixture
def fake_sf():
    f = FakeApi("salesforce")
    yield f
    f.stop()


@pytest.mark.timeout(60)
def test_unreachable_token_endpoint_is_58000_not_28000(bouncer_factory, pg, fake_sf):
    """Operators rotate credentials on 28000: an outage of the token endpoint must not say so."""
    closed = f"http://127.0.0.1:{free_port()}/services/oauth2/token"  # nothing listens there
    b = start_salesforce(pg, bouncer_factory, fake_sf.url, closed, "test-client-secret")
    with crm(b) as conn:
        with pytest.raises(psycopg.Error) as ei:
            conn.execute("insert into salesforce.contacts (last_name) values ('Atreides')")
        diag = ei.value.diag
        assert (diag.sqlstate, diag.message_primary) == ("58000", "salesforce unreachable")
        assert "token endpoint unreachable" in diag.message_detail
        assert "Nothing was written" in diag.message_detail
        assert conn.execute("select count(*) from salesforce.contacts").fetchone() == (0,)
    assert fake_sf.requests() == []


@pytest.mark.timeout(60)
def test_refused_credentials_are_still_28000(bouncer_factory, pg, fake_sf):
    b = start_salesforce(pg, bouncer_factory, fake_sf.url,
                         f"{fake_sf.url}/services/oauth2/token", "not-the-secret")
    with crm(b) as conn:
        with pytest.raises(psycopg.errors.InvalidAuthorizationSpecification) as ei:
            conn.execute("insert into salesforce.contacts (last_name) values ('Atreides')")
        assert ei.value.diag.message_primary == "salesforce authentication failed"
        assert "invalid_client_id" in ei.value.diag.message_detail


@pytest.fixture
def fake_stripe():
    f = FakeApi("stripe", "--token", "sk_test_hostile")
    yield f
    f.stop()


@pytest.mark.timeout(90)
def test_stripe_key_in_use_is_asked_again_with_the_same_key(bouncer_factory, pg, fake_stripe):
    """Stripe answers 409 idempotency_key_in_use while an earlier request with the key is still
    running: the pooler asks again with that key (until the deadline) and gets the answer."""
    b = start_synced(pg, bouncer_factory, "stripe", fake_stripe)
    # three "in use" answers: 0.5 + 1 + 2 s of waiting, more than two retries would allow
    fake_stripe.control(in_use_count=3)
    with crm(b) as conn:
        (cid,) = conn.execute("insert into stripe.customers (name, email) values "
                              "('Paul', 'paul@example.com') returning id").fetchone()
        assert conn.execute("select name from stripe.customers where id = %s",
                            (cid,)).fetchone() == ("Paul",)
    posts = [r for r in fake_stripe.requests() if r["method"] == "POST"]
    assert len(posts) == 4
    assert len({r["idempotency_key"] for r in posts}) == 1 and posts[0]["idempotency_key"]
    assert list(fake_stripe.store()["customers"]) == [cid]


@pytest.fixture
def fake_rest():
    f = FakeApi("rest")
    yield f
    f.stop()


@pytest.mark.parametrize("kind", ["stripe", "rest", "salesforce"])
@pytest.mark.timeout(60)
def test_delete_of_a_record_the_api_no_longer_has_removes_the_row(bouncer_factory, pg, request,
                                                                   kind):
    """The table follows the API: a record already gone there (deleted by someone else, or by
    an earlier attempt) is deleted here too, on every connector alike (Stripe answers 404
    resource_missing, a REST API 404, Salesforce ENTITY_IS_DELETED; HubSpot answers success)."""
    if kind == "salesforce":
        fake = request.getfixturevalue("fake_sf")
        gone = "003000000000GONE"
        b = start_salesforce(pg, bouncer_factory, fake.url,
                             f"{fake.url}/services/oauth2/token", "test-client-secret")
        table = "salesforce.contacts"
        pg.sql("SELECT set_config('syncbouncer.mode', 'sync', false);"
               f"INSERT INTO {table} (id, last_name) VALUES ('{gone}', 'Gone'),"
               " ('003000000000KEEP', 'Kept')", dbname="crm")
        path = "/services/data/v59.0/composite/sobjects"
    else:
        fake = request.getfixturevalue(f"fake_{kind}")
        gone = "cus_00000000000gone" if kind == "stripe" else "9999"
        b = start_synced(pg, bouncer_factory, kind, fake,
                         rows=[(gone, "Gone", "gone@example.com"),
                               ("kept", "Kept", "kept@example.com")])
        table = b.table
        path = ("/v1/customers/" if kind == "stripe" else "/contacts/") + gone
    with crm(b) as conn:
        cur = conn.execute(f"delete from {table} where id = %s", (gone,))
        assert cur.statusmessage == "DELETE 1"
        kept = "003000000000KEEP" if kind == "salesforce" else "kept"
        assert conn.execute(f"select id from {table}").fetchall() == [(kept,)]
    deletes = [r for r in fake.requests() if r["method"] == "DELETE"]
    assert [r["path"] for r in deletes] == [path]


def sf_three_records(pg, fake_sf):
    """Three Contacts at the fake and their rows in the table; the first is then deleted at
    Salesforce by someone else."""
    ids = fake_sf.call("POST", "/_records", {"object": "Contact", "op": "create", "count": 3,
                                             "fields": {"LastName": "L{n}"}})["ids"]
    pg.sql("SELECT set_config('syncbouncer.mode', 'sync', false);"
           "INSERT INTO salesforce.contacts (id, last_name) VALUES "
           + ", ".join(f"('{i}', 'L{n}')" for n, i in enumerate(ids)), dbname="crm")
    fake_sf.call("POST", "/_records", {"object": "Contact", "op": "delete", "id": ids[0]})
    return ids


def sf_deletes(fake_sf):
    return [r["query"] for r in fake_sf.requests() if r["method"] == "DELETE"]


@pytest.mark.timeout(60)
def test_delete_of_rows_one_of_whose_records_is_gone_deletes_them_all(bouncer_factory, pg,
                                                                       fake_sf):
    """allOrNone refuses the whole batch for the gone record: the delete is sent again without
    it, and the statement deletes every row it names, nothing else."""
    b = start_salesforce(pg, bouncer_factory, fake_sf.url,
                         f"{fake_sf.url}/services/oauth2/token", "test-client-secret")
    gone, other, kept = sf_three_records(pg, fake_sf)
    with crm(b) as conn:
        cur = conn.execute("delete from salesforce.contacts where id in (%s, %s) returning id",
                           (gone, other))
        assert cur.statusmessage == "DELETE 2"
        assert sorted(cur.fetchall()) == sorted([(gone,), (other,)])
        assert conn.execute("select id from salesforce.contacts").fetchall() == [(kept,)]
    assert list(fake_sf.store()["Contact"]) == [kept]
    sent = sf_deletes(fake_sf)
    assert len(sent) == 2 and gone in sent[0] and other in sent[0]
    assert other in sent[1] and gone not in sent[1] and "allOrNone=true" in sent[1]


@pytest.mark.timeout(60)
def test_delete_refused_for_another_record_still_fails_and_deletes_nothing(bouncer_factory, pg,
                                                                           fake_sf):
    """A gone record is dropped from the delete only when nothing else is refused: a record
    Salesforce will not delete fails the statement, with its own error, and no row goes."""
    b = start_salesforce(pg, bouncer_factory, fake_sf.url,
                         f"{fake_sf.url}/services/oauth2/token", "test-client-secret")
    gone, refused, kept = sf_three_records(pg, fake_sf)
    fake_sf.call("POST", "/_control", {"refuse_delete": refused})
    with crm(b) as conn:
        with pytest.raises(psycopg.Error) as ei:
            conn.execute("delete from salesforce.contacts where id in (%s, %s)", (gone, refused))
        assert "associated with the following cases" in (ei.value.diag.message_primary or "") \
            + (ei.value.diag.message_detail or "")
        assert sorted(conn.execute("select id from salesforce.contacts").fetchall()) == \
            sorted([(gone,), (refused,), (kept,)])
    assert sorted(fake_sf.store()["Contact"]) == sorted([refused, kept])
    assert len(sf_deletes(fake_sf)) == 1


@pytest.mark.timeout(60)
def test_database_refusing_the_write_connection_says_nothing_was_written(bouncer_factory, pg,
                                                                         fake_sf):
    """The write's own database connection is opened before anything goes to the API: when the
    database refuses it, the 58000 says nothing was written, so the client may retry."""
    b = start_salesforce(pg, bouncer_factory, fake_sf.url,
                         f"{fake_sf.url}/services/oauth2/token", "test-client-secret")
    with crm(b) as conn:
        conn.execute("select 1")  # the client's own server connection is open (session pool)
        pg.sql("ALTER ROLE app CONNECTION LIMIT 0")  # no new one: the write's is refused
        try:
            with pytest.raises(psycopg.Error) as ei:
                conn.execute("insert into salesforce.contacts (last_name) values ('Atreides')")
        finally:
            pg.sql("ALTER ROLE app CONNECTION LIMIT -1")
        diag = ei.value.diag
        assert (diag.sqlstate, diag.message_primary) == \
            ("58000", "could not connect to the database for a synced-table write")
        assert "too many connections" in diag.message_detail
        assert diag.message_detail.endswith("Nothing was written to salesforce.")
        assert all("/composite/sobjects" not in r["path"] for r in fake_sf.requests())
        # and so it was: the same statement again goes through once the database takes it
        cur = conn.execute("insert into salesforce.contacts (last_name) values ('Atreides') "
                           "returning id")
        (new_id,) = cur.fetchone()
    assert list(fake_sf.store()["Contact"]) == [new_id]


@pytest.mark.timeout(60)
def test_an_update_that_changes_nothing_sends_no_request(bouncer_factory, pg, fake_sf):
    b = start_salesforce(pg, bouncer_factory, fake_sf.url, f"{fake_sf.url}/services/oauth2/token",
                         "test-client-secret")
    with crm(b) as conn:
        ids = [conn.execute("insert into salesforce.contacts (first_name, last_name, email) "
                            "values (%s, 'Atreides', %s) returning id",
                            (n, f"{n.lower()}@caladan.io")).fetchone()[0]
               for n in ("Paul", "Leto")]
        before = len(fake_sf.requests())
        # the same values again, for one row and for two: PostgreSQL says UPDATE n, no request
        cur = conn.execute("update salesforce.contacts set email = email, "
                           "first_name = first_name where id = %s returning first_name",
                           (ids[0],))
        assert (cur.statusmessage, cur.fetchall()) == ("UPDATE 1", [("Paul",)])
        cur = conn.execute("update salesforce.contacts set last_name = 'Atreides'")
        assert cur.statusmessage == "UPDATE 2"
        api_calls = [r for r in fake_sf.requests()[before:] if "/composite/sobjects" in r["path"]]
        assert api_calls == []
        # a real change still goes to the API, once
        conn.execute("update salesforce.contacts set last_name = 'Harkonnen' where id = %s",
                     (ids[1],))
        api_calls = [r for r in fake_sf.requests()[before:] if "/composite/sobjects" in r["path"]]
        assert [r["method"] for r in api_calls] == ["PATCH"]
        assert conn.execute("select id, last_name from salesforce.contacts order by id"
                            ).fetchall() == sorted([(ids[0], "Atreides"), (ids[1], "Harkonnen")])


@pytest.mark.timeout(60)
def test_the_record_id_is_the_apis_to_assign(bouncer_factory, pg, fake_sf):
    """Supplying the id column of an insert was dropped without a word, and changing it was
    called a "salesforce validation error": both are refused here, as PostgreSQL refuses a
    GENERATED ALWAYS column (428C9), and nothing is sent."""
    b = start_salesforce(pg, bouncer_factory, fake_sf.url, f"{fake_sf.url}/services/oauth2/token",
                         "test-client-secret")
    with crm(b) as conn:
        (cid,) = conn.execute("insert into salesforce.contacts (last_name) values ('Atreides') "
                              "returning id").fetchone()
        before = len(fake_sf.requests())
        with pytest.raises(psycopg.errors.GeneratedAlways) as ei:
            conn.execute("insert into salesforce.contacts (id, last_name) "
                         "values ('003000000000MINE', 'Harkonnen')")
        diag = ei.value.diag
        assert diag.message_primary == 'cannot insert a non-DEFAULT value into column "id"'
        assert diag.message_detail == 'Column "id" holds the record id that salesforce assigns.'
        assert (diag.table_name, diag.column_name) == ("contacts", "id")
        with pytest.raises(psycopg.errors.GeneratedAlways) as ei:
            conn.execute("update salesforce.contacts set id = '003000000000MINE' where id = %s",
                         (cid,))
        assert ei.value.diag.message_primary == 'column "id" can only be updated to DEFAULT'
        # an id that exists already, with ON CONFLICT DO NOTHING, is still just skipped
        cur = conn.execute("insert into salesforce.contacts (id, last_name) values (%s, 'X') "
                           "on conflict do nothing", (cid,))
        assert cur.rowcount == 0
        assert conn.execute("select id, last_name from salesforce.contacts").fetchall() == \
            [(cid, "Atreides")]
    assert [r for r in fake_sf.requests()[before:] if "/composite/sobjects" in r["path"]] == []


@pytest.mark.timeout(60)
def test_a_row_refused_before_sending_is_not_an_api_validation_error(bouncer_factory, pg,
                                                                     fake_stripe):
    """A record id no Stripe URL can carry is refused by syncbouncer before any request, and
    said so, rather than "stripe validation error" (which would blame Stripe)."""
    long_id = "cus_" + "x" * 70
    b = start_synced(pg, bouncer_factory, "stripe", fake_stripe,
                     rows=[(long_id, "Long", "long@example.com")])
    with crm(b) as conn:
        with pytest.raises(psycopg.Error) as ei:
            conn.execute("update stripe.customers set name = 'Short' where id = %s", (long_id,))
        diag = ei.value.diag
        assert (diag.sqlstate, diag.message_primary) == ("22023", "row cannot be sent to stripe")
        assert diag.message_detail == f"Key (id)=({long_id}) is not a usable Stripe id."
        assert (diag.table_name, diag.column_name) == ("customers", "id")
        # Stripe's own refusal keeps its label
        with pytest.raises(psycopg.errors.CheckViolation) as ei:
            conn.execute("insert into stripe.customers (name, email) values ('X', 'not-an-email')")
        assert ei.value.diag.message_primary == "stripe validation error"
    assert [r["method"] for r in fake_stripe.requests()] == ["POST"]
