/*
 * client — see include/client.h. A client is in CL_LOGIN until authenticated; its packets then
 * flow to its server through the sbuf relay. Every client packet passes the first cheap check
 * here (its type byte); only Query and Parse are shown to the query hook.
 */
#include "client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>
#include <unistd.h>

#include "admin.h"
#include "auth.h"
#include "bouncer.h"
#include "config.h"
#include "conn.h"
#include "control.h"
#include "md5pw.h"
#include "module.h"
#include "pool.h"
#include "prepared.h"
#include "proto.h"
#include "scram.h"
#include "server.h"
#include "stats.h"
#include "tls.h"
#include "userlist.h"
#include "workers.h"

/* The longest authentication message held before authentication (auth.h). */
#define CLIENT_AUTH_MSG_MAX AUTH_MSG_MAX

static enum sbuf_action client_packet(void *owner, struct sbuf *sb, const struct sbuf_pkt *pkt);
static void client_failed(void *owner, struct sbuf *sb, const char *reason);
static bool client_scan(void *owner, struct sbuf *sb, const uint8_t *data, size_t len);

static const struct sbuf_ops client_ops = {
        .packet = client_packet,
        .flushed = NULL,
        .failed = client_failed,
        .scan = client_scan,
};

/* Parameters whose values the server reports and that we replay across servers. */
static const char *const tracked_params[] = {
        "client_encoding",  "DateStyle", "TimeZone", "standard_conforming_strings",
        "application_name",
};

#define N_TRACKED (sizeof(tracked_params) / sizeof(tracked_params[0]))

static bool is_tracked_hashed(const struct bouncer *b, const char *name, uint32_t hash)
{
	static _Thread_local uint32_t tracked_hash[N_TRACKED]; /* per worker's thread */
	static _Thread_local bool hashed;

	if (!hashed) {
		for (size_t i = 0; i < N_TRACKED; i++)
			tracked_hash[i] = param_hash(tracked_params[i]);
		hashed = true;
	}
	for (size_t i = 0; i < N_TRACKED; i++)
		if (tracked_hash[i] == hash && strcasecmp(name, tracked_params[i]) == 0)
			return true;
	return cf_list_has(b->cfg->track_extra_parameters, name, true);
}

static bool is_tracked(const struct bouncer *b, const char *name)
{
	return is_tracked_hashed(b, name, param_hash(name));
}

/*
 * The most of one client message held in memory whole: what a statement's inspection may need
 * (SBUF_GATHER_MAX), lowered by max_packet_size, never below what a login needs (a startup packet
 * or an authentication message). Longer messages stream through, or are refused (54000).
 */
static size_t client_gather_max(const struct bouncer *b)
{
	size_t max = (size_t)b->cfg->max_packet_size;

	if (max > SBUF_GATHER_MAX)
		max = SBUF_GATHER_MAX;
	if (max < CLIENT_AUTH_MSG_MAX + 1)
		max = CLIENT_AUTH_MSG_MAX + 1;
	return max;
}

/*
 * The guard trigger trusts syncbouncer.* settings (it lets the pooler's own pipeline write), so no
 * client may put one on a server by any path: startup parameters, options, tracked parameters.
 * Setting names are case-insensitive in PostgreSQL.
 */
static bool is_guard_setting(const char *name)
{
	return strncasecmp(name, "syncbouncer.", 12) == 0;
}

static void refuse_guard_setting(struct conn *c, const char *name)
{
	char msg[160];

	snprintf(msg, sizeof(msg), "setting %.64s is not allowed through syncbouncer", name);
	client_fatal(c, "42501", msg);
}

static void queue_or_close(struct conn *c, struct pktbuf *pb)
{
	if (!sbuf_queue_pktbuf(&c->sbuf, pb))
		slog_debug(c, "could not queue a message");
}

bool client_queue(struct conn *c, const struct pktbuf *pb)
{
	return sbuf_queue_pktbuf(&c->sbuf, pb);
}

bool client_query_through_server(struct conn *c, const struct pktbuf *query)
{
	struct conn *s = c->link;

	if (s == NULL || s->txn_status != 'T' || server_ready_owed(s) != 0)
		return false;
	return client_query_on_server(c, query, 1);
}

bool client_query_on_server(struct conn *c, const struct pktbuf *query, int n)
{
	struct conn *s = c->link;

	if (s == NULL || !s->logged_in || n < 1 || !sbuf_queue_pktbuf(&s->sbuf, query))
		return false;
	for (int i = 0; i < n; i++)
		server_owe_ready(s);
	s->at_rfq = false;
	return true;
}

void client_send_error(struct conn *c, const char *sqlstate, const char *msg)
{
	struct pktbuf pb;

	pktbuf_init(&pb, 8192);
	pktbuf_write_error(&pb, "ERROR", sqlstate, msg, NULL, NULL);
	queue_or_close(c, &pb);
	pktbuf_free(&pb);
}

void client_fatal(struct conn *c, const char *sqlstate, const char *msg)
{
	struct pktbuf pb;

	if (c->state == CONN_JUSTFREE)
		return;
	if (c->b->cfg->log_pooler_errors)
		slog_warning(c, "pooler error: %s", msg);
	pktbuf_init(&pb, 8192);
	pktbuf_write_error(&pb, "FATAL", sqlstate, msg, NULL, NULL);
	queue_or_close(c, &pb);
	pktbuf_free(&pb);
	client_close(c, msg);
}

/* A client of b is gone: one less for max_client_conn. */
static void client_uncount(struct bouncer *b)
{
	b->client_count--;
	if (b->workers != NULL)
		(void)workers_clients_add(b, -1);
}

