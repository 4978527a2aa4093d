-- Background processes for specs (receivers, servers): started with their
-- PID recorded (also in $SMTPGW_SPEC_PIDS, so spec/run.sh kills leftovers),
-- stopped by PID. A process prints its readiness line on stdout.

local gateway = require "harness"

local M = {}
local live = {}

local Proc = {}
Proc.__index = Proc

-- procs.start(argv_string, { ready = lua_pattern }) → proc; the captures of
-- `ready` (matched against stdout) are returned as proc.ready.
function M.start(cmd, opts)
  opts = opts or {}
  local dir = gateway.mktempdir()
  local self = setmetatable({ dir = dir, out = dir .. "/out", err = dir .. "/err" }, Proc)
  local p = assert(io.popen(string.format(
    "cd / && ( %s >%s 2>%s </dev/null & echo $! ) ", cmd,
    gateway.shell_quote(self.out), gateway.shell_quote(self.err))))
  self.pid = tonumber(p:read("*l") or "")
  p:close()
  assert(self.pid and self.pid > 1, "could not start: " .. cmd)
  local pidlog = os.getenv("SMTPGW_SPEC_PIDS")
  if pidlog and pidlog ~= "" then
    local f = io.open(pidlog, "a")
    if f then f:write(self.pid, "\n") f:close() end
  end
  live[self] = true
  if opts.ready then
    local caps = gateway.wait_for(function()
      local text = gateway.read_file(self.out) or ""
      local found = { text:match(opts.ready) }
      return #found > 0 and found or nil
    end, 20)
    if not caps then
      local why = (gateway.read_file(self.err) or "")
      self:stop()
      error("not ready: " .. cmd .. "\n" .. why, 0)
    end
    self.ready = caps
  end
  return self
end

function Proc:alive()
  return os.execute("kill -0 " .. self.pid .. " 2>/dev/null") == 0
end

function Proc:stop()
  if not live[self] then return end
  live[self] = nil
  os.execute("kill " .. self.pid .. " 2>/dev/null")
  if not gateway.wait_for(function() return not self:alive() end, 10) then
    os.execute("kill -9 " .. self.pid .. " 2>/dev/null")
  end
  os.execute("rm -rf " .. gateway.shell_quote(self.dir))
end

function M.stop_all()
  for p in pairs(live) do p:stop() end
end

return M
