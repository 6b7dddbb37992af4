/*
 * extended — extended-protocol batches that write synced tables (include/mutation/extended.h).
 */
#include "mutation/extended.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "conn.h"
#include "log.h"
#include "mutation/answer.h"
#include "mutation/classifier.h"
#include "mutation/hook.h"
#include "mutation/pipeline.h"
#include "pgc.h"
#include "pktbuf.h"
#include "pool.h"
#include "prepared.h"
#include "proto.h"
#include "sbuf.h"

const char *ext_phase_str(enum ext_phase p)
{
	switch (p) {
	case EXT_NONE:
		return "none";
	case EXT_COLLECTING:
		return "collecting";
	case EXT_EXECUTED:
		return "executed";
	case EXT_SKIPPING:
		return "skipping";
	}
	return "?";
}

void ext_set_phase(struct ext_seq *e, enum ext_phase p)
{
	if (e->phase == p)
		return;
	log_debug("extended batch: %s -> %s", ext_phase_str(e->phase), ext_phase_str(p));
	e->phase = p;
}

void ext_reset(struct ext_seq *e)
{
	for (int i = 0; i < e->nparams; i++)
		free(e->values[i]);
	free(e->values);
	free(e->lengths);
	free(e->formats);
	free(e->types);
	free(e->sql);
	free(e->describe_name);
	free(e->portal);
	PQclear(e->desc);
	memset(e, 0, sizeof(*e));
}

/* Keeps the first failure only: its SQLSTATE (6 bytes) and message (256 bytes, cut). */
static void keep_first_failure(bool *failed, char *sqlstate, char *message, const char *state,
                               const char *msg)
{
	if (*failed)
		return;
	*failed = true;
	snprintf(sqlstate, 6, "%s", state);
	snprintf(message, 256, "%s", msg);
}

static void ext_fail(struct ext_seq *e, const char *sqlstate, const char *msg)
{
	_Static_assert(sizeof(e->sqlstate) == 6 && sizeof(e->message) == 256, "failure buffers");
	keep_first_failure(&e->failed, e->sqlstate, e->message, sqlstate, msg);
}

static bool ext_take_stmt(struct ext_seq *e, const char *sql, int ntypes, const Oid *types,
                          const struct stmt_class *sc)
{
	free(e->sql);
	free(e->types);
	e->types = NULL;
	e->ntypes = 0;
	e->sql = strdup(sql);
	if (e->sql == NULL)
		return false;
	if (ntypes > 0) {
		e->types = malloc(sizeof(Oid) * (size_t)ntypes);
		if (e->types == NULL)
			return false;
		memcpy(e->types, types, sizeof(Oid) * (size_t)ntypes);
	}
	e->ntypes = ntypes;
	e->sc = *sc;
	return true;
}

static void ext_parse(struct synced *sy, struct conn *c, struct mut_client *mc,
                      const struct sbuf_pkt *pkt)
{
	struct ext_seq *e = &mc->ext;
	struct pkt_reader r;
	const char *name, *sql;
	uint16_t ntypes;
	Oid types[256];
	struct stmt_class sc;

	pr_init(&r, pkt->body, pkt->body_len);
	if (!pr_string(&r, &name) || !pr_string(&r, &sql) || !pr_u16(&r, &ntypes) || ntypes > 256) {
		ext_fail(e, "08P01", "malformed Parse message");
		return;
	}
	for (int i = 0; i < ntypes; i++) {
		uint32_t t;
		if (!pr_u32(&r, &t)) {
			ext_fail(e, "08P01", "malformed Parse message");
			return;
		}
		types[i] = t;
	}
	e->parse = true;
	if (!hook_classify(sy, c, sql, &sc)) {
		ext_fail(e, "53200", "out of memory");
		return;
	}
	if (sc.verdict == STMT_PASS) {
		ext_fail(e, "0A000",
		         "a write to a synced table cannot share a Sync with other statements");
		return;
	}
	if (!ext_take_stmt(e, sql, ntypes, types, &sc)) {
		ext_fail(e, "53200", "out of memory");
		return;
	}
	/* the unnamed statement too: a batch may bind it again */
	const char *msg;
	if (!ps_own_set(c, name, sql, ntypes, types, &msg))
		ext_fail(e, "53200", msg);
}

