/*
 * changes — what the read sides of all connectors share (see include/api/changes.h): pages,
 * the request/answer wrappers that turn transport failures and error statuses into classed
 * errors, and ISO 8601 times.
 */
#include "api/changes.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/json.h"

void changes_page_init(struct changes_page *p)
{
	memset(p, 0, sizeof(*p));
	p->total = -1;
}

void changes_page_free(struct changes_page *p)
{
	json_free(p->doc);
	free(p->records);
	free(p->next);
	free(p->cursor);
	changes_page_init(p);
}

bool changes_page_add(struct changes_page *p, const char *id, bool deleted,
                      const struct json_value *fields)
{
	struct changes_record *grown;

	if ((p->nrecords & 63) == 0) {
		grown = realloc(p->records, ((size_t)p->nrecords + 64) * sizeof(*grown));
		if (grown == NULL)
			return false;
		p->records = grown;
	}
	p->records[p->nrecords].id = id;
	p->records[p->nrecords].deleted = deleted;
	p->records[p->nrecords].fields = deleted ? NULL : fields;
	p->nrecords++;
	return true;
}

bool changes_supported(const struct connector *c)
{
	/* a read side with settings of its own is there only when they were given (rest) */
	return c != NULL && c->ops->changes != NULL &&
	       (c->ops->changes->configure == NULL || c->changes_priv != NULL);
}

bool changes_build_request(const struct connector *c, const struct api_table *t,
                           const struct changes_req *req, struct api_http_spec *out,
                           struct api_error *err)
{
	memset(out, 0, sizeof(*out));
	api_error_set(err, API_ERR_NONE, "%s", "");
	if (!changes_supported(c)) {
		api_error_set(err, API_ERR_INTERNAL, "%s: type=%s cannot be synced", c->name,
		              c->ops->type);
		return false;
	}
	if (!c->ops->changes->build(c, t, req, out, err)) {
		api_http_spec_free(out);
		if (err->cls == API_ERR_NONE)
			api_error_set(err, API_ERR_INTERNAL, "%s: cannot build the request",
			              c->name);
		return false;
	}
	return true;
}

/* The API's own words for an error answer, if the body has them in a usual place. */
static void changes_error_text(const struct http_response *resp, struct api_error *e)
{
	struct json_value *doc = NULL;
	const struct json_value *o;
	const char *code = NULL, *msg = NULL;
	char why[64];

	if (resp->body_len == 0 ||
	    !json_parse(resp->body, resp->body_len, NULL, &doc, why, sizeof(why)))
		return;
	o = doc->kind == JSON_ARRAY ? json_at(doc, 0) : doc;
	if (json_get(o, "error") != NULL && json_get(o, "error")->kind == JSON_OBJECT)
		o = json_get(o, "error");
	code = json_get_string(o, "errorCode");
	if (code == NULL)
		code = json_get_string(o, "code");
	if (code == NULL)
		code = json_get_string(o, "category");
	msg = json_get_string(o, "message");
	if (code != NULL)
		snprintf(e->code, sizeof(e->code), "%s", code);
	if (msg != NULL)
		snprintf(e->message + strlen(e->message), sizeof(e->message) - strlen(e->message),
		         ": %.300s", msg);
	json_free(doc);
}

void changes_parse_response(const struct connector *c, const struct api_table *t,
                            const struct changes_req *req, const struct http_response *resp,
                            struct changes_page *out)
{
	struct api_error *e = &out->error;

