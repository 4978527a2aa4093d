/*
 * version_command: `smtpgw --version` (see version_command.c).
 */
#ifndef SMTPGW_VERSION_COMMAND_H
#define SMTPGW_VERSION_COMMAND_H

/* Prints the version and the libraries' to stdout; returns 0. */
int version_command(void);

#endif
