/*
 * json — builder and bounded parser over yajl 2.1 (see include/api/json.h).
 *
 * Invariants: a builder's buffer never exceeds its cap and is NUL-terminated while ok; once
 * failed it stays failed and appends nothing. The parser refuses input above max_bytes before
 * touching it, and stops (yajl "client cancelled") as soon as depth or node count pass their
 * limit, freeing what it built; a returned tree is always complete.
 */
#include "api/json.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yajl/yajl_gen.h>
#include <yajl/yajl_parse.h>
#include <yajl/yajl_version.h>

const struct json_limits json_default_limits = {
        .max_bytes = 8u << 20,
        .max_depth = 32,
        .max_nodes = 200000,
};

/* ---- builder ---- */

struct json_out_gen {
	yajl_gen g;
	int depth;
	bool any_value; /* a value completed at depth 0 */
};

static void json_out_fail(struct json_out *out, const char *why)
{
	if (out->failed)
		return;
	out->failed = true;
	snprintf(out->error, sizeof(out->error), "%s", why);
}

static void json_out_print(void *ctx, const char *s, size_t n)
{
	struct json_out *out = ctx;
	size_t want;
	char *nb;

	if (out->failed)
		return;
	if (n > out->max || out->len > out->max - n) {
		json_out_fail(out, "JSON document too large");
		out->too_large = true;
		return;
	}
	if (out->len + n + 1 > out->size) {
		want = out->size ? out->size : 256;
		while (want < out->len + n + 1)
			want *= 2;
		if (want > out->max + 1)
			want = out->max + 1;
		nb = realloc(out->buf, want);
		if (nb == NULL) {
			json_out_fail(out, "out of memory");
			return;
		}
		out->buf = nb;
		out->size = want;
	}
	memcpy(out->buf + out->len, s, n);
	out->len += n;
	out->buf[out->len] = '\0';
}

bool json_out_init(struct json_out *out, size_t max)
{
	struct json_out_gen *st;

	memset(out, 0, sizeof(*out));
	out->max = max;
	st = calloc(1, sizeof(*st));
	if (st == NULL)
		return false;
	st->g = yajl_gen_alloc(NULL);
	if (st->g == NULL) {
		free(st);
		return false;
	}
	yajl_gen_config(st->g, yajl_gen_validate_utf8, 1);
	yajl_gen_config(st->g, yajl_gen_print_callback, json_out_print, out);
	out->gen = st;
	return true;
}

void json_out_free(struct json_out *out)
{
	struct json_out_gen *st = out->gen;

	if (st != NULL) {
		yajl_gen_free(st->g);
		free(st);
	}
	free(out->buf);
	memset(out, 0, sizeof(*out));
	out->failed = true;
}

static const char *json_gen_status_text(yajl_gen_status s)
{
	switch (s) {
	case yajl_gen_status_ok:
		return "ok";
	case yajl_gen_keys_must_be_strings:
		return "value where a key belongs";
	case yajl_max_depth_exceeded:
		return "JSON nesting too deep";
	case yajl_gen_in_error_state:
		return "JSON builder in error state";
	case yajl_gen_generation_complete:
		return "JSON document already complete";
	case yajl_gen_invalid_number:
		return "invalid JSON number";
	case yajl_gen_no_buf:
		return "JSON builder has no buffer";
	case yajl_gen_invalid_string:
		return "string is not valid UTF-8";
	}
	return "JSON builder error";
}

/* Common tail of every append: records yajl's verdict and tracks completion. */
static void json_out_after(struct json_out *out, yajl_gen_status s, int depth_change, bool value)
{
	struct json_out_gen *st = out->gen;

	if (s != yajl_gen_status_ok) {
		json_out_fail(out, json_gen_status_text(s));
		return;
	}
	st->depth += depth_change;
	if (st->depth > JSON_OUT_MAX_DEPTH)
		json_out_fail(out, "JSON nesting too deep");
	if (value && st->depth == 0)
		st->any_value = true;
}

static bool json_out_usable(struct json_out *out)
{
	return !out->failed && out->gen != NULL;
}

void json_out_object_begin(struct json_out *out)
{
	if (json_out_usable(out))
		json_out_after(out, yajl_gen_map_open(((struct json_out_gen *)out->gen)->g), 1,
		               false);
}

void json_out_object_end(struct json_out *out)
{
	if (json_out_usable(out))
		json_out_after(out, yajl_gen_map_close(((struct json_out_gen *)out->gen)->g), -1,
		               true);
}

void json_out_array_begin(struct json_out *out)
{
	if (json_out_usable(out))
		json_out_after(out, yajl_gen_array_open(((struct json_out_gen *)out->gen)->g), 1,
		               false);
}

