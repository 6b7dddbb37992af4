/*
 * hook — the hook on the client's messages (include/mutation/hook.h): which messages start a
 * synced write, and the per-client state that lives while one is in flight or being collected.
 *
 * Invariants: a client has at most one mutation in flight, and its relay is paused meanwhile; a
 * client that went away does not stop its mutation.
 */
#include "mutation/hook.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "conn.h"
#include "control.h"
#include "mutation/answer.h"
#include "mutation/catalog.h"
#include "mutation/classifier.h"
#include "mutation/extended.h"
#include "mutation/mixed.h"
#include "mutation/pipeline.h"
#include "pool.h"
#include "prepared.h"
#include "proto.h"
#include "sbuf.h"

void mc_multi_free(struct mut_client *mc)
{
	for (int i = 0; i < mc->nmulti; i++)
		free(mc->multi[i]);
	free(mc->multi);
	mc->multi = NULL;
	mc->nmulti = mc->imulti = 0;
	mc->tail_off = 0;
}

/*
 * Starts the next write of a query string of several. True when it runs (its end goes on);
 * false when it was answered at once (error and ReadyForQuery sent, the string is over).
 */
bool mc_multi_next(struct synced *sy, struct mut_client *mc)
{
	struct stmt_class sc;
	const char *sql;

	mc->imulti++;
	sql = mc->multi[mc->imulti];
	if (!hook_classify(sy, mc->client, sql, &sc) || sc.verdict == STMT_PASS) {
		answer_now(mc->client, "XX000", "a statement of the query string changed its kind",
		           NULL, NULL, NULL);
		return false;
	}
	sc.nstatements = 1;
	return hook_begin_mutation(sy, mc->client, &sc, sql, NULL) && mc->m != NULL;
}

struct mut_client *mc_get(struct conn *c)
{
	struct mut_client *mc = c->hook_state;

	if (mc == NULL) {
		mc = calloc(1, sizeof(*mc));
		if (mc == NULL)
			return NULL;
		mc->client = c;
		list_init(&mc->cat_wait);
		c->hook_state = mc;
	}
	return mc;
}

void hook_take_waiters(struct synced *sy, struct list *out)
{
	while (!list_empty(&sy->cat_waiters)) {
		struct list *it = list_first(&sy->cat_waiters);
		list_del(it);
		list_append(out, it);
	}
}

void hook_resume_waiters(struct list *waiters)
{
	/* one at a time: a resumed client may run its query, or close, before the next */
	while (!list_empty(waiters)) {
		struct mut_client *mc =
		        list_entry(list_first(waiters), struct mut_client, cat_wait);
		struct conn *c = mc->client;

		list_del(&mc->cat_wait);
		mc->cat_waiting = false;
		client_resume(c);
	}
}

/*
 * The query waits while the synced tables of the client's database are being prepared: until
 * then the catalog cannot tell a synced write from an ordinary statement (a table of the same
 * name in another schema), and a write would find its table not ready.
 */
static enum hook_verdict wait_for_catalog(struct synced *sy, struct conn *c)
{
	struct mut_client *mc = mc_get(c);

	if (mc == NULL) {
		answer_now(c, "53200", "out of memory", NULL, NULL, NULL);
		return HOOK_CONSUME;
	}
	mc->cat_waiting = true;
	list_append(&sy->cat_waiters, &mc->cat_wait);
	return HOOK_PAUSE;
}

/*
 * Whether a new synced write of c waits for a RELOAD that waits for the writes in flight
 * (synced_reload()): admitted, it would keep the set-up busy, and under a steady stream of
 * writes the RELOAD would never take effect. A client inside a transaction block goes on: its
 * transaction may hold a lock that a write in flight waits for.
 */
static bool reload_holds(const struct synced *sy, struct conn *c)
{
	return sy->reload_pending && client_txn_status(c) == 'I';
}

/*
 * Holds c for the RELOAD, which offers its write to the new set-up; a catalog run that ends
 * meanwhile offers it again to this one, which holds it again.
 */
static enum hook_verdict wait_for_reload(struct synced *sy, struct conn *c)
{
	if (!sy->reload_holds) {
		sy->reload_holds = true;
		log_info("synced tables: new writes wait until the RELOAD is applied");
	}
	return wait_for_catalog(sy, c);
}

/*
 * Whether pkt is a Bind or Describe that may name one of the client's own statements (a synced
 * write it prepared before): one that does needs the catalog as its Parse did. Incomplete, it
 * cannot be told yet.
 */
