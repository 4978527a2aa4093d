/*
 * Unit checks of src/spool/queue_scan.c on a spool made in a temporary
 * directory: the domain table stops at QSCAN_DOMAINS_MAX (the rest count
 * as (other)), the top_n cut folds the others into (other), a step reads
 * no more than its budget, a scan ended early counts what it read, and a
 * spool without queue/ is an error. TAP output.
 */
#include "spool/queue_scan.h"

#include "tap.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum { MESSAGES = QSCAN_DOMAINS_MAX + 4 };

static char spool[64];

/* One message to x@dN.example, arrived a minute ago. */
static bool write_message(unsigned n, long long now)
{
	char path[160], text[512];
	int len = snprintf(text, sizeof(text),
			   "smtpgw-queue-file: 1\nid: 00000000000d%04x\n"
			   "arrival: %lld\nclient: 127.0.0.1\nhelo: c.example\n"
			   "sender: <s@origin.example>\nrcpt: <x@d%u.example>\n"
			   "body: unspecified\nsmtputf8: 0\n\nSubject: x\r\n"
			   "\r\nbody\r\n",
			   n, now - 60, n);
	int fd;
	bool ok;

	snprintf(path, sizeof(path), "%s/queue/00000000000d%04x", spool, n);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0)
		return false;
	ok = write(fd, text, (size_t)len) == len;
	close(fd);
	return ok;
}

static bool make_spool(long long now)
{
	char path[96];

	/* tmpfs when there is one: thousands of creates on a journaled disk
	 * take seconds */
	snprintf(spool, sizeof(spool), "/dev/shm/test_queue_scan.XXXXXX");
	if (mkdtemp(spool) == NULL) {
		snprintf(spool, sizeof(spool), "/tmp/test_queue_scan.XXXXXX");
		if (mkdtemp(spool) == NULL)
			return false;
	}
	snprintf(path, sizeof(path), "%s/queue", spool);
	if (mkdir(path, 0700) != 0)
		return false;
	for (unsigned i = 0; i < MESSAGES; i++)
		if (!write_message(i, now))
			return false;
	return true;
}

static void remove_spool(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", spool);
	if (system(cmd) != 0)
		fprintf(stderr, "# could not remove %s\n", spool);
}

/* A whole scan with this budget: its summary, and the steps it took. */
static struct queue_summary *scan(unsigned budget, size_t top_n,
				  unsigned *steps)
{
	char err[300];
	struct queue_scan *s = queue_scan_begin(spool, (double)time(NULL), err,
						sizeof(err));

	*steps = 0;
	if (s == NULL) {
		printf("# %s\n", err);
		return NULL;
	}
	while (++*steps < 1000000 && !queue_scan_step(s, budget))
		;
	return queue_scan_end(s, top_n);
}

static void bounded_table(void)
{
	unsigned steps;
	struct queue_summary *q = scan(64, SIZE_MAX, &steps);

	tap(q != NULL, "a scan of %u messages ends", MESSAGES);
	if (q == NULL)
		return;
	tap(q->total.messages == MESSAGES && q->active == MESSAGES,
	    "every message counted (%u, %u active)", q->total.messages,
	    q->active);
	tap(q->n_domains == QSCAN_DOMAINS_MAX,
	    "%u domains told apart at most (%zu)", QSCAN_DOMAINS_MAX,
	    q->n_domains);
	tap(q->other.messages == MESSAGES - QSCAN_DOMAINS_MAX &&
		    q->other.recipients == MESSAGES - QSCAN_DOMAINS_MAX &&
		    strcmp(q->other.name, "(other)") == 0,
	    "the rest are (other) (%u messages)", q->other.messages);
	tap(steps >= MESSAGES / 64, "budget 64: %u steps", steps);
	queue_summary_free(q);
}

/* 100 steps of one entry, then the end with the top 10: a step reads
 * one entry at most, and a scan ended early counts what it read. */
static void partial_top_n(void)
{
	char err[300];
	struct queue_scan *s =
		queue_scan_begin(spool, (double)time(NULL), err, sizeof(err));
	struct queue_summary *q;
	bool done = false, sorted = true;
	unsigned sum = 0;

	for (int i = 0; s != NULL && i < 100; i++)
		done |= queue_scan_step(s, 1);
	q = s != NULL ? queue_scan_end(s, 10) : NULL;
	if (q == NULL) {
		tap(false, "a scan ended early: %s", s == NULL ? err : "no summary");
		return;
	}
	tap(!done && q->total.messages <= 100 && q->total.messages >= 98,
	    "100 steps of budget 1 read 100 entries (%u messages)",
	    q->total.messages);
	for (size_t i = 0; i < q->n_domains; i++) {
		sum += q->domains[i].messages;
		if (i > 0 && strcmp(q->domains[i - 1].name,
				    q->domains[i].name) >= 0)
			sorted = false;
	}
	tap(q->n_domains == 10 && sum == 10, "top 10: %zu domains",
	    q->n_domains);
	tap(q->other.messages == q->total.messages - 10,
	    "the others fold into (other) (%u)", q->other.messages);
	tap(sorted, "equal counts go by name");
	queue_summary_free(q);
}

static void no_queue_dir(void)
{
	char err[300] = "";
	struct queue_scan *s =
		queue_scan_begin("/nonexistent/spool", 0, err, sizeof(err));

	tap(s == NULL && strstr(err, "/nonexistent/spool/queue: ") != NULL,
	    "a spool without queue/: %s", err);
	if (s != NULL)
		queue_summary_free(queue_scan_end(s, 0));
}

int main(void)
{
	if (!make_spool((long long)time(NULL))) {
		perror("test_queue_scan: making the spool");
		remove_spool();
		return 1;
	}
	bounded_table();
	partial_top_n();
	no_queue_dir();
	remove_spool();
	return tap_done();
}
