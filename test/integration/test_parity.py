"""Pool behaviour pgbouncer users rely on: which pool_size applies (forced user, [users],
[databases], [pgbouncer], SET default_pool_size on existing pools), min_pool_size kept at all
times, auto-databases in SHOW DATABASES, the pools of a database a RELOAD removed, and SHOW USERS
listing the auth_file's users. Run against Debian's pgbouncer too; what 1.18 lacks is skipped.
"""

import os
import re
import signal
import threading
import time

import psycopg
import pytest

from conftest import IS_PGBOUNCER

needs_125 = pytest.mark.skipif(IS_PGBOUNCER, reason="pgbouncer 1.25 behaviour; Debian has 1.18")


def admin(b):
    return b.connect(dbname="pgbouncer", user="postgres", password="postgres", autocommit=True,
                     prepare_threshold=None)


def rows(a, sql):
    cur = a.execute(sql)
    names = [d.name for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def wait_for(fn, timeout=15.0):
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(0.1)


def backends(pg, db, user=None):
    q = f"select count(*) from pg_stat_activity where datname = '{db}'"
    if user:
        q += f" and usename = '{user}'"
    return pg.sql(q)[0][0]


def make_db(pg, name):
    if not pg.sql(f"select 1 from pg_database where datname = '{name}'"):
        pg.sql(f"CREATE DATABASE {name} OWNER app")


PEAK_LOCK = 715517  # the advisory lock that peak_servers' clients wait on


def peak_servers(b, pg, db, clients, user="app", password="secret", server_user=None):
    """Opens `clients` clients that each hold a transaction at once; returns how many backends
    of db (logged in as server_user, by default the client's user) the pooler opened for them
    (the others wait). The transactions wait on an advisory lock that is let go once the
    backends are counted, so that the clients queued behind them finish at once."""
    conns = []
    results = []
    barrier = threading.Barrier(clients + 1)

    def one():
        try:
            with b.connect(dbname=db, user=user, password=password) as c:
                barrier.wait(20)
                c.execute("select pg_advisory_xact_lock_shared(%s)", (PEAK_LOCK,))
                results.append(True)
        except Exception as e:  # noqa: BLE001
            results.append(repr(e))
            barrier.abort()

    with pg.connect(dbname=db) as locker:
        locker.execute("select pg_advisory_lock(%s)", (PEAK_LOCK,))
        for _ in range(clients):
            t = threading.Thread(target=one)
            t.start()
            conns.append(t)
        barrier.wait(20)
        time.sleep(0.8)  # what the pooler opens for them meanwhile is what it ever opens
        n = backends(pg, db, server_user or user)
        locker.execute("select pg_advisory_unlock(%s)", (PEAK_LOCK,))
    for t in conns:
        t.join(30)
    assert results == [True] * clients
    return n


# ---------------------------------------------------------------- pool_size precedence


@needs_125
@pytest.mark.timeout(120)
def test_pool_size_of_the_connecting_user_does_not_apply_to_a_forced_user_pool(bouncer_factory,
                                                                               pg):
    make_db(pg, "sbforced")
    b = bouncer_factory(config={
        "databases": {"sbforced": f"host=127.0.0.1 port={pg.port} dbname=sbforced user=app "
                                  "password=secret"},
        "users": {"scramuser": "pool_size=1"},
        "pgbouncer": {"pool_mode": "transaction", "default_pool_size": 3},
    })
    # scramuser's pool_size=1 is about scramuser's own pools; the forced pool belongs to app
    assert peak_servers(b, pg, "sbforced", 3, user="scramuser", password="scrampass",
                        server_user="app") == 3


@needs_125
@pytest.mark.timeout(120)
def test_pool_size_of_the_forced_user_applies(bouncer_factory, pg):
    make_db(pg, "sbforced2")
    b = bouncer_factory(config={
        "databases": {"sbforced2": f"host=127.0.0.1 port={pg.port} dbname=sbforced2 user=app "
                                   "password=secret"},
        "users": {"app": "pool_size=2"},
        "pgbouncer": {"pool_mode": "transaction", "default_pool_size": 5},
    })
    assert peak_servers(b, pg, "sbforced2", 4, user="scramuser", password="scrampass",
                        server_user="app") == 2
    # one pool for the database, whoever logs in: app's own clients share it
    with admin(b) as a:
        pools = [(r["database"], r["user"]) for r in rows(a, "SHOW POOLS")
                 if r["database"] == "sbforced2"]
        assert pools == [("sbforced2", "app")]


@needs_125
@pytest.mark.timeout(120)
def test_user_pool_size_beats_database_beats_global(bouncer_factory, pg):
    make_db(pg, "sbsize")
    b = bouncer_factory(config={
        "databases": {"sbsize": f"host=127.0.0.1 port={pg.port} dbname=sbsize pool_size=2"},
        "users": {"scramuser": "pool_size=1"},
        "pgbouncer": {"pool_mode": "transaction", "default_pool_size": 4},
    })
    assert peak_servers(b, pg, "sbsize", 3) == 2  # app: the database's pool_size
    assert peak_servers(b, pg, "sbsize", 3, user="scramuser", password="scrampass") == 1
    with admin(b) as a:
        db = {r["name"]: r for r in rows(a, "SHOW DATABASES")}["sbsize"]
        assert db["pool_size"] == 2


@pytest.mark.timeout(120)
def test_set_default_pool_size_applies_to_existing_pools(bouncer_factory, pg):
    make_db(pg, "sbsetsize")
    b = bouncer_factory(config={
        "databases": {"sbsetsize": f"host=127.0.0.1 port={pg.port} dbname=sbsetsize"},
        "pgbouncer": {"pool_mode": "transaction", "default_pool_size": 1},
    })
    assert peak_servers(b, pg, "sbsetsize", 3) == 1  # the pool exists now, with size 1
    with admin(b) as a:
        assert a.execute("SET default_pool_size = 3").statusmessage.startswith("SET")
        db = {r["name"]: r for r in rows(a, "SHOW DATABASES")}["sbsetsize"]
        assert db["pool_size"] in (-1, 3)  # pgbouncer shows -1: "the default"
    assert peak_servers(b, pg, "sbsetsize", 3) == 3


# ---------------------------------------------------------------- min_pool_size


@needs_125
@pytest.mark.timeout(120)
def test_min_pool_size_is_restored_after_servers_are_lost(bouncer_factory, pg):
    make_db(pg, "sbminkeep")
    b = bouncer_factory(config={
        "databases": {"sbminkeep": f"host=127.0.0.1 port={pg.port} dbname=sbminkeep user=app "
                                   "password=secret min_pool_size=3"},
    })
    assert wait_for(lambda: backends(pg, "sbminkeep") == 3)
    # the database loses them (a restart of a replica, an admin's pg_terminate_backend)
    pg.sql("select pg_terminate_backend(pid) from pg_stat_activity where datname = 'sbminkeep'")
    assert wait_for(lambda: backends(pg, "sbminkeep") == 3), "min_pool_size not restored"
    with admin(b) as a:
        a.execute("RECONNECT sbminkeep")
    # servers that RECONNECT closes are replaced too
    assert wait_for(lambda: backends(pg, "sbminkeep") == 3)


# ---------------------------------------------------------------- auto-database


@pytest.mark.timeout(120)
def test_auto_database_appears_in_show_databases_and_goes(bouncer_factory, pg):
    make_db(pg, "sbauto")
    b = bouncer_factory(config={
        "databases": [f"* = host=127.0.0.1 port={pg.port}"],
        "pgbouncer": {"autodb_idle_timeout": 1, "server_idle_timeout": 1},
    })
    with admin(b) as a:
        assert "sbauto" not in {r["name"] for r in rows(a, "SHOW DATABASES")}
        with b.connect(dbname="sbauto", autocommit=True) as c:
            c.execute("select 1")
            dbs = {r["name"]: r for r in rows(a, "SHOW DATABASES")}
            assert "sbauto" in dbs
            assert dbs["sbauto"]["database"] == "sbauto"
            assert dbs["sbauto"]["port"] == pg.port
            assert {(r["database"], r["user"]) for r in rows(a, "SHOW POOLS")} >= {
                ("sbauto", "app")}
        # unused for autodb_idle_timeout: the database and its pools go
        assert wait_for(lambda: "sbauto" not in {r["name"] for r in rows(a, "SHOW DATABASES")},
                        timeout=30)
        assert wait_for(lambda: ("sbauto", "app") not in {(r["database"], r["user"])
                                                         for r in rows(a, "SHOW POOLS")})


# ---------------------------------------------------------------- RELOAD, SHOW USERS


@pytest.mark.timeout(60)
def test_pools_of_a_database_removed_by_reload_are_freed(bouncer_factory, pg):
    b = bouncer_factory()
    with b.connect(dbname="crm", autocommit=True) as c:
        c.execute("select 1")
    with admin(b) as a:
        before = dict(a.execute("SHOW LISTS").fetchall())
        assert ("crm", "app") in {(r["database"], r["user"]) for r in rows(a, "SHOW POOLS")}
        with open(b.ini) as f:
            text = f.read()
        with open(b.ini, "w") as f:
            f.write(re.sub(r"(?m)^crm = .*\n", "", text))
        a.execute("RELOAD")
        assert wait_for(lambda: ("crm", "app") not in {(r["database"], r["user"])
                                                      for r in rows(a, "SHOW POOLS")})
        after = dict(a.execute("SHOW LISTS").fetchall())
        assert after["pools"] == before["pools"] - 1
        assert after["databases"] == before["databases"] - 1
        assert backends(pg, "crm") == 0
    # the name is refused, the others served
    with pytest.raises(psycopg.OperationalError):
        b.connect(dbname="crm")
    with b.connect() as c:
        assert c.execute("select 1").fetchone() == (1,)


@pytest.mark.timeout(60)
def test_show_users_lists_the_auth_file_users(bouncer_factory):
    b = bouncer_factory(users={"app": "secret", "postgres": "postgres", "scramuser": "scrampass",
                               "nobody_connected": "pw"})
    with admin(b) as a:
        names = {r["name"] for r in rows(a, "SHOW USERS")}
        assert {"app", "postgres", "scramuser", "nobody_connected"} <= names
        # users added to the auth file appear at the next RELOAD
        with open(b.userlist, "a") as f:
            f.write('"newcomer" "pw"\n')
        a.execute("RELOAD")
        assert "newcomer" in {r["name"] for r in rows(a, "SHOW USERS")}
