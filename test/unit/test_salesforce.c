/*
 * Unit tests of the Salesforce connector: configuration, the one request built per statement
 * (sObject Collections), and reading answers in the documented shapes from fixture files,
 * including malformed, truncated, non-JSON and oversized answers.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "api/api.h"
#include "api/connector.h"
#include "api/json.h"

#include "../fakes/fake_launch.h"

static struct connector *sf;
static struct api_table contacts;

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

static int setup(void **state)
{
	struct cf_kv kv[] = {
	        {"type", "salesforce"},
	        {"base_url", "https://acme.my.salesforce.com/"},
	        {"api_version", "v59.0"},
	        {"auth", "oauth2"},
	};
	struct cf_kv tkv[] = {
	        {"api", "salesforce"},
	        {"object", "Contact"},
	        {"columns", "note:Description, score:Score__c"},
	        {"readonly", "created_at"},
	};
	char err[256];

	sf = connector_create("salesforce", kv, 4, err, sizeof(err));
	if (sf == NULL)
		fail_msg("%s", err);
	if (!api_table_init(&contacts, "salesforce.contacts", tkv, 4, err, sizeof(err)))
		fail_msg("%s", err);
	return 0;
}

static int teardown(void **state)
{
	connector_free(sf);
	api_table_free(&contacts);
	return 0;
}

static void test_config_errors(void **state)
{
	static const struct {
		struct cf_kv kv[3];
		int n;
		const char *why;
	} cases[] = {
	        {{{"base_url", "https://x"}}, 1, "type= is missing"},
	        {{{"type", "hubspot2"}, {"base_url", "https://x"}}, 2, "unknown type=hubspot2"},
	        {{{"type", "salesforce"}}, 1, "base_url="},
	        {{{"type", "salesforce"}, {"base_url", "ftp://x"}}, 2, "base_url="},
	        {{{"type", "salesforce"}, {"base_url", "https://x"}, {"api_version", "59"}},
	         3,
	         "api_version=59"},
	        {{{"type", "salesforce"}, {"base_url", "https://x"}, {"api_version", "v59.0/../x"}},
	         3,
	         "api_version="},
	        {{{"type", "salesforce"}, {"base_url", "https://x"}, {"colour", "red"}},
	         3,
	         "unknown key \"colour\""},
	        {{{"type", "salesforce"}, {"base_url", "https://x"}, {"max_batch", "0"}},
	         3,
	         "max_batch=0"},
	        {{{"type", "salesforce"}, {"base_url", "https://x"}, {"max_batch", "12abc"}},
	         3,
	         "max_batch=12abc"},
	};
	char err[256];
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		err[0] = '\0';
		assert_null(connector_create("sf", cases[i].kv, cases[i].n, err, sizeof(err)));
		if (strstr(err, cases[i].why) == NULL)
			fail_msg("case %zu: \"%s\" lacks \"%s\"", i, err, cases[i].why);
	}
}

static void test_max_rows(void **state)
{
	struct cf_kv kv[] = {
	        {"type", "salesforce"}, {"base_url", "https://x"}, {"max_batch", "50"}};
	char err[256];
	struct connector *c;

	assert_int_equal(connector_max_rows(sf, API_OP_INSERT), 200);
	assert_int_equal(connector_max_rows(sf, API_OP_DELETE), 200);
	c = connector_create("sf", kv, 3, err, sizeof(err));
	assert_non_null(c);
	assert_int_equal(connector_max_rows(c, API_OP_UPDATE), 50);
	connector_free(c);
	kv[2].value = "500"; /* configurable downward only */
	c = connector_create("sf", kv, 3, err, sizeof(err));
	assert_non_null(c);
	assert_int_equal(connector_max_rows(c, API_OP_INSERT), 200);
	connector_free(c);
}

static void test_names(void **state)
{
	static const struct {
		const char *column, *field;
	} cases[] = {
	        {"first_name", "FirstName"},
	        {"id", "Id"},
	        {"email", "Email"},
	        {"mailing_postal_code", "MailingPostalCode"},
	        {"external_id__c", "ExternalId__c"},
	        {"account_id", "AccountId"},
	};
	char buf[128];
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		connector_field_name(sf, &contacts, cases[i].column, buf, sizeof(buf));
		assert_string_equal(buf, cases[i].field);
	}
	connector_column_name(sf, &contacts, "FirstName", buf, sizeof(buf));
	assert_string_equal(buf, "first_name");
	connector_column_name(sf, &contacts, "Id", buf, sizeof(buf));
	assert_string_equal(buf, "id");
	/* overrides both ways */
	connector_field_name(sf, &contacts, "note", buf, sizeof(buf));
	assert_string_equal(buf, "Description");
	connector_column_name(sf, &contacts, "Score__c", buf, sizeof(buf));
	assert_string_equal(buf, "score");
	connector_column_name(sf, &contacts, "Custom_Thing__c", buf, sizeof(buf));
	assert_string_equal(buf, "custom_thing__c");
}

static const struct api_value paul[] = {
        {"id", NULL, API_VALUE_TEXT},
        {"first_name", "Paul", API_VALUE_TEXT},
        {"last_name", "Atreides", API_VALUE_TEXT},
        {"email", "paul.atreides@caladan.io", API_VALUE_TEXT},
        {"note", "Duke \"Muad'Dib\"\n", API_VALUE_TEXT},
        {"score", "97.5", API_VALUE_NUMBER},
        {"do_not_call", "t", API_VALUE_BOOL},
        {"phone", NULL, API_VALUE_TEXT},
        {"created_at", "2026-11-30 08:00:00+00", API_VALUE_TEXT},
};

static const struct api_value leto[] = {
        {"id", NULL, API_VALUE_TEXT},
        {"first_name", "Leto", API_VALUE_TEXT},
        {"last_name", NULL, API_VALUE_TEXT},
        {"email", "pauldune.co", API_VALUE_TEXT},
};

static void test_build_insert(void **state)
{
	struct api_row rows[2] = {
	        {.new_image = {paul, 9}},
	        {.new_image = {leto, 4}},
	};
	struct api_http_spec spec;
	struct api_error err;

	assert_true(connector_build_request(sf, &contacts, API_OP_INSERT, rows, 2, &spec, &err));
	assert_int_equal(spec.method, HTTP_POST);
	assert_string_equal(
	        spec.url, "https://acme.my.salesforce.com/services/data/v59.0/composite/sobjects");
	assert_string_equal(spec.content_type, "application/json");
	/* id, NULLs and read-only columns are not sent; types are kept */
	assert_string_equal(
	        spec.body,
	        "{\"allOrNone\":true,\"records\":["
	        "{\"attributes\":{\"type\":\"Contact\"},\"FirstName\":\"Paul\",\"LastName\":"
	        "\"Atreides\",\"Email\":\"paul.atreides@caladan.io\",\"Description\":\"Duke "
	        "\\\"Muad'Dib\\\"\\n\",\"Score__c\":97.5,\"DoNotCall\":true},"
	        "{\"attributes\":{\"type\":\"Contact\"},\"FirstName\":\"Leto\",\"Email\":"
	        "\"pauldune.co\"}]}");
	assert_int_equal(spec.body_len, strlen(spec.body));
	api_http_spec_free(&spec);
}

