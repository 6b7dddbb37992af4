/*
 * Tests of the HTTP engine on a real event loop against the fake server of test/fakes/
 * (started by this program): answers and headers, the in-flight cap and its FIFO queue,
 * timeouts, refused connections, the body cap, cancellation, name resolution through the dns
 * module, and 200 requests held at the server that never hold up a timer on the same loop.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <event2/event.h>

#include "api/http.h"
#include "dns.h"

#include "../fakes/fake_launch.h"
#include "../fakes/test_ports.h"

static struct fake_server fake;
static struct fake_server fake_tls;
static char tls_dir[1024];

struct done {
	int calls;
	enum http_outcome outcome;
	long status;
	char body[256];
	size_t body_len;
	char error[256];
	char content_type[64];
	int order;
	int64_t at_ms;
	bool reused;
	bool want_full;
	char *full; /* the whole body, when want_full */
};

struct env {
	struct event_base *base;
	struct dns *dns;
	struct http_engine *eng;
	struct http_lane *lane;
	int finished;
	int want;
	int seq;
	int max_in_flight_seen;
};

static struct env E;

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void on_done(void *arg, const struct http_response *resp)
{
	struct done *d = arg;
	const char *ct = http_response_header(resp, "content-type");

	d->calls++;
	d->outcome = resp->outcome;
	d->status = resp->status;
	d->body_len = resp->body_len;
	snprintf(d->body, sizeof(d->body), "%s", resp->body);
	snprintf(d->error, sizeof(d->error), "%s", resp->error ? resp->error : "");
	snprintf(d->content_type, sizeof(d->content_type), "%s", ct ? ct : "");
	d->order = E.seq++;
	d->reused = resp->reused_connection;
	if (d->want_full)
		d->full = strdup(resp->body);
	d->at_ms = now_ms();
	E.finished++;
	if (E.finished >= E.want)
		event_base_loopbreak(E.base);
}

static void on_guard(evutil_socket_t fd, short what, void *arg)
{
	event_base_loopbreak(E.base);
}

/* Runs the loop until E.want callbacks arrived or limit_ms passed. */
static void run_until(int want, int limit_ms)
{
	struct timeval tv = {limit_ms / 1000, (limit_ms % 1000) * 1000};
	struct event *guard = evtimer_new(E.base, on_guard, NULL);

	E.want = want;
	evtimer_add(guard, &tv);
	if (E.finished < want)
		event_base_dispatch(E.base);
	event_free(guard);
}

static int setup(void **state)
{
	struct dns_options o = {.timeout_usec = 2000000};

	memset(&E, 0, sizeof(E));
	E.base = event_base_new();
	E.dns = dns_create(E.base, &o);
	E.eng = http_engine_create(E.base, E.dns);
	E.lane = http_lane_create(E.eng, "test", 4);
	return E.base && E.dns && E.eng && E.lane ? 0 : -1;
}

static int teardown(void **state)
{
	http_engine_free(E.eng);
	dns_free(E.dns);
	event_base_free(E.base);
	return 0;
}

static struct http_request *req_to(enum http_method m, const char *path)
{
	char url[256];

	snprintf(url, sizeof(url), "%s%s", fake.base_url, path);
	return http_request_new(m, url);
}

static void test_answer_and_headers(void **state)
{
	struct done d = {.want_full = true};
	struct http_request *r = req_to(HTTP_PATCH, "/_echo?x=1");

	assert_true(http_request_add_header(r, "Content-Type", "application/json"));
	assert_true(http_request_add_header(r, "X-Test", "yes"));
	assert_false(http_request_add_header(r, "X-Bad", "a\r\nInjected: 1"));
	assert_true(http_request_set_body(r, "{\"a\":1}", 7));
	assert_true(http_submit(E.eng, E.lane, r, on_done, &d));
	assert_int_equal(d.calls, 0); /* never from inside http_submit */
	run_until(1, 5000);
	assert_int_equal(d.calls, 1);
	assert_int_equal(d.outcome, HTTP_OUTCOME_ANSWER);
	assert_int_equal(d.status, 200);
	assert_non_null(strstr(d.full, "\"method\": \"PATCH\""));
	assert_non_null(strstr(d.full, "\"X-Test\": \"yes\""));
	assert_null(strstr(d.full, "Injected"));
	assert_non_null(strstr(d.full, "{\\\"a\\\":1}"));
	assert_string_equal(d.content_type, "application/json;charset=UTF-8");
	assert_non_null(strstr(d.full, "\"User-Agent\": \"syncbouncer"));
	free(d.full);
}

