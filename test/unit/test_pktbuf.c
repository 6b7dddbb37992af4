/*
 * Unit tests for pktbuf: exact wire bytes of every message builder, the size cap, sticky
 * failure, fixed buffers, and round trips through the proto parsers.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "pktbuf.h"
#include "proto.h"

#define BYTES(...) ((const uint8_t[]){__VA_ARGS__}), sizeof((const uint8_t[]){__VA_ARGS__})

static void assert_pb_bytes(const struct pktbuf *pb, const uint8_t *want, size_t n)
{
	assert_false(pktbuf_failed(pb));
	assert_int_equal(pb->len, n);
	assert_memory_equal(pb->data, want, n);
}

static void build_ready(struct pktbuf *pb)
{
	pktbuf_write_ready(pb, 'I');
}

static void build_auth_md5(struct pktbuf *pb)
{
	pktbuf_write_auth(pb, PROTO_AUTH_MD5, "\x01\x02\x03\x04", 4);
}

static void build_auth_ok(struct pktbuf *pb)
{
	pktbuf_write_auth(pb, PROTO_AUTH_OK, NULL, 0);
}

static void build_param_status(struct pktbuf *pb)
{
	pktbuf_write_parameter_status(pb, "a", "bc");
}

static void build_backend_key(struct pktbuf *pb)
{
	pktbuf_write_backend_key(pb, 0x01020304, 0xa0b0c0d0);
}

static void build_command_complete(struct pktbuf *pb)
{
	pktbuf_write_command_complete(pb, "SELECT 1");
}

static void build_data_row(struct pktbuf *pb)
{
	const char *vals[] = {"ab", NULL, ""};

	pktbuf_write_data_row(pb, 3, vals);
}

static void build_row_description(struct pktbuf *pb)
{
	const char *names[] = {"id"};
	const uint32_t oids[] = {23};

	pktbuf_write_row_description(pb, 1, names, oids);
}

static void build_startup(struct pktbuf *pb)
{
	const char *keys[] = {"user"};
	const char *vals[] = {"u"};

	pktbuf_write_startup(pb, keys, vals, 1);
}

static void build_password(struct pktbuf *pb)
{
	pktbuf_write_password(pb, "pw");
}

static void build_sasl_initial(struct pktbuf *pb)
{
	pktbuf_write_sasl_initial(pb, "M", "xy", 2);
}

static void build_sasl_response(struct pktbuf *pb)
{
	pktbuf_write_sasl_response(pb, "xyz", 3);
}

static void build_query(struct pktbuf *pb)
{
	pktbuf_write_query(pb, "select 1");
}

static void build_terminate(struct pktbuf *pb)
{
	pktbuf_write_terminate(pb);
}

static void build_cancel(struct pktbuf *pb)
{
	pktbuf_write_cancel(pb, 7, 9);
}

static void build_ssl_request(struct pktbuf *pb)
{
	pktbuf_write_ssl_request(pb);
}

static void build_empty_query(struct pktbuf *pb)
{
	pktbuf_write_empty_query(pb);
}

static void build_error(struct pktbuf *pb)
{
	pktbuf_write_error(pb, "FATAL", "28P01", "m", NULL, "h");
}

static void build_sync(struct pktbuf *pb)
{
	pktbuf_write_simple(pb, 'S');
}

static void build_auth_sasl(struct pktbuf *pb)
{
	pktbuf_write_auth_sasl(pb, "AB");
}

static void build_negotiate(struct pktbuf *pb)
{
	const char *opts[] = {"_pq_.x"};

	pktbuf_write_negotiate_protocol(pb, 0, 1, opts);
}

struct wire_case {
	const char *name;
	void (*build)(struct pktbuf *pb);
	const uint8_t *want;
	size_t want_len;
};

static const struct wire_case wire_cases[] = {
        {"ready", build_ready, BYTES('Z', 0, 0, 0, 5, 'I')},
        {"auth md5", build_auth_md5, BYTES('R', 0, 0, 0, 12, 0, 0, 0, 5, 1, 2, 3, 4)},
        {"auth ok", build_auth_ok, BYTES('R', 0, 0, 0, 8, 0, 0, 0, 0)},
        {"parameter status", build_param_status, BYTES('S', 0, 0, 0, 9, 'a', 0, 'b', 'c', 0)},
        {"backend key", build_backend_key,
         BYTES('K', 0, 0, 0, 12, 1, 2, 3, 4, 0xa0, 0xb0, 0xc0, 0xd0)},
        {"command complete", build_command_complete,
         BYTES('C', 0, 0, 0, 13, 'S', 'E', 'L', 'E', 'C', 'T', ' ', '1', 0)},
        {"data row", build_data_row,
         BYTES('D', 0, 0, 0, 20, 0, 3, 0, 0, 0, 2, 'a', 'b', 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0)},
        {"row description", build_row_description,
         BYTES('T', 0, 0, 0, 27, 0, 1, 'i', 'd', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 23, 0, 4, 0xff, 0xff,
               0xff, 0xff, 0, 0)},
        {"startup", build_startup,
         BYTES(0, 0, 0, 16, 0, 3, 0, 0, 'u', 's', 'e', 'r', 0, 'u', 0, 0)},
        {"password", build_password, BYTES('p', 0, 0, 0, 7, 'p', 'w', 0)},
        {"sasl initial", build_sasl_initial, BYTES('p', 0, 0, 0, 12, 'M', 0, 0, 0, 0, 2, 'x', 'y')},
        {"sasl response", build_sasl_response, BYTES('p', 0, 0, 0, 7, 'x', 'y', 'z')},
        {"query", build_query, BYTES('Q', 0, 0, 0, 13, 's', 'e', 'l', 'e', 'c', 't', ' ', '1', 0)},
        {"terminate", build_terminate, BYTES('X', 0, 0, 0, 4)},
        {"cancel", build_cancel,
         BYTES(0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 7, 0, 0, 0, 9)},
        {"ssl request", build_ssl_request, BYTES(0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f)},
        {"empty query", build_empty_query, BYTES('I', 0, 0, 0, 4)},
        {"sync", build_sync, BYTES('S', 0, 0, 0, 4)},
        {"auth sasl", build_auth_sasl, BYTES('R', 0, 0, 0, 12, 0, 0, 0, 10, 'A', 'B', 0, 0)},
        {"negotiate protocol", build_negotiate,
         BYTES('v', 0, 0, 0, 19, 0, 0, 0, 0, 0, 0, 0, 1, '_', 'p', 'q', '_', '.', 'x', 0)},
        {"error", build_error,
         BYTES('E', 0, 0, 0, 32, 'S', 'F', 'A', 'T', 'A', 'L', 0, 'V', 'F', 'A', 'T', 'A', 'L', 0,
               'C', '2', '8', 'P', '0', '1', 0, 'M', 'm', 0, 'H', 'h', 0, 0)},
};

static void test_wire_bytes(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(wire_cases) / sizeof(wire_cases[0]); i++) {
		struct pktbuf pb;

		print_message("case %s\n", wire_cases[i].name);
		pktbuf_init(&pb, 1024);
		wire_cases[i].build(&pb);
		assert_pb_bytes(&pb, wire_cases[i].want, wire_cases[i].want_len);
		pktbuf_free(&pb);
	}
}

/* Every builder fails cleanly, leaving nothing half-written past the cap, for every cap below
 * its exact size, and succeeds at exactly its size. */
