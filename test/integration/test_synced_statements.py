"""Statements that applications send to synced tables, answered as PostgreSQL would answer them:
errors that name the right row, table names resolved through the client's search_path.

Each test goes through a real client (psycopg) and a fake API that speaks the real API's
shapes; it checks what the client is told, what reached the API and what is in the table.
"""

import json
import os
import shutil
import struct
import subprocess
import struct
import threading
import time

import psycopg
import pytest

from conftest import IS_PGBOUNCER, make_tempdir, wait_synced_ready
from pgwire import WireClient, parse_error_fields
from test_hostile_api import FakeApi, crm
from test_synced_surprises import start_salesforce

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="synced tables exist only in syncbouncer")

# kind: (schema.table, its DDL, the fake's arguments, [apis] line, [synced_tables] options)
KINDS = {
    "hubspot": ("hubspot.contacts",
                "CREATE TABLE hubspot.contacts (id text PRIMARY KEY, firstname text, email text)",
                ("--token", "hs-token"),
                "type=hubspot base_url={url} auth=bearer token=hs-token timeout=5",
                "object=contacts"),
    "airtable": ("airtable.contacts",
                 "CREATE TABLE airtable.contacts (id text PRIMARY KEY, firstname text, email text)",
                 ("--token", "at-token"),
                 "type=airtable base_url={url} base_id=appFAKE auth=bearer token=at-token "
                 "timeout=5",
                 "object=Contacts"),
    # a REST API with a batch endpoint: several rows in one request
    "rest": ("rest.contacts",
             "CREATE TABLE rest.contacts (id text PRIMARY KEY, firstname text, email text)",
             (),
             "type=rest base_url={url} auth=none path=/contacts insert_path=/contacts/batch "
             "records_key=data max_batch=10 timeout=5",
             ""),
}


def start_kind(pg, bouncer_factory, kind, fake):
    table, ddl, _, api, opts = KINDS[kind]
    schema = table.split(".")[0]
    pg.sql("DROP SCHEMA IF EXISTS syncbouncer CASCADE;"
           f"DROP SCHEMA IF EXISTS {schema} CASCADE;"
           f"CREATE SCHEMA {schema} AUTHORIZATION app; {ddl}; ALTER TABLE {table} OWNER TO app",
           dbname="crm")
    b = bouncer_factory(config={
        "databases": {"crm": f"host=127.0.0.1 port={pg.port} dbname=crm user=app password=secret"},
        "apis": [f"{kind} = " + api.format(url=fake.url)],
        "synced_tables": [f"crm.{table} = api={kind} {opts} sync_interval=0 backfill=off"],
    })
    wait_synced_ready(pg, b, synced=True)
    b.fake = fake
    b.table = table
    return b


@pytest.fixture(params=sorted(KINDS))
def synced(request, pg, bouncer_factory):
    kind = request.param
    fake = FakeApi(kind, *KINDS[kind][2])
    try:
        yield start_kind(pg, bouncer_factory, kind, fake)
    finally:
        fake.stop()


def stored_emails(fake):
    """The emails the fake API holds, whatever its store looks like."""
    out = []

    def walk(v):
        if isinstance(v, dict):
            for k, x in v.items():
                if k.lower() == "email" and isinstance(x, str):
                    out.append(x)
                else:
                    walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
    walk(fake.store())
    return sorted(out)


# ---------------------------------------------------------------- one bad row of several


@pytest.mark.timeout(60)
def test_one_bad_row_of_several_is_named_by_its_own_value(synced):
    """A batch refused for one row's value: DETAIL names that row's value (found by the value
    the API names), or, where the API names no value, leaves the Key clause out rather than
    show another row's value or an empty one."""
    kind = synced.table.split(".")[0]
    with crm(synced) as conn:
        with pytest.raises(psycopg.errors.CheckViolation) as ei:
            conn.execute(f"insert into {synced.table} (firstname, email) values "
                         "('Paul', 'paul@caladan.io'), ('Leto', 'pauldune.co'), "
                         "('Jessica', 'jessica@caladan.io')")
        diag = ei.value.diag
        assert diag.message_primary == f"{kind} validation error"
        assert (diag.schema_name, diag.table_name, diag.column_name) == (
            kind, "contacts", "email")
        if kind == "airtable":
            # Airtable names the field only: no row, no value
            assert diag.message_detail == 'Field "email" cannot accept the provided value'
        elif kind == "hubspot":
            assert diag.message_detail == \
                "Key (email)=(pauldune.co) Email address pauldune.co is invalid"
        else:
            assert diag.message_detail == \
                "Key (email)=(pauldune.co) pauldune.co is not a valid email address"
        # the same rows one by one in another order: the bad one is still the one named
        with pytest.raises(psycopg.errors.CheckViolation) as ei:
            conn.execute(f"insert into {synced.table} (firstname, email) values "
                         "('Leto', 'leto@caladan.io'), ('Alia', 'alia.caladan.io')")
        if kind != "airtable":
            assert ei.value.diag.message_detail.startswith("Key (email)=(alia.caladan.io) ")
        assert conn.execute(f"select count(*) from {synced.table}").fetchone() == (0,)
    assert stored_emails(synced.fake) == []


# ---------------------------------------------------------------- unqualified names


@pytest.fixture
def salesforce(pg, bouncer_factory):
    fake = FakeApi("salesforce")
    try:
        b = start_salesforce(pg, bouncer_factory, fake.url,
                             f"{fake.url}/services/oauth2/token", "test-client-secret")
        b.fake = fake
        yield b
    finally:
        fake.stop()


def sf_writes(fake):
    return [r for r in fake.requests() if "/composite/sobjects" in r["path"]]


def sf_contacts(fake):
    return list(fake.store().get("Contact", {}).values())


@pytest.mark.timeout(60)
def test_unqualified_names_resolve_through_the_clients_search_path(salesforce, pg):
    """A client whose search_path puts the synced schema first writes it by its bare name, over
    the extended protocol (psycopg) and the simple one (psql), as the server would resolve it;
    RESET brings the default back."""
    with crm(salesforce) as conn:
        conn.execute("SET search_path = salesforce, public")
        (cid,) = conn.execute("insert into contacts (last_name, email) "
                              "values ('Atreides', 'paul@caladan.io') returning id").fetchone()
        cur = conn.execute("update contacts set first_name = %s where id = %s", ("Paul", cid))
        assert cur.statusmessage == "UPDATE 1"
        assert conn.execute("select first_name, last_name from contacts").fetchall() == [
            ("Paul", "Atreides")]
        conn.execute("RESET search_path")
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute("insert into contacts (last_name) values ('Harkonnen')")
    assert [r["method"] for r in sf_writes(salesforce.fake)] == ["POST", "PATCH"]
    assert [(r["FirstName"], r["LastName"]) for r in sf_contacts(salesforce.fake)] == [
        ("Paul", "Atreides")]
    # psql: the simple query protocol
    out = salesforce.psql("-At", "-c", "SET search_path = salesforce",
                          "-c", "delete from contacts where last_name = 'Atreides'",
                          dbname="crm")
    assert out.stdout.splitlines() == ["SET", "DELETE 1"]
    assert sf_contacts(salesforce.fake) == []
    # SET LOCAL lasts its transaction block only
    with crm(salesforce) as conn:
        with conn.transaction():
            conn.execute("SET LOCAL search_path = salesforce")
            conn.execute("insert into contacts (last_name) values ('Jessica')")
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute("insert into contacts (last_name) values ('Harkonnen')")
    assert [r["LastName"] for r in sf_contacts(salesforce.fake)] == ["Jessica"]
    # the login's search_path (options=-c search_path=...) counts too
    with crm(salesforce, options="-c search_path=salesforce") as conn:
        conn.execute("insert into contacts (last_name) values ('Idaho')")
    assert sorted(r["LastName"] for r in sf_contacts(salesforce.fake)) == ["Idaho", "Jessica"]


