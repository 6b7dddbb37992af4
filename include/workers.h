/*
 * workers — the pooler's event loops. With `workers = 1` (the default) there is one: the main
 * thread's. With `workers = N` there are N, each a whole struct bouncer of its own (its event
 * base, listeners, pools, clients and servers) running in its own thread; worker 0 is the main
 * thread, which also handles signals. What the workers share is reached only through this
 * module: the limits that stay global (max_client_conn, the pools' server limits), and
 * workers_each(), by which one worker has something done on every worker's state.
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

struct bouncer;

typedef void (*worker_fn)(struct bouncer *w, void *arg);

/* how many workers run (1 when workers = 1) */
int workers_count(const struct bouncer *b);

/* this bouncer's worker number, 0 for the main thread's */
int worker_index(const struct bouncer *b);

/* runs fn(w, arg) on every worker's bouncer w, each in its own thread, in worker order */
void workers_each(struct bouncer *self, worker_fn fn, void *arg);

#endif
