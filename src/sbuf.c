/*
 * sbuf — see include/sbuf.h for the model. The relay loop is sbuf_process(): it hands packet
 * headers to the owner, advances parse_pos over forwarded bytes, and writes [done_pos,
 * parse_pos) to dst in one send() per round. A round ends when the buffer has no complete
 * header left, the owner pauses, or dst stops accepting; the buffer is compacted between rounds.
 */
#include "sbuf.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "log.h"
#include "proto.h"
#include "tls.h"

/* injected bytes, and a gathered packet forwarded whole, wait here */
#define OUT_MAX (2 * SBUF_GATHER_MAX)

static void sbuf_process(struct sbuf *sb);
static bool big_start(struct sbuf *sb);

/*
 * Receive buffers are lent while a connection has bytes to read or relay and taken back when it
 * has none, so an idle connection holds no buffer. A few spare ones of the last size asked for
 * are kept, so the usual round (a query in, its answer out) costs no malloc.
 */
#define SPARE_MAX 32
static _Thread_local struct {
	size_t size;
	int n;
	uint8_t *buf[SPARE_MAX];
} spare;

static inline bool buf_take(struct sbuf *sb)
{
	if (spare.n > 0 && spare.size == sb->size)
		sb->buf = spare.buf[--spare.n];
	else
		sb->buf = malloc(sb->size);
	return sb->buf != NULL;
}

static inline void buf_give_back(struct sbuf *sb)
{
	if (sb->buf == NULL)
		return;
	if (spare.size != sb->size) {
		while (spare.n > 0)
			free(spare.buf[--spare.n]);
		spare.size = sb->size;
	}
	if (spare.n < SPARE_MAX)
		spare.buf[spare.n++] = sb->buf;
	else
		free(sb->buf);
	sb->buf = NULL;
}

void sbuf_thread_done(void)
{
	while (spare.n > 0)
		free(spare.buf[--spare.n]);
}

/* Frees the buffer of a packet gathered whole. */
static void big_drop(struct sbuf *sb)
{
	if (sb->big != NULL) {
		pktbuf_free(sb->big);
		free(sb->big);
		sb->big = NULL;
	}
}

/* An empty buffer with no packet under way is given back. */
static inline void maybe_give_back(struct sbuf *sb)
{
	if (sb->recv_pos == 0 && sb->pkt_remain == 0 && !sb->collecting_big && !sb->big_ready)
		buf_give_back(sb);
}

static void on_write(evutil_socket_t fd, short what, void *arg);

/*
 * Asks for a write event. Most sockets never have to wait to be written, so the event is made
 * the first time one does; if it cannot be, the failure is reported from the read event (the
 * owner may be in the middle of something that must not see its peer close).
 */
static void want_write(struct sbuf *sb)
{
	if (sb->fd < 0 || sb->writing)
		return;
	if (sb->ev_write == NULL) {
		sb->ev_write = event_new(event_get_base(&sb->ev_read), sb->fd,
		                         EV_WRITE | EV_PERSIST, on_write, sb);
		if (sb->ev_write == NULL) {
			sb->broken = true;
			sb->write_oom = true;
			event_active(&sb->ev_read, EV_READ, 0);
			return;
		}
	}
	event_add(sb->ev_write, NULL);
	sb->writing = true;
}

/*
 * The socket's two calls, plain or through TLS. Under TLS the errno contract is the same
 * (EAGAIN: wait for the event), with two additions kept to these lines and to on_write():
 * a read may need the socket writable first, and a write may be held by tls.c and flushed later.
 */
static inline ssize_t sock_recv(struct sbuf *sb, void *buf, size_t len)
{
	bool needs_write = false;
	ssize_t n;

	if (sb->tls == NULL)
		return recv(sb->fd, buf, len, 0);
	n = tls_conn_recv(sb->tls, buf, len, &needs_write);
	if (needs_write) {
		sb->tls_read_wants_write = true;
		want_write(sb);
	}
	return n;
}

static inline ssize_t sock_send(struct sbuf *sb, const void *buf, size_t len)
{
	ssize_t n;

	if (sb->tls == NULL)
		return send(sb->fd, buf, len, MSG_NOSIGNAL);
	n = tls_conn_send(sb->tls, buf, len);
	if (tls_conn_write_pending(sb->tls))
		want_write(sb);
	return n;
}

