/*
 * journal — see include/mutation/journal.h. Reading is done rarely (start-up and retries while
 * entries are pending), so it simply reads the whole file; a journal larger than JOURNAL_MAX is
 * refused rather than read into memory.
 */
#include "mutation/journal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "api/json.h"
#include "log.h"

#define JOURNAL_MAX (256 * 1024 * 1024)

struct journal {
	int fd;
	char *path;
	unsigned counter;
};

/*
 * A crash in the middle of an append leaves a line without its newline; the next append would
 * be glued to it and both would be unreadable. Such a tail was never acknowledged to anyone:
 * cut it off.
 */
static void journal_cut_torn_tail(struct journal *j)
{
	struct stat st;
	char c;
	off_t end;

	if (fstat(j->fd, &st) != 0 || st.st_size == 0)
		return;
	for (end = st.st_size; end > 0; end--) {
		if (pread(j->fd, &c, 1, end - 1) != 1)
			return;
		if (c == '\n')
			break;
	}
	if (end == st.st_size)
		return;
	log_warning("journal %s: cutting off %lld bytes of an incomplete last line", j->path,
	            (long long)(st.st_size - end));
	if (ftruncate(j->fd, end) != 0)
		log_error("journal %s: cannot cut off the incomplete line: %s", j->path,
		          strerror(errno));
}

struct journal *journal_open(const char *path)
{
	struct journal *j = calloc(1, sizeof(*j));

	if (j == NULL)
		return NULL;
	j->path = strdup(path);
	j->fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (j->path == NULL || j->fd < 0) {
		log_error("cannot open journal_file \"%s\": %s", path, strerror(errno));
		journal_close(j);
		return NULL;
	}
	journal_cut_torn_tail(j);
	return j;
}

void journal_close(struct journal *j)
{
	if (j == NULL)
		return;
	if (j->fd >= 0)
		close(j->fd);
	free(j->path);
	free(j);
}

const char *journal_path(const struct journal *j)
{
	return j->path;
}

bool journal_append(struct journal *j, const char *line, size_t len)
{
	char *buf = malloc(len + 1);
	size_t off = 0;
	struct stat st;

	if (buf == NULL || fstat(j->fd, &st) != 0) {
		free(buf);
		return false;
	}
	memcpy(buf, line, len);
	buf[len] = '\n';
	while (off < len + 1) {
		ssize_t n = write(j->fd, buf + off, len + 1 - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			log_error("journal %s: write failed: %s", j->path, strerror(errno));
			free(buf);
			/* no half line may stay behind to swallow the next entry */
			if (ftruncate(j->fd, st.st_size) != 0)
				log_error("journal %s: cannot undo a partial write: %s", j->path,
				          strerror(errno));
			return false;
		}
		off += (size_t)n;
	}
	free(buf);
	if (fdatasync(j->fd) != 0) {
		log_error("journal %s: fdatasync failed: %s", j->path, strerror(errno));
		return false;
	}
	return true;
}

bool journal_mark_done(struct journal *j, const char *id)
{
	char line[256];
	int n = snprintf(line, sizeof(line), "{\"done\":\"%s\"}", id);

	if (n < 0 || (size_t)n >= sizeof(line))
		return false;
	return journal_append(j, line, (size_t)n);
}

void journal_new_id(struct journal *j, char *out, size_t size)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	snprintf(out, size, "%lld.%06ld-%d-%u", (long long)tv.tv_sec, (long)tv.tv_usec,
	         (int)getpid(), ++j->counter);
}

/* Splits the file into lines; returns the buffer (caller frees) or NULL. */
static char *read_all(struct journal *j, size_t *len)
{
	struct stat st;
	char *buf;
	size_t off = 0;

	if (fstat(j->fd, &st) != 0 || st.st_size > JOURNAL_MAX)
		return NULL;
	buf = malloc((size_t)st.st_size + 1);
	if (buf == NULL)
		return NULL;
	while (off < (size_t)st.st_size) {
		ssize_t n = pread(j->fd, buf + off, (size_t)st.st_size - off, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		off += (size_t)n;
	}
	buf[off] = '\0';
	*len = off;
	return buf;
}

int journal_foreach_pending(struct journal *j,
                            void (*cb)(void *arg, const char *id, const char *line), void *arg)
{
	const struct json_limits limits = {64 * 1024 * 1024, 64, 10000000};
	size_t len = 0;
	char *buf = read_all(j, &len);
	char **ids = NULL, **lines = NULL;
	bool *done = NULL;
	int n = 0, cap = 0, pending = 0;
	char *p, *nl;

	if (buf == NULL)
		return -1;
	for (p = buf; p < buf + len; p = nl + 1) {
		struct json_value *v = NULL;
		char err[128];
		const char *id;

		nl = memchr(p, '\n', (size_t)(buf + len - p));
		if (nl == NULL)
			break; /* a torn last line: never acknowledged to anyone */
		*nl = '\0';
		if (!json_parse(p, (size_t)(nl - p), &limits, &v, err, sizeof(err))) {
			log_warning("journal %s: skipping an unreadable line: %s", j->path, err);
			continue;
		}
		if ((id = json_get_string(v, "done")) != NULL) {
			for (int i = 0; i < n; i++)
				if (!done[i] && strcmp(ids[i], id) == 0)
					done[i] = true;
		} else if ((id = json_get_string(v, "id")) != NULL) {
			if (n == cap) {
				int ncap = cap ? cap * 2 : 16;
				char **nids = realloc(ids, sizeof(char *) * (size_t)ncap);
				char **nlines =
				        nids ? realloc(lines, sizeof(char *) * (size_t)ncap) : NULL;
				bool *ndone =
				        nlines ? realloc(done, sizeof(bool) * (size_t)ncap) : NULL;
				if (nids)
					ids = nids;
				if (nlines)
					lines = nlines;
				if (ndone == NULL) {
					json_free(v);
					pending = -1;
					goto out;
				}
				done = ndone;
				cap = ncap;
			}
			ids[n] = strdup(id);
			lines[n] = p;
			done[n] = false;
			if (ids[n] == NULL) {
				json_free(v);
				pending = -1;
				goto out;
			}
			n++;
		}
		json_free(v);
	}
	for (int i = 0; i < n; i++) {
		if (done[i])
			continue;
		pending++;
		cb(arg, ids[i], lines[i]);
	}
	if (pending == 0 && len > 0 && ftruncate(j->fd, 0) != 0)
		log_warning("journal %s: cannot truncate: %s", j->path, strerror(errno));
out:
	for (int i = 0; i < n; i++)
		free(ids[i]);
	free(ids);
	free(lines);
	free(done);
	free(buf);
	return pending;
}
