/*
 * smtp_out: reply assembly, EHLO keywords and dot-stuffing behind
 * smtp_out.h. Pure: it reads only the octets it is given, writes only
 * within the room its callers promise, and never decides what a reply
 * means for the session (outbound/smtp_client.c does).
 */
#include "proto/smtp_out.h"

#include "proto/smtp_proto.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

static bool word_is(const char *w, size_t len, const char *word)
{
	return len == strlen(word) && strncasecmp(w, word, len) == 0;
}

static uint64_t parse_size(const char *s, size_t len)
{
	uint64_t v = 0;
	size_t i = 0;

	while (i < len && s[i] == ' ')
		i++;
	for (; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
		if (v > (UINT64_MAX - 9) / 10)
			return 0; /* beyond any message: as no limit */
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	return i == len ? v : 0;
}

static void parse_extension(struct smtp_extensions *e, const char *t,
                            size_t len)
{
	size_t kw = 0;

	while (kw < len && t[kw] != ' ')
		kw++;
	if (word_is(t, kw, "STARTTLS")) {
		e->starttls = true;
	} else if (word_is(t, kw, "PIPELINING")) {
		e->pipelining = true;
	} else if (word_is(t, kw, "8BITMIME")) {
		e->eightbitmime = true;
	} else if (word_is(t, kw, "SMTPUTF8")) {
		e->smtputf8 = true;
	} else if (word_is(t, kw, "REQUIRETLS")) {
		e->requiretls = true;
	} else if (word_is(t, kw, "SIZE")) {
		e->size = true;
		e->size_limit = parse_size(t + kw, len - kw);
	}
}

static void reply_append(struct smtp_reply *r, int code, const char *text,
                         size_t len)
{
	if (r->lines == 1)
		r->len = (size_t)snprintf(r->text, sizeof(r->text), "%d", code);
	if (len > 0 && r->len + 1 < sizeof(r->text))
		r->text[r->len++] = ' ';
	for (size_t i = 0; i < len && r->len + 1 < sizeof(r->text); i++) {
		unsigned char ch = (unsigned char)text[i];

		r->text[r->len++] = ch < 0x20 || ch == 0x7f ? '?' : (char)ch;
	}
	r->text[r->len] = '\0';
}

enum smtp_reply_step smtp_reply_take(struct smtp_reply *r, const char *line,
                                     size_t len, struct smtp_extensions *ext)
{
	struct smtp_reply_line rl;

	if (!smtp_parse_reply_line(line, len, &rl))
		return SMTP_REPLY_MALFORMED;
	if (++r->lines > SMTP_REPLY_MAX_LINES)
		return SMTP_REPLY_TOO_LONG;
	reply_append(r, rl.code, rl.text, rl.text_len);
	if (ext != NULL && r->lines > 1)
		parse_extension(ext, rl.text, rl.text_len);
	if (rl.more)
		return SMTP_REPLY_MORE;
	r->code = rl.code;
	return SMTP_REPLY_DONE;
}

void smtp_reply_next(struct smtp_reply *r)
{
	r->lines = 0;
	r->len = 0;
}

void smtp_stuff_start(struct smtp_stuffer *s)
{
	s->at_bol = true;
	s->pending_cr = false;
}

/* How many octets of in[0..len) come before its first CR or LF. */
static size_t plain_run(const char *in, size_t len)
{
	const char *lf = memchr(in, '\n', len);
	size_t end = lf != NULL ? (size_t)(lf - in) : len;
	const char *cr = memchr(in, '\r', end);

	return cr != NULL ? (size_t)(cr - in) : end;
}

/* One octet, with whatever the stuffer holds: the slow, exact path. */
static size_t stuff_octet(struct smtp_stuffer *s, char ch, char *out)
{
	size_t n = 0;

	if (s->pending_cr) {
		s->pending_cr = false;
		out[n++] = '\r';
		out[n++] = '\n';
		s->at_bol = true;
		if (ch == '\n')
			return n;
	}
	if (ch == '\r') {
		s->pending_cr = true;
		return n;
	}
	if (ch == '\n') {
		out[n++] = '\r';
		out[n++] = '\n';
		s->at_bol = true;
		return n;
	}
	if (s->at_bol && ch == '.')
		out[n++] = '.';
	out[n++] = ch;
	s->at_bol = false;
	return n;
}

/*
 * Inside a line (no CR held, not at its start) every octet up to the next
 * CR or LF is copied as it is, in one memcpy; the rest goes octet by octet.
 */
size_t smtp_stuff(struct smtp_stuffer *s, const char *in, size_t len, char *out)
{
	size_t n = 0, i = 0;

	while (i < len) {
		if (!s->pending_cr && !s->at_bol) {
			size_t run = plain_run(in + i, len - i);
			memcpy(out + n, in + i, run);
			n += run;
			i += run;
			if (i == len)
				break;
		}
		n += stuff_octet(s, in[i++], out + n);
	}
	return n;
}

size_t smtp_stuff_end(struct smtp_stuffer *s, char out[SMTP_STUFF_END_MAX])
{
	size_t n = 0;

	/* A held CR ends its line, and so does the end of the message. */
	if (s->pending_cr || !s->at_bol) {
		memcpy(out, "\r\n", 2);
		n = 2;
	}
	s->pending_cr = false;
	s->at_bol = true;
	memcpy(out + n, ".\r\n", 3);
	return n + 3;
}
