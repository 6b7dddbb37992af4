/*
 * api — calls of one API, end to end (see include/api/api.h).
 *
 * A call moves: AUTH (waiting for a token) → SENT (one HTTP request in flight) → done, with
 * two ways back to AUTH: a refused token (once, after invalidating it) and a rate limit whose
 * wait fits before the deadline (WAITING on the call's timer). A retry happens only when the
 * answer guarantees nothing was written. The request body is built once and reused, except
 * for a delete refused only because some of its records are gone: it is built again without
 * them and sent in the same call (api_call_drop_gone()).
 *
 * Invariants: a call is on api->calls until its callback runs or it is cancelled; at any time
 * at most one of http_req / auth_wait / the timer is pending; callbacks come from the loop.
 */
#include "api/api.h"
#include "api/changes.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <time.h>

#include <event2/event.h>

#include "api/http.h"
#include "api/oauth.h"
#include "log.h"

#define API_MAX_RATE_RETRIES 3
/* Retries of a request with an idempotency key after an unknown outcome or a 5xx. */
#define API_MAX_IDEMPOTENT_RETRIES  2
#define API_IDEMPOTENT_BACKOFF_USEC (500 * INT64_C(1000))

enum api_call_state {
	API_CALL_START,
	API_CALL_AUTH,
	API_CALL_SENT,
	API_CALL_WAITING,
	API_CALL_DONE,
};

static const char *api_call_state_str(enum api_call_state st)
{
	switch (st) {
	case API_CALL_START:
		return "starting";
	case API_CALL_AUTH:
		return "waiting for a token";
	case API_CALL_SENT:
		return "sent";
	case API_CALL_WAITING:
		return "waiting to retry";
	case API_CALL_DONE:
		return "done";
	}
	return "?";
}

/* What a call that writes nothing looks a record up by. */
enum api_lookup {
	API_LOOKUP_ID,       /* api_submit_read() */
	API_LOOKUP_EXTERNAL, /* api_submit_find() */
	API_LOOKUP_KEY,      /* api_submit_find_key() */
};

struct api_call {
	struct api *api;
	const struct api_table *table;
	enum api_op op;
	const struct api_row *rows;
	int nrows;
	/*
	 * A delete resent without the rows whose records the API said were gone: gone[0..nrows)
	 * marks those, left[0..nleft) are the rows the request now carries and left_row[] their
	 * index in rows. NULL/0 while the request carries all the rows.
	 */
	bool *gone;
	struct api_row *left;
	int *left_row;
	int nleft;
	api_done_cb cb;
	void *arg;
	enum api_call_state state;
	struct api_http_spec spec;
	struct api_result result;
	int64_t deadline_usec;
	int rate_retries;
	int idem_retries;
	int in_use_retries; /* "key in use" answers: waits of 0.5, 1, then 2 s until the deadline */
	bool refreshed;
	bool maybe_written; /* an earlier attempt failed in a way that may have applied it */
	int64_t submitted_usec;
	bool unchanged;     /* an update that changes nothing: answered without a request */
	char *read_id;      /* a read of this record (api_submit_read()), not a write */
	enum api_lookup lookup; /* what read_id is: a record id, an external id, a key */
	char *token_used;
	bool (*may_send)(void *arg); /* asked before each send (api_call_set_send_check()) */
	void *may_send_arg;
	struct http_request *http_req;
	struct oauth_wait *auth_wait;
	struct event *timer;
	TAILQ_ENTRY(api_call) link;
};

TAILQ_HEAD(api_call_list, api_call);

struct api {
	char *name;
	struct http_engine *eng;
	struct connector *conn;
	struct oauth *auth;
	struct http_lane *lane;
	int64_t timeout_usec;
	int64_t deadline_usec;
	char *ca_file;
	struct api_call_list calls;
	int ncalls;

	int64_t st_calls, st_requests, st_errors, st_retries, st_rate_limited;
	int64_t st_latency_sum, st_latency_n;
	int64_t usage_used, usage_max;
	char last_error[256];

	double rate_limit; /* requests per second the API allows */
	int sync_budget;   /* percent of it the sync worker may use */
	TAILQ_HEAD(, api_fetch) fetches;
};

static int64_t api_now_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* "10", "2.5" → microseconds within (0, 3600 s]. */
static bool api_parse_seconds(const char *text, int64_t *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(text, &end);
	if (errno != 0 || end == text || *end != '\0' || !(v > 0) || v > 3600)
		return false;
	*out = (int64_t)(v * 1e6);
	return true;
}

static bool api_parse_read_keys(struct api *api, const char *name, const struct cf_kv *kv,
                                int nkv, char *err, size_t errsize);

