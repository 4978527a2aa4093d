/*
 * Unit tests for src/inbound/limits.c: client prefix keys (the IPv6 /64
 * logic that loopback cannot show), the anvil rate arithmetic, the reserve,
 * the admission rules, and the shared table under several processes,
 * including one killed with SIGKILL while it holds the lock. Prints TAP and
 * exits 1 if any assertion failed.
 *
 * limits.c is included whole so that the white-box checks (the table's
 * invariants, a half-done update) can reach its static functions.
 */
/* limits.c, included below, has a check() of its own */
#define TAP_NO_CHECK
#include "tap.h"
#include "inbound/limits.c"

#include <signal.h>
#include <stdarg.h>
#include <sys/wait.h>
#include <unistd.h>



static struct sockaddr_storage addr(const char *text)
{
	struct sockaddr_storage ss;

	memset(&ss, 0, sizeof(ss));
	if (strchr(text, ':') != NULL) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;

		a->sin6_family = AF_INET6;
		inet_pton(AF_INET6, text, &a->sin6_addr);
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;

		a->sin_family = AF_INET;
		inet_pton(AF_INET, text, &a->sin_addr);
	}
	return ss;
}

static bool same_client(const char *a, const char *b, unsigned v4, unsigned v6)
{
	struct sockaddr_storage x = addr(a), y = addr(b);
	uint8_t kx[16], ky[16];

	limits_client_key((struct sockaddr *)&x, v4, v6, kx);
	limits_client_key((struct sockaddr *)&y, v4, v6, ky);
	return memcmp(kx, ky, 16) == 0;
}

static bool key_text_is(const char *ip, unsigned v4, unsigned v6,
                        const char *want)
{
	struct sockaddr_storage x = addr(ip);
	uint8_t k[16];
	char text[80];

	limits_client_key((struct sockaddr *)&x, v4, v6, k);
	limits_key_text(k, v4, v6, text, sizeof(text));
	if (strcmp(text, want) != 0)
		printf("# %s -> %s, want %s\n", ip, text, want);
	return strcmp(text, want) == 0;
}

static void test_keys(void)
{
	tap(!same_client("127.0.1.1", "127.0.1.2", 32, 64),
	    "v4 /32: two addresses are two clients");
	tap(same_client("127.0.1.1", "127.0.1.2", 24, 64),
	    "v4 /24: 127.0.1.1 and 127.0.1.2 are one client");
	tap(!same_client("127.0.1.1", "127.0.2.1", 24, 64),
	    "v4 /24: 127.0.2.1 is another client");
	tap(same_client("192.0.2.130", "192.0.2.191", 26, 64) &&
	        !same_client("192.0.2.130", "192.0.2.192", 26, 64),
	    "v4 /26 splits inside an octet");
	tap(same_client("2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:fffe",
	                32, 64),
	    "v6 /64: every address of one /64 is one client");
	tap(!same_client("2001:db8:1:2::1", "2001:db8:1:3::1", 32, 64),
	    "v6 /64: the next /64 is another client");
	tap(same_client("2001:db8:1:2::1", "2001:db8:1:3::1", 32, 48),
	    "v6 /48: both /64s are one client");
	tap(!same_client("2001:db8::1", "2001:db8::2", 32, 128),
	    "v6 /128: whole addresses");
	tap(same_client("::ffff:127.0.1.1", "127.0.1.9", 24, 64),
	    "a v4-mapped IPv6 address counts as its IPv4 address");
	tap(!same_client("::", "0.0.0.0", 32, 64) &&
	        !same_client("::ffff:0:0", "::", 8, 16),
	    "no IPv6 prefix shares a key with an IPv4 one");
	tap(key_text_is("127.0.1.77", 24, 64, "127.0.1.0/24"),
	    "key text of a v4 prefix");
	tap(key_text_is("2001:db8:1:2:3:4:5:6", 24, 64, "2001:db8:1:2::/64"),
	    "key text of a v6 prefix");
	tap(key_text_is("::1", 32, 128, "::1/128"), "key text of ::1/128");
}

