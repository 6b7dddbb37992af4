/*
 * hook — the hook on the client's messages: decides which messages start a synced write (a
 * simple query, or an extended batch), keeps the per-client state (struct mut_client: the write
 * in flight, the batch being collected, a query string of several writes or one that mixes them
 * with ordinary statements), and lets everything else pass to the server. Named synced
 * statements live in the core's table of the client's statement names, as own statements
 * (prepared.h). Internal to src/mutation/.
 */
#ifndef SB_MUTATION_HOOK_H
#define SB_MUTATION_HOOK_H

#include <libpq-fe.h>
#include <stdbool.h>

#include "bouncer.h"
#include "mutation/classifier.h"
#include "mutation/extended.h"

struct conn;
struct mixed_string;
struct mutation;
struct sbuf_pkt;
struct synced;

/*
 * Per-client hook state. It exists while a mutation is in flight or being answered, while an
 * extended sequence is being collected, and as long as the client keeps named synced statements
 * (so that their later Bind messages are seen).
 */
struct mut_client {
	struct conn *client;
	struct mutation *m;
	bool answered; /* the current packet was answered: consume it when it comes back */
	struct ext_seq ext;
	/*
	 * A simple query of several synced writes: run one after another, one ReadyForQuery. When
	 * ordinary statements follow them (tail_off > 0, their offset in the Query's text), the
	 * writes answer without ReadyForQuery and the Query goes on to the server with the writes'
	 * text blanked out, so the server runs the rest and ends the string.
	 */
	char **multi;
	int nmulti, imulti;
	size_t tail_off;
	/* a query string with an ordinary statement before a synced write (mixed.c) */
	struct mixed_string *mixed;
	/*
	 * The search_path the client's own SET statements gave its session (the login value
	 * otherwise): path_session from SET [SESSION], path_local from SET LOCAL while its
	 * transaction block lasts. NULL with path_*_set: back to the login value (RESET).
	 */
	char *path_session, *path_local;
	bool path_session_set, path_local_set;
	/* a Describe being asked of PostgreSQL (extended.c); the relay is paused meanwhile */
	struct describe_job *describe;
	/*
	 * A query held while the synced tables of the client's database are being prepared
	 * (start-up, RELOAD): in synced.cat_waiters, resumed when the catalog's run ends.
	 */
	struct list cat_wait;
	bool cat_waiting;
	/*
	 * A CancelRequest came while the query was held: the held message, shown again, is
	 * dropped without running and answered 57014 (an extended batch then skips to its Sync).
	 */
	bool held_cancelled;
};

/* The client's hook state, made when it has none; NULL when out of memory. */
struct mut_client *mc_get(struct conn *c);
/* Drops the per-client state once nothing needs it: back to the fast path. */
void mc_release_if_idle(struct conn *c);
/*
 * The clients held for the catalog leave sy->cat_waiters for out (an initialised list); none
 * is resumed here. hook_resume_waiters() resumes those of such a list, emptying it.
 */
void hook_take_waiters(struct synced *sy, struct list *out);
void hook_resume_waiters(struct list *waiters);
/*
 * The search_path in force for c's next statement as far as the login and its statements
 * show; NULL when not known (the server's default applies).
 */
const char *hook_search_path(struct conn *c);
/* Classifies sql as c's session reads it: unqualified names through its search_path. */
bool hook_classify(struct synced *sy, struct conn *c, const char *sql, struct stmt_class *sc)
        __attribute__((warn_unused_result));
/* Frees the statements of a query string of several writes. */
void mc_multi_free(struct mut_client *mc);
/*
 * Starts the next write of a query string of several. True when it runs (its end goes on);
 * false when it was answered at once (error and ReadyForQuery sent, the string is over).
 */
bool mc_multi_next(struct synced *sy, struct mut_client *mc);
/*
 * The checks every synced write passes before the pipeline starts. True when the mutation was
 * started (the answer comes later, and the mutation took ext's bound parameters); false when
 * it was answered at once.
 */
bool hook_begin_mutation(struct synced *sy, struct conn *c, const struct stmt_class *sc,
                         const char *sql, struct ext_seq *ext);
/* The core's hook (bouncer.h struct query_hook): inspect and client_closed. */
enum hook_verdict hook_inspect(void *ctx, struct conn *c, const struct sbuf_pkt *pkt);
void hook_client_closed(void *ctx, struct conn *c);
/*
 * A CancelRequest for c: its write in flight is cancelled, or its message held for the catalog
 * or a RELOAD is dropped (true); or nothing of the hook runs (false).
 */
bool hook_cancel(void *ctx, struct conn *c);

#endif
