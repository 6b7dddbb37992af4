/*
 * connector — the shared half of every connector: creation from an [apis] line, table mappings,
 * name conventions, result bookkeeping, and the mapping of non-answers to error classes.
 * The per-API halves live in salesforce.c and rest.c.
 *
 * Invariants: every string written into a fixed buffer is truncated, never overflowed; a
 * connector_parse_response() result is either ok with exactly nrows rows or carries an error.
 */
#include "api/connector.h"
#include "api/changes.h"
#include "api/json.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>
#include <time.h>

static const struct connector_ops *const connector_types[] = {
        &salesforce_connector_ops, &rest_connector_ops,     &stripe_connector_ops,
        &hubspot_connector_ops,    &airtable_connector_ops,
};

/* Keys every [apis] line may carry; the api module reads most of them. */
static const char *const connector_common_keys[] = {
        "type",          "base_url",      "auth",          "token",       "token_url",
        "client_id",     "client_secret", "refresh_token", "timeout",     "deadline",
        "max_in_flight", "ca_file",       "max_batch",     "auth_header", "rate_limit",
        "sync_budget",   NULL,
};

const char *api_op_str(enum api_op op)
{
	switch (op) {
	case API_OP_INSERT:
		return "insert";
	case API_OP_UPDATE:
		return "update";
	case API_OP_DELETE:
		return "delete";
	}
	return "?";
}

const char *api_value_type_str(enum api_value_type t)
{
	switch (t) {
	case API_VALUE_TEXT:
		return "text";
	case API_VALUE_NUMBER:
		return "number";
	case API_VALUE_BOOL:
		return "bool";
	case API_VALUE_JSON:
		return "json";
	}
	return "?";
}

const char *api_error_class_str(enum api_error_class c)
{
	switch (c) {
	case API_ERR_NONE:
		return "none";
	case API_ERR_VALIDATION:
		return "validation";
	case API_ERR_REQUIRED:
		return "required field missing";
	case API_ERR_DUPLICATE:
		return "duplicate";
	case API_ERR_AUTH:
		return "authentication";
	case API_ERR_PERMISSION:
		return "permission";
	case API_ERR_RATE_LIMIT:
		return "rate limit";
	case API_ERR_NOT_FOUND:
		return "not found";
	case API_ERR_UNAVAILABLE:
		return "unavailable";
	case API_ERR_SERVER:
		return "server error";
	case API_ERR_UNKNOWN_OUTCOME:
		return "unknown outcome";
	case API_ERR_BAD_ANSWER:
		return "bad answer";
	case API_ERR_TOO_MANY_ROWS:
		return "too many rows";
	case API_ERR_TOO_LARGE:
		return "too large";
	case API_ERR_ASSIGNED_ID:
		return "assigned id";
	case API_ERR_INTERNAL:
		return "internal";
	}
	return "?";
}

void api_error_from_json_out(struct api_error *e, const char *api, const struct json_out *o)
{
	if (o->too_large)
		api_error_set(e, API_ERR_TOO_LARGE,
		              "The request to %s would be larger than syncbouncer's limit of %zu "
		              "bytes; nothing was sent.",
		              api, o->max);
	else
		api_error_set(e, API_ERR_VALIDATION, "%s: cannot encode the records: %s", api,
		              o->error[0] ? o->error : "JSON error");
}

void api_error_set(struct api_error *e, enum api_error_class cls, const char *fmt, ...)
{
	va_list ap;

	memset(e, 0, sizeof(*e));
	e->cls = cls;
	e->retry_after = -1;
	e->row = -1;
	va_start(ap, fmt);
	vsnprintf(e->message, sizeof(e->message), fmt, ap);
	va_end(ap);
}

/* ---- results ---- */

void api_result_init(struct api_result *r)
{
	memset(r, 0, sizeof(*r));
	r->error.retry_after = -1;
	r->error.row = -1;
}

void api_result_free(struct api_result *r)
{
	int i, j;

	for (i = 0; i < r->nrows; i++) {
		for (j = 0; j < r->rows[i].nfields; j++) {
			free(r->rows[i].fields[j].column);
			free(r->rows[i].fields[j].field);
			free(r->rows[i].fields[j].value);
		}
		free(r->rows[i].fields);
		free(r->rows[i].id);
	}
	free(r->rows);
	free(r->gone);
	api_result_init(r);
}

void api_result_move(struct api_result *dst, struct api_result *src)
{
	api_result_free(dst);
	*dst = *src;
	api_result_init(src);
}

void api_random_key(char *key, size_t size)
{
	static const char hex[] = "0123456789abcdef";
	static uint64_t counter;
	unsigned char raw[16];
	size_t i;

	if (getrandom(raw, sizeof(raw), GRND_NONBLOCK) != (ssize_t)sizeof(raw)) {
		/* no entropy yet (early boot): unique within this process is what matters */
		struct timespec ts;
		uint64_t a, b;

		clock_gettime(CLOCK_REALTIME, &ts);
		a = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
		b = ++counter ^ ((uint64_t)getpid() << 32);
		memcpy(raw, &a, 8);
		memcpy(raw + 8, &b, 8);
	}
	if (size <= strlen(API_KEY_PREFIX)) {
		if (size > 0)
			key[0] = '\0';
		return;
	}
	memcpy(key, API_KEY_PREFIX, strlen(API_KEY_PREFIX));
	key += strlen(API_KEY_PREFIX);
	size -= strlen(API_KEY_PREFIX);
	for (i = 0; i < sizeof(raw) && 2 * i + 2 < size; i++) {
		key[2 * i] = hex[raw[i] >> 4];
		key[2 * i + 1] = hex[raw[i] & 15];
	}
	key[2 * i] = '\0';
}

