/*
 * proxy_wait: connections from [gateway] proxy_networks before their PROXY
 * protocol header has arrived. Each waits (bounded in number and by
 * proxy_timeout) while exactly the header's octets are read off its
 * socket, never one more, so whatever the client says next is the
 * session's. The header itself is parsed by proto/proxy.c; admission and
 * the session are the listener's, through the callback.
 */
#ifndef SMTPGW_PROXY_WAIT_H
#define SMTPGW_PROXY_WAIT_H

#include <ev.h>
#include <sys/socket.h>

struct proxy_wait;

/* The header arrived: `client` is the original client (or the connection's
 * own peer for a LOCAL header), `via` the load balancer. fd passes to the
 * callee. */
typedef void proxy_ready_cb(void *owner, int fd,
			    const struct sockaddr_storage *client,
			    const struct sockaddr_storage *via);

struct proxy_waits {
	struct ev_loop *loop;
	proxy_ready_cb *ready;
	void *owner;
	struct proxy_wait *head;
	unsigned n, max;
};

/* Takes ownership of fd (non-blocking) and waits for its header for at
 * most `timeout` seconds; over `max` waiting it is closed at once. */
void proxy_wait_start(struct proxy_waits *w, int fd,
		      const struct sockaddr_storage *peer, double timeout);
/* Closes every connection still waiting. */
void proxy_wait_close_all(struct proxy_waits *w);

#endif
