/*
 * tlsrpt.c: result types, the _smtp._tls TXT record and the record lines
 * behind tlsrpt.h. It owns text only: no I/O, no allocation, no state
 * between calls. The TXT record follows RFC 8460 §3's ABNF:
 *
 *   tlsrpt-record = "v=TLSRPTv1" 1*(field-delim tlsrpt-field) [field-delim]
 *   field-delim   = *WSP ";" *WSP
 *   tlsrpt-field  = "rua=" uri *(*WSP "," *WSP uri) / ext-name "=" ext-value
 *
 * A record without rua, with two, or with a field of neither form is
 * invalid (then the domain gets no report, as for two records).
 */
#include "proto/tlsrpt.h"

#include "proto/sts.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

static const char *const RESULT_NAMES[TLSRPT_COUNT] = {
	[TLSRPT_STARTTLS_NOT_SUPPORTED] = "starttls-not-supported",
	[TLSRPT_CERTIFICATE_HOST_MISMATCH] = "certificate-host-mismatch",
	[TLSRPT_CERTIFICATE_EXPIRED] = "certificate-expired",
	[TLSRPT_CERTIFICATE_NOT_TRUSTED] = "certificate-not-trusted",
	[TLSRPT_VALIDATION_FAILURE] = "validation-failure",
	[TLSRPT_TLSA_INVALID] = "tlsa-invalid",
	[TLSRPT_DNSSEC_INVALID] = "dnssec-invalid",
	[TLSRPT_DANE_REQUIRED] = "dane-required",
	[TLSRPT_STS_POLICY_FETCH_ERROR] = "sts-policy-fetch-error",
	[TLSRPT_STS_POLICY_INVALID] = "sts-policy-invalid",
	[TLSRPT_STS_WEBPKI_INVALID] = "sts-webpki-invalid",
};

const char *tlsrpt_result_name(enum tlsrpt_result r)
{
	return (unsigned)r < TLSRPT_COUNT ? RESULT_NAMES[r]
					  : "validation-failure";
}

bool tlsrpt_result_parse(const char *name, enum tlsrpt_result *out)
{
	for (unsigned i = 0; i < TLSRPT_COUNT; i++) {
		if (strcmp(name, RESULT_NAMES[i]) == 0) {
			*out = (enum tlsrpt_result)i;
			return true;
		}
	}
	return false;
}

const char *tlsrpt_policy_type_name(enum tlsrpt_policy_type t)
{
	switch (t) {
	case TLSRPT_POLICY_TLSA:
		return "tlsa";
	case TLSRPT_POLICY_STS:
		return "sts";
	case TLSRPT_POLICY_NONE:
		break;
	}
	return "no-policy-found";
}

static bool policy_type_parse(const char *name, enum tlsrpt_policy_type *out)
{
	static const enum tlsrpt_policy_type all[] = {
		TLSRPT_POLICY_NONE, TLSRPT_POLICY_TLSA, TLSRPT_POLICY_STS};

	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
		if (strcmp(name, tlsrpt_policy_type_name(all[i])) == 0) {
			*out = all[i];
			return true;
		}
	}
	return false;
}

/* ---- classifying a TLS failure ------------------------------------------ */

static bool has_any(const char *text, const char *const *words)
{
	for (; *words != NULL; words++)
		if (strcasestr(text, *words) != NULL)
			return true;
	return false;
}

enum tlsrpt_result tlsrpt_classify_tls_error(const char *error)
{
	static const char *const expired[] = {"expired", "not yet valid",
					      NULL};
	static const char *const mismatch[] = {
		"not present in server certificate", "name mismatch",
		"hostname mismatch", "does not match", NULL};
	static const char *const untrusted[] = {
		"self signed", "self-signed", "local issuer", "unable to verify",
		"unknown ca", "untrusted", "not trusted", "verification failed",
		"verify failed", NULL};

