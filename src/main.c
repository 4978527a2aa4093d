/*
 * main: the command line. It parses argv and hands over: to the master
 * (proc/master.c) to run the gateway, or to one subcommand (cli/). It
 * holds no protocol logic and no process management.
 */
#include "cli/certs_command.h"
#include "cli/check_command.h"
#include "cli/commands.h"
#include "cli/queue_command.h"
#include "cli/stats_command.h"
#include "core/config.h"
#include "policy/generation.h"
#include "policy/policy.h"
#include "proc/master.h"
#include "cli/route_command.h"
#include "net/tls.h"
#include "cli/tls_probe.h"
#include "cli/tlsrpt_command.h"
#include "cli/version_command.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
	CMD_TLSRPT,
	CMD_STATS,
};

struct options {
	const char *config_path;
	enum command command;
	struct certs_options certs;
	struct probe_options probe;
	struct explain_options explain;
	int queue_argc;
	char **queue_argv;
	bool json; /* stats --json */
	struct route_options route;
	struct tlsrpt_options tlsrpt;
};

static void usage(FILE *to)
{
	fprintf(to,
		"usage: smtpgw -c FILE [-t]\n"
		"       smtpgw -c FILE certs [--json] [--warn-days N]\n"
		"       smtpgw -c FILE explain --client IP --rcpt ADDR [--tls "
		"VERSION]\n"
		"                     [--peer none|untrusted|trusted] [--helo "
		"NAME] [--from ADDR]\n"
		"                     [--dane secure|insecure|bogus]\n"
		"       smtpgw -c FILE reload\n"
		"       smtpgw -c FILE queue [--json] | show ID [--json] | flush\n"
		"       smtpgw -c FILE queue delete|hold|release|requeue ID... "
		"| ALL | --domain D\n"
		"       smtpgw -c FILE stats [--json]\n"
		"       smtpgw -c FILE tls-probe ADDRESS:PORT|NEXT_HOP|DOMAIN "
		"[--level encrypt|verify]\n"
		"                     [--name NAME] [--repeat N]\n"
		"       smtpgw -c FILE route DOMAIN [--port N]\n"
		"       smtpgw -c FILE tlsrpt [--date YYYY-MM-DD] [--domain D] "
		"| [--date YYYY-MM-DD] --send\n"
		"       smtpgw --version | --help\n"
		"  -c FILE    gateway.ini to use\n"
		"  -t         check FILE, its policy script, certificates, spool "
		"and listen\n"
		"             addresses; exit 0 or 1\n"
		"  -h, --help this text\n"
		"  --version  the version and the libraries'\n");
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
		       (p->level == TLS_LEVEL_ENCRYPT ||
			p->level == TLS_LEVEL_VERIFY);
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
	else if (strcmp(name, "--dane") == 0 &&
		 (strcmp(val, "secure") == 0 || strcmp(val, "insecure") == 0 ||
		  strcmp(val, "bogus") == 0))
		e->dane = val;
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
		return certs_parse_args(argc - optind - 1, argv + optind + 1,
					&o->certs);
	}
	if (strcmp(word, "queue") == 0) {
		o->command = CMD_QUEUE;
		o->queue_argc = argc - optind - 1;
		o->queue_argv = argv + optind + 1;
		return true; /* queue_command says what is wrong */
	}
	if (strcmp(word, "stats") == 0) {
		o->command = CMD_STATS;
		o->json = optind + 2 == argc &&
			  strcmp(argv[optind + 1], "--json") == 0;
		return optind + 1 == argc || o->json;
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
	if (strcmp(word, "tlsrpt") == 0) {
		o->command = CMD_TLSRPT;
		return tlsrpt_parse_args(argc - optind - 1, argv + optind + 1,
					 &o->tlsrpt);
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
	static const struct option longopts[] = {
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{NULL, 0, NULL, 0},
	};
	int ch;

	/* '+': stop at the first word, which is a command, not a file. */
	while ((ch = getopt_long(argc, argv, "+c:th", longopts, NULL)) != -1) {
		switch (ch) {
		case 'V':
			return version_command();
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
		/* certs is a monitoring check: a usage error is UNKNOWN */
		return o->command == CMD_CERTS ? CERTS_EXIT_UNKNOWN : 1;
	}
	return -1;
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
	case CMD_TLSRPT:
		rc = tlsrpt_command(cfg, &o->tlsrpt);
		break;
	case CMD_STATS:
		rc = stats_command(cfg, o->json);
		break;
	case CMD_RUN:
	case CMD_CHECK:
	case CMD_EXPLAIN:
	case CMD_CERTS:
		break;
	}
	config_free(cfg);
	return rc;
}

int main(int argc, char **argv)
{
	struct options o = {0};
	int rc = parse_args(argc, argv, &o);

	if (rc >= 0)
		return rc;
	if (o.command == CMD_EXPLAIN)
		return explain_command(o.config_path, &o.explain);
	if (o.command == CMD_CERTS)
		return certs_command(o.config_path, &o.certs);
	if (o.command == CMD_RUN)
		return master_run(o.config_path);
	if (o.command != CMD_CHECK)
		return with_config(&o);
	return check_command(o.config_path);
}
