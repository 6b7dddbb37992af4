/*
 * Unit tests for dns: a real libevent loop, c-ares pointed at a fake DNS server that runs on the
 * same loop (UDP on 127.0.0.1, a port below 30000) and counts the queries it receives, so that
 * sharing, caching and TTLs can be observed from the outside.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "dns.h"

#include <arpa/inet.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---- fake DNS server --------------------------------------------------------------------- */

#define FAKE_MAX_NAMES 16
#define FAKE_MAX_IPS   12

enum fake_mode {
	FAKE_ANSWER, /* answer with the addresses (possibly none: NODATA) */
	FAKE_RCODE,  /* answer with an error rcode */
	FAKE_SILENT, /* never answer */
};

struct fake_name {
	const char *name;
	enum fake_mode mode;
	int rcode;
	uint32_t ttl;
	const char *v4[FAKE_MAX_IPS];
	const char *v6[FAKE_MAX_IPS];
	int queries_a;
	int queries_aaaa;
};

struct fake_server {
	int fd;
	int port;
	struct event *ev;
	struct fake_name names[FAKE_MAX_NAMES];
	int nnames;
	int unknown_queries;
};

static struct fake_name *fake_add(struct fake_server *fs, const char *name, enum fake_mode mode,
                                  uint32_t ttl)
{
	struct fake_name *fn = &fs->names[fs->nnames++];

	assert_true(fs->nnames <= FAKE_MAX_NAMES);
	memset(fn, 0, sizeof(*fn));
	fn->name = name;
	fn->mode = mode;
	fn->ttl = ttl;
	return fn;
}

static struct fake_name *fake_find(struct fake_server *fs, const char *name)
{
	for (int i = 0; i < fs->nnames; i++)
		if (strcasecmp(fs->names[i].name, name) == 0)
			return &fs->names[i];
	return NULL;
}

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
	put16(p, (uint16_t)(v >> 16));
	put16(p + 2, (uint16_t)v);
}

static void fake_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fake_server *fs = arg;
	uint8_t q[512], r[1500];
	struct sockaddr_storage from;
	socklen_t fromlen = sizeof(from);
	ssize_t n = recvfrom(fd, q, sizeof(q), 0, (struct sockaddr *)&from, &fromlen);
	char name[256];
	size_t pos = 12, nlen = 0;

	if (n < 12)
		return;
	/* question name: labels */
	while (pos < (size_t)n && q[pos] != 0) {
		size_t l = q[pos++];

		if (l > 63 || pos + l > (size_t)n || nlen + l + 1 >= sizeof(name))
			return;
		if (nlen)
			name[nlen++] = '.';
		memcpy(name + nlen, q + pos, l);
		nlen += l;
		pos += l;
	}
	name[nlen] = '\0';
	if (pos + 5 > (size_t)n)
		return;
	pos++;
	uint16_t qtype = (uint16_t)(q[pos] << 8 | q[pos + 1]);
	size_t qend = pos + 4;

	struct fake_name *fn = fake_find(fs, name);
	int rcode = 0;

	if (!fn) {
		fs->unknown_queries++;
		rcode = 3; /* NXDOMAIN */
	} else {
		if (qtype == 1)
			fn->queries_a++;
		else if (qtype == 28)
			fn->queries_aaaa++;
		if (fn->mode == FAKE_SILENT)
			return;
		if (fn->mode == FAKE_RCODE)
			rcode = fn->rcode;
	}

	memcpy(r, q, qend);
	r[2] = (uint8_t)(0x80 | (q[2] & 0x01)); /* QR, RD copied */
	r[3] = (uint8_t)(0x80 | rcode);         /* RA */
	put16(r + 4, 1);
	put16(r + 6, 0);
	put16(r + 8, 0);
	put16(r + 10, 0);
	size_t rpos = qend;
	int an = 0;

	if (fn && rcode == 0) {
		const char *const *ips = qtype == 1 ? fn->v4 : qtype == 28 ? fn->v6 : NULL;

		for (int i = 0; ips && i < FAKE_MAX_IPS && ips[i]; i++) {
			int af = qtype == 1 ? AF_INET : AF_INET6;
			size_t alen = qtype == 1 ? 4 : 16;

			put16(r + rpos, 0xc00c);
			put16(r + rpos + 2, qtype);
			put16(r + rpos + 4, 1);
			put32(r + rpos + 6, fn->ttl);
			put16(r + rpos + 10, (uint16_t)alen);
			assert_int_equal(inet_pton(af, ips[i], r + rpos + 12), 1);
			rpos += 12 + alen;
			an++;
		}
	}
	put16(r + 6, (uint16_t)an);
	sendto(fd, r, rpos, 0, (struct sockaddr *)&from, fromlen);
}

