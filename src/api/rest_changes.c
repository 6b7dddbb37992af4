/*
 * rest_changes — the generic REST read side, configured on the [apis] line:
 *
 *   list_path=/contacts        the listing ("{object}" is replaced by the table's object=)
 *   changed_since=updated_since  query parameter that asks for records whose cursor field is at
 *                              or after a value (omitted on the backfill's first page)
 *   cursor_field=updated_at    the record member holding that value (a time or a counter,
 *                              growing with every change)
 *   deleted_field=deleted      a member that is true on deleted records (optional)
 *   list_key=records           where the records are in the answer (default: the answer is
 *                              the array itself)
 *   limit_param=limit          query parameter for the page size (default limit)
 *
 *   GET <base><list_path>?<changed_since>=<cursor>&<limit_param>=N
 *
 * The API must answer records in ascending order of the cursor field. The cursor is the last
 * record's value; the next request asks from it again, so records that share the boundary
 * value are applied twice (the same image: harmless). A full page means more follow. A full
 * page whose records all carry the value asked with cannot be got past: that is an error,
 * with the hint to raise page_size.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/changes.h"
#include "api/connector.h"
#include "api/json.h"

#define REST_LIST_URL_MAX 4096

struct rest_changes_priv {
	char list_path[512];
	char changed_since[64];
	char cursor_field[128];
	char deleted_field[128];
	char list_key[128];
	char limit_param[64];
	char id_field[128];
};

static bool rest_changes_name_ok(const char *s)
{
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '_' || *s == '-' || *s == '.' ||
		      *s == '[' || *s == ']'))
			return false;
	return true;
}

static bool rest_changes_configure(struct connector *c, const struct cf_kv *kv, int nkv, char *err,
                                   size_t errsize)
{
	static const char *const names[] = {"changed_since", "limit_param"};
	const char *lp = api_kv_get(kv, nkv, "list_path");
	const char *cs = api_kv_get(kv, nkv, "changed_since");
	const char *cf = api_kv_get(kv, nkv, "cursor_field");
	const char *df = api_kv_get(kv, nkv, "deleted_field");
	const char *lk = api_kv_get(kv, nkv, "list_key");
	const char *lim = api_kv_get(kv, nkv, "limit_param");
	const char *idf = api_kv_get(kv, nkv, "id_field");
	struct rest_changes_priv *p;

	if (lp == NULL)
		return true; /* not syncable: writes only */
	if (lp[0] != '/' || strlen(lp) >= sizeof(p->list_path) || strpbrk(lp, " \r\n\t#?")) {
		snprintf(err, errsize, "api \"%s\": list_path= must be a path starting with /",
		         c->name);
		return false;
	}
	if (cs == NULL || cf == NULL) {
		snprintf(err, errsize,
		         "api \"%s\": list_path= needs changed_since= and cursor_field= too",
		         c->name);
		return false;
	}
	for (int i = 0; i < 2; i++) {
		const char *v = i == 0 ? cs : lim;
		if (v != NULL && (v[0] == '\0' || strlen(v) >= 64 || !rest_changes_name_ok(v))) {
			snprintf(err, errsize, "api \"%s\": %s=%.40s is not a query parameter name",
			         c->name, names[i], v);
			return false;
		}
	}
	p = calloc(1, sizeof(*p));
	if (p == NULL) {
		snprintf(err, errsize, "out of memory");
		return false;
	}
	snprintf(p->list_path, sizeof(p->list_path), "%s", lp);
	snprintf(p->changed_since, sizeof(p->changed_since), "%s", cs);
	snprintf(p->cursor_field, sizeof(p->cursor_field), "%s", cf);
	snprintf(p->deleted_field, sizeof(p->deleted_field), "%s", df ? df : "");
	snprintf(p->list_key, sizeof(p->list_key), "%s", lk ? lk : "");
	snprintf(p->limit_param, sizeof(p->limit_param), "%s", lim ? lim : "limit");
	snprintf(p->id_field, sizeof(p->id_field), "%s", idf && idf[0] ? idf : "id");
	c->changes_priv = p;
	return true;
}

static void rest_changes_release(struct connector *c)
{
	free(c->changes_priv);
	c->changes_priv = NULL;
}

static bool rest_changes_build(const struct connector *c, const struct api_table *t,
                               const struct changes_req *req, struct api_http_spec *out,
                               struct api_error *err)
{
	const struct rest_changes_priv *p = c->changes_priv;
	char path[1024];
	const char *obj = strstr(p ? p->list_path : "", "{object}");
	size_t used;
	char *url;

