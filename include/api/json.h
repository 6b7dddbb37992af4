/*
 * json — the JSON we send to and read from HTTP APIs, over yajl 2.1.
 *
 * Two halves:
 *  - struct json_out, a builder: calls append to a buffer that never grows past its cap; the
 *    first failure (cap, invalid UTF-8, a key where a value belongs, out of memory) is sticky,
 *    so a caller builds everything and checks json_out_ok() once.
 *  - struct json_value, a parsed tree with limits on input size, nesting depth and node count,
 *    because every answer body is hostile. Strings are NUL-terminated and carry their length
 *    (a JSON string may contain \u0000).
 * No yajl type appears here: the rest of the program knows only these types.
 */
#ifndef SB_API_JSON_H
#define SB_API_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- builder ---- */

#define JSON_OUT_MAX_DEPTH 64

struct json_out {
	char *buf; /* NUL-terminated while ok; owned */
	size_t len;
	size_t size; /* allocated */
	size_t max;  /* cap on len */
	bool failed;
	bool too_large; /* failed because the output would pass max */
	char error[96];
	void *gen; /* the generator, opaque */
};

/* Prepares an empty builder whose output may not exceed max bytes. False on out of memory. */
bool json_out_init(struct json_out *out, size_t max) __attribute__((warn_unused_result));
/* Releases the buffer and the generator; the struct may be initialised again. */
void json_out_free(struct json_out *out);

void json_out_object_begin(struct json_out *out);
void json_out_object_end(struct json_out *out);
void json_out_array_begin(struct json_out *out);
void json_out_array_end(struct json_out *out);
/* A key, in an object; NUL-terminated. */
void json_out_key(struct json_out *out, const char *key);
void json_out_string(struct json_out *out, const char *s);
/* A string of len bytes, which must be valid UTF-8 (may contain NUL). */
void json_out_string_len(struct json_out *out, const char *s, size_t len);
void json_out_int(struct json_out *out, int64_t v);
/* A number given as text (e.g. a Postgres numeric); fails unless the text is a JSON number. */
void json_out_number_text(struct json_out *out, const char *text, size_t len);
void json_out_bool(struct json_out *out, bool v);
void json_out_null(struct json_out *out);
/* True when nothing failed so far and the document is complete or still being built. */
bool json_out_ok(const struct json_out *out);
/*
 * Hands the finished document to the caller (malloc'd, NUL-terminated; *len set), leaving the
 * builder empty. NULL when something failed or the document is incomplete.
 */
char *json_out_take(struct json_out *out, size_t *len);

/* True if text[0..len) is a JSON number (RFC 8259 grammar). */
bool json_is_number_text(const char *text, size_t len);

/* ---- parsed tree ---- */

enum json_kind {
	JSON_NULL,
	JSON_BOOL,
	JSON_NUMBER,
	JSON_STRING,
	JSON_ARRAY,
	JSON_OBJECT,
};
const char *json_kind_str(enum json_kind kind);

struct json_value {
	enum json_kind kind;
	bool boolean;  /* JSON_BOOL */
	double number; /* JSON_NUMBER (also its text in str/len, as written) */
	char *str;     /* JSON_STRING, JSON_NUMBER: NUL-terminated, owned */
	size_t len;    /* its length in bytes */
	size_t count;  /* JSON_ARRAY, JSON_OBJECT: number of items */
	char **keys;   /* JSON_OBJECT: count keys, NUL-terminated, owned */
	size_t *key_lens;
	struct json_value **items; /* JSON_ARRAY, JSON_OBJECT: count values, owned */
};

struct json_limits {
	size_t max_bytes; /* input longer than this is refused before parsing */
	int max_depth;    /* nesting of arrays/objects */
	size_t max_nodes; /* values in the whole document */
};

/* Limits suited to API answers: 8 MiB, depth 32, 1,000,000 nodes. */
extern const struct json_limits json_default_limits;

/*
 * Parses text[0..len) (need not be NUL-terminated) into a new tree in *out, within limits (NULL =
 * json_default_limits). On failure returns false, *out is NULL and err holds a short reason
 * (no input text is copied into it beyond a byte offset).
 */
bool json_parse(const char *text, size_t len, const struct json_limits *limits,
                struct json_value **out, char *err, size_t errsize)
        __attribute__((warn_unused_result));
void json_free(struct json_value *v);

/* Appends a parsed value (and everything in it) to a builder. */
void json_out_value(struct json_out *out, const struct json_value *v);
/*
 * v as JSON text (malloc'd, NUL-terminated, *len set), at most max bytes; NULL when it does
 * not fit or memory is short.
 */
char *json_to_text(const struct json_value *v, size_t max, size_t *len);

/* Member of an object by key (first match), or NULL if v is not an object or lacks it. */
const struct json_value *json_get(const struct json_value *v, const char *key);
/* Item of an array, or NULL if v is not an array or idx is out of range. */
const struct json_value *json_at(const struct json_value *v, size_t idx);
/* The string of v if v is a string, else NULL. */
const char *json_string(const struct json_value *v);
/* Member key of an object that is a string, else NULL. */
const char *json_get_string(const struct json_value *v, const char *key);

/* The JSON library's version, major * 10000 + minor * 100 + micro (for --version). */
int json_yajl_version(void);

#endif
