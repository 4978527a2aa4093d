/*
 * sts: MTA-STS records, policies, MX patterns and the cache header,
 * behind sts.h. Pure: no I/O, no state; it reads only the octets it is
 * given (never a NUL past them) and writes only within the lengths it is
 * given. Fetching, caching and enforcing are outbound/sts.c's and
 * delivery's.
 */
#include "proto/sts.h"

#include <stdio.h>
#include <string.h>

/* ---- names --------------------------------------------------------------- */

const char *sts_mode_name(enum sts_mode mode)
{
	switch (mode) {
	case STS_MODE_NONE:
		return "none";
	case STS_MODE_TESTING:
		return "testing";
	case STS_MODE_ENFORCE:
		return "enforce";
	}
	return "none";
}

const char *tlsrpt_result_name(enum tlsrpt_result r)
{
	static const char *const names[TLSRPT_COUNT] = {
		[TLSRPT_STARTTLS_NOT_SUPPORTED] = "starttls-not-supported",
		[TLSRPT_CERTIFICATE_HOST_MISMATCH] = "certificate-host-mismatch",
		[TLSRPT_CERTIFICATE_EXPIRED] = "certificate-expired",
		[TLSRPT_CERTIFICATE_NOT_TRUSTED] = "certificate-not-trusted",
		[TLSRPT_VALIDATION_FAILURE] = "validation-failure",
		[TLSRPT_STS_POLICY_FETCH_ERROR] = "sts-policy-fetch-error",
		[TLSRPT_STS_POLICY_INVALID] = "sts-policy-invalid",
		[TLSRPT_STS_WEBPKI_INVALID] = "sts-webpki-invalid",
	};

	return r < TLSRPT_COUNT ? names[r] : "validation-failure";
}

/* ---- a cursor over octets ------------------------------------------------ */

struct cur {
	const char *p, *end;
};

static bool at_end(const struct cur *c)
{
	return c->p >= c->end;
}

static bool is_alpha(char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z');
}

static bool is_digit(char ch)
{
	return ch >= '0' && ch <= '9';
}

static bool is_alnum(char ch)
{
	return is_alpha(ch) || is_digit(ch);
}

static bool is_wsp(char ch)
{
	return ch == ' ' || ch == '\t';
}

static void skip_wsp(struct cur *c)
{
	while (!at_end(c) && is_wsp(*c->p))
		c->p++;
}

/* `lit` at the cursor, case-sensitive (RFC 7405 %s): taken. */
static bool take(struct cur *c, const char *lit)
{
	size_t n = strlen(lit);

	if ((size_t)(c->end - c->p) < n || memcmp(c->p, lit, n) != 0)
		return false;
	c->p += n;
	return true;
}

/* An extension name: (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" /
 * "."), the same for TXT fields and policy keys. Its length, or 0. */
static size_t name_len(const struct cur *c)
{
	size_t n = 0;

	if (at_end(c) || !is_alnum(*c->p))
		return 0;
	while (c->p + n < c->end && n < 32 &&
	       (is_alnum(c->p[n]) || c->p[n] == '_' || c->p[n] == '-' ||
		c->p[n] == '.'))
		n++;
	return n;
}

/* ---- TXT ----------------------------------------------------------------- */

enum sts_txt_join sts_txt_join(const unsigned char *rdata, size_t len,
			       char *out, size_t out_len, size_t *n)
{
	size_t i = 0, o = 0;

	*n = 0;
	if (out_len == 0)
		return STS_JOIN_TOO_LONG;
	out[0] = '\0';
	while (i < len) {
		size_t k = rdata[i++];

		if (k > len - i)
			return STS_JOIN_MALFORMED;
		if (memchr(rdata + i, '\0', k) != NULL)
			return STS_JOIN_MALFORMED;
		if (k >= out_len - o)
			return STS_JOIN_TOO_LONG;
		memcpy(out + o, rdata + i, k);
		o += k;
		i += k;
	}
	out[o] = '\0';
	*n = o;
	return STS_JOIN_OK;
}

/* Starts with "v=STSv1" as a whole word: the records §3.1 keeps. */
static bool is_sts_record(const char *t, size_t len)
{
	return len >= 7 && memcmp(t, "v=STSv1", 7) == 0 &&
	       (len == 7 || t[7] == ';' || is_wsp(t[7]));
}

/* sts-field-delim = *WSP ";" *WSP */
static bool field_delim(struct cur *c)
{
	struct cur save = *c;

	skip_wsp(c);
	if (!take(c, ";")) {
		*c = save;
		return false;
	}
	skip_wsp(c);
	return true;
}

