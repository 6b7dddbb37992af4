/*
 * Unit tests of the connectors' read side (include/api/changes.h): the requests built from a
 * cursor, and pages read from answers — records in the order they apply, deletes, the next
 * cursor, continuations, totals — and answers that must be refused.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/changes.h"
#include "api/connector.h"
#include "api/json.h"

static struct connector *make(const char *name, const struct cf_kv *kv, int n)
{
	char err[256];
	struct connector *c = connector_create(name, kv, n, err, sizeof(err));

	if (c == NULL)
		fail_msg("%s", err);
	return c;
}

static void table(struct api_table *t, const char *object)
{
	struct cf_kv kv[] = {{"api", "x"}, {"object", (char *)object}};
	char err[256];

	assert_true(api_table_init(t, "s.t", kv, 2, err, sizeof(err)));
}

static void page(struct connector *c, const struct api_table *t, const char *cursor,
                 const char *next, long status, const char *body, struct changes_page *out)
{
	struct changes_req req = {.cursor = cursor, .next = next, .page_size = 2};
	struct http_response resp = {0};

	resp.outcome = HTTP_OUTCOME_ANSWER;
	resp.status = status;
	resp.body = body;
	resp.body_len = strlen(body);
	changes_parse_response(c, t, &req, &resp, out);
}

static char *build(struct connector *c, const struct api_table *t, const char *cursor,
                   const char *next, const char *const *fields, int nfields)
{
	struct changes_req req = {.cursor = cursor,
	                          .next = next,
	                          .fields = fields,
	                          .nfields = nfields,
	                          .page_size = 2};
	struct api_http_spec spec;
	struct api_error err;
	char *url;

	if (!changes_build_request(c, t, &req, &spec, &err))
		return NULL;
	url = strdup(spec.url);
	api_http_spec_free(&spec);
	return url;
}

static void test_salesforce(void **state)
{
	struct cf_kv kv[] = {{"type", "salesforce"}, {"base_url", "http://sf"}};
	struct connector *c = make("sf", kv, 2);
	const char *fields[] = {"Id", "FirstName", "Description"};
	const char *bad[] = {"Name) FROM User --"};
	struct changes_page p;
	struct api_table t;
	char *url;

	table(&t, "Contact");
	url = build(c, &t, "", NULL, fields, 3);
	assert_non_null(url);
	assert_string_equal(url,
	                    "http://sf/services/data/v59.0/queryAll?q=SELECT%20Id%2C%20FirstName"
	                    "%2C%20Description%2C%20SystemModstamp%2C%20IsDeleted%20FROM%20Contact"
	                    "%20ORDER%20BY%20SystemModstamp%2C%20Id");
	free(url);
	url = build(c, &t, "2024-05-01T10:00:00.000+0000|003A", NULL, fields, 3);
	assert_non_null(strstr(url,
	                       "WHERE%20SystemModstamp%20%3E%202024-05-01T10%3A00%3A00Z%20OR%20"
	                       "%28SystemModstamp%20%3D%202024-05-01T10%3A00%3A00Z%20AND%20Id"
	                       "%20%3E%20%27003A%27%29"));
	free(url);
	/* the continuation is followed, only on the same host's data API */
	url = build(c, &t, "x|y", "/services/data/v59.0/query/01g-2000", fields, 3);
	assert_string_equal(url, "http://sf/services/data/v59.0/query/01g-2000");
	free(url);
	assert_null(build(c, &t, "", "http://evil/x", fields, 3));
	assert_null(build(c, &t, "", NULL, bad, 1));
	assert_null(build(c, &t, "not a cursor", NULL, fields, 3));

	page(c, &t, "", NULL, 200,
	     "{\"totalSize\":3,\"done\":false,\"nextRecordsUrl\":\"/services/data/v59.0/query/01g-2\","
	     "\"records\":[{\"attributes\":{\"type\":\"Contact\"},\"Id\":\"003A\",\"FirstName\":\"A\","
	     "\"SystemModstamp\":\"2024-05-01T10:00:00.000+0000\",\"IsDeleted\":false},"
	     "{\"Id\":\"003B\",\"SystemModstamp\":\"2024-05-01T10:00:01.000+0000\","
	     "\"IsDeleted\":true}]}",
	     &p);
	assert_true(p.ok);
	assert_int_equal(p.nrecords, 2);
	assert_string_equal(p.records[0].id, "003A");
	assert_false(p.records[0].deleted);
	assert_true(p.records[1].deleted);
	assert_true(p.more);
	assert_string_equal(p.next, "/services/data/v59.0/query/01g-2");
	assert_string_equal(p.cursor, "2024-05-01T10:00:01.000+0000|003B");
	assert_int_equal(p.total, 3);
	assert_true(p.newest == 1714557601.0);
	changes_page_free(&p);

	/* the last page of a listing: the cursor keeps the second only, read again next time */
	page(c, &t, "", "/services/data/v59.0/query/01g-2", 200,
	     "{\"totalSize\":3,\"done\":true,\"records\":[{\"Id\":\"003C\","
	     "\"SystemModstamp\":\"2024-05-01T10:00:02.000+0000\",\"IsDeleted\":false}]}",
	     &p);
	assert_true(p.ok && !p.more);
	assert_string_equal(p.cursor, "2024-05-01T10:00:02.000+0000|");
	changes_page_free(&p);

	/* done with no records: the cursor stays */
	page(c, &t, "x|y", NULL, 200, "{\"totalSize\":0,\"done\":true,\"records\":[]}", &p);
	assert_true(p.ok && !p.more && p.cursor == NULL && p.nrecords == 0);
	changes_page_free(&p);
	/* refused: not done and no continuation; a record without SystemModstamp; an error */
	page(c, &t, "", NULL, 200, "{\"totalSize\":1,\"done\":false,\"records\":[]}", &p);
	assert_false(p.ok);
	changes_page_free(&p);
	page(c, &t, "", NULL, 200, "{\"done\":true,\"records\":[{\"Id\":\"003A\"}]}", &p);
	assert_false(p.ok);
	assert_int_equal(p.error.cls, API_ERR_BAD_ANSWER);
	changes_page_free(&p);
	page(c, &t, "", NULL, 403,
	     "[{\"message\":\"TotalRequests Limit exceeded.\",\"errorCode\":\"REQUEST_LIMIT_EXCEEDED\"}]",
	     &p);
	assert_false(p.ok);
	assert_int_equal(p.error.cls, API_ERR_RATE_LIMIT);
	changes_page_free(&p);
	page(c, &t, "", NULL, 401, "[{\"errorCode\":\"INVALID_SESSION_ID\"}]", &p);
	assert_int_equal(p.error.cls, API_ERR_AUTH);
	changes_page_free(&p);
	api_table_free(&t);
	connector_free(c);
}

