/*
 * stats: the gateway's counters, shared by every process through one
 * file, SPOOL/stats, that the master makes and maps (MAP_SHARED) before it
 * forks. The file holds one block of counters per process slot; a process
 * adds only to its own block (one writer per block: no lock), readers sum
 * the blocks. A child restarted in a slot goes on adding to that slot's
 * block, so a total never goes back while the master lives; a new master
 * starts the file anew. Readers (the `stats` command, the metrics child)
 * check the header and the size before they trust a number.
 *
 * It knows each counter's name and labels (one table, for every output)
 * and nothing of what is counted: the callers bump. It must not log.
 */
#ifndef SMTPGW_STATS_H
#define SMTPGW_STATS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The counters. Groups whose members are indexed by a level, a hook, a
 * reason or a stage keep the order of the enum they mirror (the callers
 * add the index to the group's first member). */
enum stat_id {
	STAT_CONNECTIONS,
	/* refused at accept, by reason (inbound/listener.c's order:
	 * shutting down, then the limits) */
	STAT_REFUSED,
	STAT_REFUSED_LAST = STAT_REFUSED + 5,
	/* sessions by the inbound level asked (enum tls_level) ... */
	STAT_SESSIONS,
	STAT_SESSIONS_LAST = STAT_SESSIONS + 3,
	/* ... and those of them that completed STARTTLS */
	STAT_SESSIONS_TLS,
	STAT_SESSIONS_TLS_LAST = STAT_SESSIONS_TLS + 3,
	STAT_TLS_FAILED, /* inbound handshakes that failed */
	STAT_RECEIVED,	 /* messages queued (250) */
	/* refused commands: stage (enum stat_stage) × 4xx/5xx */
	STAT_REJECTS,
	STAT_REJECTS_LAST = STAT_REJECTS + 9,
	/* policy failures by hook (enum policy_hook) */
	STAT_POLICY_ERRORS,
	STAT_POLICY_ERRORS_LAST = STAT_POLICY_ERRORS + 5,
	/* delivery outcomes per recipient and attempt */
	STAT_SENT,
	STAT_DEFERRED,
	STAT_BOUNCED,
	STAT_EXPIRED,
	/* outbound connections: level asked (enum tls_level: none, may,
	 * encrypt, verify, dane, dane-only, sts) × what was had (enum
	 * stat_tls_had) */
	STAT_OUTBOUND,
	STAT_OUTBOUND_LAST = STAT_OUTBOUND + 27,
	STAT_DOWNGRADES, /* may: went on in plaintext */
	/* children that died unexpectedly, by role (enum stat_role) */
	STAT_CHILD_DEATHS,
	STAT_CHILD_DEATHS_LAST = STAT_CHILD_DEATHS + 2,
	STAT_COUNT,
};

enum stat_stage {
	STAT_STAGE_HELO,
	STAT_STAGE_MAIL,
	STAT_STAGE_RCPT,
	STAT_STAGE_DATA,
	STAT_STAGE_OTHER,
	STAT_STAGES,
};

enum stat_tls_had {
	STAT_HAD_PLAINTEXT,
	STAT_HAD_TLS,
	STAT_HAD_VERIFIED,
	STAT_HAD_FAILED, /* the level wanted TLS and did not get it */
	STAT_HAD_COUNT,
};

enum stat_role { STAT_ROLE_WORKER, STAT_ROLE_QMGR, STAT_ROLE_METRICS };

/* One counter's description: the Prometheus family (without the
 * smtpgw_ prefix), its labels as they go between the braces, the family's
 * help text, and a short key for the JSON and the table. */
struct stat_desc {
	const char *family;
	const char *labels;
	const char *help;
	const char *key;
};

const struct stat_desc *stat_describe(enum stat_id id);

/* A mapped stats file. */
struct stats;

/* Master, before any fork: SPOOL/stats made anew (written under a
 * temporary name and renamed) with `slots` blocks, mapped read-write.
 * NULL and err on failure. */
struct stats *stats_create(const char *spool, unsigned slots, char *err,
			   size_t err_len);
/* A reader: SPOOL/stats mapped read-only. NULL and err (ENOENT: no
 * gateway ever ran on this spool) when it is missing or not one. */
struct stats *stats_open(const char *spool, char *err, size_t err_len);
void stats_close(struct stats *s);

/* From now on this process adds to block `slot` of `s`. Until a process
 * calls it (the CLI, a test driver), stats_add does nothing. */
void stats_use_slot(struct stats *s, unsigned slot);
void stats_add(enum stat_id id);

/* A counter summed over every block. */
uint64_t stats_total(const struct stats *s, enum stat_id id);
/* When the master that made the file started (Unix time), its pid. */
int64_t stats_started(const struct stats *s);
long stats_master_pid(const struct stats *s);

/* The bumps' helpers: the index of a stage and a reply code's class. */
enum stat_id stat_reject_id(enum stat_stage stage, int code);
enum stat_id stat_outbound_id(unsigned level, enum stat_tls_had had);

#endif
