/*
 * pktbuf: bounded, sticky-failure builder for PostgreSQL protocol messages.
 *
 * Every append goes through pktbuf_reserve(), the only place that checks the maximum and grows
 * the heap buffer, so no other code path can write out of bounds. Once failed, a buffer ignores
 * everything until reset: callers never have to check after each append.
 */
#include "pktbuf.h"

#include <stdlib.h>
#include <string.h>

#include "proto.h"

/* PostgreSQL rejects more columns than this (MaxTupleAttributeNumber). */
#define PKTBUF_MAX_COLS 1664
/* Smallest heap allocation: most replies are short. */
#define PKTBUF_MIN_ALLOC 256

void pktbuf_init(struct pktbuf *pb, size_t max)
{
	memset(pb, 0, sizeof(*pb));
	pb->max = max;
	pb->msg_start = PKTBUF_NO_MSG;
}

void pktbuf_init_fixed(struct pktbuf *pb, uint8_t *mem, size_t size)
{
	memset(pb, 0, sizeof(*pb));
	pb->data = mem;
	pb->cap = size;
	pb->max = size;
	pb->fixed = true;
	pb->msg_start = PKTBUF_NO_MSG;
}

void pktbuf_free(struct pktbuf *pb)
{
	if (!pb->fixed)
		free(pb->data);
	pb->data = NULL;
	pb->len = 0;
	pb->cap = 0;
	pb->msg_start = PKTBUF_NO_MSG;
}

void pktbuf_reset(struct pktbuf *pb)
{
	pb->len = 0;
	pb->failed = false;
	pb->msg_start = PKTBUF_NO_MSG;
}

bool pktbuf_failed(const struct pktbuf *pb)
{
	return pb->failed;
}

/* Makes room for n more bytes and returns where they go, or NULL (and the buffer fails). */
static uint8_t *pktbuf_reserve(struct pktbuf *pb, size_t n)
{
	size_t need, ncap;
	uint8_t *p;

	if (pb->failed)
		return NULL;
	if (n > pb->max || pb->len > pb->max - n)
		goto fail;
	need = pb->len + n;
	if (need > pb->cap) {
		if (pb->fixed)
			goto fail;
		ncap = pb->cap ? pb->cap : PKTBUF_MIN_ALLOC;
		while (ncap < need && ncap <= SIZE_MAX / 2)
			ncap *= 2;
		if (ncap < need || ncap > pb->max)
			ncap = pb->max;
		p = realloc(pb->data, ncap);
		if (!p)
			goto fail;
		pb->data = p;
		pb->cap = ncap;
	}
	p = pb->data + pb->len;
	pb->len += n;
	return p;
fail:
	pb->failed = true;
	return NULL;
}

static void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

void pktbuf_put_u8(struct pktbuf *pb, uint8_t v)
{
	uint8_t *p = pktbuf_reserve(pb, 1);

	if (p)
		p[0] = v;
}

void pktbuf_put_u16(struct pktbuf *pb, uint16_t v)
{
	uint8_t *p = pktbuf_reserve(pb, 2);

	if (p) {
		p[0] = (uint8_t)(v >> 8);
		p[1] = (uint8_t)v;
	}
}

void pktbuf_put_u32(struct pktbuf *pb, uint32_t v)
{
	uint8_t *p = pktbuf_reserve(pb, 4);

	if (p)
		put_be32(p, v);
}

void pktbuf_put_bytes(struct pktbuf *pb, const void *src, size_t n)
{
	uint8_t *p;

	if (n == 0)
		return;
	if (!src) {
		pb->failed = true;
		return;
	}
	p = pktbuf_reserve(pb, n);
	if (p)
		memcpy(p, src, n);
}

void pktbuf_put_string(struct pktbuf *pb, const char *s)
{
	if (!s) {
		pb->failed = true;
		return;
	}
	pktbuf_put_bytes(pb, s, strlen(s) + 1);
}

