/*
 * smtp_client: one outbound SMTP transaction (RFC 5321) as an explicit
 * state machine on a conn. Every conn event ends in settle(), the one
 * place that flushes, streams the body and, once the state is CS_DONE,
 * reports and then destroys the client or parks it in the job's
 * conncache; so `done` runs exactly once, from the loop, and no handler
 * ever runs on a freed client.
 *
 * A parked client (CS_IDLE) is a connection and its session (EHLO
 * keywords, TLS) without a job: the cache owns it, it only watches for
 * the peer closing or talking (then it closes) and for its idle time
 * (then QUIT and close), and smtp_client_start takes it back for a job
 * it serves. The next transaction on it begins with RSET (Postfix's RSET
 * probe), pipelined with MAIL, RCPT and DATA when PIPELINING is offered;
 * until RSET's 2xx has come, any failure means the connection had gone
 * stale, and the client connects anew as if it had found none.
 */
#include "outbound/smtp_client.h"

#include "core/netaddr.h"
#include "net/conn.h"
#include "outbound/conncache.h"
#include "proto/smtp_out.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

enum {
	BODY_CHUNK = 8192,     /* octets per pread */
	BODY_MIN_CHUNK = 512,  /* smaller room waits for CONN_DRAINED */
	BODY_TAIL = 16,	       /* room for smtp_stuff_end, and some */
	DEFAULT_TIMEOUT = 300, /* job.timeout <= 0 */
};

/* QUIT is a courtesy: its 221 is not worth more than this. */
static const double QUIT_WAIT = 2.0;
static const double CONNECT_TIMEOUT = 30.0;
static const double LAST_WORDS_WAIT = 5.0;
/* Postfix's smtp_rset_timeout: a parked connection's peer that has gone
 * silent costs this, not a whole step, before a new connection. */
static const double RSET_WAIT = 20.0;
/* Postfix's smtp_connection_reuse_time_limit: no new transaction on a
 * connection older than this. */
static const double REUSE_LIFETIME = 300.0;

enum client_state {
	CS_CONNECT,	/* waiting for the TCP connection */
	CS_BANNER,	/* waiting for the 220 greeting */
	CS_EHLO,	/* EHLO sent */
	CS_HELO,	/* HELO sent after EHLO was refused */
	CS_STARTTLS,	/* STARTTLS sent */
	CS_HANDSHAKE,	/* TLS handshake running */
	CS_TRANSACTION, /* MAIL, RCPT, DATA sent (pipelined when offered) */
	CS_BODY,	/* 354 received: streaming the message */
	CS_DOT,		/* end of data sent: waiting for its reply */
	CS_QUIT,	/* QUIT sent: waiting briefly for 221 */
	CS_DONE,	/* finished: settle() reports, then destroys or parks */
	CS_IDLE,	/* parked in the cache, no job: watching the peer */
};

/* Transaction commands, remembered in the order they went out so that
 * pipelined replies find their command. */
enum tx_cmd {
	TX_RSET, /* first on a parked connection taken again */
	TX_MAIL,
	TX_RCPT,
	TX_DATA,
	TX_DOT, /* the empty message after an unwanted 354 (RFC 2920 3.1) */
};

struct sent_cmd {
	enum tx_cmd cmd;
	size_t rcpt;
};

struct rcpt_track {
	bool invalid;  /* refused locally: never sent */
	bool accepted; /* RCPT got 2xx */
};

struct smtp_client {
	struct conn conn;
	struct client_job job;
	client_done_cb *done;
	void *owner;
	enum client_state state;
	struct client_result result;
	bool result_final; /* the result stands, whatever happens next */
	char peer[320];	   /* "host[ip]:port" for messages */
	char servername[256];
	struct smtp_extensions ext;
	bool tls_active;
	struct smtp_reply reply;
	bool write_failed; /* output dropped: only listening now */
	bool peer_closing; /* a 421 came: the server is hanging up */
	/* reuse */
	struct conncache_entry entry; /* while parked */
	struct tlsa_rr *tlsa;	      /* parked: its copy of the records DANE
					 authenticated it by (entry.key) */
	unsigned uses;		      /* transactions begun on it */
	double born;		      /* when it was connected to */
	bool park;		      /* CS_DONE: park rather than destroy */
	bool rset_pending;	      /* taken from the cache: RSET first */
	bool rset_done;		      /* its 2xx came: the connection lives */
	/* transaction */
	struct rcpt_track *track;
	struct sent_cmd *sent;
	size_t n_sent, n_replied;
	bool mail_sent, data_sent;
	size_t next_rcpt;
	size_t n_rcpt_sent, n_accepted;
	bool tx_over; /* MAIL or DATA refused: send nothing more */
	/* body */
	uint64_t body_sent;
	struct smtp_stuffer stuffer;
};

static double step_timeout(const struct smtp_client *c)
{
	return c->job.timeout > 0 ? c->job.timeout : DEFAULT_TIMEOUT;
}

static bool expects_reply(enum client_state st)
{
	switch (st) {
	case CS_BANNER:
	case CS_EHLO:
	case CS_HELO:
	case CS_STARTTLS:
	case CS_TRANSACTION:
	case CS_BODY: /* a server may refuse before the dot */
	case CS_DOT:
	case CS_QUIT:
		return true;
	case CS_CONNECT:
	case CS_HANDSHAKE:
	case CS_DONE:
	case CS_IDLE: /* anything it says closes it (on_idle_event) */
		break;
	}
	return false;
}

/* Only a change re-arms: conn_set_reading with output queued but not yet
 * flushed would stop and start the watcher for nothing, and libev pays
 * that with a failing epoll_ctl (EEXIST) at its next turn. */
static void set_reading(struct smtp_client *c, bool on)
{
	if (c->conn.reading != on)
		conn_set_reading(&c->conn, on);
}

