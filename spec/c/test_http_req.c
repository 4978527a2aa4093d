/*
 * Unit checks of src/proto/http_req.c, the metrics endpoint's request
 * reader: verdicts for whole heads, heads arriving in pieces, bad request
 * lines, control octets, and the size bound. TAP output.
 */
#include "proto/http_req.h"

#include "tap.h"

#include <stdlib.h>
#include <string.h>

static enum http_verdict parse(const char *s)
{
	return http_parse_request(s, strlen(s));
}

static void whole_heads(void)
{
	check(parse("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n") == HTTP_METRICS,
	      "GET /metrics HTTP/1.1 with a Host header");
	check(parse("GET /metrics HTTP/1.0\r\n\r\n") == HTTP_METRICS,
	      "GET /metrics HTTP/1.0 without headers");
	check(parse("GET /metrics?name[]=x HTTP/1.1\r\n\r\n") == HTTP_METRICS,
	      "a query string is ignored");
	check(parse("GET /metrics HTTP/1.1\n\n") == HTTP_METRICS,
	      "bare LF line ends");
	check(parse("\r\nGET /metrics HTTP/1.1\r\n\r\n") == HTTP_METRICS,
	      "an empty line before the request line is skipped");
	check(parse("GET / HTTP/1.1\r\n\r\n") == HTTP_NOT_FOUND, "GET / is 404");
	check(parse("GET /metricsx HTTP/1.1\r\n\r\n") == HTTP_NOT_FOUND,
	      "GET /metricsx is 404");
	check(parse("GET /Metrics HTTP/1.1\r\n\r\n") == HTTP_NOT_FOUND,
	      "the path is case-sensitive");
	check(parse("POST /metrics HTTP/1.1\r\n\r\n") == HTTP_BAD_METHOD,
	      "POST is 405");
	check(parse("HEAD /metrics HTTP/1.1\r\n\r\n") == HTTP_BAD_METHOD,
	      "HEAD is 405");
	check(parse("get /metrics HTTP/1.1\r\n\r\n") == HTTP_BAD_METHOD,
	      "the method is case-sensitive (get is not GET)");
}

static void bad_heads(void)
{
	check(parse("GET /metrics\r\n\r\n") == HTTP_BAD_REQUEST,
	      "HTTP/0.9 (no version) is 400");
	check(parse("GET /metrics HTTP/2.0\r\n\r\n") == HTTP_BAD_REQUEST,
	      "HTTP/2.0 is 400");
	check(parse("GET /metrics HTTP/1.10\r\n\r\n") == HTTP_BAD_REQUEST,
	      "HTTP/1.10 is 400");
	check(parse("GET  /metrics HTTP/1.1\r\n\r\n") == HTTP_BAD_REQUEST,
	      "two spaces after the method are 400");
	check(parse("GET /met rics HTTP/1.1\r\n\r\n") == HTTP_BAD_REQUEST,
	      "a space in the target is 400");
	check(parse(" GET /metrics HTTP/1.1\r\n\r\n") == HTTP_BAD_REQUEST,
	      "a leading space is 400");
	check(parse("GET /metrics HTTP/1.1\r\nX: a\x01\r\n\r\n") ==
		      HTTP_BAD_REQUEST,
	      "a control octet in a header is 400");
	check(parse("GET /metrics HTTP/1.1\r\nX: \xc3\xa9\t\r\n\r\n") ==
		      HTTP_METRICS,
	      "8-bit text and tabs in a header are taken");
	check(http_parse_request("GET /metrics HTTP/1.1\r\nX\0\r\n", 27) ==
		      HTTP_BAD_REQUEST,
	      "a NUL in an unfinished line is 400 at once");
	check(parse("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03") ==
		      HTTP_BAD_REQUEST ||
		      parse("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03") ==
			      HTTP_INCOMPLETE,
	      "a TLS ClientHello is not a request");
}

/* Every prefix of a good head is INCOMPLETE; the whole is the verdict. */
static void pieces(void)
{
	const char *head = "GET /metrics HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n";
	size_t n = strlen(head);
	bool all = true;

	for (size_t i = 0; i < n; i++)
		all &= http_parse_request(head, i) == HTTP_INCOMPLETE;
	check(all, "every prefix of a head is incomplete");
	check(http_parse_request(head, n) == HTTP_METRICS,
	      "the whole head is GET /metrics");
	check(parse("POST /x HTTP/1.1\r\n") == HTTP_INCOMPLETE,
	      "a good request line without its empty line waits");
	check(parse("BAD\r\n") == HTTP_BAD_REQUEST,
	      "a bad request line is refused without waiting for the head");
}

static void bounds(void)
{
	size_t n = HTTP_HEAD_MAX + 100;
	char *big = malloc(n);
	const char *reason;

	memset(big, 'a', n);
	memcpy(big, "GET /metrics HTTP/1.1\r\nX-Long: ", 31);
	check(http_parse_request(big, HTTP_HEAD_MAX - 1) == HTTP_INCOMPLETE,
	      "just under the bound: incomplete");
	check(http_parse_request(big, HTTP_HEAD_MAX) == HTTP_TOO_LARGE,
	      "at the bound without an end: 431");
	check(http_parse_request(big, n) == HTTP_TOO_LARGE,
	      "past the bound: 431, only the bound read");
	free(big);
	check(http_status(HTTP_TOO_LARGE, &reason) == 431 &&
		      strcmp(reason, "Request Header Fields Too Large") == 0,
	      "431 Request Header Fields Too Large");
	check(http_status(HTTP_BAD_METHOD, &reason) == 405, "405");
	check(http_status(HTTP_INCOMPLETE, &reason) == 0 && reason == NULL,
	      "no status while incomplete");
}

int main(void)
{
	whole_heads();
	bad_heads();
	pieces();
	bounds();
	return tap_done();
}
