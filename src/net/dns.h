/*
 * dns: asynchronous MX, address and other record lookups with libunbound,
 * inside the event loop (its descriptor is watched by libev; answers are
 * processed when it is readable). Callbacks carry the caller's id, never a pointer:
 * whoever asked may be gone when the answer comes. Only the resolvers of
 * [dns] resolver are asked when it is set; the system's resolv.conf only
 * when it is not.
 */
#ifndef SMTPGW_DNS_H
#define SMTPGW_DNS_H

#include "proto/dns_wire.h"
#include "proto/tlsa.h"

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct config;
struct dns;
struct next_hop;
struct route;

enum { DNS_MAX_HOSTS = 10, DNS_MAX_ADDRS = 8 };

enum dns_status {
	DNS_OK,
	DNS_PERMFAIL, /* NXDOMAIN, null MX (RFC 7505), no address at all */
	DNS_TEMPFAIL, /* SERVFAIL, timeout, no answer yet */
};

/* DNSSEC state of the answers behind a route (RFC 4035 §4.3). A bogus
 * answer never makes a route: it fails the lookup (DNS_TEMPFAIL). */
enum dns_sec {
	DNS_INSECURE = 0, /* not signed, or no trust anchor covers it */
	DNS_SECURE,	  /* validated up to a trust anchor */
};

/* One next hop: a name and its addresses, port filled in. */
struct dns_host {
	char name[256];
	unsigned pref;
	struct sockaddr_storage addrs[DNS_MAX_ADDRS];
	size_t n_addrs;
	enum dns_sec sec; /* its A and AAAA answers; an address literal is
			     DNS_INSECURE (no name to look TLSA up for) */
};

/* Where mail for a domain goes, in the order to try (RFC 5321 §5.1). */
struct dns_route {
	enum dns_status status;
	char error[160]; /* why, for logs and DSNs, when not DNS_OK */
	struct dns_host hosts[DNS_MAX_HOSTS];
	size_t n_hosts;
	enum dns_sec mx_sec; /* the MX answer (its NODATA for an implicit
				MX); DNS_SECURE for a static host name,
				which no DNS answer chose (RFC 7672 §2.2.3) */
};

/* A TLSA lookup (RFC 7672 §2.2). */
enum dns_tlsa_status {
	DNS_TLSA_RECORDS,  /* a secure RRset: n_seen records, the usable
			      ones in records[] */
	DNS_TLSA_NONE,	   /* secure NXDOMAIN or NODATA: no DANE */
	DNS_TLSA_INSECURE, /* an answer not signed: no DANE */
	DNS_TLSA_FAILED,   /* bogus, SERVFAIL, timeout: `error` says */
};

struct dns_tlsa {
	enum dns_tlsa_status status;
	char qname[DNS_NAME_MAX + 1]; /* "_25._tcp.mx.example" */
	char error[200];
	size_t n_seen;			  /* records in the RRset */
	size_t n_records;		  /* usable ones kept (tlsa_usable) */
	struct tlsa_rr records[TLSA_MAX_RECORDS];
};

typedef void dns_route_cb(uint64_t id, const struct dns_route *route,
			  void *arg);
typedef void dns_tlsa_cb(uint64_t id, const struct dns_tlsa *tlsa,
			 void *arg);

enum {
	DNS_MAX_RRS = 16,	 /* records of one RRset kept */
	DNS_RRSET_MAX = 65536, /* octets of their rdata kept */
};

/* The records of one name and type (dns_rrset), rdata as libunbound hands
 * them out (wire format). DNS_OK with n = 0 is NODATA; DNS_PERMFAIL is
 * NXDOMAIN. Records past DNS_MAX_RRS or DNS_RRSET_MAX are left out. */
struct dns_rrset {
	enum dns_status status;
	char error[160];
	bool secure; /* DNSSEC-validated: only once a validator runs */
	size_t n;
	const unsigned char *data[DNS_MAX_RRS];
	size_t len[DNS_MAX_RRS];
};

typedef void dns_rrset_cb(uint64_t id, const struct dns_rrset *rrset,
			  void *arg);

struct dns *dns_new(struct ev_loop *loop, const struct config *cfg,
		    char *err, size_t err_len);
void dns_free(struct dns *dns);

/*
 * MX route of `domain`: MX records by preference (equal preferences in
 * random order), each resolved to A and AAAA; no MX at all → the domain's
 * own A/AAAA (implicit MX); a null MX or NXDOMAIN → DNS_PERMFAIL.
 * `cb(id, route, arg)` is called exactly once, never from inside this call.
 */
void dns_mx_route(struct dns *dns, const char *domain, unsigned port,
		  uint64_t id, dns_route_cb *cb, void *arg);

/* A static next hop (no MX lookup): `host` is a name or an address
 * literal (no DNS then); one dns_host with its addresses. */
void dns_host_route(struct dns *dns, const char *host, unsigned port,
		    uint64_t id, dns_route_cb *cb, void *arg);

/* A next hop as Postfix writes it (proto/next_hop.h): in brackets, or an
 * address, it is dns_host_route; a bare name is the MX route of that
 * name, at the hop's port. */
void dns_next_hop_route(struct dns *dns, const struct next_hop *hop,
			uint64_t id, dns_route_cb *cb, void *arg);

/* Where mail for `domain` goes under a route (core/config.h
 * config_route): its next hop, or the MX route of `domain` on port 25. */
void dns_route_for(struct dns *dns, const struct route *rt, const char *domain,
		   uint64_t id, dns_route_cb *cb, void *arg);

/* The `rrtype` records of `name` (16: TXT for MTA-STS). `cb` is called
 * exactly once, never from inside this call; the rdata it sees live
 * until it returns. */
void dns_rrset(struct dns *dns, const char *name, int rrtype, uint64_t id,
	       dns_rrset_cb *cb, void *arg);

/* The TLSA RRset of `host` at `port` (_PORT._tcp.HOST). `cb(id, tlsa,
 * arg)` is called exactly once, never from inside this call. */
void dns_tlsa(struct dns *dns, const char *host, unsigned port, uint64_t id,
	      dns_tlsa_cb *cb, void *arg);

/* Is the trust anchor of `cfg` a readable file with DS or DNSKEY records
 * in it, and (`load`) does libunbound load it? "FILE:LINE: trust_anchor
 * ...: why" into err otherwise. Start and reload check without `load`
 * (a context of libunbound's costs the master memory its children would
 * inherit); -t loads, and so does the queue manager when it starts. */
bool dns_check_config(const struct config *cfg, bool load, char *err,
		      size_t err_len);

/* Does it validate DNSSEC ([dns] trust_anchor is a file, not none)?
 * Without a validator every answer is insecure. */
bool dns_validating(const struct dns *dns);

/* Forgets the callbacks of `id` (the caller is going away). */
void dns_cancel(struct dns *dns, uint64_t id);

#endif