static void ext_bind(struct synced *sy, struct conn *c, struct mut_client *mc,
                     const struct sbuf_pkt *pkt)
{
	struct ext_seq *e = &mc->ext;
	struct pkt_reader r;
	const char *portal, *stmt;
	uint16_t nfmt, nparams, nres, f;
	int16_t fmts[1024];

	pr_init(&r, pkt->body, pkt->body_len);
	if (!pr_string(&r, &portal) || !pr_string(&r, &stmt) || !pr_u16(&r, &nfmt) || nfmt > 1024) {
		ext_fail(e, "08P01", "malformed Bind message");
		return;
	}
	for (int i = 0; i < nfmt; i++) {
		if (!pr_u16(&r, &f)) {
			ext_fail(e, "08P01", "malformed Bind message");
			return;
		}
		fmts[i] = (int16_t)f;
	}
	e->bind = true;
	e->bind_sent = false; /* each Bind is answered, a second one of the group too */
	if (stmt[0] != '\0' || (!e->parse && ps_own_find(c, stmt) != NULL)) {
		const struct ps_own *ps = ps_own_find(c, stmt);
		if (ps == NULL) {
			ext_fail(e, "26000", "prepared statement does not exist");
			return;
		}
		struct stmt_class sc;
		/* classified again: a RELOAD may have renumbered the synced tables */
		if (!hook_classify(sy, c, ps->sql, &sc)) {
			ext_fail(e, "53200", "out of memory");
			return;
		}
		if (sc.verdict == STMT_PASS) {
			ext_fail(
			        e, "26000",
			        "prepared statement no longer writes a synced table: prepare it again");
			return;
		}
		if (!ext_take_stmt(e, ps->sql, ps->ntypes, ps->types, &sc)) {
			ext_fail(e, "53200", "out of memory");
			return;
		}
	} else if (e->sql == NULL) {
		ext_fail(e, "26000", "unnamed prepared statement does not exist");
		return;
	}
	if (!pr_u16(&r, &nparams) || (nfmt > 1 && nfmt != nparams)) {
		ext_fail(e, "08P01", "malformed Bind message");
		return;
	}
	/* a second Bind of the portal before its Execute replaces the first one's values */
	for (int i = 0; i < e->nparams; i++)
		free(e->values[i]);
	free(e->values);
	free(e->lengths);
	free(e->formats);
	e->values = NULL;
	e->lengths = e->formats = NULL;
	e->nparams = 0;
	e->values = calloc(nparams ? nparams : 1, sizeof(char *));
	e->lengths = calloc(nparams ? nparams : 1, sizeof(int));
	e->formats = calloc(nparams ? nparams : 1, sizeof(int));
	if (e->values == NULL || e->lengths == NULL || e->formats == NULL) {
		ext_fail(e, "53200", "out of memory");
		return;
	}
	e->nparams = nparams;
	for (int i = 0; i < nparams; i++) {
		uint32_t len;
		const uint8_t *data;
		e->formats[i] = nfmt == 0 ? 0 : nfmt == 1 ? fmts[0] : fmts[i];
		if (!pr_u32(&r, &len)) {
			ext_fail(e, "08P01", "malformed Bind message");
			return;
		}
		if (len == 0xffffffffu)
			continue;
		if (!pr_bytes(&r, len, &data)) {
			ext_fail(e, "08P01", "malformed Bind message");
			return;
		}
		e->values[i] = malloc(len + 1);
		if (e->values[i] == NULL) {
			ext_fail(e, "53200", "out of memory");
			return;
		}
		memcpy(e->values[i], data, len);
		e->values[i][len] = '\0';
		e->lengths[i] = (int)len;
	}
	/* every declared result format must be there, and nothing after them (as PostgreSQL) */
	if (!pr_u16(&r, &nres)) {
		ext_fail(e, "08P01", "malformed Bind message");
		return;
	}
	e->result_format = 0;
	for (int i = 0; i < nres; i++) {
		if (!pr_u16(&r, &f)) {
			ext_fail(e, "08P01", "insufficient data left in message");
			return;
		}
		if (f > 1) {
			ext_fail(e, "22023", "unsupported format code");
			return;
		}
		if (i == 0)
			e->result_format = f;
	}
	if (!pr_done(&r)) {
		ext_fail(e, "08P01", "invalid message format");
		return;
	}
}

/* ---- Describe: PostgreSQL's own description of a synced statement ---------------------- */

/*
 * A Describe of a synced statement is answered as PostgreSQL answers it, because PostgreSQL
 * is asked: on a pipeline connection, in a transaction with the client's session settings
 * (its search_path names the tables), the statement is prepared unnamed and described, then
 * rolled back. Nothing runs: no trigger fires, nothing is sent to an API. The client's relay
 * is paused meanwhile; the message that needed the description (Execute or Sync) comes back
 * to ext_packet() when the description is there.
 */
struct describe_job {
	struct list head; /* on sy->describes */
	struct synced *sy;
	struct mut_client *mc; /* NULL once the client went away */
	struct mconn *conn;
	char *conninfo;
	char *sql;
	int ntypes;
	Oid *types;
	char *settings;
	PGresult *desc;
	bool failed, broken;
	char sqlstate[6];
	char message[256];
};

static void describe_free(struct describe_job *job)
{
	list_del(&job->head);
	if (job->conn != NULL)
		mconn_release(job->sy, job->conn, job->broken);
	if (job->mc != NULL)
		job->mc->describe = NULL;
	PQclear(job->desc);
	free(job->conninfo);
	free(job->sql);
	free(job->types);
	free(job->settings);
	free(job);
}

