/*
 * stats — pgbouncer's per-database counters: totals since start, averages over the last
 * stats_period, the periodic "stats:" log line and the SHOW STATS family of the admin console.
 *
 * Counters live in each pool (struct pool's stats) and are summed per database name when shown,
 * over every worker's pools (stats_gather, filled in each worker's own thread).
 * Byte counts are not kept incrementally: a pool's total is what its closed connections carried
 * plus what its live connections' buffers have counted, so the relay fast path pays nothing.
 * Invariant: every counter only grows; averages are computed from two snapshots taken
 * stats_period apart (pool->stats_newer, pool->stats_older), as pgbouncer does.
 */
#ifndef SB_STATS_H
#define SB_STATS_H

#include <stdbool.h>
#include <stdint.h>

struct bouncer;
struct conn;
struct pool;
struct pktbuf;

struct stats_counters {
	uint64_t server_assignment_count;
	uint64_t xact_count;
	uint64_t query_count;
	uint64_t client_bytes; /* received from clients */
	uint64_t server_bytes; /* received from servers */
	uint64_t xact_time;    /* usec */
	uint64_t query_time;   /* usec */
	uint64_t wait_time;    /* usec */
	uint64_t client_parse_count;
	uint64_t server_parse_count;
	uint64_t bind_count;
};

/* dst += src, field by field. */
void stats_add(struct stats_counters *dst, const struct stats_counters *src);
/*
 * Averages between two snapshots dur_usec apart, in pgbouncer's units: counts and bytes per
 * second; xact, query and wait times in usec per transaction, query and server assignment.
 * dur_usec 0 gives all zeros.
 */
void stats_average(struct stats_counters *avg, const struct stats_counters *cur,
                   const struct stats_counters *old, uint64_t dur_usec);
/* The pool's counters now, bytes of its live connections included. */
void stats_pool_current(const struct pool *pool, struct stats_counters *out);

/* Hooks for the relay. client_query: the client sent Q, S or F to its server. */
void stats_client_query(struct conn *client, struct conn *server);
/* The server's ReadyForQuery is going to its client: a query (and maybe a transaction) ended. */
void stats_server_ready_for_query(struct conn *server);
/* server is being linked to client (a server assignment; ends the client's wait). */
void stats_server_assigned(struct conn *server, struct conn *client);
/* A login that waited for the pool's first server (its parameters) gets in: wait_time. */
void stats_login_waited(struct conn *client);
/* c is closing: keep the bytes its buffer counted. */
void stats_conn_closed(struct conn *c);
/* An admin console command: pgbouncer counts one transaction and one query for it. */
void stats_admin_query(struct pool *admin_pool);

/*
 * Starts the stats_period timer (snapshot rotation and, with log_stats, the log line). Needs
 * b->base and b->cfg; the state hangs off b->stats. False when out of memory. Only worker 0's
 * timer acts: it rotates every worker's snapshots at the same instant and logs one line for
 * the whole pooler; the other workers' timers find nothing to do.
 */
bool stats_start(struct bouncer *b) __attribute__((warn_unused_result));
void stats_stop(struct bouncer *b);
/* Ends the current period now on every worker: snapshots rotate and one log line is written. */
void stats_rotate(struct bouncer *b);
/* stats_period may have changed (SET, RELOAD): re-arms the timer when it did. */
void stats_settings_changed(struct bouncer *b);

enum stats_view {
	STATS_VIEW_STATS,
	STATS_VIEW_TOTALS_PER_DB, /* SHOW STATS_TOTALS */
	STATS_VIEW_AVERAGES,      /* SHOW STATS_AVERAGES */
	STATS_VIEW_TOTALS,        /* SHOW TOTALS: name/value rows over all databases */
};
const char *stats_view_str(enum stats_view v);

/*
 * One database's counters gathered over every worker's pools: the totals now (cur) and at the
 * start of the period (old). Averages are recomputed from these merged totals, never averaged
 * between workers, so N workers show what one pooler holding all their connections would.
 */
struct stats_db {
	char name[64];
	struct stats_counters cur, old;
};

/* What a view needs from every worker; filled by stats_gather_pool(), copied, never pointing
 * into a worker's state. */
struct stats_gather {
	struct stats_db *dbs;
	int n, cap;
	bool failed; /* out of memory: the view answers 53200 */
};

/* Adds (cur, old) to the entry of database name (created when new). */
void stats_gather_add(struct stats_gather *g, const char *name, const struct stats_counters *cur,
                      const struct stats_counters *old);
/* Adds pool's counters now and at the start of the period. Runs in the pool's worker. */
void stats_gather_pool(struct stats_gather *g, const struct pool *pool);
void stats_gather_free(struct stats_gather *g);

/*
 * Appends the view's RowDescription and DataRows to pb (not CommandComplete), one row per
 * database of g, sorted by name; averages over the period that b's snapshots span.
 */
void stats_write_view(struct bouncer *b, const struct stats_gather *g, enum stats_view view,
                      struct pktbuf *pb);
/* The same with the period's length given (dur_usec): what stats_write_view() computes. */
void stats_write_view_for(const struct stats_gather *g, uint64_t dur_usec, enum stats_view view,
                          struct pktbuf *pb);

#endif
