-- Shared steps for the policy specs (spec/integration/policy_spec.lua,
-- reload_spec.lua): where the stock scripts are, policy scripts written
-- into a test's own temporary directory, a gateway started on such a
-- script, TLS sessions through spec/support/tls_client.py, the policy log
-- lines of the gateway, and a reaped background process for load clients.
--
--   local ps = require "policy_support"
--   local gw, script = ps.start_with_script(ps.lines{ "return { ... }" },
--     { sections = { ["domain:partner.example"] = { tls = "verify" } } })
--   ps.stock("try")                       -- /abs/path/policies/try.lua
--   ps.line_of(text, "@marker")           -- the line holding the marker

local lfs = require "lfs"
local gateway = require "harness"
local tools = require "tools"

local M = {}

local q = gateway.shell_quote

-- ------------------------------------------------------------------ paths

-- The repository root: two levels above this file (spec/support/).
local function repo_root()
  local src = debug.getinfo(1, "S").source
  local dir = src:match("^@(.*)/spec/support/[^/]*$")
  if not dir or dir == "" then
    dir = os.getenv("PWD") or lfs.currentdir()
  elseif dir:sub(1, 1) ~= "/" then
    dir = lfs.currentdir() .. "/" .. dir
  end
  return dir
end

M.ROOT = repo_root()

-- Absolute path of a stock script: stock("try") -> ROOT/policies/try.lua.
function M.stock(name)
  return M.ROOT .. "/policies/" .. name .. ".lua"
end

-- ------------------------------------------------------------------ text

