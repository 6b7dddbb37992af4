/*
 * prepared — named prepared statements across pooled servers (transaction and statement mode).
 *
 * A client's Parse of a named statement is remembered under the client's name; the server sees
 * the statement under a name of our own ("SB_<id>", one per distinct query text and parameter
 * types within a pool), prepared on whichever server the client has when it needs it. Each server
 * keeps at most max_prepared_statements of them, the least recently used closed first.
 *
 * Answers must reach the client in protocol order, so every Parse and Close sent to a server is
 * recorded in a FIFO with what to do with its answer: pass it on, swallow it (a Parse or Close
 * of our own) or replace it (the client's Parse of a statement the server already had became a
 * Close of nothing, whose CloseComplete turns into the client's ParseComplete). An ErrorResponse
 * makes the server skip everything up to the next Sync: the entries of that stretch are dropped,
 * the statements they would have prepared are forgotten, and those they would have closed are
 * held again.
 *
 * A Query that is one DEALLOCATE ALL or DISCARD ALL and nothing else, outside a transaction and
 * with nothing owed, forgets the client's names only: the server (shared with other clients)
 * gets an empty query (RESET ALL for DISCARD ALL, so that the client's settings are reset as
 * the server reports them), whose answer becomes the command's CommandComplete. Sent any
 * other way, they reach the server, and its CommandComplete says the server forgot everything.
 * DEALLOCATE of one of the client's names becomes DEALLOCATE of ours.
 *
 * A module that answers some statements itself (a write to a synced table never reaches a
 * server) keeps them in the same per-client table, as "own" statements: one lookup by the
 * client's name says which statement it is, whoever answers it. Own statements are kept in every
 * pool mode, count toward the client's limit of names, and are not forgotten by DEALLOCATE ALL or
 * DISCARD ALL (which the server answers); the pooler never rewrites a message that names one.
 *
 * Invariants: a statement is freed when no client name and no server refers to it; every entry
 * of a server's FIFO corresponds to exactly one ParseComplete or CloseComplete still owed; a
 * client name is either the pooler's or an own statement, never both.
 */
#ifndef SB_PREPARED_H
#define SB_PREPARED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct conn;
struct sbuf_pkt;
struct ps_registry;
struct ps_client;
struct ps_server;

/* A client's statement that a module answers itself: its text and declared parameter types. */
struct ps_own {
	const char *sql;
	int ntypes;
	const uint32_t *types;
};

/*
 * Keeps sql (NUL-terminated) and its ntypes parameter types under the client's name ("" too) as
 * an own statement, replacing whatever that name was. False when out of memory or over the
 * client's limit of names (msg says which); the name is then unknown.
 */
bool ps_own_set(struct conn *client, const char *name, const char *sql, int ntypes,
                const uint32_t *types, const char **msg) __attribute__((warn_unused_result));
/* The client's own statement of that name, or NULL (valid until the name changes). */
const struct ps_own *ps_own_find(const struct conn *client, const char *name);
/* Forgets the client's own statement of that name, if it is one. */
void ps_own_drop(struct conn *client, const char *name);
/* How many own statements the client has. */
int ps_own_count(const struct conn *client);

/* The per-pool table of distinct statements. NULL when out of memory. */
struct ps_registry *ps_registry_new(void);
/* Frees the table; every client and server state must have been released before. */
void ps_registry_free(struct ps_registry *reg);

/* Releases a connection's statement state (client names or server set); c->pool must live. */
void ps_conn_release(struct conn *c);

enum ps_result {
	PS_PASS,     /* relay the packet unchanged */
	PS_CONSUMED, /* replaced by what was queued to the server */
	PS_FLUSH,    /* relay what is pending first, then offer the packet again */
	PS_FAIL,     /* out of memory or a limit: the client must be closed (msg says why) */
};
const char *ps_result_str(enum ps_result r);

/* Whether a client packet of this type needs ps_client_packet() (and complete packets). */
bool ps_client_wants(uint8_t type);
/*
 * A client packet (Parse, Bind, Describe, Close, Sync, Query) for the linked server, in a pool
 * whose mode tracks prepared statements; complete, except that a long Query may show only its
 * first 64 bytes or more. max is max_prepared_statements.
 */
enum ps_result ps_client_packet(struct conn *client, struct conn *server,
                                const struct sbuf_pkt *pkt, int max, const char **msg);

/* Whether a server answer of this type needs ps_server_packet() (and complete packets). */
bool ps_server_wants(const struct conn *server, uint8_t type);
/* Whether ps_server_wants() may say yes to this type, for some server. */
bool ps_server_may_want(uint8_t type);
/* A complete server answer; PS_CONSUMED means drop it (something may have been queued). */
enum ps_result ps_server_packet(struct conn *server, const struct sbuf_pkt *pkt);
/* The server's prepared statements are gone (DISCARD ALL, reset query). */
void ps_server_forget_all(struct conn *server);
/* The server is going back to the pool: nothing may still be owed. */
void ps_server_released(struct conn *server);

#endif
