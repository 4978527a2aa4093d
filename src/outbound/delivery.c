/*
 * delivery: the queue runner. Owns the in-memory messages and the jobs (one
 * message × one recipient domain × one attempt); a job owns its smtp_client
 * and holds a reference to the generation it started under. DNS answers come
 * back by job id, so a job that is gone is simply not found; so do MTA-STS
 * answers (outbound/sts), looked up beside the route for an MX route, and
 * applied per MX host by host_auth.
 *
 * Outcomes per recipient (RFC 5321 §4.2.5, §4.5.4): 2xx → sent; 5xx →
 * bounced; 4xx, no connection, a TLS failure the level does not allow →
 * the next address or MX, then deferred, retried (per recipient) after
 * retry_min doubling to retry_max, bounced once the message is older than
 * max_queue_lifetime. Every outcome is appended to the spool's state file
 * before anything else happens, so a restart never delivers a sent
 * recipient again; a bounced one stays owed until the DSN that reports it
 * is synced ("notified"), and only then may the message go.
 *
 * The scheduler (run_queue) runs from the loop only, from its own two
 * timers: `soon` (work was recorded) and `wake` (a retry comes due). Nothing
 * else calls it: admitting a message, a flush, a DSN that reached the spool
 * and a finishing job only record what changed and kick. A callback may
 * thus go on using its message after that: only the scheduler frees one
 * (finish_if_done), and never under a caller that still holds it.
 */
#include "outbound/delivery.h"

#include "core/config.h"
#include "net/dane.h"
#include "net/dns.h"
#include "proto/dsn.h"
#include "proto/envelope.h"
#include "policy/generation.h"
#include "core/netaddr.h"
#include "core/log.h"
#include "core/stats.h"
#include "policy/policy.h"
#include "spool/queue.h"
#include "outbound/conncache.h"
#include "outbound/smtp_client.h"
#include "outbound/sts.h"
#include "outbound/tlsrpt.h"
#include "proto/dns_wire.h"
#include "proto/requiretls.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* How the connection to an MX host is authenticated (host_auth). */
enum host_auth {
	AUTH_LEVEL, /* as the level says */
	AUTH_DANE,  /* by its TLSA records (RFC 7672): plan_host said so */
	AUTH_STS,   /* verify, for the MX host name (RFC 8461 §4.2) */
	AUTH_SKIP,  /* not to be used: j->failure says why */
};

/* Postfix's hopcount_limit: more Received: headers than this is a loop
 * (an MX or next_hop pointing back at us, or two gateways in a circle). */
enum { DSN_HEADER_MAX = 65536, MAX_HOPS = 50 };

struct message {
	struct message *next;
	char qid[QUEUE_ID_LEN + 1];
	struct envelope env;
	enum rcpt_state *states;
	bool *busy;	    /* tried in this round: set when a job takes the
			       recipient, cleared when the round ends, so a
			       deferral waits for its retry time */
	bool *dsn_busy;	    /* in a DSN the sync thread still holds */
	char **last_error;  /* per recipient, for the DSN and the queue */
	double next_attempt; /* the earliest retry_at of a pending recipient */
	double *retry_at;    /* per recipient: not before (0: at once) */
	unsigned *tries;     /* per recipient: attempts made */
	unsigned jobs;
	unsigned dsns;	   /* DSNs being synced; the message waits for them */
	unsigned hops;	   /* Received: headers in the message */
	uint64_t size;	   /* octets of the message, for the logs */
	bool tls_required_no; /* "TLS-Required: No" (RFC 8689 §3), and no
				 REQUIRETLS: the recipient's policies
				 (DANE, MTA-STS) may be ignored */
	double active_at;  /* when this round became due (Postfix: entered
			      the active queue), for delays= */
	bool gone; /* its queue file was deleted (queue delete) */
};

struct job {
	struct job *next;
	uint64_t id;
	struct delivery *d;
	struct message *m;
	struct generation *gen;
	char domain[256];
	size_t *index; /* recipients of m in this job */
	struct client_rcpt *rcpts;
	size_t n;
	enum tls_level asked; /* what client_tls returned */
	enum tls_level level; /* what applies: sts only under an enforce
				 policy, else may (see effective_level) */
	enum tls_level conn_level; /* the current host's: the level, or
				      what DANE or MTA-STS made of it */
	struct route rt;      /* where it goes (pointers into gen->cfg) */
	bool route_wait, sts_wait; /* lookups still out */
	struct sts_answer sts;	   /* the domain's MTA-STS policy, if .have */
	bool sts_changed;	   /* the lookup found other than the peek */
	struct dns_route route;
	enum route_source source; /* MX of the domain, next_hop, relayhost */
	const char *tls_name;	  /* the section's tls_name (in gen), or NULL */
	size_t host, addr;
	size_t judged;	     /* 1 + the host host_auth judged last ... */
	enum host_auth auth; /* ... and what it said */
	bool no_tls;
	struct requiretls_hop requiretls; /* a REQUIRETLS message: what
					     the route says of its hosts */
	unsigned clients;	  /* sessions started in this job ... */
	unsigned rt_refusals;	  /* ... and those that could not take a
				     REQUIRETLS message (5.7.30) */
	struct dns_tlsa tlsa; /* DANE: the TLSA answer for ... */
	size_t tlsa_host;     /* ... hosts[tlsa_host - 1]; 0: none yet */
	bool use_tlsa;	      /* the current host authenticates by it */
	char dane_reason[256]; /* the last DANE failure, for the log */
	struct queued_message file;
	struct smtp_client *client;
	double active_at;  /* the message's, when the job was planned */
	double handoff_at; /* the job began: routing, connecting ... */
	char relay[340];   /* host[ip]:port of the current try */
	char failure[800]; /* why the last try failed, for a deferral */
};

/* A queued message whose file could not be read for the moment (out of
 * descriptors or memory): read again at the next retry. */
struct unread {
	struct unread *next;
	char qid[QUEUE_ID_LEN + 1];
};

struct delivery {
	struct ev_loop *loop;
	struct queue *queue;
	struct dns *dns;
	struct sts *sts; /* NULL: no MTA-STS */
	struct tlsrpt *tlsrpt; /* NULL: no TLS reporting */
	struct generation *const *current;
	struct message *messages;
	struct job *jobs;
	struct unread *unread;
	double unread_at; /* when the unread are read again */
	unsigned active;
	uint64_t next_id;
	ev_timer wake; /* the earliest retry of a message without jobs */
	ev_timer soon; /* kicked: run the queue at the loop's next turn */
	struct conncache *cache; /* idle connections (README "Connection
				    reuse"); closed by delivery_stop */
	bool stopping;
};

static double now_s(struct delivery *d)
{
	return ev_now(d->loop);
}

static const struct config *cfg_now(const struct delivery *d)
{
	return (*d->current)->cfg;
}

/* ---- messages ---------------------------------------------------------- */

static void read_header_facts(const struct queued_message *f,
			      struct message *m);

static void message_free(struct message *m)
{
	for (size_t i = 0; i < m->env.n_rcpts; i++)
		free(m->last_error[i]);
	free(m->last_error);
	free(m->states);
	free(m->busy);
	free(m->dsn_busy);
	free(m->retry_at);
	free(m->tries);
	envelope_free(&m->env);
	free(m);
}

/* NULL when it cannot be taken in: `again` says whether that is the
 * moment's (out of descriptors or memory) rather than the message's. */
static struct message *message_load(struct delivery *d, const char *qid,
				    bool *again)
{
	struct message *m = calloc(1, sizeof(*m));
	struct queued_message file;
	char err[200];
	size_t n;

	*again = true;
	if (m == NULL)
		return NULL;
	if (!queue_open_message(d->queue, qid, &m->env, &file, err,
				sizeof(err))) {
		/* Gone (queue delete) is fine; not a queue file is set aside
		 * rather than left to fail at every start. */
		*again = errno != ENOENT && errno != EBADMSG;
		if (errno == EBADMSG)
			queue_quarantine(d->queue, qid);
		log_qid_msg(LOG_ERR, "delivery_load", qid, "%s%s", err,
			    *again ? "; read again later" : "");
		free(m);
		return NULL;
	}
	/* Counted now, on the descriptor already open: not read again. */
	read_header_facts(&file, m);
	m->size = file.body_size;
	close(file.fd);
	n = m->env.n_rcpts;
	memcpy(m->qid, qid, sizeof(m->qid));
	m->states = calloc(n, sizeof(*m->states));
	m->busy = calloc(n, sizeof(*m->busy));
	m->dsn_busy = calloc(n, sizeof(*m->dsn_busy));
	m->retry_at = calloc(n, sizeof(*m->retry_at));
	m->tries = calloc(n, sizeof(*m->tries));
	m->last_error = calloc(n, sizeof(*m->last_error));
	if (!m->states || !m->busy || !m->dsn_busy || !m->last_error ||
	    !m->retry_at || !m->tries) {
		message_free(m);
		return NULL;
	}
	/* attempts: a restart goes on counting where the last run stopped */
	queue_state_load(d->queue, qid,
			 &(struct rcpt_records){.states = m->states,
						.last = m->last_error,
						.attempts = m->tries},
			 n);
	m->next_attempt = now_s(d);
	m->active_at = ev_time(); /* the log's clock: the ids' (wall time) */
	return m;
}

