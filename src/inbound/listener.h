/*
 * listener: binds the configured addresses (in the master), accepts
 * connections (in each worker) and enforces the connection limits
 * (overall, the relay_networks reserve, per client prefix, per client rate)
 * before a session exists, through the table in srv->limits that every
 * worker shares. Sessions hand their ticket back when a client is gone.
 */
#ifndef SMTPGW_LISTENER_H
#define SMTPGW_LISTENER_H

#include <stddef.h>
#include <stdint.h>
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
/* The session admitted with `ticket` is gone: its slot is free again. */
void listener_client_gone(struct listener *l, uint32_t ticket);
/* Sessions in use across all workers / max_connections (0.0 .. 1.0; 0
 * without a listener): what stress mode is decided on. */
double listener_load(const struct listener *l);


#endif
