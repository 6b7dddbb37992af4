/*
 * classifier — decides which client statements touch synced tables, so that everything else
 * keeps the pass-through fast path.
 *
 * Two stages:
 *  - classifier_quick_check(): a lexer over the first token plus one substring scan of the text.
 *    It allocates nothing and never parses. It may say "maybe" (true) for statements that turn
 *    out harmless, but it says "no" (false) only when the statement cannot write a synced table
 *    of that database nor change a syncbouncer.* setting by any spelling it knows of.
 *  - classifier_classify(): the PostgreSQL grammar (libpg_query) names the statement's target
 *    tables, ON CONFLICT, RETURNING, writable CTEs and setting changes exactly.
 *
 * Invariants: a struct classifier is immutable after classifier_new(), so it may be shared by
 * every connection (and threads); the quick check and the classification never log SQL text.
 * Table names are compared as PostgreSQL stores them: unquoted SQL identifiers fold to lower
 * case, quoted ones keep their case, and an unqualified name resolves through the session's
 * search_path as the caller knows it (struct classifier_path), as the server resolves it.
 */
#ifndef SB_MUTATION_CLASSIFIER_H
#define SB_MUTATION_CLASSIFIER_H

#include <stdbool.h>
#include <stddef.h>

/* Built once per configuration from its synced tables; opaque. */
struct classifier;

/* One synced table: the [databases] entry it belongs to, and its schema and name in Postgres. */
struct classifier_table {
	const char *database;
	const char *schema;
	const char *table;
};

/* Bounds on what classifier_new() accepts; a longer name is not a Postgres identifier
 * (NAMEDATALEN). */
#define CLASSIFIER_MAX_TABLES   4096
#define CLASSIFIER_MAX_NAME_LEN 63

/*
 * Builds a classifier for n tables (n may be 0). Copies everything it needs: tables may be freed
 * afterwards; the index of a table in the array is what struct stmt_class.table reports.
 * Returns NULL on out of memory, or when n is out of range or a name is NULL, empty or longer
 * than CLASSIFIER_MAX_NAME_LEN (the caller logs its own message then).
 */
struct classifier *classifier_new(const struct classifier_table *tables, int n)
        __attribute__((warn_unused_result));
void classifier_free(struct classifier *cl);

/*
 * The spellings that could reach a syncbouncer.* setting, lower case, NULL-terminated: what a
 * statement too long to inspect whole is searched for while it streams.
 */
const char *const *classifier_setting_needles(void);

/*
 * Fast path, no allocation, no parser: false = relay the statement untouched.
 * Needs: cl (NULL: no synced tables, only the settings checks apply), database (the [databases]
 * entry of the connection), sql[0..len) (need not be NUL-terminated; the scan stops at len or
 * at a NUL byte).
 * True when the text contains (ignoring case) "syncbouncer", "set_config" or "U&" (a Unicode
 * escape could spell either); or when the first token (after whitespace, comments and '(') is
 * INSERT, UPDATE, DELETE, MERGE, COPY, WITH, TRUNCATE, EXPLAIN or PREPARE and the text contains
 * the name of a synced table of that database; or when the text holds more than one statement
 * and contains such a name. "SELECT 1" is refused after reading its eight bytes once.
 */
bool classifier_quick_check(const struct classifier *cl, const char *database, const char *sql,
                            size_t len);

enum stmt_verdict {
	STMT_PASS,     /* not a synced-table write: relay */
	STMT_MUTATION, /* INSERT/UPDATE/DELETE of exactly one synced table: the pipeline runs it */
	STMT_REJECT,   /* refuse with sqlstate/message/detail/hint below */
};
const char *stmt_verdict_str(enum stmt_verdict v);

enum stmt_op {
	OP_NONE,
	OP_INSERT,
	OP_UPDATE,
	OP_DELETE,
};
const char *stmt_op_str(enum stmt_op op);