struct api *api_create(struct http_engine *eng, const char *name, const struct cf_kv *kv, int nkv,
                       char *err, size_t errsize)
{
	const char *timeout = api_kv_get(kv, nkv, "timeout");
	const char *deadline = api_kv_get(kv, nkv, "deadline");
	const char *mif = api_kv_get(kv, nkv, "max_in_flight");
	const char *ca = api_kv_get(kv, nkv, "ca_file");
	struct api *api = calloc(1, sizeof(*api));
	long max_in_flight = 10;

	if (api == NULL) {
		snprintf(err, errsize, "out of memory");
		return NULL;
	}
	TAILQ_INIT(&api->calls);
	TAILQ_INIT(&api->fetches);
	api->eng = eng;
	api->sync_budget = 50;
	api->usage_used = api->usage_max = -1;
	api->timeout_usec = 10 * INT64_C(1000000);
	api->deadline_usec = 30 * INT64_C(1000000);
	if (timeout != NULL && !api_parse_seconds(timeout, &api->timeout_usec)) {
		snprintf(err, errsize, "api \"%s\": timeout=%.20s is not a number of seconds", name,
		         timeout);
		goto failed;
	}
	if (deadline != NULL && !api_parse_seconds(deadline, &api->deadline_usec)) {
		snprintf(err, errsize, "api \"%s\": deadline=%.20s is not a number of seconds",
		         name, deadline);
		goto failed;
	}
	if (api->deadline_usec < api->timeout_usec)
		api->deadline_usec = api->timeout_usec;
	if (mif != NULL) {
		char *end;
		errno = 0;
		max_in_flight = strtol(mif, &end, 10);
		if (errno != 0 || end == mif || *end != '\0' || max_in_flight < 1 ||
		    max_in_flight > 1000) {
			snprintf(err, errsize, "api \"%s\": max_in_flight=%.20s is not in 1..1000",
			         name, mif);
			goto failed;
		}
	}
	if (!api_parse_read_keys(api, name, kv, nkv, err, errsize))
		goto failed;
	api->name = strdup(name);
	if (api->name == NULL || (ca != NULL && (api->ca_file = strdup(ca)) == NULL)) {
		snprintf(err, errsize, "out of memory");
		goto failed;
	}
	api->conn = connector_create(name, kv, nkv, err, errsize);
	if (api->conn == NULL)
		goto failed;
	if (api->rate_limit <= 0)
		api->rate_limit = api->conn->ops->changes ? api->conn->ops->changes->default_rate : 0;
	api->auth = oauth_create(eng, name, kv, nkv, api->timeout_usec, err, errsize);
	if (api->auth == NULL)
		goto failed;
	api->lane = http_lane_create(eng, name, (int)max_in_flight);
	if (api->lane == NULL) {
		snprintf(err, errsize, "out of memory");
		goto failed;
	}
	return api;
failed:
	api_free(api);
	return NULL;
}

/* rate_limit= (requests per second, > 0) and sync_budget= (percent, 1..100). */
static bool api_parse_read_keys(struct api *api, const char *name, const struct cf_kv *kv,
                                int nkv, char *err, size_t errsize)
{
	const char *rate = api_kv_get(kv, nkv, "rate_limit");
	const char *budget = api_kv_get(kv, nkv, "sync_budget");
	char *end;

	if (rate != NULL) {
		errno = 0;
		api->rate_limit = strtod(rate, &end);
		if (errno != 0 || end == rate || *end != '\0' || !(api->rate_limit > 0) ||
		    api->rate_limit > 100000) {
			snprintf(err, errsize,
			         "api \"%s\": rate_limit=%.20s is not a number of requests per second",
			         name, rate);
			return false;
		}
	}
	if (budget != NULL) {
		long v;
		errno = 0;
		v = strtol(budget, &end, 10);
		if (*end == '%')
			end++;
		if (errno != 0 || end == budget || *end != '\0' || v < 1 || v > 100) {
			snprintf(err, errsize, "api \"%s\": sync_budget=%.20s is not a percentage in 1..100",
			         name, budget);
			return false;
		}
		api->sync_budget = (int)v;
	}
	return true;
}

static void api_fetch_free(struct api_fetch *f);

static void api_call_free(struct api_call *call)
{
	struct api *api = call->api;

	TAILQ_REMOVE(&api->calls, call, link);
	api->ncalls--;
	if (call->http_req != NULL)
		http_cancel(call->http_req);
	if (call->auth_wait != NULL)
		oauth_wait_cancel(call->auth_wait);
	if (call->timer != NULL)
		event_free(call->timer);
	api_http_spec_free(&call->spec);
	api_result_free(&call->result);
	free(call->token_used);
	free(call->read_id);
	free(call->gone);
	free(call->left);
	free(call->left_row);
	free(call);
}

void api_free(struct api *api)
{
	struct api_call *call;

	if (api == NULL)
		return;
	while ((call = TAILQ_FIRST(&api->calls)) != NULL)
		api_call_free(call);
	while (!TAILQ_EMPTY(&api->fetches))
		api_fetch_free(TAILQ_FIRST(&api->fetches));
	/* the lane first: its requests point at calls that are gone now */
	if (api->lane != NULL)
		http_lane_free(api->lane);
	oauth_free(api->auth);
	connector_free(api->conn);
	free(api->ca_file);
	free(api->name);
	free(api);
}

const char *api_name(const struct api *api)
{
	return api->name;
}

const struct connector *api_connector(const struct api *api)
{
	return api->conn;
}

int api_max_rows(const struct api *api, enum api_op op)
{
	return connector_max_rows(api->conn, op);
}

