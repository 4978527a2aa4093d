/*
 * dsn: RFC 3464 delivery status notifications, built as text. Pure: the
 * caller supplies the facts and the original message's header section and
 * gets back the whole DSN message (CRLF line endings, lines under 1000
 * octets) to queue like any other message, from the null sender.
 */
#ifndef SMTPGW_DSN_H
#define SMTPGW_DSN_H

#include <stddef.h>
#include <time.h>

enum dsn_action { DSN_FAILED, DSN_DELAYED };

struct dsn_rcpt {
	const char *address;	/* user@example.test */
	enum dsn_action action;
	const char *status;	/* "5.1.1" */
	const char *remote_mta; /* "mx.example.test", or NULL */
	const char *diagnostic; /* the remote reply, e.g. "550 5.1.1 no such
				   user", or the local reason; NULL if none */
};

struct dsn_input {
	const char *hostname;	/* reporting MTA */
	const char *qid;	/* the original message's queue id */
	const char *sender;	/* the original envelope sender (To:) */
	time_t arrival;
	time_t now;
	const struct dsn_rcpt *rcpts;
	size_t n_rcpts;
	const char *headers;	/* the original header section, CRLF lines */
	size_t headers_len;
};

/* Returns a malloc'd message and its length, or NULL with *len = 0: out of
 * memory, or nothing to report (no recipients, an empty or null sender —
 * a bounce is never bounced — or an empty hostname, qid or address). */
char *dsn_build(const struct dsn_input *in, size_t *len);

#endif
