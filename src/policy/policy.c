/*
 * policy: LuaJIT states for policy scripts. Embedding rules, in the manner
 * of lua-nginx-module and HAProxy's hlua.c:
 *  - every entry into Lua is a lua_pcall; nothing raised in Lua reaches C;
 *  - the JIT compiler is off for the state, so the count hook that enforces
 *    the budget runs everywhere (LuaJIT never calls hooks in traces);
 *  - once over budget the hook fires at every instruction, so a pcall in the
 *    script catches the error only to meet it again at its next step;
 *  - scripts and modules are loaded as text only (bytecode can break out of
 *    any sandbox), from lua/ and the script's own folder only;
 *  - the state belongs to one generation of the configuration and is only
 *    ever touched from the event loop's thread.
 */
#include "policy/policy.h"

#include "core/log.h"

#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <luajit.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

enum { HOOK_EVERY = 1000, MAX_SCRIPT_SIZE = 1 << 20, MAX_TEXT = 380 };

static const char *const hook_names[HOOK_COUNT] = {
	[HOOK_SERVER_TLS] = "server_tls", [HOOK_CLIENT_TLS] = "client_tls",
	[HOOK_CONNECT] = "connect",	  [HOOK_HELO] = "helo",
	[HOOK_MAIL] = "mail",		  [HOOK_RCPT] = "rcpt",
};

/*
 * The ctx's keys and constant values, interned once per state and fetched
 * by index: interning ~20 strings per call was most of a decision's cost
 * (make bench: 0.9 -> 0.5 us for rcpt).
 */
enum cached_string {
	S_STAGE,
	S_HOSTNAME,
	S_CLIENT,
	S_IP,
	S_PORT,
	S_TRUSTED,
	S_TLS,
	S_ACTIVE,
	S_VERSION,
	S_CIPHER,
	S_SNI,
	S_PEER,
	S_HELO,
	S_SENDER,
	S_RECIPIENT,
	S_DOMAIN,
	S_SECTION,
	S_NAME,
	S_NEXT_HOP,
	S_PEER_NONE,
	S_PEER_UNTRUSTED,
	S_PEER_TRUSTED,
	S_HOOK0, /* + enum policy_hook */
	S_LEVEL0 = S_HOOK0 + HOOK_COUNT, /* + enum tls_level */
	S_HOSTNAME_VALUE = S_LEVEL0 + TLS_LEVEL_VERIFY + 1,
	S_COUNT,
};

static const char *const fixed_strings[S_HOSTNAME_VALUE] = {
	[S_STAGE] = "stage",
	[S_HOSTNAME] = "hostname",
	[S_CLIENT] = "client",
	[S_IP] = "ip",
	[S_PORT] = "port",
	[S_TRUSTED] = "trusted",
	[S_TLS] = "tls",
	[S_ACTIVE] = "active",
	[S_VERSION] = "version",
	[S_CIPHER] = "cipher",
	[S_SNI] = "sni",
	[S_PEER] = "peer",
	[S_HELO] = "helo",
	[S_SENDER] = "sender",
	[S_RECIPIENT] = "recipient",
	[S_DOMAIN] = "domain",
	[S_SECTION] = "section",
	[S_NAME] = "name",
	[S_NEXT_HOP] = "next_hop",
	[S_PEER_NONE] = "none",
	[S_PEER_UNTRUSTED] = "untrusted",
	[S_PEER_TRUSTED] = "trusted",
	[S_HOOK0 + HOOK_SERVER_TLS] = "server_tls",
	[S_HOOK0 + HOOK_CLIENT_TLS] = "client_tls",
	[S_HOOK0 + HOOK_CONNECT] = "connect",
	[S_HOOK0 + HOOK_HELO] = "helo",
	[S_HOOK0 + HOOK_MAIL] = "mail",
	[S_HOOK0 + HOOK_RCPT] = "rcpt",
	[S_LEVEL0 + TLS_LEVEL_NONE] = "none",
	[S_LEVEL0 + TLS_LEVEL_MAY] = "may",
	[S_LEVEL0 + TLS_LEVEL_ENCRYPT] = "encrypt",
	[S_LEVEL0 + TLS_LEVEL_VERIFY] = "verify",
};

