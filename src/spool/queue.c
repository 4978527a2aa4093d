/*
 * queue: spool directories, queue ids, temp-file writing and the sync
 * thread. The thread owns a commit from queue_commit until it is reported
 * back on the loop through an ev_async; the loop then calls the owner (or
 * removes an orphan's file) and frees the commit. Nothing else is shared
 * between the threads, and that list is guarded by one mutex.
 */
#include "spool/queue.h"
#include "proto/envelope.h"
#include "core/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static const char QUEUE_MAGIC[] = "smtpgw-queue-file: 1\n";

struct queue_commit {
	struct queue_commit *next;
	struct queue *q;
	int fd;
	char qid[QUEUE_ID_LEN + 1];
	bool ok;
	int error;
	queue_commit_cb *cb;
	void *owner;
};

struct queue {
	char *dir;
	int tmp_fd;
	int queue_fd;
	int state_fd;
	int hold_fd;  /* messages a person put on hold: never delivered */
	int flush_fd; /* markers: "retry this message now" */
	struct ev_loop *loop;
	ev_async done_async;
	pthread_t thread;
	bool thread_started;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct queue_commit *pending; /* newest first; guarded by mu */
	struct queue_commit *done;    /* guarded by mu */
	bool stopping;		      /* guarded by mu */
	uint64_t last_id;
	unsigned slot; /* this process's bits in every id it makes */
	unsigned in_flight;
};

static bool mkdir_p(const char *path)
{
	char buf[4096];
	size_t n = strlen(path);

	if (n >= sizeof(buf))
		return false;
	memcpy(buf, path, n + 1);
	for (char *p = buf + 1; *p != '\0'; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, 0755) != 0 && errno != EEXIST)
			return false;
		*p = '/';
	}
	return mkdir(buf, 0700) == 0 || errno == EEXIST;
}

static int open_subdir(const char *spool, const char *name)
{
	char path[4096];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", spool, name);
	if (mkdir(path, 0700) != 0 && errno != EEXIST)
		return -1;
	fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0)
		fsync(fd);
	return fd;
}

bool queue_id_valid(const char *name)
{
	size_t n = strspn(name, "0123456789abcdef");

	return n == QUEUE_ID_LEN && name[n] == '\0';
}

/* A DIR over a dup of one of our directory descriptors. The dup shares
 * the read position, so it must be rewound: an earlier scan left it at
 * the end (and the next listing then saw no message at all). */
static DIR *open_listing(int dir_fd)
{
	DIR *d = fdopendir(dup(dir_fd));

	if (d != NULL)
		rewinddir(d);
	return d;
}

/* Every file in tmp/ is a message nobody was told 250 about. */
static unsigned remove_partials(int dir_fd)
{
	DIR *d = open_listing(dir_fd);
	struct dirent *e;
	unsigned removed = 0;

	if (d == NULL)
		return 0;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		if (unlinkat(dir_fd, e->d_name, 0) == 0)
			removed++;
	}
	closedir(d);
	fsync(dir_fd);
	return removed;
}

