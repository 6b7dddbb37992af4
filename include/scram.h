/*
 * scram: SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL speaks it, both sides.
 *
 * The client side logs the pooler into PostgreSQL; the server side authenticates the pooler's
 * clients against a userlist entry holding either a plain password or a PostgreSQL secret
 * "SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>".
 *
 * Every message in or out is bounded by SCRAM_MAX_MSG; incoming messages are copied and checked
 * (no NUL inside, attribute order and syntax as the RFC gives them) before use. Nonces come from
 * RAND_bytes. Channel binding is not supported: only the SCRAM-SHA-256 mechanism is offered,
 * 'p=' gs2 flags are refused. Passwords are used as given, without SASLprep: identical to
 * PostgreSQL for ASCII passwords; a non-ASCII password that SASLprep would change produces a
 * different key, so such users need a SCRAM secret in the userlist rather than the plain password.
 *
 * Failure: every step returns false and leaves a static, secret-free reason in ->error, and the
 * state moves to SCRAM_FAILED (no later step succeeds). scram_*_clear() wipes key material.
 */
#ifndef SB_SCRAM_H
#define SB_SCRAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SCRAM_WARN_UNUSED __attribute__((warn_unused_result))

#define SCRAM_MECH               "SCRAM-SHA-256"
#define SCRAM_KEY_LEN            32
#define SCRAM_MAX_PASSWORD       2048 /* bytes, without the NUL */
#define SCRAM_MAX_MSG            1024 /* any SCRAM message, sent or received, without the NUL */
#define SCRAM_MAX_NONCE          256  /* characters of a nonce */
#define SCRAM_MAX_SALT           64   /* bytes of decoded salt */
#define SCRAM_SALT_LEN           16   /* bytes of salt we generate, as PostgreSQL does */
#define SCRAM_DEFAULT_ITERATIONS 4096
#define SCRAM_MAX_ITERATIONS     1000000 /* a server asking for more is refused: each costs CPU */
#define SCRAM_MAX_SECRET         256     /* length of a "SCRAM-SHA-256$..." secret we build */

enum scram_state {
	SCRAM_START,      /* nothing exchanged yet */
	SCRAM_FIRST_DONE, /* first messages exchanged */
	SCRAM_FINAL_DONE, /* client: final sent, server signature not yet checked */
	SCRAM_OK,         /* authenticated */
	SCRAM_FAILED,
};
const char *scram_state_str(enum scram_state s);

/*
 * The keys PBKDF2 derives from a plain password (ClientKey, ServerKey: the salted password
 * goes no further), kept so that a log-in with a password the pooler knows costs one HMAC
 * instead of the salt's iterations of PBKDF2, as PostgreSQL's clients keep them for a
 * connection's exchanges. An entry is keyed by (password, salt, iterations): a changed password,
 * a new salt or a new iteration count misses and derives afresh, so no RELOAD, ALTER ROLE or new
 * secret can make it answer with a stale key. The password itself is not kept: an entry holds
 * HMAC-SHA-256 of it under the cache's random key. At most SCRAM_CACHE_SLOTS entries, the least
 * recently used one replaced. Key material, never logged; scram_cache_clear() wipes it.
 */
#define SCRAM_CACHE_SLOTS 128

struct scram_cache_entry {
	bool used;
	uint32_t iterations;
	uint64_t last_used;
	size_t salt_len;
	uint8_t salt[SCRAM_MAX_SALT];
	uint8_t password_tag[SCRAM_KEY_LEN];
	uint8_t client_key[SCRAM_KEY_LEN], server_key[SCRAM_KEY_LEN];
	uint8_t stored_key[SCRAM_KEY_LEN]; /* SHA-256 of client_key */
};

struct scram_cache {
	uint8_t key[SCRAM_KEY_LEN]; /* random: password tags and salts of plain passwords */
	uint64_t clock;             /* ticks at each look-up: the least recent is replaced */
	uint64_t hits, misses;      /* look-ups answered from an entry, and derivations */
	struct scram_cache_entry slot[SCRAM_CACHE_SLOTS];
};

/* An empty cache with a fresh random key; false when no random bytes could be had. */
bool scram_cache_init(struct scram_cache *cache) SCRAM_WARN_UNUSED;

