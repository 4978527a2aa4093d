/*
 * message: one queued message as the queue manager holds it in memory — its
 * envelope and per-recipient state; its content only from admission to its
 * first attempt, bounded (see message.c) — and its entries,
 * one per recipient domain with recipients still pending, which are what
 * the scheduler schedules. Shared by delivery (the active set), attempt
 * (transactions) and bounce (DSNs). Owns reading a message in from the
 * spool, its state lines and freeing it; must not schedule anything.
 */
#ifndef SMTPGW_MESSAGE_H
#define SMTPGW_MESSAGE_H

#include "outbound/idmap.h"
#include "outbound/scheduler.h"
#include "proto/envelope.h"
#include "spool/queue.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Postfix's hopcount_limit: more Received: headers than this is a loop
 * (an MX or next_hop pointing back at us, or two gateways in a circle). */
enum { MESSAGE_MAX_HOPS = 50 };

struct message;

/* The message's pending recipients of one domain, as one scheduler item. */
struct entry {
	struct sched_item item; /* first: the scheduler hands this out */
	struct message *m;
	struct entry *next; /* the message's entries */
	double floor;	    /* not due before (its destination is dead) */
	char domain[];	    /* lower case */
};

struct message {
	struct idmap_node node; /* delivery's map, by queue id */
	char qid[QUEUE_ID_LEN + 1];
	struct envelope env;
	enum rcpt_state *states;
	bool *unsaved;	     /* sent, "sent" not written to state/ID yet */
	bool *dsn_busy;	     /* in a DSN the sync thread still holds */
	char **last_error;   /* per recipient, for the DSN and the queue */
	double *retry_at;    /* per recipient: not before (0: at once) */
	unsigned *tries;     /* per recipient: attempts made */
	struct entry *entries;
	struct message *fresh_next; /* delivery's list of new arrivals */
	double dsn_due;	     /* a DSN that failed is tried again then */
	double active_at;    /* when this round became due (Postfix: entered
				the active queue), wall time, for delays= */
	uint64_t size;	     /* octets of the message, for the logs */
	struct queued_message file; /* read at admission, for the first
				       attempt (data NULL: not kept) */
	double file_at;	     /* when it was read (ev_time) */
	bool tls_required_no; /* "TLS-Required: No" (RFC 8689 §3), and no
				 REQUIRETLS: the recipient's policies
				 (DANE, MTA-STS) may be ignored */
	bool tlsrpt_report;  /* a TLS report (the null sender and a
				TLS-Report-Domain: field): its sessions are
				not counted (RFC 8460 §5.3.1) */
	unsigned jobs;	     /* attempts in flight */
	unsigned dsns;	     /* DSNs being synced; the message waits */
	unsigned hops;	     /* Received: headers in the message */
	bool gone;	     /* its queue file was deleted (queue delete) */
	bool recorded;	     /* state/ID exists */
	bool fresh;	     /* on delivery's list of new arrivals */
};

/* Reads queue/ID's envelope and state/ID (with each recipient's attempts
 * so far). NULL when it cannot be taken in: `again` says whether that is
 * the moment's (out of descriptors or memory) rather than the message's
 * (gone, or not a queue file: then moved to corrupt/). Logs why. */
struct message *message_load(struct queue *q, const char *qid, double now,
			     bool *again);
/* The queue file as admission read it, into `out` (queued_message_close
 * it), when it was kept and is recent (see message.c); false: open it
 * again. Either way the message keeps it no more. */
bool message_take_file(struct message *m, double now,
		       struct queued_message *out);
/* Frees the message and its entries (out of the scheduler already). */
void message_free(struct message *m);

bool message_pending(const struct message *m);
/* A bounced recipient still owes the sender a DSN. */
bool message_owes_dsn(const struct message *m);

/* Appends a state line (see queue_state_append) and notes that state/ID
 * exists. */
void message_append_state(struct queue *q, struct message *m, size_t i,
			  enum rcpt_state st, const char *text);
/* Writes the "sent" lines held back (the message is not about to go). */
void message_save_sent(struct queue *q, struct message *m);

/* The lower-case domain of a recipient; <postmaster> is `hostname`'s. */
void message_rcpt_domain(const char *hostname, const char *rcpt, char *out,
			 size_t len);
/* Whether recipient i is pending and in `domain`. */
bool message_rcpt_in(const struct message *m, size_t i, const char *hostname,
		     const char *domain);

/* The header section of an open queue file (at most 64 KiB, malloc'd). */
char *message_headers(const struct queued_message *f, size_t *len);

#endif
