/*
 * sbuf — one socket's stream buffer and the packet relay between two sockets.
 *
 * Bytes read from a socket land in its fixed buffer (pkt_buf bytes). The owner is shown each
 * packet header as it arrives and decides what happens to it: forwarded to the peer socket
 * straight from this buffer (no copy, even for packets larger than the buffer), skipped, used by
 * the owner once complete, or held (the relay pauses at that packet until the owner resumes).
 * If the peer cannot take more bytes, this socket stops reading until the peer drains: memory
 * stays bounded by the buffer size whatever the traffic.
 *
 * Invariants: 0 <= done_pos <= parse_pos <= recv_pos <= size. [done_pos, parse_pos) is parsed
 * data waiting to be written to dst; [parse_pos, recv_pos) is not yet parsed.
 * Bytes an owner injects into its own socket (errors, auth requests) wait in `out` and always
 * leave before relayed bytes from a peer.
 */
#ifndef SB_SBUF_H
#define SB_SBUF_H

#include <event2/event.h>
#include <event2/event_struct.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pktbuf.h"

struct sbuf;
struct tls_conn;

/*
 * The largest packet an owner may ask to see whole (SBUF_WAIT) and then forward: the pooler's own
 * bound on what one connection holds in memory beyond its buffer. Larger packets stream.
 */
#define SBUF_GATHER_MAX (1024 * 1024)

enum sbuf_action {
	SBUF_SEND,     /* forward the packet to dst as it streams in */
	SBUF_SKIP,     /* drop the packet */
	SBUF_WAIT,     /* call again once the whole packet is in memory */
	SBUF_CONSUMED, /* the owner used the complete packet; drop it */
	SBUF_PAUSE,    /* stop before this packet; the owner calls sbuf_resume() later */
	SBUF_CLOSED,   /* the owner closed the connection: touch nothing more */
	SBUF_FLUSH,    /* write what is parsed to dst first, then offer this packet again (the
	                  owner is about to inject bytes into dst that must follow them) */
};
const char *sbuf_action_str(enum sbuf_action a);

struct sbuf_pkt {
	uint8_t type;        /* 0 for a startup-phase packet */
	uint32_t len;        /* whole packet, header included */
	bool complete;       /* the whole packet is in memory */
	const uint8_t *body; /* after the header; valid for avail - header bytes */
	size_t body_len;     /* len minus header */
	size_t body_avail;   /* how much of the body is in memory now */
	bool too_big;        /* longer than the sbuf gathers whole (max_pkt): SBUF_WAIT fails;
	                        offered once a prefix of min(len, size / 2) bytes is in memory */
};

struct sbuf_ops {
	enum sbuf_action (*packet)(void *owner, struct sbuf *sb, const struct sbuf_pkt *pkt);
	/*
	 * Everything parsed so far has been written to dst, after a round that relayed bytes or
	 * whose owner used a packet (may be NULL).
	 */
	void (*flushed)(void *owner, struct sbuf *sb);
	/* EOF, socket error, malformed packet: the owner must close. reason is for the log;
	 * sb->protocol_violation tells a malformed or over-long packet from a socket problem. */
	void (*failed)(void *owner, struct sbuf *sb, const char *reason);
	/* Optional: shown each chunk of a forwarded packet whose owner set sb->scan_packet, before
	 * it is forwarded. False: the owner has closed the connection (touch nothing more). */
	bool (*scan)(void *owner, struct sbuf *sb, const uint8_t *data, size_t len);
	/*
	 * Optional: the message types the owner lets through unseen now, as a set of 256 bits
	 * (type t: bit t % 8 of byte t / 8), or NULL for none. Such a message is forwarded as if
	 * packet() had answered SBUF_SEND, without the call. Asked at the start of each round and
	 * again after a packet() call that answered anything but SBUF_SEND: a handler that changes
	 * what its owner must see answers otherwise, and nothing else changes it while a round
	 * runs.
	 */
	const uint8_t *(*pass_types)(void *owner);
};

/* Whether type is in a pass_types() set. */
static inline bool sbuf_type_in(const uint8_t *set, uint8_t type)
{
	return (set[type >> 3] >> (type & 7)) & 1;
}