void json_out_array_end(struct json_out *out)
{
	if (json_out_usable(out))
		json_out_after(out, yajl_gen_array_close(((struct json_out_gen *)out->gen)->g), -1,
		               true);
}

void json_out_key(struct json_out *out, const char *key)
{
	/* yajl cannot tell a key from a string value; both are strings to it. */
	json_out_string_len(out, key, strlen(key));
}

void json_out_string(struct json_out *out, const char *s)
{
	json_out_string_len(out, s, strlen(s));
}

void json_out_string_len(struct json_out *out, const char *s, size_t len)
{
	struct json_out_gen *st = out->gen;

	if (!json_out_usable(out))
		return;
	json_out_after(out, yajl_gen_string(st->g, (const unsigned char *)s, len), 0, true);
}

void json_out_int(struct json_out *out, int64_t v)
{
	struct json_out_gen *st = out->gen;

	if (!json_out_usable(out))
		return;
	json_out_after(out, yajl_gen_integer(st->g, (long long)v), 0, true);
}

void json_out_number_text(struct json_out *out, const char *text, size_t len)
{
	struct json_out_gen *st = out->gen;

	if (!json_out_usable(out))
		return;
	if (!json_is_number_text(text, len)) {
		json_out_fail(out, "value is not a JSON number");
		return;
	}
	json_out_after(out, yajl_gen_number(st->g, text, len), 0, true);
}

void json_out_bool(struct json_out *out, bool v)
{
	struct json_out_gen *st = out->gen;

	if (json_out_usable(out))
		json_out_after(out, yajl_gen_bool(st->g, v), 0, true);
}

void json_out_null(struct json_out *out)
{
	struct json_out_gen *st = out->gen;

	if (json_out_usable(out))
		json_out_after(out, yajl_gen_null(st->g), 0, true);
}

bool json_out_ok(const struct json_out *out)
{
	return !out->failed && out->gen != NULL;
}

char *json_out_take(struct json_out *out, size_t *len)
{
	struct json_out_gen *st = out->gen;
	char *buf;

	if (!json_out_ok(out) || st->depth != 0 || !st->any_value)
		return NULL;
	buf = out->buf;
	*len = out->len;
	out->buf = NULL;
	out->len = 0;
	out->size = 0;
	yajl_gen_reset(st->g, NULL);
	yajl_gen_clear(st->g);
	st->any_value = false;
	return buf;
}

bool json_is_number_text(const char *t, size_t len)
{
	size_t i = 0;

	if (len == 0)
		return false;
	if (t[i] == '-')
		i++;
	if (i >= len)
		return false;
	if (t[i] == '0') {
		i++;
	} else if (t[i] >= '1' && t[i] <= '9') {
		while (i < len && t[i] >= '0' && t[i] <= '9')
			i++;
	} else {
		return false;
	}
	if (i < len && t[i] == '.') {
		i++;
		if (i >= len || t[i] < '0' || t[i] > '9')
			return false;
		while (i < len && t[i] >= '0' && t[i] <= '9')
			i++;
	}
	if (i < len && (t[i] == 'e' || t[i] == 'E')) {
		i++;
		if (i < len && (t[i] == '+' || t[i] == '-'))
			i++;
		if (i >= len || t[i] < '0' || t[i] > '9')
			return false;
		while (i < len && t[i] >= '0' && t[i] <= '9')
			i++;
	}
	return i == len;
}

/* ---- parser ---- */

const char *json_kind_str(enum json_kind kind)
{
	switch (kind) {
	case JSON_NULL:
		return "null";
	case JSON_BOOL:
		return "boolean";
	case JSON_NUMBER:
		return "number";
	case JSON_STRING:
		return "string";
	case JSON_ARRAY:
		return "array";
	case JSON_OBJECT:
		return "object";
	}
	return "unknown";
}

struct json_frame {
	struct json_value *v;
	size_t cap;
};

struct json_ctx {
	const struct json_limits *lim;
	struct json_value *root;
	struct json_frame *stack; /* max_depth frames */
	int depth;
	char *pending_key;
	size_t pending_key_len;
	size_t nodes;
	char err[96];
};

void json_free(struct json_value *v)
{
	size_t i;

	if (v == NULL)
		return;
	for (i = 0; i < v->count; i++) {
		if (v->keys != NULL)
			free(v->keys[i]);
		if (v->items != NULL)
			json_free(v->items[i]);
	}
	free(v->keys);
	free(v->key_lens);
	free(v->items);
	free(v->str);
	free(v);
}

static char *json_dup_len(const unsigned char *s, size_t len)
{
	char *d = malloc(len + 1);

	if (d == NULL)
		return NULL;
	memcpy(d, s, len);
	d[len] = '\0';
	return d;
}

static int json_ctx_fail(struct json_ctx *ctx, const char *why)
{
	if (ctx->err[0] == '\0')
		snprintf(ctx->err, sizeof(ctx->err), "%s", why);
	return 0;
}