@pytest.mark.timeout(60)
def test_unqualified_name_finds_an_ordinary_table_first_on_the_path(bouncer_factory, pg):
    """With public first on the path and a public.contacts of its own, the bare name is that
    ordinary table, as in PostgreSQL: the write stays in the database and nothing is sent."""
    pg.sql("DROP TABLE IF EXISTS public.contacts; CREATE TABLE public.contacts "
           "(id serial PRIMARY KEY, last_name text); ALTER TABLE public.contacts OWNER TO app",
           dbname="crm")
    fake = FakeApi("salesforce")
    try:
        b = start_salesforce(pg, bouncer_factory, fake.url,
                             f"{fake.url}/services/oauth2/token", "test-client-secret")
        with crm(b) as conn:
            conn.execute("SET search_path = public, salesforce")
            cur = conn.execute("insert into contacts (last_name) values ('Local')")
            assert cur.statusmessage == "INSERT 0 1"
            conn.execute("SET search_path = salesforce, public")
            conn.execute("insert into contacts (last_name) values ('Remote')")
        assert pg.sql("SELECT last_name FROM public.contacts", dbname="crm") == [("Local",)]
        assert [r["LastName"] for r in sf_contacts(fake)] == ["Remote"]
    finally:
        fake.stop()
        pg.sql("DROP TABLE IF EXISTS public.contacts", dbname="crm")


# ---------------------------------------------------------------- writes that escape a block


def statement_log_lines(pg, start, marker):
    """(parses, executes) PostgreSQL logged since offset start of its log for statements whose
    text holds marker (log_min_duration_statement = 0 logs each step of the extended protocol:
    "parse <unnamed>: ...", "bind ...", "execute <unnamed>: ...")."""
    with open(pg.logfile, "rb") as f:
        f.seek(start)
        lines = [line for line in f.read().decode("utf-8", "replace").splitlines()
                 if marker in line and "duration:" in line]
    return (sum(1 for line in lines if " parse <unnamed>: " in line),
            sum(1 for line in lines if " execute <unnamed>: " in line))


@pytest.mark.timeout(60)
def test_a_synced_write_has_postgresql_parse_its_statement_once(bouncer_factory, pg):
    """The client's statement runs three times on the write's connection (capture, check,
    apply); PostgreSQL parses it once and binds it again for the other two, with the client's
    parameters (simple and extended protocol). With ON CONFLICT DO NOTHING a lookup parses
    between the check and the apply run, so the apply run parses the statement again."""
    pg.sql("ALTER DATABASE crm SET log_min_duration_statement = 0")
    fake = FakeApi("salesforce")
    try:
        b = start_salesforce(pg, bouncer_factory, fake.url,
                             f"{fake.url}/services/oauth2/token", "test-client-secret")
        start = os.path.getsize(pg.logfile)
        with crm(b) as conn:
            (rid,) = conn.execute("insert into salesforce.contacts (last_name, email) values "
                                  "('ParseOnceA', 'a@example.com') returning id").fetchone()
            cur = conn.execute("update salesforce.contacts set email = %s "
                               "where last_name = 'ParseOnceA'", ("b@example.com",))
            assert cur.statusmessage == "UPDATE 1"
            cur = conn.execute("insert into salesforce.contacts (last_name) values "
                               "('ParseOnceC') on conflict do nothing")
            assert cur.statusmessage == "INSERT 0 1"
        out = b.psql("-At", "-c", "update salesforce.contacts set first_name = 'Paul' "
                     "where last_name = 'ParseOnceA' returning first_name", dbname="crm")
        assert out.stdout.splitlines() == ["Paul", "UPDATE 1"]
        assert statement_log_lines(pg, start, "values ('ParseOnceA'") == (1, 3)
        assert statement_log_lines(pg, start, "set email = $1") == (1, 3)
        assert statement_log_lines(pg, start, "set first_name = 'Paul'") == (1, 3)
        assert statement_log_lines(pg, start, "('ParseOnceC') on conflict") == (2, 3)
        assert sorted(pg.sql("select id, first_name, last_name, email from salesforce.contacts",
                             dbname="crm"), key=lambda r: r[2]) == [
            (rid, "Paul", "ParseOnceA", "b@example.com"),
            (sf_contacts_id(fake, "ParseOnceC"), None, "ParseOnceC", None)]
        assert sorted((c["LastName"], c.get("FirstName"), c.get("Email"))
                      for c in sf_contacts(fake)) == [
            ("ParseOnceA", "Paul", "b@example.com"), ("ParseOnceC", None, None)]
    finally:
        pg.sql("ALTER DATABASE crm RESET log_min_duration_statement")
        fake.stop()


def sf_contacts_id(fake, last_name):
    (rid,) = [c["Id"] for c in sf_contacts(fake) if c["LastName"] == last_name]
    return rid


@pytest.mark.timeout(60)
def test_insert_does_not_wait_for_another_writes_check_run(salesforce, pg):
    """Before its request leaves, a synced INSERT writes its rows for real in a savepoint (the
    check run), each under a stand-in for the key the API will assign. Another write's check
    run holds its stand-ins until it rolls back: the stand-ins must differ, or every INSERT of
    the table waits for the one before it. Here an open transaction holds a row under '~sb1',
    the stand-in every statement's first row once had."""
    other = pg.connect(dbname="crm")
    try:
        other.execute("BEGIN")
        other.execute("SET LOCAL syncbouncer.mode = 'sync'")  # the guard lets this one in
        other.execute("INSERT INTO salesforce.contacts (id, last_name) VALUES ('~sb1', 'held')")
        with crm(salesforce) as conn:
            (rid,) = conn.execute("insert into salesforce.contacts (last_name) "
                                  "values ('Atreides') returning id").fetchone()
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert [c["LastName"] for c in sf_contacts(salesforce.fake)] == ["Atreides"]
    assert pg.sql("select id, last_name from salesforce.contacts", dbname="crm") == \
        [(rid, "Atreides")]


@pytest.mark.timeout(60)
def test_write_inside_a_transaction_block_says_it_escapes(salesforce, pg):
    """Writes escape transactions (the API has no rollback): inside a transaction block the
    client is told so with a NOTICE, and the ROLLBACK indeed leaves the write in place; outside
    a block there is nothing to say."""
    notices = []
    with crm(salesforce) as conn:
        conn.add_notice_handler(lambda d: notices.append((d.severity_nonlocalized,
                                                          d.message_primary)))
        conn.execute("insert into salesforce.contacts (last_name) values ('Outside')")
        assert notices == []
        conn.autocommit = False
        conn.execute("insert into salesforce.contacts (last_name) values ('Inside')")
        assert notices == [("NOTICE", "sent to salesforce outside the transaction: "
                                      "ROLLBACK will not undo it")]
        conn.rollback()
        # nothing sent, nothing to say: no row matches
        conn.execute("update salesforce.contacts set first_name = 'x' where false")
        conn.rollback()
        assert len(notices) == 1
    assert sorted(r["LastName"] for r in sf_contacts(salesforce.fake)) == ["Inside", "Outside"]
    assert sorted(pg.sql("SELECT last_name FROM salesforce.contacts", dbname="crm")) == [
        ("Inside",), ("Outside",)]
    # psql, simple query protocol
    out = salesforce.psql("-c", "BEGIN", "-c", "delete from salesforce.contacts",
                          "-c", "ROLLBACK", dbname="crm")
    assert "NOTICE:  sent to salesforce outside the transaction: ROLLBACK will not undo it" \
        in out.stderr
    assert sf_contacts(salesforce.fake) == []


