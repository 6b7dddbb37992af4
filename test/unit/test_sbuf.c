/*
 * Unit tests for sbuf: packets relayed between two socketpairs, with an owner whose answers
 * come from a table. What matters to the pooler: the order of bytes at the destination when the
 * owner injects its own bytes (SBUF_FLUSH first), skipping, consuming and pausing; and a socket
 * handed from one loop to another with the bytes it had received.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sbuf.h"

struct owner {
	struct sbuf src, dst;
	int src_far, dst_far; /* test ends: write into src, read what reached dst */
	const char *actions;  /* one letter per packet: S send, K skip, C consume, I inject "i"
	                         in its place (asking for a flush first), P pause */
	int offers;
	char seen[64];
	const uint8_t *pass; /* what pass_types() answers */
	uint8_t pass_set[32];
	char pass_until; /* once a packet of this type is offered, pass nothing more */
};

static enum sbuf_action on_packet(void *arg, struct sbuf *sb, const struct sbuf_pkt *pkt)
{
	struct owner *o = arg;
	/* past the end of actions: send */
	char a = (size_t)o->offers < strlen(o->actions) ? o->actions[o->offers] : 'S';

	(void)sb;
	o->seen[o->offers++] = (char)pkt->type;
	if (o->pass_until != '\0' && pkt->type == (uint8_t)o->pass_until)
		o->pass = NULL;
	switch (a) {
	case 'S':
		return SBUF_SEND;
	case 'K':
		return SBUF_SKIP;
	case 'C':
		return pkt->complete ? SBUF_CONSUMED : SBUF_WAIT;
	case 'I': {
		/* inject "i" in place of this packet; only right once nothing is pending */
		static const uint8_t inj[5] = {'i', 0, 0, 0, 4};
		if (sbuf_has_pending(&o->src)) {
			o->offers--; /* ask again for the same letter */
			return SBUF_FLUSH;
		}
		assert_true(sbuf_queue(&o->dst, inj, sizeof(inj)));
		return SBUF_CONSUMED;
	}
	case 'P':
		return SBUF_PAUSE;
	}
	return SBUF_SEND;
}

static void on_failed(void *arg, struct sbuf *sb, const char *reason)
{
	(void)arg;
	(void)sb;
	fail_msg("sbuf failed: %s", reason);
}

static const uint8_t *on_pass_types(void *arg)
{
	struct owner *o = arg;

	return o->pass;
}

static const struct sbuf_ops ops = {
        .packet = on_packet, .failed = on_failed, .pass_types = on_pass_types};

static void setup_pair(struct event_base *base, struct owner *o)
{
	int a[2], b[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, a), 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, b), 0);
	assert_true(sbuf_init(&o->src, base, a[0], 4096, 1 << 20, &ops, o));
	assert_true(sbuf_init(&o->dst, base, b[0], 4096, 1 << 20, &ops, o));
	o->src_far = a[1];
	o->dst_far = b[1];
	sbuf_set_dst(&o->src, &o->dst);
}

static void write_msgs(int fd, const char *types)
{
	uint8_t buf[256];
	size_t n = 0;

	for (const char *t = types; *t; t++) {
		uint32_t len = htonl(4 + 1);
		buf[n++] = (uint8_t)*t;
		memcpy(buf + n, &len, 4);
		n += 4;
		buf[n++] = (uint8_t)*t; /* one byte of body: the type again */
	}
	assert_int_equal(write(fd, buf, n), (ssize_t)n);
}

/* The message types that reached the far end of dst, in order. */
static void read_types(int fd, char *out, size_t size)
{
	uint8_t buf[1024];
	ssize_t n = recv(fd, buf, sizeof(buf), 0);
	size_t pos = 0, k = 0;

	out[0] = '\0';
	if (n <= 0)
		return;
	while (pos + 5 <= (size_t)n && k + 1 < size) {
		uint32_t len;
		memcpy(&len, buf + pos + 1, 4);
		out[k++] = (char)buf[pos];
		pos += 1 + ntohl(len);
	}
	out[k] = '\0';
}

/*
 * input is relayed through an owner that answers actions and, when pass is not NULL, lets the
 * types in pass through unseen until it is offered a packet of type pass_until. Returns the
 * types that reached dst; *seen gets the types the owner was offered.
 */
