/*
 * settle — see include/mutation/settle.h. A pass walks the synced databases one after another;
 * in each it lists syncbouncer.intent (for SHOW JOURNAL and the deadline), drops the entries the
 * console gave up, then settles the intents whose writer is gone, one at a time:
 *   BEGIN; mode sync; claim the intent (FOR UPDATE, advisory lock) ->
 *   find the record ids (keys, answer, journal, external ids, a keyed repeat while the API
 *   still keeps the key, or the key the record carries) -> read each
 *   record at the API -> write its state (or delete the row) -> DELETE the intent; COMMIT.
 * Any failure rolls the transaction back, counts an attempt with its error in the intent, and
 * tries again later (backing off). The API is asked; nothing stored is ever written blindly.
 * A write of the API's state that the table does not take (a trigger or rule of its own turns
 * the row away: nothing written, no error) is never taken for settled, nor tried again by
 * itself: it waits for the operator (needs_operator) with what happened.
 */
#include "mutation/settle.h"

#include <event2/event.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "api/api.h"
#include "api/json.h"
#include "config.h"
#include "log.h"
#include "mutation/catalog.h"
#include "mutation/journal.h"
#include "pgc.h"

#define SETTLE_HISTORY  100
#define SETTLE_LIST_MAX 1000
#define SETTLE_IDLE_MS  10000 /* a pass this often even when nothing is known to be pending */

static const struct json_limits settle_limits = {64 * 1024 * 1024, 64, 10000000};

/* One intent as the last listing saw it. */
struct entry {
	int64_t id;
	char *db, *table, *op, *api, *keys, *last_error, *owner;
	int attempts;
	double age;
	bool in_flight, has_answer;
	bool seen;       /* in the listing of this pass */
	bool alerted;    /* its deadline was missed and logged */
	bool give_up;    /* the console asked to drop it */
	bool waits_sync; /* no way to find the created record but the sync worker */
	/*
	 * No way left to find the created record that cannot create a second one: tried again
	 * only when the console asks (JOURNAL RETRY).
	 */
	bool needs_operator;
	bool key_replays_error; /* a repeat got the key's saved error answer: decides nothing */
	uint64_t next_try;
	uint64_t unowned_at; /* when this settler first saw no writer holding it (0: not yet) */
	uint64_t ready_at;   /* no request of its writer can land after this (0: not known yet) */
};

/* How a settled (or given up) intent ended, for SHOW JOURNAL. */
struct outcome {
	int64_t id;
	char db[64], table[128], op[8], keys[256], state[32], detail[256];
	uint64_t at;
};

/* An API answer from the journal file, for an insert whose database was gone. */
struct janswer {
	int64_t id;
	char *journal_id;
	char *ids; /* JSON array */
};

enum pass_step {
	STEP_IDLE,
	STEP_CONNECTING,
	STEP_LISTING,
	STEP_GIVING_UP,
	STEP_CLAIMING,
	STEP_ASKING_API,
	STEP_WRITING,
	STEP_COMMITTING,
	STEP_FAILING,
};

static const char *pass_step_str(enum pass_step st)
{
	switch (st) {
	case STEP_IDLE:
		return "idle";
	case STEP_CONNECTING:
		return "connecting";
	case STEP_LISTING:
		return "listing";
	case STEP_GIVING_UP:
		return "giving up";
	case STEP_CLAIMING:
		return "claiming";
	case STEP_ASKING_API:
		return "asking the API";
	case STEP_WRITING:
		return "writing";
	case STEP_COMMITTING:
		return "committing";
	case STEP_FAILING:
		return "failing";
	}
	return "?";
}

struct settle {
	struct event_base *base;
	struct catalog *cat;
	struct journal *journal;
	const struct config *const *cfg; /* the worker's, read at each use: SET changes it */
	settle_find_cb find;
	void *find_arg;
	struct event *ev;
	uint64_t planned; /* when the timer fires, 0 = not armed */
	bool again;       /* kicked during a pass: another one right after */

	struct entry *entries;
	int nentries;
	struct outcome history[SETTLE_HISTORY];
	int nhistory, hnext;
	struct janswer *janswers;
	int njanswers;
	bool warned_old; /* an older journal entry was reported */

	/* the pass */
	enum pass_step step;
	char **dbs;
	int ndbs, idb;
	struct pgc *pc;
	int64_t *cands;
	int ncands, icand;
	int nleft; /* statements queued whose answers are awaited */
	bool stmt_failed;
	char stmt_error[256];
	/* the intent being settled */
	int64_t cur;
	char op;
	struct settle_table t;
	struct json_value *rows; /* [{"old":..,"new":..}] */
	char **ids;              /* record ids, one per row (NULL: none) */
	int nids, iid;
	int ifind, nfound; /* an insert found by its rows' external ids */
	char *idem_key;
	double age_s;      /* of the intent, by the database's clock */
	bool key_replayed; /* the repeat got the key's saved error answer */
	/*
	 * The statements that write one record's state: update_sql, insert_sql (only when no row
	 * has the key), then held_sql (does the row hold the API's state now?); or delete_sql,
	 * then kept_sql (is the row still there?).
	 */
	char *update_sql, *insert_sql, *held_sql, *delete_sql, *kept_sql;
	bool deleting; /* the record's statements are delete_sql and kept_sql */
	long nwritten; /* rows update_sql and insert_sql wrote */
	bool found;    /* what held_sql or kept_sql answered */
	char **fields; /* the API fields of the table's columns, for the reads */
	int nfields;
	struct api_call *call;
	struct api_row *repeat_rows;
	struct api_value **repeat_vals;
	char **owned;
	int nowned;
	const char *outcome; /* how it ended, once it did */
};

static void step_set(struct settle *s, enum pass_step st)
{
	if (s->step != st)
		log_debug("settle: %s -> %s", pass_step_str(s->step), pass_step_str(st));
	s->step = st;
}

static uint64_t now_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

int64_t settle_new_id(void)
{
	uint64_t v = 0;

	if (getrandom(&v, sizeof(v), 0) != (ssize_t)sizeof(v)) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		v = ((uint64_t)ts.tv_sec << 30) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 44);
	}
	v &= (UINT64_C(1) << 62) - 1;
	return v == 0 ? 1 : (int64_t)v;
}

bool settle_image_values(const struct json_value *img, struct api_value **out, int *n,
                         char ***owned, int *nowned)
{
	struct api_value *vals;

	*out = NULL;
	*n = 0;
	if (img == NULL || img->kind != JSON_OBJECT)
		return img == NULL || img->kind == JSON_NULL;
	vals = calloc(img->count ? img->count : 1, sizeof(*vals));
	if (vals == NULL)
		return false;
	for (size_t i = 0; i < img->count; i++) {
		const struct json_value *v = img->items[i];
		vals[i].column = img->keys[i];
		switch (v->kind) {
		case JSON_NUMBER:
			vals[i].type = API_VALUE_NUMBER;
			break;
		case JSON_BOOL:
			vals[i].type = API_VALUE_BOOL;
			break;
		case JSON_ARRAY:
		case JSON_OBJECT:
			/* json, jsonb and array columns go to the API as JSON */
			vals[i].type = API_VALUE_JSON;
			break;
		default:
			vals[i].type = API_VALUE_TEXT;
			break;
		}
		switch (v->kind) {
		case JSON_NULL:
			vals[i].value = NULL;
			break;
		case JSON_BOOL:
			vals[i].value = v->boolean ? "true" : "false";
			break;
		case JSON_NUMBER:
		case JSON_STRING:
			vals[i].value = v->str;
			break;
		case JSON_ARRAY:
		case JSON_OBJECT: {
			struct json_out jo;
			size_t len;
			char *text, **grown;
			if (!json_out_init(&jo, 1024 * 1024)) {
				free(vals);
				return false;
			}
			json_out_value(&jo, v);
			text = json_out_ok(&jo) ? json_out_take(&jo, &len) : NULL;
			json_out_free(&jo);
			grown = realloc(*owned, sizeof(char *) * (size_t)(*nowned + 1));
			if (text == NULL || grown == NULL) {
				free(text);
				free(vals);
				if (grown != NULL)
					*owned = grown;
				return false;
			}
			*owned = grown;
			(*owned)[(*nowned)++] = text;
			vals[i].value = text;
			break;
		}
		}
	}
	*out = vals;
	*n = (int)img->count;
	return true;
}

