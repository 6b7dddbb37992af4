"""Queries through the pooler in session mode: what a client sends comes back unchanged."""

import datetime
import decimal
import hashlib

import psycopg
import pytest


def test_psql_select_1(bouncer):
    res = bouncer.psql("-c", "select 1")
    assert res.stdout == " ?column? \n----------\n        1\n(1 row)\n\n"
    res = bouncer.psql("-At", "-c", "select 1 as a, 'two' as b")
    assert res.stdout == "1|two\n"


def test_psql_error_keeps_session(bouncer):
    res = bouncer.psql("-v", "ON_ERROR_STOP=0", "-c", "select 1/0", "-c", "select 42", "-At")
    assert "division by zero" in res.stderr
    assert res.stdout == "42\n"


def test_psycopg_results(bouncer):
    with bouncer.connect() as conn:
        row = conn.execute(
            "select 1::int, 'héllo'::text, null::text, 1.5::numeric, true,"
            " '2024-02-29'::date, array[1,2,3], 'a\tb\nc'::text"
        ).fetchone()
        assert row == (1, "héllo", None, decimal.Decimal("1.5"), True,
                       datetime.date(2024, 2, 29), [1, 2, 3], "a\tb\nc")
        rows = conn.execute("select g, g * g from generate_series(1, 1000) g").fetchall()
        assert rows == [(g, g * g) for g in range(1, 1001)]
        cur = conn.execute("select 1 where false")
        assert cur.fetchall() == []
        assert [d.name for d in cur.description] == ["?column?"]


def test_psycopg_error_then_next_statement(bouncer):
    with bouncer.connect(autocommit=True) as conn:
        with pytest.raises(psycopg.errors.UndefinedTable) as ei:
            conn.execute("select * from no_such_table")
        assert ei.value.sqlstate == "42P01"
        assert conn.execute("select 'still here'").fetchone() == ("still here",)


def test_transaction_commit_and_rollback(bouncer):
    with bouncer.connect() as conn:
        conn.execute("create table tx_t (v int)")
        conn.commit()
        conn.execute("insert into tx_t values (1)")
        conn.rollback()
        conn.execute("insert into tx_t values (2)")
        conn.commit()
    with bouncer.connect() as conn:
        assert conn.execute("select v from tx_t").fetchall() == [(2,)]
        conn.execute("drop table tx_t")
        conn.commit()


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_extended_protocol_parameters(bouncer, binary):
    blob = bytes(range(256)) * 4
    with bouncer.connect(autocommit=True) as conn:
        cur = conn.cursor(binary=binary)
        # %b sends a parameter in binary format, %t in text format, whatever the results are.
        cur.execute(
            "select %t::int + 1, %t::text || 'x', %b::bytea, %b::int8 * 2, %t::numeric, %b",
            (41, "ab", blob, 2**40, decimal.Decimal("3.25"), None),
        )
        assert cur.fetchone() == (42, "abx", blob, 2**41, decimal.Decimal("3.25"), None)
        assert cur.pgresult.fformat(0) == (1 if binary else 0)
        cur.execute("select %s::text from generate_series(1, 3) g", ("same",), prepare=True)
        assert cur.fetchall() == [("same",)] * 3
        # A named prepared statement used many times on the same session.
        for i in range(10):
            cur.execute("select %s::int * 3", (i,), prepare=True)
            assert cur.fetchone() == (i * 3,)


def test_executemany(bouncer):
    with bouncer.connect() as conn:
        conn.execute("create temp table em (a int, b text)")
        with conn.cursor() as cur:
            cur.executemany("insert into em values (%s, %s)", [(i, str(i)) for i in range(500)])
            assert conn.execute("select count(*), sum(a) from em").fetchone() == (500, 124750)


def test_pipeline_mode(bouncer):
    with bouncer.connect(autocommit=True) as conn:
        conn.execute("create temp table pl (v int)")
        with conn.pipeline():
            curs = []
            for i in range(200):
                conn.execute("insert into pl values (%s)", (i,))
                curs.append(conn.execute("select %s::int + 1000", (i,)))
        assert [c.fetchone()[0] for c in curs] == [i + 1000 for i in range(200)]
        assert conn.execute("select count(*), sum(v) from pl").fetchone() == (200, 19900)


def test_pipeline_error_aborts_rest_of_batch(bouncer):
    with bouncer.connect(autocommit=True) as conn:
        conn.execute("create temp table ple (v int)")
        with pytest.raises(psycopg.errors.DivisionByZero):
            with conn.pipeline():
                conn.execute("insert into ple values (1)")
                conn.execute("select 1/0")
                conn.execute("insert into ple values (2)")
        # Up to the Sync the batch is one implicit transaction: the insert before the error is
        # rolled back too, the one after it never ran. The session itself goes on.
        assert conn.execute("select count(*) from ple").fetchone() == (0,)
        conn.execute("insert into ple values (3)")
        assert conn.execute("select array_agg(v) from ple").fetchone() == ([3],)


def test_copy_100k_rows_in_and_out(bouncer, pg):
    rows = [(i, f"row {i} " + hashlib.md5(str(i).encode()).hexdigest()) for i in range(100000)]
    text = "".join(f"{i}\t{v}\n" for i, v in rows).encode()
    with bouncer.connect() as conn:
        conn.execute("drop table if exists copy_t")
        conn.execute("create table copy_t (id int primary key, val text)")
        with conn.cursor() as cur:
            with cur.copy("copy copy_t (id, val) from stdin") as copy:
                for off in range(0, len(text), 65536):
                    copy.write(text[off : off + 65536])
            assert cur.rowcount == 100000
        conn.commit()

        # Out again through the pooler: byte-identical.
        out = bytearray()
        with conn.cursor() as cur:
            with cur.copy("copy (select id, val from copy_t order by id) to stdout") as copy:
                for block in copy:
                    out += block
        assert hashlib.sha256(out).hexdigest() == hashlib.sha256(text).hexdigest()

    # And what the server stored, seen on a direct connection.
    expected = hashlib.md5(b"".join(f"{i}:{v}".encode() for i, v in rows)).hexdigest()
    got = pg.sql("select md5(string_agg(id || ':' || val, '' order by id)), count(*) from copy_t",
                 dbname="app")
    assert got == [(expected, 100000)]
    pg.sql("drop table copy_t", dbname="app")


def test_copy_error_keeps_session(bouncer):
    with bouncer.connect(autocommit=True) as conn:
        conn.execute("create temp table ce (v int)")
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            with conn.cursor() as cur:
                with cur.copy("copy ce from stdin") as copy:
                    copy.write(b"1\nnot a number\n")
        assert conn.execute("select count(*) from ce").fetchone() == (0,)
        assert conn.execute("select 7").fetchone() == (7,)
