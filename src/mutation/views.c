/*
 * views — the admin console's views and commands of the synced-table side (SHOW SYNCED_TABLES,
 * SHOW MUTATIONS, SHOW APIS, SHOW JOURNAL, JOURNAL, SYNC; include/mutation/synced.h).
 */
#include "mutation/synced.h"

#include <event2/buffer.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "api/api.h"
#include "bouncer.h"
#include "conn.h"
#include "mutation/catalog.h"
#include "mutation/history.h"
#include "mutation/hook.h"
#include "mutation/pipeline.h"
#include "mutation/settle.h"
#include "mutation/sync.h"

/* ---- admin console views --------------------------------------------------------------- */

static const char *const synced_tables_columns[] = {
        "database",   "table",       "api",           "object",         "state",      "inserts",
        "updates",    "deletes",     "rejected",      "error",          "sync_state", "last_sync",
        "sync_lag_s", "synced_rows", "backfill_rows", "backfill_total", NULL,
};

static void synced_show_tables(struct bouncer *b, void *ctx, admin_row_cb cb, void *arg)
{
	(void)ctx;
	struct synced *sy = b->synced;
	char num[4][24];

	if (sy == NULL)
		return;
	for (int i = 0; i < sy->ntables; i++) {
		struct synced_table *st = &sy->tables[i];
		struct catalog_table *ct =
		        catalog_find(sy->cat, st->database, st->schema, st->table);
		const char *vals[16];
		struct sync_view sv;
		vals[0] = st->database;
		vals[1] = st->qualified;
		vals[2] = api_name(st->api);
		vals[3] = st->at.object;
		vals[4] = ct ? catalog_state_str(ct->state) : "unknown";
		snprintf(num[0], sizeof(num[0]), "%llu",
		         ct ? (unsigned long long)ct->inserts : 0ULL);
		snprintf(num[1], sizeof(num[1]), "%llu",
		         ct ? (unsigned long long)ct->updates : 0ULL);
		snprintf(num[2], sizeof(num[2]), "%llu",
		         ct ? (unsigned long long)ct->deletes : 0ULL);
		snprintf(num[3], sizeof(num[3]), "%llu",
		         ct ? (unsigned long long)ct->rejected : 0ULL);
		vals[5] = num[0];
		vals[6] = num[1];
		vals[7] = num[2];
		vals[8] = num[3];
		vals[9] = ct && ct->error[0] ? ct->error : NULL;
		sync_view(sy->sync, i, &sv);
		if (vals[9] == NULL && sv.error[0])
			vals[9] = sv.error;
		vals[10] = sv.state;
		vals[11] = sv.last_sync[0] ? sv.last_sync : NULL;
		vals[12] = sv.lag[0] ? sv.lag : NULL;
		vals[13] = sv.synced_rows;
		vals[14] = sv.backfill_rows;
		vals[15] = sv.backfill_total[0] ? sv.backfill_total : NULL;
		cb(arg, 16, vals);
	}
}

static const char *const synced_mutations_columns[] = {
        "client", "database", "table",    "operation",   "rows",       "api",        "state",
        "age",    "outcome",  "sqlstate", "http_status", "request_id", "latency_us", NULL,
};

static void synced_show_mutations(struct bouncer *b, void *ctx, admin_row_cb cb, void *arg)
{
	(void)ctx;
	struct synced *sy = b->synced;
	struct list *it;

	if (sy == NULL)
		return;
	list_for_each(it, &sy->mutations)
	{
		struct mutation *m = list_entry(it, struct mutation, head);
		char client[32], rows[16], age[32];
		const char *vals[13] = {NULL};
		snprintf(client, sizeof(client), "%llu",
		         m->mc ? (unsigned long long)m->mc->client->id : 0ULL);
		snprintf(rows, sizeof(rows), "%d", m->nrows);
		snprintf(age, sizeof(age), "%.3f",
		         (double)(bouncer_now_usec() - m->started) / 1000000.0);
		vals[0] = m->mc ? client : NULL;
		vals[1] = m->st->database;
		vals[2] = m->st->qualified;
		vals[3] = stmt_op_str(m->op);
		vals[4] = rows;
		vals[5] = api_name(m->st->api);
		vals[6] = mut_state_str(m->state);
		vals[7] = age;
		cb(arg, 13, vals);
	}
	history_show(b->history, cb, arg);
}

static const char *const synced_apis_columns[] = {
        "name",   "type",           "base_url", "in_flight",   "queued", "requests",
        "errors", "avg_latency_us", "auth",     "token_state", "usage",  NULL,
};

