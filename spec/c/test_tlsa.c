/*
 * Unit tests for src/proto/tlsa.c (TLSA query names and rdata). Prints
 * TAP and exits 1 if any assertion failed. Every rdata is copied into a
 * buffer of exactly its length, for ASan.
 */
#include "tap.h"
#include "proto/tlsa.h"

#include <stdlib.h>
#include <string.h>

static enum tlsa_parse parse(const unsigned char *p, size_t len,
                             struct tlsa_rr *rr)
{
	unsigned char *copy = malloc(len ? len : 1);
	enum tlsa_parse r;

	memcpy(copy, p, len);
	r = tlsa_parse(copy, len, rr);
	free(copy);
	return r;
}

static struct tlsa_rr rr_of(unsigned u, unsigned s, unsigned m, size_t len)
{
	struct tlsa_rr rr = {.usage = (uint8_t)u,
	                     .selector = (uint8_t)s,
	                     .mtype = (uint8_t)m,
	                     .len = len};

	for (size_t i = 0; i < len && i < TLSA_DATA_MAX; i++)
		rr.data[i] = (uint8_t)(0xa0 + i);
	return rr;
}

static void test_parse(void)
{
	static const unsigned char rd[] = {3, 1, 1, 0xde, 0xad, 0xbe, 0xef};
	static struct tlsa_rr rr;
	static unsigned char big[3 + TLSA_DATA_MAX + 1];

	check(parse(rd, sizeof(rd), &rr) == TLSA_PARSE_OK && rr.usage == 3 &&
	          rr.selector == 1 && rr.mtype == 1 && rr.len == 4 &&
	          memcmp(rr.data, rd + 3, 4) == 0,
	      "3 1 1 deadbeef: usage, selector, matching type, 4 octets");
	check(parse(rd, 4, &rr) == TLSA_PARSE_OK && rr.len == 1,
	      "one octet of data is a record");
	check(parse(rd, 3, &rr) == TLSA_PARSE_MALFORMED,
	      "no data at all is malformed");
	check(parse(rd, 0, &rr) == TLSA_PARSE_MALFORMED, "empty is malformed");
	memset(big, 0x55, sizeof(big));
	check(parse(big, 3 + TLSA_DATA_MAX, &rr) == TLSA_PARSE_OK &&
	          rr.len == TLSA_DATA_MAX,
	      "TLSA_DATA_MAX octets of data fit");
	check(parse(big, sizeof(big), &rr) == TLSA_PARSE_TOO_LONG,
	      "one octet more is refused, not truncated");
}

static void test_usable(void)
{
	static const struct {
		unsigned u, s, m;
		size_t len;
		bool usable;
		const char *what;
	} cases[] = {
		{3, 1, 1, 32, true, "3 1 1 with 32 octets"},
		{2, 0, 2, 64, true, "2 0 2 with 64 octets"},
		{2, 0, 0, 700, true, "2 0 0 with a whole certificate"},
		{3, 1, 0, 91, true, "3 1 0 with a whole key"},
		{0, 1, 1, 32, false, "PKIX-TA(0), for SMTP"},
		{1, 1, 1, 32, false, "PKIX-EE(1), for SMTP"},
		{4, 1, 1, 32, false, "usage 4 (unknown)"},
		{3, 2, 1, 32, false, "selector 2 (unknown)"},
		{3, 1, 3, 32, false, "matching type 3 (unknown)"},
		{3, 1, 1, 31, false, "SHA-256 data of 31 octets"},
		{3, 1, 1, 33, false, "SHA-256 data of 33 octets"},
		{3, 1, 2, 32, false, "SHA-512 data of 32 octets"},
		{3, 1, 0, 0, false, "matching type 0 with no data"},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct tlsa_rr r = rr_of(cases[i].u, cases[i].s, cases[i].m,
		                         cases[i].len);

		check(tlsa_usable(&r) == cases[i].usable, "%s: %s",
		      cases[i].what, cases[i].usable ? "usable" : "not usable");
	}
}

static void test_describe(void)
{
	char out[96];
	struct tlsa_rr r = rr_of(3, 1, 1, 32);

	tlsa_describe(&r, out, sizeof(out));
	check(strcmp(out, "TLSA 3 1 1 a0a1a2a3a4a5a6a7...") == 0,
	      "describe: numbers and the first 8 octets: %s", out);
	r = rr_of(2, 0, 0, 3);
	tlsa_describe(&r, out, sizeof(out));
	check(strcmp(out, "TLSA 2 0 0 a0a1a2") == 0,
	      "describe: short data in full: %s", out);
	tlsa_describe(&r, out, 8);
	check(strcmp(out, "TLSA 2 ") == 0, "describe: truncated to out_len");
}

static void test_qname(void)
{
	char out[300];
	char long_host[260];

	check(tlsa_qname("mx.example.test", 25, out, sizeof(out)) &&
	          strcmp(out, "_25._tcp.mx.example.test") == 0,
	      "qname: _25._tcp.mx.example.test");
	check(tlsa_qname("mx.example.test.", 2525, out, sizeof(out)) &&
	          strcmp(out, "_2525._tcp.mx.example.test") == 0,
	      "qname: trailing dot dropped, port 2525");
	check(!tlsa_qname("mx.example.test", 0, out, sizeof(out)),
	      "qname: port 0 refused");
	check(!tlsa_qname("mx.example.test", 65536, out, sizeof(out)),
	      "qname: port 65536 refused");
	check(!tlsa_qname("mx..example", 25, out, sizeof(out)),
	      "qname: an empty label refused");
	check(!tlsa_qname("127.0.0.1]", 25, out, sizeof(out)),
	      "qname: not a host name refused");
	check(!tlsa_qname("mx.example.test", 25, out, 10),
	      "qname: does not fit out");
	memset(long_host, 'a', sizeof(long_host));
	for (size_t i = 63; i < 250; i += 64)
		long_host[i] = '.';
	long_host[250] = '\0';
	check(!tlsa_qname(long_host, 25, out, sizeof(out)),
	      "qname: a 250-octet host makes a name over 253 octets");
}

int main(void)
{
	test_parse();
	test_usable();
	test_describe();
	test_qname();
	return tap_done();
}