void client_close(struct conn *c, const char *reason)
{
	struct conn *server = c->link;

	if (c->state == CONN_JUSTFREE)
		return;
	if (c->b->cfg->log_disconnections && c->state != CL_LOGIN)
		slog_info(c, "closing because: %s (age=%llus)", reason,
		          (unsigned long long)((bouncer_now_usec() - c->connect_time) / 1000000));
	if (server != NULL) {
		/* a server that got part of a message holds unknown state, one with a batch
		 * without its Sync an open transaction: nobody else gets it */
		if (server_is_ready(server) && server->txn_status == 'I' && !server->batch_open &&
		    !sbuf_mid_packet(&c->sbuf)) {
			pool_release_server(c);
		} else {
			c->link = NULL;
			server->link = NULL;
			sbuf_set_dst(&server->sbuf, NULL);
			if (!server_is_ready(server))
				server_send_cancel(server); /* nobody waits for that query now */
			server_close(server, "client disconnect while server was not ready");
		}
	}
	if (c->hook_state != NULL && c->b->hook.client_closed != NULL)
		c->b->hook.client_closed(c->b->hook.ctx, c);
	client_uncount(c->b);
	pool_client_uncount(c);
	conn_retire(c);
}

static void client_failed(void *owner, struct sbuf *sb, const char *reason)
{
	struct conn *c = owner;

	if (sb->protocol_violation) {
		/* a malformed or over-long message: say so, as PostgreSQL does, then close */
		client_fatal(c, "08P01", reason);
		return;
	}
	if (strcmp(reason, "EOF") == 0)
		client_close(c, c->state == CL_LOGIN ? "client unexpected eof"
		                                     : "client unexpected eof");
	else
		client_close(c, reason);
}

/* client_login_timeout: the client has not finished logging in (or the server is down). */
static void login_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;

	(void)fd;
	(void)what;
	c->timer_ready = false;
	if (c->state == CL_LOGIN)
		client_fatal(c, "08P01", "client_login_timeout");
	else if (c->state == CL_WAITING_LOGIN)
		client_fatal(c, "08P01", "client_login_timeout (server down)");
}

/* Arms c's login timer to fire in usec (client_login_timeout, or what is left of it). */
static bool start_login_timer(struct conn *c, uint64_t usec)
{
	struct timeval tv = {(time_t)(usec / 1000000), (suseconds_t)(usec % 1000000)};

	if (!conn_event_assign(c, &c->ev_timer, -1, 0, login_timeout))
		return false;
	evtimer_add(c->ev_timer, &tv);
	c->timer_ready = true;
	return true;
}

static void stop_login_timer(struct conn *c)
{
	if (c->ev_timer != NULL) {
		event_free(c->ev_timer);
		c->ev_timer = NULL;
		c->timer_ready = false;
	}
}

/* The handshake after 'S' (or a direct one) is over: on to the startup packet, under TLS. */
static void client_tls_done(void *arg, bool ok, const char *err)
{
	struct conn *c = arg;

	if (!ok) {
		if (c->b->cfg->log_connections)
			slog_info(c, "%s", err);
		client_close(c, err);
		return;
	}
	/* PostgreSQL 17 insists on ALPN for direct SSL: it proves the client meant PostgreSQL */
	if (c->tls_direct && !tls_conn_alpn_postgresql(&c->sbuf)) {
		if (c->b->cfg->log_connections)
			slog_info(c, "direct SSL connection without ALPN \"postgresql\"");
		client_close(c, "direct SSL connection without ALPN");
		return;
	}
	sbuf_resume(&c->sbuf);
}

/*
 * With TLS on, the first byte decides: 0x16 opens a TLS handshake right away (PostgreSQL 17's
 * sslnegotiation=direct); anything else is the ordinary startup phase.
 */
static void client_first_byte(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	uint8_t first;
	ssize_t n;

	(void)what;
	c->connecting = false;
	n = recv(fd, &first, 1, MSG_PEEK);
	if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
		event_add(c->ev_connect, NULL);
		c->connecting = true;
		return;
	}
	/* not needed again: an idle client keeps no memory for it */
	event_free(c->ev_connect);
	c->ev_connect = NULL;
	if (n == 1 && first == 0x16 && tls_client_side_enabled(c->b)) {
		c->tls_direct = true;
		if (!tls_accept(c->b, &c->sbuf, client_tls_done, c))
			client_close(c, "failed to accept SSL");
		return;
	}
	sbuf_resume(&c->sbuf);
}

void client_accept(struct bouncer *b, int fd, const struct sockaddr *addr, socklen_t addrlen,
                   bool is_unix)
{
	struct conn *c = calloc(1, sizeof(*c));
	int total;

	if (c == NULL) {
		close(fd);
		return;
	}
	c->b = b;
	c->user = c->dbname = conn_no_name;
	list_init(&c->head);
	c->connect_time = bouncer_now_usec();
	if (is_unix)
		c->addr.sa.sa_family = AF_UNIX;
	else if (addrlen <= sizeof(c->addr))
		memcpy(&c->addr, addr, addrlen);
	if (is_unix) {
		snprintf(c->addr_str, sizeof(c->addr_str), "unix");
		c->port = b->cfg->listen_port;
	} else if (addr->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)addr;
		inet_ntop(AF_INET, &in->sin_addr, c->addr_str, sizeof(c->addr_str));
		c->port = ntohs(in->sin_port);
	} else if (addr->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)addr;
		inet_ntop(AF_INET6, &in6->sin6_addr, c->addr_str, sizeof(c->addr_str));
		c->port = ntohs(in6->sin6_port);
	}
	if (!sbuf_init(&c->sbuf, b->base, fd, (size_t)b->cfg->pkt_buf, client_gather_max(b),
	               &client_ops, c)) {
		sbuf_close(&c->sbuf);
		free(c);
		return;
	}
	c->sbuf.startup_phase = true;
	b->client_count++;
	/* with several workers, max_client_conn counts the clients of them all */
	total = b->workers != NULL ? workers_clients_add(b, 1) : b->client_count;
	conn_set_state(c, CL_LOGIN);
	/* refused after the startup packet, so that a client that asks for SSL first can read
	 * the reason */
	if (total > b->cfg->max_client_conn)
		c->refusal = "no more connections allowed (max_client_conn)";
	if (b->shutting_down)
		c->refusal = "pgbouncer is shutting down";
	if (b->cfg->client_login_timeout > 0 &&
	    !start_login_timer(c, (uint64_t)b->cfg->client_login_timeout)) {
		client_close(c, "out of memory");
		return;
	}
	if (tls_client_side_enabled(b)) {
		if (!conn_event_assign(c, &c->ev_connect, fd, EV_READ, client_first_byte)) {
			client_close(c, "out of memory");
			return;
		}
		event_add(c->ev_connect, NULL);
		c->connecting = true;
		return;
	}
	sbuf_resume(&c->sbuf);
}

