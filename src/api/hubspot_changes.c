/*
 * hubspot_changes — the HubSpot read side: CRM search on hs_lastmodifieddate, and the list of
 * archived records for deletes.
 *
 *   POST <base>/crm/v3/objects/<object>/search
 *        {"filterGroups":[{"filters":[{"propertyName":"hs_lastmodifieddate","operator":"GTE",
 *          "value":"<ms>"}]}], "sorts":[{"propertyName":"hs_lastmodifieddate",
 *          "direction":"ASCENDING"}], "properties":[...], "limit":N, "after":"<after>"}
 *   GET  <base>/crm/v3/objects/<object>?archived=true&limit=100&after=<after>
 *
 * A search answers at most 10,000 results: when the next page would pass that, the search is
 * started again from the last record's hs_lastmodifieddate (the cursor moves) instead of
 * following "after". GTE means records at the boundary come twice (a harmless second upsert).
 * Once the search is through, the archived records are listed (HubSpot has no "archived
 * since"), and each deletes its row. Cursor text:
 *   "" or "s|<ms>"      the search from <ms> (from the beginning when empty)
 *   "a|<ms>|<after>"    listing archived records; the next pass searches from <ms>
 * The continuation of a search is "<ms>|<after>": its filter must stay that of its first page.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/changes.h"
#include "api/connector.h"
#include "api/json.h"

#define HS_SEARCH_MAX_RESULTS 10000
#define HS_SEARCH_MAX_LIMIT   200
#define HS_LIST_URL_MAX       4096
#define HS_BODY_MAX           (256u << 10)

/* Digits only (a time in ms, or HubSpot's "after", which is a number in practice). */
static bool hs_token_ok(const char *s, size_t len)
{
	if (len > 64)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'z') ||
		      (s[i] >= 'A' && s[i] <= 'Z') || s[i] == '_' || s[i] == '-' || s[i] == '='))
			return false;
	return true;
}

static int hs_limit(const struct changes_req *req)
{
	return req->page_size < 1 || req->page_size > HS_SEARCH_MAX_LIMIT ? 100 : req->page_size;
}

static bool hs_changes_build(const struct connector *c, const struct api_table *t,
                             const struct changes_req *req, struct api_http_spec *out,
                             struct api_error *err)
{
	const char *cur = req->cursor ? req->cursor : "";
	char ms[72] = "", after[72] = "";
	size_t used;
	struct json_out o;

