/*
 * sandbox_str: bounded string (and table) functions for the policy sandbox
 * (see sandbox_str.h). Each function keeps the arguments, results and
 * errors of LuaJIT's own (spec/unit/sandbox_str_spec.lua compares them);
 * what changes is that the work is charged to the budget and stops when it
 * says so. It must not keep anything between calls but gmatch's iterator
 * position.
 */
#include "policy/sandbox_str.h"

#include "policy/pattern.h"

#include <lauxlib.h>
#include <stdint.h>
#include <string.h>

/* A stack index that stays valid as the stack grows (pseudo-indices,
 * such as LUA_GLOBALSINDEX, are left alone). */
static int abs_index(lua_State *L, int i)
{
	return i > 0 || i <= LUA_REGISTRYINDEX ? i : lua_gettop(L) + i + 1;
}

/* Upvalue 1 of every function here: the budget (light userdata). */
static const struct sandbox_budget *budget_of(lua_State *L)
{
	return lua_touserdata(L, lua_upvalueindex(1));
}

static bool tick(void *ud)
{
	const struct sandbox_budget *b = ud;

	return b->spend(b->ud, PATTERN_TICK);
}

static void spend(lua_State *L, const struct sandbox_budget *b, size_t work)
{
	if (!b->spend(b->ud, work))
		b->raise(L, b->ud, false);
}

/* Raises "C stack overflow" when this call is more than SANDBOX_MAX_CSTACK
 * below the budget's stack base: gsub calls Lua, which may call gsub... */
static void check_stack(lua_State *L, const struct sandbox_budget *b)
{
	char here;
	uintptr_t at = (uintptr_t)&here;
	uintptr_t used =
	    at < b->stack_base ? b->stack_base - at : at - b->stack_base;

	if (b->stack_base != 0 && used > SANDBOX_MAX_CSTACK)
		luaL_error(L, "C stack overflow");
}

/* The outcome of a match that did not succeed or fail cleanly. */
static void check_status(lua_State *L, const struct pattern *m)
{
	if (m->status == PATTERN_STOPPED) {
		const struct sandbox_budget *b = budget_of(L);

		b->raise(L, b->ud, false);
	}
	if (m->status == PATTERN_ERROR)
		luaL_error(L, "%s", m->error);
}

/* ---- captures --------------------------------------------------------- */

static void push_capture(lua_State *L, const struct pattern *m, int i,
                         const char *s, const char *e)
{
	const struct pattern_capture *c = &m->cap[i];

	if (i >= m->level) {
		if (i != 0)
			luaL_error(L, "invalid capture index");
		lua_pushlstring(L, s, (size_t)(e - s));
	} else if (c->len == PATTERN_CAP_OPEN) {
		luaL_error(L, "unfinished capture");
	} else if (c->len == PATTERN_CAP_POSITION) {
		lua_pushinteger(L, c->start - m->src + 1);
	} else {
		lua_pushlstring(L, c->start, (size_t)c->len);
	}
}

/* The captures (or, when there is none and `whole`, the match s..e). */
static int push_captures(lua_State *L, const struct pattern *m, const char *s,
                         const char *e, bool whole)
{
	int n = m->level == 0 && whole ? 1 : m->level;

	luaL_checkstack(L, n, "too many captures");
	for (int i = 0; i < n; i++)
		push_capture(L, m, i, s, e);
	return n;
}

/* ---- find, match ------------------------------------------------------ */

/* The 0-based start of a search: init as LuaJIT reads it (negative from
 * the end, clamped into 0..len). */
static size_t start_of(lua_State *L, int arg, size_t len)
{
	lua_Integer init = luaL_optinteger(L, arg, 1);

	if (init < 0)
		init += (lua_Integer)len;
	else
		init--;
	if (init < 0)
		return 0;
	return (size_t)init > len ? len : (size_t)init;
}

static int find_plain(lua_State *L, const char *s, size_t ls, size_t at,
                      const char *p, size_t lp)
{
	const char *q;

	spend(L, budget_of(L), ls - at);
	q = pattern_find_plain(s + at, ls - at, p, lp);
	if (q == NULL) {
		lua_pushnil(L);
		return 1;
	}
	lua_pushinteger(L, q - s + 1);
	lua_pushinteger(L, (q - s) + (lua_Integer)lp);
	return 2;
}

