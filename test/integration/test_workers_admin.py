"""The admin console with two workers: the views show one pooler holding every connection of
both workers, and the commands act on both (PAUSE answers once both have released their
servers; KILL_CLIENT finds a client on either; RELOAD reaches both, with what one of them read
and checked, and SET too; DNS names count once)."""

import os
import socket

import psycopg
import pytest

from conftest import DEFAULT_USERS, IS_PGBOUNCER, free_port, render_userlist
from test_admin_commands import Background, admin, rows
from test_metrics import get, parse, scrape
from test_workers import watched_client_sockets

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="pgbouncer has one event loop")

NCLIENTS = 20


def two_workers(**extra):
    return {"pgbouncer": {"workers": 2, "pool_mode": "transaction", **extra}}


def local_port(conn):
    """The client side's port of a psycopg connection: the port SHOW CLIENTS lists."""
    s = socket.socket(fileno=conn.pgconn.socket)
    try:
        return s.getsockname()[1]
    finally:
        s.detach()


def loop_of_ports(b):
    """{client port: number of the event loop (epoll) watching its connection}, for the
    clients connected now. The numbers tell loops apart; they are not worker numbers."""
    watched = [w for w in watched_client_sockets(b.pid, b.port) if w]
    inode_loop = {inode: i for i, w in enumerate(watched) for inode in w}
    want = f"0100007F:{b.port:04X}"
    out = {}
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            cols = line.split()
            if cols[1] == want and cols[9] in inode_loop:
                out[int(cols[2].split(":")[1], 16)] = inode_loop[cols[9]]
    return out


def app_clients(a):
    return [c for c in rows(a, "SHOW CLIENTS") if c["database"] == "app"]


def by_port(conns):
    return {local_port(c): c for c in conns}


def one_console_per_worker(b, admins):
    """Two of the admin connections admins, on different workers."""
    loops = loop_of_ports(b)
    by_loop = {}
    for a in admins:
        by_loop.setdefault(loops[local_port(a)], a)
    assert len(by_loop) == 2, "the admin connections all went to one worker"
    return list(by_loop.values())


@pytest.mark.timeout(90)
def test_views_metrics_and_kill_client_over_two_workers(bouncer_factory):
    mport = free_port()
    b = bouncer_factory(config=two_workers(metrics_listen=f"127.0.0.1:{mport}"))
    conns = [b.connect(autocommit=True) for _ in range(NCLIENTS)]
    try:
        xacts = 0
        for i, c in enumerate(conns):
            for _ in range(i % 3 + 1):
                assert c.execute("select 1").fetchone() == (1,)
                xacts += 1
        with admin(b) as a:
            clients = app_clients(a)
            assert len(clients) == NCLIENTS
            assert len({c["id"] for c in clients}) == NCLIENTS, "client ids repeat"
            assert {c["port"] for c in clients} == set(by_port(conns))
            # the clients are spread over both workers, and each worker's rows come together
            loops = loop_of_ports(b)
            listed = [loops[c["port"]] for c in clients]
            assert len(set(listed)) == 2, listed
            assert listed == sorted(listed, key=listed.index), listed

            pools = [p for p in rows(a, "SHOW POOLS") if p["database"] == "app"]
            assert len(pools) == 1, pools
            assert pools[0]["cl_active"] == NCLIENTS
            assert pools[0]["cl_waiting"] == 0

            stats = {s["database"]: s for s in rows(a, "SHOW STATS")}
            assert int(stats["app"]["total_xact_count"]) == xacts
            assert int(stats["app"]["total_query_count"]) == xacts
            totals = {r["name"]: r["value"] for r in rows(a, "SHOW TOTALS")}
            assert int(totals["total_xact_count"]) >= xacts

            dbs = {d["name"]: d for d in rows(a, "SHOW DATABASES")}
            assert dbs["app"]["current_client_connections"] == NCLIENTS
            lists = dict(a.execute("SHOW LISTS").fetchall())
            assert lists["pools"] == len(rows(a, "SHOW POOLS"))

            # the metrics endpoint (worker 0) counts the clients and transactions of both
            samples, _ = parse(scrape(f"http://127.0.0.1:{mport}/metrics"))
            assert get(samples, "pgbouncer_pools_client_active_connections", database="app",
                       user="app") == NCLIENTS
            assert get(samples, "pgbouncer_stats_sql_transactions_pooled_total",
                       database="app") == xacts

            # the first and the last client listed: one on each worker
            ports = by_port(conns)
            victims = [clients[0], clients[-1]]
            assert loops[victims[0]["port"]] != loops[victims[1]["port"]]
            for v in victims:
                assert a.execute(f"KILL_CLIENT {v['id']}").statusmessage == "KILL_CLIENT"
            for v in victims:
                with pytest.raises(psycopg.OperationalError):
                    ports[v["port"]].execute("select 1")
            left = app_clients(a)
            assert len(left) == NCLIENTS - 2
            assert not {v["id"] for v in victims} & {c["id"] for c in left}
            with pytest.raises(psycopg.errors.ProtocolViolation, match="client not found"):
                a.execute(f"KILL_CLIENT {victims[0]['id']}")
    finally:
        for c in conns:
            c.close()