/* Hands the result to the caller and frees the call. */
static void api_call_finish(struct api_call *call)
{
	struct api *api = call->api;

	call->state = API_CALL_DONE;
	api->st_calls++;
	call->result.call_usec = api_now_usec() - call->submitted_usec;
	if (!call->result.ok && call->maybe_written && call->result.error.nothing_written) {
		/* The last attempt changed nothing, but an earlier one may have: say so. */
		struct api_error *e = &call->result.error;
		char why[sizeof(e->message)];

		memcpy(why, e->message, sizeof(why));
		snprintf(e->message, sizeof(e->message),
		         "an earlier attempt may have been applied; the retry failed: %.400s", why);
		e->cls = API_ERR_UNKNOWN_OUTCOME;
		e->nothing_written = false;
	}
	if (!call->result.ok) {
		api->st_errors++;
		/* class, code and status only: API messages quote record values */
		snprintf(api->last_error, sizeof(api->last_error), "%s%s%s (HTTP %d)",
		         api_error_class_str(call->result.error.cls),
		         call->result.error.code[0] ? " " : "", call->result.error.code,
		         call->result.error.http_status);
		log_debug("api %s: %s of %d rows failed: %s", api->name, api_op_str(call->op),
		          call->nrows, api_error_class_str(call->result.error.cls));
	}
	call->cb(call->arg, &call->result);
	api_call_free(call);
}

static void api_call_timer_cb(evutil_socket_t fd, short what, void *ud);

static bool api_call_arm(struct api_call *call, int64_t usec)
{
	struct timeval tv = {(time_t)(usec / 1000000), (suseconds_t)(usec % 1000000)};

	if (call->timer == NULL)
		call->timer =
		        evtimer_new(http_engine_base(call->api->eng), api_call_timer_cb, call);
	return call->timer != NULL && evtimer_add(call->timer, &tv) == 0;
}

/* Records the Sforce-Limit-Info "api-usage=N/M" figure. */
static void api_note_usage(struct api *api, const struct http_response *resp)
{
	const char *h = http_response_header(resp, "Sforce-Limit-Info");
	const char *p;
	long long used, max;

	if (h == NULL || (p = strstr(h, "api-usage=")) == NULL)
		return;
	if (sscanf(p + 10, "%lld/%lld", &used, &max) == 2 && used >= 0 && max > 0) {
		api->usage_used = used;
		api->usage_max = max;
	}
}

/*
 * The answer's status and the API's id for it, as its support asks for: Stripe's Request-Id,
 * HubSpot's X-HubSpot-Correlation-Id, the common X-Request-Id (generic REST APIs).
 */
static void api_note_answer(struct api_result *res, const struct http_response *resp)
{
	static const char *const headers[] = {"Request-Id", "X-HubSpot-Correlation-Id",
	                                      "X-Request-Id"};
	const char *id = NULL;

	res->http_status = (int)resp->status;
	for (size_t i = 0; i < sizeof(headers) / sizeof(headers[0]) && id == NULL; i++)
		id = http_response_header(resp, headers[i]);
	res->request_id[0] = '\0';
	if (id == NULL)
		return;
	/* printable ASCII only: it goes into log lines and label values */
	for (size_t i = 0, n = 0; id[i] != '\0' && n + 1 < sizeof(res->request_id); i++)
		if (id[i] > ' ' && id[i] < 127) {
			res->request_id[n++] = id[i];
			res->request_id[n] = '\0';
		}
}

static void api_call_send(struct api_call *call);
static void api_call_auth(struct api_call *call);

/* Replaces the call's result with "out of memory", nothing written by this last step. */
static void api_call_oom(struct api_call *call)
{
	api_result_free(&call->result);
	api_error_set(&call->result.error, API_ERR_INTERNAL, "out of memory");
	call->result.error.nothing_written = true;
}

/* The record id a row's delete named (its old image's key), or NULL. */
static const char *api_call_row_id(const struct api_call *call, int i)
{
	const struct api_value *v = api_image_get(&call->rows[i].old_image, call->table->pk_column);

	return v != NULL ? v->value : NULL;
}

/*
 * A delete answered for the rows still sent (call->left): the result gets one entry per row of
 * the call, in row order, each gone row with the id its delete named; the answer's status and
 * request id stay the call's (the write's log line and history show them). False: out of
 * memory.
 */
static bool api_call_spread_result(struct api_call *call)
{
	struct api_row_result *all = calloc((size_t)call->nrows, sizeof(*all));
	int status = call->result.http_status;
	char request_id[sizeof(call->result.request_id)];
	const char *id;
	int i, j;

	if (all == NULL)
		return false;
	memcpy(request_id, call->result.request_id, sizeof(request_id));
	for (j = 0; j < call->nleft && j < call->result.nrows; j++) {
		all[call->left_row[j]] = call->result.rows[j];
		memset(&call->result.rows[j], 0, sizeof(call->result.rows[j]));
	}
	api_result_free(&call->result);
	call->result.http_status = status;
	memcpy(call->result.request_id, request_id, sizeof(request_id));
	call->result.rows = all;
	call->result.nrows = call->nrows;
	call->result.ok = true;
	for (i = 0; i < call->nrows; i++) {
		if (!call->gone[i] || all[i].id != NULL)
			continue;
		id = api_call_row_id(call, i);
		if ((all[i].id = strdup(id != NULL ? id : "")) == NULL)
			return false;
	}
	return true;
}

/*
 * A delete refused because some of its records no longer exist (deleted by someone else, or
 * by an earlier attempt of this very request): those rows are done — the state the write asks
 * for — and the delete is sent again, in the same call, without them (a single gone record:
 * nothing left to send). Only when the refusal changed nothing and has no other cause: the
 * connector names the gone rows (api_result.gone), or the one record sent is gone
 * (record_gone). True when the call went on (resent or finished), false to handle the error as
 * any other. Each resend drops at least one row, so this ends; the resend is an attempt like
 * the first (may_send, deadline, an unknown outcome stays one).
 */
