/*
 * Unit tests for pool: the effective settings of a pool, as pgbouncer's precedence gives them
 * ([users] beats [databases] beats [pgbouncer]), read from a config in memory.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bouncer.h"
#include "config.h"
#include "pool.h"

/* main.c provides the clock to the binary; the library's users bring their own */
uint64_t bouncer_now_usec(void)
{
	return 1000000;
}

static const char base_ini[] = "[databases]\n"
                               "plain = host=127.0.0.1 dbname=x\n"
                               "tuned = host=127.0.0.1 pool_mode=statement pool_size=7 "
                               "reserve_pool_size=2 min_pool_size=3 max_db_connections=9 "
                               "server_lifetime=60 query_wait_timeout=5\n"
                               "forced = host=127.0.0.1 user=svc password=pw\n"
                               "* = host=127.0.0.1\n"
                               "[users]\n"
                               "vip = pool_mode=transaction pool_size=11 query_timeout=4 "
                               "max_user_connections=12 idle_transaction_timeout=8\n"
                               "[pgbouncer]\n"
                               "pool_mode = session\n"
                               "default_pool_size = 20\n"
                               "query_wait_timeout = 120\n"
                               "query_timeout = 0\n"
                               "server_lifetime = 3600\n";

struct fixture {
	struct bouncer b;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct cf_load_opts opts = {.quiet = true};

	assert_non_null(f);
	f->b.base = event_base_new();
	list_init(&f->b.pools);
	list_init(&f->b.login_clients);
	list_init(&f->b.cancel_conns);
	list_init(&f->b.justfree);
	assert_true(
	        config_load_buffer_opts(base_ini, strlen(base_ini), "test.ini", &opts, &f->b.cfg));
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	struct list *it, *tmp;

	list_for_each_safe(it, tmp, &f->b.pools) pool_free(list_entry(it, struct pool, head));
	config_free(f->b.cfg);
	event_base_free(f->b.base);
	free(f);
	return 0;
}

static void test_precedence(void **state)
{
	struct fixture *f = *state;
	static const struct {
		const char *db, *user;
		int mode, size, reserve, min, max_db, max_user;
		int64_t lifetime, wait, query, idle_txn;
		bool forced, autodb;
	} cases[] = {
	        /* everything from [pgbouncer] */
	        {"plain", "joe", POOL_SESSION, 20, 0, 0, 0, 0, 3600000000, 120000000, 0, 0, false,
	         false},
	        /* the database entry beats the globals */
	        {"tuned", "joe", POOL_STATEMENT, 7, 2, 3, 9, 0, 60000000, 5000000, 0, 0, false,
	         false},
	        /* the user entry beats the database entry */
	        {"tuned", "vip", POOL_TRANSACTION, 11, 2, 3, 9, 12, 60000000, 5000000, 4000000,
	         8000000, false, false},
	        {"forced", "joe", POOL_SESSION, 20, 0, 0, 0, 0, 3600000000, 120000000, 0, 0, true,
	         false},
	        /* a name covered only by "*" */
	        {"elsewhere", "joe", POOL_SESSION, 20, 0, 0, 0, 0, 3600000000, 120000000, 0, 0,
	         false, true},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *err = NULL;
		struct pool *p = pool_get(&f->b, cases[i].db, cases[i].user, &err);

		assert_non_null(p);
		assert_int_equal(p->pool_mode, cases[i].mode);
		assert_int_equal(p->pool_size, cases[i].size);
		assert_int_equal(p->reserve_pool_size, cases[i].reserve);
		assert_int_equal(p->min_pool_size, cases[i].min);
		assert_int_equal(p->max_db_connections, cases[i].max_db);
		assert_int_equal(p->max_user_connections, cases[i].max_user);
		assert_int_equal(p->server_lifetime, cases[i].lifetime);
		assert_int_equal(p->query_wait_timeout, cases[i].wait);
		assert_int_equal(p->query_timeout, cases[i].query);
		assert_int_equal(p->idle_transaction_timeout, cases[i].idle_txn);
		assert_int_equal(p->forced_user, cases[i].forced);
		assert_int_equal(p->autodb, cases[i].autodb);
		/* the same pair gives the same pool */
		assert_ptr_equal(pool_get(&f->b, cases[i].db, cases[i].user, &err), p);
	}
}

static void test_server_login_info(void **state)
{
	struct fixture *f = *state;
	const char *err = NULL;
	struct pool *p;

	p = pool_get(&f->b, "forced", "joe", &err);
	assert_non_null(p);
	assert_string_equal(p->server_user, "svc");
	assert_string_equal(p->server_password, "pw");
	assert_string_equal(p->server_db, "forced");
	p = pool_get(&f->b, "plain", "joe", &err);
	assert_string_equal(p->server_user, "joe");
	assert_string_equal(p->server_db, "x");
	assert_string_equal(p->server_password, ""); /* no auth file */
}

static void test_unknown_database(void **state)
{
	struct fixture *f = *state;
	const char *err = NULL;
	static const char ini[] = "[databases]\nonly = host=127.0.0.1\n[pgbouncer]\n";
	struct cf_load_opts opts = {.quiet = true};
	struct config *cfg = NULL;

	assert_true(config_load_buffer_opts(ini, strlen(ini), "t.ini", &opts, &cfg));
	config_free(f->b.cfg);
	f->b.cfg = cfg;
	assert_null(pool_get(&f->b, "nope", "joe", &err));
	assert_string_equal(err, "no such database");
}

static void test_client_limits(void **state)
{
	struct fixture *f = *state;
	static const char ini[] = "[databases]\n"
	                          "small = host=127.0.0.1 max_db_client_connections=1\n"
	                          "big = host=127.0.0.1\n"
	                          "[users]\n"
	                          "solo = max_user_client_connections=2\n"
	                          "[pgbouncer]\n";
	struct cf_load_opts opts = {.quiet = true};
	struct config *cfg = NULL;
	const char *err = NULL;
	char msg[128];
	struct pool *small, *big;
	struct conn c1 = {0}, c2 = {0}, c3 = {0}; /* c3 asks to join */

	assert_true(config_load_buffer_opts(ini, strlen(ini), "t.ini", &opts, &cfg));
	config_free(f->b.cfg);
	f->b.cfg = cfg;
	small = pool_get(&f->b, "small", "solo", &err);
	big = pool_get(&f->b, "big", "solo", &err);
	assert_non_null(small);
	assert_non_null(big);
	assert_true(pool_client_allowed(small, &c3, msg, sizeof(msg)));

	/* one client in small: the database is full, the user is not */
	list_append(&small->active_clients, &c1.head);
	assert_false(pool_client_allowed(small, &c3, msg, sizeof(msg)));
	assert_string_equal(msg, "no more connections allowed (max_db_client_connections)");
	assert_true(pool_client_allowed(big, &c3, msg, sizeof(msg)));

	/* a second client of the user elsewhere: now the user is full everywhere */
	list_append(&big->waiting_clients, &c2.head);
	assert_false(pool_client_allowed(big, &c3, msg, sizeof(msg)));
	assert_string_equal(msg, "no more connections allowed (max_user_client_connections)");

	list_del(&c1.head);
	list_del(&c2.head);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test_setup_teardown(test_precedence, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_server_login_info, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_unknown_database, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_client_limits, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