/* Binds a UDP socket on 127.0.0.1 at a free port below 30000. */
static int bind_udp_below_30000(int *port)
{
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	for (int i = 0; i < 2000; i++) {
		struct sockaddr_in sin;
		int p = 20000 + (int)((getpid() * 7 + i * 13) % 9000);

		memset(&sin, 0, sizeof(sin));
		sin.sin_family = AF_INET;
		sin.sin_port = htons((uint16_t)p);
		sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0) {
			*port = p;
			return fd;
		}
	}
	fail_msg("no free UDP port below 30000");
	return -1;
}

/* ---- fixture ----------------------------------------------------------------------------- */

struct fixture {
	struct event_base *base;
	struct fake_server fs;
	struct dns *dns;
	char servers[64];
};

static bool in_lookup;

struct capture {
	int calls;
	struct dns_result res;
	int64_t at_usec;
};

static int64_t now_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void capture_cb(void *arg, const struct dns_result *res)
{
	struct capture *c = arg;

	/* The contract: never called from inside dns_lookup(). */
	assert_false(in_lookup);
	c->calls++;
	c->res = *res;
	c->at_usec = now_usec();
}

static struct dns_request *lookup(struct fixture *f, const char *host, int port, struct capture *c)
{
	struct dns_request *req;

	in_lookup = true;
	req = dns_lookup(f->dns, host, port, capture_cb, c);
	in_lookup = false;
	assert_non_null(req);
	return req;
}

static void loop_break_cb(evutil_socket_t fd, short what, void *arg)
{
	*(bool *)arg = true;
}

/* Runs the loop until every capture got a call or ms elapsed; true if all were called. */
static bool run_until(struct fixture *f, struct capture **cs, int n, int ms)
{
	bool expired = false;
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	struct event *t = evtimer_new(f->base, loop_break_cb, &expired);

	evtimer_add(t, &tv);
	for (;;) {
		bool all = true;

		for (int i = 0; i < n; i++)
			if (cs[i]->calls == 0)
				all = false;
		if (all || expired)
			break;
		event_base_loop(f->base, EVLOOP_ONCE);
	}
	event_free(t);
	for (int i = 0; i < n; i++)
		if (cs[i]->calls == 0)
			return false;
	return true;
}

static bool run1(struct fixture *f, struct capture *c, int ms)
{
	return run_until(f, &c, 1, ms);
}

/* Lets the loop run for ms whatever happens (to see that nothing more is called). */
static void run_for(struct fixture *f, int ms)
{
	struct capture never = {0};

	assert_false(run1(f, &never, ms));
}

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};

	nanosleep(&ts, NULL);
}

static void fixture_dns(struct fixture *f, int64_t max_ttl, int64_t nx_ttl, int64_t timeout)
{
	struct dns_options o = {
	        .max_ttl_usec = max_ttl,
	        .nxdomain_ttl_usec = nx_ttl,
	        .timeout_usec = timeout,
	        .servers = f->servers,
	};

	dns_free(f->dns);
	f->dns = dns_create(f->base, &o);
	assert_non_null(f->dns);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	f->base = event_base_new();
	assert_non_null(f->base);
	f->fs.fd = bind_udp_below_30000(&f->fs.port);
	f->fs.ev = event_new(f->base, f->fs.fd, EV_READ | EV_PERSIST, fake_read_cb, &f->fs);
	event_add(f->fs.ev, NULL);
	snprintf(f->servers, sizeof(f->servers), "127.0.0.1:%d", f->fs.port);
	fixture_dns(f, 15000000, 15000000, 2000000);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	dns_free(f->dns);
	event_free(f->fs.ev);
	close(f->fs.fd);
	event_base_free(f->base);
	free(f);
	return 0;
}

static int addr_port(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)(const void *)ss)->sin_port);
	return ntohs(((const struct sockaddr_in6 *)(const void *)ss)->sin6_port);
}

