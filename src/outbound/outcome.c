/*
 * outcome: formats and writes the delivery log lines (moved whole from
 * delivery.c when it was split). Timestamps are wall time (ev_time), as
 * the queue ids are; stamps from two processes' clocks are kept in order
 * so that delays= adds up. Must not change a message.
 */
#include "outbound/outcome.h"

#include "core/log.h"
#include "net/dane.h"
#include "outbound/smtp_client.h"
#include "proto/log_format.h"
#include "spool/queue.h"

#include <ctype.h>
#include <ev.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

void outcome_status_code(const char *reply, const char *fallback, char *out,
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
double outcome_arrival(const struct message *m)
{
	double t = queue_id_time(m->qid);
	double off = t - (double)m->env.arrival;

	return off > -86400 && off < 86400 ? t : (double)m->env.arrival;
}

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

struct timing outcome_timing_now(const struct message *m)
{
	double now = ev_time();

	return (struct timing){outcome_arrival(m), now, now, 0, now};
}

void outcome_log(const struct message *m, size_t i, const char *status,
		 const char *relay, const struct timing *t, const char *level,
		 const struct client_result *r, const char *reply,
		 const char *reason)
{
	bool sent = strcmp(status, "sent") == 0;
	bool bounced = strcmp(status, "bounced") == 0;
	char dsn[16];
	struct logline l;

	outcome_status_code(reply, sent ? "2.0.0" : bounced ? "5.0.0" : "4.0.0",
			    dsn, sizeof(dsn));
	log_begin(&l, sent || bounced ? LOG_INFO : LOG_WARN, "delivery");
	log_kv(&l, "qid", "%s", m->qid);
	log_kv(&l, "from", "<%s>", m->env.sender);
	log_kv(&l, "to", "<%s>", m->env.rcpts[i]);
	log_kv(&l, "relay", "%s", relay[0] ? relay : "none");
	log_delays(&l, t);
	log_kv(&l, "dsn", "%s", dsn);
	log_kv(&l, "size", "%llu", (unsigned long long)m->size);
	if (level != NULL)
		log_kv(&l, "tls", "%s:%s", level,
		       r && r->tls_version[0] ? r->tls_version : "none");
	if (r && r->tls_version[0])
		log_kv(&l, "verified", "%s",
		       r->dane != DANE_AUTH_NONE ? dane_auth_name(r->dane)
		       : r->tls_verified	 ? "yes"
						 : "no");
	if (r)
		log_kv(&l, "reused", "%s", r->reused ? "yes" : "no");
	log_kv(&l, "status", "%s", status);
	if (level != NULL)
		log_kv(&l, "attempt", "%u", m->tries[i] + 1);
	log_kv(&l, "reply", "%s", reply);
	if (!sent && reason != NULL)
		log_kv(&l, "reason", "%s", reason);
	log_end(&l);
}

void outcome_log_active(const struct message *m)
{
	struct logline l;

	log_begin(&l, LOG_INFO, "active");
	log_kv(&l, "qid", "%s", m->qid);
	log_kv(&l, "from", "<%s>", m->env.sender);
	log_kv(&l, "size", "%llu", (unsigned long long)m->size);
	log_kv(&l, "nrcpt", "%zu", m->env.n_rcpts);
	log_end(&l);
}

void outcome_log_bounce(const struct message *m, const char *dsn_qid,
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

void outcome_log_expired(const struct message *m, unsigned n)
{
	struct logline l;

	log_begin(&l, LOG_WARN, "expired");
	log_kv(&l, "qid", "%s", m->qid);
	log_kv(&l, "from", "<%s>", m->env.sender);
	log_kv(&l, "nrcpt", "%u", n);
	log_end(&l);
}

void outcome_log_removed(const char *qid)
{
	struct logline l;

	log_begin(&l, LOG_INFO, "removed");
	log_kv(&l, "qid", "%s", qid);
	log_end(&l);
}
