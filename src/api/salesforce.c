/*
 * salesforce — the Salesforce connector: sObject Collections with allOrNone=true.
 *
 *   insert  POST   <base>/services/data/<ver>/composite/sobjects {"allOrNone":true,"records":[...]}
 *   update  PATCH  same URL, each record with "id" and its changed fields
 *   delete  DELETE same URL ?ids=<id>,<id>&allOrNone=true
 *
 * At most 200 records per request. The answer is a list of SaveResults in request order
 * ([{"id":..,"success":true,"errors":[]}]); with allOrNone one bad record fails all of them and
 * the others say ALL_OR_NONE_OPERATION_ROLLED_BACK, which we skip to find the real cause. A delete
 * refused only because some records are deleted already (ENTITY_IS_DELETED) names them in
 * api_result.gone, and the call sends it again without them. Errors
 * that concern the whole request come as [{"message":..,"errorCode":..}] with a 4xx/5xx status.
 * Columns map to fields by snake_case → PascalCase (first_name ↔ FirstName, id ↔ Id).
 *
 * A table with external_id=<column> (an External ID field of the object) inserts by upsert on
 * that field, so that an insert sent twice (a retry, a client repeating a statement whose
 * outcome it was not told) cannot create two records, and a lost answer can be found again:
 *   insert  PATCH  <base>/services/data/<ver>/composite/sobjects/<Object>/<ExtField> (same body;
 *                  every row must give the external id)
 *   find    GET    <base>/services/data/<ver>/sobjects/<Object>/<ExtField>/<value> → the record;
 *                  404 none, 300 several (not an external id after all)
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/changes.h"
#include "api/connector.h"
#include "api/json.h"

#define SF_MAX_ROWS 200
#define SF_MAX_BODY (6u << 20)

struct sf_priv {
	char api_version[16];
};

static const char *const sf_keys[] = {"api_version", NULL};

static bool sf_configure(struct connector *c, const struct cf_kv *kv, int nkv, char *err,
                         size_t errsize)
{
	const char *ver = api_kv_get(kv, nkv, "api_version");
	struct sf_priv *p;
	size_t i, len;
	bool dot = false;

	if (ver == NULL)
		ver = "v59.0";
	len = strlen(ver);
	/* vNN.N: checked because it becomes part of every URL. */
	if (len < 4 || len >= sizeof(p->api_version) || ver[0] != 'v' ||
	    !isdigit((unsigned char)ver[1]))
		goto bad;
	for (i = 1; i < len; i++) {
		if (ver[i] == '.' && !dot && i + 1 < len)
			dot = true;
		else if (!isdigit((unsigned char)ver[i]))
			goto bad;
	}
	if (!dot)
		goto bad;
	p = calloc(1, sizeof(*p));
	if (p == NULL) {
		snprintf(err, errsize, "out of memory");
		return false;
	}
	snprintf(p->api_version, sizeof(p->api_version), "%s", ver);
	c->priv = p;
	return true;
bad:
	snprintf(err, errsize, "api \"%s\": api_version=%.20s is not like v59.0", c->name, ver);
	return false;
}

static void sf_release(struct connector *c)
{
	free(c->priv);
	c->priv = NULL;
}

static int sf_max_rows(const struct connector *c, enum api_op op)
{
	return SF_MAX_ROWS;
}

static void sf_field_name(const struct connector *c, const char *column, char *buf, size_t size)
{
	api_snake_to_pascal(column, buf, size);
}

static void sf_column_name(const struct connector *c, const char *field, char *buf, size_t size)
{
	api_pascal_to_snake(field, buf, size);
}

/* Writes one column value; false (err filled) for a value the declared type cannot carry. */
static bool sf_put_value(struct json_out *o, const struct connector *c, const struct api_table *t,
                         const struct api_value *v, int row, struct api_error *err)
{
	if (api_put_json_value(o, v))
		return true;
	api_error_set(err, API_ERR_VALIDATION, "value of column %s cannot be sent as a %s",
	              v->column, api_value_type_str(v->type));
	err->row = row;
	snprintf(err->column, sizeof(err->column), "%s", v->column);
	snprintf(err->value, sizeof(err->value), "%s", v->value);
	connector_field_name(c, t, v->column, err->field, sizeof(err->field));
	return false;
}