/* A CancelRequest's key, and whether a worker found the client it names. */
struct cancel_job {
	uint32_t pid, key;
	struct bouncer *from; /* the worker that took the request */
	bool found;
};

/* Cancels the query of job's client if it is one of w's; true when it is. */
static bool cancel_on(struct bouncer *w, struct cancel_job *job)
{
	struct conn *target;

	client_find_by_cancel_key(w, job->pid, job->key, &target);
	if (target == NULL)
		return false;
	job->found = true;
	if (target->hook_state != NULL && w->hook.cancel != NULL &&
	    w->hook.cancel(w->hook.ctx, target))
		; /* the hook holds its query: it cancelled it, or says why not */
	else if (target->link != NULL)
		server_send_cancel(target->link);
	return true;
}

/* As a worker_fn: the workers that did not take the request look for its client. */
static void cancel_elsewhere(struct bouncer *w, void *arg)
{
	struct cancel_job *job = arg;

	if (w == job->from || job->found)
		return;
	if (!cancel_on(w, job))
		admin_cancel(w, job->pid, job->key);
}

void client_find_by_cancel_key(struct bouncer *b, uint32_t pid, uint32_t key, struct conn **out)
{
	struct list *pit, *cit;

	*out = NULL;
	list_for_each(pit, &b->pools)
	{
		struct pool *pool = list_entry(pit, struct pool, head);
		list_for_each(cit, &pool->active_clients)
		{
			struct conn *c = list_entry(cit, struct conn, head);
			if (c->be_pid == pid && c->cancel_key == key) {
				*out = c;
				return;
			}
		}
		list_for_each(cit, &pool->waiting_clients)
		{
			struct conn *c = list_entry(cit, struct conn, head);
			if (c->be_pid == pid && c->cancel_key == key) {
				*out = c;
				return;
			}
		}
	}
}

/*
 * The welcome's ParameterStatus messages, appended to pb: the server's values, with the client's
 * own where it has one. They depend only on the pool's welcome set and the client's parameters,
 * which clients of the same settings share (param_share()): the pool keeps the messages of the
 * last welcome built, for the parameter slots it was built for.
 */
static bool welcome_params(struct conn *c, struct pktbuf *pb)
{
	struct pool *pool = c->pool;
	size_t start = pb->len;

	if (pool->welcome_msgs != NULL && pool->welcome_for_gen == pool->welcome.gen &&
	    param_holds(pool->welcome_for, &c->params)) {
		pktbuf_put_bytes(pb, pool->welcome_msgs, pool->welcome_msgs_len);
		return !pktbuf_failed(pb);
	}
	for (int i = 0; i < pool->welcome.n; i++) {
		const char *v = param_get_hashed(&c->params, pool->welcome.p[i].name,
		                                 pool->welcome.p[i].hash);
		pktbuf_write_parameter_status(pb, pool->welcome.p[i].name,
		                              v ? v : pool->welcome.p[i].value);
	}
	if (pktbuf_failed(pb))
		return false;
	if (c->params.p != NULL) {
		uint8_t *copy = malloc(pb->len - start);
		if (copy != NULL) {
			memcpy(copy, pb->data + start, pb->len - start);
			free(pool->welcome_msgs);
			param_drop(pool->welcome_for);
			pool->welcome_msgs = copy;
			pool->welcome_msgs_len = pb->len - start;
			pool->welcome_for = param_hold(&c->params);
			pool->welcome_for_gen = pool->welcome.gen;
		}
	}
	return true;
}

void client_send_welcome(struct conn *c)
{
	struct pool *pool = c->pool;
	struct pktbuf pb;
	uint32_t keys[2];

	/* the client starts out believing the server defaults, overridden by its own startup values
	 */
	for (int i = 0; i < pool->welcome.n; i++) {
		const char *name = pool->welcome.p[i].name;
		uint32_t hash = pool->welcome.p[i].hash;

		if (param_get_hashed(&c->params, name, hash) == NULL &&
		    is_tracked_hashed(c->b, name, hash) &&
		    !param_set_value(&c->params, name, pool->welcome.p[i].value)) {
			client_fatal(c, "53200", "out of memory");
			return;
		}
	}
	/* clients with the same settings (the usual case) hold one copy of them */
	param_share(&c->params);
	/* the kernel's generator: as unpredictable, and far cheaper per connection than OpenSSL's
	 */
	if (!conn_random(keys, sizeof(keys))) {
		client_fatal(c, "58000", "could not generate a cancel key");
		return;
	}
	c->be_pid = keys[0] & 0x7fffffff;
	c->cancel_key = keys[1];

	pktbuf_init(&pb, 65536);
	pktbuf_write_auth(&pb, 0, NULL, 0);
	if (!welcome_params(c, &pb)) {
		pktbuf_free(&pb);
		client_close(c, "could not send the welcome");
		return;
	}
	pktbuf_write_backend_key(&pb, c->be_pid, c->cancel_key);
	pktbuf_write_ready(&pb, 'I');
	if (!sbuf_queue_pktbuf(&c->sbuf, &pb)) {
		pktbuf_free(&pb);
		client_close(c, "could not send the welcome");
		return;
	}
	pktbuf_free(&pb);
	/* the stats count relayed traffic, as pgbouncer's: the login is not part of it */
	c->sbuf.bytes_in = 0;
	c->auth_done = true;
	stop_login_timer(c);
	c->request_time = bouncer_now_usec();
	sbuf_resume(&c->sbuf);
}

