/*
 * metrics — see include/metrics.h.
 *
 * The tables below are the whole mapping from the admin console's views to metric names. A view
 * is read in one of three ways:
 *   columns  each row is one sample per listed column, labelled by the row's label columns;
 *   keyed    each row is a name/value pair (SHOW LISTS, SHOW CONFIG): one metric per known name;
 *   count    rows are counted per label set (SHOW CLIENTS by database, user and state).
 * A scrape builds the whole answer in memory (an evbuffer) before sending it: the loop is busy
 * for as long as the SHOW commands take, as for a console client.
 */
#include "metrics.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <math.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "admin.h"
#include "bouncer.h"
#include "config.h"
#include "histogram.h"
#include "log.h"
#include "module.h"
#include "md5pw.h"
#include "scram.h"
#include "userlist.h"
#include "version.h"

#define MAX_ROWS_PER_VIEW 100000 /* beyond this a view's rows are not exported (logged) */
#define MAX_AUTH_HEADER   1024

struct metrics {
	struct bouncer *b;
	struct evhttp *http;
	char unix_path[108]; /* "" when listening on TCP */
	uint64_t scrapes;
};

enum view_kind {
	VIEW_COLUMNS,
	VIEW_KEYED,
	VIEW_COUNT,
};

struct metric_def {
	const char *column; /* the view's column (keyed views: the row's name) */
	const char *name;   /* the metric */
	bool counter;
	double scale;     /* value × scale: microseconds → seconds */
	const char *plus; /* another column added (× 1e-6): maxwait + maxwait_us */
	const char *help;
};

struct view_def {
	const char *view;
	enum view_kind kind;
	/* label columns, "column" or "column:label", comma-separated */
	const char *labels;
	const char *key, *value; /* keyed views */
	const struct metric_def *metrics;
	int nmetrics;
};

#define G(col, name, help)                                                                         \
	{                                                                                          \
		col, name, false, 1, NULL, help                                                    \
	}
#define C(col, name, help)                                                                         \
	{                                                                                          \
		col, name, true, 1, NULL, help                                                     \
	}
#define C_US(col, name, help)                                                                      \
	{                                                                                          \
		col, name, true, 1e-6, NULL, help                                                  \
	}
#define N(a) ((int)(sizeof(a) / sizeof(a[0])))

/* SHOW POOLS, as the pgbouncer exporter names it */
static const struct metric_def pools_m[] = {
        G("cl_active", "pgbouncer_pools_client_active_connections",
          "Client connections linked to a server connection and able to process queries"),
        G("cl_waiting", "pgbouncer_pools_client_waiting_connections",
          "Client connections waiting on a server connection"),
        G("cl_active_cancel_req", "pgbouncer_pools_client_active_cancel_connections",
          "Client connections that have forwarded query cancellations to the server"),
        G("cl_waiting_cancel_req", "pgbouncer_pools_client_waiting_cancel_connections",
          "Client connections that have not forwarded query cancellations to the server yet"),
        G("sv_active", "pgbouncer_pools_server_active_connections",
          "Server connections linked to a client connection"),
        G("sv_active_cancel", "pgbouncer_pools_server_active_cancel_connections",
          "Server connections currently forwarding a cancel request"),
        G("sv_being_canceled", "pgbouncer_pools_server_being_canceled_connections",
          "Servers that normally could become idle but are waiting to do so until all in-flight "
          "cancel requests have completed"),
        G("sv_idle", "pgbouncer_pools_server_idle_connections",
          "Server connections idle and ready for a client query"),
        G("sv_used", "pgbouncer_pools_server_used_connections",
          "Server connections idle more than server_check_delay, needing server_check_query"),
        G("sv_tested", "pgbouncer_pools_server_testing_connections",
          "Server connections currently running either server_reset_query or server_check_query"),
        G("sv_login", "pgbouncer_pools_server_login_connections",
          "Server connections currently in the process of logging in"),
        {"maxwait", "pgbouncer_pools_client_maxwait_seconds", false, 1, "maxwait_us",
         "Age of the oldest unserved client connection, in seconds"},
};

