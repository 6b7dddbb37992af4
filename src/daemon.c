/*
 * daemon — pidfile, background, user switch and file limit, as pgbouncer does them.
 *
 * Invariants:
 * - The only process-wide state is the pidfile this process wrote (its path and the writer's
 *   pid), needed by the exit handler; a process forked afterwards never removes it.
 * - A pidfile is only ever removed by the process it names, or when that process is gone.
 */
#include "daemon.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#define DAEMON_PIDFILE_READ_MAX 128

static struct {
	char path[PATH_MAX];
	pid_t owner;
	bool atexit_registered;
} pidfile_state;

/*
 * Reads the pid in path. Returns 1 with *pid set, 0 if the file does not exist, -1 if it exists
 * but holds no usable pid (unreadable, empty, not a positive number).
 */
static int daemon_read_pidfile(const char *path, pid_t *pid)
{
	char buf[DAEMON_PIDFILE_READ_MAX + 1];
	ssize_t n;
	int fd;
	char *end;
	long v;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : -1;
	n = read(fd, buf, DAEMON_PIDFILE_READ_MAX);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	errno = 0;
	v = strtol(buf, &end, 10);
	if (errno || end == buf || v <= 0 || v > INT_MAX)
		return -1;
	while (*end == '\n' || *end == '\r' || *end == ' ' || *end == '\t')
		end++;
	if (*end != '\0')
		return -1;
	*pid = (pid_t)v;
	return 1;
}

bool daemon_check_pidfile(const char *path)
{
	pid_t pid = 0;
	int rc;

	if (!path || !path[0])
		return true;
	rc = daemon_read_pidfile(path, &pid);
	if (rc == 0)
		return true;
	if (rc < 0)
		goto locked;
	/* EPERM means the process exists but belongs to someone else: still live. */
	if (kill(pid, 0) == 0 || errno != ESRCH)
		goto locked;
	log_info("stale pidfile, removing: %s", path);
	if (unlink(path) < 0 && errno != ENOENT) {
		log_error("could not remove stale pidfile \"%s\": %s", path, strerror(errno));
		return false;
	}
	return true;
locked:
	log_error("pidfile exists, another instance running? (%s)", path);
	return false;
}

static void daemon_pidfile_atexit(void)
{
	if (pidfile_state.path[0] && pidfile_state.owner == getpid())
		daemon_remove_pidfile(pidfile_state.path);
}

bool daemon_write_pidfile(const char *path)
{
	char buf[32];
	int len;
	int fd;
	ssize_t n;

	if (!path || !path[0])
		return true;
	if (strlen(path) >= sizeof(pidfile_state.path)) {
		log_error("pidfile path too long: %s", path);
		return false;
	}
	len = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0) {
		log_error("could not create pidfile \"%s\": %s", path, strerror(errno));
		return false;
	}
	n = write(fd, buf, (size_t)len);
	if (n != len) {
		log_error("could not write pidfile \"%s\": %s", path,
		          n < 0 ? strerror(errno) : "short write");
		close(fd);
		unlink(path);
		return false;
	}
	if (close(fd) < 0) {
		log_error("could not write pidfile \"%s\": %s", path, strerror(errno));
		unlink(path);
		return false;
	}
	memcpy(pidfile_state.path, path, strlen(path) + 1);
	pidfile_state.owner = getpid();
	if (!pidfile_state.atexit_registered) {
		if (atexit(daemon_pidfile_atexit) != 0)
			log_warning("pidfile \"%s\" will not be removed at exit", path);
		else
			pidfile_state.atexit_registered = true;
	}
	return true;
}

void daemon_remove_pidfile(const char *path)
{
	pid_t pid = 0;

	if (!path || !path[0])
		return;
	if (daemon_read_pidfile(path, &pid) == 1 && pid == getpid()) {
		if (unlink(path) < 0 && errno != ENOENT)
			log_warning("could not remove pidfile \"%s\": %s", path, strerror(errno));
	}
	if (strcmp(pidfile_state.path, path) == 0)
		pidfile_state.path[0] = '\0';
}

/* Forks, the parent exiting at once: false (logged) when fork() fails. */
static bool fork_parent_exits(void)
{
	pid_t pid = fork();

	if (pid < 0) {
		log_error("fork failed: %s", strerror(errno));
		return false;
	}
	if (pid > 0)
		_exit(0);
	return true;
}

