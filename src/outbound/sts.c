/*
 * sts: MTA-STS policies for delivery, behind sts.h. One entry per domain
 * (at most MAX_ENTRIES, the least recently used idle one goes) owns its
 * cached policy, its waiters and the one operation in flight for it: the
 * TXT query, then (a new id, an expired or an old policy) the address
 * lookup of mta-sts.DOMAIN and the HTTPS fetch. Each operation has an id
 * of its own (OP_BASE and up, apart from delivery's job ids in the shared
 * resolver); an answer for an id no entry waits for is dropped.
 *
 * What answers a lookup (RFC 8461 §5.1):
 *  - TXT gives the cached policy's id, and it has not expired: the cache
 *    (and, past REFRESH_AFTER of its life, a fetch in the background);
 *  - TXT gives another id, or the cache expired: a fetch, then the new
 *    policy; a fetch that fails leaves the cached policy if it has not
 *    expired, else none (and no new fetch for RETRY_AFTER);
 *  - no TXT record, an invalid one, or no answer: the cached policy if it
 *    has not expired (an attacker who removes the record must not remove
 *    the policy), else none.
 * Waiters are answered from a zero timer, with the entry as it then is.
 */
#include "outbound/sts.h"

#include "core/config.h"
#include "core/log.h"
#include "net/dns.h"
#include "net/https.h"
#include "outbound/smtp_client.h"
#include "policy/generation.h"
#include "proto/dns_wire.h"
#include "spool/sts_cache.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define OP_BASE (1ULL << 62)
#define RETRY_AFTER 300.0	    /* a failed fetch: not again before */
#define REFRESH_AFTER 86400.0	    /* a cached policy is fetched again
				       after half its life, at most this */
#define FETCH_TIMEOUT_MS 60000L	    /* §3.3 suggests a minute */
#define CONNECT_TIMEOUT_MS 10000L

enum {
	MAX_ENTRIES = 1024,
	RR_TXT = 16,
	CACHE_MAX = STS_POLICY_MAX + 256, /* a policy and its header */
};

struct waiter {
	struct waiter *next;
	uint64_t id;
	sts_cb *cb;
	void *arg;
};

enum op_state { OP_NONE, OP_TXT, OP_ADDR, OP_FETCH };

struct entry {
	struct entry *prev, *next; /* s->entries, most recently used first */
	struct entry *next_ready;  /* on s->ready */
	char domain[DNS_NAME_MAX + 1];
	enum op_state op;
	uint64_t op_id;
	bool ready;   /* waiters are answered at the next kick */
	bool serving; /* the cache answers while a refresh runs */
	bool cached;  /* policy, id and fetched hold a policy */
	bool fresh;   /* fetched for the waiters now answered */
	bool fetch_failed;
	struct sts_policy policy;
	char id[STS_ID_MAX + 1];
	double fetched;
	char want_id[STS_ID_MAX + 1]; /* the TXT's id, being fetched */
	double retry_at;	      /* no fetch before, after a failure */
	struct waiter *waiters;
	/* TLS-RPT (sts_count) */
	unsigned long ok_sessions, failed[TLSRPT_COUNT];
};

struct sts {
	struct ev_loop *loop;
	struct dns *dns;
	struct https *https;
	struct generation *const *current;
	struct entry *entries;
	size_t n_entries;
	struct entry *ready;
	ev_timer kick;
	uint64_t next_op;
};

static double now_s(const struct sts *s)
{
	return ev_now(s->loop);
}

static const char *spool_of(const struct sts *s)
{
	return (*s->current)->cfg->spool;
}

/* ---- entries ------------------------------------------------------------- */

static bool expired(const struct sts *s, const struct entry *e)
{
	return !e->cached || now_s(s) > e->fetched + (double)e->policy.max_age;
}

static void unlink_entry(struct sts *s, struct entry *e)
{
	if (e->prev != NULL)
		e->prev->next = e->next;
	else
		s->entries = e->next;
	if (e->next != NULL)
		e->next->prev = e->prev;
	e->prev = e->next = NULL;
}

static void push_front(struct sts *s, struct entry *e)
{
	e->next = s->entries;
	if (s->entries != NULL)
		s->entries->prev = e;
	s->entries = e;
}

