/*
 * Tests of pgc against a real PostgreSQL that this program starts (initdb into a temp dir, as the
 * `postgres` OS user when run as root, on a free port below 30000): connecting, statements in
 * order, text and binary parameters and results, error results, several statements in one
 * text, a backend terminated mid-statement, a closed port, connect_timeout, closing from inside
 * callbacks, and a loop timer that keeps firing while a statement waits on a lock.
 * Without PostgreSQL binaries (SB_PG_BIN, default /usr/lib/postgresql/15/bin) the tests skip.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "pgc.h"

#include "../fakes/pg_launch.h"
#include "../fakes/test_ports.h"

static struct pg_server pg;
static bool pg_up;
static char conninfo[512];

static int pg_start(void **state)
{
	(void)state;
	switch (pg_server_start(&pg)) {
	case PG_LAUNCH_OK:
		break;
	case PG_LAUNCH_NO_BINARIES:
		return 0; /* pg_up stays false: the tests that need it skip */
	case PG_LAUNCH_FAILED:
		return -1;
	}
	snprintf(conninfo, sizeof(conninfo),
	         "host=127.0.0.1 port=%d dbname=postgres user=postgres connect_timeout=5", pg.port);
	pg_up = true;
	return 0;
}

static int pg_stop(void **state)
{
	(void)state;
	pg_server_stop(&pg);
	return 0;
}

#define NEED_PG()                                                                                  \
	do {                                                                                       \
		if (!pg_up)                                                                        \
			skip();                                                                    \
	} while (0)

/* ------------------------------------------------------------------ the loop */

struct ready {
	int calls;
	bool failed;
	char error[512];
};

struct answer {
	int calls;
	int order;
	bool null_res;
	ExecStatusType status;
	char sqlstate[8];
	char value[256];
	int value_len;
	int ntuples;
	char error[512];
	bool close_in_cb; /* pgc_close() from inside the callback */
	bool steal;
	PGresult *stolen;
};

static struct event_base *base;
static int seq;
static int want_done;
static int done;

static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	*(bool *)arg = true;
	event_base_loopbreak(base);
}

/* Runs the loop until `want` completions or `secs` seconds; true if completed in time. */
static bool run_until(int want, int secs)
{
	bool expired = false;
	struct event *t = evtimer_new(base, deadline_cb, &expired);
	struct timeval tv = {.tv_sec = secs};

	want_done = want;
	evtimer_add(t, &tv);
	while (done < want_done && !expired)
		event_base_loop(base, EVLOOP_ONCE);
	event_free(t);
	return done >= want;
}

static void on_ready(void *arg, struct pgc *pc, const char *error)
{
	struct ready *r = arg;

	(void)pc;
	r->calls++;
	r->failed = error != NULL;
	snprintf(r->error, sizeof(r->error), "%s", error ? error : "");
	done++;
}

static void on_result(void *arg, struct pgc *pc, PGresult *res, const char *error)
{
	struct answer *a = arg;

	a->calls++;
	a->order = seq++;
	a->null_res = res == NULL;
	snprintf(a->error, sizeof(a->error), "%s", error ? error : "");
	if (res) {
		const char *st = PQresultErrorField(res, PG_DIAG_SQLSTATE);

		a->status = PQresultStatus(res);
		snprintf(a->sqlstate, sizeof(a->sqlstate), "%s", st ? st : "");
		a->ntuples = PQntuples(res);
		if (a->ntuples > 0 && PQnfields(res) > 0) {
			a->value_len = PQgetlength(res, 0, 0);
			if (a->value_len < (int)sizeof(a->value))
				memcpy(a->value, PQgetvalue(res, 0, 0), a->value_len);
		}
	}
	if (a->steal)
		a->stolen = pgc_steal_result(pc);
	done++;
	if (a->close_in_cb)
		pgc_close(pc);
}

static int setup(void **state)
{
	(void)state;
	base = event_base_new();
	seq = 0;
	done = 0;
	return base ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	event_base_free(base);
	base = NULL;
	return 0;
}

