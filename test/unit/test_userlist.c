/*
 * Unit tests of the auth_file reader: pgbouncer's quoting, the three kinds of stored password,
 * lines that must be skipped, duplicates, and hostile sizes.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "userlist.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef TEST_SRCDIR
#define TEST_SRCDIR "."
#endif

static struct userlist *load(const char *text)
{
	return userlist_load_buffer(text, strlen(text), "users.txt");
}

/* One list held by several workers: it stays whole until the last of them lets go. */
static void test_shared_until_the_last_holder_frees_it(void **state)
{
	struct userlist *ul = load("\"app\" \"secret\"\n");

	(void)state;
	assert_non_null(ul);
	assert_ptr_equal(userlist_ref(ul), ul);
	assert_ptr_equal(userlist_ref(ul), ul);
	userlist_free(ul);
	userlist_free(ul);
	assert_string_equal(userlist_get_password(ul, "app"), "secret");
	userlist_free(ul);
	assert_null(userlist_ref(NULL));
}

static void test_fixture_file(void **state)
{
	struct userlist *ul = userlist_load(TEST_SRCDIR "/test/unit/data/userlist.txt");

	(void)state;
	assert_non_null(ul);
	/* the later "app" line wins */
	assert_string_equal(userlist_get_password(ul, "app"), "newer");
	assert_string_equal(userlist_get_password(ul, "md5user"),
	                    "md545f2603610af569b6155c45067268c6b");
	assert_int_equal(userlist_password_kind(userlist_get_password(ul, "md5user")),
	                 USERLIST_PW_MD5);
	assert_int_equal(userlist_password_kind(userlist_get_password(ul, "scramuser")),
	                 USERLIST_PW_SCRAM);
	/* "" is one quote, and text after the second field is ignored */
	assert_string_equal(userlist_get_password(ul, "quo\"ted"), "pa\"ss word");
	assert_null(userlist_get_password(ul, "no password"));
	assert_null(userlist_get_password(ul, "bad scram"));
	assert_null(userlist_get_password(ul, "nobody"));
	assert_int_equal(userlist_count(ul), 4);
	assert_int_equal(userlist_skipped(ul), 3);
	userlist_free(ul);
}

static void test_lines(void **state)
{
	static const struct {
		const char *text, *user, *password; /* password NULL: the user must be absent */
		int skipped;
	} cases[] = {
	        {"\"u\" \"p\"\n", "u", "p", 0},
	        {"\"u\" \"p\"", "u", "p", 0},                /* no final newline */
	        {"\"u\" \"p\"\r\n", "u", "p", 0},            /* CRLF */
	        {"  \"u\"\t\"p\"  trailing\n", "u", "p", 0}, /* whitespace, extra text */
	        {"\"u\" \"\"\n", "u", "", 0},                /* empty password */
	        {"\"u\"\"\" \"p\"\n", "u\"", "p", 0},
	        {"\"u\" \"\"\"\"\"\"\n", "u", "\"\"", 0},
	        {"; \"u\" \"p\"\n", "u", NULL, 0},
	        {"# \"u\" \"p\"\n", "u", NULL, 0},
	        {"\n\n   \n", "u", NULL, 0},
	        {"u p\n", "u", NULL, 1},
	        {"\"u\" p\n", "u", NULL, 1},
	        {"\"u\"\n", "u", NULL, 1},
	        {"\"u \"p\"\n", "u", NULL, 1},
	        {"\"u\" \"p\n", "u", NULL, 1},
	        {"\"\" \"p\"\n", "", NULL, 1},
	        {"\"u\" \"SCRAM-SHA-256$4096:c2FsdA==$AAAA:BBBB\"\n", "u",
	         "SCRAM-SHA-256$4096:c2FsdA==$AAAA:BBBB", 0},
	        {"\"u\" \"SCRAM-SHA-256$0:c2FsdA==$AAAA:BBBB\"\n", "u", NULL, 1},
	        {"\"u\" \"SCRAM-SHA-256$4096:$AAAA:BBBB\"\n", "u", NULL, 1},
	        {"\"u\" \"SCRAM-SHA-256$4096:c2FsdA==$AAAA\"\n", "u", NULL, 1},
	        {"\"u\" \"SCRAM-SHA-256$4096:c2FsdA==$AA!A:BBBB\"\n", "u", NULL, 1},
	        {"\"u\" \"SCRAM-SHA-256$99999999999:c2FsdA==$AAAA:BBBB\"\n", "u", NULL, 1},
	        {"bad\n\"u\" \"p\"\nbad again\n", "u", "p", 2},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct userlist *ul = load(cases[i].text);
		const char *pw;

		assert_non_null(ul);
		pw = userlist_get_password(ul, cases[i].user);
		if (cases[i].password == NULL && pw != NULL)
			fail_msg("case %zu: user found with password '%s'", i, pw);
		if (cases[i].password != NULL && (pw == NULL || strcmp(pw, cases[i].password) != 0))
			fail_msg("case %zu: password '%s', expected '%s'", i, pw ? pw : "(none)",
			         cases[i].password);
		if (userlist_skipped(ul) != cases[i].skipped)
			fail_msg("case %zu: %d lines skipped, expected %d", i, userlist_skipped(ul),
			         cases[i].skipped);
		userlist_free(ul);
	}
}

