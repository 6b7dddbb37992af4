/*
 * oauth — one API's credentials (see include/api/oauth.h).
 *
 * Invariants: at most one token request is in flight (refresh_req); every waiter is on the
 * waiters list until its callback runs or it is cancelled; callbacks run from the loop only
 * (the kick timer or the token request's completion), never inside oauth_wait(). Secrets
 * (client_secret, refresh_token, tokens) never reach a log line.
 */
#include "api/oauth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <time.h>

#include <event2/event.h>

#include "api/connector.h"
#include "api/http.h"
#include "api/json.h"
#include "log.h"

#define OAUTH_MAX_TOKEN 4096
/* Refresh this long before a token's announced expiry, not after the API refused it. */
#define OAUTH_EXPIRY_MARGIN_USEC (30 * INT64_C(1000000))

struct oauth_wait {
	struct oauth *oa;
	oauth_cb cb;
	void *arg;
	uint64_t seq;
	TAILQ_ENTRY(oauth_wait) link;
};

TAILQ_HEAD(oauth_wait_list, oauth_wait);

struct oauth {
	enum oauth_mode mode;
	enum oauth_state state;
	char name[64];
	char *token;
	int64_t expires_usec; /* 0: unknown, until the API refuses it */
	char *token_url, *client_id, *client_secret, *refresh_token, *ca_file;
	char header[64]; /* auth_header=, "" for Authorization: Bearer */
	int64_t timeout_usec;
	struct http_engine *eng;
	struct http_lane *lane;
	struct http_request *refresh_req;
	struct oauth_wait_list waiters;
	uint64_t last_seq;
	struct event *kick;
	char last_error[256];
	bool last_failed_on_credentials; /* the endpoint answered 4xx to the last refresh */
};

const char *oauth_mode_str(enum oauth_mode m)
{
	switch (m) {
	case OAUTH_MODE_NONE:
		return "none";
	case OAUTH_MODE_BEARER:
		return "bearer";
	case OAUTH_MODE_REFRESH:
		return "oauth2";
	}
	return "?";
}

const char *oauth_state_str(enum oauth_state s)
{
	switch (s) {
	case OAUTH_STATE_NONE:
		return "none";
	case OAUTH_STATE_VALID:
		return "valid";
	case OAUTH_STATE_REFRESHING:
		return "refreshing";
	case OAUTH_STATE_FAILED:
		return "failed";
	}
	return "?";
}

static int64_t oauth_now_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static bool oauth_text_ok(const char *s)
{
	return s != NULL && s[0] != '\0' && strlen(s) < OAUTH_MAX_TOKEN &&
	       strpbrk(s, "\r\n") == NULL;
}

static void oauth_kick_cb(evutil_socket_t fd, short what, void *ud);

