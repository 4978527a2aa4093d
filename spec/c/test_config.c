/*
 * Unit tests for how src/core/config.c reads gateway.ini lines: every
 * error names the line it is on, also for lines inih cannot take whole
 * (longer than its buffer, or with a NUL); sizes with units; next hops
 * (src/proto/next_hop.c: "[host]:port" and the rest) and the route a
 * domain takes. Prints TAP and exits 1 if any assertion failed. Files are
 * written to a temporary directory, removed at the end.
 */
#include "tap.h"
#include "core/config.h"
#include "proto/next_hop.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[] = "/tmp/smtpgw-test-config.XXXXXX";


/* Loads `len` octets as gateway.ini and returns the config (NULL and the
 * error in err); the file is gone again. */
static struct config *load_config(const char *text, size_t len, char *path,
                                  size_t path_len, char *err, size_t err_len)
{
	struct config *cfg;
	FILE *f;

	snprintf(path, path_len, "%s/gateway.ini", dir);
	if ((f = fopen(path, "w")) == NULL || fwrite(text, 1, len, f) != len ||
	    fclose(f) != 0)
		abort();
	err[0] = '\0';
	cfg = config_load(path, err, err_len);
	unlink(path);
	return cfg;
}

/* Loads `len` octets as gateway.ini; the error (or "") into err. */
static bool load(const char *text, size_t len, char *path, size_t path_len,
                 char *err, size_t err_len)
{
	struct config *cfg = load_config(text, len, path, path_len, err,
	                                 err_len);

	config_free(cfg);
	return cfg != NULL;
}

/* The error is "PATH:LINE: " followed by `what`. */
static bool error_is(const char *err, const char *path, unsigned line,
                     const char *what)
{
	char want[600];

	snprintf(want, sizeof(want), "%s:%u: %s", path, line, what);
	return strncmp(err, want, strlen(want)) == 0;
}

static void test_long_lines(void)
{
	char text[1024], path[128], err[512];
	int n;

	n = snprintf(text, sizeof(text), "[gateway]\n;%0198d\n", 0);
	check(load(text, (size_t)n, path, sizeof(path), err, sizeof(err)),
	      "a comment line of 199 octets is read (%s)", err);
	n = snprintf(text, sizeof(text), "[gateway]\n;%0198d", 0);
	check(load(text, (size_t)n, path, sizeof(path), err, sizeof(err)),
	      "so is one without a newline at the end of the file (%s)", err);
	n = snprintf(text, sizeof(text), "[gateway]\n;%0249d\n[dns]\n", 0);
	check(!load(text, (size_t)n, path, sizeof(path), err, sizeof(err)) &&
	          error_is(err, path, 2, "line longer than 199 octets"),
	      "a line of 250 octets is an error at line 2 (%s)", err);
	n = snprintf(text, sizeof(text),
	             "[gateway]\nhostname = mx.example.test\n"
	             "relay_domains = %0600d\n",
	             0);
	check(!load(text, (size_t)n, path, sizeof(path), err, sizeof(err)) &&
	          error_is(err, path, 3, "line longer than 199 octets"),
	      "a value of 600 octets is an error at line 3, not 5 (%s)", err);
	n = snprintf(text, sizeof(text), "[gateway]\nbogus = 1\n;%0300d\n", 0);
	check(!load(text, (size_t)n, path, sizeof(path), err, sizeof(err)) &&
	          error_is(err, path, 2, "unknown key 'bogus'"),
	      "an error before a long line is the one named (%s)", err);
}

static void test_nul(void)
{
	static const char text[] = "[gateway]\nhostname = mx\0.evil\n";
	char path[128], err[512];

	check(!load(text, sizeof(text) - 1, path, sizeof(path), err,
	            sizeof(err)) &&
	          error_is(err, path, 2, "NUL octet in the line"),
	      "a NUL octet is an error at line 2 (%s)", err);
}

/* Found by spec/fuzz/fuzz_config.c: a 2-line file whose long second line
 * got an error at line 3. */
