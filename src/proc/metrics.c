/*
 * metrics: the endpoint's process. Owns its accepts (at most METRICS_CONNS
 * connections at once: beyond that it stops accepting until one ends),
 * each connection and its response, and one queue scan at a time, which
 * runs in steps on an idle watcher so the loop keeps turning. A request
 * (HTTP/1.0 or 1.1, one per connection) is read whole, answered, and the
 * connection closed; every connection has REQUEST_TIMEOUT in all. A scrape
 * waits for a fresh scan (one scan serves every scrape waiting for it; a
 * scan younger than SCAN_FRESH is fresh) but at most SCAN_WAIT, then is
 * answered with the last complete one. Must not write the spool or the
 * stats file.
 */
#include "proc/metrics.h"

#include "core/config.h"
#include "core/log.h"
#include "core/netaddr.h"
#include "core/stats.h"
#include "net/conn.h"
#include "policy/generation.h"
#include "proc/prometheus.h"
#include "proto/http_req.h"
#include "spool/queue_scan.h"

#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum { METRICS_CONNS = 16, SCAN_BUDGET = 64, TOP_DOMAINS = 10 };

static const double REQUEST_TIMEOUT = 10, SCAN_WAIT = 5, SCAN_FRESH = 1;

enum mconn_state { MC_READ, MC_WAIT_SCAN, MC_WRITE };

struct metrics;

struct mconn {
	struct conn conn;
	struct metrics *m;
	struct mconn *prev, *next;
	enum mconn_state state;
	char *out; /* the whole response */
	size_t out_len, out_off;
};

struct metrics {
	struct ev_loop *loop;
	struct generation *gen;
	struct stats *stats;
	int listen_fd;
	ev_io accept;
	ev_signal sig_term;
	ev_idle scan_step;
	struct mconn *conns;
	unsigned n_conns;
	struct queue_scan *scan;
	struct queue_summary *summary; /* the last complete scan */
	double summary_at;
};

/* ---- connections ------------------------------------------------- */

static void mconn_close(struct mconn *c)
{
	struct metrics *m = c->m;

	conn_stop(&c->conn);
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		m->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	free(c->out);
	free(c);
	if (m->n_conns-- == METRICS_CONNS)
		ev_io_start(m->loop, &m->accept);
}

/* Hands the conn as much of the response as it has room for; false when
 * the connection is gone (all of it written, or a write error). */
static bool push(struct mconn *c)
{
	while (c->out_off < c->out_len || conn_output_pending(&c->conn)) {
		size_t n = c->out_len - c->out_off;

		if (n > conn_output_room(&c->conn))
			n = conn_output_room(&c->conn);
		if (n > 0 && conn_write(&c->conn, c->out + c->out_off, n))
			c->out_off += n;
		if (!conn_flush(&c->conn))
			break; /* a write error: the connection goes */
		if (conn_output_pending(&c->conn))
			return true; /* CONN_DRAINED comes back for the rest */
	}
	mconn_close(c);
	return false;
}

static bool respond(struct mconn *c, int code, const char *reason,
		    const char *body, size_t body_len)
{
	FILE *f = open_memstream(&c->out, &c->out_len);

	if (f == NULL) {
		mconn_close(c);
		return false;
	}
	fprintf(f, "HTTP/1.0 %d %s\r\n", code, reason);
	fprintf(f, "Content-Type: text/plain; %scharset=utf-8\r\n",
		code == 200 ? "version=0.0.4; " : "");
	if (code == 405)
		fputs("Allow: GET\r\n", f);
	fprintf(f, "Content-Length: %zu\r\nConnection: close\r\n\r\n",
		body_len);
	fwrite(body, 1, body_len, f);
	if (fclose(f) != 0) {
		mconn_close(c);
		return false;
	}
	c->state = MC_WRITE;
	conn_set_reading(&c->conn, false);
	return push(c);
}

static bool respond_metrics(struct mconn *c)
{
	size_t len = 0;
	char *text = prometheus_text(c->m->stats, c->m->summary, &len);
	bool alive;

	if (text == NULL)
		return respond(c, 500, "Internal Server Error",
			       "out of memory\n", 14);
	alive = respond(c, 200, "OK", text, len);
	free(text);
	return alive;
}

static bool respond_error(struct mconn *c, enum http_verdict v)
{
	const char *reason;
	int code = http_status(v, &reason);
	char body[80];
	int n = snprintf(body, sizeof(body), "%d %s\n", code, reason);

	return respond(c, code, reason, body, (size_t)n);
}

/* ---- the queue scan ---------------------------------------------- */

static void scan_done(struct metrics *m)
{
	queue_summary_free(m->summary);
	m->summary = queue_scan_end(m->scan, TOP_DOMAINS);
	m->scan = NULL;
	m->summary_at = ev_now(m->loop);
	ev_idle_stop(m->loop, &m->scan_step);
	for (struct mconn *c = m->conns, *next; c != NULL; c = next) {
		next = c->next;
		if (c->state == MC_WAIT_SCAN)
			respond_metrics(c);
	}
}

static void on_scan_step(struct ev_loop *loop, ev_idle *w, int revents)
{
	struct metrics *m = w->data;

	(void)loop;
	(void)revents;
	if (queue_scan_step(m->scan, SCAN_BUDGET))
		scan_done(m);
}

