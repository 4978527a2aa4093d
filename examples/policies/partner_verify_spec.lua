-- Spec of examples/policies/partner_verify.lua. Run from the repository root:
--   busted --lua=luajit examples

local t = require "gateway.testing"
local policy = dofile("examples/policies/partner_verify.lua")

local NEED_STARTTLS = {
  action = "reject", code = 530, text = "5.7.0 Must issue a STARTTLS command first",
}
local function need_cert(addr)
  return {
    action = "reject", code = 550,
    text = "5.7.1 <" .. addr .. ">: Recipient address rejected: TLS with a verified client certificate required",
  }
end

describe("partner_verify.lua outbound", function()
  it("verifies the partner's server certificate", function()
    local ctx = t.ctx{ stage = "client_tls", recipient = "bob@partner.example" }
    assert.are.equal("verify", policy.client_tls(ctx, t.host()))
  end)

  it("verifies the partner's subdomains too", function()
    local ctx = t.ctx{ stage = "client_tls", recipient = "bob@eu.PARTNER.example" }
    assert.are.equal("verify", policy.client_tls(ctx, t.host()))
  end)

  it("verifies the partner even when its section says less", function()
    local ctx = t.ctx{ stage = "client_tls", recipient = "bob@partner.example", section = { tls = "may" } }
    assert.are.equal("verify", policy.client_tls(ctx, t.host()))
  end)

  it("does not mistake look-alike domains for the partner", function()
    for _, rcpt in ipairs({ "bob@notpartner.example", "bob@partner.example.evil", "bob@example" }) do
      local ctx = t.ctx{ stage = "client_tls", recipient = rcpt }
      assert.are.equal("may", policy.client_tls(ctx, t.host()), rcpt)
    end
  end)

  it("treats other domains like try.lua", function()
    assert.are.equal("may", policy.client_tls(t.ctx{ stage = "client_tls" }, t.host()))
    local ctx = t.ctx{ stage = "client_tls", recipient = "a@bank.example", section = { tls = "encrypt" } }
    assert.are.equal("encrypt", policy.client_tls(ctx, t.host()))
  end)
end)

describe("partner_verify.lua inbound", function()
  it("offers STARTTLS without requiring it", function()
    assert.are.equal("may", policy.server_tls(t.ctx{ stage = "server_tls" }, t.host()))
  end)

  it("refuses mail for the partner in plaintext", function()
    local ctx = t.ctx{ stage = "rcpt", recipient = "bob@partner.example" }
    assert.are.same(NEED_STARTTLS, policy.rcpt(ctx, t.host()))
  end)

  it("refuses mail for the partner over TLS without a trusted client certificate", function()
    for _, peer in ipairs({ "none", "untrusted" }) do
      local ctx = t.ctx{ stage = "rcpt", recipient = "bob@partner.example", tls = { active = true, peer = peer } }
      assert.are.same(need_cert("bob@partner.example"), policy.rcpt(ctx, t.host()))
    end
  end)

  it("accepts mail for the partner over TLS with a trusted client certificate", function()
    local ctx = t.ctx{ stage = "rcpt", recipient = "bob@partner.example", tls = { active = true, peer = "trusted" } }
    assert.are.equal("accept", policy.rcpt(ctx, t.host()))
  end)

  it("asks nothing of mail for the partner's subdomains or other domains", function()
    for _, rcpt in ipairs({ "bob@eu.partner.example", "alice@example.test" }) do
      assert.are.equal("accept", policy.rcpt(t.ctx{ stage = "rcpt", recipient = rcpt }, t.host()), rcpt)
    end
  end)

  it("honours other domains' sections like try.lua: tls_in inbound, not tls", function()
    local ctx = t.ctx{ stage = "rcpt", recipient = "a@bank.example", section = { tls_in = "encrypt" } }
    assert.are.same(NEED_STARTTLS, policy.rcpt(ctx, t.host()))
    ctx = t.ctx{ stage = "rcpt", recipient = "a@bank.example", section = { tls = "encrypt" } }
    assert.are.equal("accept", policy.rcpt(ctx, t.host()))
  end)

  it("passes the check smtpgw -t runs", function()
    t.check(policy, { domains = { "partner.example" }, sections = { ["bank.example"] = { tls_in = "verify" } } })
  end)
end)