static void test_connection_reuse(void **state)
{
	struct done a = {0}, b = {0};

	assert_true(http_submit(E.eng, E.lane, req_to(HTTP_GET, "/_echo"), on_done, &a));
	run_until(1, 5000);
	assert_true(http_submit(E.eng, E.lane, req_to(HTTP_POST, "/_echo"), on_done, &b));
	run_until(2, 5000);
	assert_int_equal(a.status, 200);
	assert_int_equal(b.status, 200);
	assert_false(a.reused);
	assert_true(b.reused);
}

/* Runs one request to the fake to completion; returns its whole body (malloc'd). */
static char *fake_sync(enum http_method m, const char *path, const char *body, bool resend,
                       struct done *d)
{
	struct http_request *r = req_to(m, path);
	int want = E.finished + 1;

	if (body != NULL)
		assert_true(http_request_set_body(r, body, strlen(body)));
	if (resend)
		http_request_allow_resend(r);
	memset(d, 0, sizeof(*d));
	d->want_full = true;
	assert_true(http_submit(E.eng, E.lane, r, on_done, d));
	run_until(want, 5000);
	assert_int_equal(d->calls, 1);
	return d->full;
}

/* How many requests for path the fake received. */
static int count_in_log(const char *path)
{
	char needle[128], *log, *p;
	struct done d;
	int n = 0;

	snprintf(needle, sizeof(needle), "\"path\": \"%s\"", path);
	log = fake_sync(HTTP_GET, "/_requests", NULL, true, &d);
	for (p = log; (p = strstr(p, needle)) != NULL; p++)
		n++;
	free(log);
	return n;
}

static void test_no_silent_resend(void **state)
{
	static const char *const paths[2] = {"/services/data/v59.0/x1", "/services/data/v59.0/x2"};
	struct done d;
	int i;

	for (i = 0; i < 2; i++) {
		bool resend = i == 1;

		free(fake_sync(HTTP_POST, "/_control", "{\"reset\":true}", false, &d));
		/* the connection that carried this is reused for the next request, */
		free(fake_sync(HTTP_POST, "/_control", "{\"down\":true,\"down_count\":1}", false,
		               &d));
		/* which the fake reads, then hangs up on without answering */
		free(fake_sync(HTTP_POST, paths[i], "{\"a\":1}", resend, &d));
		if (!resend) {
			/* it may have been applied: curl must not send it again by itself */
			assert_int_equal(d.outcome, HTTP_OUTCOME_UNKNOWN);
			assert_non_null(strstr(d.error, "not resent"));
			assert_int_equal(count_in_log(paths[i]), 1);
		} else {
			/* an idempotent request goes again on a fresh connection and is answered */
			assert_int_equal(d.outcome, HTTP_OUTCOME_ANSWER);
			assert_int_equal(count_in_log(paths[i]), 2);
		}
	}
}

static void test_cap_and_fifo_queue(void **state)
{
	struct done d[6];
	struct http_lane *lane = http_lane_create(E.eng, "capped", 2);
	int64_t t0 = now_ms();
	int i;

	memset(d, 0, sizeof(d));
	for (i = 0; i < 6; i++)
		assert_true(http_submit(E.eng, lane, req_to(HTTP_GET, "/_slow?ms=300"), on_done,
		                        &d[i]));
	assert_int_equal(http_lane_in_flight(lane), 2);
	assert_int_equal(http_lane_queued(lane), 4);
	run_until(6, 10000);
	for (i = 0; i < 6; i++) {
		assert_int_equal(d[i].outcome, HTTP_OUTCOME_ANSWER);
		/* pairs: the i-th request cannot end before (i/2 + 1) rounds of 300 ms */
		assert_true(d[i].at_ms - t0 >= (i / 2 + 1) * 300 - 30);
	}
	/* FIFO: the last pair ends after the first pair */
	assert_true(d[4].order > d[0].order && d[4].order > d[1].order);
	assert_true(d[5].order > d[0].order && d[5].order > d[1].order);
	assert_int_equal(http_lane_in_flight(lane), 0);
	assert_int_equal(http_lane_queued(lane), 0);
	http_lane_free(lane);
}

