/*
 * libFuzzer target for the outbound client's dot-stuffer, src/proto/
 * smtp_out.c (`make fuzz`; `make check` replays spec/fuzz/corpus/
 * dot_stuff/). The input, after its first octet (a seed for how it is cut
 * into chunks, as pread hands the queue file over), is the stored message.
 *
 * Beyond the sanitizers (each output buffer is exactly the promised
 * 2 * len + 2 octets) it checks, and abort()s when one fails:
 *  - whole or in chunks, the output is the same;
 *  - the output is CRLF lines only, and the end of data is its last line;
 *  - the server's own DATA decoder (smtp_proto.c) reads it back, ending
 *    exactly at the end, as the message with every bare CR or LF made a
 *    CRLF and the last line ended: nothing added, nothing lost.
 */
#include "proto/smtp_out.h"
#include "proto/smtp_proto.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(cond)                                                          \
	do {                                                                   \
		if (!(cond))                                                   \
			abort();                                               \
	} while (0)

/* Stuffs in[0..len) in chunks of sizes from seed (0: whole); the result,
 * end of data included, is malloc'd. */
static char *stuff_all(const char *in, size_t len, unsigned seed,
                       size_t *out_len)
{
	char *all = malloc(2 * len + 2 + SMTP_STUFF_END_MAX);
	struct smtp_stuffer s;
	size_t pos = 0, o = 0;

	REQUIRE(all != NULL);
	smtp_stuff_start(&s);
	while (pos < len) {
		size_t n = seed == 0 ? len - pos : 1 + (pos * 7 + seed) % 13;
		if (n > len - pos)
			n = len - pos;
		char *out = malloc(2 * n + 2);
		REQUIRE(out != NULL);
		size_t w = smtp_stuff(&s, in + pos, n, out);
		REQUIRE(w <= 2 * n + 2);
		memcpy(all + o, out, w);
		o += w;
		free(out);
		pos += n;
	}
	char tail[SMTP_STUFF_END_MAX];
	size_t t = smtp_stuff_end(&s, tail);
	REQUIRE(t <= SMTP_STUFF_END_MAX);
	memcpy(all + o, tail, t);
	*out_len = o + t;
	return all;
}

/* Every bare CR or LF and CRLF a CRLF; a last line ended. */
static char *normalize(const char *in, size_t len, size_t *out_len)
{
	char *out = malloc(2 * len + 2);
	size_t o = 0;

	REQUIRE(out != NULL);
	for (size_t i = 0; i < len; i++) {
		if (in[i] == '\r' || in[i] == '\n') {
			if (in[i] == '\r' && i + 1 < len && in[i + 1] == '\n')
				i++;
			out[o++] = '\r';
			out[o++] = '\n';
		} else {
			out[o++] = in[i];
		}
	}
	if (o > 0 && out[o - 1] != '\n') {
		out[o++] = '\r';
		out[o++] = '\n';
	}
	*out_len = o;
	return out;
}

static void check_lines(const char *s, size_t len)
{
	REQUIRE(len >= 3 && memcmp(s + len - 3, ".\r\n", 3) == 0);
	REQUIRE(len == 3 || s[len - 4] == '\n');
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '\r')
			REQUIRE(i + 1 < len && s[i + 1] == '\n');
		if (s[i] == '\n')
			REQUIRE(i > 0 && s[i - 1] == '\r');
	}
}

static void decode_back(const char *s, size_t len, const char *want,
                        size_t want_len)
{
	struct smtp_data_decoder d;
	char *out = malloc(len + 2);
	size_t w = 0, used = 0;

	REQUIRE(out != NULL);
	smtp_data_init(&d);
	REQUIRE(smtp_data_feed(&d, s, len, out, &w, &used) == SMTP_DATA_END);
	REQUIRE(used == len);
	REQUIRE(!d.bare_cr && !d.bare_lf);
	REQUIRE(w == want_len && memcmp(out, want, w) == 0);
	free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	unsigned seed = size > 0 ? data[0] : 0;
	const char *in = (const char *)data + (size > 0);
	size_t len = size - (size > 0), whole_len, split_len, norm_len;
	char *whole = stuff_all(in, len, 0, &whole_len);
	char *split = stuff_all(in, len, seed | 1, &split_len);
	char *norm = normalize(in, len, &norm_len);

	REQUIRE(whole_len == split_len && memcmp(whole, split, whole_len) == 0);
	check_lines(whole, whole_len);
	decode_back(whole, whole_len, norm, norm_len);
	free(norm);
	free(split);
	free(whole);
	return 0;
}
