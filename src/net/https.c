/*
 * https: libcurl's multi interface on libev, behind https.h. libcurl
 * tells us which sockets to watch (CURLMOPT_SOCKETFUNCTION: one ev_io
 * each, made here and freed when it says CURL_POLL_REMOVE) and when to
 * call it back (CURLMOPT_TIMERFUNCTION: one ev_timer); we call
 * curl_multi_socket_action from those watchers only, then collect the
 * finished transfers. A finished request waits on the done list and is
 * called back from a zero timer, so no callback runs inside libcurl or
 * inside https_get. This file owns each request (its easy handle, its
 * resolve list, its body) from https_get until its callback has returned
 * or it was cancelled; it never resolves a name (CURLOPT_RESOLVE gives
 * libcurl the caller's addresses), never reads a CA file or directory
 * (CURLOPT_SSL_CTX_FUNCTION puts the caller's X509_STORE in), and never
 * blocks the loop.
 */
#include "net/https.h"

#include "core/log.h"

#include <curl/curl.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_TRANSFERS = 16 }; /* connections at once; more wait in libcurl */

struct req {
	struct req *next, *prev; /* h->reqs */
	struct req *next_done;	 /* h->done, waiting for the zero timer */
	struct https *h;
	uint64_t id;
	https_cb *cb;
	void *arg;
	CURL *easy;
	struct curl_slist *resolve;
	char *body;
	size_t len, cap, max;
	bool too_big;
	bool queued;
	X509_STORE *trust;
	struct https_result result;
	char curl_error[CURL_ERROR_SIZE];
};

struct sock {
	ev_io io;
	struct https *h;
	curl_socket_t fd;
};

struct https {
	struct ev_loop *loop;
	CURLM *multi;
	ev_timer timer; /* libcurl's timeout */
	ev_timer kick;	/* the done list */
	struct req *reqs;
	struct req *done, *done_tail;
};

/* ---- requests ------------------------------------------------------------ */

static void req_free(struct req *r)
{
	struct https *h = r->h;

	if (r->prev != NULL)
		r->prev->next = r->next;
	else
		h->reqs = r->next;
	if (r->next != NULL)
		r->next->prev = r->prev;
	if (r->easy != NULL) {
		curl_multi_remove_handle(h->multi, r->easy);
		curl_easy_cleanup(r->easy);
	}
	curl_slist_free_all(r->resolve);
	X509_STORE_free(r->trust);
	free(r->body);
	free(r);
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *userp)
{
	struct req *r = userp;
	size_t n = size * nmemb;

	if (n > r->max - r->len) {
		r->too_big = true;
		return 0; /* libcurl stops with CURLE_WRITE_ERROR */
	}
	if (r->len + n > r->cap) {
		size_t cap = r->cap ? r->cap : 4096;
		char *grown;

		while (cap < r->len + n)
			cap *= 2;
		if (cap > r->max)
			cap = r->max;
		if ((grown = realloc(r->body, cap)) == NULL)
			return 0;
		r->body = grown;
		r->cap = cap;
	}
	memcpy(r->body + r->len, data, n);
	r->len += n;
	return n;
}

/* ---- finishing ----------------------------------------------------------- */

static void queue_done(struct req *r)
{
	struct https *h = r->h;

	r->queued = true;
	if (h->done_tail != NULL)
		h->done_tail->next_done = r;
	else
		h->done = r;
	h->done_tail = r;
	if (!ev_is_active(&h->kick))
		ev_timer_start(h->loop, &h->kick);
}

static enum https_status status_of(const struct req *r, CURLcode rc)
{
	if (r->too_big || rc == CURLE_FILESIZE_EXCEEDED)
		return HTTPS_TOO_BIG;
	if (rc == CURLE_PEER_FAILED_VERIFICATION)
		return HTTPS_TLS;
	return rc == CURLE_OK ? HTTPS_DONE : HTTPS_FAILED;
}

static void transfer_done(struct req *r, CURLcode rc)
{
	struct https_result *res = &r->result;
	char *type = NULL;

	res->status = status_of(r, rc);
	curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &res->code);
	if (curl_easy_getinfo(r->easy, CURLINFO_CONTENT_TYPE, &type) ==
		    CURLE_OK &&
	    type != NULL)
		snprintf(res->content_type, sizeof(res->content_type), "%s",
			 type);
	if (res->status == HTTPS_TOO_BIG)
		snprintf(res->error, sizeof(res->error),
			 "the body is larger than %zu octets", r->max);
	else if (res->status != HTTPS_DONE)
		snprintf(res->error, sizeof(res->error), "%s",
			 r->curl_error[0] ? r->curl_error
					  : curl_easy_strerror(rc));
	res->body = r->body != NULL ? r->body : "";
	res->body_len = r->len;
	curl_multi_remove_handle(r->h->multi, r->easy);
	queue_done(r);
}

