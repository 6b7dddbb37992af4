/*
 * Tests of the catalog against a real PostgreSQL started by this program: a config with synced
 * tables that are fine, missing, without a primary key, with a two-column key, a view, in a
 * database without a user, and in a database that does not answer. Checks each table's state,
 * error, columns and key; the triggers and schema in the database; that a second catalog finds
 * everything in place; conninfo; and freeing a catalog before it is done. Also the SQL text
 * helpers (quoting), which need no server.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <libpq-fe.h>

#include "config.h"
#include "mutation/catalog.h"
#include "userlist.h"

#include "../fakes/pg_launch.h"

static struct pg_server pg;
static bool pg_up;

static const char crm_sql[] =
        "set role app;"
        "create schema salesforce;"
        "create table salesforce.contacts (id text primary key, first_name text not null,"
        " email varchar(80), created timestamptz default now(), n int generated always as"
        " identity);"
        "create table salesforce.nopk (a text);"
        "create table salesforce.twopk (a text, b text, primary key (a, b));"
        "create view salesforce.aview as select * from salesforce.contacts;"
        "create table salesforce.parted (id text primary key) partition by list (id);"
        "create table salesforce.\"Mixed Case\" (\"Key\" text primary key);"
        "create table salesforce.notmine (id text primary key);"
        "reset role;"
        "alter table salesforce.notmine owner to postgres;"
        "grant usage on schema salesforce to clerk;";

static int group_setup(void **state)
{
	(void)state;
	switch (pg_server_start(&pg)) {
	case PG_LAUNCH_OK:
		break;
	case PG_LAUNCH_NO_BINARIES:
		return 0;
	case PG_LAUNCH_FAILED:
		return -1;
	}
	/* CREATE DATABASE cannot share a statement text with others */
	if (!pg_server_exec(&pg, "postgres", "create role app login; create role clerk login") ||
	    !pg_server_exec(&pg, "postgres", "create database crm owner app") ||
	    !pg_server_exec(&pg, "crm", crm_sql))
		return -1;
	pg_up = true;
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	pg_server_stop(&pg);
	return 0;
}

#define NEED_PG()                                                                                  \
	do {                                                                                       \
		if (!pg_up)                                                                        \
			skip();                                                                    \
	} while (0)

/* ------------------------------------------------------------------ loop helpers */

struct run {
	struct event_base *base;
	struct config *cfg;
	struct userlist *users;
	struct catalog *cat;
	int done_calls;
};

static void on_done(void *arg, struct catalog *cat)
{
	struct run *r = arg;

	assert_ptr_equal(cat, r->cat);
	r->done_calls++;
	event_base_loopbreak(r->base);
}

static void deadline(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	event_base_loopbreak(arg);
}

static void deadline_cb_flag(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	*(bool *)arg = true;
}

static void run_loop(struct run *r, int secs)
{
	struct event *t = evtimer_new(r->base, deadline, r->base);
	struct timeval tv = {.tv_sec = secs};

	evtimer_add(t, &tv);
	event_base_dispatch(r->base);
	event_free(t);
}

/* The ini with the server's port in place of @PORT@ and a closed port for @DEAD@. */
static struct config *load_ini(const char *tmpl)
{
	char text[4096], port[16], dead[16];
	const char *s = tmpl;
	size_t n = 0;
	struct config *cfg = NULL;

	snprintf(port, sizeof(port), "%d", pg.port);
	snprintf(dead, sizeof(dead), "%d", pg_free_port());
	while (*s && n + 16 < sizeof(text)) {
		if (strncmp(s, "@PORT@", 6) == 0) {
			n += (size_t)snprintf(text + n, sizeof(text) - n, "%s", port);
			s += 6;
		} else if (strncmp(s, "@DEAD@", 6) == 0) {
			n += (size_t)snprintf(text + n, sizeof(text) - n, "%s", dead);
			s += 6;
		} else {
			text[n++] = *s++;
		}
	}
	text[n] = '\0';
	assert_true(config_load_buffer(text, n, "test.ini", &cfg));
	return cfg;
}