static bool api_call_drop_gone(struct api_call *call)
{
	struct api *api = call->api;
	struct api_error *e = &call->result.error;
	int nsent = call->left ? call->nleft : call->nrows;
	int i, j, nleft = 0, ngone = 0;
	struct api_http_spec spec;
	struct api_error berr;

	if (call->result.gone == NULL && !(e->record_gone && nsent == 1))
		return false;
	if (call->result.gone != NULL && !e->nothing_written)
		return false;
	if (call->gone == NULL && (call->gone = calloc((size_t)call->nrows, sizeof(bool))) == NULL)
		goto oom;
	for (j = 0; j < nsent; j++) {
		if (call->result.gone == NULL || call->result.gone[j]) {
			call->gone[call->left ? call->left_row[j] : j] = true;
			ngone++;
		}
	}
	if (ngone == 0)
		return false;
	if (call->left == NULL) {
		call->left = calloc((size_t)call->nrows, sizeof(*call->left));
		call->left_row = calloc((size_t)call->nrows, sizeof(*call->left_row));
		if (call->left == NULL || call->left_row == NULL)
			goto oom;
	}
	for (i = 0; i < call->nrows; i++) {
		if (call->gone[i])
			continue;
		call->left[nleft] = call->rows[i];
		call->left_row[nleft++] = i;
	}
	call->nleft = nleft;
	if (nleft == 0) {
		log_debug("api %s: the %d record(s) to delete were already gone", api->name,
		          call->nrows);
		if (!api_call_spread_result(call))
			api_call_oom(call);
		api_call_finish(call);
		return true;
	}
	api_error_set(&berr, API_ERR_NONE, "%s", "");
	if (!connector_build_request_keyed(api->conn, call->table, call->op, call->left, nleft,
	                                   NULL, &spec, &berr)) {
		/* the rows built once already: a failure now is no answer of the API's */
		api_result_free(&call->result);
		call->result.error = berr;
		call->result.error.nothing_written = true;
		call->result.error.local = true;
		api_call_finish(call);
		return true;
	}
	api_http_spec_free(&call->spec);
	call->spec = spec;
	api->st_retries++;
	log_debug("api %s: %d record(s) to delete already gone, sending the delete of the other %d",
	          api->name, ngone, nleft);
	api_result_free(&call->result);
	api_call_auth(call);
	return true;
oom:
	api_call_oom(call);
	api_call_finish(call);
	return true;
}

static void api_call_http_done(void *ud, const struct http_response *resp)
{
	struct api_call *call = ud;
	struct api *api = call->api;
	struct api_error *e;
	int64_t wait_usec, left;

	call->http_req = NULL;
	if (resp->resent)
		call->maybe_written =
		        true; /* curl's own second attempt: the first may have counted */
	if (resp->outcome == HTTP_OUTCOME_ANSWER) {
		api->st_latency_sum += resp->elapsed_usec;
		api->st_latency_n++;
		api_note_usage(api, resp);
	}
	api_result_free(&call->result);
	if (call->read_id != NULL && call->lookup == API_LOOKUP_EXTERNAL)
		connector_parse_find(api->conn, call->table, call->read_id, resp, &call->result);
	else if (call->read_id != NULL && call->lookup == API_LOOKUP_KEY)
		connector_parse_find_key(api->conn, call->table, call->read_id, resp,
		                         &call->result);
	else if (call->read_id != NULL)
		connector_parse_read(api->conn, call->table, call->read_id, resp, &call->result);
	else
		connector_parse_response(
		        api->conn, call->table, call->op, call->left ? call->left : call->rows,
		        call->left ? call->nleft : call->nrows, resp, &call->result);
	api_note_answer(&call->result, resp);
	/* an error's row is the call's, not the resent request's */
	if (call->left != NULL && call->result.error.row >= 0 &&
	    call->result.error.row < call->nleft)
		call->result.error.row = call->left_row[call->result.error.row];
	if (call->result.ok) {
		if (call->left != NULL && !api_call_spread_result(call))
			api_call_oom(call);
		api_call_finish(call);
		return;
	}
	e = &call->result.error;
	if (call->op == API_OP_DELETE && call->read_id == NULL && api_call_drop_gone(call))
		return;
	if (!e->nothing_written)
		call->maybe_written = true;
	if (e->session_expired && e->nothing_written &&
	    oauth_get_mode(api->auth) == OAUTH_MODE_REFRESH && !call->refreshed) {
		/* The token was refused: one refresh (shared with other calls), one retry. */
		call->refreshed = true;
		api->st_retries++;
		oauth_invalidate(api->auth, call->token_used);
		api_call_auth(call);
		return;
	}
	if (call->spec.idempotency_key[0] != '\0' && e->key_in_use) {
		/* an earlier attempt is still running there: its answer comes under the same key */
		wait_usec = API_IDEMPOTENT_BACKOFF_USEC
		            << (call->in_use_retries < 2 ? call->in_use_retries : 2);
		left = call->deadline_usec - api_now_usec();
		if (wait_usec + api->timeout_usec / 4 < left && api_call_arm(call, wait_usec)) {
			call->in_use_retries++;
			api->st_retries++;
			call->state = API_CALL_WAITING;
			log_debug("api %s: idempotency key in use, asking again in %lld ms",
			          api->name, (long long)(wait_usec / 1000));
			return;
		}
	}
	if (call->spec.idempotency_key[0] != '\0' &&
	    (e->cls == API_ERR_UNKNOWN_OUTCOME || e->cls == API_ERR_SERVER) && !e->replayed &&
	    call->idem_retries < API_MAX_IDEMPOTENT_RETRIES) {
		/*
		 * The same key again: the API applies the request at most once. (Not after an
		 * answer the API replays as the key's saved one: a repeat gets it again.)
		 */
		wait_usec = API_IDEMPOTENT_BACKOFF_USEC << call->idem_retries;
		left = call->deadline_usec - api_now_usec();
		if (wait_usec + api->timeout_usec / 4 < left && api_call_arm(call, wait_usec)) {
			call->idem_retries++;
			api->st_retries++;
			call->state = API_CALL_WAITING;
			log_debug("api %s: %s, retrying with the same idempotency key", api->name,
			          api_error_class_str(e->cls));
			return;
		}
	}
	if (e->cls == API_ERR_AUTH) {
		char why[sizeof(e->message)];
		memcpy(why, e->message, sizeof(why));
		snprintf(e->message, sizeof(e->message), "%s authentication failed: %.400s",
		         api->name, why);
	}
	if (e->cls == API_ERR_RATE_LIMIT) {
		api->st_rate_limited++;
		wait_usec = (e->retry_after >= 0 ? e->retry_after : 1) * INT64_C(1000000);
		left = call->deadline_usec - api_now_usec();
		if (e->nothing_written && call->rate_retries < API_MAX_RATE_RETRIES &&
		    wait_usec < left && api_call_arm(call, wait_usec)) {
			call->rate_retries++;
			api->st_retries++;
			call->state = API_CALL_WAITING;
			log_debug("api %s: rate limited, retrying in %lld ms", api->name,
			          (long long)(wait_usec / 1000));
			return;
		}
		if (e->retry_after < 0)
			e->retry_after = 1;
	}
	api_call_finish(call);
}

