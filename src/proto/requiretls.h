/*
 * requiretls: the pure part of REQUIRETLS (RFC 8689) for delivery and the
 * outbound client: whether a next hop is authenticated well enough to
 * carry a REQUIRETLS message, what the client does before MAIL FROM, and
 * the TLS-Required header field of a stored message. No I/O: the facts
 * come from smtp_client (TLS, certificate checks), delivery (how the host
 * was found) and, once they land, the DANE and MTA-STS code.
 */
#ifndef SMTPGW_REQUIRETLS_H
#define SMTPGW_REQUIRETLS_H

#include <stdbool.h>
#include <stddef.h>

/* What is known of one next hop when MAIL FROM is about to go. */
struct requiretls_hop {
	bool tls;	    /* the session runs under TLS */
	bool cert_verified; /* its chain verified to a trust anchor of
			       ca_file and the name matched (level verify) */
	bool dane;	    /* authenticated by DANE-EE or DANE-TA (RFC 7672)
			       — set by the DANE code */
	bool mx_lookup;	    /* the host's name came from an MX answer (not a
			       configured [host] or address) */
	bool mx_dnssec;	    /* ... and that answer was DNSSEC-secure — set
			       by the DANE code's validating resolver */
	bool mx_sts;	    /* ... or the host matched the recipient domain's
			       MTA-STS policy — set by the MTA-STS code */
};

/* RFC 8689 §2 / §4.2.1: TLS, and the server authenticated either by DANE
 * or by a certificate that verified against a trust anchor, where a host
 * found through MX must have its name vouched for by DNSSEC on the MX
 * answer or by MTA-STS. A configured next hop ([host], an address) is
 * named by the operator, and its verified certificate is enough. False
 * with a static reason in *why otherwise. */
bool hop_authenticated_for_requiretls(const struct requiretls_hop *h,
				      const char **why);

enum requiretls_verdict {
	REQUIRETLS_SEND,       /* MAIL FROM:<...> REQUIRETLS */
	REQUIRETLS_SEND_PLAIN, /* a bounce (null sender) to a hop without
				  the keyword: sent without the parameter
				  rather than lost (RFC 8689 §5) */
	REQUIRETLS_REFUSE,     /* not to this hop: `why` says */
};

/* For a REQUIRETLS message, once the EHLO after STARTTLS is in: the hop
 * must be authenticated and must advertise REQUIRETLS (`advertised`);
 * only a message from the null sender may go on without the keyword. */
enum requiretls_verdict requiretls_decide(const struct requiretls_hop *h,
					  bool advertised, bool null_sender,
					  char *why, size_t why_len);

/* Does the header section hold "TLS-Required: No" (RFC 8689 §3; name and
 * value in any case, folding and spaces around the value allowed)? Reads
 * only the `len` octets given, up to the first empty line. */
bool requiretls_header_no(const char *headers, size_t len);

#endif
