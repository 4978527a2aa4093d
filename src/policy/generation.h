/*
 * generation: one loaded configuration — gateway.ini, the policy's Lua
 * state and the TLS certificate store — built and checked as a whole, then
 * swapped in at once on SIGHUP. Sessions hold a reference to the generation
 * they started with; a generation is freed when its last holder lets go.
 */
#ifndef SMTPGW_GENERATION_H
#define SMTPGW_GENERATION_H

#include "net/tls.h"

#include <stdbool.h>
#include <stddef.h>

struct config;
struct policy;
struct tls_server;

struct generation {
	unsigned refs;
	unsigned serial;
	struct config *cfg;
	struct policy *policy;
	struct tls_server *tls; /* NULL when no session can use TLS */
	bool ask_certs;		/* the server asks for client certificates */
	char ask_reason[320];	/* why, or why not, in words */
	struct tls_clients clients; /* outbound: one config per level */
};

/* Loads and checks everything, the policy's hooks run over their fixtures
 * included (policy_check); NULL and "FILE:LINE: message" in err on the
 * first problem. `make_cert` allows creating the Default Cert (slow). */
struct generation *generation_build(const char *config_path, bool make_cert,
				    char *err, size_t err_len);
struct generation *generation_retain(struct generation *g);
void generation_release(struct generation *g);

/* Where the policies' shared modules live: $SMTPGW_LUA_DIR, else lua/ of
 * the share folder (core/paths.h). */
const char *generation_lua_dir(void);

#endif
