/*
 * server — see include/server.h. A server conn is SV_LOGIN until its first ReadyForQuery (and
 * connect_query), then belongs to the pool. While linked, every server packet is relayed to the
 * client; ReadyForQuery and ParameterStatus are also read on the way to keep txn_status, the
 * count of ReadyForQuery owed (server_ready_owed()) and the tracked parameters right. Our own
 * statements (SETs for parameter sync, the reset query, connect_query) are answered to us: those
 * answers are consumed, never relayed.
 */
#include "server.h"

#include <openssl/crypto.h>
#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>
#include <unistd.h>

#include "bouncer.h"
#include "client.h"
#include "config.h"
#include "conn.h"
#include "dns.h"
#include "auth.h"
#include "md5pw.h"
#include "pool.h"
#include "prepared.h"
#include "proto.h"
#include "scram.h"
#include "stats.h"
#include "tls.h"

static enum sbuf_action server_packet(void *owner, struct sbuf *sb, const struct sbuf_pkt *pkt);
static void server_flushed(void *owner, struct sbuf *sb);
static void server_failed(void *owner, struct sbuf *sb, const char *reason);
static const uint8_t *server_pass_types(void *owner);

static const struct sbuf_ops server_ops = {
        .packet = server_packet,
        .flushed = server_flushed,
        .failed = server_failed,
        .pass_types = server_pass_types,
};

bool server_is_ready(const struct conn *s)
{
	return s->logged_in && server_ready_owed(s) == 0 && !s->setting_params && !s->resetting &&
	       !sbuf_has_pending(&s->sbuf);
}

/*
 * The batch bookkeeping (include/conn.h, batch_*): every Parse, Bind, Describe, Execute and
 * Close relayed owes one answer that ends it (ParseComplete, BindComplete, RowDescription or
 * NoData, CommandComplete, EmptyQueryResponse or PortalSuspended, CloseComplete; CopyInResponse
 * for an Execute of COPY FROM STDIN, whose CopyDone or CopyFail owes the CommandComplete); an
 * ErrorResponse ends the batch. A Sync, Query or FunctionCall starts a new one.
 */
void server_batch_sent(struct conn *s, uint8_t type)
{
	switch (type) {
	case PQMSG_SYNC:
	case PQMSG_QUERY:
	case PQMSG_FUNCTION_CALL:
		/* batch_swallow_error stays: the hook's Parse that fails is followed by the Sync */
		s->batch_owed = 0;
		s->batch_open = s->batch_failed = false;
		return;
	case PQMSG_COPY_DONE:
	case PQMSG_COPY_FAIL:
		/* the end of COPY data: owes an answer only to a batch's Execute (a Query's COPY
		 * ends with its ReadyForQuery) */
		if (!s->batch_open)
			return;
		/* fallthrough */
	case PQMSG_PARSE:
	case PQMSG_BIND:
	case PQMSG_DESCRIBE:
	case PQMSG_EXECUTE:
	case PQMSG_CLOSE:
		s->batch_owed++;
		s->batch_open = true;
		return;
	default:
		return;
	}
}

bool server_batch_owes(const struct conn *s)
{
	return s->batch_owed > 0 && !s->batch_failed;
}

/* An answer of the server on its way to the client. False: drop it (the hook's own error). */
static bool batch_answered(struct conn *s, uint8_t type)
{
	if (type == PQMSG_ERROR_RESPONSE && s->batch_swallow_error) {
		/* nothing was owed before that Parse: the server's next error is its answer */
		s->batch_swallow_error = false;
		return false;
	}
	if (!s->batch_open || server_ready_owed(s) > 0)
		return true; /* an answer to an earlier batch, or no batch */
	switch (type) {
	case PQMSG_ERROR_RESPONSE:
		s->batch_owed = 0;
		s->batch_failed = true;
		return true;
	case PQMSG_PARSE_COMPLETE:
	case PQMSG_BIND_COMPLETE:
	case PQMSG_CLOSE_COMPLETE:
	case PQMSG_ROW_DESCRIPTION:
	case PQMSG_NO_DATA:
	case PQMSG_COMMAND_COMPLETE:
	case PQMSG_EMPTY_QUERY_RESPONSE:
	case PQMSG_PORTAL_SUSPENDED:
	case PQMSG_COPY_IN_RESPONSE:
		if (s->batch_owed > 0)
			s->batch_owed--;
		return true;
	default:
		return true;
	}
}

static void forget_cancels(struct conn *s);

static uint64_t age_seconds(const struct conn *s)
{
	return (bouncer_now_usec() - s->connect_time) / 1000000;
}

void server_close(struct conn *s, const char *reason)
{
	struct pool *pool = s->pool;
	struct conn *client = s->link;

	if (s->state == CONN_JUSTFREE)
		return;
	slog_info(s, "closing because: %s (age=%llus)", reason, (unsigned long long)age_seconds(s));
	if (s->auth_query != NULL)
		auth_server_lost(s, reason);
	if (s->dns_req != NULL) {
		dns_cancel(s->dns_req);
		s->dns_req = NULL;
	}
	if (s->connecting) {
		event_del(s->ev_connect);
		s->connecting = false;
	}
	forget_cancels(s);
	if (client != NULL) {
		s->link = NULL;
		client->link = NULL;
		sbuf_set_dst(&client->sbuf, NULL);
		client_fatal(client, "08P01", reason);
	}
	if (s->logged_in && s->sbuf.fd >= 0 && !s->sbuf.broken) {
		static const uint8_t terminate[5] = {PQMSG_TERMINATE, 0, 0, 0, 4};
		if (!sbuf_queue(&s->sbuf, terminate, sizeof(terminate)))
			slog_debug(s, "could not send Terminate");
	}
	s->b->server_count--;
	if (s->limits_held != 0)
		pool_server_uncounted(s);
	conn_retire(s);
	pool_fill(pool);
}