const char *hook_verdict_str(enum hook_verdict v)
{
	switch (v) {
	case HOOK_PASS:
		return "pass";
	case HOOK_CONSUME:
		return "consume";
	case HOOK_WAIT:
		return "wait";
	case HOOK_PAUSE:
		return "pause";
	case HOOK_WAIT_IDLE:
		return "wait_idle";
	case HOOK_LINK:
		return "link";
	case HOOK_CLOSED:
		return "closed";
	}
	return "?";
}

void client_resume(struct conn *c)
{
	if (c->state == CONN_JUSTFREE)
		return;
	sbuf_resume(&c->sbuf);
}

bool client_server_idle(const struct conn *c)
{
	return c->link == NULL || (server_is_ready(c->link) && !server_batch_owes(c->link));
}

bool client_server_in_batch(const struct conn *c)
{
	return c->link != NULL && c->link->batch_open;
}

bool client_server_batch_failed(const struct conn *c)
{
	return c->link != NULL && c->link->batch_open && c->link->batch_failed;
}

/* A Parse that PostgreSQL always refuses (a syntax error, or a name already in use). */
static const uint8_t abort_parse[] = "P\0\0\0\x2a"
                                     "syncbouncer abort\0"
                                     "syncbouncer abort\0"
                                     "\0\0";

bool client_abort_server_batch(struct conn *c)
{
	struct conn *s = c->link;

	_Static_assert(sizeof(abort_parse) - 1 == 43, "the Parse's length");
	if (s == NULL || !s->batch_open || s->batch_failed || s->batch_owed > 0 ||
	    server_ready_owed(s) != 0 || sbuf_has_pending(&c->sbuf) ||
	    !sbuf_queue(&s->sbuf, abort_parse, sizeof(abort_parse) - 1))
		return false;
	s->batch_owed++;
	s->batch_swallow_error = true;
	return true;
}

bool client_server_join_batch(struct conn *c)
{
	struct conn *s = c->link;

	if (s == NULL || server_ready_owed(s) != 0)
		return false;
	s->batch_open = true;
	s->at_rfq = false;
	return true;
}

void client_resume_when_idle(struct conn *c)
{
	if (c->state == CONN_JUSTFREE)
		return;
	if (client_server_idle(c))
		client_resume(c);
	else
		c->wait_server_idle = true; /* server_flushed() resumes it */
}

char client_txn_status(const struct conn *c)
{
	return c->link != NULL ? c->link->txn_status : 'I';
}

void client_server_linked(struct conn *c)
{
	sbuf_resume(&c->sbuf);
}

struct options_apply {
	struct conn *c;
	bool apply;          /* false: only look for refused names */
	const char *refused; /* a syncbouncer.* name (points into the parser's copy) */
	char refused_name[64];
	bool out_of_memory;
};

static bool options_setting(void *arg, const char *name, const char *value)
{
	struct options_apply *oa = arg;

	if (is_guard_setting(name)) {
		snprintf(oa->refused_name, sizeof(oa->refused_name), "%s", name);
		oa->refused = oa->refused_name;
		return false;
	}
	if (oa->apply && !param_set_value(&oa->c->params, name, value)) {
		oa->out_of_memory = true;
		return false;
	}
	return true;
}

/*
 * The options startup parameter, read as PostgreSQL reads it; its settings are replayed on every
 * server the client gets. A syncbouncer.* setting anywhere in it refuses the login (42501), even
 * when options is in ignore_startup_parameters; options that cannot be read refuse it too unless
 * ignored, and then none of them is applied. False when the client was closed.
 */
static bool apply_options(struct conn *c, const char *opts)
{
	struct options_apply oa = {.c = c, .apply = false};
	char err[160] = "", msg[224];

	if (!proto_parse_options(opts, options_setting, &oa, err, sizeof(err))) {
		if (oa.refused != NULL) {
			refuse_guard_setting(c, oa.refused);
			return false;
		}
		if (cf_list_has(c->b->cfg->ignore_startup_parameters, "options", true))
			return true;
		snprintf(msg, sizeof(msg), "unsupported options startup parameter: %s", err);
		client_fatal(c, "08P01", msg);
		return false;
	}
	oa.apply = true;
	if (!proto_parse_options(opts, options_setting, &oa, err, sizeof(err))) {
		client_fatal(c, "53200", "out of memory");
		return false;
	}
	return true;
}

/*
 * A client asked for protocol 3.x above 3.0, or for protocol options (_pq_.*): as PostgreSQL
 * does, answer NegotiateProtocolVersion (3.0, the options not recognised) and go on with 3.0.
 */
static bool negotiate_protocol(struct conn *c, int nopts, const char *const *opts)
{
	struct pktbuf pb;
	bool ok;

	pktbuf_init(&pb, 16384);
	pktbuf_write_negotiate_protocol(&pb, PROTO_VERSION(3, 0), nopts, opts);
	ok = sbuf_queue_pktbuf(&c->sbuf, &pb);
	pktbuf_free(&pb);
	if (!ok)
		client_close(c, "could not send NegotiateProtocolVersion");
	return ok;
}

/* ---- handing a client to the worker that serves its database (workers.h) ---- */

/*
 * A client on its way to another worker, taken right after its startup packet was read and
 * before anything else happened to it: what client_accept() and the TLS handshake gave it. It
 * keeps its id and its place in the process's client count (workers_clients_add()).
 */
