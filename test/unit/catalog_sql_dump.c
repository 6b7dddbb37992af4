/*
 * catalog_sql_dump — prints the catalog's SQL so that tests can install it on a direct
 * connection, without the pooler:
 *   catalog_sql_dump                       the schema and guard function
 *   catalog_sql_dump SCHEMA TABLE PK       the guard triggers of SCHEMA.TABLE
 *   catalog_sql_dump --version             the schema version written into syncbouncer.meta
 */
#include <stdio.h>
#include <string.h>

#include "mutation/catalog.h"

int main(int argc, char **argv)
{
	char sql[8192];

	if (argc == 1) {
		fputs(catalog_schema_sql(), stdout);
		return 0;
	}
	if (argc == 2 && strcmp(argv[1], "--version") == 0) {
		printf("%s\n", catalog_schema_version());
		return 0;
	}
	if (argc == 4) {
		if (!catalog_trigger_sql(argv[1], argv[2], argv[3], sql, sizeof(sql))) {
			fprintf(stderr, "catalog_sql_dump: bad or too long names\n");
			return 1;
		}
		fputs(sql, stdout);
		return 0;
	}
	fprintf(stderr, "usage: catalog_sql_dump [--version | SCHEMA TABLE PK]\n");
	return 2;
}
