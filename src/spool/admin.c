/*
 * admin: the queue commands' reads and changes. Every call opens the
 * spool directories it needs and closes them before it returns; a read
 * leaves only the message's descriptor open, in the spool_message it
 * filled. A change is one rename (RENAME_NOREPLACE: never over another
 * message) or one unlink, plus the state file's unlink for a delete, so
 * the queue manager sees a message either where it was or where it went.
 * Must not write a queue file's content, touch tmp/ or corrupt/, or sync
 * anything but through spool_sync.
 */
#include "spool/admin.h"

#include "proto/envelope.h"
#include "spool/queue.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const place_dirs[] = {[SPOOL_QUEUED] = "queue",
					 [SPOOL_HELD] = "hold"};

static int open_dir(const char *spool, const char *name)
{
	char path[4096];
	int n = snprintf(path, sizeof(path), "%s/%s", spool, name);

	if (n < 0 || (size_t)n >= sizeof(path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

/* A directory a change needs: 0, ENOTDIR when the spool has none, or
 * why it cannot be opened. */
static int need_dir(const char *spool, const char *name, int *fd)
{
	*fd = open_dir(spool, name);
	if (*fd >= 0)
		return 0;
	return errno == ENOENT ? ENOTDIR : errno;
}

/* ---- reads ------------------------------------------------------------ */

/* state/ID into the message's arrays (no state directory: everything
 * pending, as queue_state_load_at makes it for a missing file). */
static bool load_records(const char *spool, struct spool_message *m)
{
	size_t n = m->env.n_rcpts;
	struct rcpt_records r;
	int state_fd;

	m->states = calloc(n, sizeof(*m->states));
	m->attempts = calloc(n, sizeof(*m->attempts));
	m->last_at = calloc(n, sizeof(*m->last_at));
	m->last = calloc(n, sizeof(*m->last));
	if (m->states == NULL || m->attempts == NULL || m->last_at == NULL ||
	    m->last == NULL)
		return false;
	r = (struct rcpt_records){.states = m->states, .last = m->last,
				  .attempts = m->attempts,
				  .last_at = m->last_at};
	state_fd = open_dir(spool, "state");
	queue_state_load_at(state_fd, m->qid, &r, n);
	if (state_fd >= 0)
		close(state_fd);
	return true;
}

/* Opens place/ID and parses its envelope; errno as spool_message_read
 * says. */
static bool open_message(const char *spool, enum spool_place place,
			 const char *qid, struct spool_message *m, char *err,
			 size_t err_len)
{
	const char *name = place_dirs[place];
	int dir_fd = open_dir(spool, name), saved;
	char why[256];
	bool ok;

	if (dir_fd < 0) {
		saved = errno;
		snprintf(err, err_len, "%s/%s: %s", spool, name,
			 strerror(saved));
		errno = saved;
		return false;
	}
	ok = queue_open_message_at(dir_fd, name, qid, &m->env, &m->file, why,
				   sizeof(why));
	saved = errno;
	close(dir_fd);
	if (!ok && saved == EBADMSG) /* the parser's reason names no file */
		snprintf(err, err_len, "%s/%s/%s: %s", spool, name, qid, why);
	else if (!ok)
		snprintf(err, err_len, "%s/%s", spool, why);
	errno = saved;
	return ok;
}

bool spool_message_read(const char *spool, enum spool_place place,
			const char *qid, struct spool_message *m, char *err,
			size_t err_len)
{
	memset(m, 0, sizeof(*m));
	m->file.fd = -1;
	if (!queue_id_valid(qid)) {
		snprintf(err, err_len, "%s: not a queue id", qid);
		errno = EINVAL;
		return false;
	}
	if (!open_message(spool, place, qid, m, err, err_len)) {
		m->file.fd = -1; /* closed already */
		return false;
	}
	memcpy(m->qid, qid, sizeof(m->qid));
	m->place = place;
	if (!load_records(spool, m)) {
		spool_message_free(m);
		snprintf(err, err_len, "%s: out of memory", qid);
		errno = ENOMEM;
		return false;
	}
	return true;
}

void spool_message_free(struct spool_message *m)
{
	if (m->file.fd >= 0)
		close(m->file.fd);
	for (size_t i = 0; m->last != NULL && i < m->env.n_rcpts; i++)
		free(m->last[i]);
	free(m->last);
	free(m->last_at);
	free(m->attempts);
	free(m->states);
	envelope_free(&m->env);
	memset(m, 0, sizeof(*m));
	m->file.fd = -1;
}

char **spool_list(const char *spool, enum spool_place place, size_t *n)
{
	int fd = open_dir(spool, place_dirs[place]);
	char **ids;

	*n = 0;
	if (fd < 0)
		return NULL;
	ids = queue_list_at(fd, n);
	close(fd);
	return ids;
}

void spool_list_free(char **ids, size_t n)
{
	for (size_t i = 0; ids != NULL && i < n; i++)
		free(ids[i]);
	free(ids);
}

bool spool_has(const char *spool, enum spool_place place, const char *qid)
{
	struct stat st;
	int fd;
	bool has;

	if (!queue_id_valid(qid) ||
	    (fd = open_dir(spool, place_dirs[place])) < 0)
		return false;
	has = fstatat(fd, qid, &st, AT_SYMLINK_NOFOLLOW) == 0;
	close(fd);
	return has;
}

/* ---- changes ---------------------------------------------------------- */

/* Unlinks name in spool/dir: 0 or an errno value (ENOENT too when the
 * directory is missing). */
static int unlink_in(const char *spool, const char *dir, const char *name)
{
	int fd = open_dir(spool, dir), rc = 0;

	if (fd < 0)
		return errno;
	if (unlinkat(fd, name, 0) != 0)
		rc = errno;
	close(fd);
	return rc;
}

int spool_delete(const char *spool, const char *qid)
{
	int rc;

	if (!queue_id_valid(qid))
		return EINVAL;
	rc = unlink_in(spool, place_dirs[SPOOL_QUEUED], qid);
	if (rc == ENOENT)
		rc = unlink_in(spool, place_dirs[SPOOL_HELD], qid);
	if (rc == 0)
		unlink_in(spool, "state", qid); /* none yet is fine */
	return rc;
}

/* from/ID to to/ID, never over a file there. A file system without
 * RENAME_NOREPLACE gets a link, then an unlink (the link refuses an
 * existing name just the same). */
static int move_between(int from_fd, int to_fd, const char *qid)
{
	int rc;

	if (renameat2(from_fd, qid, to_fd, qid, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS)
		return errno;
	if (linkat(from_fd, qid, to_fd, qid, 0) != 0)
		return errno;
	if (unlinkat(from_fd, qid, 0) == 0)
		return 0;
	rc = errno;
	unlinkat(to_fd, qid, 0);
	return rc;
}

static int move(const char *spool, enum spool_place from, enum spool_place to,
		const char *qid)
{
	int from_fd = -1, to_fd = -1, rc;

	if (!queue_id_valid(qid))
		return EINVAL;
	rc = need_dir(spool, place_dirs[from], &from_fd);
	if (rc == 0)
		rc = need_dir(spool, place_dirs[to], &to_fd);
	if (rc == 0)
		rc = move_between(from_fd, to_fd, qid);
	if (from_fd >= 0)
		close(from_fd);
	if (to_fd >= 0)
		close(to_fd);
	return rc;
}

int spool_hold(const char *spool, const char *qid)
{
	return move(spool, SPOOL_QUEUED, SPOOL_HELD, qid);
}

int spool_release(const char *spool, const char *qid)
{
	return move(spool, SPOOL_HELD, SPOOL_QUEUED, qid);
}

int spool_mark_flush(const char *spool, const char *qid)
{
	int dir_fd, fd, rc;

	if (strcmp(qid, QUEUE_FLUSH_ALL) != 0 && !queue_id_valid(qid))
		return EINVAL;
	if ((rc = need_dir(spool, "flush", &dir_fd)) != 0)
		return rc;
	fd = openat(dir_fd, qid, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC,
		    0600);
	if (fd < 0)
		rc = errno;
	else
		close(fd);
	close(dir_fd);
	return rc;
}

void spool_sync(const char *spool)
{
	static const char *const dirs[] = {"queue", "hold", "state", "flush"};

	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		int fd = open_dir(spool, dirs[i]);

		if (fd >= 0) {
			fsync(fd);
			close(fd);
		}
	}
}
