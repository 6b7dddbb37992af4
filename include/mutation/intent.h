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
 * Commits m's intent (m->intent_pending meanwhile), then calls mutation_intent_done(m), with
 * m->intent_written set or, on failure, m's error (nothing was sent to the API). The call may
 * come before intent_write() returns.
 */
void intent_write(struct mutation *m);

#endif
