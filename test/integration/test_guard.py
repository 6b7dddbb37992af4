"""The guard trigger and the capture/confirmed stores, tested in SQL on direct connections.

The SQL comes from the catalog module itself (test/unit/catalog_sql_dump, built with the
pooler), installed on salesforce.contacts in a database of its own. Each test then plays the
part the mutation pipeline plays: it sets syncbouncer.mode / .conflict / .seq for one
transaction and checks what the trigger did.
"""

import os
import subprocess

import psycopg
import pytest
from psycopg import errors

from conftest import IS_PGBOUNCER, SB_BIN

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="syncbouncer's own catalog")

DB = "guardtest"
TABLE = "salesforce.contacts"


def dump_binary():
    if os.environ.get("SB_CATALOG_SQL_DUMP"):
        return os.environ["SB_CATALOG_SQL_DUMP"]
    for d in (os.environ.get("SB_BUILD_DIR"), os.path.dirname(SB_BIN)):
        if d:
            p = os.path.join(d, "test", "unit", "catalog_sql_dump")
            if os.path.exists(p):
                return p
    pytest.fail("test/unit/catalog_sql_dump not built next to the pooler (make)")


def dump(*args):
    return subprocess.run([dump_binary(), *args], check=True, capture_output=True,
                          text=True).stdout


def install(conn):
    conn.execute(dump())
    conn.execute(dump("salesforce", "contacts", "id"))


@pytest.fixture(scope="module")
def guard_db(pg):
    pg.sql(f"DROP DATABASE IF EXISTS {DB}")
    pg.sql(f"CREATE DATABASE {DB} OWNER app")
    with pg.connect(dbname=DB, user="app") as conn:
        conn.execute("CREATE SCHEMA salesforce")
        conn.execute("CREATE TABLE salesforce.contacts (id text primary key, first_name text,"
                     " last_name text, email text, note text default 'none')")
    # the schema needs CREATE on the database; the triggers need the table's owner
    with pg.connect(dbname=DB, user="app") as conn:
        install(conn)
    yield pg


@pytest.fixture
def db(guard_db):
    """Clean table with two rows, written in sync mode; a direct connection as the owner."""
    conn = guard_db.connect(dbname=DB, user="app")
    with conn.transaction():
        conn.execute("SELECT set_config('syncbouncer.mode', 'sync', true)")
        conn.execute(f"DELETE FROM {TABLE}")
        conn.execute(f"INSERT INTO {TABLE} (id, first_name, last_name, email) VALUES"
                     " ('003A', 'Paul', 'Atreides', 'paul@caladan.io'),"
                     " ('003B', 'Jessica', 'Atreides', 'jessica@caladan.io')")
    yield conn
    conn.close()


def rows(conn):
    with conn.transaction():
        conn.execute("SELECT set_config('syncbouncer.mode', '', true)")
        return conn.execute(f"SELECT id, first_name, last_name, email, note FROM {TABLE}"
                            " ORDER BY id").fetchall()


def set_mode(conn, mode, conflict=""):
    conn.execute("SELECT set_config('syncbouncer.mode', %s, true),"
                 " set_config('syncbouncer.conflict', %s, true),"
                 " set_config('syncbouncer.seq', '0', true)", (mode, conflict))


def captured(conn):
    return conn.execute(
        "SELECT seq, tbl::regclass::text, op, old, new FROM syncbouncer.capture"
        " WHERE xid = pg_current_xact_id() ORDER BY seq").fetchall()


BEFORE = [
    ("003A", "Paul", "Atreides", "paul@caladan.io", "none"),
    ("003B", "Jessica", "Atreides", "jessica@caladan.io", "none"),
]


@pytest.mark.parametrize("sql", [
    f"INSERT INTO {TABLE} (id, first_name) VALUES ('003Z', 'Leto')",
    f"UPDATE {TABLE} SET email = 'x@y.z' WHERE id = '003A'",
    f"DELETE FROM {TABLE} WHERE id = '003B'",
])
@pytest.mark.parametrize("mode", [None, "", "bogus"])
def test_direct_writes_are_refused(db, sql, mode):
    with pytest.raises(errors.InsufficientPrivilege) as exc:
        with db.transaction():
            if mode is not None:
                db.execute("SELECT set_config('syncbouncer.mode', %s, true)", (mode,))
            db.execute(sql)
    diag = exc.value.diag
    assert diag.sqlstate == "42501"
    assert diag.message_primary == ('table "salesforce.contacts" is synced with an API:'
                                    ' write to it through syncbouncer')
    assert "syncbouncer" in diag.message_hint
    assert diag.table_name == "contacts" and diag.schema_name == "salesforce"
    assert rows(db) == BEFORE


