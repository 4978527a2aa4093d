/*
 * certs: the certificate store on disk (see certs.h). It owns reading and
 * checking certificate and key files, making the Default Cert, and the
 * certificate details the commands print. It must not build TLS contexts
 * beyond handing pairs to the tls_config it is given (net/tls.c owns
 * those), and it never runs inside an event loop: files are read and RSA
 * keys made at start, on reload, or in a command.
 */
#include "net/certs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

enum {
	DEFAULT_KEY_BITS = 4096,
	DEFAULT_CERT_DAYS = 3650,
	PEM_FILE_MAX = 1 << 20, /* a certificate chain or a key, at most */
	DIR_FILES_MAX = 2000,	/* NAME.crt and NAME.key files in cert_dir */
};

/* One pair to serve, and where the ini named it. */
struct pair_src {
	char crt[PATH_MAX];
	char key[PATH_MAX];
	char name[128];
	char where[PATH_MAX + 16]; /* "FILE:LINE" or "FILE" */
};

struct pair_list {
	struct pair_src *v;
	size_t n;
	bool dir_missing; /* the default cert_dir does not exist */
};

/* A .crt or .key file of cert_dir: its NAME and which it is. */
struct dir_file {
	char *stem;
	bool is_key;
};

/* A whole PEM file in memory. */
struct blob {
	uint8_t *data;
	size_t len;
};

/* ---- reading files ----------------------------------------------------- */

static bool read_blob(const char *path, struct blob *b, char *err,
		      size_t err_len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	ssize_t r = 0;

	b->data = NULL;
	b->len = 0;
	if (fd < 0 || fstat(fd, &st) != 0) {
		snprintf(err, err_len, "%s: cannot read: %s", path,
			 strerror(errno));
		goto fail;
	}
	if (!S_ISREG(st.st_mode) || st.st_size > PEM_FILE_MAX) {
		snprintf(err, err_len, "%s: cannot read: %s", path,
			 S_ISREG(st.st_mode) ? "larger than 1 MiB"
					     : "not a regular file");
		goto fail;
	}
	b->data = malloc((size_t)st.st_size + 1);
	while (b->data != NULL && b->len < (size_t)st.st_size &&
	       (r = read(fd, b->data + b->len, (size_t)st.st_size - b->len)) > 0)
		b->len += (size_t)r;
	if (b->data == NULL || r < 0) {
		snprintf(err, err_len, "%s: cannot read: %s", path,
			 b->data ? strerror(errno) : "out of memory");
		goto fail;
	}
	close(fd);
	return true;
fail:
	if (fd >= 0)
		close(fd);
	free(b->data);
	b->data = NULL;
	return false;
}

static void blob_wipe(struct blob *b)
{
	if (b->data != NULL)
		explicit_bzero(b->data, b->len);
	free(b->data);
	b->data = NULL;
	b->len = 0;
}

