/*
 * tls: everything libtls. The server context for STARTTLS (its
 * certificates come from the store, net/certs.h, which this header also
 * brings), our own check of a client's chain, and one client config per
 * outbound level. It never touches a socket: conn.c drives the handshakes.
 */
#ifndef SMTPGW_TLS_H
#define SMTPGW_TLS_H

#include "core/config.h"
#include "net/certs.h"

#include <stdbool.h>
#include <stddef.h>
#include <time.h>
#include <tls.h>

struct tls_server;

/* `ask_certs`: request (never require) client certificates, checked
 * against ca_file by tls_server_check_peer (the generation decides). */
struct tls_server *tls_server_new(const struct config *cfg, bool ask_certs,
				  char *err, size_t err_len);
void tls_server_free(struct tls_server *srv);
struct tls *tls_server_ctx(struct tls_server *srv);

enum tls_peer {
	TLS_PEER_NONE,	    /* no client certificate ("Anonymous") */
	TLS_PEER_UNTRUSTED, /* presented, chain does not verify */
	TLS_PEER_TRUSTED,   /* presented and verifies against ca_file */
};

/* Checks the client's chain against ca_file; `why` gets the reason when
 * it is untrusted. */
enum tls_peer tls_server_check_peer(struct tls_server *srv, struct tls *conn,
				    char *why, size_t why_len);

/* Postfix's wording for the log: "Anonymous", "Untrusted", "Trusted". */
const char *tls_peer_name(enum tls_peer peer);

struct x509_store_st; /* OpenSSL's X509_STORE */

/* One client config per outbound level (encrypt: no checks; verify: chain
 * against ca_file and the name). NULL for none/may-without-TLS. ca_pem is
 * ca_file's text, read by whoever built the generation (the master, as
 * root: the children need no access to the file); trust is that text
 * parsed, for those that check certificates outside a libtls handshake
 * (the MTA-STS policy fetch, tls_check_server), made by the first of them
 * that needs it, in the queue manager only: Debian's bundle takes ~30 ms
 * to parse (once per queue manager, as libtls does for every verify
 * connection) and ~1 MiB, more than twenty under ASan. */
struct tls_clients {
	struct tls_config *encrypt;
	struct tls_config *verify;
	int encrypt_session; /* memory files holding the resumable sessions */
	int verify_session;
	char *ca_pem;	     /* ca_file's text (NULL: it did not read) */
	size_t ca_pem_len;
	struct x509_store_st *trust; /* ca_pem parsed: tls_clients_load_trust */
};

bool tls_clients_new(const struct config *cfg, struct tls_clients *out,
		     char *err, size_t err_len);
void tls_clients_free(struct tls_clients *c);
/* Parses ca_pem into trust, once; false when there is nothing to trust. */
bool tls_clients_load_trust(struct tls_clients *c);

enum tls_cert_verdict {
	TLS_CERT_OK,
	TLS_CERT_UNTRUSTED, /* no chain to ca_file, or unreadable */
	TLS_CERT_EXPIRED,
	TLS_CERT_NAME,	    /* valid, but not for that name */
};

/* The server's chain on an established `conn` checked as verify would
 * have (against ca_file, for `name`), after a handshake that did not:
 * MTA-STS testing mode reports what enforce would have refused. `why`
 * gets the reason when it is not OK. Builds c->trust at its first call. */
enum tls_cert_verdict tls_check_server(const struct tls_clients *c,
				       struct tls *conn, const char *name,
				       char *why, size_t why_len);

#endif
