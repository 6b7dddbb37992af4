/*
 * control — see include/control.h. Per-database flags are kept by name (a database may have
 * several pools, one per user, and may have none yet), in a small array that only grows with
 * the number of databases an admin has touched.
 *
 * With several workers each has its own control state, kept the same on all: the commands
 * here act on the worker they are given, and the console and the signals run them on every
 * worker (workers_each(), worker 0 first, which alone logs "... command issued"). What a
 * waiting command waits for (servers released, bytes flushed, servers closed) is counted over
 * every worker, by the tick of the worker where its admin is; worker 0 tells the service
 * manager the status and undoes a SUSPEND whose admin left, looking at every worker.
 */
#include "control.h"

#include <event2/event.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "auth.h"
#include "bouncer.h"
#include "client.h"
#include "config.h"
#include "conn.h"
#include "listener.h"
#include "log.h"
#include "module.h"
#include "pool.h"
#include "sdnotify.h"
#include "server.h"
#include "stats.h"
#include "ticker.h"
#include "tls.h"
#include "userlist.h"
#include "workers.h"

#define CONTROL_TICK_USEC 100000
#define CONTROL_MAX_DBS   4096
#define CONTROL_MAX_WAIT  256

struct db_flags {
	char name[64];
	bool paused, disabled;
	bool removed; /* gone from the config at the last RELOAD */
};

struct waiter {
	uint64_t conn_id;
	enum control_wait what;
	char db[64]; /* "" = all */
};

struct control {
	struct bouncer *b;
	enum control_mode mode;
	enum control_shutdown shutdown;
	struct db_flags *dbs;
	int ndbs, cap;
	struct waiter waiters[CONTROL_MAX_WAIT];
	int nwaiters;
	struct tick tick;
	uint64_t suspend_start;
	void (*after_reload)(struct bouncer *b);
	/* the last STATUS= told to the service manager, and when */
	char status[96];
	uint64_t status_usec;
};

const char *control_mode_str(enum control_mode m)
{
	switch (m) {
	case CONTROL_RUNNING:
		return "running";
	case CONTROL_PAUSED:
		return "paused";
	case CONTROL_SUSPENDED:
		return "suspended";
	}
	return "?";
}

const char *control_shutdown_str(enum control_shutdown s)
{
	switch (s) {
	case CONTROL_SHUTDOWN_NONE:
		return "none";
	case CONTROL_SHUTDOWN_IMMEDIATE:
		return "immediate";
	case CONTROL_SHUTDOWN_WAIT_FOR_SERVERS:
		return "wait_for_servers";
	case CONTROL_SHUTDOWN_WAIT_FOR_CLIENTS:
		return "wait_for_clients";
	}
	return "?";
}

const char *control_wait_str(enum control_wait w)
{
	switch (w) {
	case CONTROL_WAIT_PAUSE:
		return "pause";
	case CONTROL_WAIT_SUSPEND:
		return "suspend";
	case CONTROL_WAIT_CLOSE:
		return "wait_close";
	}
	return "?";
}

/* A command's log line, once for the pooler: by worker 0, the first to run every command. */
#define log_once(b, ...)                                                                           \
	do {                                                                                       \
		if (worker_index(b) == 0)                                                          \
			log_info(__VA_ARGS__);                                                     \
	} while (0)

static struct db_flags *find_db(const struct control *ctl, const char *name)
{
	for (int i = 0; i < ctl->ndbs; i++)
		if (strcmp(ctl->dbs[i].name, name) == 0)
			return &ctl->dbs[i];
	return NULL;
}

static struct db_flags *get_db(struct control *ctl, const char *name)
{
	struct db_flags *f = find_db(ctl, name);

	if (f != NULL)
		return f;
	if (strlen(name) >= sizeof(f->name) || ctl->ndbs >= CONTROL_MAX_DBS)
		return NULL;
	if (ctl->ndbs == ctl->cap) {
		int cap = ctl->cap ? ctl->cap * 2 : 8;
		struct db_flags *n = realloc(ctl->dbs, (size_t)cap * sizeof(*n));
		if (n == NULL)
			return NULL;
		ctl->dbs = n;
		ctl->cap = cap;
	}
	f = &ctl->dbs[ctl->ndbs++];
	memset(f, 0, sizeof(*f));
	snprintf(f->name, sizeof(f->name), "%s", name);
	return f;
}

bool control_db_disabled(const struct bouncer *b, const char *db)
{
	const struct db_flags *f = b->control ? find_db(b->control, db) : NULL;

	return f != NULL && f->disabled;
}

