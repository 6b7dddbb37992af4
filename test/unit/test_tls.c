/*
 * Unit tests for tls_configure(): a table of [pgbouncer] TLS settings and whether contexts can
 * be built from them, with the reason when not. The certificate and keys are made here with
 * OpenSSL (a self-signed P-256 certificate) in a temporary directory. Also: a failed configure
 * keeps the contexts in use, and which setting changes count as a change of server TLS.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bouncer.h"
#include "config.h"
#include "tls.h"

static char dir[] = "/tmp/sb-test-tls-XXXXXX";
static char cert[128], key[128], open_key[128], other_key[128], group_key[128];

static void write_key(const char *path, EVP_PKEY *pk, mode_t mode)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL), 1);
	fclose(f);
	assert_int_equal(chmod(path, mode), 0);
}

static int make_files(void **state)
{
	EVP_PKEY *pk, *other;
	X509 *x;
	FILE *f;

	(void)state;
	if (mkdtemp(dir) == NULL)
		return -1;
	snprintf(cert, sizeof(cert), "%s/server.crt", dir);
	snprintf(key, sizeof(key), "%s/server.key", dir);
	snprintf(open_key, sizeof(open_key), "%s/open.key", dir);
	snprintf(other_key, sizeof(other_key), "%s/other.key", dir);
	snprintf(group_key, sizeof(group_key), "%s/group.key", dir);
	pk = EVP_EC_gen("P-256");
	other = EVP_EC_gen("P-256");
	x = X509_new();
	if (pk == NULL || other == NULL || x == NULL)
		return -1;
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_set_pubkey(x, pk);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
	                           (const unsigned char *)"localhost", -1, -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(x));
	if (X509_sign(x, pk, EVP_sha256()) == 0)
		return -1;
	f = fopen(cert, "w");
	if (f == NULL)
		return -1;
	PEM_write_X509(f, x);
	fclose(f);
	write_key(key, pk, 0600);
	write_key(open_key, pk, 0644);
	write_key(other_key, other, 0600);
	write_key(group_key, pk, 0640);
	X509_free(x);
	EVP_PKEY_free(pk);
	EVP_PKEY_free(other);
	return 0;
}

static int remove_files(void **state)
{
	const char *files[] = {cert, key, open_key, other_key, group_key};

	(void)state;
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
		unlink(files[i]);
	rmdir(dir);
	return 0;
}

/* "@CERT@", "@KEY@", "@OPENKEY@", "@OTHERKEY@" in lines stand for the files made above. */
static struct config *load(const char *lines)
{
	char text[4096], *out = text;
	const char *p = lines;
	struct config *cfg = NULL;
	struct {
		const char *tag, *path;
	} subst[] = {{"@CERT@", cert},
	             {"@KEY@", key},
	             {"@OPENKEY@", open_key},
	             {"@GROUPKEY@", group_key},
	             {"@OTHERKEY@", other_key}};

	out += snprintf(text, sizeof(text), "[databases]\n[pgbouncer]\n");
	while (*p) {
		bool done = false;
		for (size_t i = 0; i < sizeof(subst) / sizeof(subst[0]) && !done; i++) {
			size_t n = strlen(subst[i].tag);
			if (strncmp(p, subst[i].tag, n) == 0) {
				out += snprintf(out, sizeof(text) - (size_t)(out - text), "%s",
				                subst[i].path);
				p += n;
				done = true;
			}
		}
		if (!done)
			*out++ = *p++;
	}
	*out = '\0';
	assert_true(config_load_buffer(text, strlen(text), "test.ini", &cfg));
	return cfg;
}

struct tls_case {
	const char *lines;
	const char *error; /* NULL: the contexts build */
};

