/*
 * commands: the subcommands that run without the event loop — explain
 * and reload — and the running gateway's pid and signal that the other
 * commands use too. Each works on a configuration loaded for the purpose
 * and prints for a person.
 */
#include "cli/commands.h"

#include "core/config.h"
#include "spool/sts_cache.h"
#include "policy/generation.h"
#include "policy/policy.h"
#include "proto/smtp_proto.h"
#include "inbound/smtp_server.h"
#include "net/tls.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---- explain --------------------------------------------------------- */

static bool parse_ip(const char *ip, struct sockaddr_storage *ss)
{
	struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;

	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, ip, &v4->sin_addr) == 1) {
		v4->sin_family = AF_INET;
		return true;
	}
	if (inet_pton(AF_INET6, ip, &v6->sin6_addr) == 1) {
		v6->sin6_family = AF_INET6;
		return true;
	}
	return false;
}

static const char *decider(const struct policy_result *r,
			   enum policy_hook hook)
{
	static char buf[64];

	snprintf(buf, sizeof(buf), "%s%s", policy_hook_name(hook),
		 r->by_default ? " (absent: default)" : "");
	return buf;
}

static void print_verdict(const char *stage, const struct policy_result *r,
			  enum policy_hook hook)
{
	switch (r->outcome) {
	case POLICY_ACCEPT:
		printf("%-10s accept\t\t\tdecided by %s\n", stage,
		       decider(r, hook));
		break;
	case POLICY_REJECT:
	case POLICY_TEMPFAIL:
		printf("%-10s %s %d %s\tdecided by %s\n", stage,
		       r->outcome == POLICY_REJECT ? "reject" : "tempfail",
		       r->code, r->text, decider(r, hook));
		break;
	case POLICY_LEVEL:
		printf("%-10s %s\t\t\tdecided by %s\n", stage,
		       tls_level_name(r->level), decider(r, hook));
		break;
	case POLICY_ERROR:
		printf("%-10s policy failure (451 4.3.0 inbound, deferral "
		       "outbound): %s\n",
		       stage, r->text);
		break;
	}
}

static void explain_facts(const struct config *cfg,
			  const struct explain_options *o,
			  const struct sockaddr_storage *client,
			  struct policy_facts *f)
{
	memset(f, 0, sizeof(*f));
	f->hostname = cfg->hostname;
	f->inbound = true;
	f->client_ip = o->client;
	f->client_port = 0;
	f->client_trusted =
		config_is_relay_client(cfg, (const struct sockaddr *)client);
	f->tls_active = o->tls_version != NULL;
	f->tls_version = o->tls_version;
	f->tls_cipher = o->tls_version ? "(explain)" : NULL;
	f->tls_peer = o->peer;
}

/* The engine's own rules before the policy's rcpt hook. */
static bool explain_engine_rcpt(const struct config *cfg, enum tls_level level,
				const struct explain_options *o,
				const struct sockaddr_storage *client,
				const struct smtp_addr *a)
{
	if (level >= TLS_LEVEL_ENCRYPT && o->tls_version == NULL) {
		printf("%-10s reject 530 5.7.0 Must issue a STARTTLS command "
		       "first\tdecided by the inbound level (no --tls)\n",
		       "rcpt");
		return false;
	}
	if (!smtp_relay_allowed(cfg, (const struct sockaddr *)client, a)) {
		printf("%-10s reject 554 5.7.1 <%s>: Relay access denied\t"
		       "decided by relay_domains / relay_networks\n",
		       "rcpt", a->mailbox);
		return false;
	}
	return true;
}

/* What explain works on: the client address, the recipient and its domain
 * (lower case) and section. */
struct explain_target {
	struct sockaddr_storage client;
	struct smtp_addr addr;
	char domain[SMTP_DOMAIN_MAX + 1];
	const struct domain_rule *rule;
};

static bool explain_parse(const struct config *cfg,
			  const struct explain_options *o,
			  struct explain_target *t)
{
	char arg[SMTP_PATH_MAX + 3];
	size_t n;

	snprintf(arg, sizeof(arg), "<%s>", o->rcpt);
	if (!parse_ip(o->client, &t->client) ||
	    smtp_parse_rcpt(arg, strlen(arg), true, &t->addr, NULL, NULL) !=
		    SMTP_PATH_OK)
		return false;
	n = t->addr.mailbox_len - t->addr.domain;
	if (n > SMTP_DOMAIN_MAX)
		n = SMTP_DOMAIN_MAX;
	for (size_t i = 0; i < n; i++)
		t->domain[i] = (char)tolower(
			(unsigned char)t->addr.mailbox[t->addr.domain + i]);
	t->domain[n] = '\0';
	t->rule = n > 0 ? config_domain_rule(cfg, t->domain, n) : NULL;
	return true;
}

