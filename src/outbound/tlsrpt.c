/*
 * tlsrpt.c: the queue manager's TLS reporting behind tlsrpt.h. It owns the
 * counts not yet written (at most MAX_PENDING keys; a full table is
 * written at once), its three timers (the minute's flush, the daily run,
 * a run soon: at start, on request, after a temporary failure) and the
 * report being made, one domain at a time: TXT lookup, then the report
 * queued, then the next domain. DNS answers come back by id, in the upper
 * half of the id space (delivery's job ids count up from 1), so a job's
 * dns_cancel never reaches a lookup of ours.
 *
 * Reports go from the null sender: a report that cannot be delivered is
 * not bounced back to us (nor is it retried past max_queue_lifetime).
 */
#include "outbound/tlsrpt.h"

#include "core/config.h"
#include "core/log.h"
#include "net/dns.h"
#include "outbound/delivery.h"
#include "policy/generation.h"
#include "proto/envelope.h"
#include "proto/tlsrpt_report.h"
#include "spool/queue.h"
#include "spool/tlsrpt_store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

enum {
	MAX_PENDING = 128,	/* keys counted between flushes */
	FLUSH_EVERY = 60,	/* seconds */
	RETRY_AFTER = 3600,	/* a day not reported for the moment */
	RR_TXT = 16,
	DAY = 86400,
};

static const uint64_t DNS_ID_BASE = 1ULL << 63;

struct counted {
	char date[TLSRPT_DATE_LEN + 1];
	struct tlsrpt_entry e;
};

/* One (date, domain) to report. */
struct report_job {
	struct report_job *next;
	char date[TLSRPT_DATE_LEN + 1];
	char domain[256];
	bool partial; /* today's, asked for: up to now */
	char rua[TLSRPT_MAX_RUA * (TLSRPT_ADDR_MAX + 3)]; /* for the log */
};

enum run_state {
	RUN_IDLE,
	RUN_TXT,      /* the _smtp._tls lookup is out */
	RUN_QUEUEING, /* the report is with the sync thread */
};

struct tlsrpt {
	struct ev_loop *loop;
	struct queue *queue;
	struct dns *dns;
	struct generation *const *current;
	struct delivery *delivery;
	struct counted *pending;
	size_t n_pending;
	bool write_failed; /* logged once until a flush succeeds */
	ev_timer flush_timer;
	ev_periodic daily;
	ev_timer soon;
	struct report_job *jobs; /* to do, in order; jobs->... */
	struct report_job *job;	 /* the one under way */
	enum run_state state;
	uint64_t dns_id, lookups;
	bool retry; /* a report failed for the moment: run again later */
	unsigned queued, none, deferred; /* this run's reports, for its log */
	bool stopping;
};

static const struct config *cfg_of(const struct tlsrpt *t)
{
	return (*t->current)->cfg;
}

static bool enabled(const struct tlsrpt *t)
{
	return t != NULL && !t->stopping && cfg_of(t)->tlsrpt_enable;
}

static void today(char *out)
{
	tlsrpt_date_of((long long)ev_time(), out);
}

/* ---- counting -------------------------------------------------------------- */

static void copy_field(char *dst, size_t len, const char *src)
{
	snprintf(dst, len, "%s", src != NULL ? src : "");
}

static void fill_entry(struct tlsrpt_entry *e, const struct tlsrpt_policy *p,
		       const struct tlsrpt_session *s)
{
	memset(e, 0, sizeof(*e));
	e->count = 1;
	e->type = p->type;
	copy_field(e->policy_domain, sizeof(e->policy_domain), p->domain);
	copy_field(e->policy_strings, sizeof(e->policy_strings), p->strings);
	copy_field(e->mx_hosts, sizeof(e->mx_hosts), p->mx_hosts);
	if (s == NULL)
		return;
	copy_field(e->receiving_mx, sizeof(e->receiving_mx), s->mx_host);
	copy_field(e->receiving_ip, sizeof(e->receiving_ip), s->receiving_ip);
	copy_field(e->sending_ip, sizeof(e->sending_ip), s->sending_ip);
}

