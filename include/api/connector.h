/*
 * connector — what every API connector (Salesforce, generic REST, ...) does, and the types the
 * rest of the program uses to talk about API writes.
 *
 * A connector is pure translation, with no I/O and no Postgres: given an operation, a table
 * mapping and the row images of one statement, it builds exactly ONE HTTP request (as a
 * struct api_http_spec); given the answer, it returns per-row results in row order, or ONE
 * error. Sending, auth, retries and counters are the api module's job (include/api/api.h).
 *
 * Invariants: a build never produces a request for more rows than max_rows(op); a parse never
 * trusts a length, count or type in the answer; every error carries a class the caller can
 * turn into a SQLSTATE, and says whether the API guarantees that nothing was written.
 */
#ifndef SB_API_CONNECTOR_H
#define SB_API_CONNECTOR_H

#include <stdbool.h>
#include <stddef.h>

#include "api/http.h"
/* include/config.h by relative path: a bare "config.h" finds autoconf's in the build dir */
#include "../config.h"

struct json_out;
struct json_value;

enum api_op {
	API_OP_INSERT,
	API_OP_UPDATE,
	API_OP_DELETE,
};
const char *api_op_str(enum api_op op);

/* How a column's text is sent: as a JSON string (default), number or boolean. */
enum api_value_type {
	API_VALUE_TEXT,
	API_VALUE_NUMBER, /* Postgres numeric/int/float text; "NaN"/"Infinity" are refused */
	API_VALUE_BOOL,   /* Postgres "t"/"f" (also "true"/"false") */
	API_VALUE_JSON,   /* json/jsonb/array text, sent as the JSON value it spells */
};
const char *api_value_type_str(enum api_value_type t);

/* One column of a row image: text as Postgres prints it, or NULL for SQL NULL. */
struct api_value {
	const char *column;
	const char *value;
	enum api_value_type type;
};

struct api_row_image {
	const struct api_value *values;
	int nvalues;
};

/*
 * One row of a statement: insert has new_image only, delete old_image only, update both (only
 * columns whose value changed are sent; the record id is the primary key column of old_image).
 */
struct api_row {
	struct api_row_image old_image;
	struct api_row_image new_image;
};

/* Column → field name override ("note:Description"). */
struct api_column_map {
	char *column;
	char *field;
};

/* How one synced table maps to an API object. */
struct api_table {
	char *name;      /* for messages, e.g. "salesforce.contacts" */
	char *object;    /* API object, e.g. "Contact"; "" when the API has none */
	char *pk_column; /* column holding the API's record id; "id" by default */
	struct api_column_map *overrides;
	int noverrides;
	char **readonly; /* columns never sent (computed by the API or the database) */
	int nreadonly;
	/*
	 * external_id=: a column whose field is unique at the API and given by the client, so
	 * that an insert can be found there again (settling); NULL when none. Connectors that
	 * cannot use one refuse the table (connector_check_table()).
	 */
	char *external_id;
};

/*
 * Fills t from a [synced_tables] entry's pairs: object=, columns='col:Field,...',
 * primary_key= (default id), readonly='col,col', external_id=col; api= and unknown keys are
 * left to the caller.
 * name is copied. False with a message in err on a malformed value; t is then empty.
 */
bool api_table_init(struct api_table *t, const char *name, const struct cf_kv *kv, int nkv,
                    char *err, size_t errsize) __attribute__((warn_unused_result));
void api_table_free(struct api_table *t);

enum api_error_class {
	API_ERR_NONE,
	API_ERR_VALIDATION,      /* a record was rejected (23514) */
	API_ERR_REQUIRED,        /* required field missing (23502) */
	API_ERR_DUPLICATE,       /* duplicate value (23505) */
	API_ERR_AUTH,            /* credentials rejected, token refresh failed (28000) */
	API_ERR_PERMISSION,      /* permission denied (42501) */
	API_ERR_RATE_LIMIT,      /* rate limited after bounded waiting (53400) */
	API_ERR_NOT_FOUND,       /* the record does not exist (any more) */
	API_ERR_UNAVAILABLE,     /* nothing was sent: DNS, connect, TLS (58000) */
	API_ERR_SERVER,          /* the API answered 5xx (58000) */
	API_ERR_UNKNOWN_OUTCOME, /* sent, no usable answer: maybe written (XX000) */
	API_ERR_BAD_ANSWER,      /* an answer we cannot read: maybe written (XX000) */
	API_ERR_TOO_MANY_ROWS,   /* more rows than one request takes (54000) */
	API_ERR_TOO_LARGE,       /* the request would pass syncbouncer's own size cap (54000) */
	API_ERR_ASSIGNED_ID, /* the record id is the API's to assign, not the client's (428C9) */
	API_ERR_INTERNAL,    /* out of memory, a value the API cannot carry, ... */
};
const char *api_error_class_str(enum api_error_class c);

