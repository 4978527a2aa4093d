-- Shared steps for the outbound delivery specs (README "Delivery"):
-- receivers (spec/support/smtp_receiver.py) and what they stored, mail
-- submitted to a gateway, the gateway's event=delivery lines, and the
-- `queue` command.
--
--   local ds = require "delivery_support"
--   local r = ds.receiver{ cert = pair }            -- STARTTLS receiver
--   r.port, r:messages(), r:wait_rcpts({...}), r:stop()
--   local qid = ds.submit(gw, "me@origin.example", { "u@plain.example" })
--   local line = ds.wait_delivery(gw, "u@plain.example", "sent")
--   local out, code = ds.queue_cmd(gw, "flush")
--   ds.cleanup()                                    -- every receiver, every gateway

local gateway = require "harness"
local procs = require "procs"
local tools = require "tools"
local h = require "helpers"

local M = {}

local q = gateway.shell_quote

-- A resolver nobody answers on: for gateways that use static routes only
-- (never the system's resolv.conf).
M.DEAD_RESOLVER = "127.0.0.1@9"

-- The stock policies, found from this file's directory (spec/support).
M.POLICIES = (tools.SUPPORT:gsub("/spec/support$", "")) .. "/policies"

function M.policy(name)
  return M.POLICIES .. "/" .. name
end

-- The sections of a delivery spec's gateway: a stock policy, quick
-- retries, DNS at a dead port; `extra` adds or replaces sections.
function M.sections(policy, extra)
  local s = {
    policy = { script = M.policy(policy) },
    delivery = { retry_min = "1s", retry_max = "2s" },
    dns = { resolver = M.DEAD_RESOLVER },
  }
  for k, v in pairs(extra or {}) do s[k] = v end
  return s
end

-- ---------------------------------------------------------------- receivers

local live = {}

local Receiver = {}
Receiver.__index = Receiver

-- ds.receiver{ cert = {crt=,key=}, no_starttls = bool, break_tls = bool,
--   rcpt_reply = "450 ...", host = "127.0.0.1", port = n, data_delay = s,
--   maildir = path, rset_reply = "421 ...", idle_close = s }
--   -> receiver (fields port, maildir, proc)
function M.receiver(o)
  o = o or {}
  local dir = gateway.mktempdir()
  local maildir = o.maildir or (dir .. "/mail")
  local args = { q(tools.PYTHON), q(tools.SUPPORT .. "/smtp_receiver.py"),
    "--maildir", q(maildir) }
  if o.cert then
    args[#args + 1] = "--cert " .. q(o.cert.crt) .. " --key " .. q(o.cert.key)
  end
  if o.no_starttls then args[#args + 1] = "--no-starttls" end
  if o.break_tls then args[#args + 1] = "--break-tls" end
  if o.rcpt_reply then args[#args + 1] = "--rcpt-reply " .. q(o.rcpt_reply) end
  if o.host then args[#args + 1] = "--host " .. q(o.host) end
  if o.port then args[#args + 1] = "--port " .. tostring(o.port) end
  if o.data_delay then args[#args + 1] = "--data-delay " .. tostring(o.data_delay) end
  if o.rset_reply then args[#args + 1] = "--rset-reply " .. q(o.rset_reply) end
  if o.idle_close then args[#args + 1] = "--idle-close " .. tostring(o.idle_close) end
  local command_log = dir .. "/commands.log"
  args[#args + 1] = "--command-log " .. q(command_log)
  local p = procs.start(table.concat(args, " "), { ready = "listening (%d+)", dir = dir })
  local self = setmetatable({ proc = p, dir = dir, maildir = maildir,
    command_log = command_log, port = tonumber(p.ready[1]), opts = o }, Receiver)
  live[self] = true
  return self
end

-- 127.0.0.1:PORT
function Receiver:addr()
  return (self.opts.host or "127.0.0.1") .. ":" .. self.port
end

-- Stops the process (by PID); the maildir is kept until ds.cleanup().
function Receiver:stop()
  self.proc:stop()
end

-- Every command line the receiver got: list of { conn = n, tls = bool,
-- line = "MAIL FROM:<...>", verb = "MAIL" }.
function Receiver:commands()
  local out = {}
  local text = gateway.read_file(self.command_log) or ""
  for conn, mode, line in text:gmatch("(%d+) (%a+) ([^\n]*)\n") do
    out[#out + 1] = { conn = tonumber(conn), tls = mode == "tls", line = line,
      verb = (line:match("^(%a+)") or ""):upper() }
  end
  return out
end

-- How many connections sent at least one command.
function Receiver:connections()
  local seen, n = {}, 0
  for _, c in ipairs(self:commands()) do
    if not seen[c.conn] then seen[c.conn], n = true, n + 1 end
  end
  return n
end

-- The commands with one of the given verbs sent outside TLS.
function Receiver:plaintext(verbs)
  local want, out = {}, {}
  for _, v in ipairs(verbs) do want[v] = true end
  for _, c in ipairs(self:commands()) do
    if not c.tls and want[c.verb] then out[#out + 1] = c.conn .. " " .. c.line end
  end
  return out
end

-- Every stored message, in order of arrival: { name =, tls =, from =,
-- rcpts = {...}, text = } (from and rcpts without <>; from "" for <>).
function Receiver:messages()
  local out = {}
  for _, name in ipairs(gateway.list_dir(self.maildir)) do
    local base = name:match("^(%d+)%.eml$")
    if base then
      local env = gateway.read_file(self.maildir .. "/" .. base .. ".env") or ""
      local m = { name = base, rcpts = {},
        text = gateway.read_file(self.maildir .. "/" .. name) }
      for line in env:gmatch("[^\n]+") do
        local k, v = line:match("^(%a+): ?(.*)$")
        if k == "tls" then m.tls = v
        elseif k == "from" then m.from = v:match("^<([^>]*)>") or v
        elseif k == "rcpt" then m.rcpts[#m.rcpts + 1] = v:match("^<([^>]*)>") or v
        end
      end
      out[#out + 1] = m
    end
  end
  table.sort(out, function(a, b) return tonumber(a.name) < tonumber(b.name) end)
  return out
end

-- Every recipient the receiver got (a list, duplicates kept) and a set
-- address -> count.
function Receiver:rcpts()
  local list, count = {}, {}
  for _, m in ipairs(self:messages()) do
    for _, r in ipairs(m.rcpts) do
      list[#list + 1] = r
      count[r] = (count[r] or 0) + 1
    end
  end
  return list, count
end

-- Waits until at least n messages are stored; returns the messages.
function Receiver:wait_messages(n, deadline)
  local msgs
  local ok = gateway.wait_for(function()
    msgs = self:messages()
    return #msgs >= n
  end, deadline or 15)
  if not ok then
    error(string.format("receiver %s has %d message(s), wanted %d", self:addr(),
      #msgs, n), 2)
  end
  return msgs
end

-- Waits until every address in `want` has arrived at least once.
function Receiver:wait_rcpts(want, deadline)
  local missing
  local ok = gateway.wait_for(function()
    local _, count = self:rcpts()
    missing = {}
    for _, r in ipairs(want) do
      if not count[r] then missing[#missing + 1] = r end
    end
    return #missing == 0
  end, deadline or 15)
  return ok and true or false, missing
end

-- ------------------------------------------------------------- submission

-- Submits one message through STARTTLS (so that an inbound level of
-- encrypt, or a recipient domain at encrypt, is satisfied) and returns its
-- queue id. opts.subject, opts.body, opts.starttls (default true).
function M.submit(gw, from, rcpts, opts)
  opts = opts or {}
  -- opts.extra_headers: header lines (a list) put before From:
  local lines = {}
  for _, l in ipairs(opts.extra_headers or {}) do lines[#lines + 1] = l end
  for _, l in ipairs({
    "From: <" .. from .. ">",
    "To: " .. table.concat(rcpts, ", "),
    "Subject: " .. (opts.subject or "delivery spec"),
    "Message-ID: <" .. tostring(os.time()) .. "." .. math.random(1e9) .. "@spec.example>",
    "",
    opts.body or "Hello from the delivery spec.",
    "" }) do lines[#lines + 1] = l end
  local msg = table.concat(lines, "\r\n")
  local r = tools.smtplib { port = gw:port(), from = from, to = rcpts, msg = msg,
    ehlo = "client.example", starttls = opts.starttls ~= false }
  assert(r.error == nil, "submission failed: " .. tostring(r.error) .. "\n" .. r.raw)
  local data = r.by.data and r.by.data[1]
  local qid = data and data.code == 250 and data.text:match("^2%.0%.0 Ok: queued as (%x+)$")
  assert(qid, "not queued:\n" .. r.raw)
  return qid
end

-- ------------------------------------------------------------------ logs

-- The event=delivery lines of the current run, optionally only those for
-- recipient `rcpt` (an address without <>) and with status `status`.
function M.delivery_lines(gw, rcpt, status)
  local out = {}
  for _, line in ipairs(gw:log_lines("event=delivery")) do
    if (not rcpt or line:find(" to=<" .. rcpt .. ">", 1, true)) and
       (not status or line:find("status=" .. status, 1, true)) then
      out[#out + 1] = line
    end
  end
  return out
end

-- Waits for the n-th (default 1st) delivery line for rcpt with status;
-- returns it. Raises with the log on deadline.
function M.wait_delivery(gw, rcpt, status, n, deadline)
  n = n or 1
  local lines
  local ok = gateway.wait_for(function()
    lines = M.delivery_lines(gw, rcpt, status)
    return #lines >= n
  end, deadline or 15)
  if not ok then
    error(string.format("no %s event=delivery line with to=<%s> status=%s " ..
      "(have %d); log:\n%s", n == 1 and "" or ("#" .. n), rcpt, tostring(status),
      #lines, gw:log()), 2)
  end
  return lines[n]
end

-- "One line per recipient and attempt": raises when a recipient of a
-- message has two event=delivery lines with the same attempt number (the
-- same attempt made again and again).
function M.assert_one_line_per_attempt(gw)
  local seen, dups = {}, {}
  for _, line in ipairs(M.delivery_lines(gw)) do
    local key = (line:match(" qid=(%S+)") or "?") .. " " ..
      (line:match(" to=(%S+)") or "?") .. " attempt=" ..
      (line:match(" attempt=(%d+)") or "?")
    seen[key] = (seen[key] or 0) + 1
    if seen[key] == 2 then dups[#dups + 1] = key end
  end
  if #dups > 0 then
    local what = {}
    for _, k in ipairs(dups) do what[#what + 1] = k .. " (" .. seen[k] .. " lines)" end
    error("the same attempt was logged more than once: " ..
      table.concat(what, ", ") .. "; log:\n" .. gw:log(), 2)
  end
end

-- The value of key=VALUE in a log line ("..." quoting removed).
function M.field(line, key)
  local l = " " .. line .. " "
  local v = l:match(" " .. key .. "=\"(.-)\" ")
  if v then return v end
  return l:match(" " .. key .. "=(%S+)")
end

-- ----------------------------------------------------------------- queue

-- Runs `smtpgw -c INI queue ARGS...`; returns output and exit code.
function M.queue_cmd(gw, ...)
  local args = {}
  for i, a in ipairs({ ... }) do args[i] = q(a) end
  return gateway.run("timeout -k 5 30 " .. q(gateway.bin()) .. " -c " .. q(gw.ini) ..
    " queue " .. table.concat(args, " ") .. " </dev/null")
end

-- `queue flush`, which must succeed.
function M.flush(gw)
  local out, code = M.queue_cmd(gw, "flush")
  assert(code == 0, "queue flush failed (exit " .. tostring(code) .. "): " .. out)
  return out
end

-- Whether the queue manager's last line about message `id` (removed, or
-- dropped after `queue delete`) is in the log, in either format.
local function gone_logged(log, id)
  return log:find("event=removed qid=" .. id, 1, true) or
    log:find("event=dropped qid=" .. id, 1, true) or
    log:find(": " .. id .. ": removed", 1, true)
end

-- Waits until SPOOL/queue holds none of `qids` (all when nil). With qids,
-- then gives the queue manager up to 2 s more to write their "removed"
-- lines (a process writes its log at the end of its loop turn, and may
-- remove the file just before; one killed with -9 never writes them).
function M.wait_queue_empty(gw, qids, deadline)
  local left
  local ok = gateway.wait_for(function()
    left = {}
    local present = {}
    for _, id in ipairs(gw:spool_files("queue")) do present[id] = true end
    if qids then
      for _, id in ipairs(qids) do
        if present[id] then left[#left + 1] = id end
      end
    else
      for id in pairs(present) do left[#left + 1] = id end
    end
    return #left == 0
  end, deadline or 15)
  if not ok then
    error("still queued: " .. table.concat(left, " ") .. "; log:\n" .. gw:log(), 2)
  end
  gateway.wait_for(function()
    local log = gw:log()
    for _, id in ipairs(qids or {}) do
      if not gone_logged(log, id) then return false end
    end
    return true
  end, 2)
end

-- -------------------------------------------------------------- teardown

function M.stop_receivers()
  local list = {}
  for r in pairs(live) do list[#list + 1] = r end
  for _, r in ipairs(list) do
    live[r] = nil
    r.proc:stop()
    gateway.rm_rf(r.dir) -- the maildir too
  end
end

-- For after_each: clients, gateways (raises on sanitizer reports), then
-- receivers, the latter even when stopping a gateway raised.
function M.cleanup()
  local ok, err = pcall(h.cleanup)
  M.stop_receivers()
  if not ok then error(err, 0) end
end

return M