struct client_handoff {
	struct sbuf_handoff sb;
	union conn_addr addr;
	char addr_str[INET6_ADDRSTRLEN];
	int port;
	uint64_t id, connect_time;
	bool tls_direct;
	struct bouncer *from; /* the worker that accepted it */
	char dbname[CONN_NAME_MAX];
};

/*
 * Nobody takes the client (the worker has left its loop, or there was no memory): it is told
 * so and closed, and leaves the process's client count.
 */
static void handoff_drop(void *arg, bool stopped)
{
	struct client_handoff *h = arg;
	struct pktbuf pb;

	pktbuf_init(&pb, 1024);
	pktbuf_write_error(&pb, "FATAL", stopped ? "57P01" : "53200",
	                   stopped ? "pgbouncer is shutting down" : "out of memory", NULL, NULL);
	sbuf_handoff_abort(&h->sb, pktbuf_failed(&pb) ? NULL : pb.data, pb.len);
	pktbuf_free(&pb);
	(void)workers_clients_add(h->from, -1);
}

/*
 * As a worker_fn on the worker that serves the client's database: the client goes on as if
 * this worker had accepted it and read its startup packet, which is offered again.
 */
static void client_adopt(struct bouncer *w, void *arg)
{
	struct client_handoff *h = arg;
	struct conn *c = calloc(1, sizeof(*c));
	uint64_t age, timeout = (uint64_t)w->cfg->client_login_timeout;

	if (c == NULL) {
		handoff_drop(h, false);
		return;
	}
	c->b = w;
	c->user = c->dbname = conn_no_name;
	list_init(&c->head);
	c->connect_time = h->connect_time;
	c->addr = h->addr;
	memcpy(c->addr_str, h->addr_str, sizeof(c->addr_str));
	c->port = h->port;
	c->tls_direct = h->tls_direct;
	if (!sbuf_init_handed(&c->sbuf, w->base, &h->sb, (size_t)w->cfg->pkt_buf,
	                      client_gather_max(w), &client_ops, c)) {
		free(c);
		handoff_drop(h, false);
		return;
	}
	c->sbuf.startup_phase = true;
	w->client_count++; /* the process's count has it already */
	c->id = h->id;
	conn_set_state(c, CL_LOGIN);
	if (w->shutting_down)
		c->refusal = "pgbouncer is shutting down";
	if (timeout > 0) {
		/* the clock is the process's: what the first worker's wait left of the timeout */
		age = bouncer_now_usec() - c->connect_time;
		if (!start_login_timer(c, age < timeout ? timeout - age : 1)) {
			client_fatal(c, "53200", "out of memory");
			return;
		}
	}
	if (w->cfg->log_connections)
		slog_info(c, "taken over from worker %d: database %s has synced tables",
		          worker_index(h->from), h->dbname);
	sbuf_resume(&c->sbuf);
}

/*
 * The worker that must serve the client of this startup packet (modules_home_worker()), or -1
 * for any; the database defaults to the user as in PostgreSQL. Names the normal path refuses
 * (missing, too long) stay here to be refused.
 */
static int startup_home_worker(const struct bouncer *b, const struct startup_info *info,
                               const char **dbname)
{
	const char *user = NULL, *db = NULL;

	for (int i = 0; i < info->nparams; i++) {
		if (strcmp(info->params[i].key, "user") == 0)
			user = info->params[i].value;
		else if (strcmp(info->params[i].key, "database") == 0)
			db = info->params[i].value;
	}
	if (db == NULL || db[0] == '\0')
		db = user;
	if (db == NULL || db[0] == '\0' || strlen(db) >= CONN_NAME_MAX)
		return -1;
	*dbname = db;
	return modules_home_worker(b, db);
}

/*
 * Hands the client whose startup packet pkt is to worker `to`: its socket, TLS state and bytes
 * go there, this worker forgets it. A client that cannot be handed over is told why (FATAL).
 */
static enum sbuf_action hand_over(struct conn *c, const struct sbuf_pkt *pkt, int to,
                                  const char *dbname)
{
	struct bouncer *b = c->b;
	struct client_handoff *h = calloc(1, sizeof(*h));

	if (h == NULL || !sbuf_hand_off(&c->sbuf, pkt, &h->sb)) {
		free(h);
		client_fatal(c, "53200", "out of memory");
		return SBUF_CLOSED;
	}
	h->addr = c->addr;
	memcpy(h->addr_str, c->addr_str, sizeof(h->addr_str));
	h->port = c->port;
	h->id = c->id;
	h->connect_time = c->connect_time;
	h->tls_direct = c->tls_direct;
	h->from = b;
	snprintf(h->dbname, sizeof(h->dbname), "%s", dbname);
	/* this worker's own count lets it go; the process's keeps it (handoff_drop() if not) */
	b->client_count--;
	conn_retire(c);
	(void)workers_post_owned(b, to, client_adopt, h, handoff_drop);
	return SBUF_CLOSED;
}

void client_close_served_elsewhere(struct bouncer *b)
{
	enum { BATCH = 64 };
	struct conn *doomed[BATCH];
	size_t found;

	if (b->workers == NULL)
		return;
	/* closing a client may move others between lists: gather first, then close */
	do {
		struct list *lists[3], *pit, *it;
		size_t n = 0;

		found = 0;
		list_for_each(it, &b->login_clients)
		{
			struct conn *c = list_entry(it, struct conn, head);
			int home = c->admin ? -1 : modules_home_worker(b, c->dbname);
			if (home >= 0 && home != worker_index(b) && found++ < BATCH)
				doomed[n++] = c;
		}
		list_for_each(pit, &b->pools)
		{
			struct pool *pool = list_entry(pit, struct pool, head);
			int home = modules_home_worker(b, pool->db_name);

			if (home < 0 || home == worker_index(b))
				continue;
			lists[0] = &pool->active_clients;
			lists[1] = &pool->waiting_clients;
			lists[2] = &pool->login_clients;
			for (int i = 0; i < 3; i++)
				list_for_each(it, lists[i])
				{
					if (found++ < BATCH)
						doomed[n++] = list_entry(it, struct conn, head);
				}
		}
		for (size_t i = 0; i < n; i++) {
			char msg[160];
			snprintf(msg, sizeof(msg),
			         "database %s has synced tables now: they are served by another "
			         "worker; reconnect",
			         doomed[i]->dbname);
			client_fatal(doomed[i], "57P01", msg);
		}
	} while (found > BATCH);
}

