/*
 * Unit tests of the statement classifier: one table of statements with what the quick check
 * and the classification must say about each, then splitting, limits and huge inputs.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mutation/classifier.h"

/* The synced tables every case runs against. */
enum {
	T_CONTACTS, /* crm.salesforce.contacts */
	T_ACCOUNTS, /* crm.public.accounts */
	T_LEADS,    /* crm.salesforce."Leads" */
	T_OTHER,    /* other.public.contacts */
};

static const struct classifier_table tables[] = {
        {"crm", "salesforce", "contacts"},
        {"crm", "public", "accounts"},
        {"crm", "salesforce", "Leads"},
        {"other", "public", "contacts"},
};

struct stmt_case {
	int line;
	const char *db;
	const char *sql;
	bool quick;
	enum stmt_verdict verdict;
	enum stmt_op op;
	int table;
	bool returning, nothing;
	const char *sqlstate; /* REJECT */
	const char *message;  /* REJECT: the whole message, or NULL to skip */
};

#define PASS_Q(db, sql)                                                                            \
	{                                                                                          \
		__LINE__, db, sql, true, STMT_PASS, OP_NONE, -1, false, false, NULL, NULL          \
	}
#define PASS_NQ(db, sql)                                                                           \
	{                                                                                          \
		__LINE__, db, sql, false, STMT_PASS, OP_NONE, -1, false, false, NULL, NULL         \
	}
#define MUT(db, sql, op, table, ret, nothing)                                                      \
	{                                                                                          \
		__LINE__, db, sql, true, STMT_MUTATION, op, table, ret, nothing, NULL, NULL        \
	}
#define REJ(db, sql, table, state, msg)                                                            \
	{                                                                                          \
		__LINE__, db, sql, true, STMT_REJECT, OP_NONE, table, false, false, state, msg     \
	}

#define SETTING_MSG "setting syncbouncer.* is not allowed through syncbouncer"

