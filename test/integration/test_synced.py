"""Synced tables end to end: writes go to the (fake) Salesforce API first, then to PostgreSQL.

Each test starts the fake Salesforce, a pooler whose config has an [apis] entry pointing at it
and a synced table crm.salesforce.contacts, and checks what a user of the product checks: the
SQL result, the row in PostgreSQL, the record in the API's store, and the error a client gets.
"""

import os
import threading
import time

import psycopg
import pytest

from conftest import IS_PGBOUNCER, FakeServer, wait_synced_ready
from pgwire import parse_error_fields

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="synced tables exist only in syncbouncer")


class FakeSalesforce(FakeServer):
    def __init__(self):
        super().__init__("fake_salesforce.py")

    def store(self):
        return self.call("GET", "/_store").get("Contact", {})

    def requests(self):
        return [r for r in self.call("GET", "/_requests")
                if "/composite/sobjects" in r.get("path", "")]


@pytest.fixture
def fake_sf():
    f = FakeSalesforce()
    yield f
    f.stop()


TABLE_DDL = """
CREATE SCHEMA IF NOT EXISTS salesforce AUTHORIZATION app;
DROP TABLE IF EXISTS salesforce.contacts, salesforce.accounts, salesforce.leads;
CREATE TABLE salesforce.contacts (
    id text PRIMARY KEY,
    first_name text,
    last_name text,
    email text,
    note text
);
ALTER TABLE salesforce.contacts OWNER TO app;
"""


def start_synced(pg, bouncer_factory, fake, pgbouncer=None, api_extra="",
                 table_extra="columns='note:Description'", more_tables=(), before_start=None,
                 settle_timeout=20, api_timeout=3):
    """A pooler with crm.salesforce.contacts synced to the fake Salesforce, once the guard
    trigger is in place (the catalog installs it in the background at start-up)."""
    pg.sql("DROP SCHEMA IF EXISTS syncbouncer CASCADE", dbname="crm")
    pg.sql(TABLE_DDL, dbname="crm")
    if before_start is not None:
        before_start()
    api = (f"type=salesforce base_url={fake.url} api_version=v59.0 auth=oauth2 "
           f"token_url={fake.url}/services/oauth2/token client_id=test-client-id "
           f"client_secret=test-client-secret refresh_token=test-refresh-token "
           f"timeout={api_timeout} "
           f"{api_extra}")
    b = bouncer_factory(config={
        "databases": {"crm": f"host=127.0.0.1 port={pg.port} dbname=crm user=app password=secret"},
        "apis": [f"salesforce = {api}"],
        "synced_tables": [f"crm.salesforce.contacts = api=salesforce object=Contact {table_extra}",
                          *more_tables],
        "pgbouncer": pgbouncer or {},
    })
    # the sync worker's first pass (a backfill of the empty fake) is over before the test
    # starts, so that it never takes a failure the test sets up for a write
    wait_synced_ready(pg, b, synced=True, timeout=20 + settle_timeout)
    b.fake = fake
    return b


@pytest.fixture
def synced(pg, bouncer_factory, fake_sf):
    """Session pooling, room for 100 clients."""
    return start_synced(pg, bouncer_factory, fake_sf,
                        pgbouncer={"max_client_conn": 150, "default_pool_size": 60})


def crm(b, **kw):
    return b.connect(dbname="crm", autocommit=True, **kw)


def db_rows(pg):
    return pg.sql("SELECT id, first_name, last_name, email, note FROM salesforce.contacts "
                  "ORDER BY id", dbname="crm")


def test_insert_returning_id_comes_from_the_api(synced, pg):
    with crm(synced) as conn:
        cur = conn.execute("insert into salesforce.contacts (first_name, last_name, email) "
                           "values ('Paul', 'Atreides', 'paul.atreides@caladan.io') returning id")
        (new_id,) = cur.fetchone()
        assert cur.statusmessage == "INSERT 0 1"
    assert new_id.startswith("003") and len(new_id) == 18
    store = synced.fake.store()
    assert store[new_id]["LastName"] == "Atreides"
    assert store[new_id]["Email"] == "paul.atreides@caladan.io"
    assert db_rows(pg) == [(new_id, "Paul", "Atreides", "paul.atreides@caladan.io", None)]


def test_insert_through_psql(synced, pg):
    out = synced.psql("-c", "insert into salesforce.contacts (first_name, last_name, email) "
                      "values ('Paul', 'Atreides', 'paul.atreides@caladan.io') returning id",
                      dbname="crm")
    new_id = out.stdout.split("\n")[2].strip()
    assert new_id in synced.fake.store()
    assert "INSERT 0 1" in out.stdout


def test_update_and_delete_change_both_sides(synced, pg):
    with crm(synced) as conn:
        (cid,) = conn.execute("insert into salesforce.contacts (first_name, last_name, email) "
                              "values ('Paul', 'Atreides', 'paul@caladan.io') returning id"
                              ).fetchone()
        cur = conn.execute("update salesforce.contacts set email = 'paul@dune.co', "
                           "note = 'Moved to new planet called Dune' where id = %s", (cid,))
        assert cur.rowcount == 1
        rec = synced.fake.store()[cid]
        assert rec["Email"] == "paul@dune.co"
        assert rec["Description"] == "Moved to new planet called Dune"
        assert db_rows(pg)[0][3:] == ("paul@dune.co", "Moved to new planet called Dune")
        cur = conn.execute("delete from salesforce.contacts where email = 'paul@dune.co'")
        assert cur.rowcount == 1
    assert cid not in synced.fake.store()
    assert db_rows(pg) == []


def test_invalid_email_is_a_validation_error_and_changes_nothing(synced, pg):
    with crm(synced) as conn:
        (cid,) = conn.execute("insert into salesforce.contacts (first_name, last_name, email) "
                              "values ('Paul', 'Atreides', 'paul@caladan.io') returning id"
                              ).fetchone()
        with pytest.raises(psycopg.errors.CheckViolation) as ei:
            conn.execute("update salesforce.contacts set email = 'pauldune.co' where id = %s",
                          (cid,))
        diag = ei.value.diag
        assert diag.sqlstate == "23514"
        assert diag.message_primary == "salesforce validation error"
        assert diag.message_detail == \
            "Key (email)=(pauldune.co) is not a valid email address."
        assert diag.table_name == "contacts" and diag.schema_name == "salesforce"
        assert diag.column_name == "email"
        # the connection is still usable
        assert conn.execute("select 1").fetchone() == (1,)
    assert synced.fake.store()[cid]["Email"] == "paul@caladan.io"
    assert db_rows(pg)[0][3] == "paul@caladan.io"


