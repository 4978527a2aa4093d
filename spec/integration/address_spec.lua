-- Envelope addresses and MAIL/RCPT parameters.

local gateway = require "harness"
local client = require "smtp_client"
local tools = require "tools"
local h = require "helpers"
local R = h.R

describe("addresses", function()
  local gw

  setup(function()
    gw = gateway.start()
  end)

  teardown(h.cleanup)
  after_each(client.close_all)

  it("MAIL without angle brackets is 501 5.1.7", function()
    local c = h.session(gw)
    c:cmd("MAIL FROM:me@example.org", R.bad_sender)
    c:cmd("MAIL FROM:<me@example.org", R.bad_sender)
    c:cmd("MAIL FROM:<me@@example.org>", R.bad_sender)
    c:cmd("MAIL FROM:<me@example.org>", R.mail_ok)
  end)

  it("RCPT without angle brackets is 501 5.1.3", function()
    local c = h.session(gw)
    c:cmd("MAIL FROM:<me@example.org>", R.mail_ok)
    c:cmd("RCPT TO:user@example.test", R.bad_rcpt)
    c:cmd("RCPT TO:<user@example.test", R.bad_rcpt)
    c:cmd("RCPT TO:<>", R.bad_rcpt)
    c:cmd("RCPT TO:<user@example.test>", R.rcpt_ok)
  end)

  it("RCPT without a domain is 504 5.5.2; <postmaster> is not (postmaster_spec.lua)", function()
    local c = h.session(gw)
    c:cmd("MAIL FROM:<me@example.org>", R.mail_ok)
    c:cmd("RCPT TO:<user>", h.need_fqdn("user"))
    c:cmd("RCPT TO:<postmaster>", h.relay_denied("postmaster"))
  end)

  it("unknown MAIL/RCPT parameters are 555 5.5.4", function()
    local c = h.session(gw)
    c:cmd("MAIL FROM:<me@example.org> FOO=bar", "^555 5%.5%.4 Unsupported option: ")
    c:cmd("MAIL FROM:<me@example.org> BODY=BOGUS", "^555 5%.5%.4 Unsupported option: ")
    c:cmd("MAIL FROM:<me@example.org> SIZE=abc", "^555 5%.5%.4 Unsupported option: ")
    c:cmd("MAIL FROM:<me@example.org>", R.mail_ok)
    c:cmd("RCPT TO:<user@example.test> NOTIFY=NEVER", "^555 5%.5%.4 Unsupported option: ")
    c:cmd("RCPT TO:<user@example.test> FOO", "^555 5%.5%.4 Unsupported option: ")
    c:cmd("RCPT TO:<user@example.test>", R.rcpt_ok)
  end)

  it("names the unsupported option", function()
    local c = h.session(gw)
    local _, text = c:cmd("MAIL FROM:<me@example.org> XYZZY=1")
    assert.truthy(text:find("^555 5%.5%.4 Unsupported option: XYZZY"), text)
  end)

  it("accepts the known MAIL parameters", function()
    local c = h.session(gw)
    c:cmd("MAIL FROM:<me@example.org> BODY=7BIT SIZE=100", R.mail_ok)
    c:cmd("RSET", R.ok)
    c:cmd("MAIL FROM:<me@example.org> body=8bitmime", R.mail_ok)
    c:cmd("RSET", R.ok)
    c:cmd("MAIL FROM:<me@example.org> SMTPUTF8", R.mail_ok)
  end)

  it("an 8-bit sender without SMTPUTF8 is 553 5.6.7, with SMTPUTF8 250", function()
    local c = h.session(gw)
    c:cmd("MAIL FROM:<j\xc3\xb6rg@example.org>", R.utf8)
    c:cmd("MAIL FROM:<j\xc3\xb6rg@example.org> SMTPUTF8", R.mail_ok)
  end)

  it("an 8-bit recipient without SMTPUTF8 is 553 5.6.7, with SMTPUTF8 250", function()
    local c = h.session(gw)
    c:cmd("MAIL FROM:<me@example.org>", R.mail_ok)
    c:cmd("RCPT TO:<\xc3\xbcser@example.test>", R.utf8)
    c:cmd("RSET", R.ok)
    c:cmd("MAIL FROM:<me@example.org> SMTPUTF8", R.mail_ok)
    c:cmd("RCPT TO:<\xc3\xbcser@example.test>", R.rcpt_ok)
    local code, text = h.data(c, h.message("utf8"))
    assert.are.equal(250, code, text)
    local env = gateway.parse_queue_file(gw:queue_file(text:match(R.queued)))
    assert.are.equal("1", env.smtputf8)
    assert.are.same({ "<\xc3\xbcser@example.test>" }, env.rcpt)
  end)

  it("smtplib with SMTPUTF8 delivers to a unicode address", function()
    local r = tools.smtplib { port = gw:port(), from = "j\xc3\xb6rg@example.org",
      to = { "\xc3\xbcser@example.test" }, smtputf8 = true }
    assert.is_nil(r.error, r.raw)
    assert.are.equal(250, r.by.data[1].code, r.raw)
    local qid = r.by.data[1].text:match("queued as (%x+)")
    local env = gateway.parse_queue_file(gw:queue_file(qid))
    assert.are.equal("<j\xc3\xb6rg@example.org>", env.sender)
    assert.are.equal("1", env.smtputf8)
  end)

  it("strips a source route from a recipient in a relay domain from a trusted client", function()
    local c = h.session(gw)
    c:cmd("MAIL FROM:<me@example.org>", R.mail_ok)
    c:cmd("RCPT TO:<@relay.example:user@example.test>", R.rcpt_ok)
    local code, text = h.data(c, h.message("route"))
    assert.are.equal(250, code, text)
    local env = gateway.parse_queue_file(gw:queue_file(text:match(R.queued)))
    assert.are.same({ "<user@example.test>" }, env.rcpt)
  end)

  it("refuses an over-long local part", function()
    local c = h.session(gw)
    c:cmd("MAIL FROM:<me@example.org>", R.mail_ok)
    c:cmd("RCPT TO:<" .. string.rep("l", 65) .. "@example.test>", R.bad_rcpt)
  end)

  it("refuses a path over 256 octets", function()
    local c = h.session(gw)
    local label = string.rep("d", 60)
    local domain = table.concat({ label, label, label, label, label, "example" }, ".")
    c:cmd("MAIL FROM:<me@" .. domain .. ">", R.bad_sender)
  end)
end)