	if (error == NULL || error[0] == '\0')
		return TLSRPT_VALIDATION_FAILURE;
	if (has_any(error, expired))
		return TLSRPT_CERTIFICATE_EXPIRED;
	if (has_any(error, mismatch))
		return TLSRPT_CERTIFICATE_HOST_MISMATCH;
	if (has_any(error, untrusted))
		return TLSRPT_CERTIFICATE_NOT_TRUSTED;
	return TLSRPT_VALIDATION_FAILURE;
}

/* ---- the TXT record ----------------------------------------------------- */

static const char VERSION[] = "v=TLSRPTv1";

static bool is_wsp(char c)
{
	return c == ' ' || c == '\t';
}

static bool is_alnum(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
	       (c >= 'A' && c <= 'Z');
}

/* Does the text start with the version tag, followed by a delimiter or its
 * end? ("v=TLSRPTv10" is some other record.) */
static bool is_tlsrpt(const char *t, size_t len)
{
	size_t v = sizeof(VERSION) - 1;

	return len >= v && memcmp(t, VERSION, v) == 0 &&
	       (len == v || is_wsp(t[v]) || t[v] == ';');
}

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* local@domain: printable, no spaces or brackets, one '@', LDH domain. */
static bool plausible_address(const char *a)
{
	const char *at = strchr(a, '@');

	if (at == NULL || at == a || at[1] == '\0' || strchr(at + 1, '@') ||
	    at[1] == '.' || a[strlen(a) - 1] == '.')
		return false;
	for (const char *p = a; *p != '\0'; p++)
		if (*p <= ' ' || *p > '~' || strchr("<>()[]\\,;:\"", *p))
			return false;
	for (const char *p = at + 1; *p != '\0'; p++)
		if (!is_alnum(*p) && *p != '-' && *p != '.')
			return false;
	return true;
}

/* "mailto:a%40b@c?subject=x" → "a@b@c"...; percent-decoded up to "?". */
static bool mailto_address(const char *u, size_t n, char *out, size_t len)
{
	size_t o = 0;

	for (size_t i = 0; i < n && u[i] != '?'; i++) {
		char c = u[i];

		if (c == '%') {
			int hi = i + 2 < n ? hex_value(u[i + 1]) : -1;
			int lo = i + 2 < n ? hex_value(u[i + 2]) : -1;

			if (hi < 0 || lo < 0)
				return false;
			c = (char)(hi * 16 + lo);
			i += 2;
		}
		if (c == '\0' || o + 1 >= len)
			return false;
		out[o++] = c;
	}
	out[o] = '\0';
	return plausible_address(out);
}

/* One URI of rua=: kept when mailto: and usable, counted when https:. */
static bool take_uri(const char *u, size_t n, struct tlsrpt_rua *out)
{
	if (n > 7 && strncasecmp(u, "mailto:", 7) == 0) {
		if (out->n < TLSRPT_MAX_RUA &&
		    mailto_address(u + 7, n - 7, out->addr[out->n],
				   sizeof(out->addr[out->n])))
			out->n++;
		return true;
	}
	if (n > 6 && strncasecmp(u, "https:", 6) == 0) {
		out->n_https++;
		return true;
	}
	return false; /* another scheme: the record is malformed */
}

/* The value of rua=: URIs separated by commas, spaces around them. */
static bool parse_rua(const char *v, size_t n, struct tlsrpt_rua *out)
{
	size_t i = 0;

	for (;;) {
		size_t start, end;

		while (i < n && is_wsp(v[i]))
			i++;
		start = i;
		while (i < n && v[i] != ',' && !is_wsp(v[i]))
			i++;
		end = i;
		while (i < n && is_wsp(v[i]))
			i++;
		if (end == start || !take_uri(v + start, end - start, out))
			return false;
		if (i == n)
			return true;
		if (v[i++] != ',')
			return false;
	}
}

