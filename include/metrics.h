/*
 * metrics — the Prometheus endpoint: GET /metrics on metrics_listen (ADDR:PORT, or a unix socket
 * path), served by libevent's HTTP server on the pooler's own loop. Off when metrics_listen is
 * empty.
 *
 * What it exports is what the admin console shows: each scrape runs the SHOW views through
 * admin_show_rows() and turns the columns named in one table (src/metrics.c, a line per column)
 * into gauges and counters, under the pgbouncer exporter's names for pgbouncer's own views so
 * that its dashboards keep working; a column a view does not have is skipped, so a view that
 * gains a column is exported by adding its line. The latency histograms come from the mutation
 * history (mutation/history.h).
 *
 * With metrics_users set, a request needs HTTP basic auth as one of those users, with the
 * password of the auth_file; without it anyone who can reach the address may read the metrics
 * (names of databases, users, tables and APIs, counts; never a secret or a value).
 */
#ifndef SB_METRICS_H
#define SB_METRICS_H

#include <stdbool.h>

struct bouncer;
struct evbuffer;

/* Listens on b->cfg->metrics_listen (nothing when empty). False, logged, when it cannot. */
bool metrics_start(struct bouncer *b) __attribute__((warn_unused_result));
/* Closes the endpoint (and removes its unix socket). */
void metrics_stop(struct bouncer *b);
/* Appends one scrape's text to out. */
void metrics_render(struct bouncer *b, struct evbuffer *out);

#endif
