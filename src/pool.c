/*
 * pool — see include/pool.h. Waiting clients are served strictly in arrival order: a server that
 * becomes ready goes to the head of waiting_clients before it may go idle.
 */
#include "pool.h"

#include <event2/event.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "auth.h"
#include "bouncer.h"
#include "client.h"
#include "config.h"
#include "control.h"
#include "prepared.h"
#include "server.h"
#include "stats.h"
#include "userlist.h"
#include "workers.h"

static void janitor_tick(void *arg);

static char *dup_or_empty(const char *s)
{
	return strdup(s != NULL ? s : "");
}

static void copy_name(char *dst, size_t size, const char *src)
{
	size_t n = strlen(src);

	if (n >= size)
		n = size - 1;
	memcpy(dst, src, n);
	dst[n] = '\0';
}

/*
 * Copies how to reach and log into the server from the [databases] entry (and the auth file).
 * False when out of memory; the pool keeps its old values then. (A RELOAD that changes them is
 * handled by control.c, which tags the old servers close_needed.)
 */
static bool load_conninfo(struct pool *pool, const struct cf_database *db)
{
	const struct config *cfg = pool->b->cfg;
	const char *pw = NULL;
	char *host, *server_db, *server_user, *password, *connect_query;
	struct param_set startup = {0};
	bool ok;

	/* the auth pool logs in as auth_user whatever user the entry forces */
	bool forced = db->user[0] && (!pool->auth_pool || strcmp(db->user, pool->user_name) == 0);

	host = dup_or_empty(db->host[0] ? db->host : cfg->unix_socket_dir);
	server_db = dup_or_empty(db->dbname[0] ? db->dbname : pool->db_name);
	server_user = dup_or_empty(forced ? db->user : pool->user_name);
	if (forced && db->password[0])
		pw = db->password;
	else if (pool->b->users != NULL && server_user != NULL)
		pw = userlist_get_password(pool->b->users, server_user);
	password = dup_or_empty(pw);
	connect_query = dup_or_empty(db->connect_query);
	ok = host != NULL && server_db != NULL && server_user != NULL && password != NULL &&
	     connect_query != NULL;
	if (ok && ((db->client_encoding[0] &&
	            !param_set_value(&startup, "client_encoding", db->client_encoding)) ||
	           (db->datestyle[0] && !param_set_value(&startup, "datestyle", db->datestyle)) ||
	           (db->timezone[0] && !param_set_value(&startup, "timezone", db->timezone)) ||
	           (db->application_name[0] &&
	            !param_set_value(&startup, "application_name", db->application_name))))
		ok = false;
	if (!ok) {
		free(host);
		free(server_db);
		free(server_user);
		free(password);
		free(connect_query);
		param_clear(&startup);
		return false;
	}
	free(pool->host);
	free(pool->server_db);
	free(pool->server_user);
	free(pool->server_password);
	free(pool->connect_query);
	param_clear(&pool->server_startup);
	pool->host = host;
	pool->port = db->port;
	pool->server_db = server_db;
	pool->server_user = server_user;
	pool->server_password = password;
	pool->connect_query = connect_query;
	pool->server_startup = startup;
	return true;
}

struct pool *pool_find(struct bouncer *b, const char *db_name, const char *user)
{
	struct list *it;

	list_for_each(it, &b->pools)
	{
		struct pool *pool = list_entry(it, struct pool, head);
		if (strcmp(pool->db_name, db_name) == 0 && strcmp(pool->user_name, user) == 0)
			return pool;
	}
	return NULL;
}

static struct pool *get_pool(struct bouncer *b, const char *db_name, const char *user,
                             bool auth_pool, const char **err)
{
	const struct config *cfg = b->cfg;
	const struct cf_database *db;
	struct pool *pool = pool_find(b, db_name, user);

	if (pool != NULL) {
		pool_refresh_settings(pool);
		return pool;
	}
	db = config_find_database(cfg, db_name);
	if (db == NULL) {
		*err = "no such database";
		return NULL;
	}

	pool = calloc(1, sizeof(*pool));
	if (pool == NULL) {
		*err = "out of memory";
		return NULL;
	}
	list_init(&pool->head);
	pool->b = b;
	copy_name(pool->db_name, sizeof(pool->db_name), db_name);
	copy_name(pool->user_name, sizeof(pool->user_name), user);
	list_init(&pool->active_clients);
	list_init(&pool->waiting_clients);
	list_init(&pool->login_clients);
	list_init(&pool->idle_servers);
	list_init(&pool->active_servers);
	list_init(&pool->used_servers);
	list_init(&pool->tested_servers);
	list_init(&pool->login_servers);
	list_init(&pool->auth_waiting);
	pool->auth_pool = auth_pool;

	if (!load_conninfo(pool, db))
		goto oom;
	pool->autodb = strcmp(db->name, "*") == 0;
	if (b->workers != NULL) {
		/* the server limits count the servers of every worker */
		pool->lim_pool = workers_limit_get(b, 'p', db_name, user);
		pool->lim_db = workers_limit_get(b, 'd', db_name, NULL);
		pool->lim_user = workers_limit_get(b, 'u', NULL, user);
		pool->lim_db_clients = workers_limit_get(b, 'D', db_name, NULL);
		pool->lim_user_clients = workers_limit_get(b, 'U', NULL, user);
		if (pool->lim_pool == NULL || pool->lim_db == NULL || pool->lim_user == NULL ||
		    pool->lim_db_clients == NULL || pool->lim_user_clients == NULL)
			goto oom;
	}
	pool_refresh_settings(pool);
	pool->ps = ps_registry_new();
	if (pool->ps == NULL)
		goto oom;
	/* a pool without its janitor would enforce none of its timeouts */
	tick_init(&pool->janitor, janitor_tick, pool);
	if (!tick_start(b, &pool->janitor, POOL_JANITOR_USEC))
		goto oom;
	pool->janitor_ready = true;

	list_append(&b->pools, &pool->head);
	return pool;
oom:
	pool_free(pool);
	*err = "out of memory";
	return NULL;
}

