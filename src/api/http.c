/*
 * http — libcurl's multi-socket interface driven by libevent, with our own DNS.
 *
 * Shape (curl's multi-event pattern): curl tells us which sockets to watch (socket callback →
 * one event per socket, kept with curl_multi_assign) and when to wake it (timer callback → one
 * timer; a zero delay is a timer of zero, never a direct call). Every curl_multi_socket_action()
 * is followed by draining finished transfers with curl_multi_info_read().
 *
 * A request moves QUEUED → RESOLVING → RUNNING → (callback) → freed, or to DEFERRED when it
 * must fail before curl saw it (the failure is reported from a zero-delay timer, so callbacks
 * never run inside http_submit() or http_cancel()). A lane's in_flight counts RESOLVING,
 * RUNNING and DEFERRED requests that took a slot; the queue holds the rest in arrival order.
 *
 * curl never resolves: a host name is looked up by the dns module and given to curl with
 * CURLOPT_RESOLVE; numeric hosts go straight to curl. Redirects are not followed.
 */
#include "api/http.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <time.h>

#include <curl/curl.h>
#include <event2/event.h>

#include "dns.h"
#include "log.h"

#ifdef PACKAGE_VERSION
#define HTTP_USER_AGENT "syncbouncer/" PACKAGE_VERSION
#else
#define HTTP_USER_AGENT "syncbouncer"
#endif

enum http_req_state {
	HTTP_REQ_NEW,
	HTTP_REQ_QUEUED,
	HTTP_REQ_RESOLVING,
	HTTP_REQ_RUNNING,
	HTTP_REQ_DEFERRED,
	HTTP_REQ_DONE,
};

struct http_request {
	enum http_req_state state;
	enum http_method method;
	char *url;
	char *host; /* from the URL, without brackets */
	int port;
	bool numeric; /* host is an address literal */
	struct curl_slist *headers;
	bool no_expect; /* "Expect:" appended to headers */
	char *body;
	size_t body_len;
	int64_t timeout_usec;
	size_t max_body;
	char *ca_file;

	struct http_engine *eng;
	struct http_lane *lane;
	http_done_cb cb;
	void *arg;
	int64_t start_usec;
	int64_t deadline_usec;
	bool has_slot;
	TAILQ_ENTRY(http_request) link; /* lane's queue or active list */

	struct dns_request *dns_req;
	struct curl_slist *resolve;
	CURL *easy;
	char errbuf[CURL_ERROR_SIZE];
	struct event *defer_ev;
	enum http_outcome defer_outcome;
	char defer_error[160];

	char *resp_body;
	size_t resp_len;
	size_t resp_size;
	bool body_too_large;
	bool reused;
	bool allow_resend; /* the far side applies a repeated request once */
	int attempts;      /* times curl was about to send it (see http_prereq_cb) */
	struct http_header resp_headers[HTTP_MAX_HEADERS];
	int resp_nheaders;
	size_t resp_header_bytes;
};

static const char *http_req_state_str(enum http_req_state st)
{
	switch (st) {
	case HTTP_REQ_NEW:
		return "new";
	case HTTP_REQ_QUEUED:
		return "queued";
	case HTTP_REQ_RESOLVING:
		return "resolving";
	case HTTP_REQ_RUNNING:
		return "running";
	case HTTP_REQ_DEFERRED:
		return "failing";
	case HTTP_REQ_DONE:
		return "done";
	}
	return "?";
}

TAILQ_HEAD(http_req_list, http_request);

struct http_lane {
	struct http_engine *eng;
	char name[64];
	int max_in_flight;
	int in_flight;
	int queued;
	struct http_req_list queue;
	struct http_req_list active;
	TAILQ_ENTRY(http_lane) link;
};

TAILQ_HEAD(http_lane_list, http_lane);

/* What curl asked us to watch for one socket. */
struct http_sock {
	struct http_engine *eng;
	curl_socket_t fd;
	struct event *ev;
	TAILQ_ENTRY(http_sock) link;
};

TAILQ_HEAD(http_sock_list, http_sock);

struct http_engine {
	struct event_base *base;
	struct dns *dns;
	CURLM *multi;
	struct event *timer;
	struct http_lane_list lanes;
	struct http_sock_list socks;
};

