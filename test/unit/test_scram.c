/*
 * Unit tests for md5pw and scram: md5 secrets as PostgreSQL 15 stores them, the RFC 7677 test
 * vector on both sides, a secret produced by PostgreSQL 15, client <-> server round trips,
 * wrong passwords, and hostile or malformed messages at each step.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "md5pw.h"
#include "scram.h"

/* CREATE ROLE app PASSWORD 'secret' with password_encryption = md5, from pg_authid. */
#define PG_MD5_APP_SECRET "md56a422f785c9e20873908ce25d1736ae2"
/* CREATE ROLE sapp PASSWORD 'pencil' with scram-sha-256, from pg_authid (PostgreSQL 15). */
#define PG_SCRAM_PENCIL                                                                             \
	"SCRAM-SHA-256$4096:mHkhBLWuRpo0QOX3Lb4DdQ==$hFImt9QoGIeRiM0P9WdUrSBlRr61Kqn7jEasYhES/VM=:" \
	"uJxx0WtvUC0L8ztDjDdNA6xSGIYy4mWUqddFbN1IX44="

/* RFC 7677 section 3 (user "user", password "pencil"). */
#define RFC_CLIENT_NONCE "rOprNGfwEbeRWgbNEkqO"
#define RFC_SERVER_NONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
#define RFC_CLIENT_FIRST "n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
#define RFC_SERVER_FIRST                                                                           \
	"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
#define RFC_CLIENT_FINAL                                                                           \
	"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"                             \
	"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
#define RFC_SERVER_FINAL "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
/* The same user's secret, derived independently (Python hashlib) from the RFC's salt. */
#define RFC_SECRET                                                                                  \
	"SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:" \
	"wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="

static const uint8_t salt1234[4] = {1, 2, 3, 4};

/* ---- md5 ---- */

static void test_md5_encrypt(void **state)
{
	char out[MD5PW_SIZE];

	(void)state;
	assert_true(md5pw_encrypt("secret", "app", out));
	assert_string_equal(out, PG_MD5_APP_SECRET);
	assert_true(md5pw_salted(PG_MD5_APP_SECRET, salt1234, out));
	/* md5(hex || salt), computed independently. */
	assert_string_equal(out, "md5911f527656472583a006e7727877b33e");
	assert_false(md5pw_salted("secret", salt1234, out));
	assert_string_equal(out, "");
}

static void test_md5_check(void **state)
{
	const char *good = "md5911f527656472583a006e7727877b33e";

	(void)state;
	assert_true(md5pw_check("secret", "app", salt1234, good));
	assert_true(md5pw_check(PG_MD5_APP_SECRET, "app", salt1234, good));
	/* The user is part of the hash: same password, other user fails. */
	assert_false(md5pw_check("secret", "bob", salt1234, good));
	assert_false(md5pw_check("secreT", "app", salt1234, good));
	assert_false(md5pw_check("secret", "app", (const uint8_t[]){1, 2, 3, 5}, good));
	assert_false(md5pw_check("secret", "app", salt1234, "md5911f527656472583a006e7727877b33"));
	assert_false(
	        md5pw_check("secret", "app", salt1234, "md5911f527656472583a006e7727877b33e0"));
	assert_false(md5pw_check("secret", "app", salt1234, ""));
	/* A client sending the stored hash itself is not authenticated. */
	assert_false(md5pw_check("secret", "app", salt1234, PG_MD5_APP_SECRET));
	assert_false(md5pw_check(PG_SCRAM_PENCIL, "app", salt1234, good));
}

static void test_md5_shape(void **state)
{
	(void)state;
	assert_true(md5pw_is_md5(PG_MD5_APP_SECRET));
	assert_false(md5pw_is_md5("md56A422F785C9E20873908CE25D1736AE2"));
	assert_false(md5pw_is_md5("md56a422f785c9e20873908ce25d1736ae"));
	assert_false(md5pw_is_md5("md56a422f785c9e20873908ce25d1736ae2a"));
	assert_false(md5pw_is_md5("md5"));
	assert_false(md5pw_is_md5("md5zz422f785c9e20873908ce25d1736ae2"));
}

/* ---- SCRAM: RFC 7677 ---- */

static void test_rfc7677_client(void **state)
{
	struct scram_client sc;
	char out[SCRAM_MAX_MSG + 1];

	(void)state;
	assert_true(scram_client_init(&sc, "pencil"));
	assert_true(scram_client_test_set(&sc, "user", RFC_CLIENT_NONCE));
	assert_true(scram_client_first(&sc, out, sizeof(out)));
	assert_string_equal(out, RFC_CLIENT_FIRST);
	assert_true(scram_client_final(&sc, RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST), out,
	                               sizeof(out)));
	assert_string_equal(out, RFC_CLIENT_FINAL);
	assert_true(scram_client_verify(&sc, RFC_SERVER_FINAL, strlen(RFC_SERVER_FINAL)));
	assert_int_equal(sc.state, SCRAM_OK);
	scram_client_clear(&sc);
}

