/*
 * classifier — which client statements write synced tables or touch syncbouncer.* settings.
 *
 * The quick check is a substring scan: one pass over the text, filtered by a bit set of the
 * byte pairs the "needles" start with (the synced tables' names of the connection's database,
 * and the spellings that can reach a syncbouncer.* setting). It never allocates nor parses.
 *
 * The classification runs libpg_query (PostgreSQL 15's grammar) and reads its JSON parse tree
 * with api/json.h. It runs on the event loop, so its cost is bounded, and it must not crash:
 *  - libpg_query prints its tree recursively, and a long left-associative chain (1+1+...+1,
 *    x IS NULL IS NULL..., UNION ... UNION) overflows the C stack there. Before parsing, a
 *    lexer pass bounds the depth such chains can reach; a text beyond CL_MAX_CHAIN is not parsed.
 *  - texts longer than CL_MAX_INSPECT are not parsed; the JSON tree is read within limits on
 *    size, depth and node count.
 * A text that is not inspected because of those limits is refused (54001) when it could reach
 * a syncbouncer.* setting; otherwise it passes, and a write it makes to a synced table is then
 * refused by the guard trigger in the database, so nothing reaches a synced table unseen.
 *
 * Invariants: struct classifier is read-only after classifier_new(); no SQL text is logged.
 */
#include "mutation/classifier.h"

#include <pg_query.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/json.h"
#include "log.h"

/* Longest left-associative chain (and bracket nesting) handed to libpg_query. */
#define CL_MAX_CHAIN 1000
/*
 * Longest text handed to libpg_query. The classification runs on the event loop: parsing costs
 * about 0.2 s per MB and reading the tree more, while one API request takes at most a few
 * hundred rows, whose statement is far shorter than this.
 */
#define CL_MAX_INSPECT (1u << 20)
/* Bracket levels the pre-scan tracks; deeper is over CL_MAX_CHAIN anyway. */
#define CL_MAX_LEVELS (CL_MAX_CHAIN + 2)
/* Writes of one statement that are told apart; more are only counted. */
#define CL_MAX_WRITES 16
/* Schemas of a search_path looked at; a longer path is cut there. */
#define CL_MAX_PATH 32

/* About 300 ms of tree building at most; a VALUES list of a few thousand rows fits. */
static const struct json_limits cl_json_limits = {
        .max_bytes = 4u << 20,
        .max_depth = 10 * CL_MAX_CHAIN,
        .max_nodes = 300000,
};

/* ---- names ---- */

struct cl_needle {
	char *lower; /* owned, lower-cased */
	size_t len;
	bool is_table; /* else a settings spelling */
};

/* Needles grouped by their first (lower-case) byte, for one pass over a text. */
struct cl_index {
	struct cl_needle *needles; /* sorted by first byte */
	int count;
	uint16_t start[257]; /* needles[start[c] .. start[c + 1]) begin with byte c */
	/* bit (a << 8 | b) set when a needle starts with bytes a, b (lower case) */
	uint8_t pairs[65536 / 8];
	/* first[c] set when a needle starts with byte c, as it is or lower-cased, and for NUL */
	bool first[256];
};

struct cl_database {
	char *name;
	struct cl_index full; /* settings spellings and this database's table names */
	int *tables;          /* indexes into cl->tables */
	int ntables;
};

struct cl_table {
	char *database, *schema, *table;
};

struct classifier {
	struct cl_table *tables;
	int ntables;
	struct cl_database *dbs;
	int ndbs;
	struct cl_index fixed; /* settings spellings only */
};

/* What can name a syncbouncer.* setting: its prefix, the function, a Unicode escape (U&"..."). */
static const char *const cl_setting_needles[] = {"syncbouncer", "set_config", "u&", NULL};
#define CL_NSETTING_NEEDLES (sizeof(cl_setting_needles) / sizeof(cl_setting_needles[0]) - 1)

const char *const *classifier_setting_needles(void)
{
	return cl_setting_needles;
}

static unsigned char cl_lower(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + ('a' - 'A')) : c;
}

/* cl_lower() as a table, for the scan's inner loop. */
static const unsigned char cl_lower_tab[256] = {
#define CL_L(c)   [c] = (unsigned char)((c) >= 'A' && (c) <= 'Z' ? (c) + 32 : (c))
#define CL_L4(c)  CL_L(c), CL_L(c + 1), CL_L(c + 2), CL_L(c + 3)
#define CL_L16(c) CL_L4(c), CL_L4(c + 4), CL_L4(c + 8), CL_L4(c + 12)
#define CL_L64(c) CL_L16(c), CL_L16(c + 16), CL_L16(c + 32), CL_L16(c + 48)
        CL_L64(0),
        CL_L64(64),
        CL_L64(128),
        CL_L64(192),
#undef CL_L64
#undef CL_L16
#undef CL_L4
#undef CL_L
};

