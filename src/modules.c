/*
 * modules — the list of modules linked into the pooler, and the core's calls over it
 * (include/module.h). This is the only place that knows which modules there are.
 */
#include "module.h"

#include <stdio.h>
#include <strings.h>

#include "bouncer.h"

/* the synced-table side (src/mutation/) */
extern const struct module_ops synced_module;

const struct module_ops *const sb_modules[] = {
        &synced_module,
        NULL,
};

const char *module_cmd_str(enum module_cmd r)
{
	switch (r) {
	case MODULE_CMD_UNKNOWN:
		return "unknown";
	case MODULE_CMD_DONE:
		return "done";
	case MODULE_CMD_WAIT:
		return "wait";
	case MODULE_CMD_REFUSED:
		return "refused";
	}
	return "?";
}

bool modules_init(struct bouncer *b)
{
	for (int i = 0; sb_modules[i] != NULL; i++)
		if (sb_modules[i]->init != NULL && !sb_modules[i]->init(b))
			return false;
	return true;
}

bool modules_start(struct bouncer *b)
{
	for (int i = 0; sb_modules[i] != NULL; i++)
		if (sb_modules[i]->start != NULL && !sb_modules[i]->start(b))
			return false;
	return true;
}

void modules_reload(struct bouncer *b)
{
	for (int i = 0; sb_modules[i] != NULL; i++)
		if (sb_modules[i]->reload != NULL)
			sb_modules[i]->reload(b);
}

void modules_shutdown(struct bouncer *b)
{
	for (int i = 0; sb_modules[i] != NULL; i++)
		if (sb_modules[i]->shutdown != NULL)
			sb_modules[i]->shutdown(b);
}

int modules_in_flight(struct bouncer *b, const char *db)
{
	int n = 0;

	for (int i = 0; sb_modules[i] != NULL; i++)
		if (sb_modules[i]->in_flight != NULL)
			n += sb_modules[i]->in_flight(b, db);
	return n;
}

static const struct module_ops *command_owner(const char *cmd)
{
	for (int i = 0; sb_modules[i] != NULL; i++)
		for (int k = 0; sb_modules[i]->commands != NULL && sb_modules[i]->commands[k]; k++)
			if (strcasecmp(sb_modules[i]->commands[k], cmd) == 0)
				return sb_modules[i];
	return NULL;
}

bool modules_knows_command(const char *cmd)
{
	return command_owner(cmd) != NULL;
}

enum module_cmd modules_command(struct bouncer *b, const char *cmd, const char *arg,
                                uint64_t admin_id, char *msg, size_t size)
{
	const struct module_ops *m = command_owner(cmd);

	if (size > 0)
		msg[0] = '\0';
	if (m == NULL || m->command == NULL)
		return MODULE_CMD_UNKNOWN;
	return m->command(b, cmd, arg, admin_id, msg, size);
}

void modules_admin_gone(struct bouncer *b, uint64_t admin_id)
{
	for (int i = 0; sb_modules[i] != NULL; i++)
		if (sb_modules[i]->admin_gone != NULL)
			sb_modules[i]->admin_gone(b, admin_id);
}

void modules_write_metrics(struct bouncer *b, struct evbuffer *out, const char *written)
{
	for (int i = 0; sb_modules[i] != NULL; i++)
		if (sb_modules[i]->write_metrics != NULL)
			sb_modules[i]->write_metrics(b, out, written);
}

int modules_home_worker(const struct bouncer *b, const char *db)
{
	for (int i = 0; sb_modules[i] != NULL; i++) {
		int w = sb_modules[i]->home_worker != NULL ? sb_modules[i]->home_worker(b, db) : -1;
		if (w >= 0)
			return w;
	}
	return -1;
}
