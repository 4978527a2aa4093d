/*
 * worker: one inbound worker process's life after the master forked it:
 * its own queue writer and sync thread, listener and sessions on the loop
 * it was given, until it is told to stop or to retire. It never calls
 * delivery code: each committed message is a notice to the queue manager.
 */
#ifndef SMTPGW_WORKER_H
#define SMTPGW_WORKER_H

#include <ev.h>
#include <stddef.h>

struct generation;
struct limits;

struct worker_args {
	unsigned slot;	   /* distinct among live processes: queue ids */
	const int *listen; /* shared listening sockets (not owned) */
	size_t n_listen;
	int notify_fd; /* the queue manager's mailbox */
	struct limits *limits; /* connections of every worker (shared) */
};

/*
 * Runs until SIGTERM (stop: sessions waiting for a sync get their reply,
 * the others 421; at most drain_timeout) or SIGUSR2 (retire, after a
 * reload: accept nothing more, let every session finish; after
 * drain_timeout as SIGTERM). A second SIGTERM ends it at once. Takes over
 * `gen`. Returns the exit status.
 */
int worker_run(struct ev_loop *loop, struct generation *gen,
	       const struct worker_args *a);

#endif