struct pool *pool_get(struct bouncer *b, const char *db_name, const char *user, const char **err)
{
	return get_pool(b, db_name, user, false, err);
}

struct pool *pool_get_auth(struct bouncer *b, const char *db_name, const char *auth_user,
                           const char **err)
{
	/*
	 * An existing pool of that name logs in as auth_user already, unless its entry forces
	 * another user; then no client ever uses a pool named for auth_user (their pools are named
	 * for the forced user), so it can only be one made here.
	 */
	return get_pool(b, db_name, auth_user, true, err);
}

void pool_free(struct pool *pool)
{
	if (pool->janitor_ready) {
		tick_stop(pool->b, &pool->janitor);
		pool->janitor_ready = false;
	}
	ps_registry_free(pool->ps);
	list_del(&pool->head);
	if (pool->b->workers != NULL) {
		workers_limit_put(pool->b, pool->lim_pool);
		workers_limit_put(pool->b, pool->lim_db);
		workers_limit_put(pool->b, pool->lim_user);
		workers_limit_put(pool->b, pool->lim_db_clients);
		workers_limit_put(pool->b, pool->lim_user_clients);
	}
	free(pool->host);
	free(pool->server_db);
	free(pool->server_user);
	free(pool->server_password);
	auth_pool_free(pool);
	free(pool->connect_query);
	param_clear(&pool->server_startup);
	param_clear(&pool->welcome);
	param_drop(pool->welcome_for);
	free(pool->welcome_msgs);
	free(pool);
}

struct list *pool_state_list(struct bouncer *b, struct pool *pool, enum conn_state st)
{
	if (st == CONN_JUSTFREE)
		return &b->justfree;
	if (pool == NULL)
		return &b->login_clients;
	switch (st) {
	case CL_LOGIN:
		return &b->login_clients;
	case CL_WAITING_LOGIN:
		return &pool->login_clients;
	case CL_ACTIVE:
		return &pool->active_clients;
	case CL_WAITING:
		return &pool->waiting_clients;
	case SV_LOGIN:
		return &pool->login_servers;
	case SV_IDLE:
		return &pool->idle_servers;
	case SV_ACTIVE:
		return &pool->active_servers;
	case SV_USED:
		return &pool->used_servers;
	case SV_TESTED:
		return &pool->tested_servers;
	case CONN_JUSTFREE:
		break;
	}
	return &b->justfree;
}

int pool_server_count(const struct pool *pool)
{
	return (int)(list_count(&pool->idle_servers) + list_count(&pool->active_servers) +
	             list_count(&pool->used_servers) + list_count(&pool->tested_servers) +
	             list_count(&pool->login_servers));
}

int pool_client_count(const struct pool *pool)
{
	return (int)(list_count(&pool->login_clients) + list_count(&pool->active_clients) +
	             list_count(&pool->waiting_clients));
}

