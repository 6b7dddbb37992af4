/*
 * mixed — a query string that mixes synced writes with ordinary statements
 * (include/mutation/mixed.h).
 *
 * The client's Query stays paused at its relay while the string runs; each time it is shown
 * again (the server has answered a part, or a write has ended) mixed_step() takes the next
 * step:
 *   START   get the client a server (transaction pooling); BEGIN when the client is not in a
 *           transaction block (the string's implicit transaction, own_block)
 *   RUN     the next run of ordinary statements goes to the server (SERVER), or the next write
 *           to the pipeline (WRITE); after the last statement or the first error: COMMIT or
 *           ROLLBACK of our block (END), or, inside the client's block, ReadyForQuery
 *   DONE    the answer to our COMMIT/ROLLBACK reached the client: the Query is consumed
 * Everything the server answers to the client's statements is relayed; the answers to our own
 * BEGIN/COMMIT/ROLLBACK (command tags) and every ReadyForQuery but the string's last are kept
 * (mixed_server_answer()), so that the client sees one Query's answer.
 *
 * Invariants: the client's server stays linked from START to the end (a transaction of ours
 * or the client's is open on it, or it owes us answers); the client is written to directly
 * (a write's answer, ReadyForQuery) only when its server has answered and relayed everything,
 * so nothing overtakes the relay; after an error nothing more runs and nothing more is sent
 * to an API.
 */
#include "mutation/mixed.h"

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "client.h"
#include "conn.h"
#include "mutation/answer.h"
#include "mutation/classifier.h"
#include "mutation/hook.h"
#include "mutation/pipeline.h"
#include "pktbuf.h"
#include "proto.h"
#include "sbuf.h"

enum mixed_phase {
	MX_START,
	MX_RUN,
	MX_SERVER, /* ordinary statements (or our BEGIN/ROLLBACK) run on the server */
	MX_WRITE,  /* a synced write runs in the pipeline */
	MX_END,    /* our COMMIT or ROLLBACK runs; its ReadyForQuery ends the string */
	MX_DONE,
};

/* What we sent the server, by which its answers are kept or relayed. */
enum mixed_sent {
	MXS_BEGIN,   /* answers kept */
	MXS_SEGMENT, /* the client's statements: relayed, but ReadyForQuery */
	MXS_ABORT,   /* aborts the client's block after a failed write: its error kept */
	MXS_END,     /* COMMIT/ROLLBACK: its error and ReadyForQuery relayed */
};

struct mixed_string {
	struct conn *client;
	char *sql;
	int n;
	int starts[MIXED_MAX_STATEMENTS], lens[MIXED_MAX_STATEMENTS];
	bool write[MIXED_MAX_STATEMENTS]; /* a synced write (else an ordinary statement) */
	int next;                         /* the next statement to run */
	enum mixed_phase phase;
	bool own_block;      /* our BEGIN holds the string's ordinary statements */
	bool failed;         /* an error ended the string */
	bool server_aborted; /* the server's transaction failed too (its error was relayed) */
	enum mixed_sent sent[4];
	int nsent; /* what the server still owes, oldest first */
	struct event *ev_resume;
};

bool mixed_in_client_block(const struct mixed_string *ms)
{
	return !ms->own_block;
}

void mixed_free(struct mixed_string *ms)
{
	if (ms == NULL)
		return;
	if (ms->ev_resume != NULL)
		event_free(ms->ev_resume);
	free(ms->sql);
	free(ms);
}

/* The string is over: the client's Query is consumed and the per-client state may go. */
static enum hook_verdict finish(struct conn *c, struct mut_client *mc)
{
	c->hook_answers = false;
	mixed_free(mc->mixed);
	mc->mixed = NULL;
	mc_release_if_idle(c);
	return HOOK_CONSUME;
}

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
	struct mixed_string *ms = arg;

	(void)fd;
	(void)what;
	if (ms->phase == MX_DONE)
		client_resume(ms->client); /* nothing more is written to it: no need to wait */
	else
		client_resume_when_idle(ms->client);
}