static void enter_state(struct smtp_client *c, enum client_state next)
{
	c->state = next;
	if (next == CS_DOT)
		c->result.dot_sent = true; /* from here a loss may duplicate */
	switch (next) {
	case CS_CONNECT:
		/* Postfix's smtp_connect_timeout: a dead host costs 30 s,
		 * not a whole step, before the next address is tried. */
		set_reading(c, false);
		conn_set_timeout(&c->conn, step_timeout(c) < CONNECT_TIMEOUT
						   ? step_timeout(c)
						   : CONNECT_TIMEOUT);
		break;
	case CS_HANDSHAKE:
		set_reading(c, false);
		conn_set_timeout(&c->conn, step_timeout(c));
		break;
	case CS_BANNER:
	case CS_EHLO:
	case CS_HELO:
	case CS_STARTTLS:
	case CS_TRANSACTION:
	case CS_BODY:
	case CS_DOT:
		set_reading(c, true);
		conn_set_timeout(&c->conn, step_timeout(c));
		break;
	case CS_QUIT:
		set_reading(c, true);
		conn_set_timeout(&c->conn, step_timeout(c) < QUIT_WAIT
					       ? step_timeout(c)
					       : QUIT_WAIT);
		break;
	case CS_DONE:
		/* one that is about to be parked goes on reading (CS_IDLE) */
		set_reading(c, c->park);
		conn_set_timeout(&c->conn, 0);
		break;
	case CS_IDLE:
		/* reading: to see the peer hang up or say 421 */
		set_reading(c, true);
		conn_set_timeout(&c->conn, c->job.reuse_idle);
		break;
	}
}

/* ---- results ---------------------------------------------------------- */

static void set_result(struct smtp_client *c, enum client_outcome outcome,
		       int code, const char *text)
{
	c->result.outcome = outcome;
	c->result.code = code;
	snprintf(c->result.reply, sizeof(c->result.reply), "%s", text);
}

/* The transaction has its answer; what follows (QUIT) cannot change it. */
static void settle_result(struct smtp_client *c, int code, const char *text)
{
	set_result(c, CLIENT_DONE, code, text);
	c->result_final = true;
}

static void give_rcpt(struct client_rcpt *r, int code, const char *text)
{
	r->code = code;
	snprintf(r->reply, sizeof(r->reply), "%s", text);
}

/* A refusal that covers the transaction: every recipient still in it gets
 * the reply (only those whose RCPT was accepted, once RCPTs are known). */
static void refuse_all(struct smtp_client *c, int code, const char *text,
		       bool only_accepted)
{
	for (size_t i = 0; i < c->job.n_rcpts; i++) {
		if (c->track[i].invalid ||
		    (only_accepted && !c->track[i].accepted))
			continue;
		give_rcpt(&c->job.rcpts[i], code, text);
	}
	settle_result(c, code, text);
}

static void finish(struct smtp_client *c)
{
	enter_state(c, CS_DONE);
}

static void send_quit(struct smtp_client *c);

/* Ends the session with a local reason. Before a final result the outcome
 * depends on how far it got; a final result stands. */
static void fail_session(struct smtp_client *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void reconnect(struct smtp_client *c);

/* Taken from the cache and RSET not answered yet: whatever goes wrong
 * says the connection had gone stale, not that the transaction failed. */
static bool stale(const struct smtp_client *c)
{
	return c->result.reused && !c->rset_done;
}

static void fail_session(struct smtp_client *c, const char *fmt, ...)
{
	char text[sizeof(c->result.reply)];
	enum client_outcome outcome = CLIENT_LOST;
	va_list ap;

	if (stale(c)) {
		reconnect(c);
		return;
	}
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	if (c->state == CS_CONNECT || c->state == CS_BANNER) {
		outcome = CLIENT_CONNECT_FAILED;
	} else if (c->state == CS_HANDSHAKE) {
		outcome = CLIENT_TLS_FAILED;
		c->result.tls_try = TLS_TRY_FAILED;
	}
	if (!c->result_final && c->state != CS_QUIT)
		set_result(c, outcome, 0, text);
	finish(c);
}

/* What was going on, in Postfix's words, for loss and timeout messages. */
static const char *stage_text(const struct smtp_client *c)
{
	switch (c->state) {
	case CS_CONNECT:
		return "connecting";
	case CS_BANNER:
		return "receiving the initial server greeting";
	case CS_EHLO:
		return "performing the EHLO handshake";
	case CS_HELO:
		return "performing the HELO handshake";
	case CS_STARTTLS:
		return "sending STARTTLS";
	case CS_HANDSHAKE:
		return "performing the TLS handshake";
	case CS_TRANSACTION:
		if (c->n_replied < c->n_sent) {
			switch (c->sent[c->n_replied].cmd) {
			case TX_RSET:
				return "sending RSET";
			case TX_MAIL:
				return "sending MAIL FROM";
			case TX_RCPT:
				return "sending RCPT TO";
			case TX_DATA:
				return "sending DATA command";
			case TX_DOT:
				return "sending end of data";
			}
		}
		return "sending MAIL FROM";
	case CS_BODY:
		return "sending message body";
	case CS_DOT:
		return "sending end of data -- message may be sent more than "
		       "once";
	case CS_QUIT:
		return "sending QUIT";
	case CS_DONE:
	case CS_IDLE:
		break;
	}
	return "finishing";
}

/* ---- commands --------------------------------------------------------- */

/* Nothing that could end a command line early or smuggle another. */
static bool clean_text(const char *s, size_t max)
{
	size_t n = 0;

	for (; s[n] != '\0'; n++)
		if ((unsigned char)s[n] < 0x20 || s[n] == 0x7f || n >= max)
			return false;
	return true;
}

static bool write_command(struct smtp_client *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static bool write_command(struct smtp_client *c, const char *fmt, ...)
{
	char line[SMTP_COMMAND_LINE_MAX + 1];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line) - 2, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n + 2 > SMTP_COMMAND_LINE_MAX)
		return false;
	memcpy(line + n, "\r\n", 2);
	return conn_write(&c->conn, line, (size_t)n + 2);
}

