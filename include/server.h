/*
 * server — the server side: connect (DNS on the loop, non-blocking connect), log in (trust,
 * cleartext, md5, SCRAM-SHA-256), watch ReadyForQuery and ParameterStatus while relaying to the
 * linked client, reset on release. In transaction and statement mode the server goes back to the
 * pool at the ReadyForQuery that ends a transaction ('I', nothing more owed); statement mode
 * closes a server whose client opened a transaction block. A server with a cancel request in
 * flight is held back from other clients until PostgreSQL has taken the cancel.
 */
#ifndef SB_SERVER_H
#define SB_SERVER_H

#include <stdbool.h>
#include <stdint.h>

struct bouncer;
struct pool;
struct conn;

/* Starts a new server connection for pool (state SV_LOGIN). False if it could not start. */
bool server_launch(struct pool *pool);
/* Closes the server and, if linked, tells its client. */
void server_close(struct conn *server, const char *reason);
/* Links server to client: syncs tracked parameters, then resumes the client's relay. */
void server_link(struct conn *server, struct conn *client);
/* Unlinked server back to the pool: reset query if configured, then idle. */
void server_release(struct conn *server);
/* True when the server has answered everything it was sent (no ReadyForQuery owed). */
bool server_is_ready(const struct conn *server);
/* A client message of this type was relayed to server: the batch's answers owed. */
void server_batch_sent(struct conn *server, uint8_t type);
/*
 * True when the server owes answers to the batch the client is sending (no error ended it):
 * a Flush makes it send them.
 */
bool server_batch_owes(const struct conn *server);
/*
 * Sends a CancelRequest for server's backend over a new connection. Until PostgreSQL has
 * answered it (or cancel_wait_timeout passed), the server is not handed to another client, so a
 * late cancel never hits someone else's query.
 */
void server_send_cancel(struct conn *server);
/* Drops every cancel request still in flight (at shutdown, before the loop is freed). */
void server_cancels_free(struct bouncer *b);
/* Runs server_check_query on an idle server (SV_TESTED); it returns to the pool after. */
void server_check(struct conn *server);

/*
 * A DISCARD ALL of ours has run on the server: no prepared statement and no setting it does
 * not report is left, and no client's session state.
 */
void server_discarded(struct conn *server);
/* server_connect_timeout passed while connecting or logging in. */
void server_login_timeout(struct conn *server);

#endif
