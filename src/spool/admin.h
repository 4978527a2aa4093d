/*
 * admin: the queue commands' reads and changes of the spool, beside the
 * running gateway or without one. Owns nothing that outlives a call but
 * the spool_message a read fills (spool_message_free) and the id lists
 * (spool_list_free). Each change is one rename or unlink that the queue
 * manager copes with wherever it is with the message; it must never
 * write a queue file's content, touch tmp/, or signal anyone (the caller
 * does that).
 */
#ifndef SMTPGW_ADMIN_H
#define SMTPGW_ADMIN_H

#include "proto/envelope.h"
#include "spool/queue.h"

#include <stdbool.h>
#include <stddef.h>

/* Where a message is: queue/ (delivered by the queue manager) or hold/
 * (put on hold by a person: never delivered). */
enum spool_place { SPOOL_QUEUED, SPOOL_HELD };

/* One message read whole: its envelope, the open file with the offset
 * and size of the message itself, and what state/ID says of each
 * recipient (arrays env.n_rcpts long). */
struct spool_message {
	char qid[QUEUE_ID_LEN + 1];
	enum spool_place place;
	struct envelope env;
	struct queued_message file;
	enum rcpt_state *states;
	unsigned *attempts;  /* attempts recorded for each recipient */
	long long *last_at;  /* its last record's time (0: none) */
	char **last;	     /* its last record's text (NULL: none) */
};

/* Reads place/ID and state/ID into m (spool_message_free it). False with
 * a reason in err, and errno: EINVAL when qid is not a queue id, ENOENT
 * when the message is not there, EBADMSG when it is not a queue file. */
bool spool_message_read(const char *spool, enum spool_place place,
			const char *qid, struct spool_message *m, char *err,
			size_t err_len);
void spool_message_free(struct spool_message *m);

/* The ids in place/ (malloc'd array of malloc'd strings; NULL and *n 0
 * when the directory cannot be read). */
char **spool_list(const char *spool, enum spool_place place, size_t *n);
void spool_list_free(char **ids, size_t n);

/* Is there a message `qid` in place/? */
bool spool_has(const char *spool, enum spool_place place, const char *qid);

/*
 * The changes: 0, or an errno value. EINVAL: qid is not a queue id;
 * ENOENT: the message is not where the change takes it from; EEXIST: the
 * place it goes to has a message with this id; ENOTDIR: the spool has no
 * hold/ or flush/ (a spool no gateway of this version has opened).
 */
/* queue/ID or hold/ID goes, and state/ID with it. */
int spool_delete(const char *spool, const char *qid);
/* queue/ID moves to hold/ID; state/ID stays where it is. */
int spool_hold(const char *spool, const char *qid);
/* hold/ID moves back to queue/ID. */
int spool_release(const char *spool, const char *qid);
/* Leaves flush/ID (or flush/all for QUEUE_FLUSH_ALL): the queue manager
 * tries the message now at its next SIGUSR1. */
int spool_mark_flush(const char *spool, const char *qid);

/* Syncs the directories the changes touched (queue/, hold/, state/ and
 * flush/), so that no change is undone by a crash. */
void spool_sync(const char *spool);

#endif
