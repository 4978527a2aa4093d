-- Routing lookups (src/dns.c) through `smtpgw -c FILE route DOMAIN`, which
-- runs the real asynchronous libunbound code on its own loop, against a
-- loopback unbound (spec/support/dns_server.lua) that answers only from the
-- records below and sends nothing anywhere.

local gateway = require "harness"
local dns_server = require "dns_server"

local ZONES = {
  ["example.test."] = "static",
  ["order.test."] = "static",
  ["equal.test."] = "static",
  ["implicit.test."] = "static",
  ["dual.test."] = "static",
  ["nullmx.test."] = "static",
  ["noaddr.test."] = "static",
  ["mxfail.test."] = "static",
  ["partial.test."] = "static",
  ["iplit.test."] = "static",
  ["many.test."] = "static",
  ["refused.test."] = "always_refuse",
}

local DATA = {
  "relay.example.test. A 127.0.0.40",
  -- preference order, listed out of order
  "order.test. MX 20 mx2.order.test.",
  "order.test. MX 5 mx0.order.test.",
  "order.test. MX 10 mx1.order.test.",
  "mx0.order.test. A 127.0.0.10",
  "mx1.order.test. A 127.0.0.11",
  "mx2.order.test. A 127.0.0.12",
  -- two hosts at the same preference, one behind them
  "equal.test. MX 10 a.equal.test.",
  "equal.test. MX 10 b.equal.test.",
  "equal.test. MX 20 c.equal.test.",
  "a.equal.test. A 127.0.0.21",
  "b.equal.test. A 127.0.0.22",
  "c.equal.test. A 127.0.0.23",
  -- no MX: the domain's own address (RFC 5321 §5.1)
  "implicit.test. A 127.0.0.20",
  -- IPv6 and IPv4
  "dual.test. MX 10 mx.dual.test.",
  "mx.dual.test. AAAA ::1",
  "mx.dual.test. A 127.0.0.1",
  "mx.dual.test. A 127.0.0.2",
  -- RFC 7505
  "nullmx.test. MX 0 .",
  -- an MX host that does not exist
  "noaddr.test. MX 10 ghost.noaddr.test.",
  -- an MX host whose lookup fails
  "mxfail.test. MX 10 mx.broken.test.",
  -- the failing host is dropped, the other one kept
  "partial.test. MX 10 mx.broken.test.",
  "partial.test. MX 20 ok.partial.test.",
  "ok.partial.test. A 127.0.0.30",
  -- an address where a name belongs
  "iplit.test. MX 10 192.0.2.1.",
}

