/*
 * Unit tests for src/proto/proxy.c (PROXY protocol v1 and v2 headers).
 * Prints TAP and exits 1 if any assertion failed. Every input is copied
 * into a buffer of exactly its length, so ASan sees a read past it.
 */
#include "tap.h"
#include "proto/proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

static const uint8_t SIG[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
				0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};

static enum proxy_status parse(const void *in, size_t len,
			       struct proxy_header *h, size_t *used)
{
	uint8_t *copy = malloc(len ? len : 1);
	const char *why;
	enum proxy_status st;

	memcpy(copy, in, len);
	st = proxy_parse(copy, len, h, used, &why);
	free(copy);
	return st;
}

static enum proxy_status parse_str(const char *s, struct proxy_header *h,
				   size_t *used)
{
	return parse(s, strlen(s), h, used);
}

static const char *ip_of(const struct sockaddr_storage *ss, char *buf,
			 size_t len)
{
	const void *a = ss->ss_family == AF_INET
				? (const void *)&((const struct sockaddr_in *)ss)
					  ->sin_addr
				: (const void *)&((const struct sockaddr_in6 *)ss)
					  ->sin6_addr;
	return inet_ntop(ss->ss_family, a, buf, (socklen_t)len);
}

static unsigned port_of(const struct sockaddr_storage *ss)
{
	return ntohs(ss->ss_family == AF_INET
			     ? ((const struct sockaddr_in *)ss)->sin_port
			     : ((const struct sockaddr_in6 *)ss)->sin6_port);
}

static void test_v1(void)
{
	struct proxy_header h;
	size_t used;
	char ip[64];
	const char *tcp4 = "PROXY TCP4 192.0.2.7 198.51.100.1 40000 25\r\nEHLO";

	tap(parse_str(tcp4, &h, &used) == PROXY_DONE && h.version == 1 &&
		    h.command == PROXY_CMD_PROXY,
	    "v1 TCP4 is a whole header");
	tap(used == strlen(tcp4) - 4, "v1 consumes up to its CRLF only");
	tap(strcmp(ip_of(&h.src, ip, sizeof(ip)), "192.0.2.7") == 0 &&
		    port_of(&h.src) == 40000 && port_of(&h.dst) == 25,
	    "v1 source address and ports");
	tap(parse_str("PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n", &h,
		      &used) == PROXY_DONE &&
		    h.src.ss_family == AF_INET6 && port_of(&h.dst) == 65535 &&
		    strcmp(ip_of(&h.src, ip, sizeof(ip)), "2001:db8::1") == 0,
	    "v1 TCP6");
	tap(parse_str("PROXY UNKNOWN\r\n", &h, &used) == PROXY_DONE &&
		    h.command == PROXY_CMD_LOCAL && used == 15,
	    "v1 UNKNOWN keeps the connection's own addresses");
	tap(parse_str("PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", &h, &used) ==
		    PROXY_DONE,
	    "v1 UNKNOWN ignores the rest of its line");
}

static void test_v1_partial_and_bad(void)
{
	struct proxy_header h;
	size_t used;
	const char *whole = "PROXY TCP4 192.0.2.7 198.51.100.1 40000 25\r\n";
	static const char *bad[] = {
		"PROXY TCP4 192.0.2.7 198.51.100.1 40000 25\n",
		"PROXY TCP4 192.0.2.7 198.51.100.1 40000 25\rx",
		"PROXY TCP4  192.0.2.7 198.51.100.1 40000 25\r\n",
		"PROXY TCP4 192.0.2.7 198.51.100.1 40000 025\r\n",
		"PROXY TCP4 192.0.2.7 198.51.100.1 40000 65536\r\n",
		"PROXY TCP4 192.0.2.7 198.51.100.1 40000\r\n",
		"PROXY TCP4 192.0.2.7 198.51.100.1 40000 25 \r\n",
		"PROXY TCP4 2001:db8::1 198.51.100.1 40000 25\r\n",
		"PROXY TCP6 192.0.2.7 2001:db8::2 40000 25\r\n",
		"PROXY UDP4 192.0.2.7 198.51.100.1 40000 25\r\n",
		"PROXY TCP4 192.0.2.300 198.51.100.1 40000 25\r\n",
		"proxy TCP4 192.0.2.7 198.51.100.1 40000 25\r\n",
		"EHLO client.example\r\n",
		"\r\n\r\n\r",
	};
	bool prefixes = true;
	char longline[200];

	for (size_t n = 0; n < strlen(whole); n++)
		prefixes = prefixes && parse(whole, n, &h, &used) ==
						       PROXY_NEED_MORE;
	tap(prefixes, "every proper prefix of a v1 header wants more");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		tap(parse_str(bad[i], &h, &used) == PROXY_ERROR,
		    "v1 refused: %.40s", bad[i]);
	memset(longline, 'x', sizeof(longline));
	memcpy(longline, "PROXY UNKNOWN ", 14);
	tap(parse(longline, PROXY_V1_MAX, &h, &used) == PROXY_ERROR,
	    "no CRLF within 107 octets is an error");
	tap(parse(longline, PROXY_V1_MAX - 1, &h, &used) == PROXY_NEED_MORE,
	    "106 octets without CRLF may still become a header");
}