static int curl_users;

static void http_drain(struct http_engine *eng);
static void http_lane_pump(struct http_lane *lane);

static int64_t http_now_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

const char *http_method_str(enum http_method m)
{
	switch (m) {
	case HTTP_GET:
		return "GET";
	case HTTP_POST:
		return "POST";
	case HTTP_PUT:
		return "PUT";
	case HTTP_PATCH:
		return "PATCH";
	case HTTP_DELETE:
		return "DELETE";
	}
	return "?";
}

bool http_method_parse(const char *text, enum http_method *out)
{
	static const enum http_method all[] = {HTTP_GET, HTTP_POST, HTTP_PUT, HTTP_PATCH,
	                                       HTTP_DELETE};
	size_t i;

	for (i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
		if (strcasecmp(text, http_method_str(all[i])) == 0) {
			*out = all[i];
			return true;
		}
	}
	return false;
}

const char *http_outcome_str(enum http_outcome o)
{
	switch (o) {
	case HTTP_OUTCOME_ANSWER:
		return "answer";
	case HTTP_OUTCOME_NOT_SENT:
		return "not sent";
	case HTTP_OUTCOME_UNKNOWN:
		return "unknown outcome";
	case HTTP_OUTCOME_BAD_ANSWER:
		return "bad answer";
	}
	return "?";
}

const char *http_response_header(const struct http_response *resp, const char *name)
{
	int i;

	for (i = 0; i < resp->nheaders; i++) {
		if (strcasecmp(resp->headers[i].name, name) == 0)
			return resp->headers[i].value;
	}
	return NULL;
}

/* ---- request object ---- */

struct http_request *http_request_new(enum http_method method, const char *url)
{
	struct http_request *req = calloc(1, sizeof(*req));

	if (req == NULL)
		return NULL;
	req->url = strdup(url);
	if (req->url == NULL) {
		free(req);
		return NULL;
	}
	req->method = method;
	req->allow_resend = method == HTTP_GET;
	req->timeout_usec = HTTP_DEFAULT_TIMEOUT_USEC;
	req->max_body = HTTP_DEFAULT_MAX_BODY;
	return req;
}

static void http_request_clear_response(struct http_request *req)
{
	int i;

	for (i = 0; i < req->resp_nheaders; i++) {
		free(req->resp_headers[i].name);
		free(req->resp_headers[i].value);
	}
	req->resp_nheaders = 0;
	req->resp_header_bytes = 0;
}

void http_request_free(struct http_request *req)
{
	if (req == NULL)
		return;
	if (req->defer_ev != NULL)
		event_free(req->defer_ev);
	if (req->easy != NULL)
		curl_easy_cleanup(req->easy);
	curl_slist_free_all(req->resolve);
	curl_slist_free_all(req->headers);
	http_request_clear_response(req);
	free(req->resp_body);
	free(req->ca_file);
	free(req->body);
	free(req->host);
	free(req->url);
	free(req);
}

static bool http_text_is_clean(const char *s)
{
	return strpbrk(s, "\r\n") == NULL;
}

bool http_request_add_header(struct http_request *req, const char *name, const char *value)
{
	struct curl_slist *n;
	char *line;
	size_t len;

	if (!http_text_is_clean(name) || !http_text_is_clean(value) || name[0] == '\0' ||
	    strchr(name, ':') != NULL)
		return false;
	len = strlen(name) + strlen(value) + 3;
	line = malloc(len);
	if (line == NULL)
		return false;
	/* "Name;" is curl's spelling of a header with an empty value. */
	if (value[0] == '\0')
		snprintf(line, len, "%s;", name);
	else
		snprintf(line, len, "%s: %s", name, value);
	n = curl_slist_append(req->headers, line);
	free(line);
	if (n == NULL)
		return false;
	req->headers = n;
	return true;
}

bool http_request_set_body(struct http_request *req, const char *body, size_t len)
{
	char *b = malloc(len + 1);

	if (b == NULL)
		return false;
	memcpy(b, body, len);
	b[len] = '\0';
	free(req->body);
	req->body = b;
	req->body_len = len;
	return true;
}

