/*
 * suggest: edit distance over short words, three rows of a fixed table.
 * Owns nothing; must not allocate or do I/O (unit-tested by
 * spec/c/test_suggest.c).
 */
#include "policy/suggest.h"

#include <string.h>

static unsigned min3(unsigned a, unsigned b, unsigned c)
{
	unsigned m = a < b ? a : b;

	return m < c ? m : c;
}

unsigned suggest_distance(const char *a, const char *b)
{
	unsigned rows[3][SUGGEST_MAX_LEN + 1];
	size_t na = strlen(a), nb = strlen(b);
	unsigned *prev2 = rows[0], *prev = rows[1], *cur = rows[2];

	if (na > SUGGEST_MAX_LEN || nb > SUGGEST_MAX_LEN)
		return SUGGEST_MAX_LEN + 1;
	for (size_t j = 0; j <= nb; j++)
		prev[j] = (unsigned)j;
	for (size_t i = 1; i <= na; i++) {
		unsigned *oldest = prev2;

		cur[0] = (unsigned)i;
		for (size_t j = 1; j <= nb; j++) {
			unsigned cost = a[i - 1] != b[j - 1];

			cur[j] = min3(prev[j] + 1, cur[j - 1] + 1,
			              prev[j - 1] + cost);
			if (i > 1 && j > 1 && a[i - 1] == b[j - 2] &&
			    a[i - 2] == b[j - 1] && prev2[j - 2] + 1 < cur[j])
				cur[j] = prev2[j - 2] + 1;
		}
		prev2 = prev;
		prev = cur;
		cur = oldest;
	}
	return prev[nb];
}

const char *suggest_nearest(const char *word, const char *const *words,
                            size_t n, unsigned max_distance)
{
	const char *best = NULL;
	unsigned best_d = max_distance + 1;

	for (size_t i = 0; i < n; i++) {
		unsigned d = suggest_distance(word, words[i]);

		if (d == 0)
			return NULL;
		if (d < best_d) {
			best = words[i];
			best_d = d;
		}
	}
	return best;
}
