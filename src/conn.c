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
	char msg[2048];
	va_list ap;

	if (!log_enabled(lvl))
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_msg(lvl, "%c-%p: %s/%s@%s:%d %s", c->is_server ? 'S' : 'C', (const void *)c,
	        c->pool ? c->pool->db_name : (c->dbname[0] ? c->dbname : "(nodb)"),
	        /* a client logs as who it is, even in a forced user's pool */
	        !c->is_server && c->user[0] ? c->user : (c->pool ? c->pool->user_name : "(nouser)"),
	        c->addr_str, c->port, msg);
}

const char *param_get(const struct param_set *ps, const char *name)
{
	for (int i = 0; i < ps->n; i++)
		if (strcasecmp(ps->p[i].name, name) == 0)
			return ps->p[i].value;
	return NULL;
}

bool param_set_value(struct param_set *ps, const char *name, const char *value)
{
	char *v;

	for (int i = 0; i < ps->n; i++) {
		if (strcasecmp(ps->p[i].name, name) == 0) {
			v = strdup(value);
			if (v == NULL)
				return false;
			free(ps->p[i].value);
			ps->p[i].value = v;
			return true;
		}
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
	ps->n++;
	return true;
}

void param_clear(struct param_set *ps)
{
	for (int i = 0; i < ps->n; i++) {
		free(ps->p[i].name);
		free(ps->p[i].value);
	}
	ps->n = 0;
}

void conn_retire(struct conn *c)
{
	if (c->state == CONN_JUSTFREE)
		return;
	stats_conn_closed(c);
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
		free(c->scram_srv);
		free(c->scram_cli);
		free(c->host);
		free(c);
	}
}