def test_missing_last_name_is_23502(synced, pg):
    with crm(synced) as conn:
        with pytest.raises(psycopg.errors.NotNullViolation) as ei:
            conn.execute("insert into salesforce.contacts (first_name, email) "
                         "values ('Alia', 'alia@dune.co')")
        assert ei.value.diag.message_primary == "salesforce validation error"
    assert synced.fake.store() == {}
    assert db_rows(pg) == []


def test_200_rows_in_one_request_201_refused(synced, pg):
    values = ",".join(f"('F{i}', 'L{i}', 'u{i}@dune.co')" for i in range(200))
    with crm(synced) as conn:
        cur = conn.execute("insert into salesforce.contacts (first_name, last_name, email) "
                           "values " + values)
        assert cur.rowcount == 200
        assert len(synced.fake.requests()) == 1
        values = ",".join(f"('G{i}', 'M{i}', 'v{i}@dune.co')" for i in range(201))
        with pytest.raises(psycopg.errors.ProgramLimitExceeded) as ei:
            conn.execute("insert into salesforce.contacts (first_name, last_name, email) "
                         "values " + values)
        assert "201" in ei.value.diag.message_detail and "200" in ei.value.diag.message_detail
    assert len(synced.fake.requests()) == 1
    assert len(synced.fake.store()) == 200
    assert pg.sql("SELECT count(*) FROM salesforce.contacts", dbname="crm")[0][0] == 200


def test_mutation_escapes_rollback(synced, pg):
    with crm(synced) as conn:
        conn.autocommit = False
        (cid,) = conn.execute("insert into salesforce.contacts (first_name, last_name) "
                              "values ('Duncan', 'Idaho') returning id").fetchone()
        conn.rollback()
    assert cid in synced.fake.store()
    assert db_rows(pg)[0][0] == cid


def test_failed_transaction_gets_25p02(synced, pg):
    with crm(synced) as conn:
        conn.autocommit = False
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("select 1/0")
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("insert into salesforce.contacts (last_name) values ('Idaho')")
        conn.rollback()
    assert synced.fake.store() == {}


def test_upsert_rejected_do_nothing_works(synced, pg):
    with crm(synced) as conn:
        (cid,) = conn.execute("insert into salesforce.contacts (first_name, last_name) "
                              "values ('Gurney', 'Halleck') returning id").fetchone()
        with pytest.raises(psycopg.errors.FeatureNotSupported):
            conn.execute("insert into salesforce.contacts (id, last_name) values (%s, 'X') "
                         "on conflict (id) do update set last_name = 'X'", (cid,))
        cur = conn.execute("insert into salesforce.contacts (id, last_name) values (%s, 'X') "
                           "on conflict do nothing", (cid,))
        assert cur.rowcount == 0
    assert len(synced.fake.requests()) == 1
    assert synced.fake.store()[cid]["LastName"] == "Halleck"


def test_insert_on_conflict_do_nothing_leaves_out_rows_of_another_unique_index(
        pg, bouncer_factory, fake_sf):
    """A row that a unique index other than the key turns away never reaches the API: it
    would be a record the table cannot hold."""
    b = start_synced(pg, bouncer_factory, fake_sf, before_start=lambda: pg.sql(
        "CREATE UNIQUE INDEX contacts_email ON salesforce.contacts (email)", dbname="crm"))
    with crm(b) as conn:
        conn.execute("insert into salesforce.contacts (last_name, email) "
                     "values ('Atreides', 'paul@dune.co')")
        cur = conn.execute("insert into salesforce.contacts (last_name, email) "
                           "values ('Usul', 'paul@dune.co') on conflict do nothing")
        assert cur.rowcount == 0
        assert len(fake_sf.requests()) == 1
        rows = conn.execute(
            "insert into salesforce.contacts (last_name, email) "
            "values ('Harkonnen', 'feyd@dune.co'), ('Muad''Dib', 'paul@dune.co'), "
            "('Rautha', 'feyd@dune.co') on conflict (email) do nothing "
            "returning last_name, email").fetchall()
        assert rows == [("Harkonnen", "feyd@dune.co")]
    assert len(fake_sf.requests()) == 2
    sent = fake_sf.requests()[-1]["body"]["records"]
    assert [r["LastName"] for r in sent] == ["Harkonnen"]
    assert sorted(c["LastName"] for c in fake_sf.store().values()) == ["Atreides", "Harkonnen"]
    assert sorted(r[2] for r in db_rows(pg)) == ["Atreides", "Harkonnen"]


def test_insert_on_conflict_do_nothing_keeps_rows_it_cannot_check(pg, bouncer_factory,
                                                                   fake_sf):
    """A CHECK that reads the API-assigned key leaves the rows unchecked: none of them is
    taken for turned away."""
    b = start_synced(pg, bouncer_factory, fake_sf, before_start=lambda: pg.sql(
        "CREATE UNIQUE INDEX contacts_email ON salesforce.contacts (email); "
        "ALTER TABLE salesforce.contacts ADD CHECK (id <> '')", dbname="crm"))
    with crm(b) as conn:
        cur = conn.execute("insert into salesforce.contacts (last_name, email) "
                           "values ('Idaho', 'duncan@dune.co') on conflict do nothing")
        assert cur.rowcount == 1
    assert [c["LastName"] for c in fake_sf.store().values()] == ["Idaho"]
    assert [r[2] for r in db_rows(pg)] == ["Idaho"]


def test_direct_write_is_refused_by_the_guard(synced, pg):
    with pg.connect(dbname="crm", user="app") as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as ei:
            conn.execute("insert into salesforce.contacts (id, last_name) values ('x', 'y')")
        assert "contacts" in ei.value.diag.message_primary


def test_zero_row_update_makes_no_api_call(synced, pg):
    with crm(synced) as conn:
        cur = conn.execute("update salesforce.contacts set note = 'x' where id = 'nope'")
        assert cur.rowcount == 0
        cur = conn.execute("delete from salesforce.contacts where id = 'nope'")
        assert cur.rowcount == 0
    assert synced.fake.requests() == []


def warm_up(conn):
    """One write that succeeds, so that the API's access token is already held."""
    conn.execute("insert into salesforce.contacts (last_name) values ('Warm')")


def test_api_down_gives_58000_and_nothing_written(synced, pg):
    with crm(synced) as conn:
        warm_up(conn)
        synced.fake.control(down=True)
        with pytest.raises(psycopg.Error) as ei:
            conn.execute("insert into salesforce.contacts (last_name) values ('Idaho')")
        assert ei.value.diag.sqlstate in ("58000", "XX000")
        assert conn.execute("select 1").fetchone() == (1,)
    assert [r[2] for r in db_rows(pg)] == ["Warm"]


