/*
 * catalog — installs the guard triggers and reads the shape of every synced table (see
 * include/mutation/catalog.h).
 *
 * One "link" per distinct connection (database + user + password): a pgc that runs, one after
 * another, the version check, the schema installation when the installed version is older (or
 * none), then per table the introspection query and, when the triggers are missing or differ, their
 * installation. Each table's statements run in their own implicit transaction, so a table
 * that fails (missing, no privilege, lock timeout) leaves the others alone. The link closes its
 * pgc when its last table is settled; the catalog calls done when the last link finished.
 *
 * A link whose tables did not all become ready (the database was down, a table is created
 * later by a migration, a lock timed out) runs again for those tables after a delay that starts
 * at server_login_retry and doubles up to CAT_MAX_RETRY_SEC. A table that is ready is never read
 * again by this catalog, so the pipeline may hold on to its columns.
 *
 * Versions are compared as numbers. A newer installed schema, or a version that is not a
 * number, is never installed over: the link's tables fail with a message naming both versions
 * (a newer pooler serves that database), and are tried again later like any failed table.
 *
 * Invariants: a table is CAT_PENDING only until its link's first run ends; cat->pending counts
 * the links whose first run has not ended; done is scheduled through a zero-delay event, so it
 * never runs inside catalog_create(), and only once.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "config.h"
#include "log.h"
#include "mutation/catalog.h"
#include "mutation/classifier.h"
#include "pgc.h"
#include "userlist.h"

#include "catalog_sql.h"

/* conninfo: host/port/dbname/user/password, each at most a few hundred bytes once quoted. */
#define CAT_MAX_CONNINFO 2048
/* PostgreSQL's identifiers are at most 63 bytes; a config may hold longer (then: not found). */
#define CAT_MAX_NAME 256
/* trigger text: the format plus the quoted names, several times */
#define CAT_MAX_TRIGGER_SQL 4096
/* the longest wait between two runs of a link whose tables are not all ready */
#define CAT_MAX_RETRY_SEC 300

enum cat_step {
	CAT_STEP_CONNECT,
	CAT_STEP_EXISTS,
	CAT_STEP_META,
	CAT_STEP_SCHEMA,
	CAT_STEP_COLUMNS,
	CAT_STEP_TRIGGERS,
	CAT_STEP_DONE,
};

struct cat_link {
	struct catalog *cat;
	char conninfo[CAT_MAX_CONNINFO]; /* holds a password: never logged */
	const char *database, *user;     /* for messages */
	struct pgc *pc;
	int *tables; /* indices into cat->tables, in config order */
	int ntables;
	int *todo; /* this run's tables: all of them at first, later those not ready */
	int ntodo;
	int cur; /* the table being read, an index into todo */
	enum cat_step step;
	bool first_run_over;
	struct event *retry_ev;
	int64_t retry_usec; /* the next wait */
	struct cat_link *next;
};

struct catalog {
	struct event_base *base;
	void (*done)(void *arg, struct catalog *cat);
	void *done_arg;
	struct event *done_ev;
	struct catalog_table *tables;
	struct cat_link **link_of; /* per table, NULL when no connection could be made up */
	int ntables;
	struct cat_link *links;
	int pending;
	int64_t retry_usec; /* the first wait: server_login_retry */
};

const char *catalog_state_str(enum catalog_state state)
{
	switch (state) {
	case CAT_PENDING:
		return "pending";
	case CAT_READY:
		return "ready";
	case CAT_FAILED:
		return "failed";
	}
	return "?";
}

const char *catalog_schema_sql(void)
{
	return catalog_sql_schema;
}

const char *catalog_schema_version(void)
{
	return CATALOG_SQL_VERSION;
}

/* Appends s quoted with `q` (doubling q inside; and backslashes when bs) to out[*len..size). */
static bool quote_into(char *out, size_t size, size_t *len, const char *s, char q, bool bs)
{
	if (*len + 1 >= size)
		return false;
	out[(*len)++] = q;
	for (; *s; s++) {
		if (*len + 3 >= size)
			return false;
		if (*s == q || (bs && *s == '\\'))
			out[(*len)++] = bs ? '\\' : q;
		out[(*len)++] = *s;
	}
	if (*len + 2 > size)
		return false;
	out[(*len)++] = q;
	out[*len] = '\0';
	return true;
}