/* client_msg: what waiting clients are told (NULL: msg) */
static void login_failed_msg(struct conn *s, const char *sqlstate, const char *msg,
                             const char *client_msg)
{
	struct pool *pool = s->pool;
	char reason[600], copy[512], state[6];

	/* msg may point into the server's buffer, which conn_retire() frees */
	snprintf(copy, sizeof(copy), "%s", client_msg != NULL ? client_msg : msg);
	snprintf(state, sizeof(state), "%s", sqlstate);
	snprintf(reason, sizeof(reason), "server login failed: %s", msg);
	s->logged_in = false;
	s->b->server_count--;
	if (s->limits_held != 0)
		pool_server_uncounted(s);
	slog_warning(s, "closing because: %s (age=%llus)", reason,
	             (unsigned long long)age_seconds(s));
	if (s->dns_req != NULL) {
		dns_cancel(s->dns_req);
		s->dns_req = NULL;
	}
	if (s->connecting) {
		event_del(s->ev_connect);
		s->connecting = false;
	}
	conn_retire(s);
	pool_login_failed(pool, state, copy);
}

static void login_failed(struct conn *s, const char *sqlstate, const char *msg)
{
	login_failed_msg(s, sqlstate, msg, NULL);
}

/* The pool's secret cannot answer the method the server asks for (pgbouncer's wording). */
static void wrong_password_type(struct conn *s, const char *why)
{
	slog_error(s, "%s", why);
	login_failed_msg(s, "08P01", "wrong password type",
	                 "server login failed: wrong password type");
}

void server_login_timeout(struct conn *s)
{
	login_failed(s, "08006", "connect timeout");
}

static bool send_pktbuf(struct conn *s, struct pktbuf *pb)
{
	bool ok = sbuf_queue_pktbuf(&s->sbuf, pb);
	pktbuf_free(pb);
	return ok;
}

static void send_startup(struct conn *s)
{
	struct pool *pool = s->pool;
	const char *keys[PARAM_MAX + 2], *vals[PARAM_MAX + 2];
	int n = 0;
	struct pktbuf pb;

	keys[n] = "user";
	vals[n++] = pool->server_user;
	keys[n] = "database";
	vals[n++] = pool->server_db;
	for (int i = 0; i < pool->server_startup.n && n < PARAM_MAX + 2; i++) {
		keys[n] = pool->server_startup.p[i].name;
		vals[n++] = pool->server_startup.p[i].value;
	}
	pktbuf_init(&pb, 8192);
	pktbuf_write_startup(&pb, keys, vals, n);
	if (!send_pktbuf(s, &pb)) {
		login_failed(s, "08006", "could not send the startup packet");
		return;
	}
	sbuf_resume(&s->sbuf);
}

static void server_tls_done(void *arg, bool ok, const char *err)
{
	struct conn *s = arg;

	if (!ok) {
		login_failed(s, "08006", err);
		return;
	}
	if (log_enabled(LOG_LVL_DEBUG)) {
		char info[128];
		tls_conn_info(&s->sbuf, info, sizeof(info));
		slog_debug(s, "TLS established: %s", info);
	}
	send_startup(s);
}

/* The one-byte answer to our SSLRequest. Only that byte is read: what follows is TLS. */
static void on_ssl_answer(evutil_socket_t fd, short what, void *arg)
{
	struct conn *s = arg;
	uint8_t answer;
	ssize_t n;

	s->connecting = false;
	if (what & EV_TIMEOUT) {
		login_failed(s, "08006", "connect timeout");
		return;
	}
	n = recv(fd, &answer, 1, 0);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
		event_add(s->ev_connect, NULL);
		s->connecting = true;
		return;
	}
	if (n <= 0) {
		login_failed(s, "08006", "server closed the connection during SSL negotiation");
		return;
	}
	if (answer == 'S') {
		if (!tls_connect(s->b, &s->sbuf, s->host, server_tls_done, s))
			login_failed(s, "08006", "could not start TLS");
		return;
	}
	if (answer == 'N' && s->b->cfg->server_tls_sslmode < SSLMODE_REQUIRE) {
		send_startup(s);
		return;
	}
	if (answer == 'N') {
		login_failed(s, "08006", "server refused SSL");
		return;
	}
	login_failed(s, "08P01", "bad answer to SSL request");
}

/* server_tls_sslmode other than disable asks for TLS first, except over a unix socket. */
static bool start_tls_request(struct conn *s, int fd)
{
	const struct config *cfg = s->b->cfg;
	struct pktbuf pb;
	struct timeval tv;

	pktbuf_init(&pb, 16);
	pktbuf_write_ssl_request(&pb);
	if (!send_pktbuf(s, &pb))
		return false;
	if (!conn_event_assign(s, &s->ev_connect, fd, EV_READ, on_ssl_answer))
		return false;
	tv.tv_sec = cfg->server_connect_timeout / 1000000;
	tv.tv_usec = cfg->server_connect_timeout % 1000000;
	event_add(s->ev_connect, cfg->server_connect_timeout > 0 ? &tv : NULL);
	s->connecting = true;
	return true;
}

static void on_connected(evutil_socket_t fd, short what, void *arg)
{
	struct conn *s = arg;
	int err = 0;
	socklen_t len = sizeof(err);
	char msg[256];

	s->connecting = false;
	if (what & EV_TIMEOUT) {
		login_failed(s, "08006", "connect timeout");
		return;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err != 0) {
		snprintf(msg, sizeof(msg), "connect failed: %s", strerror(err));
		login_failed(s, "08006", msg);
		return;
	}
	if (s->b->cfg->log_connections)
		slog_info(s, "new connection to server");
	if (s->b->cfg->server_tls_sslmode != SSLMODE_DISABLE && s->addr.sa.sa_family != AF_UNIX) {
		if (!start_tls_request(s, (int)fd))
			login_failed(s, "08006", "could not send the SSL request");
		return;
	}
	send_startup(s);
}

