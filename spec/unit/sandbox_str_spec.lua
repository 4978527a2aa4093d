-- The bounded string functions of the policy sandbox (src/policy/
-- sandbox_str.c on src/policy/pattern.c), loaded as a Lua module
-- (build/check/sandbox_str.so, spec/c/sandbox_str_module.c), against
-- LuaJIT's own: on a table of ordinary cases every result and every error
-- must be the same; on hostile input they must stop at the budget, where
-- LuaJIT's would run for hours or build gigabytes.

package.cpath = "build/check/?.so;" .. package.cpath
local ok_mod, B = pcall(require, "sandbox_str")

local function pack(...) return { n = select("#", ...), ... } end

-- Calls f(...) and returns a comparable outcome: the results, or the error
-- message without its "file:line: " prefix.
local function outcome(f, ...)
  local r = pack(pcall(f, ...))
  if not r[1] then
    return { error = (tostring(r[2]):gsub("^[^:]*:%d+: ", "")) }
  end
  table.remove(r, 1)
  r.n = r.n - 1
  return r
end

local function gmatch_all(gmatch)
  return function(s, p)
    local out = {}
    for a, b, c in gmatch(s, p) do
      out[#out + 1] = { a, b, c }
      if #out > 100 then break end
    end
    return out
  end
end

local SUBJECT = "  hello World, 42 times [x] (a(b)c) THE_END\0zz  "

-- { function name, args... }
local CASES = {
  -- find: plain, patterns, init, anchors
  { "find", "hello world", "o w" },
  { "find", "hello world", "o", 6 },
  { "find", "hello world", "o", -3 },
  { "find", "hello world", "o", -100 },
  { "find", "hello world", "", 100 },
  { "find", "hello world", "", 12 },
  { "find", "hello world", "l", 0 },
  { "find", "a.b", ".", 1, true },
  { "find", "a.b", "%.", 1 },
  { "find", "a+b", "+", 1, true },
  { "find", "abc", "b", nil, false },
  { "find", "a\0b", "\0b" },
  { "find", "a\0b", "%z" },
  { "find", "a\0b", "\0." },
  { "find", "xa\0.", "a\0." },
  { "find", "xa\0.", "a\0.", 1, true },
  { "match", "abc", "\0" },
  { "match", "abc", "b\0(" },
  { "find", SUBJECT, "%a+" },
  { "find", SUBJECT, "(%a+)%s*(%d+)" },
  { "find", SUBJECT, "^%s*(%a+)" },
  { "find", SUBJECT, "^hello" },
  { "find", SUBJECT, "END%z" },
  { "find", "hello", "l*" },
  { "find", "hello", "()ll()" },
  { "find", "hello", "x*$" },
  { "find", "hello$", "o$" },
  { "find", "a$b", "$b" },
  { "find", "12.5e3", "^[+-]?%d+%.?%d*[eE]?%d*$" },
  { "find", 12345, 3 },
  -- match: captures, position captures, %b, %f, back-references, sets
  { "match", SUBJECT, "%[(.-)%]" },
  { "match", SUBJECT, "%b()" },
  { "match", SUBJECT, "(%b())" },
  { "match", "f(a(b)c", "%b()" },
  { "match", "THE (quick) fox", "%f[%a]%a+" },
  { "match", "THE (quick) fox", "%f[%l]%a+" },
  { "match", "hello", "%f[%z]" },
  { "match", "hello", "()%f[%z]()" },
  { "match", "THE END", "%f[%w]%w+$" },
  { "match", "say 'hi' now", "(['\"])(.-)%1" },
  { "match", "abcabc", "(abc)%1" },
  { "match", "aaa", "(a*)(a-)(a?)" },
  { "match", "key = value ; x", "^(%w+)%s*=%s*([^;]-)%s*;" },
  { "match", "2001:db8::1", "^[%x:]+$" },
  { "match", "a]b", "[]]" },
  { "match", "a]b", "[^]]+" },
  { "match", "a-b", "[a-]+" },
  { "match", "a-b", "[%a-]+" },
  { "match", "xyz-09", "[^%d%-]+" },
  { "match", "x^y", "[x^]+" },
  { "match", "A1_b", "[%w_]+" },
  { "match", "\tab  c", "%s+(%S+)" },
  { "match", "UPPER lower", "%u+ (%l+)" },
  { "match", "p.u,n!c", "%p" },
  { "match", "a\1b", "%c" },
  { "match", "hello", "(h)(e)(l)(l)(o)" },
  { "match", "hello", "()" },
  { "match", "hello", "()", 3 },
  { "match", "hello", ".-(l+)(.*)" },
  { "match", "hello", "^(h?)(x?)e" },
  { "match", "", ".*" },
  { "match", "", "a?" },
  { "match", "user@Example.TEST", "^<?([^@<>]*)@([^@<>]+)>?$" },
  { "match", "a.b.c", "^(.-)%.(.*)$" },
  { "match", "a.b.c", "^(.*)%.(.-)$" },
  -- errors
  { "match", "x", "%" },
  { "match", "x", "[a" },
  { "match", "x", "[]" },
  { "match", "x", "(x" },
  { "match", "x", "x)" },
  { "match", "x", "%1" },
  { "match", "xx", "(x)%2" },
  { "match", "x", "%b" },
  { "match", "x", "%bx" },
  { "match", "x", "%f" },
  { "match", "x", "%fx" },
  { "match", "x", "(()" },
  { "find", "x", "(x", 1 },
  { "match", nil, "x" },
  { "match", "x", {} },
  { "match", "x", "x", "y" },
  -- gsub: string, table, function replacements, counts, anchors
  { "gsub", "hello world", "o", "0" },
  { "gsub", "hello world", "(o)", "[%1]" },
  { "gsub", "hello world", "%w+", "<%0>" },
  { "gsub", "hello world", "%w+", "%%" },
  { "gsub", "hello world", "%w+", "%x" },
  { "gsub", "hello", "", "-" },
  { "gsub", "abc", "x*", "-" },
  { "gsub", "abc", "^x*", "-" },
  { "gsub", "hello world", "^h", "H" },
  { "gsub", "hello world", "o", "0", 1 },
  { "gsub", "hello world", "o", "0", 0 },
  { "gsub", "hello world", "o", "0", -1 },
  { "gsub", "hello world", "(%w+) (%w+)", "%2 %1" },
  { "gsub", "hello world", "()o", "%1" },
  { "gsub", "hello", "l", { l = "L" } },
  { "gsub", "hello", "(l)(l)", { l = "L" } },
  { "gsub", "hello", "%w", { h = "H", e = false } },
  { "gsub", "hello", "%w", { h = 1 } },
  { "gsub", "hello", "%w", function(c) return c:upper() end },
  { "gsub", "hello", "(%w)(%w)", function(a, b) return b .. a end },
  { "gsub", "hello", "%w", function() end },
  { "gsub", "hello", "%w", function() return false end },
  { "gsub", "hello", "%w", function() return 7 end },
  { "gsub", "hello", "%w", function() return {} end },
  { "gsub", "hello", "%w", { h = {} } },
  { "gsub", "hello", "%w", 5 },
  { "gsub", "hello", "%w", true },
  { "gsub", "hello", "%w" },
  { "gsub", "hello", "(%w", "x" },
  { "gsub", "hello", "%w", "%2" },
  { "gsub", "hello", "(%w)", "%2" },
  { "gsub", "x", "x", "%" },
  { "gsub", "a,b,,c", ",", ";" },
  { "gsub", "  trim me  ", "^%s*(.-)%s*$", "%1" },
  { "gsub", "a.b", "%.", "%%." },
  { "gsub", "abc", "%f[%w]%w", "X" },
  { "gsub", "abc", "", "", 2 },
  -- rep, format on ordinary input
  { "rep", "ab", 3 },
  { "rep", "ab", 3, "," },
  { "rep", "ab", 0 },
  { "rep", "ab", -1 },
  { "rep", "", 5 },
  { "rep", 12, 2 },
  { "rep", "x", 1, "sep" },
  { "rep", nil, 2 },
  { "rep", "x", "y" },
  { "format", "%d items at %5.2f, %s!", 3, 2.5, "ok" },
  { "format", "%q", "a\"b\\c\nd\0e\r" },
  { "format", "%-10s|%10s|%.2s", "ab", "cd", "efgh" },
  { "format", "%x %X %o %c %e %g %i %u", 255, 255, 8, 65, 1.5, 0.1, 7, 9 },
  { "format", "%5.1s|", "abc" },
  { "format", "100%% sure" },
  { "format", "%s %s", 1, true },
  { "format", "%d", "x" },
  { "format", "%d" },
  { "format", "%y", 1 },
  { "format", "%100d", 1 },
  { "format", "%099d", 1 },
  { "format", "%.99f", 1 },
  { "format", "%99.99f", 1e308 },
  { "format", "%s", setmetatable({}, { __tostring = function() return "meta" end }) },
}

describe("the sandbox's bounded string functions", function()
  setup(function()
    assert(ok_mod, "build/check/sandbox_str.so is missing (make build/check/sandbox_str.so): " ..
      tostring(B))
  end)
  before_each(function() B.limits() end)

  it("give what LuaJIT's give, results and errors, on " .. #CASES .. " ordinary cases", function()
    for i, case in ipairs(CASES) do
      local name = case[1]
      local args = { unpack(case, 2, 6) }
      local n = 1
      for k = 2, 6 do if case[k] ~= nil then n = k - 1 end end
      local want = outcome(string[name], unpack(args, 1, n))
      local got = outcome(B[name], unpack(args, 1, n))
      assert.are.same(want, got, string.format("case %d: string.%s(%s)", i, name,
        table.concat((function()
          local t = {}
          for k = 1, n do t[k] = string.format("%q", tostring(args[k])) end
          return t
        end)(), ", ")))
    end
  end)

  it("gmatch iterates as LuaJIT's does (captures, empty matches, '^' as a character)", function()
    local cases = {
      { "hello world from Lua", "%a+" },
      { "k1=v1, k2=v2", "(%w+)=(%w+)" },
      { "abc", "x*" },
      { "abc", "" },
      { "abc", "()" },
      { "a^b^c", "^%a" },
      { "one two", "()(%a+)()" },
      { SUBJECT, "%b()" },
      { "THE (quick) fox", "%f[%a]%a+" },
      { "aaa", "a-" },
      { "", ".*" },
    }
    for _, c in ipairs(cases) do
      assert.are.same(gmatch_all(string.gmatch)(c[1], c[2]), gmatch_all(B.gmatch)(c[1], c[2]),
        "gmatch(" .. c[1] .. ", " .. c[2] .. ")")
    end
    assert.are.same(outcome(string.gmatch, nil, "x"), outcome(B.gmatch, nil, "x"))
    assert.has_error(function() for _ in B.gmatch("x", "(") do end end)
  end)

  it("classify all 256 bytes as LuaJIT does, for every class, its complement and in sets", function()
    local classes = "acdglpsuwxzbeyACDGLPSUWXZBEY"
    for c = 0, 255 do
      local ch = string.char(c)
      for i = 1, #classes do
        local cl = classes:sub(i, i)
        for _, p in ipairs({ "%" .. cl, "[%" .. cl .. "]", "[^%" .. cl .. "]", "[x%" .. cl .. "]" }) do
          assert.are.same(outcome(string.find, ch, p), outcome(B.find, ch, p),
            string.format("byte %d, pattern %s", c, p))
        end
      end
      for _, p in ipairs({ ".", "%" .. ch, "[" .. ch .. "]", "[a-z]", "[%]]", "[]-a]" }) do
        assert.are.same(outcome(string.find, ch, p), outcome(B.find, ch, p),
          string.format("byte %d, pattern %q", c, p))
      end
    end
  end)

  it("match random subjects and patterns as LuaJIT does", function()
    math.randomseed(10)
    local atoms = { "a", "b", ".", "%a", "%d", "[ab]", "[^a]", "%s", "(a)", "()", "%1", "%bab",
      "%f[a]", "x", "[a-c]" }
    local quants = { "", "", "*", "+", "-", "?" }
    local chars = { "a", "b", "c", "1", " ", "x" }
    for _ = 1, 3000 do
      local p = {}
      if math.random(4) == 1 then p[1] = "^" end
      for _ = 1, math.random(5) do
        local a = atoms[math.random(#atoms)]
        local single = #a == 1 or a:match("^%%[ads]$") or a:match("^%[")
        p[#p + 1] = a .. (single and quants[math.random(#quants)] or "")
      end
      if math.random(4) == 1 then p[#p + 1] = "$" end
      local s = {}
      for _ = 1, math.random(0, 12) do s[#s + 1] = chars[math.random(#chars)] end
      local pat, subj = table.concat(p), table.concat(s)
      for _, name in ipairs({ "find", "match", "gsub" }) do
        local repl = name == "gsub" and "<%0>" or nil
        assert.are.same(outcome(string[name], subj, pat, repl), outcome(B[name], subj, pat, repl),
          name .. "(" .. string.format("%q", subj) .. ", " .. string.format("%q", pat) .. ")")
      end
      assert.are.same(outcome(gmatch_all(string.gmatch), subj, pat),
        outcome(gmatch_all(B.gmatch), subj, pat), "gmatch(" .. subj .. ", " .. pat .. ")")
    end
  end)

  it("table.sort, concat, insert, maxn and tonumber give what LuaJIT's give, and charge their work", function()
    local function sorted(sort, t, f)
      local copy = { unpack(t) }
      sort(copy, f)
      return copy
    end
    local t = { 5, 3, 9, 1, 7 }
    assert.are.same(sorted(table.sort, t), sorted(B.sort, t))
    assert.are.same(sorted(table.sort, t, function(a, b) return a > b end),
      sorted(B.sort, t, function(a, b) return a > b end))
    assert.are.same(outcome(table.sort, { 1, "x" }), outcome(B.sort, { 1, "x" }))
    for _, args in ipairs({ { { "a", "b", "c" } }, { { "a", "b", "c" }, "," }, { { "a", "b", "c" }, ",", 2 },
      { { "a", "b", "c" }, ",", 2, 3 }, { { "a", "b" }, ",", 3 }, { { "a", {} } }, { { "a" }, ",", 1, 5 },
      { { 1, 2.5 }, "-" } }) do
      assert.are.same(outcome(table.concat, unpack(args, 1, 4)), outcome(B.concat, unpack(args, 1, 4)))
    end
    local a, b = { 1, 2 }, { 1, 2 }
    table.insert(a, 3); B.insert(b, 3)
    table.insert(a, 1, 0); B.insert(b, 1, 0)
    assert.are.same(a, b)
    assert.are.same(outcome(table.insert, {}, 1, 2, 3), outcome(B.insert, {}, 1, 2, 3))
    assert.are.equal(table.maxn({ 1, 2, [10] = 3, x = 4, [2.5] = 5 }), B.maxn({ 1, 2, [10] = 3, x = 4, [2.5] = 5 }))
    assert.are.equal(0, B.maxn({}))
    for _, v in ipairs({ "12", "0x1F", " 7 ", "1e3", "x", "" }) do
      assert.are.same(outcome(tonumber, v), outcome(B.tonumber, v))
    end
    assert.are.equal(255, B.tonumber("ff", 16))
    -- the work is charged before it is done
    local big = {}
    for i = 1, 100000 do big[i] = i % 7 end
    B.limits(100000)
    local ok, err = pcall(B.sort, big)
    assert.is_false(ok)
    assert.matches("budget exceeded", err)
    B.limits(100000)
    assert.is_false(pcall(B.concat, big, ",", 1, 100001))
    B.limits(100000)
    assert.is_true(pcall(B.concat, big, ",", 1, 99999))
    B.limits(50000)
    assert.is_false(pcall(B.insert, big, 1, 0))
    local hash = {}
    for i = 1, 5000 do hash["k" .. i] = i end
    B.limits(2000)
    assert.is_false(pcall(B.maxn, hash))
    B.limits(10)
    assert.is_false(pcall(B.tonumber, ("0"):rep(100) .. "1"))
  end)

  it("match random byte soup as LuaJIT does: specials, NULs, init positions", function()
    local pieces = { "a", "b", "c", "(", ")", "[", "]", "^", "$", "%", ".", "*", "+", "-", "?", "1",
      "2", "d", "f", "z", "%a", "%d", "%b", "%f", "%1", "()", "[^", " ", "\0", "x" }
    local chars = { "a", "b", "c", "(", ")", "1", " ", "x", "-", "^", "$", "%", "\0", "]" }
    math.randomseed(20)
    for _ = 1, 5000 do
      local p, s = {}, {}
      for _ = 1, math.random(0, 8) do p[#p + 1] = pieces[math.random(#pieces)] end
      for _ = 1, math.random(0, 10) do s[#s + 1] = chars[math.random(#chars)] end
      p, s = table.concat(p), table.concat(s)
      local init = math.random(-3, 12)
      local what = string.format("(%q, %q, %d)", s, p, init)
      for _, name in ipairs({ "find", "match" }) do
        assert.are.same(outcome(string[name], s, p, init), outcome(B[name], s, p, init), name .. what)
      end
      assert.are.same(outcome(string.gsub, s, p, "<%0>"), outcome(B.gsub, s, p, "<%0>"), "gsub" .. what)
      assert.are.same(outcome(gmatch_all(string.gmatch), s, p), outcome(gmatch_all(B.gmatch), s, p),
        "gmatch" .. what)
    end
  end)

  it("stop a catastrophic pattern at the step budget, where LuaJIT's matcher would run for hours", function()
    B.limits(1e6)
    local s, p = ("a"):rep(3000), ("a*"):rep(15) .. "b"
    local t0 = os.clock()
    local ok, err = pcall(B.find, s, p)
    assert.is_false(ok)
    assert.matches("budget exceeded %(test%)", err)
    assert.is_true(os.clock() - t0 < 2)
    for _, f in ipairs({ "match", "gsub" }) do
      B.limits(1e6)
      ok, err = pcall(B[f], s, p, f == "gsub" and "" or nil)
      assert.is_false(ok)
      assert.matches("budget exceeded", err)
    end
    B.limits(1e6)
    ok, err = pcall(function() for _ in B.gmatch(s, p) do end end)
    assert.is_false(ok)
    assert.matches("budget exceeded", err)
  end)

  it("refuse to recurse through gsub's replacement function or table past the C stack budget", function()
    local function f(s) return (B.gsub(s, ".", f)) end
    local ok, err = pcall(f, "abc")
    assert.is_false(ok)
    assert.matches("C stack overflow", err)
    local t = {}
    setmetatable(t, { __index = function(_, k) return (B.gsub(k, ".", t)) end })
    ok, err = pcall(B.gsub, "abc", ".", t)
    assert.is_false(ok)
    assert.matches("C stack overflow", err)
    -- a few levels are fine
    local depth = 0
    local function g(s)
      depth = depth + 1
      if depth > 20 then return s end
      return (B.gsub(s, "^.", g))
    end
    assert.are.equal("abc", g("abc"))
  end)

  it("refuse a deep pattern as too complex instead of overflowing the C stack", function()
    local ok, err = pcall(B.match, ("a"):rep(300), ("(a"):rep(300) .. (")"):rep(300))
    assert.is_false(ok)
    assert.matches("too many captures", err)
    ok, err = pcall(B.match, ("a"):rep(300), ("a?"):rep(300))
    assert.is_false(ok)
    assert.matches("pattern too complex", err)
    -- a long pattern of plain items is no deeper than a short one
    assert.are.equal(("ab"):rep(500), B.match(("ab"):rep(600), ("ab"):rep(500)))
    assert.are.equal(("ab"):rep(500), B.match(("ab"):rep(600), ("[a][b]"):rep(500)))
  end)

  it("refuse a result larger than the memory cap, or than what is left of it, before building it", function()
    -- the module's cap is 1 MiB; limits(nil, room) says how much is left
    B.limits(nil, 1000)
    assert.are.equal(("x"):rep(1000), B.rep("x", 1000))
    local ok, err = pcall(B.rep, "x", 1001)
    assert.is_false(ok)
    assert.matches("budget exceeded %(test memory%)", err)
    ok, err = pcall(B.rep, "x", 2 ^ 31)
    assert.is_false(ok)
    assert.matches("string.rep: the result %(2147483648 bytes%) would pass the memory cap %(1048576 bytes%)", err)
    ok, err = pcall(B.rep, "ab", 400, ",,")
    assert.is_false(ok)
    assert.matches("test memory", err)
    ok, err = pcall(B.format, "%s%s", ("x"):rep(600), ("y"):rep(600))
    assert.is_false(ok)
    assert.matches("test memory", err)
    ok, err = pcall(B.format, "%q", ("\n"):rep(300))
    assert.is_false(ok)
    assert.matches("test memory", err)
    ok, err = pcall(B.format, ("%s"):rep(8), unpack((function()
      local t = {}
      for i = 1, 8 do t[i] = ("x"):rep(2 ^ 17 + 1) end
      return t
    end)()))
    assert.is_false(ok)
    assert.matches("string.format: the result %(1048584 bytes%) would pass the memory cap", err)
    assert.are.equal(600, #B.format("%s", ("x"):rep(600)))
    -- plain and pattern searches over long subjects charge their work too
    B.limits(1000, nil)
    ok, err = pcall(B.find, ("a"):rep(5000), "b", 1, true)
    assert.is_false(ok)
    assert.matches("budget exceeded", err)
  end)
end)
