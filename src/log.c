/*
 * log — formatting and delivery of log lines. Lines are assembled in a fixed stack buffer and
 * written with one write() per destination so that concurrent writers never interleave lines.
 * A line longer than the buffer is cut, never overflowed. Every worker's thread logs; only worker
 * 0's (re)configures the destinations (log_setup(), log_reopen()).
 */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 4096

static struct {
	char logfile[1024];
	_Atomic int fd; /* read by every worker's thread; changed by worker 0's */
	_Atomic bool to_stderr;
	_Atomic bool use_syslog;
	bool syslog_open;
	char syslog_ident[64];
	_Atomic int verbose;
} logstate = { .fd = -1, .to_stderr = true };

const char *log_level_str(enum log_level lvl)
{
	switch (lvl) {
	case LOG_LVL_FATAL:
		return "FATAL";
	case LOG_LVL_ERROR:
		return "ERROR";
	case LOG_LVL_WARNING:
		return "WARNING";
	case LOG_LVL_INFO:
		return "LOG";
	case LOG_LVL_DEBUG:
		return "DEBUG";
	case LOG_LVL_NOISE:
		return "NOISE";
	}
	return "?";
}

static int syslog_prio(enum log_level lvl)
{
	switch (lvl) {
	case LOG_LVL_FATAL:
		return LOG_CRIT;
	case LOG_LVL_ERROR:
		return LOG_ERR;
	case LOG_LVL_WARNING:
		return LOG_WARNING;
	case LOG_LVL_INFO:
		return LOG_INFO;
	default:
		return LOG_DEBUG;
	}
}

static int facility_code(const char *name)
{
	static const struct {
		const char *name;
		int code;
	} facilities[] = {
		{ "auth", LOG_AUTH },	  { "authpriv", LOG_AUTHPRIV }, { "daemon", LOG_DAEMON },
		{ "user", LOG_USER },	  { "local0", LOG_LOCAL0 },	{ "local1", LOG_LOCAL1 },
		{ "local2", LOG_LOCAL2 }, { "local3", LOG_LOCAL3 },	{ "local4", LOG_LOCAL4 },
		{ "local5", LOG_LOCAL5 }, { "local6", LOG_LOCAL6 },	{ "local7", LOG_LOCAL7 },
	};
	for (size_t i = 0; i < sizeof(facilities) / sizeof(facilities[0]); i++)
		if (strcasecmp(name, facilities[i].name) == 0)
			return facilities[i].code;
	return LOG_DAEMON;
}

/*
 * (Re)opens the logfile. Other workers' threads may be writing a line meanwhile: a reopen puts
 * the new file under the old descriptor's number (dup3), so a line is written to the old file
 * or the new one, never to a closed descriptor or to a socket that took its number.
 */
static void open_logfile(void)
{
	int old = logstate.fd, fd;

	if (logstate.logfile[0] == '\0') {
		logstate.fd = -1;
		if (old >= 0)
			close(old);
		return;
	}
	fd = open(logstate.logfile, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (fd < 0) {
		logstate.fd = -1;
		if (old >= 0)
			close(old);
		log_error("cannot open logfile \"%s\": %s", logstate.logfile, strerror(errno));
		return;
	}
	if (old >= 0 && dup3(fd, old, O_CLOEXEC) == old) {
		close(fd);
		return;
	}
	logstate.fd = fd;
	if (old >= 0)
		close(old);
}

void log_setup(const char *logfile, bool to_stderr, bool use_syslog, const char *syslog_ident,
	       const char *syslog_facility, int verbose)
{
	logstate.to_stderr = to_stderr;
	logstate.verbose = verbose;
	if (strcmp(logstate.logfile, logfile ? logfile : "") != 0 || logstate.fd < 0) {
		snprintf(logstate.logfile, sizeof(logstate.logfile), "%s", logfile ? logfile : "");
		open_logfile();
	}
	if (logstate.syslog_open) {
		closelog();
		logstate.syslog_open = false;
	}
	logstate.use_syslog = use_syslog;
	if (use_syslog) {
		snprintf(logstate.syslog_ident, sizeof(logstate.syslog_ident), "%s",
			 syslog_ident && *syslog_ident ? syslog_ident : "syncbouncer");
		openlog(logstate.syslog_ident, LOG_PID,
			facility_code(syslog_facility ? syslog_facility : "daemon"));
		logstate.syslog_open = true;
	}
}

void log_reopen(void)
{
	open_logfile();
}

bool log_enabled(enum log_level lvl)
{
	if (lvl <= LOG_LVL_INFO)
		return true;
	return (int)lvl - (int)LOG_LVL_INFO <= logstate.verbose;
}

static void write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		buf += n;
		len -= (size_t)n;
	}
}

/* The process id, asked once per process (getpid() is a system call). */
size_t log_put_str(char *buf, size_t size, size_t pos, const char *s)
{
	while (*s && pos + 1 < size)
		buf[pos++] = *s++;
	if (pos < size)
		buf[pos] = '\0';
	return pos;
}

size_t log_put_uint(char *buf, size_t size, size_t pos, unsigned long long v, int min_digits)
{
	char tmp[24];
	int n = 0;

	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v > 0 || n < min_digits);
	while (n > 0 && pos + 1 < size)
		buf[pos++] = tmp[--n];
	if (pos < size)
		buf[pos] = '\0';
	return pos;
}

size_t log_put_ptr(char *buf, size_t size, size_t pos, const void *p)
{
	static const char digits[] = "0123456789abcdef";
	uintptr_t v = (uintptr_t)p;
	char tmp[2 * sizeof(v)];
	int n = 0;

	do {
		tmp[n++] = digits[v & 0xf];
		v >>= 4;
	} while (v > 0);
	pos = log_put_str(buf, size, pos, "0x");
	while (n > 0 && pos + 1 < size)
		buf[pos++] = tmp[--n];
	if (pos < size)
		buf[pos] = '\0';
	return pos;
}

