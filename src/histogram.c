/*
 * histogram — see include/histogram.h. Buckets are kept per bucket and made cumulative when
 * written, so an observation is one comparison loop and three additions.
 */
#include "histogram.h"

#include <event2/buffer.h>
#include <stdlib.h>
#include <string.h>

const double hist_bounds[HIST_NBUCKETS] = {
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
};

void hist_observe(struct hist *h, int64_t usec)
{
	double s;
	int i;

	if (usec < 0)
		usec = 0;
	s = (double)usec / 1e6;
	for (i = 0; i < HIST_NBUCKETS && s > hist_bounds[i]; i++)
		;
	h->counts[i]++;
	h->count++;
	h->sum_usec += usec;
}

void hist_family_init(struct hist_family *f, const char *name, const char *help)
{
	memset(f, 0, sizeof(*f));
	f->name = name;
	f->help = help;
}

void hist_family_free(struct hist_family *f)
{
	for (int i = 0; i < f->n; i++)
		free(f->series[i].labels);
	free(f->series);
	f->series = NULL;
	f->n = f->cap = 0;
}

bool hist_family_observe(struct hist_family *f, const char *labels, int64_t usec)
{
	struct hist_series *s = NULL;

	for (int i = 0; i < f->n; i++) {
		if (strcmp(f->series[i].labels, labels) == 0) {
			s = &f->series[i];
			break;
		}
	}
	if (s == NULL) {
		char *copy;
		if (f->n == HIST_MAX_SERIES)
			goto dropped;
		if (f->n == f->cap) {
			int cap = f->cap ? f->cap * 2 : 8;
			struct hist_series *v = realloc(f->series, (size_t)cap * sizeof(*v));
			if (v == NULL)
				goto dropped;
			f->series = v;
			f->cap = cap;
		}
		copy = strdup(labels);
		if (copy == NULL)
			goto dropped;
		s = &f->series[f->n++];
		memset(s, 0, sizeof(*s));
		s->labels = copy;
	}
	hist_observe(&s->h, usec);
	return true;
dropped:
	f->dropped++;
	return false;
}

void hist_family_write(const struct hist_family *f, struct evbuffer *out)
{
	evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s histogram\n", f->name, f->help, f->name);
	for (int i = 0; i < f->n; i++) {
		const struct hist_series *s = &f->series[i];
		const char *sep = s->labels[0] ? "," : "";
		uint64_t cum = 0;
		for (int k = 0; k < HIST_NBUCKETS; k++) {
			cum += s->h.counts[k];
			evbuffer_add_printf(out, "%s_bucket{%s%sle=\"%g\"} %llu\n", f->name,
			                    s->labels, sep, hist_bounds[k],
			                    (unsigned long long)cum);
		}
		cum += s->h.counts[HIST_NBUCKETS];
		evbuffer_add_printf(out, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", f->name, s->labels,
		                    sep, (unsigned long long)cum);
		evbuffer_add_printf(out, "%s_sum{%s} %.6f\n", f->name, s->labels,
		                    (double)s->h.sum_usec / 1e6);
		evbuffer_add_printf(out, "%s_count{%s} %llu\n", f->name, s->labels,
		                    (unsigned long long)s->h.count);
	}
}

void hist_label_value(char *buf, size_t size, const char *value)
{
	size_t n = 0;

	for (const char *p = value ? value : ""; *p != '\0'; p++) {
		const char *esc = *p == '\\'   ? "\\\\"
		                  : *p == '"'  ? "\\\""
		                  : *p == '\n' ? "\\n"
		                               : NULL;
		size_t len = esc ? 2 : 1;
		if (n + len >= size)
			break;
		if (esc)
			memcpy(buf + n, esc, 2);
		else
			buf[n] = *p;
		n += len;
	}
	buf[n] = '\0';
}
