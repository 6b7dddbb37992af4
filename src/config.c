/*
 * config — reads pgbouncer's ini format into a struct config.
 *
 * The [pgbouncer] section is driven by cf_keys[] below: one row per setting gives its name, type,
 * field, default text, range and flags. Loading, SET, SHOW CONFIG (config_key_format) and the man
 * page all read that table, so they cannot disagree. Connection-string sections ([databases],
 * [users]) have smaller tables of the same shape; [apis] and [synced_tables] keep their pairs for
 * the modules that understand them.
 *
 * Everything read here is hostile: a file is read only if it is a regular file no larger than
 * CF_MAX_FILE_SIZE, a line is at most CF_MAX_LINE bytes, %include nests at most
 * CF_MAX_INCLUDE_DEPTH deep and never into a file already being read, a connection string has
 * at most CF_MAX_PAIRS pairs, and every number is range-checked. Errors and warnings name
 * file:line. A load with any error returns no config at all, so a reload can keep the old one.
 * Values of secret settings never appear in messages.
 */
#include "config.h"

#include "log.h"
#include "workers.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#define USEC_PER_SEC 1000000LL
/* 100 years: far beyond any sensible timeout, far below int64 overflow. */
#define TIME_MAX_USEC (100LL * 365 * 24 * 3600 * USEC_PER_SEC)
#define MSG_MAX       1024
#define SECRET_MASK   "********"
/* PostgreSQL's NAMEDATALEN - 1: longer names would be truncated by the server. */
#define NAME_MAX_LEN 63

_Static_assert(sizeof(enum pool_mode) == sizeof(unsigned int), "enum storage");
_Static_assert(sizeof(enum auth_type) == sizeof(unsigned int), "enum storage");
_Static_assert(sizeof(enum sslmode) == sizeof(unsigned int), "enum storage");

/* ---- enums ---------------------------------------------------------------------------------- */

struct cf_lookup {
	const char *name;
	int value;
};

static const struct cf_lookup pool_mode_map[] = {
        {"session", POOL_SESSION},
        {"transaction", POOL_TRANSACTION},
        {"statement", POOL_STATEMENT},
        {NULL, 0},
};

static const struct cf_lookup auth_type_map[] = {
        {"any", AUTH_ANY},
        {"trust", AUTH_TRUST},
        {"plain", AUTH_PLAIN},
        {"md5", AUTH_MD5},
        {"scram-sha-256", AUTH_SCRAM_SHA_256},
        {"cert", AUTH_CERT},
        {"hba", AUTH_HBA},
        {"pam", AUTH_PAM},
        {"ldap", AUTH_LDAP},
        {NULL, 0},
};

static const struct cf_lookup sslmode_map[] = {
        {"disable", SSLMODE_DISABLE},
        {"allow", SSLMODE_ALLOW},
        {"prefer", SSLMODE_PREFER},
        {"require", SSLMODE_REQUIRE},
        {"verify-ca", SSLMODE_VERIFY_CA},
        {"verify-full", SSLMODE_VERIFY_FULL},
        {NULL, 0},
};

static const struct cf_lookup load_balance_hosts_map[] = {
        {"round-robin", LOAD_BALANCE_ROUND_ROBIN},
        {"disable", LOAD_BALANCE_DISABLE},
        {NULL, 0},
};

static const char *lookup_name(const struct cf_lookup *lk, int value)
{
	for (; lk->name; lk++) {
		if (lk->value == value)
			return lk->name;
	}
	return "INVALID";
}

const char *pool_mode_str(enum pool_mode mode)
{
	return lookup_name(pool_mode_map, (int)mode);
}

const char *auth_type_str(enum auth_type type)
{
	return lookup_name(auth_type_map, (int)type);
}

const char *sslmode_str(enum sslmode mode)
{
	return lookup_name(sslmode_map, (int)mode);
}

const char *load_balance_hosts_str(enum load_balance_hosts lb)
{
	return lookup_name(load_balance_hosts_map, (int)lb);
}

const char *cf_level_str(enum cf_level level)
{
	switch (level) {
	case CF_LEVEL_WARNING:
		return "WARNING";
	case CF_LEVEL_ERROR:
		return "ERROR";
	}
	return "?";
}

/* ---- the table ------------------------------------------------------------------------------ */

enum cf_vtype {
	CF_VT_INT,
	CF_VT_BOOL,
	CF_VT_STR,
	CF_VT_TIME, /* seconds as a decimal, stored as int64 usec */
	CF_VT_ENUM,
	CF_VT_SIZE, /* bytes, optional kB/MB/GB suffix, stored as int */
};

static const char *cf_vtype_str(enum cf_vtype t)
{
	switch (t) {
	case CF_VT_INT:
		return "int";
	case CF_VT_BOOL:
		return "bool";
	case CF_VT_STR:
		return "string";
	case CF_VT_TIME:
		return "time";
	case CF_VT_ENUM:
		return "enum";
	case CF_VT_SIZE:
		return "size";
	}
	return "?";
}

struct cf_key {
	const char *name;
	enum cf_vtype type;
	size_t offset;
	const char
	        *def; /* canonical text: config_key_format() of the default prints exactly this */
	int64_t min, max; /* ints and sizes as is, times in usec */
	unsigned flags;
	const struct cf_lookup *lookup;
};

/*
 * Each macro checks at compile time that the field has the C type the row claims: a _Generic
 * with no matching association does not compile.
 */
#define FIELD_OF(f, ctype) _Generic(((struct config *)0)->f, ctype : offsetof(struct config, f))
#define KINT(n, d, lo, hi, fl)                                                                     \
	{                                                                                          \
#n, CF_VT_INT, FIELD_OF(n, int), d, lo, hi, fl, NULL                               \
	}
#define KSIZE(n, d, lo, hi, fl)                                                                    \
	{                                                                                          \
#n, CF_VT_SIZE, FIELD_OF(n, int), d, lo, hi, fl, NULL                              \
	}
#define KBOOL(n, d, fl)                                                                            \
	{                                                                                          \
#n, CF_VT_BOOL, FIELD_OF(n, bool), d, 0, 1, fl, NULL                               \
	}
#define KSTR(n, d, fl)                                                                             \
	{                                                                                          \
#n, CF_VT_STR, FIELD_OF(n, char *), d, 0, 0, fl, NULL                              \
	}
#define KTIME(n, d, fl)                                                                            \
	{                                                                                          \
#n, CF_VT_TIME, FIELD_OF(n, int64_t), d, 0, TIME_MAX_USEC, fl, NULL                \
	}
#define KENUM(n, ctype, d, lk, fl)                                                                 \
	{                                                                                          \
#n, CF_VT_ENUM, FIELD_OF(n, ctype), d, 0, 0, fl, lk                                \
	}

#define DEFAULT_AUTH_QUERY                                                                         \
	"SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END FROM "     \
	"pg_authid WHERE rolname=$1 AND rolcanlogin"

/*
 * pgbouncer 1.25's settings with its defaults, in alphabetical order (SHOW CONFIG's order).
 * Where pgbouncer's default is the program's own name, ours is "syncbouncer".
 */
static const struct cf_key cf_keys[] = {
        KSTR(admin_users, "", 0),
        KBOOL(application_name_add_host, "0", 0),
        KSTR(auth_dbname, "", 0),
        KSTR(auth_file, "", 0),
        KSTR(auth_hba_file, "", 0),
        KSTR(auth_ident_file, "", 0),
        /* may carry an LDAP bind password */
        KSTR(auth_ldap_options, "", CF_SECRET | CF_UNSUPPORTED),
        KSTR(auth_query, DEFAULT_AUTH_QUERY, 0),
        KENUM(auth_type, enum auth_type, "md5", auth_type_map, 0),
        KSTR(auth_user, "", 0),
        KTIME(autodb_idle_timeout, "3600", 0),
        KTIME(cancel_wait_timeout, "10", 0),
        KTIME(client_idle_timeout, "0", 0),
        KTIME(client_login_timeout, "60", 0),
        KSTR(client_tls13_ciphers, "", 0),
        KSTR(client_tls_ca_file, "", 0),
        KSTR(client_tls_cert_file, "", 0),
        KSTR(client_tls_ciphers, "default", 0),
        KSTR(client_tls_dheparams, "auto", 0),
        KSTR(client_tls_ecdhcurve, "auto", 0),
        KSTR(client_tls_key_file, "", 0),
        KSTR(client_tls_protocols, "secure", 0),
        KENUM(client_tls_sslmode, enum sslmode, "disable", sslmode_map, 0),
        KSTR(conffile, "", 0),
        KINT(default_pool_size, "20", 0, INT_MAX, 0),
        KBOOL(disable_pqexec, "0", CF_NO_RELOAD),
        KTIME(dns_max_ttl, "15", 0),
        KTIME(dns_nxdomain_ttl, "15", 0),
        KTIME(dns_zone_check_period, "0", CF_UNSUPPORTED),
        KTIME(idle_transaction_timeout, "0", 0),
        KSTR(ignore_startup_parameters, "", 0),
        KSTR(job_name, "syncbouncer", CF_NO_RELOAD),
        KSTR(journal_file, "", CF_NO_RELOAD),
        KSTR(listen_addr, "", CF_NO_RELOAD),
        KINT(listen_backlog, "128", 1, INT_MAX, CF_NO_RELOAD),
        KINT(listen_port, "6432", 1, 65535, CF_NO_RELOAD),
        KBOOL(log_connections, "1", 0),
        KBOOL(log_disconnections, "1", 0),
        KBOOL(log_mutations, "0", 0),
        KBOOL(log_pooler_errors, "1", 0),
        KBOOL(log_stats, "1", 0),
        KSTR(logfile, "", 0),
        KINT(max_client_conn, "100", 1, INT_MAX, 0),
        KINT(max_db_client_connections, "0", 0, INT_MAX, 0),
        KINT(max_db_connections, "0", 0, INT_MAX, 0),
        KSIZE(max_packet_size, "2147483647", 1024, INT_MAX, 0),
        KINT(max_prepared_statements, "200", 0, INT_MAX, 0),
        KINT(max_user_client_connections, "0", 0, INT_MAX, 0),
        KINT(max_user_connections, "0", 0, INT_MAX, 0),
        KSTR(metrics_listen, "", CF_NO_RELOAD),
        KSTR(metrics_users, "", 0),
        KINT(min_pool_size, "0", 0, INT_MAX, 0),
        KINT(mutation_history, "1000", 0, 1000000, 0),
        KINT(peer_id, "0", 0, 16383, CF_UNSUPPORTED),
        KSTR(pidfile, "", CF_NO_RELOAD),
        KSIZE(pkt_buf, "4096", 512, 64 * 1024 * 1024, CF_NO_RELOAD),
        KENUM(pool_mode, enum pool_mode, "session", pool_mode_map, 0),
        KTIME(query_timeout, "0", 0),
        KTIME(query_wait_notify, "5", 0),
        KTIME(query_wait_timeout, "120", 0),
        KINT(reserve_pool_size, "0", 0, INT_MAX, 0),
        KTIME(reserve_pool_timeout, "5", 0),
        KSTR(resolv_conf, "", CF_NO_RELOAD),
        KINT(sbuf_loopcnt, "5", 0, INT_MAX, 0),
        KINT(scram_iterations, "4096", 1, INT_MAX, 0),
        KTIME(server_check_delay, "30", 0),
        KSTR(server_check_query, "<empty>", 0),
        KTIME(server_connect_timeout, "15", 0),
        KBOOL(server_fast_close, "0", 0),
        KTIME(server_idle_timeout, "600", 0),
        KTIME(server_lifetime, "3600", 0),
        KTIME(server_login_retry, "15", 0),
        KSTR(server_reset_query, "DISCARD ALL", 0),
        KBOOL(server_reset_query_always, "0", 0),
        KBOOL(server_round_robin, "0", 0),
        KSTR(server_tls13_ciphers, "", 0),
        KSTR(server_tls_ca_file, "", 0),
        KSTR(server_tls_cert_file, "", 0),
        KSTR(server_tls_ciphers, "default", 0),
        KSTR(server_tls_key_file, "", 0),
        KSTR(server_tls_protocols, "secure", 0),
        KENUM(server_tls_sslmode, enum sslmode, "prefer", sslmode_map, 0),
        KTIME(settle_deadline, "300", 0),
        KBOOL(so_reuseport, "0", CF_NO_RELOAD),
        KINT(stats_period, "60", 1, INT_MAX, 0),
        KSTR(stats_users, "", 0),
        KTIME(suspend_timeout, "10", 0),
        KBOOL(syslog, "0", 0),
        KSTR(syslog_facility, "daemon", 0),
        KSTR(syslog_ident, "syncbouncer", 0),
        /* pgbouncer reads it as a number; any non-zero value turns TCP_DEFER_ACCEPT on */
        KINT(tcp_defer_accept, "1", 0, INT_MAX, 0),
        KBOOL(tcp_keepalive, "1", 0),
        KINT(tcp_keepcnt, "0", 0, 127, 0),
        KINT(tcp_keepidle, "0", 0, 32767, 0),
        KINT(tcp_keepintvl, "0", 0, 32767, 0),
        KSIZE(tcp_socket_buffer, "0", 0, INT_MAX, 0),
        KINT(tcp_user_timeout, "0", 0, INT_MAX, 0),
        KSTR(track_extra_parameters, "IntervalStyle", CF_NO_RELOAD),
        KTIME(transaction_timeout, "0", 0),
        KSTR(unix_socket_dir, "/tmp", CF_NO_RELOAD),
        KSTR(unix_socket_group, "", CF_NO_RELOAD),
        KINT(unix_socket_mode, "0777", 0, 07777, CF_NO_RELOAD | CF_OCTAL),
        KSTR(user, "", CF_NO_RELOAD),
        KINT(verbose, "0", 0, 10, 0),
        /* a number of event loops (1..64) or "auto" (the online CPUs): config_workers() */
        KSTR(workers, "1", CF_NO_RELOAD),
};

