/*
 * Unit tests for proto: every parser on valid packets and on every truncation of them (each
 * prefix copied to its own heap block so that AddressSanitizer sees any read past the end),
 * hostile lengths, startup packet kinds, and error field parsing.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

#define BYTES(...) ((const uint8_t[]){__VA_ARGS__}), sizeof((const uint8_t[]){__VA_ARGS__})

/* Heap copy of exactly n bytes (a 1-byte block for n == 0, never read). */
static uint8_t *dup_bytes(const uint8_t *p, size_t n)
{
	uint8_t *d = malloc(n ? n : 1);

	assert_non_null(d);
	if (n)
		memcpy(d, p, n);
	return d;
}

static void test_reader_bounds(void **state)
{
	const uint8_t pkt[] = {1, 2, 3, 4, 5, 6, 7, 'a', 0};
	struct pkt_reader r;
	const uint8_t *b;
	const char *s;
	uint8_t u8;
	uint16_t u16;
	uint32_t u32;
	int32_t i32;
	int16_t i16;

	(void)state;
	pr_init(&r, pkt, sizeof(pkt));
	assert_true(pr_u8(&r, &u8));
	assert_int_equal(u8, 1);
	assert_true(pr_u16(&r, &u16));
	assert_int_equal(u16, 0x0203);
	assert_true(pr_u32(&r, &u32));
	assert_int_equal(u32, 0x04050607);
	assert_false(pr_done(&r));
	assert_true(pr_string(&r, &s));
	assert_string_equal(s, "a");
	assert_true(pr_done(&r));
	assert_false(pr_u8(&r, &u8));
	assert_true(r.bad);
	assert_false(pr_done(&r));

	/* Once bad, always bad, even for reads that would fit. */
	pr_init(&r, pkt, sizeof(pkt));
	assert_false(pr_bytes(&r, sizeof(pkt) + 1, &b));
	assert_false(pr_u8(&r, &u8));
	assert_int_equal(pr_remaining(&r), 0);

	pr_init(&r, pkt, sizeof(pkt));
	assert_false(pr_bytes(&r, SIZE_MAX, &b));
	pr_init(&r, pkt, 3);
	assert_false(pr_u32(&r, &u32));
	pr_init(&r, pkt, 1);
	assert_false(pr_u16(&r, &u16));
	pr_init(&r, pkt, 7); /* no NUL inside the first 7 bytes */
	assert_false(pr_string(&r, &s));
	pr_init(&r, NULL, 0);
	assert_false(pr_string(&r, &s));
	assert_true(pr_bytes(&r, 0, &b) == false); /* the failed string made it bad */
	pr_init(&r, NULL, 0);
	assert_true(pr_bytes(&r, 0, &b));
	assert_true(pr_done(&r));

	pr_init(&r, BYTES(0xff, 0xff, 0xff, 0xfe, 0x80, 0x00));
	assert_true(pr_i32(&r, &i32));
	assert_int_equal(i32, -2);
	assert_true(pr_i16(&r, &i16));
	assert_int_equal(i16, -32768);
	assert_true(pr_done(&r));
}

struct hdr_case {
	const char *name;
	const uint8_t *data;
	size_t avail;
	size_t max_len;
	enum pkt_status want;
	uint8_t type;
	uint32_t len;
};

