/*
 * worker: wiring and teardown of one inbound worker process. Owns its
 * struct server, queue and listener; the sessions are smtp_server's. The
 * stop states are explicit: RUNNING → RETIRING (reload) or DRAINING
 * (SIGTERM) → gone. Must not touch delivery, the spool lock or recovery.
 */
#include "inbound/worker.h"

#include "core/config.h"
#include "core/ipc.h"
#include "core/log.h"
#include "inbound/limits.h"
#include "inbound/listener.h"
#include "inbound/smtp_server.h"
#include "policy/generation.h"
#include "spool/queue.h"
#include "net/conn.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum worker_state { W_RUNNING, W_RETIRING, W_DRAINING };

/* Notices not sent yet: those of this loop turn's commits, which go
 * together just before the loop waits again (one system call however many
 * messages the sync thread reported at once), and those the queue
 * manager's mailbox had no room for (it is restarting, or busy), sent
 * again every second. Past BACKLOG_MAX a notice is dropped and the
 * message waits for the manager's next spool scan (at its start and on
 * `queue flush`). */
enum { BACKLOG_MAX = 4096 };

struct worker {
	struct server srv; /* first: the server's callbacks find the worker */
	int notify_fd;
	char (*backlog)[QUEUE_ID_LEN + 1];
	size_t n_backlog;
	ev_prepare notify; /* this turn's notices, before the loop waits */
	ev_timer resend;
	enum worker_state state;
	ev_signal sig_term, sig_retire;
	ev_timer deadline; /* drain_timeout, once stopping */
	ev_timer idle_check; /* retiring: gone once no session is left */
};

/* Sends what it can of the backlog, oldest first. */
static void send_backlog(struct worker *w)
{
	size_t sent = 0;

	log_flush_ordered(); /* our "queued" lines before the qmgr's */
	while (sent < w->n_backlog) {
		const char *ids[IPC_BATCH_MAX];
		unsigned n = 0, k;

		while (n < IPC_BATCH_MAX && sent + n < w->n_backlog) {
			ids[n] = w->backlog[sent + n];
			n++;
		}
		k = ipc_send_many(w->notify_fd, IPC_QUEUED, ids, n);
		sent += k;
		if (k < n)
			break;
	}
	memmove(w->backlog, w->backlog + sent,
		(w->n_backlog - sent) * sizeof(*w->backlog));
	w->n_backlog -= sent;
}

static void on_queued(struct server *srv, const char *qid)
{
	struct worker *w = (struct worker *)srv;

	if (w->n_backlog == BACKLOG_MAX) {
		log_qid_msg(LOG_WARN, "notify_dropped", qid,
			    "the queue manager finds it at its next scan");
		return;
	}
	memcpy(w->backlog[w->n_backlog++], qid, QUEUE_ID_LEN + 1);
	if (!ev_is_active(&w->resend)) /* else the mailbox is full: wait */
		ev_prepare_start(srv->loop, &w->notify);
}

static void on_notify(struct ev_loop *loop, ev_prepare *p, int revents)
{
	struct worker *w = p->data;

	(void)revents;
	ev_prepare_stop(loop, p);
	send_backlog(w);
	if (w->n_backlog > 0)
		ev_timer_start(loop, &w->resend);
}

static void on_resend(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct worker *w = t->data;

	(void)revents;
	send_backlog(w);
	if (w->n_backlog == 0)
		ev_timer_stop(loop, t);
}

static void begin_drain(struct worker *w)
{
	log_msg(LOG_INFO, "stop", "draining %u session(s)",
		w->srv.n_sessions);
	w->state = W_DRAINING;
	listener_stop(w->srv.listener);
	smtp_server_drain(&w->srv);
}

static void arm_deadline(struct worker *w)
{
	if (ev_is_active(&w->deadline))
		return;
	ev_timer_set(&w->deadline, w->srv.gen->cfg->drain_timeout, 0.);
	ev_timer_start(w->srv.loop, &w->deadline);
}

static void on_term(struct ev_loop *loop, ev_signal *sig, int revents)
{
	struct worker *w = sig->data;

	(void)revents;
	switch (w->state) {
	case W_DRAINING:
		log_msg(LOG_WARN, "stop", "second signal: stopping now");
		ev_break(loop, EVBREAK_ALL);
		return;
	case W_RUNNING:
	case W_RETIRING:
		arm_deadline(w);
		begin_drain(w);
		return;
	}
}

