/*
 * Unit tests for src/net/dane.c: the plan for one MX host (level, DNSSEC
 * states, TLSA result) and dane_verify on real certificate chains
 * (spec/c/fixtures/dane/, made by make.sh there, with the TLSA data of
 * each certificate computed by openssl in tlsa.txt). Run from the
 * repository's root. Prints TAP and exits 1 if any assertion failed.
 */
#include "tap.h"
#include "net/dane.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FIXTURES "spec/c/fixtures/dane/"

static const char *const MX[] = {"mx.example.test"};

/* ---- fixtures ---------------------------------------------------------- */

static uint8_t *read_all(const char *name, size_t *len)
{
	char path[256];
	FILE *f;
	uint8_t *buf = malloc(1 << 16);

	snprintf(path, sizeof(path), FIXTURES "%s", name);
	f = fopen(path, "rb");
	*len = f != NULL ? fread(buf, 1, 1 << 16, f) : 0;
	if (f != NULL)
		fclose(f);
	if (*len == 0) {
		printf("Bail out! cannot read %s (run from the repository root)\n",
		       path);
		exit(1);
	}
	return buf;
}

static int hexval(char c)
{
	return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
}

/* The record "U S M" with the data of `key` in tlsa.txt
 * ("ee-sha256-spki", ...); `flip` changes its last octet. */
static struct tlsa_rr rec(unsigned u, unsigned s, unsigned m, const char *key,
			  bool flip)
{
	struct tlsa_rr rr = {.usage = (uint8_t)u,
			     .selector = (uint8_t)s,
			     .mtype = (uint8_t)m};
	size_t len, klen = strlen(key);
	char *text = (char *)read_all("tlsa.txt", &len);
	char *line = text;

	text[len - 1] = '\0';
	while (line != NULL &&
	       !(strncmp(line, key, klen) == 0 && line[klen] == ' ')) {
		line = strchr(line, '\n');
		line = line != NULL ? line + 1 : NULL;
	}
	if (line == NULL) {
		printf("Bail out! no %s in tlsa.txt\n", key);
		exit(1);
	}
	for (const char *h = line + klen + 1;
	     h[0] != '\n' && h[0] != '\0' && rr.len < TLSA_DATA_MAX; h += 2)
		rr.data[rr.len++] = (uint8_t)(hexval(h[0]) << 4 | hexval(h[1]));
	if (flip)
		rr.data[rr.len - 1] ^= 1;
	free(text);
	return rr;
}

static enum dane_auth verify_n(const char *chain, const struct tlsa_rr *rrs,
			       size_t n, const char *const *names,
			       size_t n_names, char *why, size_t why_len)
{
	size_t len;
	uint8_t *pem = read_all(chain, &len);
	enum dane_auth a;

	why[0] = '\0';
	a = dane_verify(rrs, n, pem, len, names, n_names, why, why_len);
	free(pem);
	return a;
}

static enum dane_auth verify1(const char *chain, struct tlsa_rr rr,
			      char *why, size_t why_len)
{
	return verify_n(chain, &rr, 1, MX, 1, why, why_len);
}

/* ---- DANE-EE ----------------------------------------------------------- */

static void test_ee(void)
{
	static const struct {
		unsigned s, m;
		const char *key;
	} ok[] = {
		{1, 1, "ee-sha256-spki"}, {0, 1, "ee-sha256-cert"},
		{1, 2, "ee-sha512-spki"}, {0, 2, "ee-sha512-cert"},
		{1, 0, "ee-full-spki"},	  {0, 0, "ee-full-cert"},
	};
	char why[256];

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		check(verify1("ee.pem", rec(3, ok[i].s, ok[i].m, ok[i].key,
					    false),
			      why, sizeof(why)) == DANE_AUTH_EE,
		      "DANE-EE 3 %u %u matches the self-signed leaf", ok[i].s,
		      ok[i].m);
	check(verify1("ee.pem", rec(3, 1, 1, "ee-sha256-spki", true), why,
		      sizeof(why)) == DANE_AUTH_NONE &&
		  strncmp(why, "TLSA 3 1 1 ", 11) == 0 &&
		  strstr(why, " did not match the certificate of "
			      "mx.example.test") != NULL,
	      "3 1 1 with one bit off does not match, and says so: %s", why);
	check(verify1("ee.pem", rec(3, 0, 0, "ca-full-cert", false), why,
		      sizeof(why)) == DANE_AUTH_NONE,
	      "3 0 0 of another certificate does not match");
	check(verify1("ee-expired.pem", rec(3, 1, 1, "ee-expired-sha256-spki",
					    false),
		      why, sizeof(why)) == DANE_AUTH_EE,
	      "DANE-EE: an expired leaf still matches (RFC 7672 3.1.1)");
	check(verify_n("ee.pem", (struct tlsa_rr[]){rec(3, 1, 1,
							 "ee-sha256-spki",
							 false)},
		       1, (const char *const[]){"other.example"}, 1, why,
		       sizeof(why)) == DANE_AUTH_EE,
	      "DANE-EE: no name check");
	check(verify1("chain.pem", rec(3, 1, 1, "ca-sha256-spki", false), why,
		      sizeof(why)) == DANE_AUTH_NONE,
	      "DANE-EE: only the leaf counts, not the CA behind it");
	check(verify1("chain.pem", rec(3, 1, 1, "leaf-sha256-spki", false),
		      why, sizeof(why)) == DANE_AUTH_EE,
	      "DANE-EE: a CA-signed leaf matches by its own key");
}