bool api_key_in_record(const char *key)
{
	return key != NULL && strncmp(key, API_KEY_PREFIX, strlen(API_KEY_PREFIX)) == 0 &&
	       key[strlen(API_KEY_PREFIX)] != '\0';
}

void api_http_spec_free(struct api_http_spec *s)
{
	free(s->url);
	free(s->body);
	memset(s, 0, sizeof(*s));
}

/* ---- kv and tables ---- */

const char *api_kv_get(const struct cf_kv *kv, int nkv, const char *key)
{
	const char *v = NULL;
	int i;

	for (i = 0; i < nkv; i++) {
		if (strcmp(kv[i].key, key) == 0)
			v = kv[i].value;
	}
	return v;
}

void api_table_free(struct api_table *t)
{
	int i;

	free(t->name);
	free(t->object);
	free(t->pk_column);
	for (i = 0; i < t->noverrides; i++) {
		free(t->overrides[i].column);
		free(t->overrides[i].field);
	}
	free(t->overrides);
	for (i = 0; i < t->nreadonly; i++)
		free(t->readonly[i]);
	free(t->readonly);
	free(t->external_id);
	memset(t, 0, sizeof(*t));
}

static bool api_name_is_sane(const char *s, size_t len)
{
	size_t i;

	if (len == 0 || len >= 128)
		return false;
	for (i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (!(isalnum(ch) || ch == '_' || ch == '.' || ch == '-' || ch >= 0x80))
			return false;
	}
	return true;
}

/*
 * An API field name: any printable text (Airtable's "First Name", Stripe's "metadata[plan]"),
 * since it only ever travels escaped (JSON, URL encoding).
 */
static bool api_field_is_sane(const char *s, size_t len)
{
	size_t i;

	if (len == 0 || len >= 128 || s[0] == ' ' || s[len - 1] == ' ')
		return false;
	for (i = 0; i < len; i++) {
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return false;
	}
	return true;
}

/* Splits "a:B, c:D" or "a,b" (with_field false) into the table's lists. */
static bool api_table_parse_list(struct api_table *t, const char *text, bool with_field, char *err,
                                 size_t errsize)
{
	const char *p = text;

	while (*p != '\0') {
		const char *start, *end, *colon;
		size_t len;

		while (*p == ' ' || *p == ',')
			p++;
		if (*p == '\0')
			break;
		start = p;
		while (*p != '\0' && *p != ',')
			p++;
		end = p;
		while (end > start && end[-1] == ' ')
			end--;
		len = (size_t)(end - start);
		if (!with_field) {
			char **n;
			if (!api_name_is_sane(start, len))
				goto bad;
			n = realloc(t->readonly, (size_t)(t->nreadonly + 1) * sizeof(*n));
			if (n == NULL)
				goto oom;
			t->readonly = n;
			if ((n[t->nreadonly] = strndup(start, len)) == NULL)
				goto oom;
			t->nreadonly++;
			continue;
		}
		colon = memchr(start, ':', len);
		if (colon == NULL || !api_name_is_sane(start, (size_t)(colon - start)) ||
		    !api_field_is_sane(colon + 1, (size_t)(end - colon - 1)))
			goto bad;
		struct api_column_map *m =
		        realloc(t->overrides, (size_t)(t->noverrides + 1) * sizeof(*m));
		if (m == NULL)
			goto oom;
		t->overrides = m;
		m[t->noverrides].column = strndup(start, (size_t)(colon - start));
		m[t->noverrides].field = strndup(colon + 1, (size_t)(end - colon - 1));
		t->noverrides++;
		if (m[t->noverrides - 1].column == NULL || m[t->noverrides - 1].field == NULL)
			goto oom;
	}
	return true;
bad:
	snprintf(err, errsize, "%s: malformed %s list near \"%.40s\"", t->name,
	         with_field ? "columns=" : "readonly=", text);
	return false;
oom:
	snprintf(err, errsize, "out of memory");
	return false;
}

