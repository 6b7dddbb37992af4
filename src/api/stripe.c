/*
 * stripe — the Stripe connector: one row per request (Stripe has no batch endpoint).
 *
 *   insert  POST   <base>/v1/<object>        form-encoded fields
 *   update  POST   <base>/v1/<object>/<id>   the changed fields ("" clears one)
 *   delete  DELETE <base>/v1/<object>/<id>
 *
 * object= is the resource's path name (customers, products, ...). Field names are the column
 * names (Stripe uses snake_case); "metadata[plan]"-style names come from columns=. Every POST
 * carries a fresh Idempotency-Key, kept across retries, so an unknown outcome or a 5xx may be
 * retried without a second write. Answers are the whole object; its scalar members come back
 * as returned fields. Errors: {"error":{"type","code","message","param"}}.
 *
 * Stripe keeps a key for at least 24 hours, then may prune it: a repeat after that is a new
 * request. So an insert of an object that Stripe's Search API covers also carries its key in
 * metadata[syncbouncer_key], and a record whose key is gone is found with
 *   GET <base>/v1/<object>/search?query=metadata['syncbouncer_key']:'<key>'
 * Search lags (under a minute, up to an hour in an outage): "none found" is trusted only for
 * requests older than that (find_key_lag_s). A 5xx that Stripe saved for the key is replayed
 * to every repeat with "Idempotent-Replayed: true": such an answer is marked replayed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/changes.h"
#include "api/connector.h"
#include "api/json.h"

#define STRIPE_MAX_BODY (256u << 10)
/* the metadata key an insert's idempotency key is kept under in the record it creates */
#define STRIPE_KEY_FIELD "syncbouncer_key"
/* Stripe prunes keys once they are at least 24 h old; repeats are trusted for 23 h */
#define STRIPE_KEY_WINDOW_S (23 * 3600)
/* searchable in under a minute, up to an hour behind in an outage; half an hour more */
#define STRIPE_SEARCH_LAG_S (90 * 60)

/* The resources Stripe's Search API covers (all of them take metadata). */
static bool stripe_searchable(const char *object)
{
	static const char *const searchable[] = {
	        "charges", "customers", "invoices",      "payment_intents",
	        "prices",  "products",  "subscriptions", NULL,
	};

	for (int i = 0; searchable[i] != NULL; i++)
		if (strcmp(object, searchable[i]) == 0)
			return true;
	return false;
}

static bool stripe_can_find_key(const struct connector *c, const struct api_table *t)
{
	return stripe_searchable(t->object);
}

static bool stripe_configure(struct connector *c, const struct cf_kv *kv, int nkv, char *err,
                             size_t errsize)
{
	return true;
}

static int stripe_max_rows(const struct connector *c, enum api_op op)
{
	return 1;
}

static void stripe_same_name(const struct connector *c, const char *name, char *buf, size_t size)
{
	snprintf(buf, size, "%s", name);
}

static bool stripe_append(char *buf, size_t size, size_t *used, const char *key, const char *value)
{
	if (*used > 0) {
		if (*used + 2 > size)
			return false;
		buf[(*used)++] = '&';
	}
	if (!api_url_escape(key, buf, size, used) || *used + 2 > size)
		return false;
	buf[(*used)++] = '=';
	buf[*used] = '\0';
	return api_url_escape(value, buf, size, used);
}

static bool stripe_build(const struct connector *c, const struct api_table *t, enum api_op op,
                         const struct api_row *rows, int nrows, struct api_http_spec *out,
                         struct api_error *err)
{
	const struct api_row *row = &rows[0];
	const struct api_value *idv = api_image_get(&row->old_image, t->pk_column);
	size_t ulen = strlen(c->base_url) + 3 * strlen(t->object) + 3 * 64 + 16, used = 0;
	char field[128];
	int i;

