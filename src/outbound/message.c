/*
 * message: reading a queued message in (envelope, hop count, state with
 * attempt counts), its state lines and its teardown. Owns the message's
 * arrays and strings; must not touch the scheduler or start anything.
 */
#include "outbound/message.h"

#include "core/log.h"
#include "proto/requiretls.h"
#include "proto/tlsrpt_report.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

enum { HEADER_MAX = 65536 };

/* A message's file, read whole at admission, is kept for its first
 * attempt if that begins soon (a queue delete or hold after that is seen
 * at the next attempt, as one during a transaction is), and within a
 * bound on what every kept file holds together. */
enum { KEEP_TOTAL = 4 << 20 }; /* the messages between admission and
				 their first attempt: a few hundred of
				 4 KiB at 1500 msg/s (bench (a)) */
static const double KEEP_TIME = 5.0; /* seconds */
static size_t kept_total; /* octets in every message's kept file: the
			     queue manager has one loop */

static void drop_file(struct message *m)
{
	if (m->file.data == NULL)
		return;
	kept_total -= (size_t)m->file.body_offset + m->file.body_size;
	queued_message_close(&m->file);
}

void message_free(struct message *m)
{
	if (m == NULL)
		return;
	while (m->entries != NULL) {
		struct entry *e = m->entries;

		m->entries = e->next;
		free(e);
	}
	for (size_t i = 0; m->last_error != NULL && i < m->env.n_rcpts; i++)
		free(m->last_error[i]);
	free(m->last_error);
	free(m->states);
	free(m->unsaved);
	free(m->dsn_busy);
	free(m->retry_at);
	free(m->tries);
	drop_file(m);
	envelope_free(&m->env);
	free(m);
}

char *message_headers(const struct queued_message *f, size_t *len)
{
	char *buf = malloc(HEADER_MAX), *end;
	ssize_t n = buf ? pread(f->fd, buf, HEADER_MAX, f->body_offset) : -1;

	*len = 0;
	if (n <= 0) {
		free(buf);
		return NULL;
	}
	end = memmem(buf, (size_t)n, "\r\n\r\n", 4);
	*len = end ? (size_t)(end - buf) + 2 : (size_t)n;
	return buf;
}

/* The header section of a file in memory (not a copy), else read. */
static char *header_section(const struct queued_message *f, size_t *len,
			    bool *copy)
{
	const char *h = f->data + f->body_offset, *end;

	*copy = f->data == NULL;
	if (*copy)
		return message_headers(f, len);
	end = memmem(h, f->body_size, "\r\n\r\n", 4);
	*len = end ? (size_t)(end - h) + 2 : f->body_size;
	return (char *)h;
}

/* What delivery needs from the header section, read once: the hops
 * (Received: headers), TLS-Required: No, and whether it is a TLS report. */
static void read_header_facts(const struct queued_message *f,
			      struct message *m)
{
	size_t len;
	bool copy;
	char *h = header_section(f, &len, &copy);

	m->hops = 0;
	for (size_t i = 0; h != NULL && i + 9 <= len; i++)
		if ((i == 0 || h[i - 1] == '\n') &&
		    strncasecmp(h + i, "Received:", 9) == 0)
			m->hops++;
	/* RFC 8689 §4.1: with the REQUIRETLS parameter the field is
	 * ignored */
	m->tls_required_no = h != NULL && !m->env.requiretls &&
			     requiretls_header_no(h, len);
	m->tlsrpt_report = h != NULL && m->env.sender[0] == '\0' &&
			   tlsrpt_mail_is_report(h, len);
	if (copy)
		free(h);
}

static bool alloc_arrays(struct message *m)
{
	size_t n = m->env.n_rcpts;

	m->states = calloc(n, sizeof(*m->states));
	m->unsaved = calloc(n, sizeof(*m->unsaved));
	m->dsn_busy = calloc(n, sizeof(*m->dsn_busy));
	m->retry_at = calloc(n, sizeof(*m->retry_at));
	m->tries = calloc(n, sizeof(*m->tries));
	m->last_error = calloc(n, sizeof(*m->last_error));
	return m->states && m->unsaved && m->dsn_busy && m->last_error &&
	       m->retry_at && m->tries;
}

