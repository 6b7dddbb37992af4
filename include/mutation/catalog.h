/*
 * catalog — the synced tables: for every [synced_tables] entry, the guard triggers installed in
 * its database and the table's shape read from pg_catalog (columns, the single primary key
 * column), over asynchronous libpq connections (pgc) on the loop.
 *
 * What the database holds (installed at start and at RELOAD, idempotently; see
 * src/mutation/catalog_sql.h for the text and the trigger's contract with the pipeline):
 *   schema syncbouncer: unlogged capture(xid, seq, tbl, op, old, new) and
 *   confirmed(xid, seq, tbl, key, fields), meta(key, value) with the schema version, and
 *   function guard(), attached to each synced table as trigger syncbouncer_guard (BEFORE
 *   INSERT OR UPDATE OR DELETE, FOR EACH ROW, argument: the primary key column) and
 *   syncbouncer_guard_truncate (BEFORE TRUNCATE, FOR EACH STATEMENT).
 * The schema is installed when the recorded version is older than ours (or missing), never
 * when it is newer or not a number: then the database's tables fail, saying why.
 *
 * Connections: one per (database, user). The user is the [synced_tables] line's user= (its
 * password from the auth_file, if plain text), else the [databases] entry's user and password;
 * with neither the table fails. Host, port and dbname come from the [databases] entry (an empty
 * host means unix_socket_dir, an empty dbname the entry's name).
 *
 * Invariants:
 * - Each table ends its first run CAT_READY or CAT_FAILED (with the reason in error[], also
 *   logged); one table's failure never fails another's, except when their shared connection or
 *   the schema installation fails.
 * - Failed tables that have a connection setting are tried again in the background (the
 *   database may come up later, a migration may create the table): after server_login_retry,
 *   then twice as long each time, up to 5 minutes. A table may so go from CAT_FAILED to
 *   CAT_READY at any time; a CAT_READY table never changes again (its columns stay valid for
 *   the catalog's life).
 * - done runs exactly once, later, from the loop, when no table is CAT_PENDING any more; never
 *   after catalog_free().
 * - The strings database/schema/table/api and cf are borrowed from the config passed to
 *   catalog_create(): the catalog must be freed before that config.
 */
#ifndef SB_MUTATION_CATALOG_H
#define SB_MUTATION_CATALOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct config;
struct userlist;
struct cf_synced_table;

struct catalog_column {
	char *name;
	unsigned type_oid;
	char *type_name; /* format_type() with the type modifier: "character varying(80)" */
	bool not_null, has_default; /* has_default: a default, identity or generated column */
};

enum catalog_state {
	CAT_PENDING,
	CAT_READY,
	CAT_FAILED,
};
/* "pending", "ready", "failed" */
const char *catalog_state_str(enum catalog_state state);

struct catalog_table {
	const char *database, *schema, *table, *api; /* from the config */
	const struct cf_synced_table *cf;            /* its kv pairs (object=, columns=, ...) */
	enum catalog_state state;
	char error[256]; /* why CAT_FAILED, "" otherwise */
	unsigned relid;
	char *pk; /* the primary key column's name */
	int ncols;
	struct catalog_column *cols; /* in column order */
	/*
	 * The other schemas holding a relation of the same name when the table was read, as a
	 * search_path lists them ("public,\"Sales\""); NULL when none.
	 */
	char *same_name;
	uint64_t inserts, updates, deletes, rejected; /* counters for SHOW SYNCED_TABLES */
};

struct catalog;

/*
 * Creates the catalog of cfg's [synced_tables] and starts installing and reading them over pgc
 * on base. users (may be NULL) gives passwords for user= on [synced_tables] lines. done (may be
 * NULL) runs once from the loop when every table is ready or failed, also when there are none.
 * Returns NULL only when out of memory; the caller owns the result (catalog_free()).
 */
struct catalog *catalog_create(struct event_base *base, const struct config *cfg,
                               const struct userlist *users,
                               void (*done)(void *arg, struct catalog *cat), void *arg);

int catalog_count(const struct catalog *cat);
/* Whether a synced table of database (as in [databases]) is still CAT_PENDING. */
bool catalog_db_pending(const struct catalog *cat, const char *database);
/* The i-th table in [synced_tables] order, or NULL when i is out of range. */
struct catalog_table *catalog_table_at(struct catalog *cat, int i);
/*
 * The table database.schema.table (database as in [databases], case-sensitive; schema and table
 * as PostgreSQL names them, i.e. folded as the config did), or NULL.
 */
/*
 * Whether database holds, in schema, a relation named table that is not a synced table (as of
 * when the synced tables of that name were read): an unqualified name finds it there.
 */
bool catalog_name_taken(const struct catalog *cat, const char *database, const char *schema,
                        const char *table);
struct catalog_table *catalog_find(struct catalog *cat, const char *database, const char *schema,
                                   const char *table);
/* The column called name in t, or NULL. */
const struct catalog_column *catalog_column_find(const struct catalog_table *t, const char *name);

/*
 * Closes the connections still open (their callbacks are dropped, done is not called) and
 * releases everything. NULL is fine.
 */
void catalog_free(struct catalog *cat);

/*
 * The libpq conninfo (host, port, dbname, user, password, ...) the catalog uses for database:
 * that of its first synced table whose user could be resolved. False when database has no
 * synced table, no usable user, or out is too small (out is then "").
 */
bool catalog_conninfo(const struct catalog *cat, const char *database, char *out, size_t size)
        __attribute__((warn_unused_result));

/* The schema and guard function installation text (simple protocol, one implicit transaction). */
const char *catalog_schema_sql(void);
/* The installed-version string that catalog_schema_sql() writes into syncbouncer.meta. */
const char *catalog_schema_version(void);
/*
 * A recorded schema version as a number into *out: decimal digits only, 1 to 9 of them. False
 * (out untouched) for anything else; such a schema is never installed over.
 */
bool catalog_version_parse(const char *text, long *out) __attribute__((warn_unused_result));
/*
 * The statements that (re)attach the guard triggers to schema.table with primary key column pk,
 * names quoted as identifiers. False when out is too small or a name is empty or too long.
 */
bool catalog_trigger_sql(const char *schema, const char *table, const char *pk, char *out,
                         size_t size) __attribute__((warn_unused_result));

#endif
