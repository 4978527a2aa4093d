/*
 * stats: SPOOL/stats and the table that names every counter. The file is
 * a 64-octet header (magic, the number of blocks, counters and the stride
 * of a block, the master's start time and pid) and then one block per
 * process slot, each on its own cache lines so that two processes never
 * write the same line. Each process adds to its own block only, with a
 * relaxed atomic add; a reader's relaxed loads see each counter whole.
 * Nothing here allocates after stats_create/stats_open or logs.
 */
#include "core/stats.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char STATS_MAGIC[16] = "smtpgw-stats 1\n";

enum { HEADER_SIZE = 64, LINE = 8 /* counters per 64-octet line */ };

struct stats_header {
	char magic[16];
	uint32_t slots;
	uint32_t counters;
	uint32_t stride; /* counters per block, a multiple of LINE */
	uint32_t unused;
	int64_t started;
	int64_t pid;
};

_Static_assert(sizeof(struct stats_header) <= HEADER_SIZE,
	       "the header fits before the first block");

struct stats {
	void *map;
	size_t len;
	const struct stats_header *h;
	uint64_t *blocks;
	unsigned slots, stride;
};

/* This process's block; NULL until stats_use_slot. */
static uint64_t *own;

/* ---- the table -------------------------------------------------------- */

#define H_REFUSED "Inbound connections refused at accept, by reason."
#define H_SESSIONS "Inbound sessions by the TLS level the policy asked for."
#define H_SESSIONS_TLS                                                         \
	"Inbound sessions that completed STARTTLS, by the level asked for."
#define H_REJECTS "Inbound commands refused with a 4xx or 5xx reply."
#define H_POLICY "Policy hook calls that failed (error, budget, bad value)."
#define H_RCPTS                                                                \
	"Delivery outcomes per recipient and attempt (expired: bounced "      \
	"after max_queue_lifetime)."
#define H_OUT                                                                  \
	"Outbound SMTP connections by the TLS level asked for and what it "  \
	"had (failed: TLS wanted and not had)."
#define H_DEATHS "Children that died unexpectedly (restarted), by role."

#define REFUSED(i, r)                                                          \
	[STAT_REFUSED + (i)] = {"inbound_refused_total", "reason=\"" r "\"",    \
				H_REFUSED, "refused." r}
#define SESSIONS(i, l)                                                         \
	[STAT_SESSIONS + (i)] = {"inbound_sessions_total", "level=\"" l "\"",   \
				 H_SESSIONS, "sessions." l},                    \
	[STAT_SESSIONS_TLS + (i)] = {"inbound_tls_sessions_total",             \
				     "level=\"" l "\"", H_SESSIONS_TLS,        \
				     "tls_sessions." l}
#define REJECTS(i, s)                                                          \
	[STAT_REJECTS + 2 * (i)] = {"inbound_rejects_total",                   \
				    "stage=\"" s "\",class=\"4xx\"", H_REJECTS, \
				    "rejects." s ".4xx"},                       \
	[STAT_REJECTS + 2 * (i) + 1] = {"inbound_rejects_total",               \
					"stage=\"" s "\",class=\"5xx\"",        \
					H_REJECTS, "rejects." s ".5xx"}
#define POLICY(i, h)                                                           \
	[STAT_POLICY_ERRORS + (i)] = {"policy_errors_total", "hook=\"" h "\"",  \
				      H_POLICY, "policy_errors." h}
#define RCPTS(id, r)                                                           \
	[id] = {"recipients_total", "result=\"" r "\"", H_RCPTS,               \
		"recipients." r}
#define OUT1(l, i, n, t)                                                       \
	[STAT_OUTBOUND + 4 * (l) + (i)] = {"outbound_connections_total",       \
					   "level=\"" n "\",tls=\"" t "\"",    \
					   H_OUT, "outbound." n "." t}
#define OUT4(l, n)                                                             \
	OUT1(l, 0, n, "plaintext"), OUT1(l, 1, n, "tls"),                      \
		OUT1(l, 2, n, "verified"), OUT1(l, 3, n, "failed")
