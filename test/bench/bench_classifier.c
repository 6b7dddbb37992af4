/*
 * Micro-benchmark of the classifier: nanoseconds per quick check on statements that must stay
 * on the fast path, and per full classification of a synced-table write for comparison.
 * Not part of make check; build and run by hand:
 *
 *   gcc -O2 -std=c11 -D_GNU_SOURCE -Iinclude -I/usr/include/yajl src/mutation/classifier.c \
 *     src/api/json.c src/log.c test/bench/bench_classifier.c -lpg_query -lyajl \
 *     -o bench_classifier && ./bench_classifier
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mutation/classifier.h"

static const struct classifier_table tables[] = {
        {"crm", "salesforce", "contacts"}, {"crm", "salesforce", "accounts"},
        {"crm", "salesforce", "leads"},    {"crm", "hubspot", "deals"},
        {"crm", "stripe", "customers"},    {"crm", "stripe", "invoices"},
        {"crm", "public", "tickets"},      {"crm", "airtable", "projects"},
};

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* A sink the compiler cannot see through, so the calls are not optimised away. */
static volatile int sink;

static void bench_quick(const struct classifier *cl, const char *label, const char *sql)
{
	size_t len = strlen(sql);
	long i, n = 5000000;
	double t0, t1;
	int hits = 0;

	t0 = now_ns();
	for (i = 0; i < n; i++)
		hits += classifier_quick_check(cl, "crm", sql, len);
	t1 = now_ns();
	sink = hits;
	printf("quick_check %-28s %4zu bytes  %7.1f ns  (%s)\n", label, len, (t1 - t0) / (double)n,
	       hits ? "maybe" : "relay");
}

static void bench_classify(const struct classifier *cl, const char *label, const char *sql)
{
	struct stmt_class out;
	long i, n = 20000;
	double t0, t1;

	t0 = now_ns();
	for (i = 0; i < n; i++) {
		if (!classifier_classify(cl, "crm", sql, &out))
			abort();
	}
	t1 = now_ns();
	sink = out.verdict;
	printf("classify    %-28s %4zu bytes  %7.1f ns  (%s)\n", label, strlen(sql),
	       (t1 - t0) / (double)n, stmt_verdict_str(out.verdict));
}

int main(void)
{
	static const char select200[] =
	        "SELECT o.id, o.created_at, o.status, o.total_amount, c.name, c.email "
	        "FROM orders o JOIN customers_local c ON c.id = o.customer_id "
	        "WHERE o.created_at >= $1 AND o.status IN ('open', 'paid') "
	        "ORDER BY o.created_at DESC LIMIT 50";
	static const char insert200[] =
	        "INSERT INTO order_lines (order_id, product_id, quantity, unit_price, discount, "
	        "created_at, updated_at, note) VALUES ($1, $2, $3, $4, $5, now(), now(), $6) "
	        "RETURNING id, order_id, product_id, quantity, unit_price";
	static const char update_synced[] =
	        "UPDATE salesforce.contacts SET email = $1, phone = $2 WHERE id = $3 RETURNING id";
	struct classifier *cl = classifier_new(tables, sizeof(tables) / sizeof(tables[0]));

	if (cl == NULL)
		return 1;
	bench_quick(cl, "SELECT 1", "SELECT 1");
	bench_quick(cl, "200-byte SELECT", select200);
	bench_quick(cl, "200-byte INSERT (ordinary)", insert200);
	bench_quick(cl, "UPDATE of a synced table", update_synced);
	bench_classify(cl, "UPDATE of a synced table", update_synced);
	bench_classify(cl, "200-byte SELECT", select200);
	classifier_free(cl);
	return 0;
}
