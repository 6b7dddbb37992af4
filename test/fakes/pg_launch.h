/*
 * pg_launch — a throwaway PostgreSQL for C test programs: initdb into a fresh temp dir (as the
 * `postgres` OS user when run as root: initdb refuses root), trust authentication, listening on
 * 127.0.0.1 at a free port below 30000, stopped and removed at the end (SB_KEEP_TMP=1 keeps it).
 * The binaries come from $SB_PG_BIN, default /usr/lib/postgresql/15/bin.
 */
#ifndef SB_TEST_PG_LAUNCH_H
#define SB_TEST_PG_LAUNCH_H

#include <stdbool.h>
#include <stddef.h>

struct pg_server {
	char bin[512];
	char dir[256];
	int port;
	bool up;
};

enum pg_launch_status {
	PG_LAUNCH_OK,
	PG_LAUNCH_NO_BINARIES, /* not installed here: tests skip */
	PG_LAUNCH_FAILED,      /* installed but would not start: tests fail */
};

enum pg_launch_status pg_server_start(struct pg_server *ps) __attribute__((warn_unused_result));
/* Stops it at once and removes its directory. Fine to call when it never started. */
void pg_server_stop(struct pg_server *ps);
/*
 * Runs sql (several statements allowed) on database dbname as user postgres, blocking (tests
 * only). False, with the server's message on stderr, when it fails.
 */
bool pg_server_exec(const struct pg_server *ps, const char *dbname, const char *sql)
        __attribute__((warn_unused_result));
/* The first column of the first row of sql's answer, as text, into out. */
bool pg_server_value(const struct pg_server *ps, const char *dbname, const char *sql, char *out,
                     size_t size) __attribute__((warn_unused_result));
/* A port below 30000 where nothing listens on 127.0.0.1 right now. */
int pg_free_port(void);

#endif
