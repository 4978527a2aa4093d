/*
 * conn: buffered, non-blocking I/O for one socket on the libev loop. It owns
 * the file descriptor, the watchers and the two buffers; it knows nothing of
 * SMTP. Buffers come from a pool and go back whenever they are empty, so an
 * idle connection costs its struct and the kernel's socket, nothing more.
 * After conn_starttls the same calls go through libtls: the owner still
 * only sees bytes, plus the TLSREADY / TLSFAIL events of the handshake.
 */
#ifndef SMTPGW_CONN_H
#define SMTPGW_CONN_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <tls.h>

enum { CONN_BUF_SIZE = 16384 };

enum conn_event {
	CONN_DATAIN,  /* new bytes are in the input buffer */
	CONN_DRAINED, /* output that had to wait has all been written */
	CONN_TIMEOUT, /* the timer of conn_set_timeout fired */
	CONN_EOF,     /* the peer closed its side */
	CONN_ERROR,   /* read or write failed; the connection is unusable */
	CONN_TLSREADY, /* the STARTTLS handshake completed */
	CONN_TLSFAIL,  /* the handshake failed; see conn_tls_error */
};

/* conn_connect: the connection is up. Kept out of enum conn_event so that
 * the server's complete switches over it stay complete (-Wswitch): a
 * handler of an outgoing conn gets it as (enum conn_event)CONN_CONNECTED
 * and switches on (int)ev. */
enum { CONN_CONNECTED = CONN_TLSFAIL + 1 };

enum conn_tls_state {
	CONN_TLS_OFF,
	CONN_TLS_HANDSHAKE,
	CONN_TLS_ON,
};

struct conn;

/* Returns false when the owner has destroyed the conn inside the call, or
 * handed it on (an outbound connection parked for reuse): either way the
 * call that raised the event touches it no more. */
typedef bool conn_handler(struct conn *c, enum conn_event ev, void *owner);

struct conn {
	struct ev_loop *loop;
	int fd;
	ev_io io;
	ev_timer timer;
	char *in;
	size_t in_len;
	char *out;
	size_t out_len;
	size_t out_off;
	bool reading;
	struct tls *tls;
	enum conn_tls_state tls_state;
	bool tls_wants_write; /* libtls asked for POLLOUT to go on */
	bool tls_wants_read;  /* libtls asked for POLLIN to go on */
	bool tls_buffered;    /* libtls may hold decrypted bytes for us */
	conn_handler *handler;
	void *owner;
	bool connecting; /* conn_connect: waiting for the connection */
	bool deadline;	 /* the timeout is a deadline: reads do not
			    restart it (outbound replies are timed whole;
			    inbound sessions arm each deadline themselves) */
	int sock_error;	 /* errno of a failed conn_connect, else 0 */
	bool park_spent; /* woken while parked (conn.c's rearm) */
	bool read_all;	 /* a plain read in loop turn read_turn found the
			    socket empty: conn_stop need not drain it */
	unsigned read_turn;
};

void conn_start(struct conn *c, struct ev_loop *loop, int fd,
		conn_handler *handler, void *owner);
/* Closes the socket and returns the buffers; the struct is the owner's.
 * Input already queued in the kernel is read and dropped first (bounded;
 * skipped when a read of the same loop turn found none), so the close is a
 * FIN, not a reset that could destroy the last reply. */
void conn_stop(struct conn *c);

/* Input is read only while the owner wants it (back-pressure). */
void conn_set_reading(struct conn *c, bool on);
/* Arms the timer to fire `seconds` from now (0 disarms it). Without
 * `deadline` every read restarts it (an idle timeout); with it, only the
 * owner moves it, so a peer that drips bytes cannot stretch it. */
void conn_set_timeout(struct conn *c, double seconds);

const char *conn_input(const struct conn *c, size_t *len);
void conn_consume(struct conn *c, size_t n);

size_t conn_output_room(const struct conn *c);
/* Appends to the output buffer; false if it does not fit. */
bool conn_write(struct conn *c, const char *data, size_t len);
/* Writes what it can now; false on a write error. */
bool conn_flush(struct conn *c);
bool conn_output_pending(const struct conn *c);

/* The client side: opens a non-blocking socket to `addr` (with its port)
 * and connects. The result always arrives as an event, never from inside
 * this call: CONN_CONNECTED, or CONN_ERROR with the reason in
 * conn->sock_error (an errno value); CONN_TIMEOUT when the owner armed
 * conn_set_timeout and the connection did not come up in time. Until then
 * nothing is read or written. conn_stop ends it as any conn. */
void conn_connect(struct conn *c, struct ev_loop *loop,
		  const struct sockaddr_storage *addr, conn_handler *handler,
		  void *owner);

/* Drops the output not written yet: after a write error, an SMTP client
 * stops talking and reads what the server said before it hung up. */
void conn_discard_output(struct conn *c);

/* Starts the client side of a TLS handshake with a client config:
 * `servername` is sent as SNI (libtls leaves it out for an IP literal) and
 * is the name checked when the config verifies. Then as conn_starttls:
 * CONN_TLSREADY or CONN_TLSFAIL. False (see conn_tls_error) when it could
 * not even start, e.g. with bytes still in the input buffer. */
bool conn_starttls_client(struct conn *c, struct tls_config *cfg,
			  const char *servername);

/* Starts the server side of a TLS handshake on this socket (the input
 * buffer must be empty: plaintext never crosses into TLS). */
bool conn_starttls(struct conn *c, struct tls *server_ctx);
const char *conn_tls_error(const struct conn *c);

/* Frees the pooled buffers at exit (keeps leak checkers quiet). */
void conn_pool_release(void);

#endif