/* Our EHLO name: the job's when it is fit for a command line. */
static const char *hello_name(const struct client_job *j)
{
	const char *helo = j->helo;

	if (helo == NULL || helo[0] == '\0' || !clean_text(helo, 255) ||
	    strchr(helo, ' ') != NULL)
		return "localhost";
	return helo;
}

static void send_hello(struct smtp_client *c, const char *verb,
		       enum client_state next)
{
	const char *helo = hello_name(&c->job);

	memset(&c->ext, 0, sizeof(c->ext));
	if (!write_command(c, "%s %s", verb, helo)) {
		fail_session(c, "cannot send %s to %s", verb, c->peer);
		return;
	}
	enter_state(c, next);
}

static void send_quit(struct smtp_client *c)
{
	if (!write_command(c, "QUIT")) {
		finish(c);
		return;
	}
	enter_state(c, CS_QUIT);
}

/* ---- the transaction -------------------------------------------------- */

static void remember(struct smtp_client *c, enum tx_cmd cmd, size_t rcpt)
{
	c->sent[c->n_sent].cmd = cmd;
	c->sent[c->n_sent].rcpt = rcpt;
	c->n_sent++;
}

static bool write_mail(struct smtp_client *c)
{
	char params[96] = "";
	size_t n = 0;

	if (c->ext.size)
		n += (size_t)snprintf(params + n, sizeof(params) - n,
				      " SIZE=%llu",
				      (unsigned long long)c->job.body_size);
	if (c->ext.eightbitmime && c->job.body_type == SMTP_BODY_8BITMIME)
		n += (size_t)snprintf(params + n, sizeof(params) - n,
				      " BODY=8BITMIME");
	if (c->job.smtputf8)
		n += (size_t)snprintf(params + n, sizeof(params) - n,
				      " SMTPUTF8");
	if (c->result.requiretls_sent)
		snprintf(params + n, sizeof(params) - n, " REQUIRETLS");
	return write_command(c, "MAIL FROM:<%s>%s", c->job.sender, params);
}

/* DATA follows the RCPTs at once when pipelining (RFC 2920: its reply
 * tells), otherwise only once a recipient has been accepted. */
static bool data_wanted(const struct smtp_client *c)
{
	return c->ext.pipelining ? c->n_rcpt_sent > 0 : c->n_accepted > 0;
}

/* The next transaction command, if it may go now. False when nothing was
 * written (nothing left, a reply to wait for, or no room). */
static bool send_next_command(struct smtp_client *c)
{
	if (c->write_failed ||
	    (!c->ext.pipelining && c->n_sent != c->n_replied) ||
	    conn_output_room(&c->conn) < SMTP_COMMAND_LINE_MAX)
		return false;
	if (c->rset_pending) {
		/* RFC 2920 3.1: RSET may appear anywhere in a group */
		if (!write_command(c, "RSET"))
			return false;
		c->rset_pending = false;
		remember(c, TX_RSET, 0);
		return true;
	}
	if (c->tx_over)
		return false;
	if (!c->mail_sent) {
		if (!write_mail(c))
			return false;
		c->mail_sent = true;
		remember(c, TX_MAIL, 0);
		return true;
	}
	while (c->next_rcpt < c->job.n_rcpts && c->track[c->next_rcpt].invalid)
		c->next_rcpt++;
	if (c->next_rcpt < c->job.n_rcpts) {
		size_t i = c->next_rcpt++;

		if (!write_command(c, "RCPT TO:<%s>", c->job.rcpts[i].address))
			return false;
		c->n_rcpt_sent++;
		remember(c, TX_RCPT, i);
		return true;
	}
	if (c->data_sent || !data_wanted(c) || !write_command(c, "DATA"))
		return false;
	c->data_sent = true;
	remember(c, TX_DATA, 0);
	return true;
}

static bool send_commands(struct smtp_client *c)
{
	bool any = false;

	while (send_next_command(c))
		any = true;
	return any;
}

/* Locally refused recipients never go out: an address that could break
 * the command line, or one too long for it. */
static void check_rcpts(struct smtp_client *c)
{
	for (size_t i = 0; i < c->job.n_rcpts; i++) {
		const char *a = c->job.rcpts[i].address;

		if (a != NULL && a[0] != '\0' &&
		    clean_text(a, SMTP_PATH_MAX - 2))
			continue;
		c->track[i].invalid = true;
		give_rcpt(&c->job.rcpts[i], 501,
			  "501 5.1.3 Bad recipient address syntax");
	}
}

/* RFC 8689: a REQUIRETLS message goes only to an authenticated hop that
 * offers REQUIRETLS (a bounce also to one that does not). False when it
 * does not go: the session ends, nothing sent. */
static bool requiretls_allows(struct smtp_client *c)
{
	struct requiretls_hop hop;
	char why[sizeof(c->result.reply)];

	if (c->job.requiretls == NULL)
		return true;
	hop = *c->job.requiretls;
	hop.tls = c->tls_active;
	hop.dane = c->tls_active && c->result.dane != DANE_AUTH_NONE;
	hop.cert_verified = c->tls_active && c->result.tls_verified &&
			    !hop.dane; /* tls_verified says DANE too */
	switch (requiretls_decide(&hop, c->ext.requiretls,
				  c->job.sender != NULL &&
					  c->job.sender[0] == '\0',
				  why, sizeof(why))) {
	case REQUIRETLS_SEND:
		c->result.requiretls_sent = true;
		return true;
	case REQUIRETLS_SEND_PLAIN:
		return true;
	case REQUIRETLS_REFUSE:
		break;
	}
	set_result(c, CLIENT_REQUIRETLS, 0, why);
	c->result_final = true;
	send_quit(c);
	return false;
}

/* What the transaction cannot be, judged before a word is sent: a
 * refusal for every recipient, or 0. */
