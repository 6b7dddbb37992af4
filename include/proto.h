/*
 * proto: bounds-checked readers for PostgreSQL protocol 3 messages.
 *
 * Every byte handed to these functions comes from the network and every length in it is hostile.
 * The readers never look outside [p, p + len): a read that would go past the end fails and marks
 * the reader bad, and all later reads fail too. Parsers end with pr_done() so that trailing
 * garbage is an error, not ignored.
 *
 * Strings returned by the parsers point into the caller's packet (they are NUL-terminated there);
 * they live as long as the packet bytes do. Nothing here allocates.
 */
#ifndef SB_PROTO_H
#define SB_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PROTO_WARN_UNUSED __attribute__((warn_unused_result))

/* PostgreSQL's own limit for a startup packet (MAX_STARTUP_PACKET_LENGTH). */
#define PROTO_STARTUP_MAX_LEN    10000u
#define PROTO_STARTUP_MAX_PARAMS 64

#define PROTO_VERSION(major, minor) (((uint32_t)(major) << 16) | (uint32_t)(minor))
#define PROTO_VERSION_MAJOR(v)      ((v) >> 16)
#define PROTO_VERSION_MINOR(v)      ((v)&0xffffu)
#define PROTO_CANCEL_CODE           PROTO_VERSION(1234, 5678)
#define PROTO_SSL_CODE              PROTO_VERSION(1234, 5679)
#define PROTO_GSSENC_CODE           PROTO_VERSION(1234, 5680)

/*
 * Message types (a message's first byte), named as PostgreSQL's protocol.h names them. Some
 * bytes mean one message from the client and another from the server ('D', 'E', 'C', 'S').
 */
/* from the client */
#define PQMSG_BIND          'B'
#define PQMSG_CLOSE         'C'
#define PQMSG_DESCRIBE      'D'
#define PQMSG_EXECUTE       'E'
#define PQMSG_FLUSH         'H'
#define PQMSG_PARSE         'P'
#define PQMSG_QUERY         'Q'
#define PQMSG_SYNC          'S'
#define PQMSG_TERMINATE     'X'
#define PQMSG_FUNCTION_CALL 'F'
#define PQMSG_PASSWORD      'p' /* PasswordMessage, SASLInitialResponse, SASLResponse */
#define PQMSG_COPY_DONE     'c'
#define PQMSG_COPY_FAIL     'f'
/* the object a Describe or Close names */
#define PQMSG_TARGET_PORTAL    'P'
#define PQMSG_TARGET_STATEMENT 'S'
/* from the server */
#define PQMSG_PARSE_COMPLETE        '1'
#define PQMSG_BIND_COMPLETE         '2'
#define PQMSG_CLOSE_COMPLETE        '3'
#define PQMSG_COMMAND_COMPLETE      'C'
#define PQMSG_DATA_ROW              'D'
#define PQMSG_ERROR_RESPONSE        'E'
#define PQMSG_NO_DATA               'n'
#define PQMSG_NOTICE_RESPONSE       'N'
#define PQMSG_PARAMETER_DESCRIPTION 't'
#define PQMSG_READY_FOR_QUERY       'Z'
#define PQMSG_ROW_DESCRIPTION       'T'
#define PQMSG_AUTHENTICATION        'R'
#define PQMSG_PARAMETER_STATUS      'S'
#define PQMSG_BACKEND_KEY_DATA      'K'
#define PQMSG_EMPTY_QUERY_RESPONSE  'I'
#define PQMSG_NOTIFICATION_RESPONSE 'A'
#define PQMSG_NEGOTIATE_PROTOCOL    'v'
#define PQMSG_PORTAL_SUSPENDED      's'
#define PQMSG_COPY_IN_RESPONSE      'G'

/* Authentication request codes ('R' messages). */
#define PROTO_AUTH_OK            0u
#define PROTO_AUTH_CLEARTEXT     3u
#define PROTO_AUTH_MD5           5u
#define PROTO_AUTH_SASL          10u
#define PROTO_AUTH_SASL_CONTINUE 11u
#define PROTO_AUTH_SASL_FINAL    12u

struct pkt_reader {
	const uint8_t *p;
	size_t len, pos;
	bool bad;
};

