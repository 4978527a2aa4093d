/*
 * sink: an SMTP sink for `make bench` (libev + libtls). Owns one listening
 * socket and its sessions; accepts any envelope and any message, replies as
 * a real MTA would (PIPELINING honoured: every reply to one read goes out in
 * one write), optionally offers STARTTLS with a given certificate and key,
 * and counts messages. It keeps nothing it receives.
 *   sink [-t CERT -k KEY] [-o FILE] HOST:PORT
 * The count goes to stdout on SIGUSR1 and at exit (SIGTERM/SIGINT); with -o
 * it is also written to FILE as "COUNT LAST_UNIX_TIME" whenever it changed
 * (checked every 10 ms), so a bench can wait for N deliveries.
 * It must not be used where mail matters: every message is thrown away.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <tls.h>
#include <unistd.h>

enum { IN_MAX = 16384, OUT_MAX = 4096, LINE_MAX_ = 1000 };

enum mode {
	M_CMD,       /* reading command lines */
	M_DATA,      /* inside DATA, looking for <CRLF>.<CRLF> */
	M_HANDSHAKE, /* STARTTLS accepted, TLS handshake in progress */
	M_CLOSING,   /* last reply queued, close once it is written */
};

struct client {
	struct ev_loop *loop;
	ev_io io;
	int fd;
	struct tls *tls;
	enum mode mode;
	int eod;     /* characters of "\r\n.\r\n" matched */
	bool tls_on; /* STARTTLS done */
	char in[IN_MAX];
	size_t in_len;
	char out[OUT_MAX];
	size_t out_len, out_off;
};

static struct tls *tls_srv;
static long count;
static double last_time;
static long written = -1;
static int count_fd = -1;

static void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("sink: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(2);
}

static void client_free(struct client *c)
{
	ev_io_stop(c->loop, &c->io);
	if (c->tls != NULL) {
		tls_close(c->tls);
		tls_free(c->tls);
	}
	close(c->fd);
	free(c);
}

static void want(struct client *c, int events)
{
	if (c->io.events == events && ev_is_active(&c->io))
		return;
	ev_io_stop(c->loop, &c->io);
	ev_io_set(&c->io, c->fd, events);
	ev_io_start(c->loop, &c->io);
}

static void reply(struct client *c, const char *text)
{
	size_t len = strlen(text);

	if (c->out_len + len > sizeof(c->out)) {
		c->mode = M_CLOSING; /* a client that never reads */
		return;
	}
	memcpy(c->out + c->out_len, text, len);
	c->out_len += len;
}

static bool is_cmd(const char *line, const char *cmd)
{
	return strncasecmp(line, cmd, strlen(cmd)) == 0;
}

static void do_ehlo(struct client *c)
{
	reply(c, "250-sink.bench.example\r\n250-PIPELINING\r\n"
	         "250-8BITMIME\r\n250-SIZE 104857600\r\n");
	if (tls_srv != NULL && !c->tls_on)
		reply(c, "250-STARTTLS\r\n");
	reply(c, "250 ENHANCEDSTATUSCODES\r\n");
}

/* Returns false when the rest of the input must be dropped (STARTTLS). */
static bool do_command(struct client *c, const char *line)
{
	if (is_cmd(line, "EHLO")) {
		do_ehlo(c);
	} else if (is_cmd(line, "HELO")) {
		reply(c, "250 sink.bench.example\r\n");
	} else if (is_cmd(line, "MAIL")) {
		reply(c, "250 2.1.0 Ok\r\n");
	} else if (is_cmd(line, "RCPT")) {
		reply(c, "250 2.1.5 Ok\r\n");
	} else if (is_cmd(line, "DATA")) {
		reply(c, "354 End data with <CR><LF>.<CR><LF>\r\n");
		c->mode = M_DATA;
		c->eod = 2; /* the DATA line's CRLF starts the first line */
	} else if (is_cmd(line, "RSET") || is_cmd(line, "NOOP")) {
		reply(c, "250 2.0.0 Ok\r\n");
	} else if (is_cmd(line, "QUIT")) {
		reply(c, "221 2.0.0 Bye\r\n");
		c->mode = M_CLOSING;
	} else if (is_cmd(line, "STARTTLS") && tls_srv && !c->tls_on) {
		reply(c, "220 2.0.0 Ready to start TLS\r\n");
		c->mode = M_HANDSHAKE;
		return false;
	} else {
		reply(c, "502 5.5.2 Error: command not recognized\r\n");
	}
	return true;
}

