/*
 * synced — the synced-table side's set-up (include/mutation/synced.h): builds the APIs, table
 * mappings, classifier, catalog, settler and sync worker from the configuration, installs the
 * query hook (hook.c), and reloads and stops them. The pipeline is in pipeline.c, the answers in
 * answer.c, the extended protocol in extended.c, the admin views in views.c.
 *
 * Invariants: every mutation ends with COMMIT or ROLLBACK on its connection (a connection whose
 * outcome is unknown is closed, which rolls back); a RELOAD waits for the mutations in flight.
 * With several workers, the tables live on worker 0 only; the others refuse the guard's
 * settings and never see a client of a database that has synced tables (client.c hands those
 * to worker 0).
 */
#include "mutation/synced.h"

#include <curl/curl.h>
#include <event2/event.h>
#include <libgen.h>
#include <libpq-fe.h>
#include <pg_query.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "api/api.h"
#include "api/json.h"
#include "api/http.h"
#include "bouncer.h"
#include "config.h"
#include "conn.h"
#include "log.h"
#include "mutation/catalog.h"
#include "mutation/classifier.h"
#include "mutation/extended.h"
#include "mutation/history.h"
#include "mutation/hook.h"
#include "mutation/mixed.h"
#include "mutation/journal.h"
#include "mutation/pipeline.h"
#include "mutation/settle.h"
#include "mutation/sync.h"
#include "pgc.h"
#include "pool.h"
#include "version.h"
#include "workers.h"

/* ---- set-up ---------------------------------------------------------------------------- */

static char *qualify(const char *schema, const char *table)
{
	size_t n = strlen(schema) + strlen(table) + 2;
	char *s = malloc(n);

	if (s != NULL)
		snprintf(s, n, "%s.%s", schema, table);
	return s;
}

static void on_catalog_done(void *arg, struct catalog *cat)
{
	struct synced *sy = arg;
	struct list waiters;

	(void)cat;
	/* writes that a previous run (or another instance) left unsettled */
	settle_kick(sy->settle, 0);
	/* then the queries held meanwhile go on, each classified with the catalog it needs */
	list_init(&waiters);
	hook_take_waiters(sy, &waiters);
	hook_resume_waiters(&waiters);
}

static void on_reload(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	synced_reload(arg);
}

/* Reloads from the loop, never from inside a callback of the structures it frees. */
void synced_schedule_reload(struct synced *sy)
{
	struct timeval now = {0, 0};

	if (event_base_once(sy->b->base, -1, EV_TIMEOUT, on_reload, sy->b, &now) != 0)
		log_error("synced tables: cannot schedule the reload");
}

/* settle_find_cb: the synced table of database with this relation oid. */
static bool find_table(void *arg, const char *database, unsigned relid, struct settle_table *out)
{
	struct synced *sy = arg;

	for (int i = 0; i < sy->ntables; i++) {
		struct synced_table *st = &sy->tables[i];
		struct catalog_table *ct;
		if (strcmp(st->database, database) != 0 || !st->at_ready)
			continue;
		ct = catalog_find(sy->cat, st->database, st->schema, st->table);
		if (ct == NULL || ct->state != CAT_READY || ct->relid != relid)
			continue;
		out->api = st->api;
		out->at = &st->at;
		out->ct = ct;
		out->synced = false;
		if (sy->sync != NULL) {
			struct sync_view sv;
			sync_view(sy->sync, i, &sv);
			out->synced = sv.state != NULL && strcmp(sv.state, "off") != 0 &&
			              sy->sync_confs != NULL && sy->sync_confs[i].interval > 0;
		}
		return true;
	}
	return false;
}

/* A console SYNC finished: answer the admin client that waits for it. */
static void on_sync_done(void *arg, uint64_t conn_id, const char *error)
{
	struct synced *sy = arg;

	if (error == NULL)
		admin_command_done(sy->b, conn_id, "SYNC");
	else
		admin_command_failed(sy->b, conn_id, "58000", error);
}

/* The query hook on b (bouncer.h), with sy as its context. */
static void install_hook(struct bouncer *b, struct synced *sy)
{
	b->hook.inspect = hook_inspect;
	b->hook.stream_needles = classifier_setting_needles();
	b->hook.client_closed = hook_client_closed;
	b->hook.cancel = hook_cancel;
	b->hook.server_answer = mixed_server_answer;
	b->hook.ctx = sy;
}