struct oauth *oauth_create(struct http_engine *eng, const char *api_name, const struct cf_kv *kv,
                           int nkv, int64_t timeout_usec, char *err, size_t errsize)
{
	const char *auth = api_kv_get(kv, nkv, "auth");
	const char *ca = api_kv_get(kv, nkv, "ca_file");
	const char *hdr = api_kv_get(kv, nkv, "auth_header");
	struct oauth *oa = calloc(1, sizeof(*oa));

	if (oa == NULL) {
		snprintf(err, errsize, "out of memory");
		return NULL;
	}
	TAILQ_INIT(&oa->waiters);
	snprintf(oa->name, sizeof(oa->name), "%s", api_name);
	oa->eng = eng;
	oa->timeout_usec = timeout_usec;
	if (auth == NULL || strcmp(auth, "none") == 0) {
		oa->mode = OAUTH_MODE_NONE;
	} else if (strcmp(auth, "bearer") == 0) {
		const char *tok = api_kv_get(kv, nkv, "token");
		oa->mode = OAUTH_MODE_BEARER;
		if (!oauth_text_ok(tok)) {
			snprintf(err, errsize, "api \"%s\": auth=bearer needs token=", api_name);
			goto failed;
		}
		if ((oa->token = strdup(tok)) == NULL)
			goto oom;
		oa->state = OAUTH_STATE_VALID;
	} else if (strcmp(auth, "oauth2") == 0) {
		static const char *const need[] = {"token_url", "client_id", "client_secret",
		                                   "refresh_token"};
		char **dst[] = {&oa->token_url, &oa->client_id, &oa->client_secret,
		                &oa->refresh_token};
		size_t i;

		oa->mode = OAUTH_MODE_REFRESH;
		for (i = 0; i < 4; i++) {
			const char *v = api_kv_get(kv, nkv, need[i]);
			if (!oauth_text_ok(v)) {
				snprintf(err, errsize,
				         "api \"%s\": auth=oauth2 needs %s=", api_name, need[i]);
				goto failed;
			}
			if ((*dst[i] = strdup(v)) == NULL)
				goto oom;
		}
		if (strncmp(oa->token_url, "http://", 7) != 0 &&
		    strncmp(oa->token_url, "https://", 8) != 0) {
			snprintf(err, errsize, "api \"%s\": token_url= must be an http(s) URL",
			         api_name);
			goto failed;
		}
		oa->lane = http_lane_create(eng, oa->name, 1);
		oa->kick = evtimer_new(http_engine_base(eng), oauth_kick_cb, oa);
		if (oa->lane == NULL || oa->kick == NULL)
			goto oom;
	} else {
		snprintf(err, errsize, "api \"%s\": auth=%.20s (expected none, bearer or oauth2)",
		         api_name, auth);
		goto failed;
	}
	if (ca != NULL && ca[0] != '\0' && (oa->ca_file = strdup(ca)) == NULL)
		goto oom;
	if (hdr != NULL) {
		size_t i, len = strlen(hdr);

		/* an HTTP token: letters, digits and -_ only, so it cannot smuggle a header */
		for (i = 0; i < len; i++) {
			char ch = hdr[i];
			if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
			      (ch >= '0' && ch <= '9') || ch == '-' || ch == '_'))
				break;
		}
		if (len == 0 || i < len || len >= sizeof(oa->header) ||
		    oa->mode == OAUTH_MODE_NONE) {
			snprintf(
			        err, errsize,
			        "api \"%s\": auth_header=%.40s is not a header name (or auth=none)",
			        api_name, hdr);
			goto failed;
		}
		snprintf(oa->header, sizeof(oa->header), "%s", hdr);
	}
	return oa;
oom:
	snprintf(err, errsize, "out of memory");
failed:
	oauth_free(oa);
	return NULL;
}

void oauth_free(struct oauth *oa)
{
	struct oauth_wait *w;

	if (oa == NULL)
		return;
	while ((w = TAILQ_FIRST(&oa->waiters)) != NULL) {
		TAILQ_REMOVE(&oa->waiters, w, link);
		free(w);
	}
	if (oa->refresh_req != NULL)
		http_cancel(oa->refresh_req);
	if (oa->lane != NULL)
		http_lane_free(oa->lane);
	if (oa->kick != NULL)
		event_free(oa->kick);
	free(oa->token);
	free(oa->token_url);
	free(oa->client_id);
	free(oa->client_secret);
	free(oa->refresh_token);
	free(oa->ca_file);
	free(oa);
}

enum oauth_mode oauth_get_mode(const struct oauth *oa)
{
	return oa->mode;
}

enum oauth_state oauth_get_state(const struct oauth *oa)
{
	return oa->state;
}

bool oauth_ready(struct oauth *oa)
{
	if (oa->mode != OAUTH_MODE_REFRESH)
		return true;
	if (oa->state != OAUTH_STATE_VALID)
		return false;
	if (oa->expires_usec != 0 && oauth_now_usec() >= oa->expires_usec) {
		oa->state = OAUTH_STATE_NONE;
		return false;
	}
	return true;
}

const char *oauth_token(struct oauth *oa)
{
	if (oa->mode == OAUTH_MODE_NONE || !oauth_ready(oa))
		return NULL;
	return oa->token;
}