static void count(struct tlsrpt *t, const struct tlsrpt_entry *e)
{
	char date[TLSRPT_DATE_LEN + 1];

	if (!tlsrpt_store_domain_ok(e->policy_domain))
		return; /* not a name the spool takes (nor DNS) */
	today(date);
	for (size_t i = 0; i < t->n_pending; i++) {
		struct counted *c = &t->pending[i];

		if (strcmp(c->date, date) == 0 &&
		    tlsrpt_entry_same_key(&c->e, e)) {
			c->e.count++;
			return;
		}
	}
	if (t->n_pending == MAX_PENDING)
		tlsrpt_flush(t);
	memcpy(t->pending[t->n_pending].date, date, sizeof(date));
	t->pending[t->n_pending++].e = *e;
	if (!ev_is_active(&t->flush_timer)) {
		ev_timer_set(&t->flush_timer, FLUSH_EVERY, 0);
		ev_timer_start(t->loop, &t->flush_timer);
	}
}

void tlsrpt_success(struct tlsrpt *t, const struct tlsrpt_policy *policy,
		    const struct tlsrpt_session *s)
{
	struct tlsrpt_entry e;

	if (!enabled(t))
		return;
	fill_entry(&e, policy, s);
	/* successes are counted per policy: the session's addresses are
	 * failure-details only */
	e.receiving_mx[0] = e.receiving_ip[0] = e.sending_ip[0] = '\0';
	count(t, &e);
}

void tlsrpt_failure(struct tlsrpt *t, const struct tlsrpt_policy *policy,
		    const struct tlsrpt_session *s, enum tlsrpt_result result,
		    const char *reason)
{
	struct tlsrpt_entry e;

	if (!enabled(t))
		return;
	fill_entry(&e, policy, s);
	e.failure = true;
	e.result = result;
	copy_field(e.reason, sizeof(e.reason), reason);
	count(t, &e);
}

static void log_write_failure(struct tlsrpt *t, const struct counted *c)
{
	if (t->write_failed)
		return;
	t->write_failed = true;
	log_msg(LOG_ERR, "tlsrpt", "cannot record TLS-RPT counts in "
		"%s/tlsrpt/%s/%s: %s; counts are lost until it works again",
		cfg_of(t)->spool, c->date, c->e.policy_domain,
		strerror(errno));
}

void tlsrpt_flush(struct tlsrpt *t)
{
	static char line[TLSRPT_LINE_MAX];
	bool ok = true;

	if (t == NULL)
		return;
	ev_timer_stop(t->loop, &t->flush_timer);
	for (size_t i = 0; i < t->n_pending; i++) {
		const struct counted *c = &t->pending[i];
		size_t n = tlsrpt_entry_format(&c->e, line, sizeof(line));

		if (n > 0 && !tlsrpt_store_append(cfg_of(t)->spool, c->date,
						  c->e.policy_domain, line, n)) {
			log_write_failure(t, c);
			ok = false;
		}
	}
	if (ok)
		t->write_failed = false;
	t->n_pending = 0;
}

static void on_flush_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	tlsrpt_flush(w->data);
}

/* ---- one report -------------------------------------------------------- */

static void next_job(struct tlsrpt *t);

static void log_report(struct tlsrpt *t, const char *status, const char *qid,
		       const char *rua, const char *why)
{
	const struct report_job *j = t->job;
	struct logline l;

	if (strcmp(status, "queued") == 0)
		t->queued++;
	else if (strcmp(status, "none") == 0)
		t->none++;
	else
		t->deferred++;
	log_begin(&l, strcmp(status, "deferred") == 0 ? LOG_WARN : LOG_INFO,
		  "tlsrpt");
	log_kv(&l, "domain", "%s", j->domain);
	log_kv(&l, "date", "%s", j->date);
	log_kv(&l, "status", "%s", status);
	if (qid != NULL)
		log_kv(&l, "qid", "%s", qid);
	if (rua != NULL)
		log_kv(&l, "rua", "%s", rua);
	if (why != NULL)
		log_kv(&l, "reason", "%s", why);
	log_end(&l);
}

/* Nobody to report this day's counts to: they are settled as they are. */
static void settle_unreported(struct tlsrpt *t, const char *why)
{
	tlsrpt_store_mark_sent(cfg_of(t)->spool, t->job->date, t->job->domain);
	log_report(t, "none", NULL, NULL, why);
}

static void on_report_queued(void *owner, bool ok, const char *qid)
{
	struct tlsrpt *t = owner;

	if (ok) {
		tlsrpt_store_mark_sent(cfg_of(t)->spool, t->job->date,
				       t->job->domain);
		log_report(t, "queued", qid, t->job->rua, NULL);
		if (!t->stopping)
			delivery_add(t->delivery, qid);
	} else {
		log_report(t, "deferred", NULL, NULL,
			   "the report did not reach the spool");
		t->retry = true;
	}
	if (!t->stopping)
		next_job(t);
}