/* SHOW STATS */
static const struct metric_def stats_m[] = {
        C("total_query_count", "pgbouncer_stats_queries_pooled_total",
          "Total number of SQL queries pooled"),
        C_US("total_query_time", "pgbouncer_stats_queries_duration_seconds_total",
             "Total number of seconds spent when actively connected to PostgreSQL, executing "
             "queries"),
        C("total_received", "pgbouncer_stats_received_bytes_total",
          "Total volume in bytes of network traffic received"),
        C("total_sent", "pgbouncer_stats_sent_bytes_total",
          "Total volume in bytes of network traffic sent"),
        C_US("total_wait_time", "pgbouncer_stats_client_wait_seconds_total",
             "Time spent by clients waiting for a server, in seconds"),
        C("total_xact_count", "pgbouncer_stats_sql_transactions_pooled_total",
          "Total number of SQL transactions pooled"),
        C_US("total_xact_time", "pgbouncer_stats_server_in_transaction_seconds_total",
             "Total number of seconds spent connected to PostgreSQL in a transaction, either "
             "idle in transaction or executing queries"),
        C("total_server_assignment_count", "pgbouncer_stats_server_assignments_total",
          "Total number of times a server was assigned to a client"),
        C("total_client_parse_count", "pgbouncer_stats_client_parses_total",
          "Total number of prepared statements created by clients"),
        C("total_server_parse_count", "pgbouncer_stats_server_parses_total",
          "Total number of prepared statements created on a server"),
        C("total_bind_count", "pgbouncer_stats_binds_total",
          "Total number of prepared statements readied for execution by clients"),
};

/* SHOW DATABASES */
static const struct metric_def databases_m[] = {
        G("pool_size", "pgbouncer_databases_pool_size", "Maximum number of server connections"),
        G("reserve_pool_size", "pgbouncer_databases_reserve_pool",
          "Maximum number of additional connections for this database"),
        G("max_connections", "pgbouncer_databases_max_connections",
          "Maximum number of allowed connections for this database"),
        G("current_connections", "pgbouncer_databases_current_connections",
          "Current number of connections for this database"),
        G("paused", "pgbouncer_databases_paused", "1 if this database is currently paused, else 0"),
        G("disabled", "pgbouncer_databases_disabled",
          "1 if this database is currently disabled, else 0"),
};

/* SHOW LISTS (keyed by list) */
static const struct metric_def lists_m[] = {
        G("databases", "pgbouncer_databases", "Count of databases"),
        G("users", "pgbouncer_users", "Count of users"),
        G("pools", "pgbouncer_pools", "Count of pools"),
        G("free_clients", "pgbouncer_free_clients", "Count of free clients"),
        G("used_clients", "pgbouncer_used_clients", "Count of used clients"),
        G("login_clients", "pgbouncer_login_clients", "Count of clients in login state"),
        G("free_servers", "pgbouncer_free_servers", "Count of free servers"),
        G("used_servers", "pgbouncer_used_servers", "Count of used servers"),
        G("dns_names", "pgbouncer_cached_dns_names", "Count of DNS names in the cache"),
        G("dns_zones", "pgbouncer_cached_dns_zones", "Count of DNS zones in the cache"),
        G("dns_queries", "pgbouncer_in_flight_dns_queries", "Count of in-flight DNS queries"),
};

/* SHOW CONFIG (keyed by key) */
static const struct metric_def config_m[] = {
        G("max_client_conn", "pgbouncer_config_max_client_connections",
          "Config maximum number of client connections"),
        G("max_user_connections", "pgbouncer_config_max_user_connections",
          "Config maximum number of server connections per user"),
        G("mutation_history", "syncbouncer_config_mutation_history",
          "Finished synced writes SHOW MUTATIONS keeps"),
};

/* SHOW CLIENTS / SHOW SERVERS (counted) */
static const struct metric_def clients_m[] = {
        G(NULL, "syncbouncer_clients", "Client connections by database, user and state"),
};
static const struct metric_def servers_m[] = {
        G(NULL, "syncbouncer_servers", "Server connections by database, user and state"),
};

