/*
 * Unit tests for prepared: client packets are fed to ps_client_packet() with a server whose
 * socket is one end of a socketpair, and what the server would receive is read from the other
 * end; server answers are fed to ps_server_packet() and what the client would get is read the
 * same way.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <event2/event.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bouncer.h"
#include "conn.h"
#include "pktbuf.h"
#include "pool.h"
#include "prepared.h"
#include "sbuf.h"

/* main.c provides the clock to the binary; the library's users bring their own */
uint64_t bouncer_now_usec(void)
{
	return 1000000;
}

struct peer {
	struct conn *c;
	int far; /* the other end of the socketpair: what the conn's socket sends arrives here */
};

struct fixture {
	struct event_base *base;
	struct bouncer b;
	struct pool pool;
	struct peer client, client2, server, server2;
};

static enum sbuf_action no_packet(void *owner, struct sbuf *sb, const struct sbuf_pkt *pkt)
{
	(void)owner;
	(void)sb;
	(void)pkt;
	return SBUF_SKIP;
}

static void no_fail(void *owner, struct sbuf *sb, const char *reason)
{
	(void)owner;
	(void)sb;
	(void)reason;
}

static const struct sbuf_ops ops = {.packet = no_packet, .failed = no_fail};

static void make_peer(struct fixture *f, struct peer *p, bool is_server)
{
	int sv[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
	p->c = calloc(1, sizeof(*p->c));
	assert_non_null(p->c);
	p->c->b = &f->b;
	p->c->pool = &f->pool;
	p->c->is_server = is_server;
	list_init(&p->c->head);
	assert_true(sbuf_init(&p->c->sbuf, f->base, sv[0], 4096, 1 << 20, &ops, p->c));
	p->far = sv[1];
}

static void free_peer(struct peer *p)
{
	ps_conn_release(p->c);
	sbuf_close(&p->c->sbuf);
	close(p->far);
	free(p->c);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	f->base = event_base_new();
	f->b.base = f->base;
	snprintf(f->pool.db_name, sizeof(f->pool.db_name), "db");
	snprintf(f->pool.user_name, sizeof(f->pool.user_name), "user");
	f->pool.ps = ps_registry_new();
	assert_non_null(f->pool.ps);
	make_peer(f, &f->client, false);
	make_peer(f, &f->client2, false);
	make_peer(f, &f->server, true);
	make_peer(f, &f->server2, true);
	f->server.c->link = f->client.c;
	f->server2.c->link = f->client.c;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	free_peer(&f->client);
	free_peer(&f->client2);
	free_peer(&f->server);
	free_peer(&f->server2);
	ps_registry_free(f->pool.ps);
	event_base_free(f->base);
	free(f);
	return 0;
}

/* A message as a test builds and reads it. */
struct msg {
	char type;
	uint8_t body[512];
	size_t len;
};

static struct sbuf_pkt as_pkt(const struct msg *m)
{
	struct sbuf_pkt pkt = {0};

	pkt.type = (uint8_t)m->type;
	pkt.len = (uint32_t)m->len + 4;
	pkt.complete = true;
	pkt.body = m->body;
	pkt.body_len = pkt.body_avail = m->len;
	return pkt;
}

static struct msg msg_of(char type, const void *body, size_t len)
{
	struct msg m = {.type = type, .len = len};

	assert_true(len <= sizeof(m.body));
	memcpy(m.body, body, len);
	return m;
}

static struct msg parse_msg(const char *name, const char *sql)
{
	uint8_t b[512];
	size_t n = 0;

	memcpy(b + n, name, strlen(name) + 1);
	n += strlen(name) + 1;
	memcpy(b + n, sql, strlen(sql) + 1);
	n += strlen(sql) + 1;
	b[n++] = 0;
	b[n++] = 0; /* no parameter types */
	return msg_of('P', b, n);
}

static struct msg bind_msg(const char *portal, const char *stmt)
{
	uint8_t b[512];
	size_t n = 0;

	memcpy(b + n, portal, strlen(portal) + 1);
	n += strlen(portal) + 1;
	memcpy(b + n, stmt, strlen(stmt) + 1);
	n += strlen(stmt) + 1;
	memset(b + n, 0, 6); /* no formats, no parameters, no result formats */
	n += 6;
	return msg_of('B', b, n);
}

static struct msg named_msg(char type, char kind, const char *name)
{
	uint8_t b[256];

	b[0] = (uint8_t)kind;
	memcpy(b + 1, name, strlen(name) + 1);
	return msg_of(type, b, strlen(name) + 2);
}

static struct msg query_msg(const char *sql)
{
	return msg_of('Q', sql, strlen(sql) + 1);
}

/* Reads every message that arrived at the far end of p into out; returns how many. */
static int read_msgs(struct peer *p, struct msg *out, int max)
{
	uint8_t buf[8192];
	ssize_t n = recv(p->far, buf, sizeof(buf), 0);
	size_t pos = 0;
	int count = 0;

	if (n <= 0)
		return 0;
	while (pos + 5 <= (size_t)n && count < max) {
		uint32_t len;
		memcpy(&len, buf + pos + 1, 4);
		len = ntohl(len);
		assert_true(len >= 4 && pos + 1 + len <= (size_t)n);
		out[count] = msg_of((char)buf[pos], buf + pos + 5, len - 4);
		count++;
		pos += 1 + len;
	}
	assert_int_equal(pos, (size_t)n);
	return count;
}

/* The statement name a Parse, Bind, Describe or Close carries. */
static const char *name_in(const struct msg *m)
{
	switch (m->type) {
	case 'P':
		return (const char *)m->body;
	case 'B':
		return (const char *)m->body + strlen((const char *)m->body) + 1;
	default:
		return (const char *)m->body + 1;
	}
}

static enum ps_result client_sends(struct fixture *f, struct peer *cl, struct peer *sv,
                                   struct msg m)
{
	struct sbuf_pkt pkt = as_pkt(&m);
	const char *err = NULL;

	(void)f;
	sv->c->link = cl->c;
	return ps_client_packet(cl->c, sv->c, &pkt, 200, &err);
}

static enum ps_result server_answers(struct peer *sv, char type)
{
	struct msg m = msg_of(type, "", 0);
	struct sbuf_pkt pkt = as_pkt(&m);

	if (type == 'E') {
		static const uint8_t err[] = "SERROR\0C42601\0Msyntax error\0";
		m = msg_of('E', err, sizeof(err));
		pkt = as_pkt(&m);
	}
	return ps_server_packet(sv->c, &pkt);
}

static void sync_round(struct peer *cl, struct peer *sv)
{
	struct msg m = msg_of('S', "", 0);
	struct sbuf_pkt pkt = as_pkt(&m);
	const char *err;

	assert_int_equal(ps_client_packet(cl->c, sv->c, &pkt, 200, &err), PS_PASS);
	server_owe_ready(sv->c);
}

static void ready(struct peer *sv)
{
	server_ready_arrived(sv->c);
	assert_int_equal(server_answers(sv, 'Z'), PS_PASS);
}

static void test_parse_goes_out_under_our_name(void **state)
{
	struct fixture *f = *state;
	struct msg got[8];

	assert_int_equal(client_sends(f, &f->client, &f->server, parse_msg("s1", "select 1")),
	                 PS_CONSUMED);
	assert_int_equal(read_msgs(&f->server, got, 8), 1);
	assert_int_equal(got[0].type, 'P');
	assert_string_equal(name_in(&got[0]), "SB_1");
	assert_string_equal((const char *)got[0].body + 5, "select 1");
	sync_round(&f->client, &f->server);
	/* the client's own ParseComplete */
	assert_int_equal(server_answers(&f->server, '1'), PS_PASS);
	ready(&f->server);

	/* Bind on the same server: only renamed */
	assert_int_equal(client_sends(f, &f->client, &f->server, bind_msg("", "s1")), PS_CONSUMED);
	assert_int_equal(read_msgs(&f->server, got, 8), 1);
	assert_int_equal(got[0].type, 'B');
	assert_string_equal(name_in(&got[0]), "SB_1");

	/* Bind on another server: prepared there first, and that answer is swallowed */
	assert_int_equal(client_sends(f, &f->client, &f->server2, bind_msg("", "s1")), PS_CONSUMED);
	assert_int_equal(read_msgs(&f->server2, got, 8), 2);
	assert_int_equal(got[0].type, 'P');
	assert_string_equal(name_in(&got[0]), "SB_1");
	assert_int_equal(got[1].type, 'B');
	assert_string_equal(name_in(&got[1]), "SB_1");
	assert_int_equal(server_answers(&f->server2, '1'), PS_CONSUMED);
	assert_int_equal(server_answers(&f->server2, '2'), PS_PASS);
}

static void test_parse_of_a_held_statement_is_answered_in_order(void **state)
{
	struct fixture *f = *state;
	struct msg got[8];

	assert_int_equal(client_sends(f, &f->client, &f->server, parse_msg("a", "select 7")),
	                 PS_CONSUMED);
	read_msgs(&f->server, got, 8);
	assert_int_equal(server_answers(&f->server, '1'), PS_PASS);
	/* another client, another name, the same text: the server has it already */
	assert_int_equal(client_sends(f, &f->client2, &f->server, parse_msg("b", "select 7")),
	                 PS_CONSUMED);
	assert_int_equal(read_msgs(&f->server, got, 8), 1);
	assert_int_equal(got[0].type, 'C');
	assert_string_equal(name_in(&got[0]), "SB_none");
	/* its CloseComplete becomes the client's ParseComplete */
	assert_int_equal(server_answers(&f->server, '3'), PS_CONSUMED);
	assert_int_equal(read_msgs(&f->client2, got, 8), 1);
	assert_int_equal(got[0].type, '1');
	assert_int_equal(got[0].len, 0);
}

static void test_close_keeps_the_statement_for_others(void **state)
{
	struct fixture *f = *state;
	struct msg got[8];

	client_sends(f, &f->client, &f->server, parse_msg("a", "select 8"));
	client_sends(f, &f->client2, &f->server, parse_msg("b", "select 8"));
	read_msgs(&f->server, got, 8);
	assert_int_equal(server_answers(&f->server, '1'), PS_PASS);
	assert_int_equal(server_answers(&f->server, '3'), PS_CONSUMED);
	read_msgs(&f->client2, got, 8);

	assert_int_equal(client_sends(f, &f->client, &f->server, named_msg('C', 'S', "a")),
	                 PS_CONSUMED);
	assert_int_equal(read_msgs(&f->server, got, 8), 1);
	assert_string_equal(name_in(&got[0]), "SB_none");
	assert_int_equal(server_answers(&f->server, '3'), PS_PASS);
	/* a's name is gone: the server answers for it (does not exist) */
	assert_int_equal(client_sends(f, &f->client, &f->server, bind_msg("", "a")), PS_PASS);
	/* b still maps to the statement the server holds */
	assert_int_equal(client_sends(f, &f->client2, &f->server, bind_msg("", "b")), PS_CONSUMED);
	assert_int_equal(read_msgs(&f->server, got, 8), 1);
	assert_string_equal(name_in(&got[0]), "SB_1");
}

static void test_failed_parse_forgets_the_name(void **state)
{
	struct fixture *f = *state;
	struct msg got[8];

	client_sends(f, &f->client, &f->server, parse_msg("bad", "selec 1"));
	read_msgs(&f->server, got, 8);
	sync_round(&f->client, &f->server);
	assert_int_equal(server_answers(&f->server, 'E'), PS_PASS);
	ready(&f->server);
	assert_int_equal(client_sends(f, &f->client, &f->server, bind_msg("", "bad")), PS_PASS);
	/* nothing is owed any more: a later ParseComplete is the client's */
	assert_int_equal(client_sends(f, &f->client, &f->server, parse_msg("", "select 1")),
	                 PS_PASS);
	assert_int_equal(server_answers(&f->server, '1'), PS_PASS);
}

static void test_error_skips_the_rest_of_the_stretch(void **state)
{
	struct fixture *f = *state;
	struct msg got[8];

	/* Bind fails; the Parse we slipped in after it is skipped by the server */
	client_sends(f, &f->client, &f->server, parse_msg("x", "select 9"));
	read_msgs(&f->server, got, 8);
	assert_int_equal(server_answers(&f->server, '1'), PS_PASS);
	assert_int_equal(client_sends(f, &f->client, &f->server2, parse_msg("", "select 0")),
	                 PS_PASS);
	assert_int_equal(client_sends(f, &f->client, &f->server2, bind_msg("", "x")), PS_CONSUMED);
	read_msgs(&f->server2, got, 8);
	sync_round(&f->client, &f->server2);
	assert_int_equal(server_answers(&f->server2, 'E'), PS_PASS); /* the unnamed Parse */
	ready(&f->server2);
	/* server2 does not hold the statement: the next Bind prepares it again */
	assert_int_equal(client_sends(f, &f->client, &f->server2, bind_msg("", "x")), PS_CONSUMED);
	assert_int_equal(read_msgs(&f->server2, got, 8), 2);
	assert_int_equal(got[0].type, 'P');
	assert_int_equal(server_answers(&f->server2, '1'), PS_CONSUMED);
}

static void test_lru_evicts_the_least_recently_used(void **state)
{
	struct fixture *f = *state;
	struct msg got[8];
	const char *err;
	struct msg m;
	struct sbuf_pkt pkt;
	char name[8], sql[32];

	for (int i = 0; i < 3; i++) {
		snprintf(name, sizeof(name), "q%d", i);
		snprintf(sql, sizeof(sql), "select %d", i);
		m = parse_msg(name, sql);
		pkt = as_pkt(&m);
		assert_int_equal(ps_client_packet(f->client.c, f->server.c, &pkt, 2, &err),
		                 PS_CONSUMED);
		read_msgs(&f->server, got, 8);
		assert_int_equal(server_answers(&f->server, got[0].type == 'C' ? '3' : '1'),
		                 got[0].type == 'C' ? PS_CONSUMED : PS_PASS);
		if (i == 2) {
			/* q0 (SB_1) was used least recently: closed to make room */
			assert_int_equal(got[0].type, 'C');
			assert_string_equal(name_in(&got[0]), "SB_1");
			assert_int_equal(got[1].type, 'P');
			assert_string_equal(name_in(&got[1]), "SB_3");
			assert_int_equal(server_answers(&f->server, '1'), PS_PASS);
		}
	}
	/* q0 still works: prepared again */
	m = bind_msg("", "q0");
	pkt = as_pkt(&m);
	assert_int_equal(ps_client_packet(f->client.c, f->server.c, &pkt, 2, &err), PS_CONSUMED);
	assert_int_equal(read_msgs(&f->server, got, 8), 3);
	assert_int_equal(got[0].type, 'C');
	assert_int_equal(got[1].type, 'P');
	assert_string_equal(name_in(&got[1]), "SB_1");
	assert_int_equal(got[2].type, 'B');
}

static void test_discard_all_and_deallocate_all(void **state)
{
	struct fixture *f = *state;
	struct msg got[8];
	static const struct {
		const char *sql;
		bool forgets;
	} cases[] = {
	        {"DISCARD ALL", true},
	        {"  deallocate   all ;", true},
	        {"DEALLOCATE PREPARE ALL", true},
	        {"discard all\n", true},
	        {"deallocate all_of_them", false},
	        {"DISCARD PLANS", false},
	        {"select 'discard all'", false},
	        {"DEALLOCATE q", false},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		client_sends(f, &f->client, &f->server, parse_msg("d", "select 'd'"));
		read_msgs(&f->server, got, 8);
		server_answers(&f->server, got[0].type == 'C' ? '3' : '1');
		read_msgs(&f->client, got, 8);
		assert_int_equal(client_sends(f, &f->client, &f->server, query_msg(cases[i].sql)),
		                 PS_PASS);
		assert_int_equal(client_sends(f, &f->client, &f->server, bind_msg("", "d")),
		                 cases[i].forgets ? PS_PASS : PS_CONSUMED);
		read_msgs(&f->server, got, 8);
	}
}

/*
 * Alone and outside a transaction, DEALLOCATE ALL / DISCARD ALL forget the client's statements
 * only: the server gets an empty query (RESET ALL for DISCARD ALL), keeps the statements it
 * holds, and its answer becomes the command's CommandComplete. Anywhere else (in a transaction,
 * with more statements) the server runs it and forgets everything.
 */
static void test_lone_forget_all_is_answered_for_the_server(void **state)
{
	struct fixture *f = *state;
	struct msg got[8];
	static const struct {
		const char *sql, *tag;
		char txn;
	} cases[] = {
	        {"DISCARD ALL", "DISCARD ALL", 'I'},
	        {"  deallocate   all ;", "DEALLOCATE ALL", 'I'},
	        {"DEALLOCATE PREPARE ALL;;", "DEALLOCATE ALL", 'I'},
	        {"discard all\n", "DISCARD ALL", 'I'},
	        {"DISCARD ALL", NULL, 'T'},
	        {"DEALLOCATE ALL", NULL, 'E'},
	        {"DEALLOCATE ALL; select 1", NULL, 'I'},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int n;

		f->server.c->txn_status = 'I';
		client_sends(f, &f->client, &f->server, parse_msg("d", "select 'd'"));
		read_msgs(&f->server, got, 8);
		server_answers(&f->server, got[0].type == 'C' ? '3' : '1');
		read_msgs(&f->client, got, 8);
		sync_round(&f->client, &f->server);
		ready(&f->server);
		read_msgs(&f->server, got, 8);
		read_msgs(&f->client, got, 8);
		f->server.c->txn_status = cases[i].txn;
		if (cases[i].tag == NULL) {
			assert_int_equal(
			        client_sends(f, &f->client, &f->server, query_msg(cases[i].sql)),
			        PS_PASS);
			/* start over: nothing prepared anywhere */
			client_sends(f, &f->client, &f->server, bind_msg("", "d"));
			read_msgs(&f->server, got, 8);
			continue;
		}
		assert_int_equal(client_sends(f, &f->client, &f->server, query_msg(cases[i].sql)),
		                 PS_CONSUMED);
		n = read_msgs(&f->server, got, 8);
		assert_int_equal(n, 1);
		assert_int_equal(got[0].type, 'Q');
		if (cases[i].tag[1] == 'I') { /* DISCARD ALL: the client's settings are reset */
			assert_string_equal((const char *)got[0].body, "RESET ALL");
			assert_int_equal(server_answers(&f->server, 'C'), PS_CONSUMED);
		} else {
			assert_int_equal(got[0].len, 1); /* the empty query */
			assert_int_equal(server_answers(&f->server, 'I'), PS_CONSUMED);
		}
		n = read_msgs(&f->client, got, 8);
		assert_int_equal(n, 1);
		assert_int_equal(got[0].type, 'C');
		assert_string_equal((const char *)got[0].body, cases[i].tag);
		/* the client's name is gone: its Bind goes to the server as it is */
		assert_int_equal(client_sends(f, &f->client, &f->server, bind_msg("", "d")),
		                 PS_PASS);
		read_msgs(&f->server, got, 8);
		/* the server still holds the statement: preparing the text again sends nothing
		 * but a Close of nothing standing in for the ParseComplete */
		assert_int_equal(
		        client_sends(f, &f->client, &f->server, parse_msg("d2", "select 'd'")),
		        PS_CONSUMED);
		n = read_msgs(&f->server, got, 8);
		assert_int_equal(n, 1);
		assert_int_equal(got[0].type, 'C');
		server_answers(&f->server, '3');
		read_msgs(&f->client, got, 8);
		/* start over */
		f->server.c->txn_status = 'I';
		client_sends(f, &f->client, &f->server, query_msg("DISCARD ALL; select 1"));
		read_msgs(&f->server, got, 8);
	}
}

static void test_deallocate_of_one_name(void **state)
{
	struct fixture *f = *state;
	struct msg got[8];
	static const struct {
		const char *sql;
		bool ours;
	} cases[] = {
	        {"DEALLOCATE s1", true},
	        {"deallocate prepare S1;", true},
	        {"  DEALLOCATE \"MixedCase\"  ", true},
	        {"DEALLOCATE MixedCase", false}, /* folds to mixedcase: not a name of ours */
	        {"DEALLOCATE s1 extra", false},
	        {"DEALLOCATEs1", false},
	        {"DEALLOCATE \"s1", false},
	        {"select 'DEALLOCATE s1'", false},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		client_sends(f, &f->client, &f->server, parse_msg("s1", "select 's1'"));
		client_sends(f, &f->client, &f->server, parse_msg("MixedCase", "select 'm'"));
		read_msgs(&f->server, got, 8);
		assert_int_equal(server_answers(&f->server, '1'), PS_PASS);
		assert_int_equal(server_answers(&f->server, '1'), PS_PASS);
		read_msgs(&f->client, got, 8);
		assert_int_equal(client_sends(f, &f->client, &f->server, query_msg(cases[i].sql)),
		                 cases[i].ours ? PS_CONSUMED : PS_PASS);
		if (cases[i].ours) {
			int n = read_msgs(&f->server, got, 8);
			assert_int_equal(got[n - 1].type, 'Q');
			assert_memory_equal(got[n - 1].body, "DEALLOCATE \"SB_", 15);
		}
		/* start over: nothing prepared anywhere, nothing owed */
		client_sends(f, &f->client, &f->server, query_msg("DISCARD ALL"));
		read_msgs(&f->server, got, 8);
		read_msgs(&f->client, got, 8);
	}
}

static void test_skipped_eviction_is_undone(void **state)
{
	struct fixture *f = *state;
	struct msg got[8], m;
	struct sbuf_pkt pkt;
	const char *err;

	/* the server holds A (limit 1) */
	m = parse_msg("a", "select 'a'");
	pkt = as_pkt(&m);
	assert_int_equal(ps_client_packet(f->client.c, f->server.c, &pkt, 1, &err), PS_CONSUMED);
	read_msgs(&f->server, got, 8);
	assert_int_equal(server_answers(&f->server, '1'), PS_PASS);
	m = parse_msg("b", "select 'b'");
	pkt = as_pkt(&m);
	assert_int_equal(ps_client_packet(f->client.c, f->server.c, &pkt, 1, &err), PS_CONSUMED);
	assert_int_equal(read_msgs(&f->server, got, 8), 2); /* Close SB_1, Parse SB_2 */
	assert_int_equal(server_answers(&f->server, '3'), PS_CONSUMED);
	assert_int_equal(server_answers(&f->server, '1'), PS_PASS);

	/* an unnamed Parse fails; our Close of SB_2 and Parse of SB_1 after it are skipped */
	assert_int_equal(client_sends(f, &f->client, &f->server, parse_msg("", "selec")), PS_PASS);
	m = bind_msg("", "a");
	pkt = as_pkt(&m);
	assert_int_equal(ps_client_packet(f->client.c, f->server.c, &pkt, 1, &err), PS_CONSUMED);
	assert_int_equal(read_msgs(&f->server, got, 8), 3); /* Close SB_2, Parse SB_1, Bind */
	sync_round(&f->client, &f->server);
	assert_int_equal(server_answers(&f->server, 'E'), PS_PASS);
	ready(&f->server);

	/* so the server still holds SB_2 and not SB_1: b binds as it is, a is prepared again */
	m = bind_msg("", "b");
	pkt = as_pkt(&m);
	assert_int_equal(ps_client_packet(f->client.c, f->server.c, &pkt, 1, &err), PS_CONSUMED);
	assert_int_equal(read_msgs(&f->server, got, 8), 1);
	assert_int_equal(got[0].type, 'B');
	assert_string_equal(name_in(&got[0]), "SB_2");
}

/*
 * Own statements (a module answers them; the server never sees them) live in the same table:
 * one lookup says what a name is, and the pooler leaves messages that name one alone.
 */
static void test_own_statements_share_the_names(void **state)
{
	struct fixture *f = *state;
	struct conn *c = f->client.c;
	const uint32_t types[2] = {25, 23};
	const struct ps_own *own;
	const char *msg = NULL;
	struct msg got[8];

	assert_null(ps_own_find(c, "w"));
	assert_int_equal(ps_own_count(c), 0);
	assert_true(ps_own_set(c, "w", "insert into t values ($1, $2)", 2, types, &msg));
	assert_true(ps_own_set(c, "", "delete from t", 0, NULL, &msg));
	assert_int_equal(ps_own_count(c), 2);
	own = ps_own_find(c, "w");
	assert_non_null(own);
	assert_string_equal(own->sql, "insert into t values ($1, $2)");
	assert_int_equal(own->ntypes, 2);
	assert_int_equal(own->types[0], 25);
	assert_int_equal(own->types[1], 23);
	own = ps_own_find(c, "");
	assert_non_null(own);
	assert_int_equal(own->ntypes, 0);
	assert_null(own->types);

	/* re-prepared as an own statement: replaced, still one name */
	assert_true(ps_own_set(c, "w", "update t set a = $1", 1, types, &msg));
	assert_int_equal(ps_own_count(c), 2);
	assert_string_equal(ps_own_find(c, "w")->sql, "update t set a = $1");

	/* a Bind, Describe or Close of an own statement is not the pooler's to rename */
	assert_int_equal(client_sends(f, &f->client, &f->server, bind_msg("", "w")), PS_PASS);
	assert_int_equal(client_sends(f, &f->client, &f->server, named_msg('D', 'S', "w")),
	                 PS_PASS);
	assert_int_equal(client_sends(f, &f->client, &f->server, query_msg("DEALLOCATE w")),
	                 PS_PASS);
	assert_int_equal(read_msgs(&f->server, got, 8), 0);

	/* DEALLOCATE ALL forgets the pooler's names; the own ones stay for their module */
	client_sends(f, &f->client, &f->server, parse_msg("p", "select 1"));
	read_msgs(&f->server, got, 8);
	server_answers(&f->server, '1');
	assert_int_equal(client_sends(f, &f->client, &f->server, query_msg("DEALLOCATE ALL")),
	                 PS_PASS);
	assert_int_equal(client_sends(f, &f->client, &f->server, bind_msg("", "p")), PS_PASS);
	assert_int_equal(ps_own_count(c), 2);
	assert_non_null(ps_own_find(c, "w"));

	/* the pooler's name is never an own one */
	assert_null(ps_own_find(c, "p"));
	ps_own_drop(c, "p");
	ps_own_drop(c, "w");
	assert_null(ps_own_find(c, "w"));
	assert_int_equal(ps_own_count(c), 1);
	ps_own_drop(c, "w"); /* twice: nothing */
	assert_int_equal(ps_own_count(c), 1);
}

/* One name, one statement: a Parse through the pooler and an own statement replace each other. */
static void test_own_and_pooled_replace_each_other(void **state)
{
	struct fixture *f = *state;
	struct conn *c = f->client.c;
	const char *msg = NULL;
	struct msg got[8];

	assert_true(ps_own_set(c, "s", "insert into t default values", 0, NULL, &msg));
	/* the client prepares an ordinary statement under that name */
	assert_int_equal(client_sends(f, &f->client, &f->server, parse_msg("s", "select 2")),
	                 PS_CONSUMED);
	assert_int_equal(read_msgs(&f->server, got, 8), 1);
	assert_string_equal(name_in(&got[0]), "SB_1");
	assert_int_equal(server_answers(&f->server, '1'), PS_PASS);
	assert_null(ps_own_find(c, "s"));
	assert_int_equal(ps_own_count(c), 0);
	assert_int_equal(client_sends(f, &f->client, &f->server, bind_msg("", "s")), PS_CONSUMED);
	assert_int_equal(read_msgs(&f->server, got, 8), 1);
	assert_string_equal(name_in(&got[0]), "SB_1");

	/* and then a write under it again: the pooler lets go of its statement */
	assert_true(ps_own_set(c, "s", "insert into t default values", 0, NULL, &msg));
	assert_int_equal(ps_own_count(c), 1);
	assert_int_equal(client_sends(f, &f->client, &f->server, bind_msg("", "s")), PS_PASS);
	assert_int_equal(read_msgs(&f->server, got, 8), 0);
}

/* Own statements count toward the client's limit of names: memory stays bounded. */
static void test_own_statements_are_bounded(void **state)
{
	struct fixture *f = *state;
	struct conn *c = f->client.c;
	const char *msg = NULL;
	char name[32];
	int i;

	for (i = 0; i < 20000; i++) {
		snprintf(name, sizeof(name), "w%d", i);
		if (!ps_own_set(c, name, "delete from t", 0, NULL, &msg))
			break;
	}
	assert_true(i > 0 && i < 20000);
	assert_string_equal(msg, "too many prepared statements");
	assert_int_equal(ps_own_count(c), i);
	/* an existing name may still be re-prepared */
	assert_true(ps_own_set(c, "w0", "delete from u", 0, NULL, &msg));
	assert_string_equal(ps_own_find(c, "w0")->sql, "delete from u");
	assert_string_equal(ps_own_find(c, "w1")->sql, "delete from t");
}

/* The one count of ReadyForQuery owed: every Query/Sync adds one, every answer takes one. */
static void test_ready_owed_is_one_count(void **state)
{
	struct fixture *f = *state;
	struct conn *s = f->server.c;

	assert_int_equal(server_ready_owed(s), 0);
	server_owe_ready(s);
	server_owe_ready(s);
	assert_int_equal(server_ready_owed(s), 2);
	server_ready_arrived(s);
	server_ready_arrived(s);
	assert_int_equal(server_ready_owed(s), 0);
	/* a ReadyForQuery nobody asked for (the server's own, after a FATAL) owes nothing back */
	server_ready_arrived(s);
	assert_int_equal(server_ready_owed(s), 0);
	server_owe_ready(s);
	assert_int_equal(server_ready_owed(s), 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test_setup_teardown(test_parse_goes_out_under_our_name, setup,
	                                        teardown),
	        cmocka_unit_test_setup_teardown(test_parse_of_a_held_statement_is_answered_in_order,
	                                        setup, teardown),
	        cmocka_unit_test_setup_teardown(test_close_keeps_the_statement_for_others, setup,
	                                        teardown),
	        cmocka_unit_test_setup_teardown(test_failed_parse_forgets_the_name, setup,
	                                        teardown),
	        cmocka_unit_test_setup_teardown(test_error_skips_the_rest_of_the_stretch, setup,
	                                        teardown),
	        cmocka_unit_test_setup_teardown(test_lru_evicts_the_least_recently_used, setup,
	                                        teardown),
	        cmocka_unit_test_setup_teardown(test_lone_forget_all_is_answered_for_the_server,
	                                        setup, teardown),
	        cmocka_unit_test_setup_teardown(test_discard_all_and_deallocate_all, setup,
	                                        teardown),
	        cmocka_unit_test_setup_teardown(test_deallocate_of_one_name, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_skipped_eviction_is_undone, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_own_statements_share_the_names, setup,
	                                        teardown),
	        cmocka_unit_test_setup_teardown(test_own_and_pooled_replace_each_other, setup,
	                                        teardown),
	        cmocka_unit_test_setup_teardown(test_own_statements_are_bounded, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_ready_owed_is_one_count, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
