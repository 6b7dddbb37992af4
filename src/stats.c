/*
 * stats — see include/stats.h. The timer keeps two snapshots per pool; SHOW and the log line
 * average between the older snapshot and now, so an average always covers at least one whole
 * stats_period once the process has run that long. Worker 0's timer takes every worker's
 * snapshots (workers_each), and gives every worker the same two stamps, so the merged totals
 * of all workers and the period they span agree.
 */
#include "stats.h"

#include <event2/event.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bouncer.h"
#include "config.h"
#include "conn.h"
#include "log.h"
#include "pktbuf.h"
#include "pool.h"
#include "ticker.h"
#include "workers.h"

#define OID_TEXT    25u
#define OID_NUMERIC 1700u

/* Pools shown at once are bounded by memory only; names are grouped with a sorted index. */
struct stats_state {
	struct bouncer *b;
	struct tick tick;
	uint64_t old_stamp, new_stamp;
	int period; /* seconds the timer was armed with */
};

const char *stats_view_str(enum stats_view v)
{
	switch (v) {
	case STATS_VIEW_STATS:
		return "stats";
	case STATS_VIEW_TOTALS_PER_DB:
		return "stats_totals";
	case STATS_VIEW_AVERAGES:
		return "stats_averages";
	case STATS_VIEW_TOTALS:
		return "totals";
	}
	return "?";
}

void stats_add(struct stats_counters *dst, const struct stats_counters *src)
{
	dst->server_assignment_count += src->server_assignment_count;
	dst->xact_count += src->xact_count;
	dst->query_count += src->query_count;
	dst->client_bytes += src->client_bytes;
	dst->server_bytes += src->server_bytes;
	dst->xact_time += src->xact_time;
	dst->query_time += src->query_time;
	dst->wait_time += src->wait_time;
	dst->client_parse_count += src->client_parse_count;
	dst->server_parse_count += src->server_parse_count;
	dst->bind_count += src->bind_count;
}

/* A counter that went backwards (a pool recreated between snapshots) counts as 0. */
static uint64_t delta(uint64_t cur, uint64_t old)
{
	return cur > old ? cur - old : 0;
}

static uint64_t per_second(uint64_t n, uint64_t dur_usec)
{
	/* n * 1e6 overflows only past 1.8e13 events per period; divide first then */
	if (n > UINT64_MAX / 1000000u)
		return n / dur_usec * 1000000u;
	return n * 1000000u / dur_usec;
}

void stats_average(struct stats_counters *avg, const struct stats_counters *cur,
                   const struct stats_counters *old, uint64_t dur_usec)
{
	uint64_t queries, xacts, assigns;

	memset(avg, 0, sizeof(*avg));
	if (dur_usec == 0)
		return;
	queries = delta(cur->query_count, old->query_count);
	xacts = delta(cur->xact_count, old->xact_count);
	assigns = delta(cur->server_assignment_count, old->server_assignment_count);
	avg->query_count = per_second(queries, dur_usec);
	avg->xact_count = per_second(xacts, dur_usec);
	avg->server_assignment_count = per_second(assigns, dur_usec);
	avg->client_bytes = per_second(delta(cur->client_bytes, old->client_bytes), dur_usec);
	avg->server_bytes = per_second(delta(cur->server_bytes, old->server_bytes), dur_usec);
	if (queries > 0)
		avg->query_time = delta(cur->query_time, old->query_time) / queries;
	if (xacts > 0)
		avg->xact_time = delta(cur->xact_time, old->xact_time) / xacts;
	if (assigns > 0)
		avg->wait_time = delta(cur->wait_time, old->wait_time) / assigns;
	avg->client_parse_count =
	        per_second(delta(cur->client_parse_count, old->client_parse_count), dur_usec);
	avg->server_parse_count =
	        per_second(delta(cur->server_parse_count, old->server_parse_count), dur_usec);
	avg->bind_count = per_second(delta(cur->bind_count, old->bind_count), dur_usec);
}

static void add_live_bytes(const struct list *l, struct stats_counters *out)
{
	const struct list *it;

	list_for_each(it, l)
	{
		const struct conn *c = list_entry(it, struct conn, head);
		if (c->admin)
			continue;
		if (c->is_server)
			out->server_bytes += c->sbuf.bytes_in;
		else
			out->client_bytes += c->sbuf.bytes_in;
	}
}

