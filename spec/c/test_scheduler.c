/*
 * Unit tests for src/outbound/scheduler.c and src/outbound/idmap.c (TAP):
 * ordering by due time, concurrency windows, dead destinations, the
 * active set's refill policy, and the hash map under many keys. The
 * scheduler is pure: every test drives it with its own `now`.
 */
#include "tap.h"
#include "outbound/idmap.h"
#include "outbound/scheduler.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct job {
	struct sched_item item; /* first */
	int id;
};

static const struct sched_limits LIMITS = {
	.max_active = 100,
	.max_window = 4,
	.initial_window = 2,
	.dead_after = 3,
	.dead_time = 60,
	.forget_after = 600,
};

static struct job *next_job(struct sched *s, double now)
{
	return (struct job *)sched_next(s, now);
}

static int next_id(struct sched *s, double now)
{
	struct job *j = next_job(s, now);

	return j ? j->id : -1;
}

/* ---- ordering ---------------------------------------------------------- */

static void test_due_order(void)
{
	struct sched_limits l = LIMITS;
	struct sched *s;
	struct sched_dest *d[3];
	struct job j[6] = {{.id = 0}, {.id = 1}, {.id = 2},
			   {.id = 3}, {.id = 4}, {.id = 5}};
	double due[6] = {50, 10, 30, 10, 20, 40};
	char got[64] = "";

	l.max_window = l.initial_window = 10;
	s = sched_new(&l);
	d[0] = sched_dest(s, "a.example");
	d[1] = sched_dest(s, "b.example");
	d[2] = sched_dest(s, "c.example");
	for (int i = 0; i < 6; i++)
		sched_add(s, &j[i].item, d[i % 3], due[i]);
	check(sched_next(s, 5) == NULL, "nothing is due before the first");
	check(sched_wake(s) == 10, "wake is the earliest due time (%g)",
	      sched_wake(s));
	for (double now = 10; now <= 50; now += 10) {
		int id;

		while ((id = next_id(s, now)) >= 0) {
			char one[32];

			snprintf(one, sizeof(one), "%d@%g ", id, now);
			strcat(got, one);
		}
	}
	check(strcmp(got, "1@10 3@10 4@20 2@30 5@40 0@50 ") == 0,
	      "handed out by due time, ties first come first: %s", got);
	check(sched_wake(s) == INFINITY, "nothing left waiting");
	for (int i = 0; i < 6; i++)
		sched_remove(s, &j[i].item, 60);
	sched_free(s);
}

static void test_requeue(void)
{
	struct sched *s = sched_new(&LIMITS);
	struct sched_dest *d = sched_dest(s, "a.example");
	struct job a = {.id = 1}, b = {.id = 2};

	sched_add(s, &a.item, d, 100);
	sched_add(s, &b.item, d, 200);
	check(sched_requeue(s, &b.item, 0), "a waiting item can be made due");
	check(next_id(s, 1) == 2, "the flushed item goes first");
	check(sched_done(s, &b.item, SCHED_SUCCESS, 1) == SCHED_SAME,
	      "a success of a live destination changes nothing to log");
	check(b.item.where == ITEM_PARKED, "done: parked");
	check(sched_requeue(s, &b.item, 150), "a parked item goes back");
	check(next_id(s, 90) == -1, "neither is due at 90");
	check(next_id(s, 160) == 1, "100 first");
	check(next_id(s, 160) == 2, "then 150");
	sched_remove(s, &a.item, 160);
	sched_remove(s, &b.item, 160);
	check(a.item.where == ITEM_IDLE && sched_active(s) == 0,
	      "removing handed-out items gives their slots back");
	sched_free(s);
}

/* Many random due times: the heap gives them back sorted, removals in
 * the middle included. */
