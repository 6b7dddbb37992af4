/*
 * pktbuf: builder for PostgreSQL protocol messages.
 *
 * A pktbuf is a byte buffer with a hard maximum size. Appending never writes past that maximum:
 * an append that does not fit (or an allocation that fails) marks the buffer failed, and from
 * then on every call is a no-op. Callers build a whole reply, then check pktbuf_failed() once.
 *
 * Invariants: len <= cap <= max; data[0..len) holds the bytes built so far; a failed buffer stays
 * failed until pktbuf_reset(). Messages are framed with pktbuf_start_msg()/pktbuf_finish_msg();
 * they do not nest.
 */
#ifndef SB_PKTBUF_H
#define SB_PKTBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct pg_error;

struct pktbuf {
	uint8_t *data;
	size_t len, cap, max;
	size_t msg_start; /* offset of the open message's length field, PKTBUF_NO_MSG if none */
	bool failed, fixed;
};

#define PKTBUF_NO_MSG SIZE_MAX

/* Protocol 3.0 and the special request codes of the startup packet. */
#define PKTBUF_PROTO_V3    196608u
#define PKTBUF_CANCEL_CODE 80877102u
#define PKTBUF_SSL_CODE    80877103u
#define PKTBUF_GSSENC_CODE 80877104u

/* Heap buffer that grows on demand up to max bytes. Nothing is allocated until the first append. */
void pktbuf_init(struct pktbuf *pb, size_t max);

/* Buffer over caller memory (mem[0..size)); the caller owns mem, which must outlive pb. */
void pktbuf_init_fixed(struct pktbuf *pb, uint8_t *mem, size_t size);

/* Releases heap memory (not caller memory of a fixed buffer); pb may be initialised again. */
void pktbuf_free(struct pktbuf *pb);

/* Empties the buffer and clears the failure, keeping the memory. */
void pktbuf_reset(struct pktbuf *pb);

/* True when some append since init/reset did not fit or could not allocate. */
bool pktbuf_failed(const struct pktbuf *pb);

/*
 * Opens a message: writes the type byte (unless type is 0, as for startup and cancel packets)
 * and a placeholder length. pktbuf_finish_msg() patches the length. Opening a message while one
 * is open fails the buffer.
 */
void pktbuf_start_msg(struct pktbuf *pb, char type);
void pktbuf_finish_msg(struct pktbuf *pb);

/* Raw appends; integers in network byte order. put_string writes s with its NUL (NULL fails). */
void pktbuf_put_u8(struct pktbuf *pb, uint8_t v);
void pktbuf_put_u16(struct pktbuf *pb, uint16_t v);
void pktbuf_put_u32(struct pktbuf *pb, uint32_t v);
void pktbuf_put_bytes(struct pktbuf *pb, const void *p, size_t n);
void pktbuf_put_string(struct pktbuf *pb, const char *s);
/* Appends text as an SQL E'' literal (quotes and backslashes doubled), without a NUL. */
void pktbuf_put_sql_literal(struct pktbuf *pb, const char *text);

/*
 * Whole messages sent as a backend (to clients). Strings are copied; none is kept.
 * write_error: severity "ERROR"/"FATAL"/..., sqlstate five characters; detail and hint may be NULL.
 * write_error_fields: every non-NULL field of e (severity defaults to ERROR, sqlstate to XX000,
 * message to ""). write_notice: severity NOTICE.
 */
void pktbuf_write_error(struct pktbuf *pb, const char *severity, const char *sqlstate,
                        const char *message, const char *detail, const char *hint);
void pktbuf_write_error_fields(struct pktbuf *pb, const struct pg_error *e);
void pktbuf_write_notice(struct pktbuf *pb, const char *sqlstate, const char *message);
void pktbuf_write_ready(struct pktbuf *pb, char txn_status);
/* 'R' with the request code and len bytes of extra data (extra may be NULL when len is 0). */
void pktbuf_write_auth(struct pktbuf *pb, uint32_t code, const void *extra, size_t len);
void pktbuf_write_parameter_status(struct pktbuf *pb, const char *name, const char *value);
void pktbuf_write_backend_key(struct pktbuf *pb, uint32_t pid, uint32_t key);
/* Text-format RowDescription; ncols 0..1664 (PostgreSQL's column limit), else the buffer fails. */
void pktbuf_write_row_description(struct pktbuf *pb, int ncols, const char *const *names,
                                  const uint32_t *type_oids);
/* DataRow; values[i] NULL is SQL NULL. */
void pktbuf_write_data_row(struct pktbuf *pb, int ncols, const char *const *values);
void pktbuf_write_command_complete(struct pktbuf *pb, const char *tag);
void pktbuf_write_empty_query(struct pktbuf *pb);
/* A message with no body: '1' ParseComplete, '2' BindComplete, '3' CloseComplete, 'n' NoData,
 * 's' PortalSuspended, 'I' EmptyQueryResponse; frontend 'S' Sync, 'H' Flush, 'X' Terminate. */
void pktbuf_write_simple(struct pktbuf *pb, char type);
/* AuthenticationSASL offering the one mechanism mech (e.g. "SCRAM-SHA-256"). */
void pktbuf_write_auth_sasl(struct pktbuf *pb, const char *mech);
/*
 * NegotiateProtocolVersion 'v': the newest minor version we speak for the client's major, and the
 * protocol options ("_pq_.*" startup keys) we did not recognise. nopts 0..64.
 */
void pktbuf_write_negotiate_protocol(struct pktbuf *pb, uint32_t newest_minor, int nopts,
                                     const char *const *opts);

/* Frontend messages (the pooler talking to PostgreSQL). */
/* StartupMessage 3.0 with n key/value pairs. */
void pktbuf_write_startup(struct pktbuf *pb, const char *const *keys, const char *const *values,
                          int n);
void pktbuf_write_ssl_request(struct pktbuf *pb);
void pktbuf_write_password(struct pktbuf *pb, const char *pw);
void pktbuf_write_sasl_initial(struct pktbuf *pb, const char *mech, const void *data, size_t len);
void pktbuf_write_sasl_response(struct pktbuf *pb, const void *data, size_t len);
void pktbuf_write_query(struct pktbuf *pb, const char *sql);
void pktbuf_write_terminate(struct pktbuf *pb);
void pktbuf_write_cancel(struct pktbuf *pb, uint32_t pid, uint32_t key);

#endif
