/*
 * libFuzzer target for src/proto/proxy.c, the PROXY protocol header a
 * load balancer sends before SMTP starts (`make fuzz`; `make check`
 * replays spec/fuzz/corpus/proxy/). The input is what a connection from
 * proxy_networks sent; the buffer is exactly as large as the parser is
 * told, so ASan sees a read past it. Beyond the sanitizers it checks, and
 * abort()s when one fails:
 *  - a whole header never claims more octets than it was given, nor more
 *    than PROXY_MAX; "want more" only below PROXY_MAX;
 *  - a whole header is whole in its first `consumed` octets alone (what
 *    follows it is never part of it), with the same addresses;
 *  - every shorter prefix of a whole header wants more (the reader may
 *    stop at any octet and resume).
 */
#include "proto/proxy.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(cond)                                                          \
	do {                                                                   \
		if (!(cond))                                                   \
			abort();                                               \
	} while (0)

static enum proxy_status parse_copy(const uint8_t *data, size_t n,
				    struct proxy_header *h, size_t *used)
{
	uint8_t *copy = malloc(n ? n : 1);
	const char *why;
	enum proxy_status st;

	REQUIRE(copy != NULL);
	memcpy(copy, data, n);
	st = proxy_parse(copy, n, h, used, &why);
	REQUIRE(why != NULL);
	free(copy);
	return st;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proxy_header h, again;
	size_t used = 0, used2 = 0;
	enum proxy_status st = parse_copy(data, size, &h, &used);

	if (st == PROXY_NEED_MORE)
		REQUIRE(size < PROXY_MAX);
	if (st != PROXY_DONE)
		return 0;
	REQUIRE(used > 0 && used <= size && used <= PROXY_MAX);
	REQUIRE(parse_copy(data, used, &again, &used2) == PROXY_DONE);
	REQUIRE(used2 == used && again.version == h.version &&
		again.command == h.command &&
		memcmp(&again.src, &h.src, sizeof(h.src)) == 0 &&
		memcmp(&again.dst, &h.dst, sizeof(h.dst)) == 0);
	for (size_t k = 0; k < used; k++)
		REQUIRE(parse_copy(data, k, &again, &used2) ==
			PROXY_NEED_MORE);
	return 0;
}