#define NKEYS ((int)(sizeof(cf_keys) / sizeof(cf_keys[0])))

/* Connection-string fields of [databases] and [users]: same shape, stored into their structs. */
struct cf_field {
	const char *name;
	enum cf_vtype type; /* enums are stored as int (-1 = not set) */
	size_t offset;
	int64_t min, max;
	const struct cf_lookup *lookup;
};

#define DB_FIELD(n, t, lo, hi, lk)                                                                 \
	{                                                                                          \
#n, t, offsetof(struct cf_database, n), lo, hi, lk                                 \
	}
static const struct cf_field db_fields[] = {
        DB_FIELD(dbname, CF_VT_STR, 0, 0, NULL),
        DB_FIELD(host, CF_VT_STR, 0, 0, NULL),
        DB_FIELD(port, CF_VT_INT, 1, 65535, NULL),
        DB_FIELD(user, CF_VT_STR, 0, 0, NULL),
        DB_FIELD(password, CF_VT_STR, 0, 0, NULL),
        DB_FIELD(auth_user, CF_VT_STR, 0, 0, NULL),
        DB_FIELD(auth_query, CF_VT_STR, 0, 0, NULL),
        DB_FIELD(auth_dbname, CF_VT_STR, 0, 0, NULL),
        DB_FIELD(pool_size, CF_VT_INT, 0, INT_MAX, NULL),
        DB_FIELD(min_pool_size, CF_VT_INT, 0, INT_MAX, NULL),
        DB_FIELD(reserve_pool_size, CF_VT_INT, 0, INT_MAX, NULL),
        /* the older spelling of reserve_pool_size */
        {"reserve_pool", CF_VT_INT, offsetof(struct cf_database, reserve_pool_size), 0, INT_MAX,
         NULL},
        DB_FIELD(max_db_connections, CF_VT_INT, 0, INT_MAX, NULL),
        DB_FIELD(max_db_client_connections, CF_VT_INT, 0, INT_MAX, NULL),
        DB_FIELD(pool_mode, CF_VT_ENUM, 0, 0, pool_mode_map),
        DB_FIELD(load_balance_hosts, CF_VT_ENUM, 0, 0, load_balance_hosts_map),
        DB_FIELD(server_lifetime, CF_VT_TIME, 0, TIME_MAX_USEC, NULL),
        DB_FIELD(query_wait_timeout, CF_VT_TIME, 0, TIME_MAX_USEC, NULL),
        DB_FIELD(connect_query, CF_VT_STR, 0, 0, NULL),
        DB_FIELD(client_encoding, CF_VT_STR, 0, 0, NULL),
        DB_FIELD(datestyle, CF_VT_STR, 0, 0, NULL),
        DB_FIELD(timezone, CF_VT_STR, 0, 0, NULL),
        DB_FIELD(application_name, CF_VT_STR, 0, 0, NULL),
};

#define USER_FIELD(n, t, lo, hi, lk)                                                               \
	{                                                                                          \
#n, t, offsetof(struct cf_user, n), lo, hi, lk                                     \
	}
static const struct cf_field user_fields[] = {
        USER_FIELD(pool_mode, CF_VT_ENUM, 0, 0, pool_mode_map),
        USER_FIELD(pool_size, CF_VT_INT, 0, INT_MAX, NULL),
        USER_FIELD(reserve_pool_size, CF_VT_INT, 0, INT_MAX, NULL),
        USER_FIELD(max_user_connections, CF_VT_INT, 0, INT_MAX, NULL),
        USER_FIELD(max_user_client_connections, CF_VT_INT, 0, INT_MAX, NULL),
        USER_FIELD(query_timeout, CF_VT_TIME, 0, TIME_MAX_USEC, NULL),
        USER_FIELD(query_wait_timeout, CF_VT_TIME, 0, TIME_MAX_USEC, NULL),
        USER_FIELD(idle_transaction_timeout, CF_VT_TIME, 0, TIME_MAX_USEC, NULL),
        USER_FIELD(transaction_timeout, CF_VT_TIME, 0, TIME_MAX_USEC, NULL),
        USER_FIELD(client_idle_timeout, CF_VT_TIME, 0, TIME_MAX_USEC, NULL),
};

#define NFIELDS(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* ---- settings refused until they work ------------------------------------------------------- */

/*
 * A setting whose point is security (TLS, who may log in and how) is never silently ignored.
 * Until it is implemented, a value that asks for it is an error naming the setting: the start
 * fails, a RELOAD keeps the running config (as with any broken file) and SET refuses it. One row
 * per refusal, checked against the value as SHOW CONFIG prints it (for [databases], as written);
 * whoever makes a setting work deletes its row, and its line in doc/syncbouncer.5.
 *
 * Settings left out on purpose (ignoring them opens nothing): auth_ldap_options (read only by
 * refused auth_type values); resolv_conf, peer_id, dns_zone_check_period and the
 * tcp_* tunables (no security role).
 */
struct cf_refusal {
	bool database_field; /* a [databases] connection-string field, else a [pgbouncer] setting */
	const char *key;
	bool (*refused)(const char *value, const char *def);
	const char *reason;
};

static bool value_not_default(const char *value, const char *def)
{
	return strcmp(value, def) != 0;
}

static bool value_set(const char *value, const char *def)
{
	(void)def;
	return value[0] != '\0';
}

static bool value_on(const char *value, const char *def)
{
	(void)def;
	return strcmp(value, "0") != 0;
}

static bool value_unimplemented_auth(const char *value, const char *def)
{
	(void)def;
	return strcmp(value, "pam") == 0 || strcmp(value, "ldap") == 0;
}

static const struct cf_refusal cf_refusals[] = {
        {false, "auth_type", value_unimplemented_auth,
         "this authentication method is not implemented yet"},
        {false, "disable_pqexec", value_on,
         "not implemented yet; the simple query protocol would stay open"},
        {false, "scram_iterations", value_not_default,
         "not implemented yet; SCRAM exchanges for plain-text auth_file passwords would use "
         "4096 iterations"},
        {false, "unix_socket_group", value_set,
         "not implemented yet; the socket would keep the pooler's own group, and "
         "unix_socket_mode would open it to that group"},
};

/*
 * The reason why value of key (a [pgbouncer] setting, or a [databases] field when database_field)
 * is refused, or NULL when it is accepted.
 */
static const char *refusal_of(bool database_field, const char *key, const char *value,
                              const char *def)
{
	for (size_t i = 0; i < sizeof(cf_refusals) / sizeof(cf_refusals[0]); i++) {
		const struct cf_refusal *r = &cf_refusals[i];

		if (r->database_field == database_field && strcasecmp(r->key, key) == 0 &&
		    r->refused(value, def))
			return r->reason;
	}
	return NULL;
}

/* ---- value parsing and formatting ------------------------------------------------------------ */

union cf_value {
	int64_t num; /* ints, sizes, enums, bools (0/1), times in usec */
	const char *str;
};

static bool parse_int(const char *s, int base, int64_t min, int64_t max, int64_t *out, char *err,
                      size_t errsize)
{
	char *end;
	long long v;

	if (*s == '\0') {
		snprintf(err, errsize, "empty value, a number is needed");
		return false;
	}
	errno = 0;
	v = strtoll(s, &end, base);
	if (end == s || *end != '\0' || isspace((unsigned char)*s)) {
		snprintf(err, errsize, "not a number");
		return false;
	}
	if (errno == ERANGE || v < min || v > max) {
		snprintf(err, errsize, "out of range (%lld..%lld)", (long long)min, (long long)max);
		return false;
	}
	*out = v;
	return true;
}

