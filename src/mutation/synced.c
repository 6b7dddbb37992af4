/*
 * synced — the query hook and the mutation pipeline (DESIGN.md §4).
 *
 * A write to a synced table runs on a libpq connection of its own (pgc), outside any client
 * transaction, in one database transaction:
 *   BEGIN; mode=capture; <statement>            -- the guard trigger records row images, changes
 * nothing SELECT … FROM syncbouncer.capture           -- the images (one API request) -- the
 * transaction waits, rows locked confirmed rows in; mode=apply; <statement>   -- the trigger writes
 * the API's version of each row COMMIT and its result (command tag, RETURNING rows) is sent to the
 * client in place of the statement. PostgreSQL evaluates the statement both times: the proxy never
 * re-implements SQL.
 *
 * Invariants: a client has at most one mutation in flight, and its relay is paused meanwhile;
 * every mutation ends with COMMIT or ROLLBACK on its connection (a connection whose outcome is
 * unknown is closed, which rolls back); a client that went away does not stop its mutation.
 */
#include "mutation/synced.h"

#include <event2/event.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "admin.h"
#include "api/api.h"
#include "api/http.h"
#include "api/json.h"
#include "bouncer.h"
#include "client.h"
#include "config.h"
#include "conn.h"
#include "control.h"
#include "log.h"
#include "mutation/catalog.h"
#include "mutation/classifier.h"
#include "mutation/history.h"
#include "mutation/journal.h"
#include "mutation/settle.h"
#include "mutation/sync.h"
#include "pgc.h"
#include "pktbuf.h"
#include "pool.h"
#include "proto.h"
#include "userlist.h"

#define MAX_IDLE_CONNS 8
#define RESPONSE_MAX   (64 * 1024 * 1024)
/*
 * What the capture run may hand to the loop: the row images of one statement, as JSON text, old
 * and new together. Reading them (JSON parse, re-encoding jsonb values, building the request)
 * runs on the event loop at 15-30 MB/s for the worst shapes (arrays of small numbers), so
 * 256 KiB stalls the other clients for a few ms at most, and still holds 200 rows of a few
 * hundred bytes. PostgreSQL measures the images; a larger statement never leaves the server.
 */
#define CAPTURE_MAX_BYTES (256 * 1024)

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
	struct list queued;
	struct synced_table *tables;
	int ntables;
	struct classifier *cl;
	struct catalog *cat;
	struct list idle_conns;
	struct list mutations;
	struct journal *journal; /* the API's answers the database could not take */
	struct settle *settle;   /* settles the intents that outlived their writes */
	bool reload_pending;     /* a RELOAD waits for the mutations in flight */
	struct sync *sync; /* the read side: API changes into the tables */
	struct sync_table_conf *sync_confs;
	bool stopping;
};

enum mut_state {
	MUT_QUEUED, /* waiting for one of its API's slots */
	MUT_CONNECTING,
	MUT_CAPTURING,
	MUT_WRITING_INTENT,
	MUT_CALLING_API,
	MUT_APPLYING,
	MUT_ROLLING_BACK,
};

static const char *mut_state_str(enum mut_state st)
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
	case MUT_ROLLING_BACK:
		return "rolling_back";
	}
	return "?";
}

/* A named prepared statement of a client that writes a synced table (kept here, not on servers). */
struct prep_stmt {
	char *name;
	char *sql;
	int ntypes;
	Oid *types;
	struct stmt_class sc;
};

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

/*
 * Per-client hook state. It exists while a mutation is in flight or being answered, while an
 * extended sequence is being collected, and as long as the client keeps named synced statements
 * (so that their later Bind messages are seen).
 */
struct mut_client {
	struct conn *client;
	struct mutation *m;
	bool answered; /* the current packet was answered: consume it when it comes back */
	struct prep_stmt *stmts;
	int nstmts;
	struct ext_seq ext;
	/* a simple query of several synced writes: run one after another, one ReadyForQuery */
	char **multi;
	int nmulti, imulti;
};

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
	PGresult *first;  /* the capture run's result: its columns describe RETURNING */
	PGresult *result; /* the apply run's result */
	struct captured *rows;
	int nrows;
	struct api_row *api_rows;
	struct api_call *call;
	char *confirmed; /* the API's confirmation as JSON (for the journal) */
	char *ids;       /* the API's record ids, for messages */
	char capture_sql[640];
	char prelude_sql[512];
	char *session_sql;   /* the client's session settings that shape how a statement reads */
	char db_error[256];  /* PostgreSQL's message when a run failed, for logs and DETAIL */
	bool apply_mismatch; /* the second run wrote other rows than the API confirmed */
	int nparams;         /* the client's parameters, owned */
	char **values;
	int *lengths;
	int *formats;
	Oid *types;
	int ntypes;
	int result_format;
	bool extended; /* answer as the extended protocol does */
	bool no_ready; /* an Execute inside a batch: the Sync that follows answers ReadyForQuery */
	bool parse_complete, bind_complete, describe_portal;
	struct pktbuf err; /* the error to send, when one was decided */
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
	struct mconn *iconn; /* the companion connection that commits it */
	char *intent_rows, *intent_keys;
	char *keys_text;  /* the keys, for messages */
	char *answer_ids; /* an insert's record ids from the API, JSON */
	uint64_t intent_started;
	struct event *ev_hold; /* test-only hold before COMMIT */
	bool sync_noted; /* the sync worker was told of this write (sync_write_begin) */
};

static void mutation_finish(struct mutation *m);
static void describe_write(const struct mutation *m, char *buf, size_t size);
static void mutation_acquire(struct mutation *m);
static void note_sync_write(struct mutation *m, bool begin);

/* ---- responses ------------------------------------------------------------------------- */

/* ParseComplete / BindComplete that precede an extended sequence's answer. */
static void write_ext_prefix(const struct mutation *m, struct pktbuf *pb)
{
	if (m->parse_complete)
		pktbuf_write_simple(pb, '1');
	if (m->bind_complete)
		pktbuf_write_simple(pb, '2');
}

static void put_raise_field(struct pktbuf *pb, const char *name, const char *value, bool *first)
{
	if (value == NULL || value[0] == '\0')
		return;
	pktbuf_put_bytes(pb, *first ? " " : ", ", *first ? 1 : 2);
	*first = false;
	pktbuf_put_bytes(pb, name, strlen(name));
	pktbuf_put_bytes(pb, " = ", 3);
	pktbuf_put_sql_literal(pb, value);
}

/*
 * An error for a client inside a transaction block must abort that transaction, as it would in
 * PostgreSQL (the client's next statements get 25P02, its COMMIT rolls back). The error is
 * therefore raised by the client's own server: a DO block raising exactly our error goes to it,
 * and its ErrorResponse and ReadyForQuery ('E') reach the client through the relay. err is a
 * built ErrorResponse. False when the client is not in a transaction block (answer directly).
 */
static bool raise_on_server(struct conn *c, const struct pktbuf *err)
{
	struct conn *s = c->link;
	struct pg_error e;
	struct pktbuf q;
	bool first = true;

	if (s == NULL || s->txn_status != 'T' || s->expect_rfq != 0 || err->len < 5 ||
	    !proto_parse_error(err->data + 5, err->len - 5, &e) || e.sqlstate == NULL ||
	    e.message == NULL)
		return false;
	/* a field holding the dollar-quote tag would end the DO body early */
	if (strstr(e.message, "$syncbouncer$") || (e.detail && strstr(e.detail, "$syncbouncer$")) ||
	    (e.hint && strstr(e.hint, "$syncbouncer$")))
		return false;
	pktbuf_init(&q, 65536);
	pktbuf_start_msg(&q, 'Q');
	pktbuf_put_bytes(&q, "DO $syncbouncer$BEGIN RAISE EXCEPTION USING", 43);
	put_raise_field(&q, "ERRCODE", e.sqlstate, &first);
	put_raise_field(&q, "MESSAGE", e.message, &first);
	put_raise_field(&q, "DETAIL", e.detail, &first);
	put_raise_field(&q, "HINT", e.hint, &first);
	put_raise_field(&q, "SCHEMA", e.schema, &first);
	put_raise_field(&q, "TABLE", e.table, &first);
	put_raise_field(&q, "COLUMN", e.column, &first);
	pktbuf_put_bytes(&q, "; END$syncbouncer$", 18);
	pktbuf_put_u8(&q, 0);
	pktbuf_finish_msg(&q);
	if (pktbuf_failed(&q) || !sbuf_queue_pktbuf(&s->sbuf, &q)) {
		pktbuf_free(&q);
		return false;
	}
	pktbuf_free(&q);
	s->expect_rfq++;
	return true;
}

static void send_to_client(struct mutation *m, struct pktbuf *pb)
{
	struct mut_client *mc = m->mc;

	if (mc == NULL)
		return;
	if (!m->no_ready)
		pktbuf_write_ready(pb, client_txn_status(mc->client));
	if (pktbuf_failed(pb) || !sbuf_queue_pktbuf(&mc->client->sbuf, pb)) {
		client_close(mc->client, "could not send a synced-table write's answer");
		return;
	}
}

static void set_error(struct mutation *m, const char *sqlstate, const char *msg, const char *detail,
                      const char *hint)
{
	struct pg_error e;

	if (m->failed)
		return;
	memset(&e, 0, sizeof(e));
	e.severity = "ERROR";
	e.sqlstate = sqlstate;
	e.message = msg;
	e.detail = detail;
	e.hint = hint;
	if (m->st != NULL) {
		e.schema = m->st->schema;
		e.table = m->st->table;
	}
	pktbuf_reset(&m->err);
	pktbuf_write_error_fields(&m->err, &e);
	m->failed = true;
}

/* The error PostgreSQL gave for the client's statement, with every field it set. */
static void set_pg_error(struct mutation *m, const PGresult *res)
{
	struct pg_error e;

	if (m->failed)
		return;
	memset(&e, 0, sizeof(e));
	e.severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
	if (e.severity == NULL)
		e.severity = "ERROR";
	e.sqlstate = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	if (e.sqlstate == NULL)
		e.sqlstate = "XX000";
	e.message = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
	if (e.message == NULL)
		e.message = "error without a message";
	e.detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
	e.hint = PQresultErrorField(res, PG_DIAG_MESSAGE_HINT);
	e.position = PQresultErrorField(res, PG_DIAG_STATEMENT_POSITION);
	e.where = PQresultErrorField(res, PG_DIAG_CONTEXT);
	e.schema = PQresultErrorField(res, PG_DIAG_SCHEMA_NAME);
	e.table = PQresultErrorField(res, PG_DIAG_TABLE_NAME);
	e.column = PQresultErrorField(res, PG_DIAG_COLUMN_NAME);
	e.constraint = PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME);
	e.datatype = PQresultErrorField(res, PG_DIAG_DATATYPE_NAME);
	pktbuf_reset(&m->err);
	pktbuf_write_error_fields(&m->err, &e);
	m->failed = true;
}