static void test_wire_caps(void **state)
{
	size_t i, cap;

	(void)state;
	for (i = 0; i < sizeof(wire_cases) / sizeof(wire_cases[0]); i++) {
		for (cap = 0; cap <= wire_cases[i].want_len; cap++) {
			struct pktbuf pb;
			uint8_t *mem = malloc(cap ? cap : 1);

			assert_non_null(mem);
			pktbuf_init_fixed(&pb, mem, cap);
			wire_cases[i].build(&pb);
			if (cap < wire_cases[i].want_len) {
				assert_true(pktbuf_failed(&pb));
				assert_true(pb.len <= cap);
			} else {
				assert_pb_bytes(&pb, wire_cases[i].want, wire_cases[i].want_len);
			}
			pktbuf_free(&pb);
			free(mem);

			pktbuf_init(&pb, cap);
			wire_cases[i].build(&pb);
			assert_int_equal(pktbuf_failed(&pb), cap < wire_cases[i].want_len);
			pktbuf_free(&pb);
		}
	}
}

static void test_sticky_failure(void **state)
{
	struct pktbuf pb;

	(void)state;
	pktbuf_init(&pb, 8);
	pktbuf_put_u32(&pb, 1);
	pktbuf_put_bytes(&pb, "12345", 5); /* 9 > 8: fails */
	assert_true(pktbuf_failed(&pb));
	assert_int_equal(pb.len, 4);
	pktbuf_put_u8(&pb, 1); /* would fit, but the buffer has failed */
	pktbuf_put_u16(&pb, 1);
	pktbuf_write_terminate(&pb);
	assert_true(pktbuf_failed(&pb));
	assert_int_equal(pb.len, 4);

	pktbuf_reset(&pb);
	assert_false(pktbuf_failed(&pb));
	assert_int_equal(pb.len, 0);
	pktbuf_write_terminate(&pb);
	assert_pb_bytes(&pb, BYTES('X', 0, 0, 0, 4));
	pktbuf_free(&pb);
}

