-- Unit specs of the stock scripts policies/try.lua, require.lua and
-- require_verify.lua (README.md, "Stock scripts"); no engine.

local t = require "gateway.testing"
local gateway = require "gateway"

local R530 = gateway.reject(530, "5.7.0 Must issue a STARTTLS command first")
local function r550(addr)
  return gateway.reject(550, "5.7.1 <" .. addr
    .. ">: Recipient address rejected: TLS with a verified client certificate required")
end

local function deep_copy(v)
  if type(v) ~= "table" then
    return v
  end
  local out = {}
  for k, x in pairs(v) do
    out[k] = deep_copy(x)
  end
  return out
end

-- sts: the answer to a domain that publishes an enforce MTA-STS policy;
-- dane: to one whose MX hosts publish secure TLSA records (ctx.dane)
local STOCK = {
  { file = "policies/try.lua", server = "may", client = "may", sts = "sts", dane = "dane" },
  { file = "policies/require.lua", server = "encrypt", client = "encrypt", sts = "encrypt", dane = "encrypt" },
  { file = "policies/require_verify.lua", server = "encrypt", client = "verify", sts = "verify", dane = "verify" },
}

for _, stock in ipairs(STOCK) do
  describe(stock.file, function()
    local policy = dofile(stock.file)
    local host

    before_each(function()
      host = t.host()
    end)

    it("has exactly the hooks server_tls, client_tls and rcpt", function()
      local names = {}
      for k, v in pairs(policy) do
        assert.is_function(v, k)
        names[#names + 1] = k
      end
      table.sort(names)
      assert.are.same({ "client_tls", "rcpt", "server_tls" }, names)
    end)

    it("starts with a comment saying what it does", function()
      local f = assert(io.open(stock.file))
      local first = f:read("*l")
      f:close()
      assert.matches("^%-%- ", first)
    end)

    it("answers server_tls with " .. stock.server, function()
      assert.are.equal(stock.server, policy.server_tls(t.ctx{ stage = "server_tls" }, host))
      assert.are.equal(stock.server, policy.server_tls(t.ctx{ stage = "server_tls",
        client = { ip = "2001:db8::1", trusted = true } }, host))
    end)

    it("answers client_tls with " .. stock.client .. " without a section", function()
      assert.are.equal(stock.client, policy.client_tls(t.ctx{ stage = "client_tls" }, host))
      assert.are.equal(stock.client, policy.client_tls(t.ctx{ stage = "client_tls",
        recipient = "u@partner.example" }, host))
    end)

    it("answers client_tls with " .. stock.sts .. " to a domain with an enforce MTA-STS policy", function()
      local function ctls(mode, section)
        return t.ctx{ stage = "client_tls", recipient = "u@sts.example", section = section,
          mta_sts = { mode = mode, mx = mode ~= "none" and { "mx.sts.example" } or {} } }
      end
      assert.are.equal(stock.sts, policy.client_tls(ctls("enforce"), host))
      assert.are.equal(stock.client, policy.client_tls(ctls("testing"), host))
      assert.are.equal(stock.client, policy.client_tls(ctls("none"), host))
      -- the domain's section wins over MTA-STS
      assert.are.equal("none", policy.client_tls(ctls("enforce", { tls = "none" }), host))
      assert.are.equal("sts", policy.client_tls(ctls("testing", { tls = "sts" }), host))
    end)

    it("answers client_tls with " .. stock.dane .. " where DNSSEC says the destination has TLSA records", function()
      local function ctls(dane, mode, section)
        return t.ctx{ stage = "client_tls", recipient = "u@dane.example", section = section, dane = dane,
          mta_sts = mode and { mode = mode, mx = { "mx.dane.example" } } or nil }
      end
      assert.are.equal(stock.dane, policy.client_tls(ctls("secure"), host))
      -- a failed TLSA lookup: dane, which skips the host and defers (RFC 7672)
      assert.are.equal(stock.dane, policy.client_tls(ctls("bogus"), host))
      assert.are.equal(stock.client, policy.client_tls(ctls("insecure"), host))
      -- DANE wins over MTA-STS (RFC 8461 §2); without DANE MTA-STS decides
      assert.are.equal(stock.dane, policy.client_tls(ctls("secure", "enforce"), host))
      assert.are.equal(stock.sts, policy.client_tls(ctls("insecure", "enforce"), host))
      -- the domain's section wins over both
      assert.are.equal("verify", policy.client_tls(ctls("secure", "enforce", { tls = "verify" }), host))
      assert.are.equal("may", policy.client_tls(ctls("bogus", nil, { tls = "may" }), host))
    end)

    it("answers client_tls with the domain's section level, up or down", function()
      for _, level in ipairs(gateway.LEVELS) do
        local ctx = t.ctx{ stage = "client_tls", recipient = "u@partner.example", section = { tls = level } }
        assert.are.equal(level, policy.client_tls(ctx, host))
      end
    end)

    it("answers client_tls with the level of a subdomain section", function()
      local ctx = t.ctx{ stage = "client_tls", recipient = "u@mx1.partner.example",
        section = { name = "domain:.partner.example", tls = "verify" } }
      assert.are.equal("verify", policy.client_tls(ctx, host))
      ctx = t.ctx{ stage = "client_tls", recipient = "u@mx1.partner.example",
        section = { name = "domain:.partner.example", tls = "none" } }
      assert.are.equal("none", policy.client_tls(ctx, host))
    end)

    it("keeps its default for a section without a tls key", function()
      local ctx = t.ctx{ stage = "client_tls", recipient = "u@partner.example",
        section = { next_hop = "127.0.0.1:2600" } }
      assert.are.equal(stock.client, policy.client_tls(ctx, host))
    end)

    it("accepts a recipient without a section, in plaintext too", function()
      assert.are.equal("accept", policy.rcpt(t.ctx{ stage = "rcpt" }, host))
      assert.are.equal("accept", policy.rcpt(t.ctx{ stage = "rcpt",
        tls = { active = true, peer = "untrusted" } }, host))
    end)

    it("accepts a recipient whose domain has only an outbound tls, whatever its level, in plaintext too", function()
      for _, level in ipairs(gateway.LEVELS) do
        for _, tls in ipairs({ { active = false, peer = "none" }, { active = true, peer = "none" } }) do
          assert.are.equal("accept", policy.rcpt(t.ctx{ stage = "rcpt", recipient = "u@partner.example",
            section = { tls = level }, tls = tls }, host))
        end
      end
    end)

    it("accepts a relay_networks client to a domain at tls = verify without TLS", function()
      local ctx = t.ctx{ stage = "rcpt", recipient = "u@partner.example", section = { tls = "verify" },
        client = { ip = "127.0.0.1", trusted = true } }
      assert.are.equal("accept", policy.rcpt(ctx, host))
    end)

    it("refuses plaintext for a domain at tls_in = encrypt or verify with 530 5.7.0", function()
      for _, level in ipairs({ "encrypt", "verify", "VERIFY" }) do
        local ctx = t.ctx{ stage = "rcpt", recipient = "u@partner.example", section = { tls_in = level } }
        assert.are.same(R530, policy.rcpt(ctx, host))
      end
    end)

    it("refuses a relay_networks client in plaintext to a domain at tls_in = encrypt", function()
      local ctx = t.ctx{ stage = "rcpt", recipient = "u@partner.example", section = { tls = "may", tls_in = "encrypt" },
        client = { ip = "127.0.0.1", trusted = true } }
      assert.are.same(R530, policy.rcpt(ctx, host))
    end)

    it("accepts any TLS session for a domain at tls_in = encrypt", function()
      for _, peer in ipairs({ "none", "untrusted", "trusted" }) do
        local ctx = t.ctx{ stage = "rcpt", recipient = "u@partner.example", section = { tls_in = "encrypt" },
          tls = { active = true, peer = peer } }
        assert.are.equal("accept", policy.rcpt(ctx, host))
      end
    end)

    it("refuses TLS without a trusted client certificate for a domain at tls_in = verify with 550 5.7.1", function()
      for _, peer in ipairs({ "none", "untrusted" }) do
        local ctx = t.ctx{ stage = "rcpt", recipient = "Boss@Partner.Example", section = { tls_in = "verify" },
          tls = { active = true, peer = peer } }
        assert.are.same(r550("Boss@Partner.Example"), policy.rcpt(ctx, host))
      end
    end)

    it("accepts TLS with a trusted client certificate for a domain at tls_in = verify", function()
      local ctx = t.ctx{ stage = "rcpt", recipient = "u@partner.example", section = { tls = "none", tls_in = "verify" },
        tls = { active = true, peer = "trusted" } }
      assert.are.equal("accept", policy.rcpt(ctx, host))
    end)

    it("applies a subdomain section inbound too", function()
      local ctx = t.ctx{ stage = "rcpt", recipient = "u@eu.partner.example",
        section = { name = "domain:.partner.example", tls_in = "verify" }, tls = { active = true, peer = "untrusted" } }
      assert.are.same(r550("u@eu.partner.example"), policy.rcpt(ctx, host))
    end)

    it("keeps tls and tls_in apart: the outbound level does not follow tls_in", function()
      local ctx = t.ctx{ stage = "client_tls", recipient = "u@partner.example", section = { tls_in = "verify" } }
      assert.are.equal(stock.client, policy.client_tls(ctx, host))
    end)

    it("passes the check smtpgw -t runs (gateway.testing.check) with tls and tls_in sections", function()
      local n = t.check(policy, { sections = {
        ["partner.example"] = { tls = "verify", tls_in = "verify" },
        [".sub.example"] = { tls = "encrypt", tls_in = "encrypt" },
        ["plain.example"] = { tls = "none" },
      } })
      -- 6 connect-time, 12 helo, 24 mail, 4 domains x (12 rcpt + 20 client_tls)
      assert.are.equal(170, n)
    end)

    it("gives well-formed answers at every stage, as the gateway checks them", function()
      for _, stage in ipairs(t.STAGES) do
        for _, level in ipairs({ false, "none", "may", "encrypt", "verify" }) do
          for _, peer in ipairs({ false, "none", "untrusted", "trusted" }) do
            local over = { stage = stage, section = level and { tls = level, tls_in = level } or nil,
              tls = peer and { active = true, peer = peer } or nil }
            if stage ~= "rcpt" and stage ~= "client_tls" then
              over.section = nil
            end
            if stage == "client_tls" then
              over.tls = nil
            end
            t.run(policy, t.ctx(over), host)
          end
        end
      end
    end)

    it("neither changes ctx nor logs", function()
      local ctx = t.ctx{ stage = "rcpt", recipient = "u@partner.example", section = { tls = "verify", tls_in = "verify" },
        tls = { active = true, peer = "untrusted" } }
      local before = deep_copy(ctx)
      policy.server_tls(t.ctx{ stage = "server_tls" }, host)
      policy.rcpt(ctx, host)
      policy.client_tls(t.ctx{ stage = "client_tls", section = { tls = "may" } }, host)
      assert.are.same(before, ctx)
      assert.are.same({}, host.logs)
    end)
  end)
end
