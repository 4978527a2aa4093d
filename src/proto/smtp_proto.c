/*
 * smtp_proto.c: the octet-level SMTP grammar behind smtp_proto.h (command
 * lines, envelope paths and MAIL parameters, reply lines, the DATA decoder).
 *
 * It owns syntax only: it says what a line or stream contains and which rule
 * it breaks. It must not do I/O, allocate, keep state outside the structures
 * it is handed, or make policy decisions (which domains, sizes or routing
 * characters are acceptable is the server's business).
 */
#include "proto/smtp_proto.h"

#include <string.h>

/* ---- octet classes (ASCII only; locale must not change the grammar) ---- */

static bool is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

static bool is_alpha(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_xdigit(unsigned char c)
{
	return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static unsigned char to_lower(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + ('a' - 'A')) : c;
}

/* RFC 5322 atext; 8-bit octets count too (RFC 6531 UTF8-non-ascii). */
static bool is_atext(unsigned char c)
{
	return is_alpha(c) || is_digit(c) || c >= 0x80 ||
	       (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/* Label octets: letters, digits, hyphen, and U-label octets. */
static bool is_ldh(unsigned char c)
{
	return is_alpha(c) || is_digit(c) || c == '-' || c >= 0x80;
}

static bool ascii_ieq(const char *a, const char *b, size_t n)
{
	const unsigned char *x = (const unsigned char *)a;
	const unsigned char *y = (const unsigned char *)b;
	for (size_t i = 0; i < n; i++)
		if (to_lower(x[i]) != to_lower(y[i]))
			return false;
	return true;
}

/* Compares a counted token with a literal keyword, ignoring ASCII case. */
static bool token_is(const char *tok, size_t len, const char *kw)
{
	size_t kwlen = strlen(kw);
	return len == kwlen && ascii_ieq(tok, kw, len);
}

static size_t skip_spaces(const char *s, size_t i, size_t len)
{
	while (i < len && s[i] == ' ')
		i++;
	return i;
}

/* ---- command lines ---- */

static const char *const verb_names[SMTP_VERB_COUNT] = {
	[SMTP_VERB_UNKNOWN] = "UNKNOWN", [SMTP_VERB_HELO] = "HELO",
	[SMTP_VERB_EHLO] = "EHLO",	 [SMTP_VERB_MAIL] = "MAIL",
	[SMTP_VERB_RCPT] = "RCPT",	 [SMTP_VERB_DATA] = "DATA",
	[SMTP_VERB_RSET] = "RSET",	 [SMTP_VERB_NOOP] = "NOOP",
	[SMTP_VERB_QUIT] = "QUIT",	 [SMTP_VERB_VRFY] = "VRFY",
	[SMTP_VERB_HELP] = "HELP",	 [SMTP_VERB_STARTTLS] = "STARTTLS",
};

const char *smtp_verb_name(enum smtp_verb verb)
{
	if ((int)verb <= SMTP_VERB_UNKNOWN || verb >= SMTP_VERB_COUNT)
		return verb_names[SMTP_VERB_UNKNOWN];
	return verb_names[verb];
}

static enum smtp_verb lookup_verb(const char *s, size_t len)
{
	for (int v = SMTP_VERB_UNKNOWN + 1; v < SMTP_VERB_COUNT; v++)
		if (token_is(s, len, verb_names[v]))
			return (enum smtp_verb)v;
	return SMTP_VERB_UNKNOWN;
}

/* TAB is tolerated because clients put it in HELO/VRFY text; the other C0
 * controls and DEL have no business in a command and can hide smuggling. */
static bool has_bad_octets(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return true;
	}
	return false;
}

static size_t trim_right(const char *s, size_t len)
{
	while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
		len--;
	return len;
}

/* MAIL and RCPT: the keyword must follow the verb's single space exactly, as
 * RFC 5321 spells it; Postfix-style, spaces after the colon are skipped. */
static enum smtp_cmd_status take_path_arg(struct smtp_cmd *out,
					  const char *line, size_t vlen,
					  size_t end, const char *kw)
{
	size_t kwlen = strlen(kw);
	size_t pos = vlen + 1;

	if (vlen >= end || end - pos < kwlen ||
	    !ascii_ieq(line + pos, kw, kwlen))
		return SMTP_CMD_SYNTAX;
	pos = skip_spaces(line, pos + kwlen, end);
	out->arg = line + pos;
	out->arg_len = end - pos;
	return SMTP_CMD_OK;
}

enum smtp_cmd_status smtp_parse_command(const char *line, size_t len,
					struct smtp_cmd *out)
{
	out->verb = SMTP_VERB_UNKNOWN;
	out->arg = line;
	out->arg_len = 0;
	if (has_bad_octets(line, len))
		return SMTP_CMD_BAD_OCTETS;
	size_t end = trim_right(line, len);
	if (end == 0)
		return SMTP_CMD_EMPTY;

	const char *sp = memchr(line, ' ', end);
	size_t vlen = sp ? (size_t)(sp - line) : end;
	size_t pos = skip_spaces(line, vlen, end);
	/* Set even on errors so the server can log what it was given. */
	out->verb = lookup_verb(line, vlen);
	out->arg = line + pos;
	out->arg_len = end - pos;
	if (out->verb == SMTP_VERB_UNKNOWN)
		return SMTP_CMD_UNKNOWN;
	if (out->verb == SMTP_VERB_MAIL)
		return take_path_arg(out, line, vlen, end, "FROM:");
	if (out->verb == SMTP_VERB_RCPT)
		return take_path_arg(out, line, vlen, end, "TO:");
	return SMTP_CMD_OK;
}

/* ---- address literals ---- */

/* Strict dotted quad: 0-255, no leading zeros (which some resolvers read
 * as octal, so they would name a different host than they seem to). */
static bool is_ipv4(const unsigned char *s, size_t n)
{
	size_t i = 0;
	for (int part = 0; part < 4; part++) {
		if (part > 0 && (i >= n || s[i++] != '.'))
			return false;
		size_t start = i;
		unsigned value = 0;
		while (i < n && is_digit(s[i]) && i - start < 3)
			value = value * 10 + (unsigned)(s[i++] - '0');
		size_t digits = i - start;
		if (digits == 0 || value > 255 ||
		    (digits > 1 && s[start] == '0'))
			return false;
	}
	return i == n;
}

/* RFC 4291 text form: up to eight 1-4 digit hex groups, at most one "::",
 * and an optional dotted-quad tail worth two groups. */
static bool is_ipv6(const unsigned char *s, size_t n)
{
	size_t i = 0, groups = 0;
	bool compressed = false;

	if (n >= 2 && s[0] == ':' && s[1] == ':') {
		compressed = true;
		i = 2;
	}
	while (i < n) {
		size_t start = i;
		while (i < n && is_xdigit(s[i]))
			i++;
		if (i < n && s[i] == '.') {
			if (!is_ipv4(s + start, n - start))
				return false;
			groups += 2;
			break;
		}
		if (i == start || i - start > 4)
			return false;
		groups++;
		if (i == n)
			break;
		if (s[i++] != ':' || i == n)
			return false;
		if (s[i] == ':') {
			if (compressed)
				return false;
			compressed = true;
			i++;
		}
	}
	return compressed ? groups <= 7 : groups == 8;
}

/* s[*i] is '['; on success *i is past the ']'. Only IPv4 and IPv6
 * literals: no General-address-literal tag is registered for mail. */
static bool scan_literal(const unsigned char *s, size_t len, size_t *i)
{
	const unsigned char *body = s + *i + 1;
	const unsigned char *close = memchr(body, ']', len - *i - 1);
	if (close == NULL)
		return false;
	size_t n = (size_t)(close - body);
	*i = (size_t)(close - s) + 1;
	if (is_ipv4(body, n))
		return true;
	return n > 5 && ascii_ieq((const char *)body, "IPv6:", 5) &&
	       is_ipv6(body + 5, n - 5);
}

/* ---- paths ---- */

/* Dot-string: atoms of atext joined by single dots. */
static bool scan_dot_string(const unsigned char *s, size_t len, size_t *i)
{
	size_t start = *i;
	bool after_dot = true; /* a leading dot is as bad as a double one */

	for (; *i < len; (*i)++) {
		if (s[*i] == '.') {
			if (after_dot)
				return false;
			after_dot = true;
		} else if (is_atext(s[*i])) {
			after_dot = false;
		} else {
			break;
		}
	}
	return *i > start && !after_dot;
}

/* RFC 5321 Quoted-string; s[*i] is the opening quote. Quoted pairs are
 * ASCII only; bare 8-bit qtext is RFC 6531's extension. */
static bool scan_quoted(const unsigned char *s, size_t len, size_t *i)
{
	for (size_t j = *i + 1; j < len; j++) {
		unsigned char c = s[j];
		if (c == '"') {
			*i = j + 1;
			return true;
		}
		if (c == '\\') {
			if (++j >= len || s[j] < 32 || s[j] > 126)
				return false;
		} else if (c < 32 || c == 127) {
			return false;
		}
	}
	return false;
}

/* Domain: dot-separated labels of 1..63 octets, no hyphen at either end.
 * A trailing dot leaves an empty last label, so it fails here. */
static bool scan_domain(const unsigned char *s, size_t len, size_t *i)
{
	for (;;) {
		size_t start = *i;
		while (*i < len && is_ldh(s[*i]))
			(*i)++;
		size_t n = *i - start;
		if (n == 0 || n > 63 || s[start] == '-' || s[*i - 1] == '-')
			return false;
		if (*i >= len || s[*i] != '.')
			return true;
		(*i)++;
	}
}

/* A-d-l ":" (obsolete source route); s[*i] is the first '@'. */
static bool scan_route(const unsigned char *s, size_t len, size_t *i)
{
	for (;;) {
		if (*i >= len || s[*i] != '@')
			return false;
		(*i)++;
		if (!scan_domain(s, len, i) || *i >= len)
			return false;
		unsigned char sep = s[(*i)++];
		if (sep == ':')
			return true;
		if (sep != ',')
			return false;
	}
}

/* Well-formed UTF-8 (RFC 3629: no overlongs, surrogates or > U+10FFFF), so
 * 8-bit addresses are text the next hop can compare, not arbitrary bytes. */
static bool is_utf8(const unsigned char *s, size_t n)
{
	size_t i = 0;
	while (i < n) {
		unsigned char c = s[i++];
		if (c < 0x80)
			continue;
		size_t more = c >= 0xf0 ? 3 : c >= 0xe0 ? 2 : 1;
		if (c < 0xc2 || c > 0xf4 || n - i < more)
			return false;
		unsigned char lo = 0x80, hi = 0xbf;
		if (c == 0xe0)
			lo = 0xa0;
		else if (c == 0xed)
			hi = 0x9f;
		else if (c == 0xf0)
			lo = 0x90;
		else if (c == 0xf4)
			hi = 0x8f;
		if (s[i] < lo || s[i] > hi)
			return false;
		for (size_t k = 1; k < more; k++)
			if ((s[i + k] & 0xc0) != 0x80)
				return false;
		i += more;
	}
	return true;
}

static bool has_8bit(const unsigned char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] >= 0x80)
			return true;
	return false;
}

