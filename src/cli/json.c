/*
 * json: escaping and the counters' nesting (see json.h). The counters'
 * dotted keys come in core/stats's table order, where the keys of one
 * object are adjacent, so one pass opens and closes the objects.
 */
#include "cli/json.h"

#include "core/stats.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

/* The length of the UTF-8 sequence at s (RFC 3629: no overlongs, no
 * surrogates, nothing past U+10FFFF), or 0 when it is not one. */
static size_t utf8_len(const unsigned char *s)
{
	size_t n = s[0] >= 0xf0 ? 4 : s[0] >= 0xe0 ? 3 : s[0] >= 0xc2 ? 2 : 0;

	if (n == 0 || s[0] > 0xf4)
		return 0;
	for (size_t i = 1; i < n; i++)
		if ((s[i] & 0xc0) != 0x80)
			return 0;
	if ((s[0] == 0xe0 && s[1] < 0xa0) || (s[0] == 0xed && s[1] > 0x9f) ||
	    (s[0] == 0xf0 && s[1] < 0x90) || (s[0] == 0xf4 && s[1] > 0x8f))
		return 0;
	return n;
}

void json_str(FILE *f, const char *value)
{
	const unsigned char *p = (const unsigned char *)value;

	if (value == NULL) {
		fputs("null", f);
		return;
	}
	fputc('"', f);
	while (*p != '\0') {
		size_t n;

		if (*p == '"' || *p == '\\') {
			fprintf(f, "\\%c", *p++);
		} else if (*p < 0x20 || *p == 0x7f) {
			fprintf(f, "\\u%04x", *p++);
		} else if (*p < 0x80) {
			fputc(*p++, f);
		} else if ((n = utf8_len(p)) > 0) {
			fwrite(p, 1, n, f);
			p += n;
		} else {
			fputs("\\ufffd", f);
			p++;
		}
	}
	fputc('"', f);
}

/* How many leading dotted parts two keys share (their last parts, the
 * leaves, never count). */
static size_t shared_parts(const char *a, const char *b)
{
	size_t parts = 0;

	for (size_t i = 0; a[i] != '\0' && a[i] == b[i]; i++)
		parts += a[i] == '.';
	return parts;
}

static size_t parts_of(const char *key)
{
	size_t n = 0;

	for (; *key != '\0'; key++)
		n += *key == '.';
	return n; /* objects above the leaf */
}

/* The `i`-th dotted part of key, written as a JSON key. */
static void write_part(FILE *f, const char *key, size_t i)
{
	for (; i > 0; i--)
		key = strchr(key, '.') + 1;
	fprintf(f, "\"%.*s\":", (int)strcspn(key, "."), key);
}

void json_counters(FILE *f, const struct stats *st)
{
	const char *prev = "";
	size_t open = 0;

	fputc('{', f);
	for (int id = 0; id < STAT_COUNT; id++) {
		const char *key = stat_describe((enum stat_id)id)->key;
		size_t keep = shared_parts(prev, key), depth = parts_of(key);

		if (keep > open)
			keep = open;
		for (; open > keep; open--)
			fputc('}', f);
		if (id > 0)
			fputc(',', f);
		for (; open < depth; open++) {
			write_part(f, key, open);
			fputc('{', f);
		}
		write_part(f, key, depth);
		fprintf(f, "%" PRIu64, stats_total(st, (enum stat_id)id));
		prev = key;
	}
	for (; open > 0; open--)
		fputc('}', f);
	fputc('}', f);
}
