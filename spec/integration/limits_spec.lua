-- Limits: line lengths, recipients, message size, errors, timeouts and
-- connection counts (README gateway.ini table and "SMTP behaviour").

local gateway = require "harness"
local client = require "smtp_client"
local h = require "helpers"
local R = h.R

describe("limits", function()
  teardown(h.cleanup)
  after_each(client.close_all)

  describe("command lines", function()
    local gw
    teardown(h.cleanup)
    setup(function() gw = gateway.start() end)

    it("a 513+ octet command line is 500 5.5.2 and the session continues", function()
      local c = h.session(gw)
      c:cmd("NOOP " .. string.rep("x", 600), R.cmd_too_long)
      c:cmd("NOOP", R.ok)
      -- 511 octets + CRLF = 513
      c:cmd("NOOP " .. string.rep("y", 506), R.cmd_too_long)
      c:cmd("NOOP", R.ok)
    end)

    it("a 512 octet command line (with CRLF) is accepted", function()
      local c = h.session(gw)
      local line = "NOOP " .. string.rep("z", 505)
      assert.are.equal(512, #(line .. "\r\n"))
      c:cmd(line, R.ok)
    end)

    it("a too-long MAIL line does not start a transaction", function()
      local c = h.session(gw)
      c:cmd("MAIL FROM:<me@example.org> " .. string.rep("A", 600), R.cmd_too_long)
      c:cmd("RCPT TO:<user@example.test>", R.need_mail)
    end)

    it("a 100 KiB line without newline does not crash the gateway", function()
      local c = h.session(gw)
      c:send(string.rep("A", 100 * 1024))
      c:send("\r\nNOOP\r\n")
      c:expect_line(R.cmd_too_long)
      c:expect_line(R.ok)
      c:close()
      -- same again, and the client just goes away
      local c2 = h.session(gw)
      c2:send(string.rep("B", 100 * 1024))
      c2:close()
      -- the gateway still serves
      local c3 = h.session(gw)
      c3:cmd("NOOP", R.ok)
    end)

    it("a 1 MiB line split in many writes gets one 500 reply", function()
      local c = h.session(gw)
      local chunk = string.rep("C", 64 * 1024)
      for _ = 1, 16 do
        local ok, err = c:send(chunk)
        assert.truthy(ok, err)
      end
      c:send("\r\nNOOP\r\n")
      c:expect_line(R.cmd_too_long)
      c:expect_line(R.ok)
    end)
  end)

  describe("max_recipients = 3", function()
    local gw
    teardown(h.cleanup)
    setup(function() gw = gateway.start { ini_extra = { max_recipients = 3 } } end)

    it("answers the 4th RCPT with 452 4.5.3 and queues 3", function()
      local c = h.session(gw)
      c:cmd("MAIL FROM:<me@example.org>", R.mail_ok)
      for i = 1, 3 do c:cmd("RCPT TO:<u" .. i .. "@example.test>", R.rcpt_ok) end
      c:cmd("RCPT TO:<u4@example.test>", R.too_many_rcpts)
      c:cmd("RCPT TO:<u5@example.test>", R.too_many_rcpts)
      local code, text = h.data(c, h.message("three"))
      assert.are.equal(250, code, text)
      local env = gateway.parse_queue_file(gw:queue_file(text:match(R.queued)))
      assert.are.same({ "<u1@example.test>", "<u2@example.test>", "<u3@example.test>" },
        env.rcpt)
    end)
  end)

  describe("max_message_size = 1000", function()
    local gw
    teardown(h.cleanup)
    setup(function() gw = gateway.start { ini_extra = { max_message_size = 1000 } } end)

    it("advertises SIZE 1000", function()
      local c = h.session(gw, { helo = false })
      local lines = c:ehlo()
      local found
      for _, l in ipairs(lines) do if l:match("^SIZE") then found = l end end
      assert.are.equal("SIZE 1000", found)
    end)

    it("refuses MAIL SIZE=2000 with 552 5.3.4 and accepts SIZE=500", function()
      local c = h.session(gw)
      c:cmd("MAIL FROM:<me@example.org> SIZE=2000", R.size)
      c:cmd("MAIL FROM:<me@example.org> SIZE=500", R.mail_ok)
    end)

    it("refuses a 2000-octet message without SIZE at the end of data", function()
      local c = h.session(gw)
      h.envelope(c, "me@example.org", { "user@example.test" })
      c:cmd("DATA", R.data)
      local msg = "Subject: big\r\n\r\n" .. string.rep(string.rep("x", 78) .. "\r\n", 25)
      assert.truthy(#msg > 2000)
      c:send(msg .. ".\r\n")
      c:expect_line(R.size)
      c:cmd("NOOP", R.ok)
      h.assert_nothing_queued(gw, c)
    end)

    it("accepts a small message", function()
      local c = h.session(gw)
      local qid = h.deliver(c, "me@example.org", { "user@example.test" },
        "Subject: small\r\n\r\nsmall\r\n")
      assert.is_not_nil(gw:queue_file(qid))
    end)
  end)

  describe("max_message_size = 0", function()
    local gw
    teardown(h.cleanup)
    setup(function() gw = gateway.start { ini_extra = { max_message_size = 0 } } end)

    it("advertises SIZE without a fixed limit and accepts a large SIZE=", function()
      local c = h.session(gw, { helo = false })
      local found
      for _, l in ipairs(c:ehlo()) do if l:match("^SIZE") then found = l end end
      assert.truthy(found == "SIZE" or found == "SIZE 0", tostring(found))
      c:cmd("MAIL FROM:<me@example.org> SIZE=99999999999", R.mail_ok)
    end)

    it("accepts a 2 MiB message", function()
      local c = h.session(gw)
      local line = string.rep("q", 998) .. "\r\n"
      local qid = h.deliver(c, "me@example.org", { "user@example.test" },
        "Subject: big\r\n\r\n" .. string.rep(line, 2100))
      local _, body = gateway.parse_queue_file(gw:queue_file(qid))
      assert.truthy(#body > 2000 * 1000)
    end)
  end)

  describe("DATA lines", function()
    local gw
    teardown(h.cleanup)
    setup(function() gw = gateway.start() end)

    it("a message line over 1000 octets is 550 5.5.2 at the end, nothing queued", function()
      local c = h.session(gw)
      h.envelope(c, "me@example.org", { "user@example.test" })
      c:cmd("DATA", R.data)
      c:send("Subject: long\r\n\r\n" .. string.rep("L", 1500) .. "\r\nafter\r\n.\r\n")
      c:expect_line(R.long_line)
      c:cmd("NOOP", R.ok)
      h.assert_nothing_queued(gw, c)
    end)

    it("a line of exactly 1000 octets with CRLF is accepted", function()
      local c = h.session(gw)
      local line = string.rep("M", 998)
      local qid = h.deliver(c, "me@example.org", { "user@example.test" },
        "Subject: edge\r\n\r\n" .. line .. "\r\n")
      local _, body = gateway.parse_queue_file(gw:queue_file(qid))
      assert.truthy(body:find("\r\n" .. line .. "\r\n", 1, true))
    end)

    it("a line of 1001 octets with CRLF is refused", function()
      local c = h.session(gw)
      h.envelope(c, "me@example.org", { "user@example.test" })
      c:cmd("DATA", R.data)
      c:send("Subject: edge\r\n\r\n" .. string.rep("N", 999) .. "\r\n.\r\n")
      c:expect_line(R.long_line)
      h.assert_nothing_queued(gw, c)
    end)

    it("a huge single line (1 MiB) is refused without crashing", function()
      local c = h.session(gw)
      h.envelope(c, "me@example.org", { "user@example.test" })
      c:cmd("DATA", R.data)
      c:send("Subject: huge\r\n\r\n" .. string.rep("H", 1024 * 1024) .. "\r\n.\r\n")
      c:expect_line(R.long_line)
      c:cmd("NOOP", R.ok)
      h.assert_nothing_queued(gw, c)
    end)

    it("NUL in the message is 550 5.6.0, nothing queued", function()
      local c = h.session(gw)
      h.envelope(c, "me@example.org", { "user@example.test" })
      c:cmd("DATA", R.data)
      c:send("Subject: nul\r\n\r\nbefore\0after\r\n.\r\n")
      c:expect_line(R.nul)
      c:cmd("NOOP", R.ok)
      h.assert_nothing_queued(gw, c)
    end)
  end)

  describe("max_errors = 3", function()
    local gw
    teardown(h.cleanup)
    setup(function() gw = gateway.start { ini_extra = { max_errors = 3 } } end)

    it("sends 421 4.7.0 too many errors after the 3rd error, then closes", function()
      local c = h.session(gw)
      local errors, final = 0, nil
      for _ = 1, 6 do
        c:send("BOGUS\r\n") -- may fail once the server closed; that is fine
        local code, text = c:read_reply()
        assert.is_not_nil(code, "connection ended without 421: " .. tostring(text))
        if code == 421 then final = text break end
        assert.are.equal(R.unknown, text)
        errors = errors + 1
      end
      assert.are.equal(R.too_many_errors, final)
      assert.are.equal(3, errors)
      assert.is_true(c:closed())
    end)

    it("counts 4xx/5xx replies of any command", function()
      local c = h.session(gw)
      c:cmd("RCPT TO:<user@example.test>", R.need_mail)
      c:cmd("MAIL FROM:<bad", R.bad_sender)
      c:cmd("DATA", R.need_rcpt)
      c:send("NOOP\r\n")
      c:expect_line(R.too_many_errors)
      assert.is_true(c:closed())
    end)

    it("does not count successful commands", function()
      local c = h.session(gw)
      c:cmd("BOGUS", R.unknown)
      c:cmd("BOGUS", R.unknown)
      for _ = 1, 10 do c:cmd("NOOP", R.ok) end
      h.deliver(c, "me@example.org", { "user@example.test" }, h.message("ok"))
    end)
  end)

  describe("command_timeout = 1s", function()
    local gw
    teardown(h.cleanup)
    setup(function()
      gw = gateway.start { ini_extra = { command_timeout = "1s", data_timeout = "60s" } }
    end)

    it("sends 421 4.4.2 timeout exceeded to an idle client and closes", function()
      local c = client.connect(gw:port())
      c:expect_line(R.timeout, 15)
      assert.is_true(c:closed())
    end)

    it("also after EHLO and inside a transaction (before DATA)", function()
      local c = h.session(gw)
      c:cmd("MAIL FROM:<me@example.org>", R.mail_ok)
      c:expect_line(R.timeout, 15)
      assert.is_true(c:closed())
    end)
  end)

  describe("data_timeout = 1s", function()
    local gw
    teardown(h.cleanup)
    setup(function()
      gw = gateway.start { ini_extra = { command_timeout = "60s", data_timeout = "1s" } }
    end)

    it("sends 421 4.4.2 when the client stalls inside DATA, nothing queued", function()
      local c = h.session(gw)
      h.envelope(c, "me@example.org", { "user@example.test" })
      c:cmd("DATA", R.data)
      c:send("Subject: stalled\r\n\r\nhalf a mess")
      c:expect_line(R.timeout, 15)
      assert.is_true(c:closed())
      h.assert_nothing_queued(gw, c)
    end)
  end)

  describe("max_connections_per_ip = 2", function()
    local gw
    teardown(h.cleanup)
    -- (127.0.0.1 outside relay_networks: those clients have no per-client limit)
    setup(function()
      gw = gateway.start { ini_extra = { max_connections_per_ip = 2,
        relay_networks = "127.0.0.200/32" } }
    end)

    it("refuses the third concurrent connection from one address", function()
      local a = client.connect(gw:port())
      local b = client.connect(gw:port())
      assert.are.equal(R.banner, a.banner)
      assert.are.equal(R.banner, b.banner)
      local c = client.connect(gw:port(), { banner = false })
      c:expect_line(R.too_many_conns .. " from 127.0.0.1")
      assert.is_true(c:closed())
      c:close()
      -- another address is not affected
      local d = client.connect(gw:port(), { bind = "127.0.0.2" })
      assert.are.equal(R.banner, d.banner)
      d:close()
      -- once one closes, a new connection is served again
      a:cmd("QUIT", R.bye)
      a:close()
      local served = gateway.wait_for(function()
        local e = client.connect(gw:port(), { banner = false })
        local _, text = e:read_reply()
        e:close()
        return text == R.banner
      end, 10, 0.2)
      assert.is_true(served)
      b:cmd("NOOP", R.ok)
    end)
  end)

  describe("max_connections = 2", function()
    local gw
    teardown(h.cleanup)
    setup(function() gw = gateway.start { ini_extra = { max_connections = 2 } } end)

    it("refuses the third concurrent connection overall", function()
      local a = client.connect(gw:port(), { bind = "127.0.0.1" })
      local b = client.connect(gw:port(), { bind = "127.0.0.2" })
      assert.are.equal(R.banner, a.banner)
      assert.are.equal(R.banner, b.banner)
      local c = client.connect(gw:port(), { bind = "127.0.0.3", banner = false })
      c:expect_line(R.too_many_conns)
      assert.is_true(c:closed())
      c:close()
      b:cmd("QUIT", R.bye)
      b:close()
      local served = gateway.wait_for(function()
        local e = client.connect(gw:port(), { bind = "127.0.0.3", banner = false })
        local _, text = e:read_reply()
        e:close()
        return text == R.banner
      end, 10, 0.2)
      assert.is_true(served)
      a:cmd("NOOP", R.ok)
    end)
  end)
end)
