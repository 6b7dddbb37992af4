/*
 * pgc — one asynchronous libpq connection on the libevent loop (see include/pgc.h).
 *
 * States: CONNECTING (PQconnectPoll driven by socket events; the socket may change between
 * polls, so the event is re-created whenever the descriptor or the wanted direction changes),
 * READY (queries run from a FIFO queue, in order; the head of the queue is the oldest one sent and
 * not yet answered), BROKEN (terminal).
 *
 * Two kinds of queries share the queue. A plain one (pgc_query) is sent alone, once everything
 * before it is answered, outside pipeline mode (the simple protocol when it has no parameters).
 * A pipelined one (pgc_send) goes in libpq's pipeline mode: it is sent without waiting for the
 * answers before it, and a Sync follows it when it ends its flight (or when no pipelined query
 * follows it yet). The server skips the rest of a flight after an error in it (its queries get
 * PGRES_PIPELINE_ABORTED), as it skips the rest of a query string; the next flight runs. The
 * connection enters pipeline mode before a pipelined query and leaves it before a plain one,
 * each time with nothing in flight. A zero-delay "kick" event starts the next query so that no
 * callback ever runs inside pgc_connect() or pgc_query(), and so that a callback that queues a
 * statement does not re-enter the dispatcher.
 *
 * Callbacks may call pgc_close(): while one runs, `depth` is non-zero and pgc_close() only marks
 * the pgc closed and drops the connection; the struct itself is freed when the outermost
 * dispatcher sees depth fall back to zero.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <time.h>

#include <event2/event.h>
#include <libpq-fe.h>

#include "log.h"
#include "pgc.h"

/* libpq's own bound on a statement's parameters (the protocol carries an int16 count). */
#define PGC_MAX_PARAMS 65535
/* connect_timeout below 2 s is taken as 2 s, as libpq does. */
#define PGC_MIN_CONNECT_TIMEOUT 2

enum pgc_state {
	PGC_CONNECTING,
	PGC_READY,
	PGC_BROKEN,
};

struct pgc_query {
	struct pgc_query *next;
	char *sql;
	int nparams;
	Oid *types;
	char **values;
	int *lengths;
	int *formats;
	int result_format;
	bool simple;    /* simple query protocol: several statements allowed */
	bool pipelined; /* sent in pipeline mode, without waiting for the answers before it */
	bool sync;      /* a pipelined query that ends its flight */
	bool named;     /* pgc_send_named(): the prepare or the run of a named statement */
	/* not a query: prepare sql as statement name (ntypes = nparams types), or describe it */
	enum { PGC_Q_RUN, PGC_Q_PREPARE, PGC_Q_DESCRIBE } kind;
	char *name;
	pgc_result_cb cb;
	void *arg;
};

struct pgc {
	struct event_base *base;
	PGconn *conn;
	enum pgc_state state;
	struct event *sock_ev;
	int sock_fd;
	short sock_what;
	struct event *timer; /* connect_timeout */
	struct event *kick;  /* zero-delay: start the next query, report an early failure */
	pgc_ready_cb ready_cb;
	void *ready_arg;
	bool ready_pending; /* the ready callback has not run yet */

	struct pgc_query *head, *tail;
	struct pgc_query *unsent; /* the first query not sent yet, NULL when all are */
	int in_flight;    /* queries sent and not answered yet: the first ones of the queue */
	int syncs_owed;   /* Syncs sent whose PGRES_PIPELINE_SYNC has not been read */
	bool flushing;    /* the send buffer is not yet empty */
	PGresult *result; /* the running statement's latest result */
	PGresult *handed; /* the result being shown to a callback, NULL once stolen */

	int depth; /* callbacks running */
	bool closed;
	char error[512];

	uint64_t connect_usec;
	struct pgc *live_prev, *live_next; /* on the list of connections not yet closed */

	/* the names pgc_send_named() has sent a Parse of (and not seen fail) on this connection */
	char **named;
	int nnamed;
	/* bumped by every query queued that Parses into the unnamed statement (pgc_send_again()) */
	uint64_t unnamed_serial;
};

/* pgc_send_named()'s statements of one connection: a handful, looked up by name. */
#define PGC_MAX_NAMED 32

/*
 * The connections not yet closed, for pgc_foreach(). One list per thread, that is per worker's
 * event loop: the admin console that reads the list knows nothing of who opened them.
 */
static _Thread_local struct pgc *live_first, *live_last;

static void live_add(struct pgc *pc)
{
	pc->live_prev = live_last;
	pc->live_next = NULL;
	if (live_last != NULL)
		live_last->live_next = pc;
	else
		live_first = pc;
	live_last = pc;
}

