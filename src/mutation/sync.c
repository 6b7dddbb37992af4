/*
 * sync — the sync worker (see include/mutation/sync.h).
 *
 * One struct sync_tbl per synced table, each moved by sync_set_state() only:
 *
 *   IDLE ──pass──▶ LOADING (cursor from syncbouncer.sync_cursor) ──▶ FETCHING (one HTTP
 *   request, sent when the budget and the lane allow) ──▶ APPLYING (one transaction: lock
 *   and filter, upserts, deletes, cursor, COMMIT) ──▶ FETCHING again while the API says
 *   more, else IDLE until the next interval. Any failure ──▶ FAILED, retried after a
 *   back-off (1 s doubling to 5 min, or the API's Retry-After).
 *
 * The database side runs over one pgc per table (the catalog's connection settings), the
 * HTTP side through api_fetch() on the API's lane, so client writes and sync reads share the
 * lane's slots and a sync read is only sent when no client write is queued.
 *
 * Rule 3 (never an older state over a newer one) is kept by three checks when a page is
 * applied: rows locked by another transaction (the pipeline's capture holds the rows it
 * writes until its apply commits) are skipped through FOR UPDATE SKIP LOCKED; rows whose
 * write through the pipeline began, or was accepted, after the page was requested are
 * skipped (sync_write_*() keep a per-table log of them, stamped with a counter); and while
 * an insert is in flight, rows new to the table are not inserted (the insert's id is not
 * known until the API answers).
 */
#include "mutation/sync.h"

#include <errno.h>
#include <stdarg.h>
#include <event2/event.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/api.h"
#include "api/changes.h"
#include "api/connector.h"
#include "api/json.h"
#include "config.h"
#include "log.h"
#include "mutation/catalog.h"
#include "pgc.h"

#define SYNC_BACKOFF_MIN_USEC  INT64_C(1000000)
#define SYNC_BACKOFF_MAX_USEC  (300 * INT64_C(1000000))
#define SYNC_WAIT_LANE_USEC    (50 * INT64_C(1000))
#define SYNC_PROGRESS_LOG_USEC (5 * INT64_C(1000000))
#define SYNC_MAX_FIELDS        512
#define SYNC_PAGE_JSON_MAX     (64u << 20)
/* write log entries older than every page in flight are dropped; a cap keeps it bounded */
#define SYNC_WRITE_LOG_MAX 100000

/* The cursor store, created by the worker itself (idempotent). */
static const char sync_sql_schema[] =
        "select pg_catalog.pg_advisory_xact_lock(7306086135451738931);\n"
        "create schema if not exists syncbouncer;\n"
        "create table if not exists syncbouncer.sync_cursor (\n"
        "\ttbl text primary key,\n"
        "\trelid oid not null,\n"
        "\tcursor text not null,\n"
        "\tbackfilling bool not null,\n"
        "\tbackfill_rows bigint not null default 0,\n"
        "\tbackfill_total bigint,\n"
        "\tupdated_at timestamptz not null default pg_catalog.now()\n"
        ");\n"
        "comment on table syncbouncer.sync_cursor is"
        " 'syncbouncer: where the sync of each synced table resumes in its API''s change feed'";

static const char sync_sql_load[] =
        "select cursor, backfilling, backfill_rows, backfill_total, relid::int8"
        " from syncbouncer.sync_cursor where tbl = $1";

static const char sync_sql_store[] =
        "insert into syncbouncer.sync_cursor"
        " (tbl, relid, cursor, backfilling, backfill_rows, backfill_total, updated_at)"
        " values ($1, $2::int8::oid, $3, $4::bool, $5::int8, $6::int8, pg_catalog.now())"
        " on conflict (tbl) do update set relid = excluded.relid, cursor = excluded.cursor,"
        " backfilling = excluded.backfilling, backfill_rows = excluded.backfill_rows,"
        " backfill_total = excluded.backfill_total, updated_at = excluded.updated_at";

enum sync_state {
	SYNC_OFF,      /* no read side, or neither polling nor backfill */
	SYNC_IDLE,     /* waiting for the next pass */
	SYNC_LOADING,  /* reading the stored cursor */
	SYNC_FETCHING, /* waiting for the budget/lane, or for the API's answer */
	SYNC_APPLYING, /* the page's transaction */
	SYNC_FAILED,   /* waiting to retry */
};

static const char *sync_state_str(enum sync_state st)
{
	switch (st) {
	case SYNC_OFF:
		return "off";
	case SYNC_IDLE:
		return "idle";
	case SYNC_LOADING:
		return "loading";
	case SYNC_FETCHING:
		return "fetching";
	case SYNC_APPLYING:
		return "applying";
	case SYNC_FAILED:
		return "failed";
	}
	return "?";
}

struct sync_written {
	char *key;
	uint64_t stamp;
};

struct sync_key_count {
	char *key;
	int n;
};

struct sync_waiter {
	uint64_t conn_id;
	uint64_t pass; /* answered when a pass numbered at least this ends */
};

struct sync_tbl {
	struct sync *s;
	int index;
	struct sync_table_conf conf;
	char name[256]; /* db.schema.table, for logs and the console */
	char qualified[256];
	enum sync_state state;
	bool backfilling;
	struct event *timer;
	struct pgc *pc;
	bool pc_ready; /* the cursor store exists on pc */
	/* the feed */
	char *cursor;
	char *next;
	bool listing_first; /* the next page is the first of its listing */
	struct api_fetch *fetch;
	struct changes_page page;
	uint64_t page_stamp;
	char **fields; /* API fields to read, from the table's columns */
	int nfields;
	/* the page being applied */
	char **keys;
	int nkeys;
	char *upsert_sql, *delete_sql, *lock_sql;
	char *upsert_json, *keys_array, *delete_array;
	int nupserts, ndeletes, nskipped;
	bool tx_failed;
	char tx_error[256];
	/* write log of the pipeline */
	struct sync_written *written;
	int nwritten;
	struct sync_key_count *busy;
	int nbusy;
	int inserts_in_flight;
	/* a full listing (APIs with no deletion feed): the ids it named, and the rows written
	   through syncbouncer meanwhile, which its deletes leave alone */
	bool scanning;
	struct sync_strings {
		char **v;
		int n, cap;
		bool failed;
	} scan_ids, scan_written;
	int64_t last_scan_usec;
	int npruned;
	/* counters and view */
	uint64_t synced_rows;
	int64_t backfill_rows, backfill_total;
	time_t last_sync;
	double newest;
	char error[256];
	int64_t backoff_usec;
	int64_t progress_logged_usec, backfill_started_usec;
	int64_t backfill_rows_at_start;
	int64_t progress_decile;
	/* console */
	uint64_t pass_no;   /* passes started */
	uint64_t pass_done; /* passes finished */
	bool again;         /* a pass was asked for while one ran */
	bool reset;         /* SYNC BACKFILL: start over at the next pass */
	struct sync_waiter *waiters;
	int nwaiters;
};

