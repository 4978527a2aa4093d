/*
 * Unit tests for src/smtp_proto.c. Prints TAP (one "ok N - ..." line per
 * assertion, then "1..N") and exits 1 if any assertion failed.
 *
 * Inputs are spelled out in each call so a failing line names the exact
 * octets; S() passes a literal with its length so NULs survive.
 */
#include "tap.h"
#include "proto/smtp_proto.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S(lit) (lit), (sizeof(lit) - 1)



/* Escapes control and 8-bit octets so TAP lines stay one line each. */
static const char *show(const char *s, size_t n, char *buf, size_t cap)
{
	size_t o = 0;
	for (size_t i = 0; i < n && o + 5 < cap; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 0x20 && c < 0x7f && c != '\\')
			buf[o++] = (char)c;
		else
			o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", c);
	}
	buf[o] = '\0';
	return buf;
}

static bool span_is(const char *p, size_t n, const char *want)
{
	return p != NULL && n == strlen(want) && memcmp(p, want, n) == 0;
}

static const char *cmd_status_name(enum smtp_cmd_status st)
{
	static const char *const names[] = {"OK", "EMPTY", "UNKNOWN", "SYNTAX",
					    "BAD_OCTETS"};
	return (size_t)st < sizeof(names) / sizeof(names[0]) ? names[st] : "?";
}

static const char *path_status_name(enum smtp_path_status st)
{
	static const char *const names[] = {
		"OK",	     "SYNTAX",	  "TOO_LONG", "NEED_UTF8",
		"NO_DOMAIN", "BAD_PARAM", "NULL_RCPT"};
	return (size_t)st < sizeof(names) / sizeof(names[0]) ? names[st] : "?";
}

/* ---- commands ---- */

static void cmd_n(const char *line, size_t len, enum smtp_cmd_status want,
		  enum smtp_verb verb, const char *arg)
{
	struct smtp_cmd c;
	char b[256];
	enum smtp_cmd_status st = smtp_parse_command(line, len, &c);
	bool good = st == want;

	if (want == SMTP_CMD_OK)
		good = good && c.verb == verb && span_is(c.arg, c.arg_len, arg);
	check(good, "command \"%s\" -> %s verb %s arg \"%s\" (got %s)",
	      show(line, len, b, sizeof(b)), cmd_status_name(want),
	      smtp_verb_name(verb), arg ? arg : "", cmd_status_name(st));
}

static void cmd(const char *line, enum smtp_cmd_status want,
		enum smtp_verb verb, const char *arg)
{
	cmd_n(line, strlen(line), want, verb, arg);
}

static void test_commands(void)
{
	cmd("HELO client.example", SMTP_CMD_OK, SMTP_VERB_HELO,
	    "client.example");
	cmd("helo client.example", SMTP_CMD_OK, SMTP_VERB_HELO,
	    "client.example");
	cmd("EHLO [192.0.2.1]", SMTP_CMD_OK, SMTP_VERB_EHLO, "[192.0.2.1]");
	cmd("eHlO x", SMTP_CMD_OK, SMTP_VERB_EHLO, "x");
	cmd("EHLO", SMTP_CMD_OK, SMTP_VERB_EHLO, "");
	cmd("MAIL FROM:<a@b.example>", SMTP_CMD_OK, SMTP_VERB_MAIL,
	    "<a@b.example>");
	cmd("mail from:<a@b.example>", SMTP_CMD_OK, SMTP_VERB_MAIL,
	    "<a@b.example>");
	cmd("MAIL From:<>", SMTP_CMD_OK, SMTP_VERB_MAIL, "<>");
	cmd("MAIL FROM: <a@b.example>", SMTP_CMD_OK, SMTP_VERB_MAIL,
	    "<a@b.example>");
	cmd("MAIL FROM:   <a@b.example> SIZE=10 \t ", SMTP_CMD_OK,
	    SMTP_VERB_MAIL, "<a@b.example> SIZE=10");
	cmd("MAIL FROM:", SMTP_CMD_OK, SMTP_VERB_MAIL, "");
	cmd("MAIL <a@b.example>", SMTP_CMD_SYNTAX, SMTP_VERB_MAIL, NULL);
	cmd("MAIL", SMTP_CMD_SYNTAX, SMTP_VERB_MAIL, NULL);
	cmd("MAIL FROM", SMTP_CMD_SYNTAX, SMTP_VERB_MAIL, NULL);
	cmd("MAIL FROM <a@b.example>", SMTP_CMD_SYNTAX, SMTP_VERB_MAIL, NULL);
	cmd("MAIL TO:<a@b.example>", SMTP_CMD_SYNTAX, SMTP_VERB_MAIL, NULL);
	cmd("MAIL  FROM:<a@b.example>", SMTP_CMD_SYNTAX, SMTP_VERB_MAIL, NULL);
	cmd("MAILFROM:<a@b.example>", SMTP_CMD_UNKNOWN, SMTP_VERB_UNKNOWN,
	    NULL);
	cmd("RCPT TO:<a@b.example>", SMTP_CMD_OK, SMTP_VERB_RCPT,
	    "<a@b.example>");
	cmd("rcpt to: <a@b.example>", SMTP_CMD_OK, SMTP_VERB_RCPT,
	    "<a@b.example>");
	cmd("RCPT FROM:<a@b.example>", SMTP_CMD_SYNTAX, SMTP_VERB_RCPT, NULL);
	cmd("RCPT", SMTP_CMD_SYNTAX, SMTP_VERB_RCPT, NULL);
	cmd("RCPT T:<a@b>", SMTP_CMD_SYNTAX, SMTP_VERB_RCPT, NULL);
	cmd("DATA", SMTP_CMD_OK, SMTP_VERB_DATA, "");
	cmd("data   ", SMTP_CMD_OK, SMTP_VERB_DATA, "");
	cmd("RSET", SMTP_CMD_OK, SMTP_VERB_RSET, "");
	cmd("NOOP", SMTP_CMD_OK, SMTP_VERB_NOOP, "");
	cmd("noop    some text", SMTP_CMD_OK, SMTP_VERB_NOOP, "some text");
	cmd("QUIT", SMTP_CMD_OK, SMTP_VERB_QUIT, "");
	cmd("VRFY user", SMTP_CMD_OK, SMTP_VERB_VRFY, "user");
	cmd("HELP", SMTP_CMD_OK, SMTP_VERB_HELP, "");
	cmd("help MAIL", SMTP_CMD_OK, SMTP_VERB_HELP, "MAIL");
	cmd("STARTTLS", SMTP_CMD_OK, SMTP_VERB_STARTTLS, "");
	cmd("StartTls", SMTP_CMD_OK, SMTP_VERB_STARTTLS, "");
	cmd("", SMTP_CMD_EMPTY, SMTP_VERB_UNKNOWN, NULL);
	cmd("    ", SMTP_CMD_EMPTY, SMTP_VERB_UNKNOWN, NULL);
	cmd(" \t ", SMTP_CMD_EMPTY, SMTP_VERB_UNKNOWN, NULL);
	cmd("FOO bar", SMTP_CMD_UNKNOWN, SMTP_VERB_UNKNOWN, NULL);
	cmd("HELOX", SMTP_CMD_UNKNOWN, SMTP_VERB_UNKNOWN, NULL);
	cmd("HEL", SMTP_CMD_UNKNOWN, SMTP_VERB_UNKNOWN, NULL);
	cmd(" HELO x", SMTP_CMD_UNKNOWN, SMTP_VERB_UNKNOWN, NULL);
	cmd("HELO\tx", SMTP_CMD_UNKNOWN, SMTP_VERB_UNKNOWN, NULL);
	cmd_n(S("HELO a\0b"), SMTP_CMD_BAD_OCTETS, SMTP_VERB_UNKNOWN, NULL);
	cmd_n(S("\0"), SMTP_CMD_BAD_OCTETS, SMTP_VERB_UNKNOWN, NULL);
	cmd("HELO a\rb", SMTP_CMD_BAD_OCTETS, SMTP_VERB_UNKNOWN, NULL);
	cmd("HELO a\nb", SMTP_CMD_BAD_OCTETS, SMTP_VERB_UNKNOWN, NULL);
	cmd("NOOP \x7f", SMTP_CMD_BAD_OCTETS, SMTP_VERB_UNKNOWN, NULL);
	cmd("NOOP \x1b[0m", SMTP_CMD_BAD_OCTETS, SMTP_VERB_UNKNOWN, NULL);
	cmd("\x01", SMTP_CMD_BAD_OCTETS, SMTP_VERB_UNKNOWN, NULL);
	cmd("HELO a\tb", SMTP_CMD_OK, SMTP_VERB_HELO, "a\tb");
	cmd("HELO x \t ", SMTP_CMD_OK, SMTP_VERB_HELO, "x");
	cmd("HELO caf\xc3\xa9.example", SMTP_CMD_OK, SMTP_VERB_HELO,
	    "caf\xc3\xa9.example");
	cmd("RCPT TO:<j\xc3\xb6rg@x.example>", SMTP_CMD_OK, SMTP_VERB_RCPT,
	    "<j\xc3\xb6rg@x.example>");
}

