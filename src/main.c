/*
 * main — command line (pgbouncer's), start-up, signals and the event loop.
 *   syncbouncer [-d] [-q] [-v]... [-u user] [-V] [-h] config.ini
 * Start-up errors are fatal; everything after the loop starts is handled per connection.
 */
#include <ares.h>
#include <event2/event.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <pwd.h>
#include <openssl/crypto.h>
#include <openssl/opensslv.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "admin.h"
#include "auth.h"
#include "bouncer.h"
#include "client.h"
#include "config.h"
#include "conn.h"
#include "control.h"
#include "daemon.h"
#include "dns.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "module.h"
#include "pool.h"
#include "sdnotify.h"
#include "sbuf.h"
#include "server.h"
#include "stats.h"
#include "tls.h"
#include "userlist.h"
#include "version.h"
#include "workers.h"

/* the time of the read callback running (struct sbuf_clock), else the clock's */
uint64_t bouncer_now_usec(void)
{
	struct timespec ts;
	uint64_t now;

	if (sbuf_clock.usec != 0)
		return sbuf_clock.usec;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	now = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
	if (sbuf_clock.held)
		sbuf_clock.usec = now;
	return now;
}

static void usage(FILE *f, const char *prog)
{
	fprintf(f,
	        "%s is a PostgreSQL connection pooler that makes API-synced tables writable.\n\n"
	        "Usage:\n"
	        "  %s [OPTION]... CONFIG_FILE\n\n"
	        "Options:\n"
	        "  -d, --daemon         run in background (as a daemon)\n"
	        "  -q, --quiet          run quietly\n"
	        "  -R, --reboot         online restart (not supported)\n"
	        "  -u, --user=USERNAME  assume identity of USERNAME\n"
	        "  -v, --verbose        increase verbosity\n"
	        "  -V, --version        show version, then exit\n"
	        "  -h, --help           show this help, then exit\n",
	        SB_NAME, prog);
}

static void print_version(void)
{
	printf("%s\n", SB_VERSION_LINE);
	printf("libevent %s\n", event_get_version());
	printf("adns: c-ares %s\n", ares_version(NULL));
	printf("tls: %s\n", OpenSSL_version(OPENSSL_VERSION));
	fflush(stdout);
	/* what the synced tables use comes with their module, when it is installed */
	modules_print_versions(stdout);
}

static struct {
	const char *argv0;
	bool daemon;
	bool quiet;
	int verbose;
	const char *user;
} opts;

static bool daemonized;

static void apply_log_settings(const struct config *cfg)
{
	log_setup(cfg->logfile, !opts.quiet && !daemonized, cfg->syslog, cfg->syslog_ident,
	          cfg->syslog_facility, opts.verbose + cfg->verbose);
}

static void free_retired_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	conn_free_retired(arg);
}

/*
 * What a reload changes outside the pools: the log (worker 0's to set, for the process), the
 * modules (the synced-table side), and which worker serves which database.
 */
static void after_reload(struct bouncer *b)
{
	if (worker_index(b) == 0) {
		log_reopen();
		apply_log_settings(b->cfg);
	}
	modules_reload(b);
	/* a database that got synced tables is served by worker 0: its clients elsewhere go */
	client_close_served_elsewhere(b);
}

static void shutdown_one(struct bouncer *w, void *arg)
{
	control_shutdown(w, *(enum control_shutdown *)arg);
}

static void pause_one(struct bouncer *w, void *arg)
{
	bool wait;
	const char *err = control_pause(w, NULL, &wait);

	if (err != NULL && w != arg)
		log_warning("worker %d: cannot pause: %s", worker_index(w), err);
	else if (err != NULL)
		log_warning("cannot pause: %s", err);
}

static void resume_one(struct bouncer *w, void *arg)
{
	const char *err = control_resume(w, NULL);

	(void)arg;
	if (err != NULL)
		log_warning("cannot resume: %s", err);
}

/*
 * pgbouncer's signals (1.23 and later): HUP reload; TERM waits for the clients, INT for the
 * servers, either of them during a shutdown already under way: at once; QUIT at once; USR1
 * pause; USR2 resume. A shutdown asked for while suspended cannot wait for anything (the
 * sockets are frozen): it is immediate, as in pgbouncer. Worker 0 takes the signals and has
 * every worker do what they ask (workers_each()); its own state decides what that is.
 */
