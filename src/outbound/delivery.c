/*
 * delivery: the queue manager's active set. Owns the messages it holds in
 * memory (a hash by queue id), their entries in the scheduler, the pass
 * over the spool that refills the set, and the two timers that run it.
 *
 * At most [delivery] active_limit messages are held. A message comes in
 * when a worker names it (or a DSN of ours is synced) and there is room,
 * or when a pass over SPOOL/queue finds it due; it leaves when it is done
 * (removed) or when nothing of it is due now and nothing is in flight:
 * then its queue file's mtime says when it is due again, and a later pass
 * brings it back (Postfix's deferred queue). The scheduler hands out its
 * entries by due time, per destination within windows; attempt runs them;
 * bounce owes the sender the DSNs. No event walks every message or job:
 * lookups are hashed, the scheduler is O(log n), and a pass reads the
 * directory a batch per loop turn, at most once per interval.
 *
 * The queue runs from the loop only, from its own two timers: `soon` (work
 * was recorded) and `wake` (a due time, a dead spell's end, a pass).
 * Admitting a message, a flush and a DSN that reached the spool only
 * record what changed and kick. A message is freed only where nothing
 * else holds it: when its last job has ended (the job is freed first) or
 * when its last DSN is back, and never under the run's feet (each entry
 * the run hands out is dealt with before it asks for the next).
 */
#include "outbound/delivery.h"

#include "core/config.h"
#include "core/log.h"
#include "outbound/attempt.h"
#include "outbound/bounce.h"
#include "outbound/conncache.h"
#include "outbound/message.h"
#include "outbound/outcome.h"
#include "outbound/scheduler.h"
#include "policy/generation.h"
#include "spool/queue.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum {
	DEAD_AFTER = 3,	    /* connection failures in a row: dead */
	INITIAL_WINDOW = 2, /* a new destination's transactions at once */
	SCAN_BATCH = 512,   /* directory entries per loop turn */
	START_BATCH = 256,  /* entries handed out per loop turn */
};

struct delivery {
	struct ev_loop *loop;
	struct queue *queue;
	struct generation *const *current;
	struct attempt_ctx att;
	struct sched *sched;
	struct sched_refill refill;
	struct idmap messages; /* held, by queue id */
	struct message *fresh; /* taken in, not settled yet */
	struct queue_pass *scan;
	char scan_qid[QUEUE_ID_LEN + 1]; /* the entry a full set stopped at */
	double scan_due;
	bool scan_pending;
	unsigned pass_seen, pass_taken;
	ev_timer wake; /* a due time, a dead spell's end, a pass */
	ev_timer soon; /* kicked: run the queue at the loop's next turn */
	bool stopping;
};

static double now_s(const struct delivery *d)
{
	return ev_now(d->loop);
}

static const struct config *cfg_now(const struct delivery *d)
{
	return (*d->current)->cfg;
}

static uint64_t qid_key(const char *qid)
{
	return strtoull(qid, NULL, 16);
}

