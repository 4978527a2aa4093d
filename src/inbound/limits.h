/*
 * limits: the connection accounting every inbound worker shares. One
 * fixed-size table in an anonymous shared mapping, made by limits_new
 * before the workers are forked and inherited by them: a slot per admitted
 * connection (which worker holds it, which client prefix) and a client
 * table per prefix (connections held, connection rate). It decides
 * admissions and nothing else: it never touches a socket, never logs a
 * refusal and never grows.
 */
#ifndef SMTPGW_LIMITS_H
#define SMTPGW_LIMITS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct config;
struct limits;

/* The anvil time unit of the connection rate limit (Postfix's
 * anvil_rate_time_unit). */
#define LIMITS_RATE_UNIT_MS 60000u

enum limits_verdict {
	LIMITS_OK,
	LIMITS_TOTAL,      /* max_connections reached */
	LIMITS_RESERVED,   /* only the relay_networks reserve is left */
	LIMITS_CLIENT,     /* max_connections_per_ip for this prefix */
	LIMITS_RATE,       /* client_connection_rate_limit in this unit */
	LIMITS_TABLE_FULL, /* no room in the client table near its hash */
};

/* One admission question; the listener fills it from the generation's
 * config, so a reload changes the limits but not the table's size. */
struct limits_request {
	const struct sockaddr *peer;
	/* relay_networks: may use the reserve, no per-client limits
	 * (Postfix's smtpd_client_event_limit_exceptions) */
	bool exempt;
	unsigned max_total;
	unsigned reserved;
	unsigned max_per_client;
	unsigned rate_limit; /* connections per LIMITS_RATE_UNIT_MS; 0 = off */
	unsigned prefix_v4, prefix_v6;
	uint64_t now_ms; /* CLOCK_MONOTONIC, the same clock in every process */
};

/* Before fork: a table of cfg->max_connections slots. NULL and err on
 * failure. The table lives until the last process holding it exits. */
struct limits *limits_new(const struct config *cfg, char *err, size_t err_len);
void limits_free(struct limits *l);

/* After fork, in a worker: the slot number the master gave it; every
 * connection it admits from then on is recorded under that number. */
void limits_set_worker(struct limits *l, unsigned worker);

/* Admits a connection (filling *ticket, to be handed back to
 * limits_release when it closes) or says why not. */
enum limits_verdict limits_admit(struct limits *l,
                                 const struct limits_request *rq,
                                 uint32_t *ticket);
void limits_release(struct limits *l, uint32_t ticket);

/* The master, when worker `worker` has died: frees every slot it held.
 * Returns how many. */
unsigned limits_forget_worker(struct limits *l, unsigned worker);

/* Connections admitted across all workers, and the table's size. */
unsigned limits_in_use(const struct limits *l);
unsigned limits_capacity(const struct limits *l);

/* Pure helpers, unit-tested. */

/* The client key of an address: IPv4 (and v4-mapped IPv6) as ::ffff:a.b.c.d
 * with all but the first prefix_v4 address bits zero; IPv6 with all but the
 * first prefix_v6 bits zero. */
void limits_client_key(const struct sockaddr *sa, unsigned prefix_v4,
                       unsigned prefix_v6, uint8_t key[16]);
/* "127.0.1.0/24", "2001:db8::/64". */
void limits_key_text(const uint8_t key[16], unsigned prefix_v4,
                     unsigned prefix_v6, char *out, size_t len);
/* Counts one event at now_ms in a fixed window of unit_ms that opens at the
 * first event after the previous window closed (as anvil does); returns the
 * events in the current window, this one included (saturating). */
uint32_t limits_rate_tick(uint64_t *start_ms, uint32_t *count, uint64_t now_ms,
                          uint64_t unit_ms);
/* Slots an internet client may not take: "N" or "N%" of max_connections,
 * never all of them. */
unsigned limits_reserved(unsigned max_connections, unsigned value,
                         bool percent);

#endif