#define DEATHS(i, r)                                                           \
	[STAT_CHILD_DEATHS + (i)] = {"child_deaths_total", "role=\"" r "\"",    \
				     H_DEATHS, "child_deaths." r}

static const struct stat_desc descs[STAT_COUNT] = {
	[STAT_CONNECTIONS] = {"inbound_connections_total", "",
			      "Inbound connections admitted (a session began).",
			      "connections"},
	REFUSED(0, "shutting_down"),
	REFUSED(1, "max_connections"),
	REFUSED(2, "reserved_connections"),
	REFUSED(3, "max_connections_per_ip"),
	REFUSED(4, "client_connection_rate_limit"),
	REFUSED(5, "client_table_full"),
	SESSIONS(0, "none"),
	SESSIONS(1, "may"),
	SESSIONS(2, "encrypt"),
	SESSIONS(3, "verify"),
	[STAT_TLS_FAILED] = {"inbound_tls_failures_total", "",
			     "Inbound STARTTLS handshakes that failed.",
			     "tls_failures"},
	[STAT_RECEIVED] = {"messages_received_total", "",
			   "Messages accepted and queued (250 sent).",
			   "received"},
	REJECTS(0, "helo"),
	REJECTS(1, "mail"),
	REJECTS(2, "rcpt"),
	REJECTS(3, "data"),
	REJECTS(4, "other"),
	POLICY(0, "server_tls"),
	POLICY(1, "client_tls"),
	POLICY(2, "connect"),
	POLICY(3, "helo"),
	POLICY(4, "mail"),
	POLICY(5, "rcpt"),
	RCPTS(STAT_SENT, "sent"),
	RCPTS(STAT_DEFERRED, "deferred"),
	RCPTS(STAT_BOUNCED, "bounced"),
	RCPTS(STAT_EXPIRED, "expired"),
	OUT4(0, "none"),
	OUT4(1, "may"),
	OUT4(2, "encrypt"),
	OUT4(3, "verify"),
	OUT4(4, "dane"),
	OUT4(5, "dane-only"),
	OUT4(6, "sts"),
	[STAT_DOWNGRADES] = {"outbound_tls_downgrades_total", "",
			     "Outbound connections at level may that went on "
			     "in plaintext after STARTTLS was refused or "
			     "failed.",
			     "downgrades"},
	DEATHS(0, "worker"),
	DEATHS(1, "qmgr"),
	DEATHS(2, "metrics"),
};

const struct stat_desc *stat_describe(enum stat_id id)
{
	return id < STAT_COUNT ? &descs[id] : NULL;
}

enum stat_id stat_reject_id(enum stat_stage stage, int code)
{
	if (stage >= STAT_STAGES)
		stage = STAT_STAGE_OTHER;
	return (enum stat_id)(STAT_REJECTS + 2 * stage + (code >= 500));
}

enum stat_id stat_outbound_id(unsigned level, enum stat_tls_had had)
{
	return (enum stat_id)(STAT_OUTBOUND + 4 * (level % 7) +
			      had % STAT_HAD_COUNT);
}

/* ---- the file ---------------------------------------------------------- */

static unsigned stride_for(unsigned counters)
{
	return (counters + LINE - 1) / LINE * LINE;
}

static size_t file_size(unsigned slots, unsigned stride)
{
	return HEADER_SIZE + (size_t)slots * stride * sizeof(uint64_t);
}

static struct stats *wrap(void *map, size_t len)
{
	struct stats *s = calloc(1, sizeof(*s));

	if (s == NULL) {
		munmap(map, len);
		return NULL;
	}
	s->map = map;
	s->len = len;
	s->h = map;
	s->slots = s->h->slots;
	s->stride = s->h->stride;
	s->blocks = (uint64_t *)((char *)map + HEADER_SIZE);
	return s;
}

