/*
 * pattern: Lua 5.1 patterns with a step budget (see pattern.h). Owns only
 * the matching; it must stay pure (no Lua, no I/O, no allocation), and every
 * loop over the subject or the pattern must spend steps, so that no input
 * can keep it running past the caller's tick.
 */
#include "policy/pattern.h"

#include <string.h>

typedef unsigned char uchar;

static const char *fail(struct pattern *m, const char *error)
{
	if (m->status != PATTERN_STOPPED) {
		m->status = PATTERN_ERROR;
		m->error = error;
	}
	m->countdown = 1; /* the next spend() stops */
	return NULL;
}

/* The slow half of spend(): every PATTERN_TICK steps, and after a stop. */
static bool tick_slow(struct pattern *m)
{
	if (m->status == PATTERN_ERROR || m->status == PATTERN_STOPPED) {
		m->countdown = 1; /* every later spend() comes back here */
		return false;
	}
	m->countdown = PATTERN_TICK;
	if (m->tick != NULL && !m->tick(m->ud)) {
		m->status = PATTERN_STOPPED;
		m->countdown = 1;
		return false;
	}
	return true;
}

/* Spends n steps; false when matching must stop (the tick said no, or an
 * error). Between ticks it only counts: every loop that goes on after a
 * false or a NULL checks aborted(). */
static inline bool spend(struct pattern *m, unsigned n)
{
	m->steps += n;
	if (m->countdown > n) {
		m->countdown -= n;
		return true;
	}
	return tick_slow(m);
}

static bool aborted(const struct pattern *m)
{
	return m->status == PATTERN_ERROR || m->status == PATTERN_STOPPED;
}

/* ---- single characters ------------------------------------------------ */

/* The classes of the ASCII "C" locale, as LuaJIT's own matcher has them
 * (never the process's locale), one bit per class letter. */
enum {
	C_ALPHA = 1 << 0,
	C_CNTRL = 1 << 1,
	C_DIGIT = 1 << 2,
	C_LOWER = 1 << 3,
	C_PUNCT = 1 << 4,
	C_SPACE = 1 << 5,
	C_UPPER = 1 << 6,
	C_XDIGIT = 1 << 7,
};

static unsigned char class_bits(int c)
{
	unsigned char b = 0;

	if (c >= 'a' && c <= 'z')
		b |= C_ALPHA | C_LOWER;
	if (c >= 'A' && c <= 'Z')
		b |= C_ALPHA | C_UPPER;
	if (c >= '0' && c <= '9')
		b |= C_DIGIT | C_XDIGIT;
	if ((c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))
		b |= C_XDIGIT;
	if (c < 32 || c == 127)
		b |= C_CNTRL;
	if (c == ' ' || (c >= '\t' && c <= '\r'))
		b |= C_SPACE;
	if (c > 32 && c < 127 && !(b & (C_ALPHA | C_DIGIT)))
		b |= C_PUNCT;
	return b;
}

static unsigned char classes[256];

static void classes_init(void)
{
	if (classes['a'] != 0)
		return;
	for (int c = 0; c < 256; c++)
		classes[c] = class_bits(c);
}

/* The bits of each class letter (lower case); 0: not a class. */
static const unsigned char letter_class[26] = {
    ['a' - 'a'] = C_ALPHA,
    ['c' - 'a'] = C_CNTRL,
    ['d' - 'a'] = C_DIGIT,
    ['g' - 'a'] = C_ALPHA | C_DIGIT | C_PUNCT, /* LuaJIT's addition */
    ['l' - 'a'] = C_LOWER,
    ['p' - 'a'] = C_PUNCT,
    ['s' - 'a'] = C_SPACE,
    ['u' - 'a'] = C_UPPER,
    ['w' - 'a'] = C_ALPHA | C_DIGIT,
    ['x' - 'a'] = C_XDIGIT,
};

/* %a, %d, ... : the class letter `cl` (upper case: the complement); any
 * other character after '%' stands for itself. */