static void test_rate(void)
{
	uint64_t start = 0;
	uint32_t n = 0, r = 0;

	r = limits_rate_tick(&start, &n, 1000, 60000);
	tap(r == 1 && start == 1000, "first event opens a window: 1");
	limits_rate_tick(&start, &n, 2000, 60000);
	r = limits_rate_tick(&start, &n, 60999, 60000);
	tap(r == 3 && start == 1000, "still 3 at start + unit - 1 ms");
	r = limits_rate_tick(&start, &n, 61000, 60000);
	tap(r == 1 && start == 61000,
	    "at start + unit a new window opens at that event: 1");
	r = limits_rate_tick(&start, &n, 500, 60000);
	tap(r == 1 && start == 500, "a clock that went back opens a window");
	n = UINT32_MAX;
	start = 500;
	r = limits_rate_tick(&start, &n, 600, 60000);
	tap(r == UINT32_MAX, "the count saturates");
}

static void test_reserved(void)
{
	tap(limits_reserved(1000, 5, true) == 50, "5%% of 1000 is 50");
	tap(limits_reserved(2, 5, true) == 0, "5%% of 2 rounds down to 0");
	tap(limits_reserved(10, 10, false) == 9,
	    "a reserve never takes every slot");
	tap(limits_reserved(10, 3, false) == 3, "an absolute reserve");
}

/* The table's invariants, from the slots (the truth). */
static bool consistent(struct limits *l)
{
	uint32_t used = 0;

	for (uint32_t c = 0; c < l->sh->n_clients; c++) {
		uint32_t n = 0;

		for (uint32_t i = 0; i < l->sh->n_slots; i++)
			n += l->slots[i].used && l->slots[i].client == c;
		if (n != l->clients[c].count)
			return false;
	}
	for (uint32_t i = 0; i < l->sh->n_slots; i++)
		used += l->slots[i].used;
	return used == l->sh->in_use &&
	       l->sh->free_top + used == l->sh->n_slots;
}

/* The limits admit_ip asks with; a test changes them and restores them. */
static const struct limits_request base_request = {
    .max_total = 10,
    .reserved = 2,
    .max_per_client = 3,
    .rate_limit = 0,
    .prefix_v4 = 24,
    .prefix_v6 = 64,
};
static struct limits_request limits_now = base_request;

static struct limits_request request(const struct sockaddr_storage *peer,
                                     bool exempt, uint64_t now)
{
	struct limits_request rq = limits_now;

	rq.peer = (const struct sockaddr *)peer;
	rq.exempt = exempt;
	rq.now_ms = now;
	return rq;
}

static enum limits_verdict admit_ip(struct limits *l, const char *ip,
                                    bool exempt, uint32_t *ticket)
{
	struct sockaddr_storage ss = addr(ip);
	struct limits_request rq = request(&ss, exempt, 1000);

	return limits_admit(l, &rq, ticket);
}

static void test_admission(void)
{
	char err[200];
	struct limits *l = limits_new_sized(10, err, sizeof(err));
	uint32_t t[16];
	enum limits_verdict v;
	char ip[32];

	tap(l != NULL, "a table of 10 slots");
	for (int i = 0; i < 3; i++)
		admit_ip(l, i % 2 ? "127.0.1.1" : "127.0.1.2", false, &t[i]);
	v = admit_ip(l, "127.0.1.3", false, &t[3]);
	tap(v == LIMITS_CLIENT && limits_in_use(l) == 3,
	    "the 4th connection from one /24 is refused (%d)", v);
	limits_release(l, t[0]);
	tap(admit_ip(l, "127.0.1.3", false, &t[0]) == LIMITS_OK,
	    "after a release the prefix is admitted again");
	for (int i = 3; i < 8; i++) {
		snprintf(ip, sizeof(ip), "10.0.%d.1", i);
		admit_ip(l, ip, false, &t[i]);
	}
	v = admit_ip(l, "10.9.9.9", false, &t[8]);
	tap(v == LIMITS_RESERVED && limits_in_use(l) == 8,
	    "internet clients stop at max - reserved (%d)", v);
	tap(admit_ip(l, "127.0.1.4", true, &t[8]) == LIMITS_OK &&
	        admit_ip(l, "127.0.1.5", true, &t[9]) == LIMITS_OK,
	    "relay clients use the reserve, beyond their prefix's limit");
	v = admit_ip(l, "127.0.1.6", true, &t[10]);
	tap(v == LIMITS_TOTAL, "nobody gets past max_connections (%d)", v);
	tap(consistent(l), "the table is consistent");
	limits_set_worker(l, 1);
	limits_release(l, t[9]);
	tap(limits_in_use(l) == 10,
	    "a worker cannot release a slot another worker holds");
	limits_set_worker(l, 0);
	limits_release(l, t[9]);
	tap(limits_in_use(l) == 9, "its own worker can");
	tap(admit_ip(l, "127.0.9.10", true, &t[9]) == LIMITS_OK &&
	        limits_forget_worker(l, 0) == 10 && limits_in_use(l) == 0,
	    "forget_worker(0) frees the 10 slots worker 0 holds");
	tap(consistent(l), "and leaves the table consistent");
	limits_free(l);
}

