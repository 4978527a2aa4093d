/*
 * smtp_server: inbound SMTP sessions (RFC 5321, replies as Postfix gives
 * them). A session owns its conn, its transaction and its spool file; the
 * queue owns a commit while it syncs. Sessions are destroyed in exactly one
 * place, at the end of an event, so no handler ever runs on a freed session.
 * Every wait has a deadline that input cannot move (one conn timer per
 * session, re-armed here only): the greet pause, the wait for a command,
 * one command line, the DATA phase and its minimum rate, the handshake.
 */
#include "inbound/smtp_server.h"

#include "core/config.h"
#include "net/conn.h"
#include "proto/envelope.h"
#include "policy/generation.h"
#include "core/netaddr.h"
#include "inbound/listener.h"
#include "core/log.h"
#include "core/stats.h"
#include "policy/policy.h"
#include "spool/queue.h"
#include "proto/smtp_proto.h"
#include "net/tls.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Room kept free in the output buffer before a command is processed:
 * larger than any single reply, so a reply never fails to fit. */
enum { REPLY_RESERVE = 1024 };

/* Stress mode: on above 80 % of max_connections, off at 70 % or below, so
 * a load that hovers at the line does not flap. */
static const double STRESS_ON = 0.8, STRESS_OFF = 0.7;

enum session_state {
	ST_GREET,   /* greet pause: anything the client says is a sync error */
	ST_COMMAND, /* reading command lines */
	ST_DATA,    /* reading the message after 354 */
	ST_SYNC,    /* the queue is making the message durable */
	ST_TLS,	    /* 220 to STARTTLS sent; handshake once it is out */
	ST_CLOSING, /* last reply queued; close once it is written */
};

enum close_reason {
	CLOSE_NONE = 0,
	CLOSE_QUIT,
	CLOSE_EOF,
	CLOSE_ERROR,
	CLOSE_TIMEOUT,
	CLOSE_ERRORS,
	CLOSE_SHUTDOWN,
	CLOSE_TLS,
	CLOSE_POLICY,
	CLOSE_SYNC,
	CLOSE_JUNK,
};

/* Which deadline the conn timer holds in ST_COMMAND. */
enum command_timer {
	CT_NONE, /* re-armed after the next input */
	CT_WAIT, /* waiting for the first octet of a command */
	CT_LINE, /* a command line has begun and must end in time */
};

struct transaction {
	char qid[QUEUE_ID_LEN + 1];
	struct smtp_addr sender;
	struct smtp_mail_params params;
	char *rcpts; /* mailboxes, each NUL-terminated */
	size_t rcpts_len;
	size_t rcpts_cap;
	unsigned n_rcpt;
	struct spool_file file;
	bool file_open;
	struct smtp_data_decoder dec;
	struct queue_commit *commit;
	/* DATA's clock (here, not in the session: idle sessions stay small) */
	double data_end;       /* the data_timeout deadline */
	double window_end;     /* end of the current rate window */
	uint64_t data_bytes;   /* octets read since the 354 */
	uint64_t window_bytes; /* data_bytes when the window began */
	unsigned windows;      /* rate windows completed (the first is grace) */
};

struct session {
	struct conn conn;
	struct server *srv;
	struct generation *gen; /* the configuration this session started with */
	struct session *prev, *next;
	uint64_t sid;
	struct sockaddr_storage peer;
	uint32_t ticket; /* the listener's slot, handed back at the end */
	char peer_ip[64];
	unsigned peer_port;
	enum session_state state;
	enum close_reason close_reason;
	char *helo;
	bool esmtp;
	enum tls_level level;	/* inbound TLS level for this session */
	bool tls_active;
	enum tls_peer tls_peer;
	const char *tls_refusal; /* verify failed: the next command gets it */
	bool discarding; /* inside a command line that is too long */
	bool stalled; /* input waits for room in the output buffer */
	bool sync_exempt; /* smtp_sync off for this client */
	enum command_timer ctimer;
	enum smtp_verb last_verb; /* for "timeout after VERB" */
	const char *rcpt_to; /* the RCPT being decided, for reject lines */
	size_t pending_after; /* octets read after the command being run */
	double wait_start;    /* ST_COMMAND, CT_WAIT: since when */
	unsigned errors, commands, messages, junk;
	struct transaction *tx;
};

enum {
	F_NEED_HELO = 1 << 0,
	F_NEED_MAIL = 1 << 1,
	F_NEED_RCPT = 1 << 2,
	F_NO_TX = 1 << 3,
	F_NO_ARG = 1 << 4,
	F_PRE_TLS = 1 << 5, /* allowed before STARTTLS under encrypt/verify */
};

struct command {
	unsigned flags;
	void (*proceed)(struct session *s, const struct smtp_cmd *cmd);
	const char *no_arg_reply;
};

/* Decoded message content of one read; the loop is single-threaded. */
static char data_scratch[CONN_BUF_SIZE + 2];

static const struct config *cfg_of(const struct session *s)
{
	return s->gen->cfg;
}

static double now_of(const struct session *s)
{
	return ev_now(s->srv->loop);
}

/* ---- limits, shrunk under stress (Postfix's stress values) ---------- */

static double command_timeout(const struct session *s)
{
	const struct config *cfg = cfg_of(s);

	if (s->srv->stress && cfg->stress_timeout < cfg->command_timeout)
		return cfg->stress_timeout;
	return cfg->command_timeout;
}

static double tls_timeout(const struct session *s)
{
	const struct config *cfg = cfg_of(s);

	if (s->srv->stress && cfg->stress_timeout < cfg->tls_timeout)
		return cfg->stress_timeout;
	return cfg->tls_timeout;
}

static unsigned error_limit(const struct session *s)
{
	return s->srv->stress ? 1 : cfg_of(s)->max_errors;
}

static unsigned junk_limit(const struct session *s)
{
	return s->srv->stress ? 1 : cfg_of(s)->junk_command_limit;
}

/* ---- deadlines -------------------------------------------------------- */

/* conn_set_timeout stops the timer at 0: a deadline already past fires at
 * the next turn of the loop instead. */
static void arm_at(struct session *s, double when)
{
	double left = when - now_of(s);

	conn_set_timeout(&s->conn, left > 0.001 ? left : 0.001);
}

/* ST_COMMAND: the wait for a command and each command line have their own
 * deadline from their start; octets that trickle in move neither. */
static void arm_command_timer(struct session *s)
{
	size_t len;
	bool mid_line;

	conn_input(&s->conn, &len);
	mid_line = len > 0 || s->discarding;
	if (mid_line && s->ctimer != CT_LINE) {
		s->ctimer = CT_LINE;
		arm_at(s, now_of(s) + command_timeout(s));
	} else if (!mid_line && s->ctimer != CT_WAIT) {
		s->ctimer = CT_WAIT;
		s->wait_start = now_of(s);
		arm_at(s, s->wait_start + command_timeout(s));
	}
}

/* ST_DATA: the next check is the end of the rate window or the end of
 * the whole DATA phase, whichever comes first. */
static void arm_data_timer(struct session *s)
{
	double when = s->tx->data_end;

	if (cfg_of(s)->min_data_rate > 0 && s->tx->window_end < when)
		when = s->tx->window_end;
	arm_at(s, when);
}

static void start_data_clock(struct session *s)
{
	const struct config *cfg = cfg_of(s);
	struct transaction *tx = s->tx;
	double now = now_of(s);

	tx->data_end = now + cfg->data_timeout;
	tx->window_end = now + cfg->data_rate_window;
	tx->data_bytes = tx->window_bytes = 0;
	tx->windows = 0;
	arm_data_timer(s);
}

