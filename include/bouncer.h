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
struct config;
struct userlist;
struct dns;
struct conn;
struct sbuf_pkt;
struct listener;

/*
 * The query hook: the seam where the synced-table side sees client statements. The core asks it
 * about each Query and Parse; PASS relays the packet untouched (the fast path), HANDLE means the
 * hook has taken the packet and paused the client's relay, and will resume it later.
 */
enum hook_verdict {
	HOOK_PASS,
	HOOK_HANDLE,
};
struct query_hook {
	enum hook_verdict (*inspect)(void *ctx, struct conn *client, const struct sbuf_pkt *pkt);
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
	struct listener *listeners;
	struct query_hook hook;
	int client_count;
	int server_count;
	bool shutting_down;
	bool running_as_root;
	uint64_t start_time_usec;
};

uint64_t bouncer_now_usec(void);

#endif
