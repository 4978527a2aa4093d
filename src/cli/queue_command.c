/*
 * queue_command: the queue for a person. `queue` lists every message of
 * queue/ and hold/, oldest first (mailq), `queue show ID` one in full;
 * `delete`, `hold`, `release` and `requeue` take ids, ALL or --domain D
 * and report as postsuper does ("Deleted: 2 messages"); `flush` is
 * postqueue -f. Changes go through spool/admin (one rename or unlink
 * each, safe beside the running queue manager); release, requeue and
 * flush leave a marker in flush/ and signal the master, which passes the
 * signal to the queue manager. Words are the log's: queued (not tried
 * yet), deferred, sent, bounced.
 */
#include "cli/queue_command.h"

#include "cli/commands.h"
#include "cli/json.h"
#include "core/config.h"
#include "proto/envelope.h"
#include "spool/admin.h"
#include "spool/queue.h"

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* The header section `queue show` prints, at most. */
enum { SHOW_HEADERS_MAX = 65536 };

/* ---- words and times ------------------------------------------------- */

static const char *rcpt_word(const struct spool_message *m, size_t i)
{
	switch (m->states[i]) {
	case RCPT_SENT:
		return "sent";
	case RCPT_BOUNCED:
	case RCPT_NOTIFIED:
		return "bounced";
	case RCPT_PENDING:
		break;
	}
	return m->attempts[i] > 0 ? "deferred" : "queued";
}

/* hold, deferred (a recipient still owed was deferred) or active. */
static const char *message_word(const struct spool_message *m)
{
	if (m->place == SPOOL_HELD)
		return "hold";
	for (size_t i = 0; i < m->env.n_rcpts; i++)
		if (m->states[i] == RCPT_PENDING && m->attempts[i] > 0)
			return "deferred";
	return "active";
}

/* When the queue manager tries a deferred recipient again (0: not
 * deferred, or on hold). */
static long long next_retry(const struct config *cfg,
			    const struct spool_message *m, size_t i)
{
	if (m->place == SPOOL_HELD || m->states[i] != RCPT_PENDING ||
	    m->attempts[i] == 0 || m->last_at[i] == 0)
		return 0;
	return m->last_at[i] +
	       (long long)config_retry_delay(cfg, m->attempts[i]);
}

/* "45s", "3m07s", "2h03m", "4d06h". */
static const char *span_text(long long s, char *buf, size_t len)
{
	if (s < 0)
		s = 0;
	if (s < 60)
		snprintf(buf, len, "%llds", s);
	else if (s < 3600)
		snprintf(buf, len, "%lldm%02llds", s / 60, s % 60);
	else if (s < 86400)
		snprintf(buf, len, "%lldh%02lldm", s / 3600, s % 3600 / 60);
	else
		snprintf(buf, len, "%lldd%02lldh", s / 86400, s % 86400 / 3600);
	return buf;
}

static const char *time_text(long long t, char *buf, size_t len)
{
	time_t tt = (time_t)t;
	struct tm tm;

	gmtime_r(&tt, &tm);
	strftime(buf, len, "%Y-%m-%d %H:%M:%S UTC", &tm);
	return buf;
}

/* ---- reading --------------------------------------------------------- */

struct listing {
	struct spool_message *msgs;
	size_t n;
};

static void listing_free(struct listing *l)
{
	for (size_t i = 0; i < l->n; i++)
		spool_message_free(&l->msgs[i]);
	free(l->msgs);
}

/* A message that cannot be read (it went meanwhile, or is not a queue
 * file) is said on stderr and left out. */
static void read_place(const char *spool, enum spool_place place,
		       struct listing *l)
{
	size_t n;
	char **ids = spool_list(spool, place, &n);
	struct spool_message *grown =
		realloc(l->msgs, (l->n + n + 1) * sizeof(*grown));

	if (grown == NULL) {
		spool_list_free(ids, n);
		return;
	}
	l->msgs = grown;
	for (size_t i = 0; i < n; i++) {
		char err[300];

		if (spool_message_read(spool, place, ids[i], &l->msgs[l->n],
				       err, sizeof(err)))
			l->n++;
		else if (errno != ENOENT)
			fprintf(stderr, "smtpgw: %s\n", err);
	}
	spool_list_free(ids, n);
}

static int by_arrival(const void *a, const void *b)
{
	const struct spool_message *x = a, *y = b;

	if (x->env.arrival != y->env.arrival)
		return x->env.arrival < y->env.arrival ? -1 : 1;
	return strcmp(x->qid, y->qid);
}