static int find_aux(lua_State *L, bool find)
{
	const struct sandbox_budget *b = budget_of(L);
	struct pattern m;
	size_t ls, lp;
	const char *s = luaL_checklstring(L, 1, &ls);
	const char *p = luaL_checklstring(L, 2, &lp);
	size_t at = start_of(L, 3, ls);
	const char *start, *end;

	if (find && (lua_toboolean(L, 4) || pattern_is_plain(p, lp)))
		return find_plain(L, s, ls, at, p, lp);
	pattern_init(&m, s, ls, p, lp, true, tick, (void *)b);
	if (pattern_search(&m, s + at, &start, &end) != PATTERN_MATCH) {
		check_status(L, &m);
		lua_pushnil(L);
		return 1;
	}
	if (!find)
		return push_captures(L, &m, start, end, true);
	lua_pushinteger(L, start - s + 1);
	lua_pushinteger(L, end - s);
	return push_captures(L, &m, NULL, NULL, false) + 2;
}

static int str_find(lua_State *L)
{
	return find_aux(L, true);
}

static int str_match(lua_State *L)
{
	return find_aux(L, false);
}

/* ---- gmatch ----------------------------------------------------------- */

/* Upvalues: budget, subject, pattern, next position (0-based). */
static int gmatch_step(lua_State *L)
{
	const struct sandbox_budget *b = budget_of(L);
	size_t ls, lp;
	const char *s = lua_tolstring(L, lua_upvalueindex(2), &ls);
	const char *p = lua_tolstring(L, lua_upvalueindex(3), &lp);
	lua_Integer pos = lua_tointeger(L, lua_upvalueindex(4));
	struct pattern m;
	const char *end;

	pattern_init(&m, s, ls, p, lp, false, tick, (void *)b);
	for (; pos <= (lua_Integer)ls; pos++) {
		enum pattern_status st = pattern_match_at(&m, s + pos, &end);

		if (st == PATTERN_NOMATCH)
			continue;
		check_status(L, &m);
		/* an empty match moves one on, or the loop would stand still */
		lua_pushinteger(L, end - s + (end == s + pos ? 1 : 0));
		lua_replace(L, lua_upvalueindex(4));
		return push_captures(L, &m, s + pos, end, true);
	}
	return 0;
}

static int str_gmatch(lua_State *L)
{
	luaL_checkstring(L, 1);
	luaL_checkstring(L, 2);
	lua_settop(L, 2);
	lua_pushvalue(L, lua_upvalueindex(1));
	lua_insert(L, 1);
	lua_pushinteger(L, 0);
	lua_pushcclosure(L, gmatch_step, 4);
	return 1;
}

/* ---- gsub ------------------------------------------------------------- */

/* The replacement string (arg 3) for the match s..e: %0-%9 and %%; any
 * other character after '%' stands for itself, as in Lua 5.1. */
static void add_string(lua_State *L, luaL_Buffer *buf, const struct pattern *m,
                       const char *s, const char *e)
{
	size_t len;
	const char *r = lua_tolstring(L, 3, &len);

	for (size_t i = 0; i < len; i++) {
		if (r[i] != '%') {
			luaL_addchar(buf, r[i]);
			continue;
		}
		i++; /* a final '%' stands for the string's terminating NUL */
		if (r[i] < '0' || r[i] > '9') {
			luaL_addchar(buf, r[i]);
		} else if (r[i] == '0') {
			luaL_addlstring(buf, s, (size_t)(e - s));
		} else {
			push_capture(L, m, r[i] - '1', s, e);
			luaL_addvalue(buf);
		}
	}
}

static void add_value(lua_State *L, luaL_Buffer *buf, const struct pattern *m,
                      const char *s, const char *e)
{
	switch (lua_type(L, 3)) {
	case LUA_TFUNCTION:
		lua_pushvalue(L, 3);
		lua_call(L, push_captures(L, m, s, e, true), 1);
		break;
	case LUA_TTABLE:
		push_capture(L, m, 0, s, e);
		lua_gettable(L, 3);
		break;
	default:
		add_string(L, buf, m, s, e);
		return;
	}
	if (!lua_toboolean(L, -1)) { /* nil or false: keep the match */
		lua_pop(L, 1);
		lua_pushlstring(L, s, (size_t)(e - s));
	} else if (!lua_isstring(L, -1)) {
		luaL_error(L, "invalid replacement value (a %s)",
		           luaL_typename(L, -1));
	}
	luaL_addvalue(buf);
}