static void test_verb_names(void)
{
	static const char *const want[SMTP_VERB_COUNT] = {
		"UNKNOWN", "HELO", "EHLO", "MAIL", "RCPT",     "DATA",
		"RSET",	   "NOOP", "QUIT", "VRFY", "HELP", "STARTTLS",
	};
	for (int v = 0; v < SMTP_VERB_COUNT; v++)
		check(strcmp(smtp_verb_name((enum smtp_verb)v), want[v]) == 0,
		      "smtp_verb_name(%d) is %s", v, want[v]);
	check(strcmp(smtp_verb_name(SMTP_VERB_COUNT), "UNKNOWN") == 0,
	      "smtp_verb_name(out of range) is UNKNOWN");
}

/* ---- MAIL ---- */

struct mail_result {
	enum smtp_path_status st;
	struct smtp_addr a;
	struct smtp_mail_params p;
	const char *bad;
	size_t bad_len;
};

static void mail_n(const char *arg, size_t len, struct mail_result *r)
{
	r->st = smtp_parse_mail(arg, len, &r->a, &r->p, &r->bad, &r->bad_len);
}

/* One assertion on status and (when given) the resulting mailbox. */
static void mail_case(const char *arg, enum smtp_path_status want,
		      const char *mailbox)
{
	struct mail_result r;
	char b[600];
	mail_n(arg, strlen(arg), &r);
	bool good = r.st == want;
	if (mailbox)
		good = good && strcmp(r.a.mailbox, mailbox) == 0 &&
		       r.a.mailbox_len == strlen(mailbox);
	check(good, "MAIL \"%s\" -> %s%s%s (got %s)",
	      show(arg, strlen(arg), b, sizeof(b)), path_status_name(want),
	      mailbox ? " mailbox " : "", mailbox ? mailbox : "",
	      path_status_name(r.st));
}

static void mail_bad_param(const char *arg, const char *token)
{
	struct mail_result r;
	mail_n(arg, strlen(arg), &r);
	check(r.st == SMTP_PATH_BAD_PARAM && span_is(r.bad, r.bad_len, token) &&
		      r.bad >= arg && r.bad + r.bad_len <= arg + strlen(arg),
	      "MAIL \"%s\" -> BAD_PARAM at \"%s\"", arg, token);
}

