/*
 * Unit tests of the REST-style connectors — generic REST, Stripe, HubSpot and Airtable:
 * configuration, request
 * building for single and batched operations, and answers (records with ids and returned
 * fields, error bodies, malformed answers) from fixture files; then api calls end to end
 * against the fake REST API and the fake Stripe of test/fakes/.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "api/api.h"
#include "api/connector.h"

#include "../fakes/fake_launch.h"

static char *fixture(const char *name, size_t *len)
{
	const char *srcdir = getenv("srcdir");
	char path[1024];
	FILE *f;
	char *buf;
	long n;

	snprintf(path, sizeof(path), "%s/test/unit/fixtures/api/%s", srcdir ? srcdir : ".", name);
	f = fopen(path, "rb");
	if (f == NULL)
		fail_msg("cannot open fixture %s", path);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc((size_t)n + 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
	buf[n] = '\0';
	fclose(f);
	*len = (size_t)n;
	return buf;
}

static struct connector *make(const struct cf_kv *kv, int n)
{
	char err[256];
	struct connector *c = connector_create("internal", kv, n, err, sizeof(err));

	if (c == NULL)
		fail_msg("%s", err);
	return c;
}

static struct api_table table;

static int setup(void **state)
{
	struct cf_kv tkv[] = {{"api", "internal"}, {"readonly", "created_at"}};
	char err[256];

	return api_table_init(&table, "internal.contacts", tkv, 2, err, sizeof(err)) ? 0 : -1;
}

static int teardown(void **state)
{
	api_table_free(&table);
	return 0;
}

static void parse_body(struct connector *c, const char *name, long status, enum api_op op,
                       const struct api_row *rows, int nrows, struct api_result *res)
{
	struct http_response resp = {0};
	size_t len = 0;
	char *body = name ? fixture(name, &len) : NULL;

	resp.outcome = HTTP_OUTCOME_ANSWER;
	resp.status = status;
	resp.body = body ? body : "";
	resp.body_len = len;
	connector_parse_response(c, &table, op, rows, nrows, &resp, res);
	free(body);
}

static const struct api_value paul[] = {
        {"id", NULL, API_VALUE_TEXT},
        {"first_name", "Paul", API_VALUE_TEXT},
        {"email", "paul@caladan.io", API_VALUE_TEXT},
        {"age", "15", API_VALUE_NUMBER},
        {"created_at", "now", API_VALUE_TEXT},
};

static void test_config(void **state)
{
	static const struct {
		struct cf_kv kv[4];
		int n;
		const char *why;
	} cases[] = {
	        {{{"type", "rest"}, {"base_url", "http://10.0.0.5:8080"}}, 2, "insert_path="},
	        {{{"type", "rest"}, {"base_url", "http://h"}, {"path", "contacts"}}, 3, "path="},
	        {{{"type", "rest"}, {"base_url", "http://h"}, {"path", "/c/ x"}}, 3, "path="},
	        {{{"type", "rest"}, {"base_url", "http://h"}, {"insert_method", "FETCH"}},
	         3,
	         "insert_method=FETCH"},
	        {{{"type", "rest"}, {"base_url", "http://h"}, {"path", "/c"}, {"naming", "kebab"}},
	         4,
	         "naming="},
	        {{{"type", "rest"}, {"base_url", "http://h"}, {"api_version", "v1"}},
	         3,
	         "unknown key \"api_version\""},
	};
	char err[256];
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		err[0] = '\0';
		assert_null(connector_create("r", cases[i].kv, cases[i].n, err, sizeof(err)));
		if (strstr(err, cases[i].why) == NULL)
			fail_msg("case %zu: \"%s\" lacks \"%s\"", i, err, cases[i].why);
	}
}

static void test_single_insert(void **state)
{
	struct cf_kv kv[] = {
	        {"type", "rest"}, {"base_url", "http://10.0.0.5:8080/api/"}, {"path", "/contacts"}};
	struct connector *c = make(kv, 3);
	struct api_row row = {.new_image = {paul, 5}};
	struct api_http_spec spec;
	struct api_error err;
	struct api_result res;

	assert_int_equal(connector_max_rows(c, API_OP_INSERT), 1);
	assert_int_equal(connector_max_rows(c, API_OP_UPDATE), 1);
	assert_true(connector_build_request(c, &table, API_OP_INSERT, &row, 1, &spec, &err));
	assert_int_equal(spec.method, HTTP_POST);
	assert_string_equal(spec.url, "http://10.0.0.5:8080/api/contacts");
	assert_string_equal(spec.body,
	                    "{\"first_name\":\"Paul\",\"email\":\"paul@caladan.io\",\"age\":15}");
	api_http_spec_free(&spec);

	parse_body(c, "rest_insert_ok.json", 201, API_OP_INSERT, &row, 1, &res);
	assert_true(res.ok);
	assert_string_equal(res.rows[0].id, "4711");
	/* every member comes back as a field; nested ones as JSON text (json/jsonb columns) */
	assert_int_equal(res.rows[0].nfields, 8);
	assert_string_equal(res.rows[0].fields[4].column, "created_at");
	assert_string_equal(res.rows[0].fields[4].value, "2026-11-30T08:00:00Z");
	assert_string_equal(res.rows[0].fields[5].value, "[\"a\"]");
	assert_string_equal(res.rows[0].fields[6].value, "true");
	assert_null(res.rows[0].fields[7].value);
	api_result_free(&res);

	/* an insert answer without an id cannot be applied */
	parse_body(c, NULL, 204, API_OP_INSERT, &row, 1, &res);
	assert_int_equal(res.error.cls, API_ERR_BAD_ANSWER);
	assert_non_null(strstr(res.error.message, "without a record id"));
	api_result_free(&res);
	connector_free(c);
}

static void test_single_update_delete(void **state)
{
	static const struct api_value o[] = {{"id", "a/1 b", API_VALUE_TEXT},
	                                     {"email", "x@y.z", API_VALUE_TEXT}};
	static const struct api_value n[] = {{"id", "a/1 b", API_VALUE_TEXT},
	                                     {"email", "new@y.z", API_VALUE_TEXT}};
	struct cf_kv kv[] = {{"type", "rest"},
	                     {"base_url", "http://h:1"},
	                     {"path", "/contacts"},
	                     {"update_method", "put"}};
	struct connector *c = make(kv, 4);
	struct api_row row = {.old_image = {o, 2}, .new_image = {n, 2}};
	struct api_http_spec spec;
	struct api_error err;
	struct api_result res;

	assert_true(connector_build_request(c, &table, API_OP_UPDATE, &row, 1, &spec, &err));
	assert_int_equal(spec.method, HTTP_PUT);
	assert_string_equal(spec.url, "http://h:1/contacts/a%2F1%20b");
	assert_string_equal(spec.body, "{\"email\":\"new@y.z\"}");
	api_http_spec_free(&spec);
	parse_body(c, NULL, 204, API_OP_UPDATE, &row, 1, &res);
	assert_true(res.ok);
	assert_string_equal(res.rows[0].id, "a/1 b");
	api_result_free(&res);

	assert_true(connector_build_request(c, &table, API_OP_DELETE, &row, 1, &spec, &err));
	assert_int_equal(spec.method, HTTP_DELETE);
	assert_string_equal(spec.url, "http://h:1/contacts/a%2F1%20b");
	assert_null(spec.body);
	api_http_spec_free(&spec);
	connector_free(c);
}

static void test_batch(void **state)
{
	static const struct api_value a[] = {{"id", NULL, API_VALUE_TEXT},
	                                     {"first_name", "Paul", API_VALUE_TEXT}};
	static const struct api_value b[] = {{"id", NULL, API_VALUE_TEXT},
	                                     {"first_name", "Leto", API_VALUE_TEXT}};
	static const struct api_value da[] = {{"id", "c-1", API_VALUE_TEXT}};
	static const struct api_value db[] = {{"id", "c-2", API_VALUE_TEXT}};
	struct cf_kv kv[] = {{"type", "rest"},
	                     {"base_url", "http://h"},
	                     {"insert_path", "/contacts/batch"},
	                     {"update_path", "/contacts/batch"},
	                     {"delete_path", "/contacts?ids={ids}"},
	                     {"records_key", "data"},
	                     {"naming", "camel"},
	                     {"max_batch", "50"}};
	struct connector *c = make(kv, 8);
	struct api_row rows[2] = {{.new_image = {a, 2}}, {.new_image = {b, 2}}};
	struct api_row drows[2] = {{.old_image = {da, 1}}, {.old_image = {db, 1}}};
	struct api_http_spec spec;
	struct api_error err;
	struct api_result res;

	assert_int_equal(connector_max_rows(c, API_OP_INSERT), 50);
	assert_true(connector_build_request(c, &table, API_OP_INSERT, rows, 2, &spec, &err));
	assert_string_equal(spec.body,
	                    "{\"data\":[{\"firstName\":\"Paul\"},{\"firstName\":\"Leto\"}]}");
	api_http_spec_free(&spec);
	parse_body(c, "rest_batch_ok.json", 200, API_OP_INSERT, rows, 2, &res);
	assert_true(res.ok);
	assert_string_equal(res.rows[0].id, "c-1");
	assert_string_equal(res.rows[1].id, "c-2");
	assert_string_equal(res.rows[1].fields[1].column, "first_name");
	assert_string_equal(res.rows[1].fields[1].value, "Leto");
	api_result_free(&res);
	/* fewer records than rows: not a success */
	parse_body(c, "rest_batch_ok.json", 200, API_OP_INSERT, rows, 1, &res);
	assert_int_equal(res.error.cls, API_ERR_BAD_ANSWER);
	api_result_free(&res);

	assert_true(connector_build_request(c, &table, API_OP_DELETE, drows, 2, &spec, &err));
	assert_string_equal(spec.url, "http://h/contacts?ids=c-1,c-2");
	api_http_spec_free(&spec);
	connector_free(c);
}

