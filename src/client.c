/*
 * client — see include/client.h. A client is in CL_LOGIN until authenticated; its packets then
 * flow to its server through the sbuf relay. Every client packet passes the first cheap check
 * here (its type byte); only Query and Parse are shown to the query hook.
 */
#include "client.h"

#include <arpa/inet.h>
#include <event2/event.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/un.h>
#include <unistd.h>

#include "admin.h"
#include "auth.h"
#include "bouncer.h"
#include "config.h"
#include "conn.h"
#include "control.h"
#include "md5pw.h"
#include "pool.h"
#include "prepared.h"
#include "proto.h"
#include "scram.h"
#include "server.h"
#include "stats.h"
#include "userlist.h"

static enum sbuf_action client_packet(void *owner, struct sbuf *sb, const struct sbuf_pkt *pkt);
static void client_failed(void *owner, struct sbuf *sb, const char *reason);

static const struct sbuf_ops client_ops = {
        .packet = client_packet,
        .flushed = NULL,
        .failed = client_failed,
};

/* Parameters whose values the server reports and that we replay across servers. */
static const char *const tracked_params[] = {
        "client_encoding",  "DateStyle", "TimeZone", "standard_conforming_strings",
        "application_name",
};

static bool name_in_list(const char *name, const char *list)
{
	size_t n = strlen(name);
	const char *p = list;

	while (p != NULL && *p) {
		const char *end;
		while (*p == ' ' || *p == ',')
			p++;
		end = p;
		while (*end && *end != ',')
			end++;
		{
			const char *e = end;
			while (e > p && e[-1] == ' ')
				e--;
			if ((size_t)(e - p) == n && strncasecmp(p, name, n) == 0)
				return true;
		}
		p = end;
	}
	return false;
}

static bool is_tracked(const struct bouncer *b, const char *name)
{
	for (size_t i = 0; i < sizeof(tracked_params) / sizeof(tracked_params[0]); i++)
		if (strcasecmp(name, tracked_params[i]) == 0)
			return true;
	return name_in_list(name, b->cfg->track_extra_parameters);
}