static void api_call_send(struct api_call *call)
{
	struct api *api = call->api;
	const char *token = oauth_token(api->auth);
	int64_t left = call->deadline_usec - api_now_usec();
	struct http_request *req;
	char hname[64], auth[4200]; /* "Bearer " + a token of at most 4095 bytes */

	if (left <= 0) {
		if (call->result.error.cls == API_ERR_NONE) {
			api_error_set(&call->result.error, API_ERR_UNAVAILABLE,
			              "%s: deadline passed before the request could be sent",
			              api->name);
			call->result.error.nothing_written = true;
		}
		api_call_finish(call);
		return;
	}
	if (call->may_send != NULL && !call->may_send(call->may_send_arg)) {
		/* its caller could not stand behind a request sent now: the last error stands */
		log_debug("api %s: %s of %d rows not sent (again): its caller gave up its claim",
		          api->name, api_op_str(call->op), call->nrows);
		if (call->result.error.cls == API_ERR_NONE) {
			api_error_set(&call->result.error, API_ERR_UNAVAILABLE,
			              "%s: the request was not sent: its write ended first",
			              api->name);
			call->result.error.nothing_written = true;
		}
		call->result.error.stopped = true;
		api_call_finish(call);
		return;
	}
	free(call->token_used);
	call->token_used = NULL;
	req = http_request_new(call->spec.method, call->spec.url);
	if (req == NULL)
		goto oom;
	if (token != NULL) {
		call->token_used = strdup(token);
		if (call->token_used == NULL ||
		    !oauth_header(api->auth, hname, sizeof(hname), auth, sizeof(auth)) ||
		    !http_request_add_header(req, hname, auth))
			goto oom_req;
	}
	if (call->spec.idempotency_key[0] != '\0') {
		if (!http_request_add_header(req, "Idempotency-Key", call->spec.idempotency_key))
			goto oom_req;
		http_request_allow_resend(req);
	}
	if (!http_request_add_header(req, "Accept", "application/json") ||
	    !http_request_set_ca_file(req, api->ca_file))
		goto oom_req;
	if (call->spec.body != NULL &&
	    (!http_request_set_body(req, call->spec.body, call->spec.body_len) ||
	     !http_request_add_header(req, "Content-Type",
	                              call->spec.content_type ? call->spec.content_type
	                                                      : "application/json")))
		goto oom_req;
	http_request_set_timeout(req, left < api->timeout_usec ? left : api->timeout_usec);
	api_result_free(&call->result);
	call->state = API_CALL_SENT;
	if (!http_submit(api->eng, api->lane, req, api_call_http_done, call)) {
		api_error_set(&call->result.error, API_ERR_INTERNAL, "%s: unusable request URL",
		              api->name);
		call->result.error.nothing_written = true;
		api_call_finish(call);
		return;
	}
	call->http_req = req;
	api->st_requests++;
	return;
oom_req:
	http_request_free(req);
oom:
	api_error_set(&call->result.error, API_ERR_INTERNAL, "out of memory");
	call->result.error.nothing_written = true;
	api_call_finish(call);
}

