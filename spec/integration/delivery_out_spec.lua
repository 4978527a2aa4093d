-- Outbound delivery (README "Delivery"): the TLS level the stock policies
-- choose per recipient domain, against real receivers
-- (spec/support/smtp_receiver.py: plaintext, STARTTLS with a self-signed or
-- a test-CA certificate, a broken handshake), static next_hop routes and MX
-- routes from the loopback DNS fixture. Nothing is resolved or dialled
-- outside 127.0.0.0/8: every gateway has [dns] resolver set to the fixture
-- or to a dead loopback port.

local gateway = require "harness"
local tls = require "tls_support"
local ds = require "delivery_support"
local dns_server = require "dns_server"

local sections = ds.sections

local function hop(r) return { next_hop = r:addr() } end

local function only(list, what)
  assert(#list == 1, "expected one " .. what .. ", got " .. #list)
  return list[1]
end

describe("outbound delivery: TLS levels", function()
  local dir, pki, selfsigned

  setup(function()
    dir = gateway.mktempdir()
    pki = tls.make_pki(dir .. "/pki") -- a: a.test.example, signed by pki.ca
    selfsigned = tls.self_signed(dir .. "/pki", "selfsigned",
      { cn = "selfsigned.test.example", san = "DNS:selfsigned.test.example" })
  end)

  teardown(function() gateway.rm_rf(dir) end)
  after_each(ds.cleanup)

  it("try (may): plaintext to a receiver without STARTTLS, TLS to one with it", function()
    local plain = ds.receiver()
    local secure = ds.receiver{ cert = selfsigned }
    local gw = gateway.start{ sections = sections("try.lua", {
      ["domain:plain.example"] = hop(plain),
      ["domain:tls.example"] = hop(secure),
    }) }
    local q1 = ds.submit(gw, "sender@origin.example", { "alice@plain.example" })
    local q2 = ds.submit(gw, "sender@origin.example", { "bob@tls.example" })

    local l1 = ds.wait_delivery(gw, "alice@plain.example", "sent")
    local l2 = ds.wait_delivery(gw, "bob@tls.example", "sent")
    assert.truthy(l1:find("qid=" .. q1, 1, true), l1)
    assert.truthy(l2:find("qid=" .. q2, 1, true), l2)
    assert.truthy(l1:find(" tls=may:none", 1, true), l1)
    assert.truthy(l2:match(" tls=may:TLSv1%.[23] "), l2)
    assert.truthy(l1:find("[127.0.0.1]:" .. plain.port, 1, true), l1)
    assert.truthy(l2:find("[127.0.0.1]:" .. secure.port, 1, true), l2)
    assert.truthy(l1:find(" attempt=1", 1, true), l1)
    assert.truthy(ds.field(l2, "reply"):match("^250 "), l2)

    local m1 = only(plain:wait_messages(1), "message at the plaintext receiver")
    assert.are.equal("none", m1.tls)
    assert.are.equal("sender@origin.example", m1.from)
    assert.are.same({ "alice@plain.example" }, m1.rcpts)
    assert.truthy(m1.text:find("Hello from the delivery spec.", 1, true))
    local m2 = only(secure:wait_messages(1), "message at the TLS receiver")
    assert.truthy(m2.tls:match("^TLSv1%.[23]$"), m2.tls)
    assert.are.same({ "bob@tls.example" }, m2.rcpts)
    -- the envelope went to the TLS receiver inside TLS only
    assert.are.same({}, secure:plaintext({ "MAIL", "RCPT", "DATA" }))

    -- done: both leave the queue
    ds.wait_queue_empty(gw, { q1, q2 })
    ds.assert_one_line_per_attempt(gw)
  end)

  it("require (encrypt): defers a receiver without STARTTLS and never sends it plaintext", function()
    local plain = ds.receiver()
    local secure = ds.receiver{ cert = selfsigned }
    local gw = gateway.start{ sections = sections("require.lua", {
      ["domain:plain.example"] = hop(plain),
      ["domain:tls.example"] = hop(secure),
    }) }
    local q1 = ds.submit(gw, "sender@origin.example", { "alice@plain.example" })
    local q2 = ds.submit(gw, "sender@origin.example", { "bob@tls.example" })

    local sent = ds.wait_delivery(gw, "bob@tls.example", "sent")
    assert.truthy(sent:match(" tls=encrypt:TLSv1%.[23] "), sent)
    local m = only(secure:wait_messages(1), "message at the TLS receiver")
    assert.truthy(m.tls:match("^TLSv1%.[23]$"), m.tls)
    ds.wait_queue_empty(gw, { q2 })

    local d1 = ds.wait_delivery(gw, "alice@plain.example", "deferred")
    assert.truthy(d1:find("qid=" .. q1, 1, true), d1)
    assert.truthy(d1:find(" tls=encrypt:none", 1, true), d1)
    assert.truthy(d1:find("4.7.4 TLS is required, but was not offered by host", 1, true), d1)
    assert.truthy(d1:find("[127.0.0.1]:" .. plain.port, 1, true), d1)

    -- the retry (forced now) ends the same way
    ds.flush(gw)
    local d2 = ds.wait_delivery(gw, "alice@plain.example", "deferred", 2)
    assert.truthy(d2:find("4.7.4 TLS is required", 1, true), d2)
    assert.truthy(d2:find(" attempt=2", 1, true), d2)
    assert.are.same({}, ds.delivery_lines(gw, "alice@plain.example", "sent"))
    assert.are.same({}, plain:messages())
    -- not even the envelope: EHLO, no STARTTLS offered, and nothing more
    assert.truthy(#plain:commands() > 0, "the gateway never connected to the plaintext receiver")
    assert.are.same({}, plain:plaintext({ "MAIL", "RCPT", "DATA" }))
    assert.are.same({}, secure:plaintext({ "MAIL", "RCPT", "DATA" }))
    assert.truthy(gateway.exists(gw:spool() .. "/queue/" .. q1), "deferred message left the queue")
    ds.assert_one_line_per_attempt(gw)
  end)

  it("require_verify (verify): defers a self-signed receiver, delivers to the test-CA one", function()
    local bad = ds.receiver{ cert = selfsigned }
    local good = ds.receiver{ cert = pki.a }
    local misnamed = ds.receiver{ cert = pki.a } -- reached as wrong.test.example
    local dns = dns_server.start{
      zones = { ["test.example."] = "static" },
      data = { "a.test.example. A 127.0.0.1",
               "selfsigned.test.example. A 127.0.0.1",
               "wrong.test.example. A 127.0.0.1" },
    }
    local ok, err = pcall(function()
      local gw = gateway.start{ sections = sections("require_verify.lua", {
        dns = { resolver = dns:resolver() },
        tls = { ca_file = pki.ca.crt },
        ["domain:bad.example"] = { next_hop = "selfsigned.test.example:" .. bad.port },
        ["domain:good.example"] = { next_hop = "a.test.example:" .. good.port },
        ["domain:misnamed.example"] = { next_hop = "wrong.test.example:" .. misnamed.port },
      }) }
      local q1 = ds.submit(gw, "sender@origin.example", { "carol@good.example" })
      local q2 = ds.submit(gw, "sender@origin.example", { "dave@bad.example" })
      local q3 = ds.submit(gw, "sender@origin.example", { "olga@misnamed.example" })

      local sent = ds.wait_delivery(gw, "carol@good.example", "sent")
      assert.truthy(sent:match(" tls=verify:TLSv1%.[23] "), sent)
      assert.truthy(sent:find(" verified=yes", 1, true), sent)
      assert.truthy(sent:find("relay=a.test.example[127.0.0.1]:" .. good.port, 1, true), sent)
      local m = only(good:wait_messages(1), "message at the test-CA receiver")
      assert.truthy(m.tls:match("^TLSv1%.[23]$"), m.tls)
      assert.are.same({ "carol@good.example" }, m.rcpts)
      ds.wait_queue_empty(gw, { q1 })

      local d = ds.wait_delivery(gw, "dave@bad.example", "deferred")
      assert.truthy(d:find("qid=" .. q2, 1, true), d)
      assert.truthy(d:find(" tls=verify:", 1, true), d)
      local reply = ds.field(d, "reply")
      assert.truthy(reply:find("4.7.5 Cannot start TLS with ", 1, true), d)
      assert.truthy(reply:lower():find("verif", 1, true), "reason names no verification failure: " .. d)
      assert.are.same({}, bad:messages())
      assert.are.same({}, bad:plaintext({ "MAIL", "RCPT", "DATA" }))

      -- a chain the test CA signed, but not for the next hop's name
      local dm = ds.wait_delivery(gw, "olga@misnamed.example", "deferred")
      assert.truthy(dm:find("qid=" .. q3, 1, true), dm)
      local why = ds.field(dm, "reply")
      local prefix = "4.7.5 Cannot start TLS with wrong.test.example[127.0.0.1]:" ..
        misnamed.port .. ": "
      assert.are.equal(prefix, why:sub(1, #prefix), dm)
      assert.truthy(why:sub(#prefix + 1):find("wrong.test.example", 1, true),
        "the reason does not name the host name that is missing: " .. dm)
      assert.are.same({}, misnamed:messages())
      assert.are.same({}, misnamed:plaintext({ "MAIL", "RCPT", "DATA" }))
      assert.truthy(gateway.exists(gw:spool() .. "/queue/" .. q2))
      ds.assert_one_line_per_attempt(gw)
    end)
    dns:stop()
    if not ok then error(err, 0) end
  end)

  it("may after a broken handshake: downgrades to plaintext on the same host", function()
    local broken = ds.receiver{ cert = pki.a, break_tls = true }
    local gw = gateway.start{ sections = sections("try.lua", {
      ["domain:broken.example"] = hop(broken),
    }) }
    local qid = ds.submit(gw, "sender@origin.example", { "erin@broken.example" })

    -- logged with the relay and the reason (here OpenSSL's complaint)
    local down = gw:wait_log("[^\n]*event=tls_downgrade[^\n]*", 15)
    assert.truthy(down:find(":" .. broken.port, 1, true), down)
    assert.truthy(down:lower():find("handshake", 1, true) or
      down:find("reason=", 1, true), down)
    local sent = ds.wait_delivery(gw, "erin@broken.example", "sent")
    assert.truthy(sent:find(" tls=may:none", 1, true), sent)
    local m = only(broken:wait_messages(1), "message at the broken-TLS receiver")
    assert.are.equal("none", m.tls)
    assert.are.same({ "erin@broken.example" }, m.rcpts)
    -- the first connection tried STARTTLS; the second, to the same
    -- receiver, did not and carried the message
    local conns = {}
    for _, c in ipairs(broken:commands()) do
      conns[c.conn] = conns[c.conn] or {}
      table.insert(conns[c.conn], c.verb)
    end
    local first, second = conns[1] or {}, conns[2] or {}
    assert.are.same({ "EHLO", "STARTTLS" }, first)
    local verbs = " " .. table.concat(second, " ") .. " "
    assert.falsy(verbs:find(" STARTTLS ", 1, true), verbs)
    assert.truthy(verbs:find(" MAIL RCPT DATA ", 1, true), verbs)
    assert.is_nil(conns[3], "a third connection")
    assert.are.same({}, ds.delivery_lines(gw, "erin@broken.example", "deferred"))
    ds.wait_queue_empty(gw, { qid })
    ds.assert_one_line_per_attempt(gw)
  end)

  it("per-domain override: try.lua with [domain:secure.example] tls = encrypt", function()
    local plain = ds.receiver()
    local gw = gateway.start{ sections = sections("try.lua", {
      ["domain:plain.example"] = hop(plain),
      ["domain:secure.example"] = { next_hop = plain:addr(), tls = "encrypt" },
    }) }
    local qid = ds.submit(gw, "sender@origin.example",
      { "frank@plain.example", "grace@secure.example" })

    local sent = ds.wait_delivery(gw, "frank@plain.example", "sent")
    assert.truthy(sent:find(" tls=may:none", 1, true), sent)
    local d = ds.wait_delivery(gw, "grace@secure.example", "deferred")
    assert.truthy(d:find(" tls=encrypt:none", 1, true), d)
    assert.truthy(d:find("4.7.4 TLS is required, but was not offered by host", 1, true), d)

    -- the plaintext receiver got frank only; grace was never sent in the clear
    local m = only(plain:wait_messages(1), "message at the plaintext receiver")
    assert.are.same({ "frank@plain.example" }, m.rcpts)
    ds.wait_delivery(gw, "frank@plain.example", "sent")
    -- grace's first attempt is made once, not again and again while
    -- frank's transaction (same message, other domain) is in flight
    ds.assert_one_line_per_attempt(gw)
    ds.flush(gw)
    local d2 = ds.wait_delivery(gw, "grace@secure.example", "deferred", 2)
    assert.truthy(d2:find(" attempt=2", 1, true), d2)
    local _, count = plain:rcpts()
    assert.is_nil(count["grace@secure.example"])
    for _, c in ipairs(plain:commands()) do
      assert.falsy(c.line:find("grace@secure.example", 1, true), "sent in plaintext: " .. c.line)
    end
    assert.are.equal(1, #plain:messages())
    assert.truthy(gateway.exists(gw:spool() .. "/queue/" .. qid))
    ds.assert_one_line_per_attempt(gw)
  end)

  it("one message, two domains, two levels: each delivered under its own", function()
    local plain = ds.receiver()
    local secure = ds.receiver{ cert = selfsigned }
    local gw = gateway.start{ sections = sections("try.lua", {
      ["domain:plain.example"] = hop(plain),
      ["domain:secure.example"] = { next_hop = secure:addr(), tls = "encrypt" },
    }) }
    local qid = ds.submit(gw, "sender@origin.example",
      { "heidi@plain.example", "ivan@secure.example", "judy@plain.example" })

    local l1 = ds.wait_delivery(gw, "heidi@plain.example", "sent")
    local l2 = ds.wait_delivery(gw, "ivan@secure.example", "sent")
    local l3 = ds.wait_delivery(gw, "judy@plain.example", "sent")
    assert.truthy(l1:find(" tls=may:none", 1, true), l1)
    assert.truthy(l3:find(" tls=may:none", 1, true), l3)
    assert.truthy(l2:match(" tls=encrypt:TLSv1%.[23] "), l2)

    -- one transaction per domain
    local mp = only(plain:wait_messages(1), "message at the plaintext receiver")
    assert.are.equal("none", mp.tls)
    table.sort(mp.rcpts)
    assert.are.same({ "heidi@plain.example", "judy@plain.example" }, mp.rcpts)
    local ms = only(secure:wait_messages(1), "message at the TLS receiver")
    assert.truthy(ms.tls:match("^TLSv1%.[23]$"), ms.tls)
    assert.are.same({ "ivan@secure.example" }, ms.rcpts)
    assert.are.same({}, secure:plaintext({ "MAIL", "RCPT", "DATA" }))
    ds.wait_queue_empty(gw, { qid })
    ds.assert_one_line_per_attempt(gw)
  end)
end)

describe("outbound delivery: MX routing", function()
  after_each(ds.cleanup)

  -- MX routes go to port 25: the receiver listens on port 25 of a loopback
  -- address of its own, the dead MX host is another loopback address where
  -- nothing listens.
  local function random_loopback()
    return string.format("127.%d.%d.%d", math.random(64, 250), math.random(1, 250),
      math.random(2, 250))
  end

  it("a connection lost before the message went out goes on to the next MX, not into the queue", function()
    local procs = require "procs"
    local tools = require "tools"
    local live_ip, flaky_ip, live, flaky
    for _ = 1, 5 do
      live_ip, flaky_ip = random_loopback(), random_loopback()
      local ok, r = pcall(ds.receiver, { host = live_ip, port = 25 })
      if ok and live_ip ~= flaky_ip then live = r break end
    end
    assert(live, "no loopback address with port 25 free")
    local transcript = gateway.mktempdir() .. "/flaky.log"
    -- greets, answers EHLO, reads MAIL FROM, then hangs up
    flaky = procs.start({ tools.PYTHON, tools.SUPPORT .. "/smtp_script.py",
      "--host", flaky_ip, "--port", "25", "--log", transcript,
      "send:220 flaky.example ESMTP\\r\\n", "line",
      "send:250 flaky.example\\r\\n", "line", "close" },
      { ready = "listening (%d+)" })
    local dns = dns_server.start{
      zones = { ["lost.example."] = "static" },
      data = { "lost.example. MX 10 flaky.lost.example.",
               "lost.example. MX 20 live.lost.example.",
               "flaky.lost.example. A " .. flaky_ip,
               "live.lost.example. A " .. live_ip },
    }
    local ok, err = pcall(function()
      local gw = gateway.start{ sections = sections("try.lua", {
        dns = { resolver = dns:resolver() },
      }) }
      local qid = ds.submit(gw, "sender@origin.example", { "lena@lost.example" })
      local sent = ds.wait_delivery(gw, "lena@lost.example", "sent", 1, 30)
      assert.truthy(sent:find("relay=live.lost.example[" .. live_ip .. "]:25", 1, true), sent)
      -- the first MX was really tried: it got as far as MAIL FROM
      assert.truthy((gateway.read_file(transcript) or ""):find("MAIL FROM:", 1, true))
      only(live:wait_messages(1), "message at the second MX")
      assert.are.same({}, ds.delivery_lines(gw, "lena@lost.example", "deferred"))
      ds.wait_queue_empty(gw, { qid })
    end)
    dns:stop()
    flaky:stop()
    if not ok then error(err, 0) end
  end)

  it("falls back to the second MX when the first does not answer", function()
    local live_ip, dead_ip, live
    for _ = 1, 5 do
      live_ip, dead_ip = random_loopback(), random_loopback()
      local ok, r = pcall(ds.receiver, { host = live_ip, port = 25 })
      if ok and live_ip ~= dead_ip then live = r break end
    end
    assert(live, "no loopback address with port 25 free")
    -- nothing answers on the first MX host's address
    local probe = require("socket").tcp()
    probe:settimeout(2)
    local answered = probe:connect(dead_ip, 25)
    probe:close()
    assert(not answered, "something listens on " .. dead_ip .. ":25")
    local dns = dns_server.start{
      zones = { ["mx.example."] = "static" },
      data = { "mx.example. MX 10 dead.mx.example.",
               "mx.example. MX 20 live.mx.example.",
               "dead.mx.example. A " .. dead_ip,
               "live.mx.example. A " .. live_ip },
    }
    local ok, err = pcall(function()
      local gw = gateway.start{ sections = sections("try.lua", {
        dns = { resolver = dns:resolver() },
      }) }
      -- the route the gateway sees: the dead host first
      local route, rc = gateway.run("timeout -k 5 30 " .. gateway.shell_quote(gateway.bin()) ..
        " -c " .. gateway.shell_quote(gw.ini) .. " route mx.example")
      assert.are.equal(0, rc, route)
      local pd = route:find("dead.mx.example pref 10 " .. dead_ip .. ":25", 1, true)
      local pl = route:find("live.mx.example pref 20 " .. live_ip .. ":25", 1, true)
      assert.truthy(pd and pl and pd < pl, route)

      local qid = ds.submit(gw, "sender@origin.example", { "kate@mx.example" })
      local sent = ds.wait_delivery(gw, "kate@mx.example", "sent", 1, 30)
      assert.truthy(sent:find("relay=live.mx.example[" .. live_ip .. "]:25", 1, true), sent)
      local m = only(live:wait_messages(1), "message at the second MX")
      assert.are.same({ "kate@mx.example" }, m.rcpts)
      ds.wait_queue_empty(gw, { qid })
      assert.are.same({}, ds.delivery_lines(gw, "kate@mx.example", "deferred"))
      ds.assert_one_line_per_attempt(gw)
    end)
    dns:stop()
    if not ok then error(err, 0) end
  end)
end)