static bool cl_is_space(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static bool cl_is_ident_start(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c >= 0x80;
}

static bool cl_is_ident_char(unsigned char c)
{
	return cl_is_ident_start(c) || (c >= '0' && c <= '9') || c == '$';
}

/* Case-insensitive (ASCII) search of needle (lower case) in s[0..len). */
static bool cl_contains_ci(const char *s, size_t len, const char *needle)
{
	size_t nlen = strlen(needle);
	size_t i, j;

	if (nlen == 0 || nlen > len)
		return nlen == 0;
	for (i = 0; i + nlen <= len; i++) {
		for (j = 0; j < nlen; j++) {
			if (cl_lower((unsigned char)s[i + j]) != (unsigned char)needle[j])
				break;
		}
		if (j == nlen)
			return true;
	}
	return false;
}

static int cl_needle_cmp(const void *a, const void *b)
{
	const struct cl_needle *x = a, *y = b;
	int c = (unsigned char)x->lower[0] - (unsigned char)y->lower[0];

	return c != 0 ? c : strcmp(x->lower, y->lower);
}

static void cl_index_free(struct cl_index *ix)
{
	int i;

	for (i = 0; i < ix->count; i++)
		free(ix->needles[i].lower);
	free(ix->needles);
	memset(ix, 0, sizeof(*ix));
}

/* Adds a needle unless an equal one is there; the index is sorted by cl_index_finish(). */
static bool cl_index_add(struct cl_index *ix, const char *s, bool is_table)
{
	struct cl_needle *n;
	size_t len = strlen(s), i;
	int k;

	for (k = 0; k < ix->count; k++) {
		if (ix->needles[k].len == len && strncasecmp(ix->needles[k].lower, s, len) == 0) {
			ix->needles[k].is_table = ix->needles[k].is_table && is_table;
			return true;
		}
	}
	n = realloc(ix->needles, sizeof(*n) * (size_t)(ix->count + 1));
	if (n == NULL)
		return false;
	ix->needles = n;
	n = &ix->needles[ix->count];
	n->lower = malloc(len + 1);
	if (n->lower == NULL)
		return false;
	for (i = 0; i < len; i++)
		n->lower[i] = (char)cl_lower((unsigned char)s[i]);
	n->lower[len] = '\0';
	n->len = len;
	n->is_table = is_table;
	ix->count++;
	return true;
}

static void cl_index_finish(struct cl_index *ix)
{
	int c, k = 0;

	if (ix->count > 0)
		qsort(ix->needles, (size_t)ix->count, sizeof(*ix->needles), cl_needle_cmp);
	for (c = 0; c < 256; c++) {
		ix->start[c] = (uint16_t)k;
		while (k < ix->count && (unsigned char)ix->needles[k].lower[0] == c)
			k++;
	}
	ix->start[256] = (uint16_t)k;
	for (c = 0; c < 256; c++)
		ix->first[c] = ix->start[cl_lower_tab[c]] < ix->start[cl_lower_tab[c] + 1];
	/* a NUL ends the text as PostgreSQL reads it: the scan stops there at no cost per byte */
	ix->first[0] = true;
	memset(ix->pairs, 0, sizeof(ix->pairs));
	for (k = 0; k < ix->count; k++) {
		unsigned a = (unsigned char)ix->needles[k].lower[0], b;

		/* a one-byte needle matches whatever follows it */
		for (b = 0; b < 256; b++) {
			if (ix->needles[k].len == 1 || b == (unsigned char)ix->needles[k].lower[1])
				ix->pairs[(a << 8 | b) >> 3] |= (uint8_t)(1u << (b & 7));
		}
	}
}

static bool cl_index_add_settings(struct cl_index *ix)
{
	size_t i;

	for (i = 0; i < CL_NSETTING_NEEDLES; i++) {
		if (!cl_index_add(ix, cl_setting_needles[i], false))
			return false;
	}
	return true;
}

static bool cl_name_ok(const char *s)
{
	return s != NULL && s[0] != '\0' && strlen(s) <= CLASSIFIER_MAX_NAME_LEN;
}

struct classifier *classifier_new(const struct classifier_table *tables, int n)
{
	struct classifier *cl;
	int i, d;

	if (n < 0 || n > CLASSIFIER_MAX_TABLES || (n > 0 && tables == NULL))
		return NULL;
	for (i = 0; i < n; i++) {
		if (!cl_name_ok(tables[i].database) || !cl_name_ok(tables[i].schema) ||
		    !cl_name_ok(tables[i].table))
			return NULL;
	}
	cl = calloc(1, sizeof(*cl));
	if (cl == NULL)
		return NULL;
	if (!cl_index_add_settings(&cl->fixed))
		goto fail;
	cl_index_finish(&cl->fixed);
	if (n > 0) {
		cl->tables = calloc((size_t)n, sizeof(*cl->tables));
		cl->dbs = calloc((size_t)n, sizeof(*cl->dbs));
		if (cl->tables == NULL || cl->dbs == NULL)
			goto fail;
	}
	for (i = 0; i < n; i++) {
		struct cl_table *t = &cl->tables[i];
		struct cl_database *db = NULL;
		int *idx;

		cl->ntables++;
		t->database = strdup(tables[i].database);
		t->schema = strdup(tables[i].schema);
		t->table = strdup(tables[i].table);
		if (t->database == NULL || t->schema == NULL || t->table == NULL)
			goto fail;
		for (d = 0; d < cl->ndbs; d++) {
			if (strcmp(cl->dbs[d].name, t->database) == 0)
				db = &cl->dbs[d];
		}
		if (db == NULL) {
			db = &cl->dbs[cl->ndbs++];
			db->name = strdup(t->database);
			if (db->name == NULL || !cl_index_add_settings(&db->full))
				goto fail;
		}
		idx = realloc(db->tables, sizeof(*idx) * (size_t)(db->ntables + 1));
		if (idx == NULL)
			goto fail;
		db->tables = idx;
		db->tables[db->ntables++] = i;
		if (!cl_index_add(&db->full, t->table, true))
			goto fail;
	}
	for (d = 0; d < cl->ndbs; d++)
		cl_index_finish(&cl->dbs[d].full);
	return cl;
fail:
	classifier_free(cl);
	return NULL;
}

void classifier_free(struct classifier *cl)
{
	int i;

	if (cl == NULL)
		return;
	for (i = 0; i < cl->ntables; i++) {
		free(cl->tables[i].database);
		free(cl->tables[i].schema);
		free(cl->tables[i].table);
	}
	free(cl->tables);
	for (i = 0; i < cl->ndbs; i++) {
		free(cl->dbs[i].name);
		free(cl->dbs[i].tables);
		cl_index_free(&cl->dbs[i].full);
	}
	free(cl->dbs);
	cl_index_free(&cl->fixed);
	free(cl);
}

static const struct cl_database *cl_find_database(const struct classifier *cl, const char *name)
{
	int d;

	if (cl == NULL || name == NULL)
		return NULL;
	for (d = 0; d < cl->ndbs; d++) {
		if (strcmp(cl->dbs[d].name, name) == 0)
			return &cl->dbs[d];
	}
	return NULL;
}

/* ---- quick check ---- */

/* Whether w[0..n) (lower case) starts a statement that can write a table named in its text. */
static bool cl_is_write_word(const char *w, size_t n)
{
	switch (w[0]) {
	case 'i':
		return n == 6 && memcmp(w, "insert", 6) == 0;
	case 'u':
		return n == 6 && memcmp(w, "update", 6) == 0;
	case 'd':
		return n == 6 && memcmp(w, "delete", 6) == 0;
	case 'm':
		return n == 5 && memcmp(w, "merge", 5) == 0;
	case 'c':
		return n == 4 && memcmp(w, "copy", 4) == 0;
	case 'w':
		return n == 4 && memcmp(w, "with", 4) == 0;
	case 't':
		return n == 8 && memcmp(w, "truncate", 8) == 0;
	case 'e':
		return n == 7 && memcmp(w, "explain", 7) == 0;
	case 'p':
		return n == 7 && memcmp(w, "prepare", 7) == 0;
	default:
		return false;
	}
}

/* If s[i] opens a comment, the offset just after it (nested / * * / as PostgreSQL); else i. */
static size_t cl_skip_comment(const char *s, size_t len, size_t i)
{
	int nest = 1;

	if (i + 1 >= len)
		return i;
	if (s[i] == '-' && s[i + 1] == '-') {
		while (i < len && s[i] != '\n')
			i++;
		return i;
	}
	if (s[i] != '/' || s[i + 1] != '*')
		return i;
	i += 2;
	while (i < len && nest > 0) {
		if (s[i] == '*' && i + 1 < len && s[i + 1] == '/') {
			nest--;
			i += 2;
		} else if (s[i] == '/' && i + 1 < len && s[i + 1] == '*') {
			nest++;
			i += 2;
		} else {
			i++;
		}
	}
	return i;
}

/* Skips whitespace, comments and (when parens) opening parentheses from offset i. */
static size_t cl_skip_to_token(const char *s, size_t len, size_t i, bool parens)
{
	while (i < len) {
		size_t j = cl_skip_comment(s, len, i);

		if (j != i)
			i = j;
		else if (cl_is_space((unsigned char)s[i]) || (parens && s[i] == '('))
			i++;
		else
			break;
	}
	return i;
}

static bool cl_first_word_writes(const char *s, size_t len)
{
	size_t i = cl_skip_to_token(s, len, 0, true), n = 0;
	char word[9];

	while (i + n < len && cl_is_ident_char((unsigned char)s[i + n])) {
		if (n == sizeof(word) - 1)
			return false; /* longer than every word looked for */
		word[n] = (char)cl_lower_tab[(unsigned char)s[i + n]];
		n++;
	}
	return n > 0 && cl_is_write_word(word, n);
}

/* Whether any needle of ix occurs in s[0..len) before its first NUL; *table tells its kind. */
static bool cl_scan(const struct cl_index *ix, const char *s, size_t len, bool *table)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i;

	if (len == 0)
		return false;
	/* the last byte pairs with a NUL, which no needle holds */
	for (i = 0; i < len; i++) {
		unsigned a, b;
		int k;

		/* most bytes begin no needle: one look-up each */
		if (!ix->first[u[i]])
			continue;
		if (u[i] == '\0')
			return false;
		a = cl_lower_tab[u[i]];
		b = i + 1 < len ? cl_lower_tab[u[i + 1]] : 0;
		if (!(ix->pairs[(a << 8 | b) >> 3] & (1u << (b & 7))))
			continue;
		for (k = ix->start[a]; k < ix->start[a + 1]; k++) {
			const struct cl_needle *n = &ix->needles[k];
			size_t j;

			if (n->len > len - i)
				continue;
			for (j = 1; j < n->len; j++) {
				if (cl_lower_tab[u[i + j]] != (unsigned char)n->lower[j])
					break;
			}
			if (j == n->len) {
				*table = n->is_table;
				return true;
			}
		}
	}
	return false;
}

