/*
 * tls: libtls configs and the certificate store. libtls does the TLS; the
 * OpenSSL library underneath it (LibreTLS is libtls over OpenSSL) is used
 * only where libtls has no API: making the Default Cert, reading
 * certificate details for the inventory, and verifying a client's chain
 * ourselves so an untrusted certificate is a reply, not a failed handshake.
 */
#include "net/tls.h"

#include "core/log.h"

#include <dirent.h>
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
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

enum { DEFAULT_KEY_BITS = 4096, DEFAULT_CERT_DAYS = 3650 };

struct tls_server {
	struct tls_config *config;
	struct tls *ctx;
	X509_STORE *trust; /* ca_file, for client certificates */
};

/* ---- the store ------------------------------------------------------ */

static bool pair_path(const char *dir, const char *name, const char *ext,
		      char *out, size_t len)
{
	int n = snprintf(out, len, "%s/%s.%s", dir, name, ext);

	return n > 0 && (size_t)n < len;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* NAME for each NAME.crt (with a NAME.key beside it when need_key),
 * sorted. */
static char **list_names(const char *dir, size_t *n, bool need_key)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char **names = NULL;

	*n = 0;
	if (d == NULL)
		return NULL;
	while ((e = readdir(d)) != NULL) {
		size_t len = strlen(e->d_name);
		char key[4096], **grown;
		struct stat st;

		if (len <= 4 || strcmp(e->d_name + len - 4, ".crt") != 0)
			continue;
		snprintf(key, sizeof(key), "%s/%.*s.key", dir, (int)(len - 4),
			 e->d_name);
		if (need_key && stat(key, &st) != 0)
			continue;
		grown = realloc(names, (*n + 1) * sizeof(*names));
		if (grown == NULL)
			break;
		names = grown;
		names[(*n)++] = strndup(e->d_name, len - 4);
	}
	closedir(d);
	if (names != NULL)
		qsort(names, *n, sizeof(*names), by_name);
	return names;
}

/* NAME for each NAME.crt with a NAME.key beside it, sorted. */
static char **list_pairs(const char *dir, size_t *n)
{
	return list_names(dir, n, true);
}

static void free_names(char **names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

/* A key others can read is no longer private: refuse to serve it. */
static bool key_private(const char *path, char *err, size_t err_len)
{
	struct stat st;

	if (stat(path, &st) != 0) {
		snprintf(err, err_len, "%s: %s", path, strerror(errno));
		return false;
	}
	if ((st.st_mode & 077) != 0) {
		snprintf(err, err_len,
			 "%s: private key is readable by group or others "
			 "(mode %04o); run chmod 600 %s",
			 path, (unsigned)(st.st_mode & 07777), path);
		return false;
	}
	return true;
}

/* ---- Default Cert ---------------------------------------------------- */

static bool add_ext(X509 *cert, int nid, const char *value)
{
	X509V3_CTX v3;
	X509_EXTENSION *ext;
	bool ok;

	X509V3_set_ctx_nodb(&v3);
	X509V3_set_ctx(&v3, cert, cert, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
	if (ext == NULL)
		return false;
	ok = X509_add_ext(cert, ext, -1) == 1;
	X509_EXTENSION_free(ext);
	return ok;
}

static X509 *self_signed(EVP_PKEY *key, const char *hostname)
{
	X509 *cert = X509_new();
	X509_NAME *name;
	char san[300];
	bool ok;

	if (cert == NULL)
		return NULL;
	snprintf(san, sizeof(san), "DNS:%s", hostname);
	name = X509_get_subject_name(cert);
	ok = X509_set_version(cert, 2) == 1 &&
	     ASN1_INTEGER_set(X509_get_serialNumber(cert),
			      (long)time(NULL)) == 1 &&
	     X509_gmtime_adj(X509_getm_notBefore(cert), -3600) != NULL &&
	     X509_gmtime_adj(X509_getm_notAfter(cert),
			     (long)DEFAULT_CERT_DAYS * 86400) != NULL &&
	     X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
					(const unsigned char *)hostname, -1,
					-1, 0) == 1 &&
	     X509_set_issuer_name(cert, name) == 1 &&
	     X509_set_pubkey(cert, key) == 1 &&
	     add_ext(cert, NID_subject_alt_name, san) &&
	     add_ext(cert, NID_basic_constraints, "critical,CA:FALSE") &&
	     add_ext(cert, NID_ext_key_usage, "serverAuth,clientAuth") &&
	     X509_sign(cert, key, EVP_sha256()) > 0;
	if (!ok) {
		X509_free(cert);
		return NULL;
	}
	return cert;
}

/* Written under a temporary name and renamed, so a crash never leaves half
 * a pair that a restart would take for the real one. */
static bool write_pem(const char *path, mode_t mode, EVP_PKEY *key, X509 *cert)
{
	char tmp[4200];
	FILE *f;
	int fd;
	bool ok;

	snprintf(tmp, sizeof(tmp), "%s.new", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0 || (f = fdopen(fd, "w")) == NULL) {
		if (fd >= 0)
			close(fd);
		return false;
	}
	ok = key ? PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) == 1
		 : PEM_write_X509(f, cert) == 1;
	ok = fflush(f) == 0 && fsync(fd) == 0 && ok;
	ok = fclose(f) == 0 && ok;
	if (ok)
		ok = rename(tmp, path) == 0;
	else
		unlink(tmp);
	return ok;
}

