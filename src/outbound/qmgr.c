/*
 * qmgr: wiring of the queue manager process. Owns its queue (for DSNs and
 * per-recipient state), its dns resolver, its MTA-STS resolver,
 * delivery (the active set and its scheduler) and TLS reporting
 * (outbound/tlsrpt); reads the mailbox the master keeps open across its
 * restarts, so notices sent while it was down are waiting when it comes
 * back. Must not accept connections or touch the spool lock.
 */
#include "outbound/qmgr.h"

#include "core/config.h"
#include "core/ipc.h"
#include "core/log.h"
#include "net/conn.h"
#include "net/dns.h"
#include "outbound/delivery.h"
#include "outbound/tlsrpt.h"
#include "outbound/sts.h"
#include "policy/generation.h"
#include "spool/queue.h"

#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

enum { QMGR_TRIM_THRESHOLD = 8 << 20 };

struct qmgr {
	struct ev_loop *loop;
	struct queue *queue;
	struct delivery *delivery;
	struct tlsrpt *tlsrpt;
	int mailbox_fd;
	ev_io mailbox;
	ev_signal sig_term, sig_flush;
};

static void on_mailbox(struct ev_loop *loop, ev_io *w, int revents)
{
	struct qmgr *q = w->data;
	struct ipc_msg msg;
	enum ipc_recv r;

	(void)loop;
	(void)revents;
	/* A bounded batch per wake-up: the loop has deliveries to run too. */
	for (int i = 0; i < 256; i++) {
		r = ipc_recv(q->mailbox_fd, &msg);
		if (r == IPC_NONE)
			return;
		if (r == IPC_BAD || msg.type != IPC_QUEUED) {
			log_msg(LOG_WARN, "ipc", "malformed notice dropped");
			continue;
		}
		delivery_add(q->delivery, msg.text);
	}
}

static void on_term(struct ev_loop *loop, ev_signal *w, int revents)
{
	(void)w;
	(void)revents;
	log_msg(LOG_INFO, "stop", "queue manager stopping");
	ev_break(loop, EVBREAK_ALL);
}

/* The markers `queue requeue`, `release` and `flush` left: those
 * messages now, or every deferred one (flush/all; and a bare SIGUSR1,
 * `signalled`); the spool is scanned again either way (a released message
 * comes back). At start, a deferred message waits for its retry time
 * (its queue file's mtime) unless a marker says otherwise. */
static void apply_flush_marks(struct qmgr *q, bool signalled)
{
	size_t n;
	bool all;
	char **ids = queue_take_flush_marks(q->queue, &n, &all);

	delivery_load(q->delivery);
	if (all || (signalled && n == 0)) {
		log_msg(LOG_INFO, "flush", "%s: rescanning the spool, every "
			"deferred message now", signalled ? "SIGUSR1" : "start");
		delivery_flush(q->delivery);
	} else if (n > 0) {
		log_msg(LOG_INFO, "flush", "%s: rescanning the spool, %zu "
			"message(s) now", signalled ? "SIGUSR1" : "start", n);
	}
	for (size_t i = 0; i < n; i++) {
		if (!all)
			delivery_flush_message(q->delivery, ids[i]);
		free(ids[i]);
	}
	free(ids);
	tlsrpt_take_requests(q->tlsrpt); /* smtpgw tlsrpt --send */
}

static void on_flush(struct ev_loop *loop, ev_signal *w, int revents)
{
	(void)loop;
	(void)revents;
	apply_flush_marks(w->data, true);
}

static void log_ready(const struct generation *gen)
{
	struct logline l;

	log_begin(&l, LOG_INFO, "ready");
	log_kv(&l, "role", "qmgr");
	log_kv(&l, "pid", "%ld", (long)getpid());
	log_kv(&l, "uid", "%ld", (long)getuid());
	log_kv(&l, "generation", "%u", gen->serial);
	log_end(&l);
}

static void watch(struct qmgr *q)
{
	ev_io_init(&q->mailbox, on_mailbox, q->mailbox_fd, EV_READ);
	ev_signal_init(&q->sig_term, on_term, SIGTERM);
	ev_signal_init(&q->sig_flush, on_flush, SIGUSR1);
	q->mailbox.data = q->sig_term.data = q->sig_flush.data = q;
	ev_io_start(q->loop, &q->mailbox);
	ev_signal_start(q->loop, &q->sig_term);
	ev_signal_start(q->loop, &q->sig_flush);
}

static void unwatch(struct qmgr *q)
{
	ev_io_stop(q->loop, &q->mailbox);
	ev_signal_stop(q->loop, &q->sig_term);
	ev_signal_stop(q->loop, &q->sig_flush);
}

int qmgr_run(struct ev_loop *loop, struct generation *gen,
	     const struct qmgr_args *a)
{
	struct qmgr q = {.loop = loop, .mailbox_fd = a->mailbox_fd};
	struct generation *current = gen;
	struct dns *dns = NULL;
	struct sts *sts = NULL;
	char err[512];
	int rc = 1;

	/* Every message's file is read into a buffer and freed: without a
	 * higher trim threshold glibc gives the heap's top back to the
	 * kernel and asks for it again (brk) every few messages. */
	mallopt(M_TRIM_THRESHOLD, QMGR_TRIM_THRESHOLD);
	q.queue = queue_open(gen->cfg->spool, loop, err, sizeof(err));
	if (q.queue == NULL)
		goto out;
	queue_set_slot(q.queue, a->slot);
	dns = dns_new(loop, gen->cfg, err, sizeof(err));
	if (dns == NULL)
		goto out;
	sts = sts_new(loop, dns, &current, err, sizeof(err));
	if (sts == NULL)
		goto out;
	q.delivery = delivery_new(loop, q.queue, dns, &current);
	if (q.delivery != NULL)
		q.tlsrpt = tlsrpt_new(loop, q.queue, dns, &current,
				      q.delivery);
	if (q.delivery == NULL || q.tlsrpt == NULL) {
		snprintf(err, sizeof(err), "out of memory");
		goto out;
	}
	delivery_set_tlsrpt(q.delivery, q.tlsrpt);
	delivery_use_sts(q.delivery, sts);
	sts_use_tlsrpt(sts, q.tlsrpt);
	watch(&q);
	log_ready(gen);
	apply_flush_marks(&q, false);
	ev_run(loop, 0);
	unwatch(&q);
	rc = 0;
out:
	if (rc != 0)
		log_msg(LOG_ERR, "qmgr", "%s", err);
	delivery_stop(q.delivery);
	tlsrpt_stop(q.tlsrpt);
	queue_close(q.queue);
	delivery_free(q.delivery);
	sts_free(sts);
	tlsrpt_free(q.tlsrpt);
	dns_free(dns);
	generation_release(current);
	conn_pool_release();
	return rc;
}
