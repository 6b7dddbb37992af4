/*
 * Unit tests of the configuration module: every setting's default, the file format pgbouncer
 * users write, %include, the new [apis] and [synced_tables] sections, errors with file:line,
 * SET and secrets.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "config.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef TEST_SRCDIR
#define TEST_SRCDIR "."
#endif
#define DATA TEST_SRCDIR "/test/unit/data"

/* ---- helpers -------------------------------------------------------------------------------- */

struct msgs {
	int nwarn, nerr;
	char text[64][1024];
	int n;
};

static void collect(void *arg, enum cf_level level, const char *msg)
{
	struct msgs *m = arg;

	if (level == CF_LEVEL_ERROR)
		m->nerr++;
	else
		m->nwarn++;
	if (m->n < 64)
		snprintf(m->text[m->n++], sizeof(m->text[0]), "%s", msg);
}

static bool msgs_have(const struct msgs *m, const char *needle)
{
	for (int i = 0; i < m->n; i++) {
		if (strstr(m->text[i], needle))
			return true;
	}
	return false;
}

static void msgs_print(const struct msgs *m)
{
	for (int i = 0; i < m->n; i++)
		print_message("  msg: %s\n", m->text[i]);
}

static bool load_text(const char *text, struct config **cfg, struct msgs *m)
{
	struct cf_load_opts opts = {.report = collect, .arg = m, .quiet = true};

	memset(m, 0, sizeof(*m));
	return config_load_buffer_opts(text, strlen(text), "test.ini", &opts, cfg);
}

static bool load_path(const char *path, struct config **cfg, struct msgs *m)
{
	struct cf_load_opts opts = {.report = collect, .arg = m, .quiet = true};

	memset(m, 0, sizeof(*m));
	return config_load_opts(path, &opts, cfg);
}

static char tmpdir[PATH_MAX];

static void write_file(const char *rel, const char *text)
{
	char path[PATH_MAX * 2];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", tmpdir, rel);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static const char *tmp_path(const char *rel)
{
	static char path[PATH_MAX * 2];

	snprintf(path, sizeof(path), "%s/%s", tmpdir, rel);
	return path;
}

static void fmt(const struct config *cfg, const char *key, char *buf, size_t size)
{
	int i = config_key_index(key);

	assert_true(i >= 0);
	config_key_format(cfg, i, buf, size);
}

/* ---- the table ------------------------------------------------------------------------------ */

/* Every setting pgbouncer 1.25 knows on Unix; a pgbouncer.ini using any of them must load. */
static const char *const pgbouncer_keys[] = {
        "admin_users",
        "application_name_add_host",
        "auth_dbname",
        "auth_file",
        "auth_hba_file",
        "auth_ident_file",
        "auth_ldap_options",
        "auth_query",
        "auth_type",
        "auth_user",
        "autodb_idle_timeout",
        "cancel_wait_timeout",
        "client_idle_timeout",
        "client_login_timeout",
        "client_tls13_ciphers",
        "client_tls_ca_file",
        "client_tls_cert_file",
        "client_tls_ciphers",
        "client_tls_dheparams",
        "client_tls_ecdhcurve",
        "client_tls_key_file",
        "client_tls_protocols",
        "client_tls_sslmode",
        "conffile",
        "default_pool_size",
        "disable_pqexec",
        "dns_max_ttl",
        "dns_nxdomain_ttl",
        "dns_zone_check_period",
        "idle_transaction_timeout",
        "ignore_startup_parameters",
        "job_name",
        "listen_addr",
        "listen_backlog",
        "listen_port",
        "log_connections",
        "log_disconnections",
        "log_pooler_errors",
        "log_stats",
        "logfile",
        "max_client_conn",
        "max_db_client_connections",
        "max_db_connections",
        "max_packet_size",
        "max_prepared_statements",
        "max_user_client_connections",
        "max_user_connections",
        "min_pool_size",
        "peer_id",
        "pidfile",
        "pkt_buf",
        "pool_mode",
        "query_timeout",
        "query_wait_notify",
        "query_wait_timeout",
        "reserve_pool_size",
        "reserve_pool_timeout",
        "resolv_conf",
        "sbuf_loopcnt",
        "scram_iterations",
        "server_check_delay",
        "server_check_query",
        "server_connect_timeout",
        "server_fast_close",
        "server_idle_timeout",
        "server_lifetime",
        "server_login_retry",
        "server_reset_query",
        "server_reset_query_always",
        "server_round_robin",
        "server_tls13_ciphers",
        "server_tls_ca_file",
        "server_tls_cert_file",
        "server_tls_ciphers",
        "server_tls_key_file",
        "server_tls_protocols",
        "server_tls_sslmode",
        "so_reuseport",
        "stats_period",
        "stats_users",
        "suspend_timeout",
        "syslog",
        "syslog_facility",
        "syslog_ident",
        "tcp_defer_accept",
        "tcp_keepalive",
        "tcp_keepcnt",
        "tcp_keepidle",
        "tcp_keepintvl",
        "tcp_socket_buffer",
        "tcp_user_timeout",
        "track_extra_parameters",
        "transaction_timeout",
        "unix_socket_dir",
        "unix_socket_group",
        "unix_socket_mode",
        "user",
        "verbose",
};

static void test_table_has_every_pgbouncer_key(void **state)
{
	size_t n = sizeof(pgbouncer_keys) / sizeof(pgbouncer_keys[0]);

	(void)state;
	for (size_t i = 0; i < n; i++) {
		if (config_key_index(pgbouncer_keys[i]) < 0)
			fail_msg("setting %s is missing from the table", pgbouncer_keys[i]);
	}
	/* plus syncbouncer's own settings */
	static const char *const own[] = {"journal_file",  "log_mutations",    "metrics_listen",
	                                  "metrics_users", "mutation_history", "settle_deadline",
	                                  "workers"};
	for (size_t i = 0; i < sizeof(own) / sizeof(own[0]); i++)
		assert_true(config_key_index(own[i]) >= 0);
	assert_int_equal(config_key_count(), (int)(n + sizeof(own) / sizeof(own[0])));
	/* SHOW CONFIG lists them alphabetically, like pgbouncer */
	for (int i = 1; i < config_key_count(); i++)
		assert_true(strcmp(config_key_name(i - 1), config_key_name(i)) < 0);
	assert_int_equal(config_key_index("LISTEN_PORT"), config_key_index("listen_port"));
	assert_int_equal(config_key_index("no_such_setting"), -1);
	assert_null(config_key_name(config_key_count()));
}

/* pgbouncer's documented defaults, as SHOW CONFIG prints them. */
static void test_defaults_are_pgbouncers(void **state)
{
	static const struct {
		const char *key, *value;
	} cases[] = {
	        {"listen_port", "6432"},
	        {"max_client_conn", "100"},
	        {"default_pool_size", "20"},
	        {"pool_mode", "session"},
	        {"auth_type", "md5"},
	        {"server_reset_query", "DISCARD ALL"},
	        {"server_check_query", "<empty>"},
	        {"server_lifetime", "3600"},
	        {"server_idle_timeout", "600"},
	        {"query_wait_timeout", "120"},
	        {"max_prepared_statements", "200"},
	        {"scram_iterations", "4096"},
	        {"pkt_buf", "4096"},
	        {"max_packet_size", "2147483647"},
	        {"unix_socket_dir", "/tmp"},
	        {"unix_socket_mode", "0777"},
	        {"server_tls_sslmode", "prefer"},
	        {"client_tls_sslmode", "disable"},
	        {"track_extra_parameters", "IntervalStyle"},
	        {"query_wait_notify", "5"},
	        {"cancel_wait_timeout", "10"},
	        {"log_connections", "1"},
	        {"tcp_keepalive", "1"},
	        {"client_tls_protocols", "secure"},
	};
	struct config *cfg = config_new_defaults();
	char buf[512];

	(void)state;
	assert_non_null(cfg);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		fmt(cfg, cases[i].key, buf, sizeof(buf));
		if (strcmp(buf, cases[i].value) != 0)
			fail_msg("%s: default %s, expected %s", cases[i].key, buf, cases[i].value);
	}
	assert_int_equal(cfg->listen_port, 6432);
	assert_int_equal(cfg->pool_mode, POOL_SESSION);
	assert_int_equal(cfg->auth_type, AUTH_MD5);
	assert_int_equal(cfg->server_lifetime, 3600LL * 1000000);
	assert_int_equal(cfg->unix_socket_mode, 0777);
	assert_string_equal(cfg->listen_addr, "");
	assert_null(cfg->databases);
	config_free(cfg);
}

