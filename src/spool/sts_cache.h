/*
 * sts_cache: SPOOL/sts/, one file per policy domain holding the MTA-STS
 * policy last fetched for it (proto/sts.h's cache header, then the policy
 * file as it came). A cache, not a record: a file is written under a
 * temporary name and renamed over the old one, but never synced, so the
 * event loop never waits for the disk; after a crash a file may be older
 * than the last fetch, or gone, and one that does not read back counts as
 * none (the policy is fetched again). Files are named by the domain, which
 * must be a DNS name (no "/", no leading dot). What a file says is
 * proto/sts.c's to read; nothing here fetches or decides anything.
 */
#ifndef SMTPGW_STS_CACHE_H
#define SMTPGW_STS_CACHE_H

#include <stdbool.h>
#include <stddef.h>

/* Makes SPOOL/sts (0700) when it is missing. */
bool sts_cache_prepare(const char *spool, char *err, size_t err_len);

/* The file of `domain` into buf (at most cap octets); false when there is
 * none, it is larger, or it cannot be read. */
bool sts_cache_read(const char *spool, const char *domain, char *buf,
		    size_t cap, size_t *len);

/* Replaces the file of `domain` (temporary file, then rename). */
bool sts_cache_write(const char *spool, const char *domain, const char *data,
		     size_t len);

void sts_cache_remove(const char *spool, const char *domain);

struct sts_policy;

/* The cached policy of `domain` read and parsed (proto/sts.h), with its
 * id (id_len > STS_ID_MAX) and when it was fetched; false when there is
 * none that reads back, or it expired before `now` (then `*expired`). */
bool sts_cache_load(const char *spool, const char *domain, double now,
		    struct sts_policy *p, char *id, size_t id_len,
		    double *fetched, bool *expired);

#endif