/*
 * Sends what the socket takes of buf now: the bytes sent (counted in bytes_out), 0 when it
 * would block, or -1 when the connection broke (then marked broken).
 */
static ssize_t send_some(struct sbuf *sb, const void *buf, size_t len)
{
	for (;;) {
		ssize_t n = sock_send(sb, buf, len);
		if (n >= 0) {
			sb->bytes_out += (uint64_t)n;
			return n;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return 0;
		sb->broken = true;
		return -1;
	}
}

const char *sbuf_action_str(enum sbuf_action a)
{
	switch (a) {
	case SBUF_SEND:
		return "send";
	case SBUF_SKIP:
		return "skip";
	case SBUF_WAIT:
		return "wait";
	case SBUF_CONSUMED:
		return "consumed";
	case SBUF_PAUSE:
		return "pause";
	case SBUF_CLOSED:
		return "closed";
	case SBUF_FLUSH:
		return "flush";
	}
	return "?";
}

static inline void update_read_event(struct sbuf *sb)
{
	bool want = sb->fd >= 0 && (!sb->paused || sb->read_paused) && !sb->blocked && !sb->eof &&
	            sb->recv_pos < sb->size;

	if (want && !sb->reading) {
		event_add(&sb->ev_read, NULL);
		sb->reading = true;
		/* bytes OpenSSL already decrypted raise no event on the socket */
		if (sb->tls != NULL && tls_conn_read_pending(sb->tls))
			event_active(&sb->ev_read, EV_READ, 0);
	} else if (!want && sb->reading) {
		event_del(&sb->ev_read);
		sb->reading = false;
	}
}

static void fail(struct sbuf *sb, const char *reason)
{
	sb->protocol_violation = false;
	if (sb->reading) {
		event_del(&sb->ev_read);
		sb->reading = false;
	}
	sb->ops->failed(sb->owner, sb, reason);
}

/* Writes sb->out to the socket; false when the socket is broken. */
static bool flush_out(struct sbuf *sb)
{
	size_t off = 0;

	if (sb->broken)
		return false;
	while (off < sb->out.len) {
		ssize_t n = send_some(sb, sb->out.data + off, sb->out.len - off);
		if (n < 0)
			return false;
		if (n == 0)
			break;
		off += (size_t)n;
	}
	if (off == sb->out.len) {
		/* an idle connection keeps no memory for bytes it has sent */
		pktbuf_free(&sb->out);
		pktbuf_reset(&sb->out);
	} else if (off > 0) {
		memmove(sb->out.data, sb->out.data + off, sb->out.len - off);
		sb->out.len -= off;
	}
	if (sb->out.len > 0)
		want_write(sb);
	return true;
}

/*
 * dst's own queued bytes and then up to len relayed bytes, in one system call (a plain socket):
 * returns how many relayed bytes were taken.
 */
static size_t write_with_out(struct sbuf *dst, const uint8_t *p, size_t len)
{
	struct iovec iov[2] = {{dst->out.data, dst->out.len}, {(void *)p, len}};
	struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 2};
	ssize_t n;
	size_t own = dst->out.len;

	for (;;) {
		n = sendmsg(dst->fd, &mh, MSG_NOSIGNAL);
		if (n >= 0)
			break;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			dst->broken = true;
		want_write(dst);
		return 0;
	}
	dst->bytes_out += (uint64_t)n;
	if ((size_t)n < own) {
		memmove(dst->out.data, dst->out.data + n, own - (size_t)n);
		dst->out.len -= (size_t)n;
		want_write(dst);
		return 0;
	}
	pktbuf_free(&dst->out);
	pktbuf_reset(&dst->out);
	return (size_t)n - own;
}

/*
 * Writes up to len bytes to dst's socket, after dst's own queued bytes. Returns how many were
 * taken; a broken dst takes nothing and is told through its write event.
 */
static inline size_t write_to(struct sbuf *dst, const uint8_t *p, size_t len)
{
	ssize_t n;

	if (dst->fd < 0 || dst->broken) {
		want_write(dst);
		return 0;
	}
	if (dst->out.len > 0 && dst->tls == NULL)
		return write_with_out(dst, p, len);
	if (dst->out.len > 0) {
		if (!flush_out(dst)) {
			want_write(dst);
			return 0;
		}
		if (dst->out.len > 0)
			return 0;
	}
	for (;;) {
		n = sock_send(dst, p, len);
		if (n >= 0)
			break;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK) {
			dst->broken = true;
			want_write(dst);
		}
		return 0;
	}
	dst->bytes_out += (uint64_t)n;
	return (size_t)n;
}

