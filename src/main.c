/*
 * main: command line, signals and wiring. It builds the config, the spool,
 * the listeners and the loop, and tears them down in reverse order; it
 * holds no protocol logic.
 */
#include "config.h"
#include "conn.h"
#include "listener.h"
#include "log.h"
#include "queue.h"
#include "smtp_server.h"
#include "tls.h"
#include "tls_probe.h"

#include <ev.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>
#include <unistd.h>

enum command { CMD_RUN, CMD_CHECK, CMD_CERTS, CMD_PROBE };

struct options {
	const char *config_path;
	enum command command;
	bool json;
	struct probe_options probe;
};

static void usage(FILE *to)
{
	fprintf(to, "usage: smtpgw -c FILE [-t]\n"
		    "       smtpgw -c FILE certs [--json]\n"
		    "       smtpgw -c FILE tls-probe HOST:PORT [--level encrypt|"
		    "verify] [--name NAME] [--repeat N]\n"
		    "  -c FILE  gateway.ini to use\n"
		    "  -t       check FILE and exit (0 ok, 1 error)\n"
		    "  certs    list the certificates of [tls] cert_dir\n");
}

static bool parse_probe(int argc, char **argv, struct options *o)
{
	struct probe_options *p = &o->probe;

	o->command = CMD_PROBE;
	p->level = TLS_LEVEL_VERIFY;
	p->repeat = 1;
	if (optind + 1 >= argc)
		return false;
	p->target = argv[optind + 1];
	for (int i = optind + 2; i + 1 < argc; i += 2) {
		const char *opt = argv[i], *val = argv[i + 1];

		if (strcmp(opt, "--level") == 0) {
			if (!tls_level_parse(val, &p->level) ||
			    p->level < TLS_LEVEL_ENCRYPT)
				return false;
		} else if (strcmp(opt, "--name") == 0) {
			p->name = val;
		} else if (strcmp(opt, "--repeat") == 0) {
			p->repeat = (unsigned)strtoul(val, NULL, 10);
			if (p->repeat == 0 || p->repeat > 100)
				return false;
		} else {
			return false;
		}
	}
	return (argc - optind) % 2 == 0;
}

static bool parse_command(int argc, char **argv, struct options *o)
{
	if (optind == argc)
		return true;
	if (strcmp(argv[optind], "tls-probe") == 0)
		return parse_probe(argc, argv, o);
	if (strcmp(argv[optind], "certs") != 0)
		return false;
	o->command = CMD_CERTS;
	for (int i = optind + 1; i < argc; i++) {
		if (strcmp(argv[i], "--json") != 0)
			return false;
		o->json = true;
	}
	return true;
}

static int parse_args(int argc, char **argv, struct options *o)
{
	int ch;

	/* '+': stop at the first word, which is a command, not a file. */
	while ((ch = getopt(argc, argv, "+c:th")) != -1) {
		switch (ch) {
		case 'c':
			o->config_path = optarg;
			break;
		case 't':
			o->command = CMD_CHECK;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 1;
		}
	}
	if (o->config_path == NULL || !parse_command(argc, argv, o)) {
		usage(stderr);
		return 1;
	}
	return -1;
}

/* Sessions and spool files need descriptors; the soft limit is often 1024. */
static void raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

static void on_stop_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct server *srv = w->data;

	(void)revents;
	if (srv->draining) {
		ev_break(loop, EVBREAK_ALL); /* second signal: stop now */
		return;
	}
	log_msg(LOG_INFO, "stop", "signal %d: draining %u session(s)",
		w->signum, srv->n_sessions);
	listener_stop(srv->listener);
	smtp_server_drain(srv);
}

/* Sessions already in TLS keep what they negotiated (their contexts hold
 * references of their own); new STARTTLS handshakes use the new store. */