static bool parse_bool(const char *s, int64_t *out, char *err, size_t errsize)
{
	static const char *const yes[] = {"1", "on", "true", "yes", NULL};
	static const char *const no[] = {"0", "off", "false", "no", NULL};
	int64_t n;

	for (int i = 0; yes[i]; i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = 1;
			return true;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = 0;
			return true;
		}
	}
	/* pgbouncer stores these as ints: any other number is accepted, non-zero meaning on */
	if (parse_int(s, 10, INT_MIN, INT_MAX, &n, err, errsize)) {
		*out = n != 0;
		return true;
	}
	snprintf(err, errsize, "not a boolean (0, 1, on, off, true, false)");
	return false;
}

/* Seconds as a decimal, optionally with a unit: us, ms, s, min, h, d. */
static bool parse_time(const char *s, int64_t min, int64_t max, int64_t *out, char *err,
                       size_t errsize)
{
	static const struct {
		const char *unit;
		double usec;
	} units[] = {
	        {"", 1e6},     {"s", 1e6},    {"us", 1},      {"ms", 1e3},
	        {"min", 60e6}, {"h", 3600e6}, {"d", 86400e6},
	};
	char *end;
	double d, usec;
	size_t i;

	if (*s == '\0' || isspace((unsigned char)*s)) {
		snprintf(err, errsize, "empty value, a time in seconds is needed");
		return false;
	}
	errno = 0;
	d = strtod(s, &end);
	if (end == s || errno == ERANGE || !isfinite(d)) {
		snprintf(err, errsize, "not a time in seconds");
		return false;
	}
	for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcmp(end, units[i].unit) == 0)
			break;
	}
	if (i == sizeof(units) / sizeof(units[0])) {
		snprintf(err, errsize, "not a time in seconds (units: us, ms, s, min, h, d)");
		return false;
	}
	usec = round(d * units[i].usec);
	if (usec < (double)min || usec > (double)max) {
		snprintf(err, errsize, "out of range (%g..%g seconds)", (double)min / 1e6,
		         (double)max / 1e6);
		return false;
	}
	*out = (int64_t)usec;
	return true;
}

/* Bytes, optionally with a binary unit: kB, MB, GB (case-insensitive). */
static bool parse_size(const char *s, int64_t min, int64_t max, int64_t *out, char *err,
                       size_t errsize)
{
	static const struct {
		const char *unit;
		int64_t mult;
	} units[] = {
	        {"", 1}, {"b", 1}, {"kb", 1024}, {"mb", 1024 * 1024}, {"gb", 1024 * 1024 * 1024},
	};
	char *end;
	long long v;
	size_t i;

	if (*s == '\0' || !isdigit((unsigned char)*s)) {
		snprintf(err, errsize, "not a size in bytes");
		return false;
	}
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno == ERANGE) {
		snprintf(err, errsize, "out of range (%lld..%lld)", (long long)min, (long long)max);
		return false;
	}
	for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcasecmp(end, units[i].unit) == 0)
			break;
	}
	if (i == sizeof(units) / sizeof(units[0])) {
		snprintf(err, errsize, "not a size in bytes (units: kB, MB, GB)");
		return false;
	}
	if (v > max / units[i].mult || v * units[i].mult < min) {
		snprintf(err, errsize, "out of range (%lld..%lld)", (long long)min, (long long)max);
		return false;
	}
	*out = v * units[i].mult;
	return true;
}

static bool parse_enum(const char *s, const struct cf_lookup *lk, int64_t *out, char *err,
                       size_t errsize)
{
	size_t used = 0;

	for (const struct cf_lookup *l = lk; l->name; l++) {
		if (strcasecmp(s, l->name) == 0) {
			*out = l->value;
			return true;
		}
	}
	used = (size_t)snprintf(err, errsize, "unknown value; one of:");
	for (const struct cf_lookup *l = lk; l->name && used < errsize; l++)
		used += (size_t)snprintf(err + used, errsize - used, " %s", l->name);
	return false;
}

/* Parses text as a value of type t; strings are borrowed from text. */
static bool parse_value(enum cf_vtype t, const struct cf_lookup *lk, int64_t min, int64_t max,
                        unsigned flags, const char *text, union cf_value *out, char *err,
                        size_t errsize)
{
	switch (t) {
	case CF_VT_INT:
		return parse_int(text, (flags & CF_OCTAL) ? 0 : 10, min, max, &out->num, err,
		                 errsize);
	case CF_VT_BOOL:
		return parse_bool(text, &out->num, err, errsize);
	case CF_VT_STR:
		out->str = text;
		return true;
	case CF_VT_TIME:
		return parse_time(text, min, max, &out->num, err, errsize);
	case CF_VT_ENUM:
		return parse_enum(text, lk, &out->num, err, errsize);
	case CF_VT_SIZE:
		return parse_size(text, min, max, &out->num, err, errsize);
	}
	snprintf(err, errsize, "bad type");
	return false;
}

/* Seconds, exact: "3600", "0.5", "0.000001". */
static void format_time(int64_t usec, char *buf, size_t size)
{
	int64_t sec = usec / USEC_PER_SEC, frac = usec % USEC_PER_SEC;
	char tail[8];
	int n;

	if (usec < 0) {
		snprintf(buf, size, "%lld", (long long)(usec == -1 ? -1 : usec / USEC_PER_SEC));
		return;
	}
	if (frac == 0) {
		snprintf(buf, size, "%lld", (long long)sec);
		return;
	}
	snprintf(tail, sizeof(tail), "%06lld", (long long)frac);
	for (n = 6; n > 1 && tail[n - 1] == '0'; n--)
		tail[n - 1] = '\0';
	snprintf(buf, size, "%lld.%s", (long long)sec, tail);
}

static void *key_field(const struct config *cfg, int i)
{
	return (char *)cfg + cf_keys[i].offset;
}

static void format_key(const struct config *cfg, int i, bool mask, char *buf, size_t size)
{
	const struct cf_key *k = &cf_keys[i];
	void *f = key_field(cfg, i);

	if (size == 0)
		return;
	switch (k->type) {
	case CF_VT_INT:
	case CF_VT_SIZE:
		if (k->flags & CF_OCTAL)
			snprintf(buf, size, "0%o", (unsigned)*(int *)f);
		else
			snprintf(buf, size, "%d", *(int *)f);
		return;
	case CF_VT_BOOL:
		snprintf(buf, size, "%d", *(bool *)f ? 1 : 0);
		return;
	case CF_VT_STR: {
		const char *s = *(char **)f;
		if (mask && (k->flags & CF_SECRET) && s[0] != '\0')
			s = SECRET_MASK;
		snprintf(buf, size, "%s", s);
		return;
	}
	case CF_VT_TIME:
		format_time(*(int64_t *)f, buf, size);
		return;
	case CF_VT_ENUM:
		snprintf(buf, size, "%s", lookup_name(k->lookup, (int)*(unsigned *)f));
		return;
	}
	buf[0] = '\0';
}

/* Stores a parsed value into setting i; false only when out of memory. */
static bool store_key(struct config *cfg, int i, const union cf_value *v)
{
	const struct cf_key *k = &cf_keys[i];
	void *f = key_field(cfg, i);

	switch (k->type) {
	case CF_VT_INT:
	case CF_VT_SIZE:
		*(int *)f = (int)v->num;
		return true;
	case CF_VT_BOOL:
		*(bool *)f = v->num != 0;
		return true;
	case CF_VT_TIME:
		*(int64_t *)f = v->num;
		return true;
	case CF_VT_ENUM:
		*(unsigned *)f = (unsigned)v->num;
		return true;
	case CF_VT_STR: {
		char *dup = strdup(v->str);
		if (!dup)
			return false;
		free(*(char **)f);
		*(char **)f = dup;
		return true;
	}
	}
	return false;
}

/* ---- table access --------------------------------------------------------------------------- */

int config_key_count(void)
{
	return NKEYS;
}

const char *config_key_name(int i)
{
	return (i >= 0 && i < NKEYS) ? cf_keys[i].name : NULL;
}

int config_key_index(const char *name)
{
	for (int i = 0; i < NKEYS; i++) {
		if (strcasecmp(cf_keys[i].name, name) == 0)
			return i;
	}
	return -1;
}

unsigned config_key_flags(int i)
{
	return (i >= 0 && i < NKEYS) ? cf_keys[i].flags : 0;
}

bool config_key_is_secret(int i)
{
	return (config_key_flags(i) & CF_SECRET) != 0;
}

bool config_key_reloadable(int i)
{
	return i >= 0 && i < NKEYS && !(cf_keys[i].flags & CF_NO_RELOAD);
}

const char *config_key_type_str(int i)
{
	return (i >= 0 && i < NKEYS) ? cf_vtype_str(cf_keys[i].type) : "?";
}

void config_key_format(const struct config *cfg, int i, char *buf, size_t size)
{
	if (size == 0)
		return;
	if (i < 0 || i >= NKEYS) {
		buf[0] = '\0';
		return;
	}
	format_key(cfg, i, true, buf, size);
}

void config_key_format_default(int i, char *buf, size_t size)
{
	if (size == 0)
		return;
	snprintf(buf, size, "%s", (i >= 0 && i < NKEYS) ? cf_keys[i].def : "");
}

/* ---- lifetime ------------------------------------------------------------------------------- */

static void kv_free(struct cf_kv *kv, int nkv)
{
	for (int i = 0; i < nkv; i++) {
		free(kv[i].key);
		free(kv[i].value);
	}
	free(kv);
}

static void database_free(struct cf_database *db)
{
	if (!db)
		return;
	for (int i = 0; i < NFIELDS(db_fields); i++) {
		if (db_fields[i].type == CF_VT_STR)
			free(*(char **)((char *)db + db_fields[i].offset));
	}
	free(db->name);
	free(db);
}

static void user_free(struct cf_user *u)
{
	if (!u)
		return;
	free(u->name);
	free(u);
}

static void api_free(struct cf_api *api)
{
	if (!api)
		return;
	free(api->name);
	free(api->type);
	free(api->file);
	kv_free(api->kv, api->nkv);
	free(api);
}

static void synced_table_free(struct cf_synced_table *st)
{
	if (!st)
		return;
	free(st->file);
	free(st->database);
	free(st->schema);
	free(st->table);
	kv_free(st->kv, st->nkv);
	free(st);
}