/* SHOW CONFIG round trip: every default formats as its default text and parses back to itself. */
static void test_every_default_round_trips(void **state)
{
	struct config *def = config_new_defaults(), *cfg;
	char val[512], want[512], text[1200];
	struct msgs m;

	(void)state;
	assert_non_null(def);
	for (int i = 0; i < config_key_count(); i++) {
		const char *name = config_key_name(i);

		config_key_format(def, i, val, sizeof(val));
		config_key_format_default(i, want, sizeof(want));
		if (strcmp(val, want) != 0)
			fail_msg("%s: formats as '%s', default text '%s'", name, val, want);

		snprintf(text, sizeof(text), "[pgbouncer]\n%s = %s\n", name, val);
		if (!load_text(text, &cfg, &m)) {
			msgs_print(&m);
			fail_msg("%s = %s does not load", name, val);
		}
		assert_int_equal(m.nwarn, 0);
		config_key_format(cfg, i, want, sizeof(want));
		if (strcmp(val, want) != 0)
			fail_msg("%s: '%s' reads back as '%s'", name, val, want);
		config_free(cfg);
	}
	config_free(def);
}

/* ---- a whole file --------------------------------------------------------------------------- */

static void test_full_example(void **state)
{
	struct config *cfg;
	const struct cf_database *db;
	const struct cf_user *u;
	const struct cf_api *api;
	const struct cf_synced_table *st;
	struct msgs m;
	char buf[64];

	(void)state;
	if (!load_path(DATA "/full.ini", &cfg, &m)) {
		msgs_print(&m);
		fail_msg("full.ini does not load");
	}
	assert_int_equal(m.nerr, 0);
	assert_int_equal(m.nwarn, 0);

	assert_string_equal(cfg->listen_addr, "127.0.0.1");
	assert_int_equal(cfg->listen_port, 16432);
	assert_int_equal(cfg->auth_type, AUTH_SCRAM_SHA_256);
	assert_int_equal(cfg->pool_mode, POOL_TRANSACTION);
	assert_int_equal(cfg->max_client_conn, 500);
	assert_int_equal(cfg->server_idle_timeout, 500000);
	assert_false(cfg->log_connections);
	assert_int_equal(cfg->max_packet_size, 64 * 1024);
	assert_int_equal(cfg->unix_socket_mode, 0700);
	assert_string_equal(cfg->admin_users, "admin, ops");
	assert_string_equal(cfg->conffile, DATA "/full.ini");
	assert_string_equal(cfg->path, DATA "/full.ini");
	fmt(cfg, "server_idle_timeout", buf, sizeof(buf));
	assert_string_equal(buf, "0.5");

	db = config_find_database(cfg, "crm");
	assert_non_null(db);
	assert_string_equal(db->host, "127.0.0.1");
	assert_int_equal(db->port, 5433);
	assert_string_equal(db->dbname, "crm_prod");
	assert_string_equal(db->user, "app");
	assert_string_equal(db->password, "se cr'et");
	assert_int_equal(db->pool_size, 10);
	assert_int_equal(db->pool_mode, POOL_TRANSACTION);
	assert_int_equal(db->min_pool_size, -1);
	assert_int_equal(db->server_lifetime, -1);
	assert_string_equal(db->connect_query, "");

	db = config_find_database(cfg, "odd name");
	assert_non_null(db);
	assert_string_equal(db->name, "odd name");
	assert_string_equal(db->host, "/var/run/postgresql");
	assert_int_equal(db->port, 5432);
	assert_string_equal(db->application_name, "my app");
	assert_string_equal(db->connect_query, "SELECT set_config('a.b', 'c', false)");

	db = config_find_database(cfg, "replica");
	assert_non_null(db);
	assert_string_equal(db->host, "10.0.0.1,10.0.0.2");
	assert_int_equal(db->load_balance_hosts, LOAD_BALANCE_DISABLE);
	assert_int_equal(db->server_lifetime, 120500000);
	assert_int_equal(db->reserve_pool_size, 3);

	u = config_find_user(cfg, "app");
	assert_non_null(u);
	assert_int_equal(u->pool_mode, POOL_SESSION);
	assert_int_equal(u->max_user_connections, 7);
	assert_int_equal(u->query_timeout, 30000000);
	assert_int_equal(u->pool_size, -1);
	assert_null(config_find_user(cfg, "nobody"));

	api = config_find_api(cfg, "salesforce");
	assert_non_null(api);
	assert_string_equal(api->type, "salesforce");
	assert_string_equal(cf_kv_get(api->kv, api->nkv, "client_secret"), "s3 cr3t");
	assert_string_equal(cf_kv_get(api->kv, api->nkv, "api_version"), "v59.0");
	assert_string_equal(cf_kv_get(api->kv, api->nkv, "timeout"), "10");
	assert_null(cf_kv_get(api->kv, api->nkv, "max_batch"));
	assert_string_equal(api->file, DATA "/full.ini");
	assert_int_equal(api->line, 29);
	/* file order kept */
	assert_string_equal(cfg->apis->name, "salesforce");
	assert_string_equal(cfg->apis->next->name, "internal");

	st = cfg->synced_tables;
	assert_non_null(st);
	assert_string_equal(st->database, "crm");
	assert_string_equal(st->schema, "salesforce");
	assert_string_equal(st->table, "contacts");
	assert_string_equal(cf_kv_get(st->kv, st->nkv, "api"), "salesforce");
	assert_string_equal(cf_kv_get(st->kv, st->nkv, "columns"), "note:Description");
	st = st->next;
	assert_non_null(st);
	assert_string_equal(st->schema, "Sales Force");
	assert_string_equal(st->table, "Deals");
	st = st->next;
	assert_non_null(st);
	/* unquoted identifiers fold to lower case, as in PostgreSQL */
	assert_string_equal(st->database, "elsewhere");
	assert_string_equal(st->table, "items");
	assert_null(st->next);
	config_free(cfg);
}

/* The commented example shipped in etc/ must itself be a valid configuration. */
static void test_shipped_example_loads(void **state)
{
	struct config *cfg;
	struct msgs m;

	(void)state;
	if (!load_path(TEST_SRCDIR "/etc/syncbouncer.ini", &cfg, &m)) {
		msgs_print(&m);
		fail_msg("etc/syncbouncer.ini does not load");
	}
	msgs_print(&m);
	assert_int_equal(m.nwarn, 0);
	assert_non_null(cfg->databases);
	config_free(cfg);
}