static void test_mail_basic(void)
{
	struct mail_result r;

	mail_n(S("<user@example.com>"), &r);
	check(r.st == SMTP_PATH_OK &&
		      strcmp(r.a.mailbox, "user@example.com") == 0 &&
		      r.a.mailbox_len == 16 && r.a.local_len == 4 &&
		      r.a.domain == 5 && !r.a.is_null && !r.a.has_route &&
		      !r.a.routing_chars && !r.a.utf8 && !r.a.literal,
	      "MAIL <user@example.com>: mailbox, offsets and flags");
	check(strcmp(r.a.mailbox + r.a.domain, "example.com") == 0,
	      "MAIL domain offset points at the domain");
	check(!r.p.has_size && r.p.body == SMTP_BODY_UNSPECIFIED &&
		      !r.p.smtputf8 && r.bad == NULL && r.bad_len == 0,
	      "MAIL without params leaves params and bad_param clear");

	mail_n(S("<>"), &r);
	check(r.st == SMTP_PATH_OK && r.a.is_null && r.a.mailbox_len == 0 &&
		      r.a.mailbox[0] == '\0' && r.a.domain == 0,
	      "MAIL <> is the null sender");
	mail_n(S("<> SIZE=100 BODY=8BITMIME"), &r);
	check(r.st == SMTP_PATH_OK && r.a.is_null && r.p.has_size &&
		      r.p.size == 100 && r.p.body == SMTP_BODY_8BITMIME,
	      "MAIL <> with SIZE and BODY");

	mail_case("user@example.com", SMTP_PATH_SYNTAX, NULL);
	mail_case("<user@example.com", SMTP_PATH_SYNTAX, NULL);
	mail_case("user@example.com>", SMTP_PATH_SYNTAX, NULL);
	mail_case("", SMTP_PATH_SYNTAX, NULL);
	mail_case("<", SMTP_PATH_SYNTAX, NULL);
	mail_case("<a@b.example>x", SMTP_PATH_SYNTAX, NULL);
	mail_case("<a@b.example>SIZE=1", SMTP_PATH_SYNTAX, NULL);
	mail_case("<a@b.example><c@d.example>", SMTP_PATH_SYNTAX, NULL);
	mail_case(" <a@b.example>", SMTP_PATH_SYNTAX, NULL);
	mail_case("<a@b.example>   ", SMTP_PATH_OK, "a@b.example");
	mail_case("<user>", SMTP_PATH_NO_DOMAIN, NULL);
	mail_case("<postmaster>", SMTP_PATH_NO_DOMAIN, NULL);
	mail_case("<a@b>", SMTP_PATH_OK, "a@b");
}

static void test_mail_params(void)
{
	struct mail_result r;

	mail_n(S("<a@b.example> SIZE=18446744073709551615"), &r);
	check(r.st == SMTP_PATH_OK && r.p.has_size &&
		      r.p.size == UINT64_MAX,
	      "SIZE=2^64-1 is accepted");
	mail_n(S("<a@b.example> SIZE=0"), &r);
	check(r.st == SMTP_PATH_OK && r.p.has_size && r.p.size == 0,
	      "SIZE=0 is accepted");
	mail_bad_param("<a@b.example> SIZE=18446744073709551616",
		       "SIZE=18446744073709551616");
	mail_bad_param("<a@b.example> SIZE=99999999999999999999999",
		       "SIZE=99999999999999999999999");
	mail_bad_param("<a@b.example> SIZE=12a", "SIZE=12a");
	mail_bad_param("<a@b.example> SIZE=-1", "SIZE=-1");
	mail_bad_param("<a@b.example> SIZE=", "SIZE=");
	mail_bad_param("<a@b.example> SIZE", "SIZE");
	mail_bad_param("<a@b.example> SIZE=1 SIZE=2", "SIZE=2");
	mail_n(S("<a@b.example> size=42"), &r);
	check(r.st == SMTP_PATH_OK && r.p.size == 42,
	      "size= keyword is case-insensitive");

	mail_n(S("<a@b.example> BODY=7BIT"), &r);
	check(r.st == SMTP_PATH_OK && r.p.body == SMTP_BODY_7BIT,
	      "BODY=7BIT");
	mail_n(S("<a@b.example> body=8bitmime"), &r);
	check(r.st == SMTP_PATH_OK && r.p.body == SMTP_BODY_8BITMIME,
	      "body=8bitmime (case-insensitive)");
	mail_bad_param("<a@b.example> BODY=BINARYMIME", "BODY=BINARYMIME");
	mail_bad_param("<a@b.example> BODY=", "BODY=");
	mail_bad_param("<a@b.example> BODY", "BODY");
	mail_bad_param("<a@b.example> BODY=7BIT BODY=7BIT", "BODY=7BIT");

	mail_n(S("<a@b.example> SMTPUTF8"), &r);
	check(r.st == SMTP_PATH_OK && r.p.smtputf8, "SMTPUTF8 flag");
	mail_n(S("<a@b.example> smtputf8"), &r);
	check(r.st == SMTP_PATH_OK && r.p.smtputf8, "smtputf8 lower case");
	mail_bad_param("<a@b.example> SMTPUTF8=YES", "SMTPUTF8=YES");
	mail_bad_param("<a@b.example> SMTPUTF8 SMTPUTF8", "SMTPUTF8");

	mail_n(S("<a@b.example> REQUIRETLS"), &r);
	check(r.st == SMTP_PATH_OK && r.p.requiretls && !r.p.smtputf8,
	      "REQUIRETLS flag (RFC 8689)");
	mail_n(S("<> SMTPUTF8 requiretls"), &r);
	check(r.st == SMTP_PATH_OK && r.p.requiretls && r.p.smtputf8,
	      "requiretls lower case, with SMTPUTF8, from the null sender");
	mail_n(S("<a@b.example>"), &r);
	check(r.st == SMTP_PATH_OK && !r.p.requiretls, "no REQUIRETLS: unset");
	mail_bad_param("<a@b.example> REQUIRETLS=YES", "REQUIRETLS=YES");
	mail_bad_param("<a@b.example> REQUIRETLS REQUIRETLS", "REQUIRETLS");

	mail_bad_param("<a@b.example> FOO=BAR", "FOO=BAR");
	mail_bad_param("<a@b.example> AUTH=<>", "AUTH=<>");
	mail_bad_param("<a@b.example> SIZE=1 RET=HDRS BODY=7BIT", "RET=HDRS");
	mail_bad_param("<a@b.example> =1", "=1");

	mail_n(S("<a@b.example>  SIZE=5   BODY=8BITMIME SMTPUTF8  "), &r);
	check(r.st == SMTP_PATH_OK && r.p.has_size && r.p.size == 5 &&
		      r.p.body == SMTP_BODY_8BITMIME && r.p.smtputf8,
	      "several params with extra spaces");

	/* The pointers are optional. */
	struct smtp_addr a;
	struct smtp_mail_params p;
	check(smtp_parse_mail(S("<a@b.example> X"), &a, &p, NULL, NULL) ==
		      SMTP_PATH_BAD_PARAM,
	      "BAD_PARAM with NULL bad_param pointers");
}

