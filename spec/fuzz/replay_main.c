/*
 * A main() for a libFuzzer harness without libFuzzer: `make check` builds
 * each spec/fuzz/fuzz_NAME.c with this file, $(CC) and CFLAGS_CHECK (ASan,
 * UBSan), and spec/run.sh runs it on spec/fuzz/corpus/NAME/. It calls
 * LLVMFuzzerTestOneInput once per file of the directory (dot files aside), in
 * name order, and prints TAP: "ok N - FILE" after each input came back (a
 * sanitizer report or a harness's abort() ends the process, which the
 * runner counts as a failure), "not ok" for a file it cannot read.
 * It owns the reading of files; it must not judge the inputs itself.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The whole file, malloc'd to exactly its size so that ASan sees any
 * read past the end; NULL when it cannot be read. */
static uint8_t *read_all(const char *path, size_t *size)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	long n;

	if (f == NULL)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 &&
	    fseek(f, 0, SEEK_SET) == 0 &&
	    (buf = malloc(n > 0 ? (size_t)n : 1)) != NULL &&
	    fread(buf, 1, (size_t)n, f) != (size_t)n) {
		free(buf);
		buf = NULL;
	}
	if (buf != NULL)
		*size = (size_t)n;
	fclose(f);
	return buf;
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name);
}

static int visible(const struct dirent *d)
{
	return d->d_name[0] != '.';
}

int main(int argc, char **argv)
{
	struct dirent **names;
	int n, failed = 0;

	if (argc != 2) {
		fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
		return 2;
	}
	if ((n = scandir(argv[1], &names, visible, by_name)) < 0) {
		perror(argv[1]);
		return 2;
	}
	for (int i = 0; i < n; i++) {
		char path[4096];
		size_t size = 0;
		uint8_t *data;

		snprintf(path, sizeof(path), "%s/%s", argv[1],
		         names[i]->d_name);
		if ((data = read_all(path, &size)) == NULL) {
			printf("not ok %d - %s: cannot read\n", i + 1, path);
			failed++;
		} else {
			LLVMFuzzerTestOneInput(data, size);
			printf("ok %d - %s (%zu octets)\n", i + 1, path, size);
			fflush(stdout);
			free(data);
		}
		free(names[i]);
	}
	free(names);
	printf("1..%d\n", n);
	return failed ? 1 : 0;
}
