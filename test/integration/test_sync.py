"""The read side of synced tables: records created, changed and deleted directly in the API
(the fakes' /_records control endpoints, as another user of the API would) reach the table
through the sync worker; backfill, resume after kill -9, races with writes through
syncbouncer, and the request budget.

Intervals are short (1 s) and every wait polls with a bound that only guards against a hang.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import psycopg
import pytest

from conftest import IS_PGBOUNCER, SRC_DIR, free_port
from test_synced import FakeSalesforce, start_synced

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="synced tables exist only in syncbouncer")

SF_TABLE = "crm.salesforce.contacts"


def admin(b):
    return b.connect(dbname="pgbouncer", user="postgres", password="postgres", autocommit=True)


def sync_rows(b):
    with admin(b) as conn:
        cur = conn.execute("SHOW SYNCED_TABLES")
        cols = [d.name for d in cur.description]
        return {r[0] + "." + r[1]: dict(zip(cols, r)) for r in cur.fetchall()}


def sync_now(b, table=SF_TABLE):
    with admin(b) as conn:
        conn.execute(f"SYNC {table}")


def wait_for(what, check, timeout=60):
    """Polls check() until it is truthy; the bound only guards against a hang."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.1)


def sf_rows(pg):
    return pg.sql("SELECT id, first_name, last_name, email, note FROM salesforce.contacts "
                  "ORDER BY id", dbname="crm")


def sf_records(fake, **body):
    return fake._call("POST", "/_records", dict({"object": "Contact"}, **body))


@pytest.fixture
def fake_sf():
    f = FakeSalesforce()
    yield f
    f.stop()


def test_salesforce_changes_made_in_the_api_reach_the_table(pg, bouncer_factory, fake_sf):
    b = start_synced(pg, bouncer_factory, fake_sf,
                     table_extra="columns='note:Description' sync_interval=1")
    new = sf_records(fake_sf, op="create", fields={"FirstName": "Leto", "LastName": "Atreides",
                                                   "Email": "leto@caladan.io",
                                                   "Description": "duke"})["id"]
    wait_for("the created record", lambda: sf_rows(pg) == [
        (new, "Leto", "Atreides", "leto@caladan.io", "duke")])
    sf_records(fake_sf, op="update", id=new, fields={"Email": "leto@arrakis.io"})
    wait_for("the changed record", lambda: sf_rows(pg) == [
        (new, "Leto", "Atreides", "leto@arrakis.io", "duke")])
    sf_records(fake_sf, op="delete", id=new)
    wait_for("the deleted record", lambda: sf_rows(pg) == [])
    row = sync_rows(b)[SF_TABLE]
    assert row["sync_state"] in ("idle", "polling")
    assert row["last_sync"] is not None
    assert int(row["synced_rows"]) >= 3
    # the reads were SOQL queryAll on SystemModstamp, following the documented shape
    queries = [r for r in fake_sf._call("GET", "/_requests") if r["path"].endswith("/queryAll")]
    assert queries and all("SystemModstamp" in r["query"] for r in queries)