static void on_hup(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct server *srv = w->data;
	struct tls_server *fresh;
	char err[512];

	(void)loop;
	(void)revents;
	if (srv->cfg->server_level == TLS_LEVEL_NONE)
		return;
	fresh = tls_server_new(srv->cfg, err, sizeof(err));
	if (fresh == NULL) {
		log_msg(LOG_ERR, "reload", "certificates kept: %s", err);
		return;
	}
	tls_server_free(srv->tls);
	srv->tls = fresh;
	log_msg(LOG_INFO, "reload", "certificates re-read from %s",
		srv->cfg->cert_dir);
}

static void warn_expiring(const struct config *cfg)
{
	struct cert_info *certs;
	size_t n;
	char err[512];
	time_t now = time(NULL);

	if (!tls_cert_inventory(cfg->cert_dir, &certs, &n, err, sizeof(err)))
		return;
	for (size_t i = 0; i < n; i++) {
		long days = (long)((certs[i].not_after - now) / 86400);
		struct logline l;

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

/* The Default Cert is made here, before the loop runs: an RSA 4096 key
 * takes seconds, and no session may wait for it. */
static bool setup_tls(struct server *srv, char *err, size_t err_len)
{
	bool created;

	if (srv->cfg->server_level == TLS_LEVEL_NONE)
		return true;
	if (!tls_ensure_default_cert(srv->cfg, &created, err, err_len))
		return false;
	if (created)
		log_msg(LOG_INFO, "cert_created",
			"Default Cert %s/default.crt (RSA 4096, SHA-256, "
			"self-signed, CN=%s)",
			srv->cfg->cert_dir, srv->cfg->hostname);
	warn_expiring(srv->cfg);
	srv->tls = tls_server_new(srv->cfg, err, err_len);
	return srv->tls != NULL;
}

static int run(struct config *cfg)
{
	struct ev_loop *loop = ev_default_loop(EVFLAG_AUTO);
	struct server srv = {.loop = loop, .cfg = cfg};
	ev_signal sig_term, sig_int, sig_hup;
	char err[512];
	int rc = 1;

	signal(SIGPIPE, SIG_IGN);
	raise_fd_limit();
	if (!setup_tls(&srv, err, sizeof(err)))
		goto out;
	srv.queue = queue_open(cfg->spool, loop, err, sizeof(err));
	if (srv.queue == NULL)
		goto out;
	srv.listener = listener_open(&srv, err, sizeof(err));
	if (srv.listener == NULL)
		goto out;
	ev_signal_init(&sig_term, on_stop_signal, SIGTERM);
	ev_signal_init(&sig_int, on_stop_signal, SIGINT);
	ev_signal_init(&sig_hup, on_hup, SIGHUP);
	sig_term.data = sig_int.data = sig_hup.data = &srv;
	ev_signal_start(loop, &sig_term);
	ev_signal_start(loop, &sig_int);
	ev_signal_start(loop, &sig_hup);
	log_msg(LOG_INFO, "start", "smtpgw %s ready", cfg->hostname);
	ev_run(loop, 0);
	ev_signal_stop(loop, &sig_term);
	ev_signal_stop(loop, &sig_int);
	ev_signal_stop(loop, &sig_hup);
	rc = 0;
out:
	if (rc != 0)
		fprintf(stderr, "smtpgw: %s\n", err);
	listener_close(srv.listener);
	queue_close(srv.queue);
	tls_server_free(srv.tls);
	conn_pool_release();
	ev_loop_destroy(loop);
	log_msg(LOG_INFO, "exit", "status %d", rc);
	return rc;
}

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

static int certs_command(const struct config *cfg, bool json)
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

int main(int argc, char **argv)
{
	struct options o = {0};
	struct config *cfg;
	char err[512];
	int rc = parse_args(argc, argv, &o);

	if (rc >= 0)
		return rc;
	cfg = config_load(o.config_path, err, sizeof(err));
	if (cfg == NULL) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	switch (o.command) {
	case CMD_CHECK:
		printf("%s: ok\n", o.config_path);
		rc = 0;
		break;
	case CMD_CERTS:
		rc = certs_command(cfg, o.json);
		break;
	case CMD_PROBE:
		rc = tls_probe_command(cfg, &o.probe);
		break;
	case CMD_RUN:
		rc = run(cfg);
		break;
	}
	config_free(cfg);
	return rc;
}