static bool message_pending(const struct message *m)
{
	for (size_t i = 0; i < m->env.n_rcpts; i++)
		if (m->states[i] == RCPT_PENDING)
			return true;
	return false;
}

/* Lower-case domain of a recipient; <postmaster> is ours. */
static void rcpt_domain(const struct delivery *d, const char *rcpt, char *out,
			size_t len)
{
	const char *at = strrchr(rcpt, '@');

	snprintf(out, len, "%s", at ? at + 1 : cfg_now(d)->hostname);
	for (char *c = out; *c != '\0'; c++)
		*c = (char)tolower((unsigned char)*c);
}

/* ---- timing ------------------------------------------------------------ */

/* Arms the timer for the next due message. One that is already due was
 * held back by a concurrency limit: a finishing job kicks the runner, and
 * a one-second poll covers the rest, so the loop never spins on it. A kick
 * has its own timer, so this never delays one. */
static void schedule(struct delivery *d)
{
	double next = INFINITY, now = now_s(d);

	for (struct message *m = d->messages; m != NULL; m = m->next)
		if (m->jobs == 0 && m->next_attempt < next)
			next = m->next_attempt;
	if (d->unread != NULL && d->unread_at < next)
		next = d->unread_at;
	ev_timer_stop(d->loop, &d->wake);
	if (next == INFINITY)
		return;
	ev_timer_set(&d->wake, next > now ? next - now : 1.0, 0);
	ev_timer_start(d->loop, &d->wake);
}

/* Something changed (a message came in, a job ended, a flush): the queue
 * runs at the loop's next turn, never from inside the caller, which may
 * still hold a message the run would free. Kicks before that run are one. */
static void kick(struct delivery *d)
{
	if (d->stopping || ev_is_active(&d->soon))
		return;
	ev_timer_set(&d->soon, 0, 0);
	ev_timer_start(d->loop, &d->soon);
}

/* retry_min, doubling per attempt, up to retry_max (Postfix's
 * minimal_backoff_time / maximal_backoff_time); the queue command shows
 * the same. */
static double backoff(const struct config *cfg, unsigned attempts)
{
	return config_retry_delay(cfg, attempts);
}

/* ---- recording outcomes ------------------------------------------------ */

static const char *state_word(enum rcpt_state st)
{
	return st == RCPT_SENT ? "sent" : st == RCPT_BOUNCED ? "bounced"
							    : "deferred";
}

/* The enhanced status code in "550 5.1.1 text" or "5.1.2 text"; else
 * `fallback`. */
static void status_code(const char *reply, const char *fallback, char *out,
			size_t len)
{
	const char *p = reply;
	int a, b, c, used = 0;

	if (isdigit((unsigned char)p[0]) && isdigit((unsigned char)p[1]) &&
	    isdigit((unsigned char)p[2]) && p[3] == ' ')
		p += 4;
	if (sscanf(p, "%1d.%3d.%3d%n", &a, &b, &c, &used) == 3 && used > 0 &&
	    (a == 2 || a == 4 || a == 5))
		snprintf(out, len, "%d.%d.%d", a, b, c);
	else
		snprintf(out, len, "%s", fallback);
}

/* The queue id's time, to the microsecond; the header's arrival (to the
 * second, at the end of DATA) when the id is not one of ours. */
static double arrival_of(const struct message *m)
{
	double t = queue_id_time(m->qid);
	double off = t - (double)m->env.arrival;

	return off > -86400 && off < 86400 ? t : (double)m->env.arrival;
}

/* Postfix's clock of one delivery (log_adhoc): arrival (the queue id's
 * time), entry into this round, hand-off to the job, end of connection
 * set-up (MAIL FROM sent), now. */
struct timing {
	double arrival, active, handoff, setup, now;
};

static double later(double a, double b)
{
	return a > b ? a : b;
}

/* The stamps come from two processes' clocks (the id is the worker's):
 * kept in order, so that the four parts add up to the whole. */
static void log_delays(struct logline *l, const struct timing *t)
{
	double active = later(t->active, t->arrival);
	double handoff = later(t->handoff, active);
	double setup = t->setup > 0 ? later(t->setup, handoff) : handoff;
	double now = later(t->now, setup);
	char total[24], da[24], db[24], dc[24], dd[24];
	double a = active - t->arrival, b = handoff - active;
	double c = setup - handoff, x = now - setup;

	log_format_delay(now - t->arrival, total, sizeof(total));
	log_format_delay(a, da, sizeof(da));
	log_format_delay(b, db, sizeof(db));
	log_format_delay(c, dc, sizeof(dc));
	log_format_delay(x, dd, sizeof(dd));
	log_kv(l, "delay", "%s", total);
	log_kv(l, "delays", "%s/%s/%s/%s", da, db, dc, dd);
}

/* A recipient's line when no job ran for it (expired, loop): the whole
 * delay is before the queue manager's hand-off. */
static struct timing timing_now(const struct message *m)
{
	double now = ev_time();

	return (struct timing){arrival_of(m), now, now, 0, now};
}

/* One recipient's outcome, as Postfix's smtp logs it (status= sent,
 * deferred, bounced, expired) plus smtpgw's own facts. */
static void log_outcome(const struct message *m, size_t i, const char *status,
			const char *relay, const struct timing *t,
			const struct job *j, const struct client_result *r,
			const char *reply)
{
	bool sent = strcmp(status, "sent") == 0;
	bool bounced = strcmp(status, "bounced") == 0;
	char dsn[16];
	struct logline l;

	status_code(reply, sent ? "2.0.0" : bounced ? "5.0.0" : "4.0.0", dsn,
		    sizeof(dsn));
	log_begin(&l, sent || bounced ? LOG_INFO : LOG_WARN, "delivery");
	log_kv(&l, "qid", "%s", m->qid);
	log_kv(&l, "from", "<%s>", m->env.sender);
	log_kv(&l, "to", "<%s>", m->env.rcpts[i]);
	log_kv(&l, "relay", "%s", relay[0] ? relay : "none");
	log_delays(&l, t);
	log_kv(&l, "dsn", "%s", dsn);
	log_kv(&l, "size", "%llu", (unsigned long long)m->size);
	if (j != NULL)
		log_kv(&l, "tls", "%s:%s", tls_level_name(j->level),
		       r && r->tls_version[0] ? r->tls_version : "none");
	if (r && r->tls_version[0])
		log_kv(&l, "verified", "%s",
		       r->dane != DANE_AUTH_NONE ? dane_auth_name(r->dane)
		       : r->tls_verified	 ? "yes"
						 : "no");
	if (r)
		log_kv(&l, "reused", "%s", r->reused ? "yes" : "no");
	log_kv(&l, "status", "%s", status);
	if (j != NULL)
		log_kv(&l, "attempt", "%u", m->tries[i] + 1);
	log_kv(&l, "reply", "%s", reply);
	if (j != NULL && !sent && j->dane_reason[0] != '\0')
		log_kv(&l, "reason", "%s", j->dane_reason);
	log_end(&l);
}

static void log_rcpt(const struct job *j, size_t k, enum rcpt_state st,
		     const char *reply, const struct client_result *r)
{
	struct timing t = {arrival_of(j->m), j->active_at,
			   j->handoff_at, r ? r->setup_done : 0, ev_time()};

	log_outcome(j->m, j->index[k], state_word(st), j->relay, &t, j, r,
		    reply);
}

/* One recipient's outcome: spool state first, then memory and the log. */
static void record(struct job *j, size_t k, enum rcpt_state st,
		   const char *reply, const struct client_result *r)
{
	struct message *m = j->m;
	size_t i = j->index[k];

	queue_state_append(j->d->queue, m->qid, i, st, reply);
	log_rcpt(j, k, st, reply, r);
	stats_add(st == RCPT_SENT      ? STAT_SENT
		  : st == RCPT_BOUNCED ? STAT_BOUNCED
				       : STAT_DEFERRED);
	m->tries[i]++;
	if (st == RCPT_PENDING)
		m->retry_at[i] = now_s(j->d) + backoff(cfg_now(j->d), m->tries[i]);
	m->states[i] = st;
	free(m->last_error[i]);
	m->last_error[i] = strdup(reply);
}

static void record_all(struct job *j, enum rcpt_state st, const char *reply,
		       const struct client_result *r)
{
	for (size_t k = 0; k < j->n; k++)
		record(j, k, st, reply, r);
}

/* ---- DSN --------------------------------------------------------------- */

/* A DSN on its way to the spool: which bounced recipients it covers. The
 * message is not removed while one is in flight (m->dsns). */
struct dsn_commit {
	struct delivery *d;
	struct message *m;
	size_t n;
	size_t index[];
};

static bool owes_dsn(const struct message *m)
{
	for (size_t i = 0; i < m->env.n_rcpts; i++)
		if (m->states[i] == RCPT_BOUNCED)
			return true;
	return false;
}