static void start_connect(struct conn *s, const struct sockaddr *sa, socklen_t salen)
{
	const struct config *cfg = s->b->cfg;
	int fd;
	char msg[256];
	struct timeval tv;

	fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(msg, sizeof(msg), "socket() failed: %s", strerror(errno));
		login_failed(s, "08006", msg);
		return;
	}
	if (sa->sa_family != AF_UNIX && !conn_tune_tcp(fd, cfg))
		log_warning("could not set the TCP options of a server connection: %s",
		            strerror(errno));
	if (!sbuf_init(&s->sbuf, s->b->base, fd, (size_t)cfg->pkt_buf, (size_t)cfg->max_packet_size,
	               &server_ops, s)) {
		close(fd);
		s->sbuf.fd = -1;
		login_failed(s, "53200", "out of memory");
		return;
	}
	if (sa->sa_family == AF_UNIX)
		s->addr.sa.sa_family = AF_UNIX;
	else if (salen <= sizeof(s->addr))
		memcpy(&s->addr, sa, salen);
	if (connect(fd, sa, salen) < 0 && errno != EINPROGRESS) {
		snprintf(msg, sizeof(msg), "connect failed: %s", strerror(errno));
		login_failed(s, "08006", msg);
		return;
	}
	if (!conn_event_assign(s, &s->ev_connect, fd, EV_WRITE, on_connected)) {
		login_failed(s, "53200", "out of memory");
		return;
	}
	tv.tv_sec = cfg->server_connect_timeout / 1000000;
	tv.tv_usec = cfg->server_connect_timeout % 1000000;
	event_add(s->ev_connect, cfg->server_connect_timeout > 0 ? &tv : NULL);
	s->connecting = true;
}

static void on_dns(void *arg, const struct dns_result *res)
{
	struct conn *s = arg;
	char msg[256];

	s->dns_req = NULL;
	if (res->status != 0 || res->naddrs == 0) {
		snprintf(msg, sizeof(msg), "could not resolve host \"%s\": %s", s->host,
		         res->error ? res->error : "no address");
		login_failed(s, "08006", msg);
		return;
	}
	start_connect(s, (const struct sockaddr *)&res->addrs[0], res->addrlens[0]);
}

/* Picks the next host of a "h1,h2" list, round robin. Returns a malloc'd copy. */
static char *pick_host(struct pool *pool)
{
	const char *p = pool->host;
	int count = 1, want;
	const char *start, *end;

	for (const char *q = p; *q; q++)
		if (*q == ',')
			count++;
	want = pool->host_index++ % count;
	start = p;
	for (int i = 0; i < want; i++)
		start = strchr(start, ',') + 1;
	end = strchr(start, ',');
	if (end == NULL)
		end = start + strlen(start);
	while (start < end && *start == ' ')
		start++;
	while (end > start && end[-1] == ' ')
		end--;
	return strndup(start, (size_t)(end - start));
}

/* The server's unix socket: its host is the directory. False when the path is too long. */
static bool unix_addr(const struct conn *s, struct sockaddr_un *un)
{
	const char *dir = s->host[0] ? s->host : "/var/run/postgresql";

	memset(un, 0, sizeof(*un));
	un->sun_family = AF_UNIX;
	return (size_t)snprintf(un->sun_path, sizeof(un->sun_path), "%s/.s.PGSQL.%d", dir,
	                        s->port) < sizeof(un->sun_path);
}

bool server_launch(struct pool *pool)
{
	struct bouncer *b = pool->b;
	struct conn *s = calloc(1, sizeof(*s));
	struct sockaddr_storage ss;
	socklen_t sslen = 0;

	if (s == NULL)
		return false;
	s->b = b;
	s->is_server = true;
	s->user = s->dbname = conn_no_name;
	s->pool = pool;
	s->sbuf.fd = -1;
	list_init(&s->head);
	s->connect_time = bouncer_now_usec();
	s->txn_status = 'I';
	s->host = pick_host(pool);
	if (s->host == NULL) {
		free(s);
		return false;
	}
	snprintf(s->addr_str, sizeof(s->addr_str), "%s", s->host[0] == '/' ? "unix" : s->host);
	s->port = pool->port;
	s->limits_held = pool->launch_limits; /* counted by launch_shared() */
	pool->launch_limits = 0;
	b->server_count++;
	conn_set_state(s, SV_LOGIN);

	memset(&ss, 0, sizeof(ss));
	if (s->host[0] == '/' || s->host[0] == '\0') {
		if (!unix_addr(s, (struct sockaddr_un *)&ss)) {
			login_failed(s, "08006", "unix socket path too long");
			return true;
		}
		sslen = sizeof(struct sockaddr_un);
	} else {
		struct sockaddr_in *in = (struct sockaddr_in *)&ss;
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
		if (inet_pton(AF_INET, s->host, &in->sin_addr) == 1) {
			in->sin_family = AF_INET;
			in->sin_port = htons((uint16_t)pool->port);
			sslen = sizeof(*in);
		} else if (inet_pton(AF_INET6, s->host, &in6->sin6_addr) == 1) {
			in6->sin6_family = AF_INET6;
			in6->sin6_port = htons((uint16_t)pool->port);
			sslen = sizeof(*in6);
		}
	}
	if (sslen > 0) {
		start_connect(s, (struct sockaddr *)&ss, sslen);
		return true;
	}
	s->dns_req = dns_lookup(b->dns, s->host, pool->port, on_dns, s);
	if (s->dns_req == NULL)
		login_failed(s, "53200", "out of memory for a DNS lookup");
	return true;
}

