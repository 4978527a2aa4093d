/*
 * bench_policy: the cost of one policy decision, as the engine makes it
 * (fresh ctx table, budget hook armed, pcall, result checked), for each
 * stock script and hook. `make bench` runs it; the figures go in README.
 */
#include "core/config.h"
#include "policy/policy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { WARMUP = 20000, ROUNDS = 500000 };

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void facts_for(enum policy_hook hook, const struct config *cfg,
		      struct policy_facts *f)
{
	memset(f, 0, sizeof(*f));
	f->hook = hook;
	f->hostname = "mx.example.test";
	f->inbound = hook != HOOK_CLIENT_TLS;
	f->client_ip = "192.0.2.10";
	f->client_port = 40000;
	f->helo = "client.example";
	f->tls_active = true;
	f->tls_version = "TLSv1.3";
	f->tls_cipher = "TLS_AES_256_GCM_SHA384";
	f->tls_peer = TLS_PEER_TRUSTED;
	f->sender = "sender@example.org";
	if (hook == HOOK_RCPT || hook == HOOK_CLIENT_TLS) {
		f->recipient = "user@partner.example";
		f->domain = "partner.example";
		f->section = config_domain_rule(cfg, "partner.example", 15);
	}
}

static double measure(struct policy *p, const struct config *cfg,
		      enum policy_hook hook)
{
	struct policy_facts f;
	struct policy_result r;
	double start;

	facts_for(hook, cfg, &f);
	for (int i = 0; i < WARMUP; i++)
		policy_call(p, &f, &r);
	if (r.outcome == POLICY_ERROR) {
		fprintf(stderr, "%s: %s\n", policy_hook_name(hook), r.text);
		exit(1);
	}
	start = now_ns();
	for (int i = 0; i < ROUNDS; i++)
		policy_call(p, &f, &r);
	return (now_ns() - start) / ROUNDS;
}

int main(int argc, char **argv)
{
	static const enum policy_hook hooks[] = {HOOK_SERVER_TLS, HOOK_RCPT,
						 HOOK_CLIENT_TLS};
	char err[1024];

	for (int i = 1; i < argc; i++) {
		struct config *cfg = config_load(argv[i], err, sizeof(err));
		struct policy *p = cfg ? policy_load(cfg, SMTPGW_LUA_DIR, err,
						     sizeof(err))
				       : NULL;

		if (p == NULL) {
			fprintf(stderr, "%s\n", err);
			return 1;
		}
		for (size_t h = 0; h < sizeof(hooks) / sizeof(hooks[0]); h++)
			printf("%-40s %-11s %7.3f us per decision\n",
			       policy_script(p), policy_hook_name(hooks[h]),
			       measure(p, cfg, hooks[h]) / 1000);
		policy_free(p);
		config_free(cfg);
	}
	return 0;
}