char *mixed_segment_text(const char *sql, const int *starts, const int *lens, int n, int from,
                         int to, bool utf8)
{
	size_t len = strlen(sql), o = 0;
	char *out = malloc(len + 1);
	int k = 0;

	if (out == NULL)
		return NULL;
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)sql[i];
		bool blank;

		while (k < n && (size_t)starts[k] + (size_t)lens[k] <= i)
			k++;
		blank = k < n && (k < from || k >= to) && i >= (size_t)starts[k];
		if (!blank || ch == '\n')
			out[o++] = (char)ch;
		else if (!utf8 || (ch & 0xc0) != 0x80)
			out[o++] = ' ';
	}
	out[o] = '\0';
	return out;
}

/* Whether the client's text is UTF-8 (PostgreSQL's spellings of it; unknown: the usual UTF8). */
static bool client_utf8(struct conn *c)
{
	const char *enc = param_get(&c->params, "client_encoding");
	char norm[16];
	size_t n = 0;

	if (enc == NULL)
		return true;
	for (; *enc && n + 1 < sizeof(norm); enc++)
		if (*enc != '-' && *enc != '_')
			norm[n++] = *enc;
	norm[n] = '\0';
	return strcasecmp(norm, "utf8") == 0 || strcasecmp(norm, "unicode") == 0;
}

/* Sends one Query of ours to the client's server. False: the client was closed. */
static bool send_query(struct mixed_string *ms, enum mixed_sent kind, const char *sql)
{
	struct conn *c = ms->client;
	struct pktbuf pb;
	bool ok;

	if (ms->nsent >= (int)(sizeof(ms->sent) / sizeof(ms->sent[0]))) {
		client_close(c, "query string: too many statements in flight");
		return false;
	}
	pktbuf_init(&pb, strlen(sql) + 64);
	pktbuf_write_query(&pb, sql);
	ok = client_query_on_server(c, &pb, 1);
	pktbuf_free(&pb);
	if (!ok) {
		client_close(c, "could not send a query string's statements to the server");
		return false;
	}
	ms->sent[ms->nsent++] = kind;
	return true;
}

bool mixed_server_answer(void *ctx, struct conn *c, const struct sbuf_pkt *pkt)
{
	struct mut_client *mc = c->hook_state;
	struct mixed_string *ms = mc != NULL ? mc->mixed : NULL;
	enum mixed_sent kind;

	(void)ctx;
	if (ms == NULL || ms->nsent == 0)
		return true;
	kind = ms->sent[0];
	switch (pkt->type) {
	case PQMSG_READY_FOR_QUERY:
		memmove(&ms->sent[0], &ms->sent[1], (size_t)(--ms->nsent) * sizeof(ms->sent[0]));
		if (kind == MXS_END) {
			/* the string's one ReadyForQuery; a release point as any other */
			c->hook_answers = false;
			ms->phase = MX_DONE;
			event_active(ms->ev_resume, EV_TIMEOUT, 1);
			return true;
		}
		if (ms->nsent == 0 && ms->phase == MX_SERVER) {
			ms->phase = MX_RUN;
			event_active(ms->ev_resume, EV_TIMEOUT, 1);
		}
		return false;
	case PQMSG_ERROR_RESPONSE:
		ms->failed = true;
		if (kind == MXS_SEGMENT || kind == MXS_ABORT)
			ms->server_aborted = true;
		return kind != MXS_ABORT;
	case PQMSG_COMMAND_COMPLETE:
		return kind == MXS_SEGMENT;
	default:
		return true; /* rows, notices, notifications */
	}
}

void mixed_write_done(struct mixed_string *ms, bool failed)
{
	ms->failed = ms->failed || failed;
	ms->phase = MX_RUN;
}