static void test_mail_routes_and_locals(void)
{
	struct mail_result r;

	mail_n(S("<@a.example,@b.example:user@c.example>"), &r);
	check(r.st == SMTP_PATH_OK && r.a.has_route &&
		      strcmp(r.a.mailbox, "user@c.example") == 0 &&
		      r.a.local_len == 4,
	      "source route is stripped and noted");
	mail_case("<@a.example:user@c.example>", SMTP_PATH_OK,
		  "user@c.example");
	mail_case("<@:user@c.example>", SMTP_PATH_SYNTAX, NULL);
	mail_case("<@a.example user@c.example>", SMTP_PATH_SYNTAX, NULL);
	mail_case("<@a.example,user@c.example>", SMTP_PATH_SYNTAX, NULL);
	mail_case("<@a.example:>", SMTP_PATH_SYNTAX, NULL);
	mail_case("<@[192.0.2.1]:u@c.example>", SMTP_PATH_SYNTAX, NULL);
	mail_case("<@a.example,:u@c.example>", SMTP_PATH_SYNTAX, NULL);

	mail_n(S("<\"john doe\"@example.com>"), &r);
	check(r.st == SMTP_PATH_OK &&
		      strcmp(r.a.mailbox, "\"john doe\"@example.com") == 0 &&
		      r.a.local_len == 10 && !r.a.routing_chars,
	      "quoted local part is kept quoted");
	mail_case("<\"a\\\"b\"@x.example>", SMTP_PATH_OK,
		  "\"a\\\"b\"@x.example");
	mail_case("<\"\"@x.example>", SMTP_PATH_OK, "\"\"@x.example");
	mail_n(S("<\"a@b\"@c.example>"), &r);
	check(r.st == SMTP_PATH_OK && r.a.routing_chars,
	      "quoted '@' sets routing_chars");
	mail_case("<\"unterminated@x.example>", SMTP_PATH_SYNTAX, NULL);
	mail_case("<\"a\tb\"@x.example>", SMTP_PATH_SYNTAX, NULL);
	mail_case("<\"a\"b@x.example>", SMTP_PATH_SYNTAX, NULL);
	mail_case("<\"a\\\x01\"@x.example>", SMTP_PATH_SYNTAX, NULL);

	mail_n(S("<a%b@c.example>"), &r);
	check(r.st == SMTP_PATH_OK && r.a.routing_chars,
	      "'%%' sets routing_chars");
	mail_n(S("<a!b@c.example>"), &r);
	check(r.st == SMTP_PATH_OK && r.a.routing_chars,
	      "'!' sets routing_chars");
	mail_n(S("<\"a%b\"@c.example>"), &r);
	check(r.st == SMTP_PATH_OK && r.a.routing_chars,
	      "quoted '%%' sets routing_chars");
	mail_n(S("<a.b+tag@c.example>"), &r);
	check(r.st == SMTP_PATH_OK && !r.a.routing_chars,
	      "plain dot-string has no routing_chars");

	mail_case("<!#$%&'*+-/=?^_`{|}~@x.example>", SMTP_PATH_OK,
		  "!#$%&'*+-/=?^_`{|}~@x.example");
	mail_case("<.a@b.example>", SMTP_PATH_SYNTAX, NULL);
	mail_case("<a.@b.example>", SMTP_PATH_SYNTAX, NULL);
	mail_case("<a..b@c.example>", SMTP_PATH_SYNTAX, NULL);
	mail_case("<a b@c.example>", SMTP_PATH_SYNTAX, NULL);
	mail_case("<a(b)@c.example>", SMTP_PATH_SYNTAX, NULL);
	mail_case("<a,b@c.example>", SMTP_PATH_SYNTAX, NULL);
	mail_case("<@c.example>", SMTP_PATH_SYNTAX, NULL);
	mail_case("<a@@c.example>", SMTP_PATH_SYNTAX, NULL);
}

static void test_mail_domains(void)
{
	struct mail_result r;

	mail_case("<a@b-c.example>", SMTP_PATH_OK, "a@b-c.example");
	mail_case("<a@B.EXAMPLE>", SMTP_PATH_OK, "a@B.EXAMPLE");
	mail_case("<a@-b.example>", SMTP_PATH_SYNTAX, NULL);
	mail_case("<a@b-.example>", SMTP_PATH_SYNTAX, NULL);
	mail_case("<a@b..example>", SMTP_PATH_SYNTAX, NULL);
	mail_case("<a@b.example.>", SMTP_PATH_SYNTAX, NULL);
	mail_case("<a@.b.example>", SMTP_PATH_SYNTAX, NULL);
	mail_case("<a@b_c.example>", SMTP_PATH_SYNTAX, NULL);
	mail_case("<a@>", SMTP_PATH_SYNTAX, NULL);
	mail_case("<a@b.example", SMTP_PATH_SYNTAX, NULL);

	mail_n(S("<a@[192.0.2.1]>"), &r);
	check(r.st == SMTP_PATH_OK && r.a.literal &&
		      strcmp(r.a.mailbox + r.a.domain, "[192.0.2.1]") == 0,
	      "IPv4 literal");
	mail_case("<a@[0.0.0.0]>", SMTP_PATH_OK, "a@[0.0.0.0]");
	mail_case("<a@[255.255.255.255]>", SMTP_PATH_OK,
		  "a@[255.255.255.255]");
	mail_case("<a@[256.1.1.1]>", SMTP_PATH_SYNTAX, NULL);
	mail_case("<a@[1.2.3]>", SMTP_PATH_SYNTAX, NULL);
	mail_case("<a@[1.2.3.4.5]>", SMTP_PATH_SYNTAX, NULL);
	mail_case("<a@[01.2.3.4]>", SMTP_PATH_SYNTAX, NULL);
	mail_case("<a@[1.2.3.]>", SMTP_PATH_SYNTAX, NULL);
	mail_case("<a@[1.2.3.4>", SMTP_PATH_SYNTAX, NULL);
	mail_case("<a@[]>", SMTP_PATH_SYNTAX, NULL);
	mail_case("<a@[1.2.3.4]x>", SMTP_PATH_SYNTAX, NULL);
	mail_n(S("<a@[IPv6:2001:db8::1]>"), &r);
	check(r.st == SMTP_PATH_OK && r.a.literal, "IPv6 literal");
	mail_case("<a@[ipv6:::1]>", SMTP_PATH_OK, "a@[ipv6:::1]");
	mail_case("<a@[IPv6:::]>", SMTP_PATH_OK, "a@[IPv6:::]");
	mail_case("<a@[IPv6:::ffff:192.0.2.1]>", SMTP_PATH_OK,
		  "a@[IPv6:::ffff:192.0.2.1]");
	mail_case("<a@[IPv6:1:2:3:4:5:6:7:8]>", SMTP_PATH_OK,
		  "a@[IPv6:1:2:3:4:5:6:7:8]");
	mail_case("<a@[IPv6:1:2:3:4:5:6:192.0.2.1]>", SMTP_PATH_OK,
		  "a@[IPv6:1:2:3:4:5:6:192.0.2.1]");
	mail_case("<a@[IPv6:1:2:3:4:5:6:7]>", SMTP_PATH_SYNTAX, NULL);
	mail_case("<a@[IPv6:1:2:3:4:5:6:7:8:9]>", SMTP_PATH_SYNTAX, NULL);
	mail_case("<a@[IPv6:1::2::3]>", SMTP_PATH_SYNTAX, NULL);
	mail_case("<a@[IPv6:1:2:3:4::5:6:7:8]>", SMTP_PATH_SYNTAX, NULL);
	mail_case("<a@[IPv6:1:2:3:4:5:6:7::]>", SMTP_PATH_OK,
		  "a@[IPv6:1:2:3:4:5:6:7::]");
	mail_case("<a@[IPv6:12345::1]>", SMTP_PATH_SYNTAX, NULL);
	mail_case("<a@[IPv6:g::1]>", SMTP_PATH_SYNTAX, NULL);
	mail_case("<a@[IPv6:1:]>", SMTP_PATH_SYNTAX, NULL);
	mail_case("<a@[IPv6:]>", SMTP_PATH_SYNTAX, NULL);
	mail_case("<a@[IPv6:::1.2.3.256]>", SMTP_PATH_SYNTAX, NULL);
	mail_case("<a@[x-tag:stuff]>", SMTP_PATH_SYNTAX, NULL);
}

