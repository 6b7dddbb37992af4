/*
 * bouncer — the process's runtime state, one struct passed to every module that needs it (no
 * scattered globals). Owns the event loop, the active config, the auth file, DNS, the pools and
 * the lists of connections that belong to no pool yet.
 */
#ifndef SB_BOUNCER_H
#define SB_BOUNCER_H

#include <stdbool.h>
#include <stdint.h>

#include "list.h"

struct event_base;
struct ticker;
struct config;
struct userlist;
struct dns;
struct conn;
struct sbuf_pkt;
struct listener;
struct synced;
struct admin;
struct control;
struct stats_state;
struct tls_state;
struct mutation_history;
struct metrics;
struct auth;
struct workers;

/*
 * The query hook: the seam where the synced-table side sees client statements. The core shows it
 * every Query and Parse of a logged-in client, and every packet of a client whose hook_state is
 * set (the hook is in the middle of an extended-protocol sequence). The verdicts:
 *   PASS      relay the packet (the fast path);
 *   CONSUME   the hook used the complete packet; go on with the next one;
 *   WAIT      show the packet again once it is complete in memory;
 *   PAUSE     stop the client's relay at this packet; the hook calls client_resume() later and
 *             the packet is shown again (the hook remembers what it decided);
 *   WAIT_IDLE like PAUSE, but the core resumes the client itself once its server has answered
 *             everything it was sent, so the hook may write to the client without interleaving;
 *   LINK      only for a client without a server: the core gives it one from its pool (the
 *             client waits for it like any query) and shows the packet again once linked and
 *             done with its parameter SETs; nothing is relayed;
 *   CLOSED    the hook ended the client (client_fatal()); nothing more is read from it.
 * client_closed lets the hook free hook_state and cancel work in flight.
 *
 * A packet too big to hold whole (pkt->too_big) is shown with a prefix only: PASS streams it to
 * the server, WAIT refuses it (54000: too large to inspect). While a passed one streams, its bytes
 * are searched for stream_needles (NULL-terminated, each at most 15 bytes, case ignored); one
 * found closes the client with 54000 and drops its server, which never gets the whole message.
 */
enum hook_verdict {
	HOOK_PASS,
	HOOK_CONSUME,
	HOOK_WAIT,
	HOOK_PAUSE,
	HOOK_WAIT_IDLE,
	HOOK_LINK,
	HOOK_CLOSED,
};
const char *hook_verdict_str(enum hook_verdict v);

struct query_hook {
	enum hook_verdict (*inspect)(void *ctx, struct conn *client, const struct sbuf_pkt *pkt);
	void (*client_closed)(void *ctx, struct conn *client);
	/*
	 * A CancelRequest for client while the hook holds its query (HOOK_PAUSE): true when the
	 * hook dealt with it; false (or NULL) sends it to the client's server as usual.
	 */
	bool (*cancel)(void *ctx, struct conn *client);
	/*
	 * For a client whose hook_answers is set: each message of its server's answers, before it
	 * is relayed and after the core has read what it keeps (txn_status, the answers owed). True
	 * relays it; false drops it, and a dropped ReadyForQuery is no release point. This is how
	 * the hook runs statements of its own on the client's server (client_query_on_server())
	 * and keeps their answers to itself.
	 */
	bool (*server_answer)(void *ctx, struct conn *client, const struct sbuf_pkt *pkt);
	const char *const *stream_needles;
	void *ctx;
};

struct bouncer {
	struct event_base *base;
	struct config *cfg;
	char *config_path;
	struct userlist *users;
	struct dns *dns;
	struct list pools;
	struct list login_clients; /* not yet attached to a pool */
	struct list cancel_conns;  /* outgoing cancel requests */
	struct list justfree;      /* closed, freed from a zero-delay event */
	struct event *ev_free;
	struct ticker *ticker; /* periodic work (ticker.c), made by the first tick_start() */
	struct listener *listeners;
	struct query_hook hook;
	struct synced *synced;   /* the synced-table side (without [synced_tables]: its guard only) */
	struct admin *admin;     /* the admin console (admin.c) */
	struct control *control; /* pause, suspend, shutdown modes (control.c) */
	struct stats_state *stats;
	struct tls_state *tls; /* the TLS contexts (tls.c); NULL until configured */
	struct auth *auth;     /* hba and ident files, auth_query connections (auth.c) */
	struct mutation_history *history; /* finished synced writes (mutation/history.h) */
	struct metrics *metrics;          /* the Prometheus endpoint, NULL when off */
	uint64_t last_conn_id;            /* ids of SHOW CLIENTS / KILL_CLIENT */
	int client_count;
	int server_count;
	bool shutting_down;
	bool running_as_root;
	uint64_t start_time_usec;
	struct workers *workers; /* shared by the workers (workers.h); NULL with workers = 1 */
	int worker_index;        /* this bouncer's worker number, 0 for the main thread's */
	/* bit i: module i of src/modules.c has been through init / start on this bouncer */
	unsigned modules_inited, modules_started;
};

uint64_t bouncer_now_usec(void);

#endif