-- A Lua pattern matching s literally.
function M.esc(s)
  return (s:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0"))
end

-- Joins lines with "\n" (and a final "\n").
function M.lines(list)
  return table.concat(list, "\n") .. "\n"
end

-- The number of the (first) line of text holding `marker` (plain text);
-- raises when there is none.
function M.line_of(text, marker)
  local n = 0
  for line in (text .. "\n"):gmatch("(.-)\n") do
    n = n + 1
    if line:find(marker, 1, true) then return n end
  end
  error("no line holds " .. string.format("%q", marker), 2)
end

-- Writes a policy script atomically (temporary name, then rename), so a
-- reload never reads half a file.
function M.write_script(path, text)
  local tmp = path .. ".tmp"
  gateway.write_file(tmp, text)
  assert(os.rename(tmp, path))
  return path
end

-- ------------------------------------------------------------------ gateways

-- start_with_script(text, opts): a gateway whose [policy] script is `text`,
-- written as DIR/policy.lua (or opts.name) in the gateway's own temporary
-- directory. opts.sections / opts.ini_extra are as for harness.start; the
-- policy section gets script (and opts.policy's keys). Extra files for the
-- script's folder: opts.files = { ["name.lua"] = text }. Returns gw, path.
function M.start_with_script(text, opts)
  opts = opts or {}
  local dir = gateway.mktempdir()
  local path = dir .. "/" .. (opts.name or "policy.lua")
  M.write_script(path, text)
  for name, body in pairs(opts.files or {}) do
    gateway.write_file(dir .. "/" .. name, body)
  end
  local sections = {}
  for k, v in pairs(opts.sections or {}) do sections[k] = v end
  local policy = { script = path }
  for k, v in pairs(opts.policy or {}) do policy[k] = v end
  sections.policy = policy
  local gw = gateway.start({ dir = dir, ini_extra = opts.ini_extra, sections = sections })
  return gw, path
end

-- start_stock(name, opts): a gateway running policies/NAME.lua.
function M.start_stock(name, opts)
  opts = opts or {}
  local sections = {}
  for k, v in pairs(opts.sections or {}) do sections[k] = v end
  sections.policy = { script = M.stock(name) }
  for k, v in pairs(opts.policy or {}) do sections.policy[k] = v end
  return gateway.start({ ini_extra = opts.ini_extra, sections = sections })
end

-- check_script(dir, text, ini_extra, sections): `smtpgw -t` on a script
-- written as DIR/policy.lua, with an ini whose [policy] script is it (and
-- ini_extra / sections as for harness.ini_text). Returns stdout, stderr,
-- exit code, the script's path and the seconds -t took.
function M.check_script(dir, text, ini_extra, sections)
  local script = dir .. "/policy.lua"
  gateway.write_file(script, text)
  local all = { policy = { script = script } }
  for k, v in pairs(sections or {}) do
    if k == "policy" then
      for pk, pv in pairs(v) do all.policy[pk] = pv end
    else
      all[k] = v
    end
  end
  local ini = dir .. "/gateway.ini"
  gateway.write_file(ini, gateway.ini_text(ini_extra, all))
  local t0 = gateway.now()
  local out, err, code = M.smtpgw("-c " .. q(ini) .. " -t")
  return out, err, code, script, gateway.now() - t0
end

-- Runs `smtpgw ARGS` (args already quoted); returns stdout, stderr, exit code.
function M.smtpgw(args)
  local errfile = os.tmpname()
  local out, code = gateway.run("timeout -k 5 30 " .. q(gateway.bin()) .. " " .. args ..
    " 2>" .. q(errfile) .. " </dev/null")
  local err = gateway.read_file(errfile) or ""
  os.remove(errfile)
  return out, err, code
end

-- ------------------------------------------------------------------ sessions

local function cmd(line) return { op = "cmd", line = line } end
M.cmd = cmd

-- EHLO, STARTTLS, the handshake (tls: sni, cert, key, ca) and EHLO again.
function M.tls_steps(tls, helo_before, helo_after)
  local t = { op = "tls" }
  for k, v in pairs(tls or {}) do t[k] = v end
  return { cmd("EHLO " .. (helo_before or "client.example")), cmd("STARTTLS"), t,
    cmd("EHLO " .. (helo_after or "client.example")) }
end

-- The replies of tls_steps: want-list entries (see session).
M.TLS_WANT = { "^250%-", "220 2.0.0 Ready to start TLS", true, "^250%-" }

function M.concat(...)
  local out = {}
  for _, list in ipairs({ ... }) do
    for _, v in ipairs(list) do out[#out + 1] = v end
  end
  return out
end

-- Runs the steps of tls_client.py against port and checks the replies:
-- want[i] is the exact text of step i, a Lua pattern (starting with "^"),
-- or true (not checked). Every step must have run. Returns the result.
function M.session(port, steps, want, banner)
  local r = tools.tls_session(port, steps)
  local ctx = "\n-- tls_client.py output:\n" .. r.raw
  if banner ~= false then
    assert(r.banner and r.banner.text == (banner or
      "220 " .. gateway.HOSTNAME .. " ESMTP smtpgw"), "banner" .. ctx)
  end
  for i, w in ipairs(want) do
    local st = r.steps[i]
    assert(st, "step " .. i .. " did not run (" .. tostring(r.error) .. ")" .. ctx)
    if type(w) == "string" then
      local ok
      if w:sub(1, 1) == "^" then ok = st.text and st.text:find(w) else ok = st.text == w end
      assert(ok, string.format("step %d (%s): expected %q, got %q%s", i,
        st.line or st.op, w, tostring(st.text), ctx))
    end
  end
  assert(r.error == nil, "tls_client.py: " .. tostring(r.error) .. ctx)
  assert(#r.steps == #steps, "not every step ran" .. ctx)
  return r
end

-- ------------------------------------------------------------------ logs

-- Undoes the escaping of a quoted log value (\" \\ \xNN).
function M.unescape(s)
  local out, i = {}, 1
  while i <= #s do
    local c = s:sub(i, i)
    if c == "\\" then
      local n = s:sub(i + 1, i + 1)
      if n == "x" then
        out[#out + 1] = string.char(tonumber(s:sub(i + 2, i + 3), 16))
        i = i + 4
      else
        out[#out + 1] = n
        i = i + 2
      end
    else
      out[#out + 1] = c
      i = i + 1
    end
  end
  return table.concat(out)
end

-- ps.explain_table(out): explain's output as { label = the rest of its
-- line, runs of blanks made one space }.
function M.explain_table(out)
  local t = {}
  for line in out:gmatch("[^\n]+") do
    local label, rest = line:match("^(%S+)%s+(.-)%s*$")
    if label then t[label] = rest:gsub("%s+", " ") end
  end
  return t
end

-- The value of key in a log line (unquoted and unescaped), or nil.
function M.log_value(line, key)
  local _, e = line:find(" " .. key .. "=\"", 1, true)
  if e then
    local i = e + 1
    while i <= #line do
      local c = line:sub(i, i)
      if c == "\\" then
        i = i + 2
      elseif c == "\"" then
        return M.unescape(line:sub(e + 1, i - 1))
      else
        i = i + 1
      end
    end
    return nil
  end
  return line:match(" " .. key .. "=([^%s\"]+)")
end

-- The session id the gateway gave the connection from 127.0.0.1:port.
function M.sid_of_port(gw, port, ip)
  return tonumber(gw:wait_log("event=connect sid=(%d+) client=" ..
    M.esc((ip or "127.0.0.1") .. ":" .. port) .. "\n"))
end

-- ------------------------------------------------------------------ processes

-- Background processes: see procs.lua (reaped by their own wrapper).
local procs = require "procs"
M.spawn = procs.start
M.stop_all = procs.stop_all

-- pki_suite(): in the describe block that calls it, a test PKI
-- (tls_support.make_pki) made in setup and removed in teardown, where
-- every client, background process and gateway is stopped too; returns a
-- table whose .pki is the PKI while the tests run.
function M.pki_suite()
  local tlss = require "tls_support"
  local client = require "smtp_client"
  local h = require "helpers"
  -- busted's setup, teardown and after_each live in the spec's environment
  local env = getfenv(2)
  local setup, teardown, after_each = env.setup, env.teardown, env.after_each
  local suite = {}
  setup(function()
    suite.root = gateway.mktempdir()
    suite.pki = tlss.make_pki(suite.root .. "/pki")
  end)
  teardown(function()
    client.close_all()
    M.stop_all()
    h.cleanup()
    gateway.rm_rf(suite.root)
  end)
  after_each(client.close_all)
  return suite
end

return M