void pktbuf_start_msg(struct pktbuf *pb, char type)
{
	if (pb->failed)
		return;
	if (pb->msg_start != PKTBUF_NO_MSG) {
		pb->failed = true;
		return;
	}
	if (type)
		pktbuf_put_u8(pb, (uint8_t)type);
	pktbuf_put_u32(pb, 0);
	if (!pb->failed)
		pb->msg_start = pb->len - 4;
}

void pktbuf_finish_msg(struct pktbuf *pb)
{
	size_t mlen;

	if (pb->failed)
		return;
	if (pb->msg_start == PKTBUF_NO_MSG) {
		pb->failed = true;
		return;
	}
	mlen = pb->len - pb->msg_start;
	/* The length is a signed int32 on the wire. */
	if (mlen > INT32_MAX) {
		pb->failed = true;
		return;
	}
	put_be32(pb->data + pb->msg_start, (uint32_t)mlen);
	pb->msg_start = PKTBUF_NO_MSG;
}

static void put_field(struct pktbuf *pb, char code, const char *value)
{
	if (!value)
		return;
	pktbuf_put_u8(pb, (uint8_t)code);
	pktbuf_put_string(pb, value);
}

static void write_error_msg(struct pktbuf *pb, char type, const struct pg_error *e)
{
	const char *severity = e->severity ? e->severity : "ERROR";

	pktbuf_start_msg(pb, type);
	put_field(pb, 'S', severity);
	/* Our severities are never translated, so the V field is the same word. */
	put_field(pb, 'V', severity);
	put_field(pb, 'C', e->sqlstate ? e->sqlstate : "XX000");
	put_field(pb, 'M', e->message ? e->message : "");
	put_field(pb, 'D', e->detail);
	put_field(pb, 'H', e->hint);
	put_field(pb, 'P', e->position);
	put_field(pb, 'W', e->where);
	put_field(pb, 's', e->schema);
	put_field(pb, 't', e->table);
	put_field(pb, 'c', e->column);
	put_field(pb, 'd', e->datatype);
	put_field(pb, 'n', e->constraint);
	pktbuf_put_u8(pb, 0);
	pktbuf_finish_msg(pb);
}

void pktbuf_write_error(struct pktbuf *pb, const char *severity, const char *sqlstate,
                        const char *message, const char *detail, const char *hint)
{
	struct pg_error e = {
	        .severity = severity,
	        .sqlstate = sqlstate,
	        .message = message,
	        .detail = detail,
	        .hint = hint,
	};

	write_error_msg(pb, PQMSG_ERROR_RESPONSE, &e);
}

void pktbuf_write_error_fields(struct pktbuf *pb, const struct pg_error *e)
{
	write_error_msg(pb, PQMSG_ERROR_RESPONSE, e);
}

void pktbuf_write_notice(struct pktbuf *pb, const char *sqlstate, const char *message)
{
	struct pg_error e = {.severity = "NOTICE", .sqlstate = sqlstate, .message = message};

	write_error_msg(pb, PQMSG_NOTICE_RESPONSE, &e);
}

void pktbuf_write_ready(struct pktbuf *pb, char txn_status)
{
	pktbuf_start_msg(pb, PQMSG_READY_FOR_QUERY);
	pktbuf_put_u8(pb, (uint8_t)txn_status);
	pktbuf_finish_msg(pb);
}

void pktbuf_write_auth(struct pktbuf *pb, uint32_t code, const void *extra, size_t len)
{
	pktbuf_start_msg(pb, PQMSG_AUTHENTICATION);
	pktbuf_put_u32(pb, code);
	pktbuf_put_bytes(pb, extra, len);
	pktbuf_finish_msg(pb);
}

void pktbuf_write_parameter_status(struct pktbuf *pb, const char *name, const char *value)
{
	pktbuf_start_msg(pb, PQMSG_PARAMETER_STATUS);
	pktbuf_put_string(pb, name);
	pktbuf_put_string(pb, value);
	pktbuf_finish_msg(pb);
}

