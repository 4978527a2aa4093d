/*
 * tls_probe: `smtpgw -c FILE tls-probe HOST:PORT`, the gateway's
 * posttls-finger. It runs EHLO and STARTTLS against one SMTP server with the
 * outbound client config of a level and reports what the delivery code would
 * get. A command-line tool, so it may block; it never runs inside the
 * gateway's event loop, and it never resolves names (HOST is an address).
 */
#include "cli/tls_probe.h"

#include "proto/smtp_proto.h"
#include "net/tls.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

enum { PROBE_TIMEOUT_SECONDS = 30, PROBE_MAX_REPLY_LINES = 100 };

/* A blocking line reader over the socket, then over TLS. */
struct probe_io {
	int fd;
	struct tls *tls;
	char buf[4096];
	size_t len;
};

static ssize_t io_read(struct probe_io *io, char *p, size_t n)
{
	ssize_t r;

	if (io->tls == NULL)
		return read(io->fd, p, n);
	do
		r = tls_read(io->tls, p, n);
	while (r == TLS_WANT_POLLIN || r == TLS_WANT_POLLOUT);
	return r;
}

static bool io_send(struct probe_io *io, const char *line)
{
	char out[600];
	int n = snprintf(out, sizeof(out), "%s\r\n", line);
	const char *p = out;

	while (n > 0) {
		ssize_t w = io->tls ? tls_write(io->tls, p, (size_t)n)
				    : write(io->fd, p, (size_t)n);

		if (w == TLS_WANT_POLLIN || w == TLS_WANT_POLLOUT)
			continue;
		if (w <= 0)
			return false;
		p += w;
		n -= (int)w;
	}
	return true;
}

/* One line without its CRLF into `line`; false on EOF, error or overflow. */
static bool io_line(struct probe_io *io, char *line, size_t size)
{
	for (;;) {
		char *lf = memchr(io->buf, '\n', io->len);
		ssize_t r;

		if (lf != NULL) {
			size_t n = (size_t)(lf - io->buf);
			size_t keep = n > 0 && lf[-1] == '\r' ? n - 1 : n;

			if (keep >= size)
				return false;
			memcpy(line, io->buf, keep);
			line[keep] = '\0';
			io->len -= n + 1;
			memmove(io->buf, lf + 1, io->len);
			return true;
		}
		if (io->len == sizeof(io->buf))
			return false;
		r = io_read(io, io->buf + io->len, sizeof(io->buf) - io->len);
		if (r <= 0)
			return false;
		io->len += (size_t)r;
	}
}

/* Reads a whole reply; its code, and whether any line said `keyword`. */
static int read_reply(struct probe_io *io, const char *keyword, bool *seen)
{
	char line[SMTP_REPLY_LINE_MAX + 1];
	struct smtp_reply_line r;

	for (int i = 0; i < PROBE_MAX_REPLY_LINES; i++) {
		if (!io_line(io, line, sizeof(line)) ||
		    !smtp_parse_reply_line(line, strlen(line), &r))
			return -1;
		if (keyword != NULL && r.text_len == strlen(keyword) &&
		    strncasecmp(r.text, keyword, r.text_len) == 0)
			*seen = true;
		if (!r.more)
			return r.code;
	}
	return -1;
}

static int dial(const char *target, char *host, size_t host_len)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV};
	struct addrinfo *ai;
	struct timeval tv = {.tv_sec = PROBE_TIMEOUT_SECONDS};
	const char *colon = strrchr(target, ':');
	const char *start = target[0] == '[' ? target + 1 : target;
	size_t n = colon ? (size_t)(colon - start) : 0;
	int fd;

	if (n > 0 && target[0] == '[')
		n--; /* the closing bracket */
	if (colon == NULL || n == 0 || n >= host_len)
		return -1;
	memcpy(host, start, n);
	host[n] = '\0';
	if (getaddrinfo(host, colon + 1, &hints, &ai) != 0)
		return -1;
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0) {
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
			close(fd);
			fd = -1;
		}
	}
	freeaddrinfo(ai);
	return fd;
}

/* Plaintext part: banner, EHLO, STARTTLS. */
static const char *negotiate(struct probe_io *io, const char *helo)
{
	char ehlo[300];
	bool offered = false;

	snprintf(ehlo, sizeof(ehlo), "EHLO %s", helo);
	if (read_reply(io, NULL, NULL) != 220)
		return "no 220 greeting";
	if (!io_send(io, ehlo) || read_reply(io, "STARTTLS", &offered) != 250)
		return "EHLO refused";
	if (!offered)
		return "STARTTLS not offered";
	if (!io_send(io, "STARTTLS") || read_reply(io, NULL, NULL) != 220)
		return "STARTTLS refused";
	if (io->len != 0)
		return "server sent bytes after its 220 to STARTTLS";
	return NULL;
}

static const char *trust_word(enum tls_level level)
{
	/* Postfix's words: "Verified" = chain and name checked. */
	return level == TLS_LEVEL_VERIFY ? "Verified" : "Untrusted";
}

static bool probe_once(const struct config *cfg, struct tls_config *tc,
		       const struct probe_options *o)
{
	struct probe_io io = {.fd = -1};
	char host[256];
	const char *why;
	bool ok = false;

	io.fd = dial(o->target, host, sizeof(host));
	if (io.fd < 0) {
		printf("cannot connect to %s: %s\n", o->target,
		       errno ? strerror(errno) : "bad HOST:PORT");
		return false;
	}
	why = negotiate(&io, cfg->hostname);
	if (why == NULL && ((io.tls = tls_client()) == NULL ||
			    tls_configure(io.tls, tc) != 0 ||
			    tls_connect_socket(io.tls, io.fd,
					       o->name ? o->name : host) != 0 ||
			    tls_handshake(io.tls) != 0))
		why = io.tls ? tls_error(io.tls) : "out of memory";
	if (why != NULL) {
		printf("TLS to %s failed: %s\n", o->target, why);
	} else {
		printf("%s TLS connection established to %s: %s with cipher %s "
		       "resumed=%s\n",
		       trust_word(o->level), o->target, tls_conn_version(io.tls),
		       tls_conn_cipher(io.tls),
		       tls_conn_session_resumed(io.tls) ? "yes" : "no");
		ok = io_send(&io, "QUIT");
		read_reply(&io, NULL, NULL);
		tls_close(io.tls);
	}
	tls_free(io.tls);
	close(io.fd);
	return ok;
}

int tls_probe_command(const struct config *cfg, const struct probe_options *o)
{
	struct tls_clients clients;
	char err[512];
	bool ok = true;

	if (!tls_clients_new(cfg, &clients, err, sizeof(err))) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	for (unsigned i = 0; i < o->repeat; i++)
		ok = probe_once(cfg, o->level == TLS_LEVEL_VERIFY
					     ? clients.verify
					     : clients.encrypt,
				o) && ok;
	tls_clients_free(&clients);
	return ok ? 0 : 1;
}
