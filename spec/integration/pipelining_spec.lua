-- PIPELINING (RFC 2920): commands sent in one write are answered in order.
-- EHLO and DATA end a group (RFC 2920 3.1): what a client sends behind
-- them before their reply is a synchronization error (sync_spec.lua), so
-- these clients wait for the EHLO reply and for the 354.

local gateway = require "harness"
local client = require "smtp_client"
local h = require "helpers"
local R = h.R

describe("pipelining", function()
  local gw

  setup(function()
    gw = gateway.start { ini_extra = { relay_networks = "10.0.0.0/8" } }
  end)

  teardown(h.cleanup)
  after_each(client.close_all)

  it("answers MAIL RCPT RCPT DATA sent in one write after EHLO, in order", function()
    local c = client.connect(gw:port())
    c:send("EHLO client.example\r\n")
    local text = c:expect("^250%-")
    assert.truthy(text:find("\n250 ", 1, true), text)
    c:send("MAIL FROM:<me@example.org>\r\n" ..
      "RCPT TO:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n")
    c:expect_line(R.mail_ok)
    c:expect_line(R.rcpt_ok)
    c:expect_line(R.rcpt_ok)
    c:expect_line(R.data)
    c:send(h.message("pipelined") .. ".\r\n")
    local qid = c:expect(R.queued):match(R.queued)
    local env = gateway.parse_queue_file(gw:queue_file(qid))
    assert.are.same({ "<a@example.test>", "<b@example.test>" }, env.rcpt)
  end)

  it("answers a whole transaction in legal groups (EHLO; MAIL RCPT DATA; message QUIT)", function()
    local c = client.connect(gw:port())
    local body = h.message("all in one", { "line one", "..dot", "line three" })
    c:send("EHLO client.example\r\n")
    c:expect("^250%-")
    c:send("MAIL FROM:<me@example.org>\r\nRCPT TO:<user@example.test>\r\nDATA\r\n")
    c:expect_line(R.mail_ok)
    c:expect_line(R.rcpt_ok)
    c:expect_line(R.data)
    c:send(body .. ".\r\nQUIT\r\n")
    local qid = c:expect(R.queued):match(R.queued)
    c:expect_line(R.bye)
    assert.is_true(c:closed())
    local _, stored = gateway.parse_queue_file(gw:queue_file(qid))
    assert.truthy(stored:find("line one\r\n.dot\r\nline three\r\n", 1, true), stored)
    -- QUIT is not part of the message
    assert.falsy(stored:find("QUIT", 1, true))
  end)

  it("keeps order when a pipelined RCPT is rejected", function()
    local c = client.connect(gw:port())
    c:send("EHLO client.example\r\n")
    c:expect("^250%-")
    c:send("MAIL FROM:<me@example.org>\r\n" ..
      "RCPT TO:<user@example.test>\r\nRCPT TO:<user@other.example>\r\n" ..
      "RCPT TO:<second@example.test>\r\nDATA\r\n")
    c:expect_line(R.mail_ok)
    c:expect_line(R.rcpt_ok)
    c:expect_line(h.relay_denied("user@other.example"))
    c:expect_line(R.rcpt_ok)
    c:expect_line(R.data)
    c:send(h.message("partly rejected") .. ".\r\nQUIT\r\n")
    local qid = c:expect(R.queued):match(R.queued)
    c:expect_line(R.bye)
    local env = gateway.parse_queue_file(gw:queue_file(qid))
    assert.are.same({ "<user@example.test>", "<second@example.test>" }, env.rcpt)
  end)

  it("does not run commands pipelined after a DATA that was refused", function()
    -- DATA without recipients is refused; what follows is read as commands
    local c = client.connect(gw:port())
    c:send("EHLO client.example\r\n")
    c:expect("^250%-")
    c:send("MAIL FROM:<me@example.org>\r\n" ..
      "RCPT TO:<user@other.example>\r\nDATA\r\nNOOP\r\n")
    c:expect_line(R.mail_ok)
    c:expect_line(h.relay_denied("user@other.example"))
    c:expect_line(R.no_rcpts)
    c:expect_line(R.ok)
  end)

  it("answers many pipelined commands split at odd places", function()
    local c = client.connect(gw:port())
    c:send("EHLO client.example\r\n")
    c:expect("^250%-")
    local all = ""
    for i = 1, 20 do all = all .. "NOOP\r\nRSET\r\n" end
    all = all .. "QUIT\r\n"
    -- send in 7-byte pieces
    for i = 1, #all, 7 do
      c:send(all:sub(i, i + 6))
    end
    for i = 1, 40 do c:expect_line(R.ok) end
    c:expect_line(R.bye)
    assert.is_true(c:closed())
  end)
end)