struct sync_api_slot {
	struct api *api;
	int64_t next_usec; /* earliest time of its next sync request */
};

struct sync {
	struct event_base *base;
	struct catalog *cat;
	struct sync_tbl *tables;
	int ntables;
	struct sync_api_slot *slots;
	int nslots;
	sync_done_cb done;
	void *done_arg;
	uint64_t stamp; /* the write log's clock */
};

static int64_t sync_now_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static double sync_wall(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void sync_set_state(struct sync_tbl *t, enum sync_state st)
{
	if (t->state == st)
		return;
	log_debug("synced table %s: sync %s -> %s", t->name, sync_state_str(t->state),
	          sync_state_str(st));
	t->state = st;
}

static void sync_arm(struct sync_tbl *t, int64_t usec)
{
	struct timeval tv;

	if (usec < 0)
		usec = 0;
	tv.tv_sec = (time_t)(usec / 1000000);
	tv.tv_usec = (suseconds_t)(usec % 1000000);
	if (evtimer_add(t->timer, &tv) != 0)
		log_error("synced table %s: cannot arm the sync timer", t->name);
}

/* ---- options ---- */

bool sync_table_options(const struct cf_kv *kv, int nkv, struct sync_table_conf *conf, char *err,
                        size_t errsize)
{
	const char *iv = api_kv_get(kv, nkv, "sync_interval");
	const char *bf = api_kv_get(kv, nkv, "backfill");
	const char *ps = api_kv_get(kv, nkv, "page_size");
	const char *fi = api_kv_get(kv, nkv, "full_sync_interval");
	char *end;
	long v;

	conf->interval = 60;
	conf->backfill = true;
	conf->page_size = 0;
	conf->full_interval = 3600;
	if (fi != NULL) {
		errno = 0;
		v = strtol(fi, &end, 10);
		if (errno != 0 || end == fi || *end != '\0' || v < 1 || v > 604800) {
			snprintf(err, errsize,
			         "full_sync_interval=%.20s is not a number of seconds in 1..604800",
			         fi);
			return false;
		}
		conf->full_interval = (int)v;
	}
	if (iv != NULL) {
		errno = 0;
		v = strtol(iv, &end, 10);
		if (errno != 0 || end == iv || *end != '\0' || v < 0 || v > 86400) {
			snprintf(err, errsize,
			         "sync_interval=%.20s is not a number of seconds in 0..86400", iv);
			return false;
		}
		conf->interval = (int)v;
	}
	if (bf != NULL) {
		if (strcmp(bf, "auto") == 0) {
			conf->backfill = true;
		} else if (strcmp(bf, "off") == 0) {
			conf->backfill = false;
		} else {
			snprintf(err, errsize, "backfill=%.20s (expected auto or off)", bf);
			return false;
		}
	}
	if (ps != NULL) {
		errno = 0;
		v = strtol(ps, &end, 10);
		if (errno != 0 || end == ps || *end != '\0' || v < 1 || v > 10000) {
			snprintf(err, errsize, "page_size=%.20s is not a number in 1..10000", ps);
			return false;
		}
		conf->page_size = (int)v;
	}
	return true;
}

/* ---- helpers ---- */

static void quote_ident(char *out, size_t size, const char *name)
{
	size_t n = 0;

	if (size < 3) {
		if (size > 0)
			out[0] = '\0';
		return;
	}
	out[n++] = '"';
	for (const char *p = name; *p && n + 3 < size; p++) {
		if (*p == '"')
			out[n++] = '"';
		out[n++] = *p;
	}
	out[n++] = '"';
	out[n] = '\0';
}

/* A growing string; failure is sticky. */
struct sync_buf {
	char *data;
	size_t len, size;
	bool failed;
};

static void sb_add(struct sync_buf *b, const char *s)
{
	size_t n = strlen(s);

	if (b->failed)
		return;
	if (b->len + n + 1 > b->size) {
		size_t size = b->size ? b->size : 256;
		char *grown;
		while (size < b->len + n + 1)
			size *= 2;
		grown = realloc(b->data, size);
		if (grown == NULL) {
			b->failed = true;
			return;
		}
		b->data = grown;
		b->size = size;
	}
	memcpy(b->data + b->len, s, n + 1);
	b->len += n;
}

/* A text[] literal element: "..." with \ and " escaped. */
static void sb_add_array_item(struct sync_buf *b, const char *s, bool first)
{
	char ch[3] = {0};

	sb_add(b, first ? "\"" : ",\"");
	for (const char *p = s; *p && !b->failed; p++) {
		ch[0] = *p == '"' || *p == '\\' ? '\\' : *p;
		ch[1] = *p == '"' || *p == '\\' ? *p : '\0';
		sb_add(b, ch);
	}
	sb_add(b, "\"");
}

static void strings_add(struct sync_strings *l, const char *s)
{
	if (l->failed)
		return;
	if (l->n == l->cap) {
		int cap = l->cap ? l->cap * 2 : 256;
		char **grown = realloc(l->v, (size_t)cap * sizeof(*grown));
		if (grown == NULL) {
			l->failed = true;
			return;
		}
		l->v = grown;
		l->cap = cap;
	}
	if ((l->v[l->n] = strdup(s)) == NULL) {
		l->failed = true;
		return;
	}
	l->n++;
}

static void strings_clear(struct sync_strings *l)
{
	for (int i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	memset(l, 0, sizeof(*l));
}

/* A text[] literal of the strings, or NULL when out of memory. */
static char *strings_array(const struct sync_strings *a, const struct sync_strings *b)
{
	struct sync_buf buf = {0};
	bool first = true;

	sb_add(&buf, "{");
	for (int k = 0; k < 2; k++) {
		const struct sync_strings *l = k == 0 ? a : b;
		for (int i = 0; l != NULL && i < l->n; i++) {
			sb_add_array_item(&buf, l->v[i], first);
			first = false;
		}
	}
	sb_add(&buf, "}");
	if (buf.failed) {
		free(buf.data);
		return NULL;
	}
	return buf.data;
}

static void sync_scan_end(struct sync_tbl *t)
{
	t->scanning = false;
	strings_clear(&t->scan_ids);
	strings_clear(&t->scan_written);
}

static struct catalog_table *sync_catalog(struct sync_tbl *t)
{
	struct catalog_table *ct =
	        catalog_find(t->s->cat, t->conf.database, t->conf.schema, t->conf.table);

	return ct != NULL && ct->state == CAT_READY ? ct : NULL;
}

static void sync_free_page_sql(struct sync_tbl *t)
{
	for (int i = 0; i < t->nkeys; i++)
		free(t->keys[i]);
	free(t->keys);
	t->keys = NULL;
	t->nkeys = 0;
	free(t->upsert_sql);
	free(t->delete_sql);
	free(t->lock_sql);
	free(t->upsert_json);
	free(t->keys_array);
	free(t->delete_array);
	t->upsert_sql = t->delete_sql = t->lock_sql = NULL;
	t->upsert_json = t->keys_array = t->delete_array = NULL;
	t->nupserts = t->ndeletes = t->nskipped = 0;
	t->tx_failed = false;
	t->tx_error[0] = '\0';
}

/* ---- the write log (rule 3) ---- */

static int sync_busy_find(struct sync_tbl *t, const char *key)
{
	for (int i = 0; i < t->nbusy; i++)
		if (strcmp(t->busy[i].key, key) == 0)
			return i;
	return -1;
}

static void sync_note_written(struct sync_tbl *t, const char *key)
{
	struct sync_written *grown;

	if (t->scanning)
		strings_add(&t->scan_written, key);
	/* only pages in flight look at the log: with none, nothing needs keeping */
	if (t->state != SYNC_FETCHING && t->state != SYNC_APPLYING)
		return;
	if (t->nwritten >= SYNC_WRITE_LOG_MAX) {
		/* too many to track: this page is not applied (retried from its cursor) */
		t->page_stamp = 0;
		return;
	}
	grown = realloc(t->written, ((size_t)t->nwritten + 1) * sizeof(*grown));
	if (grown == NULL) {
		t->page_stamp = 0;
		return;
	}
	t->written = grown;
	t->written[t->nwritten].key = strdup(key);
	if (t->written[t->nwritten].key == NULL) {
		t->page_stamp = 0;
		return;
	}
	t->written[t->nwritten].stamp = ++t->s->stamp;
	t->nwritten++;
}

static void sync_clear_written(struct sync_tbl *t)
{
	for (int i = 0; i < t->nwritten; i++)
		free(t->written[i].key);
	free(t->written);
	t->written = NULL;
	t->nwritten = 0;
}

/* Whether key must be left alone in the page fetched at t->page_stamp. */
static bool sync_key_skipped(struct sync_tbl *t, const char *key)
{
	if (sync_busy_find(t, key) >= 0)
		return true;
	for (int i = 0; i < t->nwritten; i++)
		if (t->written[i].stamp > t->page_stamp && strcmp(t->written[i].key, key) == 0)
			return true;
	return false;
}

void sync_write_begin(struct sync *s, int i, bool insert, const char *const *keys, int nkeys)
{
	struct sync_tbl *t;

	if (s == NULL || i < 0 || i >= s->ntables)
		return;
	t = &s->tables[i];
	if (insert)
		t->inserts_in_flight++;
	for (int k = 0; k < nkeys; k++) {
		int at;
		if (keys[k] == NULL)
			continue;
		if (t->scanning)
			strings_add(&t->scan_written, keys[k]);
		at = sync_busy_find(t, keys[k]);
		if (at >= 0) {
			t->busy[at].n++;
			continue;
		}
		{
			struct sync_key_count *grown =
			        realloc(t->busy, ((size_t)t->nbusy + 1) * sizeof(*grown));
			char *key = strdup(keys[k]);
			if (grown == NULL || key == NULL) {
				free(key);
				if (grown != NULL)
					t->busy = grown;
				/* cannot track it: the page in flight is not applied */
				t->page_stamp = 0;
				continue;
			}
			t->busy = grown;
			t->busy[t->nbusy].key = key;
			t->busy[t->nbusy].n = 1;
			t->nbusy++;
		}
	}
}

void sync_write_accepted(struct sync *s, int i, const char *const *ids, int nids)
{
	if (s == NULL || i < 0 || i >= s->ntables)
		return;
	for (int k = 0; k < nids; k++)
		if (ids[k] != NULL)
			sync_note_written(&s->tables[i], ids[k]);
}

void sync_write_end(struct sync *s, int i, bool insert, const char *const *keys, int nkeys)
{
	struct sync_tbl *t;

	if (s == NULL || i < 0 || i >= s->ntables)
		return;
	t = &s->tables[i];
	if (insert && t->inserts_in_flight > 0)
		t->inserts_in_flight--;
	for (int k = 0; k < nkeys; k++) {
		int at;
		if (keys[k] == NULL)
			continue;
		sync_note_written(t, keys[k]);
		at = sync_busy_find(t, keys[k]);
		if (at >= 0 && --t->busy[at].n == 0) {
			free(t->busy[at].key);
			t->busy[at] = t->busy[--t->nbusy];
		}
	}
}

/* ---- passes ---- */

static void sync_fetch(struct sync_tbl *t);
static void sync_pass_end(struct sync_tbl *t);

static void sync_answer_waiters(struct sync_tbl *t, const char *error, bool all)
{
	int kept = 0;

	for (int i = 0; i < t->nwaiters; i++) {
		if (all || t->pass_done >= t->waiters[i].pass) {
			if (t->s->done != NULL)
				t->s->done(t->s->done_arg, t->waiters[i].conn_id, error);
		} else {
			t->waiters[kept++] = t->waiters[i];
		}
	}
	t->nwaiters = kept;
}

static void sync_fail(struct sync_tbl *t, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));

/* The pass failed: say so, and try again after the back-off. */
static void sync_fail(struct sync_tbl *t, const char *fmt, ...)
{
	va_list ap;
	int64_t wait;

	va_start(ap, fmt);
	vsnprintf(t->error, sizeof(t->error), fmt, ap);
	va_end(ap);
	if (t->fetch != NULL) {
		api_fetch_cancel(t->fetch);
		t->fetch = NULL;
	}
	changes_page_free(&t->page);
	sync_free_page_sql(t);
	sync_scan_end(t);
	free(t->next);
	t->next = NULL;
	if (t->pc != NULL && (t->state == SYNC_APPLYING || !pgc_ok(t->pc))) {
		/* the transaction's outcome does not matter: closing rolls it back */
		pgc_close(t->pc);
		t->pc = NULL;
		t->pc_ready = false;
	}
	t->backoff_usec = t->backoff_usec ? t->backoff_usec * 2 : SYNC_BACKOFF_MIN_USEC;
	if (t->backoff_usec > SYNC_BACKOFF_MAX_USEC)
		t->backoff_usec = SYNC_BACKOFF_MAX_USEC;
	wait = t->backoff_usec;
	log_warning("synced table %s: sync failed, retrying in %lld s: %s", t->name,
	            (long long)(wait / 1000000), t->error);
	sync_set_state(t, SYNC_FAILED);
	t->pass_done = t->pass_no;
	sync_answer_waiters(t, t->error, false);
	sync_arm(t, wait);
}

static void sync_fail_api(struct sync_tbl *t, const struct api_error *e)
{
	if (e->cls == API_ERR_RATE_LIMIT && e->retry_after > 0 &&
	    (int64_t)e->retry_after * 1000000 > t->backoff_usec)
		t->backoff_usec = (int64_t)e->retry_after * 1000000 / 2;
	sync_fail(t, "%s: %s%s%s", api_error_class_str(e->cls), e->message, e->code[0] ? " " : "",
	          e->code);
}

/* The API fields the table's columns map to (the primary key included). */
static bool sync_fields(struct sync_tbl *t, const struct catalog_table *ct)
{
	const struct connector *c = api_connector(t->conf.api);
	char field[256];

	if (t->fields != NULL)
		return true;
	t->fields = calloc((size_t)ct->ncols + 1, sizeof(*t->fields));
	if (t->fields == NULL)
		return false;
	for (int i = 0; i < ct->ncols && i < SYNC_MAX_FIELDS; i++) {
		connector_field_name(c, t->conf.at, ct->cols[i].name, field, sizeof(field));
		t->fields[t->nfields] = strdup(field);
		if (t->fields[t->nfields] == NULL)
			return false;
		t->nfields++;
	}
	return true;
}

static void sync_on_loaded(void *arg, struct pgc *pc, PGresult *res, const char *error)
{
	struct sync_tbl *t = arg;
	struct catalog_table *ct = sync_catalog(t);
	char buf[128];

	(void)pc;
	if (res == NULL) {
		sync_fail(t, "database: %s", error ? error : "connection lost");
		return;
	}
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		sync_fail(t, "database: %s", PQresultErrorMessage(res));
		return;
	}
	free(t->cursor);
	t->cursor = NULL;
	if (PQntuples(res) == 1 && !t->reset &&
	    (ct == NULL || strtoul(PQgetvalue(res, 0, 4), NULL, 10) == ct->relid)) {
		t->cursor = strdup(PQgetvalue(res, 0, 0));
		t->backfilling = PQgetvalue(res, 0, 1)[0] == 't';
		t->backfill_rows = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
		t->backfill_total =
		        PQgetisnull(res, 0, 3) ? -1 : strtoll(PQgetvalue(res, 0, 3), NULL, 10);
	} else if (t->conf.backfill || t->reset) {
		t->cursor = strdup("");
		t->backfilling = true;
		t->backfill_rows = 0;
		t->backfill_total = -1;
		t->reset = false;
	} else {
		/* backfill=off: only what changes from now on */
		const struct connector *c = api_connector(t->conf.api);
		if (!c->ops->changes->cursor_now(c, (long long)time(NULL), buf, sizeof(buf))) {
			sync_fail(t, "cannot make a cursor for now");
			return;
		}
		t->cursor = strdup(buf);
		t->backfilling = false;
	}
	if (t->cursor == NULL) {
		sync_fail(t, "out of memory");
		return;
	}
	if (t->backfilling) {
		t->backfill_started_usec = sync_now_usec();
		t->backfill_rows_at_start = t->backfill_rows;
		t->progress_logged_usec = t->backfill_started_usec;
		t->progress_decile =
		        t->backfill_total > 0 ? t->backfill_rows * 10 / t->backfill_total : 0;
		log_info("synced table %s: backfill %s", t->name,
		         t->cursor[0] ? "resumes from its stored cursor" : "starts");
	}
	t->listing_first = true;
	sync_scan_end(t);
	if (api_connector(t->conf.api)->ops->changes->full_scan_deletes) {
		int64_t now = sync_now_usec();
		t->scanning = t->backfilling || t->last_scan_usec == 0 ||
		              now - t->last_scan_usec >= (int64_t)t->conf.full_interval * 1000000;
		if (t->scanning && !t->backfilling)
			log_debug("synced table %s: a full listing, for deletes", t->name);
	}
	sync_fetch(t);
}