static void start(struct run *r, const char *ini, const char *userlist)
{
	memset(r, 0, sizeof(*r));
	r->base = event_base_new();
	assert_non_null(r->base);
	r->cfg = load_ini(ini);
	if (userlist) {
		r->users = userlist_load_buffer(userlist, strlen(userlist), "userlist.txt");
		assert_non_null(r->users);
	}
	r->cat = catalog_create(r->base, r->cfg, r->users, on_done, r);
	assert_non_null(r->cat);
	assert_int_equal(r->done_calls, 0); /* never from inside catalog_create() */
}

static void finish(struct run *r)
{
	catalog_free(r->cat);
	userlist_free(r->users);
	config_free(r->cfg);
	event_base_free(r->base);
}

static struct catalog_table *find(struct run *r, const char *db, const char *schema,
                                  const char *table)
{
	struct catalog_table *t = catalog_find(r->cat, db, schema, table);

	assert_non_null(t);
	return t;
}

static const char main_ini[] = "[databases]\n"
                               "crm = host=127.0.0.1 port=@PORT@ user=app\n"
                               "nouser = host=127.0.0.1 port=@PORT@ dbname=crm\n"
                               "dead = host=127.0.0.1 port=@DEAD@ dbname=crm user=app\n"
                               "[apis]\n"
                               "sf = type=salesforce base_url=http://127.0.0.1:1\n"
                               "[synced_tables]\n"
                               "crm.salesforce.contacts = api=sf object=Contact\n"
                               "crm.salesforce.missing = api=sf\n"
                               "crm.salesforce.nopk = api=sf\n"
                               "crm.salesforce.twopk = api=sf\n"
                               "crm.salesforce.aview = api=sf\n"
                               "crm.salesforce.parted = api=sf\n"
                               "crm.salesforce.\"Mixed Case\" = api=sf\n"
                               "crm.salesforce.notmine = api=sf\n"
                               "nouser.salesforce.contacts = api=sf\n"
                               "dead.salesforce.contacts = api=sf\n"
                               "[pgbouncer]\n"
                               "server_connect_timeout = 3\n";

/* ------------------------------------------------------------------ tests */

