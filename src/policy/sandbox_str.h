/*
 * sandbox_str: the string functions of the policy sandbox whose work in C
 * would otherwise be unbounded. string.find, match, gmatch and gsub run on
 * pattern.c (a step budget) instead of LuaJIT's matcher, which no hook can
 * interrupt; string.rep and string.format check the size of their result
 * against the room the memory cap leaves before building it. The C
 * functions whose work grows with a table or a text and allocates nothing
 * (table.sort, concat, insert, maxn, tonumber) charge that work first, so
 * that a loop of them meets the time budget between two runs of the count
 * hook. Owns no state: the budget belongs to the caller (policy.c, or a
 * test).
 */
#ifndef SMTPGW_SANDBOX_STR_H
#define SMTPGW_SANDBOX_STR_H

#include <lua.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum { SANDBOX_MAX_CSTACK = 1 << 20 };

struct sandbox_budget {
	/* `work` more units of C work (pattern steps, bytes built) are about
	 * to be done; false when the call must stop instead. */
	bool (*spend)(void *ud, size_t work);
	/* Raises the error a false spend() means, or (memory) the error of
	 * a result that would not fit in what the state may still take,
	 * though it would in an empty one. Never returns. */
	int (*raise)(lua_State *L, void *ud, bool memory);
	/* Bytes a new string may still take (SIZE_MAX: no cap). */
	size_t (*room)(void *ud);
	void *ud;
	size_t cap; /* the memory cap itself, bytes (SIZE_MAX: none) */
	/* The address of a local variable of the function that entered Lua
	 * (0: not checked): functions that call back into Lua (gsub with a
	 * function or a table) refuse to go deeper than SANDBOX_MAX_CSTACK
	 * below it, where LuaJIT's own limits would let the C stack
	 * overflow. */
	uintptr_t stack_base;
};

/* Replaces find, match, gmatch, gsub, rep and format in the table at stack
 * index `table` (the sandbox's `string`, which string methods use too);
 * rep and format call the table's originals after their checks. `b` must
 * outlive L. Allocates: call it protected. */
void sandbox_str_open(lua_State *L, int table, const struct sandbox_budget *b);

/* Wraps sort, concat, insert and maxn of the table at `table` and tonumber
 * of the table at `globals` (the sandbox's `table` and globals) so that
 * they charge their work to `b` first. Allocates: call it protected. */
void sandbox_tab_open(lua_State *L, int table, int globals,
                      const struct sandbox_budget *b);

#endif
