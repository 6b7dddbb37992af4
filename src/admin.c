/*
 * admin — see include/admin.h. One console statement per Query message, answered in one go:
 * RowDescription, DataRows, CommandComplete and ReadyForQuery are built in one pktbuf (capped)
 * and queued at once, so a SHOW never interleaves with anything else. Commands that wait
 * (PAUSE, SUSPEND, WAIT_CLOSE) leave the client's relay paused until control answers them.
 * Column names, order and types follow pgbouncer 1.25; error texts too (SQLSTATE 08P01).
 */
#include "admin.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <inttypes.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "bouncer.h"
#include "client.h"
#include "config.h"
#include "conn.h"
#include "control.h"
#include "dns.h"
#include "log.h"
#include "module.h"
#include "pktbuf.h"
#include "pool.h"
#include "proto.h"
#include "stats.h"
#include "tls.h"
#include "userlist.h"
#include "version.h"
#include "workers.h"

#define ADMIN_REPLY_MAX (64u * 1024 * 1024)
#define ADMIN_MAX_COLS  32

#define OID_BYTEA   17u
#define OID_INT8    20u
#define OID_INT4    23u
#define OID_TEXT    25u
#define OID_NUMERIC 1700u

struct admin_view {
	char name[32];
	const char *const *columns;
	int ncols;
	admin_view_fill fill;
	void *ctx;
};

struct admin {
	struct pool *pool;
	struct admin_view views[ADMIN_MAX_VIEWS];
	int nviews;
};

/* Some clients SET and SHOW these before anything else: fake answers keep them happy. */
static const struct {
	const char *name, *value;
} fake_params[] = {
        {"client_encoding", "UTF-8"},
        {"default_transaction_isolation", "read committed"},
        {"standard_conforming_strings", "on"},
        {"datestyle", "ISO"},
        {"timezone", "GMT"},
        {"extra_float_digits", "2"},
};

const char *admin_stmt_kind_str(enum admin_stmt_kind k)
{
	switch (k) {
	case ADMIN_STMT_COMMAND:
		return "command";
	case ADMIN_STMT_SET:
		return "set";
	case ADMIN_STMT_INVALID:
		return "invalid";
	case ADMIN_STMT_TOO_LONG:
		return "too_long";
	}
	return "?";
}

bool admin_is_console_db(const char *dbname)
{
	return strcmp(dbname, "pgbouncer") == 0 || strcmp(dbname, "syncbouncer") == 0;
}

struct pool *admin_pool(struct bouncer *b)
{
	return b->admin->pool;
}

/* ---- statement parsing (pgbouncer's grammar, written out by hand) ---- */

static bool is_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static const char *skip_ws(const char *p)
{
	while (is_ws(*p))
		p++;
	return p;
}

static bool is_word_char(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       c == '_';
}

/* A run quoted with q at p (a doubled q is one): its end, or NULL when it is not closed. */
static const char *scan_quoted(const char *p, char q)
{
	for (p++;; p++) {
		if (*p == '\0')
			return NULL;
		if (*p == q) {
			if (p[1] != q)
				return p + 1;
			p++;
		}
	}
}

/* A WORD: "quoted" (a doubled quote is one) or [0-9a-z_]+. Returns its end or NULL. */
static const char *scan_word(const char *p)
{
	if (*p == '"')
		return scan_quoted(p, '"');
	if (!is_word_char(*p))
		return NULL;
	while (is_word_char(*p))
		p++;
	return p;
}

/* A STRING: '...' with '' for a quote. Returns its end or NULL. */
static const char *scan_string(const char *p)
{
	return *p == '\'' ? scan_quoted(p, '\'') : NULL;
}

/* Copies [s, e) into dst, removing the quotes q around it; false when it does not fit. */
static bool copy_part(const char *s, const char *e, char *dst, size_t size, char q)
{
	size_t len = (size_t)(e - s), n = 0;

	if (len >= size)
		return false;
	if (len >= 2 && *s == q) {
		for (const char *p = s + 1; p < e - 1; p++) {
			if (*p == q && p + 1 < e - 1 && p[1] == q)
				p++;
			dst[n++] = *p;
		}
		dst[n] = '\0';
		return true;
	}
	memcpy(dst, s, len);
	dst[len] = '\0';
	return true;
}

/* The optional trailing ";" and nothing else. */
static bool at_end(const char *p)
{
	p = skip_ws(p);
	if (*p == ';')
		p = skip_ws(p + 1);
	return *p == '\0';
}

static bool parse_command(const char *q, struct admin_stmt *out)
{
	const char *p = skip_ws(q), *cmd_s, *cmd_e, *arg_s = NULL, *arg_e = NULL;

	cmd_s = p;
	cmd_e = scan_word(p);
	if (cmd_e == NULL)
		return false;
	p = cmd_e;
	if (is_ws(*p)) {
		const char *w = skip_ws(p);
		const char *we = scan_word(w);
		if (we != NULL) {
			arg_s = w;
			arg_e = we;
			p = we;
		}
	}
	if (cmd_e - cmd_s == 7 && strncasecmp(cmd_s, "journal", 7) == 0 && arg_s != NULL) {
		/* syncbouncer's JOURNAL RETRY <id> | JOURNAL GIVEUP <id> CONFIRM: several words */
		for (;;) {
			const char *w = skip_ws(p), *we;
			if (w == p || *w == '\0' || *w == ';')
				break;
			we = scan_word(w);
			if (we == NULL)
				return false;
			arg_e = we;
			p = we;
		}
	}
	if (!at_end(p))
		return false;
	out->kind = ADMIN_STMT_COMMAND;
	if (!copy_part(cmd_s, cmd_e, out->cmd, sizeof(out->cmd), '"') ||
	    (arg_s != NULL && !copy_part(arg_s, arg_e, out->arg, sizeof(out->arg), '"')))
		out->kind = ADMIN_STMT_TOO_LONG;
	return true;
}

static bool parse_set(const char *q, struct admin_stmt *out)
{
	const char *p = skip_ws(q), *key_s, *key_e, *val_s, *val_e;
	char quote = '"';

	if (strncasecmp(p, "set", 3) != 0 || !is_ws(p[3]))
		return false;
	key_s = skip_ws(p + 3);
	key_e = scan_word(key_s);
	if (key_e == NULL)
		return false;
	p = skip_ws(key_e);
	if (*p == '=')
		p++;
	else if (strncasecmp(p, "to", 2) == 0)
		p += 2;
	else
		return false;
	val_s = skip_ws(p);
	if (*val_s == '\'') {
		val_e = scan_string(val_s);
		quote = '\'';
	} else {
		val_e = scan_word(val_s);
	}
	if (val_e == NULL || !at_end(val_e))
		return false;
	out->kind = ADMIN_STMT_SET;
	if (!copy_part(key_s, key_e, out->arg, sizeof(out->arg), '"') || out->arg[0] == '\0' ||
	    !copy_part(val_s, val_e, out->value, sizeof(out->value), quote))
		out->kind = ADMIN_STMT_TOO_LONG;
	return true;
}

void admin_parse(const char *q, struct admin_stmt *out)
{
	memset(out, 0, sizeof(*out));
	if (parse_command(q, out))
		return;
	memset(out, 0, sizeof(*out));
	if (parse_set(q, out))
		return;
	memset(out, 0, sizeof(*out));
	out->kind = ADMIN_STMT_INVALID;
}

/* ---- reply building ---- */

struct reply {
	struct bouncer *b;
	struct conn *client;
	const char *query;
	struct pktbuf pb;
};

/* Row description from pgbouncer's type letters: s text, i int4, q int8, N numeric, T time. */
static void header(struct reply *r, const char *types, ...)
{
	const char *names[ADMIN_MAX_COLS];
	uint32_t oids[ADMIN_MAX_COLS];
	int n = (int)strlen(types);
	va_list ap;

	if (n > ADMIN_MAX_COLS) {
		r->pb.failed = true;
		return;
	}
	va_start(ap, types);
	for (int i = 0; i < n; i++) {
		names[i] = va_arg(ap, const char *);
		switch (types[i]) {
		case 'i':
			oids[i] = OID_INT4;
			break;
		case 'q':
			oids[i] = OID_INT8;
			break;
		case 'N':
			oids[i] = OID_NUMERIC;
			break;
		case 'b':
			oids[i] = OID_BYTEA;
			break;
		default:
			oids[i] = OID_TEXT;
			break;
		}
	}
	va_end(ap);
	pktbuf_write_row_description(&r->pb, n, names, oids);
}

struct row {
	int n;
	const char *v[ADMIN_MAX_COLS];
	char store[ADMIN_MAX_COLS][64];
};

static void row_init(struct row *row)
{
	row->n = 0;
}

/* s is borrowed until row_emit(); NULL is SQL NULL. */
static void row_str(struct row *row, const char *s)
{
	if (row->n < ADMIN_MAX_COLS)
		row->v[row->n++] = s;
}

static void row_int(struct row *row, long long x)
{
	if (row->n >= ADMIN_MAX_COLS)
		return;
	snprintf(row->store[row->n], sizeof(row->store[0]), "%lld", x);
	row->v[row->n] = row->store[row->n];
	row->n++;
}