# ---------------------------------------------------------------- mixed query strings


def notes_table(pg):
    pg.sql("DROP TABLE IF EXISTS public.notes; CREATE TABLE public.notes (body text);"
           "ALTER TABLE public.notes OWNER TO app", dbname="crm")


def notes(pg):
    return sorted(r[0] for r in pg.sql("SELECT body FROM public.notes", dbname="crm"))


@pytest.mark.timeout(60)
def test_query_string_of_synced_writes_then_ordinary_statements(salesforce, pg):
    """ORMs and migration tools send several statements in one query string. Synced writes at
    its head run in order, each its own API request; the ordinary statements after them run on
    the server as one implicit transaction; the client gets one answer: a CommandComplete per
    statement and one ReadyForQuery. The first error ends the string: an error in the ordinary
    part rolls that part back, but cannot take back a write the API already took, and the
    client is told so."""
    notes_table(pg)
    w = salesforce.wire()
    assert w.startup("app", "crm", "secret") is None
    w.query("insert into salesforce.contacts (last_name) values ('Ada');"
            "update salesforce.contacts set first_name = 'A' where last_name = 'Ada';"
            "insert into public.notes values ('n1'); select count(*) from public.notes")
    kinds, tags = [], []
    while True:
        kind, msg = w.read_msg()
        kinds.append(kind)
        if kind == "C":
            tags.append(msg.rstrip(b"\0").decode())
        if kind == "Z":
            break
    assert tags == ["INSERT 0 1", "UPDATE 1", "INSERT 0 1", "SELECT 1"], kinds
    assert kinds.count("Z") == 1 and "E" not in kinds, kinds
    # each write says that the string's implicit transaction cannot take it back
    assert kinds.count("N") == 2, kinds
    # the string is over: the next query gets its own answer, nothing left over
    w.query("select 42")
    assert w.read_until_ready() == ([["42"]], None)
    w.close()
    assert [(r["FirstName"], r["LastName"]) for r in sf_contacts(salesforce.fake)] == [
        ("A", "Ada")]
    assert notes(pg) == ["n1"]

    # psql -c sends the string as one simple query
    out = salesforce.psql("-At", "-c",
                          "delete from salesforce.contacts where last_name = 'Ada'; "
                          "insert into public.notes values ('n2') returning body",
                          dbname="crm")
    assert out.stdout.split() == ["DELETE", "1", "n2", "INSERT", "0", "1"], out
    assert sf_contacts(salesforce.fake) == []
    assert notes(pg) == ["n1", "n2"]

    # an error in the ordinary part: that part rolls back, the write stays, the client is told
    notices = []
    with crm(salesforce) as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("insert into salesforce.contacts (last_name) values ('Bea');"
                         "insert into public.notes values ('n3'); select 1/0")
        assert notices == ["sent to salesforce outside the transaction: an error later in "
                           "the query string will not undo it"]
        assert conn.execute("select 1").fetchone() == (1,)
    assert [r["LastName"] for r in sf_contacts(salesforce.fake)] == ["Bea"]
    assert notes(pg) == ["n1", "n2"]

    # inside a transaction block the ordinary part joins the block, the write escapes it
    notices = []
    with crm(salesforce) as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        conn.autocommit = False
        conn.execute("update salesforce.contacts set first_name = 'B';"
                     "insert into public.notes values ('n3')")
        assert conn.execute("select count(*) from public.notes").fetchone() == (3,)
        conn.rollback()
        assert notices == ["sent to salesforce outside the transaction: ROLLBACK will not "
                           "undo it"]
    assert [r.get("FirstName") for r in sf_contacts(salesforce.fake)] == ["B"]
    assert notes(pg) == ["n1", "n2"]

    # a refused write ends the string before the ordinary part runs
    out = salesforce.psql("-c", "update salesforce.contacts set id = 'x';"
                          "insert into public.notes values ('n4')", dbname="crm", check=False)
    assert out.returncode != 0 and "n4" not in notes(pg)


def transcript(w, sql):
    """One simple Query over the raw protocol: its answer, message by message (command tags,
    column names, rows, error codes with their positions, notices), up to ReadyForQuery."""
    w.query(sql)
    out = []
    while True:
        kind, msg = w.read_msg()
        if kind == "C":
            out.append(("C", msg.rstrip(b"\0").decode()))
        elif kind == "T":
            (n,) = struct.unpack("!H", msg[:2])
            names, pos = [], 2
            for _ in range(n):
                end = msg.index(b"\0", pos)
                names.append(msg[pos:end].decode())
                pos = end + 1 + 18
            out.append(("T", names))
        elif kind == "D":
            (n,) = struct.unpack("!H", msg[:2])
            row, pos = [], 2
            for _ in range(n):
                (ln,) = struct.unpack("!i", msg[pos:pos + 4])
                pos += 4
                row.append(None if ln < 0 else msg[pos:pos + ln].decode())
                pos += max(ln, 0)
            out.append(("D", row))
        elif kind in "EN":
            f = parse_error_fields(msg)
            out.append(("E", f["C"], f.get("P")) if kind == "E" else ("N", f["M"]))
        elif kind == "Z":
            out.append(("Z", msg.decode()))
            return out
        else:
            out.append((kind,))


ESCAPED = "sent to salesforce outside the transaction: "


