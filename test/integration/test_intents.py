"""Write-ahead intents and settling: nothing lost, nothing doubled, nothing diverged.

Each test breaks a synced write at one point (the process killed after the API accepted, the
process killed while the request is at the API, the API's answer timed out or lost, the
database commit failed) and checks what a user checks afterwards: the table equals the API's
records, the API holds each record once, and clients were told the truth (success, the API's
error, or XX000 with the table, operation and keys; 40001 while a row's earlier write is not
settled). A Stripe-shaped fake (test/fakes/fake_stripe.py) plays the API; settling repeats its
inserts with the same Idempotency-Key while Stripe keeps the key, else finds the record by the
key it carries (Search API), and reads records by id.
"""

import os
import threading
import time
import urllib.request

import psycopg
import pytest

from conftest import IS_PGBOUNCER, FakeServer, free_port, wait_synced_ready

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="synced tables exist only in syncbouncer")

HOLD = "SYNCBOUNCER_TEST_HOLD_BEFORE_COMMIT_MS"


class FakeStripe(FakeServer):
    def __init__(self):
        super().__init__("fake_stripe.py")

    def store(self):
        return self.call("GET", "/_store").get("customers", {})

    def requests(self):
        return self.call("GET", "/_requests")


@pytest.fixture
def stripe():
    f = FakeStripe()
    yield f
    f.stop()


DDL = """
CREATE SCHEMA IF NOT EXISTS billing AUTHORIZATION app;
DROP TABLE IF EXISTS billing.customers;
CREATE TABLE billing.customers (id text PRIMARY KEY, email text, name text);
ALTER TABLE billing.customers OWNER TO app;
"""


def config(pg, stripe, timeout=1, pgbouncer=None, deadline=None, obj="customers"):
    return {
        "databases": {"crm": f"host=127.0.0.1 port={pg.port} dbname=crm user=app password=secret"},
        "apis": [f"stripe = type=stripe base_url={stripe.url} auth=bearer token=sk_test_fake "
                 f"timeout={timeout} deadline={deadline or timeout}"],
        # no sync worker: what is checked here is settling alone (and the worker's own
        # requests would take the fake's one-shot faults)
        "synced_tables": [f"crm.billing.customers = api=stripe object={obj} "
                          "sync_interval=0 backfill=off"],
        "pgbouncer": {"max_client_conn": 50, "default_pool_size": 20, **(pgbouncer or {})},
    }


def wait_guard(pg, b):
    wait_synced_ready(pg, b)


def start(pg, bouncer_factory, stripe, hold_ms=0, fresh=True, **kw):
    if fresh:
        pg.sql("DROP SCHEMA IF EXISTS syncbouncer CASCADE", dbname="crm")
        pg.sql(DDL, dbname="crm")
    if hold_ms:
        os.environ[HOLD] = str(hold_ms)
    try:
        b = bouncer_factory(config=config(pg, stripe, **kw))
    finally:
        os.environ.pop(HOLD, None)
    wait_guard(pg, b)
    return b


def restart(b, hold_ms=0):
    """kill -9 by pid, then the same ini (and journal file) again."""
    b.proc.kill()
    b.proc.wait()
    b.stderr_file.close()
    if hold_ms:
        os.environ[HOLD] = str(hold_ms)
    try:
        b.start()
    finally:
        os.environ.pop(HOLD, None)


def crm(b):
    return b.connect(dbname="crm", autocommit=True)


def table(pg):
    return {r[0]: (r[1], r[2]) for r in
            pg.sql("SELECT id, email, name FROM billing.customers", dbname="crm")}


def api_view(stripe):
    return {k: (v.get("email"), v.get("name")) for k, v in stripe.store().items()}


def intents(pg):
    if pg.sql("SELECT to_regclass('syncbouncer.intent') IS NULL", dbname="crm")[0][0]:
        return []  # a pooler that keeps no intents: the table and the API must still agree
    return pg.sql("SELECT id, op::text FROM syncbouncer.intent", dbname="crm")


def wait_settled(pg, stripe, b, timeout=40):
    """Until no intent is left and the table equals the API (then returns both)."""
    deadline = time.monotonic() + timeout
    while True:
        t, a, left = table(pg), api_view(stripe), intents(pg)
        if not left and t == a:
            return t
        assert time.monotonic() < deadline, \
            f"not settled: intents {left}\ntable {t}\napi {a}\n" + b.log()[-6000:]
        time.sleep(0.25)


def in_thread(fn):
    out = {}

    def run():
        try:
            out["result"] = fn()
        except Exception as e:  # the test looks at what the client was told
            out["error"] = e

    t = threading.Thread(target=run)
    t.start()
    return t, out


def wait_for(cond, what, timeout=20):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def writes_arrived(fake):
    """A test that becomes true once the fake has received a write request (POST, PATCH or
    DELETE of its API, not of a token) more than it had when this was called."""
    def writes():
        return sum(1 for r in fake.requests() if r["method"] in ("POST", "PATCH", "DELETE")
                   and "oauth2" not in r["path"])
    before = writes()
    return lambda: writes() > before


def terminate_held_mutation(pg, at_api):
    """Ends the mutation backend that sits in its transaction waiting for the API (its commit
    then fails), once its request is at the API (at_api()): a write whose transaction is gone
    before its request left sends nothing."""
    wait_for(at_api, "the write's request never reached the API")

    def attempt():
        return pg.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE application_name = 'syncbouncer mutation' "
                      "AND state = 'idle in transaction' "
                      "AND state_change < now() - interval '300 ms'", dbname="postgres")
    wait_for(attempt, "no mutation backend held in its transaction")


# ---- cause 1: kill -9 after the API accepted, before COMMIT --------------------------------

@pytest.mark.parametrize("op", ["insert", "update"])
def test_kill_after_api_accepted_before_commit_is_settled(pg, bouncer_factory, stripe, op):
    b = start(pg, bouncer_factory, stripe, hold_ms=4000)
    cid = None
    if op == "update":
        with crm(b) as conn:
            (cid,) = conn.execute("insert into billing.customers (email, name) values "
                                  "('a@b.io', 'Ann') returning id").fetchone()
        sql = f"update billing.customers set email = 'new@b.io' where id = '{cid}'"
        applied = lambda: stripe.store().get(cid, {}).get("email") == "new@b.io"
    else:
        sql = "insert into billing.customers (email, name) values ('c@d.io', 'Cy')"
        applied = lambda: len(stripe.store()) == 1
    conn = crm(b)
    t, out = in_thread(lambda: conn.execute(sql))
    wait_for(applied, "the API never got the write")
    time.sleep(0.3)
    restart(b)  # no hold now
    t.join(20)
    assert "error" in out  # the client's connection died with the process
    settled = wait_settled(pg, stripe, b)
    assert len(stripe.store()) == 1  # nothing doubled
    if op == "update":
        assert settled[cid] == ("new@b.io", "Ann")
    else:
        assert list(settled.values()) == [("c@d.io", "Cy")]
    posts = [r for r in stripe.requests() if r["method"] == "POST"]
    if op == "insert":
        # the settling repeat carried the first request's key: applied once
        keys = {r["idempotency_key"] for r in posts}
        assert len(keys) == 1 and None not in keys, posts


# ---- cause 2: kill -9 while the request is at the API -------------------------------------

def test_kill_while_the_request_is_at_the_api_is_settled(pg, bouncer_factory, stripe):
    b = start(pg, bouncer_factory, stripe, timeout=5)
    with crm(b) as conn:
        (cid,) = conn.execute("insert into billing.customers (email, name) values "
                              "('a@b.io', 'Ann') returning id").fetchone()
    stripe.control(delay_ms=1500)
    conn = crm(b)
    t, out = in_thread(lambda: conn.execute(
        f"update billing.customers set name = 'Anna' where id = '{cid}'"))
    wait_for(lambda: len(stripe.requests()) >= 2, "the update never reached the API")
    restart(b)
    t.join(20)
    assert "error" in out
    wait_for(lambda: stripe.store()[cid].get("name") == "Anna", "the API never applied it")
    stripe.control(delay_ms=0)
    assert wait_settled(pg, stripe, b)[cid] == ("a@b.io", "Anna")


# ---- cause 3: API timeout, and the answer lost after the request was sent ------------------

