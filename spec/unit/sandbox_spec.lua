-- Every module of lua/gateway, every stock script (policies/) and every
-- example policy (examples/policies/) needs nothing but what the policy
-- sandbox offers (README.md, "The sandbox"): Lua's base, string, table and
-- math libraries without dofile, loadfile, load, loadstring, getfenv,
-- setfenv, module and collectgarbage, and a `require` that finds modules
-- only in lua/ and in the script's own directory.
--
-- Two proofs: each file is loaded and its functions are run in a mimic of
-- that sandbox whose globals table raises on any other name (read or
-- written); and LuaJIT's bytecode listing (jit.bc) of each file shows no
-- global write and no global read outside the sandbox's names, on paths the
-- run did not take too.

local lfs = require "lfs"

-- The names the sandbox's base library keeps (LuaJIT 2.1 lib_base minus the
-- removed functions, minus `coroutine`, which luaopen_base also registers
-- but which the policies must not count on).
local BASE = {
  "assert", "error", "gcinfo", "getmetatable", "ipairs", "newproxy", "next", "pairs", "pcall", "print",
  "rawequal", "rawget", "rawset", "select", "setmetatable", "tonumber", "tostring", "type", "unpack",
  "xpcall", "_VERSION",
}
local LIBS = { "string", "table", "math" }
local REMOVED = { "dofile", "loadfile", "load", "loadstring", "getfenv", "setfenv", "module",
  "collectgarbage", "io", "os", "debug", "package", "jit", "bit", "coroutine", "ffi" }

local function file_exists(path)
  local f = io.open(path, "r")
  if f then
    f:close()
    return true
  end
  return false
end

local function dirname(path)
  return path:match("^(.*)/[^/]*$") or "."
end

