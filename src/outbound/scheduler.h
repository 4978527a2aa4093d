/*
 * scheduler: what the queue manager delivers next, and when. Pure: no I/O,
 * no clock (every call is given `now`), no event loop; it never sees a
 * message, only the caller's items.
 *
 * An item is the caller's unit of work (one message's recipients for one
 * domain), embedded in the caller's object. It belongs to one destination
 * (a recipient domain, or the next hop of its static route): the queue that
 * its concurrency window and its dead-or-alive state apply to. An item
 * waits in a due-time heap until it is due, then in its destination's FIFO
 * until the destination has room; sched_next hands out the next one, round
 * robin over the destinations with room, within the global limit. Every
 * operation is O(log n) or O(1); lookups by name are hashed.
 *
 * Windows (Postfix's qmgr, simplified): a destination starts at
 * initial_window transactions at once, gains one per success up to
 * max_window, and is halved (at least 1) by each failure.
 * Dead destinations: after dead_after failures in a row a destination is
 * dead for dead_time: its due items are handed out at once, marked dead,
 * for the caller to defer without connecting. Then it is "suspect": one
 * transaction at a time; a success makes it alive again, a failure dead
 * again. A destination that has been dead is remembered for forget_after
 * once nothing refers to it, so that its next failure counts.
 *
 * sched_refill (below) is the active set's intake policy: how many
 * messages the caller holds in memory, and when it should look on disk
 * for more.
 */
#ifndef SMTPGW_SCHEDULER_H
#define SMTPGW_SCHEDULER_H

#include "outbound/idmap.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sched;
struct sched_dest;

struct sched_limits {
	unsigned max_active;	 /* transactions in flight, overall */
	unsigned max_window;	 /* per destination */
	unsigned initial_window; /* a new destination's window (≤ max) */
	unsigned dead_after;	 /* failures in a row that make it dead */
	double dead_time;	 /* seconds a dead destination waits */
	double forget_after;	 /* seconds it is remembered after that */
};

/* IDLE: not the scheduler's; WAITING: in the due-time heap; READY: due,
 * in its destination's FIFO; OUT: handed out; PARKED: attached to its
 * destination but in no queue (after sched_done). */
enum sched_where {
	ITEM_IDLE,
	ITEM_WAITING,
	ITEM_READY,
	ITEM_OUT,
	ITEM_PARKED,
};

/* A place in one of the scheduler's heaps: by `at`, ties first come,
 * first served. */
struct sched_when {
	double at;
	uint64_t seq;
	size_t index;
};

/* Embedded in the caller's object; the fields are the scheduler's. */
struct sched_item {
	struct sched_when when; /* when.at: due (while ITEM_WAITING: heaped) */
	struct sched_dest *dest;
	struct sched_item *prev, *next; /* the destination's FIFO (READY) */
	enum sched_where where;
	bool dead;	   /* handed out dead: no transaction slot taken */
};

enum sched_feedback {
	SCHED_SUCCESS, /* the destination answered (whatever it said) */
	SCHED_FAILURE, /* no connection, or it was lost */
	SCHED_NEUTRAL, /* nothing learnt (a local problem, a DNS failure) */
};

enum sched_change {
	SCHED_SAME,
	SCHED_NOW_DEAD,	 /* alive → dead: log it */
	SCHED_NOW_ALIVE, /* dead or suspect → alive: log it */
};

enum sched_state { DEST_ALIVE, DEST_DEAD, DEST_SUSPECT };

struct sched *sched_new(const struct sched_limits *l);
/* Every item must have been removed. */
void sched_free(struct sched *s);

/* The destination named `name` (case does not matter), made when new;
 * NULL when out of memory. It lives while an item refers to it (or while
 * it is remembered dead). */
struct sched_dest *sched_dest(struct sched *s, const char *name);
const char *sched_dest_name(const struct sched_dest *d);
enum sched_state sched_dest_state(const struct sched_dest *d);
/* Until when it is dead (0 when it is not). */
double sched_dest_until(const struct sched_dest *d);
unsigned sched_dest_failures(const struct sched_dest *d);
unsigned sched_dest_window(const struct sched_dest *d);
unsigned sched_dest_active(const struct sched_dest *d);

/* Puts an idle item in `d`'s queue, due at `due`; false when out of
 * memory (the item stays idle). */
bool sched_add(struct sched *s, struct sched_item *it, struct sched_dest *d,
	       double due);
