/*
 * Unit tests of the stats arithmetic: sums and pgbouncer's averages (per second for counts and
 * bytes, per query / transaction / server assignment for times), and the view names.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <string.h>

#include "stats.h"

/* main.c's clock; the code under test only needs it to exist */
uint64_t bouncer_now_usec(void);
uint64_t bouncer_now_usec(void)
{
	return 1000000;
}

static void test_add(void **state)
{
	struct stats_counters a, b;

	(void)state;
	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	a.query_count = 3;
	a.client_bytes = 100;
	b.query_count = 4;
	b.bind_count = 2;
	b.wait_time = 9;
	stats_add(&a, &b);
	assert_int_equal(a.query_count, 7);
	assert_int_equal(a.client_bytes, 100);
	assert_int_equal(a.bind_count, 2);
	assert_int_equal(a.wait_time, 9);
}

struct avg_case {
	const char *what;
	struct stats_counters cur, old;
	uint64_t dur;
	struct stats_counters want;
};

static void test_average_table(void **state)
{
	static const struct avg_case cases[] = {
	        {"two seconds: counts and bytes per second, times per event",
	         {.server_assignment_count = 10,
	          .xact_count = 20,
	          .query_count = 40,
	          .client_bytes = 4000,
	          .server_bytes = 8000,
	          .xact_time = 2000,
	          .query_time = 1000,
	          .wait_time = 500,
	          .client_parse_count = 6,
	          .server_parse_count = 4,
	          .bind_count = 8},
	         {.server_assignment_count = 0,
	          .xact_count = 10,
	          .query_count = 20,
	          .client_bytes = 2000,
	          .server_bytes = 0,
	          .xact_time = 1000,
	          .query_time = 800,
	          .wait_time = 0},
	         2000000,
	         {.server_assignment_count = 5,
	          .xact_count = 5,
	          .query_count = 10,
	          .client_bytes = 1000,
	          .server_bytes = 4000,
	          .xact_time = 100,
	          .query_time = 10,
	          .wait_time = 50,
	          .client_parse_count = 3,
	          .server_parse_count = 2,
	          .bind_count = 4}},
	        {"nothing happened: times are 0, not a division by zero",
	         {.query_count = 5, .query_time = 50},
	         {.query_count = 5, .query_time = 50},
	         1000000,
	         {0}},
	        {"zero duration gives zeros", {.query_count = 5}, {0}, 0, {0}},
	        {"a counter that went backwards counts as nothing",
	         {.query_count = 1},
	         {.query_count = 9},
	         1000000,
	         {0}},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct stats_counters got;
		stats_average(&got, &cases[i].cur, &cases[i].old, cases[i].dur);
		if (memcmp(&got, &cases[i].want, sizeof(got)) != 0)
			fail_msg("%s: xacts/s %llu queries/s %llu in %llu out %llu xact %llu "
			         "query %llu wait %llu",
			         cases[i].what, (unsigned long long)got.xact_count,
			         (unsigned long long)got.query_count,
			         (unsigned long long)got.client_bytes,
			         (unsigned long long)got.server_bytes,
			         (unsigned long long)got.xact_time,
			         (unsigned long long)got.query_time,
			         (unsigned long long)got.wait_time);
	}
}

static void test_average_large_counts_do_not_overflow(void **state)
{
	struct stats_counters cur, old, got;

	(void)state;
	memset(&cur, 0, sizeof(cur));
	memset(&old, 0, sizeof(old));
	cur.client_bytes = UINT64_MAX / 2;
	stats_average(&got, &cur, &old, 10000000);
	/* bytes per second over 10 s */
	assert_true(got.client_bytes >= (UINT64_MAX / 2) / 10 - 1000000);
	assert_true(got.client_bytes <= (UINT64_MAX / 2) / 10 + 1000000);
}

static void test_view_names(void **state)
{
	(void)state;
	assert_string_equal(stats_view_str(STATS_VIEW_STATS), "stats");
	assert_string_equal(stats_view_str(STATS_VIEW_TOTALS_PER_DB), "stats_totals");
	assert_string_equal(stats_view_str(STATS_VIEW_AVERAGES), "stats_averages");
	assert_string_equal(stats_view_str(STATS_VIEW_TOTALS), "totals");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_add),
	        cmocka_unit_test(test_average_table),
	        cmocka_unit_test(test_average_large_counts_do_not_overflow),
	        cmocka_unit_test(test_view_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
