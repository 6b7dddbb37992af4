/*
 * answer — what a synced write sends back to its client: the statement's own result as
 * PostgreSQL would send it, the error PostgreSQL gave, the API's errors mapped to SQLSTATEs
 * (DESIGN.md §3), and errors raised through the client's own server when the client is inside a
 * transaction block (so that the block aborts as it would in PostgreSQL). Internal to
 * src/mutation/.
 */
#ifndef SB_MUTATION_ANSWER_H
#define SB_MUTATION_ANSWER_H

#include <libpq-fe.h>
#include <stdbool.h>

struct api_error;
struct conn;
struct mutation;
struct pktbuf;
struct synced_table;

/* ParseComplete / BindComplete that precede an extended sequence's answer. */
void answer_ext_prefix(const struct mutation *m, struct pktbuf *pb);
/*
 * Queues an ErrorResponse (err, built) as a DO block raising exactly that error on the client's
 * server, so that its transaction block aborts. False when the client is not in a transaction
 * block or the server cannot take it now: answer directly.
 */
bool answer_raise_on_server(struct conn *c, const struct pktbuf *err);
/* Sends pb (plus ReadyForQuery unless m->no_ready) to m's client, if it is still there. */
void answer_send(struct mutation *m, struct pktbuf *pb);
/* RowDescription, DataRows and CommandComplete of a result, as PostgreSQL would send them. */
/*
 * The NOTICEs of m's answer, before its command tag or error: a cancel that came after the
 * request left, a write that escaped the client's transaction block.
 */
void answer_notices(const struct mutation *m, struct pktbuf *pb);
void answer_write_result(struct pktbuf *pb, const struct mutation *m, const PGresult *desc,
                         const PGresult *res);
/* Answers the client c at once with an error (and ReadyForQuery, or through its server). */
void answer_now(struct conn *c, const char *sqlstate, const char *msg, const char *detail,
                const char *hint, const struct synced_table *st);

/* m's error, the first one set wins. */
void mutation_set_error(struct mutation *m, const char *sqlstate, const char *msg,
                        const char *detail, const char *hint);
/* The error PostgreSQL gave for the client's statement, with every field it set. */
void mutation_set_pg_error(struct mutation *m, const PGresult *res);
/* The API's refusal or failure, as the PostgreSQL error DESIGN.md §3 maps it to. */
void mutation_set_api_error(struct mutation *m, const struct api_error *ae);

/* The PostgreSQL error an API error maps to (DESIGN.md §3). */
struct api_error_answer {
	const char *sqlstate; /* a constant */
	char message[256];
	char detail[1536]; /* "" for none */
	char hint[128];    /* "" for none */
};
/*
 * Fills out for ae, an error of the API named api about a write described as write ("update of
 * salesforce.contacts (id 003...)") that is journal entry intent_id. Needs nothing else: the
 * mapping is tested on its own (test/unit/test_pipeline.c).
 */
void answer_map_api_error(const struct api_error *ae, const char *api, const char *write,
                          long long intent_id, struct api_error_answer *out);

#endif