void pool_refresh_settings(struct pool *pool)
{
	const struct config *cfg = pool->b->cfg;
	const struct cf_database *db = config_find_database(cfg, pool->db_name);
	const struct cf_user *cu = config_find_user(cfg, pool->user_name);

	pool->pool_mode = cfg->pool_mode;
	pool->pool_size = cfg->default_pool_size;
	pool->min_pool_size = cfg->min_pool_size;
	pool->reserve_pool_size = cfg->reserve_pool_size;
	pool->max_db_connections = cfg->max_db_connections;
	pool->max_user_connections = cfg->max_user_connections;
	pool->max_db_client_connections = cfg->max_db_client_connections;
	pool->max_user_client_connections = cfg->max_user_client_connections;
	pool->server_lifetime = cfg->server_lifetime;
	pool->query_timeout = cfg->query_timeout;
	pool->query_wait_timeout = cfg->query_wait_timeout;
	pool->idle_transaction_timeout = cfg->idle_transaction_timeout;
	pool->transaction_timeout = cfg->transaction_timeout;
	pool->client_idle_timeout = cfg->client_idle_timeout;
	if (db != NULL) {
		pool->forced_user = db->user[0] != '\0' && !pool->auth_pool;
		if (db->pool_mode >= 0)
			pool->pool_mode = db->pool_mode;
		if (db->pool_size >= 0)
			pool->pool_size = db->pool_size;
		if (db->min_pool_size >= 0)
			pool->min_pool_size = db->min_pool_size;
		if (db->reserve_pool_size >= 0)
			pool->reserve_pool_size = db->reserve_pool_size;
		if (db->max_db_connections >= 0)
			pool->max_db_connections = db->max_db_connections;
		if (db->max_db_client_connections >= 0)
			pool->max_db_client_connections = db->max_db_client_connections;
		if (db->server_lifetime >= 0)
			pool->server_lifetime = db->server_lifetime;
		if (db->query_wait_timeout >= 0)
			pool->query_wait_timeout = db->query_wait_timeout;
	}
	if (cu != NULL) {
		if (cu->pool_mode >= 0)
			pool->pool_mode = cu->pool_mode;
		if (cu->pool_size >= 0)
			pool->pool_size = cu->pool_size;
		if (cu->reserve_pool_size >= 0)
			pool->reserve_pool_size = cu->reserve_pool_size;
		if (cu->max_user_connections >= 0)
			pool->max_user_connections = cu->max_user_connections;
		if (cu->max_user_client_connections >= 0)
			pool->max_user_client_connections = cu->max_user_client_connections;
		if (cu->query_timeout >= 0)
			pool->query_timeout = cu->query_timeout;
		if (cu->query_wait_timeout >= 0)
			pool->query_wait_timeout = cu->query_wait_timeout;
		if (cu->idle_transaction_timeout >= 0)
			pool->idle_transaction_timeout = cu->idle_transaction_timeout;
		if (cu->transaction_timeout >= 0)
			pool->transaction_timeout = cu->transaction_timeout;
		if (cu->client_idle_timeout >= 0)
			pool->client_idle_timeout = cu->client_idle_timeout;
	}
}

/* Servers of every pool of the same database (same_db) or of the same user. */
static int count_servers_like(const struct pool *pool, bool same_db)
{
	struct list *it;
	int n = 0;

	list_for_each(it, &pool->b->pools)
	{
		const struct pool *p = list_entry(it, struct pool, head);
		if (same_db ? strcmp(p->db_name, pool->db_name) == 0
		            : strcmp(p->user_name, pool->user_name) == 0)
			n += pool_server_count(p);
	}
	return n;
}

static int count_clients_like(const struct pool *pool, bool same_db)
{
	struct list *it;
	int n = 0;

	list_for_each(it, &pool->b->pools)
	{
		const struct pool *p = list_entry(it, struct pool, head);
		if (same_db ? strcmp(p->db_name, pool->db_name) == 0
		            : strcmp(p->user_name, pool->user_name) == 0)
			n += pool_client_count(p);
	}
	return n;
}

/* With several workers: counts client in its database's and user's shared client counts. */
static bool admit_shared(struct pool *pool, struct conn *client, char *msg, size_t msgsize)
{
	int db_max = pool->max_db_client_connections > 0 ? pool->max_db_client_connections : INT_MAX;
	int user_max =
	        pool->max_user_client_connections > 0 ? pool->max_user_client_connections : INT_MAX;

	if (!workers_limit_take(pool->lim_db_clients, db_max)) {
		snprintf(msg, msgsize, "no more connections allowed (max_db_client_connections)");
		return false;
	}
	if (!workers_limit_take(pool->lim_user_clients, user_max)) {
		workers_limit_give(pool->lim_db_clients);
		snprintf(msg, msgsize, "no more connections allowed (max_user_client_connections)");
		return false;
	}
	client->pool_counted = true;
	return true;
}

bool pool_client_allowed(struct pool *pool, struct conn *client, char *msg, size_t msgsize)
{
	/* with one worker the pools' own lists are the count; with several, shared counts */
	if (pool->b->workers != NULL)
		return admit_shared(pool, client, msg, msgsize);
	if (pool->max_db_client_connections > 0 &&
	    count_clients_like(pool, true) >= pool->max_db_client_connections) {
		snprintf(msg, msgsize, "no more connections allowed (max_db_client_connections)");
		return false;
	}
	if (pool->max_user_client_connections > 0 &&
	    count_clients_like(pool, false) >= pool->max_user_client_connections) {
		snprintf(msg, msgsize, "no more connections allowed (max_user_client_connections)");
		return false;
	}
	return true;
}

void pool_client_uncount(struct conn *client)
{
	if (!client->pool_counted)
		return;
	client->pool_counted = false;
	workers_limit_give(client->pool->lim_db_clients);
	workers_limit_give(client->pool->lim_user_clients);
}

/*
 * Closes the idle server that has been idle longest in another pool of the same database (or
 * user), so that a pool with waiting clients can open one within max_db_connections.
 */
