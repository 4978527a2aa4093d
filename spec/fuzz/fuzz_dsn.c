/*
 * libFuzzer target for src/proto/dsn.c (`make fuzz`; `make check` replays
 * spec/fuzz/corpus/dsn/). dsn_build formats rather than parses, but all it
 * is given may come from a hostile peer: the remote's reply, addresses,
 * the original header section. The input is cut into those fields:
 *
 *   octet 0: recipients (1 + bits 0-1), bit 2: every recipient delayed,
 *            bit 3: times from octets 1-16 as they are (else near 2023),
 *            bit 4: headers NULL (with length 0)
 *   octets 1-16: arrival and now, 8 octets each
 *   then NUL-separated: hostname, qid, sender, and per recipient address,
 *   status, remote MTA and diagnostic (empty: NULL for the last two);
 *   whatever is left is the header section, in a buffer of exactly its
 *   length (no NUL after it).
 *
 * Beyond the sanitizers it checks the promises of dsn.h and dsn.c, and
 * abort()s when one fails: CRLF lines only, none over 998 octets, no NUL,
 * a boundary that occurs only as the four delimiter lines, 8-bit octets
 * only below a "Content-Transfer-Encoding: 8bit", none in the top header.
 */
#include "proto/dsn.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(cond)                                                          \
	do {                                                                   \
		if (!(cond))                                                   \
			abort();                                               \
	} while (0)

enum { MAX_RCPTS = 4, MAX_FIELDS = 3 + 4 * MAX_RCPTS };

struct reader {
	const uint8_t *p;
	size_t left;
};

/* The next NUL-terminated field, or "" when the input is used up. */
static const char *next_field(struct reader *r)
{
	const uint8_t *nul = memchr(r->p, '\0', r->left);
	const char *s = (const char *)r->p;

	if (nul == NULL)
		return "";
	r->left -= (size_t)(nul - r->p) + 1;
	r->p = nul + 1;
	return s;
}

static time_t take_time(struct reader *r, bool raw, time_t base)
{
	uint64_t v = 0;

	for (size_t i = 0; i < 8; i++) {
		v = v << 8 | (r->left > 0 ? *r->p : 0);
		if (r->left > 0) {
			r->p++;
			r->left--;
		}
	}
	return raw ? (time_t)v : base + (time_t)(v % 400000000u);
}

static const char *or_null(const char *s)
{
	return s[0] != '\0' ? s : NULL;
}

static void check_lines(const char *m, size_t len)
{
	size_t col = 0;

	REQUIRE(len >= 2 && m[len - 2] == '\r' && m[len - 1] == '\n');
	REQUIRE(memchr(m, '\0', len) == NULL);
	for (size_t i = 0; i < len; i++) {
		if (m[i] == '\r') {
			REQUIRE(i + 1 < len && m[i + 1] == '\n');
			col = 0;
			i++;
			continue;
		}
		REQUIRE(m[i] != '\n');
		REQUIRE(++col <= 998);
	}
}

/* A line of m from `at` is exactly s (and its CRLF). */
static bool line_is(const char *m, size_t len, size_t at, const char *s,
                    size_t n)
{
	return len - at >= n + 2 && memcmp(m + at, s, n) == 0 &&
	       m[at + n] == '\r' && m[at + n + 1] == '\n';
}

static void check_mime(const char *m, size_t len)
{
	const char *end_top = memmem(m, len, "\r\n\r\n", 4);
	static const char ct[] = "\r\nContent-Type: multipart/report;";
	const char *b = memmem(m, len, ct, sizeof(ct) - 1);
	char delim[128];

	/* Only dsn.c can start a line of the top header, so this is its
	 * Content-Type, folded or not. */
	REQUIRE(end_top != NULL && b != NULL && b < end_top);
	b = memmem(b, (size_t)(end_top - b), "boundary=\"", 10);
	REQUIRE(b != NULL);
	b += 10;
	const char *q = memchr(b, '"', (size_t)(end_top - b));
	REQUIRE(q != NULL && q - b > 0 && q - b <= 70);
	size_t n = (size_t)(q - b) + 2;
	delim[0] = delim[1] = '-';
	memcpy(delim + 2, b, n - 2);
	delim[n] = delim[n + 1] = '-';
	/* In the body, every occurrence of the boundary is a delimiter line
	 * (the top header may show it in a hostile hostname: no matter). */
	size_t parts = 0, closes = 0;
	for (const char *at = end_top; (at = memmem(at, len - (size_t)(at - m),
	                                            delim + 2, n - 2)) != NULL;
	     at++) {
		size_t off = (size_t)(at - m);
		REQUIRE(off >= 4 && m[off - 4] == '\r' && m[off - 3] == '\n');
		if (line_is(m, len, off - 2, delim, n))
			parts++;
		else if (line_is(m, len, off - 2, delim, n + 2) &&
		         off - 2 + n + 4 == len)
			closes++;
		else
			abort();
	}
	REQUIRE(parts == 3 && closes == 1);
	/* The top header is US-ASCII; 8-bit text below is announced. */
	bool eight = false;
	for (size_t i = 0; i < len; i++) {
		if ((unsigned char)m[i] >= 0x80) {
			REQUIRE(m + i > end_top);
			eight = true;
		}
	}
	if (eight)
		REQUIRE(memmem(m, (size_t)(end_top - m) + 2,
		               "\r\nContent-Transfer-Encoding: 8bit\r\n",
		               35) != NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct reader r = {data, size};
	struct dsn_rcpt rcpts[MAX_RCPTS];
	struct dsn_input in = {0};
	uint8_t flags = 0;

	if (size > 0) {
		flags = data[0];
		r.p++;
		r.left--;
	}
	in.n_rcpts = 1 + (flags & 3);
	in.arrival = take_time(&r, flags & 8, 1700000000);
	in.now = take_time(&r, flags & 8, in.arrival);
	in.hostname = next_field(&r);
	in.qid = next_field(&r);
	in.sender = next_field(&r);
	for (size_t i = 0; i < in.n_rcpts; i++) {
		rcpts[i].address = next_field(&r);
		rcpts[i].action = flags & 4 ? DSN_DELAYED : DSN_FAILED;
		rcpts[i].status = next_field(&r);
		rcpts[i].remote_mta = or_null(next_field(&r));
		rcpts[i].diagnostic = or_null(next_field(&r));
	}
	in.rcpts = rcpts;
	char *headers = malloc(r.left ? r.left : 1);
	REQUIRE(headers != NULL);
	memcpy(headers, r.p, r.left);
	in.headers = flags & 16 ? NULL : headers;
	in.headers_len = flags & 16 ? 0 : r.left;

	size_t len = 1;
	char *m = dsn_build(&in, &len);
	if (m == NULL) {
		REQUIRE(len == 0);
	} else {
		check_lines(m, len);
		check_mime(m, len);
		free(m);
	}
	free(headers);
	return 0;
}
