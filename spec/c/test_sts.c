/*
 * Unit tests for src/proto/sts.c (MTA-STS, RFC 8461): TXT rdata joined,
 * the STS record picked out of an RRset, policy files, MX patterns, the
 * cache header and the TLS-RPT names. Prints TAP and exits 1 if any
 * assertion failed. Every input is copied into a buffer of exactly its
 * length (no NUL after it), so ASan sees a read past it.
 */
#include "tap.h"
#include "proto/sts.h"

#include <stdlib.h>
#include <string.h>

static char *copy(const char *s, size_t n)
{
	char *p = malloc(n ? n : 1);

	memcpy(p, s, n);
	return p;
}

/* ---- TXT ------------------------------------------------------------------ */

static enum sts_txt_join join(const char *rdata, size_t len, char *out,
			      size_t out_len, size_t *n)
{
	char *c = copy(rdata, len);
	enum sts_txt_join r = sts_txt_join((const unsigned char *)c, len, out,
					   out_len, n);

	free(c);
	return r;
}

static void test_join(void)
{
	char out[64];
	size_t n;

	check(join("\x07v=STSv1", 8, out, sizeof(out), &n) == STS_JOIN_OK &&
		      n == 7 && strcmp(out, "v=STSv1") == 0,
	      "one character-string");
	check(join("\x08v=STSv1;\x06 id=42", 16, out, sizeof(out), &n) ==
			      STS_JOIN_OK &&
		      strcmp(out, "v=STSv1; id=42") == 0,
	      "strings joined without spaces (RFC 8461 3.1)");
	check(join("", 0, out, sizeof(out), &n) == STS_JOIN_OK && n == 0 &&
		      out[0] == '\0',
	      "empty rdata is an empty text");
	check(join("\x00\x03" "abc", 5, out, sizeof(out), &n) == STS_JOIN_OK &&
		      strcmp(out, "abc") == 0,
	      "an empty string among others");
	check(join("\x09v=STSv1", 8, out, sizeof(out), &n) ==
		      STS_JOIN_MALFORMED,
	      "a length past the end is malformed");
	check(join("\x03" "a\0b", 4, out, sizeof(out), &n) == STS_JOIN_MALFORMED,
	      "a NUL inside is malformed");
	check(join("\x07v=STSv1", 8, out, 7, &n) == STS_JOIN_TOO_LONG,
	      "7 octets do not fit 7 (the NUL)");
	check(join("\x07v=STSv1", 8, out, 8, &n) == STS_JOIN_OK,
	      "7 octets fit 8");
}

static enum sts_record pick1(const char *t, char *id)
{
	const char *why;
	char *c = copy(t, strlen(t));
	const char *texts[1] = {c};
	size_t lens[1] = {strlen(t)};
	enum sts_record r = sts_record_pick(texts, lens, 1, id,
					    STS_ID_MAX + 1, &why);

	free(c);
	return r;
}

/* One record alone: what sts_record_pick says, and the id it gives. */
static const struct {
	const char *text;
	enum sts_record want;
	const char *id; /* when FOUND */
	const char *what;
} RECORDS[] = {
	{"v=STSv1; id=20160831085700Z;", STS_RECORD_FOUND, "20160831085700Z",
	 "the RFC's example record"},
	{"v=STSv1;id=1", STS_RECORD_FOUND, "1", "no blanks, no final semicolon"},
	{"v=STSv1 ; id=x ; ext=v:a", STS_RECORD_FOUND, "x",
	 "blanks around semicolons and an extension"},
	{"v=STSv1; ext_1.a-b=yes; id=Z9", STS_RECORD_FOUND, "Z9",
	 "an extension before the id"},
	{"v=STSv1; id=first; id=second", STS_RECORD_FOUND, "first",
	 "a second id is ignored"},
	{"v=STSv1; id=abc ", STS_RECORD_FOUND, "abc", "trailing blanks"},
	{"v=STSv1; id=12345678901234567890123456789012", STS_RECORD_FOUND,
	 "12345678901234567890123456789012", "a 32-character id"},
	{"v=STSv1;", STS_RECORD_INVALID, NULL, "no id"},
	{"v=STSv1", STS_RECORD_INVALID, NULL, "nothing after v="},
	{"v=STSv1; id=", STS_RECORD_INVALID, NULL, "empty id"},
	{"v=STSv1; id=ab-c", STS_RECORD_INVALID, NULL, "an id with a dash"},
	{"v=STSv1; id=123456789012345678901234567890123", STS_RECORD_INVALID,
	 NULL, "a 33-character id"},
	{"v=STSv1 id=1", STS_RECORD_INVALID, NULL,
	 "no semicolon after the version"},
	{"v=STSv1; id=1; bad", STS_RECORD_INVALID, NULL, "a field without ="},
	{"v=STSv1; id=1; x=a=b", STS_RECORD_INVALID, NULL,
	 "= inside an extension value"},
	{"v=STSv1; id=1;; ", STS_RECORD_INVALID, NULL, "two semicolons"},
	{"v=STSv10; id=1", STS_RECORD_NONE, NULL,
	 "v=STSv10 is not an STS record"},
	{"V=STSv1; id=1", STS_RECORD_NONE, NULL,
	 "the version is case-sensitive"},
};