static void row_fmt(struct row *row, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void row_fmt(struct row *row, const char *fmt, ...)
{
	va_list ap;

	if (row->n >= ADMIN_MAX_COLS)
		return;
	va_start(ap, fmt);
	vsnprintf(row->store[row->n], sizeof(row->store[0]), fmt, ap);
	va_end(ap);
	row->v[row->n] = row->store[row->n];
	row->n++;
}

/* A monotonic time as pgbouncer prints timestamps: "2026-11-30 08:30:37 UTC". */
static void row_time(struct row *row, uint64_t mono_usec)
{
	struct timespec rt;
	uint64_t now = bouncer_now_usec();
	time_t t;
	struct tm tm;

	if (row->n >= ADMIN_MAX_COLS)
		return;
	clock_gettime(CLOCK_REALTIME, &rt);
	t = rt.tv_sec - (time_t)((now > mono_usec ? now - mono_usec : 0) / 1000000u);
	localtime_r(&t, &tm);
	strftime(row->store[row->n], sizeof(row->store[0]), "%Y-%m-%d %H:%M:%S %Z", &tm);
	row->v[row->n] = row->store[row->n];
	row->n++;
}

static void row_emit(struct reply *r, struct row *row)
{
	pktbuf_write_data_row(&r->pb, row->n, row->v);
}

/* Sends what was built plus CommandComplete tag and ReadyForQuery. */
static void finish(struct reply *r, const char *tag)
{
	if (tag != NULL)
		pktbuf_write_command_complete(&r->pb, tag);
	pktbuf_write_ready(&r->pb, 'I');
	if (pktbuf_failed(&r->pb)) {
		pktbuf_reset(&r->pb);
		pktbuf_write_error(&r->pb, "ERROR", "53200", "out of memory", NULL, NULL);
		pktbuf_write_ready(&r->pb, 'I');
	}
	if (r->client == NULL)
		return; /* admin_show_rows() reads the answer itself */
	if (!sbuf_queue_pktbuf(&r->client->sbuf, &r->pb))
		slog_debug(r->client, "could not queue the console answer");
}

static void send_error(struct reply *r, const char *sqlstate, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
static void send_error(struct reply *r, const char *sqlstate, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	pktbuf_reset(&r->pb);
	pktbuf_write_error(&r->pb, "ERROR", sqlstate, msg, NULL, NULL);
	finish(r, NULL);
}

/* The statement's text is only logged at DEBUG: it may hold a value that is a secret. */
static void syntax_error(struct reply *r)
{
	log_debug("invalid admin command: %s", r->query);
	if (r->client != NULL)
		slog_warning(r->client, "invalid admin command");
	send_error(r, "08P01", "invalid command '%s', use SHOW HELP;", r->query);
}

/* ---- the pools, sorted by (database, user) as pgbouncer lists them ---- */

static int cmp_pools(const void *a, const void *b)
{
	const struct pool *pa = *(struct pool *const *)a;
	const struct pool *pb = *(struct pool *const *)b;
	int c = strcmp(pa->db_name, pb->db_name);

	return c != 0 ? c : strcmp(pa->user_name, pb->user_name);
}

/* Every pool, the admin pool included; *n set. NULL when out of memory. Caller frees. */
static struct pool **all_pools(struct bouncer *b, int *n)
{
	size_t count = list_count(&b->pools) + 1, i = 0;
	struct pool **v = calloc(count, sizeof(*v));
	struct list *it;

	if (v == NULL)
		return NULL;
	list_for_each(it, &b->pools)
	{
		v[i++] = list_entry(it, struct pool, head);
	}
	v[i++] = b->admin->pool;
	qsort(v, i, sizeof(*v), cmp_pools);
	*n = (int)i;
	return v;
}

/* ---- gathering from every worker ---- */

static int cmp_rows(const void *a, const void *b)
{
	const struct admin_pool_row *ra = a, *rb = b;
	int c = strcmp(ra->db, rb->db);

	return c != 0 ? c : strcmp(ra->user, rb->user);
}

int admin_pool_rows_merge(struct admin_pool_row *rows, int n)
{
	int m = 0;

	if (n <= 0)
		return 0;
	qsort(rows, (size_t)n, sizeof(*rows), cmp_rows);
	for (int i = 0; i < n; i++) {
		struct admin_pool_row *d = &rows[m - 1];
		const struct admin_pool_row *s = &rows[i];

		if (m == 0 || cmp_rows(d, s) != 0) {
			if (m != i)
				rows[m] = *s;
			m++;
			continue;
		}
		d->cl_active += s->cl_active;
		d->cl_waiting += s->cl_waiting;
		d->sv_active += s->sv_active;
		d->sv_idle += s->sv_idle;
		d->sv_used += s->sv_used;
		d->sv_tested += s->sv_tested;
		d->sv_login += s->sv_login;
		d->clients += s->clients;
		d->servers += s->servers;
		if (s->maxwait_usec > d->maxwait_usec)
			d->maxwait_usec = s->maxwait_usec;
		if (d->lb_hosts == NULL)
			d->lb_hosts = s->lb_hosts;
	}
	return m;
}

/* Every worker's pools as rows, and the counts that hang off no pool. */
struct gather {
	struct admin_pool_row *rows;
	int n, cap;
	bool failed;
	long long login_clients; /* not yet attached to a pool */
};

static uint64_t first_wait(const struct pool *pool);
static const char *lb_hosts(const struct bouncer *b, const char *dbname, const char *host);

static void gather_pool(struct gather *g, struct bouncer *w, const struct pool *p, bool is_admin)
{
	struct admin_pool_row *row;

	if (g->failed)
		return;
	if (g->n == g->cap) {
		int cap = g->cap ? g->cap * 2 : 16;
		struct admin_pool_row *n = realloc(g->rows, (size_t)cap * sizeof(*n));
		if (n == NULL) {
			g->failed = true;
			return;
		}
		g->rows = n;
		g->cap = cap;
	}
	row = &g->rows[g->n++];
	memset(row, 0, sizeof(*row));
	snprintf(row->db, sizeof(row->db), "%s", p->db_name);
	snprintf(row->user, sizeof(row->user), "%s", p->user_name);
	row->is_admin = is_admin;
	row->pool_mode = p->pool_mode;
	row->lb_hosts = is_admin ? NULL : lb_hosts(w, p->db_name, p->host);
	row->cl_active = (long long)list_count(&p->active_clients);
	row->cl_waiting =
	        (long long)(list_count(&p->waiting_clients) + list_count(&p->login_clients));
	row->sv_active = (long long)list_count(&p->active_servers);
	row->sv_idle = (long long)list_count(&p->idle_servers);
	row->sv_used = (long long)list_count(&p->used_servers);
	row->sv_tested = (long long)list_count(&p->tested_servers);
	row->sv_login = (long long)list_count(&p->login_servers);
	row->clients = pool_client_count(p);
	row->servers = pool_server_count(p);
	row->maxwait_usec = first_wait(p);
}

static void gather_worker(struct bouncer *w, void *arg)
{
	struct gather *g = arg;
	struct list *it;

	list_for_each(it, &w->pools)
	{
		gather_pool(g, w, list_entry(it, struct pool, head), false);
	}
	if (w->admin != NULL)
		gather_pool(g, w, w->admin->pool, true);
	g->login_clients += (long long)list_count(&w->login_clients);
}

/* Every worker's pools, merged into one row per pool, sorted. False when out of memory. */
static bool gather_pools(struct bouncer *b, struct gather *g)
{
	memset(g, 0, sizeof(*g));
	workers_each(b, gather_worker, g);
	if (g->failed) {
		free(g->rows);
		memset(g, 0, sizeof(*g));
		return false;
	}
	g->n = admin_pool_rows_merge(g->rows, g->n);
	return true;
}

static void gather_free(struct gather *g)
{
	free(g->rows);
	memset(g, 0, sizeof(*g));
}

/* ---- SHOW views ---- */

static void show_help(struct reply *r)
{
	static const char detail[] =
	        "\n\tSHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|USERS|VERSION\n"
	        "\tSHOW PEERS|PEER_POOLS\n"
	        "\tSHOW FDS|SOCKETS|ACTIVE_SOCKETS|LISTS|MEM|STATE\n"
	        "\tSHOW DNS_HOSTS|DNS_ZONES\n"
	        "\tSHOW STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS\n"
	        "\tSHOW APIS|SYNCED_TABLES|MUTATIONS|JOURNAL\n"
	        "\tJOURNAL RETRY <id>\n"
	        "\tJOURNAL GIVEUP <id> CONFIRM\n"
	        "\tSET key = arg\n"
	        "\tRELOAD\n"
	        "\tSYNC [BACKFILL] <db.schema.table>\n"
	        "\tPAUSE [<db>]\n"
	        "\tRESUME [<db>]\n"
	        "\tDISABLE <db>\n"
	        "\tENABLE <db>\n"
	        "\tRECONNECT [<db>]\n"
	        "\tKILL [<db>]\n"
	        "\tKILL_CLIENT <client_id>\n"
	        "\tSUSPEND\n"
	        "\tSHUTDOWN\n"
	        "\tSHUTDOWN WAIT_FOR_SERVERS|WAIT_FOR_CLIENTS\n"
	        "\tWAIT_CLOSE [<db>]";

	pktbuf_start_msg(&r->pb, PQMSG_NOTICE_RESPONSE);
	pktbuf_put_u8(&r->pb, 'S');
	pktbuf_put_string(&r->pb, "NOTICE");
	pktbuf_put_u8(&r->pb, 'C');
	pktbuf_put_string(&r->pb, "00000");
	pktbuf_put_u8(&r->pb, 'M');
	pktbuf_put_string(&r->pb, "Console usage");
	pktbuf_put_u8(&r->pb, 'D');
	pktbuf_put_string(&r->pb, detail);
	pktbuf_put_u8(&r->pb, 0);
	pktbuf_finish_msg(&r->pb);
	finish(r, "SHOW");
}

static void show_version(struct reply *r)
{
	struct row row;

	header(r, "s", "version");
	row_init(&row);
	row_str(&row, SB_VERSION_LINE);
	row_emit(r, &row);
	finish(r, "SHOW");
}

static void show_state(struct reply *r)
{
	enum control_mode m = control_mode(r->b);
	static const char *const keys[3] = {"active", "paused", "suspended"};
	const bool vals[3] = {m == CONTROL_RUNNING, m == CONTROL_PAUSED, m == CONTROL_SUSPENDED};
	struct row row;

	header(r, "ss", "key", "value");
	for (int i = 0; i < 3; i++) {
		row_init(&row);
		row_str(&row, keys[i]);
		row_str(&row, vals[i] ? "yes" : "no");
		row_emit(r, &row);
	}
	finish(r, "SHOW");
}

static void show_config(struct reply *r)
{
	struct row row;
	char val[1024], def[1024];

	header(r, "ssss", "key", "value", "default", "changeable");
	for (int i = 0; i < config_key_count(); i++) {
		config_key_format(r->b->cfg, i, val, sizeof(val));
		config_key_format_default(i, def, sizeof(def));
		row_init(&row);
		row_str(&row, config_key_name(i));
		row_str(&row, val);
		row_str(&row, def);
		row_str(&row, config_key_reloadable(i) ? "yes" : "no");
		row_emit(r, &row);
	}
	finish(r, "SHOW");
}

static uint64_t first_wait(const struct pool *pool)
{
	const struct list *first = list_first(&pool->waiting_clients);
	uint64_t now = bouncer_now_usec();
	const struct conn *c;

	if (first == NULL)
		first = list_first(&pool->login_clients);
	if (first == NULL)
		return 0;
	c = list_entry(first, struct conn, head);
	return c->request_time != 0 && now > c->request_time ? now - c->request_time : 0;
}

static const char *lb_hosts(const struct bouncer *b, const char *dbname, const char *host)
{
	const struct cf_database *db = config_find_database(b->cfg, dbname);

	if (host == NULL || strchr(host, ',') == NULL || db == NULL)
		return NULL;
	return load_balance_hosts_str(db->load_balance_hosts >= 0
	                                      ? (enum load_balance_hosts)db->load_balance_hosts
	                                      : LOAD_BALANCE_ROUND_ROBIN);
}

static void show_pools(struct reply *r)
{
	struct gather g;
	struct row row;

	if (!gather_pools(r->b, &g)) {
		send_error(r, "53200", "out of memory");
		return;
	}
	header(r, "ssiiiiiiiiiiiiiss", "database", "user", "cl_active", "cl_waiting",
	       "cl_active_cancel_req", "cl_waiting_cancel_req", "sv_active", "sv_active_cancel",
	       "sv_being_canceled", "sv_idle", "sv_used", "sv_tested", "sv_login", "maxwait",
	       "maxwait_us", "pool_mode", "load_balance_hosts");
	for (int i = 0; i < g.n; i++) {
		const struct admin_pool_row *p = &g.rows[i];

		row_init(&row);
		row_str(&row, p->db);
		row_str(&row, p->user);
		row_int(&row, p->cl_active);
		row_int(&row, p->cl_waiting);
		row_int(&row, 0);
		row_int(&row, 0);
		row_int(&row, p->sv_active);
		row_int(&row, 0);
		row_int(&row, 0);
		row_int(&row, p->sv_idle);
		row_int(&row, p->sv_used);
		row_int(&row, p->sv_tested);
		row_int(&row, p->sv_login);
		row_int(&row, (long long)(p->maxwait_usec / 1000000u));
		row_int(&row, (long long)(p->maxwait_usec % 1000000u));
		row_str(&row, pool_mode_str((enum pool_mode)p->pool_mode));
		row_str(&row, p->lb_hosts);
		row_emit(r, &row);
	}
	gather_free(&g);
	finish(r, "SHOW");
}

static void socket_header(struct reply *r, bool debug)
{
	if (debug)
		header(r, "ssssssisiTTiiississiiiiiiiii", "type", "user", "database", "replication",
		       "state", "addr", "port", "local_addr", "local_port", "connect_time",
		       "request_time", "wait", "wait_us", "close_needed", "ptr", "link",
		       "remote_pid", "tls", "application_name", "prepared_statements", "id",
		       "recv_pos", "pkt_pos", "pkt_remain", "send_pos", "send_remain", "pkt_avail",
		       "send_avail");
	else
		header(r, "ssssssisiTTiiississii", "type", "user", "database", "replication",
		       "state", "addr", "port", "local_addr", "local_port", "connect_time",
		       "request_time", "wait", "wait_us", "close_needed", "ptr", "link",
		       "remote_pid", "tls", "application_name", "prepared_statements", "id");
}

static void local_end(const struct conn *c, char *addr, size_t size, int *port)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	addr[0] = '\0';
	*port = 0;
	if (c->sbuf.fd < 0)
		return;
	if (getsockname(c->sbuf.fd, (struct sockaddr *)&ss, &len) != 0)
		return;
	if (ss.ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
		inet_ntop(AF_INET, &in->sin_addr, addr, (socklen_t)size);
		*port = ntohs(in->sin_port);
	} else if (ss.ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
		inet_ntop(AF_INET6, &in6->sin6_addr, addr, (socklen_t)size);
		*port = ntohs(in6->sin6_port);
	} else if (ss.ss_family == AF_UNIX) {
		snprintf(addr, size, "unix");
		*port = c->b->cfg->listen_port;
	}
}

static int remote_pid(const struct conn *c)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);

	if (c->addr.sa.sa_family == AF_UNIX && c->sbuf.fd >= 0 &&
	    getsockopt(c->sbuf.fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 && cred.pid > 0)
		return (int)cred.pid;
	return c->is_server ? (int)c->be_pid : 0;
}

