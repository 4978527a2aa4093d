-- Outbound DANE (README "DANE"): levels dane and dane-only against real
-- receivers (spec/support/smtp_receiver.py, OpenSSL) whose TLSA records
-- live in a DNSSEC-signed zone served by unbound on loopback
-- (spec/support/dnssec_zone.lua: ldns-signzone, auth-zone). The gateway
-- validates with the zone's key as [dns] trust_anchor. Every domain routes
-- by MX (next_hop DOMAIN:PORT, no brackets), so the MX answer, the host's
-- addresses and its TLSA records all come from the signed zone, the TLSA
-- records at _PORT._tcp.MXHOST.

local gateway = require "harness"
local tls = require "tls_support"
local ds = require "delivery_support"
local dnssec = require "dnssec_zone"
local ps = require "policy_support"

describe("outbound DANE", function()
  local dir, zone, gw
  local r_ee, r_ta, r_plain
  local sink = {}

  -- mail for DOMAIN goes by MX at the receiver's port
  local function route(domain, r, level)
    return { next_hop = domain .. ":" .. r.port, tls = level or "dane" }
  end
  -- the same, with no tls key: try.lua decides by ctx.dane
  local function by_mx(domain, r)
    return { next_hop = domain .. ":" .. r.port }
  end

  setup(function()
    dir = gateway.mktempdir()
    local ee = tls.self_signed(dir, "ee", { cn = "mx-ee.example.test",
      san = "DNS:mx-ee.example.test" })
    local ca = tls.ca(dir, "dane-ca", "smtpgw DANE Test CA")
    local leaf = tls.signed(dir, "ta", ca, { cn = "mx-ta.example.test",
      san = "DNS:mx-ta.example.test", eku = "serverAuth" })
    -- the server sends its chain, leaf first, the CA after it
    gateway.write_file(dir .. "/ta-chain.crt",
      gateway.read_file(leaf.crt) .. gateway.read_file(ca.crt))
    r_ee = ds.receiver{ cert = ee }
    r_ta = ds.receiver{ cert = { crt = dir .. "/ta-chain.crt", key = leaf.key } }
    r_plain = ds.receiver() -- no STARTTLS at all
    local ee_311 = dnssec.tlsa(ee.crt, 3, 1, 1)
    local wrong_311 = dnssec.tlsa(ca.crt, 3, 1, 1) -- not the server's key
    local function tcp(port, host) return "_" .. port .. "._tcp." .. host end
    zone = dnssec.start{ zones = {
      { name = "example.test", records = {
        "ee MX 10 mx-ee", "mx-ee A 127.0.0.1",
        tcp(r_ee.port, "mx-ee") .. " TLSA " .. ee_311,
        "bad MX 10 mx-bad", "mx-bad A 127.0.0.1",
        tcp(r_ee.port, "mx-bad") .. " TLSA " .. wrong_311,
        "ta MX 10 mx-ta", "mx-ta A 127.0.0.1",
        tcp(r_ta.port, "mx-ta") .. " TLSA " .. dnssec.tlsa(ca.crt, 2, 1, 1),
        "bogus MX 10 mx-bogus", "mx-bogus A 127.0.0.1",
        tcp(r_ee.port, "mx-bogus") .. " TLSA " .. ee_311,
        "notlsa MX 10 mx-none", "mx-none A 127.0.0.1",
        "only MX 10 mx-none",
        -- TLSA records, but a server that offers no STARTTLS
        "strip MX 10 mx-strip", "mx-strip A 127.0.0.1",
        tcp(r_plain.port, "mx-strip") .. " TLSA " .. ee_311,
        "only-ee MX 10 mx-ee",
      }, break_rrsig = { tcp(r_ee.port, "mx-bogus") .. " TLSA" } },
      -- signed by nobody: insecure, so even its TLSA record means nothing
      { name = "insecure.test", signed = false, records = {
        "@ MX 10 mx", "mx A 127.0.0.1",
        tcp(r_plain.port, "mx") .. " TLSA " .. wrong_311,
      } },
    } }
    sink.gw = gateway.start{ sections = ds.sections("try.lua", {
      dns = { resolver = zone:resolver(), trust_anchor = zone:trust_anchor() },
      ["domain:ee.example.test"] = route("ee.example.test", r_ee),
      ["domain:bad.example.test"] = route("bad.example.test", r_ee),
      ["domain:ta.example.test"] = route("ta.example.test", r_ta),
      ["domain:bogus.example.test"] = route("bogus.example.test", r_ee),
      ["domain:notlsa.example.test"] = route("notlsa.example.test", r_plain),
      ["domain:insecure.test"] = route("insecure.test", r_plain),
      ["domain:only.example.test"] = route("only.example.test", r_plain, "dane-only"),
      ["domain:strip.example.test"] = route("strip.example.test", r_plain),
      ["domain:only-ee.example.test"] = route("only-ee.example.test", r_ee, "dane-only"),
      ["domain:auto-ee.test"] = by_mx("ee.example.test", r_ee),
      ["domain:auto-notlsa.test"] = by_mx("notlsa.example.test", r_plain),
      ["domain:auto-insecure.test"] = by_mx("insecure.test", r_plain),
      ["domain:auto-bogus.test"] = by_mx("bogus.example.test", r_ee),
    }) }
    gw = sink.gw
  end)

  teardown(function()
    ds.cleanup()
    if zone then zone:stop() end
    gateway.rm_rf(dir)
  end)

  local function deliver(rcpt, status)
    ds.submit(gw, "sender@origin.example", { rcpt })
    return ds.wait_delivery(gw, rcpt, status, 1, 20)
  end

  local function got(r, rcpt)
    local _, count = r:rcpts()
    return count[rcpt] ~= nil
  end

  it("TLSA 3 1 1 matching the server's key: sent, verified=dane-ee", function()
    local line = deliver("u@ee.example.test", "sent")
    assert.truthy(line:match(" tls=dane:TLSv1%.[23] verified=dane%-ee "), line)
    assert.truthy(line:find("relay=mx-ee.example.test[127.0.0.1]:" .. r_ee.port, 1, true), line)
    assert.truthy(r_ee:wait_rcpts({ "u@ee.example.test" }))
    assert.are.same({}, r_ee:plaintext({ "MAIL", "RCPT", "DATA" }))
  end)

  it("TLSA 3 1 1 not matching: deferred with the TLSA reason, nothing sent", function()
    local line = deliver("u@bad.example.test", "deferred")
    local reason = ds.field(line, "reason")
    assert.truthy(reason and reason:match("^TLSA 3 1 1 %x+%.%.%. did not match the " ..
      "certificate of mx%-bad%.example%.test$"), line)
    assert.truthy(line:find("4.7.5 Cannot start TLS with mx-bad.example.test", 1, true), line)
    assert.is_false(got(r_ee, "u@bad.example.test"))
    -- the handshake was made, then the session ended before MAIL
    for _, c in ipairs(r_ee:commands()) do
      assert.is_nil(c.line:find("bad.example.test", 1, true), c.line)
    end
  end)

  it("TLSA 2 1 1 of the CA in the server's chain: sent, verified=dane-ta", function()
    local line = deliver("u@ta.example.test", "sent")
    assert.truthy(line:match(" tls=dane:TLSv1%.[23] verified=dane%-ta "), line)
    assert.truthy(r_ta:wait_rcpts({ "u@ta.example.test" }))
  end)

  it("a TLSA RRset with a broken signature: deferred, never connected", function()
    local line = deliver("u@bogus.example.test", "deferred")
    local reason = ds.field(line, "reason") or ""
    assert.truthy(reason:find("TLSA lookup of _" .. r_ee.port ..
      "._tcp.mx-bogus.example.test failed: DNSSEC validation failed", 1, true), line)
    assert.truthy(line:find(" relay=none ", 1, true), line)
    assert.is_false(got(r_ee, "u@bogus.example.test"))
  end)

  it("TLSA records and no STARTTLS offered: deferred, never sent in plaintext", function()
    local line = deliver("u@strip.example.test", "deferred")
    assert.truthy(line:find("4.7.4 TLS is required, but was not offered by host " ..
      "mx-strip.example.test", 1, true), line)
    assert.are.equal("mx-strip.example.test has TLSA records, but offered no STARTTLS",
      ds.field(line, "reason"), line)
    assert.is_false(got(r_plain, "u@strip.example.test"))
  end)

  it("no TLSA records: as may (plaintext to a server without STARTTLS)", function()
    local line = deliver("u@notlsa.example.test", "sent")
    assert.truthy(line:find(" tls=dane:none ", 1, true), line)
    assert.truthy(r_plain:wait_rcpts({ "u@notlsa.example.test" }))
    local plan = gw:log_lines("event=dane")
    local found = false
    for _, l in ipairs(plan) do
      if l:find("host=mx-none.example.test", 1, true) and l:find("plan=may", 1, true) and
        l:find("no TLSA records at _" .. r_plain.port .. "._tcp.mx-none.example.test", 1, true) then
        found = true
      end
    end
    assert.truthy(found, table.concat(plan, "\n"))
  end)

  it("an unsigned zone: as may, its TLSA record ignored", function()
    local line = deliver("u@insecure.test", "sent")
    assert.truthy(line:find(" tls=dane:none ", 1, true), line)
    assert.truthy(r_plain:wait_rcpts({ "u@insecure.test" }))
  end)

  it("dane-only without TLSA records: deferred", function()
    local line = deliver("u@only.example.test", "deferred")
    assert.are.equal("dane-only: no TLSA records at _" .. r_plain.port ..
      "._tcp.mx-none.example.test", ds.field(line, "reason"), line)
    assert.truthy(line:find(" tls=dane-only:none ", 1, true), line)
    assert.is_false(got(r_plain, "u@only.example.test"))
  end)

  it("dane-only with a matching TLSA record: sent", function()
    local line = deliver("u@only-ee.example.test", "sent")
    assert.truthy(line:match(" tls=dane%-only:TLSv1%.[23] verified=dane%-ee "), line)
  end)

  -- try.lua without a [domain] tls: DANE where DNSSEC says the MX hosts
  -- publish TLSA records (ctx.dane), else may
  it("try.lua: a secure TLSA RRset upgrades to dane: sent, verified=dane-ee", function()
    local line = deliver("u@auto-ee.test", "sent")
    assert.truthy(line:match(" tls=dane:TLSv1%.[23] verified=dane%-ee "), line)
    assert.truthy(r_ee:wait_rcpts({ "u@auto-ee.test" }))
  end)

  it("try.lua: no TLSA records (a secure denial) or an unsigned zone: may", function()
    local line = deliver("u@auto-notlsa.test", "sent")
    assert.truthy(line:find(" tls=may:none ", 1, true), line)
    line = deliver("u@auto-insecure.test", "sent")
    assert.truthy(line:find(" tls=may:none ", 1, true), line)
  end)

  it("try.lua: a bogus TLSA answer upgrades to dane, which defers with the TLSA reason", function()
    local line = deliver("u@auto-bogus.test", "deferred")
    assert.truthy(line:find(" tls=dane:none ", 1, true), line)
    local reason = ds.field(line, "reason") or ""
    assert.truthy(reason:find("TLSA lookup of _" .. r_ee.port ..
      "._tcp.mx-bogus.example.test failed: DNSSEC validation failed", 1, true), line)
    assert.is_false(got(r_ee, "u@auto-bogus.test"))
  end)

  -- A policy of its own sees ctx.dane, and its answer (dane-only for a
  -- secure destination) is what the delivery follows.
  it("ctx.dane reaches a policy's client_tls: secure, insecure, bogus, absent", function()
    local script = dir .. "/dane_policy.lua"
    gateway.write_file(script, [[
local gateway = require "gateway"
return {
  client_tls = function(ctx, host)
    host.log("ctx.dane=" .. tostring(ctx.dane) .. " for " .. ctx.domain)
    if ctx.dane == "secure" then return gateway.DANE_ONLY end
    return gateway.MAY
  end,
}
]])
    local sections = ds.sections("try.lua", {
      policy = { script = script },
      dns = { resolver = zone:resolver(), trust_anchor = zone:trust_anchor() },
      ["domain:ee.test"] = by_mx("ee.example.test", r_ee),
      ["domain:plain.test"] = by_mx("insecure.test", r_plain),
      ["domain:bogus.test"] = by_mx("bogus.example.test", r_ee),
      -- a configured [host]: no MX lookup, no ctx.dane
      ["domain:static.test"] = { next_hop = "[127.0.0.1]:" .. r_plain.port },
    })
    local g2 = gateway.start{ sections = sections }
    local ok, err = pcall(function()
      local rcpts = { "a@ee.test", "b@plain.test", "c@bogus.test", "d@static.test" }
      ds.submit(g2, "sender@origin.example", rcpts)
      local sent = ds.wait_delivery(g2, "a@ee.test", "sent", 1, 20)
      assert.truthy(sent:match(" tls=dane%-only:TLSv1%.[23] verified=dane%-ee "), sent)
      assert.truthy(ds.wait_delivery(g2, "b@plain.test", "sent", 1, 20):find(" tls=may:none ", 1, true))
      -- may goes to the host a failed TLSA lookup would skip under dane
      assert.truthy(ds.wait_delivery(g2, "c@bogus.test", "sent", 1, 20):find(" tls=may:TLSv1", 1, true))
      assert.truthy(ds.wait_delivery(g2, "d@static.test", "sent", 1, 20))
      local said = {}
      for _, l in ipairs(g2:log_lines("event=policy_log[^\n]*hook=client_tls")) do
        local v, d = l:match("ctx%.dane=(%S+) for ([%w%.%-]+)")
        if v then said[d] = said[d] and (said[d] .. "," .. v) or v end
      end
      -- called at once without it, then again once the TLSA answers are in
      assert.are.same({ ["ee.test"] = "nil,secure", ["plain.test"] = "nil,insecure",
        ["bogus.test"] = "nil,bogus", ["static.test"] = "nil" }, said)
    end)
    g2:stop()
    if not ok then error(err, 0) end
  end)
end)