static bool may_name_own(const struct conn *c, const struct sbuf_pkt *pkt)
{
	const char *stmt = NULL, *portal = NULL;

	if ((pkt->type != PQMSG_BIND && pkt->type != PQMSG_DESCRIBE) || ps_own_count(c) == 0)
		return false;
	if (!pkt->complete)
		return true;
	return proto_parse_msg_names(pkt->type, pkt->body, pkt->body_len, &stmt, &portal) &&
	       stmt != NULL && ps_own_find(c, stmt) != NULL;
}

/* Drops the per-client state once nothing needs it: back to the fast path. */
void mc_release_if_idle(struct conn *c)
{
	struct mut_client *mc = c->hook_state;

	if (mc == NULL || mc->m != NULL || mc->cat_waiting || mc->held_cancelled || mc->answered ||
	    mc->ext.phase != EXT_NONE || ps_own_count(c) > 0 || mc->multi != NULL ||
	    mc->mixed != NULL || mc->path_session_set || mc->path_local_set || mc->describe != NULL)
		return;
	ext_reset(&mc->ext);
	free(mc);
	c->hook_state = NULL;
}

/* ---- the client's search_path ---- */

const char *hook_search_path(struct conn *c)
{
	struct mut_client *mc = c->hook_state;

	if (mc != NULL && mc->path_local_set && client_txn_status(c) == 'I') {
		/* the block that ran SET LOCAL is over */
		free(mc->path_local);
		mc->path_local = NULL;
		mc->path_local_set = false;
	}
	if (mc != NULL && mc->path_local_set && mc->path_local != NULL)
		return mc->path_local;
	if (mc != NULL && mc->path_session_set && mc->path_session != NULL)
		return mc->path_session;
	return param_get(&c->params, "search_path");
}

static bool path_shadowed(void *arg, const char *database, const char *schema, const char *table)
{
	struct synced *sy = arg;

	return catalog_name_taken(sy->cat, database, schema, table);
}

bool hook_classify(struct synced *sy, struct conn *c, const char *sql, struct stmt_class *sc)
{
	struct classifier_path path = {
	        .search_path = hook_search_path(c),
	        .user = c->pool->server_user ? c->pool->server_user : c->pool->user_name,
	        .shadowed = path_shadowed,
	        .arg = sy,
	};

	return classifier_classify_in(sy->cl, c->pool->db_name, &path, sql, sc);
}

/*
 * Follows the client's SET/RESET of search_path in sql[0..len) (NUL-terminated at len). A SET
 * LOCAL, or a SET inside a transaction block, counts until the block ends; the transaction
 * block's fate is not followed (a SET undone by ROLLBACK still counts).
 */
static void follow_search_path(struct conn *c, const char *sql, size_t len)
{
	char value[1024];
	bool local;
	enum classifier_path_change ch =
	        classifier_path_change(sql, len, value, sizeof(value), &local);
	struct mut_client *mc;
	char *v = NULL;

	if (ch == CL_PATH_NONE)
		return;
	mc = mc_get(c);
	if (mc == NULL || (ch == CL_PATH_SET && (v = strdup(value)) == NULL))
		return; /* out of memory: the login value stays */
	if (local || client_txn_status(c) != 'I') {
		free(mc->path_local);
		mc->path_local = v;
		mc->path_local_set = true;
		if (local)
			return;
		v = v != NULL ? strdup(v) : NULL;
		if (ch == CL_PATH_SET && v == NULL)
			return;
	}
	free(mc->path_session);
	mc->path_session = v;
	mc->path_session_set = true;
}

/*
 * The checks every synced write passes before the pipeline starts. Returns true when the
 * mutation was started (the answer comes later); false when it was answered at once (answer_now
 * already queued the error).
 */
bool hook_begin_mutation(struct synced *sy, struct conn *c, const struct stmt_class *sc,
                         const char *sql, struct ext_seq *ext)
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
		/* a simple query's statements come here one by one: this is a Parse of several */
		answer_now(c, "42601", "cannot insert multiple commands into a prepared statement",
		           NULL, NULL, NULL);
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

/*
 * True when the query string sql starts with its nwrites synced writes and every statement after
 * them is an ordinary one (relayed as is): such a string runs its writes here and the rest on
 * the server, as one Query with the writes blanked out. A string with an ordinary statement
 * before a write runs statement by statement instead (mixed.c).
 */