@pytest.mark.timeout(60)
def test_ordinary_statements_before_synced_writes_answer_as_postgresql(salesforce, pg):
    """A query string with ordinary statements before and between its synced writes runs in
    order. Everything but the writes is one implicit transaction on the client's server, which
    an error later in the string rolls back; each write escapes it (with the NOTICE) and goes to
    the API in its turn; the first error ends the string. The client gets what PostgreSQL sends
    for one Query: checked message by message against PostgreSQL itself running the same
    strings on plain tables of the same shape (a CHECK there refuses what the API refuses)."""
    notes_table(pg)
    # same-length names, so that error positions compare too
    pg.sql("DROP TABLE IF EXISTS public.contacts_ref, public.notez;"
           "CREATE TABLE public.contacts_ref (id text, first_name text, last_name text,"
           "  email text CHECK (email IS NULL OR email LIKE '%@%'));"
           "CREATE TABLE public.notez (body text);"
           "ALTER TABLE public.contacts_ref OWNER TO app; ALTER TABLE public.notez OWNER TO app",
           dbname="crm")
    ours, ref = salesforce.wire(), WireClient("127.0.0.1", pg.port)
    assert ours.startup("app", "crm", "secret") is None
    assert ref.startup("app", "crm", "secret") is None

    def run(sql, escaped):
        got = transcript(ours, sql)
        want = transcript(ref, sql.replace("salesforce.contacts", "public.contacts_ref")
                          .replace("public.notes", "public.notez"))
        notices = [m for m in got if m[0] == "N" and m[1].startswith(ESCAPED)]
        assert [m for m in got if m not in notices] == want, (sql, got, want)
        assert [n[1][len(ESCAPED):] for n in notices] == escaped, sql
        return got

    later = "an error later in the query string will not undo it"
    # the issue's own string: write, ordinary statement, write
    got = run("insert into salesforce.contacts (last_name) values ('Ada');"
              "insert into public.notes values ('n1');"
              "update salesforce.contacts set first_name = 'A' where last_name = 'Ada'",
              [later, later])
    assert got[-1] == ("Z", "I")
    # SELECTs in the string return their rows; the write before a SELECT is in its rows
    got = run("select count(*) from public.notes;"
              "insert into salesforce.contacts (last_name, email) values ('Bea', 'b@x.io');"
              "select last_name, first_name from salesforce.contacts order by 1", [later])
    assert ("D", ["Bea", None]) in got
    # an ordinary statement fails after a write: the ordinary statements before it roll back,
    # the write stays, nothing after the error runs
    writes = len(sf_writes(salesforce.fake))
    run("insert into public.notes values ('n2');"
        "insert into salesforce.contacts (last_name) values ('Cy');"
        "select nosuch from public.notes; insert into public.notes values ('n3')", [later])
    assert len(sf_writes(salesforce.fake)) == writes + 1
    # the API refuses a write that follows an ordinary statement: that statement rolls back,
    # nothing after it runs, nothing more is sent to the API
    got = run("insert into public.notes values ('n4');"
              "update salesforce.contacts set email = 'bad' where last_name = 'Bea';"
              "insert into salesforce.contacts (last_name) values ('Dee');"
              "insert into public.notes values ('n5')", [])
    assert [m[:2] for m in got] == [("C", "INSERT 0 1"), ("E", "23514"), ("Z", "I")]
    assert len(sf_writes(salesforce.fake)) == writes + 2
    # inside the client's transaction block: its statements join the block, which an error
    # aborts ('E'); the writes escape it
    block = "ROLLBACK will not undo it"
    run("BEGIN", [])
    got = run("insert into public.notes values ('n6');"
              "insert into salesforce.contacts (last_name) values ('Eve');"
              "select count(*) from public.notes", [block])
    assert got[-2:] == [("C", "SELECT 1"), ("Z", "T")]
    got = run("insert into public.notes values ('n7');"
              "update salesforce.contacts set email = 'bad' where last_name = 'Eve';"
              "select 1", [])
    assert got[-1] == ("Z", "E")
    run("ROLLBACK", [])
    assert notes(pg) == ["n1"]
    assert pg.sql("SELECT body FROM public.notez", dbname="crm") == [("n1",)]
    assert sorted((r["LastName"], r.get("FirstName"), r.get("Email"))
                  for r in sf_contacts(salesforce.fake)) == [
        ("Ada", "A", None), ("Bea", None, "b@x.io"), ("Cy", None, None), ("Eve", None, None)]
    assert sorted(pg.sql("SELECT last_name FROM salesforce.contacts", dbname="crm")) == [
        ("Ada",), ("Bea",), ("Cy",), ("Eve",)]

    # transaction control, COPY FROM STDIN and DEALLOCATE in such a string: refused whole
    # before anything runs
    writes = len(sf_writes(salesforce.fake))
    for other, hint in (("commit", "queries of their own"), ("copy public.notes from stdin",
                        "COPY as a query"), ("deallocate all", "DEALLOCATE as a query")):
        ours.query(f"insert into public.notes values ('n8'); {other};"
                   "insert into salesforce.contacts (last_name) values ('Fay')")
        rows, err = ours.read_until_ready()
        assert err["C"] == "0A000" and hint in err["H"], err
    ours.close()
    ref.close()
    assert notes(pg) == ["n1"] and len(sf_writes(salesforce.fake)) == writes

    # psql sends the string as one Query and shows each statement's result
    out = salesforce.psql("-At", "-c", "insert into public.notes values ('n9');"
                          "delete from salesforce.contacts where last_name = 'Cy';"
                          "select body from public.notes order by 1", dbname="crm")
    assert out.stdout.split() == ["INSERT", "0", "1", "DELETE", "1", "n1", "n9"], out
    assert "NOTICE:  " + ESCAPED + later in out.stderr
    # psycopg: the error, the NOTICE, and the block left as PostgreSQL leaves it
    notices = []
    with crm(salesforce) as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        conn.autocommit = False
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("insert into public.notes values ('n10');"
                         "insert into salesforce.contacts (last_name) values ('Gus');"
                         "select 1/0")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        conn.rollback()
        assert conn.execute("select count(*) from public.notes").fetchone() == (2,)
    assert notices == [ESCAPED + block]
    assert "Gus" in [r["LastName"] for r in sf_contacts(salesforce.fake)]


def twice_executed(b, sql):
    """Parse, Bind, Execute, Execute, Sync of one unnamed portal over the raw protocol: the
    kinds of messages answered (with command tags and error codes), up to ReadyForQuery."""
    w = b.wire()
    try:
        assert w.startup("app", "crm", "secret") is None
        w.send(b"P", b"\0" + sql.encode() + b"\0\0\0")
        w.send(b"B", b"\0\0" + b"\0\0" + b"\0\0" + b"\0\0")
        for _ in range(2):
            w.send(b"E", b"\0\0\0\0\0")
        w.send(b"S")
        out = []
        while True:
            kind, msg = w.read_msg()
            if kind == "C":
                out.append("C " + msg.rstrip(b"\0").decode())
            elif kind == "E":
                out.append("E " + parse_error_fields(msg)["C"])
            else:
                out.append(kind)
            if kind == "Z":
                return out
    finally:
        w.close()


@pytest.mark.timeout(60)
def test_second_execute_of_a_synced_portal_never_writes_twice(salesforce, pg):
    """A portal runs once: a second Execute of it in the same batch gets PostgreSQL's own answer
    to that (as the same batch on an ordinary table shows) and never sends the write again."""
    notes_table(pg)
    for returning in ("", " returning last_name"):
        plain = twice_executed(salesforce, "insert into public.notes values ('x')"
                               + returning.replace("last_name", "body"))
        synced = twice_executed(salesforce, "insert into salesforce.contacts (last_name) "
                                "values ('Once')" + returning)
        assert synced == plain, (returning, plain, synced)
    assert [r["LastName"] for r in sf_contacts(salesforce.fake)] == ["Once", "Once"]
    assert len(sf_writes(salesforce.fake)) == 2
    # the 55000 rolled back the ordinary table's batch; the synced write had escaped it
    assert notes(pg) == ["x"]


def rebound(b, sql):
    """Parse, Bind, Bind again (new value), Execute, Sync of the unnamed portal over the raw
    protocol: the kinds of messages answered, up to ReadyForQuery."""
    w = b.wire()
    try:
        assert w.startup("app", "crm", "secret") is None
        w.send(b"P", b"\0" + sql.encode() + b"\0\0\0")
        for value in (b"First", b"Second"):
            w.send(b"B", b"\0\0" + b"\0\0" + b"\0\1" + struct.pack("!i", len(value))
                   + value + b"\0\0")
        w.send(b"E", b"\0\0\0\0\0")
        w.send(b"S")
        out = []
        while True:
            kind, msg = w.read_msg()
            out.append("C " + msg.rstrip(b"\0").decode() if kind == "C" else kind)
            if kind == "Z":
                return out
    finally:
        w.close()