static const struct tls_case cases[] = {
        /* nothing asked for but the default server_tls_sslmode = prefer */
        {"", NULL},
        {"server_tls_sslmode = disable\n", NULL},
        {"client_tls_sslmode = require\n", "needs client_tls_key_file and client_tls_cert_file"},
        {"client_tls_sslmode = require\nclient_tls_key_file = @KEY@\n",
         "needs client_tls_key_file and client_tls_cert_file"},
        {"client_tls_sslmode = require\nclient_tls_key_file = @KEY@\n"
         "client_tls_cert_file = @CERT@\n",
         NULL},
        {"client_tls_sslmode = prefer\nclient_tls_key_file = @OPENKEY@\n"
         "client_tls_cert_file = @CERT@\n",
         "has group or world access"},
        {"client_tls_sslmode = prefer\nclient_tls_key_file = @OTHERKEY@\n"
         "client_tls_cert_file = @CERT@\n",
         "does not match"},
        {"client_tls_sslmode = prefer\nclient_tls_key_file = /nonexistent.key\n"
         "client_tls_cert_file = @CERT@\n",
         "could not access private key file \"/nonexistent.key\""},
        {"client_tls_sslmode = prefer\nclient_tls_key_file = @KEY@\n"
         "client_tls_cert_file = @KEY@\n",
         "could not load certificate file"},
        {"client_tls_sslmode = verify-ca\nclient_tls_key_file = @KEY@\n"
         "client_tls_cert_file = @CERT@\n",
         "needs client_tls_ca_file"},
        {"client_tls_sslmode = verify-full\nclient_tls_key_file = @KEY@\n"
         "client_tls_cert_file = @CERT@\nclient_tls_ca_file = @CERT@\n",
         NULL},
        {"client_tls_sslmode = verify-ca\nclient_tls_key_file = @KEY@\n"
         "client_tls_cert_file = @CERT@\nclient_tls_ca_file = @KEY@\n",
         "could not load root certificate file"},
        {"auth_type = cert\nclient_tls_sslmode = require\nclient_tls_key_file = @KEY@\n"
         "client_tls_cert_file = @CERT@\n",
         "auth_type=cert requires client_tls_sslmode=verify-full"},
        {"auth_type = cert\nclient_tls_sslmode = verify-full\nclient_tls_key_file = @KEY@\n"
         "client_tls_cert_file = @CERT@\nclient_tls_ca_file = @CERT@\n",
         NULL},
        /* protocols */
        {"client_tls_sslmode = allow\nclient_tls_key_file = @KEY@\n"
         "client_tls_cert_file = @CERT@\nclient_tls_protocols = tlsv1.2,tlsv1.3\n",
         NULL},
        {"client_tls_sslmode = allow\nclient_tls_key_file = @KEY@\n"
         "client_tls_cert_file = @CERT@\nclient_tls_protocols = all,!tlsv1.0\n",
         NULL},
        {"client_tls_sslmode = allow\nclient_tls_key_file = @KEY@\n"
         "client_tls_cert_file = @CERT@\nclient_tls_protocols = legacy\n",
         NULL},
        {"client_tls_sslmode = allow\nclient_tls_key_file = @KEY@\n"
         "client_tls_cert_file = @CERT@\nclient_tls_protocols = tlsv1.4\n",
         "client_tls_protocols: invalid protocol list \"tlsv1.4\""},
        {"client_tls_sslmode = allow\nclient_tls_key_file = @KEY@\n"
         "client_tls_cert_file = @CERT@\nclient_tls_protocols = !secure,!tlsv1.0,!tlsv1.1\n",
         "client_tls_protocols: invalid protocol list"},
        {"server_tls_protocols = sslv3\n", "server_tls_protocols: invalid protocol list"},
        /* ciphers */
        {"client_tls_sslmode = allow\nclient_tls_key_file = @KEY@\n"
         "client_tls_cert_file = @CERT@\nclient_tls_ciphers = fast\n",
         NULL},
        {"client_tls_sslmode = allow\nclient_tls_key_file = @KEY@\n"
         "client_tls_cert_file = @CERT@\nclient_tls_ciphers = HIGH:!aNULL\n",
         NULL},
        {"client_tls_sslmode = allow\nclient_tls_key_file = @KEY@\n"
         "client_tls_cert_file = @CERT@\nclient_tls_ciphers = NOT-A-CIPHER\n",
         "client_tls_ciphers: no ciphers for \"NOT-A-CIPHER\""},
        {"server_tls13_ciphers = TLS_AES_128_GCM_SHA256\n", NULL},
        {"server_tls13_ciphers = TLS_NOPE\n", "server_tls13_ciphers: no TLSv1.3 cipher suites"},
        /* key exchange */
        {"client_tls_sslmode = allow\nclient_tls_key_file = @KEY@\n"
         "client_tls_cert_file = @CERT@\nclient_tls_dheparams = none\n"
         "client_tls_ecdhcurve = secp384r1\n",
         NULL},
        {"client_tls_sslmode = allow\nclient_tls_key_file = @KEY@\n"
         "client_tls_cert_file = @CERT@\nclient_tls_dheparams = legacy\n"
         "client_tls_ecdhcurve = none\n",
         NULL},
        {"client_tls_sslmode = allow\nclient_tls_key_file = @KEY@\n"
         "client_tls_cert_file = @CERT@\nclient_tls_dheparams = 1024\n",
         "client_tls_dheparams: invalid value \"1024\""},
        {"client_tls_sslmode = allow\nclient_tls_key_file = @KEY@\n"
         "client_tls_cert_file = @CERT@\nclient_tls_ecdhcurve = no-such-curve\n",
         "client_tls_ecdhcurve: invalid curve \"no-such-curve\""},
        /* toward servers */
        {"server_tls_sslmode = require\nserver_tls_cert_file = @CERT@\n",
         "server_tls_cert_file and server_tls_key_file go together"},
        {"server_tls_sslmode = require\nserver_tls_cert_file = @CERT@\n"
         "server_tls_key_file = @KEY@\n",
         NULL},
        {"server_tls_sslmode = require\nserver_tls_cert_file = @CERT@\n"
         "server_tls_key_file = @OPENKEY@\n",
         "server_tls_key_file: private key file"},
        {"server_tls_sslmode = verify-full\nserver_tls_ca_file = @CERT@\n", NULL},
        {"server_tls_sslmode = verify-ca\nserver_tls_ca_file = /nonexistent.crt\n",
         "could not load root certificate file \"/nonexistent.crt\""},
        /* disable: nothing is read, so nothing can fail */
        {"server_tls_sslmode = disable\nserver_tls_ca_file = /nonexistent.crt\n", NULL},
        {"client_tls_sslmode = disable\nclient_tls_key_file = @OPENKEY@\n", NULL},
};