static void test_tables_ready_and_failed(void **state)
{
	struct run r;
	struct catalog_table *t;
	const struct catalog_column *c;
	char v[256];

	(void)state;
	NEED_PG();
	assert_true(pg_server_exec(&pg, "crm", "drop schema if exists syncbouncer cascade"));
	start(&r, main_ini, NULL);
	run_loop(&r, 20);
	assert_int_equal(r.done_calls, 1);
	assert_int_equal(catalog_count(r.cat), 10);
	for (int i = 0; i < catalog_count(r.cat); i++)
		assert_int_not_equal(catalog_table_at(r.cat, i)->state, CAT_PENDING);
	assert_null(catalog_table_at(r.cat, 10));
	assert_null(catalog_table_at(r.cat, -1));

	t = find(&r, "crm", "salesforce", "contacts");
	assert_string_equal(catalog_state_str(t->state), "ready");
	assert_string_equal(t->error, "");
	assert_string_equal(t->api, "sf");
	assert_string_equal(cf_kv_get(t->cf->kv, t->cf->nkv, "object"), "Contact");
	assert_string_equal(t->pk, "id");
	assert_int_equal(t->ncols, 5);
	assert_true(pg_server_value(&pg, "crm", "select 'salesforce.contacts'::regclass::oid", v,
	                            sizeof(v)));
	assert_int_equal(t->relid, strtoul(v, NULL, 10));
	assert_string_equal(t->cols[0].name, "id");
	assert_int_equal(t->cols[0].type_oid, 25);
	assert_true(t->cols[0].not_null);
	assert_false(t->cols[0].has_default);
	c = catalog_column_find(t, "first_name");
	assert_non_null(c);
	assert_true(c->not_null);
	c = catalog_column_find(t, "email");
	assert_string_equal(c->type_name, "character varying(80)");
	assert_false(c->not_null);
	assert_true(catalog_column_find(t, "created")->has_default);
	assert_string_equal(catalog_column_find(t, "created")->type_name,
	                    "timestamp with time zone");
	assert_true(catalog_column_find(t, "n")->has_default); /* identity */
	assert_null(catalog_column_find(t, "nope"));

	t = find(&r, "crm", "salesforce", "missing");
	assert_int_equal(t->state, CAT_FAILED);
	assert_string_equal(t->error, "relation \"salesforce.missing\" does not exist");
	t = find(&r, "crm", "salesforce", "nopk");
	assert_int_equal(t->state, CAT_FAILED);
	assert_string_equal(t->error, "needs a single-column primary key");
	t = find(&r, "crm", "salesforce", "twopk");
	assert_string_equal(t->error, "needs a single-column primary key");
	t = find(&r, "crm", "salesforce", "aview");
	assert_int_equal(t->state, CAT_FAILED);
	assert_non_null(strstr(t->error, "is not a table"));
	t = find(&r, "crm", "salesforce", "parted");
	assert_int_equal(t->state, CAT_FAILED);
	assert_string_equal(t->error, "partitioned tables are not supported");
	t = find(&r, "crm", "salesforce", "Mixed Case");
	assert_int_equal(t->state, CAT_READY);
	assert_string_equal(t->pk, "Key");
	/* owned by someone else: app may not attach triggers */
	t = find(&r, "crm", "salesforce", "notmine");
	assert_int_equal(t->state, CAT_FAILED);
	assert_non_null(strstr(t->error, "cannot install the guard triggers: "));
	t = find(&r, "nouser", "salesforce", "contacts");
	assert_int_equal(t->state, CAT_FAILED);
	assert_non_null(strstr(t->error, "no user to connect as"));
	t = find(&r, "dead", "salesforce", "contacts");
	assert_int_equal(t->state, CAT_FAILED);
	assert_non_null(strstr(t->error, "cannot connect to database dead as user app"));

	/* what the database now holds */
	assert_true(pg_server_value(&pg, "crm",
	                            "select count(*) from pg_trigger where tgrelid in"
	                            " ('salesforce.contacts'::regclass,"
	                            " 'salesforce.\"Mixed Case\"'::regclass)"
	                            " and tgname like 'syncbouncer_guard%'",
	                            v, sizeof(v)));
	assert_string_equal(v, "6");
	assert_true(
	        pg_server_value(&pg, "crm", "select value from syncbouncer.meta", v, sizeof(v)));
	assert_string_equal(v, catalog_schema_version());
	assert_true(
	        pg_server_value(&pg, "crm",
	                        "select encode(tgargs, 'escape') from pg_trigger where tgrelid ="
	                        " 'salesforce.\"Mixed Case\"'::regclass and tgname ="
	                        " 'syncbouncer_guard'",
	                        v, sizeof(v)));
	assert_string_equal(v, "Key\\000");
	finish(&r);
}

static void test_second_run_finds_everything_in_place(void **state)
{
	static const char ini[] = "[databases]\n"
	                          "crm = host=127.0.0.1 port=@PORT@ user=app\n"
	                          "[apis]\n"
	                          "sf = type=salesforce base_url=http://127.0.0.1:1\n"
	                          "[synced_tables]\n"
	                          "crm.salesforce.contacts = api=sf\n";
	struct run r;
	char before[64], after[64];
	const char *q = "select string_agg(oid::text, ',' order by oid) from pg_trigger"
	                " where tgname like 'syncbouncer_guard%'";

	(void)state;
	NEED_PG();
	start(&r, ini, NULL);
	run_loop(&r, 20);
	assert_int_equal(find(&r, "crm", "salesforce", "contacts")->state, CAT_READY);
	finish(&r);
	assert_true(pg_server_value(&pg, "crm", q, before, sizeof(before)));
	/* nothing to do: the triggers are not dropped and created again (same oids) */
	start(&r, ini, NULL);
	run_loop(&r, 20);
	assert_int_equal(find(&r, "crm", "salesforce", "contacts")->state, CAT_READY);
	finish(&r);
	assert_true(pg_server_value(&pg, "crm", q, after, sizeof(after)));
	assert_string_equal(before, after);
	/* a trigger removed by hand comes back */
	assert_true(pg_server_exec(&pg, "crm",
	                           "drop trigger syncbouncer_guard on salesforce.contacts"));
	start(&r, ini, NULL);
	run_loop(&r, 20);
	assert_int_equal(find(&r, "crm", "salesforce", "contacts")->state, CAT_READY);
	finish(&r);
	assert_true(
	        pg_server_value(&pg, "crm",
	                        "select count(*) from pg_trigger where tgrelid ="
	                        " 'salesforce.contacts'::regclass and tgname like 'syncbouncer%'",
	                        after, sizeof(after)));
	assert_string_equal(after, "3");
}