@pytest.mark.parametrize("fault", ["timeout", "lost_answer"])
@pytest.mark.parametrize("op", ["insert", "update"])
def test_unknown_outcome_is_told_and_settled(pg, bouncer_factory, stripe, fault, op):
    b = start(pg, bouncer_factory, stripe)
    with crm(b) as conn:
        if op == "update":
            (cid,) = conn.execute("insert into billing.customers (email, name) values "
                                  "('a@b.io', 'Ann') returning id").fetchone()
            sql = f"update billing.customers set name = 'Anna' where id = '{cid}'"
        else:
            sql = "insert into billing.customers (email, name) values ('c@d.io', 'Cy')"
        if fault == "timeout":
            stripe.control(delay_ms=1500)
        else:
            # the answer is lost after the API applied the request, and the same-key repeat
            # that syncbouncer makes at once fails too: the outcome is unknown
            stripe.control(drop_after_apply=1, after_drop_status=400)
        with pytest.raises(psycopg.errors.InternalError_) as ei:
            conn.execute(sql)
        stripe.control(delay_ms=0)
        d = ei.value.diag
        assert d.sqlstate == "XX000"
        assert "outcome unknown" in d.message_primary
        assert f"{op} of billing.customers" in d.message_detail
        assert "journal entry" in d.message_detail
        if op == "update":
            assert cid in d.message_detail
    settled = wait_settled(pg, stripe, b)
    assert len(stripe.store()) == 1
    assert ("Anna" if op == "update" else "Cy") in [v[1] for v in settled.values()]


def test_settling_repeat_is_answered_for_its_own_key(pg, bouncer_factory, stripe):
    """An insert applied at the API whose answer was lost (outcome unknown) is settled by
    repeating it with its Idempotency-Key. Another request's answer lost just before must not
    make that repeat look refused: Stripe answers a key it has applied with its first answer."""
    b = start(pg, bouncer_factory, stripe)
    with crm(b) as conn:
        stripe.control(drop_after_apply=1, after_drop_status=400)
        with pytest.raises(psycopg.errors.InternalError_) as ei:
            conn.execute("insert into billing.customers (email, name) values ('c@d.io', 'Cy')")
        assert "outcome unknown" in ei.value.diag.message_primary
    (cid,) = stripe.store().keys()
    # before the intent may be settled: a request of someone else is applied and its answer
    # lost, so the fake fails the request after it (the settler's repeat comes next)
    stripe.control(drop_after_apply=1, after_drop_status=400)
    req = urllib.request.Request(f"{stripe.url}/v1/customers/{cid}", data=b"name=Cy",
                                 method="POST",
                                 headers={"Authorization": "Bearer sk_test_fake"})
    with pytest.raises(Exception):
        urllib.request.urlopen(req, timeout=10).read()
    settled = wait_settled(pg, stripe, b, timeout=20)
    assert settled == {cid: ("c@d.io", "Cy")}
    repeats = [r for r in stripe.requests()
               if r["method"] == "POST" and r["path"] == "/v1/customers"]
    # the same key with the same parameters each time (Stripe refuses a key reused otherwise)
    assert len(repeats) >= 3 and len({r["idempotency_key"] for r in repeats}) == 1
    assert all(r["form"] == repeats[0]["form"] for r in repeats)


# ---- cause 4: settling never writes an older image over a newer write ----------------------

def test_settling_never_overwrites_a_newer_write(pg, bouncer_factory, stripe):
    b = start(pg, bouncer_factory, stripe, timeout=5)
    with crm(b) as conn:
        (cid,) = conn.execute("insert into billing.customers (email, name) values "
                              "('a@b.io', 'r0') returning id").fetchone()
        # the API answers slowly; meanwhile the write's database session is terminated,
        # so the API applies r1 and the database cannot commit it
        stripe.control(delay_ms=1000)
        killer = threading.Thread(target=terminate_held_mutation,
                                  args=(pg, writes_arrived(stripe)))
        killer.start()
        with pytest.raises(psycopg.errors.InternalError_) as ei:
            conn.execute(f"update billing.customers set name = 'r1' where id = '{cid}'")
        killer.join()
        stripe.control(delay_ms=0)
        assert ei.value.diag.sqlstate == "XX000"
        assert "applied to stripe but not yet to the database" in ei.value.diag.message_primary
        # r2 right after: the row's earlier write is not settled, so r2 waits its turn
        with pytest.raises(psycopg.errors.SerializationFailure) as ei:
            conn.execute(f"update billing.customers set name = 'r2' where id = '{cid}'")
        assert ei.value.diag.message_hint.startswith("Retry")
        deadline = time.monotonic() + 40
        while True:
            try:
                conn.execute(f"update billing.customers set name = 'r2' where id = '{cid}'")
                break
            except psycopg.errors.SerializationFailure:
                assert time.monotonic() < deadline, b.log()[-4000:]
                time.sleep(0.3)
    assert stripe.store()[cid]["name"] == "r2"
    assert wait_settled(pg, stripe, b)[cid] == ("a@b.io", "r2")
    time.sleep(1.5)  # a late settling pass would show here
    assert table(pg)[cid] == ("a@b.io", "r2")


# ---- cause 5: an UPDATE after an insert the API took but the database did not ---------------

def test_update_of_an_unsettled_insert_waits_instead_of_finding_no_row(pg, bouncer_factory,
                                                                      stripe):
    b = start(pg, bouncer_factory, stripe, timeout=5)
    with crm(b) as conn:
        stripe.control(delay_ms=1000)
        killer = threading.Thread(target=terminate_held_mutation,
                                  args=(pg, writes_arrived(stripe)))
        killer.start()
        with pytest.raises(psycopg.errors.InternalError_) as ei:
            conn.execute("insert into billing.customers (email, name) values ('e@f.io', 'Eve')")
        killer.join()
        stripe.control(delay_ms=0)
        (cid,) = stripe.store().keys()
        assert cid in ei.value.diag.message_detail
        with pytest.raises(psycopg.errors.SerializationFailure):
            conn.execute(f"update billing.customers set name = 'Eva' where id = '{cid}'")
        deadline = time.monotonic() + 40
        while True:
            try:
                cur = conn.execute(f"update billing.customers set name = 'Eva' "
                                   f"where id = '{cid}'")
                break
            except psycopg.errors.SerializationFailure:
                assert time.monotonic() < deadline, b.log()[-4000:]
                time.sleep(0.3)
        assert cur.rowcount == 1, b.log()[-5000:]
    assert wait_settled(pg, stripe, b) == {cid: ("e@f.io", "Eva")}


# ---- cause 6: the database turned the applied row away ---------------------------------------

# A trigger of the table's own that keeps the customers on legal hold as they are. Its name
# sorts after syncbouncer_guard, so it runs after the guard: the capture never meets it (the
# guard drops every row there), the API takes the change, and the apply run writes nothing.
LEGAL_HOLD = """
CREATE OR REPLACE FUNCTION billing.keep_held() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF tg_op = 'INSERT' AND new.name = 'held' OR tg_op <> 'INSERT' AND old.name = 'held' THEN
        RETURN NULL;
    END IF;
    IF tg_op = 'DELETE' THEN
        RETURN old;
    END IF;
    RETURN new;
END $$;
CREATE TRIGGER trg_legal_hold BEFORE INSERT OR UPDATE OR DELETE ON billing.customers
    FOR EACH ROW EXECUTE FUNCTION billing.keep_held();
"""


def test_an_applied_row_the_database_turned_away_is_rolled_back_and_settled(pg, bouncer_factory,
                                                                              stripe):
    """The API accepted an update that the table's own trigger then kept out: the write is not
    committed (the client is told XX000, not UPDATE 0), its intent is left, and once the hold is
    lifted settling brings the API's version into the table."""
    b = start(pg, bouncer_factory, stripe)
    with crm(b) as conn:
        (cid,) = conn.execute("insert into billing.customers (email, name) values "
                              "('h@b.io', 'held') returning id").fetchone()
        pg.sql(LEGAL_HOLD, dbname="crm")
        with pytest.raises(psycopg.errors.InternalError_) as ei:
            conn.execute(f"update billing.customers set email = 'new@b.io' where id = '{cid}'")
        d = ei.value.diag
        assert d.message_primary == "change applied to stripe but not yet to the database"
        assert f"stripe record ids: {cid}." in d.message_detail
        assert "the second run wrote 0 row(s) where the API confirmed 1" in d.message_detail
        entry = d.message_detail.split("journal entry ")[1].split(":")[0]
        assert conn.execute("select 1").fetchone() == (1,)  # the connection stays usable
    assert stripe.store()[cid]["email"] == "new@b.io"
    pg.sql("DROP TRIGGER trg_legal_hold ON billing.customers", dbname="crm")  # hold lifted
    assert wait_settled(pg, stripe, b) == {cid: ("new@b.io", "held")}
    # the intent was not deleted by a commit: settling found it and asked the API
    with admin(b) as ac:
        cur = ac.execute("SHOW JOURNAL")
        cols = [c.name for c in cur.description]
        states = [dict(zip(cols, r))["state"] for r in cur.fetchall()
                  if dict(zip(cols, r))["id"] == entry]
    assert states == ["settled"]