static bool sf_build_records(const struct connector *c, const struct api_table *t, enum api_op op,
                             const struct api_row *rows, int nrows, struct json_out *o,
                             struct api_error *err)
{
	char field[128];
	int r, i;

	json_out_object_begin(o);
	json_out_key(o, "allOrNone");
	json_out_bool(o, true);
	json_out_key(o, "records");
	json_out_array_begin(o);
	for (r = 0; r < nrows; r++) {
		const struct api_row_image *img = &rows[r].new_image;

		json_out_object_begin(o);
		json_out_key(o, "attributes");
		json_out_object_begin(o);
		json_out_key(o, "type");
		json_out_string(o, t->object);
		json_out_object_end(o);
		if (op == API_OP_UPDATE) {
			const struct api_value *oid =
			        api_image_get(&rows[r].old_image, t->pk_column);
			const struct api_value *nid = api_image_get(img, t->pk_column);
			if (oid == NULL || oid->value == NULL || oid->value[0] == '\0') {
				api_error_set(err, API_ERR_VALIDATION,
				              "row has no record id in column %s", t->pk_column);
				snprintf(err->column, sizeof(err->column), "%s", t->pk_column);
				err->row = r;
				return false;
			}
			if (nid != NULL && api_row_changed(&rows[r], t->pk_column)) {
				api_error_set(err, API_ERR_VALIDATION,
				              "the record id column %s cannot be changed",
				              t->pk_column);
				snprintf(err->column, sizeof(err->column), "%s", t->pk_column);
				if (nid->value != NULL)
					snprintf(err->value, sizeof(err->value), "%s", nid->value);
				err->row = r;
				return false;
			}
			json_out_key(o, "id");
			json_out_string(o, oid->value);
		}
		for (i = 0; i < img->nvalues; i++) {
			const struct api_value *v = &img->values[i];

			if (strcmp(v->column, t->pk_column) == 0 ||
			    api_table_is_readonly(t, v->column))
				continue;
			/* Insert: NULL means "not given", the API's default applies. */
			if (op == API_OP_INSERT && v->value == NULL)
				continue;
			if (op == API_OP_UPDATE && !api_row_changed(&rows[r], v->column))
				continue;
			connector_field_name(c, t, v->column, field, sizeof(field));
			json_out_key(o, field);
			if (!sf_put_value(o, c, t, v, r, err))
				return false;
		}
		json_out_object_end(o);
	}
	json_out_array_end(o);
	json_out_object_end(o);
	return true;
}

static bool sf_build(const struct connector *c, const struct api_table *t, enum api_op op,
                     const struct api_row *rows, int nrows, struct api_http_spec *out,
                     struct api_error *err)
{
	const struct sf_priv *p = c->priv;
	struct json_out o;
	size_t ulen, used;
	int r;

