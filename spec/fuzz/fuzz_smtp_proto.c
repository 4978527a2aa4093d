/*
 * libFuzzer target for src/proto/smtp_proto.c (`make fuzz`; `make check`
 * replays spec/fuzz/corpus/smtp_proto/ through spec/fuzz/replay_main.c).
 *
 * Every input goes through every parser. Beyond the sanitizers it checks
 * properties, and abort()s when one fails:
 *  - results point inside the caller's buffers and agree with each other;
 *  - an accepted address re-parses to itself as "<mailbox>";
 *  - the DATA decoder gives identical output, status and flags whether the
 *    input comes in one piece, one octet at a time or in pseudo-random
 *    chunks, and matches a slow, obviously-correct reference decoder;
 *  - a decoder call writes no more than the len + 2 octets it is allowed.
 */
#include "proto/smtp_proto.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(cond)                                                          \
	do {                                                                   \
		if (!(cond))                                                   \
			abort();                                               \
	} while (0)

static bool inside(const char *p, size_t n, const char *buf, size_t len)
{
	return p >= buf && n <= len && (size_t)(p - buf) <= len - n;
}

/* ---- addresses ---- */

static bool path_was_valid(enum smtp_path_status st)
{
	return st == SMTP_PATH_OK || st == SMTP_PATH_NEED_UTF8 ||
	       st == SMTP_PATH_NO_DOMAIN || st == SMTP_PATH_BAD_PARAM ||
	       st == SMTP_PATH_NULL_RCPT;
}

static void check_addr(const struct smtp_addr *a)
{
	REQUIRE(a->mailbox_len <= SMTP_PATH_MAX - 2);
	REQUIRE(strlen(a->mailbox) == a->mailbox_len);
	REQUIRE(a->local_len <= SMTP_LOCAL_PART_MAX);
	REQUIRE(a->domain <= a->mailbox_len);
	if (a->domain < a->mailbox_len) {
		REQUIRE(a->domain == a->local_len + 1);
		REQUIRE(a->mailbox[a->local_len] == '@');
		REQUIRE(a->mailbox_len - a->domain <= SMTP_DOMAIN_MAX);
		REQUIRE(smtp_domain_matches(a->mailbox + a->domain,
					    a->mailbox_len - a->domain,
					    a->mailbox + a->domain,
					    a->mailbox_len - a->domain));
	} else {
		REQUIRE(a->domain == a->local_len && !a->literal);
	}
	REQUIRE(a->is_null == (a->mailbox_len == 0));
	bool eight = false;
	for (size_t i = 0; i < a->mailbox_len; i++)
		eight |= (unsigned char)a->mailbox[i] >= 0x80;
	REQUIRE(a->utf8 == eight);
}

/* "<mailbox>" must parse back to the same address, minus any route. */
static void check_round_trip(const struct smtp_addr *a)
{
	char buf[SMTP_PATH_MAX + 1];
	struct smtp_addr b;

	buf[0] = '<';
	memcpy(buf + 1, a->mailbox, a->mailbox_len);
	buf[a->mailbox_len + 1] = '>';
	REQUIRE(smtp_parse_rcpt(buf, a->mailbox_len + 2, true, &b, NULL,
				NULL) == SMTP_PATH_OK);
	REQUIRE(b.mailbox_len == a->mailbox_len);
	REQUIRE(memcmp(b.mailbox, a->mailbox, a->mailbox_len) == 0);
	REQUIRE(b.local_len == a->local_len && b.domain == a->domain);
	REQUIRE(b.routing_chars == a->routing_chars && b.utf8 == a->utf8 &&
		b.literal == a->literal && !b.has_route);
}

static void check_bad(enum smtp_path_status st, const char *bad,
		      size_t bad_len, const char *arg, size_t len)
{
	if (st == SMTP_PATH_BAD_PARAM) {
		REQUIRE(bad_len > 0 && inside(bad, bad_len, arg, len));
		REQUIRE(memchr(bad, ' ', bad_len) == NULL);
	} else {
		REQUIRE(bad == NULL && bad_len == 0);
	}
}

static void fuzz_mail(const char *arg, size_t len)
{
	struct smtp_addr a;
	struct smtp_mail_params p;
	const char *bad;
	size_t bad_len;
	enum smtp_path_status st =
		smtp_parse_mail(arg, len, &a, &p, &bad, &bad_len);

	check_bad(st, bad, bad_len, arg, len);
	if (path_was_valid(st))
		check_addr(&a);
	REQUIRE(st != SMTP_PATH_NULL_RCPT);
	if (st != SMTP_PATH_OK)
		return;
	REQUIRE(!a.utf8 || p.smtputf8);
	if (!a.is_null)
		check_round_trip(&a);
}

