/*
 * libFuzzer target for the outbound client's reply reader,
 * src/proto/smtp_out.c with smtp_proto.c's line parser (`make fuzz`;
 * `make check` replays spec/fuzz/corpus/smtp_reply/). The input is what a
 * server sends: it is cut into lines the way outbound/smtp_client.c's
 * process_input cuts them (at LF, one CR before it dropped, a line over
 * SMTP_REPLY_LINE_MAX ends the session), each line in a buffer of exactly
 * its length. The first octet says whether the replies are EHLO replies.
 *
 * Beyond the sanitizers it checks, and abort()s when one fails: a whole
 * reply has a code of 200-599 that starts its text; the text is NUL-
 * terminated at len, within SMTP_REPLY_TEXT_MAX, and free of controls; no
 * reply takes more than SMTP_REPLY_MAX_LINES lines; EHLO keywords only
 * turn on; a SIZE limit comes only with SIZE; without EHLO nothing is
 * learned.
 */
#include "proto/smtp_out.h"
#include "proto/smtp_proto.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(cond)                                                          \
	do {                                                                   \
		if (!(cond))                                                   \
			abort();                                               \
	} while (0)

static void check_done(const struct smtp_reply *r)
{
	char code[8];

	REQUIRE(r->code >= 200 && r->code <= 599);
	REQUIRE(r->len < SMTP_REPLY_TEXT_MAX && r->text[r->len] == '\0');
	REQUIRE(strlen(r->text) == r->len);
	snprintf(code, sizeof(code), "%d", r->code);
	REQUIRE(strncmp(r->text, code, 3) == 0 || r->lines > 1);
	for (size_t i = 0; i < r->len; i++)
		REQUIRE((unsigned char)r->text[i] >= 0x20 &&
		        r->text[i] != 0x7f);
	REQUIRE(r->lines >= 1 && r->lines <= SMTP_REPLY_MAX_LINES);
}

static bool only_grew(const struct smtp_extensions *before,
                      const struct smtp_extensions *after)
{
	return (!before->starttls || after->starttls) &&
	       (!before->pipelining || after->pipelining) &&
	       (!before->size || after->size) &&
	       (!before->eightbitmime || after->eightbitmime) &&
	       (!before->smtputf8 || after->smtputf8) &&
	       (!before->requiretls || after->requiretls);
}

/* One line to the reader; false when the session would end. */
static bool take(struct smtp_reply *r, struct smtp_extensions *ext, bool ehlo,
                 const char *in, size_t n)
{
	char *line = malloc(n ? n : 1);
	struct smtp_extensions before = *ext;
	enum smtp_reply_step step;

	REQUIRE(line != NULL);
	memcpy(line, in, n);
	step = smtp_reply_take(r, line, n, ehlo ? ext : NULL);
	free(line);
	REQUIRE(only_grew(&before, ext));
	REQUIRE(!ext->size_limit || ext->size);
	switch (step) {
	case SMTP_REPLY_MORE:
		REQUIRE(r->lines <= SMTP_REPLY_MAX_LINES);
		return true;
	case SMTP_REPLY_DONE:
		check_done(r);
		smtp_reply_next(r);
		return true;
	case SMTP_REPLY_MALFORMED:
	case SMTP_REPLY_TOO_LONG:
		break;
	}
	return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct smtp_reply r = {0};
	struct smtp_extensions ext = {0};
	bool ehlo = size > 0 && (data[0] & 1);
	const char *in = (const char *)data + (size > 0);
	size_t len = size - (size > 0);

	while (len > 0) {
		const char *lf = memchr(in, '\n', len);
		size_t line_len = lf != NULL ? (size_t)(lf - in) + 1 : len;
		size_t n;

		if (line_len > SMTP_REPLY_LINE_MAX || lf == NULL)
			break;
		n = line_len - 1;
		if (n > 0 && in[n - 1] == '\r')
			n--;
		if (!take(&r, &ext, ehlo, in, n))
			break;
		in += line_len;
		len -= line_len;
	}
	if (!ehlo) {
		struct smtp_extensions none = {0};
		REQUIRE(memcmp(&ext, &none, sizeof(ext)) == 0);
	}
	return 0;
}