static void entry_free(struct sts *s, struct entry *e)
{
	unlink_entry(s, e);
	s->n_entries--;
	while (e->waiters != NULL) {
		struct waiter *w = e->waiters;

		e->waiters = w->next;
		free(w);
	}
	free(e);
}

/* The least recently used entry with nothing in flight goes. */
static void make_room(struct sts *s)
{
	struct entry *e = s->entries;

	if (s->n_entries < MAX_ENTRIES)
		return;
	while (e != NULL && e->next != NULL)
		e = e->next;
	for (; e != NULL; e = e->prev)
		if (e->op == OP_NONE && e->waiters == NULL && !e->ready) {
			/* (ready: on s->ready, or being answered now) */
			entry_free(s, e);
			return;
		}
}

/* The disk cache, read once per entry; an expired file goes. */
static void load_cache(struct sts *s, struct entry *e)
{
	bool old;

	e->cached = sts_cache_load(spool_of(s), e->domain, now_s(s),
				   &e->policy, e->id, sizeof(e->id),
				   &e->fetched, &old);
	if (old)
		sts_cache_remove(spool_of(s), e->domain);
}

static struct entry *entry_for(struct sts *s, const char *domain)
{
	struct entry *e;

	for (e = s->entries; e != NULL; e = e->next)
		if (strcmp(e->domain, domain) == 0) {
			unlink_entry(s, e);
			push_front(s, e);
			return e;
		}
	make_room(s);
	if ((e = calloc(1, sizeof(*e))) == NULL)
		return NULL;
	snprintf(e->domain, sizeof(e->domain), "%s", domain);
	push_front(s, e);
	s->n_entries++;
	load_cache(s, e);
	return e;
}

static struct entry *entry_of_op(struct sts *s, uint64_t op,
				 enum op_state state)
{
	for (struct entry *e = s->entries; e != NULL; e = e->next)
		if (e->op == state && e->op_id == op)
			return e;
	return NULL;
}

/* ---- answering ----------------------------------------------------------- */

static void answer_of(const struct sts *s, const struct entry *e,
		      struct sts_answer *a)
{
	memset(a, 0, sizeof(*a));
	a->have = e->cached && (e->fresh || !expired(s, e));
	if (!a->have)
		return;
	a->policy = e->policy;
	snprintf(a->id, sizeof(a->id), "%s", e->id);
	a->source = e->fresh	     ? "fetched"
		    : e->fetch_failed ? "cached, fetch failed"
				      : "cached";
}

/* The waiters of `e` are answered at the loop's next turn. */
static void make_ready(struct sts *s, struct entry *e)
{
	if (!e->ready) {
		e->ready = true;
		e->next_ready = s->ready;
		s->ready = e;
	}
	if (!ev_is_active(&s->kick))
		ev_timer_start(s->loop, &s->kick);
}

/* `ready` stays set while the callbacks run: a callback that looks up
 * this domain again is answered here too, and one that looks up another
 * cannot evict this entry to make room. */
static void answer_waiters(struct sts *s, struct entry *e)
{
	struct sts_answer a;
	struct waiter *w;

	answer_of(s, e, &a);
	while ((w = e->waiters) != NULL) {
		e->waiters = w->next;
		w->cb(w->id, &a, w->arg);
		free(w);
	}
	e->ready = false;
	e->fresh = false;
	e->fetch_failed = false;
	if (e->op == OP_NONE)
		e->serving = false;
}

static void on_kick(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct sts *s = w->data;
	struct entry *e = s->ready;

	(void)loop;
	(void)revents;
	s->ready = NULL;
	while (e != NULL) {
		struct entry *next = e->next_ready;

		answer_waiters(s, e);
		e = next;
	}
}

/* ---- fetching -------------------------------------------------------------- */

static void op_done(struct sts *s, struct entry *e)
{
	e->op = OP_NONE;
	e->op_id = 0;
	make_ready(s, e);
}

