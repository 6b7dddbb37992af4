"""auth_type = hba: the auth_hba_file decides the method per connection (kind, address,
database, user), the ident map lets OS users in under other names, and RELOAD re-reads both."""

import os
import subprocess

import psycopg
import pytest

import pgwire
from conftest import HAVE_IPV6, IS_PGBOUNCER

syncbouncer_only = pytest.mark.skipif(
    IS_PGBOUNCER, reason="pgbouncer 1.18 skips hba lines it cannot read instead of refusing them")


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def hba_bouncer(bouncer_factory, hba, ident=None, **pgb):
    """A pooler with auth_type=hba, the given hba text and optional ident text, listening on
    127.0.0.1 (and ::1 when there is IPv6) and on a unix socket in its work directory."""
    b = bouncer_factory(config={"pgbouncer": {
        "auth_type": "hba",
        "auth_hba_file": "@WORKDIR@/hba.conf",
        "auth_ident_file": "@WORKDIR@/ident.conf" if ident is not None else None,
        "listen_addr": "127.0.0.1,::1" if HAVE_IPV6 else "127.0.0.1",
        "unix_socket_dir": "@WORKDIR@",
        "log_disconnections": 1,
        **pgb,
    }}, start=False)
    write(os.path.join(b.workdir, "hba.conf"), hba)
    if ident is not None:
        write(os.path.join(b.workdir, "ident.conf"), ident)
    return b.start()


def login(b, user, db, password, host="127.0.0.1"):
    w = pgwire.WireClient(host, b.port)
    err = w.startup(user, db, password)
    w.close()
    return w.auth_requests, err


HBA = """\
# TYPE  DATABASE  USER       ADDRESS        METHOD
host    all       mallory    127.0.0.1/32   reject
host    crm       app        127.0.0.0/8    password
host    app       app        127.0.0.1/32   md5
host    all       scramuser  127.0.0.1 255.255.255.255 scram-sha-256
host    pgbouncer postgres   127.0.0.0/8    md5
host    all       all        ::1/128        reject
"""


def test_method_per_line(bouncer_factory):
    b = hba_bouncer(bouncer_factory, HBA)
    assert login(b, "app", "app", "secret") == ([pgwire.AUTH_MD5, pgwire.AUTH_OK], None)
    assert login(b, "app", "crm", "secret") == ([pgwire.AUTH_CLEARTEXT, pgwire.AUTH_OK], None)
    assert login(b, "scramuser", "app", "scrampass") == (
        [pgwire.AUTH_SASL, pgwire.AUTH_SASL_CONTINUE, pgwire.AUTH_SASL_FINAL, pgwire.AUTH_OK],
        None)
    # the admin console goes through the same file
    with b.connect(dbname="pgbouncer", user="postgres", password="postgres",
                   autocommit=True) as admin:
        assert admin.execute("SHOW VERSION").fetchone()
    # wrong passwords fail as they do without hba
    assert login(b, "app", "app", "wrong")[1]["M"] == "password authentication failed"


def test_reject_and_no_matching_line(bouncer_factory):
    b = hba_bouncer(bouncer_factory, HBA)
    # a reject line, and a connection no line matches (user postgres to database app)
    for user, db in [("mallory", "app"), ("postgres", "app")]:
        requests, err = login(b, user, db, "whatever")
        assert requests == []
        assert (err["S"], err["M"]) == ("FATAL", "login rejected")
    assert "closing because: login rejected" in b.log()


@pytest.mark.skipif(not HAVE_IPV6, reason="no IPv6 loopback")
def test_address_decides(bouncer_factory):
    """The same user and database: allowed from 127.0.0.1, rejected from ::1."""
    b = hba_bouncer(bouncer_factory, HBA)
    assert login(b, "app", "app", "secret")[1] is None
    assert login(b, "app", "app", "secret", host="::1")[1]["M"] == "login rejected"


@pytest.mark.skipif(IS_PGBOUNCER, reason="auth_ident_file is newer than pgbouncer 1.18")
def test_peer_and_ident_map(bouncer_factory):
    """The tests run as the OS user postgres: peer lets it in as postgres (here to the admin
    console, which needs no server), and as app only through the map."""
    me = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    assert me == "postgres"
    hba = ("local pgbouncer postgres peer\n"
           "local app app peer map=m\n"
           "local crm app peer\n")
    b = hba_bouncer(bouncer_factory, hba, ident=f"m {me} app\n")
    assert login(b, me, "pgbouncer", None, host=b.workdir)[1] is None
    assert login(b, "app", "app", None, host=b.workdir)[1] is None
    # no map on this line: OS user and database user must be the same
    err = login(b, "app", "crm", None, host=b.workdir)[1]
    assert err["M"] == "unix socket login rejected"
    with b.connect(host=b.workdir, user="app", password=None) as conn:
        assert conn.execute("select current_user").fetchone() == ("app",)


def test_reload_rereads_the_file(bouncer_factory):
    b = hba_bouncer(bouncer_factory, HBA)
    assert login(b, "app", "app", "secret")[1] is None
    write(os.path.join(b.workdir, "hba.conf"),
          HBA.replace("host    app       app        127.0.0.1/32   md5",
                      "host    app       app        127.0.0.1/32   reject"))
    with b.connect(dbname="pgbouncer", user="postgres", password="postgres",
                   autocommit=True) as admin:
        admin.execute("RELOAD")
    assert login(b, "app", "app", "secret")[1]["M"] == "login rejected"