static void *map_new(const char *tmp, size_t len, char *err, size_t err_len)
{
	int fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	void *map = MAP_FAILED;

	if (fd >= 0 && ftruncate(fd, (off_t)len) == 0)
		map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
			   0);
	if (map == MAP_FAILED)
		snprintf(err, err_len, "%s: %s", tmp, strerror(errno));
	if (fd >= 0)
		close(fd);
	return map == MAP_FAILED ? NULL : map;
}

struct stats *stats_create(const char *spool, unsigned slots, char *err,
			   size_t err_len)
{
	char path[4096], tmp[4200];
	unsigned stride = stride_for(STAT_COUNT);
	size_t len = file_size(slots, stride);
	struct stats_header *h;
	void *map;

	snprintf(path, sizeof(path), "%s/stats", spool);
	snprintf(tmp, sizeof(tmp), "%s.new", path);
	if ((map = map_new(tmp, len, err, err_len)) == NULL)
		return NULL;
	h = map;
	memcpy(h->magic, STATS_MAGIC, sizeof(h->magic));
	h->slots = slots;
	h->counters = STAT_COUNT;
	h->stride = stride;
	h->started = (int64_t)time(NULL);
	h->pid = (int64_t)getpid();
	if (rename(tmp, path) != 0) {
		snprintf(err, err_len, "%s: %s", path, strerror(errno));
		unlink(tmp);
		munmap(map, len);
		return NULL;
	}
	return wrap(map, len);
}

/* The header says what the file must be: checked against its size and
 * this build's counters before anything is read past it. */
static bool header_ok(const struct stats_header *h, size_t len)
{
	return memcmp(h->magic, STATS_MAGIC, sizeof(h->magic)) == 0 &&
	       h->counters == STAT_COUNT &&
	       h->stride == stride_for(STAT_COUNT) &&
	       h->slots > 0 && h->slots <= 1024 &&
	       file_size(h->slots, h->stride) == len;
}

struct stats *stats_open(const char *spool, char *err, size_t err_len)
{
	char path[4096];
	struct stat st;
	void *map = MAP_FAILED;
	int fd;

	snprintf(path, sizeof(path), "%s/stats", spool);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) != 0) {
		int saved = errno;

		snprintf(err, err_len, "%s: %s", path, strerror(saved));
		if (fd >= 0)
			close(fd);
		errno = saved;
		return NULL;
	}
	if ((size_t)st.st_size >= HEADER_SIZE && st.st_size < (1 << 24))
		map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd,
			   0);
	close(fd);
	if (map == MAP_FAILED || !header_ok(map, (size_t)st.st_size)) {
		snprintf(err, err_len, "%s: not a stats file of this smtpgw "
			 "version", path);
		if (map != MAP_FAILED)
			munmap(map, (size_t)st.st_size);
		errno = EINVAL;
		return NULL;
	}
	return wrap(map, (size_t)st.st_size);
}

void stats_close(struct stats *s)
{
	if (s == NULL)
		return;
	if (own != NULL && (void *)own >= s->map &&
	    (char *)own < (char *)s->map + s->len)
		own = NULL;
	munmap(s->map, s->len);
	free(s);
}

void stats_use_slot(struct stats *s, unsigned slot)
{
	own = NULL;
	if (s != NULL && slot < s->slots)
		own = s->blocks + (size_t)slot * s->stride;
}

void stats_add(enum stat_id id)
{
	if (own != NULL && id < STAT_COUNT)
		__atomic_fetch_add(&own[id], 1, __ATOMIC_RELAXED);
}

uint64_t stats_total(const struct stats *s, enum stat_id id)
{
	uint64_t sum = 0;

	if (s == NULL || id >= STAT_COUNT)
		return 0;
	for (unsigned i = 0; i < s->slots; i++)
		sum += __atomic_load_n(&s->blocks[(size_t)i * s->stride + id],
				       __ATOMIC_RELAXED);
	return sum;
}

int64_t stats_started(const struct stats *s)
{
	return s->h->started;
}

long stats_master_pid(const struct stats *s)
{
	return (long)s->h->pid;
}
