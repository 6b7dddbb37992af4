/*
 * histogram — latency histograms for the metrics endpoint: fixed buckets in seconds, the ones a
 * Prometheus client library would use for request latencies, from 1 ms to 30 s.
 *
 * A family is one metric name with many label sets (one series each), e.g.
 * syncbouncer_api_request_duration_seconds{api="salesforce",outcome="ok"}. Memory is bounded: a
 * family holds at most HIST_MAX_SERIES label sets; observations of more are counted in
 * dropped and not kept. Label texts are made by the caller (hist_label_value() escapes a value).
 */
#ifndef SB_HISTOGRAM_H
#define SB_HISTOGRAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct evbuffer;

#define HIST_NBUCKETS   14
#define HIST_MAX_SERIES 4096

/* Upper bounds of the buckets, in seconds, ascending; a last bucket +Inf is implied. */
extern const double hist_bounds[HIST_NBUCKETS];

struct hist {
	uint64_t counts[HIST_NBUCKETS + 1]; /* per bucket, not cumulative; [HIST_NBUCKETS] = +Inf */
	uint64_t count;
	int64_t sum_usec;
};

/* One observation of usec microseconds (negative counts as 0). */
void hist_observe(struct hist *h, int64_t usec);

struct hist_series {
	char *labels; /* `api="x",outcome="ok"`, owned */
	struct hist h;
};

struct hist_family {
	const char *name; /* static */
	const char *help; /* static */
	struct hist_series *series;
	int n, cap;
	uint64_t dropped;
};

/* An empty family (nothing allocated until the first observation). */
void hist_family_init(struct hist_family *f, const char *name, const char *help);
void hist_family_free(struct hist_family *f);
/*
 * Records usec in the series of labels (created on first use). False, and the observation is
 * only counted in dropped, when out of memory or the family is full.
 */
bool hist_family_observe(struct hist_family *f, const char *labels, int64_t usec);
/* Appends the family in the Prometheus text format (# HELP, # TYPE, _bucket, _sum, _count). */
void hist_family_write(const struct hist_family *f, struct evbuffer *out);

/*
 * Writes value into buf as a label value of the text format (\\, \" and \n escaped), cut to fit;
 * always NUL-terminates (size > 0).
 */
void hist_label_value(char *buf, size_t size, const char *value);

#endif
