/*
 * policy: the LuaJIT bridge. One Lua state per loaded script, holding the
 * hooks table the script returned. A call turns C facts into the ctx
 * table, runs one hook under an instruction, time and memory budget, and
 * turns what it returned into a level or a verdict. Every failure is a
 * POLICY_ERROR with a reason; a state that passed its memory cap is
 * replaced by a fresh one from the same script text before the next call.
 * policy_check runs every hook over fixtures before a script is used.
 * Nothing here decides what the SMTP reply is.
 */
#ifndef SMTPGW_POLICY_H
#define SMTPGW_POLICY_H

#include "core/config.h"
#include "net/tls.h"
#include "proto/sts.h"

#include <stdbool.h>
#include <stddef.h>

enum policy_hook {
	HOOK_SERVER_TLS,
	HOOK_CLIENT_TLS,
	HOOK_CONNECT,
	HOOK_HELO,
	HOOK_MAIL,
	HOOK_RCPT,
	HOOK_COUNT,
};

/* What the engine knows at a stage; NULL/false fields become absent. */
struct policy_facts {
	enum policy_hook hook;
	const char *hostname;
	bool inbound; /* client.* and tls.* exist */
	const char *client_ip;
	unsigned client_port;
	bool client_trusted;
	const char *helo;
	bool tls_active;
	const char *tls_version;
	const char *tls_cipher;
	const char *tls_sni;
	enum tls_peer tls_peer;
	const char *sender; /* "" for the null sender */
	const char *recipient;
	const char *domain;
	const struct domain_rule *section;
	/* client_tls: the MTA-STS policy the domain publishes (ctx.mta_sts),
	 * NULL when it has none (or none is known) */
	const struct sts_policy *mta_sts;
	/* client_tls: what DNSSEC says of the destination's TLSA records
	 * (ctx.dane: "secure", "insecure", "bogus"), NULL when not looked
	 * up (no validator, or a route that is not an MX lookup) */
	const char *dane;
	unsigned long long sid; /* for host.log lines; 0 when none */
};

enum policy_outcome {
	POLICY_LEVEL,
	POLICY_ACCEPT,
	POLICY_REJECT,
	POLICY_TEMPFAIL,
	POLICY_ERROR,
};

struct policy_result {
	enum policy_outcome outcome;
	enum tls_level level;
	int code;
	bool by_default; /* the hook is absent: the default decided */
	char text[400];	 /* reply text, or the error's FILE:LINE reason */
};

struct policy;

/* Loads cfg->policy_script (NULL script: built-in defaults, no Lua). Errors
 * come back as "FILE:LINE: message". `lua_dir` is the shared module folder. */
struct policy *policy_load(const struct config *cfg, const char *lua_dir,
			   char *err, size_t err_len);
void policy_free(struct policy *p);
const char *policy_script(const struct policy *p);
const char *policy_hook_name(enum policy_hook hook);

void policy_call(struct policy *p, const struct policy_facts *facts,
		 struct policy_result *out);

/* What policy_check learnt. */
struct policy_check {
	unsigned calls;	 /* hook calls made */
	bool wants_cert; /* server_tls gave verify, or an answer changed with
			    the client certificate alone */
	char cert_reason[300];
};

/* Runs every hook of p over the fixtures of gateway.testing (lua/gateway/
 * testing.lua: every stage; every [domain:...] section, relay domain and
 * a domain in no section) in a fresh state under the usual budgets, at
 * most 10 s and 1 ms a fixture in all.
 * false and "FILE:LINE: message (check: fixture)" in err at the first
 * error or bad answer. Without a script: true, nothing run. */
bool policy_check(struct policy *p, struct policy_check *out, char *err,
		  size_t err_len);

#endif