/* Wipes every entry and the key (the cache must be initialised again before use). */
void scram_cache_clear(struct scram_cache *cache);

/*
 * ClientKey and ServerKey of password (len bytes) for salt and iterations: from the entry of
 * the same (password, salt, iterations) when there is one, else derived and entered. cache may
 * be NULL (always derived). False only when the crypto library fails.
 */
bool scram_cache_keys(struct scram_cache *cache, const char *password, size_t len,
                      const uint8_t *salt, size_t salt_len, uint32_t iterations,
                      uint8_t client_key[SCRAM_KEY_LEN],
                      uint8_t server_key[SCRAM_KEY_LEN]) SCRAM_WARN_UNUSED;

struct scram_client {
	enum scram_state state;
	const char *error;
	bool have_keys;            /* started from ClientKey/ServerKey instead of a password */
	struct scram_cache *cache; /* NULL: the password's keys are derived at every exchange */
	size_t password_len;
	char password[SCRAM_MAX_PASSWORD + 1];
	uint8_t client_key[SCRAM_KEY_LEN], server_key[SCRAM_KEY_LEN];
	uint8_t server_signature[SCRAM_KEY_LEN];
	char username[64]; /* sent as n=; PostgreSQL ignores it, so it stays empty */
	char nonce[SCRAM_MAX_NONCE + 1];
	char client_first_bare[SCRAM_MAX_MSG + 1];
};

/* Starts a client exchange with a password (copied; at most SCRAM_MAX_PASSWORD bytes). */
bool scram_client_init(struct scram_client *sc, const char *password) SCRAM_WARN_UNUSED;

/*
 * The same, taking the keys of password for the server's salt and iterations from cache (not
 * owned; it must outlive the exchange) and entering them there: the server's salt and count
 * are those of its stored secret, the same at every log-in until the password changes.
 */
bool scram_client_init_cached(struct scram_client *sc, const char *password,
                              struct scram_cache *cache) SCRAM_WARN_UNUSED;

/*
 * Starts a client exchange from keys instead of a password, as recovered by a successful
 * scram_server exchange against the same secret (scram_server_keys()). PostgreSQL accepts the
 * proof only if its own secret has the same salt and iterations as the one the keys came from.
 */
void scram_client_init_keys(struct scram_client *sc, const uint8_t client_key[SCRAM_KEY_LEN],
                            const uint8_t server_key[SCRAM_KEY_LEN]);

/* Test hook: fixes the username and nonce that scram_client_first() would otherwise make. */
bool scram_client_test_set(struct scram_client *sc, const char *username,
                           const char *nonce) SCRAM_WARN_UNUSED;

/* client-first-message "n,,n=,r=<nonce>" into out (NUL-terminated; send strlen(out) bytes). */
bool scram_client_first(struct scram_client *sc, char *out, size_t outsize) SCRAM_WARN_UNUSED;

/*
 * Takes server-first-message (the AuthenticationSASLContinue data, len bytes, no NUL needed)
 * and writes client-final-message with the proof into out. Refuses a nonce that does not
 * extend ours, a bad salt, iterations outside 1..SCRAM_MAX_ITERATIONS, mandatory extensions.
 */
bool scram_client_final(struct scram_client *sc, const char *server_first, size_t len, char *out,
                        size_t outsize) SCRAM_WARN_UNUSED;

/* Checks server-final-message (AuthenticationSASLFinal data): true only for the right v=. */
bool scram_client_verify(struct scram_client *sc, const char *server_final,
                         size_t len) SCRAM_WARN_UNUSED;

void scram_client_clear(struct scram_client *sc);

struct scram_server {
	enum scram_state state;
	const char *error;
	bool mock; /* no such user or unusable secret: go through the motions, then fail */
	uint32_t iterations;
	size_t salt_len;
	uint8_t salt[SCRAM_MAX_SALT];
	uint8_t stored_key[SCRAM_KEY_LEN], server_key[SCRAM_KEY_LEN];
	uint8_t client_key[SCRAM_KEY_LEN]; /* recovered from the proof, valid in SCRAM_OK */
	char cbind_flag;                   /* 'n' or 'y' */
	char test_nonce[SCRAM_MAX_NONCE + 1];
	char nonce[2 * SCRAM_MAX_NONCE + 1];
	char client_first_bare[SCRAM_MAX_MSG + 1];
	char server_first[SCRAM_MAX_MSG + 1];
};