/* ---- DANE-TA ----------------------------------------------------------- */

static void test_ta(void)
{
	/* chain, record (usage 2), expected, a part of the reason */
	static const struct {
		const char *chain;
		unsigned s, m;
		const char *key;
		enum dane_auth want;
		const char *why, *what;
	} cases[] = {
		{"chain.pem", 1, 1, "ca-sha256-spki", DANE_AUTH_TA, "",
		 "2 1 1 of the CA in the chain"},
		{"chain.pem", 0, 1, "ca-sha256-cert", DANE_AUTH_TA, "",
		 "2 0 1 of the CA in the chain"},
		{"chain.pem", 1, 2, "ca-sha512-spki", DANE_AUTH_TA, "",
		 "2 1 2 of the CA in the chain"},
		{"chain-no-ca.pem", 0, 0, "ca-full-cert", DANE_AUTH_TA, "",
		 "2 0 0: the whole CA in the record, not in the chain"},
		{"chain-no-ca.pem", 1, 1, "ca-sha256-spki", DANE_AUTH_NONE,
		 "did not match the certificate chain of mx.example.test",
		 "2 1 1 with the CA missing from the chain: no match"},
		{"chain-int.pem", 1, 1, "intermediate-sha256-spki", DANE_AUTH_TA,
		 "", "an intermediate: a partial chain is enough"},
		{"chain-int.pem", 1, 1, "ca-sha256-spki", DANE_AUTH_TA, "",
		 "the root above an intermediate"},
		{"chain-wild.pem", 1, 1, "ca-sha256-spki", DANE_AUTH_TA, "",
		 "*.example.test names mx.example.test"},
		{"chain-other.pem", 1, 1, "ca-sha256-spki", DANE_AUTH_NONE,
		 "does not name mx.example.test",
		 "a leaf for another name fails the name check"},
		{"chain-expired.pem", 1, 1, "ca-sha256-spki", DANE_AUTH_NONE,
		 "certificate has expired", "an expired leaf fails"},
		{"chain-wrong-ca.pem", 1, 1, "other-ca-sha256-spki",
		 DANE_AUTH_NONE, "does not verify",
		 "a matching CA that did not sign the leaf"},
		{"ee.pem", 1, 1, "ee-sha256-spki", DANE_AUTH_TA, "",
		 "the self-signed leaf itself, name checked"},
		{"ee-expired.pem", 1, 1, "ee-expired-sha256-spki", DANE_AUTH_NONE,
		 "expired", "an expired self-signed leaf: dates count"},
	};
	char why[256];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		enum dane_auth got = verify1(
			cases[i].chain,
			rec(2, cases[i].s, cases[i].m, cases[i].key, false), why,
			sizeof(why));

		check(got == cases[i].want && strstr(why, cases[i].why) != NULL,
		      "DANE-TA %s (%s)", cases[i].what, why);
	}
	check(verify_n("chain-other.pem",
		       (struct tlsa_rr[]){rec(2, 1, 1, "ca-sha256-spki", false)},
		       1,
		       (const char *const[]){"mx.example.test",
					     "other.example.test"},
		       2, why, sizeof(why)) == DANE_AUTH_TA,
	      "DANE-TA: any of the names given will do");
}

/* ---- record sets, unusable records, bad input --------------------------- */

