/*
 * loadgen: an SMTP load generator for `make bench` (libev + OpenSSL).
 * Owns N client sessions to one HOST:PORT, plain or STARTTLS (no certificate
 * check: this is load, not security), M messages per connection, a message
 * of S octets, until a total count or a duration; RFC 5321 lockstep, or
 * RFC 2920 pipelining (MAIL, RCPT, DATA in one write) with -P.
 * Every reply is checked. Any unexpected reply, connection error, TLS
 * failure or timeout is an error: the run then prints its counts and no rate,
 * and exits 1. Idle mode (-i) opens N connections, optionally STARTTLS, holds
 * them, prints "ready N" and waits for SIGTERM/SIGINT. With -m 0 a
 * connection carries no message (EHLO, STARTTLS with -t, EHLO, QUIT) and
 * the unit counted and timed is the connection: handshakes per second.
 * It must not retry a failed message, nor report a rate for a run with errors.
 * TLS: one SSL_CTX for the whole run (TLS 1.2-1.3, 1.3 unless -V says
 * otherwise; no session cache, so every handshake is a full one unless -R)
 * and one SSL per connection, owned by its session and driven non-blockingly
 * from the session's ev_io: SSL_ERROR_WANT_READ/WRITE re-arm the watcher.
 * -R resumes: each session keeps the TLS session of its last connection
 * (with its ticket) and offers it on the next; the report counts the
 * handshakes the server resumed ("tls_resumed N"). -N sets TCP_NODELAY:
 * without it the EHLO after a handshake waits, by Nagle's algorithm, for
 * the ACK of the client's Finished, which the server delays (40 ms on
 * Linux) when it has nothing to send after it (a resumed TLS 1.2
 * handshake: seen with strace). Building a
 * context per connection (libtls's tls_client + tls_configure) was about a
 * fifth of loadgen's CPU, on the cores the server under test needs.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

enum { IN_MAX = 8192, CMD_MAX = 1024, ERR_SHOWN = 10 };

/* io_read/io_write: no progress until the socket is readable / writable */
enum { IO_WANT_READ = -2, IO_WANT_WRITE = -3 };

enum step {
	ST_OFF,       /* not connected */
	ST_CONNECT,   /* non-blocking connect in progress */
	ST_BANNER,    /* waiting for 220 */
	ST_EHLO,      /* EHLO sent, waiting for 250 */
	ST_STARTTLS,  /* STARTTLS sent, waiting for 220 */
	ST_HANDSHAKE, /* TLS handshake in progress */
	ST_EHLO_TLS,  /* EHLO after TLS, waiting for 250 */
	ST_MAIL,      /* waiting for the reply to MAIL */
	ST_RCPT,      /* waiting for the reply to RCPT */
	ST_DATA,      /* waiting for 354 */
	ST_BODY,      /* body sent, waiting for 250 */
	ST_QUIT,      /* QUIT sent, waiting for 221 */
	ST_IDLE,      /* idle mode: holding the connection */
	ST_DONE,      /* no more work for this session */
};

struct opts {
	struct sockaddr_storage addr;
	socklen_t addr_len;
	int sessions;
	int per_conn;
	size_t size;
	long total;
	double duration;
	double timeout;
	bool starttls;
	bool pipelining;
	bool idle;
	bool resume; /* -R: offer each session's last TLS session */
	bool nodelay; /* -N: TCP_NODELAY on every connection */
	int tls_min, tls_max; /* protocol versions offered (-V) */
	int ramp;
	const char *from;
	const char *rcpt;
	const char *helo;
};

struct session {
	struct ev_loop *loop;
	ev_io io;
	ev_timer timer;
	int fd;
	SSL *ssl;      /* after STARTTLS; owned, freed by conn_close */
	bool tls_up;   /* handshake done: a close sends close_notify */
	bool tls_dead; /* a fatal TLS error: no more SSL calls but free */
	SSL_SESSION *resume; /* -R: the last connection's session, owned */
	enum step step;
	unsigned gen;     /* bumped by every close: a reply from an old
	                     connection must not reach a new one */
	int on_conn;      /* messages finished on this connection */
	double msg_start; /* when the current message began */
	const char *out;  /* pending output, not owned */
	size_t out_len, out_off;
	char cmd[CMD_MAX];
	char in[IN_MAX];
	size_t in_len;
};

