-- Outbound connection reuse through the whole gateway (README "Delivery",
-- "Connection reuse"): many messages for several recipient domains routed
-- by static next_hop to one receiver (spec/support/smtp_receiver.py, which
-- numbers its connections) go through far fewer connections than
-- messages, each recipient once; plaintext and STARTTLS; [delivery]
-- reuse_max_messages; a receiver that hangs up on an idle connection; a
-- reload and a stop that close the idle ones (QUIT). The smaller cases
-- (RSET probe, pipelining, stale connections) are in smtp_client_spec.

local gateway = require "harness"
local ds = require "delivery_support"
local tls = require "tls_support"
local tools = require "tools"

local DOMAINS = { "a.example", "b.example", "c.example" }

local function sections(policy, receiver, delivery)
  local s = {
    policy = { script = ds.policy(policy) },
    delivery = { retry_min = "1s", retry_max = "2s", timeout = "10s" },
    dns = { resolver = ds.DEAD_RESOLVER },
  }
  for k, v in pairs(delivery or {}) do s.delivery[k] = v end
  for _, d in ipairs(DOMAINS) do s["domain:" .. d] = { next_hop = receiver:addr() } end
  return s
end

-- n messages in one session, each to `rcpts`; returns their queue ids.
local function send_many(gw, n, rcpts, starttls)
  local msg = "From: <sender@origin.example>\r\nTo: " .. table.concat(rcpts, ", ") ..
    "\r\nSubject: reuse\r\n\r\n" .. string.rep("0123456789abcdef\r\n", 20)
  local r = tools.smtplib{ port = gw:port(), from = "sender@origin.example", to = rcpts,
    count = n, msg = msg, ehlo = "client.example", starttls = starttls }
  assert(r.error == nil, "submission failed: " .. tostring(r.error) .. "\n" .. r.raw)
  local qids = {}
  for _, d in ipairs(r.by.data or {}) do
    qids[#qids + 1] = assert(d.text:match("queued as (%x+)$"), r.raw)
  end
  assert.are.equal(n, #qids, r.raw)
  return qids
end

-- Every (queue id, recipient) the receiver got, counted: the queue id from
-- the gateway's Received: header.
local function arrivals(receiver)
  local count, total = {}, 0
  for _, m in ipairs(receiver:messages()) do
    local qid = assert(m.text:match("%(smtpgw%) with %S+ id (%x+)"), m.text)
    for _, r in ipairs(m.rcpts) do
      local key = qid .. " " .. r
      count[key] = (count[key] or 0) + 1
      total = total + 1
    end
  end
  return count, total
end

-- Each recipient of each message arrived exactly once.
local function assert_once(receiver, qids, rcpts)
  local count, total = arrivals(receiver)
  assert.are.equal(#qids * #rcpts, total)
  for _, qid in ipairs(qids) do
    for _, r in ipairs(rcpts) do
      assert.are.equal(1, count[qid .. " " .. r], qid .. " " .. r)
    end
  end
end

local function count_lines(gw, pattern)
  return #gw:log_lines(pattern)
end

describe("outbound connection reuse", function()
  local dir, selfsigned
  local RCPTS = { "u@a.example", "v@b.example", "w@c.example" }

  setup(function()
    dir = gateway.mktempdir()
    selfsigned = tls.self_signed(dir, "selfsigned",
      { cn = "selfsigned.test.example", san = "DNS:selfsigned.test.example" })
  end)
  teardown(function() gateway.rm_rf(dir) end)
  after_each(ds.cleanup)

  it("50 messages to three domains on one next hop: far fewer connections, each recipient once", function()
    local r = ds.receiver()
    local gw = gateway.start{ sections = sections("try.lua", r) }
    local qids = send_many(gw, 50, RCPTS, false)
    local lines = gw:wait_log_count("event=delivery .*status=sent", 150, 60)
    ds.wait_queue_empty(gw, qids)
    assert_once(r, qids, RCPTS)
    -- at most max_per_destination (5) per domain at once, and no more
    local conns = r:connections()
    assert.is_true(conns <= 15, conns .. " connections for 150 transactions")
    local reused = count_lines(gw, "event=delivery .* reused=yes status=sent ")
    assert.are.equal(150 - count_lines(gw, "event=delivery .* reused=no status=sent "), reused)
    assert.is_true(reused >= 150 - conns, reused .. " reused of 150")
    assert.truthy(lines[1]:find(" tls=may:none reused=", 1, true), lines[1])
    ds.assert_one_line_per_attempt(gw)
    gw:stop() -- the idle connections are closed: no leak under ASan
  end)

  it("over STARTTLS (encrypt): the handshakes are far fewer than the messages", function()
    local r = ds.receiver{ cert = selfsigned }
    local gw = gateway.start{ sections = sections("require.lua", r) }
    local qids = send_many(gw, 30, { "u@a.example" }, true)
    gw:wait_log_count("event=delivery .*status=sent", 30, 60)
    ds.wait_queue_empty(gw, qids)
    assert_once(r, qids, { "u@a.example" })
    for _, m in ipairs(r:messages()) do assert.truthy(m.tls:match("^TLSv1%.[23]$"), m.tls) end
    local starttls = 0
    for _, c in ipairs(r:commands()) do
      if c.verb == "STARTTLS" then starttls = starttls + 1 end
    end
    assert.is_true(starttls <= 5, starttls .. " handshakes for 30 messages")
    assert.are.equal(starttls, r:connections())
    assert.are.same({}, r:plaintext({ "MAIL", "RCPT", "DATA", "RSET" }))
    local reused = gw:log_lines("event=delivery .* reused=yes ")
    assert.is_true(#reused >= 25, #reused .. " reused")
    assert.truthy(reused[1]:match(" tls=encrypt:TLSv1%.[23] verified=no reused=yes "), reused[1])
  end)

  it("reuse_max_messages = 1: one connection per message, reused=no", function()
    local r = ds.receiver()
    local gw = gateway.start{ sections = sections("try.lua", r, { reuse_max_messages = 1 }) }
    local qids = send_many(gw, 6, { "u@a.example" }, false)
    gw:wait_log_count("event=delivery .*status=sent", 6, 30)
    assert_once(r, qids, { "u@a.example" })
    assert.are.equal(6, r:connections())
    assert.are.equal(6, count_lines(gw, "event=delivery .* reused=no "))
    assert.are.same({}, r:plaintext({ "RSET" }))
  end)

  it("a receiver that hangs up on an idle connection: the next message connects anew", function()
    local r = ds.receiver{ idle_close = 0.3 }
    local gw = gateway.start{ sections = sections("try.lua", r) }
    local q1 = ds.submit(gw, "sender@origin.example", { "u@a.example" }, { starttls = false })
    ds.wait_delivery(gw, "u@a.example", "sent")
    assert(gateway.wait_for(function()
      for _, c in ipairs(r:commands()) do if c.verb == "CLOSED" then return true end end
    end, 10), "the receiver never closed the idle connection")
    local q2 = ds.submit(gw, "sender@origin.example", { "v@b.example" }, { starttls = false })
    local l2 = ds.wait_delivery(gw, "v@b.example", "sent")
    assert.truthy(l2:find(" reused=no ", 1, true), l2)
    assert.truthy(l2:find(" attempt=1 ", 1, true), l2)
    local count, total = arrivals(r)
    assert.are.equal(2, total)
    assert.are.equal(1, count[q1 .. " u@a.example"])
    assert.are.equal(1, count[q2 .. " v@b.example"])
    assert.are.equal(2, r:connections())
    assert.are.same({}, gw:log_lines("status=deferred"))
  end)

  it("a reload and a stop say QUIT to the idle connections", function()
    local r = ds.receiver()
    local gw = gateway.start{ sections = sections("try.lua", r,
      { reuse_idle_time = "300s" }) }
    ds.submit(gw, "sender@origin.example", { "u@a.example" }, { starttls = false })
    ds.wait_delivery(gw, "u@a.example", "sent")
    local function quits()
      local n = 0
      for _, c in ipairs(r:commands()) do if c.verb == "QUIT" then n = n + 1 end end
      return n
    end
    assert.are.equal(0, quits())
    gw:signal("HUP")
    assert(gateway.wait_for(function() return quits() == 1 end, 15),
      "no QUIT after the reload:\n" .. gw:log())
    -- the new queue manager keeps its own
    ds.submit(gw, "sender@origin.example", { "v@b.example" }, { starttls = false })
    ds.wait_delivery(gw, "v@b.example", "sent")
    assert.are.equal(2, r:connections())
    gw:stop()
    assert(gateway.wait_for(function() return quits() == 2 end, 10),
      "no QUIT after the stop")
  end)
end)