static void test_errors(void **state)
{
	static const struct {
		const char *fixture;
		long status;
		enum api_error_class cls;
		bool nothing_written;
		const char *message;
	} cases[] = {
	        {"rest_error_422.json", 422, API_ERR_VALIDATION, true,
	         "email is not a valid email address"},
	        {"rest_error_422.json", 409, API_ERR_DUPLICATE, true, "email is not"},
	        {"rest_error_422.json", 401, API_ERR_AUTH, true, "email is not"},
	        {"html_503.html", 503, API_ERR_SERVER, false, "HTTP 503"},
	        {"html_503.html", 429, API_ERR_RATE_LIMIT, true, "HTTP 429"},
	        {"html_503.html", 302, API_ERR_SERVER, true, "HTTP 302"},
	        {"html_503.html", 201, API_ERR_BAD_ANSWER, false, "not JSON"},
	        {"sf_truncated.json", 200, API_ERR_BAD_ANSWER, false, "not JSON"},
	};
	struct cf_kv kv[] = {{"type", "rest"}, {"base_url", "http://h"}, {"path", "/contacts"}};
	struct connector *c = make(kv, 3);
	struct api_row row = {.new_image = {paul, 5}};
	struct api_result res;
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		parse_body(c, cases[i].fixture, cases[i].status, API_OP_INSERT, &row, 1, &res);
		assert_false(res.ok);
		if (res.error.cls != cases[i].cls ||
		    strstr(res.error.message, cases[i].message) == NULL)
			fail_msg("case %zu: %s \"%s\"", i, api_error_class_str(res.error.cls),
			         res.error.message);
		assert_int_equal(res.error.nothing_written, cases[i].nothing_written);
		api_result_free(&res);
	}
	parse_body(c, "rest_error_422.json", 422, API_OP_INSERT, &row, 1, &res);
	assert_string_equal(res.error.code, "invalid_email");
	assert_string_equal(res.error.reason, "email is not a valid email address");
	assert_string_equal(res.error.column, "email");
	assert_string_equal(res.error.value, "paul@caladan.io");
	api_result_free(&res);
	connector_free(c);
}

/* ---- Stripe ---- */

static struct connector *stripe(void)
{
	struct cf_kv kv[] = {{"type", "stripe"},
	                     {"base_url", "https://api.stripe.com"},
	                     {"auth", "bearer"},
	                     {"token", "sk_test_x"}};

	return make(kv, 4);
}

static void test_stripe_build(void **state)
{
	static const struct api_value jenny[] = {
	        {"id", NULL, API_VALUE_TEXT},
	        {"name", "Jenny Rosen", API_VALUE_TEXT},
	        {"email", "jenny+x@example.com", API_VALUE_TEXT},
	        {"plan", "gold", API_VALUE_TEXT},
	        {"phone", NULL, API_VALUE_TEXT},
	        {"tax_exempt", "f", API_VALUE_BOOL},
	};
	static const struct api_value old_img[] = {{"id", "cus_1", API_VALUE_TEXT},
	                                           {"name", "Jenny", API_VALUE_TEXT},
	                                           {"phone", "555", API_VALUE_TEXT}};
	static const struct api_value new_img[] = {{"id", "cus_1", API_VALUE_TEXT},
	                                           {"name", "Jenny", API_VALUE_TEXT},
	                                           {"phone", NULL, API_VALUE_TEXT}};
	struct cf_kv tkv[] = {{"object", "customers"}, {"columns", "plan:metadata[plan]"}};
	struct connector *c = stripe();
	struct api_row row = {.new_image = {jenny, 6}};
	struct api_http_spec spec, spec2;
	struct api_table t;
	struct api_error err;
	char e[256];

	assert_true(api_table_init(&t, "stripe.customers", tkv, 2, e, sizeof(e)));
	assert_int_equal(connector_max_rows(c, API_OP_INSERT), 1);
	assert_true(connector_build_request(c, &t, API_OP_INSERT, &row, 1, &spec, &err));
	assert_int_equal(spec.method, HTTP_POST);
	assert_string_equal(spec.url, "https://api.stripe.com/v1/customers");
	assert_string_equal(spec.content_type, "application/x-www-form-urlencoded");
	assert_int_equal(strlen(spec.idempotency_key), 32);
	/* the key goes into the record too, where a search finds it once Stripe forgot the key */
	snprintf(e, sizeof(e),
	         "name=Jenny%%20Rosen&email=jenny%%2Bx%%40example.com&metadata%%5Bplan%%5D=gold&"
	         "tax_exempt=false&metadata%%5Bsyncbouncer_key%%5D=%s",
	         spec.idempotency_key);
	assert_string_equal(spec.body, e);
	/* every statement gets its own key */
	assert_true(connector_build_request(c, &t, API_OP_INSERT, &row, 1, &spec2, &err));
	assert_string_not_equal(spec.idempotency_key, spec2.idempotency_key);
	api_http_spec_free(&spec2);
	/* a repeat with the first request's key is the same request, byte for byte */
	assert_true(connector_build_request_keyed(c, &t, API_OP_INSERT, &row, 1,
	                                          spec.idempotency_key, &spec2, &err));
	assert_string_equal(spec2.idempotency_key, spec.idempotency_key);
	assert_string_equal(spec2.body, spec.body);
	api_http_spec_free(&spec);
	api_http_spec_free(&spec2);
	assert_int_equal(connector_key_window_s(c), 23 * 3600);
	assert_true(connector_can_find_key(c, &t));

	row = (struct api_row){.old_image = {old_img, 3}, .new_image = {new_img, 3}};
	assert_true(connector_build_request(c, &t, API_OP_UPDATE, &row, 1, &spec, &err));
	assert_int_equal(spec.method, HTTP_POST);
	assert_string_equal(spec.url, "https://api.stripe.com/v1/customers/cus_1");
	assert_string_equal(spec.body, "phone="); /* cleared, and no key in an update */
	api_http_spec_free(&spec);
	assert_true(connector_build_request(c, &t, API_OP_DELETE, &row, 1, &spec, &err));
	assert_int_equal(spec.method, HTTP_DELETE);
	assert_null(spec.body);
	assert_string_equal(spec.idempotency_key, "");
	api_http_spec_free(&spec);
	/* nor when the caller chose one: Stripe takes keys on POSTs only */
	assert_true(
	        connector_build_request_keyed(c, &t, API_OP_DELETE, &row, 1, "k1", &spec, &err));
	assert_string_equal(spec.idempotency_key, "");
	api_http_spec_free(&spec);
	api_table_free(&t);
	connector_free(c);
}

/* Reading a customer by id: GET of the object; a deleted one ({"deleted":true}) is gone. */
static void test_stripe_read(void **state)
{
	static const char deleted[] =
	        "{\"id\":\"cus_1\",\"object\":\"customer\",\"deleted\":true}";
	struct cf_kv tkv[] = {{"object", "customers"}};
	struct connector *c = stripe();
	struct http_response resp = {0};
	struct api_http_spec spec;
	struct api_result res;
	struct api_error err;
	struct api_table t;
	char e[256], *body;
	size_t len;

	(void)state;
	assert_true(api_table_init(&t, "stripe.customers", tkv, 1, e, sizeof(e)));
	assert_true(connector_build_read(c, &t, "cus_NffrFeUfNV2Hib", NULL, 0, &spec, &err));
	assert_int_equal(spec.method, HTTP_GET);
	assert_string_equal(spec.url, "https://api.stripe.com/v1/customers/cus_NffrFeUfNV2Hib");
	assert_string_equal(spec.idempotency_key, "");
	api_http_spec_free(&spec);

	resp.outcome = HTTP_OUTCOME_ANSWER;
	resp.status = 200;
	resp.body = body = fixture("stripe_customer.json", &len);
	resp.body_len = len;
	connector_parse_read(c, &t, "cus_NffrFeUfNV2Hib", &resp, &res);
	assert_true(res.ok);
	assert_string_equal(res.rows[0].id, "cus_NffrFeUfNV2Hib");
	assert_true(res.rows[0].nfields > 3);
	api_result_free(&res);
	free(body);

	resp.body = (char *)deleted;
	resp.body_len = strlen(deleted);
	connector_parse_read(c, &t, "cus_1", &resp, &res);
	assert_false(res.ok);
	assert_int_equal(res.error.cls, API_ERR_NOT_FOUND);
	api_result_free(&res);

	resp.status = 404;
	resp.body = body = fixture("stripe_error_missing.json", &len);
	resp.body_len = len;
	connector_parse_read(c, &t, "cus_1", &resp, &res);
	assert_int_equal(res.error.cls, API_ERR_NOT_FOUND);
	assert_true(res.error.nothing_written);
	api_result_free(&res);
	free(body);
	api_table_free(&t);
	connector_free(c);
}

/* "." and ".." are ids, not steps up the path: each stays one encoded segment. */
static void test_dot_ids_stay_one_segment(void **state)
{
	static const char *const ids[] = {".", "..", "...", "a/..", "./."};
	static const char *const rest_want[] = {"http://h/contacts/%2E", "http://h/contacts/%2E%2E",
	                                        "http://h/contacts/...", "http://h/contacts/a%2F..",
	                                        "http://h/contacts/.%2F."};
	struct cf_kv kv[] = {{"type", "rest"}, {"base_url", "http://h"}, {"path", "/contacts"}};
	struct connector *r = make(kv, 3), *s = stripe();
	struct api_table t;
	struct cf_kv tkv[] = {{"api", "stripe"}, {"object", "customers"}};
	char err_text[256], want[128];

	(void)state;
	assert_true(api_table_init(&t, "stripe.customers", tkv, 2, err_text, sizeof(err_text)));
	for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
		const struct api_value img[] = {{"id", ids[i], API_VALUE_TEXT},
		                                {"email", "x@y.z", API_VALUE_TEXT}};
		struct api_row row = {.old_image = {img, 2}, .new_image = {img, 2}};
		struct api_http_spec spec;
		struct api_error err;

		for (enum api_op op = API_OP_UPDATE; op <= API_OP_DELETE; op++) {
			assert_true(connector_build_request(r, &table, op, &row, 1, &spec, &err));
			assert_string_equal(spec.url, rest_want[i]);
			api_http_spec_free(&spec);
			assert_true(connector_build_request(s, &t, op, &row, 1, &spec, &err));
			snprintf(want, sizeof(want), "https://api.stripe.com/v1/customers/%s",
			         rest_want[i] + strlen("http://h/contacts/"));
			assert_string_equal(spec.url, want);
			api_http_spec_free(&spec);
		}
	}
	api_table_free(&t);
	connector_free(r);
	connector_free(s);
}

