/*
 * route_command: the `route` command (see route_command.c).
 */
#ifndef SMTPGW_ROUTE_COMMAND_H
#define SMTPGW_ROUTE_COMMAND_H

#include "core/config.h"

#include <stdbool.h>

struct route_options {
	const char *domain;
	unsigned port; /* for MX hosts; a next_hop names its own */
};

/* "DOMAIN [--port N]", the words after `route`; false on a usage error. */
bool route_parse_args(int argc, char **argv, struct route_options *o);

/* Prints the route; exit status 0, 75 (tempfail) or 1 (permfail). */
int route_command(const struct config *cfg, const struct route_options *o);

#endif