static enum sbuf_action handle_startup(struct conn *c, const struct sbuf_pkt *pkt)
{
	struct bouncer *b = c->b;
	struct startup_info info;
	enum startup_kind kind;
	const char *user = NULL, *db = NULL;
	const char *pq_opts[PROTO_STARTUP_MAX_PARAMS];
	int npq = 0;
	char msg[256];

	if (!pkt->complete)
		return SBUF_WAIT;
	kind = proto_parse_startup(pkt->body, pkt->body_len, &info);
	switch (kind) {
	case STARTUP_SSL:
		if (c->sbuf.tls != NULL) {
			client_close(c, "SSL req inside SSL");
			return SBUF_CLOSED;
		}
		if (!tls_client_side_enabled(b))
			goto refuse_encryption;
		/* bytes after the request came in the clear: they must not pass as encrypted */
		if (sbuf_unparsed(&c->sbuf) > pkt->len) {
			client_close(c, "unencrypted data after SSL request");
			return SBUF_CLOSED;
		}
		if (!sbuf_queue(&c->sbuf, "S", 1) || !sbuf_out_empty(&c->sbuf)) {
			client_close(c, "failed to ack SSL");
			return SBUF_CLOSED;
		}
		if (!tls_accept(b, &c->sbuf, client_tls_done, c)) {
			client_close(c, "failed to accept SSL");
			return SBUF_CLOSED;
		}
		/* the packet is passed over once the handshake resumes the sbuf */
		sbuf_pause(&c->sbuf);
		return SBUF_CONSUMED;
	case STARTUP_GSSENC:
	refuse_encryption:
		if (!sbuf_queue(&c->sbuf, "N", 1)) {
			client_close(c, "could not answer SSL request");
			return SBUF_CLOSED;
		}
		return SBUF_CONSUMED;
	case STARTUP_CANCEL: {
		struct cancel_job job = {info.cancel_pid, info.cancel_key, b, false};

		/* the kernel hands the cancel to any worker: the client may be another's */
		if (!cancel_on(b, &job) && b->workers != NULL)
			workers_each(b, cancel_elsewhere, &job);
		if (!job.found)
			admin_cancel(b, info.cancel_pid, info.cancel_key);
		client_uncount(b);
		conn_retire(c);
		return SBUF_CLOSED;
	}
	case STARTUP_BAD_VERSION:
		client_fatal(c, "08P01", "unsupported protocol version");
		return SBUF_CLOSED;
	case STARTUP_MALFORMED:
		client_fatal(c, "08P01", "bad startup packet");
		return SBUF_CLOSED;
	case STARTUP_NORMAL:
		break;
	}
	if (b->cfg->client_tls_sslmode >= SSLMODE_REQUIRE && c->sbuf.tls == NULL &&
	    c->addr.sa.sa_family != AF_UNIX) {
		client_fatal(c, "08P01", "SSL required");
		return SBUF_CLOSED;
	}
	if (c->refusal != NULL) {
		client_fatal(c, b->shutting_down ? "57P01" : "53300", c->refusal);
		return SBUF_CLOSED;
	}
	if (b->workers != NULL && worker_index(b) != 0) {
		/* a database whose state lives on one worker (synced tables) is served there */
		const char *home_db = NULL;
		int home = startup_home_worker(b, &info, &home_db);

		if (home >= 0 && home != worker_index(b))
			return hand_over(c, pkt, home, home_db);
	}
	for (int i = 0; i < info.nparams; i++) {
		const char *k = info.params[i].key, *v = info.params[i].value;
		if (strcmp(k, "user") == 0) {
			user = v;
		} else if (strcmp(k, "database") == 0) {
			db = v;
		} else if (strncmp(k, "_pq_.", 5) == 0) {
			/* protocol extensions: none is known; named back to the client below */
			if (npq < PROTO_STARTUP_MAX_PARAMS)
				pq_opts[npq++] = k;
		} else if (is_guard_setting(k)) {
			refuse_guard_setting(c, k);
			return SBUF_CLOSED;
		} else if (strcmp(k, "options") == 0) {
			if (v[0] && !apply_options(c, v))
				return SBUF_CLOSED;
		} else if (is_tracked(b, k)) {
			if (!param_set_value(&c->params, k, v)) {
				client_fatal(c, "53200", "out of memory");
				return SBUF_CLOSED;
			}
		} else if (!cf_list_has(b->cfg->ignore_startup_parameters, k, true)) {
			snprintf(msg, sizeof(msg), "unsupported startup parameter: %s", k);
			client_fatal(c, "08P01", msg);
			return SBUF_CLOSED;
		}
	}
	if (PROTO_VERSION_MINOR(info.version) > 0 || npq > 0) {
		if (!negotiate_protocol(c, npq, pq_opts))
			return SBUF_CLOSED;
	}
	if (b->cfg->application_name_add_host) {
		/* the server shows where the client came from; "app" stands in for no name */
		char name[256];
		const char *given = param_get(&c->params, "application_name");
		snprintf(name, sizeof(name), "%s - %s:%d", given && given[0] ? given : "app",
		         c->addr_str, c->port);
		if (!param_set_value(&c->params, "application_name", name)) {
			client_fatal(c, "53200", "out of memory");
			return SBUF_CLOSED;
		}
	}
	if (user == NULL || user[0] == '\0') {
		client_fatal(c, "08P01", "no username supplied");
		return SBUF_CLOSED;
	}
	if (strlen(user) >= CONN_NAME_MAX || (db && strlen(db) >= CONN_NAME_MAX)) {
		client_fatal(c, "08P01", "user or database name too long");
		return SBUF_CLOSED;
	}
	if (!conn_set_names(c, user, db && db[0] ? db : user)) {
		client_fatal(c, "53200", "out of memory");
		return SBUF_CLOSED;
	}
	c->admin = admin_is_console_db(c->dbname);
	c->sbuf.startup_phase = false;
	if (b->cfg->log_connections) {
		char tlsinfo[128];
		tls_conn_info(&c->sbuf, tlsinfo, sizeof(tlsinfo));
		slog_info(c, "login attempt: db=%s user=%s tls=%s", c->dbname, c->user,
		          tlsinfo[0] ? tlsinfo : "no");
	}
	return auth_start(c);
}

