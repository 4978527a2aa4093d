/*
 * envelope: formatting and parsing the queue file header. One "key: value"
 * per line, rcpt repeated, a blank line at the end; the format is the
 * README's ("Spool"), so a person can read a queue file with less.
 * The parser reads only the `len` octets it is given: the buffer has no
 * terminating NUL, so nothing here may look for one (no sscanf, strlen).
 */
#include "proto/envelope.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char MAGIC[] = "smtpgw-queue-file: 1\n";

struct text {
	char *p;
	size_t len, cap;
	bool failed;
};

static void add(struct text *t, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static bool reserve(struct text *t, size_t more)
{
	size_t cap = (t->len + more + 1) * 2;
	char *grown;

	if (t->len + more + 1 <= t->cap)
		return true;
	if ((grown = realloc(t->p, cap)) == NULL)
		return false;
	t->p = grown;
	t->cap = cap;
	return true;
}

static void add(struct text *t, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (t->failed)
		return;
	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0 || !reserve(t, (size_t)n)) {
		t->failed = true;
		return;
	}
	va_start(ap, fmt);
	vsnprintf(t->p + t->len, t->cap - t->len, fmt, ap);
	va_end(ap);
	t->len += (size_t)n;
}

const char *envelope_body_name(enum smtp_body_type body)
{
	switch (body) {
	case SMTP_BODY_7BIT:
		return "7BIT";
	case SMTP_BODY_8BITMIME:
		return "8BITMIME";
	case SMTP_BODY_UNSPECIFIED:
		break;
	}
	return "unspecified";
}

char *envelope_format(const struct envelope *e, size_t *len)
{
	struct text t = {0};

	add(&t, "id: %s\narrival: %lld\nclient: %s\nhelo: %s\n", e->qid,
	    e->arrival, e->client, e->helo ? e->helo : "");
	add(&t, "sender: <%s>\n", e->sender);
	for (size_t i = 0; i < e->n_rcpts; i++)
		add(&t, "rcpt: <%s>\n", e->rcpts[i]);
	add(&t, "body: %s\nsmtputf8: %d\n\n", envelope_body_name(e->body), e->smtputf8);
	if (t.failed) {
		free(t.p);
		return NULL;
	}
	*len = t.len;
	return t.p;
}

/* "<addr>" → addr, copied. */
static char *unbracket(const char *v, size_t n)
{
	if (n < 2 || v[0] != '<' || v[n - 1] != '>')
		return NULL;
	return strndup(v + 1, n - 2);
}

static bool add_rcpt(struct envelope *e, const char *v, size_t n)
{
	char **grown = realloc(e->rcpts, (e->n_rcpts + 1) * sizeof(*grown));
	char *addr;

	if (grown == NULL)
		return false;
	e->rcpts = grown;
	if ((addr = unbracket(v, n)) == NULL)
		return false;
	e->rcpts[e->n_rcpts++] = addr;
	return true;
}

static bool copy_into(char *dst, size_t size, const char *v, size_t n)
{
	if (n >= size)
		return false;
	memcpy(dst, v, n);
	dst[n] = '\0';
	return true;
}

static enum smtp_body_type body_type(const char *v, size_t n)
{
	if (n == 4 && memcmp(v, "7BIT", 4) == 0)
		return SMTP_BODY_7BIT;
	if (n == 8 && memcmp(v, "8BITMIME", 8) == 0)
		return SMTP_BODY_8BITMIME;
	return SMTP_BODY_UNSPECIFIED;
}

/* A decimal number, optionally negative, that fills the whole value. */
static bool parse_llong(const char *v, size_t n, long long *out)
{
	bool neg = n > 0 && v[0] == '-';
	unsigned long long acc = 0;
	size_t i = neg ? 1 : 0;

	if (i == n)
		return false;
	for (; i < n; i++) {
		unsigned long long digit = (unsigned long long)(v[i] - '0');

		if (v[i] < '0' || v[i] > '9' ||
		    acc > ((unsigned long long)LLONG_MAX - digit) / 10)
			return false;
		acc = acc * 10 + digit;
	}
	*out = neg ? -(long long)acc : (long long)acc;
	return true;
}

/* The spool's ids: QUEUE_ID_LEN lowercase hex digits. */
static bool is_queue_id(const char *v, size_t n)
{
	if (n != QUEUE_ID_LEN)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((v[i] >= '0' && v[i] <= '9') ||
		      (v[i] >= 'a' && v[i] <= 'f')))
			return false;
	return true;
}

static bool key_is(const char *key, size_t klen, const char *name)
{
	return klen == strlen(name) && memcmp(key, name, klen) == 0;
}

static bool set_field(struct envelope *e, const char *key, size_t klen,
		      const char *v, size_t n)
{
	if (key_is(key, klen, "id"))
		return is_queue_id(v, n) &&
		       copy_into(e->qid, sizeof(e->qid), v, n);
	if (key_is(key, klen, "arrival"))
		return parse_llong(v, n, &e->arrival);
	if (key_is(key, klen, "client"))
		return copy_into(e->client, sizeof(e->client), v, n);
	if (key_is(key, klen, "helo"))
		return e->helo == NULL && (e->helo = strndup(v, n)) != NULL;
	if (key_is(key, klen, "sender"))
		return e->sender == NULL &&
		       (e->sender = unbracket(v, n)) != NULL;
	if (key_is(key, klen, "rcpt"))
		return add_rcpt(e, v, n);
	if (key_is(key, klen, "body"))
		e->body = body_type(v, n);
	else if (key_is(key, klen, "smtputf8"))
		e->smtputf8 = n == 1 && v[0] == '1';
	return true; /* also a key from a newer version: skipped */
}

static size_t parse_fail(struct envelope *e, char *err, size_t err_len,
			 const char *why, size_t line)
{
	snprintf(err, err_len, "queue file header line %zu: %s", line, why);
	envelope_free(e);
	return 0;
}

size_t envelope_parse(const char *buf, size_t len, struct envelope *e,
		      char *err, size_t err_len)
{
	size_t pos = sizeof(MAGIC) - 1, line = 1;

	memset(e, 0, sizeof(*e));
	if (len < pos || memcmp(buf, MAGIC, pos) != 0)
		return parse_fail(e, err, err_len, "not a queue file", line);
	for (;;) {
		const char *p = buf + pos, *nl = memchr(p, '\n', len - pos);
		const char *colon;

		line++;
		if (nl == NULL)
			return parse_fail(e, err, err_len, "incomplete", line);
		if (nl == p)
			break;
		colon = memchr(p, ':', (size_t)(nl - p));
		/* A NUL would cut a value short without a word. */
		if (colon == NULL || colon[1] != ' ' ||
		    memchr(p, '\0', (size_t)(nl - p)) != NULL ||
		    !set_field(e, p, (size_t)(colon - p), colon + 2,
			       (size_t)(nl - colon - 2)))
			return parse_fail(e, err, err_len, "malformed", line);
		pos = (size_t)(nl - buf) + 1;
	}
	if (e->qid[0] == '\0' || e->sender == NULL || e->n_rcpts == 0)
		return parse_fail(e, err, err_len, "id, sender or rcpt missing",
				  line);
	return pos + 1;
}

void envelope_free(struct envelope *e)
{
	for (size_t i = 0; i < e->n_rcpts; i++)
		free(e->rcpts[i]);
	free(e->rcpts);
	free(e->helo);
	free(e->sender);
	memset(e, 0, sizeof(*e));
}
