/*
 * Unit tests for how src/core/config.c reads gateway.ini lines: every
 * error names the line it is on, also for lines inih cannot take whole
 * (longer than its buffer, or with a NUL). Prints TAP and exits 1 if any
 * assertion failed. Files are written to a temporary directory, removed
 * at the end.
 */
#include "tap.h"
#include "core/config.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[] = "/tmp/smtpgw-test-config.XXXXXX";

/* Loads `len` octets as gateway.ini; the error (or "") into err. */
static bool load(const char *text, size_t len, char *path, size_t path_len,
                 char *err, size_t err_len)
{
	struct config *cfg;
	FILE *f;

	snprintf(path, path_len, "%s/gateway.ini", dir);
	if ((f = fopen(path, "w")) == NULL || fwrite(text, 1, len, f) != len ||
	    fclose(f) != 0)
		abort();
	err[0] = '\0';
	cfg = config_load(path, err, err_len);
	config_free(cfg);
	unlink(path);
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

/* Loads text (NUL-terminated) and keeps the config (NULL on error). */
static struct config *load_cfg(const char *text, char *path, size_t path_len,
                               char *err, size_t err_len)
{
	struct config *cfg;
	FILE *f;

	snprintf(path, path_len, "%s/gateway.ini", dir);
	if ((f = fopen(path, "w")) == NULL || fputs(text, f) < 0 ||
	    fclose(f) != 0)
		abort();
	err[0] = '\0';
	cfg = config_load(path, err, err_len);
	unlink(path);
	return cfg;
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
	check(cfg == NULL && strstr(err, "(tls, tls_in, next_hop)") != NULL,
	      "an unknown key lists tls_in (%s)", err);
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
	test_tls_in();
	test_ask_client_cert();
	rmdir(dir);
	return tap_done();
}
