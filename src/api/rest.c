/*
 * rest — the generic JSON REST connector (type=rest), configured entirely on its [apis] line.
 *
 * Per operation a method and a path below base_url; "{id}" in a path is replaced by the
 * record id (URL-encoded), "{ids}" by the comma-joined ids of a batch. A path with {id} takes
 * one row per request; otherwise up to max_batch rows (default 1) go in one request as a JSON
 * array, or under records_key when set. The answer is the record (or the list of records,
 * in request order) whose id_field holds the record id; every scalar member comes back as a
 * returned field. Errors are read from the status code and the usual message/error/code/field
 * members. See doc/connectors.md.
 *
 * Reading a record by id (settling a write whose outcome is unknown): GET of read_path=, which
 * must hold {id}; by default path=/{id} when path= is set, else update_path= when it holds {id}
 * (a record's own URL). The answer is the record, as for a write; 404 or 410: no such record.
 * Without any such path the connector cannot read, and settling leaves it to the sync worker.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/changes.h"
#include "api/connector.h"
#include "api/json.h"

#define REST_MAX_BODY (8u << 20)
#define REST_PATH_MAX 512

enum rest_naming {
	REST_NAMING_SAME,
	REST_NAMING_CAMEL,
	REST_NAMING_PASCAL,
};

static const char *rest_naming_str(enum rest_naming n)
{
	switch (n) {
	case REST_NAMING_SAME:
		return "same";
	case REST_NAMING_CAMEL:
		return "camel";
	case REST_NAMING_PASCAL:
		return "pascal";
	}
	return "?";
}

struct rest_op_conf {
	enum http_method method;
	char path[REST_PATH_MAX];
};

struct rest_priv {
	struct rest_op_conf ops[3]; /* by enum api_op */
	char read_path[REST_PATH_MAX]; /* GET of one record, with {id}; "" = cannot read */
	char records_key[128];
	char id_field[128];
	enum rest_naming naming;
};

static const char *const rest_keys[] = {
        "path",          "insert_path",   "update_path",   "delete_path",
        "insert_method", "update_method", "delete_method", "records_key",
        "id_field",      "read_path",     "naming",        NULL,
};

static bool rest_path_ok(const char *p)
{
	/* A path, not a URL: it is appended to base_url. */
	return p[0] == '/' && strlen(p) < REST_PATH_MAX - 16 && strpbrk(p, " \r\n\t#") == NULL;
}

static bool rest_configure(struct connector *c, const struct cf_kv *kv, int nkv, char *err,
                           size_t errsize)
{
	static const char *const mkeys[] = {"insert_method", "update_method", "delete_method"};
	static const char *const pkeys[] = {"insert_path", "update_path", "delete_path"};
	static const enum http_method mdef[] = {HTTP_POST, HTTP_PATCH, HTTP_DELETE};
	const char *path = api_kv_get(kv, nkv, "path");
	const char *rk = api_kv_get(kv, nkv, "records_key");
	const char *idf = api_kv_get(kv, nkv, "id_field");
	const char *naming = api_kv_get(kv, nkv, "naming");
	struct rest_priv *p = calloc(1, sizeof(*p));
	int i;

	if (p == NULL) {
		snprintf(err, errsize, "out of memory");
		return false;
	}
	c->priv = p;
	for (i = 0; i < 3; i++) {
		const char *m = api_kv_get(kv, nkv, mkeys[i]);
		const char *pp = api_kv_get(kv, nkv, pkeys[i]);

		p->ops[i].method = mdef[i];
		if (m != NULL && !http_method_parse(m, &p->ops[i].method)) {
			snprintf(err, errsize, "api \"%s\": %s=%.20s is not an HTTP method",
			         c->name, mkeys[i], m);
			return false;
		}
		if (pp == NULL && path != NULL) {
			if (!rest_path_ok(path)) {
				snprintf(err, errsize, "api \"%s\": path= must start with /",
				         c->name);
				return false;
			}
			snprintf(p->ops[i].path, sizeof(p->ops[i].path), "%s%s", path,
			         i == API_OP_INSERT ? "" : "/{id}");
			continue;
		}
		if (pp == NULL) {
			snprintf(err, errsize, "api \"%s\": %s= (or path=) is missing", c->name,
			         pkeys[i]);
			return false;
		}
		if (!rest_path_ok(pp)) {
			snprintf(err, errsize, "api \"%s\": %s= must be a path starting with /",
			         c->name, pkeys[i]);
			return false;
		}
		snprintf(p->ops[i].path, sizeof(p->ops[i].path), "%s", pp);
	}
	{
		const char *rp = api_kv_get(kv, nkv, "read_path");
		if (rp != NULL && (!rest_path_ok(rp) || strstr(rp, "{id}") == NULL)) {
			snprintf(err, errsize,
			         "api \"%s\": read_path= must be a path starting with / that holds"
			         " {id}",
			         c->name);
			return false;
		}
		if (rp != NULL)
			snprintf(p->read_path, sizeof(p->read_path), "%s", rp);
		else if (path != NULL)
			snprintf(p->read_path, sizeof(p->read_path), "%s/{id}", path);
		else if (strstr(p->ops[API_OP_UPDATE].path, "{id}") != NULL &&
		         strstr(p->ops[API_OP_UPDATE].path, "{ids}") == NULL)
			snprintf(p->read_path, sizeof(p->read_path), "%s",
			         p->ops[API_OP_UPDATE].path);
	}
	snprintf(p->records_key, sizeof(p->records_key), "%s", rk ? rk : "");
	snprintf(p->id_field, sizeof(p->id_field), "%s", idf && idf[0] ? idf : "id");
	p->naming = REST_NAMING_SAME;
	if (naming != NULL && strcmp(naming, rest_naming_str(REST_NAMING_CAMEL)) == 0) {
		p->naming = REST_NAMING_CAMEL;
	} else if (naming != NULL && strcmp(naming, rest_naming_str(REST_NAMING_PASCAL)) == 0) {
		p->naming = REST_NAMING_PASCAL;
	} else if (naming != NULL && strcmp(naming, rest_naming_str(REST_NAMING_SAME)) != 0) {
		snprintf(err, errsize, "api \"%s\": naming=%.20s (expected same, camel or pascal)",
		         c->name, naming);
		return false;
	}
	return true;
}

