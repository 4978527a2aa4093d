/*
 * listener: binds the listen addresses (in the master), accepts on them (in
 * each worker) and admits or refuses each connection. A connection over a
 * limit gets its 421 straight from here and never becomes a session. The
 * counting itself lives in limits (shared by every worker): this file turns
 * the config into a limits_request, answers refusals and logs them, each
 * identical refusal at most once per LOG_INTERVAL_MS in this process (then
 * a count). It must not count connections itself.
 */
#include "inbound/listener.h"

#include "core/config.h"
#include "core/netaddr.h"
#include "policy/generation.h"
#include "core/log.h"
#include "core/stats.h"
#include "inbound/limits.h"
#include "inbound/proxy_wait.h"
#include "inbound/smtp_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Workers share each listening socket and all wake on a new connection;
 * taking a few per wake-up leaves the rest to the others, so a worker busy
 * with handshakes does not hoard the backlog. */
enum { ACCEPTS_PER_EVENT = 4 };

/* Refusal lines: remembered per (reason, prefix) in a small direct-mapped
 * table, so a flood costs one line per interval and a count. */
enum { LOG_SLOTS = 64, LOG_INTERVAL_MS = 10000 };

enum admission {
	ADMITTED,
	REFUSED_DRAINING,
	REFUSED_TOTAL,
	REFUSED_RESERVED,
	REFUSED_CLIENT,
	REFUSED_RATE,
	REFUSED_TABLE_FULL,
};

/* The last logged refusal of one (reason, client prefix): later identical
 * ones within LOG_INTERVAL_MS are only counted. */
struct refusal_log {
	enum admission why;
	uint8_t key[16];
	uint64_t last_ms;
	unsigned suppressed;
	char client[64]; /* the last one counted */
};

struct listen_sock {
	ev_io io;
	struct listener *owner;
};

struct listener {
	struct server *srv;
	struct listen_sock *socks;
	size_t n_socks;
	struct refusal_log recent[LOG_SLOTS];
	ev_timer log_timer;
	struct proxy_waits waits; /* proxy_networks: before their header */
};

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void listener_client_gone(struct listener *l, uint32_t ticket)
{
	limits_release(l->srv->limits, ticket);
}

double listener_load(const struct listener *l)
{
	unsigned max;

	if (l == NULL)
		return 0;
	max = l->srv->gen->cfg->max_connections;
	if (max > limits_capacity(l->srv->limits))
		max = limits_capacity(l->srv->limits);
	return max == 0 ? 1.0 : (double)limits_in_use(l->srv->limits) / max;
}

static enum admission from_verdict(enum limits_verdict v)
{
	switch (v) {
	case LIMITS_OK:
		return ADMITTED;
	case LIMITS_TOTAL:
		return REFUSED_TOTAL;
	case LIMITS_RESERVED:
		return REFUSED_RESERVED;
	case LIMITS_CLIENT:
		return REFUSED_CLIENT;
	case LIMITS_RATE:
		return REFUSED_RATE;
	case LIMITS_TABLE_FULL:
		break;
	}
	return REFUSED_TABLE_FULL;
}

/* Counts the client in (across every worker), or says why it is refused. */
static enum admission admit(struct listener *l,
			    const struct sockaddr_storage *peer,
			    uint32_t *ticket)
{
	const struct config *cfg = l->srv->gen->cfg;
	const struct sockaddr *sa = (const struct sockaddr *)peer;
	struct limits_request rq = {
		.peer = sa,
		.exempt = config_is_relay_client(cfg, sa),
		.max_total = cfg->max_connections,
		.reserved = limits_reserved(cfg->max_connections,
					    cfg->reserved_connections,
					    cfg->reserved_percent),
		.max_per_client = cfg->max_connections_per_ip,
		.rate_limit = cfg->client_connection_rate_limit,
		.prefix_v4 = cfg->client_prefix_v4,
		.prefix_v6 = cfg->client_prefix_v6,
		.now_ms = now_ms(),
	};

	if (l->srv->draining)
		return REFUSED_DRAINING;
	return from_verdict(limits_admit(l->srv->limits, &rq, ticket));
}