static void test_rfc7677_server(void **state)
{
	struct scram_server ss;
	char out[SCRAM_MAX_MSG + 1];
	uint8_t ck[SCRAM_KEY_LEN], sk[SCRAM_KEY_LEN];

	(void)state;
	assert_true(scram_server_init(&ss, RFC_SECRET));
	assert_true(scram_server_test_set_nonce(&ss, RFC_SERVER_NONCE));
	assert_false(scram_server_keys(&ss, ck, sk));
	assert_true(scram_server_first(&ss, RFC_CLIENT_FIRST, strlen(RFC_CLIENT_FIRST), out,
	                               sizeof(out)));
	assert_string_equal(out, RFC_SERVER_FIRST);
	assert_true(scram_server_final(&ss, RFC_CLIENT_FINAL, strlen(RFC_CLIENT_FINAL), out,
	                               sizeof(out)));
	assert_string_equal(out, RFC_SERVER_FINAL);
	assert_int_equal(ss.state, SCRAM_OK);
	assert_true(scram_server_keys(&ss, ck, sk));
	scram_server_clear(&ss);
}

static void test_build_secret(void **state)
{
	const uint8_t salt[] = {0x5b, 0x6d, 0x99, 0x68, 0x9d, 0x12, 0x35, 0x8e,
	                        0xec, 0xa0, 0x4b, 0x14, 0x12, 0x36, 0xfa, 0x81};
	char out[SCRAM_MAX_SECRET];
	uint8_t psalt[SCRAM_MAX_SALT], stored[SCRAM_KEY_LEN], server[SCRAM_KEY_LEN];
	size_t salt_len;
	uint32_t iter;

	(void)state;
	assert_true(scram_build_secret("pencil", salt, sizeof(salt), 4096, out, sizeof(out)));
	assert_string_equal(out, RFC_SECRET);
	assert_false(scram_build_secret("pencil", salt, sizeof(salt), 4096, out, 20));
	assert_true(scram_build_secret("pencil", NULL, 0, 4096, out, sizeof(out)));
	assert_true(scram_parse_secret(out, &iter, psalt, &salt_len, stored, server));
	assert_int_equal(iter, 4096);
	assert_int_equal(salt_len, SCRAM_SALT_LEN);
	assert_string_not_equal(out, RFC_SECRET);
}

static void test_verify_password(void **state)
{
	(void)state;
	assert_true(scram_verify_password(PG_SCRAM_PENCIL, "pencil"));
	assert_true(scram_verify_password(RFC_SECRET, "pencil"));
	assert_false(scram_verify_password(PG_SCRAM_PENCIL, "pencil "));
	assert_false(scram_verify_password(PG_SCRAM_PENCIL, ""));
	assert_false(scram_verify_password(PG_SCRAM_PENCIL, NULL));
	assert_false(scram_verify_password("pencil", "pencil"));
	assert_false(scram_verify_password(PG_MD5_APP_SECRET, "secret"));
}

static void test_parse_secret(void **state)
{
	static const char *const bad[] = {
	        "SCRAM-SHA-256$",
	        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==",
	        "SCRAM-SHA-256$0:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY="
	        ":wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
	        "SCRAM-SHA-256$x:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY="
	        ":wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
	        "SCRAM-SHA-256$4096:$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY="
	        ":wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
	        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4q="
	        ":wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
	        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY="
	        ":wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=x",
	        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=",
	        "SCRAM-SHA-256$4096:W2*ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY="
	        ":wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
	        "SCRAM-SHA-1$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY="
	        ":wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
	};
	uint8_t salt[SCRAM_MAX_SALT], stored[SCRAM_KEY_LEN], server[SCRAM_KEY_LEN];
	struct scram_server ss;
	size_t salt_len, i;
	uint32_t iter;

	(void)state;
	assert_true(scram_parse_secret(PG_SCRAM_PENCIL, &iter, salt, &salt_len, stored, server));
	assert_int_equal(iter, 4096);
	assert_int_equal(salt_len, 16);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		print_message("bad secret %zu\n", i);
		assert_false(scram_parse_secret(bad[i], &iter, salt, &salt_len, stored, server));
	}
	/* A malformed SCRAM secret in the userlist is an error, not a mock exchange. */
	assert_false(scram_server_init(&ss, bad[1]));
	assert_non_null(ss.error);
}

/* ---- SCRAM: round trips ---- */

/* Runs a whole exchange; returns whether the server accepted, and checks the client agrees. */
static bool exchange(struct scram_client *sc, struct scram_server *ss)
{
	char c1[SCRAM_MAX_MSG + 1], s1[SCRAM_MAX_MSG + 1], c2[SCRAM_MAX_MSG + 1];
	char s2[SCRAM_MAX_MSG + 1];

	assert_true(scram_client_first(sc, c1, sizeof(c1)));
	assert_true(scram_server_first(ss, c1, strlen(c1), s1, sizeof(s1)));
	assert_true(scram_client_final(sc, s1, strlen(s1), c2, sizeof(c2)));
	if (!scram_server_final(ss, c2, strlen(c2), s2, sizeof(s2))) {
		assert_int_equal(ss->state, SCRAM_FAILED);
		return false;
	}
	assert_true(scram_client_verify(sc, s2, strlen(s2)));
	assert_int_equal(sc->state, SCRAM_OK);
	return true;
}