static void describe_fail(struct describe_job *job, const char *sqlstate, const char *msg)
{
	_Static_assert(sizeof(job->sqlstate) == 6 && sizeof(job->message) == 256,
	               "failure buffers");
	keep_first_failure(&job->failed, job->sqlstate, job->message, sqlstate, msg);
}

/* The description is there (or failed): hand it to the client's batch and let it go on. */
static void describe_finish(struct describe_job *job)
{
	struct synced *sy = job->sy;
	struct mut_client *mc = job->mc;

	if (mc != NULL) {
		struct ext_seq *e = &mc->ext;

		if (job->failed || job->desc == NULL) {
			ext_fail(e, job->failed ? job->sqlstate : "XX000",
			         job->failed ? job->message
			                     : "the statement could not be described");
		} else {
			PQclear(e->desc);
			e->desc = job->desc;
			job->desc = NULL;
		}
		mc->describe = NULL;
		job->mc = NULL;
		client_resume(mc->client);
	}
	describe_free(job);
	if (sy->reload_pending && synced_idle(sy))
		synced_schedule_reload(sy);
}

/* A step's result: NULL when the connection broke, which ends the job at once. */
static bool describe_step_ok(struct describe_job *job, PGresult *res, const char *error)
{
	char detail[200];

	if (res != NULL)
		return true;
	snprintf(detail, sizeof(detail), "lost the database connection of a Describe: %.150s",
	         error ? error : "closed");
	describe_fail(job, "58000", detail);
	job->broken = true;
	describe_finish(job); /* closes the connection: no other step is called back */
	return false;
}

static void on_describe_step(void *arg, struct pgc *pc, PGresult *res, const char *error)
{
	(void)pc;
	(void)describe_step_ok(arg, res, error);
}

static void on_described(void *arg, struct pgc *pc, PGresult *res, const char *error)
{
	struct describe_job *job = arg;

	if (!describe_step_ok(job, res, error))
		return;
	if (!job->failed && PQresultStatus(res) == PGRES_COMMAND_OK)
		job->desc = pgc_steal_result(pc);
}

static void on_describe_prepared(void *arg, struct pgc *pc, PGresult *res, const char *error)
{
	struct describe_job *job = arg;
	const char *st, *msg;

	(void)pc;
	if (!describe_step_ok(job, res, error) || PQresultStatus(res) == PGRES_COMMAND_OK)
		return;
	/* what PostgreSQL answers the client's Parse: its error, as it is */
	st = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
	describe_fail(job, st ? st : "XX000", msg ? msg : "the statement could not be prepared");
}

static void on_describe_done(void *arg, struct pgc *pc, PGresult *res, const char *error)
{
	struct describe_job *job = arg;

	(void)pc;
	if (!describe_step_ok(job, res, error))
		return;
	describe_finish(job);
}

static void describe_run(struct describe_job *job)
{
	struct pgc *pc = job->conn->pc;

	if (!pgc_query(pc, "BEGIN", 0, NULL, NULL, NULL, NULL, 0, on_describe_step, job) ||
	    (job->settings != NULL &&
	     !pgc_query(pc, job->settings, 0, NULL, NULL, NULL, NULL, 0, on_describe_step, job)) ||
	    !pgc_prepare(pc, "", job->sql, job->ntypes, job->types, on_describe_prepared, job) ||
	    !pgc_describe_prepared(pc, "", on_described, job) ||
	    !pgc_query(pc, "ROLLBACK", 0, NULL, NULL, NULL, NULL, 0, on_describe_done, job)) {
		describe_fail(job, "58000",
		              "could not queue a Describe on the database connection");
		job->broken = true;
		describe_finish(job);
	}
}

static void on_describe_connected(void *arg, struct pgc *pc, const char *error)
{
	struct describe_job *job = arg;
	char detail[200];

	(void)pc;
	if (error != NULL) {
		snprintf(detail, sizeof(detail),
		         "could not connect to the database for a Describe: %.140s", error);
		describe_fail(job, "58000", detail);
		job->broken = true;
		describe_finish(job);
		return;
	}
	describe_run(job);
}

/*
 * Asks PostgreSQL to describe the group's statement (the named one a Describe names, else the
 * bound one). True: the answer comes later and the relay stays paused; false: e failed at once.
 */
