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

#include <ev.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

struct options {
	const char *config_path;
	bool check_only;
};

static void usage(FILE *to)
{
	fprintf(to, "usage: smtpgw -c FILE [-t]\n"
		    "  -c FILE  gateway.ini to use\n"
		    "  -t       check FILE and exit (0 ok, 1 error)\n");
}

static int parse_args(int argc, char **argv, struct options *o)
{
	int ch;

	while ((ch = getopt(argc, argv, "c:th")) != -1) {
		switch (ch) {
		case 'c':
			o->config_path = optarg;
			break;
		case 't':
			o->check_only = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 1;
		}
	}
	if (o->config_path == NULL || optind != argc) {
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

static void on_hup(struct ev_loop *loop, ev_signal *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	/* Hot reload arrives with the policy engine; until then SIGHUP must at
	 * least not kill the gateway, as its default action would. */
	log_msg(LOG_WARN, "reload",
		"SIGHUP ignored: reload is not implemented yet");
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
	srv.queue = queue_open(cfg->spool, loop, err, sizeof(err));
	if (srv.queue == NULL)
		goto out;
	srv.listener = listener_open(&srv, err, sizeof(err));
	if (srv.listener == NULL)
		goto out;
	ev_signal_init(&sig_term, on_stop_signal, SIGTERM);
	ev_signal_init(&sig_int, on_stop_signal, SIGINT);
	ev_signal_init(&sig_hup, on_hup, SIGHUP);
	sig_term.data = sig_int.data = &srv;
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
	conn_pool_release();
	ev_loop_destroy(loop);
	log_msg(LOG_INFO, "exit", "status %d", rc);
	return rc;
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
	if (o.check_only) {
		printf("%s: ok\n", o.config_path);
		config_free(cfg);
		return 0;
	}
	rc = run(cfg);
	config_free(cfg);
	return rc;
}