static const char *addr_text(const struct sockaddr_storage *ss, char *buf, size_t len)
{
	const void *src =
	        ss->ss_family == AF_INET
	                ? (const void *)&((const struct sockaddr_in *)(const void *)ss)->sin_addr
	                : (const void *)&((const struct sockaddr_in6 *)(const void *)ss)->sin6_addr;

	assert_non_null(inet_ntop(ss->ss_family, src, buf, (socklen_t)len));
	return buf;
}

static bool result_has(const struct dns_result *res, const char *ip)
{
	char buf[INET6_ADDRSTRLEN];

	for (int i = 0; i < res->naddrs; i++)
		if (strcmp(addr_text(&res->addrs[i], buf, sizeof(buf)), ip) == 0)
			return true;
	return false;
}

/* ---- tests ------------------------------------------------------------------------------- */

static void test_status_str(void **state)
{
	const char *seen[DNS_STATUS_FAILED + 1];

	assert_string_equal(dns_status_str(DNS_STATUS_OK), "OK");
	assert_string_equal(dns_status_str(DNS_STATUS_NXDOMAIN), "NXDOMAIN");
	assert_string_equal(dns_status_str(DNS_STATUS_TIMEOUT), "TIMEOUT");
	assert_string_equal(dns_status_str(DNS_STATUS_REFUSED), "REFUSED");
	for (int s = DNS_STATUS_OK; s <= DNS_STATUS_FAILED; s++) {
		seen[s] = dns_status_str((enum dns_status)s);
		assert_true(strlen(seen[s]) > 0);
		assert_string_not_equal(seen[s], "UNKNOWN");
		for (int t = 0; t < s; t++)
			assert_string_not_equal(seen[s], seen[t]);
	}
}

/* Literals come back asynchronously, with the port, in the right family. */
static void test_literals(void **state)
{
	static const struct {
		const char *host;
		int family;
		const char *text;
	} cases[] = {
	        {"127.0.0.1", AF_INET, "127.0.0.1"},
	        {"10.20.30.40", AF_INET, "10.20.30.40"},
	        {"::1", AF_INET6, "::1"},
	        {"[::1]", AF_INET6, "::1"},
	        {"2001:db8::5", AF_INET6, "2001:db8::5"},
	        {"fe80::1%1", AF_INET6, "fe80::1"},
	};
	struct fixture *f = *state;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct capture c = {0};
		char buf[INET6_ADDRSTRLEN];

		lookup(f, cases[i].host, 6432, &c);
		assert_int_equal(c.calls, 0);
		assert_true(run1(f, &c, 1000));
		assert_int_equal(c.calls, 1);
		assert_int_equal(c.res.status, DNS_STATUS_OK);
		assert_null(c.res.error);
		assert_int_equal(c.res.naddrs, 1);
		assert_int_equal(c.res.addrs[0].ss_family, cases[i].family);
		assert_string_equal(addr_text(&c.res.addrs[0], buf, sizeof(buf)), cases[i].text);
		assert_int_equal(addr_port(&c.res.addrs[0]), 6432);
		assert_int_equal(c.res.addrlens[0], cases[i].family == AF_INET
		                                            ? sizeof(struct sockaddr_in)
		                                            : sizeof(struct sockaddr_in6));
	}
	assert_int_equal(f->fs.unknown_queries, 0);
}

/* localhost is answered from /etc/hosts, asynchronously, without asking a server. */
static void test_localhost(void **state)
{
	struct fixture *f = *state;
	struct capture c = {0};

	lookup(f, "localhost", 5432, &c);
	assert_int_equal(c.calls, 0);
	assert_true(run1(f, &c, 2000));
	assert_int_equal(c.res.status, DNS_STATUS_OK);
	assert_true(c.res.naddrs >= 1);
	assert_true(result_has(&c.res, "127.0.0.1") || result_has(&c.res, "::1"));
	for (int i = 0; i < c.res.naddrs; i++)
		assert_int_equal(addr_port(&c.res.addrs[i]), 5432);
	assert_int_equal(f->fs.unknown_queries, 0);
}