static void shutdown_all(struct bouncer *b, enum control_shutdown mode)
{
	workers_each(b, shutdown_one, &mode);
}

static void shutdown_signal(struct bouncer *b, const char *name, enum control_shutdown mode)
{
	if (control_shutdown_mode(b) != CONTROL_SHUTDOWN_NONE) {
		log_info("got %s while shutting down, fast exit", name);
		shutdown_all(b, CONTROL_SHUTDOWN_IMMEDIATE);
		return;
	}
	if (mode == CONTROL_SHUTDOWN_WAIT_FOR_CLIENTS)
		log_info("got %s, shutting down, waiting for all clients disconnect", name);
	else
		log_info("got %s, shutting down, waiting for all servers connections to be "
		         "released",
		         name);
	if (control_mode(b) == CONTROL_SUSPENDED) {
		log_info("suspend was in progress, going down immediately");
		mode = CONTROL_SHUTDOWN_IMMEDIATE;
	}
	shutdown_all(b, mode);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
	struct bouncer *b = arg;

	(void)what;
	switch (sig) {
	case SIGHUP:
		log_info("got SIGHUP, re-reading config");
		if (!workers_reload(b))
			log_warning("keeping the previous configuration");
		break;
	case SIGTERM:
		shutdown_signal(b, "SIGTERM", CONTROL_SHUTDOWN_WAIT_FOR_CLIENTS);
		break;
	case SIGINT:
		shutdown_signal(b, "SIGINT", CONTROL_SHUTDOWN_WAIT_FOR_SERVERS);
		break;
	case SIGQUIT:
		log_info("got SIGQUIT, fast exit");
		shutdown_all(b, CONTROL_SHUTDOWN_IMMEDIATE);
		break;
	case SIGUSR1:
		if (control_mode(b) != CONTROL_RUNNING) {
			log_info("got SIGUSR1, but already paused/suspended");
			break;
		}
		log_info("got SIGUSR1, pausing all activity");
		workers_each(b, pause_one, b);
		break;
	case SIGUSR2:
		if (control_shutdown_mode(b) != CONTROL_SHUTDOWN_NONE) {
			log_info("got SIGUSR2 while shutting down, ignoring");
			break;
		}
		if (control_mode(b) == CONTROL_RUNNING) {
			log_info("got SIGUSR2, but not paused/suspended");
			break;
		}
		log_info("got SIGUSR2, continuing from %s",
		         control_mode(b) == CONTROL_SUSPENDED ? "SUSPEND" : "PAUSE");
		workers_each(b, resume_one, NULL);
		break;
	default:
		break;
	}
}

/*
 * Descriptors the configuration can use at once: every client, every server of every configured
 * pool (the "*" entry counted once), and a margin for listeners, logs, DNS and API connections.
 */
static int nofile_wanted(const struct config *cfg)
{
	long want = (long)cfg->max_client_conn + 64;

	for (const struct cf_database *db = cfg->databases; db != NULL; db = db->next) {
		int size = db->pool_size >= 0 ? db->pool_size : cfg->default_pool_size;
		int reserve = db->reserve_pool_size >= 0 ? db->reserve_pool_size
		                                         : cfg->reserve_pool_size;
		want += size + reserve;
	}
	return want > 1048576 ? 1048576 : (int)want;
}

/*
 * What a bouncer needs from its config file beside the config itself: the auth file, TLS, the
 * hba and ident files. False with the reason in err.
 */
static bool bouncer_load_files(struct bouncer *b, char *err, size_t errsize)
{
	struct auth_files *files;

	if (b->cfg->auth_file[0]) {
		b->users = userlist_load(b->cfg->auth_file);
		if (b->users == NULL) {
			snprintf(err, errsize, "cannot load auth_file \"%s\"", b->cfg->auth_file);
			return false;
		}
	}
	if (!tls_configure(b, b->cfg, err, errsize)) {
		char why[512];
		snprintf(why, sizeof(why), "%.500s", err);
		snprintf(err, errsize, "TLS setup failed: %s", why);
		return false;
	}
	files = auth_files_load(b->cfg, err, errsize);
	if (files == NULL)
		return false;
	auth_use_files(b, files);
	return true;
}