bool settle_journal_answer(struct journal *j, int64_t id, const char *database,
                           const char *ids_json)
{
	char jid[96], *line;
	size_t len = strlen(database) * 2 + strlen(ids_json) + 256;
	int n;
	bool ok;

	if (j == NULL)
		return false;
	line = malloc(len);
	if (line == NULL)
		return false;
	journal_new_id(j, jid, sizeof(jid));
	{
		/* the database name as a JSON string */
		struct json_out o;
		size_t dl;
		char *dbj = NULL;
		if (json_out_init(&o, 4096)) {
			json_out_string(&o, database);
			dbj = json_out_ok(&o) ? json_out_take(&o, &dl) : NULL;
			json_out_free(&o);
		}
		if (dbj == NULL) {
			free(line);
			return false;
		}
		n = snprintf(line, len,
		             "{\"id\":\"%s\",\"intent\":\"%" PRId64 "\",\"db\":%s,\"ids\":%s}", jid,
		             id, dbj, ids_json);
		free(dbj);
	}
	ok = n > 0 && (size_t)n < len && journal_append(j, line, (size_t)n);
	free(line);
	return ok;
}

/* ---- the cache SHOW JOURNAL reads ---------------------------------------------------------- */

static void entry_free(struct entry *e)
{
	free(e->db);
	free(e->table);
	free(e->op);
	free(e->api);
	free(e->keys);
	free(e->last_error);
	free(e->owner);
}

/*
 * The earliest moment the API may be asked about an intent: once no request of its writer can
 * still land there. Counted from when this settler first saw the intent unowned (unowned_at),
 * not from the intent's creation: a request may leave long after its intent was written (a
 * busy loop, a full lane, a repeat after a timeout or a rate limit), and the writer sends
 * nothing more once its lock is gone, but what it sent may still be on its way, or queued at
 * the API, for a while: twice the API's timeout and a second. A settler that restarts sees the
 * intent anew, which only makes the wait longer.
 */
static uint64_t ready_time(uint64_t unowned_at, const struct api *api)
{
	return unowned_at + 2 * (uint64_t)api_timeout_usec(api) + 1000000u;
}

/* When the entry may be tried next: after its back-off, and not before it is ready. */
static uint64_t entry_due(const struct entry *e)
{
	return e->next_try > e->ready_at ? e->next_try : e->ready_at;
}

static struct entry *entry_find(struct settle *s, int64_t id)
{
	for (int i = 0; i < s->nentries; i++)
		if (s->entries[i].id == id)
			return &s->entries[i];
	return NULL;
}

static const char *op_word(const char *op)
{
	return op == NULL ? "?" : op[0] == 'I' ? "insert" : op[0] == 'U' ? "update" : "delete";
}

static void history_add(struct settle *s, const struct entry *e, int64_t id, const char *state,
                        const char *detail)
{
	struct outcome *o = &s->history[s->hnext];

	memset(o, 0, sizeof(*o));
	o->id = id;
	if (e != NULL) {
		snprintf(o->db, sizeof(o->db), "%s", e->db ? e->db : "");
		snprintf(o->table, sizeof(o->table), "%s", e->table ? e->table : "");
		snprintf(o->op, sizeof(o->op), "%s", op_word(e->op));
		snprintf(o->keys, sizeof(o->keys), "%s", e->keys ? e->keys : "");
	}
	snprintf(o->state, sizeof(o->state), "%s", state);
	snprintf(o->detail, sizeof(o->detail), "%s", detail ? detail : "");
	o->at = now_usec();
	s->hnext = (s->hnext + 1) % SETTLE_HISTORY;
	if (s->nhistory < SETTLE_HISTORY)
		s->nhistory++;
}

const char *const settle_journal_columns[] = {
        "id",  "database", "table",      "operation", "keys",    "state",
        "age", "attempts", "last_error", "owner",     "overdue", NULL,
};

int settle_pending(const struct settle *s)
{
	int n = 0;

	if (s == NULL)
		return -1;
	for (int i = 0; i < s->nentries; i++)
		if (!s->entries[i].in_flight)
			n++;
	return n;
}

void settle_show(struct settle *s, settle_row_cb cb, void *arg)
{
	int64_t deadline;

	if (s == NULL)
		return;
	deadline = (*s->cfg)->settle_deadline;
	for (int i = 0; i < s->nentries; i++) {
		const struct entry *e = &s->entries[i];
		char id[24], age[32], att[16];
		const char *vals[11];
		snprintf(id, sizeof(id), "%" PRId64, e->id);
		snprintf(age, sizeof(age), "%.1f", e->age);
		snprintf(att, sizeof(att), "%d", e->attempts);
		vals[0] = id;
		vals[1] = e->db;
		vals[2] = e->table;
		vals[3] = op_word(e->op);
		vals[4] = e->keys;
		vals[5] = e->give_up                 ? "giving up"
		          : e->in_flight             ? "in flight"
		          : e->ready_at > now_usec() ? "awaiting late request"
		          : e->needs_operator        ? "needs operator"
		          : e->waits_sync            ? "awaiting sync"
		                                     : "unsettled";
		vals[6] = age;
		vals[7] = att;
		vals[8] = e->last_error && e->last_error[0] ? e->last_error : NULL;
		vals[9] = e->owner && e->owner[0] ? e->owner : NULL;
		vals[10] = !e->in_flight && deadline > 0 && e->age * 1e6 > (double)deadline
		                   ? "yes"
		                   : "no";
		cb(arg, 11, vals);
	}
	for (int k = 0; k < s->nhistory; k++) {
		int i = (s->hnext - 1 - k + 2 * SETTLE_HISTORY) % SETTLE_HISTORY;
		const struct outcome *o = &s->history[i];
		char id[24], age[32];
		const char *vals[11];
		snprintf(id, sizeof(id), "%" PRId64, o->id);
		snprintf(age, sizeof(age), "%.1f", (double)(now_usec() - o->at) / 1e6);
		vals[0] = id;
		vals[1] = o->db;
		vals[2] = o->table;
		vals[3] = o->op;
		vals[4] = o->keys;
		vals[5] = o->state;
		vals[6] = age;
		vals[7] = NULL;
		vals[8] = o->detail[0] ? o->detail : NULL;
		vals[9] = NULL;
		vals[10] = "no";
		cb(arg, 11, vals);
	}
}

static bool parse_id(const char *text, int64_t *out)
{
	char *end;
	long long v;

	if (text == NULL || text[0] == '\0')
		return false;
	v = strtoll(text, &end, 10);
	if (*end != '\0' || v <= 0)
		return false;
	*out = (int64_t)v;
	return true;
}

bool settle_retry(struct settle *s, const char *id, char *msg, size_t size)
{
	int64_t v;
	struct entry *e;

	if (s == NULL || !parse_id(id, &v) || (e = entry_find(s, v)) == NULL) {
		snprintf(msg, size, "no journal entry %s (SHOW JOURNAL lists them)", id);
		return false;
	}
	e->next_try = 0;
	/* asked again from the start: the pass marks it again if nothing changed */
	e->needs_operator = false;
	if (e->ready_at > now_usec()) {
		/* asking sooner could read the record before the writer's request lands */
		settle_kick(s, (int)((e->ready_at - now_usec()) / 1000) + 1);
		snprintf(msg, size,
		         "journal entry %s: settling in %.1f s, when no request of its writer can "
		         "still land at the API",
		         id, (double)(e->ready_at - now_usec()) / 1e6);
		return true;
	}
	settle_kick(s, 0);
	snprintf(msg, size, "journal entry %s: settling now", id);
	return true;
}

bool settle_give_up(struct settle *s, const char *id, char *msg, size_t size)
{
	int64_t v;
	struct entry *e;

	if (s == NULL || !parse_id(id, &v) || (e = entry_find(s, v)) == NULL) {
		snprintf(msg, size, "no journal entry %s (SHOW JOURNAL lists them)", id);
		return false;
	}
	e->give_up = true;
	log_warning("journal entry %s (%s of %s, keys %s): giving up on settling it, as the "
	            "console asked; the table may differ from the API until the next sync",
	            id, op_word(e->op), e->table ? e->table : "?", e->keys ? e->keys : "");
	settle_kick(s, 0);
	snprintf(msg, size, "journal entry %s will be dropped unsettled", id);
	return true;
}