/* With the system's configuration (opts NULL), localhost still resolves from /etc/hosts. */
static void test_system_config(void **state)
{
	struct fixture *f = *state;
	struct capture c = {0};

	dns_free(f->dns);
	f->dns = dns_create(f->base, NULL);
	assert_non_null(f->dns);
	lookup(f, "localhost", 80, &c);
	assert_int_equal(c.calls, 0);
	assert_true(run1(f, &c, 5000));
	assert_int_equal(c.res.status, DNS_STATUS_OK);
	assert_true(result_has(&c.res, "127.0.0.1") || result_has(&c.res, "::1"));
	assert_int_equal(addr_port(&c.res.addrs[0]), 80);
}

/* Names resolvers would reject fail with BADNAME, asynchronously. */
static void test_bad_names(void **state)
{
	char longname[300];
	const char *cases[] = {"", "a..b", "has space", "semi;colon", ".", longname};
	struct fixture *f = *state;

	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct capture c = {0};

		lookup(f, cases[i], 1, &c);
		assert_int_equal(c.calls, 0);
		assert_true(run1(f, &c, 1000));
		assert_int_equal(c.res.status, DNS_STATUS_BADNAME);
		assert_non_null(c.res.error);
		assert_int_equal(c.res.naddrs, 0);
	}
	assert_int_equal(f->fs.unknown_queries, 0);
}

/* A real answer from the server: both families, the port, and more than the maximum cut. */
static void test_resolve_both_families(void **state)
{
	struct fixture *f = *state;
	struct fake_name *fn = fake_add(&f->fs, "db.test", FAKE_ANSWER, 300);
	struct fake_name *many = fake_add(&f->fs, "many.test", FAKE_ANSWER, 300);
	struct capture c = {0}, cm = {0};
	static const char *ips[] = {"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5",
	                            "10.0.0.6", "10.0.0.7", "10.0.0.8", "10.0.0.9", "10.0.0.10"};

	fn->v4[0] = "10.1.2.3";
	fn->v4[1] = "10.1.2.4";
	fn->v6[0] = "2001:db8::1";
	for (int i = 0; i < 10; i++)
		many->v4[i] = ips[i];

	lookup(f, "db.test", 5433, &c);
	lookup(f, "many.test", 1, &cm);
	assert_true(run1(f, &c, 3000));
	assert_int_equal(c.res.status, DNS_STATUS_OK);
	assert_int_equal(c.res.naddrs, 3);
	assert_true(result_has(&c.res, "10.1.2.3"));
	assert_true(result_has(&c.res, "10.1.2.4"));
	assert_true(result_has(&c.res, "2001:db8::1"));
	for (int i = 0; i < c.res.naddrs; i++)
		assert_int_equal(addr_port(&c.res.addrs[i]), 5433);
	assert_int_equal(fn->queries_a, 1);
	assert_int_equal(fn->queries_aaaa, 1);

	assert_true(run1(f, &cm, 3000));
	assert_int_equal(cm.res.status, DNS_STATUS_OK);
	assert_int_equal(cm.res.naddrs, DNS_MAX_ADDRS);
}

/* Several lookups of one name in flight share one query; each gets its own port. */
static void test_concurrent_share(void **state)
{
	struct fixture *f = *state;
	struct fake_name *fn = fake_add(&f->fs, "shared.test", FAKE_ANSWER, 300);
	struct capture c[3] = {{0}};
	struct capture *cs[3] = {&c[0], &c[1], &c[2]};

	fn->v4[0] = "10.9.9.9";
	lookup(f, "shared.test", 1001, &c[0]);
	lookup(f, "shared.test", 1002, &c[1]);
	lookup(f, "SHARED.test", 1003, &c[2]);
	assert_true(run_until(f, cs, 3, 3000));
	for (int i = 0; i < 3; i++) {
		assert_int_equal(c[i].calls, 1);
		assert_int_equal(c[i].res.status, DNS_STATUS_OK);
		assert_int_equal(c[i].res.naddrs, 1);
		assert_true(result_has(&c[i].res, "10.9.9.9"));
		assert_int_equal(addr_port(&c[i].res.addrs[0]), 1001 + i);
	}
	assert_int_equal(fn->queries_a, 1);
	assert_int_equal(fn->queries_aaaa, 1);
}