static bool has_magic(int dir_fd, const char *name)
{
	char head[sizeof(QUEUE_MAGIC) - 1];
	int fd = openat(dir_fd, name, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return false;
	n = read(fd, head, sizeof(head));
	close(fd);
	return n == (ssize_t)sizeof(head) &&
	       memcmp(head, QUEUE_MAGIC, sizeof(head)) == 0;
}

static unsigned scan_queue(struct queue *q)
{
	DIR *d = open_listing(q->queue_fd);
	struct dirent *e;
	unsigned found = 0;

	if (d == NULL)
		return 0;
	while ((e = readdir(d)) != NULL) {
		uint64_t id;

		if (e->d_name[0] == '.')
			continue;
		if (!queue_id_valid(e->d_name) ||
		    !has_magic(q->queue_fd, e->d_name)) {
			struct logline l;

			log_begin(&l, LOG_WARN, "spool_unknown_file");
			log_kv(&l, "file", "%s/queue/%s", q->dir, e->d_name);
			log_end(&l);
			continue;
		}
		found++;
		id = strtoull(e->d_name, NULL, 16);
		if (id > q->last_id)
			q->last_id = id;
	}
	closedir(d);
	return found;
}

static void sync_one(struct queue *q, struct queue_commit *c)
{
	c->ok = false;
	if (fdatasync(c->fd) != 0) {
		c->error = errno;
		close(c->fd);
		unlinkat(q->tmp_fd, c->qid, 0);
		return;
	}
	close(c->fd);
	if (renameat2(q->tmp_fd, c->qid, q->queue_fd, c->qid,
		      RENAME_NOREPLACE) != 0) {
		c->error = errno;
		unlinkat(q->tmp_fd, c->qid, 0);
		return;
	}
	c->ok = true;
}

/* A batch is durable only once the directory entry is; if that sync fails,
 * none of the batch may be acknowledged. */
static void sync_batch(struct queue *q, struct queue_commit *batch)
{
	bool renamed = false;

	for (struct queue_commit *c = batch; c != NULL; c = c->next) {
		sync_one(q, c);
		renamed |= c->ok;
	}
	if (!renamed || fsync(q->queue_fd) == 0)
		return;
	for (struct queue_commit *c = batch; c != NULL; c = c->next) {
		if (!c->ok)
			continue;
		c->ok = false;
		c->error = errno;
		unlinkat(q->queue_fd, c->qid, 0);
	}
}

static struct queue_commit *reverse(struct queue_commit *list)
{
	struct queue_commit *out = NULL;

	while (list != NULL) {
		struct queue_commit *next = list->next;

		list->next = out;
		out = list;
		list = next;
	}
	return out;
}

static void append_done(struct queue *q, struct queue_commit *batch)
{
	struct queue_commit *last = batch;

	while (last->next != NULL)
		last = last->next;
	pthread_mutex_lock(&q->mu);
	last->next = q->done;
	q->done = batch;
	pthread_mutex_unlock(&q->mu);
	ev_async_send(q->loop, &q->done_async);
}

static void *sync_thread(void *arg)
{
	struct queue *q = arg;

	for (;;) {
		struct queue_commit *batch;

		pthread_mutex_lock(&q->mu);
		while (q->pending == NULL && !q->stopping)
			pthread_cond_wait(&q->cv, &q->mu);
		batch = reverse(q->pending);
		q->pending = NULL;
		pthread_mutex_unlock(&q->mu);
		if (batch == NULL)
			return NULL; /* stopping and nothing left */
		sync_batch(q, batch);
		append_done(q, batch);
	}
}

static void report(struct queue *q, struct queue_commit *c)
{
	if (c->cb != NULL) {
		if (!c->ok)
			log_qid_msg(LOG_ERR, "spool_sync_failed", c->qid,
				    "%s", strerror(c->error));
		c->cb(c->owner, c->ok, c->qid);
	} else if (c->ok) {
		struct logline l;

		unlinkat(q->queue_fd, c->qid, 0);
		log_begin(&l, LOG_INFO, "spool_orphan_removed");
		log_kv(&l, "qid", "%s", c->qid);
		log_end(&l);
	}
	q->in_flight--;
	free(c);
}

static void done_cb(struct ev_loop *loop, ev_async *w, int revents)
{
	struct queue *q = w->data;
	struct queue_commit *list;

	(void)loop;
	(void)revents;
	pthread_mutex_lock(&q->mu);
	list = reverse(q->done);
	q->done = NULL;
	pthread_mutex_unlock(&q->mu);
	while (list != NULL) {
		struct queue_commit *next = list->next;

		report(q, list);
		list = next;
	}
}

static void close_dirs(struct queue *q)
{
	int *fds[] = {&q->tmp_fd, &q->queue_fd, &q->state_fd, &q->hold_fd,
		      &q->flush_fd};

	for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++) {
		if (*fds[i] >= 0)
			close(*fds[i]);
		*fds[i] = -1;
	}
}

static bool open_dirs(struct queue *q, char *err, size_t err_len)
{
	if (!mkdir_p(q->dir)) {
		snprintf(err, err_len, "spool %s: %s", q->dir,
			 strerror(errno));
		return false;
	}
	q->tmp_fd = open_subdir(q->dir, "tmp");
	q->queue_fd = open_subdir(q->dir, "queue");
	q->state_fd = open_subdir(q->dir, "state");
	q->hold_fd = open_subdir(q->dir, "hold");
	q->flush_fd = open_subdir(q->dir, "flush");
	if (q->tmp_fd < 0 || q->queue_fd < 0 || q->state_fd < 0 ||
	    q->hold_fd < 0 || q->flush_fd < 0) {
		snprintf(err, err_len, "spool %s: %s", q->dir,
			 strerror(errno));
		return false;
	}
	return true;
}

/* A state file without its message: the message was removed and the
 * process stopped before the state file followed it. A held message keeps
 * its state file where it is. */
