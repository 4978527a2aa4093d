/*
 * config: gateway.ini → struct config. The keys live in one declarative
 * table (section, name, setter, default, bounds) in the manner of Postfix's
 * parameter tables; defaults go through the same setters as file values, so
 * there is one validation path. The file is read through our own line reader
 * so every error names the exact FILE:LINE, even those found by the setters.
 */
#include "core/config.h"
#include "proto/smtp_proto.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <stdarg.h>
#include <limits.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

struct key_def;

struct load_ctx {
	struct config *cfg;
	FILE *file;
	const char *path;
	char dir[PATH_MAX];
	unsigned line;
	unsigned error_line;
	char error[256];
	unsigned char seen[128]; /* one per key of keys[] (asserted below) */
	unsigned reserved_line;
	bool stop; /* read_line found a line inih cannot take whole */
};

typedef bool setter_fn(struct load_ctx *ctx, const struct key_def *key,
		       const char *value);

struct key_def {
	const char *section;
	const char *name;
	setter_fn *set;
	size_t offset;
	uint64_t min, max;
	const char *fallback;
};

static bool fail(struct load_ctx *ctx, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static bool fail(struct load_ctx *ctx, const char *fmt, ...)
{
	va_list ap;

	if (ctx->error_line != 0 || ctx->error[0] != '\0')
		return false; /* keep the first error: it is the one to fix */
	ctx->error_line = ctx->line;
	va_start(ap, fmt);
	vsnprintf(ctx->error, sizeof(ctx->error), fmt, ap);
	va_end(ap);
	return false;
}

static void *field(struct load_ctx *ctx, const struct key_def *key)
{
	return (char *)ctx->cfg + key->offset;
}

/* Splits a list on commas and white space; calls `each` per item. */
static bool for_each_item(struct load_ctx *ctx, const struct key_def *key,
			  const char *value,
			  bool (*each)(struct load_ctx *, const struct key_def *,
				       const char *))
{
	char item[256];
	const char *p = value;

	while (*p != '\0') {
		size_t n;

		p += strspn(p, ", \t");
		n = strcspn(p, ", \t");
		if (n == 0)
			break;
		if (n >= sizeof(item))
			return fail(ctx, "%s: list item too long", key->name);
		memcpy(item, p, n);
		item[n] = '\0';
		if (!each(ctx, key, item))
			return false;
		p += n;
	}
	return true;
}

static bool set_string(struct load_ctx *ctx, const struct key_def *key,
		       const char *value)
{
	char **slot = field(ctx, key);
	char *copy = strdup(value);

	if (copy == NULL)
		return fail(ctx, "out of memory");
	free(*slot);
	*slot = copy;
	return true;
}

static bool valid_hostname(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n > 253 || name[0] == '.' || name[0] == '-')
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)name[i]) && name[i] != '.' &&
		    name[i] != '-')
			return false;
	return true;
}

static bool set_hostname(struct load_ctx *ctx, const struct key_def *key,
			 const char *value)
{
	char local[256];

	if (value[0] == '\0') {
		if (gethostname(local, sizeof(local)) != 0)
			snprintf(local, sizeof(local), "localhost");
		local[sizeof(local) - 1] = '\0';
		value = local;
	}
	if (!valid_hostname(value))
		return fail(ctx, "%s: '%s' is not a valid host name",
			    key->name, value);
	return set_string(ctx, key, value);
}

static bool set_path(struct load_ctx *ctx, const struct key_def *key,
		     const char *value)
{
	char full[PATH_MAX];
	int n;

	if (value[0] == '\0')
		return fail(ctx, "%s: empty path", key->name);
	if (value[0] == '/')
		n = snprintf(full, sizeof(full), "%s", value);
	else
		n = snprintf(full, sizeof(full), "%s/%s", ctx->dir, value);
	if (n < 0 || (size_t)n >= sizeof(full))
		return fail(ctx, "%s: path too long", key->name);
	return set_string(ctx, key, full);
}

/* A file of DS or DNSKEY records, or "none": no DNSSEC validation. */
static bool set_trust_anchor(struct load_ctx *ctx, const struct key_def *key,
			     const char *value)
{
	char **slot = field(ctx, key);

	if (strcasecmp(value, "none") != 0)
		return set_path(ctx, key, value);
	free(*slot);
	*slot = NULL;
	return true;
}

static bool parse_u64(const char *text, uint64_t *out)
{
	char *end;

	if (!isdigit((unsigned char)text[0]))
		return false;
	errno = 0;
	*out = strtoull(text, &end, 10);
	return errno == 0 && *end == '\0';
}

static bool check_range(struct load_ctx *ctx, const struct key_def *key,
			const char *value, uint64_t v)
{
	if (v < key->min || v > key->max)
		return fail(ctx,
			    "%s: '%s' is out of range (%llu..%llu)", key->name,
			    value, (unsigned long long)key->min,
			    (unsigned long long)key->max);
	return true;
}

static bool parse_bounded(struct load_ctx *ctx, const struct key_def *key,
			  const char *value, uint64_t *v)
{
	if (!parse_u64(value, v))
		return fail(ctx, "%s: '%s' is not a number", key->name, value);
	return check_range(ctx, key, value, *v);
}

static bool set_uint(struct load_ctx *ctx, const struct key_def *key,
		     const char *value)
{
	uint64_t v;

	if (!parse_bounded(ctx, key, value, &v))
		return false;
	*(unsigned *)field(ctx, key) = (unsigned)v;
	return true;
}

bool config_parse_size(const char *text, uint64_t *out)
{
	static const struct {
		const char *suffix;
		unsigned shift;
	} units[] = {{"", 0},	   {"k", 10},  {"kb", 10}, {"kib", 10},
		     {"m", 20},	   {"mb", 20}, {"mib", 20}, {"g", 30},
		     {"gb", 30},   {"gib", 30}};
	char number[32];
	size_t n = strspn(text, "0123456789");
	uint64_t v;

	if (n == 0 || n >= sizeof(number))
		return false;
	memcpy(number, text, n);
	number[n] = '\0';
	if (!parse_u64(number, &v))
		return false;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcasecmp(text + n, units[i].suffix) != 0)
			continue;
		if (v > (UINT64_MAX >> units[i].shift))
			return false;
		*out = v << units[i].shift;
		return true;
	}
	return false;
}

