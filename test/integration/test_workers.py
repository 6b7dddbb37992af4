"""workers = N: N event loops (threads) in one process, sharing the listening port, with
max_client_conn and the pools' server limits counted across them all."""

import os
import signal
import subprocess
import threading
import time

import psycopg
import pytest

import pgwire
from conftest import IS_PGBOUNCER

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="pgbouncer has one event loop")


def thread_names(pid):
    names = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/comm") as f:
            names.append(f.read().strip())
    return sorted(names)


def client_socket_inodes(port):
    """Inodes of the TCP sockets whose local end is 127.0.0.1:port (accepted connections)."""
    want = f"0100007F:{port:04X}"
    inodes = set()
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            cols = line.split()
            if cols[1] == want and cols[3] == "01":  # ESTABLISHED
                inodes.add(cols[9])
    return inodes


def watched_client_sockets(pid, port):
    """For each epoll instance of the process (one per event loop), the accepted client sockets
    it watches."""
    clients = client_socket_inodes(port)
    fd_inode = {}
    epolls = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            fd_inode[fd] = target[8:-1]
        elif target == "anon_inode:[eventpoll]":
            epolls.append(fd)
    watched = []
    for ep in epolls:
        with open(f"/proc/{pid}/fdinfo/{ep}") as f:
            tfds = [line.split()[1] for line in f if line.startswith("tfd:")]
        watched.append({fd_inode[t] for t in tfds if fd_inode.get(t) in clients})
    return watched


def test_two_workers_are_two_threads_that_both_serve_clients(bouncer_factory):
    b = bouncer_factory(config={"pgbouncer": {"workers": 2, "pool_mode": "transaction"}})
    assert thread_names(b.pid) == ["sb-worker-1", "syncbouncer"]
    conns = [b.connect(autocommit=True) for _ in range(40)]
    try:
        for i, c in enumerate(conns):
            assert c.execute("select %s::int + 1", (i,)).fetchone()[0] == i + 1
        watched = watched_client_sockets(b.pid, b.port)
        # two loops, each watching the connections it accepted; together, all of them
        busy = [w for w in watched if w]
        assert len(busy) == 2, [len(w) for w in watched]
        assert len(set().union(*busy)) == 40
        assert not (busy[0] & busy[1])
    finally:
        for c in conns:
            c.close()


def test_max_client_conn_counts_the_clients_of_every_worker(bouncer_factory):
    b = bouncer_factory(config={"pgbouncer": {"workers": 2, "max_client_conn": 10}})
    assert len(thread_names(b.pid)) == 2
    conns = [b.connect(autocommit=True) for _ in range(10)]
    try:
        # whichever worker takes them, the 11th and later clients are refused
        for _ in range(6):
            with pytest.raises(psycopg.OperationalError,
                               match=r"no more connections allowed \(max_client_conn\)"):
                b.connect()
        conns.pop().close()
        # a place is free again: the count went down on the worker that had it
        deadline = time.monotonic() + 10
        while True:
            try:
                conns.append(b.connect(autocommit=True))
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        assert conns[-1].execute("select 1").fetchone()[0] == 1
    finally:
        for c in conns:
            c.close()


def backends(pg, user="app", dbname="app"):
    """Backends of user/dbname in a transaction (a closed server's backend may linger a moment
    before it exits: it is idle)."""
    return pg.sql("select count(*) from pg_stat_activity where state <> 'idle'"
                  f" and usename = '{user}' and datname = '{dbname}'")[0][0]


def hold_transactions(b, pg, n, seconds):
    """n clients at once, each holding a transaction for a while (each needs a server of its
    own). Returns the most backends seen at once and the clients' errors."""
    errors = []

    def client():
        try:
            with b.connect() as conn:
                conn.execute("begin")
                conn.execute(f"select pg_sleep({seconds})")
                conn.execute("commit")
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    peak = 0
    deadline = time.monotonic() + 45
    while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
        peak = max(peak, backends(pg))
        time.sleep(0.02)
    alive = [t for t in threads if t.is_alive()]
    assert not alive, f"{len(alive)} clients never got a server"
    return peak, errors


def test_pool_size_is_one_limit_for_every_worker(bouncer_factory, pg):
    b = bouncer_factory(config={"pgbouncer": {"workers": 2, "default_pool_size": 3,
                                              "server_idle_timeout": 600}})
    peak, errors = hold_transactions(b, pg, 12, 0.3)
    assert errors == []
    # three backends in all, never more, though both workers had clients waiting; the
    # waiting clients of a worker without a server were served by servers the other one
    # closed for them once its own clients were done
    assert peak == 3