/* "name" quoted as a PostgreSQL identifier, always (simpler than deciding when it must be). */
static bool quote_ident(char *out, size_t size, const char *name)
{
	size_t len = 0;

	if (!name || !*name || strlen(name) > CAT_MAX_NAME)
		return false;
	return quote_into(out, size, &len, name, '"', false);
}

bool catalog_trigger_sql(const char *schema, const char *table, const char *pk, char *out,
                         size_t size)
{
	char qs[2 * CAT_MAX_NAME + 3], qt[2 * CAT_MAX_NAME + 3], qrel[4 * CAT_MAX_NAME + 8];
	char lit[2 * CAT_MAX_NAME + 3];
	size_t len = 0;
	int n;

	if (size > 0)
		out[0] = '\0';
	if (!quote_ident(qs, sizeof(qs), schema) || !quote_ident(qt, sizeof(qt), table) || !pk ||
	    !*pk || strlen(pk) > CAT_MAX_NAME)
		return false;
	/* a standard-conforming string literal: only the quote is doubled */
	if (!quote_into(lit, sizeof(lit), &len, pk, '\'', false))
		return false;
	snprintf(qrel, sizeof(qrel), "%s.%s", qs, qt);
	n = snprintf(out, size, CATALOG_SQL_TRIGGERS_FMT, qrel, lit);
	if (n < 0 || (size_t)n >= size) {
		if (size > 0)
			out[0] = '\0';
		return false;
	}
	return true;
}

/* Appends " key='value'" (libpq quoting) to out. */
static bool conninfo_add(char *out, size_t size, const char *key, const char *value)
{
	size_t len = strlen(out);
	int n;

	if (!value || !*value)
		return true;
	n = snprintf(out + len, size - len, "%s%s=", len ? " " : "", key);
	if (n < 0 || (size_t)n >= size - len)
		return false;
	len += (size_t)n;
	return quote_into(out, size, &len, value, '\'', true);
}

/*
 * The conninfo of table st: false with a reason in why when no user can be found or the
 * database is unknown.
 */
static bool table_conninfo(const struct config *cfg, const struct userlist *users,
                           const struct cf_synced_table *st, char *out, size_t size,
                           const char **user_out, char *why, size_t whysize)
{
	const struct cf_database *db = config_find_database(cfg, st->database);
	const char *user = cf_kv_get(st->kv, st->nkv, "user");
	const char *password = NULL;
	char port[16], timeout[16];
	int64_t secs;

	out[0] = '\0';
	if (!db) {
		snprintf(why, whysize, "database \"%s\" is not in [databases]", st->database);
		return false;
	}
	if (user && *user) {
		password = userlist_get_password(users, user);
		if (password && userlist_password_kind(password) != USERLIST_PW_PLAIN) {
			/* libpq needs the password itself; a hash cannot log in */
			log_warning(
			        "synced table %s.%s.%s: the auth_file holds a hashed password for"
			        " user \"%s\", which cannot be used to connect; trying without",
			        st->database, st->schema, st->table, user);
			password = NULL;
		}
	} else if (db->user[0]) {
		user = db->user;
		password = db->password[0] ? db->password : NULL;
	} else {
		snprintf(why, whysize,
		         "no user to connect as: set user= on the [synced_tables] line or in the"
		         " [databases] entry \"%s\"",
		         st->database);
		return false;
	}
	*user_out = user;
	snprintf(port, sizeof(port), "%d", db->port > 0 ? db->port : 5432);
	secs = (cfg->server_connect_timeout + 999999) / 1000000;
	snprintf(timeout, sizeof(timeout), "%lld", (long long)(secs < 2 ? 2 : secs));
	if (!conninfo_add(out, size, "host", db->host[0] ? db->host : cfg->unix_socket_dir) ||
	    !conninfo_add(out, size, "port", port) ||
	    !conninfo_add(out, size, "dbname", db->dbname[0] ? db->dbname : st->database) ||
	    !conninfo_add(out, size, "user", user) ||
	    !conninfo_add(out, size, "password", password) ||
	    !conninfo_add(out, size, "application_name", "syncbouncer") ||
	    !conninfo_add(out, size, "connect_timeout", timeout) ||
	    /* the server_tls_* settings hold for these connections as for the pooled ones */
	    !conninfo_add(out, size, "sslmode", sslmode_str(cfg->server_tls_sslmode)) ||
	    !conninfo_add(out, size, "sslrootcert", cfg->server_tls_ca_file) ||
	    !conninfo_add(out, size, "sslcert", cfg->server_tls_cert_file) ||
	    !conninfo_add(out, size, "sslkey", cfg->server_tls_key_file)) {
		out[0] = '\0';
		snprintf(why, whysize, "connection settings too long");
		return false;
	}
	return true;
}