static struct pgc *connect_ok(struct ready *r)
{
	struct pgc *pc = pgc_connect(base, conninfo, on_ready, r);

	assert_non_null(pc);
	assert_int_equal(r->calls, 0); /* never from inside pgc_connect() */
	return pc;
}

static bool q(struct pgc *pc, const char *sql, struct answer *a)
{
	return pgc_query(pc, sql, 0, NULL, NULL, NULL, NULL, 0, on_result, a);
}

/* ------------------------------------------------------------------ tests */

static void test_connect_and_order(void **state)
{
	struct ready r = {0};
	struct answer a[3] = {{0}};
	struct pgc *pc;

	(void)state;
	NEED_PG();
	pc = connect_ok(&r);
	assert_false(pgc_ok(pc));
	/* Queued before the connection is up: they run after, in order. */
	assert_true(q(pc, "select 'one'", &a[0]));
	assert_true(q(pc, "select 'two' from pg_sleep(0.1)", &a[1]));
	assert_true(q(pc, "select 'three'", &a[2]));
	assert_true(pgc_busy(pc));
	assert_int_equal(a[0].calls, 0);
	assert_true(run_until(4, 10));
	assert_int_equal(r.calls, 1);
	assert_false(r.failed);
	assert_true(pgc_ok(pc));
	assert_false(pgc_busy(pc));
	assert_string_equal(a[0].value, "one");
	assert_string_equal(a[1].value, "two");
	assert_string_equal(a[2].value, "three");
	assert_int_equal(a[0].order, 0);
	assert_int_equal(a[1].order, 1);
	assert_int_equal(a[2].order, 2);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(a[i].calls, 1);
		assert_int_equal(a[i].status, PGRES_TUPLES_OK);
	}
	pgc_close(pc);
}

static void test_params_text_and_binary(void **state)
{
	struct ready r = {0};
	struct answer a = {0}, b = {0}, c = {0};
	struct pgc *pc;
	uint32_t be = htonl(41);
	const char *vals[3] = {"O'Brien; drop table x", (const char *)&be, NULL};
	const int lens[3] = {0, 4, 0};
	const int fmts[3] = {0, 1, 0};
	const Oid types[3] = {25, 23, 25};
	const char *one[1] = {"7"};
	uint32_t got;

	(void)state;
	NEED_PG();
	pc = connect_ok(&r);
	assert_true(pgc_query(pc,
	                      "select $1 || '|' || ($2 + 1)::text || '|' || coalesce($3, 'null')",
	                      3, types, vals, lens, fmts, 0, on_result, &a));
	/* A binary result: int4 in network order. */
	assert_true(
	        pgc_query(pc, "select $1::int4 * 6", 1, NULL, one, NULL, NULL, 1, on_result, &b));
	/* The parameters were copied: changing the caller's buffer does not matter. */
	be = htonl(1000);
	/* Several statements in one text: the last one's result. */
	assert_true(q(pc,
	              "create temp table t (a int); insert into t values (5), (6);"
	              " select sum(a)::text from t",
	              &c));
	assert_true(run_until(4, 10));
	assert_int_equal(a.status, PGRES_TUPLES_OK);
	assert_string_equal(a.value, "O'Brien; drop table x|42|null");
	assert_int_equal(b.status, PGRES_TUPLES_OK);
	assert_int_equal(b.value_len, 4);
	memcpy(&got, b.value, 4);
	assert_int_equal(ntohl(got), 42);
	assert_int_equal(c.status, PGRES_TUPLES_OK);
	assert_string_equal(c.value, "11");
	pgc_close(pc);
}