/* Builds "<" local "@" domain ">" from repeated octets. */
static size_t make_path(char *buf, size_t local, size_t domain)
{
	size_t n = 0;
	buf[n++] = '<';
	memset(buf + n, 'l', local);
	n += local;
	buf[n++] = '@';
	/* Labels of 63 joined by dots, so only the total length varies. */
	for (size_t i = 0; i < domain; i++)
		buf[n++] = (i % 64 == 63) ? '.' : 'd';
	buf[n++] = '>';
	buf[n] = '\0';
	return n;
}

static void test_mail_lengths(void)
{
	char buf[600];
	struct mail_result r;

	make_path(buf, 64, 10);
	mail_case(buf, SMTP_PATH_OK, NULL);
	make_path(buf, 65, 10);
	mail_case(buf, SMTP_PATH_TOO_LONG, NULL);
	check(make_path(buf, 64, 189) == 256, "path of 256 octets built");
	mail_n(buf, strlen(buf), &r);
	check(r.st == SMTP_PATH_OK && r.a.mailbox_len == 254,
	      "path of exactly 256 octets is accepted");
	make_path(buf, 64, 190);
	mail_case(buf, SMTP_PATH_TOO_LONG, NULL);
	make_path(buf, 1, 255);
	mail_case(buf, SMTP_PATH_TOO_LONG, NULL);
	make_path(buf, 1, 257);
	mail_case(buf, SMTP_PATH_TOO_LONG, NULL);
	make_path(buf, 1, 63);
	mail_case(buf, SMTP_PATH_OK, NULL);
	/* A 64-octet label is a Domain syntax error, not a length one. */
	make_path(buf, 1, 63);
	buf[strlen(buf) - 1] = 'x';
	strcat(buf, ">");
	mail_case(buf, SMTP_PATH_SYNTAX, NULL);

	/* The route counts towards the path even though it is stripped. */
	char route[600] = "<@";
	memset(route + 2, 'r', 60);
	strcpy(route + 62, ":");
	make_path(buf, 64, 130);
	strcat(route, buf + 1);
	mail_case(route, SMTP_PATH_TOO_LONG, NULL);
}

static void test_mail_utf8(void)
{
	struct mail_result r;

	mail_case("<j\xc3\xb6rg@example.com>", SMTP_PATH_NEED_UTF8, NULL);
	mail_n(S("<j\xc3\xb6rg@example.com> SMTPUTF8"), &r);
	check(r.st == SMTP_PATH_OK && r.a.utf8 &&
		      strcmp(r.a.mailbox, "j\xc3\xb6rg@example.com") == 0,
	      "8-bit local part with SMTPUTF8 is accepted and flagged");
	mail_case("<a@b\xc3\xbc\x63her.example>", SMTP_PATH_NEED_UTF8, NULL);
	mail_n(S("<a@b\xc3\xbc\x63her.example> SIZE=1 SMTPUTF8"), &r);
	check(r.st == SMTP_PATH_OK && r.a.utf8, "U-label domain with SMTPUTF8");
	mail_case("<\"j\xc3\xb6\"@x.example>", SMTP_PATH_NEED_UTF8, NULL);
	mail_case("<\xff@x.example> SMTPUTF8", SMTP_PATH_SYNTAX, NULL);
	mail_case("<\xc3@x.example> SMTPUTF8", SMTP_PATH_SYNTAX, NULL);
	mail_case("<\xc0\xaf@x.example> SMTPUTF8", SMTP_PATH_SYNTAX, NULL);
	mail_case("<\xed\xa0\x80@x.example> SMTPUTF8", SMTP_PATH_SYNTAX, NULL);
	mail_case("<a@-\xc3\xbc.example> SMTPUTF8", SMTP_PATH_SYNTAX, NULL);
	mail_n(S("<@b\xc3\xbc.example:a@b.example>"), &r);
	check(r.st == SMTP_PATH_NEED_UTF8 && !r.a.utf8,
	      "8-bit route needs SMTPUTF8 but mailbox is not utf8");
	mail_n(S("<j\xc3\xb6@x.example> FOO"), &r);
	check(r.st == SMTP_PATH_BAD_PARAM, "bad param wins over NEED_UTF8");
	mail_case("<\"a\\\xc3\xb6\"@x.example> SMTPUTF8", SMTP_PATH_SYNTAX,
		  NULL);
}

