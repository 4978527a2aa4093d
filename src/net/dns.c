/*
 * dns: MX, address, TLSA and other record lookups with libunbound, inside
 * the event loop, DNSSEC-validated against [dns] trust_anchor.
 * libunbound resolves in a thread of its own (ub_ctx_async) and reports on
 * a pipe, ub_fd(), that an ev_io watches; ub_process() then runs on_answer
 * on the loop's thread. This file owns every request from a dns_* call until
 * its callback has returned or it was cancelled; callers only see their ids.
 * It never calls back from inside a dns_* call or from inside ub_process()
 * (callbacks run from a zero timer), never blocks the loop, and never reads
 * /etc/resolv.conf or /etc/hosts when [dns] resolver is set. dns_free drops
 * pending requests without calling back, and must not be called from a
 * callback.
 */
#include "net/dns.h"

#include "core/config.h"
#include "core/log.h"
#include "proto/dns_wire.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unbound.h>
#include <unistd.h>

/*
 * Seconds a whole route (MX, then every address) may take before it is a
 * DNS_TEMPFAIL. libunbound has no overall query timeout of its own; this
 * bounds what its retries and backoff can add up to.
 */
#define DNS_TIMEOUT 20.0

enum {
	N_BUCKETS = 256,
	MAX_QUERIES = 2 * DNS_MAX_HOSTS, /* AAAA + A per host; MX uses q[0] */
	RR_A = 1,
	RR_MX = 15,
	RR_AAAA = 28,
	RR_TLSA = 52,
	CLASS_IN = 1,
	RCODE_NXDOMAIN = 3,
};

enum stage { STAGE_MX, STAGE_ADDR, STAGE_TLSA, STAGE_RRSET, STAGE_DONE };
enum outcome { OUT_DATA, OUT_NODATA, OUT_NXDOMAIN, OUT_TEMP };

struct req;

/* One question to libunbound; its answer is kept until the stage ends. */
struct query {
	struct req *req;
	int async_id;
	bool in_flight;
	int err; /* libunbound's error; 0 when res tells */
	struct ub_result *res;
};

struct req {
	struct req *next, *prev; /* hash chain, by id */
	struct req *next_ready;	 /* all answers in, inside on_readable */
	struct req *next_done;	 /* waiting for on_kick to call back */
	struct dns *dns;
	uint64_t id;
	dns_route_cb *cb;      /* a route request, or ... */
	dns_tlsa_cb *tlsa_cb;  /* ... a TLSA one, or ... */
	dns_rrset_cb *rrset_cb; /* ... an RRset one (dns_rrset) */
	void *arg;
	enum stage stage;
	bool cancelled; /* no callback, ever (again) */
	bool queued;	/* on the done list */
	unsigned port;
	char name[256]; /* the domain or host asked for */
	struct query q[MAX_QUERIES];
	unsigned in_flight;
	ev_timer deadline;
	struct dns_route route; /* the answer of a route request; the
				   status and error of an RRset one */
	struct dns_tlsa tlsa;	/* the answer of a TLSA request */
	struct dns_rrset rrset; /* dns_rrset: the records, into rr_buf */
	unsigned char *rr_buf;
};

struct dns {
	struct ev_loop *loop;
	struct ub_ctx *ub;
	ev_io io;
	ev_timer kick;
	struct req *buckets[N_BUCKETS];
	struct req *ready;
	struct req *done, *done_tail;
	uint64_t rng;
	bool validating; /* [dns] trust_anchor set: a validator runs */
};

/* ---- small helpers ---------------------------------------------------- */

/* xorshift64*: equal MX preferences only need to spread load, and a
 * per-context state keeps random(3)'s global state for others. */
static uint32_t rng_next(struct dns *dns)
{
	dns->rng ^= dns->rng >> 12;
	dns->rng ^= dns->rng << 25;
	dns->rng ^= dns->rng >> 27;
	return (uint32_t)((dns->rng * 0x2545F4914F6CDD1DULL) >> 32);
}

static uint64_t rng_seed(void)
{
	uint64_t seed = 0;

	if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != sizeof(seed))
		seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
	return seed != 0 ? seed : 0x9E3779B97F4A7C15ULL;
}

static void set_addr(struct sockaddr_storage *ss, int family,
		     const void *addr, unsigned port)
{
	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET6) {
		struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;

		v6->sin6_family = AF_INET6;
		v6->sin6_port = htons((uint16_t)port);
		memcpy(&v6->sin6_addr, addr, 16);
	} else {
		struct sockaddr_in *v4 = (struct sockaddr_in *)ss;

		v4->sin_family = AF_INET;
		v4->sin_port = htons((uint16_t)port);
		memcpy(&v4->sin_addr, addr, 4);
	}
}

/* "192.0.2.1", "::1", "[::1]", "[IPv6:::1]" or "[192.0.2.1]". */
static bool parse_literal(const char *host, unsigned port,
			  struct sockaddr_storage *ss)
{
	unsigned char addr[16];
	char buf[64];
	const char *p = host;
	size_t n = strlen(host);