@pytest.mark.parametrize("op", ["insert", "update", "delete"])
def test_a_settled_row_the_database_turns_away_waits_for_the_operator(pg, bouncer_factory,
                                                                      stripe, op):
    """A write whose answer was lost, to a table whose own trigger turns the row away: settling
    finds the API's state but the table does not take it. The entry is neither settled (the
    table would lack what the API has) nor retried blindly: it waits for the operator, saying
    what happened, and JOURNAL RETRY settles it once the trigger is gone."""
    b = start(pg, bouncer_factory, stripe)
    with crm(b) as conn:
        if op == "insert":
            sql = "insert into billing.customers (email, name) values ('h@b.io', 'held')"
        else:
            (cid,) = conn.execute("insert into billing.customers (email, name) values "
                                  "('h@b.io', 'held') returning id").fetchone()
            if op == "update":
                sql = f"update billing.customers set email = 'new@b.io' where id = '{cid}'"
                # another row, whose write settles in a later pass of the settler
                (other,) = conn.execute("insert into billing.customers (email, name) values "
                                        "('o@b.io', 'Otto') returning id").fetchone()
            else:
                sql = f"delete from billing.customers where id = '{cid}'"
        before = table(pg)
        pg.sql(LEGAL_HOLD, dbname="crm")
        stripe.control(delay_ms=1500)  # applied at once, answered after the timeout (1 s)
        with pytest.raises(psycopg.errors.InternalError_) as ei:
            conn.execute(sql)
        stripe.control(delay_ms=0)
        assert "outcome unknown" in ei.value.diag.message_primary
        entry = ei.value.diag.message_detail.split("journal entry ")[1].split(",")[0]
    if op == "insert":
        wait_for(lambda: len(stripe.store()) == 1, "the API never applied the insert")
        (cid,) = stripe.store().keys()
    api_has = {"insert": {cid: ("h@b.io", "held")}, "update": {cid: ("new@b.io", "held")},
               "delete": {}}[op]
    wait_for(lambda: {k: v for k, v in api_view(stripe).items() if k == cid} == api_has,
             "the API never applied the write")

    def mine():
        return [r for r in journal(b) if r["id"] == entry]
    wait_for(lambda: any(r["state"] == "settled" or int(r["attempts"] or 0) >= 1
                         for r in mine()), "never tried:\n" + b.log()[-3000:])
    (row,) = mine()
    assert row["state"] == "needs operator", (row, b.log()[-3000:])
    if op == "delete":
        said = (f"stripe no longer has record {cid} but table billing.customers kept its row: "
                "a trigger or rule of the table turned the delete away")
    else:
        said = (f"stripe has record {cid} but table billing.customers did not take it: "
                "a trigger or rule of the table turned the row away")
    assert row["last_error"].startswith(said), row
    assert f"JOURNAL RETRY {entry}" in row["last_error"]
    assert f"JOURNAL GIVEUP {entry} CONFIRM" in row["last_error"]
    assert f"journal entry {entry}: not settled yet: {said}" in b.log()
    assert table(pg) == before and intents(pg)  # nothing settled, nothing lost
    if op == "update":
        # not tried again by itself: a later write's entry settles in a pass after this one,
        # which leaves this entry alone
        with crm(b) as conn:
            stripe.control(delay_ms=1500)
            with pytest.raises(psycopg.errors.InternalError_) as ei:
                conn.execute(f"update billing.customers set name = 'Ott' where id = '{other}'")
            stripe.control(delay_ms=0)
            later = ei.value.diag.message_detail.split("journal entry ")[1].split(",")[0]
        wait_for(lambda: [r["state"] for r in journal(b) if r["id"] == later] == ["settled"],
                 "the later write was not settled:\n" + b.log()[-3000:])
        (row,) = mine()
        assert row["state"] == "needs operator" and row["attempts"] == "1", row
        assert b.log().count(f"journal entry {entry}: not settled yet") == 1
    # the trigger is fixed; the operator retries
    pg.sql("DROP TRIGGER trg_legal_hold ON billing.customers", dbname="crm")
    with admin(b) as ac:
        ac.execute(f"JOURNAL RETRY {entry}")
    settled = wait_settled(pg, stripe, b)
    assert {k: v for k, v in settled.items() if k == cid} == api_has
    assert [r["state"] for r in mine()] == ["settled"]
    assert len([k for k in stripe.store() if k not in before]) == (op == "insert")


def test_a_row_that_already_holds_the_api_state_is_settled_past_a_trigger_that_skips_it(
        pg, bouncer_factory, stripe):
    """suppress_redundant_updates_trigger() skips an update that would change nothing. Settling
    an update that Stripe never applied (its 500s say it may have) writes the API's state, which
    the row already holds: the trigger skips that write, and that is no refusal: the entry is
    settled, not left to the operator."""
    b = start(pg, bouncer_factory, stripe)
    with crm(b) as conn:
        (cid,) = conn.execute("insert into billing.customers (email, name) values "
                              "('a@b.io', 'Ann') returning id").fetchone()
        pg.sql("CREATE TRIGGER z_skip_unchanged BEFORE UPDATE ON billing.customers FOR EACH ROW "
               "EXECUTE FUNCTION suppress_redundant_updates_trigger()", dbname="crm")
        stripe.control(fail_status=500)
        with pytest.raises(psycopg.Error):
            conn.execute(f"update billing.customers set name = 'Anna' where id = '{cid}'")
        stripe.control(fail_status=0)
    ((entry,),) = pg.sql("SELECT id::text FROM syncbouncer.intent", dbname="crm")
    wait_for(lambda: any(r["state"] == "settled" or int(r["attempts"] or 0) >= 1
                         for r in journal(b) if r["id"] == entry),
             "never tried:\n" + b.log()[-3000:])
    assert [r["state"] for r in journal(b) if r["id"] == entry] == ["settled"], journal(b)
    assert wait_settled(pg, stripe, b) == {cid: ("a@b.io", "Ann")}


# ---- two processes sharing one database ----------------------------------------------------

def test_another_instance_settles_what_a_dead_one_left(pg, bouncer_factory, stripe):
    a = start(pg, bouncer_factory, stripe, hold_ms=4000)
    b = start(pg, bouncer_factory, stripe, fresh=False)
    conn = crm(a)
    t, out = in_thread(lambda: conn.execute(
        "insert into billing.customers (email, name) values ('g@h.io', 'Gil')"))
    wait_for(lambda: len(stripe.store()) == 1, "the API never got the insert")
    time.sleep(0.3)
    a.proc.kill()
    a.proc.wait()
    a.stopped_by_us = True
    t.join(20)
    assert "error" in out, a.log()[-3000:]
    # b, which never saw the write, settles it; writes through b meanwhile work
    with crm(b) as c2:
        c2.execute("insert into billing.customers (email, name) values ('i@j.io', 'Ida')")
    settled = wait_settled(pg, stripe, b)
    assert sorted(v[1] for v in settled.values()) == ["Gil", "Ida"], b.log()[-3000:]
    assert len(stripe.store()) == 2
    assert "journal entry" in b.log() and "settled" in b.log()