struct api_error {
	enum api_error_class cls;
	bool nothing_written; /* the API guarantees no record changed */
	bool session_expired; /* the token was refused: refresh once and retry */
	int http_status;      /* 0 when no answer */
	int retry_after;      /* seconds the API asked us to wait, -1 when not said */
	int row;              /* index of the offending row, -1 when not about one row */
	char code[64];        /* the API's code, e.g. "INVALID_EMAIL_ADDRESS" */
	char message[512];    /* the API's message (or ours), for the client */
	/*
	 * What is wrong with the value, as a phrase that completes "Key (email)=(x) ...", e.g.
	 * "is not a valid email address." (the API's message when no phrase is known).
	 */
	char reason[512];
	char field[128];  /* offending API field, "" if none */
	char column[128]; /* its column, "" if unknown */
	char value[256];  /* the offending value as sent (truncated), "" if none */
	bool value_is_null;
	/*
	 * The column is known but not which row's value the API refused (a batch error that names
	 * no row, and a value that matches no single row): value is meaningless, and the client's
	 * DETAIL leaves the "Key (column)=(value)" clause out.
	 */
	bool value_unknown;
	/*
	 * The API is still working on an earlier attempt with the same idempotency key (Stripe's
	 * 409 idempotency_key_in_use): ask again with that key until the deadline.
	 */
	bool key_in_use;
	/*
	 * The error says the record itself no longer exists (Stripe resource_missing, Salesforce
	 * ENTITY_IS_DELETED, a REST 404/410, Airtable ROW_DOES_NOT_EXIST), not that the URL is
	 * wrong: a DELETE of that one record has nothing left to do, and succeeds.
	 */
	bool record_gone;
	/* found by syncbouncer before any request: the API never saw the row, nor judged it */
	bool local;
	/* the call's caller stopped it before a send (api_call_set_send_check()) */
	bool stopped;
	/*
	 * The answer is the API's saved answer to an earlier request with the same idempotency key
	 * (Stripe's "Idempotent-Replayed: true"), not a new attempt: repeating the request with
	 * that key gets the same answer again, so a 5xx of this kind is never retried with it.
	 */
	bool replayed;
};

/*
 * Sets e from a request body builder that failed: API_ERR_TOO_LARGE (54000, naming the cap) when
 * the body would pass the connector's own cap, else a validation error with the reason.
 */