@pytest.mark.timeout(60)
def test_second_bind_before_execute_replaces_the_portal(salesforce, pg):
    """A second Bind of the unnamed portal before its Execute replaces the first, as
    PostgreSQL does: the write sends the second value only, once, and the first binding's
    values are freed (the sanitizer build reports them otherwise)."""
    notes_table(pg)
    plain = rebound(salesforce, "insert into public.notes values ($1)")
    synced = rebound(salesforce, "insert into salesforce.contacts (last_name) values ($1)")
    assert synced == plain == ["1", "2", "2", "C INSERT 0 1", "Z"], (plain, synced)
    assert notes(pg) == ["Second"]
    assert [r["LastName"] for r in sf_contacts(salesforce.fake)] == ["Second"]
    assert len(sf_writes(salesforce.fake)) == 1


def closed_twice(b, sql):
    """Two statements prepared (Parse, Sync each), Describe of both in one batch, then Close of
    both and a Parse in another, over the raw protocol: the kinds of messages answered, up to
    the last ReadyForQuery."""
    w = b.wire()
    try:
        assert w.startup("app", "crm", "secret") is None
        for name in (b"s1", b"s2"):
            w.send(b"P", name + b"\0" + sql.encode() + b"\0\0\0")
            w.send(b"S")
        w.send(b"D", b"Ss1\0")
        w.send(b"D", b"Ss2\0")
        w.send(b"S")
        w.send(b"C", b"Ss1\0")
        w.send(b"C", b"Ss2\0")
        w.send(b"P", b"s1\0" + sql.encode() + b"\0\0\0")
        w.send(b"S")
        out = []
        while out.count("Z") < 4:
            kind, msg = w.read_msg()
            out.append("E " + parse_error_fields(msg)["C"] if kind == "E" else kind)
        return out
    finally:
        w.close()


@pytest.mark.timeout(60)
def test_each_close_of_synced_statements_is_answered(salesforce, pg):
    """Every Describe and Close of a batch gets its answer, in the order of the messages, as
    PostgreSQL answers them: a client counting its answers is never left waiting."""
    notes_table(pg)
    plain = closed_twice(salesforce, "insert into public.notes values ($1)")
    synced = closed_twice(salesforce, "insert into salesforce.contacts (last_name) values ($1)")
    assert synced == plain == ["1", "Z", "1", "Z", "t", "n", "t", "n", "Z", "3", "3", "1", "Z"], \
        (plain, synced)


# ---------------------------------------------------------------- batches that mix both kinds


@pytest.fixture
def salesforce_txn(pg, bouncer_factory):
    """The salesforce fixture in transaction pooling: a batch keeps its server up to Sync."""
    fake = FakeApi("salesforce")
    try:
        b = start_salesforce(pg, bouncer_factory, fake.url,
                             f"{fake.url}/services/oauth2/token", "test-client-secret",
                             pgbouncer={"pool_mode": "transaction"})
        b.fake = fake
        yield b
    finally:
        fake.stop()


ESCAPED_BATCH = ("sent to salesforce outside the transaction: an error later in the batch "
                 "will not undo it")


@pytest.mark.timeout(60)
def test_pipeline_mixes_ordinary_statements_and_synced_writes(salesforce_txn, pg):
    """psycopg's pipeline mode sends many statements up to one Sync. Ordinary statements and
    synced writes run in order: the ordinary ones as the batch's implicit transaction, each
    synced write escaping it (a NOTICE says so). The first error, on either side, skips the
    rest of the batch and rolls its ordinary statements back, as PostgreSQL does; nothing
    after it reaches the API."""
    b = salesforce_txn
    notes_table(pg)
    notices = []
    with crm(b) as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        with conn.pipeline():
            # executemany: the same statement again and again, prepared after a few times
            conn.cursor().executemany("insert into public.notes values (%s)",
                                      [(f"a{i}",) for i in range(6)])
            c1 = conn.execute("insert into salesforce.contacts (last_name) values (%s) "
                              "returning last_name", ("Ada",))
            conn.execute("insert into public.notes values (%s)", ("b",))
            c2 = conn.execute("select count(*) from public.notes")
        assert (c1.fetchone(), c2.fetchone()) == (("Ada",), (7,))
        assert notices == [ESCAPED_BATCH]
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE

        # an ordinary error after a synced write: the write stays, the rest is skipped
        with pytest.raises(psycopg.errors.DivisionByZero):
            with conn.pipeline():
                conn.execute("insert into public.notes values ('c')")
                conn.execute("insert into salesforce.contacts (last_name) values ('Kept')")
                conn.execute("select 1/0")
                conn.execute("insert into salesforce.contacts (last_name) values ('Skipped')")
                conn.execute("insert into public.notes values ('d')")
        # a synced write the API refuses, after ordinary statements: they roll back
        with pytest.raises(psycopg.errors.CheckViolation):
            with conn.pipeline():
                conn.execute("insert into public.notes values ('e')")
                conn.execute("insert into salesforce.contacts (last_name, email) "
                             "values ('Bad', 'nope')")
                conn.execute("insert into public.notes values ('f')")
                conn.execute("insert into salesforce.contacts (last_name) values ('Skipped')")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert conn.execute("select count(*) from public.notes").fetchone() == (7,)

        # in a transaction block the refused write aborts the block, as an error would
        conn.autocommit = False
        with pytest.raises(psycopg.errors.CheckViolation):
            with conn.pipeline():
                conn.execute("insert into public.notes values ('g')")
                conn.execute("insert into salesforce.contacts (last_name, email) "
                             "values ('Bad', 'nope')")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        conn.rollback()
        # the same with the block opened before the batch, which holds the write alone
        assert conn.execute("select count(*) from public.notes").fetchone() == (7,)
        with pytest.raises(psycopg.errors.CheckViolation):
            with conn.pipeline():
                conn.execute("insert into salesforce.contacts (last_name, email) "
                             "values ('Bad', 'nope')")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        conn.rollback()
    assert notes(pg) == ["a0", "a1", "a2", "a3", "a4", "a5", "b"]
    assert sorted(r["LastName"] for r in sf_contacts(b.fake)) == ["Ada", "Kept"]
    # the refused writes were sent; nothing after an error was
    assert [r["body"]["records"][0]["LastName"] for r in sf_writes(b.fake)] == [
        "Ada", "Kept", "Bad", "Bad", "Bad"]


@pytest.mark.timeout(60)
def test_large_ordinary_message_of_a_mixed_batch_streams(salesforce, pg):
    """A message too big to hold whole (here a 1.5 MB parameter) in a batch with a synced write
    streams to the server as it would without the write."""
    with crm(salesforce) as conn:
        with conn.pipeline():
            c1 = conn.execute("insert into salesforce.contacts (last_name) values (%s) "
                              "returning last_name", ("Ada",))
            c2 = conn.execute("select length(%s)", ("x" * 1_500_000,))
            c3 = conn.execute("select 1")
        assert (c1.fetchone(), c2.fetchone(), c3.fetchone()) == (("Ada",), (1_500_000,), (1,))


