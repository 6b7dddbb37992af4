/*
 * pool — the servers of one (database, user) pair and the clients using it. Owns the state lists
 * of its connections; hands idle servers to waiting clients in arrival order and launches new
 * server connections within the limits (pool_size, reserve_pool_size after
 * reserve_pool_timeout, max_db_connections, max_user_connections, server_login_retry).
 *
 * Each pool has a janitor timer (every POOL_JANITOR_USEC) that enforces the timeouts of its
 * clients and servers, keeps min_pool_size servers, and drops an unused auto-database pool and
 * the pool of a database a RELOAD removed.
 * Effective settings follow pgbouncer's precedence: [users] beats [databases] beats [pgbouncer];
 * they are reread from the live config, so a RELOAD applies to existing pools.
 */
#ifndef SB_POOL_H
#define SB_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conn.h"
#include "list.h"
#include "stats.h"
#include "ticker.h"

struct bouncer;
struct cf_database;
struct auth_cred;

struct pool {
	struct list head; /* on bouncer->pools */
	struct bouncer *b;
	char db_name[64];   /* the [databases] name the clients asked for */
	char user_name[64]; /* the client user */

	/* how to reach and log into the server, copied from the config at creation */
	char *host; /* "" = unix socket in the default dir; "h1,h2" lists */
	int port;
	char *server_db;
	char *server_user;
	char *server_password; /* "" = none known */
	struct auth_cred *cred; /* auth_query secret, SCRAM keys of a client's login (auth.c) */
	char *connect_query;
	struct param_set
	        server_startup; /* client_encoding, datestyle, timezone, application_name */
	/* effective settings (user beats database beats global), refreshed from the live config */
	int pool_mode; /* enum pool_mode */
	int pool_size, min_pool_size, reserve_pool_size;
	int max_db_connections, max_user_connections;
	int max_db_client_connections, max_user_client_connections;
	int64_t server_lifetime, query_timeout, query_wait_timeout, idle_transaction_timeout,
	        transaction_timeout, client_idle_timeout;
	bool forced_user; /* the [databases] entry names the server user */
	bool auth_pool;   /* made to run auth_query: logs in as its own user, never a forced one */
	bool autodb;      /* made from the "*" entry: dropped after autodb_idle_timeout unused */
	uint64_t unused_since; /* no client and no server since then (0: in use) */
	int host_index;

	struct tick janitor; /* periodic timeouts and pool size upkeep */
	bool janitor_ready;
	struct ps_registry *ps; /* prepared statements known to this pool's servers */

	struct list active_clients, waiting_clients, login_clients;
	struct list idle_servers, active_servers, used_servers, tested_servers, login_servers;
	struct list auth_waiting; /* logins waiting for a server to run auth_query on (auth.c) */

	struct param_set welcome; /* the first server's ParameterStatus messages */
	bool welcome_ready;
	/*
	 * The ParameterStatus messages of the last welcome built (client.c): for clients holding
	 * the parameter slots welcome_for (held), while welcome is at welcome_for_gen.
	 */
	struct param_block *welcome_for;
	uint64_t welcome_for_gen;
	uint8_t *welcome_msgs;
	size_t welcome_msgs_len;
	char last_login_error[512];
	char last_login_sqlstate[6];
	uint64_t last_login_failure;

	/*
	 * With several workers: the shared server counts of this pool, its database and its user
	 * (workers.h), what the next server_launch() is counted in (POOL_LIMIT_* bits), whether
	 * the other workers were asked for an idle server, and whether this pool owes one to
	 * worker lend_to (it closes its next released server for it).
	 */
	struct worker_limit *lim_pool, *lim_db, *lim_user;
	/* the shared client counts of its database and user (max_db/user_client_connections) */
	struct worker_limit *lim_db_clients, *lim_user_clients;
	uint8_t launch_limits;
	bool idle_asked;
	bool lend;
	int lend_to;

	uint64_t xact_count, query_count, bytes_in, bytes_out;
	bool is_admin; /* the admin console's pool: never on bouncer->pools, never a server */
	struct stats_counters stats, stats_newer, stats_older; /* see stats.h */
};

struct ps_registry;

#define POOL_LIMIT_POOL 1
#define POOL_LIMIT_DB   2
#define POOL_LIMIT_USER 4

/* A server is gone: it leaves the workers' shared counts it was in. */
void pool_server_uncounted(struct conn *server);

/* How often the janitor looks at a pool: timeouts are enforced to within this period. */
#define POOL_JANITOR_USEC 250000

/* The existing pool of db_name/user, or NULL. Never creates one. */
struct pool *pool_find(struct bouncer *b, const char *db_name, const char *user);
/*
 * Finds or creates the pool for db_name/user. NULL with *err set when the db is unknown.
 * Called for a client only once it has authenticated: a failed login leaves no pool behind.
 */
struct pool *pool_get(struct bouncer *b, const char *db_name, const char *user, const char **err);
/*
 * The pool auth_query runs in: db_name's servers logged in as auth_user, with auth_user's own
 * secret, even when the [databases] entry forces another user (as pgbouncer's auth pool).
 */
struct pool *pool_get_auth(struct bouncer *b, const char *db_name, const char *auth_user,
                           const char **err);
void pool_free(struct pool *pool);

/* The list that holds connections of state st in this pool (or the bouncer's lists). */
struct list *pool_state_list(struct bouncer *b, struct pool *pool, enum conn_state st);

/* A client finished authentication: give it the welcome now or when the first server is in. */
void pool_client_logged_in(struct pool *pool, struct conn *client);
/* A client needs a server to send a packet. Links one or queues the client. */
void pool_request_server(struct pool *pool, struct conn *client);
/* A server is logged in and reset: hand it to the next waiting client or park it idle. */
void pool_server_ready(struct pool *pool, struct conn *server);
/*
 * An idle server to use now, taken off the idle list (state unchanged: the caller moves it), or
 * NULL when none is (idle servers due a check are sent to it and come back through
 * pool_server_ready()).
 */
struct conn *pool_take_idle_server(struct pool *pool);
/* The client is done with its server (session end or, per pool mode, transaction end). */
void pool_release_server(struct conn *client);
/* Launches server connections while clients wait and the pool has room. */
void pool_fill(struct pool *pool);
/* A server login failed: waiting clients that cannot be served get the server's error. */
void pool_login_failed(struct pool *pool, const char *sqlstate, const char *message);

int pool_server_count(const struct pool *pool);
/* Clients of the pool in any state (logging in, active, waiting). */
int pool_client_count(const struct pool *pool);
/* Rereads the effective settings of pool from the live config. */
void pool_refresh_settings(struct pool *pool);
/*
 * Whether one more client may join pool (max_db_client_connections,
 * max_user_client_connections). False with the refusal message in msg. With several workers
 * the client is counted in its database's and user's counts of every worker until
 * pool_client_uncount().
 */
bool pool_client_allowed(struct pool *pool, struct conn *client, char *msg, size_t msgsize)
        __attribute__((warn_unused_result));
/* The client is gone: out of the shared client counts pool_client_allowed() put it in. */
void pool_client_uncount(struct conn *client);
/* Creates the pools of databases with a forced user and min_pool_size, so they warm up. */
void pool_prewarm(struct bouncer *b);

#endif
