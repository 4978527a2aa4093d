/*
 * main: command line, signals and wiring. It builds the first generation
 * (config, policy, certificates), the spool, the listeners and the loop,
 * swaps generations on SIGHUP, and tears down in reverse order; it holds
 * no protocol logic.
 */
#include "cli/commands.h"
#include "core/config.h"
#include "net/conn.h"
#include "outbound/delivery.h"
#include "net/dns.h"
#include "policy/generation.h"
#include "inbound/limits.h"
#include "inbound/listener.h"
#include "core/log.h"
#include "policy/policy.h"
#include "spool/queue.h"
#include "cli/route_command.h"
#include "inbound/smtp_server.h"
#include "net/tls.h"
#include "cli/tls_probe.h"

#include <ev.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

enum command {
	CMD_RUN,
	CMD_CHECK,
	CMD_CERTS,
	CMD_PROBE,
	CMD_EXPLAIN,
	CMD_RELOAD,
	CMD_QUEUE,
	CMD_ROUTE,
};

struct options {
	const char *config_path;
	enum command command;
	bool json;
	struct probe_options probe;
	struct explain_options explain;
	int queue_argc;
	char **queue_argv;
	struct route_options route;
};

static void usage(FILE *to)
{
	fprintf(to,
		"usage: smtpgw -c FILE [-t]\n"
		"       smtpgw -c FILE certs [--json]\n"
		"       smtpgw -c FILE explain --client IP --rcpt ADDR [--tls "
		"VERSION]\n"
		"                     [--peer none|untrusted|trusted] [--helo "
		"NAME] [--from ADDR]\n"
		"       smtpgw -c FILE reload\n"
		"       smtpgw -c FILE queue [flush | delete ID]\n"
		"       smtpgw -c FILE tls-probe HOST:PORT [--level encrypt|"
		"verify] [--name NAME]\n"
		"                     [--repeat N]\n"
		"       smtpgw -c FILE route DOMAIN [--port N]\n"
		"  -c FILE  gateway.ini to use\n"
		"  -t       check FILE and its policy script; exit 0 or 1\n");
}

/* Subcommand options come as "--name value" pairs after the word. */
typedef bool option_fn(struct options *o, const char *name, const char *val);

static bool parse_pairs(int argc, char **argv, int from, struct options *o,
			option_fn *fn)
{
	if ((argc - from) % 2 != 0)
		return false;
	for (int i = from; i + 1 < argc; i += 2)
		if (!fn(o, argv[i], argv[i + 1]))
			return false;
	return true;
}

static bool probe_option(struct options *o, const char *name, const char *val)
{
	struct probe_options *p = &o->probe;

	if (strcmp(name, "--level") == 0)
		return tls_level_parse(val, &p->level) &&
		       p->level >= TLS_LEVEL_ENCRYPT;
	if (strcmp(name, "--name") == 0) {
		p->name = val;
		return true;
	}
	if (strcmp(name, "--repeat") == 0) {
		p->repeat = (unsigned)strtoul(val, NULL, 10);
		return p->repeat > 0 && p->repeat <= 100;
	}
	return false;
}

static bool explain_option(struct options *o, const char *name,
			   const char *val)
{
	struct explain_options *e = &o->explain;

	if (strcmp(name, "--client") == 0)
		e->client = val;
	else if (strcmp(name, "--rcpt") == 0)
		e->rcpt = val;
	else if (strcmp(name, "--tls") == 0)
		e->tls_version = val;
	else if (strcmp(name, "--helo") == 0)
		e->helo = val;
	else if (strcmp(name, "--from") == 0)
		e->sender = val;
	else if (strcmp(name, "--peer") == 0 && strcmp(val, "none") == 0)
		e->peer = TLS_PEER_NONE;
	else if (strcmp(name, "--peer") == 0 && strcmp(val, "untrusted") == 0)
		e->peer = TLS_PEER_UNTRUSTED;
	else if (strcmp(name, "--peer") == 0 && strcmp(val, "trusted") == 0)
		e->peer = TLS_PEER_TRUSTED;
	else
		return false;
	return true;
}

