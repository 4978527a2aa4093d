/*
 * Unit tests of src/proto/log_format.c: Postfix's delay notation, the
 * key=value line and its escaping, and the Postfix lines each event
 * becomes (the shapes pflogsumm and fail2ban read), hostile values
 * included.
 */
#include "proto/log_format.h"

#include "tap.h"

#include <string.h>

static void delay_is(double seconds, const char *want)
{
	char got[32];

	log_format_delay(seconds, got, sizeof(got));
	tap(strcmp(got, want) == 0, "delay %g -> %s (got %s)", seconds, want,
	    got);
}

static struct log_event event(enum log_level level, const char *name,
			      const char *const *kv)
{
	struct log_event e = {.level = level, .name = name};

	for (; kv[0] != NULL; kv += 2)
		e.fields[e.n++] = (struct log_field){kv[0], kv[1]};
	return e;
}

static void postfix_is(const struct log_event *e, enum log_role role,
		       unsigned k, const char *program, const char *want)
{
	char got[2048];
	const char *prog = "";
	size_t n = log_format_postfix(e, role, k, &prog, got, sizeof(got));

	if (want == NULL) {
		tap(n == 0, "%s line %u: none (got %s)", e->name, k, got);
		return;
	}
	tap(n == strlen(want) && strcmp(got, want) == 0 &&
		    strcmp(prog, program) == 0,
	    "%s line %u: %s: %s (got %s: %s)", e->name, k, program, want, prog,
	    got);
}

static void test_delays(void)
{
	delay_is(0, "0");
	delay_is(-3, "0");
	delay_is(0.004, "0");
	delay_is(0.005, "0.01");
	delay_is(0.1, "0.1");
	delay_is(0.126, "0.13");
	delay_is(1, "1");
	delay_is(1.234, "1.2");
	delay_is(9.96, "10");
	delay_is(12.3, "12");
	delay_is(123.4, "123");
	delay_is(4321.9, "4322");
	delay_is(1e300, "1000000000000");
}

static void test_kv(void)
{
	static const char *const kv[] = {"qid", "0673f9a1b2c3d4e5",
					 "helo", "evil\nforged=1 \"x\\",
					 "empty", "", NULL};
	struct log_event e = event(LOG_WARN, "reject", kv);
	char line[512];

	log_format_kv(&e, "2026-11-27T10:00:00.000Z", "worker1", line,
		      sizeof(line));
	tap(strcmp(line, "2026-11-27T10:00:00.000Z proc=worker1 level=warn "
			 "event=reject qid=0673f9a1b2c3d4e5 "
			 "helo=\"evil\\x0aforged=1 \\\"x\\\\\" empty=\"\"") ==
		0,
	    "kv: quoted, escaped, control octets as \\xNN (%s)", line);
	log_format_kv(&e, "S", "", line, sizeof(line));
	tap(strncmp(line, "S level=warn event=reject", 25) == 0,
	    "kv: no proc= when there is none (%s)", line);
	log_format_kv(&e, "S", "p", line, 10);
	tap(strlen(line) == 9, "kv: truncated to the room (%s)", line);
}

static void test_inbound(void)
{
	static const char *const reject_kv[] = {
		"sid", "65", "stage", "RCPT", "client", "127.0.0.1", "code",
		"554", "reply", "5.7.1 <b@x.test>: Relay access denied", "kind",
		"access", "from", "<a@y.test>", "to", "<b@x.test>", "proto",
		"ESMTP", "helo", "client.example", NULL};
	static const char *const protocol_kv[] = {
		"stage", "MAIL", "client", "127.0.0.1", "code", "503", "reply",
		"5.5.1 Error: nested MAIL command", "kind", "protocol", NULL};
	static const char *const hostile_kv[] = {
		"stage", "UNKNOWN", "client", "::1", "code", "554", "reply",
		"5.7.1 go away", "kind", "access", "proto", "SMTP", "helo",
		"x\r\nDec 1 00:00:00 h postfix/smtpd[1]: forged", NULL};
	static const char *const disc_kv[] = {
		"client", "::1:40001", "reason", "lost_connection", "commands",
		"5", "errors", "1", "after", "DATA", NULL};
	static const char *const queued_kv[] = {
		"sid", "65", "qid", "0673f9a1b2c3d4e5", "client", "127.0.0.1",
		NULL};
	struct log_event r = event(LOG_INFO, "reject", reject_kv);
	struct log_event p = event(LOG_INFO, "reject", protocol_kv);
	struct log_event hostile = event(LOG_INFO, "reject", hostile_kv);
	struct log_event d = event(LOG_INFO, "disconnect", disc_kv);
	struct log_event q = event(LOG_INFO, "queued", queued_kv);

	postfix_is(&r, LOG_ROLE_WORKER, 0, "smtpd",
		   "NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 554 5.7.1 "
		   "<b@x.test>: Relay access denied; from=<a@y.test> "
		   "to=<b@x.test> proto=ESMTP helo=<client.example>");
	postfix_is(&r, LOG_ROLE_WORKER, 1, "smtpd", NULL);
	postfix_is(&p, LOG_ROLE_WORKER, 0, "smtpd", NULL);
	postfix_is(&hostile, LOG_ROLE_WORKER, 0, "smtpd",
		   "NOQUEUE: reject: CONNECT from unknown[::1]: 554 5.7.1 go "
		   "away; proto=SMTP helo=<x??Dec 1 00:00:00 h "
		   "postfix/smtpd[1]: forged>");
	postfix_is(&d, LOG_ROLE_WORKER, 0, "smtpd",
		   "lost connection after DATA from unknown[::1]");
	postfix_is(&d, LOG_ROLE_WORKER, 1, "smtpd",
		   "disconnect from unknown[::1] commands=4/5");
	postfix_is(&d, LOG_ROLE_WORKER, 2, "smtpd", NULL);
	postfix_is(&q, LOG_ROLE_WORKER, 0, "smtpd",
		   "0673f9a1b2c3d4e5: client=unknown[127.0.0.1]");
}