/* False when the scan cannot start (the last one is used). */
static bool start_scan(struct metrics *m)
{
	char err[300];

	if (m->scan != NULL)
		return true;
	m->scan = queue_scan_begin(m->gen->cfg->spool, ev_now(m->loop), err,
				   sizeof(err));
	if (m->scan == NULL) {
		log_msg(LOG_WARN, "metrics", "queue scan: %s", err);
		return false;
	}
	ev_idle_start(m->loop, &m->scan_step);
	return true;
}

static bool on_request(struct mconn *c, enum http_verdict v)
{
	struct metrics *m = c->m;

	if (v != HTTP_METRICS)
		return respond_error(c, v);
	if (m->summary != NULL && ev_now(m->loop) - m->summary_at < SCAN_FRESH)
		return respond_metrics(c);
	if (!start_scan(m))
		return respond_metrics(c);
	c->state = MC_WAIT_SCAN;
	conn_set_reading(&c->conn, false);
	conn_set_timeout(&c->conn, SCAN_WAIT);
	return true;
}

static bool on_conn_event(struct conn *conn, enum conn_event ev, void *owner)
{
	struct mconn *c = owner;
	enum http_verdict v;
	const char *in;
	size_t len;

	(void)conn;
	switch (ev) {
	case CONN_DATAIN:
		in = conn_input(&c->conn, &len);
		v = c->state == MC_READ ? http_parse_request(in, len)
					: HTTP_INCOMPLETE;
		conn_consume(&c->conn, len);
		return v == HTTP_INCOMPLETE || on_request(c, v);
	case CONN_DRAINED:
		return c->state != MC_WRITE || push(c);
	case CONN_TIMEOUT:
		if (c->state != MC_WAIT_SCAN)
			break;
		conn_set_timeout(&c->conn, REQUEST_TIMEOUT);
		return respond_metrics(c); /* with the last complete scan */
	case CONN_EOF:
	case CONN_ERROR:
	case CONN_TLSREADY:
	case CONN_TLSFAIL:
		break;
	}
	mconn_close(c);
	return false;
}

static void mconn_start(struct metrics *m, int fd)
{
	struct mconn *c = calloc(1, sizeof(*c));

	if (c == NULL) {
		close(fd);
		return;
	}
	c->m = m;
	c->next = m->conns;
	if (c->next != NULL)
		c->next->prev = c;
	m->conns = c;
	if (++m->n_conns == METRICS_CONNS)
		ev_io_stop(m->loop, &m->accept);
	conn_start(&c->conn, m->loop, fd, on_conn_event, c);
	c->conn.deadline = true;
	conn_set_timeout(&c->conn, REQUEST_TIMEOUT);
	conn_set_reading(&c->conn, true);
}

static void on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
	struct metrics *m = w->data;

	(void)loop;
	(void)revents;
	for (int i = 0; i < 4 && m->n_conns < METRICS_CONNS; i++) {
		int fd = accept4(m->listen_fd, NULL, NULL,
				 SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0)
			return;
		mconn_start(m, fd);
	}
}

/* ---- the process ------------------------------------------------- */

int metrics_bind(const struct listen_addr *a, char *err, size_t err_len)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	char ip[64];
	struct logline l;
	int one = 1;
	int fd = socket(a->ss.ss_family,
			SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
	    (a->ss.ss_family == AF_INET6 &&
	     setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) != 0) ||
	    bind(fd, (const struct sockaddr *)&a->ss, a->len) != 0 ||
	    listen(fd, 64) != 0 ||
	    getsockname(fd, (struct sockaddr *)&ss, &len) != 0) {
		snprintf(err, err_len, "[metrics] listen %s: %s", a->text,
			 strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	sockaddr_ip_text(&ss, ip, sizeof(ip));
	log_begin(&l, LOG_INFO, "metrics_listen");
	log_kv(&l, "addr", "%s%s%s:%u", ss.ss_family == AF_INET6 ? "[" : "",
	       ip, ss.ss_family == AF_INET6 ? "]" : "", sockaddr_port(&ss));
	log_end(&l);
	return fd;
}

static void on_term(struct ev_loop *loop, ev_signal *w, int revents)
{
	(void)w;
	(void)revents;
	ev_break(loop, EVBREAK_ALL);
}

static void log_ready(const struct generation *gen)
{
	struct logline l;

	log_begin(&l, LOG_INFO, "ready");
	log_kv(&l, "role", "metrics");
	log_kv(&l, "pid", "%ld", (long)getpid());
	log_kv(&l, "uid", "%ld", (long)getuid());
	log_kv(&l, "generation", "%u", gen->serial);
	log_end(&l);
}

int metrics_run(struct ev_loop *loop, struct generation *gen,
		const struct metrics_args *a)
{
	struct metrics m = {.loop = loop, .gen = gen, .stats = a->stats,
			    .listen_fd = a->listen_fd};

	ev_io_init(&m.accept, on_accept, a->listen_fd, EV_READ);
	ev_signal_init(&m.sig_term, on_term, SIGTERM);
	ev_idle_init(&m.scan_step, on_scan_step);
	m.accept.data = m.sig_term.data = m.scan_step.data = &m;
	ev_io_start(loop, &m.accept);
	ev_signal_start(loop, &m.sig_term);
	log_ready(gen);
	ev_run(loop, 0);
	while (m.conns != NULL)
		mconn_close(m.conns);
	ev_io_stop(loop, &m.accept);
	ev_signal_stop(loop, &m.sig_term);
	ev_idle_stop(loop, &m.scan_step);
	if (m.scan != NULL)
		queue_summary_free(queue_scan_end(m.scan, 0));
	queue_summary_free(m.summary);
	close(a->listen_fd);
	generation_release(gen);
	conn_pool_release();
	return 0;
}
