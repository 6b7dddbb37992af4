/*
 * log — the process's log, in pgbouncer's line format:
 *   2026-11-30 08:00:00.123 UTC [1234] LOG C-0x55d0c0a0: db/user@127.0.0.1:5000 message
 * Lines go to stderr (unless quiet), to the logfile when one is set, and to syslog when enabled.
 * Connection-prefixed lines are built by the caller (client/server modules) and passed as text.
 */
#ifndef SB_LOG_H
#define SB_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

enum log_level {
	LOG_LVL_FATAL,
	LOG_LVL_ERROR,
	LOG_LVL_WARNING,
	LOG_LVL_INFO,
	LOG_LVL_DEBUG,
	LOG_LVL_NOISE,
};

/* The word pgbouncer prints for the level ("LOG" for info). */
const char *log_level_str(enum log_level lvl);

/*
 * Settings; all may change at runtime (reload). logfile "" = none. verbose counts -v flags and
 * the `verbose` setting: 0 shows up to INFO, 1 DEBUG, 2 NOISE.
 */
void log_setup(const char *logfile, bool to_stderr, bool use_syslog, const char *syslog_ident,
	       const char *syslog_facility, int verbose);
/* Re-opens the logfile (after rotation / SIGHUP). */
void log_reopen(void);
bool log_enabled(enum log_level lvl);

void log_msg(enum log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* log_msg() of fmt after prefix (a connection's "C-0x…: db/user@addr:port "), formatted once. */
void log_vmsg_prefixed(enum log_level lvl, const char *prefix, const char *fmt, va_list ap);
_Noreturn void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * Appenders for a log line's fixed parts, cheaper than snprintf: each writes at buf + pos what
 * fits before the last byte of size (always NUL-terminated) and returns the new pos.
 */
size_t log_put_str(char *buf, size_t size, size_t pos, const char *s);
size_t log_put_uint(char *buf, size_t size, size_t pos, unsigned long long v, int min_digits);
/* "0x" and v in lower-case hex, as printf's %p prints a non-NULL pointer. */
size_t log_put_ptr(char *buf, size_t size, size_t pos, const void *p);

#define log_error(...)   log_msg(LOG_LVL_ERROR, __VA_ARGS__)
#define log_warning(...) log_msg(LOG_LVL_WARNING, __VA_ARGS__)
#define log_info(...)    log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...)                                                                             \
	do {                                                                                       \
		if (log_enabled(LOG_LVL_DEBUG))                                                    \
			log_msg(LOG_LVL_DEBUG, __VA_ARGS__);                                       \
	} while (0)
#define log_noise(...)                                                                             \
	do {                                                                                       \
		if (log_enabled(LOG_LVL_NOISE))                                                    \
			log_msg(LOG_LVL_NOISE, __VA_ARGS__);                                       \
	} while (0)

#endif
