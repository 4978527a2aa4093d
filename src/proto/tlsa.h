/*
 * tlsa: the pure part of DANE (RFC 6698, RFC 7671, RFC 7672) for net/dns.c
 * and net/dane.c: the TLSA query name of an SMTP server, one TLSA rdata
 * read into a record, whether SMTP may use that record, and how it is
 * named in logs. No I/O, no crypto and no libunbound here; every rdata
 * may come from a hostile DNS server, and nothing here reads past the
 * length it is given.
 */
#ifndef SMTPGW_TLSA_H
#define SMTPGW_TLSA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum {
	TLSA_DATA_MAX = 2048, /* octets of association data kept: a full
				 certificate (matching type 0) fits */
	TLSA_MAX_RECORDS = 8, /* records of one RRset kept */
};

/* RFC 7218's names of the three numbers. */
enum tlsa_usage {
	TLSA_PKIX_TA = 0, /* ignored by SMTP (RFC 7672 §3.1.3) */
	TLSA_PKIX_EE = 1, /* ignored by SMTP */
	TLSA_DANE_TA = 2,
	TLSA_DANE_EE = 3,
};

enum tlsa_selector {
	TLSA_SEL_CERT = 0, /* the whole certificate, DER */
	TLSA_SEL_SPKI = 1, /* its SubjectPublicKeyInfo, DER */
};

enum tlsa_mtype {
	TLSA_MATCH_FULL = 0,
	TLSA_MATCH_SHA256 = 1,
	TLSA_MATCH_SHA512 = 2,
};

struct tlsa_rr {
	uint8_t usage, selector, mtype;
	size_t len; /* octets in data */
	uint8_t data[TLSA_DATA_MAX];
};

enum tlsa_parse {
	TLSA_PARSE_OK,
	TLSA_PARSE_MALFORMED, /* fewer than 4 octets: no data at all */
	TLSA_PARSE_TOO_LONG,  /* more data than TLSA_DATA_MAX */
};

/* One TLSA rdata (usage, selector, matching type, data) of exactly len
 * octets into *out. */
enum tlsa_parse tlsa_parse(const unsigned char *p, size_t len,
                           struct tlsa_rr *out);

/* May SMTP authenticate with it? DANE-TA(2) or DANE-EE(3), selector 0 or
 * 1, matching type 0, 1 (32 octets) or 2 (64 octets); anything else is
 * "unusable" (RFC 7672 §3.1.3, RFC 7671 §4). */
bool tlsa_usable(const struct tlsa_rr *rr);

/* "TLSA 3 1 1 a1b2c3d4e5f6a7b8..." (at most the first 8 octets in hex)
 * into out, always NUL-terminated. */
void tlsa_describe(const struct tlsa_rr *rr, char *out, size_t out_len);

/* "_25._tcp.mx.example.test" for host "mx.example.test" (a trailing dot
 * dropped) and port 25; false when port is 0 or above 65535, or the
 * result would not be a name dns_name_copy accepts or not fit out. */
bool tlsa_qname(const char *host, unsigned port, char *out, size_t out_len);

#endif