static const struct hdr_case hdr_cases[] = {
        {"one byte", BYTES('Q'), 100, PKT_NEED_MORE, 0, 0},
        {"4 bytes", BYTES('Q', 0, 0, 0), 100, PKT_NEED_MORE, 0, 0},
        {"minimal", BYTES('X', 0, 0, 0, 4), 100, PKT_OK, 'X', 5},
        {"len 3", BYTES('X', 0, 0, 0, 3), 100, PKT_BAD, 0, 0},
        {"len 0", BYTES('X', 0, 0, 0, 0), 100, PKT_BAD, 0, 0},
        {"negative", BYTES('Q', 0x80, 0, 0, 0), SIZE_MAX, PKT_BAD, 0, 0},
        {"minus one", BYTES('Q', 0xff, 0xff, 0xff, 0xff), SIZE_MAX, PKT_BAD, 0, 0},
        {"at max", BYTES('Q', 0, 0, 0, 99), 100, PKT_OK, 'Q', 100},
        {"above max", BYTES('Q', 0, 0, 0, 100), 100, PKT_BAD, 0, 0},
        {"int32 max", BYTES('Q', 0x7f, 0xff, 0xff, 0xff), SIZE_MAX, PKT_OK, 'Q', 0x80000000u},
        {"body not needed", BYTES('D', 0, 0, 0x10, 0), 1 << 20, PKT_OK, 'D', 4097},
};

static void test_read_header(void **state)
{
	size_t i;

	(void)state;
	{
		struct pkt_hdr hdr;

		assert_int_equal(proto_read_header(NULL, 0, 100, &hdr), PKT_NEED_MORE);
	}
	for (i = 0; i < sizeof(hdr_cases) / sizeof(hdr_cases[0]); i++) {
		const struct hdr_case *c = &hdr_cases[i];
		struct pkt_hdr hdr = {0};
		uint8_t *d = dup_bytes(c->data, c->avail);

		print_message("case %s\n", c->name);
		assert_int_equal(proto_read_header(d, c->avail, c->max_len, &hdr), c->want);
		if (c->want == PKT_OK) {
			assert_int_equal(hdr.type, c->type);
			assert_int_equal(hdr.len, c->len);
		}
		free(d);
	}
}

static void test_read_startup_header(void **state)
{
	uint32_t len = 0;

	(void)state;
	assert_int_equal(proto_read_startup_header(BYTES(0, 0, 0), 10000, &len), PKT_NEED_MORE);
	assert_int_equal(proto_read_startup_header(BYTES(0, 0, 0, 8), 10000, &len), PKT_OK);
	assert_int_equal(len, 8);
	assert_int_equal(proto_read_startup_header(BYTES(0, 0, 0, 7), 10000, &len), PKT_BAD);
	assert_int_equal(proto_read_startup_header(BYTES(0, 0, 0, 0), 10000, &len), PKT_BAD);
	assert_int_equal(proto_read_startup_header(BYTES(0, 0, 0x27, 0x10), 10000, &len), PKT_OK);
	assert_int_equal(len, 10000);
	assert_int_equal(proto_read_startup_header(BYTES(0, 0, 0x27, 0x11), 10000, &len), PKT_BAD);
	/* The caller's max can only lower PostgreSQL's limit. */
	assert_int_equal(proto_read_startup_header(BYTES(0, 0, 0x27, 0x11), SIZE_MAX, &len),
	                 PKT_BAD);
	assert_int_equal(proto_read_startup_header(BYTES(0, 0, 1, 0), 255, &len), PKT_BAD);
	assert_int_equal(proto_read_startup_header(BYTES(0xff, 0xff, 0xff, 0xff), SIZE_MAX, &len),
	                 PKT_BAD);
}

/* Startup bodies (after the length). */
#define V30 0, 3, 0, 0

struct startup_case {
	const char *name;
	const uint8_t *body;
	size_t len;
	enum startup_kind want;
	int nparams;
};

