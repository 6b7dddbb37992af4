"""Server health: a backend that dies takes only its own client with it (which gets an error,
not a hang), the pool refills, and a PostgreSQL restart under load is survived."""

import os
import subprocess
import threading
import time

import psycopg
import pytest

from conftest import PG_BIN, run_pgbench


def terminate(pg, pid):
    pg.sql(f"select pg_terminate_backend({pid})")


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_backend_killed_under_an_idle_client(bouncer_factory, pg, mode):
    b = bouncer_factory(config={"pgbouncer": {"pool_mode": mode, "default_pool_size": 2}})
    with b.connect() as conn:
        pid = conn.execute("select pg_backend_pid()").fetchone()[0]  # in a transaction
        terminate(pg, pid)
        # an error, not a hang (which the test's own timeout would end)
        with pytest.raises(psycopg.OperationalError):
            conn.execute("select 1")
    # the pool opens a new backend for the next client
    with b.connect(autocommit=True) as conn:
        assert conn.execute("select pg_backend_pid()").fetchone()[0] != pid


def test_backend_killed_mid_query_gives_an_error_not_a_hang(bouncer_factory, pg):
    b = bouncer_factory(config={"pgbouncer": {"pool_mode": "transaction"}})
    with b.connect(autocommit=True) as conn:
        pid = conn.execute("select pg_backend_pid()").fetchone()[0]

        def terminate_when_running():
            # once PostgreSQL shows the statement running, so that it dies mid-query
            deadline = time.monotonic() + 50
            while time.monotonic() < deadline:
                if pg.sql(f"select 1 from pg_stat_activity where pid = {pid}"
                          " and state = 'active' and query like '%pg_sleep(600)%'"):
                    terminate(pg, pid)
                    return
                time.sleep(0.05)

        t = threading.Thread(target=terminate_when_running)
        t.start()
        # ten minutes of sleep: only the error ends it within the test's time
        with pytest.raises(psycopg.OperationalError):
            conn.execute("select pg_sleep(600)")
        t.join()


def test_idle_servers_that_died_are_replaced(bouncer_factory, pg):
    b = bouncer_factory(config={"pgbouncer": {"pool_mode": "transaction",
                                              "default_pool_size": 2}})
    with b.connect() as a, b.connect() as c:
        pids = [a.execute("select pg_backend_pid()").fetchone()[0],
                c.execute("select pg_backend_pid()").fetchone()[0]]
        a.commit()
        c.commit()
    for pid in pids:
        terminate(pg, pid)
    time.sleep(0.3)
    # idle, unlinked servers died: nobody gets an error, new backends are opened
    for _ in range(3):
        with b.connect(autocommit=True) as conn:
            assert conn.execute("select pg_backend_pid()").fetchone()[0] not in pids


def test_server_error_in_a_transaction_keeps_the_client(bouncer_factory):
    b = bouncer_factory(config={"pgbouncer": {"pool_mode": "transaction",
                                              "default_pool_size": 1}})
    with b.connect() as conn:
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("select 1/0")
        conn.rollback()
        assert conn.execute("select 'fine'").fetchone() == ("fine",)
    with b.connect(autocommit=True) as other:
        assert other.execute("select 1").fetchone() == (1,)


def restart_postgres(pg):
    subprocess.run([os.path.join(PG_BIN, "pg_ctl"), "-D", pg.datadir, "-l", pg.logfile,
                    "-m", "fast", "-w", "-t", "60", "restart"], check=True, capture_output=True)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_postgres_restart_under_pgbench_load(bouncer_factory, pg, mode):
    b = bouncer_factory(config={"pgbouncer": {"pool_mode": mode, "default_pool_size": 10,
                                              "server_login_retry": 1}})
    init = run_pgbench(pg.sockdir, pg.port, "-i", "-s", "1", "-q", user="app", password=None)
    assert init.returncode == 0, init.stderr
    fds_before = len(os.listdir(f"/proc/{b.pid}/fd"))
    load = subprocess.Popen(
        [os.path.join(PG_BIN, "pgbench"), "-h", b.host, "-p", str(b.port), "-U", "app",
         "-c", "8", "-j", "8", "-T", "6", "-n", "app"],
        env={**os.environ, "PGPASSWORD": "secret", "PGCONNECT_TIMEOUT": "10"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2)
    restart_postgres(pg)
    out, err = load.communicate(timeout=120)
    # clients of the old backends got errors (pgbench aborts them); nobody hung
    assert load.returncode in (0, 2), out + err

    # once PostgreSQL is back, new work succeeds in full
    deadline = time.monotonic() + 30
    while True:
        try:
            with b.connect(autocommit=True) as conn:
                assert conn.execute("select 1").fetchone() == (1,)
            break
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    res = run_pgbench(b.host, b.port, "-c", "8", "-j", "4", "-t", "30", "-n")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "number of transactions actually processed: 240/240" in res.stdout
    # nothing left behind: at most the pool's servers are still open, in the pooler and in
    # PostgreSQL
    assert len(os.listdir(f"/proc/{b.pid}/fd")) <= fds_before + 10
    backends = pg.sql("select count(*) from pg_stat_activity where datname = 'app'"
                      " and usename = 'app'")[0][0]
    assert backends <= 10
