/*
 * client — the client side: startup, authentication against the auth file, the welcome, and the
 * client→server relay with the query hook in front of it.
 */
#ifndef SB_CLIENT_H
#define SB_CLIENT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

struct bouncer;
struct conn;
struct pktbuf;

/* Takes ownership of fd, a freshly accepted non-blocking socket. */
void client_accept(struct bouncer *b, int fd, const struct sockaddr *addr, socklen_t addrlen,
                   bool is_unix);
/* Sends the welcome (AuthenticationOk, parameters, BackendKeyData, ReadyForQuery). */
void client_send_welcome(struct conn *client);
/* Sends a FATAL ErrorResponse and closes. */
void client_fatal(struct conn *client, const char *sqlstate, const char *msg);
/* Sends an ERROR ErrorResponse (the connection stays). */
void client_send_error(struct conn *client, const char *sqlstate, const char *msg);
/* Closes the client and releases or closes its server. */
void client_close(struct conn *client, const char *reason);
/* The pool linked a server; relay resumes. */
void client_server_linked(struct conn *client);
/* Restarts a client's relay that the query hook paused. */
void client_resume(struct conn *client);
/*
 * True when the client has no server or its server has answered everything it was sent: every
 * ReadyForQuery, and the answers to the batch in progress (up to an error). A hook returns
 * WAIT_IDLE only when this is false.
 */
bool client_server_idle(const struct conn *client);
/* True when the client has sent its server extended-protocol messages since its last Sync. */
bool client_server_in_batch(const struct conn *client);
/* True when the client's server reported an error in that batch: it skips to the Sync. */
bool client_server_batch_failed(const struct conn *client);
/*
 * Makes the client's server fail the batch in progress, as an error of the client's would: its
 * ordinary statements roll back at the Sync (a transaction block aborts). The client has been
 * told its error already: the server's own is dropped. Only when the server has answered all
 * of the batch, without error, and nothing of the client's waits to be relayed; false (nothing
 * sent) otherwise.
 */
bool client_abort_server_batch(struct conn *client) __attribute__((warn_unused_result));
/*
 * Counts the client's server in the batch in progress although nothing was relayed to it yet
 * (a transaction block that a batch's error must abort). False without a linked server that
 * owes no ReadyForQuery.
 */
bool client_server_join_batch(struct conn *client) __attribute__((warn_unused_result));
/*
 * Restarts a client's relay that the query hook paused, now if client_server_idle(), else once
 * its server has answered everything and every byte of it was relayed. Not from inside a
 * packet callback of the client or its server.
 */
void client_resume_when_idle(struct conn *client);
/* The client's transaction status as its next ReadyForQuery would say ('I', 'T' or 'E'). */
char client_txn_status(const struct conn *client);
/*
 * Queues pb (whole messages) to the client. False when its buffer cannot take them: the caller
 * closes the client.
 */
bool client_queue(struct conn *client, const struct pktbuf *pb) __attribute__((warn_unused_result));
/*
 * Sends query (one built Query message) to the client's server as though the client had sent
 * it: the server owes one more ReadyForQuery, and its answer reaches the client through the
 * relay. For an error that must abort the client's transaction block as PostgreSQL would. Only
 * when the client is in a transaction block on a linked server that owes nothing else; false
 * (nothing queued) otherwise.
 */
bool client_query_through_server(struct conn *client, const struct pktbuf *query)
        __attribute__((warn_unused_result));
/*
 * Sends query (whole Query messages, n of them) to the client's linked server as though the
 * client had sent them: the server owes n more ReadyForQuery messages, and their answers reach
 * the client through the relay (or the hook's server_answer). False (nothing queued) when the
 * client has no logged-in server or its buffer cannot take them.
 */
bool client_query_on_server(struct conn *client, const struct pktbuf *query, int n)
        __attribute__((warn_unused_result));
/*
 * With several workers, after a RELOAD: closes (FATAL 57P01, so that pools reconnect) this
 * worker's clients of a database that another worker must serve now (modules_home_worker():
 * it got synced tables). New log-ins of such a database are handed to that worker.
 */
void client_close_served_elsewhere(struct bouncer *b);
/* Handles a CancelRequest from a new connection. */
void client_find_by_cancel_key(struct bouncer *b, uint32_t pid, uint32_t key, struct conn **out);

#endif
