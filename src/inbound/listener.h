/*
 * listener: binds the configured addresses (in the master), accepts
 * connections (in each worker) and enforces the connection limits (overall and per client address) before
 * a session exists. It owns the listening sockets and the per-address
 * counters; sessions tell it when a client is gone.
 */
#ifndef SMTPGW_LISTENER_H
#define SMTPGW_LISTENER_H

#include <stddef.h>
#include <sys/socket.h>

struct server;
struct listener;

struct config;

/* The master binds every listen address once (one shared socket each,
 * non-blocking); NULL and the reason when one fails. */
int *listener_bind(const struct config *cfg, char *err, size_t err_len);
/* A worker accepts on the sockets it was given; it does not own them (its
 * process closes them when it exits). */
struct listener *listener_open(struct server *srv, const int *fds, size_t n);
/* Stops accepting; the sockets stay open until listener_close. */
void listener_stop(struct listener *l);
void listener_close(struct listener *l);
void listener_client_gone(struct listener *l,
			  const struct sockaddr_storage *peer);


#endif