static void test_record(void)
{
	char id[STS_ID_MAX + 1];
	const char *why;
	const char *texts[3] = {"v=spf1 -all", "v=STSv1; id=abc;", NULL};
	size_t lens[3] = {11, 16, 0};

	for (size_t i = 0; i < sizeof(RECORDS) / sizeof(RECORDS[0]); i++) {
		enum sts_record r = pick1(RECORDS[i].text, id);

		check(r == RECORDS[i].want &&
			      (r != STS_RECORD_FOUND ||
			       strcmp(id, RECORDS[i].id) == 0),
		      "record: %s", RECORDS[i].what);
	}
	check(sts_record_pick(texts, lens, 3, id, sizeof(id), &why) ==
			      STS_RECORD_FOUND &&
		      strcmp(id, "abc") == 0,
	      "other records (and an unjoinable one) are ignored");
	texts[0] = "v=STSv1; id=other";
	lens[0] = strlen(texts[0]);
	check(sts_record_pick(texts, lens, 3, id, sizeof(id), &why) ==
			      STS_RECORD_INVALID &&
		      strstr(why, "more than one") != NULL,
	      "two STS records are no policy at all");
	check(sts_record_pick(texts, lens, 0, id, sizeof(id), &why) ==
		      STS_RECORD_NONE,
	      "an empty RRset");
}

/* ---- policies --------------------------------------------------------------- */

static bool parse(const char *text, struct sts_policy *p, char *why)
{
	char *c = copy(text, strlen(text));
	bool ok = sts_policy_parse(c, strlen(text), p, why, 128);

	free(c);
	return ok;
}

static void test_policy_valid(void)
{
	struct sts_policy p;
	char why[128];

	check(parse("version: STSv1\nmode: enforce\nmx: mail.example.com\n"
		    "mx: *.example.net\nmx: backupmx.example.com\n"
		    "max_age: 604800\n",
		    &p, why) &&
		      p.mode == STS_MODE_ENFORCE && p.max_age == 604800 &&
		      p.n_mx == 3 && strcmp(p.mx[1], "*.example.net") == 0,
	      "the RFC's example policy");
	check(parse("version: STSv1\r\nmode: testing\r\nmx: MX.Example.COM\r\n"
		    "max_age: 86400\r\n",
		    &p, why) &&
		      p.mode == STS_MODE_TESTING &&
		      strcmp(p.mx[0], "mx.example.com") == 0,
	      "CRLF lines; patterns in lower case");
	check(parse("version:STSv1\nmode:   none\nmax_age: 0", &p, why) &&
		      p.mode == STS_MODE_NONE && p.n_mx == 0 && p.max_age == 0,
	      "mode none needs no mx; no final newline; no blank after :");
	check(parse("version: STSv1\nmode: enforce\nmx: a.example\n"
		    "max_age: 9999999999\n",
		    &p, why) &&
		      p.max_age == STS_MAX_AGE_MAX,
	      "max_age over a year is a year");
	check(parse("version: STSv1\n\nmode: enforce\nmx: a.example\n"
		    "max_age: 1\n\n",
		    &p, why),
	      "empty lines are skipped");
	check(parse("version: STSv1\nmode: enforce\nmode: none\nmx: a.example\n"
		    "max_age: 5\nmax_age: 7\n",
		    &p, why) &&
		      p.mode == STS_MODE_ENFORCE && p.max_age == 5,
	      "the first mode and max_age count");
	check(parse("version: STSv1  \nmode: enforce\t\nmx: a.example. \n"
		    "max_age: 5\nnote-1.x: some words here \n",
		    &p, why) &&
		      strcmp(p.mx[0], "a.example") == 0,
	      "trailing blanks, a trailing dot, an unknown key with spaces");
}