static void test_format_basics(void **state)
{
	struct config *cfg;
	struct msgs m;

	(void)state;
	assert_true(load_text("# comment\n"
	                      "  ; indented comment\n"
	                      "\n"
	                      "[ PGBOUNCER ]\r\n"
	                      "LISTEN_PORT=7432\r\n"
	                      "  pool_mode   =   statement   \n"
	                      "server_reset_query = DISCARD ALL ; not a comment here\n"
	                      "logfile =\n"
	                      "[Databases]\n"
	                      "foodb =\n",
	                      &cfg, &m));
	assert_int_equal(m.nwarn, 0);
	assert_int_equal(cfg->listen_port, 7432);
	assert_int_equal(cfg->pool_mode, POOL_STATEMENT);
	/* like pgbouncer, ; and # start a comment only at the start of a line */
	assert_string_equal(cfg->server_reset_query, "DISCARD ALL ; not a comment here");
	assert_string_equal(cfg->logfile, "");
	assert_non_null(config_find_database(cfg, "foodb"));
	assert_string_equal(config_find_database(cfg, "foodb")->host, "");
	config_free(cfg);

	/* the plain variant logs instead of reporting */
	assert_true(config_load_buffer("[pgbouncer]\nlisten_port = 1\n", 27, "plain.ini", &cfg));
	assert_int_equal(cfg->listen_port, 1);
	assert_string_equal(cfg->path, "plain.ini");
	config_free(cfg);
}

/* ---- %include ------------------------------------------------------------------------------- */

static void test_include_relative_to_including_file(void **state)
{
	struct config *cfg;
	struct msgs m;
	char cwd[PATH_MAX];

	(void)state;
	/* run from elsewhere: relative paths must not depend on the working directory */
	assert_non_null(getcwd(cwd, sizeof(cwd)));
	assert_int_equal(chdir("/"), 0);
	if (!load_path(DATA "/inc/main.ini", &cfg, &m)) {
		msgs_print(&m);
		fail_msg("inc/main.ini does not load");
	}
	assert_int_equal(chdir(cwd), 0);
	assert_int_equal(m.nwarn, 0);
	/* later settings win, across files and after the include returns */
	assert_int_equal(cfg->listen_port, 7001);
	assert_int_equal(cfg->default_pool_size, 42);
	assert_int_equal(cfg->max_client_conn, 300);
	assert_non_null(config_find_database(cfg, "included"));
	config_free(cfg);
}

static void test_include_errors(void **state)
{
	struct config *cfg = NULL;
	struct msgs m;
	char want[PATH_MAX * 2];

	(void)state;
	write_file("missing.ini", "[pgbouncer]\n%include nothere.ini\n");
	assert_false(load_path(tmp_path("missing.ini"), &cfg, &m));
	assert_null(cfg);
	snprintf(want, sizeof(want), "%s/missing.ini:2: cannot open", tmpdir);
	assert_true(msgs_have(&m, want));

	write_file("self.ini", "%include self.ini\n");
	assert_false(load_path(tmp_path("self.ini"), &cfg, &m));
	assert_true(msgs_have(&m, "loop"));

	write_file("a.ini", "[pgbouncer]\n%include b.ini\n");
	write_file("b.ini", "listen_port = 1234\n%include a.ini\n");
	assert_false(load_path(tmp_path("a.ini"), &cfg, &m));
	snprintf(want, sizeof(want), "%s/b.ini:2: %%include loop", tmpdir);
	assert_true(msgs_have(&m, want));

	write_file("empty-inc.ini", "%include\n");
	assert_false(load_path(tmp_path("empty-inc.ini"), &cfg, &m));
	assert_true(msgs_have(&m, "needs a file name"));

	/* a directory or a FIFO is not a config file, and must not hang the loader */
	write_file("dir-inc.ini", "%include /tmp\n");
	assert_false(load_path(tmp_path("dir-inc.ini"), &cfg, &m));
	assert_true(msgs_have(&m, "not a regular file"));
	assert_int_equal(mkfifo(tmp_path("fifo"), 0600), 0);
	write_file("fifo-inc.ini", "%include fifo\n");
	assert_false(load_path(tmp_path("fifo-inc.ini"), &cfg, &m));
	assert_true(msgs_have(&m, "not a regular file"));

	assert_false(load_path(tmp_path("does-not-exist.ini"), &cfg, &m));
	assert_int_equal(m.nerr, 1);
}

static void test_include_depth_limit(void **state)
{
	struct config *cfg;
	struct msgs m;
	char name[64], text[128];

	(void)state;
	/* d0 includes d1 ... includes dN; a chain of CF_MAX_INCLUDE_DEPTH includes is fine */
	for (int i = 0; i <= CF_MAX_INCLUDE_DEPTH + 1; i++) {
		snprintf(name, sizeof(name), "d%d.ini", i);
		snprintf(text, sizeof(text),
		         "[pgbouncer]\nmax_client_conn = %d\n%%include d%d.ini\n", i + 1, i + 1);
		write_file(name, text);
	}
	/* the last one of an allowed chain includes nothing */
	snprintf(name, sizeof(name), "d%d.ini", CF_MAX_INCLUDE_DEPTH);
	write_file(name, "[pgbouncer]\nmax_client_conn = 999\n");
	assert_true(load_path(tmp_path("d0.ini"), &cfg, &m));
	assert_int_equal(cfg->max_client_conn, 999);
	config_free(cfg);

	/* one more level is an error */
	snprintf(text, sizeof(text), "[pgbouncer]\n%%include d%d.ini\n", CF_MAX_INCLUDE_DEPTH + 1);
	write_file(name, text);
	snprintf(name, sizeof(name), "d%d.ini", CF_MAX_INCLUDE_DEPTH + 1);
	write_file(name, "[pgbouncer]\n");
	assert_false(load_path(tmp_path("d0.ini"), &cfg, &m));
	assert_true(msgs_have(&m, "nested deeper"));
}

static void test_include_refused_when_asked(void **state)
{
	struct cf_load_opts opts = {.quiet = true, .no_include = true};
	struct config *cfg;
	const char *text = "%include /etc/passwd\n";

	(void)state;
	assert_false(config_load_buffer_opts(text, strlen(text), "fuzz", &opts, &cfg));
}

/* ---- duplicates, unknown keys, bad values ------------------------------------------------- */

static void test_later_duplicate_wins(void **state)
{
	struct config *cfg;
	struct msgs m;

	(void)state;
	assert_true(load_text("[pgbouncer]\n"
	                      "listen_port = 1111\n"
	                      "listen_port = 2222\n"
	                      "[databases]\n"
	                      "a = host=first\n"
	                      "b = host=middle\n"
	                      "a = host=second port=6000\n"
	                      "[users]\n"
	                      "u = pool_size=1\n"
	                      "u = pool_size=2\n"
	                      "[apis]\n"
	                      "x = type=rest base_url=http://one\n"
	                      "x = type=stripe base_url=http://two\n"
	                      "[synced_tables]\n"
	                      "a.s.t = api=x object=first\n"
	                      "a.s.t = api=x object=second\n",
	                      &cfg, &m));
	assert_int_equal(cfg->listen_port, 2222);
	assert_string_equal(config_find_database(cfg, "a")->host, "second");
	assert_int_equal(config_find_database(cfg, "a")->port, 6000);
	/* the replacement keeps the place of the first definition */
	assert_string_equal(cfg->databases->name, "a");
	assert_string_equal(cfg->databases->next->name, "b");
	assert_null(cfg->databases->next->next);
	assert_int_equal(config_find_user(cfg, "u")->pool_size, 2);
	assert_string_equal(config_find_api(cfg, "x")->type, "stripe");
	assert_null(cfg->apis->next);
	assert_null(cfg->synced_tables->next);
	assert_string_equal(cf_kv_get(cfg->synced_tables->kv, cfg->synced_tables->nkv, "object"),
	                    "second");
	config_free(cfg);
}