static int str_gsub(lua_State *L)
{
	const struct sandbox_budget *b = budget_of(L);
	size_t ls, lp;
	const char *s = luaL_checklstring(L, 1, &ls);
	const char *p = luaL_checklstring(L, 2, &lp);
	int type = lua_type(L, 3);
	lua_Integer max = luaL_optinteger(L, 4, (lua_Integer)ls + 1), n = 0;
	const char *at = s, *end;
	struct pattern m;
	luaL_Buffer buf;

	luaL_argcheck(L,
	              type == LUA_TNUMBER || type == LUA_TSTRING ||
	                  type == LUA_TFUNCTION || type == LUA_TTABLE,
	              3, "string/function/table expected");
	if (type == LUA_TFUNCTION || type == LUA_TTABLE)
		check_stack(L, b);
	pattern_init(&m, s, ls, p, lp, true, tick, (void *)b);
	luaL_buffinit(L, &buf);
	while (n < max) {
		enum pattern_status st = pattern_match_at(&m, at, &end);

		check_status(L, &m);
		if (st == PATTERN_MATCH) {
			n++;
			add_value(L, &buf, &m, at, end);
			spend(L, b, (size_t)(end - at) + 1);
		}
		if (st == PATTERN_MATCH && end > at)
			at = end;
		else if (at < s + ls)
			luaL_addchar(&buf, *at++);
		else
			break;
		if (m.anchored)
			break;
	}
	luaL_addlstring(&buf, at, (size_t)(s + ls - at));
	luaL_pushresult(&buf);
	lua_pushinteger(L, n);
	return 2;
}

/* ---- rep, format ------------------------------------------------------ */

/* Calls the original function (upvalue 2) with this call's arguments. */
static int call_original(lua_State *L)
{
	int n = lua_gettop(L);

	lua_pushvalue(L, lua_upvalueindex(2));
	lua_insert(L, 1);
	lua_call(L, n, LUA_MULTRET);
	return lua_gettop(L);
}

/* A result of `size` bytes must fit in the room the memory cap leaves.
 * Larger than the cap itself: an error the script may catch (nothing was
 * built). Larger only than what is left: the state holds too much, and
 * the budget's memory error ends the call. */
static void check_size(lua_State *L, const char *what, double size)
{
	const struct sandbox_budget *b = budget_of(L);
	size_t room = b->room(b->ud), cap = b->cap;

	if (size > (double)cap)
		luaL_error(L,
		           "%s: the result (%.0f bytes) would pass the "
		           "memory cap (%.0f bytes)",
		           what, size, (double)cap);
	if (size > (double)room)
		b->raise(L, b->ud, true);
	spend(L, b, (size_t)size);
}

static int str_rep(lua_State *L)
{
	size_t len = 0, sep = 0;
	double n = lua_tonumber(L, 2);

	if (lua_type(L, 1) == LUA_TSTRING || lua_type(L, 1) == LUA_TNUMBER)
		lua_tolstring(L, 1, &len);
	if (lua_type(L, 3) == LUA_TSTRING || lua_type(L, 3) == LUA_TNUMBER)
		lua_tolstring(L, 3, &sep);
	if (n >= 1)
		check_size(L, "string.rep",
		           n * (double)len + (n - 1) * (double)sep);
	return call_original(L);
}

/* The longest text one conversion of string.format can give: `arg` is
 * its argument, width and precision at most 99 (LuaJIT allows 2 digits). */
static double conversion_bound(lua_State *L, char conv, int arg, int width,
                               int precision)
{
	size_t len;

	if ((conv == 's' || conv == 'q') && lua_type(L, arg) == LUA_TSTRING) {
		lua_tolstring(L, arg, &len);
		if (conv == 'q')
			return 4.0 * (double)len + 2;
		if (precision >= 0 && (size_t)precision < len)
			len = (size_t)precision;
		return (double)(len > (size_t)width ? len : (size_t)width);
	}
	/* numbers (%f of 1e308 has 309 digits), and %s of other values,
	 * whose __tostring result the memory cap bounds */
	return 330.0 + width + (precision > 0 ? precision : 0);
}

/* Reads one conversion spec after '%'; returns the bound, moves *f. */
static double spec_bound(lua_State *L, const char **f, const char *end, int arg)
{
	int width = 0, precision = -1;
	const char *c = *f;

	while (c < end && strchr("-+ #0", *c) != NULL && *c != '\0')
		c++;
	while (c < end && *c >= '0' && *c <= '9' && width < 1000)
		width = width * 10 + (*c++ - '0');
	if (c < end && *c == '.') {
		precision = 0;
		for (c++;
		     c < end && *c >= '0' && *c <= '9' && precision < 1000;)
			precision = precision * 10 + (*c++ - '0');
	}
	*f = c < end ? c + 1 : c;
	return conversion_bound(L, c < end ? *c : '\0', arg, width, precision);
}

static int str_format(lua_State *L)
{
	size_t len;
	const char *f = luaL_checklstring(L, 1, &len), *end = f + len;
	double bound = 0;
	int arg = 1;

	while (f < end) {
		if (*f++ != '%') {
			bound++;
		} else if (f < end && *f == '%') {
			bound++;
			f++;
		} else {
			bound += spec_bound(L, &f, end, ++arg);
		}
	}
	check_size(L, "string.format", bound);
	return call_original(L);
}