	if (t->object[0] == '\0') {
		api_error_set(err, API_ERR_INTERNAL, "%s: table %s has no object= (sObject type)",
		              c->name, t->name);
		return false;
	}
	ulen = strlen(c->base_url) + 64 + (size_t)nrows * 3 * 64 + 3 * strlen(t->object) + 3 * 128;
	out->url = malloc(ulen);
	if (out->url == NULL)
		goto oom;
	used = (size_t)snprintf(out->url, ulen, "%s/services/data/%s/composite/sobjects",
	                        c->base_url, p->api_version);
	if (op == API_OP_DELETE) {
		out->method = HTTP_DELETE;
		used += (size_t)snprintf(out->url + used, ulen - used, "?ids=");
		for (r = 0; r < nrows; r++) {
			const struct api_value *id =
			        api_image_get(&rows[r].old_image, t->pk_column);
			if (id == NULL || id->value == NULL || id->value[0] == '\0' ||
			    strlen(id->value) > 64) {
				api_error_set(err, API_ERR_VALIDATION,
				              "row has no usable record id in column %s",
				              t->pk_column);
				snprintf(err->column, sizeof(err->column), "%s", t->pk_column);
				err->row = r;
				return false;
			}
			if (r > 0)
				out->url[used++] = ',';
			if (!api_url_escape(id->value, out->url, ulen, &used))
				goto oom;
		}
		used += (size_t)snprintf(out->url + used, ulen - used, "&allOrNone=true");
		return used < ulen;
	}
	out->method = op == API_OP_INSERT ? HTTP_POST : HTTP_PATCH;
	if (op == API_OP_INSERT && t->external_id != NULL) {
		char field[128];

		for (r = 0; r < nrows; r++) {
			const struct api_value *v =
			        api_image_get(&rows[r].new_image, t->external_id);
			if (v == NULL || v->value == NULL || v->value[0] == '\0') {
				api_error_set(err, API_ERR_REQUIRED,
				              "column %s is the table's external id: an insert must"
				              " give it a value",
				              t->external_id);
				snprintf(err->column, sizeof(err->column), "%s", t->external_id);
				err->value_is_null = v == NULL || v->value == NULL;
				err->row = r;
				return false;
			}
		}
		connector_field_name(c, t, t->external_id, field, sizeof(field));
		out->method = HTTP_PATCH; /* upsert on the external id */
		out->url[used++] = '/';
		out->url[used] = '\0';
		if (!api_url_escape_segment(t->object, out->url, ulen, &used) || used + 2 > ulen)
			goto oom;
		out->url[used++] = '/';
		out->url[used] = '\0';
		if (!api_url_escape_segment(field, out->url, ulen, &used))
			goto oom;
	}
	out->content_type = "application/json";
	if (!json_out_init(&o, SF_MAX_BODY))
		goto oom;
	if (!sf_build_records(c, t, op, rows, nrows, &o, err)) {
		json_out_free(&o);
		return false;
	}
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

struct sf_code_class {
	const char *code;
	enum api_error_class cls;
};

static const struct sf_code_class sf_codes[] = {
        {"REQUIRED_FIELD_MISSING", API_ERR_REQUIRED},
        {"DUPLICATE_VALUE", API_ERR_DUPLICATE},
        {"DUPLICATES_DETECTED", API_ERR_DUPLICATE},
        {"DUPLICATE_EXTERNAL_ID", API_ERR_DUPLICATE},
        {"INVALID_SESSION_ID", API_ERR_AUTH},
        {"INVALID_AUTH_HEADER", API_ERR_AUTH},
        {"REQUEST_LIMIT_EXCEEDED", API_ERR_RATE_LIMIT},
        {"INSUFFICIENT_ACCESS_OR_READONLY", API_ERR_PERMISSION},
        {"INSUFFICIENT_ACCESS_ON_CROSS_REFERENCE_ENTITY", API_ERR_PERMISSION},
        {"INSUFFICIENT_ACCESS", API_ERR_PERMISSION},
        {"API_DISABLED_FOR_ORG", API_ERR_PERMISSION},
        {"API_CURRENTLY_DISABLED", API_ERR_PERMISSION},
        {"ENTITY_IS_DELETED", API_ERR_NOT_FOUND},
        {"NOT_FOUND", API_ERR_NOT_FOUND},
        {"INVALID_ID_FIELD", API_ERR_NOT_FOUND},
        {"UNABLE_TO_LOCK_ROW", API_ERR_SERVER},
        {"SERVER_UNAVAILABLE", API_ERR_SERVER},
};

/* Phrases that complete "Key (column)=(value) ..." for the common record errors. */
static const struct {
	const char *code;
	const char *reason;
} sf_reasons[] = {
        {"INVALID_EMAIL_ADDRESS", "is not a valid email address."},
        {"REQUIRED_FIELD_MISSING", "is required."},
        {"DUPLICATE_VALUE", "duplicates the value of another record."},
        {"DUPLICATES_DETECTED", "duplicates another record."},
        {"STRING_TOO_LONG", "is too long."},
        {"INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", "is not one of the allowed values."},
        {"NUMBER_OUTSIDE_VALID_RANGE", "is out of range."},
        {"INVALID_TYPE_ON_FIELD_IN_RECORD", "has the wrong type."},
        {"MALFORMED_ID", "is not a valid record id."},
        {"INVALID_CROSS_REFERENCE_KEY", "does not refer to an existing record."},
};

static enum api_error_class sf_class_of(const char *code, long status)
{
	size_t i;

