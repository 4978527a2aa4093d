-- Hostile policies cannot stop the gateway (README "The sandbox", issue 10):
-- a verdict whose __index raises or loops, a catastrophic pattern, a 2 GiB
-- string.rep, doubling concatenations, a huge string.format, a module-level
-- table that grows from call to call or within one call. Each gets its 451
-- (421 at connect) within max_time plus a second, with the reason logged;
-- the same session and a new client are served right after; the memory of
-- the gateway's processes stays under max_memory + HEADROOM; and the gateway
-- exits cleanly (no sanitizer report) at SIGTERM.

local gateway = require "harness"
local client = require "smtp_client"
local h = require "helpers"
local ps = require "policy_support"
local R = h.R

local HOST = gateway.HOSTNAME
local MAX_TIME = 0.2 -- s
local MAX_MEMORY = 32 -- MiB
-- What a process may hold besides one policy state at max_memory: its own
-- code and data under ASan (the master, with the stats page, the ticket
-- ring and the log buffer, starts at about 37 MiB). The master runs every
-- hook over the fixtures at start (policy -t), so its peak is this plus
-- one full state.
local HEADROOM = 48 -- MiB
local POLICY_FAILURE = "451 4.3.0 Error: policy failure"
local POLICY_FAILURE_421 = "421 4.3.0 " .. HOST .. " Error: policy failure"

local SCRIPT = ps.lines {
  "local hoard = {} -- module level: lives as long as the Lua state",
  "local big_pattern = ('a*'):rep(15) .. 'b'",
  "local hostile = {}",
  "hostile['raise-index'] = function()",
  "  return setmetatable({}, { __index = function() error('raised by __index') end })",
  "end",
  "hostile['loop-index'] = function()",
  "  return setmetatable({}, { __index = function() while true do end end })",
  "end",
  "hostile['pattern'] = function()",
  "  return string.find(('a'):rep(3000), big_pattern) and 'accept' -- @pattern",
  "end",
  "hostile['pattern-pcall'] = function()",
  "  while true do pcall(string.find, ('a'):rep(3000), big_pattern) end",
  "end",
  "hostile['gmatch'] = function()",
  "  for _ in ('a'):rep(3000):gmatch(big_pattern) do end",
  "  return 'accept'",
  "end",
  "hostile['gsub'] = function()",
  "  return (('a'):rep(3000):gsub(big_pattern, 'x')) and 'accept'",
  "end",
  "hostile['rep'] = function()",
  "  local s = ('x'):rep(2 ^ 31) -- @rep",
  "  return #s > 0 and 'accept'",
  "end",
  "hostile['rep-1g'] = function()",
  "  local s = ('x'):rep(2 ^ 30) -- @rep1g",
  "  return #s > 0 and 'accept'",
  "end",
  "hostile['concat'] = function()",
  "  local s = 'x'",
  "  for _ = 1, 40 do s = s .. s end",
  "  return 'accept'",
  "end",
  "hostile['concat-pcall'] = function() -- swallows every error, then accepts",
  "  local s = 'x'",
  "  for _ = 1, 40 do",
  "    local ok, r = pcall(function() return s .. s end)",
  "    if ok then s = r end",
  "  end",
  "  return 'accept'",
  "end",
  "hostile['table-concat'] = function()",
  "  local t = {}",
  "  for i = 1, 10 do t[i] = ('y'):rep(2 ^ 20) end",
  "  for _ = 1, 10 do t = { table.concat(t), table.concat(t) } end",
  "  return 'accept'",
  "end",
  "hostile['format'] = function()",
  "  local s, args = ('z'):rep(2 ^ 20), {}",
  "  for i = 1, 200 do args[i] = s end",
  "  local r = string.format(('%s'):rep(200), unpack(args)) -- @format",
  "  return r",
  "end",
  "local function deeper(s) return (s:gsub('.', deeper)) end",
  "hostile['gsub-recursion'] = function() -- gsub calls Lua calls gsub...",
  "  return deeper('abc')",
  "end",
  "hostile['sort'] = function() -- each sort is one instruction, in C",
  "  local t = {}",
  "  for i = 1, 200000 do t[i] = (i * 7919) % 200000 end",
  "  while true do table.sort(t) end",
  "end",
  "hostile['tonumber'] = function()",
  "  local s = ('0'):rep(4 * 2 ^ 20) .. '1'",
  "  while true do tonumber(s) end",
  "end",
  "hostile['grow'] = function() -- 4 MiB more at every call, kept",
  "  hoard[#hoard + 1] = ('g'):rep(4 * 2 ^ 20 - 8) .. #hoard",
  "  return 'accept'",
  "end",
  "hostile['grow-fast'] = function()",
  "  while true do hoard[#hoard + 1] = ('h'):rep(2 ^ 20) .. #hoard end",
  "end",
  "hostile['count'] = function()",
  "  return { action = 'reject', code = 550, text = '5.7.1 hoard holds ' .. #hoard }",
  "end",
  "local policy = {}",
  "function policy.rcpt(ctx)",
  "  local f = hostile[ctx.recipient:match('^(.-)@')]",
  "  if f then return f() end",
  "  return 'accept'",
  "end",
  "return policy",
}

