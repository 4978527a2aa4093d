/*
 * tls_resume: inbound TLS session resumption by session tickets (RFC 5077
 * at TLS 1.2, RFC 8446 4.6.1 at TLS 1.3), kept within libtls's API with
 * one documented correction underneath it.
 *
 * Why a callback of our own: Debian's libtls (LibreTLS 3.7.0, libtls over
 * OpenSSL) turns OpenSSL's session cache off and installs its own ticket
 * callback (tls_server_ticket_cb) with SSL_CTX_set_tlsext_ticket_key_cb.
 * That callback returns 0 after preparing a new ticket; LibreSSL's libssl
 * only fails on a negative value, but OpenSSL reads 0 as "issue no
 * ticket", so no client could ever resume. libtls keeps its SSL_CTX to
 * itself, so we take note of it as OpenSSL makes it: an SSL_CTX ex_data
 * index whose "new" function (CRYPTO_get_ex_new_index(3): called for every
 * SSL_CTX allocated) records each SSL_CTX created while tls_configure runs
 * here. On those we set SSL_CTX_set_tlsext_ticket_key_evp_cb, which
 * OpenSSL 3 consults before the legacy callback libtls set (it never runs
 * then). Our callback returns what OpenSSL expects and takes its keys from
 * the shared ring, which libtls's per-process keys could not: a ticket must
 * resume on any worker. Everything else (lifetime, tickets on, session id
 * context) goes through libtls's own tls_config_set_session_* calls.
 *
 * Must not: touch a session's socket, write a key anywhere but the ring's
 * page, or issue a ticket for a session with a client certificate (a
 * resumed session brings no chain to check; see tls_ticket_cb).
 */
#include "net/tls_resume.h"

#include "core/log.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

/* ---- the key ring ------------------------------------------------------ */

enum {
	RING_SLOTS = 2, /* the newest key and the one before */
	KEY_BYTES = TICKET_NAME_LEN + TICKET_AES_LEN + TICKET_HMAC_LEN,
	KEY_WORDS = KEY_BYTES / 8,
	READ_TRIES = 4,
};
_Static_assert(KEY_BYTES % 8 == 0, "a key is whole 64-bit words");

/* One key under a sequence lock: `seq` is odd while the master writes it,
 * and a reader that sees it change retries, so a worker never uses a
 * half-written key. created_ms = 0: no key. */
struct ring_slot {
	uint32_t seq;
	uint64_t created_ms; /* CLOCK_MONOTONIC */
	uint64_t w[KEY_WORDS];
};

/* The shared page: written by the master only, read by everyone. */
struct tls_ticket_ring {
	uint32_t newest; /* the slot tickets are issued from */
	struct ring_slot slot[RING_SLOTS];
};

/* The ring this process's ticket callback reads (the master's, inherited
 * by every child it forks). */
static struct tls_ticket_ring *process_ring;

static size_t ring_bytes(void)
{
	long page = sysconf(_SC_PAGESIZE);
	size_t n = page > 0 ? (size_t)page : 4096;

	return sizeof(struct tls_ticket_ring) <= n ? n
						   : sizeof(struct tls_ticket_ring);
}

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u +
	       1; /* never 0: that means "no key" */
}