static void api_call_auth_done(void *ud, bool ok, const char *error)
{
	struct api_call *call = ud;

	call->auth_wait = NULL;
	if (ok) {
		api_call_send(call);
		return;
	}
	api_result_free(&call->result);
	if (oauth_failed_on_credentials(call->api->auth))
		api_error_set(&call->result.error, API_ERR_AUTH, "%s authentication failed: %s",
		              call->api->name, error ? error : "no token");
	else
		/* an outage of the token endpoint, not refused credentials (58000, not 28000) */
		api_error_set(&call->result.error, API_ERR_UNAVAILABLE, "%s: no access token: %s",
		              call->api->name, error ? error : "no token");
	call->result.error.nothing_written = true;
	api_call_finish(call);
}

static void api_call_auth(struct api_call *call)
{
	call->state = API_CALL_AUTH;
	if (oauth_ready(call->api->auth)) {
		api_call_send(call);
		return;
	}
	call->auth_wait = oauth_wait(call->api->auth, api_call_auth_done, call);
	if (call->auth_wait == NULL) {
		api_error_set(&call->result.error, API_ERR_INTERNAL, "out of memory");
		call->result.error.nothing_written = true;
		api_call_finish(call);
	}
}

/* An update that changes nothing the API holds is done as it stands: each row keeps its id. */
static void api_call_answer_unchanged(struct api_call *call)
{
	int i;

	call->result.rows = calloc((size_t)call->nrows, sizeof(*call->result.rows));
	if (call->result.rows == NULL)
		goto oom;
	call->result.nrows = call->nrows;
	for (i = 0; i < call->nrows; i++) {
		const struct api_value *idv =
		        api_image_get(&call->rows[i].old_image, call->table->pk_column);

		if (idv != NULL && idv->value != NULL &&
		    (call->result.rows[i].id = strdup(idv->value)) == NULL)
			goto oom;
	}
	call->result.ok = true;
	log_debug("api %s: update of %d rows changes nothing, no request", call->api->name,
	          call->nrows);
	api_call_finish(call);
	return;
oom:
	api_result_free(&call->result);
	api_error_set(&call->result.error, API_ERR_INTERNAL, "out of memory");
	call->result.error.nothing_written = true;
	api_call_finish(call);
}

static void api_call_timer_cb(evutil_socket_t fd, short what, void *ud)
{
	struct api_call *call = ud;

	switch (call->state) {
	case API_CALL_START:
		/* the first step, or a failure found in api_submit() to be reported now */
		if (call->result.error.cls != API_ERR_NONE)
			api_call_finish(call);
		else if (call->unchanged)
			api_call_answer_unchanged(call);
		else
			api_call_auth(call);
		return;
	case API_CALL_WAITING:
		api_call_auth(call);
		return;
	case API_CALL_AUTH:
	case API_CALL_SENT:
	case API_CALL_DONE:
		return;
	}
}

struct api_call *api_submit(struct api *api, const struct api_table *table, enum api_op op,
                            const struct api_row *rows, int nrows, api_done_cb cb, void *arg)
{
	return api_submit_keyed(api, table, op, rows, nrows, NULL, cb, arg);
}

static struct api_call *api_submit_lookup(struct api *api, const struct api_table *table,
                                          const char *id, enum api_lookup lookup,
                                          const char *const *fields, int nfields, api_done_cb cb,
                                          void *arg)
{
	struct api_call *call = calloc(1, sizeof(*call));

	if (call == NULL)
		return NULL;
	call->read_id = strdup(id ? id : "");
	if (call->read_id == NULL) {
		free(call);
		return NULL;
	}
	call->api = api;
	call->table = table;
	call->op = API_OP_UPDATE; /* for logs only */
	call->nrows = 1;
	call->cb = cb;
	call->arg = arg;
	call->state = API_CALL_START;
	call->deadline_usec = api_now_usec() + api->deadline_usec;
	api_result_init(&call->result);
	TAILQ_INSERT_TAIL(&api->calls, call, link);
	api->ncalls++;
	call->lookup = lookup;
	if (!(lookup == API_LOOKUP_EXTERNAL
	              ? connector_build_find(api->conn, table, id, fields, nfields, &call->spec,
	                                     &call->result.error)
	      : lookup == API_LOOKUP_KEY
	              ? connector_build_find_key(api->conn, table, id, &call->spec,
	                                         &call->result.error)
	              : connector_build_read(api->conn, table, id, fields, nfields, &call->spec,
	                                     &call->result.error)) &&
	    call->result.error.cls == API_ERR_NONE)
		api_error_set(&call->result.error, API_ERR_INTERNAL, "cannot build the read");
	if (!api_call_arm(call, 0)) {
		api_call_free(call);
		return NULL;
	}
	return call;
}

struct api_call *api_submit_read(struct api *api, const struct api_table *table, const char *id,
                                 const char *const *fields, int nfields, api_done_cb cb, void *arg)
{
	return api_submit_lookup(api, table, id, API_LOOKUP_ID, fields, nfields, cb, arg);
}

struct api_call *api_submit_find(struct api *api, const struct api_table *table, const char *value,
                                 const char *const *fields, int nfields, api_done_cb cb, void *arg)
{
	return api_submit_lookup(api, table, value, API_LOOKUP_EXTERNAL, fields, nfields, cb, arg);
}

struct api_call *api_submit_find_key(struct api *api, const struct api_table *table,
                                     const char *key, api_done_cb cb, void *arg)
{
	return api_submit_lookup(api, table, key, API_LOOKUP_KEY, NULL, 0, cb, arg);
}