void config_free(struct config *cfg)
{
	if (!cfg)
		return;
	for (int i = 0; i < NKEYS; i++) {
		if (cf_keys[i].type == CF_VT_STR)
			free(*(char **)key_field(cfg, i));
	}
	free(cfg->path);
	while (cfg->databases) {
		struct cf_database *next = cfg->databases->next;
		database_free(cfg->databases);
		cfg->databases = next;
	}
	while (cfg->users) {
		struct cf_user *next = cfg->users->next;
		user_free(cfg->users);
		cfg->users = next;
	}
	while (cfg->apis) {
		struct cf_api *next = cfg->apis->next;
		api_free(cfg->apis);
		cfg->apis = next;
	}
	while (cfg->synced_tables) {
		struct cf_synced_table *next = cfg->synced_tables->next;
		synced_table_free(cfg->synced_tables);
		cfg->synced_tables = next;
	}
	free(cfg);
}

struct config *config_new_defaults(void)
{
	struct config *cfg = calloc(1, sizeof(*cfg));
	char err[256];

	if (!cfg)
		return NULL;
	/* strings not stored yet are NULL (calloc), which config_free accepts */
	for (int i = 0; i < NKEYS; i++) {
		const struct cf_key *k = &cf_keys[i];
		union cf_value v;

		if (!parse_value(k->type, k->lookup, k->min, k->max, k->flags, k->def, &v, err,
		                 sizeof(err)))
			fatal("config: default of %s does not parse: %s", k->name, err);
		if (!store_key(cfg, i, &v))
			goto oom;
	}
	cfg->path = strdup("");
	if (!cfg->path)
		goto oom;
	return cfg;
oom:
	config_free(cfg);
	return NULL;
}

/* ---- lookups -------------------------------------------------------------------------------- */

const struct cf_database *config_find_database(const struct config *cfg, const char *name)
{
	const struct cf_database *fallback = NULL;

	if (!cfg || !name)
		return NULL;
	for (const struct cf_database *db = cfg->databases; db; db = db->next) {
		if (strcmp(db->name, name) == 0)
			return db;
		if (strcmp(db->name, "*") == 0)
			fallback = db;
	}
	return fallback;
}

const struct cf_user *config_find_user(const struct config *cfg, const char *name)
{
	if (!cfg || !name)
		return NULL;
	for (const struct cf_user *u = cfg->users; u; u = u->next) {
		if (strcmp(u->name, name) == 0)
			return u;
	}
	return NULL;
}

const struct cf_api *config_find_api(const struct config *cfg, const char *name)
{
	if (!cfg || !name)
		return NULL;
	for (const struct cf_api *a = cfg->apis; a; a = a->next) {
		if (strcmp(a->name, name) == 0)
			return a;
	}
	return NULL;
}

bool cf_list_has(const char *list, const char *name, bool ignore_case)
{
	size_t n = strlen(name);
	const char *p = list;

	while (p != NULL && *p) {
		const char *end, *e;
		while (*p == ' ' || *p == ',' || *p == '\t')
			p++;
		end = p;
		while (*end && *end != ',')
			end++;
		e = end;
		while (e > p && (e[-1] == ' ' || e[-1] == '\t'))
			e--;
		if ((size_t)(e - p) == n && n > 0 &&
		    (ignore_case ? strncasecmp(p, name, n) : strncmp(p, name, n)) == 0)
			return true;
		p = end;
	}
	return false;
}

const char *cf_kv_get(const struct cf_kv *kv, int nkv, const char *key)
{
	if (!kv || !key)
		return NULL;
	for (int i = 0; i < nkv; i++) {
		if (strcmp(kv[i].key, key) == 0)
			return kv[i].value;
	}
	return NULL;
}

bool cf_kv_key_is_secret(const char *key)
{
	/* whole names, and endings such as hubspot_token or db_password; token_url is not secret */
	static const char *const names[] = {"password",    "passwd", "secret",     "token",
	                                    "api_key",     "apikey", "credential", "credentials",
	                                    "private_key", NULL};
	static const char *const endings[] = {
	        "_password", "_passwd",     "_secret",      "_token",       "_api_key",
	        "_apikey",   "_credential", "_credentials", "_private_key", NULL};
	size_t len;

	if (!key)
		return false;
	len = strlen(key);
	for (int i = 0; names[i]; i++) {
		if (strcasecmp(key, names[i]) == 0)
			return true;
	}
	for (int i = 0; endings[i]; i++) {
		size_t n = strlen(endings[i]);
		if (len > n && strcasecmp(key + len - n, endings[i]) == 0)
			return true;
	}
	return false;
}

/* ---- the parser ----------------------------------------------------------------------------- */

enum cf_section {
	SECT_NONE,
	SECT_PGBOUNCER,
	SECT_DATABASES,
	SECT_USERS,
	SECT_PEERS,
	SECT_APIS,
	SECT_SYNCED_TABLES,
	SECT_UNKNOWN,
};

struct cf_open_file {
	dev_t dev;
	ino_t ino;
};

/* The name of a file being read, kept until the end of the load for the messages about it. */
struct cf_name {
	struct cf_name *next;
	char name[];
};

/*
 * Entries by (section, name), so that a file with very many entries still loads in linear time
 * and a later duplicate finds the earlier entry at once. Open addressing, at most half full.
 */
struct cf_slot {
	uint64_t hash;
	char *key; /* section byte + name bytes, klen long */
	size_t klen;
	void *node;
};

struct cf_index {
	struct cf_slot *slots;
	size_t cap, used;
};

static uint64_t index_hash(const char *key, size_t klen)
{
	uint64_t h = 1469598103934665603ULL; /* FNV-1a */

	for (size_t i = 0; i < klen; i++) {
		h ^= (unsigned char)key[i];
		h *= 1099511628211ULL;
	}
	return h;
}

static struct cf_slot *index_slot(struct cf_slot *slots, size_t cap, uint64_t h, const char *key,
                                  size_t klen)
{
	for (size_t i = (size_t)h & (cap - 1);; i = (i + 1) & (cap - 1)) {
		struct cf_slot *sl = &slots[i];
		if (!sl->key ||
		    (sl->hash == h && sl->klen == klen && memcmp(sl->key, key, klen) == 0))
			return sl;
	}
}

/* The node stored under key, or NULL. */
static void *index_get(const struct cf_index *ix, const char *key, size_t klen)
{
	struct cf_slot *sl;

	if (ix->cap == 0)
		return NULL;
	sl = index_slot(ix->slots, ix->cap, index_hash(key, klen), key, klen);
	return sl->key ? sl->node : NULL;
}

/* Stores node under key (which must not be there yet); false when out of memory. */
static bool index_put(struct cf_index *ix, const char *key, size_t klen, void *node)
{
	uint64_t h = index_hash(key, klen);
	struct cf_slot *sl;

	if ((ix->used + 1) * 2 > ix->cap) {
		size_t cap = ix->cap ? ix->cap * 2 : 64;
		struct cf_slot *grown = calloc(cap, sizeof(*grown));
		if (!grown)
			return false;
		for (size_t i = 0; i < ix->cap; i++) {
			if (ix->slots[i].key)
				*index_slot(grown, cap, ix->slots[i].hash, ix->slots[i].key,
				            ix->slots[i].klen) = ix->slots[i];
		}
		free(ix->slots);
		ix->slots = grown;
		ix->cap = cap;
	}
	sl = index_slot(ix->slots, ix->cap, h, key, klen);
	sl->key = malloc(klen);
	if (!sl->key)
		return false;
	memcpy(sl->key, key, klen);
	sl->klen = klen;
	sl->hash = h;
	sl->node = node;
	ix->used++;
	return true;
}

static void index_free(struct cf_index *ix)
{
	for (size_t i = 0; i < ix->cap; i++)
		free(ix->slots[i].key);
	free(ix->slots);
	ix->slots = NULL;
	ix->cap = ix->used = 0;
}

/* The index key of an entry: the section, then the name's parts separated by NUL bytes. */
static size_t index_key(char *buf, size_t size, enum cf_section sect, const char *a, const char *b,
                        const char *c)
{
	const char *parts[3] = {a, b, c};
	size_t n = 0;

	buf[n++] = (char)sect;
	for (int i = 0; i < 3 && parts[i]; i++) {
		size_t len = strlen(parts[i]);
		if (n + len + 1 > size)
			return 0;
		memcpy(buf + n, parts[i], len + 1);
		n += len + 1;
	}
	return n;
}

struct cf_parser {
	struct config *cfg;
	const struct cf_load_opts *opts;
	enum cf_section sect;
	int depth; /* files open */
	struct cf_open_file open[CF_MAX_INCLUDE_DEPTH + 1];
	int nerrors, nwarnings;
	bool oom;
	char *line; /* CF_MAX_LINE + 1 bytes */
	struct cf_name *names;
	const char *key_file[NKEYS]; /* where each setting was last set, for later warnings */
	int key_line[NKEYS];
	struct cf_index index; /* entries by section and name */
	struct cf_database **db_tail;
	struct cf_user **user_tail;
	struct cf_api **api_tail;
	struct cf_synced_table **st_tail;
};

__attribute__((format(printf, 5, 6))) static void
report(struct cf_parser *p, enum cf_level lvl, const char *file, int line, const char *fmt, ...)
{
	char msg[MSG_MAX];
	size_t used = 0;
	va_list ap;

	if (file) {
		int n = line > 0 ? snprintf(msg, sizeof(msg), "%s:%d: ", file, line)
		                 : snprintf(msg, sizeof(msg), "%s: ", file);
		used = n > 0 && (size_t)n < sizeof(msg) ? (size_t)n : 0;
	}
	va_start(ap, fmt);
	vsnprintf(msg + used, sizeof(msg) - used, fmt, ap);
	va_end(ap);

	if (lvl == CF_LEVEL_ERROR)
		p->nerrors++;
	else
		p->nwarnings++;
	if (!p->opts || !p->opts->quiet)
		log_msg(lvl == CF_LEVEL_ERROR ? LOG_LVL_ERROR : LOG_LVL_WARNING, "%s", msg);
	if (p->opts && p->opts->report)
		p->opts->report(p->opts->arg, lvl, msg);
}

static void report_oom(struct cf_parser *p, const char *file, int line)
{
	if (!p->oom)
		report(p, CF_LEVEL_ERROR, file, line, "out of memory");
	p->oom = true;
}

static const char *keep_name(struct cf_parser *p, const char *name)
{
	size_t len = strlen(name);
	struct cf_name *n = malloc(sizeof(*n) + len + 1);

	if (!n)
		return NULL;
	memcpy(n->name, name, len + 1);
	n->next = p->names;
	p->names = n;
	return n->name;
}

static char *skip_space(char *s)
{
	while (*s == ' ' || *s == '\t')
		s++;
	return s;
}

static void trim_end(char *s)
{
	size_t n = strlen(s);

	while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
		s[--n] = '\0';
}