static void test_sets(void)
{
	char why[256];
	struct tlsa_rr set[3] = {rec(3, 1, 1, "ee-sha256-spki", false),
				 rec(2, 1, 1, "other-ca-sha256-spki", false),
				 rec(2, 1, 1, "ca-sha256-spki", false)};
	struct tlsa_rr pkix = rec(1, 1, 1, "ee-sha256-spki", false);
	struct tlsa_rr short_hash = rec(3, 1, 1, "ee-sha256-spki", false);
	size_t len;
	uint8_t *pem;

	check(verify_n("chain.pem", set, 3, MX, 1, why, sizeof(why)) ==
		  DANE_AUTH_TA,
	      "one of three records matching is enough");
	check(verify_n("chain.pem", set, 2, MX, 1, why, sizeof(why)) ==
		      DANE_AUTH_NONE &&
		  strstr(why, "none of 2 TLSA records") != NULL,
	      "none of two matching says how many: %s", why);
	check(verify1("ee.pem", pkix, why, sizeof(why)) == DANE_AUTH_NONE,
	      "PKIX-EE(1) is ignored even when it would match");
	short_hash.len = 31;
	check(verify1("ee.pem", short_hash, why, sizeof(why)) ==
		  DANE_AUTH_NONE,
	      "a SHA-256 of 31 octets is ignored");
	check(dane_verify(set, 1, NULL, 0, MX, 1, why, sizeof(why)) ==
		      DANE_AUTH_NONE &&
		  strcmp(why, "mx.example.test sent no certificate") == 0,
	      "no chain: %s", why);
	check(dane_verify(set, 1, (const uint8_t *)"garbage", 7, MX, 1, why,
			  sizeof(why)) == DANE_AUTH_NONE,
	      "a chain that is not PEM");
	pem = read_all("ee.pem", &len);
	check(dane_verify(set, 1, pem, len - 40, MX, 1, why, sizeof(why)) ==
		  DANE_AUTH_NONE,
	      "a truncated PEM certificate");
	free(pem);
	check(verify_n("ee.pem", set, 1, NULL, 0, why, sizeof(why)) ==
		  DANE_AUTH_EE,
	      "no names: DANE-EE still matches");
	check(strcmp(dane_auth_name(DANE_AUTH_EE), "dane-ee") == 0 &&
		  strcmp(dane_auth_name(DANE_AUTH_TA), "dane-ta") == 0 &&
		  strcmp(dane_auth_name(DANE_AUTH_NONE), "no") == 0,
	      "dane_auth_name");
}

/* ---- the plan ---------------------------------------------------------- */

static struct dns_route route_of(enum dns_sec mx, enum dns_sec addrs)
{
	struct dns_route rt = {.status = DNS_OK, .n_hosts = 1, .mx_sec = mx};

	snprintf(rt.hosts[0].name, sizeof(rt.hosts[0].name), "%s",
		 "mx.example.test");
	rt.hosts[0].n_addrs = 1;
	rt.hosts[0].sec = addrs;
	return rt;
}

static enum dane_plan plan(enum tls_level level, enum dns_sec mx,
			   enum dns_sec addrs, const struct dns_tlsa *t,
			   char *why, size_t why_len)
{
	static struct dns_route rt;

	rt = route_of(mx, addrs);
	return dane_plan(level, &rt, &rt.hosts[0], t, why, why_len);
}

