"""SCRAM secrets in the auth_file: clients log in against the secret PostgreSQL stores, and the
pooler logs its servers in with the keys recovered from the client's proof (it never knows the
password)."""

import base64
import hashlib
import hmac
import os
import struct
import time

import psycopg
import pytest

import pgwire


def stored_secret(pg, role):
    return pg.sql(f"select rolpassword from pg_authid where rolname = '{role}'")[0][0]


def scram_backends(pg, role):
    return pg.sql(f"select count(*) from pg_stat_activity where usename = '{role}'")[0][0]


@pytest.fixture
def scram_bouncer(bouncer_factory, pg):
    def make(auth_type, **pgb):
        users = {"scramuser": stored_secret(pg, "scramuser"), "app": "secret",
                 "postgres": "postgres"}
        return bouncer_factory(config={"pgbouncer": {"auth_type": auth_type, **pgb}},
                               users=users)
    return make


@pytest.mark.parametrize("auth_type", ["scram-sha-256", "md5"])
def test_scram_secret_logs_client_and_server_in(scram_bouncer, pg, auth_type):
    """The userlist holds only the secret from pg_authid: the server login can only have used
    the client's proof. With auth_type=md5 a SCRAM secret asks the client for SCRAM."""
    assert stored_secret(pg, "scramuser").startswith("SCRAM-SHA-256$")
    b = scram_bouncer(auth_type)
    w = b.wire()
    assert w.startup("scramuser", "app", "scrampass") is None
    assert w.auth_requests == [pgwire.AUTH_SASL, pgwire.AUTH_SASL_CONTINUE,
                               pgwire.AUTH_SASL_FINAL, pgwire.AUTH_OK]
    w.query("select current_user, current_database()")
    assert w.read_until_ready() == ([["scramuser", "app"]], None)
    w.close()
    with b.connect(user="scramuser", password="scrampass") as conn:
        assert conn.execute("select current_user").fetchone() == ("scramuser",)


def test_wrong_password_against_scram_secret(scram_bouncer):
    b = scram_bouncer("scram-sha-256")
    w = b.wire()
    err = w.startup("scramuser", "app", "not-the-password")
    w.close()
    assert w.auth_requests == [pgwire.AUTH_SASL, pgwire.AUTH_SASL_CONTINUE]
    assert (err["S"], err["M"]) == ("FATAL", "SASL authentication failed")
    with pytest.raises(psycopg.OperationalError, match="SASL authentication failed"):
        b.connect(user="scramuser", password="nope")


def test_md5_answer_to_a_scram_secret_fails(scram_bouncer):
    """A client that answers the SASL request with an md5 password message (a client that can
    only do md5) is refused: a SCRAM secret cannot check md5."""
    b = scram_bouncer("md5")
    w = b.wire()
    body = struct.pack("!I", 196608) + b"user\0scramuser\0database\0app\0\0"
    w.sock.sendall(struct.pack("!I", len(body) + 4) + body)
    kind, msg = w.read_msg()
    assert kind == "R" and struct.unpack("!I", msg[:4])[0] == pgwire.AUTH_SASL
    w.send(b"p", b"md5" + b"0" * 32 + b"\0")
    kind, msg = w.read_msg()
    w.close()
    assert kind == "E"
    err = pgwire.parse_error_fields(msg)
    assert (err["S"], err["M"]) == ("FATAL",
                                    "client selected an invalid SASL authentication mechanism")


def test_cleartext_login_against_scram_secret(scram_bouncer, pg):
    """auth_type=plain checks the password against the secret; the client then gave no SCRAM
    proof, so the server login has no keys: pgbouncer's 'wrong password type'."""
    b = scram_bouncer("plain")
    w = b.wire()
    err = w.startup("scramuser", "app", "wrong")
    w.close()
    assert err["M"] == "password authentication failed"
    w = b.wire()
    err = w.startup("scramuser", "app", "scrampass")
    w.close()
    assert w.auth_requests[0] == pgwire.AUTH_CLEARTEXT
    assert err is not None and err["M"] == "server login failed: wrong password type"
    assert "wrong password type" in b.log()


def reload(b):
    admin = b.connect(dbname="pgbouncer", user="postgres", password="postgres",
                      autocommit=True)
    admin.execute("RELOAD")
    admin.close()