static void test_fuzz_finding(void)
{
	char text[512], path[128], err[512];
	int n = snprintf(text, sizeof(text),
	                 "[gateway]:1]:2525\nrelay_domains = example.test, "
	                 "%0250d\n",
	                 0);

	check(!load(text, (size_t)n, path, sizeof(path), err, sizeof(err)) &&
	          (error_is(err, path, 1, "") || error_is(err, path, 2, "")),
	      "the error names line 1 or 2 of 2 (%s)", err);
}

static void test_sizes(void)
{
	static const struct {
		const char *text;
		bool ok;
		uint64_t want;
	} cases[] = {
		{"36700160", true, 36700160},  {"10M", true, 10485760},
		{"10m", true, 10485760},       {"512k", true, 524288},
		{"512K", true, 524288},	       {"512KiB", true, 524288},
		{"1G", true, 1073741824},      {"1gb", true, 1073741824},
		{"0", true, 0},		       {"10000000000", true, 10000000000ULL},
		{"16777215T", false, 0},       {"10 M", false, 0},
		{"M", false, 0},	       {"", false, 0},
		{"-1", false, 0},	       {"1.5M", false, 0},
		{"17179869184G", false, 0}, /* 2^64: does not fit */
		{"17179869183G", true, 17179869183ULL << 30},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint64_t v = 0;
		bool ok = config_parse_size(cases[i].text, &v);

		check(ok == cases[i].ok && (!ok || v == cases[i].want),
		      "size '%s' -> %s %llu", cases[i].text,
		      ok ? "ok" : "refused", (unsigned long long)v);
	}
}

static void test_next_hops(void)
{
	static const struct {
		const char *text;
		bool ok;
		const char *host;
		unsigned port;
		bool no_mx, literal;
	} cases[] = {
		{"[127.0.0.1]:2601", true, "127.0.0.1", 2601, true, true},
		{"127.0.0.1:2600", true, "127.0.0.1", 2600, true, true},
		{"127.0.0.1", true, "127.0.0.1", 25, true, true},
		{"[::1]:2525", true, "::1", 2525, true, true},
		{"[IPv6:::1]", true, "::1", 25, true, true},
		{"[mx.example.test]:587", true, "mx.example.test", 587, true,
		 false},
		{"[mx.example.test]", true, "mx.example.test", 25, true, false},
		{"relay.example.test:2600", true, "relay.example.test", 2600,
		 false, false},
		{"relay.example.test", true, "relay.example.test", 25, false,
		 false},
		{"relay.example.test.", true, "relay.example.test", 25, false,
		 false},
		{"::1:25", false, "", 0, false, false},
		{"::1", false, "", 0, false, false},
		{"[mx.example.test", false, "", 0, false, false},
		{"[mx.example.test]x", false, "", 0, false, false},
		{"[mx.example.test]:", false, "", 0, false, false},
		{"mx.example.test:0", false, "", 0, false, false},
		{"mx.example.test:65536", false, "", 0, false, false},
		{"mx.example.test:25x", false, "", 0, false, false},
		{"[]:25", false, "", 0, false, false},
		{"a..b:25", false, "", 0, false, false},
		{"", false, "", 0, false, false},
		{"[IPv6:127.0.0.1]", true, "127.0.0.1", 25, true, true},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct next_hop hop;
		const char *why = "";
		bool ok = next_hop_parse(cases[i].text, 25, &hop, &why);

		check(ok == cases[i].ok &&
			      (!ok || (strcmp(hop.host, cases[i].host) == 0 &&
				       hop.port == cases[i].port &&
				       hop.no_mx == cases[i].no_mx &&
				       hop.literal == cases[i].literal)),
		      "next hop '%s' -> %s %s:%u no_mx=%d literal=%d (%s)",
		      cases[i].text, ok ? "ok" : "refused", ok ? hop.host : "",
		      ok ? hop.port : 0, ok && hop.no_mx, ok && hop.literal,
		      ok ? "" : why);
	}
}