/* Consumes message octets up to the end of data; returns how many. */
static size_t eat_data(struct client *c, const char *p, size_t len)
{
	static const char eod[] = "\r\n.\r\n";

	for (size_t i = 0; i < len; i++) {
		if (p[i] == eod[c->eod])
			c->eod++;
		else
			c->eod = p[i] == '\r' ? 1 : 0;
		if (c->eod == 5) {
			struct timespec ts;

			count++;
			clock_gettime(CLOCK_REALTIME, &ts);
			last_time = (double)ts.tv_sec + ts.tv_nsec / 1e9;
			reply(c, "250 2.0.0 Ok: queued\r\n");
			c->mode = M_CMD;
			return i + 1;
		}
	}
	return len;
}

static size_t eat_line(struct client *c, char *p, size_t len)
{
	char *nl = memchr(p, '\n', len);

	if (nl == NULL) {
		if (len > LINE_MAX_)
			c->mode = M_CLOSING;
		return 0;
	}
	*nl = '\0';
	if (!do_command(c, p))
		return len; /* nothing after STARTTLS is kept */
	return (size_t)(nl - p) + 1;
}

static void process(struct client *c)
{
	size_t pos = 0, n = 1;

	while (pos < c->in_len && n > 0 &&
	       (c->mode == M_CMD || c->mode == M_DATA)) {
		if (c->mode == M_DATA)
			n = eat_data(c, c->in + pos, c->in_len - pos);
		else
			n = eat_line(c, c->in + pos, c->in_len - pos);
		pos += n;
	}
	memmove(c->in, c->in + pos, c->in_len - pos);
	c->in_len -= pos;
	if (c->mode == M_HANDSHAKE)
		c->in_len = 0;
}

static ssize_t io_read(struct client *c)
{
	ssize_t n;

	if (c->tls != NULL)
		return tls_read(c->tls, c->in + c->in_len,
		                sizeof(c->in) - c->in_len);
	n = read(c->fd, c->in + c->in_len, sizeof(c->in) - c->in_len);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return TLS_WANT_POLLIN;
	return n;
}

static ssize_t io_write(struct client *c)
{
	ssize_t n;

	if (c->tls != NULL)
		return tls_write(c->tls, c->out + c->out_off,
		                 c->out_len - c->out_off);
	n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return TLS_WANT_POLLOUT;
	return n;
}

static void start_tls(struct client *c)
{
	if (tls_accept_socket(tls_srv, &c->tls, c->fd) != 0) {
		client_free(c);
		return;
	}
	c->tls_on = true;
	want(c, EV_READ);
}

/* After the output is flushed: close, hand over to TLS, or read on. */
static void flushed(struct client *c)
{
	c->out_len = c->out_off = 0;
	switch (c->mode) {
	case M_CLOSING:
		client_free(c);
		break;
	case M_HANDSHAKE:
		if (c->tls == NULL)
			start_tls(c);
		else
			want(c, EV_READ);
		break;
	default:
		want(c, EV_READ);
		break;
	}
}

static void do_write(struct client *c)
{
	while (c->out_off < c->out_len) {
		ssize_t n = io_write(c);

		if (n == TLS_WANT_POLLIN || n == TLS_WANT_POLLOUT) {
			want(c, n == TLS_WANT_POLLIN ? EV_READ : EV_WRITE);
			return;
		}
		if (n <= 0) {
			client_free(c);
			return;
		}
		c->out_off += (size_t)n;
	}
	flushed(c);
}

static void do_handshake(struct client *c)
{
	int r = tls_handshake(c->tls);

	if (r == TLS_WANT_POLLIN || r == TLS_WANT_POLLOUT) {
		want(c, r == TLS_WANT_POLLIN ? EV_READ : EV_WRITE);
		return;
	}
	if (r != 0) {
		client_free(c);
		return;
	}
	c->mode = M_CMD;
	want(c, EV_READ);
}

static void do_read(struct client *c)
{
	ssize_t n;

	if (c->in_len == sizeof(c->in))
		c->in_len = 0; /* only in DATA: octets already scanned */
	n = io_read(c);
	if (n == TLS_WANT_POLLIN || n == TLS_WANT_POLLOUT) {
		want(c, n == TLS_WANT_POLLIN ? EV_READ : EV_WRITE);
		return;
	}
	if (n <= 0) {
		client_free(c);
		return;
	}
	c->in_len += (size_t)n;
	process(c);
	if (c->out_len > 0)
		do_write(c);
	else if (c->mode == M_CLOSING)
		client_free(c);
}

