/*
 * envelope: the header block of a queue file (who sent what to whom) as
 * text, both ways. Pure: no I/O. The spool writes it after the magic line,
 * delivery and the queue command read it back.
 */
#ifndef SMTPGW_ENVELOPE_H
#define SMTPGW_ENVELOPE_H

#include "proto/smtp_proto.h"

#include <stdbool.h>
#include <stddef.h>

enum { QUEUE_ID_LEN = 16 }; /* the spool's message ids */

struct envelope {
	char qid[QUEUE_ID_LEN + 1];
	long long arrival;
	char client[64];
	char *helo;
	char *sender; /* "" for the null sender */
	char **rcpts;
	size_t n_rcpts;
	enum smtp_body_type body;
	bool smtputf8;
};

/* The block from "id:" to the blank line; malloc'd, *len set; NULL when out
 * of memory. Values never contain a newline (the SMTP parser saw to it). */
char *envelope_format(const struct envelope *e, size_t *len);

/*
 * Parses a whole queue file header starting at its magic line. Returns the
 * offset of the message (just after the blank line), or 0 with a reason in
 * err when the header is malformed or not complete in buf. The envelope's
 * strings are malloc'd: envelope_free.
 */
size_t envelope_parse(const char *buf, size_t len, struct envelope *e,
		      char *err, size_t err_len);
void envelope_free(struct envelope *e);
/* "7BIT", "8BITMIME" or "unspecified", as the header writes it. */
const char *envelope_body_name(enum smtp_body_type body);

#endif