static void test_unknown_things_warn_and_continue(void **state)
{
	struct config *cfg;
	struct msgs m;

	(void)state;
	assert_true(load_text("stray = 1\n"
	                      "[pgbouncer]\n"
	                      "no_such_setting = 5\n"
	                      "listen_port = 5555\n"
	                      "[mystery]\n"
	                      "whatever = 1\n"
	                      "[peers]\n"
	                      "1 = host=/tmp/p1\n"
	                      "[databases]\n"
	                      "d = host=h frobnicate=1\n"
	                      "pgbouncer = host=h\n",
	                      &cfg, &m));
	assert_int_equal(m.nerr, 0);
	assert_true(msgs_have(&m, "test.ini:1: stray is outside of any section"));
	assert_true(msgs_have(&m, "test.ini:3: unknown setting no_such_setting, ignored"));
	assert_true(msgs_have(&m, "test.ini:5: unknown section [mystery]"));
	assert_true(msgs_have(&m, "test.ini:7: section [peers] is not supported yet"));
	assert_true(msgs_have(&m, "test.ini:10: unrecognized parameter frobnicate"));
	assert_true(msgs_have(&m, "test.ini:11: database name \"pgbouncer\" is reserved"));
	assert_int_equal(m.nwarn, 6);
	assert_int_equal(cfg->listen_port, 5555);
	assert_string_equal(config_find_database(cfg, "d")->host, "h");
	assert_null(config_find_database(cfg, "pgbouncer"));
	config_free(cfg);
}

static void test_bad_values_fail_with_file_line(void **state)
{
	static const struct {
		const char *text, *msg;
	} cases[] = {
	        {"[pgbouncer]\nlisten_port = abc\n",
	         "test.ini:2: invalid value \"abc\" for listen_port: not a number"},
	        {"[pgbouncer]\n\nlisten_port = 70000\n",
	         "test.ini:3: invalid value \"70000\" for listen_port: out of range"},
	        {"[pgbouncer]\nlisten_port = 12x\n",
	         "test.ini:2: invalid value \"12x\" for listen_port"},
	        {"[pgbouncer]\nlisten_port =\n", "test.ini:2: invalid value \"\" for listen_port"},
	        {"[pgbouncer]\nmax_client_conn = 99999999999999999999\n", "out of range"},
	        {"[pgbouncer]\nmax_client_conn = -5\n", "out of range"},
	        {"[pgbouncer]\npool_mode = sessions\n",
	         "test.ini:2: invalid value \"sessions\" for pool_mode: unknown value; one of: session transaction statement"},
	        {"[pgbouncer]\nauth_type = kerberos\n", "for auth_type"},
	        {"[pgbouncer]\nserver_tls_sslmode = maybe\n", "for server_tls_sslmode"},
	        {"[pgbouncer]\nserver_lifetime = soon\n", "for server_lifetime: not a time"},
	        {"[pgbouncer]\nserver_lifetime = -1\n", "for server_lifetime: out of range"},
	        {"[pgbouncer]\nserver_lifetime = 5 parsecs\n", "for server_lifetime"},
	        {"[pgbouncer]\nquery_timeout = nan\n", "for query_timeout"},
	        {"[pgbouncer]\nlog_stats = maybe\n", "for log_stats: not a boolean"},
	        {"[pgbouncer]\npkt_buf = 4 furlongs\n", "for pkt_buf"},
	        {"[pgbouncer]\npkt_buf = 100\n", "for pkt_buf: out of range"},
	        {"[pgbouncer]\nmax_packet_size = 4GB\n", "for max_packet_size: out of range"},
	        {"[pgbouncer]\npeer_id = 16384\n", "for peer_id: out of range"},
	        {"[pgbouncer]\nunix_socket_mode = 0999\n", "for unix_socket_mode"},
	        {"[databases]\nd = host=h port=notaport\n",
	         "test.ini:2: invalid value \"notaport\" for port in [databases]"},
	        {"[databases]\nd = pool_mode=bogus\n", "for pool_mode in [databases]"},
	        {"[databases]\nd = host='unterminated\n",
	         "test.ini:2: database d: syntax error in connection string: unterminated quoted value for host"},
	        {"[databases]\nd = host\n", "missing '=' after host"},
	        {"[databases]\nd = host='a'b\n", "text after quoted value"},
	        {"[databases]\n\"\" = host=h\n", "test.ini:2: bad name"},
	        {"[databases]\n\"open = host=h\n", "unterminated quote in key"},
	        {"[users]\nu = pool_size=many\n", "for pool_size in [users]"},
	        {"[apis]\nx = base_url=http://h\n", "test.ini:2: API x: type= is missing"},
	        {"[apis]\n\"bad name\" = type=rest\n", "API name \"bad name\""},
	        {"[apis]\nx = type=rest base_url=https://u:pw@h.example/v1\n",
	         "test.ini:2: API x: base_url= must not carry credentials (user:password@host); "
	         "put them in auth="},
	        {"[apis]\nx = type=rest base_url=http://token@h.example\n",
	         "API x: base_url= must not carry credentials"},
	        {"[apis]\nx = type=salesforce base_url=https://h token_url=https://a:b@login/t\n",
	         "API x: token_url= must not carry credentials"},
	        {"[pgbouncer]\nthis line has no equals\n",
	         "test.ini:2: syntax error: expected key = value"},
	        {"[pgbouncer\n", "test.ini:1: syntax error in section header"},
	        {"%frobnicate x\n", "unknown directive"},
	        {"[pgbouncer]\nworkers = 0\n",
	         "test.ini:2: workers must be a number from 1 to 64 or \"auto\", not \"0\""},
	        {"[pgbouncer]\nworkers = 65\n", "workers must be a number from 1 to 64"},
	        {"[pgbouncer]\nworkers = two\n", "workers must be a number from 1 to 64"},
	        {"[pgbouncer]\nworkers = 2x\n", "workers must be a number from 1 to 64"},
	};
	struct config *cfg;
	struct msgs m;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cfg = (struct config *)&m; /* must be reset to NULL on failure */
		if (load_text(cases[i].text, &cfg, &m))
			fail_msg("case %zu loaded: %s", i, cases[i].text);
		assert_null(cfg);
		if (!msgs_have(&m, cases[i].msg)) {
			msgs_print(&m);
			fail_msg("case %zu: no message containing '%s'", i, cases[i].msg);
		}
	}
}

static void test_workers_setting(void **state)
{
	struct config *cfg;
	struct msgs m;
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);

	(void)state;
	assert_true(load_text("[pgbouncer]\n", &cfg, &m));
	assert_int_equal(config_workers(cfg), 1);
	config_free(cfg);
	assert_true(load_text("[pgbouncer]\nworkers = 3\n", &cfg, &m));
	assert_int_equal(config_workers(cfg), 3);
	config_free(cfg);
	assert_true(load_text("[pgbouncer]\nworkers = 64\n", &cfg, &m));
	assert_int_equal(config_workers(cfg), 64);
	config_free(cfg);
	assert_true(load_text("[pgbouncer]\nworkers = auto\n", &cfg, &m));
	assert_int_equal(config_workers(cfg), cpus < 1 ? 1 : cpus > 64 ? 64 : (int)cpus);
	config_free(cfg);
	/* several workers with synced tables: worker 0 serves them */
	assert_true(load_text("[pgbouncer]\nworkers = 2\n[apis]\nx = type=rest base_url=http://h\n",
	                      &cfg, &m));
	assert_int_equal(config_workers(cfg), 2);
	config_free(cfg);
}