static void log_session(struct logline *l, const struct session *s,
			enum log_level level, const char *event)
{
	log_begin(l, level, event);
	log_kv(l, "sid", "%llu", (unsigned long long)s->sid);
	if (s->tx != NULL)
		log_kv(l, "qid", "%s", s->tx->qid);
}

static void enter_state(struct session *s, enum session_state next)
{
	s->state = next;
	switch (next) {
	case ST_GREET:
		conn_set_reading(&s->conn, true);
		conn_set_timeout(&s->conn, cfg_of(s)->greet_pause);
		break;
	case ST_COMMAND:
		conn_set_reading(&s->conn, true);
		s->ctimer = CT_NONE;
		arm_command_timer(s);
		break;
	case ST_DATA:
		conn_set_reading(&s->conn, true);
		start_data_clock(s);
		break;
	case ST_SYNC:
		/* Pipelined input waits until the reply for this message. */
		conn_set_reading(&s->conn, false);
		conn_set_timeout(&s->conn, 0);
		break;
	case ST_TLS:
		conn_set_reading(&s->conn, false);
		conn_set_timeout(&s->conn, tls_timeout(s));
		break;
	case ST_CLOSING:
		/* Bounded too: a client that never reads its 421 goes away. */
		conn_set_reading(&s->conn, false);
		conn_set_timeout(&s->conn, command_timeout(s));
		break;
	}
}

static void close_after_reply(struct session *s, enum close_reason why)
{
	s->close_reason = why;
	enter_state(s, ST_CLOSING);
}

static void send_line(struct session *s, const char *line);

/* The hard error limit or the junk-command limit is reached: one 421. */
static void too_many_errors(struct session *s, enum close_reason why)
{
	char text[300];

	if (s->state == ST_CLOSING)
		return;
	snprintf(text, sizeof(text), "421 4.7.0 %s Error: too many errors",
		 cfg_of(s)->hostname);
	send_line(s, text);
	close_after_reply(s, why);
}

/* NOOP, RSET, VRFY, HELP and every refused command (Postfix's junk
 * commands, plus HELP and errors) count towards junk_command_limit; the
 * one beyond it gets the 421. False when the session is closing. */
static bool junk_allowed(struct session *s)
{
	if (++s->junk <= junk_limit(s))
		return true;
	too_many_errors(s, CLOSE_JUNK);
	return false;
}

static void send_line(struct session *s, const char *line)
{
	size_t n = strlen(line);

	/* REPLY_RESERVE guarantees room; a miss means a bug, so close. */
	if (!conn_write(&s->conn, line, n) || !conn_write(&s->conn, "\r\n", 2))
		close_after_reply(s, CLOSE_ERROR);
}