static const struct startup_case startup_cases[] = {
        {"normal",
         BYTES(V30, 'u', 's', 'e', 'r', 0, 'a', 0, 'd', 'a', 't', 'a', 'b', 'a', 's', 'e', 0, 'd',
               0, 0),
         STARTUP_NORMAL, 2},
        {"no params", BYTES(V30, 0), STARTUP_NORMAL, 0},
        {"empty value", BYTES(V30, 'o', 0, 0, 0), STARTUP_NORMAL, 1},
        {"minor 2", BYTES(0, 3, 0, 2, 'u', 's', 'e', 'r', 0, 'a', 0, 0), STARTUP_NORMAL, 1},
        {"ssl", BYTES(0x04, 0xd2, 0x16, 0x2f), STARTUP_SSL, 0},
        {"gssenc", BYTES(0x04, 0xd2, 0x16, 0x30), STARTUP_GSSENC, 0},
        {"cancel", BYTES(0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 1, 0, 0, 0, 2), STARTUP_CANCEL, 0},
        {"protocol 2", BYTES(0, 2, 0, 0, 0), STARTUP_BAD_VERSION, 0},
        {"protocol 4", BYTES(0, 4, 0, 0, 0), STARTUP_BAD_VERSION, 0},
        {"unknown code", BYTES(0x04, 0xd2, 0x16, 0x31), STARTUP_BAD_VERSION, 0},
        {"no version", BYTES(0, 3, 0), STARTUP_MALFORMED, 0},
        {"missing final NUL", BYTES(V30, 'u', 's', 'e', 'r', 0, 'a', 0), STARTUP_MALFORMED, 0},
        {"empty value, no final NUL", BYTES(V30, 'u', 's', 'e', 'r', 0, 0), STARTUP_MALFORMED, 0},
        {"key without value at end", BYTES(V30, 'u', 's', 'e', 'r', 0), STARTUP_MALFORMED, 0},
        {"unterminated key", BYTES(V30, 'u', 's'), STARTUP_MALFORMED, 0},
        {"unterminated value", BYTES(V30, 'u', 0, 'v', 'v'), STARTUP_MALFORMED, 0},
        {"trailing bytes", BYTES(V30, 'u', 0, 'v', 0, 0, 'x'), STARTUP_MALFORMED, 0},
        {"duplicate user",
         BYTES(V30, 'u', 's', 'e', 'r', 0, 'a', 0, 'u', 's', 'e', 'r', 0, 'b', 0, 0),
         STARTUP_MALFORMED, 0},
        {"duplicate database",
         BYTES(V30, 'd', 'a', 't', 'a', 'b', 'a', 's', 'e', 0, 'a', 0, 'd', 'a', 't', 'a', 'b', 'a',
               's', 'e', 0, 'b', 0, 0),
         STARTUP_MALFORMED, 0},
        {"duplicate other key", BYTES(V30, 'x', 0, 'a', 0, 'x', 0, 'b', 0, 0), STARTUP_NORMAL, 2},
        {"ssl with extra", BYTES(0x04, 0xd2, 0x16, 0x2f, 0), STARTUP_MALFORMED, 0},
        {"gssenc with extra", BYTES(0x04, 0xd2, 0x16, 0x30, 0, 0), STARTUP_MALFORMED, 0},
        {"cancel short", BYTES(0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 1, 0, 0, 0), STARTUP_MALFORMED, 0},
        {"cancel long", BYTES(0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 1, 0, 0, 0, 2, 0), STARTUP_MALFORMED,
         0},
};

static void test_parse_startup(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(startup_cases) / sizeof(startup_cases[0]); i++) {
		const struct startup_case *c = &startup_cases[i];
		struct startup_info info;
		uint8_t *d = dup_bytes(c->body, c->len);

		print_message("case %s\n", c->name);
		assert_int_equal(proto_parse_startup(d, c->len, &info), c->want);
		assert_int_equal(info.kind, c->want);
		assert_int_equal(info.nparams, c->nparams);
		free(d);
	}
}

static void test_startup_values(void **state)
{
	const uint8_t *body;
	size_t len;
	struct startup_info info;

	(void)state;
	body = startup_cases[0].body;
	len = startup_cases[0].len;
	assert_int_equal(proto_parse_startup(body, len, &info), STARTUP_NORMAL);
	assert_int_equal(info.version, PROTO_VERSION(3, 0));
	assert_string_equal(proto_startup_get(&info, "user"), "a");
	assert_string_equal(proto_startup_get(&info, "database"), "d");
	assert_null(proto_startup_get(&info, "options"));

	assert_int_equal(proto_parse_startup(startup_cases[3].body, startup_cases[3].len, &info),
	                 STARTUP_NORMAL);
	assert_int_equal(PROTO_VERSION_MINOR(info.version), 2);

	assert_int_equal(proto_parse_startup(startup_cases[6].body, startup_cases[6].len, &info),
	                 STARTUP_CANCEL);
	assert_int_equal(info.cancel_pid, 1);
	assert_int_equal(info.cancel_key, 2);
}

