/*
 * synced — the synced-table side as a module of the pooler (include/module.h): sb_module is
 * its ops struct, the only name the core looks up in synced.so (src/modules.c). Set-up from the config (APIs,
 * table mappings, classifier, catalog, settler, sync worker) and the query hook that sends writes
 * of synced tables through the mutation pipeline are in synced.c; the console views and commands
 * in views.c. Internal to src/mutation/.
 */
#ifndef SB_MUTATION_SYNCED_H
#define SB_MUTATION_SYNCED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "admin.h"
#include "module.h"

struct bouncer;
struct evbuffer;
struct synced;

extern const struct module_ops sb_module;

/*
 * Builds everything from b->cfg and installs the query hook on b. Without [synced_tables] only
 * the guard's settings are refused. False (logged) when the configuration is unusable (an [apis]
 * line with bad keys, a table naming an unknown API).
 */
bool synced_start(struct bouncer *b) __attribute__((warn_unused_result));
/*
 * RELOAD: re-reads [apis] and [synced_tables] and re-installs the catalog. Waits for the
 * mutations in flight to end first; until the new set-up is in place the old one keeps serving.
 * If the new configuration cannot be set up, the old one stays in force.
 */
void synced_reload(struct bouncer *b);
/* At exit: synced_stop() plus the per-client state of clients still connected. */
void synced_shutdown(struct bouncer *b);
/* Writes in flight or queued for one [databases] entry (NULL or "": all); PAUSE waits for these. */
int synced_in_flight_db(struct bouncer *b, const char *db);
/* Releases everything; mutations in flight are abandoned (their transactions roll back). */
void synced_stop(struct bouncer *b);

/* views.c: SHOW APIS, SYNCED_TABLES, MUTATIONS and JOURNAL on the admin console. */
bool synced_register_views(struct bouncer *b) __attribute__((warn_unused_result));
/* views.c: JOURNAL RETRY <id> | JOURNAL GIVEUP <id> CONFIRM; SYNC [BACKFILL] db.schema.table. */
enum module_cmd synced_command(struct bouncer *b, const char *cmd, const char *arg,
                               uint64_t admin_id, char *msg, size_t size);
/* views.c: the admin client admin_id went away or cancelled: it waits for nothing any more. */
void synced_forget_admin(struct bouncer *b, uint64_t admin_id);
/* views.c: the journal's backlog and the history's latencies, for the metrics endpoint. */
void synced_write_metrics(struct bouncer *b, struct evbuffer *out, const char *written);

#endif