/* Parse and Describe without executing: the parameter types and the columns returned. */
static void test_prepare_describe(void **state)
{
	struct ready r = {0};
	struct answer prep = {0}, bad = {0}, after = {0}, none = {0};
	struct answer desc = {.steal = true}, desc2 = {.steal = true};
	struct pgc *pc;
	const Oid text_oid[1] = {25};

	(void)state;
	NEED_PG();
	pc = connect_ok(&r);
	assert_true(pgc_prepare(pc, "", "select $1::int4 + 1 as n, $2 as t where $3::bool", 1,
	                        text_oid, on_result, &prep));
	assert_true(pgc_describe_prepared(pc, "", on_result, &desc));
	assert_true(q(pc, "create temp table d (a int)", &none));
	assert_true(pgc_prepare(pc, "ins", "insert into d values ($1)", 0, NULL, on_result, &prep));
	assert_true(pgc_describe_prepared(pc, "ins", on_result, &desc2));
	/* an error is that step's result; the connection goes on */
	assert_true(pgc_prepare(pc, "", "select from no_such_table", 0, NULL, on_result, &bad));
	assert_true(q(pc, "select 'after'", &after));
	assert_true(run_until(8, 10));
	assert_int_equal(prep.status, PGRES_COMMAND_OK);
	assert_int_equal(desc.status, PGRES_COMMAND_OK);
	assert_non_null(desc.stolen);
	assert_int_equal(PQnparams(desc.stolen), 3);
	assert_int_equal(PQparamtype(desc.stolen, 0), 25); /* as declared */
	assert_int_equal(PQparamtype(desc.stolen, 2), 16); /* inferred */
	assert_int_equal(PQnfields(desc.stolen), 2);
	assert_string_equal(PQfname(desc.stolen, 0), "n");
	assert_int_equal(PQftype(desc.stolen, 0), 23);
	assert_int_equal(PQntuples(desc.stolen), 0);
	assert_int_equal(PQnparams(desc2.stolen), 1);
	assert_int_equal(PQparamtype(desc2.stolen, 0), 23);
	assert_int_equal(PQnfields(desc2.stolen), 0);
	assert_int_equal(bad.status, PGRES_FATAL_ERROR);
	assert_string_equal(bad.sqlstate, "42P01");
	assert_string_equal(after.value, "after");
	PQclear(desc.stolen);
	PQclear(desc2.stolen);
	pgc_close(pc);
}

/* A statement far larger than the socket buffers is sent over several write events. */
static void test_large_statement(void **state)
{
	struct ready r = {0};
	struct answer a = {0};
	struct pgc *pc;
	size_t n = 8 * 1024 * 1024;
	char *big = malloc(n + 1);
	const char *vals[1] = {big};

	(void)state;
	NEED_PG();
	assert_non_null(big);
	memset(big, 'x', n);
	big[n] = '\0';
	pc = connect_ok(&r);
	assert_true(
	        pgc_query(pc, "select length($1)", 1, NULL, vals, NULL, NULL, 0, on_result, &a));
	free(big);
	assert_true(run_until(2, 20));
	assert_int_equal(a.status, PGRES_TUPLES_OK);
	assert_string_equal(a.value, "8388608");
	pgc_close(pc);
}

static void test_error_result_then_next(void **state)
{
	struct ready r = {0};
	struct answer a = {0}, b = {0}, c = {0};
	struct pgc *pc;

	(void)state;
	NEED_PG();
	pc = connect_ok(&r);
	assert_true(q(pc, "select 1/0", &a));
	/* In a multi-statement text the first error is what is reported. */
	assert_true(q(pc, "select 1; select * from no_such_table; select 2", &b));
	assert_true(q(pc, "select 'still fine'", &c));
	assert_true(run_until(4, 10));
	assert_false(a.null_res);
	assert_int_equal(a.status, PGRES_FATAL_ERROR);
	assert_string_equal(a.sqlstate, "22012");
	assert_int_equal(b.status, PGRES_FATAL_ERROR);
	assert_string_equal(b.sqlstate, "42P01");
	assert_string_equal(c.value, "still fine");
	assert_true(pgc_ok(pc));
	pgc_close(pc);
}

static bool sq(struct pgc *pc, const char *sql, bool sync, struct answer *a)
{
	return pgc_send(pc, sql, 0, NULL, NULL, NULL, NULL, 0, sync, on_result, a);
}

/*
 * Pipelined flights: answers in order; an error skips the rest of its flight only; a plain
 * query (several statements, simple protocol) between flights; a failed transaction seen by
 * the next flight as separate queries would see it, and ended by it.
 */