struct round_trip_case {
	const char *name;
	const char *server_secret; /* NULL: unknown user */
	const char *client_password;
	bool ok;
};

static const struct round_trip_case round_trips[] = {
        {"PostgreSQL secret, right password", PG_SCRAM_PENCIL, "pencil", true},
        {"PostgreSQL secret, wrong password", PG_SCRAM_PENCIL, "pencil2", false},
        {"PostgreSQL secret, empty password", PG_SCRAM_PENCIL, "", false},
        {"plain password, right", "s3cr3t-with,comma=and=equals", "s3cr3t-with,comma=and=equals",
         true},
        {"plain password, wrong", "s3cr3t", "S3cr3t", false},
        {"unknown user", NULL, "pencil", false},
        {"empty stored password, empty password", "", "", false},
        {"md5 secret cannot do SCRAM", PG_MD5_APP_SECRET, "secret", false},
        {"md5 secret text as password", PG_MD5_APP_SECRET, PG_MD5_APP_SECRET, false},
};

static void test_round_trips(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(round_trips) / sizeof(round_trips[0]); i++) {
		const struct round_trip_case *c = &round_trips[i];
		struct scram_client sc;
		struct scram_server ss;

		print_message("case %s\n", c->name);
		assert_true(scram_server_init(&ss, c->server_secret));
		assert_true(scram_client_init(&sc, c->client_password));
		assert_int_equal(exchange(&sc, &ss), c->ok);
		if (!c->ok)
			assert_string_equal(ss.error, "password does not match");
		scram_client_clear(&sc);
		scram_server_clear(&ss);
	}
}

/* The keys a client proved can log in again where the same secret is stored. */
static void test_keys_pass_through(void **state)
{
	uint8_t ck[SCRAM_KEY_LEN], sk[SCRAM_KEY_LEN];
	struct scram_client sc;
	struct scram_server ss;

	(void)state;
	assert_true(scram_server_init(&ss, PG_SCRAM_PENCIL));
	assert_true(scram_client_init(&sc, "pencil"));
	assert_true(exchange(&sc, &ss));
	assert_true(scram_server_keys(&ss, ck, sk));

	assert_true(scram_server_init(&ss, PG_SCRAM_PENCIL));
	scram_client_init_keys(&sc, ck, sk);
	assert_true(exchange(&sc, &ss));

	/* Against a secret with another salt the same keys are refused. */
	assert_true(scram_server_init(&ss, "pencil"));
	scram_client_init_keys(&sc, ck, sk);
	assert_false(exchange(&sc, &ss));
}

static void test_password_limits(void **state)
{
	struct scram_client sc;
	struct scram_server ss;
	char *big = malloc(SCRAM_MAX_PASSWORD + 2);

	(void)state;
	assert_non_null(big);
	memset(big, 'x', SCRAM_MAX_PASSWORD);
	big[SCRAM_MAX_PASSWORD] = '\0';
	assert_true(scram_client_init(&sc, big));
	assert_true(scram_server_init(&ss, big));
	assert_true(exchange(&sc, &ss));
	big[SCRAM_MAX_PASSWORD] = 'x';
	big[SCRAM_MAX_PASSWORD + 1] = '\0';
	assert_false(scram_client_init(&sc, big));
	assert_int_equal(sc.state, SCRAM_FAILED);
	assert_false(scram_server_init(&ss, big));
	assert_false(scram_client_init(&sc, NULL));
	free(big);
}

/* ---- SCRAM: hostile server messages ---- */

struct client_bad_case {
	const char *name;
	const char *server_first;
};

static const struct client_bad_case client_bad[] = {
        {"nonce not ours", "r=XOprNGfwEbeRWgbNEkqO%hvY,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"},
        {"nonce not extended", "r=rOprNGfwEbeRWgbNEkqO,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"},
        {"nonce shorter", "r=rOprNG,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"},
        {"nonce control char", "r=rOprNGfwEbeRWgbNEkqO\x01,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"},
        {"no salt", "r=rOprNGfwEbeRWgbNEkqOabc,i=4096"},
        {"empty salt", "r=rOprNGfwEbeRWgbNEkqOabc,s=,i=4096"},
        {"salt not base64", "r=rOprNGfwEbeRWgbNEkqOabc,s=W22ZaJ0SNY7soEsUEjb6g,i=4096"},
        {"salt too long",
         "r=rOprNGfwEbeRWgbNEkqOabc,s=QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUF"
         "BQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB,i=4096"},
        {"iterations zero", "r=rOprNGfwEbeRWgbNEkqOabc,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=0"},
        {"iterations too many", "r=rOprNGfwEbeRWgbNEkqOabc,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=1000001"},
        {"iterations overflow",
         "r=rOprNGfwEbeRWgbNEkqOabc,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4294971392"},
        {"iterations negative", "r=rOprNGfwEbeRWgbNEkqOabc,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=-1"},
        {"iterations empty", "r=rOprNGfwEbeRWgbNEkqOabc,s=W22ZaJ0SNY7soEsUEjb6gQ==,i="},
        {"no iterations", "r=rOprNGfwEbeRWgbNEkqOabc,s=W22ZaJ0SNY7soEsUEjb6gQ=="},
        {"mandatory extension", "m=x,r=rOprNGfwEbeRWgbNEkqOabc,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=1"},
        {"reordered", "s=W22ZaJ0SNY7soEsUEjb6gQ==,r=rOprNGfwEbeRWgbNEkqOabc,i=4096"},
        {"error instead", "e=other-error"},
        {"empty", ""},
};

