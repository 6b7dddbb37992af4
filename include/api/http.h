/*
 * http — HTTP requests on the process's one libevent loop (libcurl multi-socket interface).
 *
 * Host names are resolved by the dns module and handed to curl ready-made, so curl never
 * resolves and never blocks. Requests go through a lane: a lane (one per API) caps how many
 * requests are in flight and queues the rest in FIFO order. Every request ends in exactly one
 * callback, from the loop, never from inside http_submit(), unless it is cancelled first.
 *
 * What callers need to know about a failure is whether the far side may have acted on the
 * request: enum http_outcome says so.
 */
#ifndef SB_API_HTTP_H
#define SB_API_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct dns;

struct http_engine;
struct http_lane;
struct http_request;

enum http_method {
	HTTP_GET,
	HTTP_POST,
	HTTP_PUT,
	HTTP_PATCH,
	HTTP_DELETE,
};
const char *http_method_str(enum http_method m);
/* Parses "GET", "post", ...; false if unknown. */
bool http_method_parse(const char *text, enum http_method *out) __attribute__((warn_unused_result));

enum http_outcome {
	/* A complete HTTP answer arrived (any status). */
	HTTP_OUTCOME_ANSWER,
	/* Failed before any byte of the request left: DNS, connect refused, TLS, queue timeout. */
	HTTP_OUTCOME_NOT_SENT,
	/* Failed after the request was (partly) sent: timeout, reset. The server may have acted. */
	HTTP_OUTCOME_UNKNOWN,
	/* An answer arrived but was unusable (body over the cap): the server did act. */
	HTTP_OUTCOME_BAD_ANSWER,
};
const char *http_outcome_str(enum http_outcome o);

struct http_header {
	char *name;
	char *value;
};

/* What a callback receives; valid only during the callback. */
struct http_response {
	enum http_outcome outcome;
	long status;       /* HTTP status code, 0 when none arrived */
	const char *error; /* why, when outcome is not ANSWER; else NULL */
	const char *body;  /* NUL-terminated, "" when none */
	size_t body_len;
	const struct http_header *headers; /* of the final answer */
	int nheaders;
	int64_t elapsed_usec;   /* from http_submit() to completion */
	bool reused_connection; /* sent on a connection kept from an earlier request */
	bool resent;            /* sent twice (allowed resend): the first may have been applied */
};

/* Value of the first header named name (case-insensitive), or NULL. */
const char *http_response_header(const struct http_response *resp, const char *name);

typedef void (*http_done_cb)(void *arg, const struct http_response *resp);

#define HTTP_DEFAULT_TIMEOUT_USEC (10 * INT64_C(1000000))
#define HTTP_DEFAULT_MAX_BODY     (8u << 20)
#define HTTP_MAX_HEADERS          64

/*
 * A new request for url (http or https), or NULL when out of memory. Defaults: timeout 10 s
 * (counted from submission: queueing and DNS included), body cap 8 MiB, TLS verification with
 * the system's CA store. The caller owns it until http_submit().
 */
struct http_request *http_request_new(enum http_method method, const char *url);
void http_request_free(struct http_request *req);
/* Adds "name: value" (both copied; no CR/LF allowed). */
bool http_request_add_header(struct http_request *req, const char *name, const char *value)
        __attribute__((warn_unused_result));
/* Copies the body. */
bool http_request_set_body(struct http_request *req, const char *body, size_t len)
        __attribute__((warn_unused_result));
void http_request_set_timeout(struct http_request *req, int64_t timeout_usec);
void http_request_set_max_body(struct http_request *req, size_t max_body);
/*
 * Lets curl send the request again on a fresh connection when the reused one died before any
 * answer (GET, or a request carrying an idempotency key). Without it such a request ends as
 * HTTP_OUTCOME_UNKNOWN instead: the server may have applied it before the connection died.
 */
void http_request_allow_resend(struct http_request *req);
/* CA bundle to verify the server with, instead of the system's (copied; "" = system). */
bool http_request_set_ca_file(struct http_request *req, const char *path)
        __attribute__((warn_unused_result));

/*
 * Creates the engine on base (borrowed). dns (borrowed) resolves host names; with NULL only
 * numeric hosts work. NULL after logging on failure.
 */
struct http_engine *http_engine_create(struct event_base *base, struct dns *dns);
/* The loop the engine runs on (for callers' own timers). */
struct event_base *http_engine_base(const struct http_engine *eng);
/* Drops every request of every lane without calling callbacks, then frees the lanes too. */
void http_engine_free(struct http_engine *eng);

/* A lane of at most max_in_flight (>= 1) concurrent requests; name is for logs. */
struct http_lane *http_lane_create(struct http_engine *eng, const char *name, int max_in_flight);
/* Drops the lane's requests without callbacks and frees it. */
void http_lane_free(struct http_lane *lane);
int http_lane_in_flight(const struct http_lane *lane);
int http_lane_queued(const struct http_lane *lane);

/*
 * Submits req on lane; the engine owns req from here on, whatever the result. cb(arg, resp) is
 * called later from the loop, exactly once, unless http_cancel(req) comes first; req is freed
 * after cb returns. False (req freed, cb never called) only for a malformed URL or out of memory.
 * cb may submit and cancel other requests but must not free the lane or the engine.
 */
bool http_submit(struct http_engine *eng, struct http_lane *lane, struct http_request *req,
                 http_done_cb cb, void *arg) __attribute__((warn_unused_result));

/* Drops a submitted request whose callback has not started; it is freed; cb is never called. */
void http_cancel(struct http_request *req);

#endif