static bool in_class(int c, int cl)
{
	int lower = cl | 0x20;
	bool r;

	if (!(classes[cl] & C_ALPHA))
		return cl == c;
	if (lower == 'z')
		r = c == 0;
	else if (letter_class[lower - 'a'] != 0)
		r = (classes[c] & letter_class[lower - 'a']) != 0;
	else
		return cl == c;
	return classes[cl] & C_UPPER ? !r : r;
}

/* A set "[...]" from `p` (at '[') to `close` (at its ']'). */
static bool in_set(int c, const char *p, const char *close)
{
	bool want = true;

	p++;
	if (*p == '^') {
		want = false;
		p++;
	}
	for (; p < close; p++) {
		if (*p == '%' && p + 1 < close) {
			p++;
			if (in_class(c, (uchar)*p))
				return want;
		} else if (p + 2 < close && p[1] == '-') {
			if ((uchar)p[0] <= c && c <= (uchar)p[2])
				return want;
			p += 2;
		} else if ((uchar)*p == c) {
			return want;
		}
	}
	return !want;
}

/* The end of the single-character class at p (just past it). */
static const char *class_end(struct pattern *m, const char *p)
{
	const char *end = m->pat_end;

	if (*p == '%') {
		if (p + 1 >= end)
			return fail(m, "malformed pattern (ends with '%')");
		return p + 2;
	}
	if (*p != '[')
		return p + 1;
	p++;
	if (p < end && *p == '^')
		p++;
	/* the first character of a set is itself, even ']' */
	do {
		if (p >= end)
			return fail(m, "malformed pattern (missing ']')");
		if (*p == '%' && p + 1 < end)
			p++;
		p++;
	} while (p >= end || *p != ']');
	return p + 1;
}

static bool single(int c, const char *p, const char *ep)
{
	switch (*p) {
	case '.':
		return true;
	case '%':
		return in_class(c, (uchar)p[1]);
	case '[':
		return in_set(c, p, ep - 1);
	default:
		return (uchar)*p == c;
	}
}

/* The class at p..ep matches the subject at s. */
static bool here(const struct pattern *m, const char *s, const char *p,
                 const char *ep)
{
	return s < m->src_end && single((uchar)*s, p, ep);
}

/* ---- items ------------------------------------------------------------ */

static const char *match(struct pattern *m, const char *s, const char *p);

/* x* or x+: the longest run first, then shorter ones. */
static const char *max_expand(struct pattern *m, const char *s, const char *p,
                              const char *ep)
{
	ptrdiff_t n = 0;
	const char *r;

	while (here(m, s + n, p, ep)) {
		if (!spend(m, 1))
			return NULL;
		n++;
	}
	for (; n >= 0; n--) {
		r = match(m, s + n, ep + 1);
		if (r != NULL || aborted(m))
			return r;
	}
	return NULL;
}

/* x-: the shortest run first. */
static const char *min_expand(struct pattern *m, const char *s, const char *p,
                              const char *ep)
{
	const char *r;

	for (;;) {
		r = match(m, s, ep + 1);
		if (r != NULL || aborted(m))
			return r;
		if (!here(m, s, p, ep))
			return NULL;
		s++;
	}
}

static const char *open_capture(struct pattern *m, const char *s, const char *p,
                                ptrdiff_t what)
{
	const char *r;

	if (m->level >= PATTERN_MAXCAPTURES)
		return fail(m, "too many captures");
	m->cap[m->level].start = s;
	m->cap[m->level].len = what;
	m->level++;
	r = match(m, s, p);
	if (r == NULL)
		m->level--;
	return r;
}

static const char *close_capture(struct pattern *m, const char *s,
                                 const char *p)
{
	int l = m->level - 1;
	const char *r;

	while (l >= 0 && m->cap[l].len != PATTERN_CAP_OPEN)
		l--;
	if (l < 0)
		return fail(m, "invalid pattern capture");
	m->cap[l].len = s - m->cap[l].start;
	r = match(m, s, p);
	if (r == NULL)
		m->cap[l].len = PATTERN_CAP_OPEN;
	return r;
}