static void test_value_syntax(void **state)
{
	static const struct {
		const char *key, *text, *shown;
	} cases[] = {
	        {"server_lifetime", "0.5", "0.5"},
	        {"server_lifetime", "90s", "90"},
	        {"server_lifetime", "1.5min", "90"},
	        {"server_lifetime", "250ms", "0.25"},
	        {"server_lifetime", "2h", "7200"},
	        {"server_lifetime", "1d", "86400"},
	        {"server_lifetime", "1us", "0.000001"},
	        {"server_lifetime", "1e3", "1000"},
	        {"pkt_buf", "8kB", "8192"},
	        {"pkt_buf", "8192", "8192"},
	        {"max_packet_size", "1MB", "1048576"},
	        {"log_stats", "off", "0"},
	        {"log_stats", "TRUE", "1"},
	        {"log_stats", "2", "1"},
	        {"pool_mode", "Transaction", "transaction"},
	        {"auth_type", "scram-sha-256", "scram-sha-256"},
	        {"unix_socket_mode", "0660", "0660"},
	        {"unix_socket_mode", "384", "0600"},
	        {"server_tls_sslmode", "allow", "allow"},
	};
	char text[256], buf[128];
	struct config *cfg;
	struct msgs m;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(text, sizeof(text), "[pgbouncer]\n%s = %s\n", cases[i].key, cases[i].text);
		if (!load_text(text, &cfg, &m)) {
			msgs_print(&m);
			fail_msg("%s = %s does not load", cases[i].key, cases[i].text);
		}
		fmt(cfg, cases[i].key, buf, sizeof(buf));
		if (strcmp(buf, cases[i].shown) != 0)
			fail_msg("%s = %s shows as %s, expected %s", cases[i].key, cases[i].text,
			         buf, cases[i].shown);
		config_free(cfg);
	}
}

/* Many entries: every one is kept once, the later duplicate wins, order is the file's. */
static void test_many_entries(void **state)
{
	size_t cap = 4 * 1024 * 1024, used = 0;
	char *text = malloc(cap), name[64];
	struct config *cfg;
	const struct cf_database *db;
	struct msgs m;
	int n = 0;

	(void)state;
	assert_non_null(text);
	used += (size_t)snprintf(text + used, cap - used, "[databases]\n");
	for (int i = 0; i < 20000; i++)
		used += (size_t)snprintf(text + used, cap - used, "db%d = host=first%d\n", i, i);
	for (int i = 0; i < 20000; i += 3)
		used += (size_t)snprintf(text + used, cap - used, "db%d = host=again%d\n", i, i);
	used += (size_t)snprintf(text + used, cap - used,
	                         "[apis]\nx = type=rest\n[synced_tables]\n");
	for (int i = 0; i < 20000; i++)
		used += (size_t)snprintf(text + used, cap - used, "db%d.s.t = api=x\n", i);
	assert_true(used < cap);
	assert_true(load_text(text, &cfg, &m));
	for (db = cfg->databases; db; db = db->next) {
		snprintf(name, sizeof(name), "db%d", n);
		assert_string_equal(db->name, name);
		snprintf(name, sizeof(name), n % 3 == 0 ? "again%d" : "first%d", n);
		assert_string_equal(db->host, name);
		n++;
	}
	assert_int_equal(n, 20000);
	n = 0;
	for (const struct cf_synced_table *st = cfg->synced_tables; st; st = st->next)
		n++;
	assert_int_equal(n, 20000);
	config_free(cfg);
	free(text);
}

static void test_long_line_and_nul_byte(void **state)
{
	size_t big = CF_MAX_LINE + 10;
	char *text = malloc(big + 64);
	struct config *cfg;
	struct msgs m;
	struct cf_load_opts opts = {.report = collect, .arg = &m, .quiet = true};
	const char nul[] = "[pgbouncer]\nlisten_port = 1\0\n";

	(void)state;
	assert_non_null(text);
	strcpy(text, "[pgbouncer]\nadmin_users = ");
	memset(text + strlen(text), 'a', big);
	text[26 + big] = '\0';
	strcat(text, "\n");
	assert_false(load_text(text, &cfg, &m));
	assert_true(msgs_have(&m, "test.ini:2: line longer than 65536 bytes"));

	/* just below the limit is fine */
	strcpy(text, "[pgbouncer]\nadmin_users = ");
	memset(text + 26, 'a', CF_MAX_LINE - 26);
	text[CF_MAX_LINE] = '\0';
	assert_true(load_text(text, &cfg, &m));
	assert_int_equal(strlen(cfg->admin_users), CF_MAX_LINE - 26);
	config_free(cfg);
	free(text);

	memset(&m, 0, sizeof(m));
	assert_false(config_load_buffer_opts(nul, sizeof(nul) - 1, "nul.ini", &opts, &cfg));
	assert_true(msgs_have(&m, "nul.ini:2: NUL byte"));
}

/* ---- [databases], [apis], [synced_tables] ------------------------------------------------- */

static void test_quoted_values(void **state)
{
	struct config *cfg;
	const struct cf_database *db;
	const struct cf_api *api;
	struct msgs m;

	(void)state;
	assert_true(
	        load_text("[databases]\n"
	                  "q = password='it\\'s a \"secret\"' user = spaced  dbname='' "
	                  "connect_query='back\\\\slash' application_name='SELECT ''x'', \\d'\n"
	                  "[apis]\n"
	                  "h = type=hubspot token='tok en\\'s' base_url = https://api.hubapi.com\n",
	                  &cfg, &m));
	db = config_find_database(cfg, "q");
	assert_non_null(db);
	assert_string_equal(db->password, "it's a \"secret\"");
	assert_string_equal(db->user, "spaced");
	assert_string_equal(db->dbname, "");
	assert_string_equal(db->connect_query, "back\\slash");
	/* pgbouncer's doubled quote; other backslashes are plain characters, as in pgbouncer */
	assert_string_equal(db->application_name, "SELECT 'x', \\d");
	api = config_find_api(cfg, "h");
	assert_non_null(api);
	assert_string_equal(cf_kv_get(api->kv, api->nkv, "token"), "tok en's");
	assert_string_equal(cf_kv_get(api->kv, api->nkv, "base_url"), "https://api.hubapi.com");
	assert_string_equal(cf_kv_get(api->kv, api->nkv, "type"), "hubspot");
	config_free(cfg);
}

static void test_fallback_database(void **state)
{
	struct config *cfg;
	struct msgs m;

	(void)state;
	assert_true(load_text("[databases]\n'single quoted' = host=sq\n"
	                      "\"say \"\"hi\"\"\" = host=dq\n",
	                      &cfg, &m));
	assert_string_equal(config_find_database(cfg, "single quoted")->host, "sq");
	assert_string_equal(config_find_database(cfg, "say \"hi\"")->host, "dq");
	config_free(cfg);

	assert_true(load_text("[databases]\nexact = host=one\n", &cfg, &m));
	assert_null(config_find_database(cfg, "other"));
	config_free(cfg);

	assert_true(load_text("[databases]\n* = host=fallback\nexact = host=one\n", &cfg, &m));
	assert_string_equal(config_find_database(cfg, "exact")->host, "one");
	assert_string_equal(config_find_database(cfg, "other")->host, "fallback");
	assert_string_equal(config_find_database(cfg, "other")->name, "*");
	config_free(cfg);
}

