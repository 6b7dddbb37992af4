/*
 * tls — see include/tls.h for the model.
 *
 * Settings follow pgbouncer 1.25: protocols "secure"/"default" = TLSv1.2 + TLSv1.3, "all" and
 * "legacy" = TLSv1.0 to 1.3, or a list such as "tlsv1.2,tlsv1.3" ("!x" removes one); ciphers
 * "default", "secure", "normal" and "fast" keep OpenSSL's (system-wide) default, anything else
 * is an OpenSSL cipher string that must name at least one cipher; dheparams none, auto or
 * legacy; ecdhcurve auto, none or a curve name ("none" sets no group, so OpenSSL's default
 * groups stay and ECDHE still works: pgbouncer does the same). Sessions are not cached (as
 * PostgreSQL), compression and renegotiation are off.
 *
 * A private key file must be a regular file that neither group nor others may read (0640 is
 * allowed when root owns it), as PostgreSQL demands of ssl_key_file.
 */
#include "tls.h"

#include <errno.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bouncer.h"
#include "config.h"
#include "conn.h"
#include "log.h"
#include "sbuf.h"

/* The most one SSL_write is offered: one TLS record, so a kept retry copy stays this small. */
#define TLS_CHUNK 16384

#define PROTO_10  (1u << 0)
#define PROTO_11  (1u << 1)
#define PROTO_12  (1u << 2)
#define PROTO_13  (1u << 3)
#define PROTO_ALL (PROTO_10 | PROTO_11 | PROTO_12 | PROTO_13)

/* ALPN of PostgreSQL 17's direct SSL connections, length-prefixed as on the wire. */
static const unsigned char alpn_postgresql[] = "\x0apostgresql";

struct tls_state {
	SSL_CTX *client_ctx; /* toward clients; NULL when client_tls_sslmode = disable */
	SSL_CTX *server_ctx; /* toward servers; NULL when server_tls_sslmode = disable */
	enum sslmode client_mode, server_mode;
};

enum hs_state {
	HS_RUNNING,
	HS_DONE,
	HS_FAILED,
};

struct tls_conn {
	SSL *ssl;
	struct event ev;
	bool ev_added;
	enum hs_state hs;
	tls_done_fn done;
	void *arg;
	bool verify_name; /* toward a server under verify-full */
	uint8_t *kept;    /* a write OpenSSL asked to retry: these bytes, as first offered */
	size_t kept_len;
	bool cn_read;
	char *cn;
};

/* ---- building contexts ---------------------------------------------------------------------- */

/* The reason of OpenSSL's first queued error ("certificate verify failed"), then clears it. */
static void ssl_error_text(char *buf, size_t size)
{
	unsigned long e = ERR_get_error();
	const char *reason = e != 0 ? ERR_reason_error_string(e) : NULL;

	if (reason != NULL)
		snprintf(buf, size, "%s", reason);
	else if (e != 0)
		ERR_error_string_n(e, buf, size);
	else
		snprintf(buf, size, "unknown error");
	ERR_clear_error();
}

static bool parse_protocols(const char *text, unsigned *out)
{
	char *copy = strdup(text), *save = NULL, *tok;
	unsigned protos = 0, p;
	bool ok = copy != NULL;

	for (tok = ok ? strtok_r(copy, ",: \t", &save) : NULL; tok != NULL;
	     tok = strtok_r(NULL, ",: \t", &save)) {
		bool negate = tok[0] == '!';
		if (negate) {
			tok++;
			if (protos == 0)
				protos = PROTO_ALL;
		}
		if (strcasecmp(tok, "all") == 0 || strcasecmp(tok, "legacy") == 0 ||
		    strcasecmp(tok, "tlsv1") == 0)
			p = PROTO_ALL;
		else if (strcasecmp(tok, "default") == 0 || strcasecmp(tok, "secure") == 0)
			p = PROTO_12 | PROTO_13;
		else if (strcasecmp(tok, "tlsv1.0") == 0)
			p = PROTO_10;
		else if (strcasecmp(tok, "tlsv1.1") == 0)
			p = PROTO_11;
		else if (strcasecmp(tok, "tlsv1.2") == 0)
			p = PROTO_12;
		else if (strcasecmp(tok, "tlsv1.3") == 0)
			p = PROTO_13;
		else {
			ok = false;
			break;
		}
		protos = negate ? protos & ~p : protos | p;
	}
	free(copy);
	if (ok && protos == 0)
		ok = false;
	*out = protos;
	return ok;
}