void api_call_set_send_check(struct api_call *call, bool (*may_send)(void *arg), void *arg)
{
	call->may_send = may_send;
	call->may_send_arg = arg;
}

int64_t api_timeout_usec(const struct api *api)
{
	return api->timeout_usec;
}

bool api_can_read(const struct api *api)
{
	return connector_can_read(api->conn);
}

struct api_call *api_submit_keyed(struct api *api, const struct api_table *table, enum api_op op,
                                  const struct api_row *rows, int nrows, const char *key,
                                  api_done_cb cb, void *arg)
{
	struct api_call *call = calloc(1, sizeof(*call));

	if (call == NULL)
		return NULL;
	call->api = api;
	call->table = table;
	call->op = op;
	call->rows = rows;
	call->nrows = nrows;
	call->cb = cb;
	call->arg = arg;
	call->state = API_CALL_START;
	call->submitted_usec = api_now_usec();
	call->deadline_usec = call->submitted_usec + api->deadline_usec;
	api_result_init(&call->result);
	TAILQ_INSERT_TAIL(&api->calls, call, link);
	api->ncalls++;
	/* Built once: a failure here (too many rows, a bad value) is reported from the loop. */
	call->unchanged = op == API_OP_UPDATE && nrows <= connector_max_rows(api->conn, op) &&
	                  api_rows_change_nothing(table, rows, nrows);
	if (!connector_check_ids(api->conn, table, op, rows, nrows, &call->result.error))
		call->unchanged = false; /* reported from the loop */
	else if (!call->unchanged &&
	         !connector_build_request_keyed(api->conn, table, op, rows, nrows, key, &call->spec,
	                                        &call->result.error)) {
		if (call->result.error.cls == API_ERR_NONE)
			api_error_set(&call->result.error, API_ERR_INTERNAL,
			              "cannot build the request");
		call->result.error.local = true;
	}
	if (!api_call_arm(call, 0)) {
		api_call_free(call);
		return NULL;
	}
	return call;
}

void api_call_cancel(struct api_call *call)
{
	if (call == NULL || call->state == API_CALL_DONE)
		return;
	log_debug("api %s: call cancelled while %s", call->api->name,
	          api_call_state_str(call->state));
	api_call_free(call);
}

void api_get_stats(const struct api *api, struct api_stats *out)
{
	memset(out, 0, sizeof(*out));
	out->name = api->name;
	out->type = api->conn->ops->type;
	out->calls = api->st_calls;
	out->requests = api->st_requests;
	out->errors = api->st_errors;
	out->retries = api->st_retries;
	out->rate_limited = api->st_rate_limited;
	out->in_flight = http_lane_in_flight(api->lane);
	out->queued = http_lane_queued(api->lane);
	out->active_calls = api->ncalls;
	out->avg_latency_usec = api->st_latency_n ? api->st_latency_sum / api->st_latency_n : 0;
	out->auth = oauth_mode_str(oauth_get_mode(api->auth));
	out->token_state = oauth_state_str(oauth_get_state(api->auth));
	out->usage_used = api->usage_used;
	out->usage_max = api->usage_max;
	snprintf(out->last_error, sizeof(out->last_error), "%s", api->last_error);
}

/* ---- sets ---- */

struct api_set {
	struct api **apis;
	int count;
};

struct api_set *api_set_create(struct http_engine *eng, const struct cf_api *apis, char *err,
                               size_t errsize)
{
	struct api_set *set = calloc(1, sizeof(*set));
	const struct cf_api *ca;
	char why[512];
	int n = 0;

	if (set == NULL)
		goto oom;
	for (ca = apis; ca != NULL; ca = ca->next)
		n++;
	set->apis = calloc((size_t)(n ? n : 1), sizeof(*set->apis));
	if (set->apis == NULL)
		goto oom;
	for (ca = apis; ca != NULL; ca = ca->next) {
		struct api *api = api_create(eng, ca->name, ca->kv, ca->nkv, why, sizeof(why));
		if (api == NULL) {
			snprintf(err, errsize, "%s:%d: %s", ca->file ? ca->file : "?", ca->line,
			         why);
			api_set_free(set);
			return NULL;
		}
		set->apis[set->count++] = api;
	}
	return set;
oom:
	snprintf(err, errsize, "out of memory");
	api_set_free(set);
	return NULL;
}

void api_set_free(struct api_set *set)
{
	int i;

	if (set == NULL)
		return;
	for (i = 0; i < set->count; i++)
		api_free(set->apis[i]);
	free(set->apis);
	free(set);
}

struct api *api_set_find(const struct api_set *set, const char *name)
{
	int i;

	for (i = 0; set != NULL && i < set->count; i++) {
		if (strcmp(set->apis[i]->name, name) == 0)
			return set->apis[i];
	}
	return NULL;
}

int api_set_count(const struct api_set *set)
{
	return set != NULL ? set->count : 0;
}

struct api *api_set_get(const struct api_set *set, int i)
{
	return set != NULL && i >= 0 && i < set->count ? set->apis[i] : NULL;
}

/* ---- single requests of the read side ---- */

struct api_fetch {
	struct api *api;
	struct api_http_spec spec;
	api_fetch_cb cb;
	void *arg;
	bool refreshed;
	char *token_used;
	struct http_request *http_req;
	struct oauth_wait *auth_wait;
	TAILQ_ENTRY(api_fetch) link;
};