/* SHOW APIS */
static const struct metric_def apis_m[] = {
        G("in_flight", "syncbouncer_api_in_flight_requests", "HTTP requests in flight now"),
        G("queued", "syncbouncer_api_queued_requests", "HTTP requests waiting for a slot now"),
        C("requests", "syncbouncer_api_requests_total", "HTTP requests sent, retries included"),
        C("errors", "syncbouncer_api_errors_total", "API calls that ended in an error"),
};

/* SHOW SYNCED_TABLES */
static const struct metric_def tables_m[] = {
        C("inserts", "syncbouncer_synced_table_inserts_total",
          "Synced INSERTs applied to the API and the table"),
        C("updates", "syncbouncer_synced_table_updates_total",
          "Synced UPDATEs applied to the API and the table"),
        C("deletes", "syncbouncer_synced_table_deletes_total",
          "Synced DELETEs applied to the API and the table"),
        C("rejected", "syncbouncer_synced_table_rejected_total", "Synced writes the API rejected"),
        G("sync_lag_s", "syncbouncer_synced_table_sync_lag_seconds",
          "Seconds from the newest API change the sync applied to now"),
        C("synced_rows", "syncbouncer_synced_table_synced_rows_total",
          "Rows the sync wrote into the table since start"),
        G("backfill_rows", "syncbouncer_synced_table_backfill_rows",
          "Rows the backfill loaded so far"),
        G("backfill_total", "syncbouncer_synced_table_backfill_total_rows",
          "Rows the backfill will load, where the API says"),
};

/* SHOW SYNCED_TABLES (counted: 1 per table, its state as a label) */
static const struct metric_def table_state_m[] = {
        G(NULL, "syncbouncer_synced_table_state",
          "1 for each synced table, labelled with its state (ready, error, ...) and its sync's "
          "(off, idle, backfilling, polling, failed)"),
};

/* SHOW MUTATIONS (counted: in flight by state, and the finished ones kept as "done") */
static const struct metric_def mutations_m[] = {
        G(NULL, "syncbouncer_mutations", "Synced writes listed by SHOW MUTATIONS, by state"),
};

static const struct view_def views[] = {
        {"POOLS", VIEW_COLUMNS, "database,user", NULL, NULL, pools_m, N(pools_m)},
        {"STATS", VIEW_COLUMNS, "database", NULL, NULL, stats_m, N(stats_m)},
        {"DATABASES", VIEW_COLUMNS, "name,host,port,database,force_user,pool_mode", NULL, NULL,
         databases_m, N(databases_m)},
        {"LISTS", VIEW_KEYED, "", "list", "items", lists_m, N(lists_m)},
        {"CONFIG", VIEW_KEYED, "", "key", "value", config_m, N(config_m)},
        {"CLIENTS", VIEW_COUNT, "database,user,state", NULL, NULL, clients_m, N(clients_m)},
        {"SERVERS", VIEW_COUNT, "database,user,state", NULL, NULL, servers_m, N(servers_m)},
        {"APIS", VIEW_COLUMNS, "name:api,type", NULL, NULL, apis_m, N(apis_m)},
        {"SYNCED_TABLES", VIEW_COLUMNS, "database,table,api", NULL, NULL, tables_m, N(tables_m)},
        {"SYNCED_TABLES", VIEW_COUNT, "database,table,api,state,sync_state", NULL, NULL,
         table_state_m, N(table_state_m)},
        {"MUTATIONS", VIEW_COUNT, "database,table,operation,state", NULL, NULL, mutations_m,
         N(mutations_m)},
};

/* ---- reading a view ---- */

struct sample {
	char *labels;
	double *v; /* one per metric of the view; NAN = the view has no such column */
};

struct collect {
	const struct view_def *vd;
	struct sample *s;
	int n, cap;
	bool overflow, oom;
};

