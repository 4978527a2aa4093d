/*
 * tls_probe: the `tls-probe` command (see tls_probe.c).
 */
#ifndef SMTPGW_TLS_PROBE_H
#define SMTPGW_TLS_PROBE_H

#include "core/config.h"

struct probe_options {
	const char *target; /* HOST:PORT or [HOST]:PORT, an address */
	const char *name;   /* name to verify; HOST when NULL */
	enum tls_level level; /* encrypt or verify */
	unsigned repeat;
};

int tls_probe_command(const struct config *cfg, const struct probe_options *o);

#endif