static const struct stmt_case cases[] = {
        /* reads and ordinary writes: refused by the quick check */
        PASS_NQ("crm", "SELECT 1"),
        PASS_NQ("crm", "select * from salesforce.contacts where id = $1"),
        PASS_NQ("crm", "select * from accounts;"),
        PASS_NQ("crm", "select * from accounts;  \n"),
        PASS_NQ("crm", "(select 1)"),
        PASS_NQ("crm", "   \n\t select 1"),
        PASS_NQ("crm", "insert into ordinary values (1)"),
        PASS_NQ("crm", "truncate ordinary"),
        PASS_NQ("crm", "begin"),
        PASS_NQ("crm", "set search_path = public"),
        PASS_NQ("crm", "reset all"),
        PASS_NQ("crm", ""),
        PASS_NQ("crm", "-- only a comment"),
        PASS_NQ("nosuch", "insert into salesforce.contacts (a) values (1)"),
        PASS_NQ("other", "select * from contacts"),
        /* plain mutations */
        MUT("crm", "insert into salesforce.contacts (a) values (1)", OP_INSERT, T_CONTACTS, false,
            false),
        MUT("crm", "INSERT INTO Salesforce.Contacts (a) VALUES ($1) RETURNING id", OP_INSERT,
            T_CONTACTS, true, false),
        MUT("crm", "insert into salesforce.\"Leads\" values ($1, $2)", OP_INSERT, T_LEADS, false,
            false),
        MUT("crm", "update accounts set name = $1 where id = $2", OP_UPDATE, T_ACCOUNTS, false,
            false),
        MUT("crm", "UPDATE public.accounts SET name = 'x'", OP_UPDATE, T_ACCOUNTS, false, false),
        MUT("crm", "update only accounts set a = 1", OP_UPDATE, T_ACCOUNTS, false, false),
        MUT("crm", "delete from salesforce.contacts where id = $1 returning *", OP_DELETE,
            T_CONTACTS, true, false),
        MUT("crm", "insert into crm.salesforce.contacts values (1)", OP_INSERT, T_CONTACTS, false,
            false),
        MUT("crm", "insert into accounts default values returning *", OP_INSERT, T_ACCOUNTS, true,
            false),
        MUT("other", "delete from contacts where id = 1", OP_DELETE, T_OTHER, false, false),
        /* comments and whitespace before the first token */
        MUT("crm", "/* hi */ -- x\n  insert into salesforce.contacts values (1)", OP_INSERT,
            T_CONTACTS, false, false),
        MUT("crm", "/* a /* nested */ still comment */\n\tupdate accounts set x = 1", OP_UPDATE,
            T_ACCOUNTS, false, false),
        /* names: quoting, folding, schemas, databases, look-alikes */
        PASS_Q("crm", "insert into \"Salesforce\".\"Contacts\" values (1)"),
        PASS_Q("crm", "insert into salesforce.leads values (1)"),
        PASS_Q("crm", "delete from contacts where id = 1"),
        PASS_Q("other", "delete from salesforce.contacts"),
        PASS_Q("crm", "insert into salesforce.contacts_archive values (1)"),
        PASS_Q("crm", "update accounts_log set a = 1"),
        PASS_Q("crm", "insert into log (msg) values ('salesforce.contacts changed')"),
        PASS_Q("crm", "insert into log values ('set syncbouncer.mode = sync')"),
        PASS_Q("crm", "SELECT 1 -- set_config"),
        PASS_Q("crm", "select 'syncbouncer'"),
        /* reads of synced tables inside writes */
        MUT("crm", "update salesforce.contacts set a = 1 from accounts where accounts.id = b",
            OP_UPDATE, T_CONTACTS, false, false),
        MUT("crm", "delete from accounts a using salesforce.contacts c where a.id = c.id",
            OP_DELETE, T_ACCOUNTS, false, false),
        MUT("crm", "insert into salesforce.contacts select * from salesforce.contacts", OP_INSERT,
            T_CONTACTS, false, false),
        MUT("crm",
            "with x as (select * from accounts) update salesforce.contacts set a = x.a from x",
            OP_UPDATE, T_CONTACTS, false, false),
        MUT("crm", "WITH RECURSIVE t(n) AS (select 1) insert into accounts select n from t",
            OP_INSERT, T_ACCOUNTS, false, false),
        PASS_Q("crm", "merge into ordinary o using salesforce.contacts c on o.id = c.id "
                      "when matched then delete"),
        /* ON CONFLICT */
        MUT("crm", "insert into salesforce.contacts values (1) on conflict do nothing", OP_INSERT,
            T_CONTACTS, false, true),
        MUT("crm",
            "insert into accounts values (1) on conflict on constraint accounts_pkey "
            "do nothing returning id",
            OP_INSERT, T_ACCOUNTS, true, true),
        REJ("crm",
            "insert into salesforce.contacts (id, a) values (1, 2) "
            "on conflict (id) do update set a = excluded.a",
            T_CONTACTS, "0A000", "upserts on synced table salesforce.contacts are not supported"),
        /* MERGE, TRUNCATE, COPY */
        REJ("crm",
            "merge into salesforce.contacts c using src s on c.id = s.id "
            "when matched then delete",
            T_CONTACTS, "0A000", "MERGE into synced table salesforce.contacts is not supported"),
        REJ("crm", "truncate salesforce.contacts", T_CONTACTS, "0A000",
            "TRUNCATE of synced table salesforce.contacts is not supported"),
        REJ("crm", "TRUNCATE ordinary, accounts CASCADE", T_ACCOUNTS, "0A000",
            "TRUNCATE of synced table public.accounts is not supported"),
        REJ("crm", "copy salesforce.contacts (a, b) from stdin", T_CONTACTS, "0A000",
            "COPY into synced table salesforce.contacts is not supported"),
        PASS_Q("crm", "copy salesforce.contacts to stdout"),
        PASS_Q("crm", "copy (select * from accounts) to stdout"),
        REJ("crm", "copy (insert into accounts values (1) returning id) to stdout", T_ACCOUNTS,
            "0A000", "COPY of a write to synced table public.accounts is not supported"),
        /* writable CTEs */
        REJ("crm",
            "with x as (insert into salesforce.contacts values (1) returning id) "
            "insert into accounts select id from x",
            T_ACCOUNTS, "0A000", "a statement may write only one synced table, and only once"),
        REJ("crm",
            "with x as (delete from accounts returning *) "
            "insert into accounts select * from x",
            T_ACCOUNTS, "0A000", "a statement may write only one synced table, and only once"),
        REJ("crm", "with x as (insert into log values (1)) update accounts set a = 1", T_ACCOUNTS,
            "0A000", "a statement writing synced table public.accounts may not write other tables"),
        REJ("crm", "with x as (delete from accounts returning *) select * from x", T_ACCOUNTS,
            "0A000", "data-modifying WITH on synced table public.accounts is not supported"),
        REJ("crm",
            "with x as (delete from accounts returning *) insert into archive select * from x",
            T_ACCOUNTS, "0A000",
            "data-modifying WITH on synced table public.accounts is not supported"),
        /* EXPLAIN */
        REJ("crm", "explain analyze insert into accounts values (1)", T_ACCOUNTS, "0A000",
            "EXPLAIN ANALYZE of a write to a synced table is not supported"),
        REJ("crm", "EXPLAIN (ANALYZE, BUFFERS) update accounts set a = 1", T_ACCOUNTS, "0A000",
            "EXPLAIN ANALYZE of a write to a synced table is not supported"),
        PASS_Q("crm", "explain insert into accounts values (1)"),
        PASS_Q("crm", "explain (analyze false) delete from accounts"),
        PASS_Q("crm", "explain (analyze off, costs on) delete from accounts"),
        /* PREPARE */
        REJ("crm", "prepare p(int) as insert into accounts values ($1)", T_ACCOUNTS, "0A000",
            "PREPARE of a write to synced table public.accounts is not supported"),
        /* syncbouncer.* settings */
        REJ("crm", "set syncbouncer.mode = 'sync'", -1, "42501", SETTING_MSG),
        REJ("crm", "SET LOCAL syncbouncer.mode TO 'apply'", -1, "42501", SETTING_MSG),
        REJ("crm", "set session \"SyncBouncer\".mode = 'apply'", -1, "42501", SETTING_MSG),
        REJ("crm", "set U&\"sync\\0062ouncer\".mode = 'sync'", -1, "42501", SETTING_MSG),
        REJ("crm", "reset syncbouncer.mode", -1, "42501", SETTING_MSG),
        REJ("crm", "set syncbouncer.mode to default", -1, "42501", SETTING_MSG),
        REJ("nosuch", "set syncbouncer.mode = 'sync'", -1, "42501", SETTING_MSG),
        REJ("crm", "select set_config('syncbouncer.mode', 'sync', true)", -1, "42501", SETTING_MSG),
        REJ("crm", "select pg_catalog.set_config('SyncBouncer.Mode'::text, 'sync', false)", -1,
            "42501", SETTING_MSG),
        REJ("crm", "select set_config($1, 'x', false)", -1, "42501", SETTING_MSG),
        REJ("crm", "select set_config('sync' || 'bouncer.mode', 'x', false)", -1, "42501",
            SETTING_MSG),
        REJ("crm", "select set_config(E'sync\\x62ouncer.mode', 'x', false)", -1, "42501",
            SETTING_MSG),
        REJ("crm", "select set_config(U&'sync\\0062ouncer.mode', 'x', false)", -1, "42501",
            SETTING_MSG),
        REJ("crm", "select set_config('application_name', 'a\\', false)", -1, "42501", SETTING_MSG),
        PASS_Q("crm", "select set_config('application_name', 'x', false)"),
        PASS_Q("crm", "select set_config(E'application\\x5fname', E'a\\\\', false)"),
        REJ("crm", "update ordinary set a = set_config('syncbouncer.mode', 'x', true)", -1, "42501",
            SETTING_MSG),
        REJ("crm", "values (set_config('syncbouncer.mode', 'x', true))", -1, "42501", SETTING_MSG),
        REJ("crm", "declare c cursor for select set_config('syncbouncer.mode', 'x', true)", -1,
            "42501", SETTING_MSG),
        REJ("crm", "alter role app set syncbouncer.mode = 'sync'", -1, "42501", SETTING_MSG),
        REJ("crm", "alter database crm set syncbouncer.mode = 'sync'", -1, "42501", SETTING_MSG),
        REJ("crm", "alter system set syncbouncer.mode = 'sync'", -1, "42501", SETTING_MSG),
        REJ("crm", "alter function f() set syncbouncer.mode = 'sync'", -1, "42501", SETTING_MSG),
        REJ("crm",
            "create function f() returns int language sql set syncbouncer.mode = 'sync' "
            "as 'select 1'",
            -1, "42501", SETTING_MSG),
        REJ("crm", "do $$ begin perform set_config('syncbouncer.mode', 'sync', true); end $$", -1,
            "42501", SETTING_MSG),
        REJ("crm",
            "create function g() returns void language plpgsql as $f$ begin "
            "set syncbouncer.mode = 'sync'; end $f$",
            -1, "42501", SETTING_MSG),
        /* parse errors: PostgreSQL reports them */
        PASS_Q("crm", "insert into accounts valuez (1)"),
        PASS_Q("crm", "insert into accounts values ('unterminated"),
        PASS_Q("crm", "set syncbouncer.mode = "),
        /* several statements */
        MUT("crm", "select 1; insert into accounts values (1)", OP_INSERT, T_ACCOUNTS, false,
            false),
        MUT("crm", "begin; insert into accounts values (1); commit", OP_INSERT, T_ACCOUNTS, false,
            false),
        REJ("crm", "insert into accounts values (1); truncate salesforce.contacts", T_CONTACTS,
            "0A000", "TRUNCATE of synced table salesforce.contacts is not supported"),
        REJ("crm", "begin; select 1; set syncbouncer.mode = 'sync'", -1, "42501", SETTING_MSG),
        PASS_Q("crm", "select 1; select * from accounts"),
};