static void sync_on_schema(void *arg, struct pgc *pc, PGresult *res, const char *error)
{
	struct sync_tbl *t = arg;

	(void)pc;
	(void)error;
	if (res != NULL && PQresultStatus(res) == PGRES_COMMAND_OK)
		t->pc_ready = true;
}

static void sync_on_connected(void *arg, struct pgc *pc, const char *error)
{
	(void)arg;
	(void)pc;
	(void)error; /* the queued statements report it */
}

/* Starts a pass: the cursor first (the database is the truth after a crash). */
static void sync_pass_start(struct sync_tbl *t)
{
	struct catalog_table *ct = sync_catalog(t);
	const char *params[1] = {t->qualified};
	char conninfo[2048];

	if (ct == NULL) {
		/* the catalog has not prepared the table (yet): try again soon */
		sync_arm(t, SYNC_BACKOFF_MIN_USEC);
		return;
	}
	if (!sync_fields(t, ct)) {
		sync_fail(t, "out of memory");
		return;
	}
	t->pass_no++;
	t->again = false;
	if (t->pc == NULL) {
		if (!catalog_conninfo(t->s->cat, t->conf.database, conninfo, sizeof(conninfo))) {
			sync_set_state(t, SYNC_LOADING);
			sync_fail(t, "no database connection settings for %s", t->conf.database);
			return;
		}
		t->pc = pgc_connect(t->s->base, conninfo, sync_on_connected, t);
		if (t->pc == NULL) {
			sync_set_state(t, SYNC_LOADING);
			sync_fail(t, "out of memory");
			return;
		}
	}
	sync_set_state(t, SYNC_LOADING);
	if ((!t->pc_ready &&
	     !pgc_query(t->pc, sync_sql_schema, 0, NULL, NULL, NULL, NULL, 0, sync_on_schema, t)) ||
	    !pgc_query(t->pc, sync_sql_load, 1, NULL, params, NULL, NULL, 0, sync_on_loaded, t)) {
		sync_fail(t, "database: %s", t->pc ? pgc_error(t->pc) : "no connection");
		return;
	}
}

