"""Synced tables with workers = 2: the synced tables live on the first worker; a client of a
database that has synced tables is handed to it right after its startup packet, whichever worker
the kernel gave it to (with its TLS session), while the clients of other databases stay where
they were accepted. Each test checks it the way test_workers does: which event loop (epoll
instance) watches which client socket.
"""

import os
import shutil
import signal
import socket
import time

import psycopg
import pytest

from conftest import IS_PGBOUNCER, make_tempdir, wait_synced_ready
from test_synced import TABLE_DDL, FakeSalesforce, check_held_writes_are_cancelled, db_rows
from test_sync import sync_now
from test_workers import watched_client_sockets

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="synced tables and workers are "
                                                     "syncbouncer's own")

TABLE_LINE = "crm.salesforce.contacts = api=salesforce object=Contact columns='note:Description'"


@pytest.fixture
def fake_sf():
    f = FakeSalesforce()
    yield f
    f.stop()


def start(pg, bouncer_factory, fake, synced=True, pgbouncer=None, api_timeout=5):
    """workers = 2, crm.salesforce.contacts synced to the fake (unless synced is false: the API
    only), and crm_direct: the same PostgreSQL database under a name without synced tables."""
    pg.sql("DROP SCHEMA IF EXISTS syncbouncer CASCADE", dbname="crm")
    pg.sql(TABLE_DDL, dbname="crm")
    pg.sql("CREATE TABLE IF NOT EXISTS public.plain_w (w int, i int)", dbname="app")
    pg.sql("GRANT ALL ON public.plain_w TO app", dbname="app")
    pg.sql("DELETE FROM public.plain_w", dbname="app")
    server = f"host=127.0.0.1 port={pg.port} dbname=crm user=app password=secret"
    api = (f"salesforce = type=salesforce base_url={fake.url} api_version=v59.0 auth=oauth2 "
           f"token_url={fake.url}/services/oauth2/token client_id=test-client-id "
           f"client_secret=test-client-secret refresh_token=test-refresh-token "
           f"timeout={api_timeout}")
    config = {
        "databases": {"crm": server, "crm_direct": server},
        "apis": [api],
        "pgbouncer": {"workers": 2, "max_client_conn": 150, "default_pool_size": 40,
                      **(pgbouncer or {})},
    }
    if synced:
        config["synced_tables"] = [TABLE_LINE]
    b = bouncer_factory(config=config)
    if synced:
        wait_synced_ready(pg, b, synced=True)
    b.fake = fake
    return b


def crm(b, **kw):
    return b.connect(dbname="crm", autocommit=True, **kw)


def server_inode(b, conn):
    """The inode of the pooler's end of a client's TCP connection."""
    with socket.socket(fileno=os.dup(conn.fileno())) as s:
        port = s.getsockname()[1]
    local, remote = f"0100007F:{b.port:04X}", f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            cols = line.split()
            if cols[1] == local and cols[2] == remote:
                return cols[9]
    raise AssertionError(f"no socket of the pooler for client port {port}")


def loops_of(b, conns):
    """For each client, the index of the event loop that watches its socket."""
    watched = watched_client_sockets(b.pid, b.port)
    out = []
    for c in conns:
        inode = server_inode(b, c)
        out.append([i for i, w in enumerate(watched) if inode in w])
    assert all(len(x) == 1 for x in out), out
    return [x[0] for x in out]


def connect_when_free(b, dbname, deadline):
    """A client of dbname once max_client_conn has a place (a closed client's place is given
    back when the pooler reads its EOF, a moment after the close)."""
    while True:
        try:
            return b.connect(dbname=dbname, autocommit=True)
        except psycopg.OperationalError as e:
            assert "max_client_conn" in str(e) and time.monotonic() < deadline, str(e)
            time.sleep(0.05)


def one_on_each_loop(b, connect, tries=32):
    """Clients made by connect() until both loops have one (the kernel picks the worker): one
    client per loop, the others closed."""
    mine, extra = {}, []
    for _ in range(tries):
        c = connect()
        (loop,) = loops_of(b, [c])
        if loop in mine:
            extra.append(c)
        else:
            mine[loop] = c
        if len(mine) == 2:
            break
    for c in extra:
        c.close()
    assert len(mine) == 2, f"{tries} clients, all on one worker"
    return list(mine.values())