	if (n >= 2 && host[0] == '[' && host[n - 1] == ']') {
		p++;
		n -= 2;
		if (n > 5 && strncasecmp(p, "IPv6:", 5) == 0) {
			p += 5;
			n -= 5;
		}
	}
	if (n == 0 || n >= sizeof(buf))
		return false;
	memcpy(buf, p, n);
	buf[n] = '\0';
	if (inet_pton(AF_INET, buf, addr) == 1)
		set_addr(ss, AF_INET, addr, port);
	else if (inet_pton(AF_INET6, buf, addr) == 1)
		set_addr(ss, AF_INET6, addr, port);
	else
		return false;
	return true;
}

static const char *rcode_name(int rcode)
{
	static const char *const names[] = {
		"NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN",
		"NOTIMP",  "REFUSED", "YXDOMAIN", "YXRRSET",
	};

	if (rcode >= 0 && (size_t)rcode < sizeof(names) / sizeof(names[0]))
		return names[rcode];
	return "unexpected rcode";
}

/* What one answer says; `why` is filled for OUT_TEMP. */
static enum outcome outcome_of(const struct query *q, char *why,
			       size_t why_len)
{
	const struct ub_result *r = q->res;

	if (q->err != 0 || r == NULL) {
		snprintf(why, why_len, "%s",
			 q->err != 0 ? ub_strerror(q->err) : "no answer");
		return OUT_TEMP;
	}
	/* A signature that does not verify, or a chain of trust that is
	 * broken: the answer cannot be trusted, and waiting may mend it. */
	if (r->bogus) {
		snprintf(why, why_len, "DNSSEC validation failed: %s",
			 r->why_bogus != NULL ? r->why_bogus : "bogus");
		return OUT_TEMP;
	}
	if (r->nxdomain || r->rcode == RCODE_NXDOMAIN)
		return OUT_NXDOMAIN;
	if (r->rcode != 0) {
		snprintf(why, why_len, "%s", rcode_name(r->rcode));
		return OUT_TEMP;
	}
	return r->havedata ? OUT_DATA : OUT_NODATA;
}

static enum dns_sec sec_of(const struct query *q)
{
	return q->res != NULL && q->res->secure ? DNS_SECURE : DNS_INSECURE;
}

/* ---- the request table ------------------------------------------------ */

static struct req **bucket(struct dns *dns, uint64_t id)
{
	return &dns->buckets[(id ^ (id >> 17)) % N_BUCKETS];
}

static void on_deadline(struct ev_loop *loop, ev_timer *w, int revents);

static struct req *req_new(struct dns *dns, const char *name, unsigned port,
			   uint64_t id, void *arg)
{
	struct req *req = calloc(1, sizeof(*req));
	struct req **head;

	if (req == NULL)
		return NULL;
	req->dns = dns;
	req->id = id;
	req->arg = arg;
	req->port = port;
	snprintf(req->name, sizeof(req->name), "%s", name);
	for (size_t i = 0; i < MAX_QUERIES; i++)
		req->q[i].req = req;
	ev_timer_init(&req->deadline, on_deadline, DNS_TIMEOUT, 0.);
	req->deadline.data = req;
	head = bucket(dns, id);
	req->next = *head;
	if (*head != NULL)
		(*head)->prev = req;
	*head = req;
	return req;
}

static void release_answers(struct req *req)
{
	for (size_t i = 0; i < MAX_QUERIES; i++) {
		ub_resolve_free(req->q[i].res);
		req->q[i].res = NULL;
		req->q[i].err = 0;
	}
}

static void req_free(struct req *req)
{
	struct dns *dns = req->dns;

	if (req->prev != NULL)
		req->prev->next = req->next;
	else
		*bucket(dns, req->id) = req->next;
	if (req->next != NULL)
		req->next->prev = req->prev;
	ev_timer_stop(dns->loop, &req->deadline);
	release_answers(req);
	free(req->rr_buf);
	free(req);
}

/* A request goes once it will not be called back, libunbound holds no
 * pointer to it and it is off the done list. */
static void req_maybe_free(struct req *req)
{
	if (req->cancelled && req->in_flight == 0 && !req->queued)
		req_free(req);
}

/* ub_cancel guarantees no callback for a query it found; one it cannot
 * find stays in flight, and its answer is dropped in on_answer. */
static void cancel_queries(struct req *req)
{
	for (size_t i = 0; i < MAX_QUERIES; i++) {
		struct query *q = &req->q[i];

		if (q->in_flight &&
		    ub_cancel(req->dns->ub, q->async_id) == UB_NOERROR) {
			q->in_flight = false;
			req->in_flight--;
		}
	}
}

/* ---- finishing: results go out from a zero timer ---------------------- */

static void finish(struct req *req)
{
	struct dns *dns = req->dns;

	ev_timer_stop(dns->loop, &req->deadline);
	cancel_queries(req);
	release_answers(req);
	req->stage = STAGE_DONE;
	req->queued = true;
	if (dns->done_tail != NULL)
		dns->done_tail->next_done = req;
	else
		dns->done = req;
	dns->done_tail = req;
	if (!ev_is_active(&dns->kick))
		ev_timer_start(dns->loop, &dns->kick);
}

static void fail(struct req *req, enum dns_status status, const char *fmt,
		 ...) __attribute__((format(printf, 3, 4)));

