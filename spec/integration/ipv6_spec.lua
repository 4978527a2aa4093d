-- Listening on IPv6 loopback and on two addresses at once.

local gateway = require "harness"
local client = require "smtp_client"
local h = require "helpers"
local R = h.R

describe("ipv6", function()
  after_each(h.cleanup)

  it("listens on [::1]:0 and takes mail from ::1", function()
    if not client.have_ipv6() then
      pending("::1 is not available on this machine")
      return
    end
    local gw = gateway.start { ini_extra = { listen = "[::1]:0" } }
    assert.truthy(gw:addr():match("^%[::1%]:%d+$"), gw:addr())
    local c = h.session(gw, { host = "::1" })
    local qid = h.deliver(c, "me@example.org", { "user@example.test" }, h.message("v6"))
    c:cmd("QUIT", R.bye)
    local env, body = gateway.parse_queue_file(gw:queue_file(qid))
    assert.are.equal("::1", env.client)
    assert.truthy(gateway.header(body, "Received"):find("::1", 1, true), body)
    -- the log names the client (README leaves the IPv6 form open)
    assert.truthy(gw:log():find("event=connect sid=%d+ client=%[?::1%]?:%d+"), gw:log())
  end)

  it("::1 is a relay client under the default relay_networks", function()
    if not client.have_ipv6() then
      pending("::1 is not available on this machine")
      return
    end
    local gw = gateway.start { ini_extra = { listen = "[::1]:0", relay_networks = false } }
    local c = h.session(gw, { host = "::1" })
    c:cmd("MAIL FROM:<me@example.org>", R.mail_ok)
    c:cmd("RCPT TO:<user@other.example>", R.rcpt_ok)
  end)

  it("listens on IPv4 and IPv6 at once", function()
    if not client.have_ipv6() then
      pending("::1 is not available on this machine")
      return
    end
    local gw = gateway.start { ini_extra = { listen = "127.0.0.1:0, [::1]:0" },
      expect_listen = 2 }
    local ports = {}
    for i = 1, 2 do
      local addr = gw:addr(i)
      local host = addr:match("^%[(.*)%]:%d+$") or addr:match("^(.*):%d+$")
      local c = h.session(gw, { host = host, port = gw:port(i) })
      c:cmd("NOOP", R.ok)
      c:close()
      ports[host] = true
    end
    assert.is_true(ports["127.0.0.1"])
    assert.is_true(ports["::1"])
  end)
end)
