/*
 * sync — the sync worker: the read side of synced tables (DESIGN.md §1 rule 9, §4).
 *
 * Per synced table, on the loop: a backfill (everything the API holds) when the table has no
 * stored cursor, then a pass every sync_interval seconds over the API's change feed (the
 * connector's read side, include/api/changes.h). Each page is written in ONE database
 * transaction in mode `sync` (past the guard trigger): upserts and deletes by primary key and
 * the new cursor in syncbouncer.sync_cursor, so a crash never skips or repeats a change.
 *
 * Invariants:
 * - A sync never writes an older API state over a newer one: a row written through the
 *   pipeline after the page was fetched is skipped in that page (the next pass brings the
 *   API's state), a row locked by a write in flight is skipped, and while an insert of the
 *   table is in flight no row new to the table is inserted.
 * - Requests stay within sync_budget percent of the API's rate_limit, and are only sent while
 *   no client write waits for a slot of the API's lane.
 * - A failure (API, database, a row the table rejects) marks the table failed with the reason,
 *   is logged, and is retried with back-off; other tables go on.
 */
#ifndef SB_MUTATION_SYNC_H
#define SB_MUTATION_SYNC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct api;
struct api_table;
struct catalog;
struct cf_kv;
struct sync;

/* One synced table as the worker needs it; all pointers borrowed, valid for the sync's life. */
struct sync_table_conf {
	const char *database, *schema, *table; /* as in [synced_tables] */
	struct api *api;
	const struct api_table *at;
	int lane_cap;      /* the API's max_in_flight */
	int interval;      /* sync_interval, seconds; 0 = no polling */
	bool backfill;     /* backfill=auto */
	int page_size;     /* page_size, 0 = the connector's default */
	int full_interval; /* full_sync_interval, seconds (APIs with no deletion feed) */
};

/*
 * Reads sync_interval= (seconds, 0..86400, default 60), backfill=auto|off (default auto),
 * page_size= (1..10000) and full_sync_interval= (seconds, default 3600) of a [synced_tables]
 * line into conf. False with a message in err.
 */
bool sync_table_options(const struct cf_kv *kv, int nkv, struct sync_table_conf *conf, char *err,
                        size_t errsize) __attribute__((warn_unused_result));

/* Called when a pass that a console client waits for is done: error NULL = success. */
typedef void (*sync_done_cb)(void *arg, uint64_t conn_id, const char *error);

/*
 * Starts the worker for confs[0..n) (copied; the strings stay borrowed) on base, with cat to
 * find each table's columns and connection. Tables whose API has no read side, or with
 * sync_interval=0 and backfill=off, stay idle. done answers console waiters. NULL when out
 * of memory.
 */
struct sync *sync_create(struct event_base *base, struct catalog *cat,
                         const struct sync_table_conf *confs, int n, sync_done_cb done,
                         void *done_arg);
/* Stops everything (a page in flight is rolled back); waiters are answered with an error. */
void sync_free(struct sync *s);

/*
 * The mutation pipeline's writes of table i (the index in confs): begin before the API call
 * (keys: the record ids of updated/deleted rows; an insert's are not known yet), accepted
 * with the ids the API confirmed, end when the write is committed or given up.
 */
void sync_write_begin(struct sync *s, int i, bool insert, const char *const *keys, int nkeys);
void sync_write_accepted(struct sync *s, int i, const char *const *ids, int nids);
void sync_write_end(struct sync *s, int i, bool insert, const char *const *keys, int nkeys);

/*
 * SYNC [BACKFILL] db.schema.table from the console client conn_id. NULL: the command was
 * taken; *wait true when the answer comes later through done (a pass), false when it is
 * answered now (BACKFILL starts a reload and answers at once). Else the reason it was refused.
 */
const char *sync_command(struct sync *s, const char *name, bool backfill, uint64_t conn_id,
                         bool *wait);
/* A console client went away or cancelled: forget its waits. */
void sync_forget_waiter(struct sync *s, uint64_t conn_id);

/* SHOW SYNCED_TABLES columns of table i, as text (NULL = SQL NULL). */
struct sync_view {
	const char *state;    /* idle, backfilling, polling, failed, off */
	char last_sync[40];   /* time of the last completed pass, "" if none */
	char lag[32];         /* now - newest change applied, "" if unknown */
	char synced_rows[24]; /* rows written by the sync since start */
	char backfill_rows[24];
	char backfill_total[24]; /* "" when unknown */
	char error[256];         /* the last failure while failed, else "" */
};
void sync_view(struct sync *s, int i, struct sync_view *out);

#endif
