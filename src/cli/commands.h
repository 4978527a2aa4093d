/*
 * commands: `explain`, `reload` and `queue` (see commands.c).
 */
#ifndef SMTPGW_COMMANDS_H
#define SMTPGW_COMMANDS_H

#include "core/config.h"
#include "net/tls.h"

#include <stdbool.h>

struct explain_options {
	const char *client;
	const char *rcpt;
	const char *tls_version; /* NULL: a plaintext session */
	enum tls_peer peer;
	const char *helo;
	const char *sender;
};

int explain_command(const char *config_path, const struct explain_options *o);
int reload_command(const struct config *cfg);
/* queue [flush | delete ID]: argv after the word "queue". */
int queue_command(const struct config *cfg, int argc, char **argv);

#endif
