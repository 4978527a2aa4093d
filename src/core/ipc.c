/*
 * ipc: datagram framing (see ipc.h). Owns no descriptor: callers open and
 * close the sockets; this only formats, checks and moves one frame.
 */
#include "core/ipc.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>

bool ipc_pair(int fds[2])
{
	return socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
			  0, fds) == 0;
}

bool ipc_send(int fd, enum ipc_type type, const char *text)
{
	char frame[1 + IPC_TEXT_MAX];
	size_t n = strlen(text);
	ssize_t w;

	if (n > IPC_TEXT_MAX)
		return false;
	frame[0] = (char)type;
	memcpy(frame + 1, text, n);
	do
		w = send(fd, frame, n + 1, MSG_DONTWAIT | MSG_NOSIGNAL);
	while (w < 0 && errno == EINTR);
	return w == (ssize_t)(n + 1);
}

bool ipc_decode(const char *buf, long len, struct ipc_msg *out)
{
	if (len < 1 || len > 1 + IPC_TEXT_MAX)
		return false;
	switch ((enum ipc_type)buf[0]) {
	case IPC_QUEUED:
		break;
	default:
		return false;
	}
	if (memchr(buf + 1, '\0', (size_t)len - 1) != NULL)
		return false;
	out->type = (enum ipc_type)buf[0];
	memcpy(out->text, buf + 1, (size_t)len - 1);
	out->text[len - 1] = '\0';
	return true;
}

enum ipc_recv ipc_recv(int fd, struct ipc_msg *out)
{
	char buf[2 + IPC_TEXT_MAX]; /* one more: a frame too long shows */
	ssize_t n;

	do
		n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT | MSG_TRUNC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return IPC_NONE;
	return ipc_decode(buf, n > (ssize_t)sizeof(buf) ? -1 : (long)n, out)
		       ? IPC_GOT
		       : IPC_BAD;
}