/* RowDescription, DataRows and CommandComplete of a result, as PostgreSQL would send them. */
static void write_result(struct pktbuf *pb, const struct mutation *m, const PGresult *desc,
                         const PGresult *res)
{
	int ncols = PQnfields(desc);
	bool returning = ncols > 0;

	if (m->extended) {
		write_ext_prefix(m, pb);
		if (m->describe_portal && !returning) {
			pktbuf_start_msg(pb, 'n');
			pktbuf_finish_msg(pb);
		}
	}
	if (returning && (!m->extended || m->describe_portal)) {
		pktbuf_start_msg(pb, 'T');
		pktbuf_put_u16(pb, (uint16_t)ncols);
		for (int i = 0; i < ncols; i++) {
			pktbuf_put_string(pb, PQfname(desc, i));
			pktbuf_put_u32(pb, PQftable(desc, i));
			pktbuf_put_u16(pb, (uint16_t)PQftablecol(desc, i));
			pktbuf_put_u32(pb, PQftype(desc, i));
			pktbuf_put_u16(pb, (uint16_t)PQfsize(desc, i));
			pktbuf_put_u32(pb, (uint32_t)PQfmod(desc, i));
			pktbuf_put_u16(pb, (uint16_t)PQfformat(desc, i));
		}
		pktbuf_finish_msg(pb);
	}
	if (res != NULL && returning) {
		for (int r = 0; r < PQntuples(res); r++) {
			pktbuf_start_msg(pb, 'D');
			pktbuf_put_u16(pb, (uint16_t)ncols);
			for (int i = 0; i < ncols; i++) {
				if (PQgetisnull(res, r, i)) {
					pktbuf_put_u32(pb, 0xffffffffu);
					continue;
				}
				pktbuf_put_u32(pb, (uint32_t)PQgetlength(res, r, i));
				pktbuf_put_bytes(pb, PQgetvalue(res, r, i),
				                 (size_t)PQgetlength(res, r, i));
			}
			pktbuf_finish_msg(pb);
		}
	}
	pktbuf_write_command_complete(pb, PQcmdStatus((PGresult *)(res ? res : desc)));
}

/* ---- API errors → PostgreSQL errors (DESIGN.md §3) --------------------------------------- */

/* "." when text does not already end a sentence, so that two messages read as two sentences. */
static const char *sentence_end(const char *text)
{
	size_t n = strlen(text);

	return n == 0 || text[n - 1] == '.' || text[n - 1] == '!' || text[n - 1] == '?' ? "" : ".";
}

static void set_api_error(struct mutation *m, const struct api_error *ae)
{
	const char *api = api_name(m->st->api);
	char msg[256], detail[1536], hint[128], wr[512];
	const char *sqlstate = "XX000";
	const char *hintp = NULL;
	const char *what = "error";

	detail[0] = '\0';
	describe_write(m, wr, sizeof(wr));
	switch (ae->cls) {
	case API_ERR_VALIDATION:
		sqlstate = "23514";
		what = "validation error";
		break;
	case API_ERR_REQUIRED:
		sqlstate = "23502";
		what = "validation error";
		break;
	case API_ERR_DUPLICATE:
		sqlstate = "23505";
		what = "validation error";
		break;
	case API_ERR_AUTH:
		sqlstate = "28000";
		what = "authentication failed";
		break;
	case API_ERR_PERMISSION:
		sqlstate = "42501";
		what = "permission denied";
		break;
	case API_ERR_RATE_LIMIT:
		sqlstate = "53400";
		what = "rate limit exceeded";
		if (ae->retry_after >= 0) {
			snprintf(hint, sizeof(hint), "retry after %d s", ae->retry_after);
			hintp = hint;
		}
		break;
	case API_ERR_NOT_FOUND:
		sqlstate = "P0002";
		what = "record not found";
		break;
	case API_ERR_UNAVAILABLE:
		sqlstate = "58000";
		what = "unreachable";
		break;
	case API_ERR_SERVER:
		sqlstate = "58000";
		what = "server error";
		break;
	case API_ERR_TOO_MANY_ROWS:
		sqlstate = "54000";
		what = "request too large";
		break;
	case API_ERR_ASSIGNED_ID:
		/* refused here, like a GENERATED ALWAYS column: not the API's verdict */
		sqlstate = "428C9";
		hintp = "Leave the column out: RETURNING gives the id the API assigns.";
		break;
	case API_ERR_TOO_LARGE:
		/* syncbouncer's own cap, not the API's verdict: never a validation error */
		sqlstate = "54000";
		what = "request too large";
		hintp = "Write fewer rows, or smaller values, per statement.";
		break;
	case API_ERR_UNKNOWN_OUTCOME:
	case API_ERR_BAD_ANSWER:
		sqlstate = "XX000";
		what = "outcome unknown";
		break;
	case API_ERR_NONE:
	case API_ERR_INTERNAL:
		sqlstate = "XX000";
		what = "error";
		break;
	}
	snprintf(msg, sizeof(msg), "%s %s", api, what);
	if (ae->column[0] && (ae->cls == API_ERR_VALIDATION || ae->cls == API_ERR_REQUIRED ||
	                      ae->cls == API_ERR_DUPLICATE))
		snprintf(detail, sizeof(detail), "Key (%s)=(%s) %s", ae->column,
		         ae->value_is_null ? "null" : ae->value,
		         ae->reason[0] ? ae->reason : ae->message);
	else if ((ae->cls == API_ERR_UNAVAILABLE || ae->cls == API_ERR_SERVER) &&
	         ae->nothing_written)
		snprintf(detail, sizeof(detail), "%s%s Nothing was written.", ae->message,
		         sentence_end(ae->message));
	else if (ae->cls == API_ERR_SERVER)
		snprintf(detail, sizeof(detail),
		         "%s%s The API may have applied the %s; nothing was written to the "
		         "database yet. It is journal entry %lld, settled by asking %s.",
		         ae->message, sentence_end(ae->message), wr, (long long)m->intent_id, api);
	else if (ae->cls == API_ERR_UNKNOWN_OUTCOME || ae->cls == API_ERR_BAD_ANSWER)
		snprintf(detail, sizeof(detail),
		         "%s%s The request was sent; whether %s applied the %s is unknown. Nothing "
		         "was written to the database yet: it is journal entry %lld, settled by "
		         "asking %s.",
		         ae->message, sentence_end(ae->message), api, wr, (long long)m->intent_id,
		         api);
	else
		snprintf(detail, sizeof(detail), "%s", ae->message);
	if (ae->local && (ae->cls == API_ERR_VALIDATION || ae->cls == API_ERR_REQUIRED ||
	                  ae->cls == API_ERR_DUPLICATE)) {
		/* a value the request cannot carry: syncbouncer's refusal, not the API's verdict */
		sqlstate = "22023";
		snprintf(msg, sizeof(msg), "row cannot be sent to %s", api);
	}
	if (ae->cls == API_ERR_ASSIGNED_ID) {
		snprintf(msg, sizeof(msg), "%.200s", ae->message);
		snprintf(detail, sizeof(detail),
		         "Column \"%s\" holds the record id that %s assigns.", ae->column, api);
	}
	set_error(m, sqlstate, msg, detail[0] ? detail : NULL, hintp);
	if (ae->column[0]) {
		/* the column field of the ErrorResponse names the offending column */
		struct pg_error e;
		memset(&e, 0, sizeof(e));
		e.severity = "ERROR";
		e.sqlstate = sqlstate;
		e.message = msg;
		e.detail = detail[0] ? detail : NULL;
		e.hint = hintp;
		e.schema = m->st->schema;
		e.table = m->st->table;
		e.column = ae->column;
		pktbuf_reset(&m->err);
		pktbuf_write_error_fields(&m->err, &e);
	}
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
static bool pool_conninfo(const struct pool *pool, char *buf, size_t size, const char **err)
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

static void mconn_free(struct mconn *mc)
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

static bool queue_params(struct mutation *m, const char *sql, int n, const char *const *values,
                         pgc_result_cb cb)
{
	return pgc_query(m->conn->pc, sql, n, NULL, values, NULL, NULL, 0, cb, m);
}

static bool queue_stmt(struct mutation *m, pgc_result_cb cb)
{
	if (!m->extended)
		return queue(m, m->sql, cb);
	return pgc_query(m->conn->pc, m->sql, m->nparams, m->nparams ? m->types : NULL,
	                 (const char *const *)m->values, m->lengths, m->formats, m->result_format,
	                 cb, m);
}

static void on_ignored(void *arg, struct pgc *pc, PGresult *res, const char *error)
{
	struct mutation *m = arg;

	(void)pc;
	if (res == NULL) {
		m->conn_broken = true;
		return;
	}
	if (PQresultStatus(res) == PGRES_FATAL_ERROR && !m->failed)
		set_pg_error(m, res);
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
	char sql[160];

	snprintf(sql, sizeof(sql), "CALL syncbouncer.intent_forget(%lld, '%s')",
	         (long long)m->intent_id, m->intent_key);
	m->state = MUT_ROLLING_BACK;
	if (m->conn_broken || !queue(m, "ROLLBACK", on_ignored) ||
	    !queue(m, sql, on_rolled_back)) {
		m->conn_broken = true;
		settle_kick(m->sy->settle, 300); /* the intent is left: settling finds nothing done */
		mutation_finish(m);
	}
}

static void rollback(struct mutation *m)
{
	m->state = MUT_ROLLING_BACK;
	if (m->conn_broken || !queue(m, "ROLLBACK", on_rolled_back)) {
		m->conn_broken = true;
		mutation_finish(m);
	}
}

static void schedule_reload(struct synced *sy);

/* ---- the write-ahead intent (include/mutation/settle.h) -------------------------------------- */

/* "insert", "update", "delete" and the keys, for messages: "update of salesforce.contacts (id 003…)" */
static void describe_write(const struct mutation *m, char *buf, size_t size)
{
	snprintf(buf, size, "%s of %s (%s %s)", stmt_op_str(m->op), m->st->qualified,
	         m->st->at.pk_column, m->keys_text ? m->keys_text : "not assigned yet");
}

/*
 * The intent's row: the images sent ([{"old":..,"new":..}]) and the primary keys of the rows
 * an UPDATE or DELETE touches (an INSERT's come with the API's answer).
 */
static bool intent_build(struct mutation *m)
{
	struct json_out rows, keys;
	size_t len, tl = 0;
	bool ok;

	if (!json_out_init(&rows, 64 * 1024 * 1024))
		return false;
	if (!json_out_init(&keys, 16 * 1024 * 1024)) {
		json_out_free(&rows);
		return false;
	}
	json_out_array_begin(&rows);
	json_out_array_begin(&keys);
	for (int i = 0; i < m->nrows; i++) {
		const struct captured *cr = &m->rows[i];
		const char *key = NULL;
		json_out_object_begin(&rows);
		json_out_key(&rows, "old");
		if (cr->old_json != NULL)
			json_out_value(&rows, cr->old_json);
		else
			json_out_null(&rows);
		json_out_key(&rows, "new");
		if (cr->new_json != NULL)
			json_out_value(&rows, cr->new_json);
		else
			json_out_null(&rows);
		json_out_object_end(&rows);
		for (int k = 0; k < cr->nold; k++)
			if (strcmp(cr->old_vals[k].column, m->st->at.pk_column) == 0)
				key = cr->old_vals[k].value;
		if (m->op != OP_INSERT && key != NULL) {
			size_t add = strlen(key);
			char *grown = realloc(m->keys_text, tl + add + 3);
			json_out_string(&keys, key);
			if (grown != NULL) {
				snprintf(grown + tl, add + 3, "%s%s", tl ? ", " : "", key);
				tl += strlen(grown + tl);
				m->keys_text = grown;
			}
		}
	}
	json_out_array_end(&rows);
	json_out_array_end(&keys);
	ok = json_out_ok(&rows) && json_out_ok(&keys);
	if (ok) {
		m->intent_rows = json_out_take(&rows, &len);
		m->intent_keys = json_out_take(&keys, &len);
		ok = m->intent_rows != NULL && m->intent_keys != NULL;
	}
	json_out_free(&rows);
	json_out_free(&keys);
	return ok;
}

static void send_request(struct mutation *m);

/* The companion connection goes back to the idle list (or away when it is not fit). */
static void intent_conn_release(struct mutation *m)
{
	struct mconn *c = m->iconn;

	m->iconn = NULL;
	if (c == NULL)
		return;
	if (!pgc_ok(c->pc) || pgc_busy(c->pc) || m->sy->stopping ||
	    list_count(&m->sy->idle_conns) >= MAX_IDLE_CONNS)
		mconn_free(c);
	else
		list_append(&m->sy->idle_conns, &c->head);
}

static void on_intent_written(void *arg, struct pgc *pc, PGresult *res, const char *error)
{
	struct mutation *m = arg;
	uint64_t took = bouncer_now_usec() - m->intent_started;

	(void)pc;
	if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK) {
		char detail[512];
		snprintf(detail, sizeof(detail), "%s. Nothing was sent to %s.",
		         res == NULL ? error : PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY),
		         api_name(m->st->api));
		if (m->iconn != NULL && res == NULL) {
			mconn_free(m->iconn);
			m->iconn = NULL;
		}
		intent_conn_release(m);
		set_error(m, "58000", "could not record the write's intent in the database", detail,
		          NULL);
		rollback(m);
		return;
	}
	intent_conn_release(m);
	m->intent_written = true;
	log_debug("synced table %s: intent %lld written in %llu us", m->st->qualified,
	          (long long)m->intent_id, (unsigned long long)took);
	send_request(m);
}

