"""TLS toward clients and toward servers, as pgbouncer does it.

The suite makes its own certificates with the `openssl` CLI: two CAs, a certificate for the
pooler (SAN localhost and 127.0.0.1) and for PostgreSQL (SAN localhost only, so that verify-full
can be seen to check the name), and client certificates. A PostgreSQL cluster of this module's
own runs with ssl = on (the shared one stays without TLS). Clients are psql and psycopg
(libpq); the raw-socket tests speak the protocol through pgwire over Python's ssl module.
"""

import gc
import hashlib
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import time

import psycopg
import pytest

from conftest import IS_PGBOUNCER, Postgres, make_tempdir, run_psql
from test_reload import admin, rewrite

pgwire = pytest.importorskip("pgwire")


# ---------------------------------------------------------------- certificates


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(d, name, cn):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "3650",
            "-subj", f"/CN={cn}", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


def make_leaf(d, name, ca, cn, san=None, usage="serverAuth", rsa=False):
    ext = os.path.join(d, f"{name}.ext")
    with open(ext, "w") as f:
        f.write("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n")
        f.write(f"extendedKeyUsage={usage}\n")
        if san:
            f.write(f"subjectAltName={san}\n")
    key = ("rsa:2048",) if rsa else ("ec", "-pkeyopt", "ec_paramgen_curve:prime256v1")
    openssl("req", "-new", "-newkey", *key, "-nodes", "-keyout", f"{name}.key", "-out",
            f"{name}.csr", "-subj", f"/CN={cn}", cwd=d)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-out", f"{name}.crt", "-days", "365", "-extfile", ext, cwd=d)
    os.chmod(os.path.join(d, f"{name}.key"), 0o600)


class Certs:
    def __init__(self, d):
        self.dir = d

    def __getattr__(self, name):
        # certs.ca1_crt -> <dir>/ca1.crt
        base, _, ext = name.rpartition("_")
        if ext not in ("crt", "key"):
            raise AttributeError(name)
        return os.path.join(self.dir, f"{base}.{ext}")


@pytest.fixture(scope="session")
def certs():
    d = make_tempdir("sb-certs-")
    os.chmod(d, 0o755)
    make_ca(d, "ca1", "syncbouncer test CA 1")
    make_ca(d, "ca2", "syncbouncer test CA 2")
    make_leaf(d, "pooler", "ca1", "localhost", "DNS:localhost,IP:127.0.0.1")
    make_leaf(d, "pooler2", "ca2", "localhost", "DNS:localhost,IP:127.0.0.1")
    # DHE needs an RSA key
    make_leaf(d, "poolerrsa", "ca1", "localhost", "DNS:localhost,IP:127.0.0.1", rsa=True)
    make_leaf(d, "pg", "ca1", "localhost", "DNS:localhost")
    make_leaf(d, "app1", "ca1", "app", usage="clientAuth")
    make_leaf(d, "app2", "ca2", "app", usage="clientAuth")
    make_leaf(d, "other1", "ca1", "postgres", usage="clientAuth")
    make_leaf(d, "certuser1", "ca1", "certuser", usage="clientAuth")
    yield Certs(d)
    if not os.environ.get("SB_KEEP_TMP"):
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def pg_ssl(certs):
    """A PostgreSQL of this module's own with ssl = on; certuser logs in by certificate."""
    base = make_tempdir("sb-pgssl-")
    server = Postgres(base)
    server.start()
    try:
        with open(os.path.join(server.datadir, "postgresql.conf"), "a") as f:
            f.write(f"ssl = on\nssl_cert_file = '{certs.pg_crt}'\n"
                    f"ssl_key_file = '{certs.pg_key}'\nssl_ca_file = '{certs.ca1_crt}'\n")
        hba = os.path.join(server.datadir, "pg_hba.conf")
        with open(hba) as f:
            rules = f.read()
        with open(hba, "w") as f:
            f.write("hostssl all certuser 127.0.0.1/32 cert\n" + rules)
        server.sql("CREATE ROLE certuser LOGIN")
        server.sql("SELECT pg_reload_conf()")
        deadline = time.monotonic() + 20
        while server.sql("SHOW ssl")[0][0] != "on":
            assert time.monotonic() < deadline, "ssl did not come on"
            time.sleep(0.1)
        yield server
    finally:
        server.stop()
        if not os.environ.get("SB_KEEP_TMP"):
            shutil.rmtree(base, ignore_errors=True)


def client_tls(certs, mode="require", **extra):
    cfg = {"client_tls_sslmode": mode, "client_tls_key_file": certs.pooler_key,
           "client_tls_cert_file": certs.pooler_crt}
    cfg.update(extra)
    return cfg


def ssl_in_use(conn):
    return bool(conn.pgconn.ssl_in_use)