/* The names the report goes out under. */
struct names {
	const char *submitter, *from;
	char from_buf[300];
	char unique[QUEUE_ID_LEN + 1];
	char report_id[400];
	char message_id[320];
	char filename[700];
};

static void make_names(struct tlsrpt *t, struct names *n, long long begin,
		       long long end)
{
	const struct config *cfg = cfg_of(t);

	n->submitter = cfg->tlsrpt_submitter ? cfg->tlsrpt_submitter
					     : cfg->hostname;
	snprintf(n->from_buf, sizeof(n->from_buf), "tlsrpt-noreply@%s",
		 n->submitter);
	n->from = cfg->tlsrpt_from ? cfg->tlsrpt_from : n->from_buf;
	queue_new_id(t->queue, n->unique);
	snprintf(n->report_id, sizeof(n->report_id), "%s.%s.%s@%s",
		 t->job->date, t->job->domain, n->unique, n->submitter);
	snprintf(n->message_id, sizeof(n->message_id), "tlsrpt.%s@%s",
		 n->unique, cfg->hostname);
	tlsrpt_filename(n->submitter, t->job->domain, begin, end, n->unique,
			n->filename, sizeof(n->filename));
}

/* The mail for the counts read; NULL when it cannot be made. */
static char *make_mail(struct tlsrpt *t, const struct tlsrpt_entry *e,
		       size_t n, const struct tlsrpt_rua *rua, size_t *len)
{
	const struct config *cfg = cfg_of(t);
	struct names nm;
	struct tlsrpt_meta meta;
	struct tlsrpt_mail m = {0};
	const char *to[TLSRPT_MAX_RUA];
	long long begin;
	size_t json_len = 0;
	char *json, *mail = NULL;

	tlsrpt_date_start(t->job->date, &begin);
	meta = (struct tlsrpt_meta){
		.organization = cfg->tlsrpt_organization
					? cfg->tlsrpt_organization
					: cfg->hostname,
		.contact = cfg->tlsrpt_contact ? cfg->tlsrpt_contact
					       : cfg->postmaster,
		.begin = begin,
		.end = t->job->partial ? (long long)ev_time() : begin + DAY - 1};
	make_names(t, &nm, meta.begin, meta.end);
	meta.report_id = nm.report_id;
	if ((json = tlsrpt_report_json(&meta, e, n, &json_len)) == NULL)
		return NULL;
	for (size_t i = 0; i < rua->n; i++)
		to[i] = rua->addr[i];
	m = (struct tlsrpt_mail){
		.from = nm.from, .to = to, .n_to = rua->n,
		.domain = t->job->domain, .submitter = nm.submitter,
		.report_id = nm.report_id, .message_id = nm.message_id,
		.filename = nm.filename, .begin = meta.begin, .end = meta.end,
		.now = (long long)ev_time()};
	tlsrpt_totals(e, n, &m.ok, &m.failed);
	m.gz = tlsrpt_gzip(json, json_len, &m.gz_len);
	if (m.gz != NULL)
		mail = tlsrpt_mail_build(&m, len);
	free((void *)m.gz);
	free(json);
	return mail;
}

static void rua_text(const struct tlsrpt_rua *rua, char *out, size_t len)
{
	size_t o = 0;

	out[0] = '\0';
	for (size_t i = 0; i < rua->n && o < len; i++)
		o += (size_t)snprintf(out + o, len - o, "%s<%s>",
				      i ? "," : "", rua->addr[i]);
}

/* Builds the report for the job and queues it; false when it did not go
 * to the sync thread (the job is over then). */