void stats_pool_current(const struct pool *pool, struct stats_counters *out)
{
	*out = pool->stats;
	add_live_bytes(&pool->active_clients, out);
	add_live_bytes(&pool->waiting_clients, out);
	add_live_bytes(&pool->login_clients, out);
	add_live_bytes(&pool->idle_servers, out);
	add_live_bytes(&pool->active_servers, out);
	add_live_bytes(&pool->used_servers, out);
	add_live_bytes(&pool->tested_servers, out);
	add_live_bytes(&pool->login_servers, out);
}

void stats_client_query(struct conn *client, struct conn *server)
{
	uint64_t now = bouncer_now_usec();

	(void)client;
	if (server->query_start == 0)
		server->query_start = now;
	if (server->xact_start == 0)
		server->xact_start = now;
}

void stats_server_ready_for_query(struct conn *s)
{
	struct stats_counters *st = &s->pool->stats;
	uint64_t now = bouncer_now_usec();

	if (s->query_start != 0) {
		st->query_count++;
		st->query_time += now - s->query_start;
		/* pipelined queries still owed an answer start their clock now */
		s->query_start = server_ready_owed(s) > 0 ? now : 0;
	}
	if (s->txn_status == 'I' && s->xact_start != 0) {
		st->xact_count++;
		st->xact_time += now - s->xact_start;
		s->xact_start = server_ready_owed(s) > 0 ? now : 0;
	}
}

void stats_server_assigned(struct conn *server, struct conn *client)
{
	struct stats_counters *st = &server->pool->stats;

	st->server_assignment_count++;
	if (client->state == CL_WAITING && client->request_time != 0) {
		uint64_t now = bouncer_now_usec();
		if (now > client->request_time)
			st->wait_time += now - client->request_time;
	}
}

void stats_login_waited(struct conn *client)
{
	uint64_t now = bouncer_now_usec();

	if (client->pool != NULL && client->request_time != 0 && now > client->request_time)
		client->pool->stats.wait_time += now - client->request_time;
}

void stats_conn_closed(struct conn *c)
{
	if (c->pool == NULL || c->admin)
		return;
	if (c->is_server)
		c->pool->stats.server_bytes += c->sbuf.bytes_in;
	else
		c->pool->stats.client_bytes += c->sbuf.bytes_in;
	/* a closed conn's buffer is not counted twice by stats_pool_current() */
	c->sbuf.bytes_in = 0;
}

void stats_admin_query(struct pool *admin_pool)
{
	admin_pool->stats.xact_count++;
	admin_pool->stats.query_count++;
}

static void tick(void *arg)
{
	struct bouncer *b = arg;

	/* worker 0 rotates every worker's snapshots; the others' timers have nothing to do */
	if (worker_index(b) == 0)
		stats_rotate(b);
}

static bool arm(struct stats_state *st)
{
	st->period = st->b->cfg->stats_period > 0 ? st->b->cfg->stats_period : 60;
	return tick_start(st->b, &st->tick, (uint64_t)st->period * 1000000u);
}

bool stats_start(struct bouncer *b)
{
	struct stats_state *st = calloc(1, sizeof(*st));

	if (st == NULL)
		return false;
	st->b = b;
	st->new_stamp = bouncer_now_usec();
	st->old_stamp = st->new_stamp - 1000000u;
	tick_init(&st->tick, tick, b);
	if (!arm(st)) {
		free(st);
		return false;
	}
	b->stats = st;
	return true;
}

void stats_stop(struct bouncer *b)
{
	struct stats_state *st = b->stats;

	if (st == NULL)
		return;
	tick_stop(b, &st->tick);
	free(st);
	b->stats = NULL;
}

/* One rotation: the stamps every worker takes, and the pooler's totals for the log line. */
struct rotation {
	uint64_t old_stamp, new_stamp;
	struct stats_counters cur, old;
};

static void rotate_worker(struct bouncer *w, void *arg)
{
	struct rotation *rot = arg;
	struct stats_state *st = w->stats;
	struct list *it;

	list_for_each(it, &w->pools)
	{
		struct pool *pool = list_entry(it, struct pool, head);
		struct stats_counters now;

		stats_pool_current(pool, &now);
		pool->stats_older = pool->stats_newer;
		pool->stats_newer = now;
		stats_add(&rot->cur, &now);
		stats_add(&rot->old, &pool->stats_older);
	}
	if (st != NULL) {
		st->old_stamp = rot->old_stamp;
		st->new_stamp = rot->new_stamp;
	}
}