static _Thread_local pid_t cached_pid;

static void forget_pid(void)
{
	cached_pid = 0;
}

/*
 * Control characters from line[from, *len) written as escapes (\n, \r, \xNN; a tab stays),
 * within size - 2 bytes: names a client chose before logging in (a user or database name) go
 * into log lines, and a line break in one must not start a line of its own.
 */
static void escape_controls(char *line, size_t from, size_t *len, size_t size)
{
	char tmp[LOG_LINE_MAX];
	size_t o = 0, max = size - 2 < sizeof(tmp) ? size - 2 : sizeof(tmp);
	size_t i;

	for (i = from; i < *len; i++) {
		unsigned char ch = (unsigned char)line[i];
		if ((ch < 0x20 || ch == 0x7f) && ch != '\t')
			break;
	}
	if (i == *len)
		return; /* the common case: nothing to escape */
	for (i = from; i < *len && o + 4 < max - from; i++) {
		unsigned char ch = (unsigned char)line[i];
		if ((ch >= 0x20 && ch != 0x7f) || ch == '\t') {
			tmp[o++] = (char)ch;
		} else if (ch == '\n' || ch == '\r') {
			tmp[o++] = '\\';
			tmp[o++] = ch == '\n' ? 'n' : 'r';
		} else {
			static const char hex[] = "0123456789abcdef";
			tmp[o++] = '\\';
			tmp[o++] = 'x';
			tmp[o++] = hex[ch >> 4];
			tmp[o++] = hex[ch & 15];
		}
	}
	memcpy(line + from, tmp, o);
	*len = from + o;
}

/*
 * One line: time stamp, pid, level, then prefix (may be NULL) and the message; a prefixed
 * message is cut at MSG_MAX - 1 bytes. The time stamp's text is made once per second.
 */
#define MSG_MAX 2048
static void log_vmsg(enum log_level lvl, const char *prefix, const char *fmt, va_list ap)
{
	static _Thread_local time_t stamp_sec = (time_t)-1;
	static _Thread_local char stamp_date[32], stamp_zone[16];
	static _Thread_local bool pid_tracked; /* cached_pid is reset in a forked child */
	char line[LOG_LINE_MAX];
	struct timeval tv;
	size_t msg, head, len, room;
	int n;
	int saved_errno = errno;

	gettimeofday(&tv, NULL);
	if (tv.tv_sec != stamp_sec) {
		struct tm tm;

		localtime_r(&tv.tv_sec, &tm);
		if (strftime(stamp_date, sizeof(stamp_date), "%Y-%m-%d %H:%M:%S", &tm) == 0)
			stamp_date[0] = '\0';
		if (strftime(stamp_zone, sizeof(stamp_zone), "%Z", &tm) == 0)
			stamp_zone[0] = '\0';
		stamp_sec = tv.tv_sec;
	}
	if (!pid_tracked)
		pid_tracked = pthread_atfork(NULL, NULL, forget_pid) == 0;
	if (cached_pid == 0 || !pid_tracked)
		cached_pid = getpid();
	/* "%s.%03d %s [%d] %s ": one line per log-in and log-out, so not through printf */
	head = log_put_str(line, sizeof(line), 0, stamp_date);
	head = log_put_str(line, sizeof(line), head, ".");
	head = log_put_uint(line, sizeof(line), head, (unsigned long long)(tv.tv_usec / 1000), 3);
	head = log_put_str(line, sizeof(line), head, " ");
	head = log_put_str(line, sizeof(line), head, stamp_zone);
	head = log_put_str(line, sizeof(line), head, " [");
	head = log_put_uint(line, sizeof(line), head, (unsigned long long)cached_pid, 1);
	head = log_put_str(line, sizeof(line), head, "] ");
	head = log_put_str(line, sizeof(line), head, log_level_str(lvl));
	head = log_put_str(line, sizeof(line), head, " ");
	msg = head;
	room = sizeof(line) - head;
	if (prefix != NULL) {
		/* the message alone is cut at MSG_MAX - 1 bytes, the prefix not counted */
		head = log_put_str(line, sizeof(line), head, prefix);
		room = sizeof(line) - head;
		if (room > MSG_MAX)
			room = MSG_MAX;
	}
	n = vsnprintf(line + head, room, fmt, ap);
	len = head + (n < 0 ? 0 : (size_t)n >= room ? room - 1 : (size_t)n);
	if (len > sizeof(line) - 2)
		len = sizeof(line) - 2;
	escape_controls(line, msg, &len, sizeof(line));
	line[len++] = '\n';
	line[len] = '\0';

	if (logstate.to_stderr)
		write_all(STDERR_FILENO, line, len);
	{
		int fd = logstate.fd;
		if (fd >= 0)
			write_all(fd, line, len);
	}
	if (logstate.use_syslog)
		syslog(syslog_prio(lvl), "%s", line + msg);
	errno = saved_errno;
}

void log_vmsg_prefixed(enum log_level lvl, const char *prefix, const char *fmt, va_list ap)
{
	if (log_enabled(lvl))
		log_vmsg(lvl, prefix, fmt, ap);
}

void log_msg(enum log_level lvl, const char *fmt, ...)
{
	va_list ap;

	if (!log_enabled(lvl))
		return;
	va_start(ap, fmt);
	log_vmsg(lvl, NULL, fmt, ap);
	va_end(ap);
}

void fatal(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(LOG_LVL_FATAL, NULL, fmt, ap);
	va_end(ap);
	exit(1);
}