static void test_stripe(void **state)
{
	struct cf_kv kv[] = {{"type", "stripe"}, {"base_url", "http://st"}};
	struct connector *c = make("stripe", kv, 2);
	struct changes_page p;
	struct api_table t;
	char *url;

	table(&t, "customers");
	/* no cursor: the newest event, as the anchor */
	url = build(c, &t, "", NULL, NULL, 0);
	assert_string_equal(url, "http://st/v1/events?limit=1&types%5B%5D=customer.created"
	                         "&types%5B%5D=customer.updated&types%5B%5D=customer.deleted");
	free(url);
	page(c, &t, "", NULL, 200,
	     "{\"object\":\"list\",\"has_more\":true,\"data\":[{\"id\":\"evt_9\"}]}", &p);
	assert_true(p.ok && p.more && p.nrecords == 0);
	assert_string_equal(p.cursor, "b|evt_9|");
	changes_page_free(&p);
	/* the listing */
	url = build(c, &t, "b|evt_9|", NULL, NULL, 0);
	assert_string_equal(url, "http://st/v1/customers?limit=2");
	free(url);
	url = build(c, &t, "b|evt_9|cus_2", NULL, NULL, 0);
	assert_string_equal(url, "http://st/v1/customers?limit=2&starting_after=cus_2");
	free(url);
	page(c, &t, "b|evt_9|", NULL, 200,
	     "{\"has_more\":true,\"data\":[{\"id\":\"cus_3\",\"created\":5},{\"id\":\"cus_2\"}]}",
	     &p);
	assert_true(p.ok && p.more);
	assert_string_equal(p.cursor, "b|evt_9|cus_2");
	changes_page_free(&p);
	page(c, &t, "b|evt_9|cus_2", NULL, 200,
	     "{\"has_more\":false,\"data\":[{\"id\":\"cus_1\"}]}", &p);
	assert_true(p.ok && !p.more);
	assert_string_equal(p.cursor, "e|evt_9");
	changes_page_free(&p);
	/* events: newest first in the answer, oldest first in the page */
	url = build(c, &t, "e|evt_9", NULL, NULL, 0);
	assert_non_null(strstr(url, "&ending_before=evt_9"));
	free(url);
	page(c, &t, "e|evt_9", NULL, 200,
	     "{\"has_more\":true,\"data\":["
	     "{\"id\":\"evt_11\",\"type\":\"customer.deleted\",\"created\":7,"
	     "\"data\":{\"object\":{\"id\":\"cus_1\",\"deleted\":true}}},"
	     "{\"id\":\"evt_10\",\"type\":\"customer.updated\",\"created\":6,"
	     "\"data\":{\"object\":{\"id\":\"cus_1\",\"name\":\"x\"}}}]}",
	     &p);
	assert_true(p.ok && p.more);
	assert_int_equal(p.nrecords, 2);
	assert_false(p.records[0].deleted);
	assert_true(p.records[1].deleted);
	assert_string_equal(p.cursor, "e|evt_11");
	changes_page_free(&p);
	assert_null(build(c, &t, "e|evt_9&x=1", NULL, NULL, 0));
	assert_null(build(c, &t, "zzz", NULL, NULL, 0));
	page(c, &t, "e|evt_9", NULL, 200, "{\"has_more\":false,\"data\":[{\"type\":\"x\"}]}", &p);
	assert_false(p.ok);
	changes_page_free(&p);
	api_table_free(&t);
	connector_free(c);
}