/* A TLSA request fails as DNS_TLSA_FAILED whatever the status. */
static void fail(struct req *req, enum dns_status status, const char *fmt,
		 ...)
{
	va_list ap;
	char *error = req->tlsa_cb != NULL ? req->tlsa.error
					   : req->route.error;
	size_t len = req->tlsa_cb != NULL ? sizeof(req->tlsa.error)
					  : sizeof(req->route.error);

	req->route.status = status;
	req->route.n_hosts = 0;
	req->tlsa.status = DNS_TLSA_FAILED;
	req->tlsa.n_records = 0;
	va_start(ap, fmt);
	vsnprintf(error, len, fmt, ap);
	va_end(ap);
	finish(req);
}

/* One callback: a route, a TLSA answer, or an RRset (whose status is
 * the route's). */
static void call_back(struct req *req)
{
	struct dns_rrset *rs = &req->rrset;

	if (req->tlsa_cb != NULL) {
		req->tlsa_cb(req->id, &req->tlsa, req->arg);
		return;
	}
	if (req->rrset_cb == NULL) {
		req->cb(req->id, &req->route, req->arg);
		return;
	}
	rs->status = req->route.status;
	memcpy(rs->error, req->route.error, sizeof(rs->error));
	if (rs->status != DNS_OK)
		rs->n = 0;
	req->rrset_cb(req->id, rs, req->arg);
}

/* Calls back what was finished before this round; what a callback
 * finishes (a new address literal, say) waits for the next round. */
static void on_kick(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct dns *dns = w->data;
	struct req *req = dns->done;

	(void)loop;
	(void)revents;
	dns->done = dns->done_tail = NULL;
	while (req != NULL) {
		struct req *next = req->next_done;

		req->queued = false;
		if (!req->cancelled) {
			req->cancelled = true;
			call_back(req);
		}
		req_maybe_free(req);
		req = next;
	}
}

static void on_deadline(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct req *req = w->data;

	(void)loop;
	(void)revents;
	fail(req, DNS_TEMPFAIL, "%s: DNS lookup timed out after %.0f s",
	     req->name, DNS_TIMEOUT);
}

/* ---- asking libunbound ------------------------------------------------ */

static void on_answer(void *data, int err, struct ub_result *res)
{
	struct query *q = data;
	struct req *req = q->req;

	q->in_flight = false;
	req->in_flight--;
	if (req->stage == STAGE_DONE || req->cancelled) {
		ub_resolve_free(res);
		req_maybe_free(req);
		return;
	}
	q->err = err;
	q->res = res;
	if (req->in_flight == 0) {
		req->next_ready = req->dns->ready;
		req->dns->ready = req;
	}
}

/* A question that cannot even be asked counts as a temporary failure. */
static void ask(struct req *req, struct query *q, const char *name,
		int rrtype)
{
	int rc = ub_resolve_async(req->dns->ub, name, rrtype, CLASS_IN, q,
				  on_answer, &q->async_id);

	if (rc != UB_NOERROR) {
		q->err = rc;
		return;
	}
	q->in_flight = true;
	req->in_flight++;
}

static void addresses_answered(struct req *req);

/* AAAA and A of every host at once; q[2i] and q[2i+1] belong to host i. */
static void ask_addresses(struct req *req)
{
	struct dns_route *rt = &req->route;

	req->stage = STAGE_ADDR;
	for (size_t i = 0; i < rt->n_hosts; i++) {
		ask(req, &req->q[2 * i], rt->hosts[i].name, RR_AAAA);
		ask(req, &req->q[2 * i + 1], rt->hosts[i].name, RR_A);
	}
	if (req->in_flight == 0)
		addresses_answered(req);
}

/* ---- MX answers --------------------------------------------------------- */

struct mx_cand {
	unsigned pref;
	uint32_t key; /* random: shuffles equal preferences */
	char name[256];
};

static int mx_cmp(const void *a, const void *b)
{
	const struct mx_cand *x = a, *y = b;

	if (x->pref != y->pref)
		return x->pref < y->pref ? -1 : 1;
	return x->key < y->key ? -1 : x->key > y->key;
}

/* Sorted candidates into route.hosts: duplicates of a name keep their
 * best preference, at most DNS_MAX_HOSTS. */
static void mx_take(struct req *req, struct mx_cand *c, size_t n)
{
	struct dns_route *rt = &req->route;

	qsort(c, n, sizeof(*c), mx_cmp);
	for (size_t i = 0; i < n && rt->n_hosts < DNS_MAX_HOSTS; i++) {
		bool dup = false;

		for (size_t k = 0; k < rt->n_hosts && !dup; k++)
			dup = strcasecmp(rt->hosts[k].name, c[i].name) == 0;
		if (dup)
			continue;
		snprintf(rt->hosts[rt->n_hosts].name,
			 sizeof(rt->hosts[0].name), "%s", c[i].name);
		rt->hosts[rt->n_hosts++].pref = c[i].pref;
	}
}

/* One MX rdata (proto/dns_wire.c reads it). False (with `why`) when it
 * cannot be used; *root for the "." of a null MX. */
static bool mx_parse(const unsigned char *p, int len, struct mx_cand *c,
		     bool *root, char *why, size_t why_len)
{
	*root = false;
	switch (dns_mx_parse(p, len > 0 ? (size_t)len : 0, &c->pref, c->name,
			     sizeof(c->name))) {
	case DNS_MX_OK:
		return true;
	case DNS_MX_NULL:
		*root = true;
		return false;
	case DNS_MX_ADDRESS:
		snprintf(why, why_len, "MX host %.40s is an IP address",
			 c->name);
		return false;
	case DNS_MX_MALFORMED:
		break;
	}
	snprintf(why, why_len, "malformed MX record");
	return false;
}