static bool queue_report(struct tlsrpt *t, const struct tlsrpt_rua *rua)
{
	const struct config *cfg = cfg_of(t);
	size_t n, dropped, len = 0;
	struct tlsrpt_entry *e = tlsrpt_store_read(
	    cfg->spool, t->job->date, t->job->domain, TLSRPT_UNSENT, &n,
	    &dropped);
	char *rcpts[TLSRPT_MAX_RUA], *mail;
	struct envelope env = {.sender = "", .rcpts = rcpts, .n_rcpts = rua->n,
			       .arrival = (long long)ev_time(),
			       .helo = cfg->hostname};
	bool ok;

	if (e == NULL) {
		log_report(t, "none", NULL, NULL, "no counts");
		return false;
	}
	mail = make_mail(t, e, n, rua, &len);
	free(e);
	for (size_t i = 0; i < rua->n; i++)
		rcpts[i] = (char *)rua->addr[i];
	snprintf(env.client, sizeof(env.client), "local");
	rua_text(rua, t->job->rua, sizeof(t->job->rua));
	if (dropped > 0)
		log_msg(LOG_WARN, "tlsrpt", "%s/tlsrpt/%s/%s: %zu lines "
			"could not be read or did not fit", cfg->spool,
			t->job->date, t->job->domain, dropped);
	ok = mail != NULL &&
	     queue_submit(t->queue, &env, mail, len, on_report_queued, t);
	free(mail);
	if (!ok) {
		log_report(t, "deferred", NULL, t->job->rua,
			   "cannot make or queue the report");
		t->retry = true;
	}
	return ok;
}

static void on_txt(uint64_t id, const struct dns_rrset *rs, void *arg)
{
	struct tlsrpt *t = arg;
	struct tlsrpt_rua rua;
	const char *why;

	if (t->stopping || t->state != RUN_TXT || id != t->dns_id)
		return;
	if (rs->status == DNS_TEMPFAIL) {
		log_report(t, "deferred", NULL, NULL, rs->error);
		t->retry = true;
	} else if (rs->status == DNS_PERMFAIL) {
		settle_unreported(t, "no _smtp._tls record (NXDOMAIN)");
	} else if (tlsrpt_record_pick(rs->data, rs->len, rs->n, &rua, &why) !=
		   TLSRPT_RECORD_FOUND) {
		settle_unreported(t, why);
	} else if (rua.n == 0) {
		settle_unreported(t, "no mailto: in rua= (https: is not "
				     "supported)");
	} else if (queue_report(t, &rua)) {
		t->state = RUN_QUEUEING;
		return;
	}
	next_job(t);
}

/* ---- runs ----------------------------------------------------------------- */

static void schedule_soon(struct tlsrpt *t, double after);

static void run_done(struct tlsrpt *t)
{
	const struct config *cfg = cfg_of(t);
	char oldest[TLSRPT_DATE_LEN + 1];

	t->state = RUN_IDLE;
	if (t->queued + t->none + t->deferred > 0) {
		struct logline l;

		log_begin(&l, LOG_INFO, "tlsrpt_run");
		log_kv(&l, "queued", "%u", t->queued);
		log_kv(&l, "none", "%u", t->none);
		log_kv(&l, "deferred", "%u", t->deferred);
		log_end(&l);
	}
	t->queued = t->none = t->deferred = 0;
	tlsrpt_date_of((long long)(ev_time() - cfg->tlsrpt_keep), oldest);
	tlsrpt_store_prune(cfg->spool, oldest);
	if (t->retry) {
		t->retry = false;
		schedule_soon(t, RETRY_AFTER);
	}
}

static void next_job(struct tlsrpt *t)
{
	char name[300];

	free(t->job);
	t->job = t->jobs;
	if (t->job == NULL) {
		run_done(t);
		return;
	}
	t->jobs = t->job->next;
	t->state = RUN_TXT;
	t->dns_id = DNS_ID_BASE | ++t->lookups;
	snprintf(name, sizeof(name), "_smtp._tls.%s", t->job->domain);
	dns_rrset(t->dns, name, RR_TXT, t->dns_id, on_txt, t);
}

static void add_job(struct tlsrpt *t, const char *date, const char *domain,
		    bool partial)
{
	struct report_job *j = calloc(1, sizeof(*j)), **tail = &t->jobs;

	if (j == NULL)
		return;
	snprintf(j->date, sizeof(j->date), "%s", date);
	snprintf(j->domain, sizeof(j->domain), "%s", domain);
	j->partial = partial;
	while (*tail != NULL) {
		if (strcmp((*tail)->date, date) == 0 &&
		    strcmp((*tail)->domain, domain) == 0) {
			free(j);
			return;
		}
		tail = &(*tail)->next;
	}
	*tail = j;
}

static void add_day(struct tlsrpt *t, const char *date, bool partial)
{
	size_t n;
	char **domains =
	    tlsrpt_store_domains(cfg_of(t)->spool, date, true, &n);

	for (size_t i = 0; i < n; i++)
		add_job(t, date, domains[i], partial);
	tlsrpt_store_free_list(domains, n);
}

