-- The policy engine on the wire (README "Policies": stock scripts, hooks,
-- verdicts, errors, budget, sandbox, ctx; "Command line": -t and explain).
-- Hot reload is in reload_spec.lua.
--
-- Every policy script a test needs is written into that test's own
-- temporary directory (spec/support/policy_support.lua); the stock scripts
-- are used from policies/ by absolute path. TLS sessions are driven by
-- spec/support/tls_client.py, plaintext ones by spec/support/smtp_client.lua.

local gateway = require "harness"
local client = require "smtp_client"
local h = require "helpers"
local ps = require "policy_support"
local testing = require "gateway.testing"
local R = h.R

local HOST = gateway.HOSTNAME
local q = gateway.shell_quote
local cmd = ps.cmd
local esc = ps.esc

local MUST_TLS = "530 5.7.0 Must issue a STARTTLS command first"
local POLICY_FAILURE = "451 4.3.0 Error: policy failure"
local POLICY_FAILURE_421 = "421 4.3.0 " .. HOST .. " Error: policy failure"

local function need_cert(addr)
  return "550 5.7.1 <" .. addr .. ">: Recipient address rejected: " ..
    "TLS with a verified client certificate required"
end

-- MAIL, the RCPTs and DATA with a message: steps and wanted replies.
local function tx(rcpts, rcpt_want, subject)
  local steps = { cmd("MAIL FROM:<sender@example.org>") }
  local want = { R.mail_ok }
  for i, r in ipairs(rcpts) do
    steps[#steps + 1] = cmd("RCPT TO:<" .. r .. ">")
    want[#want + 1] = rcpt_want[i]
  end
  steps[#steps + 1] = cmd("DATA")
  steps[#steps + 1] = { op = "send", data = h.message(subject) .. ".\r\n" }
  steps[#steps + 1] = { op = "read" }
  want[#want + 1] = R.data
  want[#want + 1] = true
  want[#want + 1] = R.queued
  return steps, want
end

local function qid_of(r)
  local text = r.steps[#r.steps].text
  return (assert(text and text:match(R.queued), "not queued: " .. tostring(text)))
end

-- The envelope recipients of a queued message.
local function queued_rcpts(gw, qid)
  local env = gateway.parse_queue_file(assert(gw:queue_file(qid), "no queue file " .. qid))
  return env.rcpt
end

local function ehlo_has_starttls(lines)
  for _, l in ipairs(lines) do
    if l == "STARTTLS" then return true end
  end
  return false
end

-- The policy_error log lines of session sid (all when sid is nil).
local function policy_errors(gw, sid)
  local out = {}
  for _, line in ipairs(gw:log_lines("event=policy_error")) do
    if not sid or line:find(" sid=" .. sid .. " ", 1, true) then out[#out + 1] = line end
  end
  return out
end

-- Waits for the n-th policy_error line and returns it.
local function nth_policy_error(gw, n)
  local lines = gw:wait_log_count("event=policy_error", n)
  return lines[n]
end

describe("policies", function()
  local suite = ps.pki_suite() -- suite.pki: the test PKI

  -- ---------------------------------------------------- stock scripts
  describe("stock script try.lua", function()
    local gw
    setup(function() gw = ps.start_stock("try") end)
    teardown(function() if gw then gw:stop() end end)

    it("offers STARTTLS and queues a plaintext transaction", function()
      local c = h.session(gw, { helo = false })
      assert.is_true(ehlo_has_starttls(c:ehlo("client.example")))
      local qid = h.deliver(c, "sender@example.org", { "user@example.test" }, h.message("try"))
      assert.are.same({ "<user@example.test>" }, queued_rcpts(gw, qid))
      assert.truthy(gw:log():find("policy " .. esc(ps.stock("try"))), gw:log())
    end)
  end)

  describe("stock script require.lua", function()
    local gw
    setup(function() gw = ps.start_stock("require") end)
    teardown(function() if gw then gw:stop() end end)

    it("answers MAIL in plaintext 530 5.7.0 and queues after STARTTLS and EHLO", function()
      local c = h.session(gw, { helo = false })
      assert.is_true(ehlo_has_starttls(c:ehlo("client.example")))
      c:cmd("MAIL FROM:<sender@example.org>", MUST_TLS)
      c:cmd("RCPT TO:<user@example.test>", MUST_TLS)
      c:cmd("DATA", MUST_TLS)
      c:cmd("QUIT", R.bye)
      h.assert_nothing_queued(gw, c)

      local steps, want = tx({ "user@example.test" }, { R.rcpt_ok }, "require")
      local r = ps.session(gw:port(), ps.concat(ps.tls_steps(), steps),
        ps.concat(ps.TLS_WANT, want))
      assert.are.same({ "<user@example.test>" }, queued_rcpts(gw, qid_of(r)))
      -- after TLS, STARTTLS is no longer offered
      local lines = r.steps[4].lines
      for i = 2, #lines do lines[i] = lines[i]:sub(5) end
      assert.is_false(ehlo_has_starttls(lines), r.steps[4].text)
    end)
  end)

  describe("stock script require_verify.lua", function()
    -- tls_in = verify: the gateway asks for client certificates by itself
    -- (ask_client_cert = auto)
    local gw
    setup(function()
      gw = ps.start_stock("require_verify", {
        ini_extra = { relay_domains = "example.test, partner.example" },
        sections = {
          ["domain:partner.example"] = { tls = "verify", tls_in = "verify" },
          tls = { ca_file = suite.pki.ca.crt },
        },
      })
    end)
    teardown(function() if gw then gw:stop() end end)

    it("answers MAIL in plaintext 530 5.7.0 (inbound level encrypt)", function()
      local c = h.session(gw)
      c:cmd("MAIL FROM:<sender@example.org>", MUST_TLS)
      c:cmd("RCPT TO:<user@partner.example>", MUST_TLS)
    end)

    it("over TLS without a client certificate refuses the verify domain 550 5.7.1, accepts the others", function()
      local steps, want = tx({ "user@partner.example", "user@example.test", "user@other.example" },
        { need_cert("user@partner.example"), R.rcpt_ok, R.rcpt_ok }, "no cert")
      local r = ps.session(gw:port(), ps.concat(ps.tls_steps(), steps),
        ps.concat(ps.TLS_WANT, want))
      assert.are.same({ "<user@example.test>", "<user@other.example>" }, queued_rcpts(gw, qid_of(r)))
    end)

    it("over TLS with an untrusted client certificate refuses the verify domain 550 5.7.1", function()
      local steps, want = tx({ "user@partner.example", "user@example.test" },
        { need_cert("user@partner.example"), R.rcpt_ok }, "rogue")
      local r = ps.session(gw:port(), ps.concat(
        ps.tls_steps({ cert = suite.pki.rogue.crt, key = suite.pki.rogue.key }), steps),
        ps.concat(ps.TLS_WANT, want))
      assert.are.same({ "<user@example.test>" }, queued_rcpts(gw, qid_of(r)))
    end)

    it("over TLS with a trusted client certificate accepts the verify domain", function()
      local steps, want = tx({ "user@partner.example" }, { R.rcpt_ok }, "trusted")
      local r = ps.session(gw:port(), ps.concat(
        ps.tls_steps({ cert = suite.pki.client.crt, key = suite.pki.client.key }), steps),
        ps.concat(ps.TLS_WANT, want))
      local qid = qid_of(r)
      assert.are.same({ "<user@partner.example>" }, queued_rcpts(gw, qid))
      local sid = gw:wait_log("event=queued sid=(%d+) qid=" .. qid .. " ")
      local tls_line = gw:wait_log("([^\n]*event=tls sid=" .. sid .. " [^\n]*)")
      assert.truthy(tls_line:find(" peer=Trusted", 1, true), tls_line)
    end)
  end)

  -- ---------------------------------------------------- [domain:...] overrides
  describe("per-domain levels with try.lua", function()
    local gw
    setup(function()
      gw = ps.start_stock("try", {
        ini_extra = { relay_domains = "example.test, partner.example, .sub.example" },
        sections = {
          ["domain:partner.example"] = { tls = "verify", tls_in = "encrypt" },
          ["domain:.sub.example"] = { tls_in = "encrypt" },
        },
      })
    end)
    teardown(function() if gw then gw:stop() end end)

    it("refuses a tls_in = encrypt domain in plaintext 530 5.7.0 and accepts the others", function()
      local c = h.session(gw)
      c:cmd("MAIL FROM:<sender@example.org>", R.mail_ok)
      c:cmd("RCPT TO:<user@partner.example>", MUST_TLS)
      c:cmd("RCPT TO:<User@PARTNER.Example>", MUST_TLS)
      c:cmd("RCPT TO:<user@example.test>", R.rcpt_ok)
      c:cmd("RCPT TO:<user@other.example>", R.rcpt_ok)
      local code, text = h.data(c, h.message("override"))
      local qid = text and text:match(R.queued)
      assert(code == 250 and qid, tostring(text))
      assert.are.same({ "<user@example.test>", "<user@other.example>" }, queued_rcpts(gw, qid))
    end)

    it("[domain:.sub.example] covers a.sub.example and x.y.sub.example, not sub.example", function()
      local c = h.session(gw)
      c:cmd("MAIL FROM:<sender@example.org>", R.mail_ok)
      c:cmd("RCPT TO:<user@a.sub.example>", MUST_TLS)
      c:cmd("RCPT TO:<user@x.y.sub.example>", MUST_TLS)
      c:cmd("RCPT TO:<user@sub.example>", R.rcpt_ok)
      c:cmd("RCPT TO:<user@notsub.example>", R.rcpt_ok)
    end)

    it("accepts the tls_in = encrypt domains over TLS", function()
      local steps, want = tx({ "user@partner.example", "user@a.sub.example" },
        { R.rcpt_ok, R.rcpt_ok }, "override tls")
      local r = ps.session(gw:port(), ps.concat(ps.tls_steps(), steps),
        ps.concat(ps.TLS_WANT, want))
      assert.are.same({ "<user@partner.example>", "<user@a.sub.example>" },
        queued_rcpts(gw, qid_of(r)))
    end)
  end)

  -- ---------------------------------------------------- errors
  describe("a failing script", function()
    local SCRIPT = ps.lines {
      "local gateway = require 'gateway'",
      "local policy = {}",
      "function policy.server_tls(ctx)",
      "  if ctx.client.ip == '127.0.0.2' then",
      "    error('server_tls exploded') -- @tls_error",
      "  elseif ctx.client.ip == '127.0.0.3' then",
      "    return 'maybe'",
      "  end",
      "  return 'may'",
      "end",
      "function policy.connect(ctx)",
      "  if ctx.client.ip == '127.0.0.4' then",
      "    error('connect exploded') -- @connect_error",
      "  end",
      "  return gateway.accept()",
      "end",
      "function policy.mail(ctx)",
      "  if ctx.sender == 'boom@example.org' then",
      "    error('mail exploded') -- @mail_error",
      "  end",
      "  return 'accept'",
      "end",
      "function policy.rcpt(ctx)",
      "  local r = ctx.recipient",
      "  if r == 'index@example.test' then",
      "    return ctx.nothing.here -- @index_error",
      "  elseif r == 'maybe@example.test' then",
      "    return 'maybe'",
      "  elseif r == 'code250@example.test' then",
      "    return { action = 'reject', code = 250, text = '2.0.0 fine' }",
      "  elseif r == 'twolines@example.test' then",
      "    return { action = 'reject', code = 550, text = 'one\\ntwo' }",
      "  elseif r == 'tempfail5@example.test' then",
      "    return { action = 'tempfail', code = 550, text = '5.0.0 no' }",
      "  elseif r == 'number@example.test' then",
      "    return 42",
      "  elseif r == 'badcode@example.test' then",
      "    local v = gateway.reject(250, '2.0.0 not a refusal') -- @badcode",
      "    return v",
      "  elseif r == 'badcode-tail@example.test' then",
      "    return gateway.reject(250, '2.0.0 not a refusal')",
      "  elseif r == 'tableerror@example.test' then",
      "    error({ 'not a string' })",
      "  elseif r == 'refused@example.test' then",
      "    return gateway.reject(550, '5.7.1 refused by the policy')",
      "  elseif r == 'later@example.test' then",
      "    return gateway.tempfail(450, '4.7.1 try again later')",
      "  end",
      "  return 'accept'",
      "end",
      "return policy",
    }
    local gw, script

    setup(function() gw, script = ps.start_with_script(SCRIPT) end)
    teardown(function() if gw then gw:stop() end end)

    it("answers an error raised in mail 451 4.3.0 and logs policy_error with FILE:LINE", function()
      local before = #policy_errors(gw)
      local c = h.session(gw)
      c:cmd("MAIL FROM:<boom@example.org>", POLICY_FAILURE)
      local line = nth_policy_error(gw, before + 1)
      local want = script .. ":" .. ps.line_of(SCRIPT, "@mail_error") .. ": mail exploded"
      assert.are.equal(want, ps.log_value(line, "reason"), line)
      assert.truthy(line:find(" hook=mail ", 1, true), line)
      assert.truthy(line:find(" client=127.0.0.1 ", 1, true), line)
      -- the session goes on
      h.deliver(c, "sender@example.org", { "user@example.test" }, h.message("after error"))
    end)

    it("answers a runtime error in rcpt 451 4.3.0 with FILE:LINE of the faulty line", function()
      local before = #policy_errors(gw)
      local c = h.session(gw)
      c:cmd("MAIL FROM:<sender@example.org>", R.mail_ok)
      c:cmd("RCPT TO:<index@example.test>", POLICY_FAILURE)
      local reason = ps.log_value(nth_policy_error(gw, before + 1), "reason")
      local prefix = script .. ":" .. ps.line_of(SCRIPT, "@index_error") .. ": "
      assert.are.equal(prefix, reason:sub(1, #prefix), reason)
      assert.truthy(reason:find("attempt to index", 1, true), reason)
      c:cmd("RCPT TO:<user@example.test>", R.rcpt_ok)
    end)

    it("answers malformed results 451 4.3.0 (string, number, code 250, two lines, 5xx tempfail, bad gateway.reject)",
      function()
      local c = h.session(gw)
      c:cmd("MAIL FROM:<sender@example.org>", R.mail_ok)
      local cases = {
        { "maybe@example.test", "rcpt returned a string, not a verdict" },
        { "number@example.test", "rcpt returned a number, not a verdict" },
        { "code250@example.test", "rcpt returned a bad verdict (action \"reject\", code 250)" },
        { "twolines@example.test", "rcpt returned a reject without a one-line text" },
        { "tempfail5@example.test", "rcpt returned a bad verdict (action \"tempfail\", code 550)" },
      }
      for _, case in ipairs(cases) do
        local before = #policy_errors(gw)
        c:cmd("RCPT TO:<" .. case[1] .. ">", POLICY_FAILURE)
        local line = nth_policy_error(gw, before + 1)
        assert.are.equal(script .. ": " .. case[2], ps.log_value(line, "reason"), line)
        assert.truthy(line:find(" hook=rcpt ", 1, true), line)
      end
      -- a verdict builder of lua/gateway used wrongly: the error names the
      -- script's line, not the module's
      local before = #policy_errors(gw)
      c:cmd("RCPT TO:<badcode@example.test>", POLICY_FAILURE)
      local reason = ps.log_value(nth_policy_error(gw, before + 1), "reason")
      local prefix = script .. ":" .. ps.line_of(SCRIPT, "@badcode") .. ": gateway.reject: "
      assert.are.equal(prefix, reason:sub(1, #prefix), reason)
      -- the same in a tail call: LuaJIT keeps no frame for the caller, so
      -- Lua knows no line; the engine names the script and the hook
      before = #policy_errors(gw)
      c:cmd("RCPT TO:<badcode-tail@example.test>", POLICY_FAILURE)
      reason = ps.log_value(nth_policy_error(gw, before + 1), "reason")
      local tail_prefix = script .. ": rcpt: gateway.reject: code must be"
      assert.are.equal(tail_prefix, reason:sub(1, #tail_prefix), reason)
      -- an error value that is no string is a policy failure too
      before = #policy_errors(gw)
      c:cmd("RCPT TO:<tableerror@example.test>", POLICY_FAILURE)
      assert.truthy(nth_policy_error(gw, before + 1):find(" hook=rcpt ", 1, true))
      -- well-formed verdicts still work in the same session
      c:cmd("RCPT TO:<refused@example.test>", "550 5.7.1 refused by the policy")
      c:cmd("RCPT TO:<later@example.test>", "450 4.7.1 try again later")
      c:cmd("RCPT TO:<user@example.test>", R.rcpt_ok)
      local code, text = h.data(c, h.message("verdicts"))
      assert(code == 250 and text:match(R.queued), tostring(text))
    end)

    it("answers an error in server_tls 421 4.3.0 at connect and closes", function()
      local before = #policy_errors(gw)
      local c = client.connect(gw:port(), { bind = "127.0.0.2" })
      assert.are.equal(POLICY_FAILURE_421, c.banner)
      assert.is_true(c:closed())
      local line = nth_policy_error(gw, before + 1)
      assert.are.equal(script .. ":" .. ps.line_of(SCRIPT, "@tls_error") .. ": server_tls exploded",
        ps.log_value(line, "reason"), line)
      assert.truthy(line:find(" hook=server_tls ", 1, true), line)
      assert.truthy(line:find(" client=127.0.0.2 ", 1, true), line)
    end)

    it("answers a level that is not one (\"maybe\") 421 4.3.0 at connect and closes", function()
      local before = #policy_errors(gw)
      local c = client.connect(gw:port(), { bind = "127.0.0.3" })
      assert.are.equal(POLICY_FAILURE_421, c.banner)
      assert.is_true(c:closed())
      local line = nth_policy_error(gw, before + 1)
      assert.are.equal(script .. ": server_tls returned \"maybe\", not a level (none, may, encrypt, verify)",
        ps.log_value(line, "reason"), line)
    end)

    it("answers an error in connect 421 4.3.0 and closes", function()
      local before = #policy_errors(gw)
      local c = client.connect(gw:port(), { bind = "127.0.0.4" })
      assert.are.equal(POLICY_FAILURE_421, c.banner)
      assert.is_true(c:closed())
      local line = nth_policy_error(gw, before + 1)
      assert.are.equal(script .. ":" .. ps.line_of(SCRIPT, "@connect_error") .. ": connect exploded",
        ps.log_value(line, "reason"), line)
      assert.truthy(line:find(" hook=connect ", 1, true), line)
      -- other clients are served as before
      local ok = h.session(gw)
      h.deliver(ok, "sender@example.org", { "user@example.test" }, h.message("still serving"))
      assert.is_true(gw:alive())
    end)
  end)

  -- ---------------------------------------------------- budget
  local LOOP_SCRIPT = ps.lines {
    "local policy = {}",
    "function policy.rcpt(ctx)",
    "  if ctx.recipient == 'loop@example.test' then",
    "    while true do end -- @loop",
    "  elseif ctx.recipient == 'swallow@example.test' then",
    "    while true do pcall(function() while true do end end) end -- @swallow",
    "  elseif ctx.recipient == 'xpcall@example.test' then",
    "    local n = 0",
    "    while true do n = n + 1; xpcall(function() while true do end end, function() return n end) end -- @xpcall",
    "  end",
    "  return 'accept'",
    "end",
    "return policy",
  }

  -- RCPT to addr must be 451 within a few seconds (the budget is far
  -- smaller), with a budget reason naming the looping line; the session
  -- and the gateway go on.
  local function loops_to_451(gw, script, addr, marker, which)
    local before = #policy_errors(gw)
    local c = h.session(gw)
    c:cmd("MAIL FROM:<sender@example.org>", R.mail_ok)
    local t0 = gateway.now()
    c:cmd("RCPT TO:<" .. addr .. ">", POLICY_FAILURE, 10)
    local elapsed = gateway.now() - t0
    assert(elapsed < 5, "451 came only after " .. elapsed .. " s")
    local line = nth_policy_error(gw, before + 1)
    local prefix = script .. ":" .. ps.line_of(LOOP_SCRIPT, marker) .. ": "
    local want_reason = prefix .. "rcpt budget exceeded (" .. which .. ")"
    assert.are.equal(want_reason, ps.log_value(line, "reason"), line)
    -- the next command of the same session works, and so does a new session
    c:cmd("RCPT TO:<user@example.test>", R.rcpt_ok)
    local code, text = h.data(c, h.message("after the loop"))
    assert(code == 250 and text:match(R.queued), tostring(text))
    local c2 = h.session(gw)
    h.deliver(c2, "sender@example.org", { "user@example.test" }, h.message("new session"))
  end

  describe("an endless loop under max_time = 200ms", function()
    local gw, script
    setup(function()
      gw, script = ps.start_with_script(LOOP_SCRIPT,
        { policy = { max_time = "200ms", max_instructions = 1000000000 } })
    end)
    teardown(function() if gw then gw:stop() end end)

    it("is 451 4.3.0 and logs the time budget with FILE:LINE", function()
      loops_to_451(gw, script, "loop@example.test", "@loop", "max_time")
    end)

    it("is 451 4.3.0 even when the script swallows the budget error with pcall", function()
      loops_to_451(gw, script, "swallow@example.test", "@swallow", "max_time")
    end)

    it("is 451 4.3.0 even when the script swallows it with xpcall and a handler", function()
      loops_to_451(gw, script, "xpcall@example.test", "@xpcall", "max_time")
    end)
  end)

  describe("an endless loop under max_instructions = 100000", function()
    local gw, script
    setup(function()
      gw, script = ps.start_with_script(LOOP_SCRIPT,
        { policy = { max_time = "10s", max_instructions = 100000 } })
    end)
    teardown(function() if gw then gw:stop() end end)

    it("is 451 4.3.0 and logs the instruction budget with FILE:LINE", function()
      loops_to_451(gw, script, "loop@example.test", "@loop", "max_instructions")
    end)

    it("is 451 4.3.0 when swallowed with pcall", function()
      loops_to_451(gw, script, "swallow@example.test", "@swallow", "max_instructions")
    end)
  end)

  -- ---------------------------------------------------- sandbox
  describe("the sandbox", function()
    local SCRIPT = ps.lines {
      "local helper = require 'helper' -- a module in the script's own folder",
      "local policy = {}",
      "function policy.rcpt(ctx)",
      "  local what = ctx.recipient:match('^(.-)@')",
      "  if what == 'io' then",
      "    return io.open('/etc/passwd') -- @io",
      "  elseif what == 'os' then",
      "    return os.time() -- @os",
      "  elseif what == 'require-os' then",
      "    local m = require('os') -- @require_os",
      "    return m",
      "  elseif what == 'require-socket' then",
      "    local m = require('socket') -- @require_socket",
      "    return m",
      "  elseif what == 'loadstring' then",
      "    return loadstring('return \"accept\"')() -- @loadstring",
      "  elseif what == 'dofile' then",
      "    local v = dofile('/etc/passwd') -- @dofile",
      "    return v",
      "  elseif what == 'coroutine' then",
      "    return coroutine.create(function() end) -- @coroutine",
      "  elseif what == 'debug' then",
      "    return debug.getinfo(1) -- @debug",
      "  elseif what == 'parent' then",
      "    local m = require('..secret') -- @parent",
      "    return m",
      "  elseif what == 'helper' then",
      "    return helper.verdict(ctx)",
      "  end",
      "  return 'accept'",
      "end",
      "return policy",
    }
    local HELPER = ps.lines {
      "local gateway = require 'gateway'",
      "local M = {}",
      "function M.verdict(ctx)",
      "  return gateway.reject(550, '5.7.1 the helper module refuses ' .. ctx.recipient)",
      "end",
      "return M",
    }
    local gw, script

    setup(function()
      gw, script = ps.start_with_script(SCRIPT, { files = { ["helper.lua"] = HELPER } })
    end)
    teardown(function() if gw then gw:stop() end end)

    it("require finds a module in the script's own folder", function()
      local c = h.session(gw)
      c:cmd("MAIL FROM:<sender@example.org>", R.mail_ok)
      c:cmd("RCPT TO:<helper@example.test>",
        "550 5.7.1 the helper module refuses helper@example.test")
      c:cmd("RCPT TO:<user@example.test>", R.rcpt_ok)
    end)

    it("io, os, loadstring, dofile, coroutine, debug, require 'os'/'socket' are 451 4.3.0 with FILE:LINE", function()
      local c = h.session(gw)
      c:cmd("MAIL FROM:<sender@example.org>", R.mail_ok)
      local cases = {
        { "io", "@io", "attempt to index global 'io' (a nil value)" },
        { "os", "@os", "attempt to index global 'os' (a nil value)" },
        { "loadstring", "@loadstring", "attempt to call global 'loadstring' (a nil value)" },
        { "dofile", "@dofile", "attempt to call global 'dofile' (a nil value)" },
        { "coroutine", "@coroutine", "attempt to index global 'coroutine' (a nil value)" },
        { "debug", "@debug", "attempt to index global 'debug' (a nil value)" },
        { "require-os", "@require_os", "module 'os' not found in " .. ps.ROOT .. "/lua or " .. gw:dir() },
        { "require-socket", "@require_socket",
          "module 'socket' not found in " .. ps.ROOT .. "/lua or " .. gw:dir() },
        { "parent", "@parent", "bad module name '..secret'" },
      }
      for _, case in ipairs(cases) do
        local before = #policy_errors(gw)
        c:cmd("RCPT TO:<" .. case[1] .. "@example.test>", POLICY_FAILURE)
        local reason = ps.log_value(nth_policy_error(gw, before + 1), "reason")
        assert.are.equal(script .. ":" .. ps.line_of(SCRIPT, case[2]) .. ": " .. case[3], reason)
      end
      c:cmd("RCPT TO:<user@example.test>", R.rcpt_ok)
      local code, text = h.data(c, h.message("sandbox"))
      assert(code == 250 and text:match(R.queued), tostring(text))
    end)

    it("a script that uses os while loading is refused by -t with FILE:LINE", function()
      local dir = gateway.mktempdir()
      finally(function() gateway.rm_rf(dir) end)
      local bad = dir .. "/bad.lua"
      gateway.write_file(bad, "local started = os.time()\nreturn { rcpt = function() return 'accept' end }\n")
      gateway.write_file(dir .. "/gateway.ini", gateway.ini_text(nil, { policy = { script = bad } }))
      local out, err, code = ps.smtpgw("-c " .. q(dir .. "/gateway.ini") .. " -t")
      assert.are.equal(1, code, out .. err)
      assert.truthy(err:find(bad .. ":1: attempt to index global 'os' (a nil value)", 1, true), err)
    end)
  end)

  -- ---------------------------------------------------- the ctx contract
  describe("the ctx a hook receives", function()
    -- Every hook logs its ctx as a Lua table literal and lets the session on.
    local SCRIPT = ps.lines {
      "local policy = {}",
      "local function ser(v)",
      "  local t = type(v)",
      "  if t == 'string' then return string.format('%q', v) end",
      "  if t == 'number' or t == 'boolean' then return tostring(v) end",
      "  if t ~= 'table' then return string.format('%q', '<' .. t .. '>') end",
      "  local keys = {}",
      "  for k in pairs(v) do keys[#keys + 1] = k end",
      "  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)",
      "  local parts = {}",
      "  for _, k in ipairs(keys) do",
      "    local key = '[' .. ser(k) .. ']'",
      "    if type(k) == 'string' and k:match('^[%a_][%w_]*$') then key = k end",
      "    parts[#parts + 1] = key .. '=' .. ser(v[k])",
      "  end",
      "  return '{' .. table.concat(parts, ',') .. '}'",
      "end",
      "local function show(ctx, host) host.log('CTX ' .. ser(ctx)) end",
      "function policy.server_tls(ctx, host) show(ctx, host) return 'may' end",
      "function policy.connect(ctx, host) show(ctx, host) return 'accept' end",
      "function policy.helo(ctx, host) show(ctx, host) return 'accept' end",
      "function policy.mail(ctx, host) show(ctx, host) return 'accept' end",
      "function policy.rcpt(ctx, host) show(ctx, host) return 'accept' end",
      "return policy",
    }
    local gw

    setup(function()
      gw = ps.start_with_script(SCRIPT, {
        ini_extra = {
          relay_domains = "example.test, partner.example, .sub.example",
          relay_networks = "127.0.0.1/32",
        },
        sections = {
          ["domain:partner.example"] = { tls = "verify", tls_in = "Encrypt", next_hop = "127.0.0.1:2600" },
          ["domain:.sub.example"] = { tls = "encrypt" },
          tls = { ask_client_cert = "yes", ca_file = suite.pki.ca.crt },
        },
      })
    end)
    teardown(function() if gw then gw:stop() end end)

    -- { sid = { {hook=, ctx=}, ... } } from the policy_log lines
    local function logged_ctxs()
      local by_sid = {}
      for _, line in ipairs(gw:log_lines("event=policy_log")) do
        local sid = tonumber(line:match(" sid=(%d+) "))
        local hook = line:match(" hook=(%S+)")
        local msg = ps.log_value(line, "msg")
        assert(sid and hook and msg, "malformed policy_log line: " .. line)
        local literal = assert(msg:match("^CTX (.*)$"), line)
        local chunk
        if setfenv then -- LuaJIT, as `make check` runs busted
          chunk = loadstring("return " .. literal)
          if chunk then setfenv(chunk, {}) end
        else
          chunk = load("return " .. literal, "ctx", "t", {})
        end
        assert(chunk, "not a Lua literal: " .. literal)
        by_sid[sid] = by_sid[sid] or {}
        table.insert(by_sid[sid], { hook = hook, ctx = chunk(), line = line })
      end
      return by_sid
    end

    local function check_all(list)
      for _, e in ipairs(list) do
        local ok, msg = testing.check_shape(e.ctx)
        assert(ok, "check_shape: " .. tostring(msg) .. "\n" .. e.line)
        assert.is_true(ok)
        assert.are.equal(e.hook, e.ctx.stage, e.line)
      end
    end

    it("has the shape of gateway.testing and the session's values, plaintext, untrusted client", function()
      local c = client.connect(gw:port(), { bind = "127.0.0.2" })
      local _, lport = c.sock:getsockname()
      lport = tonumber(lport)
      c:cmd("EHLO plain.example", "^250%-")
      c:cmd("MAIL FROM:<>", R.mail_ok)
      c:cmd("RCPT TO:<User@Example.TEST>", R.rcpt_ok)
      c:cmd("QUIT", R.bye)
      assert.is_true(c:closed())
      local sid = ps.sid_of_port(gw, lport, "127.0.0.2")
      gw:wait_log("event=disconnect sid=" .. sid .. " ")
      local list = logged_ctxs()[sid]
      assert(list, "no ctx logged for sid " .. sid .. ":\n" .. gw:log())
      check_all(list)

      local client_t = { ip = "127.0.0.2", port = lport, trusted = false }
      local tls = { active = false, peer = "none" }
      assert.are.same({
        { stage = "server_tls", hostname = HOST, client = client_t, tls = tls },
        { stage = "connect", hostname = HOST, client = client_t, tls = tls },
        { stage = "helo", hostname = HOST, client = client_t, tls = tls, helo = "plain.example" },
        { stage = "mail", hostname = HOST, client = client_t, tls = tls, helo = "plain.example",
          sender = "" },
        { stage = "rcpt", hostname = HOST, client = client_t, tls = tls, helo = "plain.example",
          sender = "", recipient = "User@Example.TEST", domain = "example.test" },
      }, (function()
        local ctxs = {}
        for i, e in ipairs(list) do ctxs[i] = e.ctx end
        return ctxs
      end)())
    end)

    it("has the shape of gateway.testing and the session's values, TLS with SNI and a trusted certificate", function()
      local r = ps.session(gw:port(), ps.concat(
        ps.tls_steps({ sni = HOST, cert = suite.pki.client.crt, key = suite.pki.client.key },
          "client.example", "tls.example"),
        {
          cmd("MAIL FROM:<Sender@Example.ORG>"),
          cmd("RCPT TO:<User@Partner.Example>"),
          cmd("RCPT TO:<user@a.sub.example>"),
          cmd("RCPT TO:<user@example.test>"),
          cmd("QUIT"),
        }), ps.concat(ps.TLS_WANT, { R.mail_ok, R.rcpt_ok, R.rcpt_ok, R.rcpt_ok, R.bye }))
      local tls_step = r.steps[3]
      assert.are.equal("TLSv1.3", tls_step.version, r.raw)

      -- the session: the one whose TLS line names the SNI and a trusted peer
      local sid = tonumber(gw:wait_log("event=tls sid=(%d+) client=127%.0%.0%.1 [^\n]*sni=" ..
        esc(HOST) .. " peer=Trusted"))
      local lport = tonumber(gw:wait_log("event=connect sid=" .. sid .. " client=127%.0%.0%.1:(%d+)"))
      gw:wait_log("event=disconnect sid=" .. sid .. " ")
      local list = logged_ctxs()[sid]
      assert(list, "no ctx logged for sid " .. sid .. ":\n" .. gw:log())
      check_all(list)

      local client_t = { ip = "127.0.0.1", port = lport, trusted = true }
      local plain = { active = false, peer = "none" }
      local tls = { active = true, version = "TLSv1.3", cipher = tls_step.cipher,
        peer = "trusted", sni = HOST }
      local base = { hostname = HOST, client = client_t }
      local function with(t)
        local out = {}
        for k, v in pairs(base) do out[k] = v end
        for k, v in pairs(t) do out[k] = v end
        return out
      end
      local ctxs = {}
      for i, e in ipairs(list) do ctxs[i] = e.ctx end
      assert.are.same({
        with { stage = "server_tls", tls = plain },
        with { stage = "connect", tls = plain },
        with { stage = "helo", tls = plain, helo = "client.example" },
        with { stage = "helo", tls = tls, helo = "tls.example" },
        with { stage = "mail", tls = tls, helo = "tls.example", sender = "Sender@Example.ORG" },
        with { stage = "rcpt", tls = tls, helo = "tls.example", sender = "Sender@Example.ORG",
          recipient = "User@Partner.Example", domain = "partner.example",
          section = { name = "domain:partner.example", tls = "verify", tls_in = "encrypt",
            next_hop = "127.0.0.1:2600" } },
        with { stage = "rcpt", tls = tls, helo = "tls.example", sender = "Sender@Example.ORG",
          recipient = "user@a.sub.example", domain = "a.sub.example",
          section = { name = "domain:.sub.example", tls = "encrypt" } },
        with { stage = "rcpt", tls = tls, helo = "tls.example", sender = "Sender@Example.ORG",
          recipient = "user@example.test", domain = "example.test" },
      }, ctxs)
    end)
  end)

  -- ---------------------------------------------------- -t and explain
  describe("smtpgw -t", function()
    local dir
    before_each(function() dir = gateway.mktempdir() end)
    after_each(function() gateway.rm_rf(dir) end)

    local function check(script_text)
      local script = dir .. "/policy.lua"
      gateway.write_file(script, script_text)
      local ini = dir .. "/gateway.ini"
      gateway.write_file(ini, gateway.ini_text(nil, { policy = { script = script } }))
      local out, err, code = ps.smtpgw("-c " .. q(ini) .. " -t")
      return out, err, code, script, ini
    end

    it("exits 1 with FILE:LINE: on a syntax error in the script", function()
      local text = ps.lines {
        "local policy = {}",
        "function policy.rcpt(ctx)",
        "  return 'accept'",
        "end end -- @syntax",
        "return policy",
      }
      local out, err, code, script = check(text)
      assert.are.equal(1, code, out .. err)
      local where = script .. ":" .. ps.line_of(text, "@syntax") .. ":"
      assert.truthy(err:find(where, 1, true), "want " .. where .. " in: " .. err)
    end)

    it("exits 1 naming the file when the script returns no hook", function()
      local out, err, code, script = check("return { _helper = function() end }\n")
      assert.are.equal(1, code, out .. err)
      assert.truthy(err:find(script .. ": the script returns no hook", 1, true), err)
    end)

    it("exits 1 naming the file when the script returns no table or a hook that is no function", function()
      local out, err, code, script = check("return 42\n")
      assert.are.equal(1, code, out .. err)
      assert.truthy(err:find(script .. ": the script must return a table of hooks", 1, true), err)
      out, err, code, script = check("return { rcpt = 'accept' }\n")
      assert.are.equal(1, code, out .. err)
      assert.truthy(err:find(script .. ": hook 'rcpt' is a string, not a function", 1, true), err)
    end)

    it("exits 0 on a valid script and on each stock script", function()
      local out, err, code, script, ini = check("return { rcpt = function() return 'accept' end }\n")
      assert.are.equal(0, code, out .. err)
      assert.are.equal(ini .. ": ok (policy " .. script .. ")\n", out)
      for _, name in ipairs({ "try", "require", "require_verify" }) do
        gateway.write_file(ini, gateway.ini_text(nil, { policy = { script = ps.stock(name) } }))
        out, err, code = ps.smtpgw("-c " .. q(ini) .. " -t")
        assert.are.equal(0, code, name .. ": " .. out .. err)
      end
    end)
  end)

  describe("smtpgw explain", function()
    local dir, ini

    setup(function()
      dir = gateway.mktempdir()
      ini = dir .. "/gateway.ini"
      gateway.write_file(ini, gateway.ini_text(
        { relay_domains = "example.test, partner.example" },
        {
          policy = { script = ps.stock("require_verify") },
          ["domain:partner.example"] = { tls = "verify", tls_in = "verify" },
          ["domain:.sub.example"] = { tls = "encrypt" },
        }))
    end)
    teardown(function() gateway.rm_rf(dir) end)

    -- Runs explain; returns { label = rest of the line } and the output.
    local function explain(args)
      local out, err, code = ps.smtpgw("-c " .. q(ini) .. " explain " .. args)
      assert.are.equal(0, code, out .. err)
      return ps.explain_table(out), out
    end

    it("a TLS client without a certificate: encrypt inbound, 550 for the verify domain, verify outbound", function()
      local t, out = explain("--client 192.0.2.7 --rcpt user@partner.example --tls TLSv1.3")
      assert.are.equal(ps.stock("require_verify"), t.script, out)
      assert.are.equal("[domain:partner.example] tls = verify tls_in = verify", t.section, out)
      assert.are.equal("asked: tls_in = verify in [domain:partner.example]", t.clientcert, out)
      assert.are.equal("encrypt decided by server_tls", t.inbound, out)
      assert.are.equal("accept decided by connect (absent: default)", t.connect, out)
      assert.are.equal("reject " .. need_cert("user@partner.example") .. " decided by rcpt", t.rcpt, out)
      assert.are.equal("verify decided by client_tls", t.outbound, out)
    end)

    it("with --peer trusted the rcpt hook accepts", function()
      local t, out = explain("--client 192.0.2.7 --rcpt user@partner.example --tls TLSv1.3 --peer trusted")
      assert.are.equal("accept decided by rcpt", t.rcpt, out)
      assert.are.equal("verify decided by client_tls", t.outbound, out)
    end)

    it("without --tls the inbound level refuses with 530", function()
      local t, out = explain("--client 192.0.2.7 --rcpt user@partner.example")
      assert.are.equal("reject " .. MUST_TLS .. " decided by the inbound level (no --tls)", t.rcpt, out)
    end)

    it("names the matching [domain:.NAME] section and its level, or none", function()
      local t, out = explain("--client 127.0.0.1 --rcpt User@A.Sub.Example --tls TLSv1.3")
      assert.are.equal("[domain:.sub.example] tls = encrypt", t.section, out)
      assert.are.equal("accept decided by rcpt", t.rcpt, out)
      assert.are.equal("encrypt decided by client_tls", t.outbound, out)
      t, out = explain("--client 127.0.0.1 --rcpt user@example.test --tls TLSv1.3")
      assert.are.equal("none matches example.test", t.section, out)
      assert.are.equal("verify decided by client_tls", t.outbound, out)
    end)

    it("applies relay control before the rcpt hook", function()
      local t, out = explain("--client 192.0.2.7 --rcpt user@other.example --tls TLSv1.3")
      assert.are.equal("reject 554 5.7.1 <user@other.example>: Relay access denied " ..
        "decided by relay_domains / relay_networks", t.rcpt, out)
    end)
  end)
end)