static void test_synced_table_names(void **state)
{
	static const struct {
		const char *key;
		bool ok;
		const char *db, *schema, *table;
	} cases[] = {
	        {"crm.public.contacts", true, "crm", "public", "contacts"},
	        {"crm.SalesForce.Contacts", true, "crm", "salesforce", "contacts"},
	        {"crm.\"SalesForce\".\"Con tacts\"", true, "crm", "SalesForce", "Con tacts"},
	        {"crm.\"a\"\"b\".t", true, "crm", "a\"b", "t"},
	        {"\"crm\".s.t_1$", true, "crm", "s", "t_1$"},
	        {"crm.contacts", false, NULL, NULL, NULL},
	        {"crm.a.b.c", false, NULL, NULL, NULL},
	        {"crm..t", false, NULL, NULL, NULL},
	        {".s.t", false, NULL, NULL, NULL},
	        {"crm.s.", false, NULL, NULL, NULL},
	        {"crm.s-x.t", false, NULL, NULL, NULL},
	        {"crm.\"unterminated.t", false, NULL, NULL, NULL},
	        {"crm.s.\"\"", false, NULL, NULL, NULL},
	        {"crm.s.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false,
	         NULL, NULL, NULL},
	};
	char text[512];
	struct config *cfg;
	struct msgs m;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(
		        text, sizeof(text),
		        "[databases]\n* = host=h\n[apis]\nx = type=rest\n[synced_tables]\n%s = api=x\n",
		        cases[i].key);
		bool ok = load_text(text, &cfg, &m);
		if (ok != cases[i].ok) {
			msgs_print(&m);
			fail_msg("%s: %s", cases[i].key, ok ? "accepted" : "rejected");
		}
		if (!ok) {
			assert_true(msgs_have(&m, "test.ini:6: "));
			continue;
		}
		assert_string_equal(cfg->synced_tables->database, cases[i].db);
		assert_string_equal(cfg->synced_tables->schema, cases[i].schema);
		assert_string_equal(cfg->synced_tables->table, cases[i].table);
		config_free(cfg);
	}
}

static void test_synced_table_references(void **state)
{
	struct config *cfg;
	struct msgs m;

	(void)state;
	/* sections may come in any order: references are checked once the file is read */
	assert_true(load_text("[synced_tables]\ncrm.s.t = api=sf\n"
	                      "[apis]\nsf = type=salesforce\n"
	                      "[databases]\ncrm = host=h\n",
	                      &cfg, &m));
	config_free(cfg);

	assert_false(load_text("[databases]\ncrm = host=h\n[apis]\nsf = type=salesforce\n"
	                       "[synced_tables]\ncrm.s.t = object=X\n",
	                       &cfg, &m));
	assert_true(msgs_have(&m, "test.ini:6: synced table crm.s.t: api= is missing"));

	assert_false(load_text("[databases]\ncrm = host=h\n[apis]\nsf = type=salesforce\n"
	                       "[synced_tables]\ncrm.s.t = api=hubspot\n",
	                       &cfg, &m));
	assert_true(
	        msgs_have(&m, "test.ini:6: synced table crm.s.t: api hubspot is not in [apis]"));

	assert_false(load_text("[databases]\ncrm = host=h\n[apis]\nsf = type=salesforce\n"
	                       "[synced_tables]\nerp.s.t = api=sf\n",
	                       &cfg, &m));
	assert_true(msgs_have(&m, "database erp is not in [databases]"));
}

/* ---- SET, secrets, unsupported, reload --------------------------------------------------------
 */

static void test_set_at_runtime(void **state)
{
	struct config *cfg = config_new_defaults();
	char err[256], buf[64];

	(void)state;
	assert_non_null(cfg);
	assert_true(config_set(cfg, "default_pool_size", "33", err, sizeof(err)));
	assert_int_equal(cfg->default_pool_size, 33);
	assert_true(config_set(cfg, "POOL_MODE", "transaction", err, sizeof(err)));
	assert_int_equal(cfg->pool_mode, POOL_TRANSACTION);
	assert_true(config_set(cfg, "server_reset_query", "DEALLOCATE ALL", err, sizeof(err)));
	assert_string_equal(cfg->server_reset_query, "DEALLOCATE ALL");
	assert_true(config_set(cfg, "query_timeout", "2.5", err, sizeof(err)));
	fmt(cfg, "query_timeout", buf, sizeof(buf));
	assert_string_equal(buf, "2.5");

	assert_false(config_set(cfg, "bogus", "1", err, sizeof(err)));
	assert_string_equal(err, "unknown setting: bogus");
	assert_false(config_set(cfg, "listen_port", "7000", err, sizeof(err)));
	assert_non_null(strstr(err, "needs a restart"));
	assert_int_equal(cfg->listen_port, 6432);
	assert_false(config_set(cfg, "default_pool_size", "lots", err, sizeof(err)));
	assert_string_equal(err, "invalid value for default_pool_size: not a number");
	assert_int_equal(cfg->default_pool_size, 33);

	assert_true(config_key_reloadable(config_key_index("default_pool_size")));
	assert_false(config_key_reloadable(config_key_index("listen_port")));
	assert_false(config_key_reloadable(-1));
	config_free(cfg);
}

static void test_secrets_never_shown(void **state)
{
	struct config *cfg;
	struct msgs m;
	char buf[128];
	int i = config_key_index("auth_ldap_options");

	(void)state;
	assert_true(config_key_is_secret(i));
	assert_false(config_key_is_secret(config_key_index("auth_file")));
	assert_true(
	        load_text("[pgbouncer]\nauth_ldap_options = ldapbindpasswd=hunter2\n", &cfg, &m));
	config_key_format(cfg, i, buf, sizeof(buf));
	assert_string_equal(buf, "********");
	assert_string_equal(cfg->auth_ldap_options, "ldapbindpasswd=hunter2");
	config_free(cfg);

	/* a bad secret value is reported without the value */
	assert_false(load_text("[databases]\nd = password='hunter2' port=x\n", &cfg, &m));
	assert_false(load_text("[apis]\nx = type=rest token=hunter2 client_secret='hunter2\n", &cfg,
	                       &m));
	for (int j = 0; j < m.n; j++)
		assert_null(strstr(m.text[j], "hunter2"));
	/* nor is a URL that carries credentials; a '@' past the host is no credential */
	assert_false(load_text("[apis]\nx = type=rest base_url=https://me:hunter2@h/\n", &cfg, &m));
	for (int j = 0; j < m.n; j++)
		assert_null(strstr(m.text[j], "hunter2"));
	assert_true(load_text("[apis]\nx = type=rest base_url=https://h/p@q?x=@#@\n", &cfg, &m));
	config_free(cfg);

	assert_true(cf_kv_key_is_secret("password"));
	assert_true(cf_kv_key_is_secret("client_secret"));
	assert_true(cf_kv_key_is_secret("refresh_token"));
	assert_true(cf_kv_key_is_secret("token"));
	assert_true(cf_kv_key_is_secret("api_key"));
	assert_true(cf_kv_key_is_secret("PASSWORD"));
	assert_false(cf_kv_key_is_secret("base_url"));
	assert_false(cf_kv_key_is_secret("token_url"));
	assert_false(cf_kv_key_is_secret("client_id"));
	assert_false(cf_kv_key_is_secret("auth"));
}

