/*
 * workers — the event loops of the process and what they share. See include/workers.h.
 *
 * Each worker has a mailbox: a list of messages (fn, arg) under the one mailbox mutex, and an
 * eventfd its loop watches. workers_each() posts a message to each other worker in turn and
 * waits on the condition variable until that worker's loop has run it; while it waits, it runs
 * what others post to its own mailbox, so two workers calling it at once both progress. A
 * worker that has left its loop completes what is posted to it without running it (there is
 * no state left to run it on), so nobody waits for a loop that is gone.
 *
 * The shared limits are atomics, touched when a client or a server connects or goes; the table
 * of per-(database, user), per-database and per-user server counts is looked up under a mutex
 * only when a pool is made or freed.
 */
#include "workers.h"

#include <errno.h>
#include <event2/event.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "bouncer.h"
#include "control.h"
#include "log.h"

struct worker_msg {
	struct worker_msg *next;
	worker_fn fn;
	void *arg;
	bool sync; /* the poster waits for done (and owns the message); else freed here */
	bool done;
	worker_drop_fn drop; /* releases arg when fn cannot run (workers_post_owned()) */
};

struct worker {
	struct workers *ws;
	int index;
	struct bouncer *b;
	int efd;
	struct event *ev;
	pthread_t thread;
	bool started;                    /* a thread of its own was made */
	void (*run)(struct bouncer *b);  /* the thread's body */
	struct worker_msg *first, *last; /* under ws->mu */
	bool stopped;                    /* left its loop (under ws->mu) */
	int ready;                       /* set up: 1, failed: -1 (under ws->mu) */
};

struct worker_limit {
	struct worker_limit *next; /* under ws->limits_mu */
	int refs;                  /* under ws->limits_mu */
	atomic_int count;
	char key[];
};

struct workers {
	int n;
	pthread_mutex_t mu; /* the mailboxes */
	pthread_cond_t cv;  /* a message was done, or a mailbox got one */
	atomic_int clients;
	atomic_uint_fast64_t last_conn_id;
	pthread_mutex_t limits_mu;
	struct worker_limit *limits;
	pthread_mutex_t serial_mu; /* set-up and teardown, one worker at a time */
	pthread_mutex_t change_mu; /* a configuration change (RELOAD, SET), one at a time */
	uint8_t auth_key[64];      /* see workers_auth_key() */
	atomic_uint_fast64_t md5_logins[2], scram_logins[2];
	struct worker w[];
};

int workers_count(const struct bouncer *b)
{
	return b->workers != NULL ? b->workers->n : 1;
}

int worker_index(const struct bouncer *b)
{
	return b->workers != NULL ? b->worker_index : 0;
}

/* ---- mailboxes ------------------------------------------------------------------------------ */