void stats_rotate(struct bouncer *b)
{
	struct stats_state *st = b->stats;
	struct rotation rot;
	struct stats_counters avg;

	if (st == NULL)
		return;
	memset(&rot, 0, sizeof(rot));
	rot.old_stamp = st->new_stamp;
	rot.new_stamp = bouncer_now_usec();
	workers_each(b, rotate_worker, &rot);
	if (b->cfg->log_stats) {
		stats_average(&avg, &rot.cur, &rot.old, rot.new_stamp - rot.old_stamp);
		log_info("stats: %" PRIu64 " xacts/s, %" PRIu64 " queries/s, %" PRIu64
		         " client parses/s, %" PRIu64 " server parses/s, %" PRIu64
		         " binds/s, in %" PRIu64 " B/s, out %" PRIu64 " B/s, xact %" PRIu64
		         " us, query %" PRIu64 " us, wait %" PRIu64 " us",
		         avg.xact_count, avg.query_count, avg.client_parse_count,
		         avg.server_parse_count, avg.bind_count, avg.client_bytes, avg.server_bytes,
		         avg.xact_time, avg.query_time, avg.wait_time);
	}
	stats_settings_changed(b);
}

void stats_settings_changed(struct bouncer *b)
{
	struct stats_state *st = b->stats;

	if (st == NULL || b->cfg->stats_period <= 0 || b->cfg->stats_period == st->period)
		return;
	if (!arm(st))
		log_warning("cannot re-arm the stats timer");
}

void stats_gather_add(struct stats_gather *g, const char *name, const struct stats_counters *cur,
                      const struct stats_counters *old)
{
	struct stats_db *d;

	if (g->failed)
		return;
	if (g->n == g->cap) {
		int cap = g->cap ? g->cap * 2 : 16;
		struct stats_db *n = realloc(g->dbs, (size_t)cap * sizeof(*n));
		if (n == NULL) {
			g->failed = true;
			return;
		}
		g->dbs = n;
		g->cap = cap;
	}
	/* one entry per pool; entries of the same database are merged when the view is written */
	d = &g->dbs[g->n++];
	snprintf(d->name, sizeof(d->name), "%s", name);
	d->cur = *cur;
	d->old = *old;
}

void stats_gather_pool(struct stats_gather *g, const struct pool *pool)
{
	struct stats_counters now;

	stats_pool_current(pool, &now);
	stats_gather_add(g, pool->db_name, &now, &pool->stats_older);
}

void stats_gather_free(struct stats_gather *g)
{
	free(g->dbs);
	memset(g, 0, sizeof(*g));
}

static int cmp_db(const void *a, const void *b)
{
	return strcmp(((const struct stats_db *)a)->name, ((const struct stats_db *)b)->name);
}

static void put_row(struct pktbuf *pb, const char *name, const uint64_t *vals, int n)
{
	char bufs[24][24];
	const char *cols[25];

	cols[0] = name;
	for (int i = 0; i < n && i < 24; i++) {
		snprintf(bufs[i], sizeof(bufs[i]), "%" PRIu64, vals[i]);
		cols[i + 1] = bufs[i];
	}
	pktbuf_write_data_row(pb, n + 1, cols);
}

/* The 11 counters in pgbouncer's column order. */
static void counters_array(const struct stats_counters *s, uint64_t out[11])
{
	out[0] = s->server_assignment_count;
	out[1] = s->xact_count;
	out[2] = s->query_count;
	out[3] = s->client_bytes;
	out[4] = s->server_bytes;
	out[5] = s->xact_time;
	out[6] = s->query_time;
	out[7] = s->wait_time;
	out[8] = s->client_parse_count;
	out[9] = s->server_parse_count;
	out[10] = s->bind_count;
}

static const char *const counter_names[11] = {
        "server_assignment_count",
        "xact_count",
        "query_count",
        "received",
        "sent",
        "xact_time",
        "query_time",
        "wait_time",
        "client_parse_count",
        "server_parse_count",
        "bind_count",
};

