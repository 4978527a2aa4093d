/*
 * dane: SMTP DANE (RFC 7672) for outbound connections. Three parts: the
 * plan for one MX host (from the level, the DNSSEC state of its MX and
 * address records, and its TLSA RRset: authenticate, TLS without
 * authentication, as may, or not this host now), what a whole route
 * publishes (ctx.dane for policies), and the check of a server's certificate
 * chain against the usable TLSA records once the handshake is done
 * (libtls does no DANE; OpenSSL's libcrypto matches and verifies). No
 * I/O, no DNS and no socket here: net/dns.c looks the records up and
 * smtp_client runs the check on the chain libtls hands over.
 */
#ifndef SMTPGW_DANE_H
#define SMTPGW_DANE_H

#include "core/config.h"
#include "net/dns.h"
#include "proto/tlsa.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Levels that look for TLSA records: dane and dane-only. */
bool dane_level(enum tls_level level);

enum dane_plan {
	DANE_PLAN_MAY,     /* no DANE for this host: as may (dane only) */
	DANE_PLAN_ENCRYPT, /* secure TLSA RRset, none usable: TLS required,
			      not authenticated (RFC 7672 §2.2) */
	DANE_PLAN_AUTH,    /* TLS required, authenticated by the usable
			      TLSA records (dane_verify) */
	DANE_PLAN_DEFER,   /* not this host now: `why` says what failed */
};

/* Is a TLSA lookup wanted before connecting to `h` of route `rt`? Only
 * at a DANE level, and only when the MX RRset and the host's addresses
 * are DNSSEC-secure (RFC 7672 §2.2). */
bool dane_wants_tlsa(enum tls_level level, const struct dns_route *rt,
		     const struct dns_host *h);

/* What to do with host `h`: `tlsa` is its lookup's result, or NULL when
 * none was wanted. `why` gets the reason for DEFER (and says why DANE
 * does not apply for MAY). */
enum dane_plan dane_plan(enum tls_level level, const struct dns_route *rt,
			 const struct dns_host *h, const struct dns_tlsa *tlsa,
			 char *why, size_t why_len);

/* What a destination publishes, for client_tls (ctx.dane), from the DNSSEC
 * state of its MX answer and the TLSA answers of its MX hosts. */
enum dane_dest {
	DANE_DEST_UNKNOWN,  /* not looked up: ctx.dane absent */
	DANE_DEST_INSECURE, /* no DANE: MX, addresses or TLSA insecure, or
			       no TLSA records */
	DANE_DEST_SECURE,   /* a host has a secure, non-empty TLSA RRset */
	DANE_DEST_BOGUS,    /* a TLSA lookup failed (bogus, SERVFAIL,
			       timeout) and no host has a secure RRset */
};

/* The state of route `rt` (RFC 7672 §2.2): tlsa[i] is host i's TLSA
 * answer, NULL where none was looked up (dane_wants_tlsa said no). A
 * secure RRset anywhere wins, then a failure (which DANE must not
 * ignore: the host is skipped), else insecure. */
enum dane_dest dane_destination(const struct dns_route *rt,
				const struct dns_tlsa *const *tlsa);

/* "secure", "insecure", "bogus"; NULL for DANE_DEST_UNKNOWN. */
const char *dane_dest_name(enum dane_dest d);

enum dane_auth {
	DANE_AUTH_NONE,
	DANE_AUTH_EE, /* a DANE-EE(3) record matched the leaf */
	DANE_AUTH_TA, /* a DANE-TA(2) record matched a certificate the
			 chain verifies to, and the leaf names the host */
};

/* Checks a server's chain (PEM, leaf first, as tls_peer_cert_chain_pem
 * gives it) against the usable records of rrs[0..n). DANE-EE: the leaf
 * matches; no name or date check (RFC 7672 §3.1.1). DANE-TA: a
 * certificate of the chain matches (or the record holds a whole
 * certificate, 2 0 0), the leaf verifies up to it, dates included, and
 * names one of names[0..n_names) (RFC 7672 §3.2.2). On failure `why`
 * says which record did not match what, naming names[0]. */
enum dane_auth dane_verify(const struct tlsa_rr *rrs, size_t n,
			   const uint8_t *pem, size_t pem_len,
			   const char *const *names, size_t n_names, char *why,
			   size_t why_len);

/* "dane-ee", "dane-ta" (for logs), or "no". */
const char *dane_auth_name(enum dane_auth auth);

#endif
