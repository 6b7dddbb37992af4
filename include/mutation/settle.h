/*
 * settle — the write-ahead intents of synced-table writes, and their settling (DESIGN.md §1
 * rule 8, §4 step 5).
 *
 * Before a write's API request leaves, its intent is committed in syncbouncer.intent of the
 * table's own database: table, operation, the row images sent, the primary keys, the
 * idempotency key. The transaction that applies the API's answer deletes it, so "committed" and
 * "intent gone" are one atomic fact. An intent that outlives its write (the process died, the
 * API did not answer, the commit failed) is settled here by asking the API, never by guessing:
 *   - UPDATE and DELETE: each record is read by id and the table gets the API's current state
 *     (the record's fields, or the row deleted when the API no longer has it);
 *   - INSERT: the created record is found by the API's answer when one was received (kept in the
 *     intent, or in the local journal_file when the database was gone), by looking each row up
 *     by its external id (a table with external_id=; none found: not created), or by repeating
 *     the request with the same Idempotency-Key (Stripe); then read by id as above. Where none
 *     exists (and for APIs that cannot read by id) the write is handed to the sync worker,
 *     whose next pass imports what the API holds (settle_sync_pass_hook); without a sync
 *     worker polling the table the intent waits, shown as "awaiting sync".
 * The state written is always the API's state read after the write, never a stored image, so a
 * newer write cannot be overwritten by an older one; and while an intent is unsettled, the guard
 * trigger refuses other writes of its rows with 40001. The settler checks that the table took
 * that state (rows written, the row already holding it, or the deleted row gone): a row that a
 * trigger or rule of the table turned away leaves the intent "needs operator", tried again only
 * on settle_retry().
 *
 * Locking: the writer holds pg_advisory_xact_lock(id) in its own transaction from before the
 * intent is visible until its end. A settler only takes intents whose lock it can get
 * (pg_try_advisory_xact_lock), inside the transaction that writes the API's state and deletes
 * the intent; so a live writer's intent is never settled under it, and two syncbouncer
 * processes sharing a database never settle the same intent twice. The settler also holds the
 * settling lock, id # SETTLE_LOCK_BIT, so that others can tell it from a live writer.
 * A writer sends nothing once its lock is gone (api_call_set_send_check()), but what it sent
 * may still land: the API is asked only twice its timeout plus a second after this settler
 * first saw the lock free (kept per intent in its own memory), never counted from the intent's
 * creation, since a request can leave long after its intent was written.
 *
 * Invariants: one pass at a time, one database at a time, one intent at a time; every pass ends
 * (its connection closed) and schedules the next; nothing blocks the loop.
 */
#ifndef SB_MUTATION_SETTLE_H
#define SB_MUTATION_SETTLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct catalog;
struct catalog_table;
struct journal;
struct api;
struct api_table;
struct api_value;
struct json_value;
struct config;
struct settle;

/* Intent ids are below 2^62; id # this bit is the settling lock's key. */
#define SETTLE_LOCK_BIT "4611686018427387904"

/* What settling needs of a synced table: its API, its mapping and its catalog entry. */
struct settle_table {
	struct api *api;
	const struct api_table *at;
	struct catalog_table *ct;
	bool synced; /* the sync worker polls this table: its next pass imports what the API holds
	              */
};

/* Finds the synced table of database whose relation oid is relid; false when none (any more). */
typedef bool (*settle_find_cb)(void *arg, const char *database, unsigned relid,
                               struct settle_table *out);

/*
 * Creates the settler over cat's databases (borrowed, like journal, which may be NULL).
 * *cfg (the worker's configuration, its pointer borrowed: a RELOAD replaces it, a SET changes
 * it) gives settle_deadline, the age after which an unsettled intent is alerted (log and SHOW
 * JOURNAL), read at each use. The first pass runs at once. NULL when out of memory.
 */
struct settle *settle_create(struct event_base *base, struct catalog *cat, struct journal *journal,
                             const struct config *const *cfg, settle_find_cb find, void *arg);
/* Stops: a pass in progress is abandoned (its transaction rolls back) and everything freed. */
void settle_free(struct settle *s);
/* Runs a pass after delay_ms (sooner than one already planned), e.g. after a write ended unknown.
 */
void settle_kick(struct settle *s, int delay_ms);
/* A pass is running. */
bool settle_busy(const struct settle *s);

/* A fresh intent id: random, positive, 62 bits (also the advisory lock key). */
int64_t settle_new_id(void);

/*
 * Writes the API's answer to intent id (JSON array of the record ids, in row order) to the
 * journal, for when the database could not take it: settling then finds the created records.
 */
bool settle_journal_answer(struct journal *j, int64_t id, const char *database,
                           const char *ids_json) __attribute__((warn_unused_result));

/*
 * Turns a to_jsonb(row) image into column/value pairs for a connector. Texts made for nested
 * values are appended to *owned (caller frees each, and the array). False when out of memory.
 */
bool settle_image_values(const struct json_value *img, struct api_value **out, int *n,
                         char ***owned, int *nowned) __attribute__((warn_unused_result));

/*
 * The admin console. SHOW JOURNAL: the intents of every synced database as the last pass saw
 * them (pending, in flight), then the last outcomes of settling. cb gets ncols text values.
 */
typedef void (*settle_row_cb)(void *arg, int ncols, const char *const *values);
extern const char *const settle_journal_columns[];
void settle_show(struct settle *s, settle_row_cb cb, void *arg);
/* Intents the last pass found unsettled (not in flight); -1 without a settler. */
int settle_pending(const struct settle *s);
/*
 * JOURNAL RETRY id: settle that intent now. JOURNAL GIVEUP id CONFIRM: delete it unsettled
 * (logged). False with the reason in msg when no such entry is known; true with what happens
 * in msg otherwise.
 */
bool settle_retry(struct settle *s, const char *id, char *msg, size_t size);
bool settle_give_up(struct settle *s, const char *id, char *msg, size_t size);

#endif
