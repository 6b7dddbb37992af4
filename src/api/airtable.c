/*
 * airtable — the Airtable connector: up to 10 records per request, applied all or none.
 *
 *   insert  POST   <base>/v0/<base_id>/<table>   {"records":[{"fields":{...}}]}
 *   update  PATCH  same URL                      {"records":[{"id":"rec…","fields":{changed}}]}
 *   delete  DELETE same URL ?records[]=rec…&records[]=rec…
 *
 * The table (object=) is a table name or id; field names are the column names unless columns=
 * says otherwise (Airtable names are often "First Name"). Answers list the records in request
 * order ({"records":[{"id","createdTime","fields":{...}}]}); createdTime and the scalar fields
 * come back as returned fields. Errors: {"error":{"type","message"}} or {"error":"NOT_FOUND"};
 * the offending field is read from the message ('Field "Email" cannot accept ...').
 *
 *   read    GET    <base>/v0/<base_id>/<table>/<rec…>  → {"id","createdTime","fields"}; 404 when
 *                                                       there is no such record (any more)
 *
 * With external_id=<column> (a field the client gives unique values), an insert is an upsert
 * merging on that field (PATCH, "performUpsert":{"fieldsToMergeOn":[field]}), so an insert
 * that reaches Airtable twice makes one record; a lost answer's record is found with
 *   find    GET    <base>/v0/<base_id>/<table>?filterByFormula={Field}="value"&maxRecords=2
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/changes.h"
#include "api/connector.h"
#include "api/json.h"

#define AT_MAX_ROWS 10
#define AT_MAX_BODY (2u << 20)

struct at_priv {
	char base_id[64];
	bool typecast;
};

static const char *const at_keys[] = {"base_id", "typecast", NULL};

static bool at_configure(struct connector *c, const struct cf_kv *kv, int nkv, char *err,
                         size_t errsize)
{
	const char *base = api_kv_get(kv, nkv, "base_id");
	const char *tc = api_kv_get(kv, nkv, "typecast");
	struct at_priv *p;
	size_t i, len = base ? strlen(base) : 0;

	if (len == 0 || len >= sizeof(p->base_id)) {
		snprintf(err, errsize, "api \"%s\": base_id= (app…) is missing", c->name);
		return false;
	}
	for (i = 0; i < len; i++) {
		char ch = base[i];
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9'))) {
			snprintf(err, errsize,
			         "api \"%s\": base_id=%.40s is not an Airtable base id", c->name,
			         base);
			return false;
		}
	}
	if (tc != NULL && strcmp(tc, "true") != 0 && strcmp(tc, "false") != 0) {
		snprintf(err, errsize, "api \"%s\": typecast=%.20s (expected true or false)",
		         c->name, tc);
		return false;
	}
	p = calloc(1, sizeof(*p));
	if (p == NULL) {
		snprintf(err, errsize, "out of memory");
		return false;
	}
	snprintf(p->base_id, sizeof(p->base_id), "%s", base);
	p->typecast = tc != NULL && strcmp(tc, "true") == 0;
	c->priv = p;
	return true;
}

static void at_release(struct connector *c)
{
	free(c->priv);
	c->priv = NULL;
}

static int at_max_rows(const struct connector *c, enum api_op op)
{
	return AT_MAX_ROWS;
}

static void at_same_name(const struct connector *c, const char *name, char *buf, size_t size)
{
	snprintf(buf, size, "%s", name);
}

static const char *at_row_id(const struct api_table *t, const struct api_row *row)
{
	const struct api_value *v = api_image_get(&row->old_image, t->pk_column);

	return v != NULL && v->value != NULL && v->value[0] != '\0' && strlen(v->value) <= 64
	               ? v->value
	               : NULL;
}

static bool at_build(const struct connector *c, const struct api_table *t, enum api_op op,
                     const struct api_row *rows, int nrows, struct api_http_spec *out,
                     struct api_error *err)
{
	const struct at_priv *p = c->priv;
	size_t ulen = strlen(c->base_url) + 3 * strlen(t->object) + 96 + (size_t)nrows * 220;
	size_t used;
	struct json_out o;
	char field[128];
	int r, i;

	if (t->object[0] == '\0') {
		api_error_set(err, API_ERR_INTERNAL, "%s: table %s has no object= (Airtable table)",
		              c->name, t->name);
		return false;
	}
	for (r = 0; op != API_OP_INSERT && r < nrows; r++) {
		if (at_row_id(t, &rows[r]) == NULL) {
			api_error_set(err, API_ERR_VALIDATION,
			              "row has no usable record id in column %s", t->pk_column);
			snprintf(err->column, sizeof(err->column), "%s", t->pk_column);
			err->row = r;
			return false;
		}
	}
	out->url = malloc(ulen);
	if (out->url == NULL)
		goto oom;
	used = (size_t)snprintf(out->url, ulen, "%s/v0/%s/", c->base_url, p->base_id);
	if (!api_url_escape_segment(t->object, out->url, ulen, &used))
		goto oom;
	if (op == API_OP_DELETE) {
		out->method = HTTP_DELETE;
		for (r = 0; r < nrows; r++) {
			used += (size_t)snprintf(out->url + used, ulen - used,
			                         "%crecords%%5B%%5D=", r == 0 ? '?' : '&');
			if (used >= ulen ||
			    !api_url_escape(at_row_id(t, &rows[r]), out->url, ulen, &used))
				goto oom;
		}
		return true;
	}
	out->method = op == API_OP_INSERT ? HTTP_POST : HTTP_PATCH;
	for (r = 0; op == API_OP_INSERT && t->external_id != NULL && r < nrows; r++) {
		const struct api_value *v = api_image_get(&rows[r].new_image, t->external_id);
		if (v == NULL || v->value == NULL || v->value[0] == '\0') {
			api_error_set(
			        err, API_ERR_REQUIRED,
			        "column %s is the table's external id: an insert must give it a"
			        " value",
			        t->external_id);
			snprintf(err->column, sizeof(err->column), "%s", t->external_id);
			err->value_is_null = v == NULL || v->value == NULL;
			err->row = r;
			return false;
		}
	}
	out->content_type = "application/json";
	if (!json_out_init(&o, AT_MAX_BODY))
		goto oom;
	json_out_object_begin(&o);
	if (op == API_OP_INSERT && t->external_id != NULL) {
		/* an upsert merging on the external id: a repeated insert finds its record */
		out->method = HTTP_PATCH;
		connector_field_name(c, t, t->external_id, field, sizeof(field));
		json_out_key(&o, "performUpsert");
		json_out_object_begin(&o);
		json_out_key(&o, "fieldsToMergeOn");
		json_out_array_begin(&o);
		json_out_string(&o, field);
		json_out_array_end(&o);
		json_out_object_end(&o);
	}
	json_out_key(&o, "records");
	json_out_array_begin(&o);
	for (r = 0; r < nrows; r++) {
		const struct api_row_image *img = &rows[r].new_image;

		json_out_object_begin(&o);
		if (op == API_OP_UPDATE) {
			json_out_key(&o, "id");
			json_out_string(&o, at_row_id(t, &rows[r]));
		}
		json_out_key(&o, "fields");
		json_out_object_begin(&o);
		for (i = 0; i < img->nvalues; i++) {
			const struct api_value *v = &img->values[i];

			if (strcmp(v->column, t->pk_column) == 0 ||
			    api_table_is_readonly(t, v->column))
				continue;
			if (op == API_OP_INSERT && v->value == NULL)
				continue;
			if (op == API_OP_UPDATE && !api_row_changed(&rows[r], v->column))
				continue;
			connector_field_name(c, t, v->column, field, sizeof(field));
			json_out_key(&o, field);
			if (!api_put_json_value(&o, v)) {
				api_error_set(err, API_ERR_VALIDATION,
				              "value of column %s cannot be sent as a %s",
				              v->column, api_value_type_str(v->type));
				err->row = r;
				snprintf(err->column, sizeof(err->column), "%s", v->column);
				snprintf(err->value, sizeof(err->value), "%s", v->value);
				json_out_free(&o);
				return false;
			}
		}
		json_out_object_end(&o);
		json_out_object_end(&o);
	}
	json_out_array_end(&o);
	if (p->typecast) {
		json_out_key(&o, "typecast");
		json_out_bool(&o, true);
	}
	json_out_object_end(&o);
	out->body = json_out_take(&o, &out->body_len);
	if (out->body == NULL) {
		api_error_from_json_out(err, c->name, &o);
		json_out_free(&o);
		return false;
	}
	json_out_free(&o);
	return true;
