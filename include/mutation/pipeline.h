/*
 * pipeline — one write of a synced table, from the client's statement to its answer (DESIGN.md §4),
 * and the set-up's state it runs in.
 *
 * Owns: struct synced (the set-up: APIs, tables, classifier, catalog, idle connections, the
 * mutations in flight), struct synced_table, struct mconn (a pooled libpq connection of the
 * pipeline), struct mutation and its states. src/mutation/pipeline.c runs a mutation:
 *   BEGIN; mode=capture; <statement>  -- the guard trigger records row images, changes nothing
 *   SELECT ... FROM syncbouncer.capture -- the images (one API request)
 *   the write-ahead intent (intent.c), then the API request
 *   confirmed rows in; mode=apply; <statement> -- the trigger writes the API's version of each row
 *   apply_end(); COMMIT                -- in the apply run's flight: nothing is committed
 *                                         unless it wrote the rows the API confirmed; the
 *                                         intent's deletion and the commit are one fact
 * Its answer (answer.h) replaces the statement's. Internal to src/mutation/.
 */
#ifndef SB_MUTATION_PIPELINE_H
#define SB_MUTATION_PIPELINE_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "api/api.h"
#include "list.h"
#include "mutation/classifier.h"
#include "pktbuf.h"

struct bouncer;
struct catalog_table;
struct conn;
struct ext_seq;
struct mut_client;
struct mutation;
struct pgc;
struct pool;

/*
 * Idle database connections kept for synced writes: two per write the APIs let be in flight at
 * once (the write's own and its intent's), and at least this many. Fewer, and a busy pooler
 * would open and close PostgreSQL connections at every write.
 */
#define MIN_IDLE_CONNS 8
#define RESPONSE_MAX   (64 * 1024 * 1024)

struct synced_table {
	char *database, *schema, *table, *qualified;
	struct api *api;
	int api_index;
	struct api_table at;
	bool at_ready;
};

struct mconn {
	struct list head;
	struct pgc *pc;
	char *conninfo;
};

struct synced {
	struct bouncer *b;
	struct config *cfg; /* our own copy: the catalog and APIs outlive a RELOAD of the core's */
	struct http_engine *http;
	struct api **apis;
	int napis;
	int *api_active; /* mutations per API holding a database connection */
	int *api_cap;    /* at most that many: the API's max_in_flight */
	int idle_cap;    /* idle_conns kept: 2 x the sum of api_cap, at least MIN_IDLE_CONNS */
	struct list queued;
	struct synced_table *tables;
	int ntables;
	struct classifier *cl;
	struct catalog *cat;
	struct list idle_conns;
	struct list mutations;
	struct list describes;   /* Describe messages being answered (extended.c) */
	struct journal *journal; /* the API's answers the database could not take */
	struct settle *settle;   /* settles the intents that outlived their writes */
	bool reload_pending;     /* a RELOAD waits for the mutations in flight */
	bool reload_holds;       /* new writes wait for it (logged once) */
	struct list cat_waiters; /* mut_client.cat_wait: queries held while the catalog runs */
	struct sync *sync;       /* the read side: API changes into the tables */
	struct sync_table_conf *sync_confs;
	bool stopping;
};

/*
 * A mutation's state; only mutation_set_state() moves it, along these lines:
 *   QUEUED -> CONNECTING -> CAPTURING -> WRITING_INTENT -> CALLING_API -> APPLYING -> COMMITTING
 *   CAPTURING, WRITING_INTENT, CALLING_API (the API wrote nothing) -> ROLLING_BACK
 *   CALLING_API (outcome unknown), APPLYING, COMMITTING (the API has the change) -> SETTLING
 *   any state but DONE -> DONE
 */