static void socket_row(struct reply *r, const struct conn *c, const char *state, bool debug)
{
	struct row row;
	char laddr[64], tlsinfo[128];
	int lport = 0;
	uint64_t now = bouncer_now_usec();
	uint64_t wait = 0;
	const char *app;
	const struct conn *owner = c->is_server ? c->link : c;

	if (!c->is_server && (c->state == CL_WAITING || c->state == CL_WAITING_LOGIN) &&
	    c->request_time != 0 && now > c->request_time)
		wait = now - c->request_time;
	app = owner != NULL ? param_get(&owner->params, "application_name") : NULL;
	local_end(c, laddr, sizeof(laddr), &lport);
	row_init(&row);
	row_str(&row, c->is_server ? "S" : "C");
	if (c->is_server)
		row_str(&row, c->pool ? c->pool->server_user : "(nouser)");
	else
		row_str(&row, c->user[0] ? c->user : "(nouser)");
	row_str(&row, c->pool ? c->pool->db_name : "(nodb)");
	row_str(&row, "none");
	row_str(&row, (c->link == NULL && strcmp(state, "active") == 0) ? "idle" : state);
	row_str(&row, c->addr_str);
	row_int(&row, c->port);
	row_str(&row, laddr);
	row_int(&row, lport);
	row_time(&row, c->connect_time);
	row_time(&row, c->request_time != 0 ? c->request_time : c->connect_time);
	row_int(&row, (long long)(wait / 1000000u));
	row_int(&row, (long long)(wait % 1000000u));
	row_int(&row, c->close_needed);
	row_fmt(&row, "%p", (const void *)c);
	if (c->link != NULL)
		row_fmt(&row, "%p", (const void *)c->link);
	else
		row_str(&row, "");
	row_int(&row, remote_pid(c));
	tls_conn_info(&c->sbuf, tlsinfo, sizeof(tlsinfo));
	row_str(&row, tlsinfo);
	row_str(&row, app != NULL ? app : "");
	row_int(&row, 0);
	row_int(&row, (long long)c->id);
	if (debug) {
		row_int(&row, (long long)c->sbuf.recv_pos);
		row_int(&row, (long long)c->sbuf.parse_pos);
		row_int(&row, (long long)c->sbuf.pkt_remain);
		row_int(&row, (long long)c->sbuf.done_pos);
		row_int(&row, 0);
		row_int(&row, (long long)sbuf_unparsed(&c->sbuf));
		row_int(&row, (long long)(c->sbuf.parse_pos - c->sbuf.done_pos));
	}
	row_emit(r, &row);
}

static void socket_list(struct reply *r, const struct list *l, const char *state, bool debug,
                        bool only_active)
{
	const struct list *it;

	list_for_each(it, l)
	{
		const struct conn *c = list_entry(it, struct conn, head);
		if (only_active && sbuf_unparsed(&c->sbuf) == 0 && !sbuf_has_pending(&c->sbuf) &&
		    sbuf_out_empty(&c->sbuf))
			continue;
		socket_row(r, c, state, debug);
	}
}

/*
 * The synced-table side's own database connections (catalog reads, synced writes, journal
 * replay): no pool holds them, but they are backends of this process, so SHOW SERVERS lists
 * them. Their application_name ("syncbouncer ...") and the empty link mark them; their state
 * is "new" while logging in, else "active" while a statement runs and "idle" between.
 */
static void control_conn_row(void *arg, const struct module_conn_info *pi)
{
	struct reply *r = arg;
	struct row row;
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	char laddr[64] = "";
	int lport = 0;

	if (pi->fd >= 0 && getsockname(pi->fd, (struct sockaddr *)&ss, &len) == 0) {
		if (ss.ss_family == AF_INET) {
			inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, laddr,
			          sizeof(laddr));
			lport = ntohs(((struct sockaddr_in *)&ss)->sin_port);
		} else if (ss.ss_family == AF_INET6) {
			inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, laddr,
			          sizeof(laddr));
			lport = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
		} else if (ss.ss_family == AF_UNIX) {
			snprintf(laddr, sizeof(laddr), "unix");
		}
	}
	row_init(&row);
	row_str(&row, "S");
	row_str(&row, pi->user);
	row_str(&row, pi->database);
	row_str(&row, "none");
	row_str(&row, pi->connecting ? "new" : pi->busy ? "active" : "idle");
	row_str(&row, pi->addr);
	row_int(&row, pi->port);
	row_str(&row, laddr);
	row_int(&row, lport);
	row_time(&row, pi->connect_usec);
	row_time(&row, pi->connect_usec);
	row_int(&row, 0);
	row_int(&row, 0);
	row_int(&row, 0);
	row_fmt(&row, "%p", pi->ptr);
	row_str(&row, "");
	row_int(&row, pi->backend_pid);
	row_str(&row, "");
	row_str(&row, pi->application_name);
	row_int(&row, 0);
	row_int(&row, 0);
	row_emit(r, &row);
}

enum socket_view {
	VIEW_CLIENTS,
	VIEW_SERVERS,
	VIEW_SOCKETS,
	VIEW_ACTIVE_SOCKETS,
};

struct sockets_walk {
	struct reply *r;
	enum socket_view v;
	bool failed;
};

/* One worker's rows of a connection list view, in its own thread (rows are copied into r). */
static void sockets_worker(struct bouncer *w, void *arg)
{
	struct sockets_walk *sw = arg;
	struct reply *r = sw->r;
	enum socket_view v = sw->v;
	bool debug = v == VIEW_SOCKETS || v == VIEW_ACTIVE_SOCKETS;
	bool act = v == VIEW_ACTIVE_SOCKETS;
	int n = 0;
	struct pool **pools = all_pools(w, &n);

	if (pools == NULL) {
		sw->failed = true;
		return;
	}
	for (int i = 0; i < n; i++) {
		const struct pool *p = pools[i];
		switch (v) {
		case VIEW_CLIENTS:
			socket_list(r, &p->active_clients, "active", false, false);
			socket_list(r, &p->waiting_clients, "waiting", false, false);
			socket_list(r, &p->login_clients, "waiting", false, false);
			break;
		case VIEW_SERVERS:
			socket_list(r, &p->active_servers, "active", false, false);
			socket_list(r, &p->idle_servers, "idle", false, false);
			socket_list(r, &p->used_servers, "used", false, false);
			socket_list(r, &p->tested_servers, "tested", false, false);
			socket_list(r, &p->login_servers, "new", false, false);
			break;
		case VIEW_SOCKETS:
		case VIEW_ACTIVE_SOCKETS:
			socket_list(r, &p->active_clients, "cl_active", true, act);
			socket_list(r, &p->waiting_clients, "cl_waiting", true, act);
			socket_list(r, &p->login_clients, "cl_waiting", true, act);
			socket_list(r, &p->active_servers, "sv_active", true, act);
			socket_list(r, &p->idle_servers, "sv_idle", true, act);
			socket_list(r, &p->used_servers, "sv_used", true, act);
			socket_list(r, &p->tested_servers, "sv_tested", true, act);
			socket_list(r, &p->login_servers, "sv_login", true, act);
			break;
		}
	}
	if (debug)
		socket_list(r, &w->login_clients, "cl_login", true, act);
	/* the synced-table side's connections live on the main thread's loop */
	if (v == VIEW_SERVERS && worker_index(w) == 0)
		modules_foreach_conn(control_conn_row, r);
	free(pools);
}

/* A list view: each worker adds its rows, in worker order. */
static void show_sockets(struct reply *r, enum socket_view v)
{
	struct sockets_walk sw = {r, v, false};

	socket_header(r, v == VIEW_SOCKETS || v == VIEW_ACTIVE_SOCKETS);
	workers_each(r->b, sockets_worker, &sw);
	if (sw.failed) {
		send_error(r, "53200", "out of memory");
		return;
	}
	finish(r, "SHOW");
}

/* Servers and clients over every pool (the console's excepted) of a database (db) or user. */
static void count_conns(const struct gather *g, const char *name, bool db, int *servers,
                        int *clients)
{
	*servers = *clients = 0;
	for (int i = 0; i < g->n; i++) {
		const struct admin_pool_row *p = &g->rows[i];
		if (p->is_admin || strcmp(db ? p->db : p->user, name) != 0)
			continue;
		*servers += (int)p->servers;
		*clients += (int)p->clients;
	}
}

