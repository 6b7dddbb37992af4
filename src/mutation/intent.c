/*
 * intent — the write-ahead intent of a synced write (include/mutation/intent.h): built from the
 * captured images, committed on a companion connection before the API request leaves.
 */
#include "mutation/intent.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/api.h"
#include "api/json.h"
#include "bouncer.h"
#include "log.h"
#include "mutation/answer.h"
#include "mutation/catalog.h"
#include "mutation/pipeline.h"
#include "pgc.h"

/*
 * The intent's row: the images sent ([{"old":..,"new":..}]) and the primary keys of the rows
 * an UPDATE or DELETE touches (an INSERT's come with the API's answer).
 */
static bool intent_build(struct mutation *m)
{
	struct json_out rows, keys;
	size_t len, tl = 0;
	bool ok;

	if (!json_out_init(&rows, 64 * 1024 * 1024))
		return false;
	if (!json_out_init(&keys, 16 * 1024 * 1024)) {
		json_out_free(&rows);
		return false;
	}
	json_out_array_begin(&rows);
	json_out_array_begin(&keys);
	for (int i = 0; i < m->nrows; i++) {
		const struct captured *cr = &m->rows[i];
		const char *key = NULL;
		json_out_object_begin(&rows);
		json_out_key(&rows, "old");
		if (cr->old_json != NULL)
			json_out_value(&rows, cr->old_json);
		else
			json_out_null(&rows);
		json_out_key(&rows, "new");
		if (cr->new_json != NULL)
			json_out_value(&rows, cr->new_json);
		else
			json_out_null(&rows);
		json_out_object_end(&rows);
		for (int k = 0; k < cr->nold; k++)
			if (strcmp(cr->old_vals[k].column, m->st->at.pk_column) == 0)
				key = cr->old_vals[k].value;
		if (m->op != OP_INSERT && key != NULL) {
			size_t add = strlen(key);
			char *grown = realloc(m->keys_text, tl + add + 3);
			json_out_string(&keys, key);
			if (grown != NULL) {
				snprintf(grown + tl, add + 3, "%s%s", tl ? ", " : "", key);
				tl += strlen(grown + tl);
				m->keys_text = grown;
			}
		}
	}
	json_out_array_end(&rows);
	json_out_array_end(&keys);
	ok = json_out_ok(&rows) && json_out_ok(&keys);
	if (ok) {
		m->intent_rows = json_out_take(&rows, &len);
		m->intent_keys = json_out_take(&keys, &len);
		ok = m->intent_rows != NULL && m->intent_keys != NULL;
	}
	json_out_free(&rows);
	json_out_free(&keys);
	return ok;
}

/* The companion connection goes back to the idle list (or away when it is not fit). */
static void intent_conn_release(struct mutation *m)
{
	struct mconn *c = m->iconn;

	m->iconn = NULL;
	if (c == NULL)
		return;
	if (!pgc_ok(c->pc) || pgc_busy(c->pc) || m->sy->stopping ||
	    list_count(&m->sy->idle_conns) >= (size_t)m->sy->idle_cap)
		mconn_free(c);
	else
		list_append(&m->sy->idle_conns, &c->head);
}

static void on_intent_written(void *arg, struct pgc *pc, PGresult *res, const char *error)
{
	struct mutation *m = arg;
	uint64_t took = bouncer_now_usec() - m->intent_started;

	(void)pc;
	if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK) {
		char detail[512];
		snprintf(detail, sizeof(detail), "%s. Nothing was sent to %s.",
		         res == NULL ? error : PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY),
		         api_name(m->st->api));
		if (m->iconn != NULL && res == NULL) {
			mconn_free(m->iconn);
			m->iconn = NULL;
		}
		intent_conn_release(m);
		mutation_set_error(m, "58000",
		                   "could not record the write's intent in the database", detail,
		                   NULL);
		mutation_intent_done(m);
		return;
	}
	intent_conn_release(m);
	m->intent_written = true;
	log_debug("synced table %s: intent %lld written in %llu us", m->st->qualified,
	          (long long)m->intent_id, (unsigned long long)took);
	mutation_intent_done(m);
}

/* A failed connect reaches on_intent_written through the queued INSERT's failure. */
static void on_intent_conn(void *arg, struct pgc *pc, const char *error)
{
	(void)arg;
	(void)pc;
	(void)error;
}

/*
 * Commits the intent on a companion connection of the same database, while the mutation's own
 * transaction keeps the rows locked; the request leaves only once the intent is durable.
 */
void intent_write(struct mutation *m)
{
	struct synced *sy = m->sy;
	struct list *it;
	char id[24], relid[16],
	        op[2] = {m->op == OP_INSERT   ? 'I'
	                 : m->op == OP_UPDATE ? 'U'
	                                      : 'D',
	                 0};
	char owner[320], host[256];
	const char *params[9];

	m->intent_pending = true;
	if (!intent_build(m)) {
		mutation_set_error(m, "53200", "out of memory recording the write's intent", NULL,
		                   NULL);
		mutation_intent_done(m);
		return;
	}
	list_for_each(it, &sy->idle_conns)
	{
		struct mconn *c = list_entry(it, struct mconn, head);
		if (strcmp(c->conninfo, m->conninfo) == 0 && pgc_ok(c->pc) && !pgc_busy(c->pc)) {
			list_del(&c->head);
			m->iconn = c;
			break;
		}
	}
	if (m->iconn == NULL) {
		m->iconn = calloc(1, sizeof(*m->iconn));
		if (m->iconn == NULL || (m->iconn->conninfo = strdup(m->conninfo)) == NULL ||
		    (list_init(&m->iconn->head),
		     (m->iconn->pc = pgc_connect(sy->b->base, m->conninfo, on_intent_conn, m)) ==
		             NULL)) {
			if (m->iconn != NULL)
				free(m->iconn->conninfo);
			free(m->iconn);
			m->iconn = NULL;
			mutation_set_error(m, "53200", "out of memory", NULL, NULL);
			mutation_intent_done(m);
			return;
		}
	}
	snprintf(id, sizeof(id), "%lld", (long long)m->intent_id);
	snprintf(relid, sizeof(relid), "%u", m->ct->relid);
	params[0] = id;
	params[1] = relid;
	params[2] = m->st->qualified;
	params[3] = op;
	params[4] = api_name(m->st->api);
	params[5] = m->intent_rows;
	params[6] = m->intent_keys;
	params[7] = m->intent_key;
	if (gethostname(host, sizeof(host)) != 0)
		snprintf(host, sizeof(host), "?");
	host[sizeof(host) - 1] = '\0';
	snprintf(owner, sizeof(owner), "%s pid %d", host, (int)getpid());
	params[8] = owner;
	m->intent_started = bouncer_now_usec();
	/* the same text at every write: parsed once per connection (the request waits for it) */
	if (!pgc_send_named(m->iconn->pc, "sb_intent",
	                    "CALL syncbouncer.intent_record($1::int8, $2::oid, $3, $4::\"char\", "
	                    "$5, $6::jsonb, $7::jsonb, $8, $9)",
	                    9, params, true, on_intent_written, m)) {
		mconn_free(m->iconn);
		m->iconn = NULL;
		mutation_set_error(m, "58000",
		                   "could not record the write's intent in the database", NULL,
		                   NULL);
		mutation_intent_done(m);
	}
}
