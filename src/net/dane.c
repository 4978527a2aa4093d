/*
 * dane: the DANE plan for an MX host and the check of a server's chain
 * against TLSA records (RFC 7672, RFC 7671), behind dane.h. It owns only
 * the OpenSSL objects it makes during one dane_verify call and frees them
 * before returning. It never does I/O, DNS or TLS itself, and it is the
 * only place that decides what a TLSA record means for a connection.
 */
#include "net/dane.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

enum { CHAIN_MAX = 16 }; /* certificates of a peer chain looked at */

bool dane_level(enum tls_level level)
{
	return level == TLS_LEVEL_DANE || level == TLS_LEVEL_DANE_ONLY;
}

/* ---- the plan ---------------------------------------------------------- */

bool dane_wants_tlsa(enum tls_level level, const struct dns_route *rt,
		     const struct dns_host *h)
{
	return dane_level(level) && rt->mx_sec == DNS_SECURE &&
	       h->sec == DNS_SECURE;
}

static enum dane_plan without_dane(enum tls_level level, char *why,
				   size_t why_len, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* No DANE for this host: dane goes on as may, dane-only defers. */
static enum dane_plan without_dane(enum tls_level level, char *why,
				   size_t why_len, const char *fmt, ...)
{
	char text[400];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	snprintf(why, why_len, "%s%s",
		 level == TLS_LEVEL_DANE_ONLY ? "dane-only: " : "", text);
	return level == TLS_LEVEL_DANE_ONLY ? DANE_PLAN_DEFER : DANE_PLAN_MAY;
}

static enum dane_plan from_tlsa(enum tls_level level,
				const struct dns_tlsa *t, char *why,
				size_t why_len)
{
	switch (t->status) {
	case DNS_TLSA_RECORDS:
		if (t->n_records > 0)
			return DANE_PLAN_AUTH;
		if (level == TLS_LEVEL_DANE_ONLY)
			return without_dane(level, why, why_len,
					    "none of the %zu TLSA records of "
					    "%s is usable",
					    t->n_seen, t->qname);
		snprintf(why, why_len, "none of the %zu TLSA records of %s "
			 "is usable: TLS without authentication",
			 t->n_seen, t->qname);
		return DANE_PLAN_ENCRYPT;
	case DNS_TLSA_NONE:
		return without_dane(level, why, why_len,
				    "no TLSA records at %s", t->qname);
	case DNS_TLSA_INSECURE:
		return without_dane(level, why, why_len,
				    "the TLSA answer for %s is insecure "
				    "(not DNSSEC-signed)",
				    t->qname);
	case DNS_TLSA_FAILED:
		break;
	}
	snprintf(why, why_len, "%s", t->error);
	return DANE_PLAN_DEFER;
}

enum dane_plan dane_plan(enum tls_level level, const struct dns_route *rt,
			 const struct dns_host *h, const struct dns_tlsa *tlsa,
			 char *why, size_t why_len)
{
	snprintf(why, why_len, "not a DANE level");
	if (!dane_level(level))
		return DANE_PLAN_MAY;
	if (rt->mx_sec != DNS_SECURE)
		return without_dane(level, why, why_len,
				    "the MX records that chose %s are "
				    "insecure (not DNSSEC-signed)",
				    h->name);
	if (h->sec != DNS_SECURE || tlsa == NULL)
		return without_dane(level, why, why_len,
				    "the addresses of %s are insecure (not "
				    "DNSSEC-signed, or a literal)",
				    h->name);
	return from_tlsa(level, tlsa, why, why_len);
}

enum dane_dest dane_destination(const struct dns_route *rt,
				const struct dns_tlsa *const *tlsa)
{
	enum dane_dest d = DANE_DEST_INSECURE;

	for (size_t i = 0; i < rt->n_hosts && i < DNS_MAX_HOSTS; i++) {
		if (tlsa[i] == NULL)
			continue;
		if (tlsa[i]->status == DNS_TLSA_RECORDS && tlsa[i]->n_seen > 0)
			return DANE_DEST_SECURE;
		if (tlsa[i]->status == DNS_TLSA_FAILED)
			d = DANE_DEST_BOGUS;
	}
	return d;
}

const char *dane_dest_name(enum dane_dest d)
{
	switch (d) {
	case DANE_DEST_INSECURE:
		return "insecure";
	case DANE_DEST_SECURE:
		return "secure";
	case DANE_DEST_BOGUS:
		return "bogus";
	case DANE_DEST_UNKNOWN:
		break;
	}
	return NULL;
}

/* ---- matching ---------------------------------------------------------- */

/* The peer's chain, leaf first; NULL when there is no certificate. */
static STACK_OF(X509) *read_chain(const uint8_t *pem, size_t len)
{
	BIO *bio = len <= INT32_MAX ? BIO_new_mem_buf(pem, (int)len) : NULL;
	STACK_OF(X509) *chain = sk_X509_new_null();
	X509 *cert;

	while (bio != NULL && chain != NULL && sk_X509_num(chain) < CHAIN_MAX &&
	       (cert = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL)
		if (sk_X509_push(chain, cert) <= 0)
			X509_free(cert);
	BIO_free(bio);
	if (chain != NULL && sk_X509_num(chain) == 0) {
		sk_X509_free(chain);
		chain = NULL;
	}
	return chain;
}

/* The DER the selector picks: the certificate or its public key. */
static int selected_der(const X509 *cert, uint8_t selector, uint8_t **der)
{
	*der = NULL;
	if (selector == TLSA_SEL_CERT)
		return i2d_X509(cert, der);
	return i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), der);
}

