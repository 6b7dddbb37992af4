/*
 * sdnotify — the service manager's readiness protocol (systemd's sd_notify), without libsystemd:
 * one datagram of "KEY=value" lines to the AF_UNIX socket named by $NOTIFY_SOCKET (a path, or
 * "@name" for the abstract namespace). Nothing happens when the variable is unset, so the calls
 * cost nothing outside a Type=notify service.
 *
 * The datagram is sent without blocking; a full or missing socket loses that one message (the
 * service manager then times the start out, which is what it would do had we never sent it).
 */
#ifndef SB_SDNOTIFY_H
#define SB_SDNOTIFY_H

#include <stdbool.h>

/*
 * Sends the message (printf-style; several lines allowed). True when it was sent or there is
 * no service manager to tell; false (and a warning once) when $NOTIFY_SOCKET is set but the
 * send failed.
 */
bool sdnotify(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* RELOADING=1 with MONOTONIC_USEC, as Type=notify-reload services must say it. */
bool sdnotify_reloading(void);

#endif