/* After a success the next lookup is served from the cache: no query, still asynchronous. */
static void test_cache_hit(void **state)
{
	struct fixture *f = *state;
	struct fake_name *fn = fake_add(&f->fs, "cached.test", FAKE_ANSWER, 300);
	struct capture c1 = {0}, c2 = {0};

	fn->v4[0] = "10.7.7.7";
	lookup(f, "cached.test", 1, &c1);
	assert_true(run1(f, &c1, 3000));
	assert_int_equal(fn->queries_a, 1);

	fn->v4[0] = "10.8.8.8"; /* would be seen if the server were asked again */
	lookup(f, "cached.test", 2, &c2);
	assert_int_equal(c2.calls, 0);
	assert_true(run1(f, &c2, 1000));
	assert_int_equal(c2.res.status, DNS_STATUS_OK);
	assert_true(result_has(&c2.res, "10.7.7.7"));
	assert_int_equal(addr_port(&c2.res.addrs[0]), 2);
	assert_int_equal(fn->queries_a, 1);
}

/* Successive answers for one name start at the next address, so connections spread out. */
static void test_round_robin(void **state)
{
	struct fixture *f = *state;
	struct fake_name *fn = fake_add(&f->fs, "rr.test", FAKE_ANSWER, 300);
	char first[3][INET6_ADDRSTRLEN];

	fn->v4[0] = "10.6.0.1";
	fn->v4[1] = "10.6.0.2";
	fn->v4[2] = "10.6.0.3";
	for (int i = 0; i < 3; i++) {
		struct capture c = {0};

		lookup(f, "rr.test", 1, &c);
		assert_true(run1(f, &c, 3000));
		assert_int_equal(c.res.status, DNS_STATUS_OK);
		assert_int_equal(c.res.naddrs, 3);
		assert_true(result_has(&c.res, "10.6.0.1"));
		assert_true(result_has(&c.res, "10.6.0.2"));
		assert_true(result_has(&c.res, "10.6.0.3"));
		addr_text(&c.res.addrs[0], first[i], sizeof(first[i]));
	}
	assert_string_not_equal(first[0], first[1]);
	assert_string_not_equal(first[1], first[2]);
	assert_string_not_equal(first[0], first[2]);
	assert_int_equal(fn->queries_a, 1);
}

/* The record TTL bounds the cache; max_ttl bounds it further. */
static void test_ttl(void **state)
{
	struct fixture *f = *state;
	struct fake_name *rec = fake_add(&f->fs, "ttl1.test", FAKE_ANSWER, 1);
	struct fake_name *capped = fake_add(&f->fs, "capped.test", FAKE_ANSWER, 3600);
	struct capture c = {0};

	rec->v4[0] = "10.0.1.1";
	capped->v4[0] = "10.0.2.2";
	fixture_dns(f, 500000, 15000000, 2000000); /* max_ttl 0.5 s */

	lookup(f, "capped.test", 1, &c);
	assert_true(run1(f, &c, 3000));
	memset(&c, 0, sizeof(c));
	lookup(f, "capped.test", 1, &c);
	assert_true(run1(f, &c, 3000));
	assert_int_equal(capped->queries_a, 1);
	sleep_ms(600);
	memset(&c, 0, sizeof(c));
	lookup(f, "capped.test", 1, &c);
	assert_true(run1(f, &c, 3000));
	assert_int_equal(capped->queries_a, 2);

	fixture_dns(f, 15000000, 15000000, 2000000); /* max_ttl 15 s: the record's 1 s counts */
	memset(&c, 0, sizeof(c));
	lookup(f, "ttl1.test", 1, &c);
	assert_true(run1(f, &c, 3000));
	sleep_ms(300);
	memset(&c, 0, sizeof(c));
	lookup(f, "ttl1.test", 1, &c);
	assert_true(run1(f, &c, 3000));
	assert_int_equal(rec->queries_a, 1);
	sleep_ms(900);
	memset(&c, 0, sizeof(c));
	lookup(f, "ttl1.test", 1, &c);
	assert_true(run1(f, &c, 3000));
	assert_int_equal(c.res.status, DNS_STATUS_OK);
	assert_int_equal(rec->queries_a, 2);
}