/* False when the request was failed here. */
static bool mx_records(struct req *req, const struct ub_result *r)
{
	size_t n = 0, usable = 0, roots = 0;
	struct mx_cand *c;
	char why[128] = "no MX record";

	while (r->data[n] != NULL)
		n++;
	c = calloc(n, sizeof(*c));
	if (c == NULL) {
		fail(req, DNS_TEMPFAIL, "%s: out of memory", req->name);
		return false;
	}
	for (size_t i = 0; i < n; i++) {
		bool root;

		if (mx_parse((const unsigned char *)r->data[i], r->len[i],
			     &c[usable], &root, why, sizeof(why))) {
			c[usable].key = rng_next(req->dns);
			usable++;
		}
		roots += root;
	}
	if (usable > 0)
		mx_take(req, c, usable);
	free(c);
	if (usable > 0)
		return true;
	/* RFC 7505: a lone "0 ." says the domain takes no mail (any
	 * set of only "." is read the same); a "." next to real hosts is
	 * just a host we cannot use. Records that are broken otherwise are
	 * the domain's to fix: the mail waits rather than bounces. */
	if (roots == n)
		fail(req, DNS_PERMFAIL, "%s: null MX: the domain accepts "
					"no mail (RFC 7505)", req->name);
	else
		fail(req, DNS_TEMPFAIL, "%s: %s", req->name, why);
	return false;
}

static void mx_answered(struct req *req)
{
	struct query *q = &req->q[0];
	struct dns_route *rt = &req->route;
	char why[160];

	switch (outcome_of(q, why, sizeof(why))) {
	case OUT_TEMP:
		fail(req, DNS_TEMPFAIL, "%s: MX lookup failed: %s", req->name,
		     why);
		return;
	case OUT_NXDOMAIN:
		fail(req, DNS_PERMFAIL, "%s: domain not found (NXDOMAIN)",
		     req->name);
		return;
	case OUT_NODATA:
		/* RFC 5321 §5.1: no MX, so the domain is its own host. */
		snprintf(rt->hosts[0].name, sizeof(rt->hosts[0].name), "%s",
			 req->name);
		rt->hosts[0].pref = 0;
		rt->n_hosts = 1;
		break;
	case OUT_DATA:
		if (!mx_records(req, q->res))
			return;
		break;
	}
	rt->mx_sec = sec_of(q);
	release_answers(req);
	ask_addresses(req);
}

/* ---- address answers -------------------------------------------------- */

/* The next rdata of `want` octets in r, if any. */
static const char *next_addr(const struct ub_result *r, size_t *i,
			     int want)
{
	while (r != NULL && r->data[*i] != NULL) {
		size_t k = (*i)++;

		if (r->len[k] == want)
			return r->data[k];
	}
	return NULL;
}

/* The addresses of one host, AAAA and A interleaved (AAAA first) so
 * that the DNS_MAX_ADDRS cap keeps both families and a delivery that
 * walks the list in order switches family after each failure. Within a
 * family the order is libunbound's. */
static void host_addresses(struct req *req, struct dns_host *h,
			   const struct ub_result *v6,
			   const struct ub_result *v4)
{
	size_t i6 = 0, i4 = 0;
	const char *a6 = next_addr(v6, &i6, 16);
	const char *a4 = next_addr(v4, &i4, 4);

	h->n_addrs = 0;
	while ((a6 != NULL || a4 != NULL) && h->n_addrs < DNS_MAX_ADDRS) {
		if (a6 != NULL) {
			set_addr(&h->addrs[h->n_addrs++], AF_INET6, a6,
				 req->port);
			a6 = next_addr(v6, &i6, 16);
		}
		if (a4 != NULL && h->n_addrs < DNS_MAX_ADDRS) {
			set_addr(&h->addrs[h->n_addrs++], AF_INET, a4,
				 req->port);
			a4 = next_addr(v4, &i4, 4);
		}
	}
}

/* The data of one address answer; *insecure when it was an answer (data
 * or none) that did not validate as secure. */
static const struct ub_result *data_of(const struct query *q, bool *temp,
				       bool *insecure, char *why,
				       size_t why_len)
{
	char here[160];

	switch (outcome_of(q, here, sizeof(here))) {
	case OUT_DATA:
		*insecure = *insecure || sec_of(q) != DNS_SECURE;
		return q->res;
	case OUT_TEMP:
		if (!*temp)
			snprintf(why, why_len, "%s", here);
		*temp = true;
		break;
	case OUT_NODATA:
	case OUT_NXDOMAIN:
		*insecure = *insecure || sec_of(q) != DNS_SECURE;
		break;
	}
	return NULL;
}