/* sts-ext-value = 1*(%x21-3A / %x3C / %x3E-7E) */
static bool ext_value(struct cur *c)
{
	const char *start = c->p;

	while (!at_end(c) && *c->p >= 0x21 && *c->p <= 0x7e && *c->p != ';' &&
	       *c->p != '=')
		c->p++;
	return c->p > start;
}

/* One field after "v=STSv1": id (the first counts) or an extension. */
static bool txt_field(struct cur *c, char *id, size_t id_len, bool *have_id)
{
	size_t n = name_len(c);
	const char *start;

	if (n == 0 || c->p + n >= c->end || c->p[n] != '=')
		return false;
	if (n == 2 && memcmp(c->p, "id", 2) == 0) {
		c->p += 3;
		start = c->p;
		while (!at_end(c) && is_alnum(*c->p))
			c->p++;
		n = (size_t)(c->p - start);
		if (n == 0 || n > STS_ID_MAX || n >= id_len)
			return false;
		if (!*have_id)
			snprintf(id, id_len, "%.*s", (int)n, start);
		*have_id = true;
		return true;
	}
	c->p += n + 1;
	return ext_value(c);
}

/* sts-text-record = "v=STSv1" 1*(sts-field-delim sts-field)
 *                   [sts-field-delim] */
static bool txt_parse(const char *t, size_t len, char *id, size_t id_len)
{
	struct cur c = {t, t + len};
	bool have_id = false;

	if (!take(&c, "v=STSv1") || !field_delim(&c))
		return false;
	for (;;) {
		if (!txt_field(&c, id, id_len, &have_id))
			return false;
		if (!field_delim(&c) || at_end(&c))
			break;
	}
	skip_wsp(&c); /* trailing blanks: harmless, and seen in the wild */
	return at_end(&c) && have_id;
}

enum sts_record sts_record_pick(const char *const *texts, const size_t *lens,
				size_t n, char *id, size_t id_len,
				const char **why)
{
	size_t found = 0, which = 0;

	for (size_t i = 0; i < n; i++) {
		if (texts[i] == NULL || !is_sts_record(texts[i], lens[i]))
			continue;
		found++;
		which = i;
	}
	*why = "no _mta-sts TXT record starts with v=STSv1";
	if (found == 0)
		return STS_RECORD_NONE;
	*why = "more than one _mta-sts TXT record starts with v=STSv1";
	if (found > 1)
		return STS_RECORD_INVALID;
	*why = "malformed _mta-sts TXT record";
	if (!txt_parse(texts[which], lens[which], id, id_len))
		return STS_RECORD_INVALID;
	*why = "";
	return STS_RECORD_FOUND;
}

/* ---- the policy file ----------------------------------------------------- */

/* Seen keys: the first of version, mode and max_age counts. */
struct seen {
	bool version, mode, max_age;
};

static bool fail(char *why, size_t len, unsigned line, const char *what)
{
	snprintf(why, len, "policy line %u: %s", line, what);
	return false;
}

/* Let-dig [Ldh-str] labels, dot-separated, 1..63 each, 253 in all, with
 * an optional trailing dot; lower-cased into out. */
static bool mx_domain(struct cur *c, char *out, size_t out_len)
{
	size_t o = 0, label = 0;

	while (!at_end(c) && (is_alnum(*c->p) || *c->p == '-' || *c->p == '.')) {
		char ch = *c->p++;

		if (ch == '.') {
			if (label == 0 || out[o - 1] == '-')
				return false;
			label = 0;
		} else if ((label == 0 && ch == '-') || ++label > 63) {
			return false;
		}
		if (o + 1 >= out_len || o >= 255)
			return false;
		out[o++] = (ch >= 'A' && ch <= 'Z') ? (char)(ch - 'A' + 'a') : ch;
	}
	if (o > 0 && out[o - 1] == '.')
		o--; /* "mx.example.com." */
	if (o == 0 || o > 253 || out[o - 1] == '-' || out[o - 1] == '.')
		return false;
	out[o] = '\0';
	return true;
}

static bool mx_value(struct cur *c, struct sts_policy *p)
{
	char *out;

	if (p->n_mx >= STS_MAX_MX)
		return false;
	out = p->mx[p->n_mx];
	if (take(c, "*.")) {
		memcpy(out, "*.", 2);
		out += 2;
	}
	if (!mx_domain(c, out, STS_MX_LEN - 2))
		return false;
	p->n_mx++;
	return true;
}