static bool evict_idle_server(struct pool *pool, bool same_db)
{
	struct list *it;
	struct conn *victim = NULL;

	list_for_each(it, &pool->b->pools)
	{
		struct pool *p = list_entry(it, struct pool, head);
		struct list *first;
		struct conn *s;

		if (p == pool || (same_db ? strcmp(p->db_name, pool->db_name) != 0
		                          : strcmp(p->user_name, pool->user_name) != 0))
			continue;
		first = list_first(&p->idle_servers);
		if (first == NULL)
			continue;
		s = list_entry(first, struct conn, head);
		if (victim == NULL || s->request_time < victim->request_time)
			victim = s;
	}
	if (victim == NULL)
		return false;
	server_close(victim,
	             same_db ? "evicted (max_db_connections)" : "evicted (max_user_connections)");
	return true;
}

/*
 * Whether the db-wide and user-wide server limits leave room for one more server. A pool with
 * waiting clients may evict an idle server of a sibling pool to make room; warming up may not.
 */
static bool limits_allow_server(struct pool *pool, bool evict)
{
	if (pool->max_db_connections > 0 &&
	    count_servers_like(pool, true) >= pool->max_db_connections &&
	    (!evict || !evict_idle_server(pool, true)))
		return false;
	if (pool->max_user_connections > 0 &&
	    count_servers_like(pool, false) >= pool->max_user_connections &&
	    (!evict || !evict_idle_server(pool, false)))
		return false;
	return true;
}

/* A client that waited reserve_pool_timeout may use the reserve pool. */
static bool reserve_allowed(const struct pool *pool, uint64_t now)
{
	const struct list *first = list_first(&pool->waiting_clients);
	const struct conn *c;

	if (pool->reserve_pool_size <= 0 || first == NULL)
		return false;
	c = list_entry(first, struct conn, head);
	return now - c->request_time >= (uint64_t)pool->b->cfg->reserve_pool_timeout;
}

void pool_client_logged_in(struct pool *pool, struct conn *client)
{
	if (client->admin) {
		admin_client_login(client);
		return;
	}
	list_del(&client->head);
	client->pool = pool;
	client->request_time = bouncer_now_usec();
	if (pool->welcome_ready) {
		conn_set_state(client, CL_ACTIVE);
		client_send_welcome(client);
		return;
	}
	conn_set_state(client, CL_WAITING_LOGIN);
	pool_fill(pool);
}

/* The pool has its welcome (the server's ParameterStatus values): its logins are done. */
static void welcome_logins(struct pool *pool)
{
	struct list *it, *tmp;

	pool->welcome_ready = true;
	list_for_each_safe(it, tmp, &pool->login_clients)
	{
		struct conn *c = list_entry(it, struct conn, head);
		stats_login_waited(c);
		conn_set_state(c, CL_ACTIVE);
		client_send_welcome(c);
	}
}

/* ---- several workers: the server limits are counted across them ---- */

/* What a worker with waiting clients asks the others for: an idle server of theirs closed. */
struct idle_ask {
	char kind;         /* 'p' this pool, 'd' its database, 'u' its user */
	bool needy;        /* the asker holds less than its share of the pool */
	bool want_welcome; /* the asker's pool has logins waiting for a first server */
	int from;
	char db[64], user[64];
};

/*
 * A pool's welcome, sent to a worker whose pool of the same name has logins waiting for a
 * server it cannot open (the pool is full elsewhere): they log in with it and wait for a server
 * at their first query, as they would with one worker.
 */
struct welcome_msg {
	char db[64], user[64];
	size_t len;
	char pairs[]; /* name NUL value NUL ..., len bytes */
};

#define WELCOME_MAX 16384

static void welcome_given(struct bouncer *w, void *arg)
{
	const struct welcome_msg *m = arg;
	struct pool *pool = pool_find(w, m->db, m->user);

	if (pool == NULL || pool->welcome_ready)
		return;
	param_clear(&pool->welcome);
	for (size_t at = 0; at < m->len;) {
		const char *name = m->pairs + at;
		const char *value = name + strlen(name) + 1;
		if (!param_set_value(&pool->welcome, name, value)) {
			param_clear(&pool->welcome); /* out of memory: a server's login brings it */
			return;
		}
		at = (size_t)(value + strlen(value) + 1 - m->pairs);
	}
	welcome_logins(pool);
}

static void send_welcome(struct bouncer *w, const struct pool *pool, int to)
{
	struct welcome_msg *m;
	size_t len = 0;

	for (int i = 0; i < pool->welcome.n; i++)
		len += strlen(pool->welcome.p[i].name) + strlen(pool->welcome.p[i].value) + 2;
	if (len > WELCOME_MAX || (m = calloc(1, sizeof(*m) + len)) == NULL)
		return;
	snprintf(m->db, sizeof(m->db), "%s", pool->db_name);
	snprintf(m->user, sizeof(m->user), "%s", pool->user_name);
	for (int i = 0; i < pool->welcome.n; i++) {
		size_t n = strlen(pool->welcome.p[i].name) + 1;
		size_t v = strlen(pool->welcome.p[i].value) + 1;
		memcpy(m->pairs + m->len, pool->welcome.p[i].name, n);
		memcpy(m->pairs + m->len + n, pool->welcome.p[i].value, v);
		m->len += n + v;
	}
	(void)workers_post(w, to, welcome_given, m);
}