static struct classifier *new_classifier(void)
{
	struct classifier *cl = classifier_new(tables, sizeof(tables) / sizeof(tables[0]));

	assert_non_null(cl);
	return cl;
}

static void test_table(void **state)
{
	struct classifier *cl = new_classifier();
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct stmt_case *k = &cases[i];
		struct stmt_class out;
		bool quick = classifier_quick_check(cl, k->db, k->sql, strlen(k->sql));

		if (quick != k->quick)
			fail_msg("line %d: quick check said %d", k->line, quick);
		if (!classifier_classify(cl, k->db, k->sql, &out))
			fail_msg("line %d: classify failed", k->line);
		if (out.verdict != k->verdict)
			fail_msg("line %d: verdict %s, want %s (%s %s)", k->line,
			         stmt_verdict_str(out.verdict), stmt_verdict_str(k->verdict),
			         out.sqlstate, out.message);
		/* a REJECT or MUTATION always comes through the quick check */
		if (k->verdict != STMT_PASS && !quick)
			fail_msg("line %d: quick check misses a %s", k->line,
			         stmt_verdict_str(k->verdict));
		if (out.op != k->op)
			fail_msg("line %d: op %s", k->line, stmt_op_str(out.op));
		if (out.table != k->table)
			fail_msg("line %d: table %d, want %d", k->line, out.table, k->table);
		if (out.returning != k->returning || out.on_conflict_nothing != k->nothing)
			fail_msg("line %d: returning %d nothing %d", k->line, out.returning,
			         out.on_conflict_nothing);
		if (k->verdict == STMT_REJECT) {
			if (strcmp(out.sqlstate, k->sqlstate) != 0)
				fail_msg("line %d: sqlstate %s", k->line, out.sqlstate);
			if (k->message != NULL && strcmp(out.message, k->message) != 0)
				fail_msg("line %d: message \"%s\"", k->line, out.message);
		} else if (out.sqlstate[0] != '\0' || out.message[0] != '\0') {
			fail_msg("line %d: error text on a %s", k->line,
			         stmt_verdict_str(out.verdict));
		}
	}
	classifier_free(cl);
}