static void explain_header(const struct generation *g,
			   const struct explain_target *t)
{
	const struct domain_rule *r = t->rule;

	printf("%-10s %s\n", "script", policy_script(g->policy));
	if (r != NULL)
		printf("%-10s [domain:%s]%s%s%s%s\n", "section", r->name,
		       r->has_tls ? " tls = " : "",
		       r->has_tls ? tls_level_name(r->tls) : "",
		       r->has_tls_in ? " tls_in = " : "",
		       r->has_tls_in ? tls_level_name(r->tls_in) : "");
	else
		printf("%-10s none matches %s\n", "section", t->domain);
	printf("%-10s %s: %s\n", "clientcert",
	       g->ask_certs ? "asked" : "not asked", g->ask_reason);
}

/* server_tls, then connect, helo and mail; returns the inbound level. */
static enum tls_level explain_inbound(const struct generation *g,
				      const struct explain_options *o,
				      struct policy_facts *f)
{
	static const enum policy_hook stages[] = {HOOK_CONNECT, HOOK_HELO,
						  HOOK_MAIL};
	struct policy_result r;
	enum tls_level level;

	f->hook = HOOK_SERVER_TLS;
	policy_call(g->policy, f, &r);
	print_verdict("inbound", &r, HOOK_SERVER_TLS);
	level = r.outcome == POLICY_LEVEL ? r.level : TLS_LEVEL_NONE;
	f->helo = o->helo;
	for (size_t i = 0; i < sizeof(stages) / sizeof(stages[0]); i++) {
		f->hook = stages[i];
		f->sender = stages[i] == HOOK_MAIL ? o->sender : NULL;
		policy_call(g->policy, f, &r);
		print_verdict(policy_hook_name(stages[i]), &r, stages[i]);
	}
	return level;
}

static void explain_recipient(const struct generation *g,
			      const struct explain_options *o,
			      const struct explain_target *t,
			      enum tls_level level, struct policy_facts *f)
{
	struct policy_result r;

	f->hook = HOOK_RCPT;
	f->recipient = t->addr.mailbox;
	f->domain = t->domain[0] ? t->domain : NULL;
	f->section = t->rule;
	if (!explain_engine_rcpt(g->cfg, level, o, &t->client, &t->addr))
		return;
	policy_call(g->policy, f, &r);
	print_verdict("rcpt", &r, HOOK_RCPT);
}

/* The MTA-STS policy delivery would start from: the cached one in
 * SPOOL/sts (explain asks no DNS and fetches nothing). NULL when none. */
static const struct sts_policy *explain_mta_sts(const struct generation *g,
						const struct explain_target *t,
						struct sts_policy *p, char *id,
						size_t id_len)
{
	struct route rt;
	double fetched;
	bool old;
	char when[64];
	time_t until;
	struct tm tm;

	config_route(g->cfg, t->domain, strlen(t->domain), &rt);
	if (rt.source != ROUTE_MX) {
		printf("%-10s not looked up: mail for %s goes to its %s\n",
		       "mta-sts", t->domain,
		       rt.source == ROUTE_NEXT_HOP ? "next_hop" : "relayhost");
		return NULL;
	}
	if (!sts_cache_load(g->cfg->spool, t->domain, (double)time(NULL), p,
			    id, id_len, &fetched, &old)) {
		printf("%-10s none cached for %s%s (delivery looks it up)\n",
		       "mta-sts", t->domain, old ? " (expired)" : "");
		return NULL;
	}
	until = (time_t)(fetched + (double)p->max_age);
	gmtime_r(&until, &tm);
	strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", &tm);
	printf("%-10s %s, id %s, cached until %s\n", "mta-sts",
	       sts_mode_name(p->mode), id, when);
	return p;
}

/* ctx.dane as delivery would give it: explain asks no DNS, so --dane
 * supposes a state; absent where delivery looks none up. */
