/*
 * stats_command: reads SPOOL/stats (the counters every process of the
 * running gateway adds to; see core/stats.h) and scans the spool for the
 * queue's shape, then prints both: as tables in the manner of pflogsumm
 * and qshape, or as one JSON object. Reads only.
 */
#include "cli/stats_command.h"

#include "cli/commands.h"
#include "cli/json.h"
#include "core/config.h"
#include "core/stats.h"
#include "spool/queue_scan.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Domains of the qshape table and the JSON. */
enum { TOP_DOMAINS = 20 };

static const char *const levels[] = {"none",    "may",	   "encrypt",
				      "verify",  "dane",   "dane-only",
				      "sts"};

/* Is the master that made the file still the gateway of this spool? */
static bool running(const struct config *cfg, const struct stats *st)
{
	char path[4096];
	long pid = gateway_pid(cfg, path, sizeof(path));

	return pid != 0 && pid == stats_master_pid(st) &&
	       (kill((pid_t)pid, 0) == 0 || errno == EPERM);
}

static uint64_t at(const struct stats *st, int id)
{
	return stats_total(st, (enum stat_id)id);
}

/* ---- tables ---------------------------------------------------------- */

static void header(const struct config *cfg, const struct stats *st)
{
	time_t started = (time_t)stats_started(st);
	long long up = (long long)(time(NULL) - started);
	struct tm tm;
	char when[64];

	gmtime_r(&started, &tm);
	strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", &tm);
	printf("counters since %s (%lldd %02lld:%02lld:%02lld ago), master "
	       "pid %ld, %s\n\n",
	       when, up / 86400, up % 86400 / 3600, up % 3600 / 60, up % 60,
	       stats_master_pid(st),
	       running(cfg, st) ? "running" : "not running (the last run's)");
}

/* "label  N" lines of a group whose labels come from the table. */
static void group(const struct stats *st, const char *title, int first,
		  int last)
{
	printf("  %s\n", title);
	for (int id = first; id <= last; id++) {
		const char *key = stat_describe((enum stat_id)id)->key;

		printf("    %-30s %10" PRIu64 "\n", strchr(key, '.') + 1,
		       at(st, id));
	}
}

static void inbound(const struct stats *st)
{
	static const char *const stages[] = {"helo", "mail", "rcpt", "data",
					     "other"};

	printf("inbound\n");
	printf("  %-32s %10" PRIu64 "\n", "connections",
	       at(st, STAT_CONNECTIONS));
	printf("  %-32s %10" PRIu64 "\n", "messages received",
	       at(st, STAT_RECEIVED));
	printf("  %-32s %10" PRIu64 "\n", "STARTTLS handshakes failed",
	       at(st, STAT_TLS_FAILED));
	printf("  %-20s %10s %10s %10s\n", "sessions by level", "asked",
	       "TLS", "plaintext");
	for (int l = 0; l < 4; l++) {
		uint64_t asked = at(st, STAT_SESSIONS + l),
			 tls = at(st, STAT_SESSIONS_TLS + l);

		printf("    %-18s %10" PRIu64 " %10" PRIu64 " %10" PRIu64 "\n",
		       levels[l], asked, tls, asked > tls ? asked - tls : 0);
	}
	printf("  %-20s %10s %10s\n", "refused commands", "4xx", "5xx");
	for (int s = 0; s < STAT_STAGES; s++)
		printf("    %-18s %10" PRIu64 " %10" PRIu64 "\n", stages[s],
		       at(st, stat_reject_id((enum stat_stage)s, 400)),
		       at(st, stat_reject_id((enum stat_stage)s, 500)));
	group(st, "connections refused", STAT_REFUSED, STAT_REFUSED_LAST);
	group(st, "policy errors", STAT_POLICY_ERRORS, STAT_POLICY_ERRORS_LAST);
}

static void outbound(const struct stats *st)
{
	printf("\noutbound\n");
	printf("  %-20s %10s %10s %10s %10s\n", "recipients", "sent",
	       "deferred", "bounced", "expired");
	printf("    %-18s %10" PRIu64 " %10" PRIu64 " %10" PRIu64
	       " %10" PRIu64 "\n",
	       "", at(st, STAT_SENT), at(st, STAT_DEFERRED),
	       at(st, STAT_BOUNCED), at(st, STAT_EXPIRED));
	printf("  %-20s %10s %10s %10s %10s\n", "connections by level",
	       "plaintext", "TLS", "verified", "TLS failed");
	for (int l = 0; l < 7; l++) {
		printf("    %-18s", levels[l]);
		for (int h = 0; h < STAT_HAD_COUNT; h++)
			printf(" %10" PRIu64,
			       at(st, stat_outbound_id((unsigned)l,
						       (enum stat_tls_had)h)));
		putchar('\n');
	}
	printf("  %-32s %10" PRIu64 "\n", "TLS downgrades (may)",
	       at(st, STAT_DOWNGRADES));
	group(st, "children that died", STAT_CHILD_DEATHS,
	      STAT_CHILD_DEATHS_LAST);
}

