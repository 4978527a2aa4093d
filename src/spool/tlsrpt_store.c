/*
 * tlsrpt_store.c: the SPOOL/tlsrpt tree behind tlsrpt_store.h. Files are
 * opened, used and closed within each call: no descriptor is kept, no
 * state lives here. Appends are O_APPEND writes of whole lines, so two
 * writers never interleave inside a line (there is one writer, the queue
 * manager, but a restart may overlap a dying one's last flush); a line cut
 * by a crash is read as a bad line and skipped.
 */
#include "spool/tlsrpt_store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum { PATH_LEN = 4096 };

static const char SENT_SUFFIX[] = ".sent";
static const char REQUEST_PREFIX[] = "send-";

void tlsrpt_date_of(long long t, char *out)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (gmtime_r(&tt, &tm) == NULL ||
	    strftime(out, TLSRPT_DATE_LEN + 1, "%Y-%m-%d", &tm) !=
		    TLSRPT_DATE_LEN)
		snprintf(out, TLSRPT_DATE_LEN + 1, "1970-01-01");
}

bool tlsrpt_date_start(const char *date, long long *out)
{
	struct tm tm = {0};
	char back[TLSRPT_DATE_LEN + 1];
	const char *end;

	if (strlen(date) != TLSRPT_DATE_LEN ||
	    (end = strptime(date, "%Y-%m-%d", &tm)) == NULL || *end != '\0')
		return false;
	*out = (long long)timegm(&tm);
	tlsrpt_date_of(*out, back);
	return strcmp(back, date) == 0; /* 2026-02-30 is not a date */
}

bool tlsrpt_store_domain_ok(const char *d)
{
	size_t n = strlen(d);

	if (n == 0 || n > 253 || d[0] == '.' || d[0] == '-' || d[n - 1] == '.')
		return false;
	for (; *d != '\0'; d++)
		if (!((*d >= 'a' && *d <= 'z') || (*d >= '0' && *d <= '9') ||
		      *d == '-' || *d == '_' || (*d == '.' && d[1] != '.')))
			return false;
	return true;
}

static bool date_ok(const char *date)
{
	long long t;

	return tlsrpt_date_start(date, &t);
}

static bool path_of(char *out, const char *spool, const char *date,
		    const char *name, const char *suffix)
{
	int n;

	if (date == NULL)
		n = snprintf(out, PATH_LEN, "%s/tlsrpt", spool);
	else if (name == NULL)
		n = snprintf(out, PATH_LEN, "%s/tlsrpt/%s", spool, date);
	else
		n = snprintf(out, PATH_LEN, "%s/tlsrpt/%s/%s%s", spool, date,
			     name, suffix);
	return n > 0 && n < PATH_LEN;
}

static bool make_dir(const char *path)
{
	return mkdir(path, 0700) == 0 || errno == EEXIST;
}

static bool write_all(int fd, const char *p, size_t len)
{
	while (len > 0) {
		ssize_t w = write(fd, p, len);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return false;
		p += w;
		len -= (size_t)w;
	}
	return true;
}

/* The DOMAIN file open for appending, made with its magic line if new. */
static int open_for_append(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC,
		      0600);

	if (fd >= 0) {
		if (!write_all(fd, TLSRPT_FILE_MAGIC,
			       sizeof(TLSRPT_FILE_MAGIC) - 1)) {
			close(fd);
			return -1;
		}
		return fd;
	}
	if (errno != EEXIST)
		return -1;
	return open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
}

bool tlsrpt_store_append(const char *spool, const char *date,
			 const char *domain, const char *lines, size_t len)
{
	char path[PATH_LEN];
	struct stat st;
	bool ok;
	int fd;

	if (!date_ok(date) || !tlsrpt_store_domain_ok(domain)) {
		errno = EINVAL;
		return false;
	}
	if (!path_of(path, spool, NULL, NULL, NULL) || !make_dir(path) ||
	    !path_of(path, spool, date, NULL, NULL) || !make_dir(path) ||
	    !path_of(path, spool, date, domain, ""))
		return false;
	if ((fd = open_for_append(path)) < 0)
		return false;
	if (fstat(fd, &st) == 0 && st.st_size + (off_t)len > TLSRPT_FILE_MAX) {
		close(fd);
		errno = EFBIG;
		return false;
	}
	ok = write_all(fd, lines, len);
	return close(fd) == 0 && ok;
}

