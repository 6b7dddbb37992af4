/*
 * dns — c-ares 1.18 driven by the libevent loop, plus a cache of answers per host name.
 *
 * How c-ares is driven: c-ares reports, through its socket-state callback, which sockets it wants
 * watched for reading and/or writing; each such socket gets one persistent event. Activity on a
 * socket, or the one timer firing, calls ares_process_fd(); after every call into c-ares the timer
 * is re-armed from ares_timeout(). No thread, no blocking call (reading /etc/hosts aside, which
 * c-ares does itself at lookup time, as pgbouncer does).
 *
 * Invariants:
 * - A request is on exactly one list: its host's waiters (query in flight) or dns->ready (result
 *   filled in, waiting for the zero-delay delivery event). Cancelling unlinks and frees it.
 * - Callbacks run only from dns_deliver_cb(), never from dns_lookup(): ares_getaddrinfo() may
 *   complete synchronously (hosts file), so even its completion only moves requests to ready.
 * - A host entry is never freed while its query is in flight (c-ares holds a pointer to it),
 *   except by dns_free(), which first makes c-ares drop its queries.
 * - The cache holds at most DNS_MAX_HOSTS names; names are at most DNS_NAME_MAX bytes.
 */
#include "dns.h"

#include "log.h"

#include <ares.h>
#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define DNS_NAME_MAX         253
#define DNS_LABEL_MAX        63
#define DNS_MAX_HOSTS        1024
#define DNS_DEFAULT_TTL_USEC (15 * 1000000LL)
#define DNS_DEFAULT_TIMEOUT  (5 * 1000000LL)
#define DNS_MIN_TRY_MS       20
#define DNS_TRIES            2
/* "[" + IPv6 + "%" + interface + "]" fits easily; longer text is not a literal. */
#define DNS_LITERAL_MAX    (INET6_ADDRSTRLEN + IF_NAMESIZE + 4)
#define DNS_ADDRS_TEXT_MAX (DNS_MAX_ADDRS * (INET6_ADDRSTRLEN + 1) + 1)

struct dns_link {
	struct dns_link *next;
	struct dns_link *prev;
};

#define dns_container_of(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

struct dns_sock {
	struct dns_link link; /* in dns->socks */
	struct dns *dns;
	ares_socket_t fd;
	short what; /* EV_READ / EV_WRITE currently watched */
	struct event *ev;
};

struct dns_host {
	struct dns_link link; /* in dns->hosts */
	struct dns *dns;
	char name[DNS_NAME_MAX + 2];
	bool resolving;  /* an ares_getaddrinfo() for it is in flight */
	int64_t expires; /* monotonic usec; 0: no valid answer cached */
	int status;
	const char *error;
	int naddrs;
	struct sockaddr_storage addrs[DNS_MAX_ADDRS];
	socklen_t addrlens[DNS_MAX_ADDRS];
	unsigned next_first;     /* round robin: where the next answer handed out starts */
	struct dns_link waiters; /* requests waiting for the query in flight */
};

struct dns_request {
	struct dns_link link; /* in host->waiters or dns->ready */
	struct dns *dns;
	int port;
	dns_callback cb;
	void *arg;
	struct dns_result result;
};

struct dns {
	struct event_base *base;
	ares_channel channel;
	bool channel_ok;
	bool destroying;
	int64_t max_ttl_usec;
	int64_t nxdomain_ttl_usec;
	int64_t timeout_usec;
	char *servers;
	struct event *timer;
	struct event *deliver_ev;
	struct dns_link socks;
	struct dns_link hosts;
	int nhosts;
	struct dns_link ready;
};

static void dns_list_init(struct dns_link *head)
{
	head->next = head;
	head->prev = head;
}

static bool dns_list_empty(const struct dns_link *head)
{
	return head->next == head;
}

static void dns_list_append(struct dns_link *head, struct dns_link *node)
{
	node->prev = head->prev;
	node->next = head;
	head->prev->next = node;
	head->prev = node;
}

/* Unlinking leaves the node pointing at itself so that a second unlink is harmless. */
static void dns_list_unlink(struct dns_link *node)
{
	node->prev->next = node->next;
	node->next->prev = node->prev;
	node->next = node;
	node->prev = node;
}