static bool writes_then_ordinary(struct synced *sy, struct conn *c, const char *sql, int nwrites)
{
	int starts[64], lens[64];
	int n = classifier_split(sql, starts, lens, 64);

	if (n < 2 || n > 64 || nwrites < 1 || nwrites >= n)
		return false;
	for (int i = 0; i < n; i++) {
		struct stmt_class sc;
		char *one = strndup(sql + starts[i], (size_t)lens[i]);
		bool ok = one != NULL && hook_classify(sy, c, one, &sc) &&
		          (i < nwrites ? sc.verdict == STMT_MUTATION : sc.verdict == STMT_PASS);
		free(one);
		if (!ok)
			return false;
	}
	return true;
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
	follow_search_path(c, sql, pkt->body_len - 1);
	if (!classifier_quick_check(sy->cl, c->pool->db_name, sql, pkt->body_len - 1))
		return HOOK_PASS;
	if (!hook_classify(sy, c, sql, &sc) || sc.verdict == STMT_PASS)
		return HOOK_PASS;
	if (!client_server_idle(c))
		return HOOK_WAIT_IDLE;
	if (sc.verdict == STMT_MUTATION && reload_holds(sy, c))
		return wait_for_reload(sy, c);
	if (sc.verdict == STMT_MUTATION && sc.nstatements > 1 && sc.nmutations < sc.nstatements &&
	    !writes_then_ordinary(sy, c, sql, sc.nmutations)) {
		/* an ordinary statement before a write: the string runs in order (mixed.c) */
		return mixed_start(sy, c, sql, &sc);
	}
	if (sc.verdict == STMT_MUTATION && sc.nstatements > 1) {
		/*
		 * Several writes of synced tables, one after another, answered as one query;
		 * ordinary statements after them go on to the server as the rest of the same query.
		 */
		struct mut_client *mc = mc_get(c);
		int starts[64], lens[64];
		int n = classifier_split(sql, starts, lens, 64);
		if (n > sc.nmutations && n <= 64) {
			/* only the writes are run here */
			n = sc.nmutations;
			if (mc != NULL)
				mc->tail_off = (size_t)starts[n];
		}
		if (mc == NULL || n < 1 || n > 64) {
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
				mc_multi_free(mc);
			}
		}
		if (mc->multi == NULL) {
			mc->tail_off = 0;
			answer_now(c, "53200", "out of memory", NULL, NULL, NULL);
			mc_release_if_idle(c);
			return HOOK_CONSUME;
		}
		mc->nmulti = n;
		mc->imulti = 0;
		if (!hook_classify(sy, c, mc->multi[0], &sc)) {
			mc_multi_free(mc);
			answer_now(c, "53200", "out of memory", NULL, NULL, NULL);
			mc_release_if_idle(c);
			return HOOK_CONSUME;
		}
		sc.nstatements = 1;
		sql = mc->multi[0];
	}
	if (!hook_begin_mutation(sy, c, &sc, sql, NULL)) {
		struct mut_client *mc = c->hook_state;
		if (mc != NULL)
			mc_multi_free(mc);
		mc_release_if_idle(c);
		return HOOK_CONSUME;
	}
	return HOOK_PAUSE;
}

/*
 * The message that was held when its client's CancelRequest came, shown again: it does not run.
 * PostgreSQL's answer to a statement cancelled before it ends: 57014, then ReadyForQuery (a
 * transaction block is aborted: the error is raised on the client's server); in an extended
 * batch the error skips the rest up to Sync, whose ReadyForQuery ends the batch.
 */
static enum hook_verdict drop_cancelled(struct conn *c, struct mut_client *mc,
                                        const struct sbuf_pkt *pkt)
{
	static const char msg[] = "canceling statement due to user request";

	if (pkt->too_big) {
		/* refused by the core as too big: it does not run either */
		mc->held_cancelled = false;
		mc_release_if_idle(c);
		return HOOK_WAIT;
	}
	if (!pkt->complete)
		return HOOK_WAIT;
	/* the answers to what the client sent before come first */
	if (!client_server_idle(c))
		return HOOK_WAIT_IDLE;
	mc->held_cancelled = false;
	slog_debug(c, "held %c message cancelled", pkt->type);
	if (pkt->type == PQMSG_QUERY) {
		answer_now(c, "57014", msg, NULL, NULL, NULL);
		mc_release_if_idle(c);
		return HOOK_CONSUME;
	}
	ext_begin(c, mc);
	if (mc->ext.phase != EXT_SKIPPING)
		answer_now(c, "57014", msg, NULL, NULL, NULL); /* and skip to Sync */
	return HOOK_CONSUME;
}

enum hook_verdict hook_inspect(void *ctx, struct conn *c, const struct sbuf_pkt *pkt)
{
	struct synced *sy = ctx;
	struct mut_client *mc = c->hook_state;
	const char *stmt = NULL, *portal = NULL;