static void test_configure_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct bouncer b;
		struct config *cfg = load(cases[i].lines);
		char err[512] = "";
		bool ok;

		memset(&b, 0, sizeof(b));
		ok = tls_configure(&b, cfg, err, sizeof(err));
		if (cases[i].error == NULL) {
			if (!ok)
				fail_msg("case %zu: %s: unexpected error: %s", i, cases[i].lines,
				         err);
		} else {
			if (ok)
				fail_msg("case %zu: %s: built, expected \"%s\"", i, cases[i].lines,
				         cases[i].error);
			if (strstr(err, cases[i].error) == NULL)
				fail_msg("case %zu: error \"%s\" lacks \"%s\"", i, err,
				         cases[i].error);
			/* the reason never carries key material */
			assert_null(strstr(err, "PRIVATE KEY"));
		}
		tls_free(&b);
		config_free(cfg);
	}
}

static void test_failure_keeps_the_contexts_in_use(void **state)
{
	struct bouncer b;
	struct config *good = load("client_tls_sslmode = require\nclient_tls_key_file = @KEY@\n"
	                           "client_tls_cert_file = @CERT@\n");
	struct config *bad = load("client_tls_sslmode = require\nclient_tls_key_file = @OPENKEY@\n"
	                          "client_tls_cert_file = @CERT@\n");
	struct config *off = load("client_tls_sslmode = disable\n");
	char err[512];

	(void)state;
	memset(&b, 0, sizeof(b));
	assert_false(tls_client_side_enabled(&b));
	assert_true(tls_configure(&b, good, err, sizeof(err)));
	assert_true(tls_client_side_enabled(&b));
	assert_false(tls_configure(&b, bad, err, sizeof(err)));
	assert_true(tls_client_side_enabled(&b));
	assert_true(tls_configure(&b, off, err, sizeof(err)));
	assert_false(tls_client_side_enabled(&b));
	tls_free(&b);
	config_free(good);
	config_free(bad);
	config_free(off);
}

/* PostgreSQL's rule: u=rw,g=r (0640) is enough only when root owns the key. */
static void test_group_readable_key_only_from_root(void **state)
{
	struct bouncer b;
	struct config *cfg = load("client_tls_sslmode = require\nclient_tls_key_file = @GROUPKEY@\n"
	                          "client_tls_cert_file = @CERT@\n");
	char err[512] = "";
	bool ok;

	(void)state;
	memset(&b, 0, sizeof(b));
	ok = tls_configure(&b, cfg, err, sizeof(err));
	if (geteuid() == 0) {
		assert_true(ok);
	} else {
		assert_false(ok);
		assert_non_null(strstr(err, "has group or world access"));
	}
	tls_free(&b);
	config_free(cfg);
}

static void test_server_settings_differ(void **state)
{
	static const struct {
		const char *a, *b;
		bool differ;
	} rows[] = {
	        {"", "", false},
	        {"server_tls_sslmode = prefer\n", "", false},
	        {"client_tls_sslmode = prefer\n", "", false},
	        {"server_tls_sslmode = require\n", "", true},
	        {"server_tls_ca_file = /a\n", "server_tls_ca_file = /b\n", true},
	        {"server_tls_protocols = tlsv1.3\n", "", true},
	        {"server_tls_ciphers = HIGH\n", "", true},
	        {"server_tls13_ciphers = TLS_AES_128_GCM_SHA256\n", "", true},
	        {"server_tls_cert_file = /c\n", "", true},
	        {"server_tls_key_file = /k\n", "", true},
	        {"default_pool_size = 3\n", "", false},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		struct config *a = load(rows[i].a), *c = load(rows[i].b);
		if (tls_server_settings_differ(a, c) != rows[i].differ)
			fail_msg("row %zu: \"%s\" vs \"%s\"", i, rows[i].a, rows[i].b);
		config_free(a);
		config_free(c);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_configure_table),
	        cmocka_unit_test(test_failure_keeps_the_contexts_in_use),
	        cmocka_unit_test(test_group_readable_key_only_from_root),
	        cmocka_unit_test(test_server_settings_differ),
	};
	return cmocka_run_group_tests(tests, make_files, remove_files);
}
