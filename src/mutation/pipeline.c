/*
 * pipeline — one synced write from its statement to its answer (DESIGN.md §4;
 * include/mutation/pipeline.h).
 *
 * A write to a synced table runs on a libpq connection of its own (pgc), outside any client
 * transaction, in one database transaction, in two round trips (flights of statements sent in
 * libpq's pipeline mode, pgc_send(), each answered in order):
 *   1. BEGIN; mode=capture; <statement>    the guard trigger records row images, changes nothing
 *      SELECT … FROM syncbouncer.capture   the images (one API request)
 *      SAVEPOINT; mode=check; <statement>; the rows written for real, so that PostgreSQL checks
 *      ROLLBACK TO SAVEPOINT; mode=apply   the table's constraints before anything is sent
 *   -- the intent is committed on a companion connection (intent.c), from the images, while
 *      the check runs; the request is sent once both are done; the transaction waits, rows
 *      locked --
 *   2. confirmed rows in; <statement>      the trigger writes the API's version of each row
 *      apply_end(); COMMIT                 raises unless the apply run wrote the rows the API
 *                                          confirmed; deletes the intent; commits
 * and the apply run's result (command tag, RETURNING rows) is sent to the client in place of the
 * statement. PostgreSQL evaluates the statement every time: the proxy never re-implements SQL.
 * The pipeline's own statements whose text is the same at every write (the images, the
 * savepoint and modes, the confirmed rows, apply_end, COMMIT) are named statements, parsed and
 * planned once per database connection (pgc_send_named()); the client's statement is parsed
 * once per write, by the capture run, and bound again for the check and the apply run
 * (pgc_send_again(): the apply run's flight, the one after the API's answer, parses nothing).
 *
 * Invariants: a client has at most one mutation in flight, and its relay is paused meanwhile;
 * every mutation ends with COMMIT or ROLLBACK on its connection (a connection whose outcome is
 * unknown is closed, which rolls back); a client that went away does not stop its mutation.
 */
#include "mutation/pipeline.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/json.h"
#include "bouncer.h"
#include "client.h"
#include "conn.h"
#include "log.h"
#include "mutation/answer.h"
#include "mutation/catalog.h"
#include "mutation/classifier.h"
#include "mutation/extended.h"
#include "mutation/history.h"
#include "mutation/hook.h"
#include "mutation/intent.h"
#include "mutation/mixed.h"
#include "mutation/settle.h"
#include "mutation/sync.h"
#include "pgc.h"
#include "pktbuf.h"
#include "pool.h"
#include "proto.h"

/*
 * What the capture run may hand to the loop: the row images of one statement, as JSON text, old
 * and new together. Reading them (JSON parse, re-encoding jsonb values, building the request)
 * runs on the event loop at 15-30 MB/s for the worst shapes (arrays of small numbers), so
 * 256 KiB stalls the other clients for a few ms at most, and still holds 200 rows of a few
 * hundred bytes. PostgreSQL measures the images; a larger statement never leaves the server.
 */
#define CAPTURE_MAX_BYTES (256 * 1024)

const char *mut_state_str(enum mut_state st)
{
	switch (st) {
	case MUT_QUEUED:
		return "queued";
	case MUT_CONNECTING:
		return "connecting";
	case MUT_CAPTURING:
		return "capturing";
	case MUT_WRITING_INTENT:
		return "writing_intent";
	case MUT_CALLING_API:
		return "calling_api";
	case MUT_APPLYING:
		return "applying";
	case MUT_COMMITTING:
		return "committing";
	case MUT_ROLLING_BACK:
		return "rolling_back";
	case MUT_SETTLING:
		return "settling";
	case MUT_DONE:
		return "done";
	}
	return "?";
}

bool mut_state_allowed(enum mut_state from, enum mut_state to)
{
	if (to == MUT_DONE)
		return from != MUT_DONE;
	switch (from) {
	case MUT_QUEUED:
		return to == MUT_CONNECTING || to == MUT_CAPTURING;
	case MUT_CONNECTING:
		return to == MUT_CAPTURING;
	case MUT_CAPTURING:
		return to == MUT_WRITING_INTENT || to == MUT_ROLLING_BACK;
	case MUT_WRITING_INTENT:
		return to == MUT_CALLING_API || to == MUT_ROLLING_BACK;
	case MUT_CALLING_API:
		return to == MUT_APPLYING || to == MUT_ROLLING_BACK || to == MUT_SETTLING;
	case MUT_APPLYING:
		return to == MUT_COMMITTING || to == MUT_SETTLING;
	case MUT_COMMITTING:
		return to == MUT_SETTLING;
	case MUT_ROLLING_BACK:
	case MUT_SETTLING:
	case MUT_DONE:
		return false;
	}
	return false;
}

void mutation_set_state(struct mutation *m, enum mut_state st)
{
	if (m->state == st)
		return;
	if (!mut_state_allowed(m->state, st)) {
#ifdef CASSERT
		fatal("synced table %s: journal entry %lld: illegal move %s -> %s",
		      m->st->qualified, (long long)m->intent_id, mut_state_str(m->state),
		      mut_state_str(st));
#else
		log_error("synced table %s: journal entry %lld: illegal move %s -> %s",
		          m->st->qualified, (long long)m->intent_id, mut_state_str(m->state),
		          mut_state_str(st));
#endif
	}
	log_debug("synced table %s: %s, journal entry %lld: %s -> %s", m->st->qualified,
	          stmt_op_str(m->op), (long long)m->intent_id, mut_state_str(m->state),
	          mut_state_str(st));
	m->state = st;
}

/* ---- connections ----------------------------------------------------------------------- */

static void append_conninfo(char *buf, size_t size, size_t *len, const char *key, const char *v)
{
	int n;

	n = snprintf(buf + *len, size - *len, "%s%s='", *len ? " " : "", key);
	if (n < 0 || (size_t)n >= size - *len) {
		*len = size;
		return;
	}
	*len += (size_t)n;
	for (const char *p = v; *p && *len + 3 < size; p++) {
		if (*p == '\'' || *p == '\\')
			buf[(*len)++] = '\\';
		buf[(*len)++] = *p;
	}
	if (*len + 2 < size) {
		buf[(*len)++] = '\'';
		buf[*len] = '\0';
	} else {
		*len = size;
	}
}

/* The libpq connection string for the pool's server (host, port, db, user, password). */
bool mutation_pool_conninfo(const struct pool *pool, char *buf, size_t size, const char **err)
{
	char port[16];
	size_t len = 0;
	const char *host = pool->host[0] ? pool->host : "/var/run/postgresql";

	if (pool->server_password[0] &&
	    (strncmp(pool->server_password, "md5", 3) == 0 ||
	     strncmp(pool->server_password, "SCRAM-SHA-256$", 14) == 0)) {
		*err = "synced-table writes need the user's plain password in auth_file or the "
		       "[databases] entry";
		return false;
	}
	buf[0] = '\0';
	snprintf(port, sizeof(port), "%d", pool->port);
	append_conninfo(buf, size, &len, "host", host);
	append_conninfo(buf, size, &len, "port", port);
	append_conninfo(buf, size, &len, "dbname", pool->server_db);
	append_conninfo(buf, size, &len, "user", pool->server_user);
	if (pool->server_password[0])
		append_conninfo(buf, size, &len, "password", pool->server_password);
	append_conninfo(buf, size, &len, "application_name", "syncbouncer mutation");
	append_conninfo(buf, size, &len, "connect_timeout", "10");
	if (len >= size) {
		*err = "connection string too long";
		return false;
	}
	return true;
}

bool synced_idle(const struct synced *sy)
{
	return list_empty(&sy->mutations) && list_empty(&sy->describes);
}

struct mconn *mconn_take_idle(struct synced *sy, const char *conninfo)
{
	struct list *it;

	list_for_each(it, &sy->idle_conns)
	{
		struct mconn *c = list_entry(it, struct mconn, head);
		if (strcmp(c->conninfo, conninfo) == 0 && pgc_ok(c->pc)) {
			list_del(&c->head);
			return c;
		}
	}
	return NULL;
}

void mconn_release(struct synced *sy, struct mconn *mc, bool broken)
{
	if (broken || !pgc_ok(mc->pc) || pgc_busy(mc->pc) ||
	    list_count(&sy->idle_conns) >= (size_t)sy->idle_cap)
		mconn_free(mc);
	else
		list_append(&sy->idle_conns, &mc->head);
}

void mconn_free(struct mconn *mc)
{
	list_del(&mc->head);
	pgc_close(mc->pc);
	free(mc->conninfo);
	free(mc);
}

/* ---- the pipeline ---------------------------------------------------------------------- */

