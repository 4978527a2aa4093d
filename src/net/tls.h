/*
 * tls: everything libtls and certificates. The certificate store in
 * [tls] cert_dir (NAME.crt + NAME.key pairs, served by SNI), the Default
 * Cert made when the store is empty, the certificate inventory for
 * `smtpgw certs`, the server context for STARTTLS, our own check of a
 * client's chain, and one client config per outbound level. It never
 * touches a socket: conn.c drives the handshakes.
 */
#ifndef SMTPGW_TLS_H
#define SMTPGW_TLS_H

#include "core/config.h"

#include <stdbool.h>
#include <stddef.h>
#include <time.h>
#include <tls.h>

struct cert_info {
	char name[128];	    /* NAME of NAME.crt */
	char subject[256];
	char issuer[256];
	char dns[512];	    /* subjectAltName DNS names, comma-separated */
	time_t not_before;
	time_t not_after;
	char key_type[16];  /* RSA, EC, ED25519 ... */
	int key_bits;
	char sig_alg[64];   /* sha256WithRSAEncryption ... */
	char sha256[96];    /* AA:BB:... */
	bool self_signed;
};

/* Creates default.crt/default.key (RSA 4096, SHA-256, self-signed,
 * CN and DNS name = hostname) when cert_dir holds no pair. Slow (the RSA
 * key): called before the event loop starts. *created tells if it did. */
bool tls_ensure_default_cert(const struct config *cfg, bool *created,
			     char *err, size_t err_len);

bool tls_store_has_pairs(const char *cert_dir);

/* Every pair in cert_dir, sorted by name. Caller frees *out. */
bool tls_cert_inventory(const char *cert_dir, struct cert_info **out,
			size_t *n, char *err, size_t err_len);

/* What `certs` checks of one NAME.crt: whether it reads, and its key. */
enum cert_key {
	CERT_KEY_MATCHES,
	CERT_KEY_MISSING,  /* no NAME.key */
	CERT_KEY_OPEN,	   /* readable by group or others: refused at start */
	CERT_KEY_DENIED,   /* this user may not read it (why) */
	CERT_KEY_BAD,	   /* not a PEM private key (why) */
	CERT_KEY_MISMATCH, /* not the certificate's key */
};

struct cert_audit {
	struct cert_info info; /* name always; the rest when has_cert */
	bool has_cert;	       /* NAME.crt read as a PEM certificate */
	enum cert_key key;     /* when has_cert */
	char why[512];	       /* the reason of a problem with either file */
};

/* Every NAME.crt in cert_dir, with a NAME.key or not, sorted by name;
 * false only when cert_dir cannot be listed (one that does not exist is
 * empty). Caller frees *out. */
bool tls_cert_audit(const char *cert_dir, struct cert_audit **out, size_t *n,
		    char *err, size_t err_len);

struct tls_server;

struct tls_server *tls_server_new(const struct config *cfg, char *err,
				  size_t err_len);
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