/* ext-name = (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".") */
static bool is_ext_name(const char *s, size_t n)
{
	if (n == 0 || n > 32 || !is_alnum(s[0]))
		return false;
	for (size_t i = 1; i < n; i++)
		if (!is_alnum(s[i]) && !strchr("_-.", s[i]))
			return false;
	return true;
}

/* ext-value = 1*(%x21-3A / %x3C / %x3E-7E) */
static bool is_ext_value(const char *s, size_t n)
{
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] < 0x21 || s[i] > 0x7e || s[i] == ';' || s[i] == '=')
			return false;
	return true;
}

/* One field between delimiters; *rua_seen counts rua= fields. */
static bool parse_field(const char *f, size_t n, struct tlsrpt_rua *out,
			unsigned *rua_seen)
{
	const char *eq = memchr(f, '=', n);
	size_t klen = eq ? (size_t)(eq - f) : 0;

	if (eq == NULL)
		return false;
	if (klen == 3 && memcmp(f, "rua", 3) == 0) {
		(*rua_seen)++;
		return *rua_seen == 1 && parse_rua(eq + 1, n - klen - 1, out);
	}
	return is_ext_name(f, klen) && is_ext_value(eq + 1, n - klen - 1);
}

enum tlsrpt_record tlsrpt_record_parse(const char *text, size_t len,
				       struct tlsrpt_rua *out,
				       const char **why)
{
	size_t i = sizeof(VERSION) - 1;
	unsigned rua_seen = 0;

	memset(out, 0, sizeof(*out));
	if (!is_tlsrpt(text, len)) {
		*why = "no v=TLSRPTv1 record";
		return TLSRPT_RECORD_NONE;
	}
	while (i < len) {
		size_t start, end;

		while (i < len && is_wsp(text[i]))
			i++;
		if (i == len)
			break;
		if (text[i++] != ';')
			goto invalid;
		while (i < len && is_wsp(text[i]))
			i++;
		start = i;
		while (i < len && text[i] != ';')
			i++;
		end = i;
		while (end > start && is_wsp(text[end - 1]))
			end--;
		if (end == start && i == len)
			break; /* the optional delimiter at the end */
		if (!parse_field(text + start, end - start, out, &rua_seen))
			goto invalid;
	}
	if (rua_seen == 1) {
		*why = NULL;
		return TLSRPT_RECORD_FOUND;
	}
invalid:
	memset(out, 0, sizeof(*out));
	*why = rua_seen > 1 ? "rua= given twice" : "malformed v=TLSRPTv1 record";
	return TLSRPT_RECORD_INVALID;
}

/* A TXT that cannot be joined is ours only if what can be read of it
 * starts with the version tag: then it is a malformed record. */
static bool broken_but_ours(const unsigned char *p, size_t len)
{
	size_t k = len > 0 ? p[0] : 0;

	if (k > len - 1)
		k = len - 1;
	return len > 0 && is_tlsrpt((const char *)p + 1, k);
}

enum tlsrpt_record tlsrpt_record_pick(const unsigned char *const *rdata,
				      const size_t *lens, size_t n,
				      struct tlsrpt_rua *out, const char **why)
{
	enum tlsrpt_record verdict = TLSRPT_RECORD_NONE;
	struct tlsrpt_rua one;
	char text[TLSRPT_TXT_MAX];
	size_t tlen, found = 0;

	memset(out, 0, sizeof(*out));
	*why = "no v=TLSRPTv1 record";
	for (size_t i = 0; i < n; i++) {
		const char *w;
		enum tlsrpt_record r;

		/* character-strings joined without spaces, as for MTA-STS */
		if (sts_txt_join(rdata[i], lens[i], text, sizeof(text),
				 &tlen) != STS_JOIN_OK) {
			if (broken_but_ours(rdata[i], lens[i])) {
				found++;
				verdict = TLSRPT_RECORD_INVALID;
				*why = "malformed v=TLSRPTv1 TXT rdata";
			}
			continue;
		}
		r = tlsrpt_record_parse(text, tlen, &one, &w);
		if (r == TLSRPT_RECORD_NONE)
			continue;
		found++;
		verdict = r;
		*why = w;
		if (r == TLSRPT_RECORD_FOUND)
			*out = one;
	}
	if (found > 1) {
		memset(out, 0, sizeof(*out));
		*why = "more than one v=TLSRPTv1 record";
		return TLSRPT_RECORD_INVALID;
	}
	if (verdict != TLSRPT_RECORD_FOUND)
		memset(out, 0, sizeof(*out));
	return verdict;
}