/* ---- table functions and tonumber -------------------------------------- */

/* What a charged function's C work grows with (upvalue 3). */
enum charge {
	CHARGE_SORT,   /* table.sort: n log n comparisons */
	CHARGE_CONCAT, /* table.concat: the elements of its range */
	CHARGE_INSERT, /* table.insert(t, pos, v): the elements it moves */
	CHARGE_STRING, /* tonumber: the length of the text */
};

static size_t log2_ceil(size_t n)
{
	size_t k = 1;

	while (n >>= 1)
		k++;
	return k;
}

static size_t charge_of(lua_State *L, enum charge kind)
{
	size_t n = lua_type(L, 1) == LUA_TTABLE || lua_type(L, 1) == LUA_TSTRING
	               ? lua_objlen(L, 1)
	               : 0;
	lua_Integer i, j;

	switch (kind) {
	case CHARGE_SORT:
		return n * log2_ceil(n);
	case CHARGE_CONCAT:
		i = lua_type(L, 3) == LUA_TNUMBER ? lua_tointeger(L, 3) : 1;
		j = lua_type(L, 4) == LUA_TNUMBER ? lua_tointeger(L, 4)
		                                  : (lua_Integer)n;
		/* past the border the original stops at the first nil */
		if (j > (lua_Integer)n + 1)
			j = (lua_Integer)n + 1;
		return j >= i ? (size_t)(j - i + 1) : 0;
	case CHARGE_INSERT:
		return lua_gettop(L) >= 3 ? n : 0;
	case CHARGE_STRING:
		return lua_type(L, 1) == LUA_TSTRING ? n : 0;
	}
	return 0;
}

/* Charges the work the original (upvalue 2) is about to do, then calls it. */
static int charged(lua_State *L)
{
	spend(L, budget_of(L),
	      charge_of(L, (enum charge)lua_tointeger(L, lua_upvalueindex(3))));
	return call_original(L);
}

/* table.maxn walks every key: here the walk is charged key by key. */
static int tab_maxn(lua_State *L)
{
	const struct sandbox_budget *b = budget_of(L);
	lua_Number max = 0;
	size_t n = 0;

	luaL_checktype(L, 1, LUA_TTABLE);
	lua_settop(L, 1);
	lua_pushnil(L);
	while (lua_next(L, 1)) {
		lua_pop(L, 1);
		if (lua_type(L, -1) == LUA_TNUMBER && lua_tonumber(L, -1) > max)
			max = lua_tonumber(L, -1);
		if (++n % 1024 == 0)
			spend(L, b, 1024);
	}
	lua_pushnumber(L, max);
	return 1;
}

static void wrap_charged(lua_State *L, int table, const char *name,
                         enum charge kind, const struct sandbox_budget *b)
{
	lua_pushlightuserdata(L, (void *)b);
	lua_getfield(L, table, name);
	lua_pushinteger(L, kind);
	lua_pushcclosure(L, charged, 3);
	lua_setfield(L, table, name);
}

void sandbox_tab_open(lua_State *L, int table, int globals,
                      const struct sandbox_budget *b)
{
	table = abs_index(L, table);
	globals = abs_index(L, globals);
	wrap_charged(L, table, "sort", CHARGE_SORT, b);
	wrap_charged(L, table, "concat", CHARGE_CONCAT, b);
	wrap_charged(L, table, "insert", CHARGE_INSERT, b);
	wrap_charged(L, globals, "tonumber", CHARGE_STRING, b);
	lua_pushlightuserdata(L, (void *)b);
	lua_pushcclosure(L, tab_maxn, 1);
	lua_setfield(L, table, "maxn");
}

/* ---- install ---------------------------------------------------------- */

void sandbox_str_open(lua_State *L, int table, const struct sandbox_budget *b)
{
	static const struct {
		const char *name;
		lua_CFunction fn;
	} fns[] = {
	    {"find", str_find}, {"match", str_match}, {"gmatch", str_gmatch},
	    {"gsub", str_gsub}, {"rep", str_rep},     {"format", str_format},
	};

	table = abs_index(L, table);
	for (size_t i = 0; i < sizeof(fns) / sizeof(fns[0]); i++) {
		lua_pushlightuserdata(L, (void *)b);
		lua_getfield(L, table,
		             fns[i].name); /* the original: upvalue 2 */
		lua_pushcclosure(L, fns[i].fn, 2);
		lua_setfield(L, table, fns[i].name);
	}
}
