-- Spec of examples/policies/internal_tls.lua. Run from the repository root:
--   busted --lua=luajit examples

local t = require "gateway.testing"
local policy = dofile("examples/policies/internal_tls.lua")

local function server_level(ip)
  return policy.server_tls(t.ctx{ stage = "server_tls", client = { ip = ip } }, t.host())
end

local function client_level(recipient)
  return policy.client_tls(t.ctx{ stage = "client_tls", recipient = recipient }, t.host())
end

describe("internal_tls.lua inbound", function()
  it("requires TLS from the internal networks", function()
    for _, ip in ipairs({ "10.0.0.1", "10.255.255.254", "172.16.0.1", "172.31.255.254",
      "192.168.0.1", "192.168.255.254", "fd00::1", "fdff:ffff::1", "FD12:3456::BEEF" }) do
      assert.are.equal("encrypt", server_level(ip), ip)
    end
  end)

  it("offers TLS to everyone else", function()
    for _, ip in ipairs({ "192.0.2.10", "9.255.255.255", "11.0.0.0", "172.15.255.255", "172.32.0.0",
      "192.167.255.255", "192.169.0.0", "2001:db8::1", "fc00::1", "fe80::1", "::1",
      "::ffff:10.0.0.1" }) do
      assert.are.equal("may", server_level(ip), ip)
    end
  end)
end)

describe("internal_tls.lua outbound", function()
  it("requires TLS to the internal domains", function()
    assert.are.equal("encrypt", client_level("ops@mail.internal.example"))
    assert.are.equal("encrypt", client_level("ops@a.b.Internal.Example"))
  end)

  it("tries TLS everywhere else", function()
    assert.are.equal("may", client_level("ops@internal.example"))
    assert.are.equal("may", client_level("ops@notinternal.example"))
    assert.are.equal("may", client_level("ops@example.test"))
  end)

  it("ignores [domain:...] tls settings", function()
    local ctx = t.ctx{ stage = "client_tls", recipient = "a@example.test", section = { tls = "verify" } }
    assert.are.equal("may", policy.client_tls(ctx, t.host()))
  end)
end)
