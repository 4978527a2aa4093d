/*
 * libFuzzer target for src/proto/envelope.c, the queue-file header parser
 * (`make fuzz`; `make check` replays spec/fuzz/corpus/envelope/).
 *
 * The input is copied to a buffer of exactly its size, with no NUL after
 * it, as spool/queue.c hands a header over, so ASan sees any read past
 * `len`. Beyond the sanitizers it checks, and abort()s when one fails:
 *  - the offset returned is 0 (with a reason) or just after a blank line
 *    inside the input;
 *  - what was accepted formats back (envelope_format) into a header that
 *    parses to the same envelope, and formats to the same octets again.
 */
#include "proto/envelope.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(cond)                                                          \
	do {                                                                   \
		if (!(cond))                                                   \
			abort();                                               \
	} while (0)

static const char MAGIC[] = "smtpgw-queue-file: 1\n";

static bool same(const struct envelope *a, const struct envelope *b)
{
	if (strcmp(a->qid, b->qid) != 0 || a->arrival != b->arrival ||
	    strcmp(a->client, b->client) != 0 ||
	    strcmp(a->helo ? a->helo : "", b->helo ? b->helo : "") != 0 ||
	    strcmp(a->sender, b->sender) != 0 || a->n_rcpts != b->n_rcpts ||
	    a->body != b->body || a->smtputf8 != b->smtputf8 ||
	    a->requiretls != b->requiretls)
		return false;
	for (size_t i = 0; i < a->n_rcpts; i++)
		if (strcmp(a->rcpts[i], b->rcpts[i]) != 0)
			return false;
	return true;
}

static char *with_magic(const char *text, size_t len, size_t *out_len)
{
	char *full = malloc(sizeof(MAGIC) - 1 + len);

	REQUIRE(full != NULL);
	memcpy(full, MAGIC, sizeof(MAGIC) - 1);
	memcpy(full + sizeof(MAGIC) - 1, text, len);
	*out_len = sizeof(MAGIC) - 1 + len;
	return full;
}

static void round_trip(const struct envelope *e)
{
	struct envelope back;
	size_t len, len2, full_len;
	char err[128];
	char *text = envelope_format(e, &len);

	REQUIRE(text != NULL);
	char *full = with_magic(text, len, &full_len);
	REQUIRE(envelope_parse(full, full_len, &back, err, sizeof(err)) ==
	        full_len);
	REQUIRE(same(e, &back));
	char *again = envelope_format(&back, &len2);
	REQUIRE(again != NULL && len2 == len && memcmp(again, text, len) == 0);
	free(again);
	envelope_free(&back);
	free(full);
	free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* Half the inputs get the magic line for free, so the fuzzer spends
	 * its time on the fields rather than on finding the magic. */
	bool add_magic = size > 0 && (data[0] & 1);
	size_t len = 0;
	char *buf = add_magic
	                ? with_magic((const char *)data + 1, size - 1, &len)
	                : malloc(size ? size : 1);
	struct envelope e;
	char err[128] = "";

	REQUIRE(buf != NULL);
	if (!add_magic) {
		memcpy(buf, data, size);
		len = size;
	}
	size_t off = envelope_parse(buf, len, &e, err, sizeof(err));
	if (off == 0) {
		REQUIRE(err[0] != '\0' && e.rcpts == NULL && e.sender == NULL);
	} else {
		REQUIRE(off >= sizeof(MAGIC) && off <= len);
		REQUIRE(buf[off - 1] == '\n' && buf[off - 2] == '\n');
		REQUIRE(e.n_rcpts > 0 && e.sender != NULL &&
		        strlen(e.qid) == QUEUE_ID_LEN);
		REQUIRE(memchr(buf, '\0', off) == NULL);
		round_trip(&e);
		envelope_free(&e);
	}
	free(buf);
	return 0;
}
