/*
 * daemon — process utilities with pgbouncer's behaviour: the pidfile, going to the background
 * (-d), dropping root (-u) and the open-files limit.
 *
 * All of these run at start-up, before the event loop exists; none is meant for later.
 */
#ifndef SB_DAEMON_H
#define SB_DAEMON_H

#include <stdbool.h>

/*
 * Refuses to start over a live instance. path NULL or "": nothing to check, true. No file: true.
 * A file naming a process that is gone is stale: it is removed (logged) and the result is true.
 * A file naming a live process, or one that cannot be read or parsed, logs "pidfile exists,
 * another instance running?" and returns false.
 */
bool daemon_check_pidfile(const char *path) __attribute__((warn_unused_result));

/*
 * Creates path (must not exist: O_EXCL, so two instances cannot both win) holding this process's
 * pid, and arranges for it to be removed when the process exits through exit() (fatal() too).
 * path NULL or "": true. False, logged, on failure (nothing left behind).
 */
bool daemon_write_pidfile(const char *path) __attribute__((warn_unused_result));

/*
 * Removes path if it holds this process's pid (never another instance's pidfile). NULL/"": no-op.
 */
void daemon_remove_pidfile(const char *path);

/*
 * Detaches from the terminal: stdin/stdout/stderr go to /dev/null, fork, new session, fork again
 * (so the daemon is not a session leader and cannot get a terminal back). The working directory
 * is kept, as pgbouncer does, so relative paths in the configuration keep their meaning. Returns
 * true in the final process only; the intermediate processes _exit(0). False, logged, if a step
 * fails. Call before the event loop and any thread exist; log to a file or syslog afterwards,
 * since stderr is gone.
 */
bool daemon_go_background(void) __attribute__((warn_unused_result));

/*
 * -u user: switches group, supplementary groups and user to those of user, in that order (the
 * user last, while we still may change groups). NULL/"" or already that user: true. Unknown user,
 * not root, or a failed step: false with a message saying which.
 */
bool daemon_change_user(const char *user) __attribute__((warn_unused_result));

/*
 * Raises the soft RLIMIT_NOFILE to at least want (and the hard limit too when root), so that
 * max_client_conn connections can be open. True if the limit now covers want; otherwise logs a
 * warning with the limit obtained and returns false (running on is the caller's choice).
 */
bool daemon_set_nofile(int want);

#endif