static void test_timeout_is_unknown_outcome(void **state)
{
	struct done d = {0};
	/* the answer would come after 40 s: only the 0.3 s timeout ends it before the guard */
	struct http_request *r = req_to(HTTP_POST, "/_slow?ms=40000");

	assert_true(http_request_set_body(r, "{}", 2));
	http_request_set_timeout(r, 300000);
	assert_true(http_submit(E.eng, E.lane, r, on_done, &d));
	run_until(1, 30000);
	assert_int_equal(d.calls, 1);
	assert_int_equal(d.outcome, HTTP_OUTCOME_UNKNOWN);
	assert_non_null(strstr(d.error, "timed out"));
}

static void test_refused_is_not_sent(void **state)
{
	struct done d = {0};
	char url[128];

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/x", fake_free_port());
	assert_true(http_submit(E.eng, E.lane, http_request_new(HTTP_POST, url), on_done, &d));
	run_until(1, 5000);
	assert_int_equal(d.calls, 1);
	assert_int_equal(d.outcome, HTTP_OUTCOME_NOT_SENT);
	assert_int_equal(d.status, 0);
}

static void test_connect_timeout_is_not_sent(void **state)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	int lfd = socket(AF_INET, SOCK_STREAM, 0), fill[4], i;
	struct http_request *r;
	struct done d = {0};
	char url[128];

	/* a listener whose queue is full and never accepts: our SYN goes unanswered */
	assert_true(test_bind_loopback(lfd, &sa));
	assert_int_equal(listen(lfd, 0), 0);
	for (i = 0; i < 4; i++) {
		fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
		connect(fill[i], (struct sockaddr *)&sa, sizeof(sa));
	}
	usleep(100000);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/x", ntohs(sa.sin_port));
	r = http_request_new(HTTP_POST, url);
	assert_true(http_request_set_body(r, "{}", 2));
	http_request_set_timeout(r, 500000);
	assert_true(http_submit(E.eng, E.lane, r, on_done, &d));
	run_until(1, 5000);
	assert_int_equal(d.calls, 1);
	/* the time ran out before the request could go: nothing can have been done with it */
	assert_int_equal(d.outcome, HTTP_OUTCOME_NOT_SENT);
	for (i = 0; i < 4; i++)
		close(fill[i]);
	close(lfd);
}

static void test_body_cap(void **state)
{
	struct done d = {0}, ok = {0};
	struct http_request *r = req_to(HTTP_GET, "/_big?bytes=100000");

	http_request_set_max_body(r, 1000);
	assert_true(http_submit(E.eng, E.lane, r, on_done, &d));
	r = req_to(HTTP_GET, "/_big?bytes=1000");
	http_request_set_max_body(r, 1000);
	assert_true(http_submit(E.eng, E.lane, r, on_done, &ok));
	run_until(2, 5000);
	assert_int_equal(d.outcome, HTTP_OUTCOME_BAD_ANSWER);
	assert_int_equal(d.status, 200);
	assert_non_null(strstr(d.error, "larger than 1000"));
	assert_int_equal(ok.outcome, HTTP_OUTCOME_ANSWER);
	assert_int_equal(ok.body_len, 1000);
}

static void test_cancel_and_bad_url(void **state)
{
	struct done d[3];
	struct http_request *r[3];
	int i;

	memset(d, 0, sizeof(d));
	for (i = 0; i < 3; i++) {
		r[i] = req_to(HTTP_GET, "/_slow?ms=200");
		assert_true(http_submit(E.eng, E.lane, r[i], on_done, &d[i]));
	}
	http_cancel(r[1]);
	run_until(2, 5000);
	assert_int_equal(d[0].calls, 1);
	assert_int_equal(d[1].calls, 0);
	assert_int_equal(d[2].calls, 1);

	assert_false(http_submit(E.eng, E.lane, http_request_new(HTTP_GET, "ftp://x/y"), on_done,
	                         &d[0]));
	assert_false(http_submit(E.eng, E.lane, http_request_new(HTTP_GET, "not a url"), on_done,
	                         &d[0]));
	assert_int_equal(d[0].calls, 1);
}