void http_request_set_timeout(struct http_request *req, int64_t timeout_usec)
{
	req->timeout_usec = timeout_usec > 0 ? timeout_usec : HTTP_DEFAULT_TIMEOUT_USEC;
}

void http_request_allow_resend(struct http_request *req)
{
	req->allow_resend = true;
}

void http_request_set_max_body(struct http_request *req, size_t max_body)
{
	req->max_body = max_body;
}

bool http_request_set_ca_file(struct http_request *req, const char *path)
{
	char *p = NULL;

	if (path != NULL && path[0] != '\0') {
		p = strdup(path);
		if (p == NULL)
			return false;
	}
	free(req->ca_file);
	req->ca_file = p;
	return true;
}

/* ---- curl callbacks ---- */

static size_t http_write_cb(char *ptr, size_t size, size_t nmemb, void *ud)
{
	struct http_request *req = ud;
	size_t n = size * nmemb, want;
	char *nb;

	if (n > req->max_body || req->resp_len > req->max_body - n) {
		req->body_too_large = true;
		return 0; /* makes curl stop with CURLE_WRITE_ERROR */
	}
	if (req->resp_len + n + 1 > req->resp_size) {
		want = req->resp_size ? req->resp_size : 4096;
		while (want < req->resp_len + n + 1)
			want *= 2;
		nb = realloc(req->resp_body, want);
		if (nb == NULL)
			return 0;
		req->resp_body = nb;
		req->resp_size = want;
	}
	memcpy(req->resp_body + req->resp_len, ptr, n);
	req->resp_len += n;
	req->resp_body[req->resp_len] = '\0';
	return n;
}

static size_t http_header_cb(char *ptr, size_t size, size_t nitems, void *ud)
{
	struct http_request *req = ud;
	size_t n = size * nitems, nlen, vstart, vend;
	struct http_header *h;
	const char *colon;

	/* A new status line (after 100 Continue or an informational answer) starts afresh. */
	if (n >= 5 && memcmp(ptr, "HTTP/", 5) == 0) {
		http_request_clear_response(req);
		return n;
	}
	colon = memchr(ptr, ':', n);
	if (colon == NULL)
		return n;
	/* Headers beyond our caps are dropped, not fatal: we only need a few of them. */
	if (req->resp_nheaders >= HTTP_MAX_HEADERS || req->resp_header_bytes + n > 65536)
		return n;
	nlen = (size_t)(colon - ptr);
	vstart = nlen + 1;
	while (vstart < n && (ptr[vstart] == ' ' || ptr[vstart] == '\t'))
		vstart++;
	vend = n;
	while (vend > vstart && isspace((unsigned char)ptr[vend - 1]))
		vend--;
	h = &req->resp_headers[req->resp_nheaders];
	h->name = strndup(ptr, nlen);
	h->value = strndup(ptr + vstart, vend - vstart);
	if (h->name == NULL || h->value == NULL) {
		free(h->name);
		free(h->value);
		h->name = h->value = NULL;
		return n;
	}
	req->resp_nheaders++;
	req->resp_header_bytes += n;
	return n;
}

/*
 * curl quietly sends a request again when the reused connection it went out on dies before
 * any answer byte. That is right when the server had closed an idle connection, and wrong when
 * the server applied the request and then died: a second insert. Since the two cannot be told
 * apart, a request that may not be repeated is not: the second attempt is aborted and the
 * outcome reported as unknown.
 */
static int http_prereq_cb(void *ud, char *conn_primary_ip, char *conn_local_ip,
                          int conn_primary_port, int conn_local_port)
{
	struct http_request *req = ud;

	if (++req->attempts > 1 && !req->allow_resend)
		return CURL_PREREQFUNC_ABORT;
	return CURL_PREREQFUNC_OK;
}

static void http_sock_event_cb(evutil_socket_t fd, short what, void *ud)
{
	struct http_engine *eng = ud;
	int action = 0, running = 0;

	if (what & EV_READ)
		action |= CURL_CSELECT_IN;
	if (what & EV_WRITE)
		action |= CURL_CSELECT_OUT;
	curl_multi_socket_action(eng->multi, fd, action, &running);
	http_drain(eng);
}

