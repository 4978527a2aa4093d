/*
 * listener: listening sockets and the connection limits. A connection over
 * a limit gets its 421 straight from here and never becomes a session. The
 * per-address counters live in a small chained hash table keyed by the
 * address bytes, so the check costs the same with 10 or 10000 clients.
 */
#include "inbound/listener.h"

#include "core/config.h"
#include "core/netaddr.h"
#include "policy/generation.h"
#include "core/log.h"
#include "inbound/smtp_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Workers share each listening socket and all wake on a new connection;
 * taking a few per wake-up leaves the rest to the others, so a worker busy
 * with handshakes does not hoard the backlog. */
enum { CLIENT_BUCKETS = 1024, ACCEPTS_PER_EVENT = 4 };

struct client_count {
	struct client_count *next;
	uint8_t addr[16];
	unsigned count;
};

struct listen_sock {
	ev_io io;
	struct listener *owner;
};

struct listener {
	struct server *srv;
	struct listen_sock *socks;
	size_t n_socks;
	struct client_count *clients[CLIENT_BUCKETS];
};

/* IPv4 addresses are stored in their v4-mapped IPv6 form. */
static void address_key(const struct sockaddr_storage *ss, uint8_t key[16])
{
	memset(key, 0, 16);
	if (ss->ss_family == AF_INET6) {
		memcpy(key, &((const struct sockaddr_in6 *)ss)->sin6_addr, 16);
		return;
	}
	key[10] = key[11] = 0xff;
	memcpy(key + 12, &((const struct sockaddr_in *)ss)->sin_addr, 4);
}

static struct client_count **find_client(struct listener *l,
					 const uint8_t key[16])
{
	uint32_t h = 2166136261u; /* FNV-1a */
	struct client_count **p;

	for (int i = 0; i < 16; i++)
		h = (h ^ key[i]) * 16777619u;
	p = &l->clients[h % CLIENT_BUCKETS];
	while (*p != NULL && memcmp((*p)->addr, key, 16) != 0)
		p = &(*p)->next;
	return p;
}

void listener_client_gone(struct listener *l,
			  const struct sockaddr_storage *peer)
{
	uint8_t key[16];
	struct client_count **p, *c;

	address_key(peer, key);
	p = find_client(l, key);
	if ((c = *p) == NULL)
		return;
	if (--c->count == 0) {
		*p = c->next;
		free(c);
	}
}

enum admission {
	ADMITTED,
	REFUSED_DRAINING,
	REFUSED_TOTAL,
	REFUSED_PER_IP,
	REFUSED_MEMORY,
};

/* Counts the client in, or says why it is refused. */
static enum admission admit(struct listener *l,
			    const struct sockaddr_storage *peer)
{
	const struct config *cfg = l->srv->gen->cfg;
	uint8_t key[16];
	struct client_count **p;

	if (l->srv->draining)
		return REFUSED_DRAINING;
	if (l->srv->n_sessions >= cfg->max_connections)
		return REFUSED_TOTAL;
	address_key(peer, key);
	p = find_client(l, key);
	if (*p == NULL) {
		if ((*p = calloc(1, sizeof(**p))) == NULL)
			return REFUSED_MEMORY;
		memcpy((*p)->addr, key, 16);
	}
	if ((*p)->count >= cfg->max_connections_per_ip)
		return REFUSED_PER_IP;
	(*p)->count++;
	return ADMITTED;
}

static int refusal_text(enum admission why, const char *host, const char *ip,
			char *line, size_t len)
{
	switch (why) {
	case REFUSED_DRAINING:
		return snprintf(line, len, "421 4.3.2 %s Service shutting down",
				host);
	case REFUSED_TOTAL:
		return snprintf(line, len,
				"421 4.7.0 %s Error: too many connections", host);
	case REFUSED_PER_IP:
		return snprintf(line, len,
				"421 4.7.0 %s Error: too many connections from %s",
				host, ip);
	case REFUSED_MEMORY:
	case ADMITTED:
		break;
	}
	return snprintf(line, len, "421 4.3.0 %s Error: out of memory", host);
}