struct sbuf {
	int fd;
	int in_process;
	int gathering; /* rounds of peers relaying to this socket now: sbuf_queue() holds bytes */
	uint32_t pkt_remain; /* bytes of the current packet still to forward or skip */
	enum sbuf_action pkt_action;
	bool startup_phase;  /* packets have no type byte (StartupMessage, SSLRequest …) */
	bool paused;         /* owner does not want packets now */
	bool read_paused;    /* while paused, go on reading (into the buffer) to see EOF at once */
	bool resume_pending; /* sbuf_resume() was called from inside a packet callback */
	bool blocked;        /* waiting for dst to become writable */
	bool broken;         /* a write to this socket failed */
	bool eof;
	bool protocol_violation; /* the last failure was a malformed or over-long packet */
	bool scan_packet;        /* the packet being forwarded goes through ops->scan */
	bool round_used;         /* the owner used a packet in this round (ops->flushed after it) */
	bool ev_ready, reading, writing;
	bool write_oom; /* ev_write could not be made: fails from the next read event */
	bool collecting_big;
	bool big_ready;            /* gathered whole, to be offered (again, after a pause) */
	uint8_t big_hdrlen;        /* 4 for a startup-phase packet, else 5 */
	bool tls_read_wants_write; /* a TLS read waits for the socket to become writable */
	struct event ev_read;
	struct event *ev_write; /* made when the socket first has to wait to be written */
	uint8_t *buf; /* lent while there are bytes to read or relay, NULL when idle (sbuf.c) */
	size_t size, recv_pos, parse_pos, done_pos;
	struct pktbuf *big; /* a packet larger than buf that the owner wants whole (NULL: none) */
	size_t max_pkt;
	struct sbuf *dst;         /* where SBUF_SEND bytes go */
	struct sbuf *waiting_src; /* a peer blocked on our writability */
	struct pktbuf out;        /* bytes the owner injected into this socket */
	const struct sbuf_ops *ops;
	void *owner;
	uint64_t bytes_in, bytes_out;
	/* TLS (tls.c) once a handshake started; NULL on a plain socket. Owned by the sbuf. */
	struct tls_conn *tls;
};

/*
 * Sets up sb on a connected non-blocking fd (owned by sb from now on: sbuf_close() closes it).
 * bufsize is pkt_buf; max_pkt caps a packet that the owner asks to see whole (a packet longer
 * than that is offered with too_big set; an owner that forwards gathered packets keeps max_pkt
 * at or below SBUF_GATHER_MAX).
 */
bool sbuf_init(struct sbuf *sb, struct event_base *base, int fd, size_t bufsize, size_t max_pkt,
               const struct sbuf_ops *ops, void *owner) __attribute__((warn_unused_result));
/* Stops all events, closes the fd and frees buffers. Safe to call twice. */
void sbuf_close(struct sbuf *sb);

/*
 * A socket on its way from one worker's loop to another's (workers.h): the descriptor, its TLS
 * state (an SSL may change threads while nobody else uses it), and the bytes received and not
 * yet used, the packet being offered first (first_len bytes of data).
 */
struct sbuf_handoff {
	int fd;
	struct tls_conn *tls;
	uint8_t *data; /* malloc'd */
	size_t len, first_len;
	uint64_t bytes_in;
};
/*
 * From inside the owner's packet callback, for pkt (a complete startup-phase packet): moves the
 * socket, its TLS state, pkt and every byte received after it into out, and leaves sb with no
 * socket (the owner closes it and answers SBUF_CLOSED). False (nothing moved) when out of
 * memory, or when sb still has bytes to write, which cannot move.
 */
bool sbuf_hand_off(struct sbuf *sb, const struct sbuf_pkt *pkt, struct sbuf_handoff *out)
        __attribute__((warn_unused_result));
/*
 * sbuf_init() on the receiving loop's base for a socket handed off: h's descriptor, TLS state
 * and bytes are sb's from now on (h is emptied); sbuf_resume() then offers the bytes as if
 * they had just been read. False (h untouched) when out of memory or the bytes do not fit.
 */