static void test_heap_many(void)
{
	enum { N = 20000 };
	struct sched_limits l = LIMITS;
	struct sched *s;
	struct sched_dest *d;
	struct job *j = calloc(N, sizeof(*j));
	double last = -1;
	bool sorted = true;
	int got = 0;

	l.max_active = l.max_window = l.initial_window = N;
	s = sched_new(&l);
	d = sched_dest(s, "many.example");
	srand(7);
	for (int i = 0; i < N; i++) {
		j[i].id = i;
		sched_add(s, &j[i].item, d, rand() % 100000);
	}
	for (int i = 0; i < N; i += 3)
		sched_remove(s, &j[i].item, 0);
	for (struct job *x; (x = next_job(s, 1e9)) != NULL; got++) {
		sorted &= x->item.when.at >= last && x->id % 3 != 0;
		last = x->item.when.at;
	}
	check(sorted, "%d items out in due order, the removed ones absent",
	      got);
	check(got == N - (N + 2) / 3, "every other item came out (%d)", got);
	for (int i = 0; i < N; i++)
		sched_remove(s, &j[i].item, 0);
	sched_free(s);
	free(j);
}

/* ---- windows ----------------------------------------------------------- */

static int drain(struct sched *s, double now, struct job **out, int max)
{
	int n = 0;
	struct job *j;

	while (n < max && (j = next_job(s, now)) != NULL)
		out[n++] = j;
	return n;
}

static void test_windows(void)
{
	struct sched *s = sched_new(&LIMITS);
	struct sched_dest *d = sched_dest(s, "w.example");
	struct job j[10] = {0}, *out[10];
	int n;

	for (int i = 0; i < 10; i++) {
		j[i].id = i;
		sched_add(s, &j[i].item, d, 0);
	}
	n = drain(s, 1, out, 10);
	check(n == 2, "a new destination starts at 2 at once (%d)", n);
	sched_done(s, &out[0]->item, SCHED_SUCCESS, 1);
	check(sched_dest_window(d) == 3, "a success widens it to 3");
	n = drain(s, 1, out, 10);
	check(n == 2 && sched_dest_active(d) == 3, "3 in flight (%d new)", n);
	/* three successes: up to the maximum, 4, and no further */
	for (int i = 0; i < 2; i++)
		sched_done(s, &out[i]->item, SCHED_SUCCESS, 1);
	check(sched_dest_window(d) == 4, "grows to max_window (%u)",
	      sched_dest_window(d));
	n = drain(s, 1, out, 10);
	check(sched_dest_active(d) == 4, "4 in flight, no more (%d new)", n);
	sched_done(s, &out[0]->item, SCHED_FAILURE, 1);
	check(sched_dest_window(d) == 2, "a failure halves the window (%u)",
	      sched_dest_window(d));
	check(next_job(s, 1) == NULL, "3 in flight over a window of 2: wait");
	for (int i = 0; i < 10; i++)
		sched_remove(s, &j[i].item, 1);
	sched_free(s);
}

static void test_global_limit_round_robin(void)
{
	struct sched_limits l = LIMITS;
	struct sched *s;
	struct sched_dest *a, *b;
	struct job j[8] = {0};
	char got[32] = "";

	l.max_active = 3;
	l.initial_window = l.max_window = 4;
	s = sched_new(&l);
	a = sched_dest(s, "a.example");
	b = sched_dest(s, "B.EXAMPLE");
	check(sched_dest(s, "b.example") == b, "names are case-insensitive");
	for (int i = 0; i < 8; i++) {
		j[i].id = i;
		sched_add(s, &j[i].item, i < 4 ? a : b, 0);
	}
	for (struct job *x; (x = next_job(s, 1)) != NULL;) {
		char one[16];

		snprintf(one, sizeof(one), "%d ", x->id);
		strcat(got, one);
	}
	check(strcmp(got, "0 4 1 ") == 0,
	      "round robin over the destinations, max_active at once: %s",
	      got);
	check(sched_active(s) == 3, "3 slots taken");
	for (int i = 0; i < 8; i++)
		sched_remove(s, &j[i].item, 1);
	check(sched_active(s) == 0, "all given back");
	sched_free(s);
}

