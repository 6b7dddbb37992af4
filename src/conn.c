/*
 * conn — what client and server connections share: state lists, log prefix, tracked parameters
 * and deferred freeing. A closed connection is moved to bouncer->justfree and freed from a
 * zero-delay event, so that no callback still on the stack touches freed memory.
 */
#include "conn.h"

#include <event2/event.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <netinet/tcp.h>
#include <sys/random.h>

#include "auth.h"
#include "bouncer.h"
#include "config.h"
#include "pool.h"
#include "prepared.h"
#include "stats.h"
#include "workers.h"

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
		/* ids are the process's: with several workers, one counter for them all */
		c->id = c->b->workers != NULL ? workers_next_conn_id(c->b) : ++c->b->last_conn_id;
	c->state = st;
	list_append(pool_state_list(c->b, c->pool, st), &c->head);
}

void conn_log(enum log_level lvl, const struct conn *c, const char *fmt, ...)
{
	char prefix[512];
	const char *db, *user;
	size_t n;
	va_list ap;

	if (!log_enabled(lvl))
		return;
	db = c->pool ? c->pool->db_name : (c->dbname && c->dbname[0] ? c->dbname : "(nodb)");
	/* a client logs as who it is, even in a forced user's pool */
	user = !c->is_server && c->user && c->user[0] ? c->user
	                                              : (c->pool ? c->pool->user_name : "(nouser)");
	/* "%c-%p: %s/%s@%s:%d ", built without printf (two lines per log-in) */
	n = log_put_str(prefix, sizeof(prefix), 0, c->is_server ? "S-" : "C-");
	n = log_put_ptr(prefix, sizeof(prefix), n, c);
	n = log_put_str(prefix, sizeof(prefix), n, ": ");
	n = log_put_str(prefix, sizeof(prefix), n, db);
	n = log_put_str(prefix, sizeof(prefix), n, "/");
	n = log_put_str(prefix, sizeof(prefix), n, user);
	n = log_put_str(prefix, sizeof(prefix), n, "@");
	n = log_put_str(prefix, sizeof(prefix), n, c->addr_str);
	n = log_put_str(prefix, sizeof(prefix), n, ":");
	if (c->port < 0)
		n = log_put_str(prefix, sizeof(prefix), n, "-");
	n = log_put_uint(prefix, sizeof(prefix), n,
	                 (unsigned long long)(c->port < 0 ? -(long long)c->port : c->port), 1);
	(void)log_put_str(prefix, sizeof(prefix), n, " ");
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

static _Thread_local struct {
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

static _Thread_local uint64_t param_last_gen;

/* Slots: the tracked parameters of a client fit in the first allocation. */
#define PARAM_FIRST_CAP 5

void param_touch(struct param_set *ps)
{
	ps->gen = ++param_last_gen;
}

/*
 * A set's slots live in a counted block. param_share() lets every set with the same contents
 * hold one block (names and values are shared strings, so equal contents are equal pointers);
 * a set about to change a block that others hold first takes a private copy. Shared blocks are
 * found through a chained hash table of their slots' pointers.
 */
struct param_block {
	struct param_block *next; /* in the table while shared */
	uint32_t refs;
	uint32_t hash;
	int n;       /* slots in use when it was shared */
	bool listed; /* in the table */
	struct param p[];
};

static _Thread_local struct {
	struct param_block **slot;
	size_t nslots; /* a power of two, or 0 */
	size_t n;
} blocks;

static struct param_block *block_of(const struct param_set *ps)
{
	return (struct param_block *)((char *)ps->p - offsetof(struct param_block, p));
}

static uint32_t slots_hash(const struct param *p, int n)
{
	uint64_t h = 1469598103934665603ull;

	for (int i = 0; i < n; i++) {
		h = (h ^ (uintptr_t)p[i].name) * 1099511628211ull;
		h = (h ^ (uintptr_t)p[i].value) * 1099511628211ull;
	}
	return (uint32_t)(h ^ (h >> 32));
}

static void block_unlist(struct param_block *blk)
{
	struct param_block **pp;

	if (!blk->listed)
		return;
	for (pp = &blocks.slot[blk->hash & (blocks.nslots - 1)]; *pp != blk; pp = &(*pp)->next)
		;
	*pp = blk->next;
	blk->listed = false;
	blocks.n--;
}

static bool blocks_grow(void)
{
	size_t nslots = blocks.nslots ? blocks.nslots * 2 : 64;
	struct param_block **slot = calloc(nslots, sizeof(*slot));

	if (slot == NULL)
		return false;
	for (size_t i = 0; i < blocks.nslots; i++) {
		struct param_block *e = blocks.slot[i], *next;
		for (; e != NULL; e = next) {
			next = e->next;
			e->next = slot[e->hash & (nslots - 1)];
			slot[e->hash & (nslots - 1)] = e;
		}
	}
	free(blocks.slot);
	blocks.slot = slot;
	blocks.nslots = nslots;
	return true;
}

/* A new private block of cap slots holding a copy of ps's slots (references taken). */
static struct param_block *block_copy(const struct param_set *ps, int cap)
{
	struct param_block *blk = malloc(sizeof(*blk) + (size_t)cap * sizeof(struct param));

	if (blk == NULL)
		return NULL;
	blk->next = NULL;
	blk->refs = 1;
	blk->hash = 0;
	blk->n = ps->n;
	blk->listed = false;
	for (int i = 0; i < ps->n; i++) {
		blk->p[i] = ps->p[i];
		shared_of(blk->p[i].name)->refs++;
		shared_of(blk->p[i].value)->refs++;
	}
	return blk;
}

void param_drop(struct param_block *blk)
{
	if (blk == NULL || --blk->refs > 0)
		return;
	block_unlist(blk);
	for (int i = 0; i < blk->n; i++) {
		shared_put(blk->p[i].name);
		shared_put(blk->p[i].value);
	}
	free(blk);
}

struct param_block *param_hold(const struct param_set *ps)
{
	struct param_block *blk;

	if (ps->p == NULL)
		return NULL;
	blk = block_of(ps);
	blk->refs++;
	return blk;
}

bool param_holds(const struct param_block *blk, const struct param_set *ps)
{
	return ps->p != NULL && blk == block_of(ps);
}

/* Drops ps's hold on its block; the last holder releases the strings. */
static void block_release(struct param_set *ps)
{
	if (ps->p != NULL)
		param_drop(block_of(ps));
}

/* Makes ps's block its own, with room for one more slot. False when out of memory. */
static bool block_own(struct param_set *ps)
{
	struct param_block *blk = ps->p != NULL ? block_of(ps) : NULL, *nb;
	int cap;

	if (blk != NULL && blk->refs == 1 && ps->n < ps->cap) {
		block_unlist(blk); /* its contents are about to change */
		return true;
	}
	cap = ps->cap == 0 ? PARAM_FIRST_CAP : ps->n < ps->cap ? ps->cap : ps->cap * 2;
	if (cap < ps->n + 1)
		cap = ps->n + 1;
	if (cap > PARAM_MAX)
		cap = PARAM_MAX;
	nb = block_copy(ps, cap);
	if (nb == NULL)
		return false;
	block_release(ps);
	ps->p = nb->p;
	ps->cap = cap;
	return true;
}

void param_share(struct param_set *ps)
{
	struct param_block *blk, *e;
	uint32_t h;

	if (ps->p == NULL || ps->n == 0)
		return;
	blk = block_of(ps);
	if (blk->listed || blk->refs > 1)
		return;
	h = slots_hash(ps->p, ps->n);
	if (blocks.nslots > 0) {
		for (e = blocks.slot[h & (blocks.nslots - 1)]; e != NULL; e = e->next) {
			if (e->hash == h && e->n == ps->n &&
			    memcmp(e->p, ps->p, (size_t)ps->n * sizeof(struct param)) == 0) {
				e->refs++;
				block_release(ps);
				ps->p = e->p;
				ps->cap = e->n;
				return;
			}
		}
	}
	if (blocks.n >= blocks.nslots && !blocks_grow() && blocks.nslots == 0)
		return;
	blk->hash = h;
	blk->listed = true;
	blk->next = blocks.slot[h & (blocks.nslots - 1)];
	blocks.slot[h & (blocks.nslots - 1)] = blk;
	blocks.n++;
}

bool param_set_value(struct param_set *ps, const char *name, const char *value)
{
	uint32_t hash = param_hash(name);
	int i = param_index(ps, name, hash);
	const char *v, *nm;

	if (i >= 0) {
		if (strcmp(ps->p[i].value, value) == 0)
			return true; /* unchanged: the same generation */
		if (!block_own(ps))
			return false;
		v = shared_get(value);
		if (v == NULL)
			return false;
		shared_put(ps->p[i].value);
		ps->p[i].value = v;
		param_touch(ps);
		return true;
	}
	if (ps->n == PARAM_MAX || !block_own(ps))
		return false;
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
	block_of(ps)->n = ps->n;
	param_touch(ps);
	return true;
}

void param_clear(struct param_set *ps)
{
	block_release(ps);
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
		param_drop(c->in_force);
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

void conn_thread_done(void)
{
	/* every set and name was freed with its connection: only the empty tables are left */
	free(shared.slot);
	shared.slot = NULL;
	shared.nslots = shared.n = 0;
	free(blocks.slot);
	blocks.slot = NULL;
	blocks.nslots = blocks.n = 0;
}

bool conn_random(void *buf, size_t len)
{
	static _Thread_local uint8_t pool[256];
	static _Thread_local size_t left;

	if (len > 64)
		return false;
	if (left < len) {
		if (getrandom(pool, sizeof(pool), 0) != (ssize_t)sizeof(pool))
			return false;
		left = sizeof(pool);
	}
	/* taken from the end, and wiped there: no byte is handed out twice */
	left -= len;
	memcpy(buf, pool + left, len);
	memset(pool + left, 0, len);
	return true;
}

static bool set_int(int fd, int level, int name, int value)
{
	return setsockopt(fd, level, name, &value, sizeof(value)) == 0;
}

bool conn_tune_tcp(int fd, const struct config *cfg)
{
	bool ka = cfg->tcp_keepalive;

	if (!set_int(fd, IPPROTO_TCP, TCP_NODELAY, 1) ||
	    !set_int(fd, SOL_SOCKET, SO_KEEPALIVE, ka ? 1 : 0))
		return false;
	if (ka && ((cfg->tcp_keepidle > 0 &&
	            !set_int(fd, IPPROTO_TCP, TCP_KEEPIDLE, cfg->tcp_keepidle)) ||
	           (cfg->tcp_keepintvl > 0 &&
	            !set_int(fd, IPPROTO_TCP, TCP_KEEPINTVL, cfg->tcp_keepintvl)) ||
	           (cfg->tcp_keepcnt > 0 && !set_int(fd, IPPROTO_TCP, TCP_KEEPCNT, cfg->tcp_keepcnt))))
		return false;
	if (cfg->tcp_user_timeout > 0 &&
	    !set_int(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, cfg->tcp_user_timeout))
		return false;
	if (cfg->tcp_socket_buffer > 0 &&
	    (!set_int(fd, SOL_SOCKET, SO_SNDBUF, cfg->tcp_socket_buffer) ||
	     !set_int(fd, SOL_SOCKET, SO_RCVBUF, cfg->tcp_socket_buffer)))
		return false;
	return true;
}
