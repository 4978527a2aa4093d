/*
 * proxy: the PROXY protocol header a load balancer (HAProxy's send-proxy,
 * send-proxy-v2) puts in front of a connection, versions 1 (text) and 2
 * (binary), as haproxy's doc/proxy-protocol.txt defines them. Pure: it
 * reads only the octets it is given and says how many belong to the
 * header; reading them off a socket, the deadline and what the address
 * means are inbound/proxy_wait.c's. Every input comes from the network.
 */
#ifndef SMTPGW_PROXY_H
#define SMTPGW_PROXY_H

#include <stddef.h>
#include <stdint.h>
#include <netinet/in.h> /* sockaddr_storage, sockaddr_in, sockaddr_in6 */

/* The longest header accepted: v1's 107-octet line, or v2's 16-octet
 * preamble plus up to 1024 octets of addresses and TLVs (HAProxy sends 12
 * or 36 without options; receivers must take at least 216). */
enum { PROXY_V1_MAX = 107, PROXY_V2_MAX = 16 + 1024, PROXY_MAX = PROXY_V2_MAX };

enum proxy_status {
	PROXY_NEED_MORE, /* a valid beginning: read more (up to PROXY_MAX) */
	PROXY_DONE,      /* a whole header: *consumed octets, *out filled */
	PROXY_ERROR,     /* not a PROXY header, or a malformed one */
};

enum proxy_command {
	PROXY_CMD_PROXY, /* src/dst are the original connection's */
	PROXY_CMD_LOCAL, /* v2 LOCAL, v1 UNKNOWN, or an unspecified family:
			    the connection's own endpoints stand (health
			    checks) */
};

struct proxy_header {
	int version; /* 1 or 2 */
	enum proxy_command command;
	struct sockaddr_storage src, dst; /* with ports; PROXY_CMD_PROXY */
};

/* Looks at the first len octets a connection sent. On PROXY_ERROR, *why
 * (static text) says what is wrong. */
enum proxy_status proxy_parse(const uint8_t *buf, size_t len,
			      struct proxy_header *out, size_t *consumed,
			      const char **why);

#endif