static bool queue(struct mutation *m, const char *sql, pgc_result_cb cb)
{
	return pgc_query(m->conn->pc, sql, 0, NULL, NULL, NULL, NULL, 0, cb, m);
}

/*
 * One statement of a flight (pgc_send): sent without waiting for the answers before it; sync
 * ends the flight, and an error in a flight skips the rest of it (PGRES_PIPELINE_ABORTED).
 */
static bool send_sql(struct mutation *m, const char *sql, bool sync, pgc_result_cb cb)
{
	return pgc_send(m->conn->pc, sql, 0, NULL, NULL, NULL, NULL, 0, sync, cb, m);
}

static bool send_params(struct mutation *m, const char *sql, int n, const char *const *values,
                        bool sync, pgc_result_cb cb)
{
	return pgc_send(m->conn->pc, sql, n, NULL, values, NULL, NULL, 0, sync, cb, m);
}

/*
 * A statement of the pipeline's own, the same text at every write: prepared once per database
 * connection under name (pgc_send_named()), so that PostgreSQL parses and plans it once.
 */
static bool send_named(struct mutation *m, const char *name, const char *sql, int n,
                       const char *const *values, bool sync, pgc_result_cb cb)
{
	return pgc_send_named(m->conn->pc, name, sql, n, values, sync, cb, m);
}

/*
 * The client's statement, in a flight: its own parameters when it came by Bind. It runs three
 * times on the write's connection (capture, check, apply); the first run parses it as the
 * connection's unnamed statement, and the later ones bind that statement again as long as
 * nothing parsed in between (the lookup of rows skipped by ON CONFLICT DO NOTHING does), so
 * PostgreSQL parses and analyses it once per write, and the flight after the API's answer
 * carries no parse of it at all.
 */
static bool send_stmt(struct mutation *m, bool sync, pgc_result_cb cb)
{
	struct pgc *pc = m->conn->pc;
	int n = m->extended ? m->nparams : 0;
	bool ok;

	if (m->stmt_sent)
		ok = pgc_send_again(pc, m->stmt_serial, m->sql, n, n ? m->types : NULL,
		                    n ? (const char *const *)m->values : NULL,
		                    n ? m->lengths : NULL, n ? m->formats : NULL,
		                    m->extended ? m->result_format : 0, sync, cb, m);
	else
		ok = pgc_send(pc, m->sql, n, n ? m->types : NULL,
		              n ? (const char *const *)m->values : NULL, n ? m->lengths : NULL,
		              n ? m->formats : NULL, m->extended ? m->result_format : 0, sync, cb,
		              m);
	if (ok) {
		m->stmt_sent = true;
		m->stmt_serial = pgc_unnamed_serial(pc);
	}
	return ok;
}

/* Keeps the database's first error message, for the log and for a failed commit's detail. */
static void note_db_error(struct mutation *m, const PGresult *res)
{
	const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);

	if (!m->db_error[0])
		snprintf(m->db_error, sizeof(m->db_error), "%s", msg ? msg : "error");
}

static void on_ignored(void *arg, struct pgc *pc, PGresult *res, const char *error)
{
	struct mutation *m = arg;

	(void)pc;
	if (res == NULL) {
		m->conn_broken = true;
		return;
	}
	if (PQresultStatus(res) == PGRES_FATAL_ERROR) {
		note_db_error(m, res);
		mutation_set_pg_error(m, res);
	}
	(void)error;
}

static void on_rolled_back(void *arg, struct pgc *pc, PGresult *res, const char *error)
{
	struct mutation *m = arg;

	(void)pc;
	(void)error;
	if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK)
		m->conn_broken = true;
	mutation_finish(m);
}

/* The API wrote nothing: roll back, then the intent goes too (a write of its own). */
static void rollback_forget_intent(struct mutation *m)
{
	char sql[192];

	/* one query string, one round trip: the deletion commits on its own after the rollback */
	snprintf(sql, sizeof(sql), "ROLLBACK; CALL syncbouncer.intent_forget(%lld, '%s')",
	         (long long)m->intent_id, m->intent_key);
	mutation_set_state(m, MUT_ROLLING_BACK);
	if (m->conn_broken || !queue(m, sql, on_rolled_back)) {
		m->conn_broken = true;
		settle_kick(m->sy->settle,
		            300); /* the intent is left: settling finds nothing done */
		mutation_finish(m);
	}
}

void mutation_cancel(struct mutation *m)
{
	switch (m->state) {
	case MUT_CAPTURING:
		if (m->intent_pending || m->intent_written) {
			m->cancel_requested = true; /* its intent is out: as MUT_WRITING_INTENT */
			return;
		}
		/* fall through */
	case MUT_QUEUED:
	case MUT_CONNECTING:
		/*
		 * Nothing has left the pooler: the write ends here. Its transaction (rows captured,
		 * locks held) ends with its connection, which is closed rather than waited for.
		 */
		log_debug("synced table %s: %s cancelled while %s", m->st->qualified,
		          stmt_op_str(m->op), mut_state_str(m->state));
		mutation_set_error(m, "57014", "canceling statement due to user request", NULL,
		                   NULL);
		if (m->state != MUT_QUEUED)
			m->conn_broken = true;
		mutation_finish(m);
		return;
	case MUT_WRITING_INTENT:
		m->cancel_requested = true; /* mutation_send_request() sends nothing */
		return;
	case MUT_CALLING_API:
	case MUT_APPLYING:
	case MUT_COMMITTING:
	case MUT_ROLLING_BACK:
	case MUT_SETTLING:
		/* a rollback before any request ends with its own error, as PostgreSQL's would */
		m->cancel_late = m->request_sent;
		return;
	case MUT_DONE:
		return;
	}
}

/* ROLLBACK, as MUT_ROLLING_BACK (nothing at the API) or MUT_SETTLING (the intent stays). */
static void rollback_as(struct mutation *m, enum mut_state st)
{
	mutation_set_state(m, st);
	if (m->conn_broken || !queue(m, "ROLLBACK", on_rolled_back)) {
		m->conn_broken = true;
		mutation_finish(m);
	}
}

void mutation_rollback(struct mutation *m)
{
	rollback_as(m, MUT_ROLLING_BACK);
}

/* ---- the write-ahead intent (include/mutation/settle.h) -------------------------------------- */

/* "insert", "update", "delete" and the keys, for messages: "update of salesforce.contacts (id
 * 003…)" */
void mutation_describe_write(const struct mutation *m, char *buf, size_t size)
{
	snprintf(buf, size, "%s of %s (%s %s)", stmt_op_str(m->op), m->st->qualified,
	         m->st->at.pk_column, m->keys_text ? m->keys_text : "not assigned yet");
}

/* The API's record ids of an insert, as a JSON array, for the journal. */
static char *answer_ids_json(const struct api_result *ar)
{
	struct json_out o;
	size_t len;
	char *text;

	if (!json_out_init(&o, 16 * 1024 * 1024))
		return NULL;
	json_out_array_begin(&o);
	for (int i = 0; i < ar->nrows; i++) {
		if (ar->rows[i].id != NULL)
			json_out_string(&o, ar->rows[i].id);
		else
			json_out_null(&o);
	}
	json_out_array_end(&o);
	text = json_out_ok(&o) ? json_out_take(&o, &len) : NULL;
	json_out_free(&o);
	return text;
}

/* Test-only (doc/synced-tables.md): SYNCBOUNCER_TEST_HOLD_BEFORE_COMMIT_MS holds each synced write
 * that long between its apply run and its COMMIT, so that a test can kill the process there. */
static int test_hold_before_commit_ms(void)
{
	const char *v = getenv("SYNCBOUNCER_TEST_HOLD_BEFORE_COMMIT_MS");

	return v != NULL ? atoi(v) : 0;
}

