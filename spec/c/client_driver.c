/*
 * client_driver: runs one smtp_client transaction on an ev loop and prints
 * its result as one line of key=value, for spec/integration/
 * smtp_client_spec.lua. Built with the sanitizers (build/check/
 * client_driver), so a leak or an overflow in the client fails the spec.
 *
 *   client_driver --addr 127.0.0.1:PORT --host NAME --level
 * none|may|encrypt|verify
 *                 [--ca FILE] [--no-tls] [--helo NAME] --from ADDR
 *                 --rcpt ADDR [--rcpt ADDR ...] --body FILE [--offset N]
 *                 [--timeout S] [--8bitmime] [--smtputf8] [--abort-after S]
 *                 [--bad-family] [--repeat N [--pause S]
 *                 [--reuse-max N] [--reuse-idle S]]
 *
 * Output: outcome=DONE code=250 reply="..." tls_version=TLSv1.3
 * tls_cipher=... tls_verified=yes reused=no rcpt=ADDR code=N reply="..."
 * ... (outcome=ABORTED after --abort-after). --bad-family hands the client
 * an address of family AF_UNIX, to see a connect that fails at once.
 * --repeat runs the same transaction N times, one after the other (--pause
 * seconds between them), a result line each; with --reuse-max the client
 * has a connection cache (outbound/conncache.c) with those limits, and a
 * last line "idle=N" tells how many connections it held at the end, before
 * it was freed (QUIT to each). Exit 0 once every result is printed, 2 on
 * bad arguments.
 */
#include "net/conn.h"
#include "outbound/conncache.h"
#include "outbound/smtp_client.h"
#include "net/tls.h"

#include <ev.h>
#include <fcntl.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { MAX_RCPTS = 64 };

struct options {
	const char *addr;
	const char *host;
	const char *helo;
	enum tls_level level;
	const char *ca;
	bool no_tls;
	const char *from;
	const char *rcpts[MAX_RCPTS];
	size_t n_rcpts;
	const char *body;
	long long offset;
	double timeout;
	bool eightbit;
	bool smtputf8;
	double abort_after;
	bool bad_family;
	int repeat;
	double pause;
	unsigned reuse_max;
	double reuse_idle;
};

struct run {
	struct smtp_client *client;
	struct client_job *job;
	bool finished;
};

static const char *outcome_name(enum client_outcome o)
{
	switch (o) {
	case CLIENT_DONE:
		return "DONE";
	case CLIENT_CONNECT_FAILED:
		return "CONNECT_FAILED";
	case CLIENT_TLS_NOT_OFFERED:
		return "TLS_NOT_OFFERED";
	case CLIENT_TLS_FAILED:
		return "TLS_FAILED";
	case CLIENT_LOST:
		return "LOST";
	}
	return "?";
}

static void print_quoted(const char *s)
{
	putchar('"');
	for (; *s != '\0'; s++) {
		if (*s == '"' || *s == '\\')
			putchar('\\');
		putchar(*s);
	}
	putchar('"');
}

static void print_rcpts(const struct client_job *job)
{
	for (size_t i = 0; i < job->n_rcpts; i++) {
		printf(" rcpt=%s code=%d reply=", job->rcpts[i].address,
		       job->rcpts[i].code);
		print_quoted(job->rcpts[i].reply);
	}
}

static void on_done(void *owner, const struct client_result *r)
{
	struct run *run = owner;

	run->finished = true;
	run->client = NULL;
	printf("outcome=%s code=%d reply=", outcome_name(r->outcome), r->code);
	print_quoted(r->reply);
	printf(" tls_version=%s tls_cipher=%s tls_verified=%s reused=%s",
	       r->tls_version[0] ? r->tls_version : "none",
	       r->tls_cipher[0] ? r->tls_cipher : "none",
	       r->tls_verified ? "yes" : "no", r->reused ? "yes" : "no");
	printf(" starttls_refused=");
	print_quoted(r->starttls_refused);
	print_rcpts(run->job);
	putchar('\n');
	fflush(stdout);
}

static void on_abort(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct run *run = w->data;

	(void)loop;
	(void)revents;
	if (run->client == NULL)
		return;
	smtp_client_abort(run->client);
	run->client = NULL;
	run->finished = true;
	printf("outcome=ABORTED");
	print_rcpts(run->job);
	putchar('\n');
	fflush(stdout);
}