struct stats {
	long claimed; /* messages a session took on */
	long ok;      /* messages that got their final 250 */
	long conns;   /* connections opened */
	long errors;
	long err_connect, err_reply, err_tls, err_closed, err_timeout;
	long ready;  /* idle mode: connections held */
	long resumed; /* handshakes the server resumed */
	double *lat; /* latency of each ok message, seconds */
	long lat_cap;
	double start, last_ok;
};

static struct opts opt;
static struct stats st;
static struct session *sessions;
static SSL_CTX *tls_ctx;  /* one for the whole run */
static char tls_err[256]; /* the last TLS error, for messages */
static char *message;
static size_t message_len;
static int next_session; /* idle mode: next session to start */
static bool stopping;

static void session_start(struct session *s);
static void session_next(struct session *s);

static void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("loadgen: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(2);
}

/* ---- work accounting ---- */

static bool claim(struct session *s)
{
	if (stopping)
		return false;
	if (opt.total > 0 && st.claimed >= opt.total)
		return false;
	if (opt.duration > 0 && ev_now(s->loop) - st.start >= opt.duration)
		return false;
	st.claimed++;
	return true;
}

static void record_ok(struct session *s)
{
	double now = ev_now(s->loop);

	if (st.ok == st.lat_cap) {
		st.lat_cap = st.lat_cap ? st.lat_cap * 2 : 65536;
		st.lat = realloc(st.lat, (size_t)st.lat_cap * sizeof(double));
		if (st.lat == NULL)
			die("out of memory");
	}
	st.lat[st.ok++] = now - s->msg_start;
	st.last_ok = now;
}

/* ---- TLS (OpenSSL: one context, one SSL per connection) ---- */

/* Keeps the first error of OpenSSL's queue (or ALT) in tls_err. */
static void tls_note_error(const char *alt)
{
	unsigned long e = ERR_get_error();

	if (e != 0)
		ERR_error_string_n(e, tls_err, sizeof(tls_err));
	else
		snprintf(tls_err, sizeof(tls_err), "%s", alt);
	ERR_clear_error();
}

/* Maps the result R (<= 0) of an SSL call: IO_WANT_READ/WRITE to wait for
 * the socket, 0 for a close by the peer, -1 for an error (in tls_err). */
static int tls_result(struct session *s, int r)
{
	int saved = errno;

	switch (SSL_get_error(s->ssl, r)) {
	case SSL_ERROR_WANT_READ:
		return IO_WANT_READ;
	case SSL_ERROR_WANT_WRITE:
		return IO_WANT_WRITE;
	case SSL_ERROR_ZERO_RETURN:
		snprintf(tls_err, sizeof(tls_err), "closed by the peer");
		return 0;
	case SSL_ERROR_SYSCALL:
		s->tls_dead = true;
		tls_note_error(saved != 0 ? strerror(saved) : "unexpected EOF");
		return -1;
	default:
		s->tls_dead = true;
		tls_note_error("TLS error");
		return -1;
	}
}

static ssize_t tls_read_some(struct session *s, void *buf, size_t len)
{
	int r;

	ERR_clear_error();
	errno = 0;
	r = SSL_read(s->ssl, buf, len > INT_MAX ? INT_MAX : (int)len);
	return r > 0 ? r : tls_result(s, r);
}

static ssize_t tls_write_some(struct session *s, const void *buf, size_t len)
{
	int r;

	ERR_clear_error();
	errno = 0;
	r = SSL_write(s->ssl, buf, len > INT_MAX ? INT_MAX : (int)len);
	return r > 0 ? r : tls_result(s, r);
}

