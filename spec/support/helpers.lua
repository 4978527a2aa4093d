-- Small shared steps for the integration specs.

local gateway = require "harness"
local client = require "smtp_client"

local M = {}

M.HOST = gateway.HOSTNAME

-- The exact replies of README.md ("SMTP behaviour").
M.R = {
  banner = "220 " .. gateway.HOSTNAME .. " ESMTP smtpgw",
  mail_ok = "250 2.1.0 Ok",
  rcpt_ok = "250 2.1.5 Ok",
  ok = "250 2.0.0 Ok",
  data = "354 End data with <CR><LF>.<CR><LF>",
  queued = "^250 2%.0%.0 Ok: queued as (%x+)$",
  vrfy = "252 2.0.0 Send some mail, I'll try my best",
  help = "214 2.0.0 See RFC 5321",
  bye = "221 2.0.0 Bye",
  unknown = "502 5.5.2 Error: command not recognized",
  not_impl = "502 5.5.1 Error: command not implemented",
  ehlo_syntax = "501 5.5.4 Syntax: EHLO hostname",
  need_helo = "503 5.5.1 Error: send HELO/EHLO first",
  nested = "503 5.5.1 Error: nested MAIL command",
  need_mail = "503 5.5.1 Error: need MAIL command",
  need_rcpt = "503 5.5.1 Error: need RCPT command",
  no_rcpts = "554 5.5.1 Error: no valid recipients",
  mail_syntax = "501 5.5.4 Syntax: MAIL FROM:<address>",
  rcpt_syntax = "501 5.5.4 Syntax: RCPT TO:<address>",
  bad_sender = "501 5.1.7 Bad sender address syntax",
  bad_rcpt = "501 5.1.3 Bad recipient address syntax",
  utf8 = "553 5.6.7 Must declare SMTPUTF8 to send unicode address",
  size = "552 5.3.4 Message size exceeds fixed limit",
  too_many_rcpts = "452 4.5.3 Error: too many recipients",
  bare_lf = "550 5.5.2 Error: bare <LF> received",
  bare_cr = "550 5.5.2 Error: bare <CR> received",
  long_line = "550 5.5.2 Error: message line longer than 1000 octets",
  nul = "550 5.6.0 Error: message contains NUL",
  bad_syntax = "500 5.5.2 Error: bad syntax",
  cmd_too_long = "500 5.5.2 Error: command line too long",
  cmd_bare_lf = "500 5.5.2 Error: bare <LF> received",
  too_many_errors = "421 4.7.0 " .. gateway.HOSTNAME .. " Error: too many errors",
  timeout = "421 4.4.2 " .. gateway.HOSTNAME .. " Error: timeout exceeded",
  too_many_conns = "421 4.7.0 " .. gateway.HOSTNAME .. " Error: too many connections",
}

function M.relay_denied(addr)
  return "554 5.7.1 <" .. addr .. ">: Relay access denied"
end

function M.need_fqdn(addr)
  return "504 5.5.2 <" .. addr .. ">: Recipient address rejected: need fully-qualified address"
end

-- Connects, checks the banner and sends EHLO. Returns the client.
function M.session(gw, opts)
  opts = opts or {}
  local c = client.connect(opts.port or gw:port(), opts)
  assert(c.banner == M.R.banner, "banner: " .. tostring(c.banner))
  -- what the queue held when this session started (for assert_nothing_queued)
  c.queue_before = gw:spool_files("queue")
  if opts.helo ~= false then c:ehlo(opts.helo_name) end
  return c
end

-- MAIL + RCPT (all must be accepted).
function M.envelope(c, from, rcpts, mail_params)
  c:cmd("MAIL FROM:<" .. from .. ">" .. (mail_params and (" " .. mail_params) or ""),
    M.R.mail_ok)
  for _, r in ipairs(rcpts) do
    c:cmd("RCPT TO:<" .. r .. ">", M.R.rcpt_ok)
  end
end

-- DATA, then the raw message bytes followed by ".\r\n" (the message must end
-- in CRLF). Returns the final reply's code and text.
function M.data(c, raw)
  c:cmd("DATA", M.R.data)
  assert(c:send(raw .. ".\r\n"))
  return c:read_reply()
end

-- A full transaction that must be queued; returns the queue id.
function M.deliver(c, from, rcpts, raw)
  M.envelope(c, from, rcpts)
  local code, text = M.data(c, raw)
  local qid = text and text:match(M.R.queued)
  assert(code == 250 and qid, "not queued: " .. tostring(code) .. " " .. tostring(text))
  return qid
end

-- A simple CRLF message of the given body lines.
function M.message(subject, lines)
  local out = { "From: <sender@example.org>", "To: <user@example.test>",
    "Subject: " .. (subject or "test"), "" }
  for _, l in ipairs(lines or { "Hello." }) do out[#out + 1] = l end
  return table.concat(out, "\r\n") .. "\r\n"
end

-- Asserts that nothing was queued since client c connected (c made by
-- M.session; without c the queue must be empty) and that tmp/ is (or
-- becomes) empty.
function M.assert_nothing_queued(gw, c)
  local before = {}
  for _, id in ipairs(c and c.queue_before or {}) do before[id] = true end
  local new = {}
  for _, id in ipairs(gw:spool_files("queue")) do
    if not before[id] then new[#new + 1] = id end
  end
  assert(#new == 0, "queued although refused: " .. table.concat(new, " "))
  local empty = gateway.wait_for(function() return #gw:spool_files("tmp") == 0 end, 10)
  assert(empty, "tmp/ is not empty: " .. table.concat(gw:spool_files("tmp"), " "))
end

-- Runs `smtpgw -c INI ARGS` (a command, -t, ...) with a deadline; returns
-- its output (stdout and stderr) and exit code. Raises on a sanitizer report.
function M.smtpgw(ini, args)
  local out, code = gateway.run("timeout -k 5 60 " .. gateway.shell_quote(gateway.bin()) ..
    " -c " .. gateway.shell_quote(ini) .. " " .. args .. " </dev/null")
  assert(gateway.sanitizer_report(out) == nil, out)
  return out, code
end

-- The number of the first line of file `path` that holds `text` (plain).
function M.line_of(path, text)
  local n = 0
  for line in (gateway.read_file(path) .. "\n"):gmatch("(.-)\n") do
    n = n + 1
    if line:find(text, 1, true) then return n end
  end
  error("no line with " .. text .. " in " .. path, 2)
end

-- The non-empty lines of a text, as a list.
function M.lines(text)
  local t = {}
  for line in text:gmatch("[^\n]+") do t[#t + 1] = line end
  return t
end

-- Teardown for a describe block: closes every client, stops every gateway.
function M.cleanup()
  client.close_all()
  gateway.cleanup()
end

return M