static void table_fail(struct catalog_table *t, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));

static void table_clear_shape(struct catalog_table *t);

static void table_fail(struct catalog_table *t, const char *fmt, ...)
{
	char why[sizeof(t->error)];
	bool again;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	/* retries repeat the same failure: say it once */
	again = t->state == CAT_FAILED && strcmp(t->error, why) == 0;
	snprintf(t->error, sizeof(t->error), "%s", why);
	t->state = CAT_FAILED;
	table_clear_shape(t);
	if (again)
		log_debug("synced table %s.%s.%s: still: %s", t->database, t->schema, t->table,
		          t->error);
	else
		log_error("synced table %s.%s.%s: %s", t->database, t->schema, t->table, t->error);
}

static void table_clear_shape(struct catalog_table *t)
{
	for (int i = 0; i < t->ncols; i++) {
		free(t->cols[i].name);
		free(t->cols[i].type_name);
	}
	free(t->cols);
	t->cols = NULL;
	t->ncols = 0;
	free(t->pk);
	t->pk = NULL;
	free(t->same_name);
	t->same_name = NULL;
	t->relid = 0;
}

/* One line of a server error, for a table's error[]. */
static const char *result_error(const PGresult *res, const char *error)
{
	if (res) {
		const char *m = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);

		if (m && *m)
			return m;
		return "the server returned no usable result";
	}
	return error && *error ? error : "connection lost";
}

static void on_done_event(evutil_socket_t fd, short what, void *arg)
{
	struct catalog *cat = arg;

	(void)fd;
	(void)what;
	if (cat->done)
		cat->done(cat->done_arg, cat);
}

static void link_finish(struct cat_link *link)
{
	struct catalog *cat = link->cat;
	int failed = 0;

	link->step = CAT_STEP_DONE;
	/* safe inside a pgc callback: pgc frees itself once the callback returns */
	pgc_close(link->pc);
	link->pc = NULL;
	for (int i = 0; i < link->ntables; i++)
		if (cat->tables[link->tables[i]].state != CAT_READY)
			failed++;
	if (failed > 0 && link->retry_ev) {
		struct timeval tv = {.tv_sec = (time_t)(link->retry_usec / 1000000),
		                     .tv_usec = (suseconds_t)(link->retry_usec % 1000000)};

		log_info("database %s: %d synced table(s) not ready, trying again in %lld s",
		         link->database, failed,
		         (long long)((link->retry_usec + 999999) / 1000000));
		if (event_add(link->retry_ev, &tv) != 0)
			log_error("database %s: cannot schedule the next try", link->database);
		link->retry_usec *= 2;
		if (link->retry_usec > (int64_t)CAT_MAX_RETRY_SEC * 1000000)
			link->retry_usec = (int64_t)CAT_MAX_RETRY_SEC * 1000000;
	}
	if (!link->first_run_over) {
		link->first_run_over = true;
		if (--cat->pending == 0)
			event_active(cat->done_ev, EV_TIMEOUT, 0);
	}
}

static void link_fail_all(struct cat_link *link, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));

/* Fails every table of the link still pending, and ends the link. */
static void link_fail_all(struct cat_link *link, const char *fmt, ...)
{
	char why[sizeof(link->cat->tables[0].error)];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	for (int i = 0; i < link->ntodo; i++) {
		struct catalog_table *t = &link->cat->tables[link->todo[i]];

		if (t->state != CAT_READY)
			table_fail(t, "%s", why);
	}
	link_finish(link);
}

static void link_next_table(struct cat_link *link);
static void on_ready(void *arg, struct pgc *pc, const char *error);
static void on_result(void *arg, struct pgc *pc, PGresult *res, const char *error);