/* A failed connect reaches on_intent_written through the queued INSERT's failure. */
static void on_intent_conn(void *arg, struct pgc *pc, const char *error)
{
	(void)arg;
	(void)pc;
	(void)error;
}

/*
 * Commits the intent on a companion connection of the same database, while the mutation's own
 * transaction keeps the rows locked; the request leaves only once the intent is durable.
 */
static void intent_write(struct mutation *m)
{
	struct synced *sy = m->sy;
	struct list *it;
	char id[24], relid[16], op[2] = {m->op == OP_INSERT ? 'I' : m->op == OP_UPDATE ? 'U' : 'D', 0};
	char owner[320], host[256];
	const char *params[9];

	if (!intent_build(m)) {
		set_error(m, "53200", "out of memory recording the write's intent", NULL, NULL);
		rollback(m);
		return;
	}
	list_for_each(it, &sy->idle_conns)
	{
		struct mconn *c = list_entry(it, struct mconn, head);
		if (strcmp(c->conninfo, m->conninfo) == 0 && pgc_ok(c->pc) && !pgc_busy(c->pc)) {
			list_del(&c->head);
			m->iconn = c;
			break;
		}
	}
	if (m->iconn == NULL) {
		m->iconn = calloc(1, sizeof(*m->iconn));
		if (m->iconn == NULL || (m->iconn->conninfo = strdup(m->conninfo)) == NULL ||
		    (list_init(&m->iconn->head),
		     (m->iconn->pc = pgc_connect(sy->b->base, m->conninfo, on_intent_conn, m)) ==
		             NULL)) {
			if (m->iconn != NULL)
				free(m->iconn->conninfo);
			free(m->iconn);
			m->iconn = NULL;
			set_error(m, "53200", "out of memory", NULL, NULL);
			rollback(m);
			return;
		}
	}
	snprintf(id, sizeof(id), "%lld", (long long)m->intent_id);
	snprintf(relid, sizeof(relid), "%u", m->ct->relid);
	params[0] = id;
	params[1] = relid;
	params[2] = m->st->qualified;
	params[3] = op;
	params[4] = api_name(m->st->api);
	params[5] = m->intent_rows;
	params[6] = m->intent_keys;
	params[7] = m->intent_key;
	if (gethostname(host, sizeof(host)) != 0)
		snprintf(host, sizeof(host), "?");
	host[sizeof(host) - 1] = '\0';
	snprintf(owner, sizeof(owner), "%s pid %d", host, (int)getpid());
	params[8] = owner;
	m->intent_started = bouncer_now_usec();
	if (!pgc_query(m->iconn->pc,
	               "CALL syncbouncer.intent_record($1::int8, $2::oid, $3, $4::\"char\", $5, "
	               "$6::jsonb, $7::jsonb, $8, $9)",
	               9, NULL, params, NULL, NULL, 0, on_intent_written, m)) {
		mconn_free(m->iconn);
		m->iconn = NULL;
		set_error(m, "58000", "could not record the write's intent in the database", NULL,
		          NULL);
		rollback(m);
	}
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
	    m->result == NULL || m->apply_mismatch) {
		/* the API has the change and the database does not: say so, with the ids */
		const char *why = m->db_error[0] ? m->db_error
		                  : res == NULL  ? error
		                  : PQresultStatus(res) != PGRES_COMMAND_OK
		                          ? PQresultErrorMessage(res)
		                  : m->apply_mismatch
		                          ? "the second run wrote other rows than the API confirmed"
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
			log_error("synced table %s: the API's answer to journal entry %lld could not "
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
			set_error(m, "XX000", msg, detail, NULL);
		}
		settle_kick(m->sy->settle, 300);
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
		write_result(&pb, m, m->result, m->result);
		send_to_client(m, &pb);
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
		if (!m->failed)
			set_pg_error(m, res);
		if (!m->db_error[0]) {
			const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
			snprintf(m->db_error, sizeof(m->db_error), "%s", msg ? msg : "error");
		}
		return;
	}
	*slot = pgc_steal_result(pc);
}

/*
 * The second run is done: commit only if it wrote exactly the rows the API confirmed. Anything
 * else (an error, fewer or more rows) is rolled back, and the API's version of the rows goes to
 * the journal (on_committed's failure path), so that the database catches up with the API.
 */
/*
 * The apply transaction's end: the confirmed rows and the intent go in the same COMMIT as the
 * rows, so "committed" and "intent gone" are one fact.
 */
static bool queue_commit(struct mutation *m)
{
	char sql[160];

	snprintf(sql, sizeof(sql), "CALL syncbouncer.intent_forget(%lld, '%s')",
	         (long long)m->intent_id, m->intent_key);
	return queue(m, "DELETE FROM syncbouncer.confirmed WHERE xid = pg_catalog.pg_current_xact_id()",
	             on_ignored) &&
	       queue(m, sql, on_ignored) && queue(m, "COMMIT", on_committed);
}

static void on_hold_done(evutil_socket_t fd, short what, void *arg)
{
	struct mutation *m = arg;

	(void)fd;
	(void)what;
	if (!queue_commit(m))
		on_committed(m, NULL, NULL, "could not queue the commit");
}

static void on_applied(void *arg, struct pgc *pc, PGresult *res, const char *error)
{
	struct mutation *m = arg;
	bool ok;

	(void)error;
	keep_result(m, pc, res, &m->result);
	if (m->conn_broken) {
		on_committed(m, NULL, NULL, "the database connection broke while applying");
		return;
	}
	if (!m->failed && m->result != NULL && atoi(PQcmdTuples(m->result)) != m->nrows) {
		log_error("synced table %s: the apply run wrote %s row(s) where %s confirmed %d",
		          m->st->qualified, PQcmdTuples(m->result), api_name(m->st->api), m->nrows);
		m->apply_mismatch = true;
	}
	if (m->failed || m->apply_mismatch) {
		ok = queue(m, "ROLLBACK", on_committed);
	} else if (test_hold_before_commit_ms() > 0 && m->ev_hold == NULL) {
		struct timeval tv = {test_hold_before_commit_ms() / 1000,
		                     (test_hold_before_commit_ms() % 1000) * 1000};
		log_warning("synced table %s: holding the commit %d ms "
		            "(SYNCBOUNCER_TEST_HOLD_BEFORE_COMMIT_MS, for tests only)",
		            m->st->qualified, test_hold_before_commit_ms());
		m->ev_hold = evtimer_new(m->sy->b->base, on_hold_done, m);
		ok = m->ev_hold != NULL && evtimer_add(m->ev_hold, &tv) == 0;
	} else {
		ok = queue_commit(m);
	}
	if (!ok)
		on_committed(m, NULL, NULL, "could not queue the commit");
}

/* Builds the JSON of confirmed rows: [{"seq":n,"key":…,"fields":{column: value}}]. */
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
			if (rr->fields[f].column == NULL ||
			    strcmp(rr->fields[f].column, m->st->at.pk_column) == 0)
				continue;
			json_out_key(&out, rr->fields[f].column);
			if (rr->fields[f].value != NULL)
				json_out_string(&out, rr->fields[f].value);
			else
				json_out_null(&out);
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
		set_api_error(m, &ar->error);
		if (ar->error.nothing_written) {
			rollback_forget_intent(m);
		} else {
			/* maybe applied: the intent stays, and is settled by asking the API */
			log_warning("synced table %s: the outcome of journal entry %lld at %s is "
			            "unknown (%s); it will be settled",
			            m->st->qualified, (long long)m->intent_id, api_name(m->st->api),
			            api_error_class_str(ar->error.cls));
			settle_kick(m->sy->settle, 300);
			rollback(m);
		}
		return;
	}
	m->state = MUT_APPLYING;
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
		set_error(m, "53200", "out of memory building the confirmed rows", NULL, NULL);
		rollback(m);
		return;
	}
	snprintf(relid, sizeof(relid), "%u", m->ct->relid);
	params[0] = json;
	params[1] = relid;
	ok = queue(m, "DELETE FROM syncbouncer.capture WHERE xid = pg_catalog.pg_current_xact_id()",
	           on_ignored) &&
	     queue_params(m,
	                  "INSERT INTO syncbouncer.confirmed (xid, seq, tbl, key, fields) "
	                  "SELECT pg_catalog.pg_current_xact_id(), x.seq, $2::oid, x.key, x.fields "
	                  "FROM pg_catalog.jsonb_to_recordset($1::jsonb) AS x(seq int, key text, "
	                  "fields jsonb)",
	                  2, params, on_ignored) &&
	     queue(m,
	           "SELECT pg_catalog.set_config('syncbouncer.mode', 'apply', true), "
	           "pg_catalog.set_config('syncbouncer.seq', '0', true)",
	           on_ignored) &&
	     queue_stmt(m, on_applied);
	m->confirmed = json;
	if (!ok) {
		/* the API has the change: the commit path reports XX000 with the ids */
		on_committed(m, NULL, NULL, "could not queue the apply statements");
	}
}

static enum api_value_type value_type(const struct json_value *v)
{
	switch (v->kind) {
	case JSON_NUMBER:
		return API_VALUE_NUMBER;
	case JSON_BOOL:
		return API_VALUE_BOOL;
	case JSON_ARRAY:
	case JSON_OBJECT:
		return API_VALUE_JSON; /* json, jsonb and array columns go to the API as JSON */
	default:
		return API_VALUE_TEXT;
	}
}

/* Turns a to_jsonb(row) image into column/value pairs for the connector. */
static bool image_values(struct captured *cr, const struct json_value *img, struct api_value **out,
                         int *n)
{
	struct api_value *vals;

	*out = NULL;
	*n = 0;
	if (img == NULL || img->kind != JSON_OBJECT)
		return img == NULL || img->kind == JSON_NULL;
	vals = calloc(img->count ? img->count : 1, sizeof(*vals));
	if (vals == NULL)
		return false;
	for (size_t i = 0; i < img->count; i++) {
		const struct json_value *v = img->items[i];
		vals[i].column = img->keys[i];
		vals[i].type = value_type(v);
		switch (v->kind) {
		case JSON_NULL:
			vals[i].value = NULL;
			break;
		case JSON_BOOL:
			vals[i].value = v->boolean ? "true" : "false";
			break;
		case JSON_NUMBER:
		case JSON_STRING:
			vals[i].value = v->str;
			break;
		case JSON_ARRAY:
		case JSON_OBJECT: {
			struct json_out jo;
			size_t len;
			char *text, **grown;
			if (!json_out_init(&jo, 1024 * 1024))
				return false;
			json_out_value(&jo, v);
			text = json_out_ok(&jo) ? json_out_take(&jo, &len) : NULL;
			json_out_free(&jo);
			grown = realloc(cr->owned, sizeof(char *) * (size_t)(cr->nowned + 1));
			if (text == NULL || grown == NULL) {
				free(text);
				free(vals);
				return false;
			}
			cr->owned = grown;
			cr->owned[cr->nowned++] = text;
			vals[i].value = text;
			break;
		}
		}
	}
	*out = vals;
	*n = (int)img->count;
	return true;
}

