-- Relay control (README "Relay control"): relay_domains from anyone, other
-- domains only from relay_networks, and no routing tricks on the strength of
-- relay_domains alone.

local gateway = require "harness"
local client = require "smtp_client"
local h = require "helpers"
local R = h.R

-- RCPT after a fresh MAIL on a new session; returns the reply text.
local function rcpt(gw, addr, opts)
  local c = h.session(gw, opts)
  c:cmd("MAIL FROM:<me@example.org>", R.mail_ok)
  local _, text = c:cmd("RCPT TO:<" .. addr .. ">")
  c:close()
  return text
end

describe("relay", function()
  teardown(h.cleanup)
  after_each(client.close_all)

  describe("from a client outside relay_networks", function()
    local gw
    teardown(h.cleanup)
    setup(function()
      gw = gateway.start { ini_extra = { relay_networks = "10.0.0.0/8" } }
    end)

    it("accepts a relay_domains recipient", function()
      assert.are.equal(R.rcpt_ok, rcpt(gw, "user@example.test"))
    end)

    it("matches the relay domain case-insensitively", function()
      assert.are.equal(R.rcpt_ok, rcpt(gw, "user@EXAMPLE.Test"))
    end)

    it("denies another domain with 554 5.7.1 Relay access denied", function()
      assert.are.equal(h.relay_denied("user@other.example"), rcpt(gw, "user@other.example"))
    end)

    it("denies a subdomain of a plain relay domain", function()
      assert.are.equal(h.relay_denied("user@sub.example.test"),
        rcpt(gw, "user@sub.example.test"))
    end)

    it("denies a domain that only ends like the relay domain", function()
      assert.are.equal(h.relay_denied("user@notexample.test"), rcpt(gw, "user@notexample.test"))
    end)

    it("denies the percent hack", function()
      assert.are.equal(h.relay_denied("user%other.example@example.test"),
        rcpt(gw, "user%other.example@example.test"))
    end)

    it("denies a bang path", function()
      assert.are.equal(h.relay_denied("other.example!user@example.test"),
        rcpt(gw, "other.example!user@example.test"))
    end)

    it("denies a quoted @ in the local part", function()
      local text = rcpt(gw, '"user@other.example"@example.test')
      assert.truthy(text:find("^554 5%.7%.1 <[^\n]*>: Relay access denied$"), text)
    end)

    it("denies a source route to another domain", function()
      local text = rcpt(gw, "@example.test:user@other.example")
      assert.truthy(text:find("^554 5%.7%.1 <[^\n]*>: Relay access denied$"), text)
    end)

    it("denies a source route even when the final domain is a relay domain", function()
      local text = rcpt(gw, "@other.example,@relay.example:user@example.test")
      assert.truthy(text:find("^554 5%.7%.1 <[^\n]*>: Relay access denied$"), text)
    end)

    it("logs the reject", function()
      rcpt(gw, "logged@other.example")
      local line = gw:wait_log("[^\n]*event=reject[^\n]*logged@other%.example[^\n]*")
      assert.truthy(line:find("stage=RCPT", 1, true), line)
      assert.truthy(line:find("code=554", 1, true), line)
      assert.truthy(line:find('reply="5.7.1 <logged@other.example>: Relay access denied"',
        1, true), line)
    end)

    it("queues only the accepted recipients", function()
      local c = h.session(gw)
      c:cmd("MAIL FROM:<me@example.org>", R.mail_ok)
      c:cmd("RCPT TO:<user@example.test>", R.rcpt_ok)
      c:cmd("RCPT TO:<user@other.example>", h.relay_denied("user@other.example"))
      local code, text = h.data(c, h.message("mixed"))
      assert.are.equal(250, code, text)
      local env = gateway.parse_queue_file(gw:queue_file(text:match(R.queued)))
      assert.are.same({ "<user@example.test>" }, env.rcpt)
    end)
  end)

  describe("from a client in relay_networks", function()
    local gw
    teardown(h.cleanup)
    setup(function()
      gw = gateway.start { ini_extra = { relay_networks = "127.0.0.0/8" } }
    end)

    it("accepts another domain", function()
      assert.are.equal(R.rcpt_ok, rcpt(gw, "user@other.example"))
    end)

    it("accepts routing syntax from a trusted client", function()
      assert.are.equal(R.rcpt_ok, rcpt(gw, "user%other.example@example.test"))
    end)

    it("delivers to another domain", function()
      local c = h.session(gw)
      local qid = h.deliver(c, "me@example.org", { "user@other.example" }, h.message("relayed"))
      local env = gateway.parse_queue_file(gw:queue_file(qid))
      assert.are.same({ "<user@other.example>" }, env.rcpt)
    end)
  end)

  describe("relay_networks = 127.0.0.2/32", function()
    local gw
    teardown(h.cleanup)
    setup(function()
      gw = gateway.start { ini_extra = { relay_networks = "10.0.0.0/8, 127.0.0.2/32" } }
    end)

    it("lets 127.0.0.2 relay but not 127.0.0.1", function()
      assert.are.equal(R.rcpt_ok, rcpt(gw, "user@other.example", { bind = "127.0.0.2" }))
      assert.are.equal(h.relay_denied("user@other.example"),
        rcpt(gw, "user@other.example", { bind = "127.0.0.1" }))
    end)
  end)

  describe("relay_domains = .example.test", function()
    local gw
    teardown(h.cleanup)
    setup(function()
      gw = gateway.start { ini_extra = { relay_networks = "10.0.0.0/8",
        relay_domains = ".example.test" } }
    end)

    it("covers sub.example.test", function()
      assert.are.equal(R.rcpt_ok, rcpt(gw, "user@sub.example.test"))
      assert.are.equal(R.rcpt_ok, rcpt(gw, "user@a.b.example.test"))
    end)

    it("does not cover example.test itself", function()
      assert.are.equal(h.relay_denied("user@example.test"), rcpt(gw, "user@example.test"))
    end)
  end)

  describe("several relay_domains", function()
    local gw
    teardown(h.cleanup)
    setup(function()
      gw = gateway.start { ini_extra = { relay_networks = "10.0.0.0/8",
        relay_domains = "example.test, example.net other.test" } }
    end)

    it("accepts each listed domain", function()
      assert.are.equal(R.rcpt_ok, rcpt(gw, "a@example.test"))
      assert.are.equal(R.rcpt_ok, rcpt(gw, "a@example.net"))
      assert.are.equal(R.rcpt_ok, rcpt(gw, "a@other.test"))
      assert.are.equal(h.relay_denied("a@example.org"), rcpt(gw, "a@example.org"))
    end)
  end)
end)