static void test_outbound(void)
{
	static const char *const sent_kv[] = {
		"qid", "0673f9a1b2c3d4e5", "from", "<a@y.test>", "to",
		"<b@x.test>", "relay", "mx.x.test[127.0.0.1]:2600", "delay",
		"0.52", "delays", "0.1/0.01/0.3/0.11", "dsn", "2.0.0", "size",
		"312", "tls", "may:TLSv1.3", "status", "sent", "attempt", "1",
		"reply", "250 2.0.0 Ok: queued as X", NULL};
	static const char *const expired_kv[] = {
		"qid", "0673f9a1b2c3d4e5", "to", "<b@x.test>", "status",
		"expired", NULL};
	static const char *const bounce_kv[] = {
		"qid", "0673f9a1b2c3d4e5", "dsn_qid", "0673f9a1b2c3d4f0", "to",
		"<a@y.test>", NULL};
	static const char *const null_kv[] = {
		"qid", "0673f9a1b2c3d4e5", "reason", "no DSN", NULL};
	static const char *const active_kv[] = {
		"qid", "0673f9a1b2c3d4e5", "from", "<>", "size", "900",
		"nrcpt", "2", NULL};
	static const char *const expire_kv[] = {
		"qid", "0673f9a1b2c3d4e5", "from", "<a@y.test>", NULL};
	static const char *const warn_kv[] = {
		"qid", "0673f9a1b2c3d4e5", "relay", "h[127.0.0.1]:25", "msg",
		"no TLS", NULL};
	struct log_event s = event(LOG_INFO, "delivery", sent_kv);
	struct log_event x = event(LOG_WARN, "delivery", expired_kv);
	struct log_event b = event(LOG_INFO, "bounce", bounce_kv);
	struct log_event nb = event(LOG_INFO, "bounce", null_kv);
	struct log_event a = event(LOG_INFO, "active", active_kv);
	struct log_event e = event(LOG_WARN, "expired", expire_kv);
	struct log_event w = event(LOG_WARN, "tls_downgrade", warn_kv);

	postfix_is(&s, LOG_ROLE_QMGR, 0, "smtp",
		   "0673f9a1b2c3d4e5: to=<b@x.test>, "
		   "relay=mx.x.test[127.0.0.1]:2600, delay=0.52, "
		   "delays=0.1/0.01/0.3/0.11, dsn=2.0.0, status=sent (250 "
		   "2.0.0 Ok: queued as X)");
	postfix_is(&x, LOG_ROLE_QMGR, 0, "smtp", NULL);
	postfix_is(&b, LOG_ROLE_QMGR, 0, "bounce",
		   "0673f9a1b2c3d4e5: sender non-delivery notification: "
		   "0673f9a1b2c3d4f0");
	postfix_is(&nb, LOG_ROLE_QMGR, 0, "bounce", NULL);
	postfix_is(&a, LOG_ROLE_QMGR, 0, "qmgr",
		   "0673f9a1b2c3d4e5: from=<>, size=900, nrcpt=2 (queue "
		   "active)");
	postfix_is(&e, LOG_ROLE_QMGR, 0, "qmgr",
		   "0673f9a1b2c3d4e5: from=<a@y.test>, status=expired, "
		   "returned to sender");
	postfix_is(&w, LOG_ROLE_QMGR, 0, "smtp",
		   "warning: 0673f9a1b2c3d4e5: tls_downgrade: no TLS "
		   "relay=h[127.0.0.1]:25");
	/* the same event from another process: generic */
	postfix_is(&a, LOG_ROLE_MASTER, 0, "master",
		   "0673f9a1b2c3d4e5: active: from=<> size=900 nrcpt=2");
}

static void test_words(void)
{
	enum log_style st;
	int f = -1;

	tap(log_style_parse("postfix", &st) && st == LOG_STYLE_POSTFIX,
	    "format postfix");
	tap(log_style_parse("smtpgw", &st) && st == LOG_STYLE_KV,
	    "format smtpgw");
	tap(!log_style_parse("Postfix", &st), "format: exact words only");
	tap(log_facility_parse("mail", &f) && f == 2, "facility mail = 2");
	tap(log_facility_parse("local7", &f) && f == 23, "facility local7");
	tap(!log_facility_parse("kern", &f), "facility kern refused");
	tap(log_severity(LOG_WARN) == 4 && log_severity(LOG_FATAL) == 2,
	    "severities");
}

int main(void)
{
	test_delays();
	test_kv();
	test_inbound();
	test_outbound();
	test_words();
	return tap_done();
}