static void test_password_kinds(void **state)
{
	static const struct {
		const char *pw;
		enum userlist_pw_kind kind;
	} cases[] = {
	        {"secret", USERLIST_PW_PLAIN},
	        {"md545f2603610af569b6155c45067268c6b", USERLIST_PW_MD5},
	        {"md545F2603610AF569B6155C45067268C6B", USERLIST_PW_MD5},
	        /* PostgreSQL's rule: not 32 hex digits after "md5" means a plain password */
	        {"md545f2603610af569b6155c45067268c6", USERLIST_PW_PLAIN},
	        {"md545f2603610af569b6155c45067268c6bb", USERLIST_PW_PLAIN},
	        {"md5zzf2603610af569b6155c45067268c6b", USERLIST_PW_PLAIN},
	        {"SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy", USERLIST_PW_SCRAM},
	        {"SCRAM-SHA-256$4096:c2FsdA==", USERLIST_PW_PLAIN},
	        {"", USERLIST_PW_PLAIN},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (userlist_password_kind(cases[i].pw) != cases[i].kind)
			fail_msg("%s: kind %s, expected %s", cases[i].pw,
			         userlist_pw_kind_str(userlist_password_kind(cases[i].pw)),
			         userlist_pw_kind_str(cases[i].kind));
	}
}

static void test_many_users_sorted_lookup(void **state)
{
	size_t cap = 2000 * 40, used = 0;
	char *text = malloc(cap), name[32], pw[32];
	struct userlist *ul;

	(void)state;
	assert_non_null(text);
	/* written in reverse order so lookups cannot rely on file order */
	for (int i = 1999; i >= 0; i--)
		used += (size_t)snprintf(text + used, cap - used, "\"user%d\" \"pw%d\"\n", i, i);
	ul = userlist_load_buffer(text, used, "many");
	assert_non_null(ul);
	assert_int_equal(userlist_count(ul), 2000);
	for (int i = 0; i < 2000; i++) {
		snprintf(name, sizeof(name), "user%d", i);
		snprintf(pw, sizeof(pw), "pw%d", i);
		assert_string_equal(userlist_get_password(ul, name), pw);
	}
	assert_null(userlist_get_password(ul, "user2000"));
	assert_null(userlist_get_password(ul, ""));
	userlist_free(ul);
	free(text);
}

static void test_hostile_input(void **state)
{
	size_t big = USERLIST_MAX_LINE + 100;
	char *text = malloc(big + 64);
	struct userlist *ul;
	const char nul[] = "\"a\0b\" \"p\"\n\"c\" \"d\"\n";

	(void)state;
	assert_non_null(text);
	/* a line longer than the maximum is skipped, the next one still read */
	text[0] = '"';
	memset(text + 1, 'x', big);
	strcpy(text + 1 + big, "\" \"p\"\n\"ok\" \"fine\"\n");
	ul = load(text);
	assert_non_null(ul);
	assert_int_equal(userlist_count(ul), 1);
	assert_string_equal(userlist_get_password(ul, "ok"), "fine");
	assert_int_equal(userlist_skipped(ul), 1);
	userlist_free(ul);
	free(text);

	ul = userlist_load_buffer(nul, sizeof(nul) - 1, "nul");
	assert_non_null(ul);
	assert_int_equal(userlist_count(ul), 1);
	assert_string_equal(userlist_get_password(ul, "c"), "d");
	userlist_free(ul);

	/* NULL-safe lookups */
	assert_null(userlist_get_password(NULL, "a"));
	assert_int_equal(userlist_count(NULL), 0);
	userlist_free(NULL);
}

static void test_unreadable_files(void **state)
{
	char dir[] = "/tmp/test_userlist.XXXXXX", path[PATH_MAX];

	(void)state;
	assert_null(userlist_load("/nonexistent/userlist.txt"));
	assert_null(userlist_load("/tmp"));
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/fifo", dir);
	assert_int_equal(mkfifo(path, 0600), 0);
	/* must not block waiting for a writer */
	assert_null(userlist_load(path));
	unlink(path);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_fixture_file),
	        cmocka_unit_test(test_shared_until_the_last_holder_frees_it),
	        cmocka_unit_test(test_lines),
	        cmocka_unit_test(test_password_kinds),
	        cmocka_unit_test(test_many_users_sorted_lookup),
	        cmocka_unit_test(test_hostile_input),
	        cmocka_unit_test(test_unreadable_files),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