/*
 * Appends one set_config() call. set_config takes the value as a configuration-file string, so
 * list settings (search_path) keep their meaning; both arguments are E'' literals, escaped.
 */
static void append_set(struct pktbuf *pb, int index, const char *name, const char *value)
{
	pktbuf_put_bytes(pb, index == 0 ? "SELECT " : ", ", index == 0 ? 7 : 2);
	pktbuf_put_bytes(pb, "pg_catalog.set_config(", 22);
	pktbuf_put_sql_literal(pb, name);
	pktbuf_put_bytes(pb, ", ", 2);
	pktbuf_put_sql_literal(pb, value);
	pktbuf_put_bytes(pb, ", false)", 8);
}

/*
 * Whether a client parameter is replayed on its server. syncbouncer.* never is: the guard trigger
 * trusts it, and the login already refuses it on every path; this is the last line.
 */
static bool param_replayable(const struct conn *s, const char *name, uint32_t hash,
                             const char *value)
{
	const char *sv = param_get_hashed(&s->params, name, hash);

	if (strncasecmp(name, "syncbouncer.", 12) == 0)
		return false;
	return sv == NULL || strcmp(sv, value) != 0;
}

/*
 * Whether the server already runs with every parameter of c. Decided once per (server parameters,
 * client parameter slots) pair: the clients of a pool mostly share one block of slots
 * (param_share()), and a server's parameters change only when it reports a new value, so the
 * usual answer is two comparisons. The server holds the block it last found in force, so that
 * block cannot change under it.
 */
static bool params_in_force(struct conn *s, struct conn *c)
{
	if (s->in_force != NULL && s->in_force_gen == s->params.gen &&
	    param_holds(s->in_force, &c->params))
		return true;
	for (int i = 0; i < c->params.n; i++)
		if (param_replayable(s, c->params.p[i].name, c->params.p[i].hash,
		                     c->params.p[i].value))
			return false;
	param_drop(s->in_force);
	s->in_force = param_hold(&c->params);
	s->in_force_gen = s->params.gen;
	return true;
}

void server_link(struct conn *s, struct conn *c)
{
	struct pktbuf pb;
	int nset = 0;

	stats_server_assigned(s, c);
	s->link = c;
	s->served = true;
	s->client_state = true;
	c->link = s;
	conn_set_state(s, SV_ACTIVE);
	/* a client between transactions stays active: it does not move in its list */
	if (c->state != CL_ACTIVE)
		conn_set_state(c, CL_ACTIVE);
	sbuf_set_dst(&c->sbuf, &s->sbuf);
	sbuf_set_dst(&s->sbuf, &c->sbuf);

	/* the common case, nothing differs, is decided before any buffer is made */
	if (params_in_force(s, c)) {
		client_server_linked(c);
		return;
	}
	pktbuf_init(&pb, 65536);
	pktbuf_start_msg(&pb, PQMSG_QUERY);
	for (int i = 0; i < c->params.n; i++) {
		if (!param_replayable(s, c->params.p[i].name, c->params.p[i].hash,
		                      c->params.p[i].value))
			continue;
		append_set(&pb, nset, c->params.p[i].name, c->params.p[i].value);
		nset++;
	}
	pktbuf_put_u8(&pb, 0);
	pktbuf_finish_msg(&pb);
	slog_debug(s, "syncing %d parameters for the client", nset);
	s->setting_params = true;
	server_owe_ready(s);
	if (!send_pktbuf(s, &pb)) {
		server_close(s, "could not send parameter SET");
		return;
	}
}

/* After our SETs succeeded the server holds the client's values, reported or not. */
static void params_synced(struct conn *s)
{
	struct conn *c = s->link;

	s->setting_params = false;
	if (c == NULL)
		return;
	for (int i = 0; i < c->params.n; i++) {
		if (!param_set_value(&s->params, c->params.p[i].name, c->params.p[i].value)) {
			server_close(s, "out of memory");
			return;
		}
	}
	client_server_linked(c);
}

void server_release(struct conn *s)
{
	const struct config *cfg = s->b->cfg;
	struct pool *pool = s->pool;

	if (s->state == CONN_JUSTFREE)
		return;
	/* a batch without its Sync holds an open transaction: nobody else may commit it */
	if (!server_is_ready(s) || s->txn_status != 'I' || s->batch_open) {
		server_close(s, "server was not ready at release");
		return;
	}
	ps_server_released(s);
	s->at_rfq = false;
	if (s->cancels_in_flight > 0) {
		/* a cancel for the last client may still land: keep it until PostgreSQL answered */
		conn_set_state(s, SV_USED);
		s->release_deferred = true;
		return;
	}
	if (s->close_needed) {
		server_close(s, "database configuration changed");
		return;
	}
	if (pool->server_lifetime > 0 &&
	    bouncer_now_usec() - s->connect_time >= (uint64_t)pool->server_lifetime) {
		server_close(s, "server lifetime over");
		return;
	}
	if (cfg->server_reset_query[0] &&
	    (pool->pool_mode == POOL_SESSION || cfg->server_reset_query_always)) {
		struct pktbuf pb;
		conn_set_state(s, SV_TESTED);
		s->resetting = true;
		s->reset_failed = false;
		server_owe_ready(s);
		ps_server_forget_all(s);
		pktbuf_init(&pb, 8192);
		pktbuf_write_query(&pb, cfg->server_reset_query);
		if (!send_pktbuf(s, &pb))
			server_close(s, "could not send the reset query");
		return;
	}
	pool_server_ready(pool, s);
}