static void addresses_answered(struct req *req)
{
	struct dns_route *rt = &req->route;
	size_t kept = 0, asked = rt->n_hosts;
	bool temp = false;
	char why[160] = "", first_temp[256] = "";

	for (size_t i = 0; i < asked; i++) {
		bool was_temp = temp, insecure = false;
		const struct ub_result *v6 = data_of(&req->q[2 * i], &temp,
						     &insecure, why,
						     sizeof(why));
		const struct ub_result *v4 = data_of(&req->q[2 * i + 1],
						     &temp, &insecure, why,
						     sizeof(why));

		if (temp && !was_temp)
			snprintf(first_temp, sizeof(first_temp), "%s",
				 rt->hosts[i].name);
		host_addresses(req, &rt->hosts[i], v6, v4);
		rt->hosts[i].sec = insecure ? DNS_INSECURE : DNS_SECURE;
		if (rt->hosts[i].n_addrs == 0)
			continue;
		if (kept != i)
			rt->hosts[kept] = rt->hosts[i];
		kept++;
	}
	rt->n_hosts = kept;
	if (kept > 0) {
		rt->status = DNS_OK;
		finish(req);
	} else if (temp) {
		fail(req, DNS_TEMPFAIL, "%s: address lookup failed: %s",
		     first_temp, why);
	} else if (asked == 1) {
		fail(req, DNS_PERMFAIL, "%s: no address", rt->hosts[0].name);
	} else {
		fail(req, DNS_PERMFAIL, "%s: no address for any of %zu hosts",
		     req->name, asked);
	}
}

/* ---- other records ---------------------------------------------------- */

/* The records of the answer, copied: its ub_result goes in finish(). */
static bool rrset_copy(struct req *req, const struct ub_result *r)
{
	struct dns_rrset *rs = &req->rrset;
	size_t total = 0, off = 0;

	for (size_t i = 0; r->data[i] != NULL && i < DNS_MAX_RRS; i++)
		if (r->len[i] > 0 && total + (size_t)r->len[i] <= DNS_RRSET_MAX)
			total += (size_t)r->len[i];
	if (total > 0 && (req->rr_buf = malloc(total)) == NULL)
		return false;
	for (size_t i = 0; r->data[i] != NULL && i < DNS_MAX_RRS; i++) {
		size_t n = r->len[i] > 0 ? (size_t)r->len[i] : 0;

		if (n == 0 || off + n > total)
			continue;
		memcpy(req->rr_buf + off, r->data[i], n);
		rs->data[rs->n] = req->rr_buf + off;
		rs->len[rs->n++] = n;
		off += n;
	}
	rs->secure = r->secure != 0 && !r->bogus;
	return true;
}

static void rrset_answered(struct req *req)
{
	struct query *q = &req->q[0];
	char why[96];

	switch (outcome_of(q, why, sizeof(why))) {
	case OUT_TEMP:
		fail(req, DNS_TEMPFAIL, "%s: lookup failed: %s", req->name,
		     why);
		return;
	case OUT_NXDOMAIN:
		fail(req, DNS_PERMFAIL, "%s: not found (NXDOMAIN)", req->name);
		return;
	case OUT_NODATA:
		break;
	case OUT_DATA:
		if (!rrset_copy(req, q->res)) {
			fail(req, DNS_TEMPFAIL, "%s: out of memory", req->name);
			return;
		}
		break;
	}
	req->route.status = DNS_OK;
	finish(req);
}

/* ---- TLSA answers ------------------------------------------------------ */

/* The records of a secure RRset: the usable ones kept (RFC 7672 §3.1.3),
 * the others only counted. */
static void tlsa_records(struct dns_tlsa *t, const struct ub_result *r)
{
	for (size_t i = 0; r->data[i] != NULL; i++) {
		struct tlsa_rr *rr = &t->records[t->n_records];

		t->n_seen++;
		if (t->n_records < TLSA_MAX_RECORDS &&
		    tlsa_parse((const unsigned char *)r->data[i],
			       r->len[i] > 0 ? (size_t)r->len[i] : 0,
			       rr) == TLSA_PARSE_OK &&
		    tlsa_usable(rr))
			t->n_records++;
	}
	t->status = DNS_TLSA_RECORDS;
}

/* Secure records, secure denial (no DANE), insecure (no DANE), or a
 * failure: bogus, SERVFAIL, no answer (RFC 7672 §2.2). */
static void tlsa_answered(struct req *req)
{
	struct query *q = &req->q[0];
	struct dns_tlsa *t = &req->tlsa;
	char why[160];
	enum outcome out = outcome_of(q, why, sizeof(why));

	if (out == OUT_TEMP) {
		fail(req, DNS_TEMPFAIL, "TLSA lookup of %s failed: %s",
		     t->qname, why);
		return;
	}
	if (sec_of(q) != DNS_SECURE)
		t->status = DNS_TLSA_INSECURE;
	else if (out == OUT_DATA)
		tlsa_records(t, q->res);
	else
		t->status = DNS_TLSA_NONE;
	finish(req);
}

/* ---- the loop side ---------------------------------------------------- */

/* Answers are only taken in inside ub_process(); the stages move on after
 * it has returned, so no libunbound call is made from its callback. */
static void on_readable(struct ev_loop *loop, ev_io *w, int revents)
{
	struct dns *dns = w->data;
	struct req *req;

	(void)revents;
	if (ub_process(dns->ub) != UB_NOERROR) {
		/* Its thread is gone and the pipe would stay readable for
		 * ever: stop watching; the deadlines answer what is left. */
		log_msg(LOG_ERR, "dns", "libunbound's worker is gone; "
					"lookups will time out");
		ev_io_stop(loop, w);
	}
	while ((req = dns->ready) != NULL) {
		dns->ready = req->next_ready;
		if (req->stage == STAGE_MX)
			mx_answered(req);
		else if (req->stage == STAGE_ADDR)
			addresses_answered(req);
		else if (req->stage == STAGE_RRSET)
			rrset_answered(req);
		else if (req->stage == STAGE_TLSA)
			tlsa_answered(req);
	}
}