static void log_fetch_failed(const struct entry *e, enum tlsrpt_result r,
			     const char *why, bool cached)
{
	struct logline l;

	log_begin(&l, LOG_WARN, "mta_sts_fetch_failed");
	log_kv(&l, "domain", "%s", e->domain);
	log_kv(&l, "id", "%s", e->want_id);
	log_kv(&l, "result", "%s", tlsrpt_result_name(r));
	log_kv(&l, "reason", "%s", why);
	log_kv(&l, "cached", "%s", cached ? "yes" : "no");
	log_kv(&l, "msg", "%s", cached ? "the cached policy stays in force"
				       : "no MTA-STS policy applies");
	log_end(&l);
}

static void fetch_failed(struct sts *s, struct entry *e,
			 enum tlsrpt_result r, const char *why)
{
	e->retry_at = now_s(s) + RETRY_AFTER;
	e->fetch_failed = true;
	e->failed[r]++;
	log_fetch_failed(e, r, why, !expired(s, e));
	op_done(s, e);
}

static void log_policy(const struct entry *e)
{
	char mx[512];
	struct logline l;

	sts_mx_text(&e->policy, mx, sizeof(mx));
	log_begin(&l, LOG_INFO, "mta_sts_policy");
	log_kv(&l, "domain", "%s", e->domain);
	log_kv(&l, "id", "%s", e->id);
	log_kv(&l, "mode", "%s", sts_mode_name(e->policy.mode));
	log_kv(&l, "max_age", "%lu", e->policy.max_age);
	log_kv(&l, "mx", "%s", mx);
	log_end(&l);
}

/* A fetched policy: in force at once, and into the disk cache. */
static void store_policy(struct sts *s, struct entry *e,
			 const struct sts_policy *p, const char *text,
			 size_t len)
{
	char *buf = malloc(CACHE_MAX);
	size_t n;

	e->policy = *p;
	snprintf(e->id, sizeof(e->id), "%s", e->want_id);
	e->fetched = now_s(s);
	e->cached = e->fresh = true;
	e->retry_at = 0;
	log_policy(e);
	n = buf ? sts_cache_header(buf, CACHE_MAX, e->id,
				   (long long)e->fetched)
		: 0;
	if (n > 0 && n + len <= CACHE_MAX) {
		memcpy(buf + n, text, len);
		if (!sts_cache_write(spool_of(s), e->domain, buf, n + len))
			log_msg(LOG_WARN, "mta_sts_cache", "%s: cannot write "
				"the cache file in %s/sts", e->domain,
				spool_of(s));
	}
	free(buf);
}

/* "text/plain", with or without parameters, in any case. */
static bool text_plain(const char *type)
{
	size_t n = strlen("text/plain");

	return strncasecmp(type, "text/plain", n) == 0 &&
	       (type[n] == '\0' || type[n] == ';' || type[n] == ' ');
}

/* §3.3: status 200, text/plain, a body that parses. */
static void on_fetch(uint64_t op, const struct https_result *r, void *arg)
{
	struct sts *s = arg;
	struct entry *e = entry_of_op(s, op, OP_FETCH);
	struct sts_policy p;
	char why[300];

	if (e == NULL)
		return;
	if (r->status != HTTPS_DONE) {
		fetch_failed(s, e, r->status == HTTPS_TLS
					   ? TLSRPT_STS_WEBPKI_INVALID
					   : TLSRPT_STS_POLICY_FETCH_ERROR,
			     r->error);
	} else if (r->code != 200) {
		snprintf(why, sizeof(why), "HTTP status %ld (200 needed; "
			 "redirects are not followed)", r->code);
		fetch_failed(s, e, TLSRPT_STS_POLICY_FETCH_ERROR, why);
	} else if (!text_plain(r->content_type)) {
		snprintf(why, sizeof(why), "media type \"%.100s\", not "
			 "text/plain", r->content_type);
		fetch_failed(s, e, TLSRPT_STS_POLICY_INVALID, why);
	} else if (!sts_policy_parse(r->body, r->body_len, &p, why,
				     sizeof(why))) {
		fetch_failed(s, e, TLSRPT_STS_POLICY_INVALID, why);
	} else {
		store_policy(s, e, &p, r->body, r->body_len);
		op_done(s, e);
	}
}