/* Builds a 3.0 startup body with n distinct parameters k0=v0 ... */
static size_t build_params(uint8_t *buf, size_t size, int n)
{
	size_t off = 4;
	int i;

	memcpy(buf, (const uint8_t[]){V30}, 4);
	for (i = 0; i < n; i++) {
		int w = snprintf((char *)buf + off, size - off, "k%d", i);

		off += (size_t)w + 1;
		w = snprintf((char *)buf + off, size - off, "v%d", i);
		off += (size_t)w + 1;
	}
	buf[off++] = 0;
	assert_true(off <= size);
	return off;
}

static void test_startup_param_limit(void **state)
{
	uint8_t buf[2048];
	struct startup_info info;
	uint8_t *d;
	size_t len;

	(void)state;
	len = build_params(buf, sizeof(buf), 64);
	d = dup_bytes(buf, len);
	assert_int_equal(proto_parse_startup(d, len, &info), STARTUP_NORMAL);
	assert_int_equal(info.nparams, 64);
	assert_string_equal(proto_startup_get(&info, "k63"), "v63");
	free(d);

	len = build_params(buf, sizeof(buf), 65);
	d = dup_bytes(buf, len);
	assert_int_equal(proto_parse_startup(d, len, &info), STARTUP_MALFORMED);
	assert_int_equal(info.nparams, 0);
	free(d);
}

/* Every strict prefix of a valid normal startup body is rejected, and never read past. */
static void test_startup_truncations(void **state)
{
	const struct startup_case *c = &startup_cases[0];
	struct startup_info info;
	size_t n;

	(void)state;
	for (n = 0; n < c->len; n++) {
		uint8_t *d = dup_bytes(c->body, n);

		assert_int_equal(proto_parse_startup(d, n, &info), STARTUP_MALFORMED);
		free(d);
	}
}

static const uint8_t error_body[] = {
        'S', 'E', 'R', 'R', 'O', 'R', 0,   'V', 'E', 'R', 'R', 'O', 'R', 0,   'C', '4',
        '2', 'P', '0', '1', 0,   'M', 'n', 'o', 0,   'D', 'd', 0,   'H', 'h', 0,   'P',
        '7', 0,   'W', 'w', 0,   's', 's', 0,   't', 't', 0,   'c', 'c', 0,   'n', 'n',
        0,   'd', 'y', 0,   'F', 'f', 0,   'L', '1', 0,   'R', 'r', 0,   0,
};

static void test_parse_error(void **state)
{
	struct pg_error e;

	(void)state;
	assert_true(proto_parse_error(error_body, sizeof(error_body), &e));
	assert_string_equal(e.severity, "ERROR");
	assert_string_equal(e.sqlstate, "42P01");
	assert_string_equal(e.message, "no");
	assert_string_equal(e.detail, "d");
	assert_string_equal(e.hint, "h");
	assert_string_equal(e.position, "7");
	assert_string_equal(e.where, "w");
	assert_string_equal(e.schema, "s");
	assert_string_equal(e.table, "t");
	assert_string_equal(e.column, "c");
	assert_string_equal(e.constraint, "n");
	assert_string_equal(e.datatype, "y");

	/* V stands in for a missing S; unknown codes are skipped. */
	assert_true(proto_parse_error(BYTES('V', 'F', 0, 'q', 'z', 0, 'M', 'm', 0, 0), &e));
	assert_string_equal(e.severity, "F");
	assert_string_equal(e.message, "m");
	assert_null(e.sqlstate);

	assert_true(proto_parse_error(BYTES(0), &e));
	assert_null(e.message);
	assert_false(proto_parse_error(BYTES('M', 'm', 0, 0, 'x'), &e)); /* trailing */
	assert_false(proto_parse_error(BYTES('M', 'm', 0), &e));         /* no terminator */
	assert_false(proto_parse_error(BYTES('M', 'm'), &e));            /* unterminated */
	assert_false(proto_parse_error(NULL, 0, &e));
}

