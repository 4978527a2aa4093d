/*
 * scheduler: two binary heaps (items by due time, destinations by their
 * timer: the end of a dead spell, or when to forget one), a hash of the
 * destinations by name, a FIFO of ready items per destination and two
 * lists of destinations that can be served (dead ones with ready items;
 * live ones with ready items and room). Owns the destinations; the items
 * are the caller's. Must not do I/O, read a clock or log: the caller logs
 * what sched_done reports.
 */
#include "outbound/scheduler.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum list_id { LIST_NONE, LIST_LIVE, LIST_DEAD };

struct sched_dest {
	struct idmap_node node;		/* by idmap_hash_name(name) */
	struct sched_item *head, *tail; /* ready, first come first */
	unsigned refs;			/* items attached, in any state */
	unsigned active;		/* slots taken */
	unsigned window;
	unsigned failures; /* in a row */
	enum sched_state state;
	double until;	      /* DEST_DEAD: the end of the spell */
	struct sched_when timer; /* its place in the timer heap */
	bool timed;	      /* in the timer heap */
	enum list_id list;
	struct sched_dest *lprev, *lnext;
	char name[];
};

struct dlist {
	struct sched_dest *head, *tail;
};

struct heap {
	struct sched_when **v;
	size_t n, cap;
};

struct sched {
	struct sched_limits lim;
	struct idmap dests;
	struct heap items;  /* waiting items, by due time */
	struct heap timers; /* destinations, by their timer */
	struct dlist live, dead;
	unsigned active;
	uint64_t seq;
};

/* ---- the heaps --------------------------------------------------------- */

#define CONTAINER(p, type, member) \
	((type *)(void *)((char *)(p) - offsetof(type, member)))

static bool before(const struct sched_when *a, const struct sched_when *b)
{
	return a->at < b->at || (a->at == b->at && a->seq < b->seq);
}

static void put(struct heap *h, size_t i, struct sched_when *w)
{
	h->v[i] = w;
	w->index = i;
}

static void sift_up(struct heap *h, size_t i)
{
	struct sched_when *w = h->v[i];

	while (i > 0 && before(w, h->v[(i - 1) / 2])) {
		put(h, i, h->v[(i - 1) / 2]);
		i = (i - 1) / 2;
	}
	put(h, i, w);
}

static void sift_down(struct heap *h, size_t i)
{
	struct sched_when *w = h->v[i];

	for (;;) {
		size_t c = 2 * i + 1;

		if (c >= h->n)
			break;
		if (c + 1 < h->n && before(h->v[c + 1], h->v[c]))
			c++;
		if (!before(h->v[c], w))
			break;
		put(h, i, h->v[c]);
		i = c;
	}
	put(h, i, w);
}

static bool heap_push(struct heap *h, struct sched_when *w)
{
	if (h->n == h->cap) {
		size_t cap = h->cap ? h->cap * 2 : 64;
		struct sched_when **v = realloc(h->v, cap * sizeof(*v));

		if (v == NULL)
			return false;
		h->v = v;
		h->cap = cap;
	}
	put(h, h->n++, w);
	sift_up(h, h->n - 1);
	return true;
}

static void heap_remove(struct heap *h, struct sched_when *w)
{
	size_t i = w->index;
	struct sched_when *last = h->v[--h->n];

	if (last == w)
		return;
	put(h, i, last);
	sift_up(h, i);
	sift_down(h, last->index);
}

/* The earliest, when it is due at `now`; NULL otherwise. */
static struct sched_when *heap_due(const struct heap *h, double now)
{
	return h->n > 0 && h->v[0]->at <= now ? h->v[0] : NULL;
}

static double heap_next(const struct heap *h)
{
	return h->n > 0 ? h->v[0]->at : INFINITY;
}

static void timer_clear(struct sched *s, struct sched_dest *d)
{
	if (!d->timed)
		return;
	heap_remove(&s->timers, &d->timer);
	d->timed = false;
}

/* Out of memory for the heap: the destination has no timer, and is
 * forgotten or revived only by a flush. Rare, and never wrong. */
static void timer_set(struct sched *s, struct sched_dest *d, double at)
{
	timer_clear(s, d);
	d->timer.at = at;
	d->timer.seq = ++s->seq;
	d->timed = heap_push(&s->timers, &d->timer);
}

/* ---- destinations ------------------------------------------------------ */

static void list_unlink(struct sched *s, struct sched_dest *d)
{
	struct dlist *l = d->list == LIST_DEAD ? &s->dead : &s->live;

	if (d->list == LIST_NONE)
		return;
	if (d->lprev != NULL)
		d->lprev->lnext = d->lnext;
	else
		l->head = d->lnext;
	if (d->lnext != NULL)
		d->lnext->lprev = d->lprev;
	else
		l->tail = d->lprev;
	d->lprev = d->lnext = NULL;
	d->list = LIST_NONE;
}