bool api_table_init(struct api_table *t, const char *name, const struct cf_kv *kv, int nkv,
                    char *err, size_t errsize)
{
	const char *object = api_kv_get(kv, nkv, "object");
	const char *pk = api_kv_get(kv, nkv, "primary_key");
	const char *cols = api_kv_get(kv, nkv, "columns");
	const char *ro = api_kv_get(kv, nkv, "readonly");
	const char *ext = api_kv_get(kv, nkv, "external_id");

	memset(t, 0, sizeof(*t));
	t->name = strdup(name);
	t->object = strdup(object ? object : "");
	t->pk_column = strdup(pk && pk[0] ? pk : "id");
	if (t->name == NULL || t->object == NULL || t->pk_column == NULL) {
		snprintf(err, errsize, "out of memory");
		goto failed;
	}
	if (t->object[0] != '\0' && !api_field_is_sane(t->object, strlen(t->object))) {
		snprintf(err, errsize, "%s: object=%.60s is not a valid object name", name,
		         t->object);
		goto failed;
	}
	if (!api_name_is_sane(t->pk_column, strlen(t->pk_column))) {
		snprintf(err, errsize, "%s: primary_key=%.60s is not a valid column name", name,
		         t->pk_column);
		goto failed;
	}
	if (cols != NULL && !api_table_parse_list(t, cols, true, err, errsize))
		goto failed;
	if (ro != NULL && !api_table_parse_list(t, ro, false, err, errsize))
		goto failed;
	if (ext != NULL) {
		if (!api_name_is_sane(ext, strlen(ext)) || strcmp(ext, t->pk_column) == 0) {
			snprintf(err, errsize,
			         "%s: external_id=%.60s is not a column name other than the primary"
			         " key",
			         name, ext);
			goto failed;
		}
		t->external_id = strdup(ext);
		if (t->external_id == NULL) {
			snprintf(err, errsize, "out of memory");
			goto failed;
		}
	}
	return true;
failed:
	api_table_free(t);
	return false;
}

bool api_table_is_readonly(const struct api_table *t, const char *column)
{
	int i;

	for (i = 0; i < t->nreadonly; i++) {
		if (strcmp(t->readonly[i], column) == 0)
			return true;
	}
	return false;
}

/* ---- names ---- */

void api_snake_to_pascal(const char *in, char *buf, size_t size)
{
	size_t o = 0;
	bool up = true;

	if (size == 0)
		return;
	/* A "__c"-style suffix is Salesforce's custom field marker: kept as written. */
	for (; *in != '\0' && o + 1 < size; in++) {
		if (*in == '_' && in[1] == '_') {
			while (*in != '\0' && o + 1 < size)
				buf[o++] = *in++;
			break;
		}
		if (*in == '_') {
			up = true;
			continue;
		}
		buf[o++] = up ? (char)toupper((unsigned char)*in) : *in;
		up = false;
	}
	buf[o] = '\0';
}

void api_pascal_to_snake(const char *in, char *buf, size_t size)
{
	size_t o = 0;
	const char *start = in;

	if (size == 0)
		return;
	for (; *in != '\0' && o + 1 < size; in++) {
		if (*in == '_' && in[1] == '_') {
			while (*in != '\0' && o + 1 < size)
				buf[o++] = (char)tolower((unsigned char)*in++);
			break;
		}
		if (isupper((unsigned char)*in)) {
			/* a word starts: FirstName, not inside an acronym run like "URL" */
			bool prev_lower = in > start && (islower((unsigned char)in[-1]) ||
			                                 isdigit((unsigned char)in[-1]));
			bool acronym_end = in > start && isupper((unsigned char)in[-1]) &&
			                   islower((unsigned char)in[1]);
			if ((prev_lower || acronym_end) && o + 2 < size)
				buf[o++] = '_';
			buf[o++] = (char)tolower((unsigned char)*in);
		} else {
			buf[o++] = *in;
		}
	}
	buf[o] = '\0';
}

void connector_field_name(const struct connector *c, const struct api_table *t, const char *column,
                          char *buf, size_t size)
{
	int i;

	for (i = 0; t != NULL && i < t->noverrides; i++) {
		if (strcmp(t->overrides[i].column, column) == 0) {
			snprintf(buf, size, "%s", t->overrides[i].field);
			return;
		}
	}
	c->ops->field_name(c, column, buf, size);
}

void connector_column_name(const struct connector *c, const struct api_table *t, const char *field,
                           char *buf, size_t size)
{
	int i;

	for (i = 0; t != NULL && i < t->noverrides; i++) {
		if (strcmp(t->overrides[i].field, field) == 0) {
			snprintf(buf, size, "%s", t->overrides[i].column);
			return;
		}
	}
	c->ops->column_name(c, field, buf, size);
}

bool connector_result_field(const struct connector *c, const struct api_table *t,
                            const char *field, const struct json_value *v,
                            struct api_field_value *f)
{
	char col[128];
	bool ok;

	f->value = api_value_text(v, &ok);
	f->json = v->kind != JSON_STRING && v->kind != JSON_NULL;
	connector_column_name(c, t, field, col, sizeof(col));
	f->field = strdup(field);
	f->column = strdup(col);
	return ok && f->field != NULL && f->column != NULL;
}

/* A row of out (out->rows of one), or NULL with out saying it is out of memory. */
static struct api_row_result *result_one_row(struct api_result *out)
{
	out->rows = calloc(1, sizeof(*out->rows));
	if (out->rows == NULL) {
		api_error_set(&out->error, API_ERR_INTERNAL, "out of memory");
		return NULL;
	}
	out->nrows = 1;
	return &out->rows[0];
}

static void result_one_done(struct api_result *out, bool copied)
{
	if (copied) {
		out->ok = true;
		return;
	}
	api_result_free(out);
	api_error_set(&out->error, API_ERR_INTERNAL, "out of memory");
}

