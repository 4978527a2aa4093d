/*
 * Unit tests for src/outbound/conncache.c: which idle connection may
 * carry which transaction (address and port, EHLO name, level, TLS config,
 * generation, expected host name, TLSA records; the verify and DANE
 * rules), the order of taking
 * (newest first) and of eviction (oldest first), the bound, removal by the
 * owner, and that freeing the cache closes each entry exactly once. Prints
 * TAP and exits 1 if any assertion failed.
 */
#include "tap.h"
#include "outbound/conncache.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>

/* An owner as smtp_client is one: the entry embedded, closed by callback. */
struct owner {
	struct conncache_entry entry;
	int closed;
};

static struct owner owners[8];

static void on_close(struct conncache_entry *e)
{
	((struct owner *)(void *)e)->closed++;
}

static struct conncache_key key(const char *ip, unsigned port,
				enum tls_level level, const char *host)
{
	struct conncache_key k;

	memset(&k, 0, sizeof(k));
	if (strchr(ip, ':') != NULL) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&k.addr;

		a->sin6_family = AF_INET6;
		a->sin6_port = htons((uint16_t)port);
		inet_pton(AF_INET6, ip, &a->sin6_addr);
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)&k.addr;

		a->sin_family = AF_INET;
		a->sin_port = htons((uint16_t)port);
		inet_pton(AF_INET, ip, &a->sin_addr);
	}
	snprintf(k.helo, sizeof(k.helo), "mx.test.example");
	snprintf(k.host, sizeof(k.host), "%s", host);
	k.level = level;
	k.tls = level == TLS_LEVEL_NONE ? NULL
					 : (const struct tls_config *)&owners;
	k.epoch = 1;
	return k;
}

static struct owner *park(struct conncache *cc, int i,
			  struct conncache_key k, bool tls, bool verified)
{
	struct owner *o = &owners[i];

	memset(o, 0, sizeof(*o));
	o->entry.key = k;
	o->entry.state.tls = tls;
	o->entry.state.verified = verified;
	o->entry.close = on_close;
	check(conncache_put(cc, &o->entry), "owner %d parked", i);
	return o;
}

static void test_serves(void)
{
	struct conncache_key have = key("127.0.0.1", 25, TLS_LEVEL_ENCRYPT,
					"mx.example");
	struct conncache_key want = have;
	struct conncache_state tls = {.tls = true, .verified = false};
	struct conncache_state plain = {0};
	struct conncache_state verified = {.tls = true, .verified = true};

	check(conncache_key_serves(&have, &tls, &want), "the same key serves");
	snprintf(want.host, sizeof(want.host), "MX.Example");
	check(conncache_key_serves(&have, &tls, &want),
	      "host names compare without case");
	want = have;
	((struct sockaddr_in *)&want.addr)->sin_port = htons(26);
	check(!conncache_key_serves(&have, &tls, &want), "another port");
	want = key("127.0.0.2", 25, TLS_LEVEL_ENCRYPT, "mx.example");
	check(!conncache_key_serves(&have, &tls, &want), "another address");
	want = key("::1", 25, TLS_LEVEL_ENCRYPT, "mx.example");
	check(!conncache_key_serves(&have, &tls, &want), "another family");
	want = have;
	snprintf(want.helo, sizeof(want.helo), "other.test.example");
	check(!conncache_key_serves(&have, &tls, &want), "another EHLO name");
	want = have;
	snprintf(want.host, sizeof(want.host), "mx2.example");
	check(!conncache_key_serves(&have, &tls, &want), "another host name");
	want = have;
	want.epoch = 2;
	check(!conncache_key_serves(&have, &tls, &want),
	      "another generation");
	want = have;
	want.tls = NULL;
	check(!conncache_key_serves(&have, &tls, &want), "another TLS config");
	want = have;
	want.level = TLS_LEVEL_MAY;
	check(!conncache_key_serves(&have, &tls, &want), "another level");
	check(!conncache_key_serves(&have, &plain, &have),
	      "encrypt: never a connection without TLS");

	have.level = want.level = TLS_LEVEL_VERIFY;
	want = have;
	check(conncache_key_serves(&have, &verified, &want),
	      "verify: a connection verified for the name");
	check(!conncache_key_serves(&have, &tls, &want),
	      "verify: never an unverified connection");
	snprintf(want.host, sizeof(want.host), "other.example");
	check(!conncache_key_serves(&have, &verified, &want),
	      "verify: never one verified for another name");

	have.level = TLS_LEVEL_MAY;
	want = have;
	check(conncache_key_serves(&have, &plain, &want),
	      "may: a plaintext connection made under may");
	check(conncache_key_serves(&have, &tls, &want),
	      "may: a TLS connection made under may");
}

static struct tlsa_rr rr(uint8_t usage, uint8_t first)
{
	struct tlsa_rr r;

	memset(&r, 0, sizeof(r));
	r.usage = usage;
	r.selector = 1;
	r.mtype = 1;
	r.len = 32;
	memset(r.data, first, r.len);
	return r;
}