/* Appends key=value to a pair list, a repeated key replacing the earlier value. */
static bool kv_put(struct cf_kv **kv, int *nkv, const char *key, const char *value)
{
	char *v = strdup(value);
	struct cf_kv *grown;

	if (!v)
		return false;
	for (int i = 0; i < *nkv; i++) {
		if (strcmp((*kv)[i].key, key) == 0) {
			free((*kv)[i].value);
			(*kv)[i].value = v;
			return true;
		}
	}
	grown = realloc(*kv, (size_t)(*nkv + 1) * sizeof(**kv));
	if (!grown) {
		free(v);
		return false;
	}
	*kv = grown;
	grown[*nkv].value = v;
	grown[*nkv].key = strdup(key);
	if (!grown[*nkv].key) {
		free(v);
		return false;
	}
	(*nkv)++;
	return true;
}

static bool is_key_char(char c)
{
	return isalnum((unsigned char)c) || c == '_' || c == '-' || c == '.';
}

/*
 * Parses a connection string "key=value key='quoted \' value' ..." in place (s is modified).
 * Whitespace may surround '='. Inside a quoted value, \' and '' (pgbouncer's own escape) are a
 * quote and \\ is a backslash; any other backslash is kept as is, so that values written for
 * pgbouncer, where backslashes are plain characters, keep their meaning.
 */
static bool cstr_parse(char *s, struct cf_kv **kv, int *nkv, bool *oom, char *err, size_t errsize)
{
	*oom = false;
	for (;;) {
		char *key, *val, *w;
		char key_end;

		s = skip_space(s);
		if (*s == '\0')
			return true;
		key = s;
		while (is_key_char(*s))
			s++;
		if (s == key) {
			snprintf(err, errsize,
			         "syntax error in connection string: bad character '%c'",
			         isprint((unsigned char)*s) ? *s : '?');
			return false;
		}
		key_end = *s;
		*s = '\0';
		if (key_end != '=') {
			if (key_end != '\0')
				s = skip_space(s + 1);
			if (*s != '=') {
				snprintf(err, errsize,
				         "syntax error in connection string: missing '=' after %s",
				         key);
				return false;
			}
		}
		s = skip_space(s + 1);
		if (*s == '\'') {
			val = w = ++s;
			for (;;) {
				if (*s == '\'' && s[1] != '\'')
					break;
				if (*s == '\0') {
					snprintf(
					        err, errsize,
					        "syntax error in connection string: unterminated quoted value for %s",
					        key);
					return false;
				}
				if ((*s == '\\' && (s[1] == '\'' || s[1] == '\\')) || *s == '\'')
					s++;
				*w++ = *s++;
			}
			s++;
			*w = '\0';
			if (*s != '\0' && *s != ' ' && *s != '\t') {
				snprintf(
				        err, errsize,
				        "syntax error in connection string: text after quoted value of %s",
				        key);
				return false;
			}
		} else {
			val = s;
			while (*s != '\0' && *s != ' ' && *s != '\t')
				s++;
		}
		if (*s != '\0')
			*s++ = '\0';
		if (*nkv >= CF_MAX_PAIRS) {
			snprintf(err, errsize, "too many pairs in connection string (max %d)",
			         CF_MAX_PAIRS);
			return false;
		}
		if (!kv_put(kv, nkv, key, val)) {
			*oom = true;
			snprintf(err, errsize, "out of memory");
			return false;
		}
	}
}

/* Stores one connection-string value into a [databases]/[users] struct. */
static bool field_store(void *base, const struct cf_field *f, const char *text, bool *oom,
                        char *err, size_t errsize)
{
	void *dst = (char *)base + f->offset;
	union cf_value v;

	*oom = false;
	if (!parse_value(f->type, f->lookup, f->min, f->max, 0, text, &v, err, errsize))
		return false;
	switch (f->type) {
	case CF_VT_INT:
	case CF_VT_SIZE:
	case CF_VT_ENUM:
		*(int *)dst = (int)v.num;
		return true;
	case CF_VT_BOOL:
		*(bool *)dst = v.num != 0;
		return true;
	case CF_VT_TIME:
		*(int64_t *)dst = v.num;
		return true;
	case CF_VT_STR: {
		char *dup = strdup(v.str);
		if (!dup) {
			*oom = true;
			snprintf(err, errsize, "out of memory");
			return false;
		}
		free(*(char **)dst);
		*(char **)dst = dup;
		return true;
	}
	}
	return false;
}

/*
 * Applies pairs to a struct through a field table. Unknown keys warn; a bad value is an error
 * (its text is left out of the message when the key is a secret).
 */
static bool fields_apply(struct cf_parser *p, const char *file, int line, const char *what,
                         void *base, const struct cf_field *fields, int nfields,
                         const struct cf_kv *kv, int nkv)
{
	char err[256];
	bool ok = true, oom;

	for (int i = 0; i < nkv; i++) {
		const struct cf_field *f = NULL;

		for (int j = 0; j < nfields; j++) {
			if (strcmp(fields[j].name, kv[i].key) == 0) {
				f = &fields[j];
				break;
			}
		}
		if (!f) {
			report(p, CF_LEVEL_WARNING, file, line,
			       "unrecognized parameter %s in %s, ignored", kv[i].key, what);
			continue;
		}
		if (!field_store(base, f, kv[i].value, &oom, err, sizeof(err))) {
			if (oom)
				report_oom(p, file, line);
			else if (cf_kv_key_is_secret(kv[i].key))
				report(p, CF_LEVEL_ERROR, file, line,
				       "invalid value for %s in %s: %s", kv[i].key, what, err);
			else
				report(p, CF_LEVEL_ERROR, file, line,
				       "invalid value \"%.100s\" for %s in %s: %s", kv[i].value,
				       kv[i].key, what, err);
			ok = false;
		}
	}
	return ok;
}

static bool fields_init_strings(void *base, const struct cf_field *fields, int nfields)
{
	for (int j = 0; j < nfields; j++) {
		if (fields[j].type == CF_VT_STR) {
			char **dst = (char **)((char *)base + fields[j].offset);
			if (!*dst) {
				*dst = strdup("");
				if (!*dst)
					return false;
			}
		}
	}
	return true;
}

/*
 * An entry name: as written up to the '=', or in double quotes with "" for one quote (pgbouncer's
 * documented rule for names with other characters than [A-Za-z0-9_]), or in single quotes without
 * escapes (what pgbouncer's ini reader has long accepted).
 */
static bool unquote_name(const char *raw, char *out, size_t outsize)
{
	size_t n = 0;
	char q = raw[0];

	if (q != '"' && q != '\'') {
		if (strlen(raw) >= outsize)
			return false;
		strcpy(out, raw);
		return raw[0] != '\0';
	}
	for (const char *s = raw + 1;; s++) {
		if (*s == '\0')
			return false;
		if (*s == q) {
			if (q == '\'' || s[1] != '"') {
				if (s[1] != '\0')
					return false;
				break;
			}
			s++;
		}
		if (n + 1 >= outsize)
			return false;
		out[n++] = *s;
	}
	out[n] = '\0';
	return n > 0;
}

/*
 * Files a parsed section entry under its index key: a later entry with the same key replaces the
 * earlier one where it stood in its list, by swapping contents (entry, size bytes with its next
 * pointer at next_off, then holds the replaced contents for the caller to free); a new one is
 * indexed and *appended set, for the caller to put at the end of its list. False when out of
 * memory.
 */
static bool index_upsert(struct cf_parser *p, const char *key, size_t klen, void *entry,
                         size_t size, size_t next_off, bool *appended)
{
	unsigned char *old = index_get(&p->index, key, klen), *e = entry;
	void *old_next;

	*appended = false;
	if (old == NULL) {
		if (!index_put(&p->index, key, klen, entry))
			return false;
		*appended = true;
		return true;
	}
	memcpy(&old_next, old + next_off, sizeof(old_next));
	for (size_t i = 0; i < size; i++) {
		unsigned char t = old[i];
		old[i] = e[i];
		e[i] = t;
	}
	memcpy(old + next_off, &old_next, sizeof(old_next));
	memset(e + next_off, 0, sizeof(old_next));
	return true;
}

static void add_database(struct cf_parser *p, const char *file, int line, const char *name,
                         char *value)
{
	struct cf_database *db = NULL;
	bool appended;
	char key[NAME_MAX_LEN + 2];
	size_t klen;
	struct cf_kv *kv = NULL;
	int nkv = 0;
	char err[256];
	bool oom;

	if (strcmp(name, "pgbouncer") == 0) {
		report(p, CF_LEVEL_WARNING, file, line,
		       "database name \"pgbouncer\" is reserved for the admin console, ignored");
		goto cleanup;
	}
	if (!cstr_parse(value, &kv, &nkv, &oom, err, sizeof(err))) {
		if (oom)
			report_oom(p, file, line);
		else
			report(p, CF_LEVEL_ERROR, file, line, "database %s: %s", name, err);
		goto cleanup;
	}
	db = calloc(1, sizeof(*db));
	if (!db)
		goto oom;
	db->port = 5432;
	db->pool_size = db->min_pool_size = db->reserve_pool_size = -1;
	db->max_db_connections = db->max_db_client_connections = -1;
	db->pool_mode = db->load_balance_hosts = -1;
	db->server_lifetime = db->query_wait_timeout = -1;
	db->line = line;
	db->name = strdup(name);
	if (!db->name || !fields_init_strings(db, db_fields, NFIELDS(db_fields)))
		goto oom;
	if (!fields_apply(p, file, line, "[databases]", db, db_fields, NFIELDS(db_fields), kv, nkv))
		goto cleanup;
	for (int i = 0; i < nkv; i++) {
		const char *why = refusal_of(true, kv[i].key, kv[i].value, "");
		if (why) {
			report(p, CF_LEVEL_ERROR, file, line,
			       "database %s: %s is not supported: %s", name, kv[i].key, why);
			goto cleanup;
		}
	}

	/* a later entry with the same name replaces the earlier one where it stood */
	klen = index_key(key, sizeof(key), SECT_DATABASES, name, NULL, NULL);
	if (!index_upsert(p, key, klen, db, sizeof(*db), offsetof(struct cf_database, next),
	                  &appended))
		goto oom;
	if (appended) {
		*p->db_tail = db;
		p->db_tail = &db->next;
		db = NULL;
	}
	goto cleanup;
oom:
	report_oom(p, file, line);
cleanup:
	database_free(db);
	kv_free(kv, nkv);
}

