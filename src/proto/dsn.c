/*
 * dsn.c: the RFC 3464 delivery status notification behind dsn.h, laid out
 * as Postfix lays out its bounces: a multipart/report (RFC 6522) with a
 * note for people, the message/delivery-status report, and the original
 * header section as text/rfc822-headers.
 *
 * It owns the text of a DSN only: no I/O, no state kept between calls, no
 * decision about when to bounce or whom to tell. Every string it is given
 * may come from a hostile peer (a remote reply, an address, the original
 * headers), so nothing it is given can start a header line, break the MIME
 * structure or make a line longer than 998 octets.
 *
 * Choices dsn.h leaves open:
 * - NULL also means "no DSN can be built from this": no input or len, no
 *   recipient, an unknown action, headers NULL with a length, an empty
 *   hostname, queue id, sender or recipient address, or a time outside the
 *   years 1900-9999. An empty sender, or "<>", is the null sender, and a DSN
 *   to it would be a bounce of a bounce (RFC 5321 §6.1): refused, not sent.
 * - Field values become one line of printable US-ASCII (see clean()): an
 *   SMTPUTF8 address shows '?' for its 8-bit octets, because carrying it
 *   needs RFC 6533's message/global-delivery-status, not built here.
 * - Diagnostic-Code is "smtp; <reply>" when the diagnostic starts with an
 *   SMTP reply code (the remote's reply, RFC 3464 §2.3.6) and
 *   "X-Smtpgw; <reason>" otherwise (a local reason: no route, a timeout).
 * - A missing or malformed status becomes 5.0.0 (failed) or 4.0.0
 *   (delayed); a well-formed one is kept even if its class disagrees with
 *   the action, as in a 4.4.1 for a message that expired in the queue.
 * - Values are folded (RFC 5322 §2.2.3) at 78 columns where there is a
 *   space, and only where there is none is a word broken at 998 octets.
 *   A value is cut to VALUE_MAX octets, ending in "...".
 * - The original header section is copied as given, except that a CR, an
 *   LF or a CRLF each end a line, other controls but HT become '?', a line
 *   over 998 octets is folded, and the copy stops at the first empty line
 *   (whatever follows is body, not headers). 8-bit octets are kept; the
 *   DSN then says Content-Transfer-Encoding: 8bit.
 */
#include "proto/dsn.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
	LINE_MAX_OCTETS = 998, /* RFC 5322 §2.1.1, without the CRLF */
	FIELD_WIDTH = 78,      /* RFC 5322's "SHOULD", for header fields */
	TEXT_WIDTH = 76,       /* the note for people */
	HOST_MAX = 255,
	QID_MAX = 64,
	VALUE_MAX = 4096,
	BOUNDARY_MAX = 70, /* RFC 2046 §5.1.1 */
	BOUNDARY_QID = 24, /* octets of the queue id that go in a boundary */
	DATE_LEN = 80,
};

/* ---- growing buffers ---- */

struct buf {
	char *p; /* NUL-terminated once anything was put */
	size_t len;
	size_t cap;
	bool oom; /* sticky: every later put is a no-op */
};

static bool buf_reserve(struct buf *b, size_t n)
{
	size_t cap = b->cap ? b->cap : 256;

	if (b->oom)
		return false;
	if (b->cap - b->len > n)
		return true;
	while (cap - b->len <= n) {
		if (cap > SIZE_MAX / 2) {
			b->oom = true;
			return false;
		}
		cap *= 2;
	}
	char *p = realloc(b->p, cap);
	if (p == NULL) {
		b->oom = true;
		return false;
	}
	b->p = p;
	b->cap = cap;
	return true;
}