/* The record id is the API's to assign, unless a REST insert puts it in its path. */
static void test_check_ids(void **state)
{
	static const struct api_value given[] = {{"id", "mine", API_VALUE_TEXT},
	                                         {"email", "a@b.c", API_VALUE_TEXT}};
	static const struct api_value none[] = {{"id", NULL, API_VALUE_TEXT},
	                                        {"email", "a@b.c", API_VALUE_TEXT}};
	static const struct api_value other[] = {{"id", "other", API_VALUE_TEXT},
	                                         {"email", "a@b.c", API_VALUE_TEXT}};
	struct cf_kv kv[] = {{"type", "rest"}, {"base_url", "http://h"}, {"path", "/contacts"}};
	struct cf_kv put[] = {{"type", "rest"},
	                      {"base_url", "http://h"},
	                      {"path", "/contacts"},
	                      {"insert_path", "/contacts/{id}"},
	                      {"insert_method", "PUT"}};
	struct connector *r = make(kv, 3), *p = make(put, 5), *s = stripe();
	struct api_row ins = {.new_image = {given, 2}}, ins_none = {.new_image = {none, 2}};
	struct api_row upd = {.old_image = {given, 2}, .new_image = {other, 2}};
	struct api_error err;

	(void)state;
	assert_false(connector_check_ids(r, &table, API_OP_INSERT, &ins, 1, &err));
	assert_int_equal(err.cls, API_ERR_ASSIGNED_ID);
	assert_string_equal(err.message, "cannot insert a non-DEFAULT value into column \"id\"");
	assert_string_equal(err.column, "id");
	assert_false(connector_check_ids(s, &table, API_OP_INSERT, &ins, 1, &err));
	assert_true(connector_check_ids(p, &table, API_OP_INSERT, &ins, 1, &err));
	assert_true(connector_check_ids(r, &table, API_OP_INSERT, &ins_none, 1, &err));
	assert_false(connector_check_ids(p, &table, API_OP_UPDATE, &upd, 1, &err));
	assert_string_equal(err.message, "column \"id\" can only be updated to DEFAULT");
	upd.new_image.values = given;
	assert_true(connector_check_ids(r, &table, API_OP_UPDATE, &upd, 1, &err));
	connector_free(r);
	connector_free(p);
	connector_free(s);
}

/* Which updates change nothing the API holds (and so need no request). */
static void test_rows_change_nothing(void **state)
{
	static const struct api_value o[] = {{"id", "1", API_VALUE_TEXT},
	                                     {"email", "a@b.c", API_VALUE_TEXT},
	                                     {"created_at", "then", API_VALUE_TEXT}};
	static const struct api_value same[] = {{"id", "1", API_VALUE_TEXT},
	                                        {"email", "a@b.c", API_VALUE_TEXT},
	                                        {"created_at", "then", API_VALUE_TEXT}};
	static const struct api_value ro[] = {{"id", "1", API_VALUE_TEXT},
	                                      {"email", "a@b.c", API_VALUE_TEXT},
	                                      {"created_at", "now", API_VALUE_TEXT}};
	static const struct api_value mail[] = {{"id", "1", API_VALUE_TEXT},
	                                        {"email", NULL, API_VALUE_TEXT},
	                                        {"created_at", "then", API_VALUE_TEXT}};
	static const struct api_value pk[] = {{"id", "2", API_VALUE_TEXT},
	                                      {"email", "a@b.c", API_VALUE_TEXT},
	                                      {"created_at", "then", API_VALUE_TEXT}};
	struct api_row rows[2] = {{.old_image = {o, 3}, .new_image = {same, 3}},
	                          {.old_image = {o, 3}, .new_image = {same, 3}}};

	(void)state;
	assert_true(api_rows_change_nothing(&table, rows, 2));
	rows[1].new_image.values = ro; /* created_at is read-only: the API never gets it */
	assert_true(api_rows_change_nothing(&table, rows, 2));
	rows[1].new_image.values = mail;
	assert_false(api_rows_change_nothing(&table, rows, 2));
	rows[1].new_image.values = pk;
	assert_false(api_rows_change_nothing(&table, rows, 2));
}

/* A body past the connector's own cap is 54000 material (API_ERR_TOO_LARGE), not a validation
 * error: the API never saw it. */
static void test_body_over_cap_is_too_large(void **state)
{
	size_t big = 9u << 20;
	char *text = malloc(big + 1);
	struct cf_kv kv[] = {{"type", "rest"}, {"base_url", "http://h"}, {"path", "/contacts"}};
	struct connector *r = make(kv, 3), *s = stripe();
	struct cf_kv tkv[] = {{"api", "stripe"}, {"object", "customers"}};
	struct api_table t;
	struct api_http_spec spec;
	struct api_error err;
	char e[256];

	(void)state;
	assert_non_null(text);
	memset(text, 'x', big);
	text[big] = '\0';
	assert_true(api_table_init(&t, "stripe.customers", tkv, 2, e, sizeof(e)));
	{
		const struct api_value img[] = {{"id", "1", API_VALUE_TEXT},
		                                {"name", text, API_VALUE_TEXT}};
		const struct api_value old[] = {{"id", "1", API_VALUE_TEXT},
		                                {"name", "a", API_VALUE_TEXT}};
		struct api_row row = {.old_image = {old, 2}, .new_image = {img, 2}};

		assert_false(
		        connector_build_request(r, &table, API_OP_UPDATE, &row, 1, &spec, &err));
		assert_int_equal(err.cls, API_ERR_TOO_LARGE);
		assert_non_null(
		        strstr(err.message, "larger than syncbouncer's limit of 8388608 bytes"));
		assert_false(connector_build_request(s, &t, API_OP_UPDATE, &row, 1, &spec, &err));
		assert_int_equal(err.cls, API_ERR_TOO_LARGE);
		assert_non_null(
		        strstr(err.message, "larger than syncbouncer's limit of 262144 bytes"));
	}
	api_table_free(&t);
	connector_free(r);
	connector_free(s);
	free(text);
}

/*
 * Finding an insert's record by the key it carries (Search API), for the resources Search
 * covers; others get no key in their records and cannot be found so.
 */
static void test_stripe_find_key(void **state)
{
	static const char none[] = "{\"object\":\"search_result\",\"url\":\"/v1/customers/search\","
	                           "\"has_more\":false,\"data\":[],\"next_page\":null}";
	static const char one[] =
	        "{\"object\":\"search_result\",\"has_more\":false,\"next_page\":null,\"data\":"
	        "[{\"id\":\"cus_1\",\"object\":\"customer\",\"email\":\"a@b.io\","
	        "\"metadata\":{\"syncbouncer_key\":\"k1\"}}]}";
	static const char two[] = "{\"object\":\"search_result\",\"data\":[{\"id\":\"cus_2\"},"
	                          "{\"id\":\"cus_1\"}]}";
	static const struct api_value img[] = {{"email", "a@b.io", API_VALUE_TEXT}};
	struct cf_kv tkv[] = {{"object", "customers"}};
	struct cf_kv ckv[] = {{"object", "coupons"}};
	struct api_row row = {.new_image = {img, 1}};
	struct connector *c = stripe();
	struct http_response resp = {0};
	struct api_http_spec spec;
	struct api_result res;
	struct api_error err;
	struct api_table t, ct;
	char e[256];

	(void)state;
	assert_true(api_table_init(&t, "stripe.customers", tkv, 1, e, sizeof(e)));
	assert_true(api_table_init(&ct, "stripe.coupons", ckv, 1, e, sizeof(e)));
	assert_true(connector_build_find_key(c, &t, "0123abcdef", &spec, &err));
	assert_int_equal(spec.method, HTTP_GET);
	assert_string_equal(spec.url, "https://api.stripe.com/v1/customers/search?query=metadata"
	                              "%5B%27syncbouncer_key%27%5D%3A%270123abcdef%27&limit=10");
	api_http_spec_free(&spec);
	/* a key that could break out of the query's quotes is never sent */
	assert_false(connector_build_find_key(c, &t, "x' OR email:'y", &spec, &err));
	assert_int_equal(err.cls, API_ERR_VALIDATION);

	assert_false(connector_can_find_key(c, &ct));
	assert_false(connector_build_find_key(c, &ct, "0123abcdef", &spec, &err));
	assert_true(connector_build_request(c, &ct, API_OP_INSERT, &row, 1, &spec, &err));
	assert_string_equal(spec.body, "email=a%40b.io");
	api_http_spec_free(&spec);

	resp.outcome = HTTP_OUTCOME_ANSWER;
	resp.status = 200;
	resp.body = one;
	resp.body_len = strlen(one);
	connector_parse_find_key(c, &t, "k1", &resp, &res);
	assert_true(res.ok);
	assert_string_equal(res.rows[0].id, "cus_1");
	api_result_free(&res);
	resp.body = none;
	resp.body_len = strlen(none);
	connector_parse_find_key(c, &t, "k1", &resp, &res);
	assert_int_equal(res.error.cls, API_ERR_NOT_FOUND);
	api_result_free(&res);
	/* two records with one key: never a guess which is the write's */
	resp.body = two;
	resp.body_len = strlen(two);
	connector_parse_find_key(c, &t, "k1", &resp, &res);
	assert_int_equal(res.error.cls, API_ERR_BAD_ANSWER);
	assert_non_null(strstr(res.error.message, "cus_2, cus_1"));
	api_result_free(&res);
	api_table_free(&t);
	api_table_free(&ct);
	connector_free(c);
}