void connector_result_one(const struct connector *c, const struct api_table *t,
                          const struct json_value *rec, connector_copy_fn copy,
                          struct api_result *out)
{
	struct api_row_result *rr = result_one_row(out);

	if (rr != NULL)
		result_one_done(out, copy(c, t, rec, rr));
}

void connector_result_object(const struct connector *c, const struct api_table *t, const char *id,
                             const struct json_value *obj, const char *skip,
                             struct api_result *out)
{
	struct api_row_result *rr = result_one_row(out);
	bool ok;

	if (rr == NULL)
		return;
	rr->id = strdup(id);
	rr->fields = calloc(obj->count ? obj->count : 1, sizeof(*rr->fields));
	ok = rr->id != NULL && rr->fields != NULL;
	for (size_t i = 0; ok && i < obj->count; i++) {
		if (skip != NULL && strcmp(obj->keys[i], skip) == 0)
			continue;
		/* nested values (metadata, address, ...) as JSON text, for json/jsonb columns */
		ok = connector_result_field(c, t, obj->keys[i], obj->items[i],
		                            &rr->fields[rr->nfields++]);
	}
	result_one_done(out, ok);
}

bool api_url_escape(const char *s, char *buf, size_t size, size_t *used)
{
	static const char hex[] = "0123456789ABCDEF";

	for (; *s != '\0'; s++) {
		unsigned char ch = (unsigned char)*s;
		if (isalnum(ch) || ch == '-' || ch == '_' || ch == '.' || ch == '~') {
			if (*used + 2 > size)
				return false;
			buf[(*used)++] = (char)ch;
		} else {
			if (*used + 4 > size)
				return false;
			buf[(*used)++] = '%';
			buf[(*used)++] = hex[ch >> 4];
			buf[(*used)++] = hex[ch & 15];
		}
	}
	if (*used >= size)
		return false;
	buf[*used] = '\0';
	return true;
}

bool api_url_escape_segment(const char *s, char *buf, size_t size, size_t *used)
{
	if (strcmp(s, ".") != 0 && strcmp(s, "..") != 0)
		return api_url_escape(s, buf, size, used);
	for (; *s != '\0'; s++) {
		if (*used + 4 > size)
			return false;
		memcpy(buf + *used, "%2E", 3);
		*used += 3;
	}
	buf[*used] = '\0';
	return true;
}

char *api_url_join(const char *const *segs, int nsegs, const char *fmt, ...)
{
	va_list ap;
	size_t size, used;
	char *url;
	int n, i;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return NULL;
	size = (size_t)n + 1;
	for (i = 0; i < nsegs; i++)
		size += 3 * strlen(segs[i]) + 4; /* every byte encoded, the '/', room to check */
	url = malloc(size);
	if (url == NULL)
		return NULL;
	va_start(ap, fmt);
	used = (size_t)vsnprintf(url, size, fmt, ap);
	va_end(ap);
	for (i = 0; i < nsegs; i++) {
		if (i > 0) {
			url[used++] = '/';
			url[used] = '\0';
		}
		if (!api_url_escape_segment(segs[i], url, size, &used)) {
			free(url);
			return NULL;
		}
	}
	return url;
}

/* ---- rows ---- */

const struct api_value *api_image_get(const struct api_row_image *img, const char *column)
{
	int i;

	for (i = 0; i < img->nvalues; i++) {
		if (strcmp(img->values[i].column, column) == 0)
			return &img->values[i];
	}
	return NULL;
}

bool api_row_changed(const struct api_row *row, const char *column)
{
	const struct api_value *o = api_image_get(&row->old_image, column);
	const struct api_value *n = api_image_get(&row->new_image, column);

	if (n == NULL)
		return false;
	if (o == NULL)
		return true;
	if (o->value == NULL || n->value == NULL)
		return o->value != n->value;
	return strcmp(o->value, n->value) != 0;
}

bool api_rows_change_nothing(const struct api_table *t, const struct api_row *rows, int nrows)
{
	for (int r = 0; r < nrows; r++) {
		const struct api_row_image *img = &rows[r].new_image;

		for (int i = 0; i < img->nvalues; i++) {
			const char *col = img->values[i].column;

			if (api_row_changed(&rows[r], col) &&
			    (strcmp(col, t->pk_column) == 0 || !api_table_is_readonly(t, col)))
				return false;
		}
	}
	return true;
}

/* Whether needle occurs in hay as a whole word: not glued to letters or digits on either side. */
static bool api_names_word(const char *hay, const char *needle)
{
	size_t n = strlen(needle);

	if (n == 0)
		return false;
	for (const char *p = strstr(hay, needle); p != NULL; p = strstr(p + 1, needle)) {
		bool left = p == hay || !isalnum((unsigned char)p[-1]) ||
		            !isalnum((unsigned char)needle[0]);
		bool right = p[n] == '\0' || !isalnum((unsigned char)p[n]) ||
		             !isalnum((unsigned char)needle[n - 1]);

		if (left && right)
			return true;
	}
	return false;
}

static const struct api_value *api_row_value(enum api_op op, const struct api_row *row,
                                             const char *column)
{
	return api_image_get(op == API_OP_DELETE ? &row->old_image : &row->new_image, column);
}