	if (t->object[0] == '\0' || !hs_token_ok(t->object, strlen(t->object))) {
		api_error_set(err, API_ERR_VALIDATION, "%s: object=%.80s is not a HubSpot object",
		              c->name, t->object);
		return false;
	}
	out->url = malloc(HS_LIST_URL_MAX);
	if (out->url == NULL)
		goto oom;
	if (strncmp(cur, "a|", 2) == 0) {
		const char *bar = strchr(cur + 2, '|');
		if (bar == NULL || !hs_token_ok(bar + 1, strlen(bar + 1)))
			goto bad;
		out->method = HTTP_GET;
		snprintf(out->url, HS_LIST_URL_MAX,
		         "%s/crm/v3/objects/%s?archived=true&limit=100%s%s", c->base_url, t->object,
		         bar[1] ? "&after=" : "", bar + 1);
		return true;
	}
	if (cur[0] != '\0') {
		if (strncmp(cur, "s|", 2) != 0 || !hs_token_ok(cur + 2, strlen(cur + 2)))
			goto bad;
		snprintf(ms, sizeof(ms), "%s", cur + 2);
	}
	if (req->next != NULL) {
		const char *bar = strchr(req->next, '|');
		if (bar == NULL || (size_t)(bar - req->next) >= sizeof(ms) ||
		    !hs_token_ok(req->next, (size_t)(bar - req->next)) ||
		    !hs_token_ok(bar + 1, strlen(bar + 1)))
			goto bad;
		snprintf(ms, sizeof(ms), "%.*s", (int)(bar - req->next), req->next);
		snprintf(after, sizeof(after), "%s", bar + 1);
	}
	out->method = HTTP_POST;
	out->content_type = "application/json";
	used = (size_t)snprintf(out->url, HS_LIST_URL_MAX, "%s/crm/v3/objects/%s/search",
	                        c->base_url, t->object);
	if (used >= HS_LIST_URL_MAX || !json_out_init(&o, HS_BODY_MAX))
		goto oom;
	json_out_object_begin(&o);
	if (ms[0]) {
		json_out_key(&o, "filterGroups");
		json_out_array_begin(&o);
		json_out_object_begin(&o);
		json_out_key(&o, "filters");
		json_out_array_begin(&o);
		json_out_object_begin(&o);
		json_out_key(&o, "propertyName");
		json_out_string(&o, "hs_lastmodifieddate");
		json_out_key(&o, "operator");
		json_out_string(&o, "GTE");
		json_out_key(&o, "value");
		json_out_string(&o, ms);
		json_out_object_end(&o);
		json_out_array_end(&o);
		json_out_object_end(&o);
		json_out_array_end(&o);
	}
	json_out_key(&o, "sorts");
	json_out_array_begin(&o);
	json_out_object_begin(&o);
	json_out_key(&o, "propertyName");
	json_out_string(&o, "hs_lastmodifieddate");
	json_out_key(&o, "direction");
	json_out_string(&o, "ASCENDING");
	json_out_object_end(&o);
	json_out_array_end(&o);
	json_out_key(&o, "properties");
	json_out_array_begin(&o);
	json_out_string(&o, "hs_lastmodifieddate");
	for (int i = 0; i < req->nfields; i++)
		if (strcmp(req->fields[i], "hs_lastmodifieddate") != 0 &&
		    strcmp(req->fields[i], "id") != 0)
			json_out_string(&o, req->fields[i]);
	json_out_array_end(&o);
	json_out_key(&o, "limit");
	json_out_int(&o, hs_limit(req));
	if (after[0]) {
		json_out_key(&o, "after");
		json_out_string(&o, after);
	}
	json_out_object_end(&o);
	out->body = json_out_take(&o, &out->body_len);
	json_out_free(&o);
	if (out->body == NULL)
		goto oom;
	return true;
bad:
	api_error_set(err, API_ERR_INTERNAL, "%s: unusable stored cursor", c->name);
	return false;
oom:
	api_error_set(err, API_ERR_INTERNAL, "out of memory");
	return false;
}

/* prefix a, then "|" b when b is given: "s|<ms>", "a|<ms>|<after>", "<ms>|<after>" */
static char *hs_text(const char *prefix, const char *a, const char *b)
{
	size_t n = strlen(prefix) + strlen(a) + (b ? strlen(b) + 1 : 0) + 1;
	char *s = malloc(n);

	if (s != NULL)
		snprintf(s, n, "%s%s%s%s", prefix, a, b ? "|" : "", b ? b : "");
	return s;
}

static void hs_changes_parse(const struct connector *c, const struct api_table *t,
                             const struct changes_req *req, const struct http_response *resp,
                             struct changes_page *out)
{
	const char *cur = req->cursor ? req->cursor : "";
	const struct json_value *results, *total;
	const char *after;
	bool archived = strncmp(cur, "a|", 2) == 0;
	char why[96], ms[40] = "", start[72] = "";
	int64_t last_ms = -1;

