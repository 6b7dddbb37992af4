/*
 * test_ports — the range of TCP ports a test program may pick from: $SB_PORTS ("LOW-HIGH"), as
 * the integration suite's conftest reads it, default 20000-29999 (below the ephemeral range).
 * test/run gives each suite running at the same time a range of its own, so that a C test
 * program never takes a port a concurrent pytest run has just picked.
 */
#ifndef SB_TEST_PORTS_H
#define SB_TEST_PORTS_H

#include <stdio.h>
#include <stdlib.h>

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

#endif
