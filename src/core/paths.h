/*
 * paths: where the files smtpgw ships (lua/, policies/) are found at run
 * time (see paths.c).
 */
#ifndef SMTPGW_PATHS_H
#define SMTPGW_PATHS_H

/* The folder holding lua/ and policies/: the source tree for a binary
 * that runs from its build/ folder, else ../share/smtpgw beside the
 * binary's own folder (PREFIX/sbin/smtpgw → PREFIX/share/smtpgw). */
const char *paths_share_dir(void);

/* The policies' shared modules: $SMTPGW_LUA_DIR when set, else
 * paths_share_dir()/lua. */
const char *paths_lua_dir(void);

#endif
