/*
 * stripe_changes — the Stripe read side: the object list for the backfill, /v1/events for
 * changes.
 *
 * Stripe lists newest first. The cursor text says where we are:
 *   ""               nothing loaded: ask GET /v1/events?limit=1 (the object's types) for the
 *                    newest event, the anchor, so that changes made during the backfill are
 *                    replayed after it
 *   "n|"             the same anchor, then straight to the events (backfill=off)
 *   "b|<anchor>|<id>" backfilling: GET /v1/<object>?limit=N&starting_after=<id> (older and
 *                    older objects; <id> empty on the first page); when has_more is false the
 *                    cursor becomes "e|<anchor>"
 *   "e|<event id>"   polling: GET /v1/events?types[]=<type>.created/.updated/.deleted
 *                    &ending_before=<event id>&limit=N, i.e. the N events just newer than the
 *                    cursor, which are applied oldest first; has_more: more newer ones follow.
 * A "<type>.deleted" event deletes the row; every other event upserts data.object.
 * The event type is the object's name without its plural s (customers → customer;
 * subscriptions → customer.subscription).
 * Events are kept 30 days: a table whose cursor is older needs SYNC BACKFILL.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/changes.h"
#include "api/connector.h"
#include "api/json.h"

#define STRIPE_URL_MAX 2048
#define STRIPE_ID_MAX  256

/* An object or event id: letters, digits, underscores. */
static bool stripe_id_ok(const char *s, size_t len)
{
	if (len >= STRIPE_ID_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		char ch = s[i];
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '_'))
			return false;
	}
	return true;
}

/* customers → customer; subscriptions → customer.subscription (Stripe's own name). */
static void stripe_event_type(const char *object, char *buf, size_t size)
{
	size_t n = strlen(object);

	if (strcmp(object, "subscriptions") == 0) {
		snprintf(buf, size, "customer.subscription");
		return;
	}
	if (n > 1 && object[n - 1] == 's')
		n--;
	snprintf(buf, size, "%.*s", (int)n, object);
}

static bool stripe_events_url(const struct connector *c, const struct api_table *t,
                              const char *ending_before, int limit, char *url, size_t size)
{
	char type[128];
	int n;

	stripe_event_type(t->object, type, sizeof(type));
	n = snprintf(url, size,
	             "%s/v1/events?limit=%d&types%%5B%%5D=%s.created&types%%5B%%5D=%s.updated"
	             "&types%%5B%%5D=%s.deleted%s%s",
	             c->base_url, limit, type, type, type, ending_before ? "&ending_before=" : "",
	             ending_before ? ending_before : "");
	return n > 0 && (size_t)n < size;
}

static bool stripe_changes_build(const struct connector *c, const struct api_table *t,
                                 const struct changes_req *req, struct api_http_spec *out,
                                 struct api_error *err)
{
	const char *cur = req->cursor ? req->cursor : "";
	int limit = req->page_size > 100 || req->page_size < 1 ? 100 : req->page_size;
	char *url = malloc(STRIPE_URL_MAX);
	bool ok = false;

	if (url == NULL) {
		api_error_set(err, API_ERR_INTERNAL, "out of memory");
		return false;
	}
	out->method = HTTP_GET;
	out->url = url;
	if (!stripe_id_ok(t->object, strlen(t->object)) || t->object[0] == '\0') {
		api_error_set(err, API_ERR_VALIDATION, "%s: object=%.80s is not a Stripe resource",
		              c->name, t->object);
		return false;
	}
	if (cur[0] == '\0' || strcmp(cur, "n|") == 0) {
		ok = stripe_events_url(c, t, NULL, 1, url, STRIPE_URL_MAX);
	} else if (strncmp(cur, "b|", 2) == 0) {
		const char *bar = strchr(cur + 2, '|');
		if (bar != NULL && stripe_id_ok(bar + 1, strlen(bar + 1))) {
			int n = snprintf(url, STRIPE_URL_MAX, "%s/v1/%s?limit=%d%s%s", c->base_url,
			                 t->object, limit, bar[1] ? "&starting_after=" : "",
			                 bar + 1);
			ok = n > 0 && n < STRIPE_URL_MAX;
		}
	} else if (strncmp(cur, "e|", 2) == 0 && stripe_id_ok(cur + 2, strlen(cur + 2))) {
		ok = stripe_events_url(c, t, cur[2] ? cur + 2 : NULL, limit, url, STRIPE_URL_MAX);
	}
	if (!ok)
		api_error_set(err, API_ERR_INTERNAL, "%s: unusable stored cursor", c->name);
	return ok;
}

static char *stripe_join(const char *a, const char *b, size_t blen, const char *c)
{
	size_t n = strlen(a) + blen + (c ? strlen(c) + 1 : 0) + 1;
	char *s = malloc(n);

	if (s != NULL)
		snprintf(s, n, "%s%.*s%s%s", a, (int)blen, b, c ? "|" : "", c ? c : "");
	return s;
}

