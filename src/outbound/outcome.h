/*
 * outcome: the queue manager's log lines about messages, in Postfix's
 * manner (README "Logs"): one per recipient and attempt (status= sent,
 * deferred, bounced, expired, with delay= and delays=), and a message's
 * active, bounce, expired and removed lines. Owns no state; must not
 * change a message.
 */
#ifndef SMTPGW_OUTCOME_H
#define SMTPGW_OUTCOME_H

#include "outbound/message.h"

#include <stddef.h>

struct client_result;

/* Postfix's clock of one delivery (log_adhoc): arrival (the queue id's
 * time), entry into this round, hand-off to the job, end of connection
 * set-up (MAIL FROM sent), now. */
struct timing {
	double arrival, active, handoff, setup, now;
};

/* The enhanced status code in "550 5.1.1 text" or "5.1.2 text"; else
 * `fallback`. */
void outcome_status_code(const char *reply, const char *fallback, char *out,
			 size_t len);
/* The arrival of `m` on the log's clock. */
double outcome_arrival(const struct message *m);
/* A recipient's line when no job ran for it (expired, loop): the whole
 * delay is before the queue manager's hand-off. */
struct timing outcome_timing_now(const struct message *m);

/* One recipient's outcome. `level` and `r` describe the transaction;
 * level NULL when no job ran (then no tls= nor attempt=); `reason`: the
 * last DANE failure, or NULL. */
void outcome_log(const struct message *m, size_t i, const char *status,
		 const char *relay, const struct timing *t, const char *level,
		 const struct client_result *r, const char *reply,
		 const char *reason);

/* Postfix's "QID: from=<S>, size=N, nrcpt=N (queue active)". */
void outcome_log_active(const struct message *m);
/* Postfix's "QID: sender non-delivery notification: DSNQID"; without a
 * DSN, why not. */
void outcome_log_bounce(const struct message *m, const char *dsn_qid,
			size_t n, const char *why);
/* Postfix's "QID: from=<S>, status=expired, returned to sender". */
void outcome_log_expired(const struct message *m, unsigned n);
/* Postfix's "QID: removed": the message's last line. */
void outcome_log_removed(const char *qid);

#endif