static void reply(struct session *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Every 4xx/5xx counts towards max_errors, as Postfix's hard limit, and
 * as a junk command; a 421 closes the session anyway. */
static void reply(struct session *s, const char *fmt, ...)
{
	char text[600];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	send_line(s, text);
	if ((text[0] != '4' && text[0] != '5') || strncmp(text, "421", 3) == 0)
		return;
	if (++s->errors >= error_limit(s))
		too_many_errors(s, CLOSE_ERRORS);
	else
		junk_allowed(s);
}

/* RFC 5321 4.5.3.2 / RFC 2920 3.1 broken: the client did not wait for a
 * reply it had to wait for. Refused and closed, as Exim and Postfix do. */
static void sync_error(struct session *s, const char *stage)
{
	struct logline l;
	size_t len;

	conn_input(&s->conn, &len);
	log_session(&l, s, LOG_WARN, "sync_error");
	log_kv(&l, "client", "%s", s->peer_ip);
	log_kv(&l, "stage", "%s", stage);
	log_kv(&l, "pending", "%zu", len);
	log_end(&l);
	conn_consume(&s->conn, len);
	send_line(s, "554 5.5.0 Error: SMTP synchronization error");
	close_after_reply(s, CLOSE_SYNC);
}

static const char *stage_name(const struct session *s, enum smtp_verb verb)
{
	if (s->state == ST_DATA || s->state == ST_SYNC)
		return "END-OF-DATA";
	if (verb == SMTP_VERB_UNKNOWN && s->commands == 0)
		return "CONNECT";
	return smtp_verb_name(verb);
}

/* What a refusal was: an access decision (relay, policy, size: Postfix's
 * "reject:" lines) or a protocol error (syntax, sequence). */
enum refusal { REFUSE_PROTOCOL, REFUSE_ACCESS };

static void refuse(struct session *s, enum smtp_verb verb, enum refusal kind,
		   const char *fmt, va_list ap) __attribute__((format(printf, 4, 0)));
static void reject(struct session *s, enum smtp_verb verb, const char *fmt,
		   ...) __attribute__((format(printf, 3, 4)));
static void deny(struct session *s, enum smtp_verb verb, const char *fmt,
		 ...) __attribute__((format(printf, 3, 4)));

/* The stage a refused command is counted under (core/stats.h). */
static enum stat_stage stat_stage(const struct session *s, enum smtp_verb verb)
{
	if (s->state == ST_DATA || s->state == ST_SYNC)
		return STAT_STAGE_DATA;
	switch (verb) {
	case SMTP_VERB_HELO:
	case SMTP_VERB_EHLO:
		return STAT_STAGE_HELO;
	case SMTP_VERB_MAIL:
		return STAT_STAGE_MAIL;
	case SMTP_VERB_RCPT:
		return STAT_STAGE_RCPT;
	case SMTP_VERB_DATA:
		return STAT_STAGE_DATA;
	default:
		return STAT_STAGE_OTHER;
	}
}

/* A refused command: the reply plus one log line saying why, with the
 * client's HELO, sender and recipient as Postfix gives them. */
static void refuse(struct session *s, enum smtp_verb verb, enum refusal kind,
		   const char *fmt, va_list ap)
{
	char text[600];
	struct logline l;

	vsnprintf(text, sizeof(text), fmt, ap);
	log_session(&l, s, LOG_INFO, "reject");
	log_kv(&l, "stage", "%s", stage_name(s, verb));
	log_kv(&l, "client", "%s", s->peer_ip);
	log_kv(&l, "code", "%.3s", text);
	log_kv(&l, "reply", "%s", text + 4);
	log_kv(&l, "kind", "%s", kind == REFUSE_ACCESS ? "access" : "protocol");
	if (s->tx != NULL)
		log_kv(&l, "from", "<%s>", s->tx->sender.mailbox);
	if (s->rcpt_to != NULL)
		log_kv(&l, "to", "<%s>", s->rcpt_to);
	log_kv(&l, "proto", "%s", s->esmtp ? "ESMTP" : "SMTP");
	if (s->helo != NULL)
		log_kv(&l, "helo", "%s", s->helo);
	log_end(&l);
	stats_add(stat_reject_id(stat_stage(s, verb), atoi(text)));
	reply(s, "%s", text);
}

/* A syntax or sequence error. */
static void reject(struct session *s, enum smtp_verb verb, const char *fmt,
		   ...)
{
	va_list ap;

	va_start(ap, fmt);
	refuse(s, verb, REFUSE_PROTOCOL, fmt, ap);
	va_end(ap);
}

/* An access decision. */
static void deny(struct session *s, enum smtp_verb verb, const char *fmt,
		 ...)
{
	va_list ap;

	va_start(ap, fmt);
	refuse(s, verb, REFUSE_ACCESS, fmt, ap);
	va_end(ap);
}

/* ---- transaction ---------------------------------------------------- */

static void tx_free(struct session *s)
{
	struct transaction *tx = s->tx;

	if (tx == NULL)
		return;
	if (tx->file_open)
		spool_file_abort(s->srv->queue, &tx->file);
	if (tx->commit != NULL)
		queue_commit_orphan(tx->commit);
	free(tx->rcpts);
	free(tx);
	s->tx = NULL;
}

static bool tx_add_rcpt(struct transaction *tx, const struct smtp_addr *a)
{
	size_t need = a->mailbox_len + 1;

	if (tx->rcpts_len + need > tx->rcpts_cap) {
		size_t cap = tx->rcpts_cap ? tx->rcpts_cap * 2 : 512;
		char *grown;

		while (cap < tx->rcpts_len + need)
			cap *= 2;
		if ((grown = realloc(tx->rcpts, cap)) == NULL)
			return false;
		tx->rcpts = grown;
		tx->rcpts_cap = cap;
	}
	memcpy(tx->rcpts + tx->rcpts_len, a->mailbox, need);
	tx->rcpts_len += need;
	tx->n_rcpt++;
	return true;
}

/* ---- policy ----------------------------------------------------------- */

static void facts_for(const struct session *s, enum policy_hook hook,
		      struct policy_facts *f)
{
	struct tls *t = s->conn.tls;

	memset(f, 0, sizeof(*f));
	f->hook = hook;
	f->sid = s->sid;
	f->hostname = cfg_of(s)->hostname;
	f->inbound = true;
	f->client_ip = s->peer_ip;
	f->client_port = s->peer_port;
	f->client_trusted = config_is_relay_client(
		cfg_of(s), (const struct sockaddr *)&s->peer);
	f->helo = s->helo;
	f->tls_active = s->tls_active;
	f->tls_peer = s->tls_peer;
	if (s->tls_active) {
		f->tls_version = tls_conn_version(t);
		f->tls_cipher = tls_conn_cipher(t);
		f->tls_sni = tls_conn_servername(t);
	}
	if (s->tx != NULL)
		f->sender = s->tx->sender.mailbox;
}

static void log_policy_error(struct session *s, enum policy_hook hook,
			     const char *reason)
{
	struct logline l;

	log_session(&l, s, LOG_ERR, "policy_error");
	log_kv(&l, "client", "%s", s->peer_ip);
	log_kv(&l, "hook", "%s", policy_hook_name(hook));
	log_kv(&l, "reason", "%s", reason);
	log_end(&l);
	stats_add(STAT_POLICY_ERRORS + hook);
}

/* A verdict hook. True when the command may go on; otherwise its refusal
 * (or the 451 of a failed policy) has been sent. */
static bool policy_allows(struct session *s, const struct policy_facts *f,
			  enum smtp_verb verb)
{
	struct policy_result r;

	policy_call(s->gen->policy, f, &r);
	switch (r.outcome) {
	case POLICY_ACCEPT:
		return true;
	case POLICY_REJECT:
	case POLICY_TEMPFAIL:
		deny(s, verb, "%d %s", r.code, r.text);
		return false;
	case POLICY_LEVEL:
	case POLICY_ERROR:
		break;
	}
	log_policy_error(s, f->hook, r.text);
	deny(s, verb, "451 4.3.0 Error: policy failure");
	return false;
}

/* At connect: server_tls gives the session its level, then the connect
 * verdict. False when the session is refused (its 421/5xx is queued). */
static bool policy_connect(struct session *s)
{
	struct policy_facts f;
	struct policy_result r;
	const char *host = cfg_of(s)->hostname;

	facts_for(s, HOOK_SERVER_TLS, &f);
	policy_call(s->gen->policy, &f, &r);
	if (r.outcome != POLICY_LEVEL) {
		log_policy_error(s, HOOK_SERVER_TLS, r.text);
		reply(s, "421 4.3.0 %s Error: policy failure", host);
		close_after_reply(s, CLOSE_POLICY);
		return false;
	}
	s->level = r.level;
	stats_add(STAT_SESSIONS + r.level);
	facts_for(s, HOOK_CONNECT, &f);
	policy_call(s->gen->policy, &f, &r);
	if (r.outcome == POLICY_ACCEPT)
		return true;
	if (r.outcome == POLICY_REJECT || r.outcome == POLICY_TEMPFAIL) {
		deny(s, SMTP_VERB_UNKNOWN, "%d %s", r.code, r.text);
	} else {
		log_policy_error(s, HOOK_CONNECT, r.text);
		reply(s, "421 4.3.0 %s Error: policy failure", host);
	}
	close_after_reply(s, CLOSE_POLICY);
	return false;
}

/* ---- commands --------------------------------------------------------- */

static void set_helo(struct session *s, const struct smtp_cmd *cmd, bool esmtp)
{
	char *name = strndup(cmd->arg, cmd->arg_len);

	if (name == NULL) {
		reply(s, "451 4.3.0 Error: out of memory");
		return;
	}
	free(s->helo);
	s->helo = name;
	s->esmtp = esmtp;
	tx_free(s); /* EHLO/HELO reset the transaction (RFC 5321 4.1.4) */
}

/* The helo verdict sees the name being offered, not the previous one. */
static bool helo_allowed(struct session *s, const struct smtp_cmd *cmd,
			 enum smtp_verb verb)
{
	struct policy_facts f;
	char name[SMTP_COMMAND_LINE_MAX];

	snprintf(name, sizeof(name), "%.*s", (int)cmd->arg_len, cmd->arg);
	facts_for(s, HOOK_HELO, &f);
	f.helo = name;
	return policy_allows(s, &f, verb);
}

static void do_helo(struct session *s, const struct smtp_cmd *cmd)
{
	if (!helo_allowed(s, cmd, SMTP_VERB_HELO))
		return;
	set_helo(s, cmd, false);
	reply(s, "250 %s", cfg_of(s)->hostname);
}

static bool starttls_offered(const struct session *s)
{
	return s->level != TLS_LEVEL_NONE && !s->tls_active;
}

static void do_ehlo(struct session *s, const struct smtp_cmd *cmd)
{
	const struct config *cfg = cfg_of(s);
	char size[40] = "250-SIZE";

	if (!helo_allowed(s, cmd, SMTP_VERB_EHLO))
		return;
	set_helo(s, cmd, true);
	if (cfg->max_message_size > 0)
		snprintf(size, sizeof(size), "250-SIZE %llu",
			 (unsigned long long)cfg->max_message_size);
	reply(s, "250-%s", cfg->hostname);
	send_line(s, "250-PIPELINING");
	send_line(s, size);
	if (starttls_offered(s))
		send_line(s, "250-STARTTLS");
	send_line(s, "250-8BITMIME");
	send_line(s, "250-ENHANCEDSTATUSCODES");
	send_line(s, "250 SMTPUTF8");
}

static void reject_path(struct session *s, enum smtp_verb verb,
			enum smtp_path_status st, const struct smtp_addr *a,
			const char *bad, size_t bad_len)
{
	bool mail = verb == SMTP_VERB_MAIL;

	switch (st) {
	case SMTP_PATH_OK:
		break;
	case SMTP_PATH_NEED_UTF8:
		reject(s, verb, "553 5.6.7 Must declare SMTPUTF8 to send "
				"unicode address");
		break;
	case SMTP_PATH_BAD_PARAM:
		reject(s, verb, "555 5.5.4 Unsupported option: %.*s",
		       (int)(bad_len > 100 ? 100 : bad_len), bad ? bad : "");
		break;
	case SMTP_PATH_NO_DOMAIN:
		if (!mail) {
			deny(s, verb,
			     "504 5.5.2 <%s>: Recipient address rejected: "
			     "need fully-qualified address",
			     a->mailbox);
			break;
		}
		/* fall through */
	case SMTP_PATH_SYNTAX:
	case SMTP_PATH_TOO_LONG:
	case SMTP_PATH_NULL_RCPT:
		reject(s, verb, mail ? "501 5.1.7 Bad sender address syntax"
				     : "501 5.1.3 Bad recipient address syntax");
		break;
	}
}

static void do_mail(struct session *s, const struct smtp_cmd *cmd)
{
	const struct config *cfg = cfg_of(s);
	struct transaction *tx = calloc(1, sizeof(*tx));
	struct policy_facts f;
	const char *bad = NULL;
	size_t bad_len = 0;
	enum smtp_path_status st;

	if (tx == NULL) {
		reply(s, "451 4.3.0 Error: out of memory");
		return;
	}
	st = smtp_parse_mail(cmd->arg, cmd->arg_len, &tx->sender, &tx->params,
			     &bad, &bad_len);
	if (st != SMTP_PATH_OK) {
		reject_path(s, SMTP_VERB_MAIL, st, &tx->sender, bad, bad_len);
		free(tx);
		return;
	}
	if (cfg->max_message_size > 0 && tx->params.has_size &&
	    tx->params.size > cfg->max_message_size) {
		deny(s, SMTP_VERB_MAIL,
		     "552 5.3.4 Message size exceeds fixed limit");
		free(tx);
		return;
	}
	queue_new_id(s->srv->queue, tx->qid);
	s->tx = tx;
	facts_for(s, HOOK_MAIL, &f);
	if (!policy_allows(s, &f, SMTP_VERB_MAIL)) {
		tx_free(s);
		return;
	}
	reply(s, "250 2.1.0 Ok");
}

/* Routing syntax must not ride on relay_domains (allow_untrusted_routing
 * = no): such an address relays only for trusted clients. */
bool smtp_relay_allowed(const struct config *cfg, const struct sockaddr *peer,
			const struct smtp_addr *a)
{
	const char *domain = a->mailbox + a->domain;
	size_t len = a->mailbox_len - a->domain;

	/* <postmaster> without a domain has no route of its own: the session
	 * maps it to [gateway] postmaster, or refuses it here. */
	if (len == 0)
		return false;
	if (config_is_relay_client(cfg, peer))
		return true;
	if (a->has_route || a->routing_chars || a->literal)
		return false;
	return config_is_relay_domain(cfg, domain, len);
}

/* <postmaster> without a domain (RFC 5321 4.1.1.3) becomes [gateway]
 * postmaster; without one it is refused as relaying would be. */
static bool postmaster_address(struct session *s, struct smtp_addr *a)
{
	const char *to = cfg_of(s)->postmaster;
	struct logline l;

	if (to == NULL) {
		deny(s, SMTP_VERB_RCPT, "554 5.7.1 <%s>: Relay access denied",
		     a->mailbox);
		return false;
	}
	memset(a, 0, sizeof(*a));
	snprintf(a->mailbox, sizeof(a->mailbox), "%s", to);
	a->mailbox_len = strlen(a->mailbox);
	a->local_len = (size_t)(strrchr(a->mailbox, '@') - a->mailbox);
	a->domain = a->local_len + 1;
	log_session(&l, s, LOG_INFO, "postmaster");
	log_kv(&l, "client", "%s", s->peer_ip);
	log_kv(&l, "orig_to", "<postmaster>");
	log_kv(&l, "to", "<%s>", to);
	log_end(&l);
	return true;
}

static bool rcpt_policy_allows(struct session *s, const struct smtp_addr *a)
{
	const struct config *cfg = cfg_of(s);
	size_t len = a->mailbox_len - a->domain;
	char domain[SMTP_DOMAIN_MAX + 1];
	struct policy_facts f;

	for (size_t i = 0; i < len && i < SMTP_DOMAIN_MAX; i++)
		domain[i] = (char)tolower((unsigned char)a->mailbox[a->domain + i]);
	domain[len < SMTP_DOMAIN_MAX ? len : SMTP_DOMAIN_MAX] = '\0';
	facts_for(s, HOOK_RCPT, &f);
	f.recipient = a->mailbox;
	f.domain = domain;
	f.section = config_domain_rule(cfg, domain, strlen(domain));
	return policy_allows(s, &f, SMTP_VERB_RCPT);
}

/* A well-formed recipient: relay control, the policy, then taken. */
static void rcpt_decide(struct session *s, struct smtp_addr *addr)
{
	if (addr->mailbox_len == addr->domain) {
		if (!postmaster_address(s, addr))
			return;
	} else if (!smtp_relay_allowed(cfg_of(s),
				       (const struct sockaddr *)&s->peer,
				       addr)) {
		deny(s, SMTP_VERB_RCPT, "554 5.7.1 <%s>: Relay access denied",
		     addr->mailbox);
		return;
	}
	if (!rcpt_policy_allows(s, addr))
		return;
	if (!tx_add_rcpt(s->tx, addr)) {
		reply(s, "451 4.3.0 Error: out of memory");
		return;
	}
	reply(s, "250 2.1.5 Ok");
}

static void do_rcpt(struct session *s, const struct smtp_cmd *cmd)
{
	struct transaction *tx = s->tx;
	struct smtp_addr addr;
	const char *bad = NULL;
	size_t bad_len = 0;
	enum smtp_path_status st;

	if (tx->n_rcpt >= cfg_of(s)->max_recipients) {
		reject(s, SMTP_VERB_RCPT, "452 4.5.3 Error: too many recipients");
		return;
	}
	st = smtp_parse_rcpt(cmd->arg, cmd->arg_len, tx->params.smtputf8,
			     &addr, &bad, &bad_len);
	if (st == SMTP_PATH_OK || st == SMTP_PATH_NO_DOMAIN)
		s->rcpt_to = addr.mailbox; /* named in a refusal's log line */
	if (st != SMTP_PATH_OK)
		reject_path(s, SMTP_VERB_RCPT, st, &addr, bad, bad_len);
	else
		rcpt_decide(s, &addr);
	s->rcpt_to = NULL;
}

/* The queue file's envelope block (envelope.c), from this transaction. */
static char *format_envelope(const struct session *s, size_t *len)
{
	const struct transaction *tx = s->tx;
	struct envelope e = {.arrival = (long long)time(NULL)};
	char **rcpts = calloc(tx->n_rcpt, sizeof(*rcpts));
	const char *r = tx->rcpts;
	char *text;

	if (rcpts == NULL)
		return NULL;
	for (unsigned i = 0; i < tx->n_rcpt; i++, r += strlen(r) + 1)
		rcpts[i] = (char *)r;
	memcpy(e.qid, tx->qid, sizeof(e.qid));
	snprintf(e.client, sizeof(e.client), "%s", s->peer_ip);
	e.helo = s->helo;
	e.sender = (char *)tx->sender.mailbox;
	e.rcpts = rcpts;
	e.n_rcpts = tx->n_rcpt;
	e.body = tx->params.body;
	e.smtputf8 = tx->params.smtputf8;
	text = envelope_format(&e, len);
	free(rcpts);
	return text;
}

/* Every part is bounded (HELO by the command line, the host name, one
 * address, the TLS names, the date), so the header fits a fixed buffer. */
enum { RECEIVED_MAX = 2 * SMTP_COMMAND_LINE_MAX + SMTP_PATH_MAX + 512 };

/* The "with" keyword (RFC 3848, RFC 6531): ESMTP after EHLO, with an S
 * under TLS; UTF8SMTP(S) for an SMTPUTF8 transaction; SMTP after HELO.
 * (No AUTH here, so never the A forms.) */
static const char *with_protocol(const struct session *s)
{
	if (!s->esmtp)
		return "SMTP";
	if (s->tx->params.smtputf8)
		return s->tls_active ? "UTF8SMTPS" : "UTF8SMTP";
	return s->tls_active ? "ESMTPS" : "ESMTP";
}

/* Postfix's comment on the TLS in use: "(using TLSv1.3 with cipher
 * TLS_AES_256_GCM_SHA384 (256/256 bits))", or "". */
static void tls_comment(const struct session *s, char *out, size_t len)
{
	struct tls *t = s->conn.tls;
	int bits;

	out[0] = '\0';
	if (!s->tls_active || t == NULL)
		return;
	bits = tls_conn_cipher_strength(t);
	snprintf(out, len, "\r\n\t(using %.32s with cipher %.64s (%d/%d bits))",
		 tls_conn_version(t), tls_conn_cipher(t), bits, bits);
}

static int format_received(const struct session *s, char *out, size_t len)
{
	const struct transaction *tx = s->tx;
	char date[64], rcpt[SMTP_PATH_MAX + 16] = "", tls[160];
	time_t now = time(NULL);
	struct tm tm;

	gmtime_r(&now, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
	if (tx->n_rcpt == 1)
		snprintf(rcpt, sizeof(rcpt), "\r\n\tfor <%s>", tx->rcpts);
	tls_comment(s, tls, sizeof(tls));
	return snprintf(out, len,
			"Received: from %s (unknown [%s])%s\r\n\tby %s "
			"(smtpgw) with %s id %s%s; %s\r\n",
			s->helo, s->peer_ip, tls, cfg_of(s)->hostname,
			with_protocol(s), tx->qid, rcpt, date);
}

static bool open_spool_file(struct session *s)
{
	struct transaction *tx = s->tx;
	char received[RECEIVED_MAX];
	char *envelope;
	size_t envelope_len;
	int n;

	if (!spool_file_create(s->srv->queue, tx->qid, &tx->file)) {
		spool_file_abort(s->srv->queue, &tx->file);
		return false;
	}
	tx->file_open = true;
	envelope = format_envelope(s, &envelope_len);
	n = format_received(s, received, sizeof(received));
	if (envelope == NULL || n < 0 || (size_t)n >= sizeof(received)) {
		free(envelope);
		return false;
	}
	spool_file_write(&tx->file, envelope, envelope_len);
	spool_file_write(&tx->file, received, (size_t)n);
	free(envelope);
	return !tx->file.failed;
}

static void do_data(struct session *s, const struct smtp_cmd *cmd)
{
	(void)cmd;
	if (s->pending_after > 0 && !s->sync_exempt) {
		sync_error(s, "DATA"); /* message text before the 354 */
		return;
	}
	if (!open_spool_file(s)) {
		reject(s, SMTP_VERB_DATA, "451 4.3.0 Error: queue file write error");
		tx_free(s);
		return;
	}
	smtp_data_init(&s->tx->dec);
	reply(s, "354 End data with <CR><LF>.<CR><LF>");
	enter_state(s, ST_DATA);
}

static void do_rset(struct session *s, const struct smtp_cmd *cmd)
{
	(void)cmd;
	if (!junk_allowed(s))
		return;
	tx_free(s);
	reply(s, "250 2.0.0 Ok");
}

static void do_noop(struct session *s, const struct smtp_cmd *cmd)
{
	(void)cmd;
	if (junk_allowed(s))
		reply(s, "250 2.0.0 Ok");
}

static void do_quit(struct session *s, const struct smtp_cmd *cmd)
{
	(void)cmd;
	reply(s, "221 2.0.0 Bye");
	close_after_reply(s, CLOSE_QUIT);
}

static void do_vrfy(struct session *s, const struct smtp_cmd *cmd)
{
	if (cmd->arg_len == 0) {
		reject(s, SMTP_VERB_VRFY, "501 5.5.4 Syntax: VRFY address");
		return;
	}
	if (junk_allowed(s))
		reply(s, "252 2.0.0 Send some mail, I'll try my best");
}

static void do_help(struct session *s, const struct smtp_cmd *cmd)
{
	(void)cmd;
	if (junk_allowed(s))
		reply(s, "214 2.0.0 See RFC 5321");
}

static void do_starttls(struct session *s, const struct smtp_cmd *cmd)
{
	if (cmd->arg_len > 0)
		reject(s, SMTP_VERB_STARTTLS, "501 5.5.4 Syntax: STARTTLS");
	else if (s->tls_active)
		reject(s, SMTP_VERB_STARTTLS,
		       "554 5.5.1 Error: TLS already active");
	else if (!starttls_offered(s))
		reject(s, SMTP_VERB_STARTTLS,
		       "502 5.5.1 Error: command not implemented");
	else if (s->tx != NULL)
		reject(s, SMTP_VERB_STARTTLS,
		       "503 5.5.1 Error: MAIL transaction in progress");
	else if (s->gen->tls == NULL)
		reject(s, SMTP_VERB_STARTTLS,
		       "454 4.7.0 TLS not available due to local problem");
	else {
		reply(s, "220 2.0.0 Ready to start TLS");
		enter_state(s, ST_TLS);
	}
}

static const struct command commands[SMTP_VERB_COUNT] = {
	[SMTP_VERB_HELO] = {F_PRE_TLS, do_helo, NULL},
	[SMTP_VERB_EHLO] = {F_PRE_TLS, do_ehlo, NULL},
	[SMTP_VERB_MAIL] = {F_NEED_HELO | F_NO_TX, do_mail, NULL},
	[SMTP_VERB_RCPT] = {F_NEED_MAIL, do_rcpt, NULL},
	[SMTP_VERB_DATA] = {F_NEED_RCPT | F_NO_ARG, do_data,
			    "501 5.5.4 Syntax: DATA"},
	[SMTP_VERB_RSET] = {F_NO_ARG, do_rset, "501 5.5.4 Syntax: RSET"},
	[SMTP_VERB_NOOP] = {F_PRE_TLS, do_noop, NULL},
	[SMTP_VERB_QUIT] = {F_PRE_TLS, do_quit, NULL},
	[SMTP_VERB_VRFY] = {0, do_vrfy, NULL},
	[SMTP_VERB_HELP] = {F_PRE_TLS, do_help, NULL},
	[SMTP_VERB_STARTTLS] = {F_PRE_TLS, do_starttls, NULL},
};

/* The flags of the command table, checked in one place. */
static bool command_allowed(struct session *s, enum smtp_verb verb,
			    const struct smtp_cmd *cmd)
{
	unsigned flags = commands[verb].flags;

	if (!(flags & F_PRE_TLS) && s->level >= TLS_LEVEL_ENCRYPT &&
	    !s->tls_active)
		reject(s, verb, "530 5.7.0 Must issue a STARTTLS command first");
	else if ((flags & F_NEED_HELO) && s->helo == NULL)
		reject(s, verb, "503 5.5.1 Error: send HELO/EHLO first");
	else if ((flags & F_NO_TX) && s->tx != NULL)
		reject(s, verb, "503 5.5.1 Error: nested MAIL command");
	else if ((flags & F_NEED_MAIL) && s->tx == NULL)
		reject(s, verb, "503 5.5.1 Error: need MAIL command");
	else if ((flags & F_NEED_RCPT) && s->tx == NULL)
		reject(s, verb, "503 5.5.1 Error: need RCPT command");
	else if ((flags & F_NEED_RCPT) && s->tx->n_rcpt == 0)
		deny(s, verb, "554 5.5.1 Error: no valid recipients");
	else if ((flags & F_NO_ARG) && cmd->arg_len > 0)
		reject(s, verb, "%s", commands[verb].no_arg_reply);
	else
		return true;
	return false;
}

static void handle_command(struct session *s, const char *line, size_t len)
{
	struct smtp_cmd cmd;
	enum smtp_cmd_status st = smtp_parse_command(line, len, &cmd);

	s->commands++;
	if (s->tls_refusal != NULL) {
		reject(s, cmd.verb, "421 4.7.1 %s Error: %s", cfg_of(s)->hostname,
		       s->tls_refusal);
		close_after_reply(s, CLOSE_TLS);
		return;
	}
	switch (st) {
	case SMTP_CMD_OK:
		break;
	case SMTP_CMD_EMPTY:
	case SMTP_CMD_BAD_OCTETS:
		reject(s, SMTP_VERB_UNKNOWN, "500 5.5.2 Error: bad syntax");
		return;
	case SMTP_CMD_UNKNOWN:
		reject(s, SMTP_VERB_UNKNOWN,
		       "502 5.5.2 Error: command not recognized");
		return;
	case SMTP_CMD_SYNTAX:
		reject(s, cmd.verb, cmd.verb == SMTP_VERB_MAIL
					    ? "501 5.5.4 Syntax: MAIL FROM:<address>"
					    : "501 5.5.4 Syntax: RCPT TO:<address>");
		return;
	}
	s->last_verb = cmd.verb;
	if ((cmd.verb == SMTP_VERB_HELO || cmd.verb == SMTP_VERB_EHLO) &&
	    s->pending_after > 0 && !s->sync_exempt) {
		/* EHLO/HELO end a pipelined group (RFC 2920 3.1). */
		sync_error(s, smtp_verb_name(cmd.verb));
		return;
	}
	if ((cmd.verb == SMTP_VERB_HELO || cmd.verb == SMTP_VERB_EHLO) &&
	    cmd.arg_len == 0) {
		reject(s, cmd.verb, "501 5.5.4 Syntax: %s hostname",
		       smtp_verb_name(cmd.verb));
		return;
	}
	if (command_allowed(s, cmd.verb, &cmd))
		commands[cmd.verb].proceed(s, &cmd);
}

/* ---- input ------------------------------------------------------------ */

/* One command line from the input buffer; returns octets consumed, or 0
 * when the line is not complete yet. */
static size_t take_command_line(struct session *s, const char *in, size_t len)
{
	const char *lf = memchr(in, '\n', len);
	size_t line_len;

	if (lf == NULL) {
		/* Too long already: drop it now, answer when it ends. */
		if (len >= SMTP_COMMAND_LINE_MAX || s->discarding) {
			s->discarding = true;
			return len;
		}
		return 0;
	}
	line_len = (size_t)(lf - in) + 1;
	s->ctimer = CT_NONE; /* the next line has a deadline of its own */
	s->pending_after = len - line_len;
	if (s->discarding || line_len > SMTP_COMMAND_LINE_MAX) {
		s->discarding = false;
		s->commands++;
		reject(s, SMTP_VERB_UNKNOWN,
		       "500 5.5.2 Error: command line too long");
	} else if (line_len < 2 || lf[-1] != '\r') {
		s->commands++;
		reject(s, SMTP_VERB_UNKNOWN,
		       "500 5.5.2 Error: bare <LF> received");
	} else {
		handle_command(s, in, line_len - 2);
	}
	return line_len;
}

static const char *data_verdict(const struct session *s)
{
	const struct smtp_data_decoder *d = &s->tx->dec;
	uint64_t limit = cfg_of(s)->max_message_size;

	if (limit > 0 && d->size > limit)
		return "552 5.3.4 Message size exceeds fixed limit";
	if (d->bare_lf)
		return "550 5.5.2 Error: bare <LF> received";
	if (d->bare_cr)
		return "550 5.5.2 Error: bare <CR> received";
	if (d->long_line)
		return "550 5.5.2 Error: message line longer than 1000 octets";
	if (d->nul)
		return "550 5.6.0 Error: message contains NUL";
	if (s->tx->file.failed)
		return "451 4.3.0 Error: queue file write error";
	return NULL;
}

static void on_committed(void *owner, bool ok, const char *qid);

static void end_of_data(struct session *s)
{
	struct transaction *tx = s->tx;
	const char *verdict = data_verdict(s);

	if (verdict != NULL) {
		/* the size limit is a decision; the rest is broken input */
		if (strstr(verdict, " 5.3.4 ") != NULL)
			deny(s, SMTP_VERB_DATA, "%s", verdict);
		else
			reject(s, SMTP_VERB_DATA, "%s", verdict);
		tx_free(s);
		if (s->state == ST_DATA)
			enter_state(s, ST_COMMAND);
		return;
	}
	tx->file_open = false;
	tx->commit = queue_commit(s->srv->queue, &tx->file, on_committed, s);
	if (tx->commit == NULL) {
		reject(s, SMTP_VERB_DATA, "451 4.3.0 Error: queue file write error");
		tx_free(s);
		if (s->state == ST_DATA)
			enter_state(s, ST_COMMAND);
		return;
	}
	enter_state(s, ST_SYNC);
}

static size_t take_data(struct session *s, const char *in, size_t len)
{
	struct transaction *tx = s->tx;
	uint64_t limit = cfg_of(s)->max_message_size;
	size_t out_len, used;
	enum smtp_data_status st;

	st = smtp_data_feed(&tx->dec, in, len, data_scratch, &out_len, &used);
	/* Past the limit, keep reading to the end but stop writing. */
	if (limit == 0 || tx->dec.size <= limit)
		spool_file_write(&tx->file, data_scratch, out_len);
	tx->data_bytes += used;
	if (st == SMTP_DATA_END)
		end_of_data(s);
	return used;
}

static void process_input(struct session *s)
{
	size_t pregreet;

	s->stalled = false;
	conn_input(&s->conn, &pregreet);
	if (s->state == ST_GREET && pregreet > 0) {
		sync_error(s, "greeting"); /* talked before the banner */
		return;
	}
	while (s->state == ST_COMMAND || s->state == ST_DATA) {
		size_t len, used;
		const char *in = conn_input(&s->conn, &len);

		if (len == 0)
			break;
		if (conn_output_room(&s->conn) < REPLY_RESERVE) {
			s->stalled = true;
			break;
		}
		if (s->state == ST_DATA)
			used = take_data(s, in, len);
		else
			used = take_command_line(s, in, len);
		if (used == 0)
			break;
		conn_consume(&s->conn, used);
	}
	if (s->state == ST_COMMAND)
		arm_command_timer(s);
}

/* ---- lifecycle -------------------------------------------------------- */

static const char *reason_name(enum close_reason why)
{
	switch (why) {
	case CLOSE_NONE:
		return "none";
	case CLOSE_QUIT:
		return "quit";
	case CLOSE_EOF:
		return "lost_connection";
	case CLOSE_ERROR:
		return "io_error";
	case CLOSE_TIMEOUT:
		return "timeout";
	case CLOSE_ERRORS:
		return "too_many_errors";
	case CLOSE_SHUTDOWN:
		return "shutdown";
	case CLOSE_TLS:
		return "tls";
	case CLOSE_POLICY:
		return "policy";
	case CLOSE_SYNC:
		return "sync_error";
	case CLOSE_JUNK:
		return "too_many_junk_commands";
	}
	return "none";
}

static const char *state_name(enum session_state st)
{
	switch (st) {
	case ST_GREET:
		return "GREET";
	case ST_COMMAND:
		return "COMMAND";
	case ST_DATA:
		return "DATA";
	case ST_SYNC:
		return "SYNC";
	case ST_TLS:
		return "TLS";
	case ST_CLOSING:
		return "CLOSING";
	}
	return "?";
}

static void update_stress(struct server *srv);

static void session_destroy(struct session *s)
{
	struct server *srv = s->srv;
	struct logline l;

	log_session(&l, s, LOG_INFO, "disconnect");
	log_kv(&l, "client", "%s:%u", s->peer_ip, s->peer_port);
	log_kv(&l, "reason", "%s", reason_name(s->close_reason));
	log_kv(&l, "state", "%s", state_name(s->state));
	log_kv(&l, "commands", "%u", s->commands);
	log_kv(&l, "errors", "%u", s->errors);
	log_kv(&l, "messages", "%u", s->messages);
	log_kv(&l, "after", "%s", s->commands > 0
					  ? smtp_verb_name(s->last_verb)
					  : "CONNECT");
	log_end(&l);
	tx_free(s);
	conn_stop(&s->conn);
	listener_client_gone(srv->listener, s->ticket);
	generation_release(s->gen);
	if (s->prev != NULL)
		s->prev->next = s->next;
	else
		srv->sessions = s->next;
	if (s->next != NULL)
		s->next->prev = s->prev;
	free(s->helo);
	free(s);
	srv->n_sessions--;
	update_stress(srv);
	if (srv->n_sessions == 0 && srv->draining)
		ev_break(srv->loop, EVBREAK_ALL);
}

/* The banner (or the connect policy's refusal). */
static void greet(struct session *s)
{
	enter_state(s, ST_COMMAND);
	if (policy_connect(s))
		reply(s, "220 %s ESMTP smtpgw", cfg_of(s)->hostname);
}

/* ---- stress ------------------------------------------------------------ */

/* A session waiting for a command gets the wait of the current mode,
 * counted from when it began: under stress the idle go first. */
static void rearm_idle(struct session *s)
{
	if (s->state == ST_COMMAND && s->ctimer == CT_WAIT)
		arm_at(s, s->wait_start + command_timeout(s));
}

/* Stress mode (Postfix's): on above STRESS_ON of max_connections, off
 * again at STRESS_OFF or below, logged once per transition. */
static void update_stress(struct server *srv)
{
	double load = listener_load(srv->listener);
	bool on = srv->stress ? load > STRESS_OFF : load > STRESS_ON;
	struct logline l;

	if (on == srv->stress)
		return;
	srv->stress = on;
	log_begin(&l, on ? LOG_WARN : LOG_INFO, "stress");
	log_kv(&l, "state", "%s", on ? "on" : "off");
	log_kv(&l, "sessions", "%u", srv->n_sessions);
	log_kv(&l, "load", "%.2f", load);
	log_end(&l);
	for (struct session *s = srv->sessions; s != NULL; s = s->next)
		rearm_idle(s);
}

/* The load also moves with other workers' sessions (listener_load):
 * looked at once a second while this worker has sessions. */
static void stress_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct server *srv = w->data;

	(void)revents;
	update_stress(srv);
	if (srv->n_sessions == 0)
		ev_timer_stop(loop, w);
}

static void watch_load(struct server *srv)
{
	if (ev_is_active(&srv->stress_timer))
		return;
	ev_timer_init(&srv->stress_timer, stress_tick, 1., 1.);
	srv->stress_timer.data = srv;
	ev_timer_start(srv->loop, &srv->stress_timer);
}

/* Plaintext that followed STARTTLS in the same read must never count as
 * commands of the TLS session (CVE-2011-0411): drop it and say so. */
static bool begin_handshake(struct session *s)
{
	struct logline l;
	size_t len;

	conn_input(&s->conn, &len);
	if (len > 0) {
		log_session(&l, s, LOG_WARN, "starttls_pipelining");
		log_kv(&l, "client", "%s", s->peer_ip);
		log_kv(&l, "discarded", "%zu", len);
		log_end(&l);
		conn_consume(&s->conn, len);
	}
	if (conn_starttls(&s->conn, tls_server_ctx(s->gen->tls)))
		return true;
	log_session(&l, s, LOG_WARN, "tls_failed");
	log_kv(&l, "client", "%s", s->peer_ip);
	log_kv(&l, "reason", "%s", conn_tls_error(&s->conn));
	log_end(&l);
	return false;
}

/* The end of every event: write what is queued, and destroy the session if
 * it is finished. Returns false when it was destroyed. */
static bool settle(struct session *s)
{
	for (;;) {
		if (!conn_flush(&s->conn)) {
			if (s->close_reason == CLOSE_NONE)
				s->close_reason = CLOSE_ERROR;
			session_destroy(s);
			return false;
		}
		if (conn_output_pending(&s->conn))
			return true; /* CONN_DRAINED resumes the input */
		if (s->state == ST_CLOSING) {
			session_destroy(s);
			return false;
		}
		if (s->state == ST_TLS && s->conn.tls_state == CONN_TLS_OFF) {
			if (begin_handshake(s))
				return true;
			s->close_reason = CLOSE_ERROR;
			session_destroy(s);
			return false;
		}
		if (!s->stalled)
			return true;
		process_input(s); /* the flush made room: carry on */
	}
}

/* Postfix's "timeout after VERB": the stage names the deadline that
 * passed (command, command_line, data, data_rate, tls, closing). */
static void log_timeout(struct session *s, const char *stage)
{
	struct logline l;

	log_session(&l, s, LOG_INFO, "timeout");
	log_kv(&l, "stage", "%s", stage);
	log_kv(&l, "after", "%s", s->commands > 0
					  ? smtp_verb_name(s->last_verb)
					  : "CONNECT");
	log_kv(&l, "client", "%s", s->peer_ip);
	if (s->state == ST_DATA)
		log_kv(&l, "bytes", "%llu",
		       (unsigned long long)s->tx->data_bytes);
	if (s->srv->stress)
		log_kv(&l, "stress", "on");
	log_end(&l);
}

static void on_timeout(struct session *s, const char *stage)
{
	char line[300];

	log_timeout(s, stage);
	snprintf(line, sizeof(line), "421 4.4.2 %s Error: timeout exceeded",
		 cfg_of(s)->hostname);
	send_line(s, line);
	close_after_reply(s, CLOSE_TIMEOUT);
}

/* The DATA timer: the end of the whole phase, or the end of a rate window
 * (the first one is grace). */
static void on_data_timer(struct session *s)
{
	const struct config *cfg = cfg_of(s);
	struct transaction *tx = s->tx;
	double need = (double)cfg->min_data_rate * cfg->data_rate_window;

	if (now_of(s) >= tx->data_end - 0.001) {
		on_timeout(s, "data");
		return;
	}
	if (tx->windows > 0 &&
	    (double)(tx->data_bytes - tx->window_bytes) < need) {
		on_timeout(s, "data_rate");
		return;
	}
	tx->windows++;
	tx->window_bytes = tx->data_bytes;
	tx->window_end += cfg->data_rate_window;
	arm_data_timer(s);
}

static void on_session_timer(struct session *s)
{
	switch (s->state) {
	case ST_GREET:
		greet(s); /* the pause is over and the client kept quiet */
		break;
	case ST_COMMAND:
		on_timeout(s, s->ctimer == CT_LINE ? "command_line" : "command");
		break;
	case ST_DATA:
		on_data_timer(s);
		break;
	case ST_SYNC:
	case ST_TLS:
	case ST_CLOSING:
		break;
	}
}

static void log_tls(struct session *s, const char *why)
{
	struct tls *t = s->conn.tls;
	const char *sni = tls_conn_servername(t);
	struct logline l;

	log_session(&l, s, LOG_INFO, "tls");
	log_kv(&l, "client", "%s", s->peer_ip);
	log_kv(&l, "version", "%s", tls_conn_version(t));
	log_kv(&l, "cipher", "%s", tls_conn_cipher(t));
	log_kv(&l, "bits", "%d", tls_conn_cipher_strength(t));
	log_kv(&l, "sni", "%s", sni ? sni : "");
	log_kv(&l, "peer", "%s", tls_peer_name(s->tls_peer));
	if (s->tls_peer != TLS_PEER_NONE) {
		log_kv(&l, "peer_subject", "%s", tls_peer_cert_subject(t));
		log_kv(&l, "peer_issuer", "%s", tls_peer_cert_issuer(t));
	}
	if (s->tls_peer == TLS_PEER_UNTRUSTED)
		log_kv(&l, "peer_reason", "%s", why);
	log_kv(&l, "resumed", "%s",
	       tls_conn_session_resumed(t) == 1 ? "yes" : "no");
	log_kv(&l, "msg", "%s TLS connection established from %s: %s with "
			  "cipher %s",
	       tls_peer_name(s->tls_peer), s->peer_ip, tls_conn_version(t),
	       tls_conn_cipher(t));
	log_end(&l);
}

/* TLS is up: the session starts over (RFC 3207 4.2), and under verify a
 * client without a trusted certificate goes no further, as in Postfix. */
static void on_tls_ready(struct session *s)
{
	char why[200];

	s->tls_active = true;
	stats_add(STAT_SESSIONS_TLS + s->level);
	s->tls_peer = tls_server_check_peer(s->gen->tls, s->conn.tls, why,
					    sizeof(why));
	log_tls(s, why);
	free(s->helo);
	s->helo = NULL;
	s->esmtp = false;
	tx_free(s);
	/* Answered to the client's next command rather than at once: a reply
	 * sent unasked is lost to a TCP reset when its EHLO crosses our close. */
	if (s->level == TLS_LEVEL_VERIFY && s->tls_peer != TLS_PEER_TRUSTED)
		s->tls_refusal = s->tls_peer == TLS_PEER_NONE
					 ? "No client certificate presented"
					 : "Client certificate not trusted";
	enter_state(s, ST_COMMAND);
}

static void on_tls_failed(struct session *s)
{
	struct logline l;

	log_session(&l, s, LOG_WARN, "tls_failed");
	log_kv(&l, "client", "%s", s->peer_ip);
	log_kv(&l, "reason", "%s", conn_tls_error(&s->conn));
	log_end(&l);
	stats_add(STAT_TLS_FAILED);
	s->close_reason = CLOSE_TLS;
	session_destroy(s);
}

static bool on_conn_event(struct conn *c, enum conn_event ev, void *owner)
{
	struct session *s = owner;

	(void)c;
	switch (ev) {
	case CONN_DATAIN:
	case CONN_DRAINED:
		process_input(s);
		break;
	case CONN_TIMEOUT:
		if (s->state == ST_CLOSING || s->state == ST_TLS) {
			/* It never read its last reply, or never finished the
			 * handshake: nothing can be said to it any more. */
			log_timeout(s, s->state == ST_TLS ? "tls" : "closing");
			s->close_reason = CLOSE_TIMEOUT;
			session_destroy(s);
			return false;
		}
		on_session_timer(s);
		break;
	case CONN_TLSREADY:
		on_tls_ready(s);
		break;
	case CONN_TLSFAIL:
		on_tls_failed(s);
		return false;
	case CONN_EOF:
	case CONN_ERROR:
		if (s->close_reason == CLOSE_NONE)
			s->close_reason = ev == CONN_EOF ? CLOSE_EOF : CLOSE_ERROR;
		session_destroy(s);
		return false;
	}
	return settle(s);
}

static void on_committed(void *owner, bool ok, const char *qid)
{
	struct session *s = owner;
	struct logline l;

	s->tx->commit = NULL;
	if (!ok) {
		reject(s, SMTP_VERB_DATA, "451 4.3.0 Error: queue file write error");
	} else {
		log_session(&l, s, LOG_INFO, "queued");
		log_kv(&l, "client", "%s", s->peer_ip);
		log_kv(&l, "from", "<%s>", s->tx->sender.mailbox);
		log_kv(&l, "nrcpt", "%u", s->tx->n_rcpt);
		log_kv(&l, "size", "%llu", (unsigned long long)s->tx->dec.size);
		log_kv(&l, "proto", "%s", s->esmtp ? "ESMTP" : "SMTP");
		log_kv(&l, "helo", "%s", s->helo ? s->helo : "");
		log_kv(&l, "tls", "%s", s->tls_active
					   ? tls_conn_version(s->conn.tls)
					   : "none");
		log_end(&l);
		stats_add(STAT_RECEIVED);
		s->messages++;
		s->junk = 0; /* a session that delivers is not idling */
		reply(s, "250 2.0.0 Ok: queued as %s", qid);
		s->srv->queued(s->srv, qid);
	}
	tx_free(s);
	if (s->srv->draining) {
		close_after_reply(s, CLOSE_SHUTDOWN);
	} else if (s->state == ST_SYNC) {
		enter_state(s, ST_COMMAND);
		process_input(s); /* commands pipelined after the dot */
	}
	settle(s);
}

void smtp_session_start(struct server *srv, int fd,
			const struct sockaddr_storage *peer,
			const struct sockaddr_storage *via, uint32_t ticket)
{
	struct session *s = calloc(1, sizeof(*s));
	struct logline l;

	if (s == NULL) {
		listener_client_gone(srv->listener, ticket);
		close(fd);
		return;
	}
	s->srv = srv;
	s->gen = generation_retain(srv->gen);
	/* Unique across the workers of a run: the worker's slot is the
	 * remainder (a restarted worker counts again from the start). */
	s->sid = ++srv->next_sid * SID_SLOTS + srv->slot;
	s->peer = *peer;
	s->ticket = ticket;
	sockaddr_ip_text(peer, s->peer_ip, sizeof(s->peer_ip));
	s->peer_port = sockaddr_port(peer);
	s->next = srv->sessions;
	if (s->next != NULL)
		s->next->prev = s;
	srv->sessions = s;
	srv->n_sessions++;
	conn_start(&s->conn, srv->loop, fd, on_conn_event, s);
	s->conn.deadline = true; /* input never moves a session's deadlines */
	s->sync_exempt = config_is_sync_exempt(
		cfg_of(s), (const struct sockaddr *)&s->peer);
	log_session(&l, s, LOG_INFO, "connect");
	log_kv(&l, "client", "%s:%u", s->peer_ip, s->peer_port);
	if (via != NULL) {
		char ip[64];

		sockaddr_ip_text(via, ip, sizeof(ip));
		log_kv(&l, "proxy", "%s:%u", ip, sockaddr_port(via));
	}
	log_end(&l);
	stats_add(STAT_CONNECTIONS);
	update_stress(srv);
	watch_load(srv);
	if (!s->sync_exempt && cfg_of(s)->greet_pause > 0)
		enter_state(s, ST_GREET); /* greet() once it is over */
	else
		greet(s);
	settle(s);
}

void smtp_server_drain(struct server *srv)
{
	struct session *s = srv->sessions;
	char line[300];

	srv->draining = true;
	ev_timer_stop(srv->loop, &srv->stress_timer);
	snprintf(line, sizeof(line), "421 4.3.2 %s Service shutting down",
		 srv->gen->cfg->hostname);
	while (s != NULL) {
		struct session *next = s->next;

		/* A message being synced gets its 250 first (on_committed);
		 * nothing can be said in the middle of a handshake. */
		if (s->state == ST_TLS) {
			s->close_reason = CLOSE_SHUTDOWN;
			session_destroy(s);
		} else if (s->state != ST_SYNC && s->state != ST_CLOSING) {
			send_line(s, line);
			close_after_reply(s, CLOSE_SHUTDOWN);
			settle(s);
		}
		s = next;
	}
	if (srv->n_sessions == 0)
		ev_break(srv->loop, EVBREAK_ALL);
}

void smtp_server_destroy_all(struct server *srv)
{
	ev_timer_stop(srv->loop, &srv->stress_timer);
	while (srv->sessions != NULL) {
		srv->sessions->close_reason = CLOSE_SHUTDOWN;
		session_destroy(srv->sessions);
	}
}