static int http_socket_cb(CURL *easy, curl_socket_t fd, int what, void *ud, void *sockp)
{
	struct http_engine *eng = ud;
	struct http_sock *s = sockp;
	short kind = EV_PERSIST;

	if (what == CURL_POLL_REMOVE) {
		if (s != NULL) {
			if (s->ev != NULL)
				event_free(s->ev);
			TAILQ_REMOVE(&eng->socks, s, link);
			free(s);
			curl_multi_assign(eng->multi, fd, NULL);
		}
		return 0;
	}
	if (s == NULL) {
		s = calloc(1, sizeof(*s));
		if (s == NULL)
			return -1;
		s->eng = eng;
		s->fd = fd;
		TAILQ_INSERT_TAIL(&eng->socks, s, link);
		curl_multi_assign(eng->multi, fd, s);
	} else if (s->ev != NULL) {
		event_free(s->ev);
		s->ev = NULL;
	}
	if (what & CURL_POLL_IN)
		kind |= EV_READ;
	if (what & CURL_POLL_OUT)
		kind |= EV_WRITE;
	s->ev = event_new(eng->base, fd, kind, http_sock_event_cb, eng);
	if (s->ev == NULL || event_add(s->ev, NULL) != 0) {
		log_error("http: cannot watch socket %d", (int)fd);
		return -1;
	}
	return 0;
}

static void http_timer_event_cb(evutil_socket_t fd, short what, void *ud)
{
	struct http_engine *eng = ud;
	int running = 0;

	curl_multi_socket_action(eng->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	http_drain(eng);
}

static int http_timer_cb(CURLM *multi, long timeout_ms, void *ud)
{
	struct http_engine *eng = ud;
	struct timeval tv;

	if (timeout_ms < 0) {
		evtimer_del(eng->timer);
		return 0;
	}
	/* Zero means "as soon as possible": a zero timer, not a call from inside curl. */
	tv.tv_sec = timeout_ms / 1000;
	tv.tv_usec = (timeout_ms % 1000) * 1000;
	return evtimer_add(eng->timer, &tv) == 0 ? 0 : -1;
}

/* ---- completion ---- */

static void http_release_slot(struct http_request *req)
{
	struct http_lane *lane = req->lane;

	if (req->has_slot) {
		TAILQ_REMOVE(&lane->active, req, link);
		lane->in_flight--;
		req->has_slot = false;
	}
}

/* Reports req's end to its owner, frees it, and lets the lane start what waits. */
static void http_finish(struct http_request *req, enum http_outcome outcome, long status,
                        const char *error)
{
	struct http_lane *lane = req->lane;
	struct http_response resp;

	http_release_slot(req);
	req->state = HTTP_REQ_DONE;
	memset(&resp, 0, sizeof(resp));
	resp.outcome = outcome;
	resp.status = status;
	resp.error = outcome == HTTP_OUTCOME_ANSWER ? NULL : error;
	resp.body = req->resp_body ? req->resp_body : "";
	resp.body_len = req->resp_len;
	resp.headers = req->resp_headers;
	resp.nheaders = req->resp_nheaders;
	resp.elapsed_usec = http_now_usec() - req->start_usec;
	resp.reused_connection = req->reused;
	resp.resent = req->attempts > 1;
	log_debug("http: %s %s: %s, status %ld, %zu bytes, %lld ms", lane->name,
	          http_method_str(req->method), http_outcome_str(outcome), status, req->resp_len,
	          (long long)(resp.elapsed_usec / 1000));
	req->cb(req->arg, &resp);
	http_request_free(req);
	http_lane_pump(lane);
}

static void http_defer_cb(evutil_socket_t fd, short what, void *ud)
{
	struct http_request *req = ud;

	http_finish(req, req->defer_outcome, 0, req->defer_error);
}

/* Fails req from the loop, later; it keeps its slot (if any) until then. */
static void http_defer_failure(struct http_request *req, enum http_outcome outcome,
                               const char *error)
{
	static const struct timeval zero = {0, 0};

	req->state = HTTP_REQ_DEFERRED;
	req->defer_outcome = outcome;
	snprintf(req->defer_error, sizeof(req->defer_error), "%s", error);
	/* defer_ev was made by http_submit(), so that failing never needs memory */
	if (evtimer_add(req->defer_ev, &zero) != 0)
		fatal("http: cannot schedule a timer");
}

static void http_transfer_done(struct http_engine *eng, CURL *easy, CURLcode rc)
{
	struct http_request *req = NULL;
	curl_off_t sent = 0;
	long status = 0, req_size = 0, nconnects = -1;
	char why[CURL_ERROR_SIZE + 64];
	enum http_outcome outcome;

	curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&req);
	curl_multi_remove_handle(eng->multi, easy);
	if (req == NULL)
		return;
	curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_getinfo(easy, CURLINFO_REQUEST_SIZE, &req_size);
	curl_easy_getinfo(easy, CURLINFO_SIZE_UPLOAD_T, &sent);
	curl_easy_getinfo(easy, CURLINFO_NUM_CONNECTS, &nconnects);
	req->reused = rc == CURLE_OK && nconnects == 0;
	snprintf(why, sizeof(why), "%s", req->errbuf[0] ? req->errbuf : curl_easy_strerror(rc));
	if (rc == CURLE_OK) {
		outcome = HTTP_OUTCOME_ANSWER;
	} else if (req->body_too_large) {
		outcome = HTTP_OUTCOME_BAD_ANSWER;
		snprintf(why, sizeof(why), "answer body larger than %zu bytes", req->max_body);
	} else if (req->attempts > 1 && !req->allow_resend) {
		outcome = HTTP_OUTCOME_UNKNOWN;
		snprintf(why, sizeof(why),
		         "connection lost after the request was sent (not resent)");
	} else if (req->attempts == 0 && req_size == 0 && sent == 0 && status == 0) {
		/*
		 * curl never got as far as sending (http_prereq_cb runs once the connection, TLS
		 * included, is up and just before the request goes): DNS, connect or TLS failed,
		 * or time ran out first. The far side cannot have acted.
		 */
		outcome = HTTP_OUTCOME_NOT_SENT;
	} else {
		outcome = HTTP_OUTCOME_UNKNOWN;
	}
	http_finish(req, outcome, status, why);
}