/* The row's value of column as the request carried it; NULL when the request left it out. */
static const struct api_value *api_sent_value(enum api_op op, const struct api_row *row,
                                              const char *column)
{
	if (op == API_OP_UPDATE && !api_row_changed(row, column))
		return NULL; /* an update sends what changed */
	return api_row_value(op, row, column);
}

static bool api_same_value(const struct api_value *a, const struct api_value *b)
{
	if (a->value == NULL || b->value == NULL)
		return a->value == b->value;
	return strcmp(a->value, b->value) == 0;
}

/*
 * The row an error about err->column is about, when the API did not say; -1 when no single
 * value fits. Only rows whose request carried the column count. *shared is set when they all
 * hold the same value: that value is the offending one, whichever row it was. Otherwise the
 * row is the one whose value the API's message names as a whole word; when several values are
 * named, the longest, if it contains all the others (a message naming "b@x.io" names "x.io").
 */
static int api_error_find_row(const struct api_error *err, enum api_op op,
                              const struct api_row *rows, int nrows, bool *shared)
{
	const struct api_value *first = NULL, *best = NULL, *v;
	int found = -1, first_row = -1, nsent = 0;
	bool same = true;

	*shared = false;
	for (int r = 0; r < nrows; r++) {
		if ((v = api_sent_value(op, &rows[r], err->column)) == NULL)
			continue;
		nsent++;
		if (first == NULL) {
			first = v;
			first_row = r;
		} else if (!api_same_value(first, v)) {
			same = false;
		}
	}
	if (first == NULL)
		return -1;
	if (same) {
		*shared = nsent > 1;
		return first_row;
	}
	for (int r = 0; r < nrows; r++) {
		v = api_sent_value(op, &rows[r], err->column);
		if (v == NULL || v->value == NULL || !api_names_word(err->message, v->value))
			continue;
		if (best == NULL || strlen(v->value) > strlen(best->value)) {
			found = r;
			best = v;
		}
	}
	if (found < 0)
		return -1;
	for (int r = 0; r < nrows; r++) {
		v = api_sent_value(op, &rows[r], err->column);
		if (v != NULL && v->value != NULL && api_names_word(err->message, v->value) &&
		    strstr(best->value, v->value) == NULL)
			return -1; /* two values named, neither within the other: no telling */
	}
	return found;
}

void api_error_locate(struct api_error *err, const struct connector *c, const struct api_table *t,
                      enum api_op op, const struct api_row *rows, int nrows, int row,
                      const char *field)
{
	const struct api_value *v;
	bool shared = false;

	err->row = row;
	if (field == NULL || field[0] == '\0')
		return;
	snprintf(err->field, sizeof(err->field), "%s", field);
	connector_column_name(c, t, field, err->column, sizeof(err->column));
	if (row < 0 || row >= nrows) {
		row = api_error_find_row(err, op, rows, nrows, &shared);
		if (row < 0) {
			err->value_unknown = true;
			return;
		}
		/* several rows sent the same value: which of them it was is still unknown */
		err->row = shared ? -1 : row;
	}
	v = api_row_value(op, &rows[row], err->column);
	if (v == NULL) {
		err->value_unknown = true;
		return;
	}
	if (v->value == NULL)
		err->value_is_null = true;
	else
		snprintf(err->value, sizeof(err->value), "%s", v->value);
}

bool api_put_json_value(struct json_out *o, const struct api_value *v)
{
	struct json_value *doc;
	char err[96];
	bool ok;

	if (v->value == NULL) {
		json_out_null(o);
		return true;
	}
	switch (v->type) {
	case API_VALUE_TEXT:
		json_out_string(o, v->value);
		return true;
	case API_VALUE_NUMBER:
		if (!json_is_number_text(v->value, strlen(v->value)))
			return false;
		json_out_number_text(o, v->value, strlen(v->value));
		return true;
	case API_VALUE_BOOL:
		if (strcmp(v->value, "t") == 0 || strcmp(v->value, "true") == 0)
			json_out_bool(o, true);
		else if (strcmp(v->value, "f") == 0 || strcmp(v->value, "false") == 0)
			json_out_bool(o, false);
		else
			return false;
		return true;
	case API_VALUE_JSON:
		if (!json_parse(v->value, strlen(v->value), NULL, &doc, err, sizeof(err)))
			return false;
		json_out_value(o, doc);
		ok = true;
		json_free(doc);
		return ok;
	}
	return false;
}

char *api_value_text(const struct json_value *v, bool *ok)
{
	char *text = NULL;
	size_t len;

	*ok = true;
	switch (v->kind) {
	case JSON_NULL:
		return NULL;
	case JSON_BOOL:
		text = strdup(v->boolean ? "true" : "false");
		break;
	case JSON_NUMBER:
	case JSON_STRING:
		text = strdup(v->str);
		break;
	case JSON_ARRAY:
	case JSON_OBJECT:
		text = json_to_text(v, 1u << 20, &len);
		break;
	}
	if (text == NULL)
		*ok = false;
	return text;
}

