/*
 * extended — extended-protocol batches (Parse/Bind/Describe/Execute/Close up to Sync) that write
 * synced tables: collected message by message, each group run at its Execute through the
 * pipeline and answered as PostgreSQL would. Internal to src/mutation/.
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

/* An extended-protocol sequence (Parse/Bind/Describe/Execute/Close up to Sync) being collected. */
struct ext_seq {
	bool active;
	bool ran;        /* a group of this batch was executed (answered without ReadyForQuery) */
	bool skip;       /* a group failed: everything up to Sync is skipped, as PostgreSQL does */
	bool group_done; /* the current group was executed: the next Parse/Bind starts another */
	bool parse_sent, bind_sent; /* ParseComplete/BindComplete went out early (Flush) */
	bool parse, bind, describe_portal, describe_stmt, execute, close;
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
};

/* Frees what e holds and clears it. */
void ext_reset(struct ext_seq *e);
/* One message of a batch the hook has taken over: what the core does with it. */
enum hook_verdict ext_packet(struct synced *sy, struct conn *c, struct mut_client *mc,
                             const struct sbuf_pkt *pkt);

#endif
