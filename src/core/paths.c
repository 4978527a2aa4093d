/*
 * paths: finds the share folder from the binary's own location
 * (/proc/self/exe), never from the working directory, so an installed
 * binary uses its own PREFIX/share/smtpgw (DESTDIR included: a staged
 * install runs as it is) and never the tree it was built in. Only a binary
 * that lies under the source tree's build/ folder (make run, make check)
 * uses that tree. It computes paths and nothing else: it opens no file.
 */
#include "core/paths.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The source tree's lua/, from the Makefile. */
#ifndef SMTPGW_LUA_DIR
#define SMTPGW_LUA_DIR "lua"
#endif

/* Room for a resolved path (PATH_MAX) and what is appended to it. */
static char share_dir[PATH_MAX + 32];
static char lua_dir[PATH_MAX + 64];

/* Whether `path` lies under `dir` + "/build/". */
static bool in_build_tree(const char *path, const char *dir)
{
	size_t n = strlen(dir);

	return n > 0 && strncmp(path, dir, n) == 0 &&
	       strncmp(path + n, "/build/", 7) == 0;
}

/* The source tree: SMTPGW_LUA_DIR without its last component. It is
 * compared as text, never looked at: make's CURDIR has no symbolic links,
 * and an installed binary must not touch the tree it was built in. */
static bool source_dir(char *out, size_t len)
{
	const char *lua = SMTPGW_LUA_DIR;
	const char *slash = strrchr(lua, '/');

	if (slash == NULL || slash == lua)
		return false;
	snprintf(out, len, "%.*s", (int)(slash - lua), lua);
	return true;
}

/* Found once, at the first call (at start: a binary replaced later by an
 * upgrade, "/proc/self/exe (deleted)", keeps the folder it started with). */
static void find_share_dir(void)
{
	char exe[PATH_MAX], tree[PATH_MAX];
	char *slash;

	if (realpath("/proc/self/exe", exe) == NULL) {
		snprintf(share_dir, sizeof(share_dir),
			 "(unknown: /proc/self/exe: %s)", strerror(errno));
		return;
	}
	if (source_dir(tree, sizeof(tree)) && in_build_tree(exe, tree)) {
		snprintf(share_dir, sizeof(share_dir), "%s", tree);
		return;
	}
	slash = strrchr(exe, '/');
	*slash = '\0'; /* realpath's result is absolute: there is one */
	slash = strrchr(exe, '/');
	if (slash != NULL)
		*slash = '\0'; /* PREFIX/sbin → PREFIX ("" for /smtpgw) */
	snprintf(share_dir, sizeof(share_dir), "%s/share/smtpgw", exe);
}

const char *paths_share_dir(void)
{
	if (share_dir[0] == '\0')
		find_share_dir();
	return share_dir;
}

const char *paths_lua_dir(void)
{
	const char *env = getenv("SMTPGW_LUA_DIR");

	if (env != NULL && env[0] != '\0')
		return env;
	if (lua_dir[0] == '\0')
		snprintf(lua_dir, sizeof(lua_dir), "%s/lua",
			 paths_share_dir());
	return lua_dir;
}