static void test_rate_limit(void)
{
	char err[200];
	struct limits *l = limits_new_sized(100, err, sizeof(err));
	struct sockaddr_storage a = addr("2001:db8:5:5::1");
	struct sockaddr_storage b = addr("2001:db8:5:5::2");
	struct sockaddr_storage c = addr("2001:db8:5:6::1");
	struct limits_request rq = request(&a, false, 5000);
	uint32_t t;
	int ok = 0;

	rq.max_total = 100;
	rq.max_per_client = 50;
	rq.rate_limit = 4;
	for (int i = 0; i < 4; i++) {
		rq.peer = (const struct sockaddr *)(i % 2 ? &a : &b);
		if (limits_admit(l, &rq, &t) == LIMITS_OK) {
			limits_release(l, t);
			ok++;
		}
	}
	tap(ok == 4, "4 connections in a minute from one /64 pass");
	tap(limits_admit(l, &rq, &t) == LIMITS_RATE,
	    "the 5th is refused by the rate limit");
	rq.peer = (const struct sockaddr *)&c;
	tap(limits_admit(l, &rq, &t) == LIMITS_OK,
	    "another /64 has its own count");
	rq.peer = (const struct sockaddr *)&a;
	rq.now_ms = 5000 + LIMITS_RATE_UNIT_MS - 1;
	tap(limits_admit(l, &rq, &t) == LIMITS_RATE,
	    "refused attempts count, until the unit is over");
	rq.now_ms = 5000 + LIMITS_RATE_UNIT_MS;
	tap(limits_admit(l, &rq, &t) == LIMITS_OK, "a new unit admits again");
	rq.exempt = true;
	for (int i = 0; i < 10; i++)
		limits_admit(l, &rq, &t);
	tap(limits_in_use(l) == 12, "relay clients have no rate limit");
	limits_free(l);
}

static void test_table_reuse(void)
{
	char err[200];
	struct limits *l = limits_new_sized(1, err, sizeof(err));
	uint32_t t;
	int ok = 0;
	char ip[32];

	limits_now.max_total = 1;
	limits_now.reserved = 0;
	for (int i = 0; i < 1000; i++) {
		snprintf(ip, sizeof(ip), "10.%d.%d.1", i / 250, i % 250);
		if (admit_ip(l, ip, false, &t) == LIMITS_OK) {
			limits_release(l, t);
			ok++;
		}
	}
	tap(ok == 1000 && l->sh->n_clients == MIN_CLIENTS,
	    "1000 clients pass through a table of %u entries",
	    l->sh->n_clients);
	for (uint32_t i = 0; i < l->sh->n_clients; i++)
		l->clients[i].count = 1; /* white box: every entry is held */
	tap(admit_ip(l, "10.200.0.1", false, &t) == LIMITS_TABLE_FULL,
	    "a full client table refuses, it does not grow");
	tap(admit_ip(l, "10.200.0.1", true, &t) == LIMITS_OK,
	    "a relay client needs no client entry");
	limits_now = base_request;
	limits_free(l);
}

/* 1 000 connections from 50 neighbouring addresses, and from 1 000: the
 * keys differ in their last octets only, and must still spread over the
 * table (a weak hash piled them into one probe window: refused). */