def interleaved_batch(b, table):
    """One raw batch: an ordinary named statement, a write to table through the unnamed one
    with an ordinary Parse between its Parse and Bind, the named statement bound, a portal run
    two rows at a time, a Describe; then the named statement again in the next batch. Returns
    the answers up to each ReadyForQuery: kinds, command tags, rows and error codes."""
    def bind(portal, stmt, *params):
        body = portal + b"\0" + stmt + b"\0\0\0" + struct.pack("!H", len(params))
        for p in params:
            body += struct.pack("!I", len(p)) + p
        return body + b"\0\0"

    w = b.wire()
    try:
        assert w.startup("app", "crm", "secret") is None
        w.send(b"P", b"ins_note\0insert into public.notes values ($1)\0\0\0")
        w.send(b"P", b"\0insert into " + table + b" (last_name) values ($1) "
               b"returning last_name\0\0\0")
        w.send(b"P", b"sel\0select g from generate_series(1, 3) g\0\0\0")
        w.send(b"B", bind(b"", b"", b"Ada"))
        w.send(b"D", b"P\0")
        w.send(b"E", b"\0\0\0\0\0")
        w.send(b"B", bind(b"", b"ins_note", b"x"))
        w.send(b"E", b"\0\0\0\0\0")
        w.send(b"B", bind(b"p2", b"sel"))
        w.send(b"E", b"p2\0\0\0\0\2")
        w.send(b"E", b"p2\0\0\0\0\0")
        w.send(b"D", b"Sins_note\0")
        w.send(b"S")
        w.send(b"B", bind(b"", b"ins_note", b"y"))
        w.send(b"E", b"\0\0\0\0\0")
        w.send(b"S")
        out = []
        for _ in range(2):
            while True:
                kind, msg = w.read_msg()
                if kind == "C":
                    out.append("C " + msg.rstrip(b"\0").decode())
                elif kind == "E":
                    out.append("E " + parse_error_fields(msg)["C"])
                elif kind == "D":
                    out.append("D " + msg[6:].decode())
                elif kind == "Z":
                    out.append("Z " + msg.decode())
                    break
                else:
                    out.append(kind)
        return out
    finally:
        w.close()


@pytest.mark.timeout(60)
def test_raw_batch_interleaves_ordinary_messages_with_a_synced_write(salesforce_txn, pg):
    """What JDBC and libpq's pipeline mode send: the answers to a batch that interleaves
    ordinary messages with a synced write are the ones the same batch gets on an ordinary
    table, message for message (plus the NOTICE of the escaped write), in transaction pooling;
    named statements, the unnamed one, Describe and a suspended portal keep working."""
    b = salesforce_txn
    notes_table(pg)
    pg.sql("DROP TABLE IF EXISTS public.twin; CREATE TABLE public.twin (id text DEFAULT 't', "
           "last_name text); ALTER TABLE public.twin OWNER TO app", dbname="crm")
    plain = interleaved_batch(b, b"public.twin")
    synced = interleaved_batch(b, b"salesforce.contacts")
    assert synced.count("N") == 1, synced
    assert [m for m in synced if m != "N"] == plain
    assert plain == ["1", "1", "1", "2", "T", "D Ada", "C INSERT 0 1", "2", "C INSERT 0 1",
                     "2", "D 1", "D 2", "s", "D 3", "C SELECT 1", "t", "n", "Z I",
                     "2", "C INSERT 0 1", "Z I"]
    assert [r["LastName"] for r in sf_contacts(b.fake)] == ["Ada"]
    assert notes(pg) == ["x", "x", "y", "y"]


# ---------------------------------------------------------------- Describe


INSERT_RETURNING = (b"insert into salesforce.contacts (last_name, email) values ($1, $2) "
                    b"returning id, length(last_name) as n, now() as at")


@pytest.mark.timeout(60)
def test_describe_of_a_synced_statement_is_postgresqls(salesforce, pg):
    """Drivers that describe a statement before they run it (asyncpg, JDBC, libpq's
    PQdescribePrepared) get PostgreSQL's own answer: the parameter types it infers and the
    RETURNING columns with their types; describing sends nothing to the API."""
    with crm(salesforce) as conn:
        pgc = conn.pgconn
        for name in (b"ins", b""):
            res = pgc.prepare(name, INSERT_RETURNING)
            assert res.status == psycopg.pq.ExecStatus.COMMAND_OK, res.error_message
            res = pgc.describe_prepared(name)
            assert res.status == psycopg.pq.ExecStatus.COMMAND_OK, res.error_message
            assert [res.param_type(i) for i in range(res.nparams)] == [25, 25]
            assert [(res.fname(i), res.ftype(i)) for i in range(res.nfields)] == [
                (b"id", 25), (b"n", 23), (b"at", 1184)]
        assert sf_writes(salesforce.fake) == []
        # and the statement runs as described
        res = pgc.exec_prepared(b"ins", [b"Atreides", b"paul@caladan.io"])
        assert res.status == psycopg.pq.ExecStatus.TUPLES_OK, res.error_message
        assert (res.ntuples, res.nfields, res.get_value(0, 1)) == (1, 3, b"8")
        # a statement without RETURNING has no result columns; declared types stay declared
        res = pgc.prepare(b"upd", b"update salesforce.contacts set first_name = $1 "
                                  b"where id = $2", [1043])
        assert res.status == psycopg.pq.ExecStatus.COMMAND_OK, res.error_message
        res = pgc.describe_prepared(b"upd")
        assert ([res.param_type(i) for i in range(res.nparams)], res.nfields) == ([1043, 25], 0)
        # the client's search_path names the table, as in its session
        conn.execute("SET search_path = salesforce")
        res = pgc.prepare(b"bare", b"delete from contacts where id = $1 returning last_name")
        assert res.status == psycopg.pq.ExecStatus.COMMAND_OK, res.error_message
        res = pgc.describe_prepared(b"bare")
        assert [(res.fname(i), res.ftype(i)) for i in range(res.nfields)] == [
            (b"last_name", 25)]
        # what PostgreSQL would refuse at Parse is refused at Describe, with its SQLSTATE
        res = pgc.prepare(b"bad", b"insert into salesforce.contacts (no_such) values ($1)")
        assert res.status == psycopg.pq.ExecStatus.COMMAND_OK
        res = pgc.describe_prepared(b"bad")
        assert res.status == psycopg.pq.ExecStatus.FATAL_ERROR
        assert res.error_field(psycopg.pq.DiagnosticField.SQLSTATE) == b"42703"
        assert conn.execute("select 1").fetchone() == (1,)
    assert [r["LastName"] for r in sf_contacts(salesforce.fake)] == ["Atreides"]


@pytest.fixture(scope="session")
def node_pg():
    """node and the pg driver from the npm registry, in a directory of this run."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node-pg test: node and npm are not installed")
    d = make_tempdir("sb-node-")
    env = dict(os.environ, HOME=d, npm_config_cache=os.path.join(d, ".npm"))
    res = subprocess.run([npm, "install", "--prefix", d, "--no-audit", "--no-fund",
                          "--no-package-lock", "pg@8"], env=env, capture_output=True,
                         text=True, timeout=180)
    if res.returncode != 0:
        pytest.skip("node-pg test: npm install pg failed: " + res.stderr[-300:])
    return node, os.path.join(d, "node_modules")


@pytest.mark.timeout(240)
def test_node_pg_named_statements_and_describe(salesforce, node_pg):
    """node-pg: a named statement with RETURNING gets its columns the first time and every
    time after; a batch that describes the statement before executing it gets PostgreSQL's
    ParameterDescription and RowDescription, then the row."""
    node, modules = node_pg
    url = f"postgres://app:secret@{salesforce.host}:{salesforce.port}/crm"
    res = subprocess.run([node, os.path.join(os.path.dirname(__file__), "node", "describe.js"),
                          url], env=dict(os.environ, NODE_PATH=modules), capture_output=True,
                         text=True, timeout=60)
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert "error" not in out, out["error"]
    assert out["runs"] == [{"fields": [["id", 25], ["n", 23]], "n": 8, "command": "INSERT"},
                           {"fields": [["id", 25], ["n", 23]], "n": 9, "command": "INSERT"}]
    batch = out["batch"]
    assert [m[0] for m in batch] == ["parseComplete", "parameterDescription", "rowDescription",
                                     "bindComplete", "dataRow", "commandComplete",
                                     "readyForQuery"], batch
    assert batch[1][1] == [25] and batch[2][1] == [["id", 25], ["n", 23]]
    assert batch[4][1][1] == "5" and batch[5][1] == "INSERT 0 1"
    assert sorted(r["LastName"] for r in sf_contacts(salesforce.fake)) == [
        "Atreides", "Harkonnen", "Idaho"]


# ---------------------------------------------------------------- cancel and disconnect


@pytest.fixture
def gated(pg, bouncer_factory):
    """Salesforce with one API request at a time, whose writes wait at the fake's gate."""
    from test_synced import FakeSalesforce, start_synced

    fake = FakeSalesforce()
    try:
        b = start_synced(pg, bouncer_factory, fake, api_extra="max_in_flight=1",
                         api_timeout=60)
        fake._call("POST", "/_gate/close", {})
        fake.control(hold_writes=True)
        b.fake = fake
        yield b
    finally:
        fake._call("POST", "/_gate/open", {})
        fake.stop()