static void rest_release(struct connector *c)
{
	free(c->priv);
	c->priv = NULL;
}

static int rest_max_rows(const struct connector *c, enum api_op op)
{
	const struct rest_priv *p = c->priv;

	if (strstr(p->ops[op].path, "{id}") != NULL)
		return 1;
	return c->max_batch > 0 ? c->max_batch : 1;
}

static void rest_field_name(const struct connector *c, const char *column, char *buf, size_t size)
{
	const struct rest_priv *p = c->priv;

	switch (p->naming) {
	case REST_NAMING_SAME:
		snprintf(buf, size, "%s", column);
		return;
	case REST_NAMING_PASCAL:
		api_snake_to_pascal(column, buf, size);
		return;
	case REST_NAMING_CAMEL:
		api_snake_to_pascal(column, buf, size);
		if (buf[0] >= 'A' && buf[0] <= 'Z')
			buf[0] = (char)(buf[0] - 'A' + 'a');
		return;
	}
}

static void rest_column_name(const struct connector *c, const char *field, char *buf, size_t size)
{
	const struct rest_priv *p = c->priv;

	if (p->naming == REST_NAMING_SAME)
		snprintf(buf, size, "%s", field);
	else
		api_pascal_to_snake(field, buf, size);
}

static const char *rest_row_id(const struct api_table *t, const struct api_row *row, enum api_op op)
{
	const struct api_value *v = api_image_get(
	        op == API_OP_INSERT ? &row->new_image : &row->old_image, t->pk_column);

	return v != NULL && v->value != NULL && v->value[0] != '\0' ? v->value : NULL;
}

static bool rest_put_record(const struct connector *c, const struct api_table *t, enum api_op op,
                            const struct api_row *row, int r, bool with_id, struct json_out *o,
                            struct api_error *err)
{
	const struct rest_priv *p = c->priv;
	const struct api_row_image *img = &row->new_image;
	char field[128];
	int i;

	json_out_object_begin(o);
	if (with_id) {
		json_out_key(o, p->id_field);
		json_out_string(o, rest_row_id(t, row, op));
	}
	for (i = 0; i < img->nvalues; i++) {
		const struct api_value *v = &img->values[i];

		if (strcmp(v->column, t->pk_column) == 0 || api_table_is_readonly(t, v->column))
			continue;
		if (op == API_OP_INSERT && v->value == NULL)
			continue;
		if (op == API_OP_UPDATE && !api_row_changed(row, v->column))
			continue;
		connector_field_name(c, t, v->column, field, sizeof(field));
		json_out_key(o, field);
		if (!api_put_json_value(o, v)) {
			api_error_set(err, API_ERR_VALIDATION,
			              "value of column %s cannot be sent as a %s", v->column,
			              api_value_type_str(v->type));
			err->row = r;
			snprintf(err->column, sizeof(err->column), "%s", v->column);
			snprintf(err->field, sizeof(err->field), "%s", field);
			snprintf(err->value, sizeof(err->value), "%s", v->value);
			return false;
		}
	}
	json_out_object_end(o);
	return true;
}