def test_api_5xx_gives_58000(synced, pg):
    synced.fake.control(fail_status=503)
    with crm(synced) as conn:
        with pytest.raises(psycopg.Error) as ei:
            conn.execute("insert into salesforce.contacts (last_name) values ('Idaho')")
        assert ei.value.diag.sqlstate == "58000"
    assert db_rows(pg) == []


def test_slow_api_past_timeout_is_xx000_outcome_unknown(synced, pg):
    with crm(synced) as conn:
        warm_up(conn)
        synced.fake.control(delay_ms=5000)
        with pytest.raises(psycopg.Error) as ei:
            conn.execute("insert into salesforce.contacts (last_name) values ('Idaho')")
        assert ei.value.diag.sqlstate == "XX000"
        assert "unknown" in ei.value.diag.message_detail
    assert [r[2] for r in db_rows(pg)] == ["Warm"]


def test_expired_token_is_refreshed_and_write_succeeds(synced, pg):
    with crm(synced) as conn:
        conn.execute("insert into salesforce.contacts (last_name) values ('One')")
        synced.fake.control(expire_token=True)
        conn.execute("insert into salesforce.contacts (last_name) values ('Two')")
    assert len(synced.fake.store()) == 2
    assert len(db_rows(pg)) == 2


def test_rate_limited_gives_53400(synced, pg):
    synced.fake.control(rate_limit=100, rate_limit_status=403)
    with crm(synced) as conn:
        with pytest.raises(psycopg.Error) as ei:
            conn.execute("insert into salesforce.contacts (last_name) values ('Idaho')")
        assert ei.value.diag.sqlstate == "53400"
    assert db_rows(pg) == []


def test_reads_and_ordinary_writes_pass_through(synced, pg):
    pg.sql("CREATE TABLE IF NOT EXISTS plain (v int); ALTER TABLE plain OWNER TO app",
           dbname="crm")
    with crm(synced) as conn:
        conn.execute("insert into plain values (1)")
        assert conn.execute("select count(*) from salesforce.contacts").fetchone() == (0,)
        assert conn.execute("select count(*) from plain").fetchone()[0] >= 1
    assert synced.fake.requests() == []


def test_set_of_guard_setting_refused(synced):
    with crm(synced) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("set syncbouncer.mode = 'sync'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select set_config('syncbouncer.mode', 'sync', false)")


def test_extended_protocol_binary_parameters(synced, pg):
    with crm(synced) as conn:
        cur = conn.cursor(binary=True)
        cur.execute("insert into salesforce.contacts (first_name, last_name, email) "
                    "values (%b, %b, %b) returning id, last_name", ("Leto", "Atreides",
                                                                    "leto@caladan.io"))
        cid, last = cur.fetchone()
        assert last == "Atreides"
    assert synced.fake.store()[cid]["FirstName"] == "Leto"
    assert db_rows(pg)[0][:3] == (cid, "Leto", "Atreides")


def test_prepared_statement_reused_many_times(synced, pg):
    with crm(synced) as conn:
        ids = []
        for i in range(12):
            cur = conn.execute("insert into salesforce.contacts (first_name, last_name) "
                               "values (%s, %s) returning id", (f"F{i}", f"L{i}"), prepare=True)
            ids.append(cur.fetchone()[0])
        for cid in ids[:6]:
            conn.execute("update salesforce.contacts set note = %s where id = %s",
                         ("prepared", cid), prepare=True)
    store = synced.fake.store()
    assert sorted(store) == sorted(ids)
    assert sum(1 for r in store.values() if r.get("Description") == "prepared") == 6
    assert pg.sql("SELECT count(*) FROM salesforce.contacts WHERE note = 'prepared'",
                  dbname="crm")[0][0] == 6


def test_error_in_extended_protocol_leaves_connection_usable(synced, pg):
    with crm(synced) as conn:
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("insert into salesforce.contacts (last_name, email) values (%s, %s)",
                         ("X", "not-an-email"))
        assert conn.execute("select %s::int + 1", (1,)).fetchone() == (2,)
        conn.execute("insert into salesforce.contacts (last_name) values (%s)", ("Y",))
    assert [r[2] for r in db_rows(pg)] == ["Y"]


def test_pgbench_custom_script_of_synced_writes(synced, pg, tmp_path):
    from conftest import run_pgbench
    script = tmp_path / "write.sql"
    script.write_text("\\set n random(1, 1000000)\n"
                      "insert into salesforce.contacts (first_name, last_name) "
                      "values ('bench', 'n' || :n);\n")
    os.chmod(tmp_path, 0o755)
    os.chmod(script, 0o644)
    res = run_pgbench(synced.host, synced.port, "-n", "-f", str(script), "-c", "4", "-j", "2",
                      "-t", "10", dbname="crm")
    assert "number of failed transactions: 0" in res.stdout or \
        "number of transactions actually processed: 40/40" in res.stdout, res.stdout
    assert len(synced.fake.store()) == 40
    assert pg.sql("SELECT count(*) FROM salesforce.contacts", dbname="crm")[0][0] == 40