/* "36700160", "10M", "512k", "1G": octets (powers of 1024). */
static bool set_bytes(struct load_ctx *ctx, const struct key_def *key,
		      const char *value)
{
	uint64_t v;

	if (!config_parse_size(value, &v))
		return fail(ctx, "%s: '%s' is not a size (e.g. 36700160, 512k, "
				 "10M, 1G)",
			    key->name, value);
	if (!check_range(ctx, key, value, v))
		return false;
	*(uint64_t *)field(ctx, key) = v;
	return true;
}

/* "300", "300s", "5m", "1h", "100ms" → seconds; bounds are milliseconds. */
static bool set_duration(struct load_ctx *ctx, const struct key_def *key,
			 const char *value)
{
	static const struct {
		const char *suffix;
		uint64_t ms;
	} units[] = {{"", 1000},       {"s", 1000},	  {"ms", 1},
		     {"m", 60000},     {"h", 3600000}, {"d", 86400000}};
	char number[32];
	size_t n = strspn(value, "0123456789");
	uint64_t v;

	if (n == 0 || n >= sizeof(number))
		return fail(ctx, "%s: '%s' is not a duration (e.g. 300s, 5m)",
			    key->name, value);
	memcpy(number, value, n);
	number[n] = '\0';
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcmp(value + n, units[i].suffix) != 0)
			continue;
		if (!parse_u64(number, &v) || v > UINT32_MAX ||
		    !check_range(ctx, key, value, v * units[i].ms))
			return false;
		*(double *)field(ctx, key) = (double)(v * units[i].ms) / 1000;
		return true;
	}
	return fail(ctx, "%s: '%s' is not a duration (e.g. 300s, 5m, 100ms)",
		    key->name, value);
}

/* A path that may be left empty (meaning: none). */
static bool set_optional_path(struct load_ctx *ctx, const struct key_def *key,
			      const char *value)
{
	char **slot = field(ctx, key);

	if (value[0] != '\0')
		return set_path(ctx, key, value);
	free(*slot);
	*slot = NULL;
	return true;
}

static bool add_domain(struct load_ctx *ctx, const struct key_def *key,
		       const char *item)
{
	struct config *cfg = ctx->cfg;
	const char *name = item[0] == '.' ? item + 1 : item;
	char **grown, *copy;

	if (!valid_hostname(name))
		return fail(ctx, "%s: '%s' is not a domain", key->name, item);
	grown = realloc(cfg->relay_domains,
			(cfg->n_relay_domains + 1) * sizeof(*grown));
	if (grown == NULL)
		return fail(ctx, "out of memory");
	cfg->relay_domains = grown;
	if ((copy = strdup(item)) == NULL)
		return fail(ctx, "out of memory");
	for (char *c = copy; *c != '\0'; c++)
		*c = (char)tolower((unsigned char)*c);
	grown[cfg->n_relay_domains++] = copy;
	return true;
}

static bool set_domains(struct load_ctx *ctx, const struct key_def *key,
			const char *value)
{
	struct config *cfg = ctx->cfg;

	for (size_t i = 0; i < cfg->n_relay_domains; i++)
		free(cfg->relay_domains[i]);
	cfg->n_relay_domains = 0;
	return for_each_item(ctx, key, value, add_domain);
}

bool cidr_parse(const char *text, struct cidr *out)
{
	char addr[64];
	const char *slash = strchr(text, '/');
	size_t n = slash ? (size_t)(slash - text) : strlen(text);
	uint64_t prefix;
	unsigned max;

	if (n == 0 || n >= sizeof(addr))
		return false;
	memcpy(addr, text, n);
	addr[n] = '\0';
	memset(out, 0, sizeof(*out));
	if (inet_pton(AF_INET, addr, out->addr) == 1) {
		out->family = AF_INET;
		max = 32;
	} else if (inet_pton(AF_INET6, addr, out->addr) == 1) {
		out->family = AF_INET6;
		max = 128;
	} else {
		return false;
	}
	if (slash == NULL)
		prefix = max;
	else if (!parse_u64(slash + 1, &prefix) || prefix > max)
		return false;
	out->prefix = (unsigned)prefix;
	return true;
}

static bool prefix_equal(const uint8_t *a, const uint8_t *b, unsigned bits)
{
	unsigned whole = bits / 8, rest = bits % 8;

	if (memcmp(a, b, whole) != 0)
		return false;
	if (rest == 0)
		return true;
	return ((a[whole] ^ b[whole]) & (uint8_t)(0xff << (8 - rest))) == 0;
}

bool cidr_contains(const struct cidr *net, const struct sockaddr *addr)
{
	static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0,
					     0, 0, 0, 0, 0xff, 0xff};
	const uint8_t *bytes;

	if (addr->sa_family == AF_INET) {
		bytes = (const uint8_t *)&((const struct sockaddr_in *)addr)
				->sin_addr;
		return net->family == AF_INET &&
		       prefix_equal(net->addr, bytes, net->prefix);
	}
	if (addr->sa_family != AF_INET6)
		return false;
	bytes = ((const struct sockaddr_in6 *)addr)->sin6_addr.s6_addr;
	if (net->family == AF_INET6)
		return prefix_equal(net->addr, bytes, net->prefix);
	/* An IPv4 client seen through a dual-stack socket. */
	return memcmp(bytes, v4mapped, 12) == 0 &&
	       prefix_equal(net->addr, bytes + 12, net->prefix);
}

static bool add_network(struct load_ctx *ctx, const struct key_def *key,
			const char *item)
{
	struct config *cfg = ctx->cfg;
	struct cidr net, *grown;

	if (!cidr_parse(item, &net))
		return fail(ctx, "%s: '%s' is not an address or CIDR network",
			    key->name, item);
	grown = realloc(cfg->relay_networks,
			(cfg->n_relay_networks + 1) * sizeof(*grown));
	if (grown == NULL)
		return fail(ctx, "out of memory");
	cfg->relay_networks = grown;
	grown[cfg->n_relay_networks++] = net;
	return true;
}

