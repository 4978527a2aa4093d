/*
 * log: collects an event's facts, has proto/log_format render them, and
 * owns where the text goes: the process's buffer, stderr, or a syslog
 * socket (/dev/log, RFC 3164 datagrams as glibc's syslog(3) sends them;
 * journald reads the same). Must not block the loop: a line that finds
 * the pipe or the socket full is dropped rather than waited for.
 */
#include "core/log.h"

#include <errno.h>
#include <ev.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* PIPE_BUF: one write of whole lines never interleaves with another
 * process's on a pipe. A datagram per line for syslog, at most SYSLOG_MAX
 * per flush. */
enum { LOG_BUF = 4096, LOG_LINE_MAX = 2048, SYSLOG_MAX = 64 };

struct writer {
	enum log_style style;
	bool to_syslog;
	int facility;
	int fd; /* the syslog socket, or -1 */
	char syslog_name[64];
	char socket_path[108];
	char hostname[256];
	char process[32];
	enum log_role role;
	pid_t pid;
	bool buffered;
	bool at_exit;
	char buf[LOG_BUF];
	size_t len;
	size_t ends[SYSLOG_MAX]; /* syslog: where each datagram ends */
	unsigned n_lines;
	ev_prepare flusher;
};

static struct writer w = {.facility = 2, .fd = -1};

static enum log_role role_of(const char *name)
{
	if (strcmp(name, "master") == 0)
		return LOG_ROLE_MASTER;
	if (strcmp(name, "qmgr") == 0)
		return LOG_ROLE_QMGR;
	if (strncmp(name, "worker", 6) == 0)
		return LOG_ROLE_WORKER;
	return LOG_ROLE_COMMAND;
}

void log_set_process(const char *name)
{
	snprintf(w.process, sizeof(w.process), "%s", name);
	w.role = role_of(name);
	w.pid = getpid(); /* called once in each child, after the fork */
}

static pid_t my_pid(void)
{
	if (w.pid == 0)
		w.pid = getpid();
	return w.pid;
}

/* ---- writing ------------------------------------------------------------ */

static int syslog_connect(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		int e = errno;

		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

static void write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t k = write(fd, p, n);

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return; /* a lost line is better than a stalled loop */
		p += k;
		n -= (size_t)k;
	}
}

/* Every buffered datagram in one sendmmsg; a syslog daemon that was
 * restarted gets one reconnection. */
static void send_datagrams(void)
{
	struct mmsghdr msgs[SYSLOG_MAX];
	struct iovec iov[SYSLOG_MAX];
	size_t start = 0;
	int sent;

	for (unsigned i = 0; i < w.n_lines; i++) {
		iov[i] = (struct iovec){w.buf + start, w.ends[i] - start};
		msgs[i] = (struct mmsghdr){.msg_hdr = {.msg_iov = &iov[i],
						       .msg_iovlen = 1}};
		start = w.ends[i];
	}
	sent = sendmmsg(w.fd, msgs, w.n_lines, MSG_DONTWAIT | MSG_NOSIGNAL);
	if (sent < 0 && (errno == ECONNREFUSED || errno == ENOTCONN)) {
		int fd = syslog_connect(w.socket_path);

		if (fd >= 0) {
			dup2(fd, w.fd); /* keeps the number children know */
			close(fd);
			sendmmsg(w.fd, msgs, w.n_lines,
				 MSG_DONTWAIT | MSG_NOSIGNAL);
		}
	}
}

void log_flush(void)
{
	if (w.len == 0)
		return;
	if (w.to_syslog)
		send_datagrams();
	else
		write_all(STDERR_FILENO, w.buf, w.len);
	w.len = 0;
	w.n_lines = 0;
}

typedef void sink_fn(const char *line, size_t n, enum log_level level);

void log_flush_ordered(void)
{
	if (w.style == LOG_STYLE_POSTFIX)
		log_flush();
}

/* Appends one finished line (or datagram) to the buffer. */
static void to_buffer(const char *line, size_t n, enum log_level level)
{
	if (w.len + n > sizeof(w.buf) || w.n_lines == SYSLOG_MAX)
		log_flush();
	memcpy(w.buf + w.len, line, n);
	w.len += n;
	w.ends[w.n_lines++] = w.len;
	if (!w.buffered || level >= LOG_ERR)
		log_flush();
}

static void to_stderr(const char *line, size_t n, enum log_level level)
{
	(void)level;
	write_all(STDERR_FILENO, line, n);
}

/* ---- formats ------------------------------------------------------------ */

static void iso_stamp(char *out, size_t cap)
{
	struct timeval tv;
	struct tm tm;
	size_t n;

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	n = strftime(out, cap, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out + n, cap - n, ".%03ldZ", (long)(tv.tv_usec / 1000));
}

/* "Nov 27 10:00:00", local time, as syslog writes it. */
static void syslog_stamp(char *out, size_t cap)
{
	time_t now = time(NULL);
	struct tm tm;

	localtime_r(&now, &tm);
	strftime(out, cap, "%b %e %H:%M:%S", &tm);
}

static const char *ident(void)
{
	if (w.syslog_name[0] != '\0')
		return w.syslog_name;
	return w.style == LOG_STYLE_POSTFIX ? "postfix" : "smtpgw";
}

/* The part before the message: "<PRI>STAMP " for syslog, "STAMP HOST "
 * on stderr. */
