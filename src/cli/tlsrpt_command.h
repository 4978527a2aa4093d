/*
 * tlsrpt_command: the `tlsrpt` command (see tlsrpt_command.c).
 */
#ifndef SMTPGW_TLSRPT_COMMAND_H
#define SMTPGW_TLSRPT_COMMAND_H

#include "core/config.h"

#include <stdbool.h>

struct tlsrpt_options {
	const char *date;   /* YYYY-MM-DD; NULL: today (UTC) */
	const char *domain; /* NULL: every domain of the day */
	bool send;	    /* ask the running gateway to report now */
};

/* "[--date D] [--domain D] [--send]", the words after `tlsrpt`; false on
 * a usage error. */
bool tlsrpt_parse_args(int argc, char **argv, struct tlsrpt_options *o);

/* Prints the day's report (JSON; an array of reports without --domain),
 * or with --send asks the running gateway to send it; exit status. */
int tlsrpt_command(const struct config *cfg, const struct tlsrpt_options *o);

#endif