-- lua_files(dir): the *.lua files of dir that are not specs, sorted.
local function lua_files(dir)
  local out = {}
  for name in lfs.dir(dir) do
    if name:match("%.lua$") and not name:match("_spec%.lua$") then
      out[#out + 1] = dir .. "/" .. name
    end
  end
  table.sort(out)
  return out
end

-- sandbox(script_dir): a globals table like the engine's, strict about
-- unknown names, and a loader for scripts in it.
local function sandbox(script_dir)
  local env = {}
  for _, name in ipairs(BASE) do
    env[name] = _G[name]
  end
  for _, lib in ipairs(LIBS) do
    local copy = {}
    for k, v in pairs(_G[lib]) do
      copy[k] = v
    end
    env[lib] = copy
  end
  env._G = env

  local loaded = {}
  local path = { "lua/?.lua", "lua/?/init.lua", script_dir .. "/?.lua" }
  local function load_in_env(file, ...)
    local chunk
    if setfenv then -- LuaJIT / Lua 5.1, as the engine
      chunk = assert(loadfile(file))
      setfenv(chunk, env)
    else -- busted under a later Lua
      chunk = assert(loadfile(file, "t", env))
    end
    return chunk(...)
  end
  function env.require(name)
    if loaded[name] ~= nil then
      return loaded[name]
    end
    local rel = name:gsub("%.", "/")
    for _, pattern in ipairs(path) do
      local file = pattern:gsub("%?", rel)
      if file_exists(file) then
        local result = load_in_env(file, name)
        if result == nil then
          result = true
        end
        loaded[name] = result
        return result
      end
    end
    error("module '" .. name .. "' not found in the sandbox's path", 2)
  end

  setmetatable(env, {
    __index = function(_, k)
      error("sandbox: no global '" .. tostring(k) .. "'", 2)
    end,
    __newindex = function(_, k)
      error("sandbox: a policy module must not set the global '" .. tostring(k) .. "'", 2)
    end,
  })
  return env, load_in_env
end

local MODULES = {}
for _, file in ipairs(lua_files("lua/gateway")) do
  local base = file:match("([^/]+)%.lua$")
  MODULES[#MODULES + 1] = { file = file, name = base == "init" and "gateway" or "gateway." .. base }
end
local SCRIPTS = {}
for _, dir in ipairs({ "policies", "examples/policies" }) do
  for _, file in ipairs(lua_files(dir)) do
    SCRIPTS[#SCRIPTS + 1] = file
  end
end

describe("the sandbox mimic", function()
  it("finds the modules and scripts to check", function()
    local names = {}
    for _, m in ipairs(MODULES) do
      names[#names + 1] = m.name
    end
    assert.is_truthy(#MODULES >= 2)
    assert.are.same({ "gateway", "gateway.testing" }, { names[1], names[2] })
    assert.is_truthy(#SCRIPTS >= 5)
  end)

  it("refuses every removed name and global writes", function()
    local env, load_in_env = sandbox("policies")
    for _, name in ipairs(REMOVED) do
      assert.has_error(function() return env[name] end, "sandbox: no global '" .. name .. "'")
    end
    assert.has_error(function() env.x = 1 end)
    local tmp = os.tmpname()
    local f = assert(io.open(tmp, "w"))
    f:write("return os.time()")
    f:close()
    local ok, err = pcall(load_in_env, tmp)
    os.remove(tmp)
    assert.is_false(ok)
    assert.matches("no global 'os'", err)
    assert.has_error(function() env.require("lfs") end)
    assert.has_error(function() env.require("socket") end)
  end)
end)

describe("in the sandbox", function()
  for _, m in ipairs(MODULES) do
    it("module " .. m.name .. " loads", function()
      local env = sandbox("policies")
      assert.is_table(env.require(m.name))
    end)
  end

  it("every gateway helper runs", function()
    local env = sandbox("policies")
    local g = env.require("gateway")
    assert.is_true(g.is_level("may"))
    assert.are.equal(4, g.level_rank("verify"))
    assert.is_true(g.at_least("verify", "encrypt"))
    assert.are.equal("accept", g.accept())
    assert.are.equal(550, g.reject(550, "5.7.1 no").code)
    assert.are.equal(450, g.tempfail(450, "4.7.1 later").code)
    assert.is_true(g.is_verdict(g.reject(550, "x")))
    assert.is_false(g.is_verdict({ action = "x" }))
    assert.are.equal("b.example", g.domain_of("<a@B.example>"))
    assert.is_true(g.domain_matches("a.b.example", ".B.example"))
    assert.is_true(g.cidr_contains("172.16.0.0/12", "172.20.1.1"))
    assert.is_true(g.cidr_contains("2001:DB8::/32", "2001:db8::1.2.3.4"))
    assert.is_false(g.cidr_contains("::/0", "1::2::3"))
    assert.is_true(g.in_networks({ "10.0.0.0/8", "fd00::/8" }, "fd00::1"))
    assert.are.equal(6, g.ip_family("::1"))
    assert.are.equal("verify", g.domain_level({ section = { tls = "verify" } }, "may"))
    assert.are.equal(530, g.rcpt_tls_verdict({ recipient = "a@b", section = { tls_in = "encrypt" } }).code)
    assert.are.equal("verify", g.domain_tls_in({ section = { tls_in = "VERIFY" } }))
    assert.are.equal("may", g.level("MAY"))
    local plain_tls = { recipient = "a@b", tls = { active = true, peer = "none" } }
    assert.are.equal(550, g.rcpt_tls_verdict(plain_tls, "verify").code)
    -- the error paths need nothing else either
    for _, bad in ipairs({
      function() g.level_rank("x") end,
      function() g.at_least("x", "may") end,
      function() g.reject(200, "x") end,
      function() g.reject(550, "a\nb") end,
      function() g.tempfail(550, "x") end,
      function() g.tempfail(450, 1) end,
      function() g.tempfail(450, "") end,
      function() g.domain_matches("a", nil) end,
      function() g.cidr_contains("10.0.0.0/33", "10.0.0.1") end,
      function() g.cidr_contains({}, "10.0.0.1") end,
      function() g.in_networks("x", "10.0.0.1") end,
      function() g.domain_level({}, "x") end,
      function() g.rcpt_tls_verdict({}, "x") end,
    }) do
      local ok, err = pcall(bad)
      assert.is_false(ok)
      assert.not_matches("sandbox:", err)
    end
  end)

  it("every gateway.testing function runs", function()
    local env = sandbox("policies")
    local t = env.require("gateway.testing")
    for _, stage in ipairs(t.STAGES) do
      assert.is_true(t.check_shape(t.ctx{ stage = stage }))
    end
    local ctx = t.ctx{ recipient = "u@P.example", section = { tls = "verify" }, tls = { active = true, sni = "mx" } }
    assert.are.equal("domain:p.example", ctx.section.name)
    local ok, msg = t.check_shape(t.ctx({ tls = { active = true, cipher = t.NIL }, x = 1 }, { check = false }))
    assert.is_false(ok)
    assert.are.equal('tls.cipher: missing (required at stage "rcpt")', msg)
    ok, msg = pcall(t.ctx, { stage = "connect", helo = 1 })
    assert.is_false(ok)
    assert.matches('helo: not a field at stage "connect"', msg)
    local host = t.host{ now = 5 }
    host.log("x")
    assert.are.same({ "x" }, host.logs)
    assert.are.equal(5, host.now())
    assert.are.equal("may", t.run({}, t.ctx{ stage = "client_tls" }, host))
    assert.is_false(pcall(t.run, { mail = function() return "no" end }, t.ctx{ stage = "mail" }))
  end)

  for _, file in ipairs(SCRIPTS) do
    it("script " .. file .. " loads and every hook runs", function()
      local env, load_in_env = sandbox(dirname(file))
      local policy = load_in_env(file)
      assert.is_table(policy)
      local t = env.require("gateway.testing")
      local host = t.host()
      local count = 0
      for _, stage in ipairs(t.STAGES) do
        for _, ip in ipairs({ "192.0.2.1", "10.1.2.3", "fd00::1", "2001:db8::1" }) do
          for _, rcpt in ipairs({ "u@example.test", "u@partner.example", "u@a.partner.example",
            "u@a.internal.example" }) do
            for _, level in ipairs({ false, "may", "encrypt", "verify" }) do
              for _, peer in ipairs({ false, "none", "untrusted", "trusted" }) do
                local over = { stage = stage, recipient = rcpt }
                if stage ~= "client_tls" then
                  over.client = { ip = ip }
                  over.tls = peer and { active = true, peer = peer } or nil
                end
                if stage == "rcpt" or stage == "client_tls" then
                  over.section = level and { tls = level } or nil
                else
                  over.recipient = nil
                end
                t.run(policy, t.ctx(over), host)
                count = count + 1
              end
            end
          end
        end
      end
      assert.is_truthy(count > 0)
    end)
  end
end)

describe("the bytecode of", function()
  local ok_bc, bc = pcall(require, "jit.bc")
  local allowed = { require = true, _G = true }
  for _, name in ipairs(BASE) do
    allowed[name] = true
  end
  for _, lib in ipairs(LIBS) do
    allowed[lib] = true
  end

  local files = {}
  for _, m in ipairs(MODULES) do
    files[#files + 1] = m.file
  end
  for _, file in ipairs(SCRIPTS) do
    files[#files + 1] = file
  end

  for _, file in ipairs(files) do
    it(file .. " uses no global outside the sandbox and sets none", function()
      if not ok_bc then
        pending("jit.bc is not available (run busted with --lua=luajit)")
        return
      end
      local lines = {}
      local out = { write = function(_, s) lines[#lines + 1] = s end, flush = function() end }
      bc.dump(assert(loadfile(file)), out, true)
      local listing = table.concat(lines)
      local reads = 0
      for op, name in listing:gmatch("(G[GS]ET)%s[^\n]-;%s*\"([^\"]*)\"") do
        assert.are_not.equal("GSET", op, file .. " sets the global " .. name)
        assert.is_true(allowed[name] == true, file .. " reads the global " .. name)
        reads = reads + 1
      end
      assert.is_truthy(reads > 0) -- at least `require` or a library: the listing was parsed
    end)
  end
end)