static void live_remove(struct pgc *pc)
{
	if (pc->live_prev != NULL)
		pc->live_prev->live_next = pc->live_next;
	else if (live_first == pc)
		live_first = pc->live_next;
	if (pc->live_next != NULL)
		pc->live_next->live_prev = pc->live_prev;
	else if (live_last == pc)
		live_last = pc->live_prev;
	pc->live_prev = pc->live_next = NULL;
}

static const char *pgc_state_str(enum pgc_state state)
{
	switch (state) {
	case PGC_CONNECTING:
		return "connecting";
	case PGC_READY:
		return "ready";
	case PGC_BROKEN:
		return "broken";
	}
	return "?";
}

static void pgc_on_socket(evutil_socket_t fd, short what, void *arg);
static void pgc_on_kick(evutil_socket_t fd, short what, void *arg);
static void pgc_fail(struct pgc *pc, const char *why);

/* Keeps one line of libpq's (possibly multi-line, newline-terminated) message. */
static void pgc_set_error(struct pgc *pc, const char *msg)
{
	size_t n;

	if (!msg || !*msg)
		msg = "connection to the server was lost";
	snprintf(pc->error, sizeof(pc->error), "%s", msg);
	n = strlen(pc->error);
	while (n > 0 && (pc->error[n - 1] == '\n' || pc->error[n - 1] == ' '))
		pc->error[--n] = '\0';
	for (size_t i = 0; i < n; i++)
		if (pc->error[i] == '\n' || pc->error[i] == '\t')
			pc->error[i] = ' ';
}

static void pgc_query_free(struct pgc_query *q)
{
	if (!q)
		return;
	if (q->values)
		for (int i = 0; i < q->nparams; i++)
			free(q->values[i]);
	free(q->values);
	free(q->types);
	free(q->lengths);
	free(q->formats);
	free(q->sql);
	free(q->name);
	free(q);
}

static void pgc_unwatch(struct pgc *pc)
{
	if (pc->sock_ev) {
		event_free(pc->sock_ev);
		pc->sock_ev = NULL;
	}
	pc->sock_fd = -1;
	pc->sock_what = 0;
}

/* Watches libpq's current socket for `what`; re-creates the event when either changed. */
static bool pgc_watch(struct pgc *pc, short what)
{
	int fd = PQsocket(pc->conn);

	if (fd < 0) {
		pgc_set_error(pc, "connection has no socket");
		return false;
	}
	if (pc->sock_ev && pc->sock_fd == fd && pc->sock_what == what)
		return true;
	pgc_unwatch(pc);
	pc->sock_ev = event_new(pc->base, fd, what | EV_PERSIST, pgc_on_socket, pc);
	if (!pc->sock_ev || event_add(pc->sock_ev, NULL) != 0) {
		pgc_unwatch(pc);
		pgc_set_error(pc, "out of memory");
		return false;
	}
	pc->sock_fd = fd;
	pc->sock_what = what;
	return true;
}

static void pgc_named_free(struct pgc *pc);

static void pgc_release(struct pgc *pc)
{
	struct pgc_query *q;

	pgc_named_free(pc);
	pgc_unwatch(pc);
	if (pc->timer) {
		event_free(pc->timer);
		pc->timer = NULL;
	}
	if (pc->kick) {
		event_free(pc->kick);
		pc->kick = NULL;
	}
	while ((q = pc->head)) {
		pc->head = q->next;
		pgc_query_free(q);
	}
	pc->tail = NULL;
	pc->unsent = NULL;
	pc->in_flight = 0;
	pc->syncs_owed = 0;
	if (pc->result) {
		PQclear(pc->result);
		pc->result = NULL;
	}
	if (pc->conn) {
		PQfinish(pc->conn);
		pc->conn = NULL;
	}
}

/* Around every callback; false when the pgc was closed (and possibly freed) meanwhile. */
static void pgc_enter(struct pgc *pc)
{
	pc->depth++;
}

static bool pgc_leave(struct pgc *pc)
{
	pc->depth--;
	if (!pc->closed)
		return true;
	if (pc->depth == 0)
		free(pc);
	return false;
}

static void pgc_notice(void *arg, const char *message)
{
	(void)arg;
	/* Notices may quote statement text: not above DEBUG. */
	log_debug("pgc: server notice: %.*s", (int)strcspn(message, "\n"), message);
}

static void pgc_schedule(struct pgc *pc)
{
	if (pc->kick && !pc->closed)
		event_active(pc->kick, EV_TIMEOUT, 0);
}

