/*
 * scram: SCRAM-SHA-256 client and server exchanges (RFC 5802 with SHA-256, RFC 7677).
 *
 * Every received message is first copied into a bounded, NUL-terminated buffer and refused if it
 * holds a NUL or exceeds SCRAM_MAX_MSG; the attribute parser then only walks C strings. Message
 * order is enforced by ->state, and a failure is final for the exchange. Comparisons of proofs
 * and signatures use CRYPTO_memcmp. Password, salted password and keys are wiped with
 * OPENSSL_cleanse as soon as they are no longer needed and by scram_*_clear().
 */
#include "scram.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#define SCRAM_RAW_NONCE_LEN 18 /* random bytes in a nonce, 24 base64 characters, as libpq */
#define SCRAM_SECRET_PREFIX "SCRAM-SHA-256$"
/* AuthMessage = client-first-bare "," server-first "," client-final-without-proof */
#define SCRAM_MAX_AUTH_MSG (3 * SCRAM_MAX_MSG + 3)

const char *scram_state_str(enum scram_state s)
{
	switch (s) {
	case SCRAM_START:
		return "start";
	case SCRAM_FIRST_DONE:
		return "first done";
	case SCRAM_FINAL_DONE:
		return "final done";
	case SCRAM_OK:
		return "ok";
	case SCRAM_FAILED:
		return "failed";
	}
	return "unknown";
}

/* ---- base64 (strict: padded, no whitespace) ---- */

static const char b64_chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static bool b64_encode(const uint8_t *in, size_t n, char *out, size_t outsize)
{
	size_t i, o = 0;
	uint32_t v;

	if (n > SCRAM_MAX_MSG || 4 * ((n + 2) / 3) + 1 > outsize)
		return false;
	for (i = 0; i + 2 < n; i += 3) {
		v = ((uint32_t)in[i] << 16) | ((uint32_t)in[i + 1] << 8) | in[i + 2];
		out[o++] = b64_chars[(v >> 18) & 63];
		out[o++] = b64_chars[(v >> 12) & 63];
		out[o++] = b64_chars[(v >> 6) & 63];
		out[o++] = b64_chars[v & 63];
	}
	if (i < n) {
		v = (uint32_t)in[i] << 16;
		if (i + 1 < n)
			v |= (uint32_t)in[i + 1] << 8;
		out[o++] = b64_chars[(v >> 18) & 63];
		out[o++] = b64_chars[(v >> 12) & 63];
		out[o++] = i + 1 < n ? b64_chars[(v >> 6) & 63] : '=';
		out[o++] = '=';
	}
	out[o] = '\0';
	return true;
}

static int b64_value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

static bool b64_decode(const char *in, size_t len, uint8_t *out, size_t outsize, size_t *outlen)
{
	size_t i, o = 0, pad = 0;
	int v[4];
	int k;

	if (len == 0 || len % 4 != 0)
		return false;
	if (in[len - 1] == '=')
		pad = in[len - 2] == '=' ? 2 : 1;
	if (len / 4 * 3 - pad > outsize)
		return false;
	for (i = 0; i < len; i += 4) {
		for (k = 0; k < 4; k++) {
			if (in[i + k] == '=' && i + 4 == len && k >= 4 - (int)pad) {
				v[k] = 0;
				continue;
			}
			v[k] = b64_value(in[i + k]);
			if (v[k] < 0)
				return false;
		}
		/* Bits the padding drops must be zero: one value, one spelling. */
		if (i + 4 == len && ((pad == 2 && (v[1] & 15)) || (pad == 1 && (v[2] & 3))))
			return false;
		out[o++] = (uint8_t)((v[0] << 2) | (v[1] >> 4));
		if (i + 4 < len || pad < 2)
			out[o++] = (uint8_t)((v[1] << 4) | (v[2] >> 2));
		if (i + 4 < len || pad < 1)
			out[o++] = (uint8_t)((v[2] << 6) | v[3]);
	}
	*outlen = o;
	return true;
}

/* ---- crypto primitives ---- */

static bool hmac256(const uint8_t *key, size_t keylen, const void *data, size_t n,
                    uint8_t out[SCRAM_KEY_LEN])
{
	unsigned int olen = 0;

	if (!HMAC(EVP_sha256(), key, (int)keylen, data, n, out, &olen))
		return false;
	return olen == SCRAM_KEY_LEN;
}

static bool sha256(const uint8_t *data, size_t n, uint8_t out[SCRAM_KEY_LEN])
{
	unsigned int olen = 0;

	if (EVP_Digest(data, n, out, &olen, EVP_sha256(), NULL) != 1)
		return false;
	return olen == SCRAM_KEY_LEN;
}