/* NXDOMAIN is reported as such and remembered for nxdomain_ttl. */
static void test_nxdomain_cached(void **state)
{
	struct fixture *f = *state;
	struct capture c = {0};

	lookup(f, "nonexistent.invalid", 1, &c);
	assert_true(run1(f, &c, 3000));
	assert_int_equal(c.res.status, DNS_STATUS_NXDOMAIN);
	assert_non_null(c.res.error);
	assert_int_equal(c.res.naddrs, 0);
	int asked = f->fs.unknown_queries;
	assert_true(asked >= 1);

	memset(&c, 0, sizeof(c));
	lookup(f, "nonexistent.invalid", 1, &c);
	assert_true(run1(f, &c, 3000));
	assert_int_equal(c.res.status, DNS_STATUS_NXDOMAIN);
	assert_int_equal(f->fs.unknown_queries, asked);

	/* with nxdomain_ttl 0 every lookup asks again */
	fixture_dns(f, 15000000, 0, 2000000);
	for (int i = 0; i < 2; i++) {
		memset(&c, 0, sizeof(c));
		lookup(f, "nonexistent.invalid", 1, &c);
		assert_true(run1(f, &c, 3000));
		assert_int_equal(c.res.status, DNS_STATUS_NXDOMAIN);
	}
	assert_true(f->fs.unknown_queries >= asked + 2);
}

/*
 * Server errors fail the lookup and are not cached. c-ares 1.18 gives up on a server that answers
 * SERVFAIL or REFUSED and reports "could not contact DNS servers" once none is left, so both
 * statuses are acceptable for these.
 */
static void test_server_errors(void **state)
{
	static const struct {
		const char *name;
		int rcode;
	} cases[] = {
	        {"servfail.test", 2},
	        {"notimp.test", 4},
	        {"refused.test", 5},
	};
	struct fixture *f = *state;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct fake_name *fn = fake_add(&f->fs, cases[i].name, FAKE_RCODE, 0);
		struct capture c = {0};

		fn->rcode = cases[i].rcode;
		lookup(f, cases[i].name, 1, &c);
		assert_true(run1(f, &c, 3000));
		assert_true(c.res.status == DNS_STATUS_SERVFAIL ||
		            c.res.status == DNS_STATUS_REFUSED);
		assert_non_null(c.res.error);
		assert_int_equal(c.res.naddrs, 0);
		int asked = fn->queries_a;

		assert_true(asked >= 1);
		memset(&c, 0, sizeof(c));
		lookup(f, cases[i].name, 1, &c);
		assert_true(run1(f, &c, 3000));
		assert_true(c.res.status == DNS_STATUS_SERVFAIL ||
		            c.res.status == DNS_STATUS_REFUSED);
		assert_true(fn->queries_a > asked);
	}
}

/*
 * A reference lookup for the timeout tests: "silent.test" on the fake (which never answers
 * it), through a resolver of its own with a timeout ten times the one under test. The lookup
 * under test must end first: its own timeout bounds it, whatever the machine's speed.
 */
static struct dns *start_reference(struct fixture *f, int64_t timeout, struct capture *ref)
{
	char servers[64];
	struct dns_options o = {
	        .max_ttl_usec = 15000000,
	        .nxdomain_ttl_usec = 15000000,
	        .timeout_usec = timeout * 10,
	        .servers = servers,
	};
	struct dns *dns;

	if (fake_find(&f->fs, "silent.test") == NULL)
		fake_add(&f->fs, "silent.test", FAKE_SILENT, 0);
	snprintf(servers, sizeof(servers), "127.0.0.1:%d", f->fs.port);
	dns = dns_create(f->base, &o);
	assert_non_null(dns);
	in_lookup = true;
	assert_non_null(dns_lookup(dns, "silent.test", 1, capture_cb, ref));
	in_lookup = false;
	return dns;
}

/* A server that never answers: TIMEOUT, within the configured bound. */
static void test_timeout_bounded(void **state)
{
	struct fixture *f = *state;
	struct fake_name *fn = fake_add(&f->fs, "silent.test", FAKE_SILENT, 0);
	struct capture c = {0}, ref = {0};
	struct dns *reference = start_reference(f, 300000, &ref);
	int64_t start;

	fixture_dns(f, 15000000, 15000000, 300000); /* 0.3 s */
	start = now_usec();
	lookup(f, "silent.test", 1, &c);
	assert_true(run1(f, &c, 60000)); /* the bound only guards against a hang */
	assert_int_equal(c.res.status, DNS_STATUS_TIMEOUT);
	assert_non_null(c.res.error);
	assert_true(c.at_usec - start >= 200000); /* not before its time */
	assert_int_equal(ref.calls, 0);           /* within it: before a 3 s timeout */
	assert_true(fn->queries_a >= 1);
	dns_free(reference);
	assert_int_equal(ref.calls, 0);
}