/* Moves every node of from to the end of to; from ends empty. */
static void dns_list_splice(struct dns_link *to, struct dns_link *from)
{
	if (dns_list_empty(from))
		return;
	from->next->prev = to->prev;
	to->prev->next = from->next;
	from->prev->next = to;
	to->prev = from->prev;
	dns_list_init(from);
}

const char *dns_status_str(enum dns_status status)
{
	switch (status) {
	case DNS_STATUS_OK:
		return "OK";
	case DNS_STATUS_NXDOMAIN:
		return "NXDOMAIN";
	case DNS_STATUS_NODATA:
		return "NODATA";
	case DNS_STATUS_TIMEOUT:
		return "TIMEOUT";
	case DNS_STATUS_REFUSED:
		return "REFUSED";
	case DNS_STATUS_SERVFAIL:
		return "SERVFAIL";
	case DNS_STATUS_BADNAME:
		return "BADNAME";
	case DNS_STATUS_NOMEM:
		return "NOMEM";
	case DNS_STATUS_FAILED:
		return "FAILED";
	}
	return "UNKNOWN";
}

static const char *dns_status_error(enum dns_status status)
{
	switch (status) {
	case DNS_STATUS_OK:
		return NULL;
	case DNS_STATUS_NXDOMAIN:
		return "host name not found";
	case DNS_STATUS_NODATA:
		return "host name has no address";
	case DNS_STATUS_TIMEOUT:
		return "DNS lookup timed out";
	case DNS_STATUS_REFUSED:
		return "DNS server refused the query or could not be reached";
	case DNS_STATUS_SERVFAIL:
		return "DNS server failure";
	case DNS_STATUS_BADNAME:
		return "invalid host name";
	case DNS_STATUS_NOMEM:
		return "out of memory during DNS lookup";
	case DNS_STATUS_FAILED:
		return "DNS lookup failed";
	}
	return "DNS lookup failed";
}

static enum dns_status dns_status_from_ares(int status)
{
	switch (status) {
	case ARES_SUCCESS:
		return DNS_STATUS_OK;
	case ARES_ENOTFOUND:
	case ARES_ENONAME:
		return DNS_STATUS_NXDOMAIN;
	case ARES_ENODATA:
		return DNS_STATUS_NODATA;
	case ARES_ETIMEOUT:
		return DNS_STATUS_TIMEOUT;
	case ARES_ECONNREFUSED:
	case ARES_EREFUSED:
		return DNS_STATUS_REFUSED;
	case ARES_ESERVFAIL:
	case ARES_EFORMERR:
	case ARES_ENOTIMP:
	case ARES_EBADRESP:
		return DNS_STATUS_SERVFAIL;
	case ARES_EBADNAME:
	case ARES_EBADSTR:
	case ARES_EBADQUERY:
		return DNS_STATUS_BADNAME;
	case ARES_ENOMEM:
		return DNS_STATUS_NOMEM;
	default:
		return DNS_STATUS_FAILED;
	}
}

static int64_t dns_now_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void dns_set_port(struct sockaddr_storage *ss, int port)
{
	if (ss->ss_family == AF_INET)
		((struct sockaddr_in *)(void *)ss)->sin_port = htons((uint16_t)port);
	else if (ss->ss_family == AF_INET6)
		((struct sockaddr_in6 *)(void *)ss)->sin6_port = htons((uint16_t)port);
}

static void dns_result_set_error(struct dns_result *res, enum dns_status status)
{
	res->status = status;
	res->error = dns_status_error(status);
	res->naddrs = 0;
}

/* ---- driving c-ares ---------------------------------------------------------------------- */

static void dns_rearm_timer(struct dns *dns)
{
	struct timeval tv;
	struct timeval *tvp;

	if (dns->destroying)
		return;
	tvp = ares_timeout(dns->channel, NULL, &tv);
	if (tvp) {
		if (evtimer_add(dns->timer, tvp) < 0)
			log_error("dns: could not arm the resolver timer");
	} else {
		evtimer_del(dns->timer);
	}
}

static void dns_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct dns *dns = arg;

	ares_process_fd(dns->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	dns_rearm_timer(dns);
}