/* ---- RCPT ---- */

static void rcpt_case(const char *arg, bool utf8, enum smtp_path_status want,
		      const char *mailbox)
{
	struct smtp_addr a;
	const char *bad;
	size_t bad_len;
	char b[600];
	enum smtp_path_status st =
		smtp_parse_rcpt(arg, strlen(arg), utf8, &a, &bad, &bad_len);
	bool good = st == want;
	if (mailbox)
		good = good && strcmp(a.mailbox, mailbox) == 0 &&
		       a.mailbox_len == strlen(mailbox);
	check(good, "RCPT%s \"%s\" -> %s%s%s (got %s)",
	      utf8 ? " (smtputf8)" : "", show(arg, strlen(arg), b, sizeof(b)),
	      path_status_name(want), mailbox ? " mailbox " : "",
	      mailbox ? mailbox : "", path_status_name(st));
}

static void test_rcpt(void)
{
	struct smtp_addr a;
	const char *bad = NULL;
	size_t bad_len = 0;

	rcpt_case("<user@example.com>", false, SMTP_PATH_OK,
		  "user@example.com");
	rcpt_case("<user@example.com>   ", false, SMTP_PATH_OK,
		  "user@example.com");
	rcpt_case("<>", false, SMTP_PATH_NULL_RCPT, NULL);
	rcpt_case("<> ", true, SMTP_PATH_NULL_RCPT, NULL);
	check(smtp_parse_rcpt(S("<postmaster>"), false, &a, &bad, &bad_len) ==
			      SMTP_PATH_OK &&
		      a.domain == a.mailbox_len && a.local_len == 10 &&
		      strcmp(a.mailbox, "postmaster") == 0,
	      "<postmaster> is accepted with domain == mailbox_len");
	rcpt_case("<PostMaster>", false, SMTP_PATH_OK, "PostMaster");
	rcpt_case("<postmaster@example.com>", false, SMTP_PATH_OK,
		  "postmaster@example.com");
	rcpt_case("<postmast>", false, SMTP_PATH_NO_DOMAIN, NULL);
	rcpt_case("<postmasters>", false, SMTP_PATH_NO_DOMAIN, NULL);
	rcpt_case("<user>", false, SMTP_PATH_NO_DOMAIN, NULL);
	rcpt_case("<\"postmaster\">", false, SMTP_PATH_NO_DOMAIN, NULL);
	rcpt_case("<@a.example:postmaster>", false, SMTP_PATH_NO_DOMAIN, NULL);
	rcpt_case("<@a.example:u@b.example>", false, SMTP_PATH_OK,
		  "u@b.example");
	rcpt_case("u@b.example", false, SMTP_PATH_SYNTAX, NULL);
	rcpt_case("<u@b.example", false, SMTP_PATH_SYNTAX, NULL);
	rcpt_case("<u@b.example>x", false, SMTP_PATH_SYNTAX, NULL);
	rcpt_case("<j\xc3\xb6rg@example.com>", false, SMTP_PATH_NEED_UTF8,
		  NULL);
	rcpt_case("<j\xc3\xb6rg@example.com>", true, SMTP_PATH_OK,
		  "j\xc3\xb6rg@example.com");
	rcpt_case("<a@[192.0.2.1]>", false, SMTP_PATH_OK, "a@[192.0.2.1]");

	const char *arg = "<u@b.example> NOTIFY=NEVER";
	check(smtp_parse_rcpt(arg, strlen(arg), false, &a, &bad, &bad_len) ==
			      SMTP_PATH_BAD_PARAM &&
		      span_is(bad, bad_len, "NOTIFY=NEVER") && bad == arg + 14,
	      "RCPT parameter -> BAD_PARAM pointing at it");
	arg = "<u@b.example>  SIZE=1 X";
	check(smtp_parse_rcpt(arg, strlen(arg), false, &a, &bad, &bad_len) ==
			      SMTP_PATH_BAD_PARAM &&
		      span_is(bad, bad_len, "SIZE=1"),
	      "RCPT SIZE= is not a RCPT parameter");
	check(smtp_parse_rcpt(S("<u@b.example>"), false, &a, &bad,
			      &bad_len) == SMTP_PATH_OK &&
		      bad == NULL && bad_len == 0,
	      "RCPT OK clears bad_param");
}

/* ---- domain matching ---- */

static bool dm(const char *d, const char *p)
{
	return smtp_domain_matches(d, strlen(d), p, strlen(p));
}

static void test_domain_matches(void)
{
	check(dm("example.test", "example.test"), "exact match");
	check(dm("Example.TEST", "example.test"), "exact match ignores case");
	check(!dm("a.example.test", "example.test"),
	      "no dot: subdomain does not match");
	check(dm("a.example.test", ".example.test"), "dot pattern: subdomain");
	check(dm("x.A.Example.Test", ".example.test"),
	      "dot pattern: deeper subdomain, any case");
	check(!dm("example.test", ".example.test"),
	      "dot pattern does not match the apex");
	check(!dm("badexample.test", ".example.test"),
	      "dot pattern respects label boundary");
	check(!dm("example.tes", "example.test"), "shorter domain");
	check(!dm("example.test", ""), "empty pattern matches nothing");
	check(!dm("", "example.test"), "empty domain");
	check(dm("b\xc3\xbc.test", "b\xc3\xbc.test"), "8-bit octets exact");
	check(!dm("b\xc3\x9c.test", "b\xc3\xbc.test"),
	      "8-bit octets are not case-folded");
}

/* ---- reply lines ---- */

static void reply_case(const char *line, bool want, int code, bool more,
		       const char *text)
{
	struct smtp_reply_line r;
	bool got = smtp_parse_reply_line(line, strlen(line), &r);
	bool good = got == want;
	if (want)
		good = good && r.code == code && r.more == more &&
		       span_is(r.text, r.text_len, text);
	check(good, "reply \"%s\" -> %s", line, want ? "parsed" : "rejected");
}