/* Where the parts of a syntactically valid path lie inside the argument. */
struct path_span {
	size_t local, local_len; /* Local-part as given, quotes included */
	size_t dom, dom_len;	 /* 0 length: no "@domain" */
	size_t end;		 /* just past the '>' */
	bool route, literal;
};

static enum smtp_path_status scan_mailbox(const unsigned char *s, size_t len,
					  size_t i, struct path_span *p)
{
	p->local = i;
	bool ok = (i < len && s[i] == '"') ? scan_quoted(s, len, &i)
					   : scan_dot_string(s, len, &i);
	if (!ok)
		return SMTP_PATH_SYNTAX;
	p->local_len = i - p->local;
	if (i < len && s[i] == '@') {
		p->dom = ++i;
		p->literal = i < len && s[i] == '[';
		ok = p->literal ? scan_literal(s, len, &i)
				: scan_domain(s, len, &i);
		if (!ok)
			return SMTP_PATH_SYNTAX;
		p->dom_len = i - p->dom;
	}
	if (i >= len || s[i] != '>')
		return SMTP_PATH_SYNTAX;
	p->end = i + 1;
	return SMTP_PATH_OK;
}

static enum smtp_path_status scan_path(const unsigned char *s, size_t len,
				       struct path_span *p)
{
	memset(p, 0, sizeof(*p));
	if (len < 2 || s[0] != '<')
		return SMTP_PATH_SYNTAX;
	if (s[1] == '>') {
		p->end = 2;
		return SMTP_PATH_OK;
	}
	size_t i = 1;
	if (s[1] == '@') {
		if (!scan_route(s, len, &i))
			return SMTP_PATH_SYNTAX;
		p->route = true;
	}
	enum smtp_path_status st = scan_mailbox(s, len, i, p);
	if (st != SMTP_PATH_OK)
		return st;
	if (!is_utf8(s, p->end))
		return SMTP_PATH_SYNTAX;
	if (p->local_len > SMTP_LOCAL_PART_MAX ||
	    p->dom_len > SMTP_DOMAIN_MAX || p->end > SMTP_PATH_MAX)
		return SMTP_PATH_TOO_LONG;
	return SMTP_PATH_OK;
}