static void on_committed(void *arg, struct pgc *pc, PGresult *res, const char *error)
{
	struct mutation *m = arg;
	struct pktbuf pb;
	char detail[1024];
	size_t len = 0;

	(void)pc;
	if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK || m->failed ||
	    m->result == NULL) {
		/* the API has the change and the database does not: say so, with the ids */
		const char *why = m->db_error[0] ? m->db_error
		                  : res == NULL  ? error
		                  : PQresultStatus(res) != PGRES_COMMAND_OK
		                          ? PQresultErrorMessage(res)
		                          : "unknown";
		/* the ids of 200 records do not fit: the tail is cut, never written past the end */
		snprintf(detail, sizeof(detail) - 120, "%s record ids: %s. The database said: %s",
		         api_name(m->st->api), m->ids ? m->ids : "(unknown)", why);
		len = strlen(detail);
		while (len > 0 && (detail[len - 1] == '\n' || detail[len - 1] == ' '))
			detail[--len] = '\0';
		log_error("synced table %s: %s accepted a write but the database commit failed: %s",
		          m->st->qualified, api_name(m->st->api), why);
		if (m->op == OP_INSERT && m->answer_ids != NULL &&
		    !settle_journal_answer(m->sy->journal, m->intent_id, m->st->database,
		                           m->answer_ids))
			log_error(
			        "synced table %s: the API's answer to journal entry %lld could not "
			        "be written to the journal file: %s",
			        m->st->qualified, (long long)m->intent_id, m->answer_ids);
		snprintf(detail + len, sizeof(detail) - len,
		         ". The write is journal entry %lld: it is settled by asking %s, and SHOW "
		         "JOURNAL shows how it ends",
		         (long long)m->intent_id, api_name(m->st->api));
		m->failed = false;
		{
			char msg[256];
			snprintf(msg, sizeof(msg),
			         "change applied to %s but not yet to the database",
			         api_name(m->st->api));
			mutation_set_error(m, "XX000", msg, detail, NULL);
		}
		settle_kick(m->sy->settle, 300);
		mutation_set_state(m, MUT_SETTLING);
		m->conn_broken = true;
		mutation_finish(m);
		return;
	}
	switch (m->op) {
	case OP_INSERT:
		m->ct->inserts++;
		break;
	case OP_UPDATE:
		m->ct->updates++;
		break;
	case OP_DELETE:
		m->ct->deletes++;
		break;
	default:
		break;
	}
	if (m->mc != NULL) {
		pktbuf_init(&pb, RESPONSE_MAX);
		m->escaped = m->in_block || m->in_string || m->in_batch;
		answer_write_result(&pb, m, m->result, m->result);
		answer_send(m, &pb);
		pktbuf_free(&pb);
	}
	mutation_finish(m);
}

/* Keeps a run's result in *slot, or records its error (a broken connection is seen later). */
static void keep_result(struct mutation *m, struct pgc *pc, PGresult *res, PGresult **slot)
{
	if (res == NULL) {
		m->conn_broken = true;
		return;
	}
	if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK) {
		/* skipped after an error in its flight: that error is kept already */
		if (PQresultStatus(res) != PGRES_PIPELINE_ABORTED || !m->failed) {
			mutation_set_pg_error(m, res);
			note_db_error(m, res);
		}
		return;
	}
	*slot = pgc_steal_result(pc);
}

/*
 * The apply transaction's end, in the apply run's own flight (no round trip of its own):
 * syncbouncer.apply_end() raises unless the apply run wrote exactly the rows the API confirmed
 * (the guard's AFTER ROW trigger counted them as PostgreSQL wrote them: another trigger of the
 * table, ON CONFLICT or the WHERE clause may have turned rows away), then empties the confirmed
 * rows and deletes the intent; the COMMIT follows it. An error anywhere in the flight skips the
 * rest of it: nothing is committed, the intent stays, and on_committed() tells the client XX000
 * with the API's ids (the database catches up with the API by settling). So "committed" and
 * "intent gone" stay one fact, and a partial apply is never committed.
 */
static bool send_apply_end(struct mutation *m, bool sync, pgc_result_cb cb)
{
	char rows[16], id[24];
	const char *params[3];

	snprintf(rows, sizeof(rows), "%d", m->nrows);
	snprintf(id, sizeof(id), "%lld", (long long)m->intent_id);
	params[0] = rows;
	params[1] = id;
	params[2] = m->intent_key;
	return send_named(m, "sb_apply_end", "CALL syncbouncer.apply_end($1::int, $2::int8, $3)", 3,
	                  params, sync, cb);
}

/* apply_end's answer: an error is the write's (the flight's end reports it). */
static void on_apply_ended(void *arg, struct pgc *pc, PGresult *res, const char *error)
{
	struct mutation *m = arg;

	on_ignored(arg, pc, res, error);
	if (res != NULL && PQresultStatus(res) == PGRES_FATAL_ERROR)
		log_error("synced table %s: journal entry %lld not committed: %s", m->st->qualified,
		          (long long)m->intent_id, m->db_error);
}

static void on_hold_done(evutil_socket_t fd, short what, void *arg)
{
	struct mutation *m = arg;

	(void)fd;
	(void)what;
	if (!queue(m, "COMMIT", on_committed))
		on_committed(m, NULL, NULL, "could not queue the commit");
}

/*
 * Test-only (SYNCBOUNCER_TEST_HOLD_BEFORE_COMMIT_MS): the flight ends with apply_end(); the
 * COMMIT waits for the hold.
 */
static void on_apply_ended_hold(void *arg, struct pgc *pc, PGresult *res, const char *error)
{
	struct mutation *m = arg;
	struct timeval tv = {test_hold_before_commit_ms() / 1000,
	                     (test_hold_before_commit_ms() % 1000) * 1000};

	on_apply_ended(arg, pc, res, error);
	if (m->conn_broken || m->failed) {
		on_committed(m, NULL, NULL, error ? error : "the apply run failed");
		return;
	}
	log_warning("synced table %s: holding the commit %d ms "
	            "(SYNCBOUNCER_TEST_HOLD_BEFORE_COMMIT_MS, for tests only)",
	            m->st->qualified, test_hold_before_commit_ms());
	m->ev_hold = evtimer_new(m->sy->b->base, on_hold_done, m);
	if (m->ev_hold == NULL || evtimer_add(m->ev_hold, &tv) != 0)
		on_committed(m, NULL, NULL, "could not queue the commit");
}

/*
 * The apply run's answer: its RETURNING rows and command tag are the client's answer once the
 * COMMIT behind it is. The flight's last statement (the COMMIT, or apply_end() when held) ends
 * the write, also when this one failed or the connection broke.
 */
static void on_applied(void *arg, struct pgc *pc, PGresult *res, const char *error)
{
	struct mutation *m = arg;

	(void)error;
	keep_result(m, pc, res, &m->result);
	if (m->conn_broken || m->failed || m->result == NULL)
		return;
	mutation_set_state(m, MUT_COMMITTING);
	if (atoi(PQcmdTuples(m->result)) != m->nrows)
		/* apply_end() counted otherwise, or it raises: only a broken guard gets here */
		log_error("synced table %s: the apply run's command tag says %s row(s) where %s "
		          "confirmed %d",
		          m->st->qualified, PQcmdTuples(m->result), api_name(m->st->api), m->nrows);
}

/* Builds the JSON of confirmed rows: [{"seq":n,"key":…,"fields":{column: value}}]. */
/* PostgreSQL's type oids of json and jsonb (pg_type.dat; fixed since 9.4). */
#define JSON_TYPE_OID  114
#define JSONB_TYPE_OID 3802

bool mutation_echo_same_number(const char *sent, const char *echoed)
{
	if (sent == NULL || echoed == NULL || !json_is_number_text(sent, strlen(sent)) ||
	    !json_is_number_text(echoed, strlen(echoed)))
		return false;
	return strtod(sent, NULL) == strtod(echoed, NULL);
}

/* An array column ("text[]", "numeric(10,2)[]"): format_type() spells it with brackets. */
static bool is_array_column(const struct catalog_column *col)
{
	size_t n = col != NULL && col->type_name != NULL ? strlen(col->type_name) : 0;

	return n > 2 && strcmp(col->type_name + n - 2, "[]") == 0;
}

/*
 * One value the API returned, for the apply run's jsonb_populate_record(): a string, which a
 * column of any type reads as its text; but for a json or jsonb column the API's JSON value
 * itself (an array stays an array, a number a number, a string a string), and for an array
 * column the API's JSON array, which jsonb_populate_record() reads element by element.
 */
static void put_confirmed_value(struct json_out *out, const struct catalog_table *ct,
                                const struct api_field_value *fv)
{
	const struct catalog_column *col = catalog_column_find(ct, fv->column);
	struct json_value *doc;
	char err[96];

	if (fv->value == NULL) {
		json_out_null(out);
		return;
	}
	if (fv->json && col != NULL &&
	    (col->type_oid == JSON_TYPE_OID || col->type_oid == JSONB_TYPE_OID ||
	     (is_array_column(col) && fv->value[0] == '[')) &&
	    json_parse(fv->value, strlen(fv->value), NULL, &doc, err, sizeof(err))) {
		json_out_value(out, doc);
		json_free(doc);
		return;
	}
	json_out_string(out, fv->value);
}