/* "127.0.0.1@5353", "::1", as libunbound's ub_ctx_set_fwd takes them. */
static bool add_resolver(struct load_ctx *ctx, const struct key_def *key,
			 const char *item)
{
	struct config *cfg = ctx->cfg;
	char addr[64];
	const char *at = strchr(item, '@');
	size_t n = at ? (size_t)(at - item) : strlen(item);
	uint64_t port = 53;
	struct cidr probe;
	char **grown;

	if (n == 0 || n >= sizeof(addr))
		return fail(ctx, "%s: '%s' is not IP or IP@PORT", key->name, item);
	memcpy(addr, item, n);
	addr[n] = '\0';
	if (strchr(addr, '/') != NULL || !cidr_parse(addr, &probe) ||
	    (at && (!parse_u64(at + 1, &port) || port == 0 || port > 65535)))
		return fail(ctx, "%s: '%s' is not IP or IP@PORT", key->name, item);
	grown = realloc(cfg->dns_resolvers,
			(cfg->n_dns_resolvers + 1) * sizeof(*grown));
	if (grown == NULL)
		return fail(ctx, "out of memory");
	cfg->dns_resolvers = grown;
	if ((grown[cfg->n_dns_resolvers] = strdup(item)) == NULL)
		return fail(ctx, "out of memory");
	cfg->n_dns_resolvers++;
	return true;
}

static bool set_resolvers(struct load_ctx *ctx, const struct key_def *key,
			  const char *value)
{
	return for_each_item(ctx, key, value, add_resolver);
}

static bool set_networks(struct load_ctx *ctx, const struct key_def *key,
			 const char *value)
{
	ctx->cfg->n_relay_networks = 0;
	return for_each_item(ctx, key, value, add_network);
}

/* "127.0.0.1:2525" or "[::1]:2525". */
static bool parse_listen(const char *item, struct listen_addr *out)
{
	char host[64];
	const char *colon, *start = item;
	size_t n;
	uint64_t port;

	memset(out, 0, sizeof(*out));
	if (item[0] == '[') {
		const char *close = strchr(item, ']');

		if (close == NULL || close[1] != ':')
			return false;
		start = item + 1;
		n = (size_t)(close - start);
		colon = close + 1;
	} else {
		colon = strrchr(item, ':');
		if (colon == NULL)
			return false;
		n = (size_t)(colon - item);
	}
	if (n == 0 || n >= sizeof(host) || !parse_u64(colon + 1, &port) ||
	    port > 65535)
		return false;
	memcpy(host, start, n);
	host[n] = '\0';
	if (item[0] != '[') {
		struct sockaddr_in *sin = (struct sockaddr_in *)&out->ss;

		if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
			return false;
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		out->len = sizeof(*sin);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&out->ss;

		if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1)
			return false;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		out->len = sizeof(*sin6);
	}
	snprintf(out->text, sizeof(out->text), "%s", item);
	return true;
}

static bool add_listen(struct load_ctx *ctx, const struct key_def *key,
		       const char *item)
{
	struct config *cfg = ctx->cfg;
	struct listen_addr addr, *grown;

	if (!parse_listen(item, &addr))
		return fail(ctx,
			    "%s: '%s' is not ADDRESS:PORT (IPv6 as [ADDR]:PORT)",
			    key->name, item);
	grown = realloc(cfg->listen, (cfg->n_listen + 1) * sizeof(*grown));
	if (grown == NULL)
		return fail(ctx, "out of memory");
	cfg->listen = grown;
	grown[cfg->n_listen++] = addr;
	return true;
}

static bool set_listen(struct load_ctx *ctx, const struct key_def *key,
		       const char *value)
{
	ctx->cfg->n_listen = 0;
	if (!for_each_item(ctx, key, value, add_listen))
		return false;
	if (ctx->cfg->n_listen == 0)
		return fail(ctx, "%s: no address given", key->name);
	return true;
}

/* [metrics] listen: one ADDRESS:PORT, or empty for no endpoint. */
static bool set_metrics_listen(struct load_ctx *ctx, const struct key_def *key,
			       const char *value)
{
	struct config *cfg = ctx->cfg;

	cfg->has_metrics = value[0] != '\0';
	if (cfg->has_metrics && !parse_listen(value, &cfg->metrics_listen))
		return fail(ctx, "%s: '%s' is not ADDRESS:PORT (IPv6 as "
				 "[ADDR]:PORT)",
			    key->name, value);
	return true;
}

static const char *const level_names[] = {
	[TLS_LEVEL_NONE] = "none",
	[TLS_LEVEL_MAY] = "may",
	[TLS_LEVEL_ENCRYPT] = "encrypt",
	[TLS_LEVEL_VERIFY] = "verify",
	[TLS_LEVEL_DANE] = "dane",
	[TLS_LEVEL_DANE_ONLY] = "dane-only",
	[TLS_LEVEL_STS] = "sts",
};

const char *tls_level_name(enum tls_level level)
{
	return level <= TLS_LEVEL_LAST ? level_names[level] : "?";
}

bool tls_level_parse(const char *text, enum tls_level *out)
{
	for (int i = TLS_LEVEL_NONE; i <= TLS_LEVEL_LAST; i++) {
		if (strcasecmp(text, level_names[i]) == 0) {
			*out = (enum tls_level)i;
			return true;
		}
	}
	return false;
}

bool tls_level_outbound_only(enum tls_level level)
{
	return level == TLS_LEVEL_DANE || level == TLS_LEVEL_DANE_ONLY ||
	       level == TLS_LEVEL_STS;
}

/* An inbound level: DANE is a client's business. */
static bool set_level(struct load_ctx *ctx, const struct key_def *key,
		      const char *value)
{
	enum tls_level *slot = field(ctx, key);

	if (!tls_level_parse(value, slot))
		return fail(ctx, "%s: '%s' is not a level "
				 "(none, may, encrypt, verify)",
			    key->name, value);
	if (tls_level_outbound_only(*slot))
		return fail(ctx, "%s: '%s' is an outbound level; inbound "
				 "levels are none, may, encrypt, verify",
			    key->name, value);
	return true;
}

static bool set_log_format(struct load_ctx *ctx, const struct key_def *key,
			   const char *value)
{
	if (!log_style_parse(value, field(ctx, key)))
		return fail(ctx, "%s: '%s' is not a log format (smtpgw, "
				 "postfix)", key->name, value);
	return true;
}

