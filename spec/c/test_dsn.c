/*
 * Unit tests for src/dsn.c. Prints TAP (one "ok N - ..." line per
 * assertion, then "1..N") and exits 1 if any assertion failed.
 *
 * Each DSN is taken apart here by a small reader of its own (header
 * fields, unfolding, MIME parts), so the tests say what a receiver would
 * see rather than which octets dsn.c happens to write. With "--dump DIR"
 * every DSN built is also written to DIR/NN.eml, for
 * spec/c/test_dsn_email.py to hand to Python's email parser.
 */
#include "tap.h"
#include "proto/dsn.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define QID	  "0123456789abcdef"
#define HOST	  "mx.example.test"
#define SENDER	  "sender@example.org"
#define T_ARRIVAL ((time_t)1700000000) /* Tue, 14 Nov 2023 22:13:20 */
#define T_NOW	  ((time_t)1700003600) /* an hour later */
#define ARRIVAL	  "Tue, 14 Nov 2023 22:13:20 +0000"
#define NOW	  "Tue, 14 Nov 2023 23:13:20 +0000"

/* RFC 2046 bchars, less the space that dsn.c never uses. */
#define BCHARS                                                                 \
	"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"       \
	"'()+_,-./:=?"

static const char HEADERS[] =
	"Received: from client.example.org (client.example.org [192.0.2.1])\r\n"
	"\tby mx.example.test (smtpgw) with ESMTP id 0123456789abcdef\r\n"
	"From: Sender <sender@example.org>\r\n"
	"To: user@example.test\r\n"
	"Subject: quarterly report\r\n"
	"Message-Id: <abc@client.example.org>\r\n";

static const char *dump_dir;
static int dump_num;


/* ---- reading a DSN back ---- */

struct span {
	const char *p;
	size_t len;
};

struct msg {
	char *p;
	size_t len;
	struct span head;  /* the top header section, up to its empty line */
	struct span body;  /* after the empty line */
	char boundary[128];
	size_t n_parts;
	struct span part[8];	 /* each part, its headers included */
	struct span part_head[8];
	struct span part_body[8];
	bool closed;		 /* "--boundary--" is the last line */
	size_t delimiters;	 /* lines "--boundary" and "--boundary--" */
};

/* The offset just after the first "\r\n\r\n" of s, or n if none. */
static size_t after_blank_line(const char *s, size_t n)
{
	const char *e = memmem(s, n, "\r\n\r\n", 4);
	return e ? (size_t)(e - s) + 4 : n;
}

/* The next CRLF line of s from *pos; false at the end. */
static bool next_line(struct span s, size_t *pos, struct span *line)
{
	if (*pos >= s.len)
		return false;
	const char *start = s.p + *pos;
	const char *e = memmem(start, s.len - *pos, "\r\n", 2);
	size_t n = e ? (size_t)(e - start) : s.len - *pos;
	line->p = start;
	line->len = n;
	*pos += n + (e ? 2 : 0);
	return true;
}

static bool line_is(struct span line, const char *want)
{
	return line.len == strlen(want) && memcmp(line.p, want, line.len) == 0;
}

/*
 * The nth (from 0) field called name in the header section sec, unfolded
 * (RFC 5322 §2.2.3: CRLFs removed) and without the white space after the
 * colon, as a malloc'd string; NULL if there is no such field.
 */
static char *field(struct span sec, const char *name, size_t nth)
{
	size_t pos = 0, nlen = strlen(name);
	struct span line;
	char *out = NULL;
	size_t olen = 0;

	while (next_line(sec, &pos, &line) && line.len > 0) {
		bool cont = line.p[0] == ' ' || line.p[0] == '\t';
		if (out != NULL && !cont)
			break;
		if (out == NULL && (cont || line.len <= nlen ||
				    line.p[nlen] != ':' ||
				    strncasecmp(line.p, name, nlen) != 0))
			continue;
		if (out == NULL && nth-- > 0)
			continue;
		size_t skip = out == NULL ? nlen + 1 : 0;
		if (out == NULL)
			while (skip < line.len && line.p[skip] == ' ')
				skip++;
		out = realloc(out, olen + line.len - skip + 1);
		if (out == NULL)
			abort();
		memcpy(out + olen, line.p + skip, line.len - skip);
		olen += line.len - skip;
		out[olen] = '\0';
	}
	return out;
}

static size_t count_fields(struct span sec, const char *name)
{
	size_t n = 0;
	char *v;

	while ((v = field(sec, name, n)) != NULL) {
		free(v);
		n++;
	}
	return n;
}

static bool field_is(struct span sec, const char *name, size_t nth,
		     const char *want)
{
	char *v = field(sec, name, nth);
	bool ok = v != NULL && strcmp(v, want) == 0;

	if (!ok)
		printf("# %s: got \"%s\", want \"%s\"\n", name,
		       v ? v : "(none)", want);
	free(v);
	return ok;
}

static bool field_starts(struct span sec, const char *name, const char *want)
{
	char *v = field(sec, name, 0);
	bool ok = v != NULL && strncmp(v, want, strlen(want)) == 0;

	free(v);
	return ok;
}

