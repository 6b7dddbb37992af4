/*
 * control — the process-level controls shared by the admin console and the signals: PAUSE,
 * RESUME, SUSPEND, DISABLE/ENABLE, KILL, RECONNECT, WAIT_CLOSE, the shutdown modes and RELOAD.
 *
 * State (b->control): the global pause mode, per-database paused/disabled flags, the admin
 * commands waiting for completion, and the shutdown mode. A 100 ms timer drives everything that
 * waits: it closes the servers a pause or reconnect no longer wants once they are idle, answers
 * waiting admins, resumes a suspend whose admin left, and ends the process when a waiting
 * shutdown is complete. The pool and server code only ask control_pool_paused() and
 * control_server_close_needed().
 */
#ifndef SB_CONTROL_H
#define SB_CONTROL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct bouncer;
struct conn;
struct pool;

enum control_mode {
	CONTROL_RUNNING,
	CONTROL_PAUSED,
	CONTROL_SUSPENDED,
};
const char *control_mode_str(enum control_mode m);

enum control_shutdown {
	CONTROL_SHUTDOWN_NONE,
	CONTROL_SHUTDOWN_IMMEDIATE,
	CONTROL_SHUTDOWN_WAIT_FOR_SERVERS,
	CONTROL_SHUTDOWN_WAIT_FOR_CLIENTS,
};
const char *control_shutdown_str(enum control_shutdown s);

enum control_wait {
	CONTROL_WAIT_PAUSE,
	CONTROL_WAIT_SUSPEND,
	CONTROL_WAIT_CLOSE,
};
const char *control_wait_str(enum control_wait w);

/* after_reload runs once a reload has swapped in the new config (log settings, synced tables;
 * may be NULL). */
bool control_init(struct bouncer *b, void (*after_reload)(struct bouncer *b))
        __attribute__((warn_unused_result));
void control_free(struct bouncer *b);

/* For the pooler: no new server may be linked or launched for pool now. */
bool control_pool_paused(const struct pool *pool);
/* For the pooler: this server must be closed instead of being reused. */
bool control_server_close_needed(const struct conn *server);
bool control_db_disabled(const struct bouncer *b, const char *db);
/*
 * Why a new client of db is refused now (DISABLE, or the database left the config on RELOAD),
 * written into msg; false when it may log in.
 */
bool control_login_refused(const struct bouncer *b, const char *db, char *msg, size_t size);
bool control_db_paused(const struct bouncer *b, const char *db);
enum control_mode control_mode(const struct bouncer *b);
enum control_shutdown control_shutdown_mode(const struct bouncer *b);

/*
 * The commands. db NULL or "" = all databases. Each returns NULL on success or pgbouncer's
 * error text; *wait (where present) says the command completes later, through
 * control_wait_for() and admin_command_done().
 */
const char *control_pause(struct bouncer *b, const char *db, bool *wait);
const char *control_resume(struct bouncer *b, const char *db);
const char *control_suspend(struct bouncer *b, bool *wait);
const char *control_disable(struct bouncer *b, const char *db);
const char *control_enable(struct bouncer *b, const char *db);
const char *control_kill(struct bouncer *b, const char *db);
const char *control_reconnect(struct bouncer *b, const char *db);
const char *control_wait_close(struct bouncer *b, const char *db, bool *wait);
/* Registers admin conn_id as waiting for what (on db, "" = all). False when out of memory. */
bool control_wait_for(struct bouncer *b, uint64_t conn_id, enum control_wait what, const char *db)
        __attribute__((warn_unused_result));
/* Forgets what admin conn_id waits for; true when it waited for PAUSE or SUSPEND. */
bool control_wait_cancel(struct bouncer *b, uint64_t conn_id);
/* Starts a shutdown; a second request while one is in progress becomes immediate. */
void control_shutdown(struct bouncer *b, enum control_shutdown mode);
/*
 * RELOAD in two steps, so that the files are read once whatever the number of workers:
 * control_reload_load() re-reads the ini (and what it %includes), the auth_file, the hba and
 * ident files and the TLS files, checks them all, and makes what nworkers workers need to
 * apply them; on any error it logs "RELOAD failed, see logs for additional details" (or the
 * reason), changes nothing and returns NULL. control_reload_apply() makes worker b use the set,
 * in b's own thread, and cannot fail; control_reload_done() frees what no worker took. Databases
 * whose connection settings changed get new servers: the old ones close once released.
 * RELOADING=1 and READY=1 are told to the service manager once, by load and done (or load
 * alone when it fails).
 */
struct reload_set;
struct reload_set *control_reload_load(struct bouncer *b, int nworkers)
        __attribute__((warn_unused_result));
void control_reload_apply(struct bouncer *b, struct reload_set *rs);
void control_reload_done(struct reload_set *rs);
void control_reload_set_free(struct reload_set *rs);
/* The three steps on b alone (one worker); false when the load failed. */
bool control_reload(struct bouncer *b) __attribute__((warn_unused_result));

#endif
