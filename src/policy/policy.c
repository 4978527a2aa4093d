/*
 * policy: LuaJIT states for policy scripts. Embedding rules, in the manner
 * of lua-nginx-module and HAProxy's hlua.c:
 *  - every entry into Lua runs protected: one protected C function builds
 *    the ctx, calls the hook and reads its result, another builds the
 *    state; a panic (a bug here) jumps back to the call, which fails, and
 *    the state is replaced;
 *  - results are read with raw access only, so no metamethod of a returned
 *    table ever runs;
 *  - the JIT compiler is off for the state, so the count hook that enforces
 *    the budget runs everywhere (LuaJIT never calls hooks in traces);
 *  - once over budget the hook fires at every instruction, so a pcall in the
 *    script catches the error only to meet it again at its next step;
 *  - work done in C is bounded too: the pattern functions, string.rep and
 *    string.format are sandbox_str.c's, and every allocation goes through a
 *    wrapper of LuaJIT's allocator that refuses to pass [policy] max_memory
 *    (and, for large blocks, the time budget); a state that hit the memory
 *    cap is closed and rebuilt from the same script text;
 *  - scripts and modules are loaded as text only (bytecode can break out of
 *    any sandbox), from lua/ and the script's own folder only;
 *  - the state belongs to one generation of the configuration and is only
 *    ever touched from the event loop's thread;
 *  - a hook's error names the line of the script where it went wrong
 *    (error_where, the calls' message handler), and every key of the hooks
 *    table must be a hook: a misspelt one is refused, not ignored;
 *  - before a script is used, policy_check runs every hook over the
 *    fixtures of gateway.testing in a state of its own (end of this file).
 */
#include "policy/policy.h"

#include "core/log.h"
#include "policy/sandbox_str.h"
#include "policy/suggest.h"

#include <arpa/inet.h>
#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <luajit.h>
#include <lualib.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

enum {
	HOOK_EVERY = 1000,
	MAX_SCRIPT_SIZE = 1 << 20,
	MAX_TEXT = 380,
	/* allocations this large check the clock, and C work is checked
	 * against it every WORK_CHECK units */
	BIG_ALLOC = 256 << 10,
	WORK_CHECK = 1 << 16,
};

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
	S_TLS_IN,
	S_NEXT_HOP,
	S_PEER_NONE,
	S_PEER_UNTRUSTED,
	S_PEER_TRUSTED,
	S_ACTION,
	S_CODE,
	S_TEXT,
	S_MTA_STS,
	S_DANE,
	S_MODE,
	S_MX,
	S_MODE0, /* + enum sts_mode */
	S_HOOK0 = S_MODE0 + STS_MODE_ENFORCE + 1, /* + enum policy_hook */
	S_LEVEL0 = S_HOOK0 + HOOK_COUNT, /* + enum tls_level */
	S_HOSTNAME_VALUE = S_LEVEL0 + TLS_LEVEL_LAST + 1,
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
	[S_TLS_IN] = "tls_in",
	[S_NEXT_HOP] = "next_hop",
	[S_PEER_NONE] = "none",
	[S_PEER_UNTRUSTED] = "untrusted",
	[S_PEER_TRUSTED] = "trusted",
	[S_ACTION] = "action",
	[S_CODE] = "code",
	[S_TEXT] = "text",
	[S_MTA_STS] = "mta_sts",
	[S_DANE] = "dane",
	[S_MODE] = "mode",
	[S_MX] = "mx",
	[S_MODE0 + STS_MODE_NONE] = "none",
	[S_MODE0 + STS_MODE_TESTING] = "testing",
	[S_MODE0 + STS_MODE_ENFORCE] = "enforce",
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
	[S_LEVEL0 + TLS_LEVEL_DANE] = "dane",
	[S_LEVEL0 + TLS_LEVEL_DANE_ONLY] = "dane-only",
	[S_LEVEL0 + TLS_LEVEL_STS] = "sts",
};

/* One Lua state and what lives in it. Rebuilt whole when poisoned. */
struct vm {
	lua_State *L;
	struct policy *p;
	lua_Alloc alloc; /* LuaJIT's own allocator, wrapped by vm_alloc */
	void *alloc_ud;
	size_t used, cap;   /* bytes held by the state; [policy] max_memory */
	bool over_memory;   /* an allocation was refused at the cap */
	bool poisoned;	    /* never used again: over the cap, or a panic */
	bool panicked;	    /* never closed either */
	int hook_ref[HOOK_COUNT];
	int host_ref;
	int strings_ref; /* array of the cached strings, index + 1 */
	int ctx_ref, client_ref, tls_ref; /* reused: refilled at every call */
	int decide_ref;			  /* decide(), for lua_pcall */
	int where_ref;			  /* error_where(), its handler */
	bool checking;	/* built for policy_check: gateway.testing loaded */
	int fixtures_ref; /* gateway.testing.fixtures, when checking */
	struct sandbox_budget budget;	  /* for sandbox_str.c */
};

struct policy {
	const struct config *cfg;
	char *script;
	char *script_dir;
	char *lua_dir;
	char *source; /* the script's text, for rebuilding the state */
	size_t source_len;
	bool has_hook[HOOK_COUNT];
	struct vm *vm; /* NULL: no script, or a rebuild failed */
	unsigned rebuilds;
	struct timespec retry_at; /* after a failed rebuild: not before */
	/* the call in progress */
	const char *current; /* hook name, for host.log */
	unsigned long long sid;
	unsigned long instructions, max_instructions;
	size_t work; /* C work since the clock was last read */
	bool over_time;
	struct timespec deadline;
};

/* The count hook and the allocator have no upvalues: the one policy
 * running on this (single) thread is found here. */
static struct policy *running;

/* Where a Lua panic jumps back to (policy_call and policy_load arm it). */
static jmp_buf *panic_return;

const char *policy_hook_name(enum policy_hook hook)
{
	return hook < HOOK_COUNT ? hook_names[hook] : "?";
}

const char *policy_script(const struct policy *p)
{
	return p->script ? p->script : "(none: built-in defaults)";
}

/* ---- budget ----------------------------------------------------------- */

enum overrun { WITHIN, OVER_INSTRUCTIONS, OVER_TIME, OVER_MEMORY };

/* policy_check's budget for what is not a hook call (see "check"). */
enum {
	CHECK_MAX_TIME = 10, /* s */
	CHECK_MAX_INSTRUCTIONS = 1000000000,
	CHECK_FIXTURE_NS = 1000000, /* the whole check: + 1 ms a fixture */
};

