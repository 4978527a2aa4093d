/*
 * Unit tests of src/proto/requiretls.c (TAP): which next hops may carry a
 * REQUIRETLS message (RFC 8689 §4.2.1), what the client does before MAIL
 * FROM, and the TLS-Required header field (§3).
 */
#include "proto/requiretls.h"
#include "tap.h"

#include <string.h>

static void test_authenticated(void)
{
	struct requiretls_hop h = {0};
	const char *why = NULL;

	check(!hop_authenticated_for_requiretls(&h, &why) && why != NULL &&
		      strstr(why, "TLS"),
	      "no TLS: not authenticated");
	h.tls = true;
	check(!hop_authenticated_for_requiretls(&h, &why) &&
		      strstr(why, "DANE"),
	      "TLS without a verified certificate or DANE: not");
	h.cert_verified = true;
	check(hop_authenticated_for_requiretls(&h, &why) && why == NULL,
	      "verified, on a configured next hop: yes");
	h.mx_lookup = true;
	check(!hop_authenticated_for_requiretls(&h, &why) &&
		      strstr(why, "MX host name"),
	      "verified, but named by an MX answer nothing vouches for: not");
	h.mx_dnssec = true;
	check(hop_authenticated_for_requiretls(&h, &why),
	      "... with a DNSSEC-secure MX answer: yes");
	h.mx_dnssec = false;
	h.mx_sts = true;
	check(hop_authenticated_for_requiretls(&h, &why),
	      "... with the MX host matched by MTA-STS: yes");
	h = (struct requiretls_hop){.tls = true, .dane = true, .mx_lookup = true};
	check(hop_authenticated_for_requiretls(&h, &why),
	      "DANE-authenticated: yes, whatever else");
	h.tls = false;
	check(!hop_authenticated_for_requiretls(&h, &why),
	      "but never without TLS");
}

static void test_decide(void)
{
	struct requiretls_hop ok = {.tls = true, .cert_verified = true};
	struct requiretls_hop bad = {.tls = true};
	char why[200];

	check(requiretls_decide(&ok, true, false, why, sizeof(why)) ==
			      REQUIRETLS_SEND &&
		      why[0] == '\0',
	      "authenticated and offered: send with the parameter");
	check(requiretls_decide(&ok, false, false, why, sizeof(why)) ==
			      REQUIRETLS_REFUSE &&
		      strstr(why, "does not offer REQUIRETLS"),
	      "not offered: refuse");
	check(requiretls_decide(&ok, false, true, why, sizeof(why)) ==
		      REQUIRETLS_SEND_PLAIN,
	      "not offered, a bounce: sent without the parameter (RFC 8689 "
	      "§5)");
	check(requiretls_decide(&bad, true, true, why, sizeof(why)) ==
			      REQUIRETLS_REFUSE &&
		      strncmp(why, "REQUIRETLS: ", 12) == 0,
	      "not authenticated: refused, a bounce too");
}

static bool no(const char *h)
{
	return requiretls_header_no(h, strlen(h));
}

static void test_header(void)
{
	check(no("From: a@b\r\nTLS-Required: No\r\n\r\n"), "the field");
	check(no("tls-required:no\r\n"), "any case, no space");
	check(no("TLS-Required: NO \r\n"), "value in any case, spaces after");
	check(no("Subject: x\r\nTLS-Required:\r\n  No\r\nTo: y\r\n\r\n"),
	      "folded");
	check(no("TLS-Required: No"), "the last line without its CRLF");
	check(no("TLS-Required: No\n"), "LF only");
	check(!no("TLS-Required: Yes\r\n"), "another value");
	check(!no("TLS-Required: No thanks\r\n"), "more than No");
	check(!no("TLS-Required: Nope\r\n"), "Nope");
	check(!no("X-TLS-Required: No\r\n"), "another field");
	check(!no("Subject: x\r\n TLS-Required: No\r\n"),
	      "a folded line of another field");
	check(!no("Subject: x\r\n\r\nTLS-Required: No\r\n"), "in the body");
	check(!no("TLS-Required No\r\n"), "no colon");
	check(!no(""), "nothing");
	check(!requiretls_header_no("TLS-Required: No", 14),
	      "only the given length is read");
}

int main(void)
{
	test_authenticated();
	test_decide();
	test_header();
	return tap_done();
}