bool control_login_refused(const struct bouncer *b, const char *db, char *msg, size_t size)
{
	const struct db_flags *f = b->control ? find_db(b->control, db) : NULL;

	if (f == NULL)
		return false;
	if (f->removed)
		snprintf(msg, size, "no such database: %s", db);
	else if (f->disabled)
		snprintf(msg, size, "database \"%s\" is disabled", db);
	else
		return false;
	return true;
}

bool control_db_paused(const struct bouncer *b, const char *db)
{
	const struct db_flags *f = b->control ? find_db(b->control, db) : NULL;

	return f != NULL && f->paused;
}

enum control_mode control_mode(const struct bouncer *b)
{
	return b->control ? b->control->mode : CONTROL_RUNNING;
}

enum control_shutdown control_shutdown_mode(const struct bouncer *b)
{
	return b->control ? b->control->shutdown : CONTROL_SHUTDOWN_NONE;
}

bool control_pool_paused(const struct pool *pool)
{
	const struct control *ctl = pool->b->control;

	if (ctl == NULL)
		return false;
	return ctl->mode != CONTROL_RUNNING || control_db_paused(pool->b, pool->db_name);
}

bool control_server_close_needed(const struct conn *server)
{
	return server->close_needed || control_pool_paused(server->pool);
}

/* A database name an admin may act on: configured (or covered by "*"), never the console. */
static const char *check_db(struct bouncer *b, const char *db, const char *verb)
{
	static _Thread_local char msg[160]; /* per worker's thread */

	if (config_find_database(b->cfg, db) == NULL && !admin_is_console_db(db)) {
		snprintf(msg, sizeof(msg), "no such database: %s", db);
		return msg;
	}
	if (admin_is_console_db(db)) {
		snprintf(msg, sizeof(msg), "cannot %s admin db: %s", verb, db);
		return msg;
	}
	return NULL;
}

static bool pool_matches(const struct pool *pool, const char *db)
{
	return db == NULL || db[0] == '\0' || strcmp(pool->db_name, db) == 0;
}

/* Servers that are still busy (linked, being reset or tested) in the pools of db. */
static int busy_servers(struct bouncer *b, const char *db)
{
	struct list *it;
	int n = 0;

	list_for_each(it, &b->pools)
	{
		const struct pool *pool = list_entry(it, struct pool, head);
		if (!pool_matches(pool, db))
			continue;
		n += (int)(list_count(&pool->active_servers) + list_count(&pool->used_servers) +
		           list_count(&pool->tested_servers));
	}
	/* a synced-table write in flight holds a database connection of its own */
	return n + modules_in_flight(b, db);
}

static int db_servers(struct bouncer *b, const char *db)
{
	struct list *it;
	int n = 0;

	list_for_each(it, &b->pools)
	{
		const struct pool *pool = list_entry(it, struct pool, head);
		if (pool_matches(pool, db))
			n += pool_server_count(pool);
	}
	return n;
}

static int close_needed_servers(struct bouncer *b, const char *db)
{
	static const size_t offs[] = {
	        offsetof(struct pool, idle_servers),  offsetof(struct pool, active_servers),
	        offsetof(struct pool, used_servers),  offsetof(struct pool, tested_servers),
	        offsetof(struct pool, login_servers),
	};
	struct list *it, *sit;
	int n = 0;

	list_for_each(it, &b->pools)
	{
		struct pool *pool = list_entry(it, struct pool, head);
		if (!pool_matches(pool, db))
			continue;
		for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
			struct list *l = (struct list *)((char *)pool + offs[i]);
			list_for_each(sit, l)
			{
				n += list_entry(sit, struct conn, head)->close_needed;
			}
		}
	}
	return n;
}

static void close_list(struct list *l, const char *reason, bool only_close_needed)
{
	struct list *it, *tmp;

	list_for_each_safe(it, tmp, l)
	{
		struct conn *s = list_entry(it, struct conn, head);
		if (!only_close_needed || s->close_needed)
			server_close(s, reason);
	}
}

static int live_clients(struct bouncer *b)
{
	struct list *it;
	int n = (int)list_count(&b->login_clients);

	list_for_each(it, &b->pools)
	{
		n += pool_client_count(list_entry(it, struct pool, head));
	}
	return n;
}

static int live_servers(struct bouncer *b)
{
	struct list *it;
	int n = 0;

	list_for_each(it, &b->pools)
	{
		n += pool_server_count(list_entry(it, struct pool, head));
	}
	/* a synced-table write in flight holds a database connection of its own */
	return n + modules_in_flight(b, NULL);
}