/* Every transfer libcurl has finished. */
static void collect(struct https *h)
{
	CURLMsg *msg;
	int left;

	while ((msg = curl_multi_info_read(h->multi, &left)) != NULL) {
		struct req *r = NULL;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &r);
		if (r != NULL && !r->queued)
			transfer_done(r, msg->data.result);
	}
}

static void on_kick(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct https *h = w->data;
	struct req *r = h->done;

	(void)loop;
	(void)revents;
	h->done = h->done_tail = NULL;
	while (r != NULL) {
		struct req *next = r->next_done;

		if (r->cb != NULL) /* NULL: cancelled while it waited */
			r->cb(r->id, &r->result, r->arg);
		req_free(r);
		r = next;
	}
}

/* ---- libcurl's sockets and timer ------------------------------------------ */

static void on_socket(struct ev_loop *loop, ev_io *w, int revents)
{
	struct sock *s = w->data;
	struct https *h = s->h;
	int flags = (revents & EV_READ ? CURL_CSELECT_IN : 0) |
		    (revents & EV_WRITE ? CURL_CSELECT_OUT : 0);
	int running;

	(void)loop;
	curl_multi_socket_action(h->multi, s->fd, flags, &running);
	collect(h);
}

static void on_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct https *h = w->data;
	int running;

	(void)loop;
	(void)revents;
	curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	collect(h);
}

static int socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp,
		     void *socketp)
{
	struct https *h = userp;
	struct sock *s = socketp;
	int events = (what & CURL_POLL_IN ? EV_READ : 0) |
		     (what & CURL_POLL_OUT ? EV_WRITE : 0);

	(void)easy;
	if (what == CURL_POLL_REMOVE) {
		if (s != NULL) {
			ev_io_stop(h->loop, &s->io);
			free(s);
			curl_multi_assign(h->multi, fd, NULL);
		}
		return 0;
	}
	if (s == NULL) {
		if ((s = calloc(1, sizeof(*s))) == NULL)
			return -1; /* libcurl fails the transfer */
		s->h = h;
		s->fd = fd;
		ev_init(&s->io, on_socket);
		s->io.data = s;
		curl_multi_assign(h->multi, fd, s);
	}
	ev_io_stop(h->loop, &s->io);
	ev_io_set(&s->io, fd, events);
	ev_io_start(h->loop, &s->io);
	return 0;
}

static int timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	struct https *h = userp;

	(void)multi;
	ev_timer_stop(h->loop, &h->timer);
	if (timeout_ms >= 0) {
		ev_timer_set(&h->timer, (double)timeout_ms / 1000.0, 0.);
		ev_timer_start(h->loop, &h->timer);
	}
	return 0;
}

/* ---- setting up ------------------------------------------------------------ */

struct https *https_new(struct ev_loop *loop, char *err, size_t err_len)
{
	static bool global_done;
	struct https *h;

	if (!global_done && curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
		snprintf(err, err_len, "https: libcurl did not initialize");
		return NULL;
	}
	global_done = true;
	if ((h = calloc(1, sizeof(*h))) == NULL ||
	    (h->multi = curl_multi_init()) == NULL) {
		snprintf(err, err_len, "https: out of memory");
		free(h);
		return NULL;
	}
	h->loop = loop;
	curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
	curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
	curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
	curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
	curl_multi_setopt(h->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS,
			  (long)MAX_TRANSFERS);
	ev_init(&h->timer, on_timeout);
	h->timer.data = h;
	ev_timer_init(&h->kick, on_kick, 0., 0.);
	h->kick.data = h;
	return h;
}

void https_free(struct https *h)
{
	if (h == NULL)
		return;
	while (h->reqs != NULL)
		req_free(h->reqs);
	curl_multi_cleanup(h->multi); /* its sockets come back as REMOVE */
	ev_timer_stop(h->loop, &h->timer);
	ev_timer_stop(h->loop, &h->kick);
	free(h);
}