/* ---- setting libunbound up -------------------------------------------- */

static bool ub_ok(int rc, const char *what, char *err, size_t err_len)
{
	if (rc == UB_NOERROR)
		return true;
	snprintf(err, err_len, "dns: %s: %s", what, ub_strerror(rc));
	return false;
}

static bool set_option(struct ub_ctx *ub, const char *name,
		       const char *value, char *err, size_t err_len)
{
	return ub_ok(ub_ctx_set_option(ub, name, value), name, err, err_len);
}

/*
 * RFC 6761 / RFC 8375 special-use names: no delegation from the root
 * exists for them, so with the root's anchor every answer a site's
 * resolver gives for them from a local zone would be bogus. They are
 * insecure instead; a trust anchor of their own (a test zone's key as
 * [dns] trust_anchor) still makes a zone under them secure.
 */
static const char *const special_use[] = {
	"test.", "example.", "invalid.", "localhost.", "home.arpa.",
};

/* The validator and its anchor, or no validation ([dns] trust_anchor =
 * none: every answer is insecure, so DANE never applies). */
static bool set_validation(struct ub_ctx *ub, const struct config *cfg,
			   char *err, size_t err_len)
{
	char what[PATH_MAX + 32];

	if (cfg->dns_trust_anchor == NULL)
		return set_option(ub, "module-config:", "iterator", err,
				  err_len);
	if (!set_option(ub, "module-config:", "validator iterator", err,
			err_len))
		return false;
	for (size_t i = 0; i < sizeof(special_use) / sizeof(*special_use); i++)
		if (!set_option(ub, "domain-insecure:", special_use[i], err,
				err_len))
			return false;
	snprintf(what, sizeof(what), "trust anchor %s", cfg->dns_trust_anchor);
	return ub_ok(ub_ctx_add_ta_file(ub, cfg->dns_trust_anchor), what, err,
		     err_len);
}

static bool set_options(struct ub_ctx *ub, bool forwarders, char *err,
			size_t err_len)
{
	static const char *const options[][2] = {
		/* A resolver that failed is asked again at once instead of
		 * being skipped for infra-host-ttl (15 min): with one or two
		 * resolvers there is nobody else to ask. */
		{"infra-keep-probing:", "yes"},
		/* The per-try timeout grows with backoff up to this (the
		 * default is 120 s); DNS_TIMEOUT bounds the whole route. */
		{"infra-cache-max-rtt:", "5000"},
		/* Negative answers (NXDOMAIN, no MX) are kept at most a
		 * minute, so a domain that fixes its DNS is seen again
		 * soon; positive ones live as long as their TTL says. */
		{"cache-max-negative-ttl:", "60"},
		/* libunbound answers these from built-in zones (NXDOMAIN)
		 * unless told otherwise; the site's resolvers decide. A
		 * "transparent" zone without data asks them ("nodefault"
		 * is not taken through ub_ctx_set_option). */
		{"local-zone:", "test. transparent"},
		{"local-zone:", "home.arpa. transparent"},
		/* The servers asked are the ones named; 127.0.0.53 or a
		 * local unbound is a normal choice. */
		{"do-not-query-localhost:", "no"},
	};

	for (size_t i = 0; i < sizeof(options) / sizeof(options[0]); i++)
		if (!set_option(ub, options[i][0], options[i][1], err,
				err_len))
			return false;
	/* With [dns] resolver set even "localhost" is theirs to answer,
	 * not libunbound's built-in 127.0.0.1 and ::1. */
	return !forwarders || set_option(ub, "local-zone:",
					 "localhost. transparent", err,
					 err_len);
}

static bool set_servers(struct ub_ctx *ub, const struct config *cfg,
			char *err, size_t err_len)
{
	char what[128];

	if (cfg->n_dns_resolvers == 0)
		return ub_ok(ub_ctx_resolvconf(ub, NULL), "/etc/resolv.conf",
			     err, err_len) &&
		       ub_ok(ub_ctx_hosts(ub, NULL), "/etc/hosts", err,
			     err_len);
	for (size_t i = 0; i < cfg->n_dns_resolvers; i++) {
		snprintf(what, sizeof(what), "resolver %s",
			 cfg->dns_resolvers[i]);
		if (!ub_ok(ub_ctx_set_fwd(ub, cfg->dns_resolvers[i]), what,
			   err, err_len))
			return false;
	}
	return true;
}

/* libunbound reads the anchors only when a context is finalized, which
 * its data calls do first: removing a name nobody added does just that,
 * without a query. Its own reasons go to stderr. */
static bool finalized(struct ub_ctx *ub)
{
	return ub_ctx_data_remove(ub, "smtpgw-check.invalid.") == 0;
}

/* The anchor is read here, by this process (the queue manager runs as
 * [gateway] user), rather than at the first lookup, which would fail
 * every lookup after it. */