/* 1: done; IO_WANT_*: call again when the socket is ready; else failed. */
static int tls_handshake_step(struct session *s)
{
	int r;

	ERR_clear_error();
	errno = 0;
	r = SSL_connect(s->ssl);
	if (r == 1) {
		s->tls_up = true;
		return 1;
	}
	return tls_result(s, r);
}

/* Sends close_notify once, without waiting for the peer's (as libtls's
 * tls_close did on a non-blocking socket), and frees the SSL. */
static void tls_end(struct session *s)
{
	if (s->ssl == NULL)
		return;
	if (opt.resume && s->tls_up && !s->tls_dead) {
		/* by now the TLS 1.3 tickets have come (with the EHLO reply) */
		SSL_SESSION_free(s->resume);
		s->resume = SSL_get1_session(s->ssl);
	}
	if (s->tls_up && !s->tls_dead)
		(void)SSL_shutdown(s->ssl);
	ERR_clear_error();
	SSL_free(s->ssl);
	s->ssl = NULL;
	s->tls_up = s->tls_dead = false;
}

/* ---- connection ---- */

static void io_want(struct session *s, int events)
{
	if (s->io.events == events && ev_is_active(&s->io))
		return;
	ev_io_stop(s->loop, &s->io);
	ev_io_set(&s->io, s->fd, events);
	ev_io_start(s->loop, &s->io);
}

static void conn_close(struct session *s)
{
	ev_io_stop(s->loop, &s->io);
	ev_timer_stop(s->loop, &s->timer);
	tls_end(s);
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
	s->in_len = 0;
	s->out_len = s->out_off = 0;
	s->step = ST_OFF;
	s->gen++;
}

static const char *step_name(enum step step)
{
	static const char *const names[] = {
	    "off",       "connect",  "banner", "ehlo", "starttls",
	    "handshake", "ehlo-tls", "mail",   "rcpt", "data",
	    "body",      "quit",     "idle",   "done"};
	return names[step];
}

/* An error ends this session's work: the message in flight is not retried. */
static void fail(struct session *s, long *kind, const char *fmt, ...)
{
	va_list ap;

	st.errors++;
	(*kind)++;
	if (st.errors <= ERR_SHOWN) {
		va_start(ap, fmt);
		fprintf(stderr, "loadgen: error in %s: ", step_name(s->step));
		vfprintf(stderr, fmt, ap);
		fputc('\n', stderr);
		va_end(ap);
	}
	conn_close(s);
	s->step = ST_DONE;
	if (opt.idle)
		session_next(s);
}

static void touch(struct session *s)
{
	s->timer.repeat = opt.timeout;
	ev_timer_again(s->loop, &s->timer);
}

static void send_out(struct session *s, const char *buf, size_t len)
{
	s->out = buf;
	s->out_len = len;
	s->out_off = 0;
	io_want(s, EV_WRITE);
}

static void send_cmd(struct session *s, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(s->cmd, sizeof(s->cmd), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(s->cmd))
		die("command too long");
	send_out(s, s->cmd, (size_t)n);
}

/* ---- the SMTP dialogue ---- */

static void send_mail(struct session *s)
{
	s->step = ST_MAIL;
	if (opt.pipelining)
		send_cmd(s, "MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\n",
		         opt.from, opt.rcpt);
	else
		send_cmd(s, "MAIL FROM:<%s>\r\n", opt.from);
}

static void start_tls(struct session *s)
{
	s->ssl = SSL_new(tls_ctx);
	if (s->ssl == NULL || SSL_set_fd(s->ssl, s->fd) != 1 ||
	    SSL_set_tlsext_host_name(s->ssl, "loadgen.invalid") != 1) {
		tls_note_error("no memory");
		fail(s, &st.err_tls, "tls setup: %s", tls_err);
		return;
	}
	if (s->resume != NULL && SSL_set_session(s->ssl, s->resume) != 1) {
		tls_note_error("SSL_set_session");
		fail(s, &st.err_tls, "tls setup: %s", tls_err);
		return;
	}
	SSL_set_connect_state(s->ssl);
	s->step = ST_HANDSHAKE;
	io_want(s, EV_WRITE);
}

