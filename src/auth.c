/*
 * auth — see include/auth.h. The order of a login follows pgbouncer's set_pool() and
 * finish_set_pool(): database (an unknown one is remembered, not reported), user (auth_file,
 * then auth_query, else a mock), method (auth_type, or the hba file's verdict; md5 turns into
 * SCRAM for a SCRAM secret), the exchange, and only then the database check and the pool.
 */
#include "auth.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <pwd.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "admin.h"
#include "bouncer.h"
#include "client.h"
#include "config.h"
#include "conn.h"
#include "control.h"
#include "hba.h"
#include "list.h"
#include "md5pw.h"
#include "pktbuf.h"
#include "pool.h"
#include "proto.h"
#include "scram.h"
#include "server.h"
#include "tls.h"
#include "userlist.h"
#include "workers.h"

struct auth_files {
	struct hba *hba;     /* NULL unless auth_type=hba */
	struct ident *ident; /* NULL unless auth_ident_file is set */
	atomic_int refs;     /* holders: the workers that use them (auth_files_ref()) */
};

/*
 * One login's auth_query: waiting on pool->auth_waiting for a server of the auth pool, then
 * running on that server (server->auth_query) until its ReadyForQuery.
 */
struct aq_req {
	struct list head;    /* on pool->auth_waiting while waiting; empty while running */
	struct pool *pool;   /* the auth pool */
	struct conn *client; /* NULL once the client went away */
	struct conn *server; /* the server running the query; NULL while waiting */
	char *query;         /* the auth_query text, as configured when the login started */
	int ncols;           /* from RowDescription; -1 before it */
	bool discarding;     /* the DISCARD ALL sent ahead of the query has not answered yet */
	bool have_row, null_secret;
	char *secret;    /* the password column of the first row */
	char error[300]; /* why the query failed ("" = it did not), for the log */
};

/* The longest message of auth_query's answer the pooler takes (see auth_server_packet()). */
#define AUTH_ANSWER_MAX 65536u

struct auth {
	struct auth_files *files;
	uint8_t mock_key[SCRAM_KEY_LEN]; /* mock SCRAM salts derive from it and the user name */
	/*
	 * Successful logins where md5 was asked for, by the exchange their secret made them do,
	 * [0] for secrets from the auth_file, [1] from auth_query: an unknown user is offered what
	 * most real users looked up the same way are (see choose_method()). With several
	 * workers the process's counts are used instead (workers_count_login()), as an unknown
	 * user must be offered the same on every worker.
	 */
	uint64_t md5_logins[2], scram_logins[2];
	/* the SCRAM keys of plain passwords, client logins and server logins alike */
	struct scram_cache scram_keys;
};

struct auth_state {
	enum hba_method method;
	bool mock;       /* no such user: fail at the end of the exchange */
	bool fake_db;    /* no such database: say so after a good login */
	bool from_query; /* the secret came from auth_query */
	bool queried;    /* auth_query ran for the login (whatever it found) */
	bool md5_asked;  /* the method was md5 before the secret's kind had its say */
	char *secret;    /* NULL for a mock */
	struct aq_req *req;
};

/* What logins left on a pool for its server logins. */
struct auth_cred {
	char *query_secret;
	char *keys_secret; /* the secret the keys were recovered with */
	uint8_t client_key[SCRAM_KEY_LEN], server_key[SCRAM_KEY_LEN];
};

/* ---- files ---- */

struct auth_files *auth_files_load(const struct config *cfg, char *err, size_t errsize)
{
	/* hostssl and cert lines need client TLS: without it configured they fail the load */
	struct hba_opts opts = {.client_tls = cfg->client_tls_sslmode != SSLMODE_DISABLE};
	struct auth_files *f = calloc(1, sizeof(*f));

	if (f == NULL) {
		snprintf(err, errsize, "out of memory");
		return NULL;
	}
	atomic_init(&f->refs, 1);
	if (cfg->auth_type == AUTH_HBA) {
		if (!cfg->auth_hba_file[0]) {
			snprintf(err, errsize, "auth_type = hba needs auth_hba_file");
			goto fail;
		}
		f->hba = hba_load(cfg->auth_hba_file, &opts, err, errsize);
		if (f->hba == NULL)
			goto fail;
	}
	if (cfg->auth_ident_file[0]) {
		f->ident = ident_load(cfg->auth_ident_file, err, errsize);
		if (f->ident == NULL)
			goto fail;
	}
	return f;
fail:
	auth_files_free(f);
	return NULL;
}

struct auth_files *auth_files_ref(struct auth_files *files)
{
	if (files != NULL)
		atomic_fetch_add(&files->refs, 1);
	return files;
}

void auth_files_free(struct auth_files *files)
{
	if (files == NULL || atomic_fetch_sub(&files->refs, 1) > 1)
		return;
	hba_free(files->hba);
	ident_free(files->ident);
	free(files);
}

/* With several workers, one key for them all: a mock user shows one salt on every worker. */
static bool mock_key_init(struct bouncer *b, uint8_t *key, size_t len)
{
	if (b->workers != NULL) {
		workers_auth_key(b, key, len);
		return true;
	}
	return getrandom(key, len, 0) == (ssize_t)len;
}

/* Whether most logins asked for md5 whose secret was looked up this way did SCRAM. */
static bool logins_mostly_scram(struct bouncer *b, bool queried)
{
	const struct auth *a = b->auth;

	if (b->workers != NULL)
		return workers_logins_mostly_scram(b, queried);
	return a != NULL && a->scram_logins[queried] > a->md5_logins[queried];
}