static void test_stripe_parse(void **state)
{
	struct cf_kv tkv[] = {{"object", "customers"}, {"columns", "plan:metadata[plan]"}};
	static const struct api_value jenny[] = {{"email", "jennyrosen.com", API_VALUE_TEXT}};
	static const char idem_error[] =
	        "{\"error\": {\"message\": \"Keys for idempotent requests can only be used "
	        "with the same parameters they were first used with.\", \"type\": "
	        "\"idempotency_error\"}}";
	struct api_row row = {.new_image = {jenny, 1}};
	struct connector *c = stripe();
	struct http_response resp = {0};
	struct api_result res;
	struct api_table t;
	char e[256], *body;
	size_t len;
	int i, found = 0;

	assert_true(api_table_init(&t, "stripe.customers", tkv, 2, e, sizeof(e)));
	resp.outcome = HTTP_OUTCOME_ANSWER;
	resp.status = 200;
	resp.body = body = fixture("stripe_customer.json", &len);
	resp.body_len = len;
	connector_parse_response(c, &t, API_OP_INSERT, &row, 1, &resp, &res);
	assert_true(res.ok);
	assert_string_equal(res.rows[0].id, "cus_NffrFeUfNV2Hib");
	for (i = 0; i < res.rows[0].nfields; i++) {
		const struct api_field_value *f = &res.rows[0].fields[i];
		if (strcmp(f->column, "created") == 0) {
			assert_string_equal(f->value, "1680893993");
			found++;
		}
		if (strcmp(f->column, "delinquent") == 0) {
			assert_string_equal(f->value, "false");
			found++;
		}
		if (strcmp(f->column, "phone") == 0) {
			assert_null(f->value);
			found++;
		}
	}
	assert_int_equal(found, 3);
	api_result_free(&res);
	free(body);

	resp.status = 400;
	resp.body = body = fixture("stripe_error_email.json", &len);
	resp.body_len = len;
	connector_parse_response(c, &t, API_OP_INSERT, &row, 1, &resp, &res);
	assert_int_equal(res.error.cls, API_ERR_VALIDATION);
	assert_string_equal(res.error.code, "email_invalid");
	assert_string_equal(res.error.column, "email");
	assert_string_equal(res.error.value, "jennyrosen.com");
	assert_true(res.error.nothing_written);
	api_result_free(&res);
	free(body);

	/* the key was first used by another request, which may have created the record */
	resp.status = 400;
	resp.body = (char *)idem_error;
	resp.body_len = strlen(idem_error);
	connector_parse_response(c, &t, API_OP_INSERT, &row, 1, &resp, &res);
	assert_false(res.ok);
	assert_int_equal(res.error.cls, API_ERR_UNKNOWN_OUTCOME);
	assert_false(res.error.nothing_written);
	api_result_free(&res);

	/* a 500 may have written; the same 500 again under the key is Stripe's saved answer */
	{
		static const char api_error[] =
		        "{\"error\": {\"type\": \"api_error\", \"message\": \"Something went wrong\"}}";
		struct http_header replayed = {"idempotent-replayed", "true"};
		resp.status = 500;
		resp.body = (char *)api_error;
		resp.body_len = strlen(api_error);
		connector_parse_response(c, &t, API_OP_INSERT, &row, 1, &resp, &res);
		assert_int_equal(res.error.cls, API_ERR_SERVER);
		assert_false(res.error.nothing_written);
		assert_false(res.error.replayed);
		api_result_free(&res);
		resp.headers = &replayed;
		resp.nheaders = 1;
		connector_parse_response(c, &t, API_OP_INSERT, &row, 1, &resp, &res);
		assert_int_equal(res.error.cls, API_ERR_SERVER);
		assert_false(res.error.nothing_written);
		assert_true(res.error.replayed);
		api_result_free(&res);
		resp.headers = NULL;
		resp.nheaders = 0;
	}

	resp.status = 404;
	resp.body = body = fixture("stripe_error_missing.json", &len);
	resp.body_len = len;
	connector_parse_response(c, &t, API_OP_DELETE, &row, 1, &resp, &res);
	assert_int_equal(res.error.cls, API_ERR_NOT_FOUND);
	api_result_free(&res);
	free(body);

	resp.status = 200;
	resp.body = body = fixture("sf_create_ok.json", &len); /* an array is not an object */
	resp.body_len = len;
	connector_parse_response(c, &t, API_OP_INSERT, &row, 1, &resp, &res);
	assert_int_equal(res.error.cls, API_ERR_BAD_ANSWER);
	api_result_free(&res);
	free(body);
	api_table_free(&t);
	connector_free(c);
}

/* ---- HubSpot and Airtable ---- */

static const struct api_value hs_paul[] = {{"id", NULL, API_VALUE_TEXT},
                                           {"firstname", "Paul", API_VALUE_TEXT},
                                           {"email", "paul@caladan.io", API_VALUE_TEXT},
                                           {"vip", "t", API_VALUE_BOOL}};
static const struct api_value hs_leto[] = {{"id", NULL, API_VALUE_TEXT},
                                           {"firstname", "Leto", API_VALUE_TEXT},
                                           {"email", "pauldune.co", API_VALUE_TEXT}};

static void parse_with(struct connector *c, struct api_table *t, const char *name, long status,
                       enum api_op op, const struct api_row *rows, int nrows,
                       struct api_result *res)
{
	struct http_response resp = {0};
	size_t len = 0;
	char *body = name ? fixture(name, &len) : NULL;

	resp.outcome = HTTP_OUTCOME_ANSWER;
	resp.status = status;
	resp.body = body ? body : "";
	resp.body_len = len;
	connector_parse_response(c, t, op, rows, nrows, &resp, res);
	free(body);
}

static void test_hubspot(void **state)
{
	struct cf_kv kv[] = {{"type", "hubspot"}, {"base_url", "https://api.hubapi.com"}};
	struct cf_kv tkv[] = {{"object", "contacts"}};
	static const struct api_value ids[2][1] = {{{"id", "511", API_VALUE_TEXT}},
	                                           {{"id", "512", API_VALUE_TEXT}}};
	struct connector *c = make(kv, 2);
	struct api_row rows[2] = {{.new_image = {hs_paul, 4}}, {.new_image = {hs_leto, 3}}};
	struct api_row drows[2] = {{.old_image = {ids[0], 1}}, {.old_image = {ids[1], 1}}};
	struct api_http_spec spec;
	struct api_error err;
	struct api_result res;
	struct api_table t;
	char e[256];

	assert_true(api_table_init(&t, "hubspot.contacts", tkv, 1, e, sizeof(e)));
	assert_int_equal(connector_max_rows(c, API_OP_INSERT), 100);
	assert_true(connector_build_request(c, &t, API_OP_INSERT, rows, 2, &spec, &err));
	assert_int_equal(spec.method, HTTP_POST);
	assert_string_equal(spec.url,
	                    "https://api.hubapi.com/crm/v3/objects/contacts/batch/create");
	assert_string_equal(
	        spec.body,
	        "{\"inputs\":[{\"objectWriteTraceId\":\"0\",\"properties\":{\"firstname\":"
	        "\"Paul\",\"email\":\"paul@caladan.io\",\"vip\":\"true\"}},"
	        "{\"objectWriteTraceId\":\"1\",\"properties\":{\"firstname\":\"Leto\","
	        "\"email\":\"pauldune.co\"}}]}");
	api_http_spec_free(&spec);
	assert_true(connector_build_request(c, &t, API_OP_DELETE, drows, 2, &spec, &err));
	assert_string_equal(spec.url,
	                    "https://api.hubapi.com/crm/v3/objects/contacts/batch/archive");
	assert_string_equal(spec.body, "{\"inputs\":[{\"id\":\"511\"},{\"id\":\"512\"}]}");
	api_http_spec_free(&spec);

	/* results come back in any order: matched by objectWriteTraceId */
	parse_with(c, &t, "hs_create_ok.json", 201, API_OP_INSERT, rows, 2, &res);
	assert_true(res.ok);
	assert_string_equal(res.rows[0].id, "511");
	assert_string_equal(res.rows[1].id, "512");
	assert_string_equal(res.rows[0].fields[0].column, "createdate");
	api_result_free(&res);

	parse_with(c, &t, "hs_validation.json", 400, API_OP_INSERT, rows + 1, 1, &res);
	assert_int_equal(res.error.cls, API_ERR_VALIDATION);
	assert_string_equal(res.error.code, "INVALID_EMAIL");
	assert_string_equal(res.error.column, "email");
	assert_string_equal(res.error.value, "pauldune.co");
	assert_string_equal(res.error.message, "Email address pauldune.co is invalid");
	assert_true(res.error.nothing_written);
	api_result_free(&res);

	parse_with(c, &t, "hs_conflict.json", 409, API_OP_INSERT, rows, 1, &res);
	assert_int_equal(res.error.cls, API_ERR_DUPLICATE);
	assert_non_null(strstr(res.error.message, "Existing ID: 511"));
	api_result_free(&res);

	/* part of the batch was applied: never a clean "nothing written" error */
	parse_with(c, &t, "hs_partial.json", 207, API_OP_INSERT, rows, 2, &res);
	assert_int_equal(res.error.cls, API_ERR_UNKNOWN_OUTCOME);
	assert_false(res.error.nothing_written);
	api_result_free(&res);

	parse_with(c, &t, NULL, 204, API_OP_DELETE, drows, 2, &res);
	assert_true(res.ok);
	assert_string_equal(res.rows[1].id, "512");
	api_result_free(&res);
	api_table_free(&t);
	connector_free(c);
}

