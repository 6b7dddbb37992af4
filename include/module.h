/*
 * module — the seam between the pooler core and a module that extends it (the synced-table side
 * is one). A module registers one struct module_ops in sb_modules[] (src/modules.c); the core
 * calls it only through these ops and the query hook (bouncer.h) that its start installs, and
 * never names it. A module reaches the core through the core's own headers (client.h: queue to a
 * client, raise through its server; admin.h: console views and answers).
 */
#ifndef SB_MODULE_H
#define SB_MODULE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct bouncer;
struct evbuffer;

/* What a module did with a console command. */
enum module_cmd {
	MODULE_CMD_UNKNOWN, /* not this module's */
	MODULE_CMD_DONE,    /* done; msg says what was done (for the log), may be empty */
	MODULE_CMD_WAIT,    /* answered later with admin_command_done / admin_command_failed */
	MODULE_CMD_REFUSED, /* msg says why (08P01 to the console) */
};
const char *module_cmd_str(enum module_cmd r);

struct module_ops {
	const char *name; /* for logs */
	/*
	 * Once at start-up, after the admin console exists and before start: what lives as long as
	 * the process (console views, history). False: the process does not start.
	 */
	bool (*init)(struct bouncer *b);
	/* From b->cfg: installs b->hook. False (logged): the configuration is unusable. */
	bool (*start)(struct bouncer *b);
	/* After the core reloaded b->cfg (RELOAD, SIGHUP). */
	void (*reload)(struct bouncer *b);
	/* At exit: stops, and frees what init made. */
	void (*shutdown)(struct bouncer *b);
	/* Its work in flight that holds database connections, for one database (NULL or "": all).
	 */
	int (*in_flight)(struct bouncer *b, const char *db);
	/* Console commands it takes (NULL-terminated, upper case), and the handler of them. */
	const char *const *commands;
	enum module_cmd (*command)(struct bouncer *b, const char *cmd, const char *arg,
	                           uint64_t admin_id, char *msg, size_t size);
	/* The admin client admin_id went away or cancelled: it waits for nothing any more. */
	void (*admin_gone)(struct bouncer *b, uint64_t admin_id);
	/* Its Prometheus lines; written lists the families already written ("|name|" each). */
	void (*write_metrics)(struct bouncer *b, struct evbuffer *out, const char *written);
	/*
	 * With several workers (workers.h): the worker whose loop must serve the clients of
	 * database db, by b->cfg, or -1 for any. A module that keeps per-database state on one
	 * worker names it here; the core then hands such clients over to it (client.c).
	 */
	int (*home_worker)(const struct bouncer *b, const char *db);
};

/* The modules linked in, NULL-terminated (src/modules.c). */
extern const struct module_ops *const sb_modules[];

/* The core's calls, each over every module in order. */
bool modules_init(struct bouncer *b) __attribute__((warn_unused_result));
bool modules_start(struct bouncer *b) __attribute__((warn_unused_result));
void modules_reload(struct bouncer *b);
void modules_shutdown(struct bouncer *b);
int modules_in_flight(struct bouncer *b, const char *db);
/* True when a module takes the console command cmd (case ignored). */
bool modules_knows_command(const char *cmd);
enum module_cmd modules_command(struct bouncer *b, const char *cmd, const char *arg,
                                uint64_t admin_id, char *msg, size_t size);
void modules_admin_gone(struct bouncer *b, uint64_t admin_id);
void modules_write_metrics(struct bouncer *b, struct evbuffer *out, const char *written);
/* The first module's home_worker() answer other than -1 for db, or -1. */
int modules_home_worker(const struct bouncer *b, const char *db);

#endif
