/*
 * admin — the admin console: the virtual database "pgbouncer" (also reachable as "syncbouncer")
 * that answers pgbouncer's SHOW and control commands over the simple query protocol.
 *
 * Admin clients live in their own pool (db "pgbouncer", user "pgbouncer") that is not on
 * bouncer->pools, so nothing in the pooler ever gives them a server. Who gets in: admin_users
 * (every command), stats_users (SHOW only), and the user "pgbouncer" over the unix socket when
 * the peer runs under our own uid (admin, no password). With auth_type=any everyone is at least
 * a stats user.
 */
#ifndef SB_ADMIN_H
#define SB_ADMIN_H

#include <stdbool.h>
#include <stdint.h>

#include "sbuf.h"

struct bouncer;
struct conn;
struct pool;

#define ADMIN_MAX_VIEWS 16

/* Creates the admin pool and the registered views of the synced-table side (b->admin). */
bool admin_init(struct bouncer *b) __attribute__((warn_unused_result));
/* Closes every admin client and frees the admin state. */
void admin_free(struct bouncer *b);

/* Whether dbname is the console ("pgbouncer" or "syncbouncer"). */
bool admin_is_console_db(const char *dbname);
/* The admin pool (never NULL after admin_init()). */
struct pool *admin_pool(struct bouncer *b);
/* The user "pgbouncer" on the unix socket from our own uid: logs in without a password. */
bool admin_trusted_peer(const struct conn *client);
/*
 * client (c->admin set, authenticated or a trusted peer) joins the console: refused with
 * "not allowed" unless admin_users / stats_users / auth_type=any admits it; else welcomed.
 */
void admin_client_login(struct conn *client);
/* Every packet of a logged-in admin client. */
enum sbuf_action admin_handle_packet(struct conn *client, const struct sbuf_pkt *pkt);

/*
 * A CancelRequest for an admin connection of worker b (^C in psql): a command still waiting is
 * given up, a PAUSE or SUSPEND it started is undone on every worker, and the admin gets 57014.
 * Unknown keys are ignored (the caller asks each worker in turn).
 */
void admin_cancel(struct bouncer *b, uint32_t pid, uint32_t key);
/*
 * A command that waited (PAUSE, SUSPEND, WAIT_CLOSE, SYNC) is done: send its tag to the admin,
 * on whichever worker holds it (b's own first, else every worker is asked).
 */
void admin_command_done(struct bouncer *b, uint64_t conn_id, const char *tag);
/* The same, failed: the admin gets an ErrorResponse. */
void admin_command_failed(struct bouncer *b, uint64_t conn_id, const char *sqlstate,
                          const char *message);
/* The admin clients that are still connected (control's waiters look them up by id). */
struct conn *admin_find_client(struct bouncer *b, uint64_t conn_id);

/*
 * Extra SHOW views (SHOW APIS, SHOW SYNCED_TABLES, SHOW MUTATIONS): columns is a NULL-terminated
 * list of text column names (borrowed, must outlive b); fill calls cb once per row. Registering
 * a name again replaces it. False when the table is full or a name/column list is bad.
 */
typedef void (*admin_row_cb)(void *arg, int ncols, const char *const *values);
typedef void (*admin_view_fill)(struct bouncer *b, void *ctx, admin_row_cb cb, void *arg);
bool admin_register_view(struct bouncer *b, const char *name, const char *const *columns,
                         admin_view_fill fill, void *ctx) __attribute__((warn_unused_result));

/*
 * The rows SHOW view would give a console client (without one): cb is called once per row
 * with the column names and text values (NULL = SQL NULL), both valid during the call. False
 * when the view is unknown, answers an error, or its answer cannot be read. For the metrics
 * endpoint, which exports what the views show.
 */
typedef void (*admin_rows_cb)(void *arg, int ncols, const char *const *names,
                              const char *const *values);
bool admin_show_rows(struct bouncer *b, const char *view, admin_rows_cb cb, void *arg)
        __attribute__((warn_unused_result));

/*
 * One pool as a worker sees it, copied in the worker's own thread (no pointer into its state):
 * SHOW POOLS, DATABASES, USERS, LISTS and MEM are built from these rows gathered from every
 * worker and merged, so N workers show what one pooler holding all their connections would.
 */
struct admin_pool_row {
	char db[64], user[64];
	bool is_admin;        /* the console's own pool */
	int pool_mode;        /* enum pool_mode */
	const char *lb_hosts; /* a constant string, or NULL */
	long long cl_active, cl_waiting, sv_active, sv_idle, sv_used, sv_tested, sv_login;
	long long clients, servers; /* pool_client_count(), pool_server_count() */
	uint64_t maxwait_usec;      /* the longest wait of a client of this pool now */
};
/*
 * Sorts rows[0..n) by (database, user) and merges the rows of one pool (one per worker that
 * has it) into one: counts summed, maxwait the largest. Returns how many rows are left.
 */
int admin_pool_rows_merge(struct admin_pool_row *rows, int n);

/* The parsed form of one console statement (exported for the unit tests). */
enum admin_stmt_kind {
	ADMIN_STMT_COMMAND, /* word [arg] */
	ADMIN_STMT_SET,     /* SET key = value */
	ADMIN_STMT_INVALID,
	ADMIN_STMT_TOO_LONG, /* a part is longer than pgbouncer takes: "bad arguments" */
};
const char *admin_stmt_kind_str(enum admin_stmt_kind k);

struct admin_stmt {
	enum admin_stmt_kind kind;
	char cmd[16];
	char arg[64];
	char value[256];
};
/* Parses q with pgbouncer's grammar: CMD [ARG] [;] and SET key (=|TO) value [;]. */
void admin_parse(const char *q, struct admin_stmt *out);

#endif