/* Nothing listens where the server should be: a clear failure, quickly. */
static void test_no_server(void **state)
{
	struct fixture *f = *state;
	struct capture c = {0}, ref = {0};
	struct dns *reference = start_reference(f, 500000, &ref);
	int port;
	int fd = bind_udp_below_30000(&port);

	close(fd);
	snprintf(f->servers, sizeof(f->servers), "127.0.0.1:%d", port);
	fixture_dns(f, 15000000, 15000000, 500000);
	lookup(f, "nonexistent.invalid", 1, &c);
	assert_true(run1(f, &c, 60000)); /* the bound only guards against a hang */
	assert_true(c.res.status == DNS_STATUS_REFUSED || c.res.status == DNS_STATUS_TIMEOUT);
	assert_non_null(c.res.error);
	assert_int_equal(c.res.naddrs, 0);
	/* quickly: within its own 0.5 s timeout, before the reference's 5 s */
	assert_int_equal(ref.calls, 0);
	dns_free(reference);
	assert_int_equal(ref.calls, 0);
}

/* A cancelled lookup is never called back, whatever state it was in; others still are. */
static void test_cancel(void **state)
{
	struct fixture *f = *state;
	struct fake_name *fn = fake_add(&f->fs, "cancel.test", FAKE_ANSWER, 300);
	struct capture lit = {0}, a = {0}, b = {0}, hit = {0}, other = {0};

	fn->v4[0] = "10.5.5.5";
	dns_cancel(lookup(f, "127.0.0.1", 1, &lit)); /* waiting for delivery */
	dns_cancel(lookup(f, "cancel.test", 1, &a)); /* waiting for the server */
	lookup(f, "cancel.test", 2, &b);             /* shares a's query */
	assert_true(run1(f, &b, 3000));
	assert_int_equal(b.res.status, DNS_STATUS_OK);
	dns_cancel(lookup(f, "cancel.test", 3, &hit)); /* cache hit, cancelled before delivery */
	lookup(f, "127.0.0.2", 1, &other);
	assert_true(run1(f, &other, 1000));
	run_for(f, 100);
	assert_int_equal(lit.calls, 0);
	assert_int_equal(a.calls, 0);
	assert_int_equal(hit.calls, 0);
	assert_int_equal(b.calls, 1);
	assert_int_equal(other.calls, 1);
	dns_cancel(NULL);
}

/* dns_free with lookups pending calls nothing back (and leaks nothing under ASan). */
static void test_free_pending(void **state)
{
	struct fixture *f = *state;
	struct capture a = {0}, b = {0}, c = {0};

	fake_add(&f->fs, "pending.test", FAKE_SILENT, 0);
	lookup(f, "pending.test", 1, &a);
	lookup(f, "pending.test", 2, &b);
	run_for(f, 50); /* the query is sent and unanswered */
	lookup(f, "127.0.0.1", 3, &c);
	dns_free(f->dns);
	f->dns = NULL;
	run_for(f, 50);
	assert_int_equal(a.calls, 0);
	assert_int_equal(b.calls, 0);
	assert_int_equal(c.calls, 0);
}

struct host_row {
	char host[64];
	int64_t ttl;
	char addrs[128];
};

struct host_rows {
	int n;
	struct host_row rows[8];
};

static void host_row_cb(void *arg, const char *host, int64_t ttl, const char *addrs)
{
	struct host_rows *hr = arg;

	assert_true(hr->n < 8);
	snprintf(hr->rows[hr->n].host, sizeof(hr->rows[0].host), "%s", host);
	hr->rows[hr->n].ttl = ttl;
	snprintf(hr->rows[hr->n].addrs, sizeof(hr->rows[0].addrs), "%s", addrs);
	hr->n++;
}

