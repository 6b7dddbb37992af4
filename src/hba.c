/*
 * hba — see include/hba.h. Files are read whole (bounded), split into lines, and each line into
 * fields of comma-separated tokens, as PostgreSQL's hba tokenizer does: a field ends at
 * whitespace that does not follow a comma, "quoted" text keeps spaces, commas and keywords
 * literal, and "" inside quotes is one quote. Every error carries file and line.
 */
#include "hba.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <regex.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum rule_kind {
	RULE_LOCAL,
	RULE_HOST,
	RULE_HOSTSSL,
	RULE_HOSTNOSSL,
};

#define NL_ALL         1u
#define NL_SAMEUSER    2u
#define NL_REPLICATION 4u

struct namelist {
	unsigned flags;
	char **names;
	int n, cap;
};

struct hba_rule {
	enum rule_kind kind;
	bool any_addr;
	int af;
	uint8_t addr[16], mask[16];
	struct namelist db, user;
	enum hba_method method;
	char *map;
	int line;
};

struct hba {
	struct hba_rule *rules;
	int n, cap;
};

struct ident_line {
	char *map;
	char *system_user; /* literal, when re is unset */
	bool is_re;
	regex_t re;
	char *db_user;
};

struct ident {
	struct ident_line *lines;
	int n, cap;
};

/* A token of a field: its text and whether any of it was quoted. */
struct tok {
	char *s;
	bool quoted;
};

struct field {
	struct tok *t;
	int n, cap;
};

const char *hba_method_str(enum hba_method m)
{
	switch (m) {
	case HBA_TRUST:
		return "trust";
	case HBA_REJECT:
		return "reject";
	case HBA_MD5:
		return "md5";
	case HBA_PASSWORD:
		return "password";
	case HBA_SCRAM:
		return "scram-sha-256";
	case HBA_CERT:
		return "cert";
	case HBA_PEER:
		return "peer";
	}
	return "?";
}

/* ---- reading files ---- */

