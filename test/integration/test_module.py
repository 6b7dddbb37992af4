"""The synced-table side is a module (synced.so) that the pooler loads only when something needs
it: a configuration with [synced_tables] or [apis] (at start or at a RELOAD), or a statement that
could reach a syncbouncer.* setting (which the pooler refuses with or without synced tables). A
plain pooler maps neither the module nor the libraries it brings (libcurl, libpq, libpg_query,
yajl): what a user sees in /proc/<pid>/maps. A configuration that needs a module that cannot be
loaded is not used: the start or the RELOAD fails, naming the file and the loader's reason."""

import os
import re
import shutil
import subprocess

import psycopg
import pytest

from conftest import IS_PGBOUNCER, SB_BIN, make_tempdir, wait_synced_ready
from test_synced import TABLE_DDL, fake_sf  # noqa: F401 (a fixture)

MODULE_LIBS = ("synced.so", "libcurl", "libpq.so", "libpg_query", "libyajl")


def mapped_files(pid):
    """The file names (without directories) the process maps."""
    names = set()
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].startswith("/"):
                names.add(os.path.basename(fields[5].strip()))
    return names


def module_libs_mapped(pid):
    return sorted(n for n in mapped_files(pid) if any(n.startswith(m) for m in MODULE_LIBS))


def admin(b):
    return b.connect(dbname="pgbouncer", user="postgres", password="postgres", autocommit=True)


def api_line(fake):
    return (f"salesforce = type=salesforce base_url={fake.url} api_version=v59.0 auth=oauth2 "
            f"token_url={fake.url}/services/oauth2/token client_id=test-client-id "
            f"client_secret=test-client-secret refresh_token=test-refresh-token timeout=3")