/* ---- journal answers --------------------------------------------------------------------- */

static void jan_free_all(struct settle *s)
{
	for (int i = 0; i < s->njanswers; i++) {
		free(s->janswers[i].journal_id);
		free(s->janswers[i].ids);
	}
	free(s->janswers);
	s->janswers = NULL;
	s->njanswers = 0;
}

static void collect_answer(void *arg, const char *jid, const char *line)
{
	struct settle *s = arg;
	struct json_value *v = NULL;
	const struct json_value *ids;
	struct janswer *grown;
	char err[128];
	int64_t id;

	if (!json_parse(line, strlen(line), &settle_limits, &v, err, sizeof(err)))
		return;
	ids = json_get(v, "ids");
	if (!parse_id(json_get_string(v, "intent"), &id) || ids == NULL ||
	    ids->kind != JSON_ARRAY) {
		if (json_get_string(v, "intent") == NULL && !s->warned_old) {
			s->warned_old = true;
			log_warning(
			        "journal entry %s (and any other like it) is of an older kind, a "
			        "change image rather than an API answer: it is not applied; check "
			        "its table by hand, then remove it from the journal file",
			        jid);
		}
		json_free(v);
		return;
	}
	grown = realloc(s->janswers, sizeof(*grown) * (size_t)(s->njanswers + 1));
	if (grown != NULL) {
		struct json_out o;
		size_t len;
		s->janswers = grown;
		grown = &s->janswers[s->njanswers];
		grown->id = id;
		grown->journal_id = strdup(jid);
		grown->ids = NULL;
		if (json_out_init(&o, 16 * 1024 * 1024)) {
			json_out_value(&o, ids);
			grown->ids = json_out_ok(&o) ? json_out_take(&o, &len) : NULL;
			json_out_free(&o);
		}
		if (grown->journal_id != NULL && grown->ids != NULL) {
			s->njanswers++;
		} else {
			free(grown->journal_id);
			free(grown->ids);
		}
	}
	json_free(v);
}

static const struct janswer *jan_find(struct settle *s, int64_t id)
{
	for (int i = 0; i < s->njanswers; i++)
		if (s->janswers[i].id == id)
			return &s->janswers[i];
	return NULL;
}

/* ---- the pass -------------------------------------------------------------------------- */

static void quote_ident(char *out, size_t size, const char *name)
{
	size_t o = 0;

	out[o++] = '"';
	for (const char *p = name; *p && o + 3 < size; p++) {
		if (*p == '"')
			out[o++] = '"';
		out[o++] = *p;
	}
	out[o++] = '"';
	out[o] = '\0';
}

static void pass_next_db(struct settle *s);
static void cand_next(struct settle *s);
static void cur_fail(struct settle *s, const char *why);
static void ask_next(struct settle *s);

static void cur_reset(struct settle *s)
{
	if (s->call != NULL) {
		api_call_cancel(s->call);
		s->call = NULL;
	}
	json_free(s->rows);
	s->rows = NULL;
	for (int i = 0; i < s->nids; i++)
		free(s->ids[i]);
	free(s->ids);
	s->ids = NULL;
	s->nids = s->iid = 0;
	s->ifind = s->nfound = 0;
	free(s->idem_key);
	s->idem_key = NULL;
	s->age_s = 0;
	s->key_replayed = false;
	free(s->update_sql);
	free(s->insert_sql);
	free(s->held_sql);
	free(s->delete_sql);
	free(s->kept_sql);
	s->update_sql = s->insert_sql = s->held_sql = s->delete_sql = s->kept_sql = NULL;
	for (int i = 0; i < s->nfields; i++)
		free(s->fields[i]);
	free(s->fields);
	s->fields = NULL;
	s->nfields = 0;
	free(s->repeat_rows);
	s->repeat_rows = NULL;
	if (s->repeat_vals != NULL) {
		free(s->repeat_vals[0]);
		free(s->repeat_vals);
		s->repeat_vals = NULL;
	}
	for (int i = 0; i < s->nowned; i++)
		free(s->owned[i]);
	free(s->owned);
	s->owned = NULL;
	s->nowned = 0;
	s->cur = 0;
	s->outcome = NULL;
	memset(&s->t, 0, sizeof(s->t));
}

static void pass_end(struct settle *s)
{
	bool pending = false;
	uint64_t now = now_usec(), soonest = 0;
	int delay_ms;

	cur_reset(s);
	pgc_close(s->pc);
	s->pc = NULL;
	for (int i = 0; i < s->ndbs; i++)
		free(s->dbs[i]);
	free(s->dbs);
	s->dbs = NULL;
	s->ndbs = s->idb = 0;
	free(s->cands);
	s->cands = NULL;
	s->ncands = s->icand = 0;
	step_set(s, STEP_IDLE);
	for (int i = 0; i < s->nentries; i++) {
		const struct entry *e = &s->entries[i];
		if (e->in_flight || e->waits_sync || e->needs_operator)
			continue;
		pending = true;
		if (soonest == 0 || entry_due(e) < soonest)
			soonest = entry_due(e);
	}
	if (s->again)
		delay_ms = 100;
	else if (pending)
		delay_ms = soonest > now ? (int)((soonest - now) / 1000) + 1 : 200;
	else
		delay_ms = SETTLE_IDLE_MS;
	if (delay_ms > SETTLE_IDLE_MS)
		delay_ms = SETTLE_IDLE_MS;
	s->again = false;
	s->planned = 0;
	settle_kick(s, delay_ms);
}

static bool q(struct settle *s, const char *sql, int n, const char *const *params, pgc_result_cb cb)
{
	if (!pgc_query(s->pc, sql, n, NULL, params, NULL, NULL, 0, cb, s))
		return false;
	s->nleft++;
	return true;
}

/* Counts one answer of a group; returns true when the group is complete. */
static bool group_done(struct settle *s, PGresult *res, const char *error)
{
	if (res == NULL ||
	    (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK)) {
		if (!s->stmt_failed)
			snprintf(s->stmt_error, sizeof(s->stmt_error), "%s",
			         res == NULL ? (error ? error : "connection lost")
			         : PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY)
			                 ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY)
			                 : "error");
		s->stmt_failed = true;
	}
	return --s->nleft == 0;
}

static void on_ignored(void *arg, struct pgc *pc, PGresult *res, const char *error)
{
	(void)pc;
	(void)res;
	(void)error;
	((struct settle *)arg)->nleft--;
}

/* After a failed attempt is recorded: the next candidate (or the next database). */
static void on_failure_noted(void *arg, struct pgc *pc, PGresult *res, const char *error)
{
	struct settle *s = arg;

	(void)pc;
	(void)res;
	(void)error;
	s->nleft--;
	if (s->nleft > 0)
		return;
	cur_reset(s);
	if (!pgc_ok(s->pc)) {
		pass_next_db(s);
		return;
	}
	cand_next(s);
}

/* The attempt failed: roll back, count it with its error, back off. */
static void cur_fail(struct settle *s, const char *why)
{
	struct entry *e = entry_find(s, s->cur);
	char idt[24];
	const char *params[2];

	step_set(s, STEP_FAILING);
	if (s->call != NULL) {
		api_call_cancel(s->call);
		s->call = NULL;
	}
	if (e != NULL) {
		int shift = e->attempts < 6 ? e->attempts : 6;
		free(e->last_error);
		e->last_error = strdup(why);
		e->attempts++;
		e->next_try = now_usec() + (UINT64_C(500000) << shift);
		if (e->next_try > now_usec() + 30000000u)
			e->next_try = now_usec() + 30000000u;
	}
	log_warning("journal entry %" PRId64 ": not settled yet: %s", s->cur, why);
	snprintf(idt, sizeof(idt), "%" PRId64, s->cur);
	params[0] = idt;
	params[1] = why;
	s->nleft = 0;
	if (!q(s, "ROLLBACK", 0, NULL, on_ignored) ||
	    !q(s,
	       "UPDATE syncbouncer.intent SET attempts = attempts + 1, last_error = $2 "
	       "WHERE id = $1::int8",
	       2, params, on_failure_noted)) {
		cur_reset(s);
		pass_next_db(s);
	}
}