static int local_refusal(const struct smtp_client *c, const char **text)
{
	const struct client_job *j = &c->job;

	if (c->ext.size && c->ext.size_limit > 0 &&
	    j->body_size > c->ext.size_limit) {
		*text = "552 5.3.4 Message size exceeds fixed limit of the "
			"receiving server";
		return 552;
	}
	if (j->smtputf8 && !c->ext.smtputf8) {
		*text = "553 5.6.7 SMTPUTF8 not supported by the receiving "
			"server";
		return 553;
	}
	if (j->sender == NULL || !clean_text(j->sender, SMTP_PATH_MAX - 2)) {
		*text = "501 5.1.7 Bad sender address syntax";
		return 501;
	}
	return 0;
}

static void end_transaction(struct smtp_client *c);

/* MAIL, RCPT and DATA, as far as they may go now; on a connection taken
 * from the cache RSET goes first (alone when it refused locally: the
 * probe still tells whether the connection lives). */
static void start_transaction(struct smtp_client *c)
{
	const char *text = NULL;
	int code = local_refusal(c, &text);

	if (!requiretls_allows(c))
		return;
	c->uses++;
	if (code != 0) {
		refuse_all(c, code, text, false);
		c->tx_over = true;
	}
	enter_state(c, CS_TRANSACTION);
	c->result.setup_done = ev_time(); /* wall time, as the queue ids */
	if (c->rset_pending)
		conn_set_timeout(&c->conn, step_timeout(c) < RSET_WAIT
						   ? step_timeout(c)
						   : RSET_WAIT);
	if (send_commands(c))
		return;
	if (code != 0)
		end_transaction(c); /* nothing went out */
	else
		fail_session(c, "cannot send MAIL FROM to %s", c->peer);
}

static bool is_2xx(int code)
{
	return code >= 200 && code < 300;
}

/* The RSET probe: a 2xx says the parked connection lives (and the
 * step timeout is the transaction's again); anything else, a new one. */
static void on_rset_reply(struct smtp_client *c)
{
	if (!is_2xx(c->reply.code)) {
		reconnect(c);
		return;
	}
	c->rset_done = true;
	conn_set_timeout(&c->conn, step_timeout(c));
}

static void on_mail_reply(struct smtp_client *c)
{
	if (is_2xx(c->reply.code))
		return;
	refuse_all(c, c->reply.code, c->reply.text, false);
	c->tx_over = true;
}

static void on_rcpt_reply(struct smtp_client *c, size_t i)
{
	if (c->tx_over)
		return; /* MAIL was refused: these replies mean nothing */
	give_rcpt(&c->job.rcpts[i], c->reply.code, c->reply.text);
	if (is_2xx(c->reply.code)) {
		c->track[i].accepted = true;
		c->n_accepted++;
	}
}

static void on_data_reply(struct smtp_client *c)
{
	if (c->tx_over || c->n_accepted == 0) {
		/* Pipelined DATA without a recipient: a server that still
		 * says 354 gets an empty message, ended at once. */
		if (c->reply.code == 354 && write_command(c, "."))
			remember(c, TX_DOT, 0);
		c->tx_over = true;
		return;
	}
	if (c->reply.code != 354) {
		refuse_all(c, c->reply.code, c->reply.text, true);
		c->tx_over = true;
		return;
	}
	c->body_sent = 0;
	smtp_stuff_start(&c->stuffer);
	enter_state(c, CS_BODY);
}

/* No recipient accepted: the last refusal is the answer. */
static void no_recipients(struct smtp_client *c)
{
	for (size_t i = c->job.n_rcpts; i > 0; i--) {
		const struct client_rcpt *r = &c->job.rcpts[i - 1];

		if (r->code != 0) {
			settle_result(c, r->code, r->reply);
			return;
		}
	}
	settle_result(c, 0, "no recipients");
}

static void on_transaction_reply(struct smtp_client *c)
{
	struct sent_cmd cmd;

	if (c->n_replied == c->n_sent) {
		fail_session(c, "unexpected reply from %s: %s", c->peer,
			     c->reply.text);
		return;
	}
	cmd = c->sent[c->n_replied++];
	switch (cmd.cmd) {
	case TX_RSET:
		on_rset_reply(c);
		break;
	case TX_MAIL:
		on_mail_reply(c);
		break;
	case TX_RCPT:
		on_rcpt_reply(c, cmd.rcpt);
		break;
	case TX_DATA:
		on_data_reply(c);
		break;
	case TX_DOT:
		break;
	}
	if (c->state != CS_TRANSACTION)
		return;
	send_commands(c);
	if (c->n_replied < c->n_sent)
		return;
	/* Nothing outstanding and nothing more to send: it is over. */
	if (!c->result_final)
		no_recipients(c);
	end_transaction(c);
}

/* ---- the message ------------------------------------------------------ */

static void end_body(struct smtp_client *c)
{
	char tail[SMTP_STUFF_END_MAX];
	size_t n = smtp_stuff_end(&c->stuffer, tail);

	if (!conn_write(&c->conn, tail, n)) {
		fail_session(c, "cannot send end of data to %s", c->peer);
		return;
	}
	enter_state(c, CS_DOT);
}

/* One chunk of the message into the output buffer; false when there is
 * not enough room (or the body is over). */
static bool body_chunk(struct smtp_client *c)
{
	static char chunk[BODY_CHUNK];
	static char out[2 * BODY_CHUNK + BODY_TAIL];
	size_t room = conn_output_room(&c->conn);
	uint64_t left = c->job.body_size - c->body_sent;
	size_t want = room > BODY_TAIL ? (room - BODY_TAIL) / 2 : 0;
	const char *from = chunk;
	ssize_t got;

	if (left == 0) {
		if (room < BODY_TAIL)
			return false;
		end_body(c);
		return false;
	}
	if (want > BODY_CHUNK)
		want = BODY_CHUNK;
	if (want > left)
		want = (size_t)left;
	if (want < BODY_MIN_CHUNK && want < left)
		return false;
	if (c->job.body_data != NULL) {
		from = c->job.body_data + c->body_sent;
		got = (ssize_t)want;
	} else {
		do
			got = pread(c->job.body_fd, chunk, want,
				    c->job.body_offset + (off_t)c->body_sent);
		while (got < 0 && errno == EINTR);
	}
	if (got <= 0) {
		/* No dot: the server must not take a truncated message. */
		fail_session(c, "cannot read the queue file: %s",
			     got < 0 ? strerror(errno)
				     : "unexpected end of file");
		return false;
	}
	if (!conn_write(&c->conn, out,
			smtp_stuff(&c->stuffer, from, (size_t)got, out))) {
		fail_session(c, "cannot send the message to %s", c->peer);
		return false;
	}
	c->body_sent += (uint64_t)got;
	return true;
}

