-- The queue tools (README "Operating": "Queue"): the listing sorted by
-- age with attempts and next retry (--json too), attempts that survive a
-- restart, `queue show`, and delete / hold / release / requeue with each
-- selector (several ids, ALL, --domain), reported as postsuper does;
-- hold beside the running queue manager (a message in flight finishes
-- its attempt and is not retried). Static next_hop routes; the resolver
-- is a dead loopback port; retries are an hour apart unless asked for.

local gateway = require "harness"
local ds = require "delivery_support"
local json = require "dkjson"

local function start(routes, extra)
  local s = {
    policy = { script = ds.policy("try.lua") },
    delivery = { retry_min = "1h", retry_max = "2h" },
    dns = { resolver = ds.DEAD_RESOLVER },
  }
  for domain, addr in pairs(routes) do
    s["domain:" .. domain] = { next_hop = addr }
  end
  for k, v in pairs(extra or {}) do s[k] = v end
  return gateway.start{ sections = s }
end

-- A port nothing listens on: connections are refused, recipients deferred.
local function dead_addr()
  local r = ds.receiver()
  local addr = r:addr()
  r:stop()
  return addr
end

local function queue_json(gw, ...)
  local out, code = ds.queue_cmd(gw, ...)
  assert(code == 0, "queue exited " .. code .. ": " .. out)
  local doc, _, err = json.decode(out)
  assert(doc, "not JSON (" .. tostring(err) .. "):\n" .. out)
  return doc
end

local function ids_of(doc)
  local out = {}
  for i, m in ipairs(doc.messages) do out[i] = m.id end
  return out
end

-- Submits one message per recipient, and waits for each to be deferred.
local function deferred_messages(gw, rcpts)
  local qids = {}
  for i, r in ipairs(rcpts) do
    qids[i] = ds.submit(gw, "s@origin.example", { r })
  end
  for _, r in ipairs(rcpts) do ds.wait_delivery(gw, r, "deferred") end
  return qids
end

local function in_spool(gw, dir, qid)
  return gateway.exists(gw:spool() .. "/" .. dir .. "/" .. qid)
end

local function attempts(gw, qid)
  return #gw:log_lines("event=delivery qid=" .. qid)
end

