/*
 * pgc — one asynchronous libpq connection driven by the process's libevent loop, for the control
 * plane (installing the guard triggers, reading table catalogs, the mutation pipeline's own
 * statements, journal replay). Client traffic never goes through here.
 *
 * Invariants:
 * - Nothing blocks: the connection is made with PQconnectStart/PQconnectPoll, queries are sent
 *   in non-blocking mode and flushed on write events, answers are read on read events.
 * - Every callback runs later, from the loop, never from inside pgc_connect() or pgc_query().
 * - The ready callback runs exactly once. Each query's callback runs exactly once, in the order
 *   the queries were queued, unless pgc_close() cancels it first.
 * - Once the connection broke (or never came up) it stays broken: every query still queued gets
 *   its callback with res NULL and the reason, and pgc_query() refuses new ones.
 * - COPY is not supported: a statement that starts one breaks the connection.
 * - One exception to "nothing blocks", from libpq itself: a host name in conninfo is resolved
 *   with a blocking getaddrinfo() inside pgc_connect(). IP addresses and Unix socket
 *   directories do not block; callers that know the address pass it as hostaddr=.
 */
#ifndef SB_PGC_H
#define SB_PGC_H

#include <stdbool.h>
#include <stdint.h>
#include <libpq-fe.h>

#include "module.h" /* struct module_conn_info */

struct event_base;
struct pgc;

/* Connect outcome: error NULL = connected, else a one-line reason (valid during the call). */
typedef void (*pgc_ready_cb)(void *arg, struct pgc *pc, const char *error);

/*
 * One statement's outcome. res: the statement's last PGresult, with an OK or an error status
 * (PQresultStatus / PQresultErrorField tell); owned by the pgc and cleared after the callback
 * returns unless the callback takes it with pgc_steal_result(). res NULL: the connection broke
 * (or could not be made) and error says why (valid during the call); the statement's effect is
 * unknown.
 */
typedef void (*pgc_result_cb)(void *arg, struct pgc *pc, PGresult *res, const char *error);

/*
 * Starts connecting to conninfo (a libpq connection string or URI; its connect_timeout bounds
 * the whole connection attempt). cb runs exactly once, later, from the loop. The returned pgc is
 * the caller's, to release with pgc_close() (also after a failed connect). Queries may be queued
 * at once: they run when the connection is up, or fail with it.
 * Returns NULL only when out of memory; cb is then never called.
 */
struct pgc *pgc_connect(struct event_base *base, const char *conninfo, pgc_ready_cb cb, void *arg);

/*
 * Queues one statement. sql is copied, and so are the parameters: nparams values (NULL = SQL
 * NULL) with their type oids (types may be NULL: the server infers them), lengths (needed only
 * for binary parameters; lengths may be NULL when all are text) and formats (0 text, 1 binary;
 * NULL = all text). result_format: 0 text, 1 binary. With nparams 0, result_format 0 and no
 * types, the text goes through the simple query protocol and may hold several statements
 * separated by semicolons; cb then gets the last statement's result (or the first error).
 * Statements run one after another in queue order; this one is sent once every statement
 * before it is answered.
 * Returns false, without queueing, when out of memory, nparams is out of range, or the
 * connection is broken or closed.
 */
bool pgc_query(struct pgc *pc, const char *sql, int nparams, const Oid *types,
               const char *const *values, const int *lengths, const int *formats, int result_format,
               pgc_result_cb cb, void *arg) __attribute__((warn_unused_result));

/*
 * Queues one statement of a flight, sent in pipeline mode: it goes without waiting for the
 * answers to the statements queued before it, and so do the ones queued after it, so that a
 * flight of statements costs one round trip. A Sync ends the flight after a statement queued
 * with sync (and after the last pipelined statement queued when the loop next runs, so a flight
 * queued in one go always ends). Within a flight an error skips the statements after it: their
 * callbacks get a PGRES_PIPELINE_ABORTED result; the next flight runs (in a failed transaction,
 * its statements fail with 25P02, as separate queries would). sql is one statement (the
 * extended protocol takes no more). Same parameters, rules and return value as pgc_query();
 * a pgc_query() queued after it waits for every answer before it.
 */
