/*
 * api — one configured API ([apis] entry) and its calls: a connector, credentials, a lane of
 * the HTTP engine, and the counters SHOW APIS reads.
 *
 * api_submit() drives one statement's operation end to end: get a token (waiting for a refresh
 * if one is needed), send the connector's ONE request, read the answer, and retry only when
 * the API guarantees that nothing was written: once after a refused token (refresh first),
 * and after a rate limit when the wait it asks for fits before the call's deadline. Every
 * other failure is returned as it is.
 */
#ifndef SB_API_API_H
#define SB_API_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "api/connector.h"

struct http_engine;
struct api;
struct api_call;

/*
 * Creates the API named name from its [apis] pairs on eng (borrowed). Besides the connector's
 * keys: auth=none|bearer|oauth2 (+ token= / token_url= client_id= client_secret=
 * refresh_token=; auth_header=), timeout= seconds per HTTP request (default 10), deadline= seconds
 * for a whole call including waits (default 30, at least timeout), max_in_flight= concurrent
 * requests (default 10), ca_file=. NULL with a clear message in err on a bad line.
 */
struct api *api_create(struct http_engine *eng, const char *name, const struct cf_kv *kv, int nkv,
                       char *err, size_t errsize);
/*
 * Drops the calls in flight without calling their callbacks, then frees the API. Must come
 * before http_engine_free() of its engine (which frees the API's lanes).
 */
void api_free(struct api *api);

const char *api_name(const struct api *api);
const struct connector *api_connector(const struct api *api);
/* Rows one statement may touch for op (more → 54000 before anything is sent). */
int api_max_rows(const struct api *api, enum api_op op);

/*
 * res belongs to the api module and is freed after the callback returns; use
 * api_result_move() to keep it. The callback may submit or cancel other calls, but must not
 * free the api.
 */
typedef void (*api_done_cb)(void *arg, struct api_result *res);

/*
 * Starts op on rows[0..nrows) of table. table and rows (and the strings they point to) are
 * borrowed and must stay valid until the callback runs or the call is cancelled. cb runs later
 * from the loop, exactly once unless api_call_cancel() comes first. NULL only when out of
 * memory (nothing will be called).
 */
struct api_call *api_submit(struct api *api, const struct api_table *table, enum api_op op,
                            const struct api_row *rows, int nrows, api_done_cb cb, void *arg);
/*
 * api_submit() with the request's idempotency key chosen by the caller (at most 47 characters):
 * for APIs that take one (Stripe), a request repeated with the same key within the API's key
 * window (connector_key_window_s()) is applied at most once, and the repeat answers what the
 * first did. key NULL or "": a fresh key, as api_submit(). Ignored for APIs without
 * idempotency keys. A 5xx the API replays for the key (error.replayed) is not retried.
 */
struct api_call *api_submit_keyed(struct api *api, const struct api_table *table, enum api_op op,
                                  const struct api_row *rows, int nrows, const char *key,
                                  api_done_cb cb, void *arg);

/* The timeout of one HTTP request (timeout=). */
int64_t api_timeout_usec(const struct api *api);
/* Whether the API's connector can read a record by id (api_submit_read()). */
bool api_can_read(const struct api *api);
/*
 * Reads the record with this id as the API holds it now: the callback gets one row (the id and
 * the fields, mapped to columns), or an error, NOT_FOUND when no such record exists (any more).
 * fields[0..nfields): the API fields of the table's columns, for APIs that answer only what is
 * asked for (used before this returns). Retried like a write whose failure wrote nothing. id
 * is copied; table is borrowed as in api_submit().
 */
struct api_call *api_submit_read(struct api *api, const struct api_table *table, const char *id,
                                 const char *const *fields, int nfields, api_done_cb cb, void *arg);
/*
 * Finds the record of table whose external id (external_id=) is value, as api_submit_read()
 * reads one by id: one row with the record's id and fields, or NOT_FOUND when the API has none.
 */
struct api_call *api_submit_find(struct api *api, const struct api_table *table, const char *value,
                                 const char *const *fields, int nfields, api_done_cb cb, void *arg);