static void test_hints_and_details(void **state)
{
	struct classifier *cl = new_classifier();
	struct stmt_class out;

	(void)state;
	assert_true(classifier_classify(
	        cl, "crm", "insert into accounts values (1) on conflict (id) do update set a = 1",
	        &out));
	assert_non_null(strstr(out.hint, "ON CONFLICT DO NOTHING"));
	assert_true(classifier_classify(
	        cl, "crm",
	        "with x as (insert into salesforce.contacts values (1)) delete from accounts",
	        &out));
	assert_string_equal(out.detail, "It writes public.accounts and salesforce.contacts.");
	assert_true(classifier_classify(
	        cl, "crm", "with x as (delete from accounts) delete from public.accounts", &out));
	assert_string_equal(out.detail, "It writes public.accounts more than once.");
	classifier_free(cl);
}

/* Where each statement of a multi-statement text is, as the pipeline needs it. */
static void test_multi_statement_position(void **state)
{
	struct classifier *cl = new_classifier();
	const char *sql = "select 1;\n  /* c */ INSERT into accounts values (1) ; update accounts "
	                  "set a = 2;; commit";
	struct stmt_class out;

	(void)state;
	assert_true(classifier_quick_check(cl, "crm", sql, strlen(sql)));
	assert_true(classifier_classify(cl, "crm", sql, &out));
	assert_int_equal(out.verdict, STMT_MUTATION);
	assert_int_equal(out.nstatements, 4);
	assert_int_equal(out.nmutations, 2);
	assert_int_equal(out.stmt_index, 1);
	assert_int_equal(out.stmt_len, (int)strlen("INSERT into accounts values (1)"));
	assert_memory_equal(sql + out.stmt_location, "INSERT into accounts values (1)",
	                    (size_t)out.stmt_len);
	classifier_free(cl);
}