static void start_rfc_client(struct scram_client *sc)
{
	char out[SCRAM_MAX_MSG + 1];

	assert_true(scram_client_init(sc, "pencil"));
	assert_true(scram_client_test_set(sc, "user", RFC_CLIENT_NONCE));
	assert_true(scram_client_first(sc, out, sizeof(out)));
}

static void test_client_rejects(void **state)
{
	char out[SCRAM_MAX_MSG + 1];
	struct scram_client sc;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(client_bad) / sizeof(client_bad[0]); i++) {
		print_message("case %s\n", client_bad[i].name);
		start_rfc_client(&sc);
		assert_false(scram_client_final(&sc, client_bad[i].server_first,
		                                strlen(client_bad[i].server_first), out,
		                                sizeof(out)));
		assert_int_equal(sc.state, SCRAM_FAILED);
		assert_non_null(sc.error);
		/* Failure is final. */
		assert_false(scram_client_verify(&sc, RFC_SERVER_FINAL, strlen(RFC_SERVER_FINAL)));
	}

	/* Extensions after i= are allowed. */
	start_rfc_client(&sc);
	assert_true(scram_client_final(&sc, RFC_SERVER_FIRST ",x=ext", strlen(RFC_SERVER_FIRST) + 6,
	                               out, sizeof(out)));

	/* Embedded NUL and oversize input are refused before parsing. */
	start_rfc_client(&sc);
	assert_false(scram_client_final(&sc, RFC_SERVER_FIRST "\0,x=1",
	                                strlen(RFC_SERVER_FIRST) + 5, out, sizeof(out)));
	start_rfc_client(&sc);
	assert_false(scram_client_final(&sc, RFC_SERVER_FIRST, SIZE_MAX, out, sizeof(out)));

	/* Output buffer too small for the final message. */
	start_rfc_client(&sc);
	assert_false(scram_client_final(&sc, RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST), out, 20));

	/* Out of order. */
	assert_true(scram_client_init(&sc, "pencil"));
	assert_false(scram_client_final(&sc, RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST), out,
	                                sizeof(out)));
	assert_true(scram_client_init(&sc, "pencil"));
	assert_false(scram_client_verify(&sc, RFC_SERVER_FINAL, strlen(RFC_SERVER_FINAL)));
}

/* Every prefix of server-first that stops before the iteration count's first digit fails. */
static void test_client_truncations(void **state)
{
	const size_t full = strlen(RFC_SERVER_FIRST);
	const size_t needed = strlen(RFC_SERVER_FIRST) - strlen("4096");
	char out[SCRAM_MAX_MSG + 1];
	struct scram_client sc;
	size_t n;

	(void)state;
	for (n = 0; n <= full; n++) {
		char *p = malloc(n ? n : 1);

		assert_non_null(p);
		memcpy(p, RFC_SERVER_FIRST, n);
		start_rfc_client(&sc);
		assert_int_equal(scram_client_final(&sc, p, n, out, sizeof(out)), n > needed);
		free(p);
	}
}

static void test_client_verify_rejects(void **state)
{
	static const char *const bad[] = {
	        "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G8=", /* one bit off */
	        "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G5=", /* non-canonical base64 */
	        "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4",  /* unpadded */
	        "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl9",     /* short */
	        "v=",
	        "e=invalid-proof",
	        "x=1",
	        "",
	};
	char out[SCRAM_MAX_MSG + 1];
	struct scram_client sc;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		start_rfc_client(&sc);
		assert_true(scram_client_final(&sc, RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST), out,
		                               sizeof(out)));
		assert_false(scram_client_verify(&sc, bad[i], strlen(bad[i])));
		assert_int_equal(sc.state, SCRAM_FAILED);
	}
	start_rfc_client(&sc);
	assert_true(scram_client_final(&sc, RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST), out,
	                               sizeof(out)));
	assert_false(scram_client_verify(&sc, "e=invalid-proof", 15));
	assert_string_equal(sc.error, "server reported a SCRAM error");
}

/* ---- SCRAM: hostile client messages ---- */

