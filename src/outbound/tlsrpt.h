/*
 * tlsrpt: the queue manager's SMTP TLS reporting (RFC 8460, README
 * "TLS-RPT"). Delivery tells it, per outbound session, what TLS came of it
 * under which policy (tlsrpt_success, tlsrpt_failure); it counts in memory
 * and appends the counts to SPOOL/tlsrpt/DATE/DOMAIN (spool/tlsrpt_store)
 * every minute, never syncing on the loop. After each UTC midnight (plus a
 * random delay) it reports every finished day: per domain, the
 * _smtp._tls TXT record names where to (net/dns), the JSON report is built
 * and gzip'd (proto/tlsrpt_report) and queued through the spool like a DSN,
 * from the null sender, for delivery to pick up. It decides nothing about
 * delivery and never blocks the loop.
 *
 * Every function takes NULL for `t` and does nothing; with [tlsrpt]
 * enable = no nothing is counted or sent.
 */
#ifndef SMTPGW_OUTBOUND_TLSRPT_H
#define SMTPGW_OUTBOUND_TLSRPT_H

#include "proto/tlsrpt.h"

#include <ev.h>

struct delivery;
struct dns;
struct generation;
struct queue;
struct tlsrpt;

/* The policy a session was held to (RFC 8460 §4.4 "policy"). */
struct tlsrpt_policy {
	enum tlsrpt_policy_type type;
	const char *domain;  /* policy-domain: the recipient domain */
	const char *strings; /* policy-string: the TLSA records or the STS
				policy's lines, joined by '\n'; NULL: none */
	const char *mx_hosts; /* mx-host: the STS policy's mx patterns or the
				 TLSA record's host, joined by '\n'; NULL */
};

/* The session's addresses and names ("failure-details"); NULL: unknown. */
struct tlsrpt_session {
	const char *mx_host;	  /* receiving-mx-hostname */
	const char *receiving_ip; /* receiving-ip */
	const char *sending_ip;	  /* sending-mta-ip */
};

/* `current` is the queue manager's running generation (its [tlsrpt]
 * settings are read at each use); reports are queued in `q` and handed
 * to `d` (delivery_add). NULL when out of memory. */
struct tlsrpt *tlsrpt_new(struct ev_loop *loop, struct queue *q,
			  struct dns *dns, struct generation *const *current,
			  struct delivery *d);
/* Writes what is counted, drops a report being made (it is made again
 * at the next start), stops the timers. Before queue_close. */
void tlsrpt_stop(struct tlsrpt *t);
void tlsrpt_free(struct tlsrpt *t);

/* One session to policy->domain's MX host went well: TLS as its policy
 * asks. */
void tlsrpt_success(struct tlsrpt *t, const struct tlsrpt_policy *policy,
		    const struct tlsrpt_session *s);
/* One session failed with `result`; `reason` (failure-reason-code) is
 * the library's or the server's words, or NULL. */
void tlsrpt_failure(struct tlsrpt *t, const struct tlsrpt_policy *policy,
		    const struct tlsrpt_session *s, enum tlsrpt_result result,
		    const char *reason);

/* Appends what is counted to the spool now. */
void tlsrpt_flush(struct tlsrpt *t);

/* SIGUSR1 (`queue flush`): writes the counts to the spool, and reports
 * the days `smtpgw tlsrpt --send` asked for (today's so far included). */
void tlsrpt_take_requests(struct tlsrpt *t);

#endif
