/*
 * prepared — see include/prepared.h for the model. Statements are shared by reference count
 * between the client names that map to them and the servers that hold them; the registry only
 * finds a statement again by its text. Every list here has a maximum: client names
 * (PS_CLIENT_MAX), answers in flight per server (PS_FIFO_MAX), statements per server
 * (max_prepared_statements).
 */
#include "prepared.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "conn.h"
#include "pktbuf.h"
#include "pool.h"
#include "proto.h"
#include "sbuf.h"

#define PS_BUCKETS          1024 /* statements of a pool */
#define PS_NAME_BUCKETS_MIN 16
#define PS_NAME_BUCKETS_MAX 16384
#define PS_FIFO_MIN         16
#define PS_CLIENT_MAX       10000 /* names one client may have prepared at once */
#define PS_FIFO_MAX         4096  /* Parse/Close answers one server may owe */
#define PS_NAME_MAX         32
/* the name our Close of nothing uses: never one of ours ("SB_<digits>") */
#define PS_NONE_NAME "SB_none"

struct ps_stmt {
	struct ps_stmt *next; /* registry bucket chain */
	uint64_t id;
	uint32_t hash;
	int refs;
	size_t len;
	uint8_t *blob; /* the Parse body after the name: query, NUL, parameter types */
	uint8_t name_len;
	char name[PS_NAME_MAX]; /* ours on the servers: "SB_<id>" */
};

struct ps_registry {
	struct ps_stmt *buckets[PS_BUCKETS];
	uint64_t next_id;
};

struct ps_name {
	struct ps_name *next;
	struct ps_stmt *stmt; /* the pooler's statement; NULL for an own one */
	struct ps_own *own;   /* an own statement (one allocation with its types and text) */
	char name[];          /* the client's name */
};

struct ps_client {
	struct ps_name **buckets; /* grows with the names, up to PS_NAME_BUCKETS_MAX */
	int nbuckets;
	int count; /* names, own ones included */
	int nown;  /* own statements among them */
};

enum ps_answer {
	PS_ANSWER_PASS,    /* the client's own Parse/Close */
	PS_ANSWER_SWALLOW, /* ours */
	PS_ANSWER_REPLACE, /* our Close of nothing standing in for the client's Parse */
};

struct ps_pending {
	uint8_t type; /* PQMSG_PARSE_COMPLETE or PQMSG_CLOSE_COMPLETE */
	enum ps_answer answer;
	int zs_before;           /* ReadyForQuery messages the server sends before this answer */
	struct ps_stmt *stmt;    /* a Parse of ours or the client's: prepared once answered */
	char *client_name;       /* the client's name for it, forgotten if the Parse fails */
	struct ps_stmt *restore; /* taken off the held set when sent (a Close, a DEALLOCATE): held
	                            again if the server skips it; owns a reference */
};

struct ps_held {
	struct ps_stmt *stmt;
	uint64_t last_used;
};

struct ps_server {
	struct ps_held *held;
	int nheld, maxheld; /* in use, allocated */
	int limit;          /* max_prepared_statements */
	uint64_t tick;
	struct ps_pending *fifo; /* a ring of cap entries, grown up to PS_FIFO_MAX */
	int cap, head, count;
	bool skipping; /* an error made the server skip everything up to the client's next Sync */
	bool extended; /* extended-protocol messages went out since the client's last Sync */
	/* a DEALLOCATE ALL / DISCARD ALL the server gets another statement for: the tag that
	 * replaces that statement's answer (an EmptyQueryResponse or a CommandComplete) */
	const char *answer_tag;
};

const char *ps_result_str(enum ps_result r)
{
	switch (r) {
	case PS_PASS:
		return "pass";
	case PS_CONSUMED:
		return "consumed";
	case PS_FLUSH:
		return "flush";
	case PS_FAIL:
		return "fail";
	}
	return "?";
}

static uint32_t hash_bytes(const void *p, size_t len)
{
	const uint8_t *b = p;
	uint32_t h = 2166136261u; /* FNV-1a */

	for (size_t i = 0; i < len; i++) {
		h ^= b[i];
		h *= 16777619u;
	}
	return h;
}

struct ps_registry *ps_registry_new(void)
{
	return calloc(1, sizeof(struct ps_registry));
}

void ps_registry_free(struct ps_registry *reg)
{
	if (reg == NULL)
		return;
	for (int i = 0; i < PS_BUCKETS; i++) {
		struct ps_stmt *st = reg->buckets[i], *next;
		for (; st != NULL; st = next) {
			next = st->next;
			free(st->blob);
			free(st);
		}
	}
	free(reg);
}

/* "SB_<id>", as snprintf(buf, PS_NAME_MAX, "SB_%llu", id) would write it, without printf's cost:
 * made once per statement, its length returned */