static void pump_body(struct smtp_client *c)
{
	/* Writing is progress too: the step timeout counts idleness. */
	conn_set_timeout(&c->conn, step_timeout(c));
	while (c->state == CS_BODY && body_chunk(c))
		;
}

/* A reply before our dot: the server gave up on the message. */
static void on_body_reply(struct smtp_client *c)
{
	if (c->reply.code < 400) {
		fail_session(c, "unexpected reply from %s while %s: %s",
			     c->peer, stage_text(c), c->reply.text);
		return;
	}
	refuse_all(c, c->reply.code, c->reply.text, true);
	finish(c); /* no QUIT: it would land inside the message */
}

static void on_dot_reply(struct smtp_client *c)
{
	refuse_all(c, c->reply.code, c->reply.text, true);
	end_transaction(c);
}

/* ---- greeting, EHLO, STARTTLS ----------------------------------------- */

static void on_banner_reply(struct smtp_client *c)
{
	if (c->reply.code == 220) {
		send_hello(c, "EHLO", CS_EHLO);
		return;
	}
	set_result(c, CLIENT_CONNECT_FAILED, c->reply.code, c->reply.text);
	c->result_final = true;
	if (c->reply.code == 421)
		finish(c); /* it is closing anyway */
	else
		send_quit(c); /* RFC 5321 3.1: after a 554 greeting */
}

static void send_starttls(struct smtp_client *c)
{
	if (!write_command(c, "STARTTLS")) {
		fail_session(c, "cannot send STARTTLS to %s", c->peer);
		return;
	}
	enter_state(c, CS_STARTTLS);
}

/* EHLO or HELO accepted: STARTTLS as the level asks, or the mail. */
static void after_hello(struct smtp_client *c)
{
	const struct client_job *j = &c->job;
	char text[sizeof(c->result.reply)];

	if (c->tls_active || j->level == TLS_LEVEL_NONE) {
		start_transaction(c);
	} else if (j->level == TLS_LEVEL_MAY) {
		if (!c->ext.starttls && !j->no_tls)
			c->result.tls_try = TLS_TRY_NOT_OFFERED;
		if (c->ext.starttls && !j->no_tls && j->tls != NULL)
			send_starttls(c);
		else
			start_transaction(c);
	} else if (!c->ext.starttls) {
		c->result.tls_try = TLS_TRY_NOT_OFFERED;
		snprintf(text, sizeof(text),
			 "TLS is required, but was not offered by %.200s",
			 c->peer);
		set_result(c, CLIENT_TLS_NOT_OFFERED, 0, text);
		c->result_final = true;
		send_quit(c);
	} else if (j->tls == NULL) {
		set_result(c, CLIENT_TLS_FAILED, 0,
			   "no TLS client configuration for this level");
		c->result_final = true;
		send_quit(c);
	} else {
		send_starttls(c);
	}
}

static void on_hello_reply(struct smtp_client *c)
{
	int code = c->reply.code;

	if (code == 250) {
		if (c->state == CS_HELO)
			memset(&c->ext, 0, sizeof(c->ext));
		after_hello(c);
	} else if (code == 421) {
		set_result(c, CLIENT_CONNECT_FAILED, code, c->reply.text);
		c->result_final = true;
		finish(c);
	} else if (c->state == CS_EHLO && code >= 500) {
		send_hello(c, "HELO", CS_HELO);
	} else {
		refuse_all(c, code, c->reply.text, false);
		send_quit(c);
	}
}

/* Plaintext that came with the 220 would count as TLS-protected replies
 * (CVE-2011-0411, the client side): refuse to go on. */
static void begin_tls(struct smtp_client *c)
{
	size_t len;

	conn_input(&c->conn, &len);
	enter_state(c, CS_HANDSHAKE);
	if (len > 0) {
		fail_session(c, "%s sent bytes after its 220 to STARTTLS",
			     c->peer);
		return;
	}
	if (!conn_starttls_client(&c->conn, c->job.tls, c->servername))
		fail_session(c, "%s", conn_tls_error(&c->conn));
}

static void on_starttls_reply(struct smtp_client *c)
{
	int code = c->reply.code;
	bool may = c->job.level == TLS_LEVEL_MAY;

	if (code != 220)
		c->result.tls_try = TLS_TRY_REFUSED;
	if (code == 220) {
		begin_tls(c);
	} else if (may && code != 421) {
		/* refused: on in plaintext, and the caller logs why */
		snprintf(c->result.starttls_refused,
			 sizeof(c->result.starttls_refused), "%.127s",
			 c->reply.text);
		start_transaction(c);
	} else {
		set_result(c, may ? CLIENT_CONNECT_FAILED : CLIENT_TLS_FAILED,
			   code, c->reply.text);
		c->result_final = true;
		if (code == 421)
			finish(c);
		else
			send_quit(c);
	}
}

/* DANE replaces the CA check (the config verifies nothing): the chain
 * must match the TLSA records, else the session ends before EHLO. */
static bool dane_check(struct smtp_client *c)
{
	size_t len = 0;
	const uint8_t *pem = tls_peer_cert_chain_pem(c->conn.tls, &len);
	const char *names[] = {c->job.host};
	char why[sizeof(c->result.reply)];

	c->result.dane = dane_verify(c->job.tlsa, c->job.n_tlsa, pem, len,
				     names, c->job.host != NULL, why,
				     sizeof(why));
	if (c->result.dane != DANE_AUTH_NONE) {
		c->result.tls_verified = true;
		return true;
	}
	c->result.tls_try = TLS_TRY_DANE_FAILED;
	set_result(c, CLIENT_TLS_FAILED, 0, why);
	c->result_final = true;
	send_quit(c);
	return false;
}

