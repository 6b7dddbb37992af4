/*
 * synced — the synced-table side as the core sees it: set-up from the config (APIs, table
 * mappings, classifier, catalog) and the query hook that sends writes of synced tables through
 * the mutation pipeline. The core knows nothing else of it.
 */
#ifndef SB_MUTATION_SYNCED_H
#define SB_MUTATION_SYNCED_H

#include <stdbool.h>

struct bouncer;
struct synced;

/*
 * Builds everything from b->cfg and installs the query hook on b. With no [synced_tables] the
 * hook is not installed and the pooler stays on its fast path. False (logged) when the
 * configuration is unusable (an [apis] line with bad keys, a table naming an unknown API).
 */
bool synced_start(struct bouncer *b) __attribute__((warn_unused_result));
/* Releases everything; mutations in flight are abandoned (their transactions roll back). */
void synced_stop(struct bouncer *b);

#endif
