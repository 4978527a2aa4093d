/*
 * dns_wire: names and MX rdata, behind dns_wire.h. Pure: no I/O, no
 * libunbound, no state; it reads only the octets it is given and writes
 * only within out_len. The resolver, the retries and the choice of hosts
 * are net/dns.c's.
 */
#include "proto/dns_wire.h"

#include <arpa/inet.h>
#include <string.h>

static bool host_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || c == '-' || c == '_';
}

bool dns_name_copy(const char *in, char *out, size_t out_len)
{
	size_t n = strlen(in), label = 0;

	if (n > 0 && in[n - 1] == '.')
		n--;
	if (n == 0 || n > DNS_NAME_MAX || n >= out_len)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (in[i] == '.') {
			if (label == 0)
				return false;
			label = 0;
		} else if (!host_char((unsigned char)in[i]) || ++label > 63) {
			return false;
		}
	}
	if (label == 0)
		return false;
	memcpy(out, in, n);
	out[n] = '\0';
	return true;
}

bool dns_wire_name(const unsigned char *p, size_t len, char *out,
                   size_t out_len)
{
	size_t i = 0, o = 0;

	if (out_len == 0)
		return false;
	for (;;) {
		size_t label, grown;

		if (i >= len)
			return false;
		label = p[i++];
		if (label == 0)
			break;
		grown = o + (o > 0) + label; /* with the dot before it */
		if (label > 63 || label > len - i || grown > DNS_NAME_MAX ||
		    grown >= out_len)
			return false;
		if (o > 0)
			out[o++] = '.';
		for (size_t k = 0; k < label; k++) {
			if (!host_char(p[i + k]))
				return false;
			out[o++] = (char)p[i + k];
		}
		i += label;
	}
	out[o] = '\0';
	return i == len;
}

enum dns_mx_rdata dns_mx_parse(const unsigned char *p, size_t len,
                               unsigned *pref, char *name, size_t name_len)
{
	unsigned char probe[4];

	if (len < 3 || !dns_wire_name(p + 2, len - 2, name, name_len))
		return DNS_MX_MALFORMED;
	*pref = (unsigned)p[0] << 8 | p[1];
	if (name[0] == '\0')
		return DNS_MX_NULL;
	/* RFC 5321 §5.1 wants a name; an address here is a mistake that
	 * we neither look up as a name nor trust as a destination. */
	if (inet_pton(AF_INET, name, probe) == 1)
		return DNS_MX_ADDRESS;
	return DNS_MX_OK;
}
