/*
 * hubspot — the HubSpot CRM connector: batch endpoints, up to 100 records per request.
 *
 *   insert  POST <base>/crm/v3/objects/<object>/batch/create  {"inputs":[{"properties":{..},
 *                                                              "objectWriteTraceId":"<row>"}]}
 *   update  POST .../batch/update   {"inputs":[{"id":"..","properties":{changed},...}]}
 *   delete  POST .../batch/archive  {"inputs":[{"id":".."}]}  → 204
 *
 * HubSpot does not promise results in input order, so each input carries its row number as
 * objectWriteTraceId and results are matched by it (or by id for updates). Property names are
 * the column names (HubSpot's internal names: firstname, lastname, email; columns= maps
 * others); every value travels as a string, "" clears a property. A 207 answer means only part
 * of the batch was applied: that is reported as an unknown outcome, never as a clean error.
 * Errors: {"status":"error","category":..,"message":..,"errors":[{"code","message","context":
 * {"propertyName":[..]}}]}; for property validation the message embeds a JSON list of
 * {"name","error","message"} which is read too.
 *
 *   read    POST .../batch/read  {"properties":[the table's fields],"inputs":[{"id":".."}]}
 *           → {"status":"COMPLETE","results":[{"id","properties",..}]}; an id HubSpot does not
 *           have (or has archived) is left out of results and named in "errors" (category
 *           OBJECT_NOT_FOUND, answered 207 or 404).
 *   find    the same with "idProperty":"<field>" and the value as the input's id: a record by a
 *           property with unique values (external_id=, e.g. email of contacts), for an insert
 *           whose answer was lost. A unique property also keeps a repeated insert from making a
 *           second record: HubSpot refuses the duplicate (409).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/changes.h"
#include "api/connector.h"
#include "api/json.h"

#define HS_MAX_ROWS 100
#define HS_MAX_BODY (4u << 20)

static bool hs_configure(struct connector *c, const struct cf_kv *kv, int nkv, char *err,
                         size_t errsize)
{
	return true;
}

static int hs_max_rows(const struct connector *c, enum api_op op)
{
	return HS_MAX_ROWS;
}

static void hs_same_name(const struct connector *c, const char *name, char *buf, size_t size)
{
	snprintf(buf, size, "%s", name);
}

static const char *hs_row_id(const struct api_table *t, const struct api_row *row)
{
	const struct api_value *v = api_image_get(&row->old_image, t->pk_column);

	return v != NULL && v->value != NULL && v->value[0] != '\0' ? v->value : NULL;
}

static bool hs_build(const struct connector *c, const struct api_table *t, enum api_op op,
                     const struct api_row *rows, int nrows, struct api_http_spec *out,
                     struct api_error *err)
{
	static const char *const verbs[] = {"create", "update", "archive"};
	size_t ulen = strlen(c->base_url) + 3 * strlen(t->object) + 64, used;
	struct json_out o;
	char field[128], trace[16];
	int r, i;

	if (t->object[0] == '\0') {
		api_error_set(err, API_ERR_INTERNAL, "%s: table %s has no object= (e.g. contacts)",
		              c->name, t->name);
		return false;
	}
	out->url = malloc(ulen);
	if (out->url == NULL)
		goto oom;
	used = (size_t)snprintf(out->url, ulen, "%s/crm/v3/objects/", c->base_url);
	if (!api_url_escape_segment(t->object, out->url, ulen, &used))
		goto oom;
	snprintf(out->url + used, ulen - used, "/batch/%s", verbs[op]);
	out->method = HTTP_POST;
	out->content_type = "application/json";
	if (!json_out_init(&o, HS_MAX_BODY))
		goto oom;
	json_out_object_begin(&o);
	json_out_key(&o, "inputs");
	json_out_array_begin(&o);
	for (r = 0; r < nrows; r++) {
		const struct api_row_image *img = &rows[r].new_image;

		json_out_object_begin(&o);
		if (op != API_OP_INSERT) {
			const char *id = hs_row_id(t, &rows[r]);
			if (id == NULL) {
				api_error_set(err, API_ERR_VALIDATION,
				              "row has no record id in column %s", t->pk_column);
				snprintf(err->column, sizeof(err->column), "%s", t->pk_column);
				err->row = r;
				json_out_free(&o);
				return false;
			}
			json_out_key(&o, "id");
			json_out_string(&o, id);
		}
		if (op != API_OP_DELETE) {
			snprintf(trace, sizeof(trace), "%d", r);
			json_out_key(&o, "objectWriteTraceId");
			json_out_string(&o, trace);
			json_out_key(&o, "properties");
			json_out_object_begin(&o);
			for (i = 0; i < img->nvalues; i++) {
				const struct api_value *v = &img->values[i];
				const char *text = v->value;

				if (strcmp(v->column, t->pk_column) == 0 ||
				    api_table_is_readonly(t, v->column))
					continue;
				if (op == API_OP_INSERT && text == NULL)
					continue;
				if (op == API_OP_UPDATE && !api_row_changed(&rows[r], v->column))
					continue;
				if (text == NULL)
					text = ""; /* clears the property */
				else if (v->type == API_VALUE_BOOL)
					text = (strcmp(text, "t") == 0 || strcmp(text, "true") == 0)
					               ? "true"
					               : "false";
				connector_field_name(c, t, v->column, field, sizeof(field));
				json_out_key(&o, field);
				json_out_string(&o, text);
			}
			json_out_object_end(&o);
		}
		json_out_object_end(&o);
	}
	json_out_array_end(&o);
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