def test_writers_and_readers_concurrently_all_or_nothing(synced, pg):
    """Writers mutate while readers read; at the end the API's store and the table agree."""
    import threading

    synced.fake.control(delay_ms=50)
    errors = []
    reads = [0]

    def writer(k):
        try:
            with crm(synced) as conn:
                for i in range(5):
                    email = f"w{k}-{i}@dune.co" if (k + i) % 4 else f"bad-{k}-{i}"
                    try:
                        conn.execute("insert into salesforce.contacts (last_name, email) "
                                     "values (%s, %s)", (f"W{k}", email))
                    except psycopg.errors.CheckViolation:
                        pass
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    def reader():
        try:
            with crm(synced) as conn:
                for _ in range(40):
                    conn.execute("select count(*) from salesforce.contacts").fetchone()
                    reads[0] += 1
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(50)]
    threads += [threading.Thread(target=reader) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert reads[0] == 50 * 40
    store = synced.fake.store()
    rows = pg.sql("SELECT id, email FROM salesforce.contacts", dbname="crm")
    assert {r[0]: r[1] for r in rows} == {k: v.get("Email") for k, v in store.items()}
    assert len(rows) == 50 * 5 - sum(1 for k in range(50) for i in range(5) if (k + i) % 4 == 0)


@pytest.fixture
def synced_txn(pg, bouncer_factory, fake_sf):
    """The same set-up in transaction pooling mode."""
    return start_synced(pg, bouncer_factory, fake_sf,
                        pgbouncer={"pool_mode": "transaction", "default_pool_size": 2})


def test_transaction_mode_writes_and_transactions(synced_txn, pg):
    with crm(synced_txn) as conn:
        (a,) = conn.execute("insert into salesforce.contacts (last_name) values ('A') "
                            "returning id").fetchone()
        conn.autocommit = False
        conn.execute("select 1")
        (b,) = conn.execute("insert into salesforce.contacts (last_name) values (%s) "
                            "returning id", ("B",)).fetchone()
        conn.rollback()
        conn.autocommit = True
        cur = conn.execute("update salesforce.contacts set email = 'x@y.io' where id in (%s, %s)",
                           (a, b))
        assert cur.rowcount == 2
    assert sorted(synced_txn.fake.store()) == sorted([a, b])
    assert pg.sql("SELECT count(*) FROM salesforce.contacts WHERE email = 'x@y.io'",
                  dbname="crm")[0][0] == 2


def test_transaction_mode_named_synced_and_ordinary_statements(synced_txn, pg):
    """Named statements that write a synced table and ordinary named statements, interleaved
    on one connection under transaction pooling: each name keeps running its own statement."""
    ids = []
    with crm(synced_txn) as conn:
        for i in range(4):
            (n,) = conn.execute("select count(*) from salesforce.contacts where last_name = %s",
                                (f"N{i - 1}",), prepare=True).fetchone()
            assert n == (1 if i > 0 else 0)
            (cid,) = conn.execute("insert into salesforce.contacts (last_name) values (%s) "
                                  "returning id", (f"N{i}",), prepare=True).fetchone()
            ids.append(cid)
            conn.execute("update salesforce.contacts set note = %s where id = %s",
                         (f"n{i}", cid), prepare=True)
        assert conn.execute("select count(*) from salesforce.contacts where note like 'n%%'",
                            prepare=True).fetchone()[0] == 4
    store = synced_txn.fake.store()
    assert sorted(store) == sorted(ids)
    assert sorted(r.get("Description") for r in store.values()) == ["n0", "n1", "n2", "n3"]


def test_commit_failure_after_api_accepted_is_journaled_and_settled(synced, pg):
    """The database connection dies while the API is answering: the client gets XX000 naming
    the API's record id, the API's answer is in the journal file, and settling reads the record
    back from the API into the table (its intent then gone)."""
    import threading

    synced.fake.control(delay_ms=1500)
    inserts = lambda: sum(1 for r in synced.fake.requests()
                          if r["method"] == "POST" and r["path"].endswith("/composite/sobjects"))
    before = inserts()

    def kill_mutation_backend():
        deadline = time.monotonic() + 10
        # once the request is at the API: a write whose transaction ended sooner sends nothing
        while inserts() == before and time.monotonic() < deadline:
            time.sleep(0.05)
        while time.monotonic() < deadline:
            rows = pg.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE application_name = 'syncbouncer mutation' "
                          "AND state = 'idle in transaction' "
                          "AND state_change < now() - interval '400 ms'", dbname="postgres")
            if rows:
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_mutation_backend)
    with crm(synced) as conn:
        killer.start()
        with pytest.raises(psycopg.errors.InternalError_) as ei:
            conn.execute("insert into salesforce.contacts (last_name, email) "
                         "values ('Jessica', 'jessica@caladan.io')")
        killer.join()
        diag = ei.value.diag
        assert diag.sqlstate == "XX000"
        assert "applied to salesforce but not yet to the database" in diag.message_primary
        (cid,) = synced.fake.store().keys()
        assert cid in diag.message_detail
    journal = open(os.path.join(synced.workdir, "syncbouncer.journal")).read()
    assert cid in journal
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        rows = db_rows(pg)
        if rows:
            break
        time.sleep(0.2)
    assert rows == [(cid, None, "Jessica", "jessica@caladan.io", None)]
    assert pg.sql("SELECT count(*) FROM syncbouncer.intent", dbname="crm")[0][0] == 0
    # the entry is marked done: a restart does not apply it twice
    assert '"done"' in open(os.path.join(synced.workdir, "syncbouncer.journal")).read() or \
        os.path.getsize(os.path.join(synced.workdir, "syncbouncer.journal")) == 0


def test_reload_adds_a_synced_table(synced, pg):
    import signal

    pg.sql("CREATE TABLE salesforce.accounts (id text PRIMARY KEY, name text); "
           "ALTER TABLE salesforce.accounts OWNER TO app", dbname="crm")
    with open(synced.ini) as f:
        ini = f.read()
    ini = ini.replace("[synced_tables]\n", "[synced_tables]\n"
                      "crm.salesforce.accounts = api=salesforce object=Account\n")
    with open(synced.ini, "w") as f:
        f.write(ini)
    synced.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while pg.sql("SELECT count(*) FROM pg_trigger WHERE tgname = 'syncbouncer_guard' "
                 "AND tgrelid = 'salesforce.accounts'::regclass", dbname="crm")[0][0] == 0:
        assert time.monotonic() < deadline, synced.output()
        time.sleep(0.1)
    with crm(synced) as conn:
        deadline = time.monotonic() + 20
        while True:
            try:
                (aid,) = conn.execute("insert into salesforce.accounts (name) values ('CHOAM') "
                                      "returning id").fetchone()
                break
            except psycopg.errors.ObjectNotInPrerequisiteState:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        # the first table still works after the reload
        conn.execute("insert into salesforce.contacts (last_name) values ('After')")
    assert pg.sql("SELECT id, name FROM salesforce.accounts", dbname="crm") == [(aid, "CHOAM")]


def test_pipeline_mode_mixes_synced_writes_and_reads(synced, pg):
    with crm(synced) as conn:
        with conn.pipeline():
            c1 = conn.execute("insert into salesforce.contacts (last_name) values (%s) "
                              "returning id", ("P1",))
            c2 = conn.execute("insert into salesforce.contacts (last_name) values (%s) "
                              "returning id", ("P2",))
            c3 = conn.execute("select count(*) from salesforce.contacts")
        (a,), (b,), (n,) = c1.fetchone(), c2.fetchone(), c3.fetchone()
    assert n == 2
    assert sorted(synced.fake.store()) == sorted([a, b])


def test_pipeline_error_skips_the_rest_of_the_batch(synced, pg):
    with crm(synced) as conn:
        with pytest.raises(psycopg.errors.CheckViolation):
            with conn.pipeline():
                conn.execute("insert into salesforce.contacts (last_name, email) "
                             "values (%s, %s)", ("Bad", "nope"))
                conn.execute("insert into salesforce.contacts (last_name) values (%s)",
                             ("Skipped",))
        # the second write was skipped as PostgreSQL skips to Sync; the connection works
        assert conn.execute("select 1").fetchone() == (1,)
    assert synced.fake.store() == {}
    assert db_rows(pg) == []