static void remove_orphan_states(struct queue *q)
{
	DIR *d = open_listing(q->state_fd);
	struct dirent *e;
	struct stat st;

	while (d != NULL && (e = readdir(d)) != NULL)
		if (queue_id_valid(e->d_name) &&
		    fstatat(q->queue_fd, e->d_name, &st, 0) != 0 &&
		    fstatat(q->hold_fd, e->d_name, &st, 0) != 0)
			unlinkat(q->state_fd, e->d_name, 0);
	if (d != NULL)
		closedir(d);
}

static void recover(struct queue *q)
{
	struct logline l;
	unsigned removed = remove_partials(q->tmp_fd);
	unsigned queued = scan_queue(q);

	remove_orphan_states(q);

	log_begin(&l, LOG_INFO, "spool_recover");
	log_kv(&l, "spool", "%s", q->dir);
	log_kv(&l, "queued", "%u", queued);
	log_kv(&l, "partial_removed", "%u", removed);
	log_end(&l);
}

struct queue *queue_open(const char *spool_dir, struct ev_loop *loop,
			 char *err, size_t err_len)
{
	struct queue *q = calloc(1, sizeof(*q));

	if (q == NULL || (q->dir = strdup(spool_dir)) == NULL) {
		snprintf(err, err_len, "out of memory");
		free(q);
		return NULL;
	}
	q->tmp_fd = q->queue_fd = q->state_fd = q->hold_fd = q->flush_fd = -1;
	q->loop = loop;
	pthread_mutex_init(&q->mu, NULL);
	pthread_cond_init(&q->cv, NULL);
	if (!open_dirs(q, err, err_len)) {
		queue_close(q);
		return NULL;
	}
	ev_async_init(&q->done_async, done_cb);
	q->done_async.data = q;
	ev_async_start(loop, &q->done_async);
	if (pthread_create(&q->thread, NULL, sync_thread, q) != 0) {
		snprintf(err, err_len, "cannot start the sync thread");
		queue_close(q);
		return NULL;
	}
	q->thread_started = true;
	return q;
}

void queue_close(struct queue *q)
{
	if (q == NULL)
		return;
	if (q->thread_started) {
		pthread_mutex_lock(&q->mu);
		q->stopping = true;
		pthread_cond_signal(&q->cv);
		pthread_mutex_unlock(&q->mu);
		pthread_join(q->thread, NULL);
		done_cb(q->loop, &q->done_async, 0);
		ev_async_stop(q->loop, &q->done_async);
	}
	close_dirs(q);
	pthread_mutex_destroy(&q->mu);
	pthread_cond_destroy(&q->cv);
	free(q->dir);
	free(q);
}

unsigned queue_in_flight(const struct queue *q)
{
	return q->in_flight;
}

/*
 * An id is 64 bits: microseconds since the epoch (52 bits, good until
 * the year 2112), then the maker's slot (6 bits) and a sequence (6 bits)
 * for ids made in the same microsecond. Processes have distinct slots, so
 * their ids never collide; within one process ids only grow, even when
 * the clock steps back (the time part then runs ahead of the clock).
 */
enum { ID_SLOT_SHIFT = 6, ID_TIME_SHIFT = 12, ID_SEQ_MAX = 63 };

void queue_set_slot(struct queue *q, unsigned slot)
{
	q->slot = slot % (QUEUE_SLOTS);
}

unsigned queue_id_slot(const char *qid)
{
	uint64_t id = strtoull(qid, NULL, 16);

	return (unsigned)(id >> ID_SLOT_SHIFT) % QUEUE_SLOTS;
}

double queue_id_time(const char *qid)
{
	uint64_t id = strtoull(qid, NULL, 16);

	return (double)(id >> ID_TIME_SHIFT) / 1e6;
}

void queue_new_id(struct queue *q, char out[QUEUE_ID_LEN + 1])
{
	struct timeval tv;
	uint64_t t, seq = 0;
	uint64_t last_t = q->last_id >> ID_TIME_SHIFT;
	uint64_t last_seq = q->last_id & ID_SEQ_MAX;

	gettimeofday(&tv, NULL);
	t = (uint64_t)tv.tv_sec * 1000000u + (uint64_t)tv.tv_usec;
	if (t <= last_t && last_seq < ID_SEQ_MAX) {
		t = last_t;
		seq = last_seq + 1;
	} else if (t <= last_t) {
		t = last_t + 1;
	}
	q->last_id = t << ID_TIME_SHIFT |
		     (uint64_t)q->slot << ID_SLOT_SHIFT | seq;
	snprintf(out, QUEUE_ID_LEN + 1, "%016" PRIx64, q->last_id);
}