def test_capture_records_images_and_changes_nothing(db):
    with db.transaction() as tx:
        set_mode(db, "capture")
        cur = db.execute(f"INSERT INTO {TABLE} (id, first_name) VALUES ('003Z', 'Leto'),"
                         " (NULL, 'Alia') RETURNING id")
        assert cur.rowcount == 0 and cur.fetchall() == []
        assert cur.statusmessage == "INSERT 0 0"
        assert db.execute("SELECT current_setting('syncbouncer.seq')").fetchone()[0] == "2"
        got = captured(db)
        xids = db.execute("SELECT count(*) FROM syncbouncer.capture"
                          " WHERE xid = pg_current_xact_id()").fetchone()[0]
        raise psycopg.Rollback()
    assert xids == 2
    assert [r[:4] for r in got] == [(1, TABLE, "I", None), (2, TABLE, "I", None)]
    # defaults are filled in already
    assert got[0][4] == {"id": "003Z", "first_name": "Leto", "last_name": None,
                         "email": None, "note": "none"}
    assert got[1][4]["id"] is None and got[1][4]["first_name"] == "Alia"
    assert rows(db) == BEFORE


def test_capture_update_and_delete_images(db):
    with db.transaction() as tx:
        set_mode(db, "capture")
        db.execute(f"UPDATE {TABLE} SET email = 'paul@dune.co' WHERE id = '003A'")
        upd = captured(db)
        db.execute("DELETE FROM syncbouncer.capture WHERE xid = pg_current_xact_id()")
        set_mode(db, "capture")
        db.execute(f"DELETE FROM {TABLE}")
        dele = captured(db)
        raise psycopg.Rollback()
    assert len(upd) == 1
    seq, tbl, op, old, new = upd[0]
    assert (seq, tbl, op) == (1, TABLE, "U")
    assert old["email"] == "paul@caladan.io" and new["email"] == "paul@dune.co"
    assert old["id"] == new["id"] == "003A"
    assert [(r[0], r[2], r[3]["id"], r[4]) for r in dele] == [(1, "D", "003A", None),
                                                              (2, "D", "003B", None)]
    assert rows(db) == BEFORE


def test_capture_locks_updated_rows(db, guard_db):
    other = guard_db.connect(dbname=DB, user="app")
    try:
        with db.transaction() as tx:
            set_mode(db, "capture")
            db.execute(f"UPDATE {TABLE} SET note = 'mine' WHERE id = '003A'")
            with pytest.raises(errors.LockNotAvailable):
                with other.transaction():
                    other.execute("SET LOCAL lock_timeout = '200ms'")
                    set_mode(other, "sync")
                    other.execute(f"UPDATE {TABLE} SET note = 'theirs' WHERE id = '003A'")
            # the row that was not captured is free
            with other.transaction() as tx2:
                other.execute("SET LOCAL lock_timeout = '200ms'")
                set_mode(other, "sync")
                other.execute(f"UPDATE {TABLE} SET note = 'theirs' WHERE id = '003B'")
                raise psycopg.Rollback()
            raise psycopg.Rollback()
    finally:
        other.close()


def test_apply_insert_takes_confirmed_rows(db):
    ins = (f"INSERT INTO {TABLE} (first_name, last_name, email) VALUES"
           " ('Leto', 'Atreides', 'LETO@CALADAN.IO'), ('Alia', 'Atreides', 'alia@x')"
           " RETURNING id, first_name, email, note")
    with db.transaction():
        set_mode(db, "capture")
        db.execute(ins)
        assert len(captured(db)) == 2
        # the API created the first record only, and normalised its email
        db.execute("INSERT INTO syncbouncer.confirmed (xid, seq, tbl, key, fields)"
                   " VALUES (pg_current_xact_id(), 1, %s::regclass, NULL,"
                   " '{\"id\": \"003N\", \"email\": \"leto@caladan.io\"}')", (TABLE,))
        set_mode(db, "apply")
        cur = db.execute(ins)
        returned = cur.fetchall()
        tag = cur.statusmessage
        db.execute("DELETE FROM syncbouncer.capture WHERE xid = pg_current_xact_id()")
        db.execute("DELETE FROM syncbouncer.confirmed WHERE xid = pg_current_xact_id()")
    assert tag == "INSERT 0 1"
    assert returned == [("003N", "Leto", "leto@caladan.io", "none")]
    assert rows(db) == BEFORE[:2] + [("003N", "Leto", "Atreides", "leto@caladan.io", "none")]
    assert db.execute("SELECT count(*) FROM syncbouncer.capture").fetchone()[0] == 0


