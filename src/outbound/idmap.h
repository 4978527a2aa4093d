/*
 * idmap: an intrusive hash table keyed by a 64-bit number, for the queue
 * manager's lookups by queue id, job id and destination (O(1) on average,
 * never a walk over everything). The caller embeds a struct idmap_node in
 * its object and owns the object; the map owns only its bucket array.
 * Several nodes may share a key (a destination's key is a hash of its
 * name): idmap_first and idmap_next visit them. Pure: no I/O.
 */
#ifndef SMTPGW_IDMAP_H
#define SMTPGW_IDMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct idmap_node {
	struct idmap_node *next;
	uint64_t key;
};

struct idmap {
	struct idmap_node **buckets;
	size_t mask;  /* buckets - 1; the count is a power of two */
	size_t count; /* nodes in the map */
};

/* An empty map; false when out of memory. */
bool idmap_init(struct idmap *m);
/* Frees the buckets (the nodes are the caller's). */
void idmap_free(struct idmap *m);

/* Adds `n` under `key`. The table doubles when it holds as many nodes as
 * buckets; a table that cannot grow stays as it is (slower, still right). */
void idmap_insert(struct idmap *m, struct idmap_node *n, uint64_t key);
/* `n` must be in the map. */
void idmap_remove(struct idmap *m, struct idmap_node *n);

/* The first node with `key`, then the next one with the same key; NULL
 * when there is none (left). */
struct idmap_node *idmap_first(const struct idmap *m, uint64_t key);
struct idmap_node *idmap_next(const struct idmap_node *n);

/* Any node of the map, or NULL when it is empty: for taking everything
 * out at teardown. `*cursor` starts at 0 and only grows. */
struct idmap_node *idmap_any(const struct idmap *m, size_t *cursor);

/* 64-bit FNV-1a of a string, folded to lower case (domain names). */
uint64_t idmap_hash_name(const char *s);

#endif
