/*
 * sdnotify — see include/sdnotify.h. The socket is opened for each message: messages are rare
 * (start, reload, stop and a status line at most once a second), and a socket kept open would
 * have to survive daemonising and a service manager that restarts.
 */
#include "sdnotify.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#define SDNOTIFY_MSG_MAX 1024

static _Atomic bool warned; /* sends may come from any worker's thread */

static bool send_msg(const char *msg, size_t len)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un un;
	socklen_t addrlen;
	size_t plen;
	ssize_t n;
	int fd;

	if (path == NULL || path[0] == '\0')
		return true;
	plen = strlen(path);
	if ((path[0] != '/' && path[0] != '@') || plen >= sizeof(un.sun_path)) {
		if (!warned)
			log_warning("NOTIFY_SOCKET is not a unix socket path: %s", path);
		warned = true;
		return false;
	}
	memset(&un, 0, sizeof(un));
	un.sun_family = AF_UNIX;
	memcpy(un.sun_path, path, plen);
	if (path[0] == '@')
		un.sun_path[0] = '\0'; /* abstract: the length says where the name ends */
	addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen);
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		n = -1;
	} else {
		n = sendto(fd, msg, len, MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *)&un,
		           addrlen);
		close(fd);
	}
	if (n != (ssize_t)len) {
		if (!warned)
			log_warning("cannot notify the service manager at %s: %s", path,
			            strerror(errno));
		warned = true;
		return false;
	}
	return true;
}

bool sdnotify(const char *fmt, ...)
{
	char msg[SDNOTIFY_MSG_MAX];
	va_list ap;
	int n;

	if (getenv("NOTIFY_SOCKET") == NULL)
		return true;
	va_start(ap, fmt);
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(msg))
		return false;
	log_debug("sd_notify: %s", msg);
	return send_msg(msg, (size_t)n);
}

bool sdnotify_reloading(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return sdnotify("RELOADING=1\nMONOTONIC_USEC=%llu",
	                (unsigned long long)ts.tv_sec * 1000000ull +
	                        (unsigned long long)ts.tv_nsec / 1000ull);
}
