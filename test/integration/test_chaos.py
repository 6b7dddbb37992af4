"""Chaos: synced writes under crashes, timeouts and lost answers, then a reconciliation.

Two syncbouncer processes share one database and one (fake) Stripe API. Client threads send a
seeded mix of writes (60 % inserts with RETURNING, 25 % updates, 15 % deletes) through either
process, while a fault thread, driven by the same seed, breaks things: API 500s, answers slower
than the API timeout, answers lost after the API applied the request, rejected values, kill -9
of a syncbouncer (restarted with the same ini and journal file), terminated mutation backends
and one fast PostgreSQL restart. When the faults stop, every unsettled write must settle; then:

  lost      a write a client was told succeeded, missing (or different) afterwards
  doubled   an insert the API holds more than once
  divergent a record that differs between the table and the API

must all be 0. The counts are printed. Clients write until the fault schedule is over (at most
SB_CHAOS_MUTATIONS writes in all); SB_CHAOS_SEED changes the run.
"""

import os
import random
import threading
import time

import psycopg
import pytest

from conftest import IS_PGBOUNCER
from test_intents import DDL, FakeStripe, config, table, wait_guard

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="synced tables exist only in syncbouncer")

SEED = int(os.environ.get("SB_CHAOS_SEED", "20261207"))
MUTATIONS = int(os.environ.get("SB_CHAOS_MUTATIONS", "3000"))
CLIENTS = 6


class Client(threading.Thread):
    """Writes its own rows only, and remembers what it was told about each."""

    def __init__(self, n, rng, bouncers, budget, done):
        super().__init__(daemon=True)
        self.n, self.rng, self.bouncers, self.budget = n, rng, bouncers, budget
        self.done = done
        self.conn = None
        self.rows = {}      # id -> expected (email, name) or None (deleted), when known
        self.unknown = set()  # ids whose last write's outcome is unknown
        self.markers = []   # name of every insert sent (unique)
        self.told = {"ok": 0, "unknown": 0, "rejected": 0, "retryable": 0, "conn": 0}
        self.error = None

    def connect(self):
        for _ in range(100):
            b = self.rng.choice(self.bouncers)
            try:
                self.conn = b.connect(dbname="crm", autocommit=True, connect_timeout=3)
                return
            except psycopg.OperationalError:
                time.sleep(0.1)
        raise RuntimeError("no syncbouncer accepted a connection for 10 s")

    def execute(self, sql, params=()):
        """ok, unknown, rejected, retryable; (status, result)"""
        for _ in range(50):
            if self.conn is None or self.conn.closed:
                self.connect()
            try:
                return "ok", self.conn.execute(sql, params)
            except psycopg.errors.SerializationFailure:
                self.told["retryable"] += 1
                time.sleep(0.2)
                continue
            except psycopg.errors.LockNotAvailable:
                self.told["retryable"] += 1
                time.sleep(0.2)
                continue
            except psycopg.errors.InternalError_ as e:
                return "unknown", e
            except psycopg.OperationalError as e:
                # the process died under us: we do not know what happened
                self.told["conn"] += 1
                self.conn = None
                return "unknown", e
            except psycopg.Error as e:
                if e.sqlstate in ("58000",):
                    # 5xx: "may have applied" unless it said nothing was written
                    if e.diag.message_detail and "Nothing was written" in e.diag.message_detail:
                        return "rejected", e
                    return "unknown", e
                return "rejected", e
        return "rejected", None

    def run(self):
        try:
            self.body()
        except Exception as e:  # reported by the test
            self.error = e
        finally:
            # a pooler stops on SIGTERM once its clients are gone (pgbouncer's way)
            if self.conn is not None and not self.conn.closed:
                self.conn.close()

    def body(self):
        seq = 0
        while self.budget > 0 and not self.done.is_set():
            self.budget -= 1
            seq += 1
            live = [k for k, v in self.rows.items() if v is not None]
            r = self.rng.random()
            if r < 0.60 or not live:
                name = f"c{self.n}-{seq}"
                email = f"{name}@chaos.io"
                self.markers.append(name)
                st, res = self.execute("insert into billing.customers (email, name) "
                                       "values (%s, %s) returning id", (email, name))
                if st == "ok":
                    (rid,) = res.fetchone()
                    self.rows[rid] = (email, name)
                self.told[st] += 1
            elif r < 0.85:
                rid = self.rng.choice(live)
                bad = self.rng.random() < 0.05
                email = "not-an-address" if bad else f"u{self.n}-{seq}@chaos.io"
                st, res = self.execute("update billing.customers set email = %s where id = %s",
                                       (email, rid))
                if st == "ok" and res.rowcount == 0:
                    # an earlier delete whose outcome was unknown did happen
                    self.rows[rid] = None
                    self.unknown.discard(rid)
                elif st == "ok":
                    self.rows[rid] = (email, self.rows[rid][1])
                    self.unknown.discard(rid)
                elif st == "unknown":
                    self.unknown.add(rid)
                self.told[st] += 1
            else:
                rid = self.rng.choice(live)
                st, _ = self.execute("delete from billing.customers where id = %s", (rid,))
                if st == "ok":
                    self.rows[rid] = None
                    self.unknown.discard(rid)
                elif st == "unknown":
                    self.unknown.add(rid)
                self.told[st] += 1