static void on_committed(void *arg, struct pgc *pc, PGresult *res, const char *error)
{
	struct settle *s = arg;
	struct entry *e;
	const struct janswer *ja;

	(void)pc;
	if (!group_done(s, res, error))
		return;
	if (s->stmt_failed) {
		char why[300];
		snprintf(why, sizeof(why), "writing the API's state failed: %s", s->stmt_error);
		s->stmt_failed = false;
		if (!pgc_ok(s->pc)) {
			cur_reset(s);
			pass_next_db(s);
			return;
		}
		cur_fail(s, why);
		return;
	}
	e = entry_find(s, s->cur);
	log_info("journal entry %" PRId64 " settled (%s of %s, keys %s): %s", s->cur,
	         e ? op_word(e->op) : "?", e && e->table ? e->table : "?",
	         e && e->keys ? e->keys : "", s->outcome);
	history_add(s, e, s->cur, "settled", s->outcome);
	if ((ja = jan_find(s, s->cur)) != NULL && s->journal != NULL &&
	    !journal_mark_done(s->journal, ja->journal_id))
		log_error("journal: cannot mark %s done", ja->journal_id);
	if (e != NULL) {
		entry_free(e);
		*e = s->entries[--s->nentries];
	}
	cur_reset(s);
	cand_next(s);
}

static void finish_cur(struct settle *s)
{
	char idt[24];
	const char *params[1] = {idt};

	step_set(s, STEP_COMMITTING);
	snprintf(idt, sizeof(idt), "%" PRId64, s->cur);
	s->stmt_failed = false;
	if (!q(s, "DELETE FROM syncbouncer.intent WHERE id = $1::int8", 1, params, on_committed) ||
	    !q(s, "COMMIT", 0, NULL, on_committed)) {
		cur_reset(s);
		pass_next_db(s);
	}
}

/*
 * The table did not take the API's state of the record being written: the statements ran
 * without an error, but a trigger or rule of the table's own dropped the row (or the delete),
 * and the row does not hold that state already (a trigger that skips updates that would change
 * nothing, such as suppress_redundant_updates_trigger(), is no refusal).
 * Settling it now would leave the table without what the API holds, and trying again alone
 * would meet the same trigger: the entry waits for JOURNAL RETRY (or GIVEUP).
 */
static void turned_away(struct settle *s)
{
	struct entry *e = entry_find(s, s->cur);
	const char *id = s->ids[s->iid];
	char why[900];

	if (s->deleting)
		snprintf(
		        why, sizeof(why),
		        "%s no longer has record %s but table %s.%s kept its row: a trigger or rule "
		        "of the table turned the delete away; fix the trigger (or rule), then "
		        "JOURNAL RETRY %" PRId64 ", or JOURNAL GIVEUP %" PRId64
		        " CONFIRM to leave the row in the table",
		        api_name(s->t.api), id, s->t.ct->schema, s->t.ct->table, s->cur, s->cur);
	else
		snprintf(
		        why, sizeof(why),
		        "%s has record %s but table %s.%s did not take it: a trigger or rule of the "
		        "table turned the row away; fix the trigger (or rule), then JOURNAL RETRY "
		        "%" PRId64 ", or JOURNAL GIVEUP %" PRId64
		        " CONFIRM to leave the table without the API's state of it",
		        api_name(s->t.api), id, s->t.ct->schema, s->t.ct->table, s->cur, s->cur);
	if (e != NULL)
		e->needs_operator = true;
	cur_fail(s, why);
}