void server_check(struct conn *s)
{
	struct pktbuf pb;

	slog_debug(s, "checking the server before use");
	conn_set_state(s, SV_TESTED);
	s->checking = true;
	server_owe_ready(s);
	pktbuf_init(&pb, 8192);
	/* "<empty>" (the default) stands for the empty query: the cheapest round trip */
	pktbuf_write_query(&pb, strcmp(s->b->cfg->server_check_query, "<empty>") == 0
	                                ? ""
	                                : s->b->cfg->server_check_query);
	if (!send_pktbuf(s, &pb))
		server_close(s, "test query failed");
}

/* After the reset query, settings that the server does not report are back at their defaults. */
static void forget_unreported(struct conn *s)
{
	struct param_set keep = {0};
	struct pool *pool = s->pool;
	int i;

	/* usually every setting is one the server reports: then there is nothing to forget, and
	 * the set (and the client parameters found in force with it) stays as it is */
	for (i = 0; i < s->params.n; i++)
		if (param_get_hashed(&pool->welcome, s->params.p[i].name, s->params.p[i].hash) ==
		    NULL)
			break;
	if (i == s->params.n)
		return;
	for (i = 0; i < s->params.n; i++) {
		if (param_get_hashed(&pool->welcome, s->params.p[i].name, s->params.p[i].hash) ==
		    NULL)
			continue;
		if (!param_set_value(&keep, s->params.p[i].name, s->params.p[i].value))
			break;
	}
	param_clear(&s->params);
	s->params = keep;
	param_touch(&s->params);
}

void server_discarded(struct conn *s)
{
	ps_server_forget_all(s);
	forget_unreported(s);
	s->client_state = false;
}

/* Whether a reset query is exactly DISCARD ALL (which leaves nothing of a client's session). */
static bool is_discard_all(const char *q)
{
	size_t n;

	while (*q == ' ' || *q == '\t' || *q == '\n')
		q++;
	if (strncasecmp(q, "DISCARD", 7) != 0 || (q[7] != ' ' && q[7] != '\t' && q[7] != '\n'))
		return false;
	q += 7;
	while (*q == ' ' || *q == '\t' || *q == '\n')
		q++;
	if (strncasecmp(q, "ALL", 3) != 0)
		return false;
	q += 3;
	n = strspn(q, " \t\n;");
	return q[n] == '\0';
}

static enum sbuf_action login_packet(struct conn *s, const struct sbuf_pkt *pkt)
{
	struct pool *pool = s->pool;
	struct pktbuf pb;
	char msg[512];

