/*
 * Unit tests for src/proto/dns_wire.c (names and MX rdata from DNS
 * answers). Prints TAP and exits 1 if any assertion failed. Wire names
 * are built here from their labels; buffers are exact, for ASan.
 */
#include "tap.h"
#include "proto/dns_wire.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>



/* Labels of the given lengths, of 'a'..., then the root: into out. */
static size_t labels(const size_t *lens, size_t n, unsigned char *out)
{
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		out[o++] = (unsigned char)lens[i];
		memset(out + o, 'a' + (int)i, lens[i]);
		o += lens[i];
	}
	out[o++] = 0;
	return o;
}

static bool wire_ok(const unsigned char *w, size_t len, char *out,
                    size_t out_len)
{
	unsigned char *copy = malloc(len ? len : 1);
	bool ok;

	memcpy(copy, w, len);
	ok = dns_wire_name(copy, len, out, out_len);
	free(copy);
	return ok;
}

static void test_wire_names(void)
{
	unsigned char w[300];
	char out[256];
	size_t n;

	n = labels((size_t[]){3, 7, 4}, 3, w);
	check(wire_ok(w, n, out, sizeof(out)) &&
	          strcmp(out, "aaa.bbbbbbb.cccc") == 0,
	      "a name is read as dotted labels (%s)", out);
	check(wire_ok((const unsigned char *)"", 1, out, sizeof(out)) &&
	          out[0] == '\0',
	      "the root name is \"\"");
	n = labels((size_t[]){63, 63, 63, 61}, 4, w);
	check(wire_ok(w, n, out, sizeof(out)) && strlen(out) == 253,
	      "a name of 253 octets is read");
	n = labels((size_t[]){63, 63, 63, 62}, 4, w);
	check(!wire_ok(w, n, out, sizeof(out)),
	      "one of 254 octets is refused (as dns_name_copy refuses it)");
	check(!wire_ok(w, 2, out, sizeof(out)),
	      "a label cut by the end of the rdata is refused");
	memcpy(w,
	       "\x03"
	       "abc"
	       "\xc0\x0c",
	       6);
	check(!wire_ok(w, 6, out, sizeof(out)),
	      "a compression pointer is refused");
	n = labels((size_t[]){3}, 1, w);
	memcpy(w + n, "junk", 4);
	check(!wire_ok(w, n + 4, out, sizeof(out)),
	      "octets after the root label are refused");
	memcpy(w,
	       "\x03"
	       "a.b"
	       "\x00",
	       5);
	check(!wire_ok(w, 5, out, sizeof(out)),
	      "a dot inside a label is refused");
	n = labels((size_t[]){5, 4}, 2, w);
	check(!wire_ok(w, n, out, 10) && wire_ok(w, n, out, 11),
	      "the output buffer bounds the name, NUL included");
}

static void test_mx(void)
{
	unsigned char w[300] = {0x01, 0x02};
	char name[256];
	unsigned pref = 0;
	size_t n = 2 + labels((size_t[]){2, 7, 4}, 3, w + 2);

	check(dns_mx_parse(w, n, &pref, name, sizeof(name)) == DNS_MX_OK &&
	          pref == 258 && strcmp(name, "aa.bbbbbbb.cccc") == 0,
	      "an MX rdata gives preference 258 and its host (%s)", name);
	check(dns_mx_parse((const unsigned char *)"\0\0\0", 3, &pref, name,
	                   sizeof(name)) == DNS_MX_NULL,
	      "\"0 .\" is the null MX");
	memcpy(w + 2,
	       "\x09"
	       "192.0.2.1"
	       "\x00",
	       11);
	check(dns_mx_parse(w, 13, &pref, name, sizeof(name)) ==
	          DNS_MX_MALFORMED,
	      "an exchange with dots inside a label is malformed");
	memcpy(w + 2,
	       "\x03"
	       "192"
	       "\x01"
	       "0"
	       "\x01"
	       "2"
	       "\x01"
	       "1"
	       "\x00",
	       11);
	check(dns_mx_parse(w, 13, &pref, name, sizeof(name)) == DNS_MX_ADDRESS,
	      "an exchange that reads as an IPv4 address is refused");
	check(dns_mx_parse(w, 2, &pref, name, sizeof(name)) == DNS_MX_MALFORMED,
	      "an rdata without a name is malformed");
}

static void test_copy(void)
{
	char out[256], big[300];

	check(dns_name_copy("Mx-1.Example.test.", out, sizeof(out)) &&
	          strcmp(out, "Mx-1.Example.test") == 0,
	      "a name to ask about loses one trailing dot");
	check(!dns_name_copy("a..b", out, sizeof(out)) &&
	          !dns_name_copy(".", out, sizeof(out)) &&
	          !dns_name_copy("a b", out, sizeof(out)) &&
	          !dns_name_copy("", out, sizeof(out)),
	      "empty labels, spaces and the root are refused");
	memset(big, 'a', 254);
	big[254] = '\0';
	check(!dns_name_copy(big, out, sizeof(out)),
	      "a name of 254 octets is refused");
}

int main(void)
{
	test_wire_names();
	test_mx();
	test_copy();
	return tap_done();
}
