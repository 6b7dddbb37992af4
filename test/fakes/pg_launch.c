/*
 * pg_launch — a throwaway PostgreSQL for C test programs (see pg_launch.h).
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "pg_launch.h"
#include "test_ports.h"

int pg_free_port(void)
{
	struct sockaddr_in sa;
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	bool ok;

	if (fd < 0)
		return -1;
	ok = test_bind_loopback(fd, &sa);
	close(fd);
	return ok ? ntohs(sa.sin_port) : -1;
}

/* Runs argv (as `postgres` when we are root) with its output in dir/tool.log; true on exit 0. */
static bool run_tool(const struct pg_server *ps, char *const argv[])
{
	pid_t pid = fork();
	int status;

	if (pid < 0)
		return false;
	if (pid == 0) {
		char log[512];
		int fd;

		if (geteuid() == 0) {
			struct passwd *pw = getpwnam("postgres");

			if (!pw || setgid(pw->pw_gid) != 0 || setuid(pw->pw_uid) != 0)
				_exit(127);
		}
		snprintf(log, sizeof(log), "%s/tool.log", ps->dir);
		fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
			close(fd);
		}
		execv(argv[0], argv);
		_exit(127);
	}
	if (waitpid(pid, &status, 0) != pid)
		return false;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

enum pg_launch_status pg_server_start(struct pg_server *ps)
{
	char initdb[600], pg_ctl[600], data[300], logf[300], conf[320];
	const char *bin = getenv("SB_PG_BIN");
	FILE *f;

	memset(ps, 0, sizeof(*ps));
	snprintf(ps->bin, sizeof(ps->bin), "%s", bin ? bin : "/usr/lib/postgresql/15/bin");
	snprintf(initdb, sizeof(initdb), "%s/initdb", ps->bin);
	snprintf(pg_ctl, sizeof(pg_ctl), "%s/pg_ctl", ps->bin);
	if (access(initdb, X_OK) != 0 || access(pg_ctl, X_OK) != 0)
		return PG_LAUNCH_NO_BINARIES;
	snprintf(ps->dir, sizeof(ps->dir), "%s/sb-pg-XXXXXX",
	         getenv("SB_TMPDIR") ? getenv("SB_TMPDIR") : "/tmp");
	if (!mkdtemp(ps->dir)) {
		ps->dir[0] = '\0';
		return PG_LAUNCH_FAILED;
	}
	if (geteuid() == 0) {
		struct passwd *pw = getpwnam("postgres");

		if (!pw || chown(ps->dir, pw->pw_uid, pw->pw_gid) != 0)
			return PG_LAUNCH_FAILED;
	}
	ps->port = pg_free_port();
	snprintf(data, sizeof(data), "%s/data", ps->dir);
	snprintf(logf, sizeof(logf), "%s/postgresql.log", ps->dir);
	{
		char *argv[] = {initdb,       "-D",           data, "-U",
		                "postgres",   "--auth=trust", "-E", "UTF8",
		                "--locale=C", "--no-sync",    NULL};

		if (!run_tool(ps, argv))
			return PG_LAUNCH_FAILED;
	}
	snprintf(conf, sizeof(conf), "%s/postgresql.conf", data);
	f = fopen(conf, "a");
	if (!f)
		return PG_LAUNCH_FAILED;
	fprintf(f,
	        "port = %d\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '%s'\n"
	        "fsync = off\nshared_buffers = 16MB\nmax_connections = 30\n",
	        ps->port, ps->dir);
	fclose(f);
	{
		char *argv[] = {pg_ctl, "-D", data, "-l", logf, "-w", "-t", "60", "start", NULL};

		if (!run_tool(ps, argv))
			return PG_LAUNCH_FAILED;
	}
	ps->up = true;
	return PG_LAUNCH_OK;
}

void pg_server_stop(struct pg_server *ps)
{
	char pg_ctl[600], data[300], cmd[400];

	if (!ps->dir[0])
		return;
	if (ps->up) {
		snprintf(pg_ctl, sizeof(pg_ctl), "%s/pg_ctl", ps->bin);
		snprintf(data, sizeof(data), "%s/data", ps->dir);
		char *argv[] = {pg_ctl, "-D", data, "-m", "immediate", "stop", NULL};

		(void)run_tool(ps, argv);
		ps->up = false;
	}
	if (!getenv("SB_KEEP_TMP")) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", ps->dir);
		if (system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", ps->dir);
	}
	ps->dir[0] = '\0';
}

static void quiet(void *arg, const char *message)
{
	(void)arg;
	(void)message;
}

bool pg_server_exec(const struct pg_server *ps, const char *dbname, const char *sql)
{
	char ci[256];
	PGconn *conn;
	PGresult *res;
	bool ok;

	snprintf(ci, sizeof(ci), "host=127.0.0.1 port=%d dbname=%s user=postgres", ps->port,
	         dbname);
	conn = PQconnectdb(ci);
	if (PQstatus(conn) != CONNECTION_OK) {
		fprintf(stderr, "pg_server_exec: %s", PQerrorMessage(conn));
		PQfinish(conn);
		return false;
	}
	PQsetNoticeProcessor(conn, quiet, NULL);
	res = PQexec(conn, sql);
	ok = PQresultStatus(res) == PGRES_COMMAND_OK || PQresultStatus(res) == PGRES_TUPLES_OK;
	if (!ok)
		fprintf(stderr, "pg_server_exec: %s", PQresultErrorMessage(res));
	PQclear(res);
	PQfinish(conn);
	return ok;
}

bool pg_server_value(const struct pg_server *ps, const char *dbname, const char *sql, char *out,
                     size_t size)
{
	char ci[256];
	PGconn *conn;
	PGresult *res;
	bool ok;

	out[0] = '\0';
	snprintf(ci, sizeof(ci), "host=127.0.0.1 port=%d dbname=%s user=postgres", ps->port,
	         dbname);
	conn = PQconnectdb(ci);
	if (PQstatus(conn) != CONNECTION_OK) {
		fprintf(stderr, "pg_server_value: %s", PQerrorMessage(conn));
		PQfinish(conn);
		return false;
	}
	PQsetNoticeProcessor(conn, quiet, NULL);
	res = PQexec(conn, sql);
	ok = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) > 0 && PQnfields(res) > 0;
	if (ok)
		snprintf(out, size, "%s", PQgetvalue(res, 0, 0));
	else
		fprintf(stderr, "pg_server_value: %s", PQresultErrorMessage(res));
	PQclear(res);
	PQfinish(conn);
	return ok;
}
