/*
 * Unit tests of the stats arithmetic: sums and pgbouncer's averages (per second for counts and
 * bytes, per query / transaction / server assignment for times), the view names, and the
 * views over counters gathered from several workers (merged by database, averages from the
 * merged totals: what one pooler holding every connection would show).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pktbuf.h"
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

/* Row r (0-based), column c of the DataRows in pb, into out; false when there is none. */
static bool cell(const struct pktbuf *pb, int r, int c, char *out, size_t size)
{
	size_t pos = 0;
	int row = 0;

	while (pos + 5 <= pb->len) {
		const uint8_t *m = pb->data + pos;
		uint32_t len =
		        (uint32_t)m[1] << 24 | (uint32_t)m[2] << 16 | (uint32_t)m[3] << 8 | m[4];
		if (m[0] == 'D' && row++ == r) {
			const uint8_t *p = m + 7;
			int n = m[5] << 8 | m[6];
			for (int i = 0; i < n; i++) {
				uint32_t vl = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
				              (uint32_t)p[2] << 8 | p[3];
				p += 4;
				if (i == c) {
					if (vl >= size)
						return false;
					memcpy(out, p, vl);
					out[vl] = '\0';
					return true;
				}
				p += vl;
			}
			return false;
		}
		pos += 1 + len;
	}
	return false;
}

static struct stats_counters counters(uint64_t xacts, uint64_t xact_time, uint64_t queries,
                                      uint64_t query_time, uint64_t bytes)
{
	struct stats_counters c;

	memset(&c, 0, sizeof(c));
	c.xact_count = xacts;
	c.xact_time = xact_time;
	c.query_count = queries;
	c.query_time = query_time;
	c.client_bytes = bytes;
	c.server_assignment_count = xacts;
	return c;
}

/* The view's bytes for g over a period of dur usec. Caller frees with pktbuf_free(). */
static void view_of(const struct stats_gather *g, enum stats_view v, struct pktbuf *pb)
{
	pktbuf_init(pb, 1u << 20);
	stats_write_view_for(g, 2000000, v, pb);
	assert_false(pktbuf_failed(pb));
}

/*
 * Worker 0 ran 10 transactions of 100 us in the period, worker 1 ran 30 of 300 us: one pooler
 * would show 40 transactions, 20 per second over 2 s, averaging (1000 + 9000) / 40 = 250 us
 * (not the 200 us an average of the two workers' averages would give).
 */
static void test_views_merge_workers_as_one_pooler(void **state)
{
	struct stats_counters old0 = counters(100, 10000, 200, 5000, 1000);
	struct stats_counters old1 = counters(50, 5000, 60, 600, 500);
	struct stats_counters cur0 = counters(110, 11000, 220, 6000, 3000);
	struct stats_counters cur1 = counters(80, 14000, 100, 2600, 4500);
	struct stats_counters sum_cur = cur0, sum_old = old0, admin = counters(3, 0, 3, 0, 0);
	struct stats_counters zero;
	struct stats_gather two, one;
	static const enum stats_view views[] = {STATS_VIEW_STATS, STATS_VIEW_TOTALS_PER_DB,
	                                        STATS_VIEW_AVERAGES, STATS_VIEW_TOTALS};
	char v[64];
	struct pktbuf pb;

	(void)state;
	memset(&zero, 0, sizeof(zero));
	memset(&two, 0, sizeof(two));
	memset(&one, 0, sizeof(one));
	stats_add(&sum_cur, &cur1);
	stats_add(&sum_old, &old1);
	/* two workers, each with its pool of app and its console */
	stats_gather_add(&two, "app", &cur0, &old0);
	stats_gather_add(&two, "pgbouncer", &admin, &zero);
	stats_gather_add(&two, "app", &cur1, &old1);
	stats_gather_add(&two, "pgbouncer", &admin, &zero);
	/* one pooler holding both */
	stats_add(&admin, &admin);
	stats_gather_add(&one, "pgbouncer", &admin, &zero);
	stats_gather_add(&one, "app", &sum_cur, &sum_old);

	for (size_t i = 0; i < sizeof(views) / sizeof(views[0]); i++) {
		struct pktbuf a, b;
		view_of(&two, views[i], &a);
		view_of(&one, views[i], &b);
		if (a.len != b.len || memcmp(a.data, b.data, a.len) != 0)
			fail_msg("SHOW %s of two workers differs from one pooler's",
			         stats_view_str(views[i]));
		pktbuf_free(&a);
		pktbuf_free(&b);
	}

	view_of(&two, STATS_VIEW_STATS, &pb);
	assert_true(cell(&pb, 0, 0, v, sizeof(v)));
	assert_string_equal(v, "app");
	assert_true(cell(&pb, 0, 2, v, sizeof(v))); /* total_xact_count */
	assert_string_equal(v, "190");
	assert_true(cell(&pb, 0, 13, v, sizeof(v))); /* avg_xact_count: 40 in 2 s */
	assert_string_equal(v, "20");
	assert_true(cell(&pb, 0, 17, v, sizeof(v))); /* avg_xact_time: 10000 us / 40 */
	assert_string_equal(v, "250");
	assert_true(cell(&pb, 0, 18, v, sizeof(v))); /* avg_query_time: (1000 + 2000) / 60 */
	assert_string_equal(v, "50");
	assert_true(cell(&pb, 1, 0, v, sizeof(v)));
	assert_string_equal(v, "pgbouncer");
	assert_true(cell(&pb, 1, 2, v, sizeof(v)));
	assert_string_equal(v, "6");
	assert_false(cell(&pb, 2, 0, v, sizeof(v)));
	pktbuf_free(&pb);
	stats_gather_free(&two);
	stats_gather_free(&one);
}

/* Databases stay apart and come sorted by name whatever order the workers gave them. */
static void test_views_keep_databases_apart(void **state)
{
	struct stats_counters c1 = counters(1, 0, 1, 0, 0), c2 = counters(2, 0, 2, 0, 0);
	struct stats_counters c4 = counters(4, 0, 4, 0, 0), zero;
	struct stats_gather g;
	struct pktbuf pb;
	char v[64];

	(void)state;
	memset(&zero, 0, sizeof(zero));
	memset(&g, 0, sizeof(g));
	stats_gather_add(&g, "shop", &c1, &zero);
	stats_gather_add(&g, "app", &c2, &zero);
	stats_gather_add(&g, "shop", &c4, &zero);
	view_of(&g, STATS_VIEW_TOTALS_PER_DB, &pb);
	assert_true(cell(&pb, 0, 0, v, sizeof(v)));
	assert_string_equal(v, "app");
	assert_true(cell(&pb, 0, 2, v, sizeof(v)));
	assert_string_equal(v, "2");
	assert_true(cell(&pb, 1, 0, v, sizeof(v)));
	assert_string_equal(v, "shop");
	assert_true(cell(&pb, 1, 2, v, sizeof(v)));
	assert_string_equal(v, "5");
	assert_false(cell(&pb, 2, 0, v, sizeof(v)));
	pktbuf_free(&pb);
	stats_gather_free(&g);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_add),
	        cmocka_unit_test(test_average_table),
	        cmocka_unit_test(test_average_large_counts_do_not_overflow),
	        cmocka_unit_test(test_view_names),
	        cmocka_unit_test(test_views_merge_workers_as_one_pooler),
	        cmocka_unit_test(test_views_keep_databases_apart),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