/* The route a domain takes: its next_hop, else relayhost, else its MX. */
static void test_routes(void)
{
	static const char text[] =
		"[gateway]\nlisten = 127.0.0.1:0\n"
		"[delivery]\nrelayhost = [smart.example.test]:587\n"
		"[domain:own.example]\nnext_hop = own-mx.example.test\n"
		"tls_name = mx.own.example\n"
		"[domain:named.example]\ntls_name = mx.named.example\n";
	char path[128], err[512];
	struct config *cfg = load_config(text, sizeof(text) - 1, path,
					 sizeof(path), err, sizeof(err));
	struct route r;

	check(cfg != NULL, "routes ini loads (%s)", cfg ? "" : err);
	if (cfg == NULL)
		return;
	config_route(cfg, "own.example", 11, &r);
	check(r.source == ROUTE_NEXT_HOP && !r.hop->no_mx &&
		      strcmp(r.hop->host, "own-mx.example.test") == 0 &&
		      r.hop->port == 25 && r.tls_name != NULL &&
		      strcmp(r.tls_name, "mx.own.example") == 0,
	      "own.example: its next_hop (MX lookup) and tls_name");
	config_route(cfg, "named.example", 13, &r);
	check(r.source == ROUTE_RELAYHOST && r.hop->no_mx &&
		      strcmp(r.hop->host, "smart.example.test") == 0 &&
		      r.hop->port == 587 && r.tls_name != NULL,
	      "named.example: the relayhost, with its section's tls_name");
	config_route(cfg, "other.example", 13, &r);
	check(r.source == ROUTE_RELAYHOST && r.tls_name == NULL &&
		      r.rule == NULL,
	      "other.example: the relayhost");
	check(config_key_line(cfg, "delivery", "relayhost") == 4 &&
		      config_key_line(cfg, "tls", "cert_dir") == 0,
	      "key lines: relayhost at 4, cert_dir defaulted");
	config_free(cfg);
}

/* [tls] certificate may come again; any other key may not. */
static void test_repeated_keys(void)
{
	static const char twice[] = "[tls]\ncertificate = a.crt a.key\n"
				    "certificate = /b/b.crt /b/b.key\n";
	static const char dup[] = "[tls]\ncert_dir = a\ncert_dir = b\n";
	char path[128], err[512];
	struct config *cfg = load_config(twice, sizeof(twice) - 1, path,
					 sizeof(path), err, sizeof(err));

	check(cfg != NULL && cfg->n_certificates == 2 &&
		      cfg->certificates[0].line == 2 &&
		      cfg->certificates[1].line == 3 &&
		      strcmp(cfg->certificates[1].key, "/b/b.key") == 0 &&
		      strstr(cfg->certificates[0].crt, "/a.crt") != NULL,
	      "two certificate lines, with their lines and paths (%s)",
	      cfg ? "" : err);
	config_free(cfg);
	check(!load(dup, sizeof(dup) - 1, path, sizeof(path), err,
		    sizeof(err)) &&
		      error_is(err, path, 3, "cert_dir: given twice in [tls]"),
	      "cert_dir twice is an error at line 3 (%s)", err);
}

/* Loads text (NUL-terminated) and keeps the config (NULL on error). */
static struct config *load_cfg(const char *text, char *path, size_t path_len,
                               char *err, size_t err_len)
{
	return load_config(text, strlen(text), path, path_len, err, err_len);
}

/* [domain:NAME] tls (outbound) and tls_in (inbound, encrypt or verify
 * only), in any case. */