oom:
	api_error_set(err, API_ERR_INTERNAL, "out of memory");
	return false;
}

static enum api_error_class at_class_of(long status, const char *type)
{
	if (type != NULL &&
	    (strcmp(type, "ROW_DOES_NOT_EXIST") == 0 || strcmp(type, "NOT_FOUND") == 0 ||
	     strcmp(type, "MODEL_ID_NOT_FOUND") == 0))
		return API_ERR_NOT_FOUND;
	switch (status) {
	case 401:
		return API_ERR_AUTH;
	case 403:
		return API_ERR_PERMISSION;
	case 404:
		return API_ERR_NOT_FOUND;
	case 429:
		return API_ERR_RATE_LIMIT;
	default:
		return status >= 500 || status < 400 ? API_ERR_SERVER : API_ERR_VALIDATION;
	}
}

/* 'Field "Email" cannot accept ...' / 'Unknown field name: "Nickname"' → the quoted name. */
static void at_field_from_message(const char *msg, char *buf, size_t size)
{
	const char *q = msg ? strchr(msg, '"') : NULL, *e;

	buf[0] = '\0';
	if (q == NULL || (e = strchr(q + 1, '"')) == NULL || e - q - 1 <= 0)
		return;
	snprintf(buf, size, "%.*s", (int)(e - q - 1), q + 1);
}