static void test_reply_lines(void)
{
	reply_case("250 2.0.0 Ok", true, 250, false, "2.0.0 Ok");
	reply_case("250-PIPELINING", true, 250, true, "PIPELINING");
	reply_case("250", true, 250, false, "");
	reply_case("250-", true, 250, true, "");
	reply_case("354 go ahead", true, 354, false, "go ahead");
	reply_case("421 bye", true, 421, false, "bye");
	reply_case("550 5.1.1 no such user", true, 550, false,
		   "5.1.1 no such user");
	reply_case("199 x", false, 0, false, NULL);
	reply_case("600 x", false, 0, false, NULL);
	reply_case("25 x", false, 0, false, NULL);
	reply_case("2500", false, 0, false, NULL);
	reply_case("25a ok", false, 0, false, NULL);
	reply_case("", false, 0, false, NULL);
	reply_case("250\tok", false, 0, false, NULL);
	reply_case("250_ok", false, 0, false, NULL);
}

/* ---- DATA decoder ---- */

#define DATA_CAP 4096

struct data_run {
	struct smtp_data_decoder d;
	enum smtp_data_status st;
	char out[DATA_CAP + 2];
	size_t out_len;
	size_t consumed;
};

/* Feeds `in` cut at the ascending offsets in cuts[], stopping at the end. */
static void data_run(const char *in, size_t len, const size_t *cuts,
		     size_t ncuts, struct data_run *r)
{
	size_t from = 0;

	smtp_data_init(&r->d);
	r->st = SMTP_DATA_MORE;
	r->out_len = 0;
	r->consumed = 0;
	for (size_t k = 0; k <= ncuts && r->st == SMTP_DATA_MORE; k++) {
		size_t to = k < ncuts ? cuts[k] : len;
		size_t n = 0, used = 0;
		r->st = smtp_data_feed(&r->d, in + from, to - from,
				       r->out + r->out_len, &n, &used);
		r->out_len += n;
		r->consumed += used;
		from = to;
	}
}

static void data_whole(const char *in, size_t len, struct data_run *r)
{
	data_run(in, len, NULL, 0, r);
}

static bool runs_equal(const struct data_run *a, const struct data_run *b)
{
	return a->st == b->st && a->consumed == b->consumed &&
	       a->out_len == b->out_len &&
	       memcmp(a->out, b->out, a->out_len) == 0 &&
	       a->d.size == b->d.size && a->d.line_len == b->d.line_len &&
	       a->d.state == b->d.state && a->d.bare_lf == b->d.bare_lf &&
	       a->d.bare_cr == b->d.bare_cr &&
	       a->d.long_line == b->d.long_line && a->d.nul == b->d.nul;
}

static bool out_is(const struct data_run *r, const char *want, size_t n)
{
	return r->out_len == n && memcmp(r->out, want, n) == 0 &&
	       r->d.size == n;
}

static bool no_flags(const struct data_run *r)
{
	return !r->d.bare_lf && !r->d.bare_cr && !r->d.long_line && !r->d.nul;
}

static void test_data_basic(void)
{
	struct data_run r;

	data_whole(S("Hello\r\n.\r\n"), &r);
	check(r.st == SMTP_DATA_END && out_is(&r, S("Hello\r\n")) &&
		      r.consumed == 10 && no_flags(&r),
	      "simple message ends at CRLF.CRLF");
	data_whole(S(".\r\n"), &r);
	check(r.st == SMTP_DATA_END && out_is(&r, S("")) && r.consumed == 3,
	      "empty message: DATA's CRLF counts as the first");
	data_whole(S("..dot\r\n.\r\n"), &r);
	check(r.st == SMTP_DATA_END && out_is(&r, S(".dot\r\n")),
	      "dot-unstuffing at the very start");
	data_whole(S("a\r\n..\r\n.\r\n"), &r);
	check(r.st == SMTP_DATA_END && out_is(&r, S("a\r\n.\r\n")),
	      "\"..\" line becomes \".\"");
	data_whole(S("a\r\n.x\r\n.\r\n"), &r);
	check(r.st == SMTP_DATA_END && out_is(&r, S("a\r\nx\r\n")),
	      "a single leading dot is removed");
	data_whole(S("a.b\r\n.\r\n"), &r);
	check(r.st == SMTP_DATA_END && out_is(&r, S("a.b\r\n")),
	      "dots inside a line stay");
	data_whole(S("a\r\n.\r\nMAIL FROM:<x@y>\r\n"), &r);
	check(r.st == SMTP_DATA_END && out_is(&r, S("a\r\n")) &&
		      r.consumed == 6,
	      "bytes after the end are not consumed");
	size_t n = 99, used = 99;
	char out[16];
	check(smtp_data_feed(&r.d, S("more"), out, &n, &used) ==
			      SMTP_DATA_END &&
		      n == 0 && used == 0,
	      "feeding after the end consumes nothing");
	data_whole(S("a\r\nb"), &r);
	check(r.st == SMTP_DATA_MORE && r.consumed == 4 &&
		      out_is(&r, S("a\r\nb")) && r.d.line_len == 1,
	      "no end yet: all consumed, line_len of the partial line");
	data_whole(S("a\0b\r\n.\r\n"), &r);
	check(r.st == SMTP_DATA_END && r.d.nul && out_is(&r, S("a\0b\r\n")),
	      "NUL is content and flagged");
	data_whole(S("\r\n.\r\n"), &r);
	check(r.st == SMTP_DATA_END && out_is(&r, S("\r\n")) && no_flags(&r),
	      "empty first line then end");

	struct smtp_data_decoder z;
	memset(&z, 0, sizeof(z));
	check(smtp_data_feed(&z, S(".\r\n"), out, &n, &used) == SMTP_DATA_END &&
		      used == 3,
	      "a zeroed decoder behaves like a fresh one");
}

/* Each variant must neither end the data nor unstuff; text around is kept. */
static void smuggle_case(const char *name, const char *v, size_t vlen,
			 const char *want, size_t want_len, bool lf, bool cr)
{
	char in[64];
	struct data_run r;

	memcpy(in, "a", 1);
	memcpy(in + 1, v, vlen);
	memcpy(in + 1 + vlen, "b\r\n.\r\n", 6);
	size_t len = vlen + 7;
	data_whole(in, len, &r);
	check(r.st == SMTP_DATA_END && r.consumed == len &&
		      out_is(&r, want, want_len) && r.d.bare_lf == lf &&
		      r.d.bare_cr == cr,
	      "smuggling %s is content, not the end", name);
	data_whole(in, vlen + 1, &r);
	check(r.st == SMTP_DATA_MORE && r.consumed == vlen + 1,
	      "smuggling %s alone does not end the data", name);
}

