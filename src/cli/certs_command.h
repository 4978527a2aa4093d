/*
 * certs_command: the `certs` command (see certs_command.c).
 */
#ifndef SMTPGW_CERTS_COMMAND_H
#define SMTPGW_CERTS_COMMAND_H

#include <stdbool.h>

/* The exit status of a check that could not be made (Nagios's UNKNOWN):
 * a usage error, a configuration or store that cannot be read. */
enum { CERTS_EXIT_UNKNOWN = 3 };

struct certs_options {
	bool json;
	long warn_days; /* a certificate that expires sooner is a warning */
};

/* "[--json] [--warn-days N]", the words after `certs`; false on a usage
 * error. */
bool certs_parse_args(int argc, char **argv, struct certs_options *o);

/* Prints the status line and the table (or the JSON array); returns the
 * exit status: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN. */
int certs_command(const char *config_path, const struct certs_options *o);

#endif