static void dns_sock_cb(evutil_socket_t fd, short what, void *arg)
{
	/* c-ares may close the socket (and so free sock) while processing it. */
	struct dns_sock *sock = arg;
	struct dns *dns = sock->dns;

	ares_process_fd(dns->channel, (what & EV_READ) ? (ares_socket_t)fd : ARES_SOCKET_BAD,
	                (what & EV_WRITE) ? (ares_socket_t)fd : ARES_SOCKET_BAD);
	dns_rearm_timer(dns);
}

static struct dns_sock *dns_sock_find(struct dns *dns, ares_socket_t fd)
{
	for (struct dns_link *l = dns->socks.next; l != &dns->socks; l = l->next) {
		struct dns_sock *sock = dns_container_of(l, struct dns_sock, link);

		if (sock->fd == fd)
			return sock;
	}
	return NULL;
}

static void dns_sock_free(struct dns_sock *sock)
{
	dns_list_unlink(&sock->link);
	if (sock->ev)
		event_free(sock->ev);
	free(sock);
}

/*
 * c-ares' socket-state callback. Failing to watch a socket is not fatal: the query then ends by
 * the timer (timeout), which the waiters see as a failed lookup.
 */
static void dns_sock_state_cb(void *data, ares_socket_t fd, int readable, int writable)
{
	struct dns *dns = data;
	struct dns_sock *sock = dns_sock_find(dns, fd);
	short what = (short)((readable ? EV_READ : 0) | (writable ? EV_WRITE : 0));

	if (!what) {
		if (sock)
			dns_sock_free(sock);
		return;
	}
	if (sock && sock->what == what)
		return;
	if (!sock) {
		sock = calloc(1, sizeof(*sock));
		if (!sock) {
			log_error("dns: out of memory watching a resolver socket");
			return;
		}
		sock->dns = dns;
		sock->fd = fd;
		sock->ev = event_new(dns->base, fd, what | EV_PERSIST, dns_sock_cb, sock);
		if (!sock->ev) {
			free(sock);
			log_error("dns: out of memory watching a resolver socket");
			return;
		}
		dns_list_init(&sock->link);
		dns_list_append(&dns->socks, &sock->link);
	} else {
		event_del(sock->ev);
		if (event_assign(sock->ev, dns->base, fd, what | EV_PERSIST, dns_sock_cb, sock) <
		    0) {
			log_error("dns: could not watch a resolver socket");
			dns_sock_free(sock);
			return;
		}
	}
	sock->what = what;
	if (event_add(sock->ev, NULL) < 0) {
		log_error("dns: could not watch a resolver socket");
		dns_sock_free(sock);
	}
}

/* ---- delivery ---------------------------------------------------------------------------- */

static void dns_schedule_delivery(struct dns *dns)
{
	if (!dns_list_empty(&dns->ready))
		event_active(dns->deliver_ev, EV_TIMEOUT, 1);
}

/*
 * Delivers what was ready when the event fired; requests made ready by the callbacks themselves
 * go round the loop again, so a callback that looks up again cannot starve the loop.
 */
static void dns_deliver_cb(evutil_socket_t fd, short what, void *arg)
{
	struct dns *dns = arg;
	struct dns_link batch;
	struct dns_result result;

	dns_list_init(&batch);
	dns_list_splice(&batch, &dns->ready);
	while (!dns_list_empty(&batch)) {
		struct dns_request *req = dns_container_of(batch.next, struct dns_request, link);
		dns_callback cb = req->cb;
		void *cb_arg = req->arg;

		/* The handle dies before the callback runs, so the callback may drop it freely. */
		dns_list_unlink(&req->link);
		memcpy(&result, &req->result, sizeof(result));
		free(req);
		cb(cb_arg, &result);
	}
}

static void dns_request_ready(struct dns *dns, struct dns_request *req)
{
	dns_list_unlink(&req->link);
	dns_list_append(&dns->ready, &req->link);
}

/*
 * Each answer handed out starts one address further on (round robin, as pgbouncer does), so that
 * callers who connect to addrs[0] spread over all the addresses of a name.
 */