def test_a_request_that_left_late_lands_before_its_record_is_read(pg, bouncer_factory, stripe):
    """timeout=1 s, deadline=3 s: an update whose request timed out at the API sends it again
    with the same Idempotency-Key, well after its intent was written. Its process is killed while
    that late request is held at the API, which applies it later (as Stripe applies a request
    whose caller hung up). The intent is then older than twice the timeout plus a second, yet the
    other instance must not read the record before the late request can have landed: it waits,
    counted from when it saw the writer gone, and the table ends equal to the API."""
    a = start(pg, bouncer_factory, stripe, deadline=3)
    with crm(a) as conn:
        (cid,) = conn.execute("insert into billing.customers (email, name) values "
                              "('a@b.io', 'Ann') returning id").fetchone()
    stripe.control(hold_writes=True)
    conn = crm(a)
    t, out = in_thread(lambda: conn.execute(
        f"update billing.customers set name = 'Anna' where id = '{cid}'"))
    # the first request timed out at the gate; the repeat that left after it is held there too
    wait_for(lambda: stripe.call("GET", "/_gate/held")["held"] >= 2,
             "the update was not sent again:\n" + a.log()[-3000:])
    a.proc.kill()
    a.proc.wait()
    a.stopped_by_us = True
    t.join(20)
    assert "error" in out
    b = start(pg, bouncer_factory, stripe, fresh=False, deadline=3)

    def waiting():
        with admin(b) as ac:
            cur = ac.execute("SHOW JOURNAL")
            cols = [c.name for c in cur.description]
            rows = [dict(zip(cols, r)) for r in cur.fetchall()]
        return [r["state"] for r in rows if r["keys"] == cid and r["state"] != "settled"]

    # b has seen the writer gone: it waits (or, wrongly, has settled already)
    wait_for(lambda: not intents(pg) or waiting() == ["awaiting late request"],
             "b never looked at the intent:\n" + b.log()[-3000:])
    wait_for(lambda: pg.sql("SELECT coalesce(bool_and(now() - created > interval '3 s'), true) "
                            "FROM syncbouncer.intent", dbname="crm")[0][0],
             "the intent never got older than 2 x timeout + 1 s")
    stripe.call("POST", "/_gate/open")
    wait_for(lambda: stripe.store()[cid].get("name") == "Anna", "the API never applied it")
    assert wait_settled(pg, stripe, b, timeout=20)[cid] == ("a@b.io", "Anna")
    assert len(stripe.store()) == 1


@pytest.mark.parametrize("fault", ["timeout", "rate_limit"])
def test_a_write_whose_transaction_ended_sends_its_request_no_more(pg, bouncer_factory, stripe,
                                                                  fault):
    """An update's first request times out (held at the API) or is refused with 429, and the
    write's database session is terminated before its repeat (same Idempotency-Key) would
    leave. Its intent then has no writer, and any process may settle it; a repeat could land
    after that settling read the record. So the write sends nothing more: the API got one
    request of it; the client is told the outcome is unknown (timeout) or that the write lost
    its database connection and nothing was written (429); the table ends equal to the API."""
    b = start(pg, bouncer_factory, stripe, deadline=5 if fault == "timeout" else 3)
    with crm(b) as conn:
        (cid,) = conn.execute("insert into billing.customers (email, name) values "
                              "('a@b.io', 'Ann') returning id").fetchone()
    posts = lambda: [r for r in stripe.requests() if r["method"] == "POST"]
    if fault == "timeout":
        stripe.control(hold_writes=True)
    else:
        stripe.control(rate_limit=1)  # 429, retried after 1 s, within the 3 s deadline
    conn = crm(b)
    t, out = in_thread(lambda: conn.execute(
        f"update billing.customers set name = 'Anna' where id = '{cid}'"))
    wait_for(lambda: len(posts()) == 2, "the update never reached the API")
    assert pg.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                  "WHERE application_name = 'syncbouncer mutation' "
                  "AND state = 'idle in transaction'", dbname="postgres") == [(True,)]
    t.join(20)
    conn.close()
    e = out.get("error")
    if fault == "timeout":
        assert isinstance(e, psycopg.errors.InternalError_), out
        assert "outcome unknown" in e.diag.message_primary
    else:
        assert e is not None and e.diag.sqlstate == "58000", out
        assert e.diag.message_primary == "lost the database connection of a synced-table write"
        assert e.diag.message_detail == "Nothing was written to stripe."
    assert len(posts()) == 2, posts()  # the insert, and the update's first request alone
    if fault == "timeout":
        stripe.call("POST", "/_gate/open")
        wait_for(lambda: stripe.store()[cid].get("name") == "Anna", "the API never applied it")
    want = "Anna" if fault == "timeout" else "Ann"
    assert wait_settled(pg, stripe, b, timeout=20)[cid] == ("a@b.io", want)


# ---- Stripe's idempotency keys do not last: pruned after a day, 500s saved -----------------

def journal(b):
    with admin(b) as ac:
        cur = ac.execute("SHOW JOURNAL")
        cols = [c.name for c in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]


@pytest.mark.parametrize("obj,older", [("customers", False), ("coupons", False),
                                       ("customers", True)])
def test_an_insert_older_than_stripe_keeps_its_key_is_never_sent_again(pg, bouncer_factory,
                                                                       stripe, obj, older):
    """The pooler dies after Stripe created the record, and comes back a day later: Stripe has
    pruned the insert's idempotency key and would take a repeat for a new request. Customers are
    found by the key the record carries (Search API); coupons cannot be searched, so the write
    waits for the operator, saying why. An insert an older syncbouncer sent (its intent's key
    is 32 hex digits alone, and its record does not carry it) is never searched for, where none
    found would wrongly say not created: it waits for the operator too. Never a second record."""
    b = start(pg, bouncer_factory, stripe, hold_ms=4000, obj=obj)
    records = lambda: stripe.call("GET", "/_store").get(obj, {})
    conn = crm(b)
    t, out = in_thread(lambda: conn.execute(
        "insert into billing.customers (email, name) values ('c@d.io', 'Cy')"))
    wait_for(lambda: len(records()) == 1, "the API never got the insert")
    b.proc.kill()  # before the commit: the answer is lost with the process
    b.proc.wait()
    b.stderr_file.close()
    t.join(20)
    assert "error" in out
    # a day goes by: Stripe prunes the key, and the write's intent is a day old
    stripe.control(age_keys_s=25 * 3600)
    pg.sql("UPDATE syncbouncer.intent SET created = created - interval '25 hours'", dbname="crm")
    if older:
        pg.sql("UPDATE syncbouncer.intent SET idempotency_key = md5(idempotency_key)",
               dbname="crm")
    b.start()
    if older:
        wait_for(lambda: [r["state"] for r in journal(b)] == ["needs operator"],
                 "not left to the operator: %s\n%s" % (journal(b), b.log()[-3000:]))
        assert "sent by an older syncbouncer" in journal(b)[0]["last_error"]
        assert table(pg) == {}
        assert not [r for r in stripe.requests() if r["path"].endswith("/search")]
    elif obj == "customers":
        settled = wait_settled(pg, stripe, b)
        assert list(settled.values()) == [("c@d.io", "Cy")]
        assert [r["state"] for r in journal(b)] == ["settled"]
        assert "found by the idempotency key" in journal(b)[0]["last_error"]
    else:
        wait_for(lambda: [r["state"] for r in journal(b)] == ["needs operator"],
                 "not left to the operator: %s\n%s" % (journal(b), b.log()[-3000:]))
        assert "longer than stripe keeps idempotency keys" in journal(b)[0]["last_error"]
        assert "JOURNAL GIVEUP" in b.log()
        assert table(pg) == {}
        # JOURNAL RETRY meets a failure of another kind (here: an intent that cannot be read):
        # the entry says so, and is no longer waiting for the operator but tried again by itself
        iid = journal(b)[0]["id"]
        pg.sql("UPDATE syncbouncer.intent SET rows = jsonb_build_object('was', rows)",
               dbname="crm")
        with admin(b) as ac:
            ac.execute(f"JOURNAL RETRY {iid}")
        unreadable = "the intent's row images cannot be read"
        wait_for(lambda: journal(b)[0]["last_error"] == unreadable, "retry not run: %s"
                 % journal(b))
        assert journal(b)[0]["state"] == "unsettled"
        # mended, and asked again: back to the operator for the first reason
        pg.sql("UPDATE syncbouncer.intent SET rows = rows->'was'", dbname="crm")
        with admin(b) as ac:
            ac.execute(f"JOURNAL RETRY {iid}")
        wait_for(lambda: [r["state"] for r in journal(b)] == ["needs operator"] and
                 "longer than" in journal(b)[0]["last_error"], "%s" % journal(b))
    assert len(records()) == 1  # never a second record
    posts = [r for r in stripe.requests() if r["method"] == "POST"]
    assert len(posts) == 1, posts