def test_writes_beyond_the_api_cap_wait_their_turn(pg, bouncer_factory, fake_sf):
    """max_in_flight=2: ten concurrent writers all succeed, never more than two API requests
    (nor database transactions for them) at once."""
    import threading

    b = start_synced(pg, bouncer_factory, fake_sf, api_extra="max_in_flight=2")
    with crm(b) as conn:
        conn.execute("insert into salesforce.contacts (last_name) values ('warm')")
    fake_sf.control(delay_ms=300)
    peak = [0]
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            n = pg.sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                       "'syncbouncer mutation' AND state = 'idle in transaction'")[0][0]
            peak[0] = max(peak[0], n)
            time.sleep(0.02)

    errors = []

    def writer(k):
        try:
            with crm(b) as conn:
                conn.execute("insert into salesforce.contacts (last_name) values (%s)", (f"W{k}",))
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    w = threading.Thread(target=watch)
    w.start()
    threads = [threading.Thread(target=writer, args=(k,)) for k in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    stop.set()
    w.join()
    assert errors == []
    assert len(fake_sf.store()) == 11
    assert 1 <= peak[0] <= 2


def test_volatile_values_are_written_as_the_api_received_them(synced, pg):
    with crm(synced) as conn:
        cid, note = conn.execute("insert into salesforce.contacts (last_name, note) "
                                 "values ('Random', random()::text) returning id, note").fetchone()
        conn.execute("update salesforce.contacts set first_name = md5(random()::text) "
                     "where id = %s", (cid,))
    rec = synced.fake.store()[cid]
    row = db_rows(pg)[0]
    assert rec["Description"] == note == row[4]
    assert rec["FirstName"] == row[1]


def test_not_null_in_the_table_is_checked_before_the_api(synced, pg):
    pg.sql("ALTER TABLE salesforce.contacts ALTER COLUMN first_name SET NOT NULL", dbname="crm")
    with crm(synced) as conn:
        with pytest.raises(psycopg.errors.NotNullViolation) as ei:
            conn.execute("insert into salesforce.contacts (last_name) values ('NoFirst')")
        assert ei.value.diag.column_name == "first_name"
    assert synced.fake.requests() == []


def test_slow_api_never_blocks_other_clients(pg, bouncer_factory, fake_sf):
    """20 clients write to an API that holds their calls until the test lets them go, while
    another client runs 1,000 SELECT 1: the selects finish while the API calls are all still
    held (the loop is never blocked by them), and then all 200 writes complete. Timings are
    printed, not asserted."""
    import threading

    # the calls are held as long as the selects take: the API timeout only guards a hang
    synced = start_synced(pg, bouncer_factory, fake_sf, api_timeout=60,
                          pgbouncer={"max_client_conn": 150, "default_pool_size": 60})
    with crm(synced) as conn:
        conn.execute("insert into salesforce.contacts (last_name) values ('warm')")
    with crm(synced) as conn:
        t0 = time.monotonic()
        for _ in range(1000):
            conn.execute("select 1")
        baseline = time.monotonic() - t0
    synced.fake._call("POST", "/_gate/close", {})
    synced.fake.control(hold_writes=True)
    errors = []

    def writer(k):
        try:
            with crm(synced) as conn:
                for i in range(10):
                    conn.execute("insert into salesforce.contacts (last_name) values (%s)",
                                 (f"S{k}-{i}",))
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(20)]
    for t in threads:
        t.start()
    # the API's calls are out (as many as its max_in_flight, 10, lets go at once)
    deadline = time.monotonic() + 60
    while synced.fake._call("GET", "/_gate/held")["held"] < 10:
        assert time.monotonic() < deadline, "the writes never reached the API"
        time.sleep(0.05)
    with crm(synced) as conn:
        t0 = time.monotonic()
        for _ in range(1000):
            conn.execute("select 1")
        loaded = time.monotonic() - t0
    # nothing was written yet: every write waited for the API all along
    done_when_selects_ended = len(synced.fake.store()) - 1
    held = synced.fake._call("GET", "/_gate/held")["held"]
    synced.fake._call("POST", "/_gate/open", {})
    for t in threads:
        t.join(120)
    print(f"1000 x SELECT 1: {baseline:.3f}s alone, {loaded:.3f}s beside {held} held API calls")
    assert errors == []
    assert done_when_selects_ended == 0
    assert len(synced.fake.store()) == 201
    assert pg.sql("SELECT count(*) FROM salesforce.contacts", dbname="crm")[0][0] == 201


def test_guard_fires_even_in_replica_mode(synced, pg):
    with pg.connect(dbname="crm") as conn:  # superuser, directly
        conn.execute("SET session_replication_role = replica")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("insert into salesforce.contacts (id, last_name) values ('x', 'y')")


def test_admin_console_shows_synced_tables_apis_and_mutations(synced, pg):
    import threading

    with crm(synced) as conn:
        conn.execute("insert into salesforce.contacts (last_name) values ('One')")
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("insert into salesforce.contacts (last_name, email) values ('x', 'y')")
    synced.fake.control(delay_ms=1500)
    t = threading.Thread(target=lambda: crm(synced).execute(
        "insert into salesforce.contacts (last_name) values ('Slow')"))
    t.start()
    time.sleep(0.5)
    with synced.connect(dbname="pgbouncer", user="postgres", password="postgres",
                        autocommit=True) as admin:
        cur = admin.execute("SHOW SYNCED_TABLES")
        cols = [d.name for d in cur.description]
        rows = [dict(zip(cols, r)) for r in cur.fetchall()]
        assert cols[:9] == ["database", "table", "api", "object", "state", "inserts", "updates",
                            "deletes", "rejected"]
        assert rows[0]["table"] == "salesforce.contacts" and rows[0]["state"] == "ready"
        assert rows[0]["inserts"] == "1" and rows[0]["rejected"] == "1"
        cur = admin.execute("SHOW MUTATIONS")
        muts = [dict(zip([d.name for d in cur.description], r)) for r in cur.fetchall()]
        muts = [m for m in muts if m["state"] != "done"]  # the finished ones are listed too
        assert len(muts) == 1 and muts[0]["operation"] == "insert"
        assert muts[0]["state"] == "calling_api"
        cur = admin.execute("SHOW APIS")
        assert [d.name for d in cur.description] == [
            "name", "type", "base_url", "in_flight", "queued", "requests", "errors",
            "avg_latency_us", "auth", "token_state", "usage"]
        apis = [dict(zip([d.name for d in cur.description], r)) for r in cur.fetchall()]
        assert apis[0]["name"] == "salesforce" and apis[0]["in_flight"] == "1"
        text = repr(apis)
        assert "test-client-secret" not in text and "test-refresh-token" not in text
    t.join(30)


