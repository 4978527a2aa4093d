-- SMTP synchronization (README "SMTP synchronization"): talking before the
-- banner, a command behind EHLO/HELO and message text before the 354 are
-- refused with 554 5.5.0 and the session is closed; RFC 2920 pipelining
-- stays legal; sync_exempt_networks (by default the clients of
-- relay_networks) and smtp_sync = no switch it off.

local gateway = require "harness"
local client = require "smtp_client"
local h = require "helpers"
local R = h.R

local SYNC = "554 5.5.0 Error: SMTP synchronization error"

describe("SMTP synchronization", function()
  teardown(h.cleanup)
  after_each(client.close_all)

  describe("greet_pause = 1s", function()
    local gw
    teardown(h.cleanup)
    setup(function()
      gw = gateway.start { ini_extra = { greet_pause = "1s",
        sync_exempt_networks = "127.0.0.2/32" } }
    end)

    it("a client that talks before the banner gets 554 5.5.0 and no banner", function()
      local c = client.connect(gw:port(), { banner = false })
      c:send("EHLO early.example\r\n")
      c:expect_line(SYNC)
      assert.is_true(c:closed())
      gw:wait_log("event=sync_error [^\n]*stage=greeting pending=%d+")
      assert.falsy(gw:log():find("early.example", 1, true))
    end)

    it("a client that waits gets the banner after the pause and is served", function()
      local t0 = gateway.now()
      local c = h.session(gw)
      local waited = gateway.now() - t0
      assert.truthy(waited >= 0.9, string.format("banner after %.2f s", waited))
      h.deliver(c, "me@example.org", { "user@example.test" }, h.message("patient"))
    end)

    it("a client in sync_exempt_networks gets the banner at once and may talk first", function()
      local t0 = gateway.now()
      local c = client.connect(gw:port(), { bind = "127.0.0.2", banner = false })
      c:send("EHLO early.example\r\nMAIL FROM:<me@example.org>\r\n")
      c:expect_line(R.banner)
      assert.truthy(gateway.now() - t0 < 0.9, "the exempt client waited for the pause")
      c:expect("^250%-")
      c:expect_line(R.mail_ok)
    end)
  end)

  describe("greet_pause = 0", function()
    local gw
    teardown(h.cleanup)
    setup(function()
      gw = gateway.start { ini_extra = { relay_networks = "10.0.0.0/8" } }
    end)

    it("EHLO followed by MAIL in one write is 554 5.5.0, without the EHLO reply", function()
      local c = client.connect(gw:port())
      c:send("EHLO client.example\r\nMAIL FROM:<me@example.org>\r\n")
      c:expect_line(SYNC)
      assert.is_true(c:closed())
      gw:wait_log("event=sync_error [^\n]*stage=EHLO")
    end)

    it("HELO followed by anything in one write is 554 5.5.0", function()
      local c = client.connect(gw:port())
      c:send("HELO client.example\r\nNOOP\r\n")
      c:expect_line(SYNC)
      assert.is_true(c:closed())
      gw:wait_log("event=sync_error [^\n]*stage=HELO")
    end)

    it("message text sent behind DATA before the 354 is 554 5.5.0, nothing queued", function()
      local c = h.session(gw)
      c:send("MAIL FROM:<me@example.org>\r\nRCPT TO:<user@example.test>\r\nDATA\r\n" ..
        h.message("too early") .. ".\r\n")
      c:expect_line(R.mail_ok)
      c:expect_line(R.rcpt_ok)
      c:expect_line(SYNC)
      assert.is_true(c:closed())
      h.assert_nothing_queued(gw, c)
      gw:wait_log("event=sync_error [^\n]*stage=DATA")
    end)

    it("legal RFC 2920 groups are accepted: RSET MAIL RCPT RCPT DATA, then the message", function()
      local before = #gw:log_lines("event=sync_error")
      local c = h.session(gw)
      c:send("RSET\r\nMAIL FROM:<me@example.org>\r\nRCPT TO:<a@example.test>\r\n" ..
        "RCPT TO:<b@other.example>\r\nRCPT TO:<c@example.test>\r\nDATA\r\n")
      c:expect_line(R.ok)
      c:expect_line(R.mail_ok)
      c:expect_line(R.rcpt_ok)
      c:expect_line(h.relay_denied("b@other.example"))
      c:expect_line(R.rcpt_ok)
      c:expect_line(R.data)
      c:send(h.message("legal") .. ".\r\nMAIL FROM:<me@example.org>\r\nQUIT\r\n")
      local qid = c:expect(R.queued):match(R.queued)
      c:expect_line(R.mail_ok)
      c:expect_line(R.bye)
      local env = gateway.parse_queue_file(gw:queue_file(qid))
      assert.are.same({ "<a@example.test>", "<c@example.test>" }, env.rcpt)
      assert.are.equal(before, #gw:log_lines("event=sync_error"))
    end)
  end)

  describe("the default sync_exempt_networks = relay_networks", function()
    local gw
    teardown(h.cleanup)
    setup(function()
      gw = gateway.start { ini_extra = { greet_pause = "1s", relay_networks = "127.0.0.1/32" } }
    end)

    it("exempts a relay client (as postscreen's permit_mynetworks), not another", function()
      local c = client.connect(gw:port(), { bind = "127.0.0.1", banner = false })
      c:send("EHLO inside.example\r\nMAIL FROM:<me@example.org>\r\n")
      c:expect_line(R.banner, 0.9)
      c:expect("^250%-")
      c:expect_line(R.mail_ok)
      local o = client.connect(gw:port(), { bind = "127.0.0.3", banner = false })
      o:send("EHLO outside.example\r\n")
      o:expect_line(SYNC)
      assert.is_true(o:closed())
    end)
  end)

  describe("gateway.ini", function()
    it("checks the new keys and names the line", function()
      for _, bad in ipairs({ "greet_pause = 2m", "greet_pause = soon", "smtp_sync = maybe",
          "sync_exempt_networks = 10.0.0.0/33", "min_data_rate = -1",
          "junk_command_limit = 0", "stress_timeout = 0", "data_rate_window = 0" }) do
        local out, code = gateway.check_config("[gateway]\n" .. bad .. "\n")
        assert.are.equal(1, code, bad .. ": " .. out)
        assert.truthy(out:find(":2: " .. bad:match("^(%S+)") .. ": ", 1, true), out)
      end
      local out, code = gateway.check_config("[gateway]\ngreet_pause = 0\nsmtp_sync = no\n" ..
        "sync_exempt_networks = relay_networks, 10.0.0.0/8, ::1\nmin_data_rate = 0\njunk_command_limit = 5\n" ..
        "stress_timeout = 5s\ndata_rate_window = 30s\ndata_timeout = 1h\n")
      assert.are.equal(0, code, out)
    end)
  end)

  describe("smtp_sync = no", function()
    local gw
    teardown(h.cleanup)
    setup(function()
      gw = gateway.start { ini_extra = { smtp_sync = "no", greet_pause = "1s" } }
    end)

    it("serves a client that breaks all three rules", function()
      local t0 = gateway.now()
      local c = client.connect(gw:port(), { banner = false })
      c:send("EHLO client.example\r\nMAIL FROM:<me@example.org>\r\n" ..
        "RCPT TO:<user@example.test>\r\nDATA\r\n" .. h.message("careless") .. ".\r\n")
      c:expect_line(R.banner)
      assert.truthy(gateway.now() - t0 < 0.9, "no greet pause without smtp_sync")
      c:expect("^250%-")
      c:expect_line(R.mail_ok)
      c:expect_line(R.rcpt_ok)
      c:expect_line(R.data)
      c:expect(R.queued)
      assert.are.equal(0, #gw:log_lines("event=sync_error"))
    end)
  end)
end)