/* Runs the ready callback once. False when the callback closed the pgc. */
static bool pgc_report_ready(struct pgc *pc, const char *error)
{
	if (!pc->ready_pending)
		return true;
	pc->ready_pending = false;
	if (!pc->ready_cb)
		return true;
	pgc_enter(pc);
	pc->ready_cb(pc->ready_arg, pc, error);
	return pgc_leave(pc);
}

/* Breaks the connection for good and fails the ready callback and all queued statements. */
static void pgc_fail(struct pgc *pc, const char *why)
{
	struct pgc_query *q;
	char reason[sizeof(pc->error)];

	if (why != pc->error)
		pgc_set_error(pc, why);
	snprintf(reason, sizeof(reason), "%s", pc->error);
	log_debug("pgc %p: %s: %s", (void *)pc, pgc_state_str(pc->state), reason);
	pc->state = PGC_BROKEN;
	pc->in_flight = 0;
	pc->syncs_owed = 0;
	pc->flushing = false;
	pgc_unwatch(pc);
	if (pc->timer)
		event_del(pc->timer);
	if (pc->result) {
		PQclear(pc->result);
		pc->result = NULL;
	}
	if (pc->conn) {
		/* Closing now tells the server at once; PQstatus of a finished conn is not needed.
		 */
		PQfinish(pc->conn);
		pc->conn = NULL;
	}
	pgc_enter(pc);
	/* the ready callback inline: our own depth keeps pc alive even if it closes it */
	if (pc->ready_pending) {
		pc->ready_pending = false;
		if (pc->ready_cb)
			pc->ready_cb(pc->ready_arg, pc, reason);
	}
	while (!pc->closed && (q = pc->head)) {
		pc->head = q->next;
		if (!pc->head)
			pc->tail = NULL;
		if (pc->unsent == q)
			pc->unsent = q->next;
		if (q->cb)
			q->cb(q->arg, pc, NULL, reason);
		pgc_query_free(q);
	}
	pgc_leave(pc);
}

static int pgc_named_find(const struct pgc *pc, const char *name)
{
	for (int i = 0; i < pc->nnamed; i++)
		if (strcmp(pc->named[i], name) == 0)
			return i;
	return -1;
}

static void pgc_named_forget(struct pgc *pc, const char *name)
{
	int i = pgc_named_find(pc, name);

	if (i < 0)
		return;
	free(pc->named[i]);
	pc->named[i] = pc->named[--pc->nnamed];
}

static void pgc_named_free(struct pgc *pc)
{
	for (int i = 0; i < pc->nnamed; i++)
		free(pc->named[i]);
	free(pc->named);
	pc->named = NULL;
	pc->nnamed = 0;
}

/* Hands the finished head statement its result, then moves on. False when the pgc went away. */
static bool pgc_finish_query(struct pgc *pc)
{
	struct pgc_query *q = pc->head;
	bool alive;

	pc->head = q->next;
	if (!pc->head)
		pc->tail = NULL;
	pc->in_flight--;
	if (q->named && q->kind == PGC_Q_PREPARE &&
	    (pc->result == NULL || PQresultStatus(pc->result) != PGRES_COMMAND_OK))
		pgc_named_forget(pc, q->name);
	pc->handed = pc->result;
	pc->result = NULL;
	pgc_enter(pc);
	if (q->cb)
		q->cb(q->arg, pc, pc->handed, NULL);
	if (pc->handed)
		PQclear(pc->handed);
	pc->handed = NULL;
	pgc_query_free(q);
	alive = pgc_leave(pc);
	if (alive)
		pgc_schedule(pc);
	return alive;
}

/* Keeps res as the head statement's result: the first error of a multi-statement text wins. */
static void pgc_keep_result(struct pgc *pc, PGresult *res)
{
	if (pc->result && PQresultStatus(pc->result) == PGRES_FATAL_ERROR) {
		PQclear(res);
		return;
	}
	if (pc->result)
		PQclear(pc->result);
	pc->result = res;
}

static bool pgc_is_copy(const PGresult *res)
{
	switch (PQresultStatus(res)) {
	case PGRES_COPY_IN:
	case PGRES_COPY_OUT:
	case PGRES_COPY_BOTH:
		return true;
	default:
		return false;
	}
}

/* An error of severity FATAL or PANIC: the server ends the session after sending it. */
static bool pgc_session_ended(const PGresult *res)
{
	const char *sev;

	if (res == NULL)
		return false;
	sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
	return sev != NULL && (strcmp(sev, "FATAL") == 0 || strcmp(sev, "PANIC") == 0);
}

/*
 * Pipeline mode: reads every answer that is complete, in order. A statement's results end with
 * a NULL from PQgetResult; a Sync's answer is one PGRES_PIPELINE_SYNC result, with no NULL
 * after it. False when the connection broke or the pgc went away.
 */
