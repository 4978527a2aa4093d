/*
 * log: one `key=value` line per event on stderr, written with a single
 * write(2) so lines from concurrent writers never interleave. Callers build a
 * line with log_begin / log_kv / log_end; nothing here knows about sessions.
 */
#ifndef SMTPGW_LOG_H
#define SMTPGW_LOG_H

#include <stddef.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERR };

struct logline {
	char buf[2048];
	size_t len;
};

/* Every line from now on names its process (` proc=NAME`). */
void log_set_process(const char *name);

void log_begin(struct logline *l, enum log_level level, const char *event);

/* Appends ` key=value`; the value is double-quoted (with \" and \\
 * escapes) when it holds spaces, quotes, '=' or is empty, and control
 * octets become \xNN, so a hostile HELO cannot forge a log line. */
void log_kv(struct logline *l, const char *key, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

void log_end(struct logline *l);

/* One-shot line with a single free-form `msg=` value. */
void log_msg(enum log_level level, const char *event, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#endif