static void test_failed_table_retried_until_ready(void **state)
{
	static const char ini[] = "[databases]\n"
	                          "crm = host=127.0.0.1 port=@PORT@ user=app\n"
	                          "[apis]\n"
	                          "sf = type=salesforce base_url=http://127.0.0.1:1\n"
	                          "[synced_tables]\n"
	                          "crm.salesforce.contacts = api=sf\n"
	                          "crm.salesforce.later = api=sf\n"
	                          "[pgbouncer]\n"
	                          "server_login_retry = 1\n";
	struct run r;
	struct catalog_table *t;
	bool expired = false;
	struct event *deadline_ev;
	struct timeval tv = {.tv_sec = 10};

	(void)state;
	NEED_PG();
	start(&r, ini, NULL);
	run_loop(&r, 20);
	assert_int_equal(r.done_calls, 1);
	t = find(&r, "crm", "salesforce", "later");
	assert_int_equal(t->state, CAT_FAILED);
	assert_int_equal(find(&r, "crm", "salesforce", "contacts")->state, CAT_READY);
	/* a migration creates the table: the next try finds it */
	assert_true(pg_server_exec(
	        &pg, "crm", "set role app; create table salesforce.later (id int primary key)"));
	deadline_ev = evtimer_new(r.base, deadline_cb_flag, &expired);
	evtimer_add(deadline_ev, &tv);
	while (t->state != CAT_READY && !expired)
		event_base_loop(r.base, EVLOOP_ONCE);
	event_free(deadline_ev);
	assert_int_equal(t->state, CAT_READY);
	assert_string_equal(t->error, "");
	assert_string_equal(t->pk, "id");
	assert_int_equal(t->cols[0].type_oid, 23);
	assert_int_equal(r.done_calls, 1);
	finish(&r);
	assert_true(pg_server_exec(&pg, "crm", "drop table salesforce.later"));
}

static void test_user_from_synced_table_line(void **state)
{
	/* clerk has no right on the database's schema: installation fails, as clerk */
	static const char ini[] = "[databases]\n"
	                          "crm = host=127.0.0.1 port=@PORT@ user=app password=unused\n"
	                          "[apis]\n"
	                          "sf = type=salesforce base_url=http://127.0.0.1:1\n"
	                          "[synced_tables]\n"
	                          "crm.salesforce.contacts = api=sf user=clerk\n";
	struct run r;
	struct catalog_table *t;
	char ci[1024];

	(void)state;
	NEED_PG();
	assert_true(pg_server_exec(&pg, "crm", "drop schema if exists syncbouncer cascade"));
	start(&r, ini, "\"clerk\" \"clerkpw\"\n");
	run_loop(&r, 20);
	t = find(&r, "crm", "salesforce", "contacts");
	assert_int_equal(t->state, CAT_FAILED);
	assert_non_null(strstr(t->error, "cannot install the syncbouncer schema"));
	assert_true(catalog_conninfo(r.cat, "crm", ci, sizeof(ci)));
	assert_non_null(strstr(ci, "user='clerk'"));
	assert_non_null(strstr(ci, "password='clerkpw'"));
	assert_non_null(strstr(ci, "dbname='crm'"));
	assert_non_null(strstr(ci, "host='127.0.0.1'"));
	finish(&r);
}

