/*
 * synced — the synced-table side as the core sees it: set-up from the config (APIs, table
 * mappings, classifier, catalog) and the query hook that sends writes of synced tables through
 * the mutation pipeline. The core knows nothing else of it.
 */
#ifndef SB_MUTATION_SYNCED_H
#define SB_MUTATION_SYNCED_H

#include <stdbool.h>
#include <stdint.h>

struct bouncer;
struct synced;

/*
 * Builds everything from b->cfg and installs the query hook on b. With no [synced_tables] the
 * hook is not installed and the pooler stays on its fast path. False (logged) when the
 * configuration is unusable (an [apis] line with bad keys, a table naming an unknown API).
 */
bool synced_start(struct bouncer *b) __attribute__((warn_unused_result));
/*
 * RELOAD: re-reads [apis] and [synced_tables] and re-installs the catalog. Waits for the
 * mutations in flight (and a journal replay) to end first; until the new set-up is in place the
 * old one keeps serving. If the new configuration cannot be set up, synced-table writes are
 * refused by the guard triggers until a RELOAD succeeds.
 */
void synced_reload(struct bouncer *b);
/* At exit: synced_stop() plus the per-client state of clients still connected. */
void synced_shutdown(struct bouncer *b);
/* Writes in flight or queued (a shutdown that waits for servers waits for these too). */
int synced_in_flight(struct bouncer *b);
/* The same for one [databases] entry (NULL or "": all); PAUSE waits for these. */
int synced_in_flight_db(struct bouncer *b, const char *db);
/* Releases everything; mutations in flight are abandoned (their transactions roll back). */
void synced_stop(struct bouncer *b);

/*
 * The admin console's views of the synced-table side. Each calls cb once per row with ncols
 * text values (NULL = SQL NULL), valid during the call; the column names are in the *_columns
 * arrays (NULL-terminated). Secrets never appear.
 */
typedef void (*synced_row_cb)(void *arg, int ncols, const char *const *values);
extern const char *const synced_tables_columns[];    /* SHOW SYNCED_TABLES */
extern const char *const synced_mutations_columns[]; /* SHOW MUTATIONS */
extern const char *const synced_apis_columns[];      /* SHOW APIS */
void synced_show_tables(struct bouncer *b, synced_row_cb cb, void *arg);
void synced_show_mutations(struct bouncer *b, synced_row_cb cb, void *arg);
void synced_show_apis(struct bouncer *b, synced_row_cb cb, void *arg);
/* Journal entries not yet applied to the database; -1 without a journal (metrics endpoint). */
int synced_journal_backlog(struct bouncer *b);

/*
 * SYNC [BACKFILL] database.schema.table from the admin client conn_id: NULL when taken, with
 * *wait true when the answer (admin_command_done / admin_command_failed) comes when the pass
 * is done; else why it was refused.
 */
const char *synced_sync_command(struct bouncer *b, const char *name, bool backfill,
                                uint64_t conn_id, bool *wait);
/* The admin client conn_id went away or cancelled: it waits for nothing any more. */
void synced_forget_admin(struct bouncer *b, uint64_t conn_id);

#endif