/* Expands {id} / {ids} of the path into out->url. */
static bool rest_build_url(const struct connector *c, const struct api_table *t, enum api_op op,
                           const struct api_row *rows, int nrows, struct api_http_spec *out,
                           struct api_error *err)
{
	const struct rest_priv *p = c->priv;
	const char *path = p->ops[op].path, *s;
	size_t size = strlen(c->base_url) + strlen(path) + 16 + (size_t)nrows * 200, used;
	int r;

	out->url = malloc(size);
	if (out->url == NULL) {
		api_error_set(err, API_ERR_INTERNAL, "out of memory");
		return false;
	}
	used = (size_t)snprintf(out->url, size, "%s", c->base_url);
	for (s = path; *s != '\0';) {
		bool one = strncmp(s, "{id}", 4) == 0, many = strncmp(s, "{ids}", 5) == 0;

		if (!one && !many) {
			if (used + 2 > size)
				goto too_long;
			out->url[used++] = *s++;
			out->url[used] = '\0';
			continue;
		}
		for (r = 0; r < (one ? 1 : nrows); r++) {
			const char *id = rest_row_id(t, &rows[r], op);

			if (id == NULL || strlen(id) > 64) {
				api_error_set(err, API_ERR_VALIDATION,
				              "row has no usable record id in column %s",
				              t->pk_column);
				snprintf(err->column, sizeof(err->column), "%s", t->pk_column);
				err->row = r;
				return false;
			}
			if (r > 0 && used + 2 <= size)
				out->url[used++] = ',';
			if (!api_url_escape_segment(id, out->url, size, &used))
				goto too_long;
		}
		s += one ? 4 : 5;
	}
	return true;
too_long:
	api_error_set(err, API_ERR_INTERNAL, "request URL too long");
	return false;
}

static bool rest_build(const struct connector *c, const struct api_table *t, enum api_op op,
                       const struct api_row *rows, int nrows, struct api_http_spec *out,
                       struct api_error *err)
{
	const struct rest_priv *p = c->priv;
	bool batch = strstr(p->ops[op].path, "{id}") == NULL && (nrows > 1 || c->max_batch > 1);
	bool ids_in_path = strstr(p->ops[op].path, "{id") != NULL;
	struct json_out o;
	int r;

	out->method = p->ops[op].method;
	if (!rest_build_url(c, t, op, rows, nrows, out, err))
		return false;
	if (op == API_OP_DELETE && ids_in_path)
		return true;
	if (!json_out_init(&o, REST_MAX_BODY)) {
		api_error_set(err, API_ERR_INTERNAL, "out of memory");
		return false;
	}
	if (batch && p->records_key[0] != '\0') {
		json_out_object_begin(&o);
		json_out_key(&o, p->records_key);
	}
	if (batch)
		json_out_array_begin(&o);
	for (r = 0; r < nrows; r++) {
		if (op == API_OP_DELETE) {
			/* a batch delete without {ids} in the path: the ids go in the body */
			const char *id = rest_row_id(t, &rows[r], op);
			if (id == NULL) {
				api_error_set(err, API_ERR_VALIDATION,
				              "row has no record id in column %s", t->pk_column);
				err->row = r;
				json_out_free(&o);
				return false;
			}
			if (!batch) {
				json_out_object_begin(&o);
				json_out_key(&o, p->id_field);
				json_out_string(&o, id);
				json_out_object_end(&o);
			} else {
				json_out_string(&o, id);
			}
			continue;
		}
		if (op == API_OP_UPDATE && rest_row_id(t, &rows[r], op) == NULL) {
			api_error_set(err, API_ERR_VALIDATION, "row has no record id in column %s",
			              t->pk_column);
			err->row = r;
			json_out_free(&o);
			return false;
		}
		if (!rest_put_record(c, t, op, &rows[r], r, op == API_OP_UPDATE && !ids_in_path, &o,
		                     err)) {
			json_out_free(&o);
			return false;
		}
	}
	if (batch)
		json_out_array_end(&o);
	if (batch && p->records_key[0] != '\0')
		json_out_object_end(&o);
	out->body = json_out_take(&o, &out->body_len);
	if (out->body == NULL) {
		api_error_from_json_out(err, c->name, &o);
		json_out_free(&o);
		return false;
	}
	out->content_type = "application/json";
	json_out_free(&o);
	return true;
}