void pktbuf_write_backend_key(struct pktbuf *pb, uint32_t pid, uint32_t key)
{
	pktbuf_start_msg(pb, PQMSG_BACKEND_KEY_DATA);
	pktbuf_put_u32(pb, pid);
	pktbuf_put_u32(pb, key);
	pktbuf_finish_msg(pb);
}

/* typlen as PostgreSQL reports it; clients only display it, -1 is safe for the rest. */
static int16_t type_len(uint32_t oid)
{
	switch (oid) {
	case 16: /* bool */
	case 18: /* char */
		return 1;
	case 21: /* int2 */
		return 2;
	case 23:  /* int4 */
	case 26:  /* oid */
	case 700: /* float4 */
		return 4;
	case 20:   /* int8 */
	case 701:  /* float8 */
	case 1114: /* timestamp */
	case 1184: /* timestamptz */
		return 8;
	default:
		return -1;
	}
}

void pktbuf_write_row_description(struct pktbuf *pb, int ncols, const char *const *names,
                                  const uint32_t *type_oids)
{
	int i;

	if (ncols < 0 || ncols > PKTBUF_MAX_COLS || (ncols > 0 && (!names || !type_oids))) {
		pb->failed = true;
		return;
	}
	pktbuf_start_msg(pb, PQMSG_ROW_DESCRIPTION);
	pktbuf_put_u16(pb, (uint16_t)ncols);
	for (i = 0; i < ncols; i++) {
		pktbuf_put_string(pb, names[i]);
		pktbuf_put_u32(pb, 0); /* table oid */
		pktbuf_put_u16(pb, 0); /* column number */
		pktbuf_put_u32(pb, type_oids[i]);
		pktbuf_put_u16(pb, (uint16_t)type_len(type_oids[i]));
		pktbuf_put_u32(pb, UINT32_MAX); /* typmod -1 */
		pktbuf_put_u16(pb, 0);          /* text format */
	}
	pktbuf_finish_msg(pb);
}

void pktbuf_write_data_row(struct pktbuf *pb, int ncols, const char *const *values)
{
	size_t n;
	int i;

	if (ncols < 0 || ncols > PKTBUF_MAX_COLS || (ncols > 0 && !values)) {
		pb->failed = true;
		return;
	}
	pktbuf_start_msg(pb, PQMSG_DATA_ROW);
	pktbuf_put_u16(pb, (uint16_t)ncols);
	for (i = 0; i < ncols; i++) {
		if (!values[i]) {
			pktbuf_put_u32(pb, UINT32_MAX); /* -1: NULL */
			continue;
		}
		n = strlen(values[i]);
		if (n > INT32_MAX) {
			pb->failed = true;
			return;
		}
		pktbuf_put_u32(pb, (uint32_t)n);
		pktbuf_put_bytes(pb, values[i], n);
	}
	pktbuf_finish_msg(pb);
}

void pktbuf_write_command_complete(struct pktbuf *pb, const char *tag)
{
	pktbuf_start_msg(pb, PQMSG_COMMAND_COMPLETE);
	pktbuf_put_string(pb, tag);
	pktbuf_finish_msg(pb);
}

void pktbuf_write_empty_query(struct pktbuf *pb)
{
	pktbuf_start_msg(pb, PQMSG_EMPTY_QUERY_RESPONSE);
	pktbuf_finish_msg(pb);
}

void pktbuf_write_simple(struct pktbuf *pb, char type)
{
	if (!type) {
		pb->failed = true;
		return;
	}
	pktbuf_start_msg(pb, type);
	pktbuf_finish_msg(pb);
}

void pktbuf_write_auth_sasl(struct pktbuf *pb, const char *mech)
{
	pktbuf_start_msg(pb, PQMSG_AUTHENTICATION);
	pktbuf_put_u32(pb, PROTO_AUTH_SASL);
	pktbuf_put_string(pb, mech);
	pktbuf_put_u8(pb, 0); /* end of the mechanism list */
	pktbuf_finish_msg(pb);
}