/* Typed packets for the truncation sweep: each parser must accept the whole body and reject
 * every strict prefix. */
static bool run_error(const uint8_t *b, size_t n)
{
	struct pg_error e;

	return proto_parse_error(b, n, &e);
}

static bool run_param_status(const uint8_t *b, size_t n)
{
	const char *name, *value;

	return proto_parse_param_status(b, n, &name, &value);
}

static bool run_auth(const uint8_t *b, size_t n)
{
	const uint8_t *rest;
	size_t rest_len;
	uint32_t code;

	return proto_parse_auth(b, n, &code, &rest, &rest_len);
}

static bool run_backend_key(const uint8_t *b, size_t n)
{
	uint32_t pid, key;

	return proto_parse_backend_key(b, n, &pid, &key);
}

static bool run_ready(const uint8_t *b, size_t n)
{
	char st;

	return proto_parse_ready(b, n, &st);
}

static bool run_command_complete(const uint8_t *b, size_t n)
{
	const char *tag;

	return proto_parse_command_complete(b, n, &tag);
}

static bool run_query(const uint8_t *b, size_t n)
{
	const char *sql;
	size_t sql_len;

	return proto_parse_query(b, n, &sql, &sql_len);
}

static bool run_parse(const uint8_t *b, size_t n)
{
	const char *stmt, *sql;
	size_t sql_len;
	uint16_t np;

	return proto_parse_parse(b, n, &stmt, &sql, &sql_len, &np);
}

static bool run_sasl_initial(const uint8_t *b, size_t n)
{
	const char *mech;
	const uint8_t *data;
	size_t dlen;

	return proto_parse_sasl_initial(b, n, &mech, &data, &dlen);
}

static bool run_password(const uint8_t *b, size_t n)
{
	const char *pw;

	return proto_parse_password(b, n, &pw);
}

static bool run_names_bind(const uint8_t *b, size_t n)
{
	const char *stmt, *portal;

	return proto_parse_msg_names('B', b, n, &stmt, &portal);
}

static bool run_names_close(const uint8_t *b, size_t n)
{
	const char *stmt, *portal;

	return proto_parse_msg_names('C', b, n, &stmt, &portal);
}

struct trunc_case {
	const char *name;
	bool (*run)(const uint8_t *b, size_t n);
	const uint8_t *body;
	size_t len;
};

static const struct trunc_case trunc_cases[] = {
        {"error", run_error, error_body, sizeof(error_body)},
        {"parameter status", run_param_status, BYTES('a', 'b', 0, 'c', 0)},
        {"auth ok", run_auth, BYTES(0, 0, 0, 0)},
        {"auth md5", run_auth, BYTES(0, 0, 0, 5, 1, 2, 3, 4)},
        {"auth sasl", run_auth,
         BYTES(0, 0, 0, 10, 'S', 'C', 'R', 'A', 'M', '-', 'S', 'H', 'A', '-', '2', '5', '6', 0, 0)},
        {"backend key", run_backend_key, BYTES(0, 0, 0, 1, 0, 0, 0, 2)},
        {"ready", run_ready, BYTES('I')},
        {"command complete", run_command_complete, BYTES('I', 'N', 'S', 'E', 'R', 'T', 0)},
        {"query", run_query, BYTES('s', 'e', 'l', 'e', 'c', 't', 0)},
        {"parse", run_parse, BYTES('s', '1', 0, 'x', 0, 0, 2, 0, 0, 0, 23, 0, 0, 0, 25)},
        {"sasl initial", run_sasl_initial, BYTES('M', 0, 0, 0, 0, 3, 'a', 'b', 'c')},
        {"password", run_password, BYTES('p', 'w', 0)},
        {"bind names", run_names_bind, BYTES('p', 0, 's', 0)},
        {"close names", run_names_close, BYTES('S', 's', '1', 0)},
};

