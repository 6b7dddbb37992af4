/*
 * libFuzzer target: parses the input as a configuration file. Built with clang only:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -std=c11 -D_GNU_SOURCE -Iinclude \
 *         src/config.c src/log.c test/fuzz/fuzz_config.c -lm -o fuzz_config
 * %include is refused so that a run never opens a file; messages are not logged.
 * A config that loads must also survive every read-only operation on it.
 */
#include "config.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cf_load_opts opts = {.quiet = true, .no_include = true};
	struct config *cfg = NULL;
	char buf[256];

	if (!config_load_buffer_opts((const char *)data, size, "fuzz.ini", &opts, &cfg))
		return 0;
	for (int i = 0; i < config_key_count(); i++)
		config_key_format(cfg, i, buf, sizeof(buf));
	for (const struct cf_database *db = cfg->databases; db; db = db->next)
		(void)config_find_database(cfg, db->name);
	for (const struct cf_api *api = cfg->apis; api; api = api->next)
		(void)cf_kv_get(api->kv, api->nkv, "type");
	for (const struct cf_synced_table *st = cfg->synced_tables; st; st = st->next)
		(void)config_find_database(cfg, st->database);
	config_free(cfg);
	return 0;
}