/* True when a ';' is followed by anything but whitespace: more than one statement, maybe. */
static bool cl_maybe_multi(const char *s, size_t len)
{
	const char *semi = memchr(s, ';', len);
	size_t i;

	if (semi == NULL)
		return false;
	for (i = (size_t)(semi - s) + 1; i < len; i++) {
		if (s[i] == '\0')
			return false;
		if (!cl_is_space((unsigned char)s[i]) && s[i] != ';')
			return true;
	}
	return false;
}

/* Whether the text holds a spelling that could reach a syncbouncer.* setting. */
static bool cl_mentions_setting(const struct classifier *cl, const char *sql, size_t len)
{
	bool table;
	size_t i;

	if (cl != NULL)
		return cl_scan(&cl->fixed, sql, len, &table);
	for (i = 0; i < CL_NSETTING_NEEDLES; i++) {
		if (cl_contains_ci(sql, len, cl_setting_needles[i]))
			return true;
	}
	return false;
}

bool classifier_quick_check(const struct classifier *cl, const char *database, const char *sql,
                            size_t len)
{
	const struct cl_database *db;
	const char *nul;
	bool table;

	if (sql == NULL || len == 0)
		return false;
	db = cl != NULL ? cl_find_database(cl, database) : NULL;
	if (db == NULL && cl != NULL)
		return cl_scan(&cl->fixed, sql, len, &table); /* it stops at a NUL itself */
	nul = memchr(sql, '\0', len);
	if (nul != NULL)
		len = (size_t)(nul - sql);
	if (cl == NULL)
		return cl_mentions_setting(cl, sql, len);
	if (cl_first_word_writes(sql, len))
		return cl_scan(&db->full, sql, len, &table);
	if (cl_scan(&cl->fixed, sql, len, &table))
		return true;
	return cl_maybe_multi(sql, len) && cl_scan(&db->full, sql, len, &table);
}

/* ---- pre-scan: how deep can libpg_query's tree get? ---- */

struct cl_prescan {
	int chain;            /* bound on left-associative chains plus bracket nesting */
	bool plain_backslash; /* a backslash inside a '...' constant (not E'...') */
};

static bool cl_word_is(const char *s, size_t len, const char *word)
{
	return strlen(word) == len && strncasecmp(s, word, len) == 0;
}

/*
 * Keywords whose chains a comma does not end: set operations and joins span select lists, and
 * CASE nests without brackets.
 */
static bool cl_chain_keyword(const char *s, size_t len)
{
	static const char *const words[] = {"union", "intersect", "except", "join", "case"};
	size_t k;

	for (k = 0; k < sizeof(words) / sizeof(words[0]); k++) {
		if (cl_word_is(s, len, words[k]))
			return true;
	}
	return false;
}

/*
 * Keywords no operator chain runs across: AND and OR bind looser than every operator (and
 * their own chains come out flat), the others end one expression and start the next.
 */
static bool cl_chain_breaker(const char *s, size_t len)
{
	static const char *const words[] = {"and",  "or",    "when",   "then",  "else",
	                                    "from", "where", "having", "select"};
	size_t k;

	for (k = 0; k < sizeof(words) / sizeof(words[0]); k++) {
		if (cl_word_is(s, len, words[k]))
			return true;
	}
	return false;
}

static bool cl_is_op_char(unsigned char c)
{
	return c != '\0' && strchr("+-*/<>=~!@#%^&|`?", c) != NULL;
}

/*
 * Lexes s[0..len) as PostgreSQL does with standard_conforming_strings on (as libpg_query does)
 * and bounds the depth of the parse tree's left-associative chains. Every operator of the
 * grammar is a symbol or a word, so every operator character, cast and word counts one level;
 * a comma or a chain-breaking keyword ends the chain at its bracket level (but not a
 * set-operation or join chain, which may span select lists); brackets add a level each. Stops
 * counting once over CL_MAX_CHAIN.
 */
static struct cl_prescan cl_prescan(const char *s, size_t len)
{
	static const int over = CL_MAX_CHAIN + 1;
	struct cl_prescan r = {0, false};
	int ops[CL_MAX_LEVELS], kws[CL_MAX_LEVELS];
	int level = 0, sum = 0;
	size_t i = 0;