static enum api_error_class hs_class_of(long status, const char *category)
{
	if (category != NULL && strcmp(category, "CONFLICT") == 0)
		return API_ERR_DUPLICATE;
	switch (status) {
	case 401:
		return API_ERR_AUTH;
	case 403:
		return API_ERR_PERMISSION;
	case 404:
		return API_ERR_NOT_FOUND;
	case 409:
		return API_ERR_DUPLICATE;
	case 429:
		return API_ERR_RATE_LIMIT;
	default:
		return status >= 500 || status < 400 ? API_ERR_SERVER : API_ERR_VALIDATION;
	}
}

/*
 * "Property values were not valid: [{...}]": the list after the colon names the property.
 * Returns the parsed list (to free) or NULL.
 */
static struct json_value *hs_embedded_list(const char *msg)
{
	const char *start = msg ? strchr(msg, '[') : NULL;
	struct json_value *v = NULL;
	char err[64];

	if (start == NULL || !json_parse(start, strlen(start), NULL, &v, err, sizeof(err)))
		return NULL;
	if (v->kind != JSON_ARRAY) {
		json_free(v);
		return NULL;
	}
	return v;
}

static void hs_error(const struct connector *c, const struct api_table *t, enum api_op op,
                     const struct api_row *rows, int nrows, const struct json_value *doc,
                     long status, struct api_result *out)
{
	const char *category = json_get_string(doc, "category");
	const char *msg = json_get_string(doc, "message");
	const struct json_value *e0 = json_at(json_get(doc, "errors"), 0);
	const char *code = json_get_string(e0, "code");
	const char *prop =
	        json_string(json_at(json_get(json_get(e0, "context"), "propertyName"), 0));
	struct json_value *list = hs_embedded_list(msg);
	const struct json_value *l0 = json_at(list, 0);
	enum api_error_class cls = hs_class_of(status, category);

	if (json_get_string(l0, "message") != NULL) {
		api_error_set(&out->error, cls, "%s", json_get_string(l0, "message"));
		if (json_get_string(l0, "error") != NULL)
			code = json_get_string(l0, "error");
		if (json_get_string(l0, "name") != NULL)
			prop = json_get_string(l0, "name");
	} else if (json_get_string(e0, "message") != NULL) {
		api_error_set(&out->error, cls, "%s", json_get_string(e0, "message"));
	} else if (msg != NULL) {
		api_error_set(&out->error, cls, "%s", msg);
	} else {
		api_error_set(&out->error, cls, "%s answered HTTP %ld", c->name, status);
	}
	if (code == NULL)
		code = category;
	snprintf(out->error.code, sizeof(out->error.code), "%s", code ? code : "");
	snprintf(out->error.reason, sizeof(out->error.reason), "%s", out->error.message);
	out->error.session_expired = status == 401;
	out->error.nothing_written = status < 500;
	api_error_locate(&out->error, c, t, op, rows, nrows, nrows == 1 ? 0 : -1, prop);
	json_free(list);
}