/* A worker's share of a pool's servers: the size split evenly, rounded up. */
static int pool_share(const struct pool *pool)
{
	int n = workers_count(pool->b);

	return (pool->pool_size + n - 1) / n;
}

static bool ask_matches(const struct idle_ask *a, const struct pool *p)
{
	switch (a->kind) {
	case 'p':
		return strcmp(p->db_name, a->db) == 0 && strcmp(p->user_name, a->user) == 0;
	case 'd':
		return strcmp(p->db_name, a->db) == 0;
	default:
		return strcmp(p->user_name, a->user) == 0;
	}
}

/* On the asking worker: a server was closed for it; its pool may launch one now. */
static void idle_freed(struct bouncer *w, void *arg)
{
	const struct idle_ask *a = arg;
	struct pool *pool = pool_find(w, a->db, a->user);

	/* idle_asked stays: one ask per janitor look, so servers do not go to and fro */
	if (pool != NULL)
		pool_fill(pool);
}

static void tell_freed(struct bouncer *w, int to, const char *db, const char *user)
{
	struct idle_ask *a = calloc(1, sizeof(*a));

	if (a == NULL)
		return;
	snprintf(a->db, sizeof(a->db), "%s", db);
	snprintf(a->user, sizeof(a->user), "%s", user);
	(void)workers_post(w, to, idle_freed, a);
}

/*
 * On another worker: closes its longest idle server that matches, so the asking worker can open
 * one. With none idle, the pool itself (kind 'p') owes an asker below its share its next
 * released server.
 */
static void idle_wanted(struct bouncer *w, void *arg)
{
	const struct idle_ask *a = arg;
	struct conn *victim = NULL;
	struct list *it;

	if (a->want_welcome) {
		struct pool *p = pool_find(w, a->db, a->user);
		if (p != NULL && p->welcome_ready)
			send_welcome(w, p, a->from);
	}

	list_for_each(it, &w->pools)
	{
		struct pool *p = list_entry(it, struct pool, head);
		struct list *first = list_first(&p->idle_servers);
		struct conn *s;

		if (first == NULL || !ask_matches(a, p))
			continue;
		s = list_entry(first, struct conn, head);
		if (victim == NULL || s->request_time < victim->request_time)
			victim = s;
	}
	if (victim != NULL) {
		server_close(victim, "released for another worker");
		tell_freed(w, a->from, a->db, a->user);
		return;
	}
	if (a->kind == 'p' && a->needy) {
		struct pool *p = pool_find(w, a->db, a->user);
		if (p != NULL) {
			p->lend = true;
			p->lend_to = a->from;
		}
	}
}

/*
 * Asks every other worker once (until the janitor's next look) for an idle server, and, when
 * this worker holds less than its share of the pool, for the next one they release.
 */
static void ask_idle(struct pool *pool, char kind)
{
	struct bouncer *b = pool->b;
	bool needy = kind == 'p' && pool_server_count(pool) < pool_share(pool);

	if (pool->idle_asked)
		return;
	pool->idle_asked = true;
	for (int i = 0; i < workers_count(b); i++) {
		struct idle_ask *a;

		if (i == worker_index(b))
			continue;
		a = calloc(1, sizeof(*a));
		if (a == NULL)
			return;
		a->kind = kind;
		a->needy = needy;
		a->want_welcome = !pool->welcome_ready && !list_empty(&pool->login_clients);
		a->from = worker_index(b);
		snprintf(a->db, sizeof(a->db), "%s", pool->db_name);
		snprintf(a->user, sizeof(a->user), "%s", pool->user_name);
		(void)workers_post(b, i, idle_wanted, a);
	}
}

/*
 * Whether a released server of pool goes to the worker it owes one to: when no client waits
 * here, or when this worker holds more than its share of the pool. A server that has served no
 * client yet was opened for clients here, who will have it: lending it would let two workers
 * with waiting clients pass servers to and fro, a new connection each time.
 */
static bool lend_released(struct pool *pool, const struct conn *server)
{
	return pool->lend && server->served &&
	       (list_empty(&pool->waiting_clients) || pool_server_count(pool) > pool_share(pool));
}

/* Gives back the places held (POOL_LIMIT_* bits) in pool's shared server counts. */
static void give_back(struct pool *pool, uint8_t held)
{
	if (held & POOL_LIMIT_POOL)
		workers_limit_give(pool->lim_pool);
	if (held & POOL_LIMIT_DB)
		workers_limit_give(pool->lim_db);
	if (held & POOL_LIMIT_USER)
		workers_limit_give(pool->lim_user);
}

void pool_server_uncounted(struct conn *server)
{
	give_back(server->pool, server->limits_held);
	server->limits_held = 0;
}

/* Counts one more server in a shared count of max; a full one is asked about elsewhere. */
static bool take_shared(struct pool *pool, struct worker_limit *lim, int max, char kind, bool ask)
{
	if (workers_limit_take(lim, max))
		return true;
	/* an idle server of a sibling pool here frees a place at once */
	if (kind != 'p' && evict_idle_server(pool, kind == 'd') && workers_limit_take(lim, max))
		return true;
	if (ask)
		ask_idle(pool, kind);
	return false;
}