static bool pgc_read_pipelined(struct pgc *pc)
{
	PGresult *res;

	while (pc->in_flight > 0 || pc->syncs_owed > 0) {
		if (PQisBusy(pc->conn))
			return true;
		res = PQgetResult(pc->conn);
		if (res == NULL) {
			if (pc->in_flight == 0)
				return true; /* the Sync's answer has not arrived yet */
			if (PQstatus(pc->conn) == CONNECTION_BAD || pgc_session_ended(pc->result)) {
				/*
				 * The server ended the session (pg_terminate_backend): say what it
				 * said. In pipeline mode libpq ends the statement at the error
				 * itself, before it sees the socket close.
				 */
				pgc_set_error(pc, pc->result && PQresultErrorMessage(pc->result)[0]
				                          ? PQresultErrorMessage(pc->result)
				                          : PQerrorMessage(pc->conn));
				pgc_fail(pc, pc->error);
				return false;
			}
			if (!pc->result) {
				pgc_set_error(pc, "the server sent no result");
				pgc_fail(pc, pc->error);
				return false;
			}
			if (!pgc_finish_query(pc))
				return false;
			if (pc->state != PGC_READY || pc->closed)
				return false;
			continue;
		}
		if (PQresultStatus(res) == PGRES_PIPELINE_SYNC) {
			PQclear(res);
			if (pc->syncs_owed > 0)
				pc->syncs_owed--;
			/* a plain query may be waiting for the pipeline to empty */
			if (pc->in_flight == 0 && pc->syncs_owed == 0)
				pgc_schedule(pc);
			continue;
		}
		if (pgc_is_copy(res)) {
			PQclear(res);
			pgc_fail(pc, "COPY is not supported on this connection");
			return false;
		}
		pgc_keep_result(pc, res);
	}
	return true;
}

/* Reads what arrived; delivers the head statement's result when it is complete. */
static void pgc_read_results(struct pgc *pc)
{
	PGresult *res;

	if (!PQconsumeInput(pc->conn)) {
		pgc_set_error(pc, PQerrorMessage(pc->conn));
		goto broken;
	}
	/* Nobody listens for notifications; drop them so they do not pile up. */
	for (PGnotify *n; (n = PQnotifies(pc->conn));)
		PQfreemem(n);
	if (pc->in_flight == 0 && pc->syncs_owed == 0) {
		if (PQstatus(pc->conn) == CONNECTION_BAD) {
			pgc_set_error(pc, PQerrorMessage(pc->conn));
			goto broken;
		}
		return;
	}
	if (PQpipelineStatus(pc->conn) != PQ_PIPELINE_OFF) {
		if (!pgc_read_pipelined(pc))
			return;
		if (PQstatus(pc->conn) == CONNECTION_BAD) {
			pgc_set_error(pc, PQerrorMessage(pc->conn));
			goto broken;
		}
		return;
	}
	while (!PQisBusy(pc->conn)) {
		res = PQgetResult(pc->conn);
		if (!res)
			break;
		if (pgc_is_copy(res)) {
			PQclear(res);
			pgc_set_error(pc, "COPY is not supported on this connection");
			goto broken;
		}
		pgc_keep_result(pc, res);
	}
	if (PQisBusy(pc->conn)) {
		if (PQstatus(pc->conn) == CONNECTION_BAD) {
			pgc_set_error(pc, PQerrorMessage(pc->conn));
			goto broken;
		}
		return;
	}
	if (PQstatus(pc->conn) == CONNECTION_BAD) {
		/* The server ended the session (e.g. pg_terminate_backend): say what it said. */
		if (pc->result && PQresultErrorMessage(pc->result)[0])
			pgc_set_error(pc, PQresultErrorMessage(pc->result));
		else
			pgc_set_error(pc, PQerrorMessage(pc->conn));
		goto broken;
	}
	if (!pc->result) {
		pgc_set_error(pc, "the server sent no result");
		goto broken;
	}
	if (!pgc_finish_query(pc))
		return;
	if (pc->state == PGC_READY && !pc->closed && !pgc_watch(pc, EV_READ))
		pgc_fail(pc, pc->error);
	return;
broken:
	pgc_fail(pc, pc->error);
}

/* Sends what libpq holds. False when the connection broke (pc may then be gone). */
static bool pgc_flush(struct pgc *pc)
{
	int r = PQflush(pc->conn);

	if (r < 0) {
		pgc_fail(pc, PQerrorMessage(pc->conn));
		return false;
	}
	pc->flushing = r > 0;
	if (!pgc_watch(pc, pc->flushing ? EV_READ | EV_WRITE : EV_READ)) {
		pgc_fail(pc, pc->error);
		return false;
	}
	return true;
}

