/*
 * conn — what client and server connections share: state lists, log prefix, tracked parameters
 * and deferred freeing. A closed connection is moved to bouncer->justfree and freed from a
 * zero-delay event, so that no callback still on the stack touches freed memory.
 */
#include "conn.h"

#include <event2/event.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth.h"
#include "bouncer.h"
#include "pool.h"
#include "prepared.h"
#include "stats.h"

const char *conn_state_str(enum conn_state st)
{
	switch (st) {
	case CL_LOGIN:
		return "login";
	case CL_WAITING_LOGIN:
		return "waiting_login";
	case CL_ACTIVE:
		return "active";
	case CL_WAITING:
		return "waiting";
	case SV_LOGIN:
		return "login";
	case SV_IDLE:
		return "idle";
	case SV_ACTIVE:
		return "active";
	case SV_USED:
		return "used";
	case SV_TESTED:
		return "tested";
	case CONN_JUSTFREE:
		return "justfree";
	}
	return "?";
}

void conn_set_state(struct conn *c, enum conn_state st)
{
	list_del(&c->head);
	if (c->id == 0)
		c->id = ++c->b->last_conn_id;
	c->state = st;
	list_append(pool_state_list(c->b, c->pool, st), &c->head);
}

void conn_log(enum log_level lvl, const struct conn *c, const char *fmt, ...)
{
	char prefix[512];
	const char *db, *user;
	va_list ap;

	if (!log_enabled(lvl))
		return;
	db = c->pool ? c->pool->db_name : (c->dbname && c->dbname[0] ? c->dbname : "(nodb)");
	/* a client logs as who it is, even in a forced user's pool */
	user = !c->is_server && c->user && c->user[0]
	               ? c->user
	               : (c->pool ? c->pool->user_name : "(nouser)");
	snprintf(prefix, sizeof(prefix), "%c-%p: %s/%s@%s:%d ", c->is_server ? 'S' : 'C',
	         (const void *)c, db, user, c->addr_str, c->port);
	va_start(ap, fmt);
	log_vmsg_prefixed(lvl, prefix, fmt, ap);
	va_end(ap);
}

uint32_t param_hash(const char *name)
{
	uint32_t h = 2166136261u; /* FNV-1a over the ASCII-lower-cased name */

	for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
		unsigned char ch = *p >= 'A' && *p <= 'Z' ? (unsigned char)(*p + 32) : *p;
		h = (h ^ ch) * 16777619u;
	}
	return h;
}

static int param_index(const struct param_set *ps, const char *name, uint32_t hash)
{
	for (int i = 0; i < ps->n; i++)
		if (ps->p[i].hash == hash && strcasecmp(ps->p[i].name, name) == 0)
			return i;
	return -1;
}

const char *param_get_hashed(const struct param_set *ps, const char *name, uint32_t hash)
{
	int i = param_index(ps, name, hash);

	return i < 0 ? NULL : ps->p[i].value;
}

const char *param_get(const struct param_set *ps, const char *name)
{
	return param_get_hashed(ps, name, param_hash(name));
}

/*
 * The shared copies of parameter names and values: one counted copy per distinct string, in a
 * chained hash table that doubles when it fills. A string is freed with its last holder.
 */
struct shared_str {
	struct shared_str *next;
	uint32_t refs;
	uint32_t hash; /* of the exact bytes */
	char s[];
};

static struct {
	struct shared_str **slot;
	size_t nslots; /* a power of two, or 0 */
	size_t n;
} shared;

static struct shared_str *shared_of(const char *s)
{
	return (struct shared_str *)(s - offsetof(struct shared_str, s));
}

static uint32_t exact_hash(const char *s, size_t *len)
{
	uint32_t h = 2166136261u;
	const unsigned char *p = (const unsigned char *)s;

	for (; *p; p++)
		h = (h ^ *p) * 16777619u;
	*len = (size_t)(p - (const unsigned char *)s);
	return h;
}

static bool shared_grow(void)
{
	size_t nslots = shared.nslots ? shared.nslots * 2 : 64;
	struct shared_str **slot = calloc(nslots, sizeof(*slot));

	if (slot == NULL)
		return false;
	for (size_t i = 0; i < shared.nslots; i++) {
		struct shared_str *e = shared.slot[i], *next;
		for (; e != NULL; e = next) {
			next = e->next;
			e->next = slot[e->hash & (nslots - 1)];
			slot[e->hash & (nslots - 1)] = e;
		}
	}
	free(shared.slot);
	shared.slot = slot;
	shared.nslots = nslots;
	return true;
}