static bool fresh_key(uint64_t w[KEY_WORDS])
{
	unsigned char *p = (unsigned char *)w;
	size_t got = 0;

	while (got < KEY_BYTES) {
		ssize_t n = getrandom(p + got, KEY_BYTES - got, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return false;
		got += (size_t)n;
	}
	return true;
}

static void slot_write(struct ring_slot *s, const uint64_t w[KEY_WORDS],
		       uint64_t created_ms)
{
	uint32_t seq = __atomic_load_n(&s->seq, __ATOMIC_RELAXED);

	__atomic_store_n(&s->seq, seq + 1, __ATOMIC_RELAXED);
	__atomic_thread_fence(__ATOMIC_RELEASE);
	__atomic_store_n(&s->created_ms, created_ms, __ATOMIC_RELAXED);
	for (int i = 0; i < KEY_WORDS; i++)
		__atomic_store_n(&s->w[i], w[i], __ATOMIC_RELAXED);
	__atomic_store_n(&s->seq, seq + 2, __ATOMIC_RELEASE);
}

static bool slot_read(const struct ring_slot *s, struct tls_ticket_key *out)
{
	uint64_t w[KEY_WORDS], created = 0;
	bool stable = false;

	for (int t = 0; t < READ_TRIES && !stable; t++) {
		uint32_t before = __atomic_load_n(&s->seq, __ATOMIC_ACQUIRE);

		if (before & 1u)
			continue;
		created = __atomic_load_n(&s->created_ms, __ATOMIC_RELAXED);
		for (int i = 0; i < KEY_WORDS; i++)
			w[i] = __atomic_load_n(&s->w[i], __ATOMIC_RELAXED);
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
		stable = __atomic_load_n(&s->seq, __ATOMIC_RELAXED) == before;
	}
	if (!stable || created == 0)
		return false;
	memcpy(out->name, w, TICKET_NAME_LEN);
	memcpy(out->aes, (unsigned char *)w + TICKET_NAME_LEN, TICKET_AES_LEN);
	memcpy(out->hmac, (unsigned char *)w + TICKET_NAME_LEN + TICKET_AES_LEN,
	       TICKET_HMAC_LEN);
	out->created = (double)created / 1000.;
	OPENSSL_cleanse(w, sizeof(w));
	return true;
}

struct tls_ticket_ring *tls_ticket_ring_new(char *err, size_t err_len)
{
	struct tls_ticket_ring *r;
	uint64_t w[KEY_WORDS];

	r = mmap(NULL, ring_bytes(), PROT_READ | PROT_WRITE,
		 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (r == MAP_FAILED) {
		snprintf(err, err_len, "ticket keys: mmap: %s", strerror(errno));
		return NULL;
	}
	/* Kept off swap where the limits allow it, and out of core dumps. */
	(void)mlock(r, ring_bytes());
	(void)madvise(r, ring_bytes(), MADV_DONTDUMP);
	if (!fresh_key(w)) {
		snprintf(err, err_len, "ticket keys: getrandom: %s",
			 strerror(errno));
		munmap(r, ring_bytes());
		return NULL;
	}
	slot_write(&r->slot[0], w, mono_ms());
	OPENSSL_cleanse(w, sizeof(w));
	process_ring = r;
	return r;
}

void tls_ticket_ring_free(struct tls_ticket_ring *r)
{
	if (r == NULL)
		return;
	if (process_ring == r)
		process_ring = NULL;
	if (mprotect(r, ring_bytes(), PROT_READ | PROT_WRITE) == 0)
		OPENSSL_cleanse(r, sizeof(*r)); /* the page is shared */
	munmap(r, ring_bytes());
}

bool tls_ticket_ring_rotate(struct tls_ticket_ring *r, double now,
			    double interval)
{
	uint32_t cur = __atomic_load_n(&r->newest, __ATOMIC_RELAXED);
	uint64_t created = r->slot[cur].created_ms;
	uint64_t now_ms = (uint64_t)(now * 1000.);
	uint64_t w[KEY_WORDS];

	if (created != 0 && now_ms < created + (uint64_t)(interval * 1000.))
		return false;
	if (!fresh_key(w)) {
		log_msg(LOG_ERR, "tls_ticket_keys", "getrandom: %s: the "
			"current key stays in use", strerror(errno));
		return false;
	}
	/* The key before the current one goes: tickets made with it are past
	 * their lifetime (they were issued at least `interval` ago). */
	slot_write(&r->slot[cur ^ 1u], w, now_ms ? now_ms : 1);
	__atomic_store_n(&r->newest, cur ^ 1u, __ATOMIC_RELEASE);
	OPENSSL_cleanse(w, sizeof(w));
	return true;
}

void tls_ticket_ring_seal(struct tls_ticket_ring *r)
{
	if (r != NULL && mprotect(r, ring_bytes(), PROT_READ) != 0)
		log_msg(LOG_WARN, "tls_ticket_keys", "mprotect: %s",
			strerror(errno));
}

bool tls_ticket_ring_current(const struct tls_ticket_ring *r,
			     struct tls_ticket_key *out)
{
	if (r == NULL)
		return false;
	return slot_read(&r->slot[__atomic_load_n(&r->newest,
						  __ATOMIC_ACQUIRE)],
			 out);
}

bool tls_ticket_ring_find(const struct tls_ticket_ring *r,
			  const unsigned char name[TICKET_NAME_LEN],
			  struct tls_ticket_key *out, bool *newest)
{
	uint32_t cur;

	if (r == NULL)
		return false;
	cur = __atomic_load_n(&r->newest, __ATOMIC_ACQUIRE);
	for (uint32_t k = 0; k < RING_SLOTS; k++) {
		uint32_t i = (cur + k) % RING_SLOTS;

		if (slot_read(&r->slot[i], out) &&
		    CRYPTO_memcmp(out->name, name, TICKET_NAME_LEN) == 0) {
			*newest = i == cur;
			return true;
		}
	}
	OPENSSL_cleanse(out, sizeof(*out));
	return false;
}

/* ---- the ticket callback ------------------------------------------------ */

static bool mac_init(EVP_MAC_CTX *mac, unsigned char *key)
{
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, key,
						  TICKET_HMAC_LEN),
		OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
						 (char *)"SHA256", 0),
		OSSL_PARAM_construct_end(),
	};

	return EVP_MAC_CTX_set_params(mac, params) == 1;
}