-- /proc/PID/status values in kB.
local function status_kb(pid, key)
  local f = io.open("/proc/" .. pid .. "/status")
  if not f then return nil end
  local text = f:read("*a")
  f:close()
  return tonumber(text:match(key .. ":%s*(%d+) kB"))
end

-- The gateway's process and every descendant (the master's workers, once
-- the process model is in).
local function process_tree(root)
  local parent = {}
  local p = io.popen("ps -e -o pid= -o ppid=")
  for line in p:lines() do
    local pid, ppid = line:match("(%d+)%s+(%d+)")
    if pid then parent[tonumber(pid)] = tonumber(ppid) end
  end
  p:close()
  local out = { root }
  local function under(pid)
    local seen = 0
    while pid and pid > 1 and seen < 64 do
      if pid == root then return true end
      pid, seen = parent[pid], seen + 1
    end
    return false
  end
  for pid in pairs(parent) do
    if pid ~= root and under(pid) then out[#out + 1] = pid end
  end
  return out
end

-- Every process of the gateway (master, workers, queue manager): peak
-- (VmHWM) and current (VmRSS) resident memory under max_memory + HEADROOM.
-- Returns the largest peak, and the worker's (MiB).
local function check_memory(gw)
  local limit = (MAX_MEMORY + HEADROOM) * 1024
  local top = 0
  local worker = gw:children().worker1
  local pids = process_tree(gw.pid)
  assert(worker and worker.pid, "no worker1 in the log")
  local found = false
  for _, pid in ipairs(pids) do found = found or pid == worker.pid end
  assert(found, "worker1 (pid " .. worker.pid .. ") is not a process of the gateway")
  for _, pid in ipairs(pids) do
    local hwm, rss = status_kb(pid, "VmHWM"), status_kb(pid, "VmRSS")
    if hwm then
      assert(hwm < limit, string.format("pid %d: VmHWM %d kB >= %d kB", pid, hwm, limit))
      assert(rss < limit, string.format("pid %d: VmRSS %d kB >= %d kB", pid, rss, limit))
      top = math.max(top, hwm)
    end
  end
  assert(top > 0, "no /proc status for the gateway (pid " .. tostring(gw.pid) .. ")")
  return top / 1024, (status_kb(worker.pid, "VmHWM") or 0) / 1024
end

-- The event=policy_rebuild lines (not the policy_error lines naming it).
local REBUILD = "level=%a+ event=policy_rebuild "
local function rebuilds_of(gw)
  return gw:log_lines(REBUILD)
end

local function policy_errors(gw)
  return gw:log_lines("event=policy_error")
end

-- A normal client right after: a whole transaction, queued.
local function serves(gw, subject)
  local c = h.session(gw)
  h.deliver(c, "sender@example.org", { "user@example.test" }, h.message(subject))
  c:cmd("QUIT", R.bye)
end

-- RCPT TO:<what@example.test> is 451 within max_time + 1 s, with a
-- policy_error whose reason matches `reason`; the session goes on.
local function refused(gw, what, reason)
  local before = #policy_errors(gw)
  local c = h.session(gw)
  c:cmd("MAIL FROM:<sender@example.org>", R.mail_ok)
  local t0 = gateway.now()
  c:cmd("RCPT TO:<" .. what .. "@example.test>", POLICY_FAILURE, 10)
  local elapsed = gateway.now() - t0
  assert(elapsed < MAX_TIME + 1, what .. ": the 451 came after " .. elapsed .. " s")
  local line = gw:wait_log_count("event=policy_error", before + 1)[before + 1]
  local got = ps.log_value(line, "reason")
  assert(got and got:find(reason), what .. ": reason " .. tostring(got) ..
    " does not match " .. reason)
  print(string.format("# hostile policy %-13s 451 after %.3f s", what, elapsed))
  c:cmd("RCPT TO:<user@example.test>", R.rcpt_ok)
  local code, text = h.data(c, h.message("after " .. what))
  assert(code == 250 and text:match(R.queued), tostring(text))
  c:cmd("QUIT", R.bye)
  serves(gw, "new client after " .. what)
  return elapsed, got
end

describe("a hostile policy", function()
  local gw, script

  setup(function()
    -- one worker, so that every session meets the same Lua state
    gw, script = ps.start_with_script(SCRIPT, { ini_extra = { workers = 1 }, policy = {
      max_time = math.floor(MAX_TIME * 1000) .. "ms",
      max_instructions = 1000000000,
      max_memory = MAX_MEMORY .. "M",
    } })
    gw:wait_children(2)
  end)
  teardown(function() if gw then gw:stop() end end)

  local function at(marker)
    return ps.esc(script .. ":" .. ps.line_of(SCRIPT, marker) .. ": ")
  end

  it("starts well under the memory limit", function()
    print(string.format("# hostile policies: resident memory at start: %.1f MiB (worker %.1f MiB)",
      check_memory(gw)))
  end)

  it("whose verdict's __index raises gets 451 (the metamethod never runs)", function()
    refused(gw, "raise-index", "returned a bad verdict")
    assert.are.equal(0, #gw:log_lines("raised by __index"))
  end)

  it("whose verdict's __index loops gets 451 (the loop never runs: no budget in the reason)", function()
    refused(gw, "loop-index", "returned a bad verdict %(action \"\", code 0%)$")
  end)

  it("with a catastrophic pattern gets 451 at max_time, FILE:LINE in the log", function()
    refused(gw, "pattern", "^" .. at("@pattern") .. "rcpt budget exceeded %(max_time%)$")
  end)

  it("that catches the pattern's budget error with pcall and tries again gets 451", function()
    refused(gw, "pattern-pcall", "rcpt budget exceeded %(max_time%)")
  end)

  it("with a catastrophic pattern in gmatch or gsub gets 451", function()
    refused(gw, "gmatch", "rcpt budget exceeded %(max_time%)")
    refused(gw, "gsub", "rcpt budget exceeded %(max_time%)")
  end)

  it("asking string.rep for 2 GiB or 1 GiB gets 451 before anything is built", function()
    refused(gw, "rep", "^" .. at("@rep") .. "string.rep: the result %(2147483648 bytes%)")
    refused(gw, "rep-1g", "^" .. at("@rep1g") .. "string.rep: the result %(1073741824 bytes%) would pass")
    -- nothing was built: the state was not poisoned
    assert.are.equal(0, #rebuilds_of(gw))
  end)

  it("doubling a string with .. gets 451 at max_memory, even when it swallows the errors", function()
    refused(gw, "concat", "rcpt budget exceeded %(max_memory%)")
    refused(gw, "concat-pcall", "rcpt budget exceeded %(max_memory%)")
    refused(gw, "table-concat", "rcpt budget exceeded %(max_memory%)")
  end)

  it("recursing through gsub's function replacement gets 451 before the C stack overflows", function()
    refused(gw, "gsub-recursion", "C stack overflow")
  end)

  it("calling table.sort or tonumber on large inputs in a loop gets 451 at max_time", function()
    refused(gw, "sort", "rcpt budget exceeded %(max_time%)")
    refused(gw, "tonumber", "rcpt budget exceeded %(max_time%)")
  end)

  it("with a huge string.format gets 451 before it is built", function()
    refused(gw, "format", "^" .. at("@format") .. "string.format: the result %(209715200 bytes%) would pass the memory cap")
  end)

  it("growing a module-level table within one call gets 451, and its state is rebuilt", function()
    local rebuilds = #rebuilds_of(gw)
    refused(gw, "grow-fast", "rcpt budget exceeded %(max_memory%)")
    gw:wait_log_count(REBUILD, rebuilds + 1)
    local line = rebuilds_of(gw)[rebuilds + 1]
    assert.matches("reason=max_memory", line)
    assert.matches("status=ok", line)
    -- the fresh state's hoard is empty
    local c = h.session(gw)
    c:cmd("MAIL FROM:<sender@example.org>", R.mail_ok)
    c:cmd("RCPT TO:<count@example.test>", "550 5.7.1 hoard holds 0")
    c:cmd("QUIT", R.bye)
  end)

  it("growing a module-level table call by call gets 451 at the cap; the fresh state has let it go", function()
    local rebuilds = #rebuilds_of(gw)
    local c = h.session(gw)
    c:cmd("MAIL FROM:<sender@example.org>", R.mail_ok)
    local accepted = 0
    for _ = 1, 2 * MAX_MEMORY do
      local code = c:cmd("RCPT TO:<grow@example.test>")
      if code ~= 250 then
        break
      end
      accepted = accepted + 1
    end
    -- 4 MiB a call: a few calls fit under 32 MiB, then one is refused
    assert(accepted >= 3 and accepted < MAX_MEMORY / 4, "accepted " .. accepted .. " calls")
    c:cmd("RCPT TO:<count@example.test>", "550 5.7.1 hoard holds 0")
    c:cmd("RCPT TO:<grow@example.test>", R.rcpt_ok)
    c:cmd("RCPT TO:<count@example.test>", "550 5.7.1 hoard holds 1")
    c:cmd("QUIT", R.bye)
    gw:wait_log_count(REBUILD, rebuilds + 1)
    local reasons = policy_errors(gw)
    assert.matches("budget exceeded %(max_memory%)", reasons[#reasons])
    serves(gw, "after the hoard")
  end)

  it("never took the gateway's memory past max_memory + 48 MiB", function()
    local peak, worker = check_memory(gw)
    print(string.format("# hostile policies: peak resident memory %.1f MiB, worker %.1f MiB (limit %d MiB)",
      peak, worker, MAX_MEMORY + HEADROOM))
  end)

  it("leaves a gateway that exits cleanly at SIGTERM", function()
    assert.is_true(gw:alive())
    assert.is_true(gw:stop())
    gw = nil
  end)
end)

describe("a hostile policy at connect", function()
  local gw

  setup(function()
    gw = ps.start_with_script(ps.lines {
      "local policy = {}",
      "function policy.server_tls(ctx)",
      "  if ctx.client.ip ~= '127.0.0.5' then return 'may' end -- passes the check's fixtures",
      "  return setmetatable({}, { __index = function() while true do end end,",
      "    __tostring = function() while true do end end })",
      "end",
      "function policy.connect(ctx) return 'accept' end",
      "return policy",
    }, { ini_extra = { workers = 1 }, policy = { max_time = "200ms", max_memory = MAX_MEMORY .. "M" } })
    gw:wait_children(2)
  end)
  teardown(function() if gw then gw:stop() end end)

  it("gets 421 and the connection closed, every time, and the gateway goes on", function()
    for _ = 1, 3 do
      local t0 = gateway.now()
      local c = client.connect(gw:port(), { bind = "127.0.0.5" })
      assert.are.equal(POLICY_FAILURE_421, c.banner)
      assert.is_true(c:closed(5))
      assert(gateway.now() - t0 < MAX_TIME + 1)
    end
    assert.matches("server_tls returned a table, not a level",
      ps.log_value(gw:log_lines("event=policy_error")[1], "reason"))
    check_memory(gw)
    assert.is_true(gw:stop())
    gw = nil
  end)
end)

describe("a hostile policy at load (smtpgw -t)", function()
  local dir
  before_each(function() dir = gateway.mktempdir() end)
  after_each(function() gateway.rm_rf(dir) end)

  local function check(text)
    local script = dir .. "/policy.lua"
    gateway.write_file(script, text)
    local ini = dir .. "/gateway.ini"
    gateway.write_file(ini, gateway.ini_text(nil, { policy = { script = script, max_memory = "16M" } }))
    local out, err, code = ps.smtpgw("-c " .. gateway.shell_quote(ini) .. " -t")
    return out .. err, code, script
  end

  it("that holds more than max_memory while loading is refused with FILE:LINE", function()
    local text = ps.lines {
      "local t = {}",
      "for i = 1, 100 do t[i] = ('x'):rep(2 ^ 20) .. i end -- @hold",
      "return { rcpt = function() return 'accept' end }",
    }
    local out, code, script = check(text)
    assert.are.equal(1, code, out)
    assert.truthy(out:find(script .. ":" .. ps.line_of(text, "@hold") ..
      ": load budget exceeded (max_memory)", 1, true), out)
  end)

  it("[policy] max_memory takes sizes with K, M, G and refuses the rest with FILE:LINE", function()
    local script = dir .. "/policy.lua"
    gateway.write_file(script, "return { rcpt = function() return 'accept' end }\n")
    for value, want in pairs({ ["64M"] = 0, ["1G"] = 0, ["2048K"] = 0, ["67108864"] = 0, ["64MiB"] = 0,
      lots = "max_memory: 'lots' is not a size", ["100"] = "max_memory: '100' is out of range",
      ["8T"] = "max_memory: '8T' is not a size", ["5G"] = "out of range" }) do
      local ini = dir .. "/gateway.ini"
      gateway.write_file(ini, gateway.ini_text(nil, { policy = { script = script, max_memory = value } }))
      local out, err, code = ps.smtpgw("-c " .. gateway.shell_quote(ini) .. " -t")
      if want == 0 then
        assert.are.equal(0, code, value .. ": " .. out .. err)
      else
        assert.are.equal(1, code, value .. ": " .. out .. err)
        assert.truthy((out .. err):find(ps.esc(ini) .. ":%d+: ") and (out .. err):find(want, 1, true),
          value .. ": " .. out .. err)
      end
    end
  end)

  it("whose hooks table has a looping or raising __index is read raw: its metamethods never run", function()
    local out, code = check(ps.lines {
      "local t = setmetatable({}, { __index = function() while true do end end })",
      "t.rcpt = function() return 'accept' end",
      "return t",
    })
    assert.are.equal(0, code, out)
    out, code = check(ps.lines {
      "return setmetatable({}, { __index = function() error('raised by __index') end })",
    })
    assert.are.equal(1, code, out)
    assert.matches("returns no hook", out)
    assert.falsy(out:find("raised by __index", 1, true), out)
  end)
end)

describe("a state that cannot be rebuilt", function()
  local gw, script

  setup(function()
    gw, script = ps.start_with_script(ps.lines {
      "local helper = require 'helper' -- read again at each rebuild",
      "local hoard = {}",
      "local policy = {}",
      "function policy.rcpt(ctx)",
      "  if ctx.recipient:match('^grow@') then",
      "    while true do hoard[#hoard + 1] = ('h'):rep(2 ^ 20) .. #hoard end",
      "  end",
      "  return helper.verdict()",
      "end",
      "return policy",
    }, { ini_extra = { workers = 1 }, files = { ["helper.lua"] = "return { verdict = function() return 'accept' end }\n" },
      policy = { max_time = "200ms", max_memory = MAX_MEMORY .. "M" } })
    gw:wait_children(2)
  end)
  teardown(function() if gw then gw:stop() end end)

  it("answers 451 until its rebuild succeeds, retried at most once a second", function()
    local helper = gw:dir() .. "/helper.lua"
    local text = gateway.read_file(helper)
    assert(os.remove(helper))
    local c = h.session(gw)
    c:cmd("MAIL FROM:<sender@example.org>", R.mail_ok)
    c:cmd("RCPT TO:<grow@example.test>", POLICY_FAILURE)
    local line = gw:wait_log("level=%a+ (event=policy_rebuild [^\n]*)")
    assert.matches("status=failed", line)
    assert.matches("helper", line)
    -- no state: 451, without a rebuild at every call
    for _ = 1, 3 do c:cmd("RCPT TO:<user@example.test>", POLICY_FAILURE) end
    assert.are.equal(1, #rebuilds_of(gw), table.concat(gw:log_lines("event=policy_"), "\n"))
    -- (a line reaches the log at the end of the worker's loop turn: waited for)
    assert.matches("could not be rebuilt",
      ps.log_value(gw:wait_log_count("event=policy_error", 2)[2], "reason"))
    -- the module is back: within a few seconds a call rebuilds the state
    gateway.write_file(helper, text)
    local ok = false
    for _ = 1, 40 do
      if c:cmd("RCPT TO:<user@example.test>") == 250 then ok = true break end
      gateway.sleep(0.1)
    end
    assert.is_true(ok, "the state was never rebuilt; log:\n" .. gw:log())
    local lines = gw:wait_log_count(REBUILD, 2)
    assert.matches("status=ok", lines[#lines])
    c:cmd("QUIT", R.bye)
    serves(gw, "after the rebuild")
  end)
end)