static bool link_query(struct cat_link *link, enum cat_step step, const char *sql, int nparams,
                       const char *const *values)
{
	link->step = step;
	return pgc_query(link->pc, sql, nparams, NULL, values, NULL, NULL, 0, on_result, link);
}

/* over: the installed version this one replaces, or -1 when none could be read. */
static void link_install_schema(struct cat_link *link, long over)
{
	if (over >= 0)
		log_info("installing the syncbouncer schema (version %s) in database %s over"
		         " version %ld",
		         CATALOG_SQL_VERSION, link->database, over);
	else
		log_info("installing the syncbouncer schema (version %s) in database %s",
		         CATALOG_SQL_VERSION, link->database);
	if (!link_query(link, CAT_STEP_SCHEMA, catalog_sql_schema, 0, NULL))
		link_fail_all(link, "cannot install the syncbouncer schema: out of memory");
}

/*
 * A schema version as a number: decimal digits only, at most 9 of them (what an int holds).
 * False for anything else ("", "10a", " 10", "-1").
 */
bool catalog_version_parse(const char *text, long *out)
{
	long v = 0;
	int n = 0;

	if (!text)
		return false;
	for (; text[n]; n++) {
		if (text[n] < '0' || text[n] > '9' || n >= 9)
			return false;
		v = v * 10 + (text[n] - '0');
	}
	if (n == 0)
		return false;
	*out = v;
	return true;
}

/*
 * The installed version decides: ours, on to the tables; older, ours is installed over it;
 * newer or not a number, the schema is left as it is and the link's tables fail (and are tried
 * again later: the newer pooler may be gone and the schema rolled back by then). Never a
 * downgrade: a newer schema may have functions and triggers our pipeline does not drive, and
 * installing ours would break every write of the newer pooler still serving the database.
 */
static void link_check_version(struct cat_link *link, const char *installed)
{
	const long ours = CATALOG_SQL_VERSION_NUM;
	long have;

	if (!catalog_version_parse(installed, &have)) {
		link_fail_all(
		        link,
		        "the syncbouncer schema in database %s records version \"%.64s\","
		        " which is not a number: it is left as it is (if it is damaged, delete"
		        " the version row: see doc/synced-tables.md)",
		        link->database, installed);
		return;
	}
	if (have > ours) {
		link_fail_all(
		        link,
		        "the syncbouncer schema in database %s is version %ld, newer than this"
		        " syncbouncer's %ld: upgrade syncbouncer",
		        link->database, have, ours);
		return;
	}
	if (have < ours) {
		link_install_schema(link, have);
		return;
	}
	link_next_table(link);
}

static void link_start_table(struct cat_link *link)
{
	struct catalog_table *t = &link->cat->tables[link->todo[link->cur]];
	const char *params[2] = {t->schema, t->table};

	if (!link_query(link, CAT_STEP_COLUMNS, catalog_sql_columns, 2, params)) {
		table_fail(t, "out of memory");
		link->cur++;
		link_next_table(link);
	}
}

static void link_next_table(struct cat_link *link)
{
	if (link->cur >= link->ntodo) {
		link_finish(link);
		return;
	}
	link_start_table(link);
}