static void fuzz_rcpt(const char *arg, size_t len)
{
	struct smtp_addr a, b;
	const char *bad;
	size_t bad_len;
	enum smtp_path_status st =
		smtp_parse_rcpt(arg, len, true, &a, &bad, &bad_len);
	enum smtp_path_status st7 =
		smtp_parse_rcpt(arg, len, false, &b, NULL, NULL);

	check_bad(st, bad, bad_len, arg, len);
	/* Declaring SMTPUTF8 can only turn NEED_UTF8 into OK. */
	REQUIRE(st == st7 ||
		(st == SMTP_PATH_OK && st7 == SMTP_PATH_NEED_UTF8));
	REQUIRE(st != SMTP_PATH_NEED_UTF8);
	if (!path_was_valid(st))
		return;
	check_addr(&a);
	REQUIRE(memcmp(&a, &b, sizeof(a)) == 0);
	if (st == SMTP_PATH_OK) {
		REQUIRE(!a.is_null);
		check_round_trip(&a);
	}
}

static void fuzz_command(const char *line, size_t len)
{
	struct smtp_cmd c;
	enum smtp_cmd_status st = smtp_parse_command(line, len, &c);

	REQUIRE(st <= SMTP_CMD_BAD_OCTETS);
	REQUIRE(inside(c.arg, c.arg_len, line, len));
	REQUIRE(smtp_verb_name(c.verb) != NULL);
	if (st != SMTP_CMD_OK)
		return;
	REQUIRE(c.verb != SMTP_VERB_UNKNOWN);
	if (c.arg_len > 0)
		REQUIRE(c.arg[c.arg_len - 1] != ' ' &&
			c.arg[c.arg_len - 1] != '\t');
	if (c.verb == SMTP_VERB_MAIL)
		fuzz_mail(c.arg, c.arg_len);
	else if (c.verb == SMTP_VERB_RCPT)
		fuzz_rcpt(c.arg, c.arg_len);
}

static void fuzz_reply(const char *line, size_t len)
{
	struct smtp_reply_line r;

	if (!smtp_parse_reply_line(line, len, &r))
		return;
	REQUIRE(r.code >= 200 && r.code <= 599);
	REQUIRE(inside(r.text, r.text_len, line, len));
	REQUIRE(r.text_len + (len > 3 ? 4 : 3) == len);
	REQUIRE(r.more == (len > 3 && line[3] == '-'));
}

static void fuzz_domain_matches(const char *s, size_t len)
{
	size_t half = len / 2;
	bool m = smtp_domain_matches(s, half, s + half, len - half);
	/* Equal-length matches are symmetric: plain comparison. */
	if (half == len - half && s[half] != '.')
		REQUIRE(m ==
			smtp_domain_matches(s + half, len - half, s, half));
}

/* ---- DATA decoder ---- */

struct data_result {
	enum smtp_data_status st;
	size_t consumed;
	size_t out_len;
	struct smtp_data_decoder d;
};

/*
 * Feeds `in` in chunks whose sizes come from `next_chunk`; each call writes
 * into the tail of `scratch` so that ASan catches any octet past len + 2.
 */
typedef size_t (*chunker)(uint64_t *rng, size_t left);

static void data_run(const char *in, size_t len, chunker next_chunk,
		     uint64_t seed, char *out, char *scratch,
		     struct data_result *r)
{
	size_t pos = 0;

	smtp_data_init(&r->d);
	r->st = SMTP_DATA_MORE;
	r->out_len = 0;
	while (r->st == SMTP_DATA_MORE && pos < len) {
		size_t n = next_chunk(&seed, len - pos), w = 0, used = 0;
		char *dst = scratch + (len - n);
		r->st = smtp_data_feed(&r->d, in + pos, n, dst, &w, &used);
		REQUIRE(used <= n && w <= n + 2);
		REQUIRE(r->st == SMTP_DATA_END || used == n);
		memcpy(out + r->out_len, dst, w);
		r->out_len += w;
		pos += used;
	}
	r->consumed = pos;
	REQUIRE(r->d.size == r->out_len);
}

