/*
 * Unit checks of src/core/stats.c: the counter table (every counter
 * described, families adjacent, keys unique, names Prometheus accepts),
 * and the file: blocks added to by several processes are summed, a
 * reader refuses a file of the wrong size or magic. TAP output.
 */
#include "core/stats.h"

#include "tap.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static bool prom_name(const char *s)
{
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || *s == '_' ||
		      (*s >= '0' && *s <= '9')))
			return false;
	return true;
}

static const struct stat_desc *desc(int id)
{
	return stat_describe((enum stat_id)id);
}

static bool ends_in_total(const char *family)
{
	size_t n = strlen(family);

	return n > 6 && strcmp(family + n - 6, "_total") == 0;
}

static void table(void)
{
	bool described = true, adjacent = true, unique = true, names = true,
	     totals = true;

	for (int i = 0; i < STAT_COUNT && described; i++) {
		const struct stat_desc *d = desc(i);

		described &= d->family != NULL && d->key != NULL &&
			     d->help != NULL && d->labels != NULL;
		if (!described)
			break;
		names &= prom_name(d->family);
		totals &= ends_in_total(d->family);
		for (int j = 0; j < i; j++) {
			unique &= strcmp(d->key, desc(j)->key) != 0;
			/* a family seen before must be the previous one's */
			if (strcmp(d->family, desc(j)->family) == 0)
				adjacent &= strcmp(desc(i - 1)->family,
						   d->family) == 0;
		}
	}
	check(described, "every counter has a family, labels, help and key");
	check(names, "family names are [a-z0-9_]");
	check(totals, "every counter family ends in _total");
	check(adjacent, "a family's series are adjacent");
	check(unique, "keys are unique");
	check(stat_describe(STAT_COUNT) == NULL, "no counter past the last");
	check(stat_reject_id(STAT_STAGE_RCPT, 554) == STAT_REJECTS + 5 &&
		      stat_reject_id(STAT_STAGE_HELO, 451) == STAT_REJECTS,
	      "rejects: stage × class");
	check(strcmp(desc(stat_outbound_id(3, STAT_HAD_VERIFIED))->labels,
		     "level=\"verify\",tls=\"verified\"") == 0,
	      "outbound: level × what it had");
}

static void file(void)
{
	char dir[] = "/tmp/test_stats.XXXXXX", err[300], path[300];
	struct stats *w, *r;
	int fd;

	check(mkdtemp(dir) != NULL, "a temporary spool");
	check(stats_open(dir, err, sizeof(err)) == NULL, "no file: refused");
	w = stats_create(dir, 4, err, sizeof(err));
	check(w != NULL, "created: %s", w ? "ok" : err);
	stats_add(STAT_RECEIVED); /* no slot yet: nothing */
	for (unsigned slot = 0; slot < 3; slot++) {
		pid_t pid = fork();

		if (pid == 0) {
			stats_use_slot(w, slot);
			for (unsigned i = 0; i <= slot; i++)
				stats_add(STAT_RECEIVED);
			stats_add(STAT_SENT);
			_exit(0);
		}
		waitpid(pid, NULL, 0);
	}
	r = stats_open(dir, err, sizeof(err));
	check(r != NULL, "opened read-only");
	check(r && stats_total(r, STAT_RECEIVED) == 6,
	      "three processes' blocks summed: 1 + 2 + 3");
	check(r && stats_total(r, STAT_SENT) == 3, "one each: 3");
	check(r && stats_master_pid(r) == (long)getpid(), "the master's pid");
	stats_close(r);
	stats_close(w);
	snprintf(path, sizeof(path), "%s/stats", dir);
	fd = open(path, O_WRONLY);
	check(fd >= 0 && ftruncate(fd, 100) == 0, "truncated");
	close(fd);
	check(stats_open(dir, err, sizeof(err)) == NULL,
	      "a file of the wrong size is refused: %s", err);
	unlink(path);
	rmdir(dir);
}

int main(void)
{
	table();
	file();
	return tap_done();
}
