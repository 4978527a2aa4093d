/*
 * certs_command: `smtpgw -c FILE certs [--json] [--warn-days N]`, the
 * table of the certificate store ([tls] certificate lines and cert_dir)
 * and a monitoring check
 * in the manner of a Nagios plugin: a status line first, then the table,
 * and the exit status 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN. It reads the
 * store through net/certs.c's audit and only prints: it never writes a file.
 */
#include "cli/certs_command.h"

#include "core/config.h"
#include "net/certs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { DEFAULT_WARN_DAYS = 30, MAX_WARN_DAYS = 36500, SUMMARY_MAX = 1024 };

/* The values are the plugin's exit statuses. */
enum check_state {
	CHECK_OK = 0,
	CHECK_WARNING = 1,
	CHECK_CRITICAL = 2,
	CHECK_UNKNOWN = CERTS_EXIT_UNKNOWN,
};

/* One certificate's verdict: its state and why (empty when OK). */
struct verdict {
	enum check_state state;
	char why[sizeof(((struct cert_audit *)0)->why) + 128];
};

static const char *state_name(enum check_state s)
{
	switch (s) {
	case CHECK_OK:
		return "OK";
	case CHECK_WARNING:
		return "WARNING";
	case CHECK_CRITICAL:
		return "CRITICAL";
	case CHECK_UNKNOWN:
		break;
	}
	return "UNKNOWN";
}

/* Worse first: CRITICAL, WARNING, UNKNOWN, OK. */
static int severity(enum check_state s)
{
	switch (s) {
	case CHECK_CRITICAL:
		return 3;
	case CHECK_WARNING:
		return 2;
	case CHECK_UNKNOWN:
		return 1;
	case CHECK_OK:
		break;
	}
	return 0;
}

static enum check_state worse(enum check_state a, enum check_state b)
{
	return severity(a) >= severity(b) ? a : b;
}

bool certs_parse_args(int argc, char **argv, struct certs_options *o)
{
	o->json = false;
	o->warn_days = DEFAULT_WARN_DAYS;
	for (int i = 0; i < argc; i++) {
		char *end;

		if (strcmp(argv[i], "--json") == 0 && !o->json) {
			o->json = true;
			continue;
		}
		if (strcmp(argv[i], "--warn-days") != 0 || i + 1 == argc)
			return false;
		o->warn_days = strtol(argv[++i], &end, 10);
		if (*argv[i] == '\0' || *end != '\0' || o->warn_days < 0 ||
		    o->warn_days > MAX_WARN_DAYS)
			return false;
	}
	return true;
}

/* ---- verdicts ----------------------------------------------------------- */

static void add_reason(struct verdict *v, enum check_state s,
		       const char *text)
{
	size_t used = strlen(v->why);

	v->state = worse(v->state, s);
	snprintf(v->why + used, sizeof(v->why) - used, "%s%s",
		 used > 0 ? "; " : "", text);
}

static void key_verdict(const struct cert_audit *a, struct verdict *v)
{
	char text[sizeof(a->why) + 32];

	switch (a->key) {
	case CERT_KEY_MATCHES:
		return;
	case CERT_KEY_DENIED:
		snprintf(text, sizeof(text), "key not checked: %s (run as root)",
			 a->why);
		add_reason(v, CHECK_UNKNOWN, text);
		return;
	case CERT_KEY_MISSING:
	case CERT_KEY_MISMATCH:
	case CERT_KEY_OPEN:
	case CERT_KEY_BAD:
		break;
	}
	add_reason(v, CHECK_CRITICAL, a->why);
}

static void day_text(char *out, size_t len, const char *what, time_t t)
{
	char date[32];
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(date, sizeof(date), "%Y-%m-%d", &tm);
	snprintf(out, len, "%s %s", what, date);
}

static long days_left(const struct cert_info *c, time_t now)
{
	return (long)((c->not_after - now) / 86400);
}