static void read_all(const char *spool, struct listing *l)
{
	memset(l, 0, sizeof(*l));
	read_place(spool, SPOOL_QUEUED, l);
	read_place(spool, SPOOL_HELD, l);
	if (l->n > 1)
		qsort(l->msgs, l->n, sizeof(*l->msgs), by_arrival);
}

/* ---- the human listing ------------------------------------------------- */

static void print_rcpt(const struct config *cfg, const struct spool_message *m,
		       size_t i, long long now)
{
	long long next = next_retry(cfg, m, i);
	char span[32];

	printf("    <%s>  %s", m->env.rcpts[i], rcpt_word(m, i));
	if (m->states[i] == RCPT_BOUNCED)
		printf(" (DSN not queued yet)");
	if (m->attempts[i] > 0)
		printf("  attempts %u", m->attempts[i]);
	if (next > now)
		printf("  next retry in %s", span_text(next - now, span,
							 sizeof(span)));
	else if (next > 0)
		printf("  next retry due");
	if (m->last[i] != NULL)
		printf("  %s", m->last[i]);
	putchar('\n');
}

static void print_message(const struct config *cfg,
			  const struct spool_message *m, long long now)
{
	char age[32];

	printf("%s  %s  age %s  size %llu  from <%s>\n", m->qid,
	       message_word(m),
	       span_text(now - m->env.arrival, age, sizeof(age)),
	       (unsigned long long)m->file.body_size, m->env.sender);
	for (size_t i = 0; i < m->env.n_rcpts; i++)
		print_rcpt(cfg, m, i, now);
}

/* ---- JSON ---------------------------------------------------------- */

static void json_rcpt(const struct config *cfg, const struct spool_message *m,
		      size_t i)
{
	printf("{\"address\":");
	json_str(stdout, m->env.rcpts[i]);
	printf(",\"state\":\"%s\",\"dsn_owed\":%s,\"attempts\":%u,"
	       "\"last_attempt\":%lld,\"next_retry\":%lld,\"last_reply\":",
	       rcpt_word(m, i), m->states[i] == RCPT_BOUNCED ? "true" : "false",
	       m->attempts[i], m->attempts[i] > 0 ? m->last_at[i] : 0,
	       next_retry(cfg, m, i));
	json_str(stdout, m->last[i]);
	putchar('}');
}

static void json_message(const struct config *cfg,
			 const struct spool_message *m, long long now)
{
	printf("{\"id\":\"%s\",\"queue\":\"%s\",\"arrival\":%lld,\"age\":%lld,"
	       "\"size\":%llu,\"sender\":",
	       m->qid, message_word(m), m->env.arrival, now - m->env.arrival,
	       (unsigned long long)m->file.body_size);
	json_str(stdout, m->env.sender);
	printf(",\"client\":");
	json_str(stdout, m->env.client);
	printf(",\"helo\":");
	json_str(stdout, m->env.helo);
	printf(",\"recipients\":[");
	for (size_t i = 0; i < m->env.n_rcpts; i++) {
		if (i > 0)
			putchar(',');
		json_rcpt(cfg, m, i);
	}
	putchar(']');
}

static int list(const struct config *cfg, bool json)
{
	struct listing l;
	long long now = (long long)time(NULL);
	size_t held = 0;

	read_all(cfg->spool, &l);
	if (json)
		printf("{\"messages\":[");
	for (size_t i = 0; i < l.n; i++) {
		held += l.msgs[i].place == SPOOL_HELD;
		if (!json) {
			print_message(cfg, &l.msgs[i], now);
			continue;
		}
		printf(i > 0 ? ",\n" : "\n");
		json_message(cfg, &l.msgs[i], now);
		putchar('}');
	}
	if (json)
		printf("],\"queued\":%zu,\"held\":%zu}\n", l.n - held, held);
	else if (held > 0)
		printf("%zu message%s queued, %zu on hold\n", l.n - held,
		       l.n - held == 1 ? "" : "s", held);
	else
		printf("%zu message%s queued\n", l.n, l.n == 1 ? "" : "s");
	listing_free(&l);
	return 0;
}

/* ---- show ---------------------------------------------------------- */

/* The message's header section (up to SHOW_HEADERS_MAX), or NULL. */
static char *read_headers(const struct spool_message *m)
{
	char *buf = malloc(SHOW_HEADERS_MAX + 1), *end;
	ssize_t n = buf ? pread(m->file.fd, buf, SHOW_HEADERS_MAX,
				m->file.body_offset)
			: -1;

	if (n < 0) {
		free(buf);
		return NULL;
	}
	buf[n] = '\0';
	if ((end = strstr(buf, "\r\n\r\n")) != NULL)
		end[2] = '\0';
	return buf;
}

