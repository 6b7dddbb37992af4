"""Named prepared statements through transaction pooling: an application prepares once and
executes on whichever backend it is given. pgbouncer 1.18 has no max_prepared_statements, so
these run against syncbouncer only."""

import threading

import psycopg
import pytest

from conftest import IS_PGBOUNCER, run_pgbench

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="pgbouncer 1.18 has no prepared "
                                "statement support in transaction mode")


def txn(**extra):
    cfg = {"pool_mode": "transaction", "default_pool_size": 2}
    cfg.update(extra)
    return {"pgbouncer": cfg}


def test_prepared_statement_follows_the_client_across_servers(bouncer_factory):
    b = bouncer_factory(config=txn())
    # two clients in transactions hold both servers, so each statement of c below lands on
    # whichever server is free
    with b.connect(autocommit=True, prepare_threshold=0) as c:
        pids = set()
        for i in range(20):
            row = c.execute("select %s::int * 2, pg_backend_pid()", (i,)).fetchone()
            assert row[0] == i * 2
            pids.add(row[1])
        with b.connect() as hog:
            hog.execute("select 1")  # holds one server in a transaction
            for i in range(5):
                assert c.execute("select %s::int * 2, pg_backend_pid()",
                                 (i,)).fetchone()[0] == i * 2
            hog.rollback()


def test_many_clients_prepared_on_a_pool_of_two(bouncer_factory):
    b = bouncer_factory(config=txn())
    errors = []

    def worker(n):
        try:
            with b.connect(autocommit=True, prepare_threshold=0) as conn:
                for i in range(30):
                    q = "select %s::int + %s::int" if i % 2 else "select %s::int - %s::int"
                    got = conn.execute(q, (n, i)).fetchone()[0]
                    assert got == (n + i if i % 2 else n - i)
                    if i % 10 == 0:
                        with conn.transaction():
                            assert conn.execute("select %s::text", (str(n),)).fetchone() == (
                                str(n),)
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []


def test_explicit_prepare_execute_close_with_the_wire_protocol(bouncer_factory):
    b = bouncer_factory(config=txn(default_pool_size=1))
    with b.connect(autocommit=True) as a, b.connect(autocommit=True) as c:
        # the same name in two clients means two different statements
        a.pgconn.prepare(b"stmt", b"select 'a:' || $1::text")
        c.pgconn.prepare(b"stmt", b"select 'c:' || $1::text")
        assert a.pgconn.exec_prepared(b"stmt", [b"1"]).get_value(0, 0) == b"a:1"
        assert c.pgconn.exec_prepared(b"stmt", [b"2"]).get_value(0, 0) == b"c:2"
        desc = a.pgconn.describe_prepared(b"stmt")
        assert desc.nfields == 1 and desc.nparams == 1
        # closing a's statement leaves c's working
        res = a.pgconn.close_prepared(b"stmt") if hasattr(a.pgconn, "close_prepared") else None
        if res is not None:
            assert res.status == psycopg.pq.ExecStatus.COMMAND_OK
            res = a.pgconn.exec_prepared(b"stmt", [b"1"])
            assert res.status == psycopg.pq.ExecStatus.FATAL_ERROR
            assert b"does not exist" in res.error_message
        assert c.pgconn.exec_prepared(b"stmt", [b"3"]).get_value(0, 0) == b"c:3"


@pytest.mark.parametrize("command", ["DEALLOCATE ALL", "DISCARD ALL"])
def test_deallocate_all_and_discard_all_clear_the_clients_statements(bouncer_factory, command):
    b = bouncer_factory(config=txn())
    with b.connect(autocommit=True) as conn:
        conn.pgconn.prepare(b"s1", b"select 1")
        assert conn.pgconn.exec_prepared(b"s1", []).get_value(0, 0) == b"1"
        conn.execute(command)
        res = conn.pgconn.exec_prepared(b"s1", [])
        assert res.status == psycopg.pq.ExecStatus.FATAL_ERROR
        assert b'prepared statement "s1" does not exist' in res.error_message
        # the name can be prepared again, with another text
        conn.pgconn.prepare(b"s1", b"select 2")
        assert conn.pgconn.exec_prepared(b"s1", []).get_value(0, 0) == b"2"


def test_lru_per_server_evicts_and_prepares_again(bouncer_factory):
    b = bouncer_factory(config=txn(default_pool_size=1, max_prepared_statements=3))
    with b.connect(autocommit=True) as conn:
        for i in range(8):
            conn.pgconn.prepare(f"q{i}".encode(), f"select {i}".encode())
        # every statement still works although the server keeps only three
        for _ in range(2):
            for i in range(8):
                assert conn.pgconn.exec_prepared(f"q{i}".encode(), []).get_value(0, 0) == \
                    str(i).encode()
        held = conn.execute("select count(*) from pg_prepared_statements").fetchone()[0]
        assert held <= 3