/* One answer record {"id","createdTime","fields"} (with an id) into rr. False: out of memory. */
static bool at_copy_record(const struct connector *c, const struct api_table *t,
                           const struct json_value *rec, struct api_row_result *rr)
{
	const struct json_value *fields = json_get(rec, "fields");
	const char *created = json_get_string(rec, "createdTime");
	size_t j, n = (fields ? fields->count : 0) + 1;
	char col[128];

	rr->id = strdup(json_get_string(rec, "id"));
	rr->fields = calloc(n, sizeof(*rr->fields));
	if (rr->id == NULL || rr->fields == NULL)
		return false;
	if (created != NULL) {
		struct api_field_value *f = &rr->fields[rr->nfields++];
		connector_column_name(c, t, "createdTime", col, sizeof(col));
		f->field = strdup("createdTime");
		f->column = strdup(col);
		f->value = strdup(created);
		if (f->field == NULL || f->column == NULL || f->value == NULL)
			return false;
	}
	for (j = 0; fields != NULL && fields->kind == JSON_OBJECT && j < fields->count; j++) {
		/* multiple selects, links, attachments: JSON text, for json/jsonb columns */
		if (!connector_result_field(c, t, fields->keys[j], fields->items[j],
		                            &rr->fields[rr->nfields++]))
			return false;
	}
	return true;
}

static void at_parse(const struct connector *c, const struct api_table *t, enum api_op op,
                     const struct api_row *rows, int nrows, const struct http_response *resp,
                     struct api_result *out)
{
	struct json_value *doc = NULL;
	const struct json_value *list;
	char perr[128], field[128];
	int i;