/*
 * Without [synced_tables] there is no pipeline, but the guard's settings are refused all the
 * same: a server that took SET syncbouncer.mode now would keep it in the pool, and a RELOAD that
 * adds synced tables (or a guard trigger installed by another pooler) would then trust it. Only
 * the classifier is made, with no tables: every statement passes but those settings.
 */
static bool synced_start_settings_only(struct bouncer *b)
{
	struct synced *sy = calloc(1, sizeof(*sy));

	if (sy == NULL)
		return false;
	sy->b = b;
	list_init(&sy->idle_conns);
	list_init(&sy->mutations);
	list_init(&sy->cat_waiters);
	list_init(&sy->describes);
	list_init(&sy->queued);
	sy->cl = classifier_new(NULL, 0);
	if (sy->cl == NULL) {
		free(sy);
		return false;
	}
	b->synced = sy;
	install_hook(b, sy);
	return true;
}

/* One [apis] entry's API, or NULL with the entry and the reason in err. */
static struct api *api_setup(struct http_engine *http, const struct cf_api *a, char *err,
                             size_t errsize)
{
	char why[512];
	struct api *api = api_create(http, a->name, a->kv, a->nkv, why, sizeof(why));

	if (api == NULL)
		snprintf(err, errsize, "[apis] %s (line %d): %s", a->name, a->line, why);
	return api;
}

/*
 * Fills st and conf from one [synced_tables] entry, its API found among apis[0..napis). False
 * with the entry and the reason in err; what st holds then is freed by table_clear() all the
 * same.
 */
static bool table_setup(const struct cf_synced_table *t, struct api *const *apis, int napis,
                        struct synced_table *st, struct sync_table_conf *conf, char *err,
                        size_t errsize)
{
	const char *api = cf_kv_get(t->kv, t->nkv, "api");
	char why[512];

	st->database = strdup(t->database);
	st->schema = strdup(t->schema);
	st->table = strdup(t->table);
	st->qualified = qualify(t->schema, t->table);
	if (st->database == NULL || st->schema == NULL || st->table == NULL ||
	    st->qualified == NULL) {
		snprintf(err, errsize, "out of memory");
		return false;
	}
	for (int k = 0; k < napis && api != NULL; k++) {
		if (strcmp(api_name(apis[k]), api) == 0) {
			st->api = apis[k];
			st->api_index = k;
		}
	}
	if (st->api == NULL) {
		snprintf(err, errsize,
		         "[synced_tables] %s.%s (line %d): api=%s names no [apis] entry",
		         t->database, st->qualified, t->line, api ? api : "(missing)");
		return false;
	}
	if (!api_table_init(&st->at, st->qualified, t->kv, t->nkv, why, sizeof(why)))
		goto refused;
	st->at_ready = true;
	if (!connector_check_table(api_connector(st->api), &st->at, why, sizeof(why)) ||
	    !sync_table_options(t->kv, t->nkv, conf, why, sizeof(why)))
		goto refused;
	return true;
refused:
	snprintf(err, errsize, "[synced_tables] %s.%s (line %d): %s", t->database, st->qualified,
	         t->line, why);
	return false;
}

/* Frees what table_setup() put in st. */
static void table_clear(struct synced_table *st)
{
	if (st->at_ready)
		api_table_free(&st->at);
	free(st->database);
	free(st->schema);
	free(st->table);
	free(st->qualified);
}

/*
 * Before a RELOAD applies cfg: every [apis] and [synced_tables] entry is built as the start
 * builds it, then dropped, so that an entry the start would refuse fails the RELOAD at the
 * console and leaves everything as it was, rather than being logged while the rest of the file
 * takes effect.
 */
static bool synced_check(struct bouncer *b, const struct config *cfg, char *err, size_t errsize)
{
	struct http_engine *http;
	struct api **apis = NULL;
	const struct cf_api *a;
	int napis = 0, i;
	bool ok = false;

	if (cfg->synced_tables == NULL && cfg->apis == NULL)
		return true;
	snprintf(err, errsize, "out of memory");
	for (a = cfg->apis; a != NULL; a = a->next)
		napis++;
	http = http_engine_create(b->base, b->dns);
	apis = calloc((size_t)napis + 1, sizeof(*apis));
	if (http == NULL || apis == NULL)
		goto done;
	for (a = cfg->apis, i = 0; a != NULL; a = a->next, i++) {
		apis[i] = api_setup(http, a, err, errsize);
		if (apis[i] == NULL)
			goto done;
	}
	ok = true;
	for (const struct cf_synced_table *t = cfg->synced_tables; t != NULL && ok; t = t->next) {
		struct synced_table st;
		struct sync_table_conf conf;

		memset(&st, 0, sizeof(st));
		memset(&conf, 0, sizeof(conf));
		ok = table_setup(t, apis, napis, &st, &conf, err, errsize);
		table_clear(&st);
	}
done:
	for (i = 0; apis != NULL && i < napis; i++)
		if (apis[i] != NULL)
			api_free(apis[i]);
	free(apis);
	http_engine_free(http);
	return ok;
}