static void spool_file_free_buffer(struct spool_file *f)
{
	free(f->buf);
	f->buf = NULL;
	f->buf_len = 0;
}

bool spool_file_create(struct queue *q, const char *qid,
		       struct spool_file *f)
{
	memset(f, 0, sizeof(*f));
	memcpy(f->qid, qid, QUEUE_ID_LEN + 1);
	f->fd = -1;
	if ((f->buf = malloc(SPOOL_BUF_SIZE)) == NULL) {
		log_qid_msg(LOG_ERR, "spool_create_failed", qid, "out of memory");
		f->failed = true;
		return false;
	}
	f->fd = openat(q->tmp_fd, qid,
		       O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (f->fd < 0) {
		log_qid_msg(LOG_ERR, "spool_create_failed", qid, "%s",
			    strerror(errno));
		spool_file_free_buffer(f);
		f->failed = true;
		return false;
	}
	memcpy(f->buf, QUEUE_MAGIC, sizeof(QUEUE_MAGIC) - 1);
	f->buf_len = sizeof(QUEUE_MAGIC) - 1;
	return true;
}

/* Hands the buffer and then `len` octets of `data` to the kernel, in one
 * writev(2) unless it writes short. */
static void spool_file_put(struct spool_file *f, const char *data, size_t len)
{
	struct iovec iov[2] = {{f->buf, f->buf_len}, {(void *)data, len}};
	struct iovec *v = iov;
	int n_iov = len > 0 ? 2 : 1;

	while (n_iov > 0 && !f->failed) {
		ssize_t n = writev(f->fd, v, n_iov);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			log_qid_msg(LOG_ERR, "spool_write_failed", f->qid,
				    "%s", n < 0 ? strerror(errno) : "no progress");
			f->failed = true;
			break;
		}
		f->written += (uint64_t)n;
		while (n_iov > 0 && (size_t)n >= v->iov_len) {
			n -= (ssize_t)v->iov_len;
			v++;
			n_iov--;
		}
		if (n_iov > 0) {
			v->iov_base = (char *)v->iov_base + n;
			v->iov_len -= (size_t)n;
		}
	}
	f->buf_len = 0;
}

void spool_file_write(struct spool_file *f, const void *data, size_t len)
{
	if (f->failed)
		return;
	if (len > SPOOL_BUF_SIZE - f->buf_len) {
		spool_file_put(f, data, len);
		return;
	}
	memcpy(f->buf + f->buf_len, data, len);
	f->buf_len += len;
}

void spool_file_abort(struct queue *q, struct spool_file *f)
{
	spool_file_free_buffer(f);
	if (f->fd < 0)
		return;
	close(f->fd);
	unlinkat(q->tmp_fd, f->qid, 0);
	f->fd = -1;
}

struct queue_commit *queue_commit(struct queue *q, struct spool_file *f,
				  queue_commit_cb *cb, void *owner)
{
	struct queue_commit *c;

	if (!f->failed && f->buf_len > 0)
		spool_file_put(f, NULL, 0);
	spool_file_free_buffer(f);
	if (f->failed || (c = calloc(1, sizeof(*c))) == NULL) {
		spool_file_abort(q, f);
		return NULL;
	}
	c->q = q;
	c->fd = f->fd;
	f->fd = -1;
	memcpy(c->qid, f->qid, sizeof(c->qid));
	c->cb = cb;
	c->owner = owner;
	q->in_flight++;
	pthread_mutex_lock(&q->mu);
	c->next = q->pending;
	q->pending = c;
	pthread_cond_signal(&q->cv);
	pthread_mutex_unlock(&q->mu);
	return c;
}

void queue_commit_orphan(struct queue_commit *commit)
{
	commit->cb = NULL;
	commit->owner = NULL;
}

/* ---- delivery's view ---------------------------------------------------- */

/* HEADER_READ: the first read of a queue file opened for its descriptor;
 * WHOLE_READ: of one read into memory (queue_read_message), which takes
 * the whole file when it is no bigger. */
enum { HEADER_READ = 16384, WHOLE_READ = 65536, HEADER_MAX = 4 << 20 };

/* Reads until the header's blank line is in the buffer; `eof`: the buffer
 * holds the whole file (a regular file reads short only at its end). */
