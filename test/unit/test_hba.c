/*
 * Unit tests of the hba file and ident maps: a table of rules with connections and the verdict
 * each must get (first match wins, no match rejects), lines that must fail the whole load with
 * file and line, @file inclusions, and user maps with regular expressions.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "hba.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

static const struct hba_opts no_tls = {.client_tls = false};
static const struct hba_opts with_tls = {.client_tls = true};

static struct hba *load(const char *text, const struct hba_opts *opts, char *err, size_t errsize)
{
	return hba_load_buffer(text, strlen(text), "hba.conf", opts, err, errsize);
}

/* addr: "unix", an IPv4 or an IPv6 address */
static void make_addr(const char *addr, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (strcmp(addr, "unix") == 0) {
		ss->ss_family = AF_UNIX;
	} else if (strchr(addr, ':') != NULL) {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
		in6->sin6_family = AF_INET6;
		assert_int_equal(inet_pton(AF_INET6, addr, &in6->sin6_addr), 1);
	} else {
		struct sockaddr_in *in = (struct sockaddr_in *)ss;
		in->sin_family = AF_INET;
		assert_int_equal(inet_pton(AF_INET, addr, &in->sin_addr), 1);
	}
}

static const char rules[] =
        "# comment line\n"
        "\n"
        "local   all         postgres                          peer map=admins\n"
        "local   sameuser    all                               trust\n"
        "local   all         all                               md5   # trailing comment\n"
        "host    replication all        10.9.0.0/16            trust\n"
        "host    app,crm     alice,bob  10.0.0.0/8             scram-sha-256\n"
        "host    \"all\"       carol      10.0.0.0 255.0.0.0      password\n"
        "host    all         mallory    all                    reject\n"
        "hostnossl all       all        192.168.1.0/24         md5\n"
        "hostssl all         all        192.168.0.0/16         cert\n"
        "host    all         all        2001:db8::/32          md5\n"
        "host    all         all        127.0.0.1/32           scram-sha-256\n"
        "host    all         all        ::1/128                password\n"
        "host    all         all        0.0.0.0/0              reject\n";

static void test_verdict_table(void **state)
{
	static const struct {
		const char *addr;
		bool tls, replication;
		const char *db, *user;
		enum hba_method method;
		int line; /* 0: no rule matched */
	} cases[] = {
	        {"unix", false, false, "app", "postgres", HBA_PEER, 3},
	        {"unix", false, false, "bob", "bob", HBA_TRUST, 4}, /* sameuser */
	        {"unix", false, false, "app", "bob", HBA_MD5, 5},
	        {"10.9.1.1", false, true, "app", "bob", HBA_TRUST, 6},  /* replication */
	        {"10.9.1.1", false, false, "app", "bob", HBA_SCRAM, 7}, /* "all" is not */
	        {"10.1.2.3", false, false, "crm", "alice", HBA_SCRAM, 7},
	        {"10.1.2.3", false, false, "other", "alice", HBA_REJECT, 15}, /* db not listed */
	        {"10.1.2.3", false, false, "all", "carol", HBA_PASSWORD, 8},  /* quoted "all" */
	        {"127.0.0.1", false, false, "app", "carol", HBA_SCRAM, 13},   /* ... is a name */
	        {"127.0.0.1", false, false, "app", "mallory", HBA_REJECT, 9},
	        {"::1", false, false, "app", "mallory", HBA_REJECT, 9}, /* "all": any family */
	        {"192.168.1.7", false, false, "app", "dave", HBA_MD5, 10},
	        {"192.168.1.7", true, false, "app", "dave", HBA_CERT, 11},    /* TLS: not nossl */
	        {"192.168.2.7", false, false, "app", "dave", HBA_REJECT, 15}, /* hostssl only */
	        {"2001:db8:1::5", false, false, "app", "dave", HBA_MD5, 12},
	        {"2001:db9::5", false, false, "app", "dave", HBA_REJECT, 0}, /* no rule */
	        {"127.0.0.1", false, false, "app", "dave", HBA_SCRAM, 13},
	        {"127.0.0.2", false, false, "app", "dave", HBA_REJECT, 15},
	        {"::1", false, false, "app", "dave", HBA_PASSWORD, 14},
	        {"::ffff:127.0.0.1", false, false, "app", "dave", HBA_SCRAM, 13}, /* v4-mapped */
	        {"::2", false, false, "app", "dave", HBA_REJECT, 0},
	};
	char err[512];
	struct hba *hba = load(rules, &with_tls, err, sizeof(err));

	(void)state;
	if (hba == NULL)
		fail_msg("load failed: %s", err);
	assert_int_equal(hba_rule_count(hba), 13);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct sockaddr_storage ss;
		struct hba_conn c;
		struct hba_verdict v;
		int want_line = cases[i].line;

		make_addr(cases[i].addr, &ss);
		c.addr = (const struct sockaddr *)&ss;
		c.tls = cases[i].tls;
		c.replication = cases[i].replication;
		c.database = cases[i].db;
		c.user = cases[i].user;
		hba_eval(hba, &c, &v);
		if (v.method != cases[i].method || v.line != want_line)
			fail_msg("case %zu (%s %s/%s): got %s line %d, want %s line %d", i,
			         cases[i].addr, cases[i].db, cases[i].user,
			         hba_method_str(v.method), v.line, hba_method_str(cases[i].method),
			         want_line);
		if (v.line == 3)
			assert_string_equal(v.map, "admins");
		else
			assert_null(v.map);
	}
	hba_free(hba);
}