static void iso_time(double t, char *out, size_t len)
{
	time_t s = (time_t)t;
	struct tm tm;

	if (gmtime_r(&s, &tm) == NULL ||
	    strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(out, len, "%.0f", t);
}

/* Something changed: the queue runs at the loop's next turn, never from
 * inside the caller, which may still hold a message the run would free.
 * Kicks before that run are one. */
static void kick(struct delivery *d)
{
	if (d->stopping || ev_is_active(&d->soon))
		return;
	ev_timer_set(&d->soon, 0, 0);
	ev_timer_start(d->loop, &d->soon);
}

/* ---- holding messages -------------------------------------------------- */

static struct message *held(const struct delivery *d, const char *qid)
{
	for (struct idmap_node *n = idmap_first(&d->messages, qid_key(qid));
	     n != NULL; n = idmap_next(n))
		if (strcmp(((struct message *)n)->qid, qid) == 0)
			return (struct message *)n;
	return NULL;
}

static void drop_entry(struct delivery *d, struct entry *e)
{
	struct entry **p = &e->m->entries;

	sched_remove(d->sched, &e->item, now_s(d));
	while (*p != e)
		p = &(*p)->next;
	*p = e->next;
	free(e);
}

/* The one way a held message leaves memory (done, evicted, or stopping). */
static void unhold(struct delivery *d, struct message *m)
{
	while (m->entries != NULL)
		drop_entry(d, m->entries);
	if (m->fresh) {
		struct message **p = &d->fresh;

		while (*p != m)
			p = &(*p)->fresh_next;
		*p = m->fresh_next;
	}
	idmap_remove(&d->messages, &m->node);
	message_free(m);
	sched_refill_released(&d->refill);
	if (d->refill.scanning || d->refill.more)
		kick(d); /* room for what waits on disk */
}

/* An entry per domain with pending recipients, each in its destination's
 * queue, due at once. False when out of memory. */
static bool make_entries(struct delivery *d, struct message *m)
{
	const struct config *cfg = cfg_now(d);

	for (size_t i = 0; i < m->env.n_rcpts; i++) {
		char dom[256], dest[300];
		struct entry *e;
		struct sched_dest *sd;

		if (m->states[i] != RCPT_PENDING)
			continue;
		message_rcpt_domain(cfg->hostname, m->env.rcpts[i], dom,
				    sizeof(dom));
		for (e = m->entries; e != NULL; e = e->next)
			if (strcmp(e->domain, dom) == 0)
				break;
		if (e != NULL)
			continue;
		attempt_destination(cfg, dom, dest, sizeof(dest));
		if ((e = calloc(1, sizeof(*e) + strlen(dom) + 1)) == NULL)
			return false;
		strcpy(e->domain, dom);
		e->m = m;
		e->next = m->entries;
		m->entries = e;
		if ((sd = sched_dest(d->sched, dest)) == NULL ||
		    !sched_add(d->sched, &e->item, sd, 0))
			return false;
	}
	return true;
}

static void log_full(const struct delivery *d)
{
	struct logline l;

	log_begin(&l, LOG_WARN, "active_full");
	log_kv(&l, "held", "%u", d->refill.held);
	log_kv(&l, "active_limit", "%u", d->refill.limit);
	log_kv(&l, "msg", "%s", "further messages wait in the spool");
	log_end(&l);
}

/* Takes a queued message in; false when it is not held after this (held
 * already: a worker's notice can race a pass; no room; nothing to do). */
static bool admit(struct delivery *d, const char *qid)
{
	struct message *m;
	bool again;

	if (d->stopping || held(d, qid) != NULL)
		return false;
	if (!sched_refill_room(&d->refill)) {
		if (sched_refill_refused(&d->refill))
			log_full(d);
		return false;
	}
	if ((m = message_load(d->queue, qid, ev_time(), &again)) == NULL) {
		if (again) /* found again by a pass */
			sched_refill_later(&d->refill,
					   now_s(d) + cfg_now(d)->retry_min);
		return false;
	}
	if (!message_pending(m) && !message_owes_dsn(m)) {
		outcome_log_removed(qid); /* settled before a restart */
		queue_remove(d->queue, qid);
		message_free(m);
		return false;
	}
	m->active_at = ev_time(); /* the log's clock: the ids' (wall time) */
	outcome_log_active(m);
	idmap_insert(&d->messages, &m->node, qid_key(qid));
	sched_refill_held(&d->refill);
	m->fresh = true;
	m->fresh_next = d->fresh;
	d->fresh = m;
	if (!make_entries(d, m)) {
		log_qid_msg(LOG_ERR, "delivery_load", qid, "out of memory; "
			    "read again later");
		unhold(d, m);
		sched_refill_later(&d->refill, now_s(d) + cfg_now(d)->retry_min);
		return false;
	}
	return true;
}

/* ---- settling a message ------------------------------------------------ */

static void on_bounce(void *owner, struct message *m, bool ok,
		      const char *dsn_qid);

/* Nothing pending, no DSN owed or in flight, no job: the message goes;
 * true when it went. */
static bool finish_if_done(struct delivery *d, struct message *m)
{
	if (m->jobs > 0 || m->dsns > 0)
		return false;
	if (!m->gone && (message_pending(m) || message_owes_dsn(m)))
		return false;
	if (!m->gone)
		outcome_log_removed(m->qid);
	if (m->recorded)
		queue_remove(d->queue, m->qid);
	else
		queue_remove_unrecorded(d->queue, m->qid);
	unhold(d, m);
	return true;
}

/* When the message has work next: its earliest entry, or a DSN to try
 * again; `now` or earlier when it has work now. */
static double next_work(const struct message *m)
{
	double next = INFINITY;

	for (const struct entry *e = m->entries; e != NULL; e = e->next) {
		if (e->item.where != ITEM_WAITING)
			return -INFINITY; /* ready, handed out or parked */
		if (e->item.when.at < next)
			next = e->item.when.at;
	}
	if (message_owes_dsn(m) && m->dsn_due < next)
		next = m->dsn_due;
	return next;
}

/* Nothing of it due now and nothing in flight: out of memory, due again
 * at its next work (the queue file's mtime); a pass brings it back. */
static void maybe_evict(struct delivery *d, struct message *m)
{
	double due;

	if (m->jobs > 0 || m->dsns > 0 || m->gone)
		return;
	due = next_work(m);
	if (due <= now_s(d) || due == INFINITY)
		return;
	if (!queue_set_due(d->queue, m->qid, due)) {
		if (errno != ENOENT)
			return; /* kept: it stays due in memory */
		log_qid_msg(LOG_WARN, "dropped", m->qid, "no longer in "
			    "queue/ (deleted, or put on hold)");
	} else {
		sched_refill_later(&d->refill, due);
	}
	unhold(d, m);
}

/* No job holds the message: loops bounce, owed DSNs go, and the message
 * is removed, evicted, or left for its due entries. */
static void settle(struct delivery *d, struct message *m)
{
	double now = now_s(d);

	if (m->jobs > 0)
		return;
	if (m->gone) {
		finish_if_done(d, m);
		return;
	}
	if (message_pending(m) && m->hops > MESSAGE_MAX_HOPS)
		bounce_loop(d->queue, m);
	if (message_owes_dsn(m) && m->dsn_due <= now &&
	    !bounce_send(d->queue, cfg_now(d), now, m, on_bounce, d))
		m->dsn_due = now + cfg_now(d)->retry_min;
	for (struct entry *e = m->entries, *next; e != NULL &&
	     !message_pending(m); e = next) {
		next = e->next;
		if (e->item.where == ITEM_WAITING)
			drop_entry(d, e); /* bounced: a loop, or too old */
	}
	if (!finish_if_done(d, m))
		maybe_evict(d, m);
}

static void on_bounce(void *owner, struct message *m, bool ok,
		      const char *dsn_qid)
{
	struct delivery *d = owner;

	if (d->stopping)
		return;
	if (ok) {
		admit(d, dsn_qid);
		kick(d);
	} else {
		log_qid_msg(LOG_ERR, "dsn_failed", m->qid, "the DSN did not "
			    "reach the spool; retried later");
		m->dsn_due = now_s(d) + cfg_now(d)->retry_min;
	}
	settle(d, m);
}

/* ---- after an attempt -------------------------------------------------- */

/* Due again at its pending recipients' earliest retry (not before its
 * floor); gone when it has none left. */
static void requeue(struct delivery *d, struct entry *e)
{
	const struct message *m = e->m;
	const char *host = cfg_now(d)->hostname;
	double due = INFINITY;

	for (size_t i = 0; i < m->env.n_rcpts; i++)
		if (m->retry_at[i] < due &&
		    message_rcpt_in(m, i, host, e->domain))
			due = m->retry_at[i];
	if (due == INFINITY) {
		drop_entry(d, e);
		return;
	}
	/* It has just left the heap: there is room for it again. */
	(void)sched_requeue(d->sched, &e->item, due > e->floor ? due : e->floor);
}

static void log_change(const struct entry *e, const struct sched_dest *sd,
		       enum sched_change change, const char *why)
{
	struct logline l;
	char until[32];

	if (change == SCHED_SAME)
		return;
	log_begin(&l, change == SCHED_NOW_DEAD ? LOG_WARN : LOG_INFO,
		  change == SCHED_NOW_DEAD ? "destination_dead"
					   : "destination_alive");
	log_kv(&l, "destination", "%s", sched_dest_name(sd));
	log_kv(&l, "domain", "%s", e->domain);
	if (change == SCHED_NOW_DEAD) {
		iso_time(sched_dest_until(sd), until, sizeof(until));
		log_kv(&l, "failures", "%u", sched_dest_failures(sd));
		log_kv(&l, "until", "%s", until);
		log_kv(&l, "reply", "%s", why);
	}
	log_end(&l);
}

/* Every job of a round is back: bounce, retry, or finish the message.
 * One that stays held starts a new round (for delays=) when its next
 * entry is due. */
static void round_done(struct delivery *d, struct message *m)
{
	double next;

	if (!m->gone && message_pending(m) &&
	    now_s(d) - (double)m->env.arrival > cfg_now(d)->max_queue_lifetime)
		bounce_expire(d->queue, m);
	next = next_work(m);
	m->active_at = next > ev_time() ? next : ev_time();
	settle(d, m);
}

/* attempt's callback: the job is freed already. */
static void on_attempt(void *owner, struct entry *e, enum sched_feedback fb,
		       const char *why)
{
	struct delivery *d = owner;
	struct message *m = e->m;
	struct sched_dest *sd = e->item.dest;

	log_change(e, sd, sched_done(d->sched, &e->item, fb, now_s(d)), why);
	/* "sent" is written unless the message goes now */
	if (m->jobs > 0 || m->dsns > 0 || message_pending(m) ||
	    message_owes_dsn(m))
		message_save_sent(d->queue, m);
	requeue(d, e);
	if (m->jobs == 0)
		round_done(d, m);
	kick(d);
}

/* ---- the run ----------------------------------------------------------- */

static void dead_defer(struct job *j, struct entry *e)
{
	const struct sched_dest *sd = e->item.dest;
	char why[400], until[32];

	e->floor = sched_dest_until(sd);
	iso_time(e->floor, until, sizeof(until));
	snprintf(why, sizeof(why), "4.4.1 destination %s is not answering "
		 "(%u connection failures in a row): not tried before %s",
		 sched_dest_name(sd), sched_dest_failures(sd), until);
	attempt_defer(j, why);
}

/* Hands out what is due, a batch per turn. Each entry is dealt with
 * before the next is asked for: a job that ends at once may free its
 * message, and nothing here holds on to it. */
static void start_work(struct delivery *d, double now)
{
	struct sched_item *it;
	unsigned n = 0;

	for (; n < START_BATCH && (it = sched_next(d->sched, now)) != NULL;
	     n++) {
		struct entry *e = (struct entry *)it;
		struct job *j = attempt_new(&d->att, e, now);

		if (j == NULL) { /* out of memory: a retry later */
			sched_done(d->sched, it, SCHED_NEUTRAL, now);
			e->floor = now + cfg_now(d)->retry_min;
			requeue(d, e);
		} else if (it->dead) {
			dead_defer(j, e);
		} else {
			e->floor = 0;
			attempt_begin(j);
		}
	}
	if (n == START_BATCH)
		kick(d);
}

/* New arrivals: an owed DSN goes, a loop bounces, nothing to do goes. */
static void settle_fresh(struct delivery *d)
{
	while (d->fresh != NULL) {
		struct message *m = d->fresh;

		d->fresh = m->fresh_next;
		m->fresh = false;
		settle(d, m);
	}
}

static void log_pass(const struct delivery *d)
{
	struct logline l;
	char next[32];

	log_begin(&l, LOG_INFO, "queue_pass");
	log_kv(&l, "seen", "%u", d->pass_seen);
	log_kv(&l, "taken", "%u", d->pass_taken);
	log_kv(&l, "held", "%u", d->refill.held);
	log_kv(&l, "active_limit", "%u", d->refill.limit);
	if (d->refill.disk_due != INFINITY) {
		iso_time(d->refill.disk_due, next, sizeof(next));
		log_kv(&l, "next_due", "%s", next);
	}
	log_end(&l);
}

static void end_pass(struct delivery *d)
{
	queue_pass_close(d->scan);
	d->scan = NULL;
	d->scan_pending = false;
	sched_refill_end(&d->refill);
	log_pass(d);
}

static bool start_pass(struct delivery *d, double now)
{
	if (!sched_refill_due(&d->refill, now))
		return false;
	sched_refill_start(&d->refill, now);
	d->pass_seen = d->pass_taken = 0;
	if ((d->scan = queue_pass_open(d->queue)) == NULL) {
		log_msg(LOG_ERR, "queue_pass", "cannot read the queue: %s; "
			"again later", strerror(errno));
		sched_refill_end(&d->refill);
		sched_refill_later(&d->refill, now + cfg_now(d)->retry_min);
		return false;
	}
	return true;
}

/* A batch of the pass over the spool: due messages come in while there
 * is room; a full set stops the pass at its entry until a message goes. */
static void refill(struct delivery *d, double now)
{
	if (!d->refill.scanning && !start_pass(d, now))
		return;
	for (unsigned n = 0; n < SCAN_BATCH; n++) {
		if (!d->scan_pending) {
			if (!queue_pass_next(d->scan, d->scan_qid,
					     &d->scan_due)) {
				end_pass(d);
				return;
			}
			d->scan_pending = true;
			d->pass_seen++;
		}
		switch (sched_refill_entry(&d->refill, d->scan_due,
					   held(d, d->scan_qid) != NULL, now)) {
		case REFILL_STOP:
			if (sched_refill_filled(&d->refill))
				log_full(d);
			return;
		case REFILL_TAKE:
			d->pass_taken += admit(d, d->scan_qid);
			break;
		case REFILL_SKIP:
			break;
		}
		d->scan_pending = false;
	}
	kick(d); /* the rest at the next turn */
}

/* Arms `wake` for what comes due by itself; a finishing job, a DSN and
 * room in the set kick instead. */
static void arm(struct delivery *d, double now)
{
	double next = sched_wake(d->sched), pass;

	pass = sched_refill_wake(&d->refill, now);
	if (pass < next)
		next = pass;
	ev_timer_stop(d->loop, &d->wake);
	if (next == INFINITY)
		return;
	ev_timer_set(&d->wake, next > now ? next - now : 0.01, 0);
	ev_timer_start(d->loop, &d->wake);
}

static void run_queue(struct delivery *d)
{
	double now = now_s(d);

	ev_timer_stop(d->loop, &d->soon);
	if (d->stopping)
		return;
	refill(d, now);
	settle_fresh(d);
	start_work(d, now);
	arm(d, now);
}

/* `wake` and `soon`: the only callers of run_queue. */
static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	run_queue(w->data);
}