enum mut_state {
	MUT_QUEUED, /* waiting for one of its API's slots */
	MUT_CONNECTING,
	MUT_CAPTURING,
	MUT_WRITING_INTENT,
	MUT_CALLING_API,
	MUT_APPLYING,
	MUT_COMMITTING,   /* COMMIT of the rows, the confirmed rows and the intent's deletion */
	MUT_ROLLING_BACK, /* nothing was written at the API: ROLLBACK, and the intent goes */
	MUT_SETTLING,     /* the API has or may have the change, the database not: ROLLBACK, and the
	                     intent stays for the settler */
	MUT_DONE,         /* answered; freed on return */
};

/* For logs and SHOW MUTATIONS. */
const char *mut_state_str(enum mut_state st);
/* True when a mutation may move from one state to the other (the table above). */
bool mut_state_allowed(enum mut_state from, enum mut_state to);
/*
 * The only way a mutation's state changes: checks the move (a move the table does not allow is
 * a broken invariant: fatal with --enable-cassert, an error in the log otherwise) and traces it
 * at debug level.
 */
void mutation_set_state(struct mutation *m, enum mut_state st);

/*
 * Whether a number the API echoed is the one it was sent: both spell the same double (an API
 * that holds numbers as doubles answers 12.5 for 12.50, and 1.2345678901234567e+19 for 20
 * digits). The apply run then keeps the digits that were sent. Both are JSON number text.
 */
bool mutation_echo_same_number(const char *sent, const char *echoed);

struct captured {
	int seq;
	struct json_value *old_json, *new_json;
	struct api_value *old_vals, *new_vals;
	int nold, nnew;
	char **owned; /* texts made for nested values */
	int nowned;
};

struct mutation {
	struct list head;
	struct list qhead; /* on sy->queued while MUT_QUEUED */
	struct synced *sy;
	struct mut_client *mc; /* NULL once the client went away */
	char *conninfo;
	bool holds_slot;
	struct synced_table *st;
	struct catalog_table *ct;
	enum stmt_op op;
	bool conflict_nothing;
	enum mut_state state;
	uint64_t started;
	char *sql;
	struct mconn *conn;
	bool stmt_sent;       /* sql went to conn: parsed there as its unnamed statement */
	uint64_t stmt_serial; /* pgc_unnamed_serial() of conn once it did (pgc_send_again()) */
	PGresult *first;      /* the capture run's result: its columns describe RETURNING */
	PGresult *result;     /* the apply run's result */
	struct captured *rows;
	int nrows;
	struct api_row *api_rows;
	struct api_call *call;
	char *confirmed; /* the API's confirmation as JSON (for the journal) */
	char *ids;       /* the API's record ids, for messages */
	char capture_sql[640];
	char prelude_sql[512];
	char *session_sql;   /* the client's session settings that shape how a statement reads */
	char db_error[256]; /* PostgreSQL's message when a run failed, for logs and DETAIL */
	int nparams;        /* the client's parameters, owned */
	char **values;
	int *lengths;
	int *formats;
	Oid *types;
	int ntypes;
	int result_format;
	bool extended;         /* answer as the extended protocol does */
	bool in_block;         /* the client's transaction block was open when the write began */
	bool cancel_requested; /* cancelled while its intent was being written: send nothing */
	bool cancel_late;      /* cancelled after the request left: the answer says so */
	bool request_sent;     /* the API request was handed to the API module */
	bool escaped;          /* the answer carries the NOTICE that the write escaped that block */
	bool in_string;        /* ordinary statements of its query string follow (one implicit
	                          transaction on the server that cannot undo this write) */
	bool in_batch; /* ordinary statements of its extended batch went to the server before it
	                  (their implicit transaction cannot undo this write) */
	bool no_ready; /* an Execute inside a batch: the Sync that follows answers ReadyForQuery */
	bool parse_complete, bind_complete, describe_portal;
	/* the answer to a Describe of the statement: ParameterDescription, RowDescription/NoData */
	char *stmt_desc;
	size_t stmt_desc_len;
	bool stmt_desc_after_bind; /* it follows BindComplete (the client described after Bind) */
	struct pktbuf err;         /* the error to send, when one was decided */
	bool failed;
	bool conn_broken;
	/* the API's answer, for the history: "ok" or its error class (NULL until it answered) */
	const char *api_outcome;
	int api_status;
	int64_t api_usec;
	char api_request_id[96];
	/* the write-ahead intent (include/mutation/settle.h) */
	int64_t intent_id;
	char intent_key[48]; /* the request's idempotency key */
	bool intent_written;
	bool intent_pending; /* being written (while the check runs, or after it) */
	bool check_done;     /* the first flight (capture and check) is answered */
	struct mconn *iconn; /* the companion connection that commits it */
	char *intent_rows, *intent_keys;
	char *keys_text;  /* the keys, for messages */
	char *answer_ids; /* an insert's record ids from the API, JSON */
	uint64_t intent_started;
	struct event *ev_hold; /* test-only hold before COMMIT */
	bool sync_noted;       /* the sync worker was told of this write (sync_write_begin) */
};

