/*
 * conn — a client or server connection: one struct for both (as pgbouncer's PgSocket), since
 * pools, the admin console and the relay treat them alike. A connection's state is one enum value
 * and it sits on exactly one list that matches that state; only conn_set_state() moves it.
 */
#ifndef SB_CONN_H
#define SB_CONN_H

#include <event2/event.h>
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

/*
 * Parameters tracked per connection and replayed with SET when a client gets a server. Names and
 * values are shared copies (one per distinct string in the worker, counted: thousands of clients
 * with the same settings hold one copy of each), a set holds only as many slots as it needs, and
 * sets with the same contents can share their slots (param_share()). Read p[0..n) freely; change
 * a set only through the functions below. A set starts zeroed ({0}); it may be moved by struct
 * assignment, after which the source is zeroed again or never used.
 */
#define PARAM_MAX 16
struct param {
	const char *name; /* shared: never freed or changed by the holder */
	const char *value;
	uint32_t hash; /* param_hash(name) */
};
struct param_set {
	int n, cap;
	uint64_t gen;    /* new with every change, unique across all sets (0: never set) */
	struct param *p; /* n slots used (of cap when not shared); NULL while empty */
};
/* A hash of a parameter name, the same for every spelling (names are case-insensitive). */
uint32_t param_hash(const char *name);
const char *param_get(const struct param_set *ps, const char *name);
/* param_get() for a name whose param_hash() is known. */
const char *param_get_hashed(const struct param_set *ps, const char *name, uint32_t hash);
bool param_set_value(struct param_set *ps, const char *name, const char *value)
        __attribute__((warn_unused_result));
/* Empties ps and frees its slots. */
void param_clear(struct param_set *ps);
/*
 * A reference to ps's slots as they are now (NULL for an empty set): they cannot change while
 * it is held, since a set changes slots that others hold only on a copy of its own.
 * param_holds() tells whether ps still has those very slots. param_drop() takes NULL.
 */
struct param_block;
struct param_block *param_hold(const struct param_set *ps);
bool param_holds(const struct param_block *blk, const struct param_set *ps);
void param_drop(struct param_block *blk);
/*
 * Lets ps hold the same slots as every other shared set with the same contents (a thousand
 * clients with the same settings hold one copy). A later change gives ps a copy of its own.
 */
void param_share(struct param_set *ps);
/* Marks ps changed (a new gen), for a set filled or replaced other than through the above. */
void param_touch(struct param_set *ps);

struct conn {
	struct list head; /* on the list of its state */
	struct bouncer *b;
	enum conn_state state;
	bool is_server;
	bool timer_ready;
	bool close_needed; /* server: RECONNECT or RELOAD wants it closed when released */
	bool connecting;   /* ev_connect is pending */
	struct sbuf sbuf;
	struct pool *pool;
	struct conn *link;
	/*
	 * The peer. A unix socket's path is not kept: a client's does not matter, a server's is
	 * remade from its host and port (server.c).
	 */
	union conn_addr {
		struct sockaddr sa;
		struct sockaddr_in in;
		struct sockaddr_in6 in6;
	} addr;
	char addr_str[INET6_ADDRSTRLEN]; /* the peer's address as text, "unix" for a unix socket */
	int port;
	uint64_t connect_time;
	/* client: its last packet; server: its last ReadyForQuery or release (idle age) */
	uint64_t request_time;
	struct event *ev_timer; /* client: the login timer (NULL when none) */
	/* server: connect, SSL answer; client: its first byte (NULL until needed) */
	struct event *ev_connect;
	const char *close_reason;
	uint64_t id;                      /* unique, given when it first gets a state */
	uint64_t query_start, xact_start; /* server: stats clocks, 0 when not running */
	const char *refusal; /* client: answered with this FATAL once its startup packet is read */

	/* client */
	const char *user; /* shared copies (conn_set_names()); "" until the startup packet */
	const char *dbname;
	struct param_set params; /* what the client believes the server's values are */
	struct scram_server *scram_srv;
	struct auth_state *auth; /* CL_LOGIN: what authentication knows so far (auth.c) */
	void *hook_state;        /* the query hook's per-client state; NULL on the fast path */
	struct ps_client *ps;    /* prepared statements by the client's names (NULL: none yet) */
	uint32_t cancel_key;
	uint8_t md5_salt[4];
	uint8_t scan_tail[16]; /* last bytes of the streamed chunk before (needles span chunks) */
	uint8_t scan_tail_len;
	bool auth_done;
	bool admin;
	bool admin_user;       /* console: may run commands, not only SHOW */
	bool pool_counted;     /* in its pool's shared client counts (pool_client_allowed()) */
	bool admin_waiting;    /* console: a PAUSE/SUSPEND/WAIT_CLOSE answer is pending */
	bool wait_server_idle; /* relay paused until the server has answered everything */
	bool hook_answers;     /* its server's answers go through hook.server_answer first */
	bool tls_direct;       /* TLS began with a ClientHello, no SSLRequest (PostgreSQL 17) */