@pytest.mark.parametrize("applied", [True, False])
def test_an_insert_whose_500_stripe_saved_for_its_key_is_settled(pg, bouncer_factory, stripe,
                                                                 applied):
    """Stripe saves a 500 once the endpoint began and answers it to every repeat of the key
    (Idempotent-Replayed: true): repeating tells nothing, so the writer stops repeating and the
    settler looks the record up by its key (created or not) instead of repeating forever."""
    b = start(pg, bouncer_factory, stripe)
    stripe.control(saved_500=1, saved_500_applied=applied)
    with crm(b) as conn:
        with pytest.raises(psycopg.Error) as ei:
            conn.execute("insert into billing.customers (email, name) values ('c@d.io', 'Cy')")
    d = ei.value.diag
    assert d.sqlstate == "58000"
    assert "may have applied the insert" in d.message_detail
    assert "journal entry" in d.message_detail
    if not applied:
        # none found proves nothing until Stripe's search index surely caught up (an hour)
        pg.sql("UPDATE syncbouncer.intent SET created = created - interval '2 hours'",
               dbname="crm")
    settled = wait_settled(pg, stripe, b)
    assert list(settled.values()) == ([("c@d.io", "Cy")] if applied else [])
    assert len(stripe.store()) == (1 if applied else 0)
    (row,) = journal(b)
    assert row["state"] == "settled"
    assert ("found by the idempotency key" if applied else "no record carries") in \
        row["last_error"]
    # one repeat by the writer and one by the settler got the saved 500 back; no more
    posts = [r for r in stripe.requests() if r["method"] == "POST"]
    assert 2 <= len(posts) <= 3 and len({r["idempotency_key"] for r in posts}) == 1, posts


# ---- the console: SHOW JOURNAL, JOURNAL RETRY, JOURNAL GIVEUP ------------------------------

def admin(b):
    return b.connect(dbname="pgbouncer", user="postgres", password="postgres", autocommit=True,
                     prepare_threshold=None)


def test_show_journal_lists_unsettled_writes_and_giving_up_needs_a_word(pg, bouncer_factory,
                                                                       stripe):
    mport = free_port()
    b = start(pg, bouncer_factory, stripe,
              pgbouncer={"settle_deadline": 3600, "metrics_listen": f"127.0.0.1:{mport}"})
    assert journal_gauge(mport) == 0
    with crm(b) as conn:
        (cid,) = conn.execute("insert into billing.customers (email, name) values "
                              "('a@b.io', 'Ann') returning id").fetchone()
        stripe.control(fail_status=500)  # reads fail too: the entry stays unsettled
        with pytest.raises(psycopg.Error):
            conn.execute(f"update billing.customers set name = 'Anna' where id = '{cid}'")
    ((iid,),) = pg.sql("SELECT id::text FROM syncbouncer.intent", dbname="crm")
    with admin(b) as ac:
        # the deadline the running settler goes by is the one SET gives (no RELOAD needed)
        assert ac.execute("SET settle_deadline = 2").statusmessage == "SET settle_deadline=2"
        deadline = time.monotonic() + 30
        while True:
            cur = ac.execute("SHOW JOURNAL")
            cols = [c.name for c in cur.description]
            rows = [dict(zip(cols, r)) for r in cur.fetchall()]
            mine = [r for r in rows if r["id"] == iid]
            if mine and int(mine[0]["attempts"]) >= 1 and mine[0]["overdue"] == "yes":
                break
            assert time.monotonic() < deadline, rows
            time.sleep(0.3)
        row = mine[0]
        assert row["table"] == "billing.customers" and row["operation"] == "update"
        assert row["keys"] == cid and row["state"] == "unsettled"
        assert " pid " in row["owner"]
        # past settle_deadline: alerted once in the log
        assert b.log().count(f"journal entry {iid} (update of billing.customers, keys {cid}) "
                             "is not settled after") == 1
        assert "failed" in row["last_error"]
        # the metrics endpoint counts it as the journal backlog
        assert journal_gauge(mport) == 1
        with pytest.raises(psycopg.Error) as ei:
            ac.execute(f"JOURNAL GIVEUP {iid}")
        assert "CONFIRM" in str(ei.value)
        with pytest.raises(psycopg.Error):
            ac.execute("JOURNAL RETRY 12345")
        ac.execute(f"JOURNAL GIVEUP {iid} CONFIRM")
        wait_for(lambda: not intents(pg), "the entry was not dropped")
        rows = [dict(zip(cols, r)) for r in ac.execute("SHOW JOURNAL").fetchall()]
        assert [r["state"] for r in rows if r["id"] == iid] == ["given up"]
    assert "given up unsettled" in b.log()
    wait_for(lambda: journal_gauge(mport) == 0, "the backlog gauge did not drop to 0")
    stripe.control(fail_status=0)


def journal_gauge(port):
    """syncbouncer_journal_pending_entries as the metrics endpoint shows it."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    found = [line.split()[-1] for line in text.splitlines()
             if line.startswith("syncbouncer_journal_pending_entries ")]
    assert len(found) == 1, text
    return int(found[0])


# ---- an API that cannot be asked: the sync worker's next pass ------------------------------

def test_insert_the_api_cannot_be_asked_about_is_left_to_the_sync_worker(pg, bouncer_factory):
    """Salesforce without an external id: an insert whose answer timed out cannot be found by
    asking; settling hands it to the sync worker, whose pass imports the created record."""
    from test_synced import FakeSalesforce, start_synced

    fake = FakeSalesforce()
    try:
        b = start_synced(pg, bouncer_factory, fake,
                         table_extra="columns='note:Description' sync_interval=1")
        fake.control(delay_ms=4000)  # past the API's timeout (3 s): applied, answer lost
        with crm(b) as conn:
            with pytest.raises(psycopg.errors.InternalError_) as ei:
                conn.execute("insert into salesforce.contacts (last_name, email) "
                             "values ('Idaho', 'duncan@caladan.io')")
        assert "outcome unknown" in ei.value.diag.message_primary
        fake.control(delay_ms=0)
        wait_for(lambda: len(fake.store()) == 1, "the API never applied the insert")
        (cid,) = fake.store().keys()
        wait_for(lambda: pg.sql("SELECT count(*) FROM syncbouncer.intent",
                                dbname="crm")[0][0] == 0 and
                 pg.sql("SELECT id, last_name FROM salesforce.contacts", dbname="crm") ==
                 [(cid, "Idaho")], "not settled:\n" + b.log()[-4000:], timeout=40)
        with admin(b) as ac:
            cur = ac.execute("SHOW JOURNAL")
            cols = [c.name for c in cur.description]
            rows = [dict(zip(cols, r)) for r in cur.fetchall()]
        assert [r["state"] for r in rows] == ["settled"], rows
        assert "sync worker" in rows[0]["last_error"]
    finally:
        fake.stop()


def test_commit_failure_of_200_inserts_names_the_ids_and_settles_them(pg, bouncer_factory):
    """The longest answer there is (200 Salesforce ids) in the DETAIL of a failed commit: cut
    to fit, the process unharmed, and settling reads every record back into the table."""
    from test_synced import FakeSalesforce, start_synced

    fake = FakeSalesforce()
    try:
        b = start_synced(pg, bouncer_factory, fake,
                         table_extra="columns='note:Description' sync_interval=0 backfill=off")
        fake.control(delay_ms=1000)
        with crm(b) as conn:
            killer = threading.Thread(target=terminate_held_mutation,
                                      args=(pg, writes_arrived(fake)))
            killer.start()
            with pytest.raises(psycopg.errors.InternalError_) as ei:
                conn.execute("insert into salesforce.contacts (last_name) "
                             "select 'n' || g from generate_series(1, 200) g")
            killer.join()
        fake.control(delay_ms=0)
        ids = sorted(fake.store())
        assert len(ids) == 200
        d = ei.value.diag
        assert "applied to salesforce but not yet to the database" in d.message_primary
        assert d.message_detail.startswith("salesforce record ids: ")
        assert len(d.message_detail) < 1024
        with crm(b) as conn:  # the process is still there
            conn.execute("select 1")
        wait_for(lambda: sorted(r[0] for r in pg.sql("SELECT id FROM salesforce.contacts",
                                                     dbname="crm")) == ids,
                 "not settled:\n" + b.log()[-3000:], timeout=60)
        assert not intents(pg)
    finally:
        fake.stop()


# ---- who may read the intents --------------------------------------------------------------

# The intents table as an installation of schema version 5 left it: readable and writable by
# PUBLIC (with a stand-in guard, so that the pooler finds the schema and upgrades it).
V5_INSTALL = """
DROP SCHEMA IF EXISTS syncbouncer CASCADE;
CREATE SCHEMA syncbouncer AUTHORIZATION app;
SET ROLE app;
CREATE TABLE syncbouncer.intent (id int8 PRIMARY KEY, tbl oid NOT NULL, tbl_name text NOT NULL,
    op "char" NOT NULL, api text NOT NULL, rows jsonb NOT NULL, keys text[] NOT NULL,
    idempotency_key text NOT NULL, answer jsonb,
    created timestamptz NOT NULL DEFAULT now(), attempts int NOT NULL DEFAULT 0,
    last_error text, owner text);
