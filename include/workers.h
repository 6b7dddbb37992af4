/*
 * workers — the pooler's event loops. With `workers = 1` (the default) there is one: the main
 * thread's. With `workers = N` there are N, each a whole struct bouncer of its own (its event
 * base, listeners, pools, clients and servers) running in its own thread; worker 0 is the main
 * thread, which also handles signals. What the workers share is reached only through this
 * module: the limits that stay global (max_client_conn, the pools' server limits),
 * workers_each(), by which one worker has something done on every worker's state, and the
 * mailboxes (workers_post(), workers_post_owned()). A client of a database whose state lives on
 * one worker (the synced tables: worker 0, modules_home_worker()) is handed to that worker by
 * workers_post_owned() right after its startup packet is read (client.c): its socket, TLS
 * session and unread bytes go with it, and it keeps its id and its place in max_client_conn.
 *
 * Invariants: a worker's struct bouncer, and everything hanging from it, is touched only by
 * that worker's thread. workers_each() runs its function on each worker's bouncer in that
 * worker's own thread, in worker order (0 first), one at a time, and returns after the last;
 * the caller's own worker runs inline. While it runs, the caller's loop waits; the others carry
 * on between their turns.
 */
#ifndef SB_WORKERS_H
#define SB_WORKERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct bouncer;
struct workers;
struct worker_limit;

/* the most workers a process runs (`workers = auto` is bounded by it too) */
#define WORKERS_MAX 64

typedef void (*worker_fn)(struct bouncer *w, void *arg);

/* how many workers run (1 when workers = 1) */
int workers_count(const struct bouncer *b);

/* this bouncer's worker number, 0 for the main thread's */
int worker_index(const struct bouncer *b);

/* runs fn(w, arg) on every worker's bouncer w, each in its own thread, in worker order */
void workers_each(struct bouncer *self, worker_fn fn, void *arg);

/*
 * Posts fn(w, arg) to worker `to`'s loop and returns at once; arg (malloc'd, may be NULL) is
 * freed with free() after fn ran, or at once when it cannot be posted (false: no such worker,
 * the caller itself, out of memory, or that worker has left its loop). For work that must not
 * block the caller's relay (the pools' server rebalancing).
 */
bool workers_post(struct bouncer *self, int to, worker_fn fn, void *arg);
/*
 * What becomes of an arg posted with workers_post_owned() whose fn cannot run: stopped, the
 * worker has left its loop (or there is no such worker); else there was no memory to post it.
 * It releases what arg holds (arg itself is freed with free() after it), in whichever thread
 * found out: the poster's, or the stopping worker's.
 */
typedef void (*worker_drop_fn)(void *arg, bool stopped);
/*
 * workers_post() for an arg that holds more than memory (a client's socket handed to another
 * worker): arg is the mailbox's from now on, whatever the answer. fn(to's bouncer, arg) runs in
 * that worker's thread, or, when it cannot (as for workers_post(), and also when the worker
 * leaves its loop with arg still queued), drop(arg, ...) runs instead; then arg is freed. False
 * when drop has run already.
 */
bool workers_post_owned(struct bouncer *self, int to, worker_fn fn, void *arg, worker_drop_fn drop);

/*
 * A configuration change (RELOAD, SIGHUP, SET) from self, between these two, is the only one
 * in progress: one started on another worker meanwhile waits for it in workers_change_begin(),
 * running what is posted to its worker (the change in progress being applied there too), and
 * is then checked against the configuration that change left. So every worker takes the
 * changes in the same order and none is left on a mix of two. No-ops with one worker.
 */
void workers_change_begin(struct bouncer *self);
void workers_change_end(struct bouncer *self);

/*
 * RELOAD and SIGHUP: self reads and checks the config file and every file it names, once
 * (control_reload_load()); only when all of it is usable does every worker, self included,
 * apply what self read (control_reload_apply(), in its own thread), so that no worker can be
 * left on another configuration than the others, or on one nobody checked. False when the
 * load failed (nothing changed anywhere).
 */
