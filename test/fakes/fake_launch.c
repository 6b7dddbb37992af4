/*
 * fake_launch — see fake_launch.h. Readiness is the fake's own "listening on N" line on its
 * stdout, read through a pipe with poll(), so no test sleeps on a guess.
 */
#include "fake_launch.h"
#include "test_ports.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static bool port_is_free(int port)
{
	struct sockaddr_in sa;
	int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	bool ok;

	if (fd < 0)
		return false;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons((unsigned short)port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ok = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
	close(fd);
	return ok;
}

int fake_free_port(void)
{
	static int next;
	int i, low, high;

	test_port_range(&low, &high);
	if (next < low || next > high)
		next = low + (int)((unsigned)getpid() * 7919u % (unsigned)(high - low + 1));
	for (i = 0; i <= high - low; i++) {
		int p = next++;
		if (next > high)
			next = low;
		if (port_is_free(p))
			return p;
	}
	return -1;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool fake_try_start(struct fake_server *fs, const char *path, const char *const *extra)
{
	const char *argv[32];
	char port[16], line[256];
	int pfd[2], n = 0, i;
	size_t used = 0;
	int64_t until;
	pid_t pid;

	fs->port = fake_free_port();
	if (fs->port < 0 || pipe(pfd) != 0)
		return false;
	snprintf(port, sizeof(port), "%d", fs->port);
	argv[n++] = "python3";
	argv[n++] = path;
	argv[n++] = "--port";
	argv[n++] = port;
	for (i = 0; extra != NULL && extra[i] != NULL && n < 31; i++)
		argv[n++] = extra[i];
	argv[n] = NULL;
	pid = fork();
	if (pid < 0)
		return false;
	if (pid == 0) {
		dup2(pfd[1], 1);
		close(pfd[0]);
		close(pfd[1]);
		execv("/usr/bin/python3", (char *const *)argv);
		_exit(127);
	}
	close(pfd[1]);
	fs->pid = pid;
	until = now_ms() + 10000;
	while (now_ms() < until && used < sizeof(line) - 1) {
		struct pollfd p = {.fd = pfd[0], .events = POLLIN};
		ssize_t r;

		if (poll(&p, 1, 100) <= 0)
			continue;
		r = read(pfd[0], line + used, sizeof(line) - 1 - used);
		if (r <= 0)
			break;
		used += (size_t)r;
		line[used] = '\0';
		if (strstr(line, "listening on") != NULL) {
			/* Kept open until stop: the fake may still be writing the rest of its line.
			 */
			fs->out_fd = pfd[0];
			snprintf(fs->base_url, sizeof(fs->base_url), "http://127.0.0.1:%d",
			         fs->port);
			return true;
		}
	}
	close(pfd[0]);
	fake_server_stop(fs);
	return false;
}

bool fake_server_start(struct fake_server *fs, const char *script, const char *const *extra)
{
	const char *srcdir = getenv("srcdir");
	char path[1024];
	int attempt;

	memset(fs, 0, sizeof(*fs));
	snprintf(path, sizeof(path), "%s/test/fakes/%s", srcdir ? srcdir : ".", script);
	if (access(path, R_OK) != 0) {
		fprintf(stderr, "fake_launch: %s: %s\n", path, strerror(errno));
		return false;
	}
	/* Another process may take the port between our check and the fake's bind: retry. */
	for (attempt = 0; attempt < 5; attempt++) {
		if (fake_try_start(fs, path, extra))
			return true;
	}
	return false;
}

void fake_server_stop(struct fake_server *fs)
{
	int i, status;

	if (fs->out_fd > 0) {
		close(fs->out_fd);
		fs->out_fd = 0;
	}
	if (fs->pid <= 0)
		return;
	kill(fs->pid, SIGTERM);
	for (i = 0; i < 50; i++) {
		if (waitpid(fs->pid, &status, WNOHANG) == fs->pid) {
			fs->pid = 0;
			return;
		}
		usleep(20000);
	}
	kill(fs->pid, SIGKILL);
	waitpid(fs->pid, &status, 0);
	fs->pid = 0;
}
