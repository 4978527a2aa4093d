/*
 * check_command: `smtpgw -c FILE -t`. Loads what a start would load
 * (gateway.ini, the policy script, the certificate store and ca_file,
 * without making the Default Cert), then checks what a start would meet:
 * the spool can be made and written by the user the children run as, and
 * every listen address can be bound (not while a gateway holds the spool:
 * its own sockets would be in the way). It writes nothing, binds only for
 * the moment of the check, and reports each problem as FILE:LINE.
 */
#include "cli/check_command.h"

#include "core/config.h"
#include "net/dns.h"
#include "policy/generation.h"
#include "policy/policy.h"
#include "spool/queue.h"

#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

enum { MSG_MAX = 3 * PATH_MAX };

static const char *const SPOOL_DIRS[] = {"tmp", "queue", "state", "corrupt"};

/* The nearest part of `path` that exists (the path itself, or a parent). */
static bool nearest_existing(const char *path, char *out, size_t len,
			     struct stat *st)
{
	char *slash;

	snprintf(out, len, "%s", path);
	while (stat(out, st) != 0) {
		if (errno != ENOENT && errno != ENOTDIR)
			return false;
		slash = strrchr(out, '/');
		if (slash == NULL)
			snprintf(out, len, ".");
		else if (slash == out)
			out[1] = '\0';
		else
			*slash = '\0';
	}
	return true;
}

/* As the one who starts the gateway (it makes the spool and, as root,
 * chowns it): the spool is a directory or can be made. */
static bool spool_makeable(const char *spool, char *why, size_t len)
{
	char at[PATH_MAX];
	struct stat st;
	struct statvfs vfs;

	if (!nearest_existing(spool, at, sizeof(at), &st)) {
		snprintf(why, len, "%s", strerror(errno));
		return false;
	}
	if (!S_ISDIR(st.st_mode)) {
		snprintf(why, len, "%s is not a directory", at);
		return false;
	}
	if (strcmp(at, spool) != 0 && access(at, W_OK | X_OK) != 0) {
		snprintf(why, len, "cannot be created in %s: %s", at,
			 strerror(errno));
		return false;
	}
	if (statvfs(at, &vfs) == 0 && (vfs.f_flag & ST_RDONLY)) {
		snprintf(why, len, "%s is on a read-only file system", at);
		return false;
	}
	return true;
}

/* In the child, as the user: what it needs of the spool. Started as
 * root, the master makes the spool the user's, so the user only needs to
 * get through the directories above it; otherwise the spool (if it is
 * there already) and its folders must be writable as they are. */
static int reach_as_user(const char *spool, bool chowned)
{
	char path[PATH_MAX], parent[PATH_MAX], *slash;
	struct stat st;

	if (chowned) {
		snprintf(parent, sizeof(parent), "%s", spool);
		slash = strrchr(parent, '/');
		if (slash == NULL)
			snprintf(parent, sizeof(parent), ".");
		else
			slash[slash == parent ? 1 : 0] = '\0';
		/* What is missing is made by root with mode 0755. */
		if (!nearest_existing(parent, path, sizeof(path), &st))
			return errno;
		return access(path, X_OK) == 0 ? 0 : errno;
	}
	if (access(spool, F_OK) != 0)
		return 0; /* made at start, by this same user */
	if (access(spool, R_OK | W_OK | X_OK) != 0)
		return errno;
	for (size_t i = 0; i < sizeof(SPOOL_DIRS) / sizeof(SPOOL_DIRS[0]);
	     i++) {
		snprintf(path, sizeof(path), "%s/%s", spool, SPOOL_DIRS[i]);
		if (access(path, F_OK) == 0 &&
		    access(path, R_OK | W_OK | X_OK) != 0)
			return errno;
	}
	return 0;
}

/* Becomes the user in a child, as the master's children do, and asks
 * there; the errno it met, or 0. */