void pktbuf_write_negotiate_protocol(struct pktbuf *pb, uint32_t newest_minor, int nopts,
                                     const char *const *opts)
{
	int i;

	if (nopts < 0 || nopts > PROTO_STARTUP_MAX_PARAMS || (nopts > 0 && !opts)) {
		pb->failed = true;
		return;
	}
	pktbuf_start_msg(pb, PQMSG_NEGOTIATE_PROTOCOL);
	pktbuf_put_u32(pb, newest_minor);
	pktbuf_put_u32(pb, (uint32_t)nopts);
	for (i = 0; i < nopts; i++)
		pktbuf_put_string(pb, opts[i]);
	pktbuf_finish_msg(pb);
}

void pktbuf_write_startup(struct pktbuf *pb, const char *const *keys, const char *const *values,
                          int n)
{
	int i;

	if (n < 0 || (n > 0 && (!keys || !values))) {
		pb->failed = true;
		return;
	}
	pktbuf_start_msg(pb, 0);
	pktbuf_put_u32(pb, PKTBUF_PROTO_V3);
	for (i = 0; i < n; i++) {
		/* An empty key would end the list early and shift every later pair. */
		if (!keys[i] || !keys[i][0]) {
			pb->failed = true;
			return;
		}
		pktbuf_put_string(pb, keys[i]);
		pktbuf_put_string(pb, values[i]);
	}
	pktbuf_put_u8(pb, 0);
	pktbuf_finish_msg(pb);
}

void pktbuf_write_ssl_request(struct pktbuf *pb)
{
	pktbuf_start_msg(pb, 0);
	pktbuf_put_u32(pb, PKTBUF_SSL_CODE);
	pktbuf_finish_msg(pb);
}

void pktbuf_write_password(struct pktbuf *pb, const char *pw)
{
	pktbuf_start_msg(pb, PQMSG_PASSWORD);
	pktbuf_put_string(pb, pw);
	pktbuf_finish_msg(pb);
}

void pktbuf_write_sasl_initial(struct pktbuf *pb, const char *mech, const void *data, size_t len)
{
	if (len > INT32_MAX) {
		pb->failed = true;
		return;
	}
	pktbuf_start_msg(pb, PQMSG_PASSWORD);
	pktbuf_put_string(pb, mech);
	pktbuf_put_u32(pb, (uint32_t)len);
	pktbuf_put_bytes(pb, data, len);
	pktbuf_finish_msg(pb);
}

void pktbuf_write_sasl_response(struct pktbuf *pb, const void *data, size_t len)
{
	pktbuf_start_msg(pb, PQMSG_PASSWORD);
	pktbuf_put_bytes(pb, data, len);
	pktbuf_finish_msg(pb);
}

void pktbuf_write_query(struct pktbuf *pb, const char *sql)
{
	pktbuf_start_msg(pb, PQMSG_QUERY);
	pktbuf_put_string(pb, sql);
	pktbuf_finish_msg(pb);
}

void pktbuf_write_terminate(struct pktbuf *pb)
{
	pktbuf_start_msg(pb, PQMSG_TERMINATE);
	pktbuf_finish_msg(pb);
}

void pktbuf_write_cancel(struct pktbuf *pb, uint32_t pid, uint32_t key)
{
	pktbuf_start_msg(pb, 0);
	pktbuf_put_u32(pb, PKTBUF_CANCEL_CODE);
	pktbuf_put_u32(pb, pid);
	pktbuf_put_u32(pb, key);
	pktbuf_finish_msg(pb);
}

void pktbuf_put_sql_literal(struct pktbuf *pb, const char *text)
{
	pktbuf_put_bytes(pb, "E'", 2);
	for (const char *p = text; *p; p++) {
		if (*p == '\'' || *p == '\\')
			pktbuf_put_u8(pb, (uint8_t)*p);
		pktbuf_put_u8(pb, (uint8_t)*p);
	}
	pktbuf_put_u8(pb, '\'');
}