static bool describe_start(struct synced *sy, struct conn *c, struct mut_client *mc)
{
	struct ext_seq *e = &mc->ext;
	const struct ps_own *ps = e->describe_name != NULL ? ps_own_find(c, e->describe_name) : NULL;
	const char *sql = ps != NULL ? ps->sql : e->sql;
	int ntypes = ps != NULL ? ps->ntypes : e->ntypes;
	const Oid *types = ps != NULL ? ps->types : e->types;
	struct describe_job *job;
	char conninfo[2048];
	const char *err = NULL;

	if (sql == NULL) {
		ext_fail(e, "26000", "prepared statement does not exist");
		return false;
	}
	if (!mutation_pool_conninfo(c->pool, conninfo, sizeof(conninfo), &err)) {
		ext_fail(e, "28000", err);
		return false;
	}
	job = calloc(1, sizeof(*job));
	if (job == NULL) {
		ext_fail(e, "53200", "out of memory");
		return false;
	}
	list_init(&job->head);
	list_append(&sy->describes, &job->head);
	job->sy = sy;
	job->conninfo = strdup(conninfo);
	job->sql = strdup(sql);
	job->ntypes = ntypes;
	job->types = ntypes > 0 ? malloc(sizeof(Oid) * (size_t)ntypes) : NULL;
	job->settings = mutation_session_settings(c);
	if (job->conninfo == NULL || job->sql == NULL || (ntypes > 0 && job->types == NULL)) {
		describe_free(job);
		ext_fail(e, "53200", "out of memory");
		return false;
	}
	if (ntypes > 0)
		memcpy(job->types, types, sizeof(Oid) * (size_t)ntypes);
	job->mc = mc;
	mc->describe = job;
	job->conn = mconn_take_idle(sy, conninfo);
	if (job->conn != NULL) {
		describe_run(job);
		return true;
	}
	job->conn = calloc(1, sizeof(*job->conn));
	if (job->conn == NULL || (job->conn->conninfo = strdup(conninfo)) == NULL)
		goto oom;
	list_init(&job->conn->head);
	job->conn->pc = pgc_connect(sy->b->base, conninfo, on_describe_connected, job);
	if (job->conn->pc == NULL)
		goto oom;
	return true;
oom:
	if (job->conn != NULL)
		free(job->conn->conninfo);
	free(job->conn);
	job->conn = NULL;
	mc->describe = NULL;
	job->mc = NULL;
	describe_free(job);
	ext_fail(e, "53200", "out of memory");
	return false;
}

void ext_describe_client_gone(struct mut_client *mc)
{
	if (mc->describe != NULL)
		mc->describe->mc = NULL; /* the job ends on its own; nobody to answer */
	mc->describe = NULL;
}

void ext_describes_stop(struct synced *sy)
{
	struct list *it, *tmp;

	list_for_each_safe(it, tmp, &sy->describes)
	{
		struct describe_job *job = list_entry(it, struct describe_job, head);

		describe_fail(job, "57P01", "terminating a Describe: syncbouncer is stopping");
		job->broken = true;
		describe_finish(job);
	}
}

/* RowDescription (or NoData) of desc's columns, every one in format fmt. */
static void put_row_description(struct pktbuf *pb, const PGresult *desc, int fmt)
{
	if (PQnfields(desc) == 0) {
		pktbuf_start_msg(pb, PQMSG_NO_DATA);
		pktbuf_finish_msg(pb);
		return;
	}
	answer_row_description(pb, desc, fmt);
}

/* ParameterDescription, then RowDescription or NoData: a Describe of the statement. */
static void put_statement_description(struct pktbuf *pb, const PGresult *desc)
{
	int n = PQnparams(desc);

	pktbuf_start_msg(pb, PQMSG_PARAMETER_DESCRIPTION);
	pktbuf_put_u16(pb, (uint16_t)n);
	for (int i = 0; i < n; i++)
		pktbuf_put_u32(pb, PQparamtype(desc, i));
	pktbuf_finish_msg(pb);
	put_row_description(pb, desc, 0);
}

bool ext_statement_description(const struct ext_seq *e, char **out, size_t *len)
{
	struct pktbuf pb;

	*out = NULL;
	*len = 0;
	if (e->desc == NULL)
		return false;
	pktbuf_init(&pb, 1024 * 1024);
	put_statement_description(&pb, e->desc);
	if (pktbuf_failed(&pb) || (*out = malloc(pb.len)) == NULL) {
		pktbuf_free(&pb);
		return false;
	}
	memcpy(*out, pb.data, pb.len);
	*len = pb.len;
	pktbuf_free(&pb);
	return true;
}

/*
 * What the group owes before its Execute (ParseComplete, the statement's description,
 * BindComplete, the portal's description, CloseComplete), in the order the client asked, put
 * into pb and marked as sent: they are never sent twice. describe_start() gave e->desc for the
 * descriptions.
 */