	ops[0] = kws[0] = 0;
	while (i < len) {
		unsigned char c = (unsigned char)s[i];

		if (sum + level > r.chain)
			r.chain = sum + level;
		if (r.chain > CL_MAX_CHAIN) {
			r.chain = over;
			return r;
		}
		if (cl_is_space(c)) {
			i++;
		} else if ((c == '-' && i + 1 < len && s[i + 1] == '-') ||
		           (c == '/' && i + 1 < len && s[i + 1] == '*')) {
			i = cl_skip_comment(s, len, i);
		} else if (c == '\'') {
			bool escapes = i > 0 && (s[i - 1] == 'e' || s[i - 1] == 'E') &&
			               (i < 2 || !cl_is_ident_char((unsigned char)s[i - 2]));

			for (i++; i < len; i++) {
				if (s[i] == '\\') {
					if (escapes)
						i++;
					else
						r.plain_backslash = true;
				} else if (s[i] == '\'') {
					if (i + 1 < len && s[i + 1] == '\'')
						i++;
					else
						break;
				}
			}
			i++;
		} else if (c == '"') {
			for (i++; i < len; i++) {
				if (s[i] == '"') {
					if (i + 1 < len && s[i + 1] == '"')
						i++;
					else
						break;
				}
			}
			i++;
		} else if (c == '$' && i + 1 < len && s[i + 1] >= '0' && s[i + 1] <= '9') {
			for (i++; i < len && s[i] >= '0' && s[i] <= '9'; i++)
				;
		} else if (c == '$') {
			size_t t = i + 1, taglen;
			const char *end;

			while (t < len && cl_is_ident_char((unsigned char)s[t]) && s[t] != '$')
				t++;
			if (t >= len || s[t] != '$') {
				i++;
				continue;
			}
			taglen = t + 1 - i;
			end = memmem(s + t + 1, len - t - 1, s + i, taglen);
			i = end != NULL ? (size_t)(end - s) + taglen : len;
		} else if (cl_is_ident_start(c)) {
			size_t w = i;

			while (w < len && cl_is_ident_char((unsigned char)s[w]))
				w++;
			if (cl_chain_keyword(s + i, w - i)) {
				kws[level]++;
				sum++;
			} else if (cl_chain_breaker(s + i, w - i)) {
				sum -= ops[level];
				ops[level] = 0;
			} else {
				/* a word may be an operator (IS NULL, OPERATOR(...), AT) */
				ops[level]++;
				sum++;
			}
			i = w;
		} else if (c >= '0' && c <= '9') {
			while (i < len && ((s[i] >= '0' && s[i] <= '9') || s[i] == '.' ||
			                   cl_is_ident_char((unsigned char)s[i])))
				i++;
		} else if (cl_is_op_char(c)) {
			ops[level]++;
			sum++;
			i++;
		} else if (c == ':' && i + 1 < len && s[i + 1] == ':') {
			ops[level]++;
			sum++;
			i += 2;
		} else if (c == '(' || c == '[') {
			if (level + 1 >= CL_MAX_LEVELS) {
				r.chain = over;
				return r;
			}
			level++;
			ops[level] = kws[level] = 0;
			i++;
		} else if (c == ')' || c == ']') {
			if (level > 0) {
				sum -= ops[level] + kws[level];
				level--;
			}
			i++;
		} else if (c == ',') {
			sum -= ops[level];
			ops[level] = 0;
			i++;
		} else if (c == ';') {
			while (level > 0) {
				sum -= ops[level] + kws[level];
				level--;
			}
			sum = ops[0] = kws[0] = 0;
			i++;
		} else {
			i++;
		}
	}
	if (sum + level > r.chain)
		r.chain = sum + level > CL_MAX_CHAIN ? over : sum + level;
	return r;
}

/* ---- reading the parse tree ---- */

enum cl_write_kind {
	CLW_INSERT,
	CLW_UPDATE,
	CLW_DELETE,
	CLW_MERGE,
	CLW_COPY_FROM,
	CLW_TRUNCATE,
};

struct cl_write {
	enum cl_write_kind kind;
	int table;                     /* index into cl->tables */
	const struct json_value *stmt; /* the writing statement's node */
};

enum cl_setting {
	CLS_NONE,
	CLS_NAMED,    /* SET/RESET/ALTER ... SET/set_config of syncbouncer.* */
	CLS_COMPUTED, /* set_config() with a name that is not a constant */
	CLS_BODY,     /* DO block or function body mentioning syncbouncer */
};

struct cl_walk {
	const struct classifier *cl;
	const struct cl_database *db;
	const char *database;
	const struct classifier_path *path;                     /* NULL: the default search_path */
	char schemas[CL_MAX_PATH][CLASSIFIER_MAX_NAME_LEN + 1]; /* the path, "$user" resolved */
	int nschemas;
	struct cl_write synced[CL_MAX_WRITES]; /* writes of synced tables, in tree order */
	int nsynced;                           /* may exceed CL_MAX_WRITES */
	int nother;                            /* writes of other tables */
	enum cl_setting setting;
};

/* The synced table schema.name of the walk's database, or -1. */
static int cl_find_table(const struct cl_walk *w, const char *schema, const char *name)
{
	for (int k = 0; k < w->db->ntables; k++) {
		const struct cl_table *t = &w->cl->tables[w->db->tables[k]];

		if (strcmp(t->table, name) == 0 && strcmp(t->schema, schema) == 0)
			return w->db->tables[k];
	}
	return -1;
}

/*
 * The synced table a RangeVar (JSON object) names, or -1. An unqualified name resolves as the
 * server resolves it: the first schema of the search_path that holds a relation of that name
 * (a synced table, or another relation the path's shadowed() knows of).
 */
static int cl_match_rangevar(const struct cl_walk *w, const struct json_value *rv)
{
	const char *schema = json_get_string(rv, "schemaname");
	const char *name = json_get_string(rv, "relname");
	const struct classifier_path *p = w->path;
	int k;

	if (name == NULL || w->db == NULL)
		return -1;
	if (schema != NULL)
		return cl_find_table(w, schema, name);
	for (int i = 0; i < w->nschemas; i++) {
		if ((k = cl_find_table(w, w->schemas[i], name)) >= 0)
			return k;
		if (p != NULL && p->shadowed != NULL &&
		    p->shadowed(p->arg, w->database, w->schemas[i], name))
			return -1;
	}
	return -1;
}

int classifier_path_schemas(const char *search_path, const char *user,
                            char (*out)[CLASSIFIER_MAX_NAME_LEN + 1], int max)
{
	const char *p = search_path != NULL ? search_path : "\"$user\", public";
	int n = 0;

	for (;;) {
		char name[CLASSIFIER_MAX_NAME_LEN + 1];
		size_t len = 0;
		bool quoted = false, toolong = false;

		while (cl_is_space((unsigned char)*p))
			p++;
		if (*p == '\0')
			break;
		if (*p == '"') {
			quoted = true;
			for (p++; *p != '\0'; p++) {
				if (*p == '"' && p[1] != '"')
					break;
				if (*p == '"')
					p++;
				if (len < sizeof(name) - 1)
					name[len++] = *p;
				else
					toolong = true;
			}
			if (*p != '"')
				return -1;
			p++;
		} else {
			for (; *p != '\0' && *p != ',' && !cl_is_space((unsigned char)*p); p++) {
				if (len < sizeof(name) - 1)
					name[len++] = (char)cl_lower_tab[(unsigned char)*p];
				else
					toolong = true;
			}
		}
		name[len] = '\0';
		while (cl_is_space((unsigned char)*p))
			p++;
		if (*p != '\0' && *p != ',')
			return -1;
		(void)quoted;
		if (strcmp(name, "$user") == 0)
			snprintf(name, sizeof(name), "%s", user != NULL ? user : "");
		/* no synced table lives in these, and a longer name is no schema's */
		if (name[0] != '\0' && !toolong && strcmp(name, "pg_catalog") != 0 &&
		    strcmp(name, "pg_temp") != 0 && n < max)
			memcpy(out[n++], name, sizeof(name));
		if (*p == ',')
			p++;
	}
	return n;
}

static void cl_note_target(struct cl_walk *w, enum cl_write_kind kind,
                           const struct json_value *stmt, const struct json_value *rv)
{
	int table = rv != NULL ? cl_match_rangevar(w, rv) : -1;

	if (table < 0) {
		w->nother++;
		return;
	}
	if (w->nsynced < CL_MAX_WRITES) {
		w->synced[w->nsynced].kind = kind;
		w->synced[w->nsynced].table = table;
		w->synced[w->nsynced].stmt = stmt;
	}
	w->nsynced++;
}