static void test_build_update(void **state)
{
	static const struct api_value old1[] = {
	        {"id", "0038b00002gszToAAI", API_VALUE_TEXT},
	        {"first_name", "Paul", API_VALUE_TEXT},
	        {"email", "paul@caladan.io", API_VALUE_TEXT},
	        {"phone", "555", API_VALUE_TEXT},
	};
	static const struct api_value new1[] = {
	        {"id", "0038b00002gszToAAI", API_VALUE_TEXT},
	        {"first_name", "Paul", API_VALUE_TEXT},
	        {"email", "pauldune.co", API_VALUE_TEXT},
	        {"phone", NULL, API_VALUE_TEXT},
	};
	static const struct api_value moved[] = {
	        {"id", "0038b00002gszTpAAI", API_VALUE_TEXT},
	        {"first_name", "Paul", API_VALUE_TEXT},
	};
	struct api_row row = {.old_image = {old1, 4}, .new_image = {new1, 4}};
	struct api_http_spec spec;
	struct api_error err;

	assert_true(connector_build_request(sf, &contacts, API_OP_UPDATE, &row, 1, &spec, &err));
	assert_int_equal(spec.method, HTTP_PATCH);
	/* only changed fields, NULL sent as null to clear the field */
	assert_string_equal(spec.body, "{\"allOrNone\":true,\"records\":[{\"attributes\":{\"type\":"
	                               "\"Contact\"},\"id\":\"0038b00002gszToAAI\",\"Email\":"
	                               "\"pauldune.co\",\"Phone\":null}]}");
	api_http_spec_free(&spec);

	row.new_image = (struct api_row_image){moved, 2};
	assert_false(connector_build_request(sf, &contacts, API_OP_UPDATE, &row, 1, &spec, &err));
	assert_int_equal(err.cls, API_ERR_VALIDATION);
	assert_string_equal(err.column, "id");
	assert_true(err.nothing_written);
	assert_null(spec.url);

	row.old_image = (struct api_row_image){paul, 9}; /* id NULL */
	row.new_image = (struct api_row_image){paul, 9};
	assert_false(connector_build_request(sf, &contacts, API_OP_UPDATE, &row, 1, &spec, &err));
	assert_non_null(strstr(err.message, "no record id"));
}

static void test_build_delete(void **state)
{
	static const struct api_value a[] = {{"id", "0038b00002gszToAAI", API_VALUE_TEXT}};
	static const struct api_value b[] = {{"id", "003&x=1,y", API_VALUE_TEXT}};
	struct api_row rows[2] = {{.old_image = {a, 1}}, {.old_image = {b, 1}}};
	struct api_http_spec spec;
	struct api_error err;

	assert_true(connector_build_request(sf, &contacts, API_OP_DELETE, rows, 2, &spec, &err));
	assert_int_equal(spec.method, HTTP_DELETE);
	assert_null(spec.body);
	/* hostile ids cannot add parameters */
	assert_string_equal(spec.url, "https://acme.my.salesforce.com/services/data/v59.0/"
	                              "composite/sobjects?ids=0038b00002gszToAAI,003%26x%3D1%2Cy&"
	                              "allOrNone=true");
	api_http_spec_free(&spec);
}

static void test_build_limits_and_bad_values(void **state)
{
	static struct api_row many[201];
	static const struct api_value bad_num[] = {{"score", "NaN", API_VALUE_NUMBER}};
	static const struct api_value bad_bool[] = {{"do_not_call", "maybe", API_VALUE_BOOL}};
	static const struct api_value bad_utf8[] = {{"first_name", "\xc3(", API_VALUE_TEXT}};
	static const struct api_value bad_json[] = {{"tags", "[1,", API_VALUE_JSON}};
	static const struct api_value good_json[] = {
	        {"last_name", "Atreides", API_VALUE_TEXT},
	        {"tags", " {\"a\": [1, 2.5, null, true, \"x\\u00e9\"]} ", API_VALUE_JSON}};
	struct api_row row = {.new_image = {bad_num, 1}};
	struct api_http_spec spec;
	struct api_error err;
	int i;

	for (i = 0; i < 201; i++)
		many[i].new_image = (struct api_row_image){leto, 4};
	assert_false(connector_build_request(sf, &contacts, API_OP_INSERT, many, 201, &spec, &err));
	assert_int_equal(err.cls, API_ERR_TOO_MANY_ROWS);
	assert_non_null(strstr(err.message, "201 rows"));
	assert_non_null(strstr(err.message, "at most 200"));
	assert_true(connector_build_request(sf, &contacts, API_OP_INSERT, many, 200, &spec, &err));
	api_http_spec_free(&spec);

	assert_false(connector_build_request(sf, &contacts, API_OP_INSERT, &row, 1, &spec, &err));
	assert_int_equal(err.cls, API_ERR_VALIDATION);
	assert_string_equal(err.column, "score");
	assert_string_equal(err.value, "NaN");
	row.new_image = (struct api_row_image){bad_bool, 1};
	assert_false(connector_build_request(sf, &contacts, API_OP_INSERT, &row, 1, &spec, &err));
	assert_string_equal(err.column, "do_not_call");
	row.new_image = (struct api_row_image){bad_utf8, 1};
	assert_false(connector_build_request(sf, &contacts, API_OP_INSERT, &row, 1, &spec, &err));
	assert_non_null(strstr(err.message, "UTF-8"));
	/* json/jsonb columns travel as the JSON they spell */
	row.new_image = (struct api_row_image){bad_json, 1};
	assert_false(connector_build_request(sf, &contacts, API_OP_INSERT, &row, 1, &spec, &err));
	assert_string_equal(err.column, "tags");
	row.new_image = (struct api_row_image){good_json, 2};
	assert_true(connector_build_request(sf, &contacts, API_OP_INSERT, &row, 1, &spec, &err));
	assert_string_equal(spec.body,
	                    "{\"allOrNone\":true,\"records\":[{\"attributes\":{\"type\":"
	                    "\"Contact\"},\"LastName\":\"Atreides\",\"Tags\":{\"a\":[1,2.5,"
	                    "null,true,\"x\xc3\xa9\"]}}]}");
	api_http_spec_free(&spec);
}

/* Parses fixture name as the answer (status, optional Retry-After) to an insert of 2 rows. */
static void parse_fixture(const char *name, long status, const char *retry_after, enum api_op op,
                          const struct api_row *rows, int nrows, struct api_result *res)
{
	struct http_header hdr[1] = {{"Retry-After", (char *)retry_after}};
	struct http_response resp = {0};
	size_t len;
	char *body = fixture(name, &len);

	resp.outcome = HTTP_OUTCOME_ANSWER;
	resp.status = status;
	resp.body = body;
	resp.body_len = len;
	resp.headers = hdr;
	resp.nheaders = retry_after ? 1 : 0;
	connector_parse_response(sf, &contacts, op, rows, nrows, &resp, res);
	free(body);
}

static const struct api_row two_inserts[2] = {
        {.new_image = {paul, 9}},
        {.new_image = {leto, 4}},
};

static void test_parse_create_ok(void **state)
{
	struct api_result res;

	parse_fixture("sf_create_ok.json", 200, NULL, API_OP_INSERT, two_inserts, 2, &res);
	assert_true(res.ok);
	assert_int_equal(res.nrows, 2);
	assert_string_equal(res.rows[0].id, "0038b00002gszToAAI");
	assert_string_equal(res.rows[1].id, "0038b00002gszTpAAI");
	api_result_free(&res);

	/* one result for two records is not success */
	parse_fixture("sf_create_ok.json", 200, NULL, API_OP_INSERT, two_inserts, 1, &res);
	assert_false(res.ok);
	assert_int_equal(res.error.cls, API_ERR_BAD_ANSWER);
	api_result_free(&res);
}

