/*
 * auth — client authentication as pgbouncer does it: the user's secret from the auth_file or
 * from auth_query, the method from auth_type or the hba file, the exchange (cleartext, md5,
 * SCRAM-SHA-256, trust, peer), and what a login leaves behind for the pool's server logins (an
 * auth_query secret, the ClientKey/ServerKey recovered from a SCRAM proof).
 *
 * Anti-enumeration: an unknown user (nobody in the auth_file, no row from auth_query) gets a
 * mock secret and goes through the whole exchange of its method, failing like a wrong password;
 * an unknown database is only reported after a successful login. No pool is made for a login
 * that has not succeeded.
 *
 * auth_query runs as in pgbouncer, on a server of the auth pool: the auth database's servers
 * logged in as auth_user by the normal server login (server.c), so auth_user's secret in the
 * auth_file may be plain text, an md5 hash, or a SCRAM secret (usable once a client has logged
 * in as auth_user with SCRAM, whose proof gives the keys). A login waits on the pool's
 * auth_waiting list for a server, the query is sent as a parameterised statement and nothing
 * else (no SET), and the server goes back to the pool at its ReadyForQuery. A server login that
 * fails fails the logins waiting on the pool with its reason; a server lost mid-query fails its
 * login.
 *
 * Invariants: a client in CL_LOGIN owns its struct auth_state (conn->auth) until it is freed
 * with the connection; the hba and ident sets in use are replaced whole at RELOAD, never
 * modified, which is what lets every worker share the ones a single read made. Secrets are
 * never logged.
 */
#ifndef SB_AUTH_H
#define SB_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sbuf.h"

/*
 * The longest password or SASL message (its length field) before authentication: PostgreSQL's
 * PG_MAX_AUTH_TOKEN_LENGTH. Nothing an unauthenticated client sends is held beyond this.
 */
#define AUTH_MSG_MAX 65535u

struct bouncer;
struct config;
struct conn;
struct pool;
struct auth_files;

/*
 * Reads the files cfg names for authentication (auth_hba_file when auth_type=hba,
 * auth_ident_file when set). NULL with the reason in err when one is missing or unreadable or
 * holds a line that cannot be understood; the caller then refuses to start or to RELOAD.
 */
struct auth_files *auth_files_load(const struct config *cfg, char *err, size_t errsize)
        __attribute__((warn_unused_result));
/*
 * Another holder of files (immutable, as the hba and ident sets are: the workers share what one
 * of them loaded); returns files. Each holder lets go with auth_files_free(), which frees them
 * once the last one has.
 */
struct auth_files *auth_files_ref(struct auth_files *files);
void auth_files_free(struct auth_files *files);
/* Makes files (owned from now on) the ones in use; frees the previous ones. */
void auth_use_files(struct bouncer *b, struct auth_files *files);
/* b uses the files that from uses (at start, before b's thread runs); false when out of memory. */
bool auth_share_files(struct bouncer *b, struct bouncer *from) __attribute__((warn_unused_result));
/* Whether the auth files depend on setting key (auth_type, auth_hba_file, auth_ident_file). */
bool auth_is_files_key(const char *key);
/* Frees the files and wipes the SCRAM key cache (at exit). */
void auth_shutdown(struct bouncer *b);

/*
 * The SCRAM keys derived from plain passwords (scram.h), for client logins and the server
 * logins of b's pools; NULL when there is no memory for it (keys are then derived each time).
 */
struct scram_cache *auth_scram_cache(struct bouncer *b);

/* The startup packet of c was accepted (user and dbname set): start authenticating. */
enum sbuf_action auth_start(struct conn *c);
/* A packet from c while it is in CL_LOGIN after the startup packet. */
enum sbuf_action auth_packet(struct conn *c, const struct sbuf_pkt *pkt);
/* Releases c's authentication state (from conn_free_retired). */
void auth_conn_free(struct conn *c);

/*
 * The secret the pool logs its servers in with: the [databases] password of a forced user, the
 * auth_file entry of the server user, or what auth_query returned at a client's login. "" when
 * none is known. Never logged.
 */
const char *auth_pool_secret(const struct pool *pool);
/*
 * ClientKey and ServerKey learnt from a client's SCRAM login against secret, for a server login
 * with that same secret. False when none are known for it.
 */
bool auth_pool_scram_keys(const struct pool *pool, const char *secret, uint8_t client_key[32],
                          uint8_t server_key[32]) __attribute__((warn_unused_result));
/* Frees what logins left on the pool (from pool_free). */
void auth_pool_free(struct pool *pool);

/*
 * server, of pool, is logged in (or reset) and unlinked: when a login waits for auth_query in
 * pool, the query is started on it (server taken, SV_ACTIVE) and true is returned.
 */
bool auth_pool_server_ready(struct pool *pool, struct conn *server);
/*
 * The logins waiting for auth_query in pool fail with message: a server login of pool failed
 * (pgbouncer's kill_pool_logins), or the pool is going (its database was removed).
 */
void auth_pool_fail_waiting(struct pool *pool, const char *sqlstate, const char *message);
/* A packet from a server running auth_query (server->auth_query set, logged in). */
enum sbuf_action auth_server_packet(struct conn *server, const struct sbuf_pkt *pkt);
/* server is closing while running auth_query (from server_close): its login fails. */
void auth_server_lost(struct conn *server, const char *reason);

#endif
