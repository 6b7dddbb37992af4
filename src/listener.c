/*
 * listener — see include/listener.h. Accepting drains the backlog in one callback (accept4 until
 * EAGAIN) so a burst of connections costs one wakeup.
 *
 * When accept() fails for want of resources (the open files limit, memory), the listening socket
 * stays readable: accepting again at once would spin the loop. The listener stops for
 * ACCEPT_BACKOFF_USEC instead (connections wait in the kernel's backlog meanwhile), and the
 * failure is logged once per ACCEPT_LOG_USEC with how often it happened.
 */
#include "listener.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "bouncer.h"
#include "client.h"
#include "config.h"
#include "conn.h"
#include "log.h"
#include "pool.h"
#include "workers.h"

#define ACCEPT_BACKOFF_USEC 100000
#define ACCEPT_LOG_USEC     10000000

/* The settings that shape a TCP listening socket and the connections it accepts. */
struct tcp_opts {
	int keepalive, keepidle, keepintvl, keepcnt, user_timeout, socket_buffer, defer_accept;
};

static struct tcp_opts tcp_opts_of(const struct config *cfg)
{
	return (struct tcp_opts){cfg->tcp_keepalive ? 1 : 0, cfg->tcp_keepidle, cfg->tcp_keepintvl,
	                         cfg->tcp_keepcnt,           cfg->tcp_user_timeout,
	                         cfg->tcp_socket_buffer,     cfg->tcp_defer_accept != 0};
}

static bool tcp_opts_equal(const struct tcp_opts *a, const struct tcp_opts *b)
{
	return a->keepalive == b->keepalive && a->keepidle == b->keepidle &&
	       a->keepintvl == b->keepintvl && a->keepcnt == b->keepcnt &&
	       a->user_timeout == b->user_timeout && a->socket_buffer == b->socket_buffer &&
	       a->defer_accept == b->defer_accept;
}

struct listener {
	struct listener *next;
	struct bouncer *b;
	int fd;
	bool is_unix;
	char unix_path[108]; /* "" when the file is not ours to remove */
	dev_t unix_dev;      /* the socket file we made: removed at stop only if still it */
	ino_t unix_ino;
	struct event *ev;
	struct event *ev_backoff; /* re-arms ev after an accept() failure */
	bool paused;              /* listener_pause(): no accepting whatever the backoff says */
	bool backing_off;
	uint64_t last_failure_log; /* usec */
	unsigned long failures;    /* accept() failures not yet logged */
	struct tcp_opts applied;   /* the TCP options of the listening socket */
	bool fixing;               /* they changed: backlog sockets may have the old ones */
	enum { INHERIT_UNKNOWN, INHERIT_YES, INHERIT_NO } inherit;
	bool passed; /* from the service manager */
};

static void backoff_done(evutil_socket_t fd, short what, void *arg)
{
	struct listener *l = arg;

	(void)fd;
	(void)what;
	l->backing_off = false;
	if (!l->paused)
		event_add(l->ev, NULL);
}

/* accept() failed for want of a resource: stop accepting for a while, log it now and then. */
static void accept_failed(struct listener *l, int err)
{
	struct timeval tv = {0, ACCEPT_BACKOFF_USEC};
	uint64_t now = bouncer_now_usec();

	l->failures++;
	if (l->last_failure_log == 0 || now - l->last_failure_log >= ACCEPT_LOG_USEC) {
		log_warning("accept() failed: %s (%lu times since the last report); not accepting "
		            "for %d ms at a time until it succeeds",
		            strerror(err), l->failures, ACCEPT_BACKOFF_USEC / 1000);
		l->failures = 0;
		l->last_failure_log = now;
	}
	event_del(l->ev);
	l->backing_off = true;
	if (evtimer_add(l->ev_backoff, &tv) != 0) {
		l->backing_off = false;
		event_add(l->ev, NULL);
	}
}

