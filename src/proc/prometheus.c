/*
 * prometheus: the exposition text, written to a memory stream. Counter
 * families come from core/stats's table, in its order (a family's series
 * are adjacent there, as the format requires); the gauges are the queue
 * summary's. Label values are escaped as the format says (\\, \" and \n).
 */
#include "proc/prometheus.h"

#include "core/stats.h"
#include "spool/queue_scan.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PREFIX "smtpgw_"

static void family(FILE *f, const char *name, const char *type,
		   const char *help)
{
	fprintf(f, "# HELP " PREFIX "%s %s\n# TYPE " PREFIX "%s %s\n", name,
		help, name, type);
}

static void counters(FILE *f, const struct stats *st)
{
	const char *current = "";

	for (int id = 0; id < STAT_COUNT; id++) {
		const struct stat_desc *d = stat_describe((enum stat_id)id);

		if (strcmp(d->family, current) != 0) {
			family(f, d->family, "counter", d->help);
			current = d->family;
		}
		fprintf(f, PREFIX "%s%s%s%s %" PRIu64 "\n", d->family,
			d->labels[0] ? "{" : "", d->labels,
			d->labels[0] ? "}" : "",
			stats_total(st, (enum stat_id)id));
	}
}

static void label_value(FILE *f, const char *v)
{
	for (; *v != '\0'; v++) {
		if (*v == '\\' || *v == '"')
			fprintf(f, "\\%c", *v);
		else if (*v == '\n')
			fputs("\\n", f);
		else
			fputc(*v, f);
	}
}

static void queue_gauges(FILE *f, const struct queue_summary *q,
			 long long now)
{
	static const char *const names[] = {"active", "deferred", "hold",
					    "corrupt"};
	unsigned values[] = {q->active, q->deferred, q->hold, q->corrupt};

	family(f, "queue_messages", "gauge",
	       "Messages in the spool by queue (active: not deferred yet).");
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		fprintf(f, PREFIX "queue_messages{queue=\"%s\"} %u\n",
			names[i], values[i]);
	family(f, "queue_recipients", "gauge",
	       "Recipients in queue/ still to be delivered.");
	fprintf(f, PREFIX "queue_recipients %u\n", q->total.recipients);
	family(f, "queue_oldest_message_age_seconds", "gauge",
	       "Age of the oldest message in queue/ (0: none).");
	fprintf(f, PREFIX "queue_oldest_message_age_seconds %lld\n",
		q->oldest > 0 && now > q->oldest ? now - q->oldest : 0);
	family(f, "queue_domain_messages", "gauge",
	       "Messages in queue/ owing a recipient in a destination "
	       "domain: the domains with most, the rest as (other).");
	for (size_t i = 0; i < q->n_domains; i++) {
		fputs(PREFIX "queue_domain_messages{domain=\"", f);
		label_value(f, q->domains[i].name);
		fprintf(f, "\"} %u\n", q->domains[i].messages);
	}
	fprintf(f, PREFIX "queue_domain_messages{domain=\"(other)\"} %u\n",
		q->other.messages);
}

char *prometheus_text(const struct stats *st, const struct queue_summary *q,
		      size_t *len)
{
	char *text = NULL;
	FILE *f = open_memstream(&text, len);

	if (f == NULL)
		return NULL;
	family(f, "start_time_seconds", "gauge",
	       "When the running master started (Unix time).");
	fprintf(f, PREFIX "start_time_seconds %lld\n",
		(long long)stats_started(st));
	counters(f, st);
	if (q != NULL)
		queue_gauges(f, q, (long long)time(NULL));
	if (fclose(f) != 0) {
		free(text);
		return NULL;
	}
	return text;
}