@pytest.mark.timeout(90)
def test_pause_waits_for_both_workers_then_resume(bouncer_factory):
    b = bouncer_factory(config=two_workers())
    conns = [b.connect() for _ in range(NCLIENTS)]
    try:
        with admin(b) as a:
            listed = app_clients(a)
            ports = by_port(conns)
            # one open transaction on the first client listed, one on the last: one on each
            # worker
            loops = loop_of_ports(b)
            assert loops[listed[0]["port"]] != loops[listed[-1]["port"]]
            first, last = ports[listed[0]["port"]], ports[listed[-1]["port"]]
            first.execute("select 1")
            last.execute("select 1")
            pause = Background(lambda: admin(b).execute("PAUSE").statusmessage)
            assert not pause.join(0.5), "PAUSE answered while two transactions were open"
            first.commit()
            assert not pause.join(0.5), "PAUSE answered while a transaction was open"
            last.commit()
            assert pause.join(20), "PAUSE did not answer once both transactions ended"
            assert pause.error is None and pause.result == "PAUSE"
            assert dict(a.execute("SHOW STATE").fetchall())["paused"] == "yes"
            assert [s for s in rows(a, "SHOW SERVERS") if s["database"] == "app"] == []
            held = [Background(lambda c=c: c.execute("select 'resumed'").fetchone())
                    for c in (first, last)]
            assert not any(h.join(0.3) for h in held)
            assert a.execute("RESUME").statusmessage == "RESUME"
            for h in held:
                assert h.join(20) and h.error is None and h.result == ("resumed",)
            assert dict(a.execute("SHOW STATE").fetchall())["paused"] == "no"
    finally:
        for c in conns:
            c.close()


@pytest.mark.timeout(90)
def test_reload_reaches_both_workers(bouncer_factory, pg):
    b = bouncer_factory(config=two_workers())
    with admin(b) as a:
        with open(b.ini) as f:
            ini = f.read()
        server = f"host=127.0.0.1 port={pg.port}"
        with open(b.ini, "w") as f:
            f.write(ini.replace("[databases]\n", f"[databases]\nadded = {server} dbname=app\n"))
        assert a.execute("RELOAD").statusmessage == "RELOAD"
        # every new client, on whichever worker takes it, knows the database RELOAD added
        conns = [b.connect(dbname="added", autocommit=True) for _ in range(NCLIENTS)]
        try:
            loops = loop_of_ports(b)
            assert len({loops[p] for p in by_port(conns)}) == 2, "the clients are on one worker"
            for c in conns:
                assert c.execute("select current_database()").fetchone() == ("app",)
            pools = [p for p in rows(a, "SHOW POOLS") if p["database"] == "added"]
            assert len(pools) == 1 and pools[0]["cl_active"] == NCLIENTS
        finally:
            for c in conns:
                c.close()


