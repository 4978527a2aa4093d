/*
 * queue: the durable spool. A message is written to SPOOL/tmp/ID as it
 * arrives; queue_commit hands the file to the sync thread, which fsyncs it,
 * renames it to SPOOL/queue/ID and fsyncs the directory (one directory sync
 * per batch of commits that arrived together), then reports back on the
 * loop. Only after that report may anyone say "250". The loop never waits
 * for the disk. queue_open also recovers the spool after a crash.
 */
#ifndef SMTPGW_QUEUE_H
#define SMTPGW_QUEUE_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum { QUEUE_ID_LEN = 16 };

struct queue;
struct queue_commit;

struct spool_file {
	int fd;
	char qid[QUEUE_ID_LEN + 1];
	uint64_t written;
	bool failed;
};

/* Called on the loop once the commit is durable (ok) or has failed. */
typedef void queue_commit_cb(void *owner, bool ok, const char *qid);

struct queue *queue_open(const char *spool_dir, struct ev_loop *loop,
			 char *err, size_t err_len);
/* Waits for the sync thread to finish what it holds, then frees. */
void queue_close(struct queue *q);
/* Commits not yet reported back; the loop must run until this is 0. */
unsigned queue_in_flight(const struct queue *q);

/* Unique, time-ordered 16-hex-digit id. */
void queue_new_id(struct queue *q, char out[QUEUE_ID_LEN + 1]);

bool spool_file_create(struct queue *q, const char *qid,
		       struct spool_file *f);
/* Writes all of data or marks the file failed (checked at commit). */
void spool_file_write(struct spool_file *f, const void *data, size_t len);
/* Closes and removes the temporary file. */
void spool_file_abort(struct queue *q, struct spool_file *f);

/*
 * Takes ownership of f's descriptor. Returns a handle the owner keeps while
 * waiting, or NULL (and no callback) if the file had already failed.
 */
struct queue_commit *queue_commit(struct queue *q, struct spool_file *f,
				  queue_commit_cb *cb, void *owner);
/* The owner is going away: no callback, and a message that becomes durable
 * anyway is removed, because nobody was told 250. */
void queue_commit_orphan(struct queue_commit *commit);

#endif