bool oauth_header(struct oauth *oa, char *name, size_t namesize, char *value, size_t valuesize)
{
	const char *tok = oauth_token(oa);
	int n;

	if (tok == NULL)
		return false;
	snprintf(name, namesize, "%s", oa->header[0] ? oa->header : "Authorization");
	n = snprintf(value, valuesize, "%s%s", oa->header[0] ? "" : "Bearer ", tok);
	return n > 0 && (size_t)n < valuesize;
}

void oauth_invalidate(struct oauth *oa, const char *token)
{
	if (oa->mode != OAUTH_MODE_REFRESH || oa->state != OAUTH_STATE_VALID || token == NULL ||
	    oa->token == NULL || strcmp(token, oa->token) != 0)
		return;
	log_info("api %s: access token refused, refreshing", oa->name);
	oa->state = OAUTH_STATE_NONE;
}

/*
 * Ends the waiters present now, in arrival order. Callbacks may cancel other waiters (they stay
 * on the one list, so that is safe) or add new ones, which wait for the next round.
 */
static void oauth_notify(struct oauth *oa, bool ok, const char *error)
{
	uint64_t limit = oa->last_seq;
	struct oauth_wait *w;

	while ((w = TAILQ_FIRST(&oa->waiters)) != NULL && w->seq <= limit) {
		TAILQ_REMOVE(&oa->waiters, w, link);
		w->cb(w->arg, ok, error);
		free(w);
	}
}

static bool oauth_append_param(char *buf, size_t size, size_t *used, const char *key,
                               const char *value)
{
	int n = snprintf(buf + *used, size - *used, "%s%s=", *used ? "&" : "", key);

	if (n < 0 || (size_t)n >= size - *used)
		return false;
	*used += (size_t)n;
	return api_url_escape(value, buf, size, used);
}

static void oauth_refresh_done(void *ud, const struct http_response *resp)
{
	struct oauth *oa = ud;
	struct json_value *doc = NULL;
	const struct json_value *exp;
	const char *tok;
	char perr[128];

	oa->refresh_req = NULL;
	oa->last_failed_on_credentials =
	        resp->outcome == HTTP_OUTCOME_ANSWER && resp->status >= 400 && resp->status < 500;
	if (resp->outcome != HTTP_OUTCOME_ANSWER) {
		snprintf(oa->last_error, sizeof(oa->last_error), "token endpoint unreachable: %s",
		         resp->error ? resp->error : http_outcome_str(resp->outcome));
		goto failed;
	}
	if (!json_parse(resp->body, resp->body_len, NULL, &doc, perr, sizeof(perr))) {
		snprintf(oa->last_error, sizeof(oa->last_error),
		         "token endpoint answered HTTP %ld without JSON", resp->status);
		goto failed;
	}
	tok = json_get_string(doc, "access_token");
	if (resp->status != 200 || !oauth_text_ok(tok)) {
		const char *e = json_get_string(doc, "error");
		const char *d = json_get_string(doc, "error_description");
		snprintf(oa->last_error, sizeof(oa->last_error),
		         "token refresh failed: HTTP %ld%s%.60s%s%.120s", resp->status,
		         e ? " " : "", e ? e : "", d ? ": " : "", d ? d : "");
		goto failed;
	}
	free(oa->token);
	oa->token = strdup(tok);
	if (oa->token == NULL) {
		snprintf(oa->last_error, sizeof(oa->last_error), "out of memory");
		goto failed;
	}
	oa->expires_usec = 0;
	exp = json_get(doc, "expires_in");
	if (exp != NULL && exp->kind == JSON_NUMBER && exp->number > 0 && exp->number < 1e7) {
		int64_t life = (int64_t)(exp->number * 1e6);
		oa->expires_usec =
		        oauth_now_usec() + life -
		        (life > 2 * OAUTH_EXPIRY_MARGIN_USEC ? OAUTH_EXPIRY_MARGIN_USEC : life / 2);
	}
	oa->state = OAUTH_STATE_VALID;
	oa->last_error[0] = '\0';
	json_free(doc);
	log_info("api %s: access token obtained", oa->name);
	oauth_notify(oa, true, NULL);
	return;
failed:
	json_free(doc);
	oa->state = OAUTH_STATE_FAILED;
	log_warning("api %s: %s", oa->name, oa->last_error);
	oauth_notify(oa, false, oa->last_error);
}

