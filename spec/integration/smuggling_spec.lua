-- End of data and SMTP smuggling (README "End of data and SMTP smuggling"):
-- only <CR><LF>.<CR><LF> ends a message; a message holding a bare LF or CR
-- is rejected once the real end arrives, and nothing inside it is ever
-- parsed as a command.

local gateway = require "harness"
local client = require "smtp_client"
local h = require "helpers"
local R = h.R

local SMUGGLED = "MAIL FROM:<evil@x>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\n" ..
  "Subject: smuggled\r\n\r\nsmuggled\r\n"

-- name, fake end of data, the expected (single) final reply
local VARIANTS = {
  { "<LF>.<LF>", "\n.\n", R.bare_lf },
  { "<LF>.<CR><LF>", "\n.\r\n", R.bare_lf },
  { "<CR><LF>.<LF>", "\r\n.\n", R.bare_lf },
  { "<CR>.<CR><LF>", "\r.\r\n", R.bare_cr },
  { "<CR><LF>.<CR>", "\r\n.\r", R.bare_cr },
  { "<CR>.<CR>", "\r.\r", R.bare_cr },
}

describe("smuggling", function()
  local gw

  setup(function()
    gw = gateway.start()
  end)

  teardown(h.cleanup)
  after_each(client.close_all)

  for _, v in ipairs(VARIANTS) do
    local name, fake, want = v[1], v[2], v[3]

    it("gives one reply for a message holding " .. name .. " + commands", function()
      local c = h.session(gw)
      local before = gw:spool_files("queue")
      h.envelope(c, "me@example.org", { "user@example.test" })
      c:cmd("DATA", R.data)
      c:send("Subject: innocent\r\n\r\nhello" .. fake .. SMUGGLED .. ".\r\n")
      c:expect_line(want)
      -- the very next reply belongs to our NOOP: no 250 for a smuggled MAIL,
      -- RCPT, no 354, no second queued reply
      c:cmd("NOOP", R.ok)
      c:cmd("QUIT", R.bye)
      assert.is_true(c:closed())
      assert.are.same(before, gw:spool_files("queue"))
      assert.is_true(gateway.wait_for(function() return #gw:spool_files("tmp") == 0 end, 10))
      assert.falsy(gw:log():find("evil@x", 1, true), "smuggled MAIL reached the log")
    end)

    it("gives one reply for " .. name .. " sent in a separate write", function()
      local c = h.session(gw)
      h.envelope(c, "me@example.org", { "user@example.test" })
      c:cmd("DATA", R.data)
      c:send("Subject: innocent\r\n\r\nhello")
      gateway.sleep(0.05)
      c:send(fake)
      gateway.sleep(0.05)
      c:send(SMUGGLED)
      gateway.sleep(0.05)
      c:send(".\r\nNOOP\r\n")
      c:expect_line(want)
      c:expect_line(R.ok)
      -- nothing else was sent
      assert.are.equal("", c:pending_data(0.3))
    end)
  end

  it("rejects a bare LF in a plain message line", function()
    local c = h.session(gw)
    h.envelope(c, "me@example.org", { "user@example.test" })
    c:cmd("DATA", R.data)
    c:send("Subject: lf\r\n\r\nline one\nline two\r\n.\r\n")
    c:expect_line(R.bare_lf)
    c:cmd("NOOP", R.ok)
    h.assert_nothing_queued(gw, c)
  end)

  it("rejects a bare CR in a plain message line", function()
    local c = h.session(gw)
    h.envelope(c, "me@example.org", { "user@example.test" })
    c:cmd("DATA", R.data)
    c:send("Subject: cr\r\n\r\nline one\rline two\r\n.\r\n")
    c:expect_line(R.bare_cr)
    c:cmd("NOOP", R.ok)
    h.assert_nothing_queued(gw, c)
  end)

  it("rejects a message whose last line before the dot ends in a bare LF", function()
    local c = h.session(gw)
    h.envelope(c, "me@example.org", { "user@example.test" })
    c:cmd("DATA", R.data)
    c:send("Subject: lf\r\n\r\nlast\n\r\n.\r\n")
    c:expect_line(R.bare_lf)
    c:cmd("NOOP", R.ok)
    h.assert_nothing_queued(gw, c)
  end)

  it("finds the end of data split across writes", function()
    local c = h.session(gw)
    h.envelope(c, "me@example.org", { "user@example.test" })
    c:cmd("DATA", R.data)
    c:send("Subject: split\r\n\r\nbody\r")
    gateway.sleep(0.05)
    c:send("\n")
    gateway.sleep(0.05)
    c:send(".")
    gateway.sleep(0.05)
    c:send("\r")
    gateway.sleep(0.05)
    c:send("\n")
    local qid = c:expect(R.queued):match(R.queued)
    local _, body = gateway.parse_queue_file(gw:queue_file(qid))
    assert.truthy(body:find("\r\n\r\nbody\r\n$"), body)
  end)

  it("a dot-stuffed line is stored unstuffed and is not an end", function()
    local c = h.session(gw)
    local qid = h.deliver(c, "me@example.org", { "user@example.test" },
      "Subject: stuffed\r\n\r\n..leading dot\r\n..\r\n")
    local _, body = gateway.parse_queue_file(gw:queue_file(qid))
    assert.truthy(body:find("\r\n\r\n%.leading dot\r\n%.\r\n$"), body)
  end)

  it("an empty message is queued", function()
    local c = h.session(gw)
    h.envelope(c, "me@example.org", { "user@example.test" })
    c:cmd("DATA", R.data)
    c:send(".\r\n")
    local qid = c:expect(R.queued):match(R.queued)
    assert.is_not_nil(gw:queue_file(qid))
  end)
end)
