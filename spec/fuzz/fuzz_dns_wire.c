/*
 * libFuzzer target for src/proto/dns_wire.c, what net/dns.c reads from
 * DNS answers (`make fuzz`; `make check` replays spec/fuzz/corpus/dns_wire/).
 * The input is taken as a wire-format name, as an MX rdata, and as a name
 * to ask about; each buffer is exactly as large as the parser is told, so
 * ASan sees a read or write past it. Beyond the sanitizers it checks, and
 * abort()s when one fails:
 *  - an accepted wire name encodes back to exactly the input, is at most
 *    DNS_NAME_MAX octets, and is a name dns_name_copy accepts unchanged;
 *  - a smaller output buffer gives the same name or a refusal, never a
 *    different name;
 *  - an MX rdata is read as its preference and the wire name after it;
 *  - a name dns_name_copy accepts goes to wire format and back unchanged.
 */
#include "proto/dns_wire.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(cond)                                                          \
	do {                                                                   \
		if (!(cond))                                                   \
			abort();                                               \
	} while (0)

enum { BIG = 300 };

/* "a.b" → 1 'a' 1 'b' 0; "" → 0. Returns the length. */
static size_t to_wire(const char *name, unsigned char *out)
{
	size_t o = 0, n = strlen(name);

	for (size_t i = 0; i < n;) {
		size_t label = strcspn(name + i, ".");
		out[o++] = (unsigned char)label;
		memcpy(out + o, name + i, label);
		o += label;
		i += label + 1;
	}
	out[o++] = 0;
	return o;
}

static void fuzz_wire(const uint8_t *data, size_t size)
{
	char *big = malloc(BIG);
	size_t small_len = size > 0 ? 1 + data[0] % 64 : 1;
	char *small = malloc(small_len);
	unsigned char wire[BIG + 2];

	REQUIRE(big != NULL && small != NULL);
	bool ok = dns_wire_name(data, size, big, BIG);
	bool ok_small = dns_wire_name(data, size, small, small_len);
	REQUIRE(!ok_small || (ok && strcmp(small, big) == 0));
	if (ok) {
		size_t n = strlen(big);
		REQUIRE(n <= DNS_NAME_MAX);
		REQUIRE(ok_small == (n < small_len));
		REQUIRE(to_wire(big, wire) == size &&
		        memcmp(wire, data, size) == 0);
		if (n > 0) {
			char copy[BIG];
			REQUIRE(dns_name_copy(big, copy, sizeof(copy)) &&
			        strcmp(copy, big) == 0);
		}
	}
	free(small);
	free(big);
}

static void fuzz_mx(const uint8_t *data, size_t size)
{
	char name[256], name2[256];
	unsigned pref = 70000;
	enum dns_mx_rdata r =
	    dns_mx_parse(data, size, &pref, name, sizeof(name));

	if (r == DNS_MX_MALFORMED) {
		REQUIRE(size < 3 || !dns_wire_name(data + 2, size - 2, name2,
		                                   sizeof(name2)));
		return;
	}
	REQUIRE(size >= 3 && pref == ((unsigned)data[0] << 8 | data[1]));
	REQUIRE(dns_wire_name(data + 2, size - 2, name2, sizeof(name2)) &&
	        strcmp(name, name2) == 0);
	REQUIRE((r == DNS_MX_NULL) == (name[0] == '\0'));
}

static void fuzz_copy(const uint8_t *data, size_t size)
{
	char *in = malloc(size + 1);
	size_t out_len = size > 0 ? 1 + data[size - 1] % 300 : 1;
	char *out = malloc(out_len);
	unsigned char wire[BIG + 2];
	char back[BIG];

	REQUIRE(in != NULL && out != NULL);
	memcpy(in, data, size);
	in[size] = '\0';
	if (dns_name_copy(in, out, out_len)) {
		size_t n = strlen(out);
		REQUIRE(n > 0 && n <= DNS_NAME_MAX && n < out_len);
		REQUIRE(strncmp(in, out, n) == 0 &&
		        (in[n] == '\0' || (in[n] == '.' && in[n + 1] == '\0')));
		size_t w = to_wire(out, wire);
		REQUIRE(dns_wire_name(wire, w, back, sizeof(back)) &&
		        strcmp(back, out) == 0);
	}
	free(out);
	free(in);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_wire(data, size);
	fuzz_mx(data, size);
	fuzz_copy(data, size);
	return 0;
}