	for (i = 0; code != NULL && i < sizeof(sf_codes) / sizeof(sf_codes[0]); i++) {
		if (strcmp(sf_codes[i].code, code) == 0)
			return sf_codes[i].cls;
	}
	if (status == 401)
		return API_ERR_AUTH;
	if (status == 403)
		return API_ERR_PERMISSION;
	if (status == 404)
		return API_ERR_NOT_FOUND;
	if (status == 429)
		return API_ERR_RATE_LIMIT;
	/* 5xx, and 1xx/3xx: a redirect means base_url is wrong; either way nothing was done */
	if (status >= 500 || (status < 400 && (status < 200 || status >= 300)))
		return API_ERR_SERVER;
	/* INVALID_EMAIL_ADDRESS, FIELD_CUSTOM_VALIDATION_EXCEPTION, STRING_TOO_LONG, ... */
	return API_ERR_VALIDATION;
}

static void sf_set_error(struct api_error *e, const char *cname, const char *code,
                         const char *message, long status)
{
	enum api_error_class cls = sf_class_of(code, status);

	size_t i;

	api_error_set(e, cls, "%s", message && message[0] ? message : "rejected by Salesforce");
	snprintf(e->code, sizeof(e->code), "%s", code ? code : "");
	snprintf(e->reason, sizeof(e->reason), "%s", e->message);
	for (i = 0; code != NULL && i < sizeof(sf_reasons) / sizeof(sf_reasons[0]); i++) {
		if (strcmp(sf_reasons[i].code, code) == 0)
			snprintf(e->reason, sizeof(e->reason), "%s", sf_reasons[i].reason);
	}
	e->session_expired = cls == API_ERR_AUTH && status == 401;
	e->record_gone = code != NULL && strcmp(code, "ENTITY_IS_DELETED") == 0;
	/* allOrNone, or an error about the whole request: no record was changed. */
	e->nothing_written = cls != API_ERR_SERVER || status < 500;
}

/*
 * The per-record shape: the first error that is not the rollback notice, else any. For a delete,
 * a record that is gone (ENTITY_IS_DELETED) is no cause of its own: another record's refusal is
 * what the client needs to see.
 */
static bool sf_find_record_error(const struct json_value *arr, enum api_op op, int *row,
                                 const struct json_value **errv)
{
	const struct json_value *fallback = NULL, *gone = NULL;
	int fallback_row = -1, gone_row = -1;
	size_t i, j;

	for (i = 0; i < arr->count; i++) {
		const struct json_value *rec = arr->items[i];
		const struct json_value *success = json_get(rec, "success");
		const struct json_value *errs = json_get(rec, "errors");

		if (success != NULL && success->kind == JSON_BOOL && success->boolean)
			continue;
		if (errs == NULL || errs->kind != JSON_ARRAY)
			continue;
		for (j = 0; j < errs->count; j++) {
			const char *sc = json_get_string(errs->items[j], "statusCode");
			if (sc != NULL && op == API_OP_DELETE &&
			    strcmp(sc, "ENTITY_IS_DELETED") == 0) {
				if (gone == NULL) {
					gone = errs->items[j];
					gone_row = (int)i;
				}
				continue;
			}
			if (sc != NULL && strcmp(sc, "ALL_OR_NONE_OPERATION_ROLLED_BACK") != 0) {
				*row = (int)i;
				*errv = errs->items[j];
				return true;
			}
			if (fallback == NULL) {
				fallback = errs->items[j];
				fallback_row = (int)i;
			}
		}
	}
	if (gone != NULL) {
		*row = gone_row;
		*errv = gone;
		return true;
	}
	if (fallback == NULL)
		return false;
	*row = fallback_row;
	*errv = fallback;
	return true;
}

/*
 * A delete refused under allOrNone: which rows were refused only because their records no
 * longer exist (ENTITY_IS_DELETED), the others having been rolled back. NULL when no record
 * is gone, when any was refused for another cause, or out of memory: the refusal stands.
 */
static bool *sf_gone_rows(const struct json_value *arr)
{
	bool *gone = calloc(arr->count ? arr->count : 1, sizeof(*gone));
	bool any = false;
	size_t i, j;

	if (gone == NULL)
		return NULL;
	for (i = 0; i < arr->count; i++) {
		const struct json_value *rec = arr->items[i];
		const struct json_value *success = json_get(rec, "success");
		const struct json_value *errs = json_get(rec, "errors");
		bool other = false;

		if (success != NULL && success->kind == JSON_BOOL && success->boolean)
			continue;
		if (errs == NULL || errs->kind != JSON_ARRAY || errs->count == 0)
			goto refused;
		for (j = 0; j < errs->count; j++) {
			const char *sc = json_get_string(errs->items[j], "statusCode");

			if (sc != NULL && strcmp(sc, "ENTITY_IS_DELETED") == 0)
				gone[i] = true;
			else if (sc == NULL || strcmp(sc, "ALL_OR_NONE_OPERATION_ROLLED_BACK") != 0)
				other = true;
		}
		if (other && !gone[i])
			goto refused;
		any = any || gone[i];
	}
	if (any)
		return gone;
refused:
	free(gone);
	return NULL;
}

static void sf_parse(const struct connector *c, const struct api_table *t, enum api_op op,
                     const struct api_row *rows, int nrows, const struct http_response *resp,
                     struct api_result *out)
{
	struct json_value *doc = NULL;
	const struct json_value *first, *errv = NULL, *fields;
	char perr[128];
	int i, erow = -1;