static void for_each_sbuf(struct bouncer *b, bool pause)
{
	static const size_t offs[] = {
	        offsetof(struct pool, active_clients), offsetof(struct pool, waiting_clients),
	        offsetof(struct pool, login_clients),  offsetof(struct pool, idle_servers),
	        offsetof(struct pool, active_servers), offsetof(struct pool, used_servers),
	        offsetof(struct pool, tested_servers), offsetof(struct pool, login_servers),
	};
	struct list *it, *cit, *tmp;

	list_for_each(it, &b->pools)
	{
		struct pool *pool = list_entry(it, struct pool, head);
		for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
			struct list *l = (struct list *)((char *)pool + offs[i]);
			list_for_each_safe(cit, tmp, l)
			{
				struct conn *c = list_entry(cit, struct conn, head);
				if (c->sbuf.fd < 0)
					continue;
				if (pause)
					sbuf_pause(&c->sbuf);
				else
					sbuf_resume(&c->sbuf);
			}
		}
	}
}

/*
 * Whether every relayed byte has left: what a SUSPEND waits for. Past suspend_timeout the
 * connections that still hold bytes are dropped instead, as pgbouncer does.
 */
static bool all_flushed(struct bouncer *b)
{
	const struct control *ctl = b->control;
	int64_t limit = b->cfg->suspend_timeout;
	bool give_up = limit > 0 && bouncer_now_usec() - ctl->suspend_start > (uint64_t)limit;
	static const size_t offs[] = {
	        offsetof(struct pool, active_clients), offsetof(struct pool, waiting_clients),
	        offsetof(struct pool, idle_servers),   offsetof(struct pool, active_servers),
	        offsetof(struct pool, used_servers),   offsetof(struct pool, tested_servers),
	};
	struct list *it, *cit;

	list_for_each(it, &b->pools)
	{
		struct pool *pool = list_entry(it, struct pool, head);
		for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
			struct list *l = (struct list *)((char *)pool + offs[i]);
			list_for_each(cit, l)
			{
				struct conn *c = list_entry(cit, struct conn, head);
				if (!sbuf_has_pending(&c->sbuf) && sbuf_out_empty(&c->sbuf))
					continue;
				if (!give_up)
					return false;
				if (c->is_server)
					server_close(c, "suspend_timeout");
				else
					client_fatal(c, "08P01", "suspend_timeout");
				return false; /* the lists changed: look again at the next tick */
			}
		}
	}
	return true;
}

/* ---- counting over every worker ---- */

struct count_arg {
	const char *db;
	int n, m;
	bool flushed;
};

static void count_busy(struct bouncer *w, void *arg)
{
	struct count_arg *ca = arg;

	ca->n += busy_servers(w, ca->db);
}

/* clients in n, servers in m */
static void count_live(struct bouncer *w, void *arg)
{
	struct count_arg *ca = arg;

	ca->n += live_clients(w);
	ca->m += live_servers(w);
}

static void count_close_needed(struct bouncer *w, void *arg)
{
	struct count_arg *ca = arg;

	ca->n += close_needed_servers(w, ca->db);
}

static void check_flushed(struct bouncer *w, void *arg)
{
	struct count_arg *ca = arg;

	/* every worker looks (and drops what suspend_timeout gives up on), even after a "no" */
	if (w->control != NULL && !all_flushed(w))
		ca->flushed = false;
}

static void count_admins(struct bouncer *w, void *arg)
{
	if (admin_find_client(w, 0) != NULL)
		((struct count_arg *)arg)->n++;
}

/* fn's count over every worker's state (db "" or NULL = all databases). */
static int count_all(struct bouncer *b, worker_fn fn, const char *db)
{
	struct count_arg ca = {db, 0, 0, true};

	workers_each(b, fn, &ca);
	return ca.n;
}

static void full_resume(struct control *ctl)
{
	struct bouncer *b = ctl->b;
	enum control_mode was = ctl->mode;
	struct list *it;

	ctl->mode = CONTROL_RUNNING;
	if (was == CONTROL_SUSPENDED) {
		for_each_sbuf(b, false);
		if (ctl->shutdown == CONTROL_SHUTDOWN_NONE)
			listener_pause(b, false);
	}
	list_for_each(it, &b->pools)
	{
		pool_fill(list_entry(it, struct pool, head));
	}
}

/* As a worker_fn: w leaves PAUSE or SUSPEND. */
static void resume_worker(struct bouncer *w, void *arg)
{
	(void)arg;
	if (w->control != NULL && w->control->mode != CONTROL_RUNNING)
		full_resume(w->control);
}

/* Whether what the admin waits for is done on every worker. */
static bool waiter_done(struct control *ctl, const struct waiter *w)
{
	struct bouncer *b = ctl->b;
	struct count_arg ca = {w->db, 0, 0, true};

	switch (w->what) {
	case CONTROL_WAIT_PAUSE:
		return count_all(b, count_busy, w->db) == 0;
	case CONTROL_WAIT_SUSPEND:
		workers_each(b, check_flushed, &ca);
		return ca.flushed;
	case CONTROL_WAIT_CLOSE:
		return count_all(b, count_close_needed, w->db) == 0;
	}
	return true;
}