static void start_fetch(struct sts *s, struct entry *e,
			const struct dns_host *h)
{
	struct tls_clients *tc = &(*s->current)->clients;
	char url[400], host[300], addrs[DNS_MAX_ADDRS][64];
	struct https_get g = {.url = url, .host = host, .port = 443,
			      .max_size = STS_POLICY_MAX,
			      .timeout_ms = FETCH_TIMEOUT_MS,
			      .connect_timeout_ms = CONNECT_TIMEOUT_MS};

	snprintf(host, sizeof(host), "mta-sts.%s", e->domain);
	snprintf(url, sizeof(url), "https://%s/.well-known/mta-sts.txt", host);
	for (size_t i = 0; i < h->n_addrs && i < HTTPS_MAX_ADDRS; i++) {
		const struct sockaddr_storage *a = &h->addrs[i];
		const void *bin =
			a->ss_family == AF_INET6
				? (const void *)&((const struct sockaddr_in6 *)a)->sin6_addr
				: (const void *)&((const struct sockaddr_in *)a)->sin_addr;

		if (inet_ntop(a->ss_family, bin, addrs[g.n_addrs],
			      sizeof(addrs[0])) != NULL) {
			g.addrs[g.n_addrs] = addrs[g.n_addrs];
			g.n_addrs++;
		}
	}
	tls_clients_load_trust(tc); /* the first fetch parses ca_file */
	g.trust = tc->trust;
	e->op = OP_FETCH;
	https_get(s->https, &g, e->op_id, on_fetch, s);
}

static void on_addr(uint64_t op, const struct dns_route *rt, void *arg)
{
	struct sts *s = arg;
	struct entry *e = entry_of_op(s, op, OP_ADDR);
	char why[200];

	if (e == NULL)
		return;
	if (rt->status != DNS_OK || rt->n_hosts == 0) {
		snprintf(why, sizeof(why), "%s", rt->error);
		fetch_failed(s, e, TLSRPT_STS_POLICY_FETCH_ERROR, why);
		return;
	}
	start_fetch(s, e, &rt->hosts[0]);
}

/* mta-sts.DOMAIN's addresses, then the fetch. */
static void start_lookup(struct sts *s, struct entry *e, const char *id)
{
	char host[300];

	snprintf(e->want_id, sizeof(e->want_id), "%s", id);
	snprintf(host, sizeof(host), "mta-sts.%s", e->domain);
	e->op = OP_ADDR;
	e->op_id = s->next_op++;
	dns_host_route(s->dns, host, 443, e->op_id, on_addr, s);
}

/* ---- the TXT record ---------------------------------------------------------- */

/* The id the TXT RRset gives in `id`, or "" (none, invalid, no answer:
 * NONE then, with the reason in why). */
static enum sts_record txt_id(const struct dns_rrset *rs, char *id,
			      size_t id_len, const char **why)
{
	char texts[DNS_MAX_RRS][STS_TXT_MAX];
	const char *ptrs[DNS_MAX_RRS];
	size_t lens[DNS_MAX_RRS];
	enum sts_record r = STS_RECORD_NONE;

	id[0] = '\0';
	*why = rs->error;
	if (rs->status != DNS_OK)
		return r;
	for (size_t i = 0; i < rs->n; i++) {
		ptrs[i] = sts_txt_join(rs->data[i], rs->len[i], texts[i],
				       sizeof(texts[i]), &lens[i]) == STS_JOIN_OK
				  ? texts[i]
				  : NULL;
	}
	r = sts_record_pick(ptrs, lens, rs->n, id, id_len, why);
	if (r != STS_RECORD_FOUND)
		id[0] = '\0';
	return r;
}

static void log_bad_record(const struct entry *e, const char *why)
{
	struct logline l;

	log_begin(&l, LOG_WARN, "mta_sts_record");
	log_kv(&l, "domain", "%s", e->domain);
	log_kv(&l, "reason", "%s", why);
	log_kv(&l, "msg", "%s", "taken as no record");
	log_end(&l);
}

/* Past REFRESH_AFTER, or half its max_age: fetched again in the
 * background while the cache answers. */
static bool wants_refresh(const struct sts *s, const struct entry *e)
{
	double half = (double)e->policy.max_age / 2;

	return now_s(s) - e->fetched >
		       (half < REFRESH_AFTER ? half : REFRESH_AFTER) &&
	       now_s(s) >= e->retry_at;
}