/* Reads the introspection rows into t. False (t failed) when the table cannot be synced. */
static bool table_read_shape(struct catalog_table *t, const PGresult *res, int *ntriggers)
{
	int n = PQntuples(res);
	const char *relkind;

	table_clear_shape(t);
	if (n == 0) {
		table_fail(t, "relation \"%s.%s\" does not exist", t->schema, t->table);
		return false;
	}
	if (PQnfields(res) < 10)
		goto bad;
	relkind = PQgetvalue(res, 0, 9);
	if (strcmp(relkind, "p") == 0) {
		/* row triggers fire on the partitions, with their own oid: apply would match none
		 */
		table_fail(t, "partitioned tables are not supported");
		return false;
	}
	if (strcmp(relkind, "r") != 0) {
		table_fail(t, "\"%s.%s\" is not a table", t->schema, t->table);
		return false;
	}
	if (atoi(PQgetvalue(res, 0, 7)) != 1) {
		table_fail(t, "needs a single-column primary key");
		return false;
	}
	t->cols = calloc((size_t)n, sizeof(*t->cols));
	if (!t->cols)
		goto oom;
	t->relid = (unsigned)strtoul(PQgetvalue(res, 0, 0), NULL, 10);
	*ntriggers = atoi(PQgetvalue(res, 0, 8));
	for (int i = 0; i < n; i++) {
		struct catalog_column *c = &t->cols[i];

		c->name = strdup(PQgetvalue(res, i, 1));
		c->type_oid = (unsigned)strtoul(PQgetvalue(res, i, 2), NULL, 10);
		c->type_name = strdup(PQgetvalue(res, i, 3));
		c->not_null = PQgetvalue(res, i, 4)[0] == 't';
		c->has_default = PQgetvalue(res, i, 5)[0] == 't';
		t->ncols = i + 1;
		if (!c->name || !c->type_name)
			goto oom;
		if (PQgetvalue(res, i, 6)[0] == 't') {
			t->pk = strdup(c->name);
			if (!t->pk)
				goto oom;
		}
	}
	if (!t->pk)
		goto bad;
	if (PQnfields(res) > 10 && !PQgetisnull(res, 0, 10) &&
	    (t->same_name = strdup(PQgetvalue(res, 0, 10))) == NULL)
		goto oom;
	return true;
bad:
	table_clear_shape(t);
	table_fail(t, "unexpected answer from pg_catalog");
	return false;
oom:
	table_clear_shape(t);
	table_fail(t, "out of memory");
	return false;
}

static void table_ready(struct catalog_table *t)
{
	t->state = CAT_READY;
	t->error[0] = '\0';
	log_info("synced table %s.%s.%s: ready (api %s, primary key %s, %d columns)", t->database,
	         t->schema, t->table, t->api, t->pk, t->ncols);
}

static void on_result(void *arg, struct pgc *pc, PGresult *res, const char *error)
{
	struct cat_link *link = arg;
	struct catalog_table *t = NULL;
	bool ok = res && (PQresultStatus(res) == PGRES_TUPLES_OK ||
	                  PQresultStatus(res) == PGRES_COMMAND_OK);
	char sql[CAT_MAX_TRIGGER_SQL];
	int ntriggers = 0;

	(void)pc;
	if (link->step == CAT_STEP_COLUMNS || link->step == CAT_STEP_TRIGGERS)
		t = &link->cat->tables[link->todo[link->cur]];
	if (!res) {
		link_fail_all(link, "connection lost: %s", result_error(res, error));
		return;
	}
	switch (link->step) {
	case CAT_STEP_EXISTS:
		if (!ok) {
			link_fail_all(link, "cannot read the catalog: %s",
			              result_error(res, error));
			return;
		}
		if (PQntuples(res) == 1 && PQgetvalue(res, 0, 0)[0] == 't') {
			if (!link_query(link, CAT_STEP_META, catalog_sql_meta, 0, NULL))
				link_fail_all(link, "out of memory");
			return;
		}
		link_install_schema(link, -1);
		return;
	case CAT_STEP_META:
		if (ok && PQntuples(res) == 1) {
			link_check_version(link, PQgetvalue(res, 0, 0));
			return;
		}
		link_install_schema(link, -1);
		return;
	case CAT_STEP_SCHEMA:
		if (!ok) {
			link_fail_all(link, "cannot install the syncbouncer schema: %s",
			              result_error(res, error));
			return;
		}
		link_next_table(link);
		return;
	case CAT_STEP_COLUMNS:
		if (!ok) {
			table_fail(t, "cannot read the table's columns: %s",
			           result_error(res, error));
			break;
		}
		if (!table_read_shape(t, res, &ntriggers))
			break;
		if (ntriggers == 3) {
			table_ready(t);
			break;
		}
		if (!catalog_trigger_sql(t->schema, t->table, t->pk, sql, sizeof(sql))) {
			table_fail(t, "name too long");
			break;
		}
		if (!link_query(link, CAT_STEP_TRIGGERS, sql, 0, NULL)) {
			table_fail(t, "out of memory");
			break;
		}
		return;
	case CAT_STEP_TRIGGERS:
		if (!ok) {
			table_fail(t, "cannot install the guard triggers: %s",
			           result_error(res, error));
			break;
		}
		log_info("synced table %s.%s.%s: guard triggers installed", t->database, t->schema,
		         t->table);
		table_ready(t);
		break;
	case CAT_STEP_CONNECT:
	case CAT_STEP_DONE:
		return;
	}
	link->cur++;
	link_next_table(link);
}