/*
 * Finds the record an insert of table created with idempotency key key (for tables where
 * connector_can_find_key()), as api_submit_find() finds one by external id: one row with the
 * record's id and fields, or NOT_FOUND when no record carries the key. key is copied.
 */
struct api_call *api_submit_find_key(struct api *api, const struct api_table *table,
                                     const char *key, api_done_cb cb, void *arg);

/*
 * Forgets a call whose callback has not run. If its request was already sent, the API may
 * still apply it: the caller must treat the outcome as unknown.
 */
void api_call_cancel(struct api_call *call);

/*
 * may_send(arg) is asked before each time the call's request leaves (the first, and every
 * repeat: after a rate limit, a refused token, an unknown outcome or a busy idempotency key).
 * False ends the call there, as its deadline would: with the last attempt's error (an earlier
 * attempt that may have been applied makes it an unknown outcome), or, when nothing was sent,
 * an error saying nothing was written; error.stopped says the check ended it. For a caller
 * whose claim on the outcome is gone (a write whose transaction ended, so that others may
 * settle it): a request sent after that could land after they read the record. The callback
 * comes from the loop and must not cancel the call.
 */
void api_call_set_send_check(struct api_call *call, bool (*may_send)(void *arg), void *arg);

/* ---- single requests of the read side (the sync worker) ---- */

struct api_fetch;
/* resp is valid during the call only. */
typedef void (*api_fetch_cb)(void *arg, const struct http_response *resp);

/*
 * Sends the request spec describes (its contents are taken: spec is left empty) with this
 * API's credentials, timeout, CA file and lane, the lane it shares with client writes. A 401
 * with refreshable credentials is answered by one token refresh and one resend. cb runs
 * exactly once, later, from the loop, unless api_fetch_cancel() comes first. NULL (spec
 * freed, cb never called) when out of memory or the URL is unusable.
 */
struct api_fetch *api_fetch(struct api *api, struct api_http_spec *spec, api_fetch_cb cb,
                            void *arg);
void api_fetch_cancel(struct api_fetch *f);

/*
 * Requests per second the API allows: rate_limit= on its line, else the read side's default
 * for its type (0 when it has no read side).
 */
double api_rate_limit(const struct api *api);
/* The share of that rate the sync worker may use, in percent: sync_budget= (default 50). */
int api_sync_budget(const struct api *api);

struct api_stats {
	const char *name;
	const char *type;
	int64_t calls;    /* api_submit() calls finished */
	int64_t requests; /* HTTP requests sent (retries included) */
	int64_t errors;   /* calls that ended in an error */
	int64_t retries;
	int64_t rate_limited;     /* answers that said "rate limited" */
	int in_flight;            /* HTTP requests in flight now */
	int queued;               /* HTTP requests waiting for a slot now */
	int active_calls;         /* calls not finished yet */
	int64_t avg_latency_usec; /* over answered requests */
	const char *auth;         /* none, bearer, oauth2 */
	const char *token_state;
	int64_t usage_used; /* from Sforce-Limit-Info api-usage=N/M; -1 when unknown */
	int64_t usage_max;
	char last_error[256]; /* class, API code and HTTP status of the last failed call */
};
void api_get_stats(const struct api *api, struct api_stats *out);

/* ---- all APIs of a configuration ---- */

struct cf_api;
struct api_set;

/*
 * Creates every API of the [apis] list (config's cfg->apis). On the first bad entry returns
 * NULL with "file:line: message" in err. On reload, build a new set and free the old one only
 * when none of its APIs has calls left (api_stats.active_calls): freeing drops them silently.
 */
struct api_set *api_set_create(struct http_engine *eng, const struct cf_api *apis, char *err,
                               size_t errsize);
void api_set_free(struct api_set *set);
/* The API named name, or NULL. */
struct api *api_set_find(const struct api_set *set, const char *name);
int api_set_count(const struct api_set *set);
/* The i-th API, 0 <= i < count, in configuration order (for SHOW APIS). */
struct api *api_set_get(const struct api_set *set, int i);

#endif