static void test_growth(void **state)
{
	struct pktbuf pb;
	size_t i;

	(void)state;
	pktbuf_init(&pb, 100000);
	for (i = 0; i < 100000; i++)
		pktbuf_put_u8(&pb, (uint8_t)(i * 7));
	assert_false(pktbuf_failed(&pb));
	assert_int_equal(pb.len, 100000);
	assert_true(pb.cap <= pb.max);
	for (i = 0; i < 100000; i++)
		assert_int_equal(pb.data[i], (uint8_t)(i * 7));
	pktbuf_put_u8(&pb, 0);
	assert_true(pktbuf_failed(&pb));
	pktbuf_free(&pb);
}

static void test_huge_lengths(void **state)
{
	struct pktbuf pb;

	(void)state;
	pktbuf_init(&pb, 64);
	pktbuf_put_bytes(&pb, "x", SIZE_MAX);
	assert_true(pktbuf_failed(&pb));
	pktbuf_reset(&pb);
	pktbuf_put_u8(&pb, 1);
	pktbuf_put_bytes(&pb, "x", SIZE_MAX);
	assert_true(pktbuf_failed(&pb));
	pktbuf_reset(&pb);
	pktbuf_write_sasl_initial(&pb, "M", "x", (size_t)INT32_MAX + 1);
	assert_true(pktbuf_failed(&pb));
	assert_int_equal(pb.len, 0);
	pktbuf_free(&pb);
}

static void test_framing_misuse(void **state)
{
	struct pktbuf pb;
	const char *keys[] = {""};
	const char *vals[] = {"x"};
	const char *names[] = {"a"};
	const uint32_t oids[] = {25};

	(void)state;
	pktbuf_init(&pb, 64);
	pktbuf_finish_msg(&pb);
	assert_true(pktbuf_failed(&pb));

	pktbuf_reset(&pb);
	pktbuf_start_msg(&pb, 'Q');
	pktbuf_start_msg(&pb, 'Q');
	assert_true(pktbuf_failed(&pb));

	pktbuf_reset(&pb);
	pktbuf_put_string(&pb, NULL);
	assert_true(pktbuf_failed(&pb));

	pktbuf_reset(&pb);
	pktbuf_write_startup(&pb, keys, vals, 1); /* empty key would end the list */
	assert_true(pktbuf_failed(&pb));

	pktbuf_reset(&pb);
	pktbuf_write_row_description(&pb, -1, names, oids);
	assert_true(pktbuf_failed(&pb));
	pktbuf_reset(&pb);
	pktbuf_write_row_description(&pb, 1665, names, oids);
	assert_true(pktbuf_failed(&pb));
	pktbuf_reset(&pb);
	pktbuf_write_data_row(&pb, 2, NULL);
	assert_true(pktbuf_failed(&pb));

	pktbuf_reset(&pb);
	pktbuf_write_simple(&pb, 0);
	assert_true(pktbuf_failed(&pb));
	pktbuf_reset(&pb);
	pktbuf_write_negotiate_protocol(&pb, 0, 65, keys);
	assert_true(pktbuf_failed(&pb));

	/* A message after a reset is framed correctly again. */
	pktbuf_reset(&pb);
	pktbuf_write_ready(&pb, 'T');
	assert_pb_bytes(&pb, BYTES('Z', 0, 0, 0, 5, 'T'));
	pktbuf_free(&pb);
}