static bool make_default(const struct config *cfg, char *err, size_t err_len)
{
	char crt[4096], key_path[4096];
	EVP_PKEY *key = EVP_RSA_gen(DEFAULT_KEY_BITS);
	X509 *cert = key ? self_signed(key, cfg->hostname) : NULL;
	bool ok = cert != NULL;

	pair_path(cfg->cert_dir, "default", "crt", crt, sizeof(crt));
	pair_path(cfg->cert_dir, "default", "key", key_path, sizeof(key_path));
	/* The key first: a .crt without its .key is not a pair. */
	ok = ok && write_pem(key_path, 0600, key, NULL) &&
	     write_pem(crt, 0644, NULL, cert);
	if (!ok)
		snprintf(err, err_len, "%s: cannot create the Default Cert: %s",
			 cfg->cert_dir, errno ? strerror(errno) : "OpenSSL error");
	X509_free(cert);
	EVP_PKEY_free(key);
	return ok;
}

bool tls_store_has_pairs(const char *cert_dir)
{
	size_t n;
	char **names = list_pairs(cert_dir, &n);

	free_names(names, n);
	return n > 0;
}

bool tls_ensure_default_cert(const struct config *cfg, bool *created,
			     char *err, size_t err_len)
{
	size_t n;
	char **names;

	*created = false;
	if (mkdir(cfg->cert_dir, 0755) != 0 && errno != EEXIST) {
		snprintf(err, err_len, "%s: %s", cfg->cert_dir, strerror(errno));
		return false;
	}
	names = list_pairs(cfg->cert_dir, &n);
	free_names(names, n);
	if (n > 0)
		return true;
	errno = 0;
	if (!make_default(cfg, err, err_len))
		return false;
	*created = true;
	return true;
}

/* ---- inventory ------------------------------------------------------- */

static X509 *read_cert(const char *path)
{
	FILE *f = fopen(path, "re");
	X509 *cert;

	if (f == NULL)
		return NULL;
	cert = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	return cert;
}

static void name_text(const X509_NAME *name, char *out, size_t len)
{
	BIO *bio = BIO_new(BIO_s_mem());
	int n;

	out[0] = '\0';
	if (bio == NULL)
		return;
	X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253);
	n = BIO_read(bio, out, (int)len - 1);
	out[n > 0 ? n : 0] = '\0';
	BIO_free(bio);
}

static void dns_names(X509 *cert, char *out, size_t len)
{
	GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name,
						NULL, NULL);
	size_t used = 0;

	out[0] = '\0';
	for (int i = 0; names != NULL && i < sk_GENERAL_NAME_num(names); i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
		const unsigned char *s;
		int n;

		if (g->type != GEN_DNS)
			continue;
		s = ASN1_STRING_get0_data(g->d.dNSName);
		n = snprintf(out + used, len - used, "%s%.*s",
			     used ? "," : "", ASN1_STRING_length(g->d.dNSName),
			     (const char *)s);
		if (n < 0 || (size_t)n >= len - used)
			break;
		used += (size_t)n;
	}
	GENERAL_NAMES_free(names);
}