/* Does the record's data match this certificate? */
static bool rr_matches(const struct tlsa_rr *rr, const X509 *cert)
{
	uint8_t *der, md[EVP_MAX_MD_SIZE];
	unsigned md_len = 0;
	int len = selected_der(cert, rr->selector, &der);
	bool match = false;

	if (len <= 0)
		return false;
	if (rr->mtype == TLSA_MATCH_FULL)
		match = (size_t)len == rr->len &&
			memcmp(der, rr->data, rr->len) == 0;
	else if (EVP_Digest(der, (size_t)len, md, &md_len,
			    rr->mtype == TLSA_MATCH_SHA256 ? EVP_sha256()
							   : EVP_sha512(),
			    NULL) == 1)
		match = md_len == rr->len && memcmp(md, rr->data, md_len) == 0;
	OPENSSL_free(der);
	return match;
}

/* ---- DANE-TA ----------------------------------------------------------- */

/* The trust anchors DANE-TA records name: certificates of the chain they
 * match, and whole certificates given in a record (2 0 0). */
static size_t add_anchors(X509_STORE *store, const struct tlsa_rr *rrs,
			  size_t n, STACK_OF(X509) *chain)
{
	size_t added = 0;

	for (size_t i = 0; i < n; i++) {
		const struct tlsa_rr *rr = &rrs[i];

		if (rr->usage != TLSA_DANE_TA || !tlsa_usable(rr))
			continue;
		for (int k = 0; k < sk_X509_num(chain); k++)
			if (rr_matches(rr, sk_X509_value(chain, k)) &&
			    X509_STORE_add_cert(store, sk_X509_value(chain, k)))
				added++;
		if (rr->selector == TLSA_SEL_CERT &&
		    rr->mtype == TLSA_MATCH_FULL) {
			const unsigned char *p = rr->data;
			X509 *ta = d2i_X509(NULL, &p, (long)rr->len);

			if (ta != NULL && X509_STORE_add_cert(store, ta))
				added++;
			X509_free(ta);
		}
	}
	return added;
}

static bool names_leaf(X509 *leaf, const char *const *names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (names[i] != NULL &&
		    X509_check_host(leaf, names[i], 0,
				    X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS,
				    NULL) == 1)
			return true;
	return false;
}

/* The leaf verifies up to one of the anchors (which may be itself or
 * an intermediate: partial chains count), dates and purpose included. */
static bool chain_verifies(X509_STORE *store, STACK_OF(X509) *chain,
			   char *why, size_t why_len)
{
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	bool ok = false;

	if (ctx != NULL &&
	    X509_STORE_CTX_init(ctx, store, sk_X509_value(chain, 0), chain) ==
		1 &&
	    X509_STORE_CTX_set_default(ctx, "ssl_server") == 1) {
		X509_VERIFY_PARAM_set_flags(X509_STORE_CTX_get0_param(ctx),
					    X509_V_FLAG_PARTIAL_CHAIN);
		ok = X509_verify_cert(ctx) == 1;
		if (!ok)
			snprintf(why, why_len, "%s",
				 X509_verify_cert_error_string(
					 X509_STORE_CTX_get_error(ctx)));
	} else {
		snprintf(why, why_len, "out of memory");
	}
	X509_STORE_CTX_free(ctx);
	return ok;
}