static void after_ehlo(struct session *s)
{
	if (s->step == ST_EHLO && opt.starttls) {
		s->step = ST_STARTTLS;
		send_cmd(s, "STARTTLS\r\n");
	} else if (opt.idle) {
		s->step = ST_IDLE;
		ev_timer_stop(s->loop, &s->timer);
		st.ready++;
		io_want(s, EV_READ);
		session_next(s);
	} else if (opt.per_conn == 0) {
		s->step = ST_QUIT; /* -m 0: the connection is the unit */
		send_cmd(s, "QUIT\r\n");
	} else {
		send_mail(s);
	}
}

static void after_body(struct session *s)
{
	record_ok(s);
	s->on_conn++;
	if (s->on_conn < opt.per_conn && claim(s)) {
		s->msg_start = ev_now(s->loop);
		send_mail(s);
	} else {
		s->step = ST_QUIT;
		send_cmd(s, "QUIT\r\n");
	}
}

static int expected(enum step step)
{
	switch (step) {
	case ST_BANNER:
	case ST_STARTTLS:
		return 220;
	case ST_EHLO:
	case ST_EHLO_TLS:
	case ST_MAIL:
	case ST_RCPT:
	case ST_BODY:
		return 250;
	case ST_DATA:
		return 354;
	case ST_QUIT:
		return 221;
	default:
		return 0; /* nothing is expected: any reply is an error */
	}
}

static void on_reply(struct session *s, int code, const char *line)
{
	if (code != expected(s->step)) {
		fail(s, &st.err_reply, "expected %d, got: %s",
		     expected(s->step), line);
		return;
	}
	switch (s->step) {
	case ST_BANNER:
		s->step = ST_EHLO;
		send_cmd(s, "EHLO %s\r\n", opt.helo);
		break;
	case ST_EHLO:
	case ST_EHLO_TLS:
		after_ehlo(s);
		break;
	case ST_STARTTLS:
		start_tls(s);
		break;
	case ST_MAIL:
		s->step = ST_RCPT;
		if (!opt.pipelining)
			send_cmd(s, "RCPT TO:<%s>\r\n", opt.rcpt);
		break;
	case ST_RCPT:
		s->step = ST_DATA;
		if (!opt.pipelining)
			send_cmd(s, "DATA\r\n");
		break;
	case ST_DATA:
		s->step = ST_BODY;
		send_out(s, message, message_len);
		break;
	case ST_BODY:
		after_body(s);
		break;
	case ST_QUIT:
		if (opt.per_conn == 0)
			record_ok(s);
		conn_close(s);
		session_start(s);
		break;
	default:
		break;
	}
}

/* Hands each complete reply (the last line of a multi-line one) to
 * on_reply; stops when the reply ended or replaced the connection. */
static void parse_replies(struct session *s)
{
	size_t pos = 0;
	unsigned gen = s->gen;

	while (s->gen == gen) {
		char *nl = memchr(s->in + pos, '\n', s->in_len - pos);
		char *line = s->in + pos;

		if (nl == NULL)
			break;
		*nl = '\0';
		pos = (size_t)(nl - s->in) + 1;
		if (nl - line < 3 || line[0] < '1' || line[0] > '5') {
			fail(s, &st.err_reply, "bad reply line: %s", line);
			return;
		}
		if (nl - line > 3 && line[3] == '-')
			continue;
		on_reply(s, atoi(line), line);
	}
	if (s->gen != gen)
		return;
	memmove(s->in, s->in + pos, s->in_len - pos);
	s->in_len -= pos;
}

/* ---- I/O ---- */

static ssize_t io_read(struct session *s, void *buf, size_t len)
{
	ssize_t n;

	if (s->ssl == NULL) {
		n = read(s->fd, buf, len);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return IO_WANT_READ;
		return n;
	}
	return tls_read_some(s, buf, len);
}

static ssize_t io_write(struct session *s, const void *buf, size_t len)
{
	ssize_t n;

	if (s->ssl == NULL) {
		n = write(s->fd, buf, len);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return IO_WANT_WRITE;
		return n;
	}
	return tls_write_some(s, buf, len);
}

