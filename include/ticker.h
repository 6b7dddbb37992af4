/*
 * ticker — the pooler's periodic work (the control tick, each pool's janitor, the stats period)
 * on one timerfd that libevent watches like a socket, instead of in libevent's timer heap.
 *
 * Why: while any timer is in its heap, every turn of libevent's loop works out the time to the
 * next one, converts it for epoll_wait() and checks the heap after the wait: about 115
 * instructions a turn, and a relayed query takes two turns. The periodic timers were always
 * armed, so every query paid for them; with them here, a pooler that relays queries and has no
 * connection-bound timer armed (login_timeout, a cancel's wait, a retry) runs its loop with an
 * empty heap. Timers that come and go with a connection stay libevent's.
 *
 * Invariants: a started tick is on its ticker's list and comes due every period (from the time
 * it was started, then from each due time: a late run does not make the next one late too). The
 * timerfd is armed for the earliest due time, or disarmed. A tick's callback may stop or start
 * any tick, its own included. The ticker is made by the first tick_start() of a bouncer and
 * freed when its last tick stops.
 */
#ifndef SB_TICKER_H
#define SB_TICKER_H

#include <stdbool.h>
#include <stdint.h>

#include "list.h"

struct bouncer;

struct tick {
	struct list head; /* on the ticker's list while started */
	uint64_t period;  /* microseconds */
	uint64_t due;     /* CLOCK_MONOTONIC microseconds, as bouncer_now_usec() */
	bool started;
	void (*cb)(void *arg);
	void *arg;
};

/* Sets up t (stopped) to call cb(arg) each period once started. */
void tick_init(struct tick *t, void (*cb)(void *arg), void *arg);
/*
 * Starts t (again, if it runs: from now) with the given period (at least 1 µs). False when the
 * bouncer's ticker cannot be made (no memory, no file descriptor): t stays stopped.
 */
bool tick_start(struct bouncer *b, struct tick *t, uint64_t period_usec)
        __attribute__((warn_unused_result));
/* Stops t; nothing when it is not started. */
void tick_stop(struct bouncer *b, struct tick *t);

#endif