/*
 * Each chunk of a streamed oversized statement, before it leaves: a spelling that could reach a
 * syncbouncer.* setting ends the connection (the statement never reaches the server whole).
 */
static bool client_scan(void *owner, struct sbuf *sb, const uint8_t *data, size_t len)
{
	struct conn *c = owner;
	const char *const *needles = c->b->hook.stream_needles;
	uint8_t edge[32];
	size_t head = len < 15 ? len : 15, keep;

	(void)sb;
	if (needles == NULL)
		return true;
	memcpy(edge, c->scan_tail, c->scan_tail_len);
	memcpy(edge + c->scan_tail_len, data, head);
	if (proto_text_has_any_ci(edge, c->scan_tail_len + head, needles) ||
	    proto_text_has_any_ci(data, len, needles)) {
		client_fatal(
		        c, "54000",
		        "statement too large to inspect: it could reach a syncbouncer.* setting");
		return false;
	}
	/* the last 15 bytes seen, across chunks */
	keep = c->scan_tail_len + head;
	if (len >= 15) {
		memcpy(c->scan_tail, data + len - 15, 15);
		c->scan_tail_len = 15;
	} else {
		size_t drop = keep > 15 ? keep - 15 : 0;
		memmove(c->scan_tail, edge + drop, keep - drop);
		c->scan_tail_len = (uint8_t)(keep - drop);
	}
	return true;
}

/*
 * Answers the client's message with an ERROR and ReadyForQuery and skips it, once the server
 * has answered the client's earlier queries (SBUF_PAUSE until then).
 */
static enum sbuf_action answer_and_skip(struct conn *c, const char *sqlstate, const char *msg,
                                        const char *detail, const char *hint)
{
	struct pktbuf pb;
	bool ok;

	if (!client_server_idle(c)) {
		/* answers to earlier queries come first */
		c->wait_server_idle = true;
		return SBUF_PAUSE;
	}
	pktbuf_init(&pb, 1024);
	pktbuf_write_error(&pb, "ERROR", sqlstate, msg, detail, hint);
	pktbuf_write_ready(&pb, client_txn_status(c));
	ok = sbuf_queue_pktbuf(&c->sbuf, &pb);
	pktbuf_free(&pb);
	if (!ok) {
		client_close(c, "could not send an answer");
		return SBUF_CLOSED;
	}
	return SBUF_SKIP;
}

/*
 * A statement too big to hold whole that the query hook needs whole (it may write a synced table
 * or reach a syncbouncer.* setting): a simple Query is answered 54000 and skipped unread; in the
 * extended protocol, where the error would leave the client's batch half done, the connection
 * ends with 54000.
 */
static enum sbuf_action refuse_too_big(struct conn *c, const struct sbuf_pkt *pkt)
{
	char detail[160];

	snprintf(detail, sizeof(detail),
	         "The message is %u bytes; a statement that may write a synced table must fit in "
	         "%zu.",
	         pkt->len, c->sbuf.max_pkt);
	if (pkt->type != PQMSG_QUERY || c->hook_state != NULL) {
		client_fatal(c, "54000", "statement too large to inspect");
		return SBUF_CLOSED;
	}
	return answer_and_skip(c, "54000", "statement too large to inspect", detail,
	                       "Split the write into smaller statements.");
}

/*
 * pg_catalog.set_config(text, text, boolean): its OID is fixed in PostgreSQL's catalog
 * (pg_proc.dat) since 7.3.
 */
#define SET_CONFIG_OID 2078

/*
 * A FunctionCall message names its function by OID, so no statement text shows what it does:
 * one of set_config() could put syncbouncer.mode on the server unseen by the classifier. It is
 * refused with 42501 whatever its arguments (the classifier refuses a set_config() whose
 * setting name it cannot read, too); other functions (libpq's large objects) pass.
 */
static enum sbuf_action refuse_set_config_call(struct conn *c)
{
	return answer_and_skip(c, "42501",
	                       "setting syncbouncer.* is not allowed through syncbouncer",
	                       "A FunctionCall message of set_config() is refused.",
	                       "Use SET or set_config() in a statement.");
}

/*
 * A simple Query of a client that has used no prepared statement, on a server that tracks none,
 * whose first byte is a letter other than a 'd' (DEALLOCATE ALL and DISCARD ALL begin with one):
 * all ps_client_packet() would do with it is make both sides' statement state. Left out, the
 * server goes on reading none of its answers for statements (server_pass_types()).
 */
static bool untracked_query(const struct conn *c, const struct conn *s, const struct sbuf_pkt *pkt)
{
	uint8_t first;

	if (pkt->type != PQMSG_QUERY || c->ps != NULL || s->pss != NULL || pkt->body_avail == 0)
		return false;
	first = pkt->body[0] | 0x20;
	return first >= 'a' && first <= 'z' && first != 'd';
}

static enum sbuf_action client_packet(void *owner, struct sbuf *sb, const struct sbuf_pkt *pkt)
{
	struct conn *c = owner;
	struct conn *server;

