/*
 * config: gateway.ini, read with inih into an immutable struct config.
 * Loading either yields a complete, validated config or an error naming
 * FILE:LINE; a running gateway is never left with half a config. Nothing
 * here opens sockets or touches the spool.
 */
#ifndef SMTPGW_CONFIG_H
#define SMTPGW_CONFIG_H

#include "proto/log_format.h"
#include "proto/next_hop.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct cidr {
	sa_family_t family;
	uint8_t addr[16];
	unsigned prefix;
};

struct cidr_list {
	struct cidr *nets;
	size_t n;
};

struct listen_addr {
	struct sockaddr_storage ss;
	socklen_t len;
	char text[80];
};

enum tls_level {
	TLS_LEVEL_NONE = 0,
	TLS_LEVEL_MAY,
	TLS_LEVEL_ENCRYPT,
	TLS_LEVEL_VERIFY,
	TLS_LEVEL_DANE,	     /* outbound only: DANE when the MX host has
				secure TLSA records, else as may */
	TLS_LEVEL_DANE_ONLY, /* outbound only: DANE or defer */
	TLS_LEVEL_STS,	     /* outbound only: as the destination's MTA-STS
				policy says (enforce: verify, and only its
				MX hosts; otherwise may) */
};

/* The last level, for tables and loops. */
#define TLS_LEVEL_LAST TLS_LEVEL_STS

/* "none", "may", "encrypt", "verify", "dane", "dane-only", "sts" (any
 * case). */
const char *tls_level_name(enum tls_level level);
bool tls_level_parse(const char *text, enum tls_level *out);
/* dane, dane-only and sts: levels of outbound delivery only. */
bool tls_level_outbound_only(enum tls_level level);

/* [tls] ask_client_cert: auto asks for client certificates when the
 * configuration or the policy may need one (see generation.c). */
enum ask_client_cert {
	ASK_CLIENT_CERT_AUTO,
	ASK_CLIENT_CERT_YES,
	ASK_CLIENT_CERT_NO,
};

/* A [domain:NAME] section: NAME is lower case; ".NAME" covers subdomains.
 * `tls` is the outbound level for NAME, `tls_in` (encrypt or verify) what
 * mail addressed to NAME needs on the way in; the stock scripts read both. */
struct domain_rule {
	char *name;
	bool has_tls;
	enum tls_level tls;
	bool has_tls_in;
	enum tls_level tls_in;
	char *next_hop; /* as written ("[host]:port", ...), or NULL */
	struct next_hop hop; /* next_hop parsed, when next_hop != NULL */
	char *tls_name; /* the name verify expects, and the SNI; or NULL */
};

/* A [tls] certificate = CERTFILE KEYFILE line (absolute paths). */
struct cert_file_pair {
	char *crt;
	char *key;
	unsigned line;
};

/* Where mail for a domain goes (config_route). */
enum route_source {
	ROUTE_MX,	 /* the MX records of the recipient domain */
	ROUTE_NEXT_HOP,	 /* its [domain:...] next_hop */
	ROUTE_RELAYHOST, /* [delivery] relayhost */
};

struct route {
	enum route_source source;
	const struct next_hop *hop; /* NULL for ROUTE_MX */
	const char *tls_name;	    /* the section's tls_name, or NULL */
	const struct domain_rule *rule; /* the [domain:...] section, or NULL */
};

enum { CONFIG_MAX_KEYS = 128 };