/* The string is over (all run, or an error): end our block, or answer ReadyForQuery. */
static enum hook_verdict end_string(struct mixed_string *ms, struct mut_client *mc)
{
	struct conn *c = ms->client;
	struct pktbuf pb;
	bool ok;

	if (ms->own_block) {
		if (!send_query(ms, MXS_END, ms->failed ? "ROLLBACK" : "COMMIT"))
			return HOOK_PAUSE;
		ms->phase = MX_END;
		return HOOK_PAUSE;
	}
	if (ms->failed && !ms->server_aborted) {
		/* a write failed inside the client's block: the block aborts, as in PostgreSQL */
		if (!send_query(ms, MXS_ABORT,
		                "DO $syncbouncer$BEGIN RAISE EXCEPTION USING ERRCODE = 'P0001', "
		                "MESSAGE = 'a synced write of the query string failed'; "
		                "END$syncbouncer$"))
			return HOOK_PAUSE;
		ms->server_aborted = true;
		ms->phase = MX_SERVER;
		return HOOK_PAUSE;
	}
	pktbuf_init(&pb, 16);
	pktbuf_write_ready(&pb, client_txn_status(c));
	ok = client_queue(c, &pb);
	pktbuf_free(&pb);
	if (!ok) {
		client_close(c, "could not send an answer");
		return HOOK_PAUSE;
	}
	return finish(c, mc);
}

enum hook_verdict mixed_step(struct synced *sy, struct conn *c, struct mut_client *mc)
{
	struct mixed_string *ms = mc->mixed;

	for (;;) {
		switch (ms->phase) {
		case MX_START:
			if (c->link == NULL)
				return HOOK_LINK;
			if (!client_server_idle(c))
				return HOOK_WAIT_IDLE;
			ms->own_block = client_txn_status(c) == 'I';
			c->hook_answers = true;
			if (ms->own_block && !send_query(ms, MXS_BEGIN, "BEGIN"))
				return HOOK_PAUSE;
			ms->phase = MX_RUN;
			break;
		case MX_RUN: {
			int i = ms->next, k;
			struct stmt_class sc;
			char *text;
			bool ok;

			if (ms->failed || i >= ms->n)
				return end_string(ms, mc);
			if (ms->write[i]) {
				ms->next++;
				ms->phase = MX_WRITE;
				text = strndup(ms->sql + ms->starts[i], (size_t)ms->lens[i]);
				/* again: a RELOAD may have come since the string began */
				if (text == NULL || !hook_classify(sy, c, text, &sc)) {
					free(text);
					answer_now(c, "53200", "out of memory", NULL, NULL, NULL);
					ms->failed = true;
					ms->phase = MX_RUN;
					break;
				}
				if (sc.verdict == STMT_PASS) {
					free(text);
					answer_now(
					        c, "XX000",
					        "a statement of the query string changed its kind",
					        NULL, NULL, NULL);
					ms->failed = true;
					ms->phase = MX_RUN;
					break;
				}
				sc.nstatements = 1;
				ok = hook_begin_mutation(sy, c, &sc, text, NULL);
				free(text);
				if (!ok) {
					/* refused at once: its error went out, the string ends */
					ms->failed = true;
					ms->phase = MX_RUN;
					break;
				}
				if (mc->m == NULL)
					break; /* over already: mixed_write_done() said how */
				return HOOK_PAUSE;
			}
			for (k = i; k < ms->n && !ms->write[k]; k++)
				;
			text = mixed_segment_text(ms->sql, ms->starts, ms->lens, ms->n, i, k,
			                          client_utf8(c));
			if (text == NULL) {
				answer_now(c, "53200", "out of memory", NULL, NULL, NULL);
				ms->failed = true;
				break;
			}
			ok = send_query(ms, MXS_SEGMENT, text);
			free(text);
			if (!ok)
				return HOOK_PAUSE;
			ms->next = k;
			ms->phase = MX_SERVER;
			return HOOK_PAUSE;
		}
		case MX_SERVER:
		case MX_WRITE:
		case MX_END:
			return HOOK_PAUSE; /* shown again before its time: wait on */
		case MX_DONE:
			return finish(c, mc);
		}
	}
}

