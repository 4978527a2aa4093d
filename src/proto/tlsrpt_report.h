/*
 * tlsrpt_report: one day's SMTP TLS report for one policy domain (RFC 8460
 * §4), as JSON, and the mail that carries it (§5.3): a multipart/report
 * with a note for people and the JSON gzip'd as application/tlsrpt+gzip.
 * Pure: the caller gives the counted entries (proto/tlsrpt.h), the names
 * and the times, and gets text back (malloc'd). The gzip is zlib's, in
 * memory. No I/O, no clock, no DNS.
 */
#ifndef SMTPGW_TLSRPT_REPORT_H
#define SMTPGW_TLSRPT_REPORT_H

#include "proto/tlsrpt.h"

#include <stddef.h>
#include <stdint.h>

struct tlsrpt_meta {
	const char *organization; /* organization-name */
	const char *contact;	  /* contact-info; NULL or "": left out */
	const char *report_id;	  /* report-id */
	long long begin, end;	  /* date-range, seconds since the epoch
				     (end is the last second covered) */
};

/* The report: metadata, then one "policies" item per distinct policy
 * (type, domain, strings, mx hosts) of the entries, with its summary and
 * one failure-details item per failure entry. Entries may come in any
 * order, but each key once (tlsrpt_entries_merge). NULL when out of
 * memory. */
char *tlsrpt_report_json(const struct tlsrpt_meta *m,
			 const struct tlsrpt_entry *entries, size_t n,
			 size_t *len);

/* Successful and failed sessions of the entries, summed. */
void tlsrpt_totals(const struct tlsrpt_entry *entries, size_t n,
		   uint64_t *ok, uint64_t *failed);

/* §5.3 file name: "SUBMITTER!DOMAIN!BEGIN!END!UNIQUE.json.gz" (unique
 * reduced to its letters and digits). False when it does not fit. */
bool tlsrpt_filename(const char *submitter, const char *domain,
		     long long begin, long long end, const char *unique,
		     char *out, size_t len);

/* The JSON gzip'd (RFC 1952, zlib); malloc'd, or NULL. */
unsigned char *tlsrpt_gzip(const char *data, size_t len, size_t *out_len);

struct tlsrpt_mail {
	const char *from;	  /* From: address */
	const char *const *to;	  /* the rua mailto: addresses */
	size_t n_to;
	const char *domain;	  /* TLS-Report-Domain */
	const char *submitter;	  /* TLS-Report-Submitter */
	const char *report_id;	  /* as in the JSON */
	const char *message_id;	  /* without <> */
	const char *filename;	  /* tlsrpt_filename */
	long long begin, end, now;
	uint64_t ok, failed;	  /* for the note */
	const unsigned char *gz;  /* the attachment */
	size_t gz_len;
};

/* The whole message (header and body, CRLF lines under 998 octets). NULL
 * when out of memory, or when a name, the sender or a recipient is empty
 * or holds a control octet, a space or 8-bit octets. */
char *tlsrpt_mail_build(const struct tlsrpt_mail *m, size_t *len);

/* Does the header section (up to its empty line) hold a
 * TLS-Report-Domain: field, as the mail above does? With the null sender
 * it marks a report, whose own sessions are not counted (RFC 8460
 * §5.3.1). */
bool tlsrpt_mail_is_report(const char *headers, size_t len);

#endif