static const char *io_error(struct session *s)
{
	return s->ssl ? tls_err : strerror(errno);
}

static long *io_kind(struct session *s)
{
	return s->ssl ? &st.err_tls : &st.err_closed;
}

/* Input OpenSSL has decrypted but not yet handed over is invisible to
 * epoll: feed the watcher a read event for it. */
static void feed_pending(struct session *s)
{
	if (s->ssl != NULL && s->out_len == 0 && SSL_pending(s->ssl) > 0)
		ev_feed_event(s->loop, &s->io, EV_READ);
}

static void do_write(struct session *s)
{
	while (s->out_off < s->out_len) {
		ssize_t n =
		    io_write(s, s->out + s->out_off, s->out_len - s->out_off);
		if (n == IO_WANT_READ || n == IO_WANT_WRITE) {
			io_want(s, n == IO_WANT_READ ? EV_READ : EV_WRITE);
			return;
		}
		if (n <= 0) {
			fail(s, io_kind(s), "write: %s", io_error(s));
			return;
		}
		s->out_off += (size_t)n;
	}
	s->out_len = s->out_off = 0;
	io_want(s, EV_READ);
	feed_pending(s);
}

static void do_read(struct session *s)
{
	ssize_t n;

	if (s->in_len == sizeof(s->in)) {
		fail(s, &st.err_reply, "reply line too long");
		return;
	}
	n = io_read(s, s->in + s->in_len, sizeof(s->in) - s->in_len);
	if (n == IO_WANT_READ || n == IO_WANT_WRITE) {
		io_want(s, n == IO_WANT_READ ? EV_READ : EV_WRITE);
		return;
	}
	if (n == 0) {
		fail(s, &st.err_closed, "connection closed by the server");
		return;
	}
	if (n < 0) {
		fail(s, io_kind(s), "read: %s", io_error(s));
		return;
	}
	s->in_len += (size_t)n;
	parse_replies(s);
	feed_pending(s);
}

static void do_connected(struct session *s)
{
	int err = 0;
	socklen_t len = sizeof(err);

	if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 ||
	    err != 0) {
		errno = err;
		fail(s, &st.err_connect, "connect: %s", strerror(errno));
		return;
	}
	s->step = ST_BANNER;
	io_want(s, EV_READ);
}

/* The TLS versions negotiated, to show what was measured. */
enum { VERSIONS_MAX = 4, VERSION_LEN = 16 };
static char versions[VERSIONS_MAX][VERSION_LEN];
static long version_count[VERSIONS_MAX];

static void count_version(const char *v)
{
	int i;

	if (v == NULL)
		v = "unknown";
	for (i = 0; i < VERSIONS_MAX && versions[i][0] != '\0'; i++)
		if (strcmp(versions[i], v) == 0)
			break;
	if (i == VERSIONS_MAX)
		return;
	snprintf(versions[i], VERSION_LEN, "%s", v);
	version_count[i]++;
}

static void do_handshake(struct session *s)
{
	int r = tls_handshake_step(s);

	if (r == IO_WANT_READ || r == IO_WANT_WRITE) {
		io_want(s, r == IO_WANT_READ ? EV_READ : EV_WRITE);
		return;
	}
	if (r != 1) {
		fail(s, &st.err_tls, "handshake: %s", tls_err);
		return;
	}
	count_version(SSL_get_version(s->ssl));
	st.resumed += SSL_session_reused(s->ssl) == 1;
	s->step = ST_EHLO_TLS;
	send_cmd(s, "EHLO %s\r\n", opt.helo);
}

static void on_io(struct ev_loop *loop, ev_io *w, int revents)
{
	struct session *s = w->data;

	(void)loop;
	(void)revents;
	if (s->step != ST_IDLE)
		touch(s);
	switch (s->step) {
	case ST_CONNECT:
		do_connected(s);
		break;
	case ST_HANDSHAKE:
		do_handshake(s);
		break;
	case ST_OFF:
	case ST_DONE:
		break;
	default:
		if (s->out_len > 0)
			do_write(s);
		else
			do_read(s);
		break;
	}
}