static void on_retire(struct ev_loop *loop, ev_signal *sig, int revents)
{
	struct worker *w = sig->data;

	(void)revents;
	if (w->state != W_RUNNING)
		return;
	w->state = W_RETIRING;
	log_msg(LOG_INFO, "retire", "reloaded: finishing %u session(s)",
		w->srv.n_sessions);
	listener_stop(w->srv.listener);
	arm_deadline(w);
	ev_timer_start(loop, &w->idle_check);
}

static void on_idle_check(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct worker *w = t->data;

	(void)revents;
	if (w->srv.n_sessions == 0 && queue_in_flight(w->srv.queue) == 0)
		ev_break(loop, EVBREAK_ALL);
}

/* drain_timeout passed: a retiring worker now drains; a draining one
 * stops with whatever is left. */
static void on_deadline(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct worker *w = t->data;

	(void)revents;
	if (w->state == W_RETIRING) {
		ev_timer_set(t, w->srv.gen->cfg->drain_timeout, 0.);
		ev_timer_start(loop, t);
		begin_drain(w);
		return;
	}
	log_msg(LOG_WARN, "stop", "drain_timeout: %u session(s) cut",
		w->srv.n_sessions);
	ev_break(loop, EVBREAK_ALL);
}

static void log_ready(const struct generation *gen)
{
	struct logline l;

	log_begin(&l, LOG_INFO, "ready");
	log_kv(&l, "role", "worker");
	log_kv(&l, "pid", "%ld", (long)getpid());
	log_kv(&l, "uid", "%ld", (long)getuid());
	log_kv(&l, "generation", "%u", gen->serial);
	log_end(&l);
}

static void watch(struct worker *w)
{
	struct ev_loop *loop = w->srv.loop;

	ev_signal_init(&w->sig_term, on_term, SIGTERM);
	ev_signal_init(&w->sig_retire, on_retire, SIGUSR2);
	ev_timer_init(&w->deadline, on_deadline, 0., 0.);
	ev_timer_init(&w->idle_check, on_idle_check, 0.2, 0.2);
	ev_timer_init(&w->resend, on_resend, 1., 1.);
	ev_prepare_init(&w->notify, on_notify);
	w->sig_term.data = w->sig_retire.data = w;
	w->deadline.data = w->idle_check.data = w->resend.data = w;
	w->notify.data = w;
	ev_signal_start(loop, &w->sig_term);
	ev_signal_start(loop, &w->sig_retire);
}

static void unwatch(struct worker *w)
{
	struct ev_loop *loop = w->srv.loop;

	ev_signal_stop(loop, &w->sig_term);
	ev_signal_stop(loop, &w->sig_retire);
	ev_timer_stop(loop, &w->deadline);
	ev_timer_stop(loop, &w->idle_check);
	ev_timer_stop(loop, &w->resend);
	ev_prepare_stop(loop, &w->notify);
}

int worker_run(struct ev_loop *loop, struct generation *gen,
	       const struct worker_args *a)
{
	struct worker w = {.srv = {.loop = loop, .gen = gen,
				   .limits = a->limits,
				   .queued = on_queued},
			   .notify_fd = a->notify_fd};
	char err[512];
	int rc = 1;

	w.srv.queue = queue_open(gen->cfg->spool, loop, err, sizeof(err));
	if (w.srv.queue == NULL) {
		log_msg(LOG_ERR, "worker", "%s", err);
		goto out;
	}
	queue_set_slot(w.srv.queue, a->slot);
	w.srv.slot = a->slot;
	limits_set_worker(a->limits, a->slot);
	w.backlog = calloc(BACKLOG_MAX, sizeof(*w.backlog));
	w.srv.listener = listener_open(&w.srv, a->listen, a->n_listen);
	if (w.srv.listener == NULL || w.backlog == NULL) {
		log_msg(LOG_ERR, "worker", "out of memory");
		goto out;
	}
	watch(&w);
	log_ready(gen);
	ev_run(loop, 0);
	unwatch(&w);
	rc = 0;
out:
	/* Sessions first: they hold queue commits and listener counts. */
	smtp_server_destroy_all(&w.srv);
	listener_close(w.srv.listener);
	queue_close(w.srv.queue);
	if (w.n_backlog > 0) /* the last turn's, if the loop ended in it */
		send_backlog(&w);
	if (w.n_backlog > 0)
		log_msg(LOG_WARN, "notify_dropped",
			"%zu notice(s): the queue manager finds them at its "
			"next scan",
			w.n_backlog);
	free(w.backlog);
	generation_release(w.srv.gen);
	conn_pool_release();
	return rc;
}
