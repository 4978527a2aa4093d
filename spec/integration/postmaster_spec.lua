-- <postmaster> without a domain (RFC 5321 4.1.1.3, README "SMTP
-- behaviour"): it goes to [gateway] postmaster, and is refused as relaying
-- would be when that is not set; never routed by an MX lookup of the
-- gateway's own host name.

local gateway = require "harness"
local client = require "smtp_client"
local ds = require "delivery_support"
local h = require "helpers"
local R = h.R

describe("postmaster", function()
  teardown(function()
    ds.cleanup()
    h.cleanup()
  end)
  after_each(client.close_all)

  describe("without [gateway] postmaster", function()
    local gw
    teardown(h.cleanup)
    setup(function() gw = gateway.start() end) -- 127.0.0.0/8 may relay

    it("refuses <postmaster> with 554 5.7.1, even from a relay client", function()
      local c = h.session(gw)
      c:cmd("MAIL FROM:<me@example.org>", R.mail_ok)
      c:cmd("RCPT TO:<postmaster>", h.relay_denied("postmaster"))
      c:cmd("RCPT TO:<Postmaster>", h.relay_denied("Postmaster"))
      -- postmaster of a domain is an ordinary address
      c:cmd("RCPT TO:<postmaster@example.test>", R.rcpt_ok)
    end)
  end)

  describe("postmaster = admin@partner.example", function()
    local gw, r
    teardown(function()
      ds.cleanup()
      h.cleanup()
    end)
    setup(function()
      r = ds.receiver { no_starttls = true }
      gw = gateway.start {
        ini_extra = { postmaster = "admin@partner.example", relay_networks = "10.0.0.0/8" },
        sections = { ["domain:partner.example"] = { next_hop = r:addr() } },
      }
    end)

    it("accepts <postmaster> from anyone, queues and delivers it to that address", function()
      local c = h.session(gw)
      c:cmd("MAIL FROM:<me@example.org>", R.mail_ok)
      c:cmd("RCPT TO:<Postmaster>", R.rcpt_ok)
      local code, text = h.data(c, h.message("to postmaster"))
      assert.are.equal(250, code, text)
      local qid = text:match(R.queued)
      local queued = gw:queue_file(qid) -- unless delivery was quicker
      if queued then
        assert.are.same({ "<admin@partner.example>" }, gateway.parse_queue_file(queued).rcpt)
      end
      gw:wait_log("event=postmaster [^\n]*orig_to=<postmaster> to=<admin@partner.example>")
      local ok, missing = r:wait_rcpts({ "admin@partner.example" })
      assert(ok, "not delivered to " .. table.concat(missing or {}, " "))
      local line = ds.wait_delivery(gw, "admin@partner.example", "sent")
      assert.truthy(line:find(":" .. r.port, 1, true), line)
      -- never a route for the gateway's own name
      assert.falsy(gw:log():find("event=delivery[^\n]* to=<postmaster>"))
      assert.falsy(gw:log():find("relay=" .. h.HOST, 1, true))
    end)
  end)

  describe("gateway.ini", function()
    it("refuses a postmaster address without a fully-qualified domain", function()
      for _, bad in ipairs({ "postmaster", "admin@localhost", "@example.test", "a b@example.test" }) do
        local out, code = gateway.check_config("[gateway]\npostmaster = " .. bad .. "\n")
        assert.are.equal(1, code, bad .. ": " .. out)
        assert.truthy(out:find(":2: postmaster: ", 1, true), out)
      end
      local out, code = gateway.check_config("[gateway]\npostmaster = admin@example.test\n")
      assert.are.equal(0, code, out)
    end)
  end)
end)