struct server_bad_case {
	const char *name;
	const char *msg;
	const char *error;
};

static const struct server_bad_case server_first_bad[] = {
        {"channel binding", "p=tls-server-end-point,,n=,r=abc",
         "SCRAM channel binding is not supported"},
        {"authzid", "n,a=user,n=,r=abc", "SCRAM authorization identity is not supported"},
        {"bad flag", "x,,n=,r=abc", "malformed SCRAM client-first-message"},
        {"no header", "n=,r=abc", "malformed SCRAM client-first-message"},
        {"missing nonce", "n,,n=", "malformed SCRAM client-first-message"},
        {"empty nonce", "n,,n=,r=", "malformed SCRAM client-first-message"},
        {"nonce with space", "n,,n=,r=a b", "malformed SCRAM client-first-message"},
        {"nonce high byte", "n,,n=,r=a\xc3\xa9", "malformed SCRAM client-first-message"},
        {"mandatory extension", "n,,m=x,n=,r=abc", "SCRAM mandatory extension not supported"},
        {"nonce first", "n,,r=abc,n=", "malformed SCRAM client-first-message"},
        {"trailing comma", "n,,n=,", "malformed SCRAM client-first-message"},
        {"empty", "", "malformed SCRAM client-first-message"},
};

static void test_server_first_rejects(void **state)
{
	char out[SCRAM_MAX_MSG + 1];
	char big[SCRAM_MAX_MSG + 2];
	struct scram_server ss;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(server_first_bad) / sizeof(server_first_bad[0]); i++) {
		const struct server_bad_case *c = &server_first_bad[i];

		print_message("case %s\n", c->name);
		assert_true(scram_server_init(&ss, "pencil"));
		assert_false(scram_server_first(&ss, c->msg, strlen(c->msg), out, sizeof(out)));
		assert_int_equal(ss.state, SCRAM_FAILED);
		assert_string_equal(ss.error, c->error);
	}

	/* 'y': the client can bind but we did not offer it; accepted, as PostgreSQL does. */
	assert_true(scram_server_init(&ss, "pencil"));
	assert_true(scram_server_first(&ss, "y,,n=,r=abc", 11, out, sizeof(out)));

	/* A nonce of SCRAM_MAX_NONCE characters is fine, one more is not. */
	memcpy(big, "n,,n=,r=", 8);
	memset(big + 8, 'a', SCRAM_MAX_NONCE);
	assert_true(scram_server_init(&ss, "pencil"));
	assert_true(scram_server_first(&ss, big, 8 + SCRAM_MAX_NONCE, out, sizeof(out)));
	memset(big + 8, 'a', SCRAM_MAX_NONCE + 1);
	assert_true(scram_server_init(&ss, "pencil"));
	assert_false(scram_server_first(&ss, big, 8 + SCRAM_MAX_NONCE + 1, out, sizeof(out)));

	/* Oversized message, embedded NUL. */
	memset(big, 'a', sizeof(big));
	assert_true(scram_server_init(&ss, "pencil"));
	assert_false(scram_server_first(&ss, big, sizeof(big), out, sizeof(out)));
	assert_true(scram_server_init(&ss, "pencil"));
	assert_false(scram_server_first(&ss, "n,,n=,r=ab\0c", 12, out, sizeof(out)));

	/* Too small an output buffer. */
	assert_true(scram_server_init(&ss, "pencil"));
	assert_false(scram_server_first(&ss, "n,,n=,r=abc", 11, out, 10));

	/* Out of order. */
	assert_true(scram_server_init(&ss, "pencil"));
	assert_false(scram_server_final(&ss, RFC_CLIENT_FINAL, strlen(RFC_CLIENT_FINAL), out,
	                                sizeof(out)));
	assert_false(scram_server_first(&ss, "n,,n=,r=abc", 11, out, sizeof(out)));
}

static const struct server_bad_case server_final_bad[] = {
        {"cbind y for n", "c=eSws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=x",
         "SCRAM channel binding data does not match"},
        {"cbind p",
         "c=cD10bHMtdW5pcXVlLCw=,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=x",
         "SCRAM channel binding data does not match"},
        {"no cbind", "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=x",
         "SCRAM channel binding data does not match"},
        {"nonce short",
         "c=biws,r=rOprNGfwEbeRWgbNEkqO,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
         "SCRAM nonce does not match"},
        {"nonce long",
         "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0x,"
         "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
         "SCRAM nonce does not match"},
        {"no proof", "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
         "malformed SCRAM client-final-message"},
        {"proof not last",
         "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
         "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=,x=1",
         "malformed SCRAM client proof"},
        {"proof short",
         "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
         "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7A",
         "malformed SCRAM client proof"},
        {"proof tampered",
         "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
         "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVU=",
         "password does not match"},
        /* An extension changes the signed message, so the RFC proof no longer fits it. */
        {"extension before proof",
         "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,x=1,"
         "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
         "password does not match"},
        {"empty", "", "SCRAM channel binding data does not match"},
};