struct stmt_class {
	enum stmt_verdict verdict;
	enum stmt_op op; /* MUTATION: what it does; else OP_NONE */
	/* MUTATION, and a REJECT about one table: its index given to classifier_new(); else -1 */
	int table;
	bool returning;           /* MUTATION: has RETURNING */
	bool on_conflict_nothing; /* MUTATION: INSERT ... ON CONFLICT DO NOTHING */
	int nstatements;          /* statements in the text (multi-statement simple query) */
	int nmutations;           /* statements among them that are MUTATION */
	/* among the statements, whatever their verdicts: */
	bool transaction_control; /* BEGIN, COMMIT, ROLLBACK, SAVEPOINT, PREPARE TRANSACTION... */
	bool copy_from_client;    /* COPY ... FROM STDIN: the client sends data after the query */
	bool deallocate;          /* DEALLOCATE: prepared statements the pooler may keep track of */
	/*
	 * The statement that decided the verdict (the first REJECT, else the first MUTATION, else
	 * 0): its index among the statements and its byte range in the text, starting at its first
	 * token and ending before its ';'.
	 */
	int stmt_index;
	int stmt_location, stmt_len;
	char sqlstate[6];                          /* REJECT: five characters and a NUL; else "" */
	char message[256], detail[256], hint[256]; /* REJECT: NUL-terminated; "" when none */
};

/*
 * Parses sql (NUL-terminated) with libpg_query and fills *out (always, whatever the result).
 * Needs cl (NULL: no synced tables) and database as for the quick check. Unqualified names
 * resolve through the default search_path ("$user", public, with no user: public). Several
 * statements are classified together: the verdict is the strongest one (REJECT > MUTATION > PASS).
 * A text PostgreSQL cannot parse gives STMT_PASS (PostgreSQL reports the error itself). A text too
 * large or too deeply nested to inspect is refused with 54001 when it could reach a
 * syncbouncer.* setting, else passed (the guard trigger still refuses its writes to synced
 * tables). Runs on the caller's thread: tens of microseconds for a typical write, a few
 * hundred milliseconds at the limits (doc/classifier.md).
 * Returns false only on out of memory; *out is then a REJECT with 53200, ready to send.
 */
bool classifier_classify(const struct classifier *cl, const char *database, const char *sql,
                         struct stmt_class *out) __attribute__((warn_unused_result));

/*
 * How unqualified table names resolve for one session: the first schema of its search_path
 * that holds a relation of that name. Implicit schemas (pg_catalog, pg_temp) hold no synced
 * table and are skipped.
 */
struct classifier_path {
	/* the session's search_path as SHOW gives it; NULL: PostgreSQL's default "$user", public */
	const char *search_path;
	const char *user; /* the role "$user" stands for */
	/*
	 * Whether schema holds a relation named table other than a synced table (which would take
	 * the name first); NULL when none is known.
	 */
	bool (*shadowed)(void *arg, const char *database, const char *schema, const char *table);
	void *arg;
};

/* classifier_classify() for a session whose search_path is path (NULL: the default). */
bool classifier_classify_in(const struct classifier *cl, const char *database,
                            const struct classifier_path *path, const char *sql,
                            struct stmt_class *out) __attribute__((warn_unused_result));

/*
 * The schemas of a search_path value (NULL: the default), in order, as PostgreSQL reads them:
 * unquoted names folded to lower case, "$user" replaced by user, pg_catalog and pg_temp left
 * out. Fills at most max names; returns how many, or -1 when the text is not a list of names.
 */
int classifier_path_schemas(const char *search_path, const char *user,
                            char (*out)[CLASSIFIER_MAX_NAME_LEN + 1], int max);

enum classifier_path_change {
	CL_PATH_NONE,    /* the text does not change search_path */
	CL_PATH_SET,     /* SET [SESSION | LOCAL] search_path = ...: the new value */
	CL_PATH_DEFAULT, /* RESET search_path, SET search_path TO DEFAULT, RESET ALL, DISCARD ALL */
};

/*
 * Whether sql[0..len) (NUL-terminated at len) changes the session's search_path; the last such
 * statement of the text decides. CL_PATH_SET puts the value, as SHOW search_path gives it, in
 * value (size bytes); *local tells SET LOCAL. Every other text costs a look at its first word:
 * only SET, RESET and DISCARD statements are parsed. set_config('search_path', ...) is not seen.
 */
enum classifier_path_change classifier_path_change(const char *sql, size_t len, char *value,
                                                   size_t size, bool *local);

/*
 * For multi-statement simple queries: the byte ranges of each statement of sql (NUL-terminated),
 * from its first token to before its ';' (empty statements are skipped). Fills at most max
 * entries of starts/lens and returns how many statements there are (which may exceed max), or
 * -1 when out of memory. A text the grammar rejects is split by the lexer alone.
 */
int classifier_split(const char *sql, int *starts, int *lens, int max)
        __attribute__((warn_unused_result));

#endif