static void sync_on_page(void *arg, const struct http_response *resp);

/* The API slot of t: when its next sync request may go. */
static struct sync_api_slot *sync_slot(struct sync_tbl *t)
{
	for (int i = 0; i < t->s->nslots; i++)
		if (t->s->slots[i].api == t->conf.api)
			return &t->s->slots[i];
	return NULL;
}

/* Sends the request for the next page, or waits for the budget / a free lane slot. */
static void sync_fetch(struct sync_tbl *t)
{
	const struct connector *c = api_connector(t->conf.api);
	struct sync_api_slot *slot = sync_slot(t);
	struct changes_req req;
	struct api_http_spec spec;
	struct api_error err;
	struct api_stats st;
	double rate = api_rate_limit(t->conf.api) * api_sync_budget(t->conf.api) / 100.0;
	int64_t now = sync_now_usec();

	sync_set_state(t, SYNC_FETCHING);
	api_get_stats(t->conf.api, &st);
	if (slot != NULL && slot->next_usec > now) {
		sync_arm(t, slot->next_usec - now);
		return;
	}
	/* client writes first: no sync read while one waits for a slot, and one slot kept free */
	if (st.queued > 0 || (t->conf.lane_cap > 1 && st.in_flight >= t->conf.lane_cap - 1)) {
		sync_arm(t, SYNC_WAIT_LANE_USEC);
		return;
	}
	memset(&req, 0, sizeof(req));
	req.cursor = t->cursor;
	req.next = t->next;
	req.fields = (const char *const *)t->fields;
	req.nfields = t->nfields;
	req.page_size =
	        t->conf.page_size > 0 ? t->conf.page_size : c->ops->changes->default_page_size;
	req.full_scan = t->scanning;
	if (!changes_build_request(c, t->conf.at, &req, &spec, &err)) {
		sync_fail_api(t, &err);
		return;
	}
	if (slot != NULL && rate > 0)
		slot->next_usec = now + (int64_t)(1e6 / rate);
	t->page_stamp = ++t->s->stamp;
	t->fetch = api_fetch(t->conf.api, &spec, sync_on_page, t);
	if (t->fetch == NULL)
		sync_fail(t, "cannot send the request (out of memory or a bad URL)");
}