static void start_rfc_server(struct scram_server *ss, const char *secret)
{
	char out[SCRAM_MAX_MSG + 1];

	assert_true(scram_server_init(ss, secret));
	assert_true(scram_server_test_set_nonce(ss, RFC_SERVER_NONCE));
	assert_true(scram_server_first(ss, RFC_CLIENT_FIRST, strlen(RFC_CLIENT_FIRST), out,
	                               sizeof(out)));
}

static void test_server_final_rejects(void **state)
{
	char out[SCRAM_MAX_MSG + 1];
	struct scram_server ss;
	uint8_t ck[SCRAM_KEY_LEN], sk[SCRAM_KEY_LEN];
	size_t i, n;

	(void)state;
	for (i = 0; i < sizeof(server_final_bad) / sizeof(server_final_bad[0]); i++) {
		const struct server_bad_case *c = &server_final_bad[i];

		print_message("case %s\n", c->name);
		start_rfc_server(&ss, RFC_SECRET);
		assert_false(scram_server_final(&ss, c->msg, strlen(c->msg), out, sizeof(out)));
		assert_int_equal(ss.state, SCRAM_FAILED);
		assert_string_equal(ss.error, c->error);
		assert_false(scram_server_keys(&ss, ck, sk));
	}

	/* Every strict prefix of the RFC's client-final is refused. */
	for (n = 0; n < strlen(RFC_CLIENT_FINAL); n++) {
		char *p = malloc(n ? n : 1);

		assert_non_null(p);
		memcpy(p, RFC_CLIENT_FINAL, n);
		start_rfc_server(&ss, RFC_SECRET);
		assert_false(scram_server_final(&ss, p, n, out, sizeof(out)));
		free(p);
	}

	/* The right proof against a mock exchange still fails. */
	start_rfc_server(&ss, NULL);
	assert_false(scram_server_final(&ss, RFC_CLIENT_FINAL, strlen(RFC_CLIENT_FINAL), out,
	                                sizeof(out)));

	/* A proof cannot be replayed against a fresh server nonce. */
	assert_true(scram_server_init(&ss, RFC_SECRET));
	assert_true(scram_server_first(&ss, RFC_CLIENT_FIRST, strlen(RFC_CLIENT_FIRST), out,
	                               sizeof(out)));
	assert_false(scram_server_final(&ss, RFC_CLIENT_FINAL, strlen(RFC_CLIENT_FINAL), out,
	                                sizeof(out)));
}

/* Every prefix of client-first: those cut before the nonce fail, the rest just shorten it. */
static void test_server_first_truncations(void **state)
{
	const size_t nonce_at = strlen("n,,n=user,r=");
	char out[SCRAM_MAX_MSG + 1];
	struct scram_server ss;
	size_t n;

	(void)state;
	for (n = 0; n <= strlen(RFC_CLIENT_FIRST); n++) {
		char *p = malloc(n ? n : 1);

		assert_non_null(p);
		memcpy(p, RFC_CLIENT_FIRST, n);
		assert_true(scram_server_init(&ss, "pencil"));
		assert_int_equal(scram_server_first(&ss, p, n, out, sizeof(out)), n > nonce_at);
		free(p);
	}
}

/* A mock exchange's salt depends on the user and the key only, and it still always fails. */
static void test_mock_salt(void **state)
{
	static const uint8_t key[SCRAM_KEY_LEN] = {1, 2, 3};
	uint8_t other_key[SCRAM_KEY_LEN] = {4, 5, 6};
	struct scram_server a, b, c, d;
	char out[SCRAM_MAX_MSG + 1];

	(void)state;
	assert_true(scram_server_init_mock(&a, "nobody", key));
	assert_true(scram_server_init_mock(&b, "nobody", key));
	assert_true(scram_server_init_mock(&c, "nobody2", key));
	assert_true(scram_server_init_mock(&d, "nobody", other_key));
	assert_int_equal(a.salt_len, SCRAM_SALT_LEN);
	assert_int_equal(a.iterations, SCRAM_DEFAULT_ITERATIONS);
	assert_memory_equal(a.salt, b.salt, SCRAM_SALT_LEN);
	assert_memory_not_equal(a.salt, c.salt, SCRAM_SALT_LEN);
	assert_memory_not_equal(a.salt, d.salt, SCRAM_SALT_LEN);
	assert_true(a.mock);
	assert_true(scram_server_first(&a, RFC_CLIENT_FIRST, strlen(RFC_CLIENT_FIRST), out,
	                               sizeof(out)));
	assert_false(scram_server_final(&a, RFC_CLIENT_FINAL, strlen(RFC_CLIENT_FINAL), out,
	                                sizeof(out)));
}

/* ---- key cache ---- */