/* Sends [done_pos, parse_pos) to dst. False when dst cannot take it all now (sb blocks). */
static inline bool flush_pending(struct sbuf *sb)
{
	size_t len = sb->parse_pos - sb->done_pos;
	size_t n;

	if (len == 0)
		return true;
	if (sb->dst == NULL) {
		/* nowhere to go: the owner unlinked mid-packet; dropping keeps the stream aligned
		 */
		sb->done_pos = sb->parse_pos;
		return true;
	}
	n = write_to(sb->dst, sb->buf + sb->done_pos, len);
	sb->done_pos += n;
	if (n < len) {
		sb->blocked = true;
		sb->dst->waiting_src = sb;
		want_write(sb->dst);
		update_read_event(sb);
		return false;
	}
	return true;
}

static inline void compact(struct sbuf *sb)
{
	if (sb->done_pos == sb->recv_pos) {
		sb->done_pos = sb->parse_pos = sb->recv_pos = 0;
	} else if (sb->done_pos > 0 && sb->size - sb->recv_pos < 512) {
		size_t keep = sb->recv_pos - sb->done_pos;
		memmove(sb->buf, sb->buf + sb->done_pos, keep);
		sb->parse_pos -= sb->done_pos;
		sb->recv_pos = keep;
		sb->done_pos = 0;
	}
}

_Thread_local struct sbuf_clock sbuf_clock;

static void read_ready(struct sbuf *sb);

static void on_read(evutil_socket_t fd, short what, void *arg)
{
	bool held = sbuf_clock.held;

	(void)fd;
	(void)what;
	sbuf_clock.held = true;
	read_ready(arg);
	sbuf_clock.held = held;
	if (!held)
		sbuf_clock.usec = 0;
}

static void read_ready(struct sbuf *sb)
{
	ssize_t n;

	if (sb->write_oom) {
		fail(sb, "out of memory");
		return;
	}
	if (sb->buf == NULL && !buf_take(sb)) {
		fail(sb, "out of memory");
		return;
	}
	if (sb->recv_pos == sb->size)
		compact(sb);
	if (sb->recv_pos == sb->size) {
		update_read_event(sb);
		return;
	}
	n = sock_recv(sb, sb->buf + sb->recv_pos, sb->size - sb->recv_pos);
	if (n < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
			maybe_give_back(sb);
			return;
		}
		fail(sb, strerror(errno));
		return;
	}
	if (n == 0) {
		sb->eof = true;
		fail(sb, "EOF");
		return;
	}
	sb->recv_pos += (size_t)n;
	sb->bytes_in += (uint64_t)n;
	sbuf_process(sb);
	/* more decrypted bytes wait in OpenSSL: read them on the next loop turn */
	if (sb->fd >= 0 && sb->reading && sb->tls != NULL && tls_conn_read_pending(sb->tls))
		event_active(&sb->ev_read, EV_READ, 0);
}

static void on_write(evutil_socket_t fd, short what, void *arg)
{
	struct sbuf *sb = arg;
	struct sbuf *src;

	(void)fd;
	(void)what;
	if (sb->writing) {
		event_del(sb->ev_write);
		sb->writing = false;
	}
	if (sb->tls != NULL) {
		if (!sb->broken && !tls_conn_flush(sb->tls))
			sb->broken = true;
		if (sb->tls_read_wants_write) {
			sb->tls_read_wants_write = false;
			if (sb->reading)
				event_active(&sb->ev_read, EV_READ, 0);
		}
	}
	if (sb->broken || !flush_out(sb)) {
		fail(sb, "socket write failed");
		return;
	}
	if (sb->tls != NULL && tls_conn_write_pending(sb->tls)) {
		want_write(sb);
		return;
	}
	if (sb->out.len > 0)
		return;
	src = sb->waiting_src;
	if (src != NULL) {
		sb->waiting_src = NULL;
		src->blocked = false;
		sbuf_process(src);
	}
}

/* The end of a round that relayed to gather: what was held for it leaves now. */
static inline void gather_end(struct sbuf *gather)
{
	if (gather == NULL || --gather->gathering > 0)
		return;
	if (gather->out.len > 0 && gather->fd >= 0 && !gather->writing && !flush_out(gather))
		want_write(gather);
}

