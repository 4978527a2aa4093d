/*
 * certs: the certificates and keys on disk. The store is every
 * [tls] certificate = CERTFILE KEYFILE line, in file order, then every
 * NAME.crt + NAME.key pair of [tls] cert_dir, by name; each pair is read,
 * checked (key private, both PEM, the key matches the certificate) and
 * handed to libtls from memory. The Default Cert when nothing is
 * configured; details of a certificate for `certs` and `tls-probe`; the
 * check that ca_file loads where verify can be used. Errors name the ini
 * line of the key and the files. Never touches a socket.
 */
#ifndef SMTPGW_CERTS_H
#define SMTPGW_CERTS_H

#include "core/config.h"

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <tls.h>

struct cert_info {
	char name[128];	    /* NAME of NAME.crt, or a certificate line's file */
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

/*
 * Before the server config is built: checks that the store can be read
 * (cert_dir exists unless it is the default; no lone NAME.crt or
 * NAME.key) and, when no certificate is configured at all and
 * `make_default` is set, creates the Default Cert in cert_dir (RSA 4096,
 * SHA-256, self-signed, CN and DNS name = hostname; slow: before the event
 * loop). *configured: some certificate is there (or was just made);
 * *created: the Default Cert was made now.
 */
bool cert_store_prepare(const struct config *cfg, bool make_default,
			bool *configured, bool *created, char *err,
			size_t err_len);

/* Reads and checks every pair and adds it to `c` (the first one also
 * answers clients without SNI). False with "FILE:LINE: PATH: what". */
bool cert_store_configure(const struct config *cfg, struct tls_config *c,
			  char *err, size_t err_len);

/* Every certificate the store serves, in the order it serves them.
 * Caller frees *out. */
bool cert_store_inventory(const struct config *cfg, struct cert_info **out,
			  size_t *n, char *err, size_t err_len);

/* Every pair in one cert_dir, sorted by name (the `certs` command's
 * table). Caller frees *out. */
bool tls_cert_inventory(const char *cert_dir, struct cert_info **out,
			size_t *n, char *err, size_t err_len);

/* What `certs` finds of one pair: whether the certificate reads, and its
 * key. */
enum cert_key {
	CERT_KEY_MATCHES,
	CERT_KEY_MISSING,  /* no key file */
	CERT_KEY_OPEN,	   /* readable by group or others: refused at start */
	CERT_KEY_DENIED,   /* the caller may not read it */
	CERT_KEY_BAD,	   /* unreadable, not PEM, or encrypted */
	CERT_KEY_MISMATCH, /* not the certificate's key */
};

struct cert_audit {
	struct cert_info info; /* name always; the rest when has_cert */
	bool has_cert;	       /* the certificate file read as PEM */
	enum cert_key key;     /* when has_cert */
	char why[2 * PATH_MAX + 64]; /* what is wrong with either file */
};

/* Every pair the store names, as cert_store_inventory, but a lone
 * NAME.crt or NAME.key of cert_dir is listed too and nothing stops the
 * list: each entry says what is wrong with it. False only when the store
 * cannot be listed (a cert_dir named in the ini that is missing, ...).
 * Caller frees *out. */
bool cert_store_audit(const struct config *cfg, struct cert_audit **out,
		      size_t *n, char *err, size_t err_len);

/* The first certificate of a PEM text (a peer's chain) into *ci. */
bool cert_describe_pem(const uint8_t *pem, size_t len, const char *name,
		       struct cert_info *ci);

/* ca_file must load wherever verify can be used: server_level = verify,
 * ask_client_cert = yes, a [domain:...] with tls = verify, or a policy
 * script (which may return verify for any domain). */
bool cert_check_ca_file(const struct config *cfg, char *err, size_t err_len);

#endif
