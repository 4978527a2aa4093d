/*
 * route_command: `smtpgw -c FILE route DOMAIN [--port N]` prints where
 * mail for DOMAIN would go: the next_hop of its [domain:...] section, or
 * its MX hosts, each with its addresses. It runs the gateway's own dns
 * code on a loop of its own, so what it prints is what delivery would get;
 * it connects to nothing and writes nothing but stdout and stderr.
 */
#include "cli/route_command.h"

#include "net/dns.h"

#include <arpa/inet.h>
#include <ev.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { EXIT_TEMPFAIL = 75, DEFAULT_PORT = 25 };

bool route_parse_args(int argc, char **argv, struct route_options *o)
{
	char *end;
	unsigned long port;

	o->port = DEFAULT_PORT;
	if (argc != 1 && argc != 3)
		return false;
	o->domain = argv[0];
	if (argc == 1)
		return true;
	if (strcmp(argv[1], "--port") != 0)
		return false;
	port = strtoul(argv[2], &end, 10);
	if (*argv[2] == '\0' || *end != '\0' || port == 0 || port > 65535)
		return false;
	o->port = (unsigned)port;
	return true;
}

struct answer {
	struct ev_loop *loop;
	struct dns_route route;
	bool done;
};

static void on_route(uint64_t id, const struct dns_route *route, void *arg)
{
	struct answer *a = arg;

	(void)id;
	a->route = *route;
	a->done = true;
	ev_break(a->loop, EVBREAK_ALL);
}

static void print_addr(const struct sockaddr_storage *ss)
{
	char text[INET6_ADDRSTRLEN];

	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *v6 = (const void *)ss;

		inet_ntop(AF_INET6, &v6->sin6_addr, text, sizeof(text));
		printf(" [%s]:%u", text, ntohs(v6->sin6_port));
	} else {
		const struct sockaddr_in *v4 = (const void *)ss;

		inet_ntop(AF_INET, &v4->sin_addr, text, sizeof(text));
		printf(" %s:%u", text, ntohs(v4->sin_port));
	}
}

static int print_route(const struct dns_route *rt)
{
	if (rt->status != DNS_OK) {
		printf("%s: %s\n",
		       rt->status == DNS_TEMPFAIL ? "tempfail" : "permfail",
		       rt->error);
		return rt->status == DNS_TEMPFAIL ? EXIT_TEMPFAIL : 1;
	}
	for (size_t i = 0; i < rt->n_hosts; i++) {
		const struct dns_host *h = &rt->hosts[i];

		printf("%s pref %u", h->name, h->pref);
		for (size_t k = 0; k < h->n_addrs; k++)
			print_addr(&h->addrs[k]);
		printf("\n");
	}
	return 0;
}

/* "host:port", "192.0.2.1:25" or "[::1]:25" (config.c checked the shape)
 * into host and port; the brackets stay, dns_host_route knows them. */
static bool split_next_hop(const char *hop, char *host, size_t host_len,
			   unsigned *port)
{
	const char *colon = strrchr(hop, ':');

	if (colon == NULL || (size_t)(colon - hop) >= host_len)
		return false;
	snprintf(host, host_len, "%.*s", (int)(colon - hop), hop);
	*port = (unsigned)strtoul(colon + 1, NULL, 10);
	return true;
}

/* Asks, and runs the loop until the one answer is in; the dns code's
 * own deadline makes sure that it comes. */
static int resolve(struct ev_loop *loop, const struct config *cfg,
		   const char *host, const char *domain, unsigned port)
{
	struct answer a = {.loop = loop};
	char err[512];
	struct dns *dns = dns_new(loop, cfg, err, sizeof(err));

	if (dns == NULL) {
		fprintf(stderr, "smtpgw: %s\n", err);
		return 1;
	}
	if (host != NULL)
		dns_host_route(dns, host, port, 1, on_route, &a);
	else
		dns_mx_route(dns, domain, port, 1, on_route, &a);
	while (!a.done)
		ev_run(loop, 0);
	dns_free(dns);
	return print_route(&a.route);
}

int route_command(const struct config *cfg, const struct route_options *o)
{
	const struct domain_rule *rule =
		config_domain_rule(cfg, o->domain, strlen(o->domain));
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	char host[256];
	unsigned port = o->port;
	int rc;

	if (loop == NULL) {
		fprintf(stderr, "smtpgw: cannot create an event loop\n");
		return 1;
	}
	if (rule != NULL && rule->next_hop != NULL) {
		if (!split_next_hop(rule->next_hop, host, sizeof(host),
				    &port)) {
			fprintf(stderr, "smtpgw: [domain:%s] next_hop '%s' "
					"is not HOST:PORT\n",
				rule->name, rule->next_hop);
			ev_loop_destroy(loop);
			return 1;
		}
		printf("static route [domain:%s] next_hop = %s\n", rule->name,
		       rule->next_hop);
		rc = resolve(loop, cfg, host, NULL, port);
	} else {
		rc = resolve(loop, cfg, NULL, o->domain, port);
	}
	ev_loop_destroy(loop);
	return rc;
}