static void print_header_text(const char *h)
{
	for (; *h != '\0'; h++) {
		unsigned char c = (unsigned char)*h;

		if (c == '\r')
			continue;
		if (c == '\n')
			fputs("\n  ", stdout);
		else
			putchar(c < 0x20 && c != '\t' ? '?' : c);
	}
}

static void show_human(const struct config *cfg, const struct spool_message *m,
		       const char *headers)
{
	long long now = (long long)time(NULL);
	char when[64], age[32];

	printf("%-10s %s\n%-10s %s\n", "id", m->qid, "queue", message_word(m));
	printf("%-10s %s (age %s)\n", "arrival",
	       time_text(m->env.arrival, when, sizeof(when)),
	       span_text(now - m->env.arrival, age, sizeof(age)));
	printf("%-10s %s\n%-10s %s\n", "client", m->env.client, "helo",
	       m->env.helo);
	printf("%-10s <%s>\n%-10s %llu\n", "sender", m->env.sender, "size",
	       (unsigned long long)m->file.body_size);
	printf("%-10s %s%s\nrecipients\n", "body",
	       envelope_body_name(m->env.body),
	       m->env.smtputf8 ? ", SMTPUTF8" : "");
	for (size_t i = 0; i < m->env.n_rcpts; i++) {
		print_rcpt(cfg, m, i, now);
		if (m->attempts[i] > 0)
			printf("        last attempt %s\n",
			       time_text(m->last_at[i], when, sizeof(when)));
	}
	printf("headers\n  ");
	print_header_text(headers ? headers : "(unreadable)\r\n");
	putchar('\n');
}

/* queue/ID, else hold/ID. */
static bool read_either(const char *spool, const char *qid,
			struct spool_message *m, char *err, size_t len)
{
	return spool_message_read(spool, SPOOL_QUEUED, qid, m, err, len) ||
	       (errno == ENOENT &&
		spool_message_read(spool, SPOOL_HELD, qid, m, err, len));
}

static int show(const struct config *cfg, const char *qid, bool json)
{
	struct spool_message m;
	char err[300], *headers;

	if (!read_either(cfg->spool, qid, &m, err, sizeof(err))) {
		fprintf(stderr, "smtpgw: queue show: %s\n",
			errno == ENOENT ? "no such message" : err);
		return 1;
	}
	headers = read_headers(&m);
	if (json) {
		json_message(cfg, &m, (long long)time(NULL));
		printf(",\"headers\":");
		json_str(stdout, headers);
		printf("}\n");
	} else {
		show_human(cfg, &m, headers);
	}
	free(headers);
	spool_message_free(&m);
	return 0;
}

/* ---- changes ------------------------------------------------------- */

struct action {
	const char *verb;
	const char *done; /* postsuper's word for the summary */
	bool from_queue, from_hold; /* where ALL and --domain look */
	int (*apply)(const char *spool, const char *qid);
	bool flush; /* tell the queue manager */
};

static int requeue_one(const char *spool, const char *qid)
{
	if (!queue_id_valid(qid))
		return EINVAL;
	if (!spool_has(spool, SPOOL_QUEUED, qid))
		return ENOENT;
	return spool_mark_flush(spool, qid);
}

static int release_one(const char *spool, const char *qid)
{
	int rc = spool_release(spool, qid);

	return rc == 0 ? spool_mark_flush(spool, qid) : rc;
}

static const struct action actions[] = {
	{"delete", "Deleted", true, true, spool_delete, false},
	{"hold", "Placed on hold", true, false, spool_hold, false},
	{"release", "Released from hold", false, true, release_one, true},
	{"requeue", "Requeued", true, false, requeue_one, true},
};

static void report_failure(const struct config *cfg, const struct action *a,
			   const char *qid, int rc)
{
	const char *why = strerror(rc);

	if (rc == EINVAL)
		why = "not a queue id";
	else if (rc == EEXIST)
		why = "the other place has a message with this id";
	else if (rc == ENOTDIR)
		why = "the spool has no hold/ or flush/ (the gateway makes "
		      "them at start)";
	else if (rc == ENOENT && a->apply == spool_delete)
		why = "no such message";
	else if (rc == ENOENT && spool_has(cfg->spool, SPOOL_HELD, qid))
		why = "on hold (release it first)";
	else if (rc == ENOENT && spool_has(cfg->spool, SPOOL_QUEUED, qid))
		why = "not on hold";
	else if (rc == ENOENT)
		why = "no such message";
	fprintf(stderr, "smtpgw: queue %s: %s: %s\n", a->verb, qid, why);
}