static size_t chunk_all(uint64_t *rng, size_t left)
{
	(void)rng;
	return left;
}

static size_t chunk_one(uint64_t *rng, size_t left)
{
	(void)rng;
	(void)left;
	return 1;
}

/* xorshift64: any split pattern will do, as long as it is reproducible. */
static size_t chunk_random(uint64_t *rng, size_t left)
{
	*rng ^= *rng << 13;
	*rng ^= *rng >> 7;
	*rng ^= *rng << 17;
	size_t n = (size_t)(*rng % 9);
	if (n == 0)
		n = 1 + (size_t)((*rng >> 8) % 64);
	return n < left ? n : left;
}

/*
 * Reference decoder, one octet at a time straight from the RFC 5321 rules,
 * written for clarity rather than speed: line starts are the beginning and
 * any raw CRLF; there ".\r\n" ends and a leading '.' is dropped.
 */
static void data_reference(const char *in, size_t len, char *out,
			   struct data_result *r)
{
	struct smtp_data_decoder *d = &r->d;
	bool bol = true;
	size_t i = 0, o = 0;

	memset(r, 0, sizeof(*r));
	while (i < len) {
		if (bol && len - i >= 3 && memcmp(in + i, ".\r\n", 3) == 0) {
			r->st = SMTP_DATA_END;
			i += 3;
			break;
		}
		if (bol && in[i] == '.') {
			bol = false;
			i++;
			/* ".\r" at the end may still become the end marker. */
			if (len - i == 1 && in[i] == '\r') {
				i++;
				break;
			}
			continue;
		}
		char c = in[i];
		out[o++] = c;
		d->line_len++;
		d->long_line |= d->line_len > SMTP_TEXT_LINE_MAX;
		d->nul |= c == '\0';
		d->bare_lf |= c == '\n' && (i == 0 || in[i - 1] != '\r');
		d->bare_cr |= c == '\r' && i + 1 < len && in[i + 1] != '\n';
		bol = c == '\n' && i > 0 && in[i - 1] == '\r';
		if (bol)
			d->line_len = 0;
		i++;
	}
	r->consumed = i;
	r->out_len = o;
	d->size = o;
}

static bool same_flags(const struct smtp_data_decoder *a,
		       const struct smtp_data_decoder *b)
{
	return a->line_len == b->line_len && a->size == b->size &&
	       a->bare_lf == b->bare_lf && a->bare_cr == b->bare_cr &&
	       a->long_line == b->long_line && a->nul == b->nul;
}

static void require_same(const struct data_result *a, const char *out_a,
			 const struct data_result *b, const char *out_b)
{
	REQUIRE(a->st == b->st && a->consumed == b->consumed);
	REQUIRE(a->out_len == b->out_len);
	REQUIRE(memcmp(out_a, out_b, a->out_len) == 0);
	REQUIRE(same_flags(&a->d, &b->d));
}

static uint64_t seed_of(const uint8_t *data, size_t size)
{
	uint64_t h = 1469598103934665603u; /* FNV-1a */
	for (size_t i = 0; i < size; i++)
		h = (h ^ data[i]) * 1099511628211u;
	return h ? h : 1;
}

static void fuzz_data(const char *in, size_t len, uint64_t seed)
{
	char *buf = malloc(4 * len + 8);
	char *scratch = malloc(len + 2);
	struct data_result whole, split, ref;

	REQUIRE(buf != NULL && scratch != NULL);
	char *out_whole = buf, *out_split = buf + len + 2,
	     *out_ref = buf + 2 * (len + 2);
	data_run(in, len, chunk_all, 0, out_whole, scratch, &whole);
	data_reference(in, len, out_ref, &ref);
	require_same(&whole, out_whole, &ref, out_ref);
	data_run(in, len, chunk_one, 0, out_split, scratch, &split);
	require_same(&whole, out_whole, &split, out_split);
	REQUIRE(whole.d.state == split.d.state);
	data_run(in, len, chunk_random, seed, out_split, scratch, &split);
	require_same(&whole, out_whole, &split, out_split);
	REQUIRE(whole.d.state == split.d.state);
	free(scratch);
	free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *s = (const char *)data;

	fuzz_command(s, size);
	fuzz_mail(s, size);
	fuzz_rcpt(s, size);
	fuzz_reply(s, size);
	fuzz_domain_matches(s, size);
	fuzz_data(s, size, seed_of(data, size));
	return 0;
}
