/*
 * Unit tests for src/proto/envelope.c. Prints TAP (one "ok N - ..." line
 * per assertion, then "1..N") and exits 1 if any assertion failed.
 *
 * Every header is parsed from a buffer that ends right before a PROT_NONE
 * page (mmap), the way spool/queue.c hands over what it read: no NUL after
 * it. A parser that reads one octet past `len` dies with SIGSEGV here.
 */
#include "tap.h"
#include "proto/envelope.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>



/* Two pages: data at the end of the first, the second PROT_NONE. */
struct guarded {
	char *map;
	size_t page;
};

static char *guard_copy(struct guarded *g, const char *text, size_t len)
{
	g->page = (size_t)sysconf(_SC_PAGESIZE);
	if (len > g->page)
		abort();
	g->map = mmap(NULL, 2 * g->page, PROT_READ | PROT_WRITE,
	              MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (g->map == MAP_FAILED ||
	    mprotect(g->map + g->page, g->page, PROT_NONE) != 0)
		abort();
	/* The rest of the page is digits: a reader that runs on finds
	 * no NUL before the guard page. */
	memset(g->map, '7', g->page);
	memcpy(g->map + g->page - len, text, len);
	return g->map + g->page - len;
}

static void guard_free(struct guarded *g)
{
	munmap(g->map, 2 * g->page);
}

static size_t parse_guarded(const char *text, size_t len, struct envelope *e,
                            char *err, size_t err_len)
{
	struct guarded g;
	char *buf = guard_copy(&g, text, len);
	size_t off = envelope_parse(buf, len, e, err, err_len);

	guard_free(&g);
	return off;
}

#define MAGIC "smtpgw-queue-file: 1\n"
#define WHOLE                                                                  \
	MAGIC "id: 0123456789abcdef\narrival: 1764000000\n"                    \
	      "client: 192.0.2.1\nhelo: client.example.test\n"                 \
	      "sender: <a@example.test>\nrcpt: <b@example.test>\n"             \
	      "rcpt: <c@example.test>\nbody: 8BITMIME\nsmtputf8: 1\n\n"

static void test_overread(void)
{
	static const char *const cut[] = {
	    MAGIC "arrival: 1764000000\n",
	    MAGIC "arrival: 1764000000",
	    MAGIC "arrival: 1764000000\n\n",
	    MAGIC "arrival: ",
	    MAGIC "id: 0123456789abcdef\narrival: 17",
	    MAGIC "helo: x\nsender: <a",
	    MAGIC "rcpt: <b@example.test>",
	    MAGIC,
	    "smtpgw-queue",
	};
	struct envelope e;
	char err[128];

	for (size_t i = 0; i < sizeof(cut) / sizeof(cut[0]); i++) {
		size_t len = strlen(cut[i]);

		err[0] = '\0';
		check(parse_guarded(cut[i], len, &e, err, sizeof(err)) == 0 &&
		          err[0] != '\0',
		      "a header cut at octet %zu before a guard page is "
		      "refused without reading past it (%s)",
		      len, err);
	}
}

static void test_whole(void)
{
	struct envelope e;
	char err[128] = "";
	size_t off = parse_guarded(WHOLE, strlen(WHOLE), &e, err, sizeof(err));

	check(off == strlen(WHOLE),
	      "a whole header right before a guard "
	      "page parses, message offset %zu",
	      off);
	check(e.arrival == 1764000000, "arrival read as 1764000000 (%lld)",
	      e.arrival);
	check(e.n_rcpts == 2 && e.sender != NULL &&
	          strcmp(e.sender, "a@example.test") == 0 &&
	          strcmp(e.rcpts[1], "c@example.test") == 0,
	      "sender and both rcpts read");
	check(e.body == SMTP_BODY_8BITMIME && e.smtputf8 &&
	          strcmp(e.helo, "client.example.test") == 0,
	      "body, smtputf8 and helo read");
	envelope_free(&e);
}

/* envelope_format's output parses back to the same envelope. */
static void test_round_trip(void)
{
	char *rcpts[] = {"r1@example.test", "r2@example.test"};
	struct envelope in = {.qid = "fedcba9876543210",
	                      .arrival = -5,
	                      .client = "2001:db8::1",
	                      .helo = "h.example.test",
	                      .sender = "",
	                      .rcpts = rcpts,
	                      .n_rcpts = 2,
	                      .body = SMTP_BODY_7BIT};
	struct envelope out;
	size_t len;
	char err[128] = "", *text = envelope_format(&in, &len);
	char *full = malloc(sizeof(MAGIC) - 1 + len);

	memcpy(full, MAGIC, sizeof(MAGIC) - 1);
	memcpy(full + sizeof(MAGIC) - 1, text, len);
	len += sizeof(MAGIC) - 1;
	check(parse_guarded(full, len, &out, err, sizeof(err)) == len,
	      "a formatted header parses back (%s)", err);
	check(strcmp(out.qid, in.qid) == 0 && out.arrival == -5 &&
	          strcmp(out.client, in.client) == 0 &&
	          strcmp(out.sender, "") == 0 && out.n_rcpts == 2 &&
	          strcmp(out.rcpts[0], rcpts[0]) == 0 &&
	          out.body == SMTP_BODY_7BIT && !out.smtputf8,
	      "and to the same values, a negative arrival and the null "
	      "sender included");
	envelope_free(&out);
	free(full);
	free(text);
}

static void test_bad_arrival(void)
{
	static const char *const bad[] = {
	    "",
	    "-",
	    "12x",
	    " 12",
	    "12 ",
	    "+12",
	    "0x10",
	    "9223372036854775808",
	    "99999999999999999999",
	};
	struct envelope e;
	char text[256], err[128];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int n = snprintf(text, sizeof(text),
		                 MAGIC "arrival: %s\nid: 0123456789abcdef\n"
		                       "sender: <>\nrcpt: <b@example.test>\n\n",
		                 bad[i]);

		err[0] = '\0';
		check(parse_guarded(text, (size_t)n, &e, err, sizeof(err)) ==
		              0 &&
		          strstr(err, "line 2: malformed") != NULL,
		      "arrival \"%s\" is refused, naming line 2 (%s)", bad[i],
		      err);
	}
	int n = snprintf(text, sizeof(text),
	                 MAGIC "arrival: 9223372036854775807\n"
	                       "id: 0123456789abcdef\n"
	                       "sender: <>\nrcpt: <b@example.test>\n\n");
	check(parse_guarded(text, (size_t)n, &e, err, sizeof(err)) ==
	              (size_t)n &&
	          e.arrival == 9223372036854775807LL,
	      "the largest arrival is read");
	envelope_free(&e);
}