	if (mc != NULL) {
		if (mc->m != NULL || mc->describe != NULL || mc->cat_waiting)
			return HOOK_PAUSE;
		if (mc->held_cancelled)
			return drop_cancelled(c, mc, pkt);
		if (mc->mixed != NULL)
			return mixed_step(sy, c, mc);
		if (mc->answered) {
			size_t tail = mc->tail_off;
			mc->answered = false;
			mc->tail_off = 0;
			mc_release_if_idle(c);
			if (tail > 0 && pkt->type == PQMSG_QUERY && pkt->complete &&
			    tail < pkt->body_len) {
				/*
				 * The writes at the head of the string are done: the server runs
				 * the rest, and its ReadyForQuery ends the string. The Query is the
				 * client's own (held in its buffer while paused), with the writes'
				 * text turned into blanks: same length, nothing to copy.
				 */
				memset((uint8_t *)pkt->body, ' ', tail);
				return HOOK_PASS;
			}
			return HOOK_CONSUME;
		}
		if (mc->ext.phase != EXT_NONE)
			return ext_packet(sy, c, mc, pkt);
	}
	if (c->admin || c->pool == NULL)
		return HOOK_PASS;
	/* a paused pool holds synced writes back like any other query: the core queues the client
	 * for a server, and the packet comes back here once the pool is resumed */
	if (control_pool_paused(c->pool))
		return HOOK_PASS;
	if ((pkt->type == PQMSG_QUERY || pkt->type == PQMSG_PARSE || may_name_own(c, pkt)) &&
	    catalog_db_pending(sy->cat, c->pool->db_name))
		return wait_for_catalog(sy, c);
	switch (pkt->type) {
	case PQMSG_QUERY:
		return inspect_query(sy, c, pkt);
	case PQMSG_PARSE: {
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
		ps_own_drop(c, stmt); /* re-prepared under the same name ("" too) */
		follow_search_path(c, sql, sql_len);
		if (!classifier_quick_check(sy->cl, c->pool->db_name, sql, sql_len) ||
		    !hook_classify(sy, c, sql, &sc) || sc.verdict == STMT_PASS) {
			mc_release_if_idle(c);
			return HOOK_PASS;
		}
		if (sc.verdict == STMT_MUTATION && reload_holds(sy, c))
			return wait_for_reload(sy, c);
		break;
	}
	case PQMSG_BIND:
	case PQMSG_CLOSE:
	case PQMSG_DESCRIBE:
		if (ps_own_count(c) == 0 || !pkt->complete ||
		    !proto_parse_msg_names(pkt->type, pkt->body, pkt->body_len, &stmt, &portal) ||
		    stmt == NULL || ps_own_find(c, stmt) == NULL)
			return pkt->complete || ps_own_count(c) == 0 ? HOOK_PASS : HOOK_WAIT;
		if (pkt->type == PQMSG_BIND && reload_holds(sy, c))
			return wait_for_reload(sy, c);
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
	ext_begin(c, mc);
	return ext_packet(sy, c, mc, pkt);
}

bool hook_cancel(void *ctx, struct conn *c)
{
	struct mut_client *mc = c->hook_state;

	(void)ctx;
	if (mc != NULL && mc->cat_waiting) {
		/*
		 * Held for the catalog or a RELOAD: it has not started, so it does not run. The
		 * held message is dropped once shown again (after the server's answers to what the
		 * client sent before it, if any).
		 */
		list_del(&mc->cat_wait);
		mc->cat_waiting = false;
		mc->held_cancelled = true;
		client_resume(c);
		return true;
	}
	if (mc == NULL || mc->m == NULL)
		return false; /* nothing of ours runs: the client's server gets it */
	mutation_cancel(mc->m);
	return true;
}

void hook_client_closed(void *ctx, struct conn *c)
{
	struct mut_client *mc = c->hook_state;

	(void)ctx;
	if (mc == NULL)
		return;
	if (mc->cat_waiting) {
		list_del(&mc->cat_wait);
		mc->cat_waiting = false;
	}
	if (mc->m != NULL) {
		/*
		 * Nobody waits for the answer: a write whose request has not left ends as if
		 * cancelled (nothing sent, its transaction rolled back); one already sent goes on
		 * to its end, applied whole or settled.
		 */
		struct mutation *m = mc->m;
		m->mc = NULL;
		mc->m = NULL;
		mutation_cancel(m);
	}
	ext_describe_client_gone(mc);
	ext_reset(&mc->ext);
	mc_multi_free(mc);
	mixed_free(mc->mixed);
	free(mc->path_session);
	free(mc->path_local);
	c->hook_state = NULL;
	free(mc);
}
