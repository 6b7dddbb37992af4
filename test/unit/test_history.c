/*
 * Unit tests of the histograms (bucket placement, the text format, the series cap, label
 * escaping) and of the mutation history (the ring keeps the newest mutation_history writes and
 * follows a change of the setting; the SQLSTATE read from an ErrorResponse).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bouncer.h"
#include "config.h"
#include "histogram.h"
#include "mutation/history.h"
#include "pktbuf.h"

static uint64_t fake_now = 5000000;

/* main.c's clock */
uint64_t bouncer_now_usec(void);
uint64_t bouncer_now_usec(void)
{
	return fake_now;
}

static char *text_of(struct evbuffer *out)
{
	size_t n = evbuffer_get_length(out);
	char *s = malloc(n + 1);

	assert_non_null(s);
	evbuffer_copyout(out, s, n);
	s[n] = '\0';
	return s;
}

static void test_buckets(void **state)
{
	static const struct {
		int64_t usec;
		int bucket; /* index into counts: the first bound >= the value */
	} cases[] = {
	        {-5, 0},
	        {0, 0},
	        {1000, 0},
	        {1001, 1},
	        {2500, 1},
	        {9999, 3},
	        {10000, 3},
	        {999999, 9},
	        {1000000, 9},
	        {29999999, 13},
	        {30000000, 13},
	        {30000001, 14},
	        {INT64_C(1) << 40, 14},
	};
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct hist h;
		memset(&h, 0, sizeof(h));
		hist_observe(&h, cases[i].usec);
		if (h.counts[cases[i].bucket] != 1)
			fail_msg("%lld usec is not in bucket %d", (long long)cases[i].usec,
			         cases[i].bucket);
		assert_int_equal(h.count, 1);
	}
}

static void test_family_text(void **state)
{
	struct hist_family f;
	struct evbuffer *out = evbuffer_new();
	char *s;

	(void)state;
	hist_family_init(&f, "x_seconds", "Some latency");
	assert_true(hist_family_observe(&f, "api=\"a\"", 2000));     /* 2 ms */
	assert_true(hist_family_observe(&f, "api=\"a\"", 40000000)); /* 40 s */
	assert_true(hist_family_observe(&f, "api=\"b\"", 100));
	hist_family_write(&f, out);
	s = text_of(out);
	assert_non_null(strstr(s, "# HELP x_seconds Some latency\n# TYPE x_seconds histogram\n"));
	/* cumulative */
	assert_non_null(strstr(s, "x_seconds_bucket{api=\"a\",le=\"0.001\"} 0\n"));
	assert_non_null(strstr(s, "x_seconds_bucket{api=\"a\",le=\"0.0025\"} 1\n"));
	assert_non_null(strstr(s, "x_seconds_bucket{api=\"a\",le=\"30\"} 1\n"));
	assert_non_null(strstr(s, "x_seconds_bucket{api=\"a\",le=\"+Inf\"} 2\n"));
	assert_non_null(strstr(s, "x_seconds_sum{api=\"a\"} 40.002000\n"));
	assert_non_null(strstr(s, "x_seconds_count{api=\"a\"} 2\n"));
	assert_non_null(strstr(s, "x_seconds_count{api=\"b\"} 1\n"));
	free(s);
	evbuffer_free(out);
	hist_family_free(&f);
}

static void test_family_is_bounded(void **state)
{
	struct hist_family f;
	char labels[32];

	(void)state;
	hist_family_init(&f, "y", "y");
	for (int i = 0; i < HIST_MAX_SERIES; i++) {
		snprintf(labels, sizeof(labels), "k=\"%d\"", i);
		assert_true(hist_family_observe(&f, labels, 1));
	}
	assert_false(hist_family_observe(&f, "k=\"one more\"", 1));
	assert_true(hist_family_observe(&f, "k=\"7\"", 1)); /* an existing series still counts */
	assert_int_equal(f.n, HIST_MAX_SERIES);
	assert_int_equal(f.dropped, 1);
	hist_family_free(&f);
}

static void test_label_value_escaping(void **state)
{
	char buf[16];

	(void)state;
	hist_label_value(buf, sizeof(buf), "a\"b\\c\nd");
	assert_string_equal(buf, "a\\\"b\\\\c\\nd");
	hist_label_value(buf, 5, "abc\"def");
	assert_string_equal(buf, "abc"); /* an escape that does not fit is not cut in half */
	hist_label_value(buf, sizeof(buf), NULL);
	assert_string_equal(buf, "");
}

struct rows {
	int n;
	char table[8][32];
	char outcome[8][32];
	char sqlstate[8][8];
	char client[8][24];
};