static void test_parse_record_errors(void **state)
{
	static const struct {
		const char *fixture;
		enum api_error_class cls;
		int row;
		const char *code, *field, *column, *value, *message, *reason;
	} cases[] = {
	        {"sf_create_invalid_email.json", API_ERR_VALIDATION, 1, "INVALID_EMAIL_ADDRESS",
	         "Email", "email", "pauldune.co", "Email: invalid email address: pauldune.co",
	         "is not a valid email address."},
	        {"sf_create_required_missing.json", API_ERR_REQUIRED, 1, "REQUIRED_FIELD_MISSING",
	         "LastName", "last_name", "", "Required fields are missing: [LastName]",
	         "is required."},
	        {"sf_update_duplicate.json", API_ERR_DUPLICATE, 0, "DUPLICATE_VALUE",
	         "External_Id__c", "external_id__c", "", "duplicate value found",
	         "duplicates the value of another record."},
	        {"sf_custom_validation.json", API_ERR_VALIDATION, 0,
	         "FIELD_CUSTOM_VALIDATION_EXCEPTION", "Score__c", "score", "97.5",
	         "Score must be between 0 and 100", "Score must be between 0 and 100"},
	};
	struct api_result res;
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		parse_fixture(cases[i].fixture, 200, NULL, API_OP_INSERT, two_inserts,
		              i < 2 ? 2 : 1, &res);
		assert_false(res.ok);
		assert_int_equal(res.nrows, 0);
		assert_int_equal(res.error.cls, cases[i].cls);
		assert_int_equal(res.error.row, cases[i].row);
		assert_string_equal(res.error.code, cases[i].code);
		assert_string_equal(res.error.field, cases[i].field);
		assert_string_equal(res.error.column, cases[i].column);
		assert_string_equal(res.error.value, cases[i].value);
		assert_non_null(strstr(res.error.message, cases[i].message));
		assert_string_equal(res.error.reason, cases[i].reason);
		assert_true(res.error.nothing_written);
		assert_false(res.error.session_expired);
		/* leto's last_name is NULL: the error says so */
		assert_int_equal(res.error.value_is_null, cases[i].cls == API_ERR_REQUIRED);
		api_result_free(&res);
	}
}

static void test_parse_request_errors(void **state)
{
	static const struct {
		const char *fixture;
		long status;
		const char *retry_after;
		enum api_error_class cls;
		bool session_expired, nothing_written;
		int retry;
		const char *message;
	} cases[] = {
	        {"sf_session_expired.json", 401, NULL, API_ERR_AUTH, true, true, -1,
	         "Session expired or invalid"},
	        {"sf_request_limit.json", 403, "7", API_ERR_RATE_LIMIT, false, true, 7,
	         "TotalRequests Limit exceeded."},
	        {"sf_request_limit.json", 403, "soon", API_ERR_RATE_LIMIT, false, true, -1,
	         "Limit exceeded"},
	        {"sf_bad_field.json", 400, NULL, API_ERR_VALIDATION, false, true, -1,
	         "No such column 'Nickname'"},
	        {"sf_permission.json", 403, NULL, API_ERR_PERMISSION, false, true, -1,
	         "insufficient access"},
	        {"html_503.html", 503, "30", API_ERR_SERVER, false, false, 30, "HTTP 503"},
	        {"html_503.html", 401, NULL, API_ERR_AUTH, true, true, -1, "HTTP 401"},
	        {"html_503.html", 200, NULL, API_ERR_BAD_ANSWER, false, false, -1, "invalid JSON"},
	        {"sf_truncated.json", 200, NULL, API_ERR_BAD_ANSWER, false, false, -1,
	         "not a list of results"},
	        {"sf_session_expired.json", 200, NULL, API_ERR_BAD_ANSWER, false, false, -1,
	         "has neither success nor errors"},
	};
	struct api_result res;
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		parse_fixture(cases[i].fixture, cases[i].status, cases[i].retry_after,
		              API_OP_INSERT, two_inserts, 1, &res);
		assert_false(res.ok);
		if (res.error.cls != cases[i].cls ||
		    strstr(res.error.message, cases[i].message) == NULL)
			fail_msg("case %zu: class %s, message \"%s\"", i,
			         api_error_class_str(res.error.cls), res.error.message);
		assert_int_equal(res.error.session_expired, cases[i].session_expired);
		assert_int_equal(res.error.nothing_written, cases[i].nothing_written);
		assert_int_equal(res.error.retry_after, cases[i].retry);
		assert_int_equal(res.error.http_status, cases[i].status);
		api_result_free(&res);
	}
}

static void test_parse_delete(void **state)
{
	static const struct api_value a[] = {{"id", "0038b00002gszToAAI", API_VALUE_TEXT}};
	static const struct api_value b[] = {{"id", "0038b00002gszTpAAI", API_VALUE_TEXT}};
	struct api_row rows[2] = {{.old_image = {a, 1}}, {.old_image = {b, 1}}};
	struct api_result res;

	parse_fixture("sf_delete_ok.json", 200, NULL, API_OP_DELETE, rows, 2, &res);
	assert_true(res.ok);
	assert_string_equal(res.rows[1].id, "0038b00002gszTpAAI");
	api_result_free(&res);
	parse_fixture("sf_delete_deleted.json", 200, NULL, API_OP_DELETE, rows, 1, &res);
	assert_int_equal(res.error.cls, API_ERR_NOT_FOUND);
	assert_string_equal(res.error.code, "ENTITY_IS_DELETED");
	assert_non_null(res.gone);
	assert_true(res.gone[0]);
	api_result_free(&res);
}

/* allOrNone refused a delete: the rows whose records are gone, and only when nothing else is. */
static void test_parse_delete_with_gone_records(void **state)
{
	static const struct api_value a[] = {{"id", "0038b00002gszToAAI", API_VALUE_TEXT}};
	static const struct api_value b[] = {{"id", "0038b00002gszTpAAI", API_VALUE_TEXT}};
	static const struct api_value c[] = {{"id", "0038b00002gszTqAAI", API_VALUE_TEXT}};
	struct api_row rows[3] = {
	        {.old_image = {a, 1}}, {.old_image = {b, 1}}, {.old_image = {c, 1}}};
	struct api_result res;

	parse_fixture("sf_delete_some_gone.json", 200, NULL, API_OP_DELETE, rows, 3, &res);
	assert_false(res.ok);
	assert_true(res.error.nothing_written);
	assert_int_equal(res.error.cls, API_ERR_NOT_FOUND);
	assert_int_equal(res.error.row, 1);
	assert_non_null(res.gone);
	assert_false(res.gone[0]);
	assert_true(res.gone[1]);
	assert_false(res.gone[2]);
	api_result_free(&res);
	assert_null(res.gone);

	/* another record refused: that is the error, and no row counts as gone */
	parse_fixture("sf_delete_gone_and_refused.json", 200, NULL, API_OP_DELETE, rows, 3, &res);
	assert_false(res.ok);
	assert_true(res.error.nothing_written);
	assert_null(res.gone);
	assert_string_equal(res.error.code, "DELETE_FAILED");
	assert_int_equal(res.error.row, 1);
	assert_non_null(strstr(res.error.message, "associated with the following cases"));
	api_result_free(&res);

	/* an update of a deleted record is refused as before: nothing is gone for an update */
	parse_fixture("sf_delete_some_gone.json", 200, NULL, API_OP_UPDATE, rows, 3, &res);
	assert_false(res.ok);
	assert_null(res.gone);
	assert_string_equal(res.error.code, "ENTITY_IS_DELETED");
	api_result_free(&res);
}

