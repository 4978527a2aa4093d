-- The junk-command limit (README "Deadlines and stress mode"): NOOP, RSET,
-- VRFY, HELP and refused commands beyond junk_command_limit in one session
-- get 421 4.7.0 ... too many errors and the session is closed; a queued
-- message starts the count again.

local gateway = require "harness"
local client = require "smtp_client"
local h = require "helpers"
local R = h.R

describe("junk commands", function()
  teardown(h.cleanup)
  after_each(client.close_all)

  describe("the default limit (100)", function()
    local gw
    teardown(h.cleanup)
    setup(function() gw = gateway.start() end)

    it("answers 100 NOOPs, then 421 and close instead of the 101st", function()
      local c = h.session(gw)
      c:send(string.rep("NOOP\r\n", 150))
      for i = 1, 100 do
        local code, text = c:read_reply()
        assert(code == 250, "NOOP " .. i .. ": " .. tostring(text))
      end
      c:expect_line(R.too_many_errors)
      assert.is_true(c:closed())
      gw:wait_log("event=disconnect [^\n]*reason=too_many_junk_commands")
    end)
  end)

  describe("junk_command_limit = 4", function()
    local gw
    teardown(h.cleanup)
    setup(function() gw = gateway.start { ini_extra = { junk_command_limit = 4 } } end)

    it("counts NOOP, RSET, VRFY, HELP and refused commands alike", function()
      local c = h.session(gw)
      c:cmd("NOOP", R.ok)
      c:cmd("RSET", R.ok)
      c:cmd("VRFY postmaster", R.vrfy)
      c:cmd("HELP", R.help)
      c:cmd("BOGUS", R.unknown) -- the 5th: answered, then the 421
      c:expect_line(R.too_many_errors)
      assert.is_true(c:closed())
    end)

    it("the fifth junk command gets the 421 instead of its reply", function()
      local c = h.session(gw)
      for _ = 1, 4 do c:cmd("HELP", R.help) end
      c:cmd("RSET", R.too_many_errors)
      assert.is_true(c:closed())
    end)

    it("does not count mail commands, and a queued message starts the count again", function()
      local c = h.session(gw)
      for _ = 1, 3 do c:cmd("NOOP", R.ok) end
      h.deliver(c, "me@example.org", { "user@example.test" }, h.message("one"))
      for _ = 1, 4 do c:cmd("NOOP", R.ok) end
      h.deliver(c, "me@example.org", { "user@example.test" }, h.message("two"))
      c:cmd("QUIT", R.bye)
    end)
  end)
end)