static void collect(void *arg, int ncols, const char *const *v)
{
	struct rows *r = arg;

	assert_int_equal(ncols, 13);
	assert_string_equal(v[6], "done");
	snprintf(r->table[r->n], sizeof(r->table[0]), "%s", v[2]);
	snprintf(r->outcome[r->n], sizeof(r->outcome[0]), "%s", v[8]);
	snprintf(r->sqlstate[r->n], sizeof(r->sqlstate[0]), "%s", v[9] ? v[9] : "NULL");
	snprintf(r->client[r->n], sizeof(r->client[0]), "%s", v[0] ? v[0] : "NULL");
	r->n++;
}

static void record(struct bouncer *b, const char *table, const char *outcome, const char *state,
                   uint64_t client)
{
	struct mutation_report r = {
	        .client_id = client,
	        .database = "crm",
	        .table = table,
	        .operation = "insert",
	        .api = "salesforce",
	        .rows = 1,
	        .api_called = true,
	        .http_status = 200,
	        .request_id = "",
	        .api_usec = 1500,
	        .total_usec = 2500,
	        .outcome = outcome,
	        .sqlstate = state,
	};
	history_record(b, &r);
}

static void test_ring_keeps_the_newest(void **state)
{
	struct bouncer b;
	struct rows rows;

	(void)state;
	memset(&b, 0, sizeof(b));
	b.cfg = config_new_defaults();
	b.history = history_new();
	assert_non_null(b.cfg);
	assert_non_null(b.history);
	b.cfg->mutation_history = 3;
	record(&b, "t1", "ok", "", 7);
	record(&b, "t2", "validation", "23514", 7);
	record(&b, "t3", "ok", NULL, 0);
	record(&b, "t4", "failed", "55000", 9);
	assert_int_equal(history_count(b.history), 3);
	memset(&rows, 0, sizeof(rows));
	history_show(b.history, collect, &rows);
	assert_int_equal(rows.n, 3);
	assert_string_equal(rows.table[0], "t4"); /* newest first */
	assert_string_equal(rows.table[1], "t3");
	assert_string_equal(rows.table[2], "t2");
	assert_string_equal(rows.outcome[2], "validation");
	assert_string_equal(rows.sqlstate[2], "23514");
	assert_string_equal(rows.sqlstate[1], "NULL");
	assert_string_equal(rows.client[0], "9");
	assert_string_equal(rows.client[1], "NULL"); /* the client was unknown */

	/* a smaller setting keeps the newest at the next record; a larger one grows */
	b.cfg->mutation_history = 2;
	record(&b, "t5", "ok", "", 1);
	memset(&rows, 0, sizeof(rows));
	history_show(b.history, collect, &rows);
	assert_int_equal(rows.n, 2);
	assert_string_equal(rows.table[0], "t5");
	assert_string_equal(rows.table[1], "t4");
	b.cfg->mutation_history = 10;
	record(&b, "t6", "ok", "", 1);
	assert_int_equal(history_count(b.history), 3);
	b.cfg->mutation_history = 0;
	record(&b, "t7", "ok", "", 1);
	assert_int_equal(history_count(b.history), 0);

	/* every write counted in the histograms, kept or not */
	{
		struct evbuffer *out = evbuffer_new();
		char *s;
		history_write_metrics(b.history, out);
		s = text_of(out);
		assert_non_null(
		        strstr(s, "syncbouncer_mutation_duration_seconds_count{database=\"crm\","
		                  "table=\"t7\",operation=\"insert\",outcome=\"ok\"} 1\n"));
		assert_non_null(strstr(s, "syncbouncer_api_request_duration_seconds_count{api="
		                          "\"salesforce\",outcome=\"ok\"} 5\n"));
		free(s);
		evbuffer_free(out);
	}
	history_free(b.history);
	config_free(b.cfg);
}

static void test_sqlstate_of_error_response(void **state)
{
	struct pktbuf pb;
	char out[6];

	(void)state;
	pktbuf_init(&pb, 4096);
	pktbuf_write_error(&pb, "ERROR", "23514", "salesforce validation error", "Key (email)",
	                   NULL);
	history_error_sqlstate(pb.data, pb.len, out, sizeof(out));
	assert_string_equal(out, "23514");
	history_error_sqlstate(pb.data, 7, out, sizeof(out)); /* cut short */
	assert_string_equal(out, "");
	pb.data[0] = 'N'; /* not an ErrorResponse */
	history_error_sqlstate(pb.data, pb.len, out, sizeof(out));
	assert_string_equal(out, "");
	history_error_sqlstate(NULL, 0, out, sizeof(out));
	assert_string_equal(out, "");
	pktbuf_free(&pb);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_buckets),
	        cmocka_unit_test(test_family_text),
	        cmocka_unit_test(test_family_is_bounded),
	        cmocka_unit_test(test_label_value_escaping),
	        cmocka_unit_test(test_ring_keeps_the_newest),
	        cmocka_unit_test(test_sqlstate_of_error_response),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
