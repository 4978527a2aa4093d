/*
 * tlsa: TLSA query names and rdata, behind tlsa.h. Pure: no I/O, no
 * crypto, no state; it reads only the octets it is given and writes only
 * within out_len. Looking records up is net/dns.c's, matching them against
 * certificates net/dane.c's.
 */
#include "proto/tlsa.h"

#include "proto/dns_wire.h"

#include <stdio.h>
#include <string.h>

enum { SHA256_LEN = 32, SHA512_LEN = 64, DESCRIBE_OCTETS = 8 };

enum tlsa_parse tlsa_parse(const unsigned char *p, size_t len,
                           struct tlsa_rr *out)
{
	if (len < 4)
		return TLSA_PARSE_MALFORMED;
	if (len - 3 > TLSA_DATA_MAX)
		return TLSA_PARSE_TOO_LONG;
	out->usage = p[0];
	out->selector = p[1];
	out->mtype = p[2];
	out->len = len - 3;
	memcpy(out->data, p + 3, out->len);
	return TLSA_PARSE_OK;
}

static bool length_fits(const struct tlsa_rr *rr)
{
	switch (rr->mtype) {
	case TLSA_MATCH_FULL:
		return rr->len > 0;
	case TLSA_MATCH_SHA256:
		return rr->len == SHA256_LEN;
	case TLSA_MATCH_SHA512:
		return rr->len == SHA512_LEN;
	}
	return false;
}

bool tlsa_usable(const struct tlsa_rr *rr)
{
	return (rr->usage == TLSA_DANE_TA || rr->usage == TLSA_DANE_EE) &&
	       (rr->selector == TLSA_SEL_CERT ||
	        rr->selector == TLSA_SEL_SPKI) &&
	       length_fits(rr);
}

void tlsa_describe(const struct tlsa_rr *rr, char *out, size_t out_len)
{
	char hex[2 * DESCRIBE_OCTETS + 4] = "";
	size_t n = rr->len < DESCRIBE_OCTETS ? rr->len : DESCRIBE_OCTETS;

	if (out_len == 0)
		return;
	for (size_t i = 0; i < n; i++)
		snprintf(hex + 2 * i, sizeof(hex) - 2 * i, "%02x",
		         rr->data[i]);
	if (rr->len > n)
		strcat(hex, "...");
	snprintf(out, out_len, "TLSA %u %u %u %s", rr->usage, rr->selector,
	         rr->mtype, hex);
}

bool tlsa_qname(const char *host, unsigned port, char *out, size_t out_len)
{
	char name[DNS_NAME_MAX + 1], full[DNS_NAME_MAX + 32];

	if (port == 0 || port > 65535 ||
	    !dns_name_copy(host, name, sizeof(name)))
		return false;
	snprintf(full, sizeof(full), "_%u._tcp.%s", port, name);
	return dns_name_copy(full, out, out_len);
}