int api_parse_retry_after(const struct http_response *resp)
{
	const char *h = http_response_header(resp, "Retry-After");
	char *end;
	long v;

	if (h == NULL)
		return -1;
	errno = 0;
	v = strtol(h, &end, 10);
	if (errno != 0 || end == h || *end != '\0' || v < 0)
		return -1;
	return v > 86400 ? 86400 : (int)v;
}

/* ---- connectors ---- */

static bool connector_key_known(const struct connector_ops *ops, const char *key)
{
	int i;

	for (i = 0; connector_common_keys[i] != NULL; i++) {
		if (strcmp(connector_common_keys[i], key) == 0)
			return true;
	}
	for (i = 0; ops->keys != NULL && ops->keys[i] != NULL; i++) {
		if (strcmp(ops->keys[i], key) == 0)
			return true;
	}
	for (i = 0; ops->changes != NULL && ops->changes->keys != NULL && ops->changes->keys[i];
	     i++) {
		if (strcmp(ops->changes->keys[i], key) == 0)
			return true;
	}
	return false;
}

struct connector *connector_create(const char *name, const struct cf_kv *kv, int nkv, char *err,
                                   size_t errsize)
{
	const char *type = api_kv_get(kv, nkv, "type");
	const char *base = api_kv_get(kv, nkv, "base_url");
	const char *mb = api_kv_get(kv, nkv, "max_batch");
	const struct connector_ops *ops = NULL;
	struct connector *c = NULL;
	size_t i, blen;
	int k;

	if (type == NULL || type[0] == '\0') {
		snprintf(err, errsize, "api \"%s\": type= is missing", name);
		return NULL;
	}
	for (i = 0; i < sizeof(connector_types) / sizeof(connector_types[0]); i++) {
		if (strcmp(connector_types[i]->type, type) == 0)
			ops = connector_types[i];
	}
	if (ops == NULL) {
		snprintf(
		        err, errsize,
		        "api \"%s\": unknown type=%.40s (known: salesforce, hubspot, stripe, airtable, rest)",
		        name, type);
		return NULL;
	}
	for (k = 0; k < nkv; k++) {
		if (!connector_key_known(ops, kv[k].key)) {
			snprintf(err, errsize, "api \"%s\": unknown key \"%.60s\" for type=%s",
			         name, kv[k].key, type);
			return NULL;
		}
	}
	if (base == NULL ||
	    (strncmp(base, "http://", 7) != 0 && strncmp(base, "https://", 8) != 0)) {
		snprintf(err, errsize, "api \"%s\": base_url= must be an http:// or https:// URL",
		         name);
		return NULL;
	}
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		goto oom;
	c->ops = ops;
	c->name = strdup(name);
	c->base_url = strdup(base);
	if (c->name == NULL || c->base_url == NULL)
		goto oom;
	blen = strlen(c->base_url);
	while (blen > 0 && c->base_url[blen - 1] == '/')
		c->base_url[--blen] = '\0';
	if (mb != NULL) {
		char *end;
		long v;
		errno = 0;
		v = strtol(mb, &end, 10);
		if (errno != 0 || *end != '\0' || end == mb || v < 1 || v > 10000) {
			snprintf(err, errsize,
			         "api \"%s\": max_batch=%.20s is not a number in 1..10000", name,
			         mb);
			connector_free(c);
			return NULL;
		}
		c->max_batch = (int)v;
	}
	if (!ops->configure(c, kv, nkv, err, errsize) ||
	    (ops->changes != NULL && ops->changes->configure != NULL &&
	     !ops->changes->configure(c, kv, nkv, err, errsize))) {
		connector_free(c);
		return NULL;
	}
	return c;
oom:
	snprintf(err, errsize, "out of memory");
	connector_free(c);
	return NULL;
}

void connector_free(struct connector *c)
{
	if (c == NULL)
		return;
	if (c->ops != NULL && c->ops->release != NULL)
		c->ops->release(c);
	if (c->ops != NULL && c->ops->changes != NULL && c->ops->changes->release != NULL)
		c->ops->changes->release(c);
	free(c->name);
	free(c->base_url);
	free(c);
}

bool connector_check_ids(const struct connector *c, const struct api_table *t, enum api_op op,
                         const struct api_row *rows, int nrows, struct api_error *err)
{
	for (int r = 0; r < nrows; r++) {
		const struct api_value *id = api_image_get(&rows[r].new_image, t->pk_column);

		if (op == API_OP_INSERT && id != NULL && id->value != NULL &&
		    (c->ops->insert_uses_id == NULL || !c->ops->insert_uses_id(c))) {
			api_error_set(err, API_ERR_ASSIGNED_ID,
			              "cannot insert a non-DEFAULT value into column \"%s\"",
			              t->pk_column);
		} else if (op == API_OP_UPDATE && api_row_changed(&rows[r], t->pk_column)) {
			api_error_set(err, API_ERR_ASSIGNED_ID,
			              "column \"%s\" can only be updated to DEFAULT", t->pk_column);
		} else {
			continue;
		}
		snprintf(err->column, sizeof(err->column), "%s", t->pk_column);
		err->row = r;
		err->nothing_written = true;
		return false;
	}
	return true;
}

int connector_max_rows(const struct connector *c, enum api_op op)
{
	int m = c->ops->max_rows(c, op);

	if (c->max_batch > 0 && c->max_batch < m)
		m = c->max_batch;
	return m;
}