def test_parse_error_leaves_no_statement_behind(bouncer_factory):
    b = bouncer_factory(config=txn(default_pool_size=1))
    with b.connect(autocommit=True) as conn:
        res = conn.pgconn.prepare(b"bad", b"selec 1")
        assert res.status == psycopg.pq.ExecStatus.FATAL_ERROR
        res = conn.pgconn.exec_prepared(b"bad", [])
        assert b'prepared statement "bad" does not exist' in res.error_message
        conn.pgconn.prepare(b"bad", b"select 'fixed'")
        assert conn.pgconn.exec_prepared(b"bad", []).get_value(0, 0) == b"fixed"


@pytest.mark.timeout(180)
def test_pgbench_prepared_through_transaction_pooling(bouncer_factory, pg):
    b = bouncer_factory(config=txn(default_pool_size=5, max_client_conn=100))
    pg.sql("drop table if exists pgbench_accounts, pgbench_branches, pgbench_history,"
           " pgbench_tellers", dbname="app")
    init = run_pgbench(pg.sockdir, pg.port, "-i", "-s", "1", "-q", user="app",
                       password=None)
    assert init.returncode == 0, init.stderr
    # one thread per client: pgbench prepares with a blocking call, and a thread that blocks
    # while its other clients hold servers in open transactions would wait for itself
    res = run_pgbench(b.host, b.port, "-M", "prepared", "-c", "20", "-j", "20", "-t", "50",
                      "-n")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "number of failed transactions: 0 " in res.stdout
    assert "number of transactions actually processed: 1000/1000" in res.stdout


def test_pipeline_with_prepared_statements_keeps_answers_in_order(bouncer_factory):
    b = bouncer_factory(config=txn(default_pool_size=1))
    with b.connect(autocommit=True, prepare_threshold=0) as warm:
        # the server already holds these statements when the second client prepares them
        warm.execute("select %s::int + 1", (1,))
        warm.execute("select %s::text || 'x'", ("a",))
    with b.connect(autocommit=True, prepare_threshold=0) as conn:
        with conn.pipeline():
            curs = []
            for i in range(40):
                if i % 2:
                    curs.append(conn.execute("select %s::int + 1", (i,)))
                else:
                    curs.append(conn.execute("select %s::text || 'x'", (str(i),)))
        for i, cur in enumerate(curs):
            assert cur.fetchone()[0] == (i + 1 if i % 2 else f"{i}x")
        # an error in a pipeline skips the rest of its batch, and the next batch works
        with pytest.raises(psycopg.errors.DivisionByZero):
            with conn.pipeline():
                conn.execute("select %s::int + 1", (1,))
                conn.execute("select 1 / %s::int", (0,))
                conn.execute("select %s::text || 'x'", ("never",))
        assert conn.execute("select %s::int + 1", (41,)).fetchone() == (42,)
        assert conn.execute("select 1 / %s::int", (1,)).fetchone() == (1,)


def test_large_statements_and_parameters(bouncer_factory):
    b = bouncer_factory(config=txn(default_pool_size=1))
    padding = "x" * 20000
    sql = f"select length(%s::text) /* {padding} */".encode()
    with b.connect(autocommit=True, prepare_threshold=0) as a, \
            b.connect(autocommit=True, prepare_threshold=0) as c:
        big = "y" * 200000
        for _ in range(3):
            assert a.execute(sql, (big,)).fetchone() == (200000,)
            assert c.execute(sql, ("z",)).fetchone() == (1,)


@pytest.mark.parametrize("pipeline", [False, True])
def test_deallocate_one_name(bouncer_factory, pipeline):
    b = bouncer_factory(config=txn(default_pool_size=1))
    with b.connect(autocommit=True) as a, b.connect(autocommit=True) as c:
        a.pgconn.prepare(b"s1", b"select 'same text'")
        a.pgconn.prepare(b"MixedCase", b"select 'mixed'")
        c.pgconn.prepare(b"other", b"select 'same text'")
        if pipeline:
            with a.pipeline():
                a.execute("DEALLOCATE s1")
                a.execute('deallocate prepare "MixedCase";')
        else:
            a.execute("DEALLOCATE s1")
            a.execute('deallocate prepare "MixedCase";')
        for name in (b"s1", b"MixedCase"):
            res = a.pgconn.exec_prepared(name, [])
            assert res.status == psycopg.pq.ExecStatus.FATAL_ERROR
            assert b"does not exist" in res.error_message
        # the other client's statement with the same text is unharmed
        assert c.pgconn.exec_prepared(b"other", []).get_value(0, 0) == b"same text"
        # unknown names fail as PostgreSQL says
        with pytest.raises(psycopg.errors.InvalidSqlStatementName):
            a.execute("DEALLOCATE nosuch")