static void buf_put(struct buf *b, const char *s, size_t n)
{
	if (!buf_reserve(b, n))
		return;
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void buf_puts(struct buf *b, const char *s)
{
	buf_put(b, s, strlen(s));
}

static void buf_putc(struct buf *b, char c)
{
	buf_put(b, &c, 1);
}

static void buf_crlf(struct buf *b)
{
	buf_put(b, "\r\n", 2);
}

static void buf_reset(struct buf *b)
{
	b->len = 0;
	buf_put(b, "", 0); /* so that b->p is a string, if an empty one */
}

static const char *buf_str(const struct buf *b)
{
	return b->p != NULL ? b->p : "";
}

/* ---- cleaning what the caller gave ---- */

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static bool is_alnum(char c)
{
	return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* RFC 5322 atext, ASCII only. */
static bool is_atext(char c)
{
	return is_alnum(c) || (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c));
}

/*
 * Copies s into out as one line of printable US-ASCII: each run of spaces
 * and controls becomes a single space (so a CR or LF cannot end the line
 * and a fold can never leave a line of only white space), ends are
 * trimmed, and 8-bit octets become '?' since the DSN's own text is
 * declared US-ASCII. A value over max octets is cut and ends in "...".
 */
static void clean(struct buf *out, const char *s, size_t max)
{
	bool gap = false, cut = false;

	buf_reset(out);
	for (; s != NULL && *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;
		if (c <= ' ' || c == 0x7f) {
			gap = true;
			continue;
		}
		bool space = gap && out->len > 0;
		if (out->len + space + 1 > max) {
			cut = true;
			break;
		}
		if (space)
			buf_putc(out, ' ');
		gap = false;
		buf_putc(out, c < 0x7f ? (char)c : '?');
	}
	if (cut && !out->oom && max > 3) {
		out->len = max - 3;
		while (out->len > 0 && out->p[out->len - 1] == ' ')
			out->len--;
		buf_puts(out, "...");
	}
}

/* An address, without the angle brackets an envelope path may carry. */
static void clean_address(struct buf *out, const char *s)
{
	clean(out, s, VALUE_MAX);
	if (out->oom || out->len < 2 || out->p[0] != '<' ||
	    out->p[out->len - 1] != '>')
		return;
	size_t n = out->len - 2, skip = out->p[1] == ' ';
	n -= skip + (n > skip && out->p[out->len - 2] == ' ');
	memmove(out->p, out->p + 1 + skip, n);
	out->len = n;
	out->p[n] = '\0';
}

/*
 * The hostname and the queue id also go inside the Message-Id, so they
 * are reduced to a dot-atom (RFC 5322 §3.2.3): atext, single inner dots.
 */
static void clean_token(struct buf *out, const char *s, size_t max)
{
	size_t o = 0;

	clean(out, s, max);
	for (size_t i = 0; i < out->len; i++) {
		char c = out->p[i];
		if (c == '.' && (o == 0 || out->p[o - 1] == '.'))
			continue;
		out->p[o++] = c == '.' || is_atext(c) ? c : '-';
	}
	while (o > 0 && out->p[o - 1] == '.')
		o--;
	out->len = o;
	if (out->p != NULL)
		out->p[o] = '\0';
}

/* RFC 3463: class "." subject "." detail, 1-3 digits after the class. */
static bool status_ok(const char *s)
{
	if (s == NULL || (s[0] != '2' && s[0] != '4' && s[0] != '5') ||
	    s[1] != '.')
		return false;
	s += 2;
	for (int part = 0; part < 2; part++) {
		size_t n = 0;
		while (n < 4 && is_digit(s[n]))
			n++;
		if (n == 0 || n > 3)
			return false;
		s += n;
		if (part == 0 && *s++ != '.')
			return false;
	}
	return *s == '\0';
}

static const char *status_of(const struct dsn_rcpt *r)
{
	if (status_ok(r->status))
		return r->status;
	return r->action == DSN_DELAYED ? "4.0.0" : "5.0.0";
}

/* A remote reply starts with its code; a local reason never does. */
static bool is_smtp_reply(const char *s)
{
	return s[0] >= '2' && s[0] <= '5' && is_digit(s[1]) && is_digit(s[2]) &&
	       (s[3] == '\0' || s[3] == ' ' || s[3] == '-');
}

/* RFC 5322 §3.3, always in UTC; by hand, since strftime's names follow
 * the locale. */
static bool format_date(time_t t, char out[DATE_LEN], bool stamp)
{
	static const char days[][4] = {"Sun", "Mon", "Tue", "Wed",
				       "Thu", "Fri", "Sat"};
	static const char months[][4] = {"Jan", "Feb", "Mar", "Apr",
					 "May", "Jun", "Jul", "Aug",
					 "Sep", "Oct", "Nov", "Dec"};
	struct tm tm;

	if (gmtime_r(&t, &tm) == NULL || tm.tm_year < 0 ||
	    tm.tm_year > 9999 - 1900)
		return false;
	if (stamp)
		snprintf(out, DATE_LEN, "%04d%02d%02d%02d%02d%02d",
			 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
			 tm.tm_hour, tm.tm_min, tm.tm_sec);
	else
		snprintf(out, DATE_LEN, "%s, %02d %s %04d %02d:%02d:%02d +0000",
			 days[tm.tm_wday % 7], tm.tm_mday,
			 months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour,
			 tm.tm_min, tm.tm_sec);
	return true;
}

/* ---- lines ---- */

/* The last space at index 1..room of s, or 0. */
static size_t last_space(const char *s, size_t room)
{
	for (size_t j = room; j > 0; j--)
		if (s[j] == ' ')
			return j;
	return 0;
}

/* The first space at index from..to of s (to < strlen(s)), or 0. */
static size_t first_space(const char *s, size_t from, size_t to)
{
	for (size_t j = from; j <= to; j++)
		if (s[j] == ' ')
			return j;
	return 0;
}

/*
 * Appends s, a value from clean(), to a line already col octets long,
 * breaking it into lines that start with cont. A break replaces a space,
 * so with cont " " this is RFC 5322 folding and unfolding restores s. The
 * last space that keeps a line within width is taken, else the first that
 * keeps it within LINE_MAX_OCTETS; a word is cut only when neither exists.
 */
static void put_wrapped(struct buf *b, size_t col, const char *s,
			size_t width, const char *cont)
{
	size_t n = strlen(s), cont_len = strlen(cont);

	while (col + n > width) {
		size_t room = width > col ? width - col : 0;
		size_t hard = LINE_MAX_OCTETS - col;
		size_t cut = last_space(s, room);
		if (cut == 0 && room + 1 < n)
			cut = first_space(s, room + 1, hard < n ? hard : n - 1);
		if (cut == 0 && n <= hard)
			break;
		if (cut != 0) {
			buf_put(b, s, cut);
			s += cut + 1;
			n -= cut + 1;
		} else {
			buf_put(b, s, hard);
			s += hard;
			n -= hard;
			if (*s == ' ') {
				s++;
				n--;
			}
		}
		buf_crlf(b);
		buf_puts(b, cont);
		col = cont_len;
	}
	buf_put(b, s, n);
}

/* "Name: <prefix><value>", folded; value comes from clean(). */
static void put_field(struct buf *b, const char *name, const char *prefix,
		      const char *value)
{
	buf_puts(b, name);
	buf_puts(b, ": ");
	buf_puts(b, prefix);
	put_wrapped(b, strlen(name) + 2 + strlen(prefix), value, FIELD_WIDTH,
		    " ");
	buf_crlf(b);
}

/* One paragraph line of the note, every line of it starting with indent. */
static void put_text(struct buf *b, const char *indent, const char *text)
{
	buf_puts(b, indent);
	put_wrapped(b, strlen(indent), text, TEXT_WIDTH, indent);
	buf_crlf(b);
}

/* ---- the DSN ---- */

struct dsn {
	const struct dsn_input *in;
	struct buf host, qid, sender;
	struct buf tmp, tmp2, line;
	char arrival[DATE_LEN], now[DATE_LEN], stamp[DATE_LEN];
	bool all_delayed, any_delayed;
	bool eight_bit; /* the original headers carry 8-bit octets */
	struct buf part[3];
	struct buf boundary, message_id;
	struct buf out;
};

enum { N_BUFS = 12 };

/* Every buffer of d, so that none is missed when checking or freeing. */
static void list_bufs(struct dsn *d, struct buf *all[N_BUFS])
{
	struct buf *list[N_BUFS] = {
		&d->host,    &d->qid,	  &d->sender,	   &d->tmp,
		&d->tmp2,    &d->line,	  &d->part[0],	   &d->part[1],
		&d->part[2], &d->boundary, &d->message_id, &d->out,
	};

	memcpy(all, list, sizeof(list));
}

static bool rcpts_ok(struct dsn *d)
{
	const struct dsn_input *in = d->in;

	if (in->n_rcpts == 0 || in->rcpts == NULL)
		return false;
	d->all_delayed = true;
	for (size_t i = 0; i < in->n_rcpts; i++) {
		const struct dsn_rcpt *r = &in->rcpts[i];
		if (r->action != DSN_FAILED && r->action != DSN_DELAYED)
			return false;
		clean_address(&d->tmp, r->address);
		if (d->tmp.len == 0)
			return false;
		d->all_delayed &= r->action == DSN_DELAYED;
		d->any_delayed |= r->action == DSN_DELAYED;
	}
	return true;
}

/* Cleans the per-message values once; false if no DSN can be built. */
static bool prepare(struct dsn *d)
{
	const struct dsn_input *in = d->in;

	if (in->headers == NULL && in->headers_len > 0)
		return false;
	clean_token(&d->host, in->hostname, HOST_MAX);
	clean_token(&d->qid, in->qid, QID_MAX);
	clean_address(&d->sender, in->sender);
	if (!rcpts_ok(d) || d->host.len == 0 || d->qid.len == 0 ||
	    d->sender.len == 0)
		return false;
	return format_date(in->arrival, d->arrival, false) &&
	       format_date(in->now, d->now, false) &&
	       format_date(in->now, d->stamp, true);
}

/* Part 1: "<addr>: delivery failed, status 5.1.1." and what was said. */
static void notice_rcpt(struct dsn *d, struct buf *b, const struct dsn_rcpt *r)
{
	struct buf *line = &d->line;

	clean_address(&d->tmp, r->address);
	buf_reset(line);
	buf_putc(line, '<');
	buf_puts(line, buf_str(&d->tmp));
	buf_puts(line, r->action == DSN_DELAYED
			       ? ">: delivery delayed, still being retried"
			       : ">: delivery failed");
	buf_puts(line, ", status ");
	buf_puts(line, status_of(r));
	buf_putc(line, '.');
	put_text(b, "", buf_str(line));

	clean(&d->tmp, r->remote_mta, VALUE_MAX);
	clean(&d->tmp2, r->diagnostic, VALUE_MAX);
	buf_reset(line);
	if (d->tmp.len > 0 && d->tmp2.len > 0) {
		buf_puts(line, buf_str(&d->tmp));
		buf_puts(line, " said: ");
	} else if (d->tmp.len > 0) {
		buf_puts(line, "while talking to ");
		buf_puts(line, buf_str(&d->tmp));
	}
	buf_puts(line, buf_str(&d->tmp2));
	if (line->len > 0)
		put_text(b, "    ", buf_str(line));
}

static void write_notice(struct dsn *d, struct buf *b)
{
	struct buf *line = &d->line;
	const struct dsn_input *in = d->in;

	buf_reset(line);
	buf_puts(line, "This is the mail system at host ");
	buf_puts(line, buf_str(&d->host));
	buf_putc(line, '.');
	put_text(b, "", buf_str(line));
	buf_crlf(b);

	buf_reset(line);
	buf_puts(line, "Your message with queue ID ");
	buf_puts(line, buf_str(&d->qid));
	if (d->all_delayed)
		buf_puts(line, " has not yet been delivered to one or more "
			       "recipients. The mail system will keep trying "
			       "to deliver it; you need not send it again.");
	else
		buf_puts(line, " could not be delivered to one or more "
			       "recipients. The reasons are given below.");
	if (d->any_delayed && !d->all_delayed)
		buf_puts(line, " Delivery to the recipients marked as delayed "
			       "is still being retried.");
	buf_puts(line, " A delivery report and the headers of your message "
		       "are attached.");
	put_text(b, "", buf_str(line));

	for (size_t i = 0; i < in->n_rcpts; i++) {
		buf_crlf(b);
		notice_rcpt(d, b, &in->rcpts[i]);
	}
}

/* Part 2, one recipient's group of fields (RFC 3464 §2.3). */
static void report_rcpt(struct dsn *d, struct buf *b, const struct dsn_rcpt *r)
{
	clean_address(&d->tmp, r->address);
	put_field(b, "Final-Recipient", "rfc822; ", buf_str(&d->tmp));
	put_field(b, "Action", "",
		  r->action == DSN_DELAYED ? "delayed" : "failed");
	put_field(b, "Status", "", status_of(r));
	clean(&d->tmp, r->remote_mta, VALUE_MAX);
	if (d->tmp.len > 0)
		put_field(b, "Remote-MTA", "dns; ", buf_str(&d->tmp));
	clean(&d->tmp, r->diagnostic, VALUE_MAX);
	if (d->tmp.len > 0)
		put_field(b, "Diagnostic-Code",
			  is_smtp_reply(d->tmp.p) ? "smtp; " : "X-Smtpgw; ",
			  buf_str(&d->tmp));
	put_field(b, "Last-Attempt-Date", "", d->now);
}

static void write_report(struct dsn *d, struct buf *b)
{
	const struct dsn_input *in = d->in;

	put_field(b, "Reporting-MTA", "dns; ", buf_str(&d->host));
	put_field(b, "X-Smtpgw-Queue-ID", "", buf_str(&d->qid));
	put_field(b, "X-Smtpgw-Sender", "rfc822; ", buf_str(&d->sender));
	put_field(b, "Arrival-Date", "", d->arrival);
	for (size_t i = 0; i < in->n_rcpts; i++) {
		buf_crlf(b);
		report_rcpt(d, b, &in->rcpts[i]);
	}
}

/* One line of the original headers; a line too long for SMTP is folded. */
static void copy_line(struct dsn *d, struct buf *b, const char *s, size_t n)
{
	size_t col = 0;

	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (col == LINE_MAX_OCTETS) {
			buf_put(b, "\r\n ", 3);
			col = 1;
		}
		if ((c < ' ' && c != '\t') || c == 0x7f)
			c = '?';
		d->eight_bit |= c >= 0x80;
		buf_putc(b, (char)c);
		col++;
	}
	buf_crlf(b);
}