static time_t asn1_time(const ASN1_TIME *t)
{
	struct tm tm;

	if (ASN1_TIME_to_tm(t, &tm) != 1)
		return 0;
	return timegm(&tm);
}

static void key_details(X509 *cert, struct cert_info *ci)
{
	EVP_PKEY *key = X509_get0_pubkey(cert);
	const char *type = "unknown";

	if (key == NULL)
		return;
	switch (EVP_PKEY_get_base_id(key)) {
	case EVP_PKEY_RSA:
		type = "RSA";
		break;
	case EVP_PKEY_EC:
		type = "EC";
		break;
	case EVP_PKEY_ED25519:
		type = "ED25519";
		break;
	case EVP_PKEY_ED448:
		type = "ED448";
		break;
	}
	snprintf(ci->key_type, sizeof(ci->key_type), "%s", type);
	ci->key_bits = EVP_PKEY_get_bits(key);
}

static void fingerprint(X509 *cert, char *out, size_t len)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int n = 0;
	size_t used = 0;

	out[0] = '\0';
	if (X509_digest(cert, EVP_sha256(), md, &n) != 1)
		return;
	for (unsigned i = 0; i < n && used + 3 < len; i++) /* ":XX" + NUL */
		used += (size_t)snprintf(out + used, len - used, "%s%02X",
					 i ? ":" : "", md[i]);
}

static void fill_info(X509 *cert, struct cert_info *ci)
{
	name_text(X509_get_subject_name(cert), ci->subject,
		  sizeof(ci->subject));
	name_text(X509_get_issuer_name(cert), ci->issuer, sizeof(ci->issuer));
	dns_names(cert, ci->dns, sizeof(ci->dns));
	ci->not_before = asn1_time(X509_get0_notBefore(cert));
	ci->not_after = asn1_time(X509_get0_notAfter(cert));
	key_details(cert, ci);
	snprintf(ci->sig_alg, sizeof(ci->sig_alg), "%s",
		 OBJ_nid2ln(X509_get_signature_nid(cert)));
	fingerprint(cert, ci->sha256, sizeof(ci->sha256));
	ci->self_signed = X509_self_signed(cert, 0) == 1;
}

static bool describe(const char *dir, const char *name, struct cert_info *ci,
		     char *err, size_t err_len)
{
	char path[4096];
	X509 *cert;

	memset(ci, 0, sizeof(*ci));
	snprintf(ci->name, sizeof(ci->name), "%s", name);
	pair_path(dir, name, "crt", path, sizeof(path));
	if ((cert = read_cert(path)) == NULL) {
		snprintf(err, err_len, "%s: not a PEM certificate", path);
		return false;
	}
	fill_info(cert, ci);
	X509_free(cert);
	return true;
}

bool tls_cert_inventory(const char *cert_dir, struct cert_info **out,
			size_t *n, char *err, size_t err_len)
{
	char **names = list_pairs(cert_dir, n);
	bool ok = true;

	*out = *n ? calloc(*n, sizeof(**out)) : NULL;
	if (*n > 0 && *out == NULL)
		ok = false;
	for (size_t i = 0; ok && i < *n; i++)
		ok = describe(cert_dir, names[i], &(*out)[i], err, err_len);
	free_names(names, *n);
	if (!ok) {
		free(*out);
		*out = NULL;
		*n = 0;
	}
	return ok;
}

/* ---- audit ----------------------------------------------------------- */

/* The key beside a certificate, as the master would load it. */
static enum cert_key check_key(const char *dir, const char *name, X509 *cert,
			       char *why, size_t why_len)
{
	char path[4096];
	struct stat st;
	EVP_PKEY *key;
	FILE *f;
	bool match;

	pair_path(dir, name, "key", path, sizeof(path));
	if (stat(path, &st) != 0)
		return CERT_KEY_MISSING;
	if (!key_private(path, why, why_len))
		return CERT_KEY_OPEN;
	if ((f = fopen(path, "re")) == NULL) {
		int e = errno;

		snprintf(why, why_len, "%.400s: %s", path, strerror(e));
		return e == EACCES ? CERT_KEY_DENIED : CERT_KEY_BAD;
	}
	key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	if (key == NULL) {
		snprintf(why, why_len, "%.400s: not a PEM private key", path);
		return CERT_KEY_BAD;
	}
	match = X509_check_private_key(cert, key) == 1;
	EVP_PKEY_free(key);
	return match ? CERT_KEY_MATCHES : CERT_KEY_MISMATCH;
}

