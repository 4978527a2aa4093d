/*
 * attempt: one delivery attempt ("job"): some pending recipients of one
 * message in one domain, handed out by the scheduler. It finds the route
 * (config_route: next_hop or relayhost, else MX via dns), asks the policy's client_tls for
 * the level, walks the hosts and addresses with smtp_client and records
 * each recipient's outcome (its state line first, but "sent" at the end of
 * the job and only when the message stays; then memory and the log).
 * A job holds its queue file (in memory, or open when big), its
 * smtp_client and a reference to the
 * generation it started under; DNS answers come back by job id, so a job
 * that is gone is simply not found. Must not free a message.
 */
#ifndef SMTPGW_ATTEMPT_H
#define SMTPGW_ATTEMPT_H

#include "outbound/idmap.h"
#include "outbound/message.h"
#include "outbound/scheduler.h"

#include <ev.h>
#include <stdint.h>

struct config;
struct conncache;
struct dns;
struct sts;
struct tlsrpt;
struct generation;
struct job;
struct queue;

/* The job of `e` is over and freed (e->m->jobs counts it no more): `fb`
 * is what it learnt about the destination, `why` its last failure. */
typedef void attempt_done_cb(void *owner, struct entry *e,
			     enum sched_feedback fb, const char *why);

/* What every job shares; owned by delivery. */
struct attempt_ctx {
	struct ev_loop *loop;
	struct queue *queue;
	struct dns *dns;
	struct sts *sts;	    /* MTA-STS policies; NULL: none */
	struct tlsrpt *tlsrpt;	    /* TLS reporting; NULL: none */
	struct conncache *cache;    /* idle connections for reuse */
	struct generation *const *current;
	attempt_done_cb *done;
	void *owner;
	struct idmap jobs; /* by id, for DNS answers */
	struct job *all;   /* every job, for attempt_abort_all */
	uint64_t next_id;
};

bool attempt_ctx_init(struct attempt_ctx *c);
/* Frees every job without calling back (their messages stay queued). */
void attempt_abort_all(struct attempt_ctx *c);
void attempt_ctx_free(struct attempt_ctx *c);

/* Where mail for `domain` goes, as the scheduler's destination name: its
 * static next hop ("host:port"), or the domain itself (MX). */
void attempt_destination(const struct config *cfg, const char *domain,
			 char *out, size_t len);

/* A job for the recipients of `e` that are due at `now`; NULL when out of
 * memory. Then one of: */
struct job *attempt_new(struct attempt_ctx *c, struct entry *e, double now);
/* route, level, hosts, transaction: the result comes through c->done */
void attempt_begin(struct job *j);
/* every recipient deferred with `why`, no connection (a dead
 * destination); c->done is called before this returns */
void attempt_defer(struct job *j, const char *why);

#endif
