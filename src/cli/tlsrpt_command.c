/*
 * tlsrpt_command: `smtpgw -c FILE tlsrpt [--date D] [--domain D] [--send]`
 * (README "TLS-RPT"). Without --send it reads SPOOL/tlsrpt/DATE (every
 * count of the day, reported or not) and prints the JSON report the
 * gateway would send, without sending anything or touching the spool; with
 * --send it leaves a request in the spool and signals the running gateway
 * (SIGUSR1, as `queue flush`), whose queue manager reports that day now.
 * It does no DNS and queues nothing itself.
 */
#include "cli/tlsrpt_command.h"

#include "cli/commands.h"
#include "proto/tlsrpt_report.h"
#include "spool/tlsrpt_store.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

bool tlsrpt_parse_args(int argc, char **argv, struct tlsrpt_options *o)
{
	long long t;

	*o = (struct tlsrpt_options){0};
	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--send") == 0)
			o->send = true;
		else if (strcmp(argv[i], "--date") == 0 && i + 1 < argc)
			o->date = argv[++i];
		else if (strcmp(argv[i], "--domain") == 0 && i + 1 < argc)
			o->domain = argv[++i];
		else
			return false;
	}
	return !(o->send && o->domain != NULL) &&
	       (o->date == NULL || tlsrpt_date_start(o->date, &t)) &&
	       (o->domain == NULL || tlsrpt_store_domain_ok(o->domain));
}

/* One domain's report of every count of the day; false when it has none. */
static bool print_one(const struct config *cfg, const char *date,
		      const char *domain, bool first)
{
	size_t n, dropped, len;
	struct tlsrpt_entry *e = tlsrpt_store_read(cfg->spool, date, domain,
						   TLSRPT_ALL, &n, &dropped);
	struct tlsrpt_meta m = {
		.organization = cfg->tlsrpt_organization
					? cfg->tlsrpt_organization
					: cfg->hostname,
		.contact = cfg->tlsrpt_contact ? cfg->tlsrpt_contact
					       : cfg->postmaster,
		.report_id = "(not sent)"};
	char *json;

	if (e == NULL)
		return false;
	tlsrpt_date_start(date, &m.begin);
	m.end = m.begin + 86399;
	json = tlsrpt_report_json(&m, e, n, &len);
	free(e);
	if (dropped > 0)
		fprintf(stderr, "%s/tlsrpt/%s/%s: %zu lines could not be read "
			"or did not fit\n", cfg->spool, date, domain, dropped);
	if (json == NULL)
		return false;
	fputs(first ? "" : ",\n", stdout);
	fwrite(json, 1, len - (len > 0 && json[len - 1] == '\n'), stdout);
	free(json);
	return true;
}

static int print_reports(const struct config *cfg, const char *date,
			 const char *domain)
{
	size_t n = 0, printed = 0;
	char **domains = NULL;

	if (domain != NULL) {
		if (print_one(cfg, date, domain, true)) {
			putchar('\n');
			return 0;
		}
		fprintf(stderr, "%s/tlsrpt/%s/%s: no counts\n", cfg->spool,
			date, domain);
		return 1;
	}
	domains = tlsrpt_store_domains(cfg->spool, date, false, &n);
	fputs("[\n", stdout);
	for (size_t i = 0; i < n; i++)
		printed += print_one(cfg, date, domains[i], printed == 0);
	fputs(printed > 0 ? "\n]\n" : "]\n", stdout);
	tlsrpt_store_free_list(domains, n);
	return 0;
}

static int request_send(const struct config *cfg, const char *date)
{
	if (!cfg->tlsrpt_enable) {
		fprintf(stderr, "%s: [tlsrpt] enable is no: nothing is counted "
			"or sent\n", cfg->path);
		return 1;
	}
	if (!tlsrpt_store_request(cfg->spool, date)) {
		fprintf(stderr, "%s/tlsrpt: cannot ask for %s: %s\n",
			cfg->spool, date,
			errno == ENOENT ? "nothing was ever recorded"
					: strerror(errno));
		return 1;
	}
	return signal_gateway(cfg, SIGUSR1, "SIGUSR1", "tlsrpt --send");
}

int tlsrpt_command(const struct config *cfg, const struct tlsrpt_options *o)
{
	char today[TLSRPT_DATE_LEN + 1];
	const char *date = o->date;

	if (date == NULL) {
		tlsrpt_date_of((long long)time(NULL), today);
		date = today;
	}
	if (o->send)
		return request_send(cfg, date);
	return print_reports(cfg, date, o->domain);
}