static bool finish_if_done(struct delivery *d, struct message *m);

static void mark_notified(struct delivery *d, struct message *m, size_t i,
			  const char *why)
{
	queue_state_append(d->queue, m->qid, i, RCPT_NOTIFIED, why);
	m->states[i] = RCPT_NOTIFIED;
}

/* Postfix's "QID: sender non-delivery notification: DSNQID", the link
 * from a message to the DSN about it; without a DSN, why not. */
static void log_bounce(const struct message *m, const char *dsn_qid,
		       size_t n, const char *why)
{
	struct logline l;

	log_begin(&l, LOG_INFO, "bounce");
	log_kv(&l, "qid", "%s", m->qid);
	if (dsn_qid != NULL)
		log_kv(&l, "dsn_qid", "%s", dsn_qid);
	log_kv(&l, "to", "<%s>", m->env.sender);
	log_kv(&l, "nrcpt", "%zu", n);
	if (why != NULL)
		log_kv(&l, "reason", "%s", why);
	log_end(&l);
}

/* Only now, with the DSN synced, are its recipients settled; a DSN that
 * failed leaves them owed, for the next round to try again. delivery_add
 * only records the DSN, so `m` is still ours until finish_if_done. */
static void on_dsn_queued(void *owner, bool ok, const char *qid)
{
	struct dsn_commit *c = owner;
	struct delivery *d = c->d;
	struct message *m = c->m;
	char why[64];

	snprintf(why, sizeof(why), "DSN queued as %s", qid);
	if (ok)
		log_bounce(m, qid, c->n, NULL);
	for (size_t k = 0; k < c->n; k++) {
		m->dsn_busy[c->index[k]] = false;
		if (ok)
			mark_notified(d, m, c->index[k], why);
	}
	if (!ok) {
		log_qid_msg(LOG_ERR, "dsn_failed", m->qid, "the DSN did not "
			    "reach the spool; retried later");
		m->next_attempt = now_s(d) + cfg_now(d)->retry_min;
	}
	m->dsns--;
	free(c);
	if (d->stopping)
		return;
	if (ok)
		delivery_add(d, qid);
	finish_if_done(d, m);
}

/* The message's header section, read from an open queue file. */
static char *read_headers(const struct queued_message *f, size_t *len)
{
	char *buf = malloc(DSN_HEADER_MAX), *end;
	ssize_t n = buf ? pread(f->fd, buf, DSN_HEADER_MAX, f->body_offset) : -1;

	*len = 0;
	if (n <= 0) {
		free(buf);
		return NULL;
	}
	end = memmem(buf, (size_t)n, "\r\n\r\n", 4);
	*len = end ? (size_t)(end - buf) + 2 : (size_t)n;
	return buf;
}

/* The original header section, for the DSN's third part. */
static char *original_headers(struct delivery *d, struct message *m,
			      size_t *len)
{
	struct envelope e;
	struct queued_message f;
	char err[200], *headers;

	*len = 0;
	if (!queue_open_message(d->queue, m->qid, &e, &f, err, sizeof(err)))
		return NULL;
	envelope_free(&e);
	headers = read_headers(&f, len);
	close(f.fd);
	return headers;
}

/* What delivery needs from the header section, read once: the hops
 * (Received: headers) and TLS-Required: No. */
static void read_header_facts(const struct queued_message *f,
			      struct message *m)
{
	size_t len;
	char *h = read_headers(f, &len);

	m->hops = 0;
	for (size_t i = 0; h != NULL && i + 9 <= len; i++)
		if ((i == 0 || h[i - 1] == '\n') &&
		    strncasecmp(h + i, "Received:", 9) == 0)
			m->hops++;
	/* RFC 8689 §4.1: with the REQUIRETLS parameter the field is
	 * ignored */
	m->tls_required_no = h != NULL && !m->env.requiretls &&
			     requiretls_header_no(h, len);
	free(h);
}

/* The owed recipients not already in a DSN in flight, into `c`. */
static size_t dsn_rcpts(const struct message *m, struct dsn_rcpt *out,
			char (*status)[16], struct dsn_commit *c)
{
	size_t n = 0;

	for (size_t i = 0; i < m->env.n_rcpts; i++) {
		const char *why = m->last_error[i] ? m->last_error[i] : "";

		if (m->states[i] != RCPT_BOUNCED || m->dsn_busy[i])
			continue;
		status_code(why, "5.0.0", status[n], sizeof(status[n]));
		out[n] = (struct dsn_rcpt){.address = m->env.rcpts[i],
					   .action = DSN_FAILED,
					   .status = status[n],
					   .diagnostic = why};
		c->index[n++] = i;
	}
	c->n = n;
	return n;
}

static bool submit_dsn(struct delivery *d, struct message *m,
		       struct dsn_input *in, struct dsn_commit *c)
{
	const struct config *cfg = cfg_now(d);
	char *to[1] = {m->env.sender};
	/* RFC 8689 §5: the DSN of a REQUIRETLS message requires TLS too
	 * (it carries the original header section only, as RET=HDRS) */
	struct envelope e = {.sender = "", .rcpts = to, .n_rcpts = 1,
			     .arrival = (long long)now_s(d),
			     .helo = (char *)cfg->hostname,
			     .requiretls = m->env.requiretls};
	size_t len = 0;
	char *text;
	bool ok;

	snprintf(e.client, sizeof(e.client), "local");
	in->headers = original_headers(d, m, &in->headers_len);
	text = dsn_build(in, &len);
	ok = text != NULL &&
	     queue_submit(d->queue, &e, text, len, on_dsn_queued, c);
	free((char *)in->headers);
	free(text);
	return ok;
}

/* Bounces go to the sender, never for a null sender (RFC 5321 §4.5.5):
 * those recipients are settled at once. */
static void send_dsn(struct delivery *d, struct message *m)
{
	size_t n = m->env.n_rcpts;
	struct dsn_rcpt *rcpts = calloc(n, sizeof(*rcpts));
	char (*status)[16] = calloc(n, sizeof(*status));
	struct dsn_commit *c = calloc(1, sizeof(*c) + n * sizeof(size_t));
	struct dsn_input in = {.hostname = cfg_now(d)->hostname,
			       .qid = m->qid, .sender = m->env.sender,
			       .arrival = (time_t)m->env.arrival,
			       .now = (time_t)now_s(d), .rcpts = rcpts};

	if (rcpts == NULL || status == NULL || c == NULL)
		goto out;
	in.n_rcpts = dsn_rcpts(m, rcpts, status, c);
	if (in.n_rcpts == 0)
		goto out;
	if (m->env.sender[0] == '\0') {
		log_bounce(m, NULL, c->n, "no DSN for the null sender");
		for (size_t k = 0; k < c->n; k++)
			mark_notified(d, m, c->index[k],
				      "no DSN for the null sender");
		goto out;
	}
	*c = (struct dsn_commit){.d = d, .m = m, .n = c->n};
	for (size_t k = 0; k < c->n; k++)
		m->dsn_busy[c->index[k]] = true;
	m->dsns++;
	if (submit_dsn(d, m, &in, c)) {
		c = NULL; /* the queue holds it until on_dsn_queued */
	} else {
		log_qid_msg(LOG_ERR, "dsn_failed", m->qid, "cannot queue the "
			    "DSN; retried later");
		for (size_t k = 0; k < c->n; k++)
			m->dsn_busy[c->index[k]] = false;
		m->dsns--;
		m->next_attempt = now_s(d) + cfg_now(d)->retry_min;
	}
out:
	free(c);
	free(rcpts);
	free(status);
}

/* ---- after an attempt -------------------------------------------------- */

/* Postfix's "QID: from=<S>, status=expired, returned to sender", after
 * a status=expired line per recipient. */
static void expire(struct delivery *d, struct message *m)
{
	struct timing t = timing_now(m);
	struct logline l;
	char why[400];
	unsigned n = 0;

	for (size_t i = 0; i < m->env.n_rcpts; i++) {
		if (m->states[i] != RCPT_PENDING)
			continue;
		snprintf(why, sizeof(why), "4.4.7 message expired after %u "
			 "attempts: %s", m->tries[i],
			 m->last_error[i] ? m->last_error[i] : "not delivered");
		queue_state_append(d->queue, m->qid, i, RCPT_BOUNCED, why);
		log_outcome(m, i, "expired", "", &t, NULL, NULL, why);
		stats_add(STAT_EXPIRED);
		m->states[i] = RCPT_BOUNCED;
		free(m->last_error[i]);
		m->last_error[i] = strdup(why);
		n++;
	}
	log_begin(&l, LOG_WARN, "expired");
	log_kv(&l, "qid", "%s", m->qid);
	log_kv(&l, "from", "<%s>", m->env.sender);
	log_kv(&l, "nrcpt", "%u", n);
	log_end(&l);
}

static void unlink_message(struct delivery *d, struct message *m)
{
	struct message **p = &d->messages;

	while (*p != m)
		p = &(*p)->next;
	*p = m->next;
}