/*
 * Launches one server within the limits counted across the workers; for_clients (clients
 * wait) may use the reserve and ask other workers for room. False when none was launched.
 */
static bool launch_shared(struct pool *pool, uint64_t now, bool for_clients)
{
	int max = pool->pool_size;
	uint8_t held = 0;

	if (for_clients && pool->reserve_pool_size > 0 && reserve_allowed(pool, now))
		max += pool->reserve_pool_size;
	if (!take_shared(pool, pool->lim_pool, max, 'p', for_clients))
		return false;
	held |= POOL_LIMIT_POOL;
	if (workers_limit_count(pool->lim_pool) > pool->pool_size)
		log_info("taking connection from reserve_pool");
	if (pool->max_db_connections > 0) {
		if (!take_shared(pool, pool->lim_db, pool->max_db_connections, 'd', for_clients))
			goto undo;
		held |= POOL_LIMIT_DB;
	}
	if (pool->max_user_connections > 0) {
		if (!take_shared(pool, pool->lim_user, pool->max_user_connections, 'u',
		                 for_clients))
			goto undo;
		held |= POOL_LIMIT_USER;
	}
	/* server_launch() hands them to the server it makes (which gives them back when gone) */
	pool->launch_limits = held;
	if (server_launch(pool))
		return true;
	pool->launch_limits = 0; /* no server took them */
undo:
	give_back(pool, held);
	return false;
}

/* Launches one server if every limit allows it; false when none was launched. */
static bool launch_one(struct pool *pool, uint64_t now)
{
	const struct config *cfg = pool->b->cfg;
	int count = pool_server_count(pool);

	if (pool->b->shutting_down || control_pool_paused(pool) ||
	    config_find_database(cfg, pool->db_name) == NULL)
		return false;
	if (pool->last_login_failure != 0 && cfg->server_login_retry > 0 &&
	    now - pool->last_login_failure < (uint64_t)cfg->server_login_retry)
		return false;
	if (pool->b->workers != NULL)
		return launch_shared(pool, now, true);
	if (count >= pool->pool_size) {
		if (count >= pool->pool_size + pool->reserve_pool_size ||
		    !reserve_allowed(pool, now))
			return false;
		log_info("taking connection from reserve_pool");
	}
	if (!limits_allow_server(pool, true))
		return false;
	return server_launch(pool);
}

void pool_fill(struct pool *pool)
{
	size_t want = list_count(&pool->waiting_clients) + list_count(&pool->auth_waiting);
	size_t starting = list_count(&pool->login_servers) + list_count(&pool->tested_servers);
	uint64_t now = bouncer_now_usec();

	if (!pool->welcome_ready && !list_empty(&pool->login_clients) && want == 0)
		want = 1;
	while (want > starting) {
		if (!launch_one(pool, now))
			break;
		starting++;
	}
}

/* A server idle longer than server_check_delay is tested before a client gets it. */
static bool needs_check(const struct conn *server, uint64_t now)
{
	const struct config *cfg = server->b->cfg;

	if (cfg->server_check_query[0] == '\0')
		return false;
	return cfg->server_check_delay == 0 ||
	       now - server->request_time > (uint64_t)cfg->server_check_delay;
}

struct conn *pool_take_idle_server(struct pool *pool)
{
	uint64_t now = bouncer_now_usec();

	while (!list_empty(&pool->idle_servers) && !control_pool_paused(pool)) {
		/* LIFO keeps the hot backends busy and lets the others idle out; round robin
		 * spreads load evenly */
		struct list *node = pool->b->cfg->server_round_robin ? pool->idle_servers.next
		                                                     : pool->idle_servers.prev;
		struct conn *server = list_entry(node, struct conn, head);

		if (needs_check(server, now)) {
			server_check(server);
			continue;
		}
		return server;
	}
	return NULL;
}

void pool_request_server(struct pool *pool, struct conn *client)
{
	struct conn *server;

	client->request_time = bouncer_now_usec();
	/* clients already waiting come first */
	if (list_empty(&pool->waiting_clients)) {
		server = pool_take_idle_server(pool);
		if (server != NULL) {
			server_link(server, client);
			return;
		}
	}
	conn_set_state(client, CL_WAITING);
	pool_fill(pool);
}

void pool_server_ready(struct pool *pool, struct conn *server)
{
	struct list *first;

	server->request_time = bouncer_now_usec();
	if (control_server_close_needed(server)) {
		server_close(server, control_pool_paused(pool) ? "pause mode"
		                                               : "server needs to reconnect");
		return;
	}
	if (!pool->welcome_ready)
		welcome_logins(pool);
	/* a login waiting for auth_query is quick and holds the server only for the query */
	if (auth_pool_server_ready(pool, server))
		return;
	if (pool->b->workers != NULL && lend_released(pool, server)) {
		pool->lend = false;
		server_close(server, "released for another worker");
		tell_freed(pool->b, pool->lend_to, pool->db_name, pool->user_name);
		return;
	}
	first = list_first(&pool->waiting_clients);
	if (first != NULL) {
		server_link(server, list_entry(first, struct conn, head));
		return;
	}
	conn_set_state(server, SV_IDLE);
}