bool daemon_go_background(void)
{
	int fd;

	fd = open("/dev/null", O_RDWR);
	if (fd < 0) {
		log_error("could not open /dev/null: %s", strerror(errno));
		return false;
	}
	if (dup2(fd, STDIN_FILENO) < 0 || dup2(fd, STDOUT_FILENO) < 0 ||
	    dup2(fd, STDERR_FILENO) < 0) {
		log_error("could not redirect standard streams: %s", strerror(errno));
		if (fd > STDERR_FILENO)
			close(fd);
		return false;
	}
	if (fd > STDERR_FILENO)
		close(fd);

	if (!fork_parent_exits())
		return false;
	if (setsid() < 0) {
		log_error("setsid failed: %s", strerror(errno));
		return false;
	}
	if (!fork_parent_exits())
		return false;
	return true;
}

bool daemon_change_user(const char *user)
{
	const struct passwd *pw;
	uid_t uid;
	gid_t gid;

	if (!user || !user[0])
		return true;
	errno = 0;
	pw = getpwnam(user);
	if (!pw) {
		log_error("could not find user '%s' to switch to%s%s", user, errno ? ": " : "",
		          errno ? strerror(errno) : "");
		return false;
	}
	/* getpwnam's buffer is static and initgroups may reuse it. */
	uid = pw->pw_uid;
	gid = pw->pw_gid;
	if (getuid() == uid && geteuid() == uid && getgid() == gid)
		return true;
	if (geteuid() != 0) {
		log_error("cannot switch to user '%s': only root can, and this process is not root",
		          user);
		return false;
	}
	if (setgid(gid) < 0) {
		log_error("could not switch to group %u of user '%s': %s", (unsigned)gid, user,
		          strerror(errno));
		return false;
	}
	if (initgroups(user, gid) < 0) {
		log_error("could not set the supplementary groups of user '%s': %s", user,
		          strerror(errno));
		return false;
	}
	if (setuid(uid) < 0) {
		log_error("could not switch to user '%s' (uid %u): %s", user, (unsigned)uid,
		          strerror(errno));
		return false;
	}
	return true;
}

bool daemon_set_nofile(int want)
{
	struct rlimit lim;
	struct rlimit next;
	rlim_t before;

	if (want <= 0)
		return true;
	if (getrlimit(RLIMIT_NOFILE, &lim) < 0) {
		log_warning("could not read the open files limit: %s", strerror(errno));
		return false;
	}
	before = lim.rlim_cur;
	if (lim.rlim_cur != RLIM_INFINITY && lim.rlim_cur < (rlim_t)want) {
		next = lim;
		next.rlim_cur = (rlim_t)want;
		if (lim.rlim_max != RLIM_INFINITY && lim.rlim_max < (rlim_t)want) {
			if (geteuid() == 0)
				next.rlim_max = (rlim_t)want;
			else
				next.rlim_cur = lim.rlim_max;
		}
		if (setrlimit(RLIMIT_NOFILE, &next) < 0 && next.rlim_max != lim.rlim_max) {
			/* root above the kernel's nr_open: settle for the hard limit */
			next = lim;
			next.rlim_cur = lim.rlim_max;
			if (setrlimit(RLIMIT_NOFILE, &next) < 0)
				log_debug("could not raise the open files limit: %s",
				          strerror(errno));
		}
		if (getrlimit(RLIMIT_NOFILE, &lim) < 0) {
			log_warning("could not read the open files limit: %s", strerror(errno));
			return false;
		}
	}
	if (lim.rlim_cur != RLIM_INFINITY && lim.rlim_cur < (rlim_t)want) {
		log_warning("open files limit is %llu, below the %d needed for max_client_conn and "
		            "the pools; raise it (ulimit -n) or lower max_client_conn",
		            (unsigned long long)lim.rlim_cur, want);
		return false;
	}
	if (lim.rlim_cur != before)
		log_info("open files limit raised from %llu to %llu (%d wanted for max_client_conn "
		         "and the pools)",
		         (unsigned long long)before, (unsigned long long)lim.rlim_cur, want);
	else
		log_debug("open files limit: %llu", (unsigned long long)lim.rlim_cur);
	return true;
}