/* Each recipient waits for its own retry time: one held back by a
 * concurrency limit has not been tried and is due at once. */
static double earliest_retry(const struct message *m)
{
	double next = INFINITY;

	for (size_t i = 0; i < m->env.n_rcpts; i++)
		if (m->states[i] == RCPT_PENDING && m->retry_at[i] < next)
			next = m->retry_at[i];
	return next;
}

/* Postfix's "QID: removed": the message's last line. */
static void log_removed(const char *qid)
{
	struct logline l;

	log_begin(&l, LOG_INFO, "removed");
	log_kv(&l, "qid", "%s", qid);
	log_end(&l);
}

/* A message goes only when nothing is pending, no DSN is owed or in flight
 * and no job holds it; true when it went. */
static bool finish_if_done(struct delivery *d, struct message *m)
{
	if (m->jobs > 0 || m->dsns > 0)
		return false;
	if (!m->gone && (message_pending(m) || owes_dsn(m)))
		return false;
	if (!m->gone)
		log_removed(m->qid);
	queue_remove(d->queue, m->qid);
	unlink_message(d, m);
	message_free(m);
	return true;
}

/* Every job of a round is back: bounce, retry, or finish the message. */
static void round_done(struct delivery *d, struct message *m)
{
	const struct config *cfg = cfg_now(d);

	if (m->gone) {
		finish_if_done(d, m);
		return;
	}
	memset(m->busy, 0, m->env.n_rcpts * sizeof(*m->busy));
	if (message_pending(m) &&
	    now_s(d) - (double)m->env.arrival > cfg->max_queue_lifetime)
		expire(d, m);
	send_dsn(d, m);
	if (message_pending(m)) {
		m->next_attempt = earliest_retry(m);
		/* due already (never tried): due now */
		m->active_at = later(m->next_attempt, ev_time());
	} else {
		finish_if_done(d, m);
	}
}

static void job_free(struct job *j)
{
	struct delivery *d = j->d;
	struct job **p = &d->jobs;

	while (*p != j)
		p = &(*p)->next;
	*p = j->next;
	if (j->client != NULL)
		smtp_client_abort(j->client);
	dns_cancel(d->dns, j->id);
	if (j->sts_wait)
		sts_cancel(d->sts, j->id);
	if (j->file.fd >= 0)
		close(j->file.fd);
	generation_release(j->gen);
	free(j->index);
	free(j->rcpts);
	free(j);
	d->active--;
}

static void job_done(struct job *j)
{
	struct delivery *d = j->d;
	struct message *m = j->m;

	job_free(j);
	if (--m->jobs == 0)
		round_done(d, m);
	kick(d);
}

/* ---- trying hosts ------------------------------------------------------ */

static void try_next(struct job *j);
static void route_exhausted(struct job *j);
static void job_go(struct job *j);

/* Under an enforced MTA-STS policy every deferral says so. */
static void job_defer(struct job *j, const char *why)
{
	char text[sizeof(j->failure) + 200];

	if (j->level == TLS_LEVEL_STS && strstr(why, "MTA-STS") == NULL) {
		snprintf(text, sizeof(text), "%s (MTA-STS policy of %s: "
			 "enforce, id %s)", why, j->domain, j->sts.id);
		why = text;
	}
	record_all(j, RCPT_PENDING, why, NULL);
	job_done(j);
}

/* Keeps only the recipients still undecided (4xx) in the job, for the
 * next MX host; returns how many there are. */
static size_t keep_undecided(struct job *j)
{
	size_t kept = 0;

	for (size_t k = 0; k < j->n; k++) {
		if (j->m->states[j->index[k]] != RCPT_PENDING)
			continue;
		j->index[kept] = j->index[k];
		j->rcpts[kept] = j->rcpts[k];
		kept++;
	}
	j->n = kept;
	return kept;
}

static bool more_hosts(const struct job *j)
{
	return j->host + 1 < j->route.n_hosts;
}

/* The transaction ended: 2xx sent, 5xx bounced; a 4xx goes to the next MX
 * host while there is one, and is deferred after the last. */
static void on_result(struct job *j, const struct client_result *r)
{
	bool next_mx = r->outcome == CLIENT_DONE && more_hosts(j);

	for (size_t k = 0; k < j->n; k++) {
		int code = j->rcpts[k].code;
		const char *reply = j->rcpts[k].reply[0] ? j->rcpts[k].reply
							 : r->reply;

		if (r->outcome != CLIENT_DONE && code / 100 != 5)
			record(j, k, RCPT_PENDING, r->reply, r);
		else if (code / 100 == 2)
			record(j, k, RCPT_SENT, reply, r);
		else if (code / 100 == 5)
			record(j, k, RCPT_BOUNCED, reply, r);
		else if (next_mx)
			snprintf(j->failure, sizeof(j->failure), "%s", reply);
		else
			record(j, k, RCPT_PENDING, reply, r);
	}
	if (next_mx && keep_undecided(j) > 0) {
		j->host++;
		j->addr = 0;
		j->no_tls = false;
		try_next(j);
		return;
	}
	job_done(j);
}

/* Lost before the message went out: the 5xx recipients bounce, the rest try
 * the next address or MX (after the dot they wait: it may have arrived).
 * False when there is nowhere else to go. */
static bool lost_elsewhere(struct job *j, const struct client_result *r)
{
	if (j->addr + 1 >= j->route.hosts[j->host].n_addrs && !more_hosts(j))
		return false;
	for (size_t k = 0; k < j->n; k++)
		if (j->rcpts[k].code / 100 == 5)
			record(j, k, RCPT_BOUNCED, j->rcpts[k].reply, r);
	if (keep_undecided(j) == 0) {
		job_done(j);
		return true;
	}
	snprintf(j->failure, sizeof(j->failure), "4.4.2 %s: %s", j->relay,
		 r->reply);
	j->no_tls = false;
	j->addr++;
	try_next(j);
	return true;
}

static void log_downgrade(const struct job *j, const char *why)
{
	struct logline l;

	stats_add(STAT_DOWNGRADES);
	log_begin(&l, LOG_WARN, "tls_downgrade");
	log_kv(&l, "qid", "%s", j->m->qid);
	log_kv(&l, "relay", "%s", j->relay);
	log_kv(&l, "tls", "may");
	log_kv(&l, "reason", "%s", why);
	log_kv(&l, "msg", "no TLS with this host; going on in plaintext");
	log_end(&l);
}

/* ---- TLS reporting and REQUIRETLS ---------------------------------------- */

static bool sts_watched(const struct job *j);

/* The TLSA records a session was held to, in presentation form ("3 1 1
 * 1F85...", one per line), as RFC 8460 §4.4's policy-string. */
static void tlsa_strings(const struct dns_tlsa *t, char *out, size_t len)
{
	size_t o = 0;

	out[0] = '\0';
	for (size_t i = 0; i < t->n_records && o + 16 < len; i++) {
		const struct tlsa_rr *rr = &t->records[i];

		o += (size_t)snprintf(out + o, len - o, "%s%u %u %u ",
				      i ? "\n" : "", rr->usage, rr->selector,
				      rr->mtype);
		for (size_t k = 0; k < rr->len && o + 3 < len; k++)
			o += (size_t)snprintf(out + o, len - o, "%02X",
					      rr->data[k]);
	}
}

/* An MTA-STS policy as its lines (RFC 8460 §4.4's policy-string) and its
 * mx patterns, one per line. */
static void sts_strings(const struct sts_policy *p, char *out, size_t len,
			char *mx, size_t mx_len)
{
	size_t o, m = 0;

	o = (size_t)snprintf(out, len, "version: STSv1\nmode: %s",
			     sts_mode_name(p->mode));
	mx[0] = '\0';
	for (unsigned i = 0; i < p->n_mx; i++) {
		if (o < len)
			o += (size_t)snprintf(out + o, len - o, "\nmx: %s",
					      p->mx[i]);
		if (m < mx_len)
			m += (size_t)snprintf(mx + m, mx_len - m, "%s%s",
					      i ? "\n" : "", p->mx[i]);
	}
	if (o < len)
		snprintf(out + o, len - o, "\nmax_age: %lu", p->max_age);
}

/* Room for the strings of a policy. */
struct policy_text {
	char strings[TLSRPT_LIST_MAX];
	char mx[TLSRPT_LIST_MAX];
};

/* The policy a session to the current host was held to, for TLS reports:
 * DANE's TLSA records when they authenticated it ("tlsa", mx-host the
 * host), the domain's MTA-STS policy when one is in force ("sts"), else
 * none ("no-policy-found"). */
static void tlsrpt_policy_of(const struct job *j, struct tlsrpt_policy *p,
			     struct policy_text *t)
{
	*p = (struct tlsrpt_policy){.type = TLSRPT_POLICY_NONE,
				    .domain = j->domain};
	if (j->use_tlsa) {
		tlsa_strings(&j->tlsa, t->strings, sizeof(t->strings));
		p->type = TLSRPT_POLICY_TLSA;
		p->strings = t->strings;
		p->mx_hosts = j->route.hosts[j->host].name;
	} else if (j->sts.have && j->sts.policy.mode != STS_MODE_NONE) {
		sts_strings(&j->sts.policy, t->strings, sizeof(t->strings),
			    t->mx, sizeof(t->mx));
		p->type = TLSRPT_POLICY_STS;
		p->strings = t->strings;
		p->mx_hosts = t->mx;
	}
}