def test_apply_update_and_delete_by_key(db):
    upd = f"UPDATE {TABLE} SET email = upper(email) RETURNING id, email"
    with db.transaction():
        set_mode(db, "capture")
        db.execute(upd)
        # the API accepted 003B only, and answered with its own spelling
        db.execute("INSERT INTO syncbouncer.confirmed (xid, seq, tbl, key, fields)"
                   " VALUES (pg_current_xact_id(), 1, %s::regclass, '003B',"
                   " '{\"email\": \"Jessica@Caladan.io\"}')", (TABLE,))
        set_mode(db, "apply")
        cur = db.execute(upd)
        returned = cur.fetchall()
        assert cur.statusmessage == "UPDATE 1"
    assert returned == [("003B", "Jessica@Caladan.io")]
    assert rows(db) == [BEFORE[0], ("003B", "Jessica", "Atreides", "Jessica@Caladan.io", "none")]

    dele = f"DELETE FROM {TABLE} RETURNING id"
    with db.transaction():
        set_mode(db, "capture")
        db.execute(dele)
        db.execute("INSERT INTO syncbouncer.confirmed (xid, seq, tbl, key, fields)"
                   " VALUES (pg_current_xact_id(), 1, %s::regclass, '003A', NULL)", (TABLE,))
        set_mode(db, "apply")
        cur = db.execute(dele)
        assert cur.fetchall() == [("003A",)]
        assert cur.statusmessage == "DELETE 1"
    assert [r[0] for r in rows(db)] == ["003B"]


def test_apply_without_confirmed_rows_changes_nothing(db):
    with db.transaction():
        set_mode(db, "apply")
        assert db.execute(f"UPDATE {TABLE} SET note = 'x'").rowcount == 0
        assert db.execute(f"DELETE FROM {TABLE}").rowcount == 0
        assert db.execute(f"INSERT INTO {TABLE} (id) VALUES ('003Q')").rowcount == 0
    assert rows(db) == BEFORE


def apply_both(db, guard_db, expected):
    """The pipeline's write of an UPDATE of both rows that the API confirmed: the capture, the
    intent (committed on a connection of its own), the confirmed rows, the apply run, then
    apply_end(expected, ...). Returns the apply run's command tag; raises what apply_end
    raises (then nothing commits)."""
    upd = f"UPDATE {TABLE} SET note = 'applied'"
    with db.transaction():
        set_mode(db, "capture")
        db.execute(upd)
        with guard_db.connect(dbname=DB, user="app") as companion:
            companion.execute(
                "INSERT INTO syncbouncer.intent (id, tbl, tbl_name, op, api, rows, keys,"
                " idempotency_key) VALUES (77, %s::regclass, %s, 'U', 'salesforce', '[]',"
                " '{003A,003B}', 'k77')", (TABLE, TABLE))
        db.execute("DELETE FROM syncbouncer.capture WHERE xid = pg_current_xact_id()")
        db.execute("INSERT INTO syncbouncer.confirmed (xid, seq, tbl, key, fields)"
                   " SELECT pg_current_xact_id(), s, %s::regclass, k, '{}'"
                   " FROM unnest(array['003A', '003B']) WITH ORDINALITY AS u(k, s)", (TABLE,))
        db.execute("SELECT set_config('syncbouncer.mode', 'apply', true),"
                   " set_config('syncbouncer.seq', '0', true),"
                   " set_config('syncbouncer.applied', '0', true)")
        tag = db.execute(upd).statusmessage
        db.execute("CALL syncbouncer.apply_end(%s, 77, 'k77')", (expected,))
        assert db.execute("SELECT count(*) FROM syncbouncer.confirmed"
                          " WHERE xid = pg_current_xact_id()").fetchone() == (0,)
    return tag


def intent_ids(db):
    return [r[0] for r in db.execute("SELECT id FROM syncbouncer.intent").fetchall()]


def test_apply_end_forgets_the_intent_when_the_rows_the_api_confirmed_were_written(db, guard_db):
    try:
        assert apply_both(db, guard_db, 2) == "UPDATE 2"
        assert intent_ids(db) == []
        assert [r[4] for r in rows(db)] == ["applied", "applied"]
    finally:
        db.execute("DELETE FROM syncbouncer.intent")


