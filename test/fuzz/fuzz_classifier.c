/*
 * libFuzzer target for the statement classifier: the quick check, the classification and the
 * split, on any text. Beyond "no crash, no leak", it checks what the pooler relies on:
 *  - a statement refused for a syncbouncer.* setting (42501) or as uninspectable (54001) was
 *    seen by the quick check, so the fast path never relays one;
 *  - verdicts and statement ranges stay within the text.
 * Built with clang only, not part of make check:
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -std=c11 -D_GNU_SOURCE -Iinclude \
 *     -I/usr/include/yajl src/mutation/classifier.c src/api/json.c src/log.c \
 *     test/fuzz/fuzz_classifier.c -lpg_query -lyajl -o fuzz_classifier
 *   ./fuzz_classifier -max_len=4096 -dict=test/fuzz/classifier.dict
 *
 * Input: byte 0 picks the database ("crm", "other" or one without synced tables); the rest is
 * the text (cut at its first NUL, as a Query message would be).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mutation/classifier.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct classifier *cl;

static void fuzz_init(void)
{
	static const struct classifier_table tables[] = {
	        {"crm", "salesforce", "contacts"},
	        {"crm", "public", "accounts"},
	        {"crm", "public", "Leads"},
	        {"other", "public", "contacts"},
	};

	cl = classifier_new(tables, 4);
	if (cl == NULL)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const dbs[] = {"crm", "other", "none"};
	struct stmt_class out;
	int starts[8], lens[8], n, k;
	const char *db;
	bool quick;
	char *sql;
	size_t len;

	if (cl == NULL)
		fuzz_init();
	if (size < 1)
		return 0;
	db = dbs[data[0] % 3];
	sql = malloc(size);
	if (sql == NULL)
		return 0;
	memcpy(sql, data + 1, size - 1);
	sql[size - 1] = '\0';
	len = strlen(sql);

	quick = classifier_quick_check(cl, db, sql, len);
	if (!classifier_classify(cl, db, sql, &out))
		abort(); /* out of memory is not expected here */
	if (out.verdict == STMT_REJECT &&
	    (strcmp(out.sqlstate, "42501") == 0 || strcmp(out.sqlstate, "54001") == 0) && !quick)
		abort();
	if (out.verdict == STMT_MUTATION && (out.table < 0 || out.table >= 4 || out.op == OP_NONE))
		abort();
	if (out.stmt_location < 0 || out.stmt_len < 0 ||
	    (size_t)out.stmt_location + (size_t)out.stmt_len > len)
		abort();
	if (out.verdict == STMT_REJECT && strlen(out.sqlstate) != 5)
		abort();

	n = classifier_split(sql, starts, lens, 8);
	if (n < 0)
		abort();
	for (k = 0; k < n && k < 8; k++) {
		if (starts[k] < 0 || lens[k] <= 0 || (size_t)starts[k] + (size_t)lens[k] > len)
			abort();
	}
	free(sql);
	return 0;
}
