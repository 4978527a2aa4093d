-- Routes (README "Delivery", "Routing"): [delivery] relayhost as the
-- default route, the [host]:port form (no MX lookup) for next_hop and
-- relayhost, tls_name as the name `verify` checks on a static route, and
-- `tls-probe DOMAIN`, which routes as delivery does and shows the server's
-- certificate. Receivers are spec/support/smtp_receiver.py on loopback;
-- DNS is a loopback unbound or a dead port.

local gateway = require "harness"
local tls = require "tls_support"
local ds = require "delivery_support"
local dns_server = require "dns_server"

local h = require "helpers"

local sections, smtpgw, lines = ds.sections, h.smtpgw, h.lines

describe("routes", function()
  local dir, pki

  setup(function()
    dir = gateway.mktempdir()
    pki = tls.make_pki(dir .. "/pki") -- a: a.test.example, signed by pki.ca
  end)

  teardown(function() gateway.rm_rf(dir) end)
  after_each(ds.cleanup)

  it("relayhost = [127.0.0.1]:PORT takes mail for a domain without DNS; a next_hop still wins", function()
    local relay = ds.receiver()
    local own = ds.receiver()
    local gw = gateway.start{ sections = sections("try.lua", {
      delivery = { retry_min = "1s", retry_max = "2s", relayhost = "[127.0.0.1]:" .. relay.port },
      ["domain:own.example"] = { next_hop = "[127.0.0.1]:" .. own.port },
    }) }
    local q1 = ds.submit(gw, "sender@origin.example", { "alice@nodns.example" })
    local q2 = ds.submit(gw, "sender@origin.example", { "bob@own.example" })
    local l1 = ds.wait_delivery(gw, "alice@nodns.example", "sent")
    assert.truthy(l1:find("relay=127.0.0.1[127.0.0.1]:" .. relay.port, 1, true), l1)
    local l2 = ds.wait_delivery(gw, "bob@own.example", "sent")
    assert.truthy(l2:find("relay=127.0.0.1[127.0.0.1]:" .. own.port, 1, true), l2)
    assert.are.same({ "alice@nodns.example" }, relay:wait_messages(1)[1].rcpts)
    assert.are.same({ "bob@own.example" }, own:wait_messages(1)[1].rcpts)
    ds.wait_queue_empty(gw, { q1, q2 })
    -- `route` says the same
    local out, code = smtpgw(gw.ini, "route nodns.example")
    assert.are.equal(0, code, out)
    assert.are.same({ "relayhost = [127.0.0.1]:" .. relay.port .. " (no MX lookup)",
      "127.0.0.1 pref 0 127.0.0.1:" .. relay.port }, lines(out))
  end)

  it("a relayhost that does not exist defers (it is the gateway's mistake), never bounces", function()
    local dns = dns_server.start{ zones = { ["invalid."] = "static" }, data = {} }
    local ok, err = pcall(function()
      local gw = gateway.start{ sections = sections("try.lua", {
        dns = { resolver = dns:resolver() },
        delivery = { retry_min = "1s", retry_max = "2s", relayhost = "[relay.invalid]:2525" },
      }) }
      ds.submit(gw, "sender@origin.example", { "carol@nodns.example" })
      local d = ds.wait_delivery(gw, "carol@nodns.example", "deferred")
      assert.truthy(ds.field(d, "reply"):match("^4%.4%.3 Host or domain name not found: .*%(relayhost%)$"), d)
      assert.are.same({}, ds.delivery_lines(gw, "carol@nodns.example", "bounced"))
    end)
    dns:stop()
    if not ok then error(err, 0) end
  end)

  it("next_hop and relayhost: brackets resolve the name itself, without them its MX", function()
    local dns = dns_server.start{
      zones = { ["relay.test."] = "static" },
      data = { "relay.test. MX 10 mx.relay.test.",
               "relay.test. A 127.0.0.2",
               "mx.relay.test. A 127.0.0.3" },
    }
    local ok, err = pcall(function()
      local ini = dir .. "/route.ini"
      gateway.write_file(ini, gateway.ini_text({}, {
        tls = { cert_dir = false },
        dns = { resolver = dns:resolver() },
        delivery = { relayhost = "relay.test:2525" },
        ["domain:bracket.example"] = { next_hop = "[relay.test]:2600" },
        ["domain:mx.example"] = { next_hop = "relay.test:2600" },
        ["domain:lit.example"] = { next_hop = "[127.0.0.1]:2601" },
      }))
      local out, code = smtpgw(ini, "route bracket.example")
      assert.are.equal(0, code, out)
      assert.are.same({ "static route [domain:bracket.example] next_hop = [relay.test]:2600 (no MX lookup)",
        "relay.test pref 0 127.0.0.2:2600" }, lines(out))
      out, code = smtpgw(ini, "route mx.example")
      assert.are.equal(0, code, out)
      assert.are.same({ "static route [domain:mx.example] next_hop = relay.test:2600 (MX lookup)",
        "mx.relay.test pref 10 127.0.0.3:2600" }, lines(out))
      out, code = smtpgw(ini, "route other.example")
      assert.are.equal(0, code, out)
      assert.are.same({ "relayhost = relay.test:2525 (MX lookup)",
        "mx.relay.test pref 10 127.0.0.3:2525" }, lines(out))
      out, code = smtpgw(ini, "route lit.example")
      assert.are.equal(0, code, out)
      assert.are.same({ "static route [domain:lit.example] next_hop = [127.0.0.1]:2601 (no MX lookup)",
        "127.0.0.1 pref 0 127.0.0.1:2601" }, lines(out))
    end)
    dns:stop()
    if not ok then error(err, 0) end
  end)

  it("-t refuses a next hop it cannot read, naming the line", function()
    local out, code = gateway.check_config(gateway.ini_text({}, {
      ["domain:x.example"] = { next_hop = "::1:25" } }))
    assert.are.equal(1, code, out)
    assert.truthy(out:find(":%d+: next_hop: '::1:25' is not %[HOST%]:PORT, HOST:PORT or " ..
      "ADDRESS:PORT: an IPv6 address needs brackets"), out)
    out, code = gateway.check_config(gateway.ini_text({}, {
      delivery = { relayhost = "[relay.example" } }))
    assert.are.equal(1, code, out)
    assert.truthy(out:find(":%d+: relayhost: '%[relay%.example' is not"), out)
  end)

  it("verify on a static route checks tls_name, and fails without it", function()
    local named = ds.receiver{ cert = pki.a }
    local unnamed = ds.receiver{ cert = pki.a }
    local gw = gateway.start{ sections = sections("require_verify.lua", {
      tls = { ca_file = pki.ca.crt },
      ["domain:named.example"] = { next_hop = "[127.0.0.1]:" .. named.port,
        tls_name = "a.test.example" },
      ["domain:unnamed.example"] = { next_hop = "[127.0.0.1]:" .. unnamed.port },
    }) }
    ds.submit(gw, "sender@origin.example", { "dan@named.example" })
    ds.submit(gw, "sender@origin.example", { "eve@unnamed.example" })
    local sent = ds.wait_delivery(gw, "dan@named.example", "sent")
    assert.truthy(sent:find(" verified=yes", 1, true), sent)
    assert.truthy(sent:find("relay=127.0.0.1[127.0.0.1]:" .. named.port, 1, true), sent)
    assert.are.same({ "dan@named.example" }, named:wait_messages(1)[1].rcpts)
    local d = ds.wait_delivery(gw, "eve@unnamed.example", "deferred")
    local why = ds.field(d, "reply")
    assert.truthy(why:find("4.7.5 Cannot start TLS with 127.0.0.1[127.0.0.1]:" .. unnamed.port, 1, true), d)
    assert.truthy(why:find("name `127.0.0.1' not present in server certificate", 1, true), d)
    assert.are.same({}, unnamed:messages())
  end)

  it("tls-probe DOMAIN routes as delivery does and prints the certificate", function()
    local r = ds.receiver{ cert = pki.a }
    local ini = dir .. "/probe.ini"
    gateway.write_file(ini, gateway.ini_text({}, {
      tls = { ca_file = pki.ca.crt },
      ["domain:partner.example"] = { next_hop = "[127.0.0.1]:" .. r.port,
        tls_name = "a.test.example" },
    }))
    local out, code = smtpgw(ini, "tls-probe partner.example")
    assert.are.equal(0, code, out)
    local want = {
      "static route [domain:partner.example] next_hop = [127.0.0.1]:" .. r.port .. " (no MX lookup)",
      "tls_name = a.test.example",
    }
    local got = lines(out)
    assert.are.same(want, { got[1], got[2] })
    assert.truthy(got[3]:match("^Verified TLS connection established to 127%.0%.0%.1%[127%.0%.0%.1%]:" ..
      r.port .. ": TLSv1%.[23] with cipher %S+ resumed=no$"), out)
    local fields = {}
    for k, v in out:gmatch("\n  (%S+) +([^\n]+)") do fields[k] = v end
    assert.are.equal("CN=a.test.example", fields.subject)
    assert.are.equal("CN=smtpgw Test CA", fields.issuer)
    assert.are.equal("a.test.example", fields.names)
    assert.truthy(fields.not_before:match("^%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d UTC$"), out)
    assert.truthy(fields.not_after:match("^%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d UTC$"), out)
    assert.are.equal(tls.file_fingerprint(pki.a.crt), fields.sha256)
    -- without tls_name (and --name), verify checks the address and fails
    out, code = smtpgw(ini, "tls-probe [127.0.0.1]:" .. r.port)
    assert.are.equal(1, code, out)
    assert.truthy(out:find("TLS to 127.0.0.1[127.0.0.1]:" .. r.port .. " failed: ", 1, true) or
      out:find("TLS to [127.0.0.1]:" .. r.port .. " failed: ", 1, true), out)
  end)
end)