static void sync_on_committed(void *arg, struct pgc *pc, PGresult *res, const char *error);
static void sync_on_tx_step(void *arg, struct pgc *pc, PGresult *res, const char *error);
static void sync_on_locked(void *arg, struct pgc *pc, PGresult *res, const char *error);

/* Queues the cursor row of the page (inside the page's transaction). */
static bool sync_queue_cursor(struct sync_tbl *t, pgc_result_cb cb)
{
	struct catalog_table *ct = sync_catalog(t);
	char relid[24], rows[24], total[24];
	const char *params[6];
	const char *cursor = t->page.cursor != NULL ? t->page.cursor : t->cursor;
	bool done_backfill = t->backfilling && !t->page.more;

	snprintf(relid, sizeof(relid), "%u", ct ? ct->relid : 0);
	snprintf(rows, sizeof(rows), "%lld", (long long)(t->backfill_rows + t->nupserts));
	snprintf(total, sizeof(total), "%lld", (long long)t->backfill_total);
	params[0] = t->qualified;
	params[1] = relid;
	params[2] = cursor;
	params[3] = t->backfilling && !done_backfill ? "true" : "false";
	params[4] = t->backfilling ? rows : "0";
	params[5] = t->backfill_total >= 0 ? total : NULL;
	return pgc_query(t->pc, sync_sql_store, 6, NULL, params, NULL, NULL, 0, cb, t);
}

/* Column names and values of one record, as a JSON object of the table's columns. */
static void sync_record_json(struct sync_tbl *t, const struct catalog_table *ct,
                             const struct changes_record *r, struct json_out *o, bool *present)
{
	const struct connector *c = api_connector(t->conf.api);
	const struct json_value *f = r->fields;
	char col[256];

	json_out_object_begin(o);
	json_out_key(o, t->conf.at->pk_column);
	json_out_string(o, r->id);
	for (size_t k = 0; f != NULL && f->kind == JSON_OBJECT && k < f->count; k++) {
		int at = -1;
		connector_column_name(c, t->conf.at, f->keys[k], col, sizeof(col));
		if (strcmp(col, t->conf.at->pk_column) == 0)
			continue;
		for (int i = 0; i < ct->ncols; i++)
			if (strcmp(ct->cols[i].name, col) == 0)
				at = i;
		if (at < 0)
			continue;
		present[at] = true;
		json_out_key(o, col);
		json_out_value(o, f->items[k]);
	}
	json_out_object_end(o);
}

/*
 * The page's records, the last of each id winning, become the lock query's key array; the
 * statements are built once the lock query says which rows to leave alone.
 */
static void sync_apply(struct sync_tbl *t)
{
	struct catalog_table *ct = sync_catalog(t);
	const struct catalog_column *pkc;
	struct sync_buf arr = {0};
	char qt[600], qs[300], qpk[300];
	char *sql;
	const char *params[1];
	size_t n;

	sync_set_state(t, SYNC_APPLYING);
	if (ct == NULL || (pkc = catalog_column_find(ct, ct->pk)) == NULL) {
		sync_fail(t, "the table is not ready");
		return;
	}
	if (t->page.nrecords == 0 && !(t->scanning && !t->page.more)) {
		/* nothing to write: the cursor alone (it may have moved: an anchor, a listing) */
		if (!sync_queue_cursor(t, sync_on_committed))
			sync_fail(t, "database: %s", pgc_error(t->pc));
		return;
	}
	t->keys = calloc((size_t)t->page.nrecords + 1, sizeof(*t->keys));
	if (t->keys == NULL) {
		sync_fail(t, "out of memory");
		return;
	}
	sb_add(&arr, "{");
	for (int i = 0; i < t->page.nrecords; i++) {
		t->keys[t->nkeys] = strdup(t->page.records[i].id);
		if (t->keys[t->nkeys] == NULL) {
			arr.failed = true;
			break;
		}
		sb_add_array_item(&arr, t->keys[t->nkeys], t->nkeys == 0);
		t->nkeys++;
	}
	sb_add(&arr, "}");
	if (arr.failed) {
		free(arr.data);
		sync_fail(t, "out of memory");
		return;
	}
	t->keys_array = arr.data;
	quote_ident(qs, sizeof(qs), t->conf.schema);
	quote_ident(qpk, sizeof(qpk), ct->pk);
	{
		char tn[300];
		quote_ident(tn, sizeof(tn), t->conf.table);
		snprintf(qt, sizeof(qt), "%s.%s", qs, tn);
	}
	/* (key, exists, locked by us): exists and not locked = someone else holds it */
	n = strlen(qt) * 2 + strlen(qpk) * 4 + strlen(pkc->type_name) * 2 + 400;
	sql = malloc(n);
	if (sql == NULL) {
		sync_fail(t, "out of memory");
		return;
	}
	snprintf(
	        sql, n,
	        "with l as (select %s as k from %s where %s = any ($1::%s[]) for update skip locked)"
	        " select k::text, exists (select from %s x where x.%s = k),"
	        " k in (select l.k from l) from pg_catalog.unnest($1::%s[]) as k",
	        qpk, qt, qpk, pkc->type_name, qt, qpk, pkc->type_name);
	t->lock_sql = sql;
	params[0] = t->keys_array;
	if (!pgc_query(t->pc, "BEGIN", 0, NULL, NULL, NULL, NULL, 0, sync_on_tx_step, t) ||
	    !pgc_query(t->pc,
	               "select pg_catalog.set_config('syncbouncer.mode', 'sync', true),"
	               " pg_catalog.set_config('lock_timeout', '5s', true)",
	               0, NULL, NULL, NULL, NULL, 0, sync_on_tx_step, t) ||
	    !pgc_query(t->pc, t->lock_sql, 1, NULL, params, NULL, NULL, 0, sync_on_locked, t))
		sync_fail(t, "database: %s", pgc_error(t->pc));
}

