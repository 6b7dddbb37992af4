/*
 * module — the seam between the pooler core and a module that extends it (the synced-table side
 * is one). A module is a shared object (synced.so) that exports one struct module_ops under the
 * name MODULE_SYMBOL; src/modules.c lists the modules' files and loads one (dlopen) only when
 * the configuration needs it, at start-up or at a RELOAD. The core calls a module only through
 * these ops and the query hook (bouncer.h) that its start installs, and never names it. A
 * module reaches the core through the core's own headers (client.h: queue to a client, raise
 * through its server; admin.h: console views and answers); the executable exports exactly the
 * core functions the modules call (core-exports.list, made at build time).
 *
 * Invariants: a module once loaded stays loaded for the life of the process (its code may be on
 * any loop's stack, its events on any loop); it is loaded once per process, however many
 * workers there are, and each worker's bouncer calls init and start itself.
 */
#ifndef SB_MODULE_H
#define SB_MODULE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <stdio.h>

struct bouncer;
struct config;
struct evbuffer;

/* The name of the struct module_ops a module's shared object exports. */
#define MODULE_SYMBOL "sb_module"

/* One database connection of a module's own (SHOW SERVERS lists them); strings are borrowed. */
struct module_conn_info {
	const void *ptr;
	const char *database, *user;
	const char *addr; /* IP address, or "unix" */
	int port;
	const char *application_name; /* as the server reports it, "" before login */
	int backend_pid;              /* 0 before login */
	int fd;                       /* -1 when there is no socket */
	bool connecting, busy, tls;
	uint64_t connect_usec; /* CLOCK_MONOTONIC, when the connection was started */
};
typedef void (*module_conn_cb)(void *arg, const struct module_conn_info *info);

/* What a module did with a console command. */
enum module_cmd {
	MODULE_CMD_UNKNOWN, /* not this module's */
	MODULE_CMD_DONE,    /* done; msg says what was done (for the log), may be empty */
	MODULE_CMD_WAIT,    /* answered later with admin_command_done / admin_command_failed */
	MODULE_CMD_REFUSED, /* msg says why (08P01 to the console) */
};
const char *module_cmd_str(enum module_cmd r);

struct module_ops {
	const char *name;    /* for logs */
	const char *version; /* PACKAGE_VERSION it was built with: the core loads only its own */
	/*
	 * Once at start-up, after the admin console exists and before start: what lives as long as
	 * the process (console views, history). False: the process does not start.
	 */
	bool (*init)(struct bouncer *b);
	/* From b->cfg: installs b->hook. False (logged): the configuration is unusable. */
	bool (*start)(struct bouncer *b);
	/*
	 * Before a RELOAD applies cfg (which it needs, see modules_check()), on worker 0: false
	 * with the reason in err when its start would refuse cfg. NULL: everything is taken.
	 */
	bool (*check)(struct bouncer *b, const struct config *cfg, char *err, size_t errsize);
	/* After the core reloaded b->cfg (RELOAD, SIGHUP). */
	void (*reload)(struct bouncer *b);
	/* At exit: stops, and frees what init made. */
	void (*shutdown)(struct bouncer *b);
	/* Its work in flight that holds database connections, for one database (NULL or "": all).
	 */
	int (*in_flight)(struct bouncer *b, const char *db);
	/* Its lines of SHOW HELP's usage, each "\n\t<usage>", shown only once it is loaded. */
	const char *help;
	/* Console commands it takes (NULL-terminated, upper case), and the handler of them. */
	const char *const *commands;
	enum module_cmd (*command)(struct bouncer *b, const char *cmd, const char *arg,
	                           uint64_t admin_id, char *msg, size_t size);
	/* The admin client admin_id went away or cancelled: it waits for nothing any more. */
	void (*admin_gone)(struct bouncer *b, uint64_t admin_id);
	/* Its Prometheus lines; written lists the families already written ("|name|" each). */
	void (*write_metrics)(struct bouncer *b, struct evbuffer *out, const char *written);
	/* The process's own database connections, on the calling thread's loop (SHOW SERVERS). */
	void (*foreach_conn)(module_conn_cb cb, void *arg);
	/* `syncbouncer --version`: a line per library it uses ("name: version"). */
	void (*print_versions)(FILE *f);
	/*
	 * With several workers (workers.h): the worker whose loop must serve the clients of
	 * database db, by b->cfg, or -1 for any. A module that keeps per-database state on one
	 * worker names it here; the core then hands such clients over to it (client.c).
	 */
	int (*home_worker)(const struct bouncer *b, const char *db);
};

/*
 * Loads (once per process) every module that cfg needs and that is not loaded yet: its file next
 * to the running executable, else in the installation's module directory. False with the file
 * and dlerror()'s text in err: a configuration that needs a module that cannot be loaded is not
 * used (the start or the RELOAD fails). Safe from any thread.
 */
bool modules_load(const struct config *cfg, char *err, size_t errsize)
        __attribute__((warn_unused_result));

/*
 * The core's calls, over the modules loaded, each on one worker's bouncer b. init and start also
 * install, while a module is not running on b, the core's watch for statements that need it
 * anyway (a module may guard settings the pooler must refuse with or without its configuration):
 * such a statement loads and starts it on b before it goes on.
 */
bool modules_init(struct bouncer *b) __attribute__((warn_unused_result));
bool modules_start(struct bouncer *b) __attribute__((warn_unused_result));
/*
 * Before a RELOAD applies cfg, from any worker b: asks each loaded module that cfg needs whether
 * it takes cfg (module_ops.check, run on worker 0). False with the module's reason in err: the
 * RELOAD fails and nothing changes.
 */
bool modules_check(struct bouncer *b, const struct config *cfg, char *err, size_t errsize)
        __attribute__((warn_unused_result));
/* After a RELOAD swapped in b->cfg: reloads the running modules, starts those it loaded. */
void modules_reload(struct bouncer *b);
void modules_shutdown(struct bouncer *b);
int modules_in_flight(struct bouncer *b, const char *db);
/* The loaded modules' SHOW HELP lines (module_ops.help), appended to buf[0..size), cut. */
void modules_help(char *buf, size_t size);
/* True when a module takes the console command cmd (case ignored). */
bool modules_knows_command(const char *cmd);
enum module_cmd modules_command(struct bouncer *b, const char *cmd, const char *arg,
                                uint64_t admin_id, char *msg, size_t size);
void modules_admin_gone(struct bouncer *b, uint64_t admin_id);
void modules_write_metrics(struct bouncer *b, struct evbuffer *out, const char *written);
/* Every module's own database connections (module_ops.foreach_conn). */
void modules_foreach_conn(module_conn_cb cb, void *arg);
/* For --version: loads what can be loaded and prints its libraries, or why it cannot be. */
void modules_print_versions(FILE *f);
/* The first module's home_worker() answer other than -1 for db, or -1. */
int modules_home_worker(const struct bouncer *b, const char *db);

#endif
