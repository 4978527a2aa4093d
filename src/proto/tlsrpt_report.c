/*
 * tlsrpt_report.c: the JSON report and its mail behind tlsrpt_report.h.
 * It owns text only: no I/O (open_memstream writes to memory), no state
 * between calls, no decision about when to report or to whom.
 *
 * JSON strings are escaped as RFC 8259 says; octets outside printable
 * ASCII become '?' (the fields are host names, addresses, policy lines
 * and library messages). Keys follow RFC 8460 §4.4; optional ones
 * (contact-info, policy-string, mx-host, the failure details' addresses and
 * failure-reason-code) are left out when empty.
 */
#include "proto/tlsrpt_report.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <zlib.h>

enum { B64_LINE = 76, MAX_DETAILS = 1024 };

/* ---- summing ------------------------------------------------------------- */

static bool same_policy(const struct tlsrpt_entry *a,
			const struct tlsrpt_entry *b)
{
	return a->type == b->type &&
	       strcmp(a->policy_domain, b->policy_domain) == 0 &&
	       strcmp(a->policy_strings, b->policy_strings) == 0 &&
	       strcmp(a->mx_hosts, b->mx_hosts) == 0;
}

/* Is entries[i] the first of its policy? */
static bool first_of_policy(const struct tlsrpt_entry *e, size_t i)
{
	for (size_t k = 0; k < i; k++)
		if (same_policy(&e[k], &e[i]))
			return false;
	return true;
}

static uint64_t add_sat(uint64_t a, uint64_t b)
{
	return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

void tlsrpt_totals(const struct tlsrpt_entry *entries, size_t n,
		   uint64_t *ok, uint64_t *failed)
{
	*ok = *failed = 0;
	for (size_t i = 0; i < n; i++) {
		uint64_t *sum = entries[i].failure ? failed : ok;

		*sum = add_sat(*sum, entries[i].count);
	}
}

/* ---- JSON ------------------------------------------------------------------ */

static void json_string(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c == '\n')
			fputs("\\n", f);
		else if (c < 0x20)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c < 0x7f ? c : '?', f);
	}
	fputc('"', f);
}

/* "key": "value" after `indent` spaces, with a comma before when not the
 * first member (*first is cleared). */
static void member(FILE *f, int indent, bool *first, const char *key)
{
	fprintf(f, "%s\n%*s", *first ? "" : ",", indent, "");
	json_string(f, key);
	fputs(": ", f);
	*first = false;
}

static void string_member(FILE *f, int indent, bool *first, const char *key,
			  const char *value)
{
	if (value == NULL || value[0] == '\0')
		return;
	member(f, indent, first, key);
	json_string(f, value);
}

/* A '\n'-joined list as a JSON array of strings. */
static void list_member(FILE *f, int indent, bool *first, const char *key,
			const char *joined)
{
	const char *p = joined;
	char item[TLSRPT_LIST_MAX];

	if (joined[0] == '\0')
		return;
	member(f, indent, first, key);
	fputc('[', f);
	for (bool one = true; *p != '\0'; one = false) {
		size_t n = strcspn(p, "\n");

		memcpy(item, p, n);
		item[n] = '\0';
		fputs(one ? "" : ", ", f);
		json_string(f, item);
		p += n + (p[n] == '\n');
	}
	fputc(']', f);
}

static void rfc3339(long long t, char *out, size_t len)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (gmtime_r(&tt, &tm) == NULL ||
	    strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(out, len, "1970-01-01T00:00:00Z");
}

static void json_detail(FILE *f, const struct tlsrpt_entry *e,
			bool *first_detail)
{
	bool first = true;

	fprintf(f, "%s\n        {", *first_detail ? "" : ",");
	*first_detail = false;
	string_member(f, 10, &first, "result-type",
		      tlsrpt_result_name(e->result));
	string_member(f, 10, &first, "sending-mta-ip", e->sending_ip);
	string_member(f, 10, &first, "receiving-mx-hostname", e->receiving_mx);
	string_member(f, 10, &first, "receiving-ip", e->receiving_ip);
	member(f, 10, &first, "failed-session-count");
	fprintf(f, "%llu", (unsigned long long)e->count);
	string_member(f, 10, &first, "failure-reason-code", e->reason);
	fputs("\n        }", f);
}

