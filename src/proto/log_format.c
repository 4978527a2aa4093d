/*
 * log_format: renders a log event (name, level, key=value facts) as text.
 * Owns the two line formats and the mapping from smtpgw's events to the
 * lines Postfix 3.x writes (smtpd, qmgr, smtp, bounce, master). Must not
 * read the clock, the process or the configuration, nor write anything:
 * core/log.c does that.
 */
#include "proto/log_format.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- an output buffer that truncates ---------------------------------- */

struct out {
	char *buf;
	size_t len, cap; /* cap > 0; one octet kept for the NUL */
};

static void put(struct out *o, const char *s, size_t n)
{
	size_t room = o->cap - 1 - o->len;

	if (n > room)
		n = room;
	memcpy(o->buf + o->len, s, n);
	o->len += n;
	o->buf[o->len] = '\0';
}

static void puts_(struct out *o, const char *s)
{
	put(o, s, strlen(s));
}

static void putf(struct out *o, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void putf(struct out *o, const char *fmt, ...)
{
	char tmp[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n > 0)
		put(o, tmp, (size_t)n < sizeof(tmp) ? (size_t)n
						     : sizeof(tmp) - 1);
}

/* Postfix's way with what it did not write itself: a control octet
 * becomes '?', so a value can never end or forge a line. */
static void put_printable(struct out *o, const char *s)
{
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;
		char ch = c < 0x20 || c == 0x7f ? '?' : (char)c;

		put(o, &ch, 1);
	}
}

/* ---- small facts ------------------------------------------------------- */

const char *log_level_name(enum log_level level)
{
	switch (level) {
	case LOG_DEBUG:
		return "debug";
	case LOG_INFO:
		return "info";
	case LOG_WARN:
		return "warn";
	case LOG_ERR:
		return "error";
	case LOG_FATAL:
		return "fatal";
	}
	return "info";
}

bool log_style_parse(const char *text, enum log_style *out)
{
	if (strcmp(text, "smtpgw") == 0)
		*out = LOG_STYLE_KV;
	else if (strcmp(text, "postfix") == 0)
		*out = LOG_STYLE_POSTFIX;
	else
		return false;
	return true;
}

const char *log_event_get(const struct log_event *e, const char *key)
{
	for (unsigned i = 0; i < e->n; i++)
		if (strcmp(e->fields[i].key, key) == 0)
			return e->fields[i].value;
	return NULL;
}

static const char *get_or(const struct log_event *e, const char *key,
			  const char *fallback)
{
	const char *v = log_event_get(e, key);

	return v != NULL ? v : fallback;
}

static bool is(const char *a, const char *b)
{
	return a != NULL && strcmp(a, b) == 0;
}

static long number(const char *s)
{
	long n = strtol(s, NULL, 10);

	return n > 0 ? n : 0;
}

/* ---- key=value --------------------------------------------------------- */

static bool needs_quotes(const char *v)
{
	if (*v == '\0')
		return true;
	return strpbrk(v, " \"=\\") != NULL;
}

/* How many octets from v's start go out as they are. */
static size_t plain_len(const char *v)
{
	size_t n = 0;

	for (unsigned char c; (c = (unsigned char)v[n]) != '\0'; n++)
		if (c == '"' || c == '\\' || c < 0x20 || c == 0x7f)
			break;
	return n;
}

static void put_escaped(struct out *o, const char *v)
{
	char esc[8];

	while (*v != '\0') {
		size_t run = plain_len(v);
		unsigned char c = (unsigned char)v[run];

		put(o, v, run);
		v += run;
		if (c == '\0')
			break;
		if (c == '"' || c == '\\') {
			esc[0] = '\\';
			esc[1] = (char)c;
			put(o, esc, 2);
		} else {
			snprintf(esc, sizeof(esc), "\\x%02x", c);
			put(o, esc, 4);
		}
		v++;
	}
}

/* ` key=value`, quoted when the value holds spaces, quotes, '=' or is
 * empty; control octets become \xNN. */
static void put_kv(struct out *o, const char *key, const char *value)
{
	bool quote = needs_quotes(value);

	put(o, " ", 1);
	while (*key != '\0') {
		size_t run = 0;

		while (isalnum((unsigned char)key[run]))
			run++;
		put(o, key, run);
		key += run;
		/* keys are ours, but a line must stay a line whatever they are */
		if (*key != '\0') {
			put(o, "_", 1);
			key++;
		}
	}
	puts_(o, quote ? "=\"" : "=");
	put_escaped(o, value);
	if (quote)
		put(o, "\"", 1);
}