bool sbuf_init_handed(struct sbuf *sb, struct event_base *base, struct sbuf_handoff *h,
                      size_t bufsize, size_t max_pkt, const struct sbuf_ops *ops, void *owner)
        __attribute__((warn_unused_result));
/*
 * A handed-off socket that nobody takes: one try to write last (a FATAL, may be NULL) without
 * waiting, then the socket is closed and h's memory freed.
 */
void sbuf_handoff_abort(struct sbuf_handoff *h, const void *last, size_t len);

/* Starts (or restarts after a pause) reading and delivering packets. */
void sbuf_resume(struct sbuf *sb);
/* Stops reading and delivering packets (also a pause that read on); what was read stays. */
void sbuf_pause(struct sbuf *sb);
/*
 * For the pause the owner's current packet handler is about to ask for (SBUF_PAUSE): go on
 * reading into the buffer (not delivering) while paused, so that the peer's disconnect is seen
 * at once; until the buffer is full. Ends with sbuf_resume().
 */
void sbuf_read_while_paused(struct sbuf *sb);

/* sbuf_set_dst()'s general case; call sbuf_set_dst(). */
void sbuf_set_dst_slow(struct sbuf *sb, struct sbuf *dst);

/* Links the relay target (NULL to unlink). A blocked link is released first. */
static inline void sbuf_set_dst(struct sbuf *sb, struct sbuf *dst)
{
	/* the usual case (no round under way, no write waited for) inline: twice per transaction */
	if (sb->in_process > 0 || (sb->dst != NULL && sb->dst->waiting_src == sb)) {
		sbuf_set_dst_slow(sb, dst);
		return;
	}
	sb->blocked = false;
	sb->dst = dst;
}

/* Queues bytes to be written to sb's own socket, before any relayed bytes. */
bool sbuf_queue(struct sbuf *sb, const void *data, size_t len) __attribute__((warn_unused_result));
/* Queues a built message buffer; false if pb failed or the socket is broken. */
bool sbuf_queue_pktbuf(struct sbuf *sb, const struct pktbuf *pb)
        __attribute__((warn_unused_result));

/*
 * sbuf_queue_pktbuf() that may take pb's memory instead of copying it (pb is left empty; the
 * caller still calls pktbuf_free()).
 */
bool sbuf_queue_pktbuf_give(struct sbuf *sb, struct pktbuf *pb) __attribute__((warn_unused_result));

/*
 * Queues len bytes of heap memory (malloc) that sb owns from now on, whatever the answer: held as
 * they are for the relay that follows when one is gathering, else sent or copied and freed.
 */
bool sbuf_queue_give(struct sbuf *sb, uint8_t *data, size_t len)
        __attribute__((warn_unused_result));

/* True when parsed bytes still wait to be written to dst. */
bool sbuf_has_pending(const struct sbuf *sb);
/* True when sb has nothing queued for its own socket. */
bool sbuf_out_empty(const struct sbuf *sb);
/* Bytes received but not yet delivered. */
size_t sbuf_unparsed(const struct sbuf *sb);
/* True when part of a packet was forwarded to dst and the rest has not been: the peer holds a
 * truncated message and cannot be given to anyone else. */
bool sbuf_mid_packet(const struct sbuf *sb);

/*
 * The clock of a read callback: while one runs (held), bouncer_now_usec() reads the clock once
 * and answers the same time until it returns (usec 0: not read yet). A callback is the bytes
 * of one recv(), handled in microseconds; its users (request, query and wait times, timeouts)
 * measure from one event to another. Outside a read callback every call reads the clock.
 */
struct sbuf_clock {
	uint64_t usec;
	bool held;
};
/*
 * Per thread: each worker's loop has its own. local-exec: the program is the only module that
 * uses it, so a read is one %fs-relative load, as cheap as the global it was.
 */
extern _Thread_local struct sbuf_clock sbuf_clock __attribute__((tls_model("local-exec")));

/* Frees the calling thread's spare buffers (a worker's thread, before it ends). */
void sbuf_thread_done(void);

#endif