static void dns_request_fill_from_host(struct dns_request *req, struct dns_host *host)
{
	struct dns_result *res = &req->result;
	int first = host->naddrs > 0 ? (int)(host->next_first % (unsigned)host->naddrs) : 0;

	host->next_first++;
	res->status = host->status;
	res->error = host->error;
	res->naddrs = host->naddrs;
	for (int i = 0; i < host->naddrs; i++) {
		int j = (first + i) % host->naddrs;

		memcpy(&res->addrs[i], &host->addrs[j], sizeof(res->addrs[i]));
		res->addrlens[i] = host->addrlens[j];
		dns_set_port(&res->addrs[i], req->port);
	}
}

/* ---- the cache --------------------------------------------------------------------------- */

static struct dns_host *dns_host_find(struct dns *dns, const char *name)
{
	for (struct dns_link *l = dns->hosts.next; l != &dns->hosts; l = l->next) {
		struct dns_host *host = dns_container_of(l, struct dns_host, link);

		if (strcasecmp(host->name, name) == 0)
			return host;
	}
	return NULL;
}

static void dns_host_free(struct dns_host *host)
{
	while (!dns_list_empty(&host->waiters)) {
		struct dns_request *req =
		        dns_container_of(host->waiters.next, struct dns_request, link);

		dns_list_unlink(&req->link);
		free(req);
	}
	dns_list_unlink(&host->link);
	host->dns->nhosts--;
	free(host);
}

/* Makes room for one more name: drops the idle entry that expires first. False if all are busy. */
static bool dns_host_evict_one(struct dns *dns)
{
	struct dns_host *victim = NULL;

	for (struct dns_link *l = dns->hosts.next; l != &dns->hosts; l = l->next) {
		struct dns_host *host = dns_container_of(l, struct dns_host, link);

		if (host->resolving)
			continue;
		if (!victim || host->expires < victim->expires)
			victim = host;
	}
	if (!victim)
		return false;
	dns_host_free(victim);
	return true;
}

static void dns_host_store(struct dns_host *host, int ares_status, struct ares_addrinfo *ai)
{
	struct dns *dns = host->dns;
	enum dns_status status = dns_status_from_ares(ares_status);
	int64_t ttl = dns->max_ttl_usec;
	int64_t min_record_ttl = -1;

	host->naddrs = 0;
	if (status == DNS_STATUS_OK && ai) {
		for (struct ares_addrinfo_node *n = ai->nodes; n && host->naddrs < DNS_MAX_ADDRS;
		     n = n->ai_next) {
			if ((n->ai_family != AF_INET && n->ai_family != AF_INET6) || !n->ai_addr ||
			    n->ai_addrlen > sizeof(host->addrs[0]))
				continue;
			memset(&host->addrs[host->naddrs], 0, sizeof(host->addrs[0]));
			memcpy(&host->addrs[host->naddrs], n->ai_addr, n->ai_addrlen);
			host->addrlens[host->naddrs] = n->ai_addrlen;
			host->naddrs++;
			if (n->ai_ttl > 0 && (min_record_ttl < 0 || n->ai_ttl < min_record_ttl))
				min_record_ttl = n->ai_ttl;
		}
	}
	if (status == DNS_STATUS_OK && host->naddrs == 0)
		status = DNS_STATUS_NODATA;
	host->status = status;
	host->error = dns_status_error(status);

	/*
	 * Record TTLs cap the cache time. Answers without one (the hosts file gives 0) are kept for
	 * max_ttl, which is what pgbouncer does with every answer.
	 */
	if (status == DNS_STATUS_OK) {
		if (min_record_ttl > 0 && min_record_ttl * 1000000 < ttl)
			ttl = min_record_ttl * 1000000;
	} else if (status == DNS_STATUS_NXDOMAIN || status == DNS_STATUS_NODATA) {
		ttl = dns->nxdomain_ttl_usec;
	} else {
		ttl = 0;
	}
	host->expires = ttl > 0 ? dns_now_usec() + ttl : 0;
}