static void on_txt(uint64_t op, const struct dns_rrset *rs, void *arg)
{
	struct sts *s = arg;
	struct entry *e = entry_of_op(s, op, OP_TXT);
	char id[STS_ID_MAX + 1];
	const char *why;

	if (e == NULL)
		return;
	if (txt_id(rs, id, sizeof(id), &why) == STS_RECORD_INVALID)
		log_bad_record(e, why);
	e->op = OP_NONE;
	if (id[0] != '\0' && !expired(s, e) && strcmp(id, e->id) == 0) {
		e->serving = true;
		make_ready(s, e);
		if (wants_refresh(s, e))
			start_lookup(s, e, id);
		return;
	}
	if (id[0] != '\0' && now_s(s) >= e->retry_at) {
		start_lookup(s, e, id); /* the waiters wait for it */
		return;
	}
	op_done(s, e);
}

static void start_txt(struct sts *s, struct entry *e)
{
	char name[300];

	snprintf(name, sizeof(name), "_mta-sts.%s", e->domain);
	e->op = OP_TXT;
	e->op_id = s->next_op++;
	dns_rrset(s->dns, name, RR_TXT, e->op_id, on_txt, s);
}

/* ---- the interface ---------------------------------------------------------- */

struct sts *sts_new(struct ev_loop *loop, struct dns *dns,
		    struct generation *const *current, char *err,
		    size_t err_len)
{
	struct sts *s = calloc(1, sizeof(*s));

	if (s == NULL) {
		snprintf(err, err_len, "sts: out of memory");
		return NULL;
	}
	if (!sts_cache_prepare((*current)->cfg->spool, err, err_len) ||
	    (s->https = https_new(loop, err, err_len)) == NULL) {
		free(s);
		return NULL;
	}
	s->loop = loop;
	s->dns = dns;
	s->current = current;
	s->next_op = OP_BASE;
	ev_timer_init(&s->kick, on_kick, 0., 0.);
	s->kick.data = s;
	return s;
}

void sts_free(struct sts *s)
{
	if (s == NULL)
		return;
	ev_timer_stop(s->loop, &s->kick);
	while (s->entries != NULL) {
		if (s->entries->op != OP_NONE)
			dns_cancel(s->dns, s->entries->op_id);
		entry_free(s, s->entries);
	}
	https_free(s->https);
	free(s);
}

void sts_lookup(struct sts *s, const char *domain, uint64_t id, sts_cb *cb,
		void *arg)
{
	char name[DNS_NAME_MAX + 1];
	struct entry *e = dns_name_copy(domain, name, sizeof(name))
				  ? entry_for(s, name)
				  : NULL;
	struct waiter *w = e ? calloc(1, sizeof(*w)) : NULL;

	if (w == NULL) { /* no name to look up, or no memory: no policy */
		struct sts_answer none = {.have = false};

		cb(id, &none, arg);
		return;
	}
	*w = (struct waiter){.next = e->waiters, .id = id, .cb = cb,
			     .arg = arg};
	e->waiters = w;
	if (e->serving)
		make_ready(s, e);
	else if (e->op == OP_NONE && !e->ready)
		start_txt(s, e);
}

void sts_peek(struct sts *s, const char *domain, struct sts_answer *a)
{
	char name[DNS_NAME_MAX + 1];
	struct entry *e = dns_name_copy(domain, name, sizeof(name))
				  ? entry_for(s, name)
				  : NULL;

	memset(a, 0, sizeof(*a));
	if (e != NULL)
		answer_of(s, e, a);
}

void sts_cancel(struct sts *s, uint64_t id)
{
	for (struct entry *e = s->entries; e != NULL; e = e->next) {
		struct waiter **p = &e->waiters;

		while (*p != NULL) {
			struct waiter *w = *p;

			if (w->id != id) {
				p = &w->next;
				continue;
			}
			*p = w->next;
			free(w);
		}
	}
}

