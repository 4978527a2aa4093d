/*
 * ipc: datagram framing (see ipc.h). Owns no descriptor: callers open and
 * close the sockets; this only formats, checks and moves frames (one, or
 * a batch of them in one system call).
 */
#include "core/ipc.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

bool ipc_pair(int fds[2])
{
	return socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
			  0, fds) == 0;
}

bool ipc_send(int fd, enum ipc_type type, const char *text)
{
	return ipc_send_many(fd, type, &text, 1) == 1;
}

unsigned ipc_send_many(int fd, enum ipc_type type, const char *const *texts,
		       unsigned n)
{
	char frames[IPC_BATCH_MAX][1 + IPC_TEXT_MAX];
	struct iovec iov[IPC_BATCH_MAX];
	struct mmsghdr msgs[IPC_BATCH_MAX];
	unsigned k = 0;
	int sent;

	for (; k < n && k < IPC_BATCH_MAX; k++) {
		size_t len = strlen(texts[k]);

		if (len > IPC_TEXT_MAX)
			break;
		frames[k][0] = (char)type;
		memcpy(frames[k] + 1, texts[k], len);
		iov[k] = (struct iovec){frames[k], len + 1};
		msgs[k] = (struct mmsghdr){
			.msg_hdr = {.msg_iov = &iov[k], .msg_iovlen = 1}};
	}
	if (k == 0)
		return 0;
	do
		sent = sendmmsg(fd, msgs, k, MSG_DONTWAIT | MSG_NOSIGNAL);
	while (sent < 0 && errno == EINTR);
	return sent < 0 ? 0 : (unsigned)sent;
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