/* A DANE level gave the host up before any session (RFC 8460 §4.3.2):
 * its DNSSEC answers failed (dnssec-invalid), or dane-only found no
 * usable TLSA records (dane-required). */
static void report_dane_defer(const struct job *j)
{
	const struct dns_host *h = &j->route.hosts[j->host];
	bool lookup_failed = j->tlsa_host == j->host + 1 &&
			     j->tlsa.status == DNS_TLSA_FAILED;
	struct tlsrpt_policy p = {.type = TLSRPT_POLICY_TLSA,
				  .domain = j->domain, .mx_hosts = h->name};
	struct tlsrpt_session s = {.mx_host = h->name};

	tlsrpt_failure(j->d->tlsrpt, &p, &s,
		       lookup_failed ? TLSRPT_DNSSEC_INVALID
				     : TLSRPT_DANE_REQUIRED,
		       lookup_failed ? j->tlsa.error : NULL);
}

/* A failure under the domain's MTA-STS policy, with or without a session
 * (an MX host the policy does not name). */
static void report_sts_failure(const struct job *j, const char *mx,
			       const struct client_result *r,
			       enum tlsrpt_result result, const char *why)
{
	struct tlsrpt_policy p;
	struct policy_text t;
	struct tlsrpt_session sess = {.mx_host = mx};
	char ip[64] = "";

	tlsrpt_policy_of(j, &p, &t);
	if (r != NULL) {
		sockaddr_ip_text(&j->route.hosts[j->host].addrs[j->addr], ip,
				 sizeof(ip));
		sess.receiving_ip = ip;
		sess.sending_ip = r->local_ip;
	}
	tlsrpt_failure(j->d->tlsrpt, &p, &sess, result, why);
}

/* RFC 8460: what STARTTLS came to in the session that just ended. A
 * session that never got to STARTTLS, and may's plaintext retry, are no
 * TLS sessions; one under an MTA-STS policy is sts_session's. */
static void report_tls(const struct job *j, const struct client_result *r)
{
	const struct dns_host *h = &j->route.hosts[j->host];
	struct tlsrpt_policy p;
	struct policy_text t;
	struct tlsrpt_session sess;
	char ip[64];

	if (j->d->tlsrpt == NULL || r->tls_try == TLS_TRY_NONE ||
	    r->reused || (!j->use_tlsa && sts_watched(j)))
		return;
	tlsrpt_policy_of(j, &p, &t);
	sockaddr_ip_text(&h->addrs[j->addr], ip, sizeof(ip));
	sess = (struct tlsrpt_session){.mx_host = h->name, .receiving_ip = ip,
				       .sending_ip = r->local_ip};
	switch (r->tls_try) {
	case TLS_TRY_NONE:
		break;
	case TLS_TRY_OK:
		tlsrpt_success(j->d->tlsrpt, &p, &sess);
		break;
	case TLS_TRY_NOT_OFFERED:
		tlsrpt_failure(j->d->tlsrpt, &p, &sess,
			       TLSRPT_STARTTLS_NOT_SUPPORTED,
			       "STARTTLS not offered");
		break;
	case TLS_TRY_REFUSED:
		tlsrpt_failure(j->d->tlsrpt, &p, &sess,
			       TLSRPT_STARTTLS_NOT_SUPPORTED,
			       r->starttls_refused[0] ? r->starttls_refused
						      : r->reply);
		break;
	case TLS_TRY_FAILED:
		tlsrpt_failure(j->d->tlsrpt, &p, &sess,
			       tlsrpt_classify_tls_error(r->reply), r->reply);
		break;
	case TLS_TRY_DANE_FAILED: /* no TLSA record matched */
		tlsrpt_failure(j->d->tlsrpt, &p, &sess, TLSRPT_TLSA_INVALID,
			       r->reply);
		break;
	}
}

/* RFC 8689: a host that cannot take a REQUIRETLS message (no TLS, not
 * authenticated, no REQUIRETLS keyword) is passed over like a failed one;
 * when every host was, the recipients bounce with 5.7.30 (try_next). */
static bool requiretls_refused(struct job *j, const struct client_result *r)
{
	bool tls_failure = r->outcome == CLIENT_TLS_NOT_OFFERED ||
			   r->outcome == CLIENT_TLS_FAILED;

	if (!j->m->env.requiretls ||
	    (r->outcome != CLIENT_REQUIRETLS && !tls_failure))
		return false;
	j->rt_refusals++;
	snprintf(j->failure, sizeof(j->failure),
		 "5.7.30 REQUIRETLS support required: %s: %s%s", j->relay,
		 tls_failure ? "TLS: " : "", r->reply);
	j->no_tls = false;
	j->addr++;
	try_next(j);
	return true;
}

/* ---- MTA-STS ----------------------------------------------------------- */

/* An enforce policy that applies: under the level sts, and under dane
 * to the hosts DANE does not authenticate (RFC 8461 §2: DANE first).
 * Another level chosen by client_tls does not follow the policy. */
static bool sts_enforced(const struct job *j)
{
	return j->sts.have && j->sts.policy.mode == STS_MODE_ENFORCE &&
	       (j->level == TLS_LEVEL_STS || j->level == TLS_LEVEL_DANE);
}

/* A policy whose failures are reported: testing, or enforced. */
static bool sts_watched(const struct job *j)
{
	return sts_enforced(j) ||
	       (j->sts.have && j->sts.policy.mode == STS_MODE_TESTING);
}

/* Logged (mta_sts_failure) and counted for TLS reporting; `r` is the
 * session's result, NULL when there was none. */
static void sts_failed(struct job *j, const char *mx,
		       const struct client_result *r,
		       enum tlsrpt_result result, const char *why)
{
	struct sts_failure f = {.domain = j->domain, .mx = mx,
				.relay = j->relay, .qid = j->m->qid,
				.result = result, .reason = why};

	sts_report(j->d->sts, &j->sts, &f);
	report_sts_failure(j, mx, r, result, why);
}

/*
 * How the connection to MX host h is authenticated by MTA-STS, where DANE
 * does not (the two meet in current_host: plan_host first, and a host it
 * authenticates by TLSA never comes here, RFC 8461 §2). An enforced
 * policy allows only the MX hosts it names, each verified for its own
 * name; testing reports the others and goes on.
 */
static enum host_auth host_auth(struct job *j, const struct dns_host *h)
{
	char why[600];

	if (!sts_watched(j))
		return AUTH_LEVEL;
	if (sts_mx_allowed(&j->sts, j->domain, h->name, why, sizeof(why)))
		return sts_enforced(j) ? AUTH_STS : AUTH_LEVEL;
	sts_failed(j, h->name, NULL, TLSRPT_VALIDATION_FAILURE, why);
	if (!sts_enforced(j))
		return AUTH_LEVEL; /* testing: delivered as usual */
	snprintf(j->failure, sizeof(j->failure), "4.7.5 %s", why);
	return AUTH_SKIP;
}

/* A session that went well under the domain's MTA-STS policy. */
static void report_sts_success(const struct job *j,
			       const struct client_result *r)
{
	struct tlsrpt_policy p;
	struct policy_text t;

	if (r->reused)
		return; /* counted when it was new */
	tlsrpt_policy_of(j, &p, &t);
	tlsrpt_success(j->d->tlsrpt, &p, NULL);
}

/* A session under a watched policy: counted, and a failure reported. The
 * plaintext retry of may after a failed handshake is not a session of
 * its own. */
static void sts_session(struct job *j, const struct client_result *r)
{
	enum tlsrpt_result result;
	const char *why;

	if (!sts_watched(j) || j->no_tls || r->outcome == CLIENT_CONNECT_FAILED)
		return;
	if (!sts_session_failed(r, j->conn_level != TLS_LEVEL_NONE, &result,
				&why))
		report_sts_success(j, r);
	else
		sts_failed(j, j->route.hosts[j->host].name, r, result, why);
}

/* What applies: client_tls's sts means verify under an enforce policy and
 * may without one (a static route has none). */
static enum tls_level effective_level(const struct job *j)
{
	if (j->asked != TLS_LEVEL_STS)
		return j->asked;
	return j->sts.have && j->sts.policy.mode == STS_MODE_ENFORCE
		       ? TLS_LEVEL_STS
		       : TLS_LEVEL_MAY;
}

/* What an outbound connection had, by the level it asked for; a reused
 * one was counted when it was new. */