/* 1*10(DIGIT), capped at STS_MAX_AGE_MAX. */
static bool max_age_value(struct cur *c, unsigned long *out)
{
	unsigned long v = 0;
	size_t n = 0;

	while (!at_end(c) && is_digit(*c->p) && n < 10) {
		v = v * 10 + (unsigned long)(*c->p++ - '0');
		n++;
	}
	if (n == 0 || (!at_end(c) && is_digit(*c->p)))
		return false;
	*out = v > STS_MAX_AGE_MAX ? STS_MAX_AGE_MAX : v;
	return true;
}

static bool mode_value(struct cur *c, enum sts_mode *out)
{
	if (take(c, "enforce"))
		*out = STS_MODE_ENFORCE;
	else if (take(c, "testing"))
		*out = STS_MODE_TESTING;
	else if (take(c, "none"))
		*out = STS_MODE_NONE;
	else
		return false;
	return true;
}

/* sts-policy-ext-value: VCHAR (or UTF-8) runs with inner spaces. */
static bool ext_policy_value(struct cur *c)
{
	const char *start = c->p;

	while (!at_end(c) && ((unsigned char)*c->p > 0x20 && *c->p != 0x7f))
		c->p++;
	while (!at_end(c) && c->p > start && *c->p == ' ') {
		skip_wsp(c);
		while (!at_end(c) &&
		       ((unsigned char)*c->p > 0x20 && *c->p != 0x7f))
			c->p++;
	}
	return c->p > start;
}

/* The value of one known key (a duplicate is read, and ignored). */
static bool known_value(struct cur *c, const char *key, struct sts_policy *p,
			struct seen *s)
{
	struct sts_policy scratch;

	if (strcmp(key, "version") == 0) {
		s->version = true;
		return take(c, "STSv1");
	}
	if (strcmp(key, "mode") == 0) {
		bool first = !s->mode;

		s->mode = true;
		return mode_value(c, first ? &p->mode : &scratch.mode);
	}
	if (strcmp(key, "max_age") == 0) {
		bool first = !s->max_age;

		s->max_age = true;
		return max_age_value(c, first ? &p->max_age : &scratch.max_age);
	}
	return mx_value(c, p); /* "mx": each one counts */
}

static bool is_known(const char *key)
{
	return strcmp(key, "version") == 0 || strcmp(key, "mode") == 0 ||
	       strcmp(key, "max_age") == 0 || strcmp(key, "mx") == 0;
}

/* One "key: value" line (without its terminator). */
static bool policy_line(struct cur *c, struct sts_policy *p, struct seen *s,
			char *why, size_t why_len, unsigned line)
{
	char key[33];
	size_t n = name_len(c);
	bool ok;

	if (n == 0)
		return fail(why, why_len, line, "not a \"key: value\" line");
	snprintf(key, sizeof(key), "%.*s", (int)n, c->p);
	c->p += n;
	if (!take(c, ":"))
		return fail(why, why_len, line, "no \":\" after the key");
	skip_wsp(c);
	if (is_known(key)) {
		ok = known_value(c, key, p, s);
		if (!ok && strcmp(key, "mx") == 0 && p->n_mx >= STS_MAX_MX)
			return fail(why, why_len, line, "too many mx patterns");
	} else {
		ok = ext_policy_value(c);
	}
	skip_wsp(c);
	if (!ok || !at_end(c)) {
		snprintf(why, why_len, "policy line %u: malformed %s value",
			 line, key);
		return false;
	}
	return true;
}

/* The required keys, once every line is read. */
static bool policy_complete(const struct sts_policy *p, const struct seen *s,
			    char *why, size_t why_len)
{
	const char *missing = !s->version   ? "version"
			      : !s->mode    ? "mode"
			      : !s->max_age ? "max_age"
			      : p->mode != STS_MODE_NONE && p->n_mx == 0
				      ? "mx"
				      : NULL;

	if (missing == NULL)
		return true;
	snprintf(why, why_len, "policy has no %s", missing);
	return false;
}

bool sts_policy_parse(const char *text, size_t len, struct sts_policy *out,
		      char *why, size_t why_len)
{
	const char *p = text, *end = text + len;
	struct seen s = {false, false, false};
	unsigned line = 0;

	memset(out, 0, sizeof(*out));
	if (len > STS_POLICY_MAX) {
		snprintf(why, why_len, "policy larger than %d octets",
			 STS_POLICY_MAX);
		return false;
	}
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *stop = nl != NULL ? nl : end;
		struct cur c = {p, stop};

		line++;
		if (c.end > c.p && c.end[-1] == '\r')
			c.end--;
		if (memchr(c.p, '\r', (size_t)(c.end - c.p)) != NULL ||
		    memchr(c.p, '\0', (size_t)(c.end - c.p)) != NULL)
			return fail(why, why_len, line,
				    "a CR or NUL inside a line");
		if (c.end > c.p &&
		    !policy_line(&c, out, &s, why, why_len, line))
			return false;
		p = nl != NULL ? nl + 1 : end;
	}
	return policy_complete(out, &s, why, why_len);
}