static const char *waiter_tag(const struct waiter *w)
{
	switch (w->what) {
	case CONTROL_WAIT_PAUSE:
		return "PAUSE";
	case CONTROL_WAIT_SUSPEND:
		return "SUSPEND";
	case CONTROL_WAIT_CLOSE:
		return "WAIT_CLOSE";
	}
	return "?";
}

/* STATUS= for the service manager (systemctl status): state and counts, when they change. */
static void tell_status(struct control *ctl)
{
	struct bouncer *b = ctl->b;
	uint64_t now = bouncer_now_usec();
	char status[sizeof(ctl->status)];
	struct count_arg live = {NULL, 0, 0, true};

	/* one status for the process: worker 0 tells it, with every worker's counts */
	if (now - ctl->status_usec < 1000000 || worker_index(b) != 0)
		return;
	workers_each(b, count_live, &live);
	if (ctl->shutdown != CONTROL_SHUTDOWN_NONE)
		snprintf(status, sizeof(status), "shutting down (%s): %d clients, %d servers",
		         control_shutdown_str(ctl->shutdown), live.n, live.m);
	else
		snprintf(status, sizeof(status), "%s: %d clients, %d servers",
		         ctl->mode == CONTROL_RUNNING ? "accepting connections"
		                                      : control_mode_str(ctl->mode),
		         live.n, live.m);
	if (strcmp(status, ctl->status) == 0)
		return;
	memcpy(ctl->status, status, sizeof(status));
	ctl->status_usec = now;
	(void)sdnotify("STATUS=%s", status);
}

static void tick(void *arg)
{
	struct control *ctl = arg;
	struct bouncer *b = ctl->b;
	struct list *it, *tmp;

	list_for_each_safe(it, tmp, &b->pools)
	{
		struct pool *pool = list_entry(it, struct pool, head);
		if (control_pool_paused(pool) && ctl->mode != CONTROL_SUSPENDED) {
			close_list(&pool->idle_servers, "pause mode", false);
			close_list(&pool->login_servers, "pause mode", false);
		} else {
			close_list(&pool->idle_servers, "server needs to reconnect", true);
		}
	}
	for (int i = 0; i < ctl->nwaiters;) {
		struct waiter w = ctl->waiters[i];
		bool alive = admin_find_client(b, w.conn_id) != NULL;
		if (alive && !waiter_done(ctl, &w)) {
			i++;
			continue;
		}
		/* off the list first: the answer resumes the admin, whose next command may wait */
		ctl->waiters[i] = ctl->waiters[--ctl->nwaiters];
		if (alive)
			admin_command_done(b, w.conn_id, waiter_tag(&w));
	}
	/* worker 0 looks for an admin on every worker, and resumes them all */
	if (ctl->mode == CONTROL_SUSPENDED && ctl->shutdown == CONTROL_SHUTDOWN_NONE &&
	    worker_index(b) == 0 && count_all(b, count_admins, NULL) == 0) {
		log_info("admin disappeared when suspended, doing RESUME");
		workers_each(b, resume_worker, NULL);
	}
	tell_status(ctl);
	switch (ctl->shutdown) {
	case CONTROL_SHUTDOWN_WAIT_FOR_SERVERS:
		list_for_each(it, &b->pools)
		{
			struct pool *pool = list_entry(it, struct pool, head);
			struct list *cit, *ctmp;
			list_for_each_safe(cit, ctmp, &pool->waiting_clients)
			        client_fatal(list_entry(cit, struct conn, head), "08P01",
			                     "server shutting down");
		}
		if (live_servers(b) == 0) {
			log_info("server connections dropped, exiting");
			b->shutting_down = true;
			event_base_loopbreak(b->base);
		}
		break;
	case CONTROL_SHUTDOWN_WAIT_FOR_CLIENTS:
		if (live_clients(b) == 0) {
			log_info("client connections dropped, exiting");
			b->shutting_down = true;
			event_base_loopbreak(b->base);
		}
		break;
	case CONTROL_SHUTDOWN_IMMEDIATE:
	case CONTROL_SHUTDOWN_NONE:
		break;
	}
}

bool control_init(struct bouncer *b, void (*after_reload)(struct bouncer *b))
{
	struct control *ctl = calloc(1, sizeof(*ctl));

	if (ctl == NULL)
		return false;
	ctl->b = b;
	ctl->after_reload = after_reload;
	tick_init(&ctl->tick, tick, ctl);
	if (!tick_start(b, &ctl->tick, CONTROL_TICK_USEC)) {
		free(ctl);
		return false;
	}
	b->control = ctl;
	return true;
}