static void count_connection(const struct job *j,
			     const struct client_result *r)
{
	enum stat_tls_had had = STAT_HAD_PLAINTEXT;

	if (r->outcome == CLIENT_CONNECT_FAILED || r->reused)
		return;
	if (r->outcome == CLIENT_TLS_FAILED ||
	    r->outcome == CLIENT_TLS_NOT_OFFERED)
		had = STAT_HAD_FAILED;
	else if (r->tls_version[0] != '\0')
		had = r->tls_verified ? STAT_HAD_VERIFIED : STAT_HAD_TLS;
	stats_add(stat_outbound_id(j->level, had));
}

static void on_client(void *owner, const struct client_result *r)
{
	struct job *j = owner;

	j->client = NULL;
	sts_session(j, r);
	report_tls(j, r);
	count_connection(j, r);
	if (r->starttls_refused[0] != '\0')
		log_downgrade(j, r->starttls_refused);
	if (requiretls_refused(j, r))
		return;
	switch (r->outcome) {
	case CLIENT_DONE:
		on_result(j, r);
		return;
	case CLIENT_LOST:
		if (r->dot_sent || !lost_elsewhere(j, r))
			on_result(j, r);
		return;
	case CLIENT_TLS_FAILED:
		if (j->use_tlsa)
			snprintf(j->dane_reason, sizeof(j->dane_reason), "%s",
				 r->reply);
		if (j->conn_level == TLS_LEVEL_MAY && !j->no_tls) {
			/* may: the same host again at once, in plaintext. */
			log_downgrade(j, r->reply);
			j->no_tls = true;
			try_next(j);
			return;
		}
		snprintf(j->failure, sizeof(j->failure),
			 "4.7.5 Cannot start TLS with %s: %s", j->relay,
			 r->reply);
		break;
	case CLIENT_TLS_NOT_OFFERED:
		if (j->use_tlsa)
			snprintf(j->dane_reason, sizeof(j->dane_reason),
				 "%.200s has TLSA records, but offered no "
				 "STARTTLS", j->route.hosts[j->host].name);
		snprintf(j->failure, sizeof(j->failure),
			 "4.7.4 TLS is required, but was not offered by host %s",
			 j->relay);
		break;
	case CLIENT_CONNECT_FAILED:
	case CLIENT_REQUIRETLS: /* not a REQUIRETLS message: cannot be */
		snprintf(j->failure, sizeof(j->failure),
			 "4.4.1 %s: %s", j->relay, r->reply);
		break;
	}
	j->no_tls = false;
	j->addr++;
	try_next(j);
}

/* DANE checks the chain itself: its config verifies nothing. */
static struct tls_config *level_config(const struct job *j)
{
	switch (j->conn_level) {
	case TLS_LEVEL_NONE:
		return NULL;
	case TLS_LEVEL_MAY:
	case TLS_LEVEL_ENCRYPT:
	case TLS_LEVEL_DANE:
	case TLS_LEVEL_DANE_ONLY:
		return j->gen->clients.encrypt;
	case TLS_LEVEL_VERIFY:
	case TLS_LEVEL_STS:
		return j->gen->clients.verify;
	}
	return NULL;
}

static void describe_relay(struct job *j, const struct dns_host *h,
			   const struct sockaddr_storage *a)
{
	char ip[64];

	sockaddr_ip_text(a, ip, sizeof(ip));
	snprintf(j->relay, sizeof(j->relay), "%.255s[%.63s]:%u", h->name, ip,
		 sockaddr_port(a));
}

/* host_auth once per host: its answer holds for every address. */
static enum host_auth host_auth_once(struct job *j, const struct dns_host *h)
{
	if (j->judged != j->host + 1) {
		j->auth = host_auth(j, h);
		j->judged = j->host + 1;
	}
	return j->auth;
}

static void log_dane(const struct job *j, const char *plan, const char *why)
{
	struct logline l;

	log_begin(&l, LOG_INFO, "dane");
	log_kv(&l, "qid", "%s", j->m->qid);
	log_kv(&l, "host", "%s", j->route.hosts[j->host].name);
	log_kv(&l, "tls", "%s", tls_level_name(j->level));
	log_kv(&l, "plan", "%s", plan);
	if (why != NULL)
		log_kv(&l, "reason", "%s", why);
	log_end(&l);
}

static void on_tlsa(uint64_t id, const struct dns_tlsa *tlsa, void *arg);

/* What DANE makes of the current host (RFC 7672 §2.2): its TLSA records
 * are looked up first when its MX and address records are secure. False
 * when try_next must not go on: the lookup is under way, or the host was
 * given up and try_next has moved on. */
static bool plan_host(struct job *j)
{
	const struct dns_host *h = &j->route.hosts[j->host];
	bool wanted = dane_wants_tlsa(j->level, &j->route, h);
	char why[256];

	j->conn_level = j->level;
	j->use_tlsa = false;
	if (!dane_level(j->level))
		return true;
	if (wanted && j->tlsa_host != j->host + 1) {
		dns_tlsa(j->d->dns, h->name, sockaddr_port(&h->addrs[0]), j->id,
			 on_tlsa, j->d);
		return false;
	}
	switch (dane_plan(j->level, &j->route, h, wanted ? &j->tlsa : NULL,
			  why, sizeof(why))) {
	case DANE_PLAN_AUTH:
		j->use_tlsa = true;
		if (j->addr == 0)
			log_dane(j, "authenticate", NULL);
		return true;
	case DANE_PLAN_ENCRYPT:
		j->conn_level = TLS_LEVEL_ENCRYPT;
		break;
	case DANE_PLAN_MAY:
		j->conn_level = TLS_LEVEL_MAY;
		break;
	case DANE_PLAN_DEFER:
		report_dane_defer(j);
		log_dane(j, "defer", why);
		snprintf(j->dane_reason, sizeof(j->dane_reason), "%s", why);
		snprintf(j->failure, sizeof(j->failure), "4.7.5 %s: %s",
			 h->name, why);
		j->host++;
		j->addr = 0;
		try_next(j);
		return false;
	}
	if (j->addr == 0)
		log_dane(j, j->conn_level == TLS_LEVEL_MAY ? "may" : "encrypt",
			 why);
	/* RFC 8689: without DANE a REQUIRETLS message needs a verified
	 * certificate */
	if (j->m->env.requiretls)
		j->conn_level = TLS_LEVEL_VERIFY;
	return true;
}

/* The host to try now and how it is authenticated: the current one
 * while it has addresses left, else the next one that neither DANE
 * (plan_host) nor MTA-STS (host_auth) gives up. NULL when none is left,
 * or (*wait) when plan_host has a TLSA lookup under way or has moved on
 * by itself. */
static const struct dns_host *current_host(struct job *j,
					   enum host_auth *auth, bool *wait)
{
	*wait = false;
	for (;;) {
		const struct dns_host *h;

		while (j->host < j->route.n_hosts &&
		       j->addr >= j->route.hosts[j->host].n_addrs) {
			j->host++;
			j->addr = 0;
		}
		if (j->host >= j->route.n_hosts)
			return NULL;
		if (!plan_host(j)) {
			*wait = true;
			return NULL;
		}
		h = &j->route.hosts[j->host];
		*auth = j->use_tlsa ? AUTH_DANE : host_auth_once(j, h);
		if (*auth != AUTH_SKIP)
			return h;
		j->addr = h->n_addrs; /* the next host */
	}
}

/* Every host tried: deferred, unless this is a REQUIRETLS message that
 * every session refused (RFC 8689 §4.2.1): then it bounces, 5.7.30. */
static void route_exhausted(struct job *j)
{
	if (j->rt_refusals > 0 && j->rt_refusals == j->clients) {
		record_all(j, RCPT_BOUNCED, j->failure, NULL);
		job_done(j);
		return;
	}
	job_defer(j, j->failure[0] ? j->failure
				   : "4.4.1 no host could be reached");
}

/* RFC 8689 §4.2.1: does the domain's MTA-STS policy (testing or enforce)
 * name MX host h? */
static bool sts_names(const struct job *j, const struct dns_host *h)
{
	return j->sts.have && j->sts.policy.mode != STS_MODE_NONE &&
	       sts_mx_match(&j->sts.policy, h->name);
}

