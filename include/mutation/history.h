/*
 * history — the record of finished synced writes: the log_mutations line, the last
 * mutation_history writes that SHOW MUTATIONS lists beside those in flight, and the latency
 * histograms of the metrics endpoint (mutation latency by table, operation and outcome; API call
 * latency by API and outcome).
 *
 * It hangs off the bouncer (b->history), not off the synced-table side, so that a RELOAD that
 * rebuilds the synced tables keeps the record. The ring's size and the log switch are read from
 * b->cfg at each record, so SET and RELOAD take effect at the next write. Memory is bounded by
 * mutation_history records of fixed size plus the histogram families' bounds.
 */
#ifndef SB_MUTATION_HISTORY_H
#define SB_MUTATION_HISTORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct bouncer;
struct conn;
struct evbuffer;
struct mutation_history;

/* One finished write, as the pipeline reports it (strings borrowed for the call). */
struct mutation_report {
	struct conn *client;  /* still connected, or NULL */
	uint64_t client_id;   /* the id SHOW CLIENTS and KILL_CLIENT use; 0 if unknown */
	const char *database; /* [databases] entry */
	const char *table;    /* schema.table */
	const char *operation;
	const char *api;
	int rows;
	bool api_called;        /* a request was sent (or tried) */
	int http_status;        /* of the API's last answer, 0 when none */
	const char *request_id; /* the API's id of its answer, NULL/"" when it gave none */
	int64_t api_usec;       /* the API call, from sending to the answer used; -1 when none */
	int64_t total_usec;     /* from the statement's arrival to its answer */
	const char *outcome;    /* "ok", or the API's error class, or "failed" (database side) */
	const char *sqlstate;   /* of the error the client got; NULL/"" when it succeeded */
	const char *values;     /* the values written, for the DEBUG line only; may be NULL */
};

struct mutation_history *history_new(void);
void history_free(struct mutation_history *h);

/* Records r: the log line (log_mutations), the ring (mutation_history), the histograms. */
void history_record(struct bouncer *b, const struct mutation_report *r);

/* Columns SHOW MUTATIONS adds after its first eight for the finished writes. */
typedef void (*history_row_cb)(void *arg, int ncols, const char *const *values);
/*
 * One row per finished write kept, newest first, in SHOW MUTATIONS' columns: client, database,
 * table, operation, rows, api, state ("done"), age (seconds since it started), outcome, sqlstate,
 * http_status, request_id, latency_us.
 */
void history_show(const struct mutation_history *h, history_row_cb cb, void *arg);
/* The finished writes kept now. */
int history_count(const struct mutation_history *h);

/*
 * The SQLSTATE of an ErrorResponse message err[0..len) into out (size >= 6); "" when err is not
 * one or has none.
 */
void history_error_sqlstate(const uint8_t *err, size_t len, char *out, size_t size);

/* Appends the histograms and counters in the Prometheus text format. */
void history_write_metrics(const struct mutation_history *h, struct evbuffer *out);

#endif