	if (!pkt->complete)
		return SBUF_WAIT;
	switch (pkt->type) {
	case PQMSG_AUTHENTICATION: {
		uint32_t code;
		const uint8_t *rest;
		size_t rest_len;
		char out[SCRAM_MAX_MSG + 1];
		char md5[MD5PW_SIZE], tmp[MD5PW_SIZE];
		const char *secret = auth_pool_secret(pool);

		if (!proto_parse_auth(pkt->body, pkt->body_len, &code, &rest, &rest_len)) {
			login_failed(s, "08P01", "bad authentication request from server");
			return SBUF_CLOSED;
		}
		pktbuf_init(&pb, 4096);
		switch (code) {
		case 0:
			pktbuf_free(&pb);
			return SBUF_CONSUMED;
		case 3:
			if (!secret[0])
				goto no_password;
			if (md5pw_is_md5(secret) || scram_is_secret(secret)) {
				pktbuf_free(&pb);
				wrong_password_type(
				        s,
				        "cannot do plain-text authentication: wrong password type");
				return SBUF_CLOSED;
			}
			pktbuf_write_password(&pb, secret);
			break;
		case 5:
			if (rest_len != 4 || !secret[0])
				goto no_password;
			if (scram_is_secret(secret)) {
				pktbuf_free(&pb);
				wrong_password_type(
				        s, "cannot do MD5 authentication: wrong password type");
				return SBUF_CLOSED;
			}
			if (md5pw_is_md5(secret)) {
				if (!md5pw_salted(secret, rest, md5))
					goto no_password;
			} else {
				if (!md5pw_encrypt(secret, pool->server_user, tmp) ||
				    !md5pw_salted(tmp, rest, md5))
					goto no_password;
			}
			pktbuf_write_password(&pb, md5);
			break;
		case 10:
			if (!proto_sasl_has_mech(rest, rest_len, "SCRAM-SHA-256") || !secret[0])
				goto no_password;
			if (md5pw_is_md5(secret)) {
				pktbuf_free(&pb);
				wrong_password_type(
				        s, "cannot do SCRAM authentication: wrong password type");
				return SBUF_CLOSED;
			}
			s->scram_cli = calloc(1, sizeof(*s->scram_cli));
			if (s->scram_cli == NULL)
				goto scram_failed;
			if (scram_is_secret(secret)) {
				/* a stored secret cannot answer; a client's proof of it can */
				uint8_t ck[SCRAM_KEY_LEN], sk[SCRAM_KEY_LEN];
				if (!auth_pool_scram_keys(pool, secret, ck, sk)) {
					pktbuf_free(&pb);
					wrong_password_type(
					        s,
					        "cannot do SCRAM authentication: password is SCRAM "
					        "secret but client authentication did not provide "
					        "SCRAM keys");
					return SBUF_CLOSED;
				}
				scram_client_init_keys(s->scram_cli, ck, sk);
				OPENSSL_cleanse(ck, sizeof(ck));
				OPENSSL_cleanse(sk, sizeof(sk));
			} else if (!scram_client_init_cached(s->scram_cli, secret,
			                                     auth_scram_cache(s->b))) {
				goto scram_failed;
			}
			if (!scram_client_first(s->scram_cli, out, sizeof(out)))
				goto scram_failed;
			pktbuf_write_sasl_initial(&pb, "SCRAM-SHA-256", out, strlen(out));
			break;
		case 11:
			if (s->scram_cli == NULL ||
			    !scram_client_final(s->scram_cli, (const char *)rest, rest_len, out,
			                        sizeof(out)))
				goto scram_failed;
			pktbuf_write_sasl_response(&pb, out, strlen(out));
			break;
		case 12:
			pktbuf_free(&pb);
			if (s->scram_cli == NULL ||
			    !scram_client_verify(s->scram_cli, (const char *)rest, rest_len)) {
				login_failed(s, "28000", "server SCRAM signature is wrong");
				return SBUF_CLOSED;
			}
			return SBUF_CONSUMED;
		default:
			pktbuf_free(&pb);
			snprintf(msg, sizeof(msg), "unsupported authentication method %u", code);
			login_failed(s, "08P01", msg);
			return SBUF_CLOSED;
		}
		if (!send_pktbuf(s, &pb)) {
			login_failed(s, "08006", "could not send the password");
			return SBUF_CLOSED;
		}
		return SBUF_CONSUMED;
	no_password:
		pktbuf_free(&pb);
		snprintf(
		        msg, sizeof(msg),
		        "no usable password for user \"%s\" to log into the server (auth method %u)",
		        pool->server_user, code);
		login_failed(s, "28000", msg);
		return SBUF_CLOSED;
	scram_failed:
		pktbuf_free(&pb);
		snprintf(msg, sizeof(msg), "SCRAM authentication with the server failed: %s",
		         s->scram_cli && s->scram_cli->error ? s->scram_cli->error : "error");
		login_failed(s, "28000", msg);
		return SBUF_CLOSED;
	}
	case PQMSG_PARAMETER_STATUS: {
		const char *name, *value;
		if (!proto_parse_param_status(pkt->body, pkt->body_len, &name, &value) ||
		    !param_set_value(&s->params, name, value)) {
			login_failed(s, "08P01", "bad ParameterStatus from server");
			return SBUF_CLOSED;
		}
		return SBUF_CONSUMED;
	}
	case PQMSG_BACKEND_KEY_DATA:
		if (!proto_parse_backend_key(pkt->body, pkt->body_len, &s->be_pid, &s->be_key)) {
			login_failed(s, "08P01", "bad BackendKeyData from server");
			return SBUF_CLOSED;
		}
		return SBUF_CONSUMED;
	case PQMSG_ERROR_RESPONSE: {
		struct pg_error e;
		if (!proto_parse_error(pkt->body, pkt->body_len, &e) || e.message == NULL) {
			login_failed(s, "08P01", "bad ErrorResponse from server");
			return SBUF_CLOSED;
		}
		login_failed(s, e.sqlstate ? e.sqlstate : "08P01", e.message);
		return SBUF_CLOSED;
	}
	case PQMSG_NOTICE_RESPONSE:
		return SBUF_CONSUMED;
	case PQMSG_READY_FOR_QUERY:
		if (s->connect_query_running) {
			s->connect_query_running = false;
		} else if (pool->connect_query[0]) {
			pktbuf_init(&pb, 65536);
			pktbuf_write_query(&pb, pool->connect_query);
			s->connect_query_running = true;
			if (!send_pktbuf(s, &pb)) {
				login_failed(s, "08006", "could not send connect_query");
				return SBUF_CLOSED;
			}
			return SBUF_CONSUMED;
		}
		s->logged_in = true;
		s->txn_status = 'I';
		/* the stats count relayed traffic, as pgbouncer's: the login is not part of it */
		s->sbuf.bytes_in = 0;
		if (!pool->welcome_ready) {
			param_clear(&pool->welcome);
			for (int i = 0; i < s->params.n; i++)
				if (!param_set_value(&pool->welcome, s->params.p[i].name,
				                     s->params.p[i].value))
					break;
		}
		if (s->b->cfg->log_connections)
			slog_info(s, "server login done");
		pool_server_ready(pool, s);
		return SBUF_CONSUMED;
	default:
		if (s->connect_query_running)
			return SBUF_CONSUMED;
		snprintf(msg, sizeof(msg), "unexpected message '%c' during login", pkt->type);
		login_failed(s, "08P01", msg);
		return SBUF_CLOSED;
	}
}

/* Whether an answer of s goes on to its client c: the query hook may keep it (hook_answers). */
static bool hook_relays(const struct conn *s, struct conn *c, const struct sbuf_pkt *pkt)
{
	const struct query_hook *h = &s->b->hook;

	return !c->hook_answers || h->server_answer == NULL || h->server_answer(h->ctx, c, pkt);
}

static enum sbuf_action server_packet(void *owner, struct sbuf *sb, const struct sbuf_pkt *pkt)
{
	struct conn *s = owner;
	struct conn *c;
	bool own = false; /* the answer is to our own statement */

