/*
 * libFuzzer target for src/proto/sts.c, what a DNS server and a web server
 * hand the MTA-STS code (`make fuzz`; `make check` replays
 * spec/fuzz/corpus/sts/). The first octet picks the parser, the rest is
 * its input, in a buffer of exactly its length so ASan sees a read past
 * it:
 *   0  TXT rdata: joined, then offered to sts_record_pick with a second
 *      record split off at the first LF;
 *   1  a policy file;
 *   2  a cache file;
 *   3  an MX host name, against a fixed policy.
 * Beyond the sanitizers it checks, and abort()s when one fails:
 *  - a joined TXT text has no NUL and is no longer than its rdata;
 *  - a picked id is 1..32 letters and digits, from a record starting with
 *    "v=STSv1", and two copies of one record are never a policy;
 *  - a valid policy has a mode, at most STS_MAX_MX patterns (one at least
 *    unless the mode is none), max_age within STS_MAX_AGE_MAX, and reads
 *    back the same from the text formatted from it; every pattern matches
 *    a host it stands for;
 *  - a cache file read back writes the same header, octet for octet;
 *  - matching an MX host never reads past it.
 */
#include "proto/sts.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(cond)                                                          \
	do {                                                                   \
		if (!(cond))                                                   \
			abort();                                               \
	} while (0)

static bool id_ok(const char *id)
{
	size_t n = strlen(id);

	if (n == 0 || n > STS_ID_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((id[i] >= '0' && id[i] <= '9') ||
		      (id[i] >= 'a' && id[i] <= 'z') ||
		      (id[i] >= 'A' && id[i] <= 'Z')))
			return false;
	return true;
}

static void fuzz_txt(const uint8_t *data, size_t size)
{
	char text[STS_TXT_MAX], id[STS_ID_MAX + 1];
	size_t n, lens[2];
	const char *texts[2], *why, *nl;

	if (sts_txt_join(data, size, text, sizeof(text), &n) == STS_JOIN_OK) {
		REQUIRE(n <= size && strlen(text) == n);
		texts[0] = text;
		lens[0] = n;
		if (sts_record_pick(texts, lens, 1, id, sizeof(id), &why) ==
		    STS_RECORD_FOUND) {
			REQUIRE(id_ok(id) && strncmp(text, "v=STSv1", 7) == 0);
			texts[1] = text;
			lens[1] = n;
			REQUIRE(sts_record_pick(texts, lens, 2, id, sizeof(id),
						&why) == STS_RECORD_INVALID);
		}
	}
	/* The raw octets as two texts, split at the first LF. */
	nl = memchr(data, '\n', size);
	texts[0] = (const char *)data;
	lens[0] = nl ? (size_t)(nl - texts[0]) : size;
	texts[1] = nl ? nl + 1 : NULL;
	lens[1] = nl ? size - lens[0] - 1 : 0;
	if (sts_record_pick(texts, lens, 2, id, sizeof(id), &why) ==
	    STS_RECORD_FOUND)
		REQUIRE(id_ok(id));
}

/* A pattern's host: "*.a.b" stands for "x.a.b". */
static void require_matches(const struct sts_policy *p, const char *pat)
{
	char host[STS_MX_LEN + 2];

	snprintf(host, sizeof(host), "%s%s", pat[0] == '*' ? "x" : "",
		 pat[0] == '*' ? pat + 1 : pat);
	REQUIRE(sts_mx_match(p, host));
}

static void fuzz_policy(const uint8_t *data, size_t size)
{
	struct sts_policy p, again;
	char why[160];
	char *text;
	size_t cap = 128 + STS_MAX_MX * (STS_MX_LEN + 6), n;

	if (!sts_policy_parse((const char *)data, size, &p, why, sizeof(why)))
		return;
	REQUIRE(p.n_mx <= STS_MAX_MX && p.max_age <= STS_MAX_AGE_MAX);
	REQUIRE(p.mode == STS_MODE_NONE || p.n_mx > 0);
	text = malloc(cap);
	REQUIRE(text != NULL);
	n = (size_t)snprintf(text, cap, "version: STSv1\r\nmode: %s\r\n"
				       "max_age: %lu\r\n",
			     sts_mode_name(p.mode), p.max_age);
	for (unsigned i = 0; i < p.n_mx; i++) {
		REQUIRE(strlen(p.mx[i]) < STS_MX_LEN);
		require_matches(&p, p.mx[i]);
		n += (size_t)snprintf(text + n, cap - n, "mx: %s\r\n",
				      p.mx[i]);
	}
	REQUIRE(sts_policy_parse(text, n, &again, why, sizeof(why)));
	REQUIRE(again.mode == p.mode && again.max_age == p.max_age &&
		again.n_mx == p.n_mx);
	for (unsigned i = 0; i < p.n_mx; i++)
		REQUIRE(strcmp(again.mx[i], p.mx[i]) == 0);
	free(text);
}

static void fuzz_cache(const uint8_t *data, size_t size)
{
	struct sts_cached c;
	char head[256];
	size_t n;

	if (!sts_cache_parse((const char *)data, size, &c))
		return;
	REQUIRE(id_ok(c.id) && c.fetched >= 0);
	n = sts_cache_header(head, sizeof(head), c.id, c.fetched);
	REQUIRE(n > 0 && n <= size && c.policy == (const char *)data + n);
	REQUIRE(memcmp(head, data, n) == 0);
	REQUIRE(c.policy_len == size - n);
}

static void fuzz_mx(const uint8_t *data, size_t size)
{
	static const char policy[] = "version: STSv1\nmode: enforce\n"
				     "mx: mx.example.com\nmx: *.example.net\n"
				     "max_age: 86400\n";
	struct sts_policy p;
	char why[160];
	char *host = malloc(size + 1);

	REQUIRE(host != NULL);
	memcpy(host, data, size);
	host[size] = '\0';
	REQUIRE(sts_policy_parse(policy, sizeof(policy) - 1, &p, why,
				 sizeof(why)));
	(void)sts_mx_match(&p, host);
	free(host);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *copy;

	if (size == 0)
		return 0;
	copy = malloc(size - 1 ? size - 1 : 1);
	REQUIRE(copy != NULL);
	memcpy(copy, data + 1, size - 1);
	switch (data[0] % 4) {
	case 0:
		fuzz_txt(copy, size - 1);
		break;
	case 1:
		fuzz_policy(copy, size - 1);
		break;
	case 2:
		fuzz_cache(copy, size - 1);
		break;
	default:
		fuzz_mx(copy, size - 1);
		break;
	}
	free(copy);
	return 0;
}