static int usage(const char *why)
{
	fprintf(stderr, "client_driver: %s\n", why);
	return 2;
}

static bool parse_addr(const char *text, struct sockaddr_storage *out)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV};
	struct addrinfo *ai;
	const char *colon = strrchr(text, ':');
	char host[128];
	const char *start = text[0] == '[' ? text + 1 : text;
	size_t n = colon ? (size_t)(colon - start) : 0;

	if (n > 0 && text[0] == '[')
		n--;
	if (colon == NULL || n == 0 || n >= sizeof(host))
		return false;
	memcpy(host, start, n);
	host[n] = '\0';
	if (getaddrinfo(host, colon + 1, &hints, &ai) != 0)
		return false;
	memset(out, 0, sizeof(*out));
	memcpy(out, ai->ai_addr, ai->ai_addrlen);
	freeaddrinfo(ai);
	return true;
}

static int parse_args(int argc, char **argv, struct options *o)
{
	memset(o, 0, sizeof(*o));
	o->helo = "client.test.example";
	o->level = TLS_LEVEL_MAY;
	o->timeout = 30;
	o->repeat = 1;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		bool takes = true;

		if (strcmp(a, "--no-tls") == 0) {
			o->no_tls = true;
			takes = false;
		} else if (strcmp(a, "--8bitmime") == 0) {
			o->eightbit = true;
			takes = false;
		} else if (strcmp(a, "--bad-family") == 0) {
			o->bad_family = true;
			takes = false;
		} else if (strcmp(a, "--smtputf8") == 0) {
			o->smtputf8 = true;
			takes = false;
		} else if (v == NULL) {
			return usage("option without a value");
		} else if (strcmp(a, "--addr") == 0) {
			o->addr = v;
		} else if (strcmp(a, "--host") == 0) {
			o->host = v;
		} else if (strcmp(a, "--helo") == 0) {
			o->helo = v;
		} else if (strcmp(a, "--level") == 0) {
			if (!tls_level_parse(v, &o->level))
				return usage("bad --level");
		} else if (strcmp(a, "--ca") == 0) {
			o->ca = v;
		} else if (strcmp(a, "--from") == 0) {
			o->from = v;
		} else if (strcmp(a, "--rcpt") == 0) {
			if (o->n_rcpts == MAX_RCPTS)
				return usage("too many --rcpt");
			o->rcpts[o->n_rcpts++] = v;
		} else if (strcmp(a, "--body") == 0) {
			o->body = v;
		} else if (strcmp(a, "--offset") == 0) {
			o->offset = atoll(v);
		} else if (strcmp(a, "--timeout") == 0) {
			o->timeout = atof(v);
		} else if (strcmp(a, "--abort-after") == 0) {
			o->abort_after = atof(v);
		} else if (strcmp(a, "--repeat") == 0) {
			o->repeat = atoi(v);
		} else if (strcmp(a, "--pause") == 0) {
			o->pause = atof(v);
		} else if (strcmp(a, "--reuse-max") == 0) {
			o->reuse_max = (unsigned)atoi(v);
		} else if (strcmp(a, "--reuse-idle") == 0) {
			o->reuse_idle = atof(v);
		} else {
			return usage("unknown option");
		}
		if (takes)
			i++;
	}
	if (o->addr == NULL || o->from == NULL || o->n_rcpts == 0 ||
	    o->body == NULL)
		return usage("need --addr, --from, --rcpt and --body");
	if (o->repeat < 1 || o->repeat > 1000)
		return usage("bad --repeat");
	return 0;
}

/* The client configs as the gateway builds them, from the [tls] keys
 * tls_clients_new reads. */
static bool make_tls(const struct options *o, struct tls_clients *tc)
{
	char protocols[] = "tlsv1.2,tlsv1.3";
	char ciphers[] = "secure";
	char ca_default[] = "/etc/ssl/certs/ca-certificates.crt";
	struct config cfg;
	char err[512];

	memset(&cfg, 0, sizeof(cfg));
	cfg.protocols = protocols;
	cfg.ciphers = ciphers;
	cfg.ca_file = o->ca ? (char *)o->ca : ca_default;
	if (!tls_clients_new(&cfg, tc, err, sizeof(err))) {
		fprintf(stderr, "client_driver: %s\n", err);
		return false;
	}
	return true;
}