struct policy {
	lua_State *L;
	const struct config *cfg;
	char *script;
	char *script_dir;
	char *lua_dir;
	int hook_ref[HOOK_COUNT];
	int host_ref;
	int strings_ref; /* array of the cached strings, index + 1 */
	int ctx_ref, client_ref, tls_ref; /* reused: refilled at every call */
	/* the call in progress */
	const char *current; /* hook name, for host.log */
	unsigned long long sid;
	unsigned long instructions;
	struct timespec deadline;
};

/* The count hook has no upvalues: the one policy running on this (single)
 * thread is found here. */
static struct policy *running;

const char *policy_hook_name(enum policy_hook hook)
{
	return hook < HOOK_COUNT ? hook_names[hook] : "?";
}

const char *policy_script(const struct policy *p)
{
	return p->script ? p->script : "(none: built-in defaults)";
}

/* ---- budget ----------------------------------------------------------- */

static bool past(const struct timespec *deadline)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return now.tv_sec > deadline->tv_sec ||
	       (now.tv_sec == deadline->tv_sec &&
		now.tv_nsec >= deadline->tv_nsec);
}

static void budget_hook(lua_State *L, lua_Debug *ar)
{
	struct policy *p = running;
	bool count;

	p->instructions += HOOK_EVERY;
	count = p->instructions > p->cfg->policy_max_instructions;
	if (!count && !past(&p->deadline))
		return;
	lua_sethook(L, budget_hook, LUA_MASKCOUNT, 1);
	/* Where the script was when it ran out, as FILE:LINE. */
	lua_getinfo(L, "Sl", ar);
	lua_pushfstring(L, "%s:%d: %s budget exceeded (%s)", ar->short_src,
			ar->currentline, p->current,
			count ? "max_instructions" : "max_time");
	lua_error(L);
}

static void budget_start(struct policy *p, const char *what)
{
	long ns = (long)(p->cfg->policy_max_time * 1e9);

	running = p;
	p->current = what;
	p->instructions = 0;
	clock_gettime(CLOCK_MONOTONIC, &p->deadline);
	p->deadline.tv_sec += ns / 1000000000L;
	p->deadline.tv_nsec += ns % 1000000000L;
	if (p->deadline.tv_nsec >= 1000000000L) {
		p->deadline.tv_sec++;
		p->deadline.tv_nsec -= 1000000000L;
	}
	lua_sethook(p->L, budget_hook, LUA_MASKCOUNT, HOOK_EVERY);
}

static void budget_stop(struct policy *p)
{
	lua_sethook(p->L, NULL, 0, 0);
	running = NULL;
}

/* ---- loading ----------------------------------------------------------- */

/* Reads a file and loads it as text under the chunk name "@path", so every
 * message it causes says "path:line:". */
static int load_text(lua_State *L, const char *path)
{
	FILE *f = fopen(path, "re");
	char *buf;
	size_t n;
	int rc;

	if (f == NULL) {
		lua_pushfstring(L, "%s: cannot open: %s", path, strerror(errno));
		return LUA_ERRFILE;
	}
	buf = malloc(MAX_SCRIPT_SIZE);
	n = buf ? fread(buf, 1, MAX_SCRIPT_SIZE, f) : 0;
	fclose(f);
	if (buf == NULL || n == MAX_SCRIPT_SIZE) {
		free(buf);
		lua_pushfstring(L, "%s: missing or larger than %d octets", path,
				MAX_SCRIPT_SIZE);
		return LUA_ERRFILE;
	}
	if (n > 0 && buf[0] == LUA_SIGNATURE[0]) {
		free(buf);
		lua_pushfstring(L, "%s: precompiled chunks are not loaded", path);
		return LUA_ERRSYNTAX;
	}
	lua_pushfstring(L, "@%s", path);
	rc = luaL_loadbuffer(L, buf, n, lua_tostring(L, -1));
	lua_remove(L, -2);
	free(buf);
	return rc;
}

