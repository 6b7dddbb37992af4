/*
 * oauth — the credentials of one API: none, a static bearer token, or an OAuth2 access token
 * obtained with the refresh-token grant.
 *
 * An OAuth2 token is fetched at first use and shared by every request of the API. Only one
 * refresh is ever in flight: requests that need a token meanwhile wait for it. A token is
 * refreshed when its known lifetime ends or when the API refuses it (oauth_invalidate()); a
 * refresh that fails ends all waiters with an error, and the next request tries again.
 */
#ifndef SB_API_OAUTH_H
#define SB_API_OAUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cf_kv;
struct http_engine;

enum oauth_mode {
	OAUTH_MODE_NONE,    /* auth=none */
	OAUTH_MODE_BEARER,  /* auth=bearer token=... */
	OAUTH_MODE_REFRESH, /* auth=oauth2 token_url= client_id= client_secret= refresh_token= */
};
const char *oauth_mode_str(enum oauth_mode m);

enum oauth_state {
	OAUTH_STATE_NONE,       /* no token yet (or it was invalidated) */
	OAUTH_STATE_VALID,      /* a token is in hand */
	OAUTH_STATE_REFRESHING, /* a refresh is in flight */
	OAUTH_STATE_FAILED,     /* the last refresh failed */
};
const char *oauth_state_str(enum oauth_state s);

struct oauth;
struct oauth_wait;

/*
 * Reads auth= and its keys from an [apis] line. Token requests go through eng on a lane of
 * their own (so they never queue behind the API's writes), with ca_file and timeout_usec.
 * NULL with a message in err when keys are missing or unknown values given.
 */
struct oauth *oauth_create(struct http_engine *eng, const char *api_name, const struct cf_kv *kv,
                           int nkv, int64_t timeout_usec, char *err, size_t errsize);
/* Drops a refresh in flight and all waiters (without calling them). */
void oauth_free(struct oauth *oa);

enum oauth_mode oauth_get_mode(const struct oauth *oa);
enum oauth_state oauth_get_state(const struct oauth *oa);

/*
 * The token to send now ("Authorization: Bearer <token>"), or NULL when one must be waited
 * for (oauth_wait) — and for OAUTH_MODE_NONE, where NULL means "send no Authorization".
 * Valid until control returns to the loop; copy it to keep it.
 */
const char *oauth_token(struct oauth *oa);
/*
 * The header the token goes in: "Authorization" with "Bearer <token>" by default, or the
 * auth_header= name with the bare token (X-API-Key style). Writes "Name: value" into buf; false
 * when there is nothing to send (mode none, or no token now) or it does not fit.
 */
bool oauth_header(struct oauth *oa, char *name, size_t namesize, char *value, size_t valuesize)
        __attribute__((warn_unused_result));
/* Whether a request can be sent right away (mode none/bearer, or a valid unexpired token). */
bool oauth_ready(struct oauth *oa);

/*
 * Waits for a token: starts a refresh unless one is in flight. cb(arg, ok, error) runs later
 * from the loop, exactly once unless oauth_wait_cancel() comes first; on ok, oauth_token()
 * gives the token. NULL when out of memory.
 */
typedef void (*oauth_cb)(void *arg, bool ok, const char *error);
/*
 * Whether the last failed refresh was the token endpoint judging the credentials (it answered
 * 4xx), rather than not answering usably (unreachable, timeout, 5xx, not JSON): an operator
 * must not rotate credentials for an outage. Meaningful in an oauth_cb with ok false.
 */
bool oauth_failed_on_credentials(const struct oauth *oa);
struct oauth_wait *oauth_wait(struct oauth *oa, oauth_cb cb, void *arg);
void oauth_wait_cancel(struct oauth_wait *w);

/*
 * The API refused token: if it is still the current one, forget it so the next oauth_wait
 * refreshes (several requests failing with the same token cause one refresh only).
 */
void oauth_invalidate(struct oauth *oa, const char *token);

#endif