static void ext_put_owed(struct pktbuf *pb, struct ext_seq *e)
{
	if (e->parse && !e->parse_sent)
		pktbuf_write_simple(pb, PQMSG_PARSE_COMPLETE);
	if (e->describe_stmt && !e->describe_stmt_after_bind && e->desc != NULL)
		put_statement_description(pb, e->desc);
	if (e->bind && !e->bind_sent)
		pktbuf_write_simple(pb, PQMSG_BIND_COMPLETE);
	if (e->describe_stmt && e->describe_stmt_after_bind && e->desc != NULL)
		put_statement_description(pb, e->desc);
	if (e->describe_portal && e->desc != NULL)
		put_row_description(pb, e->desc, e->result_format);
	if (e->close) {
		pktbuf_start_msg(pb, PQMSG_CLOSE_COMPLETE);
		pktbuf_finish_msg(pb);
	}
	e->parse_sent = e->parse;
	e->bind_sent = e->bind;
	e->describe_stmt = e->describe_portal = e->close = false;
}

/* True when the group owes the client answers that only the hook can give. */
static bool ext_owes(const struct ext_seq *e)
{
	return e->failed || (e->parse && !e->parse_sent) || (e->bind && !e->bind_sent) ||
	       e->describe_stmt || e->describe_portal || e->close;
}

/*
 * Answers what the group owes (or its failure) without ReadyForQuery: the batch goes on, on
 * the server. After a failure the rest of the batch is skipped.
 */
static void ext_answer_owed(struct conn *c, struct ext_seq *e)
{
	struct pktbuf pb;

	pktbuf_init(&pb, 1024 * 1024);
	if (e->failed) {
		pktbuf_write_error(&pb, "ERROR", e->sqlstate, e->message, NULL, NULL);
		ext_set_phase(e, EXT_SKIPPING);
	} else {
		ext_put_owed(&pb, e);
	}
	if (pb.len > 0 && (pktbuf_failed(&pb) || !client_queue(c, &pb)))
		client_close(c, "could not send an answer");
	pktbuf_free(&pb);
}

/* Answers a sequence that executes nothing (Parse/Describe/Close + Sync), or a failed one. */
static void ext_answer_now(struct conn *c, struct ext_seq *e)
{
	struct pktbuf pb;

	pktbuf_init(&pb, 1024 * 1024);
	if (e->failed)
		pktbuf_write_error(&pb, "ERROR", e->sqlstate, e->message, NULL, NULL);
	else
		ext_put_owed(&pb, e);
	pktbuf_write_ready(&pb, client_txn_status(c));
	if (pktbuf_failed(&pb) || !client_queue(c, &pb))
		client_close(c, "could not send an answer");
	pktbuf_free(&pb);
}

void ext_begin(struct conn *c, struct mut_client *mc)
{
	struct ext_seq *e = &mc->ext;

	ext_set_phase(e, EXT_COLLECTING);
	e->server_used = client_server_in_batch(c);
	if (client_server_batch_failed(c))
		ext_set_phase(e, EXT_SKIPPING); /* an error of the batch skips to its Sync */
}

/* Forgets the current group (statement, parameters, flags), keeping the batch's state. */
static void ext_new_group(struct ext_seq *e)
{
	bool ran = e->ran, server_used = e->server_used;
	enum ext_phase phase = e->phase == EXT_SKIPPING ? EXT_SKIPPING : EXT_COLLECTING;

	ext_reset(e);
	e->ran = ran;
	e->server_used = server_used;
	e->phase = phase;
}

/* Leaves the batch: the messages from here on are ordinary ones, for the server. */
static enum hook_verdict ext_leave(struct conn *c, struct mut_client *mc)
{
	ext_reset(&mc->ext);
	mc_release_if_idle(c);
	return HOOK_PASS;
}

/*
 * Before the hook writes to the client, the server must have answered what the batch sent it,
 * so that answers keep the order of the messages. WAIT_IDLE: the core asks the server for its
 * answers (Flush) and shows the message again once they are relayed. CONSUME: the server
 * reported an error, which skips the rest of the batch (the message included). PASS: go on.
 */
static enum hook_verdict ext_catch_up(struct conn *c, struct ext_seq *e)
{
	if (!client_server_idle(c))
		return HOOK_WAIT_IDLE;
	if (e->server_used && client_server_batch_failed(c)) {
		ext_set_phase(e, EXT_SKIPPING);
		return HOOK_CONSUME;
	}
	return HOOK_PASS;
}

/* True when a Describe the group owes still needs PostgreSQL's description. */
static bool ext_needs_description(const struct ext_seq *e)
{
	return !e->failed && (e->describe_stmt || e->describe_portal) && e->desc == NULL;
}

/*
 * A message of the batch that is not the hook's: it goes to the server, after what the hook
 * owes for the messages before it (the server's earlier answers first). The hook stays in
 * charge of the batch up to its Sync.
 */