static int column_index(int ncols, const char *const *names, const char *name, size_t len)
{
	for (int i = 0; i < ncols; i++)
		if (strlen(names[i]) == len && strncmp(names[i], name, len) == 0)
			return i;
	return -1;
}

/* `database="crm",user="app"` from the row's label columns (missing columns are left out). */
static void make_labels(const struct view_def *vd, int ncols, const char *const *names,
                        const char *const *vals, char *out, size_t size)
{
	const char *p = vd->labels;
	size_t used = 0;

	out[0] = '\0';
	while (*p != '\0') {
		const char *end = strchr(p, ',');
		const char *colon;
		size_t len = end ? (size_t)(end - p) : strlen(p);
		size_t clen = len;
		const char *lname = p;
		size_t llen = len;
		char val[256];
		int i;

		colon = memchr(p, ':', len);
		if (colon != NULL) {
			clen = (size_t)(colon - p);
			lname = colon + 1;
			llen = len - clen - 1;
		}
		i = column_index(ncols, names, p, clen);
		if (i >= 0) {
			hist_label_value(val, sizeof(val), vals[i] ? vals[i] : "");
			used += (size_t)snprintf(out + used, used < size ? size - used : 0,
			                         "%s%.*s=\"%s\"", used ? "," : "", (int)llen, lname,
			                         val);
			if (used >= size) {
				out[size - 1] = '\0';
				return;
			}
		}
		p += len;
		if (*p == ',')
			p++;
	}
}

static bool parse_number(const char *s, double *out)
{
	char *end;

	if (s == NULL || *s == '\0')
		return false;
	errno = 0;
	*out = strtod(s, &end);
	return errno == 0 && *end == '\0';
}

static struct sample *find_or_add(struct collect *c, const char *labels, bool find)
{
	struct sample *s;

	if (find)
		for (int i = 0; i < c->n; i++)
			if (strcmp(c->s[i].labels, labels) == 0)
				return &c->s[i];
	if (c->n == MAX_ROWS_PER_VIEW) {
		c->overflow = true;
		return NULL;
	}
	if (c->n == c->cap) {
		int cap = c->cap ? c->cap * 2 : 16;
		struct sample *v = realloc(c->s, (size_t)cap * sizeof(*v));
		if (v == NULL) {
			c->oom = true;
			return NULL;
		}
		c->s = v;
		c->cap = cap;
	}
	s = &c->s[c->n];
	s->labels = strdup(labels);
	s->v = malloc((size_t)c->vd->nmetrics * sizeof(double));
	if (s->labels == NULL || s->v == NULL) {
		free(s->labels);
		free(s->v);
		c->oom = true;
		return NULL;
	}
	for (int i = 0; i < c->vd->nmetrics; i++)
		s->v[i] = c->vd->kind == VIEW_COUNT ? 0 : NAN;
	c->n++;
	return s;
}

static void on_row(void *arg, int ncols, const char *const *names, const char *const *vals)
{
	struct collect *c = arg;
	const struct view_def *vd = c->vd;
	char labels[1024];
	struct sample *s;

	if (c->oom || c->overflow)
		return;
	make_labels(vd, ncols, names, vals, labels, sizeof(labels));
	switch (vd->kind) {
	case VIEW_COUNT:
		s = find_or_add(c, labels, true);
		if (s != NULL)
			s->v[0] += 1;
		return;
	case VIEW_KEYED: {
		int k = column_index(ncols, names, vd->key, strlen(vd->key));
		int v = column_index(ncols, names, vd->value, strlen(vd->value));
		double x;
		if (k < 0 || v < 0 || vals[k] == NULL || !parse_number(vals[v], &x))
			return;
		for (int i = 0; i < vd->nmetrics; i++) {
			if (strcmp(vd->metrics[i].column, vals[k]) != 0)
				continue;
			/* one sample (no labels) holds every name of the view */
			s = c->n ? &c->s[0] : find_or_add(c, "", false);
			if (s != NULL)
				s->v[i] = x * vd->metrics[i].scale;
		}
		return;
	}
	case VIEW_COLUMNS:
		s = find_or_add(c, labels, false);
		if (s == NULL)
			return;
		for (int i = 0; i < vd->nmetrics; i++) {
			const struct metric_def *md = &vd->metrics[i];
			int col = column_index(ncols, names, md->column, strlen(md->column));
			double x, y;
			if (col < 0 || !parse_number(vals[col], &x))
				continue;
			x *= md->scale;
			if (md->plus != NULL) {
				int p = column_index(ncols, names, md->plus, strlen(md->plus));
				if (p >= 0 && parse_number(vals[p], &y))
					x += y * 1e-6;
			}
			s->v[i] = x;
		}
		return;
	}
}