static void budget_hook(lua_State *L, lua_Debug *ar);

static const char *const overrun_names[] = {
	[WITHIN] = "within",
	[OVER_INSTRUCTIONS] = "max_instructions",
	[OVER_TIME] = "max_time",
	[OVER_MEMORY] = "max_memory",
};

static bool past(const struct timespec *deadline)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return now.tv_sec > deadline->tv_sec ||
	       (now.tv_sec == deadline->tv_sec &&
		now.tv_nsec >= deadline->tv_nsec);
}

/* Which budget the running call has passed, if any (reads the clock). */
static enum overrun overrun(struct policy *p)
{
	if (p->vm->over_memory || p->vm->used > p->vm->cap)
		return OVER_MEMORY;
	if (p->over_time)
		return OVER_TIME;
	if (p->instructions > p->max_instructions)
		return OVER_INSTRUCTIONS;
	if (past(&p->deadline)) {
		p->over_time = true;
		return OVER_TIME;
	}
	return WITHIN;
}

/* Raises "FILE:LINE: HOOK budget exceeded (WHICH)" for the Lua function
 * at `level`, and makes the hook fire at every instruction from now on. */
static int raise_overrun(lua_State *L, struct policy *p, enum overrun why,
			 int level)
{
	lua_sethook(L, budget_hook, LUA_MASKCOUNT, 1);
	luaL_where(L, level);
	lua_pushfstring(L, "%s budget exceeded (%s)", p->current,
			overrun_names[why]);
	lua_concat(L, 2);
	return lua_error(L);
}

static void budget_hook(lua_State *L, lua_Debug *ar)
{
	struct policy *p = running;
	enum overrun why;

	(void)ar;
	p->instructions += HOOK_EVERY;
	why = overrun(p);
	if (why != WITHIN)
		raise_overrun(L, p, why, 0);
}

/* Arms the budget of one call: `seconds` of wall clock and
 * `instructions`. */
static void budget_arm(struct policy *p, const char *what, double seconds,
		       unsigned long instructions)
{
	long ns = (long)(seconds * 1e9);

	running = p;
	p->current = what;
	p->max_instructions = instructions;
	p->instructions = 0;
	p->work = 0;
	p->over_time = false;
	clock_gettime(CLOCK_MONOTONIC, &p->deadline);
	p->deadline.tv_sec += ns / 1000000000L;
	p->deadline.tv_nsec += ns % 1000000000L;
	if (p->deadline.tv_nsec >= 1000000000L) {
		p->deadline.tv_sec++;
		p->deadline.tv_nsec -= 1000000000L;
	}
	lua_sethook(p->vm->L, budget_hook, LUA_MASKCOUNT, HOOK_EVERY);
}

/* The budget of a hook call (or a load): [policy] max_time and
 * max_instructions. */
static void budget_start(struct policy *p, const char *what)
{
	budget_arm(p, what, p->cfg->policy_max_time,
		   p->cfg->policy_max_instructions);
}

static void budget_stop(struct policy *p)
{
	lua_sethook(p->vm->L, NULL, 0, 0);
	running = NULL;
}

/* sandbox_str.c's budget: C work counts against max_time. */
static bool budget_spend(void *ud, size_t work)
{
	struct vm *vm = ud;
	struct policy *p = vm->p;

	if (running != p)
		return true;
	if (vm->over_memory || p->over_time)
		return false;
	p->work += work;
	if (p->work < WORK_CHECK)
		return true;
	p->work = 0;
	return overrun(p) == WITHIN;
}

static int budget_raise(lua_State *L, void *ud, bool memory)
{
	struct vm *vm = ud;
	enum overrun why;

	if (memory)
		vm->over_memory = true;
	why = running == vm->p ? overrun(vm->p) : OVER_TIME;
	return raise_overrun(L, vm->p, why == WITHIN ? OVER_TIME : why, 1);
}

static size_t budget_room(void *ud)
{
	const struct vm *vm = ud;

	return vm->used < vm->cap ? vm->cap - vm->used : 0;
}

/*
 * Every allocation of the state passes here. Growth past the cap is
 * refused (LuaJIT then raises "not enough memory", which the script may
 * catch, but over_memory stays set: the hook raises again and the call
 * fails); so is a large block once the call is past its deadline, which
 * bounds the time `..` and table.concat of huge strings can take between
 * two runs of the hook. Frees and shrinks always pass.
 */
static void *vm_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
	struct vm *vm = ud;
	void *r;

	if (nsize > osize) {
		size_t grow = nsize - osize;

		if (grow > vm->cap || vm->used > vm->cap - grow) {
			vm->over_memory = true;
			return NULL;
		}
		if (grow >= BIG_ALLOC && running == vm->p &&
		    past(&vm->p->deadline)) {
			vm->p->over_time = true;
			return NULL;
		}
	}
	r = vm->alloc(vm->alloc_ud, ptr, osize, nsize);
	if (r != NULL || nsize == 0)
		vm->used = vm->used - osize + nsize;
	return r;
}

/* ---- loading ----------------------------------------------------------- */

/* Loads buf as a text chunk named by the string on top of the stack
 * ("@path", so that every message it causes says "path:line:"), which it
 * replaces with the chunk or an error message. Never raises. */
static int load_chunk(lua_State *L, const char *buf, size_t n)
{
	int rc;

	if (n > 0 && buf[0] == LUA_SIGNATURE[0]) {
		lua_pushfstring(L, "%s: precompiled chunks are not loaded",
				lua_tostring(L, -1) + 1);
		rc = LUA_ERRSYNTAX;
	} else {
		rc = luaL_loadbuffer(L, buf, n, lua_tostring(L, -1));
	}
	lua_remove(L, -2);
	return rc;
}

/* Reads a whole text file of at most MAX_SCRIPT_SIZE octets into malloc'd
 * memory; NULL and a message in err when it cannot. */
static char *read_source(const char *path, size_t *len, char *err,
			 size_t err_len)
{
	FILE *f = fopen(path, "re");
	char *buf;
	size_t n;

	if (f == NULL) {
		snprintf(err, err_len, "%s: cannot open: %s", path,
			 strerror(errno));
		return NULL;
	}
	buf = malloc(MAX_SCRIPT_SIZE);
	n = buf ? fread(buf, 1, MAX_SCRIPT_SIZE, f) : 0;
	fclose(f);
	if (buf == NULL || n == MAX_SCRIPT_SIZE) {
		free(buf);
		snprintf(err, err_len, "%s: missing or larger than %d octets",
			 path, MAX_SCRIPT_SIZE);
		return NULL;
	}
	*len = n;
	return buf;
}

