/*
 * dns_wire: the pure part of DNS for net/dns.c: which names we are willing
 * to ask about, and the names and MX records that come back in answers
 * (uncompressed wire format, as libunbound hands rdata out). No I/O and no
 * libunbound here; every input may come from a hostile DNS server, and
 * nothing here reads past the length it is given.
 */
#ifndef SMTPGW_DNS_WIRE_H
#define SMTPGW_DNS_WIRE_H

#include <stdbool.h>
#include <stddef.h>

enum { DNS_NAME_MAX = 253 }; /* octets of "a.b.c", no trailing dot */

/* A host or domain name we are willing to ask about: LDH (and '_')
 * labels of 1..63 octets, 253 in all; one trailing dot is dropped. Copies
 * it into out (out_len > its length); false when it is not such a name. */
bool dns_name_copy(const char *in, char *out, size_t out_len);

/* An uncompressed wire-format name of exactly len octets into "a.b.c"
 * (NUL-terminated); the root name becomes "". False when malformed, not
 * LDH, longer than DNS_NAME_MAX or than out_len - 1. */
bool dns_wire_name(const unsigned char *p, size_t len, char *out,
                   size_t out_len);

enum dns_mx_rdata {
	DNS_MX_OK,        /* *pref and a host name in name */
	DNS_MX_MALFORMED, /* not an MX rdata with a usable name */
	DNS_MX_NULL,      /* "." (RFC 7505 null MX when alone) */
	DNS_MX_ADDRESS,   /* the exchange is an IPv4 address (in name) */
};

/* One MX rdata: 2-octet preference, then the exchange name. */
enum dns_mx_rdata dns_mx_parse(const unsigned char *p, size_t len,
                               unsigned *pref, char *name, size_t name_len);

#endif
