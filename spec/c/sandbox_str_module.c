/*
 * sandbox_str_module: src/policy/sandbox_str.c as a Lua module, for
 * spec/unit/sandbox_str_spec.lua, which compares its functions with
 * LuaJIT's own. require "sandbox_str" returns a table of the bounded
 * find, match, gmatch, gsub, rep and format, of the charged sort, concat,
 * insert, maxn and tonumber, and `limits(steps, room)`
 * which sets the budget the next calls get: at most `steps` units of work
 * in all (until the next call to limits) and `room` bytes left of a cap
 * of 1 MiB.
 * Test code only: never linked into the gateway.
 */
#include "policy/sandbox_str.h"

#include <lauxlib.h>
#include <stdint.h>

int luaopen_sandbox_str(lua_State *L);

static size_t steps_left = SIZE_MAX, room_left = SIZE_MAX;

static bool test_spend(void *ud, size_t work)
{
	(void)ud;
	if (work > steps_left) {
		steps_left = 0;
		return false;
	}
	steps_left -= work;
	return true;
}

static int test_raise(lua_State *L, void *ud, bool memory)
{
	(void)ud;
	return luaL_error(L, "budget exceeded (test%s)",
	                  memory ? " memory" : "");
}

static size_t test_room(void *ud)
{
	(void)ud;
	return room_left;
}

static struct sandbox_budget budget = {test_spend, test_raise, test_room,
                                       NULL,       1 << 20,    0};

static int limits(lua_State *L)
{
	lua_Number steps = luaL_optnumber(L, 1, -1);
	lua_Number room = luaL_optnumber(L, 2, -1);

	steps_left = steps < 0 ? SIZE_MAX : (size_t)steps;
	room_left = room < 0 ? 1 << 20 : (size_t)room;
	return 0;
}

int luaopen_sandbox_str(lua_State *L)
{
	static const char *const names[] = {"find", "match", "gmatch",
	                                    "gsub", "rep",   "format"};
	static const char *const tab_names[] = {"sort", "concat", "insert",
	                                        "maxn"};
	char base;

	/* busted's calls come from about as deep as this require */
	budget.stack_base = (uintptr_t)&base;

	lua_createtable(L, 0, 8);
	lua_getglobal(L, "string");
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		lua_getfield(L, -1, names[i]);
		lua_setfield(L, -3, names[i]);
	}
	lua_pop(L, 1);
	sandbox_str_open(L, -1, &budget);
	/* the table functions and tonumber, in the same table */
	lua_getglobal(L, "table");
	for (size_t i = 0; i < sizeof(tab_names) / sizeof(tab_names[0]); i++) {
		lua_getfield(L, -1, tab_names[i]);
		lua_setfield(L, -3, tab_names[i]);
	}
	lua_pop(L, 1);
	lua_getglobal(L, "tonumber");
	lua_setfield(L, -2, "tonumber");
	sandbox_tab_open(L, -1, -1, &budget);
	lua_pushcfunction(L, limits);
	lua_setfield(L, -2, "limits");
	return 1;
}