@pytest.mark.timeout(90)
def test_set_reaches_both_workers(bouncer_factory):
    b = bouncer_factory(config=two_workers())
    admins = [admin(b) for _ in range(8)]
    try:
        one, other = one_console_per_worker(b, admins)
        assert one.execute("SET server_idle_timeout = 123").statusmessage == \
            "SET server_idle_timeout=123"
        for a in (one, other):
            config = {r["key"]: r["value"] for r in rows(a, "SHOW CONFIG")}
            assert config["server_idle_timeout"] == "123"
    finally:
        for a in admins:
            a.close()


@pytest.mark.timeout(90)
def test_suspend_holds_both_workers_until_resume(bouncer_factory):
    b = bouncer_factory(config=two_workers())
    conns = [b.connect(autocommit=True) for _ in range(8)]
    try:
        loops = loop_of_ports(b)
        by_loop = {}
        for c in conns:
            by_loop.setdefault(loops[local_port(c)], c)
        assert len(by_loop) == 2, "the clients all went to one worker"
        with admin(b) as a:
            assert a.execute("SUSPEND").statusmessage == "SUSPEND"
            assert dict(a.execute("SHOW STATE").fetchall())["suspended"] == "yes"
            held = [Background(lambda c=c: c.execute("select 'resumed'").fetchone())
                    for c in by_loop.values()]
            assert not any(h.join(0.3) for h in held), "a worker answered while suspended"
            assert a.execute("RESUME").statusmessage == "RESUME"
            for h in held:
                assert h.join(20) and h.error is None and h.result == ("resumed",)
    finally:
        for c in conns:
            c.close()


# For tests only: once a RELOAD or SET (or the start) has read and checked the files, and
# before the workers apply them, the pooler renames PATH.next over PATH — a file edited at the
# worst moment, made deterministic.
AFTER_CHECK = "SYNCBOUNCER_TEST_AFTER_CHECK"


def logins_on_both_workers(b, password):
    """NCLIENTS logins as app with password, spread over both workers; all must succeed."""
    conns = [b.connect(password=password, autocommit=True) for _ in range(NCLIENTS)]
    try:
        loops = loop_of_ports(b)
        assert len({loops[p] for p in by_port(conns)}) == 2, "the clients are on one worker"
        for c in conns:
            assert c.execute("select 1").fetchone() == (1,)
    finally:
        for c in conns:
            c.close()