	if (!json_parse(resp->body, resp->body_len, NULL, &doc, perr, sizeof(perr)))
		doc = NULL;
	if (resp->status < 200 || resp->status >= 300) {
		/* [{"message":..,"errorCode":..,"fields":[..]}], or whatever a proxy sent */
		first = json_at(doc, 0);
		if (first == NULL && doc != NULL && doc->kind == JSON_OBJECT)
			first = doc;
		const char *code = json_get_string(first, "errorCode");
		const char *msg = json_get_string(first, "message");
		char fallback[96];
		if (msg == NULL) {
			snprintf(fallback, sizeof(fallback), "Salesforce answered HTTP %ld",
			         resp->status);
			msg = fallback;
		}
		sf_set_error(&out->error, c->name, code, msg, resp->status);
		fields = json_get(first, "fields");
		api_error_locate(&out->error, c, t, op, rows, nrows, -1,
		                 json_string(json_at(fields, 0)));
		goto done;
	}
	if (doc == NULL || doc->kind != JSON_ARRAY) {
		api_error_set(&out->error, API_ERR_BAD_ANSWER,
		              "Salesforce answer is not a list of results (%s)",
		              doc == NULL ? perr : json_kind_str(doc->kind));
		goto done;
	}
	if (doc->count != (size_t)nrows) {
		api_error_set(&out->error, API_ERR_BAD_ANSWER,
		              "Salesforce answered %zu results for %d records", doc->count, nrows);
		goto done;
	}
	if (sf_find_record_error(doc, op, &erow, &errv)) {
		sf_set_error(&out->error, c->name, json_get_string(errv, "statusCode"),
		             json_get_string(errv, "message"), resp->status);
		out->error.nothing_written = true; /* allOrNone=true */
		if (op == API_OP_DELETE)
			out->gone = sf_gone_rows(doc);
		fields = json_get(errv, "fields");
		api_error_locate(&out->error, c, t, op, rows, nrows, erow,
		                 json_string(json_at(fields, 0)));
		goto done;
	}
	out->rows = calloc((size_t)nrows, sizeof(*out->rows));
	if (out->rows == NULL) {
		api_error_set(&out->error, API_ERR_INTERNAL, "out of memory");
		goto done;
	}
	out->nrows = nrows;
	for (i = 0; i < nrows; i++) {
		const struct json_value *rec = doc->items[i];
		const struct json_value *success = json_get(rec, "success");
		const char *id = json_get_string(rec, "id");

		if (success == NULL || success->kind != JSON_BOOL || !success->boolean) {
			api_result_free(out);
			api_error_set(&out->error, API_ERR_BAD_ANSWER,
			              "Salesforce result %d has neither success nor errors", i);
			goto done;
		}
		if (id == NULL && op == API_OP_INSERT) {
			api_result_free(out);
			api_error_set(&out->error, API_ERR_BAD_ANSWER,
			              "Salesforce result %d carries no record id", i);
			goto done;
		}
		if (id == NULL) {
			const struct api_value *v = api_image_get(&rows[i].old_image, t->pk_column);
			id = v != NULL ? v->value : NULL;
		}
		if (id != NULL && (out->rows[i].id = strdup(id)) == NULL) {
			api_result_free(out);
			api_error_set(&out->error, API_ERR_INTERNAL, "out of memory");
			goto done;
		}
	}
	out->ok = true;
done:
	json_free(doc);
}

/* GET <base>/services/data/<ver>/sobjects/<Object>/<Id>: the record's fields as they are now. */
static bool sf_build_read(const struct connector *c, const struct api_table *t, const char *id,
                          const char *const *fields, int nfields, struct api_http_spec *out,
                          struct api_error *err)
{
	const struct sf_priv *p = c->priv;
	const char *segs[] = {t->object, id};