/* Attaches v (owned from here on) to the open container or as the root. 1 ok, 0 cancel. */
static int json_ctx_add(struct json_ctx *ctx, struct json_value *v)
{
	struct json_frame *f;
	struct json_value *c;
	size_t ncap;

	if (v == NULL)
		return json_ctx_fail(ctx, "out of memory");
	if (++ctx->nodes > ctx->lim->max_nodes) {
		json_free(v);
		return json_ctx_fail(ctx, "JSON document has too many values");
	}
	if (ctx->depth == 0) {
		ctx->root = v;
		return 1;
	}
	f = &ctx->stack[ctx->depth - 1];
	c = f->v;
	if (c->count == f->cap) {
		ncap = f->cap ? f->cap * 2 : 4;
		struct json_value **ni = realloc(c->items, ncap * sizeof(*ni));
		if (ni == NULL) {
			json_free(v);
			return json_ctx_fail(ctx, "out of memory");
		}
		c->items = ni;
		if (c->kind == JSON_OBJECT) {
			char **nk = realloc(c->keys, ncap * sizeof(*nk));
			if (nk == NULL) {
				json_free(v);
				return json_ctx_fail(ctx, "out of memory");
			}
			c->keys = nk;
			size_t *nl = realloc(c->key_lens, ncap * sizeof(*nl));
			if (nl == NULL) {
				json_free(v);
				return json_ctx_fail(ctx, "out of memory");
			}
			c->key_lens = nl;
		}
		f->cap = ncap;
	}
	if (c->kind == JSON_OBJECT) {
		if (ctx->pending_key == NULL) {
			json_free(v);
			return json_ctx_fail(ctx, "object member without key");
		}
		c->keys[c->count] = ctx->pending_key;
		c->key_lens[c->count] = ctx->pending_key_len;
		ctx->pending_key = NULL;
	}
	c->items[c->count++] = v;
	return 1;
}

static struct json_value *json_new(enum json_kind kind)
{
	struct json_value *v = calloc(1, sizeof(*v));

	if (v != NULL)
		v->kind = kind;
	return v;
}

static int json_cb_null(void *ud)
{
	return json_ctx_add(ud, json_new(JSON_NULL));
}

static int json_cb_boolean(void *ud, int b)
{
	struct json_value *v = json_new(JSON_BOOL);

	if (v != NULL)
		v->boolean = b != 0;
	return json_ctx_add(ud, v);
}

static int json_cb_number(void *ud, const char *s, size_t len)
{
	struct json_value *v = json_new(JSON_NUMBER);

	if (v != NULL) {
		v->str = json_dup_len((const unsigned char *)s, len);
		if (v->str == NULL) {
			free(v);
			v = NULL;
		} else {
			v->len = len;
			errno = 0;
			v->number = strtod(v->str, NULL);
		}
	}
	return json_ctx_add(ud, v);
}

static int json_cb_string(void *ud, const unsigned char *s, size_t len)
{
	struct json_value *v = json_new(JSON_STRING);

	if (v != NULL) {
		v->str = json_dup_len(s, len);
		if (v->str == NULL) {
			free(v);
			v = NULL;
		} else {
			v->len = len;
		}
	}
	return json_ctx_add(ud, v);
}

static int json_cb_open(struct json_ctx *ctx, enum json_kind kind)
{
	struct json_value *v;

	if (ctx->depth >= ctx->lim->max_depth)
		return json_ctx_fail(ctx, "JSON nesting too deep");
	v = json_new(kind);
	if (!json_ctx_add(ctx, v))
		return 0;
	ctx->stack[ctx->depth].v = v;
	ctx->stack[ctx->depth].cap = 0;
	ctx->depth++;
	return 1;
}

static int json_cb_start_map(void *ud)
{
	return json_cb_open(ud, JSON_OBJECT);
}

static int json_cb_start_array(void *ud)
{
	return json_cb_open(ud, JSON_ARRAY);
}

static int json_cb_close(void *ud)
{
	struct json_ctx *ctx = ud;

	if (ctx->depth <= 0)
		return json_ctx_fail(ctx, "unbalanced JSON");
	ctx->depth--;
	return 1;
}

static int json_cb_map_key(void *ud, const unsigned char *s, size_t len)
{
	struct json_ctx *ctx = ud;

	free(ctx->pending_key);
	ctx->pending_key = json_dup_len(s, len);
	ctx->pending_key_len = len;
	if (ctx->pending_key == NULL)
		return json_ctx_fail(ctx, "out of memory");
	return 1;
}