static char *confirmed_json(struct mutation *m, const struct api_result *ar)
{
	struct json_out out;
	size_t len;

	if (!json_out_init(&out, 16 * 1024 * 1024))
		return NULL;
	json_out_array_begin(&out);
	for (int i = 0; i < m->nrows && i < ar->nrows; i++) {
		const struct captured *cr = &m->rows[i];
		const struct api_row_result *rr = &ar->rows[i];
		const char *key = NULL;

		for (int k = 0; k < cr->nold; k++)
			if (strcmp(cr->old_vals[k].column, m->st->at.pk_column) == 0)
				key = cr->old_vals[k].value;
		{
			const char *rid = m->op == OP_INSERT ? rr->id : key;
			size_t have = m->ids ? strlen(m->ids) : 0;
			size_t add = rid ? strlen(rid) : 0;
			char *grown = add ? realloc(m->ids, have + add + 3) : NULL;
			if (grown != NULL) {
				snprintf(grown + have, add + 3, "%s%s", have ? ", " : "", rid);
				m->ids = grown;
			}
		}
		json_out_object_begin(&out);
		json_out_key(&out, "seq");
		json_out_int(&out, cr->seq);
		json_out_key(&out, "key");
		if (key != NULL)
			json_out_string(&out, key);
		else
			json_out_null(&out);
		json_out_key(&out, "fields");
		json_out_object_begin(&out);
		/*
		 * The row as the API received it, so that the second run writes exactly that even
		 * where the statement is not deterministic (random(), now(), a sequence); the
		 * API's own values follow and win (jsonb keeps the last of duplicate keys).
		 */
		if (cr->new_json != NULL && cr->new_json->kind == JSON_OBJECT) {
			for (size_t k = 0; k < cr->new_json->count; k++) {
				if (m->op == OP_INSERT &&
				    strcmp(cr->new_json->keys[k], m->st->at.pk_column) == 0)
					continue;
				json_out_key(&out, cr->new_json->keys[k]);
				json_out_value(&out, cr->new_json->items[k]);
			}
		}
		if (m->op == OP_INSERT && rr->id != NULL) {
			json_out_key(&out, m->st->at.pk_column);
			json_out_string(&out, rr->id);
		}
		for (int f = 0; f < rr->nfields; f++) {
			const struct json_value *sent;
			if (rr->fields[f].column == NULL ||
			    strcmp(rr->fields[f].column, m->st->at.pk_column) == 0)
				continue;
			/* the number that was sent, as the API holds it: its sent digits stay */
			sent = json_get(cr->new_json, rr->fields[f].column);
			if (sent != NULL && sent->kind == JSON_NUMBER && rr->fields[f].json &&
			    mutation_echo_same_number(sent->str, rr->fields[f].value))
				continue;
			json_out_key(&out, rr->fields[f].column);
			put_confirmed_value(&out, m->ct, &rr->fields[f]);
		}
		json_out_object_end(&out);
		json_out_object_end(&out);
	}
	json_out_array_end(&out);
	if (!json_out_ok(&out)) {
		json_out_free(&out);
		return NULL;
	}
	{
		char *text = json_out_take(&out, &len);
		json_out_free(&out);
		return text;
	}
}

/*
 * api_call_set_send_check(): the request may leave (again) only while the write's transaction
 * lives. Its advisory lock goes with it, and then any settler may read the record: a request
 * sent after that could land after the read.
 */
static bool mutation_may_send(void *arg)
{
	struct mutation *m = arg;

	return m->conn != NULL && m->conn->pc != NULL && pgc_ok(m->conn->pc) && !m->conn_broken;
}

static bool sy_has_sync(const struct mutation *m)
{
	return m->sy->sync != NULL && m->sync_noted;
}

static void on_api_done(void *arg, struct api_result *ar)
{
	struct mutation *m = arg;
	char relid[16];
	char *json;
	const char *params[2];
	bool ok = true;

	m->call = NULL;
	m->api_status = ar->http_status;
	m->api_usec = ar->call_usec;
	snprintf(m->api_request_id, sizeof(m->api_request_id), "%s", ar->request_id);
	m->api_outcome = ar->ok ? "ok" : api_error_class_str(ar->error.cls);
	if (!ar->ok) {
		if (m->ct != NULL)
			m->ct->rejected++;
		if (ar->error.nothing_written && ar->error.stopped) {
			/* not sent (again) because the write's session had ended: that is the error */
			char detail[128];
			snprintf(detail, sizeof(detail), "Nothing was written to %s.",
			         api_name(m->st->api));
			mutation_set_error(m, "58000",
			                   "lost the database connection of a synced-table write",
			                   detail, NULL);
		}
		mutation_set_api_error(m, &ar->error);
		if (ar->error.nothing_written) {
			rollback_forget_intent(m);
		} else {
			/* maybe applied: the intent stays, and is settled by asking the API */
			log_warning("synced table %s: the outcome of journal entry %lld at %s is "
			            "unknown (%s); it will be settled",
			            m->st->qualified, (long long)m->intent_id, api_name(m->st->api),
			            api_error_class_str(ar->error.cls));
			settle_kick(m->sy->settle, 300);
			rollback_as(m, MUT_SETTLING);
		}
		return;
	}
	mutation_set_state(m, MUT_APPLYING);
	if (m->op == OP_INSERT)
		m->answer_ids = answer_ids_json(ar);
	if (sy_has_sync(m) && m->op == OP_INSERT) {
		const char **ids = calloc((size_t)ar->nrows + 1, sizeof(*ids));
		for (int i = 0; ids != NULL && i < ar->nrows; i++)
			ids[i] = ar->rows[i].id;
		if (ids != NULL)
			sync_write_accepted(m->sy->sync, (int)(m->st - m->sy->tables), ids,
			                    ar->nrows);
		free(ids);
	}
	json = confirmed_json(m, ar);
	if (json == NULL) {
		mutation_set_error(m, "53200", "out of memory building the confirmed rows", NULL,
		                   NULL);
		rollback_as(m, MUT_SETTLING); /* the API has the change: the intent stays */
		return;
	}
	snprintf(relid, sizeof(relid), "%u", m->ct->relid);
	params[0] = json;
	params[1] = relid;
	/*
	 * The capture rows are gone and the mode is apply already (queue_check()). One flight:
	 * the confirmed rows, the apply run, its check and the intent's deletion
	 * (send_apply_end()), the COMMIT; an error skips the rest.
	 */
	ok = send_named(m, "sb_confirmed",
	                "INSERT INTO syncbouncer.confirmed (xid, seq, tbl, key, fields) "
	                "SELECT pg_catalog.pg_current_xact_id(), x.seq, $2::oid, x.key, x.fields "
	                "FROM pg_catalog.jsonb_to_recordset($1::jsonb) AS x(seq int, key text, "
	                "fields jsonb)",
	                2, params, false, on_ignored) &&
	     send_stmt(m, false, on_applied);
	if (ok && test_hold_before_commit_ms() > 0)
		ok = send_apply_end(m, true, on_apply_ended_hold);
	else if (ok)
		ok = send_apply_end(m, false, on_apply_ended) &&
		     send_named(m, "sb_commit", "COMMIT", 0, NULL, true, on_committed);
	m->confirmed = json;
	if (!ok) {
		/* the API has the change: the commit path reports XX000 with the ids */
		on_committed(m, NULL, NULL, "could not queue the apply statements");
	}
}

/* Nothing matched: no API call, the statement's own (empty) result. */
/*
 * The write's database connection broke: the write ends (its transaction rolls back with the
 * connection), with this error unless an earlier one is kept.
 */
static void connection_lost(struct mutation *m, const char *error)
{
	m->conn_broken = true;
	if (!m->failed)
		mutation_set_error(m, "58000", "lost the database connection of a synced-table write",
		                   error, NULL);
	if (m->intent_written)
		settle_kick(m->sy->settle, 300); /* nothing was sent: settling forgets the intent */
	mutation_finish(m);
}

static void answer_no_rows(struct mutation *m)
{
	struct pktbuf pb;

	if (m->mc != NULL) {
		pktbuf_init(&pb, RESPONSE_MAX);
		answer_write_result(&pb, m, m->first, m->first);
		answer_send(m, &pb);
		pktbuf_free(&pb);
	}
	mutation_set_state(m, MUT_ROLLING_BACK);
	if (!queue(m, "ROLLBACK", on_rolled_back)) {
		m->conn_broken = true;
		mutation_finish(m); /* frees m */
	}
}

