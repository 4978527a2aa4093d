/*
 * route_command: `smtpgw -c FILE route DOMAIN [--port N]` prints where
 * mail for DOMAIN would go: the next_hop of its [domain:...] section, the
 * relayhost, or its MX hosts, each with its addresses. It runs the gateway's own dns
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

void route_print_source(const struct route *rt)
{
	char hop[NEXT_HOP_TEXT_MAX + 8];

	if (rt->hop != NULL)
		next_hop_format(rt->hop, hop, sizeof(hop));
	switch (rt->source) {
	case ROUTE_NEXT_HOP:
		if (rt->rule != NULL)
			printf("static route [domain:%s] next_hop = %s (%s)\n",
			       rt->rule->name, rt->rule->next_hop,
			       rt->hop->no_mx ? "no MX lookup" : "MX lookup");
		else
			printf("next hop %s (%s)\n", hop,
			       rt->hop->no_mx ? "no MX lookup" : "MX lookup");
		break;
	case ROUTE_RELAYHOST:
		printf("relayhost = %s (%s)\n", hop,
		       rt->hop->no_mx ? "no MX lookup" : "MX lookup");
		break;
	case ROUTE_MX:
		break;
	}
	if (rt->tls_name != NULL)
		printf("tls_name = %s\n", rt->tls_name);
}

bool route_resolve(const struct config *cfg, const struct route *rt,
		   const char *domain, unsigned port, struct dns_route *out)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct answer a = {.loop = loop};
	char err[512];
	struct dns *dns = loop ? dns_new(loop, cfg, err, sizeof(err)) : NULL;

	if (dns == NULL) {
		fprintf(stderr, "smtpgw: %s\n",
			loop ? err : "cannot create an event loop");
		if (loop != NULL)
			ev_loop_destroy(loop);
		return false;
	}
	if (rt->hop != NULL)
		dns_route_for(dns, rt, domain, 1, on_route, &a);
	else /* the MX route, on the port asked for */
		dns_mx_route(dns, domain, port, 1, on_route, &a);
	/* The dns code's own deadline makes sure the answer comes. */
	while (!a.done)
		ev_run(loop, 0);
	dns_free(dns);
	ev_loop_destroy(loop);
	*out = a.route;
	return true;
}

int route_command(const struct config *cfg, const struct route_options *o)
{
	struct route rt;
	struct dns_route answer;

	config_route(cfg, o->domain, strlen(o->domain), &rt);
	if (!route_resolve(cfg, &rt, o->domain, o->port, &answer))
		return 1;
	route_print_source(&rt);
	return print_route(&answer);
}