void control_free(struct bouncer *b)
{
	struct control *ctl = b->control;

	if (ctl == NULL)
		return;
	tick_stop(b, &ctl->tick);
	free(ctl->dbs);
	free(ctl);
	b->control = NULL;
}

bool control_wait_for(struct bouncer *b, uint64_t conn_id, enum control_wait what, const char *db)
{
	struct control *ctl = b->control;
	struct waiter *w;

	if (ctl->nwaiters >= CONTROL_MAX_WAIT)
		return false;
	w = &ctl->waiters[ctl->nwaiters++];
	w->conn_id = conn_id;
	w->what = what;
	snprintf(w->db, sizeof(w->db), "%s", db != NULL ? db : "");
	return true;
}

bool control_wait_cancel(struct bouncer *b, uint64_t conn_id)
{
	struct control *ctl = b->control;
	bool paused = false;

	for (int i = 0; i < ctl->nwaiters;) {
		if (ctl->waiters[i].conn_id != conn_id) {
			i++;
			continue;
		}
		paused = paused || ctl->waiters[i].what != CONTROL_WAIT_CLOSE;
		ctl->waiters[i] = ctl->waiters[--ctl->nwaiters];
	}
	return paused;
}

const char *control_pause(struct bouncer *b, const char *db, bool *wait)
{
	struct control *ctl = b->control;
	const char *err;
	struct db_flags *f;

	*wait = false;
	if (ctl->mode != CONTROL_RUNNING)
		return "already suspended/paused";
	if (db == NULL || db[0] == '\0') {
		log_once(b, "PAUSE command issued");
		ctl->mode = CONTROL_PAUSED;
		*wait = live_servers(b) > 0;
		return NULL;
	}
	log_once(b, "PAUSE '%s' command issued", db);
	if ((err = check_db(b, db, "pause")) != NULL)
		return err;
	f = get_db(ctl, db);
	if (f == NULL)
		return "out of memory";
	f->paused = true;
	*wait = db_servers(b, db) > 0;
	return NULL;
}

const char *control_resume(struct bouncer *b, const char *db)
{
	struct control *ctl = b->control;
	struct db_flags *f;
	struct list *it;

	if (db == NULL || db[0] == '\0') {
		log_once(b, "RESUME command issued");
		if (ctl->shutdown != CONTROL_SHUTDOWN_NONE)
			return "pooler is shutting down";
		if (ctl->mode == CONTROL_RUNNING)
			return "pooler is not paused/suspended";
		full_resume(ctl);
		return NULL;
	}
	log_once(b, "RESUME '%s' command issued", db);
	if (config_find_database(b->cfg, db) == NULL && !admin_is_console_db(db)) {
		static _Thread_local char msg[160]; /* per worker's thread */
		snprintf(msg, sizeof(msg), "no such database: %s", db);
		return msg;
	}
	f = find_db(ctl, db);
	if (f == NULL || !f->paused) {
		static _Thread_local char msg[160]; /* per worker's thread */
		snprintf(msg, sizeof(msg), "database %s is not paused", db);
		return msg;
	}
	f->paused = false;
	list_for_each(it, &b->pools)
	{
		struct pool *pool = list_entry(it, struct pool, head);
		if (pool_matches(pool, db))
			pool_fill(pool);
	}
	return NULL;
}

const char *control_suspend(struct bouncer *b, bool *wait)
{
	struct control *ctl = b->control;

	*wait = false;
	if (ctl->mode != CONTROL_RUNNING)
		return "already suspended/paused";
	for (int i = 0; i < ctl->ndbs; i++)
		if (ctl->dbs[i].paused)
			return "cannot suspend with paused databases";
	log_once(b, "SUSPEND command issued");
	ctl->mode = CONTROL_SUSPENDED;
	ctl->suspend_start = bouncer_now_usec();
	listener_pause(b, true);
	for_each_sbuf(b, true);
	*wait = true;
	return NULL;
}

const char *control_disable(struct bouncer *b, const char *db)
{
	const char *err;
	struct db_flags *f;

	if (db == NULL || db[0] == '\0')
		return "a database is required";
	log_once(b, "DISABLE '%s' command issued", db);
	if ((err = check_db(b, db, "disable")) != NULL)
		return err;
	f = get_db(b->control, db);
	if (f == NULL)
		return "out of memory";
	f->disabled = true;
	return NULL;
}

const char *control_enable(struct bouncer *b, const char *db)
{
	const char *err;
	struct db_flags *f;

	if (db == NULL || db[0] == '\0')
		return "a database is required";
	log_once(b, "ENABLE '%s' command issued", db);
	if ((err = check_db(b, db, "enable")) != NULL)
		return err;
	f = find_db(b->control, db);
	if (f != NULL)
		f->disabled = false;
	return NULL;
}

