/*
 * attempt: the jobs. Owns each job (its recipient list, queue file — in
 * memory, taken from the message's first read or read again, or its
 * descriptor when big — smtp_client, DNS queries by id, the TLSA answers
 * of its hosts and generation reference) from attempt_new until job_done,
 * which frees it and then tells delivery.
 *
 * Outcomes per recipient (RFC 5321 §4.2.5, §4.5.4): 2xx → sent; 5xx →
 * bounced; 4xx, no connection, a TLS failure the level does not allow →
 * the next address or MX, then deferred, retried after retry_min doubling
 * per attempt to retry_max. "bounced" and "deferred" are appended to the
 * spool's state file before anything else happens; "sent" is held back to
 * the end of the job and not written at all when the message then goes
 * (a crash in between delivers that recipient again: a duplicate, never a
 * loss). A job reports what it learnt about its destination: success when
 * a host answered, failure when none could be reached. Each session is
 * counted for TLS reporting (outbound/tlsrpt, under the DANE, MTA-STS or
 * no policy that held it), unless the message is a TLS report. A
 * REQUIRETLS message (RFC 8689) goes only to hosts that proto/requiretls
 * finds authenticated; when every session refused it, its recipients
 * bounce with 5.7.30 (5.7.10 when TLS failed) rather than wait.
 */
#include "outbound/attempt.h"

#include "core/config.h"
#include "core/log.h"
#include "core/netaddr.h"
#include "core/stats.h"
#include "net/dane.h"
#include "net/dns.h"
#include "outbound/conncache.h"
#include "outbound/outcome.h"
#include "outbound/smtp_client.h"
#include "outbound/sts.h"
#include "outbound/tlsrpt.h"
#include "proto/requiretls.h"
#include "proto/dns_wire.h"
#include "proto/next_hop.h"
#include "policy/generation.h"
#include "policy/policy.h"
#include "spool/queue.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* How the connection to an MX host is authenticated (host_auth). */
enum host_auth {
	AUTH_LEVEL, /* as the level says */
	AUTH_DANE,  /* by its TLSA records (RFC 7672): plan_host said so */
	AUTH_STS,   /* verify, for the MX host name (RFC 8461 §4.2) */
	AUTH_SKIP,  /* not to be used: j->failure says why */
};

struct job {
	struct idmap_node node; /* c->jobs, by id */
	struct job *prev, *next; /* c->all */
	uint64_t id;
	struct attempt_ctx *c;
	struct message *m;
	struct entry *e;
	struct generation *gen;
	const char *domain; /* e->domain */
	size_t *index;	    /* recipients of m in this job */
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
	bool sts_mx_failed;  /* testing: that host is outside the policy,
				counted as its sessions' failure */
	bool no_tls;
	struct requiretls_hop requiretls; /* a REQUIRETLS message: what
					     the route says of its hosts */
	unsigned clients;	  /* sessions started in this job ... */
	unsigned rt_refusals;	  /* ... and those that could not take a
				     REQUIRETLS message (5.7.30, 5.7.10) */
	struct dns_tlsa *tlsa_of[DNS_MAX_HOSTS]; /* DANE: the TLSA answer of
						    each host; NULL: none */
	unsigned tlsa_wait;   /* TLSA lookups still out */
	bool dane_lookup;     /* ctx.dane is being looked up */
	enum dane_dest dane;  /* ctx.dane; UNKNOWN until looked up */
	bool use_tlsa;	      /* the current host authenticates by it */
	char dane_reason[256]; /* the last DANE failure, for the log */
	char sts_reason[256];  /* the last failure under an enforced
				  MTA-STS policy, for the log */
	bool answered;	   /* a host spoke SMTP */
	bool unreachable;  /* a host could not be reached, or was lost */
	struct queued_message file;
	struct smtp_client *client;
	double active_at;  /* the message's, when the job was planned */
	double handoff_at; /* the job began: routing, connecting ... */
	char relay[340];   /* host[ip]:port of the current try */
	char failure[800]; /* why the last try failed, for a deferral */
};

static double now_s(const struct job *j)
{
	return ev_now(j->c->loop);
}

