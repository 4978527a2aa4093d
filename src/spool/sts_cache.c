/*
 * sts_cache: the files of SPOOL/sts/, behind sts_cache.h. Small reads and
 * writes of at most a policy's size on the caller's thread; no fsync (see
 * the header for why that is enough for a cache).
 */
#include "spool/sts_cache.h"

#include "proto/dns_wire.h"
#include "proto/sts.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* SPOOL/sts/DOMAIN, or false when the domain is no name to file under. */
static bool path_of(const char *spool, const char *domain, const char *prefix,
		    char *out, size_t len)
{
	char name[DNS_NAME_MAX + 1];
	int n;

	if (!dns_name_copy(domain, name, sizeof(name)))
		return false;
	n = snprintf(out, len, "%s/sts/%s%s", spool, prefix, name);
	return n > 0 && (size_t)n < len;
}

bool sts_cache_prepare(const char *spool, char *err, size_t err_len)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/sts", spool);
	if (mkdir(path, 0700) == 0 || errno == EEXIST)
		return true;
	snprintf(err, err_len, "%s: %s", path, strerror(errno));
	return false;
}

bool sts_cache_read(const char *spool, const char *domain, char *buf,
		    size_t cap, size_t *len)
{
	char path[PATH_MAX];
	struct stat st;
	size_t n = 0;
	ssize_t r = 1;
	int fd;

	*len = 0;
	if (!path_of(spool, domain, "", path, sizeof(path)) ||
	    (fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) < 0)
		return false;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ||
	    (size_t)st.st_size > cap) {
		close(fd);
		return false;
	}
	while (n < (size_t)st.st_size &&
	       (r = read(fd, buf + n, (size_t)st.st_size - n)) > 0)
		n += (size_t)r;
	close(fd);
	*len = n;
	return r > 0 || n == (size_t)st.st_size;
}

bool sts_cache_write(const char *spool, const char *domain, const char *data,
		     size_t len)
{
	char path[PATH_MAX], tmp[PATH_MAX];
	size_t done = 0;
	ssize_t w = 1;
	int fd;

	if (!path_of(spool, domain, "", path, sizeof(path)) ||
	    !path_of(spool, domain, ".tmp.", tmp, sizeof(tmp)))
		return false;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
		  0600);
	if (fd < 0)
		return false;
	while (done < len && (w = write(fd, data + done, len - done)) > 0)
		done += (size_t)w;
	if (close(fd) != 0 || done < len || rename(tmp, path) != 0) {
		unlink(tmp);
		return false;
	}
	return true;
}

void sts_cache_remove(const char *spool, const char *domain)
{
	char path[PATH_MAX];

	if (path_of(spool, domain, "", path, sizeof(path)))
		unlink(path);
}

bool sts_cache_load(const char *spool, const char *domain, double now,
		    struct sts_policy *p, char *id, size_t id_len,
		    double *fetched, bool *expired)
{
	size_t cap = STS_POLICY_MAX + 256, len;
	char *buf = malloc(cap);
	struct sts_cached c;
	char why[160];
	bool ok;

	*expired = false;
	ok = buf != NULL && sts_cache_read(spool, domain, buf, cap, &len) &&
	     sts_cache_parse(buf, len, &c) &&
	     sts_policy_parse(c.policy, c.policy_len, p, why, sizeof(why));
	if (ok) {
		snprintf(id, id_len, "%s", c.id);
		*fetched = (double)c.fetched;
		*expired = now > *fetched + (double)p->max_age;
	}
	free(buf);
	return ok && !*expired;
}
