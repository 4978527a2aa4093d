/*
 * requiretls.c: the decisions and the header scan behind requiretls.h. It
 * owns no state and does no I/O; the reasons it gives are static strings
 * for logs and DSNs.
 */
#include "proto/requiretls.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

bool hop_authenticated_for_requiretls(const struct requiretls_hop *h,
				      const char **why)
{
	*why = NULL;
	if (!h->tls) {
		*why = "the session is not under TLS";
		return false;
	}
	if (h->dane)
		return true;
	if (!h->cert_verified) {
		*why = "the server was authenticated neither by DANE nor by a "
		       "certificate that verifies";
		return false;
	}
	if (h->mx_lookup && !h->mx_dnssec && !h->mx_sts) {
		*why = "the MX host name is vouched for neither by DNSSEC nor "
		       "by MTA-STS";
		return false;
	}
	return true;
}

enum requiretls_verdict requiretls_decide(const struct requiretls_hop *h,
					  bool advertised, bool null_sender,
					  char *why, size_t why_len)
{
	const char *because;

	if (!hop_authenticated_for_requiretls(h, &because)) {
		snprintf(why, why_len, "REQUIRETLS: %s", because);
		return REQUIRETLS_REFUSE;
	}
	if (advertised) {
		why[0] = '\0';
		return REQUIRETLS_SEND;
	}
	if (null_sender) {
		snprintf(why, why_len, "REQUIRETLS not offered: a bounce goes "
				       "without it");
		return REQUIRETLS_SEND_PLAIN;
	}
	snprintf(why, why_len, "REQUIRETLS: the server does not offer "
			       "REQUIRETLS");
	return REQUIRETLS_REFUSE;
}

static bool is_wsp(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* The value of one header field (after its colon, up to the end of its
 * last folded line) is "No", spaces around it. */
static bool value_is_no(const char *v, size_t n)
{
	while (n > 0 && is_wsp(v[0])) {
		v++;
		n--;
	}
	while (n > 0 && is_wsp(v[n - 1]))
		n--;
	return n == 2 && strncasecmp(v, "No", 2) == 0;
}

/* The end of the field that starts at h[i]: after its last folded line's
 * LF (or at len). */
static size_t field_end(const char *h, size_t i, size_t len)
{
	for (;;) {
		const char *lf = memchr(h + i, '\n', len - i);

		if (lf == NULL)
			return len;
		i = (size_t)(lf - h) + 1;
		if (i >= len || (h[i] != ' ' && h[i] != '\t'))
			return i;
	}
}

bool requiretls_header_no(const char *headers, size_t len)
{
	static const char NAME[] = "TLS-Required:";
	size_t name = sizeof(NAME) - 1;

	for (size_t i = 0; i < len;) {
		size_t end;

		if (headers[i] == '\n' ||
		    (headers[i] == '\r' && i + 1 < len && headers[i + 1] == '\n'))
			return false; /* the empty line: the body follows */
		end = field_end(headers, i, len);
		if (end - i > name && strncasecmp(headers + i, NAME, name) == 0 &&
		    value_is_no(headers + i + name, end - i - name))
			return true;
		i = end;
	}
	return false;
}