static void dns_gai_cb(void *arg, int status, int timeouts, struct ares_addrinfo *ai)
{
	struct dns_host *host = arg;
	struct dns *dns = host->dns;

	if (dns->destroying || status == ARES_EDESTRUCTION || status == ARES_ECANCELLED) {
		if (ai)
			ares_freeaddrinfo(ai);
		return;
	}
	host->resolving = false;
	dns_host_store(host, status, ai);
	if (ai)
		ares_freeaddrinfo(ai);
	if (host->status == DNS_STATUS_OK)
		log_debug("dns: %s resolved to %d address(es)", host->name, host->naddrs);
	else
		log_debug("dns: %s: %s (%s, %d timeouts)", host->name, dns_status_str(host->status),
		          ares_strerror(status), timeouts);

	while (!dns_list_empty(&host->waiters)) {
		struct dns_request *req =
		        dns_container_of(host->waiters.next, struct dns_request, link);

		dns_request_fill_from_host(req, host);
		dns_request_ready(dns, req);
	}
	dns_schedule_delivery(dns);
}

/* ---- literals and names ------------------------------------------------------------------ */

/* An IPv4 or IPv6 literal (optionally "[v6]" and "%scope") into ss; false if host is not one. */
static bool dns_parse_literal(const char *host, struct sockaddr_storage *ss, socklen_t *len)
{
	char buf[DNS_LITERAL_MAX + 1];
	size_t n = strlen(host);
	char *scope;

	memset(ss, 0, sizeof(*ss));
	if (n > DNS_LITERAL_MAX)
		return false;
	if (n >= 2 && host[0] == '[' && host[n - 1] == ']') {
		memcpy(buf, host + 1, n - 2);
		buf[n - 2] = '\0';
	} else {
		memcpy(buf, host, n + 1);
	}

	struct sockaddr_in *sin = (struct sockaddr_in *)(void *)ss;
	if (inet_pton(AF_INET, buf, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		*len = sizeof(*sin);
		return true;
	}

	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)(void *)ss;
	scope = strchr(buf, '%');
	if (scope)
		*scope++ = '\0';
	if (inet_pton(AF_INET6, buf, &sin6->sin6_addr) != 1) {
		memset(ss, 0, sizeof(*ss));
		return false;
	}
	sin6->sin6_family = AF_INET6;
	if (scope) {
		char *end;
		unsigned long idx = strtoul(scope, &end, 10);

		if (*scope == '\0' || *end != '\0')
			idx = if_nametoindex(scope);
		if (idx == 0 || idx > UINT32_MAX) {
			memset(ss, 0, sizeof(*ss));
			return false;
		}
		sin6->sin6_scope_id = (uint32_t)idx;
	}
	*len = sizeof(*sin6);
	return true;
}

/* Host names as resolvers accept them: letters, digits, '-', '_', dots between 1..63 labels. */
static bool dns_name_valid(const char *name)
{
	size_t n = strnlen(name, DNS_NAME_MAX + 2);
	size_t label = 0;

	if (n > 0 && name[n - 1] == '.')
		n--;
	if (n == 0 || n > DNS_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];

		if (c == '.') {
			if (label == 0)
				return false;
			label = 0;
			continue;
		}
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_'))
			return false;
		if (++label > DNS_LABEL_MAX)
			return false;
	}
	return true;
}

/* ---- public ------------------------------------------------------------------------------ */

static int dns_count_servers(ares_channel channel)
{
	struct ares_addr_port_node *servers = NULL;
	int n = 0;

	if (ares_get_servers_ports(channel, &servers) != ARES_SUCCESS)
		return 1;
	for (struct ares_addr_port_node *s = servers; s; s = s->next)
		n++;
	ares_free_data(servers);
	return n > 0 ? n : 1;
}

/*
 * One c-ares channel. try_ms == 0: c-ares' own timeouts (used only to count the servers).
 */
static bool dns_channel_init(struct dns *dns, int try_ms)
{
	struct ares_options opts;
	int mask = ARES_OPT_SOCK_STATE_CB;
	int rc;

	memset(&opts, 0, sizeof(opts));
	opts.sock_state_cb = dns_sock_state_cb;
	opts.sock_state_cb_data = dns;
	if (try_ms > 0) {
		opts.timeout = try_ms;
		opts.tries = DNS_TRIES;
		mask |= ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES;
	}
	if (dns->servers) {
		/* The system's search domains would turn one lookup into several queries. */
		opts.domains = NULL;
		opts.ndomains = 0;
		mask |= ARES_OPT_DOMAINS;
	}
	rc = ares_init_options(&dns->channel, &opts, mask);
	if (rc != ARES_SUCCESS) {
		log_error("dns: could not initialise the resolver: %s", ares_strerror(rc));
		return false;
	}
	dns->channel_ok = true;
	if (dns->servers) {
		rc = ares_set_servers_ports_csv(dns->channel, dns->servers);
		if (rc != ARES_SUCCESS) {
			log_error("dns: invalid DNS server list \"%s\": %s", dns->servers,
			          ares_strerror(rc));
			return false;
		}
	}
	return true;
}