static void http_drain(struct http_engine *eng)
{
	CURLMsg *msg;
	int left;

	while ((msg = curl_multi_info_read(eng->multi, &left)) != NULL) {
		if (msg->msg == CURLMSG_DONE)
			http_transfer_done(eng, msg->easy_handle, msg->data.result);
	}
}

/* ---- starting ---- */

static bool http_easy_setup(struct http_request *req, int64_t left_usec)
{
	CURL *e = curl_easy_init();
	long ms = (long)(left_usec / 1000);
	bool ok = true;

	if (e == NULL)
		return false;
	req->easy = e;
	if (ms < 1)
		ms = 1;
	ok &= curl_easy_setopt(e, CURLOPT_URL, req->url) == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_PRIVATE, req) == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_ERRORBUFFER, req->errbuf) == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L) == CURLE_OK;
	/* the connectors build each path segment themselves: curl must not resolve "/../" */
	ok &= curl_easy_setopt(e, CURLOPT_PATH_AS_IS, 1L) == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS) == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, ms) == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L) == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L) == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L) == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_USERAGENT, HTTP_USER_AGENT) == CURLE_OK;
	/* Compressed answers are welcome; the body cap counts the decoded bytes. */
	ok &= curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "") == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, http_write_cb) == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_WRITEDATA, req) == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, http_header_cb) == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_HEADERDATA, req) == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_PREREQFUNCTION, http_prereq_cb) == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_PREREQDATA, req) == CURLE_OK;
	/* Old idle connections are where servers hang up on us: do not reuse those. */
	ok &= curl_easy_setopt(e, CURLOPT_MAXAGE_CONN, 30L) == CURLE_OK;
	if (req->ca_file != NULL)
		ok &= curl_easy_setopt(e, CURLOPT_CAINFO, req->ca_file) == CURLE_OK;
	if (req->resolve != NULL)
		ok &= curl_easy_setopt(e, CURLOPT_RESOLVE, req->resolve) == CURLE_OK;
	/*
	 * No "Expect: 100-continue" for big bodies: it costs a round trip (or curl's 1 s wait when
	 * a server ignores it) and buys nothing for a request we send exactly once.
	 */
	if (!req->no_expect) {
		struct curl_slist *n = curl_slist_append(req->headers, "Expect:");
		if (n == NULL)
			return false;
		req->headers = n;
		req->no_expect = true;
	}
	ok &= curl_easy_setopt(e, CURLOPT_HTTPHEADER, req->headers) == CURLE_OK;
	switch (req->method) {
	case HTTP_GET:
		ok &= curl_easy_setopt(e, CURLOPT_HTTPGET, 1L) == CURLE_OK;
		break;
	case HTTP_POST:
	case HTTP_PUT:
	case HTTP_PATCH:
	case HTTP_DELETE:
		if (req->method != HTTP_POST)
			ok &= curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST,
			                       http_method_str(req->method)) == CURLE_OK;
		if (req->body != NULL || req->method != HTTP_DELETE) {
			ok &= curl_easy_setopt(e, CURLOPT_POSTFIELDS, req->body ? req->body : "") ==
			      CURLE_OK;
			ok &= curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
			                       (curl_off_t)req->body_len) == CURLE_OK;
		}
		break;
	}
	return ok;
}