/* Group k of a delivery-status body: 0 is the per-message fields, then one
 * per recipient (RFC 3464 §2.1: groups are separated by empty lines). */
static struct span group(struct span body, size_t k)
{
	size_t start = 0, end = after_blank_line(body.p, body.len);

	while (k-- > 0 && start < body.len) {
		start = end;
		end += after_blank_line(body.p + end, body.len - end);
	}
	return (struct span){body.p + start, end - start};
}

static void take_boundary(struct msg *m)
{
	char *ct = field(m->head, "Content-Type", 0);
	const char *b = ct ? strstr(ct, "boundary=\"") : NULL;
	const char *e = b ? strchr(b + 10, '"') : NULL;

	m->boundary[0] = '\0';
	if (e != NULL && (size_t)(e - b - 10) < sizeof(m->boundary)) {
		memcpy(m->boundary, b + 10, (size_t)(e - b - 10));
		m->boundary[e - b - 10] = '\0';
	}
	free(ct);
}

/* Ends the part that started at from, at the CRLF before the line at at. */
static void end_part(struct msg *m, const char *from, const char *at)
{
	size_t k = m->n_parts;
	struct span *p = &m->part[k];

	if (k >= 8)
		return;
	p->p = from;
	p->len = (size_t)(at - from) >= 2 ? (size_t)(at - from) - 2 : 0;
	size_t h = after_blank_line(p->p, p->len);
	m->part_head[k] = (struct span){p->p, h};
	m->part_body[k] = (struct span){p->p + h, p->len - h};
	m->n_parts++;
}

/* Splits the body at its delimiter lines (RFC 2046 §5.1.1). */
static void take_parts(struct msg *m)
{
	char open[140], close[140];
	size_t pos = 0;
	struct span line;
	const char *start = NULL;

	snprintf(open, sizeof(open), "--%s", m->boundary);
	snprintf(close, sizeof(close), "--%s--", m->boundary);
	while (next_line(m->body, &pos, &line)) {
		bool last = line_is(line, close);
		if (!last && !line_is(line, open))
			continue;
		m->delimiters++;
		if (start != NULL)
			end_part(m, start, line.p);
		start = line.p + line.len + 2;
		if (last) {
			m->closed = pos == m->body.len;
			break;
		}
	}
}

static void parse(struct msg *m)
{
	size_t h = after_blank_line(m->p, m->len);

	m->head = (struct span){m->p, h};
	m->body = (struct span){m->p + h, m->len - h};
	take_boundary(m);
	if (m->boundary[0] != '\0')
		take_parts(m);
}

/* Every line ends in CRLF, is at most 998 octets, has no NUL. */
static bool lines_ok(const char *s, size_t n, size_t *longest)
{
	size_t col = 0;

	*longest = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '\0')
			return false;
		if (s[i] == '\n')
			return false; /* a CRLF's LF is skipped below */
		if (s[i] == '\r') {
			if (i + 1 >= n || s[i + 1] != '\n')
				return false;
			i++;
			col = 0;
			continue;
		}
		if (++col > *longest)
			*longest = col;
	}
	return n >= 2 && s[n - 2] == '\r' && s[n - 1] == '\n' &&
	       *longest <= 998;
}

/* The longest line of a span (CRLF lines). */
static size_t widest(struct span s)
{
	size_t pos = 0, w = 0;
	struct span line;

	while (next_line(s, &pos, &line))
		if (line.len > w)
			w = line.len;
	return w;
}

/* Does a line of s start with prefix (ASCII case ignored)? */
static bool any_line_starts(struct span s, const char *prefix)
{
	size_t pos = 0, n = strlen(prefix);
	struct span line;

	while (next_line(s, &pos, &line))
		if (line.len >= n && strncasecmp(line.p, prefix, n) == 0)
			return true;
	return false;
}

static size_t occurrences(struct span s, const char *needle)
{
	size_t n = 0, len = strlen(needle);
	const char *p = s.p, *end = s.p + s.len;

	while ((p = memmem(p, (size_t)(end - p), needle, len)) != NULL) {
		n++;
		p += len;
	}
	return n;
}

static bool has_8bit(struct span s)
{
	for (size_t i = 0; i < s.len; i++)
		if ((unsigned char)s.p[i] >= 0x80)
			return true;
	return false;
}

static void dump(const struct msg *m)
{
	char path[4096];
	FILE *f;

	if (dump_dir == NULL)
		return;
	snprintf(path, sizeof(path), "%s/%02d.eml", dump_dir, ++dump_num);
	f = fopen(path, "wb");
	if (f == NULL || fwrite(m->p, 1, m->len, f) != m->len ||
	    fclose(f) != 0) {
		fprintf(stderr, "cannot write %s\n", path);
		exit(2);
	}
}

/*
 * Builds a DSN and reads it back; every DSN built gets the line check, so
 * "CRLF everywhere, no line over 998" is asserted for each scenario.
 */
