/*
 * limits: connection accounting shared by every inbound worker, in one
 * mmap(MAP_SHARED | MAP_ANONYMOUS) region made before fork. It must not
 * allocate after limits_new, log refusals (the listener does) or touch
 * sockets.
 *
 * The slots are the truth: slot i is held (used = 1) by one connection of
 * one worker, and records that client's key. Everything else (the count in
 * use, the free stack, the per-client counts) is derived from them and can
 * be rebuilt. One process-shared robust mutex guards the whole region:
 * admission is a compound check (total, reserve, the client's count and
 * rate window) and update, which one lock makes simple, and it is held for
 * well under a microsecond per connection. A process killed while holding
 * it leaves the next locker EOWNERDEAD: that locker rebuilds the derived
 * state from the slots (losing only the rate windows) and marks the mutex
 * consistent. A slot's `used` byte is written last when it is taken and
 * first when it is freed, so a half-done update never makes a slot look
 * held with half its key.
 *
 * The client table is open addressing with a seeded hash and a probe window
 * of PROBE entries. Entries are never emptied (only reused), so a lookup
 * stops at the first empty entry. When the window is full, an entry that
 * holds no connection is reused (losing its rate window, the oldest first);
 * when every entry in the window holds a connection, the client is refused
 * (LIMITS_TABLE_FULL). The table has at least twice as many entries as
 * there are slots, so that needs colliding keys; the seed is random.
 */
#include "inbound/limits.h"

#include "core/config.h"
#include "core/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>

enum {
	PROBE = 32,
	MIN_CLIENTS = 64,
	NO_CLIENT = UINT32_MAX,
	NO_WORKER = UINT16_MAX,
};

struct lslot {
	uint8_t key[16];
	uint32_t client; /* index in clients[]; NO_CLIENT when exempt */
	uint16_t worker;
	uint8_t used;
	uint8_t exempt;
};

struct lclient {
	uint8_t key[16];
	uint64_t rate_start;
	uint32_t count; /* slots held */
	uint32_t rate_count;
	uint8_t used;
};

struct shared {
	pthread_mutex_t mu;
	uint64_t seed;
	uint32_t n_slots;
	uint32_t n_clients; /* a power of two */
	uint32_t in_use;
	uint32_t free_top;
	uint32_t recoveries;
};

/* Per process: pointers into the mapping and this process's worker. */
struct limits {
	struct shared *sh;
	size_t map_len;
	uint32_t *free_stack;
	struct lslot *slots;
	struct lclient *clients;
	uint16_t worker;
};

/* ---------------------------------------------------------- pure parts */

static void mask_bits(uint8_t key[16], unsigned keep)
{
	for (unsigned i = 0; i < 16; i++) {
		unsigned lo = i * 8;

		if (keep <= lo)
			key[i] = 0;
		else if (keep < lo + 8)
			key[i] &= (uint8_t)(0xff << (lo + 8 - keep));
	}
}

static bool is_v4_mapped(const uint8_t a[16])
{
	static const uint8_t prefix[12] = {0, 0, 0, 0, 0,    0,
	                                   0, 0, 0, 0, 0xff, 0xff};

	return memcmp(a, prefix, sizeof(prefix)) == 0;
}

