/*
 * hba — auth_type=hba: the auth_hba_file (PostgreSQL's pg_hba.conf format, the subset pgbouncer
 * reads) and the auth_ident_file user maps.
 *
 * An hba file is a list of rules, one a line:
 *     local      DATABASE USER          METHOD [map=NAME]
 *     host       DATABASE USER ADDRESS  METHOD [map=NAME]     (also hostssl, hostnossl)
 * DATABASE and USER are comma-separated lists of names, "quoted names" (a quoted keyword is a
 * plain name), keywords (all; sameuser and replication for DATABASE) and @file inclusions (names
 * read from a file relative to the including one). ADDRESS is an IPv4 or IPv6 address with a
 * CIDR length, an address followed by a separate netmask, or "all". METHOD is one of trust,
 * reject, md5, password, scram-sha-256, cert, peer. '#' starts a comment.
 *
 * The first rule matching the connection (its kind, address, TLS, database and user) decides;
 * no match is a rejection, as in PostgreSQL.
 *
 * Invariants: a loaded hba or ident set is immutable and owns all its strings. Loading is all or
 * nothing: any line that cannot be understood (unknown keyword, method or option, host name
 * instead of an address, a mask that does not fit the address, +group lists, an unreadable
 * @file, nesting deeper than HBA_MAX_INCLUDE_DEPTH) fails the whole load with "file:line: why",
 * so that an access rule is never silently dropped. Inputs are bounded (HBA_MAX_FILE_SIZE,
 * HBA_MAX_LINE).
 */
#ifndef SB_HBA_H
#define SB_HBA_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#define HBA_MAX_FILE_SIZE     (16 * 1024 * 1024)
#define HBA_MAX_LINE          (64 * 1024)
#define HBA_MAX_INCLUDE_DEPTH 10
#define HBA_WARN_UNUSED       __attribute__((warn_unused_result))

enum hba_method {
	HBA_TRUST,
	HBA_REJECT,
	HBA_MD5,
	HBA_PASSWORD,
	HBA_SCRAM,
	HBA_CERT,
	HBA_PEER,
};
/* The hba file's spelling: "trust", "reject", ..., "scram-sha-256". */
const char *hba_method_str(enum hba_method m);

struct hba;
struct ident;

struct hba_opts {
	/*
	 * Whether client TLS is available. Without it a hostssl or cert line could never do what it
	 * says, so it fails the load rather than leaving those clients to other lines.
	 */
	bool client_tls;
};

/* Loads path. NULL with the reason in err (never NULL on success). Caller owns the result. */
struct hba *hba_load(const char *path, const struct hba_opts *opts, char *err,
                     size_t errsize) HBA_WARN_UNUSED;
/* Same from memory; name is used in messages and @file names are relative to its directory. */
struct hba *hba_load_buffer(const char *text, size_t len, const char *name,
                            const struct hba_opts *opts, char *err, size_t errsize) HBA_WARN_UNUSED;
void hba_free(struct hba *hba);
int hba_rule_count(const struct hba *hba);

/* What is known of a connection when its method is chosen. */
struct hba_conn {
	const struct sockaddr *addr; /* AF_UNIX, AF_INET or AF_INET6 */
	bool tls;
	bool replication; /* a replication connection (matched only by the replication keyword) */
	const char *database;
	const char *user;
};

struct hba_verdict {
	enum hba_method method;
	const char *map; /* map= of the rule, or NULL; borrowed from the hba */
	int line;        /* of the matching rule, 0 when none matched */
};

/* The first matching rule's method; without a match the verdict is HBA_REJECT with line 0. */
void hba_eval(const struct hba *hba, const struct hba_conn *conn, struct hba_verdict *out);

/*
 * auth_ident_file: lines "MAPNAME SYSTEM-USER DATABASE-USER". A SYSTEM-USER starting with '/'
 * is a POSIX extended regular expression; its first parenthesised group replaces "\1" in
 * DATABASE-USER. Same loading rules as the hba file.
 */
struct ident *ident_load(const char *path, char *err, size_t errsize) HBA_WARN_UNUSED;
struct ident *ident_load_buffer(const char *text, size_t len, const char *name, char *err,
                                size_t errsize) HBA_WARN_UNUSED;
void ident_free(struct ident *id);
/* True when map allows system_user (the peer's OS user or the certificate's CN) to log in as
 * db_user. A NULL id or an unknown map allows nothing. */
bool ident_allows(const struct ident *id, const char *map, const char *system_user,
                  const char *db_user);

#endif
