/*
 * proxy_wait: behind proxy_wait.h. Owns each waiting connection (its fd,
 * its watchers, the header octets read so far) until it is handed on
 * (ready callback) or closed here; one free path, wait_free. It peeks at
 * what has arrived, asks proto/proxy.c how much of it is header, then
 * reads exactly that much. It never writes to the socket: the peer is a
 * load balancer, and a bad header only closes the connection (as
 * HAProxy's accept-proxy does).
 */
#include "inbound/proxy_wait.h"

#include "core/log.h"
#include "core/netaddr.h"
#include "proto/proxy.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct proxy_wait {
	ev_io io;
	ev_timer timer;
	struct proxy_waits *owner;
	struct proxy_wait *prev, *next;
	int fd;
	struct sockaddr_storage peer;
	size_t have;
	uint8_t buf[PROXY_MAX];
};

static void unlink_wait(struct proxy_wait *p)
{
	struct proxy_waits *w = p->owner;

	ev_io_stop(w->loop, &p->io);
	ev_timer_stop(w->loop, &p->timer);
	if (p->prev != NULL)
		p->prev->next = p->next;
	else
		w->head = p->next;
	if (p->next != NULL)
		p->next->prev = p->prev;
	w->n--;
}

static void wait_free(struct proxy_wait *p, bool close_fd)
{
	unlink_wait(p);
	if (close_fd)
		close(p->fd);
	free(p);
}

static void log_failure(const struct sockaddr_storage *peer,
			const char *reason)
{
	struct logline l;
	char ip[64];

	sockaddr_ip_text(peer, ip, sizeof(ip));
	log_begin(&l, LOG_WARN, "proxy_error");
	log_kv(&l, "proxy", "%s:%u", ip, sockaddr_port(peer));
	log_kv(&l, "reason", "%s", reason);
	log_end(&l);
}

static void fail(struct proxy_wait *p, const char *reason)
{
	log_failure(&p->peer, reason);
	wait_free(p, true);
}

static void finish(struct proxy_wait *p, const struct proxy_header *h)
{
	struct proxy_waits *w = p->owner;
	struct sockaddr_storage client =
		h->command == PROXY_CMD_PROXY ? h->src : p->peer;
	struct sockaddr_storage via = p->peer;
	int fd = p->fd;

	wait_free(p, false);
	w->ready(w->owner, fd, &client, &via);
}

/* Reads exactly n octets that a peek showed are there. */
static bool consume(int fd, size_t n)
{
	uint8_t sink[PROXY_MAX];

	return recv(fd, sink, n, 0) == (ssize_t)n;
}

static void on_readable(struct ev_loop *loop, ev_io *io, int revents)
{
	struct proxy_wait *p = io->data;
	struct proxy_header h;
	size_t used;
	const char *why;
	ssize_t n;

	(void)loop;
	(void)revents;
	n = recv(p->fd, p->buf + p->have, sizeof(p->buf) - p->have, MSG_PEEK);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		fail(p, n == 0 ? "closed before its PROXY header"
			       : strerror(errno));
		return;
	}
	switch (proxy_parse(p->buf, p->have + (size_t)n, &h, &used, &why)) {
	case PROXY_NEED_MORE: /* all of it is header: take it and wait */
		if (!consume(p->fd, (size_t)n))
			fail(p, "short read of a peeked header");
		else
			p->have += (size_t)n;
		return;
	case PROXY_DONE:
		if (!consume(p->fd, used - p->have))
			fail(p, "short read of a peeked header");
		else
			finish(p, &h);
		return;
	case PROXY_ERROR:
		break;
	}
	fail(p, why);
}

static void on_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
	(void)loop;
	(void)revents;
	fail(t->data, "no PROXY header in time");
}

void proxy_wait_start(struct proxy_waits *w, int fd,
		      const struct sockaddr_storage *peer, double timeout)
{
	struct proxy_wait *p;

	if (w->n >= w->max || (p = calloc(1, sizeof(*p))) == NULL) {
		log_failure(peer, "too many connections waiting for their "
				  "PROXY header");
		close(fd);
		return;
	}
	p->owner = w;
	p->fd = fd;
	p->peer = *peer;
	ev_io_init(&p->io, on_readable, fd, EV_READ);
	p->io.data = p;
	ev_timer_init(&p->timer, on_timeout, timeout, 0);
	p->timer.data = p;
	p->next = w->head;
	if (p->next != NULL)
		p->next->prev = p;
	w->head = p;
	w->n++;
	ev_io_start(w->loop, &p->io);
	ev_timer_start(w->loop, &p->timer);
}

void proxy_wait_close_all(struct proxy_waits *w)
{
	while (w->head != NULL)
		wait_free(w->head, true);
}