/* ---- dead destinations ------------------------------------------------- */

static void fail(struct sched *s, struct job *j, double now,
		 enum sched_change *change)
{
	*change = sched_done(s, &j->item, SCHED_FAILURE, now);
}

static void test_dead(void)
{
	struct sched *s = sched_new(&LIMITS);
	struct sched_dest *d = sched_dest(s, "dead.example");
	struct job j[6] = {0}, *out[6];
	enum sched_change c;
	int n, connections = 0;

	for (int i = 0; i < 6; i++) {
		j[i].id = i;
		sched_add(s, &j[i].item, d, 0);
	}
	/* a blackhole: every transaction fails */
	n = drain(s, 10, out, 6);
	connections += n;
	fail(s, out[0], 10, &c);
	check(c == SCHED_SAME && next_job(s, 10) == NULL,
	      "one failure: window 1, one still in flight, none started");
	fail(s, out[1], 11, &c);
	check(c == SCHED_SAME, "two failures: not dead yet");
	n = drain(s, 11, out, 6);
	connections += n;
	check(n == 1, "one more try");
	fail(s, out[0], 12, &c);
	check(c == SCHED_NOW_DEAD, "the third failure in a row: dead");
	check(sched_dest_state(d) == DEST_DEAD && sched_dest_until(d) == 72,
	      "dead until now + dead_time (%g)", sched_dest_until(d));
	check(connections == 3, "3 transactions were tried (%d)", connections);
	/* its due items come out dead, none takes a slot */
	n = drain(s, 12, out, 6);
	check(n == 3 && out[0]->item.dead && out[2]->item.dead &&
		      sched_active(s) == 0,
	      "the 3 items left are handed out dead, no slot taken (%d)", n);
	for (int i = 0; i < n; i++) {
		sched_done(s, &out[i]->item, SCHED_FAILURE, 12);
		sched_requeue(s, &out[i]->item, 30 + i);
	}
	n = drain(s, 40, out, 6);
	check(n == 3 && out[0]->item.dead,
	      "due again before the spell ends: dead again, no try");
	for (int i = 0; i < n; i++) {
		sched_done(s, &out[i]->item, SCHED_NEUTRAL, 40);
		sched_requeue(s, &out[i]->item, 72);
	}
	check(sched_wake(s) == 72, "wake at the end of the spell (%g)",
	      sched_wake(s));
	/* the spell is over: suspect, one probe at a time */
	n = drain(s, 72, out, 6);
	check(n == 1 && !out[0]->item.dead &&
		      sched_dest_state(d) == DEST_SUSPECT,
	      "then one probe at a time (%d)", n);
	fail(s, out[0], 73, &c);
	check(c == SCHED_SAME && sched_dest_state(d) == DEST_DEAD &&
		      sched_dest_until(d) == 133,
	      "a failed probe: dead again at once, not logged again");
	sched_requeue(s, &out[0]->item, 133);
	n = drain(s, 133, out, 6);
	check(n == 1 && !out[0]->item.dead, "the next probe after the spell");
	c = sched_done(s, &out[0]->item, SCHED_SUCCESS, 134);
	check(c == SCHED_NOW_ALIVE && sched_dest_state(d) == DEST_ALIVE &&
		      sched_dest_failures(d) == 0,
	      "a probe that succeeds: alive, logged");
	n = drain(s, 134, out, 6);
	check(n == 2, "and the window opens again (%d)", n);
	for (int i = 0; i < 6; i++)
		sched_remove(s, &j[i].item, 134);
	sched_free(s);
}

/* A dead destination nothing refers to is remembered: the messages that
 * come later for it are not tried before its spell ends. */