/* Sends one plain query, alone: the pipeline is empty (and left), nothing else is in flight. */
static bool pgc_send_plain(struct pgc *pc, struct pgc_query *q)
{
	if (PQpipelineStatus(pc->conn) != PQ_PIPELINE_OFF && !PQexitPipelineMode(pc->conn))
		return false;
	if (q->kind == PGC_Q_PREPARE)
		return PQsendPrepare(pc->conn, q->name, q->sql, q->nparams, q->types);
	if (q->kind == PGC_Q_DESCRIBE)
		return PQsendDescribePrepared(pc->conn, q->name);
	if (q->simple)
		return PQsendQuery(pc->conn, q->sql);
	return PQsendQueryParams(pc->conn, q->sql, q->nparams, q->types,
	                         (const char *const *)q->values, q->lengths, q->formats,
	                         q->result_format);
}

/* Sends one pipelined query, and the Sync that ends its flight when it does. */
static bool pgc_send_pipelined(struct pgc *pc, struct pgc_query *q)
{
	bool sent;

	if (PQpipelineStatus(pc->conn) == PQ_PIPELINE_OFF && !PQenterPipelineMode(pc->conn))
		return false;
	if (q->named && q->kind == PGC_Q_PREPARE)
		sent = PQsendPrepare(pc->conn, q->name, q->sql, 0, NULL); /* types inferred */
	else if (q->named)
		sent = PQsendQueryPrepared(pc->conn, q->name, q->nparams,
		                           (const char *const *)q->values, q->lengths, q->formats,
		                           q->result_format);
	else
		sent = PQsendQueryParams(pc->conn, q->sql, q->nparams, q->types,
		                         (const char *const *)q->values, q->lengths, q->formats,
		                         q->result_format);
	if (!sent)
		return false;
	if (q->sync || q->next == NULL || !q->next->pipelined) {
		if (!PQpipelineSync(pc->conn))
			return false;
		pc->syncs_owed++;
	}
	return true;
}

/*
 * Sends what may go now: every pipelined query queued (up to a plain one), or one plain query
 * once nothing is in flight.
 */
static void pgc_start_next(struct pgc *pc)
{
	struct pgc_query *q;
	bool sent = false;

	if (pc->state != PGC_READY)
		return;
	while ((q = pc->unsent) != NULL) {
		bool idle = pc->in_flight == 0 && pc->syncs_owed == 0;
		/* a plain query goes alone; a pipelined one may follow only pipelined ones */
		if (!idle && (!q->pipelined || PQpipelineStatus(pc->conn) == PQ_PIPELINE_OFF))
			break;
		if (!(q->pipelined ? pgc_send_pipelined(pc, q) : pgc_send_plain(pc, q))) {
			pgc_fail(pc, PQerrorMessage(pc->conn));
			return;
		}
		pc->unsent = q->next;
		pc->in_flight++;
		sent = true;
		if (!q->pipelined)
			break;
	}
	if (sent)
		(void)pgc_flush(pc);
}

static void pgc_connect_poll(struct pgc *pc)
{
	switch (PQconnectPoll(pc->conn)) {
	case PGRES_POLLING_READING:
		if (!pgc_watch(pc, EV_READ))
			pgc_fail(pc, pc->error);
		return;
	case PGRES_POLLING_WRITING:
		if (!pgc_watch(pc, EV_WRITE))
			pgc_fail(pc, pc->error);
		return;
	case PGRES_POLLING_OK:
		break;
	default:
		pgc_fail(pc, PQerrorMessage(pc->conn));
		return;
	}
	if (pc->timer)
		event_del(pc->timer);
	if (PQsetnonblocking(pc->conn, 1) != 0) {
		pgc_fail(pc, PQerrorMessage(pc->conn));
		return;
	}
	pc->state = PGC_READY;
	if (!pgc_watch(pc, EV_READ)) {
		pgc_fail(pc, pc->error);
		return;
	}
	log_debug("pgc %p: connected", (void *)pc);
	if (!pgc_report_ready(pc, NULL))
		return;
	pgc_schedule(pc);
}

static void pgc_on_socket(evutil_socket_t fd, short what, void *arg)
{
	struct pgc *pc = arg;

	(void)fd;
	switch (pc->state) {
	case PGC_CONNECTING:
		pgc_connect_poll(pc);
		return;
	case PGC_READY:
		break;
	case PGC_BROKEN:
		pgc_unwatch(pc);
		return;
	}
	if (pc->flushing && !pgc_flush(pc))
		return;
	if (what & EV_READ)
		pgc_read_results(pc);
}