def test_a_worker_without_a_server_gets_one_the_other_closes(bouncer_factory, pg):
    b = bouncer_factory(config={"pgbouncer": {"workers": 2, "default_pool_size": 1,
                                              "server_idle_timeout": 600}})
    holder = b.connect()
    holder.execute("begin")
    holder.execute("select 1")
    # the pool's one server is the holder's, on one worker; clients of both workers queue
    result = {}
    t = threading.Thread(target=lambda: result.update(
        zip(("peak", "errors"), hold_transactions(b, pg, 8, 0.1))), daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while pg.sql("select count(*) from pg_stat_activity where usename = 'app'"
                 " and datname = 'app' and state = 'idle in transaction'")[0][0] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.2)  # let the eight log in and queue
    holder.execute("commit")
    holder.close()
    # the holder's worker serves its own waiting clients, then closes its idle server for the
    # other worker's, which would otherwise wait for server_idle_timeout
    t.join(50)
    assert not t.is_alive()
    assert result == {"peak": 1, "errors": []}


def test_clients_log_in_on_a_worker_whose_pool_is_full_elsewhere(bouncer_factory):
    b = bouncer_factory(config={"pgbouncer": {"workers": 2, "default_pool_size": 1,
                                              "pool_mode": "transaction"}})
    holder = b.connect()
    holder.execute("begin")
    holder.execute("select 1")
    # the pool's one server is held on one worker: the other worker's pool has never had a
    # server, yet its clients log in (with the holder's worker's welcome) and wait only when
    # they send a query, as with one worker
    conns = [b.connect(autocommit=True, connect_timeout=5) for _ in range(8)]
    assert holder.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    holder.execute("commit")
    holder.close()
    for c in conns:
        assert c.execute("show datestyle").fetchone()[0] == "ISO, MDY"
        c.close()


def two_pools_under(pg, limit, value):
    """A config whose two pools share one limit (a database's: two users of it; a user's: two
    databases), and the log-in of each pool."""
    if limit.startswith("max_db_"):
        config = {"databases": {"app": f"host=127.0.0.1 port={pg.port} dbname=app"
                                       f" {limit}={value}"}}
        logins = [{"user": "app", "password": "secret"},
                  {"user": "scramuser", "password": "scrampass"}]
    else:
        config = {"users": {"app": f"{limit}={value}"}}
        logins = [{"dbname": "app"}, {"dbname": "crm"}]
    return config, logins


@pytest.mark.parametrize("limit", ["max_db_connections", "max_user_connections"])
def test_db_and_user_limits_span_the_pools_of_every_worker(bouncer_factory, pg, limit):
    config, logins = two_pools_under(pg, limit, 1)
    config["pgbouncer"] = {"workers": 2, "pool_mode": "transaction", "default_pool_size": 5}
    b = bouncer_factory(config=config)
    errors, peak = [], 0

    def client(i):
        try:
            with b.connect(autocommit=True, **logins[i % 2]) as conn:
                conn.execute("select pg_sleep(0.1) /* sb_span */")
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
        peak = max(peak, pg.sql("select count(*) from pg_stat_activity where state = 'active'"
                                " and query like '%sb_span%' and pid <> pg_backend_pid()")[0][0])
        time.sleep(0.01)
    # one server at a time in all, whichever worker and pool needs it: a pool that could not
    # get one left the count as it found it
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert peak == 1


@pytest.mark.parametrize("limit", ["max_db_client_connections", "max_user_client_connections"])
def test_client_limits_count_the_clients_of_every_worker(bouncer_factory, pg, limit):
    config, logins = two_pools_under(pg, limit, 3)
    config["pgbouncer"] = {"workers": 2}
    b = bouncer_factory(config=config)
    conns, refusals = [], []
    try:
        # the kernel spreads the log-ins over both workers; three get in, whichever takes them
        for i in range(10):
            try:
                conns.append(b.connect(autocommit=True, **logins[i % 2]))
            except psycopg.OperationalError as e:
                refusals.append(str(e))
        assert len(conns) == 3, refusals
        assert len(refusals) == 7
        assert all(f"no more connections allowed ({limit})" in r for r in refusals), refusals
        for c in conns:
            assert c.execute("select 1").fetchone()[0] == 1
        # a client that leaves gives its place back, on whichever worker it was
        conns.pop(0).close()
        deadline = time.monotonic() + 10
        while True:
            try:
                conns.append(b.connect(autocommit=True, **logins[0]))
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        with pytest.raises(psycopg.OperationalError, match=rf"\({limit}\)"):
            b.connect(**logins[1])
    finally:
        for c in conns:
            c.close()


def write_ini(b, pool_size):
    with open(b.ini) as f:
        text = f.read()
    text = "\n".join(f"default_pool_size = {pool_size}" if line.startswith("default_pool_size")
                     else line for line in text.split("\n"))
    with open(b.ini, "w") as f:
        f.write(text)


