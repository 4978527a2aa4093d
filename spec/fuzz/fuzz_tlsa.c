/*
 * libFuzzer target for src/proto/tlsa.c, what net/dns.c reads from TLSA
 * answers and how records are named (`make fuzz`; `make check` replays
 * spec/fuzz/corpus/tlsa/). The input is taken as a TLSA rdata and as a
 * host name; each buffer is exactly as large as the parser is told, so
 * ASan sees a read past it. Beyond the sanitizers it checks, and
 * abort()s when one fails:
 *  - a parsed rdata gives back its three numbers and exactly its data;
 *    a refused one is shorter than 4 octets or longer than the limit;
 *  - a usable record has usage 2 or 3, selector 0 or 1, and the data
 *    length its matching type calls for;
 *  - a description is NUL-terminated within its buffer and starts with
 *    "TLSA U S M";
 *  - a query name is "_PORT._tcp." then the host, and a valid name.
 */
#include "proto/dns_wire.h"
#include "proto/tlsa.h"

#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(cond)                                                          \
	do {                                                                   \
		if (!(cond))                                                   \
			abort();                                               \
	} while (0)

static struct tlsa_rr rr;

static void fuzz_rdata(const uint8_t *data, size_t size)
{
	char text[96], head[32];
	size_t small = size > 0 ? data[0] % sizeof(text) : 0;
	enum tlsa_parse r = tlsa_parse(data, size, &rr);

	if (r != TLSA_PARSE_OK) {
		REQUIRE(r == TLSA_PARSE_MALFORMED ? size < 4
		                                  : size > 3 + TLSA_DATA_MAX);
		return;
	}
	REQUIRE(size >= 4 && rr.usage == data[0] && rr.selector == data[1] &&
	        rr.mtype == data[2] && rr.len == size - 3 &&
	        memcmp(rr.data, data + 3, rr.len) == 0);
	if (tlsa_usable(&rr))
		REQUIRE((rr.usage == 2 || rr.usage == 3) && rr.selector <= 1 &&
		        (rr.mtype == 0 || (rr.mtype == 1 && rr.len == 32) ||
		         (rr.mtype == 2 && rr.len == 64)));
	memset(text, 'x', sizeof(text));
	tlsa_describe(&rr, text, small);
	REQUIRE(small == 0 || memchr(text, '\0', small) != NULL);
	tlsa_describe(&rr, text, sizeof(text));
	snprintf(head, sizeof(head), "TLSA %u %u %u ", rr.usage, rr.selector,
	         rr.mtype);
	REQUIRE(strncmp(text, head, strlen(head)) == 0);
}

static void fuzz_qname(const uint8_t *data, size_t size)
{
	char *host = malloc(size + 1);
	unsigned port = size > 0 ? data[0] * 300u : 0;
	char out[300], prefix[32], back[300];

	REQUIRE(host != NULL);
	memcpy(host, data, size);
	host[size] = '\0';
	if (tlsa_qname(host, port, out, sizeof(out))) {
		int n = snprintf(prefix, sizeof(prefix), "_%u._tcp.", port);
		size_t hlen = strlen(host);

		if (hlen > 0 && host[hlen - 1] == '.')
			hlen--;
		REQUIRE(port > 0 && port <= 65535);
		REQUIRE(strncmp(out, prefix, (size_t)n) == 0 &&
		        strlen(out) == (size_t)n + hlen &&
		        strncmp(out + n, host, hlen) == 0);
		REQUIRE(dns_name_copy(out, back, sizeof(back)) &&
		        strcmp(back, out) == 0);
	}
	free(host);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_rdata(data, size);
	fuzz_qname(data, size);
	return 0;
}