/* One item of "policies": the policy of entries[i] with its counts. */
static void json_policy(FILE *f, const struct tlsrpt_entry *e, size_t i,
			size_t n)
{
	uint64_t ok = 0, failed = 0;
	bool first = true, first_detail = true;
	size_t details = 0;

	for (size_t k = i; k < n; k++)
		if (same_policy(&e[k], &e[i])) {
			uint64_t *sum = e[k].failure ? &failed : &ok;

			*sum = add_sat(*sum, e[k].count);
		}
	fputs("\n    {\n      \"policy\": {", f);
	string_member(f, 8, &first, "policy-type",
		      tlsrpt_policy_type_name(e[i].type));
	list_member(f, 8, &first, "policy-string", e[i].policy_strings);
	string_member(f, 8, &first, "policy-domain", e[i].policy_domain);
	list_member(f, 8, &first, "mx-host", e[i].mx_hosts);
	fprintf(f, "\n      },\n      \"summary\": {\n"
		   "        \"total-successful-session-count\": %llu,\n"
		   "        \"total-failure-session-count\": %llu\n      }",
		(unsigned long long)ok, (unsigned long long)failed);
	if (failed == 0) {
		fputs("\n    }", f);
		return;
	}
	fputs(",\n      \"failure-details\": [", f);
	for (size_t k = i; k < n && details < MAX_DETAILS; k++) {
		if (!e[k].failure || !same_policy(&e[k], &e[i]))
			continue;
		json_detail(f, &e[k], &first_detail);
		details++;
	}
	fputs("\n      ]\n    }", f);
}

/* Closes the stream (which sets *buf); the text, or NULL when anything
 * failed. */
static char *stream_done(FILE *f, char **buf, size_t *len)
{
	bool failed = ferror(f) != 0;

	if (fclose(f) != 0 || failed) {
		free(*buf);
		*len = 0;
		return NULL;
	}
	return *buf;
}

char *tlsrpt_report_json(const struct tlsrpt_meta *m,
			 const struct tlsrpt_entry *entries, size_t n,
			 size_t *len)
{
	char *buf = NULL, begin[32], end[32];
	FILE *f = open_memstream(&buf, len);
	bool first = true, first_policy = true;

	if (f == NULL)
		return NULL;
	rfc3339(m->begin, begin, sizeof(begin));
	rfc3339(m->end, end, sizeof(end));
	fputc('{', f);
	string_member(f, 2, &first, "organization-name", m->organization);
	member(f, 2, &first, "date-range");
	fputs("{\n    \"start-datetime\": ", f);
	json_string(f, begin);
	fputs(",\n    \"end-datetime\": ", f);
	json_string(f, end);
	fputs("\n  }", f);
	string_member(f, 2, &first, "contact-info", m->contact);
	string_member(f, 2, &first, "report-id", m->report_id);
	member(f, 2, &first, "policies");
	fputc('[', f);
	for (size_t i = 0; i < n; i++) {
		if (!first_of_policy(entries, i))
			continue;
		fputs(first_policy ? "" : ",", f);
		first_policy = false;
		json_policy(f, entries, i, n);
	}
	fputs(first_policy ? "]\n}\n" : "\n  ]\n}\n", f);
	return stream_done(f, &buf, len);
}

/* ---- the attachment ------------------------------------------------------ */

bool tlsrpt_filename(const char *submitter, const char *domain,
		     long long begin, long long end, const char *unique,
		     char *out, size_t len)
{
	char id[64];
	size_t k = 0;
	int n;

	for (const char *p = unique; *p != '\0' && k + 1 < sizeof(id); p++)
		if ((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') ||
		    (*p >= 'A' && *p <= 'Z'))
			id[k++] = *p;
	id[k] = '\0';
	n = snprintf(out, len, "%s!%s!%lld!%lld%s%s.json.gz", submitter, domain,
		     begin, end, k > 0 ? "!" : "", id);
	return n > 0 && (size_t)n < len;
}

unsigned char *tlsrpt_gzip(const char *data, size_t len, size_t *out_len)
{
	z_stream z = {0};
	unsigned char *out = NULL;
	uLong bound;

	*out_len = 0;
	/* 15 + 16: a gzip wrapper (RFC 1952) around the deflate stream */
	if (len > UINT32_MAX ||
	    deflateInit2(&z, Z_BEST_COMPRESSION, Z_DEFLATED, 15 + 16, 8,
			 Z_DEFAULT_STRATEGY) != Z_OK)
		return NULL;
	bound = deflateBound(&z, (uLong)len) + 32;
	if ((out = malloc(bound)) != NULL) {
		z.next_in = (Bytef *)(uintptr_t)data;
		z.avail_in = (uInt)len;
		z.next_out = out;
		z.avail_out = (uInt)bound;
		if (deflate(&z, Z_FINISH) == Z_STREAM_END) {
			*out_len = z.total_out;
		} else {
			free(out);
			out = NULL;
		}
	}
	deflateEnd(&z);
	return out;
}

static void base64_lines(FILE *f, const unsigned char *p, size_t n)
{
	static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
				  "abcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t col = 0;

	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16;
		size_t left = n - i;

		if (left > 1)
			v |= (uint32_t)p[i + 1] << 8;
		if (left > 2)
			v |= p[i + 2];
		fputc(abc[v >> 18 & 63], f);
		fputc(abc[v >> 12 & 63], f);
		fputc(left > 1 ? abc[v >> 6 & 63] : '=', f);
		fputc(left > 2 ? abc[v & 63] : '=', f);
		if ((col += 4) >= B64_LINE) {
			fputs("\r\n", f);
			col = 0;
		}
	}
	if (col > 0)
		fputs("\r\n", f);
}

/* ---- the mail ---------------------------------------------------------- */

