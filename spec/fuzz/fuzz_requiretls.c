/*
 * libFuzzer target for src/proto/requiretls.c (`make fuzz`; `make check`
 * replays spec/fuzz/corpus/requiretls/). The input is a header section,
 * in a buffer of exactly its length (no NUL after it), as delivery reads
 * one from a queue file. Beyond the sanitizers it checks, and abort()s when
 * they disagree, requiretls_header_no against a slow reference: unfold
 * every field (a line starting with a space or tab continues the one
 * before), stop at the first empty line, and look for a field named
 * TLS-Required (any case) whose value, spaces trimmed, is "No" (any case).
 * The first octet also picks the facts of a next hop for the decision
 * functions, which must agree with each other.
 */
#include "proto/requiretls.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(cond)                                                          \
	do {                                                                   \
		if (!(cond))                                                   \
			abort();                                               \
	} while (0)

static bool space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static bool field_is_no(const char *f, size_t n)
{
	static const char NAME[] = "TLS-Required:";
	size_t k = sizeof(NAME) - 1;

	if (n < k || strncasecmp(f, NAME, k) != 0)
		return false;
	f += k;
	n -= k;
	while (n > 0 && space(*f)) {
		f++;
		n--;
	}
	while (n > 0 && space(f[n - 1]))
		n--;
	return n == 2 && strncasecmp(f, "no", 2) == 0;
}

static bool reference(const char *h, size_t len)
{
	size_t start = 0;

	while (start < len) {
		size_t end = start;

		/* the empty line ends the header section */
		if (h[start] == '\n' ||
		    (h[start] == '\r' && start + 1 < len && h[start + 1] == '\n'))
			return false;
		for (;;) {
			const char *lf = memchr(h + end, '\n', len - end);

			end = lf ? (size_t)(lf - h) + 1 : len;
			if (end >= len || (h[end] != ' ' && h[end] != '\t'))
				break;
		}
		if (field_is_no(h + start, end - start))
			return true;
		start = end;
	}
	return false;
}

static void decisions(uint8_t bits)
{
	struct requiretls_hop h = {
	    .tls = bits & 1, .cert_verified = bits & 2, .dane = bits & 4,
	    .mx_lookup = bits & 8, .mx_dnssec = bits & 16,
	    .mx_sts = bits & 32};
	const char *why = NULL;
	char text[200];
	bool auth = hop_authenticated_for_requiretls(&h, &why);
	enum requiretls_verdict v = requiretls_decide(
	    &h, bits & 64, bits & 128, text, sizeof(text));

	REQUIRE(auth == (why == NULL));
	REQUIRE(!auth || h.tls);
	REQUIRE(auth || v == REQUIRETLS_REFUSE);
	REQUIRE(v != REQUIRETLS_SEND || (auth && (bits & 64)));
	REQUIRE(v != REQUIRETLS_SEND_PLAIN || (auth && (bits & 128)));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *h = malloc(size ? size : 1);

	REQUIRE(h != NULL);
	memcpy(h, data, size);
	REQUIRE(requiretls_header_no(h, size) == reference(h, size));
	if (size > 0)
		decisions(data[0]);
	free(h);
	return 0;
}
