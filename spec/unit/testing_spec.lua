-- Unit specs of lua/gateway/testing.lua (the busted kit for policy specs).

local t = require "gateway.testing"

describe("gateway.testing.ctx", function()
  it("builds a rcpt ctx by default with the README's fields", function()
    assert.are.same({
      stage = "rcpt",
      hostname = "mx.example.test",
      client = { ip = "192.0.2.10", port = 40000, trusted = false },
      helo = "client.example.org",
      tls = { active = false, peer = "none" },
      sender = "sender@example.org",
      recipient = "user@example.test",
      domain = "example.test",
    }, t.ctx())
  end)

  it("has exactly the fields of each stage", function()
    local expect = {
      server_tls = { "client", "hostname", "stage", "tls" },
      connect = { "client", "hostname", "stage", "tls" },
      helo = { "client", "helo", "hostname", "stage", "tls" },
      mail = { "client", "helo", "hostname", "sender", "stage", "tls" },
      rcpt = { "client", "domain", "helo", "hostname", "recipient", "sender", "stage", "tls" },
      client_tls = { "domain", "hostname", "recipient", "sender", "stage" },
    }
    for _, stage in ipairs(t.STAGES) do
      local ctx = t.ctx{ stage = stage }
      local keys = {}
      for k in pairs(ctx) do
        keys[#keys + 1] = k
      end
      table.sort(keys)
      assert.are.same(expect[stage], keys, stage)
      assert.are.equal(stage, ctx.stage)
      assert.is_true(t.check_shape(ctx))
    end
  end)

  it("fills the domain from the recipient, lower case", function()
    local ctx = t.ctx{ stage = "rcpt", recipient = "U@Partner.Example", tls = { active = true, peer = "trusted" } }
    assert.are.equal("partner.example", ctx.domain)
    assert.are.equal("U@Partner.Example", ctx.recipient)
    assert.are.equal("client_tls", t.ctx{ stage = "client_tls", recipient = "a@b.example" }.stage)
    assert.are.equal("b.example", t.ctx{ stage = "client_tls", recipient = "a@b.example" }.domain)
  end)

  it("keeps a domain that is given", function()
    assert.are.equal("other.example", t.ctx{ recipient = "postmaster", domain = "other.example" }.domain)
  end)

  it("deep-merges nested tables and fills tls version and cipher when active", function()
    local ctx = t.ctx{ stage = "rcpt", recipient = "u@partner.example", tls = { active = true, peer = "trusted" },
      client = { ip = "2001:db8::7" } }
    assert.are.same({ ip = "2001:db8::7", port = 40000, trusted = false }, ctx.client)
    assert.are.same({ active = true, peer = "trusted", version = "TLSv1.3", cipher = "TLS_AES_256_GCM_SHA384" },
      ctx.tls)
  end)

  it("keeps a given tls version, cipher and sni", function()
    local ctx = t.ctx{ stage = "helo", tls = { active = true, version = "TLSv1.2",
      cipher = "ECDHE-RSA-AES256-GCM-SHA384", sni = "mx.example.test" } }
    assert.are.same({ active = true, peer = "none", version = "TLSv1.2",
      cipher = "ECDHE-RSA-AES256-GCM-SHA384", sni = "mx.example.test" }, ctx.tls)
  end)

  it("names a section after the domain when no name is given", function()
    local ctx = t.ctx{ stage = "client_tls", recipient = "u@partner.example", section = { tls = "verify" } }
    assert.are.same({ name = "domain:partner.example", tls = "verify" }, ctx.section)
    ctx = t.ctx{ recipient = "u@a.partner.example", section = { name = "domain:.partner.example", tls = "encrypt" } }
    assert.are.same({ name = "domain:.partner.example", tls = "encrypt" }, ctx.section)
  end)

  it("returns fresh tables each time and does not keep the overrides", function()
    local over = { client = { ip = "10.0.0.1" }, section = { tls = "may" } }
    local a, b = t.ctx(over), t.ctx(over)
    assert.are_not.equal(a.client, b.client)
    assert.are_not.equal(a.client, over.client)
    a.client.port = 1
    a.section.next_hop = "x"
    assert.are.equal(40000, b.client.port)
    assert.are.same({ ip = "10.0.0.1" }, over.client)
    assert.are.same({ tls = "may" }, over.section)
    assert.are.equal(40000, t.ctx().client.port)
  end)

  it("removes a field given as t.NIL", function()
    local ctx = t.ctx{ stage = "rcpt", section = t.NIL, tls = { active = true, sni = t.NIL } }
    assert.is_nil(ctx.section)
    assert.is_nil(ctx.tls.sni)
    ctx = t.ctx({ stage = "rcpt", tls = { active = true, cipher = t.NIL } }, { check = false })
    assert.is_nil(ctx.tls.cipher)
    assert.are.equal("TLSv1.3", ctx.tls.version)
    assert.has_error(function() t.ctx{ stage = "rcpt", helo = t.NIL } end,
      'gateway.testing.ctx: helo: missing (required at stage "rcpt")')
  end)

  it("raises when the result does not have the stage's shape", function()
    assert.has_error(function() t.ctx{ stage = "connect", recipient = "u@example.test" } end,
      'gateway.testing.ctx: recipient: not a field at stage "connect" (only at rcpt, client_tls)')
    assert.has_error(function() t.ctx{ tls = { actve = true } } end,
      'gateway.testing.ctx: tls.actve: unknown field at stage "rcpt"')
    assert.has_error(function() t.ctx{ client = { port = "25" } } end,
      "gateway.testing.ctx: client.port: expected number, got string")
    assert.has_error(function() t.ctx{ tls = { peer = "trusted" } } end,
      'gateway.testing.ctx: tls.peer: must be "none" while tls.active is not true, got "trusted"')
    assert.has_error(function() t.ctx{ stage = "connect", section = { tls = "may" } } end)
    assert.has_error(function() t.ctx{ stage = "rcpt", recipient = "postmaster" } end,
      'gateway.testing.ctx: domain: missing (required at stage "rcpt")')
  end)

  it("builds an off-shape ctx when asked", function()
    local ctx = t.ctx({ stage = "connect", extra = 1 }, { check = false })
    assert.are.equal(1, ctx.extra)
  end)

  it("raises on a bad stage or overrides", function()
    assert.has_error(function() t.ctx{ stage = "data" } end,
      'gateway.testing.ctx: stage must be one of server_tls, connect, helo, mail, rcpt, client_tls, got "data"')
    assert.has_error(function() t.ctx("rcpt") end)
  end)
end)

describe("gateway.testing.host", function()
  it("records log messages in order", function()
    local host = t.host()
    host.log("one")
    host.log("two")
    host.log(3)
    assert.are.same({ "one", "two", "3" }, host.logs)
  end)

  it("refuses a log message that is not a string", function()
    local host = t.host()
    assert.has_error(function() host.log(nil) end, "host.log: message must be a string, got nil")
    assert.has_error(function() host:log("colon call") end, "host.log: message must be a string, got table")
    assert.are.same({}, host.logs)
  end)

  it("has a clock that stands still and can be set", function()
    local host = t.host()
    assert.are.equal(t.DEFAULTS.now, host.now())
    assert.are.equal(host.now(), host.now())
    assert.are.equal(123, t.host{ now = 123 }.now())
    host.clock = 1000.5
    assert.are.equal(1000.5, host.now())
    assert.has_error(function() t.host{ now = "noon" } end)
  end)

  it("gives every host its own log", function()
    local a, b = t.host(), t.host()
    a.log("x")
    assert.are.same({}, b.logs)
  end)
end)

describe("gateway.testing.check_shape", function()
  it("accepts every fixture", function()
    for _, stage in ipairs(t.STAGES) do
      assert.is_true(t.check_shape(t.ctx{ stage = stage }))
    end
    assert.is_true(t.check_shape(t.ctx{ section = { tls = "verify", next_hop = "127.0.0.1:2600" } }))
    assert.is_true(t.check_shape(t.ctx{ stage = "helo", tls = { active = true, peer = "trusted", sni = "mx" } }))
  end)

  it("accepts a hand-written engine-like ctx with optional fields absent", function()
    assert.is_true(t.check_shape({
      stage = "client_tls", hostname = "mx", sender = "", recipient = "a@b", domain = "b",
    }))
    assert.is_true(t.check_shape({
      stage = "connect", hostname = "mx",
      client = { ip = "::1", port = 1, trusted = true },
      tls = { active = false, peer = "none" },
    }))
  end)

  local function check(ctx)
    local ok, msg = t.check_shape(ctx)
    assert.is_false(ok)
    return msg
  end

  local function rcpt(over)
    return t.ctx(over or {}, { check = false })
  end

  it("catches a wrong type", function()
    assert.are.equal("client.port: expected number, got string", check(rcpt{ client = { port = "40000" } }))
    assert.are.equal("client.trusted: expected boolean, got string", check(rcpt{ client = { trusted = "no" } }))
    assert.are.equal("tls.active: expected boolean, got number", check(rcpt{ tls = { active = 1 } }))
    assert.are.equal("hostname: expected string, got number", check(rcpt{ hostname = 5 }))
    assert.are.equal("section: expected table, got string", check(rcpt{ section = "domain:x" }))
    assert.are.equal("client: expected table, got string", check(rcpt{ client = "192.0.2.1" }))
    assert.are.equal("section.next_hop: expected string, got number",
      check(rcpt{ section = { next_hop = 25 } }))
  end)

  it("checks ctx.mta_sts: client_tls only, a mode and a list of patterns", function()
    local function ctls(over)
      over.stage = "client_tls"
      return t.ctx(over, { check = false })
    end
    assert.is_true(t.check_shape(ctls{ mta_sts = { mode = "enforce", mx = { "mx.example.test", "*.example.test" } } }))
    assert.is_true(t.check_shape(ctls{ mta_sts = { mode = "none", mx = {} } }))
    assert.are.equal('mta_sts.mode: expected one of enforce, testing, none, got "strict"',
      check(ctls{ mta_sts = { mode = "strict", mx = {} } }))
    assert.are.equal('mta_sts.mx: missing (required at stage "client_tls")', check(ctls{ mta_sts = { mode = "none" } }))
    assert.are.equal("mta_sts.mx[2]: expected string, got number",
      check(ctls{ mta_sts = { mode = "testing", mx = { "a.example", 2 } } }))
    assert.are.equal('mta_sts.mx: unknown field "x" in a list',
      check(ctls{ mta_sts = { mode = "testing", mx = { "a.example", x = "b" } } }))
    assert.are.equal('mta_sts: not a field at stage "rcpt" (only at client_tls)',
      check(rcpt{ mta_sts = { mode = "none", mx = {} } }))
  end)

  it("checks ctx.dane: client_tls only, secure, insecure or bogus", function()
    local function ctls(over)
      over.stage = "client_tls"
      return t.ctx(over, { check = false })
    end
    for _, state in ipairs({ "secure", "insecure", "bogus" }) do
      assert.is_true(t.check_shape(ctls{ dane = state }))
    end
    assert.are.equal('dane: expected one of secure, insecure, bogus, got "yes"', check(ctls{ dane = "yes" }))
    assert.are.equal("dane: expected string, got boolean", check(ctls{ dane = true }))
    assert.are.equal('dane: not a field at stage "rcpt" (only at client_tls)', check(rcpt{ dane = "secure" }))
  end)

  it("catches an unknown field", function()
    assert.are.equal('colour: unknown field at stage "rcpt"', check(rcpt{ colour = "blue" }))
    assert.are.equal('client.name: unknown field at stage "rcpt"', check(rcpt{ client = { name = "x" } }))
    assert.are.equal('tls.Peer: unknown field at stage "rcpt"', check(rcpt{ tls = { Peer = "none" } }))
    assert.are.equal('section.max: unknown field at stage "rcpt"', check(rcpt{ section = { max = "1" } }))
    assert.are.equal('[1]: unknown field at stage "rcpt"', check(rcpt{ "array" }))
    assert.are.equal('helo: not a field at stage "connect" (only at helo, mail, rcpt)',
      check(t.ctx({ stage = "connect", helo = "x" }, { check = false })))
    assert.are.equal('client: not a field at stage "client_tls" (only at server_tls, connect, helo, mail, rcpt)',
      check(t.ctx({ stage = "client_tls", client = { ip = "x", port = 1, trusted = false } }, { check = false })))
  end)

  it("catches a missing field", function()
    assert.are.equal('sender: missing (required at stage "rcpt")', check(rcpt{ sender = t.NIL }))
    assert.are.equal('client.ip: missing (required at stage "rcpt")', check(rcpt{ client = { ip = t.NIL } }))
    assert.are.equal('tls.peer: missing (required at stage "rcpt")', check(rcpt{ tls = { peer = t.NIL } }))
    assert.are.equal('tls.cipher: missing (required at stage "rcpt")',
      check(rcpt{ tls = { active = true, cipher = t.NIL } }))
    assert.are.equal('section.name: missing (required at stage "rcpt")',
      check({ stage = "rcpt", hostname = "mx", client = { ip = "x", port = 1, trusted = false }, helo = "h",
        tls = { active = false, peer = "none" }, sender = "", recipient = "a@b", domain = "b",
        section = { tls = "may" } }))
    assert.are.equal('hostname: missing (required at stage "server_tls")', check({ stage = "server_tls" }))
    assert.are.equal('client: missing (required at stage "server_tls")',
      check({ stage = "server_tls", hostname = "mx" }))
    assert.are.equal('sender: missing (required at stage "client_tls")',
      check({ stage = "client_tls", hostname = "mx" }))
    assert.are.equal("stage: missing", check({ hostname = "mx" }))
  end)

  it("checks the few value rules", function()
    assert.are.equal('stage: expected one of server_tls, connect, helo, mail, rcpt, client_tls, got "data"',
      check({ stage = "data" }))
    assert.are.equal("stage: expected string, got number", check({ stage = 1 }))
    assert.are.equal('tls.peer: expected one of none, untrusted, trusted, got "Trusted"',
      check(rcpt{ tls = { active = true, peer = "Trusted" } }))
    assert.are.equal('domain: must be lower case, got "Example.test"', check(rcpt{ domain = "Example.test" }))
    assert.are.equal('section.name: malformed value "partner.example"',
      check(rcpt{ section = { name = "partner.example" } }))
    assert.are.equal("tls.version: must be absent while tls.active is not true",
      check(rcpt{ tls = { version = "TLSv1.3" } }))
    assert.are.equal("tls.sni: must be absent while tls.active is not true",
      check(rcpt{ tls = { sni = "mx.example.test" } }))
    assert.are.equal('tls.peer: must be "none" while tls.active is not true, got "untrusted"',
      check(rcpt{ tls = { peer = "untrusted" } }))
  end)

  it("refuses what is not a table", function()
    assert.are.equal("ctx: expected table, got nil", check(nil))
    assert.are.equal("ctx: expected table, got string", check("rcpt"))
  end)

  it("describes the shape per stage", function()
    assert.are.equal("string", t.SHAPE.rcpt.domain.type)
    assert.is_true(t.SHAPE.rcpt.domain.required)
    assert.is_false(t.SHAPE.rcpt.section.required)
    assert.are.equal("number", t.SHAPE.connect.client.fields.port.type)
    assert.are.equal("active", t.SHAPE.helo.tls.fields.version.when)
    assert.is_true(t.SHAPE.helo.tls.fields.version.required)
    assert.is_false(t.SHAPE.helo.tls.fields.sni.required)
    assert.is_nil(t.SHAPE.connect.helo)
    assert.is_nil(t.SHAPE.client_tls.tls)
    for _, stage in ipairs(t.STAGES) do
      assert.is_table(t.SHAPE[stage])
      assert.is_table(t.SHAPE[stage].stage)
      assert.is_table(t.SHAPE[stage].hostname)
    end
  end)
end)

describe("gateway.testing.run", function()
  local gateway = require "gateway"

  it("calls the hook of ctx.stage and returns its answer", function()
    local seen
    local policy = {
      server_tls = function() return "encrypt" end,
      rcpt = function(ctx, host) seen = host; host.log(ctx.recipient); return gateway.reject(550, "5.1.1 no") end,
    }
    local host = t.host()
    assert.are.equal("encrypt", t.run(policy, t.ctx{ stage = "server_tls" }))
    assert.are.same(gateway.reject(550, "5.1.1 no"), t.run(policy, t.ctx{ stage = "rcpt" }, host))
    assert.are.equal(host, seen)
    assert.are.same({ "user@example.test" }, host.logs)
  end)

  it("gives the gateway's defaults for absent hooks", function()
    assert.are.equal("may", t.run({}, t.ctx{ stage = "server_tls" }))
    assert.are.equal("verify", t.run({}, t.ctx{ stage = "server_tls" }, nil, { server_level = "verify" }))
    assert.are.equal("may", t.run({}, t.ctx{ stage = "client_tls" }))
    assert.are.equal("sts", t.run({}, t.ctx{ stage = "client_tls",
      mta_sts = { mode = "enforce", mx = { "mx.example.test" } } }))
    assert.are.equal("may", t.run({}, t.ctx{ stage = "client_tls",
      mta_sts = { mode = "testing", mx = { "mx.example.test" } } }))
    for _, stage in ipairs({ "connect", "helo", "mail", "rcpt" }) do
      assert.are.equal("accept", t.run({}, t.ctx{ stage = stage }))
    end
  end)

  it("takes a level in any case and returns it in lower case, as the gateway reads it", function()
    assert.are.equal("encrypt", t.run({ server_tls = function() return "Encrypt" end }, t.ctx{ stage = "server_tls" }))
    assert.are.equal("may", t.run({ client_tls = function() return "MAY" end }, t.ctx{ stage = "client_tls" }))
  end)

  it("raises on answers the gateway would refuse", function()
    assert.has_error(function()
      t.run({ server_tls = function() return "maybe" end }, t.ctx{ stage = "server_tls" })
    end,
      'gateway.testing.run: server_tls returned "maybe", not a level')
    assert.has_error(function()
      t.run({ server_tls = function() return "sts" end }, t.ctx{ stage = "server_tls" })
    end, 'gateway.testing.run: server_tls returned "sts", an outbound level')
    assert.are.equal("sts", t.run({ client_tls = function() return "STS" end }, t.ctx{ stage = "client_tls" }))
    assert.has_error(function() t.run({ client_tls = function() end }, t.ctx{ stage = "client_tls" }) end,
      "gateway.testing.run: client_tls returned nil, not a level")
    assert.has_error(function() t.run({ mail = function() return "ok" end }, t.ctx{ stage = "mail" }) end,
      'gateway.testing.run: mail returned a malformed verdict: a verdict is "accept" or a table, got "ok"')
    assert.has_error(function()
      t.run({ rcpt = function() return { action = "reject", code = 250, text = "x" } end }, t.ctx())
    end, "gateway.testing.run: rcpt returned a malformed verdict: "
      .. "reject code must be an integer from 400 to 599, got 250")
    assert.has_error(function() t.run({ helo = "accept" }, t.ctx{ stage = "helo" }) end,
      "gateway.testing.run: hook helo is a string, not a function")
    assert.has_error(function() t.run(nil, t.ctx()) end)
    assert.has_error(function() t.run({}, { stage = "data" }) end)
  end)
end)

describe("gateway.testing.section_for", function()
  local sections = {
    ["partner.example"] = { tls = "verify" },
    [".partner.example"] = { tls = "encrypt" },
    [".example"] = { tls = "may" },
    ["a.b.example"] = {},
  }

  it("picks the exact name first, then the longest .NAME, ignoring case", function()
    assert.are.equal("partner.example", t.section_for("partner.example", sections))
    assert.are.equal("partner.example", t.section_for("Partner.EXAMPLE", sections))
    assert.are.equal(".partner.example", t.section_for("mx.partner.example", sections))
    assert.are.equal(".example", t.section_for("other.example", sections))
    assert.are.equal("a.b.example", t.section_for("a.b.example", sections))
    assert.are.equal(".example", t.section_for("x.a.b.example", sections))
  end)

  it("gives nil when no section covers the domain", function()
    assert.is_nil(t.section_for("example", sections))
    assert.is_nil(t.section_for("example.test", sections))
    assert.is_nil(t.section_for(nil, sections))
    assert.is_nil(t.section_for("a.example", nil))
  end)
end)

describe("gateway.testing.fixtures", function()
  local function all(opts)
    local out = {}
    for ctx, group, desc in t.fixtures(opts) do
      out[#out + 1] = { ctx = ctx, group = group, desc = desc }
    end
    return out
  end

  local function count(list, pred)
    local n = 0
    for _, f in ipairs(list) do
      if pred(f.ctx) then n = n + 1 end
    end
    return n
  end

  it("covers every stage with ctxs that have the engine's shape", function()
    local list = all()
    local stages = {}
    for _, f in ipairs(list) do
      assert.is_true(t.check_shape(f.ctx))
      stages[f.ctx.stage] = (stages[f.ctx.stage] or 0) + 1
      assert.is_string(f.desc)
      assert.is_number(f.group)
    end
    -- 3 clients; helo, mail and rcpt in plaintext and over TLS with each
    -- kind of client certificate; mail and client_tls with both senders,
    -- client_tls with each kind of MTA-STS policy (none known and 3 modes),
    -- and each DANE state beside none and an enforce policy (4 + 3 * 2)
    assert.are.same({ server_tls = 3, connect = 3, helo = 12, mail = 24, rcpt = 12, client_tls = 20 }, stages)
  end)

  it("has an untrusted IPv4 and IPv6 client and a relay_networks one (or not)", function()
    local list = all({ trusted_ip = "10.1.2.3" })
    assert.are.equal(1, count(list, function(c) return c.stage == "server_tls" and c.client.ip == "192.0.2.10" end))
    assert.are.equal(1, count(list, function(c) return c.stage == "server_tls" and c.client.ip == "2001:db8::10" end))
    assert.are.equal(1, count(list, function(c)
      return c.stage == "server_tls" and c.client.ip == "10.1.2.3" and c.client.trusted end))
    list = all({ trusted_ip = false })
    assert.are.equal(0, count(list, function(c) return c.client and c.client.trusted end))
    assert.are.equal(2, count(list, function(c) return c.stage == "connect" end))
  end)

  it("gives each TLS state and the null sender", function()
    local list = all({ hostname = "gw.example.net" })
    for _, peer in ipairs({ "none", "untrusted", "trusted" }) do
      assert.are.equal(3, count(list, function(c) return c.stage == "rcpt" and c.tls.active and c.tls.peer == peer end))
    end
    assert.are.equal(3, count(list, function(c) return c.stage == "rcpt" and not c.tls.active end))
    assert.are.equal(3, count(list, function(c) return c.stage == "helo" and c.tls.sni == "gw.example.net" end))
    assert.are.equal(12, count(list, function(c) return c.stage == "mail" and c.sender == "" end))
    assert.are.equal(10, count(list, function(c) return c.stage == "client_tls" and c.sender == "" end))
    assert.are.equal(#list, count(list, function(c) return c.hostname == "gw.example.net" end))
  end)

  it("has a recipient in every section and one in none", function()
    local sections = {
      ["partner.example"] = { tls = "verify", tls_in = "verify", next_hop = "127.0.0.1:2600" },
      [".sub.example"] = { tls = "encrypt" },
      ["example.test"] = { tls = "may" },
    }
    local seen = {}
    for _, f in ipairs(all({ sections = sections })) do
      local c = f.ctx
      if c.stage == "client_tls" and c.sender ~= "" and c.mta_sts == nil and c.dane == nil then
        seen[#seen + 1] = { c.recipient, c.section }
      end
    end
    assert.are.same({
      { "user@sub.sub.example", { name = "domain:.sub.example", tls = "encrypt" } },
      { "user@example.test", { name = "domain:example.test", tls = "may" } },
      { "user@partner.example", { name = "domain:partner.example", tls = "verify", tls_in = "verify",
        next_hop = "127.0.0.1:2600" } },
      { "user@unlisted.invalid" },
    }, seen)
  end)

  it("adds the relay domains (opts.domains), each domain once", function()
    local seen = {}
    for _, f in ipairs(all({ sections = { ["partner.example"] = { tls = "verify" } },
        domains = { "example.test", "partner.example", ".relay.example" } })) do
      local c = f.ctx
      if c.stage == "client_tls" and c.sender == "" and c.mta_sts == nil and c.dane == nil then
        seen[#seen + 1] = c.recipient
      end
    end
    assert.are.same({ "user@partner.example", "user@example.test", "user@sub.relay.example", "user@unlisted.invalid" },
      seen)
  end)

  it("groups the TLS fixtures that differ only in tls.peer", function()
    local by_group = {}
    for _, f in ipairs(all()) do
      local g = by_group[f.group] or {}
      by_group[f.group] = g
      g[#g + 1] = f.ctx
    end
    for _, g in pairs(by_group) do
      if #g > 1 then
        assert.are.equal(3, #g)
        for i = 2, 3 do
          assert.is_true(g[i].tls.active)
          local a, b = g[1], g[i]
          assert.are.same({ a.stage, a.client, a.sender, a.recipient }, { b.stage, b.client, b.sender, b.recipient })
          assert.are_not.equal(a.tls.peer, b.tls.peer)
        end
      end
    end
  end)

  it("describes each fixture in words", function()
    local list = all({ sections = { ["partner.example"] = { tls_in = "verify" } } })
    local descs = {}
    for _, f in ipairs(list) do descs[f.desc] = true end
    assert.is_true(descs["server_tls client 192.0.2.10 in plaintext"])
    assert.is_true(descs["rcpt <user@partner.example> [domain:partner.example] client 127.0.0.1 (relay_networks) "
      .. "over TLS, client certificate trusted"])
    assert.is_true(descs["client_tls <user@example.test> (no section) from <>"])
    assert.is_true(descs["client_tls <user@example.test> (no section) from <> MTA-STS enforce"])
  end)

  it("gives client_tls each kind of MTA-STS policy, with patterns for the domain", function()
    local seen = {}
    for _, f in ipairs(all({ sections = { ["partner.example"] = { tls = "verify" } } })) do
      local c = f.ctx
      if c.stage == "client_tls" and c.sender ~= "" and c.domain == "partner.example" and c.dane == nil then
        seen[#seen + 1] = c.mta_sts or false
      end
    end
    assert.are.same({ false,
      { mode = "enforce", mx = { "mx.partner.example", "*.partner.example" } },
      { mode = "testing", mx = { "mx.partner.example", "*.partner.example" } },
      { mode = "none", mx = {} } }, seen)
  end)

  it("gives client_tls each DANE state, without and with an enforce MTA-STS policy", function()
    local seen = {}
    for _, f in ipairs(all()) do
      local c = f.ctx
      if c.stage == "client_tls" and c.sender ~= "" and c.dane ~= nil then
        seen[#seen + 1] = c.dane .. " " .. (c.mta_sts and c.mta_sts.mode or "-")
      end
    end
    assert.are.same({ "secure -", "secure enforce", "insecure -", "insecure enforce",
      "bogus -", "bogus enforce" }, seen)
    local descs = {}
    for _, f in ipairs(all()) do descs[f.desc] = true end
    assert.is_true(descs["client_tls <user@example.test> (no section) from <> MTA-STS enforce DANE secure"])
  end)

  it("raises on bad options", function()
    assert.has_error(function() t.fixtures("x") end)
    assert.has_error(function() t.fixtures({ sections = 1 }) end)
    assert.has_error(function() t.fixtures({ domains = "x" }) end)
  end)
end)

describe("gateway.testing.check", function()
  local gateway = require "gateway"

  it("runs every hook over every fixture and counts them", function()
    local calls = {}
    local function count(name) return function() calls[name] = (calls[name] or 0) + 1 end end
    local policy = {
      server_tls = function(...) count("server_tls")(...) return "MAY" end,
      client_tls = function(...) count("client_tls")(...) return "may" end,
      rcpt = function(...) count("rcpt")(...) return gateway.accept() end,
    }
    assert.are.equal(74, t.check(policy))
    assert.are.same({ server_tls = 3, client_tls = 20, rcpt = 12 }, calls)
  end)

  it("raises at the first error, naming the fixture", function()
    local policy = { client_tls = function(ctx) return ctx.client.ip end }
    local ok, err = pcall(t.check, policy, { sections = { ["partner.example"] = { tls = "verify" } } })
    assert.is_false(ok)
    assert.matches("gateway.testing.check: client_tls <user@partner.example> [domain:partner.example] "
      .. "from <sender@example.org>: ", err, 1, true)
    assert.matches("attempt to index field 'client'", err, 1, true)
  end)

  it("raises on a bad answer", function()
    local ok, err = pcall(t.check, { server_tls = function() return "maybe" end })
    assert.is_false(ok)
    assert.matches('server_tls returned "maybe", not a level', err, 1, true)
    ok, err = pcall(t.check, { helo = function(ctx)
      if ctx.tls.peer == "untrusted" then return "ok" end
      return "accept"
    end })
    assert.is_false(ok)
    assert.matches("helo client 192.0.2.10 over TLS, client certificate untrusted: ", err, 1, true)
  end)
end)