/* Nothing matched: no API call, the statement's own (empty) result. */
static void answer_no_rows(struct mutation *m)
{
	struct pktbuf pb;

	if (m->mc != NULL) {
		pktbuf_init(&pb, RESPONSE_MAX);
		write_result(&pb, m, m->first, m->first);
		send_to_client(m, &pb);
		pktbuf_free(&pb);
	}
	m->state = MUT_ROLLING_BACK;
	if (!queue(m, "ROLLBACK", on_rolled_back)) {
		m->conn_broken = true;
		mutation_finish(m); /* frees m */
	}
}

static void on_zero_checked(void *arg, struct pgc *pc, PGresult *res, const char *error);

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
		m->conn_broken = true;
		if (!m->failed)
			set_error(m, "58000",
			          "lost the database connection of a synced-table write", error,
			          NULL);
		mutation_finish(m);
		return;
	}
	if (m->failed) {
		rollback(m);
		return;
	}
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		set_pg_error(m, res);
		rollback(m);
		return;
	}
	m->nrows = PQntuples(res);
	if (m->nrows == 0 && m->op != OP_INSERT) {
		/*
		 * No row matched; but an INSERT of this table whose outcome is not settled yet may
		 * have created one the statement would match: wait for it rather than answer 0.
		 * Unsettled: no writer holds its lock (we get it), or a settler holds the settling
		 * lock (we cannot get that one). A live writer's insert is ordinary concurrency.
		 */
		char sql[300];
		snprintf(sql, sizeof(sql),
		         "SELECT syncbouncer.intent_unsettled_insert(%u)", m->ct->relid);
		if (!pgc_query(m->conn->pc, sql, 0, NULL, NULL, NULL, NULL, 0, on_zero_checked, m)) {
			m->conn_broken = true;
			set_error(m, "58000", "lost the database connection of a synced-table write",
			          NULL, NULL);
			mutation_finish(m);
		}
		return;
	}
	if (m->nrows == 0) {
		answer_no_rows(m);
		return;
	}
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
		set_error(m, "54000", "too many rows for one API request", detail,
		          "Split the statement into batches of at most the limit.");
		rollback(m);
		return;
	}
	if (PQnfields(res) < 4 || atoll(PQgetvalue(res, 0, 3)) > CAPTURE_MAX_BYTES) {
		char detail[256];
		snprintf(detail, sizeof(detail),
		         "The rows it would %s in %s take %s bytes as JSON; syncbouncer takes at "
		         "most %d bytes per statement.",
		         api_op_str(op), m->st->qualified,
		         PQnfields(res) < 4 ? "?" : PQgetvalue(res, 0, 3), CAPTURE_MAX_BYTES);
		set_error(m, "54000", "synced-table write too large for one API request", detail,
		          "Write fewer rows, or smaller values, per statement.");
		rollback(m);
		return;
	}
	m->rows = calloc((size_t)m->nrows, sizeof(*m->rows));
	m->api_rows = calloc((size_t)m->nrows, sizeof(*m->api_rows));
	if (m->rows == NULL || m->api_rows == NULL) {
		set_error(m, "53200", "out of memory", NULL, NULL);
		rollback(m);
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
		    !image_values(cr, cr->old_json, &cr->old_vals, &cr->nold) ||
		    !image_values(cr, cr->new_json, &cr->new_vals, &cr->nnew)) {
			set_error(m, "XX000", "could not read a captured row image", NULL, NULL);
			rollback(m);
			return;
		}
		m->api_rows[i].old_image.values = cr->old_vals;
		m->api_rows[i].old_image.nvalues = cr->nold;
		m->api_rows[i].new_image.values = cr->new_vals;
		m->api_rows[i].new_image.nvalues = cr->nnew;
	}
	m->state = MUT_WRITING_INTENT;
	intent_write(m);
}