static void add_user(struct cf_parser *p, const char *file, int line, const char *name, char *value)
{
	struct cf_user *u = NULL;
	bool appended;
	char key[NAME_MAX_LEN + 2];
	size_t klen;
	struct cf_kv *kv = NULL;
	int nkv = 0;
	char err[256];
	bool oom;

	if (!cstr_parse(value, &kv, &nkv, &oom, err, sizeof(err))) {
		if (oom)
			report_oom(p, file, line);
		else
			report(p, CF_LEVEL_ERROR, file, line, "user %s: %s", name, err);
		goto cleanup;
	}
	u = calloc(1, sizeof(*u));
	if (!u)
		goto oom;
	u->pool_mode = u->pool_size = u->reserve_pool_size = -1;
	u->max_user_connections = u->max_user_client_connections = -1;
	u->query_timeout = u->query_wait_timeout = u->idle_transaction_timeout = -1;
	u->transaction_timeout = u->client_idle_timeout = -1;
	u->line = line;
	u->name = strdup(name);
	if (!u->name)
		goto oom;
	if (!fields_apply(p, file, line, "[users]", u, user_fields, NFIELDS(user_fields), kv, nkv))
		goto cleanup;
	klen = index_key(key, sizeof(key), SECT_USERS, name, NULL, NULL);
	if (!index_upsert(p, key, klen, u, sizeof(*u), offsetof(struct cf_user, next),
	                  &appended))
		goto oom;
	if (appended) {
		*p->user_tail = u;
		p->user_tail = &u->next;
		u = NULL;
	}
	goto cleanup;
oom:
	report_oom(p, file, line);
cleanup:
	user_free(u);
	kv_free(kv, nkv);
}

/* API names appear in api= references, error messages and SHOW output: keep them plain. */
static bool api_name_ok(const char *name)
{
	if (!*name)
		return false;
	for (const char *s = name; *s; s++) {
		if (!isalnum((unsigned char)*s) && *s != '_' && *s != '-')
			return false;
	}
	return true;
}

/*
 * Whether url ("scheme://authority/...") carries userinfo ("user:password@host"): credentials
 * that SHOW APIS and log lines would show with the URL.
 */
static bool url_has_userinfo(const char *url)
{
	const char *auth = strstr(url, "://");
	size_t len;

	if (!auth)
		return false;
	auth += 3;
	len = strcspn(auth, "/?#");
	return memchr(auth, '@', len) != NULL;
}

static void add_api(struct cf_parser *p, const char *file, int line, const char *name, char *value)
{
	struct cf_api *api = NULL;
	bool appended;
	char key[NAME_MAX_LEN + 2];
	size_t klen;
	const char *type;
	char err[256];
	bool oom;

	if (!api_name_ok(name)) {
		report(p, CF_LEVEL_ERROR, file, line,
		       "API name \"%.100s\" must be letters, digits, '_' or '-'", name);
		return;
	}
	api = calloc(1, sizeof(*api));
	if (!api)
		goto oom;
	api->line = line;
	if (!cstr_parse(value, &api->kv, &api->nkv, &oom, err, sizeof(err))) {
		if (oom)
			goto oom;
		report(p, CF_LEVEL_ERROR, file, line, "API %s: %s", name, err);
		goto cleanup;
	}
	type = cf_kv_get(api->kv, api->nkv, "type");
	if (!type || !*type) {
		report(p, CF_LEVEL_ERROR, file, line, "API %s: type= is missing", name);
		goto cleanup;
	}
	for (int i = 0; i < api->nkv; i++) {
		size_t kl = strlen(api->kv[i].key);

		/* the URL itself is not repeated: it holds the password */
		if (kl >= 4 && strcmp(api->kv[i].key + kl - 4, "_url") == 0 &&
		    url_has_userinfo(api->kv[i].value)) {
			report(p, CF_LEVEL_ERROR, file, line,
			       "API %s: %s= must not carry credentials (user:password@host); put "
			       "them in auth= and its keys (auth=bearer token=..., auth_header=...), "
			       "which are kept secret",
			       name, api->kv[i].key);
			goto cleanup;
		}
	}
	api->name = strdup(name);
	api->type = strdup(type);
	api->file = strdup(file);
	if (!api->name || !api->type || !api->file)
		goto oom;
	klen = index_key(key, sizeof(key), SECT_APIS, name, NULL, NULL);
	if (!index_upsert(p, key, klen, api, sizeof(*api), offsetof(struct cf_api, next),
	                  &appended))
		goto oom;
	if (appended) {
		*p->api_tail = api;
		p->api_tail = &api->next;
		api = NULL;
	}
	goto cleanup;
oom:
	report_oom(p, file, line);
cleanup:
	api_free(api);
}

/*
 * One part of "database.schema.table": an unquoted name ([A-Za-z0-9_$], folded to lower case
 * when fold is set, as PostgreSQL folds identifiers) or a double-quoted one ("" = one quote).
 * Advances *sp past the part.
 */
static char *take_ident(const char **sp, bool fold)
{
	const char *s = *sp;
	char buf[NAME_MAX_LEN + 1];
	size_t n = 0;

	if (*s == '"') {
		for (s++;; s++) {
			if (*s == '\0')
				return NULL;
			if (*s == '"') {
				if (s[1] != '"')
					break;
				s++;
			}
			if (n >= NAME_MAX_LEN)
				return NULL;
			buf[n++] = *s;
		}
		s++;
	} else {
		for (; isalnum((unsigned char)*s) || *s == '_' || *s == '$'; s++) {
			if (n >= NAME_MAX_LEN)
				return NULL;
			buf[n++] = fold ? (char)tolower((unsigned char)*s) : *s;
		}
	}
	if (n == 0)
		return NULL;
	buf[n] = '\0';
	*sp = s;
	return strdup(buf);
}

static bool split_table_name(const char *raw, char **db, char **schema, char **table)
{
	const char *s = raw;

	*db = *schema = *table = NULL;
	*db = take_ident(&s, false);
	if (!*db || *s++ != '.')
		goto bad;
	*schema = take_ident(&s, true);
	if (!*schema || *s++ != '.')
		goto bad;
	*table = take_ident(&s, true);
	if (!*table || *s != '\0')
		goto bad;
	return true;
bad:
	free(*db);
	free(*schema);
	free(*table);
	*db = *schema = *table = NULL;
	return false;
}

static void add_synced_table(struct cf_parser *p, const char *file, int line, const char *raw,
                             char *value)
{
	struct cf_synced_table *st = NULL;
	bool appended;
	char key[3 * (NAME_MAX_LEN + 1) + 1];
	size_t klen;
	const char *api;
	char err[256];
	bool oom;

	st = calloc(1, sizeof(*st));
	if (!st)
		goto oom;
	st->line = line;
	st->file = strdup(file);
	if (!st->file)
		goto oom;
	if (!split_table_name(raw, &st->database, &st->schema, &st->table)) {
		/* a failed strdup looks the same as a bad name; the name is what users get wrong */
		report(p, CF_LEVEL_ERROR, file, line,
		       "synced table \"%.100s\" must be database.schema.table", raw);
		goto cleanup;
	}
	if (!cstr_parse(value, &st->kv, &st->nkv, &oom, err, sizeof(err))) {
		if (oom)
			goto oom;
		report(p, CF_LEVEL_ERROR, file, line, "synced table %s: %s", raw, err);
		goto cleanup;
	}
	api = cf_kv_get(st->kv, st->nkv, "api");
	if (!api || !*api) {
		report(p, CF_LEVEL_ERROR, file, line, "synced table %s: api= is missing", raw);
		goto cleanup;
	}
	klen = index_key(key, sizeof(key), SECT_SYNCED_TABLES, st->database, st->schema, st->table);
	if (!index_upsert(p, key, klen, st, sizeof(*st), offsetof(struct cf_synced_table, next),
	                  &appended))
		goto oom;
	if (appended) {
		*p->st_tail = st;
		p->st_tail = &st->next;
		st = NULL;
	}
	goto cleanup;
oom:
	report_oom(p, file, line);
cleanup:
	synced_table_free(st);
}

static void set_pgbouncer_key(struct cf_parser *p, const char *file, int line, const char *key,
                              const char *value)
{
	int i = config_key_index(key);
	const struct cf_key *k;
	union cf_value v;
	char err[256];

	if (i < 0) {
		report(p, CF_LEVEL_WARNING, file, line, "unknown setting %.100s, ignored", key);
		return;
	}
	k = &cf_keys[i];
	if (!parse_value(k->type, k->lookup, k->min, k->max, k->flags, value, &v, err,
	                 sizeof(err))) {
		if (k->flags & CF_SECRET)
			report(p, CF_LEVEL_ERROR, file, line, "invalid value for %s: %s", k->name,
			       err);
		else
			report(p, CF_LEVEL_ERROR, file, line, "invalid value \"%.100s\" for %s: %s",
			       value, k->name, err);
		return;
	}
	if (!store_key(p->cfg, i, &v)) {
		report_oom(p, file, line);
		return;
	}
	p->key_file[i] = file;
	p->key_line[i] = line;
}

static enum cf_section section_by_name(const char *name)
{
	static const struct {
		const char *name;
		enum cf_section sect;
	} sects[] = {
	        {"pgbouncer", SECT_PGBOUNCER}, {"databases", SECT_DATABASES},
	        {"users", SECT_USERS},         {"peers", SECT_PEERS},
	        {"apis", SECT_APIS},           {"synced_tables", SECT_SYNCED_TABLES},
	};
	for (size_t i = 0; i < sizeof(sects) / sizeof(sects[0]); i++) {
		if (strcasecmp(name, sects[i].name) == 0)
			return sects[i].sect;
	}
	return SECT_UNKNOWN;
}

static void parse_text(struct cf_parser *p, const char *text, size_t len, const char *file,
                       const char *dir);