/* One look-up through the cache; checks its keys against a derivation without it. */
static void cache_lookup(struct scram_cache *cache, const char *pw, const uint8_t *salt,
                         size_t salt_len, uint32_t iterations, uint8_t ck[SCRAM_KEY_LEN])
{
	uint8_t sk[SCRAM_KEY_LEN], want_ck[SCRAM_KEY_LEN], want_sk[SCRAM_KEY_LEN];

	assert_true(scram_cache_keys(cache, pw, strlen(pw), salt, salt_len, iterations, ck, sk));
	assert_true(scram_cache_keys(NULL, pw, strlen(pw), salt, salt_len, iterations, want_ck,
	                             want_sk));
	assert_memory_equal(ck, want_ck, SCRAM_KEY_LEN);
	assert_memory_equal(sk, want_sk, SCRAM_KEY_LEN);
}

static const uint8_t salt5678[4] = {5, 6, 7, 8};

/* Each part of the key (password, salt, iterations) misses when it changes; nothing else does. */
static void test_cache_keying(void **state)
{
	static const struct {
		const char *pw;
		const uint8_t *salt;
		uint32_t iterations;
		bool hit;
	} steps[] = {
	        {"pencil", salt1234, 16, false},  {"pencil", salt1234, 16, true},
	        {"pencil2", salt1234, 16, false}, /* a changed password */
	        {"pencil", salt5678, 16, false},  /* a new salt (ALTER ROLE ... PASSWORD) */
	        {"pencil", salt1234, 17, false},  /* another iteration count */
	        {"pencil", salt1234, 16, true},   {"pencil2", salt1234, 16, true},
	        {"", salt1234, 16, false}, /* the empty password is a password like another */
	        {"", salt1234, 16, true},
	};
	struct scram_cache *cache = calloc(1, sizeof(*cache));
	uint8_t ck[SCRAM_KEY_LEN], first[SCRAM_KEY_LEN];
	uint64_t hits = 0, misses = 0;
	size_t i;

	(void)state;
	assert_non_null(cache);
	assert_true(scram_cache_init(cache));
	for (i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		print_message("step %zu: %s/%u\n", i, steps[i].pw, steps[i].iterations);
		cache_lookup(cache, steps[i].pw, steps[i].salt, 4, steps[i].iterations, ck);
		if (i == 0)
			memcpy(first, ck, SCRAM_KEY_LEN);
		else if (strcmp(steps[i].pw, "pencil") != 0 || steps[i].salt != salt1234 ||
		         steps[i].iterations != 16)
			assert_memory_not_equal(ck, first, SCRAM_KEY_LEN);
		hits += steps[i].hit;
		misses += !steps[i].hit;
		assert_int_equal(cache->hits, hits);
		assert_int_equal(cache->misses, misses);
	}
	/* no entry holds the password itself */
	for (i = 0; i < SCRAM_CACHE_SLOTS; i++)
		assert_null(memmem(&cache->slot[i], sizeof(cache->slot[i]), "pencil", 6));
	scram_cache_clear(cache);
	for (i = 0; i < SCRAM_CACHE_SLOTS; i++)
		assert_false(cache->slot[i].used);
	free(cache);
}

/* Never more than SCRAM_CACHE_SLOTS entries; the least recently used one goes. */
static void test_cache_bounded(void **state)
{
	struct scram_cache *cache = calloc(1, sizeof(*cache));
	uint8_t ck[SCRAM_KEY_LEN];
	char pw[32];
	int i, used = 0;

	(void)state;
	assert_non_null(cache);
	assert_true(scram_cache_init(cache));
	for (i = 0; i < SCRAM_CACHE_SLOTS + 10; i++) {
		snprintf(pw, sizeof(pw), "pw%d", i);
		cache_lookup(cache, pw, salt1234, 2, 1, ck);
		/* pw10 is used again and again: it must stay */
		cache_lookup(cache, "pw10", salt1234, 2, 1, ck);
	}
	for (i = 0; i < SCRAM_CACHE_SLOTS; i++)
		used += cache->slot[i].used;
	assert_int_equal(used, SCRAM_CACHE_SLOTS);
	cache->hits = cache->misses = 0;
	cache_lookup(cache, "pw10", salt1234, 2, 1, ck);
	cache_lookup(cache, "pw137", salt1234, 2, 1, ck); /* the newest */
	assert_int_equal(cache->hits, 2);
	cache_lookup(cache, "pw0", salt1234, 2, 1, ck); /* the oldest: gone */
	assert_int_equal(cache->misses, 1);
	scram_cache_clear(cache);
	free(cache);
}

/*
 * A server exchange against a plain password: the same salt at each log-in until the password
 * changes (then the old password fails and the new one works); the keys are derived once.
 */
