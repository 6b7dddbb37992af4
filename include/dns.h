/*
 * dns — asynchronous host name resolution on the process's one libevent loop (c-ares), with a
 * cache of answers.
 *
 * Invariants:
 * - Nothing here blocks on the network; no thread is started.
 * - A lookup's callback runs later, from the loop, exactly once, unless the lookup is cancelled
 *   first. It never runs from inside dns_lookup(), not even for literals and cache hits.
 * - Several lookups of one name while a query for it is in flight share that query.
 * - Positive answers are cached for the record TTL, at most max_ttl; "no such name" answers for
 *   nxdomain_ttl. Transient failures (timeout, refused, server failure) are not cached.
 */
#ifndef SB_DNS_H
#define SB_DNS_H

#include <stdint.h>
#include <sys/socket.h>

struct event_base;

/* One per process: owns the c-ares channel, its socket events, its timer and the cache. */
struct dns;

struct dns_options {
	/* pgbouncer's dns_max_ttl: the longest a positive answer is reused. 0: never; < 0: 15 s. */
	int64_t max_ttl_usec;
	/* pgbouncer's dns_nxdomain_ttl: how long "no such name" is kept. 0: never; < 0: 15 s. */
	int64_t nxdomain_ttl_usec;
	/* Bound on one lookup (all tries and servers together). <= 0: 5 s. opts NULL: defaults. */
	int64_t timeout_usec;
	/*
	 * NULL: the system's resolver configuration. Otherwise a comma-separated list of servers
	 * ("127.0.0.1:25353,[::1]:53") used instead, and the system's search domains are ignored;
	 * meant for tests.
	 */
	const char *servers;
};

/* Outcome of a lookup; DNS_STATUS_OK is 0. */
enum dns_status {
	DNS_STATUS_OK = 0,
	DNS_STATUS_NXDOMAIN, /* the name does not exist */
	DNS_STATUS_NODATA,   /* the name exists but has no address */
	DNS_STATUS_TIMEOUT,  /* no server answered in time */
	DNS_STATUS_REFUSED,  /* servers refused the query or could not be reached */
	DNS_STATUS_SERVFAIL, /* the server failed (SERVFAIL, bad answer) */
	DNS_STATUS_BADNAME,  /* not a valid host name (empty, too long, bad characters) */
	DNS_STATUS_NOMEM,    /* out of memory */
	DNS_STATUS_FAILED,   /* any other resolver failure */
};

/* Upper-case word for logs and the admin console, e.g. "NXDOMAIN". */
const char *dns_status_str(enum dns_status status);

#define DNS_MAX_ADDRS 8

/*
 * What a callback receives. status: 0 or an enum dns_status. error: NULL when status is 0, else
 * a static human-readable sentence. addrs[0..naddrs) carry the lookup's port; IPv4 and IPv6 mixed.
 * Successive answers for one name start one address further on (round robin, like pgbouncer),
 * so connecting to addrs[0] spreads the load. Valid only during the callback: copy what you keep.
 */
struct dns_result {
	int status;
	const char *error;
	int naddrs;
	struct sockaddr_storage addrs[DNS_MAX_ADDRS];
	socklen_t addrlens[DNS_MAX_ADDRS];
};

typedef void (*dns_callback)(void *arg, const struct dns_result *res);

struct dns_request;

/*
 * Creates the resolver on base (borrowed: it must outlive the dns). opts may be NULL (defaults);
 * it is copied, the servers string included. Returns NULL after logging on failure.
 */
struct dns *dns_create(struct event_base *base, const struct dns_options *opts);

/*
 * Cancels every pending lookup without calling its callback (their dns_request handles become
 * invalid) and frees everything. NULL is a no-op. Must not be called from inside a dns callback.
 */
void dns_free(struct dns *dns);

/*
 * Starts resolving host (a name, an IPv4 literal or an IPv6 literal, copied) for port (0..65535,
 * written into every address). Both address families are asked for. cb(arg, result) is called
 * later from the loop, exactly once unless dns_cancel() comes first. The returned handle belongs
 * to the dns and stays valid until the callback starts or dns_cancel() returns. Returns NULL only
 * when out of memory (nothing will be called then).
 */
struct dns_request *dns_lookup(struct dns *dns, const char *host, int port, dns_callback cb,
                               void *arg);

/* Forgets a lookup: its callback will not run. Allowed until its callback starts; NULL no-op. */
void dns_cancel(struct dns_request *req);

/*
 * For SHOW DNS_HOSTS: calls cb once per cached name with the time left before it expires
 * (0 when expired or still being resolved) and its addresses as text ("10.0.0.1,::1"; empty
 * for a negative or pending entry). The strings are valid during the call only. cb must not call
 * dns_lookup/dns_free.
 */
typedef void (*dns_host_cb)(void *arg, const char *host, int64_t ttl_left_usec,
                            const char *addrs_text);
void dns_foreach_host(struct dns *dns, dns_host_cb cb, void *arg);

#endif