/* 0: no DANE-TA record matched anything; 1: authenticated; -1: one
 * matched but the chain or the name did not hold (why says). */
static int try_ta(const struct tlsa_rr *rrs, size_t n, STACK_OF(X509) *chain,
		  const char *const *names, size_t n_names, char *why,
		  size_t why_len)
{
	X509_STORE *store = X509_STORE_new();
	char reason[160];
	int result = 0;

	if (store == NULL || add_anchors(store, rrs, n, chain) == 0) {
		X509_STORE_free(store);
		return 0;
	}
	if (!chain_verifies(store, chain, reason, sizeof(reason))) {
		snprintf(why, why_len, "a DANE-TA record matched, but the "
			 "certificate chain of %s does not verify to it: %s",
			 names[0], reason);
		result = -1;
	} else if (!names_leaf(sk_X509_value(chain, 0), names, n_names)) {
		snprintf(why, why_len, "a DANE-TA record matched, but the "
			 "certificate does not name %s", names[0]);
		result = -1;
	} else {
		result = 1;
	}
	X509_STORE_free(store);
	return result;
}

/* ---- the check ---------------------------------------------------------- */

static bool ee_matches(const struct tlsa_rr *rrs, size_t n, const X509 *leaf)
{
	for (size_t i = 0; i < n; i++)
		if (rrs[i].usage == TLSA_DANE_EE && tlsa_usable(&rrs[i]) &&
		    rr_matches(&rrs[i], leaf))
			return true;
	return false;
}

/* "TLSA 3 1 1 ab.. did not match the certificate of mx.example", or a
 * count when there were several usable records. */
static void no_match(const struct tlsa_rr *rrs, size_t n, const char *name,
		     char *why, size_t why_len)
{
	size_t usable = 0, first = n;
	char rr[96] = "";

	for (size_t i = 0; i < n; i++)
		if (tlsa_usable(&rrs[i]) && usable++ == 0)
			first = i;
	if (first < n)
		tlsa_describe(&rrs[first], rr, sizeof(rr));
	if (usable == 1)
		snprintf(why, why_len, "%s did not match the certificate%s of %s",
			 rr, rrs[first].usage == TLSA_DANE_TA ? " chain" : "",
			 name);
	else
		snprintf(why, why_len, "none of %zu TLSA records (%s, ...) "
			 "matched the certificate chain of %s", usable, rr,
			 name);
}

enum dane_auth dane_verify(const struct tlsa_rr *rrs, size_t n,
			   const uint8_t *pem, size_t pem_len,
			   const char *const *names, size_t n_names, char *why,
			   size_t why_len)
{
	static const char *const nobody[] = {"the server"};
	STACK_OF(X509) *chain = pem != NULL ? read_chain(pem, pem_len) : NULL;
	enum dane_auth auth = DANE_AUTH_NONE;
	int ta;

	if (n_names == 0) {
		names = nobody;
		n_names = 1;
	}
	if (chain == NULL) {
		snprintf(why, why_len, "%s sent no certificate", names[0]);
		return DANE_AUTH_NONE;
	}
	if (ee_matches(rrs, n, sk_X509_value(chain, 0)))
		auth = DANE_AUTH_EE;
	else if ((ta = try_ta(rrs, n, chain, names, n_names, why,
			      why_len)) == 1)
		auth = DANE_AUTH_TA;
	else if (ta == 0)
		no_match(rrs, n, names[0], why, why_len);
	sk_X509_pop_free(chain, X509_free);
	return auth;
}

const char *dane_auth_name(enum dane_auth auth)
{
	switch (auth) {
	case DANE_AUTH_EE:
		return "dane-ee";
	case DANE_AUTH_TA:
		return "dane-ta";
	case DANE_AUTH_NONE:
		break;
	}
	return "no";
}