static void on_written(void *arg, struct pgc *pc, PGresult *res, const char *error)
{
	struct settle *s = arg;

	(void)pc;
	if (res != NULL && PQresultStatus(res) == PGRES_COMMAND_OK)
		s->nwritten += atol(PQcmdTuples(res));
	else if (res != NULL && PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
		s->found = PQgetvalue(res, 0, 0)[0] == 't';
	if (!group_done(s, res, error))
		return;
	if (s->stmt_failed) {
		char why[300];
		snprintf(why, sizeof(why), "writing the API's state failed: %s", s->stmt_error);
		s->stmt_failed = false;
		cur_fail(s, why);
		return;
	}
	if (s->deleting ? s->found : s->nwritten == 0 && !s->found) {
		turned_away(s);
		return;
	}
	s->iid++;
	ask_next(s);
}

/* The API's fields of a record as {column: text-or-null} for jsonb_populate_record(). */
static char *fields_json(const struct api_row_result *rr)
{
	struct json_out o;
	size_t len;
	char *text;

	if (!json_out_init(&o, 64 * 1024 * 1024))
		return NULL;
	json_out_object_begin(&o);
	for (int f = 0; f < rr->nfields; f++) {
		if (rr->fields[f].column == NULL || rr->fields[f].column[0] == '\0')
			continue;
		json_out_key(&o, rr->fields[f].column);
		if (rr->fields[f].value != NULL)
			json_out_string(&o, rr->fields[f].value);
		else
			json_out_null(&o);
	}
	json_out_object_end(&o);
	text = json_out_ok(&o) ? json_out_take(&o, &len) : NULL;
	json_out_free(&o);
	return text;
}

static void on_read(void *arg, struct api_result *ar)
{
	struct settle *s = arg;
	const char *id = s->ids[s->iid];

	s->call = NULL;
	step_set(s, STEP_WRITING);
	s->stmt_failed = false;
	s->nwritten = 0;
	s->found = false;
	s->deleting = !ar->ok && ar->error.cls == API_ERR_NOT_FOUND;
	if (s->deleting) {
		/* the API has no such record (any more): neither has the table */
		const char *params[1] = {id};
		if (!q(s, s->delete_sql, 1, params, on_written) ||
		    !q(s, s->kept_sql, 1, params, on_written))
			cur_fail(s, "could not queue a statement");
		return;
	}
	if (!ar->ok) {
		char why[700];
		snprintf(why, sizeof(why), "reading %s at %s failed: %s", id, api_name(s->t.api),
		         ar->error.message);
		cur_fail(s, why);
		return;
	}
	{
		char *fields = fields_json(&ar->rows[0]);
		char *base = NULL;
		const char *params[3];
		bool ok;

		if (fields == NULL) {
			cur_fail(s, "out of memory");
			return;
		}
		if (s->op == 'I') {
			/* the image sent (defaults and local columns), under the API's fields */
			const struct json_value *row = json_at(s->rows, (size_t)s->iid);
			const struct json_value *img = json_get(row, "new");
			struct json_out o;
			size_t len;
			if (img != NULL && json_out_init(&o, 64 * 1024 * 1024)) {
				json_out_value(&o, img);
				base = json_out_ok(&o) ? json_out_take(&o, &len) : NULL;
				json_out_free(&o);
			}
		}
		params[0] = fields;
		params[1] = id;
		params[2] = base;
		ok = q(s, s->update_sql, 2, params, on_written) &&
		     q(s, s->insert_sql, 3, params, on_written) &&
		     q(s, s->held_sql, 2, params, on_written);
		free(fields);
		free(base);
		if (!ok)
			cur_fail(s, "could not queue a statement");
	}
}

/* Reads the next record id at the API, or commits when all are written. */
static void ask_next(struct settle *s)
{
	while (s->iid < s->nids && s->ids[s->iid] == NULL)
		s->iid++;
	if (s->iid >= s->nids) {
		finish_cur(s);
		return;
	}
	step_set(s, STEP_ASKING_API);
	s->call = api_submit_read(s->t.api, s->t.at, s->ids[s->iid], (const char *const *)s->fields,
	                          s->nfields, on_read, s);
	if (s->call == NULL)
		cur_fail(s, "out of memory");
}

static void find_by_key(struct settle *s);
static void leave_to_operator(struct settle *s, struct entry *e, const char *why);
static bool keyed_insert(struct settle *s, struct entry *e);

static void on_repeated(void *arg, struct api_result *ar)
{
	struct settle *s = arg;

	s->call = NULL;
	if (!ar->ok && ar->error.nothing_written) {
		/* the same key answered an error that wrote nothing: nothing was ever created */
		s->outcome = "not created at the API (the repeated request says so)";
		finish_cur(s);
		return;
	}
	if (!ar->ok && ar->error.replayed) {
		/*
		 * The key's saved answer to the first request (a 5xx: it may have been applied):
		 * every repeat gets it again, so the record is looked up another way.
		 */
		struct entry *e = entry_find(s, s->cur);
		log_info("journal entry %" PRId64 ": %s replays the error it saved for the "
		         "insert's idempotency key (HTTP %d): looking for the record another way",
		         s->cur, api_name(s->t.api), ar->error.http_status);
		s->key_replayed = true;
		if (e != NULL)
			e->key_replays_error = true;
		if (!keyed_insert(s, e))
			cur_fail(s, "out of memory");
		return;
	}
	if (!ar->ok) {
		char why[700];
		snprintf(why, sizeof(why),
		         "repeating the insert with its idempotency key failed: %s",
		         ar->error.message);
		cur_fail(s, why);
		return;
	}
	for (int i = 0; i < s->nids && i < ar->nrows; i++) {
		free(s->ids[i]);
		s->ids[i] = ar->rows[i].id ? strdup(ar->rows[i].id) : NULL;
	}
	s->outcome = "created at the API (found by its idempotency key); the table has its state";
	s->iid = 0;
	ask_next(s);
}

static void on_found_key(void *arg, struct api_result *ar)
{
	struct settle *s = arg;
	int lag = connector_find_key_lag_s(api_connector(s->t.api));

	s->call = NULL;
	if (ar->ok) {
		s->ids[0] = strdup(ar->rows[0].id);
		if (s->ids[0] == NULL) {
			cur_fail(s, "out of memory");
			return;
		}
		s->outcome = "created at the API (found by the idempotency key it carries); the "
		             "table has its state";
		s->iid = 0;
		ask_next(s);
		return;
	}
	if (ar->error.cls != API_ERR_NOT_FOUND) {
		char why[700];
		snprintf(why, sizeof(why),
		         "finding the record by its idempotency key at %s failed: %s",
		         api_name(s->t.api), ar->error.message);
		cur_fail(s, why);
		return;
	}
	if (s->age_s < (double)lag) {
		/* the search may not show a record that new yet: only an old enough write tells */
		char why[300];
		snprintf(why, sizeof(why),
		         "no record found by its idempotency key yet; %s may list a new record up "
		         "to %d min late, so this is asked again until the write is that old",
		         api_name(s->t.api), lag / 60);
		cur_fail(s, why);
		return;
	}
	s->outcome = "not created at the API (no record carries its idempotency key)";
	s->iid = 0;
	ask_next(s);
}

/* The record an insert created, looked up by the idempotency key it carries. */
static void find_by_key(struct settle *s)
{
	step_set(s, STEP_ASKING_API);
	s->call = api_submit_find_key(s->t.api, s->t.at, s->idem_key, on_found_key, s);
	if (s->call == NULL)
		cur_fail(s, "out of memory");
}

static void find_next(struct settle *s);

static void on_found(void *arg, struct api_result *ar)
{
	struct settle *s = arg;

	s->call = NULL;
	if (ar->ok) {
		s->ids[s->ifind] = strdup(ar->rows[0].id);
		if (s->ids[s->ifind] == NULL) {
			cur_fail(s, "out of memory");
			return;
		}
		s->nfound++;
	} else if (ar->error.cls != API_ERR_NOT_FOUND) {
		char why[700];
		snprintf(why, sizeof(why), "finding row %d by its external id at %s failed: %s",
		         s->ifind + 1, api_name(s->t.api), ar->error.message);
		cur_fail(s, why);
		return;
	}
	/* not found: the request can no longer land (ready_time() passed), so it did not */
	s->ifind++;
	find_next(s);
}

/*
 * An insert whose answer is unknown, of a table with an external id: each row's record is
 * looked up by the external id it was sent with; then the found ones are read as above.
 */
static void find_next(struct settle *s)
{
	const char *ext = s->t.at->external_id;

	for (; s->ifind < s->nids; s->ifind++) {
		const struct json_value *img = json_get(json_at(s->rows, (size_t)s->ifind), "new");
		const struct json_value *v = json_get(img, ext);

		if (v == NULL || (v->kind != JSON_STRING && v->kind != JSON_NUMBER))
			continue; /* the insert refuses such rows: nothing was sent for it */
		step_set(s, STEP_ASKING_API);
		s->call = api_submit_find(s->t.api, s->t.at, v->str, (const char *const *)s->fields,
		                          s->nfields, on_found, s);
		if (s->call == NULL)
			cur_fail(s, "out of memory");
		return;
	}
	s->outcome = s->nfound > 0 ? "created at the API (found by its external id); the table "
	                             "has its state"
	                           : "not created at the API (no record has its external id)";
	s->iid = 0;
	ask_next(s);
}

/* An insert whose answer is unknown, at an API with idempotency keys: the same request again. */
static bool repeat_insert(struct settle *s)
{
	int n = s->nids;

	s->repeat_rows = calloc((size_t)n, sizeof(*s->repeat_rows));
	s->repeat_vals = calloc(2, sizeof(*s->repeat_vals));
	if (s->repeat_rows == NULL || s->repeat_vals == NULL)
		return false;
	for (int i = 0; i < n; i++) {
		const struct json_value *img = json_get(json_at(s->rows, (size_t)i), "new");
		struct api_value *vals;
		int nv;
		if (n != 1 || !settle_image_values(img, &vals, &nv, &s->owned, &s->nowned))
			return false;
		s->repeat_vals[0] = vals;
		s->repeat_rows[i].new_image.values = vals;
		s->repeat_rows[i].new_image.nvalues = nv;
	}
	step_set(s, STEP_ASKING_API);
	s->call = api_submit_keyed(s->t.api, s->t.at, API_OP_INSERT, s->repeat_rows, n, s->idem_key,
	                           on_repeated, s);
	return s->call != NULL;
}

/*
 * The statements that write the API's state of one record (and delete a missing one). They are
 * plain statements, not one with data-modifying WITH clauses, so that their counts are what the
 * table took whatever rules it has (PostgreSQL refuses most rules inside WITH).
 */
static bool build_sql(struct settle *s)
{
	const struct catalog_table *ct = s->t.ct;
	char qt[600], qs[300], qn[300], qpk[300];
	size_t cap = 64 * 1024, cl = 0, rl = 0;
	char *cols = malloc(cap), *rcols = malloc(cap);
	bool ok = false;

	if (cols == NULL || rcols == NULL)
		goto out;
	cols[0] = rcols[0] = '\0';
	s->fields = calloc((size_t)ct->ncols + 1, sizeof(*s->fields));
	if (s->fields == NULL)
		goto out;
	for (int i = 0; i < ct->ncols; i++) {
		char field[256];
		if (strcmp(ct->cols[i].name, ct->pk) == 0)
			continue;
		connector_field_name(api_connector(s->t.api), s->t.at, ct->cols[i].name, field,
		                     sizeof(field));
		if ((s->fields[s->nfields] = strdup(field)) == NULL)
			goto out;
		s->nfields++;
	}
	quote_ident(qs, sizeof(qs), ct->schema);
	quote_ident(qn, sizeof(qn), ct->table);
	quote_ident(qpk, sizeof(qpk), ct->pk);
	snprintf(qt, sizeof(qt), "%s.%s", qs, qn);
	for (int i = 0; i < ct->ncols; i++) {
		char qc[300];
		if (strcmp(ct->cols[i].name, ct->pk) == 0)
			continue;
		quote_ident(qc, sizeof(qc), ct->cols[i].name);
		cl += (size_t)snprintf(cols + cl, cap - cl, "%s%s", cl ? ", " : "", qc);
		rl += (size_t)snprintf(rcols + rl, cap - rl, "%sr.%s", rl ? ", " : "", qc);
		if (cl >= cap || rl >= cap)
			goto out;
	}
	if (cl == 0) {
		snprintf(cols, cap, "%s", qpk);
		snprintf(rcols, cap, "x.%s", qpk);
	}
	{
		size_t n = strlen(cols) + strlen(rcols) + strlen(qt) + strlen(qpk) + 200;
		size_t ni = 3 * strlen(qt) + 2 * strlen(qpk) + 300;
		size_t nd = strlen(qt) + strlen(qpk) + 64;
		size_t nh = strlen(qt) + strlen(qpk) + 200;
		s->update_sql = malloc(n);
		s->insert_sql = malloc(ni);
		s->held_sql = malloc(nh);
		s->delete_sql = malloc(nd);
		s->kept_sql = malloc(nd);
		if (s->update_sql == NULL || s->insert_sql == NULL || s->held_sql == NULL ||
		    s->delete_sql == NULL || s->kept_sql == NULL)
			goto out;
		/*
		 * $1 the API's fields, $2 the record id, $3 the image sent (inserts): the row takes
		 * the API's values; columns the API does not hold keep theirs (or the image's). The
		 * insert runs only when no row has the key (a row whose update was turned away
		 * included), so that the two counts tell whether the table took the record; when
		 * neither wrote, held_sql tells whether the row holds the API's state anyway
		 * (compared as jsonb: every type has that equality, json and point included).
		 */
		snprintf(
		        s->update_sql, n,
		        "UPDATE %s AS x SET (%s) = (SELECT %s FROM "
		        "pg_catalog.jsonb_populate_record(x, $1::jsonb) AS r) WHERE x.%s = $2::text",
		        qt, cols, rcols, qpk);
		snprintf(s->insert_sql, ni,
		         "INSERT INTO %s SELECT * FROM pg_catalog.jsonb_populate_record(NULL::%s, "
		         "coalesce($3::jsonb, '{}') || $1::jsonb || "
		         "pg_catalog.jsonb_build_object('%s', $2::text)) "
		         "WHERE NOT EXISTS (SELECT FROM %s WHERE %s = $2::text)",
		         qt, qt, ct->pk, qt, qpk);
		snprintf(s->held_sql, nh,
		         "SELECT EXISTS (SELECT FROM %s AS x WHERE x.%s = $2::text AND "
		         "pg_catalog.to_jsonb(x) = "
		         "pg_catalog.to_jsonb(pg_catalog.jsonb_populate_record(x, $1::jsonb)))",
		         qt, qpk);
		snprintf(s->delete_sql, nd, "DELETE FROM %s WHERE %s = $1::text", qt, qpk);
		snprintf(s->kept_sql, nd, "SELECT EXISTS (SELECT FROM %s WHERE %s = $1::text)", qt,
		         qpk);
	}
	ok = true;
out:
	free(cols);
	free(rcols);
	return ok;
}

static bool ids_from_json(struct settle *s, const char *text)
{
	struct json_value *v = NULL;
	char err[128];
	size_t n;

	if (text == NULL || !json_parse(text, strlen(text), &settle_limits, &v, err, sizeof(err)) ||
	    v->kind != JSON_ARRAY) {
		json_free(v);
		return false;
	}
	n = v->count;
	s->ids = calloc(n ? n : 1, sizeof(char *));
	if (s->ids == NULL) {
		json_free(v);
		return false;
	}
	s->nids = (int)n;
	for (size_t i = 0; i < n; i++) {
		const char *id = json_string(v->items[i]);
		s->ids[i] = id != NULL ? strdup(id) : NULL;
	}
	json_free(v);
	return true;
}

/*
 * Where a write without any way to ask the API about it goes: the sync worker's next pass
 * imports what the API holds (created records included, and the API's state of a changed or
 * deleted one), so the table still ends equal to the API. True when the table has a sync worker
 * that polls it: the intent may go. Else the intent stays, awaiting a pass (or JOURNAL GIVEUP).
 */
static bool settle_sync_pass_hook(struct settle *s)
{
	return s->t.synced;
}

/*
 * The intent cannot be settled by asking the API: the sync worker's next pass will bring the
 * table to the API's state (outcome). A table without one has nothing that will: the intent
 * stays, e is marked, and its error (why) says what a person can do — give the table a sync
 * worker (RELOAD), or check the API by hand and JOURNAL GIVEUP.
 */
static void leave_to_sync(struct settle *s, struct entry *e, const char *outcome, const char *why)
{
	char full[512];

	if (settle_sync_pass_hook(s)) {
		s->outcome = outcome;
		finish_cur(s);
		return;
	}
	if (e != NULL)
		e->waits_sync = true;
	snprintf(full, sizeof(full),
	         "%s, and table %s.%s has no sync worker (sync_interval=0, or its sync is off): "
	         "give it a sync_interval, or check %s by hand, then JOURNAL GIVEUP",
	         why, s->t.ct != NULL ? s->t.ct->schema : "?", s->t.ct != NULL ? s->t.ct->table : "?",
	         s->t.api != NULL ? api_name(s->t.api) : "the API");
	cur_fail(s, full);
}

/*
 * Like leave_to_sync(), for an intent that only the sync worker or a person can settle: with
 * no sync worker it is not tried again until JOURNAL RETRY, and shows as "needs operator".
 */
static void leave_to_operator(struct settle *s, struct entry *e, const char *why)
{
	if (settle_sync_pass_hook(s)) {
		s->outcome = "left to the sync worker's next pass (the API cannot tell by the key)";
		finish_cur(s);
		return;
	}
	if (e != NULL)
		e->needs_operator = true;
	cur_fail(s, why);
}

static bool keyed_insert(struct settle *s, struct entry *e);

static void on_claimed(void *arg, struct pgc *pc, PGresult *res, const char *error)
{
	struct settle *s = arg;
	struct entry *e;
	const char *dbname = s->dbs[s->idb];
	unsigned relid;
	const struct janswer *ja = NULL;

	(void)pc;
	if (!group_done(s, res, error))
		return; /* BEGIN and the mode: the claim comes last */
	if (s->stmt_failed || res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK) {
		char why[300];
		snprintf(why, sizeof(why), "claiming failed: %s", s->stmt_error);
		s->stmt_failed = false;
		if (!pgc_ok(s->pc)) {
			cur_reset(s);
			pass_next_db(s);
			return;
		}
		cur_fail(s, why);
		return;
	}
	if (PQntuples(res) == 0) {
		/* settled meanwhile, or its writer (or another settler) holds it */
		s->nleft = 0;
		cur_reset(s);
		if (!q(s, "ROLLBACK", 0, NULL, on_failure_noted))
			pass_next_db(s);
		return;
	}
	/* op, rows, keys (JSON), idempotency key, answer (JSON), relid, id, age */
	s->op = PQgetvalue(res, 0, 0)[0];
	s->age_s = atof(PQgetvalue(res, 0, 7));
	relid = (unsigned)strtoul(PQgetvalue(res, 0, 5), NULL, 10);
	{
		char err[128];
		if (!json_parse(PQgetvalue(res, 0, 1), (size_t)PQgetlength(res, 0, 1),
		                &settle_limits, &s->rows, err, sizeof(err)) ||
		    s->rows->kind != JSON_ARRAY) {
			cur_fail(s, "the intent's row images cannot be read");
			return;
		}
	}
	s->idem_key = strdup(PQgetvalue(res, 0, 3));
	if (s->idem_key == NULL) {
		cur_fail(s, "out of memory");
		return;
	}
	if (!s->find(s->find_arg, dbname, relid, &s->t) || s->t.ct == NULL || s->t.api == NULL) {
		cur_fail(s, "its table is not a synced table of this configuration (any more)");
		return;
	}
	if (!build_sql(s)) {
		cur_fail(s, "out of memory");
		return;
	}
	e = entry_find(s, s->cur);
	{
		/*
		 * A request whose sender died or gave up may still be on its way and land later:
		 * the API is asked only once that can no longer happen (ready_time()). The claim
		 * itself shows the writer gone, should no listing have seen it so yet.
		 */
		uint64_t now = now_usec(), ready = ready_time(now, s->t.api);
		if (e != NULL) {
			if (e->unowned_at == 0)
				e->unowned_at = now;
			ready = e->ready_at = ready_time(e->unowned_at, s->t.api);
		}
		if (now < ready) {
			s->nleft = 0;
			cur_reset(s);
			if (!q(s, "ROLLBACK", 0, NULL, on_failure_noted))
				pass_next_db(s);
			return;
		}
	}
	if (s->op == 'U' || s->op == 'D') {
		if (!ids_from_json(s, PQgetvalue(res, 0, 2))) {
			cur_fail(s, "the intent's keys cannot be read");
			return;
		}
		if (!api_can_read(s->t.api)) {
			leave_to_sync(s, e, "the API cannot read by id: left to the sync worker's next pass",
			              "the API cannot read records by id");
			return;
		}
		s->outcome = "the table has the API's current state of the records";
		s->iid = 0;
		ask_next(s);
		return;
	}
	/* an insert: which records did it create? */
	if (!PQgetisnull(res, 0, 4) || (ja = jan_find(s, s->cur)) != NULL) {
		const char *ids = !PQgetisnull(res, 0, 4) ? PQgetvalue(res, 0, 4) : ja->ids;
		if (!ids_from_json(s, ids)) {
			cur_fail(s, "the API's answer cannot be read");
			return;
		}
		if (!api_can_read(s->t.api)) {
			leave_to_sync(s, e, "the API cannot read by id: left to the sync worker's next pass",
			              "the API cannot read records by id");
			return;
		}
		s->outcome =
		        "created at the API (its answer names the records); the table has their "
		        "state";
		s->iid = 0;
		ask_next(s);
		return;
	}
	s->nids = (int)s->rows->count;
	s->ids = calloc(s->nids ? (size_t)s->nids : 1, sizeof(char *));
	if (s->ids == NULL) {
		cur_fail(s, "out of memory");
		return;
	}
	if (connector_can_find(api_connector(s->t.api), s->t.at) && api_can_read(s->t.api)) {
		s->ifind = s->nfound = 0;
		find_next(s);
		return;
	}
	if (keyed_insert(s, e))
		return;
	leave_to_sync(s, e, "left to the sync worker's next pass",
	              "the API gives no way to find the created record");
}

/*
 * An insert whose answer is unknown, at an API with idempotency keys: the same request again
 * with its key while the API surely keeps the key; else (or once a repeat got the key's saved
 * error) the record that carries the key is looked up; else it waits for the sync worker or
 * the operator. Never a repeat that the API could take for a new request. False when the API
 * takes no keys (nothing was done).
 */
static bool keyed_insert(struct settle *s, struct entry *e)
{
	const struct connector *c = api_connector(s->t.api);
	int window = connector_key_window_s(c);
	char why[400];

	if (window <= 0 || s->idem_key[0] == '\0' || !api_can_read(s->t.api))
		return false;
	if (s->age_s < (double)window && !s->key_replayed && (e == NULL || !e->key_replays_error)) {
		if (!repeat_insert(s))
			cur_fail(s, "could not repeat the insert");
		return true;
	}
	if (s->nids == 1 && connector_can_find_key(c, s->t.at) && api_key_in_record(s->idem_key)) {
		find_by_key(s);
		return true;
	}
	if (connector_can_find_key(c, s->t.at) && !api_key_in_record(s->idem_key))
		snprintf(why, sizeof(why),
		         "%s; it was sent by an older syncbouncer, whose inserts did not keep the "
		         "key in the record, so no search can find it: check %s by hand, then "
		         "JOURNAL GIVEUP",
		         s->age_s >= (double)window
		                 ? "longer ago than the API keeps idempotency keys: a repeat could "
		                   "create a second record"
		                 : "a repeat gets the error the API saved for the first request, "
		                   "which may have been applied",
		         api_name(s->t.api));
	else if (s->age_s >= (double)window)
		snprintf(why, sizeof(why),
		         "written %.1f h ago, longer than %s keeps idempotency keys (%.0f h): a "
		         "repeat could create a second record, and %s records cannot be found by "
		         "the key; check %s by hand, then JOURNAL GIVEUP",
		         s->age_s / 3600, api_name(s->t.api), window / 3600.0, s->t.at->object,
		         api_name(s->t.api));
	else
		snprintf(
		        why, sizeof(why),
		        "%s answers a repeat with the error it saved for the first request, which "
		        "may have been applied, and %s records cannot be found by the key; check %s "
		        "by hand, then JOURNAL GIVEUP",
		        api_name(s->t.api), s->t.at->object, api_name(s->t.api));
	leave_to_operator(s, e, why);
	return true;
}

static void cand_next(struct settle *s)
{
	char idt[24];
	const char *params[1] = {idt};

	cur_reset(s);
	while (s->icand < s->ncands) {
		struct entry *e;
		s->cur = s->cands[s->icand++];
		e = entry_find(s, s->cur);
		if (e == NULL || e->in_flight || e->give_up || entry_due(e) > now_usec() ||
		    (e->needs_operator && e->next_try != 0))
			continue;
		step_set(s, STEP_CLAIMING);
		snprintf(idt, sizeof(idt), "%" PRId64, s->cur);
		s->nleft = 0;
		s->stmt_failed = false;
		if (!q(s, "BEGIN", 0, NULL, on_claimed) ||
		    !q(s, "SELECT pg_catalog.set_config('syncbouncer.mode', 'sync', true)", 0, NULL,
		       on_claimed) ||
		    !q(s,
		       "SELECT i.op::text, i.rows::text, pg_catalog.array_to_json(i.keys)::text, "
		       "i.idempotency_key, i.answer::text, i.tbl::int8, i.id, "
		       "extract(epoch FROM pg_catalog.now() - i.created)::float8 "
		       "FROM syncbouncer.intent i WHERE i.id = $1::int8 "
		       "AND pg_catalog.pg_try_advisory_xact_lock(i.id) "
		       "AND pg_catalog.pg_try_advisory_xact_lock(i.id # " SETTLE_LOCK_BIT ") "
		       "FOR UPDATE SKIP LOCKED",
		       1, params, on_claimed)) {
			pass_next_db(s);
		}
		return;
	}
	pass_next_db(s);
}

static void on_gave_up(void *arg, struct pgc *pc, PGresult *res, const char *error)
{
	struct settle *s = arg;
	struct entry *e;

	(void)pc;
	(void)error;
	s->nleft--;
	e = entry_find(s, s->cur);
	if (e != NULL && res != NULL && PQresultStatus(res) == PGRES_COMMAND_OK &&
	    atoi(PQcmdTuples(res)) == 1) {
		log_warning("journal entry %" PRId64 " (%s of %s, keys %s) given up unsettled",
		            e->id, op_word(e->op), e->table ? e->table : "?",
		            e->keys ? e->keys : "");
		history_add(s, e, e->id, "given up", "dropped unsettled by JOURNAL GIVEUP");
		{
			const struct janswer *ja = jan_find(s, e->id);
			if (ja != NULL && s->journal != NULL &&
			    !journal_mark_done(s->journal, ja->journal_id))
				log_error("journal: cannot mark %s done", ja->journal_id);
		}
		entry_free(e);
		*e = s->entries[--s->nentries];
	}
	if (s->nleft == 0)
		cand_next(s);
}

static void on_listed(void *arg, struct pgc *pc, PGresult *res, const char *error)
{
	struct settle *s = arg;
	const char *db = s->dbs[s->idb];
	int64_t deadline = (*s->cfg)->settle_deadline;
	int n;

	(void)pc;
	s->nleft--;
	if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK) {
		const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

		if (state != NULL && strcmp(state, "42501") == 0)
			/* the intents belong to the role that installed the schema */
			log_error("settle: cannot list the journal of database %s: the user of its"
			          " first synced table may not use syncbouncer.intent; connect that"
			          " table as the role that installed the syncbouncer schema, or grant"
			          " it SELECT, INSERT, UPDATE, DELETE on syncbouncer.intent",
			          db);
		else
			log_warning("settle: cannot list the journal of database %s: %s", db,
			            res == NULL ? error : PQresultErrorMessage(res));
		pass_next_db(s);
		return;
	}
	for (int i = 0; i < s->nentries; i++)
		if (strcmp(s->entries[i].db, db) == 0)
			s->entries[i].seen = false;
	n = PQntuples(res);
	free(s->cands);
	s->cands = calloc(n ? (size_t)n : 1, sizeof(int64_t));
	s->ncands = s->icand = 0;
	for (int r = 0; r < n; r++) {
		int64_t id;
		struct entry *e;
		if (!parse_id(PQgetvalue(res, r, 0), &id))
			continue;
		e = entry_find(s, id);
		if (e == NULL) {
			struct entry *grown =
			        realloc(s->entries, sizeof(*grown) * (size_t)(s->nentries + 1));
			if (grown == NULL)
				continue;
			s->entries = grown;
			e = &s->entries[s->nentries++];
			memset(e, 0, sizeof(*e));
			e->id = id;
			e->db = strdup(db);
		}
		free(e->table);
		free(e->op);
		free(e->api);
		free(e->keys);
		free(e->owner);
		e->table = strdup(PQgetvalue(res, r, 1));
		e->op = strdup(PQgetvalue(res, r, 2));
		e->api = strdup(PQgetvalue(res, r, 3));
		e->keys = strdup(PQgetvalue(res, r, 4));
		e->has_answer = PQgetvalue(res, r, 5)[0] == 't';
		e->attempts = atoi(PQgetvalue(res, r, 6));
		if (!PQgetisnull(res, r, 7)) {
			free(e->last_error);
			e->last_error = strdup(PQgetvalue(res, r, 7));
		}
		e->age = atof(PQgetvalue(res, r, 8));
		e->owner = strdup(PQgetvalue(res, r, 9));
		e->in_flight = PQgetvalue(res, r, 10)[0] == 't';
		e->seen = true;
		if (e->in_flight)
			continue;
		{
			/* nobody holds it: its writer is gone, and sends nothing more */
			struct settle_table t;
			if (e->unowned_at == 0)
				e->unowned_at = now_usec();
			if (s->find(s->find_arg, db,
			            (unsigned)strtoul(PQgetvalue(res, r, 11), NULL, 10), &t) &&
			    t.api != NULL)
				e->ready_at = ready_time(e->unowned_at, t.api);
		}
		if (deadline > 0 && e->age * 1e6 > (double)deadline && !e->alerted) {
			e->alerted = true;
			log_error("journal entry %" PRId64
			          " (%s of %s, keys %s) is not settled after "
			          "%.0f s (settle_deadline): %s",
			          id, op_word(e->op), e->table ? e->table : "?",
			          e->keys ? e->keys : "", e->age,
			          e->last_error && e->last_error[0] ? e->last_error
			                                            : "no attempt yet");
		}
		if (s->cands != NULL)
			s->cands[s->ncands++] = id;
	}
	/* entries gone from the table were settled elsewhere (or by us) */
	for (int i = 0; i < s->nentries;) {
		if (strcmp(s->entries[i].db, db) == 0 && !s->entries[i].seen) {
			entry_free(&s->entries[i]);
			s->entries[i] = s->entries[--s->nentries];
			continue;
		}
		i++;
	}
	/* the console's give-ups, then the journal's answers into their intents */
	step_set(s, STEP_GIVING_UP);
	for (int i = 0; i < s->nentries; i++) {
		struct entry *e = &s->entries[i];
		char idt[24];
		const char *params[1] = {idt};
		if (strcmp(e->db, db) != 0 || !e->give_up || e->in_flight)
			continue;
		snprintf(idt, sizeof(idt), "%" PRId64, e->id);
		s->cur = e->id;
		s->nleft = 0;
		if (!q(s,
		       "DELETE FROM syncbouncer.intent WHERE id = $1::int8 AND "
		       "pg_catalog.pg_try_advisory_xact_lock(id)",
		       1, params, on_gave_up))
			break;
		return; /* one at a time: on_gave_up comes back here through cand_next */
	}
	cand_next(s);
}

