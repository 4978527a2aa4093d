/*
 * libFuzzer target for src/proto/log_format.c, the log line renderer
 * (`make fuzz`; `make check` replays spec/fuzz/corpus/log_format/).
 *
 * The input is split at NUL octets: the first piece names the event, the
 * next ones alternate key and value (a hostile HELO, address or reply is
 * a value). Each event is rendered as a key=value line and as every
 * Postfix line, for each kind of process. Beyond the sanitizers it checks,
 * and abort()s when one fails:
 *  - each output is NUL-terminated at the length returned, within its room;
 *  - no output holds a control octet (CR, LF, ...): a value can never end
 *    a line or start a forged one;
 *  - a Postfix event has at most 3 lines.
 */
#include "proto/log_format.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(cond)                                                          \
	do {                                                                   \
		if (!(cond))                                                   \
			abort();                                               \
	} while (0)

static void clean(const char *out, size_t n, size_t cap)
{
	REQUIRE(n < cap && out[n] == '\0' && strlen(out) == n);
	for (size_t i = 0; i < n; i++)
		REQUIRE((unsigned char)out[i] >= 0x20 &&
			(unsigned char)out[i] != 0x7f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const enum log_role roles[] = {LOG_ROLE_COMMAND, LOG_ROLE_MASTER,
					      LOG_ROLE_WORKER, LOG_ROLE_QMGR};
	char *text = malloc(size + 1), out[600];
	struct log_event e = {.level = size > 0 ? data[0] % 5 : 0};
	char *p, *end;

	REQUIRE(text != NULL);
	memcpy(text, data, size);
	text[size] = '\0';
	end = text + size;
	e.name = text;
	p = text + strlen(text) + 1;
	while (p < end && e.n < LOG_FIELDS_MAX) {
		char *value = p + strlen(p) + 1;

		if (value > end)
			break;
		e.fields[e.n++] = (struct log_field){p, value};
		p = value + strlen(value) + 1;
	}
	clean(out, log_format_kv(&e, "2026-11-27T10:00:00.000Z", "worker1",
				 out, sizeof(out)),
	      sizeof(out));
	for (size_t r = 0; r < sizeof(roles) / sizeof(roles[0]); r++) {
		unsigned k = 0;
		const char *program = NULL;
		size_t n;

		while ((n = log_format_postfix(&e, roles[r], k, &program, out,
					       sizeof(out))) > 0) {
			clean(out, n, sizeof(out));
			REQUIRE(program != NULL && ++k <= 3);
		}
	}
	free(text);
	return 0;
}