static void on_pause(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)revents;
	*(bool *)w->data = true;
	ev_break(loop, EVBREAK_ONE);
}

/* The loop runs on for `seconds`: parked connections watch and age. */
static void pause_loop(struct ev_loop *loop, double seconds)
{
	ev_timer t;
	bool over = false;

	ev_timer_init(&t, on_pause, seconds, 0);
	t.data = &over;
	ev_timer_start(loop, &t);
	while (!over)
		ev_run(loop, EVRUN_ONCE);
	ev_timer_stop(loop, &t);
}

/* One transaction, to its result line. */
static int run_once(struct ev_loop *loop, struct run *run, double abort_after)
{
	ev_timer abort_timer;

	run->finished = false;
	run->client = smtp_client_start(loop, run->job, on_done, run);
	if (run->client == NULL) {
		fprintf(stderr, "client_driver: out of memory\n");
		return 2;
	}
	if (run->finished) {
		fprintf(stderr,
			"client_driver: done called from inside start\n");
		return 3;
	}
	ev_timer_init(&abort_timer, on_abort, abort_after, 0);
	abort_timer.data = run;
	if (abort_after > 0)
		ev_timer_start(loop, &abort_timer);
	while (!run->finished)
		ev_run(loop, EVRUN_ONCE);
	ev_timer_stop(loop, &abort_timer);
	return 0;
}

int main(int argc, char **argv)
{
	struct options o;
	struct client_rcpt rcpts[MAX_RCPTS];
	struct client_job job;
	struct tls_clients tc = {.encrypt_session = -1, .verify_session = -1};
	struct run run = {0};
	struct ev_loop *loop;
	struct stat st;
	int rc = parse_args(argc, argv, &o);

	if (rc != 0)
		return rc;
	signal(SIGPIPE, SIG_IGN); /* as the gateway: a closed peer is EPIPE */
	memset(&job, 0, sizeof(job));
	memset(rcpts, 0, sizeof(rcpts));
	if (!parse_addr(o.addr, &job.addr))
		return usage("bad --addr");
	if (o.bad_family)
		job.addr.ss_family = AF_UNIX;
	if ((job.body_fd = open(o.body, O_RDONLY | O_CLOEXEC)) < 0 ||
	    fstat(job.body_fd, &st) != 0 || o.offset > (long long)st.st_size)
		return usage("cannot read --body");
	if (o.level != TLS_LEVEL_NONE && !make_tls(&o, &tc))
		return 2;
	for (size_t i = 0; i < o.n_rcpts; i++)
		rcpts[i].address = o.rcpts[i];
	job.host = o.host;
	job.helo = o.helo;
	job.level = o.level;
	job.tls = o.level == TLS_LEVEL_VERIFY ? tc.verify : tc.encrypt;
	job.no_tls = o.no_tls;
	job.sender = o.from;
	job.rcpts = rcpts;
	job.n_rcpts = o.n_rcpts;
	job.body_offset = (off_t)o.offset;
	job.body_size = (uint64_t)(st.st_size - o.offset);
	job.body_type = o.eightbit ? SMTP_BODY_8BITMIME : SMTP_BODY_7BIT;
	job.smtputf8 = o.smtputf8;
	job.timeout = o.timeout;

	job.reuse_max = o.reuse_max;
	job.reuse_idle = o.reuse_idle;
	if (o.reuse_max > 0 && (job.cache = conncache_new(4)) == NULL)
		return usage("out of memory");

	loop = ev_loop_new(EVFLAG_AUTO);
	run.job = &job;
	for (int i = 0; i < o.repeat; i++) {
		if (i > 0 && o.pause > 0)
			pause_loop(loop, o.pause);
		rc = run_once(loop, &run, o.abort_after);
		if (rc != 0)
			return rc;
	}
	if (job.cache != NULL)
		printf("idle=%zu\n", conncache_idle(job.cache));
	fflush(stdout);
	conncache_free(job.cache);
	ev_loop_destroy(loop);
	tls_clients_free(&tc);
	close(job.body_fd);
	conn_pool_release();
	return 0;
}