static void on_db_connected(void *arg, struct pgc *pc, const char *error)
{
	struct settle *s = arg;

	(void)pc;
	if (error != NULL) {
		log_warning("settle: cannot connect to database %s: %s", s->dbs[s->idb], error);
		pass_next_db(s);
		return;
	}
	step_set(s, STEP_LISTING);
	s->nleft = 0;
	if (!q(s,
	       "SELECT i.id, i.tbl_name, i.op::text, i.api, pg_catalog.array_to_string(i.keys, ', '), "
	       "i.answer IS NOT NULL, i.attempts, i.last_error, "
	       "extract(epoch FROM pg_catalog.now() - i.created)::float8, coalesce(i.owner, ''), "
	       "EXISTS (SELECT FROM pg_catalog.pg_locks l WHERE l.locktype = 'advisory' "
	       "AND l.granted AND l.objsubid = 1 AND l.database = (SELECT oid FROM "
	       "pg_catalog.pg_database WHERE datname = pg_catalog.current_database()) "
	       "AND ((l.classid::int8 << 32) | l.objid::int8) = i.id), i.tbl::int8 "
	       "FROM syncbouncer.intent i ORDER BY i.created, i.id LIMIT 1000",
	       0, NULL, on_listed))
		pass_next_db(s);
}