static void test_airtable(void **state)
{
	struct cf_kv kv[] = {{"type", "airtable"},
	                     {"base_url", "https://api.airtable.com"},
	                     {"base_id", "appXYZ123"},
	                     {"typecast", "true"}};
	struct cf_kv bad[] = {{"type", "airtable"}, {"base_url", "https://api.airtable.com"}};
	struct cf_kv tkv[] = {{"object", "People List"},
	                      {"columns", "first_name:First Name,email:Email,score:Score,"
	                                  "created_time:createdTime"}};
	static const struct api_value at_paul[] = {{"id", NULL, API_VALUE_TEXT},
	                                           {"first_name", "Paul", API_VALUE_TEXT},
	                                           {"email", "paul@caladan.io", API_VALUE_TEXT},
	                                           {"score", "97.5", API_VALUE_NUMBER}};
	static const struct api_value o[] = {{"id", "recAAAAAAAAAAAAAA", API_VALUE_TEXT},
	                                     {"email", "paul@caladan.io", API_VALUE_TEXT}};
	static const struct api_value n[] = {{"id", "recAAAAAAAAAAAAAA", API_VALUE_TEXT},
	                                     {"email", "pauldune.co", API_VALUE_TEXT}};
	static const struct api_value ids[2][1] = {{{"id", "recAAAAAAAAAAAAAA", API_VALUE_TEXT}},
	                                           {{"id", "recBBBBBBBBBBBBBB", API_VALUE_TEXT}}};
	struct api_row rows[2] = {{.new_image = {at_paul, 4}}, {.new_image = {at_paul, 4}}};
	struct api_row up = {.old_image = {o, 2}, .new_image = {n, 2}};
	struct api_row drows[2] = {{.old_image = {ids[0], 1}}, {.old_image = {ids[1], 1}}};
	struct api_http_spec spec;
	struct api_error err;
	struct api_result res;
	struct api_table t;
	struct connector *c;
	char e[256];
	int i;

	assert_null(connector_create("at", bad, 2, e, sizeof(e)));
	assert_non_null(strstr(e, "base_id="));
	c = make(kv, 4);
	assert_true(api_table_init(&t, "airtable.people", tkv, 2, e, sizeof(e)));
	assert_int_equal(connector_max_rows(c, API_OP_INSERT), 10);
	assert_true(connector_build_request(c, &t, API_OP_INSERT, rows, 2, &spec, &err));
	assert_string_equal(spec.url, "https://api.airtable.com/v0/appXYZ123/People%20List");
	assert_string_equal(spec.body,
	                    "{\"records\":[{\"fields\":{\"First Name\":\"Paul\",\"Email\":"
	                    "\"paul@caladan.io\",\"Score\":97.5}},{\"fields\":{\"First Name\":"
	                    "\"Paul\",\"Email\":\"paul@caladan.io\",\"Score\":97.5}}],"
	                    "\"typecast\":true}");
	api_http_spec_free(&spec);
	assert_true(connector_build_request(c, &t, API_OP_UPDATE, &up, 1, &spec, &err));
	assert_int_equal(spec.method, HTTP_PATCH);
	assert_string_equal(spec.body, "{\"records\":[{\"id\":\"recAAAAAAAAAAAAAA\",\"fields\":"
	                               "{\"Email\":\"pauldune.co\"}}],\"typecast\":true}");
	api_http_spec_free(&spec);
	assert_true(connector_build_request(c, &t, API_OP_DELETE, drows, 2, &spec, &err));
	assert_int_equal(spec.method, HTTP_DELETE);
	assert_string_equal(spec.url,
	                    "https://api.airtable.com/v0/appXYZ123/People%20List"
	                    "?records%5B%5D=recAAAAAAAAAAAAAA&records%5B%5D=recBBBBBBBBBBBBBB");
	api_http_spec_free(&spec);

	parse_with(c, &t, "at_create_ok.json", 200, API_OP_INSERT, rows, 2, &res);
	assert_true(res.ok);
	assert_string_equal(res.rows[0].id, "recAAAAAAAAAAAAAA");
	assert_string_equal(res.rows[1].id, "recBBBBBBBBBBBBBB");
	assert_string_equal(res.rows[0].fields[0].column, "created_time");
	for (i = 0; i < res.rows[0].nfields; i++) {
		if (strcmp(res.rows[0].fields[i].column, "score") == 0)
			assert_string_equal(res.rows[0].fields[i].value, "97.5");
		if (strcmp(res.rows[0].fields[i].field, "Tags") == 0)
			assert_string_equal(res.rows[0].fields[i].value, "[\"a\",\"b\"]");
	}
	api_result_free(&res);

	parse_with(c, &t, "at_invalid_value.json", 422, API_OP_UPDATE, &up, 1, &res);
	assert_int_equal(res.error.cls, API_ERR_VALIDATION);
	assert_string_equal(res.error.code, "INVALID_VALUE_FOR_COLUMN");
	assert_string_equal(res.error.field, "Email");
	assert_string_equal(res.error.column, "email");
	assert_string_equal(res.error.value, "pauldune.co");
	api_result_free(&res);

	parse_with(c, &t, "at_not_found.json", 404, API_OP_DELETE, drows, 2, &res);
	assert_int_equal(res.error.cls, API_ERR_NOT_FOUND);
	api_result_free(&res);
	parse_with(c, &t, "html_503.html", 429, API_OP_DELETE, drows, 2, &res);
	assert_int_equal(res.error.cls, API_ERR_RATE_LIMIT);
	assert_int_equal(res.error.retry_after, 30);
	api_result_free(&res);
	parse_with(c, &t, "at_delete_ok.json", 200, API_OP_DELETE, drows, 2, &res);
	assert_true(res.ok);
	api_result_free(&res);
	parse_with(c, &t, "at_delete_ok.json", 200, API_OP_DELETE, drows, 1, &res);
	assert_int_equal(res.error.cls, API_ERR_BAD_ANSWER);
	api_result_free(&res);
	api_table_free(&t);
	connector_free(c);
}

/*
 * A batch refused for one row's value, the API not saying which row (HubSpot, Airtable, most
 * REST APIs): the row is found by the value the message names, or by the one value all rows
 * sent; else the value is unknown and the client's DETAIL leaves the Key clause out.
 */
static void test_error_located_by_value(void **state)
{
	static const struct {
		const char *message;
		const char *emails[3]; /* NULL: the row has no such value (SQL null) */
		int nrows;
		bool update; /* rows[0] keeps its email; the others change it from "old@x.io" */
		int row;     /* -1: no single row */
		const char *value; /* NULL: unknown */
	} cases[] = {
	        {"Email address pauldune.co is invalid",
	         {"paul@caladan.io", "pauldune.co", "jessica@caladan.io"}, 3, false, 1,
	         "pauldune.co"},
	        /* named by no value, values differ: unknown */
	        {"Field \"email\" cannot accept the provided value",
	         {"paul@caladan.io", "pauldune.co"}, 2, false, -1, NULL},
	        /* every row sent the same value: that one, whichever row it was */
	        {"Field \"email\" cannot accept the provided value", {"bad", "bad", "bad"}, 3,
	         false, -1, "bad"},
	        /* a value inside another named one: the longer */
	        {"b@x.io is not a valid email address", {"x.io", "b@x.io"}, 2, false, 1, "b@x.io"},
	        /* only a whole word counts: "paul" is not named by "paula" */
	        {"email paula is taken", {"paul", "paula"}, 2, false, 1, "paula"},
	        {"email paul is taken", {"paula", "paul"}, 2, false, 1, "paul"},
	        /* two values named, neither within the other: no telling */
	        {"a@x.io or b@x.io is invalid", {"a@x.io", "b@x.io"}, 2, false, -1, NULL},
	        /* an update sends what changed: rows[0] did not send its email */
	        {"Property value is invalid", {"keep@x.io", "bad"}, 2, true, 1, "bad"},
	        /* one row: that row, named or not */
	        {"Property value is invalid", {"bad"}, 1, false, 0, "bad"},
	        {"Property value is invalid", {NULL}, 1, false, 0, "null"},
	};
	struct cf_kv kv[] = {{"type", "hubspot"}, {"base_url", "https://api.hubapi.com"}};
	struct cf_kv tkv[] = {{"object", "contacts"}};
	struct connector *c = make(kv, 2);
	struct api_table t;
	char e[256];

	(void)state;
	assert_true(api_table_init(&t, "hubspot.contacts", tkv, 1, e, sizeof(e)));
	for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		struct api_value nv[3][2], ov[3][2];
		struct api_row rows[3];
		struct api_error err;

		memset(rows, 0, sizeof(rows));
		for (int r = 0; r < cases[k].nrows; r++) {
			nv[r][0] = (struct api_value){"id", cases[k].update ? "511" : NULL,
			                              API_VALUE_TEXT};
			nv[r][1] = (struct api_value){"email", cases[k].emails[r], API_VALUE_TEXT};
			ov[r][0] = nv[r][0];
			ov[r][1] = (struct api_value){"email", r == 0 ? cases[k].emails[r] : "old@x.io",
			                              API_VALUE_TEXT};
			rows[r].new_image = (struct api_row_image){nv[r], 2};
			if (cases[k].update)
				rows[r].old_image = (struct api_row_image){ov[r], 2};
		}
		api_error_set(&err, API_ERR_VALIDATION, "%s", cases[k].message);
		api_error_locate(&err, c, &t, cases[k].update ? API_OP_UPDATE : API_OP_INSERT,
		                 rows, cases[k].nrows, cases[k].nrows == 1 ? 0 : -1, "email");
		if (err.row != cases[k].row || err.value_unknown != (cases[k].value == NULL) ||
		    (cases[k].value != NULL &&
		     strcmp(err.value_is_null ? "null" : err.value, cases[k].value) != 0))
			fail_msg("case %zu (%s): row %d, value %s%s", k, cases[k].message, err.row,
			         err.value_is_null ? "null" : err.value,
			         err.value_unknown ? " (unknown)" : "");
		assert_string_equal(err.column, "email");
	}
	api_table_free(&t);
	connector_free(c);
}

/* ---- end to end: api_submit() against the fake REST API ---- */

static struct fake_server fake;
static struct event_base *base;
static struct http_engine *eng;
static int finished, wanted;

