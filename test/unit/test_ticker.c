/*
 * Unit tests for the ticker: periodic ticks on one timerfd, run by a real libevent loop. What
 * matters: a tick comes back every period until stopped, a callback may stop any tick (its own,
 * one due in the same run) or restart one, and the ticker goes away with its last tick. Each
 * loop below waits for events, bounded by a count of loop turns, never by a time.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <event2/event.h>
#include <stdlib.h>

#include "bouncer.h"
#include "ticker.h"

struct fixture {
	struct bouncer b;
	struct tick a, c;
	int ran_a, ran_c;
	int stop_after; /* a stops itself (and c) once it ran this often */
	bool a_stops_c;
};

static void on_a(void *arg)
{
	struct fixture *f = arg;

	f->ran_a++;
	if (f->a_stops_c)
		tick_stop(&f->b, &f->c);
	if (f->stop_after > 0 && f->ran_a >= f->stop_after) {
		tick_stop(&f->b, &f->a);
		tick_stop(&f->b, &f->c);
	}
}

static void on_c(void *arg)
{
	struct fixture *f = arg;

	f->ran_c++;
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	f->b.base = event_base_new();
	assert_non_null(f->b.base);
	tick_init(&f->a, on_a, f);
	tick_init(&f->c, on_c, f);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	tick_stop(&f->b, &f->a);
	tick_stop(&f->b, &f->c);
	assert_null(f->b.ticker);
	event_base_free(f->b.base);
	free(f);
	return 0;
}

/* Runs the loop until cond holds, at most 10,000 turns (each waits for the timerfd). */
#define RUN_UNTIL(f, cond)                                                                         \
	do {                                                                                       \
		for (int turn_ = 0; turn_ < 10000 && !(cond); turn_++)                             \
			event_base_loop((f)->b.base, EVLOOP_ONCE);                                 \
		assert_true(cond);                                                                 \
	} while (0)

static void test_ticks_come_back(void **state)
{
	struct fixture *f = *state;

	assert_true(tick_start(&f->b, &f->a, 1000));
	assert_true(tick_start(&f->b, &f->c, 2000));
	assert_non_null(f->b.ticker);
	RUN_UNTIL(f, f->ran_a >= 3 && f->ran_c >= 2);
	/* a stopped tick does not come back; the other one goes on */
	tick_stop(&f->b, &f->c);
	f->ran_c = 0;
	RUN_UNTIL(f, f->ran_a >= 8);
	assert_int_equal(f->ran_c, 0);
	assert_non_null(f->b.ticker);
}

static void test_callback_stops_another(void **state)
{
	struct fixture *f = *state;

	/* started first, a runs first when both are due, and stops c every time */
	f->a_stops_c = true;
	assert_true(tick_start(&f->b, &f->a, 1000));
	assert_true(tick_start(&f->b, &f->c, 1000));
	RUN_UNTIL(f, f->ran_a >= 3);
	assert_int_equal(f->ran_c, 0);
}

static void test_last_stop_frees(void **state)
{
	struct fixture *f = *state;

	/* starting a started tick restarts it: one stop is enough */
	assert_true(tick_start(&f->b, &f->a, 1000));
	assert_true(tick_start(&f->b, &f->a, 1000));
	tick_stop(&f->b, &f->a);
	assert_null(f->b.ticker);
	/* a callback that stops every tick frees the ticker under its own run */
	f->stop_after = 2;
	assert_true(tick_start(&f->b, &f->a, 1000));
	assert_true(tick_start(&f->b, &f->c, 1000));
	RUN_UNTIL(f, f->b.ticker == NULL);
	assert_int_equal(f->ran_a, 2);
	/* and a new one is made by the next start */
	f->stop_after = 0;
	assert_true(tick_start(&f->b, &f->c, 1000));
	RUN_UNTIL(f, f->ran_c >= 3);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test_setup_teardown(test_ticks_come_back, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_callback_stops_another, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_last_stop_frees, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