static void test_dead_remembered(void)
{
	struct sched *s = sched_new(&LIMITS);
	struct sched_dest *d = sched_dest(s, "gone.example");
	struct job j = {.id = 1}, k = {.id = 2};
	enum sched_change c = SCHED_SAME;

	for (int i = 0; i < 3; i++) {
		/* one message at a time: each is let go after its failure */
		d = sched_dest(s, "gone.example");
		sched_add(s, &j.item, d, i);
		next_job(s, i);
		fail(s, &j, i, &c);
		sched_remove(s, &j.item, i);
	}
	check(c == SCHED_NOW_DEAD, "3 failures of single messages: dead");
	d = sched_dest(s, "GONE.example");
	check(sched_dest_state(d) == DEST_DEAD, "still known, still dead");
	sched_add(s, &k.item, d, 10);
	check(next_job(s, 10) == &k && k.item.dead,
	      "a new message for it is handed out dead");
	sched_done(s, &k.item, SCHED_NEUTRAL, 10);
	sched_remove(s, &k.item, 10);
	/* one that failed less than dead_after times is remembered too */
	d = sched_dest(s, "flaky.example");
	sched_add(s, &k.item, d, 0);
	next_job(s, 10);
	fail(s, &k, 10, &c);
	sched_remove(s, &k.item, 10);
	check(sched_dest_failures(sched_dest(s, "flaky.example")) == 1,
	      "a failure is remembered after its message went");
	/* forgotten after dead_time + forget_after, and after forget_after */
	check(next_job(s, 10000) == NULL, "nothing due");
	d = sched_dest(s, "gone.example");
	check(sched_dest_state(d) == DEST_ALIVE && sched_dest_failures(d) == 0,
	      "forgotten in the end: a fresh destination");
	d = sched_dest(s, "flaky.example");
	check(sched_dest_failures(d) == 0, "the flaky one too");
	sched_add(s, &k.item, d, 0);
	sched_remove(s, &k.item, 10000);
	sched_free(s);
}

static unsigned revived;

static void on_revived(void *arg, const struct sched_dest *d)
{
	(void)arg;
	(void)d;
	revived++;
}

static void test_revive(void)
{
	struct sched *s = sched_new(&LIMITS);
	struct sched_dest *d = sched_dest(s, "x.example");
	struct job j = {.id = 1};
	enum sched_change c;

	sched_add(s, &j.item, d, 0);
	for (int i = 0; i < 3; i++) {
		next_job(s, 1);
		fail(s, &j, 1, &c);
		sched_requeue(s, &j.item, 1);
	}
	check(sched_dest_state(d) == DEST_DEAD, "dead");
	check(sched_revive_all(s, on_revived, NULL) == 1 && revived == 1,
	      "a flush revives it");
	check(next_job(s, 1) == &j && !j.item.dead,
	      "and its item is tried again at once");
	sched_remove(s, &j.item, 1);
	sched_free(s);
}

/* ---- the active set's refill ------------------------------------------- */