static void test_plan(void)
{
	static struct dns_tlsa t;
	static struct dns_route rt;
	char why[256];
	const enum tls_level dane = TLS_LEVEL_DANE, only = TLS_LEVEL_DANE_ONLY;

	rt = route_of(DNS_SECURE, DNS_SECURE);
	check(dane_wants_tlsa(dane, &rt, &rt.hosts[0]) &&
		  dane_wants_tlsa(only, &rt, &rt.hosts[0]) &&
		  !dane_wants_tlsa(TLS_LEVEL_VERIFY, &rt, &rt.hosts[0]),
	      "a TLSA lookup at dane and dane-only only");
	rt = route_of(DNS_INSECURE, DNS_SECURE);
	check(!dane_wants_tlsa(dane, &rt, &rt.hosts[0]),
	      "no TLSA lookup after an insecure MX answer");
	rt = route_of(DNS_SECURE, DNS_INSECURE);
	check(!dane_wants_tlsa(dane, &rt, &rt.hosts[0]),
	      "no TLSA lookup for insecure addresses");

	check(plan(TLS_LEVEL_MAY, DNS_SECURE, DNS_SECURE, NULL, why,
		   sizeof(why)) == DANE_PLAN_MAY,
	      "not a DANE level: may");
	check(plan(dane, DNS_INSECURE, DNS_SECURE, NULL, why, sizeof(why)) ==
		  DANE_PLAN_MAY,
	      "dane, insecure MX: as may (%s)", why);
	check(plan(only, DNS_INSECURE, DNS_SECURE, NULL, why, sizeof(why)) ==
		      DANE_PLAN_DEFER &&
		  strncmp(why, "dane-only: the MX records", 25) == 0,
	      "dane-only, insecure MX: defer (%s)", why);
	check(plan(dane, DNS_SECURE, DNS_INSECURE, NULL, why, sizeof(why)) ==
		  DANE_PLAN_MAY,
	      "dane, insecure addresses: as may");
	check(plan(only, DNS_SECURE, DNS_INSECURE, NULL, why, sizeof(why)) ==
		  DANE_PLAN_DEFER,
	      "dane-only, insecure addresses: defer");

	snprintf(t.qname, sizeof(t.qname), "_25._tcp.mx.example.test");
	t.status = DNS_TLSA_RECORDS;
	t.n_seen = 2;
	t.n_records = 1;
	check(plan(dane, DNS_SECURE, DNS_SECURE, &t, why, sizeof(why)) ==
		      DANE_PLAN_AUTH &&
		  plan(only, DNS_SECURE, DNS_SECURE, &t, why, sizeof(why)) ==
		      DANE_PLAN_AUTH,
	      "secure usable TLSA records: authenticate");
	t.n_records = 0;
	check(plan(dane, DNS_SECURE, DNS_SECURE, &t, why, sizeof(why)) ==
		  DANE_PLAN_ENCRYPT,
	      "dane, none usable: encrypt (%s)", why);
	check(plan(only, DNS_SECURE, DNS_SECURE, &t, why, sizeof(why)) ==
		      DANE_PLAN_DEFER &&
		  strstr(why, "none of the 2 TLSA records") != NULL,
	      "dane-only, none usable: defer (%s)", why);
	t.status = DNS_TLSA_NONE;
	check(plan(dane, DNS_SECURE, DNS_SECURE, &t, why, sizeof(why)) ==
		  DANE_PLAN_MAY,
	      "dane, no TLSA records: as may");
	check(plan(only, DNS_SECURE, DNS_SECURE, &t, why, sizeof(why)) ==
		      DANE_PLAN_DEFER &&
		  strcmp(why, "dane-only: no TLSA records at "
			      "_25._tcp.mx.example.test") == 0,
	      "dane-only, no TLSA records: defer (%s)", why);
	t.status = DNS_TLSA_INSECURE;
	check(plan(dane, DNS_SECURE, DNS_SECURE, &t, why, sizeof(why)) ==
		      DANE_PLAN_MAY &&
		  plan(only, DNS_SECURE, DNS_SECURE, &t, why, sizeof(why)) ==
		      DANE_PLAN_DEFER,
	      "insecure TLSA answer: may, or defer at dane-only");
	t.status = DNS_TLSA_FAILED;
	snprintf(t.error, sizeof(t.error), "TLSA lookup of x failed: bogus");
	check(plan(dane, DNS_SECURE, DNS_SECURE, &t, why, sizeof(why)) ==
		      DANE_PLAN_DEFER &&
		  strcmp(why, t.error) == 0,
	      "a failed TLSA lookup defers even at dane (%s)", why);
}

/* ctx.dane: a route of three hosts, their TLSA answers combined. */
static void test_destination(void)
{
	static struct dns_route rt;
	static struct dns_tlsa none, insecure, failed, records, unusable;
	const struct dns_tlsa *t[DNS_MAX_HOSTS] = {0};

	rt = route_of(DNS_SECURE, DNS_SECURE);
	rt.n_hosts = 3;
	none.status = DNS_TLSA_NONE;
	insecure.status = DNS_TLSA_INSECURE;
	failed.status = DNS_TLSA_FAILED;
	records.status = unusable.status = DNS_TLSA_RECORDS;
	records.n_seen = records.n_records = 1;
	unusable.n_seen = 2;
	check(dane_destination(&rt, t) == DANE_DEST_INSECURE,
	      "no TLSA lookup at all (insecure MX or addresses): insecure");
	t[0] = &none;
	t[1] = &insecure;
	check(dane_destination(&rt, t) == DANE_DEST_INSECURE,
	      "no records, or insecure ones: insecure");
	t[2] = &failed;
	check(dane_destination(&rt, t) == DANE_DEST_BOGUS,
	      "a failed lookup and nothing secure: bogus");
	t[1] = &records;
	check(dane_destination(&rt, t) == DANE_DEST_SECURE,
	      "a secure RRset wins over a failed lookup: secure");
	t[1] = &unusable;
	check(dane_destination(&rt, t) == DANE_DEST_SECURE,
	      "a secure RRset of unusable records: secure (TLS required)");
	rt.n_hosts = 1;
	check(dane_destination(&rt, t) == DANE_DEST_INSECURE,
	      "only the route's hosts count");
	check(strcmp(dane_dest_name(DANE_DEST_SECURE), "secure") == 0 &&
		  strcmp(dane_dest_name(DANE_DEST_INSECURE), "insecure") == 0 &&
		  strcmp(dane_dest_name(DANE_DEST_BOGUS), "bogus") == 0 &&
		  dane_dest_name(DANE_DEST_UNKNOWN) == NULL,
	      "the names of ctx.dane; none when not looked up");
}

int main(void)
{
	test_ee();
	test_ta();
	test_sets();
	test_plan();
	test_destination();
	return tap_done();
}
