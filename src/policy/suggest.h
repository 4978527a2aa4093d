/*
 * suggest: "did you mean ...?" for a misspelt name — the nearest of a few
 * known words by edit distance. Pure: no I/O, no allocation.
 */
#ifndef SMTPGW_SUGGEST_H
#define SMTPGW_SUGGEST_H

#include <stddef.h>

enum { SUGGEST_MAX_LEN = 64 };

/* Optimal string alignment distance between a and b: insertions,
 * deletions, substitutions and swaps of two neighbours, one each; case
 * counts. A word longer than SUGGEST_MAX_LEN is SUGGEST_MAX_LEN + 1 away
 * from everything. */
unsigned suggest_distance(const char *a, const char *b);

/* The first of words[0..n) nearest to word, when at most max_distance
 * away and word is not one of them; else NULL. */
const char *suggest_nearest(const char *word, const char *const *words,
                            size_t n, unsigned max_distance);

#endif