static void sync_on_tx_step(void *arg, struct pgc *pc, PGresult *res, const char *error)
{
	struct sync_tbl *t = arg;

	(void)pc;
	if (t->tx_failed)
		return;
	if (res == NULL ||
	    (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK)) {
		t->tx_failed = true;
		snprintf(t->tx_error, sizeof(t->tx_error), "%s",
		         res     ? PQresultErrorMessage(res)
		         : error ? error
		                 : "connection lost");
	}
}

static void sync_on_pruned(void *arg, struct pgc *pc, PGresult *res, const char *error)
{
	struct sync_tbl *t = arg;

	sync_on_tx_step(arg, pc, res, error);
	if (!t->tx_failed && res != NULL)
		t->npruned = atoi(PQcmdTuples(res));
}

static void sync_on_locked(void *arg, struct pgc *pc, PGresult *res, const char *error)
{
	struct sync_tbl *t = arg;
	struct catalog_table *ct = sync_catalog(t);
	bool *skip = NULL, *present = NULL;
	struct json_out o;
	struct sync_buf del = {0}, up = {0};
	char qt[600], qpk[300], qc[300], qs[300], tn[300];
	const struct catalog_column *pkc;
	int ndel = 0, nrows;
	const char *p1[1];

	sync_on_tx_step(arg, pc, res, error);
	if (t->tx_failed) {
		sync_fail(t, "database: %s", t->tx_error);
		return;
	}
	if (ct == NULL || (pkc = catalog_column_find(ct, ct->pk)) == NULL) {
		sync_fail(t, "the table is not ready");
		return;
	}
	nrows = PQntuples(res);
	skip = calloc((size_t)t->page.nrecords + 1, sizeof(*skip));
	present = calloc((size_t)ct->ncols + 1, sizeof(*present));
	if (skip == NULL || present == NULL || !json_out_init(&o, SYNC_PAGE_JSON_MAX)) {
		free(skip);
		free(present);
		sync_fail(t, "out of memory");
		return;
	}
	/* the lock query answers in key order: record i is row i */
	for (int i = 0; i < t->page.nrecords && i < nrows; i++) {
		bool exists = PQgetvalue(res, i, 1)[0] == 't';
		bool locked = PQgetvalue(res, i, 2)[0] == 't';
		const char *id = t->page.records[i].id;
		if ((exists && !locked) || sync_key_skipped(t, id) ||
		    (!exists && t->inserts_in_flight > 0 && !t->page.records[i].deleted) ||
		    t->page_stamp == 0)
			skip[i] = true;
		/* an earlier record of the same id is superseded by this one */
		for (int j = i + 1; j < t->page.nrecords && !skip[i]; j++)
			if (strcmp(t->page.records[j].id, id) == 0)
				skip[i] = true;
		if (skip[i] && (exists && !locked))
			t->nskipped++;
		else if (skip[i] && sync_key_skipped(t, id))
			t->nskipped++;
	}
	json_out_array_begin(&o);
	sb_add(&del, "{");
	for (int i = 0; i < t->page.nrecords; i++) {
		const struct changes_record *r = &t->page.records[i];
		if (skip[i])
			continue;
		if (r->deleted) {
			sb_add_array_item(&del, r->id, ndel == 0);
			ndel++;
			continue;
		}
		sync_record_json(t, ct, r, &o, present);
		t->nupserts++;
	}
	json_out_array_end(&o);
	sb_add(&del, "}");
	t->ndeletes = ndel;
	quote_ident(qs, sizeof(qs), t->conf.schema);
	quote_ident(tn, sizeof(tn), t->conf.table);
	snprintf(qt, sizeof(qt), "%s.%s", qs, tn);
	quote_ident(qpk, sizeof(qpk), ct->pk);
	if (t->nupserts > 0) {
		int ncols = 0;
		struct sync_buf cols = {0}, sets = {0};
		for (int i = 0; i < ct->ncols; i++) {
			if (!present[i] && strcmp(ct->cols[i].name, ct->pk) != 0)
				continue;
			quote_ident(qc, sizeof(qc), ct->cols[i].name);
			sb_add(&cols, ncols ? ", " : "");
			sb_add(&cols, qc);
			if (strcmp(ct->cols[i].name, ct->pk) != 0) {
				sb_add(&sets, sets.len ? ", " : "");
				sb_add(&sets, qc);
				sb_add(&sets, " = excluded.");
				sb_add(&sets, qc);
			}
			ncols++;
		}
		sb_add(&up, "insert into ");
		sb_add(&up, qt);
		sb_add(&up, " (");
		sb_add(&up, cols.data ? cols.data : "");
		sb_add(&up, ") select ");
		sb_add(&up, cols.data ? cols.data : "");
		sb_add(&up, " from pg_catalog.jsonb_populate_recordset(null::");
		sb_add(&up, qt);
		sb_add(&up, ", $1::jsonb) on conflict (");
		sb_add(&up, qpk);
		sb_add(&up, sets.len ? ") do update set " : ") do nothing");
		sb_add(&up, sets.len ? sets.data : "");
		if (cols.failed || sets.failed)
			up.failed = true;
		free(cols.data);
		free(sets.data);
		t->upsert_sql = up.data;
		t->upsert_json = json_out_take(&o, &(size_t){0});
	}
	json_out_free(&o);
	free(skip);
	free(present);
	t->delete_array = del.data;
	if (up.failed || del.failed || (t->nupserts > 0 && t->upsert_json == NULL)) {
		sync_fail(t, "out of memory (or a page too large)");
		return;
	}
	if (ndel > 0) {
		size_t n = strlen(qt) + strlen(qpk) + strlen(pkc->type_name) + 64;
		t->delete_sql = malloc(n);
		if (t->delete_sql == NULL) {
			sync_fail(t, "out of memory");
			return;
		}
		snprintf(t->delete_sql, n, "delete from %s where %s = any ($1::%s[])", qt, qpk,
		         pkc->type_name);
	}
	if (t->scanning && !t->page.more) {
		/* the full listing is over: rows of records it did not name are gone from the API,
		   except those written (or being written) through syncbouncer meanwhile */
		size_t n = 2 * strlen(qt) + 3 * strlen(qpk) + 2 * strlen(pkc->type_name) + 200;
		if (t->scan_ids.failed || t->scan_written.failed) {
			sync_fail(t, "out of memory (the full listing's ids)");
			return;
		}
		free(t->lock_sql);
		t->lock_sql = malloc(n);
		free(t->delete_array);
		t->delete_array = strings_array(&t->scan_ids, NULL);
		free(t->keys_array);
		t->keys_array = strings_array(&t->scan_written, NULL);
		if (t->lock_sql == NULL || t->delete_array == NULL || t->keys_array == NULL) {
			sync_fail(t, "out of memory");
			return;
		}
		snprintf(
		        t->lock_sql, n,
		        "delete from %s where %s in (select %s from %s where not (%s = any ($1::%s[]))"
		        " and not (%s = any ($2::%s[])) for update skip locked)",
		        qt, qpk, qpk, qt, qpk, pkc->type_name, qpk, pkc->type_name);
		for (int i = 0; i < t->nbusy; i++)
			strings_add(&t->scan_written, t->busy[i].key);
	}
	p1[0] = t->upsert_json;
	if ((t->nupserts > 0 &&
	     !pgc_query(t->pc, t->upsert_sql, 1, NULL, p1, NULL, NULL, 0, sync_on_tx_step, t)) ||
	    (ndel > 0 &&
	     !pgc_query(t->pc, t->delete_sql, 1, NULL, (const char *const *)&t->delete_array, NULL,
	                NULL, 0, sync_on_tx_step, t)) ||
	    (t->scanning && !t->page.more &&
	     !pgc_query(t->pc, t->lock_sql, 2, NULL,
	                (const char *const[]){t->delete_array, t->keys_array}, NULL, NULL, 0,
	                sync_on_pruned, t)) ||
	    !sync_queue_cursor(t, sync_on_tx_step) ||
	    !pgc_query(t->pc, "COMMIT", 0, NULL, NULL, NULL, NULL, 0, sync_on_committed, t))
		sync_fail(t, "database: %s", pgc_error(t->pc));
}