static void refuse(struct listener *l, int fd,
		   const struct sockaddr_storage *peer, enum admission why)
{
	char ip[64], line[400];
	struct logline lg;
	int n;
	ssize_t w;

	sockaddr_ip_text(peer, ip, sizeof(ip));
	n = refusal_text(why, l->srv->gen->cfg->hostname, ip, line,
			 sizeof(line) - 2);
	if (n < 0 || (size_t)n >= sizeof(line) - 2)
		n = (int)strlen(line);
	log_begin(&lg, LOG_INFO, "reject");
	log_kv(&lg, "stage", "CONNECT");
	log_kv(&lg, "client", "%s:%u", ip, sockaddr_port(peer));
	log_kv(&lg, "code", "%.3s", line);
	log_kv(&lg, "reply", "%s", line + 4);
	log_end(&lg);
	memcpy(line + n, "\r\n", 2);
	/* Best effort on a fresh socket: its buffer is empty. */
	w = write(fd, line, (size_t)n + 2);
	(void)w;
	close(fd);
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct listen_sock *ls = w->data;
	struct listener *l = ls->owner;

	(void)loop;
	(void)revents;
	for (int i = 0; i < ACCEPTS_PER_EVENT; i++) {
		struct sockaddr_storage peer;
		socklen_t len = sizeof(peer);
		int fd = accept4(w->fd, (struct sockaddr *)&peer, &len,
				 SOCK_NONBLOCK | SOCK_CLOEXEC);
		enum admission why;

		if (fd < 0) {
			if (errno != EAGAIN && errno != EINTR &&
			    errno != ECONNABORTED)
				log_msg(LOG_WARN, "accept_failed", "%s",
					strerror(errno));
			return;
		}
		why = admit(l, &peer);
		if (why != ADMITTED)
			refuse(l, fd, &peer, why);
		else
			smtp_session_start(l->srv, fd, &peer);
	}
}

static void log_bound(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	char ip[64];
	struct logline l;

	if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
		return;
	sockaddr_ip_text(&ss, ip, sizeof(ip));
	log_begin(&l, LOG_INFO, "listen");
	if (ss.ss_family == AF_INET6)
		log_kv(&l, "addr", "[%s]:%u", ip, sockaddr_port(&ss));
	else
		log_kv(&l, "addr", "%s:%u", ip, sockaddr_port(&ss));
	log_end(&l);
}

static int bind_one(const struct listen_addr *a, char *err, size_t err_len)
{
	int one = 1;
	int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK |
						 SOCK_CLOEXEC, 0);

	if (fd < 0)
		goto fail;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (a->ss.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)&a->ss, a->len) != 0 ||
	    listen(fd, 511) != 0)
		goto fail;
	log_bound(fd);
	return fd;
fail:
	snprintf(err, err_len, "listen %s: %s", a->text, strerror(errno));
	if (fd >= 0)
		close(fd);
	return -1;
}

int *listener_bind(const struct config *cfg, char *err, size_t err_len)
{
	int *fds = calloc(cfg->n_listen, sizeof(*fds));

	if (fds == NULL) {
		snprintf(err, err_len, "out of memory");
		return NULL;
	}
	for (size_t i = 0; i < cfg->n_listen; i++) {
		fds[i] = bind_one(&cfg->listen[i], err, err_len);
		if (fds[i] >= 0)
			continue;
		while (i-- > 0)
			close(fds[i]);
		free(fds);
		return NULL;
	}
	return fds;
}

struct listener *listener_open(struct server *srv, const int *fds, size_t n)
{
	struct listener *l = calloc(1, sizeof(*l));

	if (l == NULL || (l->socks = calloc(n, sizeof(*l->socks))) == NULL) {
		free(l);
		return NULL;
	}
	l->srv = srv;
	for (size_t i = 0; i < n; i++) {
		ev_io_init(&l->socks[i].io, accept_cb, fds[i], EV_READ);
		l->socks[i].io.data = &l->socks[i];
		l->socks[i].owner = l;
		ev_io_start(srv->loop, &l->socks[i].io);
		l->n_socks++;
	}
	return l;
}

void listener_stop(struct listener *l)
{
	for (size_t i = 0; i < l->n_socks; i++)
		ev_io_stop(l->srv->loop, &l->socks[i].io);
}

void listener_close(struct listener *l)
{
	if (l == NULL)
		return;
	listener_stop(l);
	for (size_t i = 0; i < CLIENT_BUCKETS; i++) {
		while (l->clients[i] != NULL) {
			struct client_count *next = l->clients[i]->next;

			free(l->clients[i]);
			l->clients[i] = next;
		}
	}
	free(l->socks);
	free(l);
}
