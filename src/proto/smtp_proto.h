/*
 * smtp_proto: the pure half of SMTP. Command lines, envelope addresses and
 * their ESMTP parameters, reply lines and the DATA stream decoder.
 *
 * Everything here is a function of its arguments: no I/O, no globals, no
 * allocation, so each piece is unit-tested (spec/c/test_smtp_proto.c) and
 * fuzzed (spec/c/fuzz_smtp_proto.c) without an engine around it.
 */
#ifndef SMTPGW_SMTP_PROTO_H
#define SMTPGW_SMTP_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* RFC 5321 §4.5.3.1 limits, in octets. */
enum {
	SMTP_COMMAND_LINE_MAX = 512, /* including CRLF */
	SMTP_TEXT_LINE_MAX = 1000,   /* including CRLF */
	SMTP_REPLY_LINE_MAX = 512,   /* including CRLF */
	SMTP_LOCAL_PART_MAX = 64,
	SMTP_DOMAIN_MAX = 255,
	SMTP_PATH_MAX = 256, /* including the angle brackets */
};

enum smtp_verb {
	SMTP_VERB_UNKNOWN = 0,
	SMTP_VERB_HELO,
	SMTP_VERB_EHLO,
	SMTP_VERB_MAIL,
	SMTP_VERB_RCPT,
	SMTP_VERB_DATA,
	SMTP_VERB_RSET,
	SMTP_VERB_NOOP,
	SMTP_VERB_QUIT,
	SMTP_VERB_VRFY,
	SMTP_VERB_HELP,
	SMTP_VERB_STARTTLS,
	SMTP_VERB_COUNT,
};

/*
 * A command line split into verb and argument. `arg` points into the caller's
 * line (never NUL-terminated by us); for MAIL and RCPT it starts after
 * "FROM:" / "TO:" and any spaces that follow the colon.
 */
struct smtp_cmd {
	enum smtp_verb verb;
	const char *arg;
	size_t arg_len;
};

enum smtp_cmd_status {
	SMTP_CMD_OK = 0,
	SMTP_CMD_EMPTY,      /* blank line */
	SMTP_CMD_UNKNOWN,    /* verb not recognised */
	SMTP_CMD_SYNTAX,     /* MAIL without FROM:, RCPT without TO: */
	SMTP_CMD_BAD_OCTETS, /* NUL or other control octets in the line */
};

/*
 * Parse one command line. `line` excludes the CRLF. Verbs are matched
 * case-insensitively; trailing spaces are dropped from the argument.
 */
enum smtp_cmd_status smtp_parse_command(const char *line, size_t len,
					struct smtp_cmd *out);

/* Upper-case verb name for logs ("MAIL"), "UNKNOWN" for the rest. */
const char *smtp_verb_name(enum smtp_verb verb);

/*
 * An envelope address after parsing. `mailbox` holds local@domain with any
 * source route removed, NUL-terminated; it is empty for the null path <>.
 * `domain` is an offset into mailbox (== local_len + 1), or mailbox_len when
 * the address has no domain (e.g. <postmaster>).
 */
struct smtp_addr {
	char mailbox[SMTP_PATH_MAX + 1];
	size_t mailbox_len;
	size_t local_len;
	size_t domain;
	bool is_null;	   /* <> */
	bool has_route;	   /* <@a,@b:user@d> source route was present */
	bool routing_chars; /* '%', '!' or a quoted '@' in the local part */
	bool utf8;	   /* octets >= 0x80 anywhere in the mailbox */
	bool literal;	   /* domain is an address literal [..] */
};

enum smtp_body_type {
	SMTP_BODY_UNSPECIFIED = 0,
	SMTP_BODY_7BIT,
	SMTP_BODY_8BITMIME,
};

struct smtp_mail_params {
	bool has_size;
	uint64_t size;
	enum smtp_body_type body;
	bool smtputf8;
	bool requiretls; /* RFC 8689; the server checks it is under TLS */
};

