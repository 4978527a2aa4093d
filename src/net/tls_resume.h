/*
 * tls_resume: inbound TLS session resumption (README "TLS", "Session
 * resumption"). Owns the ticket key ring (one shared page the master makes
 * before any fork and rotates; every worker reads it, so a ticket one
 * worker issued resumes on any other, and after a reload), the ticket
 * callback put on libtls's server SSL_CTXs in place of libtls's own, the
 * session id context, and the loopback self-test. It never touches a
 * session's socket and never writes a key anywhere but that page.
 */
#ifndef SMTPGW_TLS_RESUME_H
#define SMTPGW_TLS_RESUME_H

#include "core/config.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <tls.h>

enum {
	TICKET_NAME_LEN = 16, /* OpenSSL's key name, the ticket's first bytes */
	TICKET_AES_LEN = 32,  /* AES-256-CBC */
	TICKET_HMAC_LEN = 32, /* HMAC-SHA256 */
};

/* One ticket key, as copied out of the ring. */
struct tls_ticket_key {
	unsigned char name[TICKET_NAME_LEN];
	unsigned char aes[TICKET_AES_LEN];
	unsigned char hmac[TICKET_HMAC_LEN];
	double created; /* CLOCK_MONOTONIC seconds, in the master */
};

struct tls_ticket_ring;

/* The master, before the first fork: a shared anonymous page (locked in
 * memory when allowed, left out of core dumps) holding a fresh key from
 * getrandom(2). It becomes this process's ring: the ticket callback of
 * this process and of every child forked after reads it. */
struct tls_ticket_ring *tls_ticket_ring_new(char *err, size_t err_len);
void tls_ticket_ring_free(struct tls_ticket_ring *r);

/* The master: when the current key is `interval` seconds old (at `now`,
 * CLOCK_MONOTONIC seconds), a fresh key replaces the one before the
 * current one, which is erased: tickets are issued with the newest key
 * and accepted with it or the previous one. True when it rotated. */
bool tls_ticket_ring_rotate(struct tls_ticket_ring *r, double now,
			    double interval);

/* A child: its view of the page becomes read-only. */
void tls_ticket_ring_seal(struct tls_ticket_ring *r);

/* The key tickets are issued with; false when there is none. */
bool tls_ticket_ring_current(const struct tls_ticket_ring *r,
			     struct tls_ticket_key *out);

/* The key named `name`, if the ring still holds it; *newest tells whether
 * it is the one tickets are issued with. */
bool tls_ticket_ring_find(const struct tls_ticket_ring *r,
			  const unsigned char name[TICKET_NAME_LEN],
			  struct tls_ticket_key *out, bool *newest);

/* Seconds a session may be resumed for; 0 when [tls] session_lifetime
 * turns resumption off. */
int tls_resume_lifetime(const struct config *cfg);

/* Session lifetime and session id context on a server config, before
 * tls_configure; `ask_certs`: the server asks for client certificates. */
bool tls_resume_prepare(const struct config *cfg, bool ask_certs,
			struct tls_config *c, char *err, size_t err_len);

/* tls_configure(server, c), and then, when resumption is on, our ticket
 * callback on every SSL_CTX libtls made for it. Returns what
 * tls_configure returned. */
int tls_resume_configure(const struct config *cfg, struct tls *server,
			 struct tls_config *c);

/* Full handshake then resumption, for each of TLS 1.2 and 1.3 that
 * [tls] protocols allows, between a client and `server` over a
 * socketpair in this process; logs event=tls_resumption status=ok, or
 * status=unavailable with the reason. A few milliseconds of CPU per
 * version (the certificate's signature): for start and reload only.
 * `server` may be NULL (no TLS). */
bool tls_resume_selftest(const struct config *cfg, struct tls *server);

#endif
