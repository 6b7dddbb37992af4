/*
 * ticker — see include/ticker.h. One timerfd (CLOCK_MONOTONIC, absolute, one-shot) armed for
 * the earliest due tick; libevent watches it with a persistent read event, which puts nothing
 * in its timer heap.
 */
#include "ticker.h"

#include <errno.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "bouncer.h"
#include "log.h"

struct ticker {
	struct bouncer *b;
	int fd;
	struct event *ev;
	struct list ticks; /* started ticks, but those on_timer() is about to run */
	int nstarted;
};

static uint64_t now_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Arms the timerfd for the earliest due tick (disarms it when there is none). */
static void rearm(struct ticker *tk)
{
	struct itimerspec its;
	struct list *it;
	uint64_t first = 0;

	list_for_each(it, &tk->ticks)
	{
		const struct tick *t = list_entry(it, struct tick, head);
		if (first == 0 || t->due < first)
			first = t->due;
	}
	memset(&its, 0, sizeof(its));
	if (first != 0) {
		/* 0 would disarm: a tick due at the clock's start is due now anyway */
		its.it_value.tv_sec = (time_t)(first / 1000000u);
		its.it_value.tv_nsec = (long)(first % 1000000u) * 1000;
		if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
			its.it_value.tv_nsec = 1;
	}
	if (timerfd_settime(tk->fd, TFD_TIMER_ABSTIME, &its, NULL) != 0)
		fatal("cannot arm the periodic timer: %s", strerror(errno));
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct ticker *tk = arg;
	struct bouncer *b = tk->b;
	struct list due, *it, *tmp;
	uint64_t expirations, now;

	(void)what;
	/* EAGAIN: a rearm() since it fired moved the time; the ticks' own times decide */
	if (read(fd, &expirations, sizeof(expirations)) < 0 && errno != EAGAIN)
		log_warning("periodic timer: %s", strerror(errno));
	now = now_usec();
	list_init(&due);
	list_for_each_safe(it, tmp, &tk->ticks)
	{
		struct tick *t = list_entry(it, struct tick, head);
		if (t->due <= now) {
			list_del(&t->head);
			list_append(&due, &t->head);
		}
	}
	/* one at a time from a list of their own: a callback may stop any of them */
	while (!list_empty(&due)) {
		struct tick *t = list_entry(due.next, struct tick, head);

		list_del(&t->head);
		t->due += t->period;
		if (t->due <= now)
			t->due = now + t->period;
		list_append(&tk->ticks, &t->head);
		t->cb(t->arg);
		/* a callback that stopped every tick freed the ticker (and emptied due) */
		tk = b->ticker;
	}
	if (tk != NULL)
		rearm(tk);
}

static void ticker_free(struct bouncer *b)
{
	struct ticker *tk = b->ticker;

	event_free(tk->ev);
	close(tk->fd);
	free(tk);
	b->ticker = NULL;
}

static struct ticker *ticker_get(struct bouncer *b)
{
	struct ticker *tk = b->ticker;

	if (tk != NULL)
		return tk;
	tk = calloc(1, sizeof(*tk));
	if (tk == NULL)
		return NULL;
	list_init(&tk->ticks);
	tk->b = b;
	tk->fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (tk->fd < 0) {
		log_warning("cannot make the periodic timer: %s", strerror(errno));
		free(tk);
		return NULL;
	}
	tk->ev = event_new(b->base, tk->fd, EV_READ | EV_PERSIST, on_timer, tk);
	if (tk->ev == NULL || event_add(tk->ev, NULL) != 0) {
		if (tk->ev != NULL)
			event_free(tk->ev);
		close(tk->fd);
		free(tk);
		return NULL;
	}
	b->ticker = tk;
	return tk;
}

void tick_init(struct tick *t, void (*cb)(void *arg), void *arg)
{
	memset(t, 0, sizeof(*t));
	list_init(&t->head);
	t->cb = cb;
	t->arg = arg;
}

bool tick_start(struct bouncer *b, struct tick *t, uint64_t period_usec)
{
	struct ticker *tk = ticker_get(b);

	if (tk == NULL)
		return false;
	list_del(&t->head);
	t->period = period_usec > 0 ? period_usec : 1;
	t->due = now_usec() + t->period;
	if (!t->started)
		tk->nstarted++;
	t->started = true;
	list_append(&tk->ticks, &t->head);
	rearm(tk);
	return true;
}

void tick_stop(struct bouncer *b, struct tick *t)
{
	if (!t->started)
		return;
	list_del(&t->head);
	t->started = false;
	/* the timerfd may still fire for it once: on_timer() then finds nothing due */
	if (b->ticker != NULL && --b->ticker->nstarted == 0)
		ticker_free(b);
}