def handovers(b):
    return b.log().count("taken over from worker 1: database crm has synced tables")


def test_synced_writes_from_clients_of_both_workers(pg, bouncer_factory, fake_sf):
    b = start(pg, bouncer_factory, fake_sf, pgbouncer={"max_client_conn": 40})
    deadline = time.monotonic() + 10
    crms = [connect_when_free(b, "crm", deadline) for _ in range(20)]
    apps = [connect_when_free(b, "app", deadline) for _ in range(20)]
    try:
        # every client of crm is on one loop (the first worker's), though the kernel gave
        # about half of them to the other, which handed them over; app's stay on both
        crm_loops, app_loops = loops_of(b, crms), loops_of(b, apps)
        assert len(set(crm_loops)) == 1, crm_loops
        assert len(set(app_loops)) == 2, app_loops
        assert 0 < handovers(b) < 20
        # max_client_conn counted each handed-over client once
        with pytest.raises(psycopg.OperationalError, match=r"max_client_conn"):
            b.connect(dbname="crm")
        with pytest.raises(psycopg.OperationalError, match=r"max_client_conn"):
            b.connect(dbname="app")
        ids = []
        for i, conn in enumerate(crms):
            (cid,) = conn.execute(
                "insert into salesforce.contacts (first_name, last_name, email) "
                "values (%s, 'Atreides', %s) returning id", (f"P{i}", f"p{i}@caladan.io")
            ).fetchone()
            ids.append(cid)
            conn.execute("update salesforce.contacts set note = %s where id = %s",
                         (f"n{i}", cid))
            # the API's refusal reaches the client as its error; nothing changes
            with pytest.raises(psycopg.errors.CheckViolation) as ei:
                conn.execute("update salesforce.contacts set email = 'pauldune.co' "
                             "where id = %s", (cid,))
            assert ei.value.diag.message_primary == "salesforce validation error"
            assert ei.value.diag.message_detail == \
                "Key (email)=(pauldune.co) is not a valid email address."
            assert conn.execute("select 1").fetchone() == (1,)
        for i, conn in enumerate(apps):
            conn.execute("insert into plain_w values (%s, %s)", (app_loops[i], i))
            assert conn.execute("select count(*) from plain_w where i = %s",
                                (i,)).fetchone() == (1,)
        # the table and the API's store agree
        store = b.fake.store()
        assert sorted(store) == sorted(ids)
        rows = db_rows(pg)
        assert [r[0] for r in rows] == sorted(ids)
        for cid, first, last, email, note in rows:
            rec = store[cid]
            assert (rec["FirstName"], rec["LastName"], rec["Email"], rec["Description"]) == \
                (first, last, email, note)
            assert email == f"p{first[1:]}@caladan.io" and note == f"n{first[1:]}"
        assert pg.sql("select count(distinct w), count(*) from public.plain_w",
                      dbname="app") == [(2, 20)]
    finally:
        for c in crms + apps:
            c.close()
    # every place came back, whichever worker held it at the end
    deadline = time.monotonic() + 10
    again = []
    try:
        for i in range(40):
            again.append(connect_when_free(b, "crm" if i % 2 else "app", deadline))
        assert again[-1].execute("select 1").fetchone() == (1,)
        with pytest.raises(psycopg.OperationalError, match=r"max_client_conn"):
            b.connect(dbname="crm")
    finally:
        for c in again:
            c.close()


