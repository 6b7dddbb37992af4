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
/* True when the client has no server or its server has answered everything it was sent. A hook
 * returns WAIT_IDLE only when this is false. */
bool client_server_idle(const struct conn *client);
/* The client's transaction status as its next ReadyForQuery would say ('I', 'T' or 'E'). */
char client_txn_status(const struct conn *client);
/* Handles a CancelRequest from a new connection. */
void client_find_by_cancel_key(struct bouncer *b, uint32_t pid, uint32_t key, struct conn **out);

#endif