static void test_rest(void **state)
{
	struct cf_kv kv[] = {{"type", "rest"},
	                     {"base_url", "http://r"},
	                     {"path", "/c"},
	                     {"list_path", "/{object}/feed"},
	                     {"changed_since", "since"},
	                     {"cursor_field", "v"},
	                     {"deleted_field", "gone"},
	                     {"list_key", "data"}};
	struct cf_kv half[] = {
	        {"type", "rest"}, {"base_url", "http://r"}, {"path", "/c"}, {"list_path", "/c"}};
	struct connector *c = make("r", kv, 8);
	struct changes_page p;
	struct api_table t;
	char err[256];
	char *url;

	assert_null(connector_create("r", half, 4, err, sizeof(err)));
	assert_non_null(strstr(err, "changed_since"));
	{
		/* without list_path= the API is written only: no read side, and no crash asking */
		struct connector *w = make("w", half, 3);
		assert_false(changes_supported(w));
		table(&t, "people");
		page(w, &t, "", NULL, 200, "{\"data\":[]}", &p);
		assert_false(p.ok);
		assert_null(build(w, &t, "", NULL, NULL, 0));
		changes_page_free(&p);
		api_table_free(&t);
		connector_free(w);
	}
	table(&t, "people");
	url = build(c, &t, "", NULL, NULL, 0);
	assert_string_equal(url, "http://r/people/feed?limit=2");
	free(url);
	url = build(c, &t, "2024-05-01T10:00:00Z", NULL, NULL, 0);
	assert_string_equal(url, "http://r/people/feed?limit=2&since=2024-05-01T10%3A00%3A00Z");
	free(url);
	page(c, &t, "", NULL, 200,
	     "{\"data\":[{\"id\":\"1\",\"v\":3},{\"id\":2,\"v\":4,\"gone\":true}]}", &p);
	assert_true(p.ok && p.more);
	assert_string_equal(p.records[1].id, "2");
	assert_true(p.records[1].deleted);
	assert_string_equal(p.cursor, "4");
	changes_page_free(&p);
	/* a full page at the value asked with cannot be got past */
	page(c, &t, "4", NULL, 200, "{\"data\":[{\"id\":\"1\",\"v\":4},{\"id\":\"2\",\"v\":4}]}",
	     &p);
	assert_false(p.ok);
	assert_non_null(strstr(p.error.message, "page_size"));
	changes_page_free(&p);
	page(c, &t, "4", NULL, 200, "{\"data\":[{\"id\":\"1\"}]}", &p);
	assert_false(p.ok);
	changes_page_free(&p);
	page(c, &t, "4", NULL, 200, "[]", &p);
	assert_false(p.ok);
	changes_page_free(&p);
	api_table_free(&t);
	connector_free(c);
}

