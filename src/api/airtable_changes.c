/*
 * airtable_changes — the Airtable read side: the list records call, filtered on
 * LAST_MODIFIED_TIME(), with offset paging; deletes by full listings.
 *
 *   GET <base>/v0/<base_id>/<table>?pageSize=N
 *       &filterByFormula=LAST_MODIFIED_TIME()>='<cursor time>'   (not on a full listing)
 *       &offset=<offset>                                         (the listing's next page)
 *
 * Records carry no modification time (unless the base has such a field), so the cursor is
 * the time the listing began, as Airtable's own clock says it (the Date header of the first
 * page's answer, one second earlier for its whole-second precision): "t|<ISO time>". It is
 * stored when the listing ends; a listing cut short starts again from the previous cursor (its
 * offset would have expired), and records seen twice are only written twice. Airtable has no
 * deletion feed: every full_sync_interval the worker asks for a full listing (full_scan) and
 * deletes the rows of records it did not name. Airtable takes 5 requests a second per base.
 * The continuation of a listing is "<start time>|<offset>".
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/changes.h"
#include "api/connector.h"
#include "api/json.h"

#define AT_URL_MAX  4096
#define AT_TIME_MAX 40
#define AT_PAGE_MAX 100

struct at_changes_priv {
	char base_id[64];
};

static bool at_changes_configure(struct connector *c, const struct cf_kv *kv, int nkv, char *err,
                                 size_t errsize)
{
	const char *base = api_kv_get(kv, nkv, "base_id");
	struct at_changes_priv *p = calloc(1, sizeof(*p));

	if (p == NULL) {
		snprintf(err, errsize, "out of memory");
		return false;
	}
	/* checked by the write side's configure */
	snprintf(p->base_id, sizeof(p->base_id), "%s", base ? base : "");
	c->changes_priv = p;
	return true;
}

static void at_changes_release(struct connector *c)
{
	free(c->changes_priv);
	c->changes_priv = NULL;
}

/* An ISO time as we write them: digits, '-', ':', 'T', '.', 'Z'. */
static bool at_time_ok(const char *s, size_t len)
{
	double t;
	char buf[AT_TIME_MAX];

	if (len == 0 || len >= sizeof(buf))
		return false;
	memcpy(buf, s, len);
	buf[len] = '\0';
	return changes_parse_time(buf, &t);
}

static bool at_offset_ok(const char *s)
{
	if (strlen(s) > 256)
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && *s != '/' && *s != '_' && *s != '-')
			return false;
	return true;
}

static bool at_changes_build(const struct connector *c, const struct api_table *t,
                             const struct changes_req *req, struct api_http_spec *out,
                             struct api_error *err)
{
	const struct at_changes_priv *p = c->changes_priv;
	const char *cur = req->cursor ? req->cursor : "";
	const char *offset = NULL;
	char formula[128];
	size_t used;
	int limit =
	        req->page_size < 1 || req->page_size > AT_PAGE_MAX ? AT_PAGE_MAX : req->page_size;

	if (cur[0] != '\0' &&
	    (strncmp(cur, "t|", 2) != 0 || !at_time_ok(cur + 2, strlen(cur + 2)))) {
		api_error_set(err, API_ERR_INTERNAL, "%s: unusable stored cursor", c->name);
		return false;
	}
	if (req->next != NULL) {
		const char *bar = strchr(req->next, '|');
		if (bar == NULL || !at_time_ok(req->next, (size_t)(bar - req->next)) ||
		    !at_offset_ok(bar + 1)) {
			api_error_set(err, API_ERR_BAD_ANSWER, "%s: unusable offset", c->name);
			return false;
		}
		offset = bar + 1;
	}
	if (t->object[0] == '\0') {
		api_error_set(err, API_ERR_VALIDATION, "%s: table %s has no object=", c->name,
		              t->name);
		return false;
	}
	out->url = malloc(AT_URL_MAX);
	if (out->url == NULL)
		goto oom;
	out->method = HTTP_GET;
	used = (size_t)snprintf(out->url, AT_URL_MAX, "%s/v0/%s/", c->base_url, p->base_id);
	if (used >= AT_URL_MAX || !api_url_escape(t->object, out->url, AT_URL_MAX, &used))
		goto too_long;
	used += (size_t)snprintf(out->url + used, AT_URL_MAX - used, "?pageSize=%d", limit);
	if (used >= AT_URL_MAX)
		goto too_long;
	if (cur[0] != '\0' && !req->full_scan) {
		snprintf(formula, sizeof(formula), "LAST_MODIFIED_TIME()>='%s'", cur + 2);
		used += (size_t)snprintf(out->url + used, AT_URL_MAX - used, "&filterByFormula=");
		if (used >= AT_URL_MAX || !api_url_escape(formula, out->url, AT_URL_MAX, &used))
			goto too_long;
	}
	if (offset != NULL) {
		used += (size_t)snprintf(out->url + used, AT_URL_MAX - used, "&offset=");
		if (used >= AT_URL_MAX || !api_url_escape(offset, out->url, AT_URL_MAX, &used))
			goto too_long;
	}
	return true;
too_long:
	api_error_set(err, API_ERR_INTERNAL, "%s: the list URL is too long", c->name);
	return false;
oom:
	api_error_set(err, API_ERR_INTERNAL, "out of memory");
	return false;
}