/* ClientKey and ServerKey from a password (RFC 5802 section 3). */
static bool derive_keys(const char *password, size_t password_len, const uint8_t *salt,
                        size_t salt_len, uint32_t iterations, uint8_t client_key[SCRAM_KEY_LEN],
                        uint8_t server_key[SCRAM_KEY_LEN])
{
	uint8_t salted[SCRAM_KEY_LEN];
	bool ok = false;

	if (PKCS5_PBKDF2_HMAC(password, (int)password_len, salt, (int)salt_len, (int)iterations,
	                      EVP_sha256(), SCRAM_KEY_LEN, salted) != 1)
		goto out;
	if (!hmac256(salted, sizeof(salted), "Client Key", 10, client_key) ||
	    !hmac256(salted, sizeof(salted), "Server Key", 10, server_key))
		goto out;
	ok = true;
out:
	OPENSSL_cleanse(salted, sizeof(salted));
	return ok;
}

/* ---- key cache ---- */

bool scram_cache_init(struct scram_cache *cache)
{
	memset(cache, 0, sizeof(*cache));
	return RAND_bytes(cache->key, sizeof(cache->key)) == 1;
}

void scram_cache_clear(struct scram_cache *cache)
{
	OPENSSL_cleanse(cache, sizeof(*cache));
}

/*
 * The entry of (tag, salt, iterations), found or made (the least recently used one replaced);
 * tag: HMAC of the password under the cache's key. NULL when the derivation failed.
 */
static const struct scram_cache_entry *
cache_entry(struct scram_cache *cache, const uint8_t tag[SCRAM_KEY_LEN], const char *password,
            size_t len, const uint8_t *salt, size_t salt_len, uint32_t iterations)
{
	struct scram_cache_entry *e, *victim = NULL;
	uint8_t ck[SCRAM_KEY_LEN], sk[SCRAM_KEY_LEN], stored[SCRAM_KEY_LEN];
	bool ok;
	int i;

	cache->clock++;
	for (i = 0; i < SCRAM_CACHE_SLOTS; i++) {
		e = &cache->slot[i];
		if (!e->used) {
			if (victim == NULL || victim->used)
				victim = e;
			continue;
		}
		if (e->iterations == iterations && e->salt_len == salt_len &&
		    memcmp(e->salt, salt, salt_len) == 0 &&
		    CRYPTO_memcmp(e->password_tag, tag, SCRAM_KEY_LEN) == 0) {
			e->last_used = cache->clock;
			cache->hits++;
			return e;
		}
		if (victim == NULL || (victim->used && e->last_used < victim->last_used))
			victim = e;
	}
	cache->misses++;
	ok = derive_keys(password, len, salt, salt_len, iterations, ck, sk) &&
	     sha256(ck, SCRAM_KEY_LEN, stored);
	if (ok) {
		OPENSSL_cleanse(victim, sizeof(*victim));
		victim->used = true;
		victim->iterations = iterations;
		victim->last_used = cache->clock;
		victim->salt_len = salt_len;
		memcpy(victim->salt, salt, salt_len);
		memcpy(victim->password_tag, tag, SCRAM_KEY_LEN);
		memcpy(victim->client_key, ck, SCRAM_KEY_LEN);
		memcpy(victim->server_key, sk, SCRAM_KEY_LEN);
		memcpy(victim->stored_key, stored, SCRAM_KEY_LEN);
	}
	OPENSSL_cleanse(ck, sizeof(ck));
	OPENSSL_cleanse(sk, sizeof(sk));
	OPENSSL_cleanse(stored, sizeof(stored));
	return ok ? victim : NULL;
}

bool scram_cache_keys(struct scram_cache *cache, const char *password, size_t len,
                      const uint8_t *salt, size_t salt_len, uint32_t iterations,
                      uint8_t client_key[SCRAM_KEY_LEN], uint8_t server_key[SCRAM_KEY_LEN])
{
	const struct scram_cache_entry *e;
	uint8_t tag[SCRAM_KEY_LEN];

	if (cache == NULL || salt_len > SCRAM_MAX_SALT)
		return derive_keys(password, len, salt, salt_len, iterations, client_key,
		                   server_key);
	if (!hmac256(cache->key, sizeof(cache->key), password, len, tag))
		return false;
	e = cache_entry(cache, tag, password, len, salt, salt_len, iterations);
	OPENSSL_cleanse(tag, sizeof(tag));
	if (e == NULL)
		return false;
	memcpy(client_key, e->client_key, SCRAM_KEY_LEN);
	memcpy(server_key, e->server_key, SCRAM_KEY_LEN);
	return true;
}

