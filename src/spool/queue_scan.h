/*
 * queue_scan: qshape's counts. An incremental scan of the spool that
 * counts the messages of queue/ by state (active, deferred), their
 * recipients still to deliver, and the messages owing a recipient to each
 * destination domain by age, plus the files of hold/ and corrupt/. The
 * scan owns its directory handles and its domain table from
 * queue_scan_begin until queue_scan_end, which frees them and hands back
 * the summary (the caller's: queue_summary_free). Reads only: it must
 * never write, move or lock anything in the spool, and one step must
 * never read more than its budget of directory entries, so that an event
 * loop driving it keeps turning.
 */
#ifndef SMTPGW_QUEUE_SCAN_H
#define SMTPGW_QUEUE_SCAN_H

#include <stdbool.h>
#include <stddef.h>

enum {
	QSCAN_BUCKETS = 10,	   /* age columns: 9 bounds, then "older" */
	QSCAN_DOMAINS_MAX = 4096, /* domains told apart; the rest: (other) */
	QSCAN_NAME_MAX = 255	   /* a domain name's length (RFC 1035) */
};

/* The upper bounds of the age columns in minutes, qshape's: a message
 * younger than qscan_bucket_minutes[b] (and not younger than the bound
 * before) counts in column b; the last column holds the older ones. */
extern const unsigned qscan_bucket_minutes[QSCAN_BUCKETS - 1];

/* One row of the table: a destination domain (lower case), "TOTAL" or
 * "(other)". A message owing recipients to several domains counts once
 * in each. */
struct qscan_domain {
	char name[QSCAN_NAME_MAX + 1];
	unsigned messages;   /* messages owing it a recipient */
	unsigned recipients; /* the recipients they owe it */
	unsigned age[QSCAN_BUCKETS]; /* those messages by age */
};

struct queue_summary {
	unsigned active;     /* queue/: no recipient deferred yet */
	unsigned deferred;   /* queue/: a recipient still owed was deferred */
	unsigned hold;	     /* the messages of hold/ */
	unsigned corrupt;    /* the files of corrupt/ */
	unsigned unreadable; /* queue/ files not readable as queue files */
	long long oldest;    /* the oldest arrival in queue/ (0: none) */
	struct qscan_domain total; /* every message of queue/ */
	struct qscan_domain *domains; /* the top domains, most messages first
					 (then by name) */
	size_t n_domains;
	struct qscan_domain other; /* every domain not in `domains` */
};

struct queue_scan;

/* Opens SPOOL/queue for a scan at time `now` (Unix seconds); NULL with a
 * reason when it cannot be read. */
struct queue_scan *queue_scan_begin(const char *spool_dir, double now,
				    char *err, size_t err_len);
/* Reads at most `budget` directory entries (each a queue file and its
 * state file, in queue/); true when the scan is done. */
bool queue_scan_step(struct queue_scan *scan, unsigned budget);
/* Frees the scan (done or not: a scan ended early counts what it read)
 * and returns its summary with the top_n domains (NULL when out of
 * memory). */
struct queue_summary *queue_scan_end(struct queue_scan *scan, size_t top_n);
/* NULL is fine. */
void queue_summary_free(struct queue_summary *q);

#endif
