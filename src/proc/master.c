/*
 * master: the supervisor. Owns the spool lock, the listening sockets, the
 * queue manager's mailbox (kept open across its restarts), the running
 * generation and the table of children. Children are forked from the
 * master's generation (configuration, Lua state and TLS keys already in
 * memory), then drop to [gateway] user: a key file is read only here, as
 * root. Reload builds a new generation, and on success starts new
 * children with it and retires the old ones, which finish their sessions.
 * Must not speak SMTP, deliver, or run a policy hook.
 */
#include "proc/master.h"

#include "core/config.h"
#include "core/ipc.h"
#include "core/log.h"
#include "core/stats.h"
#include "inbound/limits.h"
#include "inbound/listener.h"
#include "inbound/worker.h"
#include "net/tls_resume.h"
#include "outbound/qmgr.h"
#include "policy/generation.h"
#include "policy/policy.h"
#include "proc/metrics.h"
#include "spool/queue.h"

#include <errno.h>
#include <ev.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum role { ROLE_WORKER, ROLE_QMGR, ROLE_METRICS };
enum child_state { CHILD_FREE, CHILD_RUNNING, CHILD_RETIRING };

/* Slot 0 is the queue manager's; workers (live and retiring) share the
 * rest of the QUEUE_SLOTS (the slot is in every queue id a child makes);
 * the metrics child, which makes none, has the one after them. Each slot
 * has its block of counters in SPOOL/stats, and the master the last. */
enum {
	QMGR_SLOT = 0,
	METRICS_SLOT = QUEUE_SLOTS,
	MAX_CHILDREN = QUEUE_SLOTS + 1,
	MASTER_STATS_SLOT = MAX_CHILDREN,
};

struct child {
	enum child_state state;
	enum role role;
	pid_t pid;
	double started;
	ev_child watch;
	struct master *m;
};

struct master {
	struct ev_loop *loop;
	pid_t pid;
	struct generation *gen;
	int lock_fd;
	int *listen_fds;
	size_t n_listen;
	int mailbox[2]; /* [0] the queue manager reads, [1] workers write */
	bool drop;	/* started as root: children become uid/gid */
	uid_t uid;
	gid_t gid;
	unsigned n_workers;
	uint64_t *beats; /* shared: each child's last loop turn, ms */
	struct limits *limits; /* shared: every worker's connections */
	struct stats *stats;   /* shared: SPOOL/stats, a block per slot */
	int metrics_fd;	       /* [metrics] listen, or -1 */
	struct tls_ticket_ring *tickets; /* shared: TLS session ticket keys */
	struct child children[MAX_CHILDREN];
	bool stopping;
	unsigned stop_signals;
	double backoff;
	unsigned reload_seq;
	ev_signal sig_term, sig_int, sig_hup, sig_usr1;
	ev_timer respawn, watchdog, kill_timer, ticket_timer;
};

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static const char *role_name(enum role r)
{
	switch (r) {
	case ROLE_WORKER:
		return "worker";
	case ROLE_QMGR:
		return "qmgr";
	case ROLE_METRICS:
		return "metrics";
	}
	return "?";
}

/* ---- in the child ------------------------------------------------------ */

