/*
 * libFuzzer target for the client side of the wire: the bytes an untrusted client sends before
 * and just after login (startup packet, SSL/GSSENC/cancel requests, password and SASL messages,
 * the first packets after the welcome), fed through a socket pair into the same listener-side
 * code the pooler runs: client_accept(), the sbuf relay, the startup/auth handlers.
 *
 * The first input byte picks the auth_type and pkt_buf; the second how the rest is cut into
 * writes (packets split across reads are where header handling goes wrong). The pool of
 * app/app is marked as welcomed, so a trusted login reaches the post-login relay at once; its
 * servers point at a Unix socket that does not exist and fail without touching the network.
 *
 * Built with clang by test/fuzz/build-fuzz-client, run briefly by test/run; seed corpus in
 * test/fuzz/corpus_client/.
 */
#include <errno.h>
#include <signal.h>
#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "admin.h"
#include "bouncer.h"
#include "client.h"
#include "config.h"
#include "conn.h"
#include "control.h"
#include "log.h"
#include "pool.h"
#include "stats.h"
#include "userlist.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

uint64_t bouncer_now_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static const char *const auth_types[] = {"trust", "md5", "scram-sha-256", "plain"};
static const char users_txt[] =
        "\"app\" \"secret\"\n"
        "\"md5user\" \"md5c9ed0b6ab4a7cd8d0f7a7a5ff0cbba79\"\n"
        "\"scramuser\" \"SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0c2FsdA==$"
        "Z5TQ4MRb9tXvA4XlkXHdDAL5I/fMtwp4e+c3vd2Tz2Q=:cDpBsNUqh8u6GKgn7RPz3ecjGRxIlXtyjmoh5HNAFhA=\"\n"
        "\"postgres\" \"postgres\"\n";

struct world {
	struct bouncer b;
	bool ready;
};
static struct world worlds[8];

static void free_retired(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	conn_free_retired(arg);
}

static bool world_init(struct world *w, int variant)
{
	struct cf_load_opts opts = {.quiet = true};
	char ini[1024];
	const char *err = NULL;
	struct pool *pool;

	snprintf(ini, sizeof(ini),
	         "[databases]\n"
	         "app = host=/nonexistent/syncbouncer-fuzz port=1 dbname=app\n"
	         "* = host=/nonexistent/syncbouncer-fuzz port=1\n"
	         "[pgbouncer]\n"
	         "auth_type = %s\n"
	         "pkt_buf = %d\n"
	         "max_client_conn = 10\n"
	         "admin_users = postgres\n"
	         "ignore_startup_parameters = extra_float_digits\n"
	         "logfile =\n",
	         auth_types[variant % 4], variant >= 4 ? 4096 : 512);
	signal(SIGPIPE, SIG_IGN); /* the pooler closes sockets we still write to */
	log_setup("", false, false, "fuzz", "daemon", 0);
	memset(&w->b, 0, sizeof(w->b));
	w->b.base = event_base_new();
	if (w->b.base == NULL)
		return false;
	list_init(&w->b.pools);
	list_init(&w->b.login_clients);
	list_init(&w->b.cancel_conns);
	list_init(&w->b.justfree);
	w->b.start_time_usec = bouncer_now_usec();
	w->b.ev_free = event_new(w->b.base, -1, 0, free_retired, &w->b);
	if (w->b.ev_free == NULL ||
	    !config_load_buffer_opts(ini, strlen(ini), "fuzz.ini", &opts, &w->b.cfg))
		return false;
	w->b.users = userlist_load_buffer(users_txt, strlen(users_txt), "users.txt");
	if (w->b.users == NULL || !admin_init(&w->b) || !control_init(&w->b, NULL))
		return false;
	/* a pool that already knows its server's welcome: logins reach the relay at once */
	pool = pool_get(&w->b, "app", "app", &err);
	if (pool == NULL || !param_set_value(&pool->welcome, "server_version", "15.0") ||
	    !param_set_value(&pool->welcome, "client_encoding", "UTF8"))
		return false;
	pool->welcome_ready = true;
	w->ready = true;
	return true;
}

/* Runs the loop without blocking until nothing is left to do. */
static void spin(struct world *w, int rounds)
{
	for (int i = 0; i < rounds; i++)
		event_base_loop(w->b.base, EVLOOP_NONBLOCK);
}

static void drain(int fd)
{
	uint8_t sink[65536];

	while (read(fd, sink, sizeof(sink)) > 0)
		;
}

/* Pools made by this input (unknown users under trust, "*" databases) go again. */
static void drop_idle_pools(struct world *w)
{
	struct list *it, *tmp;

	list_for_each_safe(it, tmp, &w->b.pools)
	{
		struct pool *p = list_entry(it, struct pool, head);
		if (strcmp(p->db_name, "app") == 0 && strcmp(p->user_name, "app") == 0)
			continue;
		if (pool_client_count(p) == 0 && pool_server_count(p) == 0)
			pool_free(p);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sockaddr_un un = {.sun_family = AF_UNIX};
	struct world *w;
	size_t chunk, off = 0;
	int fds[2];

	if (size < 2 || size > 200000)
		return 0;
	w = &worlds[data[0] % 8];
	if (!w->ready && !world_init(w, data[0] % 8))
		abort();
	chunk = 1 + (size_t)data[1] * 37;
	data += 2;
	size -= 2;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) < 0)
		return 0;
	client_accept(&w->b, fds[1], (struct sockaddr *)&un, sizeof(sa_family_t), true);
	/* a pooler that stopped reading (a paused client) ends the input after a few rounds */
	for (int stalled = 0; off < size && stalled < 8;) {
		size_t n = size - off < chunk ? size - off : chunk;
		ssize_t k = write(fds[0], data + off, n);
		if (k < 0 && errno != EAGAIN)
			break;
		if (k > 0)
			off += (size_t)k;
		stalled = k > 0 ? 0 : stalled + 1;
		spin(w, 2);
		drain(fds[0]);
	}
	shutdown(fds[0], SHUT_WR);
	for (int i = 0; i < 50 && w->b.client_count > 0; i++) {
		spin(w, 1);
		drain(fds[0]);
	}
	close(fds[0]);
	spin(w, 4);
	drop_idle_pools(w);
	return 0;
}