static bool build(const struct dsn_input *in, struct msg *m, const char *what)
{
	size_t longest = 0;

	memset(m, 0, sizeof(*m));
	m->p = dsn_build(in, &m->len);
	check(m->p != NULL, "%s: built", what);
	if (m->p == NULL)
		return false;
	check(lines_ok(m->p, m->len, &longest),
	      "%s: every line ends in CRLF, none over 998 (longest %zu)", what,
	      longest);
	dump(m);
	parse(m);
	return true;
}

static void release(struct msg *m)
{
	free(m->p);
	m->p = NULL;
}

static struct dsn_input input(const struct dsn_rcpt *r, size_t n)
{
	struct dsn_input in = {
		.hostname = HOST,
		.qid = QID,
		.sender = SENDER,
		.arrival = T_ARRIVAL,
		.now = T_NOW,
		.rcpts = r,
		.n_rcpts = n,
		.headers = HEADERS,
		.headers_len = sizeof(HEADERS) - 1,
	};
	return in;
}

static const struct dsn_rcpt RCPT_550 = {
	.address = "user@example.test",
	.action = DSN_FAILED,
	.status = "5.1.1",
	.remote_mta = "mx2.example.test",
	.diagnostic = "550 5.1.1 <user@example.test>: no such user",
};

static const struct dsn_rcpt RCPT_DELAYED = {
	.address = "late@example.net",
	.action = DSN_DELAYED,
	.status = "4.4.1",
	.remote_mta = NULL,
	.diagnostic = "connect to mx.example.net[192.0.2.9]:25: timed out",
};

/* ---- the tests ---- */

static void test_top_header(void)
{
	struct dsn_input in = input(&RCPT_550, 1);
	struct msg m;

	if (!build(&in, &m, "one failed recipient"))
		return;
	check(field_is(m.head, "From", 0,
		       "MAILER-DAEMON@" HOST " (Mail Delivery System)"),
	      "From: MAILER-DAEMON@host (Mail Delivery System)");
	check(field_is(m.head, "To", 0, "<" SENDER ">"), "To: <sender>");
	check(field_is(m.head, "Subject", 0,
		       "Undelivered Mail Returned to Sender"),
	      "Subject says undelivered");
	check(field_is(m.head, "Date", 0, NOW), "Date is now, RFC 5322, UTC");
	check(field_starts(m.head, "Message-Id", "<20231114231320." QID "."),
	      "Message-Id starts with the time and the queue id");
	char *id = field(m.head, "Message-Id", 0);
	size_t idlen = id ? strlen(id) : 0;
	check(id != NULL && idlen > strlen("@" HOST ">") &&
		      strcmp(id + idlen - strlen("@" HOST ">"), "@" HOST ">") ==
			      0 &&
		      strchr(id, ' ') == NULL,
	      "Message-Id ends in @hostname> and has no space (%s)",
	      id ? id : "none");
	free(id);
	check(field_is(m.head, "Auto-Submitted", 0, "auto-replied"),
	      "Auto-Submitted: auto-replied");
	check(field_is(m.head, "MIME-Version", 0, "1.0"), "MIME-Version: 1.0");
	check(field_starts(m.head, "Content-Type",
			   "multipart/report; report-type=delivery-status; "
			   "boundary=\""),
	      "Content-Type: multipart/report; report-type=delivery-status");
	check(m.boundary[0] != '\0' && strlen(m.boundary) <= 70 &&
		      strspn(m.boundary, BCHARS) == strlen(m.boundary),
	      "boundary is 1-70 bchars without space (%s)", m.boundary);
	check(count_fields(m.head, "Content-Transfer-Encoding") == 0,
	      "no Content-Transfer-Encoding for 7-bit headers");
	const char *const once[] = {"From",	      "To",
				    "Subject",	      "Date",
				    "Message-Id",     "Auto-Submitted",
				    "MIME-Version",   "Content-Type"};
	for (size_t i = 0; i < sizeof(once) / sizeof(once[0]); i++)
		check(count_fields(m.head, once[i]) == 1, "one %s field",
		      once[i]);
	check(!has_8bit((struct span){m.p, m.len}), "the DSN is 7-bit");
	release(&m);
}

static void test_structure(void)
{
	struct dsn_input in = input(&RCPT_550, 1);
	struct msg m;
	char line[160];

	if (!build(&in, &m, "structure"))
		return;
	check(m.n_parts == 3, "three parts (got %zu)", m.n_parts);
	check(m.delimiters == 4, "three delimiter lines and a close (got %zu)",
	      m.delimiters);
	check(m.closed, "the close delimiter is the last line");
	snprintf(line, sizeof(line), "\r\n--%s\r\n", m.boundary);
	check(m.body.len > 0 && memmem(m.body.p, m.body.len, line,
				       strlen(line)) > (void *)m.body.p,
	      "a preamble comes before the first delimiter");
	if (m.n_parts != 3) {
		release(&m);
		return;
	}
	check(field_is(m.part_head[0], "Content-Type", 0,
		       "text/plain; charset=us-ascii"),
	      "part 1 is text/plain; charset=us-ascii");
	check(field_is(m.part_head[1], "Content-Type", 0,
		       "message/delivery-status"),
	      "part 2 is message/delivery-status");
	check(field_is(m.part_head[2], "Content-Type", 0,
		       "text/rfc822-headers"),
	      "part 3 is text/rfc822-headers");
	for (size_t k = 0; k < 3; k++)
		check(m.part_head[k].len >= 4 &&
			      memcmp(m.part_head[k].p + m.part_head[k].len - 4,
				     "\r\n\r\n", 4) == 0,
		      "part %zu has a header section and an empty line", k + 1);
	check(occurrences((struct span){m.p, m.len}, m.boundary) == 5,
	      "the boundary occurs only in Content-Type and the delimiters");
	release(&m);
}