/* SHOW DNS_HOSTS material: each cached name, its time left and its addresses. */
static void test_foreach_host(void **state)
{
	struct fixture *f = *state;
	struct fake_name *fn = fake_add(&f->fs, "show.test", FAKE_ANSWER, 300);
	struct capture c = {0}, nx = {0}, lit = {0};
	struct capture *cs[3] = {&c, &nx, &lit};
	struct host_rows hr = {0};

	fn->v4[0] = "10.3.3.3";
	fn->v6[0] = "2001:db8::3";
	lookup(f, "show.test", 1, &c);
	lookup(f, "missing.test", 1, &nx);
	lookup(f, "10.0.0.1", 1, &lit); /* literals are not cached names */
	assert_true(run_until(f, cs, 3, 3000));
	dns_foreach_host(f->dns, host_row_cb, &hr);
	assert_int_equal(hr.n, 2);
	for (int i = 0; i < hr.n; i++) {
		if (strcmp(hr.rows[i].host, "show.test") == 0) {
			assert_true(hr.rows[i].ttl > 14000000 && hr.rows[i].ttl <= 15000000);
			assert_true(strcmp(hr.rows[i].addrs, "10.3.3.3,2001:db8::3") == 0 ||
			            strcmp(hr.rows[i].addrs, "2001:db8::3,10.3.3.3") == 0);
		} else {
			assert_string_equal(hr.rows[i].host, "missing.test");
			assert_true(hr.rows[i].ttl > 0);
			assert_string_equal(hr.rows[i].addrs, "");
		}
	}
}

static void count_cb(void *arg, const char *host, int64_t ttl, const char *addrs)
{
	(*(int *)arg)++;
}

/* The cache keeps a bounded number of names, however many are looked up. */
static void test_cache_bounded(void **state)
{
	struct fixture *f = *state;
	enum { BATCH = 128, TOTAL = 1280 };
	static struct capture cs[BATCH];
	struct capture *pcs[BATCH];
	char name[32];
	int rows = 0;

	for (int done = 0; done < TOTAL; done += BATCH) {
		memset(cs, 0, sizeof(cs));
		for (int i = 0; i < BATCH; i++) {
			snprintf(name, sizeof(name), "n%d.test", done + i);
			pcs[i] = &cs[i];
			lookup(f, name, 1, &cs[i]);
		}
		assert_true(run_until(f, pcs, BATCH, 5000));
		for (int i = 0; i < BATCH; i++)
			assert_int_equal(cs[i].res.status, DNS_STATUS_NXDOMAIN);
	}
	dns_foreach_host(f->dns, count_cb, &rows);
	assert_true(rows >= BATCH);
	assert_true(rows < TOTAL);

	/* the newest names are the ones kept */
	int asked = f->fs.unknown_queries;

	memset(cs, 0, sizeof(cs));
	snprintf(name, sizeof(name), "n%d.test", TOTAL - 1);
	lookup(f, name, 1, &cs[0]);
	assert_true(run1(f, &cs[0], 3000));
	assert_int_equal(cs[0].res.status, DNS_STATUS_NXDOMAIN);
	assert_int_equal(f->fs.unknown_queries, asked);
}

/* A callback may start another lookup of the same name; it is answered from the cache. */
struct chain {
	struct fixture *f;
	struct capture second;
	int calls;
};

static void chain_cb(void *arg, const struct dns_result *res)
{
	struct chain *ch = arg;

	assert_false(in_lookup);
	ch->calls++;
	assert_int_equal(res->status, DNS_STATUS_OK);
	lookup(ch->f, "chain.test", 2, &ch->second);
	assert_int_equal(ch->second.calls, 0);
}

static void test_lookup_from_callback(void **state)
{
	struct fixture *f = *state;
	struct fake_name *fn = fake_add(&f->fs, "chain.test", FAKE_ANSWER, 300);
	struct chain ch = {.f = f};
	struct capture *cs = &ch.second;

	fn->v4[0] = "10.4.4.4";
	in_lookup = true;
	assert_non_null(dns_lookup(f->dns, "chain.test", 1, chain_cb, &ch));
	in_lookup = false;
	assert_true(run_until(f, &cs, 1, 3000));
	assert_int_equal(ch.calls, 1);
	assert_int_equal(ch.second.res.status, DNS_STATUS_OK);
	assert_int_equal(addr_port(&ch.second.res.addrs[0]), 2);
	assert_int_equal(fn->queries_a, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_status_str),
	        cmocka_unit_test_setup_teardown(test_literals, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_localhost, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_system_config, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_bad_names, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_resolve_both_families, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_concurrent_share, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_cache_hit, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_round_robin, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_ttl, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_nxdomain_cached, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_server_errors, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_timeout_bounded, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_no_server, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_free_pending, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_foreach_host, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_lookup_from_callback, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_cache_bounded, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
