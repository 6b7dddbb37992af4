/*
 * modules — the pooler's modules, each a shared object loaded only when it is needed, and the
 * core's calls over them (include/module.h). This is the only place that knows which modules
 * there are: their files, what in a configuration needs each, and what in a statement does.
 *
 * A module's file is looked for next to the running executable (the build tree, a relocated
 * installation), then in the installation's module directory (SB_MODULE_DIR, $(pkglibdir)). The
 * first file found is the one used: if it cannot be loaded, that is the answer (no other copy is
 * tried behind the user's back). A module built for another version is refused.
 *
 * Invariants: loaded[] only ever goes from NULL to a module (never unloaded); loading is
 * serialised by load_mu, so a module is loaded once per process whatever the workers do. The
 * per-bouncer bits (modules_inited, modules_started) belong to that bouncer's thread. While a
 * module that statements may need is not running on a bouncer, the core's watch (watch_inspect)
 * is that bouncer's query hook: nothing a module would refuse goes by unseen.
 */
#include "module.h"

#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "bouncer.h"
#include "client.h"
#include "config.h"
#include "conn.h"
#include "log.h"
#include "proto.h"
#include "sbuf.h"
#include "workers.h"

#ifndef SB_MODULE_DIR
#error "SB_MODULE_DIR (the installed modules' directory) comes from the Makefile"
#endif

struct module_file {
	const char *file; /* its shared object, in one of the directories above */
	const char *what; /* for messages */
	/* the configuration uses it: loaded at start-up or at the RELOAD, or neither starts */
	bool (*needed)(const struct config *cfg);
	/*
	 * statements that contain one of these (any case) need it even when the configuration
	 * does not (NULL: none); a spelling is at most 15 bytes (query_hook.stream_needles)
	 */
	const char *const *needles;
};

static bool synced_needed(const struct config *cfg)
{
	return cfg->synced_tables != NULL || cfg->apis != NULL;
}

/*
 * The synced-table side refuses every syncbouncer.* setting, with [synced_tables] or without (a
 * server that took one would keep it in the pool for the next client, and for a RELOAD that adds
 * synced tables). Only its classifier (the PostgreSQL grammar) tells a SET of one from a read of
 * one, so a statement with a spelling that could reach one loads it: the setting's prefix, the
 * function, a Unicode escape (the same spellings as classifier_setting_needles()).
 */
static const char *const synced_needles[] = {"syncbouncer", "set_config", "u&", NULL};

static const struct module_file module_files[] = {
        {"synced.so", "synced tables", synced_needed, synced_needles},
};
#define NMODULES (sizeof(module_files) / sizeof(module_files[0]))

static pthread_mutex_t load_mu = PTHREAD_MUTEX_INITIALIZER;
static _Atomic(const struct module_ops *) loaded[NMODULES];

const char *module_cmd_str(enum module_cmd r)
{
	switch (r) {
	case MODULE_CMD_UNKNOWN:
		return "unknown";
	case MODULE_CMD_DONE:
		return "done";
	case MODULE_CMD_WAIT:
		return "wait";
	case MODULE_CMD_REFUSED:
		return "refused";
	}
	return "?";
}

static const struct module_ops *module_at(size_t i)
{
	return atomic_load(&loaded[i]);
}

/* The running executable's directory, or "" when /proc cannot say. */
static void exe_dir(char *dir, size_t size)
{
	static const char deleted[] = " (deleted)"; /* the file was replaced since it started */
	ssize_t n = readlink("/proc/self/exe", dir, size - 1);
	char *slash;

	if (n <= 0) {
		dir[0] = '\0';
		return;
	}
	dir[n] = '\0';
	if ((size_t)n > sizeof(deleted) - 1 &&
	    strcmp(dir + n - (sizeof(deleted) - 1), deleted) == 0)
		dir[n - (sizeof(deleted) - 1)] = '\0';
	slash = strrchr(dir, '/');
	if (slash == NULL)
		dir[0] = '\0';
	else
		*slash = '\0';
}

