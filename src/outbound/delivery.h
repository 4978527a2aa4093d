/*
 * delivery: gets queued mail out. It holds at most [delivery] active_limit
 * messages in memory (envelope and per-recipient state, not the content);
 * the rest wait in the spool until a pass over it finds them due. Each
 * message's pending recipients are grouped by domain and scheduled per
 * destination (outbound/scheduler.h); each attempt runs one outbound
 * transaction (outbound/attempt.h) and records every recipient's outcome
 * in the spool, retrying with backoff until delivered, bounced, or too
 * old; bounces go back as RFC 3464 DSNs through the same queue
 * (outbound/bounce.h).
 */
#ifndef SMTPGW_DELIVERY_H
#define SMTPGW_DELIVERY_H

#include <ev.h>

struct delivery;
struct dns;
struct generation;
struct queue;
struct sts;

/* `current` points at the running generation (it changes on reload);
 * each attempt uses the generation current when it starts. */
struct delivery *delivery_new(struct ev_loop *loop, struct queue *q,
			      struct dns *dns,
			      struct generation *const *current);
/* MTA-STS policies from `sts` (outbound/sts.h) for MX routes; NULL (the
 * default): none. Set before the first delivery_load. */
void delivery_use_sts(struct delivery *d, struct sts *sts);
/* Aborts transactions in flight (their messages stay queued) and ignores
 * what is added from then on: called before the queue's last callbacks. */
void delivery_stop(struct delivery *d);
/* After queue_close: a DSN the sync thread still holds refers to its
 * message until its callback has run. */
void delivery_free(struct delivery *d);

/* The three below only record the work and run the queue at the loop's
 * next turn, never from inside the call: any callback may make them. */
/* A pass over the spool (at start-up; again later is harmless). */
void delivery_load(struct delivery *d);
/* A message that has just been queued; one already held is left alone,
 * one that cannot be read now (out of descriptors) is read again at the
 * next retry. */
void delivery_add(struct delivery *d, const char *qid);
/* Every deferred message, now (SIGUSR1, `queue flush`), and no
 * destination is dead any more. */
void delivery_flush(struct delivery *d);
/* One message now (`queue requeue`, `queue release`), when it is held. */
void delivery_flush_message(struct delivery *d, const char *qid);

#endif
