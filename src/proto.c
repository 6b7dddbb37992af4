/*
 * proto: bounds-checked readers and parsers for PostgreSQL protocol 3 messages.
 *
 * All reads go through pr_take(), the one place that compares a wanted size with what is left;
 * nothing else indexes the packet. A reader that failed once stays bad, so a parser may read a
 * sequence of fields and test the outcome once with pr_done().
 */
#include "proto.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

void pr_init(struct pkt_reader *r, const uint8_t *p, size_t len)
{
	/* A non-NULL base keeps pointer arithmetic defined for an empty packet. */
	static const uint8_t empty[1];

	r->p = p ? p : empty;
	r->len = p ? len : 0;
	r->pos = 0;
	r->bad = false;
}

/* Returns the next n bytes and steps over them, or NULL (reader marked bad). */
static const uint8_t *pr_take(struct pkt_reader *r, size_t n)
{
	const uint8_t *p;

	if (r->bad || n > r->len - r->pos) {
		r->bad = true;
		return NULL;
	}
	p = r->p + r->pos;
	r->pos += n;
	return p;
}

static uint32_t get_be32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) |
	       (uint32_t)p[3];
}

bool pr_u8(struct pkt_reader *r, uint8_t *out)
{
	const uint8_t *p = pr_take(r, 1);

	if (!p)
		return false;
	*out = p[0];
	return true;
}

bool pr_u16(struct pkt_reader *r, uint16_t *out)
{
	const uint8_t *p = pr_take(r, 2);

	if (!p)
		return false;
	*out = (uint16_t)((p[0] << 8) | p[1]);
	return true;
}

bool pr_i16(struct pkt_reader *r, int16_t *out)
{
	uint16_t v;

	if (!pr_u16(r, &v))
		return false;
	*out = (int16_t)v;
	return true;
}

bool pr_u32(struct pkt_reader *r, uint32_t *out)
{
	const uint8_t *p = pr_take(r, 4);

	if (!p)
		return false;
	*out = get_be32(p);
	return true;
}

bool pr_i32(struct pkt_reader *r, int32_t *out)
{
	uint32_t v;

	if (!pr_u32(r, &v))
		return false;
	*out = (int32_t)v;
	return true;
}

bool pr_bytes(struct pkt_reader *r, size_t n, const uint8_t **out)
{
	const uint8_t *p = pr_take(r, n);

	if (!p)
		return false;
	*out = p;
	return true;
}

bool pr_string(struct pkt_reader *r, const char **out)
{
	const uint8_t *nul;
	const uint8_t *p;

	if (r->bad || r->pos == r->len) {
		r->bad = true;
		return false;
	}
	nul = memchr(r->p + r->pos, 0, r->len - r->pos);
	if (!nul) {
		r->bad = true;
		return false;
	}
	p = pr_take(r, (size_t)(nul - (r->p + r->pos)) + 1);
	if (!p)
		return false;
	*out = (const char *)p;
	return true;
}

size_t pr_remaining(const struct pkt_reader *r)
{
	return r->bad ? 0 : r->len - r->pos;
}

bool pr_done(const struct pkt_reader *r)
{
	return !r->bad && r->pos == r->len;
}

const char *pkt_status_str(enum pkt_status s)
{
	switch (s) {
	case PKT_OK:
		return "ok";
	case PKT_NEED_MORE:
		return "need more";
	case PKT_BAD:
		return "bad";
	}
	return "unknown";
}

enum pkt_status proto_read_startup_header(const uint8_t *data, size_t avail, size_t max_len,
                                          uint32_t *len)
{
	size_t limit = max_len < PROTO_STARTUP_MAX_LEN ? max_len : PROTO_STARTUP_MAX_LEN;
	uint32_t n;

	if (avail < 4)
		return PKT_NEED_MORE;
	n = get_be32(data);
	if (n < 8 || n > limit)
		return PKT_BAD;
	*len = n;
	return PKT_OK;
}

const char *startup_kind_str(enum startup_kind k)
{
	switch (k) {
	case STARTUP_NORMAL:
		return "normal";
	case STARTUP_SSL:
		return "ssl request";
	case STARTUP_GSSENC:
		return "gssenc request";
	case STARTUP_CANCEL:
		return "cancel request";
	case STARTUP_BAD_VERSION:
		return "unsupported protocol version";
	case STARTUP_MALFORMED:
		return "malformed";
	}
	return "unknown";
}

