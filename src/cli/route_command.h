/*
 * route_command: the `route` command (see route_command.c).
 */
#ifndef SMTPGW_ROUTE_COMMAND_H
#define SMTPGW_ROUTE_COMMAND_H

#include "core/config.h"
#include "net/dns.h"

#include <stdbool.h>

struct route_options {
	const char *domain;
	unsigned port; /* for MX hosts; a next_hop names its own */
};

/* "DOMAIN [--port N]", the words after `route`; false on a usage error. */
bool route_parse_args(int argc, char **argv, struct route_options *o);

/* What DNS gives for a route (core/config.h config_route: a next hop, or
 * the MX of `domain` on `port`), on a loop of its own; false (and a
 * message on stderr) when the resolver cannot be set up. */
bool route_resolve(const struct config *cfg, const struct route *rt,
		   const char *domain, unsigned port, struct dns_route *out);

/* "static route [domain:X] next_hop = ...", "relayhost = ..." and
 * "tls_name = ..." lines, as `route` prints them before the hosts. */
void route_print_source(const struct route *rt);

/* Prints the route; exit status 0, 75 (tempfail) or 1 (permfail). */
int route_command(const struct config *cfg, const struct route_options *o);

#endif
