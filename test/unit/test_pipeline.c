/*
 * Unit tests of the mutation pipeline's pure parts: the API's errors mapped to PostgreSQL errors
 * (SQLSTATE, message, DETAIL, HINT; DESIGN.md §3) and the mutation's state machine (which moves
 * mutation_set_state() allows, and that it makes them).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/connector.h"
#include "mutation/answer.h"
#include "mutation/pipeline.h"

/* main.c's clock */
uint64_t bouncer_now_usec(void);
uint64_t bouncer_now_usec(void)
{
	return 5000000;
}

static const char *const WRITE = "update of salesforce.contacts (id 003A1)";

static struct api_error api_err(enum api_error_class cls, const char *message)
{
	struct api_error e;

	memset(&e, 0, sizeof(e));
	e.cls = cls;
	e.retry_after = -1;
	e.row = -1;
	snprintf(e.message, sizeof(e.message), "%s", message);
	return e;
}

static void test_api_error_classes(void **state)
{
	static const struct {
		enum api_error_class cls;
		const char *sqlstate, *message;
	} cases[] = {
	        {API_ERR_VALIDATION, "23514", "salesforce validation error"},
	        {API_ERR_REQUIRED, "23502", "salesforce validation error"},
	        {API_ERR_DUPLICATE, "23505", "salesforce validation error"},
	        {API_ERR_AUTH, "28000", "salesforce authentication failed"},
	        {API_ERR_PERMISSION, "42501", "salesforce permission denied"},
	        {API_ERR_RATE_LIMIT, "53400", "salesforce rate limit exceeded"},
	        {API_ERR_NOT_FOUND, "P0002", "salesforce record not found"},
	        {API_ERR_UNAVAILABLE, "58000", "salesforce unreachable"},
	        {API_ERR_SERVER, "58000", "salesforce server error"},
	        {API_ERR_UNKNOWN_OUTCOME, "XX000", "salesforce outcome unknown"},
	        {API_ERR_BAD_ANSWER, "XX000", "salesforce outcome unknown"},
	        {API_ERR_TOO_MANY_ROWS, "54000", "salesforce request too large"},
	        {API_ERR_TOO_LARGE, "54000", "salesforce request too large"},
	        {API_ERR_INTERNAL, "XX000", "salesforce error"},
	        {API_ERR_NONE, "XX000", "salesforce error"},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct api_error e = api_err(cases[i].cls, "The API said no");
		struct api_error_answer a;
		answer_map_api_error(&e, "salesforce", WRITE, 42, &a);
		assert_string_equal(a.sqlstate, cases[i].sqlstate);
		assert_string_equal(a.message, cases[i].message);
	}
}

static void test_api_error_key_detail(void **state)
{
	struct api_error e = api_err(API_ERR_VALIDATION, "Email: invalid email address");
	struct api_error_answer a;

	(void)state;
	snprintf(e.column, sizeof(e.column), "email");
	snprintf(e.value, sizeof(e.value), "pauldune.co");
	snprintf(e.reason, sizeof(e.reason), "is not a valid email address.");
	answer_map_api_error(&e, "salesforce", WRITE, 42, &a);
	assert_string_equal(a.detail, "Key (email)=(pauldune.co) is not a valid email address.");
	assert_string_equal(a.hint, "");

	/* no phrase: the API's message; a NULL value says null */
	e.reason[0] = '\0';
	e.value_is_null = true;
	answer_map_api_error(&e, "salesforce", WRITE, 42, &a);
	assert_string_equal(a.detail, "Key (email)=(null) Email: invalid email address");

	/* a value the request cannot carry is syncbouncer's refusal, not the API's verdict */
	e.local = true;
	answer_map_api_error(&e, "salesforce", WRITE, 42, &a);
	assert_string_equal(a.sqlstate, "22023");
	assert_string_equal(a.message, "row cannot be sent to salesforce");
}