/* Keys whose repetition would make it unclear whom or where the client means. */
static bool startup_key_unique(const char *key)
{
	return strcmp(key, "user") == 0 || strcmp(key, "database") == 0;
}

static enum startup_kind parse_startup_params(struct pkt_reader *r, struct startup_info *out)
{
	const char *key, *value;
	int i;

	for (;;) {
		if (!pr_string(r, &key))
			return STARTUP_MALFORMED;
		if (key[0] == '\0')
			break;
		if (!pr_string(r, &value))
			return STARTUP_MALFORMED;
		if (out->nparams >= PROTO_STARTUP_MAX_PARAMS)
			return STARTUP_MALFORMED;
		if (startup_key_unique(key)) {
			for (i = 0; i < out->nparams; i++)
				if (strcmp(out->params[i].key, key) == 0)
					return STARTUP_MALFORMED;
		}
		out->params[out->nparams].key = key;
		out->params[out->nparams].value = value;
		out->nparams++;
	}
	return pr_done(r) ? STARTUP_NORMAL : STARTUP_MALFORMED;
}

static enum startup_kind startup_classify(const uint8_t *body, size_t len, struct startup_info *out)
{
	struct pkt_reader r;
	uint32_t version;

	pr_init(&r, body, len);
	if (!pr_u32(&r, &version))
		return STARTUP_MALFORMED;
	out->version = version;
	switch (version) {
	case PROTO_SSL_CODE:
		return pr_done(&r) ? STARTUP_SSL : STARTUP_MALFORMED;
	case PROTO_GSSENC_CODE:
		return pr_done(&r) ? STARTUP_GSSENC : STARTUP_MALFORMED;
	case PROTO_CANCEL_CODE:
		if (!pr_u32(&r, &out->cancel_pid) || !pr_u32(&r, &out->cancel_key) || !pr_done(&r))
			return STARTUP_MALFORMED;
		return STARTUP_CANCEL;
	default:
		break;
	}
	if (PROTO_VERSION_MAJOR(version) != 3)
		return STARTUP_BAD_VERSION;
	return parse_startup_params(&r, out);
}

enum startup_kind proto_parse_startup(const uint8_t *body, size_t len, struct startup_info *out)
{
	memset(out, 0, sizeof(*out));
	out->kind = startup_classify(body, len, out);
	if (out->kind == STARTUP_MALFORMED)
		out->nparams = 0;
	return out->kind;
}

/* Words of an options string, split in place into buf (pg_split_opts). Returns the count. */
static int split_option_words(const char *opts, char *buf, char **words, int max_words,
                              bool *too_many)
{
	int n = 0;
	char *out = buf;

	*too_many = false;
	while (*opts) {
		bool escaped = false;
		while (isspace((unsigned char)*opts))
			opts++;
		if (*opts == '\0')
			break;
		if (n == max_words) {
			*too_many = true;
			return n;
		}
		words[n++] = out;
		for (; *opts; opts++) {
			if (isspace((unsigned char)*opts) && !escaped)
				break;
			if (!escaped && *opts == '\\') {
				escaped = true;
			} else {
				escaped = false;
				*out++ = *opts;
			}
		}
		*out++ = '\0';
	}
	return n;
}

/* "name=value" of -c or --, as PostgreSQL's ParseLongOption reads it. */
static bool apply_long_option(char *word, const char *sw,
                              bool (*set)(void *arg, const char *name, const char *value),
                              void *arg, char *err, size_t errsize)
{
	char *eq = strchr(word, '=');

	if (eq == NULL || eq == word) {
		snprintf(err, errsize, "%s%s requires a value", sw, word);
		return false;
	}
	*eq = '\0';
	for (char *q = word; *q; q++)
		if (*q == '-')
			*q = '_';
	return set(arg, word, eq + 1);
}