static void on_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct session *s = w->data;

	(void)loop;
	(void)revents;
	fail(s, &st.err_timeout, "no progress for %.0f s", opt.timeout);
}

/* ---- sessions ---- */

static void session_connect(struct session *s)
{
	s->fd = socket(opt.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (s->fd < 0) {
		fail(s, &st.err_connect, "socket: %s", strerror(errno));
		return;
	}
	if (opt.nodelay &&
	    setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &(int){1},
	               sizeof(int)) != 0) {
		fail(s, &st.err_connect, "TCP_NODELAY: %s", strerror(errno));
		return;
	}
	st.conns++;
	s->on_conn = 0;
	s->msg_start = ev_now(s->loop);
	s->step = ST_CONNECT;
	touch(s);
	if (connect(s->fd, (struct sockaddr *)&opt.addr, opt.addr_len) != 0 &&
	    errno != EINPROGRESS) {
		fail(s, &st.err_connect, "connect: %s", strerror(errno));
		return;
	}
	io_want(s, EV_WRITE);
}

/* Opens a connection for the next message, or ends the session. */
static void session_start(struct session *s)
{
	if (opt.idle ? stopping : !claim(s)) {
		s->step = ST_DONE;
		return;
	}
	session_connect(s);
}

/* Idle mode ramps up: each connection that is held (or failed) starts the
 * next one, so at most opt.ramp handshakes are in flight. */
static void session_next(struct session *s)
{
	if (next_session < opt.sessions)
		session_start(&sessions[next_session++]);
	if (st.ready + st.errors < opt.sessions)
		return;
	if (st.errors > 0) {
		ev_break(s->loop, EVBREAK_ALL); /* report() says why */
		return;
	}
	printf("ready %ld\n", st.ready);
	fflush(stdout);
}

static void session_init(struct session *s, struct ev_loop *loop)
{
	memset(s, 0, sizeof(*s));
	s->loop = loop;
	s->fd = -1;
	ev_io_init(&s->io, on_io, -1, EV_READ);
	s->io.data = s;
	ev_init(&s->timer, on_timeout);
	s->timer.data = s;
}

static void on_stop(struct ev_loop *loop, ev_signal *w, int revents)
{
	(void)w;
	(void)revents;
	stopping = true;
	if (opt.idle)
		ev_break(loop, EVBREAK_ALL);
}

/* ---- report ---- */

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double pct(double p)
{
	long i = (long)(p / 100.0 * (double)(st.ok - 1) + 0.5);

	return st.lat[i] * 1000.0;
}

static int report(void)
{
	printf("sessions %d messages_ok %ld connections %ld errors %ld "
	       "(connect %ld reply %ld tls %ld closed %ld timeout %ld)\n",
	       opt.sessions, st.ok, st.conns, st.errors, st.err_connect,
	       st.err_reply, st.err_tls, st.err_closed, st.err_timeout);
	for (int i = 0; i < VERSIONS_MAX && versions[i][0] != '\0'; i++)
		printf("tls %s %ld\n", versions[i], version_count[i]);
	if (opt.starttls)
		printf("tls_resumed %ld\n", st.resumed);
	if (opt.idle) {
		printf("idle_held %ld\n", st.ready);
	} else if (st.errors == 0 && st.ok > 0) {
		double secs = st.last_ok - st.start;

		qsort(st.lat, (size_t)st.ok, sizeof(double), cmp_double);
		printf("rate %.1f %s over %.3f s\n", (double)st.ok / secs,
		       opt.per_conn == 0 ? "conn/s" : "msg/s", secs);
		printf("latency_ms p50 %.2f p90 %.2f p99 %.2f max %.2f\n",
		       pct(50), pct(90), pct(99), pct(100));
	}
	if (st.errors > 0 || (!opt.idle && st.ok == 0)) {
		fprintf(stderr,
		        "loadgen: FAILED: %ld errors, %ld messages "
		        "ok: no rate\n",
		        st.errors, st.ok);
		return 1;
	}
	return 0;
}