static void test_truncations(void **state)
{
	size_t i, n;

	(void)state;
	for (i = 0; i < sizeof(trunc_cases) / sizeof(trunc_cases[0]); i++) {
		const struct trunc_case *c = &trunc_cases[i];

		print_message("case %s\n", c->name);
		for (n = 0; n <= c->len; n++) {
			uint8_t *d = dup_bytes(c->body, n);

			assert_int_equal(c->run(d, n), n == c->len);
			free(d);
		}
	}
}

static void test_parse_auth(void **state)
{
	const uint8_t *rest;
	size_t rest_len;
	uint32_t code;

	(void)state;
	assert_true(proto_parse_auth(BYTES(0, 0, 0, 5, 9, 8, 7, 6), &code, &rest, &rest_len));
	assert_int_equal(code, PROTO_AUTH_MD5);
	assert_int_equal(rest_len, 4);
	assert_memory_equal(rest, "\x09\x08\x07\x06", 4);
	assert_false(proto_parse_auth(BYTES(0, 0, 0, 5, 9, 8, 7, 6, 5), &code, &rest, &rest_len));
	assert_false(proto_parse_auth(BYTES(0, 0, 0, 0, 1), &code, &rest, &rest_len));
	assert_false(proto_parse_auth(BYTES(0, 0, 0, 10, 'a', 0), &code, &rest, &rest_len));
	assert_false(proto_parse_auth(BYTES(0, 0, 0, 10, 'a', 0, 0, 1), &code, &rest, &rest_len));
	/* SASL continue: opaque data, returned as is. */
	assert_true(proto_parse_auth(BYTES(0, 0, 0, 11, 'r', '='), &code, &rest, &rest_len));
	assert_int_equal(code, PROTO_AUTH_SASL_CONTINUE);
	assert_int_equal(rest_len, 2);
	assert_memory_equal(rest, "r=", 2);

	assert_true(
	        proto_parse_auth(trunc_cases[4].body, trunc_cases[4].len, &code, &rest, &rest_len));
	assert_true(proto_sasl_has_mech(rest, rest_len, "SCRAM-SHA-256"));
	assert_false(proto_sasl_has_mech(rest, rest_len, "SCRAM-SHA-256-PLUS"));
	assert_false(proto_sasl_has_mech(rest, rest_len, "SCRAM"));
	assert_true(proto_sasl_has_mech(BYTES('A', 0, 'B', 0, 0), "B"));
	assert_false(proto_sasl_has_mech(BYTES('A', 0, 0, 'B', 0), "B"));
	assert_false(proto_sasl_has_mech(BYTES('A', 'B'), "AB"));
}