static void cl_note_write(struct cl_walk *w, enum cl_write_kind kind, const struct json_value *stmt)
{
	const struct json_value *rels, *from;
	size_t i;

	switch (kind) {
	case CLW_TRUNCATE:
		rels = json_get(stmt, "relations");
		for (i = 0; rels != NULL && rels->kind == JSON_ARRAY && i < rels->count; i++)
			cl_note_target(w, kind, stmt, json_get(rels->items[i], "RangeVar"));
		return;
	case CLW_COPY_FROM:
		from = json_get(stmt, "is_from");
		if (from == NULL || from->kind != JSON_BOOL || !from->boolean)
			return; /* COPY ... TO reads; a query inside is walked on its own */
		if (json_get(stmt, "relation") == NULL)
			return;
		break;
	default:
		break;
	}
	cl_note_target(w, kind, stmt, json_get(stmt, "relation"));
}

static bool cl_is_setting_name(const char *name)
{
	return name != NULL && strncasecmp(name, "syncbouncer.", 12) == 0;
}

static void cl_note_setting(struct cl_walk *w, enum cl_setting s)
{
	if (w->setting == CLS_NONE)
		w->setting = s;
}

/* The String node's text or the value of an A_Const string, through casts; else NULL. */
static const char *cl_const_string(const struct json_value *v)
{
	const struct json_value *c;

	while ((c = json_get(v, "TypeCast")) != NULL)
		v = json_get(c, "arg");
	c = json_get(v, "A_Const");
	if (c != NULL)
		return json_get_string(json_get(c, "sval"), "sval");
	return NULL;
}

static bool cl_const_is_null(const struct json_value *v)
{
	const struct json_value *c = json_get(v, "A_Const"), *n;

	n = json_get(c, "isnull");
	return n != NULL && n->kind == JSON_BOOL && n->boolean;
}

static void cl_note_call(struct cl_walk *w, const struct json_value *call)
{
	const struct json_value *names = json_get(call, "funcname"), *args, *last;
	const char *fname, *setting;

	if (names == NULL || names->kind != JSON_ARRAY || names->count == 0)
		return;
	last = names->items[names->count - 1];
	fname = json_get_string(json_get(last, "String"), "sval");
	if (fname == NULL || strcmp(fname, "set_config") != 0)
		return;
	args = json_get(call, "args");
	if (args == NULL || args->kind != JSON_ARRAY || args->count == 0)
		return; /* PostgreSQL refuses it */
	setting = cl_const_string(args->items[0]);
	if (setting != NULL) {
		if (cl_is_setting_name(setting))
			cl_note_setting(w, CLS_NAMED);
	} else if (!cl_const_is_null(args->items[0])) {
		cl_note_setting(w, CLS_COMPUTED);
	}
}

/* Whether some string in the tree v contains "syncbouncer" (any case). */
static bool cl_tree_mentions(const struct json_value *v)
{
	size_t i;

	if (v == NULL)
		return false;
	if (v->kind == JSON_STRING)
		return cl_contains_ci(v->str, v->len, "syncbouncer");
	if (v->kind != JSON_ARRAY && v->kind != JSON_OBJECT)
		return false;
	for (i = 0; i < v->count; i++) {
		if (cl_tree_mentions(v->items[i]))
			return true;
	}
	return false;
}

/* DO blocks and function bodies are opaque strings to the grammar: look for the name in them. */
static void cl_note_body(struct cl_walk *w, const struct json_value *list)
{
	size_t i;

	for (i = 0; list != NULL && list->kind == JSON_ARRAY && i < list->count; i++) {
		const struct json_value *def = json_get(list->items[i], "DefElem");
		const char *name = json_get_string(def, "defname");

		if (name != NULL && strcmp(name, "as") == 0 &&
		    cl_tree_mentions(json_get(def, "arg")))
			cl_note_setting(w, CLS_BODY);
	}
}

static const struct {
	const char *node;
	enum cl_write_kind kind;
} cl_write_nodes[] = {
        {"InsertStmt", CLW_INSERT}, {"UpdateStmt", CLW_UPDATE},  {"DeleteStmt", CLW_DELETE},
        {"MergeStmt", CLW_MERGE},   {"CopyStmt", CLW_COPY_FROM}, {"TruncateStmt", CLW_TRUNCATE},
};

/* Visits every node of the tree; depth is bounded by the JSON limits. */
static void cl_visit(struct cl_walk *w, const struct json_value *v)
{
	size_t i, k;

	if (v->kind == JSON_ARRAY) {
		for (i = 0; i < v->count; i++)
			cl_visit(w, v->items[i]);
		return;
	}
	if (v->kind != JSON_OBJECT)
		return;
	for (i = 0; i < v->count; i++) {
		const char *key = v->keys[i];
		const struct json_value *c = v->items[i];

		if (c->kind == JSON_OBJECT) {
			for (k = 0; k < sizeof(cl_write_nodes) / sizeof(cl_write_nodes[0]); k++) {
				if (strcmp(key, cl_write_nodes[k].node) == 0)
					cl_note_write(w, cl_write_nodes[k].kind, c);
			}
			/* a VariableSetStmt is unwrapped where a struct field holds it */
			if (strcmp(key, "VariableSetStmt") == 0 || strcmp(key, "setstmt") == 0) {
				if (cl_is_setting_name(json_get_string(c, "name")))
					cl_note_setting(w, CLS_NAMED);
			} else if (strcmp(key, "FuncCall") == 0) {
				cl_note_call(w, c);
			} else if (strcmp(key, "DoStmt") == 0) {
				cl_note_body(w, json_get(c, "args"));
			} else if (strcmp(key, "CreateFunctionStmt") == 0) {
				cl_note_body(w, json_get(c, "options"));
			}
		}
		cl_visit(w, c);
	}
}

/* EXPLAIN runs its statement only with ANALYZE (PostgreSQL's defGetBoolean rules). */
static bool cl_explain_analyzes(const struct json_value *explain)
{
	const struct json_value *opts = json_get(explain, "options");
	size_t i;

	for (i = 0; opts != NULL && opts->kind == JSON_ARRAY && i < opts->count; i++) {
		const struct json_value *def = json_get(opts->items[i], "DefElem"), *arg, *num;
		const char *name = json_get_string(def, "defname"), *s;

		if (name == NULL || strcmp(name, "analyze") != 0)
			continue;
		arg = json_get(def, "arg");
		if (arg == NULL)
			return true;
		s = json_get_string(json_get(arg, "String"), "sval");
		if (s != NULL)
			return !(strcasecmp(s, "false") == 0 || strcasecmp(s, "off") == 0);
		num = json_get(arg, "Integer");
		if (num != NULL) {
			num = json_get(num, "ival");
			return num != NULL && num->kind == JSON_NUMBER && num->number != 0;
		}
		return true;
	}
	return false;
}

/* ---- verdicts ---- */

const char *stmt_verdict_str(enum stmt_verdict v)
{
	switch (v) {
	case STMT_PASS:
		return "pass";
	case STMT_MUTATION:
		return "mutation";
	case STMT_REJECT:
		return "reject";
	}
	return "unknown";
}

const char *stmt_op_str(enum stmt_op op)
{
	switch (op) {
	case OP_NONE:
		return "none";
	case OP_INSERT:
		return "insert";
	case OP_UPDATE:
		return "update";
	case OP_DELETE:
		return "delete";
	}
	return "unknown";
}