	(void)t;
	if (!json_parse(resp->body, resp->body_len, NULL, &out->doc, why, sizeof(why))) {
		api_error_set(&out->error, API_ERR_BAD_ANSWER, "%s: answer: %s", c->name, why);
		return;
	}
	results = json_get(out->doc, "results");
	total = json_get(out->doc, "total");
	after = json_get_string(json_get(json_get(out->doc, "paging"), "next"), "after");
	if (results == NULL || results->kind != JSON_ARRAY ||
	    (after != NULL && !hs_token_ok(after, strlen(after)))) {
		api_error_set(&out->error, API_ERR_BAD_ANSWER, "%s: answer without results",
		              c->name);
		return;
	}
	for (size_t i = 0; i < results->count; i++) {
		const struct json_value *r = results->items[i];
		const char *id = json_get_string(r, "id");
		const struct json_value *props = json_get(r, "properties");
		const char *mod = json_get_string(props, "hs_lastmodifieddate");
		double when;

		if (id == NULL || id[0] == '\0' || props == NULL || props->kind != JSON_OBJECT) {
			api_error_set(&out->error, API_ERR_BAD_ANSWER,
			              "%s: a result without id or properties", c->name);
			return;
		}
		if (!archived) {
			if (mod == NULL || !changes_parse_time(mod, &when)) {
				api_error_set(&out->error, API_ERR_BAD_ANSWER,
				              "%s: a result without hs_lastmodifieddate", c->name);
				return;
			}
			last_ms = (int64_t)(when * 1000.0 + 0.5);
			if (when > out->newest)
				out->newest = when;
		}
		if (!changes_page_add(out, id, archived, props))
			goto oom;
	}
	if (archived) {
		const char *bar = strchr(cur + 2, '|');
		snprintf(ms, sizeof(ms), "%.*s", (int)(bar - (cur + 2)), cur + 2);
		out->more = after != NULL;
		out->cursor = out->more ? hs_text("a|", ms, after) : hs_text("s|", ms, NULL);
		if (out->cursor == NULL)
			goto oom;
		out->ok = true;
		return;
	}
	/* the search */
	if (req->next != NULL)
		snprintf(start, sizeof(start), "%.*s", (int)(strchr(req->next, '|') - req->next),
		         req->next);
	else if (strncmp(cur, "s|", 2) == 0)
		snprintf(start, sizeof(start), "%s", cur + 2);
	if (last_ms >= 0)
		snprintf(ms, sizeof(ms), "%lld", (long long)last_ms);
	else
		snprintf(ms, sizeof(ms), "%s", start);
	if (total != NULL && total->kind == JSON_NUMBER && total->number >= 0)
		out->total = (int64_t)total->number;
	out->more = true;
	if (after != NULL && atol(after) + hs_limit(req) <= HS_SEARCH_MAX_RESULTS) {
		out->next = hs_text("", start, after);
		out->cursor = hs_text("s|", ms, NULL);
	} else if (after != NULL) {
		/* the 10,000th result: search again from where we are */
		out->cursor = hs_text("s|", ms, NULL);
		if (out->cursor != NULL && strcmp(ms, start) == 0) {
			api_error_set(&out->error, API_ERR_BAD_ANSWER,
			              "%s: more than 10,000 records share hs_lastmodifieddate %s",
			              c->name, ms);
			return;
		}
	} else {
		/* through: the archived records next */
		out->cursor = hs_text("a|", ms, "");
	}
	if (out->cursor == NULL || (after != NULL && out->next == NULL &&
	                            atol(after) + hs_limit(req) <= HS_SEARCH_MAX_RESULTS))
		goto oom;
	out->ok = true;
	return;
oom:
	api_error_set(&out->error, API_ERR_INTERNAL, "out of memory");
}

static bool hs_cursor_now(const struct connector *c, long long now, char *buf, size_t size)
{
	(void)c;
	return (size_t)snprintf(buf, size, "s|%lld000", now) < size;
}

static const char *const hs_changes_keys[] = {NULL};

const struct changes_ops hubspot_changes_ops = {
        .keys = hs_changes_keys,
        .configure = NULL,
        .release = NULL,
        /* the CRM search API takes 4 requests a second per token */
        .default_rate = 4.0,
        .default_page_size = 100,
        .build = hs_changes_build,
        .parse = hs_changes_parse,
        .cursor_now = hs_cursor_now,
};