	if (t->object[0] == '\0') {
		api_error_set(err, API_ERR_INTERNAL, "%s: table %s has no object= (e.g. Contact)",
		              c->name, t->name);
		return false;
	}
	out->url = api_url_join(segs, 2, "%s/services/data/%s/sobjects/", c->base_url,
	                        p->api_version);
	if (out->url == NULL) {
		api_error_set(err, API_ERR_INTERNAL, "out of memory");
		return false;
	}
	out->method = HTTP_GET;
	return true;
}

static void sf_parse_read(const struct connector *c, const struct api_table *t, const char *id,
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
		sf_parse(c, t, API_OP_UPDATE, &row, 1, resp, out);
		return;
	}
	if (!json_parse(resp->body, resp->body_len, NULL, &doc, perr, sizeof(perr)) ||
	    doc->kind != JSON_OBJECT) {
		api_error_set(&out->error, API_ERR_BAD_ANSWER, "Salesforce record is not an object");
		goto done;
	}
	connector_result_object(c, t, id, doc, "attributes", out);
done:
	json_free(doc);
}

static bool sf_build_find(const struct connector *c, const struct api_table *t, const char *value,
                          const char *const *fields, int nfields, struct api_http_spec *out,
                          struct api_error *err)
{
	const struct sf_priv *p = c->priv;
	char field[128];
	const char *segs[] = {t->object, field, value};

	(void)fields;
	(void)nfields;
	if (t->object[0] == '\0') {
		api_error_set(err, API_ERR_INTERNAL, "%s: table %s has no object= (e.g. Contact)",
		              c->name, t->name);
		return false;
	}
	connector_field_name(c, t, t->external_id, field, sizeof(field));
	out->url = api_url_join(segs, 3, "%s/services/data/%s/sobjects/", c->base_url,
	                        p->api_version);
	if (out->url == NULL) {
		api_error_set(err, API_ERR_INTERNAL, "out of memory");
		return false;
	}
	out->method = HTTP_GET;
	return true;
}

static void sf_parse_find(const struct connector *c, const struct api_table *t, const char *value,
                          const struct http_response *resp, struct api_result *out)
{
	struct json_value *doc = NULL;
	const char *id;
	char perr[128];

	if (resp->status == 300) {
		api_error_set(&out->error, API_ERR_BAD_ANSWER,
		              "%s: several records have external id %s", c->name, value);
		return;
	}
	if (resp->status >= 200 && resp->status < 300) {
		if (!json_parse(resp->body, resp->body_len, NULL, &doc, perr, sizeof(perr)) ||
		    doc->kind != JSON_OBJECT || (id = json_get_string(doc, "Id")) == NULL ||
		    id[0] == '\0') {
			json_free(doc);
			api_error_set(&out->error, API_ERR_BAD_ANSWER,
			              "Salesforce record found by external id has no Id");
			return;
		}
		/* the record as read by its id */
		sf_parse_read(c, t, id, resp, out);
		json_free(doc);
		return;
	}
	sf_parse_read(c, t, value, resp, out);
}

const struct connector_ops salesforce_connector_ops = {
        .type = "salesforce",
        .keys = sf_keys,
        .configure = sf_configure,
        .release = sf_release,
        .max_rows = sf_max_rows,
        .field_name = sf_field_name,
        .column_name = sf_column_name,
        .build = sf_build,
        .parse = sf_parse,
        .build_read = sf_build_read,
        .parse_read = sf_parse_read,
        .build_find = sf_build_find,
        .parse_find = sf_parse_find,
        .changes = &salesforce_changes_ops,
};