static const char *explain_dane(const struct generation *g,
				const struct explain_options *o,
				const struct explain_target *t)
{
	struct route rt;

	config_route(g->cfg, t->domain, strlen(t->domain), &rt);
	if (g->cfg->dns_trust_anchor == NULL) {
		printf("%-10s not looked up: [dns] trust_anchor = none\n",
		       "dane");
		return NULL;
	}
	if (rt.hop != NULL && rt.hop->no_mx) {
		printf("%-10s not looked up: mail for %s goes to a configured "
		       "host (%s), not by MX\n", "dane", t->domain,
		       rt.source == ROUTE_NEXT_HOP ? "next_hop" : "relayhost");
		return NULL;
	}
	if (o->dane == NULL) {
		printf("%-10s not known: explain asks no DNS (--dane secure, "
		       "insecure or bogus supposes one)\n", "dane");
		return NULL;
	}
	printf("%-10s %s (supposed: --dane)\n", "dane", o->dane);
	return o->dane;
}

/* The level client_tls gives without one of its inputs; true when it
 * differs from `level` (that input decided). */
static bool changes_without(const struct generation *g,
			    struct policy_facts f, int input,
			    enum tls_level level)
{
	struct policy_result r;

	if (input == 0)
		f.section = NULL;
	else if (input == 1)
		f.dane = NULL;
	else
		f.mta_sts = NULL;
	policy_call(g->policy, &f, &r);
	return r.outcome != POLICY_LEVEL || r.level != level;
}

/* What decided the outbound level: each input of client_tls (the domain's
 * section, ctx.dane, ctx.mta_sts) without which the answer changes; none:
 * the policy's own default. */
static void explain_source(const struct generation *g,
			   const struct policy_facts *f,
			   const struct policy_result *r)
{
	static const char *const names[] = {"the domain's section", "DANE",
					    "MTA-STS"};
	bool present[] = {f->section != NULL, f->dane != NULL,
			  f->mta_sts != NULL};
	char text[200] = "";
	size_t o = 0;

	if (r->outcome != POLICY_LEVEL)
		return;
	for (int i = 0; i < 3; i++)
		if (present[i] && o < sizeof(text) &&
		    changes_without(g, *f, i, r->level))
			o += (size_t)snprintf(text + o, sizeof(text) - o, "%s%s",
					      o ? ", " : "", names[i]);
	if (o == 0)
		snprintf(text, sizeof(text), "the policy's default%s",
			 r->by_default ? " (no client_tls)" : "");
	printf("%-10s %s\n", "source", text);
}

/* Which mechanism authenticates the delivery under that level. */
static void explain_mechanism(const struct policy_result *r,
			      const struct sts_policy *p, const char *id,
			      const char *dane)
{
	char mx[512];

	if (r->outcome != POLICY_LEVEL)
		return;
	if ((r->level == TLS_LEVEL_DANE || r->level == TLS_LEVEL_DANE_ONLY) &&
	    dane != NULL && strcmp(dane, "bogus") == 0) {
		printf("%-10s DANE (a TLSA lookup failed): that MX host is "
		       "skipped, and the mail waits when none is left\n",
		       "mechanism");
	} else if ((r->level == TLS_LEVEL_DANE ||
		    r->level == TLS_LEVEL_DANE_ONLY) &&
		   dane != NULL && strcmp(dane, "secure") == 0) {
		printf("%-10s DANE: TLS authenticated by the TLSA records of "
		       "each MX host that has them; one without them %s\n",
		       "mechanism",
		       r->level == TLS_LEVEL_DANE ? "is as may" : "defers");
	} else if (r->level == TLS_LEVEL_STS && p != NULL &&
	    p->mode == STS_MODE_ENFORCE) {
		sts_mx_text(p, mx, sizeof(mx));
		printf("%-10s MTA-STS (enforce, id %s): verified TLS for the "
		       "MX host name, only MX hosts %s\n",
		       "mechanism", id, mx);
	} else if (r->level == TLS_LEVEL_STS) {
		printf("%-10s sts without an enforce policy: as may\n",
		       "mechanism");
	} else {
		printf("%-10s the level %s%s\n", "mechanism",
		       tls_level_name(r->level),
		       p != NULL && p->mode == STS_MODE_TESTING
			       ? " (MTA-STS testing: failures are logged)"
			       : "");
	}
}

static void explain_outbound(const struct generation *g,
			     const struct explain_options *o,
			     const struct explain_target *t)
{
	struct policy_facts f = {.hook = HOOK_CLIENT_TLS};
	struct policy_result r;
	struct sts_policy p;
	char id[STS_ID_MAX + 1] = "";

	f.hostname = g->cfg->hostname;
	f.sender = o->sender;
	f.recipient = t->addr.mailbox;
	f.domain = t->domain[0] ? t->domain : NULL;
	f.section = t->rule;
	if (t->domain[0] != '\0') {
		f.mta_sts = explain_mta_sts(g, t, &p, id, sizeof(id));
		f.dane = explain_dane(g, o, t);
	}
	policy_call(g->policy, &f, &r);
	print_verdict("outbound", &r, HOOK_CLIENT_TLS);
	explain_source(g, &f, &r);
	explain_mechanism(&r, f.mta_sts, id, f.dane);
}