static void api_fetch_free(struct api_fetch *f)
{
	TAILQ_REMOVE(&f->api->fetches, f, link);
	if (f->http_req != NULL)
		http_cancel(f->http_req);
	if (f->auth_wait != NULL)
		oauth_wait_cancel(f->auth_wait);
	api_http_spec_free(&f->spec);
	free(f->token_used);
	free(f);
}

/* Ends f with a failure that sent nothing. */
static void api_fetch_fail(struct api_fetch *f, const char *why)
{
	struct http_response resp;

	memset(&resp, 0, sizeof(resp));
	resp.outcome = HTTP_OUTCOME_NOT_SENT;
	resp.error = why;
	resp.body = "";
	f->cb(f->arg, &resp);
	api_fetch_free(f);
}

static void api_fetch_auth(struct api_fetch *f);

static void api_fetch_http_done(void *ud, const struct http_response *resp)
{
	struct api_fetch *f = ud;
	struct api *api = f->api;

	f->http_req = NULL;
	if (resp->outcome == HTTP_OUTCOME_ANSWER) {
		api->st_latency_sum += resp->elapsed_usec;
		api->st_latency_n++;
		api_note_usage(api, resp);
		if (resp->status == 401 && !f->refreshed &&
		    oauth_get_mode(api->auth) == OAUTH_MODE_REFRESH) {
			f->refreshed = true;
			api->st_retries++;
			oauth_invalidate(api->auth, f->token_used);
			api_fetch_auth(f);
			return;
		}
		if (resp->status == 429)
			api->st_rate_limited++;
	}
	f->cb(f->arg, resp);
	api_fetch_free(f);
}

/* Sends f; false (nothing sent, cb not called) with why set when that cannot be done. */
static bool api_fetch_send(struct api_fetch *f, const char **why)
{
	struct api *api = f->api;
	const char *token = oauth_token(api->auth);
	struct http_request *req;
	char hname[64], auth[4200];

	*why = "out of memory";
	free(f->token_used);
	f->token_used = NULL;
	req = http_request_new(f->spec.method, f->spec.url);
	if (req == NULL)
		return false;
	if ((token != NULL &&
	     ((f->token_used = strdup(token)) == NULL ||
	      !oauth_header(api->auth, hname, sizeof(hname), auth, sizeof(auth)) ||
	      !http_request_add_header(req, hname, auth))) ||
	    !http_request_add_header(req, "Accept", "application/json") ||
	    !http_request_set_ca_file(req, api->ca_file) ||
	    (f->spec.body != NULL &&
	     (!http_request_set_body(req, f->spec.body, f->spec.body_len) ||
	      !http_request_add_header(req, "Content-Type",
	                               f->spec.content_type ? f->spec.content_type
	                                                    : "application/json")))) {
		http_request_free(req);
		return false;
	}
	/* a read changes nothing: curl may resend it on a fresh connection */
	http_request_allow_resend(req);
	http_request_set_timeout(req, api->timeout_usec);
	if (!http_submit(api->eng, api->lane, req, api_fetch_http_done, f)) {
		*why = "unusable request URL";
		return false;
	}
	f->http_req = req;
	api->st_requests++;
	return true;
}

static void api_fetch_auth_done(void *ud, bool ok, const char *error)
{
	struct api_fetch *f = ud;
	const char *fail;
	char why[300];

	f->auth_wait = NULL;
	if (ok) {
		if (!api_fetch_send(f, &fail))
			api_fetch_fail(f, fail);
		return;
	}
	snprintf(why, sizeof(why), "%s authentication failed: %s", f->api->name,
	         error ? error : "no token");
	api_fetch_fail(f, why);
}

static void api_fetch_auth(struct api_fetch *f)
{
	const char *fail;

	if (oauth_ready(f->api->auth)) {
		if (!api_fetch_send(f, &fail))
			api_fetch_fail(f, fail);
		return;
	}
	f->auth_wait = oauth_wait(f->api->auth, api_fetch_auth_done, f);
	if (f->auth_wait == NULL)
		api_fetch_fail(f, "out of memory");
}

struct api_fetch *api_fetch(struct api *api, struct api_http_spec *spec, api_fetch_cb cb,
                            void *arg)
{
	struct api_fetch *f = calloc(1, sizeof(*f));
	const char *why;

	if (f == NULL) {
		api_http_spec_free(spec);
		return NULL;
	}
	f->api = api;
	f->spec = *spec;
	memset(spec, 0, sizeof(*spec));
	f->cb = cb;
	f->arg = arg;
	TAILQ_INSERT_TAIL(&api->fetches, f, link);
	if (oauth_ready(api->auth)) {
		/* http_submit() never calls back from inside */
		if (!api_fetch_send(f, &why)) {
			api_fetch_free(f);
			return NULL;
		}
		return f;
	}
	f->auth_wait = oauth_wait(api->auth, api_fetch_auth_done, f);
	if (f->auth_wait == NULL) {
		api_fetch_free(f);
		return NULL;
	}
	return f;
}

void api_fetch_cancel(struct api_fetch *f)
{
	if (f != NULL)
		api_fetch_free(f);
}

double api_rate_limit(const struct api *api)
{
	return api->rate_limit;
}

int api_sync_budget(const struct api *api)
{
	return api->sync_budget;
}
