/*
 * tls — TLS toward clients and toward servers, with OpenSSL, on the one event loop.
 *
 * Two contexts live in struct bouncer: the client-facing one (we are the TLS server, built from
 * client_tls_*) and the server-facing one (we are the TLS client, from server_tls_*). Each is
 * built whole from a config by tls_configure(); a config that cannot be built (missing or
 * unreadable file, a private key that others can read, unknown cipher or protocol) changes
 * nothing and says why, so the running contexts stay. A connection keeps a reference to the
 * context it was made with, so a reload never disturbs a live connection.
 *
 * A connection's TLS state (struct tls_conn) hangs off its sbuf (sb->tls). The handshake runs
 * here on an event of its own while the sbuf is paused; once it is done, the sbuf reads and
 * writes through tls_conn_recv()/tls_conn_send() and the relay code never knows. Renegotiation
 * is refused. A write that OpenSSL asks to retry is kept here (at most one record), so the sbuf
 * may offer different bytes next time without breaking OpenSSL's retry rule.
 */
#ifndef SB_TLS_H
#define SB_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct bouncer;
struct config;
struct conn;
struct sbuf;
struct tls_conn;
struct tls_state;

/*
 * Builds both contexts from cfg and, on success, swaps them in for b (the old ones are freed
 * once their last connection is gone). On failure err says why and b keeps what it had.
 */
bool tls_configure(struct bouncer *b, const struct config *cfg, char *err, size_t errsize)
        __attribute__((warn_unused_result));
/*
 * The same in two steps, for several workers that must use one set of contexts (read from the
 * files once): tls_build() makes both contexts from cfg (NULL with the reason in err);
 * tls_use() makes b use them (b takes references of its own; false only when out of memory on
 * b's first use), in b's own thread; tls_ctxs_free() drops the builder's references.
 */
struct tls_ctxs;
struct tls_ctxs *tls_build(const struct config *cfg, char *err, size_t errsize)
        __attribute__((warn_unused_result));
bool tls_use(struct bouncer *b, const struct tls_ctxs *ctxs) __attribute__((warn_unused_result));
void tls_ctxs_free(struct tls_ctxs *ctxs);
/* b uses the contexts from uses (at start, before b's thread runs); false when out of memory */
bool tls_share(struct bouncer *b, const struct bouncer *from) __attribute__((warn_unused_result));
/* Frees the contexts (at exit). */
void tls_free(struct bouncer *b);

/* True when a client's SSLRequest is answered 'S' (client_tls_sslmode is not disable). */
bool tls_client_side_enabled(const struct bouncer *b);
/* True when the server_tls_* settings of a and c differ (servers must then reconnect). */
bool tls_server_settings_differ(const struct config *a, const struct config *c);
/* True when a change of key needs tls_configure(): client_tls_*, server_tls_*, auth_type. */
bool tls_is_tls_key(const char *key);

/*
 * Called once the handshake has finished: ok, or failed with err (for the log). The callback
 * may close the connection (and so free the tls_conn).
 */
typedef void (*tls_done_fn)(void *arg, bool ok, const char *err);

/*
 * Starts the server half of a handshake on sb's socket (after 'S' was sent, or directly when
 * the first byte is a ClientHello). The sbuf must be paused; done is called from the loop.
 */
bool tls_accept(struct bouncer *b, struct sbuf *sb, tls_done_fn done, void *arg)
        __attribute__((warn_unused_result));
/*
 * Starts the client half toward a server; host is checked against the certificate under
 * server_tls_sslmode=verify-full.
 */
bool tls_connect(struct bouncer *b, struct sbuf *sb, const char *host, tls_done_fn done, void *arg)
        __attribute__((warn_unused_result));

/*
 * The sbuf's I/O. recv/send return a count, or -1 with errno EAGAIN (try again on the event
 * the sbuf waits for; *want_write when a read needs the socket writable) or another errno
 * (the connection is broken). send may keep a copy of bytes it reports as taken; the sbuf then
 * calls tls_conn_flush() on its write event until tls_conn_write_pending() is false.
 */
ssize_t tls_conn_recv(struct tls_conn *t, void *buf, size_t len, bool *want_write);
ssize_t tls_conn_send(struct tls_conn *t, const void *buf, size_t len);
/* Writes the kept bytes; false when the connection is broken. */
bool tls_conn_flush(struct tls_conn *t) __attribute__((warn_unused_result));
bool tls_conn_write_pending(const struct tls_conn *t);
/* Decrypted bytes OpenSSL holds that the socket's read event will not announce. */
bool tls_conn_read_pending(const struct tls_conn *t);
/* Sends close_notify if it can and frees t. */
void tls_conn_free(struct tls_conn *t);

/* The client chose ALPN "postgresql" (required of PostgreSQL 17's direct SSL connections). */
bool tls_conn_alpn_postgresql(const struct sbuf *sb);

/*
 * "TLSv1.3/TLS_AES_256_GCM_SHA384" (pgbouncer's shape; toward a server also "/ECDH=curve" or
 * "/DH=bits" when the key exchange used such a key), or "" without TLS.
 */
void tls_conn_info(const struct sbuf *sb, char *buf, size_t size);

/*
 * The CommonName of the client certificate that c presented and that verified against
 * client_tls_ca_file, or NULL (no TLS, no certificate, not verified, no CN). The string lives
 * as long as the connection. For auth_type=cert and the hba `cert` method.
 */
const char *tls_client_cert_cn(const struct conn *c);
/*
 * True when c's verified client certificate names name: one of its DNS subjectAltNames, or
 * its CN when it has none (pgbouncer's "certificate contains name"). For cert logins and the
 * names of an ident map.
 */
bool tls_client_cert_has_name(const struct conn *c, const char *name);

#endif