static void test_parse_huge_and_non_answers(void **state)
{
	size_t n = 9u << 20, i;
	char *big = malloc(n);
	struct http_response resp = {0};
	struct api_result res;

	assert_non_null(big);
	big[0] = '[';
	for (i = 1; i < n - 1; i++)
		big[i] = ' ';
	big[n - 1] = ']';
	resp.outcome = HTTP_OUTCOME_ANSWER;
	resp.status = 200;
	resp.body = big;
	resp.body_len = n;
	connector_parse_response(sf, &contacts, API_OP_INSERT, two_inserts, 1, &resp, &res);
	assert_int_equal(res.error.cls, API_ERR_BAD_ANSWER);
	assert_non_null(strstr(res.error.message, "too large"));
	api_result_free(&res);
	free(big);

	memset(&resp, 0, sizeof(resp));
	resp.body = "";
	resp.outcome = HTTP_OUTCOME_NOT_SENT;
	resp.error = "Failed to connect to 127.0.0.1 port 9: Connection refused";
	connector_parse_response(sf, &contacts, API_OP_INSERT, two_inserts, 1, &resp, &res);
	assert_int_equal(res.error.cls, API_ERR_UNAVAILABLE);
	assert_true(res.error.nothing_written);
	assert_non_null(strstr(res.error.message, "Connection refused"));
	api_result_free(&res);

	resp.outcome = HTTP_OUTCOME_UNKNOWN;
	resp.error = "Operation timed out after 10000 milliseconds";
	connector_parse_response(sf, &contacts, API_OP_INSERT, two_inserts, 1, &resp, &res);
	assert_int_equal(res.error.cls, API_ERR_UNKNOWN_OUTCOME);
	assert_false(res.error.nothing_written);
	api_result_free(&res);

	resp.outcome = HTTP_OUTCOME_BAD_ANSWER;
	resp.status = 200;
	resp.error = "answer body larger than 8388608 bytes";
	connector_parse_response(sf, &contacts, API_OP_INSERT, two_inserts, 1, &resp, &res);
	assert_int_equal(res.error.cls, API_ERR_BAD_ANSWER);
	assert_false(res.error.nothing_written);
	api_result_free(&res);
}

static void test_table_config(void **state)
{
	struct cf_kv bad1[] = {{"columns", "note=Description"}};
	struct cf_kv bad2[] = {{"object", "Contact\n"}};
	struct cf_kv ok[] = {{"primary_key", "sf_id"}, {"columns", "a:B"}};
	struct api_table t;
	char err[256];

	assert_false(api_table_init(&t, "s.t", bad1, 1, err, sizeof(err)));
	assert_non_null(strstr(err, "columns="));
	assert_false(api_table_init(&t, "s.t", bad2, 1, err, sizeof(err)));
	assert_non_null(strstr(err, "object="));
	assert_true(api_table_init(&t, "s.t", ok, 2, err, sizeof(err)));
	assert_string_equal(t.pk_column, "sf_id");
	assert_int_equal(t.noverrides, 1);
	api_table_free(&t);
}

/* ---- end to end: api_submit() against the fake Salesforce ---- */

static struct fake_server fake;

struct e2e {
	struct event_base *base;
	struct http_engine *eng;
	struct http_lane *ctl;
	struct api *api;
	int done;
	int want;
};

static struct e2e X;

struct outcome {
	int calls;
	struct api_result res;
	int64_t at_ms;
};

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void on_guard(evutil_socket_t fd, short what, void *arg)
{
	event_base_loopbreak(X.base);
}

static void run_until(int want, int limit_ms)
{
	struct timeval tv = {limit_ms / 1000, (limit_ms % 1000) * 1000};
	struct event *guard = evtimer_new(X.base, on_guard, NULL);

	X.want = want;
	evtimer_add(guard, &tv);
	if (X.done < want)
		event_base_dispatch(X.base);
	event_free(guard);
}

static void on_api_done(void *arg, struct api_result *res)
{
	struct outcome *o = arg;

	o->calls++;
	o->at_ms = now_ms();
	api_result_move(&o->res, res);
	if (++X.done >= X.want)
		event_base_loopbreak(X.base);
}

struct ctl_answer {
	bool done;
	long status;
	char *body;
};

static void on_ctl(void *arg, const struct http_response *resp)
{
	struct ctl_answer *a = arg;

	a->done = true;
	a->status = resp->status;
	a->body = strdup(resp->body);
	event_base_loopbreak(X.base);
}

/* One request to the fake's control API, run to completion on the loop. */
static char *fake_call(enum http_method m, const char *path, const char *body)
{
	char url[256];
	struct ctl_answer a = {0};
	struct http_request *req;

	snprintf(url, sizeof(url), "%s%s", fake.base_url, path);
	req = http_request_new(m, url);
	if (body != NULL)
		assert_true(http_request_set_body(req, body, strlen(body)));
	assert_true(http_submit(X.eng, X.ctl, req, on_ctl, &a));
	while (!a.done)
		event_base_loop(X.base, EVLOOP_ONCE);
	assert_int_equal(a.status / 100, 2);
	return a.body;
}

static void fake_control(const char *json)
{
	free(fake_call(HTTP_POST, "/_control", json));
}

/* How many logged requests went to path (exact). */
static int fake_count(const char *path)
{
	char *body = fake_call(HTTP_GET, "/_requests", NULL);
	struct json_value *v;
	char err[128];
	size_t i;
	int n = 0;

	assert_true(json_parse(body, strlen(body), NULL, &v, err, sizeof(err)));
	for (i = 0; i < v->count; i++) {
		const char *p = json_get_string(v->items[i], "path");
		if (p != NULL && strcmp(p, path) == 0)
			n++;
	}
	json_free(v);
	free(body);
	return n;
}

static struct api *make_api(const char *extra_key, const char *extra_value)
{
	char token_url[128], err[256];
	struct cf_kv kv[] = {
	        {"type", "salesforce"},
	        {"base_url", fake.base_url},
	        {"api_version", "v59.0"},
	        {"auth", "oauth2"},
	        {"token_url", token_url},
	        {"client_id", "test-client-id"},
	        {"client_secret", "test-client-secret"},
	        {"refresh_token", "test-refresh-token"},
	        {"timeout", "2"},
	        {"deadline", "4"},
	        {(char *)extra_key, (char *)extra_value},
	};
	struct api *api;

	snprintf(token_url, sizeof(token_url), "%s/services/oauth2/token", fake.base_url);
	api = api_create(X.eng, "salesforce", kv, extra_key ? 11 : 10, err, sizeof(err));
	if (api == NULL)
		fail_msg("%s", err);
	return api;
}

static int e2e_setup(void **state)
{
	memset(&X, 0, sizeof(X));
	X.base = event_base_new();
	X.eng = http_engine_create(X.base, NULL);
	X.ctl = http_lane_create(X.eng, "control", 4);
	fake_control("{\"reset\":true}");
	X.api = make_api(NULL, NULL);
	return 0;
}

static int e2e_teardown(void **state)
{
	api_free(X.api);
	http_engine_free(X.eng);
	event_base_free(X.base);
	return 0;
}

static const struct api_value jessica[] = {
        {"first_name", "Jessica", API_VALUE_TEXT},
        {"last_name", "Atreides", API_VALUE_TEXT},
        {"email", "jessica@caladan.io", API_VALUE_TEXT},
};
static const struct api_value bad_email[] = {
        {"first_name", "Paul", API_VALUE_TEXT},
        {"last_name", "Atreides", API_VALUE_TEXT},
        {"email", "pauldune.co", API_VALUE_TEXT},
};
static const struct api_row ok_rows[2] = {{.new_image = {jessica, 3}}, {.new_image = {paul, 9}}};