static void test_conninfo(void **state)
{
	static const char ini[] =
	        "[databases]\n"
	        "crm = host=127.0.0.1 port=@PORT@ dbname=realdb user=app password='it''s \\\\x'\n"
	        "sock = dbname=crm user=app\n"
	        "[apis]\n"
	        "sf = type=salesforce base_url=http://127.0.0.1:1\n"
	        "[synced_tables]\n"
	        "crm.salesforce.contacts = api=sf\n"
	        "sock.salesforce.contacts = api=sf\n"
	        "[pgbouncer]\n"
	        "unix_socket_dir = /nonexistent\n";
	struct run r;
	char ci[1024], small[16];

	(void)state;
	NEED_PG();
	start(&r, ini, NULL);
	assert_true(catalog_conninfo(r.cat, "crm", ci, sizeof(ci)));
	assert_non_null(strstr(ci, "dbname='realdb'"));
	assert_non_null(strstr(ci, "password='it\\'s \\\\x'"));
	assert_true(catalog_conninfo(r.cat, "sock", ci, sizeof(ci)));
	assert_non_null(strstr(ci, "host='/nonexistent'"));
	assert_false(catalog_conninfo(r.cat, "other", ci, sizeof(ci)));
	assert_string_equal(ci, "");
	assert_false(catalog_conninfo(r.cat, "crm", small, sizeof(small)));
	assert_string_equal(small, "");
	/* freed before done: done never runs, nothing leaks (sanitizers) */
	catalog_free(r.cat);
	r.cat = NULL;
	run_loop(&r, 1);
	assert_int_equal(r.done_calls, 0);
	finish(&r);
}

/* The control-plane connections follow server_tls_*: libpq gets the same sslmode and files. */
static void test_conninfo_tls(void **state)
{
	static const char ini[] = "[databases]\n"
	                          "crm = host=127.0.0.1 port=@PORT@ user=app password=pw\n"
	                          "[apis]\n"
	                          "sf = type=salesforce base_url=http://127.0.0.1:1\n"
	                          "[synced_tables]\n"
	                          "crm.salesforce.contacts = api=sf\n"
	                          "[pgbouncer]\n"
	                          "server_tls_sslmode = verify-full\n"
	                          "server_tls_ca_file = /etc/ca.crt\n"
	                          "server_tls_cert_file = /etc/client.crt\n"
	                          "server_tls_key_file = /etc/client.key\n";
	struct run r;
	char ci[1024];

	(void)state;
	NEED_PG();
	start(&r, ini, NULL);
	assert_true(catalog_conninfo(r.cat, "crm", ci, sizeof(ci)));
	assert_non_null(strstr(ci, "sslmode='verify-full'"));
	assert_non_null(strstr(ci, "sslrootcert='/etc/ca.crt'"));
	assert_non_null(strstr(ci, "sslcert='/etc/client.crt'"));
	assert_non_null(strstr(ci, "sslkey='/etc/client.key'"));
	catalog_free(r.cat);
	r.cat = NULL;
	run_loop(&r, 1);
	finish(&r);
}

static const char contacts_ini[] = "[databases]\n"
                                   "crm = host=127.0.0.1 port=@PORT@ user=app\n"
                                   "[apis]\n"
                                   "sf = type=salesforce base_url=http://127.0.0.1:1\n"
                                   "[synced_tables]\n"
                                   "crm.salesforce.contacts = api=sf\n";

/* One run of the catalog over contacts_ini: the table's state, its error into error. */
static enum catalog_state run_contacts(char *error, size_t size)
{
	struct run r;
	struct catalog_table *t;
	enum catalog_state state;

	start(&r, contacts_ini, NULL);
	run_loop(&r, 20);
	assert_int_equal(r.done_calls, 1);
	t = find(&r, "crm", "salesforce", "contacts");
	state = t->state;
	snprintf(error, size, "%s", t->error);
	finish(&r);
	return state;
}

static void test_version_parse(void **state)
{
	static const struct {
		const char *text;
		bool ok;
		long value;
	} cases[] = {
	        {"10", true, 10},
	        {"9", true, 9},
	        {"0", true, 0},
	        {"007", true, 7},
	        {"999999999", true, 999999999},
	        {"1000000000", false, 0},
	        {"", false, 0},
	        {"10a", false, 0},
	        {" 10", false, 0},
	        {"-1", false, 0},
	        {"1.5", false, 0},
	        {"x", false, 0},
	};
	long v;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		v = -42;
		assert_int_equal(catalog_version_parse(cases[i].text, &v), cases[i].ok);
		assert_int_equal(v, cases[i].ok ? cases[i].value : -42);
	}
	assert_false(catalog_version_parse(NULL, &v));
	assert_true(catalog_version_parse(catalog_schema_version(), &v));
	assert_true(v >= 10);
}