	if (t->object[0] == '\0') {
		api_error_set(err, API_ERR_INTERNAL, "%s: table %s has no object= (e.g. customers)",
		              c->name, t->name);
		return false;
	}
	if (op != API_OP_INSERT && (idv == NULL || idv->value == NULL || idv->value[0] == '\0' ||
	                            strlen(idv->value) > 64)) {
		api_error_set(err, API_ERR_VALIDATION, "is not a usable Stripe id.");
		snprintf(err->column, sizeof(err->column), "%s", t->pk_column);
		if (idv != NULL && idv->value != NULL)
			snprintf(err->value, sizeof(err->value), "%s", idv->value);
		err->value_is_null = idv == NULL || idv->value == NULL;
		err->row = 0;
		return false;
	}
	out->url = malloc(ulen);
	if (out->url == NULL)
		goto oom;
	used = (size_t)snprintf(out->url, ulen, "%s/v1/", c->base_url);
	if (!api_url_escape_segment(t->object, out->url, ulen, &used))
		goto oom;
	if (op != API_OP_INSERT) {
		out->url[used++] = '/';
		if (!api_url_escape_segment(idv->value, out->url, ulen, &used))
			goto oom;
	}
	if (op == API_OP_DELETE) {
		/* Stripe takes keys on POSTs only (a DELETE is idempotent as it is) */
		out->idempotency_key[0] = '\0';
		out->method = HTTP_DELETE;
		return true;
	}
	out->method = HTTP_POST;
	out->content_type = "application/x-www-form-urlencoded";
	if (out->idempotency_key[0] == '\0') /* else the caller's (a repeat's) */
		api_random_key(out->idempotency_key, sizeof(out->idempotency_key));
	out->body = malloc(STRIPE_MAX_BODY);
	if (out->body == NULL)
		goto oom;
	used = 0;
	out->body[0] = '\0';
	for (i = 0; i < row->new_image.nvalues; i++) {
		const struct api_value *v = &row->new_image.values[i];
		const char *text = v->value;

		if (strcmp(v->column, t->pk_column) == 0 || api_table_is_readonly(t, v->column))
			continue;
		if (op == API_OP_INSERT && v->value == NULL)
			continue;
		if (op == API_OP_UPDATE && !api_row_changed(row, v->column))
			continue;
		if (text == NULL) {
			text = ""; /* Stripe's way of clearing a field */
		} else if (v->type == API_VALUE_BOOL) {
			if (strcmp(text, "t") == 0 || strcmp(text, "true") == 0)
				text = "true";
			else if (strcmp(text, "f") == 0 || strcmp(text, "false") == 0)
				text = "false";
			else
				goto bad_value;
		} else if (v->type == API_VALUE_NUMBER &&
		           !json_is_number_text(text, strlen(text))) {
			goto bad_value;
		}
		connector_field_name(c, t, v->column, field, sizeof(field));
		if (!stripe_append(out->body, STRIPE_MAX_BODY, &used, field, text)) {
			api_error_set(
			        err, API_ERR_TOO_LARGE,
			        "The request to %s would be larger than syncbouncer's limit of "
			        "%u bytes; nothing was sent.",
			        c->name, STRIPE_MAX_BODY);
			return false;
		}
		continue;
	bad_value:
		api_error_set(err, API_ERR_VALIDATION, "value of column %s cannot be sent as a %s",
		              v->column, api_value_type_str(v->type));
		err->row = 0;
		snprintf(err->column, sizeof(err->column), "%s", v->column);
		snprintf(err->value, sizeof(err->value), "%s", v->value);
		return false;
	}
	if (op == API_OP_INSERT && stripe_searchable(t->object) &&
	    !stripe_append(out->body, STRIPE_MAX_BODY, &used, "metadata[" STRIPE_KEY_FIELD "]",
	                   out->idempotency_key)) {
		api_error_set(err, API_ERR_TOO_LARGE,
		              "The request to %s would be larger than syncbouncer's limit of "
		              "%u bytes; nothing was sent.",
		              c->name, STRIPE_MAX_BODY);
		return false;
	}
	out->body_len = used;
	return true;
oom:
	api_error_set(err, API_ERR_INTERNAL, "out of memory");
	return false;
}

static enum api_error_class stripe_class_of(long status)
{
	switch (status) {
	case 400:
	case 402:
		return API_ERR_VALIDATION;
	case 401:
		return API_ERR_AUTH;
	case 403:
		return API_ERR_PERMISSION;
	case 404:
		return API_ERR_NOT_FOUND;
	case 429:
		return API_ERR_RATE_LIMIT;
	default:
		/* 409: an idempotency or lock conflict, nothing applied; 5xx; 1xx/3xx */
		return API_ERR_SERVER;
	}
}

static void stripe_parse(const struct connector *c, const struct api_table *t, enum api_op op,
                         const struct api_row *rows, int nrows, const struct http_response *resp,
                         struct api_result *out)
{
	struct json_value *doc = NULL;
	const struct json_value *e;
	char perr[128];
	const char *id;

