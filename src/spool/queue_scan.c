/*
 * queue_scan: the scan behind `stats` and the metrics endpoint. A state
 * machine over the spool's directories (queue/, then hold/, then
 * corrupt/), one directory entry per unit of budget. Each queue file's
 * envelope and state file are read and closed within its entry: between
 * steps the scan holds one directory handle, the state directory and its
 * counts. The domain table is bounded (QSCAN_DOMAINS_MAX entries, found
 * through a fixed hash index); domains beyond it are counted as (other).
 * Must not write the spool, nor keep a queue file open between steps.
 */
#include "spool/queue_scan.h"

#include "proto/envelope.h"
#include "spool/queue.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const unsigned qscan_bucket_minutes[QSCAN_BUCKETS - 1] = {
	5, 10, 20, 40, 80, 160, 320, 640, 1280};

/* Twice the table, so that a probe ends soon. */
enum { HASH_SLOTS = 2 * QSCAN_DOMAINS_MAX };

enum scan_phase { QS_QUEUE, QS_HOLD, QS_CORRUPT, QS_DONE };

/* A row being counted: `seen` is the number of the last message counted
 * in it, so that a message counts once however many recipients it owes. */
struct row {
	struct qscan_domain d;
	unsigned seen;
};

struct queue_scan {
	enum scan_phase phase;
	char *spool;
	double now;
	DIR *dir;     /* the phase's directory (NULL: it has none) */
	int state_fd; /* state/ (-1: every recipient counts as pending) */
	unsigned serial; /* messages read so far: the current one's number */
	struct queue_summary sum; /* the counters (no domains yet) */
	struct row other;	  /* domains beyond the table */
	struct row *rows;	  /* the table, n_rows used */
	size_t n_rows, cap_rows;
	uint16_t index[HASH_SLOTS]; /* row + 1; 0: a free slot */
};

/* ---- directories ------------------------------------------------------ */

static const char *const phase_dirs[] = {
	[QS_QUEUE] = "queue", [QS_HOLD] = "hold", [QS_CORRUPT] = "corrupt"};

static DIR *open_dir(const char *spool, const char *name)
{
	char path[4096];
	int n = snprintf(path, sizeof(path), "%s/%s", spool, name);

	if (n < 0 || (size_t)n >= sizeof(path)) {
		errno = ENAMETOOLONG;
		return NULL;
	}
	return opendir(path);
}

/* The next phase's directory; a missing hold/ or corrupt/ has no files. */
static void next_phase(struct queue_scan *s)
{
	if (s->dir != NULL)
		closedir(s->dir);
	s->dir = NULL;
	if (s->phase != QS_DONE)
		s->phase++;
	if (s->phase != QS_DONE)
		s->dir = open_dir(s->spool, phase_dirs[s->phase]);
}

/* ---- the domain table -------------------------------------------------- */

static uint32_t hash(const char *name)
{
	uint32_t h = 2166136261u; /* FNV-1a */

	for (; *name != '\0'; name++)
		h = (h ^ (unsigned char)*name) * 16777619u;
	return h;
}

static struct row *add_row(struct queue_scan *s, const char *name)
{
	if (s->n_rows == s->cap_rows) {
		size_t cap = s->cap_rows ? s->cap_rows * 2 : 64;
		struct row *grown;

		if (cap > QSCAN_DOMAINS_MAX)
			cap = QSCAN_DOMAINS_MAX;
		grown = realloc(s->rows, cap * sizeof(*grown));
		if (grown == NULL)
			return NULL;
		s->rows = grown;
		s->cap_rows = cap;
	}
	memset(&s->rows[s->n_rows], 0, sizeof(s->rows[0]));
	strcpy(s->rows[s->n_rows].d.name, name);
	return &s->rows[s->n_rows++];
}

/* The row of `name` (lower case, at most QSCAN_NAME_MAX), made if the
 * table has room, else (other). */
static struct row *find_row(struct queue_scan *s, const char *name)
{
	size_t slot = hash(name) % HASH_SLOTS;
	struct row *r;

	for (; s->index[slot] != 0; slot = (slot + 1) % HASH_SLOTS) {
		r = &s->rows[s->index[slot] - 1];
		if (strcmp(r->d.name, name) == 0)
			return r;
	}
	if (s->n_rows >= QSCAN_DOMAINS_MAX || (r = add_row(s, name)) == NULL)
		return &s->other;
	s->index[slot] = (uint16_t)s->n_rows;
	return r;
}

/* The domain of a recipient, lower case and bounded. */
static void domain_of(const char *rcpt, char out[QSCAN_NAME_MAX + 1])
{
	const char *at = strrchr(rcpt, '@');
	const char *d = at != NULL ? at + 1 : rcpt;
	size_t i;

	for (i = 0; i < QSCAN_NAME_MAX && d[i] != '\0'; i++)
		out[i] = (char)tolower((unsigned char)d[i]);
	out[i] = '\0';
}

static void count_in(struct row *r, unsigned serial, int bucket)
{
	r->d.recipients++;
	if (r->seen == serial)
		return;
	r->seen = serial;
	r->d.messages++;
	r->d.age[bucket]++;
}

/* ---- one queue file ---------------------------------------------------- */

static int age_bucket(double now, long long arrival)
{
	double minutes = (now - (double)arrival) / 60;
	int b = 0;

	while (b < QSCAN_BUCKETS - 1 && minutes >= qscan_bucket_minutes[b])
		b++;
	return b;
}

