/*
 * salesforce_changes — the Salesforce read side: SOQL over REST.
 *
 *   GET <base>/services/data/<ver>/queryAll?q=SELECT Id, <fields>, SystemModstamp, IsDeleted
 *       FROM <object> [WHERE SystemModstamp > T OR (SystemModstamp = T AND Id > 'X')]
 *       ORDER BY SystemModstamp, Id
 *   then GET <base><nextRecordsUrl> while "done" is false.
 *
 * queryAll (not query) so that deleted records (IsDeleted = true, in the recycle bin) come
 * too: they delete the row. The cursor is "<SystemModstamp>|<Id>" of the last record of a
 * page: the order is total, so the next query starts exactly after it, also when many records
 * share one SystemModstamp (it has whole seconds). At the end of a listing the cursor keeps
 * only the stamp ("T|", meaning SystemModstamp >= T): the next pass reads that last second
 * again, so a record changed twice within one second is not missed. The backfill is the same
 * query with no WHERE. totalSize (records the query matches) gives the backfill's total.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/changes.h"
#include "api/connector.h"
#include "api/json.h"

#define SF_SOQL_MAX 8192
#define SF_URL_MAX  (3 * SF_SOQL_MAX + 512)

struct sf_changes_priv {
	char api_version[16];
};

static bool sf_changes_configure(struct connector *c, const struct cf_kv *kv, int nkv, char *err,
                                 size_t errsize)
{
	const char *ver = api_kv_get(kv, nkv, "api_version");
	struct sf_changes_priv *p = calloc(1, sizeof(*p));

	if (p == NULL) {
		snprintf(err, errsize, "out of memory");
		return false;
	}
	/* already checked by the write side's configure */
	snprintf(p->api_version, sizeof(p->api_version), "%s", ver ? ver : "v59.0");
	c->changes_priv = p;
	return true;
}

static void sf_changes_release(struct connector *c)
{
	free(c->changes_priv);
	c->changes_priv = NULL;
}

/* A SOQL name: letters, digits, underscores (a custom field's __c included). */
static bool sf_name_ok(const char *s)
{
	if (s[0] == '\0' || strlen(s) > 80)
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && *s != '_')
			return false;
	return true;
}

/* "2024-05-01T10:00:00.000+0000" → "2024-05-01T10:00:00Z" (a SOQL dateTime literal). */
static bool sf_soql_time(const char *in, char *out, size_t size)
{
	double t;
	time_t secs;
	struct tm tm;

	if (!changes_parse_time(in, &t))
		return false;
	secs = (time_t)t;
	if (gmtime_r(&secs, &tm) == NULL)
		return false;
	return strftime(out, size, "%Y-%m-%dT%H:%M:%SZ", &tm) > 0;
}

static bool sf_append(char *buf, size_t size, size_t *len, const char *s)
{
	size_t n = strlen(s);

	if (*len + n + 1 > size)
		return false;
	memcpy(buf + *len, s, n + 1);
	*len += n;
	return true;
}

static bool sf_changes_build(const struct connector *c, const struct api_table *t,
                             const struct changes_req *req, struct api_http_spec *out,
                             struct api_error *err)
{
	const struct sf_changes_priv *p = c->changes_priv;
	char soql[SF_SOQL_MAX], when[40], id[40];
	size_t len = 0, ulen = 0;
	char *url = malloc(SF_URL_MAX);

	if (url == NULL) {
		api_error_set(err, API_ERR_INTERNAL, "out of memory");
		return false;
	}
	out->method = HTTP_GET;
	out->url = url;
	url[0] = '\0';
	if (req->next != NULL) {
		/* the API's own continuation: a path on the same host, nothing else */
		if (strncmp(req->next, "/services/data/", 15) != 0 || strlen(req->next) > 1024 ||
		    strpbrk(req->next, " \r\n#") != NULL) {
			api_error_set(err, API_ERR_BAD_ANSWER, "%s: unusable nextRecordsUrl",
			              c->name);
			return false;
		}
		snprintf(url, SF_URL_MAX, "%s%s", c->base_url, req->next);
		return true;
	}
	if (!sf_name_ok(t->object)) {
		api_error_set(err, API_ERR_VALIDATION, "%s: object=%.80s is not a Salesforce name",
		              c->name, t->object);
		return false;
	}
	soql[0] = '\0';
	if (!sf_append(soql, sizeof(soql), &len, "SELECT Id"))
		goto too_long;
	for (int i = 0; i < req->nfields; i++) {
		const char *f = req->fields[i];
		if (strcmp(f, "Id") == 0 || strcmp(f, "SystemModstamp") == 0 ||
		    strcmp(f, "IsDeleted") == 0)
			continue;
		if (!sf_name_ok(f)) {
			api_error_set(err, API_ERR_VALIDATION,
			              "%s: field %.80s is not a Salesforce name (set columns=)",
			              c->name, f);
			return false;
		}
		if (!sf_append(soql, sizeof(soql), &len, ", ") ||
		    !sf_append(soql, sizeof(soql), &len, f))
			goto too_long;
	}
	if (!sf_append(soql, sizeof(soql), &len, ", SystemModstamp, IsDeleted FROM ") ||
	    !sf_append(soql, sizeof(soql), &len, t->object))
		goto too_long;
	if (req->cursor != NULL && req->cursor[0] != '\0') {
		const char *bar = strchr(req->cursor, '|');
		char stamp[40];
		size_t slen = bar ? (size_t)(bar - req->cursor) : 0;

		if (bar == NULL || slen >= sizeof(stamp) || (bar[1] && !sf_name_ok(bar + 1)) ||
		    strlen(bar + 1) >= sizeof(id)) {
			api_error_set(err, API_ERR_INTERNAL, "%s: unusable stored cursor", c->name);
			return false;
		}
		memcpy(stamp, req->cursor, slen);
		stamp[slen] = '\0';
		snprintf(id, sizeof(id), "%s", bar + 1);
		if (!sf_soql_time(stamp, when, sizeof(when))) {
			api_error_set(err, API_ERR_INTERNAL, "%s: unusable stored cursor", c->name);
			return false;
		}
		if (!sf_append(soql, sizeof(soql), &len, " WHERE SystemModstamp > ") ||
		    !sf_append(soql, sizeof(soql), &len, when) ||
		    !sf_append(soql, sizeof(soql), &len, " OR (SystemModstamp = ") ||
		    !sf_append(soql, sizeof(soql), &len, when) ||
		    !sf_append(soql, sizeof(soql), &len, " AND Id > '") ||
		    !sf_append(soql, sizeof(soql), &len, id) ||
		    !sf_append(soql, sizeof(soql), &len, "')"))
			goto too_long;
	}
	if (!sf_append(soql, sizeof(soql), &len, " ORDER BY SystemModstamp, Id"))
		goto too_long;
	ulen = (size_t)snprintf(url, SF_URL_MAX, "%s/services/data/%s/queryAll?q=", c->base_url,
	                        p->api_version);
	if (ulen >= SF_URL_MAX || !api_url_escape(soql, url, SF_URL_MAX, &ulen))
		goto too_long;
	return true;
too_long:
	api_error_set(err, API_ERR_VALIDATION, "%s: the query is too long", c->name);
	return false;
}