static void kill_pool(struct pool *pool)
{
	static const char reason[] = "database removed";
	struct list *it, *tmp;

	list_for_each_safe(it, tmp, &pool->active_clients)
	        client_fatal(list_entry(it, struct conn, head), "08P01", reason);
	list_for_each_safe(it, tmp, &pool->waiting_clients)
	        client_fatal(list_entry(it, struct conn, head), "08P01", reason);
	list_for_each_safe(it, tmp, &pool->login_clients)
	        client_fatal(list_entry(it, struct conn, head), "08P01", reason);
	auth_pool_fail_waiting(pool, "08P01", reason);
	close_list(&pool->active_servers, reason, false);
	close_list(&pool->idle_servers, reason, false);
	close_list(&pool->used_servers, reason, false);
	close_list(&pool->tested_servers, reason, false);
	close_list(&pool->login_servers, reason, false);
}

const char *control_kill(struct bouncer *b, const char *db)
{
	struct control *ctl = b->control;
	struct list *it, *tmp;
	const char *err;

	if (ctl->mode != CONTROL_RUNNING)
		return "already suspended/paused";
	if (db != NULL && db[0] != '\0') {
		log_once(b, "KILL '%s' command issued", db);
		if ((err = check_db(b, db, "kill")) != NULL)
			return err;
	} else {
		log_once(b, "KILL command issued");
	}
	list_for_each_safe(it, tmp, &b->pools)
	{
		struct pool *pool = list_entry(it, struct pool, head);
		struct db_flags *f;
		if (!pool_matches(pool, db))
			continue;
		f = get_db(ctl, pool->db_name);
		if (f != NULL)
			f->paused = true;
		kill_pool(pool);
	}
	if (db != NULL && db[0] != '\0') {
		struct db_flags *f = get_db(ctl, db);
		if (f == NULL)
			return "out of memory";
		f->paused = true;
	}
	return NULL;
}

/*
 * RECONNECT: a server closes once released. An idle one is released already: it closes now, as
 * in pgbouncer, rather than wait in the idle list for the next client to be handed it.
 */
static void tag_servers(struct pool *pool)
{
	struct list *lists[] = {&pool->active_servers, &pool->used_servers, &pool->tested_servers,
	                        &pool->login_servers};
	struct list *it;

	close_list(&pool->idle_servers, "obsolete connection", false);
	for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++)
		list_for_each(it, lists[i])
		{
			list_entry(it, struct conn, head)->close_needed = true;
		}
}

const char *control_reconnect(struct bouncer *b, const char *db)
{
	struct list *it;
	const char *err;

	if (db != NULL && db[0] != '\0') {
		log_once(b, "RECONNECT '%s' command issued", db);
		if ((err = check_db(b, db, "reconnect")) != NULL)
			return err;
	} else {
		log_once(b, "RECONNECT command issued");
	}
	list_for_each(it, &b->pools)
	{
		struct pool *pool = list_entry(it, struct pool, head);
		if (pool_matches(pool, db))
			tag_servers(pool);
	}
	return NULL;
}

const char *control_wait_close(struct bouncer *b, const char *db, bool *wait)
{
	const char *err;

	*wait = false;
	if (db != NULL && db[0] != '\0') {
		log_once(b, "WAIT_CLOSE '%s' command issued", db);
		if ((err = check_db(b, db, "wait in")) != NULL)
			return err;
	} else {
		log_once(b, "WAIT_CLOSE command issued");
	}
	*wait = close_needed_servers(b, db) > 0;
	return NULL;
}

void control_shutdown(struct bouncer *b, enum control_shutdown mode)
{
	struct control *ctl = b->control;

	/* once for the process: every worker runs this, worker 0 first */
	if (ctl->shutdown == CONTROL_SHUTDOWN_NONE && worker_index(b) == 0)
		(void)sdnotify("STOPPING=1");
	if (ctl->shutdown != CONTROL_SHUTDOWN_NONE || mode == CONTROL_SHUTDOWN_IMMEDIATE) {
		log_once(b, "shutting down immediately");
		ctl->shutdown = CONTROL_SHUTDOWN_IMMEDIATE;
		b->shutting_down = true;
		event_base_loopbreak(b->base);
		return;
	}
	ctl->shutdown = mode;
	if (mode == CONTROL_SHUTDOWN_WAIT_FOR_SERVERS) {
		log_once(b, "SHUTDOWN WAIT_FOR_SERVERS command issued");
		if (ctl->mode == CONTROL_SUSPENDED)
			for_each_sbuf(b, false);
		ctl->mode = CONTROL_PAUSED;
	} else {
		log_once(b, "SHUTDOWN WAIT_FOR_CLIENTS command issued");
	}
	/* new clients are refused from now on; the connected ones keep going */
	listener_stop(b);
}