static void cl_class_init(struct stmt_class *c)
{
	memset(c, 0, sizeof(*c));
	c->verdict = STMT_PASS;
	c->op = OP_NONE;
	c->table = -1;
}

static void cl_reject(struct stmt_class *c, const char *sqlstate, int table, const char *message,
                      const char *detail, const char *hint)
{
	c->verdict = STMT_REJECT;
	c->op = OP_NONE;
	c->table = table;
	c->returning = false;
	c->on_conflict_nothing = false;
	snprintf(c->sqlstate, sizeof(c->sqlstate), "%s", sqlstate);
	snprintf(c->message, sizeof(c->message), "%s", message);
	snprintf(c->detail, sizeof(c->detail), "%s", detail != NULL ? detail : "");
	snprintf(c->hint, sizeof(c->hint), "%s", hint != NULL ? hint : "");
}

/* snprintf into a message field: names are bounded, and a cut message is still an answer. */
__attribute__((format(printf, 3, 4))) static void cl_fmt(char *buf, size_t size, const char *fmt,
                                                         ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, size, fmt, ap);
	va_end(ap);
}

#define CL_SETTING_MESSAGE "setting syncbouncer.* is not allowed through syncbouncer"

/* Formats "schema.table" of table index t into buf. */
static const char *cl_table_name(const struct classifier *cl, int t, char *buf, size_t size)
{
	snprintf(buf, size, "%s.%s", cl->tables[t].schema, cl->tables[t].table);
	return buf;
}

static void cl_decide(const struct cl_walk *w, const char *top_key, const struct json_value *top,
                      struct stmt_class *c)
{
	char name[2 * CLASSIFIER_MAX_NAME_LEN + 2], other[2 * CLASSIFIER_MAX_NAME_LEN + 2];
	char msg[sizeof(c->message)], detail[sizeof(c->detail)];
	const struct cl_write *wr = &w->synced[0];
	const struct json_value *conflict;
	const char *action;
	int i;

	switch (w->setting) {
	case CLS_NONE:
		break;
	case CLS_NAMED:
		cl_reject(c, "42501", -1, CL_SETTING_MESSAGE, NULL, NULL);
		return;
	case CLS_COMPUTED:
		cl_reject(c, "42501", -1, CL_SETTING_MESSAGE,
		          "set_config() is called with a setting name that is not a constant.",
		          "Pass the setting name as a string constant.");
		return;
	case CLS_BODY:
		cl_reject(c, "42501", -1, CL_SETTING_MESSAGE,
		          "A DO block or function body mentions syncbouncer.", NULL);
		return;
	}
	if (w->nsynced == 0)
		return;
	for (i = 0; i < w->nsynced && i < CL_MAX_WRITES; i++) {
		const char *what, *hint;

		switch (w->synced[i].kind) {
		case CLW_MERGE:
			what = "MERGE into";
			hint = "Use INSERT, UPDATE or DELETE.";
			break;
		case CLW_TRUNCATE:
			what = "TRUNCATE of";
			hint = "Use DELETE.";
			break;
		case CLW_COPY_FROM:
			what = "COPY into";
			hint = "Use INSERT.";
			break;
		default:
			continue;
		}
		cl_fmt(msg, sizeof(msg), "%s synced table %s is not supported", what,
		       cl_table_name(w->cl, w->synced[i].table, name, sizeof(name)));
		cl_reject(c, "0A000", w->synced[i].table, msg, NULL, hint);
		return;
	}
	cl_table_name(w->cl, wr->table, name, sizeof(name));
	if (w->nsynced > 1) {
		int second = w->synced[1].table;

		if (second == wr->table)
			cl_fmt(detail, sizeof(detail), "It writes %s more than once.", name);
		else
			cl_fmt(detail, sizeof(detail), "It writes %s and %s.", name,
			       cl_table_name(w->cl, second, other, sizeof(other)));
		cl_reject(c, "0A000", wr->table,
		          "a statement may write only one synced table, and only once", detail,
		          "Write each synced table in a statement of its own.");
		return;
	}
	if (strcmp(top_key, "ExplainStmt") == 0) {
		if (cl_explain_analyzes(top)) {
			cl_fmt(detail, sizeof(detail), "It writes %s.", name);
			cl_reject(c, "0A000", wr->table,
			          "EXPLAIN ANALYZE of a write to a synced table is not supported",
			          detail, "Use EXPLAIN without ANALYZE.");
		}
		return;
	}
	if (wr->stmt != top) {
		const char *hint =
		        "Run the write as an INSERT, UPDATE or DELETE statement of its own.";

		if (strcmp(top_key, "PrepareStmt") == 0) {
			cl_fmt(msg, sizeof(msg),
			       "PREPARE of a write to synced table %s is not supported", name);
			hint = "Use the extended query protocol (the driver's prepared statements).";
		} else if (strcmp(top_key, "CopyStmt") == 0) {
			cl_fmt(msg, sizeof(msg),
			       "COPY of a write to synced table %s is not supported", name);
		} else if (strcmp(top_key, "SelectStmt") == 0 ||
		           strcmp(top_key, "InsertStmt") == 0 ||
		           strcmp(top_key, "UpdateStmt") == 0 ||
		           strcmp(top_key, "DeleteStmt") == 0) {
			cl_fmt(msg, sizeof(msg),
			       "data-modifying WITH on synced table %s is not supported", name);
		} else {
			cl_fmt(msg, sizeof(msg),
			       "synced table %s can be written only by a top-level INSERT, UPDATE or "
			       "DELETE",
			       name);
		}
		cl_reject(c, "0A000", wr->table, msg, NULL, hint);
		return;
	}
	if (w->nother > 0) {
		cl_fmt(msg, sizeof(msg),
		       "a statement writing synced table %s may not write other tables", name);
		cl_reject(c, "0A000", wr->table, msg,
		          "Its data-modifying WITH queries would run more than once.",
		          "Run the other writes as statements of their own.");
		return;
	}
	/* the cursor lives in the client's transaction, not where the pipeline runs the write */
	if (json_get(json_get(top, "whereClause"), "CurrentOfExpr") != NULL) {
		cl_fmt(msg, sizeof(msg), "WHERE CURRENT OF on synced table %s is not supported",
		       name);
		cl_reject(c, "0A000", wr->table, msg, NULL, "Name the rows by their primary key.");
		return;
	}
	conflict = json_get(top, "onConflictClause");
	action = json_get_string(conflict, "action");
	if (conflict != NULL && (action == NULL || strcmp(action, "ONCONFLICT_NOTHING") != 0)) {
		cl_fmt(msg, sizeof(msg), "upserts on synced table %s are not supported", name);
		cl_reject(c, "0A000", wr->table, msg, NULL,
		          "Use INSERT ... ON CONFLICT DO NOTHING, then UPDATE.");
		return;
	}
	c->verdict = STMT_MUTATION;
	c->table = wr->table;
	c->op = wr->kind == CLW_INSERT ? OP_INSERT : wr->kind == CLW_UPDATE ? OP_UPDATE : OP_DELETE;
	c->on_conflict_nothing = conflict != NULL;
	conflict = json_get(top, "returningList");
	c->returning = conflict != NULL && conflict->kind == JSON_ARRAY && conflict->count > 0;
}