static void test_pipelined_flights(void **state)
{
	struct ready r = {0};
	struct answer a[12] = {{0}};
	const char *one[1] = {"param"};
	struct pgc *pc;

	(void)state;
	NEED_PG();
	pc = connect_ok(&r);
	assert_true(sq(pc, "select 'a'", false, &a[0]));
	assert_true(pgc_send(pc, "select $1::text", 1, NULL, one, NULL, NULL, 0, true, on_result,
	                     &a[1]));
	assert_true(sq(pc, "select 1/0", false, &a[2]));
	assert_true(sq(pc, "select 'skipped'", true, &a[3]));
	assert_true(sq(pc, "select 'after'", false, &a[4]));
	assert_true(q(pc, "select 'x'; select 'plain multi'", &a[5]));
	assert_true(sq(pc, "begin", false, &a[6]));
	assert_true(sq(pc, "select 1/0", true, &a[7]));
	assert_true(sq(pc, "select 'in a failed transaction'", true, &a[8]));
	assert_true(sq(pc, "rollback", true, &a[9]));
	assert_true(sq(pc, "select 'again'", false, &a[10]));
	assert_true(run_until(12, 10));
	for (int i = 0; i < 11; i++) {
		assert_int_equal(a[i].calls, 1);
		assert_int_equal(a[i].order, i);
		assert_false(a[i].null_res);
	}
	assert_string_equal(a[0].value, "a");
	assert_string_equal(a[1].value, "param");
	assert_int_equal(a[2].status, PGRES_FATAL_ERROR);
	assert_string_equal(a[2].sqlstate, "22012");
	assert_int_equal(a[3].status, PGRES_PIPELINE_ABORTED);
	assert_int_equal(a[4].status, PGRES_TUPLES_OK);
	assert_string_equal(a[4].value, "after");
	assert_string_equal(a[5].value, "plain multi");
	assert_int_equal(a[6].status, PGRES_COMMAND_OK);
	assert_string_equal(a[7].sqlstate, "22012");
	assert_int_equal(a[8].status, PGRES_FATAL_ERROR);
	assert_string_equal(a[8].sqlstate, "25P02");
	assert_int_equal(a[9].status, PGRES_COMMAND_OK);
	assert_string_equal(a[10].value, "again");
	assert_true(pgc_ok(pc));
	assert_false(pgc_busy(pc));
	pgc_close(pc);
}

static bool nq(struct pgc *pc, const char *value, bool sync, struct answer *a)
{
	const char *v[1] = {value};

	return pgc_send_named(pc, "sb_test", "select $1::text || '!'", 1, v, sync, on_result, a);
}

/*
 * Named statements: parsed once per connection (a second Parse of the name would fail with
 * 42P05 and skip the run); a Parse skipped after an error in its flight is sent again by the
 * next use queued once that flight is answered.
 */
static void test_named_statements(void **state)
{
	struct ready r = {0};
	struct answer a[7] = {{0}};
	struct pgc *pc;

	(void)state;
	NEED_PG();
	pc = connect_ok(&r);
	assert_true(sq(pc, "select 1/0", false, &a[0]));
	assert_true(nq(pc, "skipped", true, &a[1]));
	/* the ready callback counts as one */
	assert_true(run_until(3, 10));
	assert_true(nq(pc, "a", false, &a[2]));
	assert_true(nq(pc, "b", true, &a[3]));
	assert_true(nq(pc, "c", true, &a[4]));
	assert_true(sq(pc, "select count(*)::text from pg_prepared_statements where name = 'sb_test'",
	               true, &a[5]));
	assert_true(q(pc, "select 'plain after'", &a[6]));
	assert_true(run_until(8, 10));
	for (int i = 0; i < 7; i++) {
		assert_int_equal(a[i].calls, 1);
		assert_int_equal(a[i].order, i);
	}
	assert_string_equal(a[0].sqlstate, "22012");
	assert_int_equal(a[1].status, PGRES_PIPELINE_ABORTED);
	assert_string_equal(a[2].value, "a!");
	assert_string_equal(a[3].value, "b!");
	assert_string_equal(a[4].value, "c!");
	assert_string_equal(a[5].value, "1");
	assert_string_equal(a[6].value, "plain after");
	assert_false(pgc_send_named(pc, "", "select 1", 0, NULL, true, on_result, &a[0]));
	assert_true(pgc_ok(pc));
	pgc_close(pc);
}