/* Part 3: the header section, to its end, in CRLF lines (see the top). */
static void copy_headers(struct dsn *d, struct buf *b)
{
	const char *h = d->in->headers;
	size_t n = d->in->headers_len, i = 0;

	while (i < n) {
		size_t e = i;
		while (e < n && h[e] != '\r' && h[e] != '\n')
			e++;
		if (e == i)
			break;
		copy_line(d, b, h + i, e - i);
		if (e + 1 < n && h[e] == '\r' && h[e + 1] == '\n')
			e++;
		i = e + 1;
	}
}

/* Marks the octet after each occurrence of the boundary; true if any. */
static bool boundary_occurs(const struct dsn *d, bool next[256])
{
	const char *bnd = buf_str(&d->boundary);
	size_t blen = d->boundary.len;
	bool found = false;

	for (size_t k = 0; k < 3; k++) {
		const char *p = buf_str(&d->part[k]);
		const char *end = p + d->part[k].len;
		while ((p = memmem(p, (size_t)(end - p), bnd, blen)) != NULL) {
			found = true;
			p += blen;
			if (p < end)
				next[(unsigned char)*p] = true;
		}
	}
	return found;
}

/*
 * A boundary that occurs in no part. Queue id and time make a clash rare;
 * on one, a letter that follows no occurrence is appended, which cannot
 * occur either. Forcing one more letter takes 62 times the occurrences
 * forcing the last did, so neither time nor length can be run up.
 */