static void list_append(struct sched *s, struct sched_dest *d, enum list_id id)
{
	struct dlist *l = id == LIST_DEAD ? &s->dead : &s->live;

	d->list = id;
	d->lnext = NULL;
	d->lprev = l->tail;
	if (l->tail != NULL)
		l->tail->lnext = d;
	else
		l->head = d;
	l->tail = d;
}

static unsigned room_of(const struct sched_dest *d)
{
	unsigned window = d->state == DEST_SUSPECT ? 1 : d->window;

	return d->active < window ? window - d->active : 0;
}

/* Puts `d` on the list it belongs on now (at the tail when it moves). */
static void relist(struct sched *s, struct sched_dest *d)
{
	enum list_id want = LIST_NONE;

	if (d->head != NULL && d->state == DEST_DEAD)
		want = LIST_DEAD;
	else if (d->head != NULL && room_of(d) > 0)
		want = LIST_LIVE;
	if (want == d->list)
		return;
	list_unlink(s, d);
	if (want != LIST_NONE)
		list_append(s, d, want);
}

static void dest_free(struct sched *s, struct sched_dest *d)
{
	timer_clear(s, d);
	list_unlink(s, d);
	idmap_remove(&s->dests, &d->node);
	free(d);
}

/* Nothing refers to `d` any more: a destination with nothing to remember
 * goes at once; one with failures is kept until its timer (a dead or
 * suspect one has one already). */
static void dest_unref(struct sched *s, struct sched_dest *d, double now)
{
	if (--d->refs > 0)
		return;
	if (d->state == DEST_ALIVE && d->failures == 0) {
		dest_free(s, d);
		return;
	}
	if (!d->timed)
		timer_set(s, d, d->state == DEST_DEAD
				    ? d->until
				    : now + s->lim.forget_after);
}

struct sched_dest *sched_dest(struct sched *s, const char *name)
{
	uint64_t key = idmap_hash_name(name);
	size_t len = strlen(name);
	struct sched_dest *d;

	for (struct idmap_node *n = idmap_first(&s->dests, key); n != NULL;
	     n = idmap_next(n)) {
		d = (struct sched_dest *)n;
		if (strcasecmp(d->name, name) == 0)
			return d;
	}
	if ((d = calloc(1, sizeof(*d) + len + 1)) == NULL)
		return NULL;
	memcpy(d->name, name, len + 1);
	d->window = s->lim.initial_window;
	d->state = DEST_ALIVE;
	idmap_insert(&s->dests, &d->node, key);
	return d;
}

const char *sched_dest_name(const struct sched_dest *d)
{
	return d->name;
}

enum sched_state sched_dest_state(const struct sched_dest *d)
{
	return d->state;
}

double sched_dest_until(const struct sched_dest *d)
{
	return d->state == DEST_DEAD ? d->until : 0;
}

unsigned sched_dest_failures(const struct sched_dest *d)
{
	return d->failures;
}

unsigned sched_dest_window(const struct sched_dest *d)
{
	return d->window;
}

unsigned sched_dest_active(const struct sched_dest *d)
{
	return d->active;
}

/* The timer of `d` went off (it was set for `at`): a dead spell ends
 * (suspect from then on, remembered for forget_after), or a destination
 * nothing refers to is forgotten. A suspect one still in use keeps being
 * remembered; a live one in use needs no timer (it gets one again when it
 * is let go). */
static void dest_timer(struct sched *s, struct sched_dest *d, double at,
		       double now)
{
	if (d->state == DEST_DEAD) {
		d->state = DEST_SUSPECT;
		timer_set(s, d, at + s->lim.forget_after);
		relist(s, d);
	} else if (d->refs == 0) {
		dest_free(s, d);
	} else if (d->state == DEST_SUSPECT) {
		timer_set(s, d, now + s->lim.forget_after);
	}
}

static void go_dead(struct sched *s, struct sched_dest *d, double now)
{
	d->state = DEST_DEAD;
	d->until = now + s->lim.dead_time;
	d->window = 1;
	timer_set(s, d, d->until);
}

static enum sched_change feedback(struct sched *s, struct sched_dest *d,
				  enum sched_feedback fb, double now)
{
	enum sched_change change = SCHED_SAME;

