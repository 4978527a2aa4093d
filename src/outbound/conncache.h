/*
 * conncache: the idle outbound SMTP connections kept for the next
 * message (Postfix's connection cache, in the queue manager's own
 * memory). It decides which idle connection may serve which transaction
 * (conncache_key_serves) and keeps them in order of parking, bounded: past
 * the bound the oldest goes. It never touches a socket: an entry is
 * embedded in its owner (an idle smtp_client), whose `close` callback ends
 * it. Pure bookkeeping on the caller's loop, no I/O of its own.
 *
 * Ownership: an entry in the cache belongs to the cache; conncache_take
 * and conncache_remove hand it back to its owner; conncache_free closes
 * every entry still in it (each through its `close`, exactly once).
 */
#ifndef SMTPGW_CONNCACHE_H
#define SMTPGW_CONNCACHE_H

#include "core/config.h"
#include "proto/tlsa.h"

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <tls.h>

enum { CONNCACHE_NAME_MAX = 256 };

/* What a connection was made for, and what a transaction asks of one. */
struct conncache_key {
	struct sockaddr_storage addr; /* next-hop address and port */
	char helo[CONNCACHE_NAME_MAX]; /* our EHLO name */
	char host[CONNCACHE_NAME_MAX]; /* the next hop's expected name:
					  SNI, and the name verify checks */
	enum tls_level level;
	const struct tls_config *tls; /* the level's config (identity) */
	unsigned epoch;		      /* the generation it belongs to */
	const struct tlsa_rr *tlsa;   /* DANE: the usable TLSA records the
					 handshake had to match (compared by
					 content); NULL: no DANE */
	size_t n_tlsa;
	bool cert_check;	      /* MTA-STS testing: the chain checked
					 (and reported) after the handshake */
};

/* What the connection turned out to be, for the verify rule. */
struct conncache_state {
	bool tls;      /* TLS is on */
	bool verified; /* chain and key.host checked by the handshake */
	bool dane;     /* authenticated by DANE against key.tlsa */
	bool checked;  /* its chain was checked as key.cert_check asks */
};

struct conncache_entry;
typedef void conncache_close_cb(struct conncache_entry *e);

struct conncache_entry {
	struct conncache_entry *prev, *next; /* oldest first */
	struct conncache *cache;	     /* non-NULL while cached */
	struct conncache_key key;
	struct conncache_state state;
	conncache_close_cb *close; /* ends the owner; the entry is already
				      out of the cache when it runs */
};

struct conncache;

/* At most `max_idle` idle connections (0: none are kept). NULL when out
 * of memory. */
struct conncache *conncache_new(size_t max_idle);
/* Closes every idle connection, then frees the cache. NULL is fine. */
void conncache_free(struct conncache *cc);

/*
 * May an idle connection made for `have` (ending up as `st`) carry a
 * transaction that asks for `want`? The same address and port, EHLO
 * name, level, TLS config and generation, the same expected host name
 * (case-insensitive) and the same TLSA records; under verify only a
 * connection whose handshake verified that name; under encrypt and verify
 * only one with TLS on; with TLSA records (DANE) only one the handshake
 * authenticated by them; with cert_check only one whose chain was
 * checked.
 */
bool conncache_key_serves(const struct conncache_key *have,
			  const struct conncache_state *st,
			  const struct conncache_key *want);

/* Parks an idle connection (its key, state and `close` set); the oldest
 * one goes when the cache is full. False, and `e` stays its owner's, when
 * the cache keeps nothing (max_idle 0). */
bool conncache_put(struct conncache *cc, struct conncache_entry *e);
/* The newest idle connection that serves `want`, out of the cache, or
 * NULL. */
struct conncache_entry *conncache_take(struct conncache *cc,
				       const struct conncache_key *want);
/* Out of the cache without closing it: its owner closes it itself (the
 * peer hung up, the idle time is over). Harmless when not cached. */
void conncache_remove(struct conncache_entry *e);
size_t conncache_idle(const struct conncache *cc);

#endif