static struct auth *auth_of(struct bouncer *b)
{
	if (b->auth == NULL) {
		b->auth = calloc(1, sizeof(*b->auth));
		if (b->auth == NULL)
			return NULL;
		if (!mock_key_init(b, b->auth->mock_key, sizeof(b->auth->mock_key)) ||
		    !scram_cache_init(&b->auth->scram_keys)) {
			OPENSSL_cleanse(b->auth, sizeof(*b->auth));
			free(b->auth);
			b->auth = NULL;
		}
	}
	return b->auth;
}

static void aq_free(struct aq_req *req)
{
	if (req->secret != NULL) {
		OPENSSL_cleanse(req->secret, strlen(req->secret));
		free(req->secret);
	}
	free(req->query);
	free(req);
}

void auth_use_files(struct bouncer *b, struct auth_files *files)
{
	struct auth *a = auth_of(b);

	if (a == NULL) {
		auth_files_free(files);
		return;
	}
	auth_files_free(a->files);
	a->files = files;
}

bool auth_share_files(struct bouncer *b, struct bouncer *from)
{
	struct auth *a = auth_of(b);

	if (a == NULL)
		return false;
	auth_use_files(b, auth_files_ref(from->auth != NULL ? from->auth->files : NULL));
	return true;
}

bool auth_is_files_key(const char *key)
{
	return strcasecmp(key, "auth_type") == 0 || strcasecmp(key, "auth_hba_file") == 0 ||
	       strcasecmp(key, "auth_ident_file") == 0;
}

void auth_shutdown(struct bouncer *b)
{
	if (b->auth == NULL)
		return;
	OPENSSL_cleanse(b->auth->mock_key, sizeof(b->auth->mock_key));
	scram_cache_clear(&b->auth->scram_keys);
	auth_files_free(b->auth->files);
	free(b->auth);
	b->auth = NULL;
}

struct scram_cache *auth_scram_cache(struct bouncer *b)
{
	struct auth *a = auth_of(b);

	return a != NULL ? &a->scram_keys : NULL;
}

/* ---- pool credentials ---- */

static struct auth_cred *cred_of(struct pool *pool)
{
	if (pool->cred == NULL)
		pool->cred = calloc(1, sizeof(*pool->cred));
	return pool->cred;
}

static void cred_drop_keys(struct auth_cred *cred)
{
	if (cred->keys_secret != NULL) {
		OPENSSL_cleanse(cred->keys_secret, strlen(cred->keys_secret));
		free(cred->keys_secret);
		cred->keys_secret = NULL;
	}
	OPENSSL_cleanse(cred->client_key, sizeof(cred->client_key));
	OPENSSL_cleanse(cred->server_key, sizeof(cred->server_key));
}

void auth_pool_free(struct pool *pool)
{
	struct auth_cred *cred = pool->cred;
	struct list *it, *tmp;

	/* only at exit can a pool go with logins still waiting on it */
	list_for_each_safe(it, tmp, &pool->auth_waiting)
	{
		struct aq_req *req = list_entry(it, struct aq_req, head);
		list_del(&req->head);
		if (req->client != NULL && req->client->auth != NULL)
			req->client->auth->req = NULL;
		aq_free(req);
	}
	if (cred == NULL)
		return;
	cred_drop_keys(cred);
	if (cred->query_secret != NULL) {
		OPENSSL_cleanse(cred->query_secret, strlen(cred->query_secret));
		free(cred->query_secret);
	}
	free(cred);
	pool->cred = NULL;
}

const char *auth_pool_secret(const struct pool *pool)
{
	if (pool->server_password != NULL && pool->server_password[0])
		return pool->server_password;
	if (pool->cred != NULL && pool->cred->query_secret != NULL)
		return pool->cred->query_secret;
	return "";
}

static bool cred_has_keys(const struct auth_cred *cred, const char *secret)
{
	return cred != NULL && cred->keys_secret != NULL && strcmp(cred->keys_secret, secret) == 0;
}

bool auth_pool_scram_keys(const struct pool *pool, const char *secret, uint8_t client_key[32],
                          uint8_t server_key[32])
{
	const struct auth_cred *cred = pool->cred;
	struct list *it;

	/*
	 * Keys proven against this very secret serve every pool that logs in with it, as
	 * pgbouncer keeps them with the user: so a SCRAM login of auth_user to any database lets
	 * the auth pool log in with auth_user's SCRAM secret.
	 */
	if (!cred_has_keys(cred, secret)) {
		cred = NULL;
		list_for_each(it, &pool->b->pools)
		{
			const struct pool *p = list_entry(it, struct pool, head);
			if (strcmp(p->server_user, pool->server_user) == 0 &&
			    cred_has_keys(p->cred, secret)) {
				cred = p->cred;
				break;
			}
		}
		if (cred == NULL)
			return false;
	}
	memcpy(client_key, cred->client_key, SCRAM_KEY_LEN);
	memcpy(server_key, cred->server_key, SCRAM_KEY_LEN);
	return true;
}

/* An auth_query secret replaces the pool's; keys of another secret go with the old one. */
static bool pool_take_query_secret(struct pool *pool, const char *secret)
{
	struct auth_cred *cred = cred_of(pool);
	char *copy;

	if (cred == NULL)
		return false;
	if (cred->query_secret != NULL && strcmp(cred->query_secret, secret) == 0)
		return true;
	copy = strdup(secret);
	if (copy == NULL)
		return false;
	if (cred->query_secret != NULL) {
		OPENSSL_cleanse(cred->query_secret, strlen(cred->query_secret));
		free(cred->query_secret);
	}
	cred->query_secret = copy;
	return true;
}