/* Narrows [*loc, *loc + *len) of s to start at a token and end after one. */
static void cl_trim(const char *s, size_t slen, int *loc, int *len)
{
	size_t start = (size_t)*loc, end = (size_t)*loc + (size_t)*len;

	if (start > slen)
		start = slen;
	if (end > slen || *len <= 0)
		end = slen;
	start = cl_skip_to_token(s, end, start, false);
	while (end > start && cl_is_space((unsigned char)s[end - 1]))
		end--;
	*loc = (int)start;
	*len = (int)(end - start);
}

static bool cl_oom(struct stmt_class *out)
{
	cl_reject(out, "53200", -1, "out of memory", NULL, NULL);
	return false;
}

/* The text could not be inspected: refuse it only if it could reach a syncbouncer.* setting. */
static void cl_uninspected(const struct classifier *cl, const char *sql, size_t len,
                           const char *why, struct stmt_class *out)
{
	out->nstatements = 1;
	out->stmt_len = (int)(len > INT32_MAX ? INT32_MAX : len);
	if (cl_mentions_setting(cl, sql, len)) {
		log_debug("classifier: refusing a statement of %zu bytes: %s", len, why);
		cl_reject(out, "54001", -1, "statement too complex for syncbouncer to inspect",
		          NULL, "Split it into simpler statements.");
	} else {
		log_debug("classifier: passing a statement of %zu bytes uninspected: %s", len, why);
	}
}

/* COPY ... FROM STDIN: its data comes from the client (no file name, no program). */
static bool cl_copy_from_client(const struct json_value *copy)
{
	const struct json_value *from = json_get(copy, "is_from");

	return from != NULL && from->kind == JSON_BOOL && from->boolean &&
	       json_get(copy, "filename") == NULL;
}

bool classifier_classify(const struct classifier *cl, const char *database, const char *sql,
                         struct stmt_class *out)
{
	return classifier_classify_in(cl, database, NULL, sql, out);
}

bool classifier_classify_in(const struct classifier *cl, const char *database,
                            const struct classifier_path *path, const char *sql,
                            struct stmt_class *out)
{
	struct cl_walk *w = NULL;
	char(*schemas)[CLASSIFIER_MAX_NAME_LEN + 1] = NULL;
	int nschemas = 0;
	struct json_value *tree = NULL;
	const struct json_value *stmts;
	PgQueryParseResult pr;
	struct cl_prescan pre;
	char err[96];
	size_t len, i;
	bool ok = true;

	cl_class_init(out);
	if (sql == NULL)
		return true;
	len = strlen(sql);
	if (len > CL_MAX_INSPECT) {
		cl_uninspected(cl, sql, len, "too long", out);
		return true;
	}
	pre = cl_prescan(sql, len);
	if (pre.chain > CL_MAX_CHAIN) {
		cl_uninspected(cl, sql, len, "nested too deeply", out);
		return true;
	}
	/*
	 * libpg_query reads '...' as PostgreSQL does with standard_conforming_strings on; a session
	 * that turned it off reads a backslash there as an escape, and could see a SET where the
	 * grammar here saw a string.
	 */
	if (pre.plain_backslash && cl_mentions_setting(cl, sql, len)) {
		out->nstatements = 1;
		out->stmt_len = (int)len;
		cl_reject(out, "42501", -1, CL_SETTING_MESSAGE,
		          "A string constant in it holds a backslash, which PostgreSQL reads "
		          "differently when standard_conforming_strings is off.",
		          "Write such strings as E'...' constants.");
		return true;
	}
	pr = pg_query_parse(sql);
	if (pr.error != NULL) {
		if (pr.error->message != NULL && strcmp(pr.error->message, "out of memory") == 0)
			ok = cl_oom(out);
		goto cleanup; /* PostgreSQL reports the syntax error itself */
	}
	if (pr.parse_tree == NULL) {
		ok = cl_oom(out);
		goto cleanup;
	}
	if (!json_parse(pr.parse_tree, strlen(pr.parse_tree), &cl_json_limits, &tree, err,
	                sizeof(err))) {
		if (strcmp(err, "out of memory") == 0)
			ok = cl_oom(out);
		else
			cl_uninspected(cl, sql, len, "parse tree too large", out);
		goto cleanup;
	}
	w = malloc(sizeof(*w));
	schemas = malloc(sizeof(w->schemas));
	if (w == NULL || schemas == NULL) {
		ok = cl_oom(out);
		goto cleanup;
	}
	nschemas = classifier_path_schemas(path != NULL ? path->search_path : NULL,
	                                   path != NULL ? path->user : NULL, schemas, CL_MAX_PATH);
	stmts = json_get(tree, "stmts");
	for (i = 0; stmts != NULL && stmts->kind == JSON_ARRAY && i < stmts->count; i++) {
		const struct json_value *raw = stmts->items[i], *stmt, *v;
		struct stmt_class one;
		int loc = 0, slen = 0;

		stmt = json_get(raw, "stmt");
		if (stmt == NULL || stmt->kind != JSON_OBJECT || stmt->count != 1)
			continue;
		memset(w, 0, sizeof(*w));
		w->cl = cl;
		w->db = cl_find_database(cl, database);
		w->database = database;
		w->path = path;
		if (nschemas > 0) {
			memcpy(w->schemas, schemas, (size_t)nschemas * sizeof(schemas[0]));
			w->nschemas = nschemas;
		}
		cl_visit(w, stmt);
		cl_class_init(&one);
		cl_decide(w, stmt->keys[0], stmt->items[0], &one);
		if (strcmp(stmt->keys[0], "TransactionStmt") == 0)
			out->transaction_control = true;
		else if (strcmp(stmt->keys[0], "CopyStmt") == 0 &&
		         cl_copy_from_client(stmt->items[0]))
			out->copy_from_client = true;
		else if (strcmp(stmt->keys[0], "DeallocateStmt") == 0)
			out->deallocate = true;
		one.transaction_control = out->transaction_control;
		one.copy_from_client = out->copy_from_client;
		one.deallocate = out->deallocate;
		out->nstatements++;
		if (one.verdict == STMT_MUTATION)
			out->nmutations++;
		/* the enum is ordered PASS < MUTATION < REJECT: keep the first strongest */
		if (one.verdict <= out->verdict)
			continue;
		v = json_get(raw, "stmt_location");
		if (v != NULL && v->kind == JSON_NUMBER)
			loc = (int)v->number;
		v = json_get(raw, "stmt_len");
		if (v != NULL && v->kind == JSON_NUMBER)
			slen = (int)v->number;
		cl_trim(sql, len, &loc, &slen);
		one.stmt_index = out->nstatements - 1;
		one.stmt_location = loc;
		one.stmt_len = slen;
		one.nstatements = out->nstatements;
		one.nmutations = out->nmutations;
		*out = one;
	}
cleanup:
	free(schemas);
	free(w);
	json_free(tree);
	pg_query_free_parse_result(pr);
	return ok;
}

