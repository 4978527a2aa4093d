-- Test harness: runs the real smtpgw binary on a free loopback port with a
-- private temporary directory (gateway.ini, spool, logs) and tears it down by
-- PID. Used by spec/integration/*_spec.lua.
--
--   local gateway = require "harness"
--   local gw = gateway.start{ ini_extra = { max_recipients = 3 } }
--   ... gw:port(), gw:dir(), gw:log(), gw:wait_log("event=queued") ...
--   gw:signal("HUP")                -- by PID, without waiting for an exit
--   gw:stop()                       -- raises on sanitizer reports / bad exit
--
-- Every started instance is remembered; gateway.cleanup() (call it from
-- after_each) stops whatever a spec left running, even when the spec failed.

local socket = require "socket"
local lfs = require "lfs"

local M = {}

local unpack = table.unpack or unpack

M.STARTUP_DEADLINE = tonumber(os.getenv("SMTPGW_SPEC_STARTUP") or "") or 30
-- (seconds to wait for "event=listen")
M.STOP_DEADLINE = 15 -- seconds between SIGTERM and SIGKILL
M.WAIT_DEADLINE = 10 -- default for wait_log / wait_for
M.HOSTNAME = "mx.test.example"

local SANITIZER_PATTERNS = {
  "ERROR: AddressSanitizer",
  "ERROR: LeakSanitizer",
  "SUMMARY: AddressSanitizer",
  "SUMMARY: UndefinedBehaviorSanitizer",
  "runtime error:",
}

-- ---------------------------------------------------------------- helpers

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
M.shell_quote = shell_quote

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local data = f:read("*a")
  f:close()
  return data
end
M.read_file = read_file

local function write_file(path, data)
  local f = assert(io.open(path, "wb"))
  assert(f:write(data))
  assert(f:close())
end
M.write_file = write_file

local function exists(path)
  return lfs.attributes(path, "mode") ~= nil
end
M.exists = exists

local function sleep(s) socket.sleep(s) end
M.sleep = sleep

local function now() return socket.gettime() end
M.now = now

-- Runs a shell command; returns its combined stdout+stderr and exit code.
local function run(cmd)
  local p = assert(io.popen("{ " .. cmd .. "\n} 2>&1; echo \"__EXIT__$?\""))
  local out = p:read("*a")
  p:close()
  local body, code = out:match("^(.-)__EXIT__(%d+)\n?$")
  if not body then return out, -1 end
  return body, tonumber(code)
end
M.run = run

-- Polls fn() every `step` seconds until it returns a truthy value or the
-- deadline passes. Returns the value, or nil on timeout.
local function wait_for(fn, deadline, step)
  local limit = now() + (deadline or M.WAIT_DEADLINE)
  step = step or 0.05
  while true do
    local v = fn()
    if v then return v end
    if now() >= limit then return nil end
    sleep(step)
  end
end
M.wait_for = wait_for

local function mktempdir()
  local name = os.tmpname() -- creates /tmp/lua_XXXXXX
  os.remove(name)
  local suffix = name:match("([^/]+)$"):gsub("^lua_", "")
  local dir = "/tmp/smtpgw-spec-" .. suffix
  local out, code = run("mkdir -p " .. shell_quote(dir))
  assert(code == 0, "mkdir " .. dir .. " failed: " .. out)
  return dir
end
M.mktempdir = mktempdir

local function rm_rf(dir)
  if dir and dir:match("^/tmp/smtpgw%-spec%-") then
    run("rm -rf " .. shell_quote(dir))
  end
end

local function list_dir(path)
  local names = {}
  if lfs.attributes(path, "mode") ~= "directory" then return names end
  for name in lfs.dir(path) do
    if name ~= "." and name ~= ".." then names[#names + 1] = name end
  end
  table.sort(names)
  return names
end
M.list_dir = list_dir

function M.bin()
  local bin = os.getenv("SMTPGW_BIN")
  if not bin or bin == "" then bin = "build/check/smtpgw" end
  if bin:sub(1, 1) ~= "/" then
    local cwd = lfs.currentdir()
    bin = cwd .. "/" .. bin
  end
  return bin
end

-- Returns the sanitizer report lines found in `text`, or nil.
local function sanitizer_report(text)
  if not text then return nil end
  for _, pat in ipairs(SANITIZER_PATTERNS) do
    local s = text:find(pat, 1, true)
    if s then
      -- give some context: from the start of that line, up to 4 KiB
      local ls = s
      while ls > 1 and text:sub(ls - 1, ls - 1) ~= "\n" do ls = ls - 1 end
      return text:sub(ls, ls + 4096)
    end
  end
  return nil
end
M.sanitizer_report = sanitizer_report

-- ------------------------------------------------------------- ini files

local DEFAULTS = {
  { "listen", "127.0.0.1:0" },
  -- Two inbound workers, as on a 2-core machine: every spec runs across
  -- processes (limits, ids, reload) unless it asks for one.
  { "workers", 2 },
  { "spool", "spool" },
  { "hostname", M.HOSTNAME },
  { "relay_domains", "example.test" },
  { "relay_networks", "127.0.0.0/8" },
  -- The banner at once: a spec that is about the greet pause sets its own.
  { "greet_pause", "0" },
}

-- One certificate pair shared by every gateway a run starts: without it
-- each start would make its own RSA 4096 Default Cert (seconds under ASan).
-- spec/run.sh makes it once; a busted run on its own makes it here.
local shared_certs
function M.shared_cert_dir()
  if shared_certs then return shared_certs end
  local dir = os.getenv("SMTPGW_SPEC_CERTS")
  if not dir or dir == "" then dir = mktempdir() .. "/certs" end
  if not exists(dir .. "/shared.crt") then
    local out, code = run("mkdir -p " .. shell_quote(dir) ..
      " && openssl req -x509 -newkey rsa:2048 -nodes -days 3650" ..
      " -subj /CN=" .. M.HOSTNAME ..
      " -addext subjectAltName=DNS:" .. M.HOSTNAME ..
      " -keyout " .. shell_quote(dir .. "/shared.key") ..
      " -out " .. shell_quote(dir .. "/shared.crt") .. " 2>/dev/null" ..
      " && chmod 600 " .. shell_quote(dir .. "/shared.key"))
    assert(code == 0, "cannot make the shared test certificate in " .. dir ..
      ": " .. tostring(out))
  end
  shared_certs = dir
  return dir
end

-- Builds the text of a gateway.ini from the defaults and `extra`
-- (key = value; a value of false drops a default key). `sections` adds
-- further sections: { name = { key = value, ... }, ... }. Unless the
-- spec names its own [tls] cert_dir (or sets it to false, to let the
-- gateway make its Default Cert), the shared test pair is used.
function M.ini_text(extra, sections)
  extra = extra or {}
  local merged = {}
  for name, keys in pairs(sections or {}) do
    merged[name] = {}
    for k, v in pairs(keys) do merged[name][k] = v end
  end
  merged.tls = merged.tls or {}
  if merged.tls.cert_dir == nil then
    merged.tls.cert_dir = M.shared_cert_dir()
  elseif merged.tls.cert_dir == false then
    merged.tls.cert_dir = nil
  end
  if next(merged.tls) == nil then merged.tls = nil end
  -- Delivery must never ask the system resolver (it is off the machine):
  -- unless a spec names its own, DNS goes to a dead loopback port and every
  -- lookup fails at once, locally.
  merged.dns = merged.dns or { resolver = "127.0.0.1@9" }
  if merged.dns == false then merged.dns = nil end
  sections = merged
  local lines = { "[gateway]" }
  local seen = {}
  for _, kv in ipairs(DEFAULTS) do
    local k, v = kv[1], kv[2]
    seen[k] = true
    if extra[k] ~= nil then v = extra[k] end
    if v ~= false then lines[#lines + 1] = k .. " = " .. tostring(v) end
  end
  local keys = {}
  for k in pairs(extra) do
    if not seen[k] then keys[#keys + 1] = k end
  end
  table.sort(keys)
  for _, k in ipairs(keys) do
    if extra[k] ~= false then
      lines[#lines + 1] = k .. " = " .. tostring(extra[k])
    end
  end
  local names = {}
  for name in pairs(sections or {}) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    lines[#lines + 1] = ""
    lines[#lines + 1] = "[" .. name .. "]"
    local skeys = {}
    for k in pairs(sections[name]) do skeys[#skeys + 1] = k end
    table.sort(skeys)
    for _, k in ipairs(skeys) do
      lines[#lines + 1] = k .. " = " .. tostring(sections[name][k])
    end
  end
  return table.concat(lines, "\n") .. "\n"
end

-- ------------------------------------------------------------- instances

local live = {} -- every instance not yet stopped

local Gateway = {}
Gateway.__index = Gateway

local function spawn(self)
  self.gen = (self.gen or 0) + 1
  local g = self.gen
  self.logfile = self._dir .. "/log." .. g
  self.exitfile = self._dir .. "/exit." .. g
  self.outfile = self._dir .. "/out." .. g
  os.remove(self.exitfile)
  -- The subshell is the binary's parent: it reaps it and records its exit
  -- status, so we never depend on PID 1 reaping orphans.
  local cmd = string.format(
    "cd / && ( %s -c %s >>%s 2>>%s </dev/null & echo $!; exec >/dev/null 2>&1; " ..
    "wait $!; echo $? >%s.tmp; mv %s.tmp %s ) &",
    shell_quote(self.bin), shell_quote(self.ini),
    shell_quote(self.outfile), shell_quote(self.logfile),
    shell_quote(self.exitfile), shell_quote(self.exitfile),
    shell_quote(self.exitfile))
  local p = assert(io.popen(cmd, "r"))
  local line = p:read("*l")
  p:close()
  local pid = tonumber(line or "")
  assert(pid and pid > 1, "could not start " .. self.bin .. ": " .. tostring(line))
  self.pid = pid
  local pidlog = os.getenv("SMTPGW_SPEC_PIDS")
  if pidlog and pidlog ~= "" then
    local f = io.open(pidlog, "a")
    if f then f:write(pid, "\n") f:close() end
  end
  self.killed = nil
  self.stopped = false
  self.listen = {}
  live[self] = true
end

local function wait_ready(self)
  local deadline = now() + M.STARTUP_DEADLINE
  while true do
    local log = self:log()
    local addrs = {}
    -- [log] format = smtpgw, or postfix ("postfix/master[PID]: listen: ...")
    for addr in log:gmatch("event=listen addr=(%S+)") do
      addrs[#addrs + 1] = addr
    end
    for addr in log:gmatch("%]: listen: addr=(%S+)") do
      addrs[#addrs + 1] = addr
    end
    if #addrs >= (self.expect_listen or 1) then
      self.listen = addrs
      return true
    end
    if not self:alive() then
      local code = self:exit_code()
      live[self] = nil
      self.stopped = true
      local report = sanitizer_report(log)
      if not os.getenv("SMTPGW_SPEC_KEEP") then rm_rf(self._dir) end
      error(string.format("smtpgw exited (status %s) before listening%s; log:\n%s",
        tostring(code), report and " with a sanitizer report" or "", log), 0)
    end
    if now() >= deadline then
      self:_terminate()
      error("smtpgw did not log event=listen within " .. M.STARTUP_DEADLINE ..
        " s; log:\n" .. self:log(), 0)
    end
    sleep(0.05)
  end
end

-- gateway.start{ ini_extra = {...}, sections = { name = {...} },
--                raw_ini = "...", expect_listen = n,
--                log_reader = function() return text end }
-- log_reader: where gw:log() reads the log when it is not on stderr
-- ([log] destination = syslog).
function M.start(opts)
  opts = opts or {}
  local self = setmetatable({}, Gateway)
  self.log_reader = opts.log_reader
  self.bin = opts.bin or M.bin()
  assert(exists(self.bin), "smtpgw binary not found: " .. self.bin ..
    " (build it with `make build/check/smtpgw`)")
  self._dir = opts.dir or mktempdir()
  self.ini = self._dir .. "/gateway.ini"
  self.expect_listen = opts.expect_listen or 1
  write_file(self.ini, opts.raw_ini or M.ini_text(opts.ini_extra, opts.sections))
  spawn(self)
  wait_ready(self)
  return self
end

-- The children of the current run, from their event=ready lines (the
-- latest line per process name wins: a restarted child replaces the
-- dead one): { ["worker1"] = {pid=, uid=, generation=}, qmgr = {...} }.
function Gateway:children()
  local out = {}
  for _, line in ipairs(self:log_lines("event=ready ")) do
    local name = line:match(" proc=(%S+)")
    if name then
      out[name] = { pid = tonumber(line:match(" pid=(%d+)")),
        uid = tonumber(line:match(" uid=(%d+)")),
        generation = tonumber(line:match(" generation=(%d+)")) }
    end
  end
  return out
end

-- Waits until `n` children (workers and the queue manager) have logged
-- event=ready in this run; returns gw:children().
function Gateway:wait_children(n, deadline)
  local ok = wait_for(function()
    local c = 0
    for _ in pairs(self:children()) do c = c + 1 end
    return c >= n
  end, deadline or M.WAIT_DEADLINE)
  assert(ok, "children not ready; log:\n" .. self:log())
  return self:children()
end

function Gateway:dir() return self._dir end
function Gateway:spool() return self._dir .. "/spool" end

-- Port of the first (or n-th) listening address.
function Gateway:port(n)
  local addr = self.listen[n or 1]
  assert(addr, "gateway has no listening address")
  return tonumber(addr:match(":(%d+)$"))
end

function Gateway:addr(n) return self.listen[n or 1] end

function Gateway:log()
  if self.log_reader then return self.log_reader() end
  return read_file(self.logfile) or ""
end

-- All log lines of this run (the current generation) that match `pattern`.
function Gateway:log_lines(pattern)
  local out = {}
  for line in self:log():gmatch("[^\n]+") do
    if not pattern or line:find(pattern) then out[#out + 1] = line end
  end
  return out
end

-- Polls until the log matches `pattern` (a Lua pattern) and returns the
-- captures (or the whole match); raises with the log text on deadline.
function Gateway:wait_log(pattern, deadline)
  local caps
  local ok = wait_for(function()
    local log = self:log()
    caps = { log:match(pattern) }
    if caps[1] ~= nil then return true end
    return false
  end, deadline)
  if not ok then
    error("log never matched " .. string.format("%q", pattern) ..
      "; log:\n" .. self:log(), 2)
  end
  return unpack(caps)
end

-- Polls until at least n log lines match `pattern`.
function Gateway:wait_log_count(pattern, n, deadline)
  local ok = wait_for(function()
    return #self:log_lines(pattern) >= n
  end, deadline)
  if not ok then
    error(string.format("log never had %d lines matching %q; log:\n%s",
      n, pattern, self:log()), 2)
  end
  return self:log_lines(pattern)
end

-- Names of the files in SPOOL/queue or SPOOL/tmp (sorted).
function Gateway:spool_files(which)
  assert(which == "queue" or which == "tmp", "spool_files: queue or tmp")
  return list_dir(self:spool() .. "/" .. which)
end

function Gateway:queue_file(id)
  return read_file(self:spool() .. "/queue/" .. id)
end

function Gateway:alive()
  if exists(self.exitfile) then return false end
  local _, code = run("kill -0 " .. self.pid .. " 2>/dev/null")
  if code ~= 0 then
    -- gone but the wrapper has not written the status yet: give it a moment
    wait_for(function() return exists(self.exitfile) end, 2)
    return false
  end
  return true
end

-- Exit status of the binary (128+signal when killed), nil while running.
function Gateway:exit_code()
  local s = read_file(self.exitfile)
  return s and tonumber(s:match("%d+")) or nil
end

-- Sends a signal (name or number, default TERM) by PID and waits until the
-- process is gone. Returns true when it exited within the deadline.
function Gateway:kill(sig, deadline)
  sig = sig or "TERM"
  if not self:alive() then return true end
  run("kill -" .. tostring(sig) .. " " .. self.pid .. " 2>/dev/null")
  self.killed = tostring(sig)
  return wait_for(function() return not self:alive() end,
    deadline or M.STOP_DEADLINE) and true or false
end

-- Sends a signal (e.g. "HUP") by PID and returns at once: for signals the
-- gateway handles and keeps running (unlike kill, which waits for the exit).
function Gateway:signal(sig)
  assert(sig, "signal: which signal?")
  assert(self:alive(), "signal: gateway is not running")
  local out, code = run("kill -" .. tostring(sig) .. " " .. self.pid)
  assert(code == 0, "kill -" .. tostring(sig) .. " " .. self.pid .. ": " .. out)
  return true
end

function Gateway:_terminate()
  if self:alive() then
    if not self:kill("TERM", M.STOP_DEADLINE) then
      self:kill("KILL", M.STOP_DEADLINE)
      self.needed_sigkill = true
    end
  end
  live[self] = nil
end

-- Starts the binary again on the same directory, ini and spool (after a
-- kill). The new run logs to a new file; log() and port() refer to it.
function Gateway:restart()
  assert(not self:alive(), "restart: previous run still alive, kill it first")
  spawn(self)
  wait_ready(self)
  return self
end

-- Stops the gateway (SIGTERM, SIGKILL after a deadline). Returns true, or
-- raises when the run did not exit cleanly: a sanitizer report in the log,
-- SIGKILL needed, or a non-zero exit after SIGTERM. Idempotent.
function Gateway:stop()
  if self.stopped then return true end
  self.stopped = true
  local was_killed = self.killed -- set when the spec itself sent a signal
  local was_alive = self:alive()
  self:_terminate()
  local problems = {}
  -- every generation's log counts
  for g = 1, self.gen do
    local report = sanitizer_report(read_file(self._dir .. "/log." .. g))
    if report then
      problems[#problems + 1] = "sanitizer report in run " .. g .. ":\n" .. report
    end
  end
  if self.needed_sigkill then
    problems[#problems + 1] = "smtpgw did not exit within " .. M.STOP_DEADLINE ..
      " s of SIGTERM (SIGKILL sent)"
  elseif was_alive and not was_killed then
    local code = self:exit_code()
    if code ~= 0 then
      problems[#problems + 1] = "smtpgw exited with status " .. tostring(code) ..
        " after SIGTERM"
    end
  elseif not was_alive and not was_killed then
    problems[#problems + 1] = "smtpgw had exited by itself (status " ..
      tostring(self:exit_code()) .. ")"
  end
  if #problems > 0 then
    error(table.concat(problems, "\n") .. "\n(dir kept: " .. self._dir ..
      ")\nlog:\n" .. self:log(), 2)
  end
  if not os.getenv("SMTPGW_SPEC_KEEP") then rm_rf(self._dir) end
  return true
end

-- Stops every instance still alive (for after_each). Raises with all the
-- problems found so that a failing teardown is reported, after stopping all.
function M.cleanup()
  local errs = {}
  local list = {}
  for gw in pairs(live) do list[#list + 1] = gw end
  for _, gw in ipairs(list) do
    local ok, err = pcall(gw.stop, gw)
    if not ok then errs[#errs + 1] = tostring(err) end
  end
  for gw in pairs(live) do live[gw] = nil end
  if #errs > 0 then error(table.concat(errs, "\n\n"), 2) end
end

-- ------------------------------------------------------------- -t checks

-- Writes `text` to a new temporary gateway.ini (or uses opts.path) and runs
-- `smtpgw -c FILE -t`. Returns output (stdout+stderr), exit code, path.
function M.check_config(text, opts)
  opts = opts or {}
  local path = opts.path
  local dir
  if not path then
    dir = mktempdir()
    path = dir .. "/" .. (opts.name or "gateway.ini")
    write_file(path, text)
  end
  local out, code = run("timeout -k 5 " .. (opts.no_t and 8 or 20) .. " " ..
    shell_quote(M.bin()) .. " -c " ..
    shell_quote(path) .. (opts.no_t and "" or " -t") .. " </dev/null")
  return out, code, path, dir
end

-- Runs the gateway itself (no -t) on a config that should be refused; it is
-- bounded by timeout(1) in case it starts after all (then exit code 124).
function M.run_config(text)
  local out, code, path, dir = M.check_config(text, { no_t = true })
  return out, code, path, dir
end

M.rm_rf = rm_rf

-- ------------------------------------------------------------- queue files

-- Splits a queue file into its envelope header (table of key -> value, with
-- rcpt a list) and the message text.
function M.parse_queue_file(data)
  assert(data, "no queue file data")
  local s, e = data:find("\r?\n\r?\n")
  assert(s, "queue file has no blank line after the envelope header")
  local head, body = data:sub(1, s - 1), data:sub(e + 1)
  local env = { rcpt = {}, _order = {} }
  for line in (head .. "\n"):gmatch("(.-)\r?\n") do
    local k, v = line:match("^([%w%-_]+): ?(.*)$")
    assert(k, "bad envelope header line: " .. string.format("%q", line))
    env._order[#env._order + 1] = k
    if k == "rcpt" then
      env.rcpt[#env.rcpt + 1] = v
    else
      env[k] = v
    end
  end
  return env, body
end

-- The first header field named `name` of a message (unfolded).
function M.header(body, name)
  local lname = name:lower()
  local cur, curname
  for line in (body .. "\n"):gmatch("(.-)\r?\n") do
    if line == "" then break end
    if line:match("^[ \t]") and cur then
      cur = cur .. " " .. line:gsub("^[ \t]+", "")
    else
      if curname == lname then return cur end
      local n, v = line:match("^([^:]+):%s*(.*)$")
      curname, cur = n and n:lower(), v
    end
  end
  if curname == lname then return cur end
  return nil
end

return M