void limits_client_key(const struct sockaddr *sa, unsigned prefix_v4,
                       unsigned prefix_v6, uint8_t key[16])
{
	memset(key, 0, 16);
	if (sa->sa_family == AF_INET6) {
		memcpy(key, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
		if (!is_v4_mapped(key)) {
			mask_bits(key, prefix_v6 > 128 ? 128 : prefix_v6);
			return;
		}
	} else {
		key[10] = key[11] = 0xff;
		memcpy(key + 12, &((const struct sockaddr_in *)sa)->sin_addr,
		       4);
	}
	mask_bits(key, 96 + (prefix_v4 > 32 ? 32 : prefix_v4));
}

void limits_key_text(const uint8_t key[16], unsigned prefix_v4,
                     unsigned prefix_v6, char *out, size_t len)
{
	char ip[INET6_ADDRSTRLEN];

	if (is_v4_mapped(key)) {
		inet_ntop(AF_INET, key + 12, ip, sizeof(ip));
		snprintf(out, len, "%s/%u", ip, prefix_v4);
	} else {
		inet_ntop(AF_INET6, key, ip, sizeof(ip));
		snprintf(out, len, "%s/%u", ip, prefix_v6);
	}
}

uint32_t limits_rate_tick(uint64_t *start_ms, uint32_t *count, uint64_t now_ms,
                          uint64_t unit_ms)
{
	if (*count == 0 || now_ms < *start_ms ||
	    now_ms - *start_ms >= unit_ms) {
		*start_ms = now_ms;
		*count = 0;
	}
	if (*count < UINT32_MAX)
		(*count)++;
	return *count;
}

unsigned limits_reserved(unsigned max_connections, unsigned value, bool percent)
{
	unsigned long long r = value;

	if (percent)
		r = (unsigned long long)max_connections * value / 100;
	if (max_connections == 0)
		return 0;
	return r >= max_connections ? max_connections - 1 : (unsigned)r;
}

/* ------------------------------------------------------- client table */

/* MurmurHash3's 64-bit finalizer: every input bit moves every output bit,
 * so keys that differ only in their last octet spread over the table. */
static uint64_t mix64(uint64_t h)
{
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdull;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ull;
	h ^= h >> 33;
	return h;
}

static uint32_t key_hash(uint64_t seed, const uint8_t key[16])
{
	uint64_t a, b;

	memcpy(&a, key, 8);
	memcpy(&b, key + 8, 8);
	return (uint32_t)mix64(mix64(seed ^ a) ^ b);
}

static bool evictable_before(const struct lclient *c,
                             const struct lclient *best)
{
	return c->count == 0 &&
	       (best == NULL || c->rate_start < best->rate_start);
}

/* The entry for key, made (or reused) when missing; NO_CLIENT when every
 * entry in its probe window holds a connection. */
static uint32_t client_find_or_add(struct limits *l, const uint8_t key[16])
{
	uint32_t mask = l->sh->n_clients - 1;
	uint32_t h = key_hash(l->sh->seed, key);
	struct lclient *victim = NULL, *c = NULL;
	unsigned probe = PROBE < l->sh->n_clients ? PROBE : l->sh->n_clients;

	for (unsigned i = 0; i < probe; i++) {
		c = &l->clients[(h + i) & mask];
		if (!c->used)
			break;
		if (memcmp(c->key, key, 16) == 0)
			return (uint32_t)(c - l->clients);
		if (evictable_before(c, victim))
			victim = c;
		c = NULL;
	}
	if (c == NULL && (c = victim) == NULL)
		return NO_CLIENT;
	memset(c, 0, sizeof(*c));
	memcpy(c->key, key, 16);
	c->used = 1;
	return (uint32_t)(c - l->clients);
}

/* --------------------------------------------------------------- slots */

static void store_in_use(struct limits *l, uint32_t n)
{
	__atomic_store_n(&l->sh->in_use, n, __ATOMIC_RELAXED);
}

static void slot_free(struct limits *l, uint32_t i)
{
	struct lslot *s = &l->slots[i];

	__atomic_store_n(&s->used, 0, __ATOMIC_RELEASE);
	if (s->client != NO_CLIENT && l->clients[s->client].count > 0)
		l->clients[s->client].count--;
	l->free_stack[l->sh->free_top++] = i;
	store_in_use(l, l->sh->in_use - 1);
}

/* The derived state, from the slots alone (after a holder of the lock
 * died). Rate windows restart. */
static void rebuild(struct limits *l)
{
	uint32_t in_use = 0;

	memset(l->clients, 0, (size_t)l->sh->n_clients * sizeof(*l->clients));
	l->sh->free_top = 0;
	for (uint32_t i = l->sh->n_slots; i-- > 0;) {
		struct lslot *s = &l->slots[i];

		if (!s->used) {
			l->free_stack[l->sh->free_top++] = i;
			continue;
		}
		in_use++;
		s->client =
		    s->exempt ? NO_CLIENT : client_find_or_add(l, s->key);
		if (s->client != NO_CLIENT)
			l->clients[s->client].count++;
	}
	store_in_use(l, in_use);
	l->sh->recoveries++;
}

static void lock(struct limits *l)
{
	int rc = pthread_mutex_lock(&l->sh->mu);

	if (rc == EOWNERDEAD) {
		rebuild(l);
		pthread_mutex_consistent(&l->sh->mu);
		log_msg(LOG_WARN, "limits_recovered",
		        "a process died holding the connection table lock; "
		        "counts rebuilt from %u slot(s) in use",
		        l->sh->in_use);
	} else if (rc != 0) {
		log_msg(LOG_ERR, "limits_lock", "%s", strerror(rc));
		abort(); /* ENOTRECOVERABLE: nothing can be counted */
	}
}

static void unlock(struct limits *l)
{
	pthread_mutex_unlock(&l->sh->mu);
}

/* ------------------------------------------------------------ the API */

static bool init_mutex(pthread_mutex_t *mu)
{
	pthread_mutexattr_t a;
	bool ok;

	if (pthread_mutexattr_init(&a) != 0)
		return false;
	ok = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED) == 0 &&
	     pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST) == 0 &&
	     pthread_mutex_init(mu, &a) == 0;
	pthread_mutexattr_destroy(&a);
	return ok;
}

