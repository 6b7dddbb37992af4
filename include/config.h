/*
 * config — the configuration file: pgbouncer's ini ([databases], [users], [pgbouncer]) read
 * unchanged, plus [apis] and [synced_tables].
 *
 * One table (in config.c) describes every [pgbouncer] setting: its name, type, field in
 * struct config, default, range and flags. Parsing, SET, SHOW CONFIG and the man page all come
 * from it, so a setting cannot be known to one and missing from another.
 *
 * Invariants of a struct config handed out by this module:
 *  - every [pgbouncer] setting holds a valid value (its default unless the file said otherwise);
 *  - every string field is non-NULL ("" when empty) and owned by the struct;
 *  - times are int64_t microseconds; per-database / per-user numbers use -1 for "not set";
 *  - the lists keep the order of the file; a later entry with the same name replaced the earlier
 *    one in place;
 *  - config_free() releases everything, including the lists.
 * A struct config is never modified by the loader after it is returned; a reload builds a new
 * one and the caller swaps them (config_keep_no_reload() first).
 */
#ifndef SB_CONFIG_H
#define SB_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Bounds on hostile input: a longer line or deeper %include nesting is an error. */
#define CF_MAX_LINE          (64 * 1024)
#define CF_MAX_INCLUDE_DEPTH 10
#define CF_MAX_FILE_SIZE     (16 * 1024 * 1024)
#define CF_MAX_PAIRS         256 /* key=value pairs on one connection-string line */

enum pool_mode {
	POOL_SESSION,
	POOL_TRANSACTION,
	POOL_STATEMENT,
};
const char *pool_mode_str(enum pool_mode mode);

enum auth_type {
	AUTH_ANY,
	AUTH_TRUST,
	AUTH_PLAIN,
	AUTH_MD5,
	AUTH_SCRAM_SHA_256,
	AUTH_CERT,
	AUTH_HBA,
	AUTH_PAM,
	AUTH_LDAP,
};
/* The ini spelling: "any", "trust", ..., "scram-sha-256". */
const char *auth_type_str(enum auth_type type);

/* client_tls_sslmode / server_tls_sslmode */
enum sslmode {
	SSLMODE_DISABLE,
	SSLMODE_ALLOW,
	SSLMODE_PREFER,
	SSLMODE_REQUIRE,
	SSLMODE_VERIFY_CA,
	SSLMODE_VERIFY_FULL,
};
const char *sslmode_str(enum sslmode mode);

/* [databases] load_balance_hosts */
enum load_balance_hosts {
	LOAD_BALANCE_ROUND_ROBIN,
	LOAD_BALANCE_DISABLE,
};
const char *load_balance_hosts_str(enum load_balance_hosts lb);

struct cf_kv {
	char *key;
	char *value;
};

/* One [databases] line. Strings are never NULL; "" means "not set". */
struct cf_database {
	char *name; /* as written (quotes removed); "*" is the fallback entry */
	char *host; /* "" = Unix socket in unix_socket_dir; may be "h1,h2" or "/dir" or "@abstract"
	             */
	int port;   /* 5432 unless set */
	char *dbname;   /* "" = the name the client asked for */
	char *user;     /* "" = the client's user name */
	char *password; /* secret: never log */
	char *auth_user;
	char *auth_query;
	char *auth_dbname;
	int pool_size, min_pool_size, reserve_pool_size, max_db_connections,
	        max_db_client_connections; /* -1 = not set */
	int pool_mode;                     /* -1 = not set, else enum pool_mode */
	int load_balance_hosts;            /* -1 = not set, else enum load_balance_hosts */
	int64_t server_lifetime;           /* usec, -1 = not set */
	int64_t query_wait_timeout;        /* usec, -1 = not set */
	char *connect_query, *client_encoding, *datestyle, *timezone, *application_name;
	int line;
	struct cf_database *next;
};

/* One [users] line. */
struct cf_user {
	char *name;
	int pool_mode; /* -1 = not set, else enum pool_mode */
	int pool_size, reserve_pool_size, max_user_connections,
	        max_user_client_connections; /* -1 = not set */
	int64_t query_timeout, query_wait_timeout, idle_transaction_timeout, transaction_timeout,
	        client_idle_timeout; /* usec, -1 = not set */
	int line;
	struct cf_user *next;
};

/* One [apis] line: all its pairs (type included, in file order), for the connector to read. */
struct cf_api {
	char *name;
	char *type; /* the type= value; never empty */
	struct cf_kv *kv;
	int nkv;
	char *file; /* where the entry was read (an %include'd file, maybe), for messages */
	int line;
	struct cf_api *next;
};

/* One [synced_tables] line "database.schema.table = api=... ...". */
struct cf_synced_table {
	char *database; /* a [databases] name, as written */
	char *schema;   /* unquoted identifiers folded to lower case, as PostgreSQL does */
	char *table;
	struct cf_kv *kv; /* api= included; api names an [apis] entry */
	int nkv;
	char *file; /* where the entry was read, for messages */
	int line;
	struct cf_synced_table *next;
};