/* Whether the accepted cfd came with the listening socket's TCP_NODELAY and SO_KEEPALIVE. */
static bool inherits(const struct listener *l, int cfd)
{
	int nodelay = 0, ka = -1;
	socklen_t n1 = sizeof(nodelay), n2 = sizeof(ka);

	if (getsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &nodelay, &n1) != 0 ||
	    getsockopt(cfd, SOL_SOCKET, SO_KEEPALIVE, &ka, &n2) != 0)
		return false;
	return nodelay != 0 && (ka != 0) == (l->applied.keepalive == 1);
}

/*
 * Gives the listening socket fd the TCP options of cfg, which Linux hands on to the connections
 * it accepts, and TCP_DEFER_ACCEPT (one second, as pgbouncer sets it: a connection is handed
 * over once its first bytes are in, or a few seconds later). False when one was refused.
 */
static bool tune_listener(struct listener *l, int fd, const struct config *cfg)
{
	int defer = cfg->tcp_defer_accept != 0 ? 1 : 0;

	l->applied = tcp_opts_of(cfg);
	if (!conn_tune_tcp(fd, cfg) ||
	    setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &defer, sizeof(defer)) != 0) {
		log_warning("could not set the TCP options of a listening socket: %s",
		            strerror(errno));
		return false;
	}
	return true;
}

static void on_accept(evutil_socket_t fd, short what, void *arg)
{
	struct listener *l = arg;
	struct sockaddr_storage ss;
	socklen_t len;
	int cfd;

	(void)what;
	/*
	 * Linux gives a connection the listening socket's TCP options (TCP_NODELAY, keepalive and
	 * its timings, the user timeout, buffer sizes) when its handshake completes: set there,
	 * they cost no system call per connection. The first accepted socket is asked whether they
	 * came through; if not, each socket gets them as it comes. When SET or RELOAD has changed
	 * one, the listening socket follows, and the connections already in the backlog (made with
	 * the old values) are set one by one until the backlog is empty.
	 */
	if (!l->is_unix) {
		struct tcp_opts now = tcp_opts_of(l->b->cfg);
		if (!tcp_opts_equal(&now, &l->applied)) {
			l->fixing = true;
			if (!tune_listener(l, fd, l->b->cfg))
				l->inherit = INHERIT_NO;
		}
	}
	for (int i = 0; i < 64; i++) {
		len = sizeof(ss);
		cfd = accept4(fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (cfd < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
			    errno == ENOMEM)
				accept_failed(l, errno);
			else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
			         errno != ECONNABORTED)
				log_warning("accept() failed: %s", strerror(errno));
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				l->fixing = false;
			return;
		}
		if (!l->is_unix && l->inherit == INHERIT_UNKNOWN && !l->fixing)
			l->inherit = inherits(l, cfd) ? INHERIT_YES : INHERIT_NO;
		if (!l->is_unix && (l->inherit != INHERIT_YES || l->fixing) &&
		    !conn_tune_tcp(cfd, l->b->cfg)) {
			log_warning("could not set the TCP options of a client connection: %s",
			            strerror(errno));
			close(cfd);
			continue;
		}
		client_accept(l->b, cfd, (struct sockaddr *)&ss, len, l->is_unix);
	}
}

/* A listener of b on fd, not watched yet (arm_listener()); NULL when out of memory (fd closed). */
static struct listener *make_listener(struct bouncer *b, int fd, bool is_unix, const char *path)
{
	struct listener *l = calloc(1, sizeof(*l));

	if (l == NULL) {
		close(fd);
		return NULL;
	}
	l->b = b;
	l->fd = fd;
	l->is_unix = is_unix;
	/* accepted sockets take them from here (on_accept()) */
	if (!is_unix && !tune_listener(l, fd, b->cfg))
		l->inherit = INHERIT_NO;
	if (path != NULL)
		snprintf(l->unix_path, sizeof(l->unix_path), "%s", path);
	return l;
}