static enum hook_verdict ext_to_server(struct synced *sy, struct conn *c, struct mut_client *mc,
                                       const struct sbuf_pkt *pkt)
{
	struct ext_seq *e = &mc->ext;
	const char *stmt = NULL, *portal = NULL;
	/* a message too big to hold whole streams: its names come first */
	size_t len = pkt->complete ? pkt->body_len : pkt->body_avail;

	if (ext_owes(e)) {
		enum hook_verdict v = ext_catch_up(c, e);
		if (v == HOOK_PASS && ext_needs_description(e) && describe_start(sy, c, mc))
			return HOOK_PAUSE; /* this message comes back when it is there */
		if (v == HOOK_PASS)
			ext_answer_owed(c, e);
		if (v == HOOK_PASS && e->phase == EXT_SKIPPING)
			v = HOOK_CONSUME; /* the hook's error skips this message too */
		if (v == HOOK_CONSUME && !pkt->complete)
			return HOOK_WAIT; /* cannot be skipped unread: refused (too large) */
		if (v != HOOK_PASS)
			return v;
	}
	if (pkt->type == PQMSG_PARSE &&
	    proto_parse_msg_names(PQMSG_PARSE, pkt->body, len, &stmt, &portal) && stmt != NULL)
		ps_own_drop(c, stmt); /* the server's statement of that name from now on */
	else if (pkt->type == PQMSG_BIND &&
	         proto_parse_msg_names(PQMSG_BIND, pkt->body, len, &stmt, &portal) &&
	         portal != NULL && e->portal != NULL && strcmp(portal, e->portal) == 0) {
		free(e->portal); /* the server's portal of that name from now on */
		e->portal = NULL;
	}
	e->server_used = true;
	return HOOK_PASS;
}

/* True when the portal named so is the one the group's Bind made. */
static bool ext_portal_ours(const struct ext_seq *e, const char *portal)
{
	return portal != NULL && e->portal != NULL && strcmp(portal, e->portal) == 0;
}

/*
 * Whether a message of the batch is the hook's: a Parse of a statement that writes a synced
 * table, or a Bind, Describe, Execute or Close of such a statement or of the portal the
 * group's Bind made. A malformed message is the hook's (it answers the error).
 */
static bool ext_is_ours(struct synced *sy, struct conn *c, struct mut_client *mc,
                        const struct sbuf_pkt *pkt)
{
	struct ext_seq *e = &mc->ext;
	const char *stmt = NULL, *portal = NULL;
	const char *sql;
	size_t sql_len;
	uint16_t n;
	struct stmt_class sc;

	if (!pkt->complete) {
		/*
		 * Too big to hold whole (the caller waits for the others): a Parse whose text
		 * cannot name a synced table (the classifier's first check, on the prefix) or a
		 * Bind of a statement that is not the hook's is ordinary and streams to the
		 * server; anything else must be held whole, and is refused.
		 */
		const void *nul;
		if (pkt->type == PQMSG_PARSE &&
		    (nul = memchr(pkt->body, '\0', pkt->body_avail)) != NULL) {
			size_t skip = (size_t)((const uint8_t *)nul - pkt->body) + 1;
			return classifier_quick_check(sy->cl, c->pool->db_name,
			                              (const char *)pkt->body + skip,
			                              pkt->body_avail - skip);
		}
		if (pkt->type == PQMSG_BIND &&
		    proto_parse_msg_names(PQMSG_BIND, pkt->body, pkt->body_avail, &stmt, &portal))
			return ps_own_find(c, stmt) != NULL;
		return true;
	}
	switch (pkt->type) {
	case PQMSG_PARSE:
		if (!proto_parse_parse(pkt->body, pkt->body_len, &stmt, &sql, &sql_len, &n))
			return true;
		return !hook_classify(sy, c, sql, &sc) || sc.verdict != STMT_PASS;
	case PQMSG_BIND:
	case PQMSG_DESCRIBE:
	case PQMSG_CLOSE:
	case PQMSG_EXECUTE:
		if (!proto_parse_msg_names(pkt->type, pkt->body, pkt->body_len, &stmt, &portal))
			return true;
		if (pkt->type == PQMSG_BIND)
			return ps_own_find(c, stmt) != NULL;
		if (stmt != NULL)
			return ps_own_find(c, stmt) != NULL;
		return ext_portal_ours(e, portal);
	default:
		return true;
	}
}

/*
 * The batch's Sync. When the server took part in the batch (or a failed batch must abort the
 * client's transaction block), the Sync goes to it after what the hook owes, and its
 * ReadyForQuery ends the batch: its implicit transaction commits, or rolls back after an error
 * (a hook's error is raised on the server first, unseen). Otherwise the hook answers it.
 */
static enum hook_verdict ext_sync(struct synced *sy, struct conn *c, struct mut_client *mc)
{
	struct ext_seq *e = &mc->ext;
	bool failed = e->phase == EXT_SKIPPING || e->failed;