static void test_spread(void)
{
	char err[200];
	struct limits *l = limits_new_sized(1000, err, sizeof(err));
	unsigned full = 0;
	uint32_t t;
	char ip[32];

	limits_now.max_total = 1000;
	limits_now.reserved = 0;
	limits_now.max_per_client = 1000;
	limits_now.prefix_v4 = 32;
	for (int i = 0; i < 1000; i++) {
		snprintf(ip, sizeof(ip), "127.0.0.%d", 2 + i % 50);
		full += admit_ip(l, ip, false, &t) != LIMITS_OK;
	}
	tap(full == 0 && limits_in_use(l) == 1000,
	    "1000 connections from 50 addresses: none refused (%u)", full);
	limits_forget_worker(l, 0);
	for (int i = 0; i < 1000; i++) {
		snprintf(ip, sizeof(ip), "10.0.%d.%d", i / 250, i % 250);
		full += admit_ip(l, ip, false, &t) != LIMITS_OK;
	}
	tap(full == 0 && limits_in_use(l) == 1000 && consistent(l),
	    "1000 connections from 1000 addresses: none refused (%u)", full);
	limits_now = base_request;
	limits_free(l);
}

/* Children admit and release at once; every count comes back to 0. */
static void test_processes(void)
{
	char err[200];
	struct limits *l = limits_new_sized(64, err, sizeof(err));
	int ok = 1;

	limits_now.max_total = 64;
	limits_now.max_per_client = 64;
	for (unsigned w = 0; w < 4; w++) {
		if (fork() == 0) {
			uint32_t held[8];
			char ip[32];

			limits_set_worker(l, w);
			for (int i = 0; i < 4000; i++) {
				snprintf(ip, sizeof(ip), "10.0.%d.%u", i % 7,
				         w);
				if (admit_ip(l, ip, false, &held[i % 8]) !=
				    LIMITS_OK)
					_exit(2);
				if (i % 8 == 7)
					for (int j = 0; j < 8; j++)
						limits_release(l, held[j]);
			}
			_exit(0);
		}
	}
	for (int i = 0; i < 4; i++) {
		int st;

		wait(&st);
		ok &= WIFEXITED(st) && WEXITSTATUS(st) == 0;
	}
	tap(ok, "4 processes admit and release 16000 connections");
	tap(limits_in_use(l) == 0 && consistent(l),
	    "afterwards nothing is held and the table is consistent");
	limits_now = base_request;
	limits_free(l);
}

/* A worker killed while it holds the lock, half-way through taking a
 * slot: the next locker rebuilds, then the master frees what it held. */
static void test_killed_holder(void)
{
	char err[200];
	struct limits *l = limits_new_sized(8, err, sizeof(err));
	uint32_t t;
	pid_t pid;
	int st;

	admit_ip(l, "10.1.1.1", false, &t);
	pid = fork();
	if (pid == 0) {
		limits_set_worker(l, 3);
		admit_ip(l, "10.2.2.2", false, &t);
		lock(l);
		l->sh->free_top--;                /* a slot popped ... */
		l->clients[0].count += 5;         /* ... counts half done */
		memset(l->slots[7].key, 0xee, 8); /* ... and no used byte */
		raise(SIGKILL);
		_exit(1);
	}
	waitpid(pid, &st, 0);
	tap(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL,
	    "the worker died by SIGKILL holding the lock");
	tap(admit_ip(l, "10.3.3.3", false, &t) == LIMITS_OK &&
	        l->sh->recoveries == 1,
	    "the next admission gets the lock and rebuilds");
	tap(limits_in_use(l) == 3 && consistent(l),
	    "3 connections held, the table consistent again");
	tap(limits_forget_worker(l, 3) == 1 && limits_in_use(l) == 2 &&
	        consistent(l),
	    "forget_worker(3) returns the dead worker's connection");
	limits_free(l);
}

int main(void)
{
	test_keys();
	test_rate();
	test_reserved();
	test_admission();
	test_rate_limit();
	test_table_reuse();
	test_spread();
	test_processes();
	test_killed_holder();
	return tap_done();
}