/* Reads a module and loads it (inside a running state: the text is read
 * into a Lua userdata, so that a memory error raised on the way leaks
 * nothing). */
static int load_module(lua_State *L, const char *path)
{
	struct stat st;
	FILE *f;
	char *buf;
	size_t n = 0;

	lua_pushfstring(L, "@%s", path);
	if (stat(path, &st) != 0 || !S_ISREG(st.st_mode) ||
	    st.st_size >= MAX_SCRIPT_SIZE) {
		lua_pop(L, 1);
		lua_pushfstring(L, "%s: missing, not a file or larger than %d "
				   "octets",
				path, MAX_SCRIPT_SIZE);
		return LUA_ERRFILE;
	}
	buf = lua_newuserdata(L, (size_t)st.st_size + 1);
	f = fopen(path, "re");
	if (f != NULL) {
		n = fread(buf, 1, (size_t)st.st_size + 1, f);
		fclose(f);
	}
	if (f == NULL || n > (size_t)st.st_size) {
		lua_pop(L, 2);
		lua_pushfstring(L, "%s: cannot read, or it changed", path);
		return LUA_ERRFILE;
	}
	lua_insert(L, -2); /* userdata, name */
	n = (size_t)load_chunk(L, buf, n);
	lua_remove(L, -2);
	return (int)n;
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
	if (load_module(L, path) != 0)
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

	if (p->vm != NULL && p->vm->checking)
		return 0; /* policy_check's fixtures are no sessions */
	log_begin(&l, LOG_INFO, "policy_log");
	if (p->sid != 0)
		log_kv(&l, "sid", "%llu", p->sid);
	log_kv(&l, "hook", "%s", p->current ? p->current : "?");
	log_kv(&l, "msg", "%s", msg);
	log_end(&l);
	/* Out at once, not at the loop's next turn: a script that holds
	 * the loop (up to max_time) shows what it is doing meanwhile. */
	log_flush();
	return 0;
}

static int host_now(lua_State *L)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	lua_pushnumber(L, (double)tv.tv_sec + (double)tv.tv_usec / 1e6);
	return 1;
}

static void open_sandbox(struct vm *vm)
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
	lua_State *L = vm->L;

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
	lua_getglobal(L, LUA_STRLIBNAME);
	sandbox_str_open(L, -1, &vm->budget);
	lua_getglobal(L, LUA_TABLIBNAME);
	sandbox_tab_open(L, -1, LUA_GLOBALSINDEX, &vm->budget);
	lua_pop(L, 2);
	lua_newtable(L);
	lua_setfield(L, LUA_REGISTRYINDEX, "smtpgw.loaded");
	lua_pushlightuserdata(L, vm->p);
	lua_pushcclosure(L, sandbox_require, 1);
	lua_setglobal(L, "require");
}