static void test_split(void **state)
{
	static const struct {
		const char *sql;
		int n;
		const char *parts[4];
	} splits[] = {
	        {"select 1", 1, {"select 1"}},
	        {"select 1; ; select 2 -- x\n; ", 2, {"select 1", "select 2 -- x"}},
	        {"  select 1;select 'a;b'", 2, {"select 1", "select 'a;b'"}},
	        {"select from where; select 1", 2, {"select from where", "select 1"}},
	        {"select 'abc; select foo", 1, {"select 'abc; select foo"}},
	        {";;", 0, {NULL}},
	        {"", 0, {NULL}},
	        {"/* c */ ", 0, {NULL}},
	        {"begin; update t set a = $1; commit; select 2",
	         4,
	         {"begin", "update t set a = $1", "commit", "select 2"}},
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(splits) / sizeof(splits[0]); i++) {
		int starts[4], lens[4], n, k;

		n = classifier_split(splits[i].sql, starts, lens, 4);
		if (n != splits[i].n)
			fail_msg("split %zu: %d statements", i, n);
		for (k = 0; k < n; k++) {
			if ((size_t)lens[k] != strlen(splits[i].parts[k]) ||
			    memcmp(splits[i].sql + starts[k], splits[i].parts[k],
			           (size_t)lens[k]) != 0)
				fail_msg("split %zu: part %d is \"%.*s\"", i, k, lens[k],
				         splits[i].sql + starts[k]);
		}
	}
	/* more statements than room: counted, only max filled */
	{
		int starts[2] = {-1, -1}, lens[2] = {-1, -1};

		assert_int_equal(classifier_split("select 1; select 2; select 3", starts, lens, 1),
		                 3);
		assert_int_equal(starts[0], 0);
		assert_int_equal(lens[0], 8);
		assert_int_equal(starts[1], -1);
	}
}

/* The quick check reads only up to len, and stops at a NUL. */
static void test_quick_check_bounds(void **state)
{
	struct classifier *cl = new_classifier();
	const char *sql = "insert into accounts values (1)";
	char buf[64];

	(void)state;
	assert_false(classifier_quick_check(cl, "crm", sql, strlen("insert into acc")));
	assert_true(classifier_quick_check(cl, "crm", sql, strlen(sql)));
	memcpy(buf, "insert into x\0accounts", 22);
	assert_false(classifier_quick_check(cl, "crm", buf, 22));
	assert_false(classifier_quick_check(cl, "crm", "", 0));
	assert_false(classifier_quick_check(cl, "crm", NULL, 0));
	/* no classifier: only the settings checks remain */
	assert_true(classifier_quick_check(NULL, "crm", "set syncbouncer.mode = 1", 24));
	assert_false(classifier_quick_check(NULL, "crm", sql, strlen(sql)));
	/* a database without synced tables: the settings' spellings, up to the first NUL */
	memcpy(buf, "select 1\0set syncbouncer.mode = 1", 34);
	assert_false(classifier_quick_check(cl, "other", buf, 34));
	assert_true(classifier_quick_check(cl, "other", buf + 9, 25));
	memcpy(buf, "select set_config\0", 18);
	assert_true(classifier_quick_check(cl, "other", buf, 18));
	assert_false(classifier_quick_check(cl, "other", buf, 16));
	assert_false(classifier_quick_check(cl, "other", "\0u&", 3));
	assert_true(classifier_quick_check(cl, "other", "U&", 2));
	classifier_free(cl);
}

static void test_null_classifier(void **state)
{
	struct stmt_class out;

	(void)state;
	assert_true(classifier_classify(NULL, "crm", "insert into accounts values (1)", &out));
	assert_int_equal(out.verdict, STMT_PASS);
	assert_int_equal(out.nstatements, 1);
	assert_true(classifier_classify(NULL, "crm", "reset syncbouncer.mode", &out));
	assert_int_equal(out.verdict, STMT_REJECT);
	assert_string_equal(out.sqlstate, "42501");
}