struct config {
	char *path;
	unsigned key_line[CONFIG_MAX_KEYS]; /* per key: its line, 0 = default */
	char *hostname;
	char *spool;
	char *user;	  /* children run as this user when started as root */
	unsigned workers; /* inbound worker processes; 0: one per CPU */
	double drain_timeout;	 /* SIGTERM / retired workers: at most this */
	double watchdog_timeout; /* a child whose loop is stuck this long dies */
	struct listen_addr *listen;
	size_t n_listen;
	char **relay_domains;
	size_t n_relay_domains;
	struct cidr *relay_networks;
	size_t n_relay_networks;
	uint64_t max_message_size;
	unsigned max_recipients;
	unsigned max_connections;
	unsigned max_connections_per_ip; /* per client prefix */
	unsigned client_prefix_v4;	 /* bits of a client's IPv4 prefix */
	unsigned client_prefix_v6;	 /* bits of a client's IPv6 prefix */
	unsigned client_connection_rate_limit; /* per minute; 0 = off */
	unsigned reserved_connections; /* for relay_networks clients ... */
	bool reserved_percent;	       /* ... as a % of max_connections */
	unsigned max_errors;
	double command_timeout; /* waiting for a command; one command line */
	double data_timeout;	/* the whole DATA phase, 354 to the dot */
	double tls_timeout;
	unsigned min_data_rate; /* bytes/s inside DATA; 0: no minimum */
	double data_rate_window; /* grace after 354, then measuring window */
	unsigned junk_command_limit;
	double stress_timeout; /* command_timeout under stress */
	double greet_pause;    /* before the banner; 0: none */
	bool smtp_sync;
	struct cidr_list sync_exempt_networks;
	bool sync_exempt_relay; /* "relay_networks" in sync_exempt_networks */
	char *postmaster; /* where <postmaster> goes; NULL: refused */
	/* load balancers whose connections start with a PROXY header */
	struct cidr_list proxy_networks;
	double proxy_timeout; /* for that header to arrive */
	/* [tls] */
	char *cert_dir;
	struct cert_file_pair *certificates; /* [tls] certificate lines */
	size_t n_certificates;
	char *ca_file;
	enum tls_level server_level;
	char *protocols;
	char *ciphers;
	enum ask_client_cert ask_client_cert;
	double session_lifetime; /* resumable sessions; 0: none */
	/* [policy] */
	char *policy_script; /* NULL: no script, built-in defaults */
	unsigned policy_max_instructions;
	double policy_max_time;
	uint64_t policy_max_memory; /* bytes, per Lua state */
	/* [delivery] */
	unsigned delivery_max_connections;
	unsigned delivery_max_per_destination;
	double retry_min;
	double retry_max;
	double max_queue_lifetime;
	double delivery_timeout;
	unsigned reuse_max_messages; /* transactions per connection; 1: no
					reuse */
	double reuse_idle_time;	     /* a parked connection's wait; 0: none
					are kept */
	bool has_relayhost;
	struct next_hop relayhost; /* the default route, when has_relayhost */
	unsigned active_limit; /* messages the queue manager holds in memory */
	/* [dns] resolver: "IP" or "IP@PORT" each; none → /etc/resolv.conf */
	char **dns_resolvers;
	size_t n_dns_resolvers;
	/* [dns] trust_anchor: DS/DNSKEY records; NULL ("none"): answers are
	 * not validated, all insecure */
	char *dns_trust_anchor;
	/* [metrics] listen: the Prometheus endpoint; off when !has_metrics */
	bool has_metrics;
	struct listen_addr metrics_listen;
	/* [log] */
	enum log_style log_format;
	bool log_to_syslog;	 /* destination = syslog (else stderr) */
	int log_facility;	 /* RFC 5424 number */
	char *log_syslog_name;	 /* "": smtpgw, or postfix in that format */
	char *log_syslog_socket;
	/* [domain:NAME] */
	struct domain_rule *domains;
	size_t n_domains;
};

/* Returns NULL and fills err ("FILE:LINE: message") on any error. */
struct config *config_load(const char *path, char *err, size_t err_len);
void config_free(struct config *cfg);

bool config_is_relay_domain(const struct config *cfg, const char *domain,
			    size_t len);
bool config_is_relay_client(const struct config *cfg,
			    const struct sockaddr *addr);

/* Does this client skip the greet pause and the SMTP synchronization
 * checks (smtp_sync = no, or the client is in sync_exempt_networks)? */
/* Must this peer's connection start with a PROXY protocol header? */
bool config_is_proxy_peer(const struct config *cfg,
			  const struct sockaddr *addr);

bool config_is_sync_exempt(const struct config *cfg,
			   const struct sockaddr *addr);

/* The [domain:...] section for a recipient domain: the exact name, else the
 * longest ".parent" that covers it; NULL when none does. */
const struct domain_rule *config_domain_rule(const struct config *cfg,
					     const char *domain, size_t len);

/* Where mail for `domain` goes: its section's next_hop, else relayhost,
 * else its own MX records (Postfix: transport, relayhost, MX). */
void config_route(const struct config *cfg, const char *domain, size_t len,
		  struct route *out);

/* The line of `name` in [section], or 0 when it was not in the file (its
 * default applies). */
unsigned config_key_line(const struct config *cfg, const char *section,
			 const char *name);

/* "FILE:LINE" of that key, or "FILE" when it took its default: for
 * errors found after loading (certificates, spool, listen). */
void config_key_where(const struct config *cfg, const char *section,
		      const char *name, char *out, size_t len);

/* "36700160", "10M", "512k", "1G" (K, M, G, optionally with B or iB, any
 * case: powers of 1024) → octets. False when it is not a size or does
 * not fit 64 bits. Pure. */
bool config_parse_size(const char *text, uint64_t *out);

/* How long a recipient waits after its attempt number `attempts` failed:
 * retry_min, doubling per attempt, up to retry_max (Postfix's
 * minimal_backoff_time / maximal_backoff_time). */
double config_retry_delay(const struct config *cfg, unsigned attempts);

/* Pure helpers, exposed for the parser of other lists. */
bool cidr_parse(const char *text, struct cidr *out);
bool cidr_contains(const struct cidr *net, const struct sockaddr *addr);

#endif