static size_t prefix(char *out, size_t cap, enum log_level level,
		     bool syslog)
{
	char stamp[32];
	int n;

	syslog_stamp(stamp, sizeof(stamp));
	if (syslog)
		n = snprintf(out, cap, "<%d>%s ",
			     w.facility * 8 + log_severity(level), stamp);
	else
		n = snprintf(out, cap, "%s %s ", stamp, w.hostname);
	return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

static void render_kv(const struct log_event *e, bool syslog, sink_fn *sink)
{
	char line[LOG_LINE_MAX + 1], stamp[40];
	size_t n = 0;

	if (syslog) {
		n = prefix(line, sizeof(line), e->level, true);
		n += (size_t)snprintf(line + n, sizeof(line) - n, "%s[%ld]:",
				      ident(), (long)my_pid());
		n += log_format_kv(e, "", w.process, line + n,
				   sizeof(line) - n);
	} else {
		iso_stamp(stamp, sizeof(stamp));
		n = log_format_kv(e, stamp, w.process, line, sizeof(line) - 1);
		line[n++] = '\n';
	}
	sink(line, n, e->level);
}

static void render_postfix(const struct log_event *e, bool syslog,
			   sink_fn *sink)
{
	char line[LOG_LINE_MAX + 1], text[LOG_LINE_MAX];
	const char *program;

	for (unsigned k = 0;
	     log_format_postfix(e, w.role, k, &program, text, sizeof(text)) >
	     0;
	     k++) {
		size_t n = prefix(line, sizeof(line), e->level, syslog);
		int m = snprintf(line + n, sizeof(line) - 1 - n,
				 "%s/%s[%ld]: %s", ident(), program,
				 (long)my_pid(), text);

		n += m > 0 ? (size_t)m : 0;
		if (n > sizeof(line) - 2)
			n = sizeof(line) - 2;
		if (!syslog)
			line[n++] = '\n';
		sink(line, n, e->level);
	}
}

/* ---- the interface ------------------------------------------------------ */

bool log_configure(const struct log_settings *s, char *err, size_t len)
{
	int fd = -1;

	if (s->to_syslog) {
		fd = syslog_connect(s->syslog_socket);
		if (fd < 0) {
			snprintf(err, len, "syslog socket %s: %s",
				 s->syslog_socket, strerror(errno));
			return false;
		}
	}
	log_flush(); /* what is buffered goes where it was meant to */
	if (w.fd >= 0)
		close(w.fd);
	w.fd = fd;
	w.style = s->style;
	w.to_syslog = s->to_syslog;
	w.facility = s->facility;
	snprintf(w.syslog_name, sizeof(w.syslog_name), "%s",
		 s->syslog_name ? s->syslog_name : "");
	snprintf(w.socket_path, sizeof(w.socket_path), "%s",
		 s->syslog_socket ? s->syslog_socket : "");
	snprintf(w.hostname, sizeof(w.hostname), "%s",
		 s->hostname ? s->hostname : "localhost");
	return true;
}

static void on_prepare(struct ev_loop *loop, ev_prepare *p, int revents)
{
	(void)loop;
	(void)p;
	(void)revents;
	log_flush();
}

void log_attach(struct ev_loop *loop)
{
	if (!w.at_exit) {
		atexit(log_flush);
		w.at_exit = true;
	}
	if (w.buffered)
		return;
	/* Last among the prepare watchers: it sees their lines too. */
	ev_prepare_init(&w.flusher, on_prepare);
	ev_set_priority(&w.flusher, EV_MINPRI);
	ev_prepare_start(loop, &w.flusher);
	ev_unref(loop); /* flushing is no reason to keep a loop running */
	w.buffered = true;
}

void log_begin(struct logline *l, enum log_level level, const char *event)
{
	l->e.level = level;
	l->e.name = event;
	l->e.n = 0;
	l->used = 0;
}

void log_kv(struct logline *l, const char *key, const char *fmt, ...)
{
	size_t room = sizeof(l->store) - l->used;
	char *value = l->store + l->used;
	va_list ap;
	int n;

	if (l->e.n == LOG_FIELDS_MAX || room == 0)
		return;
	va_start(ap, fmt);
	n = vsnprintf(value, room, fmt, ap);
	va_end(ap);
	if (n < 0)
		value[0] = '\0';
	l->used += strlen(value) + 1;
	l->e.fields[l->e.n++] = (struct log_field){key, value};
}

static void render(const struct log_event *e, bool syslog, sink_fn *sink)
{
	if (w.style == LOG_STYLE_POSTFIX)
		render_postfix(e, syslog, sink);
	else
		render_kv(e, syslog, sink);
}

void log_end(struct logline *l)
{
	render(&l->e, w.to_syslog, to_buffer);
	/* A fatal line is for whoever started us, too. */
	if (l->e.level == LOG_FATAL && w.to_syslog)
		render(&l->e, false, to_stderr);
}

static void one_shot(enum log_level level, const char *event,
		     const char *qid, const char *fmt, va_list ap)
	__attribute__((format(printf, 4, 0)));

static void one_shot(enum log_level level, const char *event,
		     const char *qid, const char *fmt, va_list ap)
{
	struct logline l;
	char msg[1024];

	vsnprintf(msg, sizeof(msg), fmt, ap);
	log_begin(&l, level, event);
	if (qid != NULL)
		log_kv(&l, "qid", "%s", qid);
	log_kv(&l, "msg", "%s", msg);
	log_end(&l);
}

void log_msg(enum log_level level, const char *event, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	one_shot(level, event, NULL, fmt, ap);
	va_end(ap);
}

void log_qid_msg(enum log_level level, const char *event, const char *qid,
		 const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	one_shot(level, event, qid, fmt, ap);
	va_end(ap);
}