static void test_hubspot(void **state)
{
	struct cf_kv kv[] = {{"type", "hubspot"}, {"base_url", "http://hs"}};
	struct connector *c = make("hs", kv, 2);
	const char *fields[] = {"id", "email"};
	struct changes_req req = {.cursor = "s|1714557600000",
	                          .next = NULL,
	                          .fields = fields,
	                          .nfields = 2,
	                          .page_size = 200};
	struct api_http_spec spec;
	struct api_error err;
	struct http_response resp = {0};
	struct changes_page p;
	struct api_table t;
	const char *body;

	table(&t, "contacts");
	assert_true(changes_build_request(c, &t, &req, &spec, &err));
	assert_int_equal(spec.method, HTTP_POST);
	assert_string_equal(spec.url, "http://hs/crm/v3/objects/contacts/search");
	assert_non_null(strstr(spec.body, "\"operator\":\"GTE\",\"value\":\"1714557600000\""));
	assert_non_null(strstr(spec.body, "\"properties\":[\"hs_lastmodifieddate\",\"email\"]"));
	assert_null(strstr(spec.body, "\"after\""));
	api_http_spec_free(&spec);
	/* past the 10,000th result the search starts again from the last record */
	body = "{\"total\":20000,\"results\":[{\"id\":\"7\",\"properties\":"
	       "{\"hs_lastmodifieddate\":\"2024-05-01T10:00:01.250Z\"}}],"
	       "\"paging\":{\"next\":{\"after\":\"9900\"}}}";
	resp.outcome = HTTP_OUTCOME_ANSWER;
	resp.status = 200;
	resp.body = body;
	resp.body_len = strlen(body);
	req.next = "1714557600000|9800";
	changes_parse_response(c, &t, &req, &resp, &p);
	assert_true(p.ok && p.more);
	assert_null(p.next);
	assert_string_equal(p.cursor, "s|1714557601250");
	changes_page_free(&p);
	/* before it, the same search goes on */
	body = "{\"total\":20000,\"results\":[{\"id\":\"7\",\"properties\":"
	       "{\"hs_lastmodifieddate\":\"2024-05-01T10:00:01.250Z\"}}],"
	       "\"paging\":{\"next\":{\"after\":\"400\"}}}";
	resp.body = body;
	resp.body_len = strlen(body);
	req.next = "1714557600000|200";
	changes_parse_response(c, &t, &req, &resp, &p);
	assert_true(p.ok && p.more);
	assert_string_equal(p.next, "1714557600000|400");
	changes_page_free(&p);
	/* through: the archived records next, then the search from the same point */
	body = "{\"total\":1,\"results\":[]}";
	resp.body = body;
	resp.body_len = strlen(body);
	req.next = NULL;
	changes_parse_response(c, &t, &req, &resp, &p);
	assert_true(p.ok && p.more);
	assert_string_equal(p.cursor, "a|1714557600000|");
	changes_page_free(&p);
	body = "{\"results\":[{\"id\":\"9\",\"properties\":{},\"archived\":true}]}";
	resp.body = body;
	resp.body_len = strlen(body);
	req.cursor = "a|1714557600000|";
	changes_parse_response(c, &t, &req, &resp, &p);
	assert_true(p.ok && !p.more && p.nrecords == 1 && p.records[0].deleted);
	assert_string_equal(p.cursor, "s|1714557600000");
	changes_page_free(&p);
	api_table_free(&t);
	connector_free(c);
}