bool workers_reload(struct bouncer *self) __attribute__((warn_unused_result));
/* As a worker_fn: worker w applies the struct reload_set arg. */
void bouncer_reload_one(struct bouncer *w, void *arg);
/*
 * For tests only (doc/admin.md; builds made with --enable-cassert): with
 * SYNCBOUNCER_TEST_AFTER_CHECK=PATH in the environment, a file PATH.next is renamed over PATH
 * once a RELOAD or SET has read and checked the files and before the workers apply them: a
 * file changed at the worst moment, made deterministic. With SYNCBOUNCER_TEST_CHANGE_PAUSE_MS=N
 * the worker making the change then sleeps N ms: another change sent meanwhile is made to
 * overlap it.
 */
void workers_test_after_check(void);

/* ---- set-up, for main.c ---- */

/* The shared state of n workers (1..WORKERS_MAX); NULL when out of memory. */
struct workers *workers_new(int n);
/* Makes b worker number index of ws (b->workers, b->worker_index); before its set-up. */
void workers_attach(struct workers *ws, int index, struct bouncer *b);
/* Opens b's mailbox on b->base, in b's own thread once its loop exists. */
bool workers_mailbox_open(struct bouncer *b) __attribute__((warn_unused_result));
/*
 * Starts workers 1..n-1 one after the other, each a thread running run(its bouncer) with every
 * signal blocked; waits for each to say workers_ready() before the next. False when one could
 * not start or was not ready.
 */
bool workers_start(struct workers *ws, void (*run)(struct bouncer *b))
        __attribute__((warn_unused_result));
/* A worker's set-up is done (ok) or failed; returns ok. */
bool workers_ready(struct bouncer *b, bool ok);
/* Around a worker's teardown: one worker at a time (c-ares' library count is not atomic). */
void workers_serial(struct bouncer *b, bool begin);
/*
 * The worker of b has left its loop: what is posted to it from now on completes without
 * running, so nobody waits for it; worker 0's loop is woken (it waits for the others).
 */
void workers_stopped(struct bouncer *b);
/* Workers that have not left their loop yet. */
int workers_running(struct workers *ws);
/* Waits for the threads of workers 1..n-1 to end. */
void workers_join(struct workers *ws);
/* Closes b's mailbox (before its base is freed). */
void workers_detach(struct bouncer *b);
void workers_free(struct workers *ws);

/* ---- the limits that stay global (b->workers must be set) ---- */

/* Adds delta to the process's count of clients; returns the new count. */
int workers_clients_add(struct bouncer *b, int delta);
/* A connection id unique in the process (SHOW CLIENTS, KILL_CLIENT). */
uint64_t workers_next_conn_id(struct bouncer *b);
/*
 * The shared server count of kind 'p' (a pool: db and user), 'd' (a database) or 'u' (a
 * user), made on first use and counted by reference: every get is matched by a put. NULL when
 * out of memory or the names are too long.
 */
struct worker_limit *workers_limit_get(struct bouncer *b, char kind, const char *db,
                                       const char *user);
void workers_limit_put(struct bouncer *b, struct worker_limit *lim);
/* Counts one more server if fewer than max are counted; false (nothing counted) when full. */
bool workers_limit_take(struct worker_limit *lim, int max);
void workers_limit_give(struct worker_limit *lim);
int workers_limit_count(const struct worker_limit *lim);

/* ---- what logins must find the same on every worker (b->workers must be set) ---- */

/*
 * Copies len (at most 64) bytes of a random key made once for the process: the mock users'
 * SCRAM salts derive from it, so that an unknown user shows one salt whichever worker answers.
 */
void workers_auth_key(struct bouncer *b, void *key, size_t len);
/*
 * Counts a successful login that was asked for md5 by the exchange its secret made it do
 * (scram or md5); queried: the secret came from auth_query (0: from the auth_file).
 */
void workers_count_login(struct bouncer *b, int queried, bool scram);
/* Whether more of those logins, on every worker, did SCRAM than md5. */
bool workers_logins_mostly_scram(struct bouncer *b, int queried);

#endif