static void on_ready(void *arg, struct pgc *pc, const char *error)
{
	struct cat_link *link = arg;

	(void)pc;
	if (error) {
		char why[400];

		snprintf(why, sizeof(why), "cannot connect to database %s as user %s: %s",
		         link->database, link->user, error);
		link_fail_all(link, "%s", why);
		return;
	}
	if (!link_query(link, CAT_STEP_EXISTS, catalog_sql_exists, 0, NULL))
		link_fail_all(link, "out of memory");
}

/* Starts a run over the link's tables that are not ready. False only when out of memory. */
static bool link_start(struct cat_link *link)
{
	link->ntodo = 0;
	for (int i = 0; i < link->ntables; i++)
		if (link->cat->tables[link->tables[i]].state != CAT_READY)
			link->todo[link->ntodo++] = link->tables[i];
	link->cur = 0;
	link->step = CAT_STEP_CONNECT;
	link->pc = pgc_connect(link->cat->base, link->conninfo, on_ready, link);
	return link->pc != NULL;
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
	struct cat_link *link = arg;

	(void)fd;
	(void)what;
	if (link->pc)
		return;
	if (!link_start(link))
		log_error("database %s: out of memory", link->database);
}

static struct cat_link *link_get(struct catalog *cat, const char *conninfo, const char *database,
                                 const char *user)
{
	struct cat_link *link;

	for (link = cat->links; link; link = link->next)
		if (strcmp(link->conninfo, conninfo) == 0)
			return link;
	link = calloc(1, sizeof(*link));
	if (!link)
		return NULL;
	link->tables = calloc((size_t)cat->ntables, sizeof(*link->tables));
	link->todo = calloc((size_t)cat->ntables, sizeof(*link->todo));
	link->retry_ev = evtimer_new(cat->base, on_retry, link);
	if (!link->tables || !link->todo || !link->retry_ev) {
		if (link->retry_ev)
			event_free(link->retry_ev);
		free(link->todo);
		free(link->tables);
		free(link);
		return NULL;
	}
	link->retry_usec = cat->retry_usec;
	link->cat = cat;
	snprintf(link->conninfo, sizeof(link->conninfo), "%s", conninfo);
	link->database = database;
	link->user = user;
	link->step = CAT_STEP_CONNECT;
	link->next = cat->links;
	cat->links = link;
	return link;
}

struct catalog *catalog_create(struct event_base *base, const struct config *cfg,
                               const struct userlist *users,
                               void (*done)(void *arg, struct catalog *cat), void *arg)
{
	struct catalog *cat = calloc(1, sizeof(*cat));
	const struct cf_synced_table *st;
	char conninfo[CAT_MAX_CONNINFO], why[256];
	int i = 0;

	if (!cat)
		return NULL;
	cat->base = base;
	cat->done = done;
	cat->done_arg = arg;
	cat->retry_usec = cfg->server_login_retry > 1000000 ? cfg->server_login_retry : 1000000;
	cat->done_ev = event_new(base, -1, 0, on_done_event, cat);
	if (!cat->done_ev)
		goto oom;
	for (st = cfg->synced_tables; st; st = st->next)
		cat->ntables++;
	if (cat->ntables > 0) {
		cat->tables = calloc((size_t)cat->ntables, sizeof(*cat->tables));
		cat->link_of = calloc((size_t)cat->ntables, sizeof(*cat->link_of));
		if (!cat->tables || !cat->link_of)
			goto oom;
	}
	for (st = cfg->synced_tables; st; st = st->next, i++) {
		struct catalog_table *t = &cat->tables[i];
		const char *user = NULL;
		struct cat_link *link;

		t->database = st->database;
		t->schema = st->schema;
		t->table = st->table;
		t->api = cf_kv_get(st->kv, st->nkv, "api");
		if (!t->api)
			t->api = "";
		t->cf = st;
		t->state = CAT_PENDING;
		if (!table_conninfo(cfg, users, st, conninfo, sizeof(conninfo), &user, why,
		                    sizeof(why))) {
			table_fail(t, "%s", why);
			continue;
		}
		link = link_get(cat, conninfo, st->database, user);
		if (!link)
			goto oom;
		link->tables[link->ntables++] = i;
		cat->link_of[i] = link;
	}
	for (struct cat_link *link = cat->links; link; link = link->next) {
		if (!link_start(link))
			goto oom;
		cat->pending++;
	}
	if (cat->pending == 0)
		event_active(cat->done_ev, EV_TIMEOUT, 0);
	return cat;
oom:
	catalog_free(cat);
	return NULL;
}