static void on_guard(evutil_socket_t fd, short what, void *arg)
{
	event_base_loopbreak(base);
}

static void run_until(int want, int limit_ms)
{
	struct timeval tv = {limit_ms / 1000, (limit_ms % 1000) * 1000};
	struct event *guard = evtimer_new(base, on_guard, NULL);

	wanted = want;
	evtimer_add(guard, &tv);
	if (finished < want)
		event_base_dispatch(base);
	event_free(guard);
}

static void on_api_done(void *arg, struct api_result *res)
{
	api_result_move(arg, res);
	if (++finished >= wanted)
		event_base_loopbreak(base);
}

static struct api *rest_api(const char *token, bool batch)
{
	char err[256];
	struct cf_kv kv[] = {
	        {"type", "rest"},
	        {"base_url", fake.base_url},
	        {"auth", "bearer"},
	        {"token", (char *)token},
	        {"timeout", "2"},
	        {batch ? "insert_path" : "path", batch ? "/contacts/batch" : "/contacts"},
	        {"update_path", "/contacts/{id}"},
	        {"delete_path", "/contacts?ids={ids}"},
	        {"records_key", "data"},
	        {"max_batch", "10"},
	};
	struct api *api = api_create(eng, "internal", kv, batch ? 10 : 6, err, sizeof(err));

	if (api == NULL)
		fail_msg("%s", err);
	return api;
}

static int e2e_setup(void **state)
{
	base = event_base_new();
	eng = http_engine_create(base, NULL);
	finished = 0;
	return 0;
}

static int e2e_teardown(void **state)
{
	http_engine_free(eng);
	event_base_free(base);
	return 0;
}

static void test_e2e_single(void **state)
{
	static const struct api_value alia[] = {{"id", NULL, API_VALUE_TEXT},
	                                        {"first_name", "Alia", API_VALUE_TEXT},
	                                        {"email", "alia@arrakis.io", API_VALUE_TEXT},
	                                        {"age", "4", API_VALUE_NUMBER}};
	struct api *api = rest_api("s3cret", false);
	struct api *wrong = rest_api("wrong", false);
	struct api_row row = {.new_image = {alia, 4}};
	struct api_value old_img[4], new_img[4];
	struct api_result r1, r2, r3, r4, r5;
	const char *created = NULL;
	int i;

	api_result_init(&r1);
	api_result_init(&r2);
	api_result_init(&r3);
	api_result_init(&r4);
	api_result_init(&r5);
	assert_int_equal(api_max_rows(api, API_OP_UPDATE), 1);
	assert_non_null(api_submit(api, &table, API_OP_INSERT, &row, 1, on_api_done, &r1));
	assert_non_null(api_submit(wrong, &table, API_OP_INSERT, &row, 1, on_api_done, &r5));
	run_until(2, 5000);
	if (!r1.ok)
		fail_msg("%s", r1.error.message);
	assert_string_equal(r1.rows[0].id, "1");
	for (i = 0; i < r1.rows[0].nfields; i++) {
		if (strcmp(r1.rows[0].fields[i].column, "created_at") == 0)
			created = r1.rows[0].fields[i].value;
	}
	assert_non_null(created); /* a value the API assigned comes back */
	assert_int_equal(r5.error.cls, API_ERR_AUTH);
	assert_non_null(strstr(r5.error.message, "internal authentication failed"));

	/* update to an invalid address: the API says which column and value */
	memcpy(old_img, alia, sizeof(alia));
	memcpy(new_img, alia, sizeof(alia));
	old_img[0].value = new_img[0].value = r1.rows[0].id;
	new_img[2].value = "aliadune.co";
	row = (struct api_row){.old_image = {old_img, 4}, .new_image = {new_img, 4}};
	assert_non_null(api_submit(api, &table, API_OP_UPDATE, &row, 1, on_api_done, &r2));
	run_until(3, 5000);
	assert_int_equal(r2.error.cls, API_ERR_VALIDATION);
	assert_int_equal(r2.error.http_status, 422);
	assert_string_equal(r2.error.column, "email");
	assert_string_equal(r2.error.value, "aliadune.co");
	assert_true(r2.error.nothing_written);

	new_img[2].value = "alia@sietch.io";
	assert_non_null(api_submit(api, &table, API_OP_UPDATE, &row, 1, on_api_done, &r3));
	run_until(4, 5000);
	assert_true(r3.ok);
	assert_string_equal(r3.rows[0].id, "1");

	row.new_image.nvalues = 0;
	assert_non_null(api_submit(api, &table, API_OP_DELETE, &row, 1, on_api_done, &r4));
	run_until(5, 5000);
	assert_true(r4.ok);
	api_result_free(&r1);
	api_result_free(&r2);
	api_result_free(&r3);
	api_result_free(&r4);
	api_result_free(&r5);
	api_free(api);
	api_free(wrong);
}

static void test_e2e_auth_header(void **state)
{
	static const struct api_value irulan[] = {{"first_name", "Irulan", API_VALUE_TEXT}};
	struct api_row row = {.new_image = {irulan, 1}};
	struct api_result ok, refused;
	struct api *apis[2];
	char err[256];
	int i;

	for (i = 0; i < 2; i++) {
		struct cf_kv kv[] = {{"type", "rest"},
		                     {"base_url", fake.base_url},
		                     {"path", "/contacts"},
		                     {"auth", "bearer"},
		                     {"token", "s3cret"},
		                     {"auth_header", i == 0 ? "X-Api-Key" : "X-Other-Key"}};
		apis[i] = api_create(eng, "keyed", kv, 6, err, sizeof(err));
		assert_non_null(apis[i]);
	}
	api_result_init(&ok);
	api_result_init(&refused);
	assert_non_null(api_submit(apis[0], &table, API_OP_INSERT, &row, 1, on_api_done, &ok));
	assert_non_null(api_submit(apis[1], &table, API_OP_INSERT, &row, 1, on_api_done, &refused));
	run_until(2, 5000);
	if (!ok.ok)
		fail_msg("%s", ok.error.message);
	assert_int_equal(refused.error.cls, API_ERR_AUTH);
	api_result_free(&ok);
	api_result_free(&refused);
	for (i = 0; i < 2; i++)
		api_free(apis[i]);
}

static void test_e2e_batch(void **state)
{
	static const struct api_value a[] = {{"first_name", "Duncan", API_VALUE_TEXT},
	                                     {"email", "duncan@ginaz.io", API_VALUE_TEXT}};
	static const struct api_value b[] = {{"first_name", "Gurney", API_VALUE_TEXT},
	                                     {"email", "gurney@caladan.io", API_VALUE_TEXT}};
	static const struct api_value c[] = {{"first_name", "Thufir", API_VALUE_TEXT},
	                                     {"email", "duncan@ginaz.io", API_VALUE_TEXT}};
	struct api *api = rest_api("s3cret", true);
	struct api_row rows[3] = {
	        {.new_image = {a, 2}}, {.new_image = {b, 2}}, {.new_image = {c, 2}}};
	struct api_result r1, r2;

	api_result_init(&r1);
	api_result_init(&r2);
	assert_int_equal(api_max_rows(api, API_OP_INSERT), 10);
	assert_non_null(api_submit(api, &table, API_OP_INSERT, rows, 2, on_api_done, &r1));
	run_until(1, 5000);
	if (!r1.ok)
		fail_msg("%s", r1.error.message);
	assert_int_equal(r1.nrows, 2);
	assert_string_not_equal(r1.rows[0].id, r1.rows[1].id);
	/* the third repeats the first's address: the whole batch is refused as a duplicate */
	assert_non_null(api_submit(api, &table, API_OP_INSERT, rows, 3, on_api_done, &r2));
	run_until(2, 5000);
	assert_int_equal(r2.error.cls, API_ERR_DUPLICATE);
	assert_int_equal(r2.error.http_status, 409);
	api_result_free(&r1);
	api_result_free(&r2);
	api_free(api);
}

/* ---- end to end: api_submit() against the fake Stripe ---- */

static struct fake_server fake_stripe;

struct ctl {
	bool done;
	char *body;
};

static void on_ctl(void *arg, const struct http_response *resp)
{
	struct ctl *c = arg;

	c->done = true;
	c->body = strdup(resp->body);
}

static char *stripe_ctl(struct http_lane *lane, enum http_method m, const char *path,
                        const char *body)
{
	char url[128];
	struct ctl c = {0};
	struct http_request *req;

	snprintf(url, sizeof(url), "%s%s", fake_stripe.base_url, path);
	req = http_request_new(m, url);
	if (body != NULL)
		assert_true(http_request_set_body(req, body, strlen(body)));
	assert_true(http_submit(eng, lane, req, on_ctl, &c));
	while (!c.done)
		event_base_loop(base, EVLOOP_ONCE);
	return c.body;
}