void pool_release_server(struct conn *client)
{
	struct conn *server = client->link;

	if (server == NULL)
		return;
	client->link = NULL;
	server->link = NULL;
	sbuf_set_dst(&client->sbuf, NULL);
	sbuf_set_dst(&server->sbuf, NULL);
	server_release(server);
}

void pool_login_failed(struct pool *pool, const char *sqlstate, const char *message)
{
	struct list *it, *tmp;

	snprintf(pool->last_login_error, sizeof(pool->last_login_error), "%s", message);
	snprintf(pool->last_login_sqlstate, sizeof(pool->last_login_sqlstate), "%s", sqlstate);
	pool->last_login_failure = bouncer_now_usec();
	if (pool_server_count(pool) > 0 && pool->welcome_ready)
		return;
	list_for_each_safe(it, tmp, &pool->login_clients)
	        client_fatal(list_entry(it, struct conn, head), sqlstate, message);
	list_for_each_safe(it, tmp, &pool->waiting_clients)
	        client_fatal(list_entry(it, struct conn, head), sqlstate, message);
	auth_pool_fail_waiting(pool, sqlstate, message);
}

static bool older_than(uint64_t now, uint64_t then, int64_t limit)
{
	return limit > 0 && now > then && now - then > (uint64_t)limit;
}

static void janitor_clients(struct pool *pool, uint64_t now)
{
	struct list *it, *tmp;

	list_for_each_safe(it, tmp, &pool->waiting_clients)
	{
		struct conn *c = list_entry(it, struct conn, head);
		if (older_than(now, c->request_time, pool->query_timeout))
			client_fatal(c, "08P01", "query_timeout");
		else if (older_than(now, c->request_time, pool->query_wait_timeout))
			client_fatal(c, "08P01", "query_wait_timeout");
	}
	if (pool->client_idle_timeout > 0) {
		list_for_each_safe(it, tmp, &pool->active_clients)
		{
			struct conn *c = list_entry(it, struct conn, head);
			if (c->link == NULL &&
			    older_than(now, c->request_time, pool->client_idle_timeout))
				client_fatal(c, "08P01", "client_idle_timeout");
		}
	}
}

/* More servers than pool_size and the reserve allow (a RELOAD made the pool smaller). */
static bool servers_over_size(const struct pool *pool)
{
	int count = pool->b->workers != NULL ? workers_limit_count(pool->lim_pool)
	                                     : pool_server_count(pool);

	return count > pool->pool_size + pool->reserve_pool_size;
}

static void janitor_servers(struct pool *pool, uint64_t now)
{
	const struct config *cfg = pool->b->cfg;
	struct list *it, *tmp;

	list_for_each_safe(it, tmp, &pool->active_servers)
	{
		struct conn *s = list_entry(it, struct conn, head);
		if (s->link == NULL) {
			/* an auth_query stuck (on a lock, say) would hold the auth pool's server */
			if (s->auth_query != NULL &&
			    older_than(now, s->request_time, pool->query_timeout)) {
				server_send_cancel(s);
				server_close(s, "query timeout");
			}
			continue;
		}
		if (s->close_needed && cfg->server_fast_close && server_is_ready(s) &&
		    s->txn_status == 'I') {
			server_close(s, "database configuration changed");
			continue;
		}
		if (!server_is_ready(s)) {
			if (older_than(now, s->link->request_time, pool->query_timeout)) {
				/* closing alone would leave the query running until it writes */
				server_send_cancel(s);
				server_close(s, "query timeout");
			}
		} else if (s->txn_status != 'I' &&
		           older_than(now, s->request_time, pool->idle_transaction_timeout)) {
			server_close(s, "idle transaction timeout");
			continue;
		}
		if (s->state == SV_ACTIVE && s->xact_start != 0 &&
		    older_than(now, s->xact_start, pool->transaction_timeout)) {
			server_send_cancel(s);
			server_close(s, "transaction timeout");
		}
	}
	list_for_each_safe(it, tmp, &pool->idle_servers)
	{
		struct conn *s = list_entry(it, struct conn, head);
		if (pool->server_lifetime > 0 &&
		    now - s->connect_time >= (uint64_t)pool->server_lifetime)
			server_close(s, "server lifetime over");
		else if (older_than(now, s->request_time, cfg->server_idle_timeout) &&
		         (pool->min_pool_size == 0 ||
		          pool_server_count(pool) > pool->min_pool_size))
			server_close(s, "server idle timeout");
		else if (pool->pool_size > 0 && servers_over_size(pool))
			server_close(s, "too many servers in the pool");
	}
	list_for_each_safe(it, tmp, &pool->login_servers)
	{
		struct conn *s = list_entry(it, struct conn, head);
		if (older_than(now, s->connect_time, cfg->server_connect_timeout))
			server_login_timeout(s);
	}
}