static void test_dane(void)
{
	struct tlsa_rr mine[2] = {rr(3, 0xaa), rr(2, 0xbb)};
	struct tlsa_rr same[2] = {rr(3, 0xaa), rr(2, 0xbb)};
	struct tlsa_rr other[2] = {rr(3, 0xaa), rr(2, 0xbc)};
	struct conncache_key have = key("127.0.0.1", 25, TLS_LEVEL_DANE,
					"mx.example");
	struct conncache_key want;
	struct conncache_state dane = {.tls = true, .verified = true,
				       .dane = true};
	struct conncache_state tls = {.tls = true};

	have.tlsa = mine;
	have.n_tlsa = 2;
	want = have;
	want.tlsa = same;
	check(conncache_key_serves(&have, &dane, &want),
	      "dane: the same records (another copy) serve");
	check(!conncache_key_serves(&have, &tls, &want),
	      "dane: never a connection the records did not authenticate");
	want.tlsa = other;
	check(!conncache_key_serves(&have, &dane, &want),
	      "dane: never one authenticated by other records");
	want.n_tlsa = 1;
	want.tlsa = same;
	check(!conncache_key_serves(&have, &dane, &want),
	      "dane: nor by more records than asked");
	want.tlsa = NULL;
	want.n_tlsa = 0;
	check(!conncache_key_serves(&have, &dane, &want),
	      "dane without records (as may): not a DANE connection");
	have.tlsa = NULL;
	have.n_tlsa = 0;
	check(conncache_key_serves(&have, &tls, &want),
	      "dane without records: a connection made without them");
	have.level = want.level = TLS_LEVEL_DANE_ONLY;
	check(!conncache_key_serves(&have, &tls, &want),
	      "dane-only: never a connection without DANE");
}

static void test_cert_check(void)
{
	struct conncache_key have = key("127.0.0.1", 25, TLS_LEVEL_MAY,
					"mx.example");
	struct conncache_key want = have;
	struct conncache_state tls = {.tls = true};
	struct conncache_state checked = {.tls = true, .checked = true};
	struct conncache_state plain = {0};

	want.cert_check = true;
	check(!conncache_key_serves(&have, &tls, &want),
	      "cert_check (MTA-STS testing): never a TLS connection unchecked");
	check(conncache_key_serves(&have, &checked, &want),
	      "cert_check: a checked one");
	check(conncache_key_serves(&have, &plain, &want),
	      "cert_check at may: a plaintext one (nothing to check)");
	want.cert_check = false;
	check(conncache_key_serves(&have, &checked, &want),
	      "no cert_check: a checked one too");
}

static void test_order_and_bound(void)
{
	struct conncache *cc = conncache_new(3);
	struct conncache_key a = key("127.0.0.1", 25, TLS_LEVEL_NONE, "a");
	struct conncache_key b = key("127.0.0.1", 26, TLS_LEVEL_NONE, "b");
	struct conncache_entry *e;

	park(cc, 0, a, false, false);
	park(cc, 1, b, false, false);
	park(cc, 2, a, false, false);
	check(conncache_idle(cc) == 3, "three idle");
	e = conncache_take(cc, &a);
	check(e == &owners[2].entry, "the newest that serves is taken");
	check(e->cache == NULL && conncache_idle(cc) == 2,
	      "taken: out of the cache");
	check(owners[2].closed == 0, "taking does not close");
	e = conncache_take(cc, &a);
	check(e == &owners[0].entry, "then the older one");
	check(conncache_take(cc, &a) == NULL, "then none");
	park(cc, 3, a, false, false);
	park(cc, 4, a, false, false);
	check(conncache_idle(cc) == 3 && owners[1].closed == 0,
	      "full, nothing closed yet");
	park(cc, 5, a, false, false);
	check(owners[1].closed == 1 && owners[1].entry.cache == NULL,
	      "one more: the oldest is closed, out of the cache");
	check(conncache_idle(cc) == 3, "still three");
	conncache_remove(&owners[4].entry);
	check(conncache_idle(cc) == 2 && owners[4].closed == 0,
	      "removed by its owner: not closed by the cache");
	conncache_remove(&owners[4].entry);
	check(conncache_idle(cc) == 2, "removing twice is harmless");
	conncache_free(cc);
	check(owners[3].closed == 1 && owners[5].closed == 1,
	      "freeing closes what is left, once each");
	check(owners[0].closed == 0 && owners[2].closed == 0 &&
		  owners[4].closed == 0,
	      "and nothing that had left it");
	conncache_free(NULL);
	check(conncache_idle(NULL) == 0, "NULL is an empty cache");
}

static void test_zero(void)
{
	struct conncache *cc = conncache_new(0);
	struct owner *o = &owners[6];

	memset(o, 0, sizeof(*o));
	o->entry.key = key("127.0.0.1", 25, TLS_LEVEL_NONE, "a");
	o->entry.close = on_close;
	check(!conncache_put(cc, &o->entry),
	      "a cache of 0 keeps nothing: put says so");
	check(o->closed == 0 && o->entry.cache == NULL,
	      "and the entry stays its owner's, open");
	conncache_free(cc);
	check(o->closed == 0, "freeing that cache closes nothing");
}

int main(void)
{
	test_serves();
	test_dane();
	test_cert_check();
	test_order_and_bound();
	test_zero();
	return tap_done();
}
