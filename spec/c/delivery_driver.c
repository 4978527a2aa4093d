/*
 * delivery_driver: the queue runner on its own event loop, driven the way a
 * queue manager drives it, for spec/integration/delivery_uaf_spec.lua. Built
 * with the sanitizers (build/check/delivery_driver).
 *
 *   delivery_driver -c gateway.ini [--load] [--add QID ...] [--flush]
 *                   [--starve S] [--timeout S]
 *
 * Loads gateway.ini (generation_build), opens its spool, then calls, in
 * this order and before the loop runs, delivery_load (--load), delivery_add
 * for every --add, delivery_flush (--flush). With --starve the process has
 * no descriptor left during those calls (the rest are taken by /dev/null
 * opens, under a soft limit of 256) and gets them back S seconds into the
 * loop, as a queue manager out of descriptors would. It runs the loop until
 * SPOOL/queue is empty or the timeout (default 20 s) passes, stops
 * everything as the gateway does, and prints "queued=N" (the files left
 * in SPOOL/queue). Exit 0 once that is printed, 1 when it cannot start,
 * 2 on bad arguments.
 */
#include "core/config.h"
#include "net/conn.h"
#include "net/dns.h"
#include "outbound/delivery.h"
#include "policy/generation.h"
#include "spool/queue.h"

#include <ev.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

enum { MAX_ADDS = 16, STARVE_LIMIT = 256 };

struct options {
	const char *config;
	bool load, flush;
	const char *adds[MAX_ADDS];
	size_t n_adds;
	double starve; /* seconds without descriptors; 0: none */
	double timeout;
};

/* Every free descriptor, held until released. */
static int hogs[STARVE_LIMIT];
static size_t n_hogs;

static void starve(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur > STARVE_LIMIT) {
		rl.rlim_cur = STARVE_LIMIT;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	while (n_hogs < STARVE_LIMIT &&
	       (hogs[n_hogs] = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0)
		n_hogs++;
}

static void on_feed(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	while (n_hogs > 0)
		close(hogs[--n_hogs]);
}

static size_t queued(struct queue *q)
{
	size_t n;
	char **ids = queue_list(q, &n);

	for (size_t i = 0; i < n; i++)
		free(ids[i]);
	free(ids);
	return n;
}

static void on_poll(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)revents;
	if (n_hogs == 0 && queued(w->data) == 0) /* starved, it cannot list */
		ev_break(loop, EVBREAK_ALL);
}

static void on_deadline(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)w;
	(void)revents;
	ev_break(loop, EVBREAK_ALL);
}

static bool parse(int argc, char **argv, struct options *o)
{
	*o = (struct options){.timeout = 20};
	for (int i = 1; i < argc; i++) {
		bool more = i + 1 < argc;

		if (strcmp(argv[i], "-c") == 0 && more)
			o->config = argv[++i];
		else if (strcmp(argv[i], "--load") == 0)
			o->load = true;
		else if (strcmp(argv[i], "--flush") == 0)
			o->flush = true;
		else if (strcmp(argv[i], "--add") == 0 && more &&
			 o->n_adds < MAX_ADDS)
			o->adds[o->n_adds++] = argv[++i];
		else if (strcmp(argv[i], "--starve") == 0 && more)
			o->starve = atof(argv[++i]);
		else if (strcmp(argv[i], "--timeout") == 0 && more)
			o->timeout = atof(argv[++i]);
		else
			return false;
	}
	return o->config != NULL;
}

static void drive(struct ev_loop *loop, struct queue *q, struct delivery *d,
		  const struct options *o)
{
	ev_timer poll, deadline, feed;

	ev_timer_init(&feed, on_feed, o->starve, 0);
	if (o->starve > 0) {
		starve();
		ev_timer_start(loop, &feed);
	}
	if (o->load)
		delivery_load(d);
	for (size_t i = 0; i < o->n_adds; i++)
		delivery_add(d, o->adds[i]);
	if (o->flush)
		delivery_flush(d);
	ev_timer_init(&poll, on_poll, 0.05, 0.05);
	poll.data = q;
	ev_timer_init(&deadline, on_deadline, o->timeout, 0);
	ev_timer_start(loop, &poll);
	ev_timer_start(loop, &deadline);
	ev_run(loop, 0);
	ev_timer_stop(loop, &poll);
	ev_timer_stop(loop, &deadline);
	ev_timer_stop(loop, &feed);
	on_feed(loop, &feed, 0);
}

int main(int argc, char **argv)
{
	struct ev_loop *loop = ev_default_loop(EVFLAG_AUTO);
	struct generation *gen;
	struct queue *q = NULL;
	struct dns *dns = NULL;
	struct delivery *d = NULL;
	struct options o;
	char err[512];

	if (!parse(argc, argv, &o)) {
		fprintf(stderr, "usage: delivery_driver -c FILE [--load] "
				"[--add QID ...] [--flush] [--starve S] "
				"[--timeout S]\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	gen = generation_build(o.config, false, err, sizeof(err));
	if (gen != NULL && (q = queue_open(gen->cfg->spool, loop, err,
					   sizeof(err))) != NULL &&
	    (dns = dns_new(loop, gen->cfg, err, sizeof(err))) != NULL &&
	    (d = delivery_new(loop, q, dns, &gen)) != NULL)
		drive(loop, q, d, &o);
	else
		fprintf(stderr, "delivery_driver: %s\n", err);
	if (d != NULL)
		printf("queued=%zu\n", queued(q));
	delivery_stop(d);
	queue_close(q);
	delivery_free(d);
	dns_free(dns);
	if (gen != NULL)
		generation_release(gen);
	conn_pool_release();
	ev_loop_destroy(loop);
	return d != NULL ? 0 : 1;
}
