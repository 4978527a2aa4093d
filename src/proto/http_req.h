/*
 * http_req: the head of an HTTP/1.x request, as the metrics endpoint reads
 * it: the request line (method, target, version) and the header lines up
 * to the empty line, which are skipped. Pure: bytes in, a verdict out; no
 * I/O, no allocation. Only what a Prometheus scrape needs is understood:
 * GET of /metrics (a query string is ignored).
 */
#ifndef SMTPGW_HTTP_REQ_H
#define SMTPGW_HTTP_REQ_H

#include <stddef.h>

/* A request head larger than this is refused (431) without reading on. */
enum { HTTP_HEAD_MAX = 8192 };

enum http_verdict {
	HTTP_INCOMPLETE,  /* no empty line yet: read more */
	HTTP_METRICS,	  /* GET /metrics: 200 */
	HTTP_NOT_FOUND,	  /* GET of another target: 404 */
	HTTP_BAD_METHOD,  /* a method other than GET: 405 */
	HTTP_BAD_REQUEST, /* not an HTTP/1.x request line, or NUL/control
			     octets: 400 */
	HTTP_TOO_LARGE,	  /* no end of the head within HTTP_HEAD_MAX: 431 */
};

/* Looks at the first `len` octets received. Lines end in CRLF or a bare
 * LF (RFC 9112 §2.2 lets a server take either). */
enum http_verdict http_parse_request(const char *buf, size_t len);

/* The status line's code and reason for a verdict (HTTP_INCOMPLETE has
 * none: 0 and NULL). */
int http_status(enum http_verdict v, const char **reason);

#endif