static void test_api_error_outcome_details(void **state)
{
	struct api_error e = api_err(API_ERR_SERVER, "Internal error.");
	struct api_error_answer a;

	(void)state;
	/* maybe applied: the detail names the journal entry that settles it */
	answer_map_api_error(&e, "salesforce", WRITE, 42, &a);
	assert_string_equal(a.detail,
	                    "Internal error. The API may have applied the update of "
	                    "salesforce.contacts (id 003A1); nothing was written to the database "
	                    "yet. It is journal entry 42, settled by asking salesforce.");
	/* the API guarantees nothing was written: said so, one sentence end only */
	e.nothing_written = true;
	answer_map_api_error(&e, "salesforce", WRITE, 42, &a);
	assert_string_equal(a.detail, "Internal error. Nothing was written.");
	e = api_err(API_ERR_UNAVAILABLE, "could not connect");
	e.nothing_written = true;
	answer_map_api_error(&e, "salesforce", WRITE, 42, &a);
	assert_string_equal(a.detail, "could not connect. Nothing was written.");

	e = api_err(API_ERR_UNKNOWN_OUTCOME, "timed out after 30 s");
	answer_map_api_error(&e, "hubspot", WRITE, 7, &a);
	assert_string_equal(a.sqlstate, "XX000");
	assert_non_null(strstr(a.detail,
	                       "timed out after 30 s. The request was sent; whether hubspot "
	                       "applied the update of salesforce.contacts (id 003A1) is "
	                       "unknown."));
	assert_non_null(strstr(a.detail, "journal entry 7, settled by asking hubspot."));
}

static void test_api_error_hints(void **state)
{
	struct api_error e = api_err(API_ERR_RATE_LIMIT, "Too many requests");
	struct api_error_answer a;

	(void)state;
	answer_map_api_error(&e, "stripe", WRITE, 1, &a);
	assert_string_equal(a.hint, "");
	e.retry_after = 7;
	answer_map_api_error(&e, "stripe", WRITE, 1, &a);
	assert_string_equal(a.hint, "retry after 7 s");

	e = api_err(API_ERR_TOO_LARGE, "the request would be 12 MB");
	answer_map_api_error(&e, "stripe", WRITE, 1, &a);
	assert_string_equal(a.hint, "Write fewer rows, or smaller values, per statement.");

	/* the API assigns the id: refused like a GENERATED ALWAYS column, naming the column */
	e = api_err(API_ERR_ASSIGNED_ID, "cannot insert a non-DEFAULT value into column \"id\"");
	snprintf(e.column, sizeof(e.column), "id");
	answer_map_api_error(&e, "stripe", WRITE, 1, &a);
	assert_string_equal(a.sqlstate, "428C9");
	assert_string_equal(a.message, "cannot insert a non-DEFAULT value into column \"id\"");
	assert_string_equal(a.detail, "Column \"id\" holds the record id that stripe assigns.");
	assert_string_equal(a.hint,
	                    "Leave the column out: RETURNING gives the id the API assigns.");
}

static const enum mut_state all_states[] = {
        MUT_QUEUED,   MUT_CONNECTING, MUT_CAPTURING,    MUT_WRITING_INTENT, MUT_CALLING_API,
        MUT_APPLYING, MUT_COMMITTING, MUT_ROLLING_BACK, MUT_SETTLING,       MUT_DONE,
};
#define NSTATES (sizeof(all_states) / sizeof(all_states[0]))

