/*
 * conn — what client and server connections share: state lists, log prefix, tracked parameters
 * and deferred freeing. A closed connection is moved to bouncer->justfree and freed from a
 * zero-delay event, so that no callback still on the stack touches freed memory.
 */
#include "conn.h"

#include <event2/event.h>
#include <stdarg.h>
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
	db = c->pool ? c->pool->db_name : (c->dbname[0] ? c->dbname : "(nodb)");
	/* a client logs as who it is, even in a forced user's pool */
	user = !c->is_server && c->user[0] ? c->user : (c->pool ? c->pool->user_name : "(nouser)");
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

static uint64_t param_last_gen;

void param_touch(struct param_set *ps)
{
	ps->gen = ++param_last_gen;
}

bool param_set_value(struct param_set *ps, const char *name, const char *value)
{
	uint32_t hash = param_hash(name);
	int i = param_index(ps, name, hash);
	char *v;

	if (i >= 0) {
		if (strcmp(ps->p[i].value, value) == 0)
			return true; /* unchanged: the same generation */
		v = strdup(value);
		if (v == NULL)
			return false;
		free(ps->p[i].value);
		ps->p[i].value = v;
		param_touch(ps);
		return true;
	}
	if (ps->n == PARAM_MAX)
		return false;
	ps->p[ps->n].name = strdup(name);
	ps->p[ps->n].value = strdup(value);
	if (ps->p[ps->n].name == NULL || ps->p[ps->n].value == NULL) {
		free(ps->p[ps->n].name);
		free(ps->p[ps->n].value);
		return false;
	}
	ps->p[ps->n].hash = hash;
	ps->n++;
	param_touch(ps);
	return true;
}

void param_clear(struct param_set *ps)
{
	for (int i = 0; i < ps->n; i++) {
		free(ps->p[i].name);
		free(ps->p[i].value);
	}
	ps->n = 0;
	param_touch(ps);
}

void conn_retire(struct conn *c)
{
	if (c->state == CONN_JUSTFREE)
		return;
	stats_conn_closed(c);
	if (c->connecting) {
		event_del(&c->ev_connect);
		c->connecting = false;
	}
	sbuf_close(&c->sbuf);
	ps_conn_release(c);
	if (c->timer_ready) {
		event_del(&c->ev_timer);
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
		param_clear(&c->startup);
		free(c->params_key);
		free(c->in_force_key);
		auth_conn_free(c);
		free(c->scram_srv);
		free(c->scram_cli);
		free(c->host);
		free(c);
	}
}
