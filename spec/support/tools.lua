-- Runs the external SMTP clients the specs use: Python's smtplib (through
-- spec/support/smtp_send.py, always /usr/bin/python3) and swaks.

local json = require "dkjson"
local gateway = require "harness"

local M = {}

local q = gateway.shell_quote

-- Directory of this file, so the specs work from any working directory.
local function support_dir()
  local src = debug.getinfo(1, "S").source
  local dir = src:match("^@(.*)/[^/]*$")
  if not dir then return "spec/support" end
  if dir:sub(1, 1) ~= "/" then
    dir = require("lfs").currentdir() .. "/" .. dir
  end
  return dir
end

M.PYTHON = "/usr/bin/python3"
M.SUPPORT = support_dir()

-- Builds the smtp_send.py command line for opts (see M.smtplib).
local function smtplib_cmd(opts)
  local args = { M.PYTHON, M.SUPPORT .. "/smtp_send.py", "--port", tostring(opts.port) }
  local function add(...) for _, a in ipairs({ ... }) do args[#args + 1] = a end end
  if opts.host then add("--host", opts.host) end
  if opts.from then add("--from", opts.from) end
  for _, r in ipairs(opts.to or { "user@example.test" }) do add("--to", r) end
  if opts.ehlo then add("--ehlo", opts.ehlo) end
  if opts.count then add("--count", tostring(opts.count)) end
  if opts.smtputf8 then add("--smtputf8") end
  if opts.starttls then add("--starttls") end
  for _, o in ipairs(opts.mail_options or {}) do add("--mail-option", o) end
  if opts.msg then
    local path = os.tmpname()
    gateway.write_file(path, opts.msg)
    add("--msg-file", path)
    opts._msgfile = path
  end
  local quoted = {}
  for i, a in ipairs(args) do quoted[i] = q(a) end
  return table.concat(quoted, " ")
end

local function decode(out, code)
  local line = out:match("(%b{})%s*$")
  local obj = line and json.decode(line)
  if not obj then
    error("smtp_send.py printed no JSON (exit " .. tostring(code) .. "):\n" .. out, 3)
  end
  obj.exit = code
  obj.raw = out
  -- convenience: replies by command, in order
  obj.by = {}
  for _, st in ipairs(obj.steps) do
    obj.by[st.cmd] = obj.by[st.cmd] or {}
    table.insert(obj.by[st.cmd], st)
  end
  return obj
end

-- smtplib{ port=, host=, from=, to={...}, msg="...", ehlo=, count=n,
-- smtputf8=bool, mail_options={...}, starttls=bool } -> { steps =
-- {{cmd,code,text}...}, error = nil|string, exit = n, by = { data = {...},
-- ... }, tls_version = "TLSv1.3" (with starttls) }
function M.smtplib(opts)
  local cmd = smtplib_cmd(opts)
  local out, code = gateway.run("timeout -k 5 60 " .. cmd)
  if opts._msgfile then os.remove(opts._msgfile) end
  return decode(out, code)
end

-- Runs n smtplib clients at the same time (each with opts); returns the
-- list of results.
function M.smtplib_parallel(n, opts)
  local dir = gateway.mktempdir()
  local parts, msgfiles = {}, {}
  for i = 1, n do
    local o = {}
    for k, v in pairs(opts) do o[k] = v end
    parts[#parts + 1] = "timeout -k 5 60 " .. smtplib_cmd(o) .. " >" ..
      q(dir .. "/out." .. i) .. " 2>&1 &"
    msgfiles[#msgfiles + 1] = o._msgfile
  end
  gateway.run(table.concat(parts, "\n") .. "\nwait")
  local results = {}
  for i = 1, n do
    results[i] = decode(gateway.read_file(dir .. "/out." .. i) or "", 0)
  end
  for _, f in ipairs(msgfiles) do os.remove(f) end
  gateway.rm_rf(dir)
  return results
end

-- swaks{ port=, from=, to=, helo=, extra = {...args} } -> output, exit code,
-- queue id (from "250 2.0.0 Ok: queued as ID" in the transcript, or nil).
function M.swaks(opts)
  local args = { "swaks", "--server", "127.0.0.1:" .. tostring(opts.port),
    "--from", opts.from or "sender@example.org",
    "--to", opts.to or "user@example.test",
    "--helo", opts.helo or "swaks.example",
    "--timeout", "20" }
  for _, a in ipairs(opts.extra or {}) do args[#args + 1] = a end
  local quoted = {}
  for i, a in ipairs(args) do quoted[i] = q(a) end
  local out, code = gateway.run("timeout -k 5 60 " .. table.concat(quoted, " ") ..
    " </dev/null")
  local qid = out:match("250 2%.0%.0 Ok: queued as (%x+)")
  return out, code, qid
end

-- tls_session(port, steps, opts) runs spec/support/tls_client.py, a scripted
-- SMTP client that can STARTTLS (with SNI and a client certificate). steps
-- is a list such as { {op="cmd", line="EHLO x"}, {op="send", data="..."},
-- {op="read"}, {op="tls", sni=, cert=, key=, ca=}, {op="closed"} } (see the
-- script). Returns { banner = {code,text,lines}, steps = {...}, error =
-- nil|string, exit = n }. opts.host, opts.timeout (seconds per read).
function M.tls_session(port, steps, opts)
  opts = opts or {}
  local script = os.tmpname()
  gateway.write_file(script, json.encode(steps))
  local args = { M.PYTHON, M.SUPPORT .. "/tls_client.py", "--port", tostring(port),
    "--host", opts.host or "127.0.0.1", "--script", script,
    "--timeout", tostring(opts.timeout or 10) }
  local quoted = {}
  for i, a in ipairs(args) do quoted[i] = q(a) end
  local out, code = gateway.run("timeout -k 5 60 " .. table.concat(quoted, " ") ..
    " </dev/null")
  os.remove(script)
  local line = out:match("(%b{})%s*$")
  local obj = line and json.decode(line)
  if not obj then
    error("tls_client.py printed no JSON (exit " .. tostring(code) .. "):\n" .. out, 2)
  end
  if obj.error == json.null then obj.error = nil end
  obj.exit = code
  obj.raw = out
  return obj
end

return M