/*
 * OpenSSL's contract (SSL_CTX_set_tlsext_ticket_key_evp_cb(3)): encrypting
 * (enc = 1), 1 = a ticket is made with the key set up here, 0 = no ticket;
 * decrypting, 1 = key found, 2 = found but renew it (the client gets a new
 * ticket), 0 = unknown key (full handshake), < 0 = error.
 *
 * Renewed: a ticket of the previous key, and every ticket at TLS 1.3,
 * where OpenSSL otherwise sends none after a resumption and a client
 * that uses a ticket only once (RFC 8446 C.4) would resume only once;
 * the ticket also carries the ACK of the client's Finished at once.
 *
 * No ticket for a client that presented a certificate: OpenSSL does not
 * keep the chain in a ticket, so a resumed session would bring no chain
 * for tls_server_check_peer to verify. Such clients do full handshakes;
 * the others resume.
 */
static int ticket_cb(SSL *ssl, unsigned char *name, unsigned char *iv,
		     EVP_CIPHER_CTX *cipher, EVP_MAC_CTX *mac, int enc)
{
	struct tls_ticket_key key;
	bool newest = true;
	int rc;

	if (enc) {
		if (SSL_get0_peer_certificate(ssl) != NULL ||
		    !tls_ticket_ring_current(process_ring, &key))
			return 0;
		memcpy(name, key.name, TICKET_NAME_LEN);
		rc = RAND_bytes(iv, EVP_CIPHER_get_iv_length(
					    EVP_aes_256_cbc())) == 1 &&
		     EVP_EncryptInit_ex(cipher, EVP_aes_256_cbc(), NULL,
					key.aes, iv) == 1
			     ? 1
			     : -1;
	} else {
		if (!tls_ticket_ring_find(process_ring, name, &key, &newest))
			return 0;
		rc = EVP_DecryptInit_ex(cipher, EVP_aes_256_cbc(), NULL,
					key.aes, iv) == 1
			     ? (newest && SSL_version(ssl) < TLS1_3_VERSION ? 1
									   : 2)
			     : -1;
	}
	if (rc > 0 && !mac_init(mac, key.hmac))
		rc = -1;
	OPENSSL_cleanse(&key, sizeof(key));
	return rc;
}

/* ---- finding libtls's SSL_CTXs -------------------------------------------- */

/* libtls makes one SSL_CTX per certificate pair; OpenSSL asks the first
 * (the connection's session_ctx) for tickets, even after SNI switched the
 * connection to another, so a store of more pairs than this still works. */
enum { CAPTURE_MAX = 256 };

static struct {
	int index; /* our SSL_CTX ex_data index; -1 until registered */
	bool on;
	size_t n;
	SSL_CTX *ctx[CAPTURE_MAX];
} capture = {.index = -1};

static void on_ssl_ctx_new(void *parent, void *ptr, CRYPTO_EX_DATA *ad,
			   int idx, long argl, void *argp)
{
	(void)ptr;
	(void)ad;
	(void)idx;
	(void)argl;
	(void)argp;
	/* A reference of our own: a context libtls freed before
	 * tls_configure returned must not be written to afterwards. */
	if (capture.on && capture.n < CAPTURE_MAX && SSL_CTX_up_ref(parent))
		capture.ctx[capture.n++] = parent;
}

static bool capture_ready(void)
{
	if (capture.index < 0)
		capture.index = SSL_CTX_get_ex_new_index(0, NULL,
							 on_ssl_ctx_new, NULL,
							 NULL);
	return capture.index >= 0;
}

/* ---- configuration ------------------------------------------------------- */

int tls_resume_lifetime(const struct config *cfg)
{
	return (int)cfg->session_lifetime;
}

/*
 * OpenSSL resumes a session only in the session id context it was made
 * in. Ours says whether client certificates are asked for (and against
 * which ca_file): a session from a configuration that did not ask is not
 * resumed by one that does, so a reload to `verify` takes effect at once.
 */
