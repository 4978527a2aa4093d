/*
 * netaddr: socket addresses as text. Pure formatting, no I/O.
 */
#ifndef SMTPGW_NETADDR_H
#define SMTPGW_NETADDR_H

#include <stddef.h>
#include <sys/socket.h>

/* Text form of an address without the port ("::1", "127.0.0.1"). */
void sockaddr_ip_text(const struct sockaddr_storage *ss, char *out,
		      size_t len);
unsigned sockaddr_port(const struct sockaddr_storage *ss);

#endif