/* The next address of the current host, else the next host (next MX). */
static void try_next(struct job *j)
{
	const struct config *cfg = j->gen->cfg;
	struct client_job cj;
	const struct dns_host *h;
	enum host_auth auth = AUTH_LEVEL;
	bool wait;

	if ((h = current_host(j, &auth, &wait)) == NULL) {
		if (!wait)
			route_exhausted(j);
		return;
	}
	if (auth == AUTH_STS)
		j->conn_level = TLS_LEVEL_VERIFY; /* for the MX host name */
	j->requiretls.mx_sts = sts_names(j, h);
	if (sts_watched(j) && auth == AUTH_LEVEL) /* testing: our own check */
		tls_clients_load_trust(&j->gen->clients);
	describe_relay(j, h, &h->addrs[j->addr]);
	cj = (struct client_job){
		.addr = h->addrs[j->addr], .host = h->name,
		/* DANE and MTA-STS name the MX host, and so does its SNI */
		.tls_name = dane_level(j->level) || auth == AUTH_STS
				    ? NULL
				    : j->tls_name,
		.tlsa = j->use_tlsa ? j->tlsa.records : NULL,
		.n_tlsa = j->use_tlsa ? j->tlsa.n_records : 0,
		.helo = cfg->hostname, .level = j->conn_level,
		.tls = level_config(j), .no_tls = j->no_tls,
		.cert_check = sts_watched(j) && auth == AUTH_LEVEL
				      ? &j->gen->clients
				      : NULL,
		.sender = j->m->env.sender, .rcpts = j->rcpts, .n_rcpts = j->n,
		.body_fd = j->file.fd, .body_offset = j->file.body_offset,
		.body_size = j->file.body_size, .body_type = j->m->env.body,
		.smtputf8 = j->m->env.smtputf8,
		.timeout = cfg->delivery_timeout,
		.cache = j->d->cache, .reuse_max = cfg->reuse_max_messages,
		.reuse_idle = cfg->reuse_idle_time, .epoch = j->gen->serial,
		.requiretls = j->m->env.requiretls ? &j->requiretls : NULL,
	};
	for (size_t k = 0; k < j->n; k++) {
		j->rcpts[k].code = 0;
		j->rcpts[k].reply[0] = '\0';
	}
	j->client = smtp_client_start(j->d->loop, &cj, on_client, j);
	j->clients += j->client != NULL;
	if (j->client == NULL)
		job_defer(j, "4.3.0 cannot start an SMTP client");
}

static struct job *find_job(struct delivery *d, uint64_t id)
{
	for (struct job *j = d->jobs; j != NULL; j = j->next)
		if (j->id == id)
			return j;
	return NULL;
}

/* The TLSA answer for the current host: try_next plans it. */
static void on_tlsa(uint64_t id, const struct dns_tlsa *tlsa, void *arg)
{
	struct job *j = find_job(arg, id);

	if (j == NULL)
		return;
	j->tlsa = *tlsa;
	j->tlsa_host = j->host + 1;
	try_next(j);
}

/* A name that does not exist bounces only when it is the recipient's
 * domain: a next_hop or relayhost that does not resolve is the
 * gateway's own mistake, and the mail waits for it to be put right. */
static void on_route(uint64_t id, const struct dns_route *route, void *arg)
{
	struct job *j = find_job(arg, id);
	bool bounce;
	char why[300];

	if (j == NULL)
		return;
	if (route->status == DNS_OK) {
		j->route = *route;
		/* RFC 8689 §4.2.1: an MX answer DNSSEC vouches for */
		j->requiretls.mx_dnssec = route->mx_sec == DNS_SECURE;
		j->route_wait = false;
		job_go(j);
		return;
	}
	bounce = route->status == DNS_PERMFAIL && j->source == ROUTE_MX;
	snprintf(why, sizeof(why), "%s Host or domain name %s: %s%s",
		 bounce ? "5.1.2" : "4.4.3",
		 route->status == DNS_PERMFAIL ? "not found" : "lookup failed",
		 route->error,
		 j->source == ROUTE_RELAYHOST  ? " (relayhost)"
		 : j->source == ROUTE_NEXT_HOP ? " (next_hop)"
					       : "");
	record_all(j, bounce ? RCPT_BOUNCED : RCPT_PENDING, why, NULL);
	job_done(j);
}

/* ---- starting jobs ----------------------------------------------------- */

static bool choose_level(struct job *j)
{
	struct policy_facts f = {.hook = HOOK_CLIENT_TLS};
	struct policy_result r;

	f.hostname = j->gen->cfg->hostname;
	f.sender = j->m->env.sender;
	f.recipient = j->rcpts[0].address;
	f.domain = j->domain;
	f.section = j->rt.rule;
	f.mta_sts = j->sts.have ? &j->sts.policy : NULL;
	policy_call(j->gen->policy, &f, &r);
	if (r.outcome == POLICY_LEVEL) {
		j->asked = r.level;
		j->level = effective_level(j);
		/* RFC 8689: the message's own TLS requirements */
		if (j->m->env.requiretls)
			j->level = tls_level_for_requiretls(j->level);
		else if (j->m->tls_required_no)
			j->level = tls_level_for_tls_required_no(j->level);
		return true;
	}
	log_qid_msg(LOG_ERR, "policy_error", j->m->qid,
		    "hook client_tls domain %s: %s", j->domain, r.text);
	stats_add(STAT_POLICY_ERRORS + HOOK_CLIENT_TLS);
	return false;
}

/* The queue file did not open. Deleted (queue delete), or no longer a
 * queue file (set aside): nothing left to send. Anything else (out of
 * descriptors, say) is the moment's, not the message's: a deferral. */
static void job_unopened(struct job *j, int error, const char *why)
{
	char text[300];

	if (error != ENOENT && error != EBADMSG) {
		snprintf(text, sizeof(text), "4.3.0 %s", why);
		job_defer(j, text);
		return;
	}
	log_qid_msg(LOG_WARN, "dropped", j->m->qid, "%s", why);
	if (error == EBADMSG)
		queue_quarantine(j->d->queue, j->m->qid);
	j->m->gone = true;
	job_done(j);
}

/* MTA-STS is looked up for the MX route of a domain name. */
static bool sts_applies(const struct job *j)
{
	char name[DNS_NAME_MAX + 1];

	return j->d->sts != NULL && j->source == ROUTE_MX &&
	       dns_name_copy(j->domain, name, sizeof(name));
}

/* Both lookups are in: the level again if the MTA-STS lookup found other
 * than the first call was told, then the first host. */
static void job_go(struct job *j)
{
	if (j->route_wait || j->sts_wait)
		return;
	if (j->sts_changed && !choose_level(j)) {
		job_defer(j, "4.3.0 policy failure (client_tls)");
		return;
	}
	try_next(j);
}

static bool same_answer(const struct sts_answer *a, const struct sts_answer *b)
{
	return a->have == b->have &&
	       (!a->have || (strcmp(a->id, b->id) == 0 &&
			     a->policy.mode == b->policy.mode));
}

static void on_sts(uint64_t id, const struct sts_answer *a, void *arg)
{
	struct job *j = find_job(arg, id);

	if (j == NULL || !j->sts_wait)
		return;
	j->sts_wait = false;
	j->sts_changed = !same_answer(&j->sts, a);
	j->sts = *a;
	job_go(j);
}

/* client_tls is called at once with what is known of the domain's
 * MTA-STS policy (a policy error defers at once), and again if the
 * lookup that runs beside the route's finds something else. */
static void job_begin(struct job *j)
{
	struct envelope e;
	char err[200];

	if (!queue_open_message(j->d->queue, j->m->qid, &e, &j->file, err,
				sizeof(err))) {
		job_unopened(j, errno, err);
		return;
	}
	envelope_free(&e);
	config_route(j->gen->cfg, j->domain, strlen(j->domain), &j->rt);
	j->source = j->rt.source;
	j->tls_name = j->rt.tls_name;
	/* RFC 8689 §4.2.1: a name an MX answer gave needs DNSSEC or MTA-STS
	 * behind it; a configured [host] or address does not */
	j->requiretls.mx_lookup = j->rt.hop == NULL || !j->rt.hop->no_mx;
	if (sts_applies(j))
		sts_peek(j->d->sts, j->domain, &j->sts);
	if (!choose_level(j)) {
		job_defer(j, "4.3.0 policy failure (client_tls)");
		return;
	}
	j->route_wait = true;
	if (sts_applies(j)) {
		j->sts_wait = true;
		sts_lookup(j->d->sts, j->domain, j->id, on_sts, j->d);
	}
	dns_route_for(j->d->dns, &j->rt, j->domain, j->id, on_route, j->d);
}

static unsigned active_for(const struct delivery *d, const char *domain)
{
	unsigned n = 0;

	for (const struct job *j = d->jobs; j != NULL; j = j->next)
		n += strcmp(j->domain, domain) == 0;
	return n;
}

/* A job for the idle pending recipients of `m` in `domain`. */
static struct job *job_new(struct delivery *d, struct message *m,
			   const char *domain)
{
	struct job *j = calloc(1, sizeof(*j));
	size_t n = m->env.n_rcpts;

	if (j == NULL || (j->index = calloc(n, sizeof(*j->index))) == NULL ||
	    (j->rcpts = calloc(n, sizeof(*j->rcpts))) == NULL) {
		if (j != NULL)
			free(j->index);
		free(j);
		return NULL;
	}
	j->id = ++d->next_id;
	j->d = d;
	j->m = m;
	j->gen = generation_retain(*d->current);
	j->file.fd = -1;
	j->handoff_at = ev_time();
	j->active_at = m->active_at < j->handoff_at ? m->active_at
						    : j->handoff_at;
	snprintf(j->domain, sizeof(j->domain), "%s", domain);
	for (size_t i = 0; i < n; i++) {
		char dom[256];

		if (m->states[i] != RCPT_PENDING || m->busy[i] ||
		    m->retry_at[i] > now_s(d))
			continue;
		rcpt_domain(d, m->env.rcpts[i], dom, sizeof(dom));
		if (strcmp(dom, domain) != 0)
			continue;
		m->busy[i] = true;
		j->index[j->n] = i;
		j->rcpts[j->n++].address = m->env.rcpts[i];
	}
	j->next = d->jobs;
	d->jobs = j;
	d->active++;
	m->jobs++;
	return j;
}