static int reach_as(const struct passwd *pw, const char *spool)
{
	pid_t pid = fork();
	int status;

	if (pid < 0)
		return errno;
	if (pid == 0) {
		if (initgroups(pw->pw_name, pw->pw_gid) != 0 ||
		    setgid(pw->pw_gid) != 0 || setuid(pw->pw_uid) != 0)
			_exit(EPERM);
		_exit(reach_as_user(spool, true));
	}
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	return WIFEXITED(status) ? WEXITSTATUS(status) : EIO;
}

static bool check_spool(const struct config *cfg)
{
	char where[PATH_MAX + 16], why[MSG_MAX];
	const struct passwd *pw;
	int e;

	config_key_where(cfg, "gateway", "spool", where, sizeof(where));
	if (!spool_makeable(cfg->spool, why, sizeof(why))) {
		fprintf(stderr, "%s: spool %s: %s\n", where, cfg->spool, why);
		return false;
	}
	if (geteuid() != 0) {
		e = reach_as_user(cfg->spool, false);
		if (e != 0)
			fprintf(stderr, "%s: spool %s: not writable: %s\n",
				where, cfg->spool, strerror(e));
		return e == 0;
	}
	pw = getpwnam(cfg->user);
	if (pw == NULL || pw->pw_uid == 0) {
		config_key_where(cfg, "gateway", "user", where, sizeof(where));
		fprintf(stderr, "%s: [gateway] user %s %s\n", where, cfg->user,
			pw ? "is root" : "does not exist (useradd --system)");
		return false;
	}
	e = reach_as(pw, cfg->spool);
	if (e != 0)
		fprintf(stderr,
			"%s: spool %s: user %s cannot reach it (%s): every "
			"directory above it must let that user through (x)\n",
			where, cfg->spool, cfg->user, strerror(e));
	return e == 0;
}

/* Binds for a moment, as the master will (SO_REUSEADDR, v6 only). */
static int try_bind(const struct listen_addr *a)
{
	int one = 1, e = 0;
	int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (a->ss.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)&a->ss, a->len) != 0)
		e = errno;
	close(fd);
	return e;
}

static bool check_listen(const struct config *cfg)
{
	char where[PATH_MAX + 16];
	long holder = spool_lock_holder(cfg->spool);
	bool ok = true;

	if (holder > 0)
		printf("%s: listen not checked: the gateway (pid %ld) holding "
		       "%s/lock has them\n",
		       cfg->path, holder, cfg->spool);
	else if (holder < 0)
		printf("%s: listen not checked: a gateway holding %s/lock has "
		       "them\n",
		       cfg->path, cfg->spool);
	if (holder != 0)
		return true;
	config_key_where(cfg, "gateway", "listen", where, sizeof(where));
	for (size_t i = 0; i < cfg->n_listen; i++) {
		int e = try_bind(&cfg->listen[i]);

		if (e == 0)
			continue;
		fprintf(stderr, "%s: listen %s: %s\n", where,
			cfg->listen[i].text, strerror(e));
		ok = false;
	}
	return ok;
}

int check_command(const char *config_path)
{
	char err[2048];
	struct generation *gen = generation_build(config_path, false, err,
						  sizeof(err));
	bool ok;

	if (gen == NULL) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	if (gen->tls == NULL && (gen->cfg->policy_script != NULL ||
				 gen->cfg->server_level != TLS_LEVEL_NONE))
		printf("%s: no certificate configured: the Default Cert will be "
		       "made in %s at start\n",
		       config_path, gen->cfg->cert_dir);
	ok = dns_check_config(gen->cfg, true, err, sizeof(err));
	if (!ok)
		fprintf(stderr, "%s\n", err);
	ok = check_spool(gen->cfg) && ok;
	ok = check_listen(gen->cfg) && ok;
	if (ok)
		printf("%s: ok (policy %s)\n", config_path,
		       policy_script(gen->policy));
	generation_release(gen);
	return ok ? 0 : 1;
}
