"""Limits: how many backends a pool opens, when the reserve helps out, and which clients are
refused, with pgbouncer's messages."""

import threading
import time

import psycopg
import pytest

from conftest import IS_PGBOUNCER


def marker_count(pg, marker):
    return pg.sql("select count(*) from pg_stat_activity where state = 'active'"
                  f" and query like '%{marker}%' and pid <> pg_backend_pid()")[0][0]


def run_concurrently(fn, n):
    errors, threads = [], []

    def wrap(i):
        try:
            fn(i)
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    for i in range(n):
        t = threading.Thread(target=wrap, args=(i,), daemon=True)
        t.start()
        threads.append(t)
    return threads, errors


def peak_concurrency(pg, marker, threads, timeout=30):
    peak = 0
    deadline = time.monotonic() + timeout
    while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
        peak = max(peak, marker_count(pg, marker))
        time.sleep(0.05)
    for t in threads:
        t.join(1)
    return peak


def sleeper(b, marker, seconds=0.6, **kw):
    def fn(_):
        with b.connect(autocommit=True, **kw) as conn:
            conn.execute(f"select pg_sleep({seconds}) /* {marker} */")
    return fn


def make_db(pg, name):
    if not pg.sql(f"select 1 from pg_database where datname = '{name}'"):
        pg.sql(f"create database {name} owner app")


@pytest.mark.parametrize("level", ["default", "database", "user"])
def test_pool_size_caps_the_backends(bouncer_factory, pg, level):
    if level == "user" and IS_PGBOUNCER:
        pytest.skip("[users] pool_size is newer than pgbouncer 1.18")
    server = f"host=127.0.0.1 port={pg.port}"
    cfg = {"pgbouncer": {"pool_mode": "transaction", "default_pool_size": 2}}
    expected = 2
    if level in ("database", "user"):
        cfg["databases"] = {"app": f"{server} dbname=app pool_size=1"}
        expected = 1
    if level == "user":
        cfg["users"] = {"app": "pool_size=3"}
        expected = 3
    b = bouncer_factory(config=cfg)
    marker = f"sb_pool_size_{level}"
    threads, errors = run_concurrently(sleeper(b, marker), 6)
    peak = peak_concurrency(pg, marker, threads)
    assert errors == []
    assert peak == expected


@pytest.mark.skipif(IS_PGBOUNCER, reason="pgbouncer 1.18 warms a pool only once it was used")
def test_min_pool_size_warms_a_forced_user_pool(bouncer_factory, pg):
    make_db(pg, "sbwarm")
    b = bouncer_factory(config={
        "databases": {"sbwarm": f"host=127.0.0.1 port={pg.port} dbname=sbwarm user=app"
                                " password=secret min_pool_size=3"},
    })
    deadline = time.monotonic() + 10
    count = 0
    while time.monotonic() < deadline:
        count = pg.sql("select count(*) from pg_stat_activity where datname = 'sbwarm'")[0][0]
        if count >= 3:
            break
        time.sleep(0.1)
    assert count == 3
    with b.connect(dbname="sbwarm", autocommit=True) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_min_pool_size_grows_a_pool_once_used(bouncer_factory, pg):
    make_db(pg, "sbwarm2")
    b = bouncer_factory(config={
        "databases": {"sbwarm2": f"host=127.0.0.1 port={pg.port} dbname=sbwarm2"},
        "pgbouncer": {"min_pool_size": 2, "pool_mode": "transaction"},
    })
    with b.connect(dbname="sbwarm2", autocommit=True) as conn:
        conn.execute("select 1")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            n = pg.sql("select count(*) from pg_stat_activity where datname = 'sbwarm2'")[0][0]
            if n >= 2:
                break
            time.sleep(0.1)
        assert n == 2


def test_reserve_pool_serves_a_client_that_waited(bouncer_factory, pg):
    b = bouncer_factory(config={"pgbouncer": {
        "pool_mode": "transaction", "default_pool_size": 1, "reserve_pool_size": 1,
        "reserve_pool_timeout": 0.5}})
    with b.connect() as hog:
        hog.execute("select 1")  # holds the only regular server in a transaction
        start = time.monotonic()
        with b.connect(autocommit=True) as conn:
            assert conn.execute("select 'from the reserve'").fetchone() == ("from the reserve",)
        waited = time.monotonic() - start
        assert waited >= 0.4
        hog.rollback()