static void pgc_on_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct pgc *pc = arg;

	(void)fd;
	(void)what;
	if (pc->state == PGC_CONNECTING)
		pgc_fail(pc, "timeout expired while connecting");
}

static void pgc_on_kick(evutil_socket_t fd, short what, void *arg)
{
	struct pgc *pc = arg;

	(void)fd;
	(void)what;
	switch (pc->state) {
	case PGC_CONNECTING:
		return;
	case PGC_READY:
		pgc_start_next(pc);
		return;
	case PGC_BROKEN:
		/* A connection that failed before its first poll, or queries queued since. */
		pgc_fail(pc, pc->error);
		return;
	}
}

/* libpq's connect_timeout in seconds, 0 = none. */
static int pgc_connect_timeout(PGconn *conn)
{
	PQconninfoOption *opts = PQconninfo(conn);
	int secs = 0;

	if (!opts)
		return 0;
	for (PQconninfoOption *o = opts; o->keyword; o++) {
		if (strcmp(o->keyword, "connect_timeout") == 0 && o->val && *o->val) {
			char *end;
			long v = strtol(o->val, &end, 10);

			if (*end == '\0' && v > 0)
				secs = v > 86400 ? 86400 : (int)v;
			break;
		}
	}
	PQconninfoFree(opts);
	if (secs > 0 && secs < PGC_MIN_CONNECT_TIMEOUT)
		secs = PGC_MIN_CONNECT_TIMEOUT;
	return secs;
}

struct pgc *pgc_connect(struct event_base *base, const char *conninfo, pgc_ready_cb cb, void *arg)
{
	struct pgc *pc = calloc(1, sizeof(*pc));
	int secs;

	if (!pc)
		return NULL;
	{
		struct timespec ts;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		pc->connect_usec = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
	}
	live_add(pc);
	pc->base = base;
	pc->sock_fd = -1;
	pc->ready_cb = cb;
	pc->ready_arg = arg;
	pc->ready_pending = true;
	pc->state = PGC_CONNECTING;
	pc->kick = event_new(base, -1, 0, pgc_on_kick, pc);
	pc->timer = evtimer_new(base, pgc_on_timeout, pc);
	if (!pc->kick || !pc->timer)
		goto fail;
	pc->conn = PQconnectStart(conninfo ? conninfo : "");
	if (!pc->conn)
		goto fail;
	PQsetNoticeProcessor(pc->conn, pgc_notice, pc);
	if (PQstatus(pc->conn) == CONNECTION_BAD) {
		/* Bad conninfo or no socket: reported from the loop like any failure. */
		pgc_set_error(pc, PQerrorMessage(pc->conn));
		pc->state = PGC_BROKEN;
		pgc_schedule(pc);
		return pc;
	}
	secs = pgc_connect_timeout(pc->conn);
	if (secs > 0) {
		struct timeval tv = {.tv_sec = secs};

		if (event_add(pc->timer, &tv) != 0)
			goto fail;
	}
	/* libpq's rule: before the first PQconnectPoll, wait until the socket is writable. */
	if (!pgc_watch(pc, EV_WRITE)) {
		pc->state = PGC_BROKEN;
		pgc_schedule(pc);
	}
	return pc;
fail:
	live_remove(pc);
	pgc_release(pc);
	free(pc);
	return NULL;
}

/* Appends q to pc's queue, sent now when pc is ready. */
static void pgc_enqueue(struct pgc *pc, struct pgc_query *q)
{
	/*
	 * The queue's order is the wire's: what the unnamed statement is when q is parsed. Serials
	 * come from one counter of the thread, so that no two connections of it ever hand out the
	 * same one: a serial taken on one connection never matches another's.
	 */
	static _Thread_local uint64_t serials;

	if ((q->kind == PGC_Q_RUN && !q->named) ||
	    (q->kind == PGC_Q_PREPARE && (q->name == NULL || q->name[0] == '\0')))
		pc->unnamed_serial = ++serials;
	if (pc->tail)
		pc->tail->next = q;
	else
		pc->head = q;
	pc->tail = q;
	if (pc->unsent == NULL)
		pc->unsent = q;
	if (pc->state == PGC_READY)
		pgc_schedule(pc);
}