static uint32_t clients_for(uint32_t n_slots)
{
	uint32_t n = MIN_CLIENTS;

	while (n < 2 * (uint64_t)n_slots)
		n *= 2;
	return n;
}

static void place(struct limits *l, char *base)
{
	size_t off = sizeof(struct shared);

	l->sh = (struct shared *)(void *)base;
	off = (off + 63) & ~(size_t)63;
	l->slots = (struct lslot *)(void *)(base + off);
	off += (size_t)l->sh->n_slots * sizeof(struct lslot);
	off = (off + 63) & ~(size_t)63;
	l->clients = (struct lclient *)(void *)(base + off);
	off += (size_t)l->sh->n_clients * sizeof(struct lclient);
	l->free_stack = (uint32_t *)(void *)(base + off);
}

static size_t map_size(uint32_t n_slots, uint32_t n_clients)
{
	return 64 + sizeof(struct shared) + 64 +
	       (size_t)n_slots * (sizeof(struct lslot) + sizeof(uint32_t)) +
	       (size_t)n_clients * sizeof(struct lclient);
}

static struct limits *limits_new_sized(uint32_t n_slots, char *err,
                                       size_t err_len)
{
	struct limits *l = calloc(1, sizeof(*l));
	uint32_t n_clients = clients_for(n_slots);
	void *base;

	if (l == NULL) {
		snprintf(err, err_len, "connection table: out of memory");
		return NULL;
	}
	l->map_len = map_size(n_slots, n_clients);
	base = mmap(NULL, l->map_len, PROT_READ | PROT_WRITE,
	            MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (base == MAP_FAILED) {
		snprintf(err, err_len, "connection table (%zu bytes): %s",
		         l->map_len, strerror(errno));
		free(l);
		return NULL;
	}
	((struct shared *)base)->n_slots = n_slots;
	((struct shared *)base)->n_clients = n_clients;
	place(l, base);
	if (getrandom(&l->sh->seed, sizeof(l->sh->seed), 0) !=
	    sizeof(l->sh->seed))
		l->sh->seed = (uint64_t)(uintptr_t)base ^ 0x5bd1e995u;
	for (uint32_t i = n_slots; i-- > 0;)
		l->free_stack[l->sh->free_top++] = i;
	if (!init_mutex(&l->sh->mu)) {
		snprintf(err, err_len, "connection table: no shared mutex");
		limits_free(l);
		return NULL;
	}
	return l;
}

struct limits *limits_new(const struct config *cfg, char *err, size_t err_len)
{
	return limits_new_sized(cfg->max_connections, err, err_len);
}

void limits_free(struct limits *l)
{
	if (l == NULL)
		return;
	munmap(l->sh, l->map_len);
	free(l);
}

void limits_set_worker(struct limits *l, unsigned worker)
{
	l->worker = worker < NO_WORKER ? (uint16_t)worker : NO_WORKER - 1;
}

/* Under the lock: the per-client checks, counting this attempt. */
static enum limits_verdict check_client(struct limits *l,
                                        const struct limits_request *rq,
                                        const uint8_t key[16], uint32_t *client)
{
	struct lclient *c;
	uint32_t rate;

	if ((*client = client_find_or_add(l, key)) == NO_CLIENT)
		return LIMITS_TABLE_FULL;
	c = &l->clients[*client];
	rate = limits_rate_tick(&c->rate_start, &c->rate_count, rq->now_ms,
	                        LIMITS_RATE_UNIT_MS);
	if (c->count >= rq->max_per_client)
		return LIMITS_CLIENT;
	if (rq->rate_limit != 0 && rate > rq->rate_limit)
		return LIMITS_RATE;
	return LIMITS_OK;
}

static enum limits_verdict check(struct limits *l,
                                 const struct limits_request *rq,
                                 const uint8_t key[16], uint32_t *client)
{
	uint32_t max =
	    rq->max_total < l->sh->n_slots ? rq->max_total : l->sh->n_slots;

	*client = NO_CLIENT;
	if (l->sh->in_use >= max || l->sh->free_top == 0)
		return LIMITS_TOTAL;
	if (rq->exempt)
		return LIMITS_OK;
	if (l->sh->in_use + rq->reserved >= max)
		return LIMITS_RESERVED;
	return check_client(l, rq, key, client);
}

static uint32_t slot_take(struct limits *l, const uint8_t key[16],
                          uint32_t client, bool exempt)
{
	uint32_t i = l->free_stack[--l->sh->free_top];
	struct lslot *s = &l->slots[i];

	memcpy(s->key, key, 16);
	s->client = client;
	s->worker = l->worker;
	s->exempt = exempt;
	__atomic_store_n(&s->used, 1, __ATOMIC_RELEASE);
	if (client != NO_CLIENT)
		l->clients[client].count++;
	store_in_use(l, l->sh->in_use + 1);
	return i;
}

enum limits_verdict limits_admit(struct limits *l,
                                 const struct limits_request *rq,
                                 uint32_t *ticket)
{
	uint8_t key[16];
	uint32_t client;
	enum limits_verdict v;

	limits_client_key(rq->peer, rq->prefix_v4, rq->prefix_v6, key);
	lock(l);
	v = check(l, rq, key, &client);
	if (v == LIMITS_OK)
		*ticket = slot_take(l, key, client, rq->exempt);
	unlock(l);
	return v;
}

void limits_release(struct limits *l, uint32_t ticket)
{
	lock(l);
	if (ticket < l->sh->n_slots && l->slots[ticket].used &&
	    l->slots[ticket].worker == l->worker)
		slot_free(l, ticket);
	unlock(l);
}

unsigned limits_forget_worker(struct limits *l, unsigned worker)
{
	unsigned n = 0;

	lock(l);
	for (uint32_t i = 0; i < l->sh->n_slots; i++) {
		if (l->slots[i].used && l->slots[i].worker == worker) {
			slot_free(l, i);
			n++;
		}
	}
	unlock(l);
	return n;
}

unsigned limits_in_use(const struct limits *l)
{
	return __atomic_load_n(&l->sh->in_use, __ATOMIC_RELAXED);
}

unsigned limits_capacity(const struct limits *l)
{
	return l->sh->n_slots;
}