-- 12 MX hosts: dns.h keeps the 10 most preferred (DNS_MAX_HOSTS)
for i = 1, 12 do
  DATA[#DATA + 1] = string.format("many.test. MX %d h%02d.many.test.", i, i)
  DATA[#DATA + 1] = string.format("h%02d.many.test. A 127.0.1.%d", i, i)
end

local dns, dir
local ini = {}

local function write_ini(name, sections)
  sections.tls = { cert_dir = false } -- no certificate needed for `route`
  local path = dir .. "/" .. name .. ".ini"
  gateway.write_file(path, gateway.ini_text({}, sections))
  return path
end

-- Runs `route ARGS` with the named ini; returns output, exit code, seconds.
local function route(which, args)
  local t0 = gateway.now()
  local out, code = gateway.run("timeout -k 5 60 " ..
    gateway.shell_quote(gateway.bin()) .. " -c " ..
    gateway.shell_quote(ini[which]) .. " route " .. args .. " </dev/null")
  local took = gateway.now() - t0
  assert.is_nil(gateway.sanitizer_report(out), out)
  return out, code, took
end

local function lines(out)
  local t = {}
  for line in out:gmatch("[^\n]+") do t[#t + 1] = line end
  return t
end

-- The host names of a route's output, in order.
local function hosts(out)
  local t = {}
  for _, line in ipairs(lines(out)) do
    local name = line:match("^(%S+) pref %d+")
    if name then t[#t + 1] = name end
  end
  return t
end

describe("dns route", function()
  setup(function()
    dns = dns_server.start{
      zones = ZONES,
      data = DATA,
      servfail = { "broken.test." },
    }
    dir = gateway.mktempdir()
    local resolver = { resolver = dns:resolver() }
    ini.fixture = write_ini("fixture", {
      dns = resolver,
      ["domain:static.test"] = { next_hop = "relay.example.test:2600" },
      ["domain:.corp.test"] = { next_hop = "[::1]:2601" },
    })
    ini.dead = write_ini("dead", {
      dns = { resolver = "127.0.0.1@" .. dns_server.free_port() },
      ["domain:lit.test"] = { next_hop = "127.0.0.1:2600" },
      ["domain:lit6.test"] = { next_hop = "[::1]:2600" },
    })
    ini.system = write_ini("system", {
      ["domain:lit.test"] = { next_hop = "127.0.0.1:2600" },
    })
  end)

  teardown(function()
    if dns then dns:stop() end
    gateway.rm_rf(dir)
  end)

  it("lists MX hosts by preference with their addresses", function()
    local out, code = route("fixture", "order.test")
    assert.are.equal(0, code, out)
    assert.are.same({
      "mx0.order.test pref 5 127.0.0.10:25",
      "mx1.order.test pref 10 127.0.0.11:25",
      "mx2.order.test pref 20 127.0.0.12:25",
    }, lines(out))
  end)

  it("puts --port on every address", function()
    local out, code = route("fixture", "order.test --port 2525")
    assert.are.equal(0, code, out)
    assert.are.equal("mx0.order.test pref 5 127.0.0.10:2525", lines(out)[1])
  end)

  it("keeps both hosts of equal preference, in random order", function()
    local seen = {}
    for _ = 1, 40 do
      local out, code = route("fixture", "equal.test")
      assert.are.equal(0, code, out)
      local h = hosts(out)
      assert.are.equal(3, #h, out)
      assert.are.equal("c.equal.test", h[3], out)
      seen[h[1] .. " " .. h[2]] = true
      if seen["a.equal.test b.equal.test"] and seen["b.equal.test a.equal.test"] then
        break
      end
    end
    assert.is_true(seen["a.equal.test b.equal.test"], "a before b never seen")
    assert.is_true(seen["b.equal.test a.equal.test"], "b before a never seen")
  end)

  it("uses the domain itself when it has no MX (implicit MX)", function()
    local out, code = route("fixture", "implicit.test")
    assert.are.equal(0, code, out)
    assert.are.same({ "implicit.test pref 0 127.0.0.20:25" }, lines(out))
  end)

  it("gives AAAA and A addresses, IPv6 first, families interleaved", function()
    local out, code = route("fixture", "dual.test")
    assert.are.equal(0, code, out)
    local l = lines(out)
    assert.are.equal(1, #l, out)
    local addrs = {}
    for a in l[1]:gmatch(" (%S+:%d+)") do addrs[#addrs + 1] = a end
    assert.are.equal("mx.dual.test", l[1]:match("^(%S+) pref 10 "), out)
    assert.are.equal(3, #addrs, out)
    assert.are.equal("[::1]:25", addrs[1], out)
    local v4 = { addrs[2], addrs[3] }
    table.sort(v4)
    assert.are.same({ "127.0.0.1:25", "127.0.0.2:25" }, v4)
  end)

  it("keeps at most 10 MX hosts, the most preferred", function()
    local out, code = route("fixture", "many.test")
    assert.are.equal(0, code, out)
    local h = hosts(out)
    assert.are.equal(10, #h, out)
    assert.are.equal("h01.many.test", h[1])
    assert.are.equal("h10.many.test", h[10])
  end)

  it("drops an MX host whose lookup failed and keeps the others", function()
    local out, code = route("fixture", "partial.test")
    assert.are.equal(0, code, out)
    assert.are.same({ "ok.partial.test pref 20 127.0.0.30:25" }, lines(out))
  end)

  it("permfails a null MX (RFC 7505)", function()
    local out, code = route("fixture", "nullmx.test")
    assert.are.equal(1, code, out)
    assert.matches("^permfail: nullmx%.test: null MX", out)
  end)

  it("permfails NXDOMAIN", function()
    local out, code = route("fixture", "missing.example.test")
    assert.are.equal(1, code, out)
    assert.matches("^permfail: missing%.example%.test: domain not found %(NXDOMAIN%)", out)
  end)

  it("permfails when no MX host has an address", function()
    local out, code = route("fixture", "noaddr.test")
    assert.are.equal(1, code, out)
    assert.matches("^permfail: ghost%.noaddr%.test: no address", out)
  end)

  it("tempfails SERVFAIL", function()
    local out, code, took = route("fixture", "broken.test")
    assert.are.equal(75, code, out)
    assert.matches("^tempfail: broken%.test: MX lookup failed: SERVFAIL", out)
    assert.is_true(took < 10, "took " .. took .. " s")
  end)

  it("tempfails a REFUSED answer", function()
    local out, code = route("fixture", "refused.test")
    assert.are.equal(75, code, out)
    assert.matches("^tempfail: refused%.test: MX lookup failed", out)
  end)

  it("tempfails when the only MX host's lookup failed", function()
    local out, code = route("fixture", "mxfail.test")
    assert.are.equal(75, code, out)
    assert.matches("^tempfail: mx%.broken%.test: address lookup failed: SERVFAIL", out)
  end)

  it("does not use an IP address given as MX host", function()
    local out, code = route("fixture", "iplit.test")
    assert.are.equal(75, code, out)
    assert.matches("^tempfail: iplit%.test: MX host 192%.0%.2%.1 is an IP address", out)
  end)

  it("permfails a malformed domain without asking", function()
    local out, code = route("fixture", "'bad..test'")
    assert.are.equal(1, code, out)
    assert.matches("^permfail: invalid domain name", out)
  end)

  it("resolves a static next_hop name through its MX (none: its own address)", function()
    local out, code = route("fixture", "static.test")
    assert.are.equal(0, code, out)
    assert.are.same({
      "static route [domain:static.test] next_hop = relay.example.test:2600 (MX lookup)",
      "relay.example.test pref 0 127.0.0.40:2600",
    }, lines(out))
  end)

  it("takes the next_hop of a .parent section for a subdomain", function()
    local out, code = route("fixture", "mail.corp.test")
    assert.are.equal(0, code, out)
    assert.are.same({
      "static route [domain:.corp.test] next_hop = [::1]:2601 (no MX lookup)",
      "::1 pref 0 [::1]:2601",
    }, lines(out))
  end)

  it("routes an address literal next_hop without DNS (resolver dead)", function()
    local out, code, took = route("dead", "lit.test")
    assert.are.equal(0, code, out)
    assert.are.same({
      "static route [domain:lit.test] next_hop = 127.0.0.1:2600 (no MX lookup)",
      "127.0.0.1 pref 0 127.0.0.1:2600",
    }, lines(out))
    assert.is_true(took < 5, "took " .. took .. " s")
    out, code = route("dead", "lit6.test")
    assert.are.equal(0, code, out)
    assert.are.equal("::1 pref 0 [::1]:2600", lines(out)[2])
  end)

  it("routes an address literal next_hop without [dns] resolver", function()
    local out, code = route("system", "lit.test")
    assert.are.equal(0, code, out)
    assert.are.equal("127.0.0.1 pref 0 127.0.0.1:2600", lines(out)[2])
  end)

  it("asks only the resolver: localhost is not taken from /etc/hosts", function()
    local out, code = route("fixture", "localhost")
    assert.are_not.equal(0, code, out)
    assert.is_nil(out:find("127.0.0.1", 1, true), out)
    assert.matches("^permfail: localhost: domain not found", out)
  end)

  it("refuses a route command without a domain", function()
    local out, code = route("fixture", "")
    assert.are.equal(1, code, out)
    assert.matches("usage:", out)
    out, code = route("fixture", "order.test --port 0")
    assert.are.equal(1, code, out)
  end)
end)