static void test_airtable(void **state)
{
	struct cf_kv kv[] = {{"type", "airtable"}, {"base_url", "http://at"}, {"base_id", "appX"}};
	struct connector *c = make("at", kv, 3);
	struct http_header date = {"Date", "Mon, 07 Dec 2026 09:35:00 GMT"};
	struct http_response resp = {0};
	struct changes_req req = {.cursor = "t|2026-12-07T09:00:00.000Z", .page_size = 100};
	struct api_http_spec spec;
	struct api_error err;
	struct changes_page p;
	struct api_table t;
	const char *body = "{\"records\":[{\"id\":\"rec1\",\"fields\":{\"name\":\"A\"}}],"
	                   "\"offset\":\"itr1/100\"}";

	table(&t, "My Table");
	assert_true(changes_build_request(c, &t, &req, &spec, &err));
	assert_string_equal(spec.url,
	                    "http://at/v0/appX/My%20Table?pageSize=100&filterByFormula="
	                    "LAST_MODIFIED_TIME%28%29%3E%3D%272026-12-07T09%3A00%3A00.000Z%27");
	api_http_spec_free(&spec);
	req.full_scan = true;
	assert_true(changes_build_request(c, &t, &req, &spec, &err));
	assert_string_equal(spec.url, "http://at/v0/appX/My%20Table?pageSize=100");
	api_http_spec_free(&spec);
	req.full_scan = false;
	/* the first page: the listing's start comes from Airtable's clock */
	resp.outcome = HTTP_OUTCOME_ANSWER;
	resp.status = 200;
	resp.body = body;
	resp.body_len = strlen(body);
	resp.headers = &date;
	resp.nheaders = 1;
	changes_parse_response(c, &t, &req, &resp, &p);
	assert_true(p.ok && p.more && p.cursor == NULL);
	assert_string_equal(p.next, "2026-12-07T09:34:59.000Z|itr1/100");
	changes_page_free(&p);
	/* the last page: the cursor becomes that start */
	req.next = "2026-12-07T09:34:59.000Z|itr1/100";
	body = "{\"records\":[]}";
	resp.body = body;
	resp.body_len = strlen(body);
	changes_parse_response(c, &t, &req, &resp, &p);
	assert_true(p.ok && !p.more);
	assert_string_equal(p.cursor, "t|2026-12-07T09:34:59.000Z");
	changes_page_free(&p);
	req.next = "junk|itr1/100";
	assert_false(changes_build_request(c, &t, &req, &spec, &err));
	api_table_free(&t);
	connector_free(c);
}

static void test_time(void **state)
{
	double t;

	assert_true(changes_parse_time("1970-01-01T00:00:00Z", &t) && t == 0);
	assert_true(changes_parse_time("2024-05-01T10:00:00.500+0000", &t) && t == 1714557600.5);
	assert_true(changes_parse_time("2024-05-01T12:00:00+02:00", &t) && t == 1714557600);
	assert_false(changes_parse_time("2024-05-01", &t));
	assert_false(changes_parse_time("2024-13-01T00:00:00Z", &t));
	assert_false(changes_parse_time("2024-05-01T10:00:00Zjunk", &t));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_salesforce), cmocka_unit_test(test_stripe),
	        cmocka_unit_test(test_rest),       cmocka_unit_test(test_hubspot),
	        cmocka_unit_test(test_airtable),   cmocka_unit_test(test_time),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