size_t log_format_kv(const struct log_event *e, const char *stamp,
		     const char *proc, char *out, size_t cap)
{
	struct out o = {out, 0, cap};

	if (cap == 0)
		return 0;
	out[0] = '\0';
	puts_(&o, stamp);
	if (proc != NULL && proc[0] != '\0')
		put_kv(&o, "proc", proc);
	put_kv(&o, "level", log_level_name(e->level));
	put_kv(&o, "event", e->name);
	for (unsigned i = 0; i < e->n; i++)
		put_kv(&o, e->fields[i].key, e->fields[i].value);
	return o.len;
}

/* ---- delays ------------------------------------------------------------ */

void log_format_delay(double seconds, char *out, size_t cap)
{
	const long million = 1000000;
	double clamped = isfinite(seconds) && seconds > 0 ? seconds : 0;
	long long total = (long long)((clamped < 1e12 ? clamped : 1e12) * 1e6 +
				      0.5);
	long long sec = total / million;
	long usec = (long)(total % million);
	long res = 10000; /* 0.01 s: delay_logging_resolution_limit 2 */
	struct out o = {out, 0, cap};

	if (cap == 0)
		return;
	out[0] = '\0';
	/* two significant digits: 1.2, 12, 123 */
	if (sec >= 10)
		res = million;
	else if (sec >= 1)
		res = million / 10;
	usec += res / 2;
	if (usec >= million) {
		sec++;
		usec -= million;
	}
	if (sec >= 10)
		usec = 0; /* 9.96 rounded up to 10 keeps no decimals */
	putf(&o, "%lld", sec);
	if (usec < res)
		return;
	put(&o, ".", 1);
	for (long unit = million / 10; usec >= res && unit > 0; unit /= 10) {
		char digit = (char)('0' + usec / unit);

		put(&o, &digit, 1);
		usec %= unit;
	}
}

/* ---- Postfix ------------------------------------------------------------ */

/* "127.0.0.1:40001" or "::1:40001" without the port. */
static void put_client(struct out *o, const struct log_event *e,
		       bool has_port)
{
	const char *c = get_or(e, "client", "unknown");
	const char *colon = has_port ? strrchr(c, ':') : NULL;
	char ip[80];

	snprintf(ip, sizeof(ip), "%.*s",
		 (int)(colon != NULL ? (size_t)(colon - c) : strlen(c)), c);
	puts_(o, "unknown[");
	put_printable(o, ip);
	puts_(o, "]");
}

static void put_qid_prefix(struct out *o, const struct log_event *e)
{
	const char *qid = log_event_get(e, "qid");

	if (qid != NULL) {
		put_printable(o, qid);
		puts_(o, ": ");
	}
}

static const char *level_prefix(enum log_level level)
{
	switch (level) {
	case LOG_WARN:
		return "warning: ";
	case LOG_ERR:
		return "error: ";
	case LOG_FATAL:
		return "fatal: ";
	case LOG_DEBUG:
	case LOG_INFO:
		break;
	}
	return "";
}

/* `label` then the field's value (or `fallback`), made printable. */
static void put_field(struct out *o, const char *label,
		      const struct log_event *e, const char *key,
		      const char *fallback)
{
	puts_(o, label);
	put_printable(o, get_or(e, key, fallback));
}

/* One line, or none (false): most events. */
typedef bool line_fn(const struct log_event *e, struct out *o);

/* An event Postfix has no line for: "[warning: ][QID: ]name: msg k=v". */
static bool generic(const struct log_event *e, struct out *o)
{
	const char *msg = log_event_get(e, "msg");

	puts_(o, level_prefix(e->level));
	put_qid_prefix(o, e);
	put_printable(o, e->name);
	put(o, ":", 1);
	if (msg != NULL)
		put_field(o, " ", e, "msg", "");
	for (unsigned i = 0; i < e->n; i++)
		if (!is(e->fields[i].key, "qid") &&
		    !is(e->fields[i].key, "msg"))
			put_kv(o, e->fields[i].key, e->fields[i].value);
	return true;
}

static bool pf_connect(const struct log_event *e, struct out *o)
{
	puts_(o, "connect from ");
	put_client(o, e, true);
	return true;
}

/* Before "disconnect", Postfix says how a session that did not QUIT
 * ended: fail2ban's ddos and errors modes read these. */
static const char *ending(const struct log_event *e)
{
	const char *why = log_event_get(e, "reason");

	if (is(why, "lost_connection") || is(why, "io_error"))
		return "lost connection";
	if (is(why, "too_many_errors") || is(why, "too_many_junk_commands"))
		return "too many errors";
	return NULL;
}

/* Two lines when the session ended badly, else one. */
static size_t pf_disconnect(const struct log_event *e, unsigned k,
			    struct out *o)
{
	const char *end = ending(e);
	const char *commands = get_or(e, "commands", "0");
	const char *errors = get_or(e, "errors", "0");