CREATE TABLE syncbouncer.meta (key text PRIMARY KEY, value text);
INSERT INTO syncbouncer.meta VALUES ('version', '5');
CREATE FUNCTION syncbouncer.guard() RETURNS trigger LANGUAGE plpgsql AS 'begin return null; end';
GRANT USAGE ON SCHEMA syncbouncer TO PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON syncbouncer.intent TO PUBLIC;
RESET ROLE;
"""


def test_intents_are_hidden_from_other_roles_whose_writes_still_work(pg, bouncer_factory,
                                                                     stripe):
    """The intents keep the row images of unsettled writes: a role that can merely connect
    cannot read them, also after an upgrade from the version that granted them to PUBLIC; yet
    such a role writing through the proxy still records, clears and settles its intents, and
    its writes still wait for a row's unsettled write."""
    if not pg.sql("SELECT 1 FROM pg_roles WHERE rolname = 'bookkeeper'"):
        pg.sql("CREATE ROLE bookkeeper")
    pg.sql("SET password_encryption = 'md5'; ALTER ROLE bookkeeper LOGIN PASSWORD 'clerkpw'")
    if not pg.sql("SELECT 1 FROM pg_roles WHERE rolname = 'outsider'"):
        pg.sql("CREATE ROLE outsider LOGIN")  # may connect, nothing more
    pg.sql(DDL, dbname="crm")
    pg.sql("GRANT USAGE ON SCHEMA billing TO bookkeeper;"
           " GRANT SELECT, INSERT, UPDATE, DELETE ON billing.customers TO bookkeeper", dbname="crm")
    pg.sql(V5_INSTALL, dbname="crm")
    cfg = config(pg, stripe)
    # clients log in as themselves; the catalog, the settler and the sync worker as app
    cfg["databases"] = {"crm": f"host=127.0.0.1 port={pg.port} dbname=crm"}
    cfg["synced_tables"] = [cfg["synced_tables"][0] + " user=app"]
    b = bouncer_factory(config=cfg, users={"app": "secret", "bookkeeper": "clerkpw",
                                           "postgres": "postgres"})
    wait_guard(pg, b)
    assert pg.sql("SELECT value FROM syncbouncer.meta WHERE key = 'version'",
                  dbname="crm") != [("5",)]

    def clerk():
        return b.connect(dbname="crm", user="bookkeeper", password="clerkpw", autocommit=True)

    with clerk() as conn:
        (cid,) = conn.execute("insert into billing.customers (email, name) values "
                              "('a@b.io', 'Ann') returning id").fetchone()
        assert conn.execute(f"update billing.customers set name = 'Anna' where id = '{cid}'"
                            ).rowcount == 1
        assert not intents(pg)  # the apply transactions cleared them
        stripe.control(fail_status=500)  # reads fail too: the write stays unsettled
        with pytest.raises(psycopg.Error):
            conn.execute(f"update billing.customers set name = 'Anne' where id = '{cid}'")
        ((iid, op),) = intents(pg)
        assert op == "U"

    with pg.connect(dbname="crm", user="bookkeeper") as direct:
        for sql in ("SELECT * FROM syncbouncer.intent",
                    "SELECT rows FROM syncbouncer.intent",
                    f"DELETE FROM syncbouncer.intent WHERE id = {iid}",
                    "CALL syncbouncer.intent_record(1, 'pg_catalog.pg_authid'::regclass,"
                    " 'pg_authid', 'D', 'stripe', '[]', '[\"x\"]', 'k', 'me')"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                direct.execute(sql)
        # forgetting an intent takes its idempotency key, which no client is shown
        direct.execute(f"CALL syncbouncer.intent_forget({iid}, 'guessed')")
    assert [i[0] for i in intents(pg)] == [iid]
    # a role that may only connect learns nothing, not even that the row has an intent
    with pg.connect(dbname="crm", user="outsider") as direct:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            direct.execute("SELECT * FROM syncbouncer.intent")
        ((tbl,),) = pg.sql("SELECT 'billing.customers'::regclass::oid", dbname="crm")
        assert direct.execute(f"SELECT syncbouncer.intent_blocking({tbl}, '{cid}')"
                              ).fetchall() == [(None,)]
        assert direct.execute(f"SELECT syncbouncer.intent_unsettled_insert({tbl})"
                              ).fetchall() == []
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            direct.execute(f"CALL syncbouncer.intent_record(2, {tbl}, 'billing.customers',"
                           " 'U', 'stripe', '[]', '[\"x\"]', 'k', 'me')")

    with clerk() as conn:
        with pytest.raises(psycopg.errors.SerializationFailure) as ei:
            conn.execute(f"update billing.customers set name = 'Anne' where id = '{cid}'")
        assert str(iid) in ei.value.diag.message_detail
        stripe.control(fail_status=0)
        wait_settled(pg, stripe, b)
        assert conn.execute(f"update billing.customers set name = 'Anne' where id = '{cid}'"
                            ).rowcount == 1
    assert wait_settled(pg, stripe, b) == {cid: ("a@b.io", "Anne")}


# ---- two versions of the schema: never a downgrade --------------------------------------

def synced_table_row(b):
    with admin(b) as conn:
        cur = conn.execute("SHOW SYNCED_TABLES")
        cols = [d.name for d in cur.description]
        (row,) = [dict(zip(cols, r)) for r in cur.fetchall()]
    return row


def test_a_newer_schema_is_left_alone_and_its_tables_not_served(pg, bouncer_factory, stripe):
    """A newer syncbouncer installed its schema version over ours (a rolling upgrade, or a
    rollback of this one): a RELOAD of this older pooler leaves that schema alone, reports the
    table failed naming both versions, and refuses its writes with the error of a table that
    could not be prepared. Deleting the version row (the documented rollback) lets it in again."""
    b = start(pg, bouncer_factory, stripe)
    ((ours,),) = pg.sql("SELECT value FROM syncbouncer.meta WHERE key = 'version'", dbname="crm")
    newer = str(int(ours) + 1)
    # what the newer pooler installed: its version, its own text of a function
    marker = "begin /* version %s */ return null; end" % newer
    pg.sql(f"UPDATE syncbouncer.meta SET value = '{newer}' WHERE key = 'version'; "
           f"CREATE OR REPLACE FUNCTION syncbouncer.applied() RETURNS trigger "
           f"LANGUAGE plpgsql AS '{marker}'", dbname="crm")
    with admin(b) as conn:
        conn.execute("RELOAD")
    wait_for(lambda: synced_table_row(b)["state"] == "failed", "table not failed")
    want = (f"the syncbouncer schema in database crm is version {newer}, newer than this "
            f"syncbouncer's {ours}: upgrade syncbouncer")
    assert synced_table_row(b)["error"] == want
    assert want in b.log()
    with crm(b) as conn:
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as ei:
            conn.execute("insert into billing.customers (email) values ('a@b.io')")
        assert want in ei.value.diag.message_primary
    assert pg.sql("SELECT value FROM syncbouncer.meta WHERE key = 'version'",
                  dbname="crm") == [(newer,)]
    assert pg.sql("SELECT prosrc FROM pg_proc WHERE oid = 'syncbouncer.applied()'::regprocedure",
                  dbname="crm") == [(marker,)]
    assert stripe.requests() == [] and table(pg) == {}

    # the rollback: the newer pooler is gone, the version row deleted by the schema's owner
    with pg.connect(dbname="crm", user="app") as owner:
        owner.execute("DELETE FROM syncbouncer.meta WHERE key = 'version'")
    with admin(b) as conn:
        conn.execute("RELOAD")
    wait_for(lambda: synced_table_row(b)["state"] == "ready", "table not ready")
    assert pg.sql("SELECT value FROM syncbouncer.meta WHERE key = 'version'",
                  dbname="crm") == [(ours,)]
    with crm(b) as conn:
        (cid,) = conn.execute("insert into billing.customers (email) values ('a@b.io') "
                              "returning id").fetchone()
    assert table(pg) == {cid: ("a@b.io", None)}


# ---- HubSpot, Airtable and REST: updates and deletes settle by reading the records ---------

class FakeApi(FakeServer):
    """A fake of test/fakes/ other than Stripe's: its whole store, and its request log."""

    def store(self):
        return self.call("GET", "/_store")

    def requests(self):
        return self.call("GET", "/_requests")


# connector: (fake, its arguments, [apis] line after base_url, table DDL columns, the table's
# columns besides id, object=, how a stored record reads as those columns, a read request)
READERS = {
    "hubspot": ("fake_hubspot.py", ["--token", "hs-token"], "auth=bearer token=hs-token",
                "firstname text, email text", ("firstname", "email"), "contacts",
                lambda r: (r["properties"].get("firstname"), r["properties"].get("email")),
                lambda q: q["method"] == "POST" and q["path"].endswith("/batch/read")),
    "airtable": ("fake_airtable.py", ["--token", "at-token"],
                 "base_id=appFAKE auth=bearer token=at-token",
                 "name text, email text", ("name", "email"), "Contacts",
                 lambda r: (r["fields"].get("name"), r["fields"].get("email")),
                 lambda q: q["method"] == "GET" and q["path"].count("/") == 4),
    "rest": ("fake_rest.py", ["--token", "rest-token"],
             "auth=bearer token=rest-token path=/contacts",
             "name text, email text", ("name", "email"), "contacts",
             lambda r: (r.get("name"), r.get("email")),
             lambda q: q["method"] == "GET" and q["path"].startswith("/contacts/")),
}


@pytest.mark.parametrize("kind", sorted(READERS))
def test_writes_of_unknown_outcome_settle_by_asking_the_api(pg, bouncer_factory, kind):
    """No sync worker polls the table: an update and a delete whose answers came too late (the
    API applied both) are settled by reading each record by id. With external_id=email (a
    field with unique values; HubSpot and Airtable), an insert whose answer was lost is found
    by it (a batch read by unique property for HubSpot, a formula for Airtable), one that never
    reached the API is known not to exist, and repeating the lost insert makes no second record
    (Airtable merges on the field, HubSpot refuses the duplicate email)."""
    script, args, auth, ddl, cols, obj, as_row, is_read = READERS[kind]
    ext = kind in ("airtable", "hubspot")
    fake = FakeApi(script, *args)
    try:
        pg.sql("DROP SCHEMA IF EXISTS syncbouncer CASCADE;"
               f" DROP SCHEMA IF EXISTS {kind} CASCADE;"
               f" CREATE SCHEMA {kind} AUTHORIZATION app;"
               f" CREATE TABLE {kind}.contacts (id text PRIMARY KEY, {ddl});"
               f" ALTER TABLE {kind}.contacts OWNER TO app", dbname="crm")
        b = bouncer_factory(config={
            "databases": {"crm": f"host=127.0.0.1 port={pg.port} dbname=crm user=app "
                                 "password=secret"},
            "apis": [f"{kind} = type={kind} base_url={fake.url} {auth} timeout=1 deadline=1"],
            "synced_tables": [f"crm.{kind}.contacts = api={kind} object={obj} "
                              f"{'external_id=email ' if ext else ''}"
                              "sync_interval=0 backfill=off"],
        })
        wait_guard(pg, b)
        store = lambda: {i: as_row(r) for i, r in fake.store().get(obj, {}).items()}
        rows = lambda: {r[0]: (r[1], r[2]) for r in pg.sql(
            f"SELECT id, {cols[0]}, {cols[1]} FROM {kind}.contacts", dbname="crm")}
        ins = (f"insert into {kind}.contacts ({cols[0]}, {cols[1]}) values ('{{0}}', "
               "'{1}@caladan.io') returning id")
        with crm(b) as conn:
            ids = [conn.execute(ins.format(n, n.lower())).fetchone()[0]
                   for n in ("Paul", "Leto")]
            if ext:
                # first, while no settling asks the API (it would take the one failure):
                # failed before applying anything
                fake.control(fail_status=500, fail_count=1)
                with pytest.raises(psycopg.Error):
                    conn.execute(ins.format("Gurney", "gurney"))
            fake.control(delay_ms=1600)  # past the API's timeout: applied, answer lost
            lost = [(f"update {kind}.contacts set {cols[0]} = 'Paul A' where id = '{ids[0]}'",
                     ids[0]),
                    (f"delete from {kind}.contacts where id = '{ids[1]}'", ids[1])]
            if ext:
                lost.append((ins.format("Duncan", "duncan"), "insert"))
            for sql, key in lost:
                with pytest.raises(psycopg.errors.InternalError_) as ei:
                    conn.execute(sql)
                assert "outcome unknown" in ei.value.diag.message_primary
                assert key in ei.value.diag.message_detail
            fake.control(delay_ms=0)
            want = {("Paul A", "paul@caladan.io")} | ({("Duncan", "duncan@caladan.io")}
                                                     if ext else set())
            wait_for(lambda: set(store().values()) == want, "the API never applied them all")
            if kind == "hubspot":
                with pytest.raises(psycopg.errors.UniqueViolation):
                    conn.execute(ins.format("Duncan", "duncan"))
            elif kind == "airtable":
                conn.execute(ins.format("Duncan", "duncan"))
        wait_for(lambda: not intents(pg) and rows() == store(),
                 f"not settled: {intents(pg)} {rows()} {store()}\n" + b.log()[-4000:],
                 timeout=30)
        assert sorted(store().values()) == sorted(want)  # nothing doubled
        assert any(is_read(q) for q in fake.requests()), fake.requests()
        with admin(b) as ac:
            cur = ac.execute("SHOW JOURNAL")
            names = [c.name for c in cur.description]
            journal = sorted((r["operation"], r["state"], r["last_error"].split(";")[0]) for r in
                             (dict(zip(names, r)) for r in cur.fetchall()))
        cur_state = "the table has the API's current state of the records"
        assert journal == sorted(
            [("delete", "settled", cur_state), ("update", "settled", cur_state)]
            + ([("insert", "settled", "created at the API (found by its external id)"),
                ("insert", "settled", "not created at the API (no record has its external "
                                      "id)")] if ext else [])), journal
    finally:
        fake.stop()


# ---- Salesforce with an external id: inserts are upserts, and are found again --------------

def test_salesforce_inserts_on_an_external_id_are_never_doubled_and_are_found_again(
        pg, bouncer_factory):
    """external_id= names a column whose field is an External ID of the object: an insert goes
    out as an upsert on it, so a client repeating an insert whose outcome it was not told does
    not create a second record; settling finds the record of a lost answer by that value (or
    learns that none was created) instead of waiting for the sync worker."""
    from test_synced import FakeSalesforce, start_synced

    fake = FakeSalesforce()
    try:
        b = start_synced(pg, bouncer_factory, fake, api_timeout=1,
                         before_start=lambda: pg.sql(
                             "ALTER TABLE salesforce.contacts ADD COLUMN ext_id text",
                             dbname="crm"),
                         table_extra="columns='note:Description,ext_id:Ext_Id__c' "
                                     "external_id=ext_id sync_interval=0 backfill=off")
        ins = ("insert into salesforce.contacts (last_name, ext_id) values ('{0}', '{1}') "
               "returning id")
        api = lambda: {r.get("Ext_Id__c"): (i, r.get("LastName"))
                       for i, r in fake.store().items()}
        rows = lambda: pg.sql("SELECT ext_id, id, last_name FROM salesforce.contacts "
                              "ORDER BY ext_id", dbname="crm")
        with crm(b) as conn:
            with pytest.raises(psycopg.errors.InvalidParameterValue) as ei:
                conn.execute("insert into salesforce.contacts (last_name) values ('Nobody')")
            assert ei.value.diag.message_detail.startswith("Key (ext_id)=(null) column ext_id "
                                                           "is the table's external id")
            (e1,) = conn.execute(ins.format("Atreides", "E1")).fetchone()
            last = fake.requests()[-1]
            assert (last["method"], last["path"]) == (
                "PATCH", "/services/data/v59.0/composite/sobjects/Contact/Ext_Id__c")
            # one value twice in one statement: Salesforce matches neither, nothing is made
            with pytest.raises(psycopg.errors.UniqueViolation):
                conn.execute("insert into salesforce.contacts (last_name, ext_id) values "
                             "('Harkonnen', 'E9'), ('Rabban', 'E9')")
            # a 500 before anything was applied: unknown to the client, not created (first,
            # while no settling asks the API: it would take the one failure)
            fake.control(fail_status=500, fail_count=1)
            with pytest.raises(psycopg.Error):
                conn.execute(ins.format("Hawat", "E3"))
            # the answer is lost (slower than the timeout): the client repeats the statement
            fake.control(delay_ms=1500)
            with pytest.raises(psycopg.errors.InternalError_) as ei:
                conn.execute(ins.format("Idaho", "E2"))
            assert "outcome unknown" in ei.value.diag.message_primary
            fake.control(delay_ms=0)
            wait_for(lambda: "E2" in api(), "the API never applied the lost insert")
            (e2,) = conn.execute(ins.format("Idaho", "E2")).fetchone()
        wait_for(lambda: not intents(pg), "not settled:\n" + b.log()[-4000:], timeout=30)
        assert api() == {"E1": (e1, "Atreides"), "E2": (e2, "Idaho")}  # nothing doubled
        assert rows() == [("E1", e1, "Atreides"), ("E2", e2, "Idaho")]
        with admin(b) as ac:
            cur = ac.execute("SHOW JOURNAL")
            names = [c.name for c in cur.description]
            journal = sorted(r["last_error"] for r in
                             (dict(zip(names, r)) for r in cur.fetchall()))
        assert journal == ["created at the API (found by its external id); the table has "
                           "its state",
                           "not created at the API (no record has its external id)"], journal
    finally:
        fake.stop()




def test_salesforce_writes_applied_with_their_answers_lost_settle_to_the_apis_state(
        pg, bouncer_factory):
    """Salesforce applies an update and a delete and the answers never come back (the
    connection closes unanswered, and the request is not sent again). Before settling reads
    the records, another user changes the updated one at the API: the table takes that state,
    not the value of the lost write. The deleted row goes; the client repeating the delete is
    told to retry until then, and afterwards it finds nothing to delete. An insert lost so in a
    table with neither external_id= nor a sync worker cannot be found by anything: it waits,
    saying so and what to do."""
    from test_synced import FakeSalesforce, start_synced

    fake = FakeSalesforce()
    try:
        b = start_synced(pg, bouncer_factory, fake, api_timeout=1,
                         table_extra="columns='note:Description' sync_interval=0 backfill=off")
        rows = lambda: pg.sql("SELECT id, last_name, email FROM salesforce.contacts "
                              "ORDER BY id", dbname="crm")
        with crm(b) as conn:
            paul, leto = [conn.execute(
                "insert into salesforce.contacts (last_name, email) values (%s, %s) "
                "returning id", (n, f"{n.lower()}@caladan.io")).fetchone()[0]
                for n in ("Paul", "Leto")]
            fake.control(drop_after_apply=1)
            with pytest.raises(psycopg.errors.InternalError_) as ei:
                conn.execute("update salesforce.contacts set email = 'paul@arrakis.io' "
                             "where id = %s", (paul,))
            assert "outcome unknown" in ei.value.diag.message_primary
            assert fake.store()[paul]["Email"] == "paul@arrakis.io"  # applied all the same
            # another user, before the record is read back (settling first waits for any
            # late request: twice timeout= and a second)
            fake.call("POST", "/_records", {"object": "Contact", "op": "update", "id": paul,
                                            "fields": {"Email": "muaddib@arrakis.io"}})
            fake.control(drop_after_apply=1)
            with pytest.raises(psycopg.errors.InternalError_) as ei:
                conn.execute("delete from salesforce.contacts where id = %s", (leto,))
            assert "outcome unknown" in ei.value.diag.message_primary
            assert leto not in fake.store()
            with pytest.raises(psycopg.errors.SerializationFailure):
                conn.execute("delete from salesforce.contacts where id = %s", (leto,))
            wait_for(lambda: not intents(pg), "not settled:\n" + b.log()[-4000:], timeout=30)
            assert rows() == [(paul, "Paul", "muaddib@arrakis.io")]
            cur = conn.execute("delete from salesforce.contacts where id = %s", (leto,))
            assert cur.statusmessage == "DELETE 0"
            # an insert lost so, in a table with neither external_id= nor a sync worker:
            # nothing can find its record, and the journal says what a person can do
            fake.control(drop_after_apply=1)
            with pytest.raises(psycopg.errors.InternalError_) as ei:
                conn.execute("insert into salesforce.contacts (last_name) values ('Gurney')")
            assert "outcome unknown" in ei.value.diag.message_primary
        writes = [(r["method"], r.get("query", "")) for r in fake.requests()]
        assert writes.count(("DELETE", f"ids={leto}&allOrNone=true")) == 1, writes
        assert sorted((r["LastName"], r.get("Email")) for r in fake.store().values()) == [
            ("Gurney", None), ("Paul", "muaddib@arrakis.io")]
        ((iid,),) = pg.sql("SELECT id::text FROM syncbouncer.intent", dbname="crm")
        with admin(b) as ac:
            def journal():
                cur = ac.execute("SHOW JOURNAL")
                cols = [c.name for c in cur.description]
                return [r for r in (dict(zip(cols, r)) for r in cur.fetchall())
                        if r["id"] == iid]
            wait_for(lambda: [r["state"] for r in journal()] == ["awaiting sync"],
                     f"not awaiting sync: {journal()}")
            assert journal()[0]["last_error"] == (
                "the API gives no way to find the created record, and table "
                "salesforce.contacts has no sync worker (sync_interval=0, or its sync is off): "
                "give it a sync_interval, or check salesforce by hand, then JOURNAL GIVEUP")
            ac.execute(f"JOURNAL GIVEUP {iid} CONFIRM")
        wait_for(lambda: not intents(pg), "not given up:\n" + b.log()[-4000:])
    finally:
        fake.stop()



def test_a_table_with_upper_case_key_and_column_names_settles(pg, bouncer_factory, stripe):
    """primary_key=Id and a column "Email" (names PostgreSQL keeps in upper case only when
    quoted): an insert whose answer was lost is settled into the table by those names (the
    row is written by the settler's insert, which names the key as a JSON key)."""
    pg.sql("DROP SCHEMA IF EXISTS syncbouncer CASCADE;"
           " CREATE SCHEMA IF NOT EXISTS billing AUTHORIZATION app;"
           " DROP TABLE IF EXISTS billing.customers;"
           ' CREATE TABLE billing.customers ("Id" text PRIMARY KEY, "Email" text, name text);'
           " ALTER TABLE billing.customers OWNER TO app", dbname="crm")
    cfg = config(pg, stripe)
    cfg["synced_tables"] = [cfg["synced_tables"][0] + " primary_key=Id columns='Email:email'"]
    b = bouncer_factory(config=cfg)
    wait_guard(pg, b)
    rows = lambda: {r[0]: (r[1], r[2]) for r in pg.sql(
        'SELECT "Id", "Email", name FROM billing.customers', dbname="crm")}
    with crm(b) as conn:
        stripe.control(delay_ms=1500)  # past the API's timeout: applied, answer lost
        with pytest.raises(psycopg.errors.InternalError_) as ei:
            conn.execute('insert into billing.customers ("Email", name) '
                         "values ('c@d.io', 'Cy')")
        stripe.control(delay_ms=0)
        assert "outcome unknown" in ei.value.diag.message_primary
    wait_for(lambda: not intents(pg) and rows() == api_view(stripe)
             and list(rows().values()) == [("c@d.io", "Cy")],
             f"not settled: {intents(pg)} {rows()} {api_view(stripe)}\n" + b.log()[-4000:],
             timeout=40)
