/*
 * Unit tests of the admin console's statement parser: pgbouncer's grammar (CMD [ARG] [;] and
 * SET key = value), quoting, case and the length limits that give "bad arguments"; and of the
 * merge of the pool rows gathered from several workers into the rows of one pooler.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "admin.h"

struct parse_case {
	const char *query;
	enum admin_stmt_kind kind;
	const char *cmd, *arg, *value;
};

static const struct parse_case cases[] = {
        {"SHOW POOLS", ADMIN_STMT_COMMAND, "SHOW", "POOLS", ""},
        {"show pools;", ADMIN_STMT_COMMAND, "show", "pools", ""},
        {"  show\t pools ;  ", ADMIN_STMT_COMMAND, "show", "pools", ""},
        {"RELOAD", ADMIN_STMT_COMMAND, "RELOAD", "", ""},
        {"reload;", ADMIN_STMT_COMMAND, "reload", "", ""},
        {"PAUSE \"my db\"", ADMIN_STMT_COMMAND, "PAUSE", "my db", ""},
        {"PAUSE \"a\"\"b\"", ADMIN_STMT_COMMAND, "PAUSE", "a\"b", ""},
        {"KILL_CLIENT 1234", ADMIN_STMT_COMMAND, "KILL_CLIENT", "1234", ""},
        {"SELECT 1", ADMIN_STMT_COMMAND, "SELECT", "1", ""},
        {"SHUTDOWN WAIT_FOR_CLIENTS", ADMIN_STMT_COMMAND, "SHUTDOWN", "WAIT_FOR_CLIENTS", ""},
        {"set default_pool_size = 5", ADMIN_STMT_SET, "", "default_pool_size", "5"},
        {"SET default_pool_size TO 7;", ADMIN_STMT_SET, "", "default_pool_size", "7"},
        {"SET server_check_query = 'select 2'", ADMIN_STMT_SET, "", "server_check_query",
         "select 2"},
        {"SET x = 'it''s'", ADMIN_STMT_SET, "", "x", "it's"},
        {"SET x=\"quoted\"", ADMIN_STMT_SET, "", "x", "quoted"},
        {"select * from pools", ADMIN_STMT_INVALID, "", "", ""},
        {"SHOW POOLS; SHOW STATS", ADMIN_STMT_INVALID, "", "", ""},
        {"", ADMIN_STMT_INVALID, "", "", ""},
        {";", ADMIN_STMT_INVALID, "", "", ""},
        {"SHOW \"unterminated", ADMIN_STMT_INVALID, "", "", ""},
        {"SET x = 'unterminated", ADMIN_STMT_INVALID, "", "", ""},
        {"SET = 1", ADMIN_STMT_INVALID, "", "", ""},
        {"PAUSE app extra", ADMIN_STMT_INVALID, "", "", ""},
        /* syncbouncer's JOURNAL takes several words */
        {"JOURNAL RETRY 123", ADMIN_STMT_COMMAND, "JOURNAL", "RETRY 123", ""},
        {"journal giveup 123 confirm ;", ADMIN_STMT_COMMAND, "journal", "giveup 123 confirm",
         ""},
        {"JOURNAL GIVEUP 1 CONFIRM; SHOW POOLS", ADMIN_STMT_INVALID, "", "", ""},
        {"JOURNAL GIVEUP 1 'x'", ADMIN_STMT_INVALID, "", "", ""},
        /* pgbouncer's buffers: command 16, argument 64, value 256 bytes */
        {"VERYLONGCOMMANDNAME", ADMIN_STMT_TOO_LONG, "", "", ""},
        {"PAUSE aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
         ADMIN_STMT_TOO_LONG, "", "", ""},
};

/* main.c's clock; the code under test only needs it to exist */
uint64_t bouncer_now_usec(void);
uint64_t bouncer_now_usec(void)
{
	return 1000000;
}

static void test_parse_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct admin_stmt st;
		admin_parse(cases[i].query, &st);
		if (st.kind != cases[i].kind)
			fail_msg("\"%s\": kind %s, want %s", cases[i].query,
			         admin_stmt_kind_str(st.kind), admin_stmt_kind_str(cases[i].kind));
		if (st.kind == ADMIN_STMT_TOO_LONG || st.kind == ADMIN_STMT_INVALID)
			continue;
		assert_string_equal(st.cmd, cases[i].cmd);
		assert_string_equal(st.arg, cases[i].arg);
		assert_string_equal(st.value, cases[i].value);
	}
}

static void test_console_db_names(void **state)
{
	(void)state;
	assert_true(admin_is_console_db("pgbouncer"));
	assert_true(admin_is_console_db("syncbouncer"));
	assert_false(admin_is_console_db("PGBOUNCER"));
	assert_false(admin_is_console_db("app"));
	assert_false(admin_is_console_db(""));
}

static void test_kind_names(void **state)
{
	(void)state;
	assert_string_equal(admin_stmt_kind_str(ADMIN_STMT_COMMAND), "command");
	assert_string_equal(admin_stmt_kind_str(ADMIN_STMT_SET), "set");
	assert_string_equal(admin_stmt_kind_str(ADMIN_STMT_INVALID), "invalid");
	assert_string_equal(admin_stmt_kind_str(ADMIN_STMT_TOO_LONG), "too_long");
}