/* After a zero-row capture: an unsettled insert of the table makes the answer wait (40001). */
static void on_zero_checked(void *arg, struct pgc *pc, PGresult *res, const char *error)
{
	struct mutation *m = arg;

	if (res != NULL && PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) > 0) {
		char detail[256];
		snprintf(detail, sizeof(detail),
		         "Journal entry %s, an insert into this table whose outcome at %s is not "
		         "settled yet, may hold a row the statement would match.",
		         PQgetvalue(res, 0, 0), api_name(m->st->api));
		mutation_set_error(
		        m, "40001",
		        "the statement matched no row, but the table has an unsettled insert",
		        detail,
		        "Retry the statement in a few seconds; SHOW JOURNAL on the admin console "
		        "lists unsettled writes.");
		settle_kick(m->sy->settle, 0);
		mutation_rollback(m);
		return;
	}
	(void)pc;
	if (res == NULL) {
		connection_lost(m, error);
		return;
	}
	answer_no_rows(m);
}

static void on_checked(void *arg, struct pgc *pc, PGresult *res, const char *error)
{
	struct mutation *m = arg;

	(void)pc;
	(void)error;
	if (res == NULL)
		m->conn_broken = true;
	else if (PQresultStatus(res) == PGRES_FATAL_ERROR)
		mutation_set_pg_error(m, res); /* the table's own: 23514, 23505, 23503 … */
}

static void captured_free(struct captured *cr)
{
	json_free(cr->old_json);
	json_free(cr->new_json);
	free(cr->old_vals);
	free(cr->new_vals);
	for (int i = 0; i < cr->nowned; i++)
		free(cr->owned[i]);
	free(cr->owned);
}

/* Appends text to sql; false when it does not fit. */
static bool put_text(char *sql, size_t size, const char *text)
{
	size_t n = strlen(sql), t = strlen(text);

	if (n + t + 1 > size)
		return false;
	memcpy(sql + n, text, t + 1);
	return true;
}

/* Appends name to sql as a quoted identifier ("a""b"); false when it does not fit. */
static bool put_ident(char *sql, size_t size, const char *name)
{
	size_t n = strlen(sql);

	if (n + 1 >= size)
		return false;
	sql[n++] = '"';
	for (const char *p = name; *p; p++) {
		if (n + 3 >= size)
			return false;
		if (*p == '"')
			sql[n++] = '"';
		sql[n++] = *p;
	}
	sql[n++] = '"';
	sql[n] = '\0';
	return true;
}

/*
 * The stand-in the guard gives an API-keyed row in the check run (catalog_sql.h), as SQL over
 * the capture's c.seq, and its kind as the guard names it in syncbouncer.standin: text for
 * string keys, a number for numeric ones; NULL for key types that take neither.
 */
static const char *stand_in_sql(unsigned type_oid, const char **kind)
{
	switch (type_oid) {
	case 19:   /* name */
	case 25:   /* text */
	case 1042: /* character */
	case 1043: /* character varying */
		*kind = "text";
		return "'~sb' || pg_catalog.pg_backend_pid() || '.' || c.seq";
	case 20:   /* bigint */
	case 23:   /* integer */
	case 700:  /* real */
	case 701:  /* double precision */
	case 1700: /* numeric */
		*kind = "number";
		return "(-2000000000 - c.seq)";
	default:
		return NULL;
	}
}

/*
 * The rows of an INSERT ... ON CONFLICT DO NOTHING that the check run did not write: PostgreSQL
 * skipped them for a conflict on a unique index other than the key (the guard only knows the
 * key), or another trigger dropped them. They are left out of the request, so the API never
 * gets a record that the table will not hold. Asked before the check run's rollback, by the
 * rows' stand-in keys, and only when every row got one of the kind asked for (the guard says
 * so in syncbouncer.standin): a row the guard could not stand in for (a CHECK or foreign key
 * reads the key, a key column too short) is not checked, and not taken for turned away. An
 * error (no SELECT right) leaves the rows as they are.
 */
static void on_skipped_found(void *arg, struct pgc *pc, PGresult *res, const char *error)
{
	struct mutation *m = arg;
	int kept = 0;

	(void)pc;
	(void)error;
	if (res == NULL) {
		m->conn_broken = true;
		return;
	}
	if (m->failed || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) == 0)
		return;
	for (int i = 0; i < m->nrows; i++) {
		bool skipped = false;
		for (int k = 0; k < PQntuples(res) && !skipped; k++)
			skipped = atoi(PQgetvalue(res, k, 0)) == m->rows[i].seq;
		if (skipped) {
			captured_free(&m->rows[i]);
			continue;
		}
		m->rows[kept] = m->rows[i];
		m->api_rows[kept] = m->api_rows[i];
		kept++;
	}
	log_debug("synced write: %d of %d rows skipped by ON CONFLICT DO NOTHING", m->nrows - kept,
	          m->nrows);
	m->nrows = kept;
}

static bool queue_skipped_lookup(struct mutation *m)
{
	const char *stand_in;
	const struct catalog_column *key = NULL;
	const char *params[1], *kind = NULL;
	char sql[1024];
	bool fits;

	if (!m->conflict_nothing || m->op != OP_INSERT || m->ct->pk == NULL)
		return true;
	for (int i = 0; i < m->ct->ncols; i++)
		if (strcmp(m->ct->cols[i].name, m->ct->pk) == 0)
			key = &m->ct->cols[i];
	stand_in = key != NULL ? stand_in_sql(key->type_oid, &kind) : NULL;
	if (stand_in == NULL)
		return true;
	snprintf(sql, sizeof(sql),
	         "SELECT c.seq FROM syncbouncer.capture c WHERE c.xid = "
	         "pg_catalog.pg_current_xact_id() AND c.tbl = %u AND c.op = 'I' AND "
	         "pg_catalog.current_setting('syncbouncer.standin', true) = $1 "
	         "AND NOT EXISTS (SELECT FROM ONLY ",
	         m->ct->relid);
	fits = put_ident(sql, sizeof(sql), m->ct->schema) && put_text(sql, sizeof(sql), ".") &&
	       put_ident(sql, sizeof(sql), m->ct->table) &&
	       put_text(sql, sizeof(sql), " t WHERE t.") &&
	       put_ident(sql, sizeof(sql), m->ct->pk) && put_text(sql, sizeof(sql), " = ") &&
	       put_text(sql, sizeof(sql), stand_in) &&
	       put_text(sql, sizeof(sql), ") ORDER BY c.seq");
	if (!fits)
		return true; /* names of over 300 bytes: the rows go as they are */
	params[0] = kind;
	return send_params(m, sql, 1, params, true, on_skipped_found);
}

/*
 * The end of the first flight: the check run rolled back, the rows are as the capture left them
 * (locked, unchanged). What the flight found decides: an error (the first one, from any of its
 * statements), no row, or the intent and then the request.
 */
static void on_check_rolled_back(void *arg, struct pgc *pc, PGresult *res, const char *error)
{
	struct mutation *m = arg;

	(void)pc;
	if (res == NULL || m->conn_broken) {
		connection_lost(m, error);
		return;
	}
	if (!m->failed && PQresultStatus(res) != PGRES_COMMAND_OK &&
	    PQresultStatus(res) != PGRES_TUPLES_OK)
		mutation_set_pg_error(m, res);
	m->check_done = true;
	if (m->failed) {
		/* nothing was sent; an intent written meanwhile goes too */
		if (m->intent_pending)
			return; /* mutation_intent_done() ends the write */
		if (m->intent_written)
			rollback_forget_intent(m);
		else
			mutation_rollback(m);
		return;
	}
	if (m->nrows == 0 && m->op != OP_INSERT) {
		/*
		 * No row matched; but an INSERT of this table whose outcome is not settled yet may
		 * have created one the statement would match: wait for it rather than answer 0.
		 * Unsettled: no writer holds its lock (we get it), or a settler holds the settling
		 * lock (we cannot get that one). A live writer's insert is ordinary concurrency.
		 */
		char sql[300];
		snprintf(sql, sizeof(sql), "SELECT syncbouncer.intent_unsettled_insert(%u)",
		         m->ct->relid);
		if (!pgc_query(m->conn->pc, sql, 0, NULL, NULL, NULL, NULL, 0, on_zero_checked,
		               m)) {
			connection_lost(m, NULL);
		}
		return;
	}
	if (m->nrows == 0) {
		answer_no_rows(m); /* no row, or every row was a conflict: nothing to send */
		return;
	}
	mutation_set_state(m, MUT_WRITING_INTENT);
	if (m->intent_pending)
		return; /* written while the check ran: mutation_intent_done() goes on */
	if (m->intent_written)
		mutation_send_request(m);
	else
		intent_write(m);
}

void mutation_intent_done(struct mutation *m)
{
	m->intent_pending = false;
	if (!m->check_done)
		return; /* the first flight's end (on_check_rolled_back()) goes on */
	if (!m->failed)
		mutation_send_request(m);
	else if (m->intent_written)
		rollback_forget_intent(m);
	else
		mutation_rollback(m);
}

