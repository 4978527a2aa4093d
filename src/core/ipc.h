/*
 * ipc: the small framed messages processes send each other. A message is
 * one datagram on an AF_UNIX SOCK_DGRAM socket (a frame never splits or
 * merges), a type byte and a short NUL-terminated text. Sends never block:
 * a message that does not fit the socket's buffer is dropped and the
 * sender is told, so a slow reader can never stall an event loop.
 * Nothing here knows who is at the other end.
 */
#ifndef SMTPGW_IPC_H
#define SMTPGW_IPC_H

#include <stdbool.h>

enum ipc_type {
	IPC_QUEUED = 'Q', /* worker → queue manager: "QID is in queue/" */
};

enum { IPC_TEXT_MAX = 63 };

struct ipc_msg {
	enum ipc_type type;
	char text[IPC_TEXT_MAX + 1];
};

/* Makes the pair: [0] for the readers' end, [1] for the writers'. Both
 * non-blocking and close-on-exec. */
bool ipc_pair(int fds[2]);

/* False when the message was not sent (buffer full, reader gone, text too
 * long); the caller decides whether that matters. */
bool ipc_send(int fd, enum ipc_type type, const char *text);

/* Up to IPC_BATCH_MAX messages of one type in one system call
 * (sendmmsg(2)), each its own datagram as from ipc_send. Returns how many
 * of texts[0..n-1] went, in order: the rest were not sent (as ipc_send's
 * false; a text too long stops the batch there). */
enum { IPC_BATCH_MAX = 64 };
unsigned ipc_send_many(int fd, enum ipc_type type, const char *const *texts,
		       unsigned n);

/* One message, or false when none is waiting (or a malformed frame was
 * read and dropped: call again until false). */
enum ipc_recv { IPC_NONE, IPC_GOT, IPC_BAD };
enum ipc_recv ipc_recv(int fd, struct ipc_msg *out);

/* Pure: a received frame checked and copied into `out`. */
bool ipc_decode(const char *buf, long len, struct ipc_msg *out);

#endif