static void test_report_fields(void)
{
	struct dsn_input in = input(&RCPT_550, 1);
	struct msg m;

	if (!build(&in, &m, "report fields") || m.n_parts != 3) {
		release(&m);
		return;
	}
	struct span per_msg = group(m.part_body[1], 0);
	struct span rcpt = group(m.part_body[1], 1);

	check(field_is(per_msg, "Reporting-MTA", 0, "dns; " HOST),
	      "Reporting-MTA: dns; hostname");
	check(field_is(per_msg, "X-Smtpgw-Queue-ID", 0, QID),
	      "X-Smtpgw-Queue-ID: qid");
	check(field_is(per_msg, "X-Smtpgw-Sender", 0, "rfc822; " SENDER),
	      "X-Smtpgw-Sender: rfc822; sender");
	check(field_is(per_msg, "Arrival-Date", 0, ARRIVAL),
	      "Arrival-Date is the arrival time");
	check(count_fields(per_msg, "Final-Recipient") == 0,
	      "the per-message group ends with an empty line");
	check(field_is(rcpt, "Final-Recipient", 0,
		       "rfc822; user@example.test"),
	      "Final-Recipient: rfc822; address");
	check(field_is(rcpt, "Action", 0, "failed"), "Action: failed");
	check(field_is(rcpt, "Status", 0, "5.1.1"), "Status: 5.1.1");
	check(field_is(rcpt, "Remote-MTA", 0, "dns; mx2.example.test"),
	      "Remote-MTA: dns; remote");
	check(field_is(rcpt, "Diagnostic-Code", 0,
		       "smtp; 550 5.1.1 <user@example.test>: no such user"),
	      "Diagnostic-Code: smtp; the remote reply");
	check(field_is(rcpt, "Last-Attempt-Date", 0, NOW),
	      "Last-Attempt-Date is now");
	check(widest(m.part_body[1]) <= 78, "report lines fit 78 columns");

	struct span notice = m.part_body[0];
	check(occurrences(notice, HOST) == 1 && occurrences(notice, QID) == 1,
	      "the notice names the reporting host and the queue id");
	check(occurrences(notice, "<user@example.test>: delivery failed") == 1,
	      "the notice names the recipient and that it failed");
	check(occurrences(notice, "5.1.1 <user@example.test>: no such user") ==
		      1,
	      "the notice gives the remote reply");
	check(widest(notice) <= 76, "notice lines fit 76 columns (widest %zu)",
	      widest(notice));
	check(m.part_body[2].len == sizeof(HEADERS) - 1 &&
		      memcmp(m.part_body[2].p, HEADERS, sizeof(HEADERS) - 1) ==
			      0,
	      "part 3 is the original header section as given");
	release(&m);
}

static void test_subjects(void)
{
	struct dsn_rcpt late2 = RCPT_DELAYED;
	late2.address = "late2@example.net";
	const struct dsn_rcpt delayed[] = {RCPT_DELAYED, late2};
	const struct dsn_rcpt mixed[] = {RCPT_DELAYED, RCPT_550};
	struct dsn_input in = input(delayed, 2);
	struct msg m;

	if (build(&in, &m, "all delayed")) {
		check(field_is(m.head, "Subject", 0,
			       "Delayed Mail (still being retried)"),
		      "every recipient delayed: Subject says delayed");
		check(field_is(group(m.part_body[1], 2), "Action", 0,
			       "delayed"),
		      "Action: delayed");
		check(occurrences(m.part_body[0], "not yet been delivered") ==
			      1,
		      "the notice says not yet delivered");
		release(&m);
	}
	in = input(mixed, 2);
	if (build(&in, &m, "mixed")) {
		check(field_is(m.head, "Subject", 0,
			       "Undelivered Mail Returned to Sender"),
		      "one failed, one delayed: Subject says undelivered");
		check(occurrences(m.part_body[0], "still being retried") >= 1,
		      "the notice says which are still being retried");
		release(&m);
	}
}