def test_sighup_applies_on_every_worker_and_sigterm_waits_for_all_clients(bouncer_factory, pg):
    b = bouncer_factory(config={"pgbouncer": {"workers": 2, "default_pool_size": 4,
                                              "pool_mode": "transaction"}})
    peak, errors = hold_transactions(b, pg, 12, 0.3)
    assert errors == [] and peak == 4
    write_ini(b, 2)
    b.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "configuration reloaded by every worker" not in b.log():
        assert time.monotonic() < deadline, "no reload:\n" + b.log()[-3000:]
        time.sleep(0.02)
    # the workers close the idle servers beyond the new size, wherever they are
    while pg.sql("select count(*) from pg_stat_activity"
                 " where usename = 'app' and datname = 'app'")[0][0] > 2:
        assert time.monotonic() < deadline, "the pools kept more than 2 servers"
        time.sleep(0.02)
    peak, errors = hold_transactions(b, pg, 12, 0.3)
    assert errors == []
    # had one worker kept 4, its clients could have had 4 backends
    assert peak == 2

    conns = [b.connect(autocommit=True) for _ in range(20)]
    for c in conns:
        c.execute("select 1")
    assert all(len(w) > 0 for w in watched_client_sockets(b.pid, b.port))
    b.stopped_by_us = True
    b.proc.send_signal(signal.SIGTERM)
    # every worker stops listening and waits for its clients, which keep working
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            b.connect(connect_timeout=2).close()
        except psycopg.OperationalError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("still accepting clients after SIGTERM")
    for c in conns:
        assert c.execute("select 2").fetchone()[0] == 2
    assert b.proc.poll() is None
    for c in conns:
        c.close()
    assert b.proc.wait(timeout=10) == 0
    assert "client connections dropped, exiting" in b.log()


def test_workers_auto_is_one_loop_per_online_cpu(bouncer_factory):
    b = bouncer_factory(config={"pgbouncer": {"workers": "auto"}})
    cpus = min(max(os.sysconf("SC_NPROCESSORS_ONLN"), 1), 64)
    assert len(thread_names(b.pid)) == cpus
    assert (f"{cpus} workers running" in b.log()) == (cpus > 1)
    with b.connect(autocommit=True) as c:
        assert c.execute("select 1").fetchone()[0] == 1


@pytest.mark.parametrize("value", ["0", "65", "two", ""])
def test_a_bad_workers_value_stops_the_start(bouncer_factory, value):
    b = bouncer_factory(config={"pgbouncer": {"workers": value}}, start=False)
    out = subprocess.run(b.command(), capture_output=True, text=True, timeout=30,
                         cwd=b.workdir)
    b.checked = True
    assert out.returncode != 0
    assert "workers must be a number from 1 to 64 or \"auto\"" in out.stdout + out.stderr + b.log()


def test_a_cancel_reaches_the_query_whichever_worker_takes_it(bouncer_factory, pg):
    b = bouncer_factory(config={"pgbouncer": {"workers": 2, "pool_mode": "transaction"}})
    conns = [b.connect(autocommit=True) for _ in range(8)]
    outcomes = []

    def run(conn):
        try:
            conn.execute("select pg_sleep(30) /* to cancel */")
            outcomes.append("finished")
        except psycopg.errors.QueryCanceled:
            outcomes.append("cancelled")
        except Exception as e:  # noqa: BLE001
            outcomes.append(repr(e))

    threads = [threading.Thread(target=run, args=(c,), daemon=True) for c in conns]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while pg.sql("select count(*) from pg_stat_activity where state = 'active'"
                 " and query like '%to cancel%' and pid <> pg_backend_pid()")[0][0] < 8:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    # each cancel request is a connection of its own, which either worker may accept
    for c in conns:
        c.cancel()
    for t in threads:
        t.join(40)
    for c in conns:
        c.close()
    assert outcomes == ["cancelled"] * 8


def scram_salt(b, user):
    w = b.wire()
    w.startup(user, "app", "wrong")
    w.close()
    return dict(a.split("=", 1) for a in w.scram_server_first.split(","))["s"]


def test_an_unknown_user_shows_one_scram_salt_on_every_worker(bouncer_factory, pg):
    """A real user's salt is the same whichever worker takes the connection; an unknown user's
    must be too, or comparing attempts would tell the name is unknown."""
    secret = pg.sql("select rolpassword from pg_authid where rolname = 'scramuser'")[0][0]
    b = bouncer_factory(config={"pgbouncer": {"workers": 2, "auth_type": "scram-sha-256"}},
                        users={"scramuser": secret})
    # the kernel spreads connections over both workers: 16 attempts all on one is 1 in 2^15
    assert len({scram_salt(b, "scramuser") for _ in range(16)}) == 1
    assert len({scram_salt(b, "nobody") for _ in range(16)}) == 1


def test_an_unknown_user_is_offered_scram_on_every_worker_once_users_did_scram(bouncer_factory,
                                                                              pg):
    """auth_type md5: once the auth_file's users have logged in with SCRAM (their secrets are
    SCRAM), an unknown user is offered SCRAM too, on whichever worker it lands, not md5 where
    the worker has not seen those logins yet."""
    secret = pg.sql("select rolpassword from pg_authid where rolname = 'scramuser'")[0][0]
    b = bouncer_factory(config={"pgbouncer": {"workers": 2, "auth_type": "md5"}},
                        users={"scramuser": secret})
    w = b.wire()
    assert w.startup("scramuser", "app", "scrampass") is None
    w.close()
    for _ in range(16):
        w = b.wire()
        err = w.startup("nobody", "app", "wrong")
        w.close()
        assert w.auth_requests[0] == pgwire.AUTH_SASL, w.auth_requests
        assert err["M"] == "SASL authentication failed"