/* A statement with its parameters copied, for pgc_query() and pgc_send(); NULL when refused. */
static struct pgc_query *pgc_query_new(struct pgc *pc, const char *sql, int nparams,
                                       const Oid *types, const char *const *values,
                                       const int *lengths, const int *formats, int result_format,
                                       pgc_result_cb cb, void *arg)
{
	struct pgc_query *q;

	if (!pc || pc->closed || pc->state == PGC_BROKEN || !sql)
		return NULL;
	if (nparams < 0 || nparams > PGC_MAX_PARAMS || (nparams > 0 && !values))
		return NULL;
	q = calloc(1, sizeof(*q));
	if (!q)
		return NULL;
	q->cb = cb;
	q->arg = arg;
	q->nparams = nparams;
	q->result_format = result_format ? 1 : 0;
	q->simple = nparams == 0 && !types && !q->result_format;
	q->sql = strdup(sql);
	if (!q->sql)
		goto fail;
	if (nparams > 0) {
		q->values = calloc(nparams, sizeof(*q->values));
		q->lengths = calloc(nparams, sizeof(*q->lengths));
		q->formats = calloc(nparams, sizeof(*q->formats));
		if (!q->values || !q->lengths || !q->formats)
			goto fail;
		if (types) {
			q->types = calloc(nparams, sizeof(*q->types));
			if (!q->types)
				goto fail;
			memcpy(q->types, types, nparams * sizeof(*q->types));
		}
		for (int i = 0; i < nparams; i++) {
			bool binary = formats && formats[i];
			size_t len;

			q->formats[i] = binary ? 1 : 0;
			if (!values[i])
				continue;
			if (binary) {
				if (!lengths || lengths[i] < 0)
					goto fail;
				len = (size_t)lengths[i];
			} else {
				len = strlen(values[i]);
			}
			q->values[i] = malloc(len + 1);
			if (!q->values[i])
				goto fail;
			memcpy(q->values[i], values[i], len);
			q->values[i][len] = '\0';
			q->lengths[i] = (int)len;
		}
	}
	return q;
fail:
	pgc_query_free(q);
	return NULL;
}

bool pgc_query(struct pgc *pc, const char *sql, int nparams, const Oid *types,
               const char *const *values, const int *lengths, const int *formats, int result_format,
               pgc_result_cb cb, void *arg)
{
	struct pgc_query *q = pgc_query_new(pc, sql, nparams, types, values, lengths, formats,
	                                    result_format, cb, arg);

	if (!q)
		return false;
	pgc_enqueue(pc, q);
	return true;
}

bool pgc_send(struct pgc *pc, const char *sql, int nparams, const Oid *types,
              const char *const *values, const int *lengths, const int *formats, int result_format,
              bool sync, pgc_result_cb cb, void *arg)
{
	struct pgc_query *q = pgc_query_new(pc, sql, nparams, types, values, lengths, formats,
	                                    result_format, cb, arg);

	if (!q)
		return false;
	q->simple = false;
	q->pipelined = true;
	q->sync = sync;
	pgc_enqueue(pc, q);
	return true;
}

bool pgc_send_named(struct pgc *pc, const char *name, const char *sql, int nparams,
                    const char *const *values, bool sync, pgc_result_cb cb, void *arg)
{
	struct pgc_query *prep = NULL, *run;
	char **grown;

	if (!name || !name[0])
		return false;
	run = pgc_query_new(pc, sql, nparams, NULL, values, NULL, NULL, 0, cb, arg);
	if (!run || !(run->name = strdup(name)))
		goto fail;
	run->simple = false;
	run->pipelined = true;
	run->named = true;
	run->sync = sync;
	if (pgc_named_find(pc, name) < 0) {
		if (pc->nnamed >= PGC_MAX_NAMED)
			goto fail;
		prep = pgc_query_new(pc, sql, 0, NULL, NULL, NULL, NULL, 0, NULL, NULL);
		grown = realloc(pc->named, (size_t)(pc->nnamed + 1) * sizeof(*pc->named));
		if (grown)
			pc->named = grown;
		if (!prep || !grown || !(prep->name = strdup(name)) ||
		    !(pc->named[pc->nnamed] = strdup(name)))
			goto fail;
		pc->nnamed++;
		prep->kind = PGC_Q_PREPARE;
		prep->simple = false;
		prep->pipelined = true;
		prep->named = true;
		pgc_enqueue(pc, prep);
	}
	pgc_enqueue(pc, run);
	return true;
fail:
	pgc_query_free(prep);
	pgc_query_free(run);
	return false;
}

uint64_t pgc_unnamed_serial(const struct pgc *pc)
{
	return pc ? pc->unnamed_serial : 0;
}