static void test_multiple(void)
{
	struct dsn_rcpt three = RCPT_550;
	three.address = "third@example.test";
	three.remote_mta = NULL;
	three.diagnostic = NULL;
	const struct dsn_rcpt r[] = {RCPT_550, RCPT_DELAYED, three};
	struct dsn_input in = input(r, 3);
	struct msg m;
	const char *const addr[] = {"rfc822; user@example.test",
				    "rfc822; late@example.net",
				    "rfc822; third@example.test"};
	const char *const action[] = {"failed", "delayed", "failed"};

	if (!build(&in, &m, "three recipients") || m.n_parts != 3) {
		release(&m);
		return;
	}
	struct span rep = m.part_body[1];
	for (size_t i = 0; i < 3; i++) {
		struct span g = group(rep, i + 1);
		check(field_is(g, "Final-Recipient", 0, addr[i]) &&
			      field_is(g, "Action", 0, action[i]) &&
			      occurrences(g, "Final-Recipient:") == 1,
		      "group %zu is %s, %s, alone", i + 1, addr[i], action[i]);
	}
	check(group(rep, 4).len == 0, "and there is no fourth group");
	check(occurrences(rep, "Final-Recipient:") == 3,
	      "three Final-Recipient fields");
	check(occurrences(rep, "Last-Attempt-Date:") == 3,
	      "three Last-Attempt-Date fields");
	check(occurrences(rep, "Remote-MTA:") == 1 &&
		      occurrences(rep, "Diagnostic-Code:") == 2,
	      "Remote-MTA and Diagnostic-Code only where given");
	const char *u = strstr(m.part_body[0].p, "<user@example.test>");
	const char *l = strstr(m.part_body[0].p, "<late@example.net>");
	const char *t = strstr(m.part_body[0].p, "<third@example.test>");
	check(u && l && t && u < l && l < t,
	      "the notice lists the recipients in order");
	check(occurrences(m.part_body[0], "timed out") == 1,
	      "the notice gives the local reason");
	release(&m);
}

static void test_folding(void)
{
	char words[2001], word[2001];
	struct dsn_rcpt r = RCPT_550;
	struct dsn_input in = input(&r, 1);
	struct msg m;

	/* "550 5.1.1 " and then 8-letter words, 2000 octets in all. */
	memcpy(words, "550 5.1.1 ", 10);
	for (size_t i = 10; i < 2000; i++)
		words[i] = (i - 10) % 9 == 8 ? ' ' : (char)('a' + i % 26);
	words[1999] = 'z';
	words[2000] = '\0';
	r.diagnostic = words;
	if (build(&in, &m, "2000-octet diagnostic with spaces")) {
		char *v = field(group(m.part_body[1], 1), "Diagnostic-Code", 0);
		check(v != NULL && strncmp(v, "smtp; ", 6) == 0 &&
			      strcmp(v + 6, words) == 0,
		      "unfolding restores the diagnostic exactly");
		free(v);
		check(widest(m.part_body[1]) <= 78,
		      "folded at spaces within 78 columns (widest %zu)",
		      widest(m.part_body[1]));
		check(occurrences(m.part_body[1], "\r\n ") >= 2000 / 78,
		      "folded into many continuation lines");
		check(widest(m.part_body[0]) <= 76,
		      "the notice wraps it within 76 columns");
		release(&m);
	}

	memset(word, 'x', 2000);
	word[2000] = '\0';
	r.diagnostic = word;
	r.address = word; /* an absurd address, too */
	if (build(&in, &m, "2000-octet diagnostic without a space")) {
		char *v = field(group(m.part_body[1], 1), "Diagnostic-Code", 0);
		size_t xs = 0;
		for (const char *p = v; p && *p; p++)
			xs += *p == 'x';
		check(v != NULL && strncmp(v, "X-Smtpgw; ", 10) == 0 &&
			      xs == 2000,
		      "a word over 998 octets is broken, not lost (%zu)", xs);
		free(v);
		v = field(group(m.part_body[1], 1), "Final-Recipient", 0);
		xs = 0;
		for (const char *p = v; p && *p; p++)
			xs += *p == 'x';
		check(xs == 2000, "so is an address over 998 octets");
		free(v);
		check(widest(m.part_body[1]) == 998,
		      "broken at exactly 998 octets (widest %zu)",
		      widest(m.part_body[1]));
		release(&m);
	}

	char *huge = malloc(100001);
	if (huge == NULL)
		abort();
	for (size_t i = 0; i < 100000; i++)
		huge[i] = i % 10 == 9 ? ' ' : 'y';
	huge[100000] = '\0';
	r = RCPT_550;
	r.diagnostic = huge;
	if (build(&in, &m, "100000-octet diagnostic")) {
		char *v = field(group(m.part_body[1], 1), "Diagnostic-Code", 0);
		size_t n = v ? strlen(v) : 0;
		check(n > 1000 && n <= strlen("X-Smtpgw; ") + 4096 &&
			      strcmp(v + n - 3, "...") == 0,
		      "is cut to a sane length, marked with ... (%zu)", n);
		free(v);
		release(&m);
	}
	free(huge);
}