def test_apply_end_commits_nothing_when_a_trigger_turned_a_row_away(db, guard_db):
    """A trigger of the table's own, run after the guard (its name sorts after it), keeps a
    row out of the apply run: the count of rows written is not the API's, so nothing commits
    and the intent stays for settling."""
    db.execute("CREATE FUNCTION salesforce.keep_003b() RETURNS trigger LANGUAGE plpgsql AS"
               " $$BEGIN IF old.id = '003B' THEN RETURN NULL; END IF; RETURN new; END$$")
    db.execute(f"CREATE TRIGGER trg_keep BEFORE UPDATE ON {TABLE}"
               " FOR EACH ROW EXECUTE FUNCTION salesforce.keep_003b()")
    try:
        with pytest.raises(errors.InternalError_) as ei:
            apply_both(db, guard_db, 2)
        assert ei.value.diag.message_primary == \
            "the second run wrote 1 row(s) where the API confirmed 2"
        assert rows(db) == BEFORE  # 003A was written, and rolled back with the rest
        assert intent_ids(db) == [77]
    finally:
        db.execute(f"DROP TRIGGER IF EXISTS trg_keep ON {TABLE}")
        db.execute("DROP FUNCTION IF EXISTS salesforce.keep_003b()")
        db.execute("DELETE FROM syncbouncer.intent")


def test_confirmed_rows_of_another_transaction_are_ignored(db, guard_db):
    other = guard_db.connect(dbname=DB, user="app")
    try:
        with other.transaction() as tx:
            other.execute("INSERT INTO syncbouncer.confirmed (xid, seq, tbl, key, fields)"
                          " VALUES (pg_current_xact_id(), 1, %s::regclass, '003A', '{}')",
                          (TABLE,))
            with db.transaction():
                set_mode(db, "apply")
                assert db.execute(f"DELETE FROM {TABLE}").rowcount == 0
            raise psycopg.Rollback()
    finally:
        other.close()
    assert rows(db) == BEFORE


def test_capture_duplicate_key_is_23505(db):
    with pytest.raises(errors.UniqueViolation) as exc:
        with db.transaction():
            set_mode(db, "capture")
            db.execute(f"INSERT INTO {TABLE} (id, first_name) VALUES ('003A', 'Again')")
    diag = exc.value.diag
    assert diag.message_primary == ('duplicate key value violates unique constraint'
                                    ' "contacts_pkey"')
    assert diag.message_detail == "Key (id)=(003A) already exists."
    assert diag.constraint_name == "contacts_pkey"
    # the same text PostgreSQL gives for the real table
    with pytest.raises(errors.UniqueViolation) as real:
        with db.transaction():
            set_mode(db, "sync")
            db.execute(f"INSERT INTO {TABLE} (id, first_name) VALUES ('003A', 'Again')")
    assert real.value.diag.message_primary == diag.message_primary
    assert real.value.diag.message_detail == diag.message_detail


def test_capture_duplicate_within_one_statement(db):
    with pytest.raises(errors.UniqueViolation) as exc:
        with db.transaction():
            set_mode(db, "capture")
            db.execute(f"INSERT INTO {TABLE} (id) VALUES ('003N'), ('003N')")
    assert exc.value.diag.message_detail == "Key (id)=(003N) already exists."


def test_capture_on_conflict_do_nothing_skips_existing(db):
    with db.transaction() as tx:
        set_mode(db, "capture", "nothing")
        db.execute(f"INSERT INTO {TABLE} (id, first_name) VALUES ('003A', 'Again'),"
                   " ('003N', 'New'), ('003N', 'Twice') ON CONFLICT DO NOTHING")
        got = captured(db)
        seq = db.execute("SELECT current_setting('syncbouncer.seq')").fetchone()[0]
        raise psycopg.Rollback()
    # rows are still counted, so that apply's seq lines up with capture's
    assert seq == "3"
    assert [(r[0], r[4]["id"], r[4]["first_name"]) for r in got] == [(2, "003N", "New")]
    assert rows(db) == BEFORE


def test_truncate_refused_unless_sync(db):
    for mode in ("", "capture", "apply"):
        with pytest.raises(errors.FeatureNotSupported) as exc:
            with db.transaction():
                db.execute("SELECT set_config('syncbouncer.mode', %s, true)", (mode,))
                db.execute(f"TRUNCATE {TABLE}")
        assert "salesforce.contacts" in exc.value.diag.message_primary
    assert rows(db) == BEFORE
    with db.transaction():
        set_mode(db, "sync")
        db.execute(f"TRUNCATE {TABLE}")
    assert rows(db) == []


def test_sync_mode_writes(db):
    with db.transaction():
        set_mode(db, "sync")
        db.execute(f"INSERT INTO {TABLE} (id, first_name) VALUES ('003C', 'Duncan')")
        db.execute(f"UPDATE {TABLE} SET last_name = 'Idaho' WHERE id = '003C'")
        db.execute(f"DELETE FROM {TABLE} WHERE id = '003B'")
        assert captured(db) == []
    assert rows(db) == [BEFORE[0], ("003C", "Duncan", "Idaho", None, "none")]