static void test_e2e_insert_then_delete(void **state)
{
	struct outcome o = {0}, d = {0};
	struct api_value ids[2][1];
	struct api_row drows[2];
	struct api_stats st;
	char *store;

	assert_int_equal(api_max_rows(X.api, API_OP_INSERT), 200);
	assert_non_null(api_submit(X.api, &contacts, API_OP_INSERT, ok_rows, 2, on_api_done, &o));
	assert_int_equal(o.calls, 0);
	run_until(1, 5000);
	assert_int_equal(o.calls, 1);
	if (!o.res.ok)
		fail_msg("%s", o.res.error.message);
	assert_int_equal(o.res.nrows, 2);
	assert_int_equal(strlen(o.res.rows[0].id), 18);
	assert_memory_equal(o.res.rows[0].id, "003", 3);
	assert_string_not_equal(o.res.rows[0].id, o.res.rows[1].id);
	store = fake_call(HTTP_GET, "/_store", NULL);
	assert_non_null(strstr(store, o.res.rows[0].id));
	assert_non_null(strstr(store, "\"Email\": \"jessica@caladan.io\""));
	assert_non_null(strstr(store, "\"Description\": \"Duke \\\"Muad'Dib\\\"\\n\""));
	free(store);

	api_get_stats(X.api, &st);
	assert_int_equal(st.calls, 1);
	assert_int_equal(st.requests, 1);
	assert_int_equal(st.errors, 0);
	assert_string_equal(st.token_state, "valid");
	assert_string_equal(st.auth, "oauth2");
	assert_int_equal(st.usage_used, 1);
	assert_int_equal(st.usage_max, 15000);

	for (int i = 0; i < 2; i++) {
		ids[i][0] = (struct api_value){"id", o.res.rows[i].id, API_VALUE_TEXT};
		drows[i] = (struct api_row){.old_image = {ids[i], 1}};
	}
	assert_non_null(api_submit(X.api, &contacts, API_OP_DELETE, drows, 2, on_api_done, &d));
	run_until(2, 5000);
	assert_true(d.res.ok);
	store = fake_call(HTTP_GET, "/_store", NULL);
	assert_null(strstr(store, o.res.rows[0].id));
	free(store);
	assert_int_equal(fake_count("/services/oauth2/token"), 1);
	api_result_free(&o.res);
	api_result_free(&d.res);
}

/*
 * A delete of three records, the middle one deleted at Salesforce meanwhile: allOrNone refuses
 * the batch, the call sends it again without that record, and answers one result per row in
 * row order. A refusal for another cause is the call's answer, nothing sent again.
 */
static void test_e2e_delete_with_a_gone_record(void **state)
{
	const struct api_row three[3] = {{.new_image = {jessica, 3}},
	                                 {.new_image = {jessica, 3}},
	                                 {.new_image = {jessica, 3}}};
	struct outcome o = {0}, d = {0}, r = {0};
	struct api_value ids[3][1];
	struct api_row drows[3];
	struct api_stats st;
	char *store, ctl[160];
	int i;

	assert_non_null(api_submit(X.api, &contacts, API_OP_INSERT, three, 3, on_api_done, &o));
	run_until(1, 5000);
	assert_true(o.res.ok);
	for (i = 0; i < 3; i++) {
		ids[i][0] = (struct api_value){"id", o.res.rows[i].id, API_VALUE_TEXT};
		drows[i] = (struct api_row){.old_image = {ids[i], 1}};
	}
	snprintf(ctl, sizeof(ctl), "{\"object\":\"Contact\",\"op\":\"delete\",\"id\":\"%s\"}",
	         o.res.rows[1].id);
	free(fake_call(HTTP_POST, "/_records", ctl));

	/* the third is refused for a cause of its own: that is the answer, no second request */
	snprintf(ctl, sizeof(ctl), "{\"refuse_delete\":\"%s\"}", o.res.rows[2].id);
	fake_control(ctl);
	assert_non_null(api_submit(X.api, &contacts, API_OP_DELETE, drows, 3, on_api_done, &r));
	run_until(2, 5000);
	assert_false(r.res.ok);
	assert_string_equal(r.res.error.code, "DELETE_FAILED");
	assert_int_equal(r.res.error.row, 2);
	assert_true(r.res.error.nothing_written);
	assert_int_equal(fake_count("/services/data/v59.0/composite/sobjects"), 2);

	fake_control("{\"refuse_delete\":\"\"}");
	assert_non_null(api_submit(X.api, &contacts, API_OP_DELETE, drows, 3, on_api_done, &d));
	run_until(3, 5000);
	if (!d.res.ok)
		fail_msg("%s", d.res.error.message);
	assert_int_equal(d.res.nrows, 3);
	for (i = 0; i < 3; i++)
		assert_string_equal(d.res.rows[i].id, o.res.rows[i].id);
	/* the answer that settled it is the one the write's log line and history show */
	assert_int_equal(d.res.http_status, 200);
	/* insert, refused delete, refused delete, the delete without the gone record */
	assert_int_equal(fake_count("/services/data/v59.0/composite/sobjects"), 4);
	api_get_stats(X.api, &st);
	assert_int_equal(st.calls, 3);
	assert_int_equal(st.requests, 4);
	assert_int_equal(st.errors, 1);
	store = fake_call(HTTP_GET, "/_store", NULL);
	for (i = 0; i < 3; i++)
		assert_null(strstr(store, o.res.rows[i].id));
	free(store);
	api_result_free(&o.res);
	api_result_free(&r.res);
	api_result_free(&d.res);
}

static void test_e2e_single_flight_refresh(void **state)
{
	struct outcome o[5];
	struct api_row row = {.new_image = {jessica, 3}};
	int i;

	memset(o, 0, sizeof(o));
	for (i = 0; i < 5; i++)
		assert_non_null(
		        api_submit(X.api, &contacts, API_OP_INSERT, &row, 1, on_api_done, &o[i]));
	run_until(5, 5000);
	for (i = 0; i < 5; i++) {
		assert_true(o[i].res.ok);
		api_result_free(&o[i].res);
	}
	assert_int_equal(fake_count("/services/oauth2/token"), 1);

	/* the token expires: the refused requests cause ONE refresh, and each is retried once */
	fake_control("{\"expire_token\":true}");
	X.done = 0;
	for (i = 0; i < 3; i++)
		assert_non_null(
		        api_submit(X.api, &contacts, API_OP_INSERT, &row, 1, on_api_done, &o[i]));
	run_until(3, 5000);
	for (i = 0; i < 3; i++) {
		if (!o[i].res.ok)
			fail_msg("%s", o[i].res.error.message);
		api_result_free(&o[i].res);
	}
	assert_int_equal(fake_count("/services/oauth2/token"), 2);
	assert_int_equal(fake_count("/services/data/v59.0/composite/sobjects"), 5 + 3 + 3);
}

static void test_e2e_token_expiry(void **state)
{
	struct api_row row = {.new_image = {jessica, 3}};
	struct outcome o = {0};
	int i;

	/* tokens said to live 2 s are renewed before they run out, without a refused request */
	fake_control("{\"expires_in\":2}");
	for (i = 0; i < 2; i++) {
		X.done = 0;
		assert_non_null(
		        api_submit(X.api, &contacts, API_OP_INSERT, &row, 1, on_api_done, &o));
		run_until(1, 5000);
		assert_true(o.res.ok);
		api_result_free(&o.res);
		if (i == 0)
			usleep(1200000);
	}
	assert_int_equal(fake_count("/services/oauth2/token"), 2);
	assert_int_equal(fake_count("/services/data/v59.0/composite/sobjects"), 2);
}

