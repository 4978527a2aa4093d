/*
 * sts: the queue manager's MTA-STS resolver (RFC 8461). For a recipient
 * domain it finds the policy in force: the _mta-sts TXT record through
 * net/dns, the policy file from https://mta-sts.DOMAIN/.well-known/
 * mta-sts.txt through net/https (its addresses from net/dns, never the
 * system resolver), checked as §3.3 says, cached in memory and in
 * SPOOL/sts/ (spool/sts_cache) by id and max_age. One lookup per domain
 * runs at a time; every caller waiting for it gets the same answer.
 * Answers come back by the caller's id, never from inside an sts_* call.
 * Delivery applies the answer (which MX hosts, which level); the small
 * judgments it asks of this module are pure: does an MX host match, what
 * a session's outcome counts as, and how a failure is logged.
 */
#ifndef SMTPGW_OUTBOUND_STS_H
#define SMTPGW_OUTBOUND_STS_H

#include "proto/sts.h"

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct dns;
struct generation;
struct sts;

/* What applies to a domain: `have` false when it publishes no policy we
 * know of (or one could not be had and none is cached). */
struct sts_answer {
	bool have;
	struct sts_policy policy;
	char id[STS_ID_MAX + 1];
	const char *source; /* "fetched", "cached", "cached, fetch failed" */
};

typedef void sts_cb(uint64_t id, const struct sts_answer *a, void *arg);

/* `current` as delivery's: the fetch takes its trust anchors from the
 * generation current when it starts. */
struct sts *sts_new(struct ev_loop *loop, struct dns *dns,
		    struct generation *const *current, char *err,
		    size_t err_len);
/* Drops every lookup without calling back. Not from a callback. */
void sts_free(struct sts *s);

/* The policy in force for `domain` (lower case); `cb` exactly once, unless
 * cancelled first. */
void sts_lookup(struct sts *s, const char *domain, uint64_t id, sts_cb *cb,
		void *arg);
void sts_cancel(struct sts *s, uint64_t id);

/* What is known of `domain` at once, from memory or SPOOL/sts: the cached
 * policy if it has not expired. No network; a lookup may then find more. */
void sts_peek(struct sts *s, const char *domain, struct sts_answer *a);

/* ---- applying a policy (delivery asks) ---- */

struct client_result;

/* May MX host `host` of `domain` be used under answer `a`? Yes when `a`
 * has no policy, mode none, or the policy names it (§4.1); false with
 * the reason in why ("MX host X is not in the MTA-STS policy of D ..."). */
bool sts_mx_allowed(const struct sts_answer *a, const char *domain,
		    const char *host, char *why, size_t why_len);

/* One failure under a policy, for the log and the counts. */
struct sts_failure {
	const char *domain, *mx, *relay, *qid;
	enum tlsrpt_result result;
	const char *reason;
};

/* Logs event=mta_sts_failure (with the policy's mode and id) and counts
 * it for TLS reporting. */
void sts_report(struct sts *s, const struct sts_answer *a,
		const struct sts_failure *f);

/* What a finished session says under a policy: false when it went well
 * (TLS, and a certificate that verified or was not checked); true with
 * the RFC 8460 result and a reason when it failed. `tls_tried`: the level
 * asked for TLS at all. */
bool sts_session_failed(const struct client_result *r, bool tls_tried,
			enum tlsrpt_result *result, const char **why);

/* TLS reporting (RFC 8460), later: one delivery session to `domain` under
 * its policy went well (ok) or failed with `result`. Counted per domain;
 * nothing reads the counts yet. */
void sts_count(struct sts *s, const char *domain, bool ok,
	       enum tlsrpt_result result);

#endif