/*
 * Every [pgbouncer] setting, one field per key, named exactly like the key. Ints are int, booleans
 * bool, strings char * (never NULL), times int64_t microseconds, enums their enum type.
 */
struct config {
	char *admin_users;
	bool application_name_add_host;
	char *auth_dbname;
	char *auth_file;
	char *auth_hba_file;
	char *auth_ident_file;
	char *auth_ldap_options;
	char *auth_query;
	enum auth_type auth_type;
	char *auth_user;
	int64_t autodb_idle_timeout;
	int64_t cancel_wait_timeout;
	int64_t client_idle_timeout;
	int64_t client_login_timeout;
	char *client_tls13_ciphers;
	char *client_tls_ca_file;
	char *client_tls_cert_file;
	char *client_tls_ciphers;
	char *client_tls_dheparams;
	char *client_tls_ecdhcurve;
	char *client_tls_key_file;
	char *client_tls_protocols;
	enum sslmode client_tls_sslmode;
	char *conffile;
	int default_pool_size;
	bool disable_pqexec;
	int64_t dns_max_ttl;
	int64_t dns_nxdomain_ttl;
	int64_t dns_zone_check_period;
	int64_t idle_transaction_timeout;
	char *ignore_startup_parameters;
	char *job_name;
	char *journal_file; /* syncbouncer's own: where API-accepted, not-yet-committed writes wait */
	char *listen_addr;
	int listen_backlog;
	int listen_port;
	bool log_connections;
	bool log_disconnections;
	bool log_mutations;
	bool log_pooler_errors;
	bool log_stats;
	char *logfile;
	int max_client_conn;
	int max_db_client_connections;
	int max_db_connections;
	int max_packet_size;
	int max_prepared_statements;
	int max_user_client_connections;
	int max_user_connections;
	char *metrics_listen;
	char *metrics_users;
	int min_pool_size;
	int mutation_history;
	int peer_id;
	char *pidfile;
	int pkt_buf;
	enum pool_mode pool_mode;
	int64_t query_timeout;
	int64_t query_wait_notify;
	int64_t query_wait_timeout;
	int reserve_pool_size;
	int64_t reserve_pool_timeout;
	char *resolv_conf;
	int sbuf_loopcnt;
	int scram_iterations;
	int64_t server_check_delay;
	char *server_check_query;
	int64_t server_connect_timeout;
	bool server_fast_close;
	int64_t server_idle_timeout;
	int64_t server_lifetime;
	int64_t server_login_retry;
	char *server_reset_query;
	bool server_reset_query_always;
	bool server_round_robin;
	char *server_tls13_ciphers;
	char *server_tls_ca_file;
	char *server_tls_cert_file;
	char *server_tls_ciphers;
	char *server_tls_key_file;
	char *server_tls_protocols;
	int64_t settle_deadline; /* syncbouncer's own: an unsettled write past this age is alerted */
	enum sslmode server_tls_sslmode;
	bool so_reuseport;
	int stats_period;
	char *stats_users;
	int64_t suspend_timeout;
	bool syslog;
	char *syslog_facility;
	char *syslog_ident;
	int tcp_defer_accept;
	bool tcp_keepalive;
	int tcp_keepcnt;
	int tcp_keepidle;
	int tcp_keepintvl;
	int tcp_socket_buffer;
	int tcp_user_timeout;
	char *track_extra_parameters;
	int64_t transaction_timeout;
	char *unix_socket_dir;
	char *unix_socket_group;
	int unix_socket_mode;
	char *user;
	int verbose;
	char *workers; /* "1".."64" or "auto": config_workers() */

	char *path; /* the file config_load() read ("" for defaults), as given */
	struct cf_database *databases;
	struct cf_user *users;
	struct cf_api *apis;
	struct cf_synced_table *synced_tables;
};

/* Flags of a [pgbouncer] setting. */
enum cf_flag {
	CF_NO_RELOAD = 1 << 0,   /* read at start only; RELOAD and SET keep the running value */
	CF_SECRET = 1 << 1,      /* never logged; SHOW CONFIG hides it */
	CF_UNSUPPORTED = 1 << 2, /* recognised but not implemented: a non-default value warns */
	CF_OCTAL = 1 << 3,       /* an int shown in octal (file modes) */
};

enum cf_level {
	CF_LEVEL_WARNING,
	CF_LEVEL_ERROR,
};
const char *cf_level_str(enum cf_level level);

/*
 * How to load. Every warning and error is logged (unless quiet) and also handed to report when
 * set, already formatted as "file:line: text" — for RELOAD replies and for tests.
 */