@syncbouncer_only
def test_broken_file_fails_reload_and_keeps_the_old_rules(bouncer_factory):
    b = hba_bouncer(bouncer_factory, HBA)
    write(os.path.join(b.workdir, "hba.conf"), HBA + "host all all 10.0.0.0/8 ident\n")
    with b.connect(dbname="pgbouncer", user="postgres", password="postgres",
                   autocommit=True) as admin:
        with pytest.raises(psycopg.Error):
            admin.execute("RELOAD")
    assert 'hba.conf:8: unsupported authentication method "ident"' in b.log()
    # the rules from before are still the ones in force
    assert login(b, "app", "app", "secret")[1] is None
    assert login(b, "mallory", "app", "x")[1]["M"] == "login rejected"


@syncbouncer_only
@pytest.mark.parametrize("line,reason", [
    ("host all all 10.0.0.0/8 ident", 'unsupported authentication method "ident"'),
    ("host all all db.example.com md5", "invalid IP address"),
    ("hostssl all all 0.0.0.0/0 md5", "hostssl needs client TLS"),
    ("host all all 0.0.0.0/0 cert", "cert needs client TLS"),
    ("local all +admins md5", "group membership"),
])
def test_unusable_line_stops_the_start(bouncer_factory, line, reason):
    b = bouncer_factory(config={"pgbouncer": {"auth_type": "hba",
                                              "auth_hba_file": "@WORKDIR@/hba.conf"}},
                        start=False)
    write(os.path.join(b.workdir, "hba.conf"), "local all all trust\n" + line + "\n")
    out = subprocess.run(b.command(), capture_output=True, text=True, timeout=30,
                         cwd=b.workdir)
    b.checked = True
    assert out.returncode != 0
    assert f"hba.conf:2: {reason}" in out.stdout + out.stderr + b.log()


@pytest.mark.skipif(IS_PGBOUNCER, reason="pgbouncer 1.18 starts without its hba file (and then "
                    "rejects every login)")
def test_missing_hba_file_stops_the_start(bouncer_factory):
    b = bouncer_factory(config={"pgbouncer": {"auth_type": "hba",
                                              "auth_hba_file": "@WORKDIR@/nope.conf"}},
                        start=False)
    out = subprocess.run(b.command(), capture_output=True, text=True, timeout=30,
                         cwd=b.workdir)
    b.checked = True
    assert out.returncode != 0
    assert "nope.conf" in out.stdout + out.stderr + b.log()


def test_include_files_and_sameuser(bouncer_factory):
    b = bouncer_factory(config={"pgbouncer": {"auth_type": "hba",
                                              "auth_hba_file": "@WORKDIR@/hba.conf"}},
                        start=False)
    write(os.path.join(b.workdir, "dbs.txt"), "crm\n")
    write(os.path.join(b.workdir, "users.txt"), "scramuser, app\n")
    write(os.path.join(b.workdir, "hba.conf"),
          "host sameuser all 127.0.0.1/32 md5\n"
          "host @dbs.txt @users.txt 127.0.0.1/32 md5\n")
    b.start()
    assert login(b, "app", "app", "secret")[1] is None  # sameuser
    assert login(b, "app", "crm", "secret")[1] is None  # from the files
    assert login(b, "scramuser", "crm", "scrampass")[1] is None
    assert login(b, "scramuser", "app", "scrampass")[1]["M"] == "login rejected"


@syncbouncer_only
def test_set_rereads_the_files(bouncer_factory):
    """SET auth_type / auth_hba_file read the file at once; a file that cannot be loaded makes
    the SET fail and leaves the setting as it was."""
    b = bouncer_factory(config={"pgbouncer": {"auth_hba_file": "@WORKDIR@/hba.conf"}},
                        start=False)
    write(os.path.join(b.workdir, "hba.conf"), HBA)
    write(os.path.join(b.workdir, "bad.conf"), "host all all 1.2.3.4/32 ident\n")
    b.start()
    assert login(b, "mallory", "app", "x")[1]["M"] == "password authentication failed"
    with b.connect(dbname="pgbouncer", user="postgres", password="postgres",
                   autocommit=True) as admin:
        admin.execute("SET auth_type = 'hba'")
        assert login(b, "mallory", "app", "x")[1]["M"] == "login rejected"
        with pytest.raises(psycopg.Error, match="SET failed"):
            admin.execute(f"SET auth_hba_file = '{b.workdir}/bad.conf'")
        rows = admin.execute("SHOW CONFIG").fetchall()
        assert [r[1] for r in rows if r[0] == "auth_hba_file"] == [f"{b.workdir}/hba.conf"]
    assert 'bad.conf:1: unsupported authentication method "ident"' in b.log()
    assert login(b, "mallory", "app", "x")[1]["M"] == "login rejected"
    assert login(b, "app", "app", "secret")[1] is None


def test_replication_lines_and_replication_connections(bouncer_factory):
    """A replication connection is refused at its startup packet, with the message of pgbouncer
    releases without replication support, before any hba line is read; a `replication` line
    therefore never lets anyone in, and `all` does not stand for it (as in PostgreSQL)."""
    b = hba_bouncer(bouncer_factory, "host replication app 127.0.0.1/32 trust\n"
                                     "host all all 127.0.0.1/32 md5\n")
    for mode in ("true", "database"):
        w = pgwire.WireClient("127.0.0.1", b.port)
        err = w.startup("app", "app", replication=mode)
        w.close()
        assert err["M"] == "unsupported startup parameter: replication", err
        assert w.auth_requests == []
    # an ordinary login skips the replication line
    assert login(b, "app", "app", "secret") == ([pgwire.AUTH_MD5, pgwire.AUTH_OK], None)