static void synced_show_apis(struct bouncer *b, void *ctx, admin_row_cb cb, void *arg)
{
	(void)ctx;
	struct synced *sy = b->synced;

	if (sy == NULL)
		return;
	for (int i = 0; i < sy->napis; i++) {
		struct api_stats st;
		char n[5][24], usage[48];
		const char *vals[11];
		api_get_stats(sy->apis[i], &st);
		snprintf(n[0], sizeof(n[0]), "%d", st.in_flight);
		snprintf(n[1], sizeof(n[1]), "%d", st.queued);
		snprintf(n[2], sizeof(n[2]), "%lld", (long long)st.requests);
		snprintf(n[3], sizeof(n[3]), "%lld", (long long)st.errors);
		snprintf(n[4], sizeof(n[4]), "%lld", (long long)st.avg_latency_usec);
		if (st.usage_used >= 0)
			snprintf(usage, sizeof(usage), "%lld/%lld", (long long)st.usage_used,
			         (long long)st.usage_max);
		vals[0] = st.name;
		vals[1] = st.type;
		vals[2] = api_connector(sy->apis[i])->base_url;
		vals[3] = n[0];
		vals[4] = n[1];
		vals[5] = n[2];
		vals[6] = n[3];
		vals[7] = n[4];
		vals[8] = st.auth;
		vals[9] = st.token_state;
		vals[10] = st.usage_used >= 0 ? usage : NULL;
		cb(arg, 11, vals);
	}
}

/* Unsettled intents as the settler's last pass saw them; -1 without synced tables. */
static int synced_journal_backlog(struct bouncer *b)
{
	return b->synced != NULL ? settle_pending(b->synced->settle) : -1;
}

static const char *const synced_journal_columns[] = {
        "id",  "database", "table",      "operation", "keys",    "state",
        "age", "attempts", "last_error", "owner",     "overdue", NULL,
};

static void synced_show_journal(struct bouncer *b, void *ctx, admin_row_cb cb, void *arg)
{
	(void)ctx;
	if (b->synced != NULL)
		settle_show(b->synced->settle, cb, arg);
}

static bool synced_journal_command(struct bouncer *b, const char *arg, char *msg, size_t size)
{
	char verb[16], id[32], word[16];
	int n;

	if (b->synced == NULL) {
		snprintf(msg, size, "no synced tables are configured");
		return false;
	}
	n = sscanf(arg, "%15s %31s %15s", verb, id, word);
	if (n == 2 && strcasecmp(verb, "retry") == 0)
		return settle_retry(b->synced->settle, id, msg, size);
	if (n >= 2 && strcasecmp(verb, "giveup") == 0) {
		if (n != 3 || strcasecmp(word, "confirm") != 0) {
			snprintf(
			        msg, size,
			        "JOURNAL GIVEUP drops a write unsettled, so the table may differ from "
			        "the API: say JOURNAL GIVEUP %s CONFIRM",
			        id);
			return false;
		}
		return settle_give_up(b->synced->settle, id, msg, size);
	}
	snprintf(msg, size, "usage: JOURNAL RETRY <id> | JOURNAL GIVEUP <id> CONFIRM");
	return false;
}

/* ---- admin console commands ------------------------------------------------------------ */

static const char *synced_sync_command(struct bouncer *b, const char *name, bool backfill,
                                       uint64_t conn_id, bool *wait)
{
	*wait = false;
	if (b->synced == NULL || b->synced->sync == NULL)
		return "no synced tables";
	return sync_command(b->synced->sync, name, backfill, conn_id, wait);
}

void synced_forget_admin(struct bouncer *b, uint64_t conn_id)
{
	if (b->synced != NULL)
		sync_forget_waiter(b->synced->sync, conn_id);
}

enum module_cmd synced_command(struct bouncer *b, const char *cmd, const char *arg,
                               uint64_t admin_id, char *msg, size_t size)
{
	if (strcasecmp(cmd, "JOURNAL") == 0)
		return synced_journal_command(b, arg, msg, size) ? MODULE_CMD_DONE
		                                                 : MODULE_CMD_REFUSED;
	if (strcasecmp(cmd, "SYNC") == 0) {
		bool backfill = strncasecmp(arg, "BACKFILL ", 9) == 0, wait = false;
		const char *err =
		        synced_sync_command(b, backfill ? arg + 9 : arg, backfill, admin_id, &wait);
		if (err != NULL) {
			snprintf(msg, size, "%s", err);
			return MODULE_CMD_REFUSED;
		}
		return wait ? MODULE_CMD_WAIT : MODULE_CMD_DONE;
	}
	return MODULE_CMD_UNKNOWN;
}

/* ---- the metrics endpoint ----------------------------------------------------------------- */

void synced_write_metrics(struct bouncer *b, struct evbuffer *out, const char *written)
{
	/* the settler's count of unsettled write-ahead intents */
	int backlog = synced_journal_backlog(b);

	if (backlog >= 0 && strstr(written, "|syncbouncer_journal_pending_entries|") == NULL)
		evbuffer_add_printf(
		        out,
		        "# HELP syncbouncer_journal_pending_entries Synced writes whose "
		        "outcome is not settled yet (SHOW JOURNAL)\n"
		        "# TYPE syncbouncer_journal_pending_entries gauge\n"
		        "syncbouncer_journal_pending_entries %d\n",
		        backlog);
	history_write_metrics(b->history, out);
}

/* The views answer with no rows while the synced-table side is not running. */
bool synced_register_views(struct bouncer *b)
{
	return admin_register_view(b, "APIS", synced_apis_columns, synced_show_apis, NULL) &&
	       admin_register_view(b, "SYNCED_TABLES", synced_tables_columns, synced_show_tables,
	                           NULL) &&
	       admin_register_view(b, "MUTATIONS", synced_mutations_columns, synced_show_mutations,
	                           NULL) &&
	       admin_register_view(b, "JOURNAL", synced_journal_columns, synced_show_journal, NULL);
}