static void session_id_context(const struct config *cfg, bool asks,
			       unsigned char out[TLS_MAX_SESSION_ID_LENGTH])
{
	static const char tag[] = "smtpgw inbound session v1";
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int n = 0;

	memset(out, 0, TLS_MAX_SESSION_ID_LENGTH);
	if (md != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 &&
	    EVP_DigestUpdate(md, tag, sizeof(tag)) == 1 &&
	    EVP_DigestUpdate(md, asks ? "1" : "0", 1) == 1 &&
	    EVP_DigestUpdate(md, asks ? cfg->ca_file : "",
			     asks ? strlen(cfg->ca_file) : 0) == 1 &&
	    EVP_DigestFinal_ex(md, digest, &n) == 1)
		memcpy(out, digest,
		       n < TLS_MAX_SESSION_ID_LENGTH ? n
						     : TLS_MAX_SESSION_ID_LENGTH);
	EVP_MD_CTX_free(md);
}

bool tls_resume_prepare(const struct config *cfg, bool ask_certs,
			struct tls_config *c, char *err, size_t err_len)
{
	unsigned char sid[TLS_MAX_SESSION_ID_LENGTH];
	int lifetime = tls_resume_lifetime(cfg);

	session_id_context(cfg, ask_certs, sid);
	if (tls_config_set_session_id(c, sid, sizeof(sid)) != 0 ||
	    (lifetime > 0 &&
	     tls_config_set_session_lifetime(c, lifetime) != 0)) {
		snprintf(err, err_len, "[tls] session resumption: %s",
			 tls_config_error(c));
		return false;
	}
	return true;
}

int tls_resume_configure(const struct config *cfg, struct tls *server,
			 struct tls_config *c)
{
	bool resume = tls_resume_lifetime(cfg) > 0 && capture_ready();
	int rc;

	capture.n = 0;
	capture.on = resume;
	rc = tls_configure(server, c);
	capture.on = false;
	for (size_t i = 0; i < capture.n; i++) {
		if (rc == 0)
			SSL_CTX_set_tlsext_ticket_key_evp_cb(capture.ctx[i],
							     ticket_cb);
		SSL_CTX_free(capture.ctx[i]);
	}
	capture.n = 0;
	return rc;
}

/* ---- the self-test ------------------------------------------------------ */

enum { SELFTEST_STEPS = 64 };

struct pair {
	int fd[2];     /* [0] the server's end, [1] the client's */
	struct tls *server;
	SSL *client;
};

static void pair_free(struct pair *p)
{
	if (p->server != NULL) {
		(void)tls_close(p->server);
		tls_free(p->server);
	}
	/* A close without close_notify would mark the session unresumable
	 * (OpenSSL treats it as a bad session). */
	if (p->client != NULL && SSL_is_init_finished(p->client))
		(void)SSL_shutdown(p->client);
	ERR_clear_error();
	SSL_free(p->client);
	for (int i = 0; i < 2; i++)
		if (p->fd[i] >= 0)
			close(p->fd[i]);
}

static void client_error(char *why, size_t len, const char *what)
{
	unsigned long e = ERR_peek_last_error();
	char text[200] = "no detail";

	if (e != 0)
		ERR_error_string_n(e, text, sizeof(text));
	snprintf(why, len, "%s: %s", what, text);
	ERR_clear_error();
}

/* Both sides of one handshake, turn by turn: the socketpair is
 * non-blocking and big enough for a whole flight, so nothing waits. */
static bool run_handshake(struct pair *p, char *why, size_t len)
{
	bool client_done = false, server_done = false;

	for (int i = 0; i < SELFTEST_STEPS && !(client_done && server_done);
	     i++) {
		if (!client_done) {
			int r = SSL_do_handshake(p->client);
			int e = r == 1 ? SSL_ERROR_NONE
				       : SSL_get_error(p->client, r);

			client_done = r == 1;
			if (!client_done && e != SSL_ERROR_WANT_READ &&
			    e != SSL_ERROR_WANT_WRITE) {
				client_error(why, len, "client handshake");
				return false;
			}
		}
		if (!server_done) {
			int r = tls_handshake(p->server);

			server_done = r == 0;
			if (!server_done && r != TLS_WANT_POLLIN &&
			    r != TLS_WANT_POLLOUT) {
				snprintf(why, len, "server handshake: %s",
					 tls_error(p->server));
				return false;
			}
		}
	}
	if (!(client_done && server_done))
		snprintf(why, len, "handshake did not finish");
	return client_done && server_done;
}

/* One connection: offers `offer` (may be NULL), says whether both sides
 * saw a resumption, and hands back the session to resume next. */