/* Watches l on its bouncer's loop. False (l untouched) when out of memory. */
static bool arm_listener(struct listener *l)
{
	struct bouncer *b = l->b;

	l->ev = event_new(b->base, l->fd, EV_READ | EV_PERSIST, on_accept, l);
	l->ev_backoff = evtimer_new(b->base, backoff_done, l);
	if (l->ev == NULL || l->ev_backoff == NULL || event_add(l->ev, NULL) != 0) {
		if (l->ev)
			event_free(l->ev);
		if (l->ev_backoff)
			event_free(l->ev_backoff);
		l->ev = l->ev_backoff = NULL;
		return false;
	}
	return true;
}

static bool add_listener(struct bouncer *b, int fd, bool is_unix, const char *path)
{
	struct listener *l = make_listener(b, fd, is_unix, path);

	if (l == NULL)
		return false;
	if (!arm_listener(l)) {
		close(fd);
		free(l);
		return false;
	}
	l->next = b->listeners;
	b->listeners = l;
	return true;
}

static bool listen_tcp(struct bouncer *b, const char *host, int port)
{
	struct addrinfo hints, *res = NULL, *ai;
	char portstr[16];
	int rc, n = 0;
	const struct config *cfg = b->cfg;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	snprintf(portstr, sizeof(portstr), "%d", port);
	/* listen_addr is an address list; names are resolved once, at start-up */
	rc = getaddrinfo(strcmp(host, "*") == 0 ? NULL : host, portstr, &hints, &res);
	if (rc != 0) {
		log_error("cannot resolve listen_addr \"%s\": %s", host, gai_strerror(rc));
		return false;
	}
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		int fd, one = 1;
		char addr[INET6_ADDRSTRLEN] = "?";

		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0)
			continue;
		(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		/* several workers listen on the port, each with a socket of its own */
		if (cfg->so_reuseport || b->workers != NULL)
			(void)setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
		if (ai->ai_family == AF_INET6)
			(void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
		if (ai->ai_family == AF_INET)
			inet_ntop(AF_INET, &((struct sockaddr_in *)ai->ai_addr)->sin_addr, addr,
			          sizeof(addr));
		else if (ai->ai_family == AF_INET6)
			inet_ntop(AF_INET6, &((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr, addr,
			          sizeof(addr));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 ||
		    listen(fd, cfg->listen_backlog) < 0) {
			log_error("cannot listen on %s:%d: %s", addr, port, strerror(errno));
			close(fd);
			freeaddrinfo(res);
			return false;
		}
		log_info("listening on %s:%d", addr, port);
		if (!add_listener(b, fd, false, NULL)) {
			freeaddrinfo(res);
			return false;
		}
		n++;
	}
	freeaddrinfo(res);
	return n > 0;
}

static bool listen_unix(struct bouncer *b, const char *dir, int port)
{
	struct sockaddr_un un;
	struct stat st;
	int fd;

	memset(&un, 0, sizeof(un));
	un.sun_family = AF_UNIX;
	if ((size_t)snprintf(un.sun_path, sizeof(un.sun_path), "%s/.s.PGSQL.%d", dir, port) >=
	    sizeof(un.sun_path)) {
		log_error("unix_socket_dir is too long");
		return false;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	/*
	 * A socket file left by a dead process would block bind(); a live one answers connect().
	 * With so_reuseport the live one is a process we replace (a rolling restart): the path
	 * is taken over, the old process keeps its socket until it has drained and then leaves
	 * the file alone, since it is no longer the one it made.
	 */
	if (connect(fd, (struct sockaddr *)&un, sizeof(un)) == 0) {
		if (!b->cfg->so_reuseport) {
			log_error("unix socket %s is in use by another process", un.sun_path);
			close(fd);
			return false;
		}
		log_info("unix socket %s is in use, taking it over (so_reuseport)", un.sun_path);
		close(fd);
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return false;
	}
	unlink(un.sun_path);
	if (bind(fd, (struct sockaddr *)&un, sizeof(un)) < 0 ||
	    listen(fd, b->cfg->listen_backlog) < 0) {
		log_error("cannot listen on %s: %s", un.sun_path, strerror(errno));
		close(fd);
		return false;
	}
	(void)chmod(un.sun_path, (mode_t)b->cfg->unix_socket_mode);
	if (stat(un.sun_path, &st) != 0) {
		log_error("cannot stat %s: %s", un.sun_path, strerror(errno));
		close(fd);
		return false;
	}
	log_info("listening on unix:%s", un.sun_path);
	if (!add_listener(b, fd, true, un.sun_path))
		return false;
	b->listeners->unix_dev = st.st_dev;
	b->listeners->unix_ino = st.st_ino;
	return true;
}

/* Runs once the loop is running (after a fork to the background): warm the pools up. */
static void prewarm_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	pool_prewarm(arg);
}

#define LISTEN_FDS_START 3

/*
 * Socket activation: the service manager passes listening sockets as fds 3.. and says how many
 * in LISTEN_FDS, for the process named in LISTEN_PID. 0 when none were passed for us, -1 when
 * the variables are there but wrong (logged).
 */
static int passed_fds(void)
{
	const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
	char *end;
	long n, p;

	if (pid == NULL || fds == NULL)
		return 0;
	errno = 0;
	p = strtol(pid, &end, 10);
	if (errno != 0 || *end != '\0' || p != (long)getpid())
		return 0; /* meant for another process (our parent, say) */
	n = strtol(fds, &end, 10);
	if (errno != 0 || *end != '\0' || fds[0] == '\0' || n < 0 || n > 1024) {
		log_error("LISTEN_FDS is not a number of sockets: \"%s\"", fds);
		return -1;
	}
	return (int)n;
}

/* Takes over the n sockets the service manager passed; false (logged) if one is unfit. */
static bool use_passed_fds(struct bouncer *b, int n)
{
	const struct config *cfg = b->cfg;

	if (cfg->listen_addr[0])
		log_warning("sockets passed from service manager, listen_addr ignored");
	if (cfg->unix_socket_dir[0])
		log_warning("sockets passed from service manager, unix_socket_dir ignored");
	for (int fd = LISTEN_FDS_START; fd < LISTEN_FDS_START + n; fd++) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		int type = 0, acc = 0, flags;
		socklen_t tl = sizeof(type), al = sizeof(acc);

		if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0 ||
		    getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) != 0 ||
		    getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &al) != 0 ||
		    type != SOCK_STREAM || !acc ||
		    (ss.ss_family != AF_INET && ss.ss_family != AF_INET6 &&
		     ss.ss_family != AF_UNIX)) {
			log_error("fd %d passed from service manager is not a listening stream "
			          "socket",
			          fd);
			return false;
		}
		flags = fcntl(fd, F_GETFL);
		if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0 ||
		    fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
			log_error("fd %d passed from service manager: %s", fd, strerror(errno));
			return false;
		}
		log_info("socket passed from service manager (fd %d)", fd);
		/* the unix socket file belongs to the service manager: never removed here */
		if (!add_listener(b, fd, ss.ss_family == AF_UNIX, NULL))
			return false;
		b->listeners->passed = true;
	}
	return true;
}