bool oauth_failed_on_credentials(const struct oauth *oa)
{
	return oa->last_failed_on_credentials;
}

static void oauth_start_refresh(struct oauth *oa)
{
	char body[4 * OAUTH_MAX_TOKEN];
	size_t used = 0;
	struct http_request *req;

	if (oa->refresh_req != NULL)
		return;
	oa->last_failed_on_credentials = false;
	body[0] = '\0';
	if (!oauth_append_param(body, sizeof(body), &used, "grant_type", "refresh_token") ||
	    !oauth_append_param(body, sizeof(body), &used, "client_id", oa->client_id) ||
	    !oauth_append_param(body, sizeof(body), &used, "client_secret", oa->client_secret) ||
	    !oauth_append_param(body, sizeof(body), &used, "refresh_token", oa->refresh_token)) {
		snprintf(oa->last_error, sizeof(oa->last_error), "credentials too long");
		oa->last_failed_on_credentials = true;
		goto failed;
	}
	req = http_request_new(HTTP_POST, oa->token_url);
	if (req == NULL || !http_request_set_body(req, body, used) ||
	    !http_request_add_header(req, "Content-Type", "application/x-www-form-urlencoded") ||
	    !http_request_add_header(req, "Accept", "application/json") ||
	    !http_request_set_ca_file(req, oa->ca_file)) {
		http_request_free(req);
		snprintf(oa->last_error, sizeof(oa->last_error), "out of memory");
		goto failed;
	}
	http_request_set_timeout(req, oa->timeout_usec);
	http_request_set_max_body(req, 64 * 1024);
	oa->state = OAUTH_STATE_REFRESHING;
	if (!http_submit(oa->eng, oa->lane, req, oauth_refresh_done, oa)) {
		snprintf(oa->last_error, sizeof(oa->last_error), "token_url is not a usable URL");
		goto failed;
	}
	oa->refresh_req = req;
	log_debug("api %s: requesting an access token", oa->name);
	return;
failed:
	oa->state = OAUTH_STATE_FAILED;
	log_warning("api %s: %s", oa->name, oa->last_error);
	oauth_notify(oa, false, oa->last_error);
}

static void oauth_kick_cb(evutil_socket_t fd, short what, void *ud)
{
	struct oauth *oa = ud;

	if (oa->refresh_req != NULL)
		return; /* its completion ends the waiters */
	if (oauth_ready(oa))
		oauth_notify(oa, true, NULL);
	else
		oauth_start_refresh(oa);
}

struct oauth_wait *oauth_wait(struct oauth *oa, oauth_cb cb, void *arg)
{
	static const struct timeval zero = {0, 0};
	struct oauth_wait *w = calloc(1, sizeof(*w));

	if (w == NULL)
		return NULL;
	w->oa = oa;
	w->cb = cb;
	w->arg = arg;
	w->seq = ++oa->last_seq;
	TAILQ_INSERT_TAIL(&oa->waiters, w, link);
	if (oa->mode != OAUTH_MODE_REFRESH) {
		/* Nothing to wait for, but the callback must still come from the loop. */
		if (oa->kick == NULL)
			oa->kick = evtimer_new(http_engine_base(oa->eng), oauth_kick_cb, oa);
		if (oa->kick == NULL) {
			TAILQ_REMOVE(&oa->waiters, w, link);
			free(w);
			return NULL;
		}
	}
	/* The refresh starts from the loop too, so a burst of waiters shares one request. */
	if (oa->refresh_req == NULL)
		evtimer_add(oa->kick, &zero);
	return w;
}

void oauth_wait_cancel(struct oauth_wait *w)
{
	if (w == NULL)
		return;
	TAILQ_REMOVE(&w->oa->waiters, w, link);
	free(w);
}