static enum api_error_class rest_class_of(long status)
{
	switch (status) {
	case 401:
		return API_ERR_AUTH;
	case 403:
		return API_ERR_PERMISSION;
	case 404:
	case 410:
		return API_ERR_NOT_FOUND;
	case 409:
		return API_ERR_DUPLICATE;
	case 429:
		return API_ERR_RATE_LIMIT;
	default:
		/* 1xx/3xx (redirects are not followed: base_url is wrong) and 5xx */
		return status >= 500 || status < 400 ? API_ERR_SERVER : API_ERR_VALIDATION;
	}
}

/* message / error / error.message / errors[0].message, and the same for code and field. */
static const char *rest_error_member(const struct json_value *doc, const char *key)
{
	const struct json_value *e = json_get(doc, "error");
	const char *s = json_get_string(doc, key);

	if (s == NULL && strcmp(key, "message") == 0)
		s = json_string(e);
	if (s == NULL)
		s = json_get_string(e, key);
	if (s == NULL)
		s = json_get_string(json_at(json_get(doc, "errors"), 0), key);
	if (s == NULL)
		s = json_get_string(json_at(doc, 0), key);
	return s;
}

/* Fills one row result from one answer record. False: not a usable record (err filled). */
static bool rest_read_record(const struct connector *c, const struct api_table *t, enum api_op op,
                             const struct api_row *row, const struct json_value *rec,
                             struct api_row_result *rr, struct api_error *err)
{
	const struct rest_priv *p = c->priv;
	const struct json_value *idv = json_get(rec, p->id_field);
	size_t i;

	if (idv != NULL && (idv->kind == JSON_STRING || idv->kind == JSON_NUMBER)) {
		rr->id = strdup(idv->str);
	} else if (op != API_OP_INSERT && rest_row_id(t, row, op) != NULL) {
		rr->id = strdup(rest_row_id(t, row, op));
	} else {
		api_error_set(err, API_ERR_BAD_ANSWER, "%s answered without a record id (%s)",
		              c->name, p->id_field);
		return false;
	}
	if (rr->id == NULL)
		goto oom;
	if (rec == NULL || rec->kind != JSON_OBJECT)
		return true;
	rr->fields = calloc(rec->count ? rec->count : 1, sizeof(*rr->fields));
	if (rr->fields == NULL)
		goto oom;
	for (i = 0; i < rec->count; i++) {
		/* nested objects and arrays come back as JSON text, for json/jsonb columns */
		if (!connector_result_field(c, t, rec->keys[i], rec->items[i],
		                            &rr->fields[rr->nfields++]))
			goto oom;
	}
	return true;
oom:
	api_error_set(err, API_ERR_INTERNAL, "out of memory");
	return false;
}

static void rest_parse(const struct connector *c, const struct api_table *t, enum api_op op,
                       const struct api_row *rows, int nrows, const struct http_response *resp,
                       struct api_result *out)
{
	const struct rest_priv *p = c->priv;
	struct json_value *doc = NULL;
	const struct json_value *list = NULL;
	char perr[128];
	bool have_doc;
	int i;