bool listener_start(struct bouncer *b)
{
	const struct config *cfg = b->cfg;
	char *list, *tok, *save = NULL;
	bool ok = true;
	int npassed;

	if (worker_index(b) > 0) {
		/* worker 0 opened them (listener_share()): watch them on this worker's loop */
		for (struct listener *l = b->listeners; l != NULL; l = l->next) {
			l->b = b;
			if (!l->is_unix && !tune_listener(l, l->fd, b->cfg))
				l->inherit = INHERIT_NO;
			if (!arm_listener(l))
				return false;
		}
		return b->listeners != NULL;
	}
	npassed = passed_fds();
	if (npassed < 0)
		return false;
	/* the variables are for us alone: nothing we start may take them for its own */
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	/*
	 * The unix socket first: a client that finds the TCP port answering (as scripts waiting
	 * for the pooler do) must also find the socket file listening, not merely bound.
	 */
	if (npassed == 0 && cfg->unix_socket_dir[0] && cfg->unix_socket_dir[0] != '@')
		ok = listen_unix(b, cfg->unix_socket_dir, cfg->listen_port);
	if (ok && npassed > 0) {
		ok = use_passed_fds(b, npassed);
	} else if (ok && cfg->listen_addr[0]) {
		list = strdup(cfg->listen_addr);
		if (list == NULL)
			return false;
		for (tok = strtok_r(list, ", ", &save); tok && ok;
		     tok = strtok_r(NULL, ", ", &save))
			ok = listen_tcp(b, tok, cfg->listen_port);
		free(list);
	}
	if (ok && b->listeners == NULL) {
		log_error("nowhere to listen: set listen_addr or unix_socket_dir");
		ok = false;
	}
	if (ok && event_base_once(b->base, -1, EV_TIMEOUT, prewarm_cb, b, NULL) != 0)
		log_warning("cannot schedule min_pool_size warm-up");
	return ok;
}