static bool load_now(struct ub_ctx *ub, const struct config *cfg, char *err,
		     size_t err_len)
{
	if (finalized(ub))
		return true;
	snprintf(err, err_len, "dns: trust anchor %.200s: cannot be loaded "
		 "by this process (uid %u); libunbound's reason is on stderr",
		 cfg->dns_trust_anchor ? cfg->dns_trust_anchor : "(none)",
		 (unsigned)getuid());
	return false;
}

struct dns *dns_new(struct ev_loop *loop, const struct config *cfg,
		    char *err, size_t err_len)
{
	struct dns *dns = calloc(1, sizeof(*dns));

	if (dns == NULL) {
		snprintf(err, err_len, "dns: out of memory");
		return NULL;
	}
	dns->loop = loop;
	dns->rng = rng_seed();
	dns->ub = ub_ctx_create();
	if (dns->ub == NULL) {
		snprintf(err, err_len, "dns: cannot create a libunbound "
				       "context");
		free(dns);
		return NULL;
	}
	if (!ub_ok(ub_ctx_async(dns->ub, 1), "threads", err, err_len) ||
	    !set_options(dns->ub, cfg->n_dns_resolvers > 0, err, err_len) ||
	    !set_validation(dns->ub, cfg, err, err_len) ||
	    !set_servers(dns->ub, cfg, err, err_len) ||
	    !load_now(dns->ub, cfg, err, err_len)) {
		ub_ctx_delete(dns->ub);
		free(dns);
		return NULL;
	}
	dns->validating = cfg->dns_trust_anchor != NULL;
	ev_io_init(&dns->io, on_readable, ub_fd(dns->ub), EV_READ);
	dns->io.data = dns;
	ev_io_start(loop, &dns->io);
	ev_timer_init(&dns->kick, on_kick, 0., 0.);
	dns->kick.data = dns;
	return dns;
}

void dns_free(struct dns *dns)
{
	if (dns == NULL)
		return;
	ev_io_stop(dns->loop, &dns->io);
	ev_timer_stop(dns->loop, &dns->kick);
	/* Joins libunbound's thread and drops its queries without calling
	 * back, so nothing points at a request any more. */
	ub_ctx_delete(dns->ub);
	for (size_t i = 0; i < N_BUCKETS; i++)
		while (dns->buckets[i] != NULL)
			req_free(dns->buckets[i]);
	free(dns);
}

/* ---- checking the trust anchor ------------------------------------------ */

/* A DS or DNSKEY record in the file: the word as a field, outside a
 * comment. Lines are bounded; a longer one is read in pieces. */
static bool has_anchor_records(FILE *f)
{
	char line[4096], *save;

	while (fgets(line, sizeof(line), f) != NULL) {
		char *semi = strchr(line, ';');

		if (semi != NULL)
			*semi = '\0';
		for (char *w = strtok_r(line, " \t\r\n", &save); w != NULL;
		     w = strtok_r(NULL, " \t\r\n", &save))
			if (strcasecmp(w, "DS") == 0 ||
			    strcasecmp(w, "DNSKEY") == 0)
				return true;
	}
	return false;
}

/* A context of its own, thrown away: the check touches nothing else. */
static bool anchor_loads(const struct config *cfg, char *err, size_t err_len)
{
	struct ub_ctx *ub = ub_ctx_create();
	bool ok = ub != NULL && set_validation(ub, cfg, err, err_len);

	if (ok && !finalized(ub)) {
		snprintf(err, err_len, "libunbound cannot load it as DS or "
				       "DNSKEY records (its reason is on "
				       "stderr)");
		ok = false;
	} else if (ub == NULL) {
		snprintf(err, err_len, "cannot create a libunbound context");
	}
	ub_ctx_delete(ub);
	return ok;
}

bool dns_check_config(const struct config *cfg, bool load, char *err,
		      size_t err_len)
{
	const char *path = cfg->dns_trust_anchor;
	char where[PATH_MAX + 32], why[256] = "";
	FILE *f;

	if (path == NULL)
		return true;
	config_key_where(cfg, "dns", "trust_anchor", where, sizeof(where));
	if ((f = fopen(path, "r")) == NULL) {
		snprintf(err, err_len, "%s: trust_anchor %s: %s", where, path,
			 strerror(errno));
		return false;
	}
	if (!has_anchor_records(f))
		snprintf(why, sizeof(why), "no DS or DNSKEY record in it");
	fclose(f);
	if (why[0] == '\0' && (!load || anchor_loads(cfg, why, sizeof(why))))
		return true;
	snprintf(err, err_len, "%s: trust_anchor %s: %s", where, path, why);
	return false;
}

/* ---- the interface ---------------------------------------------------- */

/* Nothing to queue the answer on: say so now rather than never, the
 * lesser breach of the contract. */
static void answer_oom(const char *name, uint64_t id, dns_route_cb *cb,
		       dns_tlsa_cb *tlsa_cb, void *arg)
{
	struct dns_route *rt = calloc(1, sizeof(*rt));
	struct dns_tlsa *t = calloc(1, sizeof(*t));

	log_msg(LOG_ERR, "dns", "out of memory for %s", name);
	if (rt != NULL && t != NULL) {
		rt->status = DNS_TEMPFAIL;
		t->status = DNS_TLSA_FAILED;
		snprintf(rt->error, sizeof(rt->error), "out of memory");
		snprintf(t->error, sizeof(t->error), "out of memory");
		if (tlsa_cb != NULL)
			tlsa_cb(id, t, arg);
		else
			cb(id, rt, arg);
	}
	free(rt);
	free(t);
}