	if (!json_parse(resp->body, resp->body_len, NULL, &doc, perr, sizeof(perr)))
		doc = NULL;
	if (resp->status < 200 || resp->status >= 300) {
		const char *msg, *code, *param, *type;

		e = json_get(doc, "error");
		msg = json_get_string(e, "message");
		type = json_get_string(e, "type");
		code = json_get_string(e, "code");
		if (code == NULL)
			code = json_get_string(e, "type");
		param = json_get_string(e, "param");
		if (msg != NULL)
			api_error_set(&out->error, stripe_class_of(resp->status), "%s", msg);
		else
			api_error_set(&out->error, stripe_class_of(resp->status),
			              "%s answered HTTP %ld", c->name, resp->status);
		snprintf(out->error.code, sizeof(out->error.code), "%s", code ? code : "");
		{
			const char *rp = http_response_header(resp, "Idempotent-Replayed");
			out->error.replayed = rp != NULL && strcasecmp(rp, "true") == 0;
		}
		snprintf(out->error.reason, sizeof(out->error.reason), "%s", out->error.message);
		out->error.session_expired = resp->status == 401;
		out->error.key_in_use = resp->status == 409 && code != NULL &&
		                        strcmp(code, "idempotency_key_in_use") == 0;
		/* "Unrecognized request URL" is a 404 too, without this code */
		out->error.record_gone = resp->status == 404 && code != NULL &&
		                         strcmp(code, "resource_missing") == 0;
		/*
		 * An error answer applies nothing, 5xx included (retrying with the key is safe);
		 * but a 409 may be about an earlier request with the same key, which may have been.
		 */
		out->error.nothing_written = resp->status < 500 && resp->status != 409;
		if (resp->status == 400 && type != NULL && strcmp(type, "idempotency_error") == 0) {
			/*
			 * The key was first used by a request with other parameters, which may have
			 * been applied: never a "nothing was created" answer (the 409 of a key in use
			 * is not nothing written either, see above).
			 */
			out->error.cls = API_ERR_UNKNOWN_OUTCOME;
			out->error.nothing_written = false;
		}
		api_error_locate(&out->error, c, t, op, rows, nrows, 0, param);
		goto done;
	}
	if (doc == NULL || doc->kind != JSON_OBJECT) {
		api_error_set(&out->error, API_ERR_BAD_ANSWER, "%s answer is not an object (%s)",
		              c->name, doc == NULL ? perr : json_kind_str(doc->kind));
		goto done;
	}
	id = json_get_string(doc, "id");
	if (id == NULL) {
		api_error_set(&out->error, API_ERR_BAD_ANSWER, "%s answered without an id",
		              c->name);
		goto done;
	}
	connector_result_object(c, t, id, doc, NULL, out);
done:
	json_free(doc);
}

static bool stripe_build_read(const struct connector *c, const struct api_table *t, const char *id,
                              const char *const *fields, int nfields, struct api_http_spec *out,
                              struct api_error *err)
{
	const char *segs[] = {t->object, id};

	if (t->object[0] == '\0') {
		api_error_set(err, API_ERR_INTERNAL, "%s: table %s has no object= (e.g. customers)",
		              c->name, t->name);
		return false;
	}
	out->url = api_url_join(segs, 2, "%s/v1/", c->base_url);
	if (out->url == NULL) {
		api_error_set(err, API_ERR_INTERNAL, "out of memory");
		return false;
	}
	out->method = HTTP_GET;
	return true;
}

/* GET answers the object; a deleted customer is {"id":..,"deleted":true}; a missing one 404. */
static void stripe_parse_read(const struct connector *c, const struct api_table *t, const char *id,
                              const struct http_response *resp, struct api_result *out)
{
	struct api_value key = {t->pk_column, id, API_VALUE_TEXT};
	struct api_row row = {{&key, 1}, {NULL, 0}};
	struct json_value *doc = NULL;
	char perr[128];

	if (resp->status >= 200 && resp->status < 300 &&
	    json_parse(resp->body, resp->body_len, NULL, &doc, perr, sizeof(perr))) {
		const struct json_value *del = json_get(doc, "deleted");
		bool deleted = del != NULL && del->kind == JSON_BOOL && del->boolean;
		json_free(doc);
		if (deleted) {
			api_error_set(&out->error, API_ERR_NOT_FOUND, "%s: %s was deleted", c->name,
			              id);
			return;
		}
	}
	stripe_parse(c, t, API_OP_UPDATE, &row, 1, resp, out);
}