/*
 * Starts a server exchange. secret_or_password: a "SCRAM-SHA-256$..." secret, or a plain
 * password (a random salt and SCRAM_DEFAULT_ITERATIONS are used). NULL, "" (an empty password is
 * never accepted), or an md5 secret (which cannot verify SCRAM), starts a mock exchange that
 * runs to the end and fails there, so that a client cannot tell a missing user from a wrong
 * password. False only for a malformed SCRAM
 * secret or a failure of the crypto library.
 */
bool scram_server_init(struct scram_server *ss, const char *secret_or_password) SCRAM_WARN_UNUSED;

/*
 * A server exchange against the plain password of user, with keys from cache (not owned): the
 * salt is HMAC-SHA-256 of user and password under the cache's key, so that it stays the same
 * from one log-in to the next, as the salt of a secret PostgreSQL stores, and changes with the
 * password; SCRAM_DEFAULT_ITERATIONS. An empty password starts a mock exchange, as
 * scram_server_init(). False for a password longer than SCRAM_MAX_PASSWORD or a failure of the
 * crypto library.
 */
bool scram_server_init_cached(struct scram_server *ss, const char *user, const char *password,
                              struct scram_cache *cache) SCRAM_WARN_UNUSED;

/*
 * A mock exchange (as scram_server_init(ss, NULL)) whose salt is derived from user and key, so
 * that an unknown user shows the same salt at every attempt, as a real one does: a salt that
 * changed between attempts would tell the name is unknown. key: a process-wide random secret.
 */
bool scram_server_init_mock(struct scram_server *ss, const char *user,
                            const uint8_t key[SCRAM_KEY_LEN]) SCRAM_WARN_UNUSED;

/* Test hook: the server's part of the nonce, instead of a random one. */
bool scram_server_test_set_nonce(struct scram_server *ss, const char *nonce) SCRAM_WARN_UNUSED;

/* Takes client-first-message (SASLInitialResponse data) and writes server-first-message. */
bool scram_server_first(struct scram_server *ss, const char *client_first, size_t len, char *out,
                        size_t outsize) SCRAM_WARN_UNUSED;

/*
 * Takes client-final-message and, when the proof is right, writes server-final-message
 * "v=<signature>" into out and returns true. False: authentication failed (the caller answers
 * with 28P01 and does not send out).
 */
bool scram_server_final(struct scram_server *ss, const char *client_final, size_t len, char *out,
                        size_t outsize) SCRAM_WARN_UNUSED;

/* After a successful exchange: the client's ClientKey and the secret's ServerKey. */
bool scram_server_keys(const struct scram_server *ss, uint8_t client_key[SCRAM_KEY_LEN],
                       uint8_t server_key[SCRAM_KEY_LEN]) SCRAM_WARN_UNUSED;

void scram_server_clear(struct scram_server *ss);

/* True when s starts like a SCRAM-SHA-256 secret (it may still be malformed). */
bool scram_is_secret(const char *s);

/* Splits a secret; false when it is malformed in any way. */
bool scram_parse_secret(const char *secret, uint32_t *iterations, uint8_t salt[SCRAM_MAX_SALT],
                        size_t *salt_len, uint8_t stored_key[SCRAM_KEY_LEN],
                        uint8_t server_key[SCRAM_KEY_LEN]) SCRAM_WARN_UNUSED;

/*
 * True when password matches secret (for a cleartext password from a client against a stored
 * SCRAM secret). Costs the secret's iteration count in PBKDF2 rounds.
 */
bool scram_verify_password(const char *secret, const char *password) SCRAM_WARN_UNUSED;

/* Builds the secret PostgreSQL would store for password (salt NULL: a random one). */
bool scram_build_secret(const char *password, const uint8_t *salt, size_t salt_len,
                        uint32_t iterations, char *out, size_t outsize) SCRAM_WARN_UNUSED;

#endif