static void write_header(struct pktbuf *pb, enum stats_view view)
{
	const char *names[23];
	uint32_t types[23];
	char store[23][40];
	int n = 0;

	names[n] = "database";
	types[n++] = OID_TEXT;
	for (int pass = 0; pass < 2; pass++) {
		bool total = pass == 0;
		if ((view == STATS_VIEW_TOTALS_PER_DB && !total) ||
		    (view == STATS_VIEW_AVERAGES && total))
			continue;
		for (int i = 0; i < 11; i++) {
			const char *base = counter_names[i];
			if (view == STATS_VIEW_STATS) {
				if (!total && i == 3)
					base = "recv";
				snprintf(store[n], sizeof(store[n]), "%s_%s",
				         total ? "total" : "avg", base);
			} else if (i == 3 || i == 4) {
				snprintf(store[n], sizeof(store[n]), "bytes_%s", base);
			} else if (!total && i >= 8) {
				snprintf(store[n], sizeof(store[n]), "avg_%s", base);
			} else {
				snprintf(store[n], sizeof(store[n]), "%s", base);
			}
			names[n] = store[n];
			types[n++] = OID_NUMERIC;
		}
	}
	pktbuf_write_row_description(pb, n, names, types);
}

static void write_totals(struct pktbuf *pb, const struct stats_counters *tot,
                         const struct stats_counters *avg)
{
	static const char *const tnames[11] = {
	        "server_assignment_count",
	        "xact_count",
	        "query_count",
	        "client_bytes",
	        "server_bytes",
	        "xact_time",
	        "query_time",
	        "wait_time",
	        "ps_client_parse_count",
	        "ps_server_parse_count",
	        "ps_bind_count",
	};
	static const char *const cols[2] = {"name", "value"};
	static const uint32_t types[2] = {OID_TEXT, OID_NUMERIC};
	uint64_t t[11], a[11];
	char name[48];

	counters_array(tot, t);
	counters_array(avg, a);
	pktbuf_write_row_description(pb, 2, cols, types);
	for (int pass = 0; pass < 2; pass++) {
		for (int i = 0; i < 11; i++) {
			snprintf(name, sizeof(name), "%s_%s", pass == 0 ? "total" : "avg",
			         tnames[i]);
			put_row(pb, name, pass == 0 ? &t[i] : &a[i], 1);
		}
	}
}

void stats_write_view(struct bouncer *b, const struct stats_gather *g, enum stats_view view,
                      struct pktbuf *pb)
{
	struct stats_state *st = b->stats;
	uint64_t now = bouncer_now_usec();

	stats_write_view_for(g, st != NULL && now > st->old_stamp ? now - st->old_stamp : 0, view,
	                     pb);
}

void stats_write_view_for(const struct stats_gather *g, uint64_t dur, enum stats_view view,
                          struct pktbuf *pb)
{
	struct stats_db *sorted;
	struct stats_counters db_cur, db_old, all_cur, all_old, avg;
	uint64_t t[11], a[11], vals[22];
	int n = g->n;

	memset(&all_cur, 0, sizeof(all_cur));
	memset(&all_old, 0, sizeof(all_old));
	sorted = calloc((size_t)(n > 0 ? n : 1), sizeof(*sorted));
	if (sorted == NULL || g->failed) {
		free(sorted);
		pktbuf_write_error(pb, "ERROR", "53200", "out of memory", NULL, NULL);
		return;
	}
	if (n > 0)
		memcpy(sorted, g->dbs, (size_t)n * sizeof(*sorted));
	qsort(sorted, (size_t)n, sizeof(*sorted), cmp_db);
	if (view != STATS_VIEW_TOTALS)
		write_header(pb, view);
	for (int i = 0; i < n;) {
		int j = i;

		memset(&db_cur, 0, sizeof(db_cur));
		memset(&db_old, 0, sizeof(db_old));
		for (; j < n && strcmp(sorted[j].name, sorted[i].name) == 0; j++) {
			stats_add(&db_cur, &sorted[j].cur);
			stats_add(&db_old, &sorted[j].old);
		}
		stats_add(&all_cur, &db_cur);
		stats_add(&all_old, &db_old);
		stats_average(&avg, &db_cur, &db_old, dur);
		counters_array(&db_cur, t);
		counters_array(&avg, a);
		switch (view) {
		case STATS_VIEW_STATS:
			memcpy(vals, t, sizeof(t));
			memcpy(vals + 11, a, sizeof(a));
			put_row(pb, sorted[i].name, vals, 22);
			break;
		case STATS_VIEW_TOTALS_PER_DB:
			put_row(pb, sorted[i].name, t, 11);
			break;
		case STATS_VIEW_AVERAGES:
			put_row(pb, sorted[i].name, a, 11);
			break;
		case STATS_VIEW_TOTALS:
			break;
		}
		i = j;
	}
	if (view == STATS_VIEW_TOTALS) {
		stats_average(&avg, &all_cur, &all_old, dur);
		write_totals(pb, &all_cur, &avg);
	}
	free(sorted);
}
