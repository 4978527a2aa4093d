/*
 * next_hop: Postfix's next-hop syntax (see next_hop.h). Owns nothing but
 * the parse; the meaning of a route (which next hop a domain takes) is
 * core/config.c's, the lookups net/dns.c's. No I/O.
 */
#include "proto/next_hop.h"

#include "proto/dns_wire.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* "25" → 25: digits only, 1..65535. */
static bool parse_port(const char *text, unsigned *port)
{
	unsigned long v = 0;
	size_t n = strspn(text, "0123456789");

	if (n == 0 || n > 5 || text[n] != '\0')
		return false;
	for (size_t i = 0; i < n; i++)
		v = v * 10 + (unsigned long)(text[i] - '0');
	if (v == 0 || v > 65535)
		return false;
	*port = (unsigned)v;
	return true;
}

static bool is_address(const char *host, int family)
{
	unsigned char buf[16];

	return inet_pton(family, host, buf) == 1;
}

/* The host part, `n` octets at `p`, into out->host: an address or a name. */
static bool take_host(const char *p, size_t n, bool bracketed,
		      struct next_hop *out, const char **why)
{
	char host[sizeof(out->host)];

	if (bracketed && n > 5 && strncasecmp(p, "IPv6:", 5) == 0) {
		p += 5; /* RFC 5321's address literal tag */
		n -= 5;
	}
	if (n == 0 || n >= sizeof(host)) {
		*why = n == 0 ? "no host" : "host too long";
		return false;
	}
	memcpy(host, p, n);
	host[n] = '\0';
	if (is_address(host, AF_INET) ||
	    (bracketed && is_address(host, AF_INET6))) {
		memcpy(out->host, host, n + 1);
		out->literal = true;
		out->no_mx = true;
		return true;
	}
	if (is_address(host, AF_INET6)) {
		*why = "an IPv6 address needs brackets: [ADDRESS]:PORT";
		return false;
	}
	if (!dns_name_copy(host, out->host, sizeof(out->host))) {
		*why = "not a host name or address";
		return false;
	}
	return true;
}

static bool parse_bracketed(const char *text, struct next_hop *out,
			    const char **why)
{
	const char *close = strchr(text, ']');

	if (close == NULL) {
		*why = "'[' without ']'";
		return false;
	}
	if (close[1] != '\0' && close[1] != ':') {
		*why = "text after ']' that is not :PORT";
		return false;
	}
	if (close[1] == ':' && !parse_port(close + 2, &out->port)) {
		*why = "the port is not a number from 1 to 65535";
		return false;
	}
	out->no_mx = true;
	return take_host(text + 1, (size_t)(close - text - 1), true, out, why);
}

static bool parse_plain(const char *text, struct next_hop *out,
			const char **why)
{
	const char *colon = strchr(text, ':');
	size_t n = colon ? (size_t)(colon - text) : strlen(text);

	if (colon != NULL && strchr(colon + 1, ':') != NULL)
		return take_host(text, strlen(text), false, out, why);
	if (colon != NULL && !parse_port(colon + 1, &out->port)) {
		*why = "the port is not a number from 1 to 65535";
		return false;
	}
	return take_host(text, n, false, out, why);
}

bool next_hop_parse(const char *text, unsigned default_port,
		    struct next_hop *out, const char **why)
{
	const char *dummy;

	if (why == NULL)
		why = &dummy;
	memset(out, 0, sizeof(*out));
	out->port = default_port;
	if (strlen(text) >= NEXT_HOP_TEXT_MAX) {
		*why = "too long";
		return false;
	}
	if (text[0] == '[')
		return parse_bracketed(text, out, why);
	return parse_plain(text, out, why);
}

void next_hop_format(const struct next_hop *hop, char *out, size_t len)
{
	if (hop->no_mx)
		snprintf(out, len, "[%s]:%u", hop->host, hop->port);
	else
		snprintf(out, len, "%s:%u", hop->host, hop->port);
}