struct cf_load_opts {
	void (*report)(void *arg, enum cf_level level, const char *msg);
	void *arg;
	bool quiet;      /* do not log (fuzzing, tests) */
	bool no_include; /* %include is an error: never open a file (fuzzing) */
};

/* A config with every setting at its default and no entries; NULL only when out of memory. */
struct config *config_new_defaults(void);

/*
 * Parses the file at path into a new config (*out, owned by the caller) and returns true; on any
 * error (unreadable file, syntax, bad value, bad %include) logs it with file:line, sets *out to
 * NULL and returns false. Unknown settings are warnings only. A relative %include path is taken
 * relative to the directory of the file that contains it.
 */
bool config_load(const char *path, struct config **out) __attribute__((warn_unused_result));
bool config_load_opts(const char *path, const struct cf_load_opts *opts, struct config **out)
        __attribute__((warn_unused_result));
/*
 * Same from memory: text[0..len) (need not be NUL-terminated) is the file's content, name is used
 * in messages and as the base of relative %include paths. opts may be NULL.
 */
bool config_load_buffer(const char *text, size_t len, const char *name, struct config **out)
        __attribute__((warn_unused_result));
bool config_load_buffer_opts(const char *text, size_t len, const char *name,
                             const struct cf_load_opts *opts, struct config **out)
        __attribute__((warn_unused_result));

/* The number of event loops cfg asks for (workers: a number, or auto = the online CPUs). */
int config_workers(const struct config *cfg);
/*
 * Whether cfg's workers setting is usable: a number from 1 to 64 or "auto". False with the
 * reason in err.
 */
bool config_workers_check(const struct config *cfg, char *err, size_t errsize)
        __attribute__((warn_unused_result));

/* Releases cfg and everything it owns; NULL is fine. */
void config_free(struct config *cfg);

/*
 * Settings that need a restart (CF_NO_RELOAD) are copied from old into fresh, with a warning for
 * each that differs, so that a RELOAD never half-applies them. Both stay owned by the caller.
 */
bool config_keep_no_reload(struct config *fresh, const struct config *old)
        __attribute__((warn_unused_result));

/*
 * A deep copy of src that owns all its strings and lists, for another worker to hold the same
 * configuration without sharing memory; NULL when out of memory.
 */
struct config *config_copy(const struct config *src) __attribute__((warn_unused_result));
/*
 * Setting key of dst takes the value it has in src, as it is (src checked it already): what
 * the workers after the first do with a SET. False for an unknown key or out of memory.
 */
bool config_set_from(struct config *dst, const struct config *src, const char *key)
        __attribute__((warn_unused_result));

/* The [databases] entry called name; else the "*" entry; else NULL. Borrowed from cfg. */
const struct cf_database *config_find_database(const struct config *cfg, const char *name);
/* The [users] entry called name, or NULL. Borrowed from cfg. */
const struct cf_user *config_find_user(const struct config *cfg, const char *name);
const struct cf_api *config_find_api(const struct config *cfg, const char *name);
/*
 * Whether name is in list, a setting of comma-separated names (admin_users, stats_users,
 * metrics_users, ignore_startup_parameters, ...), spaces and tabs around each ignored as
 * pgbouncer ignores them. ignore_case for parameter names; user names are compared exactly.
 */
bool cf_list_has(const char *list, const char *name, bool ignore_case);
/* The value of key among kv[0..nkv), or NULL when absent. Borrowed. */
const char *cf_kv_get(const struct cf_kv *kv, int nkv, const char *key);
/*
 * Whether a connection-string key holds a secret: password, secret, token, api_key, ... or a name
 * ending in _password, _secret, _token, ... (client_secret, refresh_token); not token_url.
 */
bool cf_kv_key_is_secret(const char *key);

/* The table, for SHOW CONFIG, SET and the documentation; keys are in alphabetical order. */
int config_key_count(void);
const char *config_key_name(int i);
/* Index of the setting called name (case-insensitive), or -1. */
int config_key_index(const char *name);
unsigned config_key_flags(int i);
bool config_key_is_secret(int i);
bool config_key_reloadable(int i);
/* "int", "bool", "string", "time", "enum", "size" */
const char *config_key_type_str(int i);
/*
 * The current value as text in pgbouncer's formatting: ints in decimal (octal for file modes),
 * booleans 0/1, times in seconds ("3600", "0.5"), enums by name. A secret that is set prints as
 * "********". Always NUL-terminates buf (size > 0); a value that does not fit is cut.
 */
void config_key_format(const struct config *cfg, int i, char *buf, size_t size);
void config_key_format_default(int i, char *buf, size_t size);

/*
 * SET key = value at runtime. Rejects an unknown key, a setting that needs a restart and a bad
 * value, with a one-line reason in err; cfg is unchanged then.
 */
bool config_set(struct config *cfg, const char *key, const char *value, char *err, size_t errsize)
        __attribute__((warn_unused_result));

#endif