/* ---- routes ------------------------------------------------------------ */

/* Where mail for `domain` goes (config_route: next_hop, relayhost, MX),
 * as the scheduler's destination: the next hop as Postfix writes it
 * ("[host]:port", "host:port"), or the domain itself (MX). */
void attempt_destination(const struct config *cfg, const char *domain,
			 char *out, size_t len)
{
	struct route rt;

	config_route(cfg, domain, strlen(domain), &rt);
	if (rt.hop != NULL)
		next_hop_format(rt.hop, out, len);
	else
		snprintf(out, len, "%s", domain);
}

/* ---- recording outcomes ------------------------------------------------ */

/* retry_min, doubling per attempt, up to retry_max (Postfix's
 * minimal_backoff_time / maximal_backoff_time); the queue command shows
 * the same. */
static double backoff(const struct config *cfg, unsigned attempts)
{
	return config_retry_delay(cfg, attempts);
}

static const char *state_word(enum rcpt_state st)
{
	return st == RCPT_SENT ? "sent" : st == RCPT_BOUNCED ? "bounced"
							    : "deferred";
}

static void log_rcpt(const struct job *j, size_t k, enum rcpt_state st,
		     const char *reply, const struct client_result *r)
{
	struct timing t = {outcome_arrival(j->m), j->active_at,
			   j->handoff_at, r ? r->setup_done : 0, ev_time()};

	outcome_log(j->m, j->index[k], state_word(st), j->relay, &t,
		    tls_level_name(j->level), r, reply,
		    j->dane_reason[0] != '\0' ? j->dane_reason
		    : j->sts_reason[0] != '\0' ? j->sts_reason
						: NULL);
}

/* One recipient's outcome: spool state first ("sent" at the job's end, see
 * the top of the file), then memory and the log. */
