/*
 * proxy: PROXY protocol v1 and v2 headers, behind proxy.h. Pure: no I/O,
 * no state; it reads at most len octets and writes only *out, *consumed
 * and *why. It is strict where the specification is (v1's exact spacing,
 * decimal ports without leading zeros, v2's signature and version) and
 * skips v2's TLVs, which smtpgw has no use for.
 */
#include "proto/proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <string.h>

static const uint8_t V2_SIG[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
				   0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};
static const char V1_SIG[] = "PROXY ";

static size_t min_size(size_t a, size_t b)
{
	return a < b ? a : b;
}

static enum proxy_status fail(const char **why, const char *text)
{
	*why = text;
	return PROXY_ERROR;
}

/* ---- version 1 ------------------------------------------------------ */

/* The next space-separated field of line[*pos..end) into out; false when
 * empty, too long, or not followed by a space (or, for the last, the
 * end). */
static bool v1_field(const char *line, size_t end, size_t *pos, char *out,
		     size_t out_len, bool last)
{
	size_t start = *pos, n;

	while (*pos < end && line[*pos] != ' ')
		(*pos)++;
	n = *pos - start;
	if (n == 0 || n >= out_len || (last ? *pos != end : *pos == end))
		return false;
	memcpy(out, line + start, n);
	out[n] = '\0';
	if (!last)
		(*pos)++; /* the single space */
	return true;
}

static bool v1_port(const char *text, uint16_t *port)
{
	unsigned long v = 0;
	size_t n = strlen(text);

	if (n == 0 || n > 5 || (n > 1 && text[0] == '0'))
		return false;
	for (size_t i = 0; i < n; i++) {
		if (text[i] < '0' || text[i] > '9')
			return false;
		v = v * 10 + (unsigned long)(text[i] - '0');
	}
	if (v > 65535)
		return false;
	*port = (uint16_t)v;
	return true;
}

static bool v1_addr(int family, const char *ip, const char *port,
		    struct sockaddr_storage *out)
{
	uint16_t p;

	memset(out, 0, sizeof(*out));
	if (!v1_port(port, &p))
		return false;
	if (family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)out;

		sin->sin_family = AF_INET;
		sin->sin_port = htons(p);
		return inet_pton(AF_INET, ip, &sin->sin_addr) == 1;
	}
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)out;

	sin6->sin6_family = AF_INET6;
	sin6->sin6_port = htons(p);
	return strchr(ip, ':') != NULL &&
	       inet_pton(AF_INET6, ip, &sin6->sin6_addr) == 1;
}

/* line[0..end) is the header without its CRLF. */
static enum proxy_status v1_line(const char *line, size_t end,
				 struct proxy_header *out, const char **why)
{
	char proto[8], src[64], dst[64], sport[8], dport[8];
	size_t pos = sizeof(V1_SIG) - 1;
	int family;

	out->version = 1;
	if (end - pos >= 7 && memcmp(line + pos, "UNKNOWN", 7) == 0 &&
	    (end - pos == 7 || line[pos + 7] == ' ')) {
		out->command = PROXY_CMD_LOCAL;
		return PROXY_DONE;
	}
	if (!v1_field(line, end, &pos, proto, sizeof(proto), false))
		return fail(why, "v1: no protocol");
	if (strcmp(proto, "TCP4") == 0)
		family = AF_INET;
	else if (strcmp(proto, "TCP6") == 0)
		family = AF_INET6;
	else
		return fail(why, "v1: protocol is not TCP4, TCP6 or UNKNOWN");
	if (!v1_field(line, end, &pos, src, sizeof(src), false) ||
	    !v1_field(line, end, &pos, dst, sizeof(dst), false) ||
	    !v1_field(line, end, &pos, sport, sizeof(sport), false) ||
	    !v1_field(line, end, &pos, dport, sizeof(dport), true))
		return fail(why, "v1: not five space-separated fields");
	if (!v1_addr(family, src, sport, &out->src) ||
	    !v1_addr(family, dst, dport, &out->dst))
		return fail(why, "v1: bad address or port");
	out->command = PROXY_CMD_PROXY;
	return PROXY_DONE;
}

static enum proxy_status parse_v1(const uint8_t *buf, size_t len,
				  struct proxy_header *out, size_t *consumed,
				  const char **why)
{
	size_t look = min_size(len, PROXY_V1_MAX);

	for (size_t i = 0; i < look; i++) {
		if (buf[i] == '\n')
			return fail(why, "v1: line feed without carriage return");
		if (buf[i] != '\r')
			continue;
		if (i + 1 == len)
			return PROXY_NEED_MORE;
		if (buf[i + 1] != '\n')
			return fail(why, "v1: carriage return without line feed");
		*consumed = i + 2;
		return v1_line((const char *)buf, i, out, why);
	}
	if (len >= PROXY_V1_MAX)
		return fail(why, "v1: no CRLF within 107 octets");
	return PROXY_NEED_MORE;
}