static void test_policy_invalid(void)
{
	struct sts_policy p;
	char why[128];
	char many[4096] = "version: STSv1\nmode: enforce\nmax_age: 1\n";

	check(!parse("mode: enforce\nmx: a.example\nmax_age: 1\n", &p, why) &&
		      strstr(why, "version") != NULL,
	      "no version: %s", why);
	check(!parse("version: STSv2\nmode: enforce\nmx: a\nmax_age: 1\n", &p,
		     why),
	      "version STSv2");
	check(!parse("version: STSv1\nmode: Enforce\nmx: a\nmax_age: 1\n", &p,
		     why),
	      "the mode is case-sensitive");
	check(!parse("version: STSv1\nmode: enforce\nmax_age: 1\n", &p, why) &&
		      strstr(why, "mx") != NULL,
	      "enforce without mx: %s", why);
	check(!parse("version: STSv1\nmode: testing\nmx: a\n", &p, why),
	      "no max_age");
	check(!parse("version: STSv1\nmode: testing\nmx: a\nmax_age: -1\n", &p,
		     why),
	      "a negative max_age");
	check(!parse("version: STSv1\nmode: testing\nmx: a\nmax_age: "
		     "12345678901\n",
		     &p, why),
	      "an 11-digit max_age");
	check(!parse("version: STSv1\nmode: testing\nmx: a\nmax_age: 1d\n", &p,
		     why),
	      "a max_age with a unit");
	check(!parse("version: STSv1\nmode: enforce\nmx: a..b\nmax_age: 1\n",
		     &p, why),
	      "an empty label");
	check(!parse("version: STSv1\nmode: enforce\nmx: -a.b\nmax_age: 1\n",
		     &p, why),
	      "a label starting with a dash");
	check(!parse("version: STSv1\nmode: enforce\nmx: *.*.b\nmax_age: 1\n",
		     &p, why),
	      "two wildcards");
	check(!parse("version: STSv1\nmode: enforce\nmx: a.*.b\nmax_age: 1\n",
		     &p, why),
	      "a wildcard inside");
	check(!parse("version: STSv1\nmode: enforce\nmx: *\nmax_age: 1\n", &p,
		     why),
	      "a lone *");
	check(!parse("version: STSv1\nmode: enforce\nmx: a b\nmax_age: 1\n",
		     &p, why),
	      "two names on one line");
	check(!parse("version: STSv1\rmode: enforce\nmx: a\nmax_age: 1\n", &p,
		     why),
	      "a bare CR");
	check(!parse("version STSv1\nmode: enforce\nmx: a\nmax_age: 1\n", &p,
		     why),
	      "no colon");
	check(!parse(" version: STSv1\nmode: enforce\nmx: a\nmax_age: 1\n", &p,
		     why),
	      "a blank before the key");
	check(!parse("<html><body>Not found</body></html>\n", &p, why),
	      "an HTML page");
	for (int i = 0; i <= STS_MAX_MX; i++)
		snprintf(many + strlen(many), sizeof(many) - strlen(many),
			 "mx: m%d.example\n", i);
	check(!parse(many, &p, why) && strstr(why, "too many") != NULL,
	      "more than %d mx patterns: %s", STS_MAX_MX, why);
}

static void test_policy_size(void)
{
	struct sts_policy p;
	char why[128];
	size_t n = STS_POLICY_MAX + 1;
	char *big = malloc(n);
	const char *head = "version: STSv1\nmode: none\nmax_age: 1\n";

	memset(big, '\n', n);
	memcpy(big, head, strlen(head));
	check(!sts_policy_parse(big, n, &p, why, sizeof(why)),
	      "a policy over 64 KiB");
	check(sts_policy_parse(big, n - 1, &p, why, sizeof(why)),
	      "a policy of 64 KiB");
	free(big);
}