bool connector_build_request(const struct connector *c, const struct api_table *t, enum api_op op,
                             const struct api_row *rows, int nrows, struct api_http_spec *out,
                             struct api_error *err)
{
	return connector_build_request_keyed(c, t, op, rows, nrows, NULL, out, err);
}

bool connector_build_request_keyed(const struct connector *c, const struct api_table *t,
                                   enum api_op op, const struct api_row *rows, int nrows,
                                   const char *key, struct api_http_spec *out,
                                   struct api_error *err)
{
	int max = connector_max_rows(c, op);

	memset(out, 0, sizeof(*out));
	/* the connector's build keeps a key it is given (and makes one when none is) */
	if (key != NULL && c->ops->key_window_s > 0)
		snprintf(out->idempotency_key, sizeof(out->idempotency_key), "%s", key);
	if (nrows < 1 || nrows > max) {
		api_error_set(err, API_ERR_TOO_MANY_ROWS,
		              "%s: %d rows, but one %s request takes at most %d", c->name, nrows,
		              api_op_str(op), max);
		err->nothing_written = true;
		return false;
	}
	if (!c->ops->build(c, t, op, rows, nrows, out, err)) {
		api_http_spec_free(out);
		err->nothing_written = true;
		return false;
	}
	return true;
}

void connector_parse_response(const struct connector *c, const struct api_table *t, enum api_op op,
                              const struct api_row *rows, int nrows,
                              const struct http_response *resp, struct api_result *out)
{
	api_result_init(out);
	switch (resp->outcome) {
	case HTTP_OUTCOME_NOT_SENT:
		api_error_set(&out->error, API_ERR_UNAVAILABLE, "%s unreachable: %s", c->name,
		              resp->error ? resp->error : "not sent");
		out->error.nothing_written = true;
		return;
	case HTTP_OUTCOME_UNKNOWN:
		api_error_set(&out->error, API_ERR_UNKNOWN_OUTCOME,
		              "%s did not answer after the request was sent: %s", c->name,
		              resp->error ? resp->error : "no answer");
		return;
	case HTTP_OUTCOME_BAD_ANSWER:
		api_error_set(&out->error, API_ERR_BAD_ANSWER, "%s sent an unusable answer: %s",
		              c->name, resp->error ? resp->error : "bad answer");
		out->error.http_status = (int)resp->status;
		return;
	case HTTP_OUTCOME_ANSWER:
		break;
	}
	c->ops->parse(c, t, op, rows, nrows, resp, out);
	if (!out->ok) {
		out->error.http_status = (int)resp->status;
		if (out->error.retry_after < 0)
			out->error.retry_after = api_parse_retry_after(resp);
	} else if (out->nrows != nrows) {
		/* A connector bug must not hand the caller a short result. */
		api_result_free(out);
		api_error_set(&out->error, API_ERR_BAD_ANSWER,
		              "%s answered with a result count that does not match the request",
		              c->name);
		out->error.http_status = (int)resp->status;
	}
}

bool connector_can_read(const struct connector *c)
{
	return c->ops->build_read != NULL && c->ops->parse_read != NULL &&
	       (c->ops->can_read == NULL || c->ops->can_read(c));
}

bool connector_build_read(const struct connector *c, const struct api_table *t, const char *id,
                          const char *const *fields, int nfields, struct api_http_spec *out,
                          struct api_error *err)
{
	memset(out, 0, sizeof(*out));
	if (!connector_can_read(c)) {
		api_error_set(err, API_ERR_INTERNAL, "%s cannot read records by id", c->name);
		err->nothing_written = true;
		return false;
	}
	if (id == NULL || id[0] == '\0' || strlen(id) > 255) {
		api_error_set(err, API_ERR_VALIDATION, "%s: no usable record id to read", c->name);
		err->nothing_written = true;
		return false;
	}
	if (!c->ops->build_read(c, t, id, fields, nfields, out, err)) {
		api_http_spec_free(out);
		err->nothing_written = true;
		return false;
	}
	return true;
}

void connector_parse_read(const struct connector *c, const struct api_table *t, const char *id,
                          const struct http_response *resp, struct api_result *out)
{
	api_result_init(out);
	switch (resp->outcome) {
	case HTTP_OUTCOME_NOT_SENT:
		api_error_set(&out->error, API_ERR_UNAVAILABLE, "%s unreachable: %s", c->name,
		              resp->error ? resp->error : "not sent");
		out->error.nothing_written = true;
		return;
	case HTTP_OUTCOME_UNKNOWN:
		api_error_set(&out->error, API_ERR_UNKNOWN_OUTCOME, "%s did not answer a read: %s",
		              c->name, resp->error ? resp->error : "no answer");
		out->error.nothing_written = true;
		return;
	case HTTP_OUTCOME_BAD_ANSWER:
		api_error_set(&out->error, API_ERR_BAD_ANSWER, "%s sent an unusable answer: %s",
		              c->name, resp->error ? resp->error : "bad answer");
		out->error.http_status = (int)resp->status;
		out->error.nothing_written = true;
		return;
	case HTTP_OUTCOME_ANSWER:
		break;
	}
	c->ops->parse_read(c, t, id, resp, out);
	/* a read writes nothing, whatever it answered */
	out->error.nothing_written = true;
	if (!out->ok) {
		out->error.http_status = (int)resp->status;
		if (out->error.retry_after < 0)
			out->error.retry_after = api_parse_retry_after(resp);
	} else if (out->nrows != 1) {
		api_result_free(out);
		api_error_set(&out->error, API_ERR_BAD_ANSWER,
		              "%s answered a read of one record with %d", c->name, out->nrows);
		out->error.http_status = (int)resp->status;
		out->error.nothing_written = true;
	}
}