/* %bxy at p (p points at 'x'). */
static const char *balance(struct pattern *m, const char *s, const char *p)
{
	int depth = 1;

	if (p + 1 >= m->pat_end)
		return fail(m, "unbalanced pattern");
	if (s >= m->src_end || *s != p[0])
		return NULL;
	while (++s < m->src_end) {
		if (!spend(m, 1))
			return NULL;
		if (*s == p[1]) {
			if (--depth == 0)
				return s + 1;
		} else if (*s == p[0]) {
			depth++;
		}
	}
	return NULL;
}

/* %1..%9 at p (p points at the digit). */
static const char *backref(struct pattern *m, const char *s, const char *p)
{
	int l = *p - '1';
	size_t len;

	if (l < 0 || l >= m->level || m->cap[l].len == PATTERN_CAP_OPEN)
		return fail(m, "invalid capture index");
	if (m->cap[l].len < 0) /* a position capture matches nothing */
		return NULL;
	len = (size_t)m->cap[l].len;
	if (!spend(m, (unsigned)(len / 16 + 1)))
		return NULL;
	if ((size_t)(m->src_end - s) < len ||
	    memcmp(m->cap[l].start, s, len) != 0)
		return NULL;
	return s + len;
}

/* %f[set] at p (p points at 'f'); returns the end of the set, NULL when
 * the frontier is not at s. */
static const char *frontier(struct pattern *m, const char *s, const char *p)
{
	const char *ep;
	int prev, cur;

	p++;
	if (p >= m->pat_end || *p != '[')
		return fail(m, "missing '[' after '%f' in pattern");
	ep = class_end(m, p);
	if (ep == NULL)
		return NULL;
	prev = s == m->src ? 0 : (uchar)s[-1];
	cur = s < m->src_end ? (uchar)*s : 0;
	if (in_set(prev, p, ep - 1) || !in_set(cur, p, ep - 1))
		return NULL;
	return ep;
}

/*
 * One item of the pattern at *p against the subject at *s. Items that
 * consume and go on (a plain class, x? when the rest fails with x, %b, %f,
 * %1-%9) move *s and *p and return ITEM_NEXT: match() loops rather than
 * recurses, so a long pattern of plain items costs no depth. The others
 * decide the whole rest of the match and leave it in *r.
 */
enum item_result { ITEM_NEXT, ITEM_DONE };

static enum item_result done(const char **r, const char *value)
{
	*r = value;
	return ITEM_DONE;
}

static enum item_result quantified(struct pattern *m, const char **s,
                                   const char **p, const char **r)
{
	const char *ep = class_end(m, *p);
	bool hit;

	if (ep == NULL)
		return done(r, NULL);
	hit = here(m, *s, *p, ep);
	switch (ep < m->pat_end ? *ep : '\0') {
	case '?':
		if (hit) {
			*r = match(m, *s + 1, ep + 1);
			if (*r != NULL || aborted(m))
				return ITEM_DONE;
		}
		*p = ep + 1;
		return ITEM_NEXT;
	case '+':
		return done(r, hit ? max_expand(m, *s + 1, *p, ep) : NULL);
	case '*':
		return done(r, max_expand(m, *s, *p, ep));
	case '-':
		return done(r, min_expand(m, *s, *p, ep));
	default:
		if (!hit)
			return done(r, NULL);
		(*s)++;
		*p = ep;
		return ITEM_NEXT;
	}
}

/* '%' items other than a class: %b, %f, %1-%9. */
static enum item_result escape_item(struct pattern *m, const char **s,
                                    const char **p, const char **r)
{
	const char *next;

	switch ((*p)[1]) {
	case 'b':
		next = balance(m, *s, *p + 2);
		if (next == NULL)
			return done(r, NULL);
		*s = next;
		*p += 4;
		return ITEM_NEXT;
	case 'f':
		next = frontier(m, *s, *p + 1);
		if (next == NULL)
			return done(r, NULL);
		*p = next;
		return ITEM_NEXT;
	default:
		if ((*p)[1] < '0' || (*p)[1] > '9')
			return quantified(m, s, p, r);
		next = backref(m, *s, *p + 1);
		if (next == NULL)
			return done(r, NULL);
		*s = next;
		*p += 2;
		return ITEM_NEXT;
	}
}