static void test_new_refuses_bad_tables(void **state)
{
	static const struct classifier_table empty_name[] = {{"crm", "", "t"}};
	static const struct classifier_table null_name[] = {{"crm", "public", NULL}};
	char longname[CLASSIFIER_MAX_NAME_LEN + 2];
	struct classifier_table too_long[] = {{"crm", "public", longname}};
	struct classifier *cl;

	(void)state;
	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	assert_null(classifier_new(empty_name, 1));
	assert_null(classifier_new(null_name, 1));
	assert_null(classifier_new(too_long, 1));
	assert_null(classifier_new(tables, -1));
	assert_null(classifier_new(NULL, 1));
	cl = classifier_new(NULL, 0);
	assert_non_null(cl);
	assert_false(classifier_quick_check(cl, "crm", "insert into accounts values (1)", 31));
	classifier_free(cl);
	classifier_free(NULL);
}

static void test_enum_names(void **state)
{
	(void)state;
	assert_string_equal(stmt_verdict_str(STMT_PASS), "pass");
	assert_string_equal(stmt_verdict_str(STMT_MUTATION), "mutation");
	assert_string_equal(stmt_verdict_str(STMT_REJECT), "reject");
	assert_string_equal(stmt_op_str(OP_NONE), "none");
	assert_string_equal(stmt_op_str(OP_INSERT), "insert");
	assert_string_equal(stmt_op_str(OP_UPDATE), "update");
	assert_string_equal(stmt_op_str(OP_DELETE), "delete");
}

/* CPU time of this process: the work done, which other programs on the machine do not
 * stretch the way they stretch wall-clock time */
static double cpu_sec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char *repeat(const char *head, const char *unit, size_t times, const char *tail)
{
	size_t hl = strlen(head), ul = strlen(unit), tl = strlen(tail), i;
	char *s = malloc(hl + ul * times + tl + 1), *p;

	assert_non_null(s);
	memcpy(s, head, hl);
	p = s + hl;
	for (i = 0; i < times; i++, p += ul)
		memcpy(p, unit, ul);
	memcpy(p, tail, tl + 1);
	return s;
}

/*
 * Megabyte statements are classified (or passed uninspected, or refused when they could reach a
 * setting) without crashing and in bounded time: a 300,000-operator chain would overflow the
 * stack inside libpg_query.
 */
static void test_huge_input(void **state)
{
	static const struct {
		const char *head, *unit, *tail;
		size_t times;
		enum stmt_verdict verdict;
		const char *sqlstate;
	} huge[] = {
	        {"update accounts set a = ", "1+", "1", 500000, STMT_PASS, ""},
	        {"select set_config('x', ", "1+", "1, false)", 500000, STMT_REJECT, "54001"},
	        {"select ", "1::int", "", 170000, STMT_PASS, ""},
	        {"select 1 from accounts", " union select 1", "", 70000, STMT_PASS, ""},
	        {"update accounts set a = ", "(", "", 1000000, STMT_PASS, ""},
	        {"insert into accounts values ('", "x", "')", 1000000, STMT_MUTATION, ""},
	        {"insert into accounts values ('", "x", "')", 2000000, STMT_PASS, ""},
	        {"select set_config('", "x", "', 'y', false)", 2000000, STMT_REJECT, "54001"},
	        {"insert into accounts values ", "(1,'ab'),", "(2,'cd')", 3000, STMT_MUTATION, ""},
	        {"insert into accounts values ", "(1,'ab'),", "(2,'cd')", 110000, STMT_PASS, ""},
	        {"insert into accounts values (", "-", "1)", 1000000, STMT_PASS, ""},
	        {"select '", "syncbouncer ", "'", 80000, STMT_PASS, ""},
	        {"delete from accounts where id = 'a'", " or id = 'b'", "", 5000, STMT_MUTATION,
	         ""},
	        {"update accounts set a = x", " is null", "", 150000, STMT_PASS, ""},
	        {"update accounts set a = x", " isnull", "", 150000, STMT_PASS, ""},
	        {"update accounts set a = 1", " operator(+) 1", "", 120000, STMT_PASS, ""},
	        {"select 1 ", "collate \"C\" ", "", 150000, STMT_PASS, ""},
	        {"select 1 from accounts a", " join accounts using (id)", "", 80000, STMT_PASS, ""},
	};
	struct classifier *cl = new_classifier();
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(huge) / sizeof(huge[0]); i++) {
		char *sql = repeat(huge[i].head, huge[i].unit, huge[i].times, huge[i].tail);
		struct stmt_class out;
		double t0 = cpu_sec(), dt;
		int starts[1], lens[1];

		(void)classifier_quick_check(cl, "crm", sql, strlen(sql));
		assert_true(classifier_classify(cl, "crm", sql, &out));
		if (out.verdict != huge[i].verdict || strcmp(out.sqlstate, huge[i].sqlstate) != 0)
			fail_msg("huge %zu: %s %s", i, stmt_verdict_str(out.verdict), out.sqlstate);
		assert_true(classifier_split(sql, starts, lens, 1) >= 0);
		dt = cpu_sec() - t0;
		/* a blow-up on pathological input, not a speed check: 10 CPU seconds is far past
		 * what any of these takes even under the sanitizers */
		if (dt > 10.0)
			fail_msg("huge %zu: %.1f CPU s", i, dt);
		free(sql);
	}
	classifier_free(cl);
}