static void sync_log_progress(struct sync_tbl *t, bool last)
{
	int64_t now = sync_now_usec();
	double secs = (double)(now - t->backfill_started_usec) / 1e6;
	double rate = secs > 0 ? (double)(t->backfill_rows - t->backfill_rows_at_start) / secs : 0;

	/* every tenth of a known total, else every few seconds */
	if (!last && t->backfill_total > 0) {
		int64_t decile = t->backfill_rows * 10 / t->backfill_total;
		if (decile <= t->progress_decile)
			return;
		t->progress_decile = decile;
	} else if (!last && now - t->progress_logged_usec < SYNC_PROGRESS_LOG_USEC) {
		return;
	}
	t->progress_logged_usec = now;
	if (last) {
		log_info("synced table %s: backfill done, %lld rows in %.1f s (%.0f rows/s)",
		         t->name, (long long)t->backfill_rows, secs, rate);
	} else if (t->backfill_total > 0 && rate > 0) {
		double left = (double)(t->backfill_total - t->backfill_rows) / rate;
		log_info(
		        "synced table %s: backfill %lld/%lld rows (%.0f%%), %.0f rows/s, about %.0f s"
		        " left",
		        t->name, (long long)t->backfill_rows, (long long)t->backfill_total,
		        100.0 * (double)t->backfill_rows / (double)t->backfill_total, rate,
		        left > 0 ? left : 0);
	} else {
		log_info("synced table %s: backfill %lld rows, %.0f rows/s", t->name,
		         (long long)t->backfill_rows, rate);
	}
}

static void sync_on_committed(void *arg, struct pgc *pc, PGresult *res, const char *error)
{
	struct sync_tbl *t = arg;
	bool more;

	(void)pc;
	if (!t->tx_failed && (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK)) {
		t->tx_failed = true;
		snprintf(t->tx_error, sizeof(t->tx_error), "%s",
		         res     ? PQresultErrorMessage(res)
		         : error ? error
		                 : "connection lost");
	}
	if (t->tx_failed) {
		char why[sizeof(t->tx_error)];
		/* COMMIT of a failed transaction answers ROLLBACK: the connection is usable */
		memcpy(why, t->tx_error, sizeof(why));
		sync_fail(t, "database: %s", why);
		return;
	}
	t->backoff_usec = 0;
	t->error[0] = '\0';
	t->synced_rows += (uint64_t)(t->nupserts + t->ndeletes + t->npruned);
	if (t->scanning && !t->page.more) {
		if (t->npruned > 0 || !t->backfilling)
			log_info(
			        "synced table %s: full listing done, %d row(s) of records gone from"
			        " the API deleted",
			        t->name, t->npruned);
		t->last_scan_usec = sync_now_usec();
		sync_scan_end(t);
	}
	t->npruned = 0;
	if (t->backfilling)
		t->backfill_rows += t->nupserts;
	if (t->page.newest > t->newest)
		t->newest = t->page.newest;
	if (t->page.cursor != NULL) {
		free(t->cursor);
		t->cursor = t->page.cursor;
		t->page.cursor = NULL;
	}
	if (t->nskipped > 0)
		log_debug(
		        "synced table %s: %d row(s) left for the next pass (written or being written"
		        " through syncbouncer)",
		        t->name, t->nskipped);
	more = t->page.more;
	free(t->next);
	t->next = t->page.next;
	t->page.next = NULL;
	t->listing_first = t->next == NULL;
	if (t->backfilling && !more) {
		t->backfilling = false;
		sync_log_progress(t, true);
	} else if (t->backfilling) {
		sync_log_progress(t, false);
	}
	changes_page_free(&t->page);
	sync_free_page_sql(t);
	if (t->nbusy == 0)
		sync_clear_written(t);
	if (more) {
		sync_fetch(t);
		return;
	}
	sync_pass_end(t);
}

static void sync_on_page(void *arg, const struct http_response *resp)
{
	struct sync_tbl *t = arg;
	const struct connector *c = api_connector(t->conf.api);
	struct changes_req req;

	t->fetch = NULL;
	memset(&req, 0, sizeof(req));
	req.cursor = t->cursor;
	req.next = t->next;
	req.page_size =
	        t->conf.page_size > 0 ? t->conf.page_size : c->ops->changes->default_page_size;
	req.full_scan = t->scanning;
	changes_page_free(&t->page);
	changes_parse_response(c, t->conf.at, &req, resp, &t->page);
	if (!t->page.ok) {
		struct api_error e = t->page.error;
		sync_fail_api(t, &e);
		return;
	}
	for (int i = 0; t->scanning && i < t->page.nrecords; i++)
		if (!t->page.records[i].deleted)
			strings_add(&t->scan_ids, t->page.records[i].id);
	if (t->backfilling && t->listing_first && t->page.total >= 0)
		t->backfill_total = t->backfill_rows + t->page.total;
	sync_apply(t);
}

static void sync_pass_end(struct sync_tbl *t)
{
	t->last_sync = time(NULL);
	t->pass_done = t->pass_no;
	sync_set_state(t, SYNC_IDLE);
	sync_answer_waiters(t, NULL, false);
	if (t->again || t->reset || t->nwaiters > 0) {
		sync_arm(t, 0);
		return;
	}
	if (t->conf.interval > 0)
		sync_arm(t, (int64_t)t->conf.interval * 1000000);
}

static void sync_on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct sync_tbl *t = arg;

	(void)fd;
	(void)what;
	switch (t->state) {
	case SYNC_IDLE:
	case SYNC_FAILED:
		sync_pass_start(t);
		return;
	case SYNC_FETCHING:
		if (t->fetch == NULL)
			sync_fetch(t);
		return;
	case SYNC_OFF:
	case SYNC_LOADING:
	case SYNC_APPLYING:
		return;
	}
}

