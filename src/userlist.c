/*
 * userlist — parses pgbouncer's auth_file into a sorted array of (user, password).
 *
 * The file is read whole (a regular file of at most USERLIST_MAX_FILE_SIZE bytes), lines are at
 * most USERLIST_MAX_LINE bytes, and every field is bounded by its line. Entries are sorted by
 * name once, so a lookup during login is a binary search and never touches the disk.
 * Passwords are never logged.
 */
#include "userlist.h"

#include "log.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct userlist_entry {
	char *name;
	char *password;
	size_t seq; /* file order, so that the last line for a name wins after sorting */
};

struct userlist {
	struct userlist_entry *e;
	size_t n, cap;
	int skipped;
	atomic_int refs; /* holders: the workers that use it (userlist_ref()) */
};

const char *userlist_pw_kind_str(enum userlist_pw_kind kind)
{
	switch (kind) {
	case USERLIST_PW_PLAIN:
		return "plain";
	case USERLIST_PW_MD5:
		return "md5";
	case USERLIST_PW_SCRAM:
		return "scram-sha-256";
	}
	return "?";
}

static bool is_b64(const char *s, const char *end)
{
	if (s == end)
		return false;
	for (; s < end; s++) {
		if (!isalnum((unsigned char)*s) && *s != '+' && *s != '/' && *s != '=')
			return false;
	}
	return true;
}

#define SCRAM_PREFIX "SCRAM-SHA-256$"

/* SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>, base64 parts non-empty. */
static bool scram_secret_ok(const char *s)
{
	const char *colon, *dollar, *colon2;
	long iter = 0;

	s += strlen(SCRAM_PREFIX);
	if (!isdigit((unsigned char)*s))
		return false;
	for (; isdigit((unsigned char)*s); s++) {
		iter = iter * 10 + (*s - '0');
		if (iter > INT32_MAX)
			return false;
	}
	if (iter < 1 || *s != ':')
		return false;
	colon = s;
	dollar = strchr(colon, '$');
	if (!dollar || !is_b64(colon + 1, dollar))
		return false;
	colon2 = strchr(dollar, ':');
	if (!colon2 || !is_b64(dollar + 1, colon2))
		return false;
	return is_b64(colon2 + 1, colon2 + 1 + strlen(colon2 + 1));
}

enum userlist_pw_kind userlist_password_kind(const char *pw)
{
	if (strncmp(pw, "md5", 3) == 0 && strlen(pw) == 35) {
		bool hex = true;
		for (const char *s = pw + 3; *s; s++) {
			if (!isxdigit((unsigned char)*s))
				hex = false;
		}
		if (hex)
			return USERLIST_PW_MD5;
	}
	if (strncmp(pw, SCRAM_PREFIX, strlen(SCRAM_PREFIX)) == 0 && scram_secret_ok(pw))
		return USERLIST_PW_SCRAM;
	return USERLIST_PW_PLAIN;
}

/*
 * Reads one "quoted" field starting at *sp into out (at most outsize - 1 bytes); "" is one quote.
 * Advances *sp past the closing quote.
 */
static bool take_field(const char **sp, const char *end, char *out, size_t outsize)
{
	const char *s = *sp;
	size_t n = 0;

	if (s >= end || *s != '"')
		return false;
	for (s++;; s++) {
		if (s >= end)
			return false;
		if (*s == '"') {
			if (s + 1 < end && s[1] == '"') {
				s++;
			} else {
				break;
			}
		}
		if (n + 1 >= outsize)
			return false;
		out[n++] = *s;
	}
	out[n] = '\0';
	*sp = s + 1;
	return true;
}

static bool add_entry(struct userlist *ul, const char *name, const char *password)
{
	struct userlist_entry *grown;

	if (ul->n == ul->cap) {
		size_t cap = ul->cap ? ul->cap * 2 : 16;
		grown = realloc(ul->e, cap * sizeof(*grown));
		if (!grown)
			return false;
		ul->e = grown;
		ul->cap = cap;
	}
	ul->e[ul->n].name = strdup(name);
	ul->e[ul->n].password = strdup(password);
	ul->e[ul->n].seq = ul->n;
	if (!ul->e[ul->n].name || !ul->e[ul->n].password) {
		free(ul->e[ul->n].name);
		free(ul->e[ul->n].password);
		return false;
	}
	ul->n++;
	return true;
}