static void write_value(struct evbuffer *out, const char *name, const char *labels, double v)
{
	if (labels[0])
		evbuffer_add_printf(out, "%s{%s} %.17g\n", name, labels, v);
	else
		evbuffer_add_printf(out, "%s %.17g\n", name, v);
}

/*
 * One family per metric that has a sample; a name listed twice (the same meaning under two
 * possible column names) is written once, from the first definition that has samples.
 */
static void write_view(struct bouncer *b, const struct view_def *vd, struct evbuffer *out,
                       char *written, size_t wsize)
{
	struct collect c;

	memset(&c, 0, sizeof(c));
	c.vd = vd;
	if (!admin_show_rows(b, vd->view, on_row, &c)) {
		/* a view that does not exist in this build: nothing to export */
		goto done;
	}
	if (c.oom)
		log_warning("metrics: out of memory reading SHOW %s", vd->view);
	if (c.overflow)
		log_warning("metrics: SHOW %s has more than %d rows; the rest are not exported",
		            vd->view, MAX_ROWS_PER_VIEW);
	for (int i = 0; i < vd->nmetrics; i++) {
		const struct metric_def *md = &vd->metrics[i];
		bool any = false;
		char tag[130];

		for (int k = 0; k < c.n && !any; k++)
			any = !isnan(c.s[k].v[i]);
		snprintf(tag, sizeof(tag), "|%s|", md->name);
		if (!any || strstr(written, tag) != NULL)
			continue;
		if (strlen(written) + strlen(tag) < wsize)
			strcat(written, tag);
		evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", md->name, md->help,
		                    md->name, md->counter ? "counter" : "gauge");
		for (int k = 0; k < c.n; k++)
			if (!isnan(c.s[k].v[i]))
				write_value(out, md->name, c.s[k].labels, c.s[k].v[i]);
	}
done:
	for (int k = 0; k < c.n; k++) {
		free(c.s[k].labels);
		free(c.s[k].v);
	}
	free(c.s);
}

void metrics_render(struct bouncer *b, struct evbuffer *out)
{
	char version[128];
	char written[8192] = "";

	hist_label_value(version, sizeof(version), SB_VERSION_LINE);
	evbuffer_add_printf(out,
	                    "# HELP pgbouncer_up The pooler answers\n# TYPE pgbouncer_up gauge\n"
	                    "pgbouncer_up 1\n"
	                    "# HELP pgbouncer_version_info The pooler's version\n"
	                    "# TYPE pgbouncer_version_info gauge\n"
	                    "pgbouncer_version_info{version=\"%s\"} 1\n",
	                    version);
	for (int i = 0; i < N(views); i++)
		write_view(b, &views[i], out, written, sizeof(written));
	modules_write_metrics(b, out, written);
	if (b->metrics != NULL)
		evbuffer_add_printf(
		        out,
		        "# HELP syncbouncer_metrics_scrapes_total Scrapes of this endpoint\n"
		        "# TYPE syncbouncer_metrics_scrapes_total counter\n"
		        "syncbouncer_metrics_scrapes_total %llu\n",
		        (unsigned long long)b->metrics->scrapes);
}

/* ---- HTTP ---- */

