/*
 * bounce: DSNs for a message's bounced recipients, and the local bounces
 * (expired, looping). A DSN in flight is a dsn_commit, owned by the spool's
 * sync thread until on_dsn_queued; the message is not removed meanwhile
 * (m->dsns). Must not free a message: the caller's callback decides.
 */
#include "outbound/bounce.h"

#include "core/config.h"
#include "core/log.h"
#include "core/stats.h"
#include "outbound/outcome.h"
#include "proto/dsn.h"
#include "spool/queue.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A DSN on its way to the spool: which bounced recipients it covers. */
struct dsn_commit {
	struct message *m;
	struct queue *q;
	bounce_done_cb *cb;
	void *owner;
	size_t n;
	size_t index[];
};

static void mark_notified(struct queue *q, struct message *m, size_t i,
			  const char *why)
{
	message_append_state(q, m, i, RCPT_NOTIFIED, why);
	m->states[i] = RCPT_NOTIFIED;
}

/* Only now, with the DSN synced, are its recipients settled; a DSN that
 * failed leaves them owed, for a later round to try again. */
static void on_dsn_queued(void *owner, bool ok, const char *qid)
{
	struct dsn_commit *c = owner;
	struct message *m = c->m;
	bounce_done_cb *cb = c->cb;
	void *cb_owner = c->owner;
	char why[64];

	snprintf(why, sizeof(why), "DSN queued as %s", qid);
	if (ok)
		outcome_log_bounce(m, qid, c->n, NULL);
	for (size_t k = 0; k < c->n; k++) {
		m->dsn_busy[c->index[k]] = false;
		if (ok)
			mark_notified(c->q, m, c->index[k], why);
	}
	m->dsns--;
	free(c);
	cb(cb_owner, m, ok, qid);
}

/* The original header section, for the DSN's third part. */
static char *original_headers(struct queue *q, const struct message *m,
			      size_t *len)
{
	struct envelope e;
	struct queued_message f;
	char err[200], *headers;

	*len = 0;
	if (!queue_open_message(q, m->qid, &e, &f, err, sizeof(err)))
		return NULL;
	envelope_free(&e);
	headers = message_headers(&f, len);
	close(f.fd);
	return headers;
}

/* The owed recipients not already in a DSN in flight, into `c`. */
static size_t dsn_rcpts(const struct message *m, struct dsn_rcpt *out,
			char (*status)[16], struct dsn_commit *c)
{
	size_t n = 0;

	for (size_t i = 0; i < m->env.n_rcpts; i++) {
		const char *why = m->last_error[i] ? m->last_error[i] : "";

		if (m->states[i] != RCPT_BOUNCED || m->dsn_busy[i])
			continue;
		outcome_status_code(why, "5.0.0", status[n],
				    sizeof(status[n]));
		out[n] = (struct dsn_rcpt){.address = m->env.rcpts[i],
					   .action = DSN_FAILED,
					   .status = status[n],
					   .diagnostic = why};
		c->index[n++] = i;
	}
	c->n = n;
	return n;
}

static bool submit_dsn(struct queue *q, const struct config *cfg, double now,
		       struct message *m, struct dsn_input *in,
		       struct dsn_commit *c)
{
	char *to[1] = {m->env.sender};
	struct envelope e = {.sender = "", .rcpts = to, .n_rcpts = 1,
			     .arrival = (long long)now,
			     .helo = (char *)cfg->hostname};
	size_t len = 0;
	char *text;
	bool ok;

	snprintf(e.client, sizeof(e.client), "local");
	in->headers = original_headers(q, m, &in->headers_len);
	text = dsn_build(in, &len);
	ok = text != NULL &&
	     queue_submit(q, &e, text, len, on_dsn_queued, c);
	free((char *)in->headers);
	free(text);
	return ok;
}

/* Hands `c` to the spool; false (and `c` still the caller's) when it
 * could not be. */