static void test_injection(void)
{
	struct dsn_rcpt r = {
		.address = "victim@example.test\r\nX-Injected: rcpt",
		.action = DSN_FAILED,
		.status = "5.7.1\r\nX-Injected: status",
		.remote_mta = "mx.evil.test\nX-Injected: mta",
		.diagnostic = "550 no\r\nBcc: evil@attacker.test\r\n\r\n"
			      "--frontier\rX-Injected: cr\x01\x1b[0m\t\x7f"
			      "caf\xc3\xa9",
	};
	struct dsn_input in = input(&r, 1);
	struct msg m;

	in.sender = "sender@example.org\r\nBcc: evil@attacker.test";
	in.hostname = "mx.example.test\r\nX-Injected: host";
	in.qid = "0123\nX-Injected: qid";
	if (!build(&in, &m, "CR, LF and controls in every input"))
		return;
	struct span all = {m.p, m.len};
	check(!any_line_starts(all, "Bcc:"), "no line starts with Bcc:");
	check(!any_line_starts(all, "X-Injected"),
	      "no line starts with X-Injected");
	check(!any_line_starts(all, "--frontier"),
	      "no line starts with an injected delimiter");
	check(count_fields(m.head, "To") == 1 &&
		      count_fields(m.head, "Bcc") == 0,
	      "one To field, no Bcc field");
	check(field_is(m.head, "To", 0,
		       "<sender@example.org Bcc: evil@attacker.test>"),
	      "the sender stays inside To:, on one logical line");
	check(m.n_parts == 3 && m.closed, "still three parts, closed");
	if (m.n_parts == 3) {
		struct span rep = group(m.part_body[1], 1);
		check(field_is(rep, "Diagnostic-Code", 0,
			       "smtp; 550 no Bcc: evil@attacker.test "
			       "--frontier X-Injected: cr [0m caf??"),
		      "controls become one space, 8-bit octets '?'");
		check(field_is(rep, "Final-Recipient", 0,
			       "rfc822; victim@example.test X-Injected: rcpt"),
		      "the address stays inside Final-Recipient");
		check(field_is(rep, "Status", 0, "5.0.0"),
		      "a malformed status becomes 5.0.0");
		check(field_is(rep, "Remote-MTA", 0,
			       "dns; mx.evil.test X-Injected: mta"),
		      "the remote MTA stays inside Remote-MTA");
		struct span per_msg = group(m.part_body[1], 0);
		check(field_starts(per_msg, "Reporting-MTA",
				   "dns; mx.example.test") &&
			      count_fields(per_msg, "X-Injected") == 0,
		      "the hostname stays inside Reporting-MTA");
	}
	char *id = field(m.head, "Message-Id", 0);
	check(id != NULL && strchr(id, ' ') == NULL && strchr(id, ':') == NULL,
	      "Message-Id has no space or colon (%s)", id ? id : "none");
	free(id);
	check(!has_8bit(all), "8-bit input octets do not make the DSN 8-bit");
	release(&m);
}

/* The boundary of a DSN built from in, into out. */
static bool boundary_of(const struct dsn_input *in, char *out, size_t cap,
			const char *what)
{
	struct msg m;

	if (!build(in, &m, what))
		return false;
	snprintf(out, cap, "%s", m.boundary);
	release(&m);
	return out[0] != '\0';
}

