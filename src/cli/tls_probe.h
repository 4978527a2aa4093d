/*
 * tls_probe: the `tls-probe` command (see tls_probe.c).
 */
#ifndef SMTPGW_TLS_PROBE_H
#define SMTPGW_TLS_PROBE_H

#include "core/config.h"

struct probe_options {
	const char *target; /* ADDRESS:PORT, a next hop, or a domain */
	const char *name;   /* name to verify; else tls_name, else the host */
	enum tls_level level; /* encrypt or verify */
	unsigned repeat;
	bool literal;	    /* target is ADDRESS:PORT (set by the command) */
};

int tls_probe_command(const struct config *cfg, const struct probe_options *o);

#endif