	(void)sb;
	if (!s->logged_in)
		return login_packet(s, pkt);
	if (s->auth_query != NULL)
		return auth_server_packet(s, pkt);
	c = s->link;
	own = s->setting_params || s->resetting || s->checking;
	if (ps_server_wants(s, pkt->type)) {
		if (!pkt->complete)
			return SBUF_WAIT;
		switch (ps_server_packet(s, pkt)) {
		case PS_PASS:
			break;
		case PS_CONSUMED:
			return SBUF_CONSUMED;
		case PS_REPLACED:
			(void)batch_answered(s, PQMSG_PARSE_COMPLETE);
			return SBUF_CONSUMED;
		case PS_FLUSH:
			return SBUF_FLUSH;
		case PS_FAIL:
			server_close(s, "out of memory");
			return SBUF_CLOSED;
		}
	}
	if (!own && !batch_answered(s, pkt->type))
		return SBUF_SKIP;
	switch (pkt->type) {
	case PQMSG_READY_FOR_QUERY:
		if (!pkt->complete)
			return SBUF_WAIT;
		if (pkt->body_len != 1) {
			server_close(s, "bad ReadyForQuery from server");
			return SBUF_CLOSED;
		}
		s->txn_status = (char)pkt->body[0];
		s->request_time = bouncer_now_usec();
		server_ready_arrived(s);
		if (s->setting_params && server_ready_owed(s) == 0) {
			params_synced(s);
			return SBUF_CONSUMED;
		}
		if (s->resetting && server_ready_owed(s) == 0) {
			s->resetting = false;
			if (s->txn_status != 'I') {
				server_close(s, "reset query left a transaction open");
				return SBUF_CLOSED;
			}
			forget_unreported(s);
			if (is_discard_all(s->b->cfg->server_reset_query) && !s->reset_failed)
				s->client_state = false;
			pool_server_ready(s->pool, s);
			return SBUF_CONSUMED;
		}
		if (s->checking && server_ready_owed(s) == 0) {
			s->checking = false;
			if (s->txn_status != 'I') {
				server_close(s, "test query left a transaction open");
				return SBUF_CLOSED;
			}
			pool_server_ready(s->pool, s);
			return SBUF_CONSUMED;
		}
		if (c == NULL || own)
			return SBUF_CONSUMED;
		if (!hook_relays(s, c, pkt)) {
			/* the end of a statement the hook ran: no release point */
			s->at_rfq = false;
			return SBUF_CONSUMED;
		}
		if (s->txn_status != 'I' && s->pool->pool_mode == POOL_STATEMENT) {
			server_close(s, "transaction blocks not allowed in statement pooling mode");
			return SBUF_CLOSED;
		}
		s->pool->xact_count += s->txn_status == 'I';
		stats_server_ready_for_query(s);
		s->at_rfq = server_ready_owed(s) == 0;
		return SBUF_SEND;
	case PQMSG_PARAMETER_STATUS: {
		const char *name, *value;
		if (!pkt->complete)
			return SBUF_WAIT;
		if (!proto_parse_param_status(pkt->body, pkt->body_len, &name, &value) ||
		    !param_set_value(&s->params, name, value)) {
			server_close(s, "bad ParameterStatus from server");
			return SBUF_CLOSED;
		}
		if (c != NULL && !own && param_get(&c->params, name) != NULL &&
		    !param_set_value(&c->params, name, value)) {
			server_close(s, "out of memory");
			return SBUF_CLOSED;
		}
		return c != NULL && !own ? SBUF_SEND : SBUF_CONSUMED;
	}
	case PQMSG_ERROR_RESPONSE:
		if (own) {
			if (!pkt->complete)
				return SBUF_WAIT;
			{
				struct pg_error e;
				if (s->resetting)
					s->reset_failed = true;
				if (proto_parse_error(pkt->body, pkt->body_len, &e) && e.message)
					slog_warning(s, "%s failed: %s",
					             s->resetting  ? "reset query"
					             : s->checking ? "server check query"
					                           : "parameter SET",
					             e.message);
			}
			return SBUF_CONSUMED;
		}
		break;
	default:
		break;
	}
	if (own)
		return SBUF_SKIP;
	if (c == NULL) {
		if (pkt->type == PQMSG_NOTICE_RESPONSE || pkt->type == PQMSG_NOTIFICATION_RESPONSE)
			return SBUF_SKIP;
		server_close(s, "idle server got something");
		return SBUF_CLOSED;
	}
	return hook_relays(s, c, pkt) ? SBUF_SEND : SBUF_SKIP;
}

/*
 * The answers server_packet() forwards without reading them, when its server is linked to a
 * client, runs no statement of its own and the query hook does not see its answers
 * (hook_answers, set outside the server's rounds): every type but ReadyForQuery and
 * ParameterStatus, and while prepared statements are tracked, but the ones ps_server_packet()
 * reads. What
 * server_pass_types() answers changes only where server_packet() answers other than SBUF_SEND
 * (a statement of its own ends, the link goes) or outside a round (the link is made, the
 * first statement is tracked); the tracked set passes less than the plain one, so a server
 * whose statements were forgotten (DISCARD ALL) loses nothing by keeping it to the round's end.
 * While the client has a batch open (no Sync yet) every answer is read: they are counted.
 */
static _Thread_local uint8_t pass_plain[32], pass_tracked[32]; /* per worker's thread */
static _Thread_local bool pass_made;

static void pass_sets_make(void)
{
	for (int t = 0; t < 256; t++) {
		bool seen = t == PQMSG_READY_FOR_QUERY || t == PQMSG_PARAMETER_STATUS;
		bool tracked = seen || ps_server_may_want((uint8_t)t);

		if (!seen)
			pass_plain[t >> 3] |= (uint8_t)(1u << (t & 7));
		if (!tracked)
			pass_tracked[t >> 3] |= (uint8_t)(1u << (t & 7));
	}
	pass_made = true;
}

static const uint8_t *server_pass_types(void *owner)
{
	const struct conn *s = owner;

	if (!s->logged_in || s->auth_query != NULL || s->link == NULL || s->setting_params ||
	    s->resetting || s->checking || s->link->hook_answers)
		return NULL;
	/*
	 * The answers to a batch sent since the client's last Sync are counted (batch_answered()):
	 * a batch the hook keeps, or a pipeline's next batch. Both change only in the client's
	 * rounds, or where server_packet() skips the query hook's error.
	 */
	if (s->batch_open || s->batch_swallow_error)
		return NULL;
	if (!pass_made)
		pass_sets_make();
	return s->pss != NULL ? pass_tracked : pass_plain;
}