static void on_tls_ready(struct smtp_client *c)
{
	struct tls *t = c->conn.tls;
	const char *version = tls_conn_version(t);
	const char *cipher = tls_conn_cipher(t);

	c->tls_active = true;
	c->result.tls_try = TLS_TRY_OK;
	snprintf(c->result.tls_version, sizeof(c->result.tls_version), "%s",
		 version ? version : "");
	snprintf(c->result.tls_cipher, sizeof(c->result.tls_cipher), "%s",
		 cipher ? cipher : "");
	c->result.tls_verified = c->job.level == TLS_LEVEL_VERIFY;
	if (c->job.tlsa != NULL && !dane_check(c))
		return;
	if (c->job.cert_check != NULL) {
		c->result.cert_checked = true;
		c->result.cert = tls_check_server(
			c->job.cert_check, t, c->job.host ? c->job.host : "",
			c->result.cert_why, sizeof(c->result.cert_why));
	}
	send_hello(c, "EHLO", CS_EHLO); /* RFC 3207 4.2: start over */
}

/* ---- replies ---------------------------------------------------------- */

static void on_reply(struct smtp_client *c)
{
	switch (c->state) {
	case CS_BANNER:
		on_banner_reply(c);
		break;
	case CS_EHLO:
	case CS_HELO:
		on_hello_reply(c);
		break;
	case CS_STARTTLS:
		on_starttls_reply(c);
		break;
	case CS_TRANSACTION:
		on_transaction_reply(c);
		break;
	case CS_BODY:
		on_body_reply(c);
		break;
	case CS_DOT:
		on_dot_reply(c);
		break;
	case CS_QUIT:
		finish(c);
		break;
	case CS_CONNECT:
	case CS_HANDSHAKE:
	case CS_DONE:
	case CS_IDLE:
		break;
	}
}

static void take_reply_line(struct smtp_client *c, const char *line, size_t len)
{
	switch (smtp_reply_take(&c->reply, line, len,
				c->state == CS_EHLO ? &c->ext : NULL)) {
	case SMTP_REPLY_MORE:
		return;
	case SMTP_REPLY_MALFORMED:
		fail_session(c, "malformed reply from %s while %s", c->peer,
			     stage_text(c));
		return;
	case SMTP_REPLY_TOO_LONG:
		fail_session(c, "reply too long from %s while %s", c->peer,
			     stage_text(c));
		return;
	case SMTP_REPLY_DONE:
		break;
	}
	if (c->reply.code == 421)
		c->peer_closing = true; /* whatever it answered: never reuse */
	on_reply(c);
	smtp_reply_next(&c->reply);
}

static void process_input(struct smtp_client *c)
{
	while (expects_reply(c->state)) {
		char line[SMTP_REPLY_LINE_MAX];
		size_t len, line_len, n;
		const char *in = conn_input(&c->conn, &len);
		const char *lf = len > 0 ? memchr(in, '\n', len) : NULL;

		line_len = lf != NULL ? (size_t)(lf - in) + 1 : len;
		if (line_len > SMTP_REPLY_LINE_MAX) {
			fail_session(c, "reply too long from %s while %s",
				     c->peer, stage_text(c));
			return;
		}
		if (lf == NULL)
			return;
		n = line_len - 1;
		if (n > 0 && in[n - 1] == '\r')
			n--;
		memcpy(line, in, n);
		conn_consume(&c->conn, line_len);
		take_reply_line(c, line, n);
	}
}

/* ---- events and lifecycle --------------------------------------------- */

static void client_free(struct smtp_client *c)
{
	conncache_remove(&c->entry); /* the owner frees: out of the cache */
	conn_stop(&c->conn);
	free(c->tlsa);
	free(c->track);
	free(c->sent);
	free(c);
}

/* QUIT without waiting for its 221 (Postfix's smtp_skip_quit_response),
 * for a parked connection nobody wants any more. */
static void quit_and_free(struct smtp_client *c)
{
	if (!c->peer_closing && write_command(c, "QUIT"))
		conn_flush(&c->conn);
	client_free(c);
}

static struct smtp_client *entry_client(struct conncache_entry *e)
{
	return (struct smtp_client *)(void *)((char *)e -
					      offsetof(struct smtp_client,
						       entry));
}

/* The cache let it go (full, or being freed). */
static void on_evicted(struct conncache_entry *e)
{
	quit_and_free(entry_client(e));
}

/* The name in messages: the host, or the address when there is none. */
static void server_name(const struct client_job *j, char *out, size_t len)
{
	if (j->host != NULL && j->host[0] != '\0')
		snprintf(out, len, "%s", j->host);
	else
		sockaddr_ip_text(&j->addr, out, len);
}

/* SNI and the name verify checks: tls_name when set, else as above. */
static void expected_name(const struct client_job *j, char *out, size_t len)
{
	if (j->tls_name != NULL && j->tls_name[0] != '\0')
		snprintf(out, len, "%s", j->tls_name);
	else
		server_name(j, out, len);
}

static void job_key(const struct client_job *j, struct conncache_key *k)
{
	memset(k, 0, sizeof(*k));
	k->addr = j->addr;
	snprintf(k->helo, sizeof(k->helo), "%s", hello_name(j));
	expected_name(j, k->host, sizeof(k->host));
	k->level = j->level;
	k->tls = j->tls;
	k->epoch = j->epoch;
	k->tlsa = j->n_tlsa > 0 ? j->tlsa : NULL;
	k->n_tlsa = k->tlsa != NULL ? j->n_tlsa : 0;
	k->cert_check = j->cert_check != NULL;
}

/* Ended in step with the server (every reply in, nothing unread, no
 * 421), within the limits: worth keeping. Not a connection in plaintext
 * after a downgrade (may: a failed handshake, a refused STARTTLS): the
 * next message tries TLS again, and its downgrade is logged with it. */
