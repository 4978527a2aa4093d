/*
 * libFuzzer target for src/core/config.c, the gateway.ini reader (`make
 * fuzz`; `make check` replays spec/fuzz/corpus/config/). config_load reads
 * a file by path, so the harness writes each input to one memfd and hands
 * over /proc/self/fd/N; that I/O is the harness's, the parser gets a file
 * as it would from a person.
 *
 * Beyond the sanitizers (inih included, as it is linked) it checks, and
 * abort()s when one fails: a refused file gets an error that starts with
 * the file's name and, when it names a line, a line the file has; an
 * accepted one answers the lookups made of it (relay domain, domain rule,
 * relay client) and frees cleanly.
 */
#include "core/config.h"

#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(cond)                                                          \
	do {                                                                   \
		if (!(cond))                                                   \
			abort();                                               \
	} while (0)

static int file_fd = -1;
static char file_path[64];

static void write_file(const uint8_t *data, size_t size)
{
	if (file_fd < 0) {
		file_fd = memfd_create("fuzz-gateway.ini", 0);
		REQUIRE(file_fd >= 0);
		snprintf(file_path, sizeof(file_path), "/proc/self/fd/%d",
		         file_fd);
	}
	REQUIRE(ftruncate(file_fd, 0) == 0);
	for (size_t done = 0; done < size;) {
		ssize_t n =
		    pwrite(file_fd, data + done, size - done, (off_t)done);
		REQUIRE(n > 0);
		done += (size_t)n;
	}
}

static size_t count_lines(const uint8_t *data, size_t size)
{
	size_t n = 1;

	for (size_t i = 0; i < size; i++)
		n += data[i] == '\n';
	return n;
}

static void check_error(const char *err, size_t lines)
{
	size_t plen = strlen(file_path);

	REQUIRE(strncmp(err, file_path, plen) == 0 && err[plen] == ':');
	if (err[plen + 1] >= '0' && err[plen + 1] <= '9') {
		unsigned long line = strtoul(err + plen + 1, NULL, 10);
		REQUIRE(line >= 1 && line <= lines);
	}
}

static void use_config(const struct config *cfg)
{
	static const char *const domains[] = {
	    "example.test", "sub.example.test", "partner.example", "", "."};
	struct sockaddr_in v4 = {.sin_family = AF_INET,
	                         .sin_addr.s_addr = htonl(0x7f000001)};
	struct sockaddr_in6 v6 = {.sin6_family = AF_INET6,
	                          .sin6_addr = IN6ADDR_LOOPBACK_INIT};

	for (size_t i = 0; i < sizeof(domains) / sizeof(domains[0]); i++) {
		size_t len = strlen(domains[i]);
		(void)config_is_relay_domain(cfg, domains[i], len);
		(void)config_domain_rule(cfg, domains[i], len);
	}
	(void)config_is_relay_client(cfg, (const struct sockaddr *)&v4);
	(void)config_is_relay_client(cfg, (const struct sockaddr *)&v6);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[512] = "";
	struct config *cfg;

	write_file(data, size);
	cfg = config_load(file_path, err, sizeof(err));
	if (cfg == NULL) {
		check_error(err, count_lines(data, size));
		return 0;
	}
	use_config(cfg);
	config_free(cfg);
	return 0;
}