/* ---- the interface ----------------------------------------------------- */

static struct sched *sched_for(const struct config *cfg)
{
	struct sched_limits l = {
		.max_active = cfg->delivery_max_connections,
		.max_window = cfg->delivery_max_per_destination,
		.initial_window = INITIAL_WINDOW,
		.dead_after = DEAD_AFTER,
		.dead_time = cfg->retry_min,
		.forget_after = cfg->retry_max,
	};

	return sched_new(&l);
}

/* Passes at most once a minute, or once per retry_min when that is
 * shorter (but not more than once a second). */
static double pass_interval(const struct config *cfg)
{
	double i = cfg->retry_min < 60 ? cfg->retry_min : 60;

	return i < 1 ? 1 : i;
}

struct delivery *delivery_new(struct ev_loop *loop, struct queue *q,
			      struct dns *dns,
			      struct generation *const *current)
{
	struct delivery *d = calloc(1, sizeof(*d));
	const struct config *cfg = (*current)->cfg;

	if (d == NULL)
		return NULL;
	d->loop = loop;
	d->queue = q;
	d->current = current;
	ev_init(&d->wake, timer_cb);
	d->wake.data = d;
	ev_init(&d->soon, timer_cb);
	d->soon.data = d;
	d->att = (struct attempt_ctx){.loop = loop, .queue = q, .dns = dns,
				      .current = current, .done = on_attempt,
				      .owner = d};
	sched_refill_init(&d->refill, cfg->active_limit, pass_interval(cfg));
	/* as many idle connections as there may be busy ones */
	d->att.cache = conncache_new(cfg->delivery_max_connections);
	if (d->att.cache == NULL || (d->sched = sched_for(cfg)) == NULL ||
	    !idmap_init(&d->messages) || !attempt_ctx_init(&d->att)) {
		delivery_free(d);
		return NULL;
	}
	return d;
}

