/*
 * pattern: Lua 5.1 patterns (reference manual §5.4.1: classes, sets,
 * quantifiers * + - ?, anchors, captures and position captures, %1-%9,
 * %b, %f) matched in C with a step budget, for the policy sandbox. Written
 * from the manual's rules; it behaves as LuaJIT's own matcher, including
 * its 5.1 habits (a pattern ends at its first NUL; '^' anchors only where
 * the caller says so) and its one addition, the class %g (printable, not
 * space). Pure: no Lua, no I/O, no allocation. It builds no
 * result either: the caller reads the captures from the state.
 *
 * Every PATTERN_TICK steps (a step is one character tested or one item
 * tried) the caller's tick function is asked whether the work may go on;
 * when it says no, matching stops at once and the call reports
 * PATTERN_STOPPED. Recursion is bounded by PATTERN_MAXDEPTH.
 */
#ifndef SMTPGW_PATTERN_H
#define SMTPGW_PATTERN_H

#include <stdbool.h>
#include <stddef.h>

enum {
	PATTERN_MAXCAPTURES = 32,
	PATTERN_MAXDEPTH = 200,
	PATTERN_TICK = 4096,
};

/* A capture's len while it is open, or when it is a position capture. */
enum { PATTERN_CAP_OPEN = -1, PATTERN_CAP_POSITION = -2 };

enum pattern_status {
	PATTERN_NOMATCH,
	PATTERN_MATCH,
	PATTERN_ERROR,   /* malformed pattern: see error */
	PATTERN_STOPPED, /* the tick function said no */
};

struct pattern_capture {
	const char *start;
	ptrdiff_t len;
};

struct pattern {
	const char *src, *src_end; /* the subject */
	const char *pat, *pat_end; /* the pattern, after any '^' */
	bool anchored;             /* the pattern began with '^' */
	/* tick(ud) → false stops the match */
	bool (*tick)(void *ud);
	void *ud;
	unsigned long steps; /* in all, since pattern_init */
	unsigned countdown;  /* steps left before the next tick */
	int depth;
	int level; /* captures in cap[] */
	enum pattern_status status;
	const char *error; /* static text, when status is PATTERN_ERROR */
	struct pattern_capture cap[PATTERN_MAXCAPTURES];
};

/* Prepares a match of subject s against pattern p. `anchor` says whether a
 * leading '^' anchors (find, match, gsub) or is an ordinary character
 * (gmatch). The pattern ends at its first NUL, as in Lua 5.1. */
void pattern_init(struct pattern *m, const char *s, size_t s_len, const char *p,
                  size_t p_len, bool anchor, bool (*tick)(void *ud), void *ud);

/* Tries the pattern at subject position `at` only. Returns PATTERN_MATCH
 * and sets *end, or another status; captures are in m->cap[0..level). */
enum pattern_status pattern_match_at(struct pattern *m, const char *at,
                                     const char **end);

/* Tries every position from `at` (only `at` when anchored). Sets *start
 * and *end on a match. */
enum pattern_status pattern_search(struct pattern *m, const char *at,
                                   const char **start, const char **end);

/* True when p has none of the special characters ^$*+?.([%- (anywhere,
 * past a NUL too, as LuaJIT decides): a plain search does the same work. */
bool pattern_is_plain(const char *p, size_t p_len);

/* Plain search of needle in hay, first occurrence, O(hay + needle). */
const char *pattern_find_plain(const char *hay, size_t hay_len,
                               const char *needle, size_t needle_len);

#endif