static void make_strings(struct vm *vm)
{
	lua_State *L = vm->L;

	lua_createtable(L, S_COUNT, 0);
	for (int i = 0; i < S_HOSTNAME_VALUE; i++) {
		lua_pushstring(L, fixed_strings[i]);
		lua_rawseti(L, -2, i + 1);
	}
	lua_pushstring(L, vm->p->cfg->hostname);
	lua_rawseti(L, -2, S_HOSTNAME_VALUE + 1);
	vm->strings_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_createtable(L, 0, 10);
	vm->ctx_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_createtable(L, 0, 3);
	vm->client_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_createtable(L, 0, 5);
	vm->tls_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

static void make_host(struct vm *vm)
{
	lua_State *L = vm->L;

	lua_createtable(L, 0, 2);
	lua_pushlightuserdata(L, vm->p);
	lua_pushcclosure(L, host_log, 1);
	lua_setfield(L, -2, "log");
	lua_pushcfunction(L, host_now);
	lua_setfield(L, -2, "now");
	vm->host_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

/* "FILE:LINE" where the Lua function at idx is defined, into buf; false
 * (buf untouched) for anything else. */
static bool function_where(lua_State *L, int idx, char *buf, size_t len)
{
	lua_Debug ar;

	if (lua_type(L, idx) != LUA_TFUNCTION)
		return false;
	lua_pushvalue(L, idx);
	if (!lua_getinfo(L, ">S", &ar) || ar.linedefined <= 0)
		return false;
	snprintf(buf, len, "%s:%d",
		 ar.source[0] == '@' ? ar.source + 1 : ar.short_src,
		 ar.linedefined);
	return true;
}

static bool is_hook_name(const char *name)
{
	for (int h = 0; h < HOOK_COUNT; h++)
		if (strcmp(name, hook_names[h]) == 0)
			return true;
	return false;
}

/* Raises for the key (-2) and value (-1) of the hooks table that lua_next
 * just gave: the key is no hook. */
static void refuse_key(lua_State *L, const char *script)
{
	char where[512], name[SUGGEST_MAX_LEN + 1];
	const char *near = NULL;

	if (!function_where(L, -1, where, sizeof(where)))
		snprintf(where, sizeof(where), "%s", script);
	if (lua_type(L, -2) == LUA_TSTRING) {
		snprintf(name, sizeof(name), "%s", lua_tostring(L, -2));
		near = suggest_nearest(name, hook_names, HOOK_COUNT, 2);
	} else {
		snprintf(name, sizeof(name), "a %s key", luaL_typename(L, -2));
	}
	if (near != NULL)
		lua_pushfstring(L, "%s: %s is not a hook; did you mean %s?",
				where, name, near);
	else
		lua_pushfstring(L, "%s: %s is not a hook (server_tls, "
				   "client_tls, connect, helo, mail, rcpt; "
				   "a name starting with _ is left alone)",
				where, name);
	lua_error(L);
}

/* Every key of the hooks table (on top) is a hook or starts with "_":
 * a misspelt hook must not be silently ignored. Read raw. */
static void refuse_unknown_keys(lua_State *L, const char *script)
{
	lua_pushnil(L);
	while (lua_next(L, -2) != 0) {
		const char *k = lua_type(L, -2) == LUA_TSTRING
					? lua_tostring(L, -2)
					: NULL;

		if (k == NULL || (k[0] != '_' && !is_hook_name(k)))
			refuse_key(L, script);
		lua_pop(L, 1);
	}
}

/* Keeps a reference to each hook of the table the script returned (on
 * top), read raw: a metatable on it runs nothing. Raises on a problem. */
static void take_hooks(struct vm *vm)
{
	lua_State *L = vm->L;
	const char *script = vm->p->script;
	int found = 0;

	if (!lua_istable(L, -1)) {
		lua_pushfstring(L, "%s: the script must return a table of "
				   "hooks, not a %s",
				script, luaL_typename(L, -1));
		lua_error(L);
	}
	refuse_unknown_keys(L, script);
	for (int h = 0; h < HOOK_COUNT; h++) {
		lua_pushstring(L, hook_names[h]);
		lua_rawget(L, -2);
		if (lua_isnil(L, -1)) {
			lua_pop(L, 1);
			continue;
		}
		if (!lua_isfunction(L, -1)) {
			lua_pushfstring(L, "%s: hook '%s' is a %s, not a function",
					script, hook_names[h],
					luaL_typename(L, -1));
			lua_error(L);
		}
		vm->hook_ref[h] = luaL_ref(L, LUA_REGISTRYINDEX);
		found++;
	}
	if (found == 0) {
		lua_pushfstring(L, "%s: the script returns no hook (server_tls, "
				   "client_tls, connect, helo, mail, rcpt)",
				script);
		lua_error(L);
	}
}

static int decide(lua_State *L);
static int error_where(lua_State *L);

/* For policy_check: gateway.testing, required before the script runs (so
 * that what the script does to globals does not reach it), and its
 * fixtures function kept. */
static void take_fixtures(struct vm *vm)
{
	lua_State *L = vm->L;

	lua_getglobal(L, "require");
	lua_pushstring(L, "gateway.testing");
	lua_call(L, 1, 1);
	if (lua_istable(L, -1)) {
		lua_pushstring(L, "fixtures");
		lua_rawget(L, -2);
	}
	if (!lua_isfunction(L, -1))
		luaL_error(L, "%s/gateway/testing.lua: no fixtures function",
			   vm->p->lua_dir);
	vm->fixtures_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_settop(L, 0);
}

/* Protected: the sandbox, the ctx and host tables, then the script run
 * under the budget (armed by the caller) and its hooks taken. */
static int build_state(lua_State *L)
{
	struct vm *vm = lua_touserdata(L, 1);
	struct policy *p = vm->p;

	lua_settop(L, 0);
	open_sandbox(vm);
	make_strings(vm);
	make_host(vm);
	lua_pushcfunction(L, decide);
	vm->decide_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_pushlightuserdata(L, vm);
	lua_pushcclosure(L, error_where, 1);
	vm->where_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	if (vm->checking)
		take_fixtures(vm);
	lua_pushfstring(L, "@%s", p->script);
	if (load_chunk(L, p->source, p->source_len) != 0)
		return lua_error(L);
	lua_call(L, 0, 1);
	take_hooks(vm);
	return 0;
}

/* The text of the error object on top of L, without converting it in
 * place (that allocates, and may raise). */
static void error_text(lua_State *L, char *buf, size_t len)
{
	if (lua_type(L, -1) == LUA_TSTRING)
		snprintf(buf, len, "%s", lua_tostring(L, -1));
	else if (lua_type(L, -1) == LUA_TNUMBER)
		snprintf(buf, len, "%.14g", lua_tonumber(L, -1));
	else
		snprintf(buf, len, "error object is not a string");
}

/* A Lua panic (an error raised outside any protected call: a bug here)
 * must not end the process: it jumps back into the call in progress,
 * which fails and leaves the state to be replaced. */
static int on_panic(lua_State *L)
{
	char msg[256];
	struct logline l;

	error_text(L, msg, sizeof(msg));
	log_begin(&l, LOG_ERR, "policy_panic");
	log_kv(&l, "msg", "%s", msg);
	log_end(&l);
	if (panic_return != NULL)
		longjmp(*panic_return, 1);
	abort();
}

enum { PANICKED = -1 };

/* Calls f(ud) protected, with the panic guard; PANICKED poisons the
 * state. `ref` is f as a registry reference (LUA_NOREF: none yet): then
 * no function object is made for the call, which lua_cpcall would do, and
 * error_where handles its errors. */
static int protected_call(struct vm *vm, lua_CFunction f, int ref, void *ud)
{
	jmp_buf here, *outer = panic_return;
	int rc = PANICKED;

	panic_return = &here;
	if (setjmp(here) == 0) {
		if (ref == LUA_NOREF) {
			rc = lua_cpcall(vm->L, f, ud);
		} else {
			lua_rawgeti(vm->L, LUA_REGISTRYINDEX, vm->where_ref);
			lua_rawgeti(vm->L, LUA_REGISTRYINDEX, ref);
			lua_pushlightuserdata(vm->L, ud);
			rc = lua_pcall(vm->L, 1, 0, -3);
		}
	} else {
		vm->poisoned = vm->panicked = true;
	}
	panic_return = outer;
	return rc;
}

static void vm_free(struct vm *vm, bool panicked)
{
	if (vm == NULL)
		return;
	/* a state left by a panic is not closed: its insides are not to be
	 * trusted, and leaking it is the safe way out */
	if (vm->L != NULL && !panicked)
		lua_close(vm->L);
	free(vm);
}

/* A new state for p's script (`checking`: with gateway.testing for
 * policy_check): NULL and "FILE:LINE: message" in err. */
static struct vm *vm_new(struct policy *p, bool checking, char *err,
			 size_t err_len)
{
	struct vm *vm = calloc(1, sizeof(*vm));
	struct vm *prev = p->vm;
	int rc;

	if (vm == NULL || (vm->L = luaL_newstate()) == NULL) {
		free(vm);
		snprintf(err, err_len, "policy: out of memory");
		return NULL;
	}
	vm->p = p;
	vm->checking = checking;
	vm->fixtures_ref = LUA_NOREF;
	vm->cap = (size_t)p->cfg->policy_max_memory;
	for (int h = 0; h < HOOK_COUNT; h++)
		vm->hook_ref[h] = LUA_NOREF;
	vm->budget = (struct sandbox_budget){budget_spend, budget_raise,
					     budget_room, vm, vm->cap, 0};
	vm->alloc = lua_getallocf(vm->L, &vm->alloc_ud);
	vm->used = (size_t)lua_gc(vm->L, LUA_GCCOUNT, 0) * 1024 +
		   (size_t)lua_gc(vm->L, LUA_GCCOUNTB, 0);
	lua_setallocf(vm->L, vm_alloc, vm);
	lua_atpanic(vm->L, on_panic);
	luaJIT_setmode(vm->L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);
	vm->budget.stack_base = (uintptr_t)&prev;
	p->vm = vm; /* for the budget, while the script runs */
	if (checking) /* the script passed its own load budget already */
		budget_arm(p, "load", CHECK_MAX_TIME, CHECK_MAX_INSTRUCTIONS);
	else
		budget_start(p, "load");
	rc = protected_call(vm, build_state, LUA_NOREF, vm);
	budget_stop(p);
	p->vm = prev;
	if (rc != 0) {
		if (rc == PANICKED)
			snprintf(err, err_len, "%s: Lua panic while loading",
				 p->script);
		else
			error_text(vm->L, err, err_len);
		if (rc == LUA_ERRMEM && (vm->over_memory || p->over_time))
			snprintf(err, err_len, "%s: load budget exceeded (%s)",
				 p->script,
				 overrun_names[vm->over_memory ? OVER_MEMORY
							       : OVER_TIME]);
		vm_free(vm, vm->panicked);
		return NULL;
	}
	lua_settop(vm->L, 0);
	return vm;
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
	if (cfg->policy_script == NULL)
		return p;
	p->script = strdup(cfg->policy_script);
	p->script_dir = dir_of(cfg->policy_script);
	p->lua_dir = strdup(lua_dir);
	if (p->script == NULL || p->script_dir == NULL || p->lua_dir == NULL) {
		snprintf(err, err_len, "policy: out of memory");
		policy_free(p);
		return NULL;
	}
	p->source = read_source(p->script, &p->source_len, err, err_len);
	if (p->source == NULL ||
	    (p->vm = vm_new(p, false, err, err_len)) == NULL) {
		policy_free(p);
		return NULL;
	}
	for (int h = 0; h < HOOK_COUNT; h++)
		p->has_hook[h] = p->vm->hook_ref[h] != LUA_NOREF;
	return p;
}

void policy_free(struct policy *p)
{
	if (p == NULL)
		return;
	vm_free(p->vm, false);
	free(p->script);
	free(p->script_dir);
	free(p->lua_dir);
	free(p->source);
	free(p);
}

/* Replaces a poisoned state with a fresh one from the same script text
 * (modules are read again from disk). */
static void vm_replace(struct policy *p, const char *reason)
{
	char err[512];
	struct logline l;
	struct vm *old = p->vm;
	size_t used = old != NULL ? old->used : 0;

	p->vm = NULL;
	vm_free(old, old != NULL && old->panicked);
	p->vm = vm_new(p, false, err, sizeof(err));
	p->rebuilds++;
	if (p->vm == NULL) { /* a failing load is not retried at every call */
		clock_gettime(CLOCK_MONOTONIC, &p->retry_at);
		p->retry_at.tv_sec += 1;
	}
	log_begin(&l, p->vm != NULL ? LOG_WARN : LOG_ERR, "policy_rebuild");
	log_kv(&l, "script", "%s", p->script);
	log_kv(&l, "reason", "%s", reason);
	log_kv(&l, "memory", "%zu", used);
	log_kv(&l, "status", "%s", p->vm != NULL ? "ok" : "failed");
	if (p->vm == NULL)
		log_kv(&l, "error", "%s", err);
	log_end(&l);
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

static void fill_inbound(struct vm *vm, int strs,
			 const struct policy_facts *f)
{
	lua_State *L = vm->L;
	bool active = f->tls_active;

	lua_rawgeti(L, LUA_REGISTRYINDEX, vm->client_ref);
	set_string(L, strs, S_IP, f->client_ip);
	push_cached(L, strs, S_PORT);
	lua_pushnumber(L, f->client_port);
	lua_rawset(L, -3);
	set_bool(L, strs, S_TRUSTED, f->client_trusted);
	set_table(L, strs, S_CLIENT);
	lua_rawgeti(L, LUA_REGISTRYINDEX, vm->tls_ref);
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

/* ctx.section: the [domain:...] section's name and keys, pushed. */
static void push_section_table(lua_State *L, int strs,
			       const struct domain_rule *r)
{
	lua_createtable(L, 0, 4);
	push_cached(L, strs, S_NAME);
	lua_pushfstring(L, "domain:%s", r->name);
	lua_rawset(L, -3);
	if (r->has_tls)
		set_cached(L, strs, S_TLS, S_LEVEL0 + r->tls);
	if (r->has_tls_in)
		set_cached(L, strs, S_TLS_IN, S_LEVEL0 + r->tls_in);
	set_string(L, strs, S_NEXT_HOP, r->next_hop);
}

static void push_section(lua_State *L, int strs, const struct domain_rule *r)
{
	push_section_table(L, strs, r);
	set_table(L, strs, S_SECTION);
}

/* ctx.mta_sts = { mode = "enforce", mx = { "mx.example.com", ... } }: a
 * fresh table (only client_tls has one). */
static void push_mta_sts(lua_State *L, int strs, const struct sts_policy *p)
{
	lua_createtable(L, 0, 2);
	set_cached(L, strs, S_MODE, S_MODE0 + p->mode);
	push_cached(L, strs, S_MX);
	lua_createtable(L, (int)p->n_mx, 0);
	for (unsigned i = 0; i < p->n_mx && i < STS_MAX_MX; i++) {
		lua_pushstring(L, p->mx[i]);
		lua_rawseti(L, -2, (int)i + 1);
	}
	lua_rawset(L, -3);
	set_table(L, strs, S_MTA_STS);
}

/* The ctx of a call. The tables are reused, not rebuilt: allocating and
 * collecting them was most of a decision's cost. Every field is written
 * (or cleared) on every call, so nothing of one call shows in the next;
 * a script that keeps a reference to ctx sees it change (README). */
static void push_ctx(struct vm *vm, int strs, const struct policy_facts *f)
{
	lua_State *L = vm->L;

	lua_rawgeti(L, LUA_REGISTRYINDEX, vm->ctx_ref);
	set_cached(L, strs, S_STAGE, S_HOOK0 + f->hook);
	set_cached(L, strs, S_HOSTNAME, S_HOSTNAME_VALUE);
	if (f->inbound) {
		fill_inbound(vm, strs, f);
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
	if (f->mta_sts != NULL)
		push_mta_sts(L, strs, f->mta_sts);
	else
		clear(L, strs, S_MTA_STS);
	set_string(L, strs, S_DANE, f->dane);
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

/* A level, in any case (as in gateway.ini): server_tls gets an inbound
 * one, client_tls any. `where` starts the message of a bad one: the
 * script, or where the hook is defined (policy_check). */
static void read_level(lua_State *L, const char *where, enum policy_hook h,
		       struct policy_result *out)
{
	const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1)
						       : NULL;
	bool inbound = h == HOOK_SERVER_TLS;

	if (s != NULL && tls_level_parse(s, &out->level)) {
		out->outcome = POLICY_LEVEL;
		if (!inbound || !tls_level_outbound_only(out->level))
			return;
		fail_result(out, "%s: %s returned \"%s\", an outbound level "
				 "(inbound: none, may, encrypt, verify)",
			    where, hook_names[h], s);
		return;
	}
	fail_result(out, "%s: %s returned %s%.60s%s, not a level (none, may, "
			 "encrypt, verify%s)",
		    where, hook_names[h], s ? "\"" : "a ",
		    s ? s : luaL_typename(L, -1), s ? "\"" : "",
		    inbound ? "" : ", dane, dane-only, sts");
}

static bool one_line(const char *text)
{
	for (const char *c = text; *c != '\0'; c++)
		if ((unsigned char)*c < 0x20 || *c == 0x7f)
			return false;
	return text[0] != '\0' && strlen(text) <= MAX_TEXT;
}

/* The raw value of a cached key in the table at `t`, pushed. */
static void raw_field(lua_State *L, int t, int strs, enum cached_string key)
{
	push_cached(L, strs, key);
	lua_rawget(L, t);
}

/* {action =, code =, text =}: read field by field with raw access (no
 * metamethod of the table runs), checked as it goes. */
static void read_verdict_table(lua_State *L, const char *where,
			       enum policy_hook h, int strs,
			       struct policy_result *out)
{
	int t = lua_gettop(L);
	const char *action, *text;
	lua_Number code;

	raw_field(L, t, strs, S_ACTION);
	raw_field(L, t, strs, S_CODE);
	raw_field(L, t, strs, S_TEXT);
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
				    where, hook_names[h], action);
			return;
		}
		out->outcome = action[0] == 'r' ? POLICY_REJECT : POLICY_TEMPFAIL;
		out->code = (int)code;
		snprintf(out->text, sizeof(out->text), "%s", text);
	} else {
		fail_result(out, "%s: %s returned a bad verdict (action \"%.40s\", "
				 "code %g)",
			    where, hook_names[h], action, code);
	}
}

static void read_verdict(lua_State *L, const char *where,
			 enum policy_hook h, int strs, struct policy_result *out)
{
	if (lua_type(L, -1) == LUA_TSTRING &&
	    strcmp(lua_tostring(L, -1), "accept") == 0)
		out->outcome = POLICY_ACCEPT;
	else if (lua_istable(L, -1))
		read_verdict_table(L, where, h, strs, out);
	else
		fail_result(out, "%s: %s returned a %s, not a verdict",
			    where, hook_names[h], luaL_typename(L, -1));
}

/* client_tls absent: dane where the destination publishes TLSA records
 * (or their lookup failed), else sts where the domain publishes an
 * enforce MTA-STS policy, else may (as the stock try.lua without its
 * [domain:...] rules; gateway.dane and gateway.mta_sts). */
static enum tls_level default_client_level(const struct policy_facts *f)
{
	if (f->dane != NULL && (strcmp(f->dane, "secure") == 0 ||
				strcmp(f->dane, "bogus") == 0))
		return TLS_LEVEL_DANE;
	if (f->mta_sts != NULL && f->mta_sts->mode == STS_MODE_ENFORCE)
		return TLS_LEVEL_STS;
	return TLS_LEVEL_MAY;
}

static void apply_default(const struct policy *p,
			  const struct policy_facts *f,
			  struct policy_result *out)
{
	out->by_default = true;
	switch (f->hook) {
	case HOOK_SERVER_TLS:
		out->outcome = POLICY_LEVEL;
		out->level = p->cfg->server_level;
		break;
	case HOOK_CLIENT_TLS:
		out->outcome = POLICY_LEVEL;
		out->level = default_client_level(f);
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

/* The message handler of hook calls: an error whose message has no
 * position, or one inside lua/ (the shared modules), gets the position of
 * the innermost frame of the script, where the policy went wrong. Frames
 * a tail call dropped are gone: then the message stays as it is. Raises
 * nothing of its own (a failed allocation here is LuaJIT's "error in error
 * handling"). */
static int error_where(lua_State *L)
{
	struct vm *vm = lua_touserdata(L, lua_upvalueindex(1));
	const char *script = vm->p->script, *lua_dir = vm->p->lua_dir;
	const char *msg = lua_type(L, 1) == LUA_TSTRING ? lua_tostring(L, 1)
							: NULL;
	size_t n = strlen(lua_dir);
	lua_Debug ar;

	if (msg != NULL && has_position(msg) &&
	    !(strncmp(msg, lua_dir, n) == 0 && msg[n] == '/'))
		return 1;
	for (int level = 1; lua_getstack(L, level, &ar); level++) {
		if (!lua_getinfo(L, "Sl", &ar) || ar.currentline <= 0 ||
		    ar.source[0] != '@' || strcmp(ar.source + 1, script) != 0)
			continue;
		if (msg != NULL)
			lua_pushfstring(L, "%s:%d: %s", script, ar.currentline,
					msg);
		else
			lua_pushfstring(L, "%s:%d: error object is a %s value",
					script, ar.currentline,
					luaL_typename(L, 1));
		return 1;
	}
	lua_settop(L, 1);
	return 1;
}

static void call_failed(const char *where, enum policy_hook h,
			lua_State *L, struct policy_result *out)
{
	char msg[sizeof(out->text)];

	error_text(L, msg, sizeof(msg));
	if (has_position(msg))
		fail_result(out, "%s", msg);
	else
		fail_result(out, "%s: %s: %s", where, hook_names[h], msg);
}

/* One hook call: ctx from the engine's facts, or (policy_check) a fixture
 * table kept in the registry at ctx_ref. */
struct call {
	struct policy *p;
	enum policy_hook hook;
	const struct policy_facts *f;
	int ctx_ref;	   /* LUA_NOREF: build ctx from f */
	const char *where; /* what a message without a line starts with */
	unsigned long long sid;
	struct policy_result *out;
};

/* Protected: ctx, the hook, its result. */
static int decide(lua_State *L)
{
	struct call *c = lua_touserdata(L, 1);
	struct vm *vm = c->p->vm;
	enum policy_hook h = c->hook;
	int strs;

	lua_settop(L, 0);
	lua_rawgeti(L, LUA_REGISTRYINDEX, vm->strings_ref);
	strs = lua_gettop(L);
	lua_rawgeti(L, LUA_REGISTRYINDEX, vm->hook_ref[h]);
	if (c->ctx_ref == LUA_NOREF)
		push_ctx(vm, strs, c->f);
	else
		lua_rawgeti(L, LUA_REGISTRYINDEX, c->ctx_ref);
	lua_rawgeti(L, LUA_REGISTRYINDEX, vm->host_ref);
	lua_call(L, 2, 1);
	if (h == HOOK_SERVER_TLS || h == HOOK_CLIENT_TLS)
		read_level(L, c->where, h, c->out);
	else
		read_verdict(L, c->where, h, strs, c->out);
	return 0;
}

/* A call that passed a budget fails, even when the script caught the
 * error and returned a verdict; "not enough memory" gets its reason. */
static void check_overrun(struct policy *p, enum policy_hook h,
			  struct policy_result *out)
{
	struct vm *vm = p->vm;
	enum overrun why = vm->over_memory || vm->used > vm->cap ? OVER_MEMORY
			   : p->over_time			? OVER_TIME
								: WITHIN;

	if (why == WITHIN)
		return;
	if (out->outcome != POLICY_ERROR || strstr(out->text, "budget "
							     "exceeded") ==
						    NULL)
		fail_result(out, "%s: %s budget exceeded (%s)", p->script,
			    hook_names[h], overrun_names[why]);
	if (why == OVER_MEMORY)
		vm->poisoned = true;
}

static void run_call(struct call *c)
{
	struct policy *p = c->p;
	struct vm *vm = p->vm;
	struct policy_result *out = c->out;
	int rc;

	char stack_base;

	vm->over_memory = false;
	vm->budget.stack_base = (uintptr_t)&stack_base;
	p->sid = c->sid;
	budget_start(p, hook_names[c->hook]);
	rc = protected_call(vm, decide, vm->decide_ref, c);
	budget_stop(p);
	if (rc == PANICKED)
		fail_result(out, "%s: %s: Lua panic (the state is rebuilt)",
			    p->script, hook_names[c->hook]);
	else if (rc != 0)
		call_failed(c->where, c->hook, vm->L, out);
	if (!vm->panicked) {
		check_overrun(p, c->hook, out);
		lua_settop(vm->L, 0);
	}
}

void policy_call(struct policy *p, const struct policy_facts *f,
		 struct policy_result *out)
{
	memset(out, 0, sizeof(*out));
	if (p->script == NULL || !p->has_hook[f->hook]) {
		apply_default(p, f, out);
		return;
	}
	if (p->vm == NULL && past(&p->retry_at))
		vm_replace(p, "an earlier rebuild failed");
	if (p->vm == NULL || p->vm->hook_ref[f->hook] == LUA_NOREF) {
		fail_result(out, "%s: %s: the policy state could not be rebuilt "
				 "(see event=policy_rebuild)",
			    policy_script(p), hook_names[f->hook]);
		return;
	}
	run_call(&(struct call){p, f->hook, f, LUA_NOREF, p->script, f->sid,
				out});
	if (p->vm->poisoned)
		vm_replace(p, p->vm->panicked ? "panic" : "max_memory");
}

/* ---- check ------------------------------------------------------------- */

/*
 * policy_check runs every hook over the fixtures of gateway.testing, in a
 * state of its own (so the running state never sees them): each hook call
 * under the same budgets as a real one; loading that state (gateway.testing
 * and the script, which passed its own load budget already) and making the
 * fixtures (they grow with the number of sections) under CHECK_MAX_TIME
 * and CHECK_MAX_INSTRUCTIONS; the whole run under CHECK_MAX_TIME plus
 * CHECK_FIXTURE_NS a fixture.
 */

struct check_run {
	struct policy *p;
	struct policy_check *out;
	int iter_ref, ctx_ref;
	char where[HOOK_COUNT][512]; /* "FILE:LINE" of each hook */
	/* the fixture in hand */
	enum policy_hook hook;
	bool done;
	lua_Number group;
	char desc[200];
	/* the last result, to see answers that depend on tls.peer */
	lua_Number last_group;
	struct policy_result last;
};

/* relay_networks' first network with its last bit set ("127.0.0.1" for
 * 127.0.0.0/8), pushed; false when there is none. */
static void push_trusted_ip(lua_State *L, const struct config *cfg)
{
	char text[INET6_ADDRSTRLEN];
	uint8_t addr[16];
	const struct cidr *net = cfg->relay_networks;
	unsigned bits;

	if (cfg->n_relay_networks == 0) {
		lua_pushboolean(L, 0);
		return;
	}
	bits = net->family == AF_INET ? 32 : 128;
	memcpy(addr, net->addr, sizeof(addr));
	if (net->prefix < bits)
		addr[bits / 8 - 1] |= 1;
	if (inet_ntop(net->family, addr, text, sizeof(text)) == NULL)
		lua_pushboolean(L, 0);
	else
		lua_pushstring(L, text);
}

/* { hostname =, trusted_ip =, sections = { NAME = section, ... },
 * domains = relay_domains } */
static void push_fixture_opts(lua_State *L, int strs, const struct config *cfg)
{
	lua_createtable(L, 0, 4);
	lua_pushstring(L, cfg->hostname);
	lua_setfield(L, -2, "hostname");
	push_trusted_ip(L, cfg);
	lua_setfield(L, -2, "trusted_ip");
	lua_createtable(L, 0, (int)cfg->n_domains);
	for (size_t i = 0; i < cfg->n_domains; i++) {
		push_section_table(L, strs, &cfg->domains[i]);
		lua_setfield(L, -2, cfg->domains[i].name);
	}
	lua_setfield(L, -2, "sections");
	lua_createtable(L, (int)cfg->n_relay_domains, 0);
	for (size_t i = 0; i < cfg->n_relay_domains; i++) {
		lua_pushstring(L, cfg->relay_domains[i]);
		lua_rawseti(L, -2, (int)i + 1);
	}
	lua_setfield(L, -2, "domains");
}

/* Protected: the iterator gateway.testing.fixtures(opts) gives, kept in
 * the registry, and where each hook is defined. */
static int check_start(lua_State *L)
{
	struct check_run *r = lua_touserdata(L, 1);
	struct vm *vm = r->p->vm;

	lua_settop(L, 0);
	lua_rawgeti(L, LUA_REGISTRYINDEX, vm->strings_ref);
	lua_rawgeti(L, LUA_REGISTRYINDEX, vm->fixtures_ref);
	push_fixture_opts(L, 1, r->p->cfg);
	lua_call(L, 1, 1);
	if (!lua_isfunction(L, -1))
		luaL_error(L, "gateway.testing.fixtures gave no iterator");
	r->iter_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_pushboolean(L, 0);
	r->ctx_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	for (int h = 0; h < HOOK_COUNT; h++) {
		lua_rawgeti(L, LUA_REGISTRYINDEX, vm->hook_ref[h]);
		if (!function_where(L, -1, r->where[h], sizeof(r->where[h])))
			snprintf(r->where[h], sizeof(r->where[h]), "%s",
				 r->p->script);
		lua_settop(L, 1);
	}
	return 0;
}

/* Protected: the next fixture into ctx_ref, its hook, group and words. */
static int check_next(lua_State *L)
{
	struct check_run *r = lua_touserdata(L, 1);
	const char *stage;

	lua_settop(L, 0);
	lua_rawgeti(L, LUA_REGISTRYINDEX, r->iter_ref);
	lua_call(L, 0, 3);
	if (lua_isnil(L, 1)) {
		r->done = true;
		return 0;
	}
	lua_pushstring(L, "stage");
	lua_rawget(L, 1);
	stage = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "";
	for (r->hook = 0; r->hook < HOOK_COUNT; r->hook++)
		if (strcmp(stage, hook_names[r->hook]) == 0)
			break;
	if (r->hook == HOOK_COUNT)
		luaL_error(L, "gateway.testing.fixtures: bad stage");
	r->group = lua_tonumber(L, 2);
	snprintf(r->desc, sizeof(r->desc), "%s",
		 lua_type(L, 3) == LUA_TSTRING ? lua_tostring(L, 3) : "?");
	lua_pushvalue(L, 1);
	lua_rawseti(L, LUA_REGISTRYINDEX, r->ctx_ref);
	return 0;
}

/* Runs f(r) protected under the budget, as `what`; the error in err. */
static bool check_step(struct check_run *r, lua_CFunction f,
		       const char *what, char *err, size_t err_len)
{
	struct vm *vm = r->p->vm;
	int rc;

	vm->over_memory = false;
	vm->budget.stack_base = (uintptr_t)&rc;
	budget_arm(r->p, what, CHECK_MAX_TIME, CHECK_MAX_INSTRUCTIONS);
	rc = protected_call(vm, f, LUA_NOREF, r);
	budget_stop(r->p);
	if (rc == 0)
		return true;
	if (rc == PANICKED) {
		snprintf(err, err_len, "%s: Lua panic in the check", r->p->script);
		return false;
	}
	error_text(vm->L, err, err_len);
	if (vm->over_memory || r->p->over_time)
		snprintf(err, err_len, "%s: check budget exceeded (%s)",
			 r->p->script, vm->over_memory ? "max_memory" : "max_time");
	return false;
}

static bool same_answer(const struct policy_result *a,
			const struct policy_result *b)
{
	return a->outcome == b->outcome && a->level == b->level &&
	       a->code == b->code && strcmp(a->text, b->text) == 0;
}

/* What one answer says about client certificates: a server_tls that
 * gives verify needs them, and so does a hook whose answer changes with
 * tls.peer alone. */
static void note_answer(struct check_run *r, const struct policy_result *res)
{
	struct policy_check *out = r->out;
	bool peer_group = r->hook == HOOK_HELO || r->hook == HOOK_MAIL ||
			  r->hook == HOOK_RCPT;

	if (!out->wants_cert && r->hook == HOOK_SERVER_TLS &&
	    res->level == TLS_LEVEL_VERIFY) {
		out->wants_cert = true;
		snprintf(out->cert_reason, sizeof(out->cert_reason),
			 "server_tls returns verify (%s)", r->desc);
	}
	if (!out->wants_cert && peer_group && r->group == r->last_group &&
	    !same_answer(res, &r->last)) {
		out->wants_cert = true;
		snprintf(out->cert_reason, sizeof(out->cert_reason),
			 "%s's answer changes with the client certificate "
			 "(%s)",
			 hook_names[r->hook], r->desc);
	}
	r->last_group = peer_group ? r->group : -1;
	r->last = *res;
}

/* One hook call on the fixture in hand; false with err when it failed. */
static bool check_call(struct check_run *r, char *err, size_t err_len)
{
	struct policy_result res;
	struct call c = {r->p, r->hook, NULL, r->ctx_ref, r->where[r->hook], 0,
			 &res};

	memset(&res, 0, sizeof(res));
	run_call(&c);
	r->out->calls++;
	if (res.outcome != POLICY_ERROR) {
		note_answer(r, &res);
		return true;
	}
	if (has_position(res.text))
		snprintf(err, err_len, "%s (check: %s)", res.text, r->desc);
	else
		snprintf(err, err_len, "%s: %s (check: %s)", r->where[r->hook],
			 res.text, r->desc);
	return false;
}

/* The whole check may take CHECK_MAX_TIME, and CHECK_FIXTURE_NS more for
 * each fixture (a large configuration has many: 20 per domain). */
static void extend(struct timespec *end, long ns)
{
	end->tv_nsec += ns;
	if (end->tv_nsec >= 1000000000L) {
		end->tv_sec++;
		end->tv_nsec -= 1000000000L;
	}
}

static bool check_loop(struct check_run *r, char *err, size_t err_len)
{
	struct timespec end;

	clock_gettime(CLOCK_MONOTONIC, &end);
	end.tv_sec += CHECK_MAX_TIME;
	if (!check_step(r, check_start, "check", err, err_len))
		return false;
	for (;;) {
		if (!check_step(r, check_next, "check", err, err_len))
			return false;
		if (r->done)
			return true;
		extend(&end, CHECK_FIXTURE_NS);
		if (r->p->vm->hook_ref[r->hook] != LUA_NOREF &&
		    !check_call(r, err, err_len))
			return false;
		if (past(&end)) {
			snprintf(err, err_len, "%s: the check ran %u hook calls "
					 "and stopped at its time limit: hooks "
					 "this slow would stall every session "
					 "(at: %s)",
				 r->p->script, r->out->calls, r->desc);
			return false;
		}
	}
}

bool policy_check(struct policy *p, struct policy_check *out, char *err,
		  size_t err_len)
{
	struct check_run *r;
	struct vm *running_vm = p->vm;
	bool ok;

	memset(out, 0, sizeof(*out));
	if (p->script == NULL)
		return true;
	r = calloc(1, sizeof(*r));
	if (r == NULL) {
		snprintf(err, err_len, "policy: out of memory");
		return false;
	}
	r->p = p;
	r->out = out;
	r->last_group = -1;
	p->vm = vm_new(p, true, err, err_len);
	ok = p->vm != NULL && check_loop(r, err, err_len);
	if (p->vm != NULL)
		vm_free(p->vm, p->vm->panicked);
	p->vm = running_vm;
	free(r);
	return ok;
}