static void wake(struct worker *w)
{
	uint64_t one = 1;

	if (w->efd >= 0 && write(w->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		log_warning("worker %d: cannot wake its loop: %s", w->index, strerror(errno));
}

/* Runs what was posted to w; only w's own thread calls it. */
static void drain(struct worker *w)
{
	struct workers *ws = w->ws;
	struct worker_msg *m, *next;

	pthread_mutex_lock(&ws->mu);
	m = w->first;
	w->first = w->last = NULL;
	pthread_mutex_unlock(&ws->mu);
	for (; m != NULL; m = next) {
		next = m->next;
		m->fn(w->b, m->arg);
		if (m->sync) {
			pthread_mutex_lock(&ws->mu);
			m->done = true; /* the poster may free m once it sees this */
			pthread_cond_broadcast(&ws->cv);
			pthread_mutex_unlock(&ws->mu);
		} else {
			free(m->arg);
			free(m);
		}
	}
}

static void on_mail(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;
	uint64_t v;

	(void)what;
	if (read(fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		log_warning("worker %d: mailbox read failed: %s", w->index, strerror(errno));
	drain(w);
}

/* Queues m for worker to; false when that worker has left its loop (m is not queued). */
static bool post(struct worker *to, struct worker_msg *m)
{
	struct workers *ws = to->ws;

	pthread_mutex_lock(&ws->mu);
	if (to->stopped) {
		pthread_mutex_unlock(&ws->mu);
		return false;
	}
	m->next = NULL;
	if (to->last != NULL)
		to->last->next = m;
	else
		to->first = m;
	to->last = m;
	/* a worker waiting in workers_each() runs its mailbox between waits */
	pthread_cond_broadcast(&ws->cv);
	pthread_mutex_unlock(&ws->mu);
	wake(to);
	return true;
}

/*
 * One turn of waiting in worker me's thread: sleeps until *done (under ws->mu; NULL: never),
 * mail for me, a broadcast or 50 ms, then runs me's mail, so that a worker waiting for another
 * still does what others wait for it to do. Returns *done as it was seen.
 */
static bool wait_a_turn(struct workers *ws, struct worker *me, const bool *done)
{
	struct timespec ts;
	bool finished, mail;

	pthread_mutex_lock(&ws->mu);
	if ((done == NULL || !*done) && me->first == NULL) {
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 50 * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		(void)pthread_cond_timedwait(&ws->cv, &ws->mu, &ts);
	}
	finished = done != NULL && *done;
	mail = me->first != NULL;
	pthread_mutex_unlock(&ws->mu);
	if (mail)
		drain(me);
	return finished;
}

void workers_each(struct bouncer *self, worker_fn fn, void *arg)
{
	struct workers *ws = self->workers;
	struct worker *me;

	if (ws == NULL || ws->n == 1) {
		fn(self, arg);
		return;
	}
	me = &ws->w[self->worker_index];
	for (int i = 0; i < ws->n; i++) {
		struct worker_msg m = {.fn = fn, .arg = arg, .sync = true};

		if (i == self->worker_index) {
			fn(self, arg);
			continue;
		}
		if (!post(&ws->w[i], &m))
			continue; /* gone: nothing left there to run it on */
		while (!wait_a_turn(ws, me, &m.done))
			;
	}
}

/* An unposted arg: released by its drop function, if it has one, then freed. */
static void unposted(void *arg, worker_drop_fn drop, bool stopped)
{
	if (drop != NULL)
		drop(arg, stopped);
	free(arg);
}

bool workers_post_owned(struct bouncer *self, int to, worker_fn fn, void *arg, worker_drop_fn drop)
{
	struct workers *ws = self->workers;
	struct worker_msg *m;

	if (ws == NULL || to < 0 || to >= ws->n || to == self->worker_index) {
		unposted(arg, drop, true);
		return false;
	}
	m = calloc(1, sizeof(*m));
	if (m == NULL) {
		unposted(arg, drop, false);
		return false;
	}
	m->fn = fn;
	m->arg = arg;
	m->drop = drop;
	if (!post(&ws->w[to], m)) {
		free(m);
		unposted(arg, drop, true);
		return false;
	}
	return true;
}

bool workers_post(struct bouncer *self, int to, worker_fn fn, void *arg)
{
	return workers_post_owned(self, to, fn, arg, NULL);
}

/* ---- configuration changes ---------------------------------------------------------------- */

void workers_change_begin(struct bouncer *self)
{
	struct workers *ws = self->workers;

	if (ws == NULL || ws->n == 1)
		return;
	/* the change in progress needs this worker to apply it: wait doing what is posted here */
	while (pthread_mutex_trylock(&ws->change_mu) != 0)
		(void)wait_a_turn(ws, &ws->w[self->worker_index], NULL);
}

void workers_change_end(struct bouncer *self)
{
	struct workers *ws = self->workers;

	if (ws == NULL || ws->n == 1)
		return;
	pthread_mutex_unlock(&ws->change_mu);
	pthread_mutex_lock(&ws->mu);
	pthread_cond_broadcast(&ws->cv); /* a worker waiting for its turn tries again now */
	pthread_mutex_unlock(&ws->mu);
}

/* ---- reload ------------------------------------------------------------------------------- */

void bouncer_reload_one(struct bouncer *w, void *arg)
{
	control_reload_apply(w, arg);
}

void workers_test_after_check(void)
{
#ifdef CASSERT
	/* only in builds made for the tests (--enable-cassert): it renames a file, it sleeps */
	const char *path = getenv("SYNCBOUNCER_TEST_AFTER_CHECK");
	const char *pause = getenv("SYNCBOUNCER_TEST_CHANGE_PAUSE_MS");
	char next[4096];
	int n;

	if (path != NULL && path[0] != '\0') {
		n = snprintf(next, sizeof(next), "%s.next", path);
		if (n > 0 && (size_t)n < sizeof(next) && rename(next, path) == 0)
			log_warning("test hook: %s replaced after the check", path);
	}
	if (pause != NULL && atoi(pause) > 0) {
		struct timespec ts = {.tv_sec = atoi(pause) / 1000,
		                      .tv_nsec = (long)(atoi(pause) % 1000) * 1000000L};

		log_warning("test hook: pausing %s ms after the check", pause);
		while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
			;
	}
#endif
}

bool workers_reload(struct bouncer *self)
{
	struct reload_set *rs;

	workers_change_begin(self);
	rs = control_reload_load(self, workers_count(self));
	if (rs == NULL) {
		workers_change_end(self);
		return false;
	}
	workers_test_after_check();
	/* every worker, self included, applies what self read: nobody reads the files again */
	workers_each(self, bouncer_reload_one, rs);
	workers_change_end(self);
	control_reload_done(rs);
	if (self->workers != NULL)
		log_info("configuration reloaded by every worker");
	return true;
}

/* ---- set-up and the threads ----------------------------------------------------------------- */

struct workers *workers_new(int n)
{
	struct workers *ws;

	if (n < 1 || n > WORKERS_MAX)
		return NULL;
	ws = calloc(1, sizeof(*ws) + (size_t)n * sizeof(struct worker));
	if (ws == NULL)
		return NULL;
	if (getrandom(ws->auth_key, sizeof(ws->auth_key), 0) != (ssize_t)sizeof(ws->auth_key)) {
		free(ws);
		return NULL;
	}
	ws->n = n;
	pthread_mutex_init(&ws->mu, NULL);
	pthread_cond_init(&ws->cv, NULL);
	pthread_mutex_init(&ws->limits_mu, NULL);
	pthread_mutex_init(&ws->serial_mu, NULL);
	pthread_mutex_init(&ws->change_mu, NULL);
	atomic_init(&ws->clients, 0);
	atomic_init(&ws->last_conn_id, 0);
	for (int q = 0; q < 2; q++) {
		atomic_init(&ws->md5_logins[q], 0);
		atomic_init(&ws->scram_logins[q], 0);
	}
	for (int i = 0; i < n; i++) {
		ws->w[i].ws = ws;
		ws->w[i].index = i;
		ws->w[i].efd = -1;
	}
	return ws;
}

void workers_attach(struct workers *ws, int index, struct bouncer *b)
{
	ws->w[index].b = b;
	b->workers = ws;
	b->worker_index = index;
}

bool workers_mailbox_open(struct bouncer *b)
{
	struct worker *w = &b->workers->w[b->worker_index];

	w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (w->efd < 0)
		return false;
	w->ev = event_new(b->base, w->efd, EV_READ | EV_PERSIST, on_mail, w);
	return w->ev != NULL && event_add(w->ev, NULL) == 0;
}

bool workers_ready(struct bouncer *b, bool ok)
{
	struct workers *ws = b->workers;

	pthread_mutex_lock(&ws->mu);
	ws->w[b->worker_index].ready = ok ? 1 : -1;
	pthread_cond_broadcast(&ws->cv);
	pthread_mutex_unlock(&ws->mu);
	return ok;
}

void workers_serial(struct bouncer *b, bool begin)
{
	if (begin)
		pthread_mutex_lock(&b->workers->serial_mu);
	else
		pthread_mutex_unlock(&b->workers->serial_mu);
}

void workers_stopped(struct bouncer *b)
{
	struct workers *ws = b->workers;
	struct worker *w;
	struct worker_msg *m, *next, *unrun = NULL;

	if (ws == NULL)
		return;
	w = &ws->w[b->worker_index];
	pthread_mutex_lock(&ws->mu);
	w->stopped = true;
	m = w->first;
	w->first = w->last = NULL;
	for (; m != NULL; m = next) {
		next = m->next;
		if (m->sync) {
			m->done = true;
		} else {
			m->next = unrun;
			unrun = m;
		}
	}
	pthread_cond_broadcast(&ws->cv);
	pthread_mutex_unlock(&ws->mu);
	/* released outside the mailbox lock: a drop function may take its time (a last write) */
	for (m = unrun; m != NULL; m = next) {
		next = m->next;
		unposted(m->arg, m->drop, true);
		free(m);
	}
	/* the main thread waits for the others with its loop: tell it one is done */
	if (b->worker_index != 0)
		wake(&ws->w[0]);
}

int workers_running(struct workers *ws)
{
	int n = 0;

	pthread_mutex_lock(&ws->mu);
	for (int i = 0; i < ws->n; i++)
		n += !ws->w[i].stopped;
	pthread_mutex_unlock(&ws->mu);
	return n;
}

static void *thread_main(void *arg)
{
	struct worker *w = arg;
	char name[16];

	/* what ps -L and /proc/PID/task/TID/comm show */
	snprintf(name, sizeof(name), "sb-worker-%d", w->index % WORKERS_MAX);
	(void)pthread_setname_np(pthread_self(), name);

	w->run(w->b);
	return NULL;
}

bool workers_start(struct workers *ws, void (*run)(struct bouncer *b))
{
	sigset_t all, old;
	bool ok = true;

	/* signals are worker 0's: the other threads never take one */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	/* one at a time: a worker's set-up runs alone, as worker 0's did */
	for (int i = 1; i < ws->n && ok; i++) {
		struct worker *w = &ws->w[i];
		int rc;

		w->run = run;
		rc = pthread_create(&w->thread, NULL, thread_main, w);
		if (rc != 0) {
			log_error("cannot start worker %d: %s", i, strerror(rc));
			ok = false;
			break;
		}
		w->started = true;
		pthread_mutex_lock(&ws->mu);
		while (w->ready == 0)
			pthread_cond_wait(&ws->cv, &ws->mu);
		ok = w->ready > 0;
		pthread_mutex_unlock(&ws->mu);
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return ok;
}

void workers_join(struct workers *ws)
{
	for (int i = 1; i < ws->n; i++)
		if (ws->w[i].started) {
			pthread_join(ws->w[i].thread, NULL);
			ws->w[i].started = false;
		}
}

void workers_detach(struct bouncer *b)
{
	struct workers *ws = b->workers;
	struct worker *w;

	if (ws == NULL)
		return;
	w = &ws->w[b->worker_index];
	if (w->ev != NULL)
		event_free(w->ev);
	w->ev = NULL;
	if (w->efd >= 0)
		close(w->efd);
	w->efd = -1;
}

void workers_free(struct workers *ws)
{
	if (ws == NULL)
		return;
	while (ws->limits != NULL) {
		struct worker_limit *next = ws->limits->next;
		free(ws->limits);
		ws->limits = next;
	}
	pthread_mutex_destroy(&ws->mu);
	pthread_cond_destroy(&ws->cv);
	pthread_mutex_destroy(&ws->limits_mu);
	pthread_mutex_destroy(&ws->serial_mu);
	pthread_mutex_destroy(&ws->change_mu);
	explicit_bzero(ws->auth_key, sizeof(ws->auth_key));
	free(ws);
}

/* ---- global limits -------------------------------------------------------------------------- */

int workers_clients_add(struct bouncer *b, int delta)
{
	return atomic_fetch_add(&b->workers->clients, delta) + delta;
}

uint64_t workers_next_conn_id(struct bouncer *b)
{
	return atomic_fetch_add(&b->workers->last_conn_id, 1) + 1;
}

struct worker_limit *workers_limit_get(struct bouncer *b, char kind, const char *db,
                                       const char *user)
{
	struct workers *ws = b->workers;
	char key[160];
	int len;
	struct worker_limit *l;

	len = snprintf(key, sizeof(key), "%c/%s/%s", kind, db != NULL ? db : "",
	               user != NULL ? user : "");
	if (len < 0 || (size_t)len >= sizeof(key))
		return NULL;
	pthread_mutex_lock(&ws->limits_mu);
	for (l = ws->limits; l != NULL; l = l->next)
		if (strcmp(l->key, key) == 0)
			break;
	if (l == NULL) {
		l = calloc(1, sizeof(*l) + (size_t)len + 1);
		if (l != NULL) {
			memcpy(l->key, key, (size_t)len + 1);
			atomic_init(&l->count, 0);
			l->next = ws->limits;
			ws->limits = l;
		}
	}
	if (l != NULL)
		l->refs++;
	pthread_mutex_unlock(&ws->limits_mu);
	return l;
}

void workers_limit_put(struct bouncer *b, struct worker_limit *lim)
{
	struct workers *ws = b->workers;
	struct worker_limit **pp;

	if (lim == NULL)
		return;
	pthread_mutex_lock(&ws->limits_mu);
	if (--lim->refs == 0 && atomic_load(&lim->count) == 0) {
		for (pp = &ws->limits; *pp != NULL; pp = &(*pp)->next)
			if (*pp == lim) {
				*pp = lim->next;
				free(lim);
				break;
			}
	}
	pthread_mutex_unlock(&ws->limits_mu);
}

bool workers_limit_take(struct worker_limit *lim, int max)
{
	int n = atomic_load(&lim->count);

	do {
		if (n >= max)
			return false;
	} while (!atomic_compare_exchange_weak(&lim->count, &n, n + 1));
	return true;
}

void workers_limit_give(struct worker_limit *lim)
{
	atomic_fetch_sub(&lim->count, 1);
}

int workers_limit_count(const struct worker_limit *lim)
{
	return atomic_load(&((struct worker_limit *)lim)->count);
}

/* ---- what logins share ---------------------------------------------------------------------- */

void workers_auth_key(struct bouncer *b, void *key, size_t len)
{
	struct workers *ws = b->workers;

	if (len > sizeof(ws->auth_key))
		len = sizeof(ws->auth_key);
	memcpy(key, ws->auth_key, len); /* written once, before any worker runs */
}

void workers_count_login(struct bouncer *b, int queried, bool scram)
{
	struct workers *ws = b->workers;

	atomic_fetch_add(scram ? &ws->scram_logins[queried != 0] : &ws->md5_logins[queried != 0],
	                 1);
}

bool workers_logins_mostly_scram(struct bouncer *b, int queried)
{
	struct workers *ws = b->workers;

	return atomic_load(&ws->scram_logins[queried != 0]) >
	       atomic_load(&ws->md5_logins[queried != 0]);
}