static bool set_log_destination(struct load_ctx *ctx,
				const struct key_def *key, const char *value)
{
	bool *to_syslog = field(ctx, key);

	if (strcmp(value, "stderr") != 0 && strcmp(value, "syslog") != 0)
		return fail(ctx, "%s: '%s' is not a log destination (stderr, "
				 "syslog)", key->name, value);
	*to_syslog = strcmp(value, "syslog") == 0;
	return true;
}

static bool set_facility(struct load_ctx *ctx, const struct key_def *key,
			 const char *value)
{
	if (!log_facility_parse(value, field(ctx, key)))
		return fail(ctx, "%s: '%s' is not a facility (mail, daemon, "
				 "user, local0 ... local7)", key->name, value);
	return true;
}

/* An ident as syslog and pflogsumm's --syslog-name take it. */
static bool set_syslog_name(struct load_ctx *ctx, const struct key_def *key,
			    const char *value)
{
	size_t n = strlen(value);

	if (n > 40 || strspn(value, "abcdefghijklmnopqrstuvwxyz"
				    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/") != n)
		return fail(ctx, "%s: '%s' is not a syslog name (at most 40 "
				 "letters, digits, '.', '_', '-', '/')",
			    key->name, value);
	return set_string(ctx, key, value);
}

static bool set_bool(struct load_ctx *ctx, const struct key_def *key,
		     const char *value)
{
	bool *slot = field(ctx, key);

	if (strcasecmp(value, "yes") == 0 || strcasecmp(value, "true") == 0)
		*slot = true;
	else if (strcasecmp(value, "no") == 0 || strcasecmp(value, "false") == 0)
		*slot = false;
	else
		return fail(ctx, "%s: '%s' is not yes or no", key->name, value);
	return true;
}

static bool set_ask_cert(struct load_ctx *ctx, const struct key_def *key,
			 const char *value)
{
	static const char *const words[] = {
		[ASK_CLIENT_CERT_AUTO] = "auto",
		[ASK_CLIENT_CERT_YES] = "yes",
		[ASK_CLIENT_CERT_NO] = "no",
	};
	enum ask_client_cert *slot = field(ctx, key);

	for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
		if (strcasecmp(value, words[i]) == 0) {
			*slot = (enum ask_client_cert)i;
			return true;
		}
	}
	return fail(ctx, "%s: '%s' is not auto, yes or no", key->name, value);
}

/* "N" slots, or "N%" of max_connections (below 100 %, checked against
 * max_connections once both are known, in check_reserved). */
static bool set_reserved(struct load_ctx *ctx, const struct key_def *key,
			 const char *value)
{
	size_t n = strlen(value);
	char number[32];
	uint64_t v;

	ctx->reserved_line = ctx->line;
	ctx->cfg->reserved_percent = n > 0 && value[n - 1] == '%';
	if (ctx->cfg->reserved_percent)
		n--;
	if (n == 0 || n >= sizeof(number))
		return fail(ctx, "%s: '%s' is not a number or N%%", key->name,
			    value);
	memcpy(number, value, n);
	number[n] = '\0';
	if (!parse_u64(number, &v) || v > 1000000 ||
	    (ctx->cfg->reserved_percent && v > key->max))
		return fail(ctx, "%s: '%s' is not a number or a percentage "
				 "below 100%%",
			    key->name, value);
	ctx->cfg->reserved_connections = (unsigned)v;
	return true;
}

/* One network into the struct cidr_list at the key's offset. */
static bool add_cidr(struct load_ctx *ctx, const struct key_def *key,
		     const char *item)
{
	struct cidr_list *list = field(ctx, key);
	struct cidr net, *grown;

	if (!cidr_parse(item, &net))
		return fail(ctx, "%s: '%s' is not an address or CIDR network",
			    key->name, item);
	grown = realloc(list->nets, (list->n + 1) * sizeof(*grown));
	if (grown == NULL)
		return fail(ctx, "out of memory");
	list->nets = grown;
	grown[list->n++] = net;
	return true;
}

/* "local@domain": where mail to <postmaster> without a domain goes
 * (RFC 5321 4.1.1.3); empty: such mail is refused. */
static bool set_postmaster(struct load_ctx *ctx, const struct key_def *key,
			   const char *value)
{
	const char *at = strrchr(value, '@');
	char **slot = field(ctx, key);

	if (value[0] == '\0') {
		free(*slot);
		*slot = NULL;
		return true;
	}
	if (at == NULL || at == value || strlen(value) > SMTP_PATH_MAX ||
	    strpbrk(value, " \t<>\"(),;:[]\\") != NULL ||
	    !valid_hostname(at + 1) || strchr(at + 1, '.') == NULL)
		return fail(ctx, "%s: '%s' is not local@domain with a "
				 "fully-qualified domain",
			    key->name, value);
	return set_string(ctx, key, value);
}

/* sync_exempt_networks: CIDRs, and the word relay_networks (the default)
 * for the clients of relay_networks, as postscreen's permit_mynetworks. */
static bool add_sync_exempt(struct load_ctx *ctx, const struct key_def *key,
			    const char *item)
{
	if (strcmp(item, "relay_networks") != 0)
		return add_cidr(ctx, key, item);
	ctx->cfg->sync_exempt_relay = true;
	return true;
}

static bool set_sync_exempt(struct load_ctx *ctx, const struct key_def *key,
			    const char *value)
{
	((struct cidr_list *)field(ctx, key))->n = 0;
	ctx->cfg->sync_exempt_relay = false;
	return for_each_item(ctx, key, value, add_sync_exempt);
}

static bool set_cidrs(struct load_ctx *ctx, const struct key_def *key,
		      const char *value)
{
	((struct cidr_list *)field(ctx, key))->n = 0;
	return for_each_item(ctx, key, value, add_cidr);
}

bool config_is_proxy_peer(const struct config *cfg,
			  const struct sockaddr *addr)
{
	for (size_t i = 0; i < cfg->proxy_networks.n; i++)
		if (cidr_contains(&cfg->proxy_networks.nets[i], addr))
			return true;
	return false;
}

bool config_is_sync_exempt(const struct config *cfg,
			   const struct sockaddr *addr)
{
	if (!cfg->smtp_sync)
		return true;
	if (cfg->sync_exempt_relay && config_is_relay_client(cfg, addr))
		return true;
	for (size_t i = 0; i < cfg->sync_exempt_networks.n; i++)
		if (cidr_contains(&cfg->sync_exempt_networks.nets[i], addr))
			return true;
	return false;
}

/* One path of a certificate line, relative to the ini file's folder. */
static char *full_path(struct load_ctx *ctx, const char *path, size_t n)
{
	char full[PATH_MAX];
	int len = path[0] == '/'
			  ? snprintf(full, sizeof(full), "%.*s", (int)n, path)
			  : snprintf(full, sizeof(full), "%s/%.*s", ctx->dir,
				     (int)n, path);

	if (len < 0 || (size_t)len >= sizeof(full))
		return NULL;
	return strdup(full);
}

/* [tls] certificate = CERTFILE KEYFILE, as often as needed (certbot's
 * fullchain.pem privkey.pem); the files are read with the certificate
 * store (net/certs.c), not here. */
static bool set_certificate(struct load_ctx *ctx, const struct key_def *key,
			    const char *value)
{
	struct config *cfg = ctx->cfg;
	struct cert_file_pair *grown, *pair;
	const char *crt = value + strspn(value, " \t"), *keyfile;
	size_t crt_len = strcspn(crt, " \t"), key_len;

	if (ctx->line == 0)
		return true; /* the default: no certificate line */
	keyfile = crt + crt_len + strspn(crt + crt_len, " \t");
	key_len = strcspn(keyfile, " \t");
	if (crt_len == 0 || key_len == 0 ||
	    keyfile[key_len + strspn(keyfile + key_len, " \t")] != '\0')
		return fail(ctx, "%s: '%s' is not CERTFILE KEYFILE", key->name,
			    value);
	grown = realloc(cfg->certificates,
			(cfg->n_certificates + 1) * sizeof(*grown));
	if (grown == NULL)
		return fail(ctx, "out of memory");
	cfg->certificates = grown;
	pair = &grown[cfg->n_certificates];
	pair->line = ctx->line;
	pair->crt = full_path(ctx, crt, crt_len);
	pair->key = full_path(ctx, keyfile, key_len);
	cfg->n_certificates++;
	if (pair->crt == NULL || pair->key == NULL)
		return fail(ctx, "%s: path too long", key->name);
	return true;
}

/* [delivery] relayhost: Postfix's default route; empty: none. */
static bool set_relayhost(struct load_ctx *ctx, const struct key_def *key,
			  const char *value)
{
	const char *why;

	ctx->cfg->has_relayhost = value[0] != '\0';
	if (!ctx->cfg->has_relayhost)
		return true;
	if (!next_hop_parse(value, 25, &ctx->cfg->relayhost, &why))
		return fail(ctx, "%s: '%s' is not [HOST]:PORT, HOST:PORT or "
				 "HOST: %s",
			    key->name, value, why);
	return true;
}

#define AT(member) offsetof(struct config, member)

static const struct key_def keys[] = {
	{"gateway", "hostname", set_hostname, AT(hostname), 0, 0, ""},
	{"gateway", "listen", set_listen, 0, 0, 0, "127.0.0.1:25"},
	{"gateway", "spool", set_path, AT(spool), 0, 0, "spool"},
	{"gateway", "user", set_string, AT(user), 0, 0, "smtpgw"},
	{"gateway", "workers", set_uint, AT(workers), 0, 64, "0"},
	{"gateway", "drain_timeout", set_duration, AT(drain_timeout), 1000,
	 86400000, "60s"},
	{"gateway", "watchdog_timeout", set_duration, AT(watchdog_timeout),
	 1000, 3600000, "10s"},
	{"gateway", "relay_domains", set_domains, 0, 0, 0, ""},
	{"gateway", "relay_networks", set_networks, 0, 0, 0,
	 "127.0.0.0/8, ::1/128"},
	{"gateway", "max_message_size", set_bytes, AT(max_message_size), 0,
	 UINT64_MAX / 2, "36700160"},
	{"gateway", "max_recipients", set_uint, AT(max_recipients), 1, 100000,
	 "1000"},
	{"gateway", "max_connections", set_uint, AT(max_connections), 1,
	 1000000, "1000"},
	{"gateway", "max_connections_per_ip", set_uint,
	 AT(max_connections_per_ip), 1, 1000000, "50"},
	{"gateway", "client_prefix_v4", set_uint, AT(client_prefix_v4), 8, 32,
	 "32"},
	{"gateway", "client_prefix_v6", set_uint, AT(client_prefix_v6), 16,
	 128, "64"},
	{"gateway", "client_connection_rate_limit", set_uint,
	 AT(client_connection_rate_limit), 0, 1000000, "0"},
	{"gateway", "reserved_connections", set_reserved, 0, 0, 99, "5%"},
	{"gateway", "max_errors", set_uint, AT(max_errors), 1, 10000, "20"},
	{"gateway", "command_timeout", set_duration, AT(command_timeout), 1000,
	 86400000, "300s"},
	{"gateway", "data_timeout", set_duration, AT(data_timeout), 1000,
	 86400000, "10m"},
	{"gateway", "min_data_rate", set_uint, AT(min_data_rate), 0,
	 1000000000, "500"},
	{"gateway", "data_rate_window", set_duration, AT(data_rate_window),
	 1000, 3600000, "10s"},
	{"gateway", "junk_command_limit", set_uint, AT(junk_command_limit), 1,
	 1000000, "100"},
	{"gateway", "stress_timeout", set_duration, AT(stress_timeout), 1000,
	 86400000, "10s"},
	{"gateway", "greet_pause", set_duration, AT(greet_pause), 0, 60000,
	 "1s"},
	{"gateway", "smtp_sync", set_bool, AT(smtp_sync), 0, 0, "yes"},
	{"gateway", "sync_exempt_networks", set_sync_exempt,
	 AT(sync_exempt_networks), 0, 0, "relay_networks"},
	{"gateway", "postmaster", set_postmaster, AT(postmaster), 0, 0, ""},
	{"gateway", "proxy_networks", set_cidrs, AT(proxy_networks), 0, 0, ""},
	{"gateway", "proxy_timeout", set_duration, AT(proxy_timeout), 100,
	 3600000, "5s"},
	{"tls", "cert_dir", set_path, AT(cert_dir), 0, 0, "certs"},
	{"tls", "certificate", set_certificate, 0, 0, 0, ""},
	{"tls", "ca_file", set_path, AT(ca_file), 0, 0,
	 "/etc/ssl/certs/ca-certificates.crt"},
	{"tls", "server_level", set_level, AT(server_level), 0, 0, "may"},
	{"tls", "protocols", set_string, AT(protocols), 0, 0,
	 "tlsv1.2,tlsv1.3"},
	{"tls", "ciphers", set_string, AT(ciphers), 0, 0, "secure"},
	{"tls", "ask_client_cert", set_ask_cert, AT(ask_client_cert), 0, 0,
	 "auto"},
	{"tls", "handshake_timeout", set_duration, AT(tls_timeout), 1000,
	 3600000, "60s"},
	{"tls", "session_lifetime", set_duration, AT(session_lifetime), 0,
	 86400000, "1h"},
	{"delivery", "max_connections", set_uint, AT(delivery_max_connections),
	 1, 100000, "50"},
	{"delivery", "max_per_destination", set_uint,
	 AT(delivery_max_per_destination), 1, 10000, "5"},
	{"delivery", "retry_min", set_duration, AT(retry_min), 1000,
	 86400000, "5m"},
	{"delivery", "retry_max", set_duration, AT(retry_max), 1000,
	 604800000, "1h"},
	{"delivery", "max_queue_lifetime", set_duration, AT(max_queue_lifetime),
	 1000, 8640000000ULL, "5d"},
	{"delivery", "timeout", set_duration, AT(delivery_timeout), 1000,
	 3600000, "300s"},
	{"delivery", "reuse_max_messages", set_uint, AT(reuse_max_messages), 1,
	 100000, "100"},
	{"delivery", "reuse_idle_time", set_duration, AT(reuse_idle_time), 0,
	 300000, "5s"},
	{"delivery", "relayhost", set_relayhost, 0, 0, 0, ""},
	{"delivery", "active_limit", set_uint, AT(active_limit), 1, 10000000,
	 "20000"},
	{"dns", "resolver", set_resolvers, 0, 0, 0, ""},
	{"dns", "trust_anchor", set_trust_anchor, AT(dns_trust_anchor), 0, 0,
	 "/usr/share/dns/root.key"},
	{"log", "format", set_log_format, AT(log_format), 0, 0, "smtpgw"},
	{"log", "destination", set_log_destination, AT(log_to_syslog), 0, 0,
	 "stderr"},
	{"log", "syslog_facility", set_facility, AT(log_facility), 0, 0,
	 "mail"},
	{"log", "syslog_name", set_syslog_name, AT(log_syslog_name), 0, 0, ""},
	{"log", "syslog_socket", set_path, AT(log_syslog_socket), 0, 0,
	 "/dev/log"},
	{"policy", "script", set_optional_path, AT(policy_script), 0, 0, ""},
	{"policy", "max_instructions", set_uint, AT(policy_max_instructions),
	 1000, 1000000000, "1000000"},
	{"policy", "max_time", set_duration, AT(policy_max_time), 1, 10000,
	 "100ms"},
	{"policy", "max_memory", set_bytes, AT(policy_max_memory), 1ULL << 20,
	 1ULL << 32, "64M"},
	{"metrics", "listen", set_metrics_listen, 0, 0, 0, ""},
};

enum { N_KEYS = sizeof(keys) / sizeof(keys[0]) };
_Static_assert(N_KEYS <= sizeof(((struct load_ctx *)0)->seen),
	       "load_ctx.seen has a flag per key");
_Static_assert((int)N_KEYS <= (int)CONFIG_MAX_KEYS,
	       "config.key_line has one per key");

/* Only a certificate line may come again: each is one more pair. */
static bool repeatable(const struct key_def *key)
{
	return key->set == set_certificate;
}

static const char DOMAIN_PREFIX[] = "domain:";

static bool is_domain_section(const char *section)
{
	const char *name = section + sizeof(DOMAIN_PREFIX) - 1;

	return strncasecmp(section, DOMAIN_PREFIX, sizeof(DOMAIN_PREFIX) - 1) ==
		       0 &&
	       valid_hostname(name[0] == '.' ? name + 1 : name);
}

static struct domain_rule *find_or_add_rule(struct load_ctx *ctx,
					    const char *section)
{
	struct config *cfg = ctx->cfg;
	const char *name = section + sizeof(DOMAIN_PREFIX) - 1;
	struct domain_rule *grown, *r;

	for (size_t i = 0; i < cfg->n_domains; i++)
		if (strcasecmp(cfg->domains[i].name, name) == 0)
			return &cfg->domains[i];
	grown = realloc(cfg->domains, (cfg->n_domains + 1) * sizeof(*grown));
	if (grown == NULL)
		return NULL;
	cfg->domains = grown;
	r = &grown[cfg->n_domains];
	memset(r, 0, sizeof(*r));
	if ((r->name = strdup(name)) == NULL)
		return NULL;
	for (char *c = r->name; *c != '\0'; c++)
		*c = (char)tolower((unsigned char)*c);
	cfg->n_domains++;
	return r;
}

/* next_hop = [host]:port (no MX lookup), host:port (its MX), address:port */
static bool set_next_hop(struct load_ctx *ctx, struct domain_rule *r,
			 const char *section, const char *value)
{
	const char *why;

	if (r->next_hop != NULL)
		return fail(ctx, "next_hop: given twice in [%s]", section);
	if (!next_hop_parse(value, 25, &r->hop, &why))
		return fail(ctx, "next_hop: '%s' is not [HOST]:PORT, "
				 "HOST:PORT or ADDRESS:PORT: %s",
			    value, why);
	if ((r->next_hop = strdup(value)) == NULL)
		return fail(ctx, "out of memory");
	return true;
}

/* tls_name = the host name verify expects in the certificate (and the
 * SNI), for a next hop known by its address (Postfix's match=). */
static bool set_tls_name(struct load_ctx *ctx, struct domain_rule *r,
			 const char *section, const char *value)
{
	if (r->tls_name != NULL)
		return fail(ctx, "tls_name: given twice in [%s]", section);
	if (!valid_hostname(value))
		return fail(ctx, "tls_name: '%s' is not a host name", value);
	if ((r->tls_name = strdup(value)) == NULL)
		return fail(ctx, "out of memory");
	return true;
}

/* tls_in: what mail addressed to the domain needs inbound; only the two
 * levels that require something. */
static int set_tls_in(struct load_ctx *ctx, const char *section,
		      struct domain_rule *r, const char *value)
{
	if (r->has_tls_in)
		return fail(ctx, "tls_in: given twice in [%s]", section);
	if (!tls_level_parse(value, &r->tls_in) ||
	    (r->tls_in != TLS_LEVEL_ENCRYPT && r->tls_in != TLS_LEVEL_VERIFY))
		return fail(ctx, "tls_in: '%s' is not encrypt or verify (leave "
				 "tls_in out for no requirement)",
			    value);
	r->has_tls_in = true;
	return true;
}

static int on_domain_key(struct load_ctx *ctx, const char *section,
			 const char *name, const char *value)
{
	struct domain_rule *r = find_or_add_rule(ctx, section);

	if (r == NULL)
		return fail(ctx, "out of memory");
	if (strcmp(name, "tls") == 0) {
		if (r->has_tls)
			return fail(ctx, "tls: given twice in [%s]", section);
		if (!tls_level_parse(value, &r->tls))
			return fail(ctx, "tls: '%s' is not a level "
					 "(none, may, encrypt, verify, dane, "
					 "dane-only, sts)",
				    value);
		r->has_tls = true;
		return true;
	}
	if (strcmp(name, "tls_in") == 0)
		return set_tls_in(ctx, section, r, value);
	if (strcmp(name, "next_hop") == 0)
		return set_next_hop(ctx, r, section, value);
	if (strcmp(name, "tls_name") == 0)
		return set_tls_name(ctx, r, section, value);
	return fail(ctx, "unknown key '%s' in [%s] (tls, tls_in, next_hop, "
			 "tls_name)",
		    name, section);
}

static bool known_section(const char *section)
{
	if (is_domain_section(section))
		return true;
	for (size_t i = 0; i < N_KEYS; i++)
		if (strcmp(keys[i].section, section) == 0)
			return true;
	return false;
}

static int on_key(void *user, const char *section, const char *name,
		  const char *value)
{
	struct load_ctx *ctx = user;

	if (is_domain_section(section))
		return on_domain_key(ctx, section, name, value);
	for (size_t i = 0; i < N_KEYS; i++) {
		if (strcmp(keys[i].section, section) != 0 ||
		    strcmp(keys[i].name, name) != 0)
			continue;
		if (ctx->seen[i] && !repeatable(&keys[i]))
			return fail(ctx, "%s: given twice in [%s]", name,
				    section);
		ctx->seen[i] = 1;
		if (ctx->cfg->key_line[i] == 0)
			ctx->cfg->key_line[i] = ctx->line;
		return keys[i].set(ctx, &keys[i], value);
	}
	if (!known_section(section))
		return fail(ctx, "unknown section [%s]", section);
	return fail(ctx, "unknown key '%s' in [%s]", name, section);
}

/* inih calls the handler only for keys, so an unknown section without
 * keys would pass unseen: section lines are checked as they are read. */
static void check_section_line(struct load_ctx *ctx, const char *line)
{
	char name[128];
	const char *p = line + strspn(line, " \t");
	size_t n;

	if (*p != '[')
		return;
	n = strcspn(++p, "]");
	if (p[n] != ']' || n >= sizeof(name))
		return; /* inih reports the syntax error */
	memcpy(name, p, n);
	name[n] = '\0';
	if (!known_section(name))
		fail(ctx, "unknown section [%s]", name);
}

/* After a line that filled inih's buffer: whether it goes on (a newline
 * right after it is taken, so that it is not read as an empty line). */
static bool line_goes_on(FILE *file)
{
	int c = getc(file);

	if (c == '\n' || c == EOF)
		return false;
	ungetc(c, file);
	return true;
}

/*
 * inih's reader hook: counting lines here gives setters their line. A line
 * longer than inih's buffer would reach it in pieces, each counted as a
 * line, and a NUL would cut it short unseen: either is an error at its own
 * line, and reading stops there.
 */
static char *read_line(char *buf, int size, void *stream)
{
	struct load_ctx *ctx = stream;
	int c = EOF, n = 0;

	while (!ctx->stop && n < size - 1 && (c = getc(ctx->file)) != EOF) {
		buf[n++] = (char)c;
		if (c == '\n')
			break;
	}
	if (n == 0)
		return NULL;
	buf[n] = '\0';
	ctx->line++;
	if (memchr(buf, '\0', (size_t)n) != NULL) {
		ctx->stop = true;
		fail(ctx, "NUL octet in the line");
		return NULL;
	}
	if (c != '\n' && n == size - 1 && line_goes_on(ctx->file)) {
		ctx->stop = true;
		fail(ctx, "line longer than %d octets", size - 1);
		return NULL;
	}
	check_section_line(ctx, buf);
	return buf;
}

static bool apply_defaults(struct load_ctx *ctx)
{
	for (size_t i = 0; i < N_KEYS; i++)
		if (!ctx->seen[i] && !keys[i].set(ctx, &keys[i],
						  keys[i].fallback))
			return false;
	return true;
}

static void set_dir(struct load_ctx *ctx, const char *path)
{
	const char *slash = strrchr(path, '/');

	if (slash == NULL)
		snprintf(ctx->dir, sizeof(ctx->dir), ".");
	else if (slash == path)
		snprintf(ctx->dir, sizeof(ctx->dir), "/");
	else
		snprintf(ctx->dir, sizeof(ctx->dir), "%.*s",
			 (int)(slash - path), path);
}

static int parse_file(struct load_ctx *ctx, char *err, size_t err_len)
{
	int rc;

	ctx->file = fopen(ctx->path, "re");
	if (ctx->file == NULL) {
		snprintf(err, err_len, "%s: cannot open: %s", ctx->path,
			 strerror(errno));
		return -1;
	}
	rc = ini_parse_stream(read_line, ctx, on_key, ctx);
	fclose(ctx->file);
	if (rc == 0 && ctx->error[0] == '\0')
		return 0;
	if (ctx->error[0] == '\0' || (rc > 0 && (unsigned)rc < ctx->error_line))
		snprintf(err, err_len,
			 "%s:%d: syntax error (expected [section] or "
			 "name = value)",
			 ctx->path, rc);
	else
		snprintf(err, err_len, "%s:%u: %s", ctx->path, ctx->error_line,
			 ctx->error);
	return -1;
}

/* An absolute reserve must leave internet clients at least one slot. */
static bool check_reserved(struct load_ctx *ctx, char *err, size_t err_len)
{
	const struct config *cfg = ctx->cfg;

	if (cfg->reserved_percent ||
	    cfg->reserved_connections < cfg->max_connections)
		return true;
	snprintf(err, err_len,
		 "%s:%u: reserved_connections: %u leaves no slot of "
		 "max_connections (%u) for other clients",
		 ctx->path, ctx->reserved_line, cfg->reserved_connections,
		 cfg->max_connections);
	return false;
}

struct config *config_load(const char *path, char *err, size_t err_len)
{
	struct load_ctx ctx = {.path = path};

	ctx.cfg = calloc(1, sizeof(*ctx.cfg));
	if (ctx.cfg == NULL || (ctx.cfg->path = strdup(path)) == NULL) {
		snprintf(err, err_len, "%s: out of memory", path);
		config_free(ctx.cfg);
		return NULL;
	}
	set_dir(&ctx, path);
	if (parse_file(&ctx, err, err_len) != 0) {
		config_free(ctx.cfg);
		return NULL;
	}
	ctx.line = 0;
	if (!apply_defaults(&ctx)) {
		snprintf(err, err_len, "%s: default: %s", path, ctx.error);
		config_free(ctx.cfg);
		return NULL;
	}
	if (!check_reserved(&ctx, err, err_len)) {
		config_free(ctx.cfg);
		return NULL;
	}
	return ctx.cfg;
}

void config_free(struct config *cfg)
{
	if (cfg == NULL)
		return;
	for (size_t i = 0; i < cfg->n_relay_domains; i++)
		free(cfg->relay_domains[i]);
	free(cfg->relay_domains);
	free(cfg->relay_networks);
	free(cfg->listen);
	free(cfg->hostname);
	free(cfg->spool);
	free(cfg->user);
	free(cfg->cert_dir);
	for (size_t i = 0; i < cfg->n_certificates; i++) {
		free(cfg->certificates[i].crt);
		free(cfg->certificates[i].key);
	}
	free(cfg->certificates);
	free(cfg->ca_file);
	free(cfg->protocols);
	free(cfg->ciphers);
	free(cfg->policy_script);
	free(cfg->sync_exempt_networks.nets);
	free(cfg->proxy_networks.nets);
	free(cfg->postmaster);
	free(cfg->log_syslog_name);
	free(cfg->log_syslog_socket);
	for (size_t i = 0; i < cfg->n_dns_resolvers; i++)
		free(cfg->dns_resolvers[i]);
	free(cfg->dns_resolvers);
	free(cfg->dns_trust_anchor);
	for (size_t i = 0; i < cfg->n_domains; i++) {
		free(cfg->domains[i].name);
		free(cfg->domains[i].next_hop);
		free(cfg->domains[i].tls_name);
	}
	free(cfg->domains);
	free(cfg->path);
	free(cfg);
}

bool config_is_relay_domain(const struct config *cfg, const char *domain,
			    size_t len)
{
	for (size_t i = 0; i < cfg->n_relay_domains; i++) {
		const char *pattern = cfg->relay_domains[i];

		if (smtp_domain_matches(domain, len, pattern, strlen(pattern)))
			return true;
	}
	return false;
}

bool config_is_relay_client(const struct config *cfg,
			    const struct sockaddr *addr)
{
	for (size_t i = 0; i < cfg->n_relay_networks; i++)
		if (cidr_contains(&cfg->relay_networks[i], addr))
			return true;
	return false;
}

double config_retry_delay(const struct config *cfg, unsigned attempts)
{
	double delay = cfg->retry_min;

	for (unsigned i = 1; i < attempts && delay < cfg->retry_max; i++)
		delay *= 2;
	return delay < cfg->retry_max ? delay : cfg->retry_max;
}

const struct domain_rule *config_domain_rule(const struct config *cfg,
					     const char *domain, size_t len)
{
	const struct domain_rule *best = NULL;
	size_t best_len = 0;

	for (size_t i = 0; i < cfg->n_domains; i++) {
		const struct domain_rule *r = &cfg->domains[i];
		size_t n = strlen(r->name);

		if (r->name[0] != '.') {
			if (n == len && strncasecmp(r->name, domain, len) == 0)
				return r; /* the exact name wins */
		} else if (n > best_len &&
			   smtp_domain_matches(domain, len, r->name, n)) {
			best = r;
			best_len = n;
		}
	}
	return best;
}

void config_route(const struct config *cfg, const char *domain, size_t len,
		  struct route *out)
{
	const struct domain_rule *rule = config_domain_rule(cfg, domain, len);

	*out = (struct route){.source = ROUTE_MX, .rule = rule};
	if (rule != NULL)
		out->tls_name = rule->tls_name;
	if (rule != NULL && rule->next_hop != NULL) {
		out->source = ROUTE_NEXT_HOP;
		out->hop = &rule->hop;
	} else if (cfg->has_relayhost) {
		out->source = ROUTE_RELAYHOST;
		out->hop = &cfg->relayhost;
	}
}

unsigned config_key_line(const struct config *cfg, const char *section,
			 const char *name)
{
	for (size_t i = 0; i < N_KEYS; i++)
		if (strcmp(keys[i].section, section) == 0 &&
		    strcmp(keys[i].name, name) == 0)
			return cfg->key_line[i];
	return 0;
}

void config_key_where(const struct config *cfg, const char *section,
		      const char *name, char *out, size_t len)
{
	unsigned line = config_key_line(cfg, section, name);

	if (line > 0)
		snprintf(out, len, "%s:%u", cfg->path, line);
	else
		snprintf(out, len, "%s", cfg->path);
}
