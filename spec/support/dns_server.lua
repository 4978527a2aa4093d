-- A loopback DNS server for specs: unbound on 127.0.0.1 at a free port,
-- answering only from the zones and records a spec gives it. Nothing is
-- ever forwarded or recursed: "." is a refused local zone, so a name the
-- spec did not describe gets REFUSED, and the only stub zones (for
-- SERVFAIL) point at an address unbound may not ask. Started and stopped
-- by PID through procs.lua.
--
--   local dns_server = require "dns_server"
--   local dns = dns_server.start{
--     zones = { ["example.test."] = "static" },       -- local-zone types
--     data = { "example.test. MX 10 mx.example.test.", -- local-data
--              "mx.example.test. A 127.0.0.1",
--              '_mta-sts.example.test. TXT "v=STSv1; id=1;"' },
--     servfail = { "broken.test." },                  -- SERVFAIL at once
--   }
--   dns:resolver()  --> "127.0.0.1@PORT", for [dns] resolver
--   dns:stop()

local socket = require "socket"
local gateway = require "harness"
local procs = require "procs"

local M = {}

local UNBOUND = "/usr/sbin/unbound"

local Server = {}
Server.__index = Server

-- A port that is free for both UDP and TCP on 127.0.0.1 right now.
local function free_port()
  for _ = 1, 20 do
    local u = assert(socket.udp())
    assert(u:setsockname("127.0.0.1", 0))
    local _, port = u:getsockname()
    local t = socket.tcp()
    local ok = t:bind("127.0.0.1", port)
    t:close()
    u:close()
    if ok then return tonumber(port) end
  end
  error("no free port for the DNS fixture")
end

-- A TXT record's text comes in double quotes: the line then goes in
-- single quotes, which unbound's configuration reader takes as well.
local function quoted(s)
  if s:find('"', 1, true) then
    assert(not s:find("'", 1, true), "not both kinds of quotes in DNS fixture data: " .. s)
    return "'" .. s .. "'"
  end
  return '"' .. s .. '"'
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t or {}) do keys[#keys + 1] = k end
  table.sort(keys)
  return keys
end

-- The "server:" lines every loopback unbound of the specs starts with:
-- 127.0.0.1 at `port` only, in the foreground, files in `dir`, one
-- thread, no validation of its own, queries from loopback only.
local function server_lines(dir, port)
  return {
    "server:",
    "  interface: 127.0.0.1",
    "  port: " .. port,
    "  do-ip4: yes",
    "  do-ip6: no",
    "  do-udp: yes",
    "  do-tcp: yes",
    "  do-daemonize: no",
    '  chroot: ""',
    '  username: ""',
    "  directory: " .. quoted(dir),
    "  pidfile: " .. quoted(dir .. "/unbound.pid"),
    '  logfile: ""',
    "  use-syslog: no",
    "  verbosity: 1",
    "  num-threads: 1",
    "  so-reuseport: no",
    '  module-config: "iterator"',
    "  access-control: 127.0.0.0/8 allow",
  }
end
M.server_lines = server_lines

local function config_text(dir, port, opts)
  local lines = server_lines(dir, port)
  for _, line in ipairs({
    -- The servfail stubs point at 127.0.0.1, which unbound will not
    -- ask: it answers SERVFAIL at once and sends nothing.
    "  do-not-query-localhost: yes",
    -- Everything not described below is refused, never recursed.
    '  local-zone: "." refuse',
    -- unbound's built-in localhost zone would answer 127.0.0.1: here
    -- "localhost" does not exist unless a spec says so.
    '  local-zone: "localhost." static',
  }) do lines[#lines + 1] = line end
  for _, name in ipairs(sorted_keys(opts.zones)) do
    lines[#lines + 1] = "  local-zone: " .. quoted(name) .. " " .. opts.zones[name]
  end
  for _, name in ipairs(opts.servfail or {}) do
    lines[#lines + 1] = "  local-zone: " .. quoted(name) .. " transparent"
  end
  for _, rr in ipairs(opts.data or {}) do
    lines[#lines + 1] = "  local-data: " .. quoted(rr)
  end
  for _, name in ipairs(opts.servfail or {}) do
    lines[#lines + 1] = "stub-zone:"
    lines[#lines + 1] = "  name: " .. quoted(name)
    lines[#lines + 1] = "  stub-addr: 127.0.0.1@9"
  end
  lines[#lines + 1] = "remote-control:"
  lines[#lines + 1] = "  control-enable: no"
  return table.concat(lines, "\n") .. "\n"
end

-- A query for ". SOA" with id 0x5157: any reply with that id means the
-- server is up (with "." refused it is a REFUSED one).
local PROBE = "\81\87\1\0\0\1\0\0\0\0\0\0\0\0\6\0\1"

local function answers(port)
  local u = assert(socket.udp())
  u:settimeout(0.2)
  u:setpeername("127.0.0.1", port)
  u:send(PROBE)
  local reply = u:receive()
  u:close()
  return reply ~= nil and reply:sub(1, 2) == PROBE:sub(1, 2)
end

-- One try at a free port: `conf(port)` is the configuration text, written
-- into `dir` (which the server's stop() removes).
local function try_start(dir, conf)
  local port = free_port()
  local path = dir .. "/unbound-" .. port .. ".conf"
  gateway.write_file(path, conf(port))
  local out, code = gateway.run(UNBOUND .. "-checkconf " .. gateway.shell_quote(path))
  assert(code == 0, "unbound-checkconf: " .. out .. "\n" .. conf(port))
  local proc = procs.start(gateway.shell_quote(UNBOUND) .. " -d -c " ..
    gateway.shell_quote(path))
  local up = gateway.wait_for(function()
    return answers(port) or not proc:alive()
  end, 15)
  if up and proc:alive() then
    return setmetatable({ port = port, dir = dir, proc = proc }, Server)
  end
  local why = gateway.read_file(proc.err) or ""
  proc:stop()
  return nil, why
end

-- Starts unbound in `dir` with the configuration `conf(port)` gives for a
-- free port, retrying on another port when the chosen one was taken in
-- between. Returns the server (resolver(), log(), stop(): stop removes
-- `dir`), or raises with unbound's last words. For other fixtures
-- (dnssec_zone.lua) that write their own configuration.
function M.launch(dir, conf)
  local last
  for _ = 1, 3 do
    local server, why = try_start(dir, conf)
    if server then return server end
    last = why
  end
  gateway.rm_rf(dir)
  error("the DNS fixture did not start: " .. tostring(last), 3)
end

-- Starts unbound with `opts` (see above).
function M.start(opts)
  opts = opts or {}
  local dir = gateway.mktempdir()
  return M.launch(dir, function(port) return config_text(dir, port, opts) end)
end

-- The server's methods, for fixtures that extend it.
M.Server = Server

function Server:resolver()
  return "127.0.0.1@" .. self.port
end

-- What unbound logged (stderr), for failure messages.
function Server:log()
  return gateway.read_file(self.proc.err) or ""
end

function Server:stop()
  if self.proc then
    self.proc:stop()
    self.proc = nil
  end
  gateway.rm_rf(self.dir)
end

-- A port on which nothing listens (UDP queries to it are refused by the
-- kernel): a dead resolver.
M.free_port = free_port

-- Does a DNS server answer on 127.0.0.1:port (any reply to ". SOA")?
M.answers = answers

return M