static void server_flushed(void *owner, struct sbuf *sb)
{
	struct conn *s = owner;
	struct conn *c = s->link;

	(void)sb;
	if (c != NULL && c->wait_server_idle && client_server_idle(c)) {
		c->wait_server_idle = false;
		client_resume(c);
		return;
	}
	/* a batch sent after the last Sync keeps its server until its own Sync is answered */
	if (c == NULL || !s->at_rfq || !server_is_ready(s) || s->txn_status != 'I' || s->batch_open)
		return;
	if (s->pool->pool_mode == POOL_SESSION)
		return;
	pool_release_server(c);
}

static void server_failed(void *owner, struct sbuf *sb, const char *reason)
{
	struct conn *s = owner;
	char msg[256];

	(void)sb;
	if (!s->logged_in) {
		snprintf(msg, sizeof(msg), "server closed the connection during login (%s)",
		         reason);
		login_failed(s, "08006", msg);
		return;
	}
	server_close(s, strcmp(reason, "EOF") == 0 ? "server conn crashed?" : reason);
}

/*
 * A cancel request in flight: its own socket to the backend's server. PostgreSQL closes it once
 * the cancel was delivered; until then (or cancel_wait_timeout) the backend stays with the
 * client it was cancelled for.
 */
struct cancel_req {
	struct list head; /* on bouncer->cancel_conns */
	struct bouncer *b;
	struct conn *server; /* NULL once the server is gone */
	struct event ev;
	int fd;
	uint8_t pkt[16];
	size_t sent;
};

static void cancel_finish(struct cancel_req *cr)
{
	struct conn *s = cr->server;

	event_del(&cr->ev);
	close(cr->fd);
	list_del(&cr->head);
	free(cr);
	if (s == NULL)
		return;
	s->cancels_in_flight--;
	if (s->cancels_in_flight == 0 && s->release_deferred && s->state == SV_USED) {
		s->release_deferred = false;
		server_release(s);
	}
}

void server_cancels_free(struct bouncer *b)
{
	struct list *it, *tmp;

	list_for_each_safe(it, tmp, &b->cancel_conns)
	{
		struct cancel_req *cr = list_entry(it, struct cancel_req, head);
		cr->server = NULL;
		cancel_finish(cr);
	}
}

static void forget_cancels(struct conn *s)
{
	struct list *it;

	list_for_each(it, &s->b->cancel_conns)
	{
		struct cancel_req *cr = list_entry(it, struct cancel_req, head);
		if (cr->server == s)
			cr->server = NULL;
	}
	s->cancels_in_flight = 0;
	s->release_deferred = false;
}

static void cancel_io(evutil_socket_t fd, short what, void *arg)
{
	struct cancel_req *cr = arg;
	struct timeval tv;
	int64_t wait = cr->b->cfg->cancel_wait_timeout;

	if (what & EV_TIMEOUT) {
		if (cr->server != NULL)
			slog_info(cr->server, "cancel request not answered in time");
		cancel_finish(cr);
		return;
	}
	if (cr->sent < sizeof(cr->pkt)) {
		ssize_t n = send(fd, cr->pkt + cr->sent, sizeof(cr->pkt) - cr->sent, MSG_NOSIGNAL);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n <= 0) {
			cancel_finish(cr);
			return;
		}
		cr->sent += (size_t)n;
		if (cr->sent < sizeof(cr->pkt))
			return;
		/* now wait for PostgreSQL to close the connection: the cancel was delivered */
		event_del(&cr->ev);
		event_assign(&cr->ev, cr->b->base, cr->fd, EV_READ | EV_PERSIST, cancel_io, cr);
		tv.tv_sec = wait > 0 ? (time_t)(wait / 1000000) : 10;
		tv.tv_usec = wait > 0 ? (suseconds_t)(wait % 1000000) : 0;
		event_add(&cr->ev, &tv);
		return;
	}
	{
		uint8_t buf[256];
		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		cancel_finish(cr);
	}
}

void server_send_cancel(struct conn *s)
{
	struct cancel_req *cr;
	struct sockaddr_un un;
	const struct sockaddr *sa = &s->addr.sa;
	socklen_t len;
	struct timeval tv;
	int64_t wait = s->b->cfg->cancel_wait_timeout;
	uint32_t v;

	switch (s->addr.sa.sa_family) {
	case AF_INET:
		len = sizeof(struct sockaddr_in);
		break;
	case AF_INET6:
		len = sizeof(struct sockaddr_in6);
		break;
	case AF_UNIX:
		if (!unix_addr(s, &un))
			return;
		sa = (const struct sockaddr *)&un;
		len = sizeof(un);
		break;
	default:
		return;
	}
	cr = calloc(1, sizeof(*cr));
	if (cr == NULL)
		return;
	v = htonl(16);
	memcpy(cr->pkt, &v, 4);
	v = htonl(80877102);
	memcpy(cr->pkt + 4, &v, 4);
	v = htonl(s->be_pid);
	memcpy(cr->pkt + 8, &v, 4);
	v = htonl(s->be_key);
	memcpy(cr->pkt + 12, &v, 4);
	cr->fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (cr->fd < 0) {
		free(cr);
		return;
	}
	if (connect(cr->fd, sa, len) < 0 && errno != EINPROGRESS) {
		slog_warning(s, "cannot connect to send a cancel request: %s", strerror(errno));
		close(cr->fd);
		free(cr);
		return;
	}
	cr->b = s->b;
	cr->server = s;
	s->cancels_in_flight++;
	list_append(&s->b->cancel_conns, &cr->head);
	event_assign(&cr->ev, s->b->base, cr->fd, EV_WRITE | EV_PERSIST, cancel_io, cr);
	tv.tv_sec = wait > 0 ? (time_t)(wait / 1000000) : 10;
	tv.tv_usec = wait > 0 ? (suseconds_t)(wait % 1000000) : 0;
	event_add(&cr->ev, &tv);
}
