/*
 * check_command: `smtpgw -c FILE -t` (see check_command.c).
 */
#ifndef SMTPGW_CHECK_COMMAND_H
#define SMTPGW_CHECK_COMMAND_H

/* Checks what a start would need; prints "FILE:LINE: message" per
 * problem on stderr, or "FILE: ok ..." on stdout. Exit status 0 or 1. */
int check_command(const char *config_path);

#endif
