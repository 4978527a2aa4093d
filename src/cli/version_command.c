/*
 * version_command: `smtpgw --version`. The first line is "smtpgw VERSION"
 * (VERSION from the Makefile); then one line per library that shapes
 * behaviour, with the version it runs with where the library can tell
 * (OpenSSL, libunbound, libev) and else the one it was built against
 * (libtls's API date, LuaJIT); then the share folder in use. It only
 * prints.
 */
#include "cli/version_command.h"

#include "core/paths.h"

#include <ev.h>
#include <luajit.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <tls.h>
#include <unbound.h>

#ifndef SMTPGW_VERSION
#define SMTPGW_VERSION "unknown"
#endif

int version_command(void)
{
	printf("smtpgw %s\n", SMTPGW_VERSION);
	printf("libtls API %d, %s\n", TLS_API, OpenSSL_version(OPENSSL_VERSION));
	printf("%s\n", LUAJIT_VERSION);
	printf("libunbound %s\n", ub_version());
	printf("libev %d.%d\n", ev_version_major(), ev_version_minor());
	printf("share %s\n", paths_share_dir());
	return 0;
}