describe("queue tools", function()
  after_each(ds.cleanup)

  it("lists oldest first with attempts and next retry; --json; attempts survive a restart", function()
    local dead = dead_addr()
    local gw = start{ ["dead.example"] = dead }
    local qids = deferred_messages(gw, { "a@dead.example", "b@dead.example", "c@dead.example" })

    local doc = queue_json(gw, "--json")
    assert.are.same(qids, ids_of(doc)) -- arrival, then id: the order they came
    -- two older messages whose ids sort first the other way round: the
    -- listing goes by age, not by id (nor by the directory's order)
    local young, old = "00000000000a0001", "00000000000a0002"
    for id, age in pairs({ [young] = 60, [old] = 7200 }) do
      gateway.write_file(gw:spool() .. "/queue/" .. id, table.concat({
        "smtpgw-queue-file: 1", "id: " .. id, "arrival: " .. (os.time() - age),
        "client: 127.0.0.1", "helo: client.example", "sender: <s@origin.example>",
        "rcpt: <old@dead.example>", "body: unspecified", "smtputf8: 0", "" }, "\n") ..
        "\nSubject: old\r\n\r\nbody\r\n")
    end
    local all = queue_json(gw, "--json")
    assert.are.same({ old, young, qids[1], qids[2], qids[3] }, ids_of(all))
    assert.are.equal("active", all.messages[1].queue)
    assert.are.equal("queued", all.messages[1].recipients[1].state)
    assert.truthy(all.messages[1].age >= 7200, all.messages[1].age)
    assert.truthy(ds.queue_cmd(gw):find("^" .. old .. "  active  age 2h00m  "), ds.queue_cmd(gw))
    local out0, code0 = ds.queue_cmd(gw, "delete", old, young)
    assert.are.equal(0, code0, out0)
    doc = queue_json(gw, "--json")
    assert.are.equal(3, doc.queued)
    assert.are.equal(0, doc.held)
    local m = doc.messages[1]
    assert.are.equal("deferred", m.queue)
    assert.are.equal("s@origin.example", m.sender)
    local r = m.recipients[1]
    assert.are.equal("a@dead.example", r.address)
    assert.are.equal("deferred", r.state)
    assert.are.equal(1, r.attempts)
    assert.truthy(r.last_reply:find("^4%.4%.1 "), r.last_reply)
    -- retry_min after the attempt
    assert.truthy(r.next_retry >= r.last_attempt + 3600 and r.next_retry <= os.time() + 3600,
      r.next_retry .. " vs " .. r.last_attempt)

    local out = ds.queue_cmd(gw)
    assert.falsy(out:find("pending", 1, true), out)
    assert.truthy(out:find("<a@dead.example>  deferred  attempts 1  next retry in 59m", 1, true) or
      out:find("<a@dead.example>  deferred  attempts 1  next retry in 1h00m", 1, true), out)
    assert.truthy(out:find("3 messages queued\n$"), out)

    -- a second attempt, then a restart: the count goes on (3, not 1)
    ds.flush(gw)
    ds.wait_delivery(gw, "a@dead.example", "deferred", 2)
    assert.is_true(gw:kill("TERM"))
    gw:restart()
    -- a restart is not a flush: deferred messages wait for their retry
    -- time (README "Delivery"), so ask for them now
    ds.flush(gw)
    local third = ds.wait_delivery(gw, "a@dead.example", "deferred")
    assert.truthy(third:find(" attempt=3 ", 1, true), third)
    ds.wait_delivery(gw, "b@dead.example", "deferred")
    ds.wait_delivery(gw, "c@dead.example", "deferred")
    for _, rec in ipairs(queue_json(gw, "--json").messages) do
      assert.are.equal(3, rec.recipients[1].attempts)
    end
  end)

  it("show: the envelope, each recipient's attempts and last reply, the headers", function()
    local dead = dead_addr()
    local ok = ds.receiver()
    local gw = start{ ["dead.example"] = dead, ["ok.example"] = ok:addr() }
    local qid = ds.submit(gw, "s@origin.example", { "x@dead.example", "y@ok.example" },
      { subject = "shown in full" })
    ds.wait_delivery(gw, "x@dead.example", "deferred")
    ds.wait_delivery(gw, "y@ok.example", "sent")

    local out, code = ds.queue_cmd(gw, "show", qid)
    assert.are.equal(0, code, out)
    assert.truthy(out:find("id%s+" .. qid), out)
    assert.truthy(out:find("sender%s+<s@origin%.example>"), out)
    assert.truthy(out:find("<x@dead.example>  deferred  attempts 1", 1, true), out)
    assert.truthy(out:find("<y@ok.example>  sent  attempts 1  250 ", 1, true), out)
    assert.truthy(out:find("\n  Subject: shown in full\n", 1, true), out)
    assert.truthy(out:find("last attempt 20%d%d%-"), out)

    local doc = queue_json(gw, "show", qid, "--json")
    assert.are.equal(qid, doc.id)
    assert.are.equal("sent", doc.recipients[2].state)
    assert.truthy(doc.headers:find("Subject: shown in full\r\n", 1, true), doc.headers)

    local nout, ncode = ds.queue_cmd(gw, "show", "0123456789abcdef")
    assert.are.equal(1, ncode)
    assert.truthy(nout:find("no such message", 1, true), nout)
  end)

  it("delete: several ids, --domain, ALL; an unknown id is an error", function()
    local dead = dead_addr()
    local gw = start{ ["dead.example"] = dead, ["other.example"] = dead }
    local q = deferred_messages(gw, { "a@dead.example", "b@dead.example",
      "c@other.example", "d@other.example", "e@dead.example" })

    local out, code = ds.queue_cmd(gw, "delete", q[1], q[2])
    assert.are.equal(0, code, out)
    assert.truthy(out:find("smtpgw: Deleted: 2 messages\n", 1, true), out)
    assert.falsy(in_spool(gw, "queue", q[1]) or in_spool(gw, "queue", q[2]))
    assert.falsy(in_spool(gw, "state", q[1]))

    out, code = ds.queue_cmd(gw, "delete", "--domain", "OTHER.example")
    assert.are.equal(0, code, out)
    assert.truthy(out:find("Deleted: 2 messages", 1, true), out)
    assert.are.same({ q[5] }, gw:spool_files("queue"))

    out, code = ds.queue_cmd(gw, "delete", q[5], "0123456789abcdef", "nonsense")
    assert.are.equal(1, code, out)
    assert.truthy(out:find("0123456789abcdef: no such message", 1, true), out)
    assert.truthy(out:find("nonsense: not a queue id", 1, true), out)
    assert.truthy(out:find("Deleted: 1 message\n", 1, true), out)

    deferred_messages(gw, { "f@dead.example", "g@other.example" })
    ds.queue_cmd(gw, "hold", (gw:spool_files("queue"))[1])
    out, code = ds.queue_cmd(gw, "delete", "ALL")
    assert.are.equal(0, code, out)
    assert.truthy(out:find("Deleted: 2 messages", 1, true), out) -- the held one too
    assert.are.same({}, gw:spool_files("queue"))
    assert.are.same({}, gateway.list_dir(gw:spool() .. "/hold"))
    assert.truthy(gw:alive())
  end)

  it("hold keeps a message from the queue manager; release gives it back, delivered at once", function()
    local busy = ds.receiver{ rcpt_reply = "450 4.2.0 busy" }
    local port = busy.port
    local gw = start{ ["later.example"] = busy:addr(), ["else.example"] = busy:addr() }
    local q = deferred_messages(gw, { "a@later.example", "b@later.example",
      "c@else.example", "d@later.example" })

    -- several ids, then --domain, then ALL
    local out, code = ds.queue_cmd(gw, "hold", q[1], q[2])
    assert.are.equal(0, code, out)
    assert.truthy(out:find("smtpgw: Placed on hold: 2 messages\n", 1, true), out)
    out = ds.queue_cmd(gw, "hold", "--domain", "else.example")
    assert.truthy(out:find("Placed on hold: 1 message\n", 1, true), out)
    assert.truthy(in_spool(gw, "hold", q[3]) and in_spool(gw, "state", q[3]))
    local doc = queue_json(gw, "--json")
    assert.are.equal(1, doc.queued)
    assert.are.equal(3, doc.held)
    assert.are.equal("hold", doc.messages[1].queue)
    assert.are.equal(1, doc.messages[1].recipients[1].attempts) -- its state came along
    out, code = ds.queue_cmd(gw, "hold", q[1])
    assert.are.equal(1, code, out)
    assert.truthy(out:find("on hold (release it first)", 1, true), out)
    out = ds.queue_cmd(gw, "hold", "ALL")
    assert.truthy(out:find("Placed on hold: 1 message\n", 1, true), out)
    assert.are.same({}, gw:spool_files("queue"))

    -- the receiver accepts now; a flush tries nothing held
    busy:stop()
    local ok = ds.receiver{ port = port }
    local before = #ds.delivery_lines(gw)
    ds.flush(gw)
    local later = ds.submit(gw, "s@origin.example", { "z@later.example" })
    ds.wait_delivery(gw, "z@later.example", "sent")
    ds.wait_queue_empty(gw, { later })
    assert.are.equal(before + 1, #ds.delivery_lines(gw))
    out, code = ds.queue_cmd(gw, "requeue", q[1])
    assert.are.equal(1, code, out)
    assert.truthy(out:find("on hold (release it first)", 1, true), out)

    -- release: several ids, --domain, ALL; each delivered at once
    out, code = ds.queue_cmd(gw, "release", q[1], q[2])
    assert.are.equal(0, code, out)
    assert.truthy(out:find("smtpgw: Released from hold: 2 messages\n", 1, true), out)
    ds.wait_delivery(gw, "a@later.example", "sent")
    ds.wait_delivery(gw, "b@later.example", "sent")
    out = ds.queue_cmd(gw, "release", "--domain", "else.example")
    assert.truthy(out:find("Released from hold: 1 message\n", 1, true), out)
    ds.wait_delivery(gw, "c@else.example", "sent")
    out = ds.queue_cmd(gw, "release", "ALL")
    assert.truthy(out:find("Released from hold: 1 message\n", 1, true), out)
    local sent = ds.wait_delivery(gw, "d@later.example", "sent")
    assert.truthy(sent:find(" attempt=2 ", 1, true), sent)
    ds.wait_queue_empty(gw)
    assert.are.same({}, gateway.list_dir(gw:spool() .. "/hold"))
    out, code = ds.queue_cmd(gw, "release", q[1])
    assert.are.equal(1, code, out)
    assert.truthy(out:find("no such message", 1, true), out)
    local _, count = ok:rcpts()
    for _, r in ipairs({ "a@later.example", "b@later.example", "c@else.example", "d@later.example" }) do
      assert.are.equal(1, count[r], r)
    end
  end)

  it("requeue retries the messages named now, and only those", function()
    local dead = dead_addr()
    local gw = start{ ["dead.example"] = dead, ["other.example"] = dead }
    local q = deferred_messages(gw, { "a@dead.example", "b@dead.example",
      "c@other.example", "d@dead.example" })

    local out, code = ds.queue_cmd(gw, "requeue", q[1], q[2])
    assert.are.equal(0, code, out)
    assert.truthy(out:find("smtpgw: Requeued: 2 messages\n", 1, true), out)
    ds.wait_delivery(gw, "a@dead.example", "deferred", 2)
    ds.wait_delivery(gw, "b@dead.example", "deferred", 2)
    out = ds.queue_cmd(gw, "requeue", "--domain", "other.example")
    assert.truthy(out:find("Requeued: 1 message\n", 1, true), out)
    ds.wait_delivery(gw, "c@other.example", "deferred", 2)
    assert.are.equal(1, attempts(gw, q[4])) -- not named: still an hour away

    out = ds.queue_cmd(gw, "requeue", "ALL")
    assert.truthy(out:find("Requeued: 4 messages\n", 1, true), out)
    ds.wait_delivery(gw, "d@dead.example", "deferred", 2)
    ds.wait_delivery(gw, "a@dead.example", "deferred", 3)
    out, code = ds.queue_cmd(gw, "requeue", "0123456789abcdef")
    assert.are.equal(1, code, out)
  end)

  it("a message put on hold in the middle of its delivery finishes that attempt and is not retried", function()
    local slow = ds.receiver{ data_delay = 2 }
    local busy = ds.receiver{ rcpt_reply = "450 4.2.0 busy" }
    local gw = start({ ["slow.example"] = slow:addr(), ["busy.example"] = busy:addr() },
      { delivery = { retry_min = "1s", retry_max = "1s" } })
    local qid = ds.submit(gw, "s@origin.example", { "x@slow.example", "y@busy.example" })
    ds.wait_delivery(gw, "y@busy.example", "deferred")
    slow:wait_messages(1) -- stored, its 250 two seconds away: in flight
    local out, code = ds.queue_cmd(gw, "hold", qid)
    assert.are.equal(0, code, out)
    ds.wait_delivery(gw, "x@slow.example", "sent") -- the attempt ends
    gw:wait_log("event=dropped qid=" .. qid .. ' msg="queue/' .. qid .. ": put on hold")
    -- retry_min is 1 s: held, it is not tried again
    local lines = attempts(gw, qid)
    ds.flush(gw)
    local later = ds.submit(gw, "s@origin.example", { "z@slow.example" })
    ds.wait_delivery(gw, "z@slow.example", "sent")
    ds.wait_queue_empty(gw, { later })
    assert.are.equal(lines, attempts(gw, qid))
    -- what that attempt recorded is kept with the held message
    local doc = queue_json(gw, "show", qid, "--json")
    assert.are.equal("hold", doc.queue)
    assert.are.equal("sent", doc.recipients[1].state)
    assert.are.equal("deferred", doc.recipients[2].state)
    assert.truthy(in_spool(gw, "hold", qid) and in_spool(gw, "state", qid))

    ds.queue_cmd(gw, "release", qid)
    ds.wait_delivery(gw, "y@busy.example", "deferred", 2)
    assert.are.equal(1, #ds.delivery_lines(gw, "x@slow.example", "sent"))
  end)
end)
