/*
 * metrics: the process that serves the Prometheus endpoint ([metrics]
 * listen), forked by the master like the workers and run as [gateway]
 * user. It answers GET /metrics with the counters of SPOOL/stats and a
 * scan of the spool, and nothing else; it changes nothing.
 */
#ifndef SMTPGW_METRICS_H
#define SMTPGW_METRICS_H

#include <ev.h>
#include <stddef.h>

struct generation;
struct listen_addr;
struct stats;

struct metrics_args {
	int listen_fd;	     /* bound and listening, made by the master */
	struct stats *stats; /* the master's mapping, inherited */
};

/* The master, at start: the endpoint's socket (logged as
 * event=metrics_listen), or -1 and err. */
int metrics_bind(const struct listen_addr *a, char *err, size_t err_len);

/* Runs until SIGTERM. Takes over `gen`. */
int metrics_run(struct ev_loop *loop, struct generation *gen,
		const struct metrics_args *a);

#endif