static char *read_header(int fd, size_t cap, size_t *len, bool *eof)
{
	char *buf = malloc(cap);

	*len = 0;
	*eof = false;
	while (buf != NULL) {
		size_t want = cap - *len;
		ssize_t n = pread(fd, buf + *len, want, (off_t)*len);

		if (n <= 0) {
			*eof = n == 0;
			return buf; /* the parser says what is missing */
		}
		*len += (size_t)n;
		*eof = (size_t)n < want;
		if (*eof || memmem(buf, *len, "\n\n", 2) != NULL ||
		    cap >= HEADER_MAX)
			return buf;
		if (*len == cap) {
			char *grown = realloc(buf, cap * 2);

			if (grown == NULL)
				break;
			buf = grown;
			cap *= 2;
		}
	}
	free(buf);
	return NULL;
}

static bool open_failed(struct queued_message *m, const char *dir_name,
			const char *qid, char *err, size_t err_len)
{
	int saved = errno;

	snprintf(err, err_len, "%s/%s: %s", dir_name, qid, strerror(saved));
	if (m->fd >= 0)
		close(m->fd);
	m->fd = -1;
	errno = saved;
	return false;
}

/* The size comes from the read when it reached the end, else from fstat;
 * `keep`: a file read whole stays in m->data, its descriptor closed. */
static bool open_message(int dir_fd, const char *dir_name, const char *qid,
			 struct envelope *e, struct queued_message *m,
			 bool keep, char *err, size_t err_len)
{
	struct stat st;
	size_t len, offset = 0;
	bool eof;
	char *header;

	m->data = NULL;
	m->fd = openat(dir_fd, qid, O_RDONLY | O_CLOEXEC);
	if (m->fd < 0)
		return open_failed(m, dir_name, qid, err, err_len);
	header = read_header(m->fd, keep ? WHOLE_READ : HEADER_READ, &len,
			     &eof);
	if (header == NULL) {
		snprintf(err, err_len, "%s/%s: out of memory", dir_name, qid);
		close(m->fd);
		m->fd = -1;
		errno = ENOMEM;
		return false;
	}
	st.st_size = (off_t)len;
	if (!eof && fstat(m->fd, &st) != 0) {
		free(header);
		return open_failed(m, dir_name, qid, err, err_len);
	}
	offset = envelope_parse(header, len, e, err, err_len);
	if (offset == 0) {
		free(header);
		close(m->fd);
		m->fd = -1;
		errno = EBADMSG; /* read, and not a queue file */
		return false;
	}
	m->body_offset = (off_t)offset;
	m->body_size = (uint64_t)st.st_size - offset;
	if (keep && eof) {
		/* read into WHOLE_READ octets: kept at its own size */
		char *fit = realloc(header, len > 0 ? len : 1);

		m->data = fit != NULL ? fit : header;
		close(m->fd);
		m->fd = -1;
	} else {
		free(header);
	}
	return true;
}

bool queue_open_message_at(int dir_fd, const char *dir_name, const char *qid,
			   struct envelope *e, struct queued_message *m,
			   char *err, size_t err_len)
{
	return open_message(dir_fd, dir_name, qid, e, m, false, err, err_len);
}

void queued_message_close(struct queued_message *m)
{
	if (m->fd >= 0)
		close(m->fd);
	m->fd = -1;
	free(m->data);
	m->data = NULL;
}

static bool held(const struct queue *q, const char *qid)
{
	struct stat st;

	return fstatat(q->hold_fd, qid, &st, 0) == 0;
}

/* A message put on hold (`queue hold`) is gone from queue/ as a deleted
 * one is (ENOENT): the reason says which. */
static bool open_queued(struct queue *q, const char *qid, struct envelope *e,
			struct queued_message *m, bool keep, char *err,
			size_t err_len)
{
	if (open_message(q->queue_fd, "queue", qid, e, m, keep, err, err_len))
		return true;
	if (errno == ENOENT && held(q, qid)) {
		snprintf(err, err_len, "queue/%s: put on hold (queue hold): "
			 "not retried until it is released", qid);
		errno = ENOENT;
	}
	return false;
}

bool queue_open_message(struct queue *q, const char *qid, struct envelope *e,
			struct queued_message *m, char *err, size_t err_len)
{
	return open_queued(q, qid, e, m, false, err, err_len);
}

bool queue_read_message(struct queue *q, const char *qid, struct envelope *e,
			struct queued_message *m, char *err, size_t err_len)
{
	return open_queued(q, qid, e, m, true, err, err_len);
}