static void test_e2e_auth_failure(void **state)
{
	struct outcome o = {0};
	struct api_row row = {.new_image = {jessica, 3}};
	struct api *bad = make_api("refresh_token", "revoked");
	struct api_stats st;

	assert_non_null(api_submit(bad, &contacts, API_OP_INSERT, &row, 1, on_api_done, &o));
	run_until(1, 5000);
	assert_false(o.res.ok);
	assert_int_equal(o.res.error.cls, API_ERR_AUTH);
	assert_true(o.res.error.nothing_written);
	assert_non_null(strstr(o.res.error.message, "salesforce authentication failed"));
	assert_non_null(strstr(o.res.error.message, "invalid_grant"));
	/* no secret in what a client or the admin console may see */
	assert_null(strstr(o.res.error.message, "revoked"));
	assert_null(strstr(o.res.error.message, "test-client-secret"));
	api_get_stats(bad, &st);
	assert_string_equal(st.last_error, "authentication (HTTP 0)");
	assert_string_equal(st.token_state, "failed");
	assert_int_equal(st.errors, 1);
	assert_int_equal(fake_count("/services/data/v59.0/composite/sobjects"), 0);
	api_result_free(&o.res);
	api_free(bad);
}

static void test_e2e_rate_limit(void **state)
{
	struct outcome o = {0};
	struct api_row row = {.new_image = {jessica, 3}};
	struct api_stats st;
	int64_t t0;

	/* a wait that fits the deadline: waited out, then the call succeeds */
	fake_control("{\"rate_limit\":1,\"retry_after\":1}");
	t0 = now_ms();
	assert_non_null(api_submit(X.api, &contacts, API_OP_INSERT, &row, 1, on_api_done, &o));
	run_until(1, 6000);
	if (!o.res.ok)
		fail_msg("%s", o.res.error.message);
	assert_true(o.at_ms - t0 >= 950);
	api_get_stats(X.api, &st);
	assert_int_equal(st.rate_limited, 1);
	assert_int_equal(st.retries, 1);
	api_result_free(&o.res);

	/* a wait beyond the deadline (4 s): the rate-limit error at once, with retry-after; the
	 * guard is below the 30 s a wait would take, and no retry is counted */
	fake_control("{\"rate_limit\":1,\"retry_after\":30,\"rate_limit_status\":429}");
	X.done = 0;
	assert_non_null(api_submit(X.api, &contacts, API_OP_INSERT, &row, 1, on_api_done, &o));
	run_until(1, 20000);
	assert_false(o.res.ok);
	assert_int_equal(o.res.error.cls, API_ERR_RATE_LIMIT);
	assert_int_equal(o.res.error.retry_after, 30);
	api_get_stats(X.api, &st);
	assert_int_equal(st.rate_limited, 2);
	assert_int_equal(st.retries, 1);
	api_result_free(&o.res);
}

static void test_e2e_failures(void **state)
{
	struct api_row bad = {.new_image = {bad_email, 3}};
	struct api_row good = {.new_image = {jessica, 3}};
	static struct api_row many[201];
	struct outcome o = {0};
	int i;

	assert_non_null(api_submit(X.api, &contacts, API_OP_INSERT, &bad, 1, on_api_done, &o));
	run_until(1, 5000);
	assert_int_equal(o.res.error.cls, API_ERR_VALIDATION);
	assert_string_equal(o.res.error.column, "email");
	assert_string_equal(o.res.error.value, "pauldune.co");
	api_result_free(&o.res);
	{
		struct api_stats st;

		/* the admin console learns what failed, not the record's values */
		api_get_stats(X.api, &st);
		assert_string_equal(st.last_error, "validation INVALID_EMAIL_ADDRESS (HTTP 200)");
	}

	fake_control("{\"fail_status\":503,\"fail_count\":1}");
	X.done = 0;
	assert_non_null(api_submit(X.api, &contacts, API_OP_INSERT, &good, 1, on_api_done, &o));
	run_until(1, 5000);
	assert_int_equal(o.res.error.cls, API_ERR_SERVER);
	api_result_free(&o.res);

	/* slower than timeout=2: sent, no answer: the outcome is unknown */
	fake_control("{\"delay_ms\":3000}");
	X.done = 0;
	assert_non_null(api_submit(X.api, &contacts, API_OP_INSERT, &good, 1, on_api_done, &o));
	run_until(1, 6000);
	assert_int_equal(o.res.error.cls, API_ERR_UNKNOWN_OUTCOME);
	assert_false(o.res.error.nothing_written);
	api_result_free(&o.res);

	/* read, then hung up on: maybe applied, so reported as unknown and never sent twice */
	fake_control("{\"delay_ms\":0,\"down\":true}");
	free(fake_call(HTTP_DELETE, "/_requests", NULL));
	X.done = 0;
	assert_non_null(api_submit(X.api, &contacts, API_OP_INSERT, &good, 1, on_api_done, &o));
	run_until(1, 5000);
	assert_int_equal(o.res.error.cls, API_ERR_UNKNOWN_OUTCOME);
	assert_false(o.res.error.nothing_written);
	api_result_free(&o.res);
	fake_control("{\"down\":false}");
	assert_int_equal(fake_count("/services/data/v59.0/composite/sobjects"), 1);
	fake_control("{\"down\":false}");

	for (i = 0; i < 201; i++)
		many[i].new_image = (struct api_row_image){jessica, 3};
	X.done = 0;
	free(fake_call(HTTP_DELETE, "/_requests", NULL));
	assert_non_null(api_submit(X.api, &contacts, API_OP_INSERT, many, 201, on_api_done, &o));
	assert_int_equal(o.calls, 4); /* not from inside api_submit */
	run_until(1, 5000);
	assert_int_equal(o.res.error.cls, API_ERR_TOO_MANY_ROWS);
	assert_true(o.res.error.nothing_written);
	assert_int_equal(fake_count("/services/data/v59.0/composite/sobjects"), 0);
	api_result_free(&o.res);
}

static void test_e2e_unreachable_and_cancel(void **state)
{
	char url[64], err[256];
	struct cf_kv kv[] = {
	        {"type", "salesforce"}, {"base_url", url}, {"auth", "bearer"}, {"token", "t0ken"}};
	struct api_row row = {.new_image = {jessica, 3}};
	struct outcome o = {0}, never = {0};
	struct api *down;
	struct api_call *call;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d", fake_free_port());
	down = api_create(X.eng, "down", kv, 4, err, sizeof(err));
	assert_non_null(down);
	assert_non_null(api_submit(down, &contacts, API_OP_INSERT, &row, 1, on_api_done, &o));
	call = api_submit(down, &contacts, API_OP_INSERT, &row, 1, on_api_done, &never);
	api_call_cancel(call);
	run_until(1, 5000);
	assert_int_equal(o.res.error.cls, API_ERR_UNAVAILABLE);
	assert_true(o.res.error.nothing_written);
	assert_int_equal(never.calls, 0);
	api_result_free(&o.res);
	/* calls still pending when the api goes are dropped without callbacks */
	assert_non_null(api_submit(down, &contacts, API_OP_INSERT, &row, 1, on_api_done, &never));
	api_free(down);
	assert_int_equal(never.calls, 0);
}