void sts_count(struct sts *s, const char *domain, bool ok,
	       enum tlsrpt_result result)
{
	for (struct entry *e = s->entries; e != NULL; e = e->next) {
		if (strcmp(e->domain, domain) != 0)
			continue;
		if (ok)
			e->ok_sessions++;
		else if (result < TLSRPT_COUNT)
			e->failed[result]++;
		return;
	}
}

/* ---- applying a policy --------------------------------------------------- */

bool sts_mx_allowed(const struct sts_answer *a, const char *domain,
		    const char *host, char *why, size_t why_len)
{
	char mx[400];

	if (!a->have || a->policy.mode == STS_MODE_NONE ||
	    sts_mx_match(&a->policy, host))
		return true;
	sts_mx_text(&a->policy, mx, sizeof(mx));
	snprintf(why, why_len, "MX host %s is not in the MTA-STS policy of "
		 "%s (mode %s, id %s, mx %s)", host, domain,
		 sts_mode_name(a->policy.mode), a->id, mx);
	return false;
}

void sts_report(struct sts *s, const struct sts_answer *a,
		const struct sts_failure *f)
{
	struct logline l;

	log_begin(&l, LOG_WARN, "mta_sts_failure");
	if (f->qid != NULL)
		log_kv(&l, "qid", "%s", f->qid);
	log_kv(&l, "domain", "%s", f->domain);
	log_kv(&l, "mode", "%s", sts_mode_name(a->policy.mode));
	log_kv(&l, "id", "%s", a->id);
	log_kv(&l, "result", "%s", tlsrpt_result_name(f->result));
	log_kv(&l, "mx", "%s", f->mx);
	if (f->relay != NULL && f->relay[0] != '\0')
		log_kv(&l, "relay", "%s", f->relay);
	log_kv(&l, "reason", "%s", f->reason);
	log_kv(&l, "msg", "%s", a->policy.mode == STS_MODE_ENFORCE
					? "this MX host is not used"
					: "delivered as usual (mode testing)");
	log_end(&l);
	sts_count(s, f->domain, false, f->result);
}

/* libtls's words for a handshake that verify refused. */
static enum tlsrpt_result tls_error_result(const char *text)
{
	if (strstr(text, "expired") != NULL)
		return TLSRPT_CERTIFICATE_EXPIRED;
	if (strstr(text, "not present in server certificate") != NULL ||
	    strstr(text, "hostname mismatch") != NULL)
		return TLSRPT_CERTIFICATE_HOST_MISMATCH;
	if (strstr(text, "verif") != NULL || strstr(text, "certificate") != NULL)
		return TLSRPT_CERTIFICATE_NOT_TRUSTED;
	return TLSRPT_VALIDATION_FAILURE;
}

static enum tlsrpt_result verdict_result(enum tls_cert_verdict v)
{
	switch (v) {
	case TLS_CERT_EXPIRED:
		return TLSRPT_CERTIFICATE_EXPIRED;
	case TLS_CERT_NAME:
		return TLSRPT_CERTIFICATE_HOST_MISMATCH;
	case TLS_CERT_OK:
	case TLS_CERT_UNTRUSTED:
		break;
	}
	return TLSRPT_CERTIFICATE_NOT_TRUSTED;
}

bool sts_session_failed(const struct client_result *r, bool tls_tried,
			enum tlsrpt_result *result, const char **why)
{
	*result = TLSRPT_VALIDATION_FAILURE;
	*why = r->reply;
	switch (r->outcome) {
	case CLIENT_TLS_NOT_OFFERED:
		*result = TLSRPT_STARTTLS_NOT_SUPPORTED;
		return true;
	case CLIENT_TLS_FAILED:
		*result = tls_error_result(r->reply);
		return true;
	case CLIENT_CONNECT_FAILED:
		return false;
	case CLIENT_DONE:
	case CLIENT_LOST:
		break;
	}
	if (r->tls_version[0] == '\0') {
		*result = TLSRPT_STARTTLS_NOT_SUPPORTED;
		*why = r->starttls_refused[0] ? r->starttls_refused
					      : "STARTTLS was not used";
		return tls_tried;
	}
	if (r->cert_checked && r->cert != TLS_CERT_OK) {
		*result = verdict_result(r->cert);
		*why = r->cert_why;
		return true;
	}
	return false;
}
