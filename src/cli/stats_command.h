/*
 * stats_command: `smtpgw -c FILE stats [--json]`, the counters of the
 * running gateway (SPOOL/stats, mapped read-only) and the queue counted
 * now, for a person or, with --json, a program.
 */
#ifndef SMTPGW_STATS_COMMAND_H
#define SMTPGW_STATS_COMMAND_H

#include <stdbool.h>

struct config;

int stats_command(const struct config *cfg, bool json);

#endif