static const yajl_callbacks json_callbacks = {
        .yajl_null = json_cb_null,
        .yajl_boolean = json_cb_boolean,
        .yajl_number = json_cb_number,
        .yajl_string = json_cb_string,
        .yajl_start_map = json_cb_start_map,
        .yajl_map_key = json_cb_map_key,
        .yajl_end_map = json_cb_close,
        .yajl_start_array = json_cb_start_array,
        .yajl_end_array = json_cb_close,
};

bool json_parse(const char *text, size_t len, const struct json_limits *limits,
                struct json_value **out, char *err, size_t errsize)
{
	struct json_ctx ctx;
	yajl_handle h = NULL;
	yajl_status st;
	bool ok = false;

	*out = NULL;
	memset(&ctx, 0, sizeof(ctx));
	ctx.lim = limits ? limits : &json_default_limits;
	if (len > ctx.lim->max_bytes) {
		snprintf(err, errsize, "JSON document too large (%zu bytes, limit %zu)", len,
		         ctx.lim->max_bytes);
		return false;
	}
	if (ctx.lim->max_depth <= 0) {
		snprintf(err, errsize, "JSON depth limit is zero");
		return false;
	}
	ctx.stack = calloc((size_t)ctx.lim->max_depth, sizeof(*ctx.stack));
	if (ctx.stack == NULL) {
		snprintf(err, errsize, "out of memory");
		return false;
	}
	h = yajl_alloc(&json_callbacks, NULL, &ctx);
	if (h == NULL) {
		snprintf(err, errsize, "out of memory");
		goto cleanup;
	}
	yajl_config(h, yajl_allow_comments, 0);
	st = yajl_parse(h, (const unsigned char *)text, len);
	if (st == yajl_status_ok)
		st = yajl_complete_parse(h);
	if (st != yajl_status_ok) {
		if (ctx.err[0] != '\0') {
			snprintf(err, errsize, "%s", ctx.err);
		} else {
			unsigned char *msg = yajl_get_error(h, 0, NULL, 0);
			size_t at = yajl_get_bytes_consumed(h);
			snprintf(err, errsize, "invalid JSON at byte %zu: %s", at,
			         msg ? (const char *)msg : "parse error");
			if (msg != NULL)
				yajl_free_error(h, msg);
		}
		goto cleanup;
	}
	if (ctx.root == NULL || ctx.depth != 0) {
		snprintf(err, errsize, "empty or incomplete JSON document");
		goto cleanup;
	}
	*out = ctx.root;
	ctx.root = NULL;
	ok = true;
cleanup:
	if (h != NULL)
		yajl_free(h);
	json_free(ctx.root);
	free(ctx.pending_key);
	free(ctx.stack);
	return ok;
}

void json_out_value(struct json_out *out, const struct json_value *v)
{
	size_t i;

	/* Depth is bounded twice: the tree came from json_parse(), the builder has its cap. */
	switch (v->kind) {
	case JSON_NULL:
		json_out_null(out);
		return;
	case JSON_BOOL:
		json_out_bool(out, v->boolean);
		return;
	case JSON_NUMBER:
		json_out_number_text(out, v->str, v->len);
		return;
	case JSON_STRING:
		json_out_string_len(out, v->str, v->len);
		return;
	case JSON_ARRAY:
		json_out_array_begin(out);
		for (i = 0; i < v->count && json_out_ok(out); i++)
			json_out_value(out, v->items[i]);
		json_out_array_end(out);
		return;
	case JSON_OBJECT:
		json_out_object_begin(out);
		for (i = 0; i < v->count && json_out_ok(out); i++) {
			json_out_string_len(out, v->keys[i], v->key_lens[i]);
			json_out_value(out, v->items[i]);
		}
		json_out_object_end(out);
		return;
	}
}

char *json_to_text(const struct json_value *v, size_t max, size_t *len)
{
	struct json_out o;
	char *text;

	if (!json_out_init(&o, max))
		return NULL;
	json_out_value(&o, v);
	text = json_out_take(&o, len);
	json_out_free(&o);
	return text;
}

const struct json_value *json_get(const struct json_value *v, const char *key)
{
	size_t i, klen;

	if (v == NULL || v->kind != JSON_OBJECT)
		return NULL;
	klen = strlen(key);
	for (i = 0; i < v->count; i++) {
		if (v->key_lens[i] == klen && memcmp(v->keys[i], key, klen) == 0)
			return v->items[i];
	}
	return NULL;
}

const struct json_value *json_at(const struct json_value *v, size_t idx)
{
	if (v == NULL || v->kind != JSON_ARRAY || idx >= v->count)
		return NULL;
	return v->items[idx];
}

const char *json_string(const struct json_value *v)
{
	if (v == NULL || v->kind != JSON_STRING)
		return NULL;
	return v->str;
}

const char *json_get_string(const struct json_value *v, const char *key)
{
	return json_string(json_get(v, key));
}

int json_yajl_version(void)
{
	return yajl_version();
}