static bool password_matches(const char *stored, const char *user, const char *password)
{
	char md5[MD5PW_SIZE];

	if (scram_is_secret(stored))
		return scram_verify_password(stored, password);
	if (md5pw_is_md5(stored))
		return md5pw_encrypt(password, user, md5) &&
		       CRYPTO_memcmp(md5, stored, MD5PW_SIZE - 1) == 0;
	return strlen(stored) == strlen(password) &&
	       CRYPTO_memcmp(stored, password, strlen(stored)) == 0;
}

/* Whether the request may read the metrics; *who is the user name for the log. */
static bool authorized(struct metrics *mt, struct evhttp_request *req, char *who, size_t whosize)
{
	const struct config *cfg = mt->b->cfg;
	const char *h;
	unsigned char decoded[MAX_AUTH_HEADER];
	char *colon, *user, *pass;
	size_t len, pad = 0;
	int n;
	bool ok;

	snprintf(who, whosize, "-");
	if (cfg->metrics_users[0] == '\0')
		return true;
	h = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
	if (h == NULL || strncasecmp(h, "Basic ", 6) != 0)
		return false;
	h += 6;
	while (*h == ' ')
		h++;
	len = strlen(h);
	if (len == 0 || len % 4 != 0 || len / 4 * 3 >= sizeof(decoded))
		return false;
	n = EVP_DecodeBlock(decoded, (const unsigned char *)h, (int)len);
	if (n < 0)
		return false;
	if (h[len - 1] == '=')
		pad++;
	if (h[len - 2] == '=')
		pad++;
	n -= (int)pad;
	decoded[n] = '\0';
	if (memchr(decoded, '\0', (size_t)n) != NULL)
		return false;
	user = (char *)decoded;
	colon = strchr(user, ':');
	if (colon == NULL)
		return false;
	*colon = '\0';
	pass = colon + 1;
	snprintf(who, whosize, "%.100s", user);
	ok = cf_list_has(cfg->metrics_users, user, false) && mt->b->users != NULL;
	if (ok) {
		const char *stored = userlist_get_password(mt->b->users, user);
		ok = stored != NULL && stored[0] != '\0' && password_matches(stored, user, pass);
	}
	OPENSSL_cleanse(decoded, sizeof(decoded));
	return ok;
}

/* An answer with a short text body (evhttp_send_error() would drop our headers). */
static void send_text(struct evhttp_request *req, int code, const char *reason, const char *text)
{
	struct evbuffer *body = evbuffer_new();

	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
	                  "text/plain; charset=utf-8");
	if (body != NULL)
		evbuffer_add_printf(body, "%s\n", text);
	evhttp_send_reply(req, code, reason, body);
	if (body != NULL)
		evbuffer_free(body);
}

static void on_request(struct evhttp_request *req, void *arg)
{
	struct metrics *mt = arg;
	const char *uri = evhttp_request_get_uri(req);
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
	struct evkeyvalq *oh = evhttp_request_get_output_headers(req);
	struct evbuffer *body;
	char who[128];
	size_t plen = strcspn(uri, "?");

	if (!(plen == 8 && strncmp(uri, "/metrics", 8) == 0)) {
		send_text(req, HTTP_NOTFOUND, "Not Found", "the metrics are at /metrics");
		return;
	}
	if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
		evhttp_add_header(oh, "Allow", "GET, HEAD");
		send_text(req, HTTP_BADMETHOD, "Method Not Allowed", "GET or HEAD /metrics");
		return;
	}
	if (!authorized(mt, req, who, sizeof(who))) {
		struct evhttp_connection *conn = evhttp_request_get_connection(req);
		char *host = NULL;
		ev_uint16_t port = 0;
		if (conn != NULL)
			evhttp_connection_get_peer(conn, &host, &port);
		log_warning("metrics: authentication failed for user \"%s\" from %s:%u", who,
		            host ? host : "unix", (unsigned)port);
		evhttp_add_header(oh, "WWW-Authenticate", "Basic realm=\"syncbouncer metrics\"");
		send_text(req, 401, "Unauthorized", "a user of metrics_users and its password");
		return;
	}
	body = evbuffer_new();
	if (body == NULL) {
		evhttp_send_error(req, HTTP_INTERNAL, "out of memory");
		return;
	}
	mt->scrapes++;
	metrics_render(mt->b, body);
	evhttp_add_header(oh, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
	evhttp_send_reply(req, HTTP_OK, "OK", body);
	evbuffer_free(body);
}