static bool drop_privileges(const struct master *m, char *err, size_t len)
{
	struct passwd *pw;

	if (m->drop) {
		pw = getpwuid(m->uid);
		if (pw == NULL || initgroups(pw->pw_name, m->gid) != 0 ||
		    setgid(m->gid) != 0 || setuid(m->uid) != 0) {
			snprintf(err, len, "cannot become uid %ld: %s",
				 (long)m->uid, strerror(errno));
			return false;
		}
		if (setuid(0) == 0) {
			snprintf(err, len, "root could be regained");
			return false;
		}
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
		snprintf(err, len, "PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
		return false;
	}
	/* After the uid change, which clears it. A master that dies is a
	 * crash of the whole gateway: its children go at once (what they held
	 * unacknowledged is recovered at the next start, as after any crash);
	 * none may serve unsupervised. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != m->pid) {
		snprintf(err, len, "the master is gone");
		return false;
	}
	return true;
}

static void on_heartbeat(struct ev_loop *loop, ev_timer *t, int revents)
{
	uint64_t *beat = t->data;

	(void)loop;
	(void)revents;
	__atomic_store_n(beat, mono_ms(), __ATOMIC_RELAXED);
}

/* The master's watchers go; the loop is the child's from here on. */
static void forget_master(struct master *m)
{
	ev_signal_stop(m->loop, &m->sig_term);
	ev_signal_stop(m->loop, &m->sig_int);
	ev_signal_stop(m->loop, &m->sig_hup);
	ev_signal_stop(m->loop, &m->sig_usr1);
	ev_timer_stop(m->loop, &m->respawn);
	ev_timer_stop(m->loop, &m->watchdog);
	ev_timer_stop(m->loop, &m->kill_timer);
	ev_timer_stop(m->loop, &m->ticket_timer);
	for (int i = 0; i < MAX_CHILDREN; i++)
		if (m->children[i].state != CHILD_FREE)
			ev_child_stop(m->loop, &m->children[i].watch);
	ev_loop_fork(m->loop);
	/* Only the master answers these; a child ignores them. */
	signal(SIGHUP, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	signal(SIGUSR1, SIG_IGN);
	signal(SIGUSR2, SIG_IGN);
}

static int run_role(struct master *m, enum role role, unsigned slot)
{
	struct generation *gen = generation_retain(m->gen);

	if (role == ROLE_METRICS) {
		struct metrics_args a = {.listen_fd = m->metrics_fd,
					 .stats = m->stats};

		for (size_t i = 0; i < m->n_listen; i++)
			close(m->listen_fds[i]);
		close(m->mailbox[0]);
		close(m->mailbox[1]);
		return metrics_run(m->loop, gen, &a);
	}
	if (m->metrics_fd >= 0)
		close(m->metrics_fd);
	if (role == ROLE_QMGR) {
		struct qmgr_args a = {.slot = slot,
				      .mailbox_fd = m->mailbox[0]};

		for (size_t i = 0; i < m->n_listen; i++)
			close(m->listen_fds[i]);
		close(m->mailbox[1]);
		return qmgr_run(m->loop, gen, &a);
	}
	struct worker_args a = {.slot = slot,
				.listen = m->listen_fds,
				.n_listen = m->n_listen,
				.notify_fd = m->mailbox[1],
				.limits = m->limits};

	close(m->mailbox[0]);
	return worker_run(m->loop, gen, &a);
}

static void child_main(struct master *m, enum role role, unsigned slot)
{
	char name[32], err[256];
	ev_timer heartbeat;
	int rc;

	forget_master(m);
	stats_use_slot(m->stats, slot);
	if (role == ROLE_WORKER)
		snprintf(name, sizeof(name), "worker%u", slot);
	else
		snprintf(name, sizeof(name), "%s", role_name(role));
	log_set_process(name);
	if (!drop_privileges(m, err, sizeof(err))) {
		log_msg(LOG_ERR, "privileges", "%s", err);
		_exit(1);
	}
	tls_ticket_ring_seal(m->tickets);
	ev_timer_init(&heartbeat, on_heartbeat, 0., 1.);
	heartbeat.data = &m->beats[slot];
	ev_timer_start(m->loop, &heartbeat);
	rc = run_role(m, role, slot);
	ev_timer_stop(m->loop, &heartbeat);
	/* What the master allocated is this process's copy: freed so that a
	 * leak checker sees only real leaks. */
	generation_release(m->gen);
	free(m->listen_fds);
	limits_free(m->limits);
	stats_close(m->stats);
	ev_loop_destroy(m->loop);
	exit(rc);
}

/* ---- children, from the master's side ----------------------------------- */

static void on_child_exit(struct ev_loop *loop, ev_child *w, int revents);

static int free_slot(const struct master *m, enum role role)
{
	if (role == ROLE_QMGR)
		return m->children[QMGR_SLOT].state == CHILD_FREE ? QMGR_SLOT
								  : -1;
	if (role == ROLE_METRICS)
		return m->children[METRICS_SLOT].state == CHILD_FREE
			       ? METRICS_SLOT
			       : -1;
	for (int i = 1; i < QUEUE_SLOTS; i++)
		if (m->children[i].state == CHILD_FREE)
			return i;
	return -1;
}

static bool spawn(struct master *m, enum role role)
{
	int slot = free_slot(m, role);
	struct child *c;
	pid_t pid;

	if (slot < 0)
		return false;
	c = &m->children[slot];
	m->beats[slot] = mono_ms();
	log_flush(); /* or the child would write the master's lines again */
	pid = fork();
	if (pid < 0) {
		log_msg(LOG_ERR, "fork", "%s", strerror(errno));
		return false;
	}
	if (pid == 0)
		child_main(m, role, (unsigned)slot);
	*c = (struct child){.state = CHILD_RUNNING, .role = role, .pid = pid,
			    .started = ev_now(m->loop), .m = m};
	ev_child_init(&c->watch, on_child_exit, pid, 0);
	c->watch.data = c;
	ev_child_start(m->loop, &c->watch);
	return true;
}

static unsigned count(const struct master *m, enum role role,
		      enum child_state state)
{
	unsigned n = 0;

	for (int i = 0; i < MAX_CHILDREN; i++)
		n += m->children[i].state == state &&
		     m->children[i].role == role;
	return n;
}

static bool qmgr_present(const struct master *m)
{
	return m->children[QMGR_SLOT].state != CHILD_FREE;
}

/* Children of any role, running or retiring. */
static unsigned live_children(const struct master *m)
{
	unsigned n = 0;

	for (int i = 0; i < MAX_CHILDREN; i++)
		n += m->children[i].state != CHILD_FREE;
	return n;
}

/* Starts whatever is missing: the workers the configuration wants and
 * the queue manager (only once its predecessor is gone: two would
 * deliver the same message twice). */
static void fill(struct master *m)
{
	if (m->stopping)
		return;
	if (!qmgr_present(m))
		spawn(m, ROLE_QMGR);
	if (m->metrics_fd >= 0 &&
	    m->children[METRICS_SLOT].state == CHILD_FREE)
		spawn(m, ROLE_METRICS);
	while (count(m, ROLE_WORKER, CHILD_RUNNING) < m->n_workers)
		if (!spawn(m, ROLE_WORKER))
			break;
}

static void on_respawn(struct ev_loop *loop, ev_timer *t, int revents)
{
	(void)loop;
	(void)revents;
	fill(t->data);
}

static void log_exit(const struct child *c, unsigned slot, int status)
{
	struct logline l;

	log_begin(&l, c->state == CHILD_RUNNING && !c->m->stopping ? LOG_WARN
								   : LOG_INFO,
		  "child_exit");
	log_kv(&l, "role", "%s", role_name(c->role));
	log_kv(&l, "slot", "%u", slot);
	log_kv(&l, "pid", "%ld", (long)c->pid);
	if (WIFSIGNALED(status))
		log_kv(&l, "signal", "%d", WTERMSIG(status));
	else
		log_kv(&l, "status", "%d", WEXITSTATUS(status));
	log_kv(&l, "uptime", "%.1fs", ev_now(c->m->loop) - c->started);
	log_end(&l);
}

/* An unexpected death is restarted after a delay that doubles while
 * children keep dying young (1 s up to 30 s) and resets after a child
 * that lived. */
static void schedule_restart(struct master *m, double lived)
{
	m->backoff = lived > 30. ? 0. : (m->backoff < 1. ? 1. : m->backoff * 2);
	if (m->backoff > 30.)
		m->backoff = 30.;
	if (ev_is_active(&m->respawn))
		return;
	ev_timer_set(&m->respawn, m->backoff > 0. ? m->backoff : 0.05, 0.);
	ev_timer_start(m->loop, &m->respawn);
}

/* A worker's connections died with it: its slots in the shared table are
 * free for the others (max_connections holds across workers). */
static void forget_connections(struct master *m, const struct child *c,
			       unsigned slot)
{
	unsigned n;

	if (c->role != ROLE_WORKER || m->limits == NULL)
		return;
	n = limits_forget_worker(m->limits, slot);
	if (n > 0)
		log_msg(LOG_INFO, "connections_freed",
			"%u connection slot(s) of worker slot %u", n, slot);
}

static void on_child_exit(struct ev_loop *loop, ev_child *w, int revents)
{
	struct child *c = w->data;
	struct master *m = c->m;
	unsigned slot = (unsigned)(c - m->children);
	bool unexpected = c->state == CHILD_RUNNING && !m->stopping;
	unsigned removed;

	(void)revents;
	ev_child_stop(loop, w);
	log_exit(c, slot, w->rstatus);
	forget_connections(m, c, slot);
	removed = spool_remove_partials_of(m->gen->cfg->spool, slot);
	if (removed > 0)
		log_msg(LOG_INFO, "spool_partial_removed",
			"%u unfinished file(s) of slot %u", removed, slot);
	c->state = CHILD_FREE;
	if (m->stopping) {
		if (live_children(m) == 0)
			ev_break(loop, EVBREAK_ALL);
		return;
	}
	if (unexpected) {
		stats_add(STAT_CHILD_DEATHS + c->role);
		schedule_restart(m, ev_now(loop) - c->started);
	}
	else
		fill(m); /* a retired queue manager's successor */
}

static void signal_all(struct master *m, int sig)
{
	for (int i = 0; i < MAX_CHILDREN; i++)
		if (m->children[i].state != CHILD_FREE)
			kill(m->children[i].pid, sig);
}

/* A child whose loop has not turned for watchdog_timeout is stuck (in C
 * code no budget reaches): it is killed and restarted like any death. */
static void on_watchdog(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct master *m = t->data;
	uint64_t now = mono_ms();
	uint64_t limit = (uint64_t)(m->gen->cfg->watchdog_timeout * 1000.);

	(void)loop;
	(void)revents;
	for (int i = 0; i < MAX_CHILDREN; i++) {
		struct child *c = &m->children[i];
		uint64_t beat = __atomic_load_n(&m->beats[i], __ATOMIC_RELAXED);
		struct logline l;

		if (c->state == CHILD_FREE || now - beat <= limit)
			continue;
		log_begin(&l, LOG_ERR, "watchdog");
		log_kv(&l, "role", "%s", role_name(c->role));
		log_kv(&l, "slot", "%d", i);
		log_kv(&l, "pid", "%ld", (long)c->pid);
		log_kv(&l, "stuck", "%.1fs", (double)(now - beat) / 1000.);
		log_end(&l);
		kill(c->pid, SIGKILL);
		m->beats[i] = now; /* one kill, not one per tick */
	}
}

/* ---- TLS session tickets ---------------------------------------------- */

/* Keys rotate every session lifetime (hourly while resumption is off, in
 * case a reload turns it on); the previous key is still accepted. */
static void on_ticket_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct master *m = t->data;
	int lifetime = tls_resume_lifetime(m->gen->cfg);

	(void)loop;
	(void)revents;
	if (tls_ticket_ring_rotate(m->tickets, (double)mono_ms() / 1000.,
				   lifetime > 0 ? lifetime : 3600))
		log_msg(LOG_INFO, "tls_ticket_keys",
			"rotated; the previous key is still accepted");
}

static void test_resumption(const struct generation *gen)
{
	tls_resume_selftest(gen->cfg, gen->tls ? tls_server_ctx(gen->tls)
					       : NULL);
}

/* ---- signals --------------------------------------------------------- */

static void on_kill_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
	(void)loop;
	(void)revents;
	log_msg(LOG_WARN, "stop", "children still running: killed");
	signal_all(t->data, SIGKILL);
}

static void on_stop(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct master *m = w->data;

	(void)revents;
	m->stopping = true;
	m->stop_signals++;
	log_msg(LOG_INFO, "stop", "signal %d%s", w->signum,
		m->stop_signals > 1 ? ": children stop now" : ": draining");
	ev_timer_stop(loop, &m->respawn);
	signal_all(m, SIGTERM);
	if (!ev_is_active(&m->kill_timer)) {
		ev_timer_set(&m->kill_timer,
			     m->gen->cfg->drain_timeout + 10., 0.);
		ev_timer_start(loop, &m->kill_timer);
	}
	if (live_children(m) == 0)
		ev_break(loop, EVBREAK_ALL);
}

static void on_flush(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct master *m = w->data;

	(void)loop;
	(void)revents;
	if (qmgr_present(m))
		kill(m->children[QMGR_SLOT].pid, SIGUSR1);
}

static void write_status(struct master *m, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* SPOOL/reload.status: "SEQ ok GENERATION" or "SEQ failed REASON", for
 * `smtpgw reload`, which waits for SEQ to change. */
static void write_status(struct master *m, const char *fmt, ...)
{
	char path[4096], tmp[4200];
	va_list ap;
	FILE *f;

	log_flush(); /* `smtpgw reload` returns: the reload's lines are out */
	snprintf(path, sizeof(path), "%s/reload.status", m->gen->cfg->spool);
	snprintf(tmp, sizeof(tmp), "%s.new", path);
	f = fopen(tmp, "we");
	if (f == NULL)
		return;
	fprintf(f, "%u ", ++m->reload_seq);
	va_start(ap, fmt);
	vfprintf(f, fmt, ap);
	va_end(ap);
	fputc('\n', f);
	if (fclose(f) == 0)
		rename(tmp, path);
}

/* What a reload cannot change without a restart, said out loud. */
static void warn_restart_keys(const struct config *old,
			      const struct config *new)
{
	bool same_listen = old->n_listen == new->n_listen;

	for (size_t i = 0; same_listen && i < old->n_listen; i++)
		same_listen = strcmp(old->listen[i].text,
				     new->listen[i].text) == 0;
	if (!same_listen)
		log_msg(LOG_WARN, "reload",
			"listen changed: takes effect at the next restart");
	if (strcmp(old->spool, new->spool) != 0)
		log_msg(LOG_WARN, "reload",
			"spool changed: takes effect at the next restart");
	if (strcmp(old->user, new->user) != 0)
		log_msg(LOG_WARN, "reload",
			"user changed: takes effect at the next restart");
	if (old->has_metrics != new->has_metrics ||
	    (old->has_metrics && strcmp(old->metrics_listen.text,
					new->metrics_listen.text) != 0))
		log_msg(LOG_WARN, "reload", "[metrics] listen changed: takes "
					    "effect at the next restart");
}

/* Every running child is replaced: new workers start with the new
 * generation, the old ones stop accepting and finish their sessions; the
 * queue manager stops (its deliveries in flight stay queued) and its
 * successor starts as soon as it is gone. */
static void replace_children(struct master *m)
{
	for (int i = 0; i < MAX_CHILDREN; i++) {
		struct child *c = &m->children[i];

		if (c->state != CHILD_RUNNING)
			continue;
		c->state = CHILD_RETIRING;
		kill(c->pid, c->role == ROLE_WORKER ? SIGUSR2 : SIGTERM);
	}
	fill(m);
}

/* [log] for this process and the children it forks from now on. */
static bool apply_log(const struct config *cfg, char *err, size_t len)
{
	struct log_settings s = {.style = cfg->log_format,
				 .to_syslog = cfg->log_to_syslog,
				 .facility = cfg->log_facility,
				 .syslog_name = cfg->log_syslog_name,
				 .syslog_socket = cfg->log_syslog_socket,
				 .hostname = cfg->hostname};

	if (log_configure(&s, err, len))
		return true;
	snprintf(err + strlen(err), len - strlen(err), " ([log] in %s)",
		 cfg->path);
	return false;
}

static unsigned worker_count(const struct config *cfg)
{
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);

	if (cfg->workers > 0)
		return cfg->workers;
	return cpus < 1 ? 1 : cpus > 32 ? 32 : (unsigned)cpus;
}

static void on_hup(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct master *m = w->data;
	struct generation *fresh;
	char err[1024];
	struct logline l;

	(void)loop;
	(void)revents;
	if (m->stopping)
		return;
	fresh = generation_build(m->gen->cfg->path, true, err, sizeof(err));
	if (fresh == NULL || !apply_log(fresh->cfg, err, sizeof(err))) {
		generation_release(fresh);
		log_begin(&l, LOG_ERR, "reload");
		log_kv(&l, "status", "failed");
		log_kv(&l, "kept", "%u", m->gen->serial);
		log_kv(&l, "reason", "%s", err);
		log_end(&l);
		write_status(m, "failed %s", err);
		return;
	}
	warn_restart_keys(m->gen->cfg, fresh->cfg);
	if (fresh->cfg->max_connections > limits_capacity(m->limits))
		log_msg(LOG_WARN, "reload",
			"max_connections above %u (the connection table made "
			"at start) takes effect at the next restart",
			limits_capacity(m->limits));
	generation_release(m->gen);
	m->gen = fresh;
	test_resumption(fresh);
	m->n_workers = worker_count(fresh->cfg);
	replace_children(m);
	log_begin(&l, LOG_INFO, "reload");
	log_kv(&l, "status", "ok");
	log_kv(&l, "generation", "%u", fresh->serial);
	log_kv(&l, "script", "%s", policy_script(fresh->policy));
	log_end(&l);
	write_status(m, "ok %u", fresh->serial);
}

/* ---- start and stop ---------------------------------------------------- */

static void watch(struct master *m)
{
	struct ev_loop *loop = m->loop;

	ev_signal_init(&m->sig_term, on_stop, SIGTERM);
	ev_signal_init(&m->sig_int, on_stop, SIGINT);
	ev_signal_init(&m->sig_hup, on_hup, SIGHUP);
	ev_signal_init(&m->sig_usr1, on_flush, SIGUSR1);
	ev_timer_init(&m->respawn, on_respawn, 0., 0.);
	ev_timer_init(&m->watchdog, on_watchdog, 1., 1.);
	ev_timer_init(&m->kill_timer, on_kill_timer, 0., 0.);
	ev_timer_init(&m->ticket_timer, on_ticket_timer, 1., 1.);
	m->sig_term.data = m->sig_int.data = m->sig_hup.data = m;
	m->sig_usr1.data = m->respawn.data = m->watchdog.data = m;
	m->kill_timer.data = m->ticket_timer.data = m;
	ev_signal_start(loop, &m->sig_term);
	ev_signal_start(loop, &m->sig_int);
	ev_signal_start(loop, &m->sig_hup);
	ev_signal_start(loop, &m->sig_usr1);
	ev_timer_start(loop, &m->watchdog);
	ev_timer_start(loop, &m->ticket_timer);
}

static void unwatch(struct master *m)
{
	forget_master(m);
}

/* Root hands the children to [gateway] user; anyone else keeps its own
 * uid (development, tests: ports >= 1024 then). */
static bool resolve_user(struct master *m, const struct config *cfg,
			 char *err, size_t len)
{
	struct passwd *pw;

	if (geteuid() != 0)
		return true;
	pw = getpwnam(cfg->user);
	if (pw == NULL) {
		snprintf(err, len,
			 "%s: [gateway] user %s does not exist (make run "
			 "creates it: useradd --system %s)",
			 cfg->path, cfg->user, cfg->user);
		return false;
	}
	if (pw->pw_uid == 0) {
		snprintf(err, len, "%s: [gateway] user %s is root", cfg->path,
			 cfg->user);
		return false;
	}
	m->drop = true;
	m->uid = pw->pw_uid;
	m->gid = pw->pw_gid;
	return true;
}

static void write_pid_file(const struct config *cfg)
{
	char path[4096], tmp[4200];
	FILE *f;

	snprintf(path, sizeof(path), "%s/smtpgw.pid", cfg->spool);
	snprintf(tmp, sizeof(tmp), "%s.new", path);
	f = fopen(tmp, "we");
	if (f == NULL)
		return;
	fprintf(f, "%ld\n", (long)getpid());
	if (fclose(f) == 0)
		rename(tmp, path);
}

static void raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/* Everything before the first fork; false with the reason in err. */
static bool prepare(struct master *m, const char *path, char *err,
		    size_t len)
{
	struct config *cfg = config_load(path, err, len);
	bool ok;

	if (cfg == NULL)
		return false;
	ok = apply_log(cfg, err, len) && resolve_user(m, cfg, err, len) &&
	     (m->lock_fd = spool_lock(cfg->spool, err, len)) >= 0;
	config_free(cfg);
	if (!ok || (m->tickets = tls_ticket_ring_new(err, len)) == NULL)
		return false;
	m->gen = generation_build(path, true, err, len);
	if (m->gen == NULL || !spool_recover(m->gen->cfg->spool, err, len))
		return false;
	test_resumption(m->gen);
	if (m->drop && !spool_chown(m->gen->cfg->spool, m->uid, m->gid, err,
				    len))
		return false;
	m->listen_fds = listener_bind(m->gen->cfg, err, len);
	if (m->listen_fds == NULL)
		return false;
	m->limits = limits_new(m->gen->cfg, err, len);
	if (m->limits == NULL)
		return false;
	if (m->gen->cfg->has_metrics &&
	    (m->metrics_fd = metrics_bind(&m->gen->cfg->metrics_listen, err,
					  len)) < 0)
		return false;
	m->stats = stats_create(m->gen->cfg->spool, MAX_CHILDREN + 1, err, len);
	if (m->stats == NULL)
		return false;
	stats_use_slot(m->stats, MASTER_STATS_SLOT);
	m->n_listen = m->gen->cfg->n_listen;
	if (!ipc_pair(m->mailbox)) {
		snprintf(err, len, "socketpair: %s", strerror(errno));
		return false;
	}
	m->beats = mmap(NULL, MAX_CHILDREN * sizeof(*m->beats),
			PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1,
			0);
	if (m->beats == MAP_FAILED) {
		m->beats = NULL;
		snprintf(err, len, "mmap: %s", strerror(errno));
		return false;
	}
	write_pid_file(m->gen->cfg);
	m->n_workers = worker_count(m->gen->cfg);
	return true;
}

static void release(struct master *m, bool remove_pid)
{
	char path[4096];

	if (remove_pid && m->gen != NULL) {
		snprintf(path, sizeof(path), "%s/smtpgw.pid",
			 m->gen->cfg->spool);
		unlink(path);
	}
	for (size_t i = 0; i < m->n_listen; i++)
		close(m->listen_fds[i]);
	free(m->listen_fds);
	if (m->mailbox[0] >= 0)
		close(m->mailbox[0]);
	if (m->mailbox[1] >= 0)
		close(m->mailbox[1]);
	if (m->beats != NULL)
		munmap(m->beats, MAX_CHILDREN * sizeof(*m->beats));
	if (m->metrics_fd >= 0)
		close(m->metrics_fd);
	limits_free(m->limits);
	stats_close(m->stats);
	generation_release(m->gen);
	tls_ticket_ring_free(m->tickets);
	if (m->lock_fd >= 0)
		close(m->lock_fd);
}

int master_run(const char *config_path)
{
	static struct master m; /* children point into it */
	char err[1024];
	bool ok;

	m.lock_fd = m.mailbox[0] = m.mailbox[1] = m.metrics_fd = -1;
	m.pid = getpid();
	signal(SIGPIPE, SIG_IGN);
	raise_fd_limit();
	m.loop = ev_default_loop(EVFLAG_AUTO);
	log_set_process("master");
	log_attach(m.loop); /* the children inherit it with the loop */
	ok = prepare(&m, config_path, err, sizeof(err));
	if (!ok) {
		/* The reason as `-t` prints it: FILE:LINE: reason. */
		log_msg(LOG_FATAL, "start", "%s", err);
		release(&m, false);
		ev_loop_destroy(m.loop);
		return 1;
	}
	watch(&m);
	fill(&m);
	log_msg(LOG_INFO, "start", "smtpgw %s ready, %u worker(s), policy %s%s",
		m.gen->cfg->hostname, m.n_workers, policy_script(m.gen->policy),
		m.drop ? "" : " (not root: children keep this uid)");
	ev_run(m.loop, 0);
	unwatch(&m);
	release(&m, true);
	ev_loop_destroy(m.loop);
	log_msg(LOG_INFO, "exit", "status 0");
	return 0;
}
