/*
 * delivery_driver: the queue runner on its own event loop, driven the way a
 * queue manager drives it, for spec/integration/delivery_uaf_spec.lua. Built
 * with the sanitizers (build/check/delivery_driver).
 *
 *   delivery_driver -c gateway.ini [--load] [--add QID ...] [--flush]
 *                   [--timeout S]
 *
 * Loads gateway.ini (generation_build), opens its spool, then calls, in
 * this order and before the loop runs, delivery_load (--load), delivery_add
 * for every --add, delivery_flush (--flush); it runs the loop until
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
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_ADDS = 16 };

struct options {
	const char *config;
	bool load, flush;
	const char *adds[MAX_ADDS];
	size_t n_adds;
	double timeout;
};

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
	if (queued(w->data) == 0)
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
	ev_timer poll, deadline;

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
				"[--add QID ...] [--flush] [--timeout S]\n");
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
