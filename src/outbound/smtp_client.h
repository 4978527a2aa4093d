/*
 * smtp_client: one outbound SMTP transaction with one host, as an explicit
 * state machine on a conn: connect, banner, EHLO (HELO fallback), STARTTLS
 * as the level asks, EHLO again, MAIL, RCPT and DATA (in one write when
 * PIPELINING is offered), the message streamed from the spool file,
 * dot-stuffed, then QUIT, or, with a connection cache, the connection
 * parked idle for the next transaction to the same place (README
 * "Connection reuse"), which starts with RSET. It reports what happened;
 * what that means for the queue (retry, next MX, bounce) is delivery.c's
 * business.
 */
#ifndef SMTPGW_SMTP_CLIENT_H
#define SMTPGW_SMTP_CLIENT_H

#include "core/config.h"
#include "net/dane.h"
#include "proto/requiretls.h"
#include "net/tls.h"
#include "proto/smtp_proto.h"

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <tls.h>

struct conncache;

/* One recipient of the transaction; the client fills code and reply. */
struct client_rcpt {
	const char *address;
	int code;	  /* RCPT reply, or the end-of-data reply when the
			     RCPT was accepted; 0 when never asked */
	char reply[256];  /* that reply's text, "250 2.1.5 Ok" */
};

/* Everything the client needs; all memory belongs to the caller and must
 * outlive the client. */
struct client_job {
	struct sockaddr_storage addr; /* with the port */
	const char *host;	      /* MX or next-hop name: logs, SNI and
					 the name checked under verify */
	const char *tls_name;	      /* when set, the SNI and the name
					 checked instead of host */
	const struct tlsa_rr *tlsa;   /* DANE: TLS required, and the chain
					 must match these usable records
					 (net/dane.h) after the handshake;
					 NULL: no DANE */
	size_t n_tlsa;
	const char *helo;	      /* our EHLO name */
	enum tls_level level;
	struct tls_config *tls;	      /* the level's config; NULL for none */
	bool no_tls;		      /* may, after a failed handshake with
					 this host: do not STARTTLS again */
	const char *sender;	      /* "" for the null sender */
	struct client_rcpt *rcpts;
	size_t n_rcpts;
	int body_fd;		      /* the spool file, read with pread */
	const char *body_data;	      /* or the message in memory */
	off_t body_offset;	      /* where the message starts in it */
	uint64_t body_size;	      /* octets from body_offset to EOF */
	enum smtp_body_type body_type;
	bool smtputf8;
	double timeout;		      /* per step (RFC 5321 4.5.3.2) */
	const struct requiretls_hop *requiretls; /* a REQUIRETLS message
					 (RFC 8689): how the host was found
					 (mx_*); the client adds what the
					 session shows. NULL: an ordinary one */
	/* Connection reuse: with a cache, an idle connection that serves
	 * this job (conncache_key_serves) is taken from it, and afterwards
	 * the connection is parked there; NULL: a connection of its own. */
	struct conncache *cache;
	unsigned reuse_max;	      /* transactions per connection */
	double reuse_idle;	      /* seconds a parked one may wait */
	unsigned epoch;		      /* the generation: part of the key */
	/* When set, the server's chain is also checked after the handshake
	 * against these clients' ca_file for `host` (tls_check_server), and
	 * only reported: MTA-STS testing mode. */
	const struct tls_clients *cert_check;
};

enum client_outcome {
	CLIENT_DONE,	     /* the transaction got its final reply; see the
				per-recipient codes (and `code` for MAIL or
				DATA refusals that covered everyone) */
	CLIENT_CONNECT_FAILED, /* no connection, no banner, or 421: try the
				next host */
	CLIENT_TLS_NOT_OFFERED, /* encrypt/verify, no STARTTLS in EHLO */
	CLIENT_TLS_FAILED,   /* STARTTLS refused or the handshake failed */
	CLIENT_LOST,	     /* connection lost or timed out mid-way */
	CLIENT_REQUIRETLS,   /* a REQUIRETLS message this hop cannot take
				(not authenticated, or no REQUIRETLS in its
				EHLO): nothing was sent; reply says why */
};

/* What became of STARTTLS in this session, for TLS reporting (RFC 8460). */
enum client_tls_try {
	TLS_TRY_NONE,	     /* not tried: no EHLO reply, level none, or
				may's plaintext retry */
	TLS_TRY_NOT_OFFERED, /* the EHLO reply had no STARTTLS */
	TLS_TRY_REFUSED,     /* STARTTLS got an error reply */
	TLS_TRY_FAILED,	     /* the handshake or the certificate check
				failed: reply says why */
	TLS_TRY_DANE_FAILED, /* the chain matched none of the TLSA records
				(net/dane.h): reply says why */
	TLS_TRY_OK,	     /* TLS up (and verified when the level is) */
};

struct client_result {
	enum client_outcome outcome;
	int code;	      /* the reply that ended it, when there was one */
	char reply[256];      /* its text, or a local reason */
	char tls_version[16]; /* "TLSv1.3", or "" when in plaintext */
	char tls_cipher[64];
	bool tls_verified;    /* chain and name checked (verify level), or
				 authenticated by DANE */
	enum dane_auth dane;  /* how DANE authenticated it, if it did */
	bool cert_checked;    /* job.cert_check ran: see cert, cert_why */
	enum tls_cert_verdict cert;
	char cert_why[128];
	bool dot_sent;	      /* the end of data went out: after a loss the
				 message may have arrived all the same */
	char starttls_refused[128]; /* may: the refusal it went on in
				       plaintext after, or "" */
	bool reused;	      /* it ran on a connection kept from an earlier
				 transaction (TLS fields: that handshake's) */
	double setup_done;    /* when MAIL FROM went out (the end of
				 Postfix's connection set-up), or 0 */
	enum client_tls_try tls_try;
	char local_ip[64];    /* our address on the connection, or "" */
	bool requiretls_sent; /* MAIL FROM carried REQUIRETLS */
};

struct smtp_client;

typedef void client_done_cb(void *owner, const struct client_result *r);

/* Starts the transaction; `done` is called exactly once, never from
 * inside this call, unless the client is aborted first. A cached
 * connection that fails its RSET is closed and a new one made, silently:
 * that is no failure of the transaction. */
struct smtp_client *smtp_client_start(struct ev_loop *loop,
				      const struct client_job *job,
				      client_done_cb *done, void *owner);
/* Stops at once: QUIT is not sent, `done` is not called and the
 * connection is not kept. */
void smtp_client_abort(struct smtp_client *c);

#endif