static void test_e2e_stripe(void **state)
{
	static const struct api_value jenny[] = {{"id", NULL, API_VALUE_TEXT},
	                                         {"name", "Jenny Rosen", API_VALUE_TEXT},
	                                         {"email", "jenny@example.com", API_VALUE_TEXT}};
	static const struct api_value bad[] = {{"email", "jennyrosen.com", API_VALUE_TEXT}};
	char err[256];
	struct cf_kv kv[] = {{"type", "stripe"}, {"base_url", fake_stripe.base_url},
	                     {"auth", "bearer"}, {"token", "sk_test_fake"},
	                     {"timeout", "2"},   {"deadline", "8"}};
	struct cf_kv tkv[] = {{"object", "customers"}};
	struct http_lane *ctl = http_lane_create(eng, "control", 2);
	struct api *api = api_create(eng, "stripe", kv, 6, err, sizeof(err));
	struct api_row row = {.new_image = {jenny, 3}};
	struct api_row bad_row = {.new_image = {bad, 1}};
	struct api_result r1, r2;
	struct api_table t;
	struct api_stats st;
	char *store, *p;
	int n = 0;

	assert_non_null(api);
	assert_true(api_table_init(&t, "stripe.customers", tkv, 1, err, sizeof(err)));
	api_result_init(&r1);
	api_result_init(&r2);
	free(stripe_ctl(ctl, HTTP_POST, "/_control", "{\"reset\":true,\"drop_after_apply\":1}"));
	/* the first answer is lost after the customer was created; the retry carries the same
	   Idempotency-Key, so Stripe answers again without creating a second customer */
	assert_non_null(api_submit(api, &t, API_OP_INSERT, &row, 1, on_api_done, &r1));
	run_until(1, 8000);
	if (!r1.ok)
		fail_msg("%s", r1.error.message);
	assert_memory_equal(r1.rows[0].id, "cus_", 4);
	store = stripe_ctl(ctl, HTTP_GET, "/_store", NULL);
	for (p = store; (p = strstr(p, "\"object\": \"customer\"")) != NULL; p++)
		n++;
	assert_int_equal(n, 1);
	free(store);
	/* the fake saw the same key twice */
	store = stripe_ctl(ctl, HTTP_GET, "/_requests", NULL);
	p = strstr(store, "\"idempotency_key\": \"");
	assert_non_null(p);
	{
		char key[80];
		int same = 0;

		/* (the key is in each request's form too, kept in the record's metadata) */
		memcpy(key, p, 20 + 32 + 1);
		key[20 + 32 + 1] = '\0';
		for (p = store; (p = strstr(p, key)) != NULL; p++)
			same++;
		assert_int_equal(same, 2);
	}
	free(store);
	api_get_stats(api, &st);
	assert_int_equal(st.errors, 0);

	assert_non_null(api_submit(api, &t, API_OP_INSERT, &bad_row, 1, on_api_done, &r2));
	run_until(2, 5000);
	assert_int_equal(r2.error.cls, API_ERR_VALIDATION);
	assert_string_equal(r2.error.column, "email");
	assert_string_equal(r2.error.value, "jennyrosen.com");
	/* answer lost after applying, and the second attempt refused: the outcome stays unknown */
	api_result_free(&r2);
	free(stripe_ctl(ctl, HTTP_POST, "/_control",
	                "{\"drop_after_apply\":1,\"after_drop_status\":400}"));
	assert_non_null(api_submit(api, &t, API_OP_INSERT, &row, 1, on_api_done, &r2));
	run_until(3, 8000);
	assert_int_equal(r2.error.cls, API_ERR_UNKNOWN_OUTCOME);
	assert_false(r2.error.nothing_written);
	assert_non_null(strstr(r2.error.message, "may have been applied"));
	api_result_free(&r1);
	api_result_free(&r2);
	api_table_free(&t);
	api_free(api);
	http_lane_free(ctl);
}

/* An answer of status with body to a read of id: the result (caller frees it). */
static struct api_result read_answer(struct connector *c, const struct api_table *t, const char *id,
                                     long status, const char *body)
{
	struct http_response resp = {0};
	struct api_result res;

	resp.outcome = HTTP_OUTCOME_ANSWER;
	resp.status = status;
	resp.body = (char *)body;
	resp.body_len = strlen(body);
	connector_parse_read(c, t, id, &resp, &res);
	return res;
}

static const char *field_of(const struct api_row_result *rr, const char *column)
{
	for (int i = 0; i < rr->nfields; i++)
		if (strcmp(rr->fields[i].column, column) == 0)
			return rr->fields[i].value ? rr->fields[i].value : "(null)";
	return NULL;
}

/*
 * Reading one record by id, per API: HubSpot's batch read names the table's properties and
 * reports a missing id among its errors; Airtable and REST GET the record's own URL; a record
 * that is gone is NOT_FOUND; a REST API configured without a record URL cannot read.
 */
static void test_read_by_id(void **state)
{
	struct cf_kv hkv[] = {{"type", "hubspot"}, {"base_url", "https://api.hubapi.com"}};
	struct cf_kv akv[] = {{"type", "airtable"},
	                      {"base_url", "https://api.airtable.com"},
	                      {"base_id", "appXYZ123"}};
	struct cf_kv rkv[] = {{"type", "rest"}, {"base_url", "http://h"}, {"path", "/contacts"}};
	struct cf_kv rkv2[] = {{"type", "rest"},
	                       {"base_url", "http://h"},
	                       {"insert_path", "/v2/people"},
	                       {"update_path", "/v2/people/{id}/edit"},
	                       {"delete_path", "/v2/people/{id}"},
	                       {"read_path", "/v2/people/{id}?full=1"}};
	struct cf_kv rkv3[] = {{"type", "rest"},
	                       {"base_url", "http://h"},
	                       {"insert_path", "/people"},
	                       {"update_path", "/people"},
	                       {"delete_path", "/people"}};
	struct cf_kv rbad[] = {{"type", "rest"},
	                       {"base_url", "http://h"},
	                       {"path", "/contacts"},
	                       {"read_path", "/contacts"}};
	struct cf_kv tkv[] = {{"object", "contacts"}};
	struct cf_kv atkv[] = {{"object", "People List"}, {"columns", "email:Email"}};
	static const char *const fields[] = {"firstname", "email"};
	struct connector *c;
	struct api_http_spec spec;
	struct api_result res;
	struct api_error err;
	struct api_table t;
	char e[256];

	(void)state;
	/* HubSpot */
	c = make(hkv, 2);
	assert_true(connector_can_read(c));
	assert_true(api_table_init(&t, "hubspot.contacts", tkv, 1, e, sizeof(e)));
	assert_true(connector_build_read(c, &t, "512", fields, 2, &spec, &err));
	assert_int_equal(spec.method, HTTP_POST);
	assert_string_equal(spec.url, "https://api.hubapi.com/crm/v3/objects/contacts/batch/read");
	assert_string_equal(spec.body, "{\"properties\":[\"firstname\",\"email\"],"
	                               "\"inputs\":[{\"id\":\"512\"}]}");
	api_http_spec_free(&spec);
	res = read_answer(c, &t, "512", 200,
	                  "{\"status\":\"COMPLETE\",\"results\":[{\"id\":\"512\","
	                  "\"properties\":{\"firstname\":\"Paul\",\"email\":null},"
	                  "\"archived\":false}],\"startedAt\":\"2024-05-01T10:00:00Z\"}");
	assert_true(res.ok);
	assert_int_equal(res.nrows, 1);
	assert_string_equal(res.rows[0].id, "512");
	assert_string_equal(field_of(&res.rows[0], "firstname"), "Paul");
	assert_string_equal(field_of(&res.rows[0], "email"), "(null)");
	api_result_free(&res);
	res = read_answer(c, &t, "513", 207,
	                  "{\"status\":\"COMPLETE\",\"results\":[],\"numErrors\":1,"
	                  "\"errors\":[{\"status\":\"error\",\"category\":\"OBJECT_NOT_FOUND\","
	                  "\"message\":\"Could not get some CONTACT objects, they may be deleted"
	                  " or not exist.\",\"context\":{\"ids\":[\"513\"]}}]}");
	assert_false(res.ok);
	assert_int_equal(res.error.cls, API_ERR_NOT_FOUND);
	assert_true(res.error.nothing_written);
	api_result_free(&res);
	res = read_answer(c, &t, "512", 200, "{\"status\":\"COMPLETE\",\"results\":[]}");
	assert_int_equal(res.error.cls, API_ERR_BAD_ANSWER);
	api_result_free(&res);
	res = read_answer(c, &t, "512", 429,
	                  "{\"status\":\"error\",\"message\":\"You have reached your secondly"
	                  " limit.\",\"category\":\"RATE_LIMITS\"}");
	assert_int_equal(res.error.cls, API_ERR_RATE_LIMIT);
	api_result_free(&res);
	api_table_free(&t);
	connector_free(c);

	/* Airtable */
	c = make(akv, 3);
	assert_true(connector_can_read(c));
	assert_true(api_table_init(&t, "airtable.people", atkv, 2, e, sizeof(e)));
	assert_true(connector_build_read(c, &t, "recAAAAAAAAAAAAAA", fields, 2, &spec, &err));
	assert_int_equal(spec.method, HTTP_GET);
	assert_string_equal(spec.url, "https://api.airtable.com/v0/appXYZ123/People%20List/"
	                              "recAAAAAAAAAAAAAA");
	assert_null(spec.body);
	api_http_spec_free(&spec);
	res = read_answer(c, &t, "recAAAAAAAAAAAAAA", 200,
	                  "{\"id\":\"recAAAAAAAAAAAAAA\",\"createdTime\":"
	                  "\"2024-05-01T10:00:00.000Z\",\"fields\":{\"Email\":\"p@c.io\"}}");
	assert_true(res.ok);
	assert_string_equal(res.rows[0].id, "recAAAAAAAAAAAAAA");
	assert_string_equal(field_of(&res.rows[0], "email"), "p@c.io");
	api_result_free(&res);
	res = read_answer(c, &t, "recAAAAAAAAAAAAAA", 404, "{\"error\":\"NOT_FOUND\"}");
	assert_int_equal(res.error.cls, API_ERR_NOT_FOUND);
	api_result_free(&res);
	res = read_answer(c, &t, "recAAAAAAAAAAAAAA", 200,
	                  "{\"id\":\"recBBBBBBBBBBBBBB\",\"fields\":{}}");
	assert_int_equal(res.error.cls, API_ERR_BAD_ANSWER);
	api_result_free(&res);
	api_table_free(&t);
	connector_free(c);

	/* REST: path=, then read_path=, then no record URL at all */
	assert_true(api_table_init(&t, "rest.contacts", NULL, 0, e, sizeof(e)));
	c = make(rkv, 3);
	assert_true(connector_can_read(c));
	assert_true(connector_build_read(c, &t, "a/b", fields, 2, &spec, &err));
	assert_int_equal(spec.method, HTTP_GET);
	assert_string_equal(spec.url, "http://h/contacts/a%2Fb");
	api_http_spec_free(&spec);
	res = read_answer(c, &t, "7", 200, "{\"id\":\"7\",\"email\":\"x@y.io\",\"n\":3}");
	assert_true(res.ok);
	assert_string_equal(field_of(&res.rows[0], "email"), "x@y.io");
	assert_string_equal(field_of(&res.rows[0], "n"), "3");
	api_result_free(&res);
	res = read_answer(c, &t, "7", 410, "");
	assert_int_equal(res.error.cls, API_ERR_NOT_FOUND);
	api_result_free(&res);
	res = read_answer(c, &t, "7", 200, "");
	assert_int_equal(res.error.cls, API_ERR_BAD_ANSWER);
	api_result_free(&res);
	connector_free(c);
	c = make(rkv2, 6);
	assert_true(connector_build_read(c, &t, "7", NULL, 0, &spec, &err));
	assert_string_equal(spec.url, "http://h/v2/people/7?full=1");
	api_http_spec_free(&spec);
	connector_free(c);
	c = make(rkv3, 5);
	assert_false(connector_can_read(c));
	assert_false(connector_build_read(c, &t, "7", NULL, 0, &spec, &err));
	connector_free(c);
	assert_null(connector_create("internal", rbad, 4, e, sizeof(e)));
	assert_non_null(strstr(e, "read_path="));
	/* REST has no lookup by an external id: such a table is refused */
	api_table_free(&t);
	{
		struct cf_kv ekv[] = {{"object", "contacts"}, {"external_id", "email"}};
		assert_true(api_table_init(&t, "rest.contacts", ekv, 2, e, sizeof(e)));
	}
	c = make(rkv, 3);
	assert_false(connector_check_table(c, &t, e, sizeof(e)));
	connector_free(c);
	api_table_free(&t);
}