static void time_verdict(const struct cert_info *c, time_t now,
			 long warn_days, struct verdict *v)
{
	char text[96];

	if (now >= c->not_after) {
		day_text(text, sizeof(text), "expired on", c->not_after);
		add_reason(v, CHECK_CRITICAL, text);
	} else if (now < c->not_before) {
		day_text(text, sizeof(text), "not valid before", c->not_before);
		add_reason(v, CHECK_CRITICAL, text);
	} else if (days_left(c, now) < warn_days) {
		snprintf(text, sizeof(text), "expires in %ld days",
			 days_left(c, now));
		add_reason(v, CHECK_WARNING, text);
	}
}

static void judge(const struct cert_audit *a, time_t now, long warn_days,
		  struct verdict *v)
{
	v->state = CHECK_OK;
	v->why[0] = '\0';
	if (!a->has_cert) {
		add_reason(v, CHECK_CRITICAL, a->why);
		return;
	}
	time_verdict(&a->info, now, warn_days, v);
	key_verdict(a, v);
}

/* ---- the table ---------------------------------------------------------- */

static const char *key_word(enum cert_key k)
{
	switch (k) {
	case CERT_KEY_MATCHES:
		return "matches";
	case CERT_KEY_MISSING:
		return "missing";
	case CERT_KEY_OPEN:
		return "readable by others";
	case CERT_KEY_DENIED:
		return "not checked";
	case CERT_KEY_BAD:
		return "unusable";
	case CERT_KEY_MISMATCH:
		break;
	}
	return "does not match";
}

static void print_time(const char *label, time_t t)
{
	char buf[64];
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S UTC", &tm);
	printf("  %-12s %s\n", label, buf);
}

static void print_cert(const struct cert_audit *a, const struct verdict *v,
		       time_t now, long warn_days)
{
	const struct cert_info *c = &a->info;
	long days = days_left(c, now);

	printf("%s%s\n", c->name,
	       strcmp(c->name, "default") == 0 ? " (Default Cert)" : "");
	if (a->has_cert) {
		printf("  %-12s %s\n", "subject", c->subject);
		printf("  %-12s %s\n", "dns names", c->dns[0] ? c->dns : "-");
		printf("  %-12s %s\n", "issuer", c->issuer);
		print_time("valid from", c->not_before);
		print_time("valid to", c->not_after);
		printf("  %-12s %ld%s\n", "days left", days,
		       now >= c->not_after   ? " EXPIRED"
		       : days < warn_days ? " WARNING: expires soon"
					   : "");
		printf("  %-12s %s %d\n", "key", c->key_type, c->key_bits);
		printf("  %-12s %s\n", "signature", c->sig_alg);
		printf("  %-12s %s\n", "sha256", c->sha256);
		printf("  %-12s %s\n", "self-signed",
		       c->self_signed ? "yes" : "no");
		printf("  %-12s %s\n", "private key", key_word(a->key));
	}
	printf("  %-12s %s%s%s\n\n", "status", state_name(v->state),
	       v->why[0] ? ": " : "", v->why);
}

/* "CERTS STATE - summary | 'name'=days;warn:;0: ..." */
static void print_status(const char *dir, const struct cert_audit *a,
			 const struct verdict *v, size_t n,
			 enum check_state state, time_t now, long warn_days)
{
	char summary[SUMMARY_MAX] = "";
	size_t used = 0, first = n;
	const char *sep = " | ";

	for (size_t i = 0; i < n; i++) {
		if (v[i].state != CHECK_OK && used < sizeof(summary))
			used += (size_t)snprintf(summary + used,
						 sizeof(summary) - used,
						 "%s%s: %s", used ? "; " : "",
						 a[i].info.name, v[i].why);
		if (a[i].has_cert && (first == n || a[i].info.not_after <
							a[first].info.not_after))
			first = i;
	}
	if (n == 0)
		snprintf(summary, sizeof(summary),
			 "no certificates in %s (the gateway makes the Default "
			 "Cert at start)", dir);
	else if (used == 0)
		snprintf(summary, sizeof(summary),
			 "%zu certificate%s, the next to expire: %s in %ld days",
			 n, n == 1 ? "" : "s", a[first].info.name,
			 days_left(&a[first].info, now));
	printf("CERTS %s - %s", state_name(state), summary);
	for (size_t i = 0; i < n; i++) {
		if (!a[i].has_cert)
			continue;
		printf("%s'%s'=%ld;%ld:;0:", sep, a[i].info.name,
		       days_left(&a[i].info, now), warn_days);
		sep = " ";
	}
	printf("\n");
}