static enum item_result item(struct pattern *m, const char **s, const char **p,
                             const char **r)
{
	const char *q = *p;

	switch (*q) {
	case '(':
		if (q + 1 < m->pat_end && q[1] == ')')
			return done(r, open_capture(m, *s, q + 2,
			                            PATTERN_CAP_POSITION));
		return done(r, open_capture(m, *s, q + 1, PATTERN_CAP_OPEN));
	case ')':
		return done(r, close_capture(m, *s, q + 1));
	case '$':
		if (q + 1 == m->pat_end)
			return done(r, *s == m->src_end ? *s : NULL);
		return quantified(m, s, p, r);
	case '%':
		if (q + 1 < m->pat_end)
			return escape_item(m, s, p, r);
		return quantified(m, s, p, r);
	default:
		return quantified(m, s, p, r);
	}
}

/* The rest of the pattern from p against the subject from s. */
static const char *match(struct pattern *m, const char *s, const char *p)
{
	const char *r = NULL;

	if (m->depth >= PATTERN_MAXDEPTH)
		return fail(m, "pattern too complex");
	m->depth++;
	for (;;) {
		if (!spend(m, 1)) {
			r = NULL;
			break;
		}
		if (p == m->pat_end) {
			r = s;
			break;
		}
		if (item(m, &s, &p, &r) == ITEM_DONE)
			break;
	}
	m->depth--;
	return r;
}

/* ---- entry points ----------------------------------------------------- */

void pattern_init(struct pattern *m, const char *s, size_t s_len, const char *p,
                  size_t p_len, bool anchor, bool (*tick)(void *ud), void *ud)
{
	const char *nul = memchr(p, '\0', p_len);

	classes_init();
	memset(m, 0, sizeof(*m));
	m->src = s;
	m->src_end = s + s_len;
	m->pat = p;
	m->pat_end = nul != NULL ? nul : p + p_len;
	if (anchor && m->pat < m->pat_end && *m->pat == '^') {
		m->anchored = true;
		m->pat++;
	}
	m->tick = tick;
	m->ud = ud;
	m->countdown = PATTERN_TICK;
	m->status = PATTERN_NOMATCH;
}

enum pattern_status pattern_match_at(struct pattern *m, const char *at,
                                     const char **end)
{
	const char *r;

	m->level = 0;
	m->depth = 0;
	r = match(m, at, m->pat);
	if (aborted(m))
		return m->status;
	if (r == NULL)
		return PATTERN_NOMATCH;
	*end = r;
	return PATTERN_MATCH;
}

enum pattern_status pattern_search(struct pattern *m, const char *at,
                                   const char **start, const char **end)
{
	enum pattern_status st;

	for (;;) {
		st = pattern_match_at(m, at, end);
		if (st != PATTERN_NOMATCH) {
			*start = at;
			return st;
		}
		if (m->anchored || at >= m->src_end)
			return PATTERN_NOMATCH;
		at++;
	}
}

bool pattern_is_plain(const char *p, size_t p_len)
{
	static const bool special[256] = {
	    ['^'] = true, ['$'] = true, ['*'] = true, ['+'] = true,
	    ['?'] = true, ['.'] = true, ['('] = true, ['['] = true,
	    ['%'] = true, ['-'] = true,
	};

	/* the whole text counts, NULs and what follows them too, as in
	 * LuaJIT: "a\0." is a pattern (which then ends at its NUL) */
	for (size_t i = 0; i < p_len; i++)
		if (special[(uchar)p[i]])
			return false;
	return true;
}

const char *pattern_find_plain(const char *hay, size_t hay_len,
                               const char *needle, size_t needle_len)
{
	if (needle_len == 0)
		return hay;
	return memmem(hay, hay_len, needle, needle_len);
}
