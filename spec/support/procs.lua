-- Background processes for specs (receivers, servers, load clients):
-- started with their PID recorded (also in $SMTPGW_SPEC_PIDS, so
-- spec/run.sh kills leftovers) and stopped by PID. Each runs under a
-- wrapper shell that reaps it and records its exit status, because PID 1
-- of a container may never reap orphans (a zombie still answers kill -0).

local harness = require "harness"
local q = harness.shell_quote

local M = {}
local live = {}

local Proc = {}
Proc.__index = Proc

local function command_line(cmd)
  if type(cmd) == "string" then return cmd end
  local quoted = {}
  for i, a in ipairs(cmd) do quoted[i] = q(a) end
  return table.concat(quoted, " ")
end

-- procs.start(cmd, { ready = lua_pattern, dir = path }) → proc. `cmd` is a
-- shell command line or an argv list. With `ready`, waits until stdout
-- matches it; its captures are proc.ready.
function M.start(cmd, opts)
  opts = opts or {}
  local dir = opts.dir or harness.mktempdir()
  local self = setmetatable({ dir = dir, own_dir = opts.dir == nil,
    out = dir .. "/proc.out", err = dir .. "/proc.err",
    exitfile = dir .. "/proc.exit" }, Proc)
  local p = assert(io.popen(string.format(
    "cd / && ( %s >%s 2>%s </dev/null & echo $!; exec >/dev/null 2>&1; " ..
    "wait $!; echo $? >%s.tmp; mv %s.tmp %s ) &",
    command_line(cmd), q(self.out), q(self.err),
    q(self.exitfile), q(self.exitfile), q(self.exitfile))))
  self.pid = tonumber(p:read("*l") or "")
  p:close()
  assert(self.pid and self.pid > 1, "could not start: " .. command_line(cmd))
  local pidlog = os.getenv("SMTPGW_SPEC_PIDS")
  if pidlog and pidlog ~= "" then
    local f = io.open(pidlog, "a")
    if f then f:write(self.pid, "\n") f:close() end
  end
  live[self] = true
  if opts.ready then
    local caps = harness.wait_for(function()
      local found = { (harness.read_file(self.out) or ""):match(opts.ready) }
      return #found > 0 and found or nil
    end, 20)
    if not caps then
      local why = harness.read_file(self.err) or ""
      self:stop()
      error("not ready: " .. command_line(cmd) .. "\n" .. why, 0)
    end
    self.ready = caps
  end
  return self
end

-- The exit status once the process has ended, else nil.
function Proc:done()
  local s = harness.read_file(self.exitfile)
  return s and tonumber(s:match("%d+")) or nil
end

function Proc:alive()
  return self:done() == nil
end

function Proc:stop()
  if not live[self] then return end
  live[self] = nil
  if not self:done() then
    os.execute("kill " .. self.pid .. " 2>/dev/null")
    if not harness.wait_for(function() return self:done() end, 10) then
      os.execute("kill -9 " .. self.pid .. " 2>/dev/null")
      harness.wait_for(function() return self:done() end, 5)
    end
  end
  if self.own_dir then os.execute("rm -rf " .. q(self.dir)) end
end

function M.stop_all()
  local list = {}
  for p in pairs(live) do list[#list + 1] = p end
  for _, p in ipairs(list) do p:stop() end
end

return M