/* Many tables in many databases: each database sees its own. */
/* A session that has public.contacts of its own (an ordinary table). */
static bool public_contacts(void *arg, const char *database, const char *schema, const char *table)
{
	(void)arg;
	return strcmp(database, "crm") == 0 && strcmp(schema, "public") == 0 &&
	       strcmp(table, "contacts") == 0;
}

/* Unqualified names resolve through the session's search_path, as the server resolves them. */
static void test_search_path(void **state)
{
	static const struct {
		const char *search_path; /* NULL: the default */
		const char *sql;
		int table; /* -1: passes */
	} path_cases[] = {
	        {NULL, "insert into contacts (x) values (1)", -1},
	        {NULL, "insert into accounts (x) values (1)", 1},
	        {"salesforce, public", "insert into contacts (x) values (1)", 0},
	        {"salesforce, public", "update accounts set x = 1", 1},
	        {"\"$user\", salesforce", "delete from contacts", 0},
	        {"Salesforce", "delete from contacts", 0},      /* unquoted: folded */
	        {"\"Salesforce\"", "delete from contacts", -1}, /* quoted: kept */
	        {"salesforce", "insert into \"Leads\" (x) values (1)", 2},
	        {"salesforce", "insert into leads (x) values (1)", -1},
	        {"salesforce", "insert into public.contacts (x) values (1)", -1},
	        {"public, salesforce", "insert into contacts (x) values (1)", -1}, /* shadowed */
	        {"pg_catalog, pg_temp, salesforce", "delete from contacts", 0},
	        {"", "delete from contacts", -1},
	        {"salesforce, \"unterminated", "delete from contacts", -1},
	};
	struct classifier *cl = new_classifier();
	struct stmt_class sc;
	char names[4][CLASSIFIER_MAX_NAME_LEN + 1];

	(void)state;
	for (size_t i = 0; i < sizeof(path_cases) / sizeof(path_cases[0]); i++) {
		struct classifier_path path = {path_cases[i].search_path, "app", public_contacts,
		                               NULL};

		assert_true(classifier_classify_in(cl, "crm", &path, path_cases[i].sql, &sc));
		if (path_cases[i].table < 0
		            ? sc.verdict != STMT_PASS
		            : sc.verdict != STMT_MUTATION || sc.table != path_cases[i].table)
			fail_msg("case %zu (%s: %s): %s table %d", i,
			         path_cases[i].search_path ? path_cases[i].search_path : "default",
			         path_cases[i].sql, stmt_verdict_str(sc.verdict), sc.table);
	}
	assert_int_equal(classifier_path_schemas("\"$user\", public", "app", names, 4), 2);
	assert_string_equal(names[0], "app");
	assert_string_equal(names[1], "public");
	assert_int_equal(classifier_path_schemas(" A ,\"b\"\"c\", d", NULL, names, 4), 3);
	assert_string_equal(names[0], "a");
	assert_string_equal(names[1], "b\"c");
	assert_int_equal(classifier_path_schemas("a b", NULL, names, 4), -1);
	classifier_free(cl);
}

