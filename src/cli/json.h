/*
 * json: what the commands' --json output is written with: strings quoted
 * and escaped (valid UTF-8 kept, anything else as U+FFFD, so the output is
 * always JSON whatever a queue file or a certificate holds), and the
 * counters of core/stats as nested objects. Writing only, to a FILE.
 */
#ifndef SMTPGW_JSON_H
#define SMTPGW_JSON_H

#include <stdio.h>

struct stats;

/* "value", escaped; NULL is written as null. */
void json_str(FILE *f, const char *value);

/* Every counter as nested objects keyed by its dotted key
 * ("rejects.rcpt.5xx" → {"rejects":{"rcpt":{"5xx":N}}}): one object. */
void json_counters(FILE *f, const struct stats *st);

#endif