/* Found by spec/fuzz/fuzz_envelope.c: an id with a NUL inside (or
 * anything but the spool's hex) was taken, and a NUL cut values short. */
static void test_bad_values(void)
{
	static const struct {
		const char *line;
		size_t len;
	} bad[] = {
#define LINE(s) {s, sizeof(s) - 1}
	    LINE("id: \x89\0\0\0ba9876543210\n"),
	    LINE("id: 0123456789ABCDEF\n"),
	    LINE("id: ../../etc/passwd\n"),
	    LINE("rcpt: <b@example.test\0x>\n"),
	    LINE("helo: a\0b\n"),
	    LINE("requiretls: yes\n"),
	    LINE("requiretls: 2\n"),
	    LINE("requiretls: \n"),
#undef LINE
	};
	struct envelope e;
	char text[256], err[128];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		size_t n = sizeof(MAGIC) - 1;

		memcpy(text, MAGIC, n);
		memcpy(text + n, bad[i].line, bad[i].len);
		n += bad[i].len;
		memcpy(text + n, "sender: <>\nrcpt: <r@x>\n\n", 24);
		n += 24;
		err[0] = '\0';
		check(parse_guarded(text, n, &e, err, sizeof(err)) == 0 &&
		          strstr(err, "line 2: malformed") != NULL,
		      "bad value %zu is refused, naming line 2 (%s)", i, err);
	}
}

/* RFC 8689: the REQUIRETLS flag is written only when set, and read back;
 * a header from before it reads as not set. */
static void test_requiretls(void)
{
	char *rcpts[] = {"r@example.test"};
	struct envelope in = {.qid = "0123456789abcdef", .sender = "s@x.test",
	                      .rcpts = rcpts, .n_rcpts = 1, .helo = "h"};
	struct envelope out;
	size_t len;
	char err[128] = "", *text, *full;

	text = envelope_format(&in, &len);
	check(text != NULL && strstr(text, "requiretls") == NULL,
	      "not set: no requiretls line");
	free(text);
	in.requiretls = true;
	text = envelope_format(&in, &len);
	check(text != NULL && strstr(text, "smtputf8: 0\nrequiretls: 1\n\n"),
	      "set: \"requiretls: 1\" after smtputf8");
	full = malloc(sizeof(MAGIC) - 1 + len);
	memcpy(full, MAGIC, sizeof(MAGIC) - 1);
	memcpy(full + sizeof(MAGIC) - 1, text, len);
	len += sizeof(MAGIC) - 1;
	check(parse_guarded(full, len, &out, err, sizeof(err)) == len &&
	          out.requiretls,
	      "and read back as set (%s)", err);
	envelope_free(&out);
	check(parse_guarded(WHOLE, strlen(WHOLE), &out, err, sizeof(err)) > 0 &&
	          !out.requiretls,
	      "a header without the line: not set");
	envelope_free(&out);
	free(full);
	free(text);
}

int main(void)
{
	test_requiretls();
	test_overread();
	test_whole();
	test_round_trip();
	test_bad_arrival();
	test_bad_values();
	return tap_done();
}