def test_chaos_nothing_lost_doubled_or_divergent(pg, bouncer_factory):
    rng = random.Random(SEED)
    stripe = FakeStripe()
    try:
        pg.sql("DROP SCHEMA IF EXISTS syncbouncer CASCADE", dbname="crm")
        pg.sql(DDL, dbname="crm")
        bouncers = [bouncer_factory(config=config(pg, stripe)) for _ in range(2)]
        wait_guard(pg, bouncers[0])
        per_client = MUTATIONS // CLIENTS
        done = threading.Event()
        clients = [Client(i, random.Random(rng.random()), bouncers, per_client, done)
                   for i in range(CLIENTS)]
        for c in clients:
            c.start()
        faults = {"api_500": 0, "api_slow": 0, "answer_lost": 0, "kill_9": 0,
                  "backend_terminated": 0, "pg_restart": 0}
        # the fault schedule: fixed counts of the hard faults, API faults in between
        plan = ["kill_9"] * 3 + ["backend_terminated"] * 2 + ["pg_restart"]
        plan += ["api_500", "api_slow", "answer_lost"] * 4
        rng.shuffle(plan)
        deadline = time.monotonic() + 150
        for fault in plan:
            time.sleep(rng.uniform(0.2, 0.8))
            faults[fault] += 1
            if fault == "api_500":
                stripe.control(fail_status=500, fail_count=1)
            elif fault == "api_slow":
                stripe.control(delay_ms=1500)
                time.sleep(1.0)
                stripe.control(delay_ms=0)
            elif fault == "answer_lost":
                stripe.control(drop_after_apply=1, after_drop_status=400)
            elif fault == "kill_9":
                b = rng.choice(bouncers)
                b.proc.kill()
                b.proc.wait()
                b.stderr_file.close()
                time.sleep(0.3)
                b.start()
            elif fault == "backend_terminated":
                pg.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                       "WHERE application_name = 'syncbouncer mutation'", dbname="postgres")
            elif fault == "pg_restart":
                pg.restart()
            assert time.monotonic() < deadline, "the fault schedule ran out of time"
        time.sleep(1.0)
        done.set()
        stripe.control(delay_ms=0, fail_status=0, drop_after_apply=0, after_drop_status=0)
        for c in clients:
            c.join(timeout=max(1, deadline - time.monotonic()))
            assert not c.is_alive(), "a client did not finish in time"
            assert c.error is None, repr(c.error)

        # faults stopped: everything settles (bounded)
        settle_deadline = time.monotonic() + 90
        while True:
            left = pg.sql("SELECT CASE WHEN to_regclass('syncbouncer.intent') IS NULL THEN 0 "
                          "ELSE (SELECT count(*) FROM syncbouncer.intent) END", dbname="crm")[0][0]
            t = table(pg)
            api = {k: (v.get("email"), v.get("name")) for k, v in stripe.store().items()}
            if left == 0 and t == api:
                break
            if time.monotonic() > settle_deadline:
                break
            time.sleep(0.5)

        # reconciliation
        divergent = len(set(t) ^ set(api)) + sum(1 for k in set(t) & set(api) if t[k] != api[k])
        names = [v[1] for v in api.values()]
        doubled = sum(names.count(n) - 1 for n in set(names))
        lost = []
        for c in clients:
            for rid, want in c.rows.items():
                if rid in c.unknown:
                    continue
                if (want is None and (rid in api or rid in t)) or \
                        (want is not None and (api.get(rid) != want or t.get(rid) != want)):
                    lost.append((rid, want, api.get(rid), t.get(rid)))
        told = {k: sum(c.told[k] for c in clients) for k in clients[0].told}
        sent = sum(told[k] for k in ("ok", "unknown", "rejected"))
        print(f"\nchaos seed={SEED} mutations={sent} clients={CLIENTS} told={told} "
              f"faults={faults} records={len(api)} unsettled={left} "
              f"lost={len(lost)} doubled={doubled} divergent={divergent}")
        logs = "\n".join(b.log()[-3000:] for b in bouncers)
        assert left == 0, f"{left} writes never settled\n{logs}"
        assert (len(lost), doubled, divergent) == (0, 0, 0), f"lost: {lost}\n{logs}"
        assert told["ok"] > sent // 2  # the run did real work
    finally:
        stripe.stop()