	if (e->server_used || (failed && c->link != NULL && client_txn_status(c) == 'T')) {
		if (!client_server_idle(c))
			return HOOK_WAIT_IDLE;
		if (!(e->server_used && client_server_batch_failed(c))) {
			if (e->phase != EXT_SKIPPING && ext_owes(e)) {
				if (ext_needs_description(e) && describe_start(sy, c, mc))
					return HOOK_PAUSE; /* the Sync comes back when it is there
					                    */
				ext_answer_owed(c, e);
			}
			if (e->phase == EXT_SKIPPING &&
			    ((!e->server_used && !client_server_join_batch(c)) ||
			     !client_abort_server_batch(c))) {
				client_close(c, "could not end a failed batch on the server");
				return HOOK_CONSUME;
			}
		}
		ext_reset(e);
		mc_release_if_idle(c);
		return HOOK_PASS;
	}
	if (e->phase == EXT_SKIPPING) {
		struct pktbuf pb;
		pktbuf_init(&pb, 64);
		pktbuf_write_ready(&pb, client_txn_status(c));
		if (!client_queue(c, &pb))
			client_close(c, "could not send an answer");
		pktbuf_free(&pb);
	} else {
		if (ext_needs_description(e) && describe_start(sy, c, mc))
			return HOOK_PAUSE; /* this Sync comes back when the description is there */
		ext_answer_now(c, e);
	}
	ext_reset(e);
	mc_release_if_idle(c);
	return HOOK_CONSUME;
}

/*
 * Answers what the batch owes the client, once the server's answers to what went before have
 * reached it (and a description owed has been fetched): HOOK_PASS when done, else the verdict
 * that waits for it.
 */
static enum hook_verdict ext_answer_owed_now(struct synced *sy, struct conn *c,
                                             struct mut_client *mc)
{
	struct ext_seq *e = &mc->ext;
	enum hook_verdict v;

	if ((v = ext_catch_up(c, e)) != HOOK_PASS)
		return v;
	if (ext_needs_description(e) && describe_start(sy, c, mc))
		return HOOK_PAUSE;
	ext_answer_owed(c, e);
	return HOOK_PASS;
}

/*
 * One message of an extended-protocol batch that the hook has taken over. A batch is the
 * messages up to Sync; the hook runs its groups (Parse/Bind/Describe/Execute that write a
 * synced table) and lets the others go to the server, in order: before the hook answers
 * anything, the server has answered what it was sent, and what the hook owes is answered
 * before the next message goes to the server. Each synced group runs at its Execute and is
 * answered then, without ReadyForQuery. The first error, the server's or the hook's, skips the
 * rest of the batch as PostgreSQL does; a hook's error makes the server fail its part of the
 * batch too (its statements roll back). The Sync answers ReadyForQuery once: the server's when
 * it took part in the batch, else the hook's.
 */