	if (!json_parse(resp->body, resp->body_len, NULL, &doc, perr, sizeof(perr)))
		doc = NULL;
	if (resp->status < 200 || resp->status >= 300) {
		const struct json_value *e = json_get(doc, "error");
		const char *type = json_string(e) ? json_string(e) : json_get_string(e, "type");
		const char *msg = json_get_string(e, "message");
		enum api_error_class cls = at_class_of(resp->status, type);

		if (msg != NULL)
			api_error_set(&out->error, cls, "%s", msg);
		else
			api_error_set(&out->error, cls, "%s answered HTTP %ld%s%.60s", c->name,
			              resp->status, type ? ": " : "", type ? type : "");
		snprintf(out->error.code, sizeof(out->error.code), "%s", type ? type : "");
		snprintf(out->error.reason, sizeof(out->error.reason), "%s", out->error.message);
		out->error.session_expired = resp->status == 401;
		out->error.nothing_written = resp->status < 500;
		/* Airtable waits 30 s before it lifts a rate limit, and says so only in its docs */
		if (cls == API_ERR_RATE_LIMIT && api_parse_retry_after(resp) < 0)
			out->error.retry_after = 30;
		at_field_from_message(msg, field, sizeof(field));
		api_error_locate(&out->error, c, t, op, rows, nrows, nrows == 1 ? 0 : -1, field);
		out->error.record_gone = type != NULL && (strcmp(type, "ROW_DOES_NOT_EXIST") == 0 ||
		                                          strcmp(type, "MODEL_ID_NOT_FOUND") == 0);
		goto done;
	}
	list = json_get(doc, "records");
	if (list == NULL || list->kind != JSON_ARRAY || list->count != (size_t)nrows) {
		api_error_set(&out->error, API_ERR_BAD_ANSWER,
		              "%s answer does not list the %d records", c->name, nrows);
		goto done;
	}
	out->rows = calloc((size_t)nrows, sizeof(*out->rows));
	if (out->rows == NULL)
		goto oom;
	out->nrows = nrows;
	for (i = 0; i < nrows; i++) {
		if (json_get_string(list->items[i], "id") == NULL) {
			api_result_free(out);
			api_error_set(&out->error, API_ERR_BAD_ANSWER,
			              "%s answered a record without an id", c->name);
			goto done;
		}
		if (!at_copy_record(c, t, list->items[i], &out->rows[i]))
			goto oom;
	}
	out->ok = true;
	goto done;
oom:
	api_result_free(out);
	api_error_set(&out->error, API_ERR_INTERNAL, "out of memory");
done:
	json_free(doc);
}

/* GET <base>/v0/<base_id>/<table>/<rec…>: the record as Airtable holds it now. */
static bool at_build_read(const struct connector *c, const struct api_table *t, const char *id,
                          const char *const *fields, int nfields, struct api_http_spec *out,
                          struct api_error *err)
{
	const struct at_priv *p = c->priv;
	const char *segs[] = {t->object, id};

	(void)fields;
	(void)nfields;
	if (t->object[0] == '\0') {
		api_error_set(err, API_ERR_INTERNAL, "%s: table %s has no object= (Airtable table)",
		              c->name, t->name);
		return false;
	}
	out->url = api_url_join(segs, 2, "%s/v0/%s/", c->base_url, p->base_id);
	if (out->url == NULL) {
		api_error_set(err, API_ERR_INTERNAL, "out of memory");
		return false;
	}
	out->method = HTTP_GET;
	return true;
}

/*
 * The record, or 404 ({"error":"NOT_FOUND"}, or {"error":{"type":"MODEL_ID_NOT_FOUND",..}} for
 * an id of no record). Like a listing, the answer leaves out empty fields: their columns keep
 * what they hold, as with the sync worker's pages.
 */
static void at_parse_read(const struct connector *c, const struct api_table *t, const char *id,
                          const struct http_response *resp, struct api_result *out)
{
	struct api_value key = {t->pk_column, id, API_VALUE_TEXT};
	struct api_row row = {{&key, 1}, {NULL, 0}};
	struct json_value *doc = NULL;
	char perr[128];

	if (resp->status == 404) {
		api_error_set(&out->error, API_ERR_NOT_FOUND, "%s: record %s does not exist",
		              c->name, id);
		return;
	}
	if (resp->status < 200 || resp->status >= 300) {
		at_parse(c, t, API_OP_UPDATE, &row, 1, resp, out);
		return;
	}
	if (!json_parse(resp->body, resp->body_len, NULL, &doc, perr, sizeof(perr)) ||
	    doc->kind != JSON_OBJECT || json_get_string(doc, "id") == NULL ||
	    strcmp(json_get_string(doc, "id"), id) != 0) {
		api_error_set(&out->error, API_ERR_BAD_ANSWER,
		              "%s answered a read without record %s", c->name, id);
		goto done;
	}
	connector_result_one(c, t, doc, at_copy_record, out);
done:
	json_free(doc);
}