/* Refuses the whole string before anything ran: error and ReadyForQuery. */
static enum hook_verdict refuse(struct conn *c, const char *sqlstate, const char *msg,
                                const char *hint)
{
	answer_now(c, sqlstate, msg, NULL, hint, NULL);
	mc_release_if_idle(c);
	return HOOK_CONSUME;
}

enum hook_verdict mixed_start(struct synced *sy, struct conn *c, const char *sql,
                              const struct stmt_class *sc)
{
	struct mixed_string *ms;
	struct mut_client *mc;
	int n, nwrites = 0;

	if (sc->transaction_control)
		return refuse(
		        c, "0A000",
		        "transaction control statements cannot be mixed with writes to synced "
		        "tables in one query string",
		        "Send BEGIN, COMMIT, ROLLBACK and SAVEPOINT as queries of their own.");
	if (sc->copy_from_client)
		return refuse(c, "0A000",
		              "COPY FROM STDIN cannot be mixed with writes to synced tables in one "
		              "query string",
		              "Send the COPY as a query of its own.");
	if (sc->deallocate)
		/* the pooler's own bookkeeping of prepared statements sees only whole queries */
		return refuse(
		        c, "0A000",
		        "DEALLOCATE cannot be mixed with writes to synced tables in one query "
		        "string",
		        "Send the DEALLOCATE as a query of its own.");
	if (client_txn_status(c) == 'E')
		return refuse(c, "25P02",
		              "current transaction is aborted, commands ignored until end of "
		              "transaction block",
		              NULL);
	ms = calloc(1, sizeof(*ms));
	mc = mc_get(c);
	if (ms == NULL || mc == NULL || (ms->sql = strdup(sql)) == NULL) {
		mixed_free(ms);
		return refuse(c, "53200", "out of memory", NULL);
	}
	ms->client = c;
	n = classifier_split(sql, ms->starts, ms->lens, MIXED_MAX_STATEMENTS);
	if (n < 1 || n > MIXED_MAX_STATEMENTS) {
		mixed_free(ms);
		return n > MIXED_MAX_STATEMENTS
		               ? refuse(c, "54000", "too many statements in one query string",
		                        "Send at most 64 statements in one query string.")
		               : refuse(c, "53200", "out of memory", NULL);
	}
	ms->n = n;
	ms->ev_resume = evtimer_new(sy->b->base, on_resume, ms);
	if (ms->ev_resume == NULL) {
		mixed_free(ms);
		return refuse(c, "53200", "out of memory", NULL);
	}
	for (int i = 0; i < n; i++) {
		char *one = strndup(sql + ms->starts[i], (size_t)ms->lens[i]);
		struct stmt_class one_sc;
		bool ok = one != NULL && hook_classify(sy, c, one, &one_sc);

		free(one);
		if (!ok) {
			mixed_free(ms);
			return refuse(c, "53200", "out of memory", NULL);
		}
		if (one_sc.verdict == STMT_REJECT) {
			/* a statement alone is refused where the string was not: refuse it whole */
			const struct synced_table *st =
			        one_sc.table >= 0 && one_sc.table < sy->ntables
			                ? &sy->tables[one_sc.table]
			                : NULL;
			mixed_free(ms);
			answer_now(c, one_sc.sqlstate, one_sc.message, one_sc.detail, one_sc.hint,
			           st);
			mc_release_if_idle(c);
			return HOOK_CONSUME;
		}
		ms->write[i] = one_sc.verdict == STMT_MUTATION;
		nwrites += ms->write[i];
	}
	slog_debug(c, "query string of %d statements, %d of them synced writes: run in order", n,
	           nwrites);
	mc->mixed = ms;
	return mixed_step(sy, c, mc);
}
