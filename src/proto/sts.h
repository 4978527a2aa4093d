/*
 * sts: the pure part of MTA-STS (RFC 8461) for outbound/sts.c: the
 * _mta-sts TXT record (its character-strings joined, the one STS record
 * picked out of an RRset and its id read), the policy file
 * (version, mode, mx patterns, max_age), whether an MX host name matches
 * a policy, the header of a cached policy in the spool, and the result
 * type names of TLS reporting (RFC 8460) that failures are counted under.
 * No I/O, no DNS, no HTTP here; every input may come from a hostile DNS
 * or web server, and nothing here reads past the length it is given.
 */
#ifndef SMTPGW_STS_H
#define SMTPGW_STS_H

#include <stdbool.h>
#include <stddef.h>

enum {
	STS_ID_MAX = 32,	  /* id=1*32(ALPHA / DIGIT) */
	STS_TXT_MAX = 1024,	  /* octets of one TXT record kept */
	STS_MAX_MX = 32,	  /* mx patterns a policy may have */
	STS_MX_LEN = 256,	  /* "*." and a name of 253, NUL */
	STS_POLICY_MAX = 65536,	  /* octets of a policy file (§3.3) */
	STS_MAX_AGE_MAX = 31557600, /* §3.2: about a year */
};

enum sts_mode {
	STS_MODE_NONE,
	STS_MODE_TESTING,
	STS_MODE_ENFORCE,
};

/* A policy as §3.2 reads it. mx holds the patterns in lower case, as
 * written ("mx.example.com", "*.example.com"), without a trailing dot. */
struct sts_policy {
	enum sts_mode mode;
	unsigned long max_age; /* seconds, at most STS_MAX_AGE_MAX */
	unsigned n_mx;
	char mx[STS_MAX_MX][STS_MX_LEN];
};

/* "none", "testing", "enforce". */
const char *sts_mode_name(enum sts_mode mode);

enum sts_txt_join {
	STS_JOIN_OK,
	STS_JOIN_MALFORMED, /* a length runs past the rdata, or a NUL */
	STS_JOIN_TOO_LONG,  /* more than out_len - 1 octets */
};

/* One TXT rdata (length-prefixed character-strings) joined without
 * spaces, as §3.1 says, NUL-terminated in out; *n is its length. */
enum sts_txt_join sts_txt_join(const unsigned char *rdata, size_t len,
			       char *out, size_t out_len, size_t *n);

enum sts_record {
	STS_RECORD_FOUND,   /* exactly one STS record, valid: id is set */
	STS_RECORD_NONE,    /* no record starts with v=STSv1 */
	STS_RECORD_INVALID, /* one that is malformed, or more than one */
};

/* The records of an _mta-sts TXT RRset (joined strings, lens[i] octets
 * each; a NULL text is one that could not be joined): records that do not
 * start with "v=STSv1" are ignored (§3.1); one left, and valid, gives its
 * id (NUL-terminated, id_len > STS_ID_MAX). `why` gets a static reason
 * when it is not FOUND. */
enum sts_record sts_record_pick(const char *const *texts, const size_t *lens,
				size_t n, char *id, size_t id_len,
				const char **why);

/* One policy file of `len` octets, CRLF or LF lines (empty lines are
 * skipped). False with a reason in why when it is not a valid policy:
 * version STSv1, mode and max_age present (the first of each counts),
 * at least one mx unless the mode is none, at most STS_MAX_MX of them.
 * A max_age above STS_MAX_AGE_MAX is taken as STS_MAX_AGE_MAX. Unknown
 * keys are ignored when they are well formed. */
bool sts_policy_parse(const char *text, size_t len, struct sts_policy *out,
		      char *why, size_t why_len);

/* Does MX host `host` match one of the policy's patterns (§4.1)? Case
 * does not matter, a trailing dot is ignored, and "*.example.com" stands
 * for exactly one label more: "mx.example.com", not "example.com" nor
 * "a.mx.example.com". */
bool sts_mx_match(const struct sts_policy *p, const char *host);

/* The patterns for a log line: "mx.example.com,*.example.com"; cut short
 * (with "...") when longer than len. */
void sts_mx_text(const struct sts_policy *p, char *out, size_t len);

/* A cached policy: a header, then the policy file as it was fetched.
 *   smtpgw-sts-cache: 1
 *   id: 20240131T000000
 *   fetched: 1764000000
 *   (empty line)
 *   version: STSv1 ...
 */
struct sts_cached {
	char id[STS_ID_MAX + 1];
	long long fetched; /* seconds since the epoch */
	const char *policy; /* inside the parsed data */
	size_t policy_len;
};

/* The header for `id` fetched at `fetched` into out (NUL-terminated);
 * its length, or 0 when it does not fit or id is not an STS id. */
size_t sts_cache_header(char *out, size_t len, const char *id,
			long long fetched);

/* Reads a cache file of `len` octets (the header exactly as
 * sts_cache_header writes it); false when it is not one. */
bool sts_cache_parse(const char *data, size_t len, struct sts_cached *out);

/* RFC 8460 §4.3 result types, for the failures a TLS report counts. */
enum tlsrpt_result {
	TLSRPT_STARTTLS_NOT_SUPPORTED,
	TLSRPT_CERTIFICATE_HOST_MISMATCH,
	TLSRPT_CERTIFICATE_EXPIRED,
	TLSRPT_CERTIFICATE_NOT_TRUSTED,
	TLSRPT_VALIDATION_FAILURE,
	TLSRPT_STS_POLICY_FETCH_ERROR,
	TLSRPT_STS_POLICY_INVALID,
	TLSRPT_STS_WEBPKI_INVALID,
	TLSRPT_COUNT,
};

/* "starttls-not-supported", ..., "sts-webpki-invalid". */
const char *tlsrpt_result_name(enum tlsrpt_result r);

#endif