def wait_for(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def still_serves(b):
    with b.connect(sslmode="prefer") as c:
        assert c.execute("select 1").fetchone() == (1,)


# ---------------------------------------------------------------- toward clients


@pytest.mark.timeout(60)
@pytest.mark.parametrize("client_mode",
                         ["allow", "prefer", "require", "verify-ca", "verify-full"])
def test_client_sslmodes_against_require(bouncer_factory, certs, client_mode):
    # every libpq sslmode but disable ends up encrypted (allow after a refused plain try)
    b = bouncer_factory(config={"pgbouncer": client_tls(certs, "require")})
    with b.connect(sslmode=client_mode, sslrootcert=certs.ca1_crt) as c:
        assert c.execute("select current_user").fetchone() == ("app",)
        assert ssl_in_use(c)
    with b.connect(sslmode=client_mode, sslrootcert=certs.ca1_crt) as c:
        # SHOW CLIENTS names the protocol of the encrypted connection
        with admin(b) as a:
            cur = a.execute("SHOW CLIENTS")
            rows = cur.fetchall()
            cols = [d.name for d in cur.description]
            tls_col = cols.index("tls")
            mine = [r for r in rows if r[1] == "app"]
            assert mine and all(r[tls_col].startswith("TLSv1.") for r in mine)


@pytest.mark.timeout(60)
def test_require_refuses_a_plaintext_client(bouncer_factory, certs):
    b = bouncer_factory(config={"pgbouncer": client_tls(certs, "require")})
    with pytest.raises(psycopg.OperationalError) as ei:
        b.connect(sslmode="disable")
    assert "SSL required" in str(ei.value)
    # psql, with verify-full against the suite's CA, by name and by address
    for host in ("localhost", "127.0.0.1"):
        res = run_psql(host, b.port, "-Atc", "select 7",
                       dbname=f"dbname=app sslmode=verify-full sslrootcert={certs.ca1_crt}")
        assert res.stdout.strip() == "7"


@pytest.mark.timeout(60)
def test_require_spares_unix_socket_clients_and_logs_the_tls(bouncer_factory, certs):
    b = bouncer_factory(config={"pgbouncer": client_tls(certs, "require",
                                                        unix_socket_dir="@WORKDIR@")})
    # as pgbouncer: TLS is required over TCP only
    with b.connect(host=b.workdir, sslmode="disable") as c:
        assert c.execute("select 1").fetchone() == (1,)
    with b.connect(sslmode="require") as c:
        c.execute("select 1")
    assert re.search(r"login attempt: db=app user=app tls=TLSv1\.[23]/\S+", b.log()), b.log()
    assert "login attempt: db=app user=app tls=no" in b.log()


@pytest.mark.timeout(60)
def test_verify_full_fails_against_another_ca(bouncer_factory, certs):
    b = bouncer_factory(config={"pgbouncer": client_tls(certs, "require")})
    with pytest.raises(psycopg.OperationalError) as ei:
        b.connect(sslmode="verify-full", sslrootcert=certs.ca2_crt)
    assert "certificate verify failed" in str(ei.value)
    still_serves(b)


@pytest.mark.timeout(60)
def test_prefer_takes_both_kinds_of_client(bouncer_factory, certs):
    b = bouncer_factory(config={"pgbouncer": client_tls(certs, "prefer")})
    with b.connect(sslmode="disable") as plain, b.connect(sslmode="require") as enc:
        assert not ssl_in_use(plain)
        assert ssl_in_use(enc)
        assert plain.execute("select 1").fetchone() == enc.execute("select 1").fetchone()


@pytest.mark.timeout(60)
def test_disable_answers_no_to_ssl_requests(bouncer_factory, certs):
    b = bouncer_factory(config={"pgbouncer": client_tls(certs, "disable")})
    with b.connect(sslmode="prefer") as c:
        assert not ssl_in_use(c)
    with pytest.raises(psycopg.OperationalError) as ei:
        b.connect(sslmode="require")
    assert "does not support SSL" in str(ei.value)
    # after 'N' the pooler waits for the client's startup packet, as PostgreSQL does: the
    # refused libpq connection is closed by freeing it
    del ei
    gc.collect()


@pytest.mark.timeout(60)
def test_verify_ca_demands_a_client_certificate_of_its_ca(bouncer_factory, certs):
    b = bouncer_factory(config={"pgbouncer": client_tls(
        certs, "verify-ca", client_tls_ca_file=certs.ca1_crt)})
    with b.connect(sslmode="require", sslcert=certs.app1_crt, sslkey=certs.app1_key) as c:
        assert c.execute("select 1").fetchone() == (1,)
    # no certificate, or one from the other CA: the handshake fails
    with pytest.raises(psycopg.OperationalError):
        b.connect(sslmode="require", sslcert="/nonexistent", sslkey="/nonexistent")
    with pytest.raises(psycopg.OperationalError):
        b.connect(sslmode="require", sslcert=certs.app2_crt, sslkey=certs.app2_key)
    with b.connect(sslmode="require", sslcert=certs.app1_crt, sslkey=certs.app1_key) as c:
        assert c.execute("select 2").fetchone() == (2,)


@pytest.mark.timeout(60)
def test_ca_file_asks_for_a_certificate_below_verify_ca(bouncer_factory, certs):
    """With client_tls_ca_file and sslmode require, pgbouncer (libusual's optional client
    verification) asks every client for a certificate without demanding one, and a certificate
    that does not verify fails the handshake: the same here."""
    b = bouncer_factory(config={"pgbouncer": client_tls(
        certs, "require", client_tls_ca_file=certs.ca1_crt)})
    res = subprocess.run(["openssl", "s_client", "-starttls", "postgres", "-connect",
                          f"{b.host}:{b.port}"], stdin=subprocess.DEVNULL, capture_output=True,
                         text=True, timeout=30)
    # s_client prints the signature algorithms of a CertificateRequest only when it got one
    assert "Requested Signature Algorithms" in res.stdout, res.stdout
    with b.connect(sslmode="require") as c:
        assert ssl_in_use(c)
    with b.connect(sslmode="require", sslcert=certs.app1_crt, sslkey=certs.app1_key) as c:
        assert ssl_in_use(c)
    with pytest.raises(psycopg.OperationalError):
        b.connect(sslmode="require", sslcert=certs.app2_crt, sslkey=certs.app2_key)


@pytest.mark.timeout(60)
def test_auth_type_cert_takes_the_user_from_the_certificate(bouncer_factory, certs):
    b = bouncer_factory(config={"pgbouncer": client_tls(
        certs, "verify-full", client_tls_ca_file=certs.ca1_crt, auth_type="cert")})
    # the certificate's CN is app, and no password is asked for (the server login uses the
    # userlist's password)
    with b.connect(sslmode="require", password=None, sslcert=certs.app1_crt,
                   sslkey=certs.app1_key) as c:
        assert c.execute("select current_user").fetchone() == ("app",)
    # a good certificate of another name: refused, the reason in the log only
    with pytest.raises(psycopg.OperationalError) as ei:
        b.connect(user="app", password=None, sslmode="require", sslcert=certs.other1_crt,
                  sslkey=certs.other1_key)
    assert "certificate authentication failed" in str(ei.value)
    assert "TLS certificate name mismatch" in b.log()
    # without a certificate the handshake itself fails
    with pytest.raises(psycopg.OperationalError):
        b.connect(password=None, sslmode="require", sslcert="/nonexistent",
                  sslkey="/nonexistent")
    # and without TLS there is no login at all
    with pytest.raises(psycopg.OperationalError) as ei:
        b.connect(password=None, sslmode="disable")
    assert "SSL required" in str(ei.value)


@pytest.mark.timeout(60)
def test_auth_type_cert_needs_verify_full(bouncer_factory, certs):
    b = bouncer_factory(config={"pgbouncer": client_tls(
        certs, "require", client_tls_ca_file=certs.ca1_crt, auth_type="cert")}, start=False)
    res = subprocess.run(b.command(), capture_output=True, text=True, timeout=30)
    assert res.returncode != 0
    assert "auth_type=cert requires client_tls_sslmode" in res.stdout + res.stderr + b.output()


@pytest.mark.timeout(90)
def test_reload_changes_the_client_ca(bouncer_factory, certs):
    b = bouncer_factory(config={"pgbouncer": client_tls(
        certs, "verify-ca", client_tls_ca_file=certs.ca1_crt)})
    with b.connect(sslmode="require", sslcert=certs.app1_crt, sslkey=certs.app1_key) as c:
        rewrite(b.ini, f"client_tls_ca_file = {certs.ca1_crt}",
                f"client_tls_ca_file = {certs.ca2_crt}")
        with admin_cert(b, certs, "app1") as a:
            a.execute("RELOAD")
        # the connection made under the old CA goes on
        assert c.execute("select 1").fetchone() == (1,)
    with pytest.raises(psycopg.OperationalError):
        b.connect(sslmode="require", sslcert=certs.app1_crt, sslkey=certs.app1_key)
    with b.connect(sslmode="require", sslcert=certs.app2_crt, sslkey=certs.app2_key) as c:
        assert c.execute("select 1").fetchone() == (1,)


def admin_cert(b, certs, name):
    return b.connect(dbname="pgbouncer", user="postgres", password="postgres", autocommit=True,
                     prepare_threshold=None, sslmode="require",
                     sslcert=getattr(certs, f"{name}_crt"), sslkey=getattr(certs, f"{name}_key"))


@pytest.mark.timeout(90)
def test_reload_turns_client_tls_on_and_off(bouncer_factory, certs):
    b = bouncer_factory(config={"pgbouncer": client_tls(certs, "disable")})
    with pytest.raises(psycopg.OperationalError):
        b.connect(sslmode="require")
    rewrite(b.ini, "client_tls_sslmode = disable", "client_tls_sslmode = require")
    b.proc.send_signal(signal.SIGHUP)

    def tls_works():
        try:
            with b.connect(sslmode="require") as c:
                return ssl_in_use(c)
        except psycopg.OperationalError:
            return False

    wait_for(tls_works)
    with pytest.raises(psycopg.OperationalError) as ei:
        b.connect(sslmode="disable")
    assert "SSL required" in str(ei.value)
    rewrite(b.ini, "client_tls_sslmode = require", "client_tls_sslmode = disable")
    with admin_tls(b) as a:
        a.execute("RELOAD")
    with b.connect(sslmode="prefer") as c:
        assert not ssl_in_use(c)


def admin_tls(b):
    return b.connect(dbname="pgbouncer", user="postgres", password="postgres", autocommit=True,
                     prepare_threshold=None, sslmode="prefer")


@pytest.mark.skipif(IS_PGBOUNCER, reason="pgbouncer 1.18 does not refuse the reload")
@pytest.mark.timeout(90)
def test_reload_with_a_broken_certificate_keeps_the_old_context(bouncer_factory, certs):
    b = bouncer_factory(config={"pgbouncer": client_tls(certs, "require")})
    broken = os.path.join(b.workdir, "broken.crt")
    with open(broken, "w") as f:
        f.write("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    rewrite(b.ini, f"client_tls_cert_file = {certs.pooler_crt}",
            f"client_tls_cert_file = {broken}")
    with admin_tls(b) as a:
        with pytest.raises(psycopg.Error) as ei:
            a.execute("RELOAD")
        assert ei.value.diag.message_primary == "RELOAD failed, see logs for additional details"
        # SET that would break it is refused the same way, with the reason
        with pytest.raises(psycopg.Error) as ei:
            a.execute(f"SET client_tls_cert_file = '{broken}'")
        assert "could not load certificate file" in str(ei.value)
        cfg = dict((r[0], r[1]) for r in a.execute("SHOW CONFIG").fetchall())
        assert cfg["client_tls_cert_file"] == certs.pooler_crt
    assert "could not load certificate file" in b.log()
    assert broken in b.log()
    # the old certificate still serves, verified against its CA
    with b.connect(sslmode="verify-full", sslrootcert=certs.ca1_crt) as c:
        assert c.execute("select 1").fetchone() == (1,)
    # a key that does not belong to the certificate is refused too
    with admin_tls(b) as a:
        with pytest.raises(psycopg.Error) as ei:
            a.execute(f"SET client_tls_key_file = '{certs.pooler2_key}'")
        assert "does not match" in str(ei.value)
    with b.connect(sslmode="verify-full", sslrootcert=certs.ca1_crt) as c:
        assert c.execute("select 2").fetchone() == (2,)


@pytest.mark.skipif(IS_PGBOUNCER, reason="pgbouncer 1.18 does not refuse the reload")
@pytest.mark.timeout(60)
def test_a_reload_refused_for_another_file_leaves_tls_as_it_was(bouncer_factory, certs):
    b = bouncer_factory(config={"pgbouncer": client_tls(certs, "disable")})
    # TLS that would work, with an hba file that does not exist: the whole RELOAD is refused
    rewrite(b.ini, "client_tls_sslmode = disable", "client_tls_sslmode = require")
    rewrite(b.ini, "auth_type = md5",
            f"auth_type = hba\nauth_hba_file = {b.workdir}/no-such-hba.conf")
    with admin_tls(b) as a:
        with pytest.raises(psycopg.Error, match="RELOAD failed"):
            a.execute("RELOAD")
        cfg = dict((r[0], r[1]) for r in a.execute("SHOW CONFIG").fetchall())
        assert cfg["client_tls_sslmode"] == "disable"
    with pytest.raises(psycopg.OperationalError, match="does not support SSL"):
        b.connect(sslmode="require")
    with b.connect(sslmode="disable") as c:
        assert c.execute("select 1").fetchone() == (1,)


@pytest.mark.skipif(IS_PGBOUNCER, reason="pgbouncer 1.18 loads a key file anyone can read")
@pytest.mark.timeout(60)
def test_a_readable_private_key_is_refused(bouncer_factory, certs):
    b = bouncer_factory(config={"pgbouncer": client_tls(certs, "require")}, start=False)
    key = os.path.join(b.workdir, "open.key")
    shutil.copy(certs.pooler_key, key)
    os.chmod(key, 0o644)
    rewrite(b.ini, f"client_tls_key_file = {certs.pooler_key}", f"client_tls_key_file = {key}")
    res = subprocess.run(b.command(), capture_output=True, text=True, timeout=30)
    out = res.stdout + res.stderr + b.output()
    assert res.returncode != 0
    assert f'private key file "{key}" has group or world access' in out
    # the key's contents never reach the log
    with open(key) as f:
        body = f.read().splitlines()[1]
    assert body not in out
    # 0600 works
    os.chmod(key, 0o600)
    b.start()
    with b.connect(sslmode="require") as c:
        assert ssl_in_use(c)


def client_tls_column(b):
    with admin(b) as a:
        cur = a.execute("SHOW CLIENTS")
        cols = [d.name for d in cur.description]
        return [r[cols.index("tls")] for r in cur.fetchall() if r[1] == "app"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("settings,want", [
    ({"client_tls_protocols": "tlsv1.2"}, "TLSv1.2/"),
    ({"client_tls_protocols": "tlsv1.2", "client_tls_ciphers": "ECDHE-ECDSA-AES128-GCM-SHA256"},
     "TLSv1.2/ECDHE-ECDSA-AES128-GCM-SHA256"),
    pytest.param({"client_tls13_ciphers": "TLS_CHACHA20_POLY1305_SHA256"},
                 "TLSv1.3/TLS_CHACHA20_POLY1305_SHA256",
                 marks=pytest.mark.skipif(IS_PGBOUNCER,
                                          reason="pgbouncer 1.18 has no client_tls13_ciphers")),
    ({"client_tls_dheparams": "none"}, "TLSv1.3/"),
])
def test_client_tls_settings_shape_the_connection(bouncer_factory, certs, settings, want):
    b = bouncer_factory(config={"pgbouncer": client_tls(certs, "require", **settings)})
    with b.connect(sslmode="require") as c:
        c.execute("select 1")
        assert any(want in t for t in client_tls_column(b)), client_tls_column(b)


def s_client(b, *args):
    """openssl s_client through the SSLRequest preamble; (handshake done, output)."""
    res = subprocess.run(["openssl", "s_client", "-starttls", "postgres", "-connect",
                          f"{b.host}:{b.port}", "-brief", *args],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    out = res.stdout + res.stderr
    return "CONNECTION ESTABLISHED" in out, out


@pytest.mark.timeout(60)
def test_client_tls_ecdhcurve_picks_the_group(bouncer_factory, certs):
    b = bouncer_factory(config={"pgbouncer": client_tls(
        certs, "require", client_tls_ecdhcurve="secp384r1")})
    ok, out = s_client(b, "-groups", "secp384r1:X25519")
    assert ok and "secp384r1" in out, out
    ok, out = s_client(b, "-groups", "X25519")
    assert not ok, out
    still_serves(b)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("dh", [
    "auto",
    pytest.param("legacy", marks=pytest.mark.skipif(
        IS_PGBOUNCER, reason="pgbouncer 1.18's legacy is a fixed 1024-bit group that OpenSSL "
        "3's default security level refuses (dh key too small); 1.25 asks OpenSSL for legacy "
        "parameters (dh_auto 2), which it raises to the security level's minimum")),
    "none",
])
def test_client_tls_dheparams(bouncer_factory, certs, dh):
    """A TLS 1.2 client that offers only DHE: auto gives it 2048-bit parameters (RSA 2048 key);
    legacy, as pgbouncer 1.25, asks OpenSSL for 1024-bit ones, which OpenSSL raises to its
    security level's minimum (2048 at Debian's level 2); none offers no DHE. Clients of TLS 1.3
    are served in every case."""
    b = bouncer_factory(config={"pgbouncer": client_tls(
        certs, "require", client_tls_dheparams=dh, client_tls_key_file=certs.poolerrsa_key,
        client_tls_cert_file=certs.poolerrsa_crt)})
    ok, out = s_client(b, "-tls1_2", "-cipher", "DHE-RSA-AES128-GCM-SHA256")
    if dh == "auto":
        assert ok and "DH, 2048 bits" in out, out
    elif dh == "legacy":
        assert ok and re.search(r"Server Temp Key: DH, (1024|2048) bits", out), out
    else:
        assert not ok, out
    with b.connect(sslmode="require") as c:
        assert ssl_in_use(c)


@pytest.mark.timeout(60)
def test_client_tls_ecdhcurve_none_keeps_the_defaults(bouncer_factory, certs):
    """pgbouncer's none sets no curve, which leaves OpenSSL's default groups: ECDHE still works,
    and a configuration written for pgbouncer behaves the same here."""
    b = bouncer_factory(config={"pgbouncer": client_tls(
        certs, "require", client_tls_ecdhcurve="none", client_tls_dheparams="none")})
    ok, out = s_client(b, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256")
    assert ok and "ECDHE-ECDSA-AES128-GCM-SHA256" in out, out


@pytest.mark.timeout(60)
def test_client_renegotiation_is_refused(bouncer_factory, certs):
    b = bouncer_factory(config={"pgbouncer": client_tls(certs, "require")})
    # s_client's "R" line asks for a TLS 1.2 renegotiation
    res = subprocess.run(["openssl", "s_client", "-starttls", "postgres", "-tls1_2",
                          "-connect", f"{b.host}:{b.port}"], input="R\n",
                         capture_output=True, text=True, timeout=30)
    out = res.stdout + res.stderr
    assert "RENEGOTIATING" in out, out
    assert "no renegotiation" in out, out
    still_serves(b)
    assert b.proc.poll() is None


@pytest.mark.timeout(60)
def test_client_tls_protocols_refuse_older_clients(bouncer_factory, certs):
    b = bouncer_factory(config={"pgbouncer": client_tls(
        certs, "require", client_tls_protocols="tlsv1.3")})
    with pytest.raises(psycopg.OperationalError):
        b.connect(sslmode="require", ssl_max_protocol_version="TLSv1.2")
    with b.connect(sslmode="require") as c:
        assert ssl_in_use(c)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("key,value", [
    ("client_tls_protocols", "tlsv9"),
    ("client_tls_ciphers", "NO-SUCH-CIPHER"),
    ("client_tls_ecdhcurve", "no-such-curve"),
    ("client_tls_cert_file", "/nonexistent/pooler.crt"),
])
def test_unusable_client_tls_settings_stop_the_start(bouncer_factory, certs, key, value):
    b = bouncer_factory(config={"pgbouncer": client_tls(certs, "require", **{key: value})},
                        start=False)
    res = subprocess.run(b.command(), capture_output=True, text=True, timeout=30)
    out = res.stdout + res.stderr + b.output()
    assert res.returncode != 0
    if not IS_PGBOUNCER:
        # the reason names the setting and the value
        assert key in out and value in out, out


def raw(b):
    s = socket.create_connection((b.host, b.port), timeout=10)
    return s


def closed_by_peer(s):
    """True once the pooler has closed the connection (EOF or reset), within the timeout."""
    try:
        while True:
            data = s.recv(4096)
            if not data:
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


@pytest.mark.timeout(60)
def test_garbage_instead_of_a_client_hello_closes_cleanly(bouncer_factory, certs):
    b = bouncer_factory(config={"pgbouncer": client_tls(certs, "require")})
    ssl_request = struct.pack("!II", 8, 80877103)
    garbage = [
        b"\x00" * 64,
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x16\x03\x01\xff\xff" + bytes(range(256)),
        b"\x16\x03\x03\x00\x10" + b"\xff" * 16,
        bytes(range(255, -1, -1)) * 8,
    ]
    for junk in garbage:
        s = raw(b)
        s.sendall(ssl_request)
        assert s.recv(1) == b"S"
        s.sendall(junk)
        # some junk reads as the start of a long record: once the client has nothing more
        # to say, the pooler must close too
        try:
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # already reset by the pooler
        if not IS_PGBOUNCER:
            # pgbouncer 1.18 keeps such a connection until client_login_timeout
            assert closed_by_peer(s), junk[:8]
        s.close()
    # a half handshake, then the client goes away
    s = raw(b)
    s.sendall(ssl_request)
    assert s.recv(1) == b"S"
    s.sendall(b"\x16\x03\x01\x00\x05\x01")
    s.close()
    still_serves(b)
    assert b.proc.poll() is None


@pytest.mark.timeout(60)
def test_bytes_after_the_ssl_request_are_refused(bouncer_factory, certs):
    b = bouncer_factory(config={"pgbouncer": client_tls(certs, "require")})
    s = raw(b)
    # an SSLRequest with a plaintext startup packet in the same segment: the answer must not
    # let those bytes pass as if they had come through TLS
    startup = struct.pack("!I", 196608) + b"user\0app\0database\0app\0\0"
    s.sendall(struct.pack("!II", 8, 80877103) + struct.pack("!I", len(startup) + 4) + startup)
    data = b""
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except (ConnectionResetError, socket.timeout):
        pass
    s.close()
    # never an authentication request: the plaintext startup packet was not taken
    assert b"R\x00\x00\x00" not in data
    still_serves(b)


def direct_tls_client(b, alpn):
    ctx = ssl.create_default_context(cafile=None)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    w = pgwire.WireClient(b.host, b.port)
    w.sock = ctx.wrap_socket(w.sock, server_hostname="localhost")
    return w


@pytest.mark.skipif(IS_PGBOUNCER, reason="direct SSL (PostgreSQL 17) is newer than pgbouncer 1.18")
@pytest.mark.timeout(60)
def test_direct_ssl_with_alpn_postgresql(bouncer_factory, certs):
    b = bouncer_factory(config={"pgbouncer": client_tls(certs, "require")})
    w = direct_tls_client(b, ["postgresql"])
    try:
        assert w.sock.selected_alpn_protocol() == "postgresql"
        assert w.startup("app", "app", password="secret") is None
        w.query("select 40 + 2")
        rows, err = w.read_until_ready()
        assert err is None and rows == [["42"]]
    finally:
        w.close()
    # no ALPN, or another protocol: refused, as PostgreSQL 17 refuses them
    with pytest.raises((ssl.SSLError, pgwire.WireError, OSError)):
        w = direct_tls_client(b, ["http/1.1"])
        w.startup("app", "app", password="secret")
    with pytest.raises((ssl.SSLError, pgwire.WireError, OSError)):
        w = direct_tls_client(b, None)
        w.startup("app", "app", password="secret")
    still_serves(b)


# ---------------------------------------------------------------- toward servers


def server_ssl(conn):
    return conn.execute(
        "select ssl, version from pg_stat_ssl where pid = pg_backend_pid()").fetchone()


def tls_db(pg, host="127.0.0.1", extra=""):
    return {"app": f"host={host} port={pg.port} dbname=app {extra}".strip(),
            "crm": f"host={host} port={pg.port} dbname=crm"}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("mode,host,tls", [
    ("disable", "127.0.0.1", False),
    ("allow", "127.0.0.1", True),
    ("prefer", "127.0.0.1", True),
    ("require", "127.0.0.1", True),
    ("verify-ca", "127.0.0.1", True),
    ("verify-full", "localhost", True),
])
def test_server_sslmodes(bouncer_factory, pg_ssl, certs, mode, host, tls):
    b = bouncer_factory(config={
        "databases": tls_db(pg_ssl, host),
        "pgbouncer": {"server_tls_sslmode": mode, "server_tls_ca_file": certs.ca1_crt}})
    with b.connect() as c:
        ssl_on, version = server_ssl(c)
        assert ssl_on is tls
        if tls:
            assert version.startswith("TLSv1.")
        # SHOW SERVERS says the same
        with admin(b) as a:
            cur = a.execute("SHOW SERVERS")
            cols = [d.name for d in cur.description]
            shown = [r[cols.index("tls")] for r in cur.fetchall() if r[2] == "app"]
        assert shown and all(t.startswith(version + "/") if tls else t == "" for t in shown)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("settings,version,cipher", [
    ({"server_tls_protocols": "tlsv1.2"}, "TLSv1.2", None),
    ({"server_tls_protocols": "tlsv1.2", "server_tls_ciphers": "ECDHE-ECDSA-AES256-GCM-SHA384"},
     "TLSv1.2", "ECDHE-ECDSA-AES256-GCM-SHA384"),
    pytest.param({"server_tls13_ciphers": "TLS_AES_128_GCM_SHA256"}, "TLSv1.3",
                 "TLS_AES_128_GCM_SHA256",
                 marks=pytest.mark.skipif(IS_PGBOUNCER,
                                          reason="pgbouncer 1.18 has no server_tls13_ciphers")),
])
def test_server_tls_settings_shape_the_connection(bouncer_factory, pg_ssl, certs, settings,
                                                  version, cipher):
    b = bouncer_factory(config={
        "databases": tls_db(pg_ssl),
        "pgbouncer": {"server_tls_sslmode": "require", **settings}})
    with b.connect() as c:
        row = c.execute("select ssl, version, cipher from pg_stat_ssl"
                        " where pid = pg_backend_pid()").fetchone()
    assert row[0] is True and row[1] == version
    if cipher:
        assert row[2] == cipher


@pytest.mark.timeout(60)
def test_server_verify_full_checks_the_host_name(bouncer_factory, pg_ssl, certs):
    # PostgreSQL's certificate names localhost only: 127.0.0.1 is not its name
    b = bouncer_factory(config={
        "databases": tls_db(pg_ssl, "127.0.0.1"),
        "pgbouncer": {"server_tls_sslmode": "verify-full", "server_tls_ca_file": certs.ca1_crt,
                      "server_login_retry": 1}})
    with pytest.raises(psycopg.OperationalError):
        b.connect()
    wait_for(lambda: "certificate" in b.log())


@pytest.mark.timeout(60)
def test_server_verify_ca_refuses_another_ca(bouncer_factory, pg_ssl, certs):
    b = bouncer_factory(config={
        "databases": tls_db(pg_ssl),
        "pgbouncer": {"server_tls_sslmode": "verify-ca", "server_tls_ca_file": certs.ca2_crt,
                      "server_login_retry": 1}})
    with pytest.raises(psycopg.OperationalError):
        b.connect()
    wait_for(lambda: "certificate verify failed" in b.log())


@pytest.mark.timeout(60)
def test_server_require_refuses_a_server_without_tls(bouncer_factory, pg):
    b = bouncer_factory(config={"pgbouncer": {"server_tls_sslmode": "require",
                                              "server_login_retry": 1}})
    with pytest.raises(psycopg.OperationalError):
        b.connect()
    wait_for(lambda: "server refused SSL" in b.log())
    # prefer falls back to plain against it
    b2 = bouncer_factory(config={"pgbouncer": {"server_tls_sslmode": "prefer"}})
    with b2.connect() as c:
        assert c.execute("select 1").fetchone() == (1,)


@pytest.mark.timeout(60)
def test_server_client_certificate(bouncer_factory, pg_ssl, certs):
    # certuser may only log in to PostgreSQL with its certificate
    b = bouncer_factory(config={
        "databases": {"app": f"host=127.0.0.1 port={pg_ssl.port} dbname=app user=certuser"},
        "pgbouncer": {"server_tls_sslmode": "require", "server_tls_cert_file": certs.certuser1_crt,
                      "server_tls_key_file": certs.certuser1_key}})
    with b.connect() as c:
        assert c.execute("select current_user").fetchone() == ("certuser",)
        assert server_ssl(c)[0] is True


@pytest.mark.timeout(90)
def test_servers_reconnect_when_server_tls_settings_change(bouncer_factory, pg_ssl, certs):
    b = bouncer_factory(config={
        "databases": tls_db(pg_ssl),
        "pgbouncer": {"server_tls_sslmode": "prefer", "pool_mode": "transaction"}})
    with b.connect(autocommit=True) as c:
        pid1 = c.execute("select pg_backend_pid()").fetchone()[0]
        assert server_ssl(c)[0] is True
        # a reload that changes nothing of TLS keeps the server (pgbouncer 1.18 reconnects)
        with admin(b) as a:
            a.execute("RELOAD")
        if not IS_PGBOUNCER:
            assert c.execute("select pg_backend_pid()").fetchone()[0] == pid1
        pid1 = c.execute("select pg_backend_pid()").fetchone()[0]
        rewrite(b.ini, "server_tls_sslmode = prefer", "server_tls_sslmode = disable")
        with admin(b) as a:
            a.execute("RELOAD")
        wait_for(lambda: c.execute("select pg_backend_pid()").fetchone()[0] != pid1)
        assert server_ssl(c)[0] is False
        # and back on through SET
        with admin(b) as a:
            a.execute("SET server_tls_sslmode = 'require'")
        wait_for(lambda: server_ssl(c)[0] is True)


@pytest.mark.timeout(120)
def test_large_results_through_tls_on_both_sides(bouncer_factory, pg_ssl, certs):
    """Records larger than the pooler's buffer, a client that stops reading while the server
    keeps sending (TLS writes that must be retried), then reads it all: nothing is lost or
    reordered."""
    b = bouncer_factory(config={
        "databases": tls_db(pg_ssl),
        "pgbouncer": client_tls(certs, "require", server_tls_sslmode="require",
                                pool_mode="transaction")})
    with b.connect(sslmode="require") as c:
        rows = c.execute("select i, repeat(md5(i::text), 200) from generate_series(1, 3000) i"
                         ).fetchall()
        assert [r[0] for r in rows] == list(range(1, 3001))
        assert all(r[1] == hashlib.md5(str(r[0]).encode()).hexdigest() * 200 for r in rows)
        assert server_ssl(c)[0] is True
    ctx = ssl.create_default_context(cafile=certs.ca1_crt)
    w = pgwire.WireClient(b.host, b.port, rcvbuf=4096)
    try:
        w.sock.sendall(struct.pack("!II", 8, 80877103))
        assert w.sock.recv(1) == b"S"
        w.sock = ctx.wrap_socket(w.sock, server_hostname="localhost")
        assert w.startup("app", "app", password="secret") is None
        w.query("select i, repeat('x', 5000) from generate_series(1, 4000) i")
        time.sleep(1.0)  # the pooler's writes to this client pile up meanwhile
        rows, err = w.read_until_ready()
        assert err is None
        assert [int(r[0]) for r in rows] == list(range(1, 4001))
        assert all(r[1] == "x" * 5000 for r in rows)
        w.query("select 'after'")
        assert w.read_until_ready() == ([["after"]], None)
    finally:
        w.close()


@pytest.mark.timeout(90)
def test_hba_hostssl_and_cert_lines(bouncer_factory, certs):
    """auth_type = hba with TLS on: a hostssl line applies only to TLS connections, and its cert
    method logs in the user its verified client certificate names."""
    b = bouncer_factory(config={"pgbouncer": client_tls(
        certs, "prefer", client_tls_ca_file=certs.ca1_crt, auth_type="hba",
        auth_hba_file="@WORKDIR@/hba.conf")}, start=False)
    with open(os.path.join(b.workdir, "hba.conf"), "w") as f:
        f.write("hostssl   all  app      127.0.0.1/32  cert\n"
                "hostnossl all  app      127.0.0.1/32  reject\n"
                "host      all  postgres 127.0.0.1/32  md5\n")
    b.start()
    # TLS with the certificate that names app: in without a password
    with b.connect(sslmode="require", password=None, sslcert=certs.app1_crt,
                   sslkey=certs.app1_key) as c:
        assert c.execute("select current_user").fetchone() == ("app",)
    # TLS with a certificate of another name: the cert line refuses it
    with pytest.raises(psycopg.OperationalError) as ei:
        b.connect(user="app", password=None, sslmode="require", sslcert=certs.other1_crt,
                  sslkey=certs.other1_key)
    assert "certificate authentication failed" in str(ei.value)
    # no TLS: the hostnossl line rejects, whatever the password
    with pytest.raises(psycopg.OperationalError) as ei:
        b.connect(sslmode="disable")
    assert "rejected" in str(ei.value)