static void record(struct job *j, size_t k, enum rcpt_state st,
		   const char *reply, const struct client_result *r)
{
	struct message *m = j->m;
	size_t i = j->index[k];

	if (st == RCPT_SENT)
		m->unsaved[i] = true;
	else
		message_append_state(j->c->queue, m, i, st, reply);
	log_rcpt(j, k, st, reply, r);
	stats_add(st == RCPT_SENT      ? STAT_SENT
		  : st == RCPT_BOUNCED ? STAT_BOUNCED
				       : STAT_DEFERRED);
	m->tries[i]++;
	if (st == RCPT_PENDING)
		m->retry_at[i] = now_s(j) + backoff(j->gen->cfg, m->tries[i]);
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

/* ---- the end of a job -------------------------------------------------- */

static void job_free(struct job *j)
{
	struct attempt_ctx *c = j->c;

	idmap_remove(&c->jobs, &j->node);
	if (j->prev != NULL)
		j->prev->next = j->next;
	else
		c->all = j->next;
	if (j->next != NULL)
		j->next->prev = j->prev;
	if (j->client != NULL)
		smtp_client_abort(j->client);
	dns_cancel(c->dns, j->id);
	for (size_t i = 0; i < DNS_MAX_HOSTS; i++)
		free(j->tlsa_of[i]);
	if (j->sts_wait)
		sts_cancel(c->sts, j->id);
	queued_message_close(&j->file);
	generation_release(j->gen);
	j->m->jobs--;
	free(j->index);
	free(j->rcpts);
	free(j);
}

static void job_done(struct job *j)
{
	struct attempt_ctx *c = j->c;
	struct entry *e = j->e;
	enum sched_feedback fb = j->answered	  ? SCHED_SUCCESS
				 : j->unreachable ? SCHED_FAILURE
						  : SCHED_NEUTRAL;
	char why[sizeof(j->failure)];

	memcpy(why, j->failure, sizeof(why));
	job_free(j);
	c->done(c->owner, e, fb, why);
}

/* Under an enforced MTA-STS policy every deferral says so. */
void attempt_defer(struct job *j, const char *why)
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

/* ---- trying hosts ------------------------------------------------------ */

static void try_next(struct job *j);
static void route_exhausted(struct job *j);
static void job_go(struct job *j);

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

/* What the outcome says about the destination (for its window and its
 * dead-or-alive state). */
static void learn(struct job *j, enum client_outcome o)
{
	if (o == CLIENT_CONNECT_FAILED || o == CLIENT_LOST)
		j->unreachable = true;
	else
		j->answered = true;
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
		tlsa_strings(j->tlsa_of[j->host], t->strings,
			     sizeof(t->strings));
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
	const struct dns_tlsa *t = j->tlsa_of[j->host];
	bool lookup_failed = t != NULL && t->status == DNS_TLSA_FAILED;
	struct tlsrpt_policy p = {.type = TLSRPT_POLICY_TLSA,
				  .domain = j->domain, .mx_hosts = h->name};
	struct tlsrpt_session s = {.mx_host = h->name};

	if (j->m->tlsrpt_report)
		return; /* a report's own sessions: RFC 8460 §5.3.1 */
	tlsrpt_failure(j->c->tlsrpt, &p, &s,
		       lookup_failed ? TLSRPT_DNSSEC_INVALID
				     : TLSRPT_DANE_REQUIRED,
		       lookup_failed ? t->error : NULL);
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

	if (j->m->tlsrpt_report)
		return;
	tlsrpt_policy_of(j, &p, &t);
	if (r != NULL) {
		sockaddr_ip_text(&j->route.hosts[j->host].addrs[j->addr], ip,
				 sizeof(ip));
		sess.receiving_ip = ip;
		sess.sending_ip = r->local_ip;
	}
	tlsrpt_failure(j->c->tlsrpt, &p, &sess, result, why);
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

	if (j->c->tlsrpt == NULL || j->m->tlsrpt_report ||
	    r->tls_try == TLS_TRY_NONE ||
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
		tlsrpt_success(j->c->tlsrpt, &p, &sess);
		break;
	case TLS_TRY_NOT_OFFERED:
		tlsrpt_failure(j->c->tlsrpt, &p, &sess,
			       TLSRPT_STARTTLS_NOT_SUPPORTED,
			       "STARTTLS not offered");
		break;
	case TLS_TRY_REFUSED:
		tlsrpt_failure(j->c->tlsrpt, &p, &sess,
			       TLSRPT_STARTTLS_NOT_SUPPORTED,
			       r->starttls_refused[0] ? r->starttls_refused
						      : r->reply);
		break;
	case TLS_TRY_FAILED:
		tlsrpt_failure(j->c->tlsrpt, &p, &sess,
			       tlsrpt_classify_tls_error(r->reply), r->reply);
		break;
	case TLS_TRY_DANE_FAILED: /* no TLSA record matched */
		tlsrpt_failure(j->c->tlsrpt, &p, &sess, TLSRPT_TLSA_INVALID,
			       r->reply);
		break;
	}
}

/* RFC 8689: a host that cannot take a REQUIRETLS message (no TLS, not
 * authenticated, no REQUIRETLS keyword) is passed over like a failed one;
 * when every host was, the recipients bounce (try_next). */
static bool requiretls_refused(struct job *j, const struct client_result *r)
{
	bool tls_failure = r->outcome == CLIENT_TLS_NOT_OFFERED ||
			   r->outcome == CLIENT_TLS_FAILED;

	if (!j->m->env.requiretls ||
	    (r->outcome != CLIENT_REQUIRETLS && !tls_failure))
		return false;
	j->rt_refusals++;
	/* RFC 8689 §4.2.1: 5.7.10 when no TLS session could be had, 5.7.30
	 * when the hop is not authenticated or does not offer REQUIRETLS */
	if (tls_failure)
		snprintf(j->failure, sizeof(j->failure),
			 "5.7.10 REQUIRETLS needs a TLS session: %s: TLS: %s",
			 j->relay, r->reply);
	else
		snprintf(j->failure, sizeof(j->failure),
			 "5.7.30 REQUIRETLS support required: %s: %s",
			 j->relay, r->reply);
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

static void sts_failed(struct job *j, const char *mx,
		       const struct client_result *r,
		       enum tlsrpt_result result, const char *why)
{
	struct sts_failure f = {.domain = j->domain, .mx = mx,
				.relay = j->relay, .qid = j->m->qid,
				.result = result, .reason = why};

	sts_report(j->c->sts, &j->sts, &f);
	report_sts_failure(j, mx, r, result, why);
	if (sts_enforced(j))
		snprintf(j->sts_reason, sizeof(j->sts_reason), "%s", why);
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

	j->sts_mx_failed = false;
	if (!sts_watched(j))
		return AUTH_LEVEL;
	if (sts_mx_allowed(&j->sts, j->domain, h->name, why, sizeof(why)))
		return sts_enforced(j) ? AUTH_STS : AUTH_LEVEL;
	sts_failed(j, h->name, NULL, TLSRPT_VALIDATION_FAILURE, why);
	j->sts_mx_failed = true;
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

	if (r->reused || j->m->tlsrpt_report)
		return; /* counted when it was new; a report is not */
	tlsrpt_policy_of(j, &p, &t);
	tlsrpt_success(j->c->tlsrpt, &p, NULL);
}

/* A session under a watched policy: counted, and a failure reported. The
 * plaintext retry of may after a failed handshake is not a session of
 * its own; nor is one to a host outside a testing policy another result
 * (host_auth counted its failure: one result a session, RFC 8460 §4.2). */
static void sts_session(struct job *j, const struct client_result *r)
{
	enum tlsrpt_result result;
	const char *why;

	if (!sts_watched(j) || j->no_tls || j->sts_mx_failed ||
	    r->outcome == CLIENT_CONNECT_FAILED)
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
	learn(j, r->outcome);
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

/* Looks up the TLSA RRset of host i (answered in on_tlsa). A host
 * without a TLSA name gets a failed answer at once. False when out of
 * memory. */
static bool ask_tlsa(struct job *j, size_t i)
{
	const struct dns_host *h = &j->route.hosts[i];
	unsigned port = sockaddr_port(&h->addrs[0]);
	char qname[DNS_NAME_MAX + 1];

	if (tlsa_qname(h->name, port, qname, sizeof(qname))) {
		dns_tlsa(j->c->dns, h->name, port, j->id, on_tlsa, j->c);
		j->tlsa_wait++;
		return true;
	}
	if ((j->tlsa_of[i] = calloc(1, sizeof(*j->tlsa_of[i]))) == NULL)
		return false;
	j->tlsa_of[i]->status = DNS_TLSA_FAILED;
	snprintf(j->tlsa_of[i]->error, sizeof(j->tlsa_of[i]->error),
		 "no TLSA name for %.150s port %u", h->name, port);
	return true;
}

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
	if (wanted && j->tlsa_of[j->host] == NULL) {
		if (!ask_tlsa(j, j->host)) {
			attempt_defer(j, "4.3.0 out of memory");
			return false;
		}
		if (j->tlsa_wait > 0)
			return false;
	}
	switch (dane_plan(j->level, &j->route, h,
			  wanted ? j->tlsa_of[j->host] : NULL, why,
			  sizeof(why))) {
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
 * every session refused (RFC 8689 §4.2.1): then it bounces, 5.7.30 or
 * 5.7.10. */
static void route_exhausted(struct job *j)
{
	if (j->rt_refusals > 0 && j->rt_refusals == j->clients) {
		record_all(j, RCPT_BOUNCED, j->failure, NULL);
		job_done(j);
		return;
	}
	attempt_defer(j, j->failure[0] ? j->failure
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
		.tlsa = j->use_tlsa ? j->tlsa_of[j->host]->records : NULL,
		.n_tlsa = j->use_tlsa ? j->tlsa_of[j->host]->n_records : 0,
		.helo = cfg->hostname, .level = j->conn_level,
		.tls = level_config(j), .no_tls = j->no_tls,
		.cert_check = sts_watched(j) && auth == AUTH_LEVEL
				      ? &j->gen->clients
				      : NULL,
		.sender = j->m->env.sender, .rcpts = j->rcpts, .n_rcpts = j->n,
		.body_fd = j->file.fd,
		.body_data = j->file.data != NULL
				     ? j->file.data + j->file.body_offset
				     : NULL,
		.body_offset = j->file.body_offset,
		.body_size = j->file.body_size, .body_type = j->m->env.body,
		.smtputf8 = j->m->env.smtputf8,
		.timeout = cfg->delivery_timeout,
		.cache = j->c->cache, .reuse_max = cfg->reuse_max_messages,
		.reuse_idle = cfg->reuse_idle_time, .epoch = j->gen->serial,
		.requiretls = j->m->env.requiretls ? &j->requiretls : NULL,
	};
	for (size_t k = 0; k < j->n; k++) {
		j->rcpts[k].code = 0;
		j->rcpts[k].reply[0] = '\0';
	}
	j->client = smtp_client_start(j->c->loop, &cj, on_client, j);
	j->clients += j->client != NULL;
	if (j->client == NULL)
		attempt_defer(j, "4.3.0 cannot start an SMTP client");
}

static struct job *find_job(struct attempt_ctx *c, uint64_t id)
{
	return (struct job *)idmap_first(&c->jobs, id); /* ids are unique */
}

/* Keeps a TLSA answer for the host whose TLSA name it is (DNS answers
 * carry the job's id only). False when out of memory. */
static bool keep_tlsa(struct job *j, const struct dns_tlsa *tlsa)
{
	char qname[DNS_NAME_MAX + 1];

	for (size_t i = 0; i < j->route.n_hosts; i++) {
		const struct dns_host *h = &j->route.hosts[i];

		if (j->tlsa_of[i] != NULL ||
		    !tlsa_qname(h->name, sockaddr_port(&h->addrs[0]), qname,
				sizeof(qname)) ||
		    strcmp(qname, tlsa->qname) != 0)
			continue;
		if ((j->tlsa_of[i] = malloc(sizeof(*tlsa))) == NULL)
			return false;
		*j->tlsa_of[i] = *tlsa;
	}
	return true;
}

/* A TLSA answer: the last of those ctx.dane waits for lets client_tls
 * decide (job_go); one the current host waits for is planned
 * (try_next). */
static void on_tlsa(uint64_t id, const struct dns_tlsa *tlsa, void *arg)
{
	struct job *j = find_job(arg, id);

	if (j == NULL)
		return;
	j->tlsa_wait--;
	if (!keep_tlsa(j, tlsa)) {
		if (j->tlsa_wait == 0)
			attempt_defer(j, "4.3.0 out of memory");
		return;
	}
	if (j->tlsa_wait > 0)
		return;
	if (j->dane_lookup)
		job_go(j);
	else
		try_next(j);
}

/* ctx.dane: the TLSA RRsets of every host DANE would look at, all at
 * once (RFC 7672 §2.2); kept for the connections. */
static bool ask_dane_state(struct job *j)
{
	for (size_t i = 0; i < j->route.n_hosts; i++)
		if (dane_wants_tlsa(TLS_LEVEL_DANE, &j->route,
				    &j->route.hosts[i]) &&
		    !ask_tlsa(j, i))
			return false;
	return true;
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
		if (j->dane_lookup && !ask_dane_state(j)) {
			attempt_defer(j, "4.3.0 out of memory");
			return;
		}
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
	f.dane = dane_dest_name(j->dane);
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
		attempt_defer(j, text);
		return;
	}
	log_qid_msg(LOG_WARN, "dropped", j->m->qid, "%s", why);
	if (error == EBADMSG)
		queue_quarantine(j->c->queue, j->m->qid);
	j->m->gone = true;
	job_done(j);
}

/* MTA-STS is looked up for the MX route of a domain name. */
static bool sts_applies(const struct job *j)
{
	char name[DNS_NAME_MAX + 1];

	return j->c->sts != NULL && j->source == ROUTE_MX &&
	       dns_name_copy(j->domain, name, sizeof(name));
}

/* The lookups are in: the level again if ctx.dane was looked up, or the
 * MTA-STS lookup found other than the first call was told; then the
 * first host. */
static void job_go(struct job *j)
{
	bool again = j->sts_changed || j->dane_lookup;

	if (j->route_wait || j->sts_wait || j->tlsa_wait > 0)
		return;
	if (j->dane_lookup) {
		j->dane = dane_destination(
			&j->route, (const struct dns_tlsa *const *)j->tlsa_of);
		j->dane_lookup = false;
	}
	if (again && !choose_level(j)) {
		attempt_defer(j, "4.3.0 policy failure (client_tls)");
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

/* Is ctx.dane looked up for this job? With a validating resolver, for a
 * route chosen by an MX lookup (not a [host] or an address): the TLSA
 * RRsets of its hosts, once the route is in. */
static bool wants_dane_state(const struct job *j)
{
	return dns_validating(j->c->dns) &&
	       (j->rt.hop == NULL || !j->rt.hop->no_mx);
}

/* client_tls is called at once with what is known of the domain's
 * MTA-STS policy and no ctx.dane (a policy error defers at once), and
 * again when the lookups that run beside the route's are in, if ctx.dane
 * was looked up (wants_dane_state) or the MTA-STS lookup found something
 * else; the last answer decides. */
void attempt_begin(struct job *j)
{
	struct envelope e;
	char err[200];

	if (j->n == 0) {
		job_done(j);
		return;
	}
	if (!message_take_file(j->m, ev_time(), &j->file)) {
		if (!queue_read_message(j->c->queue, j->m->qid, &e, &j->file,
					err, sizeof(err))) {
			job_unopened(j, errno, err);
			return;
		}
		envelope_free(&e);
	}
	config_route(j->gen->cfg, j->domain, strlen(j->domain), &j->rt);
	j->source = j->rt.source;
	j->tls_name = j->rt.tls_name;
	/* RFC 8689 §4.2.1: a name an MX answer gave needs DNSSEC or MTA-STS
	 * behind it; a configured [host] or address does not */
	j->requiretls.mx_lookup = j->rt.hop == NULL || !j->rt.hop->no_mx;
	j->dane_lookup = wants_dane_state(j);
	if (sts_applies(j))
		sts_peek(j->c->sts, j->domain, &j->sts);
	if (!choose_level(j)) {
		attempt_defer(j, "4.3.0 policy failure (client_tls)");
		return;
	}
	j->route_wait = true;
	if (sts_applies(j)) {
		j->sts_wait = true;
		sts_lookup(j->c->sts, j->domain, j->id, on_sts, j->c);
	}
	dns_route_for(j->c->dns, &j->rt, j->domain, j->id, on_route, j->c);
}

static struct job *job_alloc(size_t n)
{
	struct job *j = calloc(1, sizeof(*j));

	if (j == NULL || (j->index = calloc(n, sizeof(*j->index))) == NULL ||
	    (j->rcpts = calloc(n, sizeof(*j->rcpts))) == NULL) {
		if (j != NULL)
			free(j->index);
		free(j);
		return NULL;
	}
	return j;
}

struct job *attempt_new(struct attempt_ctx *c, struct entry *e, double now)
{
	struct message *m = e->m;
	struct job *j = job_alloc(m->env.n_rcpts);

	if (j == NULL)
		return NULL;
	j->id = ++c->next_id;
	j->c = c;
	j->m = m;
	j->e = e;
	j->domain = e->domain;
	j->gen = generation_retain(*c->current);
	j->file.fd = -1;
	j->handoff_at = ev_time();
	j->active_at = m->active_at < j->handoff_at ? m->active_at
						    : j->handoff_at;
	for (size_t i = 0; i < m->env.n_rcpts; i++) {
		if (m->retry_at[i] > now ||
		    !message_rcpt_in(m, i, j->gen->cfg->hostname, e->domain))
			continue;
		j->index[j->n] = i;
		j->rcpts[j->n++].address = m->env.rcpts[i];
	}
	idmap_insert(&c->jobs, &j->node, j->id);
	j->next = c->all;
	if (c->all != NULL)
		c->all->prev = j;
	c->all = j;
	m->jobs++;
	return j;
}

bool attempt_ctx_init(struct attempt_ctx *c)
{
	return idmap_init(&c->jobs);
}

void attempt_abort_all(struct attempt_ctx *c)
{
	while (c->all != NULL)
		job_free(c->all);
}

void attempt_ctx_free(struct attempt_ctx *c)
{
	attempt_abort_all(c);
	idmap_free(&c->jobs);
}