static void test_error_fields_round_trip(void **state)
{
	struct pg_error in = {
	        .severity = "ERROR",
	        .sqlstate = "23514",
	        .message = "salesforce validation error",
	        .detail = "Key (email)=(pauldune.co) is not a valid email address.",
	        .hint = "h",
	        .position = "12",
	        .where = "w",
	        .schema = "salesforce",
	        .table = "contacts",
	        .column = "email",
	        .constraint = "k",
	        .datatype = "text",
	};
	struct pg_error out;
	struct pkt_hdr hdr;
	struct pktbuf pb;

	(void)state;
	pktbuf_init(&pb, 4096);
	pktbuf_write_error_fields(&pb, &in);
	assert_false(pktbuf_failed(&pb));
	assert_int_equal(proto_read_header(pb.data, pb.len, 4096, &hdr), PKT_OK);
	assert_int_equal(hdr.type, 'E');
	assert_int_equal(hdr.len, pb.len);
	assert_true(proto_parse_error(pb.data + 5, pb.len - 5, &out));
	assert_string_equal(out.severity, in.severity);
	assert_string_equal(out.sqlstate, in.sqlstate);
	assert_string_equal(out.message, in.message);
	assert_string_equal(out.detail, in.detail);
	assert_string_equal(out.hint, in.hint);
	assert_string_equal(out.position, in.position);
	assert_string_equal(out.where, in.where);
	assert_string_equal(out.schema, in.schema);
	assert_string_equal(out.table, in.table);
	assert_string_equal(out.column, in.column);
	assert_string_equal(out.constraint, in.constraint);
	assert_string_equal(out.datatype, in.datatype);

	/* Defaults: a bare error still carries severity, code and message. */
	pktbuf_reset(&pb);
	memset(&in, 0, sizeof(in));
	pktbuf_write_error_fields(&pb, &in);
	assert_true(proto_parse_error(pb.data + 5, pb.len - 5, &out));
	assert_string_equal(out.severity, "ERROR");
	assert_string_equal(out.sqlstate, "XX000");
	assert_string_equal(out.message, "");
	assert_null(out.detail);

	pktbuf_reset(&pb);
	pktbuf_write_notice(&pb, "01000", "careful");
	assert_int_equal(pb.data[0], 'N');
	assert_true(proto_parse_error(pb.data + 5, pb.len - 5, &out));
	assert_string_equal(out.severity, "NOTICE");
	assert_string_equal(out.message, "careful");
	pktbuf_free(&pb);
}

static void test_startup_round_trip(void **state)
{
	const char *keys[] = {"user", "database", "application_name"};
	const char *vals[] = {"app", "crm", ""};
	struct startup_info info;
	struct pktbuf pb;
	uint32_t len;

	(void)state;
	pktbuf_init(&pb, 4096);
	pktbuf_write_startup(&pb, keys, vals, 3);
	assert_false(pktbuf_failed(&pb));
	assert_int_equal(proto_read_startup_header(pb.data, pb.len, 10000, &len), PKT_OK);
	assert_int_equal(len, pb.len);
	assert_int_equal(proto_parse_startup(pb.data + 4, pb.len - 4, &info), STARTUP_NORMAL);
	assert_int_equal(info.nparams, 3);
	assert_string_equal(proto_startup_get(&info, "user"), "app");
	assert_string_equal(proto_startup_get(&info, "database"), "crm");
	assert_string_equal(proto_startup_get(&info, "application_name"), "");

	pktbuf_reset(&pb);
	pktbuf_write_cancel(&pb, 4242, 0xdeadbeef);
	assert_int_equal(proto_parse_startup(pb.data + 4, pb.len - 4, &info), STARTUP_CANCEL);
	assert_int_equal(info.cancel_pid, 4242);
	assert_int_equal(info.cancel_key, 0xdeadbeef);
	pktbuf_free(&pb);
}

/* Several messages back to back, as a reply is built. */
static void test_message_sequence(void **state)
{
	struct pktbuf pb;
	struct pkt_hdr hdr = {0};
	size_t off = 0;
	const uint8_t types[] = {'R', 'S', 'K', 'Z'};
	size_t i = 0;

	(void)state;
	pktbuf_init(&pb, 4096);
	pktbuf_write_auth(&pb, PROTO_AUTH_OK, NULL, 0);
	pktbuf_write_parameter_status(&pb, "server_version", "15.0");
	pktbuf_write_backend_key(&pb, 1, 2);
	pktbuf_write_ready(&pb, 'I');
	assert_false(pktbuf_failed(&pb));
	while (off < pb.len) {
		assert_int_equal(proto_read_header(pb.data + off, pb.len - off, 4096, &hdr),
		                 PKT_OK);
		assert_true(i < sizeof(types));
		assert_int_equal(hdr.type, types[i++]);
		off += hdr.len;
	}
	assert_int_equal(off, pb.len);
	assert_int_equal(i, sizeof(types));
	pktbuf_free(&pb);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_wire_bytes),
	        cmocka_unit_test(test_wire_caps),
	        cmocka_unit_test(test_sticky_failure),
	        cmocka_unit_test(test_growth),
	        cmocka_unit_test(test_huge_lengths),
	        cmocka_unit_test(test_framing_misuse),
	        cmocka_unit_test(test_error_fields_round_trip),
	        cmocka_unit_test(test_startup_round_trip),
	        cmocka_unit_test(test_message_sequence),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
