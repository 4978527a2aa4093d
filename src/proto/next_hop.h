/*
 * next_hop: the text of a next hop, as Postfix writes it (relayhost,
 * transport nexthops): "host", "host:port", "[host]", "[host]:port", an
 * address "192.0.2.1:25" or "[2001:db8::1]:25". Brackets mean "no MX
 * lookup": the name is resolved to its own addresses only. Pure: no I/O,
 * no DNS; it says what the text means, net/dns.c does the lookup.
 */
#ifndef SMTPGW_NEXT_HOP_H
#define SMTPGW_NEXT_HOP_H

#include <stdbool.h>
#include <stddef.h>

enum { NEXT_HOP_TEXT_MAX = 270 }; /* "[" 253 "]:" 5 digits, and room */

struct next_hop {
	char host[254]; /* a name (LDH labels) or an address, no brackets */
	unsigned port;	/* 1..65535; the default when the text has none */
	bool no_mx;	/* in brackets, or an address: no MX lookup */
	bool literal;	/* host is an IPv4 or IPv6 address */
};

/* Parses `text`; a text without ":port" gets `default_port`. False with
 * a short reason in *why (a static string) when it is not a next hop.
 * An IPv6 address needs brackets ("[::1]:25"): without them its colons
 * cannot be told from the port's. */
bool next_hop_parse(const char *text, unsigned default_port,
		    struct next_hop *out, const char **why);

/* The text back: "[host]:port" when no_mx (addresses included), else
 * "host:port". */
void next_hop_format(const struct next_hop *hop, char *out, size_t len);

#endif