/* A waiting, ready or parked item is due (again) at `due`; false when out
 * of memory (it stays parked: sched_remove it). */
bool sched_requeue(struct sched *s, struct sched_item *it, double due);
/* Takes an item out, in whatever state: an item that was handed out gives
 * its slot back without feedback (the caller aborted it). Idle after. A
 * destination nothing refers to any more is freed, unless it has failures
 * to remember: then it is kept for forget_after from `now`. */
void sched_remove(struct sched *s, struct sched_item *it, double now);

/* The next item to work on at `now`, or NULL. A dead destination's due
 * items come first, with it->dead set (defer them without connecting);
 * then a due item of a destination with room, within max_active, which
 * takes a slot. The item is ITEM_OUT until sched_done. */
struct sched_item *sched_next(struct sched *s, double now);
/* The work on a handed-out item is over: its slot is given back, the
 * feedback adjusts its destination (ignored for a dead item), and the
 * item is parked (sched_requeue it, or sched_remove it). */
enum sched_change sched_done(struct sched *s, struct sched_item *it,
			     enum sched_feedback fb, double now);

/* When sched_next may next have something new without anything being
 * done (a due time, a dead destination's end); INFINITY when never. An
 * item held back by a window waits for a sched_done instead. */
double sched_wake(const struct sched *s);
/* Transactions in flight, overall. */
unsigned sched_active(const struct sched *s);
/* Every destination with failures starts afresh (queue flush); `cb` is
 * called first for each that was dead or suspect. Returns how many were. */
typedef void sched_revived_cb(void *arg, const struct sched_dest *d);
unsigned sched_revive_all(struct sched *s, sched_revived_cb *cb, void *arg);

/* ---- the active set's intake ------------------------------------------ */

/*
 * The caller holds at most `limit` messages in memory. New ones are taken
 * in while there is room; one that finds none stays on disk, and so does
 * a message with nothing due (evicted, with its due time on disk). A pass
 * over the disk finds them again: it runs when a message is known to be
 * due there and there is room, at most once per `interval` (a flush
 * starts one at once and takes every message, due or not). A pass that
 * finds the set full stops where it is and goes on when room is made.
 */
enum refill_verdict {
	REFILL_TAKE, /* load it */
	REFILL_SKIP, /* not due yet (or held already) */
	REFILL_STOP, /* no room: keep this entry for when there is */
};

struct sched_refill {
	unsigned limit;	 /* active_limit */
	unsigned held;	 /* messages in memory */
	double interval; /* between passes */
	bool scanning;	 /* a pass is under way */
	bool flush;	 /* this pass takes every message */
	bool flush_wanted;
	bool more;	   /* a due message was left on disk */
	double disk_due;   /* the earliest due time known on disk */
	double last_pass;  /* when the last pass started */
	bool full;	   /* refused for room since the backlog last
			      emptied */
};

void sched_refill_init(struct sched_refill *r, unsigned limit,
		       double interval);
/* Whether one more message fits now. */
bool sched_refill_room(const struct sched_refill *r);
/* A message was taken in / let go (done, or evicted to disk). */
void sched_refill_held(struct sched_refill *r);
void sched_refill_released(struct sched_refill *r);
/* A due message could not be taken in for want of room: true when that
 * fills the set (log it once; the next pass that empties the disk's
 * backlog clears it). */
bool sched_refill_refused(struct sched_refill *r);
/* A pass stopped for want of room: true the first time (see above). */
bool sched_refill_filled(struct sched_refill *r);
/* A message on disk is due at `due` (evicted, or unreadable for now). */
void sched_refill_later(struct sched_refill *r, double due);
/* queue flush: the next pass (at once) takes everything. */
void sched_refill_flush(struct sched_refill *r);
/* Whether a pass should start at `now`; sched_refill_start when it does. */
bool sched_refill_due(const struct sched_refill *r, double now);
void sched_refill_start(struct sched_refill *r, double now);
/* One entry of the pass, due at `due` (held: already in memory). */
enum refill_verdict sched_refill_entry(struct sched_refill *r, double due,
				       bool held, double now);
void sched_refill_end(struct sched_refill *r);
/* When to look again: now for a pass under way with room, the next pass's
 * time otherwise; INFINITY when nothing is known to be waiting. */
double sched_refill_wake(const struct sched_refill *r, double now);

#endif