/* A backend terminated while a flight is out: every statement still owed gets res NULL. */
static void test_pipelined_backend_terminated(void **state)
{
	struct ready r = {0};
	struct answer a[3] = {{0}}, kill = {0};
	struct pgc *pc, *killer;
	char sql[128];

	(void)state;
	NEED_PG();
	pc = connect_ok(&r);
	killer = connect_ok(&r);
	assert_true(run_until(2, 10));
	snprintf(sql, sizeof(sql),
	         "select pg_terminate_backend(pid) from pg_stat_activity "
	         "where application_name = 'pgc-pipe-victim'");
	assert_true(sq(pc, "set application_name = 'pgc-pipe-victim'", true, &a[0]));
	assert_true(sq(pc, "select pg_sleep(30)", false, &a[1]));
	assert_true(sq(pc, "select 'never'", true, &a[2]));
	assert_true(run_until(3, 10));
	assert_int_equal(a[0].status, PGRES_COMMAND_OK);
	assert_true(q(killer, sql, &kill));
	assert_true(run_until(6, 20));
	assert_true(a[1].null_res);
	assert_true(a[2].null_res);
	assert_int_equal(a[1].order + 1, a[2].order);
	assert_false(pgc_ok(pc));
	pgc_close(pc);
	pgc_close(killer);
}

static void test_steal_result(void **state)
{
	struct ready r = {0};
	struct answer a = {.steal = true};
	struct pgc *pc;

	(void)state;
	NEED_PG();
	pc = connect_ok(&r);
	assert_true(q(pc, "select 'kept'", &a));
	assert_true(run_until(2, 10));
	assert_non_null(a.stolen);
	assert_string_equal(PQgetvalue(a.stolen, 0, 0), "kept");
	PQclear(a.stolen);
	assert_null(pgc_steal_result(pc)); /* outside a callback */
	pgc_close(pc);
}

struct killer {
	struct pgc *other;
	struct answer pid;
	struct answer kill;
};

static void kill_cb(evutil_socket_t fd, short what, void *arg)
{
	struct killer *k = arg;
	const char *vals[1] = {k->pid.value};

	(void)fd;
	(void)what;
	assert_true(pgc_query(k->other, "select pg_terminate_backend($1::int)", 1, NULL, vals, NULL,
	                      NULL, 0, on_result, &k->kill));
}

static void test_backend_terminated(void **state)
{
	struct ready r1 = {0}, r2 = {0};
	struct answer sleep_a = {0}, after = {0};
	struct killer k = {0};
	struct pgc *pc, *other;
	struct event *t;
	struct timeval tv = {.tv_usec = 300000};

	(void)state;
	NEED_PG();
	pc = connect_ok(&r1);
	other = connect_ok(&r2);
	k.other = other;
	assert_true(q(pc, "select pg_backend_pid()", &k.pid));
	assert_true(run_until(3, 10));
	assert_true(q(pc, "select pg_sleep(30)", &sleep_a));
	assert_true(q(pc, "select 'never runs'", &after));
	t = evtimer_new(base, kill_cb, &k);
	evtimer_add(t, &tv);
	assert_true(run_until(6, 10));
	event_free(t);
	assert_int_equal(k.kill.status, PGRES_TUPLES_OK);
	assert_string_equal(k.kill.value, "t");
	assert_int_equal(sleep_a.calls, 1);
	assert_true(sleep_a.null_res);
	assert_non_null(strstr(sleep_a.error, "terminating connection"));
	assert_int_equal(after.calls, 1);
	assert_true(after.null_res);
	assert_false(pgc_ok(pc));
	assert_false(pgc_busy(pc));
	assert_false(q(pc, "select 1", &after));
	assert_true(pgc_ok(other));
	pgc_close(pc);
	pgc_close(other);
}