bool sbuf_init(struct sbuf *sb, struct event_base *base, int fd, size_t bufsize, size_t max_pkt,
               const struct sbuf_ops *ops, void *owner)
{
	memset(sb, 0, sizeof(*sb));
	sb->fd = fd;
	sb->size = bufsize;
	sb->max_pkt = max_pkt;
	sb->ops = ops;
	sb->owner = owner;
	pktbuf_init(&sb->out, OUT_MAX);
	sb->big = NULL; /* made for a packet to gather whole (big_start()) */
	sb->buf = NULL; /* lent on the first read */
	event_assign(&sb->ev_read, base, fd, EV_READ | EV_PERSIST, on_read, sb);
	sb->ev_write = NULL; /* made by want_write() */
	sb->ev_ready = true;
	return true;
}

void sbuf_close(struct sbuf *sb)
{
	/* bytes held for a relay that will not come (a Terminate before a close): one try */
	if (sb->out.len > 0 && sb->fd >= 0 && !sb->broken && sb->tls == NULL)
		(void)flush_out(sb);
	if (sb->ev_ready) {
		event_del(&sb->ev_read);
		if (sb->ev_write != NULL) {
			/* may be on_write()'s own event: libevent no longer touches it after */
			event_free(sb->ev_write);
			sb->ev_write = NULL;
		}
		sb->ev_ready = false;
	}
	sb->reading = sb->writing = false;
	if (sb->dst != NULL && sb->dst->waiting_src == sb)
		sb->dst->waiting_src = NULL;
	if (sb->in_process > 0)
		gather_end(sb->dst);
	sb->dst = NULL;
	if (sb->waiting_src != NULL) {
		struct sbuf *src = sb->waiting_src;
		sb->waiting_src = NULL;
		src->blocked = false;
		if (src->dst == sb)
			src->dst = NULL;
	}
	if (sb->tls != NULL) {
		tls_conn_free(sb->tls);
		sb->tls = NULL;
	}
	if (sb->fd >= 0) {
		close(sb->fd);
		sb->fd = -1;
	}
	buf_give_back(sb);
	sb->size = sb->recv_pos = sb->parse_pos = sb->done_pos = 0;
	pktbuf_free(&sb->out);
	big_drop(sb);
}

bool sbuf_hand_off(struct sbuf *sb, const struct sbuf_pkt *pkt, struct sbuf_handoff *out)
{
	/* the packet is in the receive buffer, or gathered whole in big (offer_big()) */
	bool gathered = sb->big_ready && sb->big != NULL && pkt->body == sb->big->data + 4;
	size_t after = gathered ? sb->parse_pos : sb->parse_pos + pkt->len;
	size_t rest = sb->recv_pos > after ? sb->recv_pos - after : 0;
	uint8_t *data;

	if (!pkt->complete || pkt->type != 0 || sb->fd < 0 || sb->out.len > 0 || sb->writing ||
	    (sb->tls != NULL && tls_conn_write_pending(sb->tls)))
		return false;
	data = malloc(pkt->len + rest + 1);
	if (data == NULL)
		return false;
	/* a startup-phase packet's header is its length alone, just before its body */
	memcpy(data, pkt->body - 4, pkt->len);
	if (rest > 0)
		memcpy(data + pkt->len, sb->buf + after, rest);
	out->fd = sb->fd;
	out->tls = sb->tls;
	out->data = data;
	out->len = pkt->len + rest;
	out->first_len = pkt->len;
	out->bytes_in = sb->bytes_in;
	/* sb keeps its buffers (its owner's close frees them) but no longer the socket */
	if (sb->reading) {
		event_del(&sb->ev_read);
		sb->reading = false;
	}
	if (sb->ev_write != NULL) {
		event_free(sb->ev_write);
		sb->ev_write = NULL;
	}
	sb->tls = NULL;
	sb->fd = -1;
	return true;
}

