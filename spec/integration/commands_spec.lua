-- The command set and its sequencing (README "SMTP behaviour").

local gateway = require "harness"
local client = require "smtp_client"
local h = require "helpers"
local R = h.R

describe("commands", function()
  local gw

  setup(function()
    gw = gateway.start()
  end)

  teardown(h.cleanup)
  after_each(client.close_all)

  it("greets with the banner", function()
    local c = client.connect(gw:port())
    assert.are.equal(R.banner, c.banner)
  end)

  it("EHLO advertises exactly PIPELINING, SIZE n, STARTTLS, 8BITMIME, ENHANCEDSTATUSCODES, SMTPUTF8", function()
    local c = h.session(gw, { helo = false })
    local lines, text = c:ehlo("client.example")
    local first = table.remove(lines, 1)
    assert.truthy(first:find("^" .. h.HOST:gsub("%.", "%%.")), text)
    table.sort(lines)
    assert.are.same({ "8BITMIME", "ENHANCEDSTATUSCODES", "PIPELINING",
      "SIZE 36700160", "SMTPUTF8", "STARTTLS" }, lines)
    -- all lines but the last are "250-"
    local _, n = text:gsub("\n", "")
    assert.are.equal(6, n)
    assert.truthy(text:find("\n250 [^\n]*$"), text)
  end)

  it("HELO works and allows a transaction", function()
    local c = h.session(gw, { helo = false })
    local code, text = c:cmd("HELO client.example")
    assert.are.equal(250, code)
    assert.truthy(text:find(h.HOST, 1, true), text)
    assert.falsy(text:find("\n"), "HELO reply must be one line: " .. text)
    h.deliver(c, "me@example.org", { "user@example.test" }, h.message("helo"))
  end)

  it("EHLO/HELO without a name is 501 5.5.4", function()
    local c = h.session(gw, { helo = false })
    c:cmd("EHLO", R.ehlo_syntax)
    c:cmd("HELO", "^501 5%.5%.4 Syntax: ")
    -- still no greeting accepted
    c:cmd("MAIL FROM:<me@example.org>", R.need_helo)
  end)

  it("answers RSET, NOOP, VRFY, HELP and QUIT", function()
    local c = h.session(gw)
    c:cmd("RSET", R.ok)
    c:cmd("NOOP", R.ok)
    c:cmd("VRFY user@example.test", R.vrfy)
    c:cmd("HELP", R.help)
    c:cmd("QUIT", R.bye)
    assert.is_true(c:closed())
  end)

  it("matches verbs case-insensitively", function()
    local c = h.session(gw, { helo = false })
    c:cmd("ehlo client.example", "^250")
    c:cmd("mail from:<me@example.org>", R.mail_ok)
    c:cmd("rcpt to:<user@example.test>", R.rcpt_ok)
    c:cmd("Rset", R.ok)
    c:cmd("nOOp", R.ok)
  end)

  it("NOOP, RSET, VRFY, HELP work before EHLO", function()
    local c = h.session(gw, { helo = false })
    c:cmd("NOOP", R.ok)
    c:cmd("RSET", R.ok)
    c:cmd("VRFY postmaster", R.vrfy)
    c:cmd("HELP", R.help)
  end)

  it("unknown command is 502 5.5.2", function()
    local c = h.session(gw)
    c:cmd("FOOBAR", R.unknown)
    c:cmd("EXPN staff", R.unknown)
    c:cmd("NOOP", R.ok)
  end)

  it("with server_level = none, STARTTLS is neither offered nor accepted", function()
    local plain = gateway.start({ sections = { tls = { server_level = "none" } } })
    local c = h.session(plain, { helo = false })
    local lines = c:ehlo("client.example")
    for _, l in ipairs(lines) do assert.are_not.equal("STARTTLS", l) end
    c:cmd("STARTTLS", R.not_impl)
    c:cmd("NOOP", R.ok)
  end)

  it("MAIL before EHLO/HELO is 503 5.5.1", function()
    local c = h.session(gw, { helo = false })
    c:cmd("MAIL FROM:<me@example.org>", R.need_helo)
  end)

  it("nested MAIL is 503 5.5.1", function()
    local c = h.session(gw)
    c:cmd("MAIL FROM:<me@example.org>", R.mail_ok)
    c:cmd("MAIL FROM:<me@example.org>", R.nested)
    -- RSET ends the transaction
    c:cmd("RSET", R.ok)
    c:cmd("MAIL FROM:<me@example.org>", R.mail_ok)
  end)

  it("EHLO resets a transaction", function()
    local c = h.session(gw)
    c:cmd("MAIL FROM:<me@example.org>", R.mail_ok)
    c:ehlo("again.example")
    c:cmd("RCPT TO:<user@example.test>", R.need_mail)
    c:cmd("MAIL FROM:<me@example.org>", R.mail_ok)
  end)

  it("RCPT before MAIL is 503 5.5.1", function()
    local c = h.session(gw)
    c:cmd("RCPT TO:<user@example.test>", R.need_mail)
  end)

  it("DATA before MAIL is 503 need RCPT; without an accepted RCPT 554", function()
    local c = h.session(gw)
    c:cmd("DATA", R.need_rcpt)
    c:cmd("MAIL FROM:<me@example.org>", R.mail_ok)
    c:cmd("DATA", R.no_rcpts)
    -- a rejected recipient does not count as accepted
    c:cmd("RCPT TO:<user>", h.need_fqdn("user"))
    c:cmd("DATA", R.no_rcpts)
    c:cmd("NOOP", R.ok)
  end)

  it("DATA after only rejected recipients is 554 5.5.1 no valid recipients", function()
    local g2 = gateway.start { ini_extra = { relay_networks = "10.0.0.0/8" } }
    local c = h.session(g2)
    c:cmd("MAIL FROM:<me@example.org>", R.mail_ok)
    c:cmd("RCPT TO:<user@other.example>", h.relay_denied("user@other.example"))
    c:cmd("DATA", R.no_rcpts)
    c:cmd("NOOP", R.ok)
    c:close()
    g2:stop()
  end)

  it("MAIL/RCPT without FROM:/TO: is 501 5.5.4", function()
    local c = h.session(gw)
    c:cmd("MAIL", R.mail_syntax)
    c:cmd("MAIL <me@example.org>", R.mail_syntax)
    c:cmd("MAIL FROM:<me@example.org>", R.mail_ok)
    c:cmd("RCPT", R.rcpt_syntax)
    c:cmd("RCPT <user@example.test>", R.rcpt_syntax)
    c:cmd("RCPT TO:<user@example.test>", R.rcpt_ok)
  end)

  it("accepts spaces after the colon of FROM:/TO:", function()
    local c = h.session(gw)
    c:cmd("MAIL FROM: <me@example.org>", R.mail_ok)
    c:cmd("RCPT TO: <user@example.test>", R.rcpt_ok)
  end)

  it("empty line and control octets are 500 5.5.2 bad syntax", function()
    local c = h.session(gw)
    c:cmd("", R.bad_syntax)
    c:cmd("NOOP\1", R.bad_syntax)
    c:cmd("NO\0OP", R.bad_syntax)
    c:cmd("NOOP", R.ok)
  end)

  it("a command line ending in a bare LF is 500 5.5.2 bare <LF>", function()
    local c = h.session(gw)
    c:send("NOOP\n")
    c:expect_line(R.cmd_bare_lf)
    c:send("MAIL FROM:<me@example.org>\n")
    c:expect_line(R.cmd_bare_lf)
    -- the bare-LF MAIL was not executed
    c:cmd("RCPT TO:<user@example.test>", R.need_mail)
    c:cmd("NOOP", R.ok)
  end)

  it("every reply line ends in CRLF and the session survives a second transaction", function()
    -- read_reply() raises on a reply line not ending in CRLF
    local c = h.session(gw)
    h.deliver(c, "me@example.org", { "user@example.test" }, h.message("one"))
    h.deliver(c, "me@example.org", { "user@example.test" }, h.message("two"))
    c:cmd("QUIT", R.bye)
    assert.is_true(c:closed())
  end)

  it("logs a rejected command with stage and code", function()
    local c = h.session(gw)
    c:cmd("MAIL FROM:<me@example.org>", R.mail_ok)
    c:cmd("MAIL FROM:<me@example.org>", R.nested)
    local line = gw:wait_log("[^\n]*event=reject[^\n]*nested MAIL[^\n]*")
    assert.truthy(line:find("stage=MAIL", 1, true), line)
    assert.truthy(line:find('reply="5.5.1 Error: nested MAIL command"', 1, true), line)
    assert.truthy(line:find(" qid=%x+"), line)
  end)
end)