static const char *const state_words[] = {
	[RCPT_PENDING] = "deferred",
	[RCPT_SENT] = "sent",
	[RCPT_BOUNCED] = "bounced",
	[RCPT_NOTIFIED] = "notified",
};

void queue_state_append(struct queue *q, const char *qid, size_t index,
			enum rcpt_state state, const char *text)
{
	char line[640];
	int fd = openat(q->state_fd, qid,
			O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	int n;

	if (fd < 0)
		return;
	n = snprintf(line, sizeof(line), "%zu %s t=%lld %.500s\n", index,
		     state_words[state], (long long)time(NULL), text);
	for (char *c = line; c < line + n - 1; c++)
		if (*c == '\n' || *c == '\r')
			*c = ' ';
	if (write(fd, line, (size_t)n) != n)
		log_qid_msg(LOG_ERR, "spool_state_failed", qid, "state/%s: %s",
			    qid, strerror(errno));
	close(fd);
}

/* "t=SECONDS " at the start of a record's text (records written before
 * it existed have none): the time, and the text after it. */
static const char *record_time(const char *text, long long *at)
{
	int used = 0;

	if (sscanf(text, "t=%lld %n", at, &used) == 1 && used > 0 &&
	    text[used - 1] == ' ')
		return text + used;
	*at = 0;
	return text;
}

/* One record of state/ID applied to the recipient it names. */
static void apply_record(const struct rcpt_records *r, size_t i,
			 const char *word, const char *text, long long mtime)
{
	enum rcpt_state st = RCPT_PENDING;
	long long at;

	if (strcmp(word, "sent") == 0)
		st = RCPT_SENT;
	else if (strcmp(word, "bounced") == 0)
		st = RCPT_BOUNCED;
	else if (strcmp(word, "notified") == 0)
		st = RCPT_NOTIFIED;
	else if (strcmp(word, "deferred") != 0)
		return;
	if (st != RCPT_PENDING || r->states[i] == RCPT_PENDING)
		r->states[i] = st; /* "deferred" only notes a reason */
	text = record_time(text, &at);
	if (r->attempts != NULL && st != RCPT_NOTIFIED)
		r->attempts[i]++;
	if (r->last_at != NULL)
		r->last_at[i] = at != 0 ? at : mtime;
	if (r->last != NULL) {
		free(r->last[i]);
		r->last[i] = strdup(text);
	}
}

/* Replays state/ID: the last line of a recipient gives its text and time;
 * only "sent", "bounced" and "notified" change its state, and every
 * outcome but "notified" was an attempt. */
void queue_state_load_at(int state_fd, const char *qid,
			 const struct rcpt_records *r, size_t n)
{
	int fd = openat(state_fd, qid, O_RDONLY | O_CLOEXEC);
	FILE *f = fd >= 0 ? fdopen(fd, "r") : NULL;
	struct stat st;
	long long mtime = f != NULL && fstat(fd, &st) == 0 ? st.st_mtime : 0;
	char line[700];

	for (size_t i = 0; i < n; i++) {
		r->states[i] = RCPT_PENDING;
		if (r->attempts != NULL)
			r->attempts[i] = 0;
		if (r->last_at != NULL)
			r->last_at[i] = 0;
	}
	while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
		size_t index;
		char word[16];
		int text = 0;

		if (sscanf(line, "%zu %15s %n", &index, word, &text) < 2 ||
		    index >= n || text == 0)
			continue;
		line[strcspn(line, "\n")] = '\0';
		apply_record(r, index, word, line + text, mtime);
	}
	if (f != NULL)
		fclose(f);
	else if (fd >= 0)
		close(fd);
}

void queue_state_load(struct queue *q, const char *qid,
		      const struct rcpt_records *r, size_t n)
{
	queue_state_load_at(q->state_fd, qid, r, n);
}

void queue_quarantine(struct queue *q, const char *qid)
{
	char path[4096];
	int fd;

	snprintf(path, sizeof(path), "%s/corrupt", q->dir);
	fd = open_subdir(q->dir, "corrupt");
	if (fd < 0 || renameat(q->queue_fd, qid, fd, qid) != 0)
		log_qid_msg(LOG_ERR, "spool_corrupt", qid, "queue/%s: cannot "
			    "move it to %s: %s", qid, path, strerror(errno));
	else
		log_qid_msg(LOG_ERR, "spool_corrupt", qid, "queue/%s is not a "
			    "valid queue file: moved to %s/%s", qid, path, qid);
	unlinkat(q->state_fd, qid, 0);
	if (fd >= 0)
		close(fd);
}