	changes_page_init(out);
	switch (resp->outcome) {
	case HTTP_OUTCOME_ANSWER:
		break;
	case HTTP_OUTCOME_NOT_SENT:
		api_error_set(e, API_ERR_UNAVAILABLE, "%s unreachable: %s", c->name,
		              resp->error ? resp->error : "not sent");
		e->nothing_written = true;
		return;
	case HTTP_OUTCOME_UNKNOWN:
		api_error_set(e, API_ERR_UNKNOWN_OUTCOME, "%s did not answer: %s", c->name,
		              resp->error ? resp->error : "no answer");
		e->nothing_written = true; /* a read writes nothing */
		return;
	case HTTP_OUTCOME_BAD_ANSWER:
		api_error_set(e, API_ERR_BAD_ANSWER, "%s: unusable answer: %s", c->name,
		              resp->error ? resp->error : "?");
		e->nothing_written = true;
		return;
	}
	if (resp->status < 200 || resp->status > 299) {
		enum api_error_class cls = resp->status == 401   ? API_ERR_AUTH
		                           : resp->status == 429 ? API_ERR_RATE_LIMIT
		                           : resp->status == 403 ? API_ERR_PERMISSION
		                           : resp->status == 404 ? API_ERR_NOT_FOUND
		                           : resp->status >= 500 ? API_ERR_SERVER
		                                                 : API_ERR_BAD_ANSWER;
		api_error_set(e, cls, "%s answered HTTP %ld", c->name, resp->status);
		e->http_status = (int)resp->status;
		e->nothing_written = true;
		e->session_expired = resp->status == 401;
		e->retry_after = api_parse_retry_after(resp);
		changes_error_text(resp, e);
		/* Salesforce says "rate limited" with 403 REQUEST_LIMIT_EXCEEDED */
		if (strcmp(e->code, "REQUEST_LIMIT_EXCEEDED") == 0 ||
		    strcmp(e->code, "RATE_LIMITS") == 0 || strcmp(e->code, "rate_limit") == 0)
			e->cls = API_ERR_RATE_LIMIT;
		return;
	}
	if (!changes_supported(c))
		api_error_set(e, API_ERR_INTERNAL, "%s: type=%s cannot be synced here", c->name,
		              c->ops->type);
	else
		c->ops->changes->parse(c, t, req, resp, out);
	if (!out->ok) {
		json_free(out->doc);
		out->doc = NULL;
		out->nrecords = 0;
		if (out->error.cls == API_ERR_NONE)
			api_error_set(e, API_ERR_BAD_ANSWER, "%s: unreadable page", c->name);
		e->nothing_written = true;
		e->http_status = (int)resp->status;
	}
}

/* Reads n digits as a number; false if any is not a digit. */
static bool changes_digits(const char *s, int n, int *out)
{
	int v = 0;

	for (int i = 0; i < n; i++) {
		if (!isdigit((unsigned char)s[i]))
			return false;
		v = v * 10 + (s[i] - '0');
	}
	*out = v;
	return true;
}

bool changes_parse_time(const char *text, double *out)
{
	int y, mo, d, h, mi, s, oh = 0, om = 0, sign = 0;
	double frac = 0, scale = 0.1;
	const char *p;
	struct tm tm;
	time_t t;

	if (text == NULL || strlen(text) < 19 || !changes_digits(text, 4, &y) || text[4] != '-' ||
	    !changes_digits(text + 5, 2, &mo) || text[7] != '-' ||
	    !changes_digits(text + 8, 2, &d) || (text[10] != 'T' && text[10] != ' ') ||
	    !changes_digits(text + 11, 2, &h) || text[13] != ':' ||
	    !changes_digits(text + 14, 2, &mi) || text[16] != ':' ||
	    !changes_digits(text + 17, 2, &s))
		return false;
	p = text + 19;
	if (*p == '.') {
		for (p++; isdigit((unsigned char)*p); p++, scale /= 10)
			frac += (*p - '0') * scale;
	}
	if (*p == 'Z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		sign = *p == '-' ? -1 : 1;
		if (!changes_digits(p + 1, 2, &oh))
			return false;
		p += 3;
		if (*p == ':')
			p++;
		if (*p != '\0' && !changes_digits(p, 2, &om))
			return false;
		if (*p != '\0')
			p += 2;
	}
	if (*p != '\0' || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || s > 60)
		return false;
	memset(&tm, 0, sizeof(tm));
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = s;
	t = timegm(&tm);
	*out = (double)t + frac - sign * (oh * 3600 + om * 60);
	return true;
}