static char *read_whole(const char *path, size_t max, size_t *len, char *why, size_t whysize)
{
	struct stat st;
	char *buf = NULL;
	size_t got = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0) {
		snprintf(why, whysize, "cannot open %s: %s", path, strerror(errno));
		return NULL;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		snprintf(why, whysize, "%s is not a regular file", path);
		goto fail;
	}
	if ((uint64_t)st.st_size > max) {
		snprintf(why, whysize, "%s is larger than %zu bytes", path, max);
		goto fail;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (buf == NULL) {
		snprintf(why, whysize, "out of memory reading %s", path);
		goto fail;
	}
	while (got < (size_t)st.st_size) {
		ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	buf[got] = '\0';
	close(fd);
	*len = got;
	return buf;
fail:
	free(buf);
	close(fd);
	return NULL;
}

/* path of fn relative to the directory of parent (fn itself when absolute) */
static char *relative_to(const char *parent, const char *fn)
{
	const char *slash = strrchr(parent, '/');
	size_t dirlen;
	char *out;

	if (fn[0] == '/' || slash == NULL)
		return strdup(fn);
	dirlen = (size_t)(slash - parent);
	out = malloc(dirlen + 1 + strlen(fn) + 1);
	if (out == NULL)
		return NULL;
	memcpy(out, parent, dirlen);
	out[dirlen] = '/';
	strcpy(out + dirlen + 1, fn);
	return out;
}

/* ---- tokenizer ---- */

static void field_clear(struct field *f)
{
	for (int i = 0; i < f->n; i++)
		free(f->t[i].s);
	free(f->t);
	memset(f, 0, sizeof(*f));
}

static bool field_add(struct field *f, const char *s, size_t len, bool quoted)
{
	char *copy;

	if (f->n == f->cap) {
		int cap = f->cap ? 2 * f->cap : 4;
		struct tok *t = realloc(f->t, (size_t)cap * sizeof(*t));
		if (t == NULL)
			return false;
		f->t = t;
		f->cap = cap;
	}
	copy = malloc(len + 1);
	if (copy == NULL)
		return false;
	memcpy(copy, s, len);
	copy[len] = '\0';
	f->t[f->n].s = copy;
	f->t[f->n].quoted = quoted;
	f->n++;
	return true;
}

enum next_result {
	NEXT_FIELD,
	NEXT_END,
	NEXT_ERROR,
};

/*
 * Reads the next field of the line at *p into f (emptied first). The line ends at '\0', '\n' or
 * an unquoted '#'.
 */
static enum next_result next_field(const char **p, struct field *f, char *why, size_t whysize)
{
	const char *s = *p;
	char buf[HBA_MAX_LINE + 1];

	field_clear(f);
	while (*s == ' ' || *s == '\t' || *s == '\r')
		s++;
	if (*s == '\0' || *s == '\n' || *s == '#') {
		*p = s;
		return NEXT_END;
	}
	for (;;) {
		size_t n = 0;
		bool quoted = false;

		while (*s && *s != '\n' && *s != ' ' && *s != '\t' && *s != '\r' && *s != ',' &&
		       *s != '#') {
			if (*s == '"') {
				quoted = true;
				s++;
				for (;;) {
					if (*s == '\0' || *s == '\n') {
						snprintf(why, whysize,
						         "unterminated quoted string");
						return NEXT_ERROR;
					}
					if (n >= HBA_MAX_LINE) {
						snprintf(why, whysize, "item too long");
						return NEXT_ERROR;
					}
					if (*s == '"' && s[1] == '"') {
						buf[n++] = '"';
						s += 2;
						continue;
					}
					if (*s == '"') {
						s++;
						break;
					}
					buf[n++] = *s++;
				}
				continue;
			}
			if (n >= HBA_MAX_LINE) {
				snprintf(why, whysize, "item too long");
				return NEXT_ERROR;
			}
			buf[n++] = *s++;
		}
		if (n == 0 && !quoted) {
			snprintf(why, whysize, "empty item in a list");
			return NEXT_ERROR;
		}
		if (!field_add(f, buf, n, quoted)) {
			snprintf(why, whysize, "out of memory");
			return NEXT_ERROR;
		}
		if (*s != ',')
			break;
		s++;
		while (*s == ' ' || *s == '\t' || *s == '\r')
			s++;
	}
	*p = s;
	return NEXT_FIELD;
}

static bool is_kw(const struct tok *t, const char *kw)
{
	return !t->quoted && strcmp(t->s, kw) == 0;
}

/* ---- name lists ---- */

static void namelist_clear(struct namelist *nl)
{
	for (int i = 0; i < nl->n; i++)
		free(nl->names[i]);
	free(nl->names);
	memset(nl, 0, sizeof(*nl));
}

static bool namelist_add(struct namelist *nl, const char *name)
{
	if (nl->n == nl->cap) {
		int cap = nl->cap ? 2 * nl->cap : 4;
		char **names = realloc(nl->names, (size_t)cap * sizeof(*names));
		if (names == NULL)
			return false;
		nl->names = names;
		nl->cap = cap;
	}
	nl->names[nl->n] = strdup(name);
	if (nl->names[nl->n] == NULL)
		return false;
	nl->n++;
	return true;
}

static bool add_names(struct namelist *nl, const struct field *f, bool is_db, const char *file,
                      int depth, char *why, size_t whysize, bool *located);

/* @file: names separated by whitespace, commas or newlines, with the same keywords. */
/* *located: the error in why already names the included file and its line */
static bool include_names(struct namelist *nl, const char *from, const char *fn, bool is_db,
                          int depth, char *why, size_t whysize, bool *located)
{
	char sub[512];
	char *path, *text;
	size_t len;
	const char *p;
	struct field f = {0};
	bool ok = false;
	int line = 1;

	if (depth >= HBA_MAX_INCLUDE_DEPTH) {
		snprintf(why, whysize, "@%s: inclusions nested deeper than %d", fn,
		         HBA_MAX_INCLUDE_DEPTH);
		return false;
	}
	path = relative_to(from, fn);
	if (path == NULL) {
		snprintf(why, whysize, "out of memory");
		return false;
	}
	text = read_whole(path, HBA_MAX_FILE_SIZE, &len, why, whysize);
	if (text == NULL)
		goto out;
	if (memchr(text, '\0', len) != NULL) {
		snprintf(why, whysize, "%s holds a NUL byte", path);
		goto out;
	}
	p = text;
	while (*p) {
		enum next_result r = next_field(&p, &f, sub, sizeof(sub));
		if (r == NEXT_ERROR) {
			snprintf(why, whysize, "%.200s:%d: %.280s", path, line, sub);
			*located = true;
			goto out;
		}
		if (r == NEXT_END) {
			while (*p && *p != '\n')
				p++;
			if (*p == '\n') {
				p++;
				line++;
			}
			continue;
		}
		{
			bool inner = false;
			if (!add_names(nl, &f, is_db, path, depth + 1, sub, sizeof(sub), &inner)) {
				if (inner)
					snprintf(why, whysize, "%s", sub);
				else
					snprintf(why, whysize, "%.200s:%d: %.280s", path, line,
					         sub);
				*located = true;
				goto out;
			}
		}
	}
	ok = true;
out:
	field_clear(&f);
	free(text);
	free(path);
	return ok;
}

static bool add_names(struct namelist *nl, const struct field *f, bool is_db, const char *file,
                      int depth, char *why, size_t whysize, bool *located)
{
	for (int i = 0; i < f->n; i++) {
		const struct tok *t = &f->t[i];

		if (is_kw(t, "all")) {
			nl->flags |= NL_ALL;
		} else if (is_db && is_kw(t, "sameuser")) {
			nl->flags |= NL_SAMEUSER;
		} else if (is_db && is_kw(t, "replication")) {
			nl->flags |= NL_REPLICATION;
		} else if (is_db && (is_kw(t, "samerole") || is_kw(t, "samegroup"))) {
			snprintf(why, whysize, "%s is not supported", t->s);
			return false;
		} else if (!t->quoted && t->s[0] == '+') {
			snprintf(why, whysize, "group membership (%s) is not supported", t->s);
			return false;
		} else if (!t->quoted && t->s[0] == '/') {
			snprintf(why, whysize, "regular expressions (%s) are not supported", t->s);
			return false;
		} else if (!t->quoted && t->s[0] == '@') {
			if (t->s[1] == '\0') {
				snprintf(why, whysize, "@ without a file name");
				return false;
			}
			if (!include_names(nl, file, t->s + 1, is_db, depth, why, whysize, located))
				return false;
		} else if (!namelist_add(nl, t->s)) {
			snprintf(why, whysize, "out of memory");
			return false;
		}
	}
	return true;
}

static bool namelist_has(const struct namelist *nl, const char *name)
{
	for (int i = 0; i < nl->n; i++)
		if (strcmp(nl->names[i], name) == 0)
			return true;
	return false;
}

/* ---- addresses ---- */

static bool parse_cidr(struct hba_rule *r, const char *text, char *why, size_t whysize)
{
	char addr[128];
	const char *slash = strchr(text, '/');
	size_t alen = slash ? (size_t)(slash - text) : strlen(text);
	int bits, max;
	char *end;
	long v;

	if (alen >= sizeof(addr)) {
		snprintf(why, whysize, "invalid address \"%.100s\"", text);
		return false;
	}
	memcpy(addr, text, alen);
	addr[alen] = '\0';
	if (inet_pton(AF_INET, addr, r->addr) == 1) {
		r->af = AF_INET;
	} else if (inet_pton(AF_INET6, addr, r->addr) == 1) {
		r->af = AF_INET6;
	} else {
		snprintf(why, whysize,
		         "invalid IP address \"%.100s\" (host names, samehost and samenet are not "
		         "supported)",
		         addr);
		return false;
	}
	max = r->af == AF_INET ? 32 : 128;
	if (slash == NULL)
		return true; /* a separate mask follows */
	errno = 0;
	v = strtol(slash + 1, &end, 10);
	if (slash[1] == '\0' || *end != '\0' || errno != 0 || v < 0 || v > max) {
		snprintf(why, whysize, "invalid CIDR mask in address \"%.100s\"", text);
		return false;
	}
	bits = (int)v;
	memset(r->mask, 0, sizeof(r->mask));
	for (int i = 0; i < bits / 8; i++)
		r->mask[i] = 0xff;
	if (bits % 8)
		r->mask[bits / 8] = (uint8_t)(0xff << (8 - bits % 8));
	return true;
}

static bool mask_is_contiguous(const uint8_t *mask, int len)
{
	bool zero_seen = false;

	for (int i = 0; i < len * 8; i++) {
		bool bit = (mask[i / 8] >> (7 - i % 8)) & 1;
		if (bit && zero_seen)
			return false;
		if (!bit)
			zero_seen = true;
	}
	return true;
}

static bool addr_matches(const struct hba_rule *r, const struct sockaddr *sa)
{
	const uint8_t *a;
	int len;
	uint8_t v4[4];

	if (r->any_addr)
		return sa->sa_family == AF_INET || sa->sa_family == AF_INET6;
	if (sa->sa_family == AF_INET) {
		if (r->af != AF_INET)
			return false;
		a = (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr;
		len = 4;
	} else if (sa->sa_family == AF_INET6) {
		const struct in6_addr *a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
		if (r->af == AF_INET && IN6_IS_ADDR_V4MAPPED(a6)) {
			memcpy(v4, &a6->s6_addr[12], 4);
			a = v4;
			len = 4;
		} else if (r->af == AF_INET6) {
			a = a6->s6_addr;
			len = 16;
		} else {
			return false;
		}
	} else {
		return false;
	}
	for (int i = 0; i < len; i++)
		if ((a[i] & r->mask[i]) != (r->addr[i] & r->mask[i]))
			return false;
	return true;
}

/* ---- rules ---- */

static void rule_clear(struct hba_rule *r)
{
	namelist_clear(&r->db);
	namelist_clear(&r->user);
	free(r->map);
}

void hba_free(struct hba *hba)
{
	if (hba == NULL)
		return;
	for (int i = 0; i < hba->n; i++)
		rule_clear(&hba->rules[i]);
	free(hba->rules);
	free(hba);
}

int hba_rule_count(const struct hba *hba)
{
	return hba ? hba->n : 0;
}

static const struct {
	const char *name;
	enum hba_method method;
} methods[] = {
        {"trust", HBA_TRUST},       {"reject", HBA_REJECT},       {"md5", HBA_MD5},
        {"password", HBA_PASSWORD}, {"scram-sha-256", HBA_SCRAM}, {"cert", HBA_CERT},
        {"peer", HBA_PEER},
};

static bool one_token(const struct field *f, const char *what, char *why, size_t whysize)
{
	if (f->n != 1) {
		snprintf(why, whysize, "%s must be a single item, not a list", what);
		return false;
	}
	return true;
}

/* Parses one line into r (zeroed by the caller). *empty: the line held no rule. */
static bool parse_rule(struct hba_rule *r, const char *line, const char *file,
                       const struct hba_opts *opts, bool *empty, char *why, size_t whysize)
{
	struct field f = {0};
	const char *p = line;
	enum next_result nr;
	const char *kind;
	bool ok = false, located = false;

	*empty = false;
	nr = next_field(&p, &f, why, whysize);
	if (nr == NEXT_END) {
		*empty = true;
		return true;
	}
	if (nr == NEXT_ERROR || !one_token(&f, "the connection type", why, whysize))
		goto out;
	kind = f.t[0].s;
	if (is_kw(&f.t[0], "local"))
		r->kind = RULE_LOCAL;
	else if (is_kw(&f.t[0], "host"))
		r->kind = RULE_HOST;
	else if (is_kw(&f.t[0], "hostssl"))
		r->kind = RULE_HOSTSSL;
	else if (is_kw(&f.t[0], "hostnossl"))
		r->kind = RULE_HOSTNOSSL;
	else {
		snprintf(why, whysize, "invalid connection type \"%.60s\"", kind);
		goto out;
	}
	if (r->kind == RULE_HOSTSSL && !opts->client_tls) {
		snprintf(why, whysize,
		         "hostssl needs client TLS, which this build does not offer: the line "
		         "would never match");
		goto out;
	}
	/* database */
	nr = next_field(&p, &f, why, whysize);
	if (nr != NEXT_FIELD) {
		if (nr == NEXT_END)
			snprintf(why, whysize, "end of line before the database field");
		goto out;
	}
	if (!add_names(&r->db, &f, true, file, 0, why, whysize, &located))
		goto out;
	/* user */
	nr = next_field(&p, &f, why, whysize);
	if (nr != NEXT_FIELD) {
		if (nr == NEXT_END)
			snprintf(why, whysize, "end of line before the user field");
		goto out;
	}
	if (!add_names(&r->user, &f, false, file, 0, why, whysize, &located))
		goto out;
	/* address */
	if (r->kind != RULE_LOCAL) {
		nr = next_field(&p, &f, why, whysize);
		if (nr != NEXT_FIELD) {
			if (nr == NEXT_END)
				snprintf(why, whysize, "end of line before the address field");
			goto out;
		}
		if (!one_token(&f, "the address", why, whysize))
			goto out;
		if (is_kw(&f.t[0], "all")) {
			r->any_addr = true;
		} else {
			bool cidr = strchr(f.t[0].s, '/') != NULL;
			if (!parse_cidr(r, f.t[0].s, why, whysize))
				goto out;
			if (!cidr) {
				/* a separate netmask */
				uint8_t m[16] = {0};
				nr = next_field(&p, &f, why, whysize);
				if (nr != NEXT_FIELD) {
					if (nr == NEXT_END)
						snprintf(why, whysize,
						         "end of line before the netmask field");
					goto out;
				}
				if (!one_token(&f, "the netmask", why, whysize))
					goto out;
				if (inet_pton(r->af, f.t[0].s, m) != 1 ||
				    !mask_is_contiguous(m, r->af == AF_INET ? 4 : 16)) {
					snprintf(why, whysize, "invalid IP mask \"%.60s\"",
					         f.t[0].s);
					goto out;
				}
				memcpy(r->mask, m, sizeof(m));
			}
		}
	}
	/* method */
	nr = next_field(&p, &f, why, whysize);
	if (nr != NEXT_FIELD) {
		if (nr == NEXT_END)
			snprintf(why, whysize, "end of line before the authentication method");
		goto out;
	}
	if (!one_token(&f, "the authentication method", why, whysize))
		goto out;
	{
		size_t i;
		for (i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
			if (is_kw(&f.t[0], methods[i].name))
				break;
		if (i == sizeof(methods) / sizeof(methods[0])) {
			snprintf(why, whysize, "unsupported authentication method \"%.60s\"",
			         f.t[0].s);
			goto out;
		}
		r->method = methods[i].method;
	}
	if (r->method == HBA_CERT && !opts->client_tls) {
		snprintf(why, whysize,
		         "cert needs client TLS, which this build does not offer: the line would "
		         "refuse every client");
		goto out;
	}
	if (r->method == HBA_PEER && r->kind != RULE_LOCAL) {
		snprintf(why, whysize, "peer authentication is only supported on local sockets");
		goto out;
	}
	/* options */
	for (;;) {
		const char *eq;
		nr = next_field(&p, &f, why, whysize);
		if (nr == NEXT_END)
			break;
		if (nr == NEXT_ERROR || !one_token(&f, "an option", why, whysize))
			goto out;
		eq = strchr(f.t[0].s, '=');
		if (eq == NULL || strncmp(f.t[0].s, "map=", 4) != 0 || eq[1] == '\0') {
			snprintf(why, whysize, "unsupported authentication option \"%.60s\"",
			         f.t[0].s);
			goto out;
		}
		if (r->method != HBA_PEER && r->method != HBA_CERT) {
			snprintf(why, whysize, "map= is only valid for peer and cert");
			goto out;
		}
		free(r->map);
		r->map = strdup(eq + 1);
		if (r->map == NULL) {
			snprintf(why, whysize, "out of memory");
			goto out;
		}
	}
	ok = true;
out:
	(void)located; /* the caller prefixes file and line either way */
	field_clear(&f);
	return ok;
}

/*
 * Hands each line of text (name: the file, for messages) to add, NUL-terminated with its
 * number; add sets err when it fails. False, err set, on a NUL byte, a line longer than
 * HBA_MAX_LINE or add's failure.
 */
static bool each_line(const char *text, size_t len, const char *name, char *err, size_t errsize,
                      bool (*add)(void *set, char *line, int lineno, const char *name, char *err,
                                  size_t errsize),
                      void *set)
{
	char *line = malloc(HBA_MAX_LINE + 1);
	size_t pos = 0;
	int lineno = 0;
	bool ok = false;

	if (line == NULL) {
		snprintf(err, errsize, "%s: out of memory", name);
		return false;
	}
	if (memchr(text, '\0', len) != NULL) {
		snprintf(err, errsize, "%s holds a NUL byte", name);
		goto out;
	}
	while (pos < len) {
		const char *nl = memchr(text + pos, '\n', len - pos);
		size_t n = nl ? (size_t)(nl - (text + pos)) : len - pos;

		lineno++;
		if (n > HBA_MAX_LINE) {
			snprintf(err, errsize, "%s:%d: line longer than %d bytes", name, lineno,
			         HBA_MAX_LINE);
			goto out;
		}
		memcpy(line, text + pos, n);
		line[n] = '\0';
		pos += n + (nl ? 1 : 0);
		if (!add(set, line, lineno, name, err, errsize))
			goto out;
	}
	ok = true;
out:
	free(line);
	return ok;
}

struct hba_loading {
	struct hba *hba;
	const struct hba_opts *opts;
};

/* each_line()'s add for an hba file: one rule more (none for an empty line). */
static bool hba_add_line(void *set, char *line, int lineno, const char *name, char *err,
                         size_t errsize)
{
	struct hba_loading *ld = set;
	struct hba *hba = ld->hba;
	struct hba_rule r;
	char why[512];
	bool empty;

	memset(&r, 0, sizeof(r));
	r.line = lineno;
	if (!parse_rule(&r, line, name, ld->opts, &empty, why, sizeof(why))) {
		rule_clear(&r);
		snprintf(err, errsize, "%s:%d: %s", name, lineno, why);
		return false;
	}
	if (empty)
		return true;
	if (hba->n == hba->cap) {
		int cap = hba->cap ? 2 * hba->cap : 16;
		struct hba_rule *rules = realloc(hba->rules, (size_t)cap * sizeof(*rules));
		if (rules == NULL) {
			rule_clear(&r);
			snprintf(err, errsize, "%s: out of memory", name);
			return false;
		}
		hba->rules = rules;
		hba->cap = cap;
	}
	hba->rules[hba->n++] = r;
	return true;
}

struct hba *hba_load_buffer(const char *text, size_t len, const char *name,
                            const struct hba_opts *opts, char *err, size_t errsize)
{
	struct hba *hba = calloc(1, sizeof(*hba));
	struct hba_loading ld = {hba, opts};

	if (hba == NULL) {
		snprintf(err, errsize, "%s: out of memory", name);
		return NULL;
	}
	if (!each_line(text, len, name, err, errsize, hba_add_line, &ld)) {
		hba_free(hba);
		return NULL;
	}
	return hba;
}

struct hba *hba_load(const char *path, const struct hba_opts *opts, char *err, size_t errsize)
{
	size_t len;
	char why[512];
	char *text = read_whole(path, HBA_MAX_FILE_SIZE, &len, why, sizeof(why));
	struct hba *hba;

	if (text == NULL) {
		snprintf(err, errsize, "%s", why);
		return NULL;
	}
	hba = hba_load_buffer(text, len, path, opts, err, errsize);
	free(text);
	return hba;
}

static bool names_match(const struct namelist *nl, const char *name, const struct hba_conn *c,
                        bool is_db)
{
	if (is_db) {
		/* "all" does not take in replication connections; "replication" only those */
		if (c->replication)
			return (nl->flags & NL_REPLICATION) != 0;
		if ((nl->flags & NL_SAMEUSER) && strcmp(c->database, c->user) == 0)
			return true;
	}
	if (nl->flags & NL_ALL)
		return true;
	return namelist_has(nl, name);
}

void hba_eval(const struct hba *hba, const struct hba_conn *c, struct hba_verdict *out)
{
	bool is_unix = c->addr->sa_family == AF_UNIX;

	out->method = HBA_REJECT;
	out->map = NULL;
	out->line = 0;
	if (hba == NULL)
		return;
	for (int i = 0; i < hba->n; i++) {
		const struct hba_rule *r = &hba->rules[i];

		if (is_unix != (r->kind == RULE_LOCAL))
			continue;
		if (r->kind == RULE_HOSTSSL && !c->tls)
			continue;
		if (r->kind == RULE_HOSTNOSSL && c->tls)
			continue;
		if (!is_unix && !addr_matches(r, c->addr))
			continue;
		if (!names_match(&r->db, c->database, c, true) ||
		    !names_match(&r->user, c->user, c, false))
			continue;
		out->method = r->method;
		out->map = r->map;
		out->line = r->line;
		return;
	}
}

/* ---- ident maps ---- */

void ident_free(struct ident *id)
{
	if (id == NULL)
		return;
	for (int i = 0; i < id->n; i++) {
		struct ident_line *l = &id->lines[i];
		free(l->map);
		free(l->system_user);
		free(l->db_user);
		if (l->is_re)
			regfree(&l->re);
	}
	free(id->lines);
	free(id);
}

static bool parse_ident_line(struct ident_line *l, const char *line, bool *empty, char *why,
                             size_t whysize)
{
	struct field f = {0};
	const char *p = line;
	char *vals[3] = {NULL, NULL, NULL};
	bool quoted[3] = {false, false, false};
	bool ok = false;
	int i;

	*empty = false;
	for (i = 0; i < 4; i++) {
		enum next_result nr = next_field(&p, &f, why, whysize);
		if (nr == NEXT_ERROR)
			goto out;
		if (nr == NEXT_END)
			break;
		if (i == 3) {
			snprintf(why, whysize, "extra fields after the database user name");
			goto out;
		}
		if (!one_token(&f, "an ident map field", why, whysize))
			goto out;
		vals[i] = strdup(f.t[0].s);
		quoted[i] = f.t[0].quoted;
		if (vals[i] == NULL) {
			snprintf(why, whysize, "out of memory");
			goto out;
		}
	}
	if (i == 0) {
		*empty = true;
		ok = true;
		goto out;
	}
	if (i < 3) {
		snprintf(why, whysize, "expected MAPNAME SYSTEM-USER DATABASE-USER");
		goto out;
	}
	if (!quoted[2] && vals[2][0] == '+') {
		snprintf(why, whysize, "group membership (%s) is not supported", vals[2]);
		goto out;
	}
	if (vals[1][0] == '/') {
		int rc = regcomp(&l->re, vals[1] + 1, REG_EXTENDED);
		if (rc != 0) {
			char buf[128];
			regerror(rc, &l->re, buf, sizeof(buf));
			snprintf(why, whysize, "invalid regular expression \"%.60s\": %s",
			         vals[1] + 1, buf);
			goto out;
		}
		l->is_re = true;
	}
	l->map = vals[0];
	l->system_user = vals[1];
	l->db_user = vals[2];
	vals[0] = vals[1] = vals[2] = NULL;
	ok = true;
out:
	for (i = 0; i < 3; i++)
		free(vals[i]);
	field_clear(&f);
	return ok;
}

/* each_line()'s add for an ident file: one mapping more (none for an empty line). */
static bool ident_add_line(void *set, char *line, int lineno, const char *name, char *err,
                           size_t errsize)
{
	struct ident *id = set;
	struct ident_line l;
	char why[512];
	bool empty;

	memset(&l, 0, sizeof(l));
	if (!parse_ident_line(&l, line, &empty, why, sizeof(why))) {
		snprintf(err, errsize, "%s:%d: %s", name, lineno, why);
		return false;
	}
	if (empty)
		return true;
	if (id->n == id->cap) {
		int cap = id->cap ? 2 * id->cap : 16;
		struct ident_line *lines = realloc(id->lines, (size_t)cap * sizeof(*lines));
		if (lines == NULL) {
			free(l.map);
			free(l.system_user);
			free(l.db_user);
			if (l.is_re)
				regfree(&l.re);
			snprintf(err, errsize, "%s: out of memory", name);
			return false;
		}
		id->lines = lines;
		id->cap = cap;
	}
	id->lines[id->n++] = l;
	return true;
}

struct ident *ident_load_buffer(const char *text, size_t len, const char *name, char *err,
                                size_t errsize)
{
	struct ident *id = calloc(1, sizeof(*id));

	if (id == NULL) {
		snprintf(err, errsize, "%s: out of memory", name);
		return NULL;
	}
	if (!each_line(text, len, name, err, errsize, ident_add_line, id)) {
		ident_free(id);
		return NULL;
	}
	return id;
}

struct ident *ident_load(const char *path, char *err, size_t errsize)
{
	size_t len;
	char why[512];
	char *text = read_whole(path, HBA_MAX_FILE_SIZE, &len, why, sizeof(why));
	struct ident *id;

	if (text == NULL) {
		snprintf(err, errsize, "%s", why);
		return NULL;
	}
	id = ident_load_buffer(text, len, path, err, errsize);
	free(text);
	return id;
}

/* db_user with "\1" replaced by the first group of the match; false if it does not fit. */
static bool substitute(const char *pattern, const char *subject, const regmatch_t *m, char *out,
                       size_t outsize)
{
	const char *ref = strstr(pattern, "\\1");
	size_t pre, glen, post;

	if (ref == NULL) {
		if (strlen(pattern) >= outsize)
			return false;
		strcpy(out, pattern);
		return true;
	}
	if (m[1].rm_so < 0)
		return false;
	pre = (size_t)(ref - pattern);
	glen = (size_t)(m[1].rm_eo - m[1].rm_so);
	post = strlen(ref + 2);
	if (pre + glen + post >= outsize)
		return false;
	memcpy(out, pattern, pre);
	memcpy(out + pre, subject + m[1].rm_so, glen);
	memcpy(out + pre + glen, ref + 2, post + 1);
	return true;
}

bool ident_allows(const struct ident *id, const char *map, const char *system_user,
                  const char *db_user)
{
	if (id == NULL || map == NULL)
		return false;
	for (int i = 0; i < id->n; i++) {
		const struct ident_line *l = &id->lines[i];

		if (strcmp(l->map, map) != 0)
			continue;
		if (l->is_re) {
			regmatch_t m[2];
			char want[512];
			if (regexec(&l->re, system_user, 2, m, 0) != 0)
				continue;
			if (substitute(l->db_user, system_user, m, want, sizeof(want)) &&
			    strcmp(want, db_user) == 0)
				return true;
		} else if (strcmp(l->system_user, system_user) == 0 &&
		           (strcmp(l->db_user, db_user) == 0 || strcmp(l->db_user, "all") == 0)) {
			return true;
		}
	}
	return false;
}