/* Loads module i if it is not loaded yet. False with the reason in err. */
static bool load_one(size_t i, bool quiet, char *err, size_t errsize)
{
	const struct module_file *mf = &module_files[i];
	char exe[PATH_MAX], path[PATH_MAX + 64];
	const char *dirs[2];
	int ndirs = 0;
	bool ok = false;

	if (module_at(i) != NULL)
		return true;
	pthread_mutex_lock(&load_mu);
	if (module_at(i) != NULL) {
		ok = true;
		goto out;
	}
	exe_dir(exe, sizeof(exe));
	if (exe[0])
		dirs[ndirs++] = exe;
	dirs[ndirs++] = SB_MODULE_DIR;
	for (int d = 0; d < ndirs; d++) {
		const struct module_ops *ops;
		void *h;

		snprintf(path, sizeof(path), "%s/%s", dirs[d], mf->file);
		if (access(path, F_OK) != 0)
			continue;
		h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
		if (h == NULL) {
			const char *why = dlerror();
			snprintf(err, errsize, "cannot load module \"%s\": %s", path,
			         why != NULL ? why : "unknown error");
			goto out;
		}
		ops = dlsym(h, MODULE_SYMBOL);
		if (ops == NULL || ops->version == NULL) {
			snprintf(err, errsize, "cannot load module \"%s\": it has no %s", path,
			         MODULE_SYMBOL);
			dlclose(h);
			goto out;
		}
		if (strcmp(ops->version, PACKAGE_VERSION) != 0) {
			snprintf(err, errsize,
			         "cannot load module \"%s\": it is version %s, the pooler %s", path,
			         ops->version, PACKAGE_VERSION);
			dlclose(h);
			goto out;
		}
		atomic_store(&loaded[i], ops);
		if (!quiet)
			log_info("loaded module %s (%s)", path, ops->name);
		ok = true;
		goto out;
	}
	if (ndirs == 2)
		snprintf(err, errsize, "cannot load module %s: not found in %s nor %s", mf->file,
		         dirs[0], dirs[1]);
	else
		snprintf(err, errsize, "cannot load module %s: not found in %s", mf->file, dirs[0]);
out:
	pthread_mutex_unlock(&load_mu);
	return ok;
}

bool modules_load(const struct config *cfg, char *err, size_t errsize)
{
	for (size_t i = 0; i < NMODULES; i++) {
		if (module_at(i) != NULL || !module_files[i].needed(cfg))
			continue;
		if (!load_one(i, false, err, errsize)) {
			char why[PATH_MAX + 512];
			snprintf(why, sizeof(why), "%s", err);
			snprintf(err, errsize, "%s (the configuration has %s)", why,
			         module_files[i].what);
			return false;
		}
	}
	return true;
}

struct check_arg {
	const struct config *cfg;
	char *err;
	size_t errsize;
	bool ok;
};

/* The modules keep their state on worker 0 (their HTTP engine, their loop): they check there. */
static void check_worker(struct bouncer *w, void *arg)
{
	struct check_arg *ca = arg;

	if (worker_index(w) != 0)
		return;
	for (size_t i = 0; i < NMODULES && ca->ok; i++) {
		const struct module_ops *m = module_at(i);
		if (m == NULL || m->check == NULL || !module_files[i].needed(ca->cfg))
			continue;
		ca->ok = m->check(w, ca->cfg, ca->err, ca->errsize);
	}
}

bool modules_check(struct bouncer *b, const struct config *cfg, char *err, size_t errsize)
{
	struct check_arg ca = {cfg, err, errsize, true};

	workers_each(b, check_worker, &ca);
	return ca.ok;
}

/* ---- the watch: statements that need a module not running yet ---------------------------- */

/* The module (not running on b) that sql[0..len) needs, or -1. */
static int needed_by(const struct bouncer *b, const char *sql, size_t len)
{
	for (size_t i = 0; i < NMODULES; i++) {
		const char *const *nd = module_files[i].needles;
		if (nd == NULL || (b->modules_started & (1u << i)))
			continue;
		if (proto_text_has_any_ci(sql, len, nd))
			return (int)i;
	}
	return -1;
}

static enum hook_verdict watch_inspect(void *ctx, struct conn *c, const struct sbuf_pkt *pkt);

/* Makes the watch b's query hook while b has no other and a module statements need is off. */
static void watch_install(struct bouncer *b)
{
	if (b->hook.inspect != NULL && b->hook.inspect != watch_inspect)
		return;
	memset(&b->hook, 0, sizeof(b->hook));
	for (size_t i = 0; i < NMODULES; i++) {
		if (module_files[i].needles == NULL || (b->modules_started & (1u << i)))
			continue;
		b->hook.inspect = watch_inspect;
		b->hook.stream_needles = module_files[i].needles;
		return;
	}
}