/* ---- record lines ------------------------------------------------------- */

enum { N_FIELDS = 11 };

bool tlsrpt_entry_same_key(const struct tlsrpt_entry *a,
			   const struct tlsrpt_entry *b)
{
	return a->failure == b->failure && a->type == b->type &&
	       (!a->failure || a->result == b->result) &&
	       strcmp(a->policy_domain, b->policy_domain) == 0 &&
	       strcmp(a->policy_strings, b->policy_strings) == 0 &&
	       strcmp(a->mx_hosts, b->mx_hosts) == 0 &&
	       strcmp(a->receiving_mx, b->receiving_mx) == 0 &&
	       strcmp(a->receiving_ip, b->receiving_ip) == 0 &&
	       strcmp(a->sending_ip, b->sending_ip) == 0 &&
	       strcmp(a->reason, b->reason) == 0;
}

bool tlsrpt_entries_add(struct tlsrpt_entry *list, size_t *n, size_t cap,
			const struct tlsrpt_entry *e)
{
	for (size_t i = 0; i < *n; i++) {
		if (!tlsrpt_entry_same_key(&list[i], e))
			continue;
		list[i].count = list[i].count > UINT64_MAX - e->count
					? UINT64_MAX
					: list[i].count + e->count;
		return true;
	}
	if (*n >= cap)
		return false;
	list[(*n)++] = *e;
	return true;
}

static bool needs_escape(unsigned char c)
{
	return c < 0x20 || c >= 0x7f || c == '%';
}

/* Appends the escaped field and a separator; false when out is full. */
static bool put_field(char *out, size_t len, size_t *o, const char *s,
		      char sep)
{
	static const char hex[] = "0123456789ABCDEF";

	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;

		if (*o + 4 >= len)
			return false;
		if (!needs_escape(c)) {
			out[(*o)++] = (char)c;
			continue;
		}
		out[(*o)++] = '%';
		out[(*o)++] = hex[c >> 4];
		out[(*o)++] = hex[c & 15];
	}
	if (*o + 2 >= len)
		return false;
	out[(*o)++] = sep;
	return true;
}

_Static_assert(3 * (4 * TLSRPT_FIELD_MAX + 2 * TLSRPT_LIST_MAX + 2 * 64) + 128 <
		       TLSRPT_LINE_MAX,
	       "every entry fits in a line");

size_t tlsrpt_entry_format(const struct tlsrpt_entry *e, char *out,
			   size_t len)
{
	char count[24];
	const char *fields[N_FIELDS];
	size_t o = 0;

	if (e->count == 0 || len == 0)
		return 0;
	snprintf(count, sizeof(count), "%llu", (unsigned long long)e->count);
	fields[0] = e->failure ? "F" : "S";
	fields[1] = count;
	fields[2] = tlsrpt_policy_type_name(e->type);
	fields[3] = e->policy_domain;
	fields[4] = e->policy_strings;
	fields[5] = e->mx_hosts;
	fields[6] = e->failure ? tlsrpt_result_name(e->result) : "-";
	fields[7] = e->receiving_mx;
	fields[8] = e->receiving_ip;
	fields[9] = e->sending_ip;
	fields[10] = e->reason;
	for (size_t i = 0; i < N_FIELDS; i++)
		if (!put_field(out, len, &o, fields[i],
			       i + 1 < N_FIELDS ? '\t' : '\n'))
			return 0;
	out[o] = '\0';
	return o;
}