/*
 * Before anything leaves: the statement runs a second time in a savepoint, with the guard in
 * *check* mode letting the rows through, so that PostgreSQL checks what it would check when
 * the change is applied (CHECK, UNIQUE, foreign keys, deferred ones too, the values' types)
 * and answers with its own error. Rolled back to the savepoint: row locks taken by the capture
 * stay (they belong to the outer transaction).
 *
 * Sent with the capture, right behind it: the check does not need the captured images, only
 * the capture's success, and after a failed capture the server skips it. A Sync ends the check
 * run, and another the lookup of skipped rows, so that the rollback to the savepoint runs after
 * either failed (the libpq of PostgreSQL 15 sends each Sync at once: two or three sends, one
 * round trip). After it, in the same flight, the captured images (read already) are emptied
 * and the mode set for the apply run: while the request is out, nothing else runs on this
 * connection, and a rejected request rolls all of it back.
 */
static bool queue_check(struct mutation *m)
{
	return send_named(m, "sb_savepoint", "SAVEPOINT syncbouncer_check", 0, NULL, false,
	                  on_ignored) &&
	       send_named(m, "sb_check_mode",
	                  "SELECT pg_catalog.set_config('syncbouncer.mode', 'check', true), "
	                  "pg_catalog.set_config('syncbouncer.seq', '0', true), "
	                  "pg_catalog.set_config('syncbouncer.standin', '', true)",
	                  0, NULL, false, on_ignored) &&
	       send_named(m, "sb_immediate", "SET CONSTRAINTS ALL IMMEDIATE", 0, NULL, false,
	                  on_ignored) &&
	       send_stmt(m, true, on_checked) && queue_skipped_lookup(m) &&
	       send_named(m, "sb_rollback_check", "ROLLBACK TO SAVEPOINT syncbouncer_check", 0,
	                  NULL, false, on_ignored) &&
	       send_named(m, "sb_capture_empty",
	                  "DELETE FROM syncbouncer.capture "
	                  "WHERE xid = pg_catalog.pg_current_xact_id()",
	                  0, NULL, false, on_ignored) &&
	       send_named(m, "sb_apply_mode",
	                  "SELECT pg_catalog.set_config('syncbouncer.mode', 'apply', true), "
	                  "pg_catalog.set_config('syncbouncer.seq', '0', true), "
	                  "pg_catalog.set_config('syncbouncer.applied', '0', true)",
	                  0, NULL, true, on_check_rolled_back);
}

static void on_captured(void *arg, struct pgc *pc, PGresult *res, const char *error)
{
	struct mutation *m = arg;
	const struct json_limits limits = {16 * 1024 * 1024, 64, 1000000};
	enum api_op op;
	int max;
	char err[256];

	(void)pc;
	(void)error;
	if (res == NULL) {
		connection_lost(m, error);
		return;
	}
	if (m->failed) {
		return;
	}
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		mutation_set_pg_error(m, res); /* kept unless an earlier statement failed */
		return;
	}
	if (m->first != NULL && atoi(PQcmdTuples(m->first)) > 0) {
		/*
		 * The capture run changes no row of a synced table: the rows it changed are another
		 * table's, found first on the search_path (a temporary table, or one created since
		 * the synced tables were read). Rolled back; nothing was sent.
		 */
		char msg[300];
		snprintf(msg, sizeof(msg),
		         "the statement writes another table than synced table %s",
		         m->st->qualified);
		mutation_set_error(m, "0A000", msg,
		                   "Its unqualified table name finds another relation of that name "
		                   "first on the search_path.",
		                   "Qualify the table name with its schema.");
		return;
	}
	m->nrows = PQntuples(res);
	if (m->nrows == 0)
		return; /* on_check_rolled_back() answers */
	op = m->op == OP_INSERT   ? API_OP_INSERT
	     : m->op == OP_UPDATE ? API_OP_UPDATE
	                          : API_OP_DELETE;
	max = api_max_rows(m->st->api, op);
	if (m->nrows > max) {
		char detail[256];
		snprintf(
		        detail, sizeof(detail),
		        "The statement would %s %d rows of %s; %s takes at most %d in one request.",
		        api_op_str(op), m->nrows, m->st->qualified, api_name(m->st->api), max);
		mutation_set_error(m, "54000", "too many rows for one API request", detail,
		                   "Split the statement into batches of at most the limit.");
		return;
	}
	if (PQnfields(res) < 4 || atoll(PQgetvalue(res, 0, 3)) > CAPTURE_MAX_BYTES) {
		char detail[256];
		snprintf(detail, sizeof(detail),
		         "The rows it would %s in %s take %s bytes as JSON; syncbouncer takes at "
		         "most %d bytes per statement.",
		         api_op_str(op), m->st->qualified,
		         PQnfields(res) < 4 ? "?" : PQgetvalue(res, 0, 3), CAPTURE_MAX_BYTES);
		mutation_set_error(m, "54000", "synced-table write too large for one API request",
		                   detail, "Write fewer rows, or smaller values, per statement.");
		return;
	}
	m->rows = calloc((size_t)m->nrows, sizeof(*m->rows));
	m->api_rows = calloc((size_t)m->nrows, sizeof(*m->api_rows));
	if (m->rows == NULL || m->api_rows == NULL) {
		mutation_set_error(m, "53200", "out of memory", NULL, NULL);
		return;
	}
	for (int i = 0; i < m->nrows; i++) {
		struct captured *cr = &m->rows[i];
		cr->seq = atoi(PQgetvalue(res, i, 0));
		if ((!PQgetisnull(res, i, 1) &&
		     !json_parse(PQgetvalue(res, i, 1), (size_t)PQgetlength(res, i, 1), &limits,
		                 &cr->old_json, err, sizeof(err))) ||
		    (!PQgetisnull(res, i, 2) &&
		     !json_parse(PQgetvalue(res, i, 2), (size_t)PQgetlength(res, i, 2), &limits,
		                 &cr->new_json, err, sizeof(err))) ||
		    !settle_image_values(cr->old_json, &cr->old_vals, &cr->nold, &cr->owned,
		                         &cr->nowned) ||
		    !settle_image_values(cr->new_json, &cr->new_vals, &cr->nnew, &cr->owned,
		                         &cr->nowned)) {
			mutation_set_error(m, "XX000", "could not read a captured row image", NULL,
			                   NULL);
			return;
		}
		m->api_rows[i].old_image.values = cr->old_vals;
		m->api_rows[i].old_image.nvalues = cr->nold;
		m->api_rows[i].new_image.values = cr->new_vals;
		m->api_rows[i].new_image.nvalues = cr->nnew;
	}
	/*
	 * The intent needs the images only: it is written on its companion connection while the
	 * check runs here, and the request waits for both. Not when the check may still leave
	 * rows out (ON CONFLICT DO NOTHING): the intent then follows the check.
	 */
	if (!m->conflict_nothing)
		intent_write(m);
}

/* Tells the sync worker which rows this write holds (begin) or has written (end). */
static void note_sync_write(struct mutation *m, bool begin)
{
	struct synced *sy = m->sy;
	const char **keys;
	int n = 0;

	if (sy->sync == NULL || (!begin && !m->sync_noted))
		return;
	keys = calloc((size_t)m->nrows + 1, sizeof(*keys));
	for (int i = 0; keys != NULL && i < m->nrows && m->rows != NULL; i++) {
		const struct api_value *v =
		        api_image_get(&m->api_rows[i].old_image, m->st->at.pk_column);
		if (v != NULL && v->value != NULL)
			keys[n++] = v->value;
	}
	if (begin)
		sync_write_begin(sy->sync, (int)(m->st - sy->tables), m->op == OP_INSERT, keys, n);
	else
		sync_write_end(sy->sync, (int)(m->st - sy->tables), m->op == OP_INSERT, keys, n);
	m->sync_noted = begin;
	free(keys);
}

/* The intent is durable: the request may leave. */
void mutation_send_request(struct mutation *m)
{
	enum api_op op = m->op == OP_INSERT   ? API_OP_INSERT
	                 : m->op == OP_UPDATE ? API_OP_UPDATE
	                                      : API_OP_DELETE;

	if (m->cancel_requested) {
		/* cancelled while the intent was written: it goes, and nothing is sent */
		mutation_set_error(m, "57014", "canceling statement due to user request", NULL,
		                   NULL);
		rollback_forget_intent(m);
		return;
	}

	mutation_set_state(m, MUT_CALLING_API);
	note_sync_write(m, true);
	m->call = api_submit_keyed(m->st->api, &m->st->at, op, m->api_rows, m->nrows, m->intent_key,
	                           on_api_done, m);
	if (m->call == NULL) {
		mutation_set_error(m, "53200", "could not start the API request", NULL, NULL);
		rollback_forget_intent(m);
		return;
	}
	api_call_set_send_check(m->call, mutation_may_send, m);
	m->request_sent = true;
}