static void pool_take_scram_keys(struct pool *pool, const char *secret,
                                 const struct scram_server *ss)
{
	struct auth_cred *cred;
	uint8_t ck[SCRAM_KEY_LEN], sk[SCRAM_KEY_LEN];

	/* only keys of the very secret the servers are logged in with are any use */
	if (!scram_is_secret(secret) || strcmp(auth_pool_secret(pool), secret) != 0)
		return;
	cred = cred_of(pool);
	if (cred == NULL || !scram_server_keys(ss, ck, sk))
		return;
	cred_drop_keys(cred);
	cred->keys_secret = strdup(secret);
	if (cred->keys_secret != NULL) {
		memcpy(cred->client_key, ck, SCRAM_KEY_LEN);
		memcpy(cred->server_key, sk, SCRAM_KEY_LEN);
	}
	OPENSSL_cleanse(ck, sizeof(ck));
	OPENSSL_cleanse(sk, sizeof(sk));
}

/* ---- failing and finishing ---- */

static void send_pktbuf(struct conn *c, struct pktbuf *pb)
{
	if (!sbuf_queue_pktbuf(&c->sbuf, pb))
		slog_debug(c, "could not queue a message");
	pktbuf_free(pb);
}

/* Ends a login with pgbouncer's words in the log and to the client. */
static void login_fail(struct conn *c, const char *sqlstate, const char *msg)
{
	if (c->b->cfg->log_disconnections)
		slog_info(c, "closing because: %s (age=%llus)", msg,
		          (unsigned long long)((bouncer_now_usec() - c->connect_time) / 1000000));
	client_fatal(c, sqlstate, msg);
}

static void config_error(struct conn *c)
{
	login_fail(c, "08P01", "bouncer config error");
}

/* The exchange succeeded: only now is an unknown database reported and a pool made. */
static void finish_login(struct conn *c)
{
	struct auth_state *as = c->auth;
	struct pool *pool;
	const char *err = NULL;
	char msg[256];

	if (as->fake_db) {
		snprintf(msg, sizeof(msg), "no such database: %s", c->dbname);
		login_fail(c, "08P01", msg);
		return;
	}
	if (c->admin) {
		pool = admin_pool(c->b);
	} else {
		/* a database line that names user= has one pool, the forced user's, for every
		 * client: its settings apply, whoever logs in */
		const struct cf_database *db = config_find_database(c->b->cfg, c->dbname);
		pool = pool_get(c->b, c->dbname, db != NULL && db->user[0] ? db->user : c->user,
		                &err);
	}
	if (pool == NULL) {
		if (err != NULL && strcmp(err, "no such database") == 0)
			snprintf(msg, sizeof(msg), "no such database: %s", c->dbname);
		else
			snprintf(msg, sizeof(msg), "%s", err ? err : "out of memory");
		login_fail(c, "08P01", msg);
		return;
	}
	if (!c->admin && control_login_refused(c->b, c->dbname, msg, sizeof(msg))) {
		login_fail(c, "08P01", msg);
		return;
	}
	if (!c->admin && !pool_client_allowed(pool, c, msg, sizeof(msg))) {
		login_fail(c, "53300", msg);
		return;
	}
	c->pool = pool;
	if (as->md5_asked && c->b->workers != NULL) {
		workers_count_login(c->b, as->queried, as->method == HBA_SCRAM);
	} else if (as->md5_asked && c->b->auth != NULL) {
		if (as->method == HBA_SCRAM)
			c->b->auth->scram_logins[as->queried]++;
		else
			c->b->auth->md5_logins[as->queried]++;
	}
	/* the secret logs servers in only for its own user, never for a forced one */
	if (!c->admin && as->from_query && as->secret != NULL &&
	    strcmp(pool->server_user, c->user) == 0 && !pool_take_query_secret(pool, as->secret)) {
		login_fail(c, "53200", "out of memory");
		return;
	}
	if (!c->admin && c->scram_srv != NULL && as->secret != NULL)
		pool_take_scram_keys(pool, as->secret, c->scram_srv);
	if (c->scram_srv != NULL)
		scram_server_clear(c->scram_srv);
	/* the secret is not needed any more: do not keep a copy for the client's lifetime */
	auth_conn_free(c);
	pool_client_logged_in(pool, c);
}

/* ---- methods ---- */

static enum hba_method method_of(enum auth_type t)
{
	switch (t) {
	case AUTH_TRUST:
		return HBA_TRUST;
	case AUTH_PLAIN:
		return HBA_PASSWORD;
	case AUTH_MD5:
		return HBA_MD5;
	case AUTH_SCRAM_SHA_256:
		return HBA_SCRAM;
	case AUTH_CERT:
		return HBA_CERT;
	default:
		return HBA_REJECT;
	}
}

/*
 * The OS user at the other end of a unix socket; false when it cannot be known.
 * getpwuid_r() is a blocking call: with local files it is quick, but with a network user
 * database (LDAP, sssd through NSS) it can hold the loop for a lookup. pgbouncer and PostgreSQL
 * call it the same way; only peer logins over the unix socket pay it.
 */