static void test_closed_port(void **state)
{
	struct ready r = {0};
	struct answer a = {0};
	char ci[256];
	struct pgc *pc;

	(void)state;
	snprintf(ci, sizeof(ci), "host=127.0.0.1 port=%d dbname=x user=x connect_timeout=5",
	         pg_free_port());
	pc = pgc_connect(base, ci, on_ready, &r);
	assert_non_null(pc);
	assert_true(q(pc, "select 1", &a));
	assert_int_equal(r.calls, 0);
	assert_true(run_until(2, 10));
	assert_int_equal(r.calls, 1);
	assert_true(r.failed);
	assert_true(strlen(r.error) > 0);
	assert_null(strchr(r.error, '\n'));
	assert_true(a.null_res);
	assert_false(pgc_ok(pc));
	assert_true(strlen(pgc_error(pc)) > 0);
	pgc_close(pc);
}

static void test_bad_conninfo(void **state)
{
	struct ready r = {0};
	struct pgc *pc;

	(void)state;
	pc = pgc_connect(base, "this is not = a conninfo '", on_ready, &r);
	assert_non_null(pc);
	assert_int_equal(r.calls, 0);
	assert_true(run_until(1, 5));
	assert_true(r.failed);
	pgc_close(pc);
}

static void test_connect_timeout(void **state)
{
	struct ready r = {0};
	struct sockaddr_in sa = {.sin_family = AF_INET};
	int lfd = socket(AF_INET, SOCK_STREAM, 0);
	char ci[256];
	struct pgc *pc;
	time_t t0;

	(void)state;
	/* A listener that accepts at the TCP level but never speaks. */
	assert_true(test_bind_loopback(lfd, &sa));
	assert_int_equal(listen(lfd, 4), 0);
	snprintf(ci, sizeof(ci),
	         "host=127.0.0.1 port=%d dbname=x user=x connect_timeout=2 sslmode=disable",
	         ntohs(sa.sin_port));
	t0 = time(NULL);
	pc = pgc_connect(base, ci, on_ready, &r);
	assert_non_null(pc);
	assert_true(run_until(1, 60)); /* the bound only guards against a hang */
	assert_true(r.failed);
	/* the connect_timeout ended it (its own message), not before its time */
	assert_non_null(strstr(r.error, "timeout"));
	assert_true(time(NULL) - t0 >= 1);
	pgc_close(pc);
	close(lfd);
}

/*
 * A statement that waits on a lock another connection holds, while a loop timer ticks. No
 * clock decides anything: the holder polls pg_locks from the ticks until the server shows the
 * waiter blocked, counts TICKS_WHILE_WAITING more ticks, then (from a tick) releases the lock.
 * A pgc that blocked the loop while its statement ran would never tick, never release, and
 * the waiter would end on its lock_timeout instead of answering.
 */
#define TICKS_WHILE_WAITING 5

static struct {
	struct pgc *holder;
	int ticks;
	bool polling;
	int ticks_at_waiting; /* -1 until pg_locks showed the waiter blocked */
	bool released;
	int waiter_calls_at_release;
	const struct answer *waiter;
	struct answer unlock;
} W;

static void on_waiting_count(void *arg, struct pgc *pc, PGresult *res, const char *error)
{
	(void)arg;
	(void)pc;
	W.polling = false;
	if (!error && res && PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
	    strcmp(PQgetvalue(res, 0, 0), "1") == 0 && W.ticks_at_waiting < 0)
		W.ticks_at_waiting = W.ticks;
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	W.ticks++;
	if (W.released)
		return;
	if (W.ticks_at_waiting >= 0) {
		if (W.ticks - W.ticks_at_waiting >= TICKS_WHILE_WAITING) {
			W.released = true;
			W.waiter_calls_at_release = W.waiter->calls;
			assert_true(q(W.holder, "select pg_advisory_unlock(4242)", &W.unlock));
		}
		return;
	}
	if (!W.polling) {
		W.polling = true;
		assert_true(
		        pgc_query(W.holder,
		                  "select count(*) from pg_locks"
		                  " where locktype = 'advisory' and objid = 4242 and not granted",
		                  0, NULL, NULL, NULL, NULL, 0, on_waiting_count, NULL));
	}
}

