/*
 * Unit tests for daemon: pidfile life cycle, going to the background, user switch, file limit.
 * Steps that change the process for good (background, user) run in forked children that report
 * back through a file or their exit status.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct tmp {
	char dir[64];
	char pidfile[128];
};

static int setup(void **state)
{
	struct tmp *t = calloc(1, sizeof(*t));

	assert_non_null(t);
	snprintf(t->dir, sizeof(t->dir), "/tmp/test_daemon.XXXXXX");
	assert_non_null(mkdtemp(t->dir));
	snprintf(t->pidfile, sizeof(t->pidfile), "%s/sb.pid", t->dir);
	*state = t;
	return 0;
}

static int teardown(void **state)
{
	struct tmp *t = *state;
	char path[160];

	unlink(t->pidfile);
	snprintf(path, sizeof(path), "%s/report", t->dir);
	unlink(path);
	rmdir(t->dir);
	free(t);
	return 0;
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(text, f);
	assert_int_equal(fclose(f), 0);
}

static bool read_file(const char *path, char *buf, size_t len)
{
	FILE *f = fopen(path, "r");
	size_t n;

	if (!f)
		return false;
	n = fread(buf, 1, len - 1, f);
	buf[n] = '\0';
	fclose(f);
	return true;
}

static bool exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

/* The pid of a process that has certainly exited (reaped). */
static pid_t dead_pid(void)
{
	int status;
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0)
		_exit(0);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	return pid;
}

static void test_check_missing(void **state)
{
	struct tmp *t = *state;

	assert_true(daemon_check_pidfile(t->pidfile));
	assert_true(daemon_check_pidfile(NULL));
	assert_true(daemon_check_pidfile(""));
}

static void test_check_stale_removed(void **state)
{
	struct tmp *t = *state;
	char text[32];

	snprintf(text, sizeof(text), "%d\n", (int)dead_pid());
	write_file(t->pidfile, text);
	assert_true(daemon_check_pidfile(t->pidfile));
	assert_false(exists(t->pidfile));
}

static void test_check_live_refused(void **state)
{
	struct tmp *t = *state;
	char text[32];

	snprintf(text, sizeof(text), "%d\n", (int)getpid());
	write_file(t->pidfile, text);
	assert_false(daemon_check_pidfile(t->pidfile));
	assert_true(exists(t->pidfile));
}

/* A pidfile that cannot be understood is not taken for stale: refusing is the safe side. */
static void test_check_garbage_refused(void **state)
{
	static const char *cases[] = {"", "abc\n", "0\n", "-12\n", "12abc\n", "99999999999999\n"};
	struct tmp *t = *state;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		write_file(t->pidfile, cases[i]);
		assert_false(daemon_check_pidfile(t->pidfile));
		assert_true(exists(t->pidfile));
	}
}

static void test_write_and_remove(void **state)
{
	struct tmp *t = *state;
	char want[32], got[64];
	struct stat st;

	assert_true(daemon_write_pidfile(t->pidfile));
	snprintf(want, sizeof(want), "%d\n", (int)getpid());
	assert_true(read_file(t->pidfile, got, sizeof(got)));
	assert_string_equal(got, want);
	assert_int_equal(stat(t->pidfile, &st), 0);
	mode_t mask = umask(0);

	umask(mask);
	assert_int_equal(st.st_mode & 0777, 0644 & ~mask);

	/* a live pidfile (ours) stops a second instance from starting */
	assert_false(daemon_check_pidfile(t->pidfile));
	/* O_EXCL: it is never overwritten */
	assert_false(daemon_write_pidfile(t->pidfile));
	assert_true(read_file(t->pidfile, got, sizeof(got)));
	assert_string_equal(got, want);

	daemon_remove_pidfile(t->pidfile);
	assert_false(exists(t->pidfile));
	daemon_remove_pidfile(t->pidfile); /* twice is harmless */
	daemon_remove_pidfile(NULL);
	assert_true(daemon_write_pidfile(NULL));
}

/* Another instance's pidfile is never removed by us. */
static void test_remove_not_ours(void **state)
{
	struct tmp *t = *state;
	char text[32];

	snprintf(text, sizeof(text), "%d\n", (int)getppid());
	write_file(t->pidfile, text);
	daemon_remove_pidfile(t->pidfile);
	assert_true(exists(t->pidfile));
}

/* The pidfile goes away when the process exits normally. */
static void test_removed_at_exit(void **state)
{
	struct tmp *t = *state;
	int status;
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		if (!daemon_write_pidfile(t->pidfile))
			_exit(2);
		if (!exists(t->pidfile))
			_exit(3);
		exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_false(exists(t->pidfile));
}