/* Closes a pipeline connection (unlinking it from any list first) and frees it. */
void mconn_free(struct mconn *mc);
/* An idle connection made with conninfo, taken off the idle list; NULL when there is none. */
struct mconn *mconn_take_idle(struct synced *sy, const char *conninfo);
/* Gives a connection back to the idle list, or closes it (broken, busy, or enough idle). */
void mconn_release(struct synced *sy, struct mconn *mc, bool broken);
/* The libpq connection string of the pool's server; false with *err when there is none. */
bool mutation_pool_conninfo(const struct pool *pool, char *buf, size_t size, const char **err)
        __attribute__((warn_unused_result));
/*
 * The client's session settings that shape how a statement reads (SELECT set_config(..., true)
 * ...), for a transaction of the pipeline's own; NULL when there are none (or out of memory).
 */
char *mutation_session_settings(struct conn *c);
/* Whether nothing of sy runs any more (writes, Describes): a RELOAD may replace it. */
bool synced_idle(const struct synced *sy);

/*
 * Starts a write of st for the client mc (sql, and for the extended protocol the batch's
 * statement in ext: its bound parameters are taken over, ext keeps none). The answer comes later, or at once on failure (mc->answered is
 * then set by mutation_finish). The mutation is on sy->mutations until it ends.
 */
void mutation_start(struct synced *sy, struct mut_client *mc, struct synced_table *st,
                    struct catalog_table *ct, const struct stmt_class *sc, const char *sql,
                    struct ext_seq *ext);
/* Takes an API slot and a database connection (idle or new), then starts the capture. */
void mutation_acquire(struct mutation *m);
/* Answers the client (error or nothing more), gives the connection back, frees m. */
void mutation_finish(struct mutation *m);
/*
 * The client cancelled m (CancelRequest), or went away (m->mc NULL). Before the API request
 * leaves, the write ends with 57014 and nothing is sent; after, it goes on to its end, and its
 * answer says that the cancel came too late. May finish (free) m.
 */
void mutation_cancel(struct mutation *m);
/* Rolls m's transaction back, then finishes it (its error, if any, was set before). */
void mutation_rollback(struct mutation *m);
/* The intent is durable: the request may leave. */
void mutation_send_request(struct mutation *m);
/*
 * The intent's writing ended (m->intent_written, or m's error set): once the check passed too,
 * the request leaves, or the write ends (the intent forgotten when it was written). May finish
 * (free) m.
 */
void mutation_intent_done(struct mutation *m);
/* "insert", "update", "delete" and the keys, for messages: "update of salesforce.contacts (id
 * 003…)" */
void mutation_describe_write(const struct mutation *m, char *buf, size_t size);

/* Set-up (synced.c): reloads from the loop, never from inside a callback of what it frees. */
void synced_schedule_reload(struct synced *sy);

#endif
