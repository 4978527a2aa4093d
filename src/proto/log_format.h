/*
 * log_format: one log event as text, either as smtpgw's own `key=value`
 * line or as the line(s) Postfix writes for the same event, so that
 * pflogsumm, fail2ban's postfix filters and Logwatch read smtpgw's log
 * unchanged. Pure: no clock, no I/O, no process state; the caller passes
 * the time stamp and who writes. Values are taken as the event's facts and
 * made harmless here (escaped, or control octets replaced), so a hostile
 * HELO or address cannot forge a line.
 */
#ifndef SMTPGW_LOG_FORMAT_H
#define SMTPGW_LOG_FORMAT_H

#include <stdbool.h>
#include <stddef.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERR, LOG_FATAL };

/* [log] format */
enum log_style { LOG_STYLE_KV, LOG_STYLE_POSTFIX };

/* Who writes, for Postfix's program names (smtpd, qmgr, master...). */
enum log_role { LOG_ROLE_COMMAND, LOG_ROLE_MASTER, LOG_ROLE_WORKER,
		LOG_ROLE_QMGR };

enum { LOG_FIELDS_MAX = 32 };

struct log_field {
	const char *key;   /* a name without spaces or '=' */
	const char *value; /* any octets but NUL */
};

struct log_event {
	enum log_level level;
	const char *name; /* "delivery", "reject", ... */
	struct log_field fields[LOG_FIELDS_MAX];
	unsigned n;
};

const char *log_level_name(enum log_level level);
bool log_style_parse(const char *text, enum log_style *out);
/* The value of `key`, or NULL. */
const char *log_event_get(const struct log_event *e, const char *key);

/* "STAMP proc=P level=L event=E k=v ..." without a newline, at most
 * cap - 1 octets (NUL-terminated); returns the length. An empty `proc`
 * is left out. */
size_t log_format_kv(const struct log_event *e, const char *stamp,
		     const char *proc, char *out, size_t cap);

/* The k-th line (k = 0, 1, ...) Postfix would log for `e`: the program
 * ("smtpd", "qmgr", "smtp", "bounce", "master"...) in *program and the
 * text after "postfix/PROGRAM[PID]: " in out (NUL-terminated, at most cap
 * - 1 octets). Returns its length, 0 when there is no k-th line (some
 * events have none: Postfix logs nothing for them). */
size_t log_format_postfix(const struct log_event *e, enum log_role role,
			  unsigned k, const char **program, char *out,
			  size_t cap);

/* A delay as Postfix writes it (delay_logging_resolution_limit 2): two
 * significant digits, nothing below 0.01 s, whole seconds from 100 s on:
 * "0", "0.01", "0.13", "1.2", "12", "4321". Negative counts as 0. */
void log_format_delay(double seconds, char *out, size_t cap);

/* [log] syslog_facility: "mail", "daemon", "user", "local0".."local7" as
 * RFC 5424's numeric facility. */
bool log_facility_parse(const char *text, int *out);
/* The syslog severity of a level (RFC 5424: 7 debug ... 2 critical). */
int log_severity(enum log_level level);

#endif