static void test_data_smuggling(void)
{
	smuggle_case("\\n.\\n", S("\n.\n"), S("a\n.\nb\r\n"), true, false);
	smuggle_case("\\n.\\r\\n", S("\n.\r\n"), S("a\n.\r\nb\r\n"), true,
		     false);
	smuggle_case("\\r\\n.\\n", S("\r\n.\n"), S("a\r\n\nb\r\n"), true,
		     false);
	smuggle_case("\\r.\\r", S("\r.\r"), S("a\r.\rb\r\n"), false, true);
	smuggle_case("\\r\\n.\\r", S("\r\n.\r"), S("a\r\n\rb\r\n"), false,
		     true);
	smuggle_case(".\\r\\n mid-line", S(".\r\n"), S("a.\r\nb\r\n"), false,
		     false);
	smuggle_case("\\r\\n.\\r\\r\\n", S("\r\n.\r\r\n"),
		     S("a\r\n\r\r\nb\r\n"), false, true);
	smuggle_case("\\n\\r\\n.\\n", S("\n\r\n.\n"), S("a\n\r\n\nb\r\n"),
		     true, false);

	struct data_run r;
	data_whole(S("\n.\r\n"), &r);
	check(r.st == SMTP_DATA_MORE && r.d.bare_lf,
	      "\\n.\\r\\n at the very start does not end the data");
}

static void test_data_hold_back(void)
{
	struct smtp_data_decoder d;
	char out[16];
	size_t n, used;

	smtp_data_init(&d);
	check(smtp_data_feed(&d, S("a\r\n.\r"), out, &n, &used) ==
			      SMTP_DATA_MORE &&
		      n == 3 && used == 5,
	      "\".\\r\" at a line start is held back");
	check(smtp_data_feed(&d, S("\n"), out, &n, &used) == SMTP_DATA_END &&
		      n == 0 && used == 1,
	      "the held \".\\r\" completes the end marker");

	smtp_data_init(&d);
	smtp_data_feed(&d, S("a\r\n.\r"), out, &n, &used);
	check(smtp_data_feed(&d, S("x"), out, &n, &used) == SMTP_DATA_MORE &&
		      n == 2 && memcmp(out, "\rx", 2) == 0 && d.bare_cr,
	      "the held CR is emitted as a bare CR on the next call");
}

static void test_data_long_lines(void)
{
	static char in[DATA_CAP];
	struct data_run r;

	memset(in, 'x', 998);
	memcpy(in + 998, "\r\n.\r\n", 5);
	data_whole(in, 1003, &r);
	check(r.st == SMTP_DATA_END && !r.d.long_line && r.d.size == 1000,
	      "a line of exactly 1000 octets with CRLF is not long");
	memset(in, 'x', 999);
	memcpy(in + 999, "\r\n.\r\n", 5);
	data_whole(in, 1004, &r);
	check(r.st == SMTP_DATA_END && r.d.long_line,
	      "a line of 1001 octets with CRLF is long");
	in[0] = '.';
	memset(in + 1, 'x', 998);
	memcpy(in + 999, "\r\n.\r\n", 5);
	data_whole(in, 1004, &r);
	check(r.st == SMTP_DATA_END && !r.d.long_line,
	      "the stuffing dot is not counted in the line length");
	memset(in, 'x', 1001);
	data_whole(in, 1001, &r);
	check(r.st == SMTP_DATA_MORE && r.d.long_line && r.d.line_len == 1001,
	      "an unfinished line over the limit is already long");
	memset(in, 'x', 600);
	memcpy(in + 600, "\n", 1);
	memset(in + 601, 'y', 600);
	data_whole(in, 1201, &r);
	check(r.d.long_line && r.d.bare_lf && r.d.line_len == 1201,
	      "a bare LF does not reset the line length");
	memset(in, 'x', 600);
	memcpy(in + 600, "\r\n", 2);
	memset(in + 602, 'y', 600);
	data_whole(in, 1202, &r);
	check(!r.d.long_line && r.d.line_len == 600,
	      "CRLF resets the line length");
}

static const char sample[] =
	"From: a@b.example\r\n"
	"..stuffed\r\n"
	".x\r\n"
	"bare\nlf\n.\nand\rcr\r.\r"
	"\r\n.\r"
	"x\r\n.\n"
	"nul\0here\r\n"
	"\r\n"
	"..\r\n"
	"end\r\n"
	".\r\n"
	"trailing QUIT\r\n";

static void test_data_splits(void)
{
	const size_t len = sizeof(sample) - 1;
	struct data_run whole, part;
	size_t cuts[2];

	data_whole(sample, len, &whole);
	check(whole.st == SMTP_DATA_END && whole.consumed == len - 15 &&
		      whole.d.bare_lf && whole.d.bare_cr && whole.d.nul,
	      "sample stream decodes in one piece");
	for (size_t k = 0; k <= len; k++) {
		cuts[0] = k;
		data_run(sample, len, cuts, 1, &part);
		check(runs_equal(&whole, &part),
		      "split at %zu gives the same result", k);
	}

	size_t bad = 0;
	for (size_t i = 0; i <= len; i++)
		for (size_t j = i; j <= len; j++) {
			cuts[0] = i;
			cuts[1] = j;
			data_run(sample, len, cuts, 2, &part);
			bad += !runs_equal(&whole, &part);
		}
	check(bad == 0, "every pair of split points gives the same result");

	size_t ones[sizeof(sample)];
	for (size_t k = 0; k < len; k++)
		ones[k] = k + 1;
	data_run(sample, len, ones, len, &part);
	check(runs_equal(&whole, &part), "one octet at a time gives the same");
}

int main(void)
{
	test_commands();
	test_verb_names();
	test_mail_basic();
	test_mail_params();
	test_mail_routes_and_locals();
	test_mail_domains();
	test_mail_lengths();
	test_mail_utf8();
	test_rcpt();
	test_domain_matches();
	test_reply_lines();
	test_data_basic();
	test_data_smuggling();
	test_data_hold_back();
	test_data_long_lines();
	test_data_splits();
	return tap_done();
}
