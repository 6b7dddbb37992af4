/*
 * history — see include/mutation/history.h. The ring is an array of fixed-size entries used
 * circularly; when mutation_history changes, the next record re-sizes it keeping the newest.
 */
#include "mutation/history.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bouncer.h"
#include "config.h"
#include "conn.h"
#include "histogram.h"
#include "log.h"
#include "proto.h"

struct history_entry {
	uint64_t client_id;
	uint64_t started; /* bouncer_now_usec() when the statement arrived */
	int64_t total_usec;
	int rows;
	int http_status;
	char database[64];
	char table[128];
	char operation[16];
	char api[64];
	char outcome[32];
	char sqlstate[6];
	char request_id[96];
};

struct mutation_history {
	struct history_entry *ring;
	int cap;  /* entries allocated */
	int n;    /* entries in use */
	int next; /* where the next record goes */
	struct hist_family mutation_lat;
	struct hist_family api_lat;
};

struct mutation_history *history_new(void)
{
	struct mutation_history *h = calloc(1, sizeof(*h));

	if (h == NULL)
		return NULL;
	hist_family_init(&h->mutation_lat, "syncbouncer_mutation_duration_seconds",
	                 "Synced writes by table, operation and outcome: time from the statement's "
	                 "arrival to its answer");
	hist_family_init(&h->api_lat, "syncbouncer_api_request_duration_seconds",
	                 "API calls of synced writes by API and outcome: time from sending to the "
	                 "answer used (retries included)");
	return h;
}

void history_free(struct mutation_history *h)
{
	if (h == NULL)
		return;
	hist_family_free(&h->mutation_lat);
	hist_family_free(&h->api_lat);
	free(h->ring);
	free(h);
}

/* The i-th newest entry, 0 <= i < n. */
static const struct history_entry *newest(const struct mutation_history *h, int i)
{
	return &h->ring[((h->next - 1 - i) % h->cap + h->cap) % h->cap];
}

/* Makes the ring hold cap entries, keeping the newest; false when out of memory. */
static bool resize(struct mutation_history *h, int cap)
{
	struct history_entry *ring = NULL;
	int keep = h->n < cap ? h->n : cap;

	if (cap > 0) {
		ring = calloc((size_t)cap, sizeof(*ring));
		if (ring == NULL)
			return false;
		/* oldest kept first, so that next follows the newest */
		for (int i = 0; i < keep; i++)
			ring[i] = *newest(h, keep - 1 - i);
	}
	free(h->ring);
	h->ring = ring;
	h->cap = cap;
	h->n = keep;
	h->next = cap > 0 ? keep % cap : 0;
	return true;
}

static void copy(char *dst, size_t size, const char *src)
{
	snprintf(dst, size, "%s", src ? src : "");
}

/* "12.3 ms" or "-" */
static void fmt_ms(char *buf, size_t size, int64_t usec)
{
	if (usec < 0)
		snprintf(buf, size, "-");
	else
		snprintf(buf, size, "%.1f ms", (double)usec / 1000.0);
}

static void log_line(const struct mutation_report *r)
{
	char api_ms[32], total_ms[32], status[16];
	const char *rid = r->request_id && r->request_id[0] ? r->request_id : "-";
	const char *state = r->sqlstate && r->sqlstate[0] ? r->sqlstate : "-";

	fmt_ms(api_ms, sizeof(api_ms), r->api_usec);
	fmt_ms(total_ms, sizeof(total_ms), r->total_usec);
	if (r->http_status > 0)
		snprintf(status, sizeof(status), "%d", r->http_status);
	else
		snprintf(status, sizeof(status), "-");
	/* names, counts and ids only: the values go to DEBUG */
	if (r->client != NULL)
		slog_info(r->client,
		          "synced write: table=%s operation=%s rows=%d api=%s http_status=%s "
		          "api_latency=%s latency=%s request_id=%s outcome=%s sqlstate=%s",
		          r->table, r->operation, r->rows, r->api, status, api_ms, total_ms, rid,
		          r->outcome, state);
	else
		log_info("synced write (client gone): database=%s table=%s operation=%s rows=%d "
		         "api=%s http_status=%s api_latency=%s latency=%s request_id=%s outcome=%s "
		         "sqlstate=%s",
		         r->database, r->table, r->operation, r->rows, r->api, status, api_ms,
		         total_ms, rid, r->outcome, state);
	if (r->values != NULL)
		log_debug("synced write %s %s request_id=%s values: %s", r->table, r->operation,
		          rid, r->values);
}