/* What the message owes: counted in its domains' rows and the totals. */
static void count_rcpts(struct queue_scan *s, const struct envelope *e,
			const struct rcpt_records *r, int bucket)
{
	bool deferred = false;
	char domain[QSCAN_NAME_MAX + 1];

	for (size_t i = 0; i < e->n_rcpts; i++) {
		if (r->states[i] != RCPT_PENDING)
			continue;
		deferred |= r->attempts[i] > 0;
		s->sum.total.recipients++;
		domain_of(e->rcpts[i], domain);
		count_in(find_row(s, domain), s->serial, bucket);
	}
	if (deferred)
		s->sum.deferred++;
	else
		s->sum.active++;
}

static void count_message(struct queue_scan *s, const char *qid)
{
	struct envelope e;
	struct queued_message m;
	struct rcpt_records r = {0};
	char err[300];
	int bucket;

	if (!queue_id_valid(qid)) {
		s->sum.unreadable++;
		return;
	}
	if (!queue_open_message_at(dirfd(s->dir), "queue", qid, &e, &m, err,
				   sizeof(err))) {
		if (errno != ENOENT) /* gone meanwhile: delivered */
			s->sum.unreadable++;
		return;
	}
	close(m.fd);
	r.states = calloc(e.n_rcpts, sizeof(*r.states));
	r.attempts = calloc(e.n_rcpts, sizeof(*r.attempts));
	if (r.states != NULL && r.attempts != NULL) {
		queue_state_load_at(s->state_fd, qid, &r, e.n_rcpts);
		bucket = age_bucket(s->now, e.arrival);
		s->serial++;
		count_rcpts(s, &e, &r, bucket);
		s->sum.total.messages++;
		s->sum.total.age[bucket]++;
		if (s->sum.oldest == 0 || e.arrival < s->sum.oldest)
			s->sum.oldest = e.arrival;
	} else {
		s->sum.unreadable++;
	}
	free(r.states);
	free(r.attempts);
	envelope_free(&e);
}

/* ---- the scan ------------------------------------------------------------ */

struct queue_scan *queue_scan_begin(const char *spool_dir, double now,
				    char *err, size_t err_len)
{
	struct queue_scan *s = calloc(1, sizeof(*s));
	char path[4096];

	if (s == NULL || (s->spool = strdup(spool_dir)) == NULL) {
		snprintf(err, err_len, "out of memory");
		free(s);
		return NULL;
	}
	s->now = now;
	s->phase = QS_QUEUE;
	s->dir = open_dir(spool_dir, "queue");
	if (s->dir == NULL) {
		snprintf(err, err_len, "%s/queue: %s", spool_dir,
			 strerror(errno));
		free(s->spool);
		free(s);
		return NULL;
	}
	snprintf(path, sizeof(path), "%s/state", spool_dir);
	s->state_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	return s;
}

bool queue_scan_step(struct queue_scan *s, unsigned budget)
{
	while (budget > 0 && s->phase != QS_DONE) {
		struct dirent *e = s->dir != NULL ? readdir(s->dir) : NULL;

		if (e == NULL) {
			next_phase(s);
			continue;
		}
		budget--;
		if (e->d_name[0] == '.')
			continue;
		switch (s->phase) {
		case QS_QUEUE:
			count_message(s, e->d_name);
			break;
		case QS_HOLD:
			s->sum.hold += queue_id_valid(e->d_name);
			break;
		case QS_CORRUPT:
			s->sum.corrupt++;
			break;
		case QS_DONE:
			break;
		}
	}
	return s->phase == QS_DONE;
}

/* Most messages first, then by name. */
static int by_messages(const void *a, const void *b)
{
	const struct row *x = a, *y = b;

	if (x->d.messages != y->d.messages)
		return x->d.messages > y->d.messages ? -1 : 1;
	return strcmp(x->d.name, y->d.name);
}

static void fold(struct qscan_domain *into, const struct qscan_domain *d)
{
	into->messages += d->messages;
	into->recipients += d->recipients;
	for (int b = 0; b < QSCAN_BUCKETS; b++)
		into->age[b] += d->age[b];
}

/* The top_n rows become the summary's domains, the others fold into
 * (other). */
static void take_domains(struct queue_scan *s, struct queue_summary *q,
			 size_t top_n)
{
	size_t n = top_n < s->n_rows ? top_n : s->n_rows;

	if (s->n_rows > 1)
		qsort(s->rows, s->n_rows, sizeof(*s->rows), by_messages);
	q->domains = n > 0 ? calloc(n, sizeof(*q->domains)) : NULL;
	if (q->domains == NULL)
		n = 0;
	for (size_t i = 0; i < s->n_rows; i++) {
		if (i < n)
			q->domains[i] = s->rows[i].d;
		else
			fold(&q->other, &s->rows[i].d);
	}
	q->n_domains = n;
}

static void scan_free(struct queue_scan *s)
{
	if (s->dir != NULL)
		closedir(s->dir);
	if (s->state_fd >= 0)
		close(s->state_fd);
	free(s->rows);
	free(s->spool);
	free(s);
}

struct queue_summary *queue_scan_end(struct queue_scan *s, size_t top_n)
{
	struct queue_summary *q = malloc(sizeof(*q));

	if (q != NULL) {
		*q = s->sum;
		q->other = s->other.d;
		take_domains(s, q, top_n);
		snprintf(q->total.name, sizeof(q->total.name), "TOTAL");
		snprintf(q->other.name, sizeof(q->other.name), "(other)");
	}
	scan_free(s);
	return q;
}

void queue_summary_free(struct queue_summary *q)
{
	if (q == NULL)
		return;
	free(q->domains);
	free(q);
}