/* Hands req to curl; failures are deferred. */
static void http_start_transfer(struct http_request *req)
{
	int64_t left = req->deadline_usec - http_now_usec();

	if (left <= 0) {
		http_defer_failure(req, HTTP_OUTCOME_NOT_SENT, "timed out before sending");
		return;
	}
	if (!http_easy_setup(req, left)) {
		http_defer_failure(req, HTTP_OUTCOME_NOT_SENT, "cannot set up the transfer");
		return;
	}
	if (curl_multi_add_handle(req->eng->multi, req->easy) != CURLM_OK) {
		http_defer_failure(req, HTTP_OUTCOME_NOT_SENT, "cannot start the transfer");
		return;
	}
	req->state = HTTP_REQ_RUNNING;
}

static void http_dns_cb(void *ud, const struct dns_result *res)
{
	struct http_request *req = ud;
	char entry[1024], addr[INET6_ADDRSTRLEN];
	struct curl_slist *n;
	size_t used;
	int i;

	req->dns_req = NULL;
	if (res->status != 0 || res->naddrs <= 0) {
		char why[160];
		snprintf(why, sizeof(why), "could not resolve host \"%s\": %s", req->host,
		         res->error ? res->error : "no address");
		http_finish(req, HTTP_OUTCOME_NOT_SENT, 0, why);
		return;
	}
	used = (size_t)snprintf(entry, sizeof(entry), "%s:%d:", req->host, req->port);
	for (i = 0; i < res->naddrs && used < sizeof(entry); i++) {
		const struct sockaddr_storage *ss = &res->addrs[i];
		const void *src;
		bool v6 = ss->ss_family == AF_INET6;

		if (v6)
			src = &((const struct sockaddr_in6 *)ss)->sin6_addr;
		else if (ss->ss_family == AF_INET)
			src = &((const struct sockaddr_in *)ss)->sin_addr;
		else
			continue;
		if (inet_ntop(ss->ss_family, src, addr, sizeof(addr)) == NULL)
			continue;
		used += (size_t)snprintf(entry + used, sizeof(entry) - used, "%s%s%s%s",
		                         entry[used - 1] == ':' ? "" : ",", v6 ? "[" : "", addr,
		                         v6 ? "]" : "");
	}
	if (used >= sizeof(entry) || entry[used - 1] == ':') {
		http_finish(req, HTTP_OUTCOME_NOT_SENT, 0, "no usable address");
		return;
	}
	n = curl_slist_append(NULL, entry);
	if (n == NULL) {
		http_finish(req, HTTP_OUTCOME_NOT_SENT, 0, "out of memory");
		return;
	}
	req->resolve = n;
	http_start_transfer(req);
}