/* ---- life cycle ---- */

struct sync *sync_create(struct event_base *base, struct catalog *cat,
                         const struct sync_table_conf *confs, int n, sync_done_cb done,
                         void *done_arg)
{
	struct sync *s = calloc(1, sizeof(*s));

	if (s == NULL)
		return NULL;
	s->base = base;
	s->cat = cat;
	s->done = done;
	s->done_arg = done_arg;
	s->tables = calloc((size_t)n + 1, sizeof(*s->tables));
	s->slots = calloc((size_t)n + 1, sizeof(*s->slots));
	if (s->tables == NULL || s->slots == NULL)
		goto oom;
	for (int i = 0; i < n; i++) {
		struct sync_tbl *t = &s->tables[i];
		bool have_slot = false;

		s->ntables++;
		t->s = s;
		t->index = i;
		t->conf = confs[i];
		t->backfill_total = -1;
		snprintf(t->name, sizeof(t->name), "%s.%s.%s", confs[i].database, confs[i].schema,
		         confs[i].table);
		snprintf(t->qualified, sizeof(t->qualified), "%s.%s", confs[i].schema,
		         confs[i].table);
		changes_page_init(&t->page);
		t->timer = evtimer_new(base, sync_on_timer, t);
		if (t->timer == NULL)
			goto oom;
		for (int k = 0; k < s->nslots; k++)
			have_slot = have_slot || s->slots[k].api == confs[i].api;
		if (!have_slot)
			s->slots[s->nslots++].api = confs[i].api;
		if (!changes_supported(api_connector(confs[i].api)) ||
		    (confs[i].interval == 0 && !confs[i].backfill)) {
			t->state = SYNC_OFF; /* writes only */
			continue;
		}
		t->state = SYNC_IDLE;
		/* the first pass (a backfill, or catching up) at once; polling only when asked */
		if (confs[i].interval > 0 || confs[i].backfill)
			sync_arm(t, 0);
	}
	return s;
oom:
	sync_free(s);
	return NULL;
}

void sync_free(struct sync *s)
{
	if (s == NULL)
		return;
	for (int i = 0; i < s->ntables; i++) {
		struct sync_tbl *t = &s->tables[i];
		sync_answer_waiters(t, "the sync worker stopped (RELOAD or shutdown)", true);
		free(t->waiters);
		if (t->fetch != NULL)
			api_fetch_cancel(t->fetch);
		if (t->timer != NULL)
			event_free(t->timer);
		pgc_close(t->pc);
		changes_page_free(&t->page);
		sync_free_page_sql(t);
		sync_clear_written(t);
		sync_scan_end(t);
		for (int k = 0; k < t->nbusy; k++)
			free(t->busy[k].key);
		free(t->busy);
		for (int k = 0; k < t->nfields; k++)
			free(t->fields[k]);
		free(t->fields);
		free(t->cursor);
		free(t->next);
	}
	free(s->tables);
	free(s->slots);
	free(s);
}

/* ---- console ---- */

static struct sync_tbl *sync_find(struct sync *s, const char *name)
{
	for (int i = 0; s != NULL && i < s->ntables; i++)
		if (strcmp(s->tables[i].name, name) == 0)
			return &s->tables[i];
	return NULL;
}

const char *sync_command(struct sync *s, const char *name, bool backfill, uint64_t conn_id,
                         bool *wait)
{
	struct sync_tbl *t = sync_find(s, name);
	struct sync_waiter *grown;
	bool running;

	*wait = false;
	if (t == NULL)
		return "no such synced table (name it as database.schema.table)";
	if (t->state == SYNC_OFF)
		return changes_supported(api_connector(t->conf.api))
		               ? "this table is not synced (sync_interval=0 and backfill=off, or no"
		                 " list_path= on its API)"
		               : "this table's API type cannot be synced";
	running =
	        t->state == SYNC_LOADING || t->state == SYNC_FETCHING || t->state == SYNC_APPLYING;
	if (backfill) {
		t->reset = true;
		log_info("synced table %s: backfill requested from the console", t->name);
		if (!running) {
			evtimer_del(t->timer);
			sync_arm(t, 0);
		}
		return NULL;
	}
	grown = realloc(t->waiters, ((size_t)t->nwaiters + 1) * sizeof(*grown));
	if (grown == NULL)
		return "out of memory";
	t->waiters = grown;
	t->waiters[t->nwaiters].conn_id = conn_id;
	/* a pass that starts after this command */
	t->waiters[t->nwaiters].pass = t->pass_no + 1;
	t->nwaiters++;
	*wait = true;
	if (running) {
		t->again = true;
	} else {
		evtimer_del(t->timer);
		t->backoff_usec = 0;
		sync_arm(t, 0);
	}
	return NULL;
}

void sync_forget_waiter(struct sync *s, uint64_t conn_id)
{
	for (int i = 0; s != NULL && i < s->ntables; i++) {
		struct sync_tbl *t = &s->tables[i];
		int kept = 0;
		for (int k = 0; k < t->nwaiters; k++)
			if (t->waiters[k].conn_id != conn_id)
				t->waiters[kept++] = t->waiters[k];
		t->nwaiters = kept;
	}
}

void sync_view(struct sync *s, int i, struct sync_view *out)
{
	struct sync_tbl *t;

	memset(out, 0, sizeof(*out));
	out->state = "off";
	if (s == NULL || i < 0 || i >= s->ntables)
		return;
	t = &s->tables[i];
	switch (t->state) {
	case SYNC_OFF:
		out->state = "off";
		break;
	case SYNC_FAILED:
		out->state = "failed";
		snprintf(out->error, sizeof(out->error), "%s", t->error);
		break;
	case SYNC_IDLE:
		out->state = "idle";
		break;
	case SYNC_LOADING:
	case SYNC_FETCHING:
	case SYNC_APPLYING:
		out->state = t->backfilling ? "backfilling" : "polling";
		break;
	}
	if (t->last_sync != 0) {
		struct tm tm;
		gmtime_r(&t->last_sync, &tm);
		strftime(out->last_sync, sizeof(out->last_sync), "%Y-%m-%d %H:%M:%S UTC", &tm);
	}
	if (t->newest > 0) {
		double lag = sync_wall() - t->newest;
		snprintf(out->lag, sizeof(out->lag), "%.0f", lag > 0 ? floor(lag) : 0.0);
	}
	snprintf(out->synced_rows, sizeof(out->synced_rows), "%llu",
	         (unsigned long long)t->synced_rows);
	snprintf(out->backfill_rows, sizeof(out->backfill_rows), "%lld",
	         (long long)t->backfill_rows);
	if (t->backfill_total >= 0)
		snprintf(out->backfill_total, sizeof(out->backfill_total), "%lld",
		         (long long)t->backfill_total);
}