static bool module_name_ok(const char *name)
{
	if (name[0] == '\0' || name[0] == '.' || strstr(name, "..") != NULL)
		return false;
	return strspn(name, "abcdefghijklmnopqrstuvwxyz"
			    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.") ==
	       strlen(name);
}

static bool find_module(const struct policy *p, const char *name, char *path,
			size_t len)
{
	const char *dirs[] = {p->lua_dir, p->script_dir};
	const char *tails[] = {".lua", "/init.lua"};
	char rel[256];

	snprintf(rel, sizeof(rel), "%s", name);
	for (char *c = rel; *c != '\0'; c++)
		if (*c == '.')
			*c = '/';
	for (size_t d = 0; d < 2; d++) {
		for (size_t f = 0; f < 2; f++) {
			snprintf(path, len, "%s/%s%s", dirs[d], rel, tails[f]);
			if (access(path, R_OK) == 0)
				return true;
		}
	}
	return false;
}

/* require(), reaching lua/ and the script's folder and nothing else. */
static int sandbox_require(lua_State *L)
{
	struct policy *p = lua_touserdata(L, lua_upvalueindex(1));
	const char *name = luaL_checkstring(L, 1);
	char path[4096];

	if (!module_name_ok(name))
		return luaL_error(L, "bad module name '%s'", name);
	lua_getfield(L, LUA_REGISTRYINDEX, "smtpgw.loaded");
	lua_getfield(L, -1, name);
	if (!lua_isnil(L, -1))
		return 1;
	lua_pop(L, 1);
	if (!find_module(p, name, path, sizeof(path)))
		return luaL_error(L, "module '%s' not found in %s or %s", name,
				  p->lua_dir, p->script_dir);
	if (load_text(L, path) != 0)
		return lua_error(L);
	lua_pushstring(L, name);
	lua_call(L, 1, 1);
	if (lua_isnil(L, -1)) {
		lua_pop(L, 1);
		lua_pushboolean(L, 1);
	}
	lua_pushvalue(L, -1);
	lua_setfield(L, -3, name);
	return 1;
}

static int host_log(lua_State *L)
{
	struct policy *p = lua_touserdata(L, lua_upvalueindex(1));
	const char *msg = luaL_checkstring(L, 1);
	struct logline l;

	log_begin(&l, LOG_INFO, "policy_log");
	if (p->sid != 0)
		log_kv(&l, "sid", "%llu", p->sid);
	log_kv(&l, "hook", "%s", p->current ? p->current : "?");
	log_kv(&l, "msg", "%s", msg);
	log_end(&l);
	return 0;
}

static int host_now(lua_State *L)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	lua_pushnumber(L, (double)tv.tv_sec + (double)tv.tv_usec / 1e6);
	return 1;
}

static void open_sandbox(struct policy *p)
{
	static const luaL_Reg libs[] = {
		{"", luaopen_base},
		{LUA_STRLIBNAME, luaopen_string},
		{LUA_TABLIBNAME, luaopen_table},
		{LUA_MATHLIBNAME, luaopen_math},
	};
	static const char *const removed[] = {
		"dofile", "loadfile", "load",	 "loadstring",	   "getfenv",
		"setfenv", "module",  "print",	 "collectgarbage", "gcinfo",
		"newproxy", "require", "coroutine",
	};
	lua_State *L = p->L;

	/* LuaJIT's luaopen_base also registers coroutine: removed below. */
	for (size_t i = 0; i < sizeof(libs) / sizeof(libs[0]); i++) {
		lua_pushcfunction(L, libs[i].func);
		lua_pushstring(L, libs[i].name);
		lua_call(L, 1, 0);
	}
	for (size_t i = 0; i < sizeof(removed) / sizeof(removed[0]); i++) {
		lua_pushnil(L);
		lua_setglobal(L, removed[i]);
	}
	lua_newtable(L);
	lua_setfield(L, LUA_REGISTRYINDEX, "smtpgw.loaded");
	lua_pushlightuserdata(L, p);
	lua_pushcclosure(L, sandbox_require, 1);
	lua_setglobal(L, "require");
}

