/*
 * libFuzzer target for the packet parsers: the regular and startup headers, the startup body,
 * ErrorResponse and the other backend/frontend message readers. Any out-of-bounds read shows up
 * under AddressSanitizer. Built with clang only:
 *   clang -g -fsanitize=fuzzer,address,undefined -Iinclude src/proto.c test/fuzz/fuzz_proto.c
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The first byte picks the parser so the fuzzer can steer each one separately. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct startup_info info;
	struct pg_error err;
	struct pkt_hdr hdr;
	const char *a, *b;
	const uint8_t *rest;
	size_t n;
	uint32_t u, v;
	uint16_t np;
	char c;

	if (size < 1)
		return 0;
	switch (data[0] % 8) {
	case 0:
		if (proto_read_header(data + 1, size - 1, size, &hdr) == PKT_OK &&
		    hdr.len <= size - 1) {
			if (hdr.type == 'E' || hdr.type == 'N') {
				if (proto_parse_error(data + 6, hdr.len - 5, &err) && err.message)
					(void)strlen(err.message);
			} else if (proto_parse_msg_names(hdr.type, data + 6, hdr.len - 5, &a, &b) &&
			           a) {
				(void)strlen(a);
			}
		}
		break;
	case 1:
		if (proto_read_startup_header(data + 1, size - 1, size, &u) == PKT_OK &&
		    u <= size - 1 && proto_parse_startup(data + 5, u - 4, &info) == STARTUP_NORMAL)
			(void)proto_startup_get(&info, "user");
		break;
	case 2:
		(void)proto_parse_startup(data + 1, size - 1, &info);
		break;
	case 3:
		if (proto_parse_error(data + 1, size - 1, &err) && err.severity)
			(void)strlen(err.severity);
		break;
	case 4:
		if (proto_parse_auth(data + 1, size - 1, &u, &rest, &n) && u == PROTO_AUTH_SASL)
			(void)proto_sasl_has_mech(rest, n, "SCRAM-SHA-256");
		break;
	case 5:
		(void)proto_parse_parse(data + 1, size - 1, &a, &b, &n, &np);
		(void)proto_parse_query(data + 1, size - 1, &a, &n);
		break;
	case 6:
		(void)proto_parse_sasl_initial(data + 1, size - 1, &a, &rest, &n);
		(void)proto_parse_param_status(data + 1, size - 1, &a, &b);
		(void)proto_parse_backend_key(data + 1, size - 1, &u, &v);
		break;
	case 7:
		(void)proto_parse_ready(data + 1, size - 1, &c);
		(void)proto_parse_command_complete(data + 1, size - 1, &a);
		(void)proto_parse_password(data + 1, size - 1, &a);
		break;
	}
	return 0;
}