static void on_client(struct ev_loop *loop, ev_io *w, int revents)
{
	struct client *c = w->data;

	(void)loop;
	(void)revents;
	if (c->out_len > 0)
		do_write(c);
	else if (c->mode == M_HANDSHAKE)
		do_handshake(c);
	else
		do_read(c);
}

static void on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)revents;
	for (;;) {
		int fd = accept4(w->fd, NULL, NULL, SOCK_NONBLOCK);
		struct client *c;

		if (fd < 0)
			return;
		c = calloc(1, sizeof(*c));
		if (c == NULL) {
			close(fd);
			return;
		}
		c->loop = loop;
		c->fd = fd;
		ev_io_init(&c->io, on_client, fd, EV_WRITE);
		c->io.data = c;
		reply(c, "220 sink.bench.example ESMTP sink\r\n");
		ev_io_start(loop, &c->io);
	}
}

static void write_count(void)
{
	char buf[64];
	int n;

	if (count_fd < 0 || written == count)
		return;
	n = snprintf(buf, sizeof(buf), "%20ld %20.6f\n", count, last_time);
	if (pwrite(count_fd, buf, (size_t)n, 0) != n)
		die("write count file: %s", strerror(errno));
	written = count;
}

static void on_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	write_count();
}

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
	(void)revents;
	printf("count %ld\n", count);
	fflush(stdout);
	if (w->signum != SIGUSR1) {
		write_count();
		ev_break(loop, EVBREAK_ALL);
	}
}

static int listen_on(const char *arg)
{
	char host[64];
	const char *colon = strrchr(arg, ':');
	struct sockaddr_in sin = {.sin_family = AF_INET};
	int fd, one = 1;

	if (colon == NULL || (size_t)(colon - arg) >= sizeof(host))
		die("listen address must be IPv4:PORT: %s", arg);
	memcpy(host, arg, (size_t)(colon - arg));
	host[colon - arg] = '\0';
	if (inet_pton(AF_INET, host, &sin.sin_addr) != 1)
		die("bad address: %s", host);
	sin.sin_port = htons((uint16_t)atoi(colon + 1));
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (fd < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    bind(fd, (struct sockaddr *)&sin, sizeof(sin)) || listen(fd, 4096))
		die("listen %s: %s", arg, strerror(errno));
	return fd;
}

static void setup_tls(const char *cert, const char *key)
{
	struct tls_config *cfg;

	if (cert == NULL && key == NULL)
		return;
	if (cert == NULL || key == NULL)
		die("-t and -k go together");
	cfg = tls_config_new();
	tls_srv = tls_server();
	if (cfg == NULL || tls_srv == NULL ||
	    tls_config_set_keypair_file(cfg, cert, key) != 0 ||
	    tls_configure(tls_srv, cfg) != 0)
		die("tls: %s", cfg ? tls_config_error(cfg) : "no memory");
	tls_config_free(cfg);
}

int main(int argc, char **argv)
{
	struct ev_loop *loop = EV_DEFAULT;
	const char *cert = NULL, *key = NULL, *file = NULL;
	ev_io lw;
	ev_timer tick;
	ev_signal s_usr1, s_term, s_int;
	int ch;

	while ((ch = getopt(argc, argv, "t:k:o:")) != -1) {
		if (ch == 't')
			cert = optarg;
		else if (ch == 'k')
			key = optarg;
		else if (ch == 'o')
			file = optarg;
		else
			die("usage: sink [-t CERT -k KEY] [-o FILE] HOST:PORT");
	}
	if (optind != argc - 1)
		die("usage: sink [-t CERT -k KEY] [-o FILE] HOST:PORT");
	signal(SIGPIPE, SIG_IGN);
	setup_tls(cert, key);
	if (file != NULL &&
	    (count_fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0644)) < 0)
		die("%s: %s", file, strerror(errno));
	write_count();
	ev_io_init(&lw, on_accept, listen_on(argv[optind]), EV_READ);
	ev_io_start(loop, &lw);
	ev_timer_init(&tick, on_tick, 0.01, 0.01);
	ev_timer_start(loop, &tick);
	ev_signal_init(&s_usr1, on_signal, SIGUSR1);
	ev_signal_init(&s_term, on_signal, SIGTERM);
	ev_signal_init(&s_int, on_signal, SIGINT);
	ev_signal_start(loop, &s_usr1);
	ev_signal_start(loop, &s_term);
	ev_signal_start(loop, &s_int);
	printf("listening %s\n", argv[optind]);
	fflush(stdout);
	ev_run(loop, 0);
	return 0;
}
