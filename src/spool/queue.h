/*
 * queue: the durable spool. A message is written to SPOOL/tmp/ID as it
 * arrives (gathered into 16 KiB writes); queue_commit hands the file to the sync thread, which fsyncs it,
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

/* A message being written: what spool_file_write gets is gathered in `buf`
 * and reaches the file in SPOOL_BUF_SIZE pieces, so a small message costs
 * one write(2), made when it is committed. */
enum { SPOOL_BUF_SIZE = 16384 };

struct spool_file {
	int fd;
	char qid[QUEUE_ID_LEN + 1];
	uint64_t written; /* octets handed to the kernel so far */
	bool failed;
	char *buf; /* SPOOL_BUF_SIZE, while the file is open */
	size_t buf_len;
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
/* Is `name` a queue id (16 lower-case hex digits)? */
bool queue_id_valid(const char *name);
/* When the id was made (seconds since the epoch, to the microsecond): the
 * message's arrival as Postfix's delay= counts it. */
double queue_id_time(const char *qid);

bool spool_file_create(struct queue *q, const char *qid,
		       struct spool_file *f);
/* Writes all of data (buffered) or marks the file failed: a failure
 * shows in f->failed, at the latest when queue_commit refuses the file. */
void spool_file_write(struct spool_file *f, const void *data, size_t len);
/* Closes and removes the temporary file, and drops its buffer. */
void spool_file_abort(struct queue *q, struct spool_file *f);

/*
 * Writes what f still buffers, then takes ownership of f's descriptor.
 * Returns a handle the owner keeps while waiting, or NULL (and no
 * callback; the file is removed) if the file failed.
 */
struct queue_commit *queue_commit(struct queue *q, struct spool_file *f,
				  queue_commit_cb *cb, void *owner);
/* The owner is going away: no callback, and a message that becomes durable
 * anyway is removed, because nobody was told 250. */
void queue_commit_orphan(struct queue_commit *commit);

/* ---- delivery's view ------------------------------------------------- */

struct envelope;

/* A queued message opened for delivery: its envelope, and the descriptor
 * (or, from queue_read_message, the whole file in memory) with the offset
 * and size of the message itself. */
struct queued_message {
	int fd;		   /* -1 when data holds the file */
	char *data;	   /* the whole file (malloc'd), or NULL */
	off_t body_offset;
	uint64_t body_size;
};

/* Opens queue/ID and parses its header into `e` (envelope_free it, and
 * close m->fd). False with a reason, and errno: ENOENT when it is gone,
 * EBADMSG when it is not a queue file; anything else (EMFILE, ENOMEM, ...)
 * says nothing about the message: try again later. */
bool queue_open_message(struct queue *q, const char *qid, struct envelope *e,
			struct queued_message *m, char *err, size_t err_len);
/* The same, but a file of up to 64 KiB is read whole, in one read, into
 * m->data and its descriptor closed (so is a bigger one whose header alone
 * needed reads up to its end); any other is opened as above.
 * Free with queued_message_close. */
bool queue_read_message(struct queue *q, const char *qid, struct envelope *e,
			struct queued_message *m, char *err, size_t err_len);
/* Closes the descriptor and frees the data, whichever it has. */
void queued_message_close(struct queued_message *m);
/* The same in any directory of the spool (named `dir_name` in `err`). */
bool queue_open_message_at(int dir_fd, const char *dir_name, const char *qid,
			   struct envelope *e, struct queued_message *m,
			   char *err, size_t err_len);

/* Per-recipient outcomes, appended to state/ID as "INDEX STATUS t=TIME
 * TEXT" lines (STATUS: sent, bounced, or deferred, which only notes the
 * reason; TIME: Unix seconds, absent from lines written before it was
 * added). Not synced: after a crash a recipient whose line was lost is
 * delivered again (a duplicate), never dropped. */
/* BOUNCED owes the sender a DSN until NOTIFIED: that DSN is queued (synced),
 * or none is owed (the null sender). */
enum rcpt_state { RCPT_PENDING, RCPT_SENT, RCPT_BOUNCED, RCPT_NOTIFIED };

void queue_state_append(struct queue *q, const char *qid, size_t index,
			enum rcpt_state state, const char *text);
/* What state/ID says of recipients 0..n-1, each array n long; all but
 * `states` may be NULL. */
struct rcpt_records {
	enum rcpt_state *states; /* PENDING where nothing is recorded */
	char **last;	   /* the last record's text (malloc'd): a bounce's
			      reason, for a DSN still owed after a restart */
	unsigned *attempts; /* sent, bounced and deferred records: for a
			       pending recipient, the attempts it has had */
	long long *last_at; /* when its last record was written (Unix time;
			       the file's mtime for records without t=) */
};
void queue_state_load(struct queue *q, const char *qid,
		      const struct rcpt_records *r, size_t n);
/* The same from any state directory (the queue command). */
void queue_state_load_at(int state_fd, const char *qid,
			 const struct rcpt_records *r, size_t n);
/* A queue file that cannot be read as one: moved to SPOOL/corrupt/ for a
 * person to look at (never deleted, never retried). */
void queue_quarantine(struct queue *q, const char *qid);

/* The message is done: queue/ID and state/ID go (state/ID stays while the
 * message is on hold in hold/ID: `queue release` brings it back). */
void queue_remove(struct queue *q, const char *qid);

/* Every queued id, for delivery at start-up (malloc'd array of malloc'd
 * strings). */
char **queue_list(struct queue *q, size_t *n);
/* The ids in any directory of the spool. */
char **queue_list_at(int dir_fd, size_t *n);

/* flush/ holds markers `queue requeue` and `queue release` leave for the
 * queue manager: flush/ID "retry ID now", flush/all "retry everything".
 * Takes them all (each removed): the ids, and *all when flush/all was
 * there. */
#define QUEUE_FLUSH_ALL "all"
char **queue_take_flush_marks(struct queue *q, size_t *n, bool *all);

/* Queues a message made here (a DSN): envelope + content, synced like any
 * other; `cb` reports with the new id. */
bool queue_submit(struct queue *q, const struct envelope *e,
		  const char *content, size_t len, queue_commit_cb *cb,
		  void *owner);

/* ---- the queue manager's active set (outbound/delivery.c) ----------- */

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
struct queue_pass;
struct queue_pass *queue_pass_open(struct queue *q);
bool queue_pass_next(struct queue_pass *s, char qid[QUEUE_ID_LEN + 1],
		     double *due);
void queue_pass_close(struct queue_pass *s);

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