/* A counted shared copy of s (the caller holds one reference), or NULL when out of memory. */
static const char *shared_get(const char *s)
{
	size_t len;
	uint32_t h = exact_hash(s, &len);
	struct shared_str *e;

	if (shared.nslots > 0) {
		for (e = shared.slot[h & (shared.nslots - 1)]; e != NULL; e = e->next) {
			if (e->hash == h && strcmp(e->s, s) == 0) {
				e->refs++;
				return e->s;
			}
		}
	}
	if (shared.n >= shared.nslots && !shared_grow() && shared.nslots == 0)
		return NULL;
	e = malloc(sizeof(*e) + len + 1);
	if (e == NULL)
		return NULL;
	e->refs = 1;
	e->hash = h;
	memcpy(e->s, s, len + 1);
	e->next = shared.slot[h & (shared.nslots - 1)];
	shared.slot[h & (shared.nslots - 1)] = e;
	shared.n++;
	return e->s;
}

/* Drops one reference to a string from shared_get(). */
static void shared_put(const char *s)
{
	struct shared_str *e = shared_of(s), **pp;

	if (--e->refs > 0)
		return;
	for (pp = &shared.slot[e->hash & (shared.nslots - 1)]; *pp != e; pp = &(*pp)->next)
		;
	*pp = e->next;
	shared.n--;
	free(e);
}

static uint64_t param_last_gen;

void param_touch(struct param_set *ps)
{
	ps->gen = ++param_last_gen;
}

/* Slots: the tracked parameters of a client fit in the first allocation. */
#define PARAM_FIRST_CAP 5

bool param_set_value(struct param_set *ps, const char *name, const char *value)
{
	uint32_t hash = param_hash(name);
	int i = param_index(ps, name, hash);
	const char *v, *nm;

	if (i >= 0) {
		if (strcmp(ps->p[i].value, value) == 0)
			return true; /* unchanged: the same generation */
		v = shared_get(value);
		if (v == NULL)
			return false;
		shared_put(ps->p[i].value);
		ps->p[i].value = v;
		param_touch(ps);
		return true;
	}
	if (ps->n == PARAM_MAX)
		return false;
	if (ps->n == ps->cap) {
		int cap = ps->cap == 0 ? PARAM_FIRST_CAP : ps->cap * 2;
		struct param *p;
		if (cap > PARAM_MAX)
			cap = PARAM_MAX;
		p = realloc(ps->p, (size_t)cap * sizeof(*p));
		if (p == NULL)
			return false;
		ps->p = p;
		ps->cap = cap;
	}
	nm = shared_get(name);
	v = nm != NULL ? shared_get(value) : NULL;
	if (v == NULL) {
		if (nm != NULL)
			shared_put(nm);
		return false;
	}
	ps->p[ps->n].name = nm;
	ps->p[ps->n].value = v;
	ps->p[ps->n].hash = hash;
	ps->n++;
	param_touch(ps);
	return true;
}

void param_clear(struct param_set *ps)
{
	for (int i = 0; i < ps->n; i++) {
		shared_put(ps->p[i].name);
		shared_put(ps->p[i].value);
	}
	free(ps->p);
	ps->p = NULL;
	ps->n = ps->cap = 0;
	param_touch(ps);
}

const char conn_no_name[] = "";

static void put_name(const char *s)
{
	if (s != NULL && s != conn_no_name)
		shared_put(s);
}

bool conn_set_names(struct conn *c, const char *user, const char *dbname)
{
	const char *u = shared_get(user), *d = u != NULL ? shared_get(dbname) : NULL;

	if (d == NULL) {
		put_name(u);
		return false;
	}
	put_name(c->user);
	put_name(c->dbname);
	c->user = u;
	c->dbname = d;
	return true;
}

bool conn_event_assign(struct conn *c, struct event **ev, evutil_socket_t fd, short what,
                       event_callback_fn cb)
{
	if (*ev == NULL) {
		*ev = event_new(c->b->base, fd, what, cb, c);
		return *ev != NULL;
	}
	return event_assign(*ev, c->b->base, fd, what, cb, c) == 0;
}

void conn_retire(struct conn *c)
{
	if (c->state == CONN_JUSTFREE)
		return;
	stats_conn_closed(c);
	if (c->connecting) {
		event_del(c->ev_connect);
		c->connecting = false;
	}
	sbuf_close(&c->sbuf);
	ps_conn_release(c);
	if (c->timer_ready) {
		event_del(c->ev_timer);
		c->timer_ready = false;
	}
	conn_set_state(c, CONN_JUSTFREE);
	event_active(c->b->ev_free, EV_TIMEOUT, 0);
}

void conn_free_retired(struct bouncer *b)
{
	struct list *it, *tmp;

	list_for_each_safe(it, tmp, &b->justfree)
	{
		struct conn *c = list_entry(it, struct conn, head);
		list_del(&c->head);
		param_clear(&c->params);
		put_name(c->user);
		put_name(c->dbname);
		free(c->params_key);
		free(c->in_force_key);
		auth_conn_free(c);
		free(c->scram_srv);
		free(c->scram_cli);
		free(c->host);
		if (c->ev_timer != NULL)
			event_free(c->ev_timer);
		if (c->ev_connect != NULL)
			event_free(c->ev_connect);
		free(c);
	}
}