static struct admin_pool_row pool_row(const char *db, const char *user, long long cl_active,
                                      long long sv_idle, uint64_t maxwait_usec)
{
	struct admin_pool_row r;

	memset(&r, 0, sizeof(r));
	snprintf(r.db, sizeof(r.db), "%s", db);
	snprintf(r.user, sizeof(r.user), "%s", user);
	r.cl_active = cl_active;
	r.clients = cl_active;
	r.sv_idle = sv_idle;
	r.servers = sv_idle;
	r.maxwait_usec = maxwait_usec;
	return r;
}

/* Two workers with the same pool: one row, counts summed, the longer wait. */
static void test_merge_same_pool_of_two_workers(void **state)
{
	struct admin_pool_row rows[] = {
	        /* worker 0 */
	        pool_row("app", "alice", 7, 2, 1500000),
	        pool_row("pgbouncer", "pgbouncer", 1, 0, 0),
	        /* worker 1 */
	        pool_row("app", "alice", 13, 1, 2500000),
	        pool_row("pgbouncer", "pgbouncer", 0, 0, 0),
	};
	int n;

	(void)state;
	rows[0].cl_waiting = 3;
	rows[2].cl_waiting = 4;
	rows[2].sv_active = 5;
	rows[2].sv_used = 1;
	rows[0].sv_login = 1;
	rows[0].lb_hosts = NULL;
	rows[2].lb_hosts = "round-robin";
	n = admin_pool_rows_merge(rows, 4);
	assert_int_equal(n, 2);
	assert_string_equal(rows[0].db, "app");
	assert_string_equal(rows[0].user, "alice");
	assert_int_equal(rows[0].cl_active, 20);
	assert_int_equal(rows[0].clients, 20);
	assert_int_equal(rows[0].cl_waiting, 7);
	assert_int_equal(rows[0].sv_active, 5);
	assert_int_equal(rows[0].sv_idle, 3);
	assert_int_equal(rows[0].servers, 3);
	assert_int_equal(rows[0].sv_used, 1);
	assert_int_equal(rows[0].sv_login, 1);
	assert_int_equal(rows[0].maxwait_usec, 2500000);
	assert_string_equal(rows[0].lb_hosts, "round-robin");
	assert_string_equal(rows[1].db, "pgbouncer");
	assert_int_equal(rows[1].cl_active, 1);
}

/* Different pools stay apart, sorted by (database, user) as one pooler lists them. */
static void test_merge_keeps_pools_apart_and_sorted(void **state)
{
	struct admin_pool_row rows[] = {
	        pool_row("shop", "bob", 1, 0, 0),    pool_row("app", "bob", 2, 0, 10),
	        pool_row("app", "alice", 3, 0, 0),   pool_row("shop", "bob", 4, 0, 5),
	        pool_row("app", "bob", 5, 0, 20),    pool_row("app", "alice", 6, 0, 0),
	        pool_row("apple", "alice", 7, 0, 0),
	};
	static const struct {
		const char *db, *user;
		long long cl_active;
		uint64_t maxwait;
	} want[] = {
	        {"app", "alice", 9, 0},
	        {"app", "bob", 7, 20},
	        {"apple", "alice", 7, 0},
	        {"shop", "bob", 5, 5},
	};
	int n;

	(void)state;
	n = admin_pool_rows_merge(rows, (int)(sizeof(rows) / sizeof(rows[0])));
	assert_int_equal(n, 4);
	for (int i = 0; i < n; i++) {
		assert_string_equal(rows[i].db, want[i].db);
		assert_string_equal(rows[i].user, want[i].user);
		assert_int_equal(rows[i].cl_active, want[i].cl_active);
		assert_int_equal(rows[i].maxwait_usec, want[i].maxwait);
	}
}

/* One worker (or none): nothing to merge, nothing lost. */
static void test_merge_one_worker_is_unchanged(void **state)
{
	struct admin_pool_row rows[] = {
	        pool_row("b", "u", 1, 1, 0),
	        pool_row("a", "u", 2, 2, 3),
	};

	(void)state;
	assert_int_equal(admin_pool_rows_merge(rows, 0), 0);
	assert_int_equal(admin_pool_rows_merge(rows, 2), 2);
	assert_string_equal(rows[0].db, "a");
	assert_int_equal(rows[0].cl_active, 2);
	assert_int_equal(rows[0].maxwait_usec, 3);
	assert_string_equal(rows[1].db, "b");
	assert_int_equal(rows[1].sv_idle, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_parse_table),
	        cmocka_unit_test(test_merge_same_pool_of_two_workers),
	        cmocka_unit_test(test_merge_keeps_pools_apart_and_sorted),
	        cmocka_unit_test(test_merge_one_worker_is_unchanged),
	        cmocka_unit_test(test_console_db_names),
	        cmocka_unit_test(test_kind_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
