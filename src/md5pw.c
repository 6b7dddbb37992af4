/*
 * md5pw: PostgreSQL's md5 password hashing and the salted challenge response.
 *
 * Only EVP digests are used (MD5() itself is deprecated in OpenSSL 3). Intermediate secrets are
 * wiped from the stack before returning, since a plain password's hash is as good as the password
 * for md5 authentication.
 */
#include "md5pw.h"

#include <pthread.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "scram.h"

static void hex_encode(const unsigned char *in, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < n; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 0xf];
	}
	out[2 * n] = '\0';
}

/*
 * The MD5 implementation, fetched from the provider once: EVP_md5() makes EVP_DigestInit_ex()
 * look it up again on every call (about 4,000 instructions, twice per md5 log-in). Kept for the
 * life of the process; fetched once whichever worker's thread logs a client in first.
 */
static EVP_MD *md5_md;
static pthread_once_t md5_once = PTHREAD_ONCE_INIT;

static void md5_fetch(void)
{
	md5_md = EVP_MD_fetch(NULL, "MD5", NULL);
}

static EVP_MD *md5_impl(void)
{
	(void)pthread_once(&md5_once, md5_fetch);
	return md5_md;
}

/* out = "md5" + hex(md5(a[0..alen) || b[0..blen))). */
static bool md5_hex2(const void *a, size_t alen, const void *b, size_t blen, char out[MD5PW_SIZE])
{
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int dlen = 0;
	EVP_MD_CTX *ctx;
	bool ok = false;

	out[0] = '\0';
	if (md5_impl() == NULL)
		return false;
	ctx = EVP_MD_CTX_new();
	if (!ctx)
		return false;
	if (EVP_DigestInit_ex(ctx, md5_impl(), NULL) != 1 || EVP_DigestUpdate(ctx, a, alen) != 1 ||
	    EVP_DigestUpdate(ctx, b, blen) != 1 || EVP_DigestFinal_ex(ctx, digest, &dlen) != 1 ||
	    dlen != 16)
		goto out;
	memcpy(out, "md5", 3);
	hex_encode(digest, 16, out + 3);
	ok = true;
out:
	OPENSSL_cleanse(digest, sizeof(digest));
	EVP_MD_CTX_free(ctx);
	return ok;
}

bool md5pw_is_md5(const char *s)
{
	size_t i;

	if (strncmp(s, "md5", 3) != 0 || strlen(s) != MD5PW_LEN)
		return false;
	for (i = 3; i < MD5PW_LEN; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

bool md5pw_encrypt(const char *password, const char *user, char out[MD5PW_SIZE])
{
	return md5_hex2(password, strlen(password), user, strlen(user), out);
}

bool md5pw_salted(const char *md5_stored, const uint8_t salt[4], char out[MD5PW_SIZE])
{
	out[0] = '\0';
	if (!md5pw_is_md5(md5_stored))
		return false;
	return md5_hex2(md5_stored + 3, 32, salt, 4, out);
}

bool md5pw_check(const char *stored, const char *user, const uint8_t salt[4], const char *response)
{
	char secret[MD5PW_SIZE], want[MD5PW_SIZE];
	bool ok = false;

	if (scram_is_secret(stored))
		return false;
	if (md5pw_is_md5(stored)) {
		memcpy(secret, stored, MD5PW_SIZE);
	} else if (!md5pw_encrypt(stored, user, secret)) {
		goto out;
	}
	if (!md5pw_salted(secret, salt, want))
		goto out;
	/* Length first (public: always 35 for a valid response), then constant time. */
	if (strlen(response) != MD5PW_LEN)
		goto out;
	ok = CRYPTO_memcmp(want, response, MD5PW_LEN) == 0;
out:
	OPENSSL_cleanse(secret, sizeof(secret));
	OPENSSL_cleanse(want, sizeof(want));
	return ok;
}