	/* server */
	uint32_t be_pid, be_key;
	int rfq_owed;          /* ReadyForQuery messages owed: only through server_*_ready() */
	int cancels_in_flight; /* cancel requests for this backend not yet answered */
	char txn_status;       /* from the last ReadyForQuery */
	bool setting_params;   /* consuming the answers to our own SETs */
	bool resetting;        /* consuming the answer to the reset query */
	bool connect_query_running;
	bool checking;         /* consuming the answer to server_check_query */
	bool at_rfq;           /* the last thing relayed was ReadyForQuery: a release point */
	bool release_deferred; /* released while a cancel was in flight: hold it back */
	/*
	 * The extended-protocol batch the client has sent since its last Sync (or Query): its
	 * Parse/Bind/Describe/Execute/Close messages still owed an answer (answers are counted
	 * once every earlier Sync is answered: they are this batch's), whether the server
	 * reported an error in it (it then skips to the Sync), and whether that error is one the
	 * query hook asked for (client_abort_server_batch()) and the client must not see.
	 */
	uint32_t batch_owed;
	bool batch_open;
	bool batch_failed;
	bool batch_swallow_error;
	bool logged_in;
	struct ps_server *pss; /* statements prepared on this backend (NULL: none) */
	/*
	 * The last client parameter slots (param_hold()) found already in force here while params
	 * was at in_force_gen: a client holding the same slots needs no parameter check.
	 */
	struct param_block *in_force;
	uint64_t in_force_gen;
	struct aq_req *auth_query; /* running auth_query for a login; answers go to auth.c */
	/*
	 * Linked to a client since the last DISCARD ALL: the client's session state (SETs,
	 * temporary tables, role) may still be on it, so auth_query discards it first.
	 */
	bool client_state;
	bool reset_failed; /* the reset query answered with an error */
	struct dns_request *dns_req;
	struct scram_client *scram_cli;
	char *host;          /* which host of the db's list */
	uint8_t limits_held; /* the workers' shared counts it is in (POOL_LIMIT_* bits) */
	bool served;         /* has been linked to a client */
};

/*
 * The one count of the answers a server still owes: ReadyForQuery messages, one for every
 * Query, Sync and FunctionCall sent to it (the client's, or the pooler's own statements). The
 * statement tracking (prepared.c) positions its own Parse/Close answers by it.
 */
/* A Query, Sync or FunctionCall went to the server: it owes one more ReadyForQuery. */
static inline void server_owe_ready(struct conn *s)
{
	s->rfq_owed++;
}
/* A ReadyForQuery came from the server: one fewer is owed (never fewer than none). */
static inline void server_ready_arrived(struct conn *s)
{
	if (s->rfq_owed > 0)
		s->rfq_owed--;
}
/* ReadyForQuery messages the server still owes. */
static inline int server_ready_owed(const struct conn *s)
{
	return s->rfq_owed;
}

/*
 * Sets *ev up for fd/what/cb with c as the argument, allocating it the first time (events an
 * idle connection does not need take no memory). False when out of memory. *ev is freed with c.
 */
bool conn_event_assign(struct conn *c, struct event **ev, evutil_socket_t fd, short what,
                       event_callback_fn cb) __attribute__((warn_unused_result));

/* User and database names are refused from this length on (PostgreSQL's NAMEDATALEN). */
#define CONN_NAME_MAX 64
/* "": a connection's user and dbname before conn_set_names(). */
extern const char conn_no_name[];
/*
 * Sets c's user and database names to shared copies of user and dbname (a thousand clients of
 * one pool hold one copy). False when out of memory; c keeps its old names then.
 */
bool conn_set_names(struct conn *c, const char *user, const char *dbname)
        __attribute__((warn_unused_result));

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

/*
 * Fills buf with len (at most 64) unpredictable bytes from the kernel's generator, drawn 256 at a
 * time so that one getrandom() serves several log-ins (a salt and a cancel key each). False
 * when the kernel gives none.
 */
bool conn_random(void *buf, size_t len) __attribute__((warn_unused_result));

struct config;
/*
 * Sets the TCP options of cfg on the TCP socket fd, as they apply to a client or server
 * connection: TCP_NODELAY, SO_KEEPALIVE (tcp_keepalive) with TCP_KEEPIDLE, TCP_KEEPINTVL and
 * TCP_KEEPCNT when set, TCP_USER_TIMEOUT (tcp_user_timeout) and SO_SNDBUF/SO_RCVBUF
 * (tcp_socket_buffer) when set. Zero settings keep the system's values. False when one was
 * refused (errno says why); the ones before it are set.
 */
bool conn_tune_tcp(int fd, const struct config *cfg);

/*
 * The shared names and parameter blocks are per thread (each worker's connections stay on its
 * thread). Frees the calling thread's tables, once its connections are all freed.
 */
void conn_thread_done(void);

#endif