static void test_e2e_unreachable_for_a_while(void **state)
{
	struct api_row row = {.new_image = {jessica, 3}};
	struct outcome o = {0}, later = {0};
	struct api_stats st;
	int64_t retries;
	int tries;

	/* warm up: token and a kept connection */
	assert_non_null(api_submit(X.api, &contacts, API_OP_INSERT, &row, 1, on_api_done, &o));
	run_until(1, 5000);
	assert_true(o.res.ok);
	api_result_free(&o.res);
	/* the fake refuses connections from 0.1 s after this answer, for 3 s */
	fake_control("{\"unreachable_ms\":3000}");
	usleep(300000);
	api_get_stats(X.api, &st);
	retries = st.retries;
	X.done = 0;
	assert_non_null(api_submit(X.api, &contacts, API_OP_INSERT, &row, 1, on_api_done, &o));
	run_until(1, 20000);
	/* refused: nothing was sent, nothing can have been written, and no waiting (no retry) */
	assert_int_equal(o.res.error.cls, API_ERR_UNAVAILABLE);
	assert_true(o.res.error.nothing_written);
	api_get_stats(X.api, &st);
	assert_int_equal(st.retries, retries);
	api_result_free(&o.res);
	/* once the port answers again, so does the API (polled: at most about 30 s) */
	for (tries = 0; tries < 60; tries++) {
		memset(&later, 0, sizeof(later));
		X.done = 0;
		assert_non_null(
		        api_submit(X.api, &contacts, API_OP_INSERT, &row, 1, on_api_done, &later));
		run_until(1, 20000);
		if (later.res.ok)
			break;
		assert_int_equal(later.res.error.cls, API_ERR_UNAVAILABLE);
		api_result_free(&later.res);
		usleep(500000);
	}
	if (!later.res.ok)
		fail_msg("%s", later.res.error.message);
	api_result_free(&later.res);
}

static void test_e2e_config_errors(void **state)
{
	static const struct {
		struct cf_kv kv[5];
		int n;
		const char *why;
	} cases[] = {
	        {{{"type", "salesforce"}, {"base_url", "http://x"}, {"auth", "oauth2"}},
	         3,
	         "auth=oauth2 needs token_url="},
	        {{{"type", "salesforce"}, {"base_url", "http://x"}, {"auth", "basic"}},
	         3,
	         "auth=basic"},
	        {{{"type", "salesforce"}, {"base_url", "http://x"}, {"auth", "bearer"}},
	         3,
	         "needs token="},
	        {{{"type", "salesforce"}, {"base_url", "http://x"}, {"timeout", "ten"}},
	         3,
	         "timeout=ten"},
	        {{{"type", "salesforce"}, {"base_url", "http://x"}, {"max_in_flight", "0"}},
	         3,
	         "max_in_flight=0"},
	        {{{"type", "salesforce"},
	          {"base_url", "http://x"},
	          {"auth", "bearer"},
	          {"token", "t"},
	          {"auth_header", "X-Key:\r\nInjected"}},
	         5,
	         "auth_header="},
	};
	char err[256];
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		err[0] = '\0';
		assert_null(api_create(X.eng, "sf", cases[i].kv, cases[i].n, err, sizeof(err)));
		if (strstr(err, cases[i].why) == NULL)
			fail_msg("case %zu: \"%s\" lacks \"%s\"", i, err, cases[i].why);
	}
}

static void test_e2e_api_set(void **state)
{
	struct cf_kv a[] = {{"type", "salesforce"}, {"base_url", "https://a"}};
	struct cf_kv b[] = {{"type", "rest"}, {"base_url", "https://b"}, {"path", "/x"}};
	struct cf_kv bad[] = {{"type", "rest"}, {"base_url", "https://b"}};
	struct cf_api ab = {
	        .name = "b", .type = "rest", .kv = b, .nkv = 3, .file = "x.ini", .line = 7};
	struct cf_api aa = {.name = "a",
	                    .type = "salesforce",
	                    .kv = a,
	                    .nkv = 2,
	                    .line = 6,
	                    .file = "x.ini",
	                    .next = &ab};
	struct api_set *set;
	char err[256];

	set = api_set_create(X.eng, &aa, err, sizeof(err));
	assert_non_null(set);
	assert_int_equal(api_set_count(set), 2);
	assert_string_equal(api_name(api_set_get(set, 1)), "b");
	assert_ptr_equal(api_set_find(set, "a"), api_set_get(set, 0));
	assert_null(api_set_find(set, "c"));
	api_set_free(set);
	ab.kv = bad;
	ab.nkv = 2;
	assert_null(api_set_create(X.eng, &aa, err, sizeof(err)));
	assert_non_null(strstr(err, "x.ini:7: api \"b\": insert_path="));
}

/* Reading a record by id (settling): the URL, the record's fields as columns, 404 as gone. */
static void test_read_by_id(void **state)
{
	static const char rec[] = "{\"attributes\":{\"type\":\"Contact\",\"url\":\"/x\"},"
	                          "\"Id\":\"0038b00002gszToAAI\",\"LastName\":\"Atreides\","
	                          "\"Email\":null,\"Description\":\"duke\"}";
	static const char gone[] = "[{\"errorCode\":\"NOT_FOUND\",\"message\":\"The requested "
	                           "resource does not exist\"}]";
	struct http_response resp = {0};
	struct api_http_spec spec;
	struct api_error err;
	struct api_result res;
	int found = 0;

	(void)state;
	assert_true(connector_can_read(sf));
	assert_true(
	        connector_build_read(sf, &contacts, "0038b00002gszToAAI", NULL, 0, &spec, &err));
	assert_int_equal(spec.method, HTTP_GET);
	assert_string_equal(spec.url, "https://acme.my.salesforce.com/services/data/v59.0/"
	                              "sobjects/Contact/0038b00002gszToAAI");
	assert_null(spec.body);
	api_http_spec_free(&spec);
	/* an id is a path segment: escaped, never a way out of it */
	assert_true(connector_build_read(sf, &contacts, "../x?y", NULL, 0, &spec, &err));
	assert_string_equal(spec.url, "https://acme.my.salesforce.com/services/data/v59.0/"
	                              "sobjects/Contact/..%2Fx%3Fy");
	api_http_spec_free(&spec);
	assert_false(connector_build_read(sf, &contacts, "", NULL, 0, &spec, &err));
	assert_int_equal(err.cls, API_ERR_VALIDATION);

	resp.outcome = HTTP_OUTCOME_ANSWER;
	resp.status = 200;
	resp.body = (char *)rec;
	resp.body_len = strlen(rec);
	connector_parse_read(sf, &contacts, "0038b00002gszToAAI", &resp, &res);
	assert_true(res.ok);
	assert_int_equal(res.nrows, 1);
	assert_string_equal(res.rows[0].id, "0038b00002gszToAAI");
	for (int i = 0; i < res.rows[0].nfields; i++) {
		const struct api_field_value *f = &res.rows[0].fields[i];
		assert_string_not_equal(f->field, "attributes");
		if (strcmp(f->column, "last_name") == 0 && strcmp(f->value, "Atreides") == 0)
			found++;
		if (strcmp(f->column, "note") == 0 && strcmp(f->value, "duke") == 0)
			found++;
		if (strcmp(f->column, "email") == 0 && f->value == NULL)
			found++;
	}
	assert_int_equal(found, 3);
	api_result_free(&res);

	resp.status = 404;
	resp.body = (char *)gone;
	resp.body_len = strlen(gone);
	connector_parse_read(sf, &contacts, "0038b00002gszToAAI", &resp, &res);
	assert_false(res.ok);
	assert_int_equal(res.error.cls, API_ERR_NOT_FOUND);
	assert_true(res.error.nothing_written);
	api_result_free(&res);

	resp.outcome = HTTP_OUTCOME_UNKNOWN;
	connector_parse_read(sf, &contacts, "0038b00002gszToAAI", &resp, &res);
	assert_false(res.ok);
	assert_true(res.error.nothing_written); /* a read writes nothing, whatever happened */
	api_result_free(&res);
}