/* The intent is durable: the request may leave. */
static void send_request(struct mutation *m)
{
	enum api_op op = m->op == OP_INSERT   ? API_OP_INSERT
	                 : m->op == OP_UPDATE ? API_OP_UPDATE
	                                      : API_OP_DELETE;

	m->state = MUT_CALLING_API;
	note_sync_write(m, true);
	m->call = api_submit_keyed(m->st->api, &m->st->at, op, m->api_rows, m->nrows,
	                           m->intent_key, on_api_done, m);
	if (m->call == NULL) {
		set_error(m, "53200", "could not start the API request", NULL, NULL);
		rollback_forget_intent(m);
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
		set_error(m, "40001",
		          "the statement matched no row, but the table has an unsettled insert",
		          detail,
		          "Retry the statement in a few seconds; SHOW JOURNAL on the admin console "
		          "lists unsettled writes.");
		settle_kick(m->sy->settle, 0);
		rollback(m);
		return;
	}
	(void)pc;
	if (res == NULL) {
		m->conn_broken = true;
		set_error(m, "58000", "lost the database connection of a synced-table write", error,
		          NULL);
		mutation_finish(m);
		return;
	}
	answer_no_rows(m);
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

static void on_first_run(void *arg, struct pgc *pc, PGresult *res, const char *error)
{
	struct mutation *m = arg;

	(void)error;
	keep_result(m, pc, res, &m->first);
}

static void start_capture(struct mutation *m)
{
	bool ok;

	/* the images only when they fit in CAPTURE_MAX_BYTES; their size in any case */
	snprintf(
	        m->capture_sql, sizeof(m->capture_sql),
	        "SELECT seq, CASE WHEN total <= %d THEN o END, CASE WHEN total <= %d THEN n END, "
	        "total FROM (SELECT seq, o, n, pg_catalog.sum(COALESCE(pg_catalog.octet_length(o), "
	        "0) + COALESCE(pg_catalog.octet_length(n), 0)) OVER () AS total "
	        "FROM (SELECT seq, old::text AS o, new::text AS n FROM syncbouncer.capture "
	        "WHERE xid = pg_catalog.pg_current_xact_id() AND tbl = %u) c) s ORDER BY seq",
	        CAPTURE_MAX_BYTES, CAPTURE_MAX_BYTES, m->ct->relid);
	m->state = MUT_CAPTURING;
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
	ok = queue(m, "BEGIN", on_ignored) && queue(m, m->prelude_sql, on_ignored) &&
	     (m->session_sql == NULL || queue(m, m->session_sql, on_ignored)) &&
	     queue_stmt(m, on_first_run) && queue(m, m->capture_sql, on_captured);
	if (!ok) {
		set_error(m, "58000", "could not queue a synced-table write", NULL, NULL);
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
		snprintf(detail, sizeof(detail), "%s", error);
		set_error(m, "58000", "could not connect to the database for a synced-table write",
		          detail, NULL);
		m->conn_broken = true;
		mutation_finish(m);
		return;
	}
	start_capture(m);
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

static void on_reload(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	synced_reload(arg);
}

/* Reloads from the loop, never from inside a callback of the structures it frees. */
static void schedule_reload(struct synced *sy)
{
	struct timeval now = {0, 0};

	if (event_base_once(sy->b->base, -1, EV_TIMEOUT, on_reload, sy->b, &now) != 0)
		log_error("synced tables: cannot schedule the reload");
}

static void multi_free(struct mut_client *mc)
{
	for (int i = 0; i < mc->nmulti; i++)
		free(mc->multi[i]);
	free(mc->multi);
	mc->multi = NULL;
	mc->nmulti = mc->imulti = 0;
}

static bool begin_mutation(struct synced *sy, struct conn *c, const struct stmt_class *sc,
                           const char *sql, const struct ext_seq *ext);
static void answer_now(struct conn *c, const char *sqlstate, const char *msg, const char *detail,
                       const char *hint, const struct synced_table *st);

/*
 * Starts the next write of a query string of several. True when it runs (its end goes on);
 * false when it was answered at once (error and ReadyForQuery sent, the string is over).
 */
static bool multi_next(struct synced *sy, struct mut_client *mc)
{
	struct stmt_class sc;
	const char *sql;

	mc->imulti++;
	sql = mc->multi[mc->imulti];
	if (!classifier_classify(sy->cl, mc->client->pool->db_name, sql, &sc) ||
	    sc.verdict == STMT_PASS) {
		answer_now(mc->client, "XX000", "a statement of the query string changed its kind",
		           NULL, NULL, NULL);
		return false;
	}
	sc.nstatements = 1;
	return begin_mutation(sy, mc->client, &sc, sql, NULL) && mc->m != NULL;
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
static void mutation_finish(struct mutation *m)
{
	struct synced *sy = m->sy;
	struct mut_client *mc = m->mc;

	report_finished(m);
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
			write_ext_prefix(m, &pb);
		if (!m->no_ready && raise_on_server(mc->client, &m->err)) {
			/* the prefix now; the server's error and ReadyForQuery follow */
			if (pb.len > 0 && !sbuf_queue_pktbuf(&mc->client->sbuf, &pb))
				client_close(mc->client, "could not send an answer");
		} else {
			pktbuf_put_bytes(&pb, m->err.data, m->err.len);
			send_to_client(m, &pb);
		}
		pktbuf_free(&pb);
		mc = m->mc;
	}
	if (m->conn != NULL) {
		if (m->conn_broken || !pgc_ok(m->conn->pc) || pgc_busy(m->conn->pc) ||
		    list_count(&sy->idle_conns) >= MAX_IDLE_CONNS)
			mconn_free(m->conn);
		else
			list_append(&sy->idle_conns, &m->conn->head);
	}
	if (mc != NULL && mc->client->state != CONN_JUSTFREE) {
		bool next_started = false;
		mc->m = NULL;
		if (mc->multi != NULL && !m->failed && mc->imulti + 1 < mc->nmulti)
			next_started = multi_next(sy, mc);
		if (!next_started) {
			multi_free(mc);
			mc->answered = true;
			if (m->no_ready && mc->ext.active) {
				mc->ext.ran = true;
				mc->ext.group_done = true;
				if (m->failed)
					mc->ext.skip = true;
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
	if (sy->reload_pending && list_empty(&sy->mutations))
		schedule_reload(sy);
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
	free(m->sql);
	free(m);
}

/* Copies an extended sequence's parameters into m (which owns them from then on). */
static bool copy_params(struct mutation *m, const struct ext_seq *ext)
{
	int n = ext->nparams;

	m->extended = true;
	m->parse_complete = ext->parse && !ext->parse_sent;
	m->bind_complete = ext->bind && !ext->bind_sent;
	m->describe_portal = ext->describe_portal;
	m->no_ready = ext->active; /* still collecting: the batch's Sync is yet to come */
	m->result_format = ext->result_format;
	if (n == 0)
		return true;
	m->values = calloc((size_t)n, sizeof(char *));
	m->lengths = calloc((size_t)n, sizeof(int));
	m->formats = calloc((size_t)n, sizeof(int));
	m->types = calloc((size_t)n, sizeof(Oid));
	if (m->values == NULL || m->lengths == NULL || m->formats == NULL || m->types == NULL)
		return false;
	m->nparams = n;
	for (int i = 0; i < n; i++) {
		m->lengths[i] = ext->lengths[i];
		m->formats[i] = ext->formats[i];
		m->types[i] = i < ext->ntypes ? ext->types[i] : 0;
		if (ext->values[i] == NULL)
			continue;
		m->values[i] = malloc((size_t)ext->lengths[i] + 1);
		if (m->values[i] == NULL)
			return false;
		memcpy(m->values[i], ext->values[i], (size_t)ext->lengths[i]);
		m->values[i][ext->lengths[i]] = '\0';
	}
	return true;
}

/* Takes an API slot and a database connection (idle or new), then starts the capture. */
static void mutation_acquire(struct mutation *m)
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
		set_error(m, "53200", "out of memory", NULL, NULL);
		mutation_finish(m);
		return;
	}
	list_init(&m->conn->head);
	m->state = MUT_CONNECTING;
	m->conn->pc = pgc_connect(sy->b->base, m->conninfo, on_connected, m);
	if (m->conn->pc == NULL) {
		free(m->conn->conninfo);
		free(m->conn);
		m->conn = NULL;
		set_error(m, "53200", "out of memory", NULL, NULL);
		mutation_finish(m);
	}
}

/*
 * The client's settings that change how its statement is read or what RETURNING sends back
 * (string literals, dates, intervals, time zone, float digits), for the mutation's own
 * transaction. Other settings stay the pooler's. NULL when the client set none of them.
 */
static char *session_settings(const struct conn *c)
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
	pktbuf_put_u8(&pb, 0);
	sql = n > 0 && !pktbuf_failed(&pb) ? strdup((const char *)pb.data) : NULL;
	pktbuf_free(&pb);
	return sql;
}

static void mutation_start(struct synced *sy, struct mut_client *mc, struct synced_table *st,
                           struct catalog_table *ct, const struct stmt_class *sc, const char *sql,
                           const struct ext_seq *ext)
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
	m->started = bouncer_now_usec();
	m->intent_id = settle_new_id();
	api_random_key(m->intent_key, sizeof(m->intent_key));
	pktbuf_init(&m->err, 65536);
	mc->m = m;
	m->session_sql = session_settings(mc->client);
	if (ext == NULL && mc->multi != NULL && mc->imulti < mc->nmulti - 1)
		m->no_ready = true;
	m->sql = strdup(sql);
	if (m->sql == NULL || (ext != NULL && !copy_params(m, ext))) {
		set_error(m, "53200", "out of memory", NULL, NULL);
		mutation_finish(m);
		return;
	}
	if (!pool_conninfo(pool, conninfo, sizeof(conninfo), &err)) {
		set_error(m, "28000", err, NULL, NULL);
		mutation_finish(m);
		return;
	}
	m->conninfo = strdup(conninfo);
	if (m->conninfo == NULL) {
		set_error(m, "53200", "out of memory", NULL, NULL);
		mutation_finish(m);
		return;
	}
	if (sy->api_active[st->api_index] >= sy->api_cap[st->api_index]) {
		/* the API takes no more at once: wait without holding a database connection */
		m->state = MUT_QUEUED;
		list_append(&sy->queued, &m->qhead);
		return;
	}
	mutation_acquire(m);
}

/* ---- the query hook -------------------------------------------------------------------- */

static void answer_now(struct conn *c, const char *sqlstate, const char *msg, const char *detail,
                       const char *hint, const struct synced_table *st)
{
	struct pktbuf pb;
	struct pg_error e;

	memset(&e, 0, sizeof(e));
	e.severity = "ERROR";
	e.sqlstate = sqlstate;
	e.message = msg;
	e.detail = detail && detail[0] ? detail : NULL;
	e.hint = hint && hint[0] ? hint : NULL;
	if (st != NULL) {
		e.schema = st->schema;
		e.table = st->table;
	}
	pktbuf_init(&pb, 65536);
	pktbuf_write_error_fields(&pb, &e);
	if (c->hook_state != NULL && ((struct mut_client *)c->hook_state)->ext.active) {
		/* inside a batch: the rest is skipped up to Sync, which answers ReadyForQuery */
		((struct mut_client *)c->hook_state)->ext.skip = true;
	} else if (raise_on_server(c, &pb)) {
		pktbuf_free(&pb);
		return;
	} else {
		pktbuf_write_ready(&pb, client_txn_status(c));
	}
	if (!sbuf_queue_pktbuf(&c->sbuf, &pb))
		client_close(c, "could not send an error");
	pktbuf_free(&pb);
}

static struct mut_client *mc_get(struct conn *c)
{
	struct mut_client *mc = c->hook_state;

	if (mc == NULL) {
		mc = calloc(1, sizeof(*mc));
		if (mc == NULL)
			return NULL;
		mc->client = c;
		c->hook_state = mc;
	}
	return mc;
}

static void ext_reset(struct ext_seq *e)
{
	for (int i = 0; i < e->nparams; i++)
		free(e->values[i]);
	free(e->values);
	free(e->lengths);
	free(e->formats);
	free(e->types);
	free(e->sql);
	memset(e, 0, sizeof(*e));
}

static void prep_free(struct prep_stmt *ps)
{
	free(ps->name);
	free(ps->sql);
	free(ps->types);
}

/* Drops the per-client state once nothing needs it: back to the fast path. */
static void mc_release_if_idle(struct conn *c)
{
	struct mut_client *mc = c->hook_state;

	if (mc == NULL || mc->m != NULL || mc->answered || mc->ext.active || mc->nstmts > 0 ||
	    mc->multi != NULL)
		return;
	ext_reset(&mc->ext);
	free(mc->stmts);
	free(mc);
	c->hook_state = NULL;
}

static struct prep_stmt *find_stmt(struct mut_client *mc, const char *name)
{
	for (int i = 0; mc != NULL && i < mc->nstmts; i++)
		if (strcmp(mc->stmts[i].name, name) == 0)
			return &mc->stmts[i];
	return NULL;
}

static void drop_stmt(struct mut_client *mc, const char *name)
{
	struct prep_stmt *ps = find_stmt(mc, name);

	if (ps == NULL)
		return;
	prep_free(ps);
	*ps = mc->stmts[--mc->nstmts];
}

/*
 * The checks every synced write passes before the pipeline starts. Returns true when the
 * mutation was started (the answer comes later); false when it was answered at once (answer_now
 * already queued the error).
 */
static bool begin_mutation(struct synced *sy, struct conn *c, const struct stmt_class *sc,
                           const char *sql, const struct ext_seq *ext)
{
	struct synced_table *st;
	struct catalog_table *ct;
	struct mut_client *mc;

	st = sc->table >= 0 && sc->table < sy->ntables ? &sy->tables[sc->table] : NULL;
	if (sc->verdict == STMT_REJECT) {
		answer_now(c, sc->sqlstate, sc->message, sc->detail, sc->hint, st);
		return false;
	}
	if (st == NULL) {
		answer_now(c, "XX000", "synced table not found", NULL, NULL, NULL);
		return false;
	}
	if (sc->nstatements > 1) {
		answer_now(
		        c, "0A000",
		        "a write to a synced table must be the only statement in its query string",
		        NULL, "Send it as a query of its own.", st);
		return false;
	}
	if (client_txn_status(c) == 'E') {
		answer_now(c, "25P02",
		           "current transaction is aborted, commands ignored until end of "
		           "transaction block",
		           NULL, NULL, NULL);
		return false;
	}
	ct = catalog_find(sy->cat, st->database, st->schema, st->table);
	if (ct == NULL || ct->state != CAT_READY || !st->at_ready) {
		char msg[512];
		snprintf(msg, sizeof(msg), "synced table %s is not ready: %s", st->qualified,
		         ct == NULL                 ? "unknown"
		         : ct->state == CAT_PENDING ? "still being prepared"
		         : ct->error[0]             ? ct->error
		                                    : "not prepared");
		answer_now(c, "55000", msg, NULL, NULL, st);
		return false;
	}
	mc = mc_get(c);
	if (mc == NULL) {
		answer_now(c, "53200", "out of memory", NULL, NULL, NULL);
		return false;
	}
	mutation_start(sy, mc, st, ct, sc, sql, ext);
	if (mc->answered) {
		/* failed at once: the error is queued and the relay never paused */
		mc->answered = false;
		return false;
	}
	return true;
}

/*
 * A statement too big to hold whole (above SBUF_GATHER_MAX, 1 MiB) is decided on its first
 * bytes: the largest write the APIs take in one request is far smaller, so a statement that
 * may write a synced table or reach a syncbouncer.* setting is refused (WAIT: the core answers
 * 54000); anything else streams. A synced table named only past the prefix is safe: the guard
 * trigger refuses the write (42501) because the pipeline did not run it, and the core searches
 * the streamed text for the settings' spellings.
 */
static enum hook_verdict inspect_prefix(struct synced *sy, struct conn *c,
                                        const struct sbuf_pkt *pkt, const char *text, size_t len)
{
	if (!pkt->too_big)
		return HOOK_WAIT;
	return classifier_quick_check(sy->cl, c->pool->db_name, text, len) ? HOOK_WAIT : HOOK_PASS;
}

static enum hook_verdict inspect_query(struct synced *sy, struct conn *c,
                                       const struct sbuf_pkt *pkt)
{
	const char *sql = (const char *)pkt->body;
	struct stmt_class sc;

	if (!pkt->complete)
		return inspect_prefix(sy, c, pkt, sql, pkt->body_avail);
	if (pkt->body_len == 0 || pkt->body[pkt->body_len - 1] != '\0')
		return HOOK_PASS; /* malformed: PostgreSQL answers it */
	if (!classifier_quick_check(sy->cl, c->pool->db_name, sql, pkt->body_len - 1))
		return HOOK_PASS;
	if (!classifier_classify(sy->cl, c->pool->db_name, sql, &sc) || sc.verdict == STMT_PASS)
		return HOOK_PASS;
	if (!client_server_idle(c))
		return HOOK_WAIT_IDLE;
	if (sc.verdict == STMT_MUTATION && sc.nstatements > 1 && sc.nmutations == sc.nstatements) {
		/* several writes of synced tables: one after another, answered as one query */
		struct mut_client *mc = mc_get(c);
		int starts[64], lens[64];
		int n = classifier_split(sql, starts, lens, 64);
		if (mc == NULL || n < 2 || n > 64) {
			answer_now(c, n > 64 ? "54000" : "53200",
			           n > 64 ? "too many statements in one query string"
			                  : "out of memory",
			           NULL, NULL, NULL);
			mc_release_if_idle(c);
			return HOOK_CONSUME;
		}
		mc->multi = calloc((size_t)n, sizeof(char *));
		for (int i = 0; mc->multi != NULL && i < n; i++) {
			mc->multi[i] = strndup(sql + starts[i], (size_t)lens[i]);
			if (mc->multi[i] == NULL) {
				mc->nmulti = i;
				multi_free(mc);
			}
		}
		if (mc->multi == NULL) {
			answer_now(c, "53200", "out of memory", NULL, NULL, NULL);
			mc_release_if_idle(c);
			return HOOK_CONSUME;
		}
		mc->nmulti = n;
		mc->imulti = 0;
		if (!classifier_classify(sy->cl, c->pool->db_name, mc->multi[0], &sc)) {
			multi_free(mc);
			answer_now(c, "53200", "out of memory", NULL, NULL, NULL);
			mc_release_if_idle(c);
			return HOOK_CONSUME;
		}
		sc.nstatements = 1;
		sql = mc->multi[0];
	}
	if (!begin_mutation(sy, c, &sc, sql, NULL)) {
		struct mut_client *mc = c->hook_state;
		if (mc != NULL)
			multi_free(mc);
		mc_release_if_idle(c);
		return HOOK_CONSUME;
	}
	return HOOK_PAUSE;
}

static void ext_fail(struct ext_seq *e, const char *sqlstate, const char *msg)
{
	if (e->failed)
		return;
	e->failed = true;
	snprintf(e->sqlstate, sizeof(e->sqlstate), "%s", sqlstate);
	snprintf(e->message, sizeof(e->message), "%s", msg);
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
	if (!classifier_classify(sy->cl, c->pool->db_name, sql, &sc)) {
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
	{
		/* the unnamed statement too: a batch may bind it again */
		struct prep_stmt *ps;
		drop_stmt(mc, name);
		ps = realloc(mc->stmts, sizeof(*ps) * (size_t)(mc->nstmts + 1));
		if (ps == NULL) {
			ext_fail(e, "53200", "out of memory");
			return;
		}
		mc->stmts = ps;
		ps = &mc->stmts[mc->nstmts];
		memset(ps, 0, sizeof(*ps));
		ps->name = strdup(name);
		ps->sql = strdup(sql);
		ps->types = ntypes ? malloc(sizeof(Oid) * ntypes) : NULL;
		if (ps->name == NULL || ps->sql == NULL || (ntypes && ps->types == NULL)) {
			prep_free(ps);
			ext_fail(e, "53200", "out of memory");
			return;
		}
		if (ntypes)
			memcpy(ps->types, types, sizeof(Oid) * ntypes);
		ps->ntypes = ntypes;
		ps->sc = sc;
		mc->nstmts++;
	}
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
	if (stmt[0] != '\0' || (!e->parse && find_stmt(mc, stmt) != NULL)) {
		struct prep_stmt *ps = find_stmt(mc, stmt);
		if (ps == NULL) {
			ext_fail(e, "26000", "prepared statement does not exist");
			return;
		}
		struct stmt_class sc;
		/* classified again: a RELOAD may have renumbered the synced tables */
		if (!classifier_classify(sy->cl, c->pool->db_name, ps->sql, &sc)) {
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

/* The highest $n of a statement (outside quotes and comments), capped at 65535. */
static int count_params(const char *sql)
{
	int max = 0;

	for (const char *p = sql; p != NULL && *p; p++) {
		if (*p == '\'' || *p == '"') {
			char q = *p;
			for (p++; *p && *p != q; p++)
				;
			if (*p == '\0')
				break;
		} else if (p[0] == '-' && p[1] == '-') {
			while (*p && *p != '\n')
				p++;
			if (*p == '\0')
				break;
		} else if (*p == '$' && p[1] >= '0' && p[1] <= '9' &&
		           (p == sql ||
		            !(p[-1] == '_' || (p[-1] >= 'a' && p[-1] <= 'z') ||
		              (p[-1] >= 'A' && p[-1] <= 'Z') || (p[-1] >= '0' && p[-1] <= '9')))) {
			long n = strtol(p + 1, NULL, 10);
			if (n > max)
				max = n > 65535 ? 65535 : (int)n;
		}
	}
	return max;
}

/* Answers a sequence that executes nothing (Parse/Describe/Close + Sync), or a failed one. */
static void ext_answer_now(struct conn *c, struct ext_seq *e)
{
	struct pktbuf pb;

	pktbuf_init(&pb, 65536);
	if (e->failed) {
		pktbuf_write_error(&pb, "ERROR", e->sqlstate, e->message, NULL, NULL);
	} else {
		if (e->parse && !e->parse_sent)
			pktbuf_write_simple(&pb, '1');
		if (e->bind && !e->bind_sent)
			pktbuf_write_simple(&pb, '2');
		if (e->describe_stmt) {
			/* parameter types as the client declared them; undeclared ones as text */
			int n = count_params(e->sql);
			if (n < e->ntypes)
				n = e->ntypes;
			pktbuf_start_msg(&pb, 't');
			pktbuf_put_u16(&pb, (uint16_t)n);
			for (int i = 0; i < n; i++)
				pktbuf_put_u32(&pb,
				               i < e->ntypes && e->types[i] ? e->types[i] : 25);
			pktbuf_finish_msg(&pb);
		}
		if (e->describe_stmt || e->describe_portal) {
			pktbuf_start_msg(&pb, 'n');
			pktbuf_finish_msg(&pb);
		}
		if (e->close) {
			pktbuf_start_msg(&pb, '3');
			pktbuf_finish_msg(&pb);
		}
	}
	pktbuf_write_ready(&pb, client_txn_status(c));
	if (!sbuf_queue_pktbuf(&c->sbuf, &pb))
		client_close(c, "could not send an answer");
	pktbuf_free(&pb);
}

/* Forgets the current group (statement, parameters, flags), keeping the batch's state. */
static void ext_new_group(struct ext_seq *e)
{
	bool ran = e->ran, skip = e->skip;

	ext_reset(e);
	e->active = true;
	e->ran = ran;
	e->skip = skip;
}

/* Leaves the batch: the messages from here on are ordinary ones, for the server. */
static enum hook_verdict ext_leave(struct conn *c, struct mut_client *mc)
{
	ext_reset(&mc->ext);
	mc_release_if_idle(c);
	return HOOK_PASS;
}

/* Sends what a group answers before its Execute when the client flushes early. */
static void ext_flush(struct conn *c, struct ext_seq *e)
{
	struct pktbuf pb;

	if (e->skip || e->failed || ((!e->parse || e->parse_sent) && (!e->bind || e->bind_sent)))
		return;
	pktbuf_init(&pb, 64);
	if (e->parse && !e->parse_sent)
		pktbuf_write_simple(&pb, '1');
	if (e->bind && !e->bind_sent)
		pktbuf_write_simple(&pb, '2');
	e->parse_sent = e->parse;
	e->bind_sent = e->bind;
	if (!sbuf_queue_pktbuf(&c->sbuf, &pb))
		client_close(c, "could not send an answer");
	pktbuf_free(&pb);
}

/*
 * One message of an extended-protocol batch that the hook has taken over. A batch is the
 * messages up to Sync; it holds groups (Parse/Bind/Describe/Execute) that write a synced table.
 * Each group runs at its Execute and is answered then, without ReadyForQuery; the Sync answers
 * ReadyForQuery. After a failure the rest of the batch is skipped, as PostgreSQL skips to Sync.
 * A group that writes no synced table ends the batch for the hook: it and everything after it
 * go to the server, which answers the Sync.
 */
static enum hook_verdict ext_packet(struct synced *sy, struct conn *c, struct mut_client *mc,
                                    const struct sbuf_pkt *pkt)
{
	struct ext_seq *e = &mc->ext;
	const char *stmt = NULL, *portal = NULL;

	if (!pkt->complete)
		return HOOK_WAIT;
	if (e->skip && pkt->type != 'S')
		return HOOK_CONSUME;
	switch (pkt->type) {
	case 'P': {
		const char *sql;
		size_t sql_len;
		uint16_t n;
		struct stmt_class sc;
		if (e->group_done)
			ext_new_group(e);
		if (e->parse || e->bind) {
			ext_fail(
			        e, "0A000",
			        "a write to a synced table cannot be interleaved with other statements "
			        "before its Execute");
			return HOOK_CONSUME;
		}
		if ((e->ran || e->close) &&
		    proto_parse_parse(pkt->body, pkt->body_len, &stmt, &sql, &sql_len, &n) &&
		    (!classifier_classify(sy->cl, c->pool->db_name, sql, &sc) ||
		     sc.verdict == STMT_PASS)) {
			if (e->close && !e->ran) {
				struct pktbuf pb;
				pktbuf_init(&pb, 16);
				pktbuf_write_simple(&pb, '3');
				if (!sbuf_queue_pktbuf(&c->sbuf, &pb))
					client_close(c, "could not send an answer");
				pktbuf_free(&pb);
			}
			drop_stmt(mc, stmt); /* the server's statement of that name from now on */
			return ext_leave(c, mc);
		}
		ext_parse(sy, c, mc, pkt);
		return HOOK_CONSUME;
	}
	case 'B':
		if (e->group_done)
			ext_new_group(e);
		if (e->ran && !e->parse &&
		    proto_parse_msg_names('B', pkt->body, pkt->body_len, &stmt, &portal) &&
		    stmt != NULL && find_stmt(mc, stmt) == NULL)
			return ext_leave(c, mc);
		if (!e->failed)
			ext_bind(sy, c, mc, pkt);
		return HOOK_CONSUME;
	case 'D':
		if (pkt->body_len >= 1 && pkt->body[0] == 'P')
			e->describe_portal = true;
		else
			e->describe_stmt = true;
		return HOOK_CONSUME;
	case 'E':
		if (e->failed) {
			answer_now(c, e->sqlstate, e->message, NULL, NULL, NULL);
			return HOOK_CONSUME;
		}
		if (e->sql == NULL || !e->bind) {
			answer_now(c, "34000", "portal does not exist", NULL, NULL, NULL);
			return HOOK_CONSUME;
		}
		if (!begin_mutation(sy, c, &e->sc, e->sql, e))
			return HOOK_CONSUME;
		return HOOK_PAUSE;
	case 'C':
		if (proto_parse_msg_names('C', pkt->body, pkt->body_len, &stmt, &portal) &&
		    stmt != NULL)
			drop_stmt(mc, stmt);
		e->close = true;
		return HOOK_CONSUME;
	case 'H':
		ext_flush(c, e);
		return HOOK_CONSUME;
	case 'S':
		break;
	default:
		/* not part of an extended batch: give the rest to the server */
		return ext_leave(c, mc);
	}
	/* Sync */
	if (e->ran || e->skip) {
		struct pktbuf pb;
		pktbuf_init(&pb, 64);
		pktbuf_write_ready(&pb, client_txn_status(c));
		if (!sbuf_queue_pktbuf(&c->sbuf, &pb))
			client_close(c, "could not send an answer");
		pktbuf_free(&pb);
	} else {
		ext_answer_now(c, e);
	}
	ext_reset(e);
	mc_release_if_idle(c);
	return HOOK_CONSUME;
}

static enum hook_verdict hook_inspect(void *ctx, struct conn *c, const struct sbuf_pkt *pkt)
{
	struct synced *sy = ctx;
	struct mut_client *mc = c->hook_state;
	const char *stmt = NULL, *portal = NULL;

	if (mc != NULL) {
		if (mc->m != NULL)
			return HOOK_PAUSE;
		if (mc->answered) {
			mc->answered = false;
			mc_release_if_idle(c);
			return HOOK_CONSUME;
		}
		if (mc->ext.active)
			return ext_packet(sy, c, mc, pkt);
	}
	if (c->admin || c->pool == NULL)
		return HOOK_PASS;
	/* a paused pool holds synced writes back like any other query: the core queues the client
	 * for a server, and the packet comes back here once the pool is resumed */
	if (control_pool_paused(c->pool))
		return HOOK_PASS;
	switch (pkt->type) {
	case 'Q':
		return inspect_query(sy, c, pkt);
	case 'P': {
		const char *sql;
		size_t sql_len;
		uint16_t n;
		struct stmt_class sc;
		if (!pkt->complete) {
			/* the statement's name comes first: the text after it is the prefix */
			const void *nul = memchr(pkt->body, '\0', pkt->body_avail);
			size_t skip = nul ? (size_t)((const uint8_t *)nul - pkt->body) + 1 : 0;
			if (nul == NULL && pkt->too_big)
				return HOOK_WAIT;
			return inspect_prefix(sy, c, pkt, (const char *)pkt->body + skip,
			                      pkt->body_avail - skip);
		}
		if (!proto_parse_parse(pkt->body, pkt->body_len, &stmt, &sql, &sql_len, &n))
			return HOOK_PASS;
		if (mc != NULL)
			drop_stmt(mc, stmt); /* re-prepared under the same name ("" too) */
		if (!classifier_quick_check(sy->cl, c->pool->db_name, sql, sql_len) ||
		    !classifier_classify(sy->cl, c->pool->db_name, sql, &sc) ||
		    sc.verdict == STMT_PASS) {
			mc_release_if_idle(c);
			return HOOK_PASS;
		}
		break;
	}
	case 'B':
	case 'C':
		if (mc == NULL || mc->nstmts == 0 || !pkt->complete ||
		    !proto_parse_msg_names(pkt->type, pkt->body, pkt->body_len, &stmt, &portal) ||
		    stmt == NULL || find_stmt(mc, stmt) == NULL)
			return pkt->complete || mc == NULL || mc->nstmts == 0 ? HOOK_PASS
			                                                      : HOOK_WAIT;
		break;
	default:
		return HOOK_PASS;
	}
	/* this packet starts an extended sequence that writes a synced table */
	if (!client_server_idle(c))
		return HOOK_WAIT_IDLE;
	mc = mc_get(c);
	if (mc == NULL)
		return HOOK_PASS;
	mc->ext.active = true;
	return ext_packet(sy, c, mc, pkt);
}

static void hook_client_closed(void *ctx, struct conn *c)
{
	struct mut_client *mc = c->hook_state;

	(void)ctx;
	if (mc == NULL)
		return;
	if (mc->m != NULL && mc->m->state == MUT_QUEUED) {
		/* nothing was sent anywhere yet: drop it */
		struct mutation *m = mc->m;
		m->mc = NULL;
		mc->m = NULL;
		mutation_finish(m);
	} else if (mc->m != NULL) {
		mc->m->mc = NULL; /* the mutation goes on to its end; nobody to answer */
	}
	ext_reset(&mc->ext);
	multi_free(mc);
	for (int i = 0; i < mc->nstmts; i++)
		prep_free(&mc->stmts[i]);
	free(mc->stmts);
	c->hook_state = NULL;
	free(mc);
}

/* ---- set-up ---------------------------------------------------------------------------- */

static char *qualify(const char *schema, const char *table)
{
	size_t n = strlen(schema) + strlen(table) + 2;
	char *s = malloc(n);

	if (s != NULL)
		snprintf(s, n, "%s.%s", schema, table);
	return s;
}

static void on_catalog_done(void *arg, struct catalog *cat)
{
	struct synced *sy = arg;

	(void)cat;
	/* writes that a previous run (or another instance) left unsettled */
	settle_kick(sy->settle, 0);
}

/* settle_find_cb: the synced table of database with this relation oid. */
static bool find_table(void *arg, const char *database, unsigned relid, struct settle_table *out)
{
	struct synced *sy = arg;

	for (int i = 0; i < sy->ntables; i++) {
		struct synced_table *st = &sy->tables[i];
		struct catalog_table *ct;
		if (strcmp(st->database, database) != 0 || !st->at_ready)
			continue;
		ct = catalog_find(sy->cat, st->database, st->schema, st->table);
		if (ct == NULL || ct->state != CAT_READY || ct->relid != relid)
			continue;
		out->api = st->api;
		out->at = &st->at;
		out->ct = ct;
		out->synced = false;
		if (sy->sync != NULL) {
			struct sync_view sv;
			sync_view(sy->sync, i, &sv);
			out->synced = sv.state != NULL && strcmp(sv.state, "off") != 0 &&
			              sy->sync_confs != NULL && sy->sync_confs[i].interval > 0;
		}
		return true;
	}
	return false;
}

/* A console SYNC finished: answer the admin client that waits for it. */
static void on_sync_done(void *arg, uint64_t conn_id, const char *error)
{
	struct synced *sy = arg;

	if (error == NULL)
		admin_command_done(sy->b, conn_id, "SYNC");
	else
		admin_command_failed(sy->b, conn_id, "58000", error);
}

/*
 * Without [synced_tables] there is no pipeline, but the guard's settings are refused all the
 * same: a server that took SET syncbouncer.mode now would keep it in the pool, and a RELOAD that
 * adds synced tables (or a guard trigger installed by another pooler) would then trust it. Only
 * the classifier is made, with no tables: every statement passes but those settings.
 */
static bool synced_start_settings_only(struct bouncer *b)
{
	struct synced *sy = calloc(1, sizeof(*sy));

	if (sy == NULL)
		return false;
	sy->b = b;
	list_init(&sy->idle_conns);
	list_init(&sy->mutations);
	list_init(&sy->queued);
	sy->cl = classifier_new(NULL, 0);
	if (sy->cl == NULL) {
		free(sy);
		return false;
	}
	b->synced = sy;
	b->hook.inspect = hook_inspect;
	b->hook.stream_needles = classifier_setting_needles();
	b->hook.client_closed = hook_client_closed;
	b->hook.ctx = sy;
	return true;
}

bool synced_start(struct bouncer *b)
{
	struct config *cfg = b->cfg;
	struct synced *sy;
	struct classifier_table *ctabs = NULL;
	const struct cf_synced_table *t;
	const struct cf_api *a;
	char err[512];
	int n = 0, i;

	for (t = cfg->synced_tables; t != NULL; t = t->next)
		n++;
	if (n == 0)
		return synced_start_settings_only(b);
	sy = calloc(1, sizeof(*sy));
	if (sy == NULL)
		return false;
	sy->b = b;
	if (!config_load(b->config_path, &sy->cfg)) {
		free(sy);
		return false;
	}
	cfg = sy->cfg;
	list_init(&sy->idle_conns);
	list_init(&sy->mutations);
	list_init(&sy->queued);
	sy->http = http_engine_create(b->base, b->dns);
	if (sy->http == NULL)
		goto fail;
	for (a = cfg->apis; a != NULL; a = a->next)
		sy->napis++;
	sy->apis = calloc((size_t)sy->napis + 1, sizeof(*sy->apis));
	sy->api_active = calloc((size_t)sy->napis + 1, sizeof(int));
	sy->api_cap = calloc((size_t)sy->napis + 1, sizeof(int));
	if (sy->apis == NULL || sy->api_active == NULL || sy->api_cap == NULL)
		goto fail;
	for (a = cfg->apis, i = 0; a != NULL; a = a->next, i++) {
		const char *mif = cf_kv_get(a->kv, a->nkv, "max_in_flight");
		sy->api_cap[i] = mif != NULL && atoi(mif) > 0 ? atoi(mif) : 10;
		sy->apis[i] = api_create(sy->http, a->name, a->kv, a->nkv, err, sizeof(err));
		if (sy->apis[i] == NULL) {
			log_error("[apis] %s (line %d): %s", a->name, a->line, err);
			goto fail;
		}
	}
	sy->tables = calloc((size_t)n, sizeof(*sy->tables));
	sy->sync_confs = calloc((size_t)n, sizeof(*sy->sync_confs));
	ctabs = calloc((size_t)n, sizeof(*ctabs));
	if (sy->tables == NULL || sy->sync_confs == NULL || ctabs == NULL)
		goto fail;
	for (t = cfg->synced_tables, i = 0; t != NULL; t = t->next, i++) {
		struct synced_table *st = &sy->tables[i];
		const char *api = cf_kv_get(t->kv, t->nkv, "api");

		sy->ntables++;
		st->database = strdup(t->database);
		st->schema = strdup(t->schema);
		st->table = strdup(t->table);
		st->qualified = qualify(t->schema, t->table);
		if (st->database == NULL || st->schema == NULL || st->table == NULL ||
		    st->qualified == NULL)
			goto fail;
		for (int k = 0; k < sy->napis && api != NULL; k++) {
			if (strcmp(api_name(sy->apis[k]), api) == 0) {
				st->api = sy->apis[k];
				st->api_index = k;
			}
		}
		if (st->api == NULL) {
			log_error("[synced_tables] %s.%s (line %d): api=%s names no [apis] entry",
			          t->database, st->qualified, t->line, api ? api : "(missing)");
			goto fail;
		}
		if (!api_table_init(&st->at, st->qualified, t->kv, t->nkv, err, sizeof(err))) {
			log_error("[synced_tables] %s.%s (line %d): %s", t->database, st->qualified,
			          t->line, err);
			goto fail;
		}
		st->at_ready = true;
		if (!connector_check_table(api_connector(st->api), &st->at, err, sizeof(err))) {
			log_error("[synced_tables] %s.%s (line %d): %s", t->database, st->qualified,
			          t->line, err);
			goto fail;
		}
		if (!sync_table_options(t->kv, t->nkv, &sy->sync_confs[i], err, sizeof(err))) {
			log_error("[synced_tables] %s.%s (line %d): %s", t->database, st->qualified,
			          t->line, err);
			goto fail;
		}
		sy->sync_confs[i].database = st->database;
		sy->sync_confs[i].schema = st->schema;
		sy->sync_confs[i].table = st->table;
		sy->sync_confs[i].api = st->api;
		sy->sync_confs[i].at = &st->at;
		sy->sync_confs[i].lane_cap = sy->api_cap[st->api_index];
		ctabs[i].database = st->database;
		ctabs[i].schema = st->schema;
		ctabs[i].table = st->table;
	}
	sy->cl = classifier_new(ctabs, n);
	if (sy->cl == NULL)
		goto fail;
	free(ctabs);
	ctabs = NULL;
	{
		char path[4096], dir[4096];
		if (cfg->journal_file[0]) {
			snprintf(path, sizeof(path), "%s", cfg->journal_file);
		} else {
			snprintf(dir, sizeof(dir), "%s", b->config_path);
			snprintf(path, sizeof(path), "%s/syncbouncer.journal", dirname(dir));
		}
		sy->journal = journal_open(path);
		if (sy->journal == NULL)
			log_warning("synced tables: no journal file; an insert the API accepts while "
			            "the database is gone is settled by the sync worker only");
	}
	sy->cat = catalog_create(b->base, cfg, b->users, on_catalog_done, sy);
	if (sy->cat == NULL)
		goto fail;
	sy->settle = settle_create(b->base, sy->cat, sy->journal, cfg->settle_deadline, find_table,
	                           sy);
	if (sy->settle == NULL)
		goto fail;
	/* each table's first pass waits for the catalog to have prepared it */
	sy->sync = sync_create(b->base, sy->cat, sy->sync_confs, sy->ntables, on_sync_done, sy);
	if (sy->sync == NULL)
		goto fail;
	b->synced = sy;
	b->hook.inspect = hook_inspect;
	b->hook.stream_needles = classifier_setting_needles();
	b->hook.client_closed = hook_client_closed;
	b->hook.ctx = sy;
	return true;
fail:
	free(ctabs);
	b->synced = sy;
	synced_stop(b);
	return false;
}

void synced_stop(struct bouncer *b)
{
	struct synced *sy = b->synced;
	struct list *it, *tmp;

	if (sy == NULL)
		return;
	sy->reload_pending = false;
	sy->stopping = true;
	b->hook.inspect = NULL;
	b->hook.client_closed = NULL;
	b->hook.ctx = NULL;
	list_for_each_safe(it, tmp, &sy->mutations)
	{
		struct mutation *m = list_entry(it, struct mutation, head);
		if (m->state == MUT_APPLYING && m->confirmed != NULL) {
			log_error("synced table %s: stopping while applying a write that %s accepted "
			          "(%s); journal entry %lld settles it",
			          m->st->qualified, api_name(m->st->api), m->ids ? m->ids : "",
			          (long long)m->intent_id);
			if (m->op == OP_INSERT && m->answer_ids != NULL &&
			    !settle_journal_answer(sy->journal, m->intent_id, m->st->database,
			                           m->answer_ids))
				log_error("synced table %s: the API's answer (%s) could not be written "
				          "to the journal file",
				          m->st->qualified, m->answer_ids);
		} else if (m->state == MUT_CALLING_API) {
			log_error("synced table %s: stopping while %s is answering a %s of %d row(s); "
			          "its outcome is unknown, journal entry %lld settles it",
			          m->st->qualified, api_name(m->st->api), stmt_op_str(m->op), m->nrows,
			          (long long)m->intent_id);
		}
		if (m->mc != NULL) {
			m->mc->client->hook_state = NULL;
			free(m->mc);
			m->mc = NULL;
		}
		m->conn_broken = true;
		mutation_finish(m);
	}
	/* the sync worker first: it borrows the catalog, the APIs and the table mappings */
	sync_free(sy->sync);
	sy->sync = NULL;
	list_for_each_safe(it, tmp, &sy->idle_conns) mconn_free(list_entry(it, struct mconn, head));
	settle_free(sy->settle);
	journal_close(sy->journal);
	if (sy->cat != NULL)
		catalog_free(sy->cat);
	if (sy->cl != NULL)
		classifier_free(sy->cl);
	for (int i = 0; i < sy->ntables; i++) {
		struct synced_table *st = &sy->tables[i];
		if (st->at_ready)
			api_table_free(&st->at);
		free(st->database);
		free(st->schema);
		free(st->table);
		free(st->qualified);
	}
	free(sy->tables);
	free(sy->sync_confs);
	for (int i = 0; i < sy->napis; i++)
		if (sy->apis[i] != NULL)
			api_free(sy->apis[i]);
	free(sy->apis);
	free(sy->api_active);
	free(sy->api_cap);
	if (sy->http != NULL)
		http_engine_free(sy->http);
	if (sy->cfg != NULL)
		config_free(sy->cfg);
	free(sy);
	b->synced = NULL;
}

void synced_reload(struct bouncer *b)
{
	struct synced *sy = b->synced;

	if (sy != NULL && !list_empty(&sy->mutations)) {
		log_info("synced tables: reload waits for %zu write%s in flight",
		         list_count(&sy->mutations), list_count(&sy->mutations) == 1 ? "" : "s");
		sy->reload_pending = true;
		return;
	}
	/* the new set-up is built beside the old one, which stays if the new one cannot be made */
	b->synced = NULL;
	if (!synced_start(b)) {
		b->synced = sy;
		if (sy != NULL) {
			b->hook.inspect = hook_inspect;
			b->hook.stream_needles = classifier_setting_needles();
			b->hook.client_closed = hook_client_closed;
			b->hook.ctx = sy;
		}
		log_error(
		        "synced tables: RELOAD failed, the previous [apis] and [synced_tables] stay "
		        "in force; see the messages above");
		return;
	}
	{
		struct synced *fresh = b->synced;
		b->synced = sy;
		synced_stop(b);
		b->synced = fresh;
		if (fresh != NULL) {
			b->hook.inspect = hook_inspect;
			b->hook.stream_needles = classifier_setting_needles();
			b->hook.client_closed = hook_client_closed;
			b->hook.ctx = fresh;
		}
	}
}

void synced_shutdown(struct bouncer *b)
{
	struct list *pit, *cit;

	/* clients that are still connected: their hook state goes with the process */
	list_for_each(pit, &b->pools)
	{
		struct pool *pool = list_entry(pit, struct pool, head);
		struct list *lists[] = {&pool->active_clients, &pool->waiting_clients,
		                        &pool->login_clients};
		for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++) {
			list_for_each(cit, lists[i])
			{
				struct conn *c = list_entry(cit, struct conn, head);
				if (c->hook_state != NULL)
					hook_client_closed(b->synced, c);
			}
		}
	}
	synced_stop(b);
}

int synced_in_flight(struct bouncer *b)
{
	return synced_in_flight_db(b, NULL);
}

int synced_in_flight_db(struct bouncer *b, const char *db)
{
	struct list *it;
	int n = 0;

	if (b->synced == NULL)
		return 0;
	list_for_each(it, &b->synced->mutations)
	{
		const struct mutation *m = list_entry(it, struct mutation, head);
		if (db == NULL || db[0] == '\0' || strcmp(m->st->database, db) == 0)
			n++;
	}
	return n;
}

/* ---- admin console views --------------------------------------------------------------- */

const char *const synced_tables_columns[] = {
        "database",   "table",     "api",         "object",        "state",
        "inserts",    "updates",   "deletes",     "rejected",      "error",
        "sync_state", "last_sync", "sync_lag_s",  "synced_rows",   "backfill_rows",
        "backfill_total", NULL,
};

void synced_show_tables(struct bouncer *b, synced_row_cb cb, void *arg)
{
	struct synced *sy = b->synced;
	char num[4][24];

	if (sy == NULL)
		return;
	for (int i = 0; i < sy->ntables; i++) {
		struct synced_table *st = &sy->tables[i];
		struct catalog_table *ct =
		        catalog_find(sy->cat, st->database, st->schema, st->table);
		const char *vals[16];
		struct sync_view sv;
		vals[0] = st->database;
		vals[1] = st->qualified;
		vals[2] = api_name(st->api);
		vals[3] = st->at.object;
		vals[4] = ct ? catalog_state_str(ct->state) : "unknown";
		snprintf(num[0], sizeof(num[0]), "%llu",
		         ct ? (unsigned long long)ct->inserts : 0ULL);
		snprintf(num[1], sizeof(num[1]), "%llu",
		         ct ? (unsigned long long)ct->updates : 0ULL);
		snprintf(num[2], sizeof(num[2]), "%llu",
		         ct ? (unsigned long long)ct->deletes : 0ULL);
		snprintf(num[3], sizeof(num[3]), "%llu",
		         ct ? (unsigned long long)ct->rejected : 0ULL);
		vals[5] = num[0];
		vals[6] = num[1];
		vals[7] = num[2];
		vals[8] = num[3];
		vals[9] = ct && ct->error[0] ? ct->error : NULL;
		sync_view(sy->sync, i, &sv);
		if (vals[9] == NULL && sv.error[0])
			vals[9] = sv.error;
		vals[10] = sv.state;
		vals[11] = sv.last_sync[0] ? sv.last_sync : NULL;
		vals[12] = sv.lag[0] ? sv.lag : NULL;
		vals[13] = sv.synced_rows;
		vals[14] = sv.backfill_rows;
		vals[15] = sv.backfill_total[0] ? sv.backfill_total : NULL;
		cb(arg, 16, vals);
	}
}

const char *const synced_mutations_columns[] = {
        "client", "database", "table",    "operation",   "rows",       "api",        "state",
        "age",    "outcome",  "sqlstate", "http_status", "request_id", "latency_us", NULL,
};

void synced_show_mutations(struct bouncer *b, synced_row_cb cb, void *arg)
{
	struct synced *sy = b->synced;
	struct list *it;

	if (sy == NULL)
		return;
	list_for_each(it, &sy->mutations)
	{
		struct mutation *m = list_entry(it, struct mutation, head);
		char client[32], rows[16], age[32];
		const char *vals[13] = {NULL};
		snprintf(client, sizeof(client), "%llu",
		         m->mc ? (unsigned long long)m->mc->client->id : 0ULL);
		snprintf(rows, sizeof(rows), "%d", m->nrows);
		snprintf(age, sizeof(age), "%.3f",
		         (double)(bouncer_now_usec() - m->started) / 1000000.0);
		vals[0] = m->mc ? client : NULL;
		vals[1] = m->st->database;
		vals[2] = m->st->qualified;
		vals[3] = stmt_op_str(m->op);
		vals[4] = rows;
		vals[5] = api_name(m->st->api);
		vals[6] = mut_state_str(m->state);
		vals[7] = age;
		cb(arg, 13, vals);
	}
	history_show(b->history, cb, arg);
}

const char *const synced_apis_columns[] = {
        "name",   "type",           "base_url", "in_flight",   "queued", "requests",
        "errors", "avg_latency_us", "auth",     "token_state", "usage",  NULL,
};

void synced_show_apis(struct bouncer *b, synced_row_cb cb, void *arg)
{
	struct synced *sy = b->synced;

	if (sy == NULL)
		return;
	for (int i = 0; i < sy->napis; i++) {
		struct api_stats st;
		char n[5][24], usage[48];
		const char *vals[11];
		api_get_stats(sy->apis[i], &st);
		snprintf(n[0], sizeof(n[0]), "%d", st.in_flight);
		snprintf(n[1], sizeof(n[1]), "%d", st.queued);
		snprintf(n[2], sizeof(n[2]), "%lld", (long long)st.requests);
		snprintf(n[3], sizeof(n[3]), "%lld", (long long)st.errors);
		snprintf(n[4], sizeof(n[4]), "%lld", (long long)st.avg_latency_usec);
		if (st.usage_used >= 0)
			snprintf(usage, sizeof(usage), "%lld/%lld", (long long)st.usage_used,
			         (long long)st.usage_max);
		vals[0] = st.name;
		vals[1] = st.type;
		vals[2] = api_connector(sy->apis[i])->base_url;
		vals[3] = n[0];
		vals[4] = n[1];
		vals[5] = n[2];
		vals[6] = n[3];
		vals[7] = n[4];
		vals[8] = st.auth;
		vals[9] = st.token_state;
		vals[10] = st.usage_used >= 0 ? usage : NULL;
		cb(arg, 11, vals);
	}
}

/* Unsettled intents as the settler's last pass saw them; -1 without synced tables. */
int synced_journal_backlog(struct bouncer *b)
{
	return b->synced != NULL ? settle_pending(b->synced->settle) : -1;
}

const char *const synced_journal_columns[] = {
        "id",         "database", "table", "operation", "keys", "state", "age", "attempts",
        "last_error", "owner",    "overdue", NULL,
};

void synced_show_journal(struct bouncer *b, synced_row_cb cb, void *arg)
{
	if (b->synced != NULL)
		settle_show(b->synced->settle, cb, arg);
}

bool synced_journal_command(struct bouncer *b, const char *arg, char *msg, size_t size)
{
	char verb[16], id[32], word[16];
	int n;

	if (b->synced == NULL) {
		snprintf(msg, size, "no synced tables are configured");
		return false;
	}
	n = sscanf(arg, "%15s %31s %15s", verb, id, word);
	if (n == 2 && strcasecmp(verb, "retry") == 0)
		return settle_retry(b->synced->settle, id, msg, size);
	if (n >= 2 && strcasecmp(verb, "giveup") == 0) {
		if (n != 3 || strcasecmp(word, "confirm") != 0) {
			snprintf(msg, size,
			         "JOURNAL GIVEUP drops a write unsettled, so the table may differ from "
			         "the API: say JOURNAL GIVEUP %s CONFIRM",
			         id);
			return false;
		}
		return settle_give_up(b->synced->settle, id, msg, size);
	}
	snprintf(msg, size, "usage: JOURNAL RETRY <id> | JOURNAL GIVEUP <id> CONFIRM");
	return false;
}

/* ---- admin console commands ------------------------------------------------------------ */

const char *synced_sync_command(struct bouncer *b, const char *name, bool backfill,
                                uint64_t conn_id, bool *wait)
{
	*wait = false;
	if (b->synced == NULL || b->synced->sync == NULL)
		return "no synced tables";
	return sync_command(b->synced->sync, name, backfill, conn_id, wait);
}

void synced_forget_admin(struct bouncer *b, uint64_t conn_id)
{
	if (b->synced != NULL)
		sync_forget_waiter(b->synced->sync, conn_id);
}