/* Safe in a header: printable ASCII, no space, not empty, not too long. */
static bool header_word(const char *s)
{
	size_t n = s != NULL ? strlen(s) : 0;

	if (n == 0 || n > 900)
		return false;
	for (; *s != '\0'; s++)
		if (*s <= ' ' || *s > '~' || *s == '"' || *s == '<' ||
		    *s == '>')
			return false;
	return true;
}

static bool mail_words_ok(const struct tlsrpt_mail *m)
{
	const char *words[] = {m->from,	     m->domain,	    m->submitter,
			       m->report_id, m->message_id, m->filename};

	for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
		if (!header_word(words[i]))
			return false;
	if (m->n_to == 0 || m->gz == NULL)
		return false;
	for (size_t i = 0; i < m->n_to; i++)
		if (!header_word(m->to[i]))
			return false;
	return true;
}

static void mail_header(FILE *f, const struct tlsrpt_mail *m,
			const char *boundary)
{
	char date[64];
	time_t now = (time_t)m->now;
	struct tm tm;

	if (gmtime_r(&now, &tm) == NULL ||
	    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm) ==
		    0)
		snprintf(date, sizeof(date), "Thu, 01 Jan 1970 00:00:00 +0000");
	fprintf(f, "From: <%s>\r\nDate: %s\r\nTo: ", m->from, date);
	for (size_t i = 0; i < m->n_to; i++)
		fprintf(f, "%s<%s>", i == 0 ? "" : ",\r\n\t", m->to[i]);
	fprintf(f, "\r\nSubject: Report Domain: %s\r\n Submitter: %s\r\n "
		   "Report-ID: <%s>\r\n",
		m->domain, m->submitter, m->report_id);
	/* TLS-Required: No (RFC 8689 §4.2.2): a report goes out despite
	 * the TLS failures it may report (RFC 8460 §5.3.1) */
	fprintf(f, "Message-ID: <%s>\r\nTLS-Report-Domain: %s\r\n"
		   "TLS-Report-Submitter: %s\r\nTLS-Required: No\r\n"
		   "Auto-Submitted: auto-generated\r\nMIME-Version: 1.0\r\n",
		m->message_id, m->domain, m->submitter);
	fprintf(f, "Content-Type: multipart/report; report-type=\"tlsrpt\";"
		   "\r\n\tboundary=\"%s\"\r\n\r\n",
		boundary);
}

static void mail_note(FILE *f, const struct tlsrpt_mail *m)
{
	char begin[32], end[32];

	rfc3339(m->begin, begin, sizeof(begin));
	rfc3339(m->end, end, sizeof(end));
	fprintf(f, "Content-Type: text/plain; charset=us-ascii\r\n"
		   "Content-Transfer-Encoding: 7bit\r\n\r\n"
		   "This is an aggregate TLS report (RFC 8460) from\r\n"
		   "%s for the policy domain\r\n%s,\r\n"
		   "from %s to %s:\r\n"
		   "%llu successful and %llu failed sessions.\r\n"
		   "The report is attached as gzip'd JSON.\r\n",
		m->submitter, m->domain, begin, end,
		(unsigned long long)m->ok, (unsigned long long)m->failed);
}

char *tlsrpt_mail_build(const struct tlsrpt_mail *m, size_t *len)
{
	char *buf = NULL, boundary[96];
	FILE *f;

	*len = 0;
	if (!mail_words_ok(m))
		return NULL;
	/* "=_" cannot appear in base64 or in the note */
	snprintf(boundary, sizeof(boundary), "=_tlsrpt_%.60s", m->message_id);
	for (char *c = boundary; *c != '\0'; c++)
		if (*c == '"' || *c == '\\' || *c == '@')
			*c = '.';
	if ((f = open_memstream(&buf, len)) == NULL)
		return NULL;
	mail_header(f, m, boundary);
	fprintf(f, "This is a MIME-encapsulated message.\r\n\r\n--%s\r\n",
		boundary);
	mail_note(f, m);
	fprintf(f, "\r\n--%s\r\nContent-Type: application/tlsrpt+gzip\r\n"
		   "Content-Transfer-Encoding: base64\r\n"
		   "Content-Disposition: attachment;\r\n\tfilename=\"%s\"\r\n\r\n",
		boundary, m->filename);
	base64_lines(f, m->gz, m->gz_len);
	fprintf(f, "\r\n--%s--\r\n", boundary);
	return stream_done(f, &buf, len);
}

bool tlsrpt_mail_is_report(const char *headers, size_t len)
{
	static const char NAME[] = "TLS-Report-Domain:";
	size_t n = sizeof(NAME) - 1;

	for (size_t i = 0; i < len;) {
		const char *lf;

		if (headers[i] == '\n' || headers[i] == '\r')
			return false; /* the empty line: the body follows */
		if (len - i > n && strncasecmp(headers + i, NAME, n) == 0)
			return true;
		if ((lf = memchr(headers + i, '\n', len - i)) == NULL)
			return false;
		i = (size_t)(lf - headers) + 1;
	}
	return false;
}