static bool parse_command(int argc, char **argv, struct options *o)
{
	const char *word = optind < argc ? argv[optind] : NULL;

	if (word == NULL)
		return true;
	if (strcmp(word, "certs") == 0) {
		o->command = CMD_CERTS;
		o->json = optind + 2 == argc &&
			  strcmp(argv[optind + 1], "--json") == 0;
		return optind + 1 == argc || o->json;
	}
	if (strcmp(word, "queue") == 0) {
		o->command = CMD_QUEUE;
		o->queue_argc = argc - optind - 1;
		o->queue_argv = argv + optind + 1;
		return o->queue_argc <= 2;
	}
	if (strcmp(word, "reload") == 0) {
		o->command = CMD_RELOAD;
		return optind + 1 == argc;
	}
	if (strcmp(word, "explain") == 0) {
		o->command = CMD_EXPLAIN;
		o->explain.helo = "explain.invalid";
		o->explain.sender = "";
		return parse_pairs(argc, argv, optind + 1, o, explain_option) &&
		       o->explain.client != NULL && o->explain.rcpt != NULL;
	}
	if (strcmp(word, "route") == 0) {
		o->command = CMD_ROUTE;
		return route_parse_args(argc - optind - 1, argv + optind + 1,
					&o->route);
	}
	if (strcmp(word, "tls-probe") == 0 && optind + 1 < argc) {
		o->command = CMD_PROBE;
		o->probe.level = TLS_LEVEL_VERIFY;
		o->probe.repeat = 1;
		o->probe.target = argv[optind + 1];
		return parse_pairs(argc, argv, optind + 2, o, probe_option);
	}
	return false;
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

/* What a reload cannot change without a restart, said out loud. */
static void warn_restart_keys(const struct config *old, const struct config *new)
{
	bool same_listen = old->n_listen == new->n_listen;

	for (size_t i = 0; same_listen && i < old->n_listen; i++)
		same_listen = strcmp(old->listen[i].text,
				     new->listen[i].text) == 0;
	if (!same_listen)
		log_msg(LOG_WARN, "reload",
			"listen changed: takes effect at the next restart");
	if (strcmp(old->spool, new->spool) != 0)
		log_msg(LOG_WARN, "reload",
			"spool changed: takes effect at the next restart");
}

/* SIGHUP: gateway.ini, the policy and the certificates, built and checked
 * as a whole; the running generation stays in charge if anything fails.
 * Sessions keep the generation they started with. */
static void on_hup(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct server *srv = w->data;
	struct generation *fresh;
	char err[1024];

	(void)loop;
	(void)revents;
	fresh = generation_build(srv->gen->cfg->path, true, err, sizeof(err));
	if (fresh == NULL) {
		struct logline l;

		log_begin(&l, LOG_ERR, "reload");
		log_kv(&l, "status", "failed");
		log_kv(&l, "kept", "%u", srv->gen->serial);
		log_kv(&l, "reason", "%s", err);
		log_end(&l);
		return;
	}
	warn_restart_keys(srv->gen->cfg, fresh->cfg);
	generation_release(srv->gen);
	srv->gen = fresh;
	struct logline l;

	log_begin(&l, LOG_INFO, "reload");
	log_kv(&l, "status", "ok");
	log_kv(&l, "generation", "%u", fresh->serial);
	log_kv(&l, "script", "%s", policy_script(fresh->policy));
	log_end(&l);
}

static void on_flush_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct server *srv = w->data;

	(void)loop;
	(void)revents;
	log_msg(LOG_INFO, "flush", "SIGUSR1: every deferred message now");
	delivery_flush(srv->delivery);
}

static void write_pid_file(const struct config *cfg)
{
	char path[4096], tmp[4200];
	FILE *f;

	snprintf(path, sizeof(path), "%s/smtpgw.pid", cfg->spool);
	snprintf(tmp, sizeof(tmp), "%s.new", path);
	f = fopen(tmp, "we");
	if (f == NULL)
		return;
	fprintf(f, "%ld\n", (long)getpid());
	if (fclose(f) == 0)
		rename(tmp, path);
}

static void remove_pid_file(const struct config *cfg)
{
	char path[4096];

	snprintf(path, sizeof(path), "%s/smtpgw.pid", cfg->spool);
	unlink(path);
}