void delivery_stop(struct delivery *d)
{
	if (d == NULL)
		return;
	d->stopping = true;
	ev_timer_stop(d->loop, &d->wake);
	ev_timer_stop(d->loop, &d->soon);
	attempt_abort_all(&d->att);
	conncache_free(d->att.cache); /* QUIT to every idle connection */
	d->att.cache = NULL;
	queue_pass_close(d->scan);
	d->scan = NULL;
}

void delivery_use_sts(struct delivery *d, struct sts *sts)
{
	d->att.sts = sts;
}

void delivery_set_tlsrpt(struct delivery *d, struct tlsrpt *t)
{
	d->att.tlsrpt = t;
}

void delivery_free(struct delivery *d)
{
	size_t cursor = 0;
	struct idmap_node *n;

	if (d == NULL)
		return;
	delivery_stop(d);
	while (d->messages.buckets != NULL &&
	       (n = idmap_any(&d->messages, &cursor)) != NULL)
		unhold(d, (struct message *)n);
	idmap_free(&d->messages);
	attempt_ctx_free(&d->att);
	sched_free(d->sched);
	free(d);
}

/* A run either way: one not taken in may have to be looked for later. */
void delivery_add(struct delivery *d, const char *qid)
{
	admit(d, qid);
	kick(d);
}