/* ---- reading ------------------------------------------------------------- */

static char *read_file(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	char *buf = NULL;
	ssize_t got;

	*len = 0;
	if (fd < 0)
		return NULL;
	if (fstat(fd, &st) == 0 && st.st_size <= TLSRPT_FILE_MAX &&
	    (buf = malloc((size_t)st.st_size + 1)) != NULL) {
		got = pread(fd, buf, (size_t)st.st_size, 0);
		*len = got > 0 ? (size_t)got : 0;
	}
	close(fd);
	return buf;
}

/* Every line of one file into list (merged); the magic line first. */
static void read_lines(const char *path, struct tlsrpt_entry *list,
		       size_t *n, size_t *dropped)
{
	size_t len, magic = sizeof(TLSRPT_FILE_MAGIC) - 1;
	char *buf = read_file(path, &len);
	struct tlsrpt_entry *e = malloc(sizeof(*e));

	if (buf != NULL && e != NULL && len >= magic &&
	    memcmp(buf, TLSRPT_FILE_MAGIC, magic) == 0) {
		for (size_t i = magic; i < len;) {
			char *nl = memchr(buf + i, '\n', len - i);
			size_t end = nl ? (size_t)(nl - buf) : len;

			if (!tlsrpt_entry_parse(buf + i, end - i, e) ||
			    !tlsrpt_entries_add(list, n, TLSRPT_MAX_KEYS, e))
				(*dropped)++;
			i = end + 1;
		}
	} else if (buf != NULL) {
		(*dropped)++; /* not a record file */
	}
	free(e);
	free(buf);
}

struct tlsrpt_entry *tlsrpt_store_read(const char *spool, const char *date,
				       const char *domain,
				       enum tlsrpt_which which, size_t *n,
				       size_t *dropped)
{
	struct tlsrpt_entry *list;
	char path[PATH_LEN];

	*n = 0;
	*dropped = 0;
	if (!date_ok(date) || !tlsrpt_store_domain_ok(domain) ||
	    (list = calloc(TLSRPT_MAX_KEYS, sizeof(*list))) == NULL)
		return NULL;
	if (which != TLSRPT_UNSENT &&
	    path_of(path, spool, date, domain, SENT_SUFFIX))
		read_lines(path, list, n, dropped);
	if (which != TLSRPT_SENT && path_of(path, spool, date, domain, ""))
		read_lines(path, list, n, dropped);
	if (*n == 0) {
		free(list);
		errno = ENOENT;
		return NULL;
	}
	return list;
}

/* ---- listing ------------------------------------------------------------- */

static int by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool push(char ***list, size_t *n, size_t *cap, const char *s,
		 size_t len)
{
	char *copy = strndup(s, len);

	if (copy == NULL)
		return false;
	if (*n == *cap) {
		size_t grown_cap = *cap ? *cap * 2 : 16;
		char **grown = realloc(*list, grown_cap * sizeof(*grown));

		if (grown == NULL) {
			free(copy);
			return false;
		}
		*list = grown;
		*cap = grown_cap;
	}
	(*list)[(*n)++] = copy;
	return true;
}

/* The names of `dir` that `keep` accepts, cut to *keep's length. */
typedef bool keep_fn(const char *name, size_t *len, const void *arg);

static char **list_dir(const char *dir, keep_fn *keep, const void *arg,
		       size_t *n)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char **list = NULL;
	size_t cap = 0;

	*n = 0;
	while (d != NULL && (e = readdir(d)) != NULL) {
		size_t len = strlen(e->d_name);
		bool dup = false;

		if (!keep(e->d_name, &len, arg))
			continue;
		for (size_t i = 0; i < *n && !dup; i++)
			dup = strlen(list[i]) == len &&
			      memcmp(list[i], e->d_name, len) == 0;
		if (!dup && !push(&list, n, &cap, e->d_name, len))
			break;
	}
	if (d != NULL)
		closedir(d);
	if (*n > 0)
		qsort(list, *n, sizeof(*list), by_name);
	return list;
}

void tlsrpt_store_free_list(char **list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(list[i]);
	free(list);
}

static bool keep_day(const char *name, size_t *len, const void *arg)
{
	(void)arg;
	(void)len;
	return date_ok(name);
}

char **tlsrpt_store_days(const char *spool, size_t *n)
{
	char path[PATH_LEN];

	*n = 0;
	if (!path_of(path, spool, NULL, NULL, NULL))
		return NULL;
	return list_dir(path, keep_day, NULL, n);
}

