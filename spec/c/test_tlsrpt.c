/*
 * Unit tests of src/proto/tlsrpt.c and src/proto/tlsrpt_report.c (TAP):
 * result types, classification of TLS errors, the _smtp._tls TXT record,
 * record lines both ways, summing, the JSON report, gzip, the file name
 * and the report mail.
 */
#include "proto/tlsrpt.h"
#include "proto/tlsrpt_report.h"
#include "tap.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static void test_names(void)
{
	enum tlsrpt_result r;
	bool all = true;

	for (unsigned i = 0; i < TLSRPT_COUNT; i++)
		all = all && tlsrpt_result_parse(
				     tlsrpt_result_name((enum tlsrpt_result)i),
				     &r) &&
		      r == (enum tlsrpt_result)i;
	check(all, "every result type name parses back to itself");
	check(strcmp(tlsrpt_result_name(TLSRPT_DANE_REQUIRED),
		     "dane-required") == 0 &&
		      strcmp(tlsrpt_result_name(TLSRPT_COUNT),
			     "validation-failure") == 0,
	      "dane-required; out of range is validation-failure");
	check(!tlsrpt_result_parse("starttls", &r), "unknown name refused");
	check(strcmp(tlsrpt_policy_type_name(TLSRPT_POLICY_NONE),
		     "no-policy-found") == 0 &&
		      strcmp(tlsrpt_policy_type_name(TLSRPT_POLICY_TLSA),
			     "tlsa") == 0,
	      "policy type names");
}

