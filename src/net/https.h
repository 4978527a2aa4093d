/*
 * https: HTTPS GET requests on the event loop, with libcurl's multi
 * interface driven by libev (its sockets are ev_io watchers, its timeout an
 * ev_timer). Made for fetching MTA-STS policies (RFC 8461 §3.3): HTTPS
 * only, no redirects followed, no proxy, no system resolver (the caller
 * gives the addresses), only the trust anchors it is handed, a bounded
 * body and a bounded time. Callbacks carry the caller's id, never a
 * pointer, and never run from inside an https_* call or from inside
 * libcurl. The trust store is the caller's, made once: parsing a CA bundle
 * for every request would stall the loop (~30 ms for Debian's). It does not judge what came back (status, media type, body):
 * the caller does.
 */
#ifndef SMTPGW_HTTPS_H
#define SMTPGW_HTTPS_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct https;
struct x509_store_st;

enum { HTTPS_MAX_ADDRS = 8 };

struct https_get {
	const char *url;	/* "https://HOST/PATH" */
	const char *host;	/* HOST of the url, as it resolves below */
	unsigned port;		/* of the url (443) */
	const char *addrs[HTTPS_MAX_ADDRS]; /* "192.0.2.1", "2001:db8::1" */
	size_t n_addrs;
	struct x509_store_st *trust; /* the only trust anchors (OpenSSL's
					X509_STORE, shared, not copied) */
	size_t max_size;	/* body octets; more is HTTPS_TOO_BIG */
	long timeout_ms;	/* the whole request */
	long connect_timeout_ms;
};

enum https_status {
	HTTPS_DONE,	/* a response came: see code, type, body */
	HTTPS_TOO_BIG,	/* its body passed max_size */
	HTTPS_TLS,	/* the server's certificate did not verify */
	HTTPS_FAILED,	/* no response: connection, TLS, timeout, ... */
};

struct https_result {
	enum https_status status;
	long code;		 /* HTTP status, when DONE */
	char content_type[128];	 /* as sent, or "" */
	char error[256];	 /* why, when not DONE */
	const char *body;	 /* valid during the callback only */
	size_t body_len;
};

typedef void https_cb(uint64_t id, const struct https_result *r, void *arg);

/* NULL with a reason when libcurl cannot be set up. */
struct https *https_new(struct ev_loop *loop, char *err, size_t err_len);
/* Drops every request without calling back. Not from a callback. */
void https_free(struct https *h);

/* Starts one GET; `cb` is called exactly once unless cancelled first. */
void https_get(struct https *h, const struct https_get *req, uint64_t id,
	       https_cb *cb, void *arg);
/* Forgets the requests of `id`: no callback. */
void https_cancel(struct https *h, uint64_t id);

#endif