/* GET <base>/v1/<object>/search?query=metadata['syncbouncer_key']:'<key>' */
static bool stripe_build_find_key(const struct connector *c, const struct api_table *t,
                                  const char *key, struct api_http_spec *out, struct api_error *err)
{
	const char *segs[] = {t->object, "search"};
	char query[128];
	size_t used;

	/* the key goes into the query's quotes as it is: only the characters keys are made of */
	if (strlen(key) > 64 || strspn(key, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	                                    "0123456789_-") != strlen(key)) {
		api_error_set(err, API_ERR_VALIDATION,
		              "%s: the idempotency key cannot be searched for", c->name);
		return false;
	}
	snprintf(query, sizeof(query), "metadata['" STRIPE_KEY_FIELD "']:'%s'", key);
	out->url = api_url_join(segs, 2, "%s/v1/", c->base_url);
	if (out->url != NULL) {
		size_t cap = strlen(out->url) + 3 * strlen(query) + 32;
		char *url = realloc(out->url, cap);
		if (url == NULL) {
			free(out->url);
			out->url = NULL;
		} else {
			out->url = url;
			used = strlen(url);
			used += (size_t)snprintf(url + used, cap - used, "?query=");
			if (!api_url_escape(query, url, cap, &used) || used + 10 > cap) {
				free(out->url);
				out->url = NULL;
			} else {
				snprintf(url + used, cap - used, "&limit=10");
			}
		}
	}
	if (out->url == NULL) {
		api_error_set(err, API_ERR_INTERNAL, "out of memory");
		return false;
	}
	out->method = HTTP_GET;
	return true;
}

/* {"object":"search_result","data":[...],"has_more":..}: the one record, or none. */
static void stripe_parse_find_key(const struct connector *c, const struct api_table *t,
                                  const char *key, const struct http_response *resp,
                                  struct api_result *out)
{
	struct json_value *doc = NULL;
	const struct json_value *data;
	char perr[128];

	if (resp->status < 200 || resp->status >= 300) {
		struct api_value kv = {t->pk_column, NULL, API_VALUE_TEXT};
		struct api_row row = {{&kv, 1}, {NULL, 0}};
		stripe_parse(c, t, API_OP_UPDATE, &row, 1, resp, out);
		return;
	}
	if (!json_parse(resp->body, resp->body_len, NULL, &doc, perr, sizeof(perr))) {
		api_error_set(&out->error, API_ERR_BAD_ANSWER, "%s search answer: %s", c->name,
		              perr);
		return;
	}
	data = json_get(doc, "data");
	if (data == NULL || data->kind != JSON_ARRAY) {
		api_error_set(&out->error, API_ERR_BAD_ANSWER, "%s search answer has no data list",
		              c->name);
	} else if (data->count == 0) {
		api_error_set(&out->error, API_ERR_NOT_FOUND, "no %s record carries key %s",
		              c->name, key);
	} else if (data->count > 1) {
		const char *a = json_get_string(data->items[0], "id");
		const char *b = json_get_string(data->items[1], "id");
		api_error_set(&out->error, API_ERR_BAD_ANSWER,
		              "%zu %s records carry key %s (%s, %s%s): delete the extra ones at "
		              "%s, then JOURNAL RETRY",
		              data->count, c->name, key, a ? a : "?", b ? b : "?",
		              data->count > 2 ? ", ..." : "", c->name);
	} else if (json_get_string(data->items[0], "id") == NULL) {
		api_error_set(&out->error, API_ERR_BAD_ANSWER, "%s search answered without an id",
		              c->name);
	} else {
		connector_result_object(c, t, json_get_string(data->items[0], "id"), data->items[0],
		                        NULL, out);
	}
	json_free(doc);
}

const struct connector_ops stripe_connector_ops = {
        .type = "stripe",
        .keys = NULL,
        .configure = stripe_configure,
        .release = NULL,
        .max_rows = stripe_max_rows,
        .field_name = stripe_same_name,
        .column_name = stripe_same_name,
        .build = stripe_build,
        .parse = stripe_parse,
        .build_read = stripe_build_read,
        .parse_read = stripe_parse_read,
        .changes = &stripe_changes_ops,
        .key_window_s = STRIPE_KEY_WINDOW_S,
        .can_find_key = stripe_can_find_key,
        .find_key_lag_s = STRIPE_SEARCH_LAG_S,
        .build_find_key = stripe_build_find_key,
        .parse_find_key = stripe_parse_find_key,
};
