/*
 * Unit tests for the tracked parameter sets of conn.c: lookups by any spelling of a name, the
 * generation that changes with the contents, shared strings and shared slots (param_share()),
 * and a change to one sharing set that leaves the others as they were; and conn_random(), the
 * source of salts and cancel keys.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "bouncer.h"
#include "conn.h"

/* main.c provides the clock to the binary; the library's users bring their own */
uint64_t bouncer_now_usec(void)
{
	return 1000000;
}

static void fill(struct param_set *ps, const char *app)
{
	assert_true(param_set_value(ps, "client_encoding", "UTF8"));
	assert_true(param_set_value(ps, "DateStyle", "ISO, MDY"));
	assert_true(param_set_value(ps, "TimeZone", "UTC"));
	assert_true(param_set_value(ps, "standard_conforming_strings", "on"));
	assert_true(param_set_value(ps, "application_name", app));
}

static void test_values_and_generation(void **state)
{
	struct param_set ps = {0};
	uint64_t gen;

	(void)state;
	fill(&ps, "psql");
	assert_int_equal(ps.n, 5);
	assert_string_equal(param_get(&ps, "datestyle"), "ISO, MDY");
	assert_string_equal(param_get(&ps, "TIMEZONE"), "UTC");
	assert_null(param_get(&ps, "search_path"));
	gen = ps.gen;
	assert_true(param_set_value(&ps, "timezone", "UTC"));
	assert_true(ps.gen == gen); /* the same value: the same generation */
	assert_true(param_set_value(&ps, "timezone", "Europe/Paris"));
	assert_true(ps.gen != gen);
	assert_string_equal(param_get(&ps, "TimeZone"), "Europe/Paris");
	assert_int_equal(ps.n, 5);
	/* the name keeps the spelling it was first set with (replayed in SET) */
	assert_string_equal(ps.p[2].name, "TimeZone");
	param_clear(&ps);
	assert_int_equal(ps.n, 0);
	assert_null(param_get(&ps, "TimeZone"));
	param_clear(&ps);
}

static void test_full_set(void **state)
{
	struct param_set ps = {0};
	char name[32];

	(void)state;
	for (int i = 0; i < PARAM_MAX; i++) {
		snprintf(name, sizeof(name), "p%d", i);
		assert_true(param_set_value(&ps, name, name));
	}
	assert_false(param_set_value(&ps, "one_more", "x"));
	/* a known name still changes */
	assert_true(param_set_value(&ps, "P3", "changed"));
	assert_string_equal(param_get(&ps, "p3"), "changed");
	assert_string_equal(param_get(&ps, "p15"), "p15");
	param_clear(&ps);
}

static void test_shared_slots(void **state)
{
	struct param_set a = {0}, b = {0}, c = {0}, d = {0};

	(void)state;
	fill(&a, "app");
	fill(&b, "app");
	fill(&c, "other");
	param_share(&a);
	param_share(&b);
	param_share(&c);
	/* equal contents hold the same slots, different contents do not */
	assert_ptr_equal(a.p, b.p);
	assert_ptr_not_equal(a.p, c.p);
	/* equal values are one string */
	assert_ptr_equal(param_get(&a, "TimeZone"), param_get(&c, "TimeZone"));

	/* a change to one sharer is its own */
	assert_true(param_set_value(&b, "TimeZone", "Asia/Tokyo"));
	assert_ptr_not_equal(a.p, b.p);
	assert_string_equal(param_get(&a, "TimeZone"), "UTC");
	assert_string_equal(param_get(&b, "TimeZone"), "Asia/Tokyo");
	assert_true(param_set_value(&b, "search_path", "app"));
	assert_null(param_get(&a, "search_path"));
	assert_int_equal(a.n, 5);
	assert_int_equal(b.n, 6);

	/* sharing again after the change finds the others' slots once the contents match */
	assert_true(param_set_value(&b, "TimeZone", "UTC"));
	fill(&d, "app");
	assert_true(param_set_value(&d, "search_path", "app"));
	param_share(&b);
	param_share(&d);
	assert_ptr_equal(b.p, d.p);

	/* the last holder of the first slots goes; the others keep reading theirs */
	param_clear(&a);
	assert_string_equal(param_get(&c, "application_name"), "other");
	assert_string_equal(param_get(&d, "application_name"), "app");
	param_clear(&b);
	assert_string_equal(param_get(&d, "search_path"), "app");
	param_clear(&c);
	param_clear(&d);

	/* a shared set moved by assignment, as a pool's sets are, is still released once */
	fill(&a, "moved");
	param_share(&a);
	b = a;
	memset(&a, 0, sizeof(a));
	assert_string_equal(param_get(&b, "application_name"), "moved");
	param_clear(&b);
	param_clear(&a);
}

/* A held block stays as it was (a server's "already in force" answer relies on it). */
static void test_held_slots(void **state)
{
	struct param_set a = {0}, b = {0};
	struct param_block *held;

	(void)state;
	assert_null(param_hold(&a));
	assert_false(param_holds(NULL, &a));
	param_drop(NULL);

	fill(&a, "held");
	held = param_hold(&a);
	assert_true(param_holds(held, &a));
	/* the holder of a private block changes a copy, and no longer holds what is held */
	assert_true(param_set_value(&a, "TimeZone", "Asia/Tokyo"));
	assert_false(param_holds(held, &a));
	fill(&b, "held");
	param_share(&b);
	assert_false(param_holds(held, &b));
	/* the old block is the last reference to the old value: released on the drop */
	param_drop(held);
	assert_string_equal(param_get(&a, "TimeZone"), "Asia/Tokyo");
	assert_string_equal(param_get(&b, "TimeZone"), "UTC");

	/* held after sharing: every sharer holds it, until it changes */
	param_share(&a);
	held = param_hold(&b);
	assert_true(param_holds(held, &b));
	assert_true(param_set_value(&b, "application_name", "other"));
	assert_false(param_holds(held, &b));
	param_clear(&b);
	param_drop(held);
	param_clear(&a);
}

/*
 * conn_random(): salts and cancel keys drawn from a pool refilled 256 bytes at a time; draws
 * across several refills, of the sizes a log-in takes, never hand the same bytes out twice.
 */
static void test_random_draws(void **state)
{
	static uint8_t drawn[200][12];
	uint8_t big[65];

	(void)state;
	for (int i = 0; i < 200; i++) {
		/* a salt (4 bytes) and a cancel key (8), as one log-in draws them */
		assert_true(conn_random(drawn[i], 4));
		assert_true(conn_random(drawn[i] + 4, 8));
	}
	for (int i = 0; i < 200; i++)
		for (int j = i + 1; j < 200; j++)
			assert_memory_not_equal(drawn[i], drawn[j], sizeof(drawn[i]));
	assert_false(conn_random(big, sizeof(big)));
	assert_true(conn_random(big, 64));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_values_and_generation),
	        cmocka_unit_test(test_full_set),
	        cmocka_unit_test(test_shared_slots),
	        cmocka_unit_test(test_held_slots),
	        cmocka_unit_test(test_random_draws),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