static void run_pass_case(const char *input, const char *actions, const char *pass, char pass_until,
                          const char *expect, const char *expect_seen)
{
	struct event_base *base = event_base_new();
	struct owner o;
	char got[64];

	memset(&o, 0, sizeof(o));
	o.actions = actions;
	if (pass != NULL) {
		for (const char *t = pass; *t; t++)
			o.pass_set[(uint8_t)*t >> 3] |= (uint8_t)(1u << ((uint8_t)*t & 7));
		o.pass = o.pass_set;
		o.pass_until = pass_until;
	}
	setup_pair(base, &o);
	write_msgs(o.src_far, input);
	sbuf_resume(&o.src);
	event_base_loop(base, EVLOOP_NONBLOCK);
	read_types(o.dst_far, got, sizeof(got));
	assert_string_equal(got, expect);
	if (expect_seen != NULL)
		assert_string_equal(o.seen, expect_seen);
	sbuf_close(&o.src);
	sbuf_close(&o.dst);
	close(o.src_far);
	close(o.dst_far);
	event_base_free(base);
}

static void run_case(const char *input, const char *actions, const char *expect)
{
	run_pass_case(input, actions, NULL, '\0', expect, NULL);
}

static void test_relay_table(void **state)
{
	static const struct {
		const char *input, *actions, *expect;
	} cases[] = {
	        {"abc", "SSS", "abc"},
	        {"abc", "SKS", "ac"},
	        {"abc", "SCS", "ac"},
	        /* injected bytes come after what was relayed before them, never ahead */
	        {"abc", "SIS", "aic"},
	        {"abcd", "SSIS", "abid"},
	        {"ab", "IS", "ib"},
	        /* injected with nothing relayed after them in the round: sent at its end */
	        {"ab", "SI", "ai"},
	        {"a", "I", "i"},
	        {"abc", "SIP", "ai"},
	        /* a pause stops the relay at that packet */
	        {"abc", "SP", "a"},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		run_case(cases[i].input, cases[i].actions, cases[i].expect);
}

/*
 * Types the owner lets pass are relayed in order without being offered; what the owner answers
 * to the others still holds, and the set is asked again after an answer other than SBUF_SEND
 * (here the handler that stops the passing skips or consumes its packet).
 */
static void test_pass_types(void **state)
{
	static const struct {
		const char *input, *actions, *pass;
		char until;
		const char *expect, *seen;
	} cases[] = {
	        {"TDDCZDT", "SK", "TD", 'Z', "TDDCDT", "CZDT"},
	        {"TDDCZDT", "", "TDC", '\0', "TDDCZDT", "Z"},
	        {"aDbDc", "SKS", "D", '\0', "aDDc", "abc"},
	        {"aDbD", "SC", "D", 'b', "aDD", "abD"},
	        {"DDaD", "P", "D", '\0', "DD", "a"},
	        {"DaID", "SI", "D", '\0', "DaiD", "aI"},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		run_pass_case(cases[i].input, cases[i].actions, cases[i].pass, cases[i].until,
		              cases[i].expect, cases[i].seen);
}

/* ---- handing a socket to another loop (sbuf_hand_off(), sbuf_init_handed()) ---- */

struct taker {
	struct sbuf sb;
	bool hand;             /* hands the startup packet off (else uses it) */
	struct sbuf_handoff h; /* what was handed off */
	int offers;
	uint32_t len[8];
	uint8_t type[8], first[8]; /* the packet's type and last body byte */
};

static enum sbuf_action take_packet(void *arg, struct sbuf *sb, const struct sbuf_pkt *pkt)
{
	struct taker *t = arg;

	if (!pkt->complete)
		return SBUF_WAIT;
	assert_true(t->offers < 8);
	t->len[t->offers] = pkt->len;
	t->type[t->offers] = pkt->type;
	t->first[t->offers] = pkt->body_len > 0 ? pkt->body[pkt->body_len - 1] : 0;
	t->offers++;
	if (sb->startup_phase) {
		sb->startup_phase = false;
		if (t->hand) {
			assert_true(sbuf_hand_off(sb, pkt, &t->h));
			assert_int_equal(sb->fd, -1);
			return SBUF_CLOSED;
		}
	}
	return SBUF_CONSUMED;
}

static const struct sbuf_ops take_ops = {.packet = take_packet, .failed = on_failed};

static void spin(struct event_base *base)
{
	for (int i = 0; i < 20; i++)
		event_base_loop(base, EVLOOP_NONBLOCK);
}

/*
 * A startup packet of startup_len bytes (its last byte 'z') and a Query after it in one write:
 * the first loop hands the socket off at the startup packet; the second, with its own buffer of
 * bufsize, is offered that packet again, then the Query, then what the peer sends afterwards on
 * the same socket.
 */
static void run_hand_off(size_t bufsize, uint32_t startup_len)
{
	struct event_base *one = event_base_new(), *two = event_base_new();
	struct taker *from = calloc(1, sizeof(*from)), *to = calloc(1, sizeof(*to));
	uint8_t msg[4096];
	uint32_t be;
	int sv[2];

	assert_true(startup_len >= 9 && startup_len + 6 <= sizeof(msg));
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
	memset(msg, 'a', sizeof(msg));
	be = htonl(startup_len);
	memcpy(msg, &be, 4);
	be = htonl(3u << 16);
	memcpy(msg + 4, &be, 4);
	msg[startup_len - 1] = 'z';
	msg[startup_len] = 'Q';
	be = htonl(5);
	memcpy(msg + startup_len + 1, &be, 4);
	msg[startup_len + 5] = 'q';
	assert_int_equal(write(sv[1], msg, startup_len + 6), (ssize_t)(startup_len + 6));

	from->hand = true;
	assert_true(sbuf_init(&from->sb, one, sv[0], bufsize, 1 << 16, &take_ops, from));
	from->sb.startup_phase = true;
	sbuf_resume(&from->sb);
	spin(one);
	assert_int_equal(from->offers, 1);
	assert_int_equal(from->h.fd, sv[0]);
	assert_int_equal(from->h.first_len, startup_len);
	sbuf_close(&from->sb); /* the socket is not the old loop's any more: left open */
	event_base_free(one);

	assert_true(sbuf_init_handed(&to->sb, two, &from->h, bufsize, 1 << 16, &take_ops, to));
	assert_int_equal(from->h.fd, -1);
	to->sb.startup_phase = true;
	sbuf_resume(&to->sb);
	spin(two);
	/* and the socket is the new loop's: the peer's next message arrives there */
	assert_int_equal(write(sv[1], "Q\0\0\0\5r", 6), 6);
	spin(two);
	assert_int_equal(to->offers, 3);
	assert_int_equal(to->len[0], startup_len);
	assert_int_equal(to->type[0], 0);
	assert_int_equal(to->first[0], 'z');
	assert_int_equal(to->type[1], 'Q');
	assert_int_equal(to->first[1], 'q');
	assert_int_equal(to->type[2], 'Q');
	assert_int_equal(to->first[2], 'r');
	sbuf_close(&to->sb);
	close(sv[1]);
	event_base_free(two);
	free(from);
	free(to);
}

static void test_hand_off_moves_the_socket_and_its_unread_bytes(void **state)
{
	(void)state;
	/* the startup packet in the buffer, then one longer than the buffer (gathered whole) */
	run_hand_off(4096, 40);
	run_hand_off(64, 300);
}

static void test_an_unwanted_hand_off_closes_the_socket(void **state)
{
	struct sbuf_handoff h = {.fd = -1};
	int sv[2];
	char got[8];

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
	h.fd = sv[0];
	h.data = malloc(16);
	h.len = h.first_len = 16;
	sbuf_handoff_abort(&h, "bye", 3);
	assert_int_equal(h.fd, -1);
	assert_null(h.data);
	/* the last words, then EOF */
	assert_int_equal(read(sv[1], got, sizeof(got)), 3);
	assert_memory_equal(got, "bye", 3);
	assert_int_equal(read(sv[1], got, sizeof(got)), 0);
	close(sv[1]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_relay_table),
	        cmocka_unit_test(test_pass_types),
	        cmocka_unit_test(test_hand_off_moves_the_socket_and_its_unread_bytes),
	        cmocka_unit_test(test_an_unwanted_hand_off_closes_the_socket),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