bool catalog_db_pending(const struct catalog *cat, const char *database)
{
	/* every link's first run over: no table is pending (the invariant above), at once */
	if (!cat || !database || cat->pending == 0)
		return false;
	for (int i = 0; i < cat->ntables; i++)
		if (cat->tables[i].state == CAT_PENDING &&
		    strcmp(cat->tables[i].database, database) == 0)
			return true;
	return false;
}

int catalog_count(const struct catalog *cat)
{
	return cat ? cat->ntables : 0;
}

struct catalog_table *catalog_table_at(struct catalog *cat, int i)
{
	if (!cat || i < 0 || i >= cat->ntables)
		return NULL;
	return &cat->tables[i];
}

struct catalog_table *catalog_find(struct catalog *cat, const char *database, const char *schema,
                                   const char *table)
{
	if (!cat || !database || !schema || !table)
		return NULL;
	for (int i = 0; i < cat->ntables; i++) {
		struct catalog_table *t = &cat->tables[i];

		if (strcmp(t->database, database) == 0 && strcmp(t->schema, schema) == 0 &&
		    strcmp(t->table, table) == 0)
			return t;
	}
	return NULL;
}

bool catalog_name_taken(const struct catalog *cat, const char *database, const char *schema,
                        const char *table)
{
	char(*names)[CLASSIFIER_MAX_NAME_LEN + 1];
	bool taken = false;

	if (!cat || !database || !schema || !table)
		return false;
	for (int i = 0; i < cat->ntables && !taken; i++) {
		const struct catalog_table *t = &cat->tables[i];
		int n;

		if (t->same_name == NULL || strcmp(t->database, database) != 0 ||
		    strcmp(t->table, table) != 0)
			continue;
		names = malloc(32 * sizeof(*names));
		if (names == NULL)
			return false;
		n = classifier_path_schemas(t->same_name, NULL, names, 32);
		for (int k = 0; k < n && !taken; k++)
			taken = strcmp(names[k], schema) == 0;
		free(names);
	}
	return taken;
}

const struct catalog_column *catalog_column_find(const struct catalog_table *t, const char *name)
{
	if (!t || !name)
		return NULL;
	for (int i = 0; i < t->ncols; i++)
		if (strcmp(t->cols[i].name, name) == 0)
			return &t->cols[i];
	return NULL;
}

bool catalog_conninfo(const struct catalog *cat, const char *database, char *out, size_t size)
{
	if (size > 0)
		out[0] = '\0';
	if (!cat || !database)
		return false;
	for (int i = 0; i < cat->ntables; i++) {
		const struct cat_link *link = cat->link_of[i];
		int n;

		if (!link || strcmp(cat->tables[i].database, database) != 0)
			continue;
		n = snprintf(out, size, "%s", link->conninfo);
		if (n < 0 || (size_t)n >= size) {
			if (size > 0)
				out[0] = '\0';
			return false;
		}
		return true;
	}
	return false;
}

void catalog_free(struct catalog *cat)
{
	struct cat_link *link;

	if (!cat)
		return;
	while ((link = cat->links)) {
		cat->links = link->next;
		pgc_close(link->pc);
		if (link->retry_ev)
			event_free(link->retry_ev);
		free(link->todo);
		free(link->tables);
		free(link);
	}
	for (int i = 0; i < cat->ntables; i++)
		table_clear_shape(&cat->tables[i]);
	free(cat->tables);
	free(cat->link_of);
	if (cat->done_ev)
		event_free(cat->done_ev);
	free(cat);
}
