/*
 * tlsrpt_store: the spool's TLS-RPT records (README "TLS-RPT"), as files:
 *
 *   SPOOL/tlsrpt/DATE/DOMAIN       counts not reported yet: record lines
 *                                  (proto/tlsrpt.h), appended, never synced
 *   SPOOL/tlsrpt/DATE/DOMAIN.sent  counts already reported (or with nobody
 *                                  to report to)
 *   SPOOL/tlsrpt/send-DATE         `tlsrpt --send`: the running queue
 *                                  manager reports DATE now
 *
 * DATE is YYYY-MM-DD (UTC), DOMAIN a lower-case policy domain. This file
 * owns those paths and their reading and writing; it decides nothing about
 * when to report. Every call is a few small file operations: the queue
 * manager calls them from its loop (no fsync anywhere here), the `tlsrpt`
 * command without a running queue.
 */
#ifndef SMTPGW_TLSRPT_STORE_H
#define SMTPGW_TLSRPT_STORE_H

#include "proto/tlsrpt.h"

#include <stdbool.h>
#include <stddef.h>

enum {
	TLSRPT_DATE_LEN = 10,	       /* "YYYY-MM-DD" */
	TLSRPT_MAX_KEYS = 1024,	       /* distinct entries read per file */
	TLSRPT_FILE_MAX = 64 << 20,    /* octets of one DOMAIN file */
};

/* "YYYY-MM-DD" of a UTC time (seconds) into out[TLSRPT_DATE_LEN + 1]. */
void tlsrpt_date_of(long long t, char *out);
/* The UTC midnight that starts `date`; false when it is not a date. */
bool tlsrpt_date_start(const char *date, long long *out);

/* Appends `len` octets (whole lines) to DATE/DOMAIN, making the folders and
 * the file (its first line TLSRPT_FILE_MAGIC) as needed. False with errno
 * when it could not, or the file is at TLSRPT_FILE_MAX already (EFBIG). */
bool tlsrpt_store_append(const char *spool, const char *date,
			 const char *domain, const char *lines, size_t len);

/* The entries of DATE/DOMAIN (unsent), of DATE/DOMAIN.sent (sent), or of
 * both, merged (at most TLSRPT_MAX_KEYS keys: what does not fit is
 * counted in *dropped, as are lines that do not parse, such as a line
 * torn by a crash). malloc'd; NULL with *n = 0 when there is none (errno
 * ENOENT) or it cannot be read. */
enum tlsrpt_which { TLSRPT_UNSENT, TLSRPT_SENT, TLSRPT_ALL };
struct tlsrpt_entry *tlsrpt_store_read(const char *spool, const char *date,
				       const char *domain,
				       enum tlsrpt_which which, size_t *n,
				       size_t *dropped);

/* Sorted, malloc'd lists of malloc'd strings (free with
 * tlsrpt_store_free_list): every DATE folder; the domains of one DATE
 * (with unsent records only, or every one). NULL with *n = 0 if none. */
char **tlsrpt_store_days(const char *spool, size_t *n);
char **tlsrpt_store_domains(const char *spool, const char *date,
			    bool unsent_only, size_t *n);
void tlsrpt_store_free_list(char **list, size_t n);

/* DATE/DOMAIN's counts are reported: its lines join DOMAIN.sent. */
bool tlsrpt_store_mark_sent(const char *spool, const char *date,
			    const char *domain);

/* Removes the DATE folders before `oldest` (a date). */
void tlsrpt_store_prune(const char *spool, const char *oldest);

/* `tlsrpt --send`: asks for DATE to be reported now. False with errno
 * (ENOENT: SPOOL/tlsrpt does not exist: nothing was ever recorded). */
bool tlsrpt_store_request(const char *spool, const char *date);
/* The dates asked for (sorted, malloc'd), each removed from the spool as
 * it is listed. */
char **tlsrpt_store_take_requests(const char *spool, size_t *n);

/* A name usable as DOMAIN: LDH labels, lower case, no leading dot. */
bool tlsrpt_store_domain_ok(const char *domain);

#endif
