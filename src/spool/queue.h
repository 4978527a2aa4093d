/*
 * queue: the durable spool. A message is written to SPOOL/tmp/ID as it
 * arrives; queue_commit hands the file to the sync thread, which fsyncs it,
 * renames it to SPOOL/queue/ID and fsyncs the directory (one directory sync
 * per batch of commits that arrived together), then reports back on the
 * loop. Only after that report may anyone say "250". The loop never waits
 * for the disk. Every process that writes the spool opens its own queue;
 * recovery after a crash is the master's, once, under the spool lock
 * (spool_lock, spool_recover), before any of them starts.
 */
#ifndef SMTPGW_QUEUE_H
#define SMTPGW_QUEUE_H

#include "proto/envelope.h"

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

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

/* Unique, time-ordered 16-hex-digit id. Ids carry the slot of the process
 * that made them (0..QUEUE_SLOTS-1): processes with distinct slots never
 * make the same id. */
enum { QUEUE_SLOTS = 64 };
void queue_set_slot(struct queue *q, unsigned slot);
void queue_new_id(struct queue *q, char out[QUEUE_ID_LEN + 1]);
unsigned queue_id_slot(const char *qid);
/* When the id was made (seconds since the epoch, to the microsecond): the
 * message's arrival as Postfix's delay= counts it. */
double queue_id_time(const char *qid);

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

/* ---- delivery's view ------------------------------------------------- */

struct envelope;

/* A queued message opened for delivery: its envelope, and the descriptor
 * with the offset and size of the message itself. */
struct queued_message {
	int fd;
	off_t body_offset;
	uint64_t body_size;
};

/* Opens queue/ID and parses its header into `e` (envelope_free it, and
 * close m->fd). False with a reason, and errno: ENOENT when it is gone,
 * EBADMSG when it is not a queue file; anything else (EMFILE, ENOMEM, ...)
 * says nothing about the message: try again later. */
bool queue_open_message(struct queue *q, const char *qid, struct envelope *e,
			struct queued_message *m, char *err, size_t err_len);

/* Per-recipient outcomes, appended to state/ID as "INDEX STATUS TEXT"
 * lines (STATUS: sent, bounced, or deferred, which only notes the reason).
 * Not synced: after a crash a recipient whose line was lost is delivered
 * again (a duplicate), never dropped. */
/* BOUNCED owes the sender a DSN until NOTIFIED: that DSN is queued (synced),
 * or none is owed (the null sender). */
enum rcpt_state { RCPT_PENDING, RCPT_SENT, RCPT_BOUNCED, RCPT_NOTIFIED };

void queue_state_append(struct queue *q, const char *qid, size_t index,
			enum rcpt_state state, const char *text);
/* Fills states[0..n) from state/ID (PENDING where nothing is recorded) and,
 * when `last` is not NULL, each recipient's last recorded text (malloc'd;
 * a bounce's reason, for a DSN still owed after a restart). */
void queue_state_load(struct queue *q, const char *qid, enum rcpt_state *states,
		      char **last, size_t n);
/* A queue file that cannot be read as one: moved to SPOOL/corrupt/ for a
 * person to look at (never deleted, never retried). */
void queue_quarantine(struct queue *q, const char *qid);

/* The message is done: queue/ID and state/ID go. */
void queue_remove(struct queue *q, const char *qid);

/* Every queued id, for delivery at start-up (malloc'd array of malloc'd
 * strings). */
char **queue_list(struct queue *q, size_t *n);

/* Queues a message made here (a DSN): envelope + content, synced like any
 * other; `cb` reports with the new id. */
bool queue_submit(struct queue *q, const struct envelope *e,
		  const char *content, size_t len, queue_commit_cb *cb,
		  void *owner);

/* The same, read from the spool directory by the queue command, with no
 * running queue (queue_open's recovery must not run beside a gateway).
 * *states and *last (the last result per recipient, or NULL) are
 * malloc'd; close m->fd. */
bool spool_read_message(const char *spool, const char *qid,
			struct envelope *e, struct queued_message *m,
			enum rcpt_state **states, char ***last, char *err,
			size_t err_len);
bool spool_remove(const char *spool, const char *qid);
char **spool_list(const char *spool, size_t *n);

/* ---- the queue manager's active set (outbound/delivery.c) ----------- */

/* queue_state_load, with each recipient's attempts counted in `tries`
 * (its sent, bounced and deferred lines); false when there is no state
 * file. */
bool queue_state_load_tries(struct queue *q, const char *qid,
			    enum rcpt_state *states, char **last,
			    unsigned *tries, size_t n);
/* queue_remove for a message that never got a state file. */
void queue_remove_unrecorded(struct queue *q, const char *qid);
/* When a deferred message is due again: queue/ID's mtime (Postfix's
 * deferred queue does the same). Not synced: after a crash it may be
 * tried early, never late. False (errno) when it cannot be set: ENOENT
 * when the message is gone. */
bool queue_set_due(struct queue *q, const char *qid, double due);
/* A pass over queue/, one entry at a time, in directory order: the id and
 * due time (mtime) of each queue file. A file added during the pass may
 * or may not be seen. NULL (errno) when the directory cannot be read. */
struct queue_scan;
struct queue_scan *queue_scan_open(struct queue *q);
bool queue_scan_next(struct queue_scan *s, char qid[QUEUE_ID_LEN + 1],
		     double *due);
void queue_scan_close(struct queue_scan *s);

/* ---- the master's view ---------------------------------------------- */

/* Takes SPOOL/lock for the life of the returned descriptor (and of every
 * process that inherits it); -1 and "spool DIR is in use by pid N" when
 * another instance holds it. Writes nothing else. */
int spool_lock(const char *spool, char *err, size_t err_len);
/* Who holds SPOOL/lock, without writing anything (for -t): the pid of
 * the running gateway, 0 when nobody does (or there is no lock file),
 * -1 when it is held but the file names no pid. */
long spool_lock_holder(const char *spool);
/* After a crash: removes tmp/ (nobody was told 250 for those) and state
 * files without a message. Only under the lock, before any writer runs. */
bool spool_recover(const char *spool, char *err, size_t err_len);
/* A writer with this slot died: its unfinished files in tmp/ go. */
unsigned spool_remove_partials_of(const char *spool, unsigned slot);
/* The spool tree becomes the unprivileged user's. */
bool spool_chown(const char *spool, uid_t uid, gid_t gid, char *err,
		 size_t err_len);

#endif