/* The next database of the pass, or the end of the pass. */
static void pass_next_db(struct settle *s)
{
	char conninfo[2048];

	cur_reset(s);
	pgc_close(s->pc);
	s->pc = NULL;
	s->nleft = 0;
	for (;;) {
		if (s->dbs == NULL || s->idb + 1 >= s->ndbs) {
			pass_end(s);
			return;
		}
		s->idb++;
		if (catalog_conninfo(s->cat, s->dbs[s->idb], conninfo, sizeof(conninfo)))
			break;
	}
	step_set(s, STEP_CONNECTING);
	s->pc = pgc_connect(s->base, conninfo, on_db_connected, s);
	if (s->pc == NULL)
		pass_end(s);
}

static void pass_start(struct settle *s)
{
	int n = catalog_count(s->cat);

	s->dbs = calloc(n ? (size_t)n : 1, sizeof(char *));
	s->ndbs = 0;
	s->idb = -1;
	if (s->dbs == NULL) {
		pass_end(s);
		return;
	}
	for (int i = 0; i < n; i++) {
		const struct catalog_table *ct = catalog_table_at(s->cat, i);
		bool dup = false;
		if (ct == NULL || ct->state != CAT_READY)
			continue;
		for (int k = 0; k < s->ndbs; k++)
			dup = dup || strcmp(s->dbs[k], ct->database) == 0;
		if (!dup && (s->dbs[s->ndbs] = strdup(ct->database)) != NULL)
			s->ndbs++;
	}
	jan_free_all(s);
	if (s->journal != NULL && journal_foreach_pending(s->journal, collect_answer, s) < 0)
		log_warning("settle: cannot read the journal file %s", journal_path(s->journal));
	pass_next_db(s);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct settle *s = arg;

	(void)fd;
	(void)what;
	s->planned = 0;
	if (s->step != STEP_IDLE) {
		s->again = true;
		return;
	}
	step_set(s, STEP_CONNECTING);
	pass_start(s);
}