bool synced_start(struct bouncer *b)
{
	struct config *cfg = b->cfg;
	struct synced *sy;
	struct classifier_table *ctabs = NULL;
	const struct cf_synced_table *t;
	const struct cf_api *a;
	char err[1024];
	int n = 0, i;

	for (t = cfg->synced_tables; t != NULL; t = t->next)
		n++;
	/*
	 * With several workers the synced tables live on worker 0 alone (one sync worker, one
	 * settler, one set of API connections); their clients are handed to it at log-in
	 * (synced_home_worker()). The other workers keep the guard's settings refused.
	 */
	if (n == 0 || worker_index(b) != 0)
		return synced_start_settings_only(b);
	sy = calloc(1, sizeof(*sy));
	if (sy == NULL)
		return false;
	sy->b = b;
	/* what the start or the RELOAD read and checked, not the file again: it may have changed */
	sy->cfg = config_copy(b->cfg);
	if (sy->cfg == NULL) {
		log_error("synced tables: out of memory");
		free(sy);
		return false;
	}
	cfg = sy->cfg;
	list_init(&sy->idle_conns);
	list_init(&sy->mutations);
	list_init(&sy->cat_waiters);
	list_init(&sy->describes);
	list_init(&sy->queued);
	sy->http = http_engine_create(b->base, b->dns);
	if (sy->http == NULL)
		goto fail;
	for (a = cfg->apis; a != NULL; a = a->next)
		sy->napis++;
	sy->apis = calloc((size_t)sy->napis + 1, sizeof(*sy->apis));
	sy->api_active = calloc((size_t)sy->napis + 1, sizeof(int));
	sy->api_cap = calloc((size_t)sy->napis + 1, sizeof(int));
	if (sy->apis == NULL || sy->api_active == NULL || sy->api_cap == NULL)
		goto fail;
	for (a = cfg->apis, i = 0; a != NULL; a = a->next, i++) {
		const char *mif = cf_kv_get(a->kv, a->nkv, "max_in_flight");
		sy->api_cap[i] = mif != NULL && atoi(mif) > 0 ? atoi(mif) : 10;
		sy->idle_cap += 2 * sy->api_cap[i];
		sy->apis[i] = api_setup(sy->http, a, err, sizeof(err));
		if (sy->apis[i] == NULL) {
			log_error("%s", err);
			goto fail;
		}
	}
	if (sy->idle_cap < MIN_IDLE_CONNS)
		sy->idle_cap = MIN_IDLE_CONNS;
	sy->tables = calloc((size_t)n, sizeof(*sy->tables));
	sy->sync_confs = calloc((size_t)n, sizeof(*sy->sync_confs));
	ctabs = calloc((size_t)n, sizeof(*ctabs));
	if (sy->tables == NULL || sy->sync_confs == NULL || ctabs == NULL)
		goto fail;
	for (t = cfg->synced_tables, i = 0; t != NULL; t = t->next, i++) {
		struct synced_table *st = &sy->tables[i];

		sy->ntables++;
		if (!table_setup(t, sy->apis, sy->napis, st, &sy->sync_confs[i], err,
		                 sizeof(err))) {
			log_error("%s", err);
			goto fail;
		}
		sy->sync_confs[i].database = st->database;
		sy->sync_confs[i].schema = st->schema;
		sy->sync_confs[i].table = st->table;
		sy->sync_confs[i].api = st->api;
		sy->sync_confs[i].at = &st->at;
		sy->sync_confs[i].lane_cap = sy->api_cap[st->api_index];
		ctabs[i].database = st->database;
		ctabs[i].schema = st->schema;
		ctabs[i].table = st->table;
	}
	sy->cl = classifier_new(ctabs, n);
	if (sy->cl == NULL)
		goto fail;
	free(ctabs);
	ctabs = NULL;
	{
		char path[4096], dir[4096];
		if (cfg->journal_file[0]) {
			snprintf(path, sizeof(path), "%s", cfg->journal_file);
		} else {
			snprintf(dir, sizeof(dir), "%s", b->config_path);
			snprintf(path, sizeof(path), "%s/syncbouncer.journal", dirname(dir));
		}
		sy->journal = journal_open(path);
		if (sy->journal == NULL)
			log_warning(
			        "synced tables: no journal file; an insert the API accepts while "
			        "the database is gone is settled by the sync worker only");
	}
	sy->cat = catalog_create(b->base, cfg, b->users, on_catalog_done, sy);
	if (sy->cat == NULL)
		goto fail;
	sy->settle =
	        settle_create(b->base, sy->cat, sy->journal,
	                            (const struct config *const *)&b->cfg, find_table, sy);
	if (sy->settle == NULL)
		goto fail;
	/* each table's first pass waits for the catalog to have prepared it */
	sy->sync = sync_create(b->base, sy->cat, sy->sync_confs, sy->ntables, on_sync_done, sy);
	if (sy->sync == NULL)
		goto fail;
	b->synced = sy;
	install_hook(b, sy);
	return true;
fail:
	free(ctabs);
	b->synced = sy;
	synced_stop(b);
	return false;
}