def test_scram_keys_survive_the_client(scram_bouncer, pg):
    """The keys a SCRAM login recovers stay with the pool: after that client is gone and its
    server closed, a client that logs in by trust (no proof at all) still gets a server."""
    b = scram_bouncer("scram-sha-256")
    with b.connect(user="scramuser", password="scrampass") as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    pg.sql("select pg_terminate_backend(pid) from pg_stat_activity where usename = 'scramuser'")
    deadline = time.monotonic() + 20
    while scram_backends(pg, "scramuser") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert scram_backends(pg, "scramuser") == 0
    with open(b.ini) as f:
        ini = f.read()
    with open(b.ini, "w") as f:
        f.write(ini.replace("auth_type = scram-sha-256", "auth_type = trust"))
    reload(b)
    with b.connect(user="scramuser", password=None) as conn:
        assert conn.execute("select current_user").fetchone() == ("scramuser",)
    assert "wrong password type" not in b.log()


def test_no_scram_keys_without_a_scram_login(scram_bouncer):
    """The same trust login with no SCRAM login before it: nothing can answer the server."""
    b = scram_bouncer("trust")
    with pytest.raises(psycopg.OperationalError, match="wrong password type"):
        with b.connect(user="scramuser", password=None) as conn:
            conn.execute("select 1")


def test_md5_secret_cannot_log_into_a_scram_server(bouncer_factory, pg):
    """A user whose secret is md5 cannot answer a server that asks for SCRAM."""
    md5 = "md5" + hashlib.md5(b"scrampassscramuser").hexdigest()
    b = bouncer_factory(config={"pgbouncer": {"auth_type": "md5"}},
                        users={"scramuser": md5})
    w = b.wire()
    err = w.startup("scramuser", "app", "scrampass")
    w.close()
    assert err is not None and err["M"] == "server login failed: wrong password type"
    assert "cannot do SCRAM authentication: wrong password type" in b.log()


def scram_secret(password, salt, iterations=4096):
    """The secret PostgreSQL stores for password with this salt and iteration count."""
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(raw):
        return base64.b64encode(raw).decode()
    return (f"SCRAM-SHA-256${iterations}:{b64(salt)}$"
            f"{b64(hashlib.sha256(client_key).digest())}:{b64(server_key)}")


def test_plain_password_changed_and_reloaded(bouncer_factory, pg):
    """A plain password in the auth_file, SCRAM toward the client and toward PostgreSQL. The
    keys both exchanges derive from it are kept between log-ins; once the password changes
    (PostgreSQL's secret keeps its salt and iteration count, the auth_file gets the new
    password, RELOAD), the old password fails and the new one logs in, the pooler logging a new
    server in with it: nothing derived from the old password answers on either side."""
    salt = os.urandom(16)
    pg.sql(f"CREATE ROLE scramrot LOGIN PASSWORD '{scram_secret('rot-one', salt)}'")
    try:
        b = bouncer_factory(config={"pgbouncer": {"auth_type": "scram-sha-256"}},
                            users={"scramrot": "rot-one", "postgres": "postgres"})
        admin = b.connect(dbname="pgbouncer", user="postgres", password="postgres",
                          autocommit=True)

        def login(password):
            """A log-in and a query on a server logged in for it; the server's pid."""
            with b.connect(user="scramrot", password=password) as conn:
                pid, who = conn.execute("select pg_backend_pid(), current_user").fetchone()
            assert who == "scramrot"
            admin.execute("RECONNECT app")  # the next client gets a new server login
            return pid

        # the second log-in of each side takes the keys the first derived
        assert login("rot-one") != login("rot-one")
        pg.sql(f"ALTER ROLE scramrot PASSWORD '{scram_secret('rot-two', salt)}'")
        with open(b.userlist, "w") as f:
            f.write('"scramrot" "rot-two"\n"postgres" "postgres"\n')
        # the same size within the same second: a pooler that compares the file's mtime (as
        # pgbouncer does) must see it changed
        st = os.stat(b.userlist)
        os.utime(b.userlist, (st.st_atime, st.st_mtime + 10))
        admin.execute("RELOAD")
        with pytest.raises(psycopg.OperationalError, match="authentication failed"):
            b.connect(user="scramrot", password="rot-one")
        login("rot-two")
        admin.close()
    finally:
        pg.sql("select pg_terminate_backend(pid) from pg_stat_activity "
               "where usename = 'scramrot'")
        deadline = time.monotonic() + 20
        while scram_backends(pg, "scramrot") and time.monotonic() < deadline:
            time.sleep(0.05)
        pg.sql("DROP ROLE scramrot")
