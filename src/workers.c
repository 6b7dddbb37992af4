/*
 * workers — one event loop (workers = 1). See include/workers.h.
 */
#include "workers.h"

int workers_count(const struct bouncer *b)
{
	(void)b;
	return 1;
}

int worker_index(const struct bouncer *b)
{
	(void)b;
	return 0;
}

void workers_each(struct bouncer *self, worker_fn fn, void *arg)
{
	fn(self, arg);
}