/* One of cb and tlsa_cb is set: which kind of answer the request gives. */
static struct req *start(struct dns *dns, const char *name, unsigned port,
			 uint64_t id, dns_route_cb *cb, dns_tlsa_cb *tlsa_cb,
			 void *arg)
{
	struct req *req = req_new(dns, name, port, id, arg);

	if (req == NULL) {
		answer_oom(name, id, cb, tlsa_cb, arg);
		return NULL;
	}
	req->cb = cb;
	req->tlsa_cb = tlsa_cb;
	ev_timer_start(dns->loop, &req->deadline);
	return req;
}

void dns_mx_route(struct dns *dns, const char *domain, unsigned port,
		  uint64_t id, dns_route_cb *cb, void *arg)
{
	char name[256];
	bool valid = dns_name_copy(domain, name, sizeof(name));
	struct req *req = start(dns, valid ? name : domain, port, id, cb, NULL,
				arg);

	if (req == NULL)
		return;
	if (!valid) {
		fail(req, DNS_PERMFAIL, "invalid domain name");
		return;
	}
	req->stage = STAGE_MX;
	ask(req, &req->q[0], req->name, RR_MX);
	if (req->in_flight == 0)
		mx_answered(req);
}

void dns_host_route(struct dns *dns, const char *host, unsigned port,
		    uint64_t id, dns_route_cb *cb, void *arg)
{
	struct req *req = start(dns, host, port, id, cb, NULL, arg);
	struct dns_route *rt;

	if (req == NULL)
		return;
	rt = &req->route;
	snprintf(rt->hosts[0].name, sizeof(rt->hosts[0].name), "%s", host);
	rt->n_hosts = 1;
	rt->mx_sec = DNS_SECURE; /* the configuration named it */
	if (parse_literal(host, port, &rt->hosts[0].addrs[0])) {
		rt->hosts[0].n_addrs = 1;
		rt->status = DNS_OK;
		finish(req);
		return;
	}
	if (!dns_name_copy(host, rt->hosts[0].name, sizeof(rt->hosts[0].name))) {
		fail(req, DNS_PERMFAIL, "%s: invalid host name", host);
		return;
	}
	ask_addresses(req);
}

void dns_next_hop_route(struct dns *dns, const struct next_hop *hop,
			uint64_t id, dns_route_cb *cb, void *arg)
{
	if (hop->no_mx)
		dns_host_route(dns, hop->host, hop->port, id, cb, arg);
	else
		dns_mx_route(dns, hop->host, hop->port, id, cb, arg);
}

void dns_route_for(struct dns *dns, const struct route *rt, const char *domain,
		   uint64_t id, dns_route_cb *cb, void *arg)
{
	if (rt->hop != NULL)
		dns_next_hop_route(dns, rt->hop, id, cb, arg);
	else
		dns_mx_route(dns, domain, 25, id, cb, arg);
}

void dns_rrset(struct dns *dns, const char *name, int rrtype, uint64_t id,
	       dns_rrset_cb *cb, void *arg)
{
	char copy[256];
	bool valid = dns_name_copy(name, copy, sizeof(copy));
	struct req *req = req_new(dns, valid ? copy : "", 0, id, arg);

	if (req == NULL) {
		struct dns_rrset rs = {.status = DNS_TEMPFAIL,
				       .error = "out of memory"};

		log_msg(LOG_ERR, "dns", "out of memory for %s", name);
		cb(id, &rs, arg); /* as start(): the lesser breach */
		return;
	}
	req->rrset_cb = cb;
	ev_timer_start(dns->loop, &req->deadline);
	if (!valid) {
		fail(req, DNS_PERMFAIL, "invalid name");
		return;
	}
	req->stage = STAGE_RRSET;
	ask(req, &req->q[0], req->name, rrtype);
	if (req->in_flight == 0)
		rrset_answered(req);
}

void dns_tlsa(struct dns *dns, const char *host, unsigned port, uint64_t id,
	      dns_tlsa_cb *tlsa_cb, void *arg)
{
	char qname[DNS_NAME_MAX + 1];
	bool valid = tlsa_qname(host, port, qname, sizeof(qname));
	struct req *req = start(dns, valid ? qname : host, port, id, NULL,
				tlsa_cb, arg);

	if (req == NULL)
		return;
	snprintf(req->tlsa.qname, sizeof(req->tlsa.qname), "%.253s", req->name);
	if (!valid) {
		fail(req, DNS_PERMFAIL, "no TLSA name for %.200s port %u",
		     host, port);
		return;
	}
	req->stage = STAGE_TLSA;
	ask(req, &req->q[0], req->name, RR_TLSA);
	if (req->in_flight == 0)
		tlsa_answered(req);
}

bool dns_validating(const struct dns *dns)
{
	return dns->validating;
}

void dns_cancel(struct dns *dns, uint64_t id)
{
	struct req *req = *bucket(dns, id);

	while (req != NULL) {
		struct req *next = req->next;

		if (req->id == id && !req->cancelled) {
			req->cancelled = true;
			ev_timer_stop(dns->loop, &req->deadline);
			cancel_queries(req);
			release_answers(req);
			req_maybe_free(req);
		}
		req = next;
	}
}