static bool listen_unix(struct metrics *mt, const char *path)
{
	struct sockaddr_un sa;
	struct stat st;
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		log_error("metrics_listen: unix socket path too long: %s", path);
		return false;
	}
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			log_error("metrics_listen: %s exists and is not a socket", path);
			return false;
		}
		unlink(path); /* a stale socket of an earlier run */
	}
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
	    chmod(path, (mode_t)mt->b->cfg->unix_socket_mode) != 0 || listen(fd, 128) != 0 ||
	    evhttp_accept_socket(mt->http, fd) != 0) {
		log_error("metrics_listen: cannot listen on %s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return false;
	}
	snprintf(mt->unix_path, sizeof(mt->unix_path), "%s", path);
	return true;
}

static bool listen_tcp(struct metrics *mt, const char *spec)
{
	char host[256];
	const char *colon = strrchr(spec, ':');
	char *end;
	long port;
	size_t hlen;

	if (colon == NULL) {
		log_error("metrics_listen: \"%s\" is neither ADDR:PORT nor a unix socket path",
		          spec);
		return false;
	}
	errno = 0;
	port = strtol(colon + 1, &end, 10);
	hlen = (size_t)(colon - spec);
	if (errno != 0 || end == colon + 1 || *end != '\0' || port < 1 || port > 65535 ||
	    hlen >= sizeof(host)) {
		log_error("metrics_listen: bad port or address in \"%s\"", spec);
		return false;
	}
	memcpy(host, spec, hlen);
	host[hlen] = '\0';
	if (hlen >= 2 && host[0] == '[' && host[hlen - 1] == ']') {
		memmove(host, host + 1, hlen - 2);
		host[hlen - 2] = '\0';
	}
	if (host[0] == '\0' || strcmp(host, "*") == 0)
		snprintf(host, sizeof(host), "0.0.0.0");
	if (evhttp_bind_socket(mt->http, host, (ev_uint16_t)port) != 0) {
		log_error("metrics_listen: cannot listen on %s: %s", spec, strerror(errno));
		return false;
	}
	if (mt->b->cfg->metrics_users[0] == '\0' && strcmp(host, "127.0.0.1") != 0 &&
	    strcmp(host, "::1") != 0 && strcmp(host, "localhost") != 0)
		log_warning("metrics_listen %s: anyone who can reach it may read the metrics (set "
		            "metrics_users to require a password)",
		            spec);
	return true;
}

bool metrics_start(struct bouncer *b)
{
	const char *spec = b->cfg->metrics_listen;
	struct metrics *mt;
	bool ok;

	if (spec[0] == '\0')
		return true;
	mt = calloc(1, sizeof(*mt));
	if (mt == NULL)
		return false;
	mt->b = b;
	mt->http = evhttp_new(b->base);
	if (mt->http == NULL) {
		free(mt);
		return false;
	}
	evhttp_set_allowed_methods(mt->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
	                                             EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE);
	evhttp_set_max_headers_size(mt->http, 16 * 1024);
	evhttp_set_max_body_size(mt->http, 0);
	evhttp_set_timeout(mt->http, 30);
	evhttp_set_gencb(mt->http, on_request, mt);
	ok = spec[0] == '/' ? listen_unix(mt, spec) : listen_tcp(mt, spec);
	if (!ok) {
		evhttp_free(mt->http);
		free(mt);
		return false;
	}
	b->metrics = mt;
	log_info("metrics: listening on %s", spec);
	return true;
}

void metrics_stop(struct bouncer *b)
{
	struct metrics *mt = b->metrics;

	if (mt == NULL)
		return;
	evhttp_free(mt->http);
	if (mt->unix_path[0])
		unlink(mt->unix_path);
	free(mt);
	b->metrics = NULL;
}