def admin_rows(b, what):
    with b.connect(dbname="pgbouncer", user="postgres", password="postgres",
                   autocommit=True) as a:
        cur = a.execute(what)
        cols = [d.name for d in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]


def wait_for(what, cond, timeout=30):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out waiting for " + what
        time.sleep(0.05)


def held(b):
    return b.fake._call("GET", "/_gate/held")["held"]


def in_flight(b, state):
    return [m for m in admin_rows(b, "SHOW MUTATIONS") if m["state"] == state]


class Writer(threading.Thread):
    """One client's insert in a thread of its own: its outcome and the NOTICEs it got."""

    def __init__(self, b, last_name):
        super().__init__()
        self.conn = crm(b)
        self.notices = []
        self.conn.add_notice_handler(lambda d: self.notices.append(d.message_primary))
        self.last_name = last_name
        self.result = self.error = None
        self.start()

    def run(self):
        try:
            self.result = self.conn.execute(
                "insert into salesforce.contacts (last_name) values (%s) returning id",
                (self.last_name,)).fetchone()
        except psycopg.Error as e:
            self.error = e


@pytest.mark.timeout(120)
def test_cancel_before_the_request_leaves_sends_nothing(gated, pg):
    """A write waiting for its turn at the API is cancelled by the client's CancelRequest:
    57014, nothing sent; the connection goes on; a write already at the API completes, and
    its client, cancelled too late, is told so."""
    first = Writer(gated, "First")
    wait_for("the first write at the API", lambda: held(gated) == 1)
    second = Writer(gated, "Second")
    wait_for("the second write queued", lambda: len(in_flight(gated, "queued")) == 1)
    second.conn.cancel()
    second.join(30)
    assert isinstance(second.error, psycopg.errors.QueryCanceled), second.error
    assert second.conn.execute("select 1").fetchone() == (1,)
    first.conn.cancel()  # returns once the pooler has taken the CancelRequest
    gated.fake._call("POST", "/_gate/open", {})
    first.join(30)
    assert first.error is None and first.result is not None
    assert first.notices == [
        "cancel request came too late: the insert was already on its way to salesforce"]
    assert [r["LastName"] for r in gated.fake.store().values()] == ["First"]
    assert pg.sql("SELECT last_name FROM salesforce.contacts", dbname="crm") == [("First",)]
    for w in (first, second):
        w.conn.close()


