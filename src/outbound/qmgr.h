/*
 * qmgr: the queue manager process's life after the master forked it. It
 * owns delivery (and through it dns and smtp_client): it loads the spool
 * at start, takes the workers' "queued" notices from its mailbox, and
 * rescans on `queue flush`. It never parses inbound SMTP.
 */
#ifndef SMTPGW_QMGR_H
#define SMTPGW_QMGR_H

#include <ev.h>

struct generation;

struct qmgr_args {
	unsigned slot;	/* queue ids of the DSNs it makes */
	int mailbox_fd; /* the reading end of the workers' notices */
};

/* Runs until SIGTERM (deliveries in flight are abandoned: their messages
 * stay queued, nothing recorded is repeated). SIGUSR1 retries every
 * deferred message now and rescans the spool. Takes over `gen`. */
int qmgr_run(struct ev_loop *loop, struct generation *gen,
	     const struct qmgr_args *a);

#endif