static bool may_park(const struct smtp_client *c)
{
	const struct client_job *j = &c->job;
	size_t unread;

	conn_input(&c->conn, &unread);
	return j->cache != NULL && j->reuse_idle > 0 && !j->no_tls &&
	       c->result.starttls_refused[0] == '\0' &&
	       c->uses < j->reuse_max && !c->write_failed &&
	       !c->peer_closing && unread == 0 &&
	       !conn_output_pending(&c->conn) && c->n_replied == c->n_sent &&
	       ev_now(c->conn.loop) - c->born < REUSE_LIFETIME;
}

/* The transaction is over: the connection is parked when it may be,
 * else QUIT. */
static void end_transaction(struct smtp_client *c)
{
	if (!may_park(c)) {
		send_quit(c);
		return;
	}
	c->park = true;
	finish(c);
}

/* Into the cache, without its job (whose memory is the caller's). False
 * when the cache would not have it (or out of memory). Its conn is armed for the idle watch
 * here: the event that got it here returns false (settle) and its conn
 * call touches it no more. */
static bool park(struct smtp_client *c)
{
	job_key(&c->job, &c->entry.key);
	free(c->tlsa);
	c->tlsa = NULL;
	if (c->entry.key.n_tlsa > 0) {
		/* the job's records go with the job: the key keeps a copy */
		c->tlsa = malloc(c->entry.key.n_tlsa * sizeof(*c->tlsa));
		if (c->tlsa == NULL)
			return false;
		memcpy(c->tlsa, c->entry.key.tlsa,
		       c->entry.key.n_tlsa * sizeof(*c->tlsa));
		c->entry.key.tlsa = c->tlsa;
	}
	c->entry.state.tls = c->tls_active;
	c->entry.state.verified = c->result.tls_verified;
	c->entry.state.dane = c->result.dane != DANE_AUTH_NONE;
	c->entry.state.checked = c->result.cert_checked;
	c->entry.close = on_evicted;
	c->done = NULL;
	c->owner = NULL;
	c->job.host = c->job.tls_name = c->job.helo = c->job.sender = NULL;
	c->job.tlsa = NULL;
	c->job.n_tlsa = 0;
	c->job.cert_check = NULL;
	c->job.rcpts = NULL;
	c->job.n_rcpts = 0;
	c->job.body_fd = -1;
	c->job.body_data = NULL;
	free(c->track);
	free(c->sent);
	c->track = NULL;
	c->sent = NULL;
	enter_state(c, CS_IDLE);
	return conncache_put(c->job.cache, &c->entry);
}

/* Reports, then destroys or parks: the owner gets its result once the
 * client is gone or idle, so it may start the next one (on this very
 * connection) from the callback. */
static void report(struct smtp_client *c)
{
	struct client_result r = c->result;
	client_done_cb *done = c->done;
	void *owner = c->owner;

	if (!c->park || !park(c))
		client_free(c);
	done(owner, &r);
}

/* Parked: the peer hung up or spoke (a 421 before its own idle timeout)
 * and the connection is closed; the idle time ran out: QUIT. Always gone
 * afterwards. */
static bool on_idle_event(struct smtp_client *c, enum conn_event ev)
{
	switch ((int)ev) {
	case CONN_TIMEOUT:
		quit_and_free(c);
		return false;
	case CONN_DATAIN:
	case CONN_EOF:
	case CONN_ERROR:
		client_free(c);
		return false;
	default:
		return true;
	}
}

/* A write failed, but a server that hangs up mid-way (a 5xx in the
 * middle of the message, a 421 to pipelined commands) has usually said
 * why first: stop writing and read its last replies. Once only. */
static bool hear_last_words(struct smtp_client *c)
{
	if (c->write_failed || !expects_reply(c->state) ||
	    c->state == CS_QUIT)
		return false;
	c->write_failed = true;
	conn_discard_output(&c->conn);
	/* Replies to what was never written will not come: a short grace
	 * for the ones that might, not a whole step. */
	conn_set_timeout(&c->conn, step_timeout(c) < LAST_WORDS_WAIT
					   ? step_timeout(c)
					   : LAST_WORDS_WAIT);
	return true;
}

/* The end of every event. False when the client is gone (or parked). */
static bool settle(struct smtp_client *c)
{
	for (;;) {
		if (c->state == CS_DONE) {
			report(c);
			return false;
		}
		if (!conn_flush(&c->conn)) {
			if (!hear_last_words(c))
				fail_session(c, "lost connection with %s while %s",
					     c->peer, stage_text(c));
			continue;
		}
		if (conn_output_pending(&c->conn))
			return true; /* CONN_DRAINED brings us back */
		if (c->write_failed)
			return true; /* reading the last replies */
		if (c->state == CS_TRANSACTION && send_commands(c))
			continue;
		if (c->state != CS_BODY)
			return true;
		pump_body(c);
	}
}

static void on_timeout(struct smtp_client *c)
{
	if (c->state == CS_QUIT) {
		finish(c);
		return;
	}
	if (c->state == CS_HANDSHAKE) {
		fail_session(c, "TLS handshake with %s timed out", c->peer);
		return;
	}
	if (c->state == CS_CONNECT) {
		fail_session(c, "connect to %s: Connection timed out", c->peer);
		return;
	}
	fail_session(c, "conversation with %s timed out while %s", c->peer,
		     stage_text(c));
}

static void on_lost(struct smtp_client *c, enum conn_event ev)
{
	/* With output pending the error may have been the write's. */
	if (ev == CONN_ERROR && conn_output_pending(&c->conn) &&
	    hear_last_words(c))
		return;
	if (c->state == CS_CONNECT) {
		fail_session(
		    c, "connect to %s: %s", c->peer,
		    strerror(c->conn.sock_error ? c->conn.sock_error : EIO));
		return;
	}
	fail_session(c, "lost connection with %s while %s", c->peer,
		     stage_text(c));
}