static void queue_or_close(struct conn *c, struct pktbuf *pb)
{
	if (!sbuf_queue_pktbuf(&c->sbuf, pb))
		slog_debug(c, "could not queue a message");
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

void client_close(struct conn *c, const char *reason)
{
	struct conn *server = c->link;

	if (c->state == CONN_JUSTFREE)
		return;
	if (c->b->cfg->log_disconnections && c->state != CL_LOGIN)
		slog_info(c, "closing because: %s (age=%llus)", reason,
		          (unsigned long long)((bouncer_now_usec() - c->connect_time) / 1000000));
	if (server != NULL) {
		if (server_is_ready(server) && server->txn_status == 'I') {
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
	c->b->client_count--;
	conn_retire(c);
}

static void client_failed(void *owner, struct sbuf *sb, const char *reason)
{
	struct conn *c = owner;

	(void)sb;
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

static void stop_login_timer(struct conn *c)
{
	if (c->timer_ready) {
		event_del(&c->ev_timer);
		c->timer_ready = false;
	}
}

void client_accept(struct bouncer *b, int fd, const struct sockaddr *addr, socklen_t addrlen,
                   bool is_unix)
{
	struct conn *c = calloc(1, sizeof(*c));

	if (c == NULL) {
		close(fd);
		return;
	}
	c->b = b;
	list_init(&c->head);
	c->connect_time = bouncer_now_usec();
	if (addrlen <= sizeof(c->addr))
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
	if (!sbuf_init(&c->sbuf, b->base, fd, (size_t)b->cfg->pkt_buf,
	               (size_t)b->cfg->max_packet_size, &client_ops, c)) {
		sbuf_close(&c->sbuf);
		free(c);
		return;
	}
	c->sbuf.startup_phase = true;
	b->client_count++;
	conn_set_state(c, CL_LOGIN);
	/* refused after the startup packet, so that a client that asks for SSL first can read
	 * the reason */
	if (b->client_count > b->cfg->max_client_conn)
		c->refusal = "no more connections allowed (max_client_conn)";
	if (b->shutting_down)
		c->refusal = "pgbouncer is shutting down";
	if (b->cfg->client_login_timeout > 0) {
		struct timeval tv = {(time_t)(b->cfg->client_login_timeout / 1000000),
		                     (suseconds_t)(b->cfg->client_login_timeout % 1000000)};
		evtimer_assign(&c->ev_timer, b->base, login_timeout, c);
		evtimer_add(&c->ev_timer, &tv);
		c->timer_ready = true;
	}
	sbuf_resume(&c->sbuf);
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

void client_send_welcome(struct conn *c)
{
	struct pool *pool = c->pool;
	struct pktbuf pb;
	uint32_t keys[2];

	/* the client starts out believing the server defaults, overridden by its own startup values
	 */
	for (int i = 0; i < pool->welcome.n; i++) {
		if (param_get(&c->params, pool->welcome.p[i].name) == NULL &&
		    is_tracked(c->b, pool->welcome.p[i].name) &&
		    !param_set_value(&c->params, pool->welcome.p[i].name,
		                     pool->welcome.p[i].value)) {
			client_fatal(c, "53200", "out of memory");
			return;
		}
	}
	/* the kernel's generator: as unpredictable, and far cheaper per connection than OpenSSL's
	 */
	if (getrandom(keys, sizeof(keys), 0) != (ssize_t)sizeof(keys)) {
		client_fatal(c, "58000", "could not generate a cancel key");
		return;
	}
	c->be_pid = keys[0] & 0x7fffffff;
	c->cancel_key = keys[1];

	pktbuf_init(&pb, 65536);
	pktbuf_write_auth(&pb, 0, NULL, 0);
	for (int i = 0; i < pool->welcome.n; i++) {
		const char *v = param_get(&c->params, pool->welcome.p[i].name);
		pktbuf_write_parameter_status(&pb, pool->welcome.p[i].name,
		                              v ? v : pool->welcome.p[i].value);
	}
	pktbuf_write_backend_key(&pb, c->be_pid, c->cancel_key);
	pktbuf_write_ready(&pb, 'I');
	if (!sbuf_queue_pktbuf(&c->sbuf, &pb)) {
		pktbuf_free(&pb);
		client_close(c, "could not send the welcome");
		return;
	}
	pktbuf_free(&pb);
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
	return c->link == NULL || server_is_ready(c->link);
}

char client_txn_status(const struct conn *c)
{
	return c->link != NULL ? c->link->txn_status : 'I';
}

void client_server_linked(struct conn *c)
{
	sbuf_resume(&c->sbuf);
}

/* Applies "-c name=value" (and "--name=value") items of the options startup parameter. */
static bool parse_options(struct conn *c, const char *opts)
{
	char buf[1024];
	char *p, *save = NULL, *tok;
	bool want_value = false;

	if (strlen(opts) >= sizeof(buf))
		return false;
	strcpy(buf, opts);
	for (tok = strtok_r(buf, " \t", &save); tok != NULL; tok = strtok_r(NULL, " \t", &save)) {
		if (!want_value && strcmp(tok, "-c") == 0) {
			want_value = true;
			continue;
		}
		if (!want_value && strncmp(tok, "-c", 2) == 0)
			tok += 2;
		else if (!want_value && strncmp(tok, "--", 2) == 0)
			tok += 2;
		else if (!want_value)
			return false;
		want_value = false;
		p = strchr(tok, '=');
		if (p == NULL || p == tok)
			return false;
		*p = '\0';
		for (char *q = tok; *q; q++)
			if (*q == '-')
				*q = '_';
		if (!param_set_value(&c->params, tok, p + 1))
			return false;
	}
	return !want_value;
}

static void copy_str(char *dst, size_t size, const char *src)
{
	snprintf(dst, size, "%s", src);
}

static enum sbuf_action handle_startup(struct conn *c, const struct sbuf_pkt *pkt)
{
	struct bouncer *b = c->b;
	struct startup_info info;
	enum startup_kind kind;
	const char *user = NULL, *db = NULL;
	char msg[256];

	if (!pkt->complete)
		return SBUF_WAIT;
	kind = proto_parse_startup(pkt->body, pkt->body_len, &info);
	switch (kind) {
	case STARTUP_SSL:
	case STARTUP_GSSENC:
		if (!sbuf_queue(&c->sbuf, "N", 1)) {
			client_close(c, "could not answer SSL request");
			return SBUF_CLOSED;
		}
		return SBUF_CONSUMED;
	case STARTUP_CANCEL: {
		struct conn *target;
		client_find_by_cancel_key(b, info.cancel_pid, info.cancel_key, &target);
		if (target != NULL && target->link != NULL)
			server_send_cancel(target->link);
		else if (target == NULL)
			admin_cancel(b, info.cancel_pid, info.cancel_key);
		b->client_count--;
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
	if (c->refusal != NULL) {
		client_fatal(c, b->shutting_down ? "57P01" : "53300", c->refusal);
		return SBUF_CLOSED;
	}
	for (int i = 0; i < info.nparams; i++) {
		const char *k = info.params[i].key, *v = info.params[i].value;
		if (strcmp(k, "user") == 0) {
			user = v;
		} else if (strcmp(k, "database") == 0) {
			db = v;
		} else if (strcmp(k, "options") == 0) {
			if (v[0] && !parse_options(c, v) &&
			    !name_in_list("options", b->cfg->ignore_startup_parameters)) {
				client_fatal(c, "08P01", "unsupported options startup parameter");
				return SBUF_CLOSED;
			}
		} else if (is_tracked(b, k)) {
			if (!param_set_value(&c->params, k, v)) {
				client_fatal(c, "53200", "out of memory");
				return SBUF_CLOSED;
			}
		} else if (!name_in_list(k, b->cfg->ignore_startup_parameters)) {
			snprintf(msg, sizeof(msg), "unsupported startup parameter: %s", k);
			client_fatal(c, "08P01", msg);
			return SBUF_CLOSED;
		}
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
	if (strlen(user) >= sizeof(c->user) || (db && strlen(db) >= sizeof(c->dbname))) {
		client_fatal(c, "08P01", "user or database name too long");
		return SBUF_CLOSED;
	}
	copy_str(c->user, sizeof(c->user), user);
	copy_str(c->dbname, sizeof(c->dbname), db && db[0] ? db : user);
	c->admin = admin_is_console_db(c->dbname);
	c->sbuf.startup_phase = false;
	if (b->cfg->log_connections)
		slog_info(c, "login attempt: db=%s user=%s tls=no", c->dbname, c->user);
	return auth_start(c);
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
	if (pkt->type == 'X') {
		client_close(c, "client close request");
		return SBUF_CLOSED;
	}
	if (c->b->hook.inspect != NULL &&
	    (pkt->type == 'Q' || pkt->type == 'P' || c->hook_state != NULL)) {
		switch (c->b->hook.inspect(c->b->hook.ctx, c, pkt)) {
		case HOOK_PASS:
			break;
		case HOOK_CONSUME:
			return SBUF_CONSUMED;
		case HOOK_WAIT:
			return SBUF_WAIT;
		case HOOK_PAUSE:
			return SBUF_PAUSE;
		case HOOK_WAIT_IDLE:
			if (client_server_idle(c)) {
				client_fatal(c, "XX000",
				             "query hook waited for an idle server twice");
				return SBUF_CLOSED;
			}
			c->wait_server_idle = true;
			return SBUF_PAUSE;
		}
	}
	c->request_time = bouncer_now_usec();
	server = c->link;
	if (server == NULL) {
		pool_request_server(c->pool, c);
		server = c->link;
		if (server == NULL)
			return SBUF_PAUSE;
	}
	if (server->state != SV_ACTIVE || server->setting_params)
		return SBUF_PAUSE;
	if (c->pool->pool_mode != POOL_SESSION && c->b->cfg->max_prepared_statements > 0 &&
	    ps_client_wants(pkt->type)) {
		const char *msg = NULL;
		/* a long Query is only looked at by its first words */
		if (!pkt->complete && (pkt->type != 'Q' || pkt->body_avail < 64))
			return SBUF_WAIT;
		switch (ps_client_packet(c, server, pkt, c->b->cfg->max_prepared_statements,
		                         &msg)) {
		case PS_PASS:
			break;
		case PS_CONSUMED:
			server->at_rfq = false;
			if (pkt->type == 'Q') { /* rewritten, still owes a ReadyForQuery */
				server->expect_rfq++;
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
	switch (pkt->type) {
	case 'Q':
	case 'S':
	case 'F':
		server->expect_rfq++;
		c->pool->query_count++;
		stats_client_query(c, server);
		break;
	default:
		break;
	}
	return SBUF_SEND;
}
