/*
 * tls_probe: `smtpgw -c FILE tls-probe TARGET`, the gateway's
 * posttls-finger. TARGET is an ADDRESS:PORT, a next hop, or a domain routed
 * as delivery routes it (next_hop, relayhost or MX, with the section's
 * tls_name). It runs EHLO and STARTTLS against the first host that answers
 * with the outbound client config of a level, and reports what the
 * delivery code would get and the server's certificate. A command-line
 * tool, so it may block; it never runs inside the gateway's event loop.
 */
#include "cli/tls_probe.h"

#include "cli/route_command.h"
#include "core/netaddr.h"
#include "net/dns.h"
#include "net/tls.h"
#include "proto/smtp_proto.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
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

/* A blocking connect with the probe's timeout; -1 and errno on failure. */
static int dial(const struct sockaddr_storage *ss)
{
	struct timeval tv = {.tv_sec = PROBE_TIMEOUT_SECONDS};
	socklen_t len = ss->ss_family == AF_INET6
				? sizeof(struct sockaddr_in6)
				: sizeof(struct sockaddr_in);
	int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)); /* connect */
	if (connect(fd, (const struct sockaddr *)ss, len) != 0) {
		int e = errno;

		close(fd);
		errno = e;
		return -1;
	}
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

/* "2026-11-27 00:00:00 UTC" */
static const char *utc(time_t t, char *buf, size_t len)
{
	struct tm tm;

	if (gmtime_r(&t, &tm) == NULL ||
	    strftime(buf, len, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
		snprintf(buf, len, "?");
	return buf;
}

/* What posttls-finger shows of the server's certificate. */
static void print_peer(struct tls *tls)
{
	size_t len = 0;
	const uint8_t *pem = tls_peer_cert_chain_pem(tls, &len);
	struct cert_info ci;
	char when[64];

	if (pem == NULL || !cert_describe_pem(pem, len, "peer", &ci)) {
		printf("  (no certificate details)\n");
		return;
	}
	printf("  subject   %s\n", ci.subject);
	printf("  issuer    %s\n", ci.issuer);
	printf("  names     %s\n", ci.dns[0] ? ci.dns : "(none)");
	printf("  not_before %s\n", utc(ci.not_before, when, sizeof(when)));
	printf("  not_after %s\n", utc(ci.not_after, when, sizeof(when)));
	printf("  sha256    %s\n", ci.sha256);
}

/* EHLO, STARTTLS and the handshake on a connected socket; prints the
 * outcome, and the certificate when there is TLS. */
static bool probe_fd(const struct config *cfg, struct tls_config *tc,
		     const struct probe_options *o, int fd, const char *label,
		     const char *name)
{
	struct probe_io io = {.fd = fd};
	const char *why = negotiate(&io, cfg->hostname);
	bool ok = false;

	if (why == NULL && ((io.tls = tls_client()) == NULL ||
			    tls_configure(io.tls, tc) != 0 ||
			    tls_connect_socket(io.tls, io.fd, name) != 0 ||
			    tls_handshake(io.tls) != 0))
		why = io.tls ? tls_error(io.tls) : "out of memory";
	if (why != NULL) {
		printf("TLS to %s failed: %s\n", label, why);
	} else {
		printf("%s TLS connection established to %s: %s with cipher %s "
		       "resumed=%s\n",
		       trust_word(o->level), label, tls_conn_version(io.tls),
		       tls_conn_cipher(io.tls),
		       tls_conn_session_resumed(io.tls) ? "yes" : "no");
		print_peer(io.tls);
		ok = io_send(&io, "QUIT");
		read_reply(&io, NULL, NULL);
		tls_close(io.tls);
	}
	tls_free(io.tls);
	return ok;
}

/* The hosts of the route in order, each address until one connects; that
 * one is probed (as delivery would use it). */
static bool probe_route(const struct config *cfg, struct tls_config *tc,
			const struct probe_options *o,
			const struct dns_route *rt, const char *tls_name)
{
	for (size_t i = 0; i < rt->n_hosts; i++) {
		const struct dns_host *h = &rt->hosts[i];

		for (size_t k = 0; k < h->n_addrs; k++) {
			char ip[64], label[340];
			const char *name = o->name   ? o->name
					   : tls_name ? tls_name
						      : h->name;
			int fd;
			bool ok;

			sockaddr_ip_text(&h->addrs[k], ip, sizeof(ip));
			if (o->literal)
				snprintf(label, sizeof(label), "%s", o->target);
			else
				snprintf(label, sizeof(label), "%.255s[%.63s]:%u",
					 h->name, ip, sockaddr_port(&h->addrs[k]));
			fd = dial(&h->addrs[k]);
			if (fd < 0) {
				printf("cannot connect to %s: %s\n", label,
				       strerror(errno));
				continue;
			}
			ok = probe_fd(cfg, tc, o, fd, label, name);
			close(fd);
			return ok;
		}
	}
	printf("no host of the route could be reached\n");
	return false;
}

/* TARGET: an address with its port (no DNS), a next hop ("[mx.example]:
 * 587", "relay.example:25"), or a domain, routed as delivery routes it. */
static bool resolve_target(const struct config *cfg, struct probe_options *o,
			   struct route *rt, struct next_hop *hop,
			   struct dns_route *out)
{
	const char *why;
	bool has_port = strchr(o->target, ':') != NULL;

	if (!next_hop_parse(o->target, 25, hop, &why)) {
		printf("%s: not an ADDRESS:PORT, next hop or domain: %s\n",
		       o->target, why);
		return false;
	}
	o->literal = hop->literal && has_port;
	if (!hop->no_mx && !has_port) {
		config_route(cfg, hop->host, strlen(hop->host), rt);
		route_print_source(rt);
	} else {
		*rt = (struct route){.source = ROUTE_NEXT_HOP, .hop = hop};
		if (!o->literal)
			route_print_source(rt);
	}
	if (!route_resolve(cfg, rt, hop->host, 25, out))
		return false;
	if (out->status != DNS_OK) {
		printf("%s: %s\n", o->target, out->error);
		return false;
	}
	return true;
}

int tls_probe_command(const struct config *cfg, const struct probe_options *o)
{
	struct probe_options opt = *o;
	struct tls_clients clients;
	struct route rt;
	struct next_hop hop;
	struct dns_route answer;
	char err[512];
	bool ok = true;

	if (!resolve_target(cfg, &opt, &rt, &hop, &answer))
		return 1;
	if (!tls_clients_new(cfg, &clients, err, sizeof(err))) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	for (unsigned i = 0; i < opt.repeat; i++)
		ok = probe_route(cfg, opt.level == TLS_LEVEL_VERIFY
					      ? clients.verify
					      : clients.encrypt,
				 &opt, &answer, rt.tls_name) &&
		     ok;
	tls_clients_free(&clients);
	return ok ? 0 : 1;
}