/*
 * external_id=: inserts are upserts on the field (every row must give it), and a record is
 * found again by it; a connector without such a lookup refuses the table.
 */
static void test_external_id(void **state)
{
	static const struct api_value e1[] = {{"id", NULL, API_VALUE_TEXT},
	                                      {"last_name", "Atreides", API_VALUE_TEXT},
	                                      {"ext_id", "E/1", API_VALUE_TEXT}};
	static const struct api_value none[] = {{"id", NULL, API_VALUE_TEXT},
	                                        {"last_name", "Idaho", API_VALUE_TEXT},
	                                        {"ext_id", NULL, API_VALUE_TEXT}};
	static const char rec[] = "{\"attributes\":{\"type\":\"Contact\"},"
	                          "\"Id\":\"0038b00002gszToAAI\",\"LastName\":\"Atreides\","
	                          "\"Ext_Id__c\":\"E/1\"}";
	static const char several[] = "[\"/services/data/v59.0/sobjects/Contact/003A\","
	                              "\"/services/data/v59.0/sobjects/Contact/003B\"]";
	struct cf_kv tkv[] = {
	        {"object", "Contact"}, {"columns", "ext_id:Ext_Id__c"}, {"external_id", "ext_id"}};
	struct cf_kv bad[] = {{"object", "Contact"}, {"external_id", "id"}};
	struct cf_kv skv[] = {{"type", "stripe"}, {"base_url", "https://api.stripe.com"}};
	struct api_row row = {.new_image = {e1, 3}};
	struct http_response resp = {0};
	struct connector *stripe;
	struct api_http_spec spec;
	struct api_result res;
	struct api_error err;
	struct api_table t;
	char e[256];

	(void)state;
	assert_false(api_table_init(&t, "s.t", bad, 2, e, sizeof(e)));
	assert_true(api_table_init(&t, "salesforce.contacts", tkv, 3, e, sizeof(e)));
	assert_true(connector_check_table(sf, &t, e, sizeof(e)));
	assert_true(connector_can_find(sf, &t));
	assert_false(connector_can_find(sf, &contacts));
	stripe = connector_create("stripe", skv, 2, e, sizeof(e));
	assert_non_null(stripe);
	assert_false(connector_check_table(stripe, &t, e, sizeof(e)));
	assert_non_null(strstr(e, "external_id=ext_id"));
	connector_free(stripe);

	assert_true(connector_build_request(sf, &t, API_OP_INSERT, &row, 1, &spec, &err));
	assert_int_equal(spec.method, HTTP_PATCH);
	assert_string_equal(spec.url, "https://acme.my.salesforce.com/services/data/v59.0/"
	                              "composite/sobjects/Contact/Ext_Id__c");
	assert_string_equal(spec.body, "{\"allOrNone\":true,\"records\":[{\"attributes\":"
	                               "{\"type\":\"Contact\"},\"LastName\":\"Atreides\","
	                               "\"Ext_Id__c\":\"E/1\"}]}");
	api_http_spec_free(&spec);
	row.new_image = (struct api_row_image){none, 3};
	assert_false(connector_build_request(sf, &t, API_OP_INSERT, &row, 1, &spec, &err));
	assert_int_equal(err.cls, API_ERR_REQUIRED);
	assert_string_equal(err.column, "ext_id");
	assert_true(err.value_is_null);

	assert_true(connector_build_find(sf, &t, "E/1", NULL, 0, &spec, &err));
	assert_int_equal(spec.method, HTTP_GET);
	assert_string_equal(spec.url, "https://acme.my.salesforce.com/services/data/v59.0/"
	                              "sobjects/Contact/Ext_Id__c/E%2F1");
	api_http_spec_free(&spec);
	resp.outcome = HTTP_OUTCOME_ANSWER;
	resp.status = 200;
	resp.body = (char *)rec;
	resp.body_len = strlen(rec);
	connector_parse_find(sf, &t, "E/1", &resp, &res);
	assert_true(res.ok);
	assert_string_equal(res.rows[0].id, "0038b00002gszToAAI");
	api_result_free(&res);
	resp.status = 404;
	resp.body = (char *)"[{\"errorCode\":\"NOT_FOUND\",\"message\":\"none\"}]";
	resp.body_len = strlen(resp.body);
	connector_parse_find(sf, &t, "E/1", &resp, &res);
	assert_int_equal(res.error.cls, API_ERR_NOT_FOUND);
	api_result_free(&res);
	resp.status = 300;
	resp.body = (char *)several;
	resp.body_len = strlen(several);
	connector_parse_find(sf, &t, "E/1", &resp, &res);
	assert_false(res.ok);
	assert_int_equal(res.error.cls, API_ERR_BAD_ANSWER);
	api_result_free(&res);
	resp.outcome = HTTP_OUTCOME_UNKNOWN;
	connector_parse_find(sf, &t, "E/1", &resp, &res);
	assert_false(res.ok);
	assert_true(res.error.nothing_written);
	api_result_free(&res);
	api_table_free(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_config_errors),
	        cmocka_unit_test(test_max_rows),
	        cmocka_unit_test(test_names),
	        cmocka_unit_test(test_build_insert),
	        cmocka_unit_test(test_build_update),
	        cmocka_unit_test(test_build_delete),
	        cmocka_unit_test(test_build_limits_and_bad_values),
	        cmocka_unit_test(test_parse_create_ok),
	        cmocka_unit_test(test_parse_record_errors),
	        cmocka_unit_test(test_parse_request_errors),
	        cmocka_unit_test(test_parse_delete),
	        cmocka_unit_test(test_parse_delete_with_gone_records),
	        cmocka_unit_test(test_read_by_id),
	        cmocka_unit_test(test_external_id),
	        cmocka_unit_test(test_parse_huge_and_non_answers),
	        cmocka_unit_test(test_table_config),
	};
	const struct CMUnitTest e2e[] = {
	        cmocka_unit_test_setup_teardown(test_e2e_insert_then_delete, e2e_setup,
	                                        e2e_teardown),
	        cmocka_unit_test_setup_teardown(test_e2e_delete_with_a_gone_record, e2e_setup,
	                                        e2e_teardown),
	        cmocka_unit_test_setup_teardown(test_e2e_single_flight_refresh, e2e_setup,
	                                        e2e_teardown),
	        cmocka_unit_test_setup_teardown(test_e2e_token_expiry, e2e_setup, e2e_teardown),
	        cmocka_unit_test_setup_teardown(test_e2e_auth_failure, e2e_setup, e2e_teardown),
	        cmocka_unit_test_setup_teardown(test_e2e_rate_limit, e2e_setup, e2e_teardown),
	        cmocka_unit_test_setup_teardown(test_e2e_failures, e2e_setup, e2e_teardown),
	        cmocka_unit_test_setup_teardown(test_e2e_unreachable_and_cancel, e2e_setup,
	                                        e2e_teardown),
	        cmocka_unit_test_setup_teardown(test_e2e_unreachable_for_a_while, e2e_setup,
	                                        e2e_teardown),
	        cmocka_unit_test_setup_teardown(test_e2e_config_errors, e2e_setup, e2e_teardown),
	        cmocka_unit_test_setup_teardown(test_e2e_api_set, e2e_setup, e2e_teardown),
	};
	int rc;

	rc = cmocka_run_group_tests(tests, setup, teardown);
	if (!fake_server_start(&fake, "fake_salesforce.py", NULL)) {
		fprintf(stderr, "cannot start the fake Salesforce\n");
		return 1;
	}
	rc |= cmocka_run_group_tests_name("api calls against the fake Salesforce", e2e, setup,
	                                  teardown);
	fake_server_stop(&fake);
	return rc;
}
