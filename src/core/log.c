/*
 * log: formats and writes event lines. Owns nothing but the formatting; the
 * destination is stderr (the service manager or `make run` collects it).
 */
#include "core/log.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* Which process writes: "master", "worker1", "qmgr"; empty in the
 * one-shot commands. */
static char process_name[32];

void log_set_process(const char *name)
{
	snprintf(process_name, sizeof(process_name), "%s", name);
}

static const char *level_name(enum log_level level)
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
	}
	return "info";
}

static void append(struct logline *l, const char *s, size_t n)
{
	size_t room = sizeof(l->buf) - 1 - l->len; /* keep one for '\n' */

	if (n > room)
		n = room;
	memcpy(l->buf + l->len, s, n);
	l->len += n;
}

void log_begin(struct logline *l, enum log_level level, const char *event)
{
	struct timeval tv;
	struct tm tm;
	char stamp[64];
	int n;

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	n = (int)strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
	n += snprintf(stamp + n, sizeof(stamp) - (size_t)n, ".%03ldZ",
		      (long)(tv.tv_usec / 1000));
	l->len = 0;
	append(l, stamp, (size_t)n);
	if (process_name[0] != '\0')
		log_kv(l, "proc", "%s", process_name);
	log_kv(l, "level", "%s", level_name(level));
	log_kv(l, "event", "%s", event);
}

static bool needs_quotes(const char *v, size_t n)
{
	if (n == 0)
		return true;
	for (size_t i = 0; i < n; i++)
		if (v[i] == ' ' || v[i] == '"' || v[i] == '=' || v[i] == '\\')
			return true;
	return false;
}

static void append_escaped(struct logline *l, const char *v, size_t n)
{
	char esc[8];

	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)v[i];

		if (c == '"' || c == '\\') {
			esc[0] = '\\';
			esc[1] = (char)c;
			append(l, esc, 2);
		} else if (c < 0x20 || c == 0x7f) {
			snprintf(esc, sizeof(esc), "\\x%02x", c);
			append(l, esc, 4);
		} else {
			append(l, (const char *)&v[i], 1);
		}
	}
}

void log_kv(struct logline *l, const char *key, const char *fmt, ...)
{
	char value[1024];
	va_list ap;
	int n;
	bool quote;

	va_start(ap, fmt);
	n = vsnprintf(value, sizeof(value), fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n >= sizeof(value))
		n = sizeof(value) - 1;
	quote = needs_quotes(value, (size_t)n);
	append(l, " ", 1);
	append(l, key, strlen(key));
	append(l, quote ? "=\"" : "=", quote ? 2 : 1);
	append_escaped(l, value, (size_t)n);
	if (quote)
		append(l, "\"", 1);
}

void log_end(struct logline *l)
{
	ssize_t w;

	l->buf[l->len++] = '\n';
	/* A log line lost to a full pipe is better than a stalled gateway. */
	w = write(STDERR_FILENO, l->buf, l->len);
	(void)w;
}

void log_msg(enum log_level level, const char *event, const char *fmt, ...)
{
	struct logline l;
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_begin(&l, level, event);
	log_kv(&l, "msg", "%s", msg);
	log_end(&l);
}