/*
 * What worker b needs from the files, taken from worker 0 (from), which read and checked them:
 * a copy of its config, and the user list, the hba and ident files and the TLS contexts
 * shared. So the workers start on one configuration, whatever happens to the files meanwhile.
 * Runs in the main thread before b's thread starts. False when out of memory.
 */
static bool bouncer_share_files(struct bouncer *b, struct bouncer *from)
{
	b->cfg = config_copy(from->cfg);
	if (b->cfg == NULL)
		return false;
	b->users = userlist_ref(from->users);
	return tls_share(b, from) && auth_share_files(b, from);
}

/*
 * One worker's loop and everything on it: the lists, the admin console, the controls, the
 * stats, the listeners and the modules (the DNS resolver comes later, after a fork to the
 * background). False with the reason in err.
 */
static bool bouncer_build(struct bouncer *b, char *err, size_t errsize)
{
	b->base = event_base_new();
	if (b->base == NULL) {
		snprintf(err, errsize, "cannot create the event loop");
		return false;
	}
	list_init(&b->pools);
	list_init(&b->login_clients);
	list_init(&b->cancel_conns);
	list_init(&b->justfree);
	b->start_time_usec = bouncer_now_usec();
	b->ev_free = event_new(b->base, -1, 0, free_retired_cb, b);
	if (b->ev_free == NULL) {
		snprintf(err, errsize, "cannot create events");
		return false;
	}
	if (!admin_init(b) || !control_init(b, after_reload) || !stats_start(b)) {
		snprintf(err, errsize, "cannot set up the admin console");
		return false;
	}
	if (!listener_start(b)) {
		snprintf(err, errsize, "cannot start listeners");
		return false;
	}
	if (!modules_init(b)) {
		snprintf(err, errsize, "cannot set up the modules");
		return false;
	}
	return true;
}

static bool bouncer_start_dns(struct bouncer *b)
{
	struct dns_options dopts;

	memset(&dopts, 0, sizeof(dopts));
	dopts.max_ttl_usec = b->cfg->dns_max_ttl;
	dopts.nxdomain_ttl_usec = b->cfg->dns_nxdomain_ttl;
	dopts.timeout_usec = -1;
	b->dns = dns_create(b->base, &dopts);
	return b->dns != NULL;
}

/* Frees what bouncer_load_files() and bouncer_build() made, once its loop has ended. */
static void bouncer_teardown(struct bouncer *b)
{
	struct list *pit, *ptmp;

	modules_shutdown(b);
	listener_stop(b);
	admin_free(b);
	control_free(b);
	stats_stop(b);
	list_for_each_safe(pit, ptmp, &b->pools)
	{
		struct pool *pool = list_entry(pit, struct pool, head);
		struct list *lists[] = {&pool->active_clients, &pool->waiting_clients,
		                        &pool->login_clients,  &pool->idle_servers,
		                        &pool->active_servers, &pool->used_servers,
		                        &pool->tested_servers, &pool->login_servers};
		for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++) {
			struct list *it, *tmp;
			list_for_each_safe(it, tmp, lists[i])
			{
				struct conn *cn = list_entry(it, struct conn, head);
				/* the workers still running may need the places it held */
				if (cn->is_server && cn->limits_held != 0)
					pool_server_uncounted(cn);
				if (cn->dns_req != NULL)
					dns_cancel(cn->dns_req);
				if (cn->connecting)
					event_del(cn->ev_connect);
				conn_retire(cn);
			}
		}
		pool_free(pool);
	}
	{
		struct list *it, *tmp;
		list_for_each_safe(it, tmp, &b->login_clients)
		        conn_retire(list_entry(it, struct conn, head));
	}
	conn_free_retired(b);
	server_cancels_free(b);
	if (b->dns != NULL)
		dns_free(b->dns);
	workers_detach(b);
	event_free(b->ev_free);
	event_base_free(b->base);
	auth_shutdown(b);
	if (b->users != NULL)
		userlist_free(b->users);
	tls_free(b);
}

/*
 * The body of workers 1..n-1, in a thread of their own: the same set-up as worker 0 on what
 * worker 0 read (bouncer_share_files()), then the loop, then the teardown. Everything a worker
 * makes is its thread's alone.
 */