void settle_kick(struct settle *s, int delay_ms)
{
	uint64_t when;
	struct timeval tv;

	if (s == NULL)
		return;
	if (s->step != STEP_IDLE) {
		if (delay_ms < SETTLE_IDLE_MS)
			s->again = true;
		return;
	}
	if (delay_ms < 0)
		delay_ms = 0;
	when = now_usec() + (uint64_t)delay_ms * 1000u;
	if (s->planned != 0 && s->planned <= when)
		return;
	s->planned = when;
	tv.tv_sec = delay_ms / 1000;
	tv.tv_usec = (delay_ms % 1000) * 1000;
	event_add(s->ev, &tv);
}

bool settle_busy(const struct settle *s)
{
	return s != NULL && s->step != STEP_IDLE;
}

struct settle *settle_create(struct event_base *base, struct catalog *cat, struct journal *journal,
                             const struct config *const *cfg, settle_find_cb find, void *arg)
{
	struct settle *s = calloc(1, sizeof(*s));

	if (s == NULL)
		return NULL;
	s->base = base;
	s->cat = cat;
	s->journal = journal;
	s->cfg = cfg;
	s->find = find;
	s->find_arg = arg;
	s->ev = event_new(base, -1, 0, on_timer, s);
	if (s->ev == NULL) {
		free(s);
		return NULL;
	}
	return s;
}

void settle_free(struct settle *s)
{
	if (s == NULL)
		return;
	cur_reset(s);
	pgc_close(s->pc);
	for (int i = 0; i < s->ndbs; i++)
		free(s->dbs[i]);
	free(s->dbs);
	free(s->cands);
	for (int i = 0; i < s->nentries; i++)
		entry_free(&s->entries[i]);
	free(s->entries);
	jan_free_all(s);
	event_free(s->ev);
	free(s);
}