static int entry_cmp(const void *a, const void *b)
{
	const struct userlist_entry *x = a, *y = b;
	int c = strcmp(x->name, y->name);

	if (c != 0)
		return c;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Sorts by name and keeps only the last line of each name. */
static void sort_dedupe(struct userlist *ul)
{
	size_t out = 0;

	if (ul->n == 0)
		return;
	qsort(ul->e, ul->n, sizeof(ul->e[0]), entry_cmp);
	for (size_t i = 0; i < ul->n; i++) {
		if (i + 1 < ul->n && strcmp(ul->e[i].name, ul->e[i + 1].name) == 0) {
			free(ul->e[i].name);
			free(ul->e[i].password);
			continue;
		}
		ul->e[out++] = ul->e[i];
	}
	ul->n = out;
}

static void warn_line(struct userlist *ul, const char *name, int line, const char *why)
{
	ul->skipped++;
	log_warning("%s:%d: %s, line skipped", name, line, why);
}

struct userlist *userlist_load_buffer(const char *text, size_t len, const char *name)
{
	struct userlist *ul = calloc(1, sizeof(*ul));
	const char *pos = text, *end = text + len;
	char *user = NULL, *pw = NULL;
	int line = 0;

	if (!ul)
		goto oom;
	atomic_init(&ul->refs, 1);
	/* a field is never longer than its line */
	user = malloc(USERLIST_MAX_LINE + 1);
	pw = malloc(USERLIST_MAX_LINE + 1);
	if (!user || !pw)
		goto oom;
	while (pos < end) {
		const char *nl = memchr(pos, '\n', (size_t)(end - pos));
		const char *eol = nl ? nl : end, *s = pos;

		line++;
		pos = nl ? nl + 1 : end;
		if ((size_t)(eol - s) > USERLIST_MAX_LINE) {
			warn_line(ul, name, line, "line too long");
			continue;
		}
		if (memchr(s, '\0', (size_t)(eol - s))) {
			warn_line(ul, name, line, "NUL byte in line");
			continue;
		}
		while (s < eol && isspace((unsigned char)*s))
			s++;
		if (s == eol || *s == ';' || *s == '#')
			continue;
		if (!take_field(&s, eol, user, USERLIST_MAX_LINE + 1)) {
			warn_line(ul, name, line, "expected \"user\" \"password\"");
			continue;
		}
		while (s < eol && (*s == ' ' || *s == '\t'))
			s++;
		if (!take_field(&s, eol, pw, USERLIST_MAX_LINE + 1)) {
			warn_line(ul, name, line, "expected \"user\" \"password\"");
			continue;
		}
		if (user[0] == '\0') {
			warn_line(ul, name, line, "empty user name");
			continue;
		}
		if (strncmp(pw, SCRAM_PREFIX, strlen(SCRAM_PREFIX)) == 0 && !scram_secret_ok(pw)) {
			warn_line(ul, name, line, "malformed SCRAM secret");
			continue;
		}
		if (!add_entry(ul, user, pw))
			goto oom;
	}
	sort_dedupe(ul);
	free(user);
	free(pw);
	return ul;
oom:
	log_error("%s: out of memory reading the user list", name);
	free(user);
	free(pw);
	userlist_free(ul);
	return NULL;
}

struct userlist *userlist_load(const char *path)
{
	struct userlist *ul = NULL;
	struct stat st;
	char *buf = NULL;
	size_t got = 0;
	ssize_t n;
	int fd;

	/* O_NONBLOCK: a FIFO named as auth_file must not hang the process */
	fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		log_error("cannot open auth_file %s: %s", path, strerror(errno));
		return NULL;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		log_error("auth_file %s is not a regular file", path);
		goto cleanup;
	}
	if (st.st_size > USERLIST_MAX_FILE_SIZE) {
		log_error("auth_file %s is larger than %d bytes", path, USERLIST_MAX_FILE_SIZE);
		goto cleanup;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		log_error("%s: out of memory reading the user list", path);
		goto cleanup;
	}
	while (got < (size_t)st.st_size) {
		n = read(fd, buf + got, (size_t)st.st_size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			log_error("cannot read auth_file %s: %s", path, strerror(errno));
			goto cleanup;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	ul = userlist_load_buffer(buf, got, path);
cleanup:
	free(buf);
	close(fd);
	return ul;
}

const char *userlist_get_password(const struct userlist *ul, const char *user)
{
	size_t lo = 0, hi;

	if (!ul || !user)
		return NULL;
	hi = ul->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(user, ul->e[mid].name);
		if (c == 0)
			return ul->e[mid].password;
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

int userlist_count(const struct userlist *ul)
{
	return ul ? (int)ul->n : 0;
}

const char *userlist_name(const struct userlist *ul, int i)
{
	return ul != NULL && i >= 0 && (size_t)i < ul->n ? ul->e[i].name : NULL;
}

int userlist_skipped(const struct userlist *ul)
{
	return ul ? ul->skipped : 0;
}

struct userlist *userlist_ref(struct userlist *ul)
{
	if (ul != NULL)
		atomic_fetch_add(&ul->refs, 1);
	return ul;
}

void userlist_free(struct userlist *ul)
{
	if (!ul || atomic_fetch_sub(&ul->refs, 1) > 1)
		return;
	for (size_t i = 0; i < ul->n; i++) {
		free(ul->e[i].name);
		free(ul->e[i].password);
	}
	free(ul->e);
	free(ul);
}