enum hook_verdict ext_packet(struct synced *sy, struct conn *c, struct mut_client *mc,
                             const struct sbuf_pkt *pkt)
{
	struct ext_seq *e = &mc->ext;
	const char *stmt = NULL, *portal = NULL;
	enum hook_verdict v;

	if (e->phase == EXT_SKIPPING && pkt->type != PQMSG_SYNC)
		return pkt->complete ? HOOK_CONSUME : HOOK_WAIT;
	if (!pkt->complete) {
		if (pkt->too_big && (pkt->type == PQMSG_PARSE || pkt->type == PQMSG_BIND) &&
		    !ext_is_ours(sy, c, mc, pkt))
			return ext_to_server(sy, c, mc, pkt);
		return HOOK_WAIT;
	}
	switch (pkt->type) {
	case PQMSG_PARSE:
	case PQMSG_BIND:
	case PQMSG_DESCRIBE:
	case PQMSG_CLOSE:
	case PQMSG_EXECUTE:
		if (!ext_is_ours(sy, c, mc, pkt))
			return ext_to_server(sy, c, mc, pkt);
		break;
	case PQMSG_FLUSH:
		if (!ext_owes(e))
			return e->server_used ? HOOK_PASS : HOOK_CONSUME;
		/* the server was asked for its answers already: the hook's follow */
		v = ext_answer_owed_now(sy, c, mc);
		return v == HOOK_PASS ? HOOK_CONSUME : v;
	case PQMSG_SYNC:
		break;
	default:
		/* not part of an extended batch: give the rest to the server */
		if (ext_owes(e)) {
			if ((v = ext_catch_up(c, e)) != HOOK_PASS)
				return v;
			ext_answer_owed(c, e);
		}
		return ext_leave(c, mc);
	}
	if (((pkt->type == PQMSG_PARSE || pkt->type == PQMSG_BIND) && e->phase == EXT_EXECUTED &&
	     ext_owes(e)) ||
	    (e->phase != EXT_EXECUTED && !e->failed &&
	     (e->close || (pkt->type == PQMSG_DESCRIBE && (e->describe_stmt || e->describe_portal)) ||
	      (pkt->type == PQMSG_BIND && e->bind)))) {
		/*
		 * A Describe or Close after the group's Execute, answered before the next group; or
		 * an answer owed that this message would merge with its own or overtake (one flag
		 * per kind of message): what is owed goes first, each message answered once
		 */
		if ((v = ext_answer_owed_now(sy, c, mc)) != HOOK_PASS)
			return v;
		if (e->phase == EXT_SKIPPING)
			return HOOK_CONSUME;
	}
	switch (pkt->type) {
	case PQMSG_PARSE:
		if (e->phase == EXT_EXECUTED)
			ext_new_group(e);
		if (e->parse || e->bind) {
			ext_fail(e, "0A000",
			         "a write to a synced table cannot be interleaved with another one "
			         "before its Execute");
			return HOOK_CONSUME;
		}
		ext_parse(sy, c, mc, pkt);
		return HOOK_CONSUME;
	case PQMSG_BIND:
		if (e->phase == EXT_EXECUTED)
			ext_new_group(e);
		if (proto_parse_msg_names(PQMSG_BIND, pkt->body, pkt->body_len, &stmt, &portal) &&
		    portal != NULL) {
			free(e->portal);
			if ((e->portal = strdup(portal)) == NULL)
				ext_fail(e, "53200", "out of memory");
		}
		if (!e->failed)
			ext_bind(sy, c, mc, pkt);
		return HOOK_CONSUME;
	case PQMSG_DESCRIBE:
		if (pkt->body_len >= 1 && pkt->body[0] == PQMSG_TARGET_PORTAL) {
			e->describe_portal = true;
		} else if (proto_parse_msg_names(PQMSG_DESCRIBE, pkt->body, pkt->body_len, &stmt,
		                                 &portal) &&
		           stmt != NULL) {
			e->describe_stmt = true;
			e->describe_stmt_after_bind = e->bind;
			free(e->describe_name);
			if ((e->describe_name = strdup(stmt)) == NULL)
				ext_fail(e, "53200", "out of memory");
		} else {
			ext_fail(e, "08P01", "malformed Describe message");
		}
		return HOOK_CONSUME;
	case PQMSG_EXECUTE:
		/* the hook answers now: what the server owes goes first */
		if ((v = ext_catch_up(c, e)) != HOOK_PASS)
			return v;
		if (e->failed) {
			answer_now(c, e->sqlstate, e->message, NULL, NULL, NULL);
			return HOOK_CONSUME;
		}
		if (e->sql == NULL || !e->bind) {
			answer_now(c, "34000", "portal does not exist", NULL, NULL, NULL);
			return HOOK_CONSUME;
		}
		if (e->phase == EXT_EXECUTED) {
			/*
			 * Its portal ran already (no Bind since): a write runs once. PostgreSQL
			 * answers a finished portal with RETURNING with its rows left (none), and
			 * refuses to run one without RETURNING again.
			 */
			char msg[160];
			if (e->sc.returning) {
				struct pktbuf pb;
				pktbuf_init(&pb, 64);
				pktbuf_write_command_complete(&pb,
				                              e->sc.op == OP_INSERT   ? "INSERT 0 0"
				                              : e->sc.op == OP_UPDATE ? "UPDATE 0"
				                                                      : "DELETE 0");
				if (!client_queue(c, &pb))
					client_close(c, "could not send an answer");
				pktbuf_free(&pb);
				return HOOK_CONSUME;
			}
			if (!proto_parse_msg_names(PQMSG_EXECUTE, pkt->body, pkt->body_len, &stmt,
			                           &portal) ||
			    portal == NULL)
				portal = "";
			snprintf(msg, sizeof(msg), "portal \"%.100s\" cannot be run", portal);
			answer_now(c, "55000", msg, NULL, NULL, NULL);
			return HOOK_CONSUME;
		}
		if (e->describe_stmt && e->desc == NULL) {
			/* the description first; this Execute comes back when it is there */
			if (describe_start(sy, c, mc))
				return HOOK_PAUSE;
			answer_now(c, e->sqlstate, e->message, NULL, NULL, NULL);
			return HOOK_CONSUME;
		}
		v = hook_begin_mutation(sy, c, &e->sc, e->sql, e) ? HOOK_PAUSE : HOOK_CONSUME;
		/* the write's answer carries what the group owed (or an error skips it) */
		e->parse_sent = e->parse;
		e->bind_sent = e->bind;
		e->describe_stmt = e->describe_portal = false;
		return v;
	case PQMSG_CLOSE:
		if (proto_parse_msg_names(PQMSG_CLOSE, pkt->body, pkt->body_len, &stmt, &portal) &&
		    stmt != NULL)
			ps_own_drop(c, stmt);
		else if (portal != NULL) {
			free(e->portal);
			e->portal = NULL;
		}
		e->close = true;
		return HOOK_CONSUME;
	default:
		break;
	}
	return ext_sync(sy, c, mc);
}