/* Takes a slot for req and starts resolving or transferring. */
static void http_start(struct http_request *req)
{
	struct http_lane *lane = req->lane;

	lane->in_flight++;
	req->has_slot = true;
	TAILQ_INSERT_TAIL(&lane->active, req, link);
	if (req->numeric) {
		http_start_transfer(req);
		return;
	}
	if (req->eng->dns == NULL) {
		http_defer_failure(req, HTTP_OUTCOME_NOT_SENT, "no resolver for host names");
		return;
	}
	req->state = HTTP_REQ_RESOLVING;
	req->dns_req = dns_lookup(req->eng->dns, req->host, req->port, http_dns_cb, req);
	if (req->dns_req == NULL)
		http_defer_failure(req, HTTP_OUTCOME_NOT_SENT, "out of memory resolving host");
}

static void http_lane_pump(struct http_lane *lane)
{
	struct http_request *req;

	while (lane->in_flight < lane->max_in_flight && (req = TAILQ_FIRST(&lane->queue))) {
		TAILQ_REMOVE(&lane->queue, req, link);
		lane->queued--;
		http_start(req);
	}
}

/* Fills req->host/port/numeric from its URL; false if the URL is not http(s) or malformed. */
static bool http_parse_url(struct http_request *req)
{
	CURLU *u = curl_url();
	char *scheme = NULL, *host = NULL, *port = NULL;
	unsigned char buf[sizeof(struct in6_addr)];
	size_t hlen;
	bool ok = false;

	if (u == NULL)
		return false;
	if (curl_url_set(u, CURLUPART_URL, req->url, 0) != CURLUE_OK)
		goto cleanup;
	if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
	    (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0))
		goto cleanup;
	if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK)
		goto cleanup;
	hlen = strlen(host);
	if (hlen >= 2 && host[0] == '[' && host[hlen - 1] == ']') {
		req->host = strndup(host + 1, hlen - 2);
		if (req->host == NULL)
			goto cleanup;
		/* A zone id ("fe80::1%25eth0") is left for curl; it is still a literal. */
		req->numeric = true;
	} else {
		req->host = strdup(host);
		if (req->host == NULL)
			goto cleanup;
		req->numeric = inet_pton(AF_INET, host, buf) == 1;
	}
	req->port = atoi(port);
	ok = req->port > 0 && req->port <= 65535;
cleanup:
	curl_free(scheme);
	curl_free(host);
	curl_free(port);
	curl_url_cleanup(u);
	return ok;
}

bool http_submit(struct http_engine *eng, struct http_lane *lane, struct http_request *req,
                 http_done_cb cb, void *arg)
{
	if (req->state != HTTP_REQ_NEW || lane->eng != eng || !http_parse_url(req)) {
		log_warning("http: %s: refusing a request with a malformed URL", lane->name);
		http_request_free(req);
		return false;
	}
	req->defer_ev = evtimer_new(eng->base, http_defer_cb, req);
	if (req->defer_ev == NULL) {
		log_error("http: %s: out of memory", lane->name);
		http_request_free(req);
		return false;
	}
	req->eng = eng;
	req->lane = lane;
	req->cb = cb;
	req->arg = arg;
	req->start_usec = http_now_usec();
	req->deadline_usec = req->start_usec + req->timeout_usec;
	req->state = HTTP_REQ_QUEUED;
	/* Arrival order is kept: a free slot does not let a newcomer pass the queue. */
	TAILQ_INSERT_TAIL(&lane->queue, req, link);
	lane->queued++;
	http_lane_pump(lane);
	return true;
}

void http_cancel(struct http_request *req)
{
	struct http_lane *lane;

	if (req == NULL)
		return;
	lane = req->lane;
	if (req->state != HTTP_REQ_NEW && req->state != HTTP_REQ_DONE)
		log_debug("http: %s: cancelling a %s request", lane->name,
		          http_req_state_str(req->state));
	switch (req->state) {
	case HTTP_REQ_QUEUED:
		TAILQ_REMOVE(&lane->queue, req, link);
		lane->queued--;
		break;
	case HTTP_REQ_RESOLVING:
		dns_cancel(req->dns_req);
		req->dns_req = NULL;
		break;
	case HTTP_REQ_RUNNING:
		curl_multi_remove_handle(req->eng->multi, req->easy);
		break;
	case HTTP_REQ_DEFERRED:
		evtimer_del(req->defer_ev);
		break;
	case HTTP_REQ_NEW:
	case HTTP_REQ_DONE:
		return; /* not ours to free: never submitted, or its callback is running */
	}
	http_release_slot(req);
	http_request_free(req);
	http_lane_pump(lane);
}