/*
 * A newer schema (a newer syncbouncer serves the database) is left as it is: the table fails
 * naming both versions, nothing is installed; an older one is upgraded; a version that is not a
 * number is an error naming it. An install that would lower the version (an older pooler's, or
 * ours after a newer one got in between) fails whole, and deleting the version row lets the
 * installed version go back.
 */
/* The newer schema the test put in crm is still there: its version, and its marked function. */
static void assert_newer_schema_kept(const char *newer)
{
	char v[256];

	assert_true(
	        pg_server_value(&pg, "crm", "select value from syncbouncer.meta", v, sizeof(v)));
	assert_string_equal(v, newer);
	assert_true(pg_server_value(&pg, "crm",
	                            "select prosrc from pg_proc where oid ="
	                            " 'syncbouncer.applied()'::regprocedure",
	                            v, sizeof(v)));
	assert_string_equal(v, "begin /* newer */ return null; end");
}

static void test_newer_schema_is_never_replaced(void **state)
{
	char error[256], v[256], want[256], newer[32], older[32], sql[256];
	long ours;

	(void)state;
	NEED_PG();
	assert_true(catalog_version_parse(catalog_schema_version(), &ours));
	snprintf(newer, sizeof(newer), "%ld", ours + 1);
	snprintf(older, sizeof(older), "%ld", ours - 1);
	assert_true(pg_server_exec(&pg, "crm", "drop schema if exists syncbouncer cascade"));
	assert_int_equal(run_contacts(error, sizeof(error)), CAT_READY);

	/* what a newer pooler installed: its version, and a function of its own */
	snprintf(sql, sizeof(sql), "update syncbouncer.meta set value = '%s' where key = 'version'",
	         newer);
	assert_true(pg_server_exec(&pg, "crm", sql));
	assert_true(pg_server_exec(&pg, "crm",
	                           "create or replace function syncbouncer.applied() returns"
	                           " trigger language plpgsql as"
	                           " 'begin /* newer */ return null; end'"));
	assert_true(pg_server_exec(&pg, "crm",
	                           "drop trigger syncbouncer_guard_applied on"
	                           " salesforce.contacts"));
	assert_int_equal(run_contacts(error, sizeof(error)), CAT_FAILED);
	snprintf(want, sizeof(want),
	         "the syncbouncer schema in database crm is version %s, newer than this"
	         " syncbouncer's %ld: upgrade syncbouncer",
	         newer, ours);
	assert_string_equal(error, want);
	assert_newer_schema_kept(newer);
	/* nor were the table's triggers touched */
	assert_true(pg_server_value(&pg, "crm",
	                            "select count(*) from pg_trigger where tgrelid ="
	                            " 'salesforce.contacts'::regclass and tgname like"
	                            " 'syncbouncer%'",
	                            v, sizeof(v)));
	assert_string_equal(v, "2");

	/* our install text run anyway (a newer pooler installed after our check): all undone */
	assert_false(pg_server_exec(&pg, "crm", catalog_schema_sql()));
	assert_newer_schema_kept(newer);

	/* not a number: named, left alone */
	assert_true(pg_server_exec(&pg, "crm",
	                           "update syncbouncer.meta set value = '11-beta' where key ="
	                           " 'version'"));
	assert_int_equal(run_contacts(error, sizeof(error)), CAT_FAILED);
	assert_string_equal(error, "the syncbouncer schema in database crm records version"
	                           " \"11-beta\", which is not a number: it is left as it is (if"
	                           " it is damaged, delete the version row: see"
	                           " doc/synced-tables.md)");
	assert_true(
	        pg_server_value(&pg, "crm", "select value from syncbouncer.meta", v, sizeof(v)));
	assert_string_equal(v, "11-beta");

	/* the rollback: with the version row gone, ours goes in */
	assert_true(
	        pg_server_exec(&pg, "crm", "delete from syncbouncer.meta where key = 'version'"));
	assert_int_equal(run_contacts(error, sizeof(error)), CAT_READY);
	assert_true(
	        pg_server_value(&pg, "crm", "select value from syncbouncer.meta", v, sizeof(v)));
	assert_string_equal(v, catalog_schema_version());
	assert_true(pg_server_value(&pg, "crm",
	                            "select count(*) from pg_trigger where tgrelid ="
	                            " 'salesforce.contacts'::regclass and tgname like"
	                            " 'syncbouncer%'",
	                            v, sizeof(v)));
	assert_string_equal(v, "3");

	/* an older version is upgraded */
	assert_true(
	        pg_server_exec(&pg, "crm", "delete from syncbouncer.meta where key = 'version'"));
	snprintf(sql, sizeof(sql), "insert into syncbouncer.meta values ('version', '%s')", older);
	assert_true(pg_server_exec(&pg, "crm", sql));
	assert_int_equal(run_contacts(error, sizeof(error)), CAT_READY);
	assert_true(
	        pg_server_value(&pg, "crm", "select value from syncbouncer.meta", v, sizeof(v)));
	assert_string_equal(v, catalog_schema_version());
	assert_true(pg_server_value(&pg, "crm",
	                            "select prosrc not like '%newer%' from pg_proc where oid ="
	                            " 'syncbouncer.applied()'::regprocedure",
	                            v, sizeof(v)));
	assert_string_equal(v, "t");
}