@pytest.mark.timeout(90)
def test_an_auth_file_changed_during_start_or_reload_reaches_no_worker(bouncer_factory,
                                                                       monkeypatch):
    b = bouncer_factory(config=two_workers(), start=False)
    monkeypatch.setenv(AFTER_CHECK, b.userlist)
    nxt = b.userlist + ".next"
    with open(nxt, "w") as f:
        f.write(render_userlist({**DEFAULT_USERS, "app": "first-change"}))
    b.start()
    # replaced once worker 0 had read it: both workers log in with what worker 0 read
    assert not os.path.exists(nxt)
    logins_on_both_workers(b, "secret")

    with open(nxt, "w") as f:
        f.write(render_userlist({**DEFAULT_USERS, "app": "second-change"}))
    with admin(b) as a:
        assert a.execute("RELOAD").statusmessage == "RELOAD"
    assert not os.path.exists(nxt)
    # the file RELOAD read and checked, on both workers; not the one that came after
    logins_on_both_workers(b, "first-change")
    for _ in range(NCLIENTS // 2):
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            b.connect(password="second-change")


# For tests only: the worker making a change (RELOAD, SET) sleeps this long after its check.
CHANGE_PAUSE = "SYNCBOUNCER_TEST_CHANGE_PAUSE_MS"


@pytest.mark.timeout(90)
def test_changes_at_once_on_two_workers_leave_them_on_one_configuration(bouncer_factory,
                                                                       monkeypatch):
    monkeypatch.setenv(CHANGE_PAUSE, "400")
    b = bouncer_factory(config=two_workers())
    admins = [admin(b) for _ in range(8)]
    try:
        one, other = one_console_per_worker(b, admins)

        def idle_timeouts():
            return [{r["key"]: r["value"] for r in rows(a, "SHOW CONFIG")}
                    ["server_idle_timeout"] for a in (one, other)]

        # each change is checked, then paused 400 ms before the workers apply it: sent at once
        # from the two workers, they overlap unless one waits for the other
        for cmds in ((("SET server_idle_timeout = 111", "SET server_idle_timeout=111"),
                      ("SET server_idle_timeout = 222", "SET server_idle_timeout=222")),
                     (("SET server_idle_timeout = 333", "SET server_idle_timeout=333"),
                      ("RELOAD", "RELOAD"))):
            sent = [Background(lambda a=a, q=q: a.execute(q).statusmessage)
                    for a, (q, _) in zip((one, other), cmds)]
            for s, (_, tag) in zip(sent, cmds):
                assert s.join(30), "a change never finished"
                assert s.error is None, s.error
                assert s.result == tag
            got = idle_timeouts()
            # both workers took both changes in the same order: the one that came second wins
            assert got[0] == got[1], f"the workers disagree after {cmds}: {got}"
        assert got[0] in ("333", "600"), got  # the SET, or the ini's default after RELOAD
    finally:
        for a in admins:
            a.close()


HBA = "host all all 127.0.0.1/32 md5\n"


@pytest.mark.timeout(90)
def test_set_is_taken_by_every_worker_with_what_the_first_read(bouncer_factory, monkeypatch):
    b = bouncer_factory(config=two_workers(auth_type="hba",
                                           auth_hba_file="@WORKDIR@/hba.conf"), start=False)
    for name, text in (("hba.conf", HBA), ("hba2.conf", "# the new rules\n" + HBA)):
        with open(os.path.join(b.workdir, name), "w") as f:
            f.write(text)
    hba2 = os.path.join(b.workdir, "hba2.conf")
    monkeypatch.setenv(AFTER_CHECK, hba2)
    b.start()
    # (after the start, which would replace it too)
    with open(hba2 + ".next", "w") as f:
        f.write("host all all 127.0.0.1/32 no-such-method\n")
    admins = [admin(b) for _ in range(8)]
    try:
        one, other = one_console_per_worker(b, admins)
        # the file was good when it was checked: every worker takes it, none reads it again
        # (libpq keeps 63 bytes of a command tag: a long temporary path is cut short in it)
        assert one.execute(f"SET auth_hba_file = '{hba2}'").statusmessage == \
            f"SET auth_hba_file={hba2}"[:63]
        assert not os.path.exists(hba2 + ".next")
        for a in (one, other):
            config = {r["key"]: r["value"] for r in rows(a, "SHOW CONFIG")}
            assert config["auth_hba_file"] == hba2
        logins_on_both_workers(b, "secret")
    finally:
        for a in admins:
            a.close()


@pytest.mark.timeout(90)
def test_a_name_both_workers_resolved_counts_once(bouncer_factory, pg):
    b = bouncer_factory(config={**two_workers(), "databases": {
        "app": f"host=localhost port={pg.port} dbname=app"}})
    conns = [b.connect(autocommit=True) for _ in range(NCLIENTS)]
    try:
        for c in conns:
            assert c.execute("select 1").fetchone() == (1,)
        loops = loop_of_ports(b)
        # both workers opened servers to localhost: each resolved it
        assert len({loops[p] for p in by_port(conns)}) == 2, "the clients are on one worker"
        with admin(b) as a:
            assert dict(a.execute("SHOW LISTS").fetchall())["dns_names"] == 1
            hosts = rows(a, "SHOW DNS_HOSTS")
            assert [h["hostname"] for h in hosts] == ["localhost"], hosts
            assert "127.0.0.1" in hosts[0]["addrs"]
    finally:
        for c in conns:
            c.close()