/* The '@' can only be in the local part when quoted, so a plain scan finds
 * exactly the quoted '@', '%' and '!' that old relays would route on. */
static bool has_routing_chars(const char *local, size_t n)
{
	return memchr(local, '@', n) || memchr(local, '%', n) ||
	       memchr(local, '!', n);
}

static void fill_addr(const char *s, const struct path_span *p,
		      struct smtp_addr *a)
{
	char *m = a->mailbox;
	memcpy(m, s + p->local, p->local_len);
	size_t n = p->local_len;
	a->local_len = n;
	a->domain = n;
	if (p->dom_len > 0) {
		m[n++] = '@';
		a->domain = n;
		memcpy(m + n, s + p->dom, p->dom_len);
		n += p->dom_len;
	}
	m[n] = '\0';
	a->mailbox_len = n;
	a->is_null = p->end == 2;
	a->has_route = p->route;
	a->literal = p->literal;
	a->routing_chars = has_routing_chars(m, a->local_len);
	a->utf8 = has_8bit((const unsigned char *)m, n);
}

/* Parses the path at the start of `s` into `a`; *end is past the '>'.
 * `a` is filled only when the path itself is valid. */
static enum smtp_path_status parse_path(const char *s, size_t len,
					struct smtp_addr *a, size_t *end,
					bool *eight_bit)
{
	struct path_span p;
	memset(a, 0, sizeof(*a));
	enum smtp_path_status st = scan_path((const unsigned char *)s, len, &p);
	if (st != SMTP_PATH_OK)
		return st;
	if (p.end < len && s[p.end] != ' ')
		return SMTP_PATH_SYNTAX; /* "<a@b>junk" */
	fill_addr(s, &p, a);
	*end = p.end;
	/* A source route is on the wire too, so its octets need SMTPUTF8. */
	*eight_bit = has_8bit((const unsigned char *)s, p.end);
	return SMTP_PATH_OK;
}