static void test_parse_small(void **state)
{
	const char *name, *value, *sql, *stmt, *mech, *pw;
	const uint8_t *data;
	size_t sql_len, dlen;
	uint32_t pid, key;
	uint16_t np;
	char st;

	(void)state;
	assert_true(proto_parse_param_status(BYTES('T', 'Z', 0, 'U', 'T', 'C', 0), &name, &value));
	assert_string_equal(name, "TZ");
	assert_string_equal(value, "UTC");
	assert_false(proto_parse_param_status(BYTES('T', 0, 'U', 0, 0), &name, &value));

	assert_true(proto_parse_backend_key(BYTES(0, 0, 1, 0, 0xff, 0, 0, 1), &pid, &key));
	assert_int_equal(pid, 256);
	assert_int_equal(key, 0xff000001u);

	assert_true(proto_parse_ready(BYTES('E'), &st));
	assert_int_equal(st, 'E');
	assert_false(proto_parse_ready(BYTES('X'), &st));
	assert_false(proto_parse_ready(BYTES('I', 'I'), &st));

	assert_true(proto_parse_query(BYTES('a', 'b', 'c', 0), &sql, &sql_len));
	assert_int_equal(sql_len, 3);
	assert_string_equal(sql, "abc");
	assert_true(proto_parse_query(BYTES(0), &sql, &sql_len));
	assert_int_equal(sql_len, 0);
	/* An embedded NUL: the query would end early; libpq never sends this. */
	assert_false(proto_parse_query(BYTES('a', 0, 'b', 0), &sql, &sql_len));

	assert_true(proto_parse_parse(trunc_cases[9].body, trunc_cases[9].len, &stmt, &sql,
	                              &sql_len, &np));
	assert_string_equal(stmt, "s1");
	assert_string_equal(sql, "x");
	assert_int_equal(sql_len, 1);
	assert_int_equal(np, 2);
	/* Hostile parameter count: far more types than bytes. */
	assert_false(proto_parse_parse(BYTES(0, 'x', 0, 0xff, 0xff, 0, 0, 0, 23), &stmt, &sql,
	                               &sql_len, &np));
	/* Fewer types declared than sent. */
	assert_false(proto_parse_parse(BYTES(0, 'x', 0, 0, 1, 0, 0, 0, 23, 0, 0, 0, 25), &stmt,
	                               &sql, &sql_len, &np));

	assert_true(proto_parse_sasl_initial(BYTES('M', 0, 0xff, 0xff, 0xff, 0xff), &mech, &data,
	                                     &dlen));
	assert_int_equal(dlen, 0);
	assert_false(proto_parse_sasl_initial(BYTES('M', 0, 0xff, 0xff, 0xff, 0xfe), &mech, &data,
	                                      &dlen));
	assert_false(proto_parse_sasl_initial(BYTES('M', 0, 0x7f, 0xff, 0xff, 0xff, 'a'), &mech,
	                                      &data, &dlen));
	assert_true(proto_parse_sasl_initial(trunc_cases[10].body, trunc_cases[10].len, &mech,
	                                     &data, &dlen));
	assert_string_equal(mech, "M");
	assert_int_equal(dlen, 3);
	assert_memory_equal(data, "abc", 3);

	assert_true(proto_parse_password(BYTES('p', 0), &pw));
	assert_string_equal(pw, "p");
	assert_false(proto_parse_password(BYTES('p', 0, 'q', 0), &pw));
}

static void test_msg_names(void **state)
{
	const char *stmt, *portal;

	(void)state;
	assert_true(proto_parse_msg_names('P', BYTES('s', 0, 'x', 0, 0, 0), &stmt, &portal));
	assert_string_equal(stmt, "s");
	assert_null(portal);
	assert_true(proto_parse_msg_names('B', BYTES('p', 0, 's', 0, 0, 0), &stmt, &portal));
	assert_string_equal(stmt, "s");
	assert_string_equal(portal, "p");
	assert_true(proto_parse_msg_names('C', BYTES('P', 'p', 0), &stmt, &portal));
	assert_null(stmt);
	assert_string_equal(portal, "p");
	assert_true(proto_parse_msg_names('D', BYTES('S', 0), &stmt, &portal));
	assert_string_equal(stmt, "");
	assert_null(portal);
	assert_false(proto_parse_msg_names('D', BYTES('X', 's', 0), &stmt, &portal));
	assert_true(proto_parse_msg_names('E', BYTES(0, 0, 0, 0, 0), &stmt, &portal));
	assert_string_equal(portal, "");
	assert_false(proto_parse_msg_names('Q', BYTES('s', 0), &stmt, &portal));
	assert_false(proto_parse_msg_names('E', BYTES('p'), &stmt, &portal));
}

static void test_enum_strings(void **state)
{
	(void)state;
	assert_string_equal(pkt_status_str(PKT_NEED_MORE), "need more");
	assert_string_equal(startup_kind_str(STARTUP_CANCEL), "cancel request");
	assert_string_equal(startup_kind_str((enum startup_kind)99), "unknown");
}