	if (p == NULL) {
		api_error_set(err, API_ERR_INTERNAL,
		              "%s: no list_path= on the [apis] line: the table cannot be synced",
		              c->name);
		return false;
	}
	if (obj != NULL)
		snprintf(path, sizeof(path), "%.*s%s%s", (int)(obj - p->list_path), p->list_path,
		         t->object, obj + 8);
	else
		snprintf(path, sizeof(path), "%s", p->list_path);
	url = malloc(REST_LIST_URL_MAX);
	if (url == NULL) {
		api_error_set(err, API_ERR_INTERNAL, "out of memory");
		return false;
	}
	out->method = HTTP_GET;
	out->url = url;
	used = (size_t)snprintf(url, REST_LIST_URL_MAX, "%s%s%s%s=%d", c->base_url, path,
	                        strchr(path, '?') ? "&" : "?", p->limit_param,
	                        req->page_size > 0 ? req->page_size : 100);
	if (used >= REST_LIST_URL_MAX)
		goto too_long;
	if (req->cursor != NULL && req->cursor[0] != '\0') {
		used += (size_t)snprintf(url + used, REST_LIST_URL_MAX - used,
		                         "&%s=", p->changed_since);
		if (used >= REST_LIST_URL_MAX ||
		    !api_url_escape(req->cursor, url, REST_LIST_URL_MAX, &used))
			goto too_long;
	}
	return true;
too_long:
	api_error_set(err, API_ERR_INTERNAL, "%s: the list URL is too long", c->name);
	return false;
}

static void rest_changes_parse(const struct connector *c, const struct api_table *t,
                               const struct changes_req *req, const struct http_response *resp,
                               struct changes_page *out)
{
	const struct rest_changes_priv *p = c->changes_priv;
	const struct json_value *list;
	char *last = NULL;
	char why[96];
	bool same = true, ok;

	(void)t;
	if (!json_parse(resp->body, resp->body_len, NULL, &out->doc, why, sizeof(why))) {
		api_error_set(&out->error, API_ERR_BAD_ANSWER, "%s: list answer: %s", c->name, why);
		return;
	}
	list = p->list_key[0] ? json_get(out->doc, p->list_key) : out->doc;
	if (list == NULL || list->kind != JSON_ARRAY) {
		api_error_set(&out->error, API_ERR_BAD_ANSWER, "%s: the list answer has no %s%s",
		              c->name, p->list_key[0] ? p->list_key : "array",
		              p->list_key[0] ? " array" : "");
		return;
	}
	for (size_t i = 0; i < list->count; i++) {
		const struct json_value *r = list->items[i];
		const struct json_value *idv = json_get(r, p->id_field);
		const struct json_value *cv = json_get(r, p->cursor_field);
		const struct json_value *del =
		        p->deleted_field[0] ? json_get(r, p->deleted_field) : NULL;
		double when;

		if (idv == NULL || (idv->kind != JSON_STRING && idv->kind != JSON_NUMBER) ||
		    idv->str == NULL || idv->str[0] == '\0' || cv == NULL ||
		    (cv->kind != JSON_STRING && cv->kind != JSON_NUMBER)) {
			api_error_set(&out->error, API_ERR_BAD_ANSWER,
			              "%s: a record without %s or %s", c->name, p->id_field,
			              p->cursor_field);
			free(last);
			return;
		}
		if (!changes_page_add(out, idv->str,
		                      del != NULL && del->kind == JSON_BOOL && del->boolean, r))
			goto oom;
		if (cv->kind == JSON_STRING && changes_parse_time(cv->str, &when) &&
		    when > out->newest)
			out->newest = when;
		free(last);
		last = api_value_text(cv, &ok);
		if (last == NULL)
			goto oom;
		if (req->cursor == NULL || strcmp(last, req->cursor) != 0)
			same = false;
	}
	out->more = (int)list->count >= (req->page_size > 0 ? req->page_size : 100);
	if (out->more && same) {
		api_error_set(&out->error, API_ERR_BAD_ANSWER,
		              "%s: a whole page of records share %s=%.100s; raise page_size",
		              c->name, p->cursor_field, last ? last : "");
		free(last);
		return;
	}
	out->cursor = last;
	out->ok = true;
	return;
oom:
	free(last);
	api_error_set(&out->error, API_ERR_INTERNAL, "out of memory");
}

/* A time: rest APIs whose cursor field is a counter cannot start "from now" (backfill=auto). */
static bool rest_cursor_now(const struct connector *c, long long now, char *buf, size_t size)
{
	time_t t = (time_t)now;
	struct tm tm;

	(void)c;
	return gmtime_r(&t, &tm) != NULL && strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm) > 0;
}

static const char *const rest_changes_keys[] = {
        "list_path", "changed_since", "cursor_field", "deleted_field",
        "list_key",  "limit_param",   NULL,
};

const struct changes_ops rest_changes_ops = {
        .keys = rest_changes_keys,
        .configure = rest_changes_configure,
        .release = rest_changes_release,
        .default_rate = 10.0,
        .default_page_size = 100,
        .build = rest_changes_build,
        .parse = rest_changes_parse,
        .cursor_now = rest_cursor_now,
};