	have_doc = resp->body_len > 0 &&
	           json_parse(resp->body, resp->body_len, NULL, &doc, perr, sizeof(perr));
	if (resp->status < 200 || resp->status >= 300) {
		enum api_error_class cls = rest_class_of(resp->status);
		const char *msg = have_doc ? rest_error_member(doc, "message") : NULL;
		const char *code = have_doc ? rest_error_member(doc, "code") : NULL;
		const char *field = have_doc ? rest_error_member(doc, "field") : NULL;

		if (msg != NULL)
			api_error_set(&out->error, cls, "%s", msg);
		else
			api_error_set(&out->error, cls, "%s answered HTTP %ld", c->name,
			              resp->status);
		snprintf(out->error.code, sizeof(out->error.code), "%s", code ? code : "");
		snprintf(out->error.reason, sizeof(out->error.reason), "%s", out->error.message);
		out->error.session_expired = resp->status == 401;
		out->error.nothing_written = resp->status < 500;
		api_error_locate(&out->error, c, t, op, rows, nrows, nrows == 1 ? 0 : -1, field);
		out->error.record_gone = resp->status == 404 || resp->status == 410;
		goto done;
	}
	if (resp->body_len > 0 && !have_doc) {
		api_error_set(&out->error, API_ERR_BAD_ANSWER, "%s answer is not JSON: %s", c->name,
		              perr);
		goto done;
	}
	out->rows = calloc((size_t)nrows, sizeof(*out->rows));
	if (out->rows == NULL) {
		api_error_set(&out->error, API_ERR_INTERNAL, "out of memory");
		goto done;
	}
	out->nrows = nrows;
	if (doc != NULL) {
		list = doc->kind == JSON_ARRAY ? doc : NULL;
		if (list == NULL && p->records_key[0] != '\0')
			list = json_get(doc, p->records_key);
		if (list != NULL && list->kind != JSON_ARRAY)
			list = NULL;
		if (list == NULL && nrows > 1 && op != API_OP_DELETE) {
			api_result_free(out);
			api_error_set(&out->error, API_ERR_BAD_ANSWER,
			              "%s answered without the list of %d records", c->name, nrows);
			goto done;
		}
		if (list != NULL && list->count != (size_t)nrows && op != API_OP_DELETE) {
			api_result_free(out);
			api_error_set(&out->error, API_ERR_BAD_ANSWER,
			              "%s answered %zu records for %d", c->name, list->count,
			              nrows);
			goto done;
		}
	}
	for (i = 0; i < nrows; i++) {
		const struct json_value *rec = NULL;

		if (op != API_OP_DELETE || (list != NULL && list->count == (size_t)nrows))
			rec = list != NULL ? json_at(list, (size_t)i) : doc;
		if (!rest_read_record(c, t, op, &rows[i], rec, &out->rows[i], &out->error)) {
			struct api_error keep = out->error;
			api_result_free(out);
			out->error = keep;
			goto done;
		}
	}
	out->ok = true;
done:
	json_free(doc);
}

static bool rest_insert_uses_id(const struct connector *c)
{
	const struct rest_priv *p = c->priv;

	return strstr(p->ops[API_OP_INSERT].path, "{id}") != NULL;
}

static bool rest_can_read(const struct connector *c)
{
	const struct rest_priv *p = c->priv;

	return p->read_path[0] != '\0';
}

static bool rest_build_read(const struct connector *c, const struct api_table *t, const char *id,
                            const char *const *fields, int nfields, struct api_http_spec *out,
                            struct api_error *err)
{
	const struct rest_priv *p = c->priv;
	size_t size = strlen(c->base_url) + strlen(p->read_path) + 16 + 3 * strlen(id), used;
	const char *s;

	(void)t;
	(void)fields;
	(void)nfields;
	if (!rest_can_read(c)) {
		api_error_set(err, API_ERR_INTERNAL, "%s cannot read records by id", c->name);
		return false;
	}
	out->url = malloc(size);
	if (out->url == NULL)
		goto oom;
	used = (size_t)snprintf(out->url, size, "%s", c->base_url);
	for (s = p->read_path; *s != '\0';) {
		if (strncmp(s, "{id}", 4) == 0) {
			if (!api_url_escape_segment(id, out->url, size, &used))
				goto oom;
			s += 4;
			continue;
		}
		if (used + 2 > size)
			goto oom;
		out->url[used++] = *s++;
		out->url[used] = '\0';
	}
	out->method = HTTP_GET;
	return true;
oom:
	api_error_set(err, API_ERR_INTERNAL, "out of memory");
	return false;
}

static void rest_parse_read(const struct connector *c, const struct api_table *t, const char *id,
                            const struct http_response *resp, struct api_result *out)
{
	struct api_value key = {t->pk_column, id, API_VALUE_TEXT};
	struct api_row row = {{&key, 1}, {NULL, 0}};

	if (resp->status == 404 || resp->status == 410) {
		api_error_set(&out->error, API_ERR_NOT_FOUND, "%s: record %s does not exist",
		              c->name, id);
		return;
	}
	if (resp->status >= 200 && resp->status < 300 && resp->body_len == 0) {
		api_error_set(&out->error, API_ERR_BAD_ANSWER,
		              "%s answered a read of %s without the record", c->name, id);
		return;
	}
	rest_parse(c, t, API_OP_UPDATE, &row, 1, resp, out);
}

const struct connector_ops rest_connector_ops = {
        .type = "rest",
        .keys = rest_keys,
        .configure = rest_configure,
        .release = rest_release,
        .max_rows = rest_max_rows,
        .field_name = rest_field_name,
        .column_name = rest_column_name,
        .build = rest_build,
        .insert_uses_id = rest_insert_uses_id,
        .parse = rest_parse,
        .build_read = rest_build_read,
        .can_read = rest_can_read,
        .parse_read = rest_parse_read,
        .changes = &rest_changes_ops,
};