/* proto_parse_options: each setting seen, as "name=value;" */
static bool collect_setting(void *arg, const char *name, const char *value)
{
	char *out = arg;

	strcat(out, name);
	strcat(out, "=");
	strcat(out, value);
	strcat(out, ";");
	return strcmp(name, "stop_here") != 0;
}

static void test_parse_options(void **state)
{
	static const struct {
		const char *opts;
		bool ok;
		const char *settings; /* collected; for a failure, a word of the error */
	} cases[] = {
	        {"", true, ""},
	        {"   ", true, ""},
	        {"-c a=1", true, "a=1;"},
	        {"-ca=1", true, "a=1;"},
	        {"--a=1", true, "a=1;"},
	        {"--lock-timeout=5", true, "lock_timeout=5;"},
	        {"  -c a=1 \t -cb=2   --c-d=3 ", true, "a=1;b=2;c_d=3;"},
	        {"-c datestyle=German,\\ YMD", true, "datestyle=German, YMD;"},
	        {"-c a=x\\\\y", true, "a=x\\y;"},
	        {"-c a=", true, "a=;"},
	        {"-c a=b=c", true, "a=b=c;"},
	        {"--", true, ""},
	        {"-c", false, "argument"},
	        {"-c a", false, "requires a value"},
	        {"-c =1", false, "requires a value"},
	        {"--a", false, "requires a value"},
	        {"-B 100", false, "unsupported"},
	        {"a=1", false, "invalid command-line argument"},
	        {"-- -c a=1", false, "invalid command-line argument"},
	        {"-c stop_here=1 -c b=2", false, "stop_here=1;"},
	};
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char got[256] = "", err[128] = "";
		bool ok =
		        proto_parse_options(cases[i].opts, collect_setting, got, err, sizeof(err));

		assert_int_equal(ok, cases[i].ok);
		if (ok || strchr(cases[i].settings, ';') != NULL)
			assert_string_equal(got, cases[i].settings);
		else
			assert_non_null(strstr(err, cases[i].settings));
	}
}

/* The one-pass search of statement texts for the guard's spellings. */
static void test_text_has_any_ci(void **state)
{
	static const char *const nd[] = {"syncbouncer", "set_config", "u&", NULL};
	static const char *const none[] = {NULL};
	const char *yes[] = {"SET SyncBouncer.mode = 1",
	                     "select SET_CONFIG('a','b',false)",
	                     "select U&'x'",
	                     "x u&",
	                     "syncbouncer",
	                     "sset_config"};
	const char *no[] = {"select 1", "select 'syncbounce'", "set_confi", "u", "u &", ""};

	(void)state;
	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
		assert_true(proto_text_has_any_ci(yes[i], strlen(yes[i]), nd));
	for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
		assert_false(proto_text_has_any_ci(no[i], strlen(no[i]), nd));
	/* the length bounds the search: a needle cut off by it is not found */
	assert_false(proto_text_has_any_ci("x syncbouncer", 12, nd));
	assert_true(proto_text_has_any_ci("x syncbouncer", 13, nd));
	assert_false(proto_text_has_any_ci("syncbouncer", 11, none));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_reader_bounds),
	        cmocka_unit_test(test_read_header),
	        cmocka_unit_test(test_read_startup_header),
	        cmocka_unit_test(test_parse_startup),
	        cmocka_unit_test(test_startup_values),
	        cmocka_unit_test(test_startup_param_limit),
	        cmocka_unit_test(test_startup_truncations),
	        cmocka_unit_test(test_parse_error),
	        cmocka_unit_test(test_truncations),
	        cmocka_unit_test(test_parse_auth),
	        cmocka_unit_test(test_parse_small),
	        cmocka_unit_test(test_msg_names),
	        cmocka_unit_test(test_enum_strings),
	        cmocka_unit_test(test_parse_options),
	        cmocka_unit_test(test_text_has_any_ci),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
