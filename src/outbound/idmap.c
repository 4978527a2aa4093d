/*
 * idmap: chained buckets, a power of two of them, indexed by a multiplicative
 * hash of the key (queue and job ids are sequential: their low bits alone
 * would do, a hash of a name would not need it; the multiply serves both).
 * Owns the bucket array only; must not allocate or free a node.
 */
#include "outbound/idmap.h"

#include <stdlib.h>

enum { IDMAP_START = 16 };

static size_t slot(const struct idmap *m, uint64_t key)
{
	/* Fibonacci hashing: the high bits of key × 2^64/φ. */
	return (size_t)((key * 0x9e3779b97f4a7c15ULL) >> 32) & m->mask;
}

bool idmap_init(struct idmap *m)
{
	m->buckets = calloc(IDMAP_START, sizeof(*m->buckets));
	m->mask = IDMAP_START - 1;
	m->count = 0;
	return m->buckets != NULL;
}

void idmap_free(struct idmap *m)
{
	free(m->buckets);
	m->buckets = NULL;
	m->count = 0;
}

static void grow(struct idmap *m)
{
	size_t n = (m->mask + 1) * 2;
	struct idmap_node **old = m->buckets, **b = calloc(n, sizeof(*b));
	size_t old_n = m->mask + 1;

	if (b == NULL)
		return;
	m->buckets = b;
	m->mask = n - 1;
	for (size_t i = 0; i < old_n; i++) {
		struct idmap_node *node = old[i];

		while (node != NULL) {
			struct idmap_node *next = node->next;
			size_t s = slot(m, node->key);

			node->next = b[s];
			b[s] = node;
			node = next;
		}
	}
	free(old);
}

void idmap_insert(struct idmap *m, struct idmap_node *n, uint64_t key)
{
	size_t s;

	if (m->count >= m->mask + 1)
		grow(m);
	s = slot(m, key);
	n->key = key;
	n->next = m->buckets[s];
	m->buckets[s] = n;
	m->count++;
}

void idmap_remove(struct idmap *m, struct idmap_node *n)
{
	struct idmap_node **p = &m->buckets[slot(m, n->key)];

	while (*p != NULL && *p != n)
		p = &(*p)->next;
	if (*p == NULL)
		return;
	*p = n->next;
	n->next = NULL;
	m->count--;
}

static struct idmap_node *same_key(struct idmap_node *n, uint64_t key)
{
	while (n != NULL && n->key != key)
		n = n->next;
	return n;
}

struct idmap_node *idmap_first(const struct idmap *m, uint64_t key)
{
	return same_key(m->buckets[slot(m, key)], key);
}

struct idmap_node *idmap_next(const struct idmap_node *n)
{
	return same_key(n->next, n->key);
}

struct idmap_node *idmap_any(const struct idmap *m, size_t *cursor)
{
	for (; *cursor <= m->mask; (*cursor)++)
		if (m->buckets[*cursor] != NULL)
			return m->buckets[*cursor];
	return NULL;
}

uint64_t idmap_hash_name(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;

		if (c >= 'A' && c <= 'Z')
			c = (unsigned char)(c - 'A' + 'a');
		h = (h ^ c) * 0x100000001b3ULL;
	}
	return h;
}