static uint8_t format_name(uint64_t id, char *buf)
{
	char digits[24];
	unsigned long long v = (unsigned long long)id;
	size_t n = 0, i = 0;

	do {
		digits[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v > 0);
	for (const char *p = "SB_"; *p; p++)
		buf[i++] = *p;
	while (n > 0)
		buf[i++] = digits[--n];
	buf[i] = '\0';
	return (uint8_t)i;
}

static void stmt_name(const struct ps_stmt *st, char *buf, size_t size)
{
	size_t n = st->name_len < size ? st->name_len : size - 1;

	memcpy(buf, st->name, n);
	buf[n] = '\0';
}

static struct ps_stmt *stmt_get(struct ps_registry *reg, const uint8_t *blob, size_t len)
{
	uint32_t h = hash_bytes(blob, len);
	struct ps_stmt **slot = &reg->buckets[h % PS_BUCKETS];
	struct ps_stmt *st;

	for (st = *slot; st != NULL; st = st->next)
		if (st->hash == h && st->len == len && memcmp(st->blob, blob, len) == 0) {
			st->refs++;
			return st;
		}
	st = calloc(1, sizeof(*st));
	if (st == NULL)
		return NULL;
	st->blob = malloc(len);
	if (st->blob == NULL) {
		free(st);
		return NULL;
	}
	memcpy(st->blob, blob, len);
	st->len = len;
	st->hash = h;
	st->id = ++reg->next_id;
	st->name_len = format_name(st->id, st->name);
	st->refs = 1;
	st->next = *slot;
	*slot = st;
	return st;
}

static void stmt_put(struct ps_registry *reg, struct ps_stmt *st)
{
	struct ps_stmt **slot;

	if (st == NULL || --st->refs > 0)
		return;
	for (slot = &reg->buckets[st->hash % PS_BUCKETS]; *slot != NULL; slot = &(*slot)->next) {
		if (*slot == st) {
			*slot = st->next;
			break;
		}
	}
	free(st->blob);
	free(st);
}

/* ---------------------------------------------------------------- client names */

static struct ps_name **name_slot(struct ps_client *pc, const char *name)
{
	struct ps_name **slot =
	        &pc->buckets[hash_bytes(name, strlen(name)) % (uint32_t)pc->nbuckets];

	for (; *slot != NULL; slot = &(*slot)->next)
		if (strcmp((*slot)->name, name) == 0)
			break;
	return slot;
}

static struct ps_client *client_state_new(void)
{
	struct ps_client *pc = calloc(1, sizeof(*pc));

	if (pc == NULL)
		return NULL;
	pc->buckets = calloc(PS_NAME_BUCKETS_MIN, sizeof(*pc->buckets));
	if (pc->buckets == NULL) {
		free(pc);
		return NULL;
	}
	pc->nbuckets = PS_NAME_BUCKETS_MIN;
	return pc;
}

/* Keeps chains short as a client prepares more names; staying small is fine if memory is. */
static void names_maybe_grow(struct ps_client *pc)
{
	int n = pc->nbuckets * 2;
	struct ps_name **b;

	if (pc->count < pc->nbuckets * 2 || n > PS_NAME_BUCKETS_MAX)
		return;
	b = calloc((size_t)n, sizeof(*b));
	if (b == NULL)
		return;
	for (int i = 0; i < pc->nbuckets; i++) {
		struct ps_name *e = pc->buckets[i], *next;
		for (; e != NULL; e = next) {
			uint32_t h = hash_bytes(e->name, strlen(e->name)) % (uint32_t)n;
			next = e->next;
			e->next = b[h];
			b[h] = e;
		}
	}
	free(pc->buckets);
	pc->buckets = b;
	pc->nbuckets = n;
}

/* Frees a name taken off its chain, and what it refers to (reg NULL: the pool is gone). */
static void name_free(struct ps_registry *reg, struct ps_client *pc, struct ps_name *n)
{
	if (n->own != NULL) {
		free(n->own);
		pc->nown--;
	} else if (reg != NULL) {
		stmt_put(reg, n->stmt);
	}
	free(n);
	pc->count--;
}

/* Forgets the pooler's names of the client, and its own statements too when own_too. */
static void name_forget_all(struct ps_registry *reg, struct ps_client *pc, bool own_too)
{
	for (int i = 0; i < pc->nbuckets; i++) {
		struct ps_name **slot = &pc->buckets[i], *n;
		while ((n = *slot) != NULL) {
			if (n->own != NULL && !own_too) {
				slot = &n->next;
				continue;
			}
			*slot = n->next;
			name_free(reg, pc, n);
		}
	}
}

/* Forgets the name; with only, just when it is the pooler's name for that statement. */
static void name_forget(struct ps_registry *reg, struct ps_client *pc, const char *name,
                        const struct ps_stmt *only)
{
	struct ps_name **slot = name_slot(pc, name);
	struct ps_name *n = *slot;

	if (n == NULL || (only != NULL && n->stmt != only))
		return;
	*slot = n->next;
	name_free(reg, pc, n);
}

/* ---------------------------------------------------------------- own statements */

static struct ps_registry *conn_registry(const struct conn *c)
{
	return c->pool != NULL ? c->pool->ps : NULL;
}

bool ps_own_set(struct conn *c, const char *name, const char *sql, int ntypes,
                const uint32_t *types, const char **msg)
{
	size_t name_len = strlen(name) + 1, sql_len = strlen(sql) + 1;
	size_t types_len = ntypes > 0 ? sizeof(uint32_t) * (size_t)ntypes : 0;
	struct ps_name **slot, *n;
	struct ps_own *own;
	char *p;

	*msg = "out of memory";
	if (c->ps == NULL && (c->ps = client_state_new()) == NULL)
		return false;
	slot = name_slot(c->ps, name);
	if (*slot == NULL && c->ps->count >= PS_CLIENT_MAX) {
		*msg = "too many prepared statements";
		return false;
	}
	own = malloc(sizeof(*own) + types_len + sql_len);
	if (own == NULL) {
		name_forget(conn_registry(c), c->ps, name, NULL);
		return false;
	}
	p = (char *)(own + 1);
	if (types_len > 0)
		memcpy(p, types, types_len);
	own->types = types_len > 0 ? (const uint32_t *)p : NULL;
	own->ntypes = ntypes > 0 ? ntypes : 0;
	memcpy(p + types_len, sql, sql_len);
	own->sql = p + types_len;

	n = *slot;
	if (n != NULL) {
		/* the name is re-prepared: whatever it was is replaced */
		if (n->own != NULL) {
			free(n->own);
		} else {
			if (conn_registry(c) != NULL)
				stmt_put(conn_registry(c), n->stmt);
			n->stmt = NULL;
			c->ps->nown++;
		}
		n->own = own;
		return true;
	}
	n = malloc(sizeof(*n) + name_len);
	if (n == NULL) {
		free(own);
		return false;
	}
	memcpy(n->name, name, name_len);
	n->stmt = NULL;
	n->own = own;
	n->next = NULL;
	*slot = n;
	c->ps->count++;
	c->ps->nown++;
	names_maybe_grow(c->ps);
	return true;
}

const struct ps_own *ps_own_find(const struct conn *c, const char *name)
{
	const struct ps_name *n;

	if (c->ps == NULL || c->ps->nown == 0)
		return NULL;
	n = *name_slot(c->ps, name);
	return n != NULL ? n->own : NULL;
}

void ps_own_drop(struct conn *c, const char *name)
{
	struct ps_name **slot, *n;

	if (c->ps == NULL || c->ps->nown == 0)
		return;
	slot = name_slot(c->ps, name);
	n = *slot;
	if (n == NULL || n->own == NULL)
		return;
	*slot = n->next;
	name_free(conn_registry(c), c->ps, n);
}

int ps_own_count(const struct conn *c)
{
	return c->ps != NULL ? c->ps->nown : 0;
}

/* ---------------------------------------------------------------- server set */

static struct ps_held *held_find(struct ps_server *pss, const struct ps_stmt *st)
{
	for (int i = 0; i < pss->nheld; i++)
		if (pss->held[i].stmt == st)
			return &pss->held[i];
	return NULL;
}

static void held_drop(struct ps_registry *reg, struct ps_server *pss, const struct ps_stmt *st)
{
	for (int i = 0; i < pss->nheld; i++) {
		if (pss->held[i].stmt == st) {
			stmt_put(reg, pss->held[i].stmt);
			pss->held[i] = pss->held[--pss->nheld];
			return;
		}
	}
}

/* Puts st back on the held set, taking over the caller's reference. */
static void held_restore(struct ps_registry *reg, struct ps_server *pss, struct ps_stmt *st)
{
	if (held_find(pss, st) != NULL) {
		stmt_put(reg, st);
		return;
	}
	if (pss->nheld == pss->maxheld) {
		struct ps_held *h = realloc(pss->held, sizeof(*h) * (size_t)(pss->maxheld + 8));
		if (h == NULL) {
			stmt_put(reg, st); /* forgotten: a later Parse of it fails, nothing worse */
			return;
		}
		pss->held = h;
		pss->maxheld += 8;
	}
	pss->held[pss->nheld].stmt = st;
	pss->held[pss->nheld].last_used = 0; /* first to go */
	pss->nheld++;
}

static struct ps_server *server_state(struct conn *s, int max)
{
	if (s->pss == NULL) {
		s->pss = calloc(1, sizeof(*s->pss));
		if (s->pss == NULL)
			return NULL;
	}
	s->pss->limit = max; /* a RELOAD may lower it: make_room() then closes the surplus */
	if (s->pss->maxheld < max) {
		struct ps_held *h = realloc(s->pss->held, sizeof(*h) * (size_t)max);
		if (h == NULL)
			return NULL;
		s->pss->held = h;
		s->pss->maxheld = max;
	}
	return s->pss;
}

static bool fifo_grow(struct ps_server *pss)
{
	int cap = pss->cap ? pss->cap * 2 : PS_FIFO_MIN;
	struct ps_pending *f;

	if (cap > PS_FIFO_MAX)
		return false;
	f = calloc((size_t)cap, sizeof(*f));
	if (f == NULL)
		return false;
	for (int i = 0; i < pss->count; i++)
		f[i] = pss->fifo[(pss->head + i) % pss->cap];
	free(pss->fifo);
	pss->fifo = f;
	pss->cap = cap;
	pss->head = 0;
	return true;
}

static struct ps_pending *fifo_at(const struct ps_server *pss, int i)
{
	return &pss->fifo[(pss->head + i) % pss->cap];
}

static bool fifo_push(struct conn *s, uint8_t type, enum ps_answer answer, struct ps_stmt *st,
                      const char *client_name)
{
	struct ps_server *pss = s->pss;
	struct ps_pending *p;
	char *name = NULL;

	if (pss->count == pss->cap && !fifo_grow(pss))
		return false;
	if (client_name != NULL && (name = strdup(client_name)) == NULL)
		return false;
	p = fifo_at(pss, pss->count);
	pss->count++;
	p->type = type;
	p->answer = answer;
	p->zs_before = server_ready_owed(s);
	p->stmt = st;
	p->client_name = name;
	p->restore = NULL;
	return true;
}

/* The last entry pushed will, if skipped, put st back on the held set. */
static void fifo_set_restore(struct ps_server *pss, struct ps_stmt *st)
{
	fifo_at(pss, pss->count - 1)->restore = st;
	st->refs++;
}

static void entry_free(struct ps_registry *reg, struct ps_pending *p)
{
	free(p->client_name);
	p->client_name = NULL;
	if (p->restore != NULL && reg != NULL)
		stmt_put(reg, p->restore);
	p->restore = NULL;
}

static void fifo_pop(struct ps_registry *reg, struct ps_server *pss)
{
	entry_free(reg, &pss->fifo[pss->head]);
	pss->head = (pss->head + 1) % pss->cap;
	pss->count--;
}

static void fifo_clear(struct ps_registry *reg, struct ps_server *pss)
{
	while (pss->count > 0)
		fifo_pop(reg, pss);
	pss->head = 0;
}

void ps_conn_release(struct conn *c)
{
	struct ps_registry *reg;

	/* most connections never used a named statement: do not even look at their pool */
	if (c->ps == NULL && c->pss == NULL)
		return;
	reg = conn_registry(c);

	if (c->ps != NULL) {
		name_forget_all(reg, c->ps, true);
		free(c->ps->buckets);
		free(c->ps);
		c->ps = NULL;
	}
	if (c->pss != NULL) {
		if (reg != NULL)
			for (int i = 0; i < c->pss->nheld; i++)
				stmt_put(reg, c->pss->held[i].stmt);
		fifo_clear(reg, c->pss);
		free(c->pss->fifo);
		free(c->pss->held);
		free(c->pss);
		c->pss = NULL;
	}
}

void ps_server_forget_all(struct conn *s)
{
	struct ps_registry *reg = s->pool->ps;

	if (s->pss == NULL)
		return;
	for (int i = 0; i < s->pss->nheld; i++)
		stmt_put(reg, s->pss->held[i].stmt);
	s->pss->nheld = 0;
}

void ps_server_released(struct conn *s)
{
	if (s->pss == NULL)
		return;
	if (s->pss->count > 0)
		slog_warning(s, "released with %d prepared-statement answers owed", s->pss->count);
	fifo_clear(s->pool->ps, s->pss);
	s->pss->skipping = false;
	s->pss->extended = false;
	s->pss->answer_tag = NULL;
}

/* ---------------------------------------------------------------- client packets */

bool ps_client_wants(uint8_t type)
{
	return type == PQMSG_PARSE || type == PQMSG_BIND || type == PQMSG_DESCRIBE ||
	       type == PQMSG_CLOSE || type == PQMSG_QUERY || type == PQMSG_SYNC;
}

static bool is_space(uint8_t ch)
{
	return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r';
}

static bool starts_with_words(const uint8_t *p, size_t len, const char *const *words)
{
	size_t i = 0;

	for (; *words != NULL; words++) {
		size_t wl = strlen(*words);
		while (i < len && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r'))
			i++;
		if (len - i < wl || strncasecmp((const char *)p + i, *words, wl) != 0)
			return false;
		i += wl;
	}
	while (i < len && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r'))
		i++;
	return i == len || p[i] == ';' || p[i] == '\0';
}

/* Whether the first letter after blanks is a 'd' (or 'D'). */
static bool begins_with_d(const uint8_t *sql, size_t len)
{
	size_t i = 0;

	while (i < len && is_space(sql[i]))
		i++;
	return i < len && (sql[i] | 0x20) == 'd';
}

/* DEALLOCATE ALL and DISCARD ALL drop every prepared statement of the session. */
static bool is_forget_all(const uint8_t *sql, size_t len)
{
	static const char *const deallocate[] = {"deallocate", "all", NULL};
	static const char *const deallocate_prepare[] = {"deallocate", "prepare", "all", NULL};
	static const char *const discard[] = {"discard", "all", NULL};
	size_t i = 0;

	/* nearly every query is neither: its first letter says so */
	while (i < len && is_space(sql[i]))
		i++;
	if (i == len || (sql[i] | 0x20) != 'd')
		return false;
	return starts_with_words(sql, len, deallocate) ||
	       starts_with_words(sql, len, deallocate_prepare) ||
	       starts_with_words(sql, len, discard);
}

/*
 * The command tag of a query string that is one DEALLOCATE ALL or DISCARD ALL and nothing else
 * (an optional ';', blanks); NULL for anything else.
 */
static const char *lone_forget_all_tag(const uint8_t *sql, size_t len)
{
	size_t i = 0;

	while (len > 0 && (sql[len - 1] == '\0' || sql[len - 1] == ';' || is_space(sql[len - 1])))
		len--;
	for (; i < len; i++)
		if (sql[i] == ';' || sql[i] == '\0')
			return NULL;
	if (!is_forget_all(sql, len))
		return NULL;
	while (i > 0 && is_space(sql[0])) {
		sql++;
		i--;
	}
	return (sql[0] | 0x20) == 'd' && (sql[1] | 0x20) == 'i' ? "DISCARD ALL" : "DEALLOCATE ALL";
}

/*
 * "DEALLOCATE [PREPARE] name" (name bare or double-quoted): copies the name, as PostgreSQL reads
 * it, to out. False for anything else, DEALLOCATE ALL included.
 */
static bool deallocate_name(const uint8_t *sql, size_t len, char *out, size_t size)
{
	size_t i = 0, n = 0;

	while (len > 0 && (sql[len - 1] == '\0' || sql[len - 1] == ';' || is_space(sql[len - 1])))
		len--;
	while (i < len && is_space(sql[i]))
		i++;
	if (len - i < 10 || strncasecmp((const char *)sql + i, "deallocate", 10) != 0)
		return false;
	i += 10;
	if (i == len || !is_space(sql[i]))
		return false;
	while (i < len && is_space(sql[i]))
		i++;
	if (len - i > 8 && strncasecmp((const char *)sql + i, "prepare", 7) == 0 &&
	    is_space(sql[i + 7])) {
		i += 7;
		while (i < len && is_space(sql[i]))
			i++;
	}
	if (i < len && sql[i] == '"') {
		for (i++; i < len; i++) {
			if (sql[i] == '"') {
				if (i + 1 < len && sql[i + 1] == '"')
					i++;
				else
					break;
			}
			if (n + 1 >= size)
				return false;
			out[n++] = (char)sql[i];
		}
		if (i + 1 != len)
			return false; /* unterminated, or more after the name */
	} else {
		for (; i < len; i++) {
			uint8_t ch = sql[i];
			if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
			      (ch >= '0' && ch <= '9') || ch == '_' || ch == '$' || ch >= 0x80))
				return false;
			if (n + 1 >= size)
				return false;
			/* unquoted identifiers fold to lower case */
			out[n++] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
		}
	}
	out[n] = '\0';
	return n > 0 && strcasecmp(out, "all") != 0;
}

/* Queues a Parse or Close of our own to the server. */
static bool queue_msg(struct conn *s, char type, char kind, const char *name,
                      const struct ps_stmt *st)
{
	struct pktbuf pb;
	bool ok;

	pktbuf_init(&pb, (st ? st->len : 0) + 64);
	pktbuf_start_msg(&pb, type);
	if (kind)
		pktbuf_put_u8(&pb, (uint8_t)kind);
	pktbuf_put_string(&pb, name);
	if (st != NULL)
		pktbuf_put_bytes(&pb, st->blob, st->len);
	pktbuf_finish_msg(&pb);
	ok = sbuf_queue_pktbuf_give(&s->sbuf, &pb);
	pktbuf_free(&pb);
	return ok;
}

/* Closes the least recently used statements until one more fits. */
static bool make_room(struct conn *s)
{
	struct ps_server *pss = s->pss;
	char name[PS_NAME_MAX];

	while (pss->nheld > 0 && pss->nheld >= pss->limit) {
		int victim = 0;
		for (int i = 1; i < pss->nheld; i++)
			if (pss->held[i].last_used < pss->held[victim].last_used)
				victim = i;
		stmt_name(pss->held[victim].stmt, name, sizeof(name));
		if (!fifo_push(s, PQMSG_CLOSE_COMPLETE, PS_ANSWER_SWALLOW, NULL, NULL) ||
		    !queue_msg(s, PQMSG_CLOSE, PQMSG_TARGET_STATEMENT, name, NULL))
			return false;
		fifo_set_restore(pss, pss->held[victim].stmt);
		held_drop(s->pool->ps, pss, pss->held[victim].stmt);
	}
	return true;
}

/*
 * Parses st on the server under our name (room made first) and holds it there; its
 * ParseComplete is answered as answer says (client_name: the client's name for it, or NULL).
 */
static bool parse_held(struct conn *s, struct ps_stmt *st, enum ps_answer answer,
                       const char *client_name)
{
	struct ps_server *pss = s->pss;
	char name[PS_NAME_MAX];

	if (!make_room(s))
		return false;
	stmt_name(st, name, sizeof(name));
	if (!fifo_push(s, PQMSG_PARSE_COMPLETE, answer, st, client_name) ||
	    !queue_msg(s, PQMSG_PARSE, 0, name, st))
		return false;
	s->pool->stats.server_parse_count++;
	st->refs++;
	pss->held[pss->nheld].stmt = st;
	pss->held[pss->nheld].last_used = ++pss->tick;
	pss->nheld++;
	return true;
}

/*
 * Makes sure the server holds st, evicting its least recently used statement if full. Our Parse
 * and Close are queued to the server and their answers swallowed.
 */
static bool ensure_prepared(struct conn *s, struct ps_stmt *st)
{
	struct ps_server *pss = s->pss;
	struct ps_held *h = held_find(pss, st);

	if (h != NULL) {
		h->last_used = ++pss->tick;
		return true;
	}
	return parse_held(s, st, PS_ANSWER_SWALLOW, NULL);
}

/*
 * Bind or Describe of a client's name (n, found): prepare it here if needed, then send it under
 * our name, built in one buffer that the server's out buffer takes as it is.
 */
static enum ps_result rewrite_ref(struct conn *s, const struct sbuf_pkt *pkt,
                                  const char *stmt_name_ptr, const struct ps_name *n)
{
	const struct ps_stmt *st = n->stmt;
	size_t before = (size_t)((const uint8_t *)stmt_name_ptr - pkt->body);
	size_t oldlen = strlen(stmt_name_ptr) + 1;
	size_t after = pkt->body_len - before - oldlen;
	size_t len = 4 + before + st->name_len + 1 + after;
	uint8_t *msg, *p;

	if (s->pss->skipping)
		return PS_CONSUMED; /* the server would skip it anyway */
	if (!ensure_prepared(s, n->stmt))
		return PS_FAIL;
	if (len > INT32_MAX || (msg = malloc(1 + len)) == NULL)
		return PS_FAIL;
	msg[0] = pkt->type;
	msg[1] = (uint8_t)(len >> 24);
	msg[2] = (uint8_t)(len >> 16);
	msg[3] = (uint8_t)(len >> 8);
	msg[4] = (uint8_t)len;
	p = msg + 5;
	memcpy(p, pkt->body, before);
	p += before;
	memcpy(p, st->name, st->name_len + 1u);
	p += st->name_len + 1u;
	memcpy(p, pkt->body + before + oldlen, after);
	return sbuf_queue_give(&s->sbuf, msg, 1 + len) ? PS_CONSUMED : PS_FAIL;
}

static enum ps_result client_parse(struct conn *c, struct conn *s, const struct sbuf_pkt *pkt,
                                   const char *name, const char **msg)
{
	struct ps_registry *reg = c->pool->ps;
	size_t off = strlen(name) + 1;
	struct ps_name **slot, *n;
	struct ps_stmt *st;

	if (name[0] == '\0')
		return fifo_push(s, PQMSG_PARSE_COMPLETE, PS_ANSWER_PASS, NULL, NULL) ? PS_PASS
		                                                                      : PS_FAIL;
	if (s->pss->skipping)
		return PS_CONSUMED;
	c->pool->stats.client_parse_count++;
	slot = name_slot(c->ps, name);
	if (*slot == NULL && c->ps->count >= PS_CLIENT_MAX) {
		*msg = "too many prepared statements";
		return PS_FAIL;
	}
	st = stmt_get(reg, pkt->body + off, pkt->body_len - off);
	if (st == NULL)
		return PS_FAIL;
	if (*slot != NULL) {
		/* PostgreSQL would refuse; replacing keeps the client working */
		if ((*slot)->own != NULL) {
			free((*slot)->own);
			(*slot)->own = NULL;
			c->ps->nown--;
		} else {
			stmt_put(reg, (*slot)->stmt);
		}
		(*slot)->stmt = st;
	} else {
		n = malloc(sizeof(*n) + off);
		if (n == NULL) {
			stmt_put(reg, st);
			return PS_FAIL;
		}
		memcpy(n->name, name, off);
		n->stmt = st;
		n->own = NULL;
		n->next = NULL;
		*slot = n;
		c->ps->count++;
		names_maybe_grow(c->ps);
	}
	if (held_find(s->pss, st) != NULL) {
		held_find(s->pss, st)->last_used = ++s->pss->tick;
		if (!fifo_push(s, PQMSG_CLOSE_COMPLETE, PS_ANSWER_REPLACE, NULL, NULL) ||
		    !queue_msg(s, PQMSG_CLOSE, PQMSG_TARGET_STATEMENT, PS_NONE_NAME, NULL))
			return PS_FAIL;
		return PS_CONSUMED;
	}
	/* the client's own Parse, under our name: its ParseComplete is the client's answer */
	return parse_held(s, st, PS_ANSWER_PASS, name) ? PS_CONSUMED : PS_FAIL;
}

/*
 * DEALLOCATE of one of the client's names, as a Query or an unnamed Parse: the server gets
 * DEALLOCATE of our name instead (prepared first if it does not hold it, so the answer is the
 * one PostgreSQL would give), and the name is forgotten. Other clients' names for the same
 * statement prepare it again when they need it.
 */
static enum ps_result deallocate_one(struct conn *c, struct conn *s, const struct sbuf_pkt *pkt,
                                     const uint8_t *sql, size_t sql_len)
{
	char name[256], ours[PS_NAME_MAX], text[PS_NAME_MAX + 16];
	struct ps_name *n;
	struct ps_stmt *st;
	struct pktbuf pb;
	bool ok;

	if (!deallocate_name(sql, sql_len, name, sizeof(name)))
		return PS_PASS;
	n = *name_slot(c->ps, name);
	if (n == NULL || n->stmt == NULL)
		return PS_PASS; /* not ours: the server answers as PostgreSQL would */
	if (sbuf_has_pending(&c->sbuf))
		return PS_FLUSH;
	st = n->stmt;
	if (s->pss->skipping)
		return PS_CONSUMED;
	if (!ensure_prepared(s, st))
		return PS_FAIL;
	stmt_name(st, ours, sizeof(ours));
	snprintf(text, sizeof(text), "DEALLOCATE \"%s\"", ours); /* our names are not lower case */
	pktbuf_init(&pb, sizeof(text) + 16);
	if (pkt->type == PQMSG_QUERY) {
		pktbuf_write_query(&pb, text);
	} else {
		pktbuf_start_msg(&pb, PQMSG_PARSE);
		pktbuf_put_u8(&pb, 0); /* the unnamed statement */
		pktbuf_put_string(&pb, text);
		pktbuf_put_u16(&pb, 0);
		pktbuf_finish_msg(&pb);
		if (!fifo_push(s, PQMSG_PARSE_COMPLETE, PS_ANSWER_PASS, NULL, NULL)) {
			pktbuf_free(&pb);
			return PS_FAIL;
		}
		fifo_set_restore(s->pss, st);
	}
	ok = sbuf_queue_pktbuf(&s->sbuf, &pb);
	pktbuf_free(&pb);
	if (!ok)
		return PS_FAIL;
	held_drop(c->pool->ps, s->pss, st);
	name_forget(c->pool->ps, c->ps, name, NULL);
	return PS_CONSUMED;
}

enum ps_result ps_client_packet(struct conn *c, struct conn *s, const struct sbuf_pkt *pkt, int max,
                                const char **msg)
{
	const char *stmt = NULL, *portal = NULL;
	const struct ps_name *n;
	const char *sql;
	size_t sql_len;
	uint16_t nparams;

	*msg = "out of memory";
	if (c->ps == NULL) {
		c->ps = client_state_new();
		if (c->ps == NULL)
			return PS_FAIL;
	}
	if (server_state(s, max) == NULL)
		return PS_FAIL;
	switch (pkt->type) {
	case PQMSG_SYNC:
		s->pss->skipping = false;
		s->pss->extended = false;
		return PS_PASS;
	case PQMSG_QUERY:
		/* DEALLOCATE and DISCARD begin with a 'd', nearly every other query does not */
		if (!begins_with_d(pkt->body, pkt->body_avail))
			return PS_PASS;
		/* maybe only the start of a long query is here: its first words decide */
		if (is_forget_all(pkt->body, pkt->body_avail)) {
			const char *tag = pkt->complete
			                          ? lone_forget_all_tag(pkt->body, pkt->body_len)
			                          : NULL;
			/*
			 * Alone, outside a transaction, with nothing owed: the client's own
			 * statements are forgotten and the answer is PostgreSQL's, but the
			 * server, shared with other clients, keeps theirs. DEALLOCATE ALL becomes
			 * an empty query; DISCARD ALL becomes RESET ALL, so that the client's
			 * settings go back to their defaults as the server reports them.
			 */
			if (tag != NULL && s->txn_status == 'I' && server_ready_owed(s) == 0 &&
			    s->pss->count == 0 && !s->pss->extended && !s->pss->skipping &&
			    s->pss->answer_tag == NULL) {
				static const uint8_t empty_query[] = {PQMSG_QUERY, 0, 0, 0, 5, 0};
				bool ok;

				if (sbuf_has_pending(&c->sbuf))
					return PS_FLUSH;
				name_forget_all(c->pool->ps, c->ps, false);
				if (tag[1] == 'I') { /* DISCARD ALL */
					struct pktbuf pb;

					pktbuf_init(&pb, 32);
					pktbuf_write_query(&pb, "RESET ALL");
					ok = sbuf_queue_pktbuf(&s->sbuf, &pb);
					pktbuf_free(&pb);
				} else {
					ok = sbuf_queue(&s->sbuf, empty_query, sizeof(empty_query));
				}
				if (!ok)
					return PS_FAIL;
				s->pss->answer_tag = tag;
				return PS_CONSUMED;
			}
			name_forget_all(c->pool->ps, c->ps, false);
			ps_server_forget_all(s);
			return PS_PASS;
		}
		if (pkt->complete)
			return deallocate_one(c, s, pkt, pkt->body, pkt->body_len);
		return PS_PASS;
	default:
		break;
	}
	s->pss->extended = true;
	if (!proto_parse_msg_names(pkt->type, pkt->body, pkt->body_len, &stmt, &portal))
		return PS_PASS; /* malformed: the server answers it */
	switch (pkt->type) {
	case PQMSG_PARSE:
		if (!proto_parse_parse(pkt->body, pkt->body_len, &stmt, &sql, &sql_len, &nparams))
			return PS_PASS;
		if (stmt[0] == '\0' && sql_len < 200 && !s->pss->skipping) {
			enum ps_result r = deallocate_one(c, s, pkt, (const uint8_t *)sql, sql_len);
			if (r != PS_PASS)
				return r;
		}
		if (stmt[0] != '\0' && sbuf_has_pending(&c->sbuf))
			return PS_FLUSH;
		return client_parse(c, s, pkt, stmt, msg);
	case PQMSG_BIND:
	case PQMSG_DESCRIBE:
		if (stmt == NULL || stmt[0] == '\0' || (n = *name_slot(c->ps, stmt)) == NULL ||
		    n->stmt == NULL)
			return PS_PASS;
		if (sbuf_has_pending(&c->sbuf))
			return PS_FLUSH;
		if (pkt->type == PQMSG_BIND)
			c->pool->stats.bind_count++;
		return rewrite_ref(s, pkt, stmt, n);
	case PQMSG_CLOSE:
		if (stmt == NULL || stmt[0] == '\0' || (n = *name_slot(c->ps, stmt)) == NULL ||
		    n->stmt == NULL)
			return fifo_push(s, PQMSG_CLOSE_COMPLETE, PS_ANSWER_PASS, NULL, NULL)
			               ? PS_PASS
			               : PS_FAIL;
		if (sbuf_has_pending(&c->sbuf))
			return PS_FLUSH;
		name_forget(c->pool->ps, c->ps, stmt, NULL);
		if (s->pss->skipping)
			return PS_CONSUMED;
		/* the statement stays on the server for others; the client gets its answer */
		if (!fifo_push(s, PQMSG_CLOSE_COMPLETE, PS_ANSWER_PASS, NULL, NULL) ||
		    !queue_msg(s, PQMSG_CLOSE, PQMSG_TARGET_STATEMENT, PS_NONE_NAME, NULL))
			return PS_FAIL;
		return PS_CONSUMED;
	default:
		return PS_PASS;
	}
}

/* ---------------------------------------------------------------- server answers */

bool ps_server_may_want(uint8_t type)
{
	return type == PQMSG_PARSE_COMPLETE || type == PQMSG_CLOSE_COMPLETE ||
	       type == PQMSG_ERROR_RESPONSE || type == PQMSG_READY_FOR_QUERY ||
	       type == PQMSG_COMMAND_COMPLETE || type == PQMSG_EMPTY_QUERY_RESPONSE;
}

bool ps_server_wants(const struct conn *s, uint8_t type)
{
	return s->pss != NULL && ps_server_may_want(type) &&
	       (type != PQMSG_EMPTY_QUERY_RESPONSE || s->pss->answer_tag != NULL);
}

/* The answer to the statement sent for a lone DEALLOCATE ALL / DISCARD ALL: the command's own. */
static enum ps_result answer_for_server(struct conn *s)
{
	struct ps_server *pss = s->pss;

	if (sbuf_has_pending(&s->sbuf))
		return PS_FLUSH;
	if (s->link != NULL) {
		struct pktbuf pb;
		bool ok;

		pktbuf_init(&pb, 32);
		pktbuf_start_msg(&pb, PQMSG_COMMAND_COMPLETE);
		pktbuf_put_string(&pb, pss->answer_tag);
		pktbuf_finish_msg(&pb);
		ok = sbuf_queue_pktbuf(&s->link->sbuf, &pb);
		pktbuf_free(&pb);
		if (!ok)
			return PS_FAIL;
	}
	pss->answer_tag = NULL;
	return PS_CONSUMED;
}

/*
 * After an ErrorResponse the server skips the rest of this Sync's stretch: its answers are no
 * longer owed, and what its Parses would have prepared does not exist. Later stretches stay.
 */
static void drop_stretch(struct conn *s)
{
	struct ps_registry *reg = s->pool->ps;
	struct ps_server *pss = s->pss;
	struct conn *c = s->link;
	int w = 0;

	/* undo what the skipped messages did to the held set, latest first */
	for (int r = pss->count - 1; r >= 0; r--) {
		struct ps_pending *p = fifo_at(pss, r);
		if (p->zs_before > 0)
			continue;
		if (p->type == PQMSG_PARSE_COMPLETE && p->stmt != NULL) {
			if (p->client_name != NULL && c != NULL && c->ps != NULL)
				name_forget(reg, c->ps, p->client_name, p->stmt);
			held_drop(reg, pss, p->stmt);
		}
		if (p->restore != NULL) {
			held_restore(reg, pss, p->restore);
			p->restore = NULL;
		}
	}
	for (int r = 0; r < pss->count; r++) {
		struct ps_pending *p = fifo_at(pss, r);
		if (p->zs_before > 0) {
			*fifo_at(pss, w++) = *p; /* w <= r: in place, order kept */
			continue;
		}
		entry_free(reg, p);
	}
	pss->count = w;
	if (server_ready_owed(s) == 0)
		pss->skipping = true;
}

enum ps_result ps_server_packet(struct conn *s, const struct sbuf_pkt *pkt)
{
	struct ps_server *pss = s->pss;
	struct ps_pending *p;
	static const uint8_t parse_complete[5] = {PQMSG_PARSE_COMPLETE, 0, 0, 0, 4};

	switch (pkt->type) {
	case PQMSG_READY_FOR_QUERY:
		for (int i = 0; i < pss->count; i++) {
			p = fifo_at(pss, i);
			if (p->zs_before > 0)
				p->zs_before--;
		}
		return PS_PASS;
	case PQMSG_ERROR_RESPONSE:
		pss->answer_tag = NULL;
		drop_stretch(s);
		return PS_PASS;
	case PQMSG_EMPTY_QUERY_RESPONSE:
		/* our empty query in place of the client's DEALLOCATE ALL */
		if (pss->answer_tag == NULL)
			return PS_PASS;
		return answer_for_server(s);
	case PQMSG_COMMAND_COMPLETE:
		/* our RESET ALL in place of the client's DISCARD ALL */
		if (pss->answer_tag != NULL)
			return answer_for_server(s);
		/* however it was sent (a pipeline sends it as a Parse), the statements are gone
		 * once PostgreSQL says so */
		if ((pkt->body_len == 15 && memcmp(pkt->body, "DEALLOCATE ALL", 15) == 0) ||
		    (pkt->body_len == 12 && memcmp(pkt->body, "DISCARD ALL", 12) == 0)) {
			ps_server_forget_all(s);
			if (s->link != NULL && s->link->ps != NULL)
				name_forget_all(s->pool->ps, s->link->ps, false);
		}
		return PS_PASS;
	default:
		break;
	}
	if (pss->count == 0)
		return PS_PASS;
	p = &pss->fifo[pss->head];
	if (p->type != pkt->type) {
		slog_warning(s, "unexpected '%c' answer (expected '%c')", pkt->type, p->type);
		return PS_PASS;
	}
	switch (p->answer) {
	case PS_ANSWER_PASS:
		fifo_pop(s->pool->ps, pss);
		return PS_PASS;
	case PS_ANSWER_SWALLOW:
		fifo_pop(s->pool->ps, pss);
		return PS_CONSUMED;
	case PS_ANSWER_REPLACE:
		if (s->link == NULL) {
			fifo_pop(s->pool->ps, pss);
			return PS_CONSUMED;
		}
		if (sbuf_has_pending(&s->sbuf))
			return PS_FLUSH;
		fifo_pop(s->pool->ps, pss);
		if (!sbuf_queue(&s->link->sbuf, parse_complete, sizeof(parse_complete)))
			return PS_FAIL;
		return PS_CONSUMED;
	}
	return PS_PASS;
}