static void test_unsupported_warns_once_when_set(void **state)
{
	struct config *cfg;
	struct msgs m;

	(void)state;
	assert_true(load_text("[pgbouncer]\npeer_id = 0\n", &cfg, &m));
	assert_int_equal(m.nwarn, 0);
	config_free(cfg);

	assert_true(load_text("[pgbouncer]\npeer_id = 3\ndns_zone_check_period = 60\npeer_id = 4\n",
	                      &cfg, &m));
	assert_int_equal(m.nwarn, 2);
	assert_true(msgs_have(&m, "test.ini:4: setting peer_id is not supported yet, ignored"));
	assert_true(
	        msgs_have(&m, "test.ini:3: setting dns_zone_check_period is not supported yet"));
	assert_int_equal(cfg->peer_id, 4);
	assert_true(config_key_flags(config_key_index("peer_id")) & CF_UNSUPPORTED);
	config_free(cfg);
}

/*
 * A setting that would weaken security if ignored is refused, naming itself, until it works;
 * the values that ask for nothing unimplemented still load.
 */
static void test_security_settings_refused(void **state)
{
	static const struct {
		const char *text, *msg;
	} refused[] = {
	        {"[pgbouncer]\nauth_type = pam\n", "auth_type = pam is not supported"},
	        {"[pgbouncer]\nauth_type = ldap\n", "auth_type = ldap is not supported"},
	        {"[pgbouncer]\ndisable_pqexec = 1\n", "disable_pqexec = 1 is not supported"},
	        {"[pgbouncer]\nscram_iterations = 100000\n", "scram_iterations = 100000 is not"},
	        {"[pgbouncer]\nunix_socket_group = staff\n", "unix_socket_group = staff is not"},
	        /* the effective value counts: a later line that asks for more is refused */
	        {"[pgbouncer]\nauth_type = md5\nauth_type = pam\n", "test.ini:3: auth_type = pam"},
	};
	static const char *const accepted[] = {
	        "[pgbouncer]\nclient_tls_sslmode = disable\n",
	        "[pgbouncer]\nserver_tls_sslmode = disable\n",
	        "[pgbouncer]\nserver_tls_sslmode = allow\n",
	        "[pgbouncer]\nserver_tls_sslmode = prefer\n",
	        /* TLS works: its settings load (tls_configure() checks the files) */
	        "[pgbouncer]\nclient_tls_sslmode = require\nserver_tls_sslmode = verify-full\n",
	        "[pgbouncer]\nauth_type = cert\nclient_tls_sslmode = verify-full\n",
	        "[pgbouncer]\nauth_type = md5\nauth_type = scram-sha-256\n",
	        "[pgbouncer]\nauth_type = cert\nauth_type = md5\n",
	        "[pgbouncer]\nauth_type = hba\n",
	        "[pgbouncer]\nauth_user = lookup\n"
	        "auth_query = SELECT usename, passwd FROM pg_shadow WHERE usename=$1\n",
	        "[databases]\nd = host=h auth_user=lookup auth_query='SELECT 1'\n",
	        "[pgbouncer]\nauth_type = plain\nauth_user =\ndisable_pqexec = 0\n",
	        "[pgbouncer]\nscram_iterations = 4096\nunix_socket_group =\n",
	        "[databases]\nd = host=h auth_user=\n",
	};
	struct config *cfg;
	struct msgs m;
	char err[256];

	(void)state;
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		cfg = (struct config *)&m;
		if (load_text(refused[i].text, &cfg, &m))
			fail_msg("case %zu loaded: %s", i, refused[i].text);
		assert_null(cfg);
		if (!msgs_have(&m, refused[i].msg)) {
			msgs_print(&m);
			fail_msg("case %zu: no message containing '%s'", i, refused[i].msg);
		}
	}
	for (size_t i = 0; i < sizeof(accepted) / sizeof(accepted[0]); i++) {
		if (!load_text(accepted[i], &cfg, &m)) {
			msgs_print(&m);
			fail_msg("accepted case %zu does not load: %s", i, accepted[i]);
		}
		config_free(cfg);
	}

	/* SET refuses them as well, and the running value stays */
	cfg = config_new_defaults();
	assert_non_null(cfg);
	assert_false(config_set(cfg, "auth_type", "pam", err, sizeof(err)));
	assert_string_equal(err, "auth_type = pam is not supported: this authentication method is "
	                         "not implemented yet");
	assert_int_equal(cfg->auth_type, AUTH_MD5);
	assert_false(config_set(cfg, "auth_type", "ldap", err, sizeof(err)));
	assert_int_equal(cfg->auth_type, AUTH_MD5);
	assert_true(config_set(cfg, "server_tls_sslmode", "disable", err, sizeof(err)));
	assert_int_equal(cfg->server_tls_sslmode, SSLMODE_DISABLE);
	config_free(cfg);
}

static void test_reload_keeps_restart_settings(void **state)
{
	struct config *old, *fresh;
	struct msgs m;

	(void)state;
	assert_true(load_text("[pgbouncer]\nlisten_port = 1000\nunix_socket_dir = /a\n"
	                      "max_client_conn = 10\n",
	                      &old, &m));
	assert_true(load_text("[pgbouncer]\nlisten_port = 2000\nunix_socket_dir = /b\n"
	                      "max_client_conn = 20\n",
	                      &fresh, &m));
	assert_true(config_keep_no_reload(fresh, old));
	assert_int_equal(fresh->listen_port, 1000);
	assert_string_equal(fresh->unix_socket_dir, "/a");
	assert_int_equal(fresh->max_client_conn, 20);
	config_free(old);
	config_free(fresh);
}

/* Every setting of a and b prints the same, and their entries are alike field by field. */
static void assert_configs_equal(const struct config *a, const struct config *b)
{
	char va[512], vb[512];
	const struct cf_database *da = a->databases, *db = b->databases;
	const struct cf_user *ua = a->users, *ub = b->users;
	const struct cf_api *aa = a->apis, *ab = b->apis;
	const struct cf_synced_table *sa = a->synced_tables, *sb = b->synced_tables;

	for (int i = 0; i < config_key_count(); i++) {
		config_key_format(a, i, va, sizeof(va));
		config_key_format(b, i, vb, sizeof(vb));
		assert_string_equal(va, vb);
	}
	assert_string_equal(a->path, b->path);
	for (; da != NULL && db != NULL; da = da->next, db = db->next) {
		assert_string_equal(da->name, db->name);
		assert_string_equal(da->host, db->host);
		assert_string_equal(da->dbname, db->dbname);
		assert_string_equal(da->user, db->user);
		assert_string_equal(da->password, db->password);
		assert_string_equal(da->connect_query, db->connect_query);
		assert_string_equal(da->application_name, db->application_name);
		assert_int_equal(da->port, db->port);
		assert_int_equal(da->pool_size, db->pool_size);
		assert_int_equal(da->pool_mode, db->pool_mode);
		assert_int_equal(da->server_lifetime, db->server_lifetime);
	}
	assert_true(da == NULL && db == NULL);
	for (; ua != NULL && ub != NULL; ua = ua->next, ub = ub->next) {
		assert_string_equal(ua->name, ub->name);
		assert_int_equal(ua->pool_mode, ub->pool_mode);
		assert_int_equal(ua->max_user_connections, ub->max_user_connections);
		assert_int_equal(ua->query_timeout, ub->query_timeout);
	}
	assert_true(ua == NULL && ub == NULL);
	for (; aa != NULL && ab != NULL; aa = aa->next, ab = ab->next) {
		assert_string_equal(aa->name, ab->name);
		assert_string_equal(aa->type, ab->type);
		assert_string_equal(aa->file, ab->file);
		assert_int_equal(aa->line, ab->line);
		assert_int_equal(aa->nkv, ab->nkv);
		for (int i = 0; i < aa->nkv; i++) {
			assert_string_equal(aa->kv[i].key, ab->kv[i].key);
			assert_string_equal(aa->kv[i].value, ab->kv[i].value);
		}
	}
	assert_true(aa == NULL && ab == NULL);
	for (; sa != NULL && sb != NULL; sa = sa->next, sb = sb->next) {
		assert_string_equal(sa->database, sb->database);
		assert_string_equal(sa->schema, sb->schema);
		assert_string_equal(sa->table, sb->table);
		assert_int_equal(sa->nkv, sb->nkv);
		for (int i = 0; i < sa->nkv; i++) {
			assert_string_equal(sa->kv[i].key, sb->kv[i].key);
			assert_string_equal(sa->kv[i].value, sb->kv[i].value);
		}
	}
	assert_true(sa == NULL && sb == NULL);
}