static void on_first_run(void *arg, struct pgc *pc, PGresult *res, const char *error)
{
	struct mutation *m = arg;

	(void)error;
	keep_result(m, pc, res, &m->first);
}

static void start_capture(struct mutation *m)
{
	char *settings, relid[16];
	const char *params[1] = {relid};
	size_t len;
	bool ok;

	/* the images only when they fit in CAPTURE_MAX_BYTES; their size in any case */
	snprintf(
	        m->capture_sql, sizeof(m->capture_sql),
	        "SELECT seq, CASE WHEN total <= %d THEN o END, CASE WHEN total <= %d THEN n END, "
	        "total FROM (SELECT seq, o, n, pg_catalog.sum(COALESCE(pg_catalog.octet_length(o), "
	        "0) + COALESCE(pg_catalog.octet_length(n), 0)) OVER () AS total "
	        "FROM (SELECT seq, old::text AS o, new::text AS n FROM syncbouncer.capture "
	        "WHERE xid = pg_catalog.pg_current_xact_id() AND tbl = $1::oid) c) s ORDER BY seq",
	        CAPTURE_MAX_BYTES, CAPTURE_MAX_BYTES);
	snprintf(relid, sizeof(relid), "%u", m->ct->relid);
	mutation_set_state(m, MUT_CAPTURING);
	/*
	 * lock_timeout: the write may wait for a row that the client itself holds locked in its
	 * own transaction; it must fail (55P03) rather than wait forever. max_rows: the trigger
	 * stops capturing past the API's limit, so a huge UPDATE costs nothing before its 54000.
	 */
	snprintf(m->prelude_sql, sizeof(m->prelude_sql),
	         "SELECT pg_catalog.set_config('syncbouncer.mode', 'capture', true), "
	         "pg_catalog.set_config('syncbouncer.conflict', '%s', true), "
	         "pg_catalog.set_config('syncbouncer.seq', '0', true), "
	         "pg_catalog.set_config('syncbouncer.ncaptured', '0', true), "
	         "pg_catalog.set_config('syncbouncer.max_rows', '%d', true), "
	         "pg_catalog.set_config('lock_timeout', '10s', true), "
	         "pg_catalog.pg_advisory_xact_lock(%lld)",
	         m->conflict_nothing ? "nothing" : "",
	         api_max_rows(m->st->api, m->op == OP_INSERT   ? API_OP_INSERT
	                                  : m->op == OP_UPDATE ? API_OP_UPDATE
	                                                       : API_OP_DELETE),
	         (long long)m->intent_id);
	/*
	 * The prelude and the client's settings in one SELECT (both are lists of set_config()
	 * calls), then the capture run and the reading of its images, then the check
	 * (queue_check()): one flight of statements, one round trip, where an error skips the
	 * rest and is the one the client gets.
	 */
	len = strlen(m->prelude_sql) + (m->session_sql ? strlen(m->session_sql) : 0) + 8;
	settings = malloc(len);
	if (settings != NULL)
		snprintf(settings, len, "%s%s%s", m->prelude_sql, m->session_sql ? ", " : "",
		         m->session_sql ? m->session_sql + strlen("SELECT ") : "");
	ok = settings != NULL && send_sql(m, "BEGIN", false, on_ignored) &&
	     send_sql(m, settings, false, on_ignored) && send_stmt(m, false, on_first_run) &&
	     send_named(m, "sb_images", m->capture_sql, 1, params, false, on_captured) &&
	     queue_check(m);
	free(settings);
	if (!ok) {
		char detail[160];

		/* nothing read, so no intent yet and no request: the client may retry */
		snprintf(detail, sizeof(detail), "Nothing was written to %s.",
		         api_name(m->st->api));
		mutation_set_error(m, "58000", "could not queue a synced-table write", detail,
		                   NULL);
		m->conn_broken = true;
		mutation_finish(m);
	}
}

static void on_connected(void *arg, struct pgc *pc, const char *error)
{
	struct mutation *m = arg;
	char detail[512];

	(void)pc;
	if (error != NULL) {
		/* before the intent and the request: the client may retry, so the DETAIL says so */
		size_t len = strlen(error);
		int n;

		while (len > 0 &&
		       (error[len - 1] == '\n' || error[len - 1] == ' ' || error[len - 1] == '.'))
			len--;
		n = len > 400 ? 400 : (int)len;
		snprintf(detail, sizeof(detail), "%.*s. Nothing was written to %s.", n, error,
		         api_name(m->st->api));
		mutation_set_error(m, "58000",
		                   "could not connect to the database for a synced-table write",
		                   detail, NULL);
		m->conn_broken = true;
		mutation_finish(m);
		return;
	}
	start_capture(m);
}


/* The finished write goes to the log (log_mutations), SHOW MUTATIONS and the metrics. */
static void report_finished(struct mutation *m)
{
	struct conn *c = m->mc ? m->mc->client : NULL;
	char sqlstate[6] = "";
	struct mutation_report r = {
	        .client = c,
	        .client_id = c ? c->id : 0,
	        .database = m->st->database,
	        .table = m->st->qualified,
	        .operation = stmt_op_str(m->op),
	        .api = api_name(m->st->api),
	        .rows = m->nrows,
	        .api_called = m->api_outcome != NULL,
	        .http_status = m->api_status,
	        .request_id = m->api_request_id,
	        .api_usec = m->api_outcome ? m->api_usec : -1,
	        .total_usec = (int64_t)(bouncer_now_usec() - m->started),
	        .values = m->confirmed,
	};

	if (m->failed)
		history_error_sqlstate(m->err.data, m->err.len, sqlstate, sizeof(sqlstate));
	r.sqlstate = sqlstate;
	r.outcome = !m->failed                                            ? "ok"
	            : m->api_outcome && strcmp(m->api_outcome, "ok") != 0 ? m->api_outcome
	                                                                  : "failed";
	history_record(m->sy->b, &r);
}

/* Answers the client (error or nothing more), gives the connection back, frees m. */
void mutation_finish(struct mutation *m)
{
	struct synced *sy = m->sy;
	struct mut_client *mc = m->mc;

	report_finished(m);
	mutation_set_state(m, MUT_DONE);
	if (m->call != NULL) {
		api_call_cancel(m->call);
		m->call = NULL;
	}
	note_sync_write(m, false);
	if (m->failed && mc != NULL) {
		struct pktbuf pb;
		/* a failed write ends a query string of several: the rest is skipped */
		if (mc->multi != NULL)
			m->no_ready = false;
		pktbuf_init(&pb, RESPONSE_MAX);
		if (m->extended)
			answer_ext_prefix(m, &pb);
		answer_notices(m, &pb);
		if (!m->no_ready && answer_raise_on_server(mc->client, &m->err)) {
			/* the prefix now; the server's error and ReadyForQuery follow */
			if (pb.len > 0 && !client_queue(mc->client, &pb))
				client_close(mc->client, "could not send an answer");
		} else {
			pktbuf_put_bytes(&pb, m->err.data, m->err.len);
			answer_send(m, &pb);
		}
		pktbuf_free(&pb);
		mc = m->mc;
	}
	if (m->conn != NULL)
		mconn_release(sy, m->conn, m->conn_broken);
	if (mc != NULL && mc->client->state != CONN_JUSTFREE) {
		bool next_started = false, next_tried = false;
		mc->m = NULL;
		if (mc->mixed != NULL) {
			/* one write of a mixed query string: the string goes on (mixed.c) */
			next_started = true;
			mixed_write_done(mc->mixed, m->failed);
			client_resume(mc->client);
		} else if (mc->multi != NULL && !m->failed && mc->imulti + 1 < mc->nmulti) {
			next_tried = true;
			next_started = mc_multi_next(sy, mc);
		}
		if (!next_started) {
			/*
			 * After the last write, the statements that follow it go to the server; a
			 * next write refused at once has answered and ended the string.
			 */
			size_t tail = m->failed || next_tried ? 0 : mc->tail_off;
			mc_multi_free(mc);
			mc->tail_off = tail;
			mc->answered = true;
			if (m->no_ready && mc->ext.phase != EXT_NONE) {
				mc->ext.ran = true;
				ext_set_phase(&mc->ext, m->failed ? EXT_SKIPPING : EXT_EXECUTED);
			}
			client_resume(mc->client);
		}
	}
	list_del(&m->head);
	list_del(&m->qhead);
	if (m->holds_slot)
		sy->api_active[m->st->api_index]--;
	if (m->holds_slot && !sy->stopping) {
		struct list *it;
		list_for_each(it, &sy->queued)
		{
			struct mutation *next = list_entry(it, struct mutation, qhead);
			if (next->st->api_index == m->st->api_index) {
				list_del(&next->qhead);
				mutation_acquire(next);
				break;
			}
		}
	}
	if (sy->reload_pending && synced_idle(sy))
		synced_schedule_reload(sy);
	if (m->first)
		PQclear(m->first);
	if (m->result)
		PQclear(m->result);
	for (int i = 0; i < m->nrows && m->rows; i++)
		captured_free(&m->rows[i]);
	free(m->rows);
	free(m->api_rows);
	pktbuf_free(&m->err);
	for (int i = 0; i < m->nparams; i++)
		free(m->values[i]);
	free(m->values);
	free(m->lengths);
	free(m->formats);
	free(m->types);
	free(m->confirmed);
	if (m->iconn != NULL)
		mconn_free(m->iconn);
	if (m->ev_hold != NULL)
		event_free(m->ev_hold);
	free(m->intent_rows);
	free(m->intent_keys);
	free(m->keys_text);
	free(m->answer_ids);
	free(m->session_sql);
	free(m->ids);
	free(m->conninfo);
	free(m->stmt_desc);
	free(m->sql);
	free(m);
}

