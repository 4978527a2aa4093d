/*
 * conn: the only place that calls read(2)/write(2) on client sockets.
 * One read per readiness event into a 16 KiB buffer and one write per flush,
 * so pipelined commands cost one syscall each way, not one per line.
 */
#include "net/conn.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Free buffers kept for reuse; the loop is single-threaded. */
enum { POOL_KEEP = 256 };
static char *pool[POOL_KEEP];
static size_t pool_len;

static char *buffer_get(void)
{
	if (pool_len > 0)
		return pool[--pool_len];
	return malloc(CONN_BUF_SIZE);
}

static void buffer_put(char **buf)
{
	if (*buf == NULL)
		return;
	if (pool_len < POOL_KEEP)
		pool[pool_len++] = *buf;
	else
		free(*buf);
	*buf = NULL;
}

/* libtls may need the opposite readiness to finish a read or a write
 * (renegotiation, a record split across packets); ask for what it said. */
static int tls_events(const struct conn *c)
{
	return (c->tls_wants_read ? EV_READ : 0) |
	       (c->tls_wants_write ? EV_WRITE : 0);
}

static bool wants_input(const struct conn *c)
{
	return c->reading && c->in_len < CONN_BUF_SIZE;
}

/* What the owner's state needs the watcher to wait for. */
static int wanted_events(const struct conn *c)
{
	if (c->connecting)
		return EV_WRITE; /* writable: the connect has finished */
	if (c->tls_state == CONN_TLS_HANDSHAKE)
		return tls_events(c);
	if (c->tls_state == CONN_TLS_ON)
		return wants_input(c) || conn_output_pending(c) ? tls_events(c)
								 : 0;
	return (wants_input(c) ? EV_READ : 0) |
	       (conn_output_pending(c) ? EV_WRITE : 0);
}

/* Changes the watcher only when what it waits for changes, and without
 * ev_io_set: that marks the fd as new and costs an epoll_ctl even when
 * the events stay the same. Waiting for nothing is EV_READ "parked":
 * libev leaves a stopped fd in the epoll set, and starting it again later
 * tries EPOLL_CTL_ADD, which fails with EEXIST; so a connection that only
 * pauses its input (while a message syncs, while the 220 to STARTTLS goes
 * out) keeps its watcher. The first readiness nobody wants spends the
 * parking (io_cb); only then does the watcher stop. */
static void rearm(struct conn *c)
{
	int events;

	if (c->fd < 0 || (c->connecting && c->sock_error != 0))
		return; /* the failure is already on its way as an event */
	events = wanted_events(c);
	if (events != 0)
		c->park_spent = false;
	else if (!c->connecting && !c->park_spent)
		events = EV_READ;
	if (c->tls_state == CONN_TLS_ON && wants_input(c) && c->tls_buffered)
		ev_feed_event(c->loop, &c->io, EV_READ);
	if (events == (c->io.events & (EV_READ | EV_WRITE)) &&
	    ev_is_active(&c->io) == (events != 0))
		return;
	ev_io_stop(c->loop, &c->io);
	ev_io_modify(&c->io, events);
	if (events != 0)
		ev_io_start(c->loop, &c->io);
}

/* Maps libtls's answers onto read(2)/write(2) conventions: -1 with
 * EAGAIN when it wants more readiness, remembering which. */
static ssize_t tls_result(struct conn *c, ssize_t n)
{
	c->tls_wants_read = n == TLS_WANT_POLLIN;
	c->tls_wants_write = n == TLS_WANT_POLLOUT;
	if (n == TLS_WANT_POLLIN || n == TLS_WANT_POLLOUT) {
		errno = EAGAIN;
		return -1;
	}
	if (n < 0)
		errno = EIO;
	return n;
}

static ssize_t raw_read(struct conn *c, char *buf, size_t len)
{
	ssize_t n;

	if (c->tls_state != CONN_TLS_ON)
		return read(c->fd, buf, len);
	n = tls_result(c, tls_read(c->tls, buf, len));
	/* A full buffer may leave decrypted bytes inside libtls, where no
	 * socket event will ever announce them. */
	c->tls_buffered = n > 0 && (size_t)n == len;
	if (!c->tls_wants_read && !c->tls_wants_write)
		c->tls_wants_read = true;
	return n;
}

static ssize_t raw_write(struct conn *c, const char *buf, size_t len)
{
	ssize_t n;

	if (c->tls_state != CONN_TLS_ON)
		return write(c->fd, buf, len);
	n = tls_result(c, tls_write(c->tls, buf, len));
	if (!c->tls_wants_read && !c->tls_wants_write)
		c->tls_wants_read = true;
	return n;
}