static void test_go_background(void **state)
{
	struct tmp *t = *state;
	char report[160], text[256], cwd[PATH_MAX];
	int status;
	pid_t child;
	long rpid = 0, rsid = 0, rppid = 0;
	char rcwd[PATH_MAX];
	unsigned long rdev = 0, nulldev;
	struct stat st;

	snprintf(report, sizeof(report), "%s/report", t->dir);
	assert_non_null(getcwd(cwd, sizeof(cwd)));
	assert_int_equal(stat("/dev/null", &st), 0);
	nulldev = (unsigned long)st.st_rdev;

	child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		char tmp[200];
		char dir[PATH_MAX];
		struct stat in;
		FILE *f;

		if (!daemon_go_background())
			_exit(2);
		/* the final daemon process */
		if (fstat(STDIN_FILENO, &in) < 0 || !getcwd(dir, sizeof(dir)))
			_exit(3);
		snprintf(tmp, sizeof(tmp), "%s.tmp", report);
		f = fopen(tmp, "w");
		if (!f)
			_exit(4);
		fprintf(f, "%ld %ld %ld %lu %s\n", (long)getpid(), (long)getsid(0), (long)getppid(),
		        (unsigned long)in.st_rdev, dir);
		fclose(f);
		rename(tmp, report);
		_exit(0);
	}
	/* the first fork's parent exits at once with status 0 */
	assert_int_equal(waitpid(child, &status, 0), child);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);

	for (int i = 0; i < 300 && !read_file(report, text, sizeof(text)); i++) {
		struct timespec ts = {0, 10 * 1000000};

		nanosleep(&ts, NULL);
	}
	assert_true(read_file(report, text, sizeof(text)));
	assert_int_equal(sscanf(text, "%ld %ld %ld %lu %4095s", &rpid, &rsid, &rppid, &rdev, rcwd),
	                 5);
	assert_true(rpid != child && rpid != getpid());
	/* a new session, of which the daemon is not the leader */
	assert_true(rsid != getsid(0));
	assert_true(rsid != rpid);
	assert_int_equal(rdev, nulldev);
	assert_string_equal(rcwd, cwd);
}

static void test_change_user(void **state)
{
	const struct passwd *pw;
	int status;
	pid_t pid;

	assert_false(daemon_change_user("no-such-user-xyzzy"));
	assert_true(daemon_change_user(NULL));
	assert_true(daemon_change_user(""));
	pw = getpwuid(getuid());
	if (pw && getuid() == geteuid()) {
		char me[64];

		snprintf(me, sizeof(me), "%s", pw->pw_name);
		assert_true(daemon_change_user(me));
	}

	pw = getpwnam("nobody");
	if (!pw)
		skip();
	uid_t nobody_uid = pw->pw_uid;
	gid_t nobody_gid = pw->pw_gid;

	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		bool ok = daemon_change_user("nobody");

		if (geteuid() != 0 && getuid() != nobody_uid && ok)
			_exit(1); /* claimed success without root */
		if (!ok)
			_exit(getuid() == 0 ? 2 : 10);
		if (getuid() != nobody_uid || geteuid() != nobody_uid || getgid() != nobody_gid)
			_exit(3);
		/* root's supplementary groups are gone too */
		gid_t groups[256];
		int ng = getgroups(256, groups);

		for (int i = 0; i < ng; i++)
			if (groups[i] == 0 && nobody_gid != 0)
				_exit(5);
		/* root is gone for good */
		if (setuid(0) == 0)
			_exit(4);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	if (getuid() == 0)
		assert_int_equal(WEXITSTATUS(status), 0);
	else
		assert_int_equal(WEXITSTATUS(status), 10);
}

static void test_set_nofile(void **state)
{
	struct rlimit before, after;

	assert_int_equal(getrlimit(RLIMIT_NOFILE, &before), 0);
	assert_true(daemon_set_nofile((int)(before.rlim_cur > 64 ? 64 : before.rlim_cur)));
	assert_true(daemon_set_nofile(0));
	if (before.rlim_cur != RLIM_INFINITY && before.rlim_cur < before.rlim_max &&
	    before.rlim_cur < INT_MAX) {
		int want = (int)before.rlim_cur + 1;

		assert_true(daemon_set_nofile(want));
		assert_int_equal(getrlimit(RLIMIT_NOFILE, &after), 0);
		assert_true(after.rlim_cur >= (rlim_t)want);
	}
	/* beyond what the kernel allows: refused with a warning, limits still sane */
	assert_false(daemon_set_nofile(INT_MAX));
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &after), 0);
	assert_true(after.rlim_cur >= before.rlim_cur);
	assert_true(after.rlim_cur <= after.rlim_max);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test_setup_teardown(test_check_missing, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_check_stale_removed, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_check_live_refused, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_check_garbage_refused, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_write_and_remove, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_remove_not_ours, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_removed_at_exit, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_go_background, setup, teardown),
	        cmocka_unit_test(test_change_user),
	        cmocka_unit_test(test_set_nofile),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