/* The console's clients, over every worker. */
static int admin_clients(const struct gather *g)
{
	int n = 0;

	for (int i = 0; i < g->n; i++)
		if (g->rows[i].is_admin)
			n += (int)g->rows[i].clients;
	return n;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Sorted, unique names in v[0..n); returns the new n. */
static int sort_unique(const char **v, int n)
{
	int m = 0;

	qsort(v, (size_t)n, sizeof(*v), cmp_str);
	for (int i = 0; i < n; i++)
		if (m == 0 || strcmp(v[m - 1], v[i]) != 0)
			v[m++] = v[i];
	return m;
}

static void show_databases(struct reply *r)
{
	struct bouncer *b = r->b;
	const struct config *cfg = b->cfg;
	struct gather g;
	size_t cap;
	const char **names;
	struct row row;
	int n = 0;

	if (!gather_pools(b, &g)) {
		send_error(r, "53200", "out of memory");
		return;
	}
	cap = (size_t)g.n + 2;
	for (const struct cf_database *db = cfg->databases; db != NULL; db = db->next)
		cap++;
	names = calloc(cap, sizeof(*names));
	if (names == NULL) {
		gather_free(&g);
		send_error(r, "53200", "out of memory");
		return;
	}
	for (const struct cf_database *db = cfg->databases; db != NULL; db = db->next)
		if (strcmp(db->name, "*") != 0)
			names[n++] = db->name;
	for (int i = 0; i < g.n; i++)
		if (!g.rows[i].is_admin)
			names[n++] = g.rows[i].db;
	names[n++] = "pgbouncer";
	n = sort_unique(names, n);
	header(r, "ssissiiiissiiiiii", "name", "host", "port", "database", "force_user",
	       "pool_size", "min_pool_size", "reserve_pool_size", "server_lifetime", "pool_mode",
	       "load_balance_hosts", "max_connections", "current_connections",
	       "max_client_connections", "current_client_connections", "paused", "disabled");
	for (int i = 0; i < n; i++) {
		const struct cf_database *db = config_find_database(cfg, names[i]);
		int servers, clients;

		row_init(&row);
		row_str(&row, names[i]);
		if (strcmp(names[i], "pgbouncer") == 0) {
			clients = admin_clients(&g);
			row_str(&row, NULL);
			row_int(&row, cfg->listen_port);
			row_str(&row, "pgbouncer");
			row_str(&row, "pgbouncer");
			row_int(&row, 2);
			row_int(&row, 0);
			row_int(&row, 0);
			row_int(&row, (long long)(cfg->server_lifetime / 1000000));
			row_str(&row, "statement");
			row_str(&row, NULL);
			row_int(&row, 0);
			row_int(&row, 0);
			row_int(&row, 0);
			row_int(&row, clients);
			row_int(&row, 0);
			row_int(&row, 0);
			row_emit(r, &row);
			continue;
		}
		if (db == NULL)
			continue;
		count_conns(&g, names[i], true, &servers, &clients);
		row_str(&row, db->host[0] ? db->host : NULL);
		row_int(&row, db->port);
		row_str(&row, db->dbname[0] ? db->dbname : names[i]);
		row_str(&row, db->user[0] ? db->user : NULL);
		row_int(&row, db->pool_size >= 0 ? db->pool_size : cfg->default_pool_size);
		row_int(&row, db->min_pool_size >= 0 ? db->min_pool_size : cfg->min_pool_size);
		row_int(&row, db->reserve_pool_size >= 0 ? db->reserve_pool_size
		                                         : cfg->reserve_pool_size);
		row_int(&row, (long long)((db->server_lifetime > 0 ? db->server_lifetime
		                                                   : cfg->server_lifetime) /
		                          1000000));
		row_str(&row,
		        db->pool_mode >= 0 ? pool_mode_str((enum pool_mode)db->pool_mode) : NULL);
		row_str(&row, lb_hosts(b, names[i], db->host));
		row_int(&row, db->max_db_connections >= 0 ? db->max_db_connections
		                                          : cfg->max_db_connections);
		row_int(&row, servers);
		row_int(&row, db->max_db_client_connections >= 0 ? db->max_db_client_connections
		                                                 : cfg->max_db_client_connections);
		row_int(&row, clients);
		row_int(&row, control_db_paused(b, names[i]));
		row_int(&row, control_db_disabled(b, names[i]));
		row_emit(r, &row);
	}
	free(names);
	gather_free(&g);
	finish(r, "SHOW");
}

static void show_users(struct reply *r)
{
	struct bouncer *b = r->b;
	const struct config *cfg = b->cfg;
	struct gather g;
	size_t cap;
	const char **names;
	struct row row;
	int n = 0;

	if (!gather_pools(b, &g)) {
		send_error(r, "53200", "out of memory");
		return;
	}
	cap = (size_t)g.n + 2 + (size_t)userlist_count(b->users);
	for (const struct cf_user *u = cfg->users; u != NULL; u = u->next)
		cap++;
	names = calloc(cap, sizeof(*names));
	if (names == NULL) {
		gather_free(&g);
		send_error(r, "53200", "out of memory");
		return;
	}
	/* every known user, as pgbouncer lists them: the auth file, [users], the pools' */
	for (int i = 0; i < userlist_count(b->users); i++)
		names[n++] = userlist_name(b->users, i);
	for (const struct cf_user *u = cfg->users; u != NULL; u = u->next)
		names[n++] = u->name;
	for (int i = 0; i < g.n; i++)
		if (!g.rows[i].is_admin)
			names[n++] = g.rows[i].user;
	names[n++] = "pgbouncer";
	n = sort_unique(names, n);
	header(r, "ssssiiii", "name", "pool_size", "reserve_pool_size", "pool_mode",
	       "max_user_connections", "current_connections", "max_user_client_connections",
	       "current_client_connections");
	for (int i = 0; i < n; i++) {
		const struct cf_user *u = config_find_user(cfg, names[i]);
		int servers, clients;

		count_conns(&g, names[i], false, &servers, &clients);
		row_init(&row);
		row_str(&row, names[i]);
		if (u != NULL && u->pool_size >= 0)
			row_fmt(&row, "%9d", u->pool_size);
		else
			row_str(&row, "");
		if (u != NULL && u->reserve_pool_size >= 0)
			row_fmt(&row, "%9d", u->reserve_pool_size);
		else
			row_str(&row, "");
		row_str(&row, u != NULL && u->pool_mode >= 0
		                      ? pool_mode_str((enum pool_mode)u->pool_mode)
		                      : NULL);
		row_int(&row, u != NULL && u->max_user_connections >= 0
		                      ? u->max_user_connections
		                      : cfg->max_user_connections);
		row_int(&row, servers);
		row_int(&row, u != NULL && u->max_user_client_connections >= 0
		                      ? u->max_user_client_connections
		                      : cfg->max_user_client_connections);
		row_int(&row, clients);
		row_emit(r, &row);
	}
	free(names);
	gather_free(&g);
	finish(r, "SHOW");
}

/*
 * The DNS caches of every worker as one: each name once (a name that two workers resolved is
 * one name of the pooler), from the first worker in order that holds addresses for it.
 */
struct dns_entry {
	char *name, *addrs;
	int64_t ttl;
	unsigned seq; /* gathering order: worker order, then each cache's own */
};

struct dns_gather {
	struct dns_entry *e;
	size_t n, cap;
	bool failed;
};

static void dns_gather_host(void *arg, const char *host, int64_t ttl, const char *addrs)
{
	struct dns_gather *g = arg;
	struct dns_entry *e;

	if (g->failed)
		return;
	if (g->n == g->cap) {
		size_t cap = g->cap ? g->cap * 2 : 16;
		struct dns_entry *n = realloc(g->e, cap * sizeof(*n));
		if (n == NULL) {
			g->failed = true;
			return;
		}
		g->e = n;
		g->cap = cap;
	}
	e = &g->e[g->n];
	e->name = strdup(host);
	e->addrs = strdup(addrs);
	e->ttl = ttl;
	e->seq = (unsigned)g->n;
	if (e->name == NULL || e->addrs == NULL) {
		free(e->name);
		free(e->addrs);
		g->failed = true;
		return;
	}
	g->n++;
}

static void dns_gather_worker(struct bouncer *w, void *arg)
{
	if (w->dns != NULL)
		dns_foreach_host(w->dns, dns_gather_host, arg);
}

/* by name; for one name, an entry with addresses first, then gathering order */
static int dns_entry_cmp(const void *a, const void *b)
{
	const struct dns_entry *x = a, *y = b;
	int c = strcmp(x->name, y->name);

	if (c != 0)
		return c;
	if ((x->addrs[0] == '\0') != (y->addrs[0] == '\0'))
		return x->addrs[0] == '\0' ? 1 : -1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static void dns_gather_free(struct dns_gather *g)
{
	for (size_t i = 0; i < g->n; i++) {
		free(g->e[i].name);
		free(g->e[i].addrs);
	}
	free(g->e);
	memset(g, 0, sizeof(*g));
}

/* Every worker's cached names, each once, sorted by name. False when out of memory. */
static bool dns_gather(struct bouncer *b, struct dns_gather *g)
{
	size_t kept = 0;

	memset(g, 0, sizeof(*g));
	workers_each(b, dns_gather_worker, g);
	if (g->failed) {
		dns_gather_free(g);
		return false;
	}
	if (g->n > 1)
		qsort(g->e, g->n, sizeof(*g->e), dns_entry_cmp);
	for (size_t i = 0; i < g->n; i++) {
		if (kept > 0 && strcmp(g->e[kept - 1].name, g->e[i].name) == 0) {
			free(g->e[i].name);
			free(g->e[i].addrs);
			continue;
		}
		g->e[kept++] = g->e[i];
	}
	g->n = kept;
	return true;
}

static void list_row(struct reply *r, const char *name, long long v)
{
	struct row row;

	row_init(&row);
	row_str(&row, name);
	row_int(&row, v);
	row_emit(r, &row);
}

/* Clients and servers of every worker's pools (the console's clients included). */
static void count_all(const struct gather *g, long long *clients, long long *servers)
{
	*clients = g->login_clients;
	*servers = 0;
	for (int i = 0; i < g->n; i++) {
		*clients += g->rows[i].clients;
		if (!g->rows[i].is_admin)
			*servers += g->rows[i].servers;
	}
}

static void show_lists(struct reply *r)
{
	struct bouncer *b = r->b;
	struct gather g;
	struct dns_gather dg;
	int ndb = 0, nusers = 0;
	long long nclients, nservers;

	if (!gather_pools(b, &g)) {
		send_error(r, "53200", "out of memory");
		return;
	}
	if (!dns_gather(b, &dg)) {
		gather_free(&g);
		send_error(r, "53200", "out of memory");
		return;
	}
	for (const struct cf_database *db = b->cfg->databases; db != NULL; db = db->next)
		ndb += strcmp(db->name, "*") != 0;
	/* every known user, as pgbouncer's user list: the auth file, [users], the console */
	nusers = userlist_count(b->users);
	for (const struct cf_user *u = b->cfg->users; u != NULL; u = u->next)
		nusers += userlist_get_password(b->users, u->name) == NULL;
	nusers += userlist_get_password(b->users, "pgbouncer") == NULL;
	count_all(&g, &nclients, &nservers);
	header(r, "si", "list", "items");
	list_row(r, "databases", ndb + 1);
	list_row(r, "users", nusers);
	list_row(r, "peers", 0);
	list_row(r, "pools", g.n);
	list_row(r, "peer_pools", 0);
	list_row(r, "free_clients", 0);
	list_row(r, "used_clients", nclients);
	list_row(r, "login_clients", g.login_clients);
	list_row(r, "free_servers", 0);
	list_row(r, "used_servers", nservers);
	list_row(r, "dns_names", (long long)dg.n);
	list_row(r, "dns_zones", 0);
	list_row(r, "dns_queries", 0);
	list_row(r, "dns_pending", 0);
	dns_gather_free(&dg);
	gather_free(&g);
	finish(r, "SHOW");
}

static void show_mem(struct reply *r)
{
	struct bouncer *b = r->b;
	struct gather g;
	struct row row;
	long long nclients, nservers;
	struct {
		const char *name;
		long long size, used;
	} caches[4];

	if (!gather_pools(b, &g)) {
		send_error(r, "53200", "out of memory");
		return;
	}
	count_all(&g, &nclients, &nservers);
	caches[0].name = "pool_cache";
	caches[0].size = (long long)sizeof(struct pool);
	caches[0].used = g.n;
	caches[1].name = "server_cache";
	caches[1].size = (long long)sizeof(struct conn);
	caches[1].used = nservers;
	caches[2].name = "client_cache";
	caches[2].size = (long long)sizeof(struct conn);
	caches[2].used = nclients;
	caches[3].name = "iobuf_cache";
	caches[3].size = b->cfg->pkt_buf;
	caches[3].used = nclients + nservers;
	header(r, "siiii", "name", "size", "used", "free", "memtotal");
	for (int i = 0; i < 4; i++) {
		row_init(&row);
		row_str(&row, caches[i].name);
		row_int(&row, caches[i].size);
		row_int(&row, caches[i].used);
		row_int(&row, 0);
		row_int(&row, caches[i].size * caches[i].used);
		row_emit(r, &row);
	}
	gather_free(&g);
	finish(r, "SHOW");
}

/* One row per name, whichever workers have it cached (see dns_gather()). */
static void show_dns_hosts(struct reply *r)
{
	struct dns_gather dg;

	if (!dns_gather(r->b, &dg)) {
		send_error(r, "53200", "out of memory");
		return;
	}
	header(r, "sqs", "hostname", "ttl", "addrs");
	for (size_t i = 0; i < dg.n; i++) {
		struct row row;
		int64_t ttl = dg.e[i].ttl;

		row_init(&row);
		row_str(&row, dg.e[i].name);
		row_int(&row, (long long)(ttl > 0 ? ttl / 1000000 : 0));
		row_str(&row, dg.e[i].addrs);
		row_emit(r, &row);
	}
	dns_gather_free(&dg);
	finish(r, "SHOW");
}

static void show_dns_zones(struct reply *r)
{
	/* zone serial checks (dns_zone_check_period) are not done: no zones to show */
	header(r, "sqi", "zonename", "serial", "count");
	finish(r, "SHOW");
}

static void show_peers(struct reply *r)
{
	header(r, "isii", "peer_id", "host", "port", "pool_size");
	finish(r, "SHOW");
}

static void show_peer_pools(struct reply *r)
{
	header(r, "iiiii", "peer_id", "cl_active_cancel_req", "cl_waiting_cancel_req",
	       "sv_active_cancel", "sv_login");
	finish(r, "SHOW");
}

static void stats_worker(struct bouncer *w, void *arg)
{
	struct stats_gather *g = arg;
	struct list *it;

	list_for_each(it, &w->pools)
	{
		stats_gather_pool(g, list_entry(it, struct pool, head));
	}
	if (w->admin != NULL)
		stats_gather_pool(g, w->admin->pool);
}

/* Keyed by database: every worker's counters are summed, averages taken from the sums. */
static void show_stats(struct reply *r, enum stats_view v)
{
	struct stats_gather g;

	memset(&g, 0, sizeof(g));
	workers_each(r->b, stats_worker, &g);
	if (g.failed) {
		stats_gather_free(&g);
		send_error(r, "53200", "out of memory");
		return;
	}
	stats_write_view(r->b, &g, v, &r->pb);
	stats_gather_free(&g);
	finish(r, "SHOW");
}

static void view_row(void *arg, int ncols, const char *const *values)
{
	struct reply *r = arg;

	pktbuf_write_data_row(&r->pb, ncols, values);
}

struct view_arg {
	struct reply *r;
	const char *name;
	bool found;
};

/*
 * The synced-table side's views live on worker 0, the main thread's, where its modules run
 * and registered them: they are filled there, in its thread, whichever worker the admin is on.
 */
static void view_worker(struct bouncer *w, void *arg)
{
	struct view_arg *va = arg;
	const struct admin_view *v = NULL;
	const char *names[ADMIN_MAX_COLS];
	uint32_t oids[ADMIN_MAX_COLS];

	if (worker_index(w) != 0 || w->admin == NULL)
		return;
	for (int i = 0; i < w->admin->nviews && v == NULL; i++)
		if (strcasecmp(w->admin->views[i].name, va->name) == 0)
			v = &w->admin->views[i];
	if (v == NULL)
		return;
	for (int i = 0; i < v->ncols; i++) {
		names[i] = v->columns[i];
		oids[i] = OID_TEXT;
	}
	pktbuf_write_row_description(&va->r->pb, v->ncols, names, oids);
	v->fill(w, v->ctx, view_row, va->r);
	va->found = true;
}

/* A registered view named name: answered (true), or none has that name. */
static bool show_view(struct reply *r, const char *name)
{
	struct view_arg va = {r, name, false};

	workers_each(r->b, view_worker, &va);
	if (va.found)
		finish(r, "SHOW");
	return va.found;
}

static bool fake_show(struct reply *r, const char *name)
{
	for (size_t i = 0; i < sizeof(fake_params) / sizeof(fake_params[0]); i++) {
		struct row row;
		if (strcasecmp(name, fake_params[i].name) != 0)
			continue;
		header(r, "s", fake_params[i].name);
		row_init(&row);
		row_str(&row, fake_params[i].value);
		row_emit(r, &row);
		finish(r, "SHOW");
		return true;
	}
	return false;
}

/* SHOW FDS: passing sockets for an online restart (-R) is not supported: no rows. */
static void show_fds(struct reply *r)
{
	header(r, "issssiqisssssbb", "fd", "task", "user", "database", "addr", "port", "cancel",
	       "link", "client_encoding", "std_strings", "datestyle", "timezone", "password",
	       "scram_client_key", "scram_server_key");
	finish(r, "SHOW");
}

static void show_sockets_of(struct reply *r, int which)
{
	show_sockets(r, (enum socket_view)which);
}

static void show_stats_of(struct reply *r, int which)
{
	show_stats(r, (enum stats_view)which);
}

#define SHOW_ADMIN_ONLY 1u /* for admin users only (not stats_users) */

/* The SHOW views built in: a view answered by fn(r), or by fn_of(r, which). */
static const struct show_cmd {
	const char *name;
	void (*fn)(struct reply *r);
	void (*fn_of)(struct reply *r, int which);
	int which;
	unsigned flags;
} show_cmds[] = {
        {"help", show_help, NULL, 0, 0},
        {"version", show_version, NULL, 0, 0},
        {"state", show_state, NULL, 0, 0},
        {"config", show_config, NULL, 0, 0},
        {"pools", show_pools, NULL, 0, 0},
        {"clients", NULL, show_sockets_of, VIEW_CLIENTS, 0},
        {"servers", NULL, show_sockets_of, VIEW_SERVERS, 0},
        {"sockets", NULL, show_sockets_of, VIEW_SOCKETS, 0},
        {"active_sockets", NULL, show_sockets_of, VIEW_ACTIVE_SOCKETS, 0},
        {"databases", show_databases, NULL, 0, 0},
        {"users", show_users, NULL, 0, 0},
        {"lists", show_lists, NULL, 0, 0},
        {"mem", show_mem, NULL, 0, 0},
        {"dns_hosts", show_dns_hosts, NULL, 0, 0},
        {"dns_zones", show_dns_zones, NULL, 0, 0},
        {"stats", NULL, show_stats_of, STATS_VIEW_STATS, 0},
        {"stats_totals", NULL, show_stats_of, STATS_VIEW_TOTALS_PER_DB, 0},
        {"stats_averages", NULL, show_stats_of, STATS_VIEW_AVERAGES, 0},
        {"totals", NULL, show_stats_of, STATS_VIEW_TOTALS, 0},
        {"peers", show_peers, NULL, 0, 0},
        {"peer_pools", show_peer_pools, NULL, 0, 0},
        {"fds", show_fds, NULL, 0, SHOW_ADMIN_ONLY},
};

static void cmd_show(struct reply *r, const char *arg, bool admin_user)
{
	if (fake_show(r, arg))
		return;
	for (size_t i = 0; i < sizeof(show_cmds) / sizeof(show_cmds[0]); i++) {
		const struct show_cmd *sc = &show_cmds[i];
		if (strcasecmp(sc->name, arg) != 0)
			continue;
		if ((sc->flags & SHOW_ADMIN_ONLY) && !admin_user)
			send_error(r, "08P01", "admin access needed");
		else if (sc->fn != NULL)
			sc->fn(r);
		else
			sc->fn_of(r, sc->which);
		return;
	}
	if (!show_view(r, arg))
		syntax_error(r);
}

/* ---- commands ---- */

static void answer(struct reply *r, const char *err, const char *tag)
{
	if (err != NULL) {
		slog_warning(r->client, "admin command failed: %s", err);
		send_error(r, "08P01", "%s", err);
	} else
		finish(r, tag);
}

/* A command that may complete later: waits (relay paused) or answers now. */
static void answer_or_wait(struct reply *r, const char *err, bool wait, enum control_wait what,
                           const char *db, const char *tag)
{
	if (err != NULL || !wait) {
		answer(r, err, tag);
		return;
	}
	if (!control_wait_for(r->b, r->client->id, what, db)) {
		send_error(r, "53200", "out of memory");
		return;
	}
	r->client->admin_waiting = true;
}

/* One of control's commands, as it acts on one worker. */
typedef const char *(*control_cmd)(struct bouncer *w, const char *db, bool *wait);

struct control_all {
	control_cmd fn;
	const char *db;
	bool wait;   /* some worker has something to wait for */
	bool failed; /* err says why */
	char err[256];
};

/*
 * Worker 0 (first) checks the command against its state and applies it; every worker's state
 * is the same, so when worker 0 refuses it the others are not asked.
 */
static void control_worker(struct bouncer *w, void *arg)
{
	struct control_all *ca = arg;
	bool wait = false;
	const char *err;

	if (ca->failed)
		return;
	err = ca->fn(w, ca->db, &wait);
	if (err != NULL) {
		if (worker_index(w) != 0)
			log_warning("worker %d: %s", worker_index(w), err);
		ca->failed = true;
		snprintf(ca->err, sizeof(ca->err), "%s", err);
		return;
	}
	ca->wait = ca->wait || wait;
}

/* Runs fn on every worker; NULL, or the error (in ca, which the caller provides). */
static const char *control_on_all(struct bouncer *b, control_cmd fn, const char *db, bool *wait,
                                  struct control_all *ca)
{
	memset(ca, 0, sizeof(*ca));
	ca->fn = fn;
	ca->db = db;
	workers_each(b, control_worker, ca);
	if (wait != NULL)
		*wait = ca->wait;
	return ca->failed ? ca->err : NULL;
}

static const char *do_pause(struct bouncer *w, const char *db, bool *wait)
{
	return control_pause(w, db, wait);
}

static const char *do_wait_close(struct bouncer *w, const char *db, bool *wait)
{
	return control_wait_close(w, db, wait);
}

static const char *do_suspend(struct bouncer *w, const char *db, bool *wait)
{
	(void)db;
	return control_suspend(w, wait);
}

static const char *do_resume(struct bouncer *w, const char *db, bool *wait)
{
	(void)wait;
	return control_resume(w, db);
}

static const char *do_disable(struct bouncer *w, const char *db, bool *wait)
{
	(void)wait;
	return control_disable(w, db);
}

static const char *do_enable(struct bouncer *w, const char *db, bool *wait)
{
	(void)wait;
	return control_enable(w, db);
}

static const char *do_kill(struct bouncer *w, const char *db, bool *wait)
{
	(void)wait;
	return control_kill(w, db);
}

static const char *do_reconnect(struct bouncer *w, const char *db, bool *wait)
{
	(void)wait;
	return control_reconnect(w, db);
}

enum set_result {
	SET_APPLIED,
	SET_INVALID,     /* config_set() refused the value */
	SET_REFUSED,     /* the hba or ident file it names cannot be used (or out of memory) */
	SET_TLS_REFUSED, /* the TLS contexts cannot be built with it */
};

/*
 * A SET as the admin's worker checked it: a copy of its config holding the new value, and what
 * the setting needs beside it (the hba and ident files, the TLS contexts), read once for every
 * worker. The workers then take the value from that copy and share what was read, so a SET
 * is taken by all of them or by none (a file changed between two reads cannot split them).
 */
struct set_arg {
	const char *key;
	struct config *checked;
	struct auth_files *files; /* NULL unless the auth files depend on key */
	struct tls_ctxs *tls;     /* NULL unless key is a TLS one */
	bool reconnect;           /* server TLS settings changed: the servers reconnect */
	int failed;               /* workers that ran out of memory applying it */
	char err[512];
};

/* Checks SET key = value against b's config and loads what it needs, changing nothing. */
static enum set_result set_check(struct bouncer *b, struct set_arg *sa, const char *value)
{
	char old[4096], after[4096];
	int ki = config_key_index(sa->key);

	sa->checked = config_copy(b->cfg);
	if (sa->checked == NULL) {
		snprintf(sa->err, sizeof(sa->err), "out of memory");
		return SET_REFUSED;
	}
	if (!config_set(sa->checked, sa->key, value, sa->err, sizeof(sa->err)))
		return SET_INVALID;
	if (auth_is_files_key(sa->key)) {
		sa->files = auth_files_load(sa->checked, sa->err, sizeof(sa->err));
		if (sa->files == NULL)
			return SET_REFUSED;
	}
	if (tls_is_tls_key(sa->key)) {
		sa->tls = tls_build(sa->checked, sa->err, sizeof(sa->err));
		if (sa->tls == NULL) {
			log_error("SET %s failed: %s; the TLS settings in use are kept", sa->key,
			          sa->err);
			return SET_TLS_REFUSED;
		}
		config_key_format(b->cfg, ki, old, sizeof(old));
		config_key_format(sa->checked, ki, after, sizeof(after));
		if (strncasecmp(sa->key, "server_tls", 10) == 0 && strcmp(old, after) != 0)
			sa->reconnect = true;
	}
	return SET_APPLIED;
}

/* As a worker_fn: w takes the checked value and shares what was read for it. */
static void set_apply(struct bouncer *w, void *arg)
{
	struct set_arg *sa = arg;

	if (!config_set_from(w->cfg, sa->checked, sa->key)) {
		log_error("SET %s: worker %d ran out of memory applying it", sa->key,
		          worker_index(w));
		sa->failed++;
		return;
	}
	if (sa->files != NULL)
		auth_use_files(w, auth_files_ref(sa->files));
	if (sa->tls != NULL && !tls_use(w, sa->tls)) {
		log_error("SET %s: worker %d ran out of memory setting up TLS", sa->key,
		          worker_index(w));
		sa->failed++;
	}
	stats_settings_changed(w);
}

static void set_arg_clear(struct set_arg *sa)
{
	config_free(sa->checked);
	auth_files_free(sa->files);
	tls_ctxs_free(sa->tls);
}

/*
 * SET: checked once (set_check()), then applied on every worker (set_apply()); nothing changes
 * anywhere when the check fails. A TLS setting rebuilds the contexts at once; if they cannot
 * be, the client is told why. Server connections follow new server_tls_* settings when they
 * are next released.
 */
static void cmd_set(struct reply *r, const char *key, const char *value)
{
	char tag[512];
	struct set_arg sa;
	enum set_result res;

	for (size_t i = 0; i < sizeof(fake_params) / sizeof(fake_params[0]); i++) {
		if (strcasecmp(key, fake_params[i].name) == 0) {
			pktbuf_write_notice(&r->pb, "00000", "SET ignored");
			finish(r, "SET");
			return;
		}
	}
	if (!r->client->admin_user) {
		send_error(r, "08P01", "admin access needed");
		return;
	}
	memset(&sa, 0, sizeof(sa));
	sa.key = key;
	workers_change_begin(r->b);
	res = set_check(r->b, &sa, value);
	if (res == SET_APPLIED) {
		workers_test_after_check();
		workers_each(r->b, set_apply, &sa);
	}
	workers_change_end(r->b);
	switch (res) {
	case SET_APPLIED:
		break;
	case SET_INVALID:
		slog_warning(r->client, "SET %s failed", key);
		log_debug("SET %s failed: %s", key, sa.err);
		send_error(r, "08P01", "SET failed");
		set_arg_clear(&sa);
		return;
	case SET_REFUSED:
		slog_warning(r->client, "SET %s failed: %s", key, sa.err);
		send_error(r, "08P01", "SET failed");
		set_arg_clear(&sa);
		return;
	case SET_TLS_REFUSED:
		send_error(r, "F0000", "SET failed: %s", sa.err);
		set_arg_clear(&sa);
		return;
	}
	set_arg_clear(&sa);
	if (sa.failed > 0) {
		send_error(r, "53200", "SET %s: out of memory on %d worker(s)", key, sa.failed);
		return;
	}
	if (sa.reconnect) {
		struct control_all ca;

		log_info("server TLS settings changed, reconnecting the servers");
		(void)control_on_all(r->b, do_reconnect, NULL, NULL, &ca);
	}
	log_info("SET %s = %s", key, config_key_is_secret(config_key_index(key)) ? "****" : value);
	snprintf(tag, sizeof(tag), "SET %s=%s", key, value);
	finish(r, tag);
}

static struct conn *find_client_by_id(struct bouncer *b, uint64_t id)
{
	struct list *it, *cit;
	int n = 0;
	struct pool **pools = all_pools(b, &n);
	struct conn *found = NULL;

	if (pools == NULL)
		return NULL;
	for (int i = 0; i < n && found == NULL; i++) {
		const struct list *lists[] = {&pools[i]->active_clients, &pools[i]->waiting_clients,
		                              &pools[i]->login_clients};
		for (size_t j = 0; j < 3 && found == NULL; j++) {
			list_for_each(cit, lists[j])
			{
				struct conn *c = list_entry(cit, struct conn, head);
				if (c->id == id) {
					found = c;
					break;
				}
			}
		}
	}
	(void)it;
	free(pools);
	return found;
}

struct kill_client_arg {
	uint64_t id;
	const struct conn *self;
	bool found, self_killed;
};

static void kill_client_worker(struct bouncer *w, void *arg)
{
	struct kill_client_arg *ka = arg;
	struct conn *victim;

	if (ka->found)
		return;
	victim = find_client_by_id(w, ka->id);
	if (victim == NULL)
		return;
	ka->found = true;
	ka->self_killed = victim == ka->self;
	client_fatal(victim, "08P01", "admin forced disconnect");
}

/* KILL_CLIENT id: the client is closed on whichever worker holds it (ids are unique). */
static void cmd_kill_client(struct reply *r, const char *arg)
{
	struct kill_client_arg ka = {0, r->client, false, false};
	char *end;

	ka.id = strtoull(arg, &end, 10);
	if (arg[0] == '\0' || *end != '\0') {
		send_error(r, "08P01", "invalid client pointer supplied");
		return;
	}
	workers_each(r->b, kill_client_worker, &ka);
	if (!ka.found) {
		send_error(r, "08P01", "client not found");
		return;
	}
	if (!ka.self_killed)
		finish(r, "KILL_CLIENT");
}

static void shutdown_worker(struct bouncer *w, void *arg)
{
	control_shutdown(w, *(const enum control_shutdown *)arg);
}

/* SHUTDOWN [WAIT_FOR_SERVERS|WAIT_FOR_CLIENTS]: every worker goes down the same way. */
static void cmd_shutdown(struct reply *r, const char *arg)
{
	enum control_shutdown mode = CONTROL_SHUTDOWN_IMMEDIATE;

	if (arg[0] != '\0') {
		if (strcasecmp(arg, "WAIT_FOR_CLIENTS") == 0)
			mode = CONTROL_SHUTDOWN_WAIT_FOR_CLIENTS;
		else if (strcasecmp(arg, "WAIT_FOR_SERVERS") == 0)
			mode = CONTROL_SHUTDOWN_WAIT_FOR_SERVERS;
		else {
			syntax_error(r);
			return;
		}
	}
	if (!r->client->admin_user) {
		send_error(r, "08P01", "admin access needed");
		return;
	}
	if (mode == CONTROL_SHUTDOWN_IMMEDIATE) {
		log_info("SHUTDOWN command issued");
		/* no answer: the connection stays open until the process is gone */
		workers_each(r->b, shutdown_worker, &mode);
		return;
	}
	workers_each(r->b, shutdown_worker, &mode);
	finish(r, "SHUTDOWN");
}

struct module_cmd_arg {
	const char *cmd, *arg;
	uint64_t admin_id;
	enum module_cmd res;
	char msg[256];
};

/* The modules run on worker 0, the main thread's: their commands are taken there. */
static void module_cmd_worker(struct bouncer *w, void *arg)
{
	struct module_cmd_arg *ma = arg;

	if (worker_index(w) == 0)
		ma->res = modules_command(w, ma->cmd, ma->arg, ma->admin_id, ma->msg,
		                          sizeof(ma->msg));
}

static enum module_cmd run_module_command(struct reply *r, const char *cmd, const char *arg,
                                          char *msg, size_t size)
{
	struct module_cmd_arg ma = {cmd, arg, r->client->id, MODULE_CMD_UNKNOWN, ""};

	workers_each(r->b, module_cmd_worker, &ma);
	snprintf(msg, size, "%s", ma.msg);
	return ma.res;
}

/* A command a module takes (JOURNAL): done, refused or answered later. */
static void cmd_module(struct reply *r, const char *cmd, const char *arg)
{
	char tag[32], msg[256];
	size_t i;

	for (i = 0; cmd[i] != '\0' && i + 1 < sizeof(tag); i++)
		tag[i] = (char)toupper((unsigned char)cmd[i]);
	tag[i] = '\0';
	switch (run_module_command(r, tag, arg, msg, sizeof(msg))) {
	case MODULE_CMD_DONE:
		if (msg[0] != '\0')
			slog_info(r->client, "%s %s: %s", tag, arg, msg);
		finish(r, tag);
		break;
	case MODULE_CMD_WAIT:
		r->client->admin_waiting = true;
		break;
	case MODULE_CMD_REFUSED:
	case MODULE_CMD_UNKNOWN:
		answer(r, msg[0] ? msg : "unknown command", tag);
		break;
	}
}

/*
 * RELOAD: the admin's worker re-reads and checks the files, then every other worker applies
 * them (workers_reload()); files it refuses change nothing anywhere.
 */
static void cmd_reload(struct reply *r, const char *arg)
{
	(void)arg;
	log_info("RELOAD command issued");
	if (workers_reload(r->b))
		finish(r, "RELOAD");
	else
		send_error(r, "F0000", "RELOAD failed, see logs for additional details");
}

static void cmd_suspend(struct reply *r, const char *arg)
{
	bool wait = false;
	struct control_all ca;
	const char *err = control_on_all(r->b, do_suspend, NULL, &wait, &ca);

	(void)arg;
	answer_or_wait(r, err, wait, CONTROL_WAIT_SUSPEND, "", "SUSPEND");
}

static void cmd_pause(struct reply *r, const char *arg)
{
	bool wait = false;
	struct control_all ca;
	const char *err = control_on_all(r->b, do_pause, arg, &wait, &ca);

	answer_or_wait(r, err, wait, CONTROL_WAIT_PAUSE, arg, "PAUSE");
}

static void cmd_wait_close(struct reply *r, const char *arg)
{
	bool wait = false;
	struct control_all ca;
	const char *err = control_on_all(r->b, do_wait_close, arg, &wait, &ca);

	answer_or_wait(r, err, wait, CONTROL_WAIT_CLOSE, arg, "WAIT_CLOSE");
}

static void cmd_resume(struct reply *r, const char *arg)
{
	struct control_all ca;

	answer(r, control_on_all(r->b, do_resume, arg, NULL, &ca), "RESUME");
}

static void cmd_disable(struct reply *r, const char *arg)
{
	struct control_all ca;

	answer(r, control_on_all(r->b, do_disable, arg, NULL, &ca), "DISABLE");
}

static void cmd_enable(struct reply *r, const char *arg)
{
	struct control_all ca;

	answer(r, control_on_all(r->b, do_enable, arg, NULL, &ca), "ENABLE");
}

static void cmd_kill(struct reply *r, const char *arg)
{
	struct control_all ca;

	answer(r, control_on_all(r->b, do_kill, arg, NULL, &ca), "KILL");
}

static void cmd_reconnect(struct reply *r, const char *arg)
{
	struct control_all ca;

	answer(r, control_on_all(r->b, do_reconnect, arg, NULL, &ca), "RECONNECT");
}

#define CMD_NO_ARG 1u /* takes no argument: one is a syntax error */

/* The console commands built in, for admin users (SHOW and SHUTDOWN are read apart). */
static const struct admin_cmd {
	const char *name;
	void (*fn)(struct reply *r, const char *arg);
	unsigned flags;
} admin_cmds[] = {
        {"reload", cmd_reload, CMD_NO_ARG},
        {"suspend", cmd_suspend, CMD_NO_ARG},
        {"pause", cmd_pause, 0},
        {"resume", cmd_resume, 0},
        {"disable", cmd_disable, 0},
        {"enable", cmd_enable, 0},
        {"kill", cmd_kill, 0},
        {"kill_client", cmd_kill_client, 0},
        {"reconnect", cmd_reconnect, 0},
        {"wait_close", cmd_wait_close, 0},
};

static void run_command(struct reply *r, const char *cmd, const char *arg)
{
	const struct admin_cmd *ac = NULL;

	if (strcasecmp(cmd, "show") == 0 || strcasecmp(cmd, "select") == 0) {
		cmd_show(r, arg, r->client->admin_user);
		return;
	}
	if (strcasecmp(cmd, "shutdown") == 0) {
		cmd_shutdown(r, arg);
		return;
	}
	for (size_t i = 0; i < sizeof(admin_cmds) / sizeof(admin_cmds[0]); i++)
		if (strcasecmp(cmd, admin_cmds[i].name) == 0)
			ac = &admin_cmds[i];
	if ((ac == NULL && !modules_knows_command(cmd)) ||
	    (ac != NULL && (ac->flags & CMD_NO_ARG) && arg[0] != '\0')) {
		syntax_error(r);
		return;
	}
	if (!r->client->admin_user) {
		send_error(r, "08P01", "admin access needed");
		return;
	}
	if (ac != NULL)
		ac->fn(r, arg);
	else
		cmd_module(r, cmd, arg);
}

/*
 * SYNC [BACKFILL] database.schema.table: a pass of the table's sync now, answered when it is
 * done; BACKFILL starts a full reload and answers at once. Not a pgbouncer command: it has two
 * words of arguments, so it is read here rather than by admin_parse().
 */
static bool cmd_sync(struct reply *r, const char *q)
{
	const char *p = skip_ws(q), *w, *e;
	char name[256], arg[300], msg[256];
	bool backfill = false;

	if (strncasecmp(p, "sync", 4) != 0 || !(is_ws(p[4]) || p[4] == '\0' || p[4] == ';'))
		return false;
	w = skip_ws(p + 4);
	e = w;
	while (*e && !is_ws(*e) && *e != ';')
		e++;
	if (e - w == 8 && strncasecmp(w, "backfill", 8) == 0) {
		backfill = true;
		w = skip_ws(e);
		e = w;
		while (*e && !is_ws(*e) && *e != ';')
			e++;
	}
	if (e == w || !at_end(e) || (size_t)(e - w) >= sizeof(name)) {
		send_error(r, "42601", "syntax: SYNC [BACKFILL] database.schema.table");
		return true;
	}
	memcpy(name, w, (size_t)(e - w));
	name[e - w] = '\0';
	if (!r->client->admin_user) {
		send_error(r, "08P01", "admin access needed");
		return true;
	}
	log_info("SYNC %s%s command issued", backfill ? "BACKFILL " : "", name);
	snprintf(arg, sizeof(arg), "%s%s", backfill ? "BACKFILL " : "", name);
	switch (run_module_command(r, "SYNC", arg, msg, sizeof(msg))) {
	case MODULE_CMD_DONE:
		finish(r, "SYNC");
		break;
	case MODULE_CMD_WAIT:
		r->client->admin_waiting = true;
		break;
	case MODULE_CMD_REFUSED:
		send_error(r, "08P01", "%s", msg);
		break;
	case MODULE_CMD_UNKNOWN:
		send_error(r, "08P01", "no synced tables");
		break;
	}
	return true;
}

static void run_query(struct conn *c, const char *q)
{
	struct reply r;
	struct admin_stmt st;

	r.b = c->b;
	r.client = c;
	r.query = q;
	pktbuf_init(&r.pb, ADMIN_REPLY_MAX);
	stats_admin_query(c->b->admin->pool);
	if (cmd_sync(&r, q)) {
		pktbuf_free(&r.pb);
		return;
	}
	admin_parse(q, &st);
	switch (st.kind) {
	case ADMIN_STMT_COMMAND:
		run_command(&r, st.cmd, st.arg);
		break;
	case ADMIN_STMT_SET:
		cmd_set(&r, st.arg, st.value);
		break;
	case ADMIN_STMT_TOO_LONG:
		send_error(&r, "08P01", "bad arguments");
		break;
	case ADMIN_STMT_INVALID:
		syntax_error(&r);
		break;
	}
	pktbuf_free(&r.pb);
}

/* ---- login and packets ---- */

bool admin_trusted_peer(const struct conn *c)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);

	if (c->addr.sa.sa_family != AF_UNIX || strcmp(c->user, "pgbouncer") != 0 || c->sbuf.fd < 0)
		return false;
	if (getsockopt(c->sbuf.fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
		return false;
	return cred.uid == getuid();
}

void admin_client_login(struct conn *c)
{
	struct bouncer *b = c->b;
	const struct config *cfg = b->cfg;
	struct pktbuf pb;
	uint32_t keys[2];

	if (admin_trusted_peer(c)) {
		c->admin_user = true;
		if (cfg->log_connections)
			slog_info(c, "pgbouncer access from unix socket");
	} else if (cf_list_has(cfg->admin_users, c->user, false)) {
		c->admin_user = true;
	} else if (!cf_list_has(cfg->stats_users, c->user, false) && cfg->auth_type != AUTH_ANY) {
		client_fatal(c, "08P01", "not allowed");
		return;
	}
	c->pool = b->admin->pool;
	c->request_time = bouncer_now_usec();
	conn_set_state(c, CL_ACTIVE);
	if (RAND_bytes((unsigned char *)keys, sizeof(keys)) != 1) {
		client_fatal(c, "58000", "could not generate a cancel key");
		return;
	}
	c->be_pid = keys[0] & 0x7fffffff;
	c->cancel_key = keys[1];
	pktbuf_init(&pb, 4096);
	pktbuf_write_auth(&pb, 0, NULL, 0);
	pktbuf_write_parameter_status(&pb, "server_version", PACKAGE_VERSION "/bouncer");
	pktbuf_write_parameter_status(&pb, "client_encoding", "UTF8");
	pktbuf_write_parameter_status(&pb, "server_encoding", "UTF8");
	pktbuf_write_parameter_status(&pb, "DateStyle", "ISO");
	pktbuf_write_parameter_status(&pb, "TimeZone", "GMT");
	pktbuf_write_parameter_status(&pb, "standard_conforming_strings", "on");
	pktbuf_write_parameter_status(&pb, "is_superuser", c->admin_user ? "on" : "off");
	pktbuf_write_backend_key(&pb, c->be_pid, c->cancel_key);
	pktbuf_write_ready(&pb, 'I');
	if (!sbuf_queue_pktbuf(&c->sbuf, &pb)) {
		pktbuf_free(&pb);
		client_close(c, "could not send the welcome");
		return;
	}
	pktbuf_free(&pb);
	c->auth_done = true;
	if (cfg->log_connections)
		slog_info(c, "login to the admin console (%s)", c->admin_user ? "admin" : "stats");
	sbuf_resume(&c->sbuf);
}

enum sbuf_action admin_handle_packet(struct conn *c, const struct sbuf_pkt *pkt)
{
	char msg[128];

	if (c->admin_waiting)
		return SBUF_PAUSE;
	switch (pkt->type) {
	case PQMSG_QUERY: {
		const char *q = (const char *)pkt->body;
		if (!pkt->complete)
			return SBUF_WAIT;
		if (pkt->body_len == 0 || memchr(q, '\0', pkt->body_len) != q + pkt->body_len - 1) {
			client_fatal(c, "08P01", "incomplete query");
			return SBUF_CLOSED;
		}
		log_debug("got admin query: %s", q);
		c->request_time = bouncer_now_usec();
		run_query(c, q);
		if (c->state == CONN_JUSTFREE)
			return SBUF_CLOSED;
		return SBUF_CONSUMED;
	}
	case PQMSG_TERMINATE:
		client_close(c, "client close request");
		return SBUF_CLOSED;
	case PQMSG_PARSE:
	case PQMSG_BIND:
	case PQMSG_EXECUTE:
		client_fatal(c, "08P01", "extended query protocol not supported by admin console");
		return SBUF_CLOSED;
	default:
		snprintf(msg, sizeof(msg), "unsupported packet type for admin console: %d",
		         (int)pkt->type);
		client_fatal(c, "08P01", msg);
		return SBUF_CLOSED;
	}
}

struct conn *admin_find_client(struct bouncer *b, uint64_t conn_id)
{
	struct list *it;

	if (b->admin == NULL)
		return NULL;
	list_for_each(it, &b->admin->pool->active_clients)
	{
		struct conn *c = list_entry(it, struct conn, head);
		if (conn_id == 0 || c->id == conn_id)
			return c;
	}
	return NULL;
}

/* The modules (SYNC's waits) run on worker 0. */
static void admin_gone_worker(struct bouncer *w, void *arg)
{
	if (worker_index(w) == 0)
		modules_admin_gone(w, *(const uint64_t *)arg);
}

void admin_cancel(struct bouncer *b, uint32_t pid, uint32_t key)
{
	struct list *it;
	struct conn *c = NULL;
	struct pktbuf pb;
	struct control_all ca;
	uint64_t id;

	if (b->admin == NULL)
		return;
	list_for_each(it, &b->admin->pool->active_clients)
	{
		struct conn *a = list_entry(it, struct conn, head);
		if (a->be_pid == pid && a->cancel_key == key)
			c = a;
	}
	if (c == NULL || !c->admin_waiting)
		return;
	slog_info(c, "admin canceled its waiting command");
	id = c->id;
	workers_each(b, admin_gone_worker, &id);
	/* the PAUSE or SUSPEND it started is undone on every worker */
	if (control_wait_cancel(b, id) && control_shutdown_mode(b) == CONTROL_SHUTDOWN_NONE &&
	    control_mode(b) != CONTROL_RUNNING &&
	    control_on_all(b, do_resume, NULL, NULL, &ca) != NULL)
		slog_warning(c, "could not resume after the cancel");
	pktbuf_init(&pb, 1024);
	pktbuf_write_error(&pb, "ERROR", "57014", "canceling statement due to user request", NULL,
	                   NULL);
	pktbuf_write_ready(&pb, 'I');
	if (!sbuf_queue_pktbuf(&c->sbuf, &pb))
		slog_debug(c, "could not queue the console answer");
	pktbuf_free(&pb);
	c->admin_waiting = false;
	sbuf_resume(&c->sbuf);
}

/* The answer to a command that waited, for the admin on whichever worker holds it. */
struct done_arg {
	uint64_t conn_id;
	const char *tag;                /* CommandComplete, or NULL: */
	const char *sqlstate, *message; /* an ErrorResponse */
	bool answered;
};

static void answer_waiting(struct conn *c, const struct done_arg *da)
{
	struct pktbuf pb;

	pktbuf_init(&pb, 1024);
	if (da->tag != NULL)
		pktbuf_write_command_complete(&pb, da->tag);
	else
		pktbuf_write_error(&pb, "ERROR", da->sqlstate, da->message, NULL, NULL);
	pktbuf_write_ready(&pb, 'I');
	if (!sbuf_queue_pktbuf(&c->sbuf, &pb))
		slog_debug(c, "could not queue the console answer");
	pktbuf_free(&pb);
	c->admin_waiting = false;
	sbuf_resume(&c->sbuf);
}

static void done_worker(struct bouncer *w, void *arg)
{
	struct done_arg *da = arg;
	struct conn *c;

	if (da->answered || (c = admin_find_client(w, da->conn_id)) == NULL)
		return;
	da->answered = true;
	if (c->admin_waiting)
		answer_waiting(c, da);
}

static void answer_done(struct bouncer *b, struct done_arg *da)
{
	struct conn *c;

	if (da->conn_id == 0)
		return;
	/* mostly the admin is on this worker (control's waits are kept where the admin is) */
	c = admin_find_client(b, da->conn_id);
	if (c != NULL) {
		if (c->admin_waiting)
			answer_waiting(c, da);
		return;
	}
	workers_each(b, done_worker, da);
}

void admin_command_done(struct bouncer *b, uint64_t conn_id, const char *tag)
{
	struct done_arg da = {conn_id, tag, NULL, NULL, false};

	answer_done(b, &da);
}

/* ---- the views' rows, for the metrics endpoint ---- */

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/*
 * Reads back the RowDescription and DataRows that a SHOW built: the rows are exactly what a
 * console client would get. Values are copied out to be NUL-terminated.
 */
static bool decode_rows(const struct pktbuf *pb, admin_rows_cb cb, void *arg)
{
	const char *names[ADMIN_MAX_COLS];
	const char *vals[ADMIN_MAX_COLS];
	char *copies[ADMIN_MAX_COLS] = {NULL};
	int ncols = -1;
	size_t pos = 0;
	bool ok = true;

	while (ok && pos + 5 <= pb->len) {
		uint8_t type = pb->data[pos];
		uint32_t len = get32(pb->data + pos + 1);
		const uint8_t *body = pb->data + pos + 5, *end;
		const uint8_t *p = body;

		if (len < 4 || pos + 1 + len > pb->len)
			return false;
		end = body + len - 4;
		pos += 1 + len;
		if (type == PQMSG_ERROR_RESPONSE)
			return false;
		if (type == PQMSG_ROW_DESCRIPTION) {
			if (end - p < 2)
				return false;
			ncols = p[0] << 8 | p[1];
			p += 2;
			if (ncols > ADMIN_MAX_COLS)
				return false;
			for (int i = 0; i < ncols; i++) {
				const uint8_t *z = memchr(p, 0, (size_t)(end - p));
				if (z == NULL || end - z < 19)
					return false;
				names[i] = (const char *)p;
				p = z + 19;
			}
		} else if (type == PQMSG_DATA_ROW) {
			int n;
			if (ncols < 0 || end - p < 2)
				return false;
			n = p[0] << 8 | p[1];
			p += 2;
			if (n != ncols)
				return false;
			for (int i = 0; i < n && ok; i++) {
				uint32_t vlen;
				if (end - p < 4) {
					ok = false;
					break;
				}
				vlen = get32(p);
				p += 4;
				if (vlen == 0xFFFFFFFFu) {
					vals[i] = NULL;
					continue;
				}
				if ((size_t)(end - p) < vlen ||
				    (copies[i] = malloc(vlen + 1)) == NULL) {
					ok = false;
					break;
				}
				memcpy(copies[i], p, vlen);
				copies[i][vlen] = '\0';
				vals[i] = copies[i];
				p += vlen;
			}
			if (ok)
				cb(arg, n, names, vals);
			for (int i = 0; i < n; i++) {
				free(copies[i]);
				copies[i] = NULL;
			}
		}
	}
	return ok && ncols >= 0;
}

bool admin_show_rows(struct bouncer *b, const char *view, admin_rows_cb cb, void *arg)
{
	struct reply r;
	bool ok;

	memset(&r, 0, sizeof(r));
	r.b = b;
	r.query = view;
	pktbuf_init(&r.pb, ADMIN_REPLY_MAX);
	cmd_show(&r, view, false);
	ok = !pktbuf_failed(&r.pb) && decode_rows(&r.pb, cb, arg);
	pktbuf_free(&r.pb);
	return ok;
}

void admin_command_failed(struct bouncer *b, uint64_t conn_id, const char *sqlstate,
                          const char *message)
{
	struct done_arg da = {conn_id, NULL, sqlstate, message, false};

	answer_done(b, &da);
}

/* ---- views registry and set-up ---- */

bool admin_register_view(struct bouncer *b, const char *name, const char *const *columns,
                         admin_view_fill fill, void *ctx)
{
	struct admin *a = b->admin;
	struct admin_view *v = NULL;
	int ncols = 0;

	if (name == NULL || columns == NULL || fill == NULL || strlen(name) >= sizeof(v->name))
		return false;
	while (columns[ncols] != NULL)
		ncols++;
	if (ncols == 0 || ncols > ADMIN_MAX_COLS)
		return false;
	for (int i = 0; i < a->nviews; i++)
		if (strcasecmp(a->views[i].name, name) == 0)
			v = &a->views[i];
	if (v == NULL) {
		if (a->nviews == ADMIN_MAX_VIEWS)
			return false;
		v = &a->views[a->nviews++];
	}
	snprintf(v->name, sizeof(v->name), "%s", name);
	v->columns = columns;
	v->ncols = ncols;
	v->fill = fill;
	v->ctx = ctx;
	return true;
}

bool admin_init(struct bouncer *b)
{
	struct admin *a = calloc(1, sizeof(*a));
	struct pool *p;

	if (a == NULL)
		return false;
	p = calloc(1, sizeof(*p));
	if (p == NULL) {
		free(a);
		return false;
	}
	p->b = b;
	snprintf(p->db_name, sizeof(p->db_name), "pgbouncer");
	snprintf(p->user_name, sizeof(p->user_name), "pgbouncer");
	list_init(&p->head);
	list_init(&p->active_clients);
	list_init(&p->waiting_clients);
	list_init(&p->login_clients);
	list_init(&p->idle_servers);
	list_init(&p->active_servers);
	list_init(&p->used_servers);
	list_init(&p->tested_servers);
	list_init(&p->login_servers);
	list_init(&p->auth_waiting);
	p->pool_mode = POOL_STATEMENT;
	p->pool_size = 2;
	p->welcome_ready = true;
	p->is_admin = true;
	a->pool = p;
	b->admin = a;
	return true;
}

void admin_free(struct bouncer *b)
{
	struct admin *a = b->admin;
	struct list *it, *tmp;

	if (a == NULL)
		return;
	list_for_each_safe(it, tmp, &a->pool->active_clients)
	        conn_retire(list_entry(it, struct conn, head));
	list_for_each_safe(it, tmp, &a->pool->login_clients)
	        conn_retire(list_entry(it, struct conn, head));
	free(a->pool);
	free(a);
	b->admin = NULL;
}