static void test_never_blocks(void **state)
{
	struct ready rh = {0}, rw = {0};
	struct answer locked = {0}, set = {0}, a = {0};
	struct pgc *waiter;
	struct event *t;
	struct timeval tv = {.tv_usec = 10000};

	(void)state;
	NEED_PG();
	memset(&W, 0, sizeof(W));
	W.ticks_at_waiting = -1;
	W.waiter = &a;
	W.holder = connect_ok(&rh);
	waiter = connect_ok(&rw);
	assert_true(run_until(2, 10));
	assert_true(q(W.holder, "select pg_advisory_lock(4242)", &locked));
	/* a blocked loop ends here after a minute instead of hanging the suite */
	assert_true(q(waiter, "set lock_timeout = '60s'", &set));
	assert_true(run_until(4, 10));
	assert_int_equal(locked.status, PGRES_TUPLES_OK);
	t = event_new(base, -1, EV_PERSIST, tick_cb, NULL);
	event_add(t, &tv);
	assert_true(q(waiter, "select 'waited' from (select pg_advisory_lock(4242)) l", &a));
	/* the waiter's answer and the unlock's, in either order; generous, nothing is timed */
	assert_true(run_until(6, 90));
	event_free(t);
	assert_true(W.ticks_at_waiting >= 0); /* the server showed the waiter blocked */
	assert_true(W.released);              /* ... and the loop ticked on until it let go */
	assert_int_equal(W.waiter_calls_at_release, 0);
	assert_string_equal(a.error, "");
	assert_string_equal(a.value, "waited");
	assert_int_equal(W.unlock.status, PGRES_TUPLES_OK);
	pgc_close(waiter);
	pgc_close(W.holder);
}

static void test_close_inside_callback(void **state)
{
	struct ready r = {0};
	struct answer a = {.close_in_cb = true}, b = {0};
	struct pgc *pc;

	(void)state;
	NEED_PG();
	pc = connect_ok(&r);
	assert_true(q(pc, "select 1", &a));
	assert_true(q(pc, "select 2", &b));
	run_until(3, 2);
	assert_int_equal(a.calls, 1);
	assert_int_equal(b.calls, 0); /* cancelled without being called */
}

static void close_on_ready(void *arg, struct pgc *pc, const char *error)
{
	on_ready(arg, pc, error);
	pgc_close(pc);
}

static void test_close_inside_ready(void **state)
{
	struct ready r = {0};
	struct answer a = {0};
	struct pgc *pc;

	(void)state;
	NEED_PG();
	pc = pgc_connect(base, conninfo, close_on_ready, &r);
	assert_non_null(pc);
	assert_true(q(pc, "select 1", &a));
	run_until(2, 2);
	assert_int_equal(r.calls, 1);
	assert_false(r.failed);
	assert_int_equal(a.calls, 0);
}

static void test_close_before_connected(void **state)
{
	struct ready r = {0};
	struct answer a = {0};
	struct pgc *pc;

	(void)state;
	NEED_PG();
	pc = connect_ok(&r);
	assert_true(q(pc, "select 1", &a));
	pgc_close(pc);
	run_until(1, 1);
	assert_int_equal(r.calls, 0);
	assert_int_equal(a.calls, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test_setup_teardown(test_connect_and_order, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_params_text_and_binary, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_large_statement, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_prepare_describe, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_error_result_then_next, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_pipelined_flights, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_named_statements, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_pipelined_backend_terminated, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_steal_result, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_backend_terminated, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_closed_port, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_bad_conninfo, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_connect_timeout, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_never_blocks, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_close_inside_callback, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_close_inside_ready, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_close_before_connected, setup, teardown),
	};

	return cmocka_run_group_tests(tests, pg_start, pg_stop);
}