static bool on_handshake(struct conn *c)
{
	int rc = tls_handshake(c->tls);

	if (rc == TLS_WANT_POLLIN || rc == TLS_WANT_POLLOUT) {
		c->tls_wants_read = rc == TLS_WANT_POLLIN;
		c->tls_wants_write = rc == TLS_WANT_POLLOUT;
		return true;
	}
	if (rc != 0)
		return c->handler(c, CONN_TLSFAIL, c->owner);
	c->tls_state = CONN_TLS_ON;
	c->tls_wants_read = true;
	c->tls_wants_write = false;
	return c->handler(c, CONN_TLSREADY, c->owner);
}

static bool on_readable(struct conn *c)
{
	ssize_t n;

	if (c->in_len == CONN_BUF_SIZE)
		return true; /* the owner has not made room yet */
	if (c->in == NULL && (c->in = buffer_get()) == NULL)
		return c->handler(c, CONN_ERROR, c->owner);
	n = raw_read(c, c->in + c->in_len, CONN_BUF_SIZE - c->in_len);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return true;
	/* A short read (or EOF) emptied the socket's queue just now. */
	c->read_all = c->tls_state == CONN_TLS_OFF && n >= 0 &&
		      (size_t)n < CONN_BUF_SIZE - c->in_len;
	c->read_turn = ev_iteration(c->loop);
	if (n <= 0)
		return c->handler(c, n == 0 ? CONN_EOF : CONN_ERROR, c->owner);
	c->in_len += (size_t)n;
	if (ev_is_active(&c->timer) && !c->deadline)
		ev_timer_again(c->loop, &c->timer);
	return c->handler(c, CONN_DATAIN, c->owner);
}

static bool on_writable(struct conn *c)
{
	if (!conn_flush(c))
		return c->handler(c, CONN_ERROR, c->owner);
	if (conn_output_pending(c))
		return true;
	return c->handler(c, CONN_DRAINED, c->owner);
}

/* The socket of conn_connect is writable (or the failure was fed in). */
static void on_connect_done(struct conn *c)
{
	int err = c->sock_error;
	socklen_t len = sizeof(err);
	struct sockaddr_storage peer;
	socklen_t peer_len = sizeof(peer);

	if (err == 0 &&
	    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
		err = errno;
	if (err == 0 &&
	    getpeername(c->fd, (struct sockaddr *)&peer, &peer_len) != 0) {
		if (errno != ENOTCONN)
			err = errno;
		else
			return; /* not really writable yet: keep waiting */
	}
	c->connecting = false;
	c->sock_error = err;
	ev_io_stop(c->loop, &c->io);
	if (err != 0) {
		c->handler(c, CONN_ERROR, c->owner);
		return;
	}
	if (c->handler(c, (enum conn_event)CONN_CONNECTED, c->owner))
		rearm(c);
}

static void io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct conn *c = w->data;

	(void)loop;
	if (c->connecting) {
		on_connect_done(c);
		return;
	}
	if (c->tls_state == CONN_TLS_HANDSHAKE) {
		if (!on_handshake(c))
			return;
		if (c->tls_state == CONN_TLS_ON)
			revents = EV_READ; /* bytes may already be waiting */
		else
			revents = 0;
	} else if (wanted_events(c) == 0) {
		c->park_spent = true; /* parked, and woken for nothing */
		revents = 0;
	} else if (c->tls_state == CONN_TLS_ON) {
		/* libtls decides what a readiness means; try both. */
		revents = EV_READ | (conn_output_pending(c) ? EV_WRITE : 0);
	}
	if ((revents & EV_WRITE) && conn_output_pending(c) && !on_writable(c))
		return;
	if ((revents & EV_READ) && c->reading && !on_readable(c))
		return;
	if (c->in != NULL && c->in_len == 0)
		buffer_put(&c->in);
	rearm(c);
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct conn *c = w->data;

	(void)loop;
	(void)revents;
	ev_timer_stop(c->loop, &c->timer);
	c->handler(c, CONN_TIMEOUT, c->owner);
}

void conn_start(struct conn *c, struct ev_loop *loop, int fd,
		conn_handler *handler, void *owner)
{
	memset(c, 0, sizeof(*c));
	c->loop = loop;
	c->fd = fd;
	c->handler = handler;
	c->owner = owner;
	ev_io_init(&c->io, io_cb, fd, 0);
	c->io.data = c;
	ev_init(&c->timer, timer_cb);
	c->timer.data = c;
}

/* close(2) with unread input sends a reset, and a reset can make the peer
 * lose the reply it has not read yet (our 421 or 554): drop what is
 * queued first. Bounded: a peer that keeps sending gets its reset. Not
 * when a read of this same loop turn found the queue empty (a QUIT read,
 * its 221 written, the close): a recv now would only say EAGAIN, and
 * what arrives after it gets the reset either way. */
static void drain_input(int fd)
{
	char sink[4096];

	for (int i = 0; i < 16; i++)
		if (recv(fd, sink, sizeof(sink), MSG_DONTWAIT) <= 0)
			break;
}