static void audit_one(const char *dir, const char *name, struct cert_audit *a)
{
	char path[4096];
	X509 *cert;

	memset(a, 0, sizeof(*a));
	snprintf(a->info.name, sizeof(a->info.name), "%s", name);
	pair_path(dir, name, "crt", path, sizeof(path));
	if ((cert = read_cert(path)) == NULL) {
		snprintf(a->why, sizeof(a->why), "%.400s: %s", path,
			 access(path, R_OK) == 0 ? "not a PEM certificate"
						 : strerror(errno));
		return;
	}
	a->has_cert = true;
	fill_info(cert, &a->info);
	a->key = check_key(dir, name, cert, a->why, sizeof(a->why));
	X509_free(cert);
}

bool tls_cert_audit(const char *cert_dir, struct cert_audit **out, size_t *n,
		    char *err, size_t err_len)
{
	DIR *d = opendir(cert_dir);
	char **names;

	*out = NULL;
	*n = 0;
	if (d == NULL && errno != ENOENT) {
		snprintf(err, err_len, "%s: %s", cert_dir, strerror(errno));
		return false;
	}
	if (d == NULL)
		return true; /* made at start, with the Default Cert */
	closedir(d);
	names = list_names(cert_dir, n, false);
	if (*n > 0 && (*out = calloc(*n, sizeof(**out))) == NULL) {
		free_names(names, *n);
		*n = 0;
		snprintf(err, err_len, "%s: out of memory", cert_dir);
		return false;
	}
	for (size_t i = 0; i < *n; i++)
		audit_one(cert_dir, names[i], &(*out)[i]);
	free_names(names, *n);
	return true;
}

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

static bool add_pairs(const struct config *cfg, struct tls_config *c,
		      char *err, size_t err_len)
{
	size_t n;
	char **names = list_pairs(cfg->cert_dir, &n);
	bool ok = n > 0;

	if (n == 0)
		snprintf(err, err_len, "%s: no NAME.crt + NAME.key pair",
			 cfg->cert_dir);
	/* The first pair answers clients without SNI; the rest by name.
	 * "default" sorts where it sorts: name it first if that matters. */
	for (size_t i = 0; ok && i < n; i++) {
		char crt[4096], key[4096];
		int rc;

		pair_path(cfg->cert_dir, names[i], "crt", crt, sizeof(crt));
		pair_path(cfg->cert_dir, names[i], "key", key, sizeof(key));
		if (!key_private(key, err, err_len)) {
			ok = false;
			break;
		}
		rc = i == 0 ? tls_config_set_keypair_file(c, crt, key)
			    : tls_config_add_keypair_file(c, crt, key);
		if (rc != 0)
			ok = fail_config(c, crt, err, err_len);
	}
	free_names(names, n);
	return ok;
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
static bool ask_clients(const struct config *cfg, struct tls_server *srv,
			char *err, size_t err_len)
{
	if (cfg->server_level != TLS_LEVEL_VERIFY && !cfg->ask_client_cert)
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

struct tls_server *tls_server_new(const struct config *cfg, char *err,
				  size_t err_len)
{
	struct tls_server *srv = calloc(1, sizeof(*srv));
	bool ok = srv != NULL && (srv->config = tls_config_new()) != NULL;

	ok = ok && apply_common(cfg, srv->config, err, err_len) &&
	     add_pairs(cfg, srv->config, err, err_len) &&
	     ask_clients(cfg, srv, err, err_len);
	if (ok && ((srv->ctx = tls_server()) == NULL ||
		   tls_configure(srv->ctx, srv->config) != 0)) {
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

bool tls_clients_new(const struct config *cfg, struct tls_clients *out,
		     char *err, size_t err_len)
{
	out->encrypt_session = out->verify_session = -1;
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
}