static void test_bad_lines_fail_the_load(void **state)
{
	static const struct {
		const char *text;
		const char *want; /* substring of the error */
	} cases[] = {
	        {"hots all all 1.2.3.4/32 md5\n", "hba.conf:1: invalid connection type"},
	        {"host all all 1.2.3.4/32 ident\n", "unsupported authentication method \"ident\""},
	        {"host all all 1.2.3.4/32 gss\n", "unsupported authentication method"},
	        {"host all all db.example.com md5\n", "invalid IP address"},
	        {"host all all samenet md5\n", "invalid IP address"},
	        {"host all all 1.2.3.4/33 md5\n", "invalid CIDR mask"},
	        {"host all all ::1/129 md5\n", "invalid CIDR mask"},
	        {"host all all 1.2.3.4/ md5\n", "invalid CIDR mask"},
	        {"host all all 1.2.3.4 255.0.255.0 md5\n", "invalid IP mask"},
	        {"host all all 1.2.3.4 md5\n", "invalid IP mask"},
	        {"host all all 1.2.3.4\n", "end of line before the netmask"},
	        {"host all all 1.2.3.4/32\n", "end of line before the authentication method"},
	        {"local all\n", "end of line before the user field"},
	        {"local all all md5 clientcert=1\n", "unsupported authentication option"},
	        {"local all all md5 map=x\n", "map= is only valid for peer and cert"},
	        {"host all all 1.2.3.4/32 peer\n", "only supported on local sockets"},
	        {"local samerole all md5\n", "samerole is not supported"},
	        {"local all +admins md5\n", "group membership"},
	        {"local all /^a md5\n", "regular expressions"},
	        {"local \"app all md5\n", "unterminated quoted string"},
	        {"local app, all md5\n", "end of line before the authentication method"},
	        {"local all all md5\nlocal @/nonexistent/x all md5\n",
	         "hba.conf:2: cannot open /nonexistent/x"},
	        {"local all all trust\nhostssl all all 1.2.3.4/32 md5\n",
	         "hba.conf:2: hostssl needs client TLS"},
	        {"host all all 1.2.3.4/32 cert\n", "hba.conf:1: cert needs client TLS"},
	        {"local a,,b all md5\n", "empty item"},
	};
	char err[512];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct hba *hba = load(cases[i].text, &no_tls, err, sizeof(err));
		if (hba != NULL)
			fail_msg("case %zu loaded: %s", i, cases[i].text);
		if (strstr(err, cases[i].want) == NULL)
			fail_msg("case %zu: error \"%s\" lacks \"%s\"", i, err, cases[i].want);
	}
	/* a list goes on after a comma and a space: "app, crm" is one field */
	{
		struct hba *hba = load("local app, crm all md5\n", &no_tls, err, sizeof(err));
		assert_non_null(hba);
		assert_int_equal(hba_rule_count(hba), 1);
		hba_free(hba);
	}
	/* with TLS the same lines load */
	{
		struct hba *hba = load("hostssl all all 1.2.3.4/32 cert map=m\n", &with_tls, err,
		                       sizeof(err));
		assert_non_null(hba);
		hba_free(hba);
	}
	/* NUL bytes and overlong lines */
	{
		static const char nul[] = "local all all md5\0\n";
		char *big = malloc(HBA_MAX_LINE + 100);
		assert_null(hba_load_buffer(nul, sizeof(nul) - 1, "hba.conf", &no_tls, err,
		                            sizeof(err)));
		memset(big, 'a', HBA_MAX_LINE + 50);
		big[HBA_MAX_LINE + 50] = '\0';
		assert_null(load(big, &no_tls, err, sizeof(err)));
		assert_non_null(strstr(err, "line longer than"));
		free(big);
	}
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void test_include_files(void **state)
{
	char dir[] = "/tmp/test_hba.XXXXXX";
	char path[256], hbapath[256], err[512];
	struct hba *hba;
	struct sockaddr_storage ss;
	struct hba_conn c = {0};
	struct hba_verdict v;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/users.txt", dir);
	write_file(path, "alice, bob\n# a comment\n\"carol smith\" @more.txt\n");
	snprintf(path, sizeof(path), "%s/more.txt", dir);
	write_file(path, "dave\n");
	snprintf(path, sizeof(path), "%s/dbs.txt", dir);
	write_file(path, "app crm\n");
	snprintf(path, sizeof(path), "%s/loop.txt", dir);
	write_file(path, "@loop.txt\n");
	snprintf(hbapath, sizeof(hbapath), "%s/hba.conf", dir);
	write_file(hbapath, "host @dbs.txt @users.txt 127.0.0.0/8 trust\n");

	hba = hba_load(hbapath, &no_tls, err, sizeof(err));
	if (hba == NULL)
		fail_msg("%s", err);
	make_addr("127.0.0.5", &ss);
	c.addr = (const struct sockaddr *)&ss;
	c.database = "crm";
	static const struct {
		const char *user;
		enum hba_method m;
	} users[] = {{"alice", HBA_TRUST}, {"bob", HBA_TRUST},    {"carol smith", HBA_TRUST},
	             {"dave", HBA_TRUST},  {"carol", HBA_REJECT}, {"eve", HBA_REJECT}};
	for (size_t i = 0; i < sizeof(users) / sizeof(users[0]); i++) {
		c.user = users[i].user;
		hba_eval(hba, &c, &v);
		if (v.method != users[i].m)
			fail_msg("%s: %s", users[i].user, hba_method_str(v.method));
	}
	c.user = "alice";
	c.database = "postgres";
	hba_eval(hba, &c, &v);
	assert_int_equal(v.method, HBA_REJECT);
	hba_free(hba);

	/* an include that includes itself stops at the depth limit */
	write_file(hbapath, "local all @loop.txt trust\n");
	assert_null(hba_load(hbapath, &no_tls, err, sizeof(err)));
	assert_non_null(strstr(err, "nested deeper"));
	assert_non_null(strstr(err, "hba.conf:1:"));

	/* a missing hba file */
	unlink(hbapath);
	assert_null(hba_load(hbapath, &no_tls, err, sizeof(err)));
	assert_non_null(strstr(err, "cannot open"));

	snprintf(path, sizeof(path), "rm -rf '%s'", dir);
	assert_int_equal(system(path), 0);
}