static void make_strings(struct policy *p)
{
	lua_State *L = p->L;

	lua_createtable(L, S_COUNT, 0);
	for (int i = 0; i < S_HOSTNAME_VALUE; i++) {
		lua_pushstring(L, fixed_strings[i]);
		lua_rawseti(L, -2, i + 1);
	}
	lua_pushstring(L, p->cfg->hostname);
	lua_rawseti(L, -2, S_HOSTNAME_VALUE + 1);
	p->strings_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_createtable(L, 0, 10);
	p->ctx_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_createtable(L, 0, 3);
	p->client_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_createtable(L, 0, 5);
	p->tls_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

static void make_host(struct policy *p)
{
	lua_State *L = p->L;

	lua_createtable(L, 0, 2);
	lua_pushlightuserdata(L, p);
	lua_pushcclosure(L, host_log, 1);
	lua_setfield(L, -2, "log");
	lua_pushcfunction(L, host_now);
	lua_setfield(L, -2, "now");
	p->host_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

/* Runs the script and keeps a reference to each hook it returned. */
static bool take_hooks(struct policy *p, char *err, size_t err_len)
{
	lua_State *L = p->L;
	int found = 0;

	if (!lua_istable(L, -1)) {
		snprintf(err, err_len, "%s: the script must return a table of "
				       "hooks, not a %s",
			 p->script, luaL_typename(L, -1));
		return false;
	}
	for (int h = 0; h < HOOK_COUNT; h++) {
		lua_getfield(L, -1, hook_names[h]);
		if (lua_isnil(L, -1)) {
			lua_pop(L, 1);
			continue;
		}
		if (!lua_isfunction(L, -1)) {
			snprintf(err, err_len, "%s: hook '%s' is a %s, not a "
					       "function",
				 p->script, hook_names[h], luaL_typename(L, -1));
			return false;
		}
		p->hook_ref[h] = luaL_ref(L, LUA_REGISTRYINDEX);
		found++;
	}
	if (found == 0)
		snprintf(err, err_len, "%s: the script returns no hook (server_tls, "
				       "client_tls, connect, helo, mail, rcpt)",
			 p->script);
	return found > 0;
}

static bool run_script(struct policy *p, char *err, size_t err_len)
{
	lua_State *L = p->L;
	int rc = load_text(L, p->script);

	if (rc == 0) {
		budget_start(p, "load");
		rc = lua_pcall(L, 0, 1, 0);
		budget_stop(p);
	}
	if (rc != 0) {
		snprintf(err, err_len, "%s", lua_isstring(L, -1)
						     ? lua_tostring(L, -1)
						     : "error object is not a string");
		return false;
	}
	return take_hooks(p, err, err_len);
}

static char *dir_of(const char *path)
{
	const char *slash = strrchr(path, '/');

	if (slash == NULL)
		return strdup(".");
	return strndup(path, slash == path ? 1 : (size_t)(slash - path));
}

struct policy *policy_load(const struct config *cfg, const char *lua_dir,
			   char *err, size_t err_len)
{
	struct policy *p = calloc(1, sizeof(*p));

	if (p == NULL) {
		snprintf(err, err_len, "policy: out of memory");
		return NULL;
	}
	p->cfg = cfg;
	for (int h = 0; h < HOOK_COUNT; h++)
		p->hook_ref[h] = LUA_NOREF;
	if (cfg->policy_script == NULL)
		return p;
	p->script = strdup(cfg->policy_script);
	p->script_dir = dir_of(cfg->policy_script);
	p->lua_dir = strdup(lua_dir);
	p->L = luaL_newstate();
	if (p->script == NULL || p->script_dir == NULL || p->lua_dir == NULL ||
	    p->L == NULL) {
		snprintf(err, err_len, "policy: out of memory");
		policy_free(p);
		return NULL;
	}
	luaJIT_setmode(p->L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);
	open_sandbox(p);
	make_strings(p);
	make_host(p);
	if (!run_script(p, err, err_len)) {
		policy_free(p);
		return NULL;
	}
	lua_settop(p->L, 0);
	return p;
}

void policy_free(struct policy *p)
{
	if (p == NULL)
		return;
	if (p->L != NULL)
		lua_close(p->L);
	free(p->script);
	free(p->script_dir);
	free(p->lua_dir);
	free(p);
}

/* ---- calls ------------------------------------------------------------- */

/* ctx building: `strs` is the stack index of the cached strings, and the
 * table being filled is on top of the stack. */
static void push_cached(lua_State *L, int strs, enum cached_string which)
{
	lua_rawgeti(L, strs, which + 1);
}

static void set_cached(lua_State *L, int strs, enum cached_string key,
		       enum cached_string value)
{
	push_cached(L, strs, key);
	push_cached(L, strs, value);
	lua_rawset(L, -3);
}

/* Sets key to the string, or clears it: reused tables are refilled whole. */
static void set_string(lua_State *L, int strs, enum cached_string key,
		       const char *value)
{
	push_cached(L, strs, key);
	if (value != NULL)
		lua_pushstring(L, value);
	else
		lua_pushnil(L);
	lua_rawset(L, -3);
}

static void set_bool(lua_State *L, int strs, enum cached_string key,
		     bool value)
{
	push_cached(L, strs, key);
	lua_pushboolean(L, value);
	lua_rawset(L, -3);
}

static void set_table(lua_State *L, int strs, enum cached_string key)
{
	push_cached(L, strs, key);
	lua_insert(L, -2);
	lua_rawset(L, -3);
}

static enum cached_string peer_word(enum tls_peer peer)
{
	switch (peer) {
	case TLS_PEER_NONE:
		return S_PEER_NONE;
	case TLS_PEER_UNTRUSTED:
		return S_PEER_UNTRUSTED;
	case TLS_PEER_TRUSTED:
		return S_PEER_TRUSTED;
	}
	return S_PEER_NONE;
}

static void fill_inbound(struct policy *p, int strs,
			 const struct policy_facts *f)
{
	lua_State *L = p->L;
	bool active = f->tls_active;

	lua_rawgeti(L, LUA_REGISTRYINDEX, p->client_ref);
	set_string(L, strs, S_IP, f->client_ip);
	push_cached(L, strs, S_PORT);
	lua_pushnumber(L, f->client_port);
	lua_rawset(L, -3);
	set_bool(L, strs, S_TRUSTED, f->client_trusted);
	set_table(L, strs, S_CLIENT);
	lua_rawgeti(L, LUA_REGISTRYINDEX, p->tls_ref);
	set_bool(L, strs, S_ACTIVE, active);
	set_string(L, strs, S_VERSION, active ? f->tls_version : NULL);
	set_string(L, strs, S_CIPHER, active ? f->tls_cipher : NULL);
	set_string(L, strs, S_SNI,
		   active && f->tls_sni && f->tls_sni[0] ? f->tls_sni : NULL);
	set_cached(L, strs, S_PEER, peer_word(f->tls_peer));
	set_table(L, strs, S_TLS);
}

static void clear(lua_State *L, int strs, enum cached_string key)
{
	push_cached(L, strs, key);
	lua_pushnil(L);
	lua_rawset(L, -3);
}

static void push_section(lua_State *L, int strs, const struct domain_rule *r)
{
	lua_createtable(L, 0, 3);
	push_cached(L, strs, S_NAME);
	lua_pushfstring(L, "domain:%s", r->name);
	lua_rawset(L, -3);
	if (r->has_tls)
		set_cached(L, strs, S_TLS, S_LEVEL0 + r->tls);
	set_string(L, strs, S_NEXT_HOP, r->next_hop);
	set_table(L, strs, S_SECTION);
}

/* The ctx of a call. The tables are reused, not rebuilt: allocating and
 * collecting them was most of a decision's cost. Every field is written
 * (or cleared) on every call, so nothing of one call shows in the next;
 * a script that keeps a reference to ctx sees it change (README). */
static void push_ctx(struct policy *p, const struct policy_facts *f)
{
	lua_State *L = p->L;
	int strs;

	lua_rawgeti(L, LUA_REGISTRYINDEX, p->strings_ref);
	strs = lua_gettop(L);
	lua_rawgeti(L, LUA_REGISTRYINDEX, p->ctx_ref);
	set_cached(L, strs, S_STAGE, S_HOOK0 + f->hook);
	set_cached(L, strs, S_HOSTNAME, S_HOSTNAME_VALUE);
	if (f->inbound) {
		fill_inbound(p, strs, f);
	} else {
		clear(L, strs, S_CLIENT);
		clear(L, strs, S_TLS);
	}
	set_string(L, strs, S_HELO, f->helo);
	set_string(L, strs, S_SENDER, f->sender);
	set_string(L, strs, S_RECIPIENT, f->recipient);
	set_string(L, strs, S_DOMAIN, f->domain);
	if (f->section != NULL)
		push_section(L, strs, f->section);
	else
		clear(L, strs, S_SECTION);
	lua_remove(L, strs);
}

static void fail_result(struct policy_result *out, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void fail_result(struct policy_result *out, const char *fmt, ...)
{
	va_list ap;

	out->outcome = POLICY_ERROR;
	va_start(ap, fmt);
	vsnprintf(out->text, sizeof(out->text), fmt, ap);
	va_end(ap);
}

static void read_level(lua_State *L, const struct policy *p, enum policy_hook h,
		       struct policy_result *out)
{
	const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1)
						       : NULL;

	for (int lv = TLS_LEVEL_NONE; s != NULL && lv <= TLS_LEVEL_VERIFY;
	     lv++) {
		if (strcmp(s, tls_level_name((enum tls_level)lv)) == 0) {
			out->outcome = POLICY_LEVEL;
			out->level = (enum tls_level)lv;
			return;
		}
	}
	fail_result(out, "%s: %s returned %s%s%s, not a level (none, may, "
			 "encrypt, verify)",
		    p->script, hook_names[h], s ? "\"" : "a ",
		    s ? s : luaL_typename(L, -1), s ? "\"" : "");
}

static bool one_line(const char *text)
{
	for (const char *c = text; *c != '\0'; c++)
		if ((unsigned char)*c < 0x20 || *c == 0x7f)
			return false;
	return text[0] != '\0' && strlen(text) <= MAX_TEXT;
}

/* {action =, code =, text =}: read field by field, checked as it goes. */
static void read_verdict_table(lua_State *L, const struct policy *p,
			       enum policy_hook h, struct policy_result *out)
{
	const char *action, *text;
	lua_Number code;

	lua_getfield(L, -1, "action");
	lua_getfield(L, -2, "code");
	lua_getfield(L, -3, "text");
	action = lua_type(L, -3) == LUA_TSTRING ? lua_tostring(L, -3) : "";
	code = lua_type(L, -2) == LUA_TNUMBER ? lua_tonumber(L, -2) : 0;
	text = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "";
	if (strcmp(action, "accept") == 0) {
		out->outcome = POLICY_ACCEPT;
	} else if ((strcmp(action, "reject") == 0 && code >= 400 &&
		    code <= 599) ||
		   (strcmp(action, "tempfail") == 0 && code >= 400 &&
		    code <= 499)) {
		if (code != (int)code || !one_line(text)) {
			fail_result(out, "%s: %s returned a %s without a "
					 "one-line text",
				    p->script, hook_names[h], action);
			return;
		}
		out->outcome = action[0] == 'r' ? POLICY_REJECT : POLICY_TEMPFAIL;
		out->code = (int)code;
		snprintf(out->text, sizeof(out->text), "%s", text);
	} else {
		fail_result(out, "%s: %s returned a bad verdict (action \"%s\", "
				 "code %g)",
			    p->script, hook_names[h], action, code);
	}
}

static void read_verdict(lua_State *L, const struct policy *p,
			 enum policy_hook h, struct policy_result *out)
{
	if (lua_type(L, -1) == LUA_TSTRING &&
	    strcmp(lua_tostring(L, -1), "accept") == 0)
		out->outcome = POLICY_ACCEPT;
	else if (lua_istable(L, -1))
		read_verdict_table(L, p, h, out);
	else
		fail_result(out, "%s: %s returned a %s, not a verdict",
			    p->script, hook_names[h], luaL_typename(L, -1));
}

static void apply_default(const struct policy *p, enum policy_hook h,
			  struct policy_result *out)
{
	out->by_default = true;
	switch (h) {
	case HOOK_SERVER_TLS:
		out->outcome = POLICY_LEVEL;
		out->level = p->cfg->server_level;
		break;
	case HOOK_CLIENT_TLS:
		out->outcome = POLICY_LEVEL;
		out->level = TLS_LEVEL_MAY;
		break;
	case HOOK_CONNECT:
	case HOOK_HELO:
	case HOOK_MAIL:
	case HOOK_RCPT:
	case HOOK_COUNT:
		out->outcome = POLICY_ACCEPT;
		break;
	}
}

/* "file:12: ..." already says where; anything else (a tail call keeps no
 * frame, error() at level 0, a non-string error) gets the script and hook
 * so the log still names what failed. */
static bool has_position(const char *msg)
{
	const char *colon = strchr(msg, ':');

	return colon != NULL && colon > msg &&
	       colon[1 + strspn(colon + 1, "0123456789")] == ':' &&
	       colon[1] >= '0' && colon[1] <= '9';
}

static void call_failed(const struct policy *p, enum policy_hook h,
			lua_State *L, struct policy_result *out)
{
	const char *msg = lua_isstring(L, -1) ? lua_tostring(L, -1)
					      : "error object is not a string";

	if (has_position(msg))
		fail_result(out, "%s", msg);
	else
		fail_result(out, "%s: %s: %s", p->script, hook_names[h], msg);
}

void policy_call(struct policy *p, const struct policy_facts *f,
		 struct policy_result *out)
{
	lua_State *L = p->L;
	int top, rc;

	memset(out, 0, sizeof(*out));
	if (L == NULL || p->hook_ref[f->hook] == LUA_NOREF) {
		apply_default(p, f->hook, out);
		return;
	}
	top = lua_gettop(L);
	lua_rawgeti(L, LUA_REGISTRYINDEX, p->hook_ref[f->hook]);
	push_ctx(p, f);
	lua_rawgeti(L, LUA_REGISTRYINDEX, p->host_ref);
	p->sid = f->sid;
	budget_start(p, hook_names[f->hook]);
	rc = lua_pcall(L, 2, 1, 0);
	budget_stop(p);
	if (rc != 0)
		call_failed(p, f->hook, L, out);
	else if (f->hook == HOOK_SERVER_TLS || f->hook == HOOK_CLIENT_TLS)
		read_level(L, p, f->hook, out);
	else
		read_verdict(L, p, f->hook, out);
	lua_settop(L, top);
}
