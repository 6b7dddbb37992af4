/*
 * conn — a client or server connection: one struct for both (as pgbouncer's PgSocket), since
 * pools, the admin console and the relay treat them alike. A connection's state is one enum value
 * and it sits on exactly one list that matches that state; only conn_set_state() moves it.
 */
#ifndef SB_CONN_H
#define SB_CONN_H

#include <event2/event_struct.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "list.h"
#include "log.h"
#include "sbuf.h"

struct bouncer;
struct pool;
struct dns_request;
struct scram_client;
struct scram_server;
struct auth_state;
struct aq_req;
struct ps_client;
struct ps_server;

enum conn_state {
	CL_LOGIN,         /* startup and authentication */
	CL_WAITING_LOGIN, /* authenticated, waiting for the pool's first server login */
	CL_ACTIVE,        /* logged in; linked to a server or idle */
	CL_WAITING,       /* queued for a server */
	SV_LOGIN,         /* connecting and logging in */
	SV_IDLE,          /* ready, unlinked */
	SV_ACTIVE,        /* linked to a client */
	SV_USED,          /* released, not yet reset */
	SV_TESTED,        /* running the reset or check query */
	CONN_JUSTFREE,    /* closed, memory not yet freed */
};
const char *conn_state_str(enum conn_state st);

/* Parameters tracked per connection and replayed with SET when a client gets a server. */
#define PARAM_MAX 16
struct param_set {
	int n;
	uint64_t gen; /* new with every change, unique across all sets (0: never set) */
	struct {
		char *name;
		char *value;
		uint32_t hash; /* param_hash(name) */
	} p[PARAM_MAX];
};
/* A hash of a parameter name, the same for every spelling (names are case-insensitive). */
uint32_t param_hash(const char *name);
const char *param_get(const struct param_set *ps, const char *name);
/* param_get() for a name whose param_hash() is known. */
const char *param_get_hashed(const struct param_set *ps, const char *name, uint32_t hash);
bool param_set_value(struct param_set *ps, const char *name, const char *value)
        __attribute__((warn_unused_result));
void param_clear(struct param_set *ps);
/* Marks ps changed (a new gen), for a set filled or replaced other than through the above. */
void param_touch(struct param_set *ps);

struct conn {
	struct list head; /* on the list of its state */
	struct bouncer *b;
	bool is_server;
	enum conn_state state;
	struct sbuf sbuf;
	struct pool *pool;
	struct conn *link;
	struct sockaddr_storage addr; /* the peer */
	char addr_str[64];
	int port;
	char local_addr[64];
	int local_port;
	uint64_t connect_time;
	/* client: its last packet; server: its last ReadyForQuery or release (idle age) */
	uint64_t request_time;
	struct event ev_timer;
	bool timer_ready;
	const char *close_reason;
	uint64_t id;       /* unique, given when it first gets a state */
	bool close_needed; /* server: RECONNECT or RELOAD wants it closed when released */
	uint64_t query_start, xact_start; /* server: stats clocks, 0 when not running */
	const char *refusal; /* client: answered with this FATAL once its startup packet is read */

	/* client */
	char user[64];
	char dbname[64];
	struct param_set params;  /* what the client believes the server's values are */
	struct param_set startup; /* other startup parameters to pass on (options) */
	char *params_key;         /* params flattened ("name\0value\0"…), as of params_key_gen */
	size_t params_key_len;
	uint64_t params_key_gen;
	uint32_t cancel_key;
	uint8_t md5_salt[4];
	struct scram_server *scram_srv;
	struct auth_state *auth; /* CL_LOGIN: what authentication knows so far (auth.c) */
	bool auth_done;
	bool admin;
	bool admin_user;       /* console: may run commands, not only SHOW */
	bool admin_waiting;    /* console: a PAUSE/SUSPEND/WAIT_CLOSE answer is pending */
	void *hook_state;      /* the query hook's per-client state; NULL on the fast path */
	bool wait_server_idle; /* relay paused until the server has answered everything */
	struct ps_client *ps;  /* prepared statements by the client's names (NULL: none yet) */
	uint8_t scan_tail[16]; /* last bytes of the streamed chunk before (needles span chunks) */
	uint8_t scan_tail_len;
	bool tls_direct;       /* TLS began with a ClientHello, no SSLRequest (PostgreSQL 17) */

	/* server */
	uint32_t be_pid, be_key;
	int expect_rfq;      /* ReadyForQuery messages still owed to the client */
	char txn_status;     /* from the last ReadyForQuery */
	bool setting_params; /* consuming the answers to our own SETs */
	bool resetting;      /* consuming the answer to the reset query */
	bool connect_query_running;
	bool checking;         /* consuming the answer to server_check_query */
	bool at_rfq;           /* the last thing relayed was ReadyForQuery: a release point */
	int cancels_in_flight; /* cancel requests for this backend not yet answered */
	bool release_deferred; /* released while a cancel was in flight: hold it back */
	struct ps_server *pss; /* statements prepared on this backend (NULL: none) */
	/*
	 * The last client parameters (a client's params_key) found already in force here while
	 * params was at in_force_gen: a client with the same key needs no parameter check.
	 */
	char *in_force_key;
	size_t in_force_key_len;
	uint64_t in_force_gen;
	bool logged_in;
	struct aq_req *auth_query; /* running auth_query for a login; answers go to auth.c */
	struct dns_request *dns_req;
	struct scram_client *scram_cli;
	struct event ev_connect; /* server: connect, SSL answer; client: its first byte */
	bool connecting;
	char *host; /* which host of the db's list */
};

/* Stops c's I/O and timers and queues it for freeing from the loop. Safe to call twice. */
void conn_retire(struct conn *c);
/* Frees every retired connection; called from a zero-delay event. */
void conn_free_retired(struct bouncer *b);

/* Moves c to state st and onto the matching list. */
void conn_set_state(struct conn *c, enum conn_state st);

/* Log with pgbouncer's prefix: "C-0x…: db/user@addr:port msg". */
void conn_log(enum log_level lvl, const struct conn *c, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
#define slog_error(c, ...)   conn_log(LOG_LVL_ERROR, c, __VA_ARGS__)
#define slog_warning(c, ...) conn_log(LOG_LVL_WARNING, c, __VA_ARGS__)
#define slog_info(c, ...)    conn_log(LOG_LVL_INFO, c, __VA_ARGS__)
#define slog_debug(c, ...)                                                                         \
	do {                                                                                       \
		if (log_enabled(LOG_LVL_DEBUG))                                                    \
			conn_log(LOG_LVL_DEBUG, c, __VA_ARGS__);                                   \
	} while (0)

#endif