static void test_ident_maps(void **state)
{
	static const char text[] = "# MAP SYSTEM-USER DB-USER\n"
	                           "admins postgres    postgres\n"
	                           "admins root        app\n"
	                           "devs   /^dev_(.*)$  \\1\n"
	                           "devs   /^ops$       all\n"
	                           "other  \"two words\" app\n";
	static const struct {
		const char *map, *sys, *db;
		bool ok;
	} cases[] = {
	        {"admins", "postgres", "postgres", true}, {"admins", "root", "app", true},
	        {"admins", "root", "postgres", false},    {"admins", "app", "app", false},
	        {"devs", "dev_alice", "alice", true},     {"devs", "dev_alice", "bob", false},
	        {"devs", "alice", "alice", false},        {"devs", "ops", "anyone", false},
	        {"other", "two words", "app", true},      {"nomap", "postgres", "postgres", false},
	};
	char err[512];
	struct ident *id = ident_load_buffer(text, strlen(text), "ident.conf", err, sizeof(err));

	(void)state;
	if (id == NULL)
		fail_msg("%s", err);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		if (ident_allows(id, cases[i].map, cases[i].sys, cases[i].db) != cases[i].ok)
			fail_msg("case %zu: %s %s -> %s", i, cases[i].map, cases[i].sys,
			         cases[i].db);
	assert_false(ident_allows(id, NULL, "postgres", "postgres"));
	assert_false(ident_allows(NULL, "admins", "postgres", "postgres"));
	ident_free(id);

	assert_null(ident_load_buffer("m a\n", 4, "ident.conf", err, sizeof(err)));
	assert_non_null(strstr(err, "ident.conf:1: expected MAPNAME"));
	assert_null(ident_load_buffer("m /( b\n", 7, "ident.conf", err, sizeof(err)));
	assert_non_null(strstr(err, "invalid regular expression"));
	assert_null(ident_load_buffer("m a b c\n", 8, "ident.conf", err, sizeof(err)));
	assert_non_null(strstr(err, "extra fields"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_verdict_table),
	        cmocka_unit_test(test_bad_lines_fail_the_load),
	        cmocka_unit_test(test_include_files),
	        cmocka_unit_test(test_ident_maps),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