static bool queue_dsn(struct queue *q, const struct config *cfg, double now,
		      struct message *m, struct dsn_input *in,
		      struct dsn_commit *c)
{
	for (size_t k = 0; k < c->n; k++)
		m->dsn_busy[c->index[k]] = true;
	m->dsns++;
	if (submit_dsn(q, cfg, now, m, in, c))
		return true;
	log_qid_msg(LOG_ERR, "dsn_failed", m->qid, "cannot queue the DSN; "
		    "retried later");
	for (size_t k = 0; k < c->n; k++)
		m->dsn_busy[c->index[k]] = false;
	m->dsns--;
	return false;
}

/* Bounces go to the sender, never for a null sender (RFC 5321 §4.5.5):
 * those recipients are settled at once. */
bool bounce_send(struct queue *q, const struct config *cfg, double now,
		 struct message *m, bounce_done_cb *cb, void *owner)
{
	size_t n = m->env.n_rcpts;
	struct dsn_rcpt *rcpts = calloc(n, sizeof(*rcpts));
	char (*status)[16] = calloc(n, sizeof(*status));
	struct dsn_commit *c = calloc(1, sizeof(*c) + n * sizeof(size_t));
	struct dsn_input in = {.hostname = cfg->hostname,
			       .qid = m->qid, .sender = m->env.sender,
			       .arrival = (time_t)m->env.arrival,
			       .now = (time_t)now, .rcpts = rcpts};
	bool ok = false;

	if (rcpts == NULL || status == NULL || c == NULL)
		goto out;
	ok = true;
	in.n_rcpts = dsn_rcpts(m, rcpts, status, c);
	if (in.n_rcpts == 0)
		goto out;
	if (m->env.sender[0] == '\0') {
		outcome_log_bounce(m, NULL, c->n, "no DSN for the null sender");
		for (size_t k = 0; k < c->n; k++)
			mark_notified(q, m, c->index[k],
				      "no DSN for the null sender");
		goto out;
	}
	*c = (struct dsn_commit){.m = m, .q = q, .cb = cb, .owner = owner,
				 .n = c->n};
	ok = queue_dsn(q, cfg, now, m, &in, c);
	if (ok)
		c = NULL; /* the queue holds it until on_dsn_queued */
out:
	free(c);
	free(rcpts);
	free(status);
	return ok;
}

static void bounce_one(struct queue *q, struct message *m, const char *why,
		       size_t i)
{
	message_append_state(q, m, i, RCPT_BOUNCED, why);
	m->states[i] = RCPT_BOUNCED;
	free(m->last_error[i]);
	m->last_error[i] = strdup(why);
}

/* Postfix's status=expired line per recipient, then "returned to
 * sender" for the message. */
void bounce_expire(struct queue *q, struct message *m)
{
	struct timing t = outcome_timing_now(m);
	char why[400];
	unsigned n = 0;

	for (size_t i = 0; i < m->env.n_rcpts; i++) {
		if (m->states[i] != RCPT_PENDING)
			continue;
		snprintf(why, sizeof(why), "4.4.7 message expired after %u "
			 "attempts: %s", m->tries[i],
			 m->last_error[i] ? m->last_error[i] : "not delivered");
		outcome_log(m, i, "expired", "", &t, NULL, NULL, why, NULL);
		stats_add(STAT_EXPIRED);
		bounce_one(q, m, why, i);
		n++;
	}
	outcome_log_expired(m, n);
}

static void log_loop(const struct message *m, size_t i, const char *why)
{
	struct timing t = outcome_timing_now(m);
	struct logline l;

	log_begin(&l, LOG_WARN, "loop");
	log_kv(&l, "qid", "%s", m->qid);
	log_kv(&l, "to", "<%s>", m->env.rcpts[i]);
	log_kv(&l, "reason", "%s", why);
	log_end(&l);
	outcome_log(m, i, "bounced", "", &t, NULL, NULL, why, NULL);
}

void bounce_loop(struct queue *q, struct message *m)
{
	char why[200];

	snprintf(why, sizeof(why), "5.4.6 too many hops (%u Received: "
		 "headers): mail forwarding loop", m->hops);
	for (size_t i = 0; i < m->env.n_rcpts; i++) {
		if (m->states[i] != RCPT_PENDING)
			continue;
		bounce_one(q, m, why, i);
		log_loop(m, i, why);
		stats_add(STAT_BOUNCED);
	}
}