static void test_tls_in(void)
{
	char path[128], err[512];
	struct config *cfg = load_cfg("[domain:partner.example]\n"
	                              "tls = VERIFY\ntls_in = Encrypt\n"
	                              "[domain:.sub.example]\ntls_in = verify\n"
	                              "[domain:out.example]\ntls = may\n",
	                              path, sizeof(path), err, sizeof(err));
	const struct domain_rule *r;

	check(cfg != NULL, "tls and tls_in are read (%s)", err);
	if (cfg == NULL)
		return;
	r = config_domain_rule(cfg, "partner.example", 15);
	check(r != NULL && r->has_tls && r->tls == TLS_LEVEL_VERIFY &&
	          r->has_tls_in && r->tls_in == TLS_LEVEL_ENCRYPT,
	      "partner.example: tls verify, tls_in encrypt");
	r = config_domain_rule(cfg, "a.sub.example", 13);
	check(r != NULL && !r->has_tls && r->has_tls_in &&
	          r->tls_in == TLS_LEVEL_VERIFY,
	      "a.sub.example: tls_in verify alone");
	r = config_domain_rule(cfg, "out.example", 11);
	check(r != NULL && r->has_tls && !r->has_tls_in,
	      "out.example: tls alone");
	config_free(cfg);

	cfg = load_cfg("[domain:p.example]\ntls_in = may\n", path, sizeof(path),
	               err, sizeof(err));
	check(cfg == NULL && error_is(err, path, 2,
	                              "tls_in: 'may' is not encrypt or verify"),
	      "tls_in = may is an error at its line (%s)", err);
	config_free(cfg);
	cfg =
	    load_cfg("[domain:p.example]\ntls_in = encrypt\ntls_in = verify\n",
	             path, sizeof(path), err, sizeof(err));
	check(cfg == NULL && error_is(err, path, 3, "tls_in: given twice"),
	      "tls_in twice is an error at the second (%s)", err);
	config_free(cfg);
	cfg = load_cfg("[domain:p.example]\ntls_out = verify\n", path,
	               sizeof(path), err, sizeof(err));
	check(cfg == NULL && strstr(err, "(tls, tls_in, next_hop, tls_name)") != NULL,
	      "an unknown key lists tls_in (%s)", err);
	config_free(cfg);
}

/* sts: an outbound level only (tls = sts), not server_level nor tls_in. */
static void test_sts_level(void)
{
	char path[128], err[512];
	struct config *cfg = load_cfg("[domain:sts.example]\ntls = STS\n", path,
	                              sizeof(path), err, sizeof(err));
	const struct domain_rule *r =
	    cfg ? config_domain_rule(cfg, "sts.example", 11) : NULL;

	check(r != NULL && r->has_tls && r->tls == TLS_LEVEL_STS &&
	          strcmp(tls_level_name(r->tls), "sts") == 0,
	      "tls = STS is the level sts (%s)", err);
	config_free(cfg);
	cfg = load_cfg("[domain:p.example]\ntls_in = sts\n", path, sizeof(path),
	               err, sizeof(err));
	check(cfg == NULL && error_is(err, path, 2,
	                              "tls_in: 'sts' is not encrypt or verify"),
	      "tls_in = sts is an error (%s)", err);
	config_free(cfg);
	cfg = load_cfg("[tls]\nserver_level = sts\n", path, sizeof(path), err,
	               sizeof(err));
	check(cfg == NULL && error_is(err, path, 2,
	                              "server_level: 'sts' is an outbound level"),
	      "server_level = sts is an error (%s)", err);
	config_free(cfg);
}

/* [tls] ask_client_cert: auto (the default), yes, no. */
static void test_ask_client_cert(void)
{
	static const struct {
		const char *text;
		bool ok;
		enum ask_client_cert want;
	} cases[] = {
	    {"[tls]\n", true, ASK_CLIENT_CERT_AUTO},
	    {"[tls]\nask_client_cert = auto\n", true, ASK_CLIENT_CERT_AUTO},
	    {"[tls]\nask_client_cert = YES\n", true, ASK_CLIENT_CERT_YES},
	    {"[tls]\nask_client_cert = no\n", true, ASK_CLIENT_CERT_NO},
	    {"[tls]\nask_client_cert = maybe\n", false, ASK_CLIENT_CERT_AUTO},
	};
	char path[128], err[512];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct config *cfg = load_cfg(cases[i].text, path, sizeof(path),
		                              err, sizeof(err));

		if (cases[i].ok)
			check(cfg != NULL &&
			          cfg->ask_client_cert == cases[i].want,
			      "ask_client_cert case %zu (%s)", i, err);
		else
			check(cfg == NULL &&
			          error_is(err, path, 2,
			                   "ask_client_cert: 'maybe' is not "
			                   "auto, yes or no"),
			      "ask_client_cert = maybe is an error (%s)", err);
		config_free(cfg);
	}
}

int main(void)
{
	if (mkdtemp(dir) == NULL)
		abort();
	test_long_lines();
	test_nul();
	test_fuzz_finding();
	test_sizes();
	test_next_hops();
	test_routes();
	test_repeated_keys();
	test_tls_in();
	test_sts_level();
	test_ask_client_cert();
	rmdir(dir);
	return tap_done();
}
