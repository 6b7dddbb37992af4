/*
 * fake_launch — starts one of the fake API servers of test/fakes/ for a C test program: fork/exec
 * of /usr/bin/python3 on a free port below 30000, waiting (bounded) until it says it listens.
 */
#ifndef SB_TEST_FAKE_LAUNCH_H
#define SB_TEST_FAKE_LAUNCH_H

#include <stdbool.h>
#include <sys/types.h>

struct fake_server {
	pid_t pid;
	int port;
	int out_fd;        /* read end of its stdout */
	char base_url[64]; /* "http://127.0.0.1:<port>" */
};

/*
 * Runs test/fakes/<script> (found under $srcdir, else the current directory) with "--port N"
 * and the extra arguments (NULL-terminated, may be NULL). False if it did not come up within
 * 10 s.
 */
bool fake_server_start(struct fake_server *fs, const char *script, const char *const *extra)
        __attribute__((warn_unused_result));
/* Stops it (SIGTERM, then SIGKILL) and reaps it. */
void fake_server_stop(struct fake_server *fs);
/* A port below 30000 where nothing listens right now (for "connection refused"). */
int fake_free_port(void);

#endif
