/*
 * mixed — a simple-query string that mixes synced writes with ordinary statements, an ordinary
 * statement coming before (or between) its writes: run in order, answered as PostgreSQL answers
 * one Query (doc/synced-tables.md, "Query strings of several statements").
 *
 * The ordinary statements run on the client's own server, as one transaction: the string's
 * implicit one (a BEGIN of ours when the client is not in a transaction block, ended by our
 * COMMIT, or ROLLBACK after an error), or the client's block. Each synced write runs through
 * the pipeline in its turn and escapes that transaction. The first error ends the string.
 * Owns struct mixed_string (hung on struct mut_client while the string runs). Internal to
 * src/mutation/.
 */
#ifndef SB_MUTATION_MIXED_H
#define SB_MUTATION_MIXED_H

#include <stdbool.h>
#include <stddef.h>

#include "bouncer.h"

struct conn;
struct mixed_string;
struct mut_client;
struct sbuf_pkt;
struct stmt_class;
struct synced;

/* The most statements a query string of several may hold. */
#define MIXED_MAX_STATEMENTS 64

/*
 * Takes the client's Query sql (sc: the whole string classified: a synced write, not all of
 * them first) and runs it, or refuses it whole before anything ran (0A000 for transaction
 * control, COPY FROM STDIN or DEALLOCATE among its statements). Returns the hook's verdict for
 * the Query.
 */
enum hook_verdict mixed_start(struct synced *sy, struct conn *c, const char *sql,
                              const struct stmt_class *sc);
/* The client's Query shown again while its string runs: the next step, or wait. */
enum hook_verdict mixed_step(struct synced *sy, struct conn *c, struct mut_client *mc);
/* A write of the string has ended (its answer was sent, without ReadyForQuery). */
void mixed_write_done(struct mixed_string *ms, bool failed);
/* Whether the string runs inside the client's own transaction block. */
bool mixed_in_client_block(const struct mixed_string *ms);
/* The core's hook.server_answer: keeps the answers to our own BEGIN/COMMIT/ROLLBACK. */
bool mixed_server_answer(void *ctx, struct conn *c, const struct sbuf_pkt *pkt);
/* Frees ms (the client went away, or the string is over). NULL is fine. */
void mixed_free(struct mixed_string *ms);

/*
 * The Query text that runs statements [from, to) of sql (n statements at starts/lens) on the
 * server: sql with every other statement blanked out, so that PostgreSQL's error positions
 * still count from the start of the client's text. A blanked character becomes one space (a
 * newline stays); utf8: the client's encoding is UTF-8, whose continuation bytes then take no
 * space. NULL when out of memory. Exposed for test/unit/test_mixed.c.
 */
char *mixed_segment_text(const char *sql, const int *starts, const int *lens, int n, int from,
                         int to, bool utf8) __attribute__((warn_unused_result));

#endif
