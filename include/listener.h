/*
 * listener — the listening sockets: every address of listen_addr on listen_port, and the unix
 * socket unix_socket_dir/.s.PGSQL.<port>. Accepted sockets become clients.
 */
#ifndef SB_LISTENER_H
#define SB_LISTENER_H

#include <stdbool.h>

struct bouncer;

/* Opens all listeners from b->cfg. False (logged) if none could be opened or one failed. */
bool listener_start(struct bouncer *b) __attribute__((warn_unused_result));
/*
 * For worker `to` (set up later in its own thread, whose listener_start() watches them): a
 * listening socket of its own on each TCP address b listens on, and b's unix socket (and any
 * socket passed by the service manager) shared. Runs in b's thread before the workers start,
 * with b's privileges. False (logged) when one cannot be opened.
 */
bool listener_share(struct bouncer *b, struct bouncer *to) __attribute__((warn_unused_result));
/* Closes all listeners and removes the unix socket file (worker 0's only). */
void listener_stop(struct bouncer *b);
/* Stops / restarts accepting (PAUSE-like states, max_client_conn pressure). */
void listener_pause(struct bouncer *b, bool paused);

#endif