static void test_cache_server(void **state)
{
	struct scram_cache *cache = calloc(1, sizeof(*cache));
	struct scram_server a, b, c, d;
	struct scram_client sc;

	(void)state;
	assert_non_null(cache);
	assert_true(scram_cache_init(cache));
	assert_true(scram_server_init_cached(&a, "sapp", "pencil", cache));
	assert_true(scram_server_init_cached(&b, "sapp", "pencil", cache));
	assert_true(scram_server_init_cached(&c, "sapp", "pencil2", cache));
	assert_true(scram_server_init_cached(&d, "other", "pencil", cache));
	assert_int_equal(cache->misses, 3);
	assert_int_equal(cache->hits, 1);
	assert_int_equal(a.salt_len, SCRAM_SALT_LEN);
	assert_int_equal(a.iterations, SCRAM_DEFAULT_ITERATIONS);
	assert_memory_equal(a.salt, b.salt, SCRAM_SALT_LEN);
	assert_memory_not_equal(a.salt, c.salt, SCRAM_SALT_LEN);
	assert_memory_not_equal(a.salt, d.salt, SCRAM_SALT_LEN);
	assert_false(a.mock);

	assert_true(scram_client_init(&sc, "pencil"));
	assert_true(exchange(&sc, &a));
	assert_true(scram_client_init(&sc, "pencil"));
	assert_false(exchange(&sc, &c)); /* the password changed: the old one fails */
	assert_true(scram_server_init_cached(&c, "sapp", "pencil2", cache));
	assert_true(scram_client_init(&sc, "pencil2"));
	assert_true(exchange(&sc, &c));

	/* an empty password is never accepted, as without the cache */
	assert_true(scram_server_init_cached(&a, "sapp", "", cache));
	assert_true(a.mock);
	scram_server_clear(&a);
	scram_server_clear(&b);
	scram_server_clear(&c);
	scram_server_clear(&d);
	scram_cache_clear(cache);
	free(cache);
}

/*
 * The pooler logging into PostgreSQL with a plain password: the second log-in takes the keys
 * from the cache; a password changed on the server with the same salt and iterations (a secret
 * set by ALTER ROLE ... PASSWORD 'SCRAM-SHA-256$...') is not answered with the old keys.
 */
static void test_cache_client(void **state)
{
	struct scram_cache *cache = calloc(1, sizeof(*cache));
	char secret_new[SCRAM_MAX_SECRET];
	struct scram_client sc;
	struct scram_server ss;

	(void)state;
	assert_non_null(cache);
	assert_true(scram_cache_init(cache));
	assert_true(scram_build_secret("pencil2",
	                               (const uint8_t *)"\x98\x79\x21\x04\xb5\xae"
	                                                "\x46\x9a\x34\x40\xe5\xf7\x2d\xbe\x03\x75",
	                               16, 4096, secret_new, sizeof(secret_new)));
	assert_true(strncmp(secret_new, PG_SCRAM_PENCIL, 40) == 0); /* same salt, same count */

	assert_true(scram_server_init(&ss, PG_SCRAM_PENCIL));
	assert_true(scram_client_init_cached(&sc, "pencil", cache));
	assert_true(exchange(&sc, &ss));
	assert_true(scram_server_init(&ss, PG_SCRAM_PENCIL));
	assert_true(scram_client_init_cached(&sc, "pencil", cache));
	assert_true(exchange(&sc, &ss));
	assert_int_equal(cache->misses, 1);
	assert_int_equal(cache->hits, 1);

	assert_true(scram_server_init(&ss, secret_new));
	assert_true(scram_client_init_cached(&sc, "pencil", cache));
	assert_false(exchange(&sc, &ss));
	assert_true(scram_server_init(&ss, secret_new));
	assert_true(scram_client_init_cached(&sc, "pencil2", cache));
	assert_true(exchange(&sc, &ss));
	assert_int_equal(cache->misses, 2);
	scram_client_clear(&sc);
	scram_server_clear(&ss);
	scram_cache_clear(cache);
	free(cache);
}

static void test_state_strings(void **state)
{
	(void)state;
	assert_string_equal(scram_state_str(SCRAM_OK), "ok");
	assert_string_equal(scram_state_str(SCRAM_FAILED), "failed");
	assert_string_equal(scram_state_str((enum scram_state)42), "unknown");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_md5_encrypt),
	        cmocka_unit_test(test_md5_check),
	        cmocka_unit_test(test_md5_shape),
	        cmocka_unit_test(test_rfc7677_client),
	        cmocka_unit_test(test_rfc7677_server),
	        cmocka_unit_test(test_build_secret),
	        cmocka_unit_test(test_parse_secret),
	        cmocka_unit_test(test_verify_password),
	        cmocka_unit_test(test_round_trips),
	        cmocka_unit_test(test_keys_pass_through),
	        cmocka_unit_test(test_password_limits),
	        cmocka_unit_test(test_client_rejects),
	        cmocka_unit_test(test_client_truncations),
	        cmocka_unit_test(test_client_verify_rejects),
	        cmocka_unit_test(test_server_first_rejects),
	        cmocka_unit_test(test_server_final_rejects),
	        cmocka_unit_test(test_server_first_truncations),
	        cmocka_unit_test(test_mock_salt),
	        cmocka_unit_test(test_cache_keying),
	        cmocka_unit_test(test_cache_bounded),
	        cmocka_unit_test(test_cache_server),
	        cmocka_unit_test(test_cache_client),
	        cmocka_unit_test(test_state_strings),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