/*
 * Takes an extended sequence's bound parameters over (copied once, from the Bind, and not
 * again): m owns them from then on, and ext keeps none (its portal runs once).
 */
static bool take_params(struct mutation *m, struct ext_seq *ext)
{
	int n = ext->nparams;

	m->extended = true;
	m->parse_complete = ext->parse && !ext->parse_sent;
	m->bind_complete = ext->bind && !ext->bind_sent;
	m->describe_portal = ext->describe_portal;
	if (ext->describe_stmt && !ext_statement_description(ext, &m->stmt_desc, &m->stmt_desc_len))
		return false;
	m->stmt_desc_after_bind = ext->describe_stmt_after_bind;
	m->in_batch = ext->server_used;
	m->no_ready =
	        ext->phase != EXT_NONE; /* still collecting: the batch's Sync is yet to come */
	m->result_format = ext->result_format;
	if (n == 0)
		return true;
	m->types = calloc((size_t)n, sizeof(Oid));
	if (m->types == NULL)
		return false;
	for (int i = 0; i < n; i++)
		m->types[i] = i < ext->ntypes ? ext->types[i] : 0;
	m->values = ext->values;
	m->lengths = ext->lengths;
	m->formats = ext->formats;
	m->nparams = n;
	ext->values = NULL;
	ext->lengths = NULL;
	ext->formats = NULL;
	ext->nparams = 0;
	return true;
}

/* Takes an API slot and a database connection (idle or new), then starts the capture. */
void mutation_acquire(struct mutation *m)
{
	struct synced *sy = m->sy;
	struct list *it;

	m->holds_slot = true;
	sy->api_active[m->st->api_index]++;
	list_for_each(it, &sy->idle_conns)
	{
		struct mconn *c = list_entry(it, struct mconn, head);
		if (strcmp(c->conninfo, m->conninfo) == 0 && pgc_ok(c->pc)) {
			list_del(&c->head);
			m->conn = c;
			start_capture(m);
			return;
		}
	}
	m->conn = calloc(1, sizeof(*m->conn));
	if (m->conn == NULL || (m->conn->conninfo = strdup(m->conninfo)) == NULL) {
		free(m->conn);
		m->conn = NULL;
		mutation_set_error(m, "53200", "out of memory", NULL, NULL);
		mutation_finish(m);
		return;
	}
	list_init(&m->conn->head);
	mutation_set_state(m, MUT_CONNECTING);
	m->conn->pc = pgc_connect(sy->b->base, m->conninfo, on_connected, m);
	if (m->conn->pc == NULL) {
		free(m->conn->conninfo);
		free(m->conn);
		m->conn = NULL;
		mutation_set_error(m, "53200", "out of memory", NULL, NULL);
		mutation_finish(m);
	}
}

/*
 * The client's settings that change how its statement is read or what RETURNING sends back
 * (string literals, dates, intervals, time zone, float digits, the search_path that names its
 * tables), for the mutation's own transaction. Other settings stay the pooler's. NULL when the
 * client set none of them.
 */
char *mutation_session_settings(struct conn *c)
{
	static const char *const names[] = {
	        "DateStyle",
	        "TimeZone",
	        "IntervalStyle",
	        "extra_float_digits",
	        "standard_conforming_strings",
	        "bytea_output",
	};
	struct pktbuf pb;
	const char *path;
	int n = 0;
	char *sql;

	pktbuf_init(&pb, 64 * 1024);
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		const char *v = param_get(&c->params, names[i]);
		if (v == NULL)
			continue;
		if (n++ > 0)
			pktbuf_put_bytes(&pb, ", ", 2);
		else
			pktbuf_put_bytes(&pb, "SELECT ", 7);
		pktbuf_put_bytes(&pb, "pg_catalog.set_config(", 22);
		pktbuf_put_sql_literal(&pb, names[i]);
		pktbuf_put_bytes(&pb, ", ", 2);
		pktbuf_put_sql_literal(&pb, v);
		pktbuf_put_bytes(&pb, ", true)", 7);
	}
	if ((path = hook_search_path(c)) != NULL) {
		/* the statement's unqualified names resolve as in the client's session */
		if (n++ > 0)
			pktbuf_put_bytes(&pb, ", ", 2);
		else
			pktbuf_put_bytes(&pb, "SELECT ", 7);
		pktbuf_put_bytes(&pb, "pg_catalog.set_config('search_path', ", 37);
		pktbuf_put_sql_literal(&pb, path);
		pktbuf_put_bytes(&pb, ", true)", 7);
	}
	pktbuf_put_u8(&pb, 0);
	sql = n > 0 && !pktbuf_failed(&pb) ? strdup((const char *)pb.data) : NULL;
	pktbuf_free(&pb);
	return sql;
}

void mutation_start(struct synced *sy, struct mut_client *mc, struct synced_table *st,
                    struct catalog_table *ct, const struct stmt_class *sc, const char *sql,
                    struct ext_seq *ext)
{
	struct mutation *m = calloc(1, sizeof(*m));
	struct pool *pool = mc->client->pool;
	char conninfo[2048];
	const char *err = NULL;

	if (m == NULL) {
		client_send_error(mc->client, "53200", "out of memory");
		return;
	}
	list_init(&m->head);
	list_init(&m->qhead);
	list_append(&sy->mutations, &m->head);
	m->sy = sy;
	m->mc = mc;
	m->st = st;
	m->ct = ct;
	m->op = sc->op;
	m->conflict_nothing = sc->on_conflict_nothing;
	m->in_block = client_txn_status(mc->client) == 'T';
	m->started = bouncer_now_usec();
	m->intent_id = settle_new_id();
	api_random_key(m->intent_key, sizeof(m->intent_key));
	pktbuf_init(&m->err, 65536);
	mc->m = m;
	m->session_sql = mutation_session_settings(mc->client);
	if (ext == NULL && mc->multi != NULL && mc->imulti < mc->nmulti - 1)
		m->no_ready = true;
	/* ordinary statements follow: the server's answer to them ends the string */
	if (ext == NULL && mc->multi != NULL && mc->tail_off > 0)
		m->no_ready = m->in_string = true;
	/* a write of a mixed string: the string's end answers ReadyForQuery (mixed.c) */
	if (ext == NULL && mc->mixed != NULL) {
		m->no_ready = m->in_string = true;
		m->in_block = mixed_in_client_block(mc->mixed);
	}
	m->sql = strdup(sql);
	if (m->sql == NULL || (ext != NULL && !take_params(m, ext))) {
		mutation_set_error(m, "53200", "out of memory", NULL, NULL);
		mutation_finish(m);
		return;
	}
	if (!mutation_pool_conninfo(pool, conninfo, sizeof(conninfo), &err)) {
		mutation_set_error(m, "28000", err, NULL, NULL);
		mutation_finish(m);
		return;
	}
	m->conninfo = strdup(conninfo);
	if (m->conninfo == NULL) {
		mutation_set_error(m, "53200", "out of memory", NULL, NULL);
		mutation_finish(m);
		return;
	}
	if (sy->api_active[st->api_index] >= sy->api_cap[st->api_index]) {
		/* the API takes no more at once: wait without holding a database connection */
		mutation_set_state(m, MUT_QUEUED);
		list_append(&sy->queued, &m->qhead);
		return;
	}
	mutation_acquire(m);
}
