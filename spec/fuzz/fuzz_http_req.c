/*
 * libFuzzer target for src/proto/http_req.c, the metrics endpoint's
 * request reader (`make fuzz`; `make check` replays
 * spec/fuzz/corpus/http_req/). The input is one request as it arrives;
 * the buffer is exactly as large as the parser is told, so ASan sees a
 * read past it. Beyond the sanitizers it checks, and abort()s when one
 * fails:
 *  - a verdict, once given for a prefix, is the verdict for every longer
 *    prefix (more input never changes an answer already sent);
 *  - HTTP_HEAD_MAX octets or more never leave the parser waiting;
 *  - 200 only for a head whose request line, after empty lines, starts
 *    "GET /metrics" and that has an empty line within the bound;
 *  - every final verdict has a status line (200, 400, 404, 405, 431).
 */
#include "proto/http_req.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(cond)                                                          \
	do {                                                                   \
		if (!(cond))                                                   \
			abort();                                               \
	} while (0)

static enum http_verdict at(const uint8_t *data, size_t n)
{
	char *copy = malloc(n ? n : 1);
	enum http_verdict v;

	REQUIRE(copy != NULL);
	memcpy(copy, data, n);
	v = http_parse_request(copy, n);
	free(copy);
	return v;
}

static void check_ok(const uint8_t *data, size_t size)
{
	size_t i = 0;

	while (i < size && (data[i] == '\r' || data[i] == '\n'))
		i++;
	REQUIRE(size - i >= 12 && memcmp(data + i, "GET /metrics", 12) == 0);
	REQUIRE(memmem(data, size < HTTP_HEAD_MAX ? size : HTTP_HEAD_MAX,
		       "\n\n", 2) != NULL ||
		memmem(data, size < HTTP_HEAD_MAX ? size : HTTP_HEAD_MAX,
		       "\n\r\n", 3) != NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	enum http_verdict whole = at(data, size), first = HTTP_INCOMPLETE;
	size_t step = size / 256 + 1;
	const char *reason;

	for (size_t n = 0; n < size && first == HTTP_INCOMPLETE; n += step)
		first = at(data, n);
	REQUIRE(first == HTTP_INCOMPLETE || first == whole);
	REQUIRE(size < HTTP_HEAD_MAX || whole != HTTP_INCOMPLETE);
	if (whole == HTTP_METRICS)
		check_ok(data, size);
	if (whole != HTTP_INCOMPLETE) {
		int code = http_status(whole, &reason);

		REQUIRE(reason != NULL && (code == 200 || code == 400 ||
					   code == 404 || code == 405 ||
					   code == 431));
	}
	return 0;
}
