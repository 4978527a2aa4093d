/*
 * certs_command: `smtpgw -c FILE certs [--json]`, the table of the
 * certificate store ([tls] cert_dir). It reads the store through
 * net/tls.c's inventory and only prints: it never writes a file.
 */
#include "cli/certs_command.h"

#include "core/config.h"
#include "net/tls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void print_time(const char *label, time_t t)
{
	char buf[64];
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S UTC", &tm);
	printf("  %-12s %s\n", label, buf);
}

static void print_cert(const struct cert_info *c, time_t now)
{
	long days = (long)((c->not_after - now) / 86400);

	printf("%s%s\n", c->name,
	       strcmp(c->name, "default") == 0 ? " (Default Cert)" : "");
	printf("  %-12s %s\n", "subject", c->subject);
	printf("  %-12s %s\n", "dns names", c->dns[0] ? c->dns : "-");
	printf("  %-12s %s\n", "issuer", c->issuer);
	print_time("valid from", c->not_before);
	print_time("valid to", c->not_after);
	printf("  %-12s %ld%s\n", "days left", days,
	       days < 0 ? " EXPIRED" : days < 30 ? " WARNING: expires soon" : "");
	printf("  %-12s %s %d\n", "key", c->key_type, c->key_bits);
	printf("  %-12s %s\n", "signature", c->sig_alg);
	printf("  %-12s %s\n", "sha256", c->sha256);
	printf("  %-12s %s\n\n", "self-signed", c->self_signed ? "yes" : "no");
}

/* JSON strings here come from certificates: escape what JSON requires. */
static void json_string(const char *key, const char *value, bool comma)
{
	printf("\"%s\":\"", key);
	for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
		if (*p == '"' || *p == '\\')
			printf("\\%c", *p);
		else if (*p < 0x20)
			printf("\\u%04x", *p);
		else
			putchar(*p);
	}
	printf("\"%s", comma ? "," : "");
}

static void print_cert_json(const struct cert_info *c, time_t now, bool comma)
{
	printf("{");
	json_string("name", c->name, true);
	json_string("subject", c->subject, true);
	printf("\"dns_names\":[");
	for (const char *p = c->dns; *p;) {
		size_t n = strcspn(p, ",");
		char one[256];

		snprintf(one, sizeof(one), "%.*s", (int)n, p);
		printf("\"%s\"%s", one, p[n] ? "," : "");
		p += p[n] ? n + 1 : n;
	}
	printf("],");
	json_string("issuer", c->issuer, true);
	printf("\"not_before\":%lld,\"not_after\":%lld,\"days_left\":%ld,",
	       (long long)c->not_before, (long long)c->not_after,
	       (long)((c->not_after - now) / 86400));
	json_string("key_type", c->key_type, true);
	printf("\"key_bits\":%d,", c->key_bits);
	json_string("signature_algorithm", c->sig_alg, true);
	json_string("sha256", c->sha256, true);
	printf("\"self_signed\":%s}%s\n", c->self_signed ? "true" : "false",
	       comma ? "," : "");
}

int certs_command(const struct config *cfg, bool json)
{
	struct cert_info *certs;
	size_t n;
	char err[512];
	time_t now = time(NULL);

	if (!tls_cert_inventory(cfg->cert_dir, &certs, &n, err, sizeof(err))) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	if (json)
		printf("[\n");
	for (size_t i = 0; i < n; i++) {
		if (json)
			print_cert_json(&certs[i], now, i + 1 < n);
		else
			print_cert(&certs[i], now);
	}
	if (json)
		printf("]\n");
	else if (n == 0)
		printf("%s: no certificates (the gateway creates the Default "
		       "Cert at start)\n", cfg->cert_dir);
	free(certs);
	return 0;
}
