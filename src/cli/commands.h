/*
 * commands: `explain` and `reload`, and the running gateway's pid and
 * the signal that the other commands use too (see commands.c).
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
	const char *dane; /* --dane: ctx.dane to suppose; NULL: absent */
};

int explain_command(const char *config_path, const struct explain_options *o);
int reload_command(const struct config *cfg);
/* The running gateway's pid, from SPOOL/smtpgw.pid (`path` names the
 * file); 0 when none. */
long gateway_pid(const struct config *cfg, char *path, size_t len);
/* Sends `sig` to it and says so on stdout ("WHAT: sent NAME to pid N");
 * 1 and the reason on stderr when there is none. */
int signal_gateway(const struct config *cfg, int sig, const char *sig_name,
		   const char *what);

#endif