def test_table_that_cannot_be_prepared_fails_alone(pg, bouncer_factory, fake_sf):
    """A synced table without a primary key is reported and refuses writes; the others work."""
    b = start_synced(pg, bouncer_factory, fake_sf, before_start=lambda: pg.sql(
        "CREATE TABLE salesforce.leads (email text, name text); "
        "ALTER TABLE salesforce.leads OWNER TO app", dbname="crm"),
        more_tables=["crm.salesforce.leads = api=salesforce object=Lead"])
    with crm(b) as conn:
        conn.execute("insert into salesforce.contacts (last_name) values ('ok')")
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as ei:
            conn.execute("insert into salesforce.leads (email) values ('a@b.co')")
        assert "primary key" in ei.value.diag.message_primary
    with b.connect(dbname="pgbouncer", user="postgres", password="postgres",
                   autocommit=True) as admin:
        rows = {r[1]: r for r in admin.execute("SHOW SYNCED_TABLES").fetchall()}
        assert rows["salesforce.leads"][4] == "failed"
        assert rows["salesforce.contacts"][4] == "ready"
    assert [r["LastName"] for r in fake_sf.store().values()] == ["ok"]


def test_error_inside_a_transaction_block_aborts_it(synced, pg):
    """As in PostgreSQL: after an error the transaction is aborted (25P02) and COMMIT rolls back."""
    pg.sql("CREATE TABLE IF NOT EXISTS plain_t (v int); ALTER TABLE plain_t OWNER TO app; "
           "TRUNCATE plain_t", dbname="crm")
    with crm(synced) as conn:
        conn.autocommit = False
        conn.execute("insert into plain_t values (5)")
        with pytest.raises(psycopg.errors.CheckViolation) as ei:
            conn.execute("insert into salesforce.contacts (last_name, email) values ('x', 'bad')")
        assert ei.value.diag.message_detail == \
            "Key (email)=(bad) is not a valid email address."
        assert ei.value.diag.column_name == "email"
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("insert into plain_t values (6)")
        conn.rollback()
        conn.execute("insert into plain_t values (7)")
        with pytest.raises(psycopg.errors.FeatureNotSupported):
            conn.execute("truncate salesforce.contacts")
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("select 1")
        conn.rollback()
    assert pg.sql("SELECT count(*) FROM plain_t", dbname="crm")[0][0] == 0
    with crm(synced) as conn:
        conn.autocommit = False
        conn.execute("insert into plain_t values (8)")
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("insert into salesforce.contacts (last_name, email) values ('x', 'bad')")
        cur = conn.cursor()
        cur.execute("commit")  # the COMMIT of an aborted transaction rolls back
        assert cur.statusmessage == "ROLLBACK"
    assert pg.sql("SELECT count(*) FROM plain_t", dbname="crm")[0][0] == 0


def test_reload_with_a_bad_api_line_keeps_the_previous_setup(synced, pg):
    import signal

    with open(synced.ini) as f:
        ini = f.read()
    with open(synced.ini, "w") as f:
        f.write(ini.replace("refresh_token=test-refresh-token", "refresh_token=test-refresh-token "
                            "no_such_key=1"))
    synced.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    # refused as the start refuses it: nothing of the file is applied, the log says why
    while "RELOAD failed: [apis] salesforce (line" not in synced.output():
        assert time.monotonic() < deadline, synced.output()
        time.sleep(0.1)
    with crm(synced) as conn:
        conn.execute("insert into salesforce.contacts (last_name) values ('still works')")
    assert [r["LastName"] for r in synced.fake.store().values()] == ["still works"]


def test_prepared_write_just_after_a_reload_waits_for_the_catalog(synced, pg):
    """A RELOAD builds the synced tables' catalog again; a write that comes meanwhile waits for
    it. Also when the write is a statement the client prepared before (only Bind and Execute
    come then, as psycopg and JDBC send a statement they prepared)."""
    with crm(synced) as conn, synced.connect(dbname="pgbouncer", user="postgres",
                                             password="postgres", autocommit=True) as a:
        insert = "insert into salesforce.contacts (last_name) values (%s)"
        conn.execute(insert, ("before",), prepare=True)
        for i in range(5):
            assert a.execute("RELOAD").statusmessage == "RELOAD"
            conn.execute(insert, (f"after {i}",), prepare=True)
    assert sorted(r["LastName"] for r in synced.fake.store().values()) == \
        ["after 0", "after 1", "after 2", "after 3", "after 4", "before"]


def test_reload_takes_effect_while_writes_keep_coming(synced, pg):
    """A RELOAD that finds synced writes in flight waits for them; the writes that come
    meanwhile wait for the RELOAD rather than keep it waiting (under a steady stream of writes
    it would never take effect), then go on with the new set-up."""
    fake = synced.fake
    fake.call("POST", "/_gate/close", {})
    fake.control(hold_writes=True)
    results = {}

    def write(name, in_transaction=False):
        try:
            with crm(synced) as conn:
                if in_transaction:
                    conn.execute("begin")
                conn.execute("insert into salesforce.contacts (last_name) values (%s)", (name,))
                if in_transaction:
                    conn.execute("commit")
            results[name] = "ok"
        except Exception as e:  # noqa: BLE001
            results[name] = repr(e)

    first = threading.Thread(target=write, args=("first",))
    first.start()
    deadline = time.monotonic() + 20
    while fake.call("GET", "/_gate/held")["held"] < 1:
        assert time.monotonic() < deadline, "the first write never reached the API"
        time.sleep(0.05)
    with open(synced.ini) as f:
        ini = f.read()
    line = next(ln for ln in ini.splitlines() if ln.startswith("salesforce ="))
    with open(synced.ini, "w") as f:
        f.write(ini.replace(line, line + "\n" + line.replace("salesforce =", "other =", 1)))
    second = threading.Thread(target=write, args=("second",))
    with synced.connect(dbname="pgbouncer", user="postgres", password="postgres",
                        autocommit=True) as a:
        assert a.execute("RELOAD").statusmessage == "RELOAD"
        assert "reload waits for 1 write in flight" in synced.log()
        assert [r[0] for r in a.execute("SHOW APIS").fetchall()] == ["salesforce"]
        second.start()
        while "new writes wait until the RELOAD is applied" not in synced.log():
            assert time.monotonic() < deadline, "the second write was not held:\n" + \
                synced.log()
            time.sleep(0.05)
        assert fake.call("GET", "/_gate/held")["held"] == 1
        # a write inside a transaction block is not held (its transaction may hold a lock
        # that a write in flight waits for): it reaches the API
        third = threading.Thread(target=write, args=("third", True))
        third.start()
        while fake.call("GET", "/_gate/held")["held"] < 2:
            assert time.monotonic() < deadline, "the write in a transaction was held"
            time.sleep(0.05)
        fake.call("POST", "/_gate/open", {})
        for t in (first, second, third):
            t.join(30)
        assert results == {"first": "ok", "second": "ok", "third": "ok"}
        assert sorted(r[0] for r in a.execute("SHOW APIS").fetchall()) == ["other", "salesforce"]
    assert sorted(r["LastName"] for r in fake.store().values()) == ["first", "second", "third"]
    assert sorted(r[2] for r in db_rows(pg)) == ["first", "second", "third"]