void synced_stop(struct bouncer *b)
{
	struct synced *sy = b->synced;
	struct list *it, *tmp;

	if (sy == NULL)
		return;
	sy->reload_pending = false;
	sy->stopping = true;
	/* clients still held for the catalog (the process is stopping): no longer held */
	while (!list_empty(&sy->cat_waiters)) {
		struct list *w = list_first(&sy->cat_waiters);
		list_del(w);
		list_entry(w, struct mut_client, cat_wait)->cat_waiting = false;
	}
	b->hook.inspect = NULL;
	b->hook.client_closed = NULL;
	b->hook.cancel = NULL;
	b->hook.server_answer = NULL;
	b->hook.ctx = NULL;
	list_for_each_safe(it, tmp, &sy->mutations)
	{
		struct mutation *m = list_entry(it, struct mutation, head);
		if ((m->state == MUT_APPLYING || m->state == MUT_COMMITTING) &&
		    m->confirmed != NULL) {
			log_error(
			        "synced table %s: stopping while applying a write that %s accepted "
			        "(%s); journal entry %lld settles it",
			        m->st->qualified, api_name(m->st->api), m->ids ? m->ids : "",
			        (long long)m->intent_id);
			if (m->op == OP_INSERT && m->answer_ids != NULL &&
			    !settle_journal_answer(sy->journal, m->intent_id, m->st->database,
			                           m->answer_ids))
				log_error(
				        "synced table %s: the API's answer (%s) could not be written "
				        "to the journal file",
				        m->st->qualified, m->answer_ids);
		} else if (m->state == MUT_CALLING_API) {
			log_error(
			        "synced table %s: stopping while %s is answering a %s of %d row(s); "
			        "its outcome is unknown, journal entry %lld settles it",
			        m->st->qualified, api_name(m->st->api), stmt_op_str(m->op),
			        m->nrows, (long long)m->intent_id);
		}
		if (m->mc != NULL) {
			m->mc->client->hook_state = NULL;
			m->mc->client->hook_answers = false;
			mixed_free(m->mc->mixed);
			free(m->mc);
			m->mc = NULL;
		}
		m->conn_broken = true;
		mutation_finish(m);
	}
	ext_describes_stop(sy);
	/* the sync worker first: it borrows the catalog, the APIs and the table mappings */
	sync_free(sy->sync);
	sy->sync = NULL;
	list_for_each_safe(it, tmp, &sy->idle_conns) mconn_free(list_entry(it, struct mconn, head));
	settle_free(sy->settle);
	journal_close(sy->journal);
	if (sy->cat != NULL)
		catalog_free(sy->cat);
	if (sy->cl != NULL)
		classifier_free(sy->cl);
	for (int i = 0; i < sy->ntables; i++)
		table_clear(&sy->tables[i]);
	free(sy->tables);
	free(sy->sync_confs);
	for (int i = 0; i < sy->napis; i++)
		if (sy->apis[i] != NULL)
			api_free(sy->apis[i]);
	free(sy->apis);
	free(sy->api_active);
	free(sy->api_cap);
	if (sy->http != NULL)
		http_engine_free(sy->http);
	if (sy->cfg != NULL)
		config_free(sy->cfg);
	free(sy);
	b->synced = NULL;
}