/* The state file of a message on hold stays: it goes with the message
 * when it is released (or deleted). */
void queue_remove(struct queue *q, const char *qid)
{
	if (unlinkat(q->queue_fd, qid, 0) == 0 || !held(q, qid))
		unlinkat(q->state_fd, qid, 0);
}

char **queue_list(struct queue *q, size_t *n)
{
	return queue_list_at(q->queue_fd, n);
}

char **queue_list_at(int dir_fd, size_t *n)
{
	DIR *d = open_listing(dir_fd);
	struct dirent *e;
	char **ids = NULL;

	*n = 0;
	while (d != NULL && (e = readdir(d)) != NULL) {
		char **grown;

		if (!queue_id_valid(e->d_name))
			continue;
		grown = realloc(ids, (*n + 1) * sizeof(*ids));
		if (grown == NULL)
			break;
		ids = grown;
		if ((ids[*n] = strdup(e->d_name)) != NULL)
			(*n)++;
	}
	if (d != NULL)
		closedir(d);
	return ids;
}

/* Every marker in flush/ is read and removed. */
char **queue_take_flush_marks(struct queue *q, size_t *n, bool *all)
{
	char **ids = queue_list_at(q->flush_fd, n);
	struct stat st;

	*all = fstatat(q->flush_fd, QUEUE_FLUSH_ALL, &st, 0) == 0;
	if (*all)
		unlinkat(q->flush_fd, QUEUE_FLUSH_ALL, 0);
	for (size_t i = 0; i < *n; i++)
		unlinkat(q->flush_fd, ids[i], 0);
	return ids;
}

bool queue_submit(struct queue *q, const struct envelope *e,
		  const char *content, size_t len, queue_commit_cb *cb,
		  void *owner)
{
	struct spool_file f;
	struct envelope own = *e;
	size_t header_len;
	char *header;

	queue_new_id(q, own.qid);
	if (!spool_file_create(q, own.qid, &f))
		return false;
	header = envelope_format(&own, &header_len);
	if (header != NULL)
		spool_file_write(&f, header, header_len);
	else
		f.failed = true;
	free(header);
	spool_file_write(&f, content, len);
	return queue_commit(q, &f, cb, owner) != NULL;
}

/* ---- the master's view ------------------------------------------------ */

/* The lock, or false with the holder's pid. A holder that is dead left
 * children that are stopping (they keep the lock until they are gone):
 * they get a few seconds. */
static bool take_lock(int fd, long *pid)
{
	char text[32];
	ssize_t n;

	for (int tries = 0; tries < 100; tries++) {
		if (flock(fd, LOCK_EX | LOCK_NB) == 0)
			return true;
		n = pread(fd, text, sizeof(text) - 1, 0);
		text[n > 0 ? n : 0] = '\0';
		*pid = strtol(text, NULL, 10);
		if (*pid <= 0 || kill((pid_t)*pid, 0) == 0 || errno != ESRCH)
			return false;
		usleep(100000);
	}
	return false;
}

int spool_lock(const char *spool, char *err, size_t err_len)
{
	char path[4096], text[32];
	long pid = 0;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "%s/lock", spool);
	if (!mkdir_p(spool) ||
	    (fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644)) < 0) {
		snprintf(err, err_len, "spool %s: %s", spool, strerror(errno));
		return -1;
	}
	if (!take_lock(fd, &pid)) {
		snprintf(err, err_len, "spool %s is in use by pid %ld", spool,
			 pid);
		close(fd);
		return -1;
	}
	n = snprintf(text, sizeof(text), "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) != 0 || pwrite(fd, text, (size_t)n, 0) != n)
		log_msg(LOG_WARN, "spool_lock", "%s: %s", path, strerror(errno));
	return fd;
}

long spool_lock_holder(const char *spool)
{
	char path[4096], text[32];
	int fd;
	ssize_t n;
	long pid = 0;

	snprintf(path, sizeof(path), "%s/lock", spool);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	if (flock(fd, LOCK_SH | LOCK_NB) == 0) {
		flock(fd, LOCK_UN);
	} else {
		n = pread(fd, text, sizeof(text) - 1, 0);
		text[n > 0 ? n : 0] = '\0';
		pid = strtol(text, NULL, 10);
		if (pid <= 0)
			pid = -1; /* held, by a pid it does not say */
	}
	close(fd);
	return pid;
}

