/*
 * journal — the durable record of writes that an API accepted but the database did not commit
 * (DESIGN.md §1 rule 8). An entry is appended and fsync()ed before the client hears of the
 * failure; it is replayed into the database later and then marked done. The file is JSON lines:
 *   {"id":"…","db":"crm","schema":"salesforce","table":"contacts","pk":"id","op":"I",
 *    "rows":[{"key":null,"image":{…},"fields":{…}}]}
 *   {"done":"…"}
 * Nothing is ever rewritten in place: a crash leaves at worst a torn last line, which is skipped.
 */
#ifndef SB_MUTATION_JOURNAL_H
#define SB_MUTATION_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>

struct journal;

/* Opens (creates) the journal file. NULL, logged, when it cannot be opened for appending. */
struct journal *journal_open(const char *path);
void journal_close(struct journal *j);
const char *journal_path(const struct journal *j);

/* Appends one line (no newline inside) and syncs it to disk. False when it is not durable. */
bool journal_append(struct journal *j, const char *line, size_t len)
        __attribute__((warn_unused_result));
/* Records that entry id was applied. */
bool journal_mark_done(struct journal *j, const char *id) __attribute__((warn_unused_result));

/*
 * Calls cb for every entry without a done line, in file order; line is NUL-terminated and valid
 * during the call. Returns the number of pending entries, -1 when the file cannot be read.
 * When none is pending the file is truncated.
 */
int journal_foreach_pending(struct journal *j,
                            void (*cb)(void *arg, const char *id, const char *line), void *arg);

/* A fresh entry id (time and a counter; unique within this journal). */
void journal_new_id(struct journal *j, char *out, size_t size);

#endif