/* Our end of the connection: TLS reports name it (sending-mta-ip). */
static void note_local_address(struct smtp_client *c)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (getsockname(c->conn.fd, (struct sockaddr *)&ss, &len) == 0)
		sockaddr_ip_text(&ss, c->result.local_ip,
				 sizeof(c->result.local_ip));
}

static bool on_conn_event(struct conn *conn, enum conn_event ev, void *owner)
{
	struct smtp_client *c = owner;

	(void)conn;
	if (c->state == CS_IDLE)
		return on_idle_event(c, ev);
	switch ((int)ev) {
	case CONN_CONNECTED:
		note_local_address(c);
		enter_state(c, CS_BANNER);
		break;
	case CONN_DATAIN:
		process_input(c);
		break;
	case CONN_DRAINED:
		break; /* settle() sends what waited for room */
	case CONN_TIMEOUT:
		on_timeout(c);
		break;
	case CONN_EOF:
	case CONN_ERROR:
		on_lost(c, ev);
		break;
	case CONN_TLSREADY:
		on_tls_ready(c);
		break;
	case CONN_TLSFAIL:
		fail_session(c, "%s", conn_tls_error(&c->conn));
		break;
	default:
		break;
	}
	return settle(c);
}

static void describe_peer(struct smtp_client *c)
{
	char ip[INET6_ADDRSTRLEN];

	server_name(&c->job, c->servername, sizeof(c->servername));
	sockaddr_ip_text(&c->job.addr, ip, sizeof(ip));
	snprintf(c->peer, sizeof(c->peer), "%s[%s]:%u", c->servername, ip,
		 sockaddr_port(&c->job.addr));
	expected_name(&c->job, c->servername, sizeof(c->servername));
}

/* The transaction's own state, empty, for its recipients. */
static void tx_reset(struct smtp_client *c)
{
	c->n_sent = c->n_replied = 0;
	c->mail_sent = c->data_sent = c->tx_over = false;
	c->next_rcpt = c->n_rcpt_sent = c->n_accepted = 0;
	c->body_sent = 0;
	c->result_final = false;
	memset(c->track, 0, (c->job.n_rcpts > 0 ? c->job.n_rcpts : 1) *
				    sizeof(*c->track));
	for (size_t i = 0; i < c->job.n_rcpts; i++)
		give_rcpt(&c->job.rcpts[i], 0, "");
	check_rcpts(c);
}

/* A new connection for the job (the first, or after a stale one). */
static void connect_fresh(struct smtp_client *c, struct ev_loop *loop)
{
	memset(&c->ext, 0, sizeof(c->ext));
	memset(&c->reply, 0, sizeof(c->reply));
	memset(&c->result, 0, sizeof(c->result));
	c->tls_active = c->write_failed = c->peer_closing = false;
	c->rset_pending = c->rset_done = c->park = false;
	c->uses = 0;
	c->born = ev_now(loop);
	tx_reset(c);
	conn_connect(&c->conn, loop, &c->job.addr, on_conn_event, c);
	/* A reply must arrive whole within the step timeout: a peer that
	 * drips a byte at a time must not hold a delivery slot for days. */
	c->conn.deadline = true;
	enter_state(c, CS_CONNECT);
}

/* The parked connection did not survive its RSET probe: closed, and the
 * transaction starts over on a new one, as Postfix does when a cached
 * session fails its probe. Only once: the new one is not reused. */
static void reconnect(struct smtp_client *c)
{
	struct ev_loop *loop = c->conn.loop;

	conn_stop(&c->conn);
	connect_fresh(c, loop);
}

/* A parked connection that serves the job, or NULL. */
static struct smtp_client *take_parked(const struct client_job *job)
{
	struct conncache_key want;
	struct conncache_entry *e;

	if (job->cache == NULL)
		return NULL;
	job_key(job, &want);
	e = conncache_take(job->cache, &want);
	return e != NULL ? entry_client(e) : NULL;
}

/* Its session (EHLO keywords, TLS and what the handshake said) stays;
 * the transaction starts with RSET and goes out at once. A write that
 * fails here is a stale connection too: a new one. */
static void resume(struct smtp_client *c)
{
	struct client_result kept = {.reused = true};

	memcpy(kept.tls_version, c->result.tls_version,
	       sizeof(kept.tls_version));
	memcpy(kept.tls_cipher, c->result.tls_cipher, sizeof(kept.tls_cipher));
	kept.tls_verified = c->result.tls_verified;
	kept.dane = c->result.dane;
	kept.cert_checked = c->result.cert_checked;
	kept.cert = c->result.cert;
	memcpy(kept.cert_why, c->result.cert_why, sizeof(kept.cert_why));
	c->result = kept;
	c->park = c->rset_done = false;
	c->rset_pending = true;
	tx_reset(c);
	start_transaction(c);
	if (c->state == CS_TRANSACTION && !conn_flush(&c->conn))
		reconnect(c);
}

struct smtp_client *smtp_client_start(struct ev_loop *loop,
				      const struct client_job *job,
				      client_done_cb *done, void *owner)
{
	size_t n = job->n_rcpts;
	struct rcpt_track *track = calloc(n > 0 ? n : 1, sizeof(*track));
	/* RSET, MAIL, RCPTs, DATA, "." */
	struct sent_cmd *sent = calloc(n + 4, sizeof(*sent));
	struct smtp_client *c = NULL;

	if (track != NULL && sent != NULL &&
	    (c = take_parked(job)) == NULL)
		c = calloc(1, sizeof(*c));
	if (c == NULL) {
		free(track);
		free(sent);
		return NULL;
	}
	c->track = track;
	c->sent = sent;
	c->job = *job;
	c->done = done;
	c->owner = owner;
	describe_peer(c);
	if (c->state == CS_IDLE)
		resume(c);
	else
		connect_fresh(c, loop);
	return c;
}

void smtp_client_abort(struct smtp_client *c)
{
	if (c != NULL)
		client_free(c);
}