/* Kept for the first attempt when the bound allows, else closed. */
static void keep_file(struct message *m, const struct queued_message *file,
		      double now)
{
	size_t size = (size_t)file->body_offset + file->body_size;

	m->file = *file;
	m->file_at = now;
	if (m->file.data == NULL || kept_total + size > KEEP_TOTAL) {
		queued_message_close(&m->file);
		return;
	}
	kept_total += size;
}

bool message_take_file(struct message *m, double now,
		       struct queued_message *out)
{
	bool fresh = m->file.data != NULL && now - m->file_at < KEEP_TIME;

	if (fresh) {
		kept_total -= (size_t)m->file.body_offset + m->file.body_size;
		*out = m->file;
		m->file.data = NULL;
	}
	drop_file(m);
	return fresh;
}

struct message *message_load(struct queue *q, const char *qid, double now,
			     bool *again)
{
	struct message *m = calloc(1, sizeof(*m));
	struct queued_message file;
	char err[200];

	*again = true;
	if (m == NULL)
		return NULL;
	m->file.fd = -1;
	if (!queue_read_message(q, qid, &m->env, &file, err, sizeof(err))) {
		/* Gone (queue delete) is fine; not a queue file is set aside
		 * rather than left to fail at every start. */
		*again = errno != ENOENT && errno != EBADMSG;
		if (errno == EBADMSG)
			queue_quarantine(q, qid);
		log_qid_msg(LOG_ERR, "delivery_load", qid, "%s%s", err,
			    *again ? "; read again later" : "");
		free(m);
		return NULL;
	}
	/* Counted now, on what was read: not read again. */
	read_header_facts(&file, m);
	m->size = file.body_size;
	keep_file(m, &file, now);
	memcpy(m->qid, qid, sizeof(m->qid));
	if (!alloc_arrays(m)) {
		message_free(m);
		return NULL;
	}
	/* attempts: a restart goes on counting where the last run stopped */
	queue_state_load(q, qid,
			 &(struct rcpt_records){.states = m->states,
						.last = m->last_error,
						.attempts = m->tries},
			 m->env.n_rcpts);
	for (size_t i = 0; i < m->env.n_rcpts; i++)
		m->recorded |= m->tries[i] > 0 || m->states[i] != RCPT_PENDING;
	return m;
}

bool message_pending(const struct message *m)
{
	for (size_t i = 0; i < m->env.n_rcpts; i++)
		if (m->states[i] == RCPT_PENDING)
			return true;
	return false;
}

bool message_owes_dsn(const struct message *m)
{
	for (size_t i = 0; i < m->env.n_rcpts; i++)
		if (m->states[i] == RCPT_BOUNCED)
			return true;
	return false;
}

void message_append_state(struct queue *q, struct message *m, size_t i,
			  enum rcpt_state st, const char *text)
{
	queue_state_append(q, m->qid, i, st, text);
	m->recorded = true;
	m->unsaved[i] = false;
}

void message_save_sent(struct queue *q, struct message *m)
{
	for (size_t i = 0; i < m->env.n_rcpts; i++)
		if (m->unsaved[i])
			message_append_state(q, m, i, RCPT_SENT,
					     m->last_error[i] ? m->last_error[i]
							      : "");
}

void message_rcpt_domain(const char *hostname, const char *rcpt, char *out,
			 size_t len)
{
	const char *at = strrchr(rcpt, '@');

	snprintf(out, len, "%s", at ? at + 1 : hostname);
	for (char *c = out; *c != '\0'; c++)
		*c = (char)tolower((unsigned char)*c);
}

bool message_rcpt_in(const struct message *m, size_t i, const char *hostname,
		     const char *domain)
{
	char dom[256];

	if (m->states[i] != RCPT_PENDING)
		return false;
	message_rcpt_domain(hostname, m->env.rcpts[i], dom, sizeof(dom));
	return strcmp(dom, domain) == 0;
}