/* Every finished day with unreported counts, and `asked` (maybe today). */
static void run(struct tlsrpt *t, char **asked, size_t n_asked)
{
	char now[TLSRPT_DATE_LEN + 1];
	size_t n;
	char **days;

	if (!enabled(t))
		return;
	tlsrpt_flush(t);
	today(now);
	days = tlsrpt_store_days(cfg_of(t)->spool, &n);
	for (size_t i = 0; i < n; i++)
		if (strcmp(days[i], now) < 0)
			add_day(t, days[i], false);
	tlsrpt_store_free_list(days, n);
	for (size_t i = 0; i < n_asked; i++)
		add_day(t, asked[i], strcmp(asked[i], now) >= 0);
	if (t->state == RUN_IDLE)
		next_job(t);
}

void tlsrpt_take_requests(struct tlsrpt *t)
{
	size_t n;
	char **asked;

	if (!enabled(t))
		return;
	tlsrpt_flush(t); /* queue flush: the counts reach the spool now */
	asked = tlsrpt_store_take_requests(cfg_of(t)->spool, &n);
	if (n > 0) {
		log_msg(LOG_INFO, "tlsrpt", "reporting %s%s now, as asked "
			"(tlsrpt --send)", asked[0], n > 1 ? " and more" : "");
		run(t, asked, n);
	}
	tlsrpt_store_free_list(asked, n);
}

static void on_daily(struct ev_loop *loop, ev_periodic *w, int revents)
{
	(void)loop;
	(void)revents;
	run(w->data, NULL, 0);
}

static void on_soon(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	run(w->data, NULL, 0);
}

static void schedule_soon(struct tlsrpt *t, double after)
{
	ev_timer_stop(t->loop, &t->soon);
	ev_timer_set(&t->soon, after, 0);
	ev_timer_start(t->loop, &t->soon);
}

/* A moment in [0, limit] seconds: reporters should not all send at
 * midnight sharp. */
static double random_delay(double limit)
{
	uint32_t r = 0;

	if (limit <= 0 ||
	    getrandom(&r, sizeof(r), GRND_NONBLOCK) != sizeof(r))
		return 0;
	return limit * ((double)r / (double)UINT32_MAX);
}

/* ---- life -------------------------------------------------------------- */

struct tlsrpt *tlsrpt_new(struct ev_loop *loop, struct queue *q,
			  struct dns *dns, struct generation *const *current,
			  struct delivery *d)
{
	struct tlsrpt *t = calloc(1, sizeof(*t));
	double delay;

	if (t == NULL ||
	    (t->pending = calloc(MAX_PENDING, sizeof(*t->pending))) == NULL) {
		free(t);
		return NULL;
	}
	*t = (struct tlsrpt){.loop = loop, .queue = q, .dns = dns,
			     .current = current, .delivery = d,
			     .pending = t->pending};
	ev_init(&t->flush_timer, on_flush_timer);
	t->flush_timer.data = t;
	ev_init(&t->soon, on_soon);
	t->soon.data = t;
	delay = random_delay(cfg_of(t)->tlsrpt_send_delay);
	/* after each UTC midnight (epoch multiples of a day), plus delay */
	ev_periodic_init(&t->daily, on_daily, delay, DAY, 0);
	t->daily.data = t;
	/* always: a reload may turn [tlsrpt] enable on; run() checks */
	ev_periodic_start(loop, &t->daily);
	schedule_soon(t, delay); /* days left from before a restart */
	return t;
}

void tlsrpt_stop(struct tlsrpt *t)
{
	if (t == NULL || t->stopping)
		return;
	tlsrpt_flush(t);
	t->stopping = true;
	ev_timer_stop(t->loop, &t->flush_timer);
	ev_timer_stop(t->loop, &t->soon);
	ev_periodic_stop(t->loop, &t->daily);
	if (t->state == RUN_TXT)
		dns_cancel(t->dns, t->dns_id);
}

void tlsrpt_free(struct tlsrpt *t)
{
	if (t == NULL)
		return;
	tlsrpt_stop(t);
	while (t->jobs != NULL) {
		struct report_job *next = t->jobs->next;

		free(t->jobs);
		t->jobs = next;
	}
	free(t->job);
	free(t->pending);
	free(t);
}