@pytest.mark.timeout(120)
def test_disconnect_during_a_write_is_noticed_at_once(gated, pg):
    """A client that goes away while its write waits is noticed at once (SHOW CLIENTS no
    longer lists it while the API still holds the request): a write already sent completes
    whole; one still waiting for its turn is dropped, and nothing of it is sent."""
    def client_count():
        return len([c for c in admin_rows(gated, "SHOW CLIENTS") if c["database"] == "crm"])

    psql = lambda name: subprocess.Popen(
        ["psql", "-X", "-h", gated.host, "-p", str(gated.port), "-U", "app", "-d", "crm",
         "-c", f"insert into salesforce.contacts (last_name) values ('{name}')"],
        env=dict(os.environ, PGPASSWORD="secret"), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    sent = psql("Sent")
    wait_for("the first write at the API", lambda: held(gated) == 1)
    waiting = psql("Waiting")
    wait_for("the second write queued", lambda: len(in_flight(gated, "queued")) == 1)
    assert client_count() == 2
    for p in (sent, waiting):
        p.kill()
        p.wait(10)
    # noticed while the API still holds the first request
    wait_for("both clients gone", lambda: client_count() == 0)
    assert in_flight(gated, "queued") == [] and held(gated) == 1
    gated.fake._call("POST", "/_gate/open", {})
    wait_for("the sent write applied", lambda: pg.sql(
        "SELECT last_name FROM salesforce.contacts", dbname="crm") == [("Sent",)])
    wait_for("no write in flight", lambda: in_flight(gated, "calling_api") == [])
    assert [r["LastName"] for r in gated.fake.store().values()] == ["Sent"]
    assert len([r for r in gated.fake.requests() if r["method"] == "POST"]) == 1


@pytest.mark.timeout(120)
def test_mixed_string_keeps_its_server_in_transaction_pooling(pg, bouncer_factory):
    """Transaction pooling: the ordinary statements of a string that mixes them with synced
    writes keep their server (and their open transaction) for the whole string, while its write
    waits at the API; another client is served meanwhile, on the other server, and sees none of
    the string's uncommitted rows. Afterwards the rows are committed and the server is back."""
    from test_synced import FakeSalesforce, start_synced

    notes_table(pg)
    fake = FakeSalesforce()
    conn = None
    try:
        b = start_synced(pg, bouncer_factory, fake, api_extra="max_in_flight=1", api_timeout=60,
                         pgbouncer={"pool_mode": "transaction", "default_pool_size": 2})
        fake._call("POST", "/_gate/close", {})
        fake.control(hold_writes=True)
        b.fake = fake
        result = {}
        conn = crm(b)

        def run():
            cur = conn.execute("insert into public.notes values ('a1');"
                               "select pg_backend_pid();"
                               "insert into salesforce.contacts (last_name) values ('Tx');"
                               "select pg_backend_pid(), count(*) from public.notes")
            sets = []
            while True:
                sets.append(cur.fetchall() if cur.description else cur.statusmessage)
                if not cur.nextset():
                    break
            result["sets"] = sets

        t = threading.Thread(target=run)
        t.start()
        wait_for("the write at the API", lambda: held(b) == 1 or not t.is_alive())
        assert held(b) == 1, result
        with crm(b) as other:
            for _ in range(3):
                assert other.execute("select count(*) from public.notes").fetchone() == (0,)
        fake._call("POST", "/_gate/open", {})
        t.join(60)
        sets = result["sets"]
        assert [x if isinstance(x, str) else len(x) for x in sets] == [
            "INSERT 0 1", 1, "INSERT 0 1", 1], sets
        (pid,), (pid2, count) = sets[1][0], sets[3][0]
        assert pid == pid2 and count == 1, sets
        with crm(b) as other:
            assert other.execute("select body from public.notes").fetchall() == [("a1",)]
        assert [r["LastName"] for r in fake.store().values()] == ["Tx"]
        # the string's client is still connected, its server back in the pool
        wait_for("no server linked", lambda: [
            s for s in admin_rows(b, "SHOW SERVERS")
            if s["database"] == "crm" and s["state"] == "active"] == [])
        assert conn.execute("select count(*) from public.notes").fetchone() == (1,)
    finally:
        fake._call("POST", "/_gate/open", {})
        if conn is not None:
            conn.close()
        fake.stop()


# ---------------------------------------------------------------- values round-trip


@pytest.mark.timeout(60)
def test_jsonb_values_round_trip_through_a_rest_api(pg, bouncer_factory):
    """A jsonb column keeps the JSON value the API echoes back: an array stays an array, a
    number a number, a string a string (they all came back as JSON strings before)."""
    from test_hostile_api import start_synced

    fake = FakeApi("rest")
    values = ['[1, "x", {"k": [2]}]', '{"a": [1, 2]}', '3', '"s"', 'true']
    try:
        b = start_synced(pg, bouncer_factory, "rest", fake)
        with crm(b) as conn:
            for i, v in enumerate(values):
                conn.execute("insert into rest.contacts (name, data) values (%s, %s::jsonb)",
                             (f"n{i}", v))
            conn.execute("""update rest.contacts set data = '[5, 6]' where name = 'n1'""")
            rows = conn.execute("select name, data::text, jsonb_typeof(data) "
                                "from rest.contacts order by name").fetchall()
        want = [json.loads(v) for v in values]
        want[1] = [5, 6]
        assert [(n, json.loads(t)) for n, t, _ in rows] == [
            (f"n{i}", w) for i, w in enumerate(want)]
        assert [k for _, _, k in rows] == ["array", "array", "number", "string", "boolean"]
        # what the API holds is the same JSON
        stored = sorted(fake.store()["contacts"].values(), key=lambda r: r["name"])
        assert [r.get("data") for r in stored] == want
    finally:
        fake.stop()


# ---------------------------------------------------------------- constraints before the API


@pytest.mark.timeout(60)
def test_table_constraints_are_checked_before_the_request_leaves(salesforce, pg):
    """A row the table would refuse (CHECK, UNIQUE on another column than the key, a foreign key
    that still references it, even a deferred one) gets PostgreSQL's own error, with its DETAIL
    and constraint name, and nothing is sent to the API: no write the API accepted and the
    database cannot take."""
    pg.sql("ALTER TABLE salesforce.contacts ADD CONSTRAINT short_name "
           "CHECK (length(last_name) < 20), ADD CONSTRAINT one_email UNIQUE (email);"
           "DROP TABLE IF EXISTS public.notes;"
           "CREATE TABLE public.notes (contact text REFERENCES salesforce.contacts (id) "
           "DEFERRABLE INITIALLY DEFERRED, body text); ALTER TABLE public.notes OWNER TO app",
           dbname="crm")
    try:
        with crm(salesforce) as conn:
            # the API assigns the key: the row is checked all the same, and goes through
            (cid,) = conn.execute("insert into salesforce.contacts (last_name, email) "
                                  "values ('Atreides', 'paul@caladan.io') returning id"
                                  ).fetchone()
            assert len(sf_writes(salesforce.fake)) == 1
            with pytest.raises(psycopg.errors.UniqueViolation) as e:
                conn.execute("insert into salesforce.contacts (last_name, email) "
                             "values ('Harkonnen', 'paul@caladan.io')")
            assert e.value.diag.constraint_name == "one_email"
            assert e.value.diag.message_detail == "Key (email)=(paul@caladan.io) already exists."
            # its intent, written while the check ran, is gone by the time the error comes
            assert pg.sql("SELECT count(*) FROM syncbouncer.intent", dbname="crm") == [(0,)]
            # one bad row of several: none is sent
            with pytest.raises(psycopg.errors.CheckViolation) as e:
                conn.execute("insert into salesforce.contacts (last_name) "
                             "values ('Jessica'), (%s)", ("x" * 30,))
            assert e.value.diag.constraint_name == "short_name"
            assert e.value.diag.table_name == "contacts"
            with pytest.raises(psycopg.errors.CheckViolation):
                conn.execute("update salesforce.contacts set last_name = %s where id = %s",
                             ("y" * 25, cid))
            assert pg.sql("SELECT count(*) FROM syncbouncer.intent", dbname="crm") == [(0,)]
            conn.execute("insert into public.notes values (%s, 'met on Caladan')", (cid,))
            with pytest.raises(psycopg.errors.ForeignKeyViolation) as e:
                conn.execute("delete from salesforce.contacts where id = %s", (cid,))
            assert e.value.diag.message_detail == (
                f'Key (id)=({cid}) is still referenced from table "notes".')
            # the connection goes on: a good write still works
            cur = conn.execute("update salesforce.contacts set first_name = 'Paul' "
                               "where id = %s", (cid,))
            assert cur.statusmessage == "UPDATE 1"
        assert [r["method"] for r in sf_writes(salesforce.fake)] == ["POST", "PATCH"]
        assert [(r["FirstName"], r["LastName"]) for r in sf_contacts(salesforce.fake)] == [
            ("Paul", "Atreides")]
        assert pg.sql("SELECT first_name, last_name, email FROM salesforce.contacts",
                      dbname="crm") == [("Paul", "Atreides", "paul@caladan.io")]
        assert pg.sql("SELECT count(*) FROM syncbouncer.intent", dbname="crm") == [(0,)]
    finally:
        pg.sql("DROP TABLE IF EXISTS public.notes", dbname="crm")


@pytest.mark.timeout(60)
def test_arrays_numerics_and_timestamps_round_trip_exactly(pg, bouncer_factory):
    """text[], numeric and timestamptz columns keep what the client wrote after the API echoes
    it: the echoed array becomes the array again (it made the apply fail before), and a number
    the API holds as a float (12.50 comes back 12.5, 20 digits come back rounded) keeps the
    digits that were sent."""
    from test_hostile_api import start_synced

    fake = FakeApi("rest")
    tags = ["a", "b c", 'd"e', "", None]
    try:
        b = start_synced(pg, bouncer_factory, "rest", fake,
                         columns="ADD COLUMN tags text[], ADD COLUMN amount numeric, "
                                 "ADD COLUMN at timestamptz")
        with crm(b) as conn:
            conn.execute("SET TimeZone = 'UTC'")
            conn.execute("insert into rest.contacts (name, tags, amount, at) values "
                         "('n1', %s, 12.50, '2026-03-04 05:06:07.123456+02')", (tags,))
            conn.execute("insert into rest.contacts (name, tags, amount) values "
                         "('n2', '{}', 12345678901234567890.120)")
            conn.execute("update rest.contacts set tags = array_append(tags, 'z'), "
                         "amount = amount + 0.001 where name = 'n2'")
            rows = conn.execute("select name, tags, amount::text, at::text from rest.contacts "
                                "order by name").fetchall()
        assert rows == [("n1", tags, "12.50", "2026-03-04 03:06:07.123456+00"),
                        ("n2", ["z"], "12345678901234567890.121", None)]
        stored = sorted(fake.store()["contacts"].values(), key=lambda r: r["name"])
        assert [r.get("tags") for r in stored] == [tags, ["z"]]
        assert pg.sql("SELECT count(*) FROM syncbouncer.intent", dbname="crm") == [(0,)]
    finally:
        fake.stop()