/* ---- ESMTP parameters ---- */

static bool parse_size(const char *v, size_t n, uint64_t *out)
{
	uint64_t value = 0;
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)v[i];
		if (!is_digit(c) || value > (UINT64_MAX - (c - '0')) / 10)
			return false;
		value = value * 10 + (uint64_t)(c - '0');
	}
	*out = value;
	return true;
}

/* Applies one "keyword[=value]" token; false if unknown, malformed or
 * repeated (a repeat could mean two different things to two hops). */
static bool apply_param(const char *tok, size_t n,
			struct smtp_mail_params *mp)
{
	const char *eq = memchr(tok, '=', n);
	size_t klen = eq ? (size_t)(eq - tok) : n;
	const char *val = eq ? eq + 1 : tok + n;
	size_t vlen = eq ? n - klen - 1 : 0;

	if (token_is(tok, klen, "SIZE")) {
		if (mp->has_size || !eq || !parse_size(val, vlen, &mp->size))
			return false;
		mp->has_size = true;
		return true;
	}
	if (token_is(tok, klen, "BODY")) {
		if (mp->body != SMTP_BODY_UNSPECIFIED || !eq)
			return false;
		if (token_is(val, vlen, "7BIT"))
			mp->body = SMTP_BODY_7BIT;
		else if (token_is(val, vlen, "8BITMIME"))
			mp->body = SMTP_BODY_8BITMIME;
		return mp->body != SMTP_BODY_UNSPECIFIED;
	}
	if (token_is(tok, klen, "SMTPUTF8")) {
		if (mp->smtputf8 || eq)
			return false;
		mp->smtputf8 = true;
		return true;
	}
	if (token_is(tok, klen, "REQUIRETLS")) {
		if (mp->requiretls || eq)
			return false;
		mp->requiretls = true;
		return true;
	}
	return false;
}