static void count_done(void *arg, struct catalog *cat)
{
	(void)cat;
	(*(int *)arg)++;
}

/*
 * Two catalogs (two poolers of one version) started together while a transaction of ours holds
 * the lock that `hold` takes, released once both wait for it (`waiting` counts the waiters);
 * both must end with the table ready.
 */
static void two_at_once(const char *hold, const char *waiting)
{
	struct event_base *base;
	struct config *cfg;
	struct catalog *cat[2];
	char ci[128], v[64];
	PGconn *holder;
	PGresult *res;
	int done = 0;
	time_t deadline = time(NULL) + 20;

	snprintf(ci, sizeof(ci), "host=127.0.0.1 port=%d dbname=crm user=postgres", pg.port);
	holder = PQconnectdb(ci);
	assert_int_equal(PQstatus(holder), CONNECTION_OK);
	res = PQexec(holder, "begin");
	assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
	PQclear(res);
	res = PQexec(holder, hold);
	assert_true(PQresultStatus(res) == PGRES_TUPLES_OK ||
	            PQresultStatus(res) == PGRES_COMMAND_OK);
	PQclear(res);

	base = event_base_new();
	assert_non_null(base);
	cfg = load_ini(contacts_ini);
	cat[0] = catalog_create(base, cfg, NULL, count_done, &done);
	cat[1] = catalog_create(base, cfg, NULL, count_done, &done);
	assert_non_null(cat[0]);
	assert_non_null(cat[1]);
	for (;;) {
		event_base_loop(base, EVLOOP_NONBLOCK);
		assert_true(pg_server_value(&pg, "crm", waiting, v, sizeof(v)));
		if (strcmp(v, "2") == 0)
			break;
		assert_true(time(NULL) < deadline);
		usleep(10000);
	}
	res = PQexec(holder, "commit");
	assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
	PQclear(res);
	PQfinish(holder);
	while (done < 2 && time(NULL) < deadline)
		event_base_loop(base, EVLOOP_ONCE);
	assert_int_equal(done, 2);
	for (int i = 0; i < 2; i++) {
		struct catalog_table *t = catalog_find(cat[i], "crm", "salesforce", "contacts");

		assert_non_null(t);
		assert_string_equal(t->error, "");
		assert_int_equal(t->state, CAT_READY);
		catalog_free(cat[i]);
	}
	config_free(cfg);
	event_base_free(base);
	assert_true(pg_server_value(&pg, "crm",
	                            "select count(*) from pg_trigger where tgrelid ="
	                            " 'salesforce.contacts'::regclass and tgname like"
	                            " 'syncbouncer%'",
	                            v, sizeof(v)));
	assert_string_equal(v, "3");
	assert_true(
	        pg_server_value(&pg, "crm", "select value from syncbouncer.meta", v, sizeof(v)));
	assert_string_equal(v, catalog_schema_version());
}