static bool set_protocols(SSL_CTX *ctx, const char *key, const char *text, char *err,
                          size_t errsize)
{
	unsigned protos;
	long opts = 0;

	if (!parse_protocols(text, &protos)) {
		snprintf(err, errsize, "%s: invalid protocol list \"%s\"", key, text);
		return false;
	}
	/* OpenSSL 3 refuses TLS 1.0/1.1 at its default security level; asked for, they get it */
	if (protos & (PROTO_10 | PROTO_11))
		SSL_CTX_set_security_level(ctx, 0);
	if (!SSL_CTX_set_min_proto_version(ctx, TLS1_VERSION) ||
	    !SSL_CTX_set_max_proto_version(ctx, 0)) {
		snprintf(err, errsize, "%s: cannot set the protocol range", key);
		return false;
	}
	if (!(protos & PROTO_10))
		opts |= SSL_OP_NO_TLSv1;
	if (!(protos & PROTO_11))
		opts |= SSL_OP_NO_TLSv1_1;
	if (!(protos & PROTO_12))
		opts |= SSL_OP_NO_TLSv1_2;
	if (!(protos & PROTO_13))
		opts |= SSL_OP_NO_TLSv1_3;
	SSL_CTX_set_options(ctx, (uint64_t)opts);
	return true;
}

static bool set_ciphers(SSL_CTX *ctx, const char *key, const char *ciphers, const char *key13,
                        const char *tls13, char *err, size_t errsize)
{
	if (strcasecmp(ciphers, "default") != 0 && strcasecmp(ciphers, "secure") != 0 &&
	    strcasecmp(ciphers, "normal") != 0 && strcasecmp(ciphers, "fast") != 0 &&
	    SSL_CTX_set_cipher_list(ctx, ciphers) != 1) {
		ERR_clear_error();
		snprintf(err, errsize, "%s: no ciphers for \"%s\"", key, ciphers);
		return false;
	}
	if (tls13[0] != '\0' && SSL_CTX_set_ciphersuites(ctx, tls13) != 1) {
		ERR_clear_error();
		snprintf(err, errsize, "%s: no TLSv1.3 cipher suites for \"%s\"", key13, tls13);
		return false;
	}
	return true;
}

/* PostgreSQL's rule for ssl_key_file: nobody but the owner (or root's group) may read it. */
static bool check_key_file(const char *key, const char *path, char *err, size_t errsize)
{
	struct stat st;

	if (stat(path, &st) != 0) {
		snprintf(err, errsize, "%s: could not access private key file \"%s\": %s", key,
		         path, strerror(errno));
		return false;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(err, errsize, "%s: private key file \"%s\" is not a regular file", key,
		         path);
		return false;
	}
	/* started as root, the pooler may become the key's owner (-u) only later */
	if (geteuid() != 0 && st.st_uid != geteuid() && st.st_uid != 0) {
		snprintf(err, errsize,
		         "%s: private key file \"%s\" must be owned by the user running the "
		         "pooler or root",
		         key, path);
		return false;
	}
	if (st.st_uid == 0 ? (st.st_mode & (S_IWGRP | S_IXGRP | S_IRWXO)) != 0
	                   : (st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
		snprintf(err, errsize,
		         "%s: private key file \"%s\" has group or world access; permissions "
		         "should be u=rw (0600) or less if owned by the pooler's user, or u=rw,g=r "
		         "(0640) or less if owned by root",
		         key, path);
		return false;
	}
	return true;
}

static bool load_keypair(SSL_CTX *ctx, const char *cert_key, const char *cert, const char *key_key,
                         const char *keyfile, char *err, size_t errsize)
{
	char why[256];

	if (!check_key_file(key_key, keyfile, err, errsize))
		return false;
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
		ssl_error_text(why, sizeof(why));
		snprintf(err, errsize, "%s: could not load certificate file \"%s\": %s", cert_key,
		         cert, why);
		return false;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, keyfile, SSL_FILETYPE_PEM) != 1) {
		if (ERR_GET_REASON(ERR_peek_error()) == X509_R_KEY_VALUES_MISMATCH) {
			ERR_clear_error();
			snprintf(err, errsize,
			         "%s: private key file \"%s\" does not match %s \"%s\"", key_key,
			         keyfile, cert_key, cert);
			return false;
		}
		ssl_error_text(why, sizeof(why));
		snprintf(err, errsize, "%s: could not load private key file \"%s\": %s", key_key,
		         keyfile, why);
		return false;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		ERR_clear_error();
		snprintf(err, errsize, "%s: private key file \"%s\" does not match %s \"%s\"",
		         key_key, keyfile, cert_key, cert);
		return false;
	}
	return true;
}

