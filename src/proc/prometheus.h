/*
 * prometheus: the counters of SPOOL/stats and a queue summary written in
 * Prometheus's text exposition format (version 0.0.4): a HELP and a TYPE
 * line per family, then its series. Formatting only: the caller reads the
 * counters and scans the queue.
 */
#ifndef SMTPGW_PROMETHEUS_H
#define SMTPGW_PROMETHEUS_H

#include <stddef.h>

struct stats;
struct queue_summary;

/* The whole text (malloc'd, *len octets), or NULL when out of memory.
 * Without a summary (none could be made in time) the queue families are
 * left out. */
char *prometheus_text(const struct stats *st, const struct queue_summary *q,
		      size_t *len);

#endif