static void worker_run(struct bouncer *b)
{
	char err[1024] = "";
	bool ok;

	ok = bouncer_build(b, err, sizeof(err));
	if (ok && !bouncer_start_dns(b)) {
		snprintf(err, sizeof(err), "cannot start the DNS resolver");
		ok = false;
	}
	if (ok && !modules_start(b)) {
		snprintf(err, sizeof(err), "cannot set up the synced tables");
		ok = false;
	}
	if (ok && !workers_mailbox_open(b)) {
		snprintf(err, sizeof(err), "cannot open its mailbox");
		ok = false;
	}
	if (!ok) {
		/* the process exits: what was made is left to it */
		log_error("worker %d: %s", worker_index(b), err);
		(void)workers_ready(b, false);
		return;
	}
	(void)workers_ready(b, true);
	event_base_dispatch(b->base);
	workers_stopped(b);
	workers_serial(b, true);
	bouncer_teardown(b);
	config_free(b->cfg);
	conn_thread_done();
	sbuf_thread_done();
	workers_serial(b, false);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
	        {"daemon", no_argument, NULL, 'd'},  {"quiet", no_argument, NULL, 'q'},
	        {"verbose", no_argument, NULL, 'v'}, {"user", required_argument, NULL, 'u'},
	        {"version", no_argument, NULL, 'V'}, {"help", no_argument, NULL, 'h'},
	        {"reboot", no_argument, NULL, 'R'},  {NULL, 0, NULL, 0},
	};
	static const int signals[] = {SIGHUP, SIGINT, SIGTERM, SIGQUIT, SIGUSR1, SIGUSR2};
	struct event *sigev[sizeof(signals) / sizeof(signals[0])];
	struct bouncer b;
	struct bouncer *wb = NULL; /* workers 1..n-1 (index 0 unused) */
	struct workers *ws = NULL;
	int c, nworkers;
	bool pidfile_written = false, ares_initialised = false;

	memset(&b, 0, sizeof(b));
	opts.argv0 = argv[0];
	while ((c = getopt_long(argc, argv, "dqvu:VhR", longopts, NULL)) != -1) {
		switch (c) {
		case 'd':
			opts.daemon = true;
			break;
		case 'q':
			opts.quiet = true;
			break;
		case 'v':
			opts.verbose++;
			break;
		case 'u':
			opts.user = optarg;
			break;
		case 'V':
			print_version();
			return 0;
		case 'h':
			usage(stdout, argv[0]);
			return 0;
		case 'R':
			fprintf(stderr, "online restart (-R) is not supported: for a restart "
			                "without downtime, set so_reuseport = 1, start the new "
			                "process, then SIGTERM the old one (see syncbouncer(1))\n");
			return 1;
		default:
			usage(stderr, argv[0]);
			return 1;
		}
	}
	if (optind + 1 != argc) {
		fprintf(stderr, "Need config file.  See %s -h for usage.\n", argv[0]);
		return 1;
	}
	log_setup("", !opts.quiet, false, NULL, NULL, opts.verbose);
	b.config_path = argv[optind];
	if (!config_load(b.config_path, &b.cfg))
		fatal("cannot load config file \"%s\"", b.config_path);
	apply_log_settings(b.cfg);
	nworkers = config_workers(b.cfg);
	{
		/* before any other thread: the modules this configuration needs, or no start */
		char err[PATH_MAX + 512];
		if (!modules_load(b.cfg, err, sizeof(err)))
			fatal("%s", err);
	}

	if (opts.user == NULL && b.cfg->user[0])
		opts.user = b.cfg->user;
	if (geteuid() == 0 && opts.user == NULL)
		fatal("syncbouncer should not run as root");
	if (opts.daemon && !b.cfg->pidfile[0])
		fatal("daemon needs pidfile configured");
	if (b.cfg->pidfile[0] && !daemon_check_pidfile(b.cfg->pidfile))
		exit(1);
	if (nworkers > 1) {
		/*
		 * before the auth files are loaded (the mock users' key is the workers'); the
		 * listeners of the others are opened below, before the user changes
		 */
		ws = workers_new(nworkers);
		wb = calloc((size_t)nworkers, sizeof(*wb));
		if (ws == NULL || wb == NULL)
			fatal("out of memory");
		workers_attach(ws, 0, &b);
		for (int i = 1; i < nworkers; i++) {
			wb[i].config_path = b.config_path;
			workers_attach(ws, i, &wb[i]);
		}
	}
	{
		char err[1024];
		if (!bouncer_load_files(&b, err, sizeof(err)))
			fatal("%s", err);
	}
	(void)daemon_set_nofile(nofile_wanted(b.cfg));

	signal(SIGPIPE, SIG_IGN);
	{
		char err[1024];
		if (!bouncer_build(&b, err, sizeof(err)))
			fatal("%s", err);
	}
	for (int i = 1; i < nworkers; i++)
		if (!listener_share(&b, &wb[i]))
			fatal("cannot start listeners for worker %d", i);
	if (!metrics_start(&b))
		fatal("cannot start the metrics endpoint (metrics_listen = %s)",
		      b.cfg->metrics_listen);
	if (opts.user != NULL && geteuid() == 0 && b.cfg->logfile[0]) {
		/* the logfile was opened as root: hand it over, or a reopen (SIGHUP) would fail */
		struct passwd *pw = getpwnam(opts.user);
		if (pw != NULL && chown(b.cfg->logfile, pw->pw_uid, pw->pw_gid) != 0)
			log_warning("cannot give the logfile to user \"%s\": %s", opts.user,
				    strerror(errno));
	}
	if (opts.user != NULL && geteuid() == 0 && !daemon_change_user(opts.user))
		fatal("cannot switch to user \"%s\"", opts.user);
	if (opts.daemon) {
		if (!daemon_go_background())
			fatal("cannot go to background");
		daemonized = true;
		apply_log_settings(b.cfg);
		/* libevent's backend fd does not survive fork() on every method */
		if (event_reinit(b.base) != 0)
			fatal("cannot re-initialise the event loop after fork");
	}
	if (b.cfg->pidfile[0]) {
		if (!daemon_write_pidfile(b.cfg->pidfile))
			fatal("cannot write pidfile \"%s\"", b.cfg->pidfile);
		pidfile_written = true;
	}
	if (!bouncer_start_dns(&b))
		fatal("cannot start the DNS resolver");

	for (size_t i = 0; i < sizeof(signals) / sizeof(signals[0]); i++) {
		sigev[i] = evsignal_new(b.base, signals[i], on_signal, &b);
		if (sigev[i] == NULL || event_add(sigev[i], NULL) != 0)
			fatal("cannot set up signal handling");
	}
	if (ws != NULL) {
		/*
		 * every worker up before the process says it is; the process-wide
		 * initialisations once, before any other thread runs
		 */
		if (ares_library_init(ARES_LIB_INIT_ALL) != ARES_SUCCESS)
			fatal("cannot initialise c-ares");
		ares_initialised = true;
		if (!workers_mailbox_open(&b))
			fatal("cannot set up the workers' mailboxes");
		workers_test_after_check();
		for (int i = 1; i < nworkers; i++)
			if (!bouncer_share_files(&wb[i], &b))
				fatal("out of memory setting up worker %d", i);
		if (!workers_start(ws, worker_run))
			fatal("cannot start the workers");
		log_info("%d workers running", nworkers);
	}
	log_info("process up: %s, libevent %s (%s), adns: c-ares %s, tls: %s", SB_VERSION_LINE,
	         event_get_version(), event_base_get_method(b.base), ares_version(NULL),
	         OpenSSL_version(OPENSSL_VERSION));

	if (!modules_start(&b))
		fatal("cannot set up the synced tables");
	/* listening (or handed our sockets), in the background if asked, pidfile written */
	(void)sdnotify("READY=1\nSTATUS=accepting connections\nMAINPID=%ld", (long)getpid());

	event_base_dispatch(b.base);
	if (ws != NULL) {
		/* the others may still be finishing: keep answering signals and mail meanwhile */
		workers_stopped(&b);
		while (workers_running(ws) > 0)
			event_base_loop(b.base, EVLOOP_ONCE);
		workers_join(ws);
	}

	log_info("shutting down");
	metrics_stop(&b);
	for (size_t i = 0; i < sizeof(signals) / sizeof(signals[0]); i++)
		event_free(sigev[i]);
	bouncer_teardown(&b);
	if (pidfile_written)
		daemon_remove_pidfile(b.cfg->pidfile);
	config_free(b.cfg);
	if (ws != NULL) {
		workers_free(ws);
		free(wb);
	}
	if (ares_initialised)
		ares_library_cleanup();
	log_reopen();
	return 0;
}