/* ---- set-up ---- */

static void make_message(void)
{
	static const char head[] = "From: <%s>\r\nTo: <%s>\r\n"
	                           "Subject: loadgen\r\n\r\n";
	size_t cap = opt.size + 1024, len;

	message = malloc(cap);
	if (message == NULL)
		die("out of memory");
	len = (size_t)snprintf(message, cap, head, opt.from, opt.rcpt);
	while (len + 78 + 5 <= opt.size) {
		memset(message + len, 'x', 76);
		memcpy(message + len + 76, "\r\n", 2);
		len += 78;
	}
	memcpy(message + len, "\r\n.\r\n", 5);
	message_len = len + 5;
}

static void parse_target(const char *arg)
{
	char host[256];
	const char *colon = strrchr(arg, ':');
	struct sockaddr_in *in4 = (struct sockaddr_in *)&opt.addr;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&opt.addr;
	size_t hlen;
	int port;

	if (colon == NULL || (hlen = (size_t)(colon - arg)) >= sizeof(host))
		die("target must be HOST:PORT: %s", arg);
	memcpy(host, arg, hlen);
	host[hlen] = '\0';
	if (hlen > 1 && host[0] == '[' && host[hlen - 1] == ']') {
		memmove(host, host + 1, hlen - 2);
		host[hlen - 2] = '\0';
	}
	port = atoi(colon + 1);
	if (port <= 0 || port > 65535)
		die("bad port: %s", arg);
	if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
		in4->sin_family = AF_INET;
		in4->sin_port = htons((uint16_t)port);
		opt.addr_len = sizeof(*in4);
	} else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)port);
		opt.addr_len = sizeof(*in6);
	} else {
		die("target must be an address (no DNS): %s", host);
	}
}

static void usage(void)
{
	fprintf(stderr, "usage: loadgen [-c sessions] [-m msgs/conn] [-s size] "
	                "[-n total | -d seconds]\n"
	                "               [-t] [-P] [-i] [-r ramp] [-T timeout] "
	                "[-f from] [-a rcpt] [-H helo] [-V 1.2|1.3] [-R] [-N] "
	                "HOST:PORT\n"
	                "  -m 0 no message: connect, EHLO, [STARTTLS, EHLO,] "
	                "QUIT; rate in conn/s\n"
	                "  -t STARTTLS (no certificate check; TLS 1.2 or 1.3, "
	                "or only -V's)\n"
	                "  -R resume: offer each session's last TLS session\n"
	                "  -N TCP_NODELAY (otherwise the EHLO after a handshake "
	                "may wait\n"
	                "     for the server's delayed ACK of Finished)\n"
	                "  -P RFC 2920 pipelining\n"
	                "  -i idle mode: open -c connections, hold them, print "
	                "\"ready N\",\n"
	                "     wait for SIGTERM\n");
	exit(2);
}

/* -V 1.2 or -V 1.3: offer only that version (default: 1.2 and 1.3, so
 * 1.3 wherever the server has it). */
static void parse_tls_version(const char *arg)
{
	if (strcmp(arg, "1.2") == 0)
		opt.tls_min = opt.tls_max = TLS1_2_VERSION;
	else if (strcmp(arg, "1.3") == 0)
		opt.tls_min = opt.tls_max = TLS1_3_VERSION;
	else
		die("-V takes 1.2 or 1.3: %s", arg);
}