/* Module i through init (once per bouncer) and start on b. False (logged by it) on failure. */
static bool start_one(struct bouncer *b, size_t i)
{
	const struct module_ops *m = module_at(i);
	unsigned bit = 1u << i;

	if (!(b->modules_inited & bit)) {
		if (m->init != NULL && !m->init(b))
			return false;
		b->modules_inited |= bit;
	}
	if (m->start != NULL && !m->start(b)) {
		/* a failed start leaves no hook of its own: the watch goes on */
		watch_install(b);
		return false;
	}
	b->modules_started |= bit;
	return true;
}

/*
 * A statement needs module i: it is loaded (once per process) and started on this loop, and
 * its hook then decides. A statement that cannot be checked ends the client's connection.
 */
static enum hook_verdict wake(struct conn *c, const struct sbuf_pkt *pkt, size_t i)
{
	struct bouncer *b = c->b;
	char err[PATH_MAX + 256], msg[PATH_MAX + 384];

	if (!load_one(i, false, err, sizeof(err))) {
		log_error("%s", err);
	} else if (!start_one(b, i)) {
		snprintf(err, sizeof(err), "module %s cannot start (see the log)",
		         module_files[i].file);
		log_error("%s", err);
	} else if (b->hook.inspect != NULL && b->hook.inspect != watch_inspect) {
		return b->hook.inspect(b->hook.ctx, c, pkt);
	} else {
		snprintf(err, sizeof(err), "module %s installed no query hook",
		         module_files[i].file);
		log_error("%s", err);
	}
	snprintf(msg, sizeof(msg), "statement not checked: it needs the %s module: %s",
	         module_files[i].what, err);
	client_fatal(c, "58000", msg);
	return HOOK_CLOSED;
}

/*
 * The query hook while no module runs on the loop: Query and Parse texts are searched for the
 * needles of the modules statements may need. Like a module's own hook, it looks at a statement
 * only once it is whole in memory; one too big to hold is decided on its prefix (WAIT: the core
 * refuses it) and streams under the core's search for the same needles.
 */
static enum hook_verdict watch_inspect(void *ctx, struct conn *c, const struct sbuf_pkt *pkt)
{
	const char *sql, *stmt;
	size_t len;
	uint16_t nparams;
	int i;

	(void)ctx;
	if (c->admin || c->pool == NULL)
		return HOOK_PASS;
	switch (pkt->type) {
	case PQMSG_QUERY:
		sql = (const char *)pkt->body;
		if (!pkt->complete) {
			if (!pkt->too_big)
				return HOOK_WAIT;
			return needed_by(c->b, sql, pkt->body_avail) >= 0 ? HOOK_WAIT : HOOK_PASS;
		}
		if (pkt->body_len == 0 || pkt->body[pkt->body_len - 1] != '\0')
			return HOOK_PASS; /* malformed: PostgreSQL answers it */
		len = pkt->body_len - 1;
		break;
	case PQMSG_PARSE:
		if (!pkt->complete) {
			/* the statement's name comes first: the text after it is the prefix */
			const void *nul = memchr(pkt->body, '\0', pkt->body_avail);
			size_t skip = nul ? (size_t)((const uint8_t *)nul - pkt->body) + 1 : 0;
			if (!pkt->too_big || nul == NULL)
				return HOOK_WAIT;
			return needed_by(c->b, (const char *)pkt->body + skip,
			                 pkt->body_avail - skip) >= 0
			               ? HOOK_WAIT
			               : HOOK_PASS;
		}
		if (!proto_parse_parse(pkt->body, pkt->body_len, &stmt, &sql, &len, &nparams))
			return HOOK_PASS;
		break;
	default:
		return HOOK_PASS;
	}
	i = needed_by(c->b, sql, len);
	return i < 0 ? HOOK_PASS : wake(c, pkt, (size_t)i);
}

/* ---- the core's calls ------------------------------------------------------------------- */

bool modules_init(struct bouncer *b)
{
	for (size_t i = 0; i < NMODULES; i++) {
		const struct module_ops *m = module_at(i);
		if (m == NULL || (b->modules_inited & (1u << i)))
			continue;
		if (m->init != NULL && !m->init(b))
			return false;
		b->modules_inited |= 1u << i;
	}
	return true;
}

bool modules_start(struct bouncer *b)
{
	for (size_t i = 0; i < NMODULES; i++) {
		const struct module_ops *m = module_at(i);
		if (m == NULL || !(b->modules_inited & (1u << i)) ||
		    (b->modules_started & (1u << i)))
			continue;
		if (m->start != NULL && !m->start(b))
			return false;
		b->modules_started |= 1u << i;
	}
	watch_install(b);
	return true;
}