	(void)sb;
	if (c->state == CL_LOGIN) {
		if (c->sbuf.startup_phase)
			return handle_startup(c, pkt);
		return auth_packet(c, pkt);
	}
	if (c->admin)
		return admin_handle_packet(c, pkt);
	if (c->state != CL_ACTIVE)
		return SBUF_PAUSE;
	if (pkt->type == PQMSG_TERMINATE) {
		/* not relayed, so not counted in the stats (as pgbouncer) */
		c->sbuf.bytes_in -= c->sbuf.bytes_in >= pkt->len ? pkt->len : c->sbuf.bytes_in;
		client_close(c, "client close request");
		return SBUF_CLOSED;
	}
	if (pkt->type == PQMSG_FUNCTION_CALL) {
		if (pkt->body_avail < 4 && !pkt->complete)
			return SBUF_WAIT; /* its OID is still on the way */
		if (pkt->body_avail >= 4 &&
		    (((uint32_t)pkt->body[0] << 24 | (uint32_t)pkt->body[1] << 16 |
		      (uint32_t)pkt->body[2] << 8 | (uint32_t)pkt->body[3]) == SET_CONFIG_OID))
			return refuse_set_config_call(c);
	}
	if (c->b->hook.inspect != NULL &&
	    (pkt->type == PQMSG_QUERY || pkt->type == PQMSG_PARSE || c->hook_state != NULL)) {
		switch (c->b->hook.inspect(c->b->hook.ctx, c, pkt)) {
		case HOOK_PASS:
			break;
		case HOOK_CONSUME:
			return SBUF_CONSUMED;
		case HOOK_WAIT:
			return pkt->too_big ? refuse_too_big(c, pkt) : SBUF_WAIT;
		case HOOK_PAUSE:
			/* the hook's work may take long: a client that goes away is seen at once */
			sbuf_read_while_paused(&c->sbuf);
			return SBUF_PAUSE;
		case HOOK_WAIT_IDLE:
			if (client_server_idle(c)) {
				client_fatal(c, "XX000",
				             "query hook waited for an idle server twice");
				return SBUF_CLOSED;
			}
			if (server_batch_owes(c->link)) {
				/* PostgreSQL holds a batch's answers until Sync or Flush: ask for
				 * them, after what was relayed before */
				static const uint8_t flush[5] = {PQMSG_FLUSH, 0, 0, 0, 4};
				if (sbuf_has_pending(&c->sbuf))
					return SBUF_FLUSH;
				if (!sbuf_queue(&c->link->sbuf, flush, sizeof(flush))) {
					client_close(c, "could not send a Flush to the server");
					return SBUF_CLOSED;
				}
			}
			c->wait_server_idle = true;
			return SBUF_PAUSE;
		case HOOK_LINK:
			if (c->link != NULL) {
				client_fatal(c, "XX000", "query hook asked for a server it has");
				return SBUF_CLOSED;
			}
			/* linked at once: the pool's resume shows the packet again at once */
			pool_request_server(c->pool, c);
			return SBUF_PAUSE;
		case HOOK_CLOSED:
			return SBUF_CLOSED;
		}
	}
	c->request_time = bouncer_now_usec();
	server = c->link;
	if (server == NULL) {
		pool_request_server(c->pool, c);
		server = c->link;
		if (server == NULL) {
			/*
			 * The read event stays armed while the client waits: taking it off and
			 * putting it back costs two epoll_ctl() per waited query, and a client that
			 * goes away while waiting is seen at once. What it sends meanwhile waits in
			 * its buffer.
			 */
			sbuf_read_while_paused(&c->sbuf);
			return SBUF_PAUSE;
		}
	}
	if (server->state != SV_ACTIVE || server->setting_params) {
		/* the server is being brought to the client's settings: a round trip at most */
		sbuf_read_while_paused(&c->sbuf);
		return SBUF_PAUSE;
	}
	if (c->pool->pool_mode != POOL_SESSION && c->b->cfg->max_prepared_statements > 0 &&
	    ps_client_wants(pkt->type) && !untracked_query(c, server, pkt)) {
		const char *msg = NULL;
		/* a long Query is only looked at by its first words */
		if (!pkt->complete && (pkt->type != PQMSG_QUERY || pkt->body_avail < 64)) {
			if (!pkt->too_big)
				return SBUF_WAIT;
			client_fatal(c, "54000", "prepared statement too large to register");
			return SBUF_CLOSED;
		}
		switch (ps_client_packet(c, server, pkt, c->b->cfg->max_prepared_statements,
		                         &msg)) {
		case PS_PASS:
			break;
		case PS_CONSUMED:
		case PS_REPLACED:
			server->at_rfq = false;
			server_batch_sent(server, pkt->type);
			if (pkt->type == PQMSG_QUERY) { /* rewritten, still owes a ReadyForQuery */
				server_owe_ready(server);
				c->pool->query_count++;
				stats_client_query(c, server);
			}
			return SBUF_CONSUMED;
		case PS_FLUSH:
			return SBUF_FLUSH;
		case PS_FAIL:
			client_fatal(c, "53200", msg != NULL ? msg : "out of memory");
			return SBUF_CLOSED;
		}
	}
	server->at_rfq = false;
	server_batch_sent(server, pkt->type);
	switch (pkt->type) {
	case PQMSG_QUERY:
	case PQMSG_SYNC:
	case PQMSG_FUNCTION_CALL:
		server_owe_ready(server);
		c->pool->query_count++;
		stats_client_query(c, server);
		break;
	default:
		break;
	}
	if (pkt->too_big && !pkt->complete &&
	    (pkt->type == PQMSG_QUERY || pkt->type == PQMSG_PARSE) &&
	    c->b->hook.stream_needles != NULL) {
		c->sbuf.scan_packet = true;
		c->scan_tail_len = 0;
	}
	return SBUF_SEND;
}