bool sbuf_init_handed(struct sbuf *sb, struct event_base *base, struct sbuf_handoff *h,
                      size_t bufsize, size_t max_pkt, const struct sbuf_ops *ops, void *owner)
{
	size_t rest = h->len - h->first_len;
	bool gather = h->len > bufsize;

	if (!sbuf_init(sb, base, h->fd, bufsize, max_pkt, ops, owner))
		return false;
	/* a packet longer than the buffer is offered whole from big, as offer_big() does */
	if ((gather && (h->first_len > max_pkt || rest > bufsize)) || !buf_take(sb))
		goto fail;
	if (gather) {
		if (!big_start(sb))
			goto fail;
		pktbuf_put_bytes(sb->big, h->data, h->first_len);
		if (pktbuf_failed(sb->big))
			goto fail;
		sb->big_ready = true;
		sb->big_hdrlen = 4;
		memcpy(sb->buf, h->data + h->first_len, rest);
		sb->recv_pos = rest;
	} else {
		memcpy(sb->buf, h->data, h->len);
		sb->recv_pos = h->len;
	}
	sb->tls = h->tls;
	sb->bytes_in = h->bytes_in;
	free(h->data);
	memset(h, 0, sizeof(*h));
	h->fd = -1;
	return true;
fail:
	sb->fd = -1; /* not closed here: h still has it */
	sbuf_close(sb);
	return false;
}

void sbuf_handoff_abort(struct sbuf_handoff *h, const void *last, size_t len)
{
	if (h->fd >= 0 && last != NULL && len > 0) {
		if (h->tls != NULL) {
			/* what OpenSSL keeps for a retry gets one flush; then it is dropped */
			bool sent = tls_conn_send(h->tls, last, len) >= 0 && tls_conn_flush(h->tls);
			(void)sent;
		} else {
			(void)send(h->fd, last, len, MSG_NOSIGNAL | MSG_DONTWAIT);
		}
	}
	if (h->tls != NULL)
		tls_conn_free(h->tls);
	if (h->fd >= 0)
		close(h->fd);
	free(h->data);
	memset(h, 0, sizeof(*h));
	h->fd = -1;
}

void sbuf_resume(struct sbuf *sb)
{
	if (sb->fd < 0)
		return;
	sb->paused = false;
	sb->read_paused = false;
	if (sb->in_process) {
		sb->resume_pending = true;
		return;
	}
	sbuf_process(sb);
}

void sbuf_read_while_paused(struct sbuf *sb)
{
	sb->read_paused = true;
}

void sbuf_pause(struct sbuf *sb)
{
	sb->paused = true;
	sb->read_paused = false;
	update_read_event(sb);
}

void sbuf_set_dst_slow(struct sbuf *sb, struct sbuf *dst)
{
	if (sb->dst != NULL && sb->dst->waiting_src == sb)
		sb->dst->waiting_src = NULL;
	sb->blocked = false;
	if (sb->in_process > 0 && sb->dst != dst) {
		gather_end(sb->dst);
		if (dst != NULL)
			dst->gathering++;
	}
	sb->dst = dst;
}

bool sbuf_queue(struct sbuf *sb, const void *data, size_t len)
{
	const uint8_t *p = data;
	bool was_queued;

	if (sb->fd < 0 || sb->broken)
		return false;
	/*
	 * A peer is relaying to sb in this loop turn: the bytes wait for that relay, so that both
	 * leave in one system call (a rewritten Bind and the Execute and Sync after it), or for the
	 * end of the peer's round at the latest.
	 */
	if (sb->gathering > 0 && sb->tls == NULL && !sb->writing) {
		pktbuf_put_bytes(&sb->out, p, len);
		return !pktbuf_failed(&sb->out);
	}
	/* nothing queued before: straight to the socket, and only what it does not take is kept */
	while (sb->out.len == 0 && len > 0) {
		ssize_t n = send_some(sb, p, len);
		if (n < 0) {
			want_write(sb);
			return false;
		}
		if (n == 0)
			break;
		p += n;
		len -= (size_t)n;
	}
	if (len == 0)
		return true;
	was_queued = sb->out.len > 0;
	pktbuf_put_bytes(&sb->out, p, len);
	if (pktbuf_failed(&sb->out))
		return false;
	if (was_queued && !flush_out(sb)) {
		want_write(sb);
		return false;
	}
	if (sb->out.len > 0)
		want_write(sb);
	return true;
}

bool sbuf_queue_pktbuf(struct sbuf *sb, const struct pktbuf *pb)
{
	if (pktbuf_failed(pb))
		return false;
	return sbuf_queue(sb, pb->data, pb->len);
}