	if (end != NULL && k == 0) {
		puts_(o, end);
		put_field(o, " after ", e, "after", "CONNECT");
		puts_(o, " from ");
		put_client(o, e, true);
		return o->len;
	}
	if (k != (end != NULL ? 1u : 0u))
		return 0;
	puts_(o, "disconnect from ");
	put_client(o, e, true);
	puts_(o, " commands=");
	if (!is(errors, "0")) {
		long n = number(commands), bad = number(errors);

		putf(o, "%ld/", n > bad ? n - bad : 0);
	}
	put_printable(o, commands);
	return o->len;
}

static bool pf_timeout(const struct log_event *e, struct out *o)
{
	put_field(o, "timeout after ", e, "after", "CONNECT");
	if (log_event_get(e, "bytes") != NULL) {
		put_field(o, " (", e, "bytes", "");
		puts_(o, " bytes)");
	}
	puts_(o, " from ");
	put_client(o, e, false);
	return true;
}

/* Postfix's stage names: END-OF-MESSAGE for the reply to the dot, CONNECT
 * for a refusal before any command. */
static const char *pf_stage(const char *stage)
{
	if (is(stage, "END-OF-DATA"))
		return "END-OF-MESSAGE";
	if (stage == NULL || is(stage, "UNKNOWN"))
		return "CONNECT";
	return stage;
}

/* Only an access decision (relay, policy, size, ...) is a "reject:" line:
 * Postfix logs none for syntax and sequence errors (kind=protocol). */
static bool pf_reject(const struct log_event *e, struct out *o)
{
	const char *stage = pf_stage(log_event_get(e, "stage"));
	bool in_data = is(stage, "DATA") || is(stage, "END-OF-MESSAGE");

	if (!is(log_event_get(e, "kind"), "access"))
		return false;
	if (in_data && log_event_get(e, "qid") != NULL)
		put_qid_prefix(o, e);
	else
		puts_(o, "NOQUEUE: ");
	puts_(o, "reject: ");
	put_printable(o, stage);
	puts_(o, " from ");
	put_client(o, e, false);
	put_field(o, ": ", e, "code", "550");
	put_field(o, " ", e, "reply", "");
	put(o, ";", 1);
	if (log_event_get(e, "from") != NULL)
		put_field(o, " from=", e, "from", "");
	if (log_event_get(e, "to") != NULL)
		put_field(o, " to=", e, "to", "");
	put_field(o, " proto=", e, "proto", "SMTP");
	if (log_event_get(e, "helo") != NULL) {
		put_field(o, " helo=<", e, "helo", "");
		put(o, ">", 1);
	}
	return true;
}

/* pflogsumm counts a message received from smtpd's "client=" line. */
static bool pf_queued(const struct log_event *e, struct out *o)
{
	put_qid_prefix(o, e);
	puts_(o, "client=");
	put_client(o, e, false);
	return true;
}

static bool pf_tls_in(const struct log_event *e, struct out *o)
{
	long bits = number(get_or(e, "bits", "0"));

	put_printable(o, get_or(e, "peer", "Anonymous"));
	puts_(o, " TLS connection established from ");
	put_client(o, e, false);
	put_field(o, ": ", e, "version", "?");
	put_field(o, " with cipher ", e, "cipher", "?");
	putf(o, " (%ld/%ld bits)", bits, bits);
	return true;
}

static bool pf_sync_error(const struct log_event *e, struct out *o)
{
	const char *stage = get_or(e, "stage", "CONNECT");

	puts_(o, "improper command pipelining after ");
	put_printable(o, is(stage, "greeting") ? "CONNECT" : stage);
	puts_(o, " from ");
	put_client(o, e, false);
	return true;
}

static bool pf_tls_failed(const struct log_event *e, struct out *o)
{
	puts_(o, "SSL_accept error from ");
	put_client(o, e, false);
	put_field(o, ": ", e, "reason", "-1");
	return true;
}

static bool pf_active(const struct log_event *e, struct out *o)
{
	put_qid_prefix(o, e);
	put_field(o, "from=", e, "from", "<>");
	put_field(o, ", size=", e, "size", "0");
	put_field(o, ", nrcpt=", e, "nrcpt", "0");
	puts_(o, " (queue active)");
	return true;
}

/* smtp's line, in the order pflogsumm's pattern wants it: to, relay,
 * delay, delays, dsn, status. An expired recipient has none: Postfix
 * logged its last deferral and then the message's "status=expired". */
static bool pf_delivery(const struct log_event *e, struct out *o)
{
	if (is(log_event_get(e, "status"), "expired"))
		return false;
	put_qid_prefix(o, e);
	put_field(o, "to=", e, "to", "<>");
	put_field(o, ", relay=", e, "relay", "none");
	put_field(o, ", delay=", e, "delay", "0");
	put_field(o, ", delays=", e, "delays", "0/0/0/0");
	put_field(o, ", dsn=", e, "dsn", "5.0.0");
	put_field(o, ", status=", e, "status", "deferred");
	put_field(o, " (", e, "reply", "");
	put(o, ")", 1);
	return true;
}