static void test_names_resolved_by_dns(void **state)
{
	struct done ok = {0}, bad = {0};
	char url[128];

	snprintf(url, sizeof(url), "http://localhost:%d/_echo", fake.port);
	assert_true(http_submit(E.eng, E.lane, http_request_new(HTTP_GET, url), on_done, &ok));
	assert_true(http_submit(E.eng, E.lane,
	                        http_request_new(HTTP_GET, "http://nonexistent.invalid:80/x"),
	                        on_done, &bad));
	run_until(2, 8000);
	assert_int_equal(ok.outcome, HTTP_OUTCOME_ANSWER);
	assert_int_equal(ok.status, 200);
	assert_int_equal(bad.calls, 1);
	assert_int_equal(bad.outcome, HTTP_OUTCOME_NOT_SENT);
	assert_non_null(strstr(bad.error, "could not resolve host"));
}

static void test_no_resolver_only_numeric(void **state)
{
	struct http_engine *eng = http_engine_create(E.base, NULL);
	struct http_lane *lane = http_lane_create(eng, "nodns", 1);
	struct done d = {0};

	assert_true(http_submit(eng, lane, http_request_new(HTTP_GET, "http://example.com/"),
	                        on_done, &d));
	run_until(1, 2000);
	assert_int_equal(d.outcome, HTTP_OUTCOME_NOT_SENT);
	/* pending requests are dropped without callbacks when the engine goes */
	assert_true(http_submit(eng, lane, req_to(HTTP_GET, "/_slow?ms=100"), on_done, &d));
	http_engine_free(eng);
	assert_int_equal(d.calls, 1);
}

static void test_tls_verification(void **state)
{
	struct done ok = {0}, untrusted = {0}, wrong_name = {0};
	struct http_request *r;
	char url[128], ca[1100];

	snprintf(ca, sizeof(ca), "%s/ca.pem", tls_dir);
	snprintf(url, sizeof(url), "https://localhost:%d/_echo", fake_tls.port);
	r = http_request_new(HTTP_GET, url);
	assert_true(http_request_set_ca_file(r, ca));
	assert_true(http_submit(E.eng, E.lane, r, on_done, &ok));
	/* the system's CAs do not know our test CA: refused before anything is sent */
	assert_true(
	        http_submit(E.eng, E.lane, http_request_new(HTTP_GET, url), on_done, &untrusted));
	/* the certificate names localhost and 127.0.0.1, not 127.0.0.2 */
	snprintf(url, sizeof(url), "https://127.0.0.2:%d/_echo", fake_tls.port);
	r = http_request_new(HTTP_GET, url);
	assert_true(http_request_set_ca_file(r, ca));
	assert_true(http_submit(E.eng, E.lane, r, on_done, &wrong_name));
	run_until(3, 8000);
	assert_int_equal(ok.outcome, HTTP_OUTCOME_ANSWER);
	assert_int_equal(ok.status, 200);
	assert_int_equal(untrusted.outcome, HTTP_OUTCOME_NOT_SENT);
	assert_int_equal(wrong_name.outcome, HTTP_OUTCOME_NOT_SENT);
}

/* ---- 200 held requests while a timer ticks ----
 *
 * The fake holds every GET /_gate/wait until the test opens the gate, so nothing here depends
 * on how fast the machine is: the test first sees all 200 requests waiting at the server at
 * once (they are concurrent), then counts timer ticks while they all still wait (the loop is
 * not held by them), and only then, from a tick, opens the gate. A loop blocked by a request
 * would never tick, never ask /_gate/held and never open the gate: the 200 would not answer.
 */

#define HELD_N           200
#define TICKS_WHILE_HELD 5

struct gate_watch {
	struct event *ev;
	int ticks;
	bool polling;  /* a GET /_gate/held is out */
	int held_seen; /* the largest count it answered */
	int ticks_at_all_held;
	bool opened;
	int answered_before_open;
};

static struct gate_watch G;

static void on_held(void *arg, const struct http_response *resp)
{
	const char *p = resp->body ? strstr(resp->body, "\"held\":") : NULL;
	int n = p ? atoi(p + strlen("\"held\":")) : -1;

	(void)arg;
	G.polling = false;
	if (n > G.held_seen)
		G.held_seen = n;
	if (n == HELD_N && G.ticks_at_all_held < 0)
		G.ticks_at_all_held = G.ticks;
}