def check_held_writes_are_cancelled(b, pg):
    """A write the pooler holds for a RELOAD (which waits for a write in flight at the fake's
    gate) is cancelled by its client's CancelRequest as PostgreSQL cancels a statement: 57014,
    it never runs (nothing reaches the API, the table is unchanged) and the connection goes on.
    Once with the extended protocol as psycopg sends it (Parse first; then only Bind, of a
    statement it prepared before), once with a simple Query, once in a batch whose ordinary insert reached the server before the write was held: the error skips
    the rest of the batch to its Sync and rolls the insert back, as PostgreSQL does."""
    fake = b.fake
    pg.sql("CREATE TABLE IF NOT EXISTS plain_t (v int); ALTER TABLE plain_t OWNER TO app; "
           "TRUNCATE plain_t", dbname="crm")
    held_line = "new writes wait until the RELOAD is applied"
    insert = "insert into salesforce.contacts (last_name) values (%s)"
    wire_insert = "insert into salesforce.contacts (last_name) values ($1)"
    w = wire_login(b)
    with b.connect(dbname="pgbouncer", user="postgres", password="postgres",
                   autocommit=True) as a, crm(b) as conn:
        for i, kind in enumerate(("extended", "prepared", "simple", "batch")):
            fake.call("POST", "/_gate/close", {})
            fake.control(hold_writes=True)
            results = {}

            def cursor():
                return psycopg.ClientCursor(conn) if kind == "simple" else conn.cursor()

            def write(name, cur_of=None):
                try:
                    if cur_of is None:
                        with crm(b) as other:
                            other.execute(insert, (name,))
                    else:
                        with cur_of() as cur:
                            cur.execute(insert, (name,), prepare=kind == "prepared")
                    results[name] = "ok"
                except psycopg.errors.QueryCanceled as e:
                    results[name] = e
                except Exception as e:  # noqa: BLE001
                    results[name] = repr(e)

            first = threading.Thread(target=write, args=(f"first {i}",))
            first.start()
            deadline = time.monotonic() + 20
            while fake.call("GET", "/_gate/held")["held"] < 1:
                assert time.monotonic() < deadline, "the first write never reached the API"
                time.sleep(0.05)
            assert a.execute("RELOAD").statusmessage == "RELOAD"
            if kind == "batch":
                send_all(w, msg_parse("", "insert into plain_t values (1)"), msg_bind("", []),
                         msg_execute(), msg_parse("", wire_insert),
                         msg_bind("", [f"cancelled {i}"]), msg_execute(), (b"S", b""))
            else:
                held = threading.Thread(target=write, args=(f"cancelled {i}", cursor))
                held.start()
            while b.log().count(held_line) < i + 1:
                assert time.monotonic() < deadline, "the write was not held:\n" + b.log()
                time.sleep(0.05)
            if kind == "batch":
                w.cancel()
                answers = []
                while not answers or answers[-1][0] != "Z":
                    answers.append(w.read_msg())
                # the insert's answers, then the cancel's error; the rest skipped to Sync
                assert "".join(k for k, _ in answers) == "12CEZ", answers
                assert parse_error_fields(answers[3][1])["C"] == "57014"
                assert bytes(answers[4][1]) == b"I"
            else:
                conn.cancel()
                held.join(20)
                assert not held.is_alive(), "the cancelled write is still waiting"
                e = results[f"cancelled {i}"]
                assert isinstance(e, psycopg.errors.QueryCanceled), e
                assert e.sqlstate == "57014"
                assert e.diag.message_primary == "canceling statement due to user request"
                assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            # nothing of it reached the API: only the first write is at the gate
            assert fake.call("GET", "/_gate/held")["held"] == 1
            fake.call("POST", "/_gate/open", {})
            first.join(30)
            assert results[f"first {i}"] == "ok"
            fake.control(hold_writes=False)
            # the same connection goes on: its next write runs with the new set-up
            if kind == "batch":
                send_all(w, msg_parse("", wire_insert), msg_bind("", [f"after {i}"]),
                         msg_execute(), (b"S", b""))
                assert answer_kinds(w) == "12CZ"
            else:
                with cursor() as cur:
                    # prepared, as the next round's write is
                    cur.execute(insert, (f"after {i}",), prepare=kind == "extended" or None)
                    assert cur.statusmessage == "INSERT 0 1"
    w.close()
    expected = sorted(f"{n} {i}" for n in ("after", "first") for i in range(4))
    assert sorted(r["LastName"] for r in fake.store().values()) == expected
    assert sorted(r[2] for r in db_rows(pg)) == expected
    assert pg.sql("SELECT count(*) FROM plain_t", dbname="crm")[0][0] == 0


def test_a_write_held_for_a_reload_is_cancelled(pg, bouncer_factory, fake_sf):
    # the first write waits at the gate for the whole test: no API timeout ends it meanwhile
    b = start_synced(pg, bouncer_factory, fake_sf, api_timeout=30)
    check_held_writes_are_cancelled(b, pg)


# ---- the extended protocol message by message, as drivers other than psycopg send it


def wire_login(b):
    w = b.wire()
    assert w.startup("app", "crm", password="secret") is None
    return w


def msg_parse(name, sql):
    return b"P", name.encode() + b"\0" + sql.encode() + b"\0" + b"\0\0"


def msg_bind(stmt, params):
    body = b"\0" + stmt.encode() + b"\0" + b"\0\0" + len(params).to_bytes(2, "big")
    for p in params:
        v = p.encode()
        body += len(v).to_bytes(4, "big") + v
    return b"B", body + b"\0\0"


def msg_execute():
    return b"E", b"\0" + b"\0\0\0\0"


def send_all(w, *msgs):
    for kind, body in msgs:
        w.send(kind, body)


def answer_kinds(w):
    kinds = []
    while True:
        kind, _ = w.read_msg()
        kinds.append(kind)
        if kind == "Z":
            return "".join(kinds)


