/*
 * http_req: a request head read line by line (see http_req.h). The
 * request line decides the verdict; the header lines are only checked for
 * octets no header may hold, and the empty line ends the head. Each call
 * reads the buffer from its start, so a caller just hands over whatever
 * has arrived; HTTP_HEAD_MAX bounds the work.
 */
#include "proto/http_req.h"

#include <stdbool.h>
#include <string.h>

static const char METRICS_PATH[] = "/metrics";

/* RFC 9110 §5.6.2 tchar. */
static bool is_tchar(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') ||
	       (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* Visible ASCII, as a request target must be (RFC 9112 §3.2). */
static bool is_vchar(unsigned char c)
{
	return c > 0x20 && c < 0x7f;
}

/* A header line: any octet but NUL and the controls (HTAB allowed;
 * obs-text, 0x80 and up, allowed). */
static bool header_ok(const char *line, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)line[i];

		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return false;
	}
	return true;
}

static size_t span(const char *s, size_t n, bool (*ok)(unsigned char))
{
	size_t i = 0;

	while (i < n && ok((unsigned char)s[i]))
		i++;
	return i;
}

static bool is_metrics_target(const char *t, size_t n)
{
	size_t p = sizeof(METRICS_PATH) - 1;

	return n >= p && memcmp(t, METRICS_PATH, p) == 0 &&
	       (n == p || t[p] == '?');
}

/* "METHOD SP TARGET SP HTTP/1.D" */
static enum http_verdict request_line(const char *line, size_t n)
{
	size_t m = span(line, n, is_tchar), t, v;
	const char *target;

	if (m == 0 || m >= n || line[m] != ' ')
		return HTTP_BAD_REQUEST;
	target = line + m + 1;
	t = span(target, n - m - 1, is_vchar);
	v = m + 1 + t; /* the SP before the version */
	if (t == 0 || v >= n || line[v] != ' ' || n - v - 1 != 8 ||
	    memcmp(line + v + 1, "HTTP/1.", 7) != 0 || line[n - 1] < '0' ||
	    line[n - 1] > '9')
		return HTTP_BAD_REQUEST;
	if (m != 3 || memcmp(line, "GET", 3) != 0)
		return HTTP_BAD_METHOD;
	return is_metrics_target(target, t) ? HTTP_METRICS : HTTP_NOT_FOUND;
}

enum http_verdict http_parse_request(const char *buf, size_t len)
{
	enum http_verdict verdict = HTTP_INCOMPLETE;
	size_t pos = 0;
	bool first = true;

	if (len > HTTP_HEAD_MAX)
		len = HTTP_HEAD_MAX;
	while (pos < len) {
		const char *lf = memchr(buf + pos, '\n', len - pos);
		size_t n;

		if (lf == NULL)
			break;
		n = (size_t)(lf - (buf + pos));
		if (n > 0 && buf[pos + n - 1] == '\r')
			n--;
		if (first && n == 0) { /* RFC 9112 §2.2: skipped */
			pos += (size_t)(lf - (buf + pos)) + 1;
			continue;
		}
		if (first)
			verdict = request_line(buf + pos, n);
		else if (n == 0)
			return verdict;
		else if (!header_ok(buf + pos, n))
			return HTTP_BAD_REQUEST;
		if (verdict == HTTP_BAD_REQUEST)
			return verdict;
		first = false;
		pos += (size_t)(lf - (buf + pos)) + 1;
	}
	if (memchr(buf + pos, '\0', len - pos) != NULL)
		return HTTP_BAD_REQUEST;
	return len >= HTTP_HEAD_MAX ? HTTP_TOO_LARGE : HTTP_INCOMPLETE;
}

int http_status(enum http_verdict v, const char **reason)
{
	static const struct {
		int code;
		const char *reason;
	} status[] = {
		[HTTP_INCOMPLETE] = {0, NULL},
		[HTTP_METRICS] = {200, "OK"},
		[HTTP_NOT_FOUND] = {404, "Not Found"},
		[HTTP_BAD_METHOD] = {405, "Method Not Allowed"},
		[HTTP_BAD_REQUEST] = {400, "Bad Request"},
		[HTTP_TOO_LARGE] = {431, "Request Header Fields Too Large"},
	};

	if ((unsigned)v >= sizeof(status) / sizeof(status[0]))
		v = HTTP_BAD_REQUEST;
	*reason = status[v].reason;
	return status[v].code;
}
