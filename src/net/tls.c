/*
 * tls: libtls configs. libtls does the TLS; the OpenSSL library underneath
 * it (LibreTLS is libtls over OpenSSL) is used only where libtls has no
 * API: verifying a client's chain ourselves so an untrusted certificate is
 * a reply, not a failed handshake, and a server's chain after a handshake
 * that did not verify it (what MTA-STS testing mode reports). The
 * certificates and keys served come from the store (net/certs.c); session
 * tickets are net/tls_resume.c's (tls_server_new calls it).
 */
#include "net/tls.h"

#include "core/log.h"
#include "net/tls_resume.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

struct tls_server {
	struct tls_config *config;
	struct tls *ctx;
	X509_STORE *trust; /* ca_file, for client certificates */
};

/* ---- server ------------------------------------------------------------ */

static bool fail_config(struct tls_config *c, const char *what, char *err,
			size_t err_len)
{
	snprintf(err, err_len, "%s: %s", what,
		 c ? tls_config_error(c) : "out of memory");
	return false;
}

/*
 * libtls's named cipher sets, spelled for OpenSSL. Debian's libtls (LibreTLS)
 * passes its own definition of "secure" ("TLSv1.3:TLSv1.2+AEAD+ECDHE:...")
 * to OpenSSL, which does not parse it and leaves every cipher enabled, RSA
 * key exchange and CBC included (seen with openssl s_client -cipher
 * AES256-SHA). So the names are resolved here to what libtls documents.
 * TLS 1.3 suites are all AEAD with forward secrecy and are not affected.
 */
static const char *openssl_ciphers(const char *name)
{
	static const struct {
		const char *name, *ciphers;
	} sets[] = {
		{"secure", "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20"},
		{"default", "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20"},
		{"compat", "HIGH:!aNULL"},
		{"legacy", "HIGH:MEDIUM:!aNULL"},
		{"insecure", "ALL:!aNULL:!eNULL"},
		{"all", "ALL:!aNULL:!eNULL"},
	};

	for (size_t i = 0; i < sizeof(sets) / sizeof(sets[0]); i++)
		if (strcasecmp(name, sets[i].name) == 0)
			return sets[i].ciphers;
	return name; /* an explicit OpenSSL cipher string */
}

/* Protocols and ciphers, shared by server and client configs. */
static bool apply_common(const struct config *cfg, struct tls_config *c,
			 char *err, size_t err_len)
{
	uint32_t protocols;

	if (tls_config_parse_protocols(&protocols, cfg->protocols) != 0 ||
	    tls_config_set_protocols(c, protocols) != 0)
		return fail_config(c, "[tls] protocols", err, err_len);
	if (tls_config_set_ciphers(c, openssl_ciphers(cfg->ciphers)) != 0)
		return fail_config(c, "[tls] ciphers", err, err_len);
	return true;
}

static X509_STORE *load_trust(const char *ca_file)
{
	X509_STORE *store = X509_STORE_new();

	if (store != NULL && X509_STORE_load_file(store, ca_file) != 1) {
		X509_STORE_free(store);
		return NULL;
	}
	return store;
}

/* Client certificates are accepted by libtls unverified and checked by
 * tls_server_check_peer, so "untrusted" becomes Postfix's 421 rather than
 * a handshake alert the client cannot read. */
static bool ask_clients(const struct config *cfg, bool ask,
			struct tls_server *srv, char *err, size_t err_len)
{
	if (!ask)
		return true;
	srv->trust = load_trust(cfg->ca_file);
	if (srv->trust == NULL) {
		snprintf(err, err_len, "[tls] ca_file %s: cannot load",
			 cfg->ca_file);
		return false;
	}
	if (tls_config_set_ca_file(srv->config, cfg->ca_file) != 0)
		return fail_config(srv->config, cfg->ca_file, err, err_len);
	tls_config_verify_client_optional(srv->config);
	tls_config_insecure_noverifycert(srv->config);
	return true;
}

struct tls_server *tls_server_new(const struct config *cfg, bool ask_certs,
				  char *err, size_t err_len)
{
	struct tls_server *srv = calloc(1, sizeof(*srv));
	bool ok = srv != NULL && (srv->config = tls_config_new()) != NULL;

	ok = ok && apply_common(cfg, srv->config, err, err_len) &&
	     cert_store_configure(cfg, srv->config, err, err_len) &&
	     ask_clients(cfg, ask_certs, srv, err, err_len) &&
	     tls_resume_prepare(cfg, ask_certs, srv->config, err, err_len);
	if (ok && ((srv->ctx = tls_server()) == NULL ||
		   tls_resume_configure(cfg, srv->ctx, srv->config) != 0)) {
		snprintf(err, err_len, "tls: %s",
			 srv->ctx ? tls_error(srv->ctx) : "out of memory");
		ok = false;
	}
	if (!ok) {
		if (srv == NULL)
			snprintf(err, err_len, "tls: out of memory");
		tls_server_free(srv);
		return NULL;
	}
	return srv;
}