/*
 * What another worker gets: a copy that says everything the original says and shares none of
 * its memory (the original freed, the copy still reads whole; a SET on one leaves the other).
 */
static void test_copy_is_whole_and_shares_nothing(void **state)
{
	struct config *orig, *ref, *copy;
	struct msgs m;
	char err[256];

	(void)state;
	assert_true(load_path(DATA "/full.ini", &orig, &m));
	assert_true(load_path(DATA "/full.ini", &ref, &m));
	assert_non_null(orig->databases);
	assert_non_null(orig->users);
	assert_non_null(orig->apis);
	assert_non_null(orig->synced_tables);
	copy = config_copy(orig);
	assert_non_null(copy);
	assert_ptr_not_equal(copy->databases, orig->databases);
	assert_ptr_not_equal(copy->listen_addr, orig->listen_addr);
	config_free(orig);
	assert_configs_equal(copy, ref);

	assert_true(config_set(copy, "server_reset_query", "SELECT 1", err, sizeof(err)));
	assert_string_not_equal(copy->server_reset_query, ref->server_reset_query);
	/* the next worker takes the value as the first checked it */
	assert_true(config_set_from(ref, copy, "server_reset_query"));
	assert_string_equal(ref->server_reset_query, "SELECT 1");
	assert_ptr_not_equal(ref->server_reset_query, copy->server_reset_query);
	assert_true(config_set(copy, "max_client_conn", "7", err, sizeof(err)));
	assert_true(config_set_from(ref, copy, "max_client_conn"));
	assert_int_equal(ref->max_client_conn, 7);
	assert_false(config_set_from(ref, copy, "no_such_setting"));
	assert_configs_equal(copy, ref);
	config_free(copy);
	config_free(ref);

	/* the defaults alone: no entries */
	orig = config_new_defaults();
	assert_non_null(orig);
	copy = config_copy(orig);
	assert_non_null(copy);
	assert_configs_equal(copy, orig);
	config_free(orig);
	config_free(copy);
}

/* The man page documents every setting of the table (and nothing is documented that is gone). */
static void test_man_page_lists_every_setting(void **state)
{
	FILE *f = fopen(TEST_SRCDIR "/doc/syncbouncer.5", "r");
	static char text[256 * 1024];
	size_t n;
	char want[128];

	(void)state;
	assert_non_null(f);
	n = fread(text, 1, sizeof(text) - 1, f);
	fclose(f);
	text[n] = '\0';
	for (int i = 0; i < config_key_count(); i++) {
		snprintf(want, sizeof(want), "\n.TP\n.B %s\n", config_key_name(i));
		if (!strstr(text, want))
			fail_msg("doc/syncbouncer.5 does not describe %s", config_key_name(i));
	}
}

static void test_enum_names(void **state)
{
	(void)state;
	assert_string_equal(pool_mode_str(POOL_STATEMENT), "statement");
	assert_string_equal(auth_type_str(AUTH_SCRAM_SHA_256), "scram-sha-256");
	assert_string_equal(auth_type_str(AUTH_HBA), "hba");
	assert_string_equal(sslmode_str(SSLMODE_VERIFY_CA), "verify-ca");
	assert_string_equal(load_balance_hosts_str(LOAD_BALANCE_ROUND_ROBIN), "round-robin");
	assert_string_equal(cf_level_str(CF_LEVEL_ERROR), "ERROR");
	assert_string_equal(config_key_type_str(config_key_index("server_lifetime")), "time");
}

static int setup_tmpdir(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_config.XXXXXX");
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int remove_tmpdir(void **state)
{
	char cmd[PATH_MAX + 16];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

/* The lists of names (admin_users, metrics_users, ignore_startup_parameters): one rule for all. */
static void test_name_lists(void **state)
{
	static const struct {
		const char *list, *name;
		bool ignore_case, found;
	} cases[] = {
	        {"alice, bob", "bob", false, true},
	        {" alice ,\tbob\t", "alice", false, true},
	        {" alice ,\tbob\t", "bob", false, true},
	        {"alice,,bob", "bob", false, true},
	        {"alice bob", "alice", false, false}, /* one name with a space: not alice */
	        {"alice bob", "alice bob", false, true},
	        {"alice", "alic", false, false},
	        {"alice", "alice2", false, false},
	        {"Alice", "alice", false, false}, /* user names are exact */
	        {"DateStyle, TimeZone", "timezone", true, true},
	        {"DateStyle, TimeZone", "timezone", false, false},
	        {"", "alice", false, false},
	        {"alice", "", false, false},
	        {" , ", "", false, false},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (cf_list_has(cases[i].list, cases[i].name, cases[i].ignore_case) !=
		    cases[i].found)
			fail_msg("\"%s\" in \"%s\"%s: expected %s", cases[i].name, cases[i].list,
			         cases[i].ignore_case ? " (case ignored)" : "",
			         cases[i].found ? "found" : "not found");
	}
	assert_false(cf_list_has(NULL, "alice", false));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_table_has_every_pgbouncer_key),
	        cmocka_unit_test(test_defaults_are_pgbouncers),
	        cmocka_unit_test(test_every_default_round_trips),
	        cmocka_unit_test(test_full_example),
	        cmocka_unit_test(test_shipped_example_loads),
	        cmocka_unit_test(test_format_basics),
	        cmocka_unit_test(test_include_relative_to_including_file),
	        cmocka_unit_test(test_include_errors),
	        cmocka_unit_test(test_include_depth_limit),
	        cmocka_unit_test(test_include_refused_when_asked),
	        cmocka_unit_test(test_later_duplicate_wins),
	        cmocka_unit_test(test_unknown_things_warn_and_continue),
	        cmocka_unit_test(test_bad_values_fail_with_file_line),
	        cmocka_unit_test(test_value_syntax),
	        cmocka_unit_test(test_many_entries),
	        cmocka_unit_test(test_long_line_and_nul_byte),
	        cmocka_unit_test(test_quoted_values),
	        cmocka_unit_test(test_fallback_database),
	        cmocka_unit_test(test_synced_table_names),
	        cmocka_unit_test(test_synced_table_references),
	        cmocka_unit_test(test_set_at_runtime),
	        cmocka_unit_test(test_secrets_never_shown),
	        cmocka_unit_test(test_unsupported_warns_once_when_set),
	        cmocka_unit_test(test_security_settings_refused),
	        cmocka_unit_test(test_reload_keeps_restart_settings),
	        cmocka_unit_test(test_copy_is_whole_and_shares_nothing),
	        cmocka_unit_test(test_man_page_lists_every_setting),
	        cmocka_unit_test(test_workers_setting),
	        cmocka_unit_test(test_enum_names),
	        cmocka_unit_test(test_name_lists),
	};

	return cmocka_run_group_tests(tests, setup_tmpdir, remove_tmpdir);
}
