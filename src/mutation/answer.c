/*
 * answer — what a synced write sends back: results, PostgreSQL's errors, the API's errors mapped
 * to SQLSTATEs (DESIGN.md §3), and errors raised through the client's server inside a
 * transaction block (include/mutation/answer.h).
 */
#include "mutation/answer.h"

#include <stdio.h>
#include <string.h>

#include "api/api.h"
#include "client.h"
#include "conn.h"
#include "mutation/hook.h"
#include "mutation/pipeline.h"
#include "pktbuf.h"
#include "proto.h"

/* ---- responses ------------------------------------------------------------------------- */

void answer_notices(const struct mutation *m, struct pktbuf *pb)
{
	char msg[256];

	if (m->cancel_late) {
		/* the client is told why its cancel did not stop the write */
		snprintf(msg, sizeof(msg),
		         "cancel request came too late: the %s was already on its way to %s",
		         stmt_op_str(m->op), api_name(m->st->api));
		pktbuf_write_notice(pb, "00000", msg);
	}
	if (m->escaped) {
		/* what the transaction block (or the string's implicit one) cannot hold back */
		snprintf(
		        msg, sizeof(msg),
		        m->in_block
		                ? "sent to %s outside the transaction: ROLLBACK will not undo it"
		        : m->in_batch
		                ? "sent to %s outside the transaction: an error later in the batch "
		                  "will not undo it"
		                : "sent to %s outside the transaction: an error later in the query "
		                  "string will not undo it",
		        api_name(m->st->api));
		pktbuf_write_notice(pb, "00000", msg);
	}
}

/*
 * ParseComplete, the statement's description, BindComplete: what precedes an extended
 * sequence's answer, in the order the client asked.
 */