static void dns_channel_destroy(struct dns *dns)
{
	if (!dns->channel_ok)
		return;
	dns->destroying = true;
	ares_destroy(dns->channel);
	dns->channel_ok = false;
	dns->destroying = false;
}

struct dns *dns_create(struct event_base *base, const struct dns_options *opts)
{
	struct dns *dns;
	int rc;
	int nservers;
	int64_t try_ms;

	rc = ares_library_init(ARES_LIB_INIT_ALL);
	if (rc != ARES_SUCCESS) {
		log_error("dns: c-ares initialisation failed: %s", ares_strerror(rc));
		return NULL;
	}
	dns = calloc(1, sizeof(*dns));
	if (!dns) {
		log_error("dns: out of memory");
		ares_library_cleanup();
		return NULL;
	}
	dns->base = base;
	dns_list_init(&dns->socks);
	dns_list_init(&dns->hosts);
	dns_list_init(&dns->ready);
	dns->max_ttl_usec = DNS_DEFAULT_TTL_USEC;
	dns->nxdomain_ttl_usec = DNS_DEFAULT_TTL_USEC;
	dns->timeout_usec = DNS_DEFAULT_TIMEOUT;
	if (opts) {
		if (opts->max_ttl_usec >= 0)
			dns->max_ttl_usec = opts->max_ttl_usec;
		if (opts->nxdomain_ttl_usec >= 0)
			dns->nxdomain_ttl_usec = opts->nxdomain_ttl_usec;
		if (opts->timeout_usec > 0)
			dns->timeout_usec = opts->timeout_usec;
		if (opts->servers) {
			dns->servers = strdup(opts->servers);
			if (!dns->servers) {
				log_error("dns: out of memory");
				goto fail;
			}
		}
	}
	dns->timer = evtimer_new(base, dns_timer_cb, dns);
	dns->deliver_ev = event_new(base, -1, 0, dns_deliver_cb, dns);
	if (!dns->timer || !dns->deliver_ev) {
		log_error("dns: out of memory");
		goto fail;
	}

	/*
	 * c-ares waits per try, doubling after each round over all servers; so that one lookup ends
	 * within timeout_usec, the per-try wait depends on how many servers there are, which is
	 * only known once a channel has read the configuration.
	 */
	if (!dns_channel_init(dns, 0))
		goto fail;
	nservers = dns_count_servers(dns->channel);
	dns_channel_destroy(dns);
	try_ms = dns->timeout_usec / 1000 / ((int64_t)nservers * ((1 << DNS_TRIES) - 1));
	if (try_ms < DNS_MIN_TRY_MS)
		try_ms = DNS_MIN_TRY_MS;
	if (try_ms > 600000)
		try_ms = 600000;
	if (!dns_channel_init(dns, (int)try_ms))
		goto fail;
	return dns;
fail:
	dns_free(dns);
	return NULL;
}

void dns_free(struct dns *dns)
{
	if (!dns)
		return;
	while (!dns_list_empty(&dns->ready)) {
		struct dns_request *req =
		        dns_container_of(dns->ready.next, struct dns_request, link);

		dns_list_unlink(&req->link);
		free(req);
	}
	/* c-ares calls back every query in flight with ARES_EDESTRUCTION; those are ignored. */
	dns_channel_destroy(dns);
	while (!dns_list_empty(&dns->hosts))
		dns_host_free(dns_container_of(dns->hosts.next, struct dns_host, link));
	while (!dns_list_empty(&dns->socks))
		dns_sock_free(dns_container_of(dns->socks.next, struct dns_sock, link));
	if (dns->timer)
		event_free(dns->timer);
	if (dns->deliver_ev)
		event_free(dns->deliver_ev);
	free(dns->servers);
	free(dns);
	ares_library_cleanup();
}