static bool pf_expired(const struct log_event *e, struct out *o)
{
	put_qid_prefix(o, e);
	put_field(o, "from=", e, "from", "<>");
	puts_(o, ", status=expired, returned to sender");
	return true;
}

/* Postfix 3.11's link from a message to the DSN about it; a bounce that
 * went nowhere (null sender) has no line. */
static bool pf_bounce(const struct log_event *e, struct out *o)
{
	if (log_event_get(e, "dsn_qid") == NULL)
		return false;
	put_qid_prefix(o, e);
	put_field(o, "sender non-delivery notification: ", e, "dsn_qid", "");
	return true;
}

static bool pf_removed(const struct log_event *e, struct out *o)
{
	put_qid_prefix(o, e);
	puts_(o, "removed");
	return true;
}

typedef size_t lines_fn(const struct log_event *e, unsigned k,
			struct out *o);

struct rendering {
	const char *event;
	enum log_role role;
	const char *program;
	line_fn *line;	 /* one line or none ... */
	lines_fn *lines; /* ... or several */
};

/* Events with a Postfix line of their own; the rest go out generic(). */
static const struct rendering renderings[] = {
	{"connect", LOG_ROLE_WORKER, "smtpd", pf_connect, NULL},
	{"disconnect", LOG_ROLE_WORKER, "smtpd", NULL, pf_disconnect},
	{"timeout", LOG_ROLE_WORKER, "smtpd", pf_timeout, NULL},
	{"reject", LOG_ROLE_WORKER, "smtpd", pf_reject, NULL},
	{"queued", LOG_ROLE_WORKER, "smtpd", pf_queued, NULL},
	{"tls", LOG_ROLE_WORKER, "smtpd", pf_tls_in, NULL},
	{"sync_error", LOG_ROLE_WORKER, "smtpd", pf_sync_error, NULL},
	{"tls_failed", LOG_ROLE_WORKER, "smtpd", pf_tls_failed, NULL},
	{"active", LOG_ROLE_QMGR, "qmgr", pf_active, NULL},
	{"delivery", LOG_ROLE_QMGR, "smtp", pf_delivery, NULL},
	{"expired", LOG_ROLE_QMGR, "qmgr", pf_expired, NULL},
	{"bounce", LOG_ROLE_QMGR, "bounce", pf_bounce, NULL},
	{"removed", LOG_ROLE_QMGR, "qmgr", pf_removed, NULL},
	{"tls_downgrade", LOG_ROLE_QMGR, "smtp", generic, NULL},
};

static const char *role_program(enum log_role role)
{
	switch (role) {
	case LOG_ROLE_MASTER:
		return "master";
	case LOG_ROLE_WORKER:
		return "smtpd";
	case LOG_ROLE_QMGR:
		return "qmgr";
	case LOG_ROLE_COMMAND:
		break;
	}
	return "smtpgw";
}

size_t log_format_postfix(const struct log_event *e, enum log_role role,
			  unsigned k, const char **program, char *out,
			  size_t cap)
{
	struct out o = {out, 0, cap};
	const struct rendering *r = NULL;

	if (cap == 0)
		return 0;
	out[0] = '\0';
	for (size_t i = 0; i < sizeof(renderings) / sizeof(renderings[0]);
	     i++)
		if (renderings[i].role == role &&
		    strcmp(renderings[i].event, e->name) == 0)
			r = &renderings[i];
	*program = r != NULL ? r->program : role_program(role);
	if (r != NULL && r->lines != NULL)
		return r->lines(e, k, &o);
	if (k > 0 || !(r != NULL ? r->line : generic)(e, &o))
		return 0;
	return o.len;
}

/* ---- syslog facts -------------------------------------------------------- */

bool log_facility_parse(const char *text, int *out)
{
	static const struct {
		const char *name;
		int code; /* RFC 5424 6.2.1 */
	} names[] = {{"user", 1}, {"mail", 2}, {"daemon", 3}, {"local0", 16},
		     {"local1", 17}, {"local2", 18}, {"local3", 19},
		     {"local4", 20}, {"local5", 21}, {"local6", 22},
		     {"local7", 23}};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strcmp(text, names[i].name) == 0) {
			*out = names[i].code;
			return true;
		}
	return false;
}

int log_severity(enum log_level level)
{
	switch (level) {
	case LOG_DEBUG:
		return 7;
	case LOG_INFO:
		return 6;
	case LOG_WARN:
		return 4;
	case LOG_ERR:
		return 3;
	case LOG_FATAL:
		return 2; /* Postfix's fatal is LOG_CRIT */
	}
	return 6;
}