static int explain_run(struct generation *g, const struct explain_options *o)
{
	struct explain_target t;
	struct policy_facts f;
	enum tls_level level;

	if (!explain_parse(g->cfg, o, &t)) {
		fprintf(stderr, "explain: --client must be an address and "
				"--rcpt a mail address\n");
		return 1;
	}
	explain_header(g, &t);
	explain_facts(g->cfg, o, &t.client, &f);
	level = explain_inbound(g, o, &f);
	explain_recipient(g, o, &t, level, &f);
	explain_outbound(g, o, &t);
	return 0;
}

int explain_command(const char *config_path, const struct explain_options *o)
{
	char err[1024];
	struct generation *g = generation_build(config_path, false, err,
						sizeof(err));
	int rc;

	if (g == NULL) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	rc = explain_run(g, o);
	generation_release(g);
	return rc;
}

/* ---- reload ------------------------------------------------------------ */

long gateway_pid(const struct config *cfg, char *path, size_t len)
{
	FILE *f;
	long pid = 0;

	snprintf(path, len, "%s/smtpgw.pid", cfg->spool);
	if ((f = fopen(path, "re")) == NULL)
		return 0;
	if (fscanf(f, "%ld", &pid) != 1 || pid <= 1)
		pid = 0;
	fclose(f);
	return pid;
}

int signal_gateway(const struct config *cfg, int sig,
			  const char *sig_name, const char *what)
{
	char path[4096];
	long pid = gateway_pid(cfg, path, sizeof(path));

	if (pid == 0) {
		fprintf(stderr, "%s: no running gateway\n", path);
		return 1;
	}
	if (kill((pid_t)pid, sig) != 0) {
		fprintf(stderr, "%s: pid %ld from %s: %s\n", what, pid, path,
			strerror(errno));
		return 1;
	}
	printf("%s: sent %s to pid %ld\n", what, sig_name, pid);
	return 0;
}

/* SPOOL/reload.status, as the master writes it after each reload:
 * "SEQ ok GENERATION" or "SEQ failed REASON". Its SEQ, or 0. */
static unsigned read_status(const struct config *cfg, char *rest,
			    size_t len)
{
	char path[4096], line[2048];
	unsigned seq = 0;
	int off = 0;
	FILE *f;

	snprintf(path, sizeof(path), "%s/reload.status", cfg->spool);
	rest[0] = '\0';
	if ((f = fopen(path, "re")) == NULL)
		return 0;
	if (fgets(line, sizeof(line), f) != NULL &&
	    sscanf(line, "%u %n", &seq, &off) == 1) {
		line[strcspn(line, "\n")] = '\0';
		snprintf(rest, len, "%s", line + off);
	}
	fclose(f);
	return seq;
}

/* Sends SIGHUP to the master and waits (at most 60 s: a new Default Cert
 * takes seconds) for the outcome: 0 and the new generation, or 1 and the
 * FILE:LINE reason. */
int reload_command(const struct config *cfg)
{
	char path[4096], rest[2048];
	long pid = gateway_pid(cfg, path, sizeof(path));
	unsigned before = read_status(cfg, rest, sizeof(rest));

	if (pid == 0) {
		fprintf(stderr, "%s: no running gateway\n", path);
		return 1;
	}
	if (kill((pid_t)pid, SIGHUP) != 0) {
		fprintf(stderr, "reload: pid %ld from %s: %s\n", pid, path,
			strerror(errno));
		return 1;
	}
	for (int i = 0; i < 1200; i++) {
		if (read_status(cfg, rest, sizeof(rest)) != before)
			break;
		if (kill((pid_t)pid, 0) != 0) {
			fprintf(stderr, "reload: pid %ld is gone\n", pid);
			return 1;
		}
		usleep(50000);
	}
	if (strncmp(rest, "ok ", 3) == 0) {
		printf("reload: ok, generation %s\n", rest + 3);
		return 0;
	}
	if (strncmp(rest, "failed ", 7) == 0) {
		fprintf(stderr, "reload: failed: %s\n", rest + 7);
		return 1;
	}
	fprintf(stderr, "reload: pid %ld did not answer within 60 s\n", pid);
	return 1;
}