bool sbuf_queue_pktbuf_give(struct sbuf *sb, struct pktbuf *pb)
{
	if (pktbuf_failed(pb))
		return false;
	if (sb->fd < 0 || sb->broken)
		return false;
	/* held for the relay that follows (see sbuf_queue()): the memory itself moves to out */
	if (sb->gathering > 0 && sb->tls == NULL && !sb->writing && sb->out.data == NULL &&
	    !pb->fixed && pb->len <= OUT_MAX) {
		sb->out.data = pb->data;
		sb->out.len = pb->len;
		sb->out.cap = pb->cap;
		pb->data = NULL;
		pb->len = pb->cap = 0;
		return true;
	}
	return sbuf_queue(sb, pb->data, pb->len);
}

bool sbuf_queue_give(struct sbuf *sb, uint8_t *data, size_t len)
{
	bool ok;

	if (sb->fd >= 0 && !sb->broken && sb->gathering > 0 && sb->tls == NULL && !sb->writing &&
	    sb->out.data == NULL && len <= OUT_MAX) {
		sb->out.data = data;
		sb->out.len = sb->out.cap = len;
		return true;
	}
	ok = sbuf_queue(sb, data, len);
	free(data);
	return ok;
}

bool sbuf_has_pending(const struct sbuf *sb)
{
	return sb->parse_pos > sb->done_pos || sb->blocked;
}

bool sbuf_out_empty(const struct sbuf *sb)
{
	return sb->out.len == 0;
}

size_t sbuf_unparsed(const struct sbuf *sb)
{
	return sb->recv_pos - sb->parse_pos;
}

bool sbuf_mid_packet(const struct sbuf *sb)
{
	return sb->pkt_remain > 0 && sb->pkt_action == SBUF_SEND;
}

/* A malformed or over-long packet: the owner may answer with a protocol error before closing. */
static void fail_protocol(struct sbuf *sb, const char *reason)
{
	if (sb->reading) {
		event_del(&sb->ev_read);
		sb->reading = false;
	}
	sb->protocol_violation = true;
	sb->ops->failed(sb->owner, sb, reason);
}

/* Moves the bytes of the current packet that are in memory past parse_pos. */
static bool advance_packet(struct sbuf *sb)
{
	size_t avail = sb->recv_pos - sb->parse_pos;
	size_t n = avail < sb->pkt_remain ? avail : sb->pkt_remain;

	if (sb->pkt_action != SBUF_SEND && sb->parse_pos > sb->done_pos) {
		if (!flush_pending(sb))
			return false;
	}
	if (sb->pkt_action == SBUF_SEND && sb->scan_packet && n > 0 && sb->ops->scan != NULL &&
	    !sb->ops->scan(sb->owner, sb, sb->buf + sb->parse_pos, n))
		return false;
	sb->parse_pos += n;
	sb->pkt_remain -= (uint32_t)n;
	if (sb->pkt_remain == 0)
		sb->scan_packet = false;
	if (sb->pkt_action != SBUF_SEND)
		sb->done_pos = sb->parse_pos;
	return true;
}

/* A packet to gather whole: its buffer is made now and freed once the packet is offered. */
static bool big_start(struct sbuf *sb)
{
	if (sb->big == NULL) {
		sb->big = malloc(sizeof(*sb->big));
		if (sb->big == NULL)
			return false;
		pktbuf_init(sb->big, sb->max_pkt);
	}
	return true;
}

/*
 * Gathers a packet that is larger than the buffer into sb->big (the complete-packet path), then
 * offers it whole. Returns false when processing must stop.
 */
static bool collect_big(struct sbuf *sb)
{
	size_t avail = sb->recv_pos - sb->parse_pos;
	size_t n = avail < sb->pkt_remain ? avail : sb->pkt_remain;

	pktbuf_put_bytes(sb->big, sb->buf + sb->parse_pos, n);
	sb->parse_pos += n;
	sb->done_pos = sb->parse_pos;
	sb->pkt_remain -= (uint32_t)n;
	if (pktbuf_failed(sb->big)) {
		fail(sb, "out of memory for a large packet");
		return false;
	}
	if (sb->pkt_remain > 0)
		return true;
	sb->collecting_big = false;
	sb->big_ready = true;
	return true;
}

/*
 * A packet handler answered SBUF_PAUSE: true when it was resumed from inside the callback (the
 * same packet is offered again), else the sbuf stays paused.
 */