/* ---- MX patterns ----------------------------------------------------------- */

static bool same_name(const char *a, size_t an, const char *b, size_t bn)
{
	if (an != bn)
		return false;
	for (size_t i = 0; i < an; i++) {
		char x = a[i], y = b[i];

		if (x >= 'A' && x <= 'Z')
			x = (char)(x - 'A' + 'a');
		if (y >= 'A' && y <= 'Z')
			y = (char)(y - 'A' + 'a');
		if (x != y)
			return false;
	}
	return true;
}

static bool pattern_match(const char *pat, const char *host, size_t n)
{
	const char *dot;

	if (pat[0] != '*')
		return same_name(pat, strlen(pat), host, n);
	/* "*.example.com": one label, then exactly "example.com" */
	dot = memchr(host, '.', n);
	return dot != NULL && dot > host &&
	       same_name(pat + 2, strlen(pat + 2), dot + 1,
			 n - (size_t)(dot + 1 - host));
}

bool sts_mx_match(const struct sts_policy *p, const char *host)
{
	size_t n = strlen(host);

	if (n > 0 && host[n - 1] == '.')
		n--;
	if (n == 0)
		return false;
	for (unsigned i = 0; i < p->n_mx && i < STS_MAX_MX; i++)
		if (pattern_match(p->mx[i], host, n))
			return true;
	return false;
}

void sts_mx_text(const struct sts_policy *p, char *out, size_t len)
{
	size_t o = 0;

	if (len == 0)
		return;
	out[0] = '\0';
	for (unsigned i = 0; i < p->n_mx && i < STS_MAX_MX; i++) {
		size_t need = strlen(p->mx[i]) + (i > 0);

		if (o + need >= len) {
			if (len >= 4)
				memcpy(out + (o + 4 <= len ? o : len - 4),
				       "...", 4);
			return;
		}
		snprintf(out + o, len - o, "%s%s", i > 0 ? "," : "", p->mx[i]);
		o += need;
	}
}

/* ---- the cache header ------------------------------------------------------ */

static const char CACHE_MAGIC[] = "smtpgw-sts-cache: 1\n";

static bool valid_id(const char *id)
{
	size_t n = strlen(id);

	if (n == 0 || n > STS_ID_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!is_alnum(id[i]))
			return false;
	return true;
}

size_t sts_cache_header(char *out, size_t len, const char *id,
			long long fetched)
{
	int n;

	if (!valid_id(id) || fetched < 0)
		return 0;
	n = snprintf(out, len, "%sid: %s\nfetched: %lld\n\n", CACHE_MAGIC, id,
		     fetched);
	return n > 0 && (size_t)n < len ? (size_t)n : 0;
}

/* "KEY: VALUE\n" at the cursor: the value's octets, or false. */
static bool header_line(struct cur *c, const char *key, const char **v,
			size_t *n)
{
	const char *nl;

	if (!take(c, key) || !take(c, ": "))
		return false;
	nl = memchr(c->p, '\n', (size_t)(c->end - c->p));
	if (nl == NULL)
		return false;
	*v = c->p;
	*n = (size_t)(nl - c->p);
	c->p = nl + 1;
	return true;
}

bool sts_cache_parse(const char *data, size_t len, struct sts_cached *out)
{
	struct cur c = {data, data + len};
	const char *v;
	size_t n;
	long long t = 0;

	memset(out, 0, sizeof(*out));
	if (!take(&c, CACHE_MAGIC) || !header_line(&c, "id", &v, &n) ||
	    n == 0 || n > STS_ID_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!is_alnum(v[i]))
			return false;
	memcpy(out->id, v, n);
	out->id[n] = '\0';
	/* canonical: no leading zero, so the header writes back the same */
	if (!header_line(&c, "fetched", &v, &n) || n == 0 || n > 12 ||
	    (n > 1 && v[0] == '0'))
		return false;
	for (size_t i = 0; i < n; i++) {
		if (!is_digit(v[i]))
			return false;
		t = t * 10 + (v[i] - '0');
	}
	if (!take(&c, "\n"))
		return false;
	out->fetched = t;
	out->policy = c.p;
	out->policy_len = (size_t)(c.end - c.p);
	return out->policy_len <= STS_POLICY_MAX;
}