/* Space-separated tokens from s[i..len); stops at the first bad one. With
 * mp == NULL every token is bad (RCPT takes no parameters). */
static enum smtp_path_status parse_params(const char *s, size_t i, size_t len,
					  struct smtp_mail_params *mp,
					  const char **bad, size_t *bad_len)
{
	for (;;) {
		i = skip_spaces(s, i, len);
		if (i >= len)
			return SMTP_PATH_OK;
		const char *sp = memchr(s + i, ' ', len - i);
		size_t n = sp ? (size_t)(sp - (s + i)) : len - i;
		if (mp == NULL || !apply_param(s + i, n, mp)) {
			if (bad)
				*bad = s + i;
			if (bad_len)
				*bad_len = n;
			return SMTP_PATH_BAD_PARAM;
		}
		i += n;
	}
}

static void clear_bad(const char **bad, size_t *bad_len)
{
	if (bad)
		*bad = NULL;
	if (bad_len)
		*bad_len = 0;
}

enum smtp_path_status smtp_parse_mail(const char *arg, size_t len,
				      struct smtp_addr *addr,
				      struct smtp_mail_params *params,
				      const char **bad_param,
				      size_t *bad_param_len)
{
	size_t end = 0;
	bool eight_bit = false;

	memset(params, 0, sizeof(*params));
	clear_bad(bad_param, bad_param_len);
	enum smtp_path_status st = parse_path(arg, len, addr, &end, &eight_bit);
	if (st != SMTP_PATH_OK)
		return st;
	if (!addr->is_null && addr->domain == addr->mailbox_len)
		return SMTP_PATH_NO_DOMAIN;
	st = parse_params(arg, end, len, params, bad_param, bad_param_len);
	if (st != SMTP_PATH_OK)
		return st;
	/* Checked last: SMTPUTF8 may come after the path it applies to. */
	if (eight_bit && !params->smtputf8)
		return SMTP_PATH_NEED_UTF8;
	return SMTP_PATH_OK;
}

/* RFC 5321 §4.5.1: "<Postmaster>" is the one Forward-path with no domain. */
static bool is_bare_postmaster(const struct smtp_addr *a)
{
	return !a->has_route && a->mailbox_len == a->local_len &&
	       token_is(a->mailbox, a->local_len, "postmaster");
}

enum smtp_path_status smtp_parse_rcpt(const char *arg, size_t len,
				      bool smtputf8, struct smtp_addr *addr,
				      const char **bad_param,
				      size_t *bad_param_len)
{
	size_t end = 0;
	bool eight_bit = false;

	clear_bad(bad_param, bad_param_len);
	enum smtp_path_status st = parse_path(arg, len, addr, &end, &eight_bit);
	if (st != SMTP_PATH_OK)
		return st;
	if (addr->is_null)
		return SMTP_PATH_NULL_RCPT;
	if (addr->domain == addr->mailbox_len && !is_bare_postmaster(addr))
		return SMTP_PATH_NO_DOMAIN;
	st = parse_params(arg, end, len, NULL, bad_param, bad_param_len);
	if (st != SMTP_PATH_OK)
		return st;
	if (eight_bit && !smtputf8)
		return SMTP_PATH_NEED_UTF8;
	return SMTP_PATH_OK;
}

bool smtp_domain_matches(const char *domain, size_t domain_len,
			 const char *pattern, size_t pattern_len)
{
	if (pattern_len == 0)
		return false;
	if (pattern[0] != '.')
		return domain_len == pattern_len &&
		       ascii_ieq(domain, pattern, pattern_len);
	/* Longer than the pattern, so at least one label sits before it. */
	if (domain_len <= pattern_len)
		return false;
	return ascii_ieq(domain + domain_len - pattern_len, pattern,
			 pattern_len);
}

/* ---- reply lines ---- */

bool smtp_parse_reply_line(const char *line, size_t len,
			   struct smtp_reply_line *out)
{
	const unsigned char *s = (const unsigned char *)line;