static void log_loop(const struct message *m, size_t i, const char *why)
{
	struct timing t = timing_now(m);
	struct logline l;

	log_begin(&l, LOG_WARN, "loop");
	log_kv(&l, "qid", "%s", m->qid);
	log_kv(&l, "to", "<%s>", m->env.rcpts[i]);
	log_kv(&l, "reason", "%s", why);
	log_end(&l);
	log_outcome(m, i, "bounced", "", &t, NULL, NULL, why);
}

static void bounce_loop(struct delivery *d, struct message *m)
{
	char why[200];

	snprintf(why, sizeof(why), "5.4.6 too many hops (%u Received: "
		 "headers): mail forwarding loop", m->hops);
	for (size_t i = 0; i < m->env.n_rcpts; i++) {
		if (m->states[i] != RCPT_PENDING || m->busy[i])
			continue;
		queue_state_append(d->queue, m->qid, i, RCPT_BOUNCED, why);
		m->states[i] = RCPT_BOUNCED;
		free(m->last_error[i]);
		m->last_error[i] = strdup(why);
		log_loop(m, i, why);
		stats_add(STAT_BOUNCED);
	}
}

/* Plans jobs for a due message's idle recipients, within the limits. */
static void plan_message(struct delivery *d, struct message *m)
{
	const struct config *cfg = cfg_now(d);

	for (size_t i = 0; i < m->env.n_rcpts; i++) {
		char dom[256];

		if (m->states[i] != RCPT_PENDING || m->busy[i] ||
		    m->retry_at[i] > now_s(d))
			continue;
		if (d->active >= cfg->delivery_max_connections)
			return;
		rcpt_domain(d, m->env.rcpts[i], dom, sizeof(dom));
		if (active_for(d, dom) < cfg->delivery_max_per_destination)
			job_new(d, m, dom);
	}
}

static bool admit_message(struct delivery *d, const char *qid);

/* The messages that could not be read last time, again. */
static void read_again(struct delivery *d)
{
	struct unread *u = d->unread;

	d->unread = NULL;
	while (u != NULL) {
		struct unread *next = u->next;

		admit_message(d, u->qid);
		free(u);
		u = next;
	}
}

/* Plans every due message first and begins the jobs afterwards, by id: a
 * job that ends at once (an unreadable file, a policy failure) may finish
 * its message, which must not happen under the planning loop's feet. Such
 * a job kicks again, so the room it leaves is used at the next turn. Only
 * the timers call this (see the top of the file). */
static void run_queue(struct delivery *d)
{
	double now = now_s(d);
	uint64_t first = d->next_id + 1, last;

	ev_timer_stop(d->loop, &d->soon);
	if (d->stopping)
		return;
	if (d->unread != NULL && d->unread_at <= now)
		read_again(d);
	for (struct message *m = d->messages, *next; m != NULL; m = next) {
		next = m->next;
		if (m->next_attempt > now)
			continue;
		if (message_pending(m) && m->hops > MAX_HOPS) {
			bounce_loop(d, m);
			send_dsn(d, m);
			finish_if_done(d, m);
		} else if (message_pending(m)) {
			plan_message(d, m);
		} else if (m->jobs == 0 && m->dsns == 0 && owes_dsn(m)) {
			/* a DSN that failed, or one owed from before a
			 * restart */
			send_dsn(d, m);
			finish_if_done(d, m);
		}
	}
	last = d->next_id;
	for (uint64_t id = first; id <= last; id++) {
		struct job *j = find_job(d, id);

		if (j != NULL)
			job_begin(j);
	}
	schedule(d);
}

/* `wake` and `soon`: the only callers of run_queue. */
static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	run_queue(w->data);
}

/* ---- the interface ----------------------------------------------------- */

struct delivery *delivery_new(struct ev_loop *loop, struct queue *q,
			      struct dns *dns,
			      struct generation *const *current)
{
	struct delivery *d = calloc(1, sizeof(*d));

	if (d == NULL)
		return NULL;
	d->loop = loop;
	d->queue = q;
	d->dns = dns;
	d->current = current;
	/* as many idle connections as there may be busy ones */
	d->cache = conncache_new(cfg_now(d)->delivery_max_connections);
	if (d->cache == NULL) {
		free(d);
		return NULL;
	}
	ev_init(&d->wake, timer_cb);
	d->wake.data = d;
	ev_init(&d->soon, timer_cb);
	d->soon.data = d;
	return d;
}

void delivery_set_tlsrpt(struct delivery *d, struct tlsrpt *t)
{
	d->tlsrpt = t;
}

void delivery_use_sts(struct delivery *d, struct sts *sts)
{
	d->sts = sts;
}

void delivery_stop(struct delivery *d)
{
	if (d == NULL)
		return;
	d->stopping = true;
	ev_timer_stop(d->loop, &d->wake);
	ev_timer_stop(d->loop, &d->soon);
	while (d->jobs != NULL) {
		d->jobs->m->jobs--;
		job_free(d->jobs);
	}
	conncache_free(d->cache); /* QUIT to every idle connection */
	d->cache = NULL;
}

void delivery_free(struct delivery *d)
{
	if (d == NULL)
		return;
	delivery_stop(d);
	while (d->messages != NULL) {
		struct message *m = d->messages;

		d->messages = m->next;
		message_free(m);
	}
	while (d->unread != NULL) {
		struct unread *u = d->unread;

		d->unread = u->next;
		free(u);
	}
	free(d);
}

static bool holds_message(const struct delivery *d, const char *qid)
{
	for (const struct message *m = d->messages; m != NULL; m = m->next)
		if (strcmp(m->qid, qid) == 0)
			return true;
	return false;
}

/* Remembered until the next retry (once, however often it is named). */
static void remember_unread(struct delivery *d, const char *qid)
{
	struct unread *u;

	for (u = d->unread; u != NULL; u = u->next)
		if (strcmp(u->qid, qid) == 0)
			return;
	if ((u = calloc(1, sizeof(*u))) == NULL) {
		log_qid_msg(LOG_ERR, "delivery_load", qid, "out of memory; "
			    "found again at the next spool scan");
		return;
	}
	snprintf(u->qid, sizeof(u->qid), "%s", qid);
	if (d->unread == NULL)
		d->unread_at = now_s(d) + cfg_now(d)->retry_min;
	u->next = d->unread;
	d->unread = u;
	kick(d); /* for schedule() to arm the retry */
}

/* Postfix's "QID: from=<S>, size=N, nrcpt=N (queue active)". */
static void log_active(const struct message *m)
{
	struct logline l;

	log_begin(&l, LOG_INFO, "active");
	log_kv(&l, "qid", "%s", m->qid);
	log_kv(&l, "from", "<%s>", m->env.sender);
	log_kv(&l, "size", "%llu", (unsigned long long)m->size);
	log_kv(&l, "nrcpt", "%zu", m->env.n_rcpts);
	log_end(&l);
}

/* Takes a queued message in; false when there is nothing to do for it
 * (or it is held already: a worker's notice can race a spool scan). */
static bool admit_message(struct delivery *d, const char *qid)
{
	struct message *m;
	bool again;

	if (d->stopping || holds_message(d, qid))
		return false;
	if ((m = message_load(d, qid, &again)) == NULL) {
		if (again)
			remember_unread(d, qid);
		return false;
	}
	if (!message_pending(m) && !owes_dsn(m)) {
		log_removed(qid); /* settled before a restart */
		queue_remove(d->queue, qid);
		message_free(m);
		return false;
	}
	m->next = d->messages;
	d->messages = m;
	log_active(m);
	return true;
}

/* Admission records and kicks; the run comes from the loop. */
void delivery_add(struct delivery *d, const char *qid)
{
	if (admit_message(d, qid))
		kick(d);
}

/* Every message first, then one run: a run per message would walk the
 * whole queue each time (quadratic in its length, on the loop). */
void delivery_load(struct delivery *d)
{
	size_t n;
	char **ids = queue_list(d->queue, &n);

	for (size_t i = 0; i < n; i++) {
		admit_message(d, ids[i]);
		free(ids[i]);
	}
	free(ids);
	kick(d);
}

void delivery_flush_message(struct delivery *d, const char *qid)
{
	for (struct message *m = d->messages; m != NULL; m = m->next) {
		if (strcmp(m->qid, qid) != 0)
			continue;
		m->next_attempt = 0;
		memset(m->retry_at, 0, m->env.n_rcpts * sizeof(*m->retry_at));
		kick(d);
	}
}

void delivery_flush(struct delivery *d)
{
	for (struct message *m = d->messages; m != NULL; m = m->next) {
		m->next_attempt = 0;
		m->active_at = ev_time();
		memset(m->retry_at, 0, m->env.n_rcpts * sizeof(*m->retry_at));
	}
	kick(d);
}
