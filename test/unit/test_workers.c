/*
 * Unit tests of workers.c: workers_each() runs on every worker in that worker's thread, in
 * order, and two workers calling it at once both finish; posts; a stopped worker keeps nobody
 * waiting, and what was posted to it with a release of its own (workers_post_owned()) is
 * released, neither run nor leaked; the shared counts never pass their maximum and ids stay
 * unique across threads; the auth key and the login tallies are the same seen from every worker.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <event2/event.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bouncer.h"
#include "workers.h"

uint64_t bouncer_now_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static struct workers *ws;
static struct bouncer b0, b1;

/* worker 1's body: its loop until told to stop */
static void run(struct bouncer *b)
{
	b->base = event_base_new();
	if (b->base == NULL || !workers_mailbox_open(b)) {
		(void)workers_ready(b, false);
		return;
	}
	(void)workers_ready(b, true);
	event_base_dispatch(b->base);
	workers_stopped(b);
	workers_detach(b);
	event_base_free(b->base);
}

static int setup(void **state)
{
	(void)state;
	memset(&b0, 0, sizeof(b0));
	memset(&b1, 0, sizeof(b1));
	ws = workers_new(2);
	assert_non_null(ws);
	workers_attach(ws, 0, &b0);
	workers_attach(ws, 1, &b1);
	b0.base = event_base_new();
	assert_non_null(b0.base);
	assert_true(workers_mailbox_open(&b0));
	assert_true(workers_start(ws, run));
	return 0;
}

static void stop_loop(struct bouncer *w, void *arg)
{
	(void)arg;
	event_base_loopbreak(w->base);
}

static int teardown(void **state)
{
	(void)state;
	(void)workers_post(&b0, 1, stop_loop, NULL);
	workers_join(ws);
	workers_stopped(&b0);
	workers_detach(&b0);
	event_base_free(b0.base);
	workers_free(ws);
	return 0;
}

struct seen {
	int n;
	int index[4];
	pthread_t thread[4];
};

static void record(struct bouncer *w, void *arg)
{
	struct seen *s = arg;

	s->index[s->n] = worker_index(w);
	s->thread[s->n] = pthread_self();
	s->n++;
}

static void test_each_runs_on_every_worker_in_its_own_thread(void **state)
{
	struct seen s = {0};

	(void)state;
	assert_int_equal(workers_count(&b0), 2);
	assert_int_equal(worker_index(&b1), 1);
	workers_each(&b0, record, &s);
	assert_int_equal(s.n, 2);
	assert_int_equal(s.index[0], 0);
	assert_int_equal(s.index[1], 1);
	assert_true(pthread_equal(s.thread[0], pthread_self()));
	assert_false(pthread_equal(s.thread[1], pthread_self()));
}

static struct seen from_one;
static atomic_int one_done;

static void each_from_one(struct bouncer *w, void *arg)
{
	(void)arg;
	workers_each(w, record, &from_one);
	atomic_store(&one_done, 1);
}