static void shape_row(const struct qscan_domain *d)
{
	printf("  %28.28s %6u", d->name, d->messages);
	for (int b = 0; b < QSCAN_BUCKETS; b++)
		printf(" %5u", d->age[b]);
	putchar('\n');
}

/* qshape's table: messages per destination domain by age in minutes. */
static void queue_shape(const struct queue_summary *q)
{
	printf("\nqueue\n  active %u, deferred %u, hold %u, corrupt %u; "
	       "%u recipient(s) to deliver\n\n",
	       q->active, q->deferred, q->hold, q->corrupt,
	       q->total.recipients);
	printf("  %28s %6s", "", "T");
	for (int b = 0; b < QSCAN_BUCKETS - 1; b++)
		printf(" %5u", qscan_bucket_minutes[b]);
	printf(" %4u+\n", qscan_bucket_minutes[QSCAN_BUCKETS - 2]);
	shape_row(&q->total);
	for (size_t i = 0; i < q->n_domains; i++)
		shape_row(&q->domains[i]);
	if (q->other.messages > 0)
		shape_row(&q->other);
}

/* ---- JSON ------------------------------------------------------------ */

static void json_domain(const struct qscan_domain *d)
{
	printf("{\"domain\":");
	json_str(stdout, d->name);
	printf(",\"messages\":%u,\"recipients\":%u,\"age\":[", d->messages,
	       d->recipients);
	for (int b = 0; b < QSCAN_BUCKETS; b++)
		printf("%s%u", b ? "," : "", d->age[b]);
	printf("]}");
}

static void json_queue(const struct queue_summary *q)
{
	printf(",\"queue\":{\"active\":%u,\"deferred\":%u,\"hold\":%u,"
	       "\"corrupt\":%u,\"unreadable\":%u,\"recipients\":%u,"
	       "\"oldest_arrival\":%lld,\"age_minutes\":[",
	       q->active, q->deferred, q->hold, q->corrupt, q->unreadable,
	       q->total.recipients, q->oldest);
	for (int b = 0; b < QSCAN_BUCKETS - 1; b++)
		printf("%s%u", b ? "," : "", qscan_bucket_minutes[b]);
	printf("],\"domains\":[");
	for (size_t i = 0; i < q->n_domains; i++) {
		if (i > 0)
			putchar(',');
		json_domain(&q->domains[i]);
	}
	printf("],\"other\":");
	json_domain(&q->other);
	putchar('}');
}

static void print_json(const struct config *cfg, const struct stats *st,
		       const struct queue_summary *q)
{
	printf("{\"started\":%lld,\"master_pid\":%ld,\"running\":%s,"
	       "\"counters\":",
	       (long long)stats_started(st), stats_master_pid(st),
	       running(cfg, st) ? "true" : "false");
	json_counters(stdout, st);
	if (q != NULL)
		json_queue(q);
	printf("}\n");
}

static struct queue_summary *scan(const struct config *cfg)
{
	char err[300];
	struct queue_scan *s = queue_scan_begin(cfg->spool, (double)time(NULL),
						err, sizeof(err));

	if (s == NULL) {
		fprintf(stderr, "smtpgw: stats: %s\n", err);
		return NULL;
	}
	while (!queue_scan_step(s, 1024))
		;
	return queue_scan_end(s, TOP_DOMAINS);
}

int stats_command(const struct config *cfg, bool json)
{
	char err[4300];
	struct stats *st = stats_open(cfg->spool, err, sizeof(err));
	struct queue_summary *q;

	if (st == NULL) {
		fprintf(stderr, "smtpgw: stats: %s%s\n", err,
			errno == ENOENT ? " (no gateway has run on this spool)"
					: "");
		return 1;
	}
	q = scan(cfg);
	if (json) {
		print_json(cfg, st, q);
	} else {
		header(cfg, st);
		inbound(st);
		outbound(st);
		if (q != NULL)
			queue_shape(q);
	}
	queue_summary_free(q);
	stats_close(st);
	return 0;
}