static void test_classify(void)
{
	static const struct {
		const char *error;
		enum tlsrpt_result want;
	} cases[] = {
		{"certificate verification failed: certificate has expired",
		 TLSRPT_CERTIFICATE_EXPIRED},
		{"name `x.example' not present in server certificate",
		 TLSRPT_CERTIFICATE_HOST_MISMATCH},
		{"certificate verification failed: self signed certificate",
		 TLSRPT_CERTIFICATE_NOT_TRUSTED},
		{"certificate verification failed: unable to get local issuer "
		 "certificate",
		 TLSRPT_CERTIFICATE_NOT_TRUSTED},
		{"handshake failed: error:0A00010B:SSL routines::wrong version "
		 "number",
		 TLSRPT_VALIDATION_FAILURE},
		{"", TLSRPT_VALIDATION_FAILURE},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		check(tlsrpt_classify_tls_error(cases[i].error) ==
			      cases[i].want,
		      "classify \"%s\" as %s", cases[i].error,
		      tlsrpt_result_name(cases[i].want));
	check(tlsrpt_classify_tls_error(NULL) == TLSRPT_VALIDATION_FAILURE,
	      "classify NULL");
}

static enum tlsrpt_record parse(const char *text, struct tlsrpt_rua *rua)
{
	const char *why;

	return tlsrpt_record_parse(text, strlen(text), rua, &why);
}

static void test_record(void)
{
	struct tlsrpt_rua rua;

	check(parse("v=TLSRPTv1; rua=mailto:reports@example.test", &rua) ==
			      TLSRPT_RECORD_FOUND &&
		      rua.n == 1 &&
		      strcmp(rua.addr[0], "reports@example.test") == 0,
	      "one mailto: URI");
	check(parse("v=TLSRPTv1 ;rua = mailto:a@x.test", &rua) ==
		      TLSRPT_RECORD_INVALID,
	      "spaces inside rua= are not allowed");
	check(parse("v=TLSRPTv1;rua=mailto:a@x.test , https://r.x.test/t,"
		    "mailto:tls%2Dreports@x.test?subject=tls;",
		    &rua) == TLSRPT_RECORD_FOUND &&
		      rua.n == 2 && rua.n_https == 1 &&
		      strcmp(rua.addr[1], "tls-reports@x.test") == 0,
	      "a list: spaces around commas, https counted, escapes decoded, "
	      "?query dropped, trailing ';'");
	check(parse("v=TLSRPTv1; ext_1=abc; rua=mailto:a@x.test", &rua) ==
		      TLSRPT_RECORD_FOUND,
	      "an extension field is allowed");
	check(parse("v=TLSRPTv1; rua=https://r.x.test/", &rua) ==
			      TLSRPT_RECORD_FOUND &&
		      rua.n == 0,
	      "https only: found, no mailto");
	check(parse("v=TLSRPTv1;", &rua) == TLSRPT_RECORD_INVALID,
	      "no rua: invalid");
	check(parse("v=TLSRPTv1; rua=mailto:a@x.test; rua=mailto:b@x.test",
		    &rua) == TLSRPT_RECORD_INVALID &&
		      rua.n == 0,
	      "rua twice: invalid, nothing kept");
	check(parse("v=TLSRPTv1; rua=ftp://x.test/", &rua) ==
		      TLSRPT_RECORD_INVALID,
	      "another scheme: invalid");
	check(parse("v=TLSRPTv1; rua=mailto:a@x.test; =x", &rua) ==
		      TLSRPT_RECORD_INVALID,
	      "a field without a name: invalid");
	check(parse("v=TLSRPTv10; rua=mailto:a@x.test", &rua) ==
		      TLSRPT_RECORD_NONE,
	      "v=TLSRPTv10 is another record");
	check(parse("v=spf1 -all", &rua) == TLSRPT_RECORD_NONE,
	      "SPF is not ours");
	check(parse("v=TLSRPTv1; rua=mailto:<a@x.test>", &rua) ==
			      TLSRPT_RECORD_FOUND &&
		      rua.n == 0,
	      "an implausible address is skipped");
	check(parse("v=TLSRPTv1; rua=mailto:a%00b@x.test", &rua) ==
			      TLSRPT_RECORD_FOUND &&
		      rua.n == 0,
	      "an escaped NUL is skipped");
}

static void test_pick(void)
{
	static const unsigned char split[] =
		"\x0av=TLSRPTv1\x1d; rua=mailto:tls@example.test";
	static const unsigned char spf[] = "\x0bv=spf1 -all";
	static const unsigned char other[] =
		"\x25v=TLSRPTv1; rua=mailto:b@example.test";
	static const unsigned char bad_len[] = "\x40v=TLSRPTv1; rua=";
	struct tlsrpt_rua rua;
	const char *why;
	const unsigned char *rd[3];
	size_t lens[3];

	rd[0] = spf;
	lens[0] = sizeof(spf) - 1;
	rd[1] = split;
	lens[1] = sizeof(split) - 1;
	check(tlsrpt_record_pick(rd, lens, 2, &rua, &why) ==
			      TLSRPT_RECORD_FOUND &&
		      rua.n == 1 && strcmp(rua.addr[0], "tls@example.test") == 0,
	      "strings joined without spaces; SPF beside it ignored");
	rd[2] = other;
	lens[2] = sizeof(other) - 1;
	check(tlsrpt_record_pick(rd, lens, 3, &rua, &why) ==
			      TLSRPT_RECORD_INVALID &&
		      rua.n == 0 && why != NULL,
	      "two records: invalid (%s)", why ? why : "");
	check(tlsrpt_record_pick(rd, lens, 1, &rua, &why) ==
		      TLSRPT_RECORD_NONE,
	      "SPF alone: none");
	rd[0] = bad_len;
	lens[0] = sizeof(bad_len) - 1;
	check(tlsrpt_record_pick(rd, lens, 1, &rua, &why) ==
		      TLSRPT_RECORD_INVALID,
	      "a length past the rdata of a TLSRPT TXT: invalid");
	check(tlsrpt_record_pick(rd, lens, 0, &rua, &why) ==
		      TLSRPT_RECORD_NONE,
	      "no TXT at all: none");
}

static struct tlsrpt_entry entry(bool failure, uint64_t count,
				 const char *mx)
{
	struct tlsrpt_entry e = {.failure = failure, .count = count};

	snprintf(e.policy_domain, sizeof(e.policy_domain), "example.test");
	snprintf(e.receiving_mx, sizeof(e.receiving_mx), "%s", mx);
	snprintf(e.receiving_ip, sizeof(e.receiving_ip), "127.0.0.1");
	snprintf(e.sending_ip, sizeof(e.sending_ip), "127.0.0.2");
	if (failure) {
		e.result = TLSRPT_STARTTLS_NOT_SUPPORTED;
		snprintf(e.reason, sizeof(e.reason), "no STARTTLS\tin EHLO %%");
	}
	return e;
}

static bool parse_line(const char *line, struct tlsrpt_entry *e)
{
	return tlsrpt_entry_parse(line, strlen(line), e);
}

static void test_lines(void)
{
	struct tlsrpt_entry e = entry(true, 3, "mx1.example.test"), back;
	char line[TLSRPT_LINE_MAX];
	size_t n;

	e.type = TLSRPT_POLICY_STS;
	snprintf(e.policy_strings, sizeof(e.policy_strings),
		 "version: STSv1\nmode: enforce\nmx: *.example.test");
	snprintf(e.mx_hosts, sizeof(e.mx_hosts), "*.example.test");
	n = tlsrpt_entry_format(&e, line, sizeof(line));
	check(n > 0 && line[n - 1] == '\n' && memchr(line, '\n', n - 1) == NULL,
	      "a failure formats as one line");
	check(tlsrpt_entry_parse(line, n - 1, &back) &&
		      tlsrpt_entry_same_key(&e, &back) && back.count == 3,
	      "and parses back to the same key and count");
	check(strstr(line, "%09in EHLO %25") != NULL && strstr(line, "%0A"),
	      "tab, %% and LF escaped");
	e = entry(false, 12, "");
	n = tlsrpt_entry_format(&e, line, sizeof(line));
	check(n > 0 && tlsrpt_entry_parse(line, n - 1, &back) &&
		      !back.failure && back.count == 12 &&
		      back.type == TLSRPT_POLICY_NONE,
	      "a success line round-trips");
	check(!parse_line("S\t0\tno-policy-found\tx\t\t\t-\t\t\t\t", &back),
	      "a count of 0 is refused");
	check(!parse_line("S\t1\tno-policy-found\tx\t\t\t-\t\t\t", &back),
	      "ten fields are refused");
	check(!parse_line("F\t1\tsts\tx\t\t\tbogus\t\t\t\t", &back),
	      "an unknown result type is refused");
	check(!parse_line("S\t1\tsts\tx%41\t\t\t-\t\t\t\t", &back),
	      "an escape of a plain octet is refused (one spelling)");
	check(!parse_line("S\t1\tsts\tx\x01\t\t\t-\t\t\t\t", &back),
	      "a raw control octet is refused");
	e.count = 0;
	check(tlsrpt_entry_format(&e, line, sizeof(line)) == 0,
	      "a count of 0 is not written");
	e.count = 1;
	check(tlsrpt_entry_format(&e, line, 20) == 0, "too small: 0");
}

static void test_merge(void)
{
	struct tlsrpt_entry list[2], a = entry(true, 2, "mx1"),
				     b = entry(true, 5, "mx1"),
				     c = entry(true, 1, "mx2");
	size_t n = 0;

	check(tlsrpt_entries_add(list, &n, 2, &a) &&
		      tlsrpt_entries_add(list, &n, 2, &b) && n == 1 &&
		      list[0].count == 7,
	      "same key: summed");
	check(tlsrpt_entries_add(list, &n, 2, &c) && n == 2, "new key: added");
	c.receiving_ip[0] = '\0';
	check(!tlsrpt_entries_add(list, &n, 2, &c) && n == 2,
	      "full: refused");
	a.count = UINT64_MAX;
	check(tlsrpt_entries_add(list, &n, 2, &a) && list[0].count == UINT64_MAX,
	      "the sum saturates");
}

static void test_json(void)
{
	struct tlsrpt_entry e[3] = {entry(false, 7, "mx1.example.test"),
				    entry(true, 2, "mx1.example.test"),
				    entry(true, 1, "mx2.example.test")};
	struct tlsrpt_meta m = {.organization = "gw.example",
				.contact = "postmaster@gw.example",
				.report_id = "r-1@gw.example",
				.begin = 1764288000,
				.end = 1764288000 + 86399};
	size_t len;
	char *json;
	uint64_t ok, failed;

	e[2].result = TLSRPT_CERTIFICATE_EXPIRED;
	json = tlsrpt_report_json(&m, e, 3, &len);
	check(json != NULL && len == strlen(json), "JSON built");
	json = json ? json : calloc(1, 1);
	check(strstr(json, "\"organization-name\": \"gw.example\"") &&
		      strstr(json, "\"start-datetime\": \"2025-11-28T00:00:00Z\"") &&
		      strstr(json, "\"end-datetime\": \"2025-11-28T23:59:59Z\"") &&
		      strstr(json, "\"report-id\": \"r-1@gw.example\""),
	      "metadata and date-range");
	check(strstr(json, "\"policy-type\": \"no-policy-found\"") &&
		      strstr(json, "\"policy-domain\": \"example.test\"") &&
		      !strstr(json, "\"policy-string\"") &&
		      !strstr(json, "\"mx-host\""),
	      "no-policy-found: no policy-string or mx-host");
	check(strstr(json, "\"total-successful-session-count\": 7") &&
		      strstr(json, "\"total-failure-session-count\": 3"),
	      "summary counts");
	check(strstr(json, "\"result-type\": \"starttls-not-supported\"") &&
		      strstr(json, "\"result-type\": \"certificate-expired\"") &&
		      strstr(json, "\"failed-session-count\": 2") &&
		      strstr(json, "\"receiving-mx-hostname\": \"mx2.example.test\"") &&
		      strstr(json, "\"failure-reason-code\": \"no STARTTLS\\u0009in EHLO %\""),
	      "failure details, escapes");
	free(json);
	tlsrpt_totals(e, 3, &ok, &failed);
	check(ok == 7 && failed == 3, "totals");
	json = tlsrpt_report_json(&m, e, 0, &len);
	check(json != NULL && strstr(json, "\"policies\": []"),
	      "no entries: an empty policies array");
	free(json);
}

static void test_gzip(void)
{
	const char *text = "{\"x\": 1}\n";
	size_t n;
	unsigned char *gz = tlsrpt_gzip(text, strlen(text), &n);
	char back[64] = "";
	z_stream z = {0};

	check(gz != NULL && n > 18 && gz[0] == 0x1f && gz[1] == 0x8b,
	      "gzip magic");
	if (gz != NULL && inflateInit2(&z, 15 + 16) == Z_OK) {
		z.next_in = gz;
		z.avail_in = (uInt)n;
		z.next_out = (Bytef *)back;
		z.avail_out = sizeof(back) - 1;
		check(inflate(&z, Z_FINISH) == Z_STREAM_END &&
			      strcmp(back, text) == 0,
		      "gunzips to the same text");
		inflateEnd(&z);
	}
	free(gz);
}

static int b64(char c)
{
	const char *abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
			  "0123456789+/";
	const char *p = strchr(abc, c);

	return c != '\0' && p ? (int)(p - abc) : -1;
}

/* Decodes the base64 lines after `from` up to the next "\r\n\r\n--". */
static size_t unbase64(const char *from, unsigned char *out, size_t cap)
{
	uint32_t acc = 0;
	int bits = 0;
	size_t n = 0;

	for (const char *p = from; *p != '\0' && *p != '-' && *p != '='; p++) {
		int v = b64(*p);

		if (v < 0)
			continue;
		acc = acc << 6 | (uint32_t)v;
		bits += 6;
		if (bits >= 8 && n < cap) {
			bits -= 8;
			out[n++] = (unsigned char)(acc >> bits);
		}
	}
	return n;
}

static bool lines_short(const char *m)
{
	for (const char *p = m; *p != '\0';) {
		const char *eol = strstr(p, "\r\n");

		if (eol == NULL || eol - p > 998)
			return false;
		p = eol + 2;
	}
	return true;
}

static void test_mail(void)
{
	const char *to[] = {"a@x.test", "b@y.test"};
	const char *json = "{\"report\": true}\n";
	char name[256];
	size_t gz_len, len;
	unsigned char *gz = tlsrpt_gzip(json, strlen(json), &gz_len);
	unsigned char back[512];
	struct tlsrpt_mail m = {
		.from = "noreply@gw.example", .to = to, .n_to = 2,
		.domain = "x.test", .submitter = "gw.example",
		.report_id = "2025-11-28.x.test.1@gw.example",
		.message_id = "tlsrpt.1@gw.example", .filename = name,
		.begin = 1764288000, .end = 1764374399, .now = 1764378000,
		.ok = 4, .failed = 1, .gz = gz, .gz_len = gz_len};
	char *mail;
	const char *att;

	check(tlsrpt_filename("gw.example", "x.test", 1764288000, 1764374399,
			      "6614-b1e9", name, sizeof(name)) &&
		      strcmp(name, "gw.example!x.test!1764288000!1764374399!"
				   "6614b1e9.json.gz") == 0,
	      "file name (RFC 8460 5.3): %s", name);
	mail = tlsrpt_mail_build(&m, &len);
	check(mail != NULL && len == strlen(mail), "mail built");
	mail = mail ? mail : calloc(1, 1);
	check(strstr(mail, "\r\nSubject: Report Domain: x.test\r\n Submitter: "
			   "gw.example\r\n Report-ID: "
			   "<2025-11-28.x.test.1@gw.example>\r\n") &&
		      strstr(mail, "\r\nTLS-Report-Domain: x.test\r\n") &&
		      strstr(mail, "\r\nTLS-Report-Submitter: gw.example\r\n"),
	      "Subject and the TLS-Report headers");
	check(strstr(mail, "multipart/report; report-type=\"tlsrpt\"") &&
		      strstr(mail, "Content-Type: application/tlsrpt+gzip") &&
		      strstr(mail, "filename=\"gw.example!x.test!"),
	      "multipart/report with the gzip part");
	check(strstr(mail, "To: <a@x.test>,\r\n\t<b@y.test>\r\n") != NULL,
	      "both recipients");
	check(strstr(mail, "\r\nTLS-Required: No\r\n") != NULL,
	      "TLS-Required: No (RFC 8460 5.3.1: sent despite TLS failures)");
	check(tlsrpt_mail_is_report(mail, strlen(mail)),
	      "the mail is known as a report");
	check(lines_short(mail), "CRLF lines under 998 octets");
	att = strstr(mail, "filename=");
	att = att ? strstr(att, "\r\n\r\n") : NULL;
	check(att != NULL && unbase64(att, back, sizeof(back)) == gz_len &&
		      memcmp(back, gz, gz_len) == 0,
	      "the attachment decodes to the gzip");
	free(mail);
	m.to = (const char *[]){"a b@x.test"};
	m.n_to = 1;
	check(tlsrpt_mail_build(&m, &len) == NULL && len == 0,
	      "a recipient with a space is refused");
	free(gz);
}

static void test_is_report(void)
{
	const char *h1 = "From: <a@b>\r\ntls-report-domain: x.test\r\n\r\n";
	const char *h2 = "From: <a@b>\r\nSubject: x\r\n TLS-Report-Domain: "
			 "x\r\n\r\nTLS-Report-Domain: x.test\r\n";
	const char *h3 = "X-TLS-Report-Domain: x.test\r\n\r\n";

	check(tlsrpt_mail_is_report(h1, strlen(h1)), "the field, any case");
	check(!tlsrpt_mail_is_report(h2, strlen(h2)),
	      "not in a folded line, nor in the body");
	check(!tlsrpt_mail_is_report(h3, strlen(h3)), "not another field");
	check(!tlsrpt_mail_is_report(h1, 20), "not cut short");
}

int main(void)
{
	test_names();
	test_classify();
	test_record();
	test_pick();
	test_lines();
	test_merge();
	test_json();
	test_gzip();
	test_mail();
	test_is_report();
	return tap_done();
}