/* Whether the word at s[i..len) is word (given in lower case), in any case, and nothing longer. */
static inline bool cl_token_is(const char *s, size_t len, size_t i, const char *word)
{
	size_t n;

	for (n = 0; word[n] != '\0'; n++)
		if (i + n >= len || cl_lower_tab[(unsigned char)s[i + n]] != (unsigned char)word[n])
			return false;
	return i + n == len || !cl_is_ident_char((unsigned char)s[i + n]);
}

/* Appends text to out[0..size) at *used, NUL-terminated; false when it does not fit. */
static bool cl_put(char *out, size_t size, size_t *used, const char *text)
{
	size_t n = strlen(text);

	if (*used + n + 1 > size)
		return false;
	memcpy(out + *used, text, n + 1);
	*used += n;
	return true;
}

/* Appends one element of a list setting, quoted as PostgreSQL's quote_identifier() would. */
static bool cl_put_list_item(char *out, size_t size, size_t *used, const char *item)
{
	bool plain = item[0] != '\0' && !(item[0] >= '0' && item[0] <= '9');

	for (const char *p = item; plain && *p; p++)
		plain = (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_';
	if (*used > 0 && !cl_put(out, size, used, ", "))
		return false;
	if (plain)
		return cl_put(out, size, used, item);
	if (!cl_put(out, size, used, "\""))
		return false;
	for (const char *p = item; *p; p++) {
		char one[3] = {*p, *p == '"' ? '"' : '\0', '\0'};
		if (!cl_put(out, size, used, one))
			return false;
	}
	return cl_put(out, size, used, "\"");
}

enum classifier_path_change classifier_path_change(const char *sql, size_t len, char *value,
                                                   size_t size, bool *local)
{
	enum classifier_path_change change = CL_PATH_NONE;
	struct json_value *tree = NULL;
	const struct json_value *stmts;
	PgQueryParseResult pr;
	char err[96];
	size_t n, start;
	bool is_set, is_reset, is_discard;

	*local = false;
	if (size > 0)
		value[0] = '\0';
	if (sql == NULL || len == 0 || sql[len] != '\0')
		return CL_PATH_NONE;
	/*
	 * Every query passes here: its first word decides, then one scan of the text. The word's
	 * first letter picks the one keyword it may be (sql[len] is the NUL when there is none).
	 */
	start = cl_is_ident_start((unsigned char)sql[0]) ? 0 : cl_skip_to_token(sql, len, 0, false);
	is_set = is_reset = is_discard = false;
	switch (cl_lower_tab[(unsigned char)sql[start]]) {
	case 's':
		is_set = cl_token_is(sql, len, start, "set");
		break;
	case 'r':
		is_reset = cl_token_is(sql, len, start, "reset");
		break;
	case 'd':
		is_discard = cl_token_is(sql, len, start, "discard");
		break;
	default:
		break;
	}
	if (!is_set && !is_reset && !is_discard)
		return CL_PATH_NONE;
	if (memchr(sql, '\0', len) != NULL)
		return CL_PATH_NONE;
	if (!((is_set || is_reset) && cl_contains_ci(sql, len, "search_path")) &&
	    !((is_reset || is_discard) && cl_contains_ci(sql, len, "all")))
		return CL_PATH_NONE;
	if (len > CL_MAX_INSPECT || cl_prescan(sql, len).chain > CL_MAX_CHAIN)
		return CL_PATH_NONE;
	pr = pg_query_parse(sql);
	if (pr.error != NULL || pr.parse_tree == NULL ||
	    !json_parse(pr.parse_tree, strlen(pr.parse_tree), &cl_json_limits, &tree, err,
	                sizeof(err)))
		goto done;
	stmts = json_get(tree, "stmts");
	for (size_t i = 0; stmts != NULL && stmts->kind == JSON_ARRAY && i < stmts->count; i++) {
		const struct json_value *stmt = json_get(stmts->items[i], "stmt");
		const struct json_value *set = json_get(stmt, "VariableSetStmt"), *args, *loc;
		const char *kind = json_get_string(set, "kind"),
		           *name = json_get_string(set, "name");
		const char *target = json_get_string(json_get(stmt, "DiscardStmt"), "target");

		if (target != NULL && strcmp(target, "DISCARD_ALL") == 0) {
			change = CL_PATH_DEFAULT;
			*local = false;
			continue;
		}
		if (kind == NULL)
			continue;
		if (strcmp(kind, "VAR_RESET_ALL") == 0) {
			change = CL_PATH_DEFAULT;
			*local = false;
			continue;
		}
		if (name == NULL || strcmp(name, "search_path") != 0)
			continue;
		loc = json_get(set, "is_local");
		*local = loc != NULL && loc->kind == JSON_BOOL && loc->boolean;
		if (strcmp(kind, "VAR_SET_DEFAULT") == 0 || strcmp(kind, "VAR_RESET") == 0) {
			change = CL_PATH_DEFAULT;
			continue;
		}
		if (strcmp(kind, "VAR_SET_VALUE") != 0)
			continue; /* SET ... FROM CURRENT keeps the value */
		args = json_get(set, "args");
		n = 0;
		change = CL_PATH_SET;
		for (size_t k = 0; args != NULL && args->kind == JSON_ARRAY && k < args->count;
		     k++) {
			const struct json_value *c = json_get(args->items[k], "A_Const"), *iv;
			const char *sv = json_get_string(json_get(c, "sval"), "sval");
			char num[32];

			if (sv == NULL && (iv = json_get(json_get(c, "ival"), "ival")) != NULL &&
			    iv->kind == JSON_NUMBER) {
				snprintf(num, sizeof(num), "%lld", (long long)iv->number);
				sv = num;
			}
			if (sv == NULL || !cl_put_list_item(value, size, &n, sv)) {
				change = CL_PATH_NONE; /* not a value the session could hold here */
				break;
			}
		}
	}
done:
	if (change != CL_PATH_SET && size > 0)
		value[0] = '\0';
	json_free(tree);
	pg_query_free_parse_result(pr);
	return change;
}

int classifier_split(const char *sql, int *starts, int *lens, int max)
{
	PgQuerySplitResult r;
	size_t len;
	int n = 0, k;

	if (sql == NULL)
		return 0;
	len = strlen(sql);
	if (len > INT32_MAX / 2)
		return -1;
	r = pg_query_split_with_parser(sql);
	if (r.error != NULL) {
		pg_query_free_split_result(r);
		r = pg_query_split_with_scanner(sql);
	}
	if (r.error != NULL) {
		bool oom =
		        r.error->message != NULL && strcmp(r.error->message, "out of memory") == 0;
		int loc = 0, slen = (int)len;

		pg_query_free_split_result(r);
		if (oom)
			return -1;
		/* not even the lexer copes (an unterminated literal): one statement */
		cl_trim(sql, len, &loc, &slen);
		if (slen == 0)
			return 0;
		if (max > 0) {
			starts[0] = loc;
			lens[0] = slen;
		}
		return 1;
	}
	for (k = 0; k < r.n_stmts; k++) {
		int loc = r.stmts[k]->stmt_location, slen = r.stmts[k]->stmt_len;

		cl_trim(sql, len, &loc, &slen);
		if (slen == 0)
			continue;
		if (n < max) {
			starts[n] = loc;
			lens[n] = slen;
		}
		n++;
	}
	pg_query_free_split_result(r);
	return n;
}