/* ---- engine and lanes ---- */

struct http_engine *http_engine_create(struct event_base *base, struct dns *dns)
{
	struct http_engine *eng;

	if (curl_users++ == 0 && curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		curl_users--;
		log_error("http: curl_global_init failed");
		return NULL;
	}
	eng = calloc(1, sizeof(*eng));
	if (eng == NULL)
		goto failed;
	eng->base = base;
	eng->dns = dns;
	TAILQ_INIT(&eng->lanes);
	TAILQ_INIT(&eng->socks);
	eng->multi = curl_multi_init();
	eng->timer = evtimer_new(base, http_timer_event_cb, eng);
	if (eng->multi == NULL || eng->timer == NULL)
		goto failed;
	curl_multi_setopt(eng->multi, CURLMOPT_SOCKETFUNCTION, http_socket_cb);
	curl_multi_setopt(eng->multi, CURLMOPT_SOCKETDATA, eng);
	curl_multi_setopt(eng->multi, CURLMOPT_TIMERFUNCTION, http_timer_cb);
	curl_multi_setopt(eng->multi, CURLMOPT_TIMERDATA, eng);
	curl_multi_setopt(eng->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
	return eng;
failed:
	log_error("http: cannot create the HTTP engine");
	if (eng != NULL) {
		if (eng->timer != NULL)
			event_free(eng->timer);
		if (eng->multi != NULL)
			curl_multi_cleanup(eng->multi);
		free(eng);
	}
	if (--curl_users == 0)
		curl_global_cleanup();
	return NULL;
}

struct event_base *http_engine_base(const struct http_engine *eng)
{
	return eng->base;
}

struct http_lane *http_lane_create(struct http_engine *eng, const char *name, int max_in_flight)
{
	struct http_lane *lane = calloc(1, sizeof(*lane));

	if (lane == NULL)
		return NULL;
	lane->eng = eng;
	snprintf(lane->name, sizeof(lane->name), "%s", name);
	lane->max_in_flight = max_in_flight > 0 ? max_in_flight : 1;
	TAILQ_INIT(&lane->queue);
	TAILQ_INIT(&lane->active);
	TAILQ_INSERT_TAIL(&eng->lanes, lane, link);
	return lane;
}

/* Frees every request of the lane without callbacks; nothing is started meanwhile. */
static void http_lane_drop_all(struct http_lane *lane)
{
	struct http_request *req;

	/* Queue first, so that cancelling active ones cannot start queued ones. */
	while ((req = TAILQ_FIRST(&lane->queue)) != NULL)
		http_cancel(req);
	while ((req = TAILQ_FIRST(&lane->active)) != NULL)
		http_cancel(req);
}

void http_lane_free(struct http_lane *lane)
{
	if (lane == NULL)
		return;
	http_lane_drop_all(lane);
	TAILQ_REMOVE(&lane->eng->lanes, lane, link);
	free(lane);
}

int http_lane_in_flight(const struct http_lane *lane)
{
	return lane->in_flight;
}

int http_lane_queued(const struct http_lane *lane)
{
	return lane->queued;
}

void http_engine_free(struct http_engine *eng)
{
	struct http_lane *lane;
	struct http_sock *s;

	if (eng == NULL)
		return;
	while ((lane = TAILQ_FIRST(&eng->lanes)) != NULL)
		http_lane_free(lane);
	/* Closes cached connections; curl may or may not say goodbye to each socket first. */
	curl_multi_cleanup(eng->multi);
	while ((s = TAILQ_FIRST(&eng->socks)) != NULL) {
		TAILQ_REMOVE(&eng->socks, s, link);
		if (s->ev != NULL)
			event_free(s->ev);
		free(s);
	}
	event_free(eng->timer);
	free(eng);
	if (--curl_users == 0)
		curl_global_cleanup();
}