static void test_state_moves(void **state)
{
	static const struct {
		enum mut_state from, to;
		bool allowed;
	} cases[] = {
	        /* the way of a write the API accepts */
	        {MUT_QUEUED, MUT_CONNECTING, true},
	        {MUT_QUEUED, MUT_CAPTURING, true}, /* an idle connection was there */
	        {MUT_CONNECTING, MUT_CAPTURING, true},
	        {MUT_CAPTURING, MUT_WRITING_INTENT, true},
	        {MUT_WRITING_INTENT, MUT_CALLING_API, true},
	        {MUT_CALLING_API, MUT_APPLYING, true},
	        {MUT_APPLYING, MUT_COMMITTING, true},
	        {MUT_COMMITTING, MUT_DONE, true},
	        /* nothing reached the API */
	        {MUT_CAPTURING, MUT_ROLLING_BACK, true},
	        {MUT_WRITING_INTENT, MUT_ROLLING_BACK, true},
	        {MUT_CALLING_API, MUT_ROLLING_BACK, true},
	        {MUT_ROLLING_BACK, MUT_DONE, true},
	        /* the API has or may have the change: the intent stays for the settler */
	        {MUT_CALLING_API, MUT_SETTLING, true},
	        {MUT_APPLYING, MUT_SETTLING, true},
	        {MUT_COMMITTING, MUT_SETTLING, true},
	        {MUT_SETTLING, MUT_DONE, true},
	        /* what never happens */
	        {MUT_QUEUED, MUT_CALLING_API, false},
	        {MUT_CONNECTING, MUT_APPLYING, false},
	        {MUT_APPLYING, MUT_ROLLING_BACK, false}, /* the API has it: never forgotten */
	        {MUT_COMMITTING, MUT_ROLLING_BACK, false},
	        {MUT_CAPTURING, MUT_SETTLING, false}, /* nothing was sent yet */
	        {MUT_WRITING_INTENT, MUT_SETTLING, false},
	        {MUT_ROLLING_BACK, MUT_SETTLING, false},
	        {MUT_SETTLING, MUT_COMMITTING, false},
	        {MUT_APPLYING, MUT_CALLING_API, false},
	        {MUT_DONE, MUT_QUEUED, false},
	        {MUT_DONE, MUT_DONE, false},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (mut_state_allowed(cases[i].from, cases[i].to) != cases[i].allowed)
			fail_msg("%s -> %s: expected %s", mut_state_str(cases[i].from),
			         mut_state_str(cases[i].to),
			         cases[i].allowed ? "allowed" : "refused");
	}
	/* every state but DONE may end; DONE leads nowhere */
	for (size_t i = 0; i < NSTATES; i++) {
		assert_true(mut_state_allowed(all_states[i], MUT_DONE) ==
		            (all_states[i] != MUT_DONE));
		assert_false(mut_state_allowed(MUT_DONE, all_states[i]));
	}
}

static void test_state_names(void **state)
{
	(void)state;
	/* SHOW MUTATIONS shows them: each its own */
	for (size_t i = 0; i < NSTATES; i++) {
		assert_string_not_equal(mut_state_str(all_states[i]), "?");
		for (size_t k = 0; k < i; k++)
			assert_string_not_equal(mut_state_str(all_states[i]),
			                        mut_state_str(all_states[k]));
	}
	assert_string_equal(mut_state_str(MUT_COMMITTING), "committing");
	assert_string_equal(mut_state_str(MUT_SETTLING), "settling");
	assert_string_equal(mut_state_str(MUT_CALLING_API), "calling_api");
}

static void test_set_state_moves(void **state)
{
	struct synced_table st;
	struct mutation *m = calloc(1, sizeof(*m));

	(void)state;
	assert_non_null(m);
	memset(&st, 0, sizeof(st));
	st.qualified = "salesforce.contacts";
	m->st = &st;
	m->op = OP_UPDATE;
	m->intent_id = 42;
	assert_int_equal(m->state, MUT_QUEUED);
	mutation_set_state(m, MUT_CONNECTING);
	assert_int_equal(m->state, MUT_CONNECTING);
	mutation_set_state(m, MUT_CONNECTING); /* no move */
	assert_int_equal(m->state, MUT_CONNECTING);
	mutation_set_state(m, MUT_CAPTURING);
	mutation_set_state(m, MUT_WRITING_INTENT);
	mutation_set_state(m, MUT_CALLING_API);
	mutation_set_state(m, MUT_SETTLING);
	mutation_set_state(m, MUT_DONE);
	assert_int_equal(m->state, MUT_DONE);
	free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_api_error_classes),
	        cmocka_unit_test(test_api_error_key_detail),
	        cmocka_unit_test(test_api_error_outcome_details),
	        cmocka_unit_test(test_api_error_hints),
	        cmocka_unit_test(test_state_moves),
	        cmocka_unit_test(test_state_names),
	        cmocka_unit_test(test_set_state_moves),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