void conn_stop(struct conn *c)
{
	ev_io_stop(c->loop, &c->io);
	ev_timer_stop(c->loop, &c->timer);
	if (c->tls != NULL) {
		/* One try at close_notify; a blocked peer does not get more. */
		tls_close(c->tls);
		tls_free(c->tls);
		c->tls = NULL;
	}
	if (c->fd >= 0) {
		if (!c->connecting &&
		    !(c->read_all && c->read_turn == ev_iteration(c->loop)))
			drain_input(c->fd);
		close(c->fd);
	}
	c->fd = -1;
	buffer_put(&c->in);
	buffer_put(&c->out);
	c->in_len = c->out_len = c->out_off = 0;
}

void conn_set_reading(struct conn *c, bool on)
{
	c->reading = on;
	rearm(c);
}

void conn_set_timeout(struct conn *c, double seconds)
{
	if (seconds <= 0) {
		ev_timer_stop(c->loop, &c->timer);
		return;
	}
	c->timer.repeat = seconds;
	ev_timer_again(c->loop, &c->timer);
}

const char *conn_input(const struct conn *c, size_t *len)
{
	*len = c->in_len;
	return c->in;
}

void conn_consume(struct conn *c, size_t n)
{
	if (n >= c->in_len) {
		c->in_len = 0;
		return;
	}
	memmove(c->in, c->in + n, c->in_len - n);
	c->in_len -= n;
}

size_t conn_output_room(const struct conn *c)
{
	return CONN_BUF_SIZE - c->out_len;
}

bool conn_write(struct conn *c, const char *data, size_t len)
{
	if (len > conn_output_room(c))
		return false;
	if (c->out == NULL && (c->out = buffer_get()) == NULL)
		return false;
	memcpy(c->out + c->out_len, data, len);
	c->out_len += len;
	return true;
}

bool conn_output_pending(const struct conn *c)
{
	return c->out_off < c->out_len;
}

bool conn_flush(struct conn *c)
{
	if (c->connecting)
		return true; /* written once CONN_CONNECTED has come */
	while (conn_output_pending(c)) {
		ssize_t n = raw_write(c, c->out + c->out_off,
				      c->out_len - c->out_off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			break;
		if (n <= 0)
			return false;
		c->out_off += (size_t)n;
	}
	if (!conn_output_pending(c)) {
		c->out_off = c->out_len = 0;
		buffer_put(&c->out);
	}
	rearm(c);
	return true;
}

void conn_pool_release(void)
{
	while (pool_len > 0)
		free(pool[--pool_len]);
}

bool conn_starttls(struct conn *c, struct tls *server_ctx)
{
	if (c->in_len != 0 || tls_accept_socket(server_ctx, &c->tls, c->fd) != 0)
		return false;
	c->tls_state = CONN_TLS_HANDSHAKE;
	c->tls_wants_read = true;
	c->tls_wants_write = false;
	rearm(c);
	return true;
}

void conn_connect(struct conn *c, struct ev_loop *loop,
		  const struct sockaddr_storage *addr, conn_handler *handler,
		  void *owner)
{
	socklen_t len = addr->ss_family == AF_INET6
				? sizeof(struct sockaddr_in6)
				: sizeof(struct sockaddr_in);
	int fd = -1, err = 0;

	if (addr->ss_family != AF_INET && addr->ss_family != AF_INET6)
		err = EAFNOSUPPORT;
	else if ((fd = socket(addr->ss_family,
			      SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
			      0)) < 0)
		err = errno;
	else if (connect(fd, (const struct sockaddr *)addr, len) != 0 &&
		 errno != EINPROGRESS && errno != EINTR)
		err = errno;
	conn_start(c, loop, fd, handler, owner);
	c->connecting = true;
	c->sock_error = err;
	if (err != 0)
		ev_feed_event(loop, &c->io, EV_WRITE); /* reported from the loop */
	else
		rearm(c);
}

void conn_discard_output(struct conn *c)
{
	c->out_off = c->out_len = 0;
	buffer_put(&c->out);
	rearm(c);
}

bool conn_starttls_client(struct conn *c, struct tls_config *cfg,
			  const char *servername)
{
	if (c->in_len != 0 || c->tls != NULL || c->connecting)
		return false;
	if ((c->tls = tls_client()) == NULL ||
	    tls_configure(c->tls, cfg) != 0 ||
	    tls_connect_socket(c->tls, c->fd, servername) != 0)
		return false;
	c->tls_state = CONN_TLS_HANDSHAKE;
	c->tls_wants_read = false;
	c->tls_wants_write = true; /* the client speaks first */
	rearm(c);
	return true;
}

const char *conn_tls_error(const struct conn *c)
{
	const char *msg = c->tls ? tls_error(c->tls) : NULL;

	return msg ? msg : "handshake failed";
}