bool proto_parse_options(const char *opts,
                         bool (*set)(void *arg, const char *name, const char *value), void *arg,
                         char *err, size_t errsize)
{
	char buf[PROTO_STARTUP_MAX_LEN];
	char *words[512];
	bool too_many;
	int n, i;

	if (strlen(opts) >= sizeof(buf)) {
		snprintf(err, errsize, "options are too long");
		return false;
	}
	n = split_option_words(opts, buf, words, (int)(sizeof(words) / sizeof(words[0])),
	                       &too_many);
	if (too_many) {
		snprintf(err, errsize, "too many words in options");
		return false;
	}
	for (i = 0; i < n; i++) {
		char *w = words[i];
		if (strcmp(w, "-c") == 0) {
			if (i + 1 == n) {
				snprintf(err, errsize, "option requires an argument -- 'c'");
				return false;
			}
			if (!apply_long_option(words[++i], "-c ", set, arg, err, errsize))
				return false;
		} else if (strncmp(w, "-c", 2) == 0) {
			if (!apply_long_option(w + 2, "-c ", set, arg, err, errsize))
				return false;
		} else if (strcmp(w, "--") == 0) {
			/* the end of switches: PostgreSQL takes no other argument from options */
			if (i + 1 < n) {
				snprintf(err, errsize,
				         "invalid command-line argument for server process: %.64s",
				         words[i + 1]);
				return false;
			}
		} else if (strncmp(w, "--", 2) == 0) {
			if (!apply_long_option(w + 2, "--", set, arg, err, errsize))
				return false;
		} else if (w[0] == '-') {
			snprintf(err, errsize, "unsupported switch in options: %.64s", w);
			return false;
		} else {
			snprintf(err, errsize,
			         "invalid command-line argument for server process: %.64s", w);
			return false;
		}
	}
	return true;
}

const char *proto_startup_get(const struct startup_info *info, const char *key)
{
	int i;

	for (i = 0; i < info->nparams; i++)
		if (strcmp(info->params[i].key, key) == 0)
			return info->params[i].value;
	return NULL;
}

bool proto_parse_error(const uint8_t *body, size_t len, struct pg_error *out)
{
	const char *nonlocal_severity = NULL;
	struct pkt_reader r;
	const char *value;
	uint8_t code;

	memset(out, 0, sizeof(*out));
	pr_init(&r, body, len);
	for (;;) {
		if (!pr_u8(&r, &code))
			return false;
		if (code == 0)
			break;
		if (!pr_string(&r, &value))
			return false;
		switch (code) {
		case 'S':
			out->severity = value;
			break;
		case 'V':
			nonlocal_severity = value;
			break;
		case 'C':
			out->sqlstate = value;
			break;
		case 'M':
			out->message = value;
			break;
		case 'D':
			out->detail = value;
			break;
		case 'H':
			out->hint = value;
			break;
		case 'P':
			out->position = value;
			break;
		case 'W':
			out->where = value;
			break;
		case 's':
			out->schema = value;
			break;
		case 't':
			out->table = value;
			break;
		case 'c':
			out->column = value;
			break;
		case 'n':
			out->constraint = value;
			break;
		case 'd':
			out->datatype = value;
			break;
		default:
			break;
		}
	}
	if (!out->severity)
		out->severity = nonlocal_severity;
	return pr_done(&r);
}

bool proto_parse_param_status(const uint8_t *body, size_t len, const char **name,
                              const char **value)
{
	struct pkt_reader r;

	pr_init(&r, body, len);
	if (!pr_string(&r, name) || !pr_string(&r, value))
		return false;
	return pr_done(&r);
}

static bool sasl_list_valid(const uint8_t *list, size_t len)
{
	struct pkt_reader r;
	const char *name;

	pr_init(&r, list, len);
	do {
		if (!pr_string(&r, &name))
			return false;
	} while (name[0] != '\0');
	return pr_done(&r);
}

bool proto_parse_auth(const uint8_t *body, size_t len, uint32_t *code, const uint8_t **rest,
                      size_t *rest_len)
{
	struct pkt_reader r;
	size_t n;

	pr_init(&r, body, len);
	if (!pr_u32(&r, code))
		return false;
	n = pr_remaining(&r);
	switch (*code) {
	case PROTO_AUTH_OK:
	case PROTO_AUTH_CLEARTEXT:
		if (n != 0)
			return false;
		break;
	case PROTO_AUTH_MD5:
		if (n != 4)
			return false;
		break;
	case PROTO_AUTH_SASL:
		/* A list of names, each NUL-terminated, ended by an empty name. */
		if (!sasl_list_valid(body + r.pos, n))
			return false;
		break;
	default:
		break;
	}
	*rest = body + r.pos;
	*rest_len = n;
	return true;
}

bool proto_sasl_has_mech(const uint8_t *list, size_t len, const char *mech)
{
	struct pkt_reader r;
	const char *name;

	pr_init(&r, list, len);
	while (pr_string(&r, &name)) {
		if (name[0] == '\0')
			return false;
		if (strcmp(name, mech) == 0)
			return true;
	}
	return false;
}