static void stripe_changes_parse(const struct connector *c, const struct api_table *t,
                                 const struct changes_req *req, const struct http_response *resp,
                                 struct changes_page *out)
{
	const char *cur = req->cursor ? req->cursor : "";
	const struct json_value *data, *more;
	char why[96], type[128], deleted[160];

	if (!json_parse(resp->body, resp->body_len, NULL, &out->doc, why, sizeof(why))) {
		api_error_set(&out->error, API_ERR_BAD_ANSWER, "%s: list answer: %s", c->name, why);
		return;
	}
	data = json_get(out->doc, "data");
	more = json_get(out->doc, "has_more");
	if (data == NULL || data->kind != JSON_ARRAY || more == NULL || more->kind != JSON_BOOL) {
		api_error_set(&out->error, API_ERR_BAD_ANSWER,
		              "%s: list answer without data/has_more", c->name);
		return;
	}
	for (size_t i = 0; i < data->count; i++) {
		const char *id = json_get_string(data->items[i], "id");
		if (id == NULL || !stripe_id_ok(id, strlen(id)) || id[0] == '\0') {
			api_error_set(&out->error, API_ERR_BAD_ANSWER, "%s: an item without id",
			              c->name);
			return;
		}
	}
	if (cur[0] == '\0' || strcmp(cur, "n|") == 0) {
		/* the anchor: the newest event now, or none; then the listing, unless from now on
		 */
		const char *anchor = data->count > 0 ? json_get_string(data->items[0], "id") : "";
		if (cur[0] == '\0')
			out->cursor = stripe_join("b|", anchor, strlen(anchor), "");
		else
			out->cursor = stripe_join("e|", anchor, strlen(anchor), NULL);
		out->more = cur[0] == '\0';
		goto done;
	}
	if (strncmp(cur, "b|", 2) == 0) {
		const char *bar = strchr(cur + 2, '|');
		const char *last = NULL;
		for (size_t i = 0; i < data->count; i++) {
			const struct json_value *o = data->items[i];
			const struct json_value *created = json_get(o, "created");
			last = json_get_string(o, "id");
			if (!changes_page_add(out, last, false, o))
				goto oom;
			if (created != NULL && created->kind == JSON_NUMBER &&
			    created->number > out->newest)
				out->newest = created->number;
		}
		out->more = more->boolean && last != NULL;
		if (out->more)
			out->cursor = stripe_join("b|", cur + 2, (size_t)(bar - (cur + 2)), last);
		else
			out->cursor = stripe_join("e|", cur + 2, (size_t)(bar - (cur + 2)), NULL);
		goto done;
	}
	/* events, newest first: applied oldest first */
	stripe_event_type(t->object, type, sizeof(type));
	snprintf(deleted, sizeof(deleted), "%s.deleted", type);
	for (size_t i = data->count; i-- > 0;) {
		const struct json_value *ev = data->items[i];
		const struct json_value *obj = json_get(json_get(ev, "data"), "object");
		const struct json_value *created = json_get(ev, "created");
		const char *etype = json_get_string(ev, "type");
		const char *oid = json_get_string(obj, "id");

		if (etype == NULL || oid == NULL || oid[0] == '\0' || obj->kind != JSON_OBJECT) {
			api_error_set(&out->error, API_ERR_BAD_ANSWER,
			              "%s: an event without type or data.object.id", c->name);
			return;
		}
		if (!changes_page_add(out, oid, strcmp(etype, deleted) == 0, obj))
			goto oom;
		if (created != NULL && created->kind == JSON_NUMBER &&
		    created->number > out->newest)
			out->newest = created->number;
	}
	if (data->count > 0) {
		const char *newest = json_get_string(data->items[0], "id");
		out->cursor = stripe_join("e|", newest, strlen(newest), NULL);
	}
	/* without an anchor the newest page is all there is to see; older events are gone */
	out->more = more->boolean && cur[2] != '\0' && data->count > 0;
done:
	if (out->cursor == NULL && (cur[0] == '\0' || cur[0] == 'n' || strncmp(cur, "b|", 2) == 0))
		goto oom;
	out->ok = true;
	return;
oom:
	api_error_set(&out->error, API_ERR_INTERNAL, "out of memory");
}

/* "n|": the newest event alone, as the anchor of the events that follow (no listing). */
static bool stripe_cursor_now(const struct connector *c, long long now, char *buf, size_t size)
{
	(void)c;
	(void)now;
	return (size_t)snprintf(buf, size, "n|") < size;
}

static const char *const stripe_changes_keys[] = {NULL};

const struct changes_ops stripe_changes_ops = {
        .keys = stripe_changes_keys,
        .configure = NULL,
        .release = NULL,
        /* Stripe's documented limit in live mode is 100 reads per second (25 in test mode) */
        .default_rate = 25.0,
        .default_page_size = 100,
        .build = stripe_changes_build,
        .parse = stripe_changes_parse,
        .cursor_now = stripe_cursor_now,
};