static const char *reason_name(enum admission why)
{
	switch (why) {
	case REFUSED_DRAINING:
		return "shutting_down";
	case REFUSED_TOTAL:
		return "max_connections";
	case REFUSED_RESERVED:
		return "reserved_connections";
	case REFUSED_CLIENT:
		return "max_connections_per_ip";
	case REFUSED_RATE:
		return "client_connection_rate_limit";
	case REFUSED_TABLE_FULL:
		return "client_table_full";
	case ADMITTED:
		break;
	}
	return "admitted";
}

/* Refusals that concern the whole gateway are throttled as one, whichever
 * client gets them; the others per client prefix. */
static bool per_client(enum admission why)
{
	return why == REFUSED_CLIENT || why == REFUSED_RATE;
}

static int refusal_text(enum admission why, const char *host, const char *ip,
			char *line, size_t len)
{
	switch (why) {
	case REFUSED_DRAINING:
		return snprintf(line, len, "421 4.3.2 %s Service shutting down",
				host);
	case REFUSED_TOTAL:
	case REFUSED_RESERVED:
	case REFUSED_TABLE_FULL:
		return snprintf(line, len,
				"421 4.7.0 %s Error: too many connections", host);
	case REFUSED_CLIENT:
	case REFUSED_RATE:
		return snprintf(line, len,
				"421 4.7.0 %s Error: too many connections from %s",
				host, ip);
	case ADMITTED:
		break;
	}
	return snprintf(line, len, "421 4.3.0 %s Error: internal error", host);
}

static void log_suppressed(struct refusal_log *r, const struct config *cfg)
{
	struct logline lg;
	char prefix[80];

	log_begin(&lg, LOG_INFO, "refused");
	log_kv(&lg, "reason", "%s", reason_name(r->why));
	log_kv(&lg, "client", "%s", r->client);
	if (per_client(r->why)) {
		limits_key_text(r->key, cfg->client_prefix_v4,
				cfg->client_prefix_v6, prefix, sizeof(prefix));
		log_kv(&lg, "prefix", "%s", prefix);
	}
	log_kv(&lg, "suppressed", "%u", r->suppressed);
	log_kv(&lg, "msg", "%u more refused like this within %us, not "
			   "logged one by one",
	       r->suppressed, LOG_INTERVAL_MS / 1000);
	log_end(&lg);
	r->suppressed = 0;
}

static void on_log_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct listener *l = w->data;
	bool pending = false;

	(void)revents;
	for (size_t i = 0; i < LOG_SLOTS; i++) {
		struct refusal_log *r = &l->recent[i];

		if (r->suppressed == 0)
			continue;
		log_suppressed(r, l->srv->gen->cfg);
		r->last_ms = now_ms();
		pending = true;
	}
	if (!pending)
		ev_timer_stop(loop, w);
}

static struct refusal_log *log_slot(struct listener *l, enum admission why,
				    const uint8_t key[16])
{
	uint32_t h = 2166136261u ^ (uint32_t)why; /* FNV-1a */

	for (int i = 0; i < 16; i++)
		h = (h ^ key[i]) * 16777619u;
	return &l->recent[h % LOG_SLOTS];
}

/* True when this refusal is to be logged; otherwise it is counted. */
static bool log_throttle(struct listener *l, enum admission why,
			 const struct sockaddr_storage *peer, const char *ip)
{
	const struct config *cfg = l->srv->gen->cfg;
	uint8_t key[16] = {0};
	struct refusal_log *r;
	uint64_t now = now_ms();

	if (per_client(why))
		limits_client_key((const struct sockaddr *)peer,
				  cfg->client_prefix_v4, cfg->client_prefix_v6,
				  key);
	r = log_slot(l, why, key);
	if (r->last_ms != 0 && r->why == why && memcmp(r->key, key, 16) == 0 &&
	    now - r->last_ms < LOG_INTERVAL_MS) {
		r->suppressed++;
		snprintf(r->client, sizeof(r->client), "%s", ip);
		if (!ev_is_active(&l->log_timer))
			ev_timer_again(l->srv->loop, &l->log_timer);
		return false;
	}
	if (r->suppressed > 0)
		log_suppressed(r, cfg); /* another client takes the slot */
	r->why = why;
	memcpy(r->key, key, 16);
	r->last_ms = now;
	return true;
}

