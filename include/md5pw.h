/*
 * md5pw: PostgreSQL's md5 password scheme.
 *
 * A stored md5 secret is "md5" followed by 32 lowercase hex digits of md5(password || user).
 * During AuthenticationMD5Password the client answers with "md5" + hex(md5(secret_hex || salt)),
 * where secret_hex is the 32 digits without the prefix. Results are NUL-terminated strings of
 * MD5PW_LEN characters in a buffer of MD5PW_SIZE bytes.
 *
 * The digest comes from OpenSSL's EVP interface, which can refuse MD5 (a FIPS provider), so the
 * functions that hash can fail.
 */
#ifndef SB_MD5PW_H
#define SB_MD5PW_H

#include <stdbool.h>
#include <stdint.h>

#define MD5PW_LEN  35
#define MD5PW_SIZE 36

/* True when s has the shape of a stored md5 secret ("md5" + 32 hex digits, nothing more). */
bool md5pw_is_md5(const char *s);

/* out = "md5" + hex(md5(password || user)). False (out set to "") if MD5 is unavailable. */
bool md5pw_encrypt(const char *password, const char *user, char out[MD5PW_SIZE])
        __attribute__((warn_unused_result));

/* The response a client sends for a stored md5 secret and the 4-byte salt; false on a secret
 * that is not md5-shaped or when MD5 is unavailable (out set to ""). */
bool md5pw_salted(const char *md5_stored, const uint8_t salt[4], char out[MD5PW_SIZE])
        __attribute__((warn_unused_result));

/*
 * Checks a client's md5 response. stored is what the userlist holds: an md5 secret, or a plain
 * password (hashed here with user). A SCRAM secret cannot answer md5 and never matches.
 * The comparison takes the same time wherever the first difference is.
 */
bool md5pw_check(const char *stored, const char *user, const uint8_t salt[4], const char *response)
        __attribute__((warn_unused_result));

#endif