bool spool_recover(const char *spool, char *err, size_t err_len)
{
	struct queue q = {.dir = (char *)spool, .tmp_fd = -1, .queue_fd = -1,
			  .state_fd = -1, .hold_fd = -1, .flush_fd = -1};
	bool ok = open_dirs(&q, err, err_len);

	if (ok)
		recover(&q);
	close_dirs(&q);
	return ok;
}

unsigned spool_remove_partials_of(const char *spool, unsigned slot)
{
	char path[4096];
	int dir_fd;
	DIR *d;
	struct dirent *e;
	unsigned removed = 0;

	snprintf(path, sizeof(path), "%s/tmp", spool);
	dir_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dir_fd < 0)
		return 0;
	d = open_listing(dir_fd);
	while (d != NULL && (e = readdir(d)) != NULL)
		if (queue_id_valid(e->d_name) &&
		    queue_id_slot(e->d_name) == slot &&
		    unlinkat(dir_fd, e->d_name, 0) == 0)
			removed++;
	if (d != NULL)
		closedir(d);
	if (removed > 0)
		fsync(dir_fd);
	close(dir_fd);
	return removed;
}

static bool chown_entries(int dir_fd, uid_t uid, gid_t gid)
{
	DIR *d = open_listing(dir_fd);
	struct dirent *e;
	bool ok = d != NULL;

	while (d != NULL && (e = readdir(d)) != NULL)
		if (e->d_name[0] != '.' &&
		    fchownat(dir_fd, e->d_name, uid, gid,
			     AT_SYMLINK_NOFOLLOW) != 0)
			ok = false;
	if (d != NULL)
		closedir(d);
	return ok;
}

bool spool_chown(const char *spool, uid_t uid, gid_t gid, char *err,
		 size_t err_len)
{
	static const char *const subdirs[] = {"tmp",	 "queue", "state",
					      "corrupt", "hold",  "flush",
					      "sts", "tlsrpt"};
	char path[4096];

	if (chown(spool, uid, gid) != 0)
		goto fail;
	for (size_t i = 0; i < sizeof(subdirs) / sizeof(subdirs[0]); i++) {
		int fd;

		snprintf(path, sizeof(path), "%s/%s", spool, subdirs[i]);
		fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0 && errno == ENOENT)
			continue;
		if (fd < 0 || fchown(fd, uid, gid) != 0 ||
		    !chown_entries(fd, uid, gid)) {
			if (fd >= 0)
				close(fd);
			goto fail;
		}
		close(fd);
	}
	return true;
fail:
	snprintf(err, err_len, "spool %s: chown: %s", spool, strerror(errno));
	return false;
}

/* ---- the queue manager's active set (outbound/delivery.c) --------------- */

void queue_remove_unrecorded(struct queue *q, const char *qid)
{
	unlinkat(q->queue_fd, qid, 0);
}

bool queue_set_due(struct queue *q, const char *qid, double due)
{
	struct timespec t[2];

	t[0].tv_sec = (time_t)due;
	t[0].tv_nsec = (long)((due - (double)t[0].tv_sec) * 1e9);
	if (t[0].tv_nsec < 0 || t[0].tv_nsec >= 1000000000L)
		t[0].tv_nsec = 0;
	t[1] = t[0];
	return utimensat(q->queue_fd, qid, t, 0) == 0;
}

struct queue_pass {
	DIR *dir;
};

/* Its own open file description (not a dup of queue_fd, whose position
 * another listing would move). */
struct queue_pass *queue_pass_open(struct queue *q)
{
	struct queue_pass *s = calloc(1, sizeof(*s));
	int fd = openat(q->queue_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (s == NULL || fd < 0 || (s->dir = fdopendir(fd)) == NULL) {
		int saved = errno;

		if (fd >= 0)
			close(fd);
		free(s);
		errno = saved;
		return NULL;
	}
	return s;
}

bool queue_pass_next(struct queue_pass *s, char qid[QUEUE_ID_LEN + 1],
		     double *due)
{
	struct dirent *e;
	struct stat st;

	while ((e = readdir(s->dir)) != NULL) {
		if (!queue_id_valid(e->d_name) ||
		    fstatat(dirfd(s->dir), e->d_name, &st,
			    AT_SYMLINK_NOFOLLOW) != 0)
			continue;
		memcpy(qid, e->d_name, QUEUE_ID_LEN + 1);
		*due = (double)st.st_mtim.tv_sec +
		       (double)st.st_mtim.tv_nsec / 1e9;
		return true;
	}
	return false;
}

void queue_pass_close(struct queue_pass *s)
{
	if (s == NULL)
		return;
	closedir(s->dir);
	free(s);
}