struct json_out;
void api_error_from_json_out(struct api_error *e, const char *api, const struct json_out *o);
/* Sets e to the class and a printf-style message; every other field to "unknown/none". */
void api_error_set(struct api_error *e, enum api_error_class cls, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

/* One field value the API returned for a row (column = "" when no column maps to it). */
struct api_field_value {
	char *column;
	char *field;
	char *value; /* text; NULL for JSON null */
	/*
	 * value is JSON text (a number, true/false, an array or an object), not a string's
	 * content: a json or jsonb column takes it as that JSON value.
	 */
	bool json;
};

struct api_row_result {
	char *id; /* the record id (NULL only if the API gave none) */
	struct api_field_value *fields;
	int nfields;
};

/* ok: rows[0..nrows) in row order, one per input row; !ok: error. Owns everything in it. */
struct api_result {
	bool ok;
	struct api_error error;
	struct api_row_result *rows;
	int nrows;
	/*
	 * !ok, a batch delete refused only because some of its records no longer exist (Salesforce
	 * ENTITY_IS_DELETED under allOrNone, the others rolled back): gone[i] for each such row,
	 * one per input row; NULL when the refusal has any other cause. The call resends the
	 * delete without them (see api.c).
	 */
	bool *gone;
	/* set by api.c for the call's log line and metrics (not by connectors) */
	int http_status;     /* of the last answer, 0 when none arrived */
	char request_id[96]; /* the API's id of that answer (Request-Id, ...), "" when none */
	int64_t call_usec;   /* from api_submit() to the result, waits and retries included */
};
void api_result_init(struct api_result *r);
void api_result_free(struct api_result *r);
/* Moves src's contents into dst (dst's old contents are freed), leaving src empty. */
void api_result_move(struct api_result *dst, struct api_result *src);

/* The single HTTP request of one operation, before auth and timeouts are added. */
struct api_http_spec {
	enum http_method method;
	char *url;  /* absolute */
	char *body; /* NULL when none */
	size_t body_len;
	const char *content_type; /* static */
	/*
	 * Sent as Idempotency-Key when not empty: the API promises to apply a request with the
	 * same key once, so the call may be retried after an unknown outcome or a 5xx.
	 */
	char idempotency_key[48];
};
void api_http_spec_free(struct api_http_spec *s);
/*
 * Fills key (size >= 37) with API_KEY_PREFIX and 32 random hex digits. The prefix marks a key
 * that an insert carries in the record it creates (connector_can_find_key()): keys made before
 * inserts carried them (32 hex digits alone, still in intents written then) are never searched
 * for, and their repeats are sent as they were first sent.
 */
#define API_KEY_PREFIX "sbk-"
void api_random_key(char *key, size_t size);
/* Whether key was made by api_random_key() with API_KEY_PREFIX (see there). */
bool api_key_in_record(const char *key);

struct connector;
struct changes_ops;

struct connector_ops {
	const char *type;
	/* Keys this type accepts beyond the common ones (NULL-terminated). */
	const char *const *keys;
	bool (*configure)(struct connector *c, const struct cf_kv *kv, int nkv, char *err,
	                  size_t errsize);
	void (*release)(struct connector *c);
	int (*max_rows)(const struct connector *c, enum api_op op);
	/* The convention: column → field name and back (overrides are handled outside). */
	void (*field_name)(const struct connector *c, const char *column, char *buf, size_t size);
	void (*column_name)(const struct connector *c, const char *field, char *buf, size_t size);
	bool (*build)(const struct connector *c, const struct api_table *t, enum api_op op,
	              const struct api_row *rows, int nrows, struct api_http_spec *out,
	              struct api_error *err);
	/*
	 * Whether an insert sends the record id the row supplies (a REST insert_path with {id});
	 * NULL: the API assigns ids, and an insert must leave the id column out.
	 */
	bool (*insert_uses_id)(const struct connector *c);
	/* Only called for HTTP_OUTCOME_ANSWER. Must fill out->ok/rows or out->error. */
	void (*parse)(const struct connector *c, const struct api_table *t, enum api_op op,
	              const struct api_row *rows, int nrows, const struct http_response *resp,
	              struct api_result *out);
	/*
	 * Read records by id (settling a write whose outcome is unknown): one request for the
	 * record whose id is given; fields[0..nfields) are the API fields the table's columns map
	 * to (for APIs that answer only the fields asked for). NULL when the API offers no such
	 * read.
	 */
	bool (*build_read)(const struct connector *c, const struct api_table *t, const char *id,
	                   const char *const *fields, int nfields, struct api_http_spec *out,
	                   struct api_error *err);
	/* Whether this configuration can read by id; NULL: whenever build_read is set. */
	bool (*can_read)(const struct connector *c);
	/*
	 * Find the record whose external id field (t->external_id, mapped) holds value: one
	 * request. NULL: the connector cannot, and a table with external_id= is refused.
	 */
	bool (*build_find)(const struct connector *c, const struct api_table *t, const char *value,
	                   const char *const *fields, int nfields, struct api_http_spec *out,
	                   struct api_error *err);
	/* Only for HTTP_OUTCOME_ANSWER: one row with the record's id and fields, or NOT_FOUND. */
	void (*parse_find)(const struct connector *c, const struct api_table *t, const char *value,
	                   const struct http_response *resp, struct api_result *out);
	/* Only called for HTTP_OUTCOME_ANSWER; like parse, with one row or NOT_FOUND. */
	void (*parse_read)(const struct connector *c, const struct api_table *t, const char *id,
	                   const struct http_response *resp, struct api_result *out);
	/* The read side for the sync worker (include/api/changes.h); NULL: not syncable. */
	const struct changes_ops *changes;
	/*
	 * Idempotency keys. key_window_s: for how long after a request's first use of its key a
	 * repeat with that key is surely answered with the first request's saved answer (the API's
	 * key lifetime less a safety margin), in seconds; 0 when the API takes no keys. A request
	 * repeated later may be taken as a new one, and create a second record.
	 */
	int key_window_s;
	/*
	 * Whether an insert of t carries its idempotency key in the record it creates, so that
	 * the record can be found by that key (build_find_key); NULL: never.
	 */
	bool (*can_find_key)(const struct connector *c, const struct api_table *t);
	/*
	 * How long after its creation a record may still be missing from what build_find_key
	 * asks (a search index that lags), in seconds: "none found" proves nothing for a request
	 * younger than that.
	 */
	int find_key_lag_s;
	/* One request that finds the record created with idempotency key key. */
	bool (*build_find_key)(const struct connector *c, const struct api_table *t,
	                       const char *key, struct api_http_spec *out, struct api_error *err);
	/* Only for HTTP_OUTCOME_ANSWER: one row (id and fields), or NOT_FOUND. */
	void (*parse_find_key)(const struct connector *c, const struct api_table *t,
	                       const char *key, const struct http_response *resp,
	                       struct api_result *out);
};

struct connector {
	const struct connector_ops *ops;
	char *name;     /* the [apis] entry's name */
	char *base_url; /* without trailing '/' */
	int max_batch;  /* configured cap on rows per request (0 = the API's maximum) */
	void *priv;
	void *changes_priv; /* the read side's settings */
};

/*
 * Creates the connector of an [apis] entry named name from its pairs (type= chooses it). Keys
 * shared by all types (handled by the api module) are accepted here too: type, base_url, auth,
 * token, token_url, client_id, client_secret, refresh_token, timeout, deadline, max_in_flight,
 * ca_file, max_batch, auth_header, rate_limit, sync_budget; and the read side's keys. NULL with a clear message in err on a missing or bad key.
 */
struct connector *connector_create(const char *name, const struct cf_kv *kv, int nkv, char *err,
                                   size_t errsize);
void connector_free(struct connector *c);

/*
 * Checks what no API may be asked, before any request: an insert that supplies the record id
 * where the API assigns it, an update that changes the record id. Sets err (API_ERR_ASSIGNED_ID,
 * with PostgreSQL's words for a GENERATED ALWAYS column) and returns false for such rows.
 */
bool connector_check_ids(const struct connector *c, const struct api_table *t, enum api_op op,
                         const struct api_row *rows, int nrows, struct api_error *err);

/* Rows one request of op may carry (the API's maximum, lowered by max_batch). */
int connector_max_rows(const struct connector *c, enum api_op op);

/* The field a column maps to for this table: an override, else the connector's convention. */
void connector_field_name(const struct connector *c, const struct api_table *t, const char *column,
                          char *buf, size_t size);
/* The column a field maps to: an override, else the convention. */
void connector_column_name(const struct connector *c, const struct api_table *t, const char *field,
                           char *buf, size_t size);

/*
 * Fills f, one field of a record in the API's answer: the API's name of it, its column (as
 * connector_column_name() maps it) and its value as text (nested values as JSON text). False
 * when out of memory or the value cannot be read; what was set is freed with the result.
 */
bool connector_result_field(const struct connector *c, const struct api_table *t,
                            const char *field, const struct json_value *v,
                            struct api_field_value *f) __attribute__((warn_unused_result));

/* Fills rr from one record of an answer; false when out of memory. */
typedef bool (*connector_copy_fn)(const struct connector *c, const struct api_table *t,
                                  const struct json_value *rec, struct api_row_result *rr);

/*
 * Makes out the answer of a read or find that found one record: its row filled by copy(rec), and
 * out->ok; when out of memory, out is emptied and says so.
 */
void connector_result_one(const struct connector *c, const struct api_table *t,
                          const struct json_value *rec, connector_copy_fn copy,
                          struct api_result *out);

/*
 * The same for a record that is one flat JSON object (Salesforce, Stripe): the row has id and a
 * field per member of obj, but the member named skip (NULL: none).
 */
void connector_result_object(const struct connector *c, const struct api_table *t, const char *id,
                             const struct json_value *obj, const char *skip,
                             struct api_result *out);

/*
 * Builds the one request for op on rows[0..nrows) (1 <= nrows <= max_rows). On failure returns
 * false and fills err (class TOO_MANY_ROWS, VALIDATION for a value the API cannot take, or
 * INTERNAL); out is then empty.
 */
bool connector_build_request(const struct connector *c, const struct api_table *t, enum api_op op,
                             const struct api_row *rows, int nrows, struct api_http_spec *out,
                             struct api_error *err) __attribute__((warn_unused_result));

/*
 * connector_build_request() for a request whose idempotency key the caller chose (key NULL or
 * "": a fresh one), for APIs that take keys (key_window_s > 0; ignored by the others). An
 * insert of a table whose records can be found by key (connector_can_find_key()) carries it.
 */
bool connector_build_request_keyed(const struct connector *c, const struct api_table *t,
                                   enum api_op op, const struct api_row *rows, int nrows,
                                   const char *key, struct api_http_spec *out,
                                   struct api_error *err) __attribute__((warn_unused_result));

/*
 * Reads the outcome of the request built for the same arguments into out (initialised here):
 * per-row results, or one error. Non-answers map to UNAVAILABLE (not sent), UNKNOWN_OUTCOME or
 * BAD_ANSWER; Retry-After is read for every answer.
 */
void connector_parse_response(const struct connector *c, const struct api_table *t, enum api_op op,
                              const struct api_row *rows, int nrows,
                              const struct http_response *resp, struct api_result *out);

/* Whether the connector can read a record by id (connector_build_read()). */
bool connector_can_read(const struct connector *c);

/*
 * Builds the request that reads the record with this id, as the API holds it now, asking for
 * fields[0..nfields) (the API fields of the table's columns; NULL/0: the API's default). False
 * with err filled (INTERNAL when the API cannot read by id, VALIDATION for an unusable id).
 */
bool connector_build_read(const struct connector *c, const struct api_table *t, const char *id,
                          const char *const *fields, int nfields, struct api_http_spec *out,
                          struct api_error *err) __attribute__((warn_unused_result));

/*
 * Reads the answer to connector_build_read() into out (initialised here): ok with one row (id
 * and the fields the API holds, mapped to columns), or an error; a record that does not exist
 * (any more) is the error class NOT_FOUND.
 */
void connector_parse_read(const struct connector *c, const struct api_table *t, const char *id,
                          const struct http_response *resp, struct api_result *out);

/*
 * Checks a table's settings against what the connector can do (external_id=). False with the
 * reason in err.
 */
bool connector_check_table(const struct connector *c, const struct api_table *t, char *err,
                           size_t errsize) __attribute__((warn_unused_result));

/* Whether an insert of t can be found at the API by its external id (connector_build_find()). */
bool connector_can_find(const struct connector *c, const struct api_table *t);
/*
 * Builds the request that finds the record of t whose external id is value, asking for
 * fields[0..nfields). False with err filled, as connector_build_read().
 */
bool connector_build_find(const struct connector *c, const struct api_table *t, const char *value,
                          const char *const *fields, int nfields, struct api_http_spec *out,
                          struct api_error *err) __attribute__((warn_unused_result));
/* Reads the answer to connector_build_find() like connector_parse_read(). */
void connector_parse_find(const struct connector *c, const struct api_table *t, const char *value,
                          const struct http_response *resp, struct api_result *out);

/*
 * Idempotency keys: for how long a repeat with the same key is surely answered from the API's
 * saved answer (seconds; 0 when the API takes no keys), see connector_ops.key_window_s.
 */
int connector_key_window_s(const struct connector *c);
/*
 * Whether an insert of t can be found at the API by its idempotency key (when the key is one
 * that inserts carry, api_key_in_record()).
 */
bool connector_can_find_key(const struct connector *c, const struct api_table *t);
/* How long a found-by-key record may lag behind its creation (seconds; 0 when not at all). */
int connector_find_key_lag_s(const struct connector *c);
/*
 * Builds the request that finds the record an insert of t with idempotency key key created.
 * False with err filled, as connector_build_read() (VALIDATION for a key unfit for the search,
 * or one that no record carries: !api_key_in_record()).
 */
bool connector_build_find_key(const struct connector *c, const struct api_table *t, const char *key,
                              struct api_http_spec *out, struct api_error *err)
        __attribute__((warn_unused_result));
/*
 * Reads the answer to connector_build_find_key() like connector_parse_read(): one row, or
 * NOT_FOUND when no record carries the key; more than one record is a BAD_ANSWER naming them.
 */
void connector_parse_find_key(const struct connector *c, const struct api_table *t, const char *key,
                              const struct http_response *resp, struct api_result *out);

/* ---- helpers shared by connector implementations ---- */

/* Value of column in img, or NULL when the image has no such column. */
const struct api_value *api_image_get(const struct api_row_image *img, const char *column);
/* Whether column differs between old and new image of an update (NULL-aware). */
bool api_row_changed(const struct api_row *row, const char *column);
/*
 * Whether an update of rows[0..nrows) changes nothing the API holds: no column other than
 * read-only ones differs between old and new image in any row (a changed primary key counts as
 * a change, for the connector to refuse).
 */
bool api_rows_change_nothing(const struct api_table *t, const struct api_row *rows, int nrows);
bool api_table_is_readonly(const struct api_table *t, const char *column);
/* first_name → FirstName; id → Id. */
void api_snake_to_pascal(const char *in, char *buf, size_t size);
/* FirstName → first_name; Id → id; Score__c → score__c. */
void api_pascal_to_snake(const char *in, char *buf, size_t size);
/* Appends s to buf percent-encoded (unreserved characters kept); false when it does not fit. */
bool api_url_escape(const char *s, char *buf, size_t size, size_t *used)
        __attribute__((warn_unused_result));
/*
 * The same for a value that must stay exactly one path segment (a record id, an object name):
 * '/' is encoded like everything reserved, and "." and ".." (steps up the path, which curl, a
 * proxy or the API would resolve) become "%2E" and "%2E%2E".
 */
bool api_url_escape_segment(const char *s, char *buf, size_t size, size_t *used)
        __attribute__((warn_unused_result));
/*
 * A URL in memory of its own (the caller frees it): the prefix made from fmt, then the nsegs
 * segments, each escaped by api_url_escape_segment() and joined by '/'. NULL when out of memory.
 */
char *api_url_join(const char *const *segs, int nsegs, const char *fmt, ...)
        __attribute__((format(printf, 3, 4), warn_unused_result));
/* Value of key in kv (last one wins), or NULL. */
const char *api_kv_get(const struct cf_kv *kv, int nkv, const char *key);
/*
 * Fills err->field/column/value for an error on field. row is the offending row when the API
 * said which; with row = -1 the row is found by its value: the one value of the column that all
 * rows share, else the one row whose value the API's message names (as a whole word). When
 * neither finds it, err->value_unknown is set and err->row stays -1.
 */
void api_error_locate(struct api_error *err, const struct connector *c, const struct api_table *t,
                      enum api_op op, const struct api_row *rows, int nrows, int row,
                      const char *field);
/*
 * Appends the value of v as its type says (string, number, boolean, embedded JSON, null).
 * False when the text cannot be that type (bad number, not t/f, not JSON); the builder is then
 * left as it was.
 */
bool api_put_json_value(struct json_out *o, const struct api_value *v)
        __attribute__((warn_unused_result));
/*
 * Text of a returned JSON value for a column: strings as they are, numbers as written,
 * true/false, nested arrays/objects as JSON text; NULL for JSON null. *ok false when out of
 * memory.
 */
char *api_value_text(const struct json_value *v, bool *ok);
/* Parses a Retry-After header (seconds; an HTTP date counts as unknown); -1 when absent/bad. */
int api_parse_retry_after(const struct http_response *resp);

extern const struct connector_ops salesforce_connector_ops;
extern const struct connector_ops rest_connector_ops;
extern const struct connector_ops stripe_connector_ops;
extern const struct connector_ops hubspot_connector_ops;
extern const struct connector_ops airtable_connector_ops;

#endif