def test_the_guard_holds_on_every_worker(pg, bouncer_factory, fake_sf):
    b = start(pg, bouncer_factory, fake_sf)
    for db in ("crm", "crm_direct", "app"):
        for _ in range(8):
            # the startup packet's options: refused whichever worker reads them (a client of
            # crm is handed over before they are looked at, then refused there)
            with pytest.raises(psycopg.OperationalError, match="not allowed"):
                b.connect(dbname=db, options="-c syncbouncer.mode=sync")
    conns = [crm(b) for _ in range(4)]
    direct = one_on_each_loop(b, lambda: b.connect(dbname="crm_direct", autocommit=True))
    conns += direct + one_on_each_loop(b, lambda: b.connect(dbname="app", autocommit=True))
    try:
        for c in conns:
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="not allowed"):
                c.execute("set syncbouncer.mode = 'sync'")
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="not allowed"):
                c.execute("select set_config('syncbouncer.mode', 'sync', false)")
        # crm_direct has no synced tables in the pooler: its writes reach PostgreSQL, on
        # either worker, and meet the guard trigger
        for c in direct:
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="synced with an API"):
                c.execute("insert into salesforce.contacts (id, last_name) values ('x', 'y')")
    finally:
        for c in conns:
            c.close()
    assert db_rows(pg) == []
    assert b.fake.store() == {}


def test_console_sync_and_journal_answer_from_every_worker(pg, bouncer_factory, fake_sf):
    b = start(pg, bouncer_factory, fake_sf)
    admins = one_on_each_loop(b, lambda: b.connect(dbname="pgbouncer", user="postgres",
                                                   password="postgres", autocommit=True))
    try:
        for i, a in enumerate(admins):
            # made in the API: only a sync pass brings it in; SYNC waits for the pass, which
            # runs on the first worker, and answers the console on whichever worker it is
            new = b.fake.call("POST", "/_records", {"object": "Contact", "op": "create",
                                                    "fields": {"LastName": f"Sync{i}"}})["id"]
            a.execute("SYNC crm.salesforce.contacts")
            assert new in [r[0] for r in db_rows(pg)]
            cur = a.execute("SHOW SYNCED_TABLES")
            cols = [d.name for d in cur.description]
            (row,) = [dict(zip(cols, r)) for r in cur.fetchall()]
            assert row["state"] == "ready" and row["last_sync"] is not None, row
            cur = a.execute("SHOW JOURNAL")
            assert "id" in [d.name for d in cur.description] and cur.fetchall() == []
    finally:
        for a in admins:
            a.close()


@pytest.fixture
def pooler_cert():
    """A CA and the pooler's certificate (key, certificate) signed by it."""
    from test_tls import make_ca, make_leaf

    d = make_tempdir("sb-wcerts-")
    os.chmod(d, 0o755)
    make_ca(d, "ca", "syncbouncer workers test CA")
    make_leaf(d, "pooler", "ca", "localhost", "DNS:localhost,IP:127.0.0.1")
    yield d
    if not os.environ.get("SB_KEEP_TMP"):
        shutil.rmtree(d, ignore_errors=True)


def test_one_tls_client_handed_over_keeps_its_session(pg, bouncer_factory, fake_sf, pooler_cert):
    d = pooler_cert
    b = start(pg, bouncer_factory, fake_sf, pgbouncer={
        "client_tls_sslmode": "require", "client_tls_key_file": os.path.join(d, "pooler.key"),
        "client_tls_cert_file": os.path.join(d, "pooler.crt")})
    conn = None
    for _ in range(24):
        before = handovers(b)
        c = crm(b, sslmode="require")
        if handovers(b) > before:
            conn = c
            break
        c.close()
    assert conn is not None, "no TLS client was taken by the second worker in 24 tries"
    try:
        assert conn.pgconn.ssl_in_use
        (cid,) = conn.execute("insert into salesforce.contacts (last_name, email) values "
                              "('Tls', 'tls@caladan.io') returning id").fetchone()
        with pytest.raises(psycopg.errors.CheckViolation, match="validation error"):
            conn.execute("update salesforce.contacts set email = 'bad' where id = %s", (cid,))
        # a large answer through the handed-over session
        assert len(conn.execute("select repeat('x', 200000)").fetchone()[0]) == 200000
    finally:
        conn.close()
    assert b.fake.store()[cid]["Email"] == "tls@caladan.io"
    assert db_rows(pg) == [(cid, None, "Tls", "tls@caladan.io", None)]


