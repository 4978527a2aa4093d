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

/* One client config per outbound level (encrypt: no checks; verify: chain
 * against ca_file and the name). NULL for none/may-without-TLS. */
struct tls_clients {
	struct tls_config *encrypt;
	struct tls_config *verify;
	int encrypt_session; /* memory files holding the resumable sessions */
	int verify_session;
};

bool tls_clients_new(const struct config *cfg, struct tls_clients *out,
		     char *err, size_t err_len);
void tls_clients_free(struct tls_clients *c);

#endif