static bool pick_boundary(struct dsn *d)
{
	static const char alnum[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
				    "abcdefghijklmnopqrstuvwxyz";
	char base[BOUNDARY_MAX + 1];
	size_t q = 0;

	for (const char *s = buf_str(&d->qid); *s != '\0' && q < BOUNDARY_QID;
	     s++)
		if (is_alnum(*s))
			base[q++] = *s;
	base[q] = '\0';
	buf_reset(&d->boundary);
	buf_puts(&d->boundary, "=_smtpgw.");
	buf_puts(&d->boundary, base);
	snprintf(base, sizeof(base), ".%llx", (unsigned long long)d->in->now);
	buf_puts(&d->boundary, base);
	for (;;) {
		bool next[256] = {false};
		if (d->boundary.oom || d->boundary.len > BOUNDARY_MAX)
			return false;
		if (!boundary_occurs(d, next))
			return true;
		size_t i = 0;
		while (alnum[i + 1] != '\0' && next[(unsigned char)alnum[i]])
			i++;
		buf_putc(&d->boundary, alnum[i]);
	}
}

static void put_boundary(struct dsn *d, bool last)
{
	buf_puts(&d->out, "\r\n--");
	buf_puts(&d->out, buf_str(&d->boundary));
	buf_puts(&d->out, last ? "--\r\n" : "\r\n");
}

static void write_top(struct dsn *d)
{
	struct buf *b = &d->out, *v = &d->line;

	buf_reset(v);
	buf_puts(v, "MAILER-DAEMON@");
	buf_puts(v, buf_str(&d->host));
	buf_puts(v, " (Mail Delivery System)");
	put_field(b, "From", "", buf_str(v));
	buf_reset(v);
	buf_putc(v, '<');
	buf_puts(v, buf_str(&d->sender));
	buf_putc(v, '>');
	put_field(b, "To", "", buf_str(v));
	put_field(b, "Subject", "",
		  d->all_delayed ? "Delayed Mail (still being retried)"
				 : "Undelivered Mail Returned to Sender");
	put_field(b, "Date", "", d->now);
	put_field(b, "Message-Id", "", buf_str(&d->message_id));
	put_field(b, "Auto-Submitted", "", "auto-replied");
	put_field(b, "MIME-Version", "", "1.0");
	buf_reset(v);
	buf_puts(v, "multipart/report; report-type=delivery-status; "
		    "boundary=\"");
	buf_puts(v, buf_str(&d->boundary));
	buf_putc(v, '"');
	put_field(b, "Content-Type", "", buf_str(v));
	if (d->eight_bit)
		put_field(b, "Content-Transfer-Encoding", "", "8bit");
	buf_puts(b, "\r\nThis is a MIME-encapsulated message.\r\n");
}

/*
 * Unique per DSN: one queue id can get several (a delay notice, then a
 * bounce, or bounces for different recipients), so the time and a hash of
 * who is reported and how are added to it.
 */
static void make_message_id(struct dsn *d)
{
	const struct dsn_input *in = d->in;
	uint32_t h = 2166136261u; /* FNV-1a */
	struct buf *id = &d->message_id;
	char hex[24];

	for (size_t i = 0; i < in->n_rcpts; i++) {
		const struct dsn_rcpt *r = &in->rcpts[i];
		const char *parts[] = {r->address, status_of(r),
				       r->action == DSN_DELAYED ? "D" : "F"};
		for (size_t k = 0; k < 3; k++)
			for (const char *s = parts[k]; *s != '\0'; s++)
				h = (h ^ (unsigned char)*s) * 16777619u;
	}
	snprintf(hex, sizeof(hex), "%08lx", (unsigned long)h);
	buf_reset(id);
	buf_putc(id, '<');
	buf_puts(id, d->stamp);
	buf_putc(id, '.');
	buf_puts(id, buf_str(&d->qid));
	buf_putc(id, '.');
	buf_puts(id, hex);
	buf_putc(id, '@');
	buf_puts(id, buf_str(&d->host));
	buf_putc(id, '>');
}

static void assemble(struct dsn *d)
{
	static const char *const part_headers[3] = {
		"Content-Description: Notification\r\n"
		"Content-Type: text/plain; charset=us-ascii\r\n",
		"Content-Description: Delivery report\r\n"
		"Content-Type: message/delivery-status\r\n",
		"Content-Description: Undelivered Message Headers\r\n"
		"Content-Type: text/rfc822-headers\r\n",
	};

	make_message_id(d);
	write_top(d);
	for (size_t k = 0; k < 3; k++) {
		put_boundary(d, false);
		buf_puts(&d->out, part_headers[k]);
		if (k == 2 && d->eight_bit)
			put_field(&d->out, "Content-Transfer-Encoding", "",
				  "8bit");
		buf_crlf(&d->out);
		buf_put(&d->out, buf_str(&d->part[k]), d->part[k].len);
	}
	put_boundary(d, true);
}

static bool any_oom(struct dsn *d)
{
	struct buf *all[N_BUFS];

	list_bufs(d, all);
	for (size_t i = 0; i < N_BUFS; i++)
		if (all[i]->oom)
			return true;
	return false;
}

static void free_dsn(struct dsn *d, bool keep_out)
{
	struct buf *all[N_BUFS];

	list_bufs(d, all);
	for (size_t i = 0; i < N_BUFS; i++)
		if (all[i] != &d->out || !keep_out)
			free(all[i]->p);
}

char *dsn_build(const struct dsn_input *in, size_t *len)
{
	struct dsn d = {.in = in};
	bool ok;

	if (len != NULL)
		*len = 0;
	if (in == NULL || len == NULL)
		return NULL;
	ok = prepare(&d) && !any_oom(&d);
	if (ok) {
		write_notice(&d, &d.part[0]);
		write_report(&d, &d.part[1]);
		copy_headers(&d, &d.part[2]);
		ok = !any_oom(&d) && pick_boundary(&d);
	}
	if (ok) {
		assemble(&d);
		ok = !any_oom(&d);
	}
	free_dsn(&d, ok);
	if (!ok)
		return NULL;
	*len = d.out.len;
	return d.out.p;
}
