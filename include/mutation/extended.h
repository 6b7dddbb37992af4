/*
 * extended — extended-protocol batches (Parse/Bind/Describe/Execute/Close up to Sync) that write
 * synced tables: collected message by message, each group run at its Execute through the
 * pipeline and answered as PostgreSQL would; the batch's other messages go to the client's
 * server in order, as one implicit transaction that the batch's first error rolls back.
 * Internal to src/mutation/.
 */
#ifndef SB_MUTATION_EXTENDED_H
#define SB_MUTATION_EXTENDED_H

#include <libpq-fe.h>
#include <stdbool.h>

#include "bouncer.h"
#include "mutation/classifier.h"

struct conn;
struct mut_client;
struct sbuf_pkt;
struct synced;

/*
 * An extended-protocol batch (Parse/Bind/Describe/Execute/Close up to Sync) the hook has taken
 * over. Where it is; only ext_set_phase() moves it (ext_reset() ends it).
 */
enum ext_phase {
	EXT_NONE,       /* no batch: the client's messages go to the server (or start one) */
	EXT_COLLECTING, /* a group's Parse/Bind/Describe/Close, up to its Execute */
	EXT_EXECUTED, /* the group ran, answered without ReadyForQuery: a Parse/Bind starts another
	               */
	EXT_SKIPPING, /* a group failed: everything up to Sync is skipped, as PostgreSQL does */
};
const char *ext_phase_str(enum ext_phase p);

struct ext_seq {
	enum ext_phase phase;
	bool ran; /* a group of this batch was executed (the Sync answers ReadyForQuery alone) */
	/* the client's server takes part in the batch: ordinary messages of it went there, and
	 * the server answers its Sync */
	bool server_used;
	char *portal; /* the portal the group's Bind made (NULL: none, or the server's since) */
	bool parse_sent, bind_sent; /* ParseComplete/BindComplete went out early (Flush) */
	/* the current group's messages, each owing its answer */
	bool parse, bind, describe_portal, describe_stmt, close;
	bool failed;
	char *sql;
	int ntypes;
	Oid *types;
	struct stmt_class sc;
	int nparams;
	char **values;
	int *lengths;
	int *formats;
	int result_format;
	char sqlstate[6];
	char message[256];
	/* Describe of a statement: its name, and PostgreSQL's description once asked (owned) */
	char *describe_name;
	bool describe_stmt_after_bind;
	PGresult *desc;
};

/* Frees what e holds and clears it: the batch is over (EXT_NONE). */
void ext_reset(struct ext_seq *e);
/* Moves the batch to phase p, traced at debug level. */
void ext_set_phase(struct ext_seq *e, enum ext_phase p);
/*
 * The answer to the group's Describe of its statement, as PostgreSQL sends it
 * (ParameterDescription, then RowDescription or NoData), from e->desc: a malloc'd copy in
 * *out, *len bytes. False when out of memory (or no description was asked for).
 */
bool ext_statement_description(const struct ext_seq *e, char **out, size_t *len)
        __attribute__((warn_unused_result));
/* The client of a Describe in flight went away: its answer goes nowhere. */
void ext_describe_client_gone(struct mut_client *mc);
/* Stops every Describe in flight of sy (its connections are closed). */
void ext_describes_stop(struct synced *sy);
/*
 * Takes over the client's batch at a message that writes a synced table: the batch may have
 * sent ordinary messages to the server already (the server must have answered them).
 */
void ext_begin(struct conn *c, struct mut_client *mc);
/* One message of a batch the hook has taken over: what the core does with it. */
enum hook_verdict ext_packet(struct synced *sy, struct conn *c, struct mut_client *mc,
                             const struct sbuf_pkt *pkt);

#endif