/*
 * external_id= with HubSpot (a batch read by the unique property) and Airtable (an upsert
 * merging on the field, and a formula with the value quoted).
 */
static void test_find_by_external_id(void **state)
{
	struct cf_kv hkv[] = {{"type", "hubspot"}, {"base_url", "https://api.hubapi.com"}};
	struct cf_kv akv[] = {{"type", "airtable"},
	                      {"base_url", "https://api.airtable.com"},
	                      {"base_id", "appXYZ123"}};
	struct cf_kv htkv[] = {{"object", "contacts"}, {"external_id", "email"}};
	struct cf_kv atkv[] = {
	        {"object", "People"}, {"columns", "email:Email Address"}, {"external_id", "email"}};
	static const struct api_value given[] = {{"id", NULL, API_VALUE_TEXT},
	                                         {"name", "Paul", API_VALUE_TEXT},
	                                         {"email", "p@c.io", API_VALUE_TEXT}};
	static const struct api_value nobody[] = {{"id", NULL, API_VALUE_TEXT},
	                                          {"name", "Nobody", API_VALUE_TEXT}};
	static const char *const fields[] = {"email"};
	struct api_row row = {.new_image = {given, 3}};
	struct connector *c;
	struct api_http_spec spec;
	struct api_result res;
	struct api_error err;
	struct api_table t;
	char e[256];

	(void)state;
	c = make(hkv, 2);
	assert_true(api_table_init(&t, "hubspot.contacts", htkv, 2, e, sizeof(e)));
	assert_true(connector_check_table(c, &t, e, sizeof(e)));
	assert_true(connector_build_find(c, &t, "p@c.io", fields, 1, &spec, &err));
	assert_string_equal(spec.url, "https://api.hubapi.com/crm/v3/objects/contacts/batch/read");
	assert_string_equal(spec.body, "{\"properties\":[\"email\"],\"idProperty\":\"email\","
	                               "\"inputs\":[{\"id\":\"p@c.io\"}]}");
	api_http_spec_free(&spec);
	{
		struct http_response resp = {0};
		static const char one[] = "{\"status\":\"COMPLETE\",\"results\":[{\"id\":\"77\","
		                          "\"properties\":{\"email\":\"p@c.io\"}}]}";
		static const char none[] =
		        "{\"status\":\"COMPLETE\",\"results\":[],\"numErrors\":1,"
		        "\"errors\":[{\"status\":\"error\","
		        "\"category\":\"OBJECT_NOT_FOUND\",\"message\":\"x\"}]}";
		resp.outcome = HTTP_OUTCOME_ANSWER;
		resp.status = 200;
		resp.body = (char *)one;
		resp.body_len = strlen(one);
		connector_parse_find(c, &t, "p@c.io", &resp, &res);
		assert_true(res.ok);
		assert_string_equal(res.rows[0].id, "77");
		api_result_free(&res);
		resp.status = 207;
		resp.body = (char *)none;
		resp.body_len = strlen(none);
		connector_parse_find(c, &t, "p@c.io", &resp, &res);
		assert_int_equal(res.error.cls, API_ERR_NOT_FOUND);
		api_result_free(&res);
	}
	api_table_free(&t);
	connector_free(c);

	c = make(akv, 3);
	assert_true(api_table_init(&t, "airtable.people", atkv, 3, e, sizeof(e)));
	assert_true(connector_check_table(c, &t, e, sizeof(e)));
	assert_true(connector_build_request(c, &t, API_OP_INSERT, &row, 1, &spec, &err));
	assert_int_equal(spec.method, HTTP_PATCH);
	assert_string_equal(spec.url, "https://api.airtable.com/v0/appXYZ123/People");
	assert_string_equal(spec.body, "{\"performUpsert\":{\"fieldsToMergeOn\":"
	                               "[\"Email Address\"]},\"records\":[{\"fields\":"
	                               "{\"name\":\"Paul\",\"Email Address\":\"p@c.io\"}}]}");
	api_http_spec_free(&spec);
	row.new_image = (struct api_row_image){nobody, 2};
	assert_false(connector_build_request(c, &t, API_OP_INSERT, &row, 1, &spec, &err));
	assert_int_equal(err.cls, API_ERR_REQUIRED);
	assert_true(connector_build_find(c, &t, "a\"b\\c", NULL, 0, &spec, &err));
	assert_int_equal(spec.method, HTTP_GET);
	/* {Email Address}="a\"b\\c", URL-encoded */
	assert_string_equal(spec.url,
	                    "https://api.airtable.com/v0/appXYZ123/People?maxRecords=2&"
	                    "filterByFormula=%7BEmail%20Address%7D%3D%22a%5C%22b%5C%5Cc%22");
	api_http_spec_free(&spec);
	{
		struct http_response resp = {0};
		static const char one[] = "{\"records\":[{\"id\":\"recA\",\"fields\":"
		                          "{\"Email Address\":\"p@c.io\"}}]}";
		static const char two[] = "{\"records\":[{\"id\":\"recA\"},{\"id\":\"recB\"}]}";
		resp.outcome = HTTP_OUTCOME_ANSWER;
		resp.status = 200;
		resp.body = (char *)one;
		resp.body_len = strlen(one);
		connector_parse_find(c, &t, "p@c.io", &resp, &res);
		assert_true(res.ok);
		assert_string_equal(res.rows[0].id, "recA");
		api_result_free(&res);
		resp.body = (char *)"{\"records\":[]}";
		resp.body_len = strlen(resp.body);
		connector_parse_find(c, &t, "p@c.io", &resp, &res);
		assert_int_equal(res.error.cls, API_ERR_NOT_FOUND);
		api_result_free(&res);
		resp.body = (char *)two;
		resp.body_len = strlen(two);
		connector_parse_find(c, &t, "p@c.io", &resp, &res);
		assert_int_equal(res.error.cls, API_ERR_BAD_ANSWER);
		api_result_free(&res);
	}
	api_table_free(&t);
	connector_free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_config),
	        cmocka_unit_test(test_single_insert),
	        cmocka_unit_test(test_single_update_delete),
	        cmocka_unit_test(test_dot_ids_stay_one_segment),
	        cmocka_unit_test(test_body_over_cap_is_too_large),
	        cmocka_unit_test(test_rows_change_nothing),
	        cmocka_unit_test(test_check_ids),
	        cmocka_unit_test(test_batch),
	        cmocka_unit_test(test_errors),
	        cmocka_unit_test(test_stripe_build),
	        cmocka_unit_test(test_stripe_parse),
	        cmocka_unit_test(test_stripe_find_key),
	        cmocka_unit_test(test_stripe_read),
	        cmocka_unit_test(test_hubspot),
	        cmocka_unit_test(test_airtable),
	        cmocka_unit_test(test_read_by_id),
	        cmocka_unit_test(test_find_by_external_id),
	        cmocka_unit_test(test_error_located_by_value),
	};

	const struct CMUnitTest e2e[] = {
	        cmocka_unit_test_setup_teardown(test_e2e_single, e2e_setup, e2e_teardown),
	        cmocka_unit_test_setup_teardown(test_e2e_batch, e2e_setup, e2e_teardown),
	        cmocka_unit_test_setup_teardown(test_e2e_auth_header, e2e_setup, e2e_teardown),
	};
	const struct CMUnitTest e2e_stripe[] = {
	        cmocka_unit_test_setup_teardown(test_e2e_stripe, e2e_setup, e2e_teardown),
	};
	const char *args[] = {"--token", "s3cret", "--token-header", "X-Api-Key", NULL};
	int rc = cmocka_run_group_tests(tests, setup, teardown);

	if (!fake_server_start(&fake, "fake_rest.py", args)) {
		fprintf(stderr, "cannot start the fake REST API\n");
		return 1;
	}
	rc |= cmocka_run_group_tests_name("api calls against the fake REST API", e2e, setup,
	                                  teardown);
	fake_server_stop(&fake);
	if (!fake_server_start(&fake_stripe, "fake_stripe.py", NULL)) {
		fprintf(stderr, "cannot start the fake Stripe\n");
		return 1;
	}
	rc |= cmocka_run_group_tests_name("api calls against the fake Stripe", e2e_stripe, setup,
	                                  teardown);
	fake_server_stop(&fake_stripe);
	return rc;
}