static bool handler_paused(struct sbuf *sb)
{
	if (sb->resume_pending) {
		sb->resume_pending = false;
		sb->read_paused = false;
		return true;
	}
	sb->paused = true;
	return false;
}

/* Offers a gathered large packet (again after a pause). False when processing must stop. */
static bool offer_big(struct sbuf *sb)
{
	struct sbuf_pkt pkt;
	enum sbuf_action act;

	memset(&pkt, 0, sizeof(pkt));
	/* a startup-phase packet has no type byte: its header is the length alone */
	pkt.type = sb->big_hdrlen == 4 ? 0 : sb->big->data[0];
	pkt.len = (uint32_t)sb->big->len;
	pkt.complete = true;
	pkt.body = sb->big->data + sb->big_hdrlen;
	pkt.body_len = pkt.body_avail = sb->big->len - sb->big_hdrlen;
	act = sb->ops->packet(sb->owner, sb, &pkt);
	switch (act) {
	case SBUF_CLOSED:
		return false;
	case SBUF_PAUSE:
		return handler_paused(sb);
	case SBUF_WAIT:
	case SBUF_FLUSH:
		fail(sb, "packet handler cannot wait on a gathered packet");
		return false;
	case SBUF_SEND:
		if (sb->dst != NULL && !sbuf_queue(sb->dst, sb->big->data, sb->big->len)) {
			sb->big_ready = false;
			big_drop(sb);
			fail(sb, "cannot forward a large packet");
			return false;
		}
		break;
	case SBUF_SKIP:
	case SBUF_CONSUMED:
		break;
	}
	sb->big_ready = false;
	big_drop(sb); /* a client that once sent a large query keeps no buffer for it */
	return true;
}

/*
 * A packet too big to gather is offered once its first min(len, size / 2) bytes are in memory, so
 * that the owner decides on a prefix of known size whatever the reads' sizes. Moves the unparsed
 * bytes to the front of the buffer when the prefix would not fit after them. Sets *need_more
 * while waiting; false when processing must stop.
 */
static bool wait_for_prefix(struct sbuf *sb, uint32_t len, const uint8_t **p, size_t *avail,
                            bool *need_more)
{
	size_t want = len < sb->size / 2 ? len : sb->size / 2;

	if (*avail >= want)
		return true;
	if (sb->parse_pos + want > sb->size) {
		size_t keep = sb->recv_pos - sb->parse_pos;
		if (sb->parse_pos > sb->done_pos && !flush_pending(sb))
			return false;
		memmove(sb->buf, sb->buf + sb->parse_pos, keep);
		sb->done_pos = sb->parse_pos = 0;
		sb->recv_pos = keep;
		*p = sb->buf;
	}
	*need_more = true;
	return true;
}

/* What the owner lets pass unseen now (struct sbuf_ops pass_types). */
static inline const uint8_t *pass_types(struct sbuf *sb)
{
	return sb->ops->pass_types != NULL ? sb->ops->pass_types(sb->owner) : NULL;
}

/*
 * Offers the next packet header to the owner, unless its type is in *pass (asked again when the
 * owner answered anything but SBUF_SEND). False when processing must stop.
 */