static bool hs_copy_result(const struct connector *c, const struct api_table *t,
                           const struct json_value *res, struct api_row_result *rr)
{
	const struct json_value *props = json_get(res, "properties");
	const char *id = json_get_string(res, "id");
	size_t j;

	rr->id = strdup(id);
	rr->fields = calloc(props && props->count ? props->count : 1, sizeof(*rr->fields));
	if (rr->id == NULL || rr->fields == NULL)
		return false;
	for (j = 0; props != NULL && props->kind == JSON_OBJECT && j < props->count; j++) {
		if (!connector_result_field(c, t, props->keys[j], props->items[j],
		                            &rr->fields[rr->nfields++]))
			return false;
	}
	return true;
}

static void hs_parse(const struct connector *c, const struct api_table *t, enum api_op op,
                     const struct api_row *rows, int nrows, const struct http_response *resp,
                     struct api_result *out)
{
	struct json_value *doc = NULL;
	const struct json_value *results;
	char perr[128];
	int i;
	size_t k;

	if (!json_parse(resp->body, resp->body_len, NULL, &doc, perr, sizeof(perr)))
		doc = NULL;
	if (resp->status < 200 || resp->status >= 300) {
		hs_error(c, t, op, rows, nrows, doc, resp->status, out);
		goto done;
	}
	if (resp->status == 207 || json_get(doc, "numErrors") != NULL) {
		const struct json_value *e0 = json_at(json_get(doc, "errors"), 0);
		api_error_set(&out->error, API_ERR_UNKNOWN_OUTCOME,
		              "%s applied only part of the batch: %.300s", c->name,
		              json_get_string(e0, "message") ? json_get_string(e0, "message")
		                                             : "some records failed");
		goto done;
	}
	out->rows = calloc((size_t)nrows, sizeof(*out->rows));
	if (out->rows == NULL)
		goto oom;
	out->nrows = nrows;
	if (op == API_OP_DELETE) {
		/* archive answers 204 without a body: the ids are ours */
		for (i = 0; i < nrows; i++) {
			const char *id = hs_row_id(t, &rows[i]);
			if ((out->rows[i].id = strdup(id ? id : "")) == NULL)
				goto oom;
		}
		out->ok = true;
		goto done;
	}
	results = json_get(doc, "results");
	if (results == NULL || results->kind != JSON_ARRAY || results->count != (size_t)nrows) {
		api_result_free(out);
		api_error_set(&out->error, API_ERR_BAD_ANSWER,
		              "%s answer does not list the %d records", c->name, nrows);
		goto done;
	}
	for (k = 0; k < results->count; k++) {
		const struct json_value *res = results->items[k];
		const char *trace = json_get_string(res, "objectWriteTraceId");
		const char *id = json_get_string(res, "id");
		char *end;
		long row = -1;

		if (trace != NULL) {
			row = strtol(trace, &end, 10);
			if (*end != '\0' || end == trace)
				row = -1;
		} else if (id != NULL && op == API_OP_UPDATE) {
			for (i = 0; i < nrows && row < 0; i++) {
				const char *mine = hs_row_id(t, &rows[i]);
				if (mine != NULL && strcmp(mine, id) == 0)
					row = i;
			}
		} else if (nrows == 1) {
			row = 0;
		}
		if (id == NULL || row < 0 || row >= nrows || out->rows[row].id != NULL) {
			api_result_free(out);
			api_error_set(&out->error, API_ERR_BAD_ANSWER,
			              "%s answered results that cannot be matched to the rows",
			              c->name);
			goto done;
		}
		if (!hs_copy_result(c, t, res, &out->rows[row]))
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

static bool hs_build_lookup(const struct connector *c, const struct api_table *t, const char *id,
                            const char *id_property, const char *const *fields, int nfields,
                            struct api_http_spec *out, struct api_error *err)
{
	size_t ulen = strlen(c->base_url) + 3 * strlen(t->object) + 64, used;
	struct json_out o;

	if (t->object[0] == '\0') {
		api_error_set(err, API_ERR_INTERNAL, "%s: table %s has no object= (e.g. contacts)",
		              c->name, t->name);
		return false;
	}
	out->url = malloc(ulen);
	if (out->url == NULL)
		goto oom;
	used = (size_t)snprintf(out->url, ulen, "%s/crm/v3/objects/", c->base_url);
	if (!api_url_escape_segment(t->object, out->url, ulen, &used))
		goto oom;
	snprintf(out->url + used, ulen - used, "/batch/read");
	out->method = HTTP_POST;
	out->content_type = "application/json";
	if (!json_out_init(&o, HS_MAX_BODY))
		goto oom;
	json_out_object_begin(&o);
	json_out_key(&o, "properties");
	json_out_array_begin(&o);
	for (int i = 0; i < nfields; i++)
		json_out_string(&o, fields[i]);
	json_out_array_end(&o);
	if (id_property != NULL) {
		json_out_key(&o, "idProperty");
		json_out_string(&o, id_property);
	}
	json_out_key(&o, "inputs");
	json_out_array_begin(&o);
	json_out_object_begin(&o);
	json_out_key(&o, "id");
	json_out_string(&o, id);
	json_out_object_end(&o);
	json_out_array_end(&o);
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

static bool hs_build_read(const struct connector *c, const struct api_table *t, const char *id,
                          const char *const *fields, int nfields, struct api_http_spec *out,
                          struct api_error *err)
{
	return hs_build_lookup(c, t, id, NULL, fields, nfields, out, err);
}

static bool hs_build_find(const struct connector *c, const struct api_table *t, const char *value,
                          const char *const *fields, int nfields, struct api_http_spec *out,
                          struct api_error *err)
{
	char prop[128];

	connector_field_name(c, t, t->external_id, prop, sizeof(prop));
	return hs_build_lookup(c, t, value, prop, fields, nfields, out, err);
}

/*
 * The answer to a batch read of one input: the record (by id, or the only result when found
 * by a unique property), NOT_FOUND, or an error.
 */
static void hs_parse_lookup(const struct connector *c, const struct api_table *t, const char *id,
                            bool by_property, const struct http_response *resp,
                            struct api_result *out)
{
	struct api_value key = {t->pk_column, id, API_VALUE_TEXT};
	struct api_row row = {{&key, 1}, {NULL, 0}};
	struct json_value *doc = NULL;
	const struct json_value *results, *found = NULL;
	char perr[128];
	bool listed = false;

	if (!json_parse(resp->body, resp->body_len, NULL, &doc, perr, sizeof(perr)))
		doc = NULL;
	results = json_get(doc, "results");
	for (size_t k = 0; results != NULL && results->kind == JSON_ARRAY && k < results->count;
	     k++) {
		const char *rid = json_get_string(results->items[k], "id");
		if (rid != NULL && (by_property ? results->count == 1 : strcmp(rid, id) == 0))
			found = results->items[k];
	}
	if (found == NULL) {
		const struct json_value *errs = json_get(doc, "errors");
		for (size_t k = 0; errs != NULL && errs->kind == JSON_ARRAY && k < errs->count;
		     k++) {
			const char *cat = json_get_string(errs->items[k], "category");
			if (cat != NULL && strcmp(cat, "OBJECT_NOT_FOUND") == 0)
				listed = true;
		}
		if (listed || (resp->status == 404 && doc != NULL &&
		               json_get_string(doc, "category") != NULL &&
		               strcmp(json_get_string(doc, "category"), "OBJECT_NOT_FOUND") == 0)) {
			api_error_set(&out->error, API_ERR_NOT_FOUND,
			              "%s: record %s does not exist", c->name, id);
			goto done;
		}
		if (resp->status < 200 || resp->status >= 300) {
			hs_error(c, t, API_OP_UPDATE, &row, 1, doc, resp->status, out);
			goto done;
		}
		api_error_set(&out->error, API_ERR_BAD_ANSWER,
		              "%s answered a read without record %s", c->name, id);
		goto done;
	}
	connector_result_one(c, t, found, hs_copy_result, out);
done:
	json_free(doc);
}

static void hs_parse_read(const struct connector *c, const struct api_table *t, const char *id,
                          const struct http_response *resp, struct api_result *out)
{
	hs_parse_lookup(c, t, id, false, resp, out);
}

static void hs_parse_find(const struct connector *c, const struct api_table *t, const char *value,
                          const struct http_response *resp, struct api_result *out)
{
	hs_parse_lookup(c, t, value, true, resp, out);
}

const struct connector_ops hubspot_connector_ops = {
        .type = "hubspot",
        .keys = NULL,
        .configure = hs_configure,
        .release = NULL,
        .max_rows = hs_max_rows,
        .field_name = hs_same_name,
        .column_name = hs_same_name,
        .build = hs_build,
        .parse = hs_parse,
        .build_read = hs_build_read,
        .parse_read = hs_parse_read,
        .build_find = hs_build_find,
        .parse_find = hs_parse_find,
        .changes = &hubspot_changes_ops,
};