/* An HTTP date ("Mon, 07 Dec 2026 09:35:00 GMT"), one second earlier, as ISO text. */
static bool at_date_header(const struct http_response *resp, char *out, size_t size)
{
	static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
	const char *h = http_response_header(resp, "Date");
	char mon[4];
	int d, y, hh, mm, ss;
	const char *m;
	struct tm tm;
	time_t t;

	if (h == NULL || sscanf(h, "%*3s, %d %3s %d %d:%d:%d GMT", &d, mon, &y, &hh, &mm, &ss) != 6)
		return false;
	m = strstr(months, mon);
	if (m == NULL || (m - months) % 3 != 0)
		return false;
	memset(&tm, 0, sizeof(tm));
	tm.tm_year = y - 1900;
	tm.tm_mon = (int)((m - months) / 3);
	tm.tm_mday = d;
	tm.tm_hour = hh;
	tm.tm_min = mm;
	tm.tm_sec = ss;
	t = timegm(&tm) - 1;
	if (gmtime_r(&t, &tm) == NULL)
		return false;
	return strftime(out, size, "%Y-%m-%dT%H:%M:%S.000Z", &tm) > 0;
}

static void at_changes_parse(const struct connector *c, const struct api_table *t,
                             const struct changes_req *req, const struct http_response *resp,
                             struct changes_page *out)
{
	const struct json_value *recs;
	const char *offset;
	char why[96], start[AT_TIME_MAX];
	size_t n;

	(void)t;
	if (!json_parse(resp->body, resp->body_len, NULL, &out->doc, why, sizeof(why))) {
		api_error_set(&out->error, API_ERR_BAD_ANSWER, "%s: list answer: %s", c->name, why);
		return;
	}
	recs = json_get(out->doc, "records");
	offset = json_get_string(out->doc, "offset");
	if (recs == NULL || recs->kind != JSON_ARRAY || (offset != NULL && !at_offset_ok(offset))) {
		api_error_set(&out->error, API_ERR_BAD_ANSWER, "%s: list answer without records",
		              c->name);
		return;
	}
	for (size_t i = 0; i < recs->count; i++) {
		const char *id = json_get_string(recs->items[i], "id");
		const struct json_value *fields = json_get(recs->items[i], "fields");
		if (id == NULL || id[0] == '\0' || fields == NULL || fields->kind != JSON_OBJECT) {
			api_error_set(&out->error, API_ERR_BAD_ANSWER,
			              "%s: a record without id or fields", c->name);
			return;
		}
		if (!changes_page_add(out, id, false, fields))
			goto oom;
	}
	/* when the listing began: from its continuation, else this answer's Date */
	if (req->next != NULL) {
		n = (size_t)(strchr(req->next, '|') - req->next);
		snprintf(start, sizeof(start), "%.*s", (int)n, req->next);
	} else if (!at_date_header(resp, start, sizeof(start))) {
		/* no clock to go by: the same cursor again next time */
		snprintf(start, sizeof(start), "%s",
		         req->cursor && req->cursor[0] ? req->cursor + 2
		                                       : "1970-01-01T00:00:00.000Z");
	}
	out->more = offset != NULL;
	if (out->more) {
		n = strlen(start) + strlen(offset) + 2;
		out->next = malloc(n);
		if (out->next == NULL)
			goto oom;
		snprintf(out->next, n, "%s|%s", start, offset);
	} else {
		n = strlen(start) + 3;
		out->cursor = malloc(n);
		if (out->cursor == NULL)
			goto oom;
		snprintf(out->cursor, n, "t|%s", start);
	}
	out->ok = true;
	return;
oom:
	api_error_set(&out->error, API_ERR_INTERNAL, "out of memory");
}

static bool at_cursor_now(const struct connector *c, long long now, char *buf, size_t size)
{
	time_t t = (time_t)now;
	struct tm tm;

	(void)c;
	return gmtime_r(&t, &tm) != NULL &&
	       strftime(buf, size, "t|%Y-%m-%dT%H:%M:%S.000Z", &tm) > 0;
}

static const char *const at_changes_keys[] = {NULL};

const struct changes_ops airtable_changes_ops = {
        .keys = at_changes_keys,
        .configure = at_changes_configure,
        .release = at_changes_release,
        /* Airtable: 5 requests a second per base */
        .default_rate = 5.0,
        .default_page_size = 100,
        .full_scan_deletes = true,
        .build = at_changes_build,
        .parse = at_changes_parse,
        .cursor_now = at_cursor_now,
};
