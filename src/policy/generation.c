/*
 * generation: building, sharing and retiring configurations. Building does
 * blocking work (reading files, maybe an RSA key): at start-up that is
 * before the loop runs; on SIGHUP it is a short stall of the loop, accepted
 * because a reload is rare and operator-driven.
 */
#include "policy/generation.h"

#include "core/config.h"
#include "core/log.h"
#include "core/paths.h"
#include "policy/policy.h"
#include "net/dns.h"
#include "net/tls.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static unsigned next_serial;

const char *generation_lua_dir(void)
{
	return paths_lua_dir();
}

/* Each certificate served, at start and reload (`announce`), and a
 * warning for every one that has expired or expires within 30 days. */
static void log_certs(const struct config *cfg, bool announce)
{
	struct cert_info *certs;
	size_t n;
	char err[512];
	time_t now = time(NULL);

	if (!cert_store_inventory(cfg, &certs, &n, err, sizeof(err)))
		return;
	for (size_t i = 0; i < n; i++) {
		long days = (long)((certs[i].not_after - now) / 86400);
		struct logline l;

		if (announce) {
			log_begin(&l, LOG_INFO, "cert");
			log_kv(&l, "cert", "%s", certs[i].name);
			log_kv(&l, "subject", "%s", certs[i].subject);
			log_kv(&l, "days_left", "%ld", days);
			log_kv(&l, "sha256", "%s", certs[i].sha256);
			log_end(&l);
		}
		if (days >= 30)
			continue;
		log_begin(&l, LOG_WARN, "cert_expiry");
		log_kv(&l, "cert", "%s", certs[i].name);
		log_kv(&l, "days_left", "%ld", days);
		log_kv(&l, "msg", "%s", days < 0 ? "expired" : "expires soon");
		log_end(&l);
	}
	free(certs);
}

/* The first [domain:...] section with tls_in = verify, or NULL. */
static const struct domain_rule *verify_in_rule(const struct config *cfg)
{
	for (size_t i = 0; i < cfg->n_domains; i++)
		if (cfg->domains[i].has_tls_in &&
		    cfg->domains[i].tls_in == TLS_LEVEL_VERIFY)
			return &cfg->domains[i];
	return NULL;
}

/* Whether the server asks for client certificates ([tls] ask_client_cert;
 * `auto`: when an inbound `verify` may be needed), and why in words. */
static bool want_certs(const struct config *cfg, const struct policy_check *pc,
		       char *why, size_t len)
{
	const struct domain_rule *r = verify_in_rule(cfg);

	if (cfg->ask_client_cert == ASK_CLIENT_CERT_YES)
		snprintf(why, len, "ask_client_cert = yes");
	else if (cfg->server_level == TLS_LEVEL_VERIFY)
		snprintf(why, len, "server_level = verify");
	else if (cfg->ask_client_cert == ASK_CLIENT_CERT_NO)
		return snprintf(why, len, "ask_client_cert = no") < 0;
	else if (r != NULL)
		snprintf(why, len, "tls_in = verify in [domain:%s]", r->name);
	else if (pc->wants_cert)
		snprintf(why, len, "%s", pc->cert_reason);
	else
		return snprintf(why, len, "nothing needs one "
					  "(ask_client_cert = auto)") < 0;
	return true;
}

/* TLS is set up unless nothing could ever offer it: no script to choose
 * a level and server_level = none. The store is checked either way once
 * it is used; the Default Cert is made only by a start or reload
 * (`make_cert`), and only when no certificate is configured at all. */
static bool build_tls(struct generation *g, bool make_cert, char *err,
		      size_t err_len)
{
	const struct config *cfg = g->cfg;
	bool configured, created;

	if (!cert_check_ca_file(cfg, err, err_len))
		return false;
	if (cfg->policy_script == NULL && cfg->server_level == TLS_LEVEL_NONE)
		return true;
	if (!cert_store_prepare(cfg, make_cert, &configured, &created, err,
				err_len))
		return false;
	if (!configured)
		return true; /* a check: the Default Cert comes at start */
	if (created)
		log_msg(LOG_INFO, "cert_created",
			"no certificate configured ([tls] certificate, "
			"cert_dir): made the Default Cert %s/default.crt "
			"(RSA 4096, SHA-256, self-signed, CN=%s)",
			cfg->cert_dir, cfg->hostname);
	g->tls = tls_server_new(cfg, g->ask_certs, err, err_len);
	if (g->tls != NULL)
		log_certs(cfg, make_cert);
	return g->tls != NULL;
}

struct generation *generation_build(const char *config_path, bool make_cert,
				    char *err, size_t err_len)
{
	struct generation *g = calloc(1, sizeof(*g));
	struct policy_check pc;

	if (g == NULL) {
		snprintf(err, err_len, "out of memory");
		return NULL;
	}
	g->refs = 1;
	g->cfg = config_load(config_path, err, err_len);
	if (g->cfg != NULL && !dns_check_config(g->cfg, false, err, err_len)) {
		config_free(g->cfg);
		g->cfg = NULL;
	}
	if (g->cfg != NULL)
		g->policy = policy_load(g->cfg, generation_lua_dir(), err,
					err_len);
	g->clients.encrypt_session = g->clients.verify_session = -1;
	if (g->policy != NULL && !policy_check(g->policy, &pc, err, err_len)) {
		policy_free(g->policy);
		g->policy = NULL;
	}
	if (g->policy != NULL)
		g->ask_certs = want_certs(g->cfg, &pc, g->ask_reason,
					  sizeof(g->ask_reason));
	if (g->policy == NULL || !build_tls(g, make_cert, err, err_len) ||
	    !tls_clients_new(g->cfg, &g->clients, err, err_len)) {
		g->refs = 1;
		generation_release(g);
		return NULL;
	}
	g->serial = ++next_serial;
	return g;
}

struct generation *generation_retain(struct generation *g)
{
	g->refs++;
	return g;
}

void generation_release(struct generation *g)
{
	if (g == NULL || --g->refs > 0)
		return;
	tls_server_free(g->tls);
	tls_clients_free(&g->clients);
	policy_free(g->policy);
	config_free(g->cfg);
	free(g);
}