/*
 * Two poolers of the same version starting together both find the schema missing and both
 * install it: one after the other (the install's advisory lock), the second finding the
 * first's objects. Then, the schema in place, both find the triggers missing and both install
 * them: one after the other (the table's lock), the second replacing the first's. Nothing fails.
 */
static void test_two_installs_at_once_both_succeed(void **state)
{
	const char *sql = catalog_schema_sql(), *end = strstr(sql, ";\n");
	char lock[128];

	(void)state;
	NEED_PG();
	/* the install's first statement takes its lock: the same, in a transaction of ours */
	assert_non_null(end);
	assert_true((size_t)(end - sql) < sizeof(lock));
	assert_non_null(strstr(sql, "pg_advisory_xact_lock("));
	snprintf(lock, sizeof(lock), "%.*s", (int)(end - sql), sql);
	assert_true(pg_server_exec(&pg, "crm", "drop schema if exists syncbouncer cascade"));
	two_at_once(lock,
	            "select count(*) from pg_locks where locktype = 'advisory' and not granted");
	assert_true(
	        pg_server_exec(&pg, "crm",
	                       "drop trigger syncbouncer_guard on salesforce.contacts;"
	                       " drop trigger syncbouncer_guard_applied on salesforce.contacts"));
	two_at_once("lock table salesforce.contacts in access exclusive mode",
	            "select count(*) from pg_locks where relation = 'salesforce.contacts'::regclass"
	            " and not granted");
}

static void test_no_synced_tables(void **state)
{
	struct run r;

	(void)state;
	start(&r, "[databases]\nx = host=127.0.0.1\n", NULL);
	assert_int_equal(catalog_count(r.cat), 0);
	run_loop(&r, 5);
	assert_int_equal(r.done_calls, 1);
	finish(&r);
}

static void test_trigger_sql_quoting(void **state)
{
	char sql[2048], small[64];
	char long_name[400];

	(void)state;
	assert_true(catalog_trigger_sql("sales force", "con\"tacts", "i'd", sql, sizeof(sql)));
	assert_non_null(strstr(sql, "on \"sales force\".\"con\"\"tacts\""));
	assert_non_null(strstr(sql, "syncbouncer.guard('i''d')"));
	assert_non_null(strstr(sql, "syncbouncer_guard_truncate before truncate"));
	assert_false(catalog_trigger_sql("s", "t", "id", small, sizeof(small)));
	assert_string_equal(small, "");
	assert_false(catalog_trigger_sql("", "t", "id", sql, sizeof(sql)));
	assert_false(catalog_trigger_sql("s", "t", "", sql, sizeof(sql)));
	memset(long_name, 'a', sizeof(long_name) - 1);
	long_name[sizeof(long_name) - 1] = '\0';
	assert_false(catalog_trigger_sql("s", long_name, "id", sql, sizeof(sql)));
	assert_non_null(
	        strstr(catalog_schema_sql(), "create or replace function syncbouncer.guard()"));
	assert_string_equal(catalog_state_str(CAT_PENDING), "pending");
	assert_string_equal(catalog_state_str(CAT_FAILED), "failed");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_trigger_sql_quoting),
	        cmocka_unit_test(test_no_synced_tables),
	        cmocka_unit_test(test_tables_ready_and_failed),
	        cmocka_unit_test(test_second_run_finds_everything_in_place),
	        cmocka_unit_test(test_failed_table_retried_until_ready),
	        cmocka_unit_test(test_user_from_synced_table_line),
	        cmocka_unit_test(test_version_parse),
	        cmocka_unit_test(test_newer_schema_is_never_replaced),
	        cmocka_unit_test(test_two_installs_at_once_both_succeed),
	        cmocka_unit_test(test_conninfo),
	        cmocka_unit_test(test_conninfo_tls),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