void modules_reload(struct bouncer *b)
{
	for (size_t i = 0; i < NMODULES; i++) {
		const struct module_ops *m = module_at(i);
		if (m == NULL)
			continue;
		if (b->modules_started & (1u << i)) {
			if (m->reload != NULL)
				m->reload(b);
		} else if (module_files[i].needed(b->cfg) && !start_one(b, i)) {
			log_error("%s: cannot start after the RELOAD; see the messages above",
			          m->name);
		}
	}
	watch_install(b);
}

void modules_shutdown(struct bouncer *b)
{
	for (size_t i = 0; i < NMODULES; i++) {
		const struct module_ops *m = module_at(i);
		if (m == NULL || !(b->modules_inited & (1u << i)))
			continue;
		if (m->shutdown != NULL)
			m->shutdown(b);
		b->modules_inited &= ~(1u << i);
		b->modules_started &= ~(1u << i);
	}
}

int modules_in_flight(struct bouncer *b, const char *db)
{
	int n = 0;

	for (size_t i = 0; i < NMODULES; i++) {
		const struct module_ops *m = module_at(i);
		if (m != NULL && (b->modules_started & (1u << i)) && m->in_flight != NULL)
			n += m->in_flight(b, db);
	}
	return n;
}

static int command_owner(const char *cmd)
{
	for (size_t i = 0; i < NMODULES; i++) {
		const struct module_ops *m = module_at(i);
		for (int k = 0; m != NULL && m->commands != NULL && m->commands[k]; k++)
			if (strcasecmp(m->commands[k], cmd) == 0)
				return (int)i;
	}
	return -1;
}

void modules_help(char *buf, size_t size)
{
	size_t len = strnlen(buf, size);

	for (size_t i = 0; i < NMODULES && len + 1 < size; i++) {
		const struct module_ops *m = module_at(i);
		if (m == NULL || m->help == NULL)
			continue;
		snprintf(buf + len, size - len, "%s", m->help);
		len = strnlen(buf, size);
	}
}

bool modules_knows_command(const char *cmd)
{
	return command_owner(cmd) >= 0;
}

enum module_cmd modules_command(struct bouncer *b, const char *cmd, const char *arg,
                                uint64_t admin_id, char *msg, size_t size)
{
	int i = command_owner(cmd);
	const struct module_ops *m = i >= 0 ? module_at((size_t)i) : NULL;

	if (size > 0)
		msg[0] = '\0';
	if (m == NULL || m->command == NULL || !(b->modules_inited & (1u << i)))
		return MODULE_CMD_UNKNOWN;
	return m->command(b, cmd, arg, admin_id, msg, size);
}

void modules_admin_gone(struct bouncer *b, uint64_t admin_id)
{
	for (size_t i = 0; i < NMODULES; i++) {
		const struct module_ops *m = module_at(i);
		if (m != NULL && (b->modules_inited & (1u << i)) && m->admin_gone != NULL)
			m->admin_gone(b, admin_id);
	}
}

void modules_write_metrics(struct bouncer *b, struct evbuffer *out, const char *written)
{
	for (size_t i = 0; i < NMODULES; i++) {
		const struct module_ops *m = module_at(i);
		if (m != NULL && (b->modules_inited & (1u << i)) && m->write_metrics != NULL)
			m->write_metrics(b, out, written);
	}
}

void modules_foreach_conn(module_conn_cb cb, void *arg)
{
	for (size_t i = 0; i < NMODULES; i++) {
		const struct module_ops *m = module_at(i);
		if (m != NULL && m->foreach_conn != NULL)
			m->foreach_conn(cb, arg);
	}
}

void modules_print_versions(FILE *f)
{
	for (size_t i = 0; i < NMODULES; i++) {
		char err[PATH_MAX + 256];
		const struct module_ops *m;

		if (!load_one(i, true, err, sizeof(err))) {
			fprintf(f, "%s: module not available: %s\n", module_files[i].what, err);
			continue;
		}
		m = module_at(i);
		if (m->print_versions != NULL)
			m->print_versions(f);
	}
}

int modules_home_worker(const struct bouncer *b, const char *db)
{
	for (size_t i = 0; i < NMODULES; i++) {
		const struct module_ops *m = module_at(i);
		int w = m != NULL && m->home_worker != NULL ? m->home_worker(b, db) : -1;
		if (w >= 0)
			return w;
	}
	return -1;
}