/* The server-side connection settings of a pool as the given config describes them. */
struct conninfo {
	const char *host, *server_db, *server_user, *password, *connect_query;
	int port;
	struct param_set startup;
};

static bool conninfo_of(const struct config *cfg, const struct userlist *users,
                        const struct pool *pool, struct conninfo *ci)
{
	const struct cf_database *db = config_find_database(cfg, pool->db_name);
	bool forced;

	memset(ci, 0, sizeof(*ci));
	if (db == NULL)
		return false;
	ci->host = db->host[0] ? db->host : cfg->unix_socket_dir;
	ci->port = db->port;
	ci->server_db = db->dbname[0] ? db->dbname : pool->db_name;
	/* the auth pool logs in as auth_user whatever user the entry forces (as in pool.c) */
	forced = db->user[0] && (!pool->auth_pool || strcmp(db->user, pool->user_name) == 0);
	ci->server_user = forced ? db->user : pool->user_name;
	if (forced && db->password[0])
		ci->password = db->password;
	else if (users != NULL)
		ci->password = userlist_get_password(users, ci->server_user);
	if (ci->password == NULL)
		ci->password = "";
	ci->connect_query = db->connect_query;
	if ((db->client_encoding[0] &&
	     !param_set_value(&ci->startup, "client_encoding", db->client_encoding)) ||
	    (db->datestyle[0] && !param_set_value(&ci->startup, "datestyle", db->datestyle)) ||
	    (db->timezone[0] && !param_set_value(&ci->startup, "timezone", db->timezone)) ||
	    (db->application_name[0] &&
	     !param_set_value(&ci->startup, "application_name", db->application_name))) {
		param_clear(&ci->startup);
		return false;
	}
	return true;
}

static bool same_params(const struct param_set *a, const struct param_set *b)
{
	if (a->n != b->n)
		return false;
	for (int i = 0; i < a->n; i++) {
		const char *v = param_get(b, a->p[i].name);
		if (v == NULL || strcmp(v, a->p[i].value) != 0)
			return false;
	}
	return true;
}

static bool replace_str(char **dst, const char *src)
{
	char *n = strdup(src);

	if (n == NULL)
		return false;
	free(*dst);
	*dst = n;
	return true;
}

/* Points pool at the new settings; its old servers close once released. */
static void refresh_pool(struct bouncer *b, struct pool *pool)
{
	struct conninfo ci;
	bool moved;

	if (config_find_database(b->cfg, pool->db_name) == NULL) {
		struct db_flags *f = get_db(b->control, pool->db_name);
		if (f != NULL && !f->removed) {
			log_info("database %s removed from the config", pool->db_name);
			f->removed = true;
		}
		kill_pool(pool);
		return;
	}
	{
		struct db_flags *f = find_db(b->control, pool->db_name);
		if (f != NULL)
			f->removed = false;
	}
	if (!conninfo_of(b->cfg, b->users, pool, &ci))
		return;
	moved = strcmp(ci.host, pool->host) != 0 || ci.port != pool->port ||
	        strcmp(ci.server_db, pool->server_db) != 0 ||
	        strcmp(ci.server_user, pool->server_user) != 0 ||
	        strcmp(ci.connect_query, pool->connect_query) != 0 ||
	        !same_params(&ci.startup, &pool->server_startup);
	if (!replace_str(&pool->server_password, ci.password))
		log_warning("out of memory refreshing the pool of %s", pool->db_name);
	if (moved) {
		if (!replace_str(&pool->host, ci.host) ||
		    !replace_str(&pool->server_db, ci.server_db) ||
		    !replace_str(&pool->server_user, ci.server_user) ||
		    !replace_str(&pool->connect_query, ci.connect_query)) {
			log_warning("out of memory refreshing the pool of %s", pool->db_name);
		} else {
			pool->port = ci.port;
			param_clear(&pool->server_startup);
			pool->server_startup = ci.startup;
			memset(&ci.startup, 0, sizeof(ci.startup));
			pool->host_index = 0;
			/* the first server of the new destination sends a fresh welcome */
			log_info("database %s changed, reconnecting its servers", pool->db_name);
		}
		tag_servers(pool);
	}
	param_clear(&ci.startup);
	pool_refresh_settings(pool);
}

/*
 * What one RELOAD read and checked. Each worker takes the config copy of its number; the user
 * list, the auth files and the TLS contexts are immutable and shared, each worker holding a
 * reference of its own.
 */
struct reload_set {
	struct config **cfgs; /* [worker number]; NULL once taken */
	int ncfgs;
	struct userlist *users;   /* NULL without auth_file */
	struct auth_files *files; /* the hba and ident files */
	struct tls_ctxs *tls;
};