/* Does the message still owe a recipient in `domain`? */
static bool owes_domain(const struct spool_message *m, const char *domain)
{
	for (size_t i = 0; i < m->env.n_rcpts; i++) {
		const char *at = strrchr(m->env.rcpts[i], '@');

		if (m->states[i] == RCPT_PENDING && at != NULL &&
		    strcasecmp(at + 1, domain) == 0)
			return true;
	}
	return false;
}

/* ALL (domain NULL) or --domain: the ids of the places `a` works on. */
static char **select_ids(const struct config *cfg, const struct action *a,
			 const char *domain, size_t *n)
{
	struct listing l;
	char **ids;

	memset(&l, 0, sizeof(l));
	if (a->from_queue)
		read_place(cfg->spool, SPOOL_QUEUED, &l);
	if (a->from_hold)
		read_place(cfg->spool, SPOOL_HELD, &l);
	ids = calloc(l.n + 1, sizeof(*ids));
	*n = 0;
	for (size_t i = 0; ids != NULL && i < l.n; i++)
		if (domain == NULL || owes_domain(&l.msgs[i], domain))
			ids[(*n)++] = strdup(l.msgs[i].qid);
	listing_free(&l);
	return ids;
}

/* `queue flush` and the markers: the master relays SIGUSR1 to the queue
 * manager. No gateway running is no error: the next start tries every
 * message anyway. */
static void tell_gateway(const struct config *cfg, const char *what)
{
	char path[4096];
	long pid = gateway_pid(cfg, path, sizeof(path));

	if (pid == 0 || kill((pid_t)pid, SIGUSR1) != 0)
		printf("%s: no running gateway (%s): its next start tries "
		       "every message\n",
		       what, path);
	else
		printf("%s: sent SIGUSR1 to pid %ld\n", what, pid);
}

static int run_action(const struct config *cfg, const struct action *a,
		      char **ids, size_t n)
{
	size_t done = 0;
	bool failed = false;

	for (size_t i = 0; i < n; i++) {
		int rc = ids[i] != NULL ? a->apply(cfg->spool, ids[i]) : ENOMEM;

		if (rc == 0)
			done++;
		else if (ids[i] != NULL)
			report_failure(cfg, a, ids[i], rc);
		failed |= rc != 0;
	}
	spool_sync(cfg->spool);
	printf("smtpgw: %s: %zu message%s\n", a->done, done,
	       done == 1 ? "" : "s");
	if (a->flush && done > 0)
		tell_gateway(cfg, "queue");
	return failed ? 1 : 0;
}

static int change(const struct config *cfg, const struct action *a, int argc,
		  char **argv)
{
	const char *domain = NULL;
	char **ids;
	size_t n;
	int rc;

	if (argc == 1 && strcmp(argv[0], "ALL") == 0)
		argc = 0;
	else if (argc == 2 && strcmp(argv[0], "--domain") == 0 && argv[1][0])
		domain = argv[1];
	else if (argc > 0)
		return run_action(cfg, a, argv, (size_t)argc);
	else
		return -1;
	ids = select_ids(cfg, a, domain, &n);
	rc = run_action(cfg, a, ids, n);
	for (size_t i = 0; ids != NULL && i < n; i++)
		free(ids[i]);
	free(ids);
	return rc;
}

static int flush(const struct config *cfg)
{
	spool_mark_flush(cfg->spool, QUEUE_FLUSH_ALL);
	return signal_gateway(cfg, SIGUSR1, "SIGUSR1", "queue flush");
}

static void usage(void)
{
	fprintf(stderr,
		"usage: smtpgw -c FILE queue [--json]\n"
		"       smtpgw -c FILE queue show ID [--json]\n"
		"       smtpgw -c FILE queue flush\n"
		"       smtpgw -c FILE queue delete|hold|release|requeue "
		"ID... | ALL | --domain DOMAIN\n");
}

int queue_command(const struct config *cfg, int argc, char **argv)
{
	bool json = argc > 0 && strcmp(argv[argc - 1], "--json") == 0;
	int rc = -1;

	if (json)
		argc--;
	if (argc == 0)
		return list(cfg, json);
	if (argc == 2 && strcmp(argv[0], "show") == 0)
		return show(cfg, argv[1], json);
	if (argc == 1 && !json && strcmp(argv[0], "flush") == 0)
		return flush(cfg);
	for (size_t i = 0; i < sizeof(actions) / sizeof(actions[0]) && !json;
	     i++)
		if (strcmp(argv[0], actions[i].verb) == 0)
			rc = change(cfg, &actions[i], argc - 1, argv + 1);
	if (rc < 0)
		usage();
	return rc < 0 ? 1 : rc;
}
