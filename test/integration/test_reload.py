"""RELOAD (and SIGHUP): the ini, the auth file, databases that move to a new destination, and a
broken ini that leaves everything as it was."""

import signal
import time

import psycopg
import pytest

from conftest import IS_PGBOUNCER


def admin(b):
    return b.connect(dbname="pgbouncer", user="postgres", password="postgres", autocommit=True,
                     prepare_threshold=None)


def rewrite(path, old, new):
    with open(path) as f:
        text = f.read()
    assert old in text, old
    with open(path, "w") as f:
        f.write(text.replace(old, new))


@pytest.mark.timeout(60)
def test_reload_moves_a_database_to_its_new_destination(bouncer):
    old_client = bouncer.connect(autocommit=True)
    try:
        assert old_client.execute("select current_database()").fetchone() == ("app",)
        # same entry name, new destination
        rewrite(bouncer.ini, f"app = host=127.0.0.1 port={bouncer.pg.port} dbname=app",
                f"app = host=127.0.0.1 port={bouncer.pg.port} dbname=crm")
        with admin(bouncer) as a:
            assert a.execute("RELOAD").statusmessage == "RELOAD"
            dbs = {r[0]: r for r in a.execute("SHOW DATABASES").fetchall()}
            assert dbs["app"][3] == "crm"
            if not IS_PGBOUNCER:
                # the session keeps its server, marked to be closed when released
                servers = a.execute("SHOW SERVERS").fetchall()
                assert [s[13] for s in servers if s[2] == "app"] == [1]
        # the connected session is not cut off
        assert old_client.execute("select current_database()").fetchone() == ("app",)
        # a new client lands on the new destination
        with bouncer.connect(autocommit=True) as c:
            assert c.execute("select current_database()").fetchone() == ("crm",)
    finally:
        old_client.close()
    # the old server is closed once released, not given to anyone
    with admin(bouncer) as a:
        a.execute("WAIT_CLOSE app")
    with bouncer.connect(autocommit=True) as c:
        assert c.execute("select current_database()").fetchone() == ("crm",)


@pytest.mark.skipif(IS_PGBOUNCER, reason="pgbouncer 1.18 takes this file; 1.25 refuses it")
@pytest.mark.timeout(60)
def test_reload_with_a_broken_ini_keeps_the_old_config(bouncer):
    with open(bouncer.ini) as f:
        good = f.read()
    with open(bouncer.ini, "w") as f:
        f.write(good + "\n[pgbouncer\nthis is not an ini line\n")
    with admin(bouncer) as a:
        with pytest.raises(psycopg.Error) as ei:
            a.execute("RELOAD")
        assert ei.value.diag.message_primary == "RELOAD failed, see logs for additional details"
        cfg = dict((r[0], r[1]) for r in a.execute("SHOW CONFIG").fetchall())
        assert cfg["default_pool_size"] == "20"
    with bouncer.connect() as c:
        assert c.execute("select 1").fetchone() == (1,)
    # SIGHUP with the broken file: logged, still running, still serving
    bouncer.proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert bouncer.proc.poll() is None
    assert "RELOAD failed, see logs for additional details" in bouncer.log()
    with bouncer.connect() as c:
        assert c.execute("select 2").fetchone() == (2,)


@pytest.mark.timeout(60)
def test_reload_rereads_the_auth_file(bouncer_factory, pg):
    # the server login is forced to app/secret: only the client login depends on the auth file
    b = bouncer_factory(config={"databases": {
        "forced": f"host=127.0.0.1 port={pg.port} dbname=app user=app password=secret"}})
    with pytest.raises(psycopg.OperationalError) as ei:
        b.connect(dbname="forced", user="newbie", password="pw")
    assert "password authentication failed" in str(ei.value)
    with open(b.userlist, "a") as f:
        f.write('"newbie" "pw"\n')
    with admin(b) as a:
        assert a.execute("RELOAD").statusmessage == "RELOAD"
    with b.connect(dbname="forced", user="newbie", password="pw") as c:
        assert c.execute("select current_user").fetchone() == ("app",)


@pytest.mark.timeout(60)
def test_reload_drops_a_removed_database(bouncer):
    c = bouncer.connect(dbname="crm", autocommit=True)
    try:
        c.execute("select 1")
        rewrite(bouncer.ini, f"crm = host=127.0.0.1 port={bouncer.pg.port} dbname=crm\n", "")
        with admin(bouncer) as a:
            a.execute("RELOAD")
            assert "crm" not in {r[0] for r in a.execute("SHOW DATABASES").fetchall()}
        # its clients are dropped, new ones are refused
        with pytest.raises(psycopg.OperationalError):
            c.execute("select 1")
        with pytest.raises(psycopg.OperationalError) as ei:
            bouncer.connect(dbname="crm")
        assert "no such database: crm" in str(ei.value)
        with bouncer.connect() as other:
            assert other.execute("select 1").fetchone() == (1,)
    finally:
        c.close()


@pytest.mark.timeout(60)
def test_reload_changes_a_database_host(bouncer):
    def server_addr(conn):
        # the address PostgreSQL sees: 127.0.0.1 over TCP, None over its unix socket
        return conn.execute("select host(inet_client_addr())").fetchone()[0]

    old = bouncer.connect(autocommit=True)
    try:
        assert server_addr(old) == "127.0.0.1"
        rewrite(bouncer.ini, f"app = host=127.0.0.1 port={bouncer.pg.port} dbname=app",
                f"app = host={bouncer.pg.sockdir} port={bouncer.pg.port} dbname=app")
        with admin(bouncer) as a:
            a.execute("RELOAD")
        with bouncer.connect(autocommit=True) as new:
            assert server_addr(new) is None
        assert server_addr(old) == "127.0.0.1"
    finally:
        old.close()