void control_reload_set_free(struct reload_set *rs)
{
	if (rs == NULL)
		return;
	for (int i = 0; i < rs->ncfgs; i++)
		config_free(rs->cfgs[i]);
	free(rs->cfgs);
	userlist_free(rs->users);
	auth_files_free(rs->files);
	tls_ctxs_free(rs->tls);
	free(rs);
}

struct reload_set *control_reload_load(struct bouncer *b, int nworkers)
{
	struct reload_set *rs = NULL;
	struct config *fresh = NULL;
	char why[1024];

	(void)sdnotify_reloading();
	if (!config_load(b->config_path, &fresh)) {
		log_error("RELOAD failed, see logs for additional details");
		goto fail;
	}
	if (!config_keep_no_reload(fresh, b->cfg))
		log_warning("some changed settings need a restart to take effect");
	/* workers needs a restart: the running number decides what the file may add */
	if (!config_workers_check(fresh, why, sizeof(why))) {
		log_error("RELOAD failed: %s", why);
		goto fail;
	}
	/* a module the new configuration needs (synced tables) is loaded now, or nothing changes */
	if (!modules_load(fresh, why, sizeof(why))) {
		log_error("RELOAD failed: %s", why);
		goto fail;
	}
	/* and it takes the new configuration, or nothing changes */
	if (!modules_check(b, fresh, why, sizeof(why))) {
		log_error("RELOAD failed: %s", why);
		goto fail;
	}
	rs = calloc(1, sizeof(*rs));
	if (rs == NULL || (rs->cfgs = calloc((size_t)nworkers, sizeof(*rs->cfgs))) == NULL) {
		log_error("RELOAD failed: out of memory");
		goto fail;
	}
	rs->ncfgs = nworkers;
	/* TLS that cannot be set up is never ignored: the reload fails, the old stays */
	rs->tls = tls_build(fresh, why, sizeof(why));
	if (rs->tls == NULL) {
		log_error("RELOAD failed: %s; the TLS settings in use are kept", why);
		goto fail;
	}
	if (fresh->auth_file[0]) {
		rs->users = userlist_load(fresh->auth_file);
		if (rs->users == NULL) {
			log_error("RELOAD failed, see logs for additional details");
			goto fail;
		}
	}
	rs->files = auth_files_load(fresh, why, sizeof(why));
	if (rs->files == NULL) {
		log_error("%s", why);
		log_error("RELOAD failed, see logs for additional details");
		goto fail;
	}
	/* the copies last: nothing may fail once the workers start applying */
	for (int i = 1; i < nworkers; i++) {
		rs->cfgs[i] = config_copy(fresh);
		if (rs->cfgs[i] == NULL) {
			log_error("RELOAD failed: out of memory");
			goto fail;
		}
	}
	rs->cfgs[0] = fresh;
	return rs;
fail:
	config_free(fresh);
	control_reload_set_free(rs);
	(void)sdnotify("READY=1");
	return NULL;
}

void control_reload_apply(struct bouncer *b, struct reload_set *rs)
{
	struct control *ctl = b->control;
	struct config *fresh, *old;
	struct userlist *old_users;
	struct list *it, *tmp;
	bool server_tls_changed;
	int i = worker_index(b);

	if (i >= rs->ncfgs || rs->cfgs[i] == NULL)
		return; /* a worker the set was not made for */
	fresh = rs->cfgs[i];
	rs->cfgs[i] = NULL;
	if (!tls_use(b, rs->tls))
		log_error("RELOAD: out of memory setting up TLS, the TLS settings in use are kept");
	old = b->cfg;
	server_tls_changed = tls_server_settings_differ(old, fresh);
	old_users = b->users;
	b->cfg = fresh;
	b->users = userlist_ref(rs->users);
	auth_use_files(b, auth_files_ref(rs->files));
	list_for_each_safe(it, tmp, &b->pools)
	{
		refresh_pool(b, list_entry(it, struct pool, head));
	}
	if (server_tls_changed) {
		log_once(b, "server TLS settings changed, reconnecting the servers");
		list_for_each(it, &b->pools)
		{
			tag_servers(list_entry(it, struct pool, head));
		}
	}
	stats_settings_changed(b);
	config_free(old);
	if (ctl != NULL && ctl->after_reload != NULL)
		ctl->after_reload(b);
	if (old_users != NULL)
		userlist_free(old_users);
}

void control_reload_done(struct reload_set *rs)
{
	control_reload_set_free(rs);
	(void)sdnotify("READY=1");
}

bool control_reload(struct bouncer *b)
{
	struct reload_set *rs = control_reload_load(b, 1);

	if (rs == NULL)
		return false;
	control_reload_apply(b, rs);
	control_reload_done(rs);
	return true;
}