static void test_refill(void)
{
	struct sched_refill r;

	sched_refill_init(&r, 2, 5);
	check(!sched_refill_due(&r, 0), "nothing known on disk: no pass");
	r.more = true; /* start-up: look */
	check(sched_refill_due(&r, 0), "at start-up: a pass");
	sched_refill_start(&r, 0);
	check(sched_refill_entry(&r, -1, false, 0) == REFILL_TAKE,
	      "a due message is taken");
	sched_refill_held(&r);
	check(sched_refill_entry(&r, -1, true, 0) == REFILL_SKIP,
	      "one held already is skipped");
	check(sched_refill_entry(&r, 30, false, 0) == REFILL_SKIP &&
		      r.disk_due == 30,
	      "one due later is skipped and remembered");
	check(sched_refill_entry(&r, 0, false, 0) == REFILL_TAKE,
	      "another due one is taken");
	sched_refill_held(&r);
	check(sched_refill_entry(&r, 0, false, 0) == REFILL_STOP,
	      "the set is full: the pass stops there");
	check(sched_refill_wake(&r, 1) == INFINITY,
	      "full: no wake (a release makes room and kicks)");
	check(sched_refill_filled(&r) && !r.more,
	      "a pass that stops: full, logged, no new pass wanted for it");
	check(!sched_refill_refused(&r) && r.more,
	      "a notice refused: a pass wanted, not logged again");
	sched_refill_released(&r);
	check(sched_refill_wake(&r, 1) == 1,
	      "room again: the pass goes on at once");
	check(sched_refill_entry(&r, 0, false, 1) == REFILL_TAKE,
	      "with the entry it stopped at");
	sched_refill_held(&r);
	sched_refill_end(&r);
	check(r.full, "a refused notice keeps it marked full");
	sched_refill_released(&r);
	check(!sched_refill_due(&r, 2),
	      "the refused notice waits for the interval");
	check(sched_refill_due(&r, 5), "then a pass");
	sched_refill_start(&r, 5);
	sched_refill_end(&r);
	check(!r.full && !sched_refill_due(&r, 6),
	      "a pass that found nothing left: no longer full, idle");
	sched_refill_later(&r, 40);
	check(sched_refill_wake(&r, 6) == 40, "next: the due time (%g)",
	      sched_refill_wake(&r, 6));
	sched_refill_flush(&r);
	check(sched_refill_due(&r, 6), "a flush: a pass at once");
	sched_refill_start(&r, 6);
	check(sched_refill_entry(&r, 1000, false, 6) == REFILL_TAKE,
	      "which takes what is not due yet");
	sched_refill_end(&r);
	check(!r.flush, "the flush is over with the pass");
}

/* ---- idmap ------------------------------------------------------------- */

struct node {
	struct idmap_node n;
	int v;
};

static void test_idmap(void)
{
	enum { N = 50000 };
	struct idmap m;
	struct node *v = calloc(N, sizeof(*v));
	bool found = true, gone = true;
	size_t cursor = 0, drained = 0;
	struct idmap_node *n;

	check(idmap_init(&m), "an empty map");
	for (int i = 0; i < N; i++) {
		v[i].v = i;
		idmap_insert(&m, &v[i].n, (uint64_t)i * 64 + 0x0673f9a1b2c3d4e5ULL);
	}
	check(m.count == N && m.mask + 1 >= N, "grew to %zu buckets",
	      m.mask + 1);
	for (int i = 0; i < N; i++) {
		n = idmap_first(&m, (uint64_t)i * 64 + 0x0673f9a1b2c3d4e5ULL);
		found &= n == &v[i].n && idmap_next(n) == NULL;
	}
	check(found, "each key finds its node, and only it");
	for (int i = 0; i < N; i += 2)
		idmap_remove(&m, &v[i].n);
	for (int i = 0; i < N; i++) {
		n = idmap_first(&m, (uint64_t)i * 64 + 0x0673f9a1b2c3d4e5ULL);
		gone &= (i % 2 == 0) == (n == NULL);
	}
	check(gone, "removed keys are gone, the others stay");
	idmap_insert(&m, &v[0].n, 99);
	idmap_insert(&m, &v[2].n, 99);
	n = idmap_first(&m, 99);
	check(n != NULL && idmap_next(n) != NULL &&
		      idmap_next(idmap_next(n)) == NULL,
	      "two nodes under one key are both visited");
	while ((n = idmap_any(&m, &cursor)) != NULL) {
		idmap_remove(&m, n);
		drained++;
	}
	check(drained == N / 2 + 2 && m.count == 0, "drained (%zu)", drained);
	check(idmap_hash_name("MX.Example") == idmap_hash_name("mx.example"),
	      "names hash without case");
	idmap_free(&m);
	free(v);
}

int main(void)
{
	test_due_order();
	test_requeue();
	test_heap_many();
	test_windows();
	test_global_limit_round_robin();
	test_dead();
	test_dead_remembered();
	test_revive();
	test_refill();
	test_idmap();
	return tap_done();
}