/* ---- MX patterns -------------------------------------------------------------- */

static void test_mx(void)
{
	struct sts_policy p;
	char why[128], text[64];

	parse("version: STSv1\nmode: enforce\nmx: mail.example.com\n"
	      "mx: *.example.net\nmax_age: 1\n",
	      &p, why);
	check(sts_mx_match(&p, "mail.example.com"), "exact");
	check(sts_mx_match(&p, "MAIL.Example.com."), "case and trailing dot");
	check(sts_mx_match(&p, "mx1.example.net"), "wildcard: one label");
	check(!sts_mx_match(&p, "example.net"), "wildcard: not the parent");
	check(!sts_mx_match(&p, "a.b.example.net"),
	      "wildcard: not two labels");
	check(!sts_mx_match(&p, ".example.net"), "an empty first label");
	check(!sts_mx_match(&p, "mail.example.com.evil"), "a longer name");
	check(!sts_mx_match(&p, "ail.example.com"), "a shorter name");
	check(!sts_mx_match(&p, ""), "the empty name");
	sts_mx_text(&p, text, sizeof(text));
	check(strcmp(text, "mail.example.com,*.example.net") == 0,
	      "mx text: %s", text);
	sts_mx_text(&p, text, 20);
	check(strcmp(text, "mail.example.com...") == 0, "cut short: %s", text);
	sts_mx_text(&p, text, 5);
	check(strlen(text) < 5, "tiny buffer: \"%s\"", text);
}

/* ---- the cache header ------------------------------------------------------- */

static void test_cache(void)
{
	char buf[256];
	struct sts_cached c;
	size_t n = sts_cache_header(buf, sizeof(buf), "abc123", 1764000000);
	const char *policy = "version: STSv1\nmode: none\nmax_age: 1\n";
	char *data;

	check(n > 0 && strcmp(buf, "smtpgw-sts-cache: 1\nid: abc123\n"
				   "fetched: 1764000000\n\n") == 0,
	      "the header as written");
	snprintf(buf + n, sizeof(buf) - n, "%s", policy);
	data = copy(buf, strlen(buf));
	check(sts_cache_parse(data, strlen(buf), &c) &&
		      strcmp(c.id, "abc123") == 0 && c.fetched == 1764000000 &&
		      c.policy_len == strlen(policy) &&
		      memcmp(c.policy, policy, c.policy_len) == 0,
	      "round trip");
	check(!sts_cache_parse(data, n - 1, &c), "no empty line");
	free(data);
	check(sts_cache_header(buf, sizeof(buf), "a-b", 1) == 0,
	      "not an STS id");
	check(sts_cache_header(buf, 20, "abc", 1) == 0, "does not fit");
	data = copy("smtpgw-sts-cache: 1\nid: a\nfetched: 1x\n\n", 40);
	check(!sts_cache_parse(data, 40, &c), "a bad time");
	free(data);
	data = copy("smtpgw-sts-cache: 2\nid: a\nfetched: 1\n\n", 38);
	check(!sts_cache_parse(data, 38, &c), "another version");
	free(data);
	data = copy("smtpgw-sts-cache: 1\nid: \nfetched: 1\n\n", 37);
	check(!sts_cache_parse(data, 37, &c), "an empty id");
	free(data);
}

static void test_names(void)
{
	check(strcmp(tlsrpt_result_name(TLSRPT_STS_WEBPKI_INVALID),
		     "sts-webpki-invalid") == 0 &&
		      strcmp(tlsrpt_result_name(TLSRPT_STARTTLS_NOT_SUPPORTED),
			     "starttls-not-supported") == 0 &&
		      strcmp(tlsrpt_result_name(TLSRPT_COUNT),
			     "validation-failure") == 0,
	      "RFC 8460 result names");
	check(strcmp(sts_mode_name(STS_MODE_ENFORCE), "enforce") == 0 &&
		      strcmp(sts_mode_name(STS_MODE_TESTING), "testing") == 0 &&
		      strcmp(sts_mode_name(STS_MODE_NONE), "none") == 0,
	      "mode names");
}

int main(void)
{
	test_join();
	test_record();
	test_policy_valid();
	test_policy_invalid();
	test_policy_size();
	test_mx();
	test_cache();
	test_names();
	return tap_done();
}