/* "HOST:PORT:ADDR,ADDR": libcurl connects there and never resolves HOST;
 * IPv6 addresses go in brackets. */
static bool resolve_list(struct req *r, const struct https_get *g)
{
	char entry[1024];
	size_t o;

	o = (size_t)snprintf(entry, sizeof(entry), "%s:%u:", g->host, g->port);
	for (size_t i = 0; i < g->n_addrs && i < HTTPS_MAX_ADDRS; i++) {
		bool v6 = strchr(g->addrs[i], ':') != NULL;

		if (o >= sizeof(entry))
			return false;
		o += (size_t)snprintf(entry + o, sizeof(entry) - o,
				      "%s%s%s%s", i > 0 ? "," : "",
				      v6 ? "[" : "", g->addrs[i], v6 ? "]" : "");
	}
	if (o >= sizeof(entry) || g->n_addrs == 0)
		return false;
	r->resolve = curl_slist_append(NULL, entry);
	return r->resolve != NULL;
}

/* libcurl's SSL_CTX gets our store, in place of anything it loaded. */
static CURLcode on_ssl_ctx(CURL *e, void *ctx, void *userp)
{
	struct req *r = userp;

	(void)e;
	SSL_CTX_set1_cert_store(ctx, r->trust);
	return CURLE_OK;
}

static bool set_options(struct req *r, const struct https_get *g)
{
	CURL *e = r->easy;
	bool ok = true;

	ok &= curl_easy_setopt(e, CURLOPT_URL, g->url) == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_PRIVATE, r) == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->curl_error) ==
	      CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body) == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_WRITEDATA, r) == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "https") == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "https") ==
	      CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L) == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_PROXY, "") == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_RESOLVE, r->resolve) == CURLE_OK;
	/* Only our store: not libcurl's built-in CA file or directory. */
	ok &= curl_easy_setopt(e, CURLOPT_CAINFO, NULL) == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_CAPATH, NULL) == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_SSL_CTX_FUNCTION, on_ssl_ctx) ==
	      CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_SSL_CTX_DATA, r) == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L) == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L) == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_SSLVERSION,
			       (long)CURL_SSLVERSION_TLSv1_2) == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, g->timeout_ms) ==
	      CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
			       g->connect_timeout_ms) == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE,
			       (curl_off_t)g->max_size) == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L) == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_USERAGENT, "smtpgw") == CURLE_OK;
	return ok;
}

/* A request that cannot even start fails from the zero timer. */
static void fail_now(struct req *r, const char *why)
{
	r->result.status = HTTPS_FAILED;
	snprintf(r->result.error, sizeof(r->result.error), "%s", why);
	r->result.body = "";
	if (r->easy != NULL) {
		curl_easy_cleanup(r->easy);
		r->easy = NULL;
	}
	queue_done(r);
}

void https_get(struct https *h, const struct https_get *g, uint64_t id,
	       https_cb *cb, void *arg)
{
	struct req *r = calloc(1, sizeof(*r));

	if (r == NULL) {
		struct https_result res = {.status = HTTPS_FAILED,
					   .error = "out of memory",
					   .body = ""};

		log_msg(LOG_ERR, "https", "out of memory for %s", g->url);
		cb(id, &res, arg); /* the lesser breach of the contract */
		return;
	}
	*r = (struct req){.h = h, .id = id, .cb = cb, .arg = arg,
			  .max = g->max_size, .next = h->reqs, .trust = g->trust};
	if (h->reqs != NULL)
		h->reqs->prev = r;
	h->reqs = r;
	if (g->trust != NULL)
		X509_STORE_up_ref(g->trust); /* a reload may free the old */
	if (g->trust == NULL)
		fail_now(r, "no trust anchors ([tls] ca_file did not load)");
	else if (!resolve_list(r, g))
		fail_now(r, "no address to connect to");
	else if ((r->easy = curl_easy_init()) == NULL || !set_options(r, g))
		fail_now(r, "libcurl refused the request's options");
	else if (curl_multi_add_handle(h->multi, r->easy) != CURLM_OK)
		fail_now(r, "libcurl refused the request");
}

void https_cancel(struct https *h, uint64_t id)
{
	struct req *r = h->reqs;

	while (r != NULL) {
		struct req *next = r->next;

		if (r->id == id && !r->queued)
			req_free(r);
		else if (r->id == id)
			r->cb = NULL; /* on the done list: skipped there */
		r = next;
	}
}