	out->code = 0;
	out->more = false;
	out->text = line;
	out->text_len = 0;
	if (len < 3 || s[0] < '2' || s[0] > '5' || !is_digit(s[1]) ||
	    !is_digit(s[2]))
		return false;
	if (len > 3 && s[3] != ' ' && s[3] != '-')
		return false;
	size_t skip = len > 3 ? 4 : 3;
	out->code = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
	out->more = len > 3 && s[3] == '-';
	out->text = line + skip;
	out->text_len = len - skip;
	return true;
}

/* ---- DATA decoder ---- */

/* DATA_BOL is 0 so that a zeroed decoder is a fresh one. */
enum data_state {
	DATA_BOL = 0, /* at a line start (after CRLF) */
	DATA_DOT,     /* a leading '.' was dropped */
	DATA_DOT_CR,  /* ".\r" at a line start; the CR is held back */
	DATA_TEXT,    /* inside a line */
	DATA_CR,      /* a CR was emitted; an LF now ends the line */
	DATA_END,     /* ".\r\n" seen */
};

struct data_sink {
	char *buf;
	size_t len;
};

/* Counting at emission makes line_len ignore the stuffing dot, as the
 * RFC 5321 §4.5.3.1.6 limit does. */
static void data_emit(struct smtp_data_decoder *d, struct data_sink *o,
		      const char *src, size_t n)
{
	memcpy(o->buf + o->len, src, n);
	o->len += n;
	d->size += n;
	d->line_len += n;
	if (d->line_len > SMTP_TEXT_LINE_MAX)
		d->long_line = true;
}

/* The hot path: copy a run of text up to and including the next CR. */
static size_t data_text(struct smtp_data_decoder *d, const char *in,
			size_t len, struct data_sink *o)
{
	const unsigned char *p = (const unsigned char *)in;
	size_t i = 0;

	while (i < len) {
		unsigned char c = p[i++];
		if (c > '\r')
			continue;
		if (c == '\r') {
			d->state = DATA_CR;
			break;
		}
		if (c == '\n')
			d->bare_lf = true;
		else if (c == '\0')
			d->nul = true;
	}
	data_emit(d, o, in, i);
	return i;
}

static size_t data_after_cr(struct smtp_data_decoder *d, char c,
			    struct data_sink *o)
{
	d->state = DATA_TEXT;
	if (c != '\n') {
		d->bare_cr = true;
		return 0;
	}
	data_emit(d, o, "\n", 1);
	d->line_len = 0;
	d->state = DATA_BOL;
	return 1;
}

/* Only the line-start states need one octet of look-ahead; each runs once
 * per line, so the per-octet work stays in data_text. */
static size_t data_step(struct smtp_data_decoder *d, const char *in,
			size_t len, struct data_sink *o)
{
	switch (d->state) {
	case DATA_TEXT:
		return data_text(d, in, len, o);
	case DATA_CR:
		return data_after_cr(d, in[0], o);
	case DATA_BOL:
		/* The leading dot goes whatever follows: stuffing or end. */
		d->state = in[0] == '.' ? DATA_DOT : DATA_TEXT;
		return in[0] == '.';
	case DATA_DOT:
		d->state = in[0] == '\r' ? DATA_DOT_CR : DATA_TEXT;
		return in[0] == '\r';
	case DATA_DOT_CR:
		if (in[0] == '\n') {
			d->state = DATA_END;
			return 1;
		}
		data_emit(d, o, "\r", 1);
		d->bare_cr = true;
		d->state = DATA_TEXT;
		return 0;
	default:
		/* A corrupted state must not loop forever or write out of
		 * bounds; stopping is the only safe answer. */
		d->state = DATA_END;
		return 0;
	}
}

void smtp_data_init(struct smtp_data_decoder *d)
{
	memset(d, 0, sizeof(*d));
	d->state = DATA_BOL;
}

enum smtp_data_status smtp_data_feed(struct smtp_data_decoder *d,
				     const char *in, size_t len, char *out,
				     size_t *out_len, size_t *consumed)
{
	struct data_sink o = {out, 0};
	size_t i = 0;

	while (i < len && d->state != DATA_END)
		i += data_step(d, in + i, len - i, &o);
	*out_len = o.len;
	*consumed = i;
	return d->state == DATA_END ? SMTP_DATA_END : SMTP_DATA_MORE;
}
