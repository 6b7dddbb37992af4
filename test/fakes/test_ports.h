/*
 * test_ports — the range of TCP ports a test program may pick from: $SB_PORTS ("LOW-HIGH"), as
 * the integration suite's conftest reads it, default 20000-29999 (below the ephemeral range).
 * test/run gives each suite running at the same time a range of its own, so that a C test
 * program never takes a port a concurrent pytest run has just picked.
 */
#ifndef SB_TEST_PORTS_H
#define SB_TEST_PORTS_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

static inline void test_port_range(int *low, int *high)
{
	const char *env = getenv("SB_PORTS");
	int lo, hi;

	*low = 20000;
	*high = 29999;
	if (env && sscanf(env, "%d-%d", &lo, &hi) == 2 && lo > 0 && lo <= hi && hi < 32768) {
		*low = lo;
		*high = hi;
	}
}

/*
 * Binds the IPv4 socket fd to 127.0.0.1 on a free port of the range and fills *sa; false when
 * no port of the range was free. For listeners a test makes itself (never port 0: the kernel
 * would hand out an ephemeral port).
 */
static inline bool test_bind_loopback(int fd, struct sockaddr_in *sa)
{
	static bool seeded;
	int low, high;

	test_port_range(&low, &high);
	if (!seeded) {
		srand((unsigned)time(NULL) ^ (unsigned)getpid());
		seeded = true;
	}
	for (int tries = 0; tries < 200; tries++) {
		int port = low + rand() % (high - low + 1);

		*sa = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
		sa->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		if (bind(fd, (struct sockaddr *)sa, sizeof(*sa)) == 0)
			return true;
	}
	return false;
}

#endif