/* The SET and RESET statements that change search_path, and their values as SHOW gives them. */
static void test_search_path_change(void **state)
{
	static const struct {
		const char *sql;
		enum classifier_path_change change;
		const char *value;
		bool local;
	} path_cases[] = {
	        {"SET search_path = salesforce, public", CL_PATH_SET, "salesforce, public", false},
	        {"set SESSION search_path to 'Sales', \"x y\", '$user'", CL_PATH_SET,
	         "\"Sales\", \"x y\", \"$user\"", false},
	        {"SET LOCAL search_path = salesforce", CL_PATH_SET, "salesforce", true},
	        {"SET search_path = ''", CL_PATH_SET, "\"\"", false},
	        {"/* c */ RESET search_path", CL_PATH_DEFAULT, "", false},
	        {"SET search_path TO DEFAULT", CL_PATH_DEFAULT, "", false},
	        {"RESET ALL", CL_PATH_DEFAULT, "", false},
	        {"DISCARD ALL", CL_PATH_DEFAULT, "", false},
	        {"SET search_path = a; SET search_path = b", CL_PATH_SET, "b", false},
	        {"SET statement_timeout = 0", CL_PATH_NONE, "", false},
	        {"select 'set search_path = x'", CL_PATH_NONE, "", false},
	        {"SET search_path = ", CL_PATH_NONE, "", false}, /* the server refuses it */
	        {"SET search_path FROM CURRENT", CL_PATH_NONE, "", false},
	        /* the first word: its first letter, then the whole word in any case */
	        {"\n\t Discard ALL", CL_PATH_DEFAULT, "", false},
	        {"-- c\nReSeT search_path", CL_PATH_DEFAULT, "", false},
	        {"SETS search_path = x", CL_PATH_NONE, "", false},
	        {"resets all", CL_PATH_NONE, "", false},
	        {"discard_all", CL_PATH_NONE, "", false},
	        {"   ", CL_PATH_NONE, "", false},
	};
	char value[64];
	bool local;

	(void)state;
	for (size_t i = 0; i < sizeof(path_cases) / sizeof(path_cases[0]); i++) {
		enum classifier_path_change ch = classifier_path_change(
		        path_cases[i].sql, strlen(path_cases[i].sql), value, sizeof(value), &local);

		if (ch != path_cases[i].change || strcmp(value, path_cases[i].value) != 0 ||
		    local != path_cases[i].local)
			fail_msg("case %zu (%s): %d '%s' local %d", i, path_cases[i].sql, (int)ch,
			         value, (int)local);
	}
}

static void test_many_tables(void **state)
{
	struct classifier_table many[200];
	char names[200][3][16];
	struct classifier *cl;
	struct stmt_class out;
	int i;

	(void)state;
	for (i = 0; i < 200; i++) {
		snprintf(names[i][0], sizeof(names[i][0]), "db%d", i % 7);
		snprintf(names[i][1], sizeof(names[i][1]), "s%d", i % 3);
		snprintf(names[i][2], sizeof(names[i][2]), "t%d", i);
		many[i].database = names[i][0];
		many[i].schema = names[i][1];
		many[i].table = names[i][2];
	}
	cl = classifier_new(many, 200);
	assert_non_null(cl);
	/* t150: database db3 (150 % 7), schema s0 */
	assert_true(classifier_quick_check(cl, "db3", "delete from s0.t150", 19));
	assert_true(classifier_classify(cl, "db3", "delete from s0.t150", &out));
	assert_int_equal(out.verdict, STMT_MUTATION);
	assert_int_equal(out.table, 150);
	assert_true(classifier_classify(cl, "db4", "delete from s0.t150", &out));
	assert_int_equal(out.verdict, STMT_PASS);
	assert_true(classifier_classify(cl, "db3", "delete from s1.t150", &out));
	assert_int_equal(out.verdict, STMT_PASS);
	classifier_free(cl);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_table),
	        cmocka_unit_test(test_hints_and_details),
	        cmocka_unit_test(test_multi_statement_position),
	        cmocka_unit_test(test_split),
	        cmocka_unit_test(test_quick_check_bounds),
	        cmocka_unit_test(test_null_classifier),
	        cmocka_unit_test(test_new_refuses_bad_tables),
	        cmocka_unit_test(test_enum_names),
	        cmocka_unit_test(test_huge_input),
	        cmocka_unit_test(test_many_tables),
	        cmocka_unit_test(test_search_path),
	        cmocka_unit_test(test_search_path_change),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
