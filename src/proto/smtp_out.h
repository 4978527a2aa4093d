/*
 * smtp_out: the text of an outbound SMTP session, for outbound/smtp_client.c:
 * a server's reply assembled from its lines (and the EHLO keywords the
 * client acts on), and the message dot-stuffed for DATA. Pure: no I/O, no
 * state beyond the structs the caller owns. Every reply comes from a peer
 * we do not trust.
 */
#ifndef SMTPGW_SMTP_OUT_H
#define SMTPGW_SMTP_OUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum {
	SMTP_REPLY_MAX_LINES = 100, /* lines in one reply */
	SMTP_REPLY_TEXT_MAX = 256,  /* the joined text, NUL included */
	SMTP_STUFF_END_MAX = 7,     /* CRLF for a held CR or an open line,
	                               then ".CRLF" */
};

/* What an EHLO reply announced, as far as the client cares. */
struct smtp_extensions {
	bool starttls;
	bool pipelining;
	bool size;
	uint64_t size_limit; /* 0: none announced */
	bool eightbitmime;
	bool smtputf8;
	bool requiretls; /* RFC 8689 */
};

/* The reply being read, line by line. Zeroed: ready for the first line. */
struct smtp_reply {
	int code;                       /* set once the last line is in */
	unsigned lines;                 /* lines taken so far */
	char text[SMTP_REPLY_TEXT_MAX]; /* "250 2.1.5 Ok": the code, then
	                                   every line's text after a space;
	                                   controls become '?'; cut to fit */
	size_t len;
};

enum smtp_reply_step {
	SMTP_REPLY_MORE,      /* a "250-" line: more to come */
	SMTP_REPLY_DONE,      /* code and text hold the whole reply */
	SMTP_REPLY_MALFORMED, /* not a reply line: the session is over */
	SMTP_REPLY_TOO_LONG,  /* over SMTP_REPLY_MAX_LINES lines: as well */
};

/*
 * Takes one line of a reply (without its CRLF). With ext, every line after
 * the first is read as an EHLO keyword line. After DONE the caller acts on
 * the reply, then calls smtp_reply_next before the next line.
 */
enum smtp_reply_step smtp_reply_take(struct smtp_reply *r, const char *line,
                                     size_t len, struct smtp_extensions *ext);
void smtp_reply_next(struct smtp_reply *r);

/* Dot-stuffing of a stored message (RFC 5321 4.5.2), chunk by chunk. */
struct smtp_stuffer {
	bool at_bol;     /* the next octet starts a line */
	bool pending_cr; /* a CR whose LF may come in the next chunk */
};

/* Right after the 354: DATA's own CRLF starts the first line. */
void smtp_stuff_start(struct smtp_stuffer *s);

/*
 * Copies `len` octets of the message to `out` (room for 2 * len + 2):
 * dot-stuffed, every line ending a CRLF (a bare LF or bare CR becomes one,
 * RFC 5321 2.3.8). A CR at the end of a chunk waits for the next octet.
 * Returns the octets written.
 */
size_t smtp_stuff(struct smtp_stuffer *s, const char *in, size_t len,
                  char *out);

/* The end of data: a CRLF if the last line is open, then ".CRLF". */
size_t smtp_stuff_end(struct smtp_stuffer *s, char out[SMTP_STUFF_END_MAX]);

#endif