def test_no_reserve_without_reserve_pool_size(bouncer_factory):
    b = bouncer_factory(config={"pgbouncer": {
        "pool_mode": "transaction", "default_pool_size": 1, "query_wait_timeout": 2,
        "reserve_pool_timeout": 0.5}})
    with b.connect() as hog:
        hog.execute("select 1")
        with pytest.raises(psycopg.OperationalError, match="query_wait_timeout"):
            with b.connect(autocommit=True) as conn:
                conn.execute("select 1")
        hog.rollback()


def test_max_client_conn_refuses_with_pgbouncers_message(bouncer_factory):
    b = bouncer_factory(config={"pgbouncer": {"max_client_conn": 2}})
    with b.connect() as a, b.connect() as c:
        with pytest.raises(psycopg.OperationalError,
                           match=r"no more connections allowed \(max_client_conn\)"):
            b.connect()
        assert a.execute("select 1").fetchone() == (1,)
        assert c.execute("select 2").fetchone() == (2,)
    # a slot is free again
    with b.connect() as d:
        assert d.execute("select 3").fetchone() == (3,)


def test_max_db_connections_spans_the_users_of_a_database(bouncer_factory, pg):
    b = bouncer_factory(config={
        "databases": {"app": f"host=127.0.0.1 port={pg.port} dbname=app max_db_connections=1"},
        "pgbouncer": {"pool_mode": "transaction", "default_pool_size": 5},
    })
    marker = "sb_max_db"
    threads, errors = run_concurrently(
        lambda i: sleeper(b, marker, **({} if i % 2 else
                                        {"user": "scramuser", "password": "scrampass"}))(i),
        4)
    peak = peak_concurrency(pg, marker, threads)
    assert errors == []
    assert peak == 1


def test_max_user_connections_spans_the_databases_of_a_user(bouncer_factory, pg):
    b = bouncer_factory(config={
        "users": {"app": "max_user_connections=1"},
        "pgbouncer": {"pool_mode": "transaction", "default_pool_size": 5},
    })
    marker = "sb_max_user"
    threads, errors = run_concurrently(
        lambda i: sleeper(b, marker, dbname="crm" if i % 2 else "app")(i), 4)
    peak = peak_concurrency(pg, marker, threads)
    assert errors == []
    assert peak == 1


@pytest.mark.skipif(IS_PGBOUNCER, reason="max_db_client_connections is newer than 1.18")
def test_max_db_client_connections(bouncer_factory, pg):
    b = bouncer_factory(config={
        "databases": {"app": f"host=127.0.0.1 port={pg.port} dbname=app"
                             " max_db_client_connections=2",
                      "crm": f"host=127.0.0.1 port={pg.port} dbname=crm"},
    })
    with b.connect() as a, b.connect(user="scramuser", password="scrampass") as c:
        with pytest.raises(psycopg.OperationalError,
                           match=r"no more connections allowed \(max_db_client_connections\)"):
            b.connect()
        # another database is not limited
        with b.connect(dbname="crm") as d:
            assert d.execute("select 1").fetchone() == (1,)
        a.execute("select 1")
        c.execute("select 1")


@pytest.mark.skipif(IS_PGBOUNCER, reason="max_user_client_connections is newer than 1.18")
def test_max_user_client_connections(bouncer_factory):
    b = bouncer_factory(config={"users": {"app": "max_user_client_connections=1"}})
    with b.connect() as a:
        with pytest.raises(psycopg.OperationalError,
                           match=r"no more connections allowed \(max_user_client_connections\)"):
            b.connect(dbname="crm")
        with b.connect(user="scramuser", password="scrampass") as other:
            assert other.execute("select 1").fetchone() == (1,)
        assert a.execute("select 1").fetchone() == (1,)


@pytest.mark.skipif(IS_PGBOUNCER, reason="pgbouncer 1.18 warms a pool only once it was used")
def test_min_pool_size_of_a_database_added_by_reload(bouncer_factory, pg):
    import os
    import signal

    make_db(pg, "sbwarm3")
    b = bouncer_factory()
    with b.connect(autocommit=True) as conn:  # some pool exists already
        conn.execute("select 1")
    with open(b.ini) as f:
        text = f.read()
    text = text.replace("[databases]\n", "[databases]\nsbwarm3 = host=127.0.0.1 port=%d "
                        "dbname=sbwarm3 user=app password=secret min_pool_size=2\n" % pg.port, 1)
    with open(b.ini, "w") as f:
        f.write(text)
    os.kill(b.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    count = 0
    while time.monotonic() < deadline:
        count = pg.sql("select count(*) from pg_stat_activity where datname = 'sbwarm3'")[0][0]
        if count >= 2:
            break
        time.sleep(0.1)
    assert count == 2