/* ---- version 2 ------------------------------------------------------ */

static void v2_inet(const uint8_t *a, struct proxy_header *out)
{
	struct sockaddr_in *src = (struct sockaddr_in *)&out->src;
	struct sockaddr_in *dst = (struct sockaddr_in *)&out->dst;

	src->sin_family = dst->sin_family = AF_INET;
	memcpy(&src->sin_addr, a, 4);
	memcpy(&dst->sin_addr, a + 4, 4);
	memcpy(&src->sin_port, a + 8, 2); /* both in network order */
	memcpy(&dst->sin_port, a + 10, 2);
}

static void v2_inet6(const uint8_t *a, struct proxy_header *out)
{
	struct sockaddr_in6 *src = (struct sockaddr_in6 *)&out->src;
	struct sockaddr_in6 *dst = (struct sockaddr_in6 *)&out->dst;

	src->sin6_family = dst->sin6_family = AF_INET6;
	memcpy(&src->sin6_addr, a, 16);
	memcpy(&dst->sin6_addr, a + 16, 16);
	memcpy(&src->sin6_port, a + 32, 2);
	memcpy(&dst->sin6_port, a + 34, 2);
}

/* The address block of a PROXY command: family and transport in fam. */
static enum proxy_status v2_addresses(uint8_t fam, const uint8_t *a,
				      size_t n, struct proxy_header *out,
				      const char **why)
{
	unsigned family = fam >> 4, transport = fam & 0x0f;

	if (family == 0) { /* AF_UNSPEC: the receiver uses the real ones */
		out->command = PROXY_CMD_LOCAL;
		return PROXY_DONE;
	}
	if (transport != 1)
		return fail(why, "v2: transport is not a stream");
	switch (family) {
	case 1:
		if (n < 12)
			return fail(why, "v2: IPv4 block too short");
		v2_inet(a, out);
		return PROXY_DONE;
	case 2:
		if (n < 36)
			return fail(why, "v2: IPv6 block too short");
		v2_inet6(a, out);
		return PROXY_DONE;
	case 3: /* AF_UNIX: no address a policy could use */
		out->command = PROXY_CMD_LOCAL;
		return PROXY_DONE;
	default:
		return fail(why, "v2: unknown address family");
	}
}

static enum proxy_status parse_v2(const uint8_t *buf, size_t len,
				  struct proxy_header *out, size_t *consumed,
				  const char **why)
{
	size_t body;

	if (len < 16)
		return PROXY_NEED_MORE;
	if (buf[12] >> 4 != 2)
		return fail(why, "v2: version is not 2");
	body = (size_t)buf[14] << 8 | buf[15];
	if (16 + body > PROXY_V2_MAX)
		return fail(why, "v2: header longer than 1040 octets");
	if (len < 16 + body)
		return PROXY_NEED_MORE;
	*consumed = 16 + body;
	out->version = 2;
	switch (buf[12] & 0x0f) {
	case 0:
		out->command = PROXY_CMD_LOCAL;
		return PROXY_DONE;
	case 1:
		out->command = PROXY_CMD_PROXY;
		return v2_addresses(buf[13], buf + 16, body, out, why);
	default:
		return fail(why, "v2: command is not LOCAL or PROXY");
	}
}

enum proxy_status proxy_parse(const uint8_t *buf, size_t len,
			      struct proxy_header *out, size_t *consumed,
			      const char **why)
{
	size_t n1 = min_size(len, sizeof(V1_SIG) - 1);
	size_t n2 = min_size(len, sizeof(V2_SIG));

	memset(out, 0, sizeof(*out));
	*consumed = 0;
	*why = "";
	if (len == 0)
		return PROXY_NEED_MORE;
	if (memcmp(buf, V1_SIG, n1) == 0)
		return n1 < sizeof(V1_SIG) - 1
			       ? PROXY_NEED_MORE
			       : parse_v1(buf, len, out, consumed, why);
	if (memcmp(buf, V2_SIG, n2) == 0)
		return n2 < sizeof(V2_SIG)
			       ? PROXY_NEED_MORE
			       : parse_v2(buf, len, out, consumed, why);
	return fail(why, "not a PROXY protocol header");
}
