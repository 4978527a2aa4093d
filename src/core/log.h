/*
 * log: one event per line, in smtpgw's `key=value` format or Postfix's
 * (proto/log_format), on stderr or to syslog. Callers build an event with
 * log_begin / log_kv / log_end; nothing here knows about sessions. Lines
 * are appended to a per-process buffer that goes out in one write per turn
 * of the event loop (log_attach), when it is full, before a fork or exit,
 * and at once for errors. Loop thread only.
 */
#ifndef SMTPGW_LOG_H
#define SMTPGW_LOG_H

#include "proto/log_format.h"

#include <stdbool.h>
#include <stddef.h>

struct ev_loop;

enum { LOG_STORE = 2048 };

struct logline {
	struct log_event e;
	char store[LOG_STORE]; /* the values, each NUL-terminated */
	size_t used;
};

/* Every line from now on names its process (` proc=NAME`): "master",
 * "workerN", "qmgr"; in the Postfix format it chooses the program name. */
void log_set_process(const char *name);

/* [log]: where lines go and in which format. */
struct log_settings {
	enum log_style style;
	bool to_syslog;
	int facility;		   /* RFC 5424 number; 2 = mail */
	const char *syslog_name;   /* "" or NULL: smtpgw, or postfix */
	const char *syslog_socket; /* "/dev/log" */
	const char *hostname;	   /* in the Postfix format's prefix */
};

/* Takes effect for the next line; false (and the old settings stay) when
 * the syslog socket cannot be reached, with the reason in err. */
bool log_configure(const struct log_settings *s, char *err, size_t len);

/* From now on lines wait in the buffer until this loop's next turn (an
 * ev_prepare watcher flushes it just before the loop blocks). Children
 * forked after this inherit the watcher with the loop. */
void log_attach(struct ev_loop *loop);
/* Writes what the buffer holds: before fork() and _exit(). */
void log_flush(void);
/* A point another process's lines must not overtake this one's: in the
 * Postfix format, pflogsumm needs smtpd's "client=" before qmgr's "(queue
 * active)". Flushes in that format only (smtpgw's lines carry
 * milliseconds and can be sorted). */
void log_flush_ordered(void);

/* `event` and every `key` are string literals (kept by pointer). */
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

/* The same about one message: ` qid=QID msg=...`. */
void log_qid_msg(enum log_level level, const char *event, const char *qid,
		 const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#endif