	switch (fb) {
	case SCHED_SUCCESS:
		if (d->state != DEST_ALIVE)
			change = SCHED_NOW_ALIVE;
		d->state = DEST_ALIVE;
		d->failures = 0;
		if (d->window < s->lim.max_window)
			d->window++;
		timer_clear(s, d); /* refs > 0: the item is still parked */
		break;
	case SCHED_FAILURE:
		d->failures++;
		d->window = d->window > 1 ? d->window / 2 : 1;
		if (d->state == DEST_SUSPECT ||
		    (d->state == DEST_ALIVE &&
		     d->failures >= s->lim.dead_after)) {
			if (d->state == DEST_ALIVE)
				change = SCHED_NOW_DEAD;
			go_dead(s, d, now);
		}
		break;
	case SCHED_NEUTRAL:
		break;
	}
	return change;
}

/* ---- items ------------------------------------------------------------- */

static void fifo_append(struct sched_dest *d, struct sched_item *it)
{
	it->next = NULL;
	it->prev = d->tail;
	if (d->tail != NULL)
		d->tail->next = it;
	else
		d->head = it;
	d->tail = it;
}

static void fifo_unlink(struct sched_dest *d, struct sched_item *it)
{
	if (it->prev != NULL)
		it->prev->next = it->next;
	else
		d->head = it->next;
	if (it->next != NULL)
		it->next->prev = it->prev;
	else
		d->tail = it->prev;
	it->prev = it->next = NULL;
}

static bool enqueue(struct sched *s, struct sched_item *it, double due)
{
	it->when.at = due;
	it->when.seq = ++s->seq;
	if (!heap_push(&s->items, &it->when))
		return false;
	it->where = ITEM_WAITING;
	return true;
}

bool sched_add(struct sched *s, struct sched_item *it, struct sched_dest *d,
	       double due)
{
	if (it->where != ITEM_IDLE)
		return false;
	it->dest = d;
	it->dead = false;
	if (!enqueue(s, it, due))
		return false;
	d->refs++;
	return true;
}

/* Out of the heap, the FIFO or the hands of the caller: parked. */
static void unqueue(struct sched *s, struct sched_item *it)
{
	switch (it->where) {
	case ITEM_WAITING:
		heap_remove(&s->items, &it->when);
		break;
	case ITEM_READY:
		fifo_unlink(it->dest, it);
		relist(s, it->dest);
		break;
	case ITEM_OUT:
		if (!it->dead) {
			it->dest->active--;
			s->active--;
			relist(s, it->dest);
		}
		break;
	case ITEM_PARKED:
	case ITEM_IDLE:
		break;
	}
	it->dead = false;
	it->where = ITEM_PARKED;
}

bool sched_requeue(struct sched *s, struct sched_item *it, double due)
{
	if (it->where == ITEM_IDLE || it->where == ITEM_OUT)
		return false;
	unqueue(s, it);
	return enqueue(s, it, due);
}

void sched_remove(struct sched *s, struct sched_item *it, double now)
{
	if (it->where == ITEM_IDLE)
		return;
	unqueue(s, it);
	it->where = ITEM_IDLE;
	dest_unref(s, it->dest, now);
	it->dest = NULL;
}

/* Items whose time has come join their destination's FIFO; dead spells
 * that are over end. */
static void advance(struct sched *s, double now)
{
	struct sched_when *w;

	while ((w = heap_due(&s->timers, now)) != NULL) {
		struct sched_dest *d = CONTAINER(w, struct sched_dest, timer);

		timer_clear(s, d);
		dest_timer(s, d, w->at, now);
	}
	while ((w = heap_due(&s->items, now)) != NULL) {
		struct sched_item *it = CONTAINER(w, struct sched_item, when);

		heap_remove(&s->items, w);
		it->where = ITEM_READY;
		fifo_append(it->dest, it);
		relist(s, it->dest);
	}
}

static struct sched_item *take(struct sched_dest *d)
{
	struct sched_item *it = d->head;

	fifo_unlink(d, it);
	it->where = ITEM_OUT;
	return it;
}

struct sched_item *sched_next(struct sched *s, double now)
{
	struct sched_dest *d;
	struct sched_item *it;

	advance(s, now);
	if ((d = s->dead.head) != NULL) {
		it = take(d);
		it->dead = true;
		relist(s, d);
		return it;
	}
	if (s->active >= s->lim.max_active || (d = s->live.head) == NULL)
		return NULL;
	it = take(d);
	it->dead = false;
	d->active++;
	s->active++;
	list_unlink(s, d); /* round robin: to the tail, if it still has room */
	relist(s, d);
	return it;
}

enum sched_change sched_done(struct sched *s, struct sched_item *it,
			     enum sched_feedback fb, double now)
{
	struct sched_dest *d = it->dest;
	enum sched_change change = SCHED_SAME;

	if (it->where != ITEM_OUT)
		return SCHED_SAME;
	if (!it->dead)
		change = feedback(s, d, fb, now);
	unqueue(s, it);
	relist(s, d);
	return change;
}