enum smtp_path_status {
	SMTP_PATH_OK = 0,
	SMTP_PATH_SYNTAX,     /* not a valid RFC 5321 Path */
	SMTP_PATH_TOO_LONG,   /* local part, domain or path over its limit */
	SMTP_PATH_NEED_UTF8,  /* 8-bit octets without SMTPUTF8 declared */
	SMTP_PATH_NO_DOMAIN,  /* RCPT address without @domain (other than
				 postmaster) or MAIL address without one */
	SMTP_PATH_BAD_PARAM,  /* an ESMTP parameter is malformed or unknown;
				 see `bad_param` */
	SMTP_PATH_NULL_RCPT,  /* RCPT TO:<> */
};

/*
 * MAIL FROM argument: Reverse-path then ESMTP parameters (SIZE=, BODY=7BIT |
 * 8BITMIME, SMTPUTF8, REQUIRETLS). `arg` is smtp_cmd.arg. Addresses must be in angle
 * brackets. On SMTP_PATH_BAD_PARAM, *bad_param and *bad_param_len (may be NULL)
 * name the offending keyword (or keyword=value) inside `arg`.
 */
enum smtp_path_status smtp_parse_mail(const char *arg, size_t len,
				      struct smtp_addr *addr,
				      struct smtp_mail_params *params,
				      const char **bad_param,
				      size_t *bad_param_len);

/*
 * RCPT TO argument: Forward-path; no ESMTP parameters are supported, any
 * present give SMTP_PATH_BAD_PARAM. `smtputf8` is what the MAIL command
 * declared. <postmaster> (any case) is accepted without a domain.
 */
enum smtp_path_status smtp_parse_rcpt(const char *arg, size_t len,
				      bool smtputf8, struct smtp_addr *addr,
				      const char **bad_param,
				      size_t *bad_param_len);

/* Case-insensitive domain comparison; `pattern` with a leading dot matches
 * any subdomain (".example.test" matches "a.example.test", not
 * "example.test"). */
bool smtp_domain_matches(const char *domain, size_t domain_len,
			 const char *pattern, size_t pattern_len);

/*
 * One reply line from a server ("250-PIPELINING", "250 2.0.0 Ok"), line
 * without CRLF. `more` is true for the "-" continuation form. `text` points
 * after the separator.
 */
struct smtp_reply_line {
	int code;
	bool more;
	const char *text;
	size_t text_len;
};

bool smtp_parse_reply_line(const char *line, size_t len,
			   struct smtp_reply_line *out);

/*
 * DATA stream decoder. Fed the raw octets that follow "354", it removes the
 * dot-stuffing, finds the end of data and notes every violation, so the
 * server can reject the message as a whole instead of splitting it.
 *
 * Only <CRLF>.<CRLF> ends the data (the DATA command's CRLF counts as the
 * first). A bare LF (not preceded by CR) or bare CR (not followed by LF) sets
 * a flag and never starts a new line for the purposes of dot-unstuffing or
 * end detection, so "\n.\n", "\n.\r\n", "\r.\r" and friends are plain content.
 */
struct smtp_data_decoder {
	int state;	    /* internal */
	size_t line_len;    /* octets in the current line so far */
	uint64_t size;	    /* content octets emitted so far */
	bool bare_lf;
	bool bare_cr;
	bool long_line;	    /* a line over SMTP_TEXT_LINE_MAX incl. CRLF */
	bool nul;	    /* a NUL octet was seen */
};

enum smtp_data_status {
	SMTP_DATA_MORE = 0, /* all input consumed, end not seen yet */
	SMTP_DATA_END,	    /* end seen; *consumed stops after its CRLF */
};

void smtp_data_init(struct smtp_data_decoder *d);

/*
 * Decode `len` octets of `in`. Content goes to `out`, which must have room
 * for len + 2 octets (octets held back at a chunk boundary, such as a lone
 * "\r" after a leading ".", are emitted on the next call). *out_len is the
 * number written, *consumed the number of input octets used.
 */
enum smtp_data_status smtp_data_feed(struct smtp_data_decoder *d,
				     const char *in, size_t len, char *out,
				     size_t *out_len, size_t *consumed);

#endif