static bool random_nonce(char *out, size_t outsize)
{
	uint8_t raw[SCRAM_RAW_NONCE_LEN];

	if (RAND_bytes(raw, sizeof(raw)) != 1)
		return false;
	return b64_encode(raw, sizeof(raw), out, outsize);
}

/* ---- message parsing ---- */

/* Copies an incoming message into buf as a C string; refuses oversize and embedded NULs. */
static bool copy_msg(const char *in, size_t len, char *buf, size_t bufsize)
{
	if (!in || len > SCRAM_MAX_MSG || len + 1 > bufsize || memchr(in, '\0', len))
		return false;
	memcpy(buf, in, len);
	buf[len] = '\0';
	return true;
}

struct scram_attr {
	char name;
	const char *val;
	size_t len;
};

/*
 * Reads "<letter>=<value>" at *p; the value runs to the next ',' or the end. Afterwards *p is
 * the next attribute, or NULL when the message ended (so a trailing comma is not mistaken for
 * the end).
 */
static bool next_attr(const char **p, struct scram_attr *a)
{
	const char *s = *p;
	const char *comma;

	if (!s || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z')) || s[1] != '=')
		return false;
	a->name = s[0];
	a->val = s + 2;
	comma = strchr(a->val, ',');
	a->len = comma ? (size_t)(comma - a->val) : strlen(a->val);
	*p = comma ? comma + 1 : NULL;
	return true;
}

/* RFC 5802 nonce characters: printable ASCII except ','. */
static bool nonce_chars_valid(const char *s, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		if (s[i] < 0x21 || s[i] > 0x7e || s[i] == ',')
			return false;
	return true;
}

static bool nonce_valid(const char *s, size_t len)
{
	return len > 0 && len <= SCRAM_MAX_NONCE && nonce_chars_valid(s, len);
}

static bool parse_uint(const char *s, size_t len, uint32_t min, uint32_t max, uint32_t *out)
{
	uint64_t v = 0;
	size_t i;

	if (len == 0 || len > 10)
		return false;
	for (i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	if (v < min || v > max)
		return false;
	*out = (uint32_t)v;
	return true;
}

/* Appends printf output at *off in buf; false if it does not fit. */
static bool append(char *buf, size_t size, size_t *off, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));

static bool append(char *buf, size_t size, size_t *off, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (*off >= size)
		return false;
	va_start(ap, fmt);
	n = vsnprintf(buf + *off, size - *off, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= size - *off)
		return false;
	*off += (size_t)n;
	return true;
}

static bool build_auth_message(char *buf, size_t size, const char *client_first_bare,
                               const char *server_first, const char *final_without_proof,
                               size_t final_len)
{
	size_t off = 0;

	if (final_len > SCRAM_MAX_MSG)
		return false;
	return append(buf, size, &off, "%s,%s,%.*s", client_first_bare, server_first,
	              (int)final_len, final_without_proof);
}

/* ---- client ---- */

static bool client_fail(struct scram_client *sc, const char *why)
{
	sc->state = SCRAM_FAILED;
	sc->error = why;
	OPENSSL_cleanse(sc->password, sizeof(sc->password));
	return false;
}

bool scram_client_init(struct scram_client *sc, const char *password)
{
	size_t n;

	memset(sc, 0, sizeof(*sc));
	sc->state = SCRAM_START;
	n = password ? strlen(password) : 0;
	if (!password || n > SCRAM_MAX_PASSWORD)
		return client_fail(sc, "no password, or a password too long for SCRAM");
	memcpy(sc->password, password, n + 1);
	sc->password_len = n;
	return true;
}

bool scram_client_init_cached(struct scram_client *sc, const char *password,
                              struct scram_cache *cache)
{
	if (!scram_client_init(sc, password))
		return false;
	sc->cache = cache;
	return true;
}

void scram_client_init_keys(struct scram_client *sc, const uint8_t client_key[SCRAM_KEY_LEN],
                            const uint8_t server_key[SCRAM_KEY_LEN])
{
	memset(sc, 0, sizeof(*sc));
	sc->state = SCRAM_START;
	sc->have_keys = true;
	memcpy(sc->client_key, client_key, SCRAM_KEY_LEN);
	memcpy(sc->server_key, server_key, SCRAM_KEY_LEN);
}

bool scram_client_test_set(struct scram_client *sc, const char *username, const char *nonce)
{
	if (strlen(username) >= sizeof(sc->username) || !nonce_valid(nonce, strlen(nonce)))
		return false;
	strcpy(sc->username, username);
	strcpy(sc->nonce, nonce);
	return true;
}

bool scram_client_first(struct scram_client *sc, char *out, size_t outsize)
{
	size_t off = 0;

	if (sc->state != SCRAM_START)
		return client_fail(sc, "SCRAM exchange out of order");
	if (!sc->nonce[0] && !random_nonce(sc->nonce, sizeof(sc->nonce)))
		return client_fail(sc, "could not generate a nonce");
	if (!append(sc->client_first_bare, sizeof(sc->client_first_bare), &off, "n=%s,r=%s",
	            sc->username, sc->nonce))
		return client_fail(sc, "client-first-message too long");
	off = 0;
	if (!append(out, outsize, &off, "n,,%s", sc->client_first_bare))
		return client_fail(sc, "output buffer too small");
	sc->state = SCRAM_FIRST_DONE;
	return true;
}

bool scram_client_final(struct scram_client *sc, const char *server_first, size_t len, char *out,
                        size_t outsize)
{
	char sf[SCRAM_MAX_MSG + 1];
	char without_proof[SCRAM_MAX_MSG + 1];
	char auth[SCRAM_MAX_AUTH_MSG + 1];
	char proof_b64[64];
	uint8_t salt[SCRAM_MAX_SALT];
	uint8_t stored_key[SCRAM_KEY_LEN], client_sig[SCRAM_KEY_LEN], proof[SCRAM_KEY_LEN];
	struct scram_attr nonce, salt_attr, iter_attr;
	const char *p;
	size_t salt_len, nonce_len, off = 0, wp_len = 0;
	uint32_t iterations;
	bool ok = false;
	int i;

	if (sc->state != SCRAM_FIRST_DONE)
		return client_fail(sc, "SCRAM exchange out of order");
	if (!copy_msg(server_first, len, sf, sizeof(sf)))
		return client_fail(sc, "malformed SCRAM server-first-message");
	p = sf;
	if (p[0] == 'm' && p[1] == '=')
		return client_fail(sc, "SCRAM mandatory extension not supported");
	if (!next_attr(&p, &nonce) || nonce.name != 'r' || !next_attr(&p, &salt_attr) ||
	    salt_attr.name != 's' || !next_attr(&p, &iter_attr) || iter_attr.name != 'i')
		return client_fail(sc, "malformed SCRAM server-first-message");
	/* Anything after i= is an extension, which we may ignore. */
	nonce_len = strlen(sc->nonce);
	if (nonce.len <= nonce_len || nonce.len > 2 * SCRAM_MAX_NONCE ||
	    memcmp(nonce.val, sc->nonce, nonce_len) != 0 ||
	    !nonce_chars_valid(nonce.val, nonce.len))
		return client_fail(sc, "SCRAM server nonce does not extend the client nonce");
	if (!b64_decode(salt_attr.val, salt_attr.len, salt, sizeof(salt), &salt_len) ||
	    salt_len == 0)
		return client_fail(sc, "invalid SCRAM salt");
	if (!parse_uint(iter_attr.val, iter_attr.len, 1, SCRAM_MAX_ITERATIONS, &iterations))
		return client_fail(sc, "invalid SCRAM iteration count");

	if (!sc->have_keys) {
		if (!scram_cache_keys(sc->cache, sc->password, sc->password_len, salt, salt_len,
		                      iterations, sc->client_key, sc->server_key))
			return client_fail(sc, "SCRAM key derivation failed");
		OPENSSL_cleanse(sc->password, sizeof(sc->password));
	}
	/* "biws" is base64("n,,"): no channel binding, no authorization identity. */
	if (!append(without_proof, sizeof(without_proof), &wp_len, "c=biws,r=%.*s", (int)nonce.len,
	            nonce.val))
		goto fail_size;
	if (!build_auth_message(auth, sizeof(auth), sc->client_first_bare, sf, without_proof,
	                        strlen(without_proof)))
		goto fail_size;
	if (!sha256(sc->client_key, SCRAM_KEY_LEN, stored_key) ||
	    !hmac256(stored_key, SCRAM_KEY_LEN, auth, strlen(auth), client_sig) ||
	    !hmac256(sc->server_key, SCRAM_KEY_LEN, auth, strlen(auth), sc->server_signature)) {
		client_fail(sc, "SCRAM computation failed");
		goto out;
	}
	for (i = 0; i < SCRAM_KEY_LEN; i++)
		proof[i] = sc->client_key[i] ^ client_sig[i];
	if (!b64_encode(proof, sizeof(proof), proof_b64, sizeof(proof_b64)) ||
	    !append(out, outsize, &off, "%s,p=%s", without_proof, proof_b64))
		goto fail_size;
	sc->state = SCRAM_FINAL_DONE;
	ok = true;
	goto out;
fail_size:
	client_fail(sc, "SCRAM message too long");
out:
	OPENSSL_cleanse(stored_key, sizeof(stored_key));
	OPENSSL_cleanse(client_sig, sizeof(client_sig));
	OPENSSL_cleanse(proof, sizeof(proof));
	return ok;
}

bool scram_client_verify(struct scram_client *sc, const char *server_final, size_t len)
{
	char sf[SCRAM_MAX_MSG + 1];
	uint8_t sig[SCRAM_MAX_MSG];
	struct scram_attr a;
	const char *p;
	size_t sig_len;

	if (sc->state != SCRAM_FINAL_DONE)
		return client_fail(sc, "SCRAM exchange out of order");
	if (!copy_msg(server_final, len, sf, sizeof(sf)))
		return client_fail(sc, "malformed SCRAM server-final-message");
	p = sf;
	if (!next_attr(&p, &a))
		return client_fail(sc, "malformed SCRAM server-final-message");
	if (a.name == 'e')
		return client_fail(sc, "server reported a SCRAM error");
	if (a.name != 'v' || !b64_decode(a.val, a.len, sig, sizeof(sig), &sig_len) ||
	    sig_len != SCRAM_KEY_LEN)
		return client_fail(sc, "malformed SCRAM server-final-message");
	if (CRYPTO_memcmp(sig, sc->server_signature, SCRAM_KEY_LEN) != 0)
		return client_fail(sc, "invalid SCRAM server signature");
	sc->state = SCRAM_OK;
	return true;
}

void scram_client_clear(struct scram_client *sc)
{
	OPENSSL_cleanse(sc, sizeof(*sc));
	sc->state = SCRAM_START;
}

/* ---- secrets ---- */

bool scram_is_secret(const char *s)
{
	return s && strncmp(s, SCRAM_SECRET_PREFIX, strlen(SCRAM_SECRET_PREFIX)) == 0;
}

bool scram_parse_secret(const char *secret, uint32_t *iterations, uint8_t salt[SCRAM_MAX_SALT],
                        size_t *salt_len, uint8_t stored_key[SCRAM_KEY_LEN],
                        uint8_t server_key[SCRAM_KEY_LEN])
{
	const char *s, *colon, *dollar, *colon2;
	size_t n;

	if (!scram_is_secret(secret) || strlen(secret) > SCRAM_MAX_MSG)
		return false;
	s = secret + strlen(SCRAM_SECRET_PREFIX);
	colon = strchr(s, ':');
	dollar = colon ? strchr(colon, '$') : NULL;
	colon2 = dollar ? strchr(dollar, ':') : NULL;
	if (!colon2)
		return false;
	if (!parse_uint(s, (size_t)(colon - s), 1, INT32_MAX, iterations))
		return false;
	if (!b64_decode(colon + 1, (size_t)(dollar - colon - 1), salt, SCRAM_MAX_SALT, salt_len) ||
	    *salt_len == 0)
		return false;
	if (!b64_decode(dollar + 1, (size_t)(colon2 - dollar - 1), stored_key, SCRAM_KEY_LEN, &n) ||
	    n != SCRAM_KEY_LEN)
		return false;
	if (!b64_decode(colon2 + 1, strlen(colon2 + 1), server_key, SCRAM_KEY_LEN, &n) ||
	    n != SCRAM_KEY_LEN)
		return false;
	return true;
}

bool scram_build_secret(const char *password, const uint8_t *salt, size_t salt_len,
                        uint32_t iterations, char *out, size_t outsize)
{
	uint8_t rsalt[SCRAM_SALT_LEN];
	uint8_t client_key[SCRAM_KEY_LEN], stored_key[SCRAM_KEY_LEN], server_key[SCRAM_KEY_LEN];
	char salt_b64[128], stored_b64[64], server_b64[64];
	bool ok = false;
	int n;

	if (!salt) {
		if (RAND_bytes(rsalt, sizeof(rsalt)) != 1)
			return false;
		salt = rsalt;
		salt_len = sizeof(rsalt);
	}
	if (salt_len == 0 || salt_len > SCRAM_MAX_SALT || iterations < 1 ||
	    iterations > INT32_MAX || strlen(password) > SCRAM_MAX_PASSWORD)
		return false;
	if (!derive_keys(password, strlen(password), salt, salt_len, iterations, client_key,
	                 server_key) ||
	    !sha256(client_key, sizeof(client_key), stored_key))
		goto out;
	if (!b64_encode(salt, salt_len, salt_b64, sizeof(salt_b64)) ||
	    !b64_encode(stored_key, SCRAM_KEY_LEN, stored_b64, sizeof(stored_b64)) ||
	    !b64_encode(server_key, SCRAM_KEY_LEN, server_b64, sizeof(server_b64)))
		goto out;
	n = snprintf(out, outsize, SCRAM_SECRET_PREFIX "%u:%s$%s:%s", iterations, salt_b64,
	             stored_b64, server_b64);
	ok = n > 0 && (size_t)n < outsize;
out:
	OPENSSL_cleanse(client_key, sizeof(client_key));
	OPENSSL_cleanse(server_key, sizeof(server_key));
	return ok;
}

bool scram_verify_password(const char *secret, const char *password)
{
	uint8_t salt[SCRAM_MAX_SALT];
	uint8_t want_stored[SCRAM_KEY_LEN], want_server[SCRAM_KEY_LEN];
	uint8_t client_key[SCRAM_KEY_LEN], server_key[SCRAM_KEY_LEN], stored[SCRAM_KEY_LEN];
	size_t salt_len;
	uint32_t iterations;
	bool ok = false;

	if (!password || strlen(password) > SCRAM_MAX_PASSWORD ||
	    !scram_parse_secret(secret, &iterations, salt, &salt_len, want_stored, want_server))
		return false;
	if (!derive_keys(password, strlen(password), salt, salt_len, iterations, client_key,
	                 server_key) ||
	    !sha256(client_key, SCRAM_KEY_LEN, stored))
		goto out;
	ok = CRYPTO_memcmp(stored, want_stored, SCRAM_KEY_LEN) == 0 &&
	     CRYPTO_memcmp(server_key, want_server, SCRAM_KEY_LEN) == 0;
out:
	OPENSSL_cleanse(client_key, sizeof(client_key));
	OPENSSL_cleanse(server_key, sizeof(server_key));
	return ok;
}

/* ---- server ---- */

static bool server_fail(struct scram_server *ss, const char *why)
{
	ss->state = SCRAM_FAILED;
	ss->error = why;
	return false;
}

bool scram_server_init(struct scram_server *ss, const char *secret_or_password)
{
	uint8_t client_key[SCRAM_KEY_LEN];
	bool ok;

	memset(ss, 0, sizeof(*ss));
	ss->state = SCRAM_START;
	if (scram_is_secret(secret_or_password)) {
		if (!scram_parse_secret(secret_or_password, &ss->iterations, ss->salt,
		                        &ss->salt_len, ss->stored_key, ss->server_key))
			return server_fail(ss, "malformed SCRAM secret");
		return true;
	}
	ss->iterations = SCRAM_DEFAULT_ITERATIONS;
	ss->salt_len = SCRAM_SALT_LEN;
	if (RAND_bytes(ss->salt, SCRAM_SALT_LEN) != 1)
		return server_fail(ss, "could not generate a salt");
	/*
	 * md5 secrets hold no SCRAM key, and an empty password is no password (PostgreSQL never
	 * accepts one): such a user can only fail, like an unknown one.
	 */
	if (!secret_or_password || secret_or_password[0] == '\0' ||
	    (strncmp(secret_or_password, "md5", 3) == 0 && strlen(secret_or_password) == 35)) {
		ss->mock = true;
		if (RAND_bytes(ss->stored_key, SCRAM_KEY_LEN) != 1 ||
		    RAND_bytes(ss->server_key, SCRAM_KEY_LEN) != 1)
			return server_fail(ss, "could not generate a mock key");
		return true;
	}
	if (strlen(secret_or_password) > SCRAM_MAX_PASSWORD)
		return server_fail(ss, "password too long for SCRAM");
	ok = derive_keys(secret_or_password, strlen(secret_or_password), ss->salt, ss->salt_len,
	                 ss->iterations, client_key, ss->server_key) &&
	     sha256(client_key, SCRAM_KEY_LEN, ss->stored_key);
	OPENSSL_cleanse(client_key, sizeof(client_key));
	if (!ok)
		return server_fail(ss, "SCRAM key derivation failed");
	return true;
}

bool scram_server_init_cached(struct scram_server *ss, const char *user, const char *password,
                              struct scram_cache *cache)
{
	const struct scram_cache_entry *e;
	uint8_t tag[SCRAM_KEY_LEN], mac[SCRAM_KEY_LEN];
	size_t n;
	bool ok;

	if (cache == NULL || password == NULL || password[0] == '\0' || scram_is_secret(password))
		return scram_server_init(ss, password);
	memset(ss, 0, sizeof(*ss));
	ss->state = SCRAM_START;
	n = strlen(password);
	if (n > SCRAM_MAX_PASSWORD)
		return server_fail(ss, "password too long for SCRAM");
	/* the salt: secret to whoever lacks the cache's key, stable while the password is */
	ok = hmac256(cache->key, sizeof(cache->key), password, n, tag) &&
	     hmac256(tag, sizeof(tag), user, strlen(user), mac);
	if (!ok) {
		OPENSSL_cleanse(tag, sizeof(tag));
		return server_fail(ss, "SCRAM computation failed");
	}
	ss->iterations = SCRAM_DEFAULT_ITERATIONS;
	ss->salt_len = SCRAM_SALT_LEN;
	memcpy(ss->salt, mac, SCRAM_SALT_LEN);
	OPENSSL_cleanse(mac, sizeof(mac));
	e = cache_entry(cache, tag, password, n, ss->salt, ss->salt_len, ss->iterations);
	OPENSSL_cleanse(tag, sizeof(tag));
	if (e == NULL)
		return server_fail(ss, "SCRAM key derivation failed");
	memcpy(ss->server_key, e->server_key, SCRAM_KEY_LEN);
	memcpy(ss->stored_key, e->stored_key, SCRAM_KEY_LEN);
	return true;
}

bool scram_server_init_mock(struct scram_server *ss, const char *user,
                            const uint8_t key[SCRAM_KEY_LEN])
{
	uint8_t mac[SCRAM_KEY_LEN];

	if (!scram_server_init(ss, NULL))
		return false;
	if (!hmac256(key, SCRAM_KEY_LEN, user, strlen(user), mac))
		return server_fail(ss, "SCRAM computation failed");
	memcpy(ss->salt, mac, SCRAM_SALT_LEN);
	ss->salt_len = SCRAM_SALT_LEN;
	OPENSSL_cleanse(mac, sizeof(mac));
	return true;
}

bool scram_server_test_set_nonce(struct scram_server *ss, const char *nonce)
{
	if (!nonce_valid(nonce, strlen(nonce)))
		return false;
	strcpy(ss->test_nonce, nonce);
	return true;
}

bool scram_server_first(struct scram_server *ss, const char *client_first, size_t len, char *out,
                        size_t outsize)
{
	char cf[SCRAM_MAX_MSG + 1];
	char snonce[SCRAM_MAX_NONCE + 1];
	char salt_b64[128];
	struct scram_attr user, nonce;
	const char *p, *bare;
	size_t off = 0;

	if (ss->state != SCRAM_START)
		return server_fail(ss, "SCRAM exchange out of order");
	if (!copy_msg(client_first, len, cf, sizeof(cf)))
		return server_fail(ss, "malformed SCRAM client-first-message");
	/* gs2 header: cbind flag, then an authorization identity we do not accept. */
	if (cf[0] == 'p')
		return server_fail(ss, "SCRAM channel binding is not supported");
	if ((cf[0] != 'n' && cf[0] != 'y') || cf[1] != ',')
		return server_fail(ss, "malformed SCRAM client-first-message");
	if (cf[2] != ',')
		return server_fail(ss, "SCRAM authorization identity is not supported");
	ss->cbind_flag = cf[0];
	bare = cf + 3;
	p = bare;
	if (p[0] == 'm' && p[1] == '=')
		return server_fail(ss, "SCRAM mandatory extension not supported");
	/* The user name is the startup packet's; the one here is ignored, as PostgreSQL does. */
	if (!next_attr(&p, &user) || user.name != 'n' || !next_attr(&p, &nonce) ||
	    nonce.name != 'r' || !nonce_valid(nonce.val, nonce.len))
		return server_fail(ss, "malformed SCRAM client-first-message");
	if (ss->test_nonce[0])
		strcpy(snonce, ss->test_nonce);
	else if (!random_nonce(snonce, sizeof(snonce)))
		return server_fail(ss, "could not generate a nonce");
	off = 0;
	if (!append(ss->nonce, sizeof(ss->nonce), &off, "%.*s%s", (int)nonce.len, nonce.val,
	            snonce))
		return server_fail(ss, "SCRAM nonce too long");
	off = 0;
	strcpy(ss->client_first_bare, bare);
	if (!b64_encode(ss->salt, ss->salt_len, salt_b64, sizeof(salt_b64)))
		return server_fail(ss, "SCRAM salt too long");
	if (!append(ss->server_first, sizeof(ss->server_first), &off, "r=%s,s=%s,i=%u", ss->nonce,
	            salt_b64, ss->iterations))
		return server_fail(ss, "SCRAM server-first-message too long");
	off = 0;
	if (!append(out, outsize, &off, "%s", ss->server_first))
		return server_fail(ss, "output buffer too small");
	ss->state = SCRAM_FIRST_DONE;
	return true;
}

bool scram_server_final(struct scram_server *ss, const char *client_final, size_t len, char *out,
                        size_t outsize)
{
	char cf[SCRAM_MAX_MSG + 1];
	char auth[SCRAM_MAX_AUTH_MSG + 1];
	char sig_b64[64];
	uint8_t cbind[SCRAM_MAX_MSG], proof[SCRAM_MAX_MSG];
	uint8_t client_sig[SCRAM_KEY_LEN], client_key[SCRAM_KEY_LEN], stored[SCRAM_KEY_LEN];
	uint8_t server_sig[SCRAM_KEY_LEN];
	struct scram_attr a;
	const char *p, *proof_start;
	size_t n, off = 0;
	bool ok = false;
	int i;

	if (ss->state != SCRAM_FIRST_DONE)
		return server_fail(ss, "SCRAM exchange out of order");
	if (!copy_msg(client_final, len, cf, sizeof(cf)))
		return server_fail(ss, "malformed SCRAM client-final-message");
	p = cf;
	/* c= must repeat the gs2 header of the first message: flag and two commas. */
	if (!next_attr(&p, &a) || a.name != 'c' ||
	    !b64_decode(a.val, a.len, cbind, sizeof(cbind), &n) || n != 3 ||
	    cbind[0] != (uint8_t)ss->cbind_flag || cbind[1] != ',' || cbind[2] != ',')
		return server_fail(ss, "SCRAM channel binding data does not match");
	if (!next_attr(&p, &a) || a.name != 'r' || a.len != strlen(ss->nonce) ||
	    memcmp(a.val, ss->nonce, a.len) != 0)
		return server_fail(ss, "SCRAM nonce does not match");
	/* Extensions may come before the proof, which must be last. */
	do {
		proof_start = p;
		if (!next_attr(&p, &a))
			return server_fail(ss, "malformed SCRAM client-final-message");
	} while (a.name != 'p');
	if (p || !b64_decode(a.val, a.len, proof, sizeof(proof), &n) || n != SCRAM_KEY_LEN)
		return server_fail(ss, "malformed SCRAM client proof");
	/* without-proof ends before the comma that precedes "p=". */
	if (!build_auth_message(auth, sizeof(auth), ss->client_first_bare, ss->server_first, cf,
	                        (size_t)(proof_start - 1 - cf)))
		return server_fail(ss, "SCRAM message too long");
	if (!hmac256(ss->stored_key, SCRAM_KEY_LEN, auth, strlen(auth), client_sig) ||
	    !hmac256(ss->server_key, SCRAM_KEY_LEN, auth, strlen(auth), server_sig)) {
		server_fail(ss, "SCRAM computation failed");
		goto out;
	}
	for (i = 0; i < SCRAM_KEY_LEN; i++)
		client_key[i] = proof[i] ^ client_sig[i];
	if (!sha256(client_key, SCRAM_KEY_LEN, stored)) {
		server_fail(ss, "SCRAM computation failed");
		goto out;
	}
	if (CRYPTO_memcmp(stored, ss->stored_key, SCRAM_KEY_LEN) != 0 || ss->mock) {
		server_fail(ss, "password does not match");
		goto out;
	}
	if (!b64_encode(server_sig, SCRAM_KEY_LEN, sig_b64, sizeof(sig_b64)) ||
	    !append(out, outsize, &off, "v=%s", sig_b64)) {
		server_fail(ss, "output buffer too small");
		goto out;
	}
	memcpy(ss->client_key, client_key, SCRAM_KEY_LEN);
	ss->state = SCRAM_OK;
	ok = true;
out:
	OPENSSL_cleanse(client_key, sizeof(client_key));
	OPENSSL_cleanse(client_sig, sizeof(client_sig));
	return ok;
}

bool scram_server_keys(const struct scram_server *ss, uint8_t client_key[SCRAM_KEY_LEN],
                       uint8_t server_key[SCRAM_KEY_LEN])
{
	if (ss->state != SCRAM_OK)
		return false;
	memcpy(client_key, ss->client_key, SCRAM_KEY_LEN);
	memcpy(server_key, ss->server_key, SCRAM_KEY_LEN);
	return true;
}

void scram_server_clear(struct scram_server *ss)
{
	OPENSSL_cleanse(ss, sizeof(*ss));
	ss->state = SCRAM_START;
}