static void janitor_min_pool(struct pool *pool, uint64_t now)
{
	int count = pool_server_count(pool);

	if (pool->min_pool_size <= 0 || count >= pool->min_pool_size || count >= pool->pool_size)
		return;
	if (pool_client_count(pool) == 0 && !pool->forced_user)
		return;
	if (config_find_database(pool->b->cfg, pool->db_name) == NULL)
		return; /* removed by a RELOAD */
	if (pool->b->shutting_down || control_pool_paused(pool))
		return;
	if (pool->last_login_failure != 0 && pool->b->cfg->server_login_retry > 0 &&
	    now - pool->last_login_failure < (uint64_t)pool->b->cfg->server_login_retry)
		return;
	while (count < pool->min_pool_size && count < pool->pool_size) {
		if (pool->b->workers != NULL
		            ? !launch_shared(pool, now, false)
		            : !limits_allow_server(pool, false) || !server_launch(pool))
			break;
		count++;
	}
}

/* Clients still logging in already point at their pool. */
static bool pool_in_use(const struct pool *pool)
{
	struct list *it;

	if (pool_client_count(pool) > 0 || pool_server_count(pool) > 0 ||
	    !list_empty(&pool->auth_waiting))
		return true;
	list_for_each(it, &pool->b->login_clients)
	{
		if (list_entry(it, struct conn, head)->pool == pool)
			return true;
	}
	/* closed connections still point at their pool until they are freed */
	list_for_each(it, &pool->b->justfree)
	{
		if (list_entry(it, struct conn, head)->pool == pool)
			return true;
	}
	return false;
}

/* Runs outside the pool's own timer callback, so the pool can be freed. */
static void drop_pool(evutil_socket_t fd, short what, void *arg)
{
	struct pool *pool = arg;

	(void)fd;
	(void)what;
	if (pool_in_use(pool) || pool->b->shutting_down) {
		pool->unused_since = 0;
		if (!tick_start(pool->b, &pool->janitor, POOL_JANITOR_USEC))
			log_warning("pool %s/%s: cannot restart its janitor", pool->db_name,
			            pool->user_name);
		return;
	}
	if (config_find_database(pool->b->cfg, pool->db_name) == NULL)
		log_info("dropping pool %s/%s: its database was removed from the config",
		         pool->db_name, pool->user_name);
	else
		log_info("dropping database '%s' as it is an inactive auto-database",
		         pool->db_name);
	pool->janitor_ready = false;
	pool_free(pool);
}

/*
 * A pool goes away once nothing uses it when its database left the config at a RELOAD (whose
 * clients and servers were closed then), and after autodb_idle_timeout unused when it was made
 * from the auto-database. True when it is going.
 */
static bool janitor_drop(struct pool *pool, uint64_t now)
{
	int64_t limit = pool->b->cfg->autodb_idle_timeout;
	bool removed = config_find_database(pool->b->cfg, pool->db_name) == NULL;

	if (!removed && (!pool->autodb || limit <= 0))
		return false;
	if (pool_in_use(pool)) {
		pool->unused_since = 0;
		return false;
	}
	if (!removed) {
		if (pool->unused_since == 0) {
			pool->unused_since = now;
			return false;
		}
		if (now - pool->unused_since < (uint64_t)limit)
			return false;
	}
	tick_stop(pool->b, &pool->janitor);
	if (event_base_once(pool->b->base, -1, EV_TIMEOUT, drop_pool, pool, NULL) != 0) {
		if (!tick_start(pool->b, &pool->janitor, POOL_JANITOR_USEC))
			log_warning("pool %s/%s: cannot restart its janitor", pool->db_name,
			            pool->user_name);
		return false;
	}
	return true;
}

static void janitor_tick(void *arg)
{
	struct pool *pool = arg;
	uint64_t now = bouncer_now_usec();

	if (janitor_drop(pool, now))
		return;
	pool_refresh_settings(pool);
	/* an ask and a debt last one look: asked again while clients still wait */
	pool->idle_asked = false;
	pool->lend = false;
	janitor_clients(pool, now);
	janitor_servers(pool, now);
	/* the first pool also looks for databases a RELOAD added that want warming up */
	if (&pool->head == pool->b->pools.next && !pool->b->shutting_down)
		pool_prewarm(pool->b);
	if (!pool->b->shutting_down && !control_pool_paused(pool)) {
		janitor_min_pool(pool, now);
		pool_fill(pool);
	}
}

void pool_prewarm(struct bouncer *b)
{
	for (const struct cf_database *db = b->cfg->databases; db != NULL; db = db->next) {
		const char *err = NULL;
		struct pool *pool;

		if (strcmp(db->name, "*") == 0 || db->user[0] == '\0')
			continue;
		if ((db->min_pool_size >= 0 ? db->min_pool_size : b->cfg->min_pool_size) <= 0)
			continue;
		pool = pool_get(b, db->name, db->user, &err);
		if (pool == NULL)
			log_warning("cannot create the pool of %s: %s", db->name, err);
		else
			janitor_min_pool(pool, bouncer_now_usec());
	}
}