def test_reload_adding_then_removing_a_synced_table(pg, bouncer_factory, fake_sf):
    b = start(pg, bouncer_factory, fake_sf, synced=False)
    crms = [crm(b) for _ in range(16)]
    apps = [b.connect(dbname="app", autocommit=True) for _ in range(8)]
    for c in crms + apps:
        c.execute("select 1")
    before = loops_of(b, crms)
    assert len(set(before)) == 2, before
    with open(b.ini) as f:
        ini = f.read()
    with open(b.ini, "w") as f:
        f.write(ini + f"\n[synced_tables]\n{TABLE_LINE}\n")
    b.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "configuration reloaded by every worker" not in b.log():
        assert time.monotonic() < deadline, b.log()[-3000:]
        time.sleep(0.02)
    wait_synced_ready(pg, b, synced=True)
    # crm's clients on the second worker were closed, saying why; those on the first stay
    kept, closed = [], []
    for c, loop in zip(crms, before):
        try:
            c.execute("select 1")
            kept.append((c, loop))
        except psycopg.OperationalError as e:
            assert "database crm has synced tables now" in str(e), str(e)
            closed.append(loop)
    assert kept and closed
    assert len({loop for _, loop in kept}) == 1 and set(closed) == set(before) - {kept[0][1]}
    # the kept ones write through the API; so do new clients, wherever the kernel puts them
    for c, _ in kept[:2]:
        c.execute("insert into salesforce.contacts (last_name) values ('Kept')")
    news = [crm(b) for _ in range(8)]
    try:
        assert set(loops_of(b, news)) == {kept[0][1]}
        for c in news:
            c.execute("insert into salesforce.contacts (last_name) values ('New')")
        for c in apps:
            assert c.execute("select 2").fetchone() == (2,)
        kept_writes = min(len(kept), 2)
        assert sorted(r[2] for r in db_rows(pg)) == ["Kept"] * kept_writes + ["New"] * 8
        assert len(b.fake.store()) == kept_writes + 8
        # a RELOAD that takes the synced table away closes nobody; crm is anybody's again
        with open(b.ini, "w") as f:
            f.write(ini)
        b.proc.send_signal(signal.SIGHUP)
        while b.log().count("configuration reloaded by every worker") < 2:
            assert time.monotonic() < deadline + 20, b.log()[-3000:]
            time.sleep(0.02)
        for c in [c for c, _ in kept] + news + apps:
            assert c.execute("select 3").fetchone() == (3,)
        for c in one_on_each_loop(b, lambda: crm(b)):
            assert c.execute("select count(*) from salesforce.contacts").fetchone() == \
                (kept_writes + 8,)
            c.close()
    finally:
        for c in crms + apps + news:
            c.close()


def test_a_write_just_after_a_reload_waits_for_its_table(pg, bouncer_factory, fake_sf):
    """A RELOAD prepares the synced tables again (schema, triggers, columns); a write that comes
    meanwhile waits for that instead of failing with "not ready"."""
    b = start(pg, bouncer_factory, fake_sf)
    conns = [crm(b) for _ in range(3)]
    a = b.connect(dbname="pgbouncer", user="postgres", password="postgres", autocommit=True,
                  prepare_threshold=None)
    ids = []
    try:
        for i in range(3):
            a.execute("RELOAD")
            for j, conn in enumerate(conns):
                (cid,) = conn.execute(
                    "insert into salesforce.contacts (last_name, email) values (%s, %s) "
                    "returning id", (f"R{i}{j}", f"r{i}{j}@caladan.io")).fetchone()
                ids.append(cid)
        assert sorted(b.fake.store()) == sorted(ids)
        assert [r[0] for r in db_rows(pg)] == sorted(ids)
    finally:
        for c in conns + [a]:
            c.close()


def test_a_write_held_for_a_reload_is_cancelled_from_either_worker(pg, bouncer_factory, fake_sf):
    """The CancelRequest reaches whichever worker the kernel gives it to; the held write's
    client lives on the first one: the cancel finds it there and drops the held write."""
    check_held_writes_are_cancelled(start(pg, bouncer_factory, fake_sf, api_timeout=30), pg)