/* DOMAIN, and (unless unsent only) DOMAIN.sent as DOMAIN. */
static bool keep_domain(const char *name, size_t *len, const void *arg)
{
	const bool *unsent_only = arg;
	size_t s = sizeof(SENT_SUFFIX) - 1;
	char base[256];

	if (*len > s && strcmp(name + *len - s, SENT_SUFFIX) == 0) {
		if (*unsent_only || *len - s >= sizeof(base))
			return false;
		*len -= s;
	}
	if (*len >= sizeof(base))
		return false;
	memcpy(base, name, *len);
	base[*len] = '\0';
	return tlsrpt_store_domain_ok(base);
}

char **tlsrpt_store_domains(const char *spool, const char *date,
			    bool unsent_only, size_t *n)
{
	char path[PATH_LEN];

	*n = 0;
	if (!date_ok(date) || !path_of(path, spool, date, NULL, NULL))
		return NULL;
	return list_dir(path, keep_domain, &unsent_only, n);
}

/* ---- marking, pruning ------------------------------------------------ */

bool tlsrpt_store_mark_sent(const char *spool, const char *date,
			    const char *domain)
{
	char from[PATH_LEN], to[PATH_LEN];
	size_t len, magic = sizeof(TLSRPT_FILE_MAGIC) - 1;
	char *buf;
	bool ok;
	int fd;

	if (!date_ok(date) || !tlsrpt_store_domain_ok(domain) ||
	    !path_of(from, spool, date, domain, "") ||
	    !path_of(to, spool, date, domain, SENT_SUFFIX))
		return false;
	if (access(to, F_OK) != 0)
		return rename(from, to) == 0;
	/* sent once already today (tlsrpt --send): the lines join it */
	if ((buf = read_file(from, &len)) == NULL)
		return false;
	fd = open(to, O_WRONLY | O_APPEND | O_CLOEXEC);
	ok = fd >= 0 && len >= magic &&
	     write_all(fd, buf + magic, len - magic);
	if (fd >= 0 && close(fd) != 0)
		ok = false;
	free(buf);
	return ok && unlink(from) == 0;
}

static void remove_day(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char path[PATH_LEN];

	while (d != NULL && (e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		if (snprintf(path, sizeof(path), "%s/%s", dir, e->d_name) <
		    PATH_LEN)
			unlink(path);
	}
	if (d != NULL)
		closedir(d);
	rmdir(dir);
}

void tlsrpt_store_prune(const char *spool, const char *oldest)
{
	size_t n;
	char **days = tlsrpt_store_days(spool, &n);
	char path[PATH_LEN];

	for (size_t i = 0; i < n; i++)
		if (strcmp(days[i], oldest) < 0 &&
		    path_of(path, spool, days[i], NULL, NULL))
			remove_day(path);
	tlsrpt_store_free_list(days, n);
}

/* ---- requests ------------------------------------------------------------ */

bool tlsrpt_store_request(const char *spool, const char *date)
{
	char path[PATH_LEN];
	int fd, n;

	if (!date_ok(date)) {
		errno = EINVAL;
		return false;
	}
	n = snprintf(path, sizeof(path), "%s/tlsrpt/%s%s", spool,
		     REQUEST_PREFIX, date);
	if (n < 0 || n >= PATH_LEN)
		return false;
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	return fd >= 0 && close(fd) == 0;
}

static bool keep_request(const char *name, size_t *len, const void *arg)
{
	size_t p = sizeof(REQUEST_PREFIX) - 1;

	(void)arg;
	(void)len;
	return strncmp(name, REQUEST_PREFIX, p) == 0 && date_ok(name + p);
}

char **tlsrpt_store_take_requests(const char *spool, size_t *n)
{
	char path[PATH_LEN];
	char **names;
	size_t p = sizeof(REQUEST_PREFIX) - 1;

	*n = 0;
	if (!path_of(path, spool, NULL, NULL, NULL))
		return NULL;
	names = list_dir(path, keep_request, NULL, n);
	for (size_t i = 0; i < *n; i++) {
		char file[PATH_LEN];

		if (snprintf(file, sizeof(file), "%s/%s", path, names[i]) <
		    PATH_LEN)
			unlink(file);
		memmove(names[i], names[i] + p, strlen(names[i] + p) + 1);
	}
	return names;
}