double sched_wake(const struct sched *s)
{
	double items = heap_next(&s->items), timers = heap_next(&s->timers);

	return items < timers ? items : timers;
}

unsigned sched_active(const struct sched *s)
{
	return s->active;
}

static bool revive(struct sched *s, struct sched_dest *d)
{
	bool was = d->state != DEST_ALIVE;

	d->state = DEST_ALIVE;
	d->failures = 0;
	d->until = 0;
	if (d->window < s->lim.initial_window)
		d->window = s->lim.initial_window;
	timer_clear(s, d);
	if (d->refs == 0)
		dest_free(s, d);
	else
		relist(s, d);
	return was;
}

unsigned sched_revive_all(struct sched *s, sched_revived_cb *cb, void *arg)
{
	unsigned n = 0;

	for (size_t b = 0; b <= s->dests.mask; b++) {
		struct idmap_node *node = s->dests.buckets[b];

		while (node != NULL) {
			struct sched_dest *d = (struct sched_dest *)node;

			node = node->next;
			if (d->state == DEST_ALIVE && d->failures == 0)
				continue;
			if (d->state != DEST_ALIVE && cb != NULL)
				cb(arg, d);
			n += revive(s, d);
		}
	}
	return n;
}

struct sched *sched_new(const struct sched_limits *l)
{
	struct sched *s = calloc(1, sizeof(*s));

	if (s == NULL)
		return NULL;
	s->lim = *l;
	if (s->lim.max_window == 0)
		s->lim.max_window = 1;
	if (s->lim.initial_window == 0 ||
	    s->lim.initial_window > s->lim.max_window)
		s->lim.initial_window = s->lim.max_window;
	if (s->lim.dead_after == 0)
		s->lim.dead_after = 1;
	if (!idmap_init(&s->dests)) {
		free(s);
		return NULL;
	}
	return s;
}

void sched_free(struct sched *s)
{
	size_t cursor = 0;
	struct idmap_node *n;

	if (s == NULL)
		return;
	while ((n = idmap_any(&s->dests, &cursor)) != NULL)
		dest_free(s, (struct sched_dest *)n);
	idmap_free(&s->dests);
	free(s->items.v);
	free(s->timers.v);
	free(s);
}

/* ---- the active set's intake ------------------------------------------- */

void sched_refill_init(struct sched_refill *r, unsigned limit,
		       double interval)
{
	*r = (struct sched_refill){.limit = limit ? limit : 1,
				   .interval = interval,
				   .disk_due = INFINITY,
				   .last_pass = -INFINITY};
}

bool sched_refill_room(const struct sched_refill *r)
{
	return r->held < r->limit;
}

void sched_refill_held(struct sched_refill *r)
{
	r->held++;
}

void sched_refill_released(struct sched_refill *r)
{
	if (r->held > 0)
		r->held--;
}

bool sched_refill_filled(struct sched_refill *r)
{
	bool first = !r->full;

	r->full = true;
	return first;
}

bool sched_refill_refused(struct sched_refill *r)
{
	r->more = true;
	return sched_refill_filled(r);
}

void sched_refill_later(struct sched_refill *r, double due)
{
	if (due < r->disk_due)
		r->disk_due = due;
}

void sched_refill_flush(struct sched_refill *r)
{
	r->flush_wanted = true;
}

bool sched_refill_due(const struct sched_refill *r, double now)
{
	if (r->scanning || !sched_refill_room(r))
		return false;
	if (r->flush_wanted)
		return true;
	if (!r->more && r->disk_due > now)
		return false;
	return now >= r->last_pass + r->interval;
}

void sched_refill_start(struct sched_refill *r, double now)
{
	r->scanning = true;
	r->flush = r->flush_wanted;
	r->flush_wanted = false;
	r->more = false;
	r->disk_due = INFINITY;
	r->last_pass = now;
}

enum refill_verdict sched_refill_entry(struct sched_refill *r, double due,
				       bool held, double now)
{
	if (held)
		return REFILL_SKIP;
	if (!r->flush && due > now) {
		sched_refill_later(r, due);
		return REFILL_SKIP;
	}
	return sched_refill_room(r) ? REFILL_TAKE : REFILL_STOP;
}

void sched_refill_end(struct sched_refill *r)
{
	r->scanning = false;
	r->flush = false;
	if (!r->more)
		r->full = false;
}

double sched_refill_wake(const struct sched_refill *r, double now)
{
	double at;

	if (!sched_refill_room(r))
		return INFINITY; /* a message that goes makes room, and kicks */
	if (r->scanning || r->flush_wanted)
		return now;
	at = r->more ? now : r->disk_due;
	if (at == INFINITY)
		return INFINITY;
	return at > r->last_pass + r->interval ? at
					       : r->last_pass + r->interval;
}