describe("DANE configuration", function()
  local dir

  setup(function() dir = gateway.mktempdir() end)
  teardown(function() gateway.rm_rf(dir) end)

  local function check(sections)
    local out, code = gateway.check_config(gateway.ini_text({}, sections))
    return out, code
  end

  it("-t names a trust_anchor that cannot be read, with its line", function()
    local out, code = check{ dns = { resolver = "127.0.0.1@9",
      trust_anchor = dir .. "/missing.key" } }
    assert.are.equal(1, code, out)
    assert.truthy(out:match(":%d+: trust_anchor " .. dir:gsub("%p", "%%%0") ..
      "/missing%.key: No such file or directory"), out)
  end)

  it("-t refuses a trust_anchor without DS or DNSKEY records", function()
    gateway.write_file(dir .. "/empty.key", "; nothing here\n")
    local out, code = check{ dns = { resolver = "127.0.0.1@9",
      trust_anchor = dir .. "/empty.key" } }
    assert.are.equal(1, code, out)
    assert.truthy(out:find("no DS or DNSKEY record in it", 1, true), out)
  end)

  it("-t has libunbound load the trust_anchor", function()
    gateway.write_file(dir .. "/broken.key", "example.test. IN DNSKEY not a key\n")
    local out, code = check{ dns = { resolver = "127.0.0.1@9",
      trust_anchor = dir .. "/broken.key" } }
    assert.are.equal(1, code, out)
    assert.truthy(out:find("broken.key: libunbound cannot load it as DS or DNSKEY records", 1, true), out)
  end)

  it("dane is an outbound level only: server_level = dane is refused", function()
    local out, code = check{ tls = { server_level = "dane" } }
    assert.are.equal(1, code, out)
    assert.truthy(out:find("server_level: 'dane' is an outbound level", 1, true), out)
  end)

  -- explain asks no DNS: --dane supposes what DNSSEC would say, and the
  -- `source` line names the input client_tls decided by
  describe("explain", function()
    local ini

    local function explain(rcpt, extra, sections)
      gateway.write_file(ini, gateway.ini_text({}, sections or {
        policy = { script = ds.policy("try.lua") },
        dns = { resolver = "127.0.0.1@9" },
        ["domain:partner.example"] = { tls = "verify" },
        ["domain:static.example"] = { next_hop = "[127.0.0.1]:2525" },
      }))
      local out, code = gateway.run(gateway.shell_quote(gateway.bin()) .. " -c " ..
        gateway.shell_quote(ini) .. " explain --client 192.0.2.1 --rcpt " .. rcpt ..
        (extra and " " .. extra or "") .. " 2>&1")
      assert.are.equal(0, code, out)
      return ps.explain_table(out), out
    end

    setup(function() ini = dir .. "/explain.ini" end)

    it("try.lua with --dane secure: dane, decided by DANE", function()
      local t, out = explain("u@dane.example", "--dane secure")
      assert.are.equal("secure (supposed: --dane)", t.dane, out)
      assert.are.equal("dane decided by client_tls", t.outbound, out)
      assert.are.equal("DANE", t.source, out)
      assert.truthy(t.mechanism:find("^DANE: TLS authenticated by the TLSA records"), out)
    end)

    it("--dane bogus: dane, which skips the host; insecure: may by default", function()
      local t, out = explain("u@dane.example", "--dane bogus")
      assert.are.equal("dane decided by client_tls", t.outbound, out)
      assert.truthy(t.mechanism:find("a TLSA lookup failed", 1, true), out)
      t, out = explain("u@dane.example", "--dane insecure")
      assert.are.equal("may decided by client_tls", t.outbound, out)
      assert.are.equal("the policy's default", t.source, out)
    end)

    it("the domain's section wins over DANE, and says so", function()
      local t, out = explain("u@partner.example", "--dane secure")
      assert.are.equal("verify decided by client_tls", t.outbound, out)
      assert.are.equal("the domain's section", t.source, out)
    end)

    it("without --dane, for a configured host, and with trust_anchor = none: no ctx.dane", function()
      local t, out = explain("u@dane.example")
      assert.truthy(t.dane:find("^not known: explain asks no DNS"), out)
      assert.are.equal("may decided by client_tls", t.outbound, out)
      t, out = explain("u@static.example", "--dane secure")
      assert.truthy(t.dane:find("^not looked up: mail for static.example goes to a configured host"), out)
      assert.are.equal("may decided by client_tls", t.outbound, out)
      t, out = explain("u@dane.example", "--dane secure", {
        dns = { resolver = "127.0.0.1@9", trust_anchor = "none" } })
      assert.are.equal("not looked up: [dns] trust_anchor = none", t.dane, out)
      assert.are.equal("may decided by client_tls (absent: default)", t.outbound, out)
      assert.are.equal("the policy's default (no client_tls)", t.source, out)
    end)

    it("without a script the built-in default follows DANE too", function()
      local t, out = explain("u@dane.example", "--dane secure", { dns = { resolver = "127.0.0.1@9" } })
      assert.are.equal("dane decided by client_tls (absent: default)", t.outbound, out)
      assert.are.equal("DANE", t.source, out)
    end)
  end)

  it("accepts tls = dane and dane-only in a domain section, and trust_anchor = none", function()
    local out, code = check{ dns = { resolver = "127.0.0.1@9", trust_anchor = "none" },
      ["domain:a.example"] = { tls = "dane" }, ["domain:b.example"] = { tls = "DANE-only" } }
    assert.are.equal(0, code, out)
  end)
end)