static bool next_packet(struct sbuf *sb, bool *need_more, const uint8_t **pass)
{
	const uint8_t *p = sb->buf + sb->parse_pos;
	size_t avail = sb->recv_pos - sb->parse_pos;
	bool startup = sb->startup_phase;
	size_t hdrlen = startup ? 4 : 5;
	struct sbuf_pkt pkt;
	enum pkt_status st;
	enum sbuf_action act;
	struct pkt_hdr hdr;
	uint32_t len;

	if (startup)
		st = proto_read_startup_header(p, avail, 10000, &len);
	else
		st = proto_read_header(p, avail, 0x7fffffffu, &hdr);
	if (st == PKT_NEED_MORE) {
		*need_more = true;
		return true;
	}
	if (st == PKT_BAD) {
		fail_protocol(sb, startup ? "invalid length of startup packet"
		                          : "invalid message length");
		return false;
	}
	/* every field of pkt is set here, before the owner sees it */
	if (startup) {
		pkt.type = 0;
	} else {
		len = hdr.len;
		pkt.type = hdr.type;
	}
	if (*pass != NULL && !startup && sbuf_type_in(*pass, pkt.type)) {
		/* relayed as an SBUF_SEND answer would have it, without asking */
		if (avail >= len) {
			sb->parse_pos += len;
		} else {
			sb->pkt_action = SBUF_SEND;
			sb->pkt_remain = len;
		}
		return true;
	}
	pkt.len = len;
	pkt.complete = avail >= len;
	pkt.too_big = len > sb->max_pkt;
	if (pkt.too_big && !pkt.complete && !wait_for_prefix(sb, len, &p, &avail, need_more))
		return false;
	if (*need_more)
		return true;
	pkt.body = p + hdrlen;
	pkt.body_len = len - hdrlen;
	pkt.body_avail = (avail < len ? avail : len) - hdrlen;

	act = sb->ops->packet(sb->owner, sb, &pkt);
	if (act != SBUF_CLOSED && act != SBUF_SEND)
		*pass = pass_types(sb);
	switch (act) {
	case SBUF_CLOSED:
		return false;
	case SBUF_FLUSH:
		if (sb->parse_pos == sb->done_pos) {
			fail(sb, "packet handler asked to flush nothing");
			return false;
		}
		/* blocked: the peer's write event runs sbuf_process() again, which re-offers */
		return flush_pending(sb);
	case SBUF_PAUSE:
		return handler_paused(sb);
	case SBUF_WAIT:
		if (pkt.complete) {
			fail(sb, "packet handler asked to wait for a complete packet");
			return false;
		}
		if (len > sb->size - 0) {
			if (len > sb->max_pkt) {
				fail_protocol(sb, "packet too large");
				return false;
			}
			if (sb->parse_pos > sb->done_pos && !flush_pending(sb))
				return false;
			if (!big_start(sb)) {
				fail(sb, "out of memory for a large packet");
				return false;
			}
			sb->collecting_big = true;
			sb->big_hdrlen = (uint8_t)hdrlen;
			sb->pkt_remain = len;
			return true;
		}
		*need_more = true;
		return true;
	case SBUF_CONSUMED:
		if (!pkt.complete) {
			fail(sb, "packet handler consumed an incomplete packet");
			return false;
		}
		sb->round_used = true;
		/* fallthrough */
	case SBUF_SKIP:
	case SBUF_SEND:
		if (act == SBUF_SEND && pkt.complete && !sb->scan_packet) {
			/* here whole and not scanned: it leaves with the bytes before it */
			sb->parse_pos += len;
			return true;
		}
		sb->pkt_action = act == SBUF_SEND ? SBUF_SEND : SBUF_SKIP;
		sb->pkt_remain = len;
		return true;
	}
	return false;
}

static void sbuf_process(struct sbuf *sb)
{
	bool sent_any = false;
	const uint8_t *pass;

	if (sb->fd < 0 || sb->in_process)
		return;
	if (sb->buf == NULL) {
		/* nothing received since the buffer went back: nothing to parse */
		update_read_event(sb);
		return;
	}
	/* while the round runs, its dst (also one linked during it: sbuf_set_dst()) gathers */
	sb->in_process++;
	sb->round_used = false;
	if (sb->dst != NULL)
		sb->dst->gathering++;
	pass = pass_types(sb);
	while (!sb->paused && !sb->blocked && sb->fd >= 0) {
		bool need_more = false;

		sb->resume_pending = false;

		if (sb->big_ready) {
			if (!offer_big(sb))
				break;
			pass = pass_types(sb);
			continue;
		}
		if (sb->collecting_big) {
			if (sb->recv_pos == sb->parse_pos)
				break;
			if (!collect_big(sb))
				goto out;
			continue;
		}
		if (sb->pkt_remain > 0) {
			if (sb->recv_pos == sb->parse_pos)
				break;
			if (!advance_packet(sb))
				goto out;
			continue;
		}
		if (!next_packet(sb, &need_more, &pass))
			break;
		if (need_more)
			break;
	}
	if (sb->fd < 0)
		goto out;
	if (sb->parse_pos > sb->done_pos) {
		sent_any = true;
		if (!flush_pending(sb))
			goto out;
	}
	compact(sb);
	maybe_give_back(sb);
	update_read_event(sb);
	sb->in_process--;
	gather_end(sb->dst);
	if ((sent_any || sb->round_used) && sb->ops->flushed != NULL)
		sb->ops->flushed(sb->owner, sb);
	return;
out:
	if (sb->fd >= 0) {
		compact(sb);
		update_read_event(sb);
	}
	sb->in_process--;
	gather_end(sb->dst);
}
