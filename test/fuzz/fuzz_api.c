/*
 * libFuzzer target for everything that reads API answers: the JSON parser, every
 * connector's answer parser (every operation, with the status code taken from the
 * input), and every connector's read side (pages of the change feed, from several cursors).
 * Built with clang only, not part of make check:
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -std=c11 -D_GNU_SOURCE \
 *     -Iinclude -I/usr/include/yajl src/api/json.c src/api/connector.c \
 *     src/api/salesforce.c src/api/rest.c src/api/stripe.c src/api/hubspot.c \
 *     src/api/airtable.c src/api/changes.c src/api/salesforce_changes.c \
 *     src/api/stripe_changes.c src/api/rest_changes.c src/api/hubspot_changes.c \
 *     src/api/airtable_changes.c src/api/http.c src/dns.c src/log.c test/fuzz/fuzz_api.c \
 *     -lyajl -lcurl -levent -lcares -o fuzz_api
 *   ./fuzz_api -max_len=65536 test/unit/fixtures/api
 *
 * Input: byte 0 picks the status (200, 201, 204, 400, 401, 403, 404, 409, 422, 429, 500, 503),
 * byte 1 the connector (Salesforce, REST single, REST batch, Stripe, HubSpot, Airtable), the
 * operation and the row count; the rest is the body.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/changes.h"
#include "api/connector.h"
#include "api/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct connector *conns[6];
static struct api_table table;

static void fuzz_init(void)
{
	static struct cf_kv sf[] = {{"type", "salesforce"}, {"base_url", "https://x"}};
	static struct cf_kv rest1[] = {{"type", "rest"},          {"base_url", "http://x"},
	                               {"path", "/c"},            {"list_path", "/c"},
	                               {"changed_since", "since"}, {"cursor_field", "v"},
	                               {"deleted_field", "gone"}};
	static struct cf_kv restn[] = {{"type", "rest"},
	                               {"base_url", "http://x"},
	                               {"insert_path", "/c"},
	                               {"update_path", "/c"},
	                               {"delete_path", "/c?ids={ids}"},
	                               {"records_key", "data"},
	                               {"naming", "camel"},
	                               {"max_batch", "3"}};
	static struct cf_kv stripe[] = {{"type", "stripe"}, {"base_url", "https://x"}};
	static struct cf_kv hubspot[] = {{"type", "hubspot"}, {"base_url", "https://x"}};
	static struct cf_kv airtable[] = {
	        {"type", "airtable"}, {"base_url", "https://x"}, {"base_id", "app1"}};
	static struct cf_kv tkv[] = {{"object", "Contact"}, {"columns", "note:Description"}};
	char err[256];

	conns[0] = connector_create("sf", sf, 2, err, sizeof(err));
	conns[1] = connector_create("r1", rest1, 7, err, sizeof(err));
	conns[2] = connector_create("rn", restn, 8, err, sizeof(err));
	conns[3] = connector_create("st", stripe, 2, err, sizeof(err));
	conns[4] = connector_create("hs", hubspot, 2, err, sizeof(err));
	conns[5] = connector_create("at", airtable, 3, err, sizeof(err));
	if (!conns[0] || !conns[1] || !conns[2] || !conns[3] || !conns[4] || !conns[5] ||
	    !api_table_init(&table, "t", tkv, 2, err, sizeof(err)))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const long statuses[] = {200, 201, 204, 400, 401, 403, 404, 409, 422, 429, 500, 503};
	static const struct api_value v[] = {{"id", "0038b00002gszToAAI", API_VALUE_TEXT},
	                                     {"first_name", "Paul", API_VALUE_TEXT},
	                                     {"email", NULL, API_VALUE_TEXT}};
	static const struct api_row rows[3] = {
	        {.old_image = {v, 3}, .new_image = {v, 3}},
	        {.old_image = {v, 3}, .new_image = {v, 3}},
	        {.old_image = {v, 3}, .new_image = {v, 3}},
	};
	struct http_header hdr[2] = {{"Retry-After", "3"}, {"Sforce-Limit-Info", "api-usage=1/2"}};
	struct http_response resp = {0};
	struct json_value *jv;
	struct api_result res;
	char err[128], *body;
	int which, op, nrows;

	if (conns[0] == NULL)
		fuzz_init();
	if (size < 2)
		return 0;
	body = malloc(size - 2 + 1);
	if (body == NULL)
		return 0;
	memcpy(body, data + 2, size - 2);
	body[size - 2] = '\0';
	if (json_parse(body, size - 2, NULL, &jv, err, sizeof(err)))
		json_free(jv);
	which = data[1] % 6;
	op = (data[1] / 6) % 3;
	nrows = 1 + (data[1] / 18) % 3;
	if (nrows > connector_max_rows(conns[which], (enum api_op)op))
		nrows = 1;
	resp.outcome = HTTP_OUTCOME_ANSWER;
	resp.status = statuses[data[0] % (sizeof(statuses) / sizeof(statuses[0]))];
	resp.body = body;
	resp.body_len = size - 2;
	resp.headers = hdr;
	resp.nheaders = 2;
	connector_parse_response(conns[which], &table, (enum api_op)op, rows, nrows, &resp, &res);
	if (res.ok && res.nrows != nrows)
		abort(); /* a result must match the request row for row */
	api_result_free(&res);
	if (changes_supported(conns[which])) {
		static const char *const cursors[] = {
		        "",        "2024-05-01T10:00:00.000+0000|003A", "b|evt_1|", "b|evt_1|cus_2",
		        "e|evt_1", "n|", "s|1714557600000", "a|1714557600000|", "t|2024-05-01T10:00:00.000Z",
		        "7"};
		static const char *const nexts[] = {NULL, "/services/data/v59.0/query/01g-2",
		                                    "1714557600000|200", "2024-05-01T10:00:00.000Z|itr1/1"};
		struct changes_req req = {.cursor = cursors[data[0] % 10],
		                          .next = nexts[(data[0] / 10) % 4],
		                          .page_size = 2,
		                          .full_scan = data[0] & 1};
		struct changes_page page;
		changes_parse_response(conns[which], &table, &req, &resp, &page);
		for (int i = 0; page.ok && i < page.nrecords; i++)
			if (page.records[i].id == NULL || page.records[i].id[0] == '\0')
				abort(); /* every record names its id */
		changes_page_free(&page);
	}
	free(body);
	return 0;
}
