/*
 * Unit tests for src/policy/suggest.c (edit distance, "did you mean").
 * Prints TAP and exits 1 if any assertion failed.
 */
#include "tap.h"
#include "policy/suggest.h"

#include <string.h>

static const char *const HOOKS[] = {"server_tls", "client_tls", "connect",
                                    "helo",       "mail",       "rcpt"};
enum { N_HOOKS = sizeof(HOOKS) / sizeof(HOOKS[0]) };

static void distance(const char *a, const char *b, unsigned want)
{
	unsigned got = suggest_distance(a, b);

	tap(got == want, "distance(\"%s\", \"%s\") = %u (got %u)", a, b, want,
	    got);
	got = suggest_distance(b, a);
	tap(got == want, "distance(\"%s\", \"%s\") = %u (got %u)", b, a, want,
	    got);
}

static void nearest(const char *word, const char *want)
{
	const char *got = suggest_nearest(word, HOOKS, N_HOOKS, 2);

	tap((got == NULL && want == NULL) ||
	        (got != NULL && want != NULL && strcmp(got, want) == 0),
	    "nearest hook to \"%s\" is %s (got %s)", word, want ? want : "none",
	    got ? got : "none");
}

int main(void)
{
	char long_word[SUGGEST_MAX_LEN + 2];

	distance("", "", 0);
	distance("rcpt", "rcpt", 0);
	distance("", "mail", 4);
	distance("clinet_tls", "client_tls", 1); /* a swap */
	distance("ehlo", "helo", 1);
	distance("rcpt_", "rcpt", 1);
	distance("mial", "mail", 1);
	distance("Rcpt", "rcpt", 1);
	distance("server", "server_tls", 4);
	distance("kitten", "sitting", 3);
	distance("ca", "abc", 3); /* OSA: no edit of a swapped pair */
	memset(long_word, 'a', sizeof(long_word) - 1);
	long_word[sizeof(long_word) - 1] = '\0';
	distance(long_word, "a", SUGGEST_MAX_LEN + 1);

	nearest("clinet_tls", "client_tls");
	nearest("client_TLS", NULL); /* three substitutions */
	nearest("sever_tls", "server_tls");
	nearest("ehlo", "helo");
	nearest("RCPT", NULL);
	nearest("rcpt_to", NULL);
	nearest("mailx", "mail");
	nearest("conect", "connect");
	nearest("rcpt", NULL); /* a hook is no misspelling */
	nearest("", NULL);
	nearest(long_word, NULL);
	return tap_done();
}