/* Reads a whole regular file, at most CF_MAX_FILE_SIZE bytes. */
static bool read_file(struct cf_parser *p, const char *path, const char *from_file, int from_line,
                      char **buf, size_t *len, struct stat *st)
{
	int fd;
	ssize_t n;
	size_t got = 0;
	bool ok = false;

	*buf = NULL;
	/* O_NONBLOCK: opening a FIFO must not hang the loader; regular files ignore it */
	fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		report(p, CF_LEVEL_ERROR, from_file, from_line, "cannot open %s: %s", path,
		       strerror(errno));
		return false;
	}
	if (fstat(fd, st) < 0) {
		report(p, CF_LEVEL_ERROR, from_file, from_line, "cannot stat %s: %s", path,
		       strerror(errno));
		goto cleanup;
	}
	if (!S_ISREG(st->st_mode)) {
		report(p, CF_LEVEL_ERROR, from_file, from_line, "%s is not a regular file", path);
		goto cleanup;
	}
	if (st->st_size > CF_MAX_FILE_SIZE) {
		report(p, CF_LEVEL_ERROR, from_file, from_line, "%s is larger than %d bytes", path,
		       CF_MAX_FILE_SIZE);
		goto cleanup;
	}
	*buf = malloc((size_t)st->st_size + 1);
	if (!*buf) {
		report_oom(p, from_file, from_line);
		goto cleanup;
	}
	/* the file may grow while read: stop at the size seen, never past the buffer */
	while (got < (size_t)st->st_size) {
		n = read(fd, *buf + got, (size_t)st->st_size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			report(p, CF_LEVEL_ERROR, from_file, from_line, "cannot read %s: %s", path,
			       strerror(errno));
			goto cleanup;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	*len = got;
	ok = true;
cleanup:
	if (!ok) {
		free(*buf);
		*buf = NULL;
	}
	close(fd);
	return ok;
}

static char *dir_of(const char *path)
{
	const char *slash = strrchr(path, '/');

	if (!slash)
		return strdup(".");
	if (slash == path)
		return strdup("/");
	return strndup(path, (size_t)(slash - path));
}

/*
 * Parses one file. from_file/from_line name the %include line (NULL for the top file), for
 * messages about the file itself.
 */
static void parse_file(struct cf_parser *p, const char *path, const char *from_file, int from_line)
{
	char *buf = NULL, *dir = NULL;
	const char *name;
	size_t len = 0;
	struct stat st;

	if (p->depth > CF_MAX_INCLUDE_DEPTH) {
		report(p, CF_LEVEL_ERROR, from_file, from_line,
		       "%%include nested deeper than %d files", CF_MAX_INCLUDE_DEPTH);
		return;
	}
	if (!read_file(p, path, from_file, from_line, &buf, &len, &st))
		return;
	for (int i = 0; i < p->depth; i++) {
		if (p->open[i].dev == st.st_dev && p->open[i].ino == st.st_ino) {
			report(p, CF_LEVEL_ERROR, from_file, from_line,
			       "%%include loop: %s is already being read", path);
			goto cleanup;
		}
	}
	name = keep_name(p, path);
	dir = dir_of(path);
	if (!name || !dir) {
		report_oom(p, from_file, from_line);
		goto cleanup;
	}
	p->open[p->depth].dev = st.st_dev;
	p->open[p->depth].ino = st.st_ino;
	p->depth++;
	parse_text(p, buf, len, name, dir);
	p->depth--;
cleanup:
	free(dir);
	free(buf);
}

static void handle_include(struct cf_parser *p, const char *file, int line, const char *dir,
                           char *arg)
{
	char *path = NULL;

	trim_end(arg);
	if (*arg == '\0') {
		report(p, CF_LEVEL_ERROR, file, line, "%%include needs a file name");
		return;
	}
	if (p->opts && p->opts->no_include) {
		report(p, CF_LEVEL_ERROR, file, line, "%%include is not allowed here");
		return;
	}
	if (arg[0] == '/') {
		path = strdup(arg);
	} else if (asprintf(&path, "%s/%s", dir, arg) < 0) {
		path = NULL;
	}
	if (!path) {
		report_oom(p, file, line);
		return;
	}
	parse_file(p, path, file, line);
	free(path);
}

/*
 * A key up to '=' or whitespace; double or single quotes protect '=' and spaces (quoted entry
 * names, "schema"."table" parts). Returns the end of the key, or NULL when a quote is not closed.
 */
static char *scan_key(char *s)
{
	char quote = 0;

	for (; *s; s++) {
		if (quote) {
			if (*s == quote)
				quote = 0;
		} else if (*s == '"' || *s == '\'') {
			quote = *s;
		} else if (*s == '=' || *s == ' ' || *s == '\t') {
			break;
		}
	}
	return quote ? NULL : s;
}

static void parse_line(struct cf_parser *p, char *s, const char *file, int line, const char *dir)
{
	char *key, *key_end, *value;
	char name[NAME_MAX_LEN * 2 + 1];

	s = skip_space(s);
	trim_end(s);
	if (*s == '\0' || *s == ';' || *s == '#')
		return;

	if (*s == '%') {
		if (strncmp(s, "%include", 8) == 0 && (s[8] == ' ' || s[8] == '\t' || !s[8])) {
			handle_include(p, file, line, dir, skip_space(s + 8));
			return;
		}
		report(p, CF_LEVEL_ERROR, file, line, "unknown directive %.40s", s);
		return;
	}

	if (*s == '[') {
		char *close = strchr(s, ']');
		if (!close || *skip_space(close + 1) != '\0') {
			report(p, CF_LEVEL_ERROR, file, line, "syntax error in section header");
			p->sect = SECT_UNKNOWN;
			return;
		}
		*close = '\0';
		s = skip_space(s + 1);
		trim_end(s);
		p->sect = section_by_name(s);
		if (p->sect == SECT_UNKNOWN)
			report(p, CF_LEVEL_WARNING, file, line, "unknown section [%.100s], ignored",
			       s);
		else if (p->sect == SECT_PEERS)
			report(p, CF_LEVEL_WARNING, file, line,
			       "section [peers] is not supported yet, ignored");
		return;
	}

	key = s;
	key_end = scan_key(s);
	if (!key_end) {
		report(p, CF_LEVEL_ERROR, file, line, "syntax error: unterminated quote in key");
		return;
	}
	value = skip_space(key_end);
	if (*value != '=' || key_end == key) {
		report(p, CF_LEVEL_ERROR, file, line, "syntax error: expected key = value");
		return;
	}
	*key_end = '\0';
	value = skip_space(value + 1);

	switch (p->sect) {
	case SECT_NONE:
		report(p, CF_LEVEL_WARNING, file, line, "%.100s is outside of any section, ignored",
		       key);
		return;
	case SECT_UNKNOWN:
	case SECT_PEERS:
		return;
	case SECT_PGBOUNCER:
		set_pgbouncer_key(p, file, line, key, value);
		return;
	case SECT_SYNCED_TABLES:
		add_synced_table(p, file, line, key, value);
		return;
	case SECT_DATABASES:
	case SECT_USERS:
	case SECT_APIS:
		if (!unquote_name(key, name, sizeof(name)) || strlen(name) > NAME_MAX_LEN) {
			report(p, CF_LEVEL_ERROR, file, line,
			       "bad name %.100s (empty, badly quoted, or longer than %d bytes)",
			       key, NAME_MAX_LEN);
			return;
		}
		if (p->sect == SECT_DATABASES)
			add_database(p, file, line, name, value);
		else if (p->sect == SECT_USERS)
			add_user(p, file, line, name, value);
		else
			add_api(p, file, line, name, value);
		return;
	}
}

static void parse_text(struct cf_parser *p, const char *text, size_t len, const char *file,
                       const char *dir)
{
	const char *pos = text, *end = text + len;
	int line = 0;

	while (pos < end && !p->oom) {
		const char *nl = memchr(pos, '\n', (size_t)(end - pos));
		const char *eol = nl ? nl : end;
		size_t n = (size_t)(eol - pos);

		line++;
		if (n > CF_MAX_LINE) {
			report(p, CF_LEVEL_ERROR, file, line, "line longer than %d bytes",
			       CF_MAX_LINE);
		} else if (memchr(pos, '\0', n)) {
			report(p, CF_LEVEL_ERROR, file, line, "NUL byte in line");
		} else {
			memcpy(p->line, pos, n);
			p->line[n] = '\0';
			parse_line(p, p->line, file, line, dir);
		}
		pos = nl ? nl + 1 : end;
	}
}

/* Checks that need the whole file: references between sections, unsupported settings. */
static void check_whole(struct cf_parser *p)
{
	struct config *cfg = p->cfg;
	char val[256], key[NAME_MAX_LEN + 2];
	size_t klen;
	bool any_db;

	klen = index_key(key, sizeof(key), SECT_DATABASES, "*", NULL, NULL);
	any_db = index_get(&p->index, key, klen) != NULL;

	for (const struct cf_synced_table *st = cfg->synced_tables; st; st = st->next) {
		const char *api = cf_kv_get(st->kv, st->nkv, "api");

		klen = index_key(key, sizeof(key), SECT_DATABASES, st->database, NULL, NULL);
		if (!any_db && !index_get(&p->index, key, klen))
			report(p, CF_LEVEL_ERROR, st->file, st->line,
			       "synced table %s.%s.%s: database %s is not in [databases]",
			       st->database, st->schema, st->table, st->database);
		klen = index_key(key, sizeof(key), SECT_APIS, api ? api : "", NULL, NULL);
		if (api && (klen == 0 || !index_get(&p->index, key, klen)))
			report(p, CF_LEVEL_ERROR, st->file, st->line,
			       "synced table %s.%s.%s: api %.100s is not in [apis]", st->database,
			       st->schema, st->table, api);
	}
	{
		char why[200];
		int wi = config_key_index("workers");

		if (!config_workers_check(cfg, why, sizeof(why)))
			report(p, CF_LEVEL_ERROR, p->key_file[wi] ? p->key_file[wi] : p->cfg->path,
			       p->key_line[wi], "%s", why);
	}
	for (int i = 0; i < NKEYS; i++) {
		const char *why;

		if (!p->key_file[i])
			continue;
		format_key(cfg, i, false, val, sizeof(val));
		why = refusal_of(false, cf_keys[i].name, val, cf_keys[i].def);
		if (why)
			report(p, CF_LEVEL_ERROR, p->key_file[i], p->key_line[i],
			       "%s = %.100s is not supported: %s", cf_keys[i].name, val, why);
	}
	for (int i = 0; i < NKEYS; i++) {
		if (!(cf_keys[i].flags & CF_UNSUPPORTED) || !p->key_file[i])
			continue;
		format_key(cfg, i, false, val, sizeof(val));
		if (strcmp(val, cf_keys[i].def) != 0)
			report(p, CF_LEVEL_WARNING, p->key_file[i], p->key_line[i],
			       "setting %s is not supported yet, ignored", cf_keys[i].name);
	}
}

static bool load(const char *path, const char *text, size_t len, const char *name,
                 const struct cf_load_opts *opts, struct config **out)
{
	struct cf_parser p = {.opts = opts, .sect = SECT_NONE};
	const char *top = path ? path : name;
	bool ok = false;
	char *dir = NULL;

	*out = NULL;
	p.cfg = config_new_defaults();
	p.line = malloc(CF_MAX_LINE + 1);
	if (!p.cfg || !p.line) {
		report_oom(&p, top, 0);
		goto cleanup;
	}
	p.db_tail = &p.cfg->databases;
	p.user_tail = &p.cfg->users;
	p.api_tail = &p.cfg->apis;
	p.st_tail = &p.cfg->synced_tables;
	free(p.cfg->path);
	p.cfg->path = strdup(top);
	if (!p.cfg->path) {
		report_oom(&p, top, 0);
		goto cleanup;
	}
	if (path) {
		parse_file(&p, path, NULL, 0);
	} else {
		dir = dir_of(name);
		if (!dir) {
			report_oom(&p, top, 0);
			goto cleanup;
		}
		p.depth = 1; /* the buffer is the outermost "file"; it cannot be included again */
		parse_text(&p, text, len, top, dir);
	}
	if (p.oom)
		goto cleanup;
	check_whole(&p);
	/* conffile defaults to the file that was read, as pgbouncer's does */
	if (!p.key_file[config_key_index("conffile")]) {
		free(p.cfg->conffile);
		p.cfg->conffile = strdup(top);
		if (!p.cfg->conffile) {
			report_oom(&p, top, 0);
			goto cleanup;
		}
	}
	ok = p.nerrors == 0;
	if (!ok && !(opts && opts->quiet))
		log_error("%s: %d error(s) in the configuration, not loaded", top, p.nerrors);
cleanup:
	if (ok) {
		*out = p.cfg;
		p.cfg = NULL;
	}
	config_free(p.cfg);
	while (p.names) {
		struct cf_name *next = p.names->next;
		free(p.names);
		p.names = next;
	}
	index_free(&p.index);
	free(p.line);
	free(dir);
	return ok;
}

bool config_load_opts(const char *path, const struct cf_load_opts *opts, struct config **out)
{
	return load(path, NULL, 0, NULL, opts, out);
}

bool config_load(const char *path, struct config **out)
{
	return load(path, NULL, 0, NULL, NULL, out);
}

bool config_load_buffer_opts(const char *text, size_t len, const char *name,
                             const struct cf_load_opts *opts, struct config **out)
{
	return load(NULL, text, len, name ? name : "<buffer>", opts, out);
}

bool config_load_buffer(const char *text, size_t len, const char *name, struct config **out)
{
	return config_load_buffer_opts(text, len, name, NULL, out);
}

/* ---- runtime changes ------------------------------------------------------------------------ */

bool config_set(struct config *cfg, const char *key, const char *value, char *err, size_t errsize)
{
	char why[256];
	union cf_value v;
	int i = config_key_index(key);
	const struct cf_key *k;

	if (i < 0) {
		snprintf(err, errsize, "unknown setting: %.100s", key);
		return false;
	}
	k = &cf_keys[i];
	if (k->flags & CF_NO_RELOAD) {
		snprintf(err, errsize, "%s cannot be changed at runtime; it needs a restart",
		         k->name);
		return false;
	}
	if (!parse_value(k->type, k->lookup, k->min, k->max, k->flags, value, &v, why,
	                 sizeof(why))) {
		snprintf(err, errsize, "invalid value for %s: %s", k->name, why);
		return false;
	}
	{
		/* judged on the text SHOW CONFIG would print, as the loader does */
		struct config *probe = config_new_defaults();
		char val[256];
		const char *no;

		if (!probe || !store_key(probe, i, &v)) {
			config_free(probe);
			snprintf(err, errsize, "out of memory");
			return false;
		}
		format_key(probe, i, false, val, sizeof(val));
		config_free(probe);
		no = refusal_of(false, k->name, val, k->def);
		if (no) {
			snprintf(err, errsize, "%s = %.100s is not supported: %s", k->name, val,
			         no);
			return false;
		}
	}
	if (!store_key(cfg, i, &v)) {
		snprintf(err, errsize, "out of memory");
		return false;
	}
	if (k->flags & CF_UNSUPPORTED) {
		char val[256];
		format_key(cfg, i, false, val, sizeof(val));
		if (strcmp(val, k->def) != 0)
			log_warning("setting %s is not supported yet, ignored", k->name);
	}
	return true;
}

/*
 * The number of workers a `workers` setting asks for: 1..WORKERS_MAX, "auto" = the online CPUs
 * (bounded to the same range). -1 with the reason in err when the text is neither.
 */
static int workers_resolve(const char *value, char *err, size_t errsize)
{
	char *end;
	long n;

	if (strcmp(value, "auto") == 0) {
		long cpus = sysconf(_SC_NPROCESSORS_ONLN);
		if (cpus < 1)
			cpus = 1;
		return cpus > WORKERS_MAX ? WORKERS_MAX : (int)cpus;
	}
	errno = 0;
	n = strtol(value, &end, 10);
	if (value[0] == '\0' || *end != '\0' || errno != 0 || n < 1 || n > WORKERS_MAX) {
		snprintf(err, errsize,
		         "workers must be a number from 1 to %d or \"auto\", not \"%.40s\"",
		         WORKERS_MAX, value);
		return -1;
	}
	return (int)n;
}

int config_workers(const struct config *cfg)
{
	char err[128];
	int n = workers_resolve(cfg->workers, err, sizeof(err));

	return n < 1 ? 1 : n;
}

bool config_workers_check(const struct config *cfg, char *err, size_t errsize)
{
	int n = workers_resolve(cfg->workers, err, errsize);

	return n >= 0;
}

/* The value setting i holds in cfg, as store_key() takes it (a string stays cfg's). */
static void value_of(const struct config *cfg, int i, union cf_value *v)
{
	switch (cf_keys[i].type) {
	case CF_VT_STR:
		v->str = *(char **)key_field(cfg, i);
		return;
	case CF_VT_TIME:
		v->num = *(int64_t *)key_field(cfg, i);
		return;
	case CF_VT_BOOL:
		v->num = *(bool *)key_field(cfg, i);
		return;
	case CF_VT_ENUM:
		v->num = *(unsigned *)key_field(cfg, i);
		return;
	case CF_VT_INT:
	case CF_VT_SIZE:
		v->num = *(int *)key_field(cfg, i);
		return;
	}
	v->num = 0;
}

bool config_keep_no_reload(struct config *fresh, const struct config *old)
{
	char a[512], b[512];
	bool ok = true;

	for (int i = 0; i < NKEYS; i++) {
		const struct cf_key *k = &cf_keys[i];
		union cf_value v;

		if (!(k->flags & CF_NO_RELOAD))
			continue;
		format_key(fresh, i, false, a, sizeof(a));
		format_key(old, i, false, b, sizeof(b));
		if (strcmp(a, b) == 0)
			continue;
		log_warning("%s: setting %s changed; it needs a restart, the running value is kept",
		            fresh->path, k->name);
		value_of(old, i, &v);
		if (!store_key(fresh, i, &v))
			ok = false;
	}
	return ok;
}

bool config_set_from(struct config *dst, const struct config *src, const char *key)
{
	union cf_value v;
	int i = config_key_index(key);

	if (i < 0)
		return false;
	value_of(src, i, &v);
	return store_key(dst, i, &v);
}

/* ---- copies --------------------------------------------------------------------------------- */

static char *dup_or_null(const char *s, bool *oom)
{
	char *d;

	if (s == NULL)
		return NULL;
	d = strdup(s);
	if (d == NULL)
		*oom = true;
	return d;
}

static struct cf_kv *kv_copy(const struct cf_kv *kv, int nkv, bool *oom)
{
	struct cf_kv *out;

	if (nkv == 0)
		return NULL;
	out = calloc((size_t)nkv, sizeof(*out));
	if (out == NULL) {
		*oom = true;
		return NULL;
	}
	for (int i = 0; i < nkv; i++) {
		out[i].key = dup_or_null(kv[i].key, oom);
		out[i].value = dup_or_null(kv[i].value, oom);
	}
	return out;
}

/*
 * Each entry is copied field by field from the same tables config_free() frees by, so that a
 * copy owns exactly what the original owns; the list links are rebuilt. On out of memory the
 * partial copy is still well formed (NULL strings, which config_free() accepts).
 */
struct config *config_copy(const struct config *src)
{
	struct config *cfg = calloc(1, sizeof(*cfg));
	bool oom = false;

	if (cfg == NULL)
		return NULL;
	*cfg = *src;
	cfg->databases = NULL;
	cfg->users = NULL;
	cfg->apis = NULL;
	cfg->synced_tables = NULL;
	for (int i = 0; i < NKEYS; i++)
		if (cf_keys[i].type == CF_VT_STR)
			*(char **)key_field(cfg, i) =
			        dup_or_null(*(char **)key_field(src, i), &oom);
	cfg->path = dup_or_null(src->path, &oom);
	{
		struct cf_database **tail = &cfg->databases;
		for (const struct cf_database *s = src->databases; s != NULL && !oom; s = s->next) {
			struct cf_database *d = malloc(sizeof(*d));
			if (d == NULL) {
				oom = true;
				break;
			}
			*d = *s;
			d->next = NULL;
			*tail = d;
			tail = &d->next;
			d->name = dup_or_null(s->name, &oom);
			for (int i = 0; i < NFIELDS(db_fields); i++) {
				size_t off = db_fields[i].offset;
				if (db_fields[i].type == CF_VT_STR)
					*(char **)((char *)d + off) = dup_or_null(
					        *(char *const *)((const char *)s + off), &oom);
			}
		}
	}
	{
		struct cf_user **tail = &cfg->users;
		for (const struct cf_user *s = src->users; s != NULL && !oom; s = s->next) {
			struct cf_user *d = malloc(sizeof(*d));
			if (d == NULL) {
				oom = true;
				break;
			}
			*d = *s;
			d->next = NULL;
			*tail = d;
			tail = &d->next;
			d->name = dup_or_null(s->name, &oom);
		}
	}
	{
		struct cf_api **tail = &cfg->apis;
		for (const struct cf_api *s = src->apis; s != NULL && !oom; s = s->next) {
			struct cf_api *d = malloc(sizeof(*d));
			if (d == NULL) {
				oom = true;
				break;
			}
			*d = *s;
			d->next = NULL;
			d->kv = NULL;
			d->nkv = 0;
			*tail = d;
			tail = &d->next;
			d->name = dup_or_null(s->name, &oom);
			d->type = dup_or_null(s->type, &oom);
			d->file = dup_or_null(s->file, &oom);
			d->kv = kv_copy(s->kv, s->nkv, &oom);
			d->nkv = d->kv != NULL ? s->nkv : 0;
		}
	}
	{
		struct cf_synced_table **tail = &cfg->synced_tables;
		for (const struct cf_synced_table *s = src->synced_tables; s != NULL && !oom;
		     s = s->next) {
			struct cf_synced_table *d = malloc(sizeof(*d));
			if (d == NULL) {
				oom = true;
				break;
			}
			*d = *s;
			d->next = NULL;
			d->kv = NULL;
			d->nkv = 0;
			*tail = d;
			tail = &d->next;
			d->file = dup_or_null(s->file, &oom);
			d->database = dup_or_null(s->database, &oom);
			d->schema = dup_or_null(s->schema, &oom);
			d->table = dup_or_null(s->table, &oom);
			d->kv = kv_copy(s->kv, s->nkv, &oom);
			d->nkv = d->kv != NULL ? s->nkv : 0;
		}
	}
	if (oom) {
		config_free(cfg);
		return NULL;
	}
	return cfg;
}
