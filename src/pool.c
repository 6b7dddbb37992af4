/*
 * pool — see include/pool.h. Waiting clients are served strictly in arrival order: a server that
 * becomes ready goes to the head of waiting_clients before it may go idle.
 */
#include "pool.h"

#include <stdlib.h>
#include <string.h>

#include "bouncer.h"
#include "client.h"
#include "config.h"
#include "server.h"
#include "userlist.h"

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

struct pool *pool_get(struct bouncer *b, const char *db_name, const char *user, const char **err)
{
	const struct config *cfg = b->cfg;
	const struct cf_database *db;
	const struct cf_user *cu;
	struct list *it;
	struct pool *pool;
	const char *pw = NULL;

	list_for_each(it, &b->pools)
	{
		pool = list_entry(it, struct pool, head);
		if (strcmp(pool->db_name, db_name) == 0 && strcmp(pool->user_name, user) == 0)
			return pool;
	}
	db = config_find_database(cfg, db_name);
	if (db == NULL) {
		*err = "no such database";
		return NULL;
	}
	cu = config_find_user(cfg, user);

	pool = calloc(1, sizeof(*pool));
	if (pool == NULL) {
		*err = "out of memory";
		return NULL;
	}
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

	pool->host = dup_or_empty(db->host[0] ? db->host : cfg->unix_socket_dir);
	pool->port = db->port;
	pool->server_db = dup_or_empty(db->dbname[0] ? db->dbname : db_name);
	pool->server_user = dup_or_empty(db->user[0] ? db->user : user);
	if (db->user[0] && db->password[0])
		pw = db->password;
	else if (b->users != NULL)
		pw = userlist_get_password(b->users, pool->server_user);
	pool->server_password = dup_or_empty(pw);
	pool->connect_query = dup_or_empty(db->connect_query);
	if (pool->host == NULL || pool->server_db == NULL || pool->server_user == NULL ||
	    pool->server_password == NULL || pool->connect_query == NULL)
		goto oom;
	if ((db->client_encoding[0] &&
	     !param_set_value(&pool->server_startup, "client_encoding", db->client_encoding)) ||
	    (db->datestyle[0] &&
	     !param_set_value(&pool->server_startup, "datestyle", db->datestyle)) ||
	    (db->timezone[0] &&
	     !param_set_value(&pool->server_startup, "timezone", db->timezone)) ||
	    (db->application_name[0] &&
	     !param_set_value(&pool->server_startup, "application_name", db->application_name)))
		goto oom;

	pool->pool_mode = cfg->pool_mode;
	if (db->pool_mode >= 0)
		pool->pool_mode = db->pool_mode;
	if (cu != NULL && cu->pool_mode >= 0)
		pool->pool_mode = cu->pool_mode;
	pool->pool_size = cfg->default_pool_size;
	if (db->pool_size >= 0)
		pool->pool_size = db->pool_size;
	if (cu != NULL && cu->pool_size >= 0)
		pool->pool_size = cu->pool_size;

	list_append(&b->pools, &pool->head);
	return pool;
oom:
	pool_free(pool);
	*err = "out of memory";
	return NULL;
}

void pool_free(struct pool *pool)
{
	list_del(&pool->head);
	free(pool->host);
	free(pool->server_db);
	free(pool->server_user);
	free(pool->server_password);
	free(pool->connect_query);
	param_clear(&pool->server_startup);
	param_clear(&pool->welcome);
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

void pool_client_logged_in(struct pool *pool, struct conn *client)
{
	list_del(&client->head);
	client->pool = pool;
	if (pool->welcome_ready) {
		conn_set_state(client, CL_ACTIVE);
		client_send_welcome(client);
		return;
	}
	conn_set_state(client, CL_WAITING_LOGIN);
	pool_fill(pool);
}

void pool_fill(struct pool *pool)
{
	size_t want = list_count(&pool->waiting_clients);
	size_t starting = list_count(&pool->login_servers);

	if (!pool->welcome_ready && !list_empty(&pool->login_clients) && want == 0)
		want = 1;
	while (want > starting && pool_server_count(pool) < pool->pool_size) {
		if (!server_launch(pool))
			break;
		starting++;
	}
}

void pool_request_server(struct pool *pool, struct conn *client)
{
	struct list *first = list_first(&pool->idle_servers);

	if (first != NULL && list_empty(&pool->waiting_clients)) {
		server_link(list_entry(first, struct conn, head), client);
		return;
	}
	client->request_time = bouncer_now_usec();
	conn_set_state(client, CL_WAITING);
	pool_fill(pool);
}

void pool_server_ready(struct pool *pool, struct conn *server)
{
	struct list *it, *tmp;
	struct list *first;

	if (!pool->welcome_ready) {
		pool->welcome_ready = true;
		list_for_each_safe(it, tmp, &pool->login_clients)
		{
			struct conn *c = list_entry(it, struct conn, head);
			conn_set_state(c, CL_ACTIVE);
			client_send_welcome(c);
		}
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
}
