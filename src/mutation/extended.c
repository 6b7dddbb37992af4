/*
 * extended — extended-protocol batches that write synced tables (include/mutation/extended.h).
 */
#include "mutation/extended.h"

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
#include "pktbuf.h"
#include "pool.h"
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
	memset(e, 0, sizeof(*e));
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
		mc_drop_stmt(mc, name);
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
			prep_stmt_free(ps);
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
	if (stmt[0] != '\0' || (!e->parse && mc_find_stmt(mc, stmt) != NULL)) {
		struct prep_stmt *ps = mc_find_stmt(mc, stmt);
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
			pktbuf_write_simple(&pb, PQMSG_PARSE_COMPLETE);
		if (e->bind && !e->bind_sent)
			pktbuf_write_simple(&pb, PQMSG_BIND_COMPLETE);
		if (e->describe_stmt) {
			/* parameter types as the client declared them; undeclared ones as text */
			int n = count_params(e->sql);
			if (n < e->ntypes)
				n = e->ntypes;
			pktbuf_start_msg(&pb, PQMSG_PARAMETER_DESCRIPTION);
			pktbuf_put_u16(&pb, (uint16_t)n);
			for (int i = 0; i < n; i++)
				pktbuf_put_u32(&pb,
				               i < e->ntypes && e->types[i] ? e->types[i] : 25);
			pktbuf_finish_msg(&pb);
		}
		if (e->describe_stmt || e->describe_portal) {
			pktbuf_start_msg(&pb, PQMSG_NO_DATA);
			pktbuf_finish_msg(&pb);
		}
		if (e->close) {
			pktbuf_start_msg(&pb, PQMSG_CLOSE_COMPLETE);
			pktbuf_finish_msg(&pb);
		}
	}
	pktbuf_write_ready(&pb, client_txn_status(c));
	if (!client_queue(c, &pb))
		client_close(c, "could not send an answer");
	pktbuf_free(&pb);
}

/* Forgets the current group (statement, parameters, flags), keeping the batch's state. */
static void ext_new_group(struct ext_seq *e)
{
	bool ran = e->ran;
	enum ext_phase phase = e->phase == EXT_SKIPPING ? EXT_SKIPPING : EXT_COLLECTING;

	ext_reset(e);
	e->ran = ran;
	e->phase = phase;
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

	if (e->phase == EXT_SKIPPING || e->failed ||
	    ((!e->parse || e->parse_sent) && (!e->bind || e->bind_sent)))
		return;
	pktbuf_init(&pb, 64);
	if (e->parse && !e->parse_sent)
		pktbuf_write_simple(&pb, PQMSG_PARSE_COMPLETE);
	if (e->bind && !e->bind_sent)
		pktbuf_write_simple(&pb, PQMSG_BIND_COMPLETE);
	e->parse_sent = e->parse;
	e->bind_sent = e->bind;
	if (!client_queue(c, &pb))
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
enum hook_verdict ext_packet(struct synced *sy, struct conn *c, struct mut_client *mc,
                             const struct sbuf_pkt *pkt)
{
	struct ext_seq *e = &mc->ext;
	const char *stmt = NULL, *portal = NULL;

	if (!pkt->complete)
		return HOOK_WAIT;
	if (e->phase == EXT_SKIPPING && pkt->type != PQMSG_SYNC)
		return HOOK_CONSUME;
	switch (pkt->type) {
	case PQMSG_PARSE: {
		const char *sql;
		size_t sql_len;
		uint16_t n;
		struct stmt_class sc;
		if (e->phase == EXT_EXECUTED)
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
				pktbuf_write_simple(&pb, PQMSG_CLOSE_COMPLETE);
				if (!client_queue(c, &pb))
					client_close(c, "could not send an answer");
				pktbuf_free(&pb);
			}
			mc_drop_stmt(mc,
			             stmt); /* the server's statement of that name from now on */
			return ext_leave(c, mc);
		}
		ext_parse(sy, c, mc, pkt);
		return HOOK_CONSUME;
	}
	case PQMSG_BIND:
		if (e->phase == EXT_EXECUTED)
			ext_new_group(e);
		if (e->ran && !e->parse &&
		    proto_parse_msg_names(PQMSG_BIND, pkt->body, pkt->body_len, &stmt, &portal) &&
		    stmt != NULL && mc_find_stmt(mc, stmt) == NULL)
			return ext_leave(c, mc);
		if (!e->failed)
			ext_bind(sy, c, mc, pkt);
		return HOOK_CONSUME;
	case PQMSG_DESCRIBE:
		if (pkt->body_len >= 1 && pkt->body[0] == PQMSG_TARGET_PORTAL)
			e->describe_portal = true;
		else
			e->describe_stmt = true;
		return HOOK_CONSUME;
	case PQMSG_EXECUTE:
		if (e->failed) {
			answer_now(c, e->sqlstate, e->message, NULL, NULL, NULL);
			return HOOK_CONSUME;
		}
		if (e->sql == NULL || !e->bind) {
			answer_now(c, "34000", "portal does not exist", NULL, NULL, NULL);
			return HOOK_CONSUME;
		}
		if (!hook_begin_mutation(sy, c, &e->sc, e->sql, e))
			return HOOK_CONSUME;
		return HOOK_PAUSE;
	case PQMSG_CLOSE:
		if (proto_parse_msg_names(PQMSG_CLOSE, pkt->body, pkt->body_len, &stmt, &portal) &&
		    stmt != NULL)
			mc_drop_stmt(mc, stmt);
		e->close = true;
		return HOOK_CONSUME;
	case PQMSG_FLUSH:
		ext_flush(c, e);
		return HOOK_CONSUME;
	case PQMSG_SYNC:
		break;
	default:
		/* not part of an extended batch: give the rest to the server */
		return ext_leave(c, mc);
	}
	/* Sync */
	if (e->ran || e->phase == EXT_SKIPPING) {
		struct pktbuf pb;
		pktbuf_init(&pb, 64);
		pktbuf_write_ready(&pb, client_txn_status(c));
		if (!client_queue(c, &pb))
			client_close(c, "could not send an answer");
		pktbuf_free(&pb);
	} else {
		ext_answer_now(c, e);
	}
	ext_reset(e);
	mc_release_if_idle(c);
	return HOOK_CONSUME;
}
