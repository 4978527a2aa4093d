/*
 * tlsrpt: the pure part of SMTP TLS reporting (RFC 8460) that the queue
 * manager and the `tlsrpt` command share: the result types failures are
 * counted under, the _smtp._tls TXT record (where reports go), one line of
 * the spool's record files (SPOOL/tlsrpt/DATE/DOMAIN) both ways, and the
 * mapping of a TLS library error to a result type. The report itself (JSON,
 * the mail around it) is proto/tlsrpt_report.c's. No I/O, no DNS, no clock:
 * every input may come from a hostile DNS server or a damaged spool file,
 * and nothing here reads past the length it is given.
 */
#ifndef SMTPGW_TLSRPT_H
#define SMTPGW_TLSRPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* RFC 8460 §4.3 result types, for the failures a report counts. */
enum tlsrpt_result {
	TLSRPT_STARTTLS_NOT_SUPPORTED,
	TLSRPT_CERTIFICATE_HOST_MISMATCH,
	TLSRPT_CERTIFICATE_EXPIRED,
	TLSRPT_CERTIFICATE_NOT_TRUSTED,
	TLSRPT_VALIDATION_FAILURE,
	TLSRPT_TLSA_INVALID,
	TLSRPT_DNSSEC_INVALID,
	TLSRPT_DANE_REQUIRED,
	TLSRPT_STS_POLICY_FETCH_ERROR,
	TLSRPT_STS_POLICY_INVALID,
	TLSRPT_STS_WEBPKI_INVALID,
	TLSRPT_COUNT,
};

/* "starttls-not-supported", ..., "sts-webpki-invalid";
 * "validation-failure" for anything out of range. */
const char *tlsrpt_result_name(enum tlsrpt_result r);
/* The other way; false when `name` is none of them. */
bool tlsrpt_result_parse(const char *name, enum tlsrpt_result *out);

/* RFC 8460 §4.4 policy-type. */
enum tlsrpt_policy_type {
	TLSRPT_POLICY_NONE, /* "no-policy-found" */
	TLSRPT_POLICY_TLSA, /* "tlsa": DANE */
	TLSRPT_POLICY_STS,  /* "sts": MTA-STS */
};

const char *tlsrpt_policy_type_name(enum tlsrpt_policy_type t);

/* A TLS failure as libtls words it (certificate verification failed:
 * certificate has expired, name `x' not present in server certificate,
 * ...) → the result type a report counts it under: certificate-expired,
 * certificate-host-mismatch, certificate-not-trusted, else
 * validation-failure. NULL or "" is validation-failure. */
enum tlsrpt_result tlsrpt_classify_tls_error(const char *error);

/* ---- the _smtp._tls TXT record (RFC 8460 §3) ---------------------------- */

enum {
	TLSRPT_MAX_RUA = 8,	 /* mailto: addresses kept from one record */
	TLSRPT_ADDR_MAX = 256,	 /* local@domain, NUL included */
	TLSRPT_TXT_MAX = 2048,	 /* octets of one joined record */
};

struct tlsrpt_rua {
	size_t n;				 /* mailto: addresses */
	char addr[TLSRPT_MAX_RUA][TLSRPT_ADDR_MAX]; /* local@domain */
	size_t n_https;				 /* https: URIs (not used) */
};

enum tlsrpt_record {
	TLSRPT_RECORD_FOUND,	/* exactly one record; out->n may still be 0
				   (only https: URIs) */
	TLSRPT_RECORD_NONE,	/* no TXT starts with "v=TLSRPTv1" */
	TLSRPT_RECORD_INVALID,	/* more than one, or the one is malformed */
};

/* The TXT RRset of _smtp._tls.DOMAIN, each rdata as on the wire (a run of
 * length-prefixed character-strings, which are joined without spaces).
 * Records that do not start with "v=TLSRPTv1" are ignored; exactly one
 * must be left (§3). Its rua= URIs give the mailto: addresses (percent-
 * escapes decoded, "?..." dropped; each must be local@domain of printable
 * ASCII without spaces, else it is skipped). `why` gets a static reason
 * unless FOUND. */
enum tlsrpt_record tlsrpt_record_pick(const unsigned char *const *rdata,
				      const size_t *lens, size_t n,
				      struct tlsrpt_rua *out, const char **why);

/* One joined record's text, for the unit tests and the fuzz harness:
 * FOUND, NONE (not v=TLSRPTv1) or INVALID. */
enum tlsrpt_record tlsrpt_record_parse(const char *text, size_t len,
				       struct tlsrpt_rua *out,
				       const char **why);

/* ---- record lines (SPOOL/tlsrpt/DATE/DOMAIN) ---------------------------- */

enum {
	TLSRPT_FIELD_MAX = 256,	  /* a host name, an address, a reason */
	TLSRPT_LIST_MAX = 2048,	  /* policy strings or mx hosts, joined */
	TLSRPT_LINE_MAX = 16384, /* a record line, escaped, LF and NUL: every
				     entry fits */
};

/* Counts for one key: a policy and, for failures, the failure detail. The
 * list fields hold their items joined by '\n' (policy-string lines,
 * mx-host patterns); any field may be "" (unknown, or not that kind). */
struct tlsrpt_entry {
	bool failure;		       /* else successful sessions */
	uint64_t count;
	enum tlsrpt_policy_type type;
	char policy_domain[TLSRPT_FIELD_MAX];
	char policy_strings[TLSRPT_LIST_MAX];
	char mx_hosts[TLSRPT_LIST_MAX];
	enum tlsrpt_result result;     /* failures only */
	char receiving_mx[TLSRPT_FIELD_MAX];
	char receiving_ip[64];
	char sending_ip[64];
	char reason[TLSRPT_FIELD_MAX]; /* failure-reason-code */
};

/* Do two entries count under the same key (everything but count)? */
bool tlsrpt_entry_same_key(const struct tlsrpt_entry *a,
			   const struct tlsrpt_entry *b);

/* Adds e to list[0..*n): its count to the entry with the same key (the
 * sum saturates), else a copy at the end while *n < cap. False when it
 * had to be left out (the list is full). */
bool tlsrpt_entries_add(struct tlsrpt_entry *list, size_t *n, size_t cap,
			const struct tlsrpt_entry *e);

/* One line, LF-terminated, tab-separated, each field percent-escaped
 * (controls, '%', tab, DEL and 8-bit octets), into out; its length, or 0
 * when it does not fit in len (or the count is 0). */
size_t tlsrpt_entry_format(const struct tlsrpt_entry *e, char *out,
			   size_t len);

/* The other way: `line` without its LF. False when it is not such a line
 * exactly as tlsrpt_entry_format writes one (a field too long, an escape
 * other than of an octet that needs one or in lower case, an unknown
 * word, a count of 0 or with a leading 0), so a line that parses formats
 * back to the same octets. */
bool tlsrpt_entry_parse(const char *line, size_t len, struct tlsrpt_entry *e);

/* The first line of a record file. */
#define TLSRPT_FILE_MAGIC "smtpgw-tlsrpt: 1\n"

#endif