static void test_boundary(void)
{
	static const char alnum[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
				    "abcdefghijklmnopqrstuvwxyz";
	struct dsn_rcpt r = RCPT_550;
	struct dsn_input in = input(&r, 1);
	char first[128], diag[256];
	struct msg m;

	if (!boundary_of(&in, first, sizeof(first), "plain boundary"))
		return;
	/* The original headers carry that very boundary as a delimiter. */
	size_t cap = sizeof(HEADERS) + 64 * (sizeof(first) + 8);
	char *h = malloc(cap);
	if (h == NULL)
		abort();
	int n = snprintf(h, cap, "%sX-Trap: --%s\r\n--%s\r\n", HEADERS, first,
			 first);
	in.headers = h;
	in.headers_len = (size_t)n;
	if (build(&in, &m, "headers containing the boundary")) {
		struct span all = {m.p, m.len};
		check(strcmp(m.boundary, first) != 0,
		      "the boundary changes (%s)", m.boundary);
		check(occurrences(all, m.boundary) == 5,
		      "the new one occurs only where it belongs");
		check(m.n_parts == 3 && m.closed, "still three parts");
		check(m.n_parts == 3 && occurrences(m.part_body[2], first) == 2,
		      "the headers are kept as given");
		release(&m);
	}

	/* Every one-letter variant of it, in the headers and a diagnostic. */
	size_t len = (size_t)n;
	for (size_t i = 0; i + 1 < sizeof(alnum); i++)
		len += (size_t)snprintf(h + len, cap - len, "X-%zu: %s%c\r\n",
					i, first, alnum[i]);
	in.headers_len = len;
	snprintf(diag, sizeof(diag), "550 %s", first);
	r.diagnostic = diag;
	if (build(&in, &m, "headers containing every variant")) {
		struct span all = {m.p, m.len};
		check(occurrences(all, m.boundary) == 5 && m.n_parts == 3 &&
			      m.closed && strlen(m.boundary) <= 70,
		      "a boundary is still found (%s)", m.boundary);
		release(&m);
	}
	free(h);

	in = input(&RCPT_550, 1);
	in.now = T_NOW + 1;
	char other[128];
	if (boundary_of(&in, other, sizeof(other), "a second later"))
		check(strcmp(first, other) != 0,
		      "the boundary depends on the time");
}

static void test_status_and_diagnostics(void)
{
	static const struct {
		enum dsn_action action;
		const char *status, *want;
	} st[] = {
		{DSN_FAILED, NULL, "5.0.0"},	{DSN_DELAYED, NULL, "4.0.0"},
		{DSN_FAILED, "", "5.0.0"},	{DSN_FAILED, "5.1", "5.0.0"},
		{DSN_FAILED, "5.1.1 ", "5.0.0"}, {DSN_FAILED, "6.1.1", "5.0.0"},
		{DSN_FAILED, "5.1234.1", "5.0.0"},
		{DSN_DELAYED, "4.4.7", "4.4.7"}, {DSN_FAILED, "4.4.1", "4.4.1"},
		{DSN_FAILED, "5.999.999", "5.999.999"},
	};
	static const struct {
		const char *diag, *want;
	} dg[] = {
		{"550 5.1.1 no", "smtp; 550 5.1.1 no"},
		{"421-4.3.2 busy\r\n421 4.3.2 busy",
		 "smtp; 421-4.3.2 busy 421 4.3.2 busy"},
		{"554", "smtp; 554"},
		{"5501 odd", "X-Smtpgw; 5501 odd"},
		{"650 odd", "X-Smtpgw; 650 odd"},
		{"  \t550 spaced", "smtp; 550 spaced"},
		{"no route to host", "X-Smtpgw; no route to host"},
	};
	struct dsn_rcpt r = RCPT_550;
	struct dsn_input in = input(&r, 1);
	struct msg m;
	char what[128];

	for (size_t i = 0; i < sizeof(st) / sizeof(st[0]); i++) {
		r.action = st[i].action;
		r.status = st[i].status;
		snprintf(what, sizeof(what), "status \"%s\"",
			 st[i].status ? st[i].status : "(null)");
		if (!build(&in, &m, what))
			continue;
		check(field_is(group(m.part_body[1], 1), "Status", 0,
			       st[i].want),
		      "status \"%s\" gives Status: %s",
		      st[i].status ? st[i].status : "(null)", st[i].want);
		release(&m);
	}
	r = RCPT_550;
	for (size_t i = 0; i < sizeof(dg) / sizeof(dg[0]); i++) {
		r.diagnostic = dg[i].diag;
		snprintf(what, sizeof(what), "diagnostic %zu", i);
		if (!build(&in, &m, what))
			continue;
		check(field_is(group(m.part_body[1], 1), "Diagnostic-Code", 0,
			       dg[i].want),
		      "Diagnostic-Code: %s", dg[i].want);
		release(&m);
	}
	r.remote_mta = " \r\n";
	r.diagnostic = "\t";
	if (build(&in, &m, "blank remote and diagnostic")) {
		struct span g = group(m.part_body[1], 1);
		check(count_fields(g, "Remote-MTA") == 0 &&
			      count_fields(g, "Diagnostic-Code") == 0,
		      "blank values give no Remote-MTA or Diagnostic-Code");
		release(&m);
	}
}

static void test_original_headers(void)
{
	static const char messy[] =
		"Subject: a\nX-Bare-CR: b\rX-Nul: c\0d\r\nX-Tab:\te\r\n"
		"\r\nbody line\r\n";
	static const char want[] = "Subject: a\r\nX-Bare-CR: b\r\n"
				   "X-Nul: c?d\r\nX-Tab:\te\r\n";
	struct dsn_input in = input(&RCPT_550, 1);
	struct msg m;

	in.headers = messy;
	in.headers_len = sizeof(messy) - 1;
	if (build(&in, &m, "messy headers") && m.n_parts == 3) {
		check(m.part_body[2].len == sizeof(want) - 1 &&
			      memcmp(m.part_body[2].p, want,
				     sizeof(want) - 1) == 0,
		      "bare LF/CR end lines, NUL becomes ?, HT kept, "
		      "copy stops at the empty line");
		release(&m);
	}

	static const char eight[] = "Subject: caf\xc3\xa9\r\n";
	in.headers = eight;
	in.headers_len = sizeof(eight) - 1;
	if (build(&in, &m, "8-bit headers") && m.n_parts == 3) {
		check(field_is(m.head, "Content-Transfer-Encoding", 0, "8bit"),
		      "8-bit headers: the DSN says 8bit");
		check(field_is(m.part_head[2], "Content-Transfer-Encoding", 0,
			       "8bit"),
		      "and so does part 3");
		check(occurrences(m.part_body[2], "caf\xc3\xa9") == 1,
		      "the 8-bit octets are kept");
		release(&m);
	}

	char *longh = malloc(3000);
	if (longh == NULL)
		abort();
	memcpy(longh, "X-Long: ", 8);
	memset(longh + 8, 'q', 2500);
	memcpy(longh + 2508, "\r\n", 2);
	in.headers = longh;
	in.headers_len = 2510;
	if (build(&in, &m, "a 2508-octet header line") && m.n_parts == 3) {
		char *v = field(m.part_body[2], "X-Long", 0);
		size_t qs = 0;
		for (const char *p = v; p && *p; p++)
			qs += *p == 'q';
		check(qs == 2500 && count_fields(m.part_body[2], "X-Long") == 1,
		      "is folded into one field, every octet kept");
		free(v);
		release(&m);
	}
	free(longh);

	in.headers = NULL;
	in.headers_len = 0;
	if (build(&in, &m, "no headers")) {
		check(m.n_parts == 3 && m.part_body[2].len == 0,
		      "no headers: an empty part 3");
		release(&m);
	}
	static const char unterminated[] = "Subject: no CRLF at the end";
	in.headers = unterminated;
	in.headers_len = sizeof(unterminated) - 1;
	if (build(&in, &m, "unterminated headers") && m.n_parts == 3) {
		check(m.part_body[2].len == sizeof(unterminated) + 1,
		      "a last line without CRLF gets one");
		release(&m);
	}
}

static void test_dates_and_ids(void)
{
	struct dsn_input in = input(&RCPT_550, 1);
	struct msg m;
	char *id1 = NULL, *id2 = NULL, *id3 = NULL;

	in.arrival = 0;
	in.now = 951782400;
	if (build(&in, &m, "epoch and leap day")) {
		check(field_is(m.part_body[1], "Arrival-Date", 0,
			       "Thu, 01 Jan 1970 00:00:00 +0000"),
		      "Arrival-Date at the epoch");
		check(field_is(m.head, "Date", 0,
			       "Tue, 29 Feb 2000 00:00:00 +0000"),
		      "Date on a leap day");
		release(&m);
	}
	in = input(&RCPT_550, 1);
	if (build(&in, &m, "id, first")) {
		id1 = field(m.head, "Message-Id", 0);
		release(&m);
	}
	if (build(&in, &m, "id, again")) {
		id2 = field(m.head, "Message-Id", 0);
		release(&m);
	}
	in = input(&RCPT_DELAYED, 1);
	if (build(&in, &m, "id, a delay notice")) {
		id3 = field(m.head, "Message-Id", 0);
		release(&m);
	}
	check(id1 && id2 && strcmp(id1, id2) == 0,
	      "the same input gives the same Message-Id");
	check(id1 && id3 && strcmp(id1, id3) != 0,
	      "another DSN for the same queue id at the same time differs");
	free(id1);
	free(id2);
	free(id3);
}

static void test_addresses(void)
{
	struct dsn_rcpt r = RCPT_550;
	struct dsn_input in = input(&r, 1);
	struct msg m;

	r.address = "<user@example.test>";
	in.sender = "< sender@example.org >";
	if (!build(&in, &m, "bracketed addresses"))
		return;
	check(field_is(m.head, "To", 0, "<" SENDER ">"),
	      "a bracketed sender is not bracketed twice");
	check(field_is(group(m.part_body[1], 1), "Final-Recipient", 0,
		       "rfc822; user@example.test"),
	      "Final-Recipient has no brackets");
	release(&m);

	char host[600];
	memset(host, 'h', sizeof(host) - 1);
	host[sizeof(host) - 1] = '\0';
	in.hostname = host;
	if (build(&in, &m, "a 599-octet hostname")) {
		char *id = field(m.head, "Message-Id", 0);
		check(id != NULL && strlen(id) < 400,
		      "the hostname is cut before it goes in the Message-Id");
		free(id);
		release(&m);
	}
}

static void refused(const struct dsn_input *in, const char *what)
{
	size_t len = 12345;
	char *p = dsn_build(in, &len);

	check(p == NULL && len == 0, "refused: %s", what);
	free(p);
}

static void test_refusals(void)
{
	struct dsn_rcpt r = RCPT_550;
	struct dsn_input in = input(&r, 1);

	refused(NULL, "no input");
	check(dsn_build(&in, NULL) == NULL, "refused: no len");
	in.sender = NULL;
	refused(&in, "NULL sender");
	in.sender = "";
	refused(&in, "empty sender");
	in.sender = "<>";
	refused(&in, "the null sender <>");
	in.sender = " < \r\n> ";
	refused(&in, "a blank bracketed sender");
	in = input(&r, 0);
	refused(&in, "no recipient");
	in = input(NULL, 1);
	refused(&in, "recipients NULL");
	in = input(&r, 1);
	r.address = NULL;
	refused(&in, "a recipient without an address");
	r.address = "\r\n";
	refused(&in, "a recipient with a blank address");
	r = RCPT_550;
	r.action = (enum dsn_action)7;
	refused(&in, "an unknown action");
	r = RCPT_550;
	in.hostname = "";
	refused(&in, "an empty hostname");
	in = input(&r, 1);
	in.qid = NULL;
	refused(&in, "no queue id");
	in = input(&r, 1);
	in.headers = NULL;
	in.headers_len = 5;
	refused(&in, "headers NULL with a length");
	in = input(&r, 1);
	in.now = (time_t)253402300800; /* year 10000 */
	refused(&in, "a time past the year 9999");
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "--dump") == 0)
		dump_dir = argv[2];
	test_top_header();
	test_structure();
	test_report_fields();
	test_subjects();
	test_multiple();
	test_folding();
	test_injection();
	test_boundary();
	test_status_and_diagnostics();
	test_original_headers();
	test_dates_and_ids();
	test_addresses();
	test_refusals();
	return tap_done();
}