def test_mode_is_transaction_local(db):
    with db.transaction():
        set_mode(db, "sync")
    with pytest.raises(errors.InsufficientPrivilege):
        db.execute(f"DELETE FROM {TABLE}")


def test_install_twice_is_idempotent(db):
    install(db)
    install(db)
    trig = db.execute(
        "SELECT tgname, tgtype, encode(tgargs, 'escape') FROM pg_trigger"
        " WHERE tgrelid = %s::regclass AND NOT tgisinternal ORDER BY tgname",
        (TABLE,)).fetchall()
    assert trig == [("syncbouncer_guard", 31, "id\\000"),
                    ("syncbouncer_guard_applied", 29, ""),
                    ("syncbouncer_guard_truncate", 34, "id\\000")]
    assert db.execute("SELECT value FROM syncbouncer.meta WHERE key = 'version'"
                      ).fetchall() == [(dump("--version").strip(),)]
    assert db.execute("SELECT relpersistence FROM pg_class WHERE oid IN"
                      " ('syncbouncer.capture'::regclass, 'syncbouncer.confirmed'::regclass)"
                      ).fetchall() == [("u",), ("u",)]
    with pytest.raises(errors.InsufficientPrivilege):
        db.execute(f"DELETE FROM {TABLE}")
    assert rows(db) == BEFORE


def test_an_older_install_over_this_schema_fails_whole(db):
    """What an older syncbouncer runs at its start or RELOAD (its install text: a lower version,
    no version trigger of its own) fails whole over this schema, naming both versions, so that
    none of its functions replace this version's; the same text at this version goes in."""
    ours = dump("--version").strip()
    older = str(int(ours) - 1)
    text = dump().replace(f"values ('version', '{ours}')", f"values ('version', '{older}')")
    text = (text[:text.index("create or replace function syncbouncer.meta_version()")]
            + text[text.index("insert into syncbouncer.meta (key, value)"):])
    text = text.replace("is 'syncbouncer: refuses writes", "is 'older: refuses writes")
    assert "older: refuses" in text and f"'{older}')" in text
    comment = "SELECT obj_description('syncbouncer.guard()'::regprocedure, 'pg_proc')"
    with pytest.raises(errors.ObjectNotInPrerequisiteState) as exc:
        with db.transaction():
            db.execute(text)
    assert exc.value.diag.message_primary == (
        f"the syncbouncer schema in database {DB} is version {ours}, newer than this"
        f" syncbouncer's {older}: upgrade syncbouncer")
    assert db.execute("SELECT value FROM syncbouncer.meta WHERE key = 'version'"
                      ).fetchall() == [(ours,)]
    assert db.execute(comment).fetchone()[0].startswith("syncbouncer: refuses")
    install(db)
    db.commit()
    assert db.execute(comment).fetchone()[0].startswith("syncbouncer: refuses")


def test_discard_all_keeps_the_stores(db):
    db.execute("DISCARD ALL")
    with db.transaction() as tx:
        set_mode(db, "capture")
        db.execute(f"DELETE FROM {TABLE} WHERE id = '003A'")
        assert [r[2] for r in captured(db)] == ["D"]
        raise psycopg.Rollback()
    db.execute("DISCARD ALL")
    assert db.execute("SELECT to_regclass('syncbouncer.capture') IS NOT NULL,"
                      " to_regclass('syncbouncer.confirmed') IS NOT NULL").fetchone() == (True,
                                                                                           True)


def test_other_user_goes_through_the_same_guard(guard_db, db):
    """A user with write rights on the table but no rights of its own on the schema."""
    guard_db.sql("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'clerk')"
                 " THEN CREATE ROLE clerk LOGIN; END IF; END $$")
    db.execute("GRANT USAGE ON SCHEMA salesforce TO clerk")
    db.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {TABLE} TO clerk")
    with guard_db.connect(dbname=DB, user="clerk") as clerk:
        with pytest.raises(errors.InsufficientPrivilege) as exc:
            clerk.execute(f"DELETE FROM {TABLE}")
        assert "synced with an API" in exc.value.diag.message_primary
        with clerk.transaction() as tx:
            set_mode(clerk, "capture")
            clerk.execute(f"UPDATE {TABLE} SET note = 'c' WHERE id = '003B'")
            assert [r[2] for r in captured(clerk)] == ["U"]
            raise psycopg.Rollback()