/* A formula string literal: "…" with " and \\ escaped by a backslash. */
static bool at_formula_string(const char *v, char *out, size_t size, size_t *used)
{
	if (*used + 1 >= size)
		return false;
	out[(*used)++] = '"';
	for (; *v != '\0'; v++) {
		if (*used + 3 >= size)
			return false;
		if (*v == '"' || *v == '\\')
			out[(*used)++] = '\\';
		out[(*used)++] = *v;
	}
	out[(*used)++] = '"';
	out[*used] = '\0';
	return true;
}

static bool at_build_find(const struct connector *c, const struct api_table *t, const char *value,
                          const char *const *fields, int nfields, struct api_http_spec *out,
                          struct api_error *err)
{
	const struct at_priv *p = c->priv;
	char field[128], formula[1024];
	size_t ulen, used = 0;

	(void)fields;
	(void)nfields;
	if (t->object[0] == '\0') {
		api_error_set(err, API_ERR_INTERNAL, "%s: table %s has no object= (Airtable table)",
		              c->name, t->name);
		return false;
	}
	connector_field_name(c, t, t->external_id, field, sizeof(field));
	if (strchr(field, '}') != NULL) {
		api_error_set(err, API_ERR_INTERNAL, "%s: field %s cannot be named in a formula",
		              c->name, field);
		return false;
	}
	used = (size_t)snprintf(formula, sizeof(formula), "{%s}=", field);
	if (used >= sizeof(formula) || !at_formula_string(value, formula, sizeof(formula), &used)) {
		api_error_set(err, API_ERR_VALIDATION, "%s: external id too long to look up",
		              c->name);
		return false;
	}
	ulen = strlen(c->base_url) + 3 * strlen(t->object) + 3 * used + 128;
	out->url = malloc(ulen);
	if (out->url == NULL)
		goto oom;
	used = (size_t)snprintf(out->url, ulen, "%s/v0/%s/", c->base_url, p->base_id);
	if (!api_url_escape_segment(t->object, out->url, ulen, &used))
		goto oom;
	used += (size_t)snprintf(out->url + used, ulen - used, "?maxRecords=2&filterByFormula=");
	if (used >= ulen || !api_url_escape(formula, out->url, ulen, &used))
		goto oom;
	out->method = HTTP_GET;
	return true;
oom:
	api_error_set(err, API_ERR_INTERNAL, "out of memory");
	return false;
}

static void at_parse_find(const struct connector *c, const struct api_table *t, const char *value,
                          const struct http_response *resp, struct api_result *out)
{
	struct api_value key = {t->pk_column, value, API_VALUE_TEXT};
	struct api_row row = {{&key, 1}, {NULL, 0}};
	struct json_value *doc = NULL;
	const struct json_value *list;
	char perr[128];

	if (resp->status < 200 || resp->status >= 300) {
		at_parse(c, t, API_OP_UPDATE, &row, 1, resp, out);
		return;
	}
	if (!json_parse(resp->body, resp->body_len, NULL, &doc, perr, sizeof(perr)) ||
	    (list = json_get(doc, "records")) == NULL || list->kind != JSON_ARRAY) {
		api_error_set(&out->error, API_ERR_BAD_ANSWER, "%s answer lists no records",
		              c->name);
		goto done;
	}
	if (list->count == 0) {
		api_error_set(&out->error, API_ERR_NOT_FOUND, "%s: no record has external id %s",
		              c->name, value);
		goto done;
	}
	if (list->count > 1 || json_get_string(list->items[0], "id") == NULL) {
		api_error_set(&out->error, API_ERR_BAD_ANSWER,
		              "%s: several records have external id %s", c->name, value);
		goto done;
	}
	connector_result_one(c, t, list->items[0], at_copy_record, out);
done:
	json_free(doc);
}

const struct connector_ops airtable_connector_ops = {
        .type = "airtable",
        .keys = at_keys,
        .configure = at_configure,
        .release = at_release,
        .max_rows = at_max_rows,
        .field_name = at_same_name,
        .column_name = at_same_name,
        .build = at_build,
        .parse = at_parse,
        .build_read = at_build_read,
        .parse_read = at_parse_read,
        .build_find = at_build_find,
        .parse_find = at_parse_find,
        .changes = &airtable_changes_ops,
};
