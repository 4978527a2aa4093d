/*
 * certs_command: the `certs` command (see certs_command.c).
 */
#ifndef SMTPGW_CERTS_COMMAND_H
#define SMTPGW_CERTS_COMMAND_H

#include "core/config.h"

#include <stdbool.h>

int certs_command(const struct config *cfg, bool json);

#endif
