/*
 * Unit tests of what a mixed query string (synced writes among ordinary statements) is built
 * from: the text that runs a part of the string on the server (every other statement blanked,
 * so that PostgreSQL's error positions still count from the start of the client's text), and
 * the classifier's flags that refuse such a string whole (transaction control, COPY FROM STDIN,
 * DEALLOCATE).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "mutation/classifier.h"
#include "mutation/mixed.h"

/* main.c's clock */
uint64_t bouncer_now_usec(void);
uint64_t bouncer_now_usec(void)
{
	return 5000000;
}

static const struct {
	const char *sql;
	int from, to;
	bool utf8;
	const char *want;
} segments[] = {
        /* the first statement: the rest blanked, separators kept */
        {"select 1; insert into t values (2); select 3", 0, 1, true,
         "select 1;                         ;         "},
        /* the last: what came before is blanked character for character */
        {"select 1; insert into t values (2); select 3", 2, 3, true,
         "        ;                         ; select 3"},
        /* a run of two */
        {"select 1; select 2; insert into t values (3)", 0, 2, true,
         "select 1; select 2;                         "},
        /* a blanked UTF-8 character takes one space, as it counts one in PostgreSQL's
         * positions; a newline stays (line numbers) */
        {"insert into t values ('\xc3\xbc\xe2\x82\xac');\nselect x", 1, 2, true,
         "                           ;\nselect x"},
        /* another encoding: one space per byte */
        {"insert into t values ('\xfc');\nselect x", 1, 2, false,
         "                          ;\nselect x"},
        /* comments between statements stay; a comment inside a statement goes with it */
        {"/* a */ select 1; -- b\ninsert /* c */ into t values (1)", 0, 1, true,
         "/* a */ select 1; -- b\n                                "},
};

static void test_segment_text(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(segments) / sizeof(segments[0]); i++) {
		int starts[8], lens[8];
		int n = classifier_split(segments[i].sql, starts, lens, 8);
		char *got;

		assert_true(n >= segments[i].to);
		got = mixed_segment_text(segments[i].sql, starts, lens, n, segments[i].from,
		                         segments[i].to, segments[i].utf8);
		assert_non_null(got);
		assert_string_equal(got, segments[i].want);
		free(got);
	}
}

static const struct {
	const char *sql;
	bool txn, copy, dealloc;
} flags[] = {
        {"insert into t values (1); select 1", false, false},
        {"insert into t values (1); begin", true, false},
        {"start transaction; insert into t values (1)", true, false},
        {"select 1; commit", true, false},
        {"select 1; end", true, false},
        {"savepoint a; select 1", true, false},
        {"select 1; rollback to savepoint a", true, false},
        {"select 1; prepare transaction 'x'", true, false},
        /* PREPARE of a statement is no transaction control */
        {"prepare p as select 1; select 1", false, false},
        {"copy t from stdin; select 1", false, true},
        {"select 1; copy t (a, b) from stdin with (format csv)", false, true},
        /* data that does not come from the client */
        {"copy t to stdout; select 1", false, false},
        {"copy t from '/tmp/x'; select 1", false, false},
        {"copy (select 1) to stdout; select 1", false, false},
        {"select 1; deallocate all", false, false, true},
        {"deallocate p; select 1", false, false, true},
};

static void test_classifier_flags(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
		struct stmt_class sc;

		assert_true(classifier_classify(NULL, "crm", flags[i].sql, &sc));
		if (sc.transaction_control != flags[i].txn ||
		    sc.copy_from_client != flags[i].copy || sc.deallocate != flags[i].dealloc)
			fail_msg("%s: transaction_control %d, copy_from_client %d, deallocate %d",
			         flags[i].sql, sc.transaction_control, sc.copy_from_client,
			         sc.deallocate);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_segment_text),
	        cmocka_unit_test(test_classifier_flags),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