void answer_ext_prefix(const struct mutation *m, struct pktbuf *pb)
{
	if (m->parse_complete)
		pktbuf_write_simple(pb, PQMSG_PARSE_COMPLETE);
	if (m->stmt_desc != NULL && !m->stmt_desc_after_bind)
		pktbuf_put_bytes(pb, m->stmt_desc, m->stmt_desc_len);
	if (m->bind_complete)
		pktbuf_write_simple(pb, PQMSG_BIND_COMPLETE);
	if (m->stmt_desc != NULL && m->stmt_desc_after_bind)
		pktbuf_put_bytes(pb, m->stmt_desc, m->stmt_desc_len);
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
bool answer_raise_on_server(struct conn *c, const struct pktbuf *err)
{
	struct pg_error e;
	struct pktbuf q;
	bool first = true;
	bool sent;

	if (err->len < 5 || !proto_parse_error(err->data + 5, err->len - 5, &e) ||
	    e.sqlstate == NULL || e.message == NULL)
		return false;
	/* a field holding the dollar-quote tag would end the DO body early */
	if (strstr(e.message, "$syncbouncer$") || (e.detail && strstr(e.detail, "$syncbouncer$")) ||
	    (e.hint && strstr(e.hint, "$syncbouncer$")))
		return false;
	pktbuf_init(&q, 65536);
	pktbuf_start_msg(&q, PQMSG_QUERY);
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
	sent = !pktbuf_failed(&q) && client_query_through_server(c, &q);
	pktbuf_free(&q);
	return sent;
}

void answer_send(struct mutation *m, struct pktbuf *pb)
{
	struct mut_client *mc = m->mc;

	if (mc == NULL)
		return;
	if (!m->no_ready)
		pktbuf_write_ready(pb, client_txn_status(mc->client));
	if (pktbuf_failed(pb) || !client_queue(mc->client, pb)) {
		client_close(mc->client, "could not send a synced-table write's answer");
		return;
	}
}

void mutation_set_error(struct mutation *m, const char *sqlstate, const char *msg,
                        const char *detail, const char *hint)
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
void mutation_set_pg_error(struct mutation *m, const PGresult *res)
{
	struct pg_error e;

	if (m->failed)
		return;
	if (PQresultStatus(res) == PGRES_PIPELINE_ABORTED) {
		/* skipped for an error before it in its flight, which its own callback keeps */
		mutation_set_error(m, "XX000",
		                   "a statement of a synced-table write was skipped after an error",
		                   NULL, NULL);
		return;
	}
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

void answer_row_description(struct pktbuf *pb, const PGresult *desc, int fmt)
{
	int n = PQnfields(desc);

	pktbuf_start_msg(pb, PQMSG_ROW_DESCRIPTION);
	pktbuf_put_u16(pb, (uint16_t)n);
	for (int i = 0; i < n; i++) {
		pktbuf_put_string(pb, PQfname(desc, i));
		pktbuf_put_u32(pb, PQftable(desc, i));
		pktbuf_put_u16(pb, (uint16_t)PQftablecol(desc, i));
		pktbuf_put_u32(pb, PQftype(desc, i));
		pktbuf_put_u16(pb, (uint16_t)PQfsize(desc, i));
		pktbuf_put_u32(pb, (uint32_t)PQfmod(desc, i));
		pktbuf_put_u16(pb, (uint16_t)(fmt < 0 ? PQfformat(desc, i) : fmt));
	}
	pktbuf_finish_msg(pb);
}

/* RowDescription, DataRows and CommandComplete of a result, as PostgreSQL would send them. */
void answer_write_result(struct pktbuf *pb, const struct mutation *m, const PGresult *desc,
                         const PGresult *res)
{
	int ncols = PQnfields(desc);
	bool returning = ncols > 0;

	if (m->extended) {
		answer_ext_prefix(m, pb);
		if (m->describe_portal && !returning) {
			pktbuf_start_msg(pb, PQMSG_NO_DATA);
			pktbuf_finish_msg(pb);
		}
	}
	if (returning && (!m->extended || m->describe_portal)) {
		answer_row_description(pb, desc, -1);
	}
	if (res != NULL && returning) {
		for (int r = 0; r < PQntuples(res); r++) {
			pktbuf_start_msg(pb, PQMSG_DATA_ROW);
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
	answer_notices(m, pb);
	pktbuf_write_command_complete(pb, PQcmdStatus((PGresult *)(res ? res : desc)));
}

/* ---- API errors → PostgreSQL errors (DESIGN.md §3) --------------------------------------- */

/* "." when text does not already end a sentence, so that two messages read as two sentences. */
static const char *sentence_end(const char *text)
{
	size_t n = strlen(text);

	return n == 0 || text[n - 1] == '.' || text[n - 1] == '!' || text[n - 1] == '?' ? "" : ".";
}

void answer_map_api_error(const struct api_error *ae, const char *api, const char *wr,
                          long long intent_id, struct api_error_answer *out)
{
	char *msg = out->message, *detail = out->detail, hint[128];
	const char *sqlstate = "XX000";
	const char *hintp = NULL;
	const char *what = "error";

	detail[0] = '\0';
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
	snprintf(msg, sizeof(out->message), "%s %s", api, what);
	if (ae->column[0] && !ae->value_unknown &&
	    (ae->cls == API_ERR_VALIDATION || ae->cls == API_ERR_REQUIRED ||
	     ae->cls == API_ERR_DUPLICATE))
		snprintf(detail, sizeof(out->detail), "Key (%s)=(%s) %s", ae->column,
		         ae->value_is_null ? "null" : ae->value,
		         ae->reason[0] ? ae->reason : ae->message);
	else if ((ae->cls == API_ERR_UNAVAILABLE || ae->cls == API_ERR_SERVER) &&
	         ae->nothing_written)
		snprintf(detail, sizeof(out->detail), "%s%s Nothing was written.", ae->message,
		         sentence_end(ae->message));
	else if (ae->cls == API_ERR_SERVER)
		snprintf(detail, sizeof(out->detail),
		         "%s%s The API may have applied the %s; nothing was written to the "
		         "database yet. It is journal entry %lld, settled by asking %s.",
		         ae->message, sentence_end(ae->message), wr, intent_id, api);
	else if (ae->cls == API_ERR_UNKNOWN_OUTCOME || ae->cls == API_ERR_BAD_ANSWER)
		snprintf(detail, sizeof(out->detail),
		         "%s%s The request was sent; whether %s applied the %s is unknown. Nothing "
		         "was written to the database yet: it is journal entry %lld, settled by "
		         "asking %s.",
		         ae->message, sentence_end(ae->message), api, wr, intent_id, api);
	else
		snprintf(detail, sizeof(out->detail), "%s", ae->message);
	if (ae->local && (ae->cls == API_ERR_VALIDATION || ae->cls == API_ERR_REQUIRED ||
	                  ae->cls == API_ERR_DUPLICATE)) {
		/* a value the request cannot carry: syncbouncer's refusal, not the API's verdict */
		sqlstate = "22023";
		snprintf(msg, sizeof(out->message), "row cannot be sent to %s", api);
	}
	if (ae->cls == API_ERR_ASSIGNED_ID) {
		snprintf(msg, sizeof(out->message), "%.200s", ae->message);
		snprintf(detail, sizeof(out->detail),
		         "Column \"%s\" holds the record id that %s assigns.", ae->column, api);
	}
	out->sqlstate = sqlstate;
	snprintf(out->hint, sizeof(out->hint), "%s", hintp != NULL ? hintp : "");
}

void mutation_set_api_error(struct mutation *m, const struct api_error *ae)
{
	struct api_error_answer a;
	char wr[512];
	const char *detail, *hintp;

	mutation_describe_write(m, wr, sizeof(wr));
	answer_map_api_error(ae, api_name(m->st->api), wr, (long long)m->intent_id, &a);
	detail = a.detail[0] ? a.detail : NULL;
	hintp = a.hint[0] ? a.hint : NULL;
	mutation_set_error(m, a.sqlstate, a.message, detail, hintp);
	if (ae->column[0]) {
		/* the column field of the ErrorResponse names the offending column */
		struct pg_error e;
		memset(&e, 0, sizeof(e));
		e.severity = "ERROR";
		e.sqlstate = a.sqlstate;
		e.message = a.message;
		e.detail = detail;
		e.hint = hintp;
		e.schema = m->st->schema;
		e.table = m->st->table;
		e.column = ae->column;
		pktbuf_reset(&m->err);
		pktbuf_write_error_fields(&m->err, &e);
	}
}

void answer_now(struct conn *c, const char *sqlstate, const char *msg, const char *detail,
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
	if (c->hook_state != NULL && ((struct mut_client *)c->hook_state)->ext.phase != EXT_NONE) {
		/* inside a batch: the rest is skipped up to Sync, which answers ReadyForQuery */
		ext_set_phase(&((struct mut_client *)c->hook_state)->ext, EXT_SKIPPING);
	} else if (c->hook_state != NULL && ((struct mut_client *)c->hook_state)->mixed != NULL) {
		/* a statement of a mixed query string: the string's end answers ReadyForQuery */
	} else if (answer_raise_on_server(c, &pb)) {
		pktbuf_free(&pb);
		return;
	} else {
		pktbuf_write_ready(&pb, client_txn_status(c));
	}
	if (!client_queue(c, &pb))
		client_close(c, "could not send an error");
	pktbuf_free(&pb);
}