void history_record(struct bouncer *b, const struct mutation_report *r)
{
	struct mutation_history *h = b->history;
	char db[128], table[256], op[32], api[128], outcome[64], labels[768];
	int want;

	if (b->cfg->log_mutations)
		log_line(r);
	if (h == NULL)
		return;
	hist_label_value(db, sizeof(db), r->database);
	hist_label_value(table, sizeof(table), r->table);
	hist_label_value(op, sizeof(op), r->operation);
	hist_label_value(api, sizeof(api), r->api);
	hist_label_value(outcome, sizeof(outcome), r->outcome);
	snprintf(labels, sizeof(labels),
	         "database=\"%s\",table=\"%s\",operation=\"%s\",outcome=\"%s\"", db, table, op,
	         outcome);
	(void)hist_family_observe(&h->mutation_lat, labels, r->total_usec);
	if (r->api_called && r->api_usec >= 0) {
		snprintf(labels, sizeof(labels), "api=\"%s\",outcome=\"%s\"", api, outcome);
		(void)hist_family_observe(&h->api_lat, labels, r->api_usec);
	}

	want = b->cfg->mutation_history;
	if (want != h->cap && !resize(h, want))
		log_warning("out of memory keeping the mutation history");
	if (h->cap > 0) {
		struct history_entry *e = &h->ring[h->next];
		memset(e, 0, sizeof(*e));
		e->client_id = r->client_id;
		e->total_usec = r->total_usec;
		e->started = bouncer_now_usec() - (uint64_t)(r->total_usec > 0 ? r->total_usec : 0);
		e->rows = r->rows;
		e->http_status = r->http_status;
		copy(e->database, sizeof(e->database), r->database);
		copy(e->table, sizeof(e->table), r->table);
		copy(e->operation, sizeof(e->operation), r->operation);
		copy(e->api, sizeof(e->api), r->api);
		copy(e->outcome, sizeof(e->outcome), r->outcome);
		copy(e->sqlstate, sizeof(e->sqlstate), r->sqlstate);
		copy(e->request_id, sizeof(e->request_id), r->request_id);
		h->next = (h->next + 1) % h->cap;
		if (h->n < h->cap)
			h->n++;
	}
}

void history_show(const struct mutation_history *h, history_row_cb cb, void *arg)
{
	if (h == NULL)
		return;
	for (int i = 0; i < h->n; i++) {
		const struct history_entry *e = newest(h, i);
		char client[24], rows[16], age[32], status[16], lat[24];
		const char *vals[13];

		snprintf(client, sizeof(client), "%llu", (unsigned long long)e->client_id);
		snprintf(rows, sizeof(rows), "%d", e->rows);
		snprintf(age, sizeof(age), "%.3f",
		         (double)(bouncer_now_usec() - e->started) / 1000000.0);
		snprintf(status, sizeof(status), "%d", e->http_status);
		snprintf(lat, sizeof(lat), "%lld", (long long)e->total_usec);
		vals[0] = e->client_id ? client : NULL;
		vals[1] = e->database;
		vals[2] = e->table;
		vals[3] = e->operation;
		vals[4] = rows;
		vals[5] = e->api;
		vals[6] = "done";
		vals[7] = age;
		vals[8] = e->outcome;
		vals[9] = e->sqlstate[0] ? e->sqlstate : NULL;
		vals[10] = e->http_status ? status : NULL;
		vals[11] = e->request_id[0] ? e->request_id : NULL;
		vals[12] = lat;
		cb(arg, 13, vals);
	}
}

void history_error_sqlstate(const uint8_t *err, size_t len, char *out, size_t size)
{
	size_t i = 5;

	out[0] = '\0';
	if (err == NULL || len < 6 || err[0] != PQMSG_ERROR_RESPONSE)
		return;
	while (i < len && err[i] != 0) {
		const uint8_t *v = err + i + 1;
		const uint8_t *end = memchr(v, 0, len - i - 1);
		if (end == NULL)
			return;
		if (err[i] == 'C') {
			snprintf(out, size, "%.*s", (int)(end - v), (const char *)v);
			return;
		}
		i = (size_t)(end - err) + 1;
	}
}

int history_count(const struct mutation_history *h)
{
	return h ? h->n : 0;
}

void history_write_metrics(const struct mutation_history *h, struct evbuffer *out)
{
	if (h == NULL)
		return;
	hist_family_write(&h->mutation_lat, out);
	hist_family_write(&h->api_lat, out);
}
