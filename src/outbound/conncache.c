/*
 * conncache: idle outbound connections by what they were made for. A
 * doubly linked list, oldest first: parking appends, taking searches from
 * the newest end (the warmest connection, so the others age out), the
 * bound drops from the oldest end. Linear search: the list is bounded by
 * [delivery] max_connections. Never reads or writes a socket and never
 * frees an entry: entries belong to their owners, whose `close` ends them.
 */
#include "outbound/conncache.h"

#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct conncache {
	struct conncache_entry *oldest, *newest;
	size_t n, max;
};

struct conncache *conncache_new(size_t max_idle)
{
	struct conncache *cc = calloc(1, sizeof(*cc));

	if (cc != NULL)
		cc->max = max_idle;
	return cc;
}

static void unlink_entry(struct conncache_entry *e)
{
	struct conncache *cc = e->cache;

	if (e->prev != NULL)
		e->prev->next = e->next;
	else
		cc->oldest = e->next;
	if (e->next != NULL)
		e->next->prev = e->prev;
	else
		cc->newest = e->prev;
	e->prev = e->next = NULL;
	e->cache = NULL;
	cc->n--;
}

static void close_entry(struct conncache_entry *e)
{
	unlink_entry(e);
	e->close(e);
}

void conncache_free(struct conncache *cc)
{
	if (cc == NULL)
		return;
	while (cc->oldest != NULL)
		close_entry(cc->oldest);
	free(cc);
}

static bool same_addr(const struct sockaddr_storage *a,
		      const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return false;
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *x = (const struct sockaddr_in *)a;
		const struct sockaddr_in *y = (const struct sockaddr_in *)b;

		return x->sin_port == y->sin_port &&
		       x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	if (a->ss_family == AF_INET6) {
		const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)a;
		const struct sockaddr_in6 *y = (const struct sockaddr_in6 *)b;

		return x->sin6_port == y->sin6_port &&
		       x->sin6_scope_id == y->sin6_scope_id &&
		       memcmp(&x->sin6_addr, &y->sin6_addr,
			      sizeof(x->sin6_addr)) == 0;
	}
	return false; /* nothing else is ever connected to */
}

static bool same_tlsa(const struct conncache_key *a,
		      const struct conncache_key *b)
{
	if (a->n_tlsa != b->n_tlsa)
		return false;
	for (size_t i = 0; i < a->n_tlsa; i++) {
		const struct tlsa_rr *x = &a->tlsa[i], *y = &b->tlsa[i];

		if (x->usage != y->usage || x->selector != y->selector ||
		    x->mtype != y->mtype || x->len != y->len ||
		    memcmp(x->data, y->data, x->len) != 0)
			return false;
	}
	return true;
}

/* The TLS a transaction asking for `want` needs from the connection. */
static bool tls_serves(const struct conncache_key *want,
		       const struct conncache_state *st)
{
	if (want->cert_check && st->tls && !st->checked)
		return false;
	if (want->n_tlsa > 0)
		return st->tls && st->dane;
	switch (want->level) {
	case TLS_LEVEL_NONE:
	case TLS_LEVEL_MAY:
	case TLS_LEVEL_DANE: /* without TLSA records: as may */
		return true;
	case TLS_LEVEL_ENCRYPT:
		return st->tls;
	case TLS_LEVEL_VERIFY:
	case TLS_LEVEL_STS: /* an enforced MTA-STS policy: verified for the
			       MX host name (the key holds the name) */
		return st->tls && st->verified;
	case TLS_LEVEL_DANE_ONLY:
		return st->tls && st->dane;
	}
	return false;
}

bool conncache_key_serves(const struct conncache_key *have,
			  const struct conncache_state *st,
			  const struct conncache_key *want)
{
	return same_addr(&have->addr, &want->addr) &&
	       have->level == want->level && have->tls == want->tls &&
	       have->epoch == want->epoch &&
	       strcmp(have->helo, want->helo) == 0 &&
	       strcasecmp(have->host, want->host) == 0 &&
	       same_tlsa(have, want) && tls_serves(want, st);
}

bool conncache_put(struct conncache *cc, struct conncache_entry *e)
{
	if (cc->max == 0)
		return false;
	while (cc->n >= cc->max)
		close_entry(cc->oldest);
	e->cache = cc;
	e->next = NULL;
	e->prev = cc->newest;
	if (cc->newest != NULL)
		cc->newest->next = e;
	else
		cc->oldest = e;
	cc->newest = e;
	cc->n++;
	return true;
}

struct conncache_entry *conncache_take(struct conncache *cc,
				       const struct conncache_key *want)
{
	for (struct conncache_entry *e = cc->newest; e != NULL; e = e->prev) {
		if (!conncache_key_serves(&e->key, &e->state, want))
			continue;
		unlink_entry(e);
		return e;
	}
	return NULL;
}

void conncache_remove(struct conncache_entry *e)
{
	if (e->cache != NULL)
		unlink_entry(e);
}

size_t conncache_idle(const struct conncache *cc)
{
	return cc != NULL ? cc->n : 0;
}