/*
 * Another socket for worker to on the address of the TCP listener l (SO_REUSEPORT: the kernel
 * spreads the connections); -1 (logged) when it cannot be had.
 */
static int reuse_socket(const struct listener *l)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	int fd, one = 1;

	if (getsockname(l->fd, (struct sockaddr *)&ss, &len) != 0)
		return -1;
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (ss.ss_family == AF_INET6)
		(void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
	    bind(fd, (struct sockaddr *)&ss, len) != 0 ||
	    listen(fd, l->b->cfg->listen_backlog) != 0) {
		log_error("cannot open a listening socket for another worker: %s", strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

bool listener_share(struct bouncer *b, struct bouncer *to)
{
	for (const struct listener *l = b->listeners; l != NULL; l = l->next) {
		struct listener *copy;
		/*
		 * A TCP socket of its own for each worker; the unix socket (and the sockets a
		 * service manager passed) are one socket that every worker watches: a connection
		 * goes to whichever accepts first, the others get EAGAIN.
		 */
		bool own = !l->is_unix && l->unix_path[0] == '\0' && !l->passed;
		int fd = own ? reuse_socket(l) : fcntl(l->fd, F_DUPFD_CLOEXEC, 0);

		if (fd < 0)
			return false;
		copy = calloc(1, sizeof(*copy));
		if (copy == NULL) {
			close(fd);
			return false;
		}
		copy->fd = fd;
		copy->is_unix = l->is_unix;
		copy->passed = l->passed;
		copy->next = to->listeners;
		to->listeners = copy;
	}
	return true;
}

void listener_stop(struct bouncer *b)
{
	struct listener *l = b->listeners, *next;

	for (; l != NULL; l = next) {
		struct stat st;

		next = l->next;
		if (l->ev != NULL)
			event_free(l->ev);
		if (l->ev_backoff != NULL)
			event_free(l->ev_backoff);
		close(l->fd);
		/* a process that took the path over (so_reuseport) has a file of its own there */
		if (l->is_unix && l->unix_path[0] && stat(l->unix_path, &st) == 0 &&
		    st.st_dev == l->unix_dev && st.st_ino == l->unix_ino)
			unlink(l->unix_path);
		free(l);
	}
	b->listeners = NULL;
}

void listener_pause(struct bouncer *b, bool paused)
{
	for (struct listener *l = b->listeners; l != NULL; l = l->next) {
		l->paused = paused;
		if (paused)
			event_del(l->ev);
		else if (!l->backing_off)
			event_add(l->ev, NULL);
	}
}
