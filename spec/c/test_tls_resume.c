/*
 * test_tls_resume: the ticket key ring of net/tls_resume.c (TAP): the newest
 * key and the one before are found, rotation waits for the interval, the
 * key two rotations old is gone, a forked child sees the master's rotation
 * (the page is shared), and a sealed child cannot write the page.
 * Handshakes with these keys are in spec/integration/tls_resumption_spec.lua.
 */
#include "net/tls_resume.h"

#include "tap.h"

#include <errno.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static bool same_key(const struct tls_ticket_key *a,
		     const struct tls_ticket_key *b)
{
	return memcmp(a->name, b->name, sizeof(a->name)) == 0 &&
	       memcmp(a->aes, b->aes, sizeof(a->aes)) == 0 &&
	       memcmp(a->hmac, b->hmac, sizeof(a->hmac)) == 0;
}

static bool found(const struct tls_ticket_ring *r,
		  const struct tls_ticket_key *k, bool want_newest)
{
	struct tls_ticket_key got;
	bool newest = !want_newest;

	return tls_ticket_ring_find(r, k->name, &got, &newest) &&
	       same_key(&got, k) && newest == want_newest;
}

static bool absent(const struct tls_ticket_ring *r,
		   const struct tls_ticket_key *k)
{
	struct tls_ticket_key got;
	bool newest;

	return !tls_ticket_ring_find(r, k->name, &got, &newest);
}

/* The child waits for the parent to rotate, then reports whether it sees
 * the same newest key (exit 0) or not (exit 1). */
static void shared_page(struct tls_ticket_ring *r, double t0)
{
	struct tls_ticket_key parent_key, child_key;
	int go[2], back[2], status = -1;
	char c = 0;
	pid_t pid;

	if (pipe(go) != 0 || pipe(back) != 0) {
		tap(false, "pipes");
		return;
	}
	pid = fork();
	if (pid == 0) {
		tls_ticket_ring_seal(r);
		if (read(go[0], &c, 1) != 1)
			_exit(2);
		_exit(tls_ticket_ring_current(r, &child_key) &&
				      write(back[1], &child_key, sizeof(child_key)) ==
					      (ssize_t)sizeof(child_key)
			      ? 0
			      : 1);
	}
	tap(tls_ticket_ring_rotate(r, t0 + 10000., 60.),
	    "the master rotates after the child forked");
	tls_ticket_ring_current(r, &parent_key);
	(void)!write(go[1], &c, 1);
	tap(read(back[0], &child_key, sizeof(child_key)) ==
			    (ssize_t)sizeof(child_key) &&
		    same_key(&child_key, &parent_key),
	    "the child sees the master's new key (the page is shared)");
	waitpid(pid, &status, 0);
	tap(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child exit 0");
	close(go[0]);
	close(go[1]);
	close(back[0]);
	close(back[1]);
}

/* A sealed page is read-only: read(2) into it fails with EFAULT. */
static void sealed(struct tls_ticket_ring *r)
{
	int fd[2], status = -1;
	pid_t pid;

	if (pipe(fd) != 0) {
		tap(false, "pipe");
		return;
	}
	(void)!write(fd[1], "x", 1);
	pid = fork();
	if (pid == 0) {
		ssize_t n;

		tls_ticket_ring_seal(r);
		n = read(fd[0], (void *)r, 1);
		_exit(n < 0 && errno == EFAULT ? 0 : 1);
	}
	waitpid(pid, &status, 0);
	tap(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	    "a sealed child cannot write the page");
	close(fd[0]);
	close(fd[1]);
}

int main(void)
{
	char err[256] = "";
	struct tls_ticket_ring *r = tls_ticket_ring_new(err, sizeof(err));
	struct tls_ticket_key first, second, third, k;
	double t0;

	tap(r != NULL, "ring made (%s)", err);
	if (r == NULL)
		return tap_done();
	tap(tls_ticket_ring_current(r, &first), "a key from the start");
	t0 = first.created;
	tap(found(r, &first, true), "the first key is found, newest");

	tap(!tls_ticket_ring_rotate(r, t0 + 59.9, 60.),
	    "no rotation before the interval");
	tap(tls_ticket_ring_current(r, &k) && same_key(&k, &first),
	    "the first key still issues tickets");

	tap(tls_ticket_ring_rotate(r, t0 + 60., 60.),
	    "rotation once the interval is up");
	tap(tls_ticket_ring_current(r, &second) && !same_key(&second, &first),
	    "a new key issues tickets");
	tap(found(r, &second, true), "the new key is found, newest");
	tap(found(r, &first, false),
	    "the previous key is still accepted, not newest (renew)");

	tap(!tls_ticket_ring_rotate(r, t0 + 119., 60.),
	    "the interval counts from the new key");
	tap(tls_ticket_ring_rotate(r, t0 + 120., 60.), "second rotation");
	tap(tls_ticket_ring_current(r, &third) && !same_key(&third, &second),
	    "a third key issues tickets");
	tap(absent(r, &first), "the key two rotations old is gone");
	tap(found(r, &second, false), "the one before is accepted");

	memset(&k, 0, sizeof(k));
	tap(absent(r, &k), "an unknown name is not found");

	shared_page(r, t0);
	sealed(r);
	tls_ticket_ring_free(r);
	tap(!tls_ticket_ring_current(NULL, &k), "no ring, no key");
	return tap_done();
}