@pytest.mark.skipif(IS_PGBOUNCER, reason="syncbouncer's module")
def test_version_names_the_module_libraries():
    out = subprocess.run([SB_BIN, "-V"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out
    assert "\nhttp: libcurl/" in out.stdout and "\nlibpq: " in out.stdout, out.stdout


def test_plain_pooler_maps_no_module(bouncer):
    with bouncer.connect(autocommit=True) as conn:
        conn.execute("CREATE TEMP TABLE t (a int)")
        conn.execute("INSERT INTO t VALUES (1), (2)")
        assert conn.execute("SELECT sum(a) FROM t").fetchone() == (3,)
        assert conn.execute("SELECT current_setting('application_name')").fetchone() is not None
    assert module_libs_mapped(bouncer.pid) == []


@pytest.mark.skipif(IS_PGBOUNCER, reason="syncbouncer's guard setting")
def test_plain_pooler_loads_the_module_to_refuse_a_guard_setting(bouncer):
    """Only the module's classifier tells a SET of syncbouncer.mode from a read of it: the first
    statement with such a spelling loads the module, which refuses it; reads still work."""
    with bouncer.connect(autocommit=True) as conn:
        assert module_libs_mapped(bouncer.pid) == []
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="not allowed"):
            conn.execute("SET syncbouncer.mode = 'sync'")
        assert "synced.so" in mapped_files(bouncer.pid)
        assert conn.execute("SELECT current_setting('syncbouncer.mode', true)"
                            ).fetchone()[0] in (None, "")
        assert conn.execute("SELECT set_config('application_name', 'x', false)"
                            ).fetchone() == ("x",)
    assert "loaded module" in bouncer.log()


def help_text(a):
    notices = []
    a.add_notice_handler(lambda d: notices.append(d.message_detail))
    a.execute("SHOW HELP")
    return notices[-1]


@pytest.mark.skipif(IS_PGBOUNCER, reason="syncbouncer's module")
def test_show_help_lists_the_module_commands_once_it_is_loaded(bouncer):
    """SHOW HELP lists only what the console takes: the synced tables' views and commands once
    the module is loaded; until then they are unknown, SYNC too."""
    with admin(bouncer) as a:
        usage = help_text(a)
        assert "SHOW STATS|" in usage and "WAIT_CLOSE" in usage
        assert "APIS" not in usage and "JOURNAL" not in usage and "SYNC" not in usage, usage
        for cmd in ("SHOW APIS", "JOURNAL RETRY 1", "SYNC crm.salesforce.contacts"):
            with pytest.raises(psycopg.Error, match=f"invalid command '{cmd}', use SHOW HELP;"):
                a.execute(cmd)
    with bouncer.connect(autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SET syncbouncer.mode = 'sync'")
    assert "synced.so" in mapped_files(bouncer.pid)
    with admin(bouncer) as a:
        usage = help_text(a)
        assert "\n\tSHOW APIS|SYNCED_TABLES|MUTATIONS|JOURNAL\n" in usage, usage
        assert "\n\tSYNC [BACKFILL] <db.schema.table>\n" in usage, usage
        assert usage.index("SHOW STATS|") < usage.index("SHOW APIS") < usage.index("SET key")
        assert a.execute("SHOW APIS").fetchall() == []
        with pytest.raises(psycopg.Error, match="no synced tables"):
            a.execute("SYNC crm.salesforce.contacts")


# A plain pooler's statements are searched by the core alone until the module is loaded: each
# spelling, in any case, in a later statement of the text, loads it; a near miss does not.
@pytest.mark.skipif(IS_PGBOUNCER, reason="syncbouncer's guard setting")
@pytest.mark.parametrize("sql", [
    "SET /* c */ SyncBouncer . Mode = 'sync'",
    "select pg_catalog.SET_CONFIG(E'syncbouncer.mode', 'sync', false)",
    "select set_config(U&'\\0073yncbouncer.mode', 'sync', false)",
    "select 1; SET SYNCBOUNCER.mode = 'sync'",
], ids=["mixed-case", "set_config", "unicode-escape", "second-statement"])
def test_first_statement_with_a_guard_spelling_loads_the_module(bouncer, sql):
    with bouncer.connect(autocommit=True) as conn:
        assert conn.execute("select 'syncbounce', 'set_confi', 'u'").fetchone() == (
            "syncbounce", "set_confi", "u")
        assert module_libs_mapped(bouncer.pid) == [], "a statement without a spelling loaded it"
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="not allowed"):
            conn.execute(sql)
        assert "synced.so" in mapped_files(bouncer.pid)


@pytest.mark.skipif(IS_PGBOUNCER, reason="syncbouncer's synced tables")
def test_unloadable_module_fails_start_and_reload(pg, bouncer_factory, fake_sf):  # noqa: F811
    """A copy of the pooler with a broken synced.so next to it: a configuration that needs the
    module does not start (the file and the loader's reason in the output); a plain one starts,
    a RELOAD that adds [apis] fails and changes nothing, and a statement only the module could
    check ends the connection rather than going through unchecked."""
    bindir = make_tempdir("sb-mod-")
    try:
        binary = os.path.join(bindir, "syncbouncer")
        module = os.path.join(bindir, "synced.so")
        shutil.copy2(SB_BIN, binary)
        with open(module, "w") as f:
            f.write("not a shared object\n")

        b = bouncer_factory(config={"apis": [api_line(fake_sf)]}, start=False)
        b.binary = binary
        b.start(wait=False)
        assert b.proc.wait(timeout=30) != 0
        b.stopped_by_us = True
        out = b.output()
        assert f'cannot load module "{module}"' in out, out
        assert "invalid ELF header" in out or "file too short" in out, out
        version = subprocess.run([binary, "-V"], capture_output=True, text=True, timeout=30)
        assert version.returncode == 0
        assert f'synced tables: module not available: cannot load module "{module}"' in \
            version.stdout, version.stdout

        b = bouncer_factory(start=False)
        b.binary = binary
        b.start()
        with b.connect(autocommit=True) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        with open(b.ini, "a") as f:
            f.write("\n[apis]\n" + api_line(fake_sf) + "\n")
        with admin(b) as a:
            with pytest.raises(psycopg.Error, match="RELOAD failed"):
                a.execute("RELOAD")
        assert f'RELOAD failed: cannot load module "{module}"' in b.log()
        with b.connect(autocommit=True) as conn:
            with pytest.raises(psycopg.Error, match="needs the synced tables module"):
                conn.execute("SET syncbouncer.mode = 'sync'")
        with b.connect(autocommit=True) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert module_libs_mapped(b.pid) == []
    finally:
        shutil.rmtree(bindir, ignore_errors=True)


@pytest.mark.skipif(IS_PGBOUNCER, reason="syncbouncer's synced tables")
def test_reload_adding_synced_tables_loads_the_module(pg, bouncer_factory, fake_sf):  # noqa: F811
    pg.sql("DROP SCHEMA IF EXISTS syncbouncer CASCADE", dbname="crm")
    pg.sql(TABLE_DDL, dbname="crm")
    b = bouncer_factory(config={
        "databases": {"crm": f"host=127.0.0.1 port={pg.port} dbname=crm user=app password=secret"},
    })
    with b.connect(dbname="crm", autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert module_libs_mapped(b.pid) == []
    with open(b.ini, "a") as f:
        f.write(f"\n[apis]\n{api_line(fake_sf)}\n[synced_tables]\n"
                "crm.salesforce.contacts = api=salesforce object=Contact\n")
    with admin(b) as a:
        assert a.execute("RELOAD").statusmessage == "RELOAD"
    wait_synced_ready(pg, b, synced=True)
    libs = module_libs_mapped(b.pid)
    assert "synced.so" in libs and any(n.startswith("libcurl") for n in libs), libs
    with b.connect(dbname="crm", autocommit=True) as conn:
        new_id = conn.execute("INSERT INTO salesforce.contacts (last_name) VALUES ('Atreides') "
                              "RETURNING id").fetchone()[0]
    assert [c.get("LastName") for c in fake_sf.store().values()] == ["Atreides"]
    assert pg.sql("SELECT id, last_name FROM salesforce.contacts", dbname="crm") == \
        [(new_id, "Atreides")]
    # the guard now refuses a write that does not go through the pooler
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        pg.sql("INSERT INTO salesforce.contacts (id, last_name) VALUES ('003X', 'x')",
               dbname="crm", user="app")


@pytest.mark.skipif(IS_PGBOUNCER, reason="syncbouncer's synced tables")
def test_reload_with_a_bad_api_line_fails_and_changes_nothing(pg, bouncer_factory, monkeypatch,
                                                             fake_sf):  # noqa: F811
    """An [apis] line the start would refuse makes the RELOAD fail at the console, whether it
    adds the synced tables or changes them, and nothing of the file is applied: not the core's
    settings beside it, not the API's other settings (a rotated credential that silently did not
    take would be worse than an error)."""
    pg.sql("DROP SCHEMA IF EXISTS syncbouncer CASCADE", dbname="crm")
    pg.sql(TABLE_DDL, dbname="crm")
    db = {"crm": f"host=127.0.0.1 port={pg.port} dbname=crm user=app password=secret"}
    b = bouncer_factory(config={"databases": db}, start=False)
    monkeypatch.setenv("SYNCBOUNCER_TEST_AFTER_CHECK", b.ini)
    b.start()
    with open(b.ini) as f:
        plain = f.read()
    tables = "[synced_tables]\ncrm.salesforce.contacts = api=salesforce object=Contact\n"
    bad_url = api_line(fake_sf).replace(f"base_url={fake_sf.url}", "base_url=htp:/nowhere")

    def write(extra, pool_size):
        with open(b.ini, "w") as f:
            f.write(re.sub(r"(?m)^default_pool_size = .*$", f"default_pool_size = {pool_size}",
                           plain) + extra)

    def config(a):
        return dict((r[0], r[1]) for r in a.execute("SHOW CONFIG").fetchall())

    with admin(b) as a:
        before = config(a)["default_pool_size"]
        # a plain pooler: the RELOAD that adds the module with a broken line
        write(f"\n[apis]\n{bad_url}\n{tables}", 7)
        with pytest.raises(psycopg.Error, match="RELOAD failed"):
            a.execute("RELOAD")
        assert "base_url= must be an http:// or https:// URL" in b.log()
        assert config(a)["default_pool_size"] == before
        # the good line works
        write(f"\n[apis]\n{api_line(fake_sf)}\n{tables}", 7)
        assert a.execute("RELOAD").statusmessage == "RELOAD"
        assert config(a)["default_pool_size"] == "7"
        wait_synced_ready(pg, b)
        # running synced tables: a broken change keeps the API as it was, and says so
        write(f"\n[apis]\n{bad_url}\n{tables}", 9)
        with pytest.raises(psycopg.Error, match="RELOAD failed"):
            a.execute("RELOAD")
        assert config(a)["default_pool_size"] == "7"
        assert [r[2] for r in a.execute("SHOW APIS").fetchall()] == [fake_sf.url]
        write(f"\n[apis]\n{api_line(fake_sf).replace('timeout=3', 'timeout=soon')}\n{tables}", 9)
        with pytest.raises(psycopg.Error, match="RELOAD failed"):
            a.execute("RELOAD")
        write(f"\n[apis]\n{api_line(fake_sf)}\n{tables.strip()} sync_interval=never\n", 9)
        with pytest.raises(psycopg.Error, match="RELOAD failed"):
            a.execute("RELOAD")
        assert "sync_interval=never" in b.log()
        assert config(a)["default_pool_size"] == "7"
    # the module takes what the RELOAD checked, not a file edited since (renamed over the ini
    # between the check and the workers' apply, by the test builds' hook)
    second = api_line(fake_sf).replace("salesforce =", "other =", 1)
    write(f"\n[apis]\n{api_line(fake_sf)}\n{second}\n{tables}", 9)
    with open(b.ini) as f:
        checked = f.read()
    with open(b.ini + ".next", "w") as f:
        f.write(checked.replace(f"base_url={fake_sf.url}", "base_url=htp:/nowhere"))
    with admin(b) as a:
        assert a.execute("RELOAD").statusmessage == "RELOAD"
        assert not os.path.exists(b.ini + ".next")
        assert config(a)["default_pool_size"] == "9"
        assert sorted(r[0] for r in a.execute("SHOW APIS").fetchall()) == ["other", "salesforce"]
    assert "RELOAD failed" not in b.log().split("replaced after the check")[-1]
    with b.connect(dbname="crm", autocommit=True) as conn:
        conn.execute("INSERT INTO salesforce.contacts (last_name) VALUES ('Atreides')")
    assert [c.get("LastName") for c in fake_sf.store().values()] == ["Atreides"]