static int run(struct generation *gen)
{
	struct ev_loop *loop = ev_default_loop(EVFLAG_AUTO);
	struct server srv = {.loop = loop, .gen = gen};
	ev_signal sig_term, sig_int, sig_hup, sig_usr1;
	struct dns *dns = NULL;
	char err[512];
	int rc = 1;

	signal(SIGPIPE, SIG_IGN);
	raise_fd_limit();
	srv.queue = queue_open(gen->cfg->spool, loop, err, sizeof(err));
	if (srv.queue == NULL)
		goto out;
	dns = dns_new(loop, gen->cfg, err, sizeof(err));
	if (dns == NULL)
		goto out;
	srv.delivery = delivery_new(loop, srv.queue, dns, &srv.gen);
	if (srv.delivery == NULL)
		goto out;
	/* Before fork once there are workers: the master makes it. */
	srv.limits = limits_new(gen->cfg, err, sizeof(err));
	if (srv.limits == NULL)
		goto out;
	srv.listener = listener_open(&srv, err, sizeof(err));
	if (srv.listener == NULL)
		goto out;
	ev_signal_init(&sig_term, on_stop_signal, SIGTERM);
	ev_signal_init(&sig_int, on_stop_signal, SIGINT);
	ev_signal_init(&sig_hup, on_hup, SIGHUP);
	ev_signal_init(&sig_usr1, on_flush_signal, SIGUSR1);
	sig_term.data = sig_int.data = sig_hup.data = sig_usr1.data = &srv;
	ev_signal_start(loop, &sig_term);
	ev_signal_start(loop, &sig_int);
	ev_signal_start(loop, &sig_hup);
	ev_signal_start(loop, &sig_usr1);
	write_pid_file(gen->cfg);
	delivery_load(srv.delivery);
	log_msg(LOG_INFO, "start", "smtpgw %s ready, policy %s",
		gen->cfg->hostname, policy_script(gen->policy));
	ev_run(loop, 0);
	remove_pid_file(srv.gen->cfg);
	ev_signal_stop(loop, &sig_term);
	ev_signal_stop(loop, &sig_int);
	ev_signal_stop(loop, &sig_hup);
	ev_signal_stop(loop, &sig_usr1);
	rc = 0;
out:
	if (rc != 0)
		fprintf(stderr, "smtpgw: %s\n", err);
	listener_close(srv.listener);
	limits_free(srv.limits);
	delivery_stop(srv.delivery);
	queue_close(srv.queue);
	delivery_free(srv.delivery);
	dns_free(dns);
	generation_release(srv.gen);
	conn_pool_release();
	ev_loop_destroy(loop);
	log_msg(LOG_INFO, "exit", "status %d", rc);
	return rc;
}

static int with_config(const struct options *o)
{
	char err[1024];
	struct config *cfg = config_load(o->config_path, err, sizeof(err));
	int rc = 1;

	if (cfg == NULL) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	switch (o->command) {
	case CMD_CERTS:
		rc = certs_command(cfg, o->json);
		break;
	case CMD_PROBE:
		rc = tls_probe_command(cfg, &o->probe);
		break;
	case CMD_RELOAD:
		rc = reload_command(cfg);
		break;
	case CMD_QUEUE:
		rc = queue_command(cfg, o->queue_argc, o->queue_argv);
		break;
	case CMD_ROUTE:
		rc = route_command(cfg, &o->route);
		break;
	case CMD_RUN:
	case CMD_CHECK:
	case CMD_EXPLAIN:
		break;
	}
	config_free(cfg);
	return rc;
}

int main(int argc, char **argv)
{
	struct options o = {0};
	struct generation *gen;
	char err[1024];
	int rc = parse_args(argc, argv, &o);

	if (rc >= 0)
		return rc;
	if (o.command == CMD_EXPLAIN)
		return explain_command(o.config_path, &o.explain);
	if (o.command != CMD_RUN && o.command != CMD_CHECK)
		return with_config(&o);
	/* -t checks what a start would load, without making the Default
	 * Cert (a check must not write). */
	gen = generation_build(o.config_path, o.command == CMD_RUN, err,
			       sizeof(err));
	if (gen == NULL) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	if (o.command == CMD_CHECK) {
		printf("%s: ok (policy %s)\n", o.config_path,
		       policy_script(gen->policy));
		generation_release(gen);
		return 0;
	}
	return run(gen);
}