void tls_server_free(struct tls_server *srv)
{
	if (srv == NULL)
		return;
	tls_free(srv->ctx);
	tls_config_free(srv->config);
	X509_STORE_free(srv->trust);
	free(srv);
}

struct tls *tls_server_ctx(struct tls_server *srv)
{
	return srv->ctx;
}

static STACK_OF(X509) *parse_chain(const uint8_t *pem, size_t len)
{
	BIO *bio = BIO_new_mem_buf(pem, (int)len);
	STACK_OF(X509) *chain = sk_X509_new_null();
	X509 *cert;

	while (bio != NULL && chain != NULL &&
	       (cert = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL)
		sk_X509_push(chain, cert);
	BIO_free(bio);
	return chain;
}

enum tls_peer tls_server_check_peer(struct tls_server *srv, struct tls *conn,
				    char *why, size_t why_len)
{
	size_t len = 0;
	const uint8_t *pem;
	STACK_OF(X509) *chain;
	X509_STORE_CTX *vctx;
	enum tls_peer result = TLS_PEER_UNTRUSTED;

	snprintf(why, why_len, "no client certificate");
	if (!tls_peer_cert_provided(conn))
		return TLS_PEER_NONE;
	pem = tls_peer_cert_chain_pem(conn, &len);
	chain = pem ? parse_chain(pem, len) : NULL;
	vctx = X509_STORE_CTX_new();
	snprintf(why, why_len, "certificate chain unreadable");
	if (srv->trust != NULL && chain != NULL && sk_X509_num(chain) > 0 &&
	    vctx != NULL &&
	    X509_STORE_CTX_init(vctx, srv->trust, sk_X509_value(chain, 0),
				chain) == 1) {
		X509_STORE_CTX_set_purpose(vctx, X509_PURPOSE_SSL_CLIENT);
		if (X509_verify_cert(vctx) == 1)
			result = TLS_PEER_TRUSTED;
		else
			snprintf(why, why_len, "%s",
				 X509_verify_cert_error_string(
					 X509_STORE_CTX_get_error(vctx)));
	}
	X509_STORE_CTX_free(vctx);
	sk_X509_pop_free(chain, X509_free);
	return result;
}

const char *tls_peer_name(enum tls_peer peer)
{
	switch (peer) {
	case TLS_PEER_NONE:
		return "Anonymous";
	case TLS_PEER_UNTRUSTED:
		return "Untrusted";
	case TLS_PEER_TRUSTED:
		return "Trusted";
	}
	return "Anonymous";
}

/* ---- clients ----------------------------------------------------------- */

/* libtls keeps a client's resumable session in a file; an anonymous
 * memory file keeps it off the disk. One per config: later per-destination
 * configs (delivery) get one each, so sessions are not offered across
 * destinations. */
static int enable_session_reuse(struct tls_config *c, char *err,
				size_t err_len)
{
	int fd = memfd_create("smtpgw-tls-session", MFD_CLOEXEC);

	if (fd < 0 || fchmod(fd, 0600) != 0 ||
	    tls_config_set_session_fd(c, fd) != 0) {
		snprintf(err, err_len, "tls session cache: %s",
			 fd < 0 ? strerror(errno) : tls_config_error(c));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd; /* libtls uses it but does not own it */
}

static struct tls_config *client_config(const struct config *cfg, bool verify,
					int *session_fd, char *err,
					size_t err_len)
{
	struct tls_config *c = tls_config_new();

	if (c == NULL || !apply_common(cfg, c, err, err_len) ||
	    (*session_fd = enable_session_reuse(c, err, err_len)) < 0) {
		if (c == NULL)
			snprintf(err, err_len, "tls: out of memory");
		tls_config_free(c);
		return NULL;
	}
	if (!verify) {
		tls_config_insecure_noverifycert(c);
		tls_config_insecure_noverifyname(c);
	} else if (tls_config_set_ca_file(c, cfg->ca_file) != 0) {
		/* Not fatal: without trust anchors nothing verifies, so verify
		 * deliveries defer with that reason and the rest goes on. */
		log_msg(LOG_WARN, "tls_ca_file", "%s: %s: outbound verify "
			"will fail", cfg->ca_file, tls_config_error(c));
	}
	return c;
}

enum { CA_FILE_MAX = 16 << 20 };

/* ca_file's text, or NULL (nothing verifies then, and that is said where
 * it matters: tls_ca_file at start, the fetch's error later). */
static char *read_ca_pem(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	char *buf = NULL;
	size_t n = 0;
	ssize_t r = 1;

	*len = 0;
	if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
	    st.st_size > 0 && st.st_size <= CA_FILE_MAX)
		buf = malloc((size_t)st.st_size + 1);
	while (buf != NULL && n < (size_t)st.st_size &&
	       (r = read(fd, buf + n, (size_t)st.st_size - n)) > 0)
		n += (size_t)r;
	if (fd >= 0)
		close(fd);
	if (buf == NULL || r <= 0 || n == 0) {
		free(buf);
		return NULL;
	}
	buf[n] = '\0';
	*len = n;
	return buf;
}

bool tls_clients_new(const struct config *cfg, struct tls_clients *out,
		     char *err, size_t err_len)
{
	out->encrypt_session = out->verify_session = -1;
	out->trust = NULL; /* tls_clients_load_trust, where it is needed */
	out->ca_pem = read_ca_pem(cfg->ca_file, &out->ca_pem_len);
	out->encrypt = client_config(cfg, false, &out->encrypt_session, err,
				     err_len);
	out->verify = out->encrypt ? client_config(cfg, true,
						   &out->verify_session, err,
						   err_len)
				   : NULL;
	if (out->verify == NULL) {
		tls_clients_free(out);
		return false;
	}
	return true;
}

void tls_clients_free(struct tls_clients *c)
{
	tls_config_free(c->encrypt);
	tls_config_free(c->verify);
	c->encrypt = c->verify = NULL;
	if (c->encrypt_session >= 0)
		close(c->encrypt_session);
	if (c->verify_session >= 0)
		close(c->verify_session);
	c->encrypt_session = c->verify_session = -1;
	X509_STORE_free(c->trust);
	c->trust = NULL;
	free(c->ca_pem);
	c->ca_pem = NULL;
	c->ca_pem_len = 0;
}

bool tls_clients_load_trust(struct tls_clients *c)
{
	STACK_OF(X509) *certs;
	int n;

	if (c->trust != NULL || c->ca_pem == NULL)
		return c->trust != NULL;
	certs = parse_chain((const uint8_t *)c->ca_pem, c->ca_pem_len);
	n = certs != NULL ? sk_X509_num(certs) : 0;
	c->trust = n > 0 ? X509_STORE_new() : NULL;
	for (int i = 0; c->trust != NULL && i < n; i++)
		X509_STORE_add_cert(c->trust, sk_X509_value(certs, i));
	sk_X509_pop_free(certs, X509_free);
	return c->trust != NULL;
}

/* ---- a server's chain, checked after the handshake --------------------- */

static enum tls_cert_verdict verdict_of(int error)
{
	switch (error) {
	case X509_V_ERR_CERT_HAS_EXPIRED:
	case X509_V_ERR_CERT_NOT_YET_VALID:
		return TLS_CERT_EXPIRED;
	case X509_V_ERR_HOSTNAME_MISMATCH:
		return TLS_CERT_NAME;
	default:
		return TLS_CERT_UNTRUSTED;
	}
}

enum tls_cert_verdict tls_check_server(const struct tls_clients *c,
				       struct tls *conn,
				       const char *name, char *why,
				       size_t why_len)
{
	size_t len = 0;
	const uint8_t *pem = tls_peer_cert_chain_pem(conn, &len);
	STACK_OF(X509) *chain = pem ? parse_chain(pem, len) : NULL;
	X509_STORE_CTX *vctx = X509_STORE_CTX_new();
	enum tls_cert_verdict v = TLS_CERT_UNTRUSTED;

	snprintf(why, why_len, "%s", c->trust == NULL
					     ? "no trust anchors in ca_file"
					     : "no certificate chain");
	if (c->trust != NULL && chain != NULL && sk_X509_num(chain) > 0 &&
	    vctx != NULL &&
	    X509_STORE_CTX_init(vctx, c->trust, sk_X509_value(chain, 0),
				chain) == 1) {
		X509_STORE_CTX_set_purpose(vctx, X509_PURPOSE_SSL_SERVER);
		X509_VERIFY_PARAM_set1_host(X509_STORE_CTX_get0_param(vctx),
					    name, 0);
		if (X509_verify_cert(vctx) == 1) {
			v = TLS_CERT_OK;
			why[0] = '\0';
		} else {
			int e = X509_STORE_CTX_get_error(vctx);

			v = verdict_of(e);
			snprintf(why, why_len, "%s",
				 X509_verify_cert_error_string(e));
		}
	}
	X509_STORE_CTX_free(vctx);
	sk_X509_pop_free(chain, X509_free);
	return v;
}