static void log_refusal(struct listener *l, enum admission why,
			const struct sockaddr_storage *peer, const char *ip,
			const char *line)
{
	const struct config *cfg = l->srv->gen->cfg;
	struct logline lg;
	uint8_t key[16];
	char prefix[80];

	if (!log_throttle(l, why, peer, ip))
		return;
	log_begin(&lg, LOG_INFO, "refused");
	log_kv(&lg, "reason", "%s", reason_name(why));
	log_kv(&lg, "client", "%s:%u", ip, sockaddr_port(peer));
	if (per_client(why)) {
		limits_client_key((const struct sockaddr *)peer,
				  cfg->client_prefix_v4, cfg->client_prefix_v6,
				  key);
		limits_key_text(key, cfg->client_prefix_v4,
				cfg->client_prefix_v6, prefix, sizeof(prefix));
		log_kv(&lg, "prefix", "%s", prefix);
	}
	log_kv(&lg, "code", "%.3s", line);
	log_kv(&lg, "reply", "%s", line + 4);
	log_end(&lg);
}

static void refuse(struct listener *l, int fd,
		   const struct sockaddr_storage *peer, enum admission why)
{
	char ip[64], line[400];
	int n;
	ssize_t w;

	sockaddr_ip_text(peer, ip, sizeof(ip));
	n = refusal_text(why, l->srv->gen->cfg->hostname, ip, line,
			 sizeof(line) - 2);
	if (n < 0 || (size_t)n >= sizeof(line) - 2)
		n = (int)strlen(line);
	log_refusal(l, why, peer, ip, line);
	stats_add(STAT_REFUSED + (why - REFUSED_DRAINING));
	memcpy(line + n, "\r\n", 2);
	/* Best effort on a fresh socket: its buffer is empty. */
	w = write(fd, line, (size_t)n + 2);
	(void)w;
	close(fd);
}

/* A client, direct or announced by a PROXY header (via: the balancer):
 * counted in and given a session, or refused. */
static void take(struct listener *l, int fd,
		 const struct sockaddr_storage *client,
		 const struct sockaddr_storage *via)
{
	uint32_t ticket = 0;
	enum admission why = admit(l, client, &ticket);

	if (why != ADMITTED)
		refuse(l, fd, client, why);
	else
		smtp_session_start(l->srv, fd, client, via, ticket);
}

static void on_proxy_ready(void *owner, int fd,
			   const struct sockaddr_storage *client,
			   const struct sockaddr_storage *via)
{
	take(owner, fd, client, via);
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct listen_sock *ls = w->data;
	struct listener *l = ls->owner;

	(void)loop;
	(void)revents;
	for (int i = 0; i < ACCEPTS_PER_EVENT; i++) {
		const struct config *cfg = l->srv->gen->cfg;
		struct sockaddr_storage peer;
		socklen_t len = sizeof(peer);
		int fd = accept4(w->fd, (struct sockaddr *)&peer, &len,
				 SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno != EAGAIN && errno != EINTR &&
			    errno != ECONNABORTED)
				log_msg(LOG_WARN, "accept_failed", "%s",
					strerror(errno));
			return;
		}
		if (config_is_proxy_peer(cfg, (const struct sockaddr *)&peer))
			proxy_wait_start(&l->waits, fd, &peer,
					 cfg->proxy_timeout);
		else
			take(l, fd, &peer, NULL);
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
	/* Replies go out whole, so Nagle only delays them: after a TLS
	 * handshake's session tickets the next reply waited ~40 ms for the
	 * client's delayed ACK. Linux hands TCP_NODELAY on to every
	 * accepted socket, so this costs no system call per connection. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
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
	l->waits.loop = srv->loop;
	l->waits.ready = on_proxy_ready;
	l->waits.owner = l;
	l->waits.max = srv->gen->cfg->max_connections;
	ev_init(&l->log_timer, on_log_timer);
	l->log_timer.repeat = LOG_INTERVAL_MS / 1000.0;
	l->log_timer.data = l;
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
	ev_timer_stop(l->srv->loop, &l->log_timer);
}

void listener_close(struct listener *l)
{
	if (l == NULL)
		return;
	listener_stop(l);
	proxy_wait_close_all(&l->waits);
	for (size_t i = 0; i < LOG_SLOTS; i++)
		if (l->recent[i].suppressed > 0)
			log_suppressed(&l->recent[i], l->srv->gen->cfg);
	free(l->socks);
	free(l);
}