def test_many_names_per_client(bouncer_factory):
    b = bouncer_factory(config=txn(default_pool_size=2, max_prepared_statements=50))
    with b.connect(autocommit=True) as conn:
        for i in range(300):
            res = conn.pgconn.prepare(f"n{i}".encode(), f"select {i}".encode())
            assert res.status == psycopg.pq.ExecStatus.COMMAND_OK
        for i in reversed(range(300)):
            assert conn.pgconn.exec_prepared(f"n{i}".encode(), []).get_value(0, 0) == \
                str(i).encode()


@pytest.mark.parametrize("command", ["DEALLOCATE ALL", "DISCARD ALL"])
def test_deallocate_all_in_a_pipeline(bouncer_factory, command):
    # a pipeline sends it with the extended protocol: the server forgets everything it held
    b = bouncer_factory(config=txn(default_pool_size=1))
    with b.connect(autocommit=True) as a, b.connect(autocommit=True) as c:
        a.pgconn.prepare(b"mine", b"select 'shared text'")
        c.pgconn.prepare(b"theirs", b"select 'shared text'")
        with a.pipeline():
            a.execute(command)
        res = a.pgconn.exec_prepared(b"mine", [])
        assert b'prepared statement "mine" does not exist' in res.error_message
        # the other client's name still works: prepared again on the server that forgot it
        assert c.pgconn.exec_prepared(b"theirs", []).get_value(0, 0) == b"shared text"


@pytest.mark.parametrize("command", ["DEALLOCATE ALL", "DISCARD ALL"])
def test_deallocate_all_of_one_client_spares_the_others(bouncer_factory, command):
    # psycopg's own statement names (_pg3_0, ...) in both clients, one shared server
    b = bouncer_factory(config=txn(default_pool_size=1))
    with b.connect(autocommit=True) as one, b.connect(autocommit=True) as two:
        assert one.execute("select 'one'", prepare=True).fetchone() == ("one",)
        assert two.execute("select %s::text || 'two'", ("2",), prepare=True).fetchone() == (
            "2two",)
        assert one.execute(command).statusmessage == command
        # the other client's statements work on, under the names it gave them
        for i in range(3):
            assert two.execute("select %s::text || 'two'", (str(i),),
                               prepare=True).fetchone() == (f"{i}two",)
        # a name the client forgot fails as PostgreSQL says
        res = one.pgconn.exec_prepared(b"_pg3_0", [])
        assert res.status == psycopg.pq.ExecStatus.FATAL_ERROR
        assert res.error_field(psycopg.pq.DiagnosticField.SQLSTATE) == b"26000"


@pytest.mark.parametrize("command", ["DEALLOCATE ALL", "DISCARD ALL"])
def test_deallocate_all_leaves_the_shared_server_alone(bouncer_factory, command):
    b = bouncer_factory(config=txn(default_pool_size=1))
    with b.connect(autocommit=True) as one, b.connect(autocommit=True) as two:
        one.pgconn.prepare(b"mine", b"select 'one'")
        two.pgconn.prepare(b"theirs", b"select 'two'")
        two.execute("set application_name = 'kept'")
        held = {r[0] for r in two.execute("select name from pg_prepared_statements")}
        assert len(held) == 2  # both statements, under the pooler's names, on the one server
        # answered as PostgreSQL would ...
        cur = one.execute(command)
        assert cur.statusmessage == command
        # ... but the server, shared with the other client, keeps its statements and session
        assert {r[0] for r in two.execute("select name from pg_prepared_statements")} == held
        assert two.execute("show application_name").fetchone() == ("kept",)
        res = one.pgconn.exec_prepared(b"mine", [])
        assert res.error_field(psycopg.pq.DiagnosticField.SQLSTATE) == b"26000"
        assert two.pgconn.exec_prepared(b"theirs", []).get_value(0, 0) == b"two"


def test_discard_all_in_a_transaction_fails_as_postgresql_says(bouncer_factory):
    b = bouncer_factory(config=txn(default_pool_size=1))
    with b.connect() as conn:
        conn.pgconn.prepare(b"s1", b"select 1")
        conn.execute("select 1")  # psycopg opened a transaction block
        with pytest.raises(psycopg.errors.ActiveSqlTransaction) as ei:
            conn.execute("DISCARD ALL")
        assert "DISCARD ALL cannot run inside a transaction block" in str(ei.value)


def test_discard_all_resets_the_clients_settings_as_postgresql_does(bouncer_factory, pg):
    b = bouncer_factory(config=txn(default_pool_size=1))

    def after_discard(conn):
        conn.execute("set datestyle = 'German'")
        conn.execute("set application_name = 'before discard'")
        assert conn.execute("DISCARD ALL").statusmessage == "DISCARD ALL"
        return (conn.execute("show datestyle").fetchone()[0],
                conn.execute("show application_name").fetchone()[0])

    with pg.connect(dbname="app", user="app") as direct:
        expected = after_discard(direct)
    with b.connect(autocommit=True) as conn:
        assert after_discard(conn) == expected