void pr_init(struct pkt_reader *r, const uint8_t *p, size_t len);
/* Each returns false and marks r bad when the value does not fit in what is left. */
bool pr_u8(struct pkt_reader *r, uint8_t *out) PROTO_WARN_UNUSED;
bool pr_u16(struct pkt_reader *r, uint16_t *out) PROTO_WARN_UNUSED;
bool pr_i16(struct pkt_reader *r, int16_t *out) PROTO_WARN_UNUSED;
bool pr_u32(struct pkt_reader *r, uint32_t *out) PROTO_WARN_UNUSED;
bool pr_i32(struct pkt_reader *r, int32_t *out) PROTO_WARN_UNUSED;
/* n bytes in place. */
bool pr_bytes(struct pkt_reader *r, size_t n, const uint8_t **out) PROTO_WARN_UNUSED;
/* A NUL-terminated string whose NUL lies inside the packet. */
bool pr_string(struct pkt_reader *r, const char **out) PROTO_WARN_UNUSED;
/* Bytes not yet read. */
size_t pr_remaining(const struct pkt_reader *r);
/* True when every byte was consumed and no read failed. */
bool pr_done(const struct pkt_reader *r) PROTO_WARN_UNUSED;

enum pkt_status { PKT_OK, PKT_NEED_MORE, PKT_BAD };
const char *pkt_status_str(enum pkt_status s);

struct pkt_hdr {
	uint8_t type;
	uint32_t len; /* whole packet, type byte included */
};

/*
 * Header of a regular message: type byte and int32 length (which counts itself).
 * avail: bytes at data. max_len: largest whole packet (type byte included) the caller accepts.
 * Returns PKT_NEED_MORE when fewer than 5 bytes are there, PKT_BAD for a length below 4 or a
 * packet above max_len, else PKT_OK with *out set. The body is data[5 .. out->len); the caller
 * checks avail >= out->len before using it.
 */
static inline PROTO_WARN_UNUSED enum pkt_status proto_read_header(const uint8_t *data, size_t avail,
                                                                  size_t max_len,
                                                                  struct pkt_hdr *out)
{
	uint32_t len;

	/* inline: every relayed message passes here, and the call cost as much as the reading */
	if (avail < 5)
		return PKT_NEED_MORE;
	len = ((uint32_t)data[1] << 24) | ((uint32_t)data[2] << 16) | ((uint32_t)data[3] << 8) |
	      (uint32_t)data[4];
	/* len counts itself but not the type byte; above INT32_MAX it is negative on the wire. */
	if (len < 4 || len > INT32_MAX || (size_t)len >= max_len)
		return PKT_BAD;
	out->type = data[0];
	out->len = len + 1;
	return PKT_OK;
}

/*
 * Header of a startup-phase packet (no type byte): int32 length counting itself.
 * *len is the whole packet; the body (version code onwards) is data[4 .. *len).
 * PKT_BAD for a length below 8 or above min(max_len, PROTO_STARTUP_MAX_LEN).
 */
enum pkt_status proto_read_startup_header(const uint8_t *data, size_t avail, size_t max_len,
                                          uint32_t *len) PROTO_WARN_UNUSED;

enum startup_kind {
	STARTUP_NORMAL,
	STARTUP_SSL,
	STARTUP_GSSENC,
	STARTUP_CANCEL,
	STARTUP_BAD_VERSION,
	STARTUP_MALFORMED,
};
const char *startup_kind_str(enum startup_kind k);

struct startup_param {
	const char *key, *value; /* point into the packet */
};

struct startup_info {
	enum startup_kind kind;
	uint32_t version; /* as sent; for STARTUP_NORMAL the major is 3, the minor may be above 0 */
	int nparams;
	struct startup_param params[PROTO_STARTUP_MAX_PARAMS];
	uint32_t cancel_pid, cancel_key;
};

/*
 * Parses a startup packet body (the bytes after the length field).
 * STARTUP_NORMAL: protocol 3.x with its key/value pairs (keys starting "_pq_." are kept; the
 * caller decides about protocol extensions). Rejected as STARTUP_MALFORMED: more than 64 pairs, a
 * missing final NUL, a key without a value, bytes after the final NUL, "user" or "database" given
 * twice, an SSL/GSSENC/cancel request of the wrong size. Other major versions: STARTUP_BAD_VERSION.
 * out->kind is always set to the returned value.
 */
enum startup_kind proto_parse_startup(const uint8_t *body, size_t len, struct startup_info *out);

/*
 * Reads the "options" startup parameter as PostgreSQL does: split into words at runs of white
 * space, a backslash making the next character literal (pg_split_opts), then each word read as
 * a server switch, of which "-c name=value", "-cname=value" and "--name=value" are accepted
 * (process_postgres_switches; '-' in a name reads as '_'). Calls set(arg, name, value) for each
 * setting in order; set returning false stops the parse (false is returned, err untouched).
 * Anything else (another switch, a word that is not a switch, a setting without '=') returns
 * false with the reason in err. Needs no allocation: opts is at most a startup packet long.
 */
