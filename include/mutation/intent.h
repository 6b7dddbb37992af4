/*
 * intent — the write-ahead intent of a synced write (include/mutation/settle.h): the images sent
 * and the keys touched, committed on a companion connection of the same database while the
 * mutation's own transaction keeps the rows locked, before the API request leaves. Internal to
 * src/mutation/.
 */
#ifndef SB_MUTATION_INTENT_H
#define SB_MUTATION_INTENT_H

struct mutation;

/*
 * Commits m's intent, then calls mutation_send_request(m); on failure sets m's error and rolls
 * back (nothing was sent to the API).
 */
void intent_write(struct mutation *m);

#endif