/* ---- JSON ----------------------------------------------------------------- */

/* JSON strings here come from certificates: escape what JSON requires. */
static void json_value(const char *value)
{
	putchar('"');
	for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
		if (*p == '"' || *p == '\\')
			printf("\\%c", *p);
		else if (*p < 0x20)
			printf("\\u%04x", *p);
		else
			putchar(*p);
	}
	putchar('"');
}

static void json_string(const char *key, const char *value, bool comma)
{
	printf("\"%s\":", key);
	json_value(value);
	printf("%s", comma ? "," : "");
}

static void json_details(const struct cert_info *c, time_t now)
{
	json_string("subject", c->subject, true);
	printf("\"dns_names\":[");
	for (const char *p = c->dns; *p;) {
		size_t n = strcspn(p, ",");
		char one[256];

		snprintf(one, sizeof(one), "%.*s", (int)n, p);
		json_value(one);
		printf("%s", p[n] ? "," : "");
		p += p[n] ? n + 1 : n;
	}
	printf("],");
	json_string("issuer", c->issuer, true);
	printf("\"not_before\":%lld,\"not_after\":%lld,\"days_left\":%ld,",
	       (long long)c->not_before, (long long)c->not_after,
	       days_left(c, now));
	json_string("key_type", c->key_type, true);
	printf("\"key_bits\":%d,", c->key_bits);
	json_string("signature_algorithm", c->sig_alg, true);
	json_string("sha256", c->sha256, true);
	printf("\"self_signed\":%s,", c->self_signed ? "true" : "false");
}

static void print_cert_json(const struct cert_audit *a,
			    const struct verdict *v, time_t now, bool comma)
{
	char status[16];

	snprintf(status, sizeof(status), "%s", state_name(v->state));
	for (char *c = status; *c; c++)
		*c = (char)(*c - 'A' + 'a');
	printf("{");
	json_string("name", a->info.name, true);
	if (a->has_cert) {
		json_details(&a->info, now);
		json_string("private_key", key_word(a->key), true);
	}
	json_string("status", status, true);
	json_string("problem", v->why, false);
	printf("}%s\n", comma ? "," : "");
}

/* ---- the command -------------------------------------------------------- */

static int unknown(const struct certs_options *o, const char *err)
{
	if (o->json)
		fprintf(stderr, "%s\n", err);
	else
		printf("CERTS UNKNOWN - %s\n", err);
	return CHECK_UNKNOWN;
}

static int report(const struct config *cfg, const struct certs_options *o,
		  const struct cert_audit *a, size_t n)
{
	struct verdict *v = n ? calloc(n, sizeof(*v)) : NULL;
	enum check_state state = n ? CHECK_OK : CHECK_WARNING;
	time_t now = time(NULL);

	if (n > 0 && v == NULL)
		return unknown(o, "out of memory");
	for (size_t i = 0; i < n; i++) {
		judge(&a[i], now, o->warn_days, &v[i]);
		state = worse(state, v[i].state);
	}
	if (o->json) {
		printf("[\n");
		for (size_t i = 0; i < n; i++)
			print_cert_json(&a[i], &v[i], now, i + 1 < n);
		printf("]\n");
	} else {
		print_status(cfg->cert_dir, a, v, n, state, now, o->warn_days);
		for (size_t i = 0; i < n; i++)
			print_cert(&a[i], &v[i], now, o->warn_days);
	}
	free(v);
	return state;
}

int certs_command(const char *config_path, const struct certs_options *o)
{
	char err[1024];
	struct config *cfg = config_load(config_path, err, sizeof(err));
	struct cert_audit *a;
	size_t n;
	int rc;

	if (cfg == NULL)
		return unknown(o, err);
	if (!cert_store_audit(cfg, &a, &n, err, sizeof(err))) {
		config_free(cfg);
		return unknown(o, err);
	}
	rc = report(cfg, o, a, n);
	free(a);
	config_free(cfg);
	return rc;
}