/* A key others can read is no longer private: refuse to serve it. */
static bool key_private(const char *path, char *err, size_t err_len)
{
	struct stat st;

	if (stat(path, &st) != 0) {
		snprintf(err, err_len, "%s: cannot read: %s", path,
			 strerror(errno));
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

static X509 *pem_cert(const struct blob *b)
{
	BIO *bio = BIO_new_mem_buf(b->data, (int)b->len);
	X509 *cert = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;

	BIO_free(bio);
	return cert;
}

/* Never prompts: an encrypted key is refused, not asked about. */
static int no_password(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)u;
	return -1;
}

static EVP_PKEY *pem_key(const struct blob *b)
{
	BIO *bio = BIO_new_mem_buf(b->data, (int)b->len);
	EVP_PKEY *key =
		bio ? PEM_read_bio_PrivateKey(bio, NULL, no_password, NULL)
		    : NULL;

	BIO_free(bio);
	return key;
}

/* Both files read, both PEM, the key the certificate's. */
static bool check_pair(const struct pair_src *p, const struct blob *crt,
		       const struct blob *key, char *err, size_t err_len)
{
	X509 *cert = pem_cert(crt);
	EVP_PKEY *pkey = cert ? pem_key(key) : NULL;
	bool ok = false;

	if (cert == NULL)
		snprintf(err, err_len, "%s: not a PEM certificate", p->crt);
	else if (pkey == NULL)
		snprintf(err, err_len,
			 "%s: not a PEM private key (or an encrypted one)",
			 p->key);
	else if (X509_check_private_key(cert, pkey) != 1)
		snprintf(err, err_len, "%s: private key does not match %s",
			 p->key, p->crt);
	else
		ok = true;
	EVP_PKEY_free(pkey);
	X509_free(cert);
	return ok;
}

/* Reads and checks one pair; on success the caller owns both blobs. */
static bool load_pair(const struct pair_src *p, struct blob *crt,
		      struct blob *key, char *err, size_t err_len)
{
	char why[3 * PATH_MAX];
	bool ok;

	crt->data = key->data = NULL;
	ok = key_private(p->key, why, sizeof(why)) &&
	     read_blob(p->crt, crt, why, sizeof(why)) &&
	     read_blob(p->key, key, why, sizeof(why)) &&
	     check_pair(p, crt, key, why, sizeof(why));
	if (!ok) {
		snprintf(err, err_len, "%s: %s", p->where, why);
		blob_wipe(crt);
		blob_wipe(key);
	}
	return ok;
}

/* ---- gathering the pairs ------------------------------------------------ */

static struct pair_src *add_src(struct pair_list *l)
{
	struct pair_src *grown = realloc(l->v, (l->n + 1) * sizeof(*grown));

	if (grown == NULL)
		return NULL;
	l->v = grown;
	memset(&grown[l->n], 0, sizeof(grown[l->n]));
	return &grown[l->n++];
}

static bool add_lines(const struct config *cfg, struct pair_list *l,
		      char *err, size_t err_len)
{
	for (size_t i = 0; i < cfg->n_certificates; i++) {
		const struct cert_file_pair *c = &cfg->certificates[i];
		struct pair_src *p = add_src(l);

		if (p == NULL) {
			snprintf(err, err_len, "out of memory");
			return false;
		}
		snprintf(p->crt, sizeof(p->crt), "%s", c->crt);
		snprintf(p->key, sizeof(p->key), "%s", c->key);
		snprintf(p->name, sizeof(p->name), "%s", c->crt);
		snprintf(p->where, sizeof(p->where), "%s:%u", cfg->path,
			 c->line);
	}
	return true;
}

static int by_stem(const void *a, const void *b)
{
	const struct dir_file *x = a, *y = b;
	int c = strcmp(x->stem, y->stem);

	return c != 0 ? c : (int)x->is_key - (int)y->is_key;
}

static void free_files(struct dir_file *files, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(files[i].stem);
	free(files);
}

/* NAME.crt and NAME.key files of `dir`, sorted by NAME (.crt first). */
static bool list_dir(DIR *d, struct dir_file **out, size_t *n)
{
	struct dirent *e;

	*out = NULL;
	*n = 0;
	while ((e = readdir(d)) != NULL) {
		size_t len = strlen(e->d_name);
		bool crt = len > 4 && strcmp(e->d_name + len - 4, ".crt") == 0;
		bool key = len > 4 && strcmp(e->d_name + len - 4, ".key") == 0;
		struct dir_file *grown;

		if (!crt && !key)
			continue;
		if (*n >= DIR_FILES_MAX ||
		    (grown = realloc(*out, (*n + 1) * sizeof(*grown))) == NULL)
			return false;
		*out = grown;
		grown[*n].is_key = key;
		if ((grown[*n].stem = strndup(e->d_name, len - 4)) == NULL)
			return false;
		(*n)++;
	}
	if (*n > 0)
		qsort(*out, *n, sizeof(**out), by_stem);
	return true;
}

static bool add_dir_pair(const char *dir, const char *stem, const char *where,
			 struct pair_list *l)
{
	struct pair_src *p = add_src(l);

	if (p == NULL)
		return false;
	snprintf(p->crt, sizeof(p->crt), "%s/%s.crt", dir, stem);
	snprintf(p->key, sizeof(p->key), "%s/%s.key", dir, stem);
	snprintf(p->name, sizeof(p->name), "%s", stem);
	snprintf(p->where, sizeof(p->where), "%s", where);
	return true;
}

/* What pairing does with a NAME.crt or NAME.key that has no partner. */
enum lone {
	LONE_ERROR, /* the store: the gateway refuses it */
	LONE_SKIP,  /* tls_cert_inventory: only pairs */
	LONE_KEEP,  /* the audit: listed, the missing file reported */
};

/* Pairs up the sorted files. */
static bool pair_files(const char *dir, const char *where,
		       const struct dir_file *f, size_t n, enum lone lone,
		       struct pair_list *l, char *err, size_t err_len)
{
	for (size_t i = 0; i < n; i++) {
		bool pair = !f[i].is_key && i + 1 < n && f[i + 1].is_key &&
			    strcmp(f[i].stem, f[i + 1].stem) == 0;

		if (pair || lone == LONE_KEEP) {
			if (!add_dir_pair(dir, f[i].stem, where, l)) {
				snprintf(err, err_len, "out of memory");
				return false;
			}
			i += pair;
		} else if (lone == LONE_ERROR) {
			snprintf(err, err_len,
				 "%s: %s/%s.%s: no %s beside it (%s/%s.%s)",
				 where, dir, f[i].stem,
				 f[i].is_key ? "key" : "crt",
				 f[i].is_key ? "certificate" : "private key",
				 dir, f[i].stem, f[i].is_key ? "crt" : "key");
			return false;
		}
	}
	return true;
}

/* cert_dir's pairs. A cert_dir named in the ini must exist; the default
 * one may be missing (then l->dir_missing). */
static bool add_dir(const char *dir, const char *where, bool must_exist,
		    enum lone lone, struct pair_list *l, char *err,
		    size_t err_len)
{
	DIR *d = opendir(dir);
	struct dir_file *files;
	size_t n;
	bool ok;

	if (d == NULL && errno == ENOENT && !must_exist) {
		l->dir_missing = true;
		return true;
	}
	if (d == NULL) {
		snprintf(err, err_len, "%s: cert_dir %s: %s%s", where, dir,
			 strerror(errno),
			 errno == ENOENT ? " (it is not created: make it, or "
					   "correct cert_dir)"
					 : "");
		return false;
	}
	ok = list_dir(d, &files, &n);
	closedir(d);
	if (!ok)
		snprintf(err, err_len, "%s: cert_dir %s: more than %d .crt and "
			 ".key files, or out of memory",
			 where, dir, DIR_FILES_MAX);
	else
		ok = pair_files(dir, where, files, n, lone, l, err, err_len);
	free_files(files, n);
	return ok;
}

/* Every pair the configuration names: certificate lines, then cert_dir. */
static bool gather_lone(const struct config *cfg, enum lone lone,
			struct pair_list *l, char *err, size_t err_len)
{
	char where[PATH_MAX + 16];
	bool named = config_key_line(cfg, "tls", "cert_dir") != 0;

	memset(l, 0, sizeof(*l));
	config_key_where(cfg, "tls", "cert_dir", where, sizeof(where));
	if (add_lines(cfg, l, err, err_len) &&
	    add_dir(cfg->cert_dir, where, named, lone, l, err, err_len))
		return true;
	free(l->v);
	l->v = NULL;
	return false;
}

static bool gather(const struct config *cfg, struct pair_list *l, char *err,
		   size_t err_len)
{
	return gather_lone(cfg, LONE_ERROR, l, err, err_len);
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
	char tmp[PATH_MAX + 8];
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
	char crt[PATH_MAX + 16], key_path[PATH_MAX + 16];
	EVP_PKEY *key;
	X509 *cert;
	bool ok;

	if (mkdir(cfg->cert_dir, 0755) != 0 && errno != EEXIST) {
		snprintf(err, err_len, "%s: cannot create cert_dir for the "
			 "Default Cert: %s", cfg->cert_dir, strerror(errno));
		return false;
	}
	errno = 0;
	key = EVP_RSA_gen(DEFAULT_KEY_BITS);
	cert = key ? self_signed(key, cfg->hostname) : NULL;
	snprintf(crt, sizeof(crt), "%s/default.crt", cfg->cert_dir);
	snprintf(key_path, sizeof(key_path), "%s/default.key", cfg->cert_dir);
	/* The key first: a .crt without its .key is not a pair. */
	ok = cert != NULL && write_pem(key_path, 0600, key, NULL) &&
	     write_pem(crt, 0644, NULL, cert);
	if (!ok)
		snprintf(err, err_len, "%s: cannot create the Default Cert: %s",
			 cfg->cert_dir, errno ? strerror(errno) : "OpenSSL error");
	X509_free(cert);
	EVP_PKEY_free(key);
	return ok;
}

bool cert_store_prepare(const struct config *cfg, bool make_default_cert,
			bool *configured, bool *created, char *err,
			size_t err_len)
{
	struct pair_list l;

	*configured = *created = false;
	if (!gather(cfg, &l, err, err_len))
		return false;
	free(l.v);
	*configured = l.n > 0;
	if (*configured || !make_default_cert)
		return true;
	if (!make_default(cfg, err, err_len))
		return false;
	*configured = *created = true;
	return true;
}

bool cert_store_configure(const struct config *cfg, struct tls_config *c,
			  char *err, size_t err_len)
{
	struct pair_list l;
	bool ok;

	if (!gather(cfg, &l, err, err_len))
		return false;
	ok = l.n > 0;
	if (!ok)
		snprintf(err, err_len, "%s: no certificate ([tls] certificate "
			 "lines, or NAME.crt + NAME.key in %s)",
			 cfg->path, cfg->cert_dir);
	for (size_t i = 0; ok && i < l.n; i++) {
		struct blob crt, key;
		int rc;

		if (!load_pair(&l.v[i], &crt, &key, err, err_len)) {
			ok = false;
			break;
		}
		rc = i == 0 ? tls_config_set_keypair_mem(c, crt.data, crt.len,
							 key.data, key.len)
			    : tls_config_add_keypair_mem(c, crt.data, crt.len,
							 key.data, key.len);
		if (rc != 0) {
			snprintf(err, err_len, "%s: %s: %s", l.v[i].where,
				 l.v[i].crt, tls_config_error(c));
			ok = false;
		}
		blob_wipe(&crt);
		blob_wipe(&key);
	}
	free(l.v);
	return ok;
}

/* ---- details ------------------------------------------------------------ */

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

static void describe(X509 *cert, const char *name, struct cert_info *ci)
{
	memset(ci, 0, sizeof(*ci));
	snprintf(ci->name, sizeof(ci->name), "%s", name);
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

bool cert_describe_pem(const uint8_t *pem, size_t len, const char *name,
		       struct cert_info *ci)
{
	struct blob b = {.data = (uint8_t *)pem, .len = len};
	X509 *cert = len > 0 && len <= PEM_FILE_MAX ? pem_cert(&b) : NULL;

	if (cert == NULL)
		return false;
	describe(cert, name, ci);
	X509_free(cert);
	return true;
}

static bool describe_file(const struct pair_src *p, struct cert_info *ci,
			  char *err, size_t err_len)
{
	struct blob b;
	char why[PATH_MAX + 64];
	bool ok;

	if (!read_blob(p->crt, &b, why, sizeof(why))) {
		snprintf(err, err_len, "%s: %s", p->where, why);
		return false;
	}
	ok = cert_describe_pem(b.data, b.len, p->name, ci);
	if (!ok)
		snprintf(err, err_len, "%s: %s: not a PEM certificate",
			 p->where, p->crt);
	free(b.data);
	return ok;
}

static bool describe_all(const struct pair_list *l, struct cert_info **out,
			 size_t *n, char *err, size_t err_len)
{
	bool ok = true;

	*n = l->n;
	*out = l->n ? calloc(l->n, sizeof(**out)) : NULL;
	if (l->n > 0 && *out == NULL) {
		snprintf(err, err_len, "out of memory");
		ok = false;
	}
	for (size_t i = 0; ok && i < l->n; i++)
		ok = describe_file(&l->v[i], &(*out)[i], err, err_len);
	if (!ok) {
		free(*out);
		*out = NULL;
		*n = 0;
	}
	return ok;
}

bool cert_store_inventory(const struct config *cfg, struct cert_info **out,
			  size_t *n, char *err, size_t err_len)
{
	struct pair_list l;
	bool ok;

	*out = NULL;
	*n = 0;
	if (!gather(cfg, &l, err, err_len))
		return false;
	ok = describe_all(&l, out, n, err, err_len);
	free(l.v);
	return ok;
}

bool tls_cert_inventory(const char *cert_dir, struct cert_info **out,
			size_t *n, char *err, size_t err_len)
{
	struct pair_list l = {0};
	bool ok;

	*out = NULL;
	*n = 0;
	if (!add_dir(cert_dir, cert_dir, false, LONE_SKIP, &l, err, err_len))
		return false;
	ok = describe_all(&l, out, n, err, err_len);
	free(l.v);
	return ok;
}

/* ---- audit (`certs`) ----------------------------------------------------- */

/* The key of one pair, as the master would load it; why for all but a
 * match. */
static enum cert_key audit_key(const struct pair_src *p, X509 *cert,
			       char *why, size_t why_len)
{
	struct stat st;
	struct blob key;
	EVP_PKEY *pkey;
	bool match;

	int rc = stat(p->key, &st);

	if (rc != 0 && errno == ENOENT) {
		snprintf(why, why_len, "%s: no private key beside it (%s)",
			 p->crt, p->key);
		return CERT_KEY_MISSING;
	}
	if (access(p->key, R_OK) != 0 && errno == EACCES) {
		snprintf(why, why_len, "%s: %s", p->key, strerror(EACCES));
		return CERT_KEY_DENIED;
	}
	if (rc != 0) {
		snprintf(why, why_len, "%s: cannot read: %s", p->key,
			 strerror(errno));
		return CERT_KEY_BAD;
	}
	if (!key_private(p->key, why, why_len))
		return CERT_KEY_OPEN;
	if (!read_blob(p->key, &key, why, why_len))
		return CERT_KEY_BAD;
	pkey = pem_key(&key);
	blob_wipe(&key);
	if (pkey == NULL) {
		snprintf(why, why_len,
			 "%s: not a PEM private key (or an encrypted one)",
			 p->key);
		return CERT_KEY_BAD;
	}
	match = X509_check_private_key(cert, pkey) == 1;
	EVP_PKEY_free(pkey);
	if (!match)
		snprintf(why, why_len, "%s: private key does not match %s",
			 p->key, p->crt);
	return match ? CERT_KEY_MATCHES : CERT_KEY_MISMATCH;
}

static void audit_pair(const struct pair_src *p, struct cert_audit *a)
{
	struct blob crt;
	X509 *cert;

	memset(a, 0, sizeof(*a));
	snprintf(a->info.name, sizeof(a->info.name), "%s", p->name);
	if (access(p->crt, F_OK) != 0 && errno == ENOENT) {
		snprintf(a->why, sizeof(a->why),
			 "%s: no certificate beside it (%s)", p->key, p->crt);
		return;
	}
	if (!read_blob(p->crt, &crt, a->why, sizeof(a->why)))
		return;
	cert = pem_cert(&crt);
	free(crt.data);
	if (cert == NULL) {
		snprintf(a->why, sizeof(a->why), "%s: not a PEM certificate",
			 p->crt);
		return;
	}
	a->has_cert = true;
	describe(cert, p->name, &a->info);
	a->key = audit_key(p, cert, a->why, sizeof(a->why));
	X509_free(cert);
}

bool cert_store_audit(const struct config *cfg, struct cert_audit **out,
		      size_t *n, char *err, size_t err_len)
{
	struct pair_list l;

	*out = NULL;
	*n = 0;
	if (!gather_lone(cfg, LONE_KEEP, &l, err, err_len))
		return false;
	if (l.n > 0 && (*out = calloc(l.n, sizeof(**out))) == NULL) {
		snprintf(err, err_len, "out of memory");
		free(l.v);
		return false;
	}
	*n = l.n;
	for (size_t i = 0; i < l.n; i++)
		audit_pair(&l.v[i], &(*out)[i]);
	free(l.v);
	return true;
}

/* ---- trust anchors ------------------------------------------------------ */

/* Why ca_file is needed, or NULL when nothing could use it. */
static const char *ca_needed(const struct config *cfg, char *why, size_t len)
{
	if (cfg->server_level == TLS_LEVEL_VERIFY)
		return "server_level = verify";
	if (cfg->ask_client_cert == ASK_CLIENT_CERT_YES)
		return "ask_client_cert = yes";
	for (size_t i = 0; i < cfg->n_domains; i++) {
		const struct domain_rule *d = &cfg->domains[i];
		bool out = d->has_tls && (d->tls == TLS_LEVEL_VERIFY ||
					  d->tls == TLS_LEVEL_STS);

		if (out || (d->has_tls_in && d->tls_in == TLS_LEVEL_VERIFY)) {
			snprintf(why, len, "[domain:%s] %s = %s", d->name,
				 out ? "tls" : "tls_in",
				 tls_level_name(out ? d->tls : d->tls_in));
			return why;
		}
	}
	if (cfg->policy_script != NULL)
		return "the policy script may choose verify";
	return NULL;
}

static int count_anchors(const char *path)
{
	X509_STORE *store = X509_STORE_new();
	int n = -1;

	if (store != NULL && X509_STORE_load_file(store, path) == 1)
		n = sk_X509_OBJECT_num(X509_STORE_get0_objects(store));
	X509_STORE_free(store);
	return n;
}

bool cert_check_ca_file(const struct config *cfg, char *err, size_t err_len)
{
	char why[300], where[PATH_MAX + 16];
	const char *need = ca_needed(cfg, why, sizeof(why));
	struct stat st;

	if (need == NULL || count_anchors(cfg->ca_file) > 0)
		return true;
	config_key_where(cfg, "tls", "ca_file", where, sizeof(where));
	snprintf(err, err_len,
		 "%s: ca_file %s: %s; verify needs trust anchors (%s)", where,
		 cfg->ca_file,
		 stat(cfg->ca_file, &st) != 0 ? strerror(errno)
					      : "no PEM certificate in it",
		 need);
	return false;
}
