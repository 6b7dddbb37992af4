/*
 * Unit tests of the admin console's statement parser: pgbouncer's grammar (CMD [ARG] [;] and
 * SET key = value), quoting, case and the length limits that give "bad arguments".
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
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

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_parse_table),
	        cmocka_unit_test(test_console_db_names),
	        cmocka_unit_test(test_kind_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