bool proto_parse_options(const char *opts,
                         bool (*set)(void *arg, const char *name, const char *value), void *arg,
                         char *err, size_t errsize) PROTO_WARN_UNUSED;

/* Value of key in a parsed startup packet, or NULL. */
const char *proto_startup_get(const struct startup_info *info, const char *key);

/* Fields of an ErrorResponse / NoticeResponse; NULL when absent. */
struct pg_error {
	const char *severity, *sqlstate, *message, *detail, *hint, *position, *where, *schema,
	        *table, *column, *constraint, *datatype;
};

/*
 * Body of 'E' or 'N' (after the header). Unknown field codes are skipped, as libpq does.
 * severity is the S field, or V if S is missing. False on truncation or trailing bytes.
 */
bool proto_parse_error(const uint8_t *body, size_t len, struct pg_error *out) PROTO_WARN_UNUSED;

/* ParameterStatus 'S': name and value. */
bool proto_parse_param_status(const uint8_t *body, size_t len, const char **name,
                              const char **value) PROTO_WARN_UNUSED;

/*
 * Authentication request 'R': code and the bytes after it (*rest points into the body).
 * Checks the size the code implies: 0 for OK/cleartext, 4 (the salt) for MD5, a NUL-terminated
 * mechanism list for SASL. Unknown codes are returned as they are.
 */
bool proto_parse_auth(const uint8_t *body, size_t len, uint32_t *code, const uint8_t **rest,
                      size_t *rest_len) PROTO_WARN_UNUSED;

/* True when the AuthenticationSASL mechanism list (the rest of proto_parse_auth) names mech. */
bool proto_sasl_has_mech(const uint8_t *list, size_t len, const char *mech) PROTO_WARN_UNUSED;

/*
 * SASLInitialResponse body (client 'p' during SASL): mechanism name and the client-first data
 * (*data points into the body; a length of -1 on the wire gives *data_len 0).
 */
bool proto_parse_sasl_initial(const uint8_t *body, size_t len, const char **mech,
                              const uint8_t **data, size_t *data_len) PROTO_WARN_UNUSED;

/*
 * PasswordMessage body: the password string, which must fill the body exactly.
 */
bool proto_parse_password(const uint8_t *body, size_t len, const char **pw) PROTO_WARN_UNUSED;

/* BackendKeyData 'K'. */
bool proto_parse_backend_key(const uint8_t *body, size_t len, uint32_t *pid,
                             uint32_t *key) PROTO_WARN_UNUSED;

/* ReadyForQuery 'Z': 'I', 'T' or 'E'. */
bool proto_parse_ready(const uint8_t *body, size_t len, char *status) PROTO_WARN_UNUSED;

/* CommandComplete 'C': the tag. */
bool proto_parse_command_complete(const uint8_t *body, size_t len,
                                  const char **tag) PROTO_WARN_UNUSED;

/* Query 'Q': the SQL text and its length (up to the NUL, which must end the body). */
bool proto_parse_query(const uint8_t *body, size_t len, const char **sql,
                       size_t *sql_len) PROTO_WARN_UNUSED;

/*
 * Parse 'P': statement name, SQL text and length, and the number of parameter types declared.
 * The whole body is checked (the declared types must fill it exactly).
 */
bool proto_parse_parse(const uint8_t *body, size_t len, const char **stmt, const char **sql,
                       size_t *sql_len, uint16_t *nparams) PROTO_WARN_UNUSED;

/*
 * Names at the start of an extended-protocol message, read without walking the rest:
 * 'P' Parse: *stmt; 'B' Bind: *portal and *stmt; 'C' Close / 'D' Describe: *stmt or *portal
 * depending on the 'S'/'P' byte; 'E' Execute: *portal. Names not carried are set to NULL.
 * False for other types or when the names do not fit in the body.
 */
bool proto_parse_msg_names(uint8_t type, const uint8_t *body, size_t len, const char **stmt,
                           const char **portal) PROTO_WARN_UNUSED;

/*
 * Whether text[0..len) holds one of needles (NULL-terminated, lower case; ASCII case ignored in
 * the text), in one pass: a needle is tried only where the byte is its first. For the searches
 * of statement texts that run on every query (a plain pooler's module watch) and on streamed
 * statements.
 */
bool proto_text_has_any_ci(const void *text, size_t len, const char *const *needles);

#endif