void synced_reload(struct bouncer *b)
{
	struct synced *sy = b->synced;
	struct list waiters;

	if (sy != NULL && !synced_idle(sy)) {
		log_info("synced tables: reload waits for %zu write%s in flight",
		         list_count(&sy->mutations), list_count(&sy->mutations) == 1 ? "" : "s");
		sy->reload_pending = true;
		return;
	}
	/* the new set-up is built beside the old one, which stays if the new one cannot be made */
	list_init(&waiters);
	b->synced = NULL;
	if (!synced_start(b)) {
		b->synced = sy;
		if (sy != NULL) {
			install_hook(b, sy);
			/* the writes held for this RELOAD go on with the set-up that stays */
			sy->reload_pending = false;
			sy->reload_holds = false;
			hook_take_waiters(sy, &waiters);
		}
		log_error(
		        "synced tables: RELOAD failed, the previous [apis] and [synced_tables] stay "
		        "in force; see the messages above");
		hook_resume_waiters(&waiters);
		return;
	}
	{
		struct synced *fresh = b->synced;
		/* queries held for the old catalog are offered to the new set-up (or to none) */
		if (sy != NULL)
			hook_take_waiters(sy, &waiters);
		b->synced = sy;
		synced_stop(b);
		b->synced = fresh;
		if (fresh != NULL) {
			install_hook(b, fresh);
		}
		hook_resume_waiters(&waiters);
	}
}

void synced_shutdown(struct bouncer *b)
{
	struct list *pit, *cit;

	/* clients that are still connected: their hook state goes with the process */
	list_for_each(pit, &b->pools)
	{
		struct pool *pool = list_entry(pit, struct pool, head);
		struct list *lists[] = {&pool->active_clients, &pool->waiting_clients,
		                        &pool->login_clients};
		for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++) {
			list_for_each(cit, lists[i])
			{
				struct conn *c = list_entry(cit, struct conn, head);
				if (c->hook_state != NULL)
					hook_client_closed(b->synced, c);
			}
		}
	}
	synced_stop(b);
}

int synced_in_flight_db(struct bouncer *b, const char *db)
{
	struct list *it;
	int n = 0;

	if (b->synced == NULL)
		return 0;
	list_for_each(it, &b->synced->mutations)
	{
		const struct mutation *m = list_entry(it, struct mutation, head);
		if (db == NULL || db[0] == '\0' || strcmp(m->st->database, db) == 0)
			n++;
	}
	return n;
}

/* ---- the module ------------------------------------------------------------------------- */

/* What lives as long as the process: the history of finished writes and the console views. */
static bool synced_init(struct bouncer *b)
{
	b->history = history_new();
	return b->history != NULL && synced_register_views(b);
}

static void synced_exit(struct bouncer *b)
{
	synced_shutdown(b);
	history_free(b->history);
	b->history = NULL;
}

/* Clients of a database with synced tables are served by worker 0, where the tables live. */
static int synced_home_worker(const struct bouncer *b, const char *db)
{
	for (const struct cf_synced_table *t = b->cfg->synced_tables; t != NULL; t = t->next)
		if (strcmp(t->database, db) == 0)
			return 0;
	return -1;
}

static const char *const synced_commands[] = {"JOURNAL", "SYNC", NULL};

static const char synced_help[] = "\n\tSHOW APIS|SYNCED_TABLES|MUTATIONS|JOURNAL"
                                  "\n\tJOURNAL RETRY <id>"
                                  "\n\tJOURNAL GIVEUP <id> CONFIRM"
                                  "\n\tSYNC [BACKFILL] <db.schema.table>";

/* What the module links that the pooler core does not. */
static void synced_print_versions(FILE *f)
{
	int pq = PQlibVersion();

	fprintf(f, "http: %s\n", curl_version());
	fprintf(f, "libpq: %d.%d\n", pq / 10000, pq % 10000);
	fprintf(f, "sql parser: libpg_query (PostgreSQL %s grammar)\n", PG_VERSION);
	fprintf(f, "json: yajl %d.%d.%d\n", json_yajl_version() / 10000,
	        json_yajl_version() / 100 % 100, json_yajl_version() % 100);
}

const struct module_ops sb_module = {
        .name = "synced tables",
        .version = PACKAGE_VERSION,
        .init = synced_init,
        .start = synced_start,
        .check = synced_check,
        .reload = synced_reload,
        .shutdown = synced_exit,
        .in_flight = synced_in_flight_db,
        .help = synced_help,
        .commands = synced_commands,
        .command = synced_command,
        .admin_gone = synced_forget_admin,
        .write_metrics = synced_write_metrics,
        .foreach_conn = pgc_foreach,
        .print_versions = synced_print_versions,
        .home_worker = synced_home_worker,
};