/* As the lines are written: upper case only. */
static int upper_hex(char c)
{
	return c >= 'a' && c <= 'f' ? -1 : hex_value(c);
}

/* Decodes s[0..n) into out (NUL-terminated); false on a bad escape, a
 * NUL, a raw control or 8-bit octet, or when it does not fit. */
static bool get_field(const char *s, size_t n, char *out, size_t len)
{
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '%') {
			int hi = i + 2 < n ? upper_hex(s[i + 1]) : -1;
			int lo = i + 2 < n ? upper_hex(s[i + 2]) : -1;

			if (hi < 0 || lo < 0)
				return false;
			c = (unsigned char)(hi * 16 + lo);
			i += 2;
			if (c == 0 || !needs_escape(c))
				return false; /* one spelling per line */
		} else if (needs_escape(c)) {
			return false;
		}
		if (o + 1 >= len)
			return false;
		out[o++] = (char)c;
	}
	out[o] = '\0';
	return true;
}

static bool parse_count(const char *s, uint64_t *out)
{
	uint64_t v = 0;

	if (s[0] == '\0' || (s[0] == '0'))
		return false;
	for (; *s != '\0'; s++) {
		if (*s < '0' || *s > '9' || v > (UINT64_MAX - 9) / 10)
			return false;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	*out = v;
	return true;
}

/* Splits at the tabs: exactly N_FIELDS fields. */
static bool split(const char *line, size_t len, const char **start,
		  size_t *flen)
{
	size_t k = 0, from = 0;

	for (size_t i = 0; i <= len; i++) {
		if (i < len && line[i] != '\t')
			continue;
		if (k == N_FIELDS)
			return false;
		start[k] = line + from;
		flen[k++] = i - from;
		from = i + 1;
	}
	return k == N_FIELDS;
}

static bool parse_words(const char *kind, const char *count, const char *type,
			const char *result, struct tlsrpt_entry *e)
{
	if (strcmp(kind, "F") != 0 && strcmp(kind, "S") != 0)
		return false;
	e->failure = kind[0] == 'F';
	if (!parse_count(count, &e->count) || !policy_type_parse(type, &e->type))
		return false;
	if (!e->failure)
		return strcmp(result, "-") == 0;
	return tlsrpt_result_parse(result, &e->result);
}

bool tlsrpt_entry_parse(const char *line, size_t len, struct tlsrpt_entry *e)
{
	const char *f[N_FIELDS];
	size_t n[N_FIELDS];
	char kind[4], count[24], type[24], result[40];

	memset(e, 0, sizeof(*e));
	if (len + 4 > TLSRPT_LINE_MAX || !split(line, len, f, n) ||
	    !get_field(f[0], n[0], kind, sizeof(kind)) ||
	    !get_field(f[1], n[1], count, sizeof(count)) ||
	    !get_field(f[2], n[2], type, sizeof(type)) ||
	    !get_field(f[3], n[3], e->policy_domain, sizeof(e->policy_domain)) ||
	    !get_field(f[4], n[4], e->policy_strings,
		       sizeof(e->policy_strings)) ||
	    !get_field(f[5], n[5], e->mx_hosts, sizeof(e->mx_hosts)) ||
	    !get_field(f[6], n[6], result, sizeof(result)) ||
	    !get_field(f[7], n[7], e->receiving_mx, sizeof(e->receiving_mx)) ||
	    !get_field(f[8], n[8], e->receiving_ip, sizeof(e->receiving_ip)) ||
	    !get_field(f[9], n[9], e->sending_ip, sizeof(e->sending_ip)) ||
	    !get_field(f[10], n[10], e->reason, sizeof(e->reason)) ||
	    !parse_words(kind, count, type, result, e)) {
		memset(e, 0, sizeof(*e));
		return false;
	}
	return true;
}