static void sf_changes_parse(const struct connector *c, const struct api_table *t,
                             const struct changes_req *req, const struct http_response *resp,
                             struct changes_page *out)
{
	const struct json_value *recs, *done, *total;
	const char *next, *last_stamp = NULL, *last_id = NULL;
	char why[96];

	(void)t;
	(void)req;
	if (!json_parse(resp->body, resp->body_len, NULL, &out->doc, why, sizeof(why))) {
		api_error_set(&out->error, API_ERR_BAD_ANSWER, "%s: query answer: %s", c->name,
		              why);
		return;
	}
	recs = json_get(out->doc, "records");
	done = json_get(out->doc, "done");
	total = json_get(out->doc, "totalSize");
	next = json_get_string(out->doc, "nextRecordsUrl");
	if (recs == NULL || recs->kind != JSON_ARRAY || done == NULL || done->kind != JSON_BOOL) {
		api_error_set(&out->error, API_ERR_BAD_ANSWER,
		              "%s: query answer without records/done", c->name);
		return;
	}
	for (size_t i = 0; i < recs->count; i++) {
		const struct json_value *r = recs->items[i];
		const char *id = json_get_string(r, "Id");
		const char *stamp = json_get_string(r, "SystemModstamp");
		const struct json_value *del = json_get(r, "IsDeleted");
		double when;

		if (id == NULL || id[0] == '\0' || stamp == NULL ||
		    !changes_parse_time(stamp, &when)) {
			api_error_set(&out->error, API_ERR_BAD_ANSWER,
			              "%s: a record without Id or SystemModstamp", c->name);
			return;
		}
		if (!changes_page_add(out, id,
		                      del != NULL && del->kind == JSON_BOOL && del->boolean, r)) {
			api_error_set(&out->error, API_ERR_INTERNAL, "out of memory");
			return;
		}
		if (when > out->newest)
			out->newest = when;
		last_stamp = stamp;
		last_id = id;
	}
	if (total != NULL && total->kind == JSON_NUMBER && total->number >= 0)
		out->total = (int64_t)total->number;
	out->more = !done->boolean;
	if (out->more) {
		if (next == NULL) {
			api_error_set(&out->error, API_ERR_BAD_ANSWER,
			              "%s: done is false but there is no nextRecordsUrl", c->name);
			return;
		}
		out->next = strdup(next);
		if (out->next == NULL)
			goto oom;
	}
	if (last_id != NULL) {
		size_t n = strlen(last_stamp) + strlen(last_id) + 2;
		out->cursor = malloc(n);
		if (out->cursor == NULL)
			goto oom;
		/*
		 * Within a listing the cursor is the last record's stamp and Id, so a resumed
		 * listing neither skips nor repeats a record. At its end the Id is dropped: the next
		 * pass reads that whole second again, since SystemModstamp has whole seconds and a
		 * record changed again in the same second (or committed late within it) keeps a
		 * stamp that "Id > last" would pass over for good. Reading a record twice only
		 * writes its current state again.
		 */
		snprintf(out->cursor, n, "%s|%s", last_stamp, out->more ? last_id : "");
	}
	out->ok = true;
	return;
oom:
	api_error_set(&out->error, API_ERR_INTERNAL, "out of memory");
}

static bool sf_cursor_now(const struct connector *c, long long now, char *buf, size_t size)
{
	time_t t = (time_t)now;
	struct tm tm;

	(void)c;
	/* "Id > ''" takes every record of that second */
	return gmtime_r(&t, &tm) != NULL &&
	       strftime(buf, size, "%Y-%m-%dT%H:%M:%S.000+0000|", &tm) > 0;
}

static const char *const sf_changes_keys[] = {NULL};

const struct changes_ops salesforce_changes_ops = {
        .keys = sf_changes_keys,
        .configure = sf_changes_configure,
        .release = sf_changes_release,
        /* orgs get 100,000+ calls a day and 25 concurrent long requests: 5/s is a modest share */
        .default_rate = 5.0,
        .default_page_size = 2000,
        .build = sf_changes_build,
        .parse = sf_changes_parse,
        .cursor_now = sf_cursor_now,
};