def test_wire_flush_before_execute(synced, pg):
    w = wire_login(synced)
    send_all(w, msg_parse("", "insert into salesforce.contacts (last_name) values ($1)"),
             msg_bind("", ["Flushed"]), (b"H", b""), msg_execute(), (b"S", b""))
    assert answer_kinds(w) == "12CZ"
    w.close()
    assert [r[2] for r in db_rows(pg)] == ["Flushed"]


def test_wire_unnamed_statement_bound_twice_in_one_batch(synced, pg):
    w = wire_login(synced)
    send_all(w, msg_parse("", "insert into salesforce.contacts (last_name) values ($1)"),
             msg_bind("", ["One"]), msg_execute(), msg_bind("", ["Two"]), msg_execute(),
             (b"S", b""))
    assert answer_kinds(w) == "12C2CZ"
    w.close()
    assert sorted(r[2] for r in db_rows(pg)) == ["One", "Two"]


def test_wire_close_of_a_synced_statement_then_a_query(synced, pg):
    w = wire_login(synced)
    send_all(w, msg_parse("s1", "insert into salesforce.contacts (last_name) values ($1)"),
             (b"S", b""))
    assert answer_kinds(w) == "1Z"
    send_all(w, (b"C", b"Ss1\0"), msg_parse("", "select 42"), msg_bind("", []), msg_execute(),
             (b"S", b""))
    assert answer_kinds(w) == "312DCZ"
    w.close()


def test_wire_describe_statement_counts_parameters(synced, pg):
    w = wire_login(synced)
    send_all(w, msg_parse("s2", "insert into salesforce.contacts (last_name, email) "
                                "values ($1, $2)"), (b"D", b"Ss2\0"), (b"S", b""))
    kind, _ = w.read_msg()
    assert kind == "1"
    kind, body = w.read_msg()
    assert kind == "t" and int.from_bytes(body[:2], "big") == 2
    w.close()


def test_query_string_of_several_synced_writes(synced, pg):
    out = synced.psql("-c", "insert into salesforce.contacts (last_name) values ('A'); "
                      "insert into salesforce.contacts (last_name) values ('B') returning last_name; "
                      "update salesforce.contacts set note = 'both' where last_name in ('A', 'B')",
                      dbname="crm")
    assert "INSERT 0 1" in out.stdout and "UPDATE 2" in out.stdout and " B" in out.stdout
    assert sorted((r[2], r[4]) for r in db_rows(pg)) == [("A", "both"), ("B", "both")]
    # an error stops the string: the writes before it stay, the ones after it do not run
    with crm(synced) as conn:
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("insert into salesforce.contacts (last_name) values ('C'); "
                         "insert into salesforce.contacts (last_name, email) values ('D', 'bad'); "
                         "insert into salesforce.contacts (last_name) values ('E')")
        assert conn.execute("select 1").fetchone() == (1,)
    assert sorted(r[2] for r in db_rows(pg)) == ["A", "B", "C"]
    assert len(synced.fake.store()) == 3
    # ordinary statements before a synced write run too (test_synced_statements.py), but not
    # with transaction control among them: refused whole, nothing sent
    with crm(synced) as conn:
        with pytest.raises(psycopg.errors.FeatureNotSupported):
            conn.execute("select 1; begin; insert into salesforce.contacts (last_name) "
                         "values ('F')")
        conn.execute("select 1; insert into salesforce.contacts (last_name) values ('G')")
    assert sorted(r[2] for r in db_rows(pg)) == ["A", "B", "C", "G"]
    assert len(synced.fake.store()) == 4


def test_returning_follows_the_clients_time_zone(synced, pg):
    pg.sql("ALTER TABLE salesforce.contacts ADD COLUMN created timestamptz DEFAULT now()",
           dbname="crm")
    synced.proc.send_signal(__import__("signal").SIGHUP)  # the catalog reads the new column
    time.sleep(1)
    with crm(synced) as conn:
        conn.execute("set timezone = 'Asia/Kolkata'")
        cur = conn.execute("insert into salesforce.contacts (last_name) values ('TZ') "
                           "returning created::text")
        assert cur.fetchone()[0].endswith("+05:30")


def test_pause_waits_for_synced_writes_and_holds_new_ones(synced, pg):
    import threading

    admin = synced.connect(dbname="pgbouncer", user="postgres", password="postgres",
                           autocommit=True)
    with crm(synced) as conn:
        conn.execute("insert into salesforce.contacts (last_name) values ('warm')")
    synced.fake.control(delay_ms=1500)
    slow = threading.Thread(target=lambda: crm(synced).execute(
        "insert into salesforce.contacts (last_name) values ('in flight')"))
    slow.start()
    time.sleep(0.5)
    admin.execute("PAUSE crm")  # returns once the write in flight has ended
    assert "in flight" in [r["LastName"] for r in synced.fake.store().values()]
    synced.fake.control(delay_ms=0)
    held = threading.Thread(target=lambda: crm(synced).execute(
        "insert into salesforce.contacts (last_name) values ('held')"))
    held.start()
    time.sleep(1)
    assert "held" not in [r["LastName"] for r in synced.fake.store().values()]
    admin.execute("RESUME crm")
    held.join(20)
    slow.join(20)
    assert "held" in [r["LastName"] for r in synced.fake.store().values()]
    admin.close()


def test_show_servers_lists_the_synced_side_connections(synced, pg):
    with crm(synced) as conn:
        conn.execute("insert into salesforce.contacts (first_name, last_name, email) "
                     "values ('Leto', 'Atreides', 'leto@caladan.io')")
        own = {r[0]: r[1] for r in pg.sql(
            "select pid, application_name from pg_stat_activity "
            "where application_name like 'syncbouncer%'")}
        assert own, "no synced-side connection to the database"
        with synced.connect(dbname="pgbouncer", user="postgres", password="postgres",
                            autocommit=True, prepare_threshold=None) as a:
            cur = a.execute("SHOW SERVERS")
            names = [d.name for d in cur.description]
            servers = [dict(zip(names, r)) for r in cur.fetchall()]
        by_pid = {s["remote_pid"]: s for s in servers}
        # every backend the pooler holds is listed, the synced side's marked by its name
        for pid, app in own.items():
            assert pid in by_pid, f"backend {pid} ({app}) missing from SHOW SERVERS: {servers}"
            s = by_pid[pid]
            assert s["application_name"] == app and app.startswith("syncbouncer")
            assert s["database"] == "crm" and s["user"] == "app"
            assert s["state"] in ("idle", "active") and s["link"] == ""
        # and the client's own server is there as always
        client_pid = conn.execute("select pg_backend_pid()").fetchone()[0]
        assert client_pid in by_pid