static void test_two_workers_calling_each_at_once_both_finish(void **state)
{
	struct seen s = {0};

	(void)state;
	memset(&from_one, 0, sizeof(from_one));
	atomic_store(&one_done, 0);
	/* worker 1 starts an each of its own, which needs worker 0, while worker 0 waits for it */
	assert_true(workers_post(&b0, 1, each_from_one, NULL));
	workers_each(&b0, record, &s);
	assert_int_equal(s.n, 2);
	for (int i = 0; i < 10000 && !atomic_load(&one_done); i++) {
		struct timespec ms = {0, 1000000};
		event_base_loop(b0.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
		nanosleep(&ms, NULL);
	}
	assert_int_equal(atomic_load(&one_done), 1);
	assert_int_equal(from_one.n, 2);
	assert_int_equal(from_one.index[0], 0);
	assert_true(pthread_equal(from_one.thread[0], pthread_self()));
}

static void test_post_to_itself_or_nobody_is_refused(void **state)
{
	(void)state;
	assert_false(workers_post(&b0, 0, stop_loop, NULL));
	assert_false(workers_post(&b0, 2, stop_loop, NULL));
	assert_false(workers_post(&b0, -1, stop_loop, calloc(1, 8))); /* freed, not leaked */
}

static void test_limits_never_pass_their_maximum(void **state)
{
	struct worker_limit *a, *again, *db;

	(void)state;
	a = workers_limit_get(&b0, 'p', "app", "app");
	again = workers_limit_get(&b1, 'p', "app", "app");
	db = workers_limit_get(&b0, 'd', "app", NULL);
	assert_non_null(a);
	assert_ptr_equal(a, again); /* one count for every worker */
	assert_ptr_not_equal(a, db);
	assert_true(workers_limit_take(a, 2));
	assert_true(workers_limit_take(again, 2));
	assert_false(workers_limit_take(a, 2));
	assert_int_equal(workers_limit_count(a), 2);
	workers_limit_give(a);
	assert_true(workers_limit_take(a, 2));
	workers_limit_give(a);
	workers_limit_give(a);
	workers_limit_put(&b0, a);
	workers_limit_put(&b1, again);
	workers_limit_put(&b0, db);
}

#define IDS 20000
static uint64_t ids[2][IDS];

static void *take_ids(void *arg)
{
	uint64_t *out = arg;

	for (int i = 0; i < IDS; i++)
		out[i] = workers_next_conn_id(&b1);
	return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void test_conn_ids_are_unique_across_threads(void **state)
{
	pthread_t t;
	static uint64_t all[2 * IDS];

	(void)state;
	assert_int_equal(pthread_create(&t, NULL, take_ids, ids[1]), 0);
	for (int i = 0; i < IDS; i++)
		ids[0][i] = workers_next_conn_id(&b0);
	pthread_join(t, NULL);
	memcpy(all, ids[0], sizeof(ids[0]));
	memcpy(all + IDS, ids[1], sizeof(ids[1]));
	qsort(all, 2 * IDS, sizeof(all[0]), cmp_u64);
	for (int i = 1; i < 2 * IDS; i++)
		assert_true(all[i] > all[i - 1]);
	assert_int_equal(workers_clients_add(&b0, 3), 3);
	assert_int_equal(workers_clients_add(&b1, -1), 2);
	assert_int_equal(workers_clients_add(&b1, -2), 0);
}

/* An owned post's arg: what became of it. */
struct owned {
	atomic_int *ran, *dropped, *stopped;
};
static atomic_int owned_ran, owned_dropped, owned_stopped, hold_entered, hold_release;

static struct owned *owned_new(void)
{
	struct owned *o = malloc(sizeof(*o));

	assert_non_null(o);
	o->ran = &owned_ran;
	o->dropped = &owned_dropped;
	o->stopped = &owned_stopped;
	return o;
}

static void owned_run(struct bouncer *w, void *arg)
{
	struct owned *o = arg;

	(void)w;
	atomic_fetch_add(o->ran, 1);
}

static void owned_drop(void *arg, bool stopped)
{
	struct owned *o = arg;

	atomic_fetch_add(o->dropped, 1);
	atomic_fetch_add(o->stopped, stopped ? 1 : 0);
}

/* Worker 1 holds on until told, then leaves its loop: what was posted meanwhile stays queued. */
static void hold_then_stop(struct bouncer *w, void *arg)
{
	(void)arg;
	atomic_store(&hold_entered, 1);
	while (!atomic_load(&hold_release)) {
		struct timespec ms = {0, 1000000};
		nanosleep(&ms, NULL);
	}
	event_base_loopbreak(w->base);
}

static void test_a_stopped_worker_keeps_nobody_waiting(void **state)
{
	struct seen s = {0};

	(void)state;
	/* an owned post runs where it was sent, and is not dropped */
	assert_true(workers_post_owned(&b0, 1, owned_run, owned_new(), owned_drop));
	workers_each(&b0, record, &s); /* worker 1 has run its mailbox in order by now */
	assert_int_equal(atomic_load(&owned_ran), 1);
	assert_int_equal(atomic_load(&owned_dropped), 0);
	/* one posted while worker 1 is on its way out is dropped, not run, nor leaked */
	assert_true(workers_post(&b0, 1, hold_then_stop, NULL));
	while (!atomic_load(&hold_entered)) {
		struct timespec ms = {0, 1000000};
		nanosleep(&ms, NULL);
	}
	/* worker 1 has taken its mailbox: this one waits in it, behind the loop's end */
	assert_true(workers_post_owned(&b0, 1, owned_run, owned_new(), owned_drop));
	atomic_store(&hold_release, 1);
	workers_join(ws);
	assert_int_equal(atomic_load(&owned_ran), 1);
	assert_int_equal(atomic_load(&owned_dropped), 1);
	assert_int_equal(atomic_load(&owned_stopped), 1);
	/* and one posted to a worker that has stopped is dropped by the poster at once */
	assert_false(workers_post_owned(&b0, 1, owned_run, owned_new(), owned_drop));
	assert_int_equal(atomic_load(&owned_dropped), 2);
	assert_int_equal(atomic_load(&owned_stopped), 2);
	assert_int_equal(atomic_load(&owned_ran), 1);
	s.n = 0;
	assert_int_equal(workers_running(ws), 1);
	workers_each(&b0, record, &s);
	assert_int_equal(s.n, 1); /* worker 0 only: 1 has no loop left to run it on */
	assert_false(workers_post(&b0, 1, stop_loop, NULL));
}

static void test_auth_key_and_login_tallies_are_the_process_s(void **state)
{
	uint8_t k0[32], k1[32], zero[32] = {0};

	(void)state;
	workers_auth_key(&b0, k0, sizeof(k0));
	workers_auth_key(&b1, k1, sizeof(k1));
	assert_memory_equal(k0, k1, sizeof(k0));
	assert_memory_not_equal(k0, zero, sizeof(k0));
	/* no login yet: md5 is not outnumbered */
	assert_false(workers_logins_mostly_scram(&b1, 0));
	workers_count_login(&b0, 0, true);
	/* one worker's SCRAM login is seen from the other; auth_query's are counted apart */
	assert_true(workers_logins_mostly_scram(&b1, 0));
	assert_false(workers_logins_mostly_scram(&b1, 1));
	workers_count_login(&b1, 0, false);
	assert_false(workers_logins_mostly_scram(&b0, 0));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_each_runs_on_every_worker_in_its_own_thread),
	        cmocka_unit_test(test_two_workers_calling_each_at_once_both_finish),
	        cmocka_unit_test(test_post_to_itself_or_nobody_is_refused),
	        cmocka_unit_test(test_limits_never_pass_their_maximum),
	        cmocka_unit_test(test_conn_ids_are_unique_across_threads),
	        cmocka_unit_test(test_a_stopped_worker_keeps_nobody_waiting),
	        cmocka_unit_test(test_auth_key_and_login_tallies_are_the_process_s),
	};
	int rc;

	if (setup(NULL) != 0)
		return 1;
	rc = cmocka_run_group_tests(tests, NULL, NULL);
	teardown(NULL);
	return rc;
}
