/*
 * smtp_server: the inbound SMTP session. One struct session per client,
 * driven by conn events through an explicit state machine and a command
 * table of {verb, flags, proceed}. It decides replies and relay access and
 * hands message bytes to the queue; it never touches a socket directly.
 */
#ifndef SMTPGW_SMTP_SERVER_H
#define SMTPGW_SMTP_SERVER_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

struct config;
struct generation;
struct smtp_addr;
struct queue;
struct limits;
struct listener;
struct session;

enum { SID_SLOTS = 64 };

/* What all sessions of one worker share. New sessions take a reference to
 * the current generation; a reload replaces `gen` and nothing else. */
struct server {
	struct ev_loop *loop;
	struct generation *gen;
	struct queue *queue;
	/* A message is durable and its client told 250: the worker passes
	 * the id on to the queue manager. */
	void (*queued)(struct server *srv, const char *qid);
	struct listener *listener;
	struct limits *limits; /* shared by every worker; made before fork */
	struct session *sessions;
	unsigned n_sessions;
	uint64_t next_sid;
	unsigned slot; /* the worker's, 1..SID_SLOTS-1: part of every sid */
	bool draining;
	bool stress; /* stress mode: shorter waits, lower limits */
	ev_timer stress_timer; /* looks at the load every second */
};

/* Takes ownership of fd (non-blocking, already counted by the listener,
 * which gave it `ticket` to hand back through listener_client_gone).
 * peer is the client; via the load balancer that announced it with a
 * PROXY header, or NULL for a direct connection. */
void smtp_session_start(struct server *srv, int fd,
			const struct sockaddr_storage *peer,
			const struct sockaddr_storage *via, uint32_t ticket);

/* SIGTERM: sessions waiting for a sync get their reply, the others 421;
 * the loop is broken once the last session is gone. */
void smtp_server_drain(struct server *srv);

/* At exit, after the loop: every session goes now (a commit in flight is
 * orphaned, so its file is removed), before the queue and the listener. */
void smtp_server_destroy_all(struct server *srv);

/* The relay rule: may this client send to this recipient? */
bool smtp_relay_allowed(const struct config *cfg, const struct sockaddr *peer,
			const struct smtp_addr *a);

#endif
