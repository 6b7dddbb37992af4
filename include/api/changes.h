/*
 * changes — reading an API's records and its change feed, page by page, for the sync worker
 * (src/mutation/sync.c). The read half of a connector, kept apart from the write half
 * (connector.h): a connector type that can be synced points its connector_ops.changes at one
 * struct changes_ops.
 *
 * Like the write half this is pure translation with no I/O: given the stored cursor (and the
 * continuation of a listing in progress) it builds ONE HTTP request; given the answer it
 * returns the page: records in the order they must be applied, each an upsert (the API's
 * field object) or a delete, and the cursor to store in the same transaction as the rows.
 *
 * Cursors are the connector's own text (the sync worker stores and hands them back without
 * looking inside): "" means "nothing loaded yet", so a request with it lists everything
 * (the backfill). A crash between pages resumes from the stored cursor: a connector's
 * cursor must name a point after which nothing was applied, so that no change is skipped,
 * and a change seen twice is only written twice (an upsert of the same image).
 *
 * Invariants: a parse never trusts a length, count or type in the answer; an id is never
 * NULL or empty in a returned record; every error carries a class (connector.h).
 */
#ifndef SB_API_CHANGES_H
#define SB_API_CHANGES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "api/connector.h"

struct json_value;

/* What to fetch: the next page of the feed after cursor (or of the listing next continues). */
struct changes_req {
	const char *cursor; /* the stored cursor; "" = from the beginning (backfill) */
	const char *next;   /* the previous page's continuation, NULL on a listing's first page */
	const char *const *fields; /* API fields to read: the table's columns, mapped */
	int nfields;
	int page_size;
	/*
	 * List every record, whatever the cursor says (connectors with full_scan_deletes): the
	 * worker deletes the rows whose records the whole listing did not name.
	 */
	bool full_scan;
};

struct changes_record {
	const char *id; /* borrowed from the page's document, never NULL or "" */
	bool deleted;
	const struct json_value *fields; /* the record as a JSON object of API fields; NULL for
	                                    a delete */
};

struct changes_page {
	bool ok;
	struct api_error error;         /* when !ok */
	struct json_value *doc;         /* the parsed answer; owned */
	struct changes_record *records; /* in the order they must be applied; owned array */
	int nrecords;
	bool more;     /* another page follows now (with next as its continuation) */
	char *next;    /* continuation of this listing, NULL when none; owned */
	char *cursor;  /* where the feed resumes after this page; NULL = unchanged; owned */
	int64_t total; /* records this listing holds in all, when the API says; else -1 */
	double newest; /* epoch seconds of the newest change on the page; 0 when unknown */
};
void changes_page_init(struct changes_page *p);
void changes_page_free(struct changes_page *p);
/* Appends a record to p (id borrowed from p->doc). False when out of memory. */
bool changes_page_add(struct changes_page *p, const char *id, bool deleted,
                      const struct json_value *fields) __attribute__((warn_unused_result));

struct changes_ops {
	/* [apis] keys the read side accepts beyond the connector's own (NULL-terminated). */
	const char *const *keys;
	/* Reads those keys into c->changes_priv; may be NULL. */
	bool (*configure)(struct connector *c, const struct cf_kv *kv, int nkv, char *err,
	                  size_t errsize);
	void (*release)(struct connector *c);
	/* Requests per second the API allows when rate_limit= is not set. */
	double default_rate;
	/* Records per page when the worker asks for none. */
	int default_page_size;
	/*
	 * The API has no deletion feed: deletes are found by a full listing of the ids every
	 * full_sync_interval (changes_req.full_scan).
	 */
	bool full_scan_deletes;
	/*
	 * The cursor that means "changes from now on" (backfill=off on a table with no cursor),
	 * now being the wall clock in seconds. False when it does not fit.
	 */
	bool (*cursor_now)(const struct connector *c, long long now, char *buf, size_t size);
	bool (*build)(const struct connector *c, const struct api_table *t,
	              const struct changes_req *req, struct api_http_spec *out,
	              struct api_error *err);
	/* Only called for HTTP_OUTCOME_ANSWER with a 2xx status. Fills out->ok or out->error. */
	void (*parse)(const struct connector *c, const struct api_table *t,
	              const struct changes_req *req, const struct http_response *resp,
	              struct changes_page *out);
};

/* Whether c can be synced: its type has a read side, configured (rest: list_path= given). */
bool changes_supported(const struct connector *c);

/*
 * Builds the one request for req. False with err filled (class INTERNAL for a cursor or
 * continuation that cannot be used, VALIDATION for a field name the API cannot take).
 */
bool changes_build_request(const struct connector *c, const struct api_table *t,
                           const struct changes_req *req, struct api_http_spec *out,
                           struct api_error *err) __attribute__((warn_unused_result));

/*
 * Reads the answer to that request into out (initialised here). Non-answers and non-2xx
 * statuses become errors (rate limits with Retry-After, 401/403 as AUTH/PERMISSION).
 */
void changes_parse_response(const struct connector *c, const struct api_table *t,
                            const struct changes_req *req, const struct http_response *resp,
                            struct changes_page *out);

/* An ISO 8601 time ("2024-05-01T10:00:00.000+0000", "...Z", "...+02:00") as epoch seconds. */
bool changes_parse_time(const char *text, double *out) __attribute__((warn_unused_result));

extern const struct changes_ops salesforce_changes_ops;
extern const struct changes_ops stripe_changes_ops;
extern const struct changes_ops rest_changes_ops;
extern const struct changes_ops hubspot_changes_ops;
extern const struct changes_ops airtable_changes_ops;

#endif