bool connector_check_table(const struct connector *c, const struct api_table *t, char *err,
                           size_t errsize)
{
	if (t->external_id != NULL && (c->ops->build_find == NULL || c->ops->parse_find == NULL)) {
		snprintf(
		        err, errsize,
		        "external_id=%.60s: api \"%s\" (type=%s) cannot find records by an external"
		        " id",
		        t->external_id, c->name, c->ops->type);
		return false;
	}
	return true;
}

int connector_key_window_s(const struct connector *c)
{
	return c->ops->key_window_s;
}

bool connector_can_find_key(const struct connector *c, const struct api_table *t)
{
	return c->ops->can_find_key != NULL && c->ops->build_find_key != NULL &&
	       c->ops->parse_find_key != NULL && c->ops->can_find_key(c, t);
}

int connector_find_key_lag_s(const struct connector *c)
{
	return c->ops->find_key_lag_s;
}

bool connector_build_find_key(const struct connector *c, const struct api_table *t, const char *key,
                              struct api_http_spec *out, struct api_error *err)
{
	memset(out, 0, sizeof(*out));
	if (!connector_can_find_key(c, t)) {
		api_error_set(err, API_ERR_INTERNAL,
		              "%s cannot find records of %s by an idempotency key", c->name,
		              t->name);
		err->nothing_written = true;
		return false;
	}
	if (!api_key_in_record(key)) {
		/* an older syncbouncer's insert: the record does not carry the key */
		api_error_set(err, API_ERR_VALIDATION,
		              "%s: no idempotency key that a record carries to find", c->name);
		err->nothing_written = true;
		return false;
	}
	if (!c->ops->build_find_key(c, t, key, out, err)) {
		api_http_spec_free(out);
		err->nothing_written = true;
		return false;
	}
	return true;
}

/*
 * After a connector parsed the answer to a search for one record (by an external id or by an
 * idempotency key): a search writes nothing; its error takes the status and Retry-After; an
 * answer without exactly one record with an id is a bad answer.
 */
static void find_answer_checked(const struct connector *c, const struct http_response *resp,
                                struct api_result *out)
{
	out->error.nothing_written = true;
	if (!out->ok) {
		out->error.http_status = (int)resp->status;
		if (out->error.retry_after < 0)
			out->error.retry_after = api_parse_retry_after(resp);
	} else if (out->nrows != 1 || out->rows[0].id == NULL || out->rows[0].id[0] == '\0') {
		api_result_free(out);
		api_error_set(&out->error, API_ERR_BAD_ANSWER,
		              "%s answered a search for one record with no usable record", c->name);
		out->error.http_status = (int)resp->status;
		out->error.nothing_written = true;
	}
}

void connector_parse_find_key(const struct connector *c, const struct api_table *t, const char *key,
                              const struct http_response *resp, struct api_result *out)
{
	api_result_init(out);
	if (resp->outcome != HTTP_OUTCOME_ANSWER) {
		connector_parse_read(c, t, key, resp, out);
		return;
	}
	c->ops->parse_find_key(c, t, key, resp, out);
	find_answer_checked(c, resp, out);
}

bool connector_can_find(const struct connector *c, const struct api_table *t)
{
	return t->external_id != NULL && c->ops->build_find != NULL && c->ops->parse_find != NULL;
}

bool connector_build_find(const struct connector *c, const struct api_table *t, const char *value,
                          const char *const *fields, int nfields, struct api_http_spec *out,
                          struct api_error *err)
{
	memset(out, 0, sizeof(*out));
	if (!connector_can_find(c, t)) {
		api_error_set(err, API_ERR_INTERNAL,
		              "%s cannot find records of %s by an external id", c->name, t->name);
		err->nothing_written = true;
		return false;
	}
	if (value == NULL || value[0] == '\0' || strlen(value) > 255) {
		api_error_set(err, API_ERR_VALIDATION, "%s: no usable external id to find",
		              c->name);
		err->nothing_written = true;
		return false;
	}
	if (!c->ops->build_find(c, t, value, fields, nfields, out, err)) {
		api_http_spec_free(out);
		err->nothing_written = true;
		return false;
	}
	return true;
}

void connector_parse_find(const struct connector *c, const struct api_table *t, const char *value,
                          const struct http_response *resp, struct api_result *out)
{
	api_result_init(out);
	if (resp->outcome != HTTP_OUTCOME_ANSWER) {
		/* the non-answers read as for a read by id */
		connector_parse_read(c, t, value, resp, out);
		return;
	}
	c->ops->parse_find(c, t, value, resp, out);
	find_answer_checked(c, resp, out);
}