static void parse_opts(int argc, char **argv)
{
	int c;

	opt.sessions = 20;
	opt.per_conn = 1;
	opt.size = 4096;
	opt.timeout = 60;
	opt.ramp = 200;
	opt.tls_min = TLS1_2_VERSION;
	opt.tls_max = TLS1_3_VERSION;
	opt.from = "loadgen@client.example";
	opt.rcpt = "user@bench.example";
	opt.helo = "loadgen.client.example";
	while ((c = getopt(argc, argv, "c:m:s:n:d:tPir:T:f:a:H:V:RN")) != -1) {
		switch (c) {
		case 'c':
			opt.sessions = atoi(optarg);
			break;
		case 'm':
			opt.per_conn = atoi(optarg);
			break;
		case 's':
			opt.size = (size_t)atol(optarg);
			break;
		case 'n':
			opt.total = atol(optarg);
			break;
		case 'd':
			opt.duration = atof(optarg);
			break;
		case 't':
			opt.starttls = true;
			break;
		case 'P':
			opt.pipelining = true;
			break;
		case 'i':
			opt.idle = true;
			break;
		case 'r':
			opt.ramp = atoi(optarg);
			break;
		case 'T':
			opt.timeout = atof(optarg);
			break;
		case 'f':
			opt.from = optarg;
			break;
		case 'a':
			opt.rcpt = optarg;
			break;
		case 'H':
			opt.helo = optarg;
			break;
		case 'V':
			parse_tls_version(optarg);
			break;
		case 'R':
			opt.resume = true;
			break;
		case 'N':
			opt.nodelay = true;
			break;
		default:
			usage();
		}
	}
	if (optind != argc - 1 || opt.sessions <= 0 || opt.per_conn < 0 ||
	    opt.ramp <= 0 || opt.timeout <= 0 ||
	    (!opt.idle && (opt.total > 0) == (opt.duration > 0)))
		usage();
	parse_target(argv[optind]);
}

/* No certificate check: accepts the chain without building a path (with
 * SSL_VERIFY_NONE alone, OpenSSL still runs X509_verify_cert and ignores
 * the result). */
static int accept_any_cert(X509_STORE_CTX *ctx, void *arg)
{
	(void)ctx;
	(void)arg;
	return 1;
}

static void setup_tls(void)
{
	if (!opt.starttls)
		return;
	tls_ctx = SSL_CTX_new(TLS_client_method());
	if (tls_ctx == NULL ||
	    SSL_CTX_set_min_proto_version(tls_ctx, opt.tls_min) != 1 ||
	    SSL_CTX_set_max_proto_version(tls_ctx, opt.tls_max) != 1) {
		tls_note_error("no memory");
		die("TLS context: %s", tls_err);
	}
	SSL_CTX_set_verify(tls_ctx, SSL_VERIFY_NONE, NULL);
	SSL_CTX_set_cert_verify_callback(tls_ctx, accept_any_cert, NULL);
	/* no cache: every handshake is a full one, unless -R offers the
	 * session a session kept itself */
	SSL_CTX_set_session_cache_mode(tls_ctx, SSL_SESS_CACHE_OFF);
	/* the peer closing without close_notify reads as a close */
	SSL_CTX_set_options(tls_ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
	/* do_write retries from s->out + s->out_off; idle connections
	 * (-i) hold no record buffers */
	SSL_CTX_set_mode(tls_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
	                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
	                              SSL_MODE_RELEASE_BUFFERS);
}

static void raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return;
	rl.rlim_cur = rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
}

int main(int argc, char **argv)
{
	struct ev_loop *loop = EV_DEFAULT;
	ev_signal sigterm, sigint;
	int first;

	parse_opts(argc, argv);
	signal(SIGPIPE, SIG_IGN);
	raise_nofile();
	setup_tls();
	make_message();
	sessions = calloc((size_t)opt.sessions, sizeof(*sessions));
	if (sessions == NULL)
		die("out of memory");
	for (int i = 0; i < opt.sessions; i++)
		session_init(&sessions[i], loop);
	ev_signal_init(&sigterm, on_stop, SIGTERM);
	ev_signal_init(&sigint, on_stop, SIGINT);
	ev_signal_start(loop, &sigterm);
	ev_signal_start(loop, &sigint);
	ev_unref(loop); /* the signal watchers alone keep no run alive */
	ev_unref(loop);
	ev_now_update(loop);
	st.start = ev_now(loop);
	first = opt.idle && opt.ramp < opt.sessions ? opt.ramp : opt.sessions;
	next_session = first;
	for (int i = 0; i < first; i++)
		session_start(&sessions[i]);
	ev_run(loop, 0);
	return report();
}