/* Starts (or restarts, for an expired entry) the query for host; waiters are already queued. */
static void dns_host_resolve(struct dns_host *host)
{
	struct dns *dns = host->dns;
	struct ares_addrinfo_hints hints;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	host->resolving = true;
	log_debug("dns: resolving %s", host->name);
	/* May call dns_gai_cb() before returning (hosts file); that only moves waiters to ready. */
	ares_getaddrinfo(dns->channel, host->name, NULL, &hints, dns_gai_cb, host);
	dns_rearm_timer(dns);
}

struct dns_request *dns_lookup(struct dns *dns, const char *host_name, int port, dns_callback cb,
                               void *arg)
{
	struct dns_request *req;
	struct dns_host *host;

	req = calloc(1, sizeof(*req));
	if (!req)
		return NULL;
	req->dns = dns;
	req->port = port;
	req->cb = cb;
	req->arg = arg;
	dns_list_init(&req->link);

	if (!host_name || port < 0 || port > 65535) {
		dns_result_set_error(&req->result, DNS_STATUS_BADNAME);
		goto ready;
	}
	if (dns_parse_literal(host_name, &req->result.addrs[0], &req->result.addrlens[0])) {
		req->result.status = DNS_STATUS_OK;
		req->result.naddrs = 1;
		dns_set_port(&req->result.addrs[0], port);
		goto ready;
	}
	if (!dns_name_valid(host_name)) {
		dns_result_set_error(&req->result, DNS_STATUS_BADNAME);
		goto ready;
	}

	host = dns_host_find(dns, host_name);
	if (host && host->resolving) {
		dns_list_append(&host->waiters, &req->link);
		return req;
	}
	if (host && host->expires > dns_now_usec()) {
		dns_request_fill_from_host(req, host);
		goto ready;
	}
	if (!host) {
		if (dns->nhosts >= DNS_MAX_HOSTS && !dns_host_evict_one(dns)) {
			dns_result_set_error(&req->result, DNS_STATUS_FAILED);
			req->result.error = "too many host names being resolved at once";
			goto ready;
		}
		host = calloc(1, sizeof(*host));
		if (!host) {
			free(req);
			return NULL;
		}
		host->dns = dns;
		snprintf(host->name, sizeof(host->name), "%s", host_name);
		dns_list_init(&host->waiters);
		dns_list_init(&host->link);
		dns_list_append(&dns->hosts, &host->link);
		dns->nhosts++;
	}
	dns_list_append(&host->waiters, &req->link);
	dns_host_resolve(host);
	dns_schedule_delivery(dns);
	return req;

ready:
	dns_list_append(&dns->ready, &req->link);
	dns_schedule_delivery(dns);
	return req;
}

void dns_cancel(struct dns_request *req)
{
	if (!req)
		return;
	/*
	 * A shared query goes on even with no one waiting: its answer still fills the cache, and
	 * c-ares cannot drop a single query anyway.
	 */
	dns_list_unlink(&req->link);
	free(req);
}

void dns_foreach_host(struct dns *dns, dns_host_cb cb, void *arg)
{
	int64_t now = dns_now_usec();
	char text[DNS_ADDRS_TEXT_MAX];

	for (struct dns_link *l = dns->hosts.next; l != &dns->hosts; l = l->next) {
		struct dns_host *host = dns_container_of(l, struct dns_host, link);
		int64_t left = 0;
		size_t used = 0;

		text[0] = '\0';
		if (!host->resolving && host->expires > now)
			left = host->expires - now;
		for (int i = 0; i < host->naddrs && !host->resolving; i++) {
			char addr[INET6_ADDRSTRLEN];
			const void *src;

			if (host->addrs[i].ss_family == AF_INET)
				src = &((const struct sockaddr_in *)(const void *)&host->addrs[i])
				               ->sin_addr;
			else
				src = &((const struct sockaddr_in6 *)(const void *)&host->addrs[i])
				               ->sin6_addr;
			if (!inet_ntop(host->addrs[i].ss_family, src, addr, sizeof(addr)))
				continue;
			int w = snprintf(text + used, sizeof(text) - used, "%s%s", used ? "," : "",
			                 addr);
			if (w < 0 || (size_t)w >= sizeof(text) - used)
				break;
			used += (size_t)w;
		}
		cb(arg, host->name, left, text);
	}
}
