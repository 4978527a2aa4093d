/*
 * commands: `certs`, `explain` and `reload` (see commands.c).
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

int certs_command(const struct config *cfg, bool json);
int explain_command(const char *config_path, const struct explain_options *o);
int reload_command(const struct config *cfg);
/* Sends `sig` to the running gateway (SPOOL/smtpgw.pid) and says so on
 * stdout ("WHAT: sent SIG_NAME to pid N"); 0, or 1 with the reason on
 * stderr. */
int signal_gateway(const struct config *cfg, int sig, const char *sig_name,
		   const char *what);
/* queue [flush | delete ID]: argv after the word "queue". */
int queue_command(const struct config *cfg, int argc, char **argv);

#endif