bool pgc_send_again(struct pgc *pc, uint64_t serial, const char *sql, int nparams, const Oid *types,
                    const char *const *values, const int *lengths, const int *formats,
                    int result_format, bool sync, pgc_result_cb cb, void *arg)
{
	struct pgc_query *q;

	if (!pc || serial != pc->unnamed_serial)
		return pgc_send(pc, sql, nparams, types, values, lengths, formats, result_format,
		                sync, cb, arg);
	q = pgc_query_new(pc, sql, nparams, types, values, lengths, formats, result_format, cb,
	                  arg);
	if (!q || !(q->name = strdup(""))) {
		pgc_query_free(q);
		return false;
	}
	q->simple = false;
	q->pipelined = true;
	q->named = true; /* a Bind of the unnamed statement: "" */
	q->sync = sync;
	pgc_enqueue(pc, q);
	return true;
}

/* Queues a prepare (kind PGC_Q_PREPARE: sql, ntypes types) or a describe of name. */
static bool pgc_queue_statement(struct pgc *pc, int kind, const char *name, const char *sql,
                                int ntypes, const Oid *types, pgc_result_cb cb, void *arg)
{
	struct pgc_query *q;

	if (!pc || pc->closed || pc->state == PGC_BROKEN || !name ||
	    (kind == PGC_Q_PREPARE && !sql) || ntypes < 0 || ntypes > PGC_MAX_PARAMS ||
	    (ntypes > 0 && !types))
		return false;
	q = calloc(1, sizeof(*q));
	if (!q)
		return false;
	q->kind = kind;
	q->cb = cb;
	q->arg = arg;
	q->name = strdup(name);
	q->sql = strdup(sql ? sql : "");
	if (!q->name || !q->sql)
		goto fail;
	if (ntypes > 0) {
		q->types = calloc(ntypes, sizeof(*q->types));
		if (!q->types)
			goto fail;
		memcpy(q->types, types, ntypes * sizeof(*q->types));
		q->nparams = ntypes;
	}
	pgc_enqueue(pc, q);
	return true;
fail:
	pgc_query_free(q);
	return false;
}

bool pgc_prepare(struct pgc *pc, const char *name, const char *sql, int ntypes, const Oid *types,
                 pgc_result_cb cb, void *arg)
{
	return pgc_queue_statement(pc, PGC_Q_PREPARE, name, sql, ntypes, types, cb, arg);
}

bool pgc_describe_prepared(struct pgc *pc, const char *name, pgc_result_cb cb, void *arg)
{
	return pgc_queue_statement(pc, PGC_Q_DESCRIBE, name, NULL, 0, NULL, cb, arg);
}

PGresult *pgc_steal_result(struct pgc *pc)
{
	PGresult *res;

	if (!pc || pc->depth == 0)
		return NULL;
	res = pc->handed;
	pc->handed = NULL;
	return res;
}

bool pgc_busy(const struct pgc *pc)
{
	return pc && !pc->closed && pc->head != NULL;
}

bool pgc_ok(const struct pgc *pc)
{
	return pc && !pc->closed && pc->state == PGC_READY;
}

const char *pgc_error(const struct pgc *pc)
{
	return pc ? pc->error : "";
}

void pgc_close(struct pgc *pc)
{
	if (!pc || pc->closed)
		return;
	pc->closed = true;
	live_remove(pc);
	pc->ready_pending = false;
	/* A result being shown to a callback is cleared by its dispatcher. */
	pgc_release(pc);
	if (pc->depth == 0)
		free(pc);
}

void pgc_foreach(module_conn_cb cb, void *arg)
{
	for (struct pgc *pc = live_first; pc != NULL; pc = pc->live_next) {
		struct module_conn_info info;
		const char *v;

		if (pc->state == PGC_BROKEN || pc->conn == NULL)
			continue; /* no backend behind it any more */
		memset(&info, 0, sizeof(info));
		info.ptr = pc;
		info.connect_usec = pc->connect_usec;
		info.connecting = pc->state == PGC_CONNECTING;
		info.busy = pc->head != NULL;
		info.fd = PQsocket(pc->conn);
		info.database = PQdb(pc->conn) != NULL ? PQdb(pc->conn) : "";
		info.user = PQuser(pc->conn) != NULL ? PQuser(pc->conn) : "";
		v = PQhostaddr(pc->conn);
		if (v == NULL || v[0] == '\0')
			v = PQhost(pc->conn);
		info.addr = v == NULL ? "" : v[0] == '/' ? "unix" : v;
		v = PQport(pc->conn);
		info.port = v != NULL ? atoi(v) : 0;
		v = info.connecting ? NULL : PQparameterStatus(pc->conn, "application_name");
		info.application_name = v != NULL ? v : "";
		info.backend_pid = info.connecting ? 0 : PQbackendPID(pc->conn);
		info.tls = PQsslInUse(pc->conn);
		cb(arg, &info);
	}
}