static bool one_connection(struct tls *server, SSL_CTX *cctx,
			   SSL_SESSION *offer, bool *resumed,
			   SSL_SESSION **next, char *why, size_t len)
{
	struct pair p = {.fd = {-1, -1}};
	unsigned char byte;
	bool ok;

	ok = socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
			0, p.fd) == 0;
	if (!ok)
		snprintf(why, len, "socketpair: %s", strerror(errno));
	if (ok && tls_accept_socket(server, &p.server, p.fd[0]) != 0) {
		snprintf(why, len, "accept: %s", tls_error(server));
		ok = false;
	}
	if (ok && ((p.client = SSL_new(cctx)) == NULL ||
		   SSL_set_fd(p.client, p.fd[1]) != 1 ||
		   (offer != NULL && SSL_set_session(p.client, offer) != 1))) {
		client_error(why, len, "client");
		ok = false;
	}
	if (ok)
		SSL_set_connect_state(p.client);
	ok = ok && run_handshake(&p, why, len);
	if (ok) {
		/* At TLS 1.3 the tickets follow the handshake: read them. */
		(void)SSL_read(p.client, &byte, 1);
		ERR_clear_error();
		*resumed = SSL_session_reused(p.client) == 1 &&
			   tls_conn_session_resumed(p.server) == 1;
		*next = SSL_get1_session(p.client);
	}
	pair_free(&p);
	return ok;
}

static bool selftest_version(struct tls *server, int version, char *why,
			     size_t len)
{
	SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
	SSL_SESSION *first = NULL, *second = NULL;
	bool resumed = false, ok;

	ok = cctx != NULL &&
	     SSL_CTX_set_min_proto_version(cctx, version) == 1 &&
	     SSL_CTX_set_max_proto_version(cctx, version) == 1;
	if (!ok)
		client_error(why, len, "client context");
	else
		SSL_CTX_set_verify(cctx, SSL_VERIFY_NONE, NULL);
	ok = ok && one_connection(server, cctx, NULL, &resumed, &first, why,
				  len);
	if (ok && (first == NULL || !SSL_SESSION_is_resumable(first))) {
		snprintf(why, len, "no session ticket issued");
		ok = false;
	}
	ok = ok && one_connection(server, cctx, first, &resumed, &second, why,
				  len);
	if (ok && !resumed) {
		snprintf(why, len, "ticket not accepted");
		ok = false;
	}
	SSL_SESSION_free(first);
	SSL_SESSION_free(second);
	SSL_CTX_free(cctx);
	return ok;
}

static void log_selftest(bool ok, const char *versions, int lifetime,
			 const char *why)
{
	struct logline l;

	log_begin(&l, ok ? LOG_INFO : LOG_WARN, "tls_resumption");
	log_kv(&l, "status", "%s", ok ? "ok" : "unavailable");
	if (ok) {
		log_kv(&l, "versions", "%s", versions);
		log_kv(&l, "lifetime", "%ds", lifetime);
	} else {
		log_kv(&l, "reason", "%s", why);
	}
	log_end(&l);
}

bool tls_resume_selftest(const struct config *cfg, struct tls *server)
{
	static const struct {
		uint32_t libtls;
		int openssl;
		const char *name;
	} versions[] = {
		{TLS_PROTOCOL_TLSv1_2, TLS1_2_VERSION, "TLSv1.2"},
		{TLS_PROTOCOL_TLSv1_3, TLS1_3_VERSION, "TLSv1.3"},
	};
	char why[300] = "", done[32] = "", fail[260];
	uint32_t protocols = 0;
	bool ok = true;

	if (server == NULL)
		snprintf(why, sizeof(why), "no TLS server (STARTTLS is never "
					   "offered)");
	else if (tls_resume_lifetime(cfg) <= 0)
		snprintf(why, sizeof(why), "[tls] session_lifetime = 0");
	else if (process_ring == NULL)
		snprintf(why, sizeof(why), "no ticket keys");
	else if (tls_config_parse_protocols(&protocols, cfg->protocols) != 0)
		snprintf(why, sizeof(why), "[tls] protocols unreadable");
	ok = why[0] == '\0';
	for (size_t i = 0; ok && i < sizeof(versions) / sizeof(versions[0]);
	     i++) {
		if (!(protocols & versions[i].libtls))
			continue;
		ok = selftest_version(server, versions[i].openssl, fail,
				      sizeof(fail));
		if (!ok)
			snprintf(why, sizeof(why), "%s: %s", versions[i].name,
				 fail);
		else
			snprintf(done + strlen(done), sizeof(done) - strlen(done),
				 "%s%s", done[0] ? "," : "", versions[i].name);
	}
	if (ok && done[0] == '\0') {
		snprintf(why, sizeof(why), "neither TLS 1.2 nor 1.3 enabled");
		ok = false;
	}
	log_selftest(ok, done, tls_resume_lifetime(cfg), why);
	return ok;
}