static void on_opened(void *arg, const struct http_response *resp)
{
	(void)arg;
	(void)resp;
}

static void on_gate_tick(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	G.ticks++;
	if (G.opened)
		return;
	if (G.ticks_at_all_held >= 0) {
		if (G.ticks - G.ticks_at_all_held >= TICKS_WHILE_HELD) {
			G.opened = true;
			G.answered_before_open = E.finished;
			assert_true(http_submit(E.eng, E.lane, req_to(HTTP_POST, "/_gate/open"),
			                        on_opened, NULL));
		}
		return;
	}
	if (!G.polling) {
		G.polling = true;
		assert_true(
		        http_submit(E.eng, E.lane, req_to(HTTP_GET, "/_gate/held"), on_held, NULL));
	}
}

static void test_200_slow_requests_loop_not_blocked(void **state)
{
	static struct done d[HELD_N];
	struct http_lane *lane = http_lane_create(E.eng, "wide", HELD_N);
	struct timeval every = {0, 10000};
	struct done closed = {0};
	int i, answered = 0;

	memset(d, 0, sizeof(d));
	memset(&G, 0, sizeof(G));
	G.ticks_at_all_held = -1;
	/* the gate is shared by the fake's clients: start it shut and counting from zero */
	assert_true(
	        http_submit(E.eng, E.lane, req_to(HTTP_POST, "/_gate/close"), on_done, &closed));
	run_until(1, 10000);
	assert_int_equal(closed.status, 200);
	E.finished = 0;
	G.ev = event_new(E.base, -1, EV_PERSIST, on_gate_tick, NULL);
	event_add(G.ev, &every);
	for (i = 0; i < HELD_N; i++)
		assert_true(
		        http_submit(E.eng, lane, req_to(HTTP_GET, "/_gate/wait"), on_done, &d[i]));
	/* generous: the fake holds the requests 60 s at most, the test ends when they answer */
	run_until(HELD_N, 90000);
	event_free(G.ev);
	for (i = 0; i < HELD_N; i++)
		answered += d[i].outcome == HTTP_OUTCOME_ANSWER && d[i].status == 200;
	print_message("%d held at once, %d ticks in all, %d of them while all %d were held\n",
	              G.held_seen, G.ticks, G.opened ? TICKS_WHILE_HELD : 0, HELD_N);
	/* concurrent: all 200 were waiting at the server at the same time */
	assert_int_equal(G.held_seen, HELD_N);
	/* not blocked: the timer ticked (and the loop sent new requests) while all 200 waited,
	 * and none answered before the tick that opened the gate */
	assert_true(G.opened);
	assert_int_equal(G.answered_before_open, 0);
	assert_int_equal(answered, HELD_N);
	http_lane_free(lane);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test_setup_teardown(test_answer_and_headers, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_connection_reuse, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_no_silent_resend, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_cap_and_fifo_queue, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_timeout_is_unknown_outcome, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_refused_is_not_sent, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_connect_timeout_is_not_sent, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_body_cap, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_cancel_and_bad_url, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_names_resolved_by_dns, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_no_resolver_only_numeric, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_tls_verification, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_200_slow_requests_loop_not_blocked, setup,
	                                        teardown),
	};
	const char *srcdir = getenv("srcdir");
	char cert[1100], key[1100];
	const char *tls_args[] = {"--tls-cert", cert, "--tls-key", key, NULL};
	int rc;

	snprintf(tls_dir, sizeof(tls_dir), "%s/test/unit/fixtures/api/tls", srcdir ? srcdir : ".");
	snprintf(cert, sizeof(cert), "%s/server.pem", tls_dir);
	snprintf(key, sizeof(key), "%s/server.key", tls_dir);
	if (!fake_server_start(&fake, "fake_salesforce.py", NULL) ||
	    !fake_server_start(&fake_tls, "fake_salesforce.py", tls_args)) {
		fprintf(stderr, "cannot start the fake servers\n");
		fake_server_stop(&fake);
		return 1;
	}
	rc = cmocka_run_group_tests(tests, NULL, NULL);
	fake_server_stop(&fake_tls);
	fake_server_stop(&fake);
	return rc;
}