static bool load_ca(SSL_CTX *ctx, const char *key, const char *ca, bool client_list, char *err,
                    size_t errsize)
{
	char why[256];

	if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) {
		ssl_error_text(why, sizeof(why));
		snprintf(err, errsize, "%s: could not load root certificate file \"%s\": %s", key,
		         ca, why);
		return false;
	}
	if (client_list) {
		STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(ca);
		if (names == NULL) {
			ERR_clear_error();
			snprintf(err, errsize, "%s: no certificates in \"%s\"", key, ca);
			return false;
		}
		SSL_CTX_set_client_CA_list(ctx, names);
	}
	return true;
}

static int select_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
	unsigned char *sel = NULL;

	(void)ssl;
	(void)arg;
	if (SSL_select_next_proto(&sel, outlen, alpn_postgresql, sizeof(alpn_postgresql) - 1, in,
	                          inlen) != OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_ALERT_FATAL; /* as PostgreSQL: no_application_protocol */
	*out = sel;
	return SSL_TLSEXT_ERR_OK;
}

static void common_options(SSL_CTX *ctx)
{
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
	                                 SSL_OP_NO_TICKET | SSL_OP_NO_SSLv3);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
}

static SSL_CTX *build_client_ctx(const struct config *cfg, char *err, size_t errsize)
{
	SSL_CTX *ctx;
	const char *dh = cfg->client_tls_dheparams, *curve = cfg->client_tls_ecdhcurve;

	if (!cfg->client_tls_key_file[0] || !cfg->client_tls_cert_file[0]) {
		snprintf(err, errsize,
		         "client_tls_sslmode=%s needs client_tls_key_file and client_tls_cert_file",
		         sslmode_str(cfg->client_tls_sslmode));
		return NULL;
	}
	if (cfg->client_tls_sslmode >= SSLMODE_VERIFY_CA && !cfg->client_tls_ca_file[0]) {
		snprintf(err, errsize, "client_tls_sslmode=%s needs client_tls_ca_file",
		         sslmode_str(cfg->client_tls_sslmode));
		return NULL;
	}
	ctx = SSL_CTX_new(TLS_server_method());
	if (ctx == NULL) {
		snprintf(err, errsize, "out of memory for a TLS context");
		return NULL;
	}
	common_options(ctx);
	SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
	if (!set_protocols(ctx, "client_tls_protocols", cfg->client_tls_protocols, err, errsize) ||
	    !set_ciphers(ctx, "client_tls_ciphers", cfg->client_tls_ciphers, "client_tls13_ciphers",
	                 cfg->client_tls13_ciphers, err, errsize) ||
	    !load_keypair(ctx, "client_tls_cert_file", cfg->client_tls_cert_file,
	                  "client_tls_key_file", cfg->client_tls_key_file, err, errsize))
		goto fail;
	/*
	 * As pgbouncer (libusual's tls_configure_server): auto = DH groups sized to the
	 * certificate (2048 bits for RSA 2048), legacy = 1024-bit DH (OpenSSL's dh_auto 2), which
	 * OpenSSL's default security level refuses, leaving no DHE cipher; none = no DH.
	 */
	if (strcasecmp(dh, "auto") == 0) {
		SSL_CTX_set_dh_auto(ctx, 1);
	} else if (strcasecmp(dh, "legacy") == 0) {
		SSL_CTX_set_dh_auto(ctx, 2);
	} else if (strcasecmp(dh, "none") != 0) {
		snprintf(err, errsize,
		         "client_tls_dheparams: invalid value \"%s\" (none, auto or legacy)", dh);
		goto fail;
	}
	if (strcasecmp(curve, "auto") != 0 && strcasecmp(curve, "none") != 0 &&
	    SSL_CTX_set1_groups_list(ctx, curve) != 1) {
		ERR_clear_error();
		snprintf(err, errsize, "client_tls_ecdhcurve: invalid curve \"%s\"", curve);
		goto fail;
	}
	if (cfg->client_tls_ca_file[0]) {
		if (!load_ca(ctx, "client_tls_ca_file", cfg->client_tls_ca_file, true, err,
		             errsize))
			goto fail;
		/* a certificate is asked for; under verify-ca/verify-full it must come */
		SSL_CTX_set_verify(ctx,
		                   SSL_VERIFY_PEER | (cfg->client_tls_sslmode >= SSLMODE_VERIFY_CA
		                                              ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT
		                                              : 0),
		                   NULL);
	}
	SSL_CTX_set_alpn_select_cb(ctx, select_alpn, NULL);
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

static SSL_CTX *build_server_ctx(const struct config *cfg, char *err, size_t errsize)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	char why[256];

	if (ctx == NULL) {
		snprintf(err, errsize, "out of memory for a TLS context");
		return NULL;
	}
	common_options(ctx);
	if (!set_protocols(ctx, "server_tls_protocols", cfg->server_tls_protocols, err, errsize) ||
	    !set_ciphers(ctx, "server_tls_ciphers", cfg->server_tls_ciphers, "server_tls13_ciphers",
	                 cfg->server_tls13_ciphers, err, errsize))
		goto fail;
	if (cfg->server_tls_cert_file[0] || cfg->server_tls_key_file[0]) {
		if (!cfg->server_tls_cert_file[0] || !cfg->server_tls_key_file[0]) {
			snprintf(err, errsize,
			         "server_tls_cert_file and server_tls_key_file go together");
			goto fail;
		}
		if (!load_keypair(ctx, "server_tls_cert_file", cfg->server_tls_cert_file,
		                  "server_tls_key_file", cfg->server_tls_key_file, err, errsize))
			goto fail;
	}
	if (cfg->server_tls_ca_file[0]) {
		if (!load_ca(ctx, "server_tls_ca_file", cfg->server_tls_ca_file, false, err,
		             errsize))
			goto fail;
	} else if (cfg->server_tls_sslmode >= SSLMODE_VERIFY_CA &&
	           SSL_CTX_set_default_verify_paths(ctx) != 1) {
		ssl_error_text(why, sizeof(why));
		snprintf(err, errsize, "server_tls_sslmode=%s: no root certificates: %s",
		         sslmode_str(cfg->server_tls_sslmode), why);
		goto fail;
	}
	SSL_CTX_set_verify(ctx,
	                   cfg->server_tls_sslmode >= SSLMODE_VERIFY_CA ? SSL_VERIFY_PEER
	                                                                : SSL_VERIFY_NONE,
	                   NULL);
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

struct tls_ctxs {
	SSL_CTX *client_ctx, *server_ctx; /* one reference each */
	enum sslmode client_mode, server_mode;
};

struct tls_ctxs *tls_build(const struct config *cfg, char *err, size_t errsize)
{
	struct tls_ctxs *c;

	/* pgbouncer's rule: the CN is only trusted from a certificate checked in full */
	if (cfg->auth_type == AUTH_CERT && cfg->client_tls_sslmode != SSLMODE_VERIFY_FULL) {
		snprintf(err, errsize, "auth_type=cert requires client_tls_sslmode=verify-full");
		return NULL;
	}
	c = calloc(1, sizeof(*c));
	if (c == NULL) {
		snprintf(err, errsize, "out of memory");
		return NULL;
	}
	c->client_mode = cfg->client_tls_sslmode;
	c->server_mode = cfg->server_tls_sslmode;
	if (cfg->client_tls_sslmode != SSLMODE_DISABLE) {
		c->client_ctx = build_client_ctx(cfg, err, errsize);
		if (c->client_ctx == NULL)
			goto fail;
	}
	if (cfg->server_tls_sslmode != SSLMODE_DISABLE) {
		c->server_ctx = build_server_ctx(cfg, err, errsize);
		if (c->server_ctx == NULL)
			goto fail;
	}
	return c;
fail:
	tls_ctxs_free(c);
	return NULL;
}

void tls_ctxs_free(struct tls_ctxs *c)
{
	if (c == NULL)
		return;
	SSL_CTX_free(c->client_ctx);
	SSL_CTX_free(c->server_ctx);
	free(c);
}

bool tls_use(struct bouncer *b, const struct tls_ctxs *c)
{
	struct tls_state *st = b->tls;

	if (st == NULL) {
		st = calloc(1, sizeof(*st));
		if (st == NULL)
			return false;
		b->tls = st;
	}
	/* an SSL_CTX is shared safely once built: its reference count is atomic */
	if (c->client_ctx != NULL)
		SSL_CTX_up_ref(c->client_ctx);
	if (c->server_ctx != NULL)
		SSL_CTX_up_ref(c->server_ctx);
	/* connections hold their own reference: freeing here only drops ours */
	SSL_CTX_free(st->client_ctx);
	SSL_CTX_free(st->server_ctx);
	st->client_ctx = c->client_ctx;
	st->server_ctx = c->server_ctx;
	st->client_mode = c->client_mode;
	st->server_mode = c->server_mode;
	return true;
}

bool tls_share(struct bouncer *b, const struct bouncer *from)
{
	struct tls_ctxs c = {0};

	if (from->tls != NULL) {
		c.client_ctx = from->tls->client_ctx;
		c.server_ctx = from->tls->server_ctx;
		c.client_mode = from->tls->client_mode;
		c.server_mode = from->tls->server_mode;
	}
	return tls_use(b, &c);
}

bool tls_configure(struct bouncer *b, const struct config *cfg, char *err, size_t errsize)
{
	struct tls_ctxs *c = tls_build(cfg, err, errsize);
	bool ok;

	if (c == NULL)
		return false;
	ok = tls_use(b, c);
	if (!ok)
		snprintf(err, errsize, "out of memory");
	tls_ctxs_free(c);
	return ok;
}

void tls_free(struct bouncer *b)
{
	if (b->tls == NULL)
		return;
	SSL_CTX_free(b->tls->client_ctx);
	SSL_CTX_free(b->tls->server_ctx);
	free(b->tls);
	b->tls = NULL;
}

bool tls_client_side_enabled(const struct bouncer *b)
{
	return b->tls != NULL && b->tls->client_ctx != NULL;
}

bool tls_is_tls_key(const char *key)
{
	return strncasecmp(key, "client_tls", 10) == 0 || strncasecmp(key, "server_tls", 10) == 0 ||
	       strcasecmp(key, "auth_type") == 0;
}

static bool str_differs(const char *a, const char *c)
{
	return strcmp(a ? a : "", c ? c : "") != 0;
}

bool tls_server_settings_differ(const struct config *a, const struct config *c)
{
	return a->server_tls_sslmode != c->server_tls_sslmode ||
	       str_differs(a->server_tls13_ciphers, c->server_tls13_ciphers) ||
	       str_differs(a->server_tls_ca_file, c->server_tls_ca_file) ||
	       str_differs(a->server_tls_cert_file, c->server_tls_cert_file) ||
	       str_differs(a->server_tls_ciphers, c->server_tls_ciphers) ||
	       str_differs(a->server_tls_key_file, c->server_tls_key_file) ||
	       str_differs(a->server_tls_protocols, c->server_tls_protocols);
}

/* ---- handshakes ----------------------------------------------------------------------------- */

static void hs_step(evutil_socket_t fd, short what, void *arg);

static void hs_wait(struct tls_conn *t, struct event_base *base, int fd, short what)
{
	if (t->ev_added)
		event_del(&t->ev);
	event_assign(&t->ev, base, fd, what, hs_step, t);
	event_add(&t->ev, NULL);
	t->ev_added = true;
}

static void hs_finish(struct tls_conn *t, bool ok, const char *err)
{
	t->hs = ok ? HS_DONE : HS_FAILED;
	/* may free t */
	t->done(t->arg, ok, err);
}

static void hs_step(evutil_socket_t fd, short what, void *arg)
{
	struct tls_conn *t = arg;
	struct event_base *base = event_get_base(&t->ev);
	char msg[300], why[256];
	int rc, e;

	(void)what;
	t->ev_added = false;
	ERR_clear_error();
	rc = SSL_do_handshake(t->ssl);
	if (rc == 1) {
		hs_finish(t, true, NULL);
		return;
	}
	e = SSL_get_error(t->ssl, rc);
	switch (e) {
	case SSL_ERROR_WANT_READ:
		hs_wait(t, base, (int)fd, EV_READ);
		return;
	case SSL_ERROR_WANT_WRITE:
		hs_wait(t, base, (int)fd, EV_WRITE);
		return;
	case SSL_ERROR_SYSCALL:
		if (ERR_peek_error() == 0) {
			snprintf(msg, sizeof(msg), "TLS handshake failed: %s",
			         errno != 0 && rc < 0 ? strerror(errno) : "unexpected EOF");
			ERR_clear_error();
			hs_finish(t, false, msg);
			return;
		}
		/* fallthrough */
	default: {
		long v = SSL_get_verify_result(t->ssl);
		ssl_error_text(why, sizeof(why));
		if (v != X509_V_OK)
			snprintf(msg, sizeof(msg), "TLS handshake failed: %s: %s", why,
			         X509_verify_cert_error_string(v));
		else
			snprintf(msg, sizeof(msg), "TLS handshake failed: %s", why);
		hs_finish(t, false, msg);
		return;
	}
	}
}

static struct tls_conn *conn_new(SSL_CTX *ctx, struct sbuf *sb, tls_done_fn done, void *arg)
{
	struct tls_conn *t = calloc(1, sizeof(*t));

	if (t == NULL)
		return NULL;
	t->ssl = SSL_new(ctx);
	if (t->ssl == NULL || SSL_set_fd(t->ssl, sb->fd) != 1) {
		ERR_clear_error();
		SSL_free(t->ssl);
		free(t);
		return NULL;
	}
	t->done = done;
	t->arg = arg;
	t->hs = HS_RUNNING;
	sb->tls = t;
	return t;
}

bool tls_accept(struct bouncer *b, struct sbuf *sb, tls_done_fn done, void *arg)
{
	struct tls_conn *t;

	if (!tls_client_side_enabled(b) || sb->tls != NULL)
		return false;
	t = conn_new(b->tls->client_ctx, sb, done, arg);
	if (t == NULL)
		return false;
	SSL_set_accept_state(t->ssl);
	/* the ClientHello (or an SSLRequest answer's reply) comes from the client first */
	hs_wait(t, b->base, sb->fd, EV_READ);
	return true;
}

bool tls_connect(struct bouncer *b, struct sbuf *sb, const char *host, tls_done_fn done, void *arg)
{
	struct tls_conn *t;
	struct in6_addr a6;
	struct in_addr a4;
	bool is_ip;

	if (b->tls == NULL || b->tls->server_ctx == NULL || sb->tls != NULL)
		return false;
	t = conn_new(b->tls->server_ctx, sb, done, arg);
	if (t == NULL)
		return false;
	SSL_set_connect_state(t->ssl);
	is_ip = inet_pton(AF_INET, host, &a4) == 1 || inet_pton(AF_INET6, host, &a6) == 1;
	if (!is_ip && host[0] != '\0' && host[0] != '/')
		(void)SSL_set_tlsext_host_name(t->ssl, host);
	if (b->tls->server_mode == SSLMODE_VERIFY_FULL) {
		X509_VERIFY_PARAM *vp = SSL_get0_param(t->ssl);
		int ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(vp, host)
		               : X509_VERIFY_PARAM_set1_host(vp, host, 0);
		if (ok != 1) {
			ERR_clear_error();
			sb->tls = NULL;
			tls_conn_free(t);
			return false;
		}
		t->verify_name = true;
	}
	hs_wait(t, b->base, sb->fd, EV_WRITE);
	return true;
}

/* ---- I/O ------------------------------------------------------------------------------------ */

ssize_t tls_conn_recv(struct tls_conn *t, void *buf, size_t len, bool *want_write)
{
	int n, e;

	*want_write = false;
	if (t->hs != HS_DONE) {
		errno = EAGAIN;
		return -1;
	}
	if (len > INT32_MAX)
		len = INT32_MAX;
	ERR_clear_error();
	n = SSL_read(t->ssl, buf, (int)len);
	if (n > 0)
		return n;
	e = SSL_get_error(t->ssl, n);
	switch (e) {
	case SSL_ERROR_WANT_READ:
		errno = EAGAIN;
		return -1;
	case SSL_ERROR_WANT_WRITE:
		*want_write = true;
		errno = EAGAIN;
		return -1;
	case SSL_ERROR_ZERO_RETURN:
		return 0; /* close_notify: an orderly EOF */
	case SSL_ERROR_SYSCALL:
		if (ERR_peek_error() == 0) {
			ERR_clear_error();
			if (n == 0 || errno == 0)
				return 0; /* EOF without close_notify: still EOF to the owner */
			return -1;
		}
		/* fallthrough */
	default:
		ERR_clear_error();
		errno = EPROTO;
		return -1;
	}
}

/* One SSL_write; 1 written n, 0 must retry these bytes, -1 broken. */
static int write_once(struct tls_conn *t, const void *buf, size_t len, size_t *n)
{
	size_t written = 0;
	int rc, e;

	ERR_clear_error();
	rc = SSL_write_ex(t->ssl, buf, len, &written);
	if (rc == 1) {
		*n = written;
		return 1;
	}
	e = SSL_get_error(t->ssl, rc);
	ERR_clear_error();
	if (e == SSL_ERROR_WANT_WRITE)
		return 0;
	/* WANT_READ would mean renegotiation, which is off: treat as broken */
	errno = e == SSL_ERROR_SYSCALL && errno != 0 ? errno : EPROTO;
	return -1;
}

bool tls_conn_flush(struct tls_conn *t)
{
	size_t n = 0;
	int rc;

	while (t->kept_len > 0) {
		rc = write_once(t, t->kept, t->kept_len, &n);
		if (rc < 0)
			return false;
		if (rc == 0)
			return true;
		/* partial writes are on: OpenSSL took n bytes of what it had been offered */
		memmove(t->kept, t->kept + n, t->kept_len - n);
		t->kept_len -= n;
	}
	free(t->kept);
	t->kept = NULL;
	return true;
}

ssize_t tls_conn_send(struct tls_conn *t, const void *buf, size_t len)
{
	size_t n = 0;
	int rc;

	if (t->hs != HS_DONE) {
		errno = t->hs == HS_FAILED ? EPROTO : EAGAIN;
		return -1;
	}
	if (t->kept_len > 0) {
		if (!tls_conn_flush(t)) {
			errno = EPIPE;
			return -1;
		}
		if (t->kept_len > 0) {
			errno = EAGAIN;
			return -1;
		}
	}
	if (len > TLS_CHUNK)
		len = TLS_CHUNK;
	rc = write_once(t, buf, len, &n);
	if (rc < 0)
		return -1;
	if (rc > 0)
		return (ssize_t)n;
	/*
	 * OpenSSL has committed to these bytes and must be offered them again; the caller may
	 * offer other bytes next (its own queue first), so keep a copy and report them taken.
	 */
	t->kept = malloc(len);
	if (t->kept == NULL) {
		errno = ENOMEM;
		return -1;
	}
	memcpy(t->kept, buf, len);
	t->kept_len = len;
	return (ssize_t)len;
}

bool tls_conn_write_pending(const struct tls_conn *t)
{
	return t->kept_len > 0;
}

bool tls_conn_read_pending(const struct tls_conn *t)
{
	return t->hs == HS_DONE && SSL_pending(t->ssl) > 0;
}

void tls_conn_free(struct tls_conn *t)
{
	if (t == NULL)
		return;
	if (t->ev_added)
		event_del(&t->ev);
	if (t->hs == HS_DONE) {
		/* best effort, never waits: a close_notify if the socket takes it */
		(void)SSL_shutdown(t->ssl);
	}
	ERR_clear_error();
	SSL_free(t->ssl);
	free(t->kept);
	free(t->cn);
	free(t);
}

void tls_conn_info(const struct sbuf *sb, char *buf, size_t size)
{
	const struct tls_conn *t = sb->tls;
	EVP_PKEY *pk = NULL;
	char kx[64] = "";

	if (size == 0)
		return;
	buf[0] = '\0';
	if (t == NULL || t->hs != HS_DONE)
		return;
	/* as pgbouncer: toward a server, the key exchange of an EC or DH temporary key */
	if (!SSL_is_server(t->ssl) && SSL_get_peer_tmp_key(t->ssl, &pk) == 1 && pk != NULL) {
		if (EVP_PKEY_id(pk) == EVP_PKEY_EC) {
			char group[32];
			size_t len = 0;
			if (EVP_PKEY_get_utf8_string_param(pk, "group", group, sizeof(group),
			                                   &len) == 1)
				snprintf(kx, sizeof(kx), "/ECDH=%s", group);
		} else if (EVP_PKEY_id(pk) == EVP_PKEY_DH) {
			snprintf(kx, sizeof(kx), "/DH=%d", EVP_PKEY_get_bits(pk));
		}
		EVP_PKEY_free(pk);
	}
	ERR_clear_error();
	snprintf(buf, size, "%s/%s%s", SSL_get_version(t->ssl), SSL_get_cipher_name(t->ssl), kx);
}

bool tls_conn_alpn_postgresql(const struct sbuf *sb)
{
	const unsigned char *p = NULL;
	unsigned int len = 0;

	if (sb->tls == NULL || sb->tls->hs != HS_DONE)
		return false;
	SSL_get0_alpn_selected(sb->tls->ssl, &p, &len);
	return len == sizeof(alpn_postgresql) - 2 && memcmp(p, alpn_postgresql + 1, len) == 0;
}

const char *tls_client_cert_cn(const struct conn *c)
{
	struct tls_conn *t = c->sbuf.tls;
	X509 *cert;
	X509_NAME *name;
	int idx, len;
	ASN1_STRING *data;
	unsigned char *utf8 = NULL;

	if (t == NULL || t->hs != HS_DONE || c->is_server)
		return NULL;
	if (t->cn_read)
		return t->cn;
	t->cn_read = true;
	if (SSL_get_verify_result(t->ssl) != X509_V_OK)
		return NULL;
	cert = SSL_get1_peer_certificate(t->ssl);
	if (cert == NULL)
		return NULL;
	name = X509_get_subject_name(cert);
	idx = name ? X509_NAME_get_index_by_NID(name, NID_commonName, -1) : -1;
	if (idx >= 0) {
		data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, idx));
		len = data ? ASN1_STRING_to_UTF8(&utf8, data) : -1;
		/* a CN with a NUL inside could pose as a shorter name: refuse it */
		if (len > 0 && memchr(utf8, '\0', (size_t)len) == NULL)
			t->cn = strndup((const char *)utf8, (size_t)len);
		OPENSSL_free(utf8);
	}
	X509_free(cert);
	return t->cn;
}

bool tls_client_cert_has_name(const struct conn *c, const char *name)
{
	struct tls_conn *t = c->sbuf.tls;
	X509 *cert;
	int rc;

	if (t == NULL || t->hs != HS_DONE || c->is_server ||
	    SSL_get_verify_result(t->ssl) != X509_V_OK)
		return false;
	cert = SSL_get1_peer_certificate(t->ssl);
	if (cert == NULL)
		return false;
	/* subjectAltName DNS entries, or the CN when there are none; no partial wildcards */
	rc = X509_check_host(cert, name, strlen(name), X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS, NULL);
	X509_free(cert);
	ERR_clear_error();
	return rc == 1;
}