/* A pass over the spool (at start-up; again later is harmless). */
void delivery_load(struct delivery *d)
{
	d->refill.more = true;
	d->refill.last_pass = -INFINITY;
	kick(d);
}

static void on_revived(void *arg, const struct sched_dest *sd)
{
	struct logline l;

	(void)arg;
	log_begin(&l, LOG_INFO, "destination_alive");
	log_kv(&l, "destination", "%s", sched_dest_name(sd));
	log_kv(&l, "reason", "flush");
	log_end(&l);
}

/* Its due recipients now, and every entry due at once. */
static void flush_held(struct delivery *d, struct message *m)
{
	memset(m->retry_at, 0, m->env.n_rcpts * sizeof(*m->retry_at));
	m->dsn_due = 0;
	m->active_at = ev_time();
	for (struct entry *e = m->entries; e != NULL; e = e->next) {
		e->floor = 0;
		if (e->item.where == ITEM_WAITING)
			sched_requeue(d->sched, &e->item, 0);
	}
}

/* One message now (`queue requeue`, `queue release`): held, or due on
 * disk at once for the pass that the same signal starts. Its destination
 * stays dead if it is. */
void delivery_flush_message(struct delivery *d, const char *qid)
{
	struct message *m = held(d, qid);

	if (m != NULL)
		flush_held(d, m);
	else if (queue_set_due(d->queue, qid, now_s(d)))
		sched_refill_later(&d->refill, now_s(d));
	kick(d);
}

/* Every deferred message now: those held (a walk, for an operator's
 * command only), those on disk (a pass that takes them all, as room
 * allows), and no destination is dead any more (Postfix's flush too). */
void delivery_flush(struct delivery *d)
{
	for (size_t b = 0; b <= d->messages.mask; b++)
		for (struct idmap_node *n = d->messages.buckets[b]; n != NULL;
		     n = n->next)
			flush_held(d, (struct message *)n);
	sched_revive_all(d->sched, on_revived, NULL);
	sched_refill_flush(&d->refill);
	kick(d);
}