bool proto_parse_sasl_initial(const uint8_t *body, size_t len, const char **mech,
                              const uint8_t **data, size_t *data_len)
{
	struct pkt_reader r;
	int32_t n;

	pr_init(&r, body, len);
	if (!pr_string(&r, mech) || !pr_i32(&r, &n))
		return false;
	if (n == -1) {
		*data = body + r.pos;
		*data_len = 0;
		return pr_done(&r);
	}
	if (n < 0 || !pr_bytes(&r, (size_t)n, data))
		return false;
	*data_len = (size_t)n;
	return pr_done(&r);
}

bool proto_parse_password(const uint8_t *body, size_t len, const char **pw)
{
	struct pkt_reader r;

	pr_init(&r, body, len);
	if (!pr_string(&r, pw))
		return false;
	return pr_done(&r);
}

bool proto_parse_backend_key(const uint8_t *body, size_t len, uint32_t *pid, uint32_t *key)
{
	struct pkt_reader r;

	pr_init(&r, body, len);
	if (!pr_u32(&r, pid) || !pr_u32(&r, key))
		return false;
	return pr_done(&r);
}

bool proto_parse_ready(const uint8_t *body, size_t len, char *status)
{
	struct pkt_reader r;
	uint8_t c;

	pr_init(&r, body, len);
	if (!pr_u8(&r, &c) || !pr_done(&r))
		return false;
	if (c != 'I' && c != 'T' && c != 'E')
		return false;
	*status = (char)c;
	return true;
}

bool proto_parse_command_complete(const uint8_t *body, size_t len, const char **tag)
{
	struct pkt_reader r;

	pr_init(&r, body, len);
	if (!pr_string(&r, tag))
		return false;
	return pr_done(&r);
}

bool proto_parse_query(const uint8_t *body, size_t len, const char **sql, size_t *sql_len)
{
	struct pkt_reader r;

	pr_init(&r, body, len);
	if (!pr_string(&r, sql) || !pr_done(&r))
		return false;
	*sql_len = r.pos - 1;
	return true;
}

bool proto_parse_parse(const uint8_t *body, size_t len, const char **stmt, const char **sql,
                       size_t *sql_len, uint16_t *nparams)
{
	struct pkt_reader r;
	const uint8_t *oids;
	size_t sql_start;

	pr_init(&r, body, len);
	if (!pr_string(&r, stmt))
		return false;
	sql_start = r.pos;
	if (!pr_string(&r, sql) || !pr_u16(&r, nparams))
		return false;
	*sql_len = r.pos - 2 - 1 - sql_start;
	if (!pr_bytes(&r, (size_t)*nparams * 4, &oids))
		return false;
	return pr_done(&r);
}

bool proto_parse_msg_names(uint8_t type, const uint8_t *body, size_t len, const char **stmt,
                           const char **portal)
{
	struct pkt_reader r;
	uint8_t what;

	*stmt = NULL;
	*portal = NULL;
	pr_init(&r, body, len);
	switch (type) {
	case PQMSG_PARSE:
		return pr_string(&r, stmt);
	case PQMSG_BIND:
		return pr_string(&r, portal) && pr_string(&r, stmt);
	case PQMSG_CLOSE:
	case PQMSG_DESCRIBE:
		if (!pr_u8(&r, &what))
			return false;
		if (what == PQMSG_TARGET_STATEMENT)
			return pr_string(&r, stmt);
		if (what == PQMSG_TARGET_PORTAL)
			return pr_string(&r, portal);
		return false;
	case PQMSG_EXECUTE:
		return pr_string(&r, portal);
	default:
		return false;
	}
}

static unsigned char lower_ascii(unsigned char ch)
{
	return ch >= 'A' && ch <= 'Z' ? (unsigned char)(ch + ('a' - 'A')) : ch;
}

bool proto_text_has_any_ci(const void *text, size_t len, const char *const *needles)
{
	const unsigned char *s = text;

	for (size_t i = 0; i < len; i++) {
		unsigned char ch = lower_ascii(s[i]);

		for (int k = 0; needles[k] != NULL; k++) {
			const char *nd = needles[k];
			size_t j = 1;

			if ((unsigned char)nd[0] != ch)
				continue;
			while (nd[j] != '\0' && i + j < len &&
			       lower_ascii(s[i + j]) == (unsigned char)nd[j])
				j++;
			if (nd[j] == '\0')
				return true;
		}
	}
	return false;
}