/* A v2 header: command, family byte, then body octets. */
static size_t v2(uint8_t *out, uint8_t cmd, uint8_t fam, const uint8_t *body,
		 size_t n)
{
	memcpy(out, SIG, 12);
	out[12] = (uint8_t)(0x20 | cmd);
	out[13] = fam;
	out[14] = (uint8_t)(n >> 8);
	out[15] = (uint8_t)n;
	memcpy(out + 16, body, n);
	return 16 + n;
}

static void test_v2(void)
{
	uint8_t buf[2000], body[1100];
	struct proxy_header h;
	size_t used, n;
	char ip[64];
	static const uint8_t inet[12] = {192, 0, 2, 7, 198, 51, 100, 1,
					 0x9c, 0x40, 0, 25};

	n = v2(buf, 1, 0x11, inet, sizeof(inet));
	memcpy(buf + n, "EHLO", 4);
	tap(parse(buf, n + 4, &h, &used) == PROXY_DONE && used == n &&
		    h.version == 2 && h.command == PROXY_CMD_PROXY &&
		    strcmp(ip_of(&h.src, ip, sizeof(ip)), "192.0.2.7") == 0 &&
		    port_of(&h.src) == 40000 && port_of(&h.dst) == 25,
	    "v2 PROXY TCP over IPv4");
	bool prefixes = true;
	for (size_t k = 0; k < n; k++)
		prefixes = prefixes &&
			   parse(buf, k, &h, &used) == PROXY_NEED_MORE;
	tap(prefixes, "every proper prefix of a v2 header wants more");

	memset(body, 0, sizeof(body));
	body[15] = 1;
	body[31] = 2;
	body[32] = 0x01;
	body[33] = 0x02;
	n = v2(buf, 1, 0x21, body, 36 + 20); /* with 20 octets of TLVs */
	tap(parse(buf, n, &h, &used) == PROXY_DONE && used == n &&
		    h.src.ss_family == AF_INET6 && port_of(&h.src) == 258 &&
		    strcmp(ip_of(&h.src, ip, sizeof(ip)), "::1") == 0,
	    "v2 PROXY TCP over IPv6, TLVs skipped");
	n = v2(buf, 0, 0x00, body, 0);
	tap(parse(buf, n, &h, &used) == PROXY_DONE &&
		    h.command == PROXY_CMD_LOCAL,
	    "v2 LOCAL (a health check)");
	n = v2(buf, 1, 0x00, body, 0);
	tap(parse(buf, n, &h, &used) == PROXY_DONE &&
		    h.command == PROXY_CMD_LOCAL,
	    "v2 PROXY with AF_UNSPEC keeps the real addresses");
	n = v2(buf, 1, 0x12, inet, sizeof(inet));
	tap(parse(buf, n, &h, &used) == PROXY_ERROR, "v2 over UDP refused");
	n = v2(buf, 1, 0x11, inet, 8);
	tap(parse(buf, n, &h, &used) == PROXY_ERROR,
	    "v2 IPv4 block too short refused");
	n = v2(buf, 2, 0x11, inet, sizeof(inet));
	tap(parse(buf, n, &h, &used) == PROXY_ERROR,
	    "v2 unknown command refused");
	n = v2(buf, 1, 0x11, inet, sizeof(inet));
	buf[12] = 0x11;
	tap(parse(buf, n, &h, &used) == PROXY_ERROR,
	    "v2 version 1 in the binary form refused");
	n = v2(buf, 1, 0x11, body, 1025);
	tap(parse(buf, 16, &h, &used) == PROXY_ERROR,
	    "v2 longer than 1040 octets refused from its preamble");
	n = v2(buf, 1, 0x11, body, 1024);
	tap(parse(buf, n, &h, &used) == PROXY_DONE && used == PROXY_V2_MAX,
	    "v2 of exactly 1040 octets is taken");
}

int main(void)
{
	test_v1();
	test_v1_partial_and_bad();
	test_v2();
	return tap_done();
}