bool pgc_send(struct pgc *pc, const char *sql, int nparams, const Oid *types,
              const char *const *values, const int *lengths, const int *formats, int result_format,
              bool sync, pgc_result_cb cb, void *arg) __attribute__((warn_unused_result));

/*
 * As pgc_send(), for a statement the caller sends again and again under the same name (name
 * non-empty, and always with the same sql and number of parameters, all in text): the first
 * time on this connection a Parse of it under that name goes in the same flight before it, the
 * later times only its Bind and Execute, so that the server parses and plans it once per
 * connection. A Parse that does not succeed (an error, or skipped after an error before it in
 * its flight) is forgotten when its answer arrives, and the next use queued after that sends it
 * again (a use queued before that answer counts on the Parse and fails with it: queue a name's
 * next use once the flight that prepared it was answered, as flights of one write are).
 */
bool pgc_send_named(struct pgc *pc, const char *name, const char *sql, int nparams,
                    const char *const *values, bool sync, pgc_result_cb cb, void *arg)
        __attribute__((warn_unused_result));

/*
 * The unnamed statement's generation on this connection: it changes with every query queued
 * that parses into the unnamed statement (pgc_query(), pgc_send(), a prepare of ""), in the
 * order the server will see them, and no other connection of the thread ever has the same one
 * (0: nothing parsed yet). Read it right after queueing a pgc_send() to name that statement for
 * pgc_send_again().
 */
uint64_t pgc_unnamed_serial(const struct pgc *pc);

/*
 * As pgc_send() of sql, for a statement that runs again in the same session: when serial is
 * still pgc_unnamed_serial() (nothing queued since has replaced the unnamed statement that
 * pgc_send() of the same sql left), only its Bind and Execute go, with these parameters (the
 * types are the ones it was parsed with), so that the server parses and analyses it once; else
 * the whole statement goes, as pgc_send(). Same rules and return value as pgc_send().
 */
bool pgc_send_again(struct pgc *pc, uint64_t serial, const char *sql, int nparams, const Oid *types,
                    const char *const *values, const int *lengths, const int *formats,
                    int result_format, bool sync, pgc_result_cb cb, void *arg)
        __attribute__((warn_unused_result));

/*
 * Queues the preparation of sql as statement name ("" the unnamed one) with ntypes declared
 * parameter types (0 = unspecified: the server infers them), as Parse does; cb gets the result.
 * Same rules and return value as pgc_query().
 */
bool pgc_prepare(struct pgc *pc, const char *name, const char *sql, int ntypes, const Oid *types,
                 pgc_result_cb cb, void *arg) __attribute__((warn_unused_result));

/*
 * Queues a Describe of prepared statement name: cb's result tells its parameter types
 * (PQnparams, PQparamtype) and the columns it returns (PQnfields, PQfname, ...; none for a
 * statement that returns no rows). Same rules and return value as pgc_query().
 */
bool pgc_describe_prepared(struct pgc *pc, const char *name, pgc_result_cb cb, void *arg)
        __attribute__((warn_unused_result));

/*
 * Inside a result callback only: takes the result from the pgc; the caller must PQclear() it.
 * NULL when called elsewhere or twice.
 */
PGresult *pgc_steal_result(struct pgc *pc);

/* A query is queued or running. */
bool pgc_busy(const struct pgc *pc);

/* Connected and not broken. */
bool pgc_ok(const struct pgc *pc);

/* The last connection error, "" if none. Valid until the next call into this pgc. */
const char *pgc_error(const struct pgc *pc);

/*
 * Closes the connection and releases everything; queued and running queries' callbacks (and a
 * pending ready callback) are dropped without being called. Safe inside any pgc callback; the
 * pgc must not be used afterwards. NULL is ignored.
 */
void pgc_close(struct pgc *pc);

/*
 * Calls cb for every connection not yet closed, oldest first, so that SHOW SERVERS lists every
 * backend the process holds. cb must not open or close connections.
 */
void pgc_foreach(module_conn_cb cb, void *arg);

#endif
