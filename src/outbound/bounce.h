/*
 * bounce: what a message owes its sender. Bounced recipients go back as one
 * RFC 3464 DSN (multipart/report, from the null sender) queued through the
 * spool like any message; a recipient counts as settled ("notified") only
 * once that DSN is synced. Also the two ways a message bounces without a
 * remote verdict: too old (4.4.7) and looping (5.4.6). Owns the DSN in
 * flight (its commit record); must not free or schedule a message.
 */
#ifndef SMTPGW_BOUNCE_H
#define SMTPGW_BOUNCE_H

#include "outbound/message.h"

#include <stdbool.h>

struct config;
struct queue;

/* A DSN reached the spool (ok, with its id) or did not. The recipients it
 * covers are marked notified already; m->dsns counts it no more. */
typedef void bounce_done_cb(void *owner, struct message *m, bool ok,
			    const char *dsn_qid);

/* Queues one DSN for the bounced recipients of `m` not already in one
 * (none for the null sender: those are settled at once). False when it
 * could not be queued (the recipients stay owed); true when there was
 * nothing to do or `cb` will report. */
bool bounce_send(struct queue *q, const struct config *cfg, double now,
		 struct message *m, bounce_done_cb *cb, void *owner);
/* Every pending recipient bounces: the message is older than
 * max_queue_lifetime (4.4.7), or has looped (5.4.6). */
void bounce_expire(struct queue *q, struct message *m);
void bounce_loop(struct queue *q, struct message *m);

#endif