static bool peer_name(const struct conn *c, char *out, size_t outsize)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	struct passwd pw, *res = NULL;
	char buf[4096];

	if (getsockopt(c->sbuf.fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
		return false;
	if (getpwuid_r(cred.uid, &pw, buf, sizeof(buf), &res) != 0 || res == NULL)
		return false;
	snprintf(out, outsize, "%s", pw.pw_name);
	return true;
}

static void login_peer(struct conn *c, const char *map)
{
	const struct auth *a = c->b->auth;
	char sysuser[256];

	if (c->addr.sa.sa_family != AF_UNIX || c->auth->mock ||
	    !peer_name(c, sysuser, sizeof(sysuser)))
		goto fail;
	if (map != NULL) {
		if (a == NULL || a->files == NULL || a->files->ident == NULL) {
			slog_error(c, "hba map=%s needs auth_ident_file", map);
			goto fail;
		}
		if (!ident_allows(a->files->ident, map, sysuser, c->user)) {
			slog_info(c, "peer user %s is not in map %s for %s", sysuser, map, c->user);
			goto fail;
		}
	} else if (strcmp(sysuser, c->user) != 0) {
		slog_info(c, "peer user %s is not %s", sysuser, c->user);
		goto fail;
	}
	finish_login(c);
	return;
fail:
	login_fail(c, "28000", "unix socket login rejected");
}

/* Whether the verified client certificate names c->user, directly or through the ident map. */
static bool cert_names_user(struct conn *c, const char *map)
{
	const struct auth *a = c->b->auth;

	if (map == NULL)
		return tls_client_cert_has_name(c, c->user);
	return a != NULL && a->files != NULL &&
	       ident_allows(a->files->ident, map, tls_client_cert_cn(c), c->user);
}

/* The secret is known (or the user is a mock): pick the method and start the exchange. */
static enum sbuf_action choose_method(struct conn *c)
{
	const struct config *cfg = c->b->cfg;
	struct auth_state *as = c->auth;
	struct pktbuf pb;
	const char *map = NULL;

	if (cfg->auth_type == AUTH_HBA) {
		const struct auth *a = c->b->auth;
		struct hba_verdict v;
		struct hba_conn hc = {
		        .addr = &c->addr.sa,
		        .tls = c->sbuf.tls != NULL,
		        .replication = false,
		        .database = c->dbname,
		        .user = c->user,
		};
		hba_eval(a && a->files ? a->files->hba : NULL, &hc, &v);
		as->method = v.method;
		map = v.map;
		slog_debug(c, "hba line %d: %s", v.line, hba_method_str(v.method));
	} else {
		as->method = method_of(cfg->auth_type);
	}
	if (as->method == HBA_MD5) {
		as->md5_asked = true;
		/*
		 * A SCRAM secret cannot do md5: PostgreSQL asks for SCRAM then, and so do we. An
		 * unknown user must not be told apart by the first message: where the users looked
		 * up the same way (auth_file, or auth_query) who logged in mostly did SCRAM
		 * (auth_query on PostgreSQL 14 or later, whose default password_encryption is
		 * SCRAM), it is offered SCRAM too, as PostgreSQL offers an unknown user the method
		 * of its password_encryption. Only successful logins count, so failed probes of a
		 * known md5 user do not move it.
		 */
		bool q = as->queried;
		if (as->mock ? logins_mostly_scram(c->b, q)
		             : as->secret != NULL && scram_is_secret(as->secret))
			as->method = HBA_SCRAM;
	}
	slog_debug(c, "authentication method %s%s", hba_method_str(as->method),
	           as->mock ? " (no such user: mock exchange)" : "");

	switch (as->method) {
	case HBA_TRUST:
		if (as->mock) {
			login_fail(c, "28000", "\"trust\" authentication failed");
			return SBUF_CLOSED;
		}
		finish_login(c);
		return c->state == CONN_JUSTFREE ? SBUF_CLOSED : SBUF_CONSUMED;
	case HBA_REJECT:
		login_fail(c, "28000", "login rejected");
		return SBUF_CLOSED;
	case HBA_PASSWORD:
		pktbuf_init(&pb, 64);
		pktbuf_write_auth(&pb, 3, NULL, 0);
		send_pktbuf(c, &pb);
		return SBUF_CONSUMED;
	case HBA_MD5:
		if (!conn_random(c->md5_salt, sizeof(c->md5_salt))) {
			login_fail(c, "58000", "could not generate a salt");
			return SBUF_CLOSED;
		}
		pktbuf_init(&pb, 64);
		pktbuf_write_auth(&pb, 5, c->md5_salt, 4);
		send_pktbuf(c, &pb);
		return SBUF_CONSUMED;
	case HBA_SCRAM: {
		static const char mechs[] = "SCRAM-SHA-256\0";
		pktbuf_init(&pb, 64);
		pktbuf_write_auth(&pb, 10, mechs, sizeof(mechs));
		send_pktbuf(c, &pb);
		return SBUF_CONSUMED;
	}
	case HBA_PEER:
		login_peer(c, map);
		return c->state == CONN_JUSTFREE ? SBUF_CLOSED : SBUF_CONSUMED;
	case HBA_CERT:
		/*
		 * pgbouncer's cert login: a verified client certificate that names the user (or,
		 * with map=, whose name the ident map allows as the user). The client hears one
		 * message whatever failed; the log says which check did.
		 */
		if (c->sbuf.tls == NULL) {
			slog_error(c, "TLS connection required");
		} else if (tls_client_cert_cn(c) == NULL) {
			slog_error(c, "TLS client certificate required");
		} else if (as->mock || !cert_names_user(c, map)) {
			slog_error(c, "TLS certificate name mismatch");
		} else {
			finish_login(c);
			return c->state == CONN_JUSTFREE ? SBUF_CLOSED : SBUF_CONSUMED;
		}
		break;
	}
	login_fail(c, "28000", "certificate authentication failed");
	return SBUF_CLOSED;
}

/* ---- auth_query ---- */

/*
 * pgbouncer's way: the query runs on a server of the auth pool (the auth database's servers
 * logged in as auth_user through the normal server login, so auth_user's secret may be plain,
 * an md5 hash, or a SCRAM secret with keys from a client's SCRAM login), as an extended-protocol
 * statement with the user name as its parameter. Nothing else is sent for it: no SET, the
 * server goes back to the pool at ReadyForQuery (reset as any released server).
 */

/* The answer is in (or the query failed): go on with the login of the client. */
static void aq_answer(struct conn *c, struct aq_req *req)
{
	struct auth_state *as = c->auth;

	as->queried = true;
	if (req->error[0]) {
		slog_error(c, "%s", req->error);
		login_fail(c, "08P01", "authentication query failed");
		return;
	}
	if (!req->have_row) {
		slog_info(c, "no such user: %s", c->user);
		as->mock = true;
	} else if (req->null_secret) {
		/* a role without a password: nothing can match, as in pgbouncer */
		as->mock = true;
	} else {
		as->secret = req->secret;
		req->secret = NULL;
		as->from_query = true;
	}
	if (choose_method(c) != SBUF_CLOSED && c->state != CONN_JUSTFREE)
		sbuf_resume(&c->sbuf);
}

/* Sends req's query on s, an idle (or just logged in) server of the auth pool. */
static void aq_run(struct aq_req *req, struct conn *s)
{
	struct conn *c = req->client;
	struct pktbuf pb;
	size_t ulen = strlen(c->user);
	bool ok;

	list_del(&req->head);
	list_init(&req->head);
	req->server = s;
	s->auth_query = req;
	s->request_time = bouncer_now_usec();
	conn_set_state(s, SV_ACTIVE);
	server_owe_ready(s);
	pktbuf_init(&pb, 65536 + 512);
	if (s->client_state) {
		/*
		 * A client of auth_user left its session on this server (transaction pooling keeps
		 * it): its settings, role or temporary tables must not decide what the query reads
		 * (a temporary table named like the one the query reads hides it).
		 */
		pktbuf_write_query(&pb, "DISCARD ALL");
		req->discarding = true;
		server_owe_ready(s);
	}
	pktbuf_start_msg(&pb, PQMSG_PARSE); /* unnamed statement, parameter type inferred */
	pktbuf_put_string(&pb, "");
	pktbuf_put_string(&pb, req->query);
	pktbuf_put_u16(&pb, 0);
	pktbuf_finish_msg(&pb);
	pktbuf_start_msg(&pb, PQMSG_BIND); /* the user name, as text */
	pktbuf_put_string(&pb, "");
	pktbuf_put_string(&pb, "");
	pktbuf_put_u16(&pb, 0);
	pktbuf_put_u16(&pb, 1);
	pktbuf_put_u32(&pb, (uint32_t)ulen);
	pktbuf_put_bytes(&pb, c->user, ulen);
	pktbuf_put_u16(&pb, 0);
	pktbuf_finish_msg(&pb);
	pktbuf_start_msg(&pb, PQMSG_DESCRIBE); /* the portal: the column count, even for no row */
	pktbuf_put_u8(&pb, PQMSG_TARGET_PORTAL);
	pktbuf_put_string(&pb, "");
	pktbuf_finish_msg(&pb);
	pktbuf_start_msg(&pb, PQMSG_EXECUTE);
	pktbuf_put_string(&pb, "");
	pktbuf_put_u32(&pb, 0);
	pktbuf_finish_msg(&pb);
	pktbuf_write_simple(&pb, PQMSG_SYNC);
	ok = !pktbuf_failed(&pb) && sbuf_queue_pktbuf(&s->sbuf, &pb);
	pktbuf_free(&pb);
	slog_debug(c, "running auth_query as %s", s->pool->server_user);
	if (!ok)
		server_close(s, "unable to send auth_query");
}

bool auth_pool_server_ready(struct pool *pool, struct conn *server)
{
	struct list *first = list_first(&pool->auth_waiting);

	if (first == NULL)
		return false;
	aq_run(list_entry(first, struct aq_req, head), server);
	return true;
}

void auth_pool_fail_waiting(struct pool *pool, const char *sqlstate, const char *message)
{
	struct list *it, *tmp;

	/*
	 * pgbouncer's kill_pool_logins(): the logins waiting on the auth pool hear why. Their
	 * requests go now, not when the closed clients are freed: no server may pick them up.
	 */
	list_for_each_safe(it, tmp, &pool->auth_waiting)
	{
		struct aq_req *req = list_entry(it, struct aq_req, head);
		struct conn *c = req->client;
		list_del(&req->head);
		if (c != NULL && c->auth != NULL)
			c->auth->req = NULL;
		aq_free(req);
		if (c != NULL)
			login_fail(c, sqlstate, message);
	}
}

void auth_server_lost(struct conn *s, const char *reason)
{
	struct aq_req *req = s->auth_query;
	struct conn *c = req->client;

	s->auth_query = NULL;
	aq_free(req);
	if (c == NULL || c->auth == NULL)
		return;
	c->auth->req = NULL;
	slog_error(c, "auth_query: lost the server connection: %s", reason);
	login_fail(c, "08P01", "authentication query failed");
}

/* Reads the first DataRow of the answer: the user name (ignored) and the secret. */
static bool aq_data_row(struct aq_req *req, const struct sbuf_pkt *pkt)
{
	struct pkt_reader r;
	uint16_t ncols;
	int32_t len;
	const uint8_t *val;

	pr_init(&r, pkt->body, pkt->body_len);
	if (!pr_u16(&r, &ncols))
		return false;
	if (ncols != 2) {
		if (!req->error[0])
			snprintf(req->error, sizeof(req->error),
			         "expected 2 columns from auth_query, not %u", (unsigned)ncols);
		return true;
	}
	if (req->have_row)
		return true;
	if (!pr_i32(&r, &len) || (len > 0 && !pr_bytes(&r, (size_t)len, &val)))
		return false;
	if (len < 0) {
		/* a null user name: pgbouncer's signal for "no such user" */
		return true;
	}
	if (!pr_i32(&r, &len))
		return false;
	req->have_row = true;
	if (len < 0) {
		req->null_secret = true;
		return true;
	}
	if (!pr_bytes(&r, (size_t)len, &val))
		return false;
	req->secret = malloc((size_t)len + 1);
	if (req->secret == NULL) {
		snprintf(req->error, sizeof(req->error),
		         "out of memory reading auth_query's answer");
		return true;
	}
	memcpy(req->secret, val, (size_t)len);
	req->secret[len] = '\0';
	if (strlen(req->secret) != (size_t)len)
		snprintf(req->error, sizeof(req->error),
		         "auth_query returned a password with a NUL");
	return true;
}

enum sbuf_action auth_server_packet(struct conn *s, const struct sbuf_pkt *pkt)
{
	struct aq_req *req = s->auth_query;
	struct conn *c;

	/*
	 * Every message of the answer is gathered whole, so each is bounded: a secret is a few
	 * hundred bytes, and an answer of a query that reads what users can write must not make
	 * the pooler hold max_packet_size bytes for each login.
	 */
	if (pkt->len - 1 > AUTH_ANSWER_MAX) {
		if (req->client != NULL)
			slog_error(req->client,
			           "auth_query answer too long (a '%c' message of %u bytes)",
			           pkt->type, (unsigned)pkt->len - 1);
		server_close(s, "auth_query answer too long");
		return SBUF_CLOSED;
	}
	if (!pkt->complete)
		return SBUF_WAIT;
	switch (pkt->type) {
	case PQMSG_PARSE_COMPLETE:
	case PQMSG_BIND_COMPLETE:
	case PQMSG_NO_DATA:
	case PQMSG_COMMAND_COMPLETE:
	case PQMSG_NOTICE_RESPONSE:
	case PQMSG_NOTIFICATION_RESPONSE:
		return SBUF_CONSUMED;
	case PQMSG_PARAMETER_STATUS: {
		const char *name, *value;
		if (!proto_parse_param_status(pkt->body, pkt->body_len, &name, &value) ||
		    !param_set_value(&s->params, name, value)) {
			server_close(s, "bad ParameterStatus from server");
			return SBUF_CLOSED;
		}
		return SBUF_CONSUMED;
	}
	case PQMSG_ROW_DESCRIPTION: {
		struct pkt_reader r;
		uint16_t ncols;
		pr_init(&r, pkt->body, pkt->body_len);
		if (!pr_u16(&r, &ncols))
			break;
		req->ncols = ncols;
		if (ncols != 2 && !req->error[0])
			snprintf(req->error, sizeof(req->error),
			         "expected 2 columns from auth_query, not %u", (unsigned)ncols);
		return SBUF_CONSUMED;
	}
	case PQMSG_DATA_ROW:
		if (!aq_data_row(req, pkt))
			break;
		return SBUF_CONSUMED;
	case PQMSG_ERROR_RESPONSE: {
		struct pg_error e;
		if (!proto_parse_error(pkt->body, pkt->body_len, &e))
			break;
		if (!req->error[0])
			snprintf(req->error, sizeof(req->error), "%s: %s",
			         req->discarding ? "DISCARD ALL before auth_query failed"
			                         : "error response from auth_query",
			         e.message ? e.message : "(no message)");
		return SBUF_CONSUMED;
	}
	case PQMSG_READY_FOR_QUERY:
		if (pkt->body_len != 1)
			break;
		s->txn_status = (char)pkt->body[0];
		s->request_time = bouncer_now_usec();
		server_ready_arrived(s);
		if (req->discarding) {
			/* the query follows; a failed DISCARD fails the login, keeps the mark */
			req->discarding = false;
			if (!req->error[0])
				server_discarded(s);
			return SBUF_CONSUMED;
		}
		s->auth_query = NULL;
		c = req->client;
		/* req goes below: a client closed but not yet freed must not keep pointing at it */
		if (c != NULL && c->auth != NULL)
			c->auth->req = NULL;
		/* the server first: the answer may start the next query on it */
		server_release(s);
		if (c != NULL && c->auth != NULL && c->state == CL_LOGIN)
			aq_answer(c, req);
		aq_free(req);
		return s->state == CONN_JUSTFREE ? SBUF_CLOSED : SBUF_CONSUMED;
	default:
		server_close(s, "unexpected response from auth_query");
		return SBUF_CLOSED;
	}
	server_close(s, "bad packet");
	return SBUF_CLOSED;
}

/*
 * Queues auth_query for c in the auth pool, to run on the first server it has free. False when
 * the query cannot be run at all (the client has been answered then).
 */
static bool start_auth_query(struct conn *c, const struct cf_database *db)
{
	const struct config *cfg = c->b->cfg;
	const char *auth_user = db->auth_user[0] ? db->auth_user : cfg->auth_user;
	const char *auth_dbname = db->auth_dbname[0] ? db->auth_dbname : cfg->auth_dbname;
	const char *query = db->auth_query[0] ? db->auth_query : cfg->auth_query;
	const struct cf_database *adb =
	        auth_dbname[0] ? config_find_database(cfg, auth_dbname) : db;
	const char *err = NULL;
	struct aq_req *req;
	struct pool *pool;
	struct conn *s;
	char msg[256];

	if (adb == NULL) {
		slog_error(c, "authentication database \"%s\" is not configured.", auth_dbname);
		config_error(c);
		return false;
	}
	if (admin_is_console_db(adb->name)) {
		slog_error(c, "cannot use the reserved \"%s\" database as an auth_dbname",
		           adb->name);
		config_error(c);
		return false;
	}
	/* DISABLE of the auth database stops our logins into it too (a database of the client's
	 * own is only refused after a good login, see finish_login()) */
	if (auth_dbname[0] && control_login_refused(c->b, auth_dbname, msg, sizeof(msg))) {
		snprintf(msg, sizeof(msg), "authentication database \"%s\" is disabled",
		         auth_dbname);
		login_fail(c, "08P01", msg);
		return false;
	}
	/* adb is the auth database's entry, or the "*" one standing in for it */
	pool = pool_get_auth(c->b, auth_dbname[0] ? auth_dbname : c->dbname, auth_user, &err);
	if (pool == NULL) {
		slog_error(c, "auth_query: cannot make the pool of the auth database: %s",
		           err ? err : "out of memory");
		config_error(c);
		return false;
	}
	req = calloc(1, sizeof(*req));
	if (req == NULL || (req->query = strdup(query)) == NULL) {
		free(req);
		login_fail(c, "53200", "out of memory");
		return false;
	}
	req->pool = pool;
	req->client = c;
	req->ncols = -1;
	list_init(&req->head);
	list_append(&pool->auth_waiting, &req->head);
	c->auth->req = req;
	slog_debug(c, "waiting for a server of %s/%s to run auth_query", pool->db_name,
	           pool->user_name);
	s = pool_take_idle_server(pool);
	if (s != NULL) {
		aq_run(req, s);
		/* a failed send has answered the client */
		return c->state != CONN_JUSTFREE;
	}
	pool_fill(pool);
	return c->state != CONN_JUSTFREE;
}

/* ---- entry points ---- */

enum sbuf_action auth_start(struct conn *c)
{
	struct bouncer *b = c->b;
	const struct config *cfg = b->cfg;
	const struct cf_database *db = NULL;
	struct auth_state *as;
	const char *stored;

	as = calloc(1, sizeof(*as));
	if (as == NULL) {
		client_fatal(c, "53200", "out of memory");
		return SBUF_CLOSED;
	}
	c->auth = as;
	if (c->admin) {
		if (admin_trusted_peer(c) || cfg->auth_type == AUTH_ANY) {
			c->pool = admin_pool(b);
			admin_client_login(c);
			return c->state == CONN_JUSTFREE ? SBUF_CLOSED : SBUF_CONSUMED;
		}
	} else {
		db = config_find_database(cfg, c->dbname);
		as->fake_db = db == NULL;
	}
	if (cfg->auth_type == AUTH_ANY) {
		/* the client's user name does not matter: the database must name one */
		if (db != NULL && !db->user[0]) {
			slog_error(c, "auth_type=any requires forced user");
			config_error(c);
			return SBUF_CLOSED;
		}
		finish_login(c);
		return c->state == CONN_JUSTFREE ? SBUF_CLOSED : SBUF_CONSUMED;
	}
	if (cfg->auth_type == AUTH_PAM || cfg->auth_type == AUTH_LDAP) {
		char msg[128];
		snprintf(msg, sizeof(msg), "auth_type %s is not supported yet",
		         auth_type_str(cfg->auth_type));
		login_fail(c, "0A000", msg);
		return SBUF_CLOSED;
	}
	stored = b->users ? userlist_get_password(b->users, c->user) : NULL;
	if (stored != NULL) {
		as->secret = strdup(stored);
		if (as->secret == NULL) {
			client_fatal(c, "53200", "out of memory");
			return SBUF_CLOSED;
		}
		return choose_method(c);
	}
	if (db != NULL && (db->auth_user[0] || cfg->auth_user[0])) {
		if (!start_auth_query(c, db))
			return SBUF_CLOSED;
		return SBUF_CONSUMED; /* the client waits for our request; see aq_answer() */
	}
	if (as->fake_db && cfg->auth_user[0])
		slog_debug(c, "not running auth_query because database is fake");
	slog_info(c, "no such user: %s", c->user);
	as->mock = true;
	return choose_method(c);
}

/* A cleartext password against the stored secret (plain, md5 or SCRAM). */
static bool check_plain(const struct conn *c, const char *stored, const char *given)
{
	char md5[MD5PW_SIZE];

	switch (userlist_password_kind(stored)) {
	case USERLIST_PW_MD5:
		if (!md5pw_encrypt(given, c->user, md5))
			return false;
		return CRYPTO_memcmp(md5, stored, MD5PW_LEN) == 0;
	case USERLIST_PW_SCRAM:
		return scram_verify_password(stored, given);
	case USERLIST_PW_PLAIN:
		break;
	}
	return strlen(stored) == strlen(given) && CRYPTO_memcmp(stored, given, strlen(given)) == 0;
}

/* A mock user's SCRAM salt is the same at every attempt, like a real user's. */
static bool mock_scram_init(struct conn *c)
{
	struct auth *a = auth_of(c->b);

	if (a == NULL)
		return false;
	return scram_server_init_mock(c->scram_srv, c->user, a->mock_key);
}

static enum sbuf_action scram_packet(struct conn *c, const struct sbuf_pkt *pkt)
{
	struct auth_state *as = c->auth;
	char out[SCRAM_MAX_MSG + 1];
	struct pktbuf pb;

	if (c->scram_srv == NULL) {
		const char *mech;
		const uint8_t *data;
		size_t dlen;

		/* the mechanism first: an md5 answer to our SASL request names none we offer */
		if (memchr(pkt->body, '\0', pkt->body_len) == NULL ||
		    strcmp((const char *)pkt->body, SCRAM_MECH) != 0) {
			login_fail(c, "08P01",
			           "client selected an invalid SASL authentication mechanism");
			return SBUF_CLOSED;
		}
		if (!proto_parse_sasl_initial(pkt->body, pkt->body_len, &mech, &data, &dlen)) {
			login_fail(c, "08P01", "SASL authentication failed");
			return SBUF_CLOSED;
		}
		if (!as->mock && userlist_password_kind(as->secret) == USERLIST_PW_MD5) {
			/*
			 * An md5 hash cannot do SCRAM. Failing here would tell the user exists: as
			 * PostgreSQL does, the exchange goes on with a mock secret and fails at the
			 * end.
			 */
			slog_error(c, "SCRAM authentication failed: user has MD5 secret");
			as->mock = true;
		}
		c->scram_srv = calloc(1, sizeof(*c->scram_srv));
		if (c->scram_srv == NULL) {
			login_fail(c, "53200", "out of memory");
			return SBUF_CLOSED;
		}
		if (!(as->mock ? mock_scram_init(c)
		      : userlist_password_kind(as->secret) == USERLIST_PW_PLAIN
		              ? scram_server_init_cached(c->scram_srv, c->user, as->secret,
		                                         auth_scram_cache(c->b))
		              : scram_server_init(c->scram_srv, as->secret)) ||
		    !scram_server_first(c->scram_srv, (const char *)data, dlen, out, sizeof(out))) {
			slog_debug(c, "SCRAM: %s", c->scram_srv->error ? c->scram_srv->error : "?");
			login_fail(c, "28P01", "SASL authentication failed");
			return SBUF_CLOSED;
		}
		pktbuf_init(&pb, 2048);
		pktbuf_write_auth(&pb, 11, out, strlen(out));
		send_pktbuf(c, &pb);
		return SBUF_CONSUMED;
	}
	if (!scram_server_final(c->scram_srv, (const char *)pkt->body, pkt->body_len, out,
	                        sizeof(out))) {
		if (!as->mock)
			slog_error(c, "password authentication failed");
		login_fail(c, "28P01", "SASL authentication failed");
		return SBUF_CLOSED;
	}
	pktbuf_init(&pb, 2048);
	pktbuf_write_auth(&pb, 12, out, strlen(out));
	send_pktbuf(c, &pb);
	finish_login(c);
	return c->state == CONN_JUSTFREE ? SBUF_CLOSED : SBUF_CONSUMED;
}

enum sbuf_action auth_packet(struct conn *c, const struct sbuf_pkt *pkt)
{
	struct auth_state *as = c->auth;
	const char *pw;
	bool ok = false;

	if (as == NULL || as->req != NULL || pkt->type != PQMSG_PASSWORD) {
		login_fail(c, "08P01",
		           pkt->type == PQMSG_PASSWORD
		                   ? "client password pkt before authentication request"
		                   : "expected a password message");
		return SBUF_CLOSED;
	}
	/* checked at the header: an unauthenticated client never makes us hold more than this */
	if (pkt->len - 1 > AUTH_MSG_MAX) {
		login_fail(c, "08P01", "invalid message length");
		return SBUF_CLOSED;
	}
	if (!pkt->complete)
		return SBUF_WAIT;
	if (as->method == HBA_SCRAM)
		return scram_packet(c, pkt);
	if (as->method != HBA_MD5 && as->method != HBA_PASSWORD) {
		login_fail(c, "08P01", "client password pkt before authentication request");
		return SBUF_CLOSED;
	}
	if (!proto_parse_password(pkt->body, pkt->body_len, &pw)) {
		login_fail(c, "08P01", "malformed password message");
		return SBUF_CLOSED;
	}
	if (!pw[0]) {
		/* PostgreSQL's words and SQLSTATE */
		login_fail(c, "28P01", "empty password returned by client");
		return SBUF_CLOSED;
	}
	if (!as->mock && as->secret != NULL && as->secret[0]) {
		if (as->method == HBA_MD5)
			ok = md5pw_check(as->secret, c->user, c->md5_salt, pw);
		else
			ok = check_plain(c, as->secret, pw);
	}
	if (!ok) {
		login_fail(c, "28P01", "password authentication failed");
		return SBUF_CLOSED;
	}
	finish_login(c);
	return c->state == CONN_JUSTFREE ? SBUF_CLOSED : SBUF_CONSUMED;
}

void auth_conn_free(struct conn *c)
{
	struct auth_state *as = c->auth;

	if (as == NULL)
		return;
	if (as->req != NULL) {
		struct aq_req *req = as->req;
		if (req->server == NULL) {
			/* still waiting for a server: nobody else will look at it */
			list_del(&req->head);
			aq_free(req);
		} else {
			req->client = NULL; /* the server finishes the query and goes back */
		}
	}
	if (as->secret != NULL) {
		OPENSSL_cleanse(as->secret, strlen(as->secret));
		free(as->secret);
	}
	free(as);
	c->auth = NULL;
}
