/*
 * libFuzzer target for src/proto/tlsrpt.c and tlsrpt_report.c (`make
 * fuzz`; `make check` replays spec/fuzz/corpus/tlsrpt/). Octet 0 picks
 * what the rest is (each in a buffer of exactly its length):
 *
 *   0: one joined _smtp._tls TXT record (tlsrpt_record_parse), and the
 *      same octets as a header section (tlsrpt_mail_is_report)
 *   1: a TXT RRset: rdatas cut at each 0xFF octet (tlsrpt_record_pick)
 *   2: record lines, LF-separated (tlsrpt_entry_parse), then the JSON
 *      report and the mail built from those that parsed
 *
 * Beyond the sanitizers it checks, and abort()s when one fails: a record
 * FOUND keeps at most TLSRPT_MAX_RUA addresses, each printable, without
 * spaces, with one '@'; a line that parses formats back to the same octets
 * (one spelling); the JSON has balanced brackets outside strings and no
 * control octet; the mail has CRLF lines under 998 octets and is known as
 * a report.
 */
#include "proto/tlsrpt.h"
#include "proto/tlsrpt_report.h"

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

enum { MAX_RDATA = 8, MAX_ENTRIES = 16 };

static void check_rua(enum tlsrpt_record r, const struct tlsrpt_rua *rua)
{
	REQUIRE(rua->n <= TLSRPT_MAX_RUA);
	REQUIRE(r == TLSRPT_RECORD_FOUND || rua->n == 0);
	for (size_t i = 0; i < rua->n; i++) {
		const char *a = rua->addr[i], *at = strchr(a, '@');

		REQUIRE(at != NULL && at != a && strchr(at + 1, '@') == NULL);
		for (; *a != '\0'; a++)
			REQUIRE(*a > ' ' && *a <= '~');
	}
}

static void one_record(const uint8_t *p, size_t n)
{
	char *text = malloc(n ? n : 1);
	struct tlsrpt_rua rua;
	const char *why = NULL;
	enum tlsrpt_record r;

	REQUIRE(text != NULL);
	memcpy(text, p, n);
	r = tlsrpt_record_parse(text, n, &rua, &why);
	check_rua(r, &rua);
	REQUIRE(r == TLSRPT_RECORD_FOUND || why != NULL);
	(void)tlsrpt_mail_is_report(text, n);
	free(text);
}

static void rrset(const uint8_t *p, size_t n)
{
	unsigned char *copy[MAX_RDATA];
	const unsigned char *rd[MAX_RDATA];
	size_t lens[MAX_RDATA], k = 0, from = 0;
	struct tlsrpt_rua rua;
	const char *why = NULL;

	for (size_t i = 0; i <= n && k < MAX_RDATA; i++) {
		if (i < n && p[i] != 0xff)
			continue;
		lens[k] = i - from;
		copy[k] = malloc(lens[k] ? lens[k] : 1);
		REQUIRE(copy[k] != NULL);
		memcpy(copy[k], p + from, lens[k]);
		rd[k] = copy[k];
		k++;
		from = i + 1;
	}
	check_rua(tlsrpt_record_pick(rd, lens, k, &rua, &why), &rua);
	for (size_t i = 0; i < k; i++)
		free(copy[i]);
}

static void check_json(const char *j, size_t len)
{
	int depth = 0;
	bool in_string = false;

	REQUIRE(strlen(j) == len);
	for (const char *c = j; *c != '\0'; c++) {
		REQUIRE((unsigned char)*c >= 0x20 || *c == '\n');
		REQUIRE(!in_string || *c != '\n');
		if (in_string && *c == '\\') {
			REQUIRE(c[1] != '\0');
			c++;
		} else if (*c == '"') {
			in_string = !in_string;
		} else if (!in_string && (*c == '{' || *c == '[')) {
			depth++;
		} else if (!in_string && (*c == '}' || *c == ']')) {
			REQUIRE(--depth >= 0);
		}
	}
	REQUIRE(depth == 0 && !in_string);
}

static void check_mail(const char *m, size_t len)
{
	REQUIRE(strlen(m) == len);
	for (const char *p = m; *p != '\0';) {
		const char *eol = strstr(p, "\r\n");

		REQUIRE(eol != NULL && eol - p <= 998);
		REQUIRE(memchr(p, '\n', (size_t)(eol - p)) == NULL);
		p = eol + 2;
	}
}

static void report(const struct tlsrpt_entry *e, size_t n)
{
	struct tlsrpt_meta meta = {.organization = "o\x01\"", .contact = "c",
				   .report_id = "r", .begin = 0,
				   .end = 86399};
	const char *to[] = {"a@b.test"};
	size_t jlen, glen, mlen;
	char *json = tlsrpt_report_json(&meta, e, n, &jlen), *mail;
	unsigned char *gz;
	struct tlsrpt_mail m = {.from = "f@g.test", .to = to, .n_to = 1,
				.domain = "b.test", .submitter = "g.test",
				.report_id = "r@g.test", .message_id = "m@g",
				.filename = "g.test!b.test!0!86399.json.gz"};

	REQUIRE(json != NULL);
	check_json(json, jlen);
	gz = tlsrpt_gzip(json, jlen, &glen);
	REQUIRE(gz != NULL);
	m.gz = gz;
	m.gz_len = glen;
	tlsrpt_totals(e, n, &m.ok, &m.failed);
	mail = tlsrpt_mail_build(&m, &mlen);
	REQUIRE(mail != NULL);
	check_mail(mail, mlen);
	REQUIRE(tlsrpt_mail_is_report(mail, mlen));
	free(mail);
	free(gz);
	free(json);
}

static void lines(const uint8_t *p, size_t n)
{
	static struct tlsrpt_entry list[MAX_ENTRIES], e;
	static char again[TLSRPT_LINE_MAX];
	size_t k = 0, from = 0;

	for (size_t i = 0; i <= n; i++) {
		char *line;
		size_t len = i - from, out;

		if (i < n && p[i] != '\n')
			continue;
		line = malloc(len ? len : 1);
		REQUIRE(line != NULL);
		memcpy(line, p + from, len);
		if (tlsrpt_entry_parse(line, len, &e)) {
			out = tlsrpt_entry_format(&e, again, sizeof(again));
			REQUIRE(out == len + 1 && memcmp(again, line, len) == 0 &&
				again[len] == '\n');
			tlsrpt_entries_add(list, &k, MAX_ENTRIES, &e);
		}
		free(line);
		from = i + 1;
	}
	report(list, k);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	switch (data[0] % 3) {
	case 0:
		one_record(data + 1, size - 1);
		break;
	case 1:
		rrset(data + 1, size - 1);
		break;
	default:
		lines(data + 1, size - 1);
		break;
	}
	return 0;
}
