-- The queue manager's scheduler (README "Delivery", "Scheduling"): a next
-- hop that keeps failing is remembered as dead and not connected to
-- before its retry time, and a queue far larger than [delivery]
-- active_limit is worked through without holding more than that in memory,
-- every message delivered exactly once when the next hop comes back.
-- Connection attempts are counted at a real loopback socket
-- (spec/support/refuser.py: accepts, closes before the banner, logs).

local gateway = require "harness"
local ds = require "delivery_support"
local procs = require "procs"
local tools = require "tools"
local h = require "helpers"

-- A next hop that is down: { port, accepts() → list of epoch seconds }.
local function refuser(port)
  local dir = gateway.mktempdir()
  local log = dir .. "/accepts.log"
  local args = { tools.PYTHON, tools.SUPPORT .. "/refuser.py", "--log", log }
  if port then
    args[#args + 1] = "--port"
    args[#args + 1] = tostring(port)
  end
  local p = procs.start(args, { ready = "listening (%d+)" })
  local r = { proc = p, port = tonumber(p.ready[1]), dir = dir }
  function r.accepts()
    local out = {}
    for t in (gateway.read_file(log) or ""):gmatch("%d+ ([%d.]+)\n") do
      out[#out + 1] = tonumber(t)
    end
    return out
  end
  function r.stop()
    p:stop()
  end
  return r
end

local function cleanup()
  local ok, err = pcall(ds.cleanup)
  procs.stop_all()
  if not ok then error(err, 0) end
end

-- A queue file in the spool's own format, and a state file that says it
-- was deferred once before.
local function write_deferred(spool, qid, rcpt)
  gateway.write_file(spool .. "/queue/" .. qid, table.concat({
    "smtpgw-queue-file: 1", "id: " .. qid, "arrival: " .. os.time(),
    "client: 127.0.0.1", "helo: client.example",
    "sender: <sender@origin.example>", "rcpt: <" .. rcpt .. ">",
    "body: 7BIT", "smtputf8: 0", "" }, "\n") .. "\n" ..
    "Subject: " .. qid .. "\r\n\r\nbody\r\n")
  gateway.write_file(spool .. "/state/" .. qid,
    "0 deferred 4.4.1 127.0.0.1:25: Connection refused\n")
end

describe("scheduler", function()
  after_each(cleanup)

  it("a dead next hop: 3 failures, then no connection before its retry time, then alive", function()
    local down = refuser()
    local retry = 3
    local gw = gateway.start{ sections = {
      policy = { script = ds.policy("try.lua") },
      delivery = { retry_min = retry .. "s", retry_max = retry .. "s" },
      dns = { resolver = ds.DEAD_RESOLVER },
      ["domain:dead.example"] = { next_hop = "127.0.0.1:" .. down.port },
    } }
    local rcpts = {}
    local c = h.session(gw)
    for i = 1, 6 do
      rcpts[i] = "u" .. i .. "@dead.example"
      h.deliver(c, "sender@origin.example", { rcpts[i] }, h.message("dead " .. i, { "x" }))
    end
    c:close()
    local dead = gw:wait_log("([^\n]*event=destination_dead[^\n]*)")
    assert.truthy(dead:find("destination=[127.0.0.1]:" .. down.port, 1, true), dead)
    assert.truthy(dead:find(" failures=3 ", 1, true), dead)
    assert.truthy(dead:find(" until=", 1, true), dead)
    for _, r in ipairs(rcpts) do ds.wait_delivery(gw, r, "deferred") end
    -- a window of 2, halved by the first failure: exactly 3 tries
    assert.are.equal(3, #down.accepts())
    local not_tried = 0
    for _, line in ipairs(ds.delivery_lines(gw, nil, "deferred")) do
      if line:find("is not answering", 1, true) then
        assert.truthy(line:find(" relay=none ", 1, true), line)
        not_tried = not_tried + 1
      end
    end
    assert.are.equal(3, not_tried)

    -- more mail for it while it is dead: deferred at once, no connection
    local more = {}
    c = h.session(gw)
    for i = 7, 9 do
      more[#more + 1] = "u" .. i .. "@dead.example"
      h.deliver(c, "sender@origin.example", { more[#more] }, h.message("dead " .. i, { "x" }))
    end
    c:close()
    for _, r in ipairs(more) do
      local line = ds.wait_delivery(gw, r, "deferred")
      assert.truthy(line:find("is not answering", 1, true), line)
      rcpts[#rcpts + 1] = r
    end
    local t = down.accepts()
    assert.are.equal(1, #gw:log_lines("event=destination_dead"), "logged once")

    -- it comes back: the next try, after the retry time, succeeds
    down.stop()
    local up = ds.receiver{ port = down.port }
    gw:wait_log("event=destination_alive destination=%[127%.0%.0%.1%]:" .. down.port, 20)
    local ok, missing = up:wait_rcpts(rcpts, 20)
    assert(ok, "not delivered: " .. table.concat(missing or {}, " ") .. "\n" .. gw:log())
    local _, count = up:rcpts()
    for _, r in ipairs(rcpts) do assert.are.equal(1, count[r], r) end
    -- whatever reached the refuser after the third failure (a try made
    -- before it was stopped) came after the retry time
    t = down.accepts()
    for i = 4, #t do
      assert.truthy(t[i] >= t[3] + retry - 0.1,
        string.format("connection %d came %.2f s after the third failure", i, t[i] - t[3]))
    end
    ds.wait_queue_empty(gw, nil, 20)
    ds.assert_one_line_per_attempt(gw)
  end)

  it("a message partly sent keeps its sent line; after kill -9 and a flush only the rest is tried", function()
    local ok = ds.receiver()
    local busy = ds.receiver{ rcpt_reply = "450 4.2.0 busy" }
    local gw = gateway.start{ sections = {
      policy = { script = ds.policy("try.lua") },
      delivery = { retry_min = "1h", retry_max = "1h" },
      dns = { resolver = ds.DEAD_RESOLVER },
      ["domain:ok.example"] = { next_hop = ok:addr() },
      ["domain:busy.example"] = { next_hop = busy:addr() },
    } }
    local qid = ds.submit(gw, "sender@origin.example", { "a@ok.example", "b@busy.example" })
    ds.wait_delivery(gw, "a@ok.example", "sent")
    ds.wait_delivery(gw, "b@busy.example", "deferred")
    -- the message stays: its "sent" line is written (at the end of the
    -- transaction) for a restart to know
    local state
    assert.truthy(gateway.wait_for(function()
      state = gateway.read_file(gw:spool() .. "/state/" .. qid) or ""
      return state:find("0 sent ", 1, true) and state:find("1 deferred ", 1, true)
    end), "state/" .. qid .. ":\n" .. tostring(state))
    assert.is_true(gw:kill("KILL"))
    gw:restart()
    ds.flush(gw)
    local line = ds.wait_delivery(gw, "b@busy.example", "deferred")
    -- (this run's log)
    assert.are.equal(0, #ds.delivery_lines(gw, "a@ok.example"), gw:log())
    assert.truthy(line:find(" attempt=2 ", 1, true), "attempts counted across a restart: " .. line)
    local _, count = ok:rcpts()
    assert.are.equal(1, count["a@ok.example"])
  end)

  it("a restart with 2000 deferred messages and active_limit 100: bounded, then each delivered once", function()
    local N, LIMIT = 2000, 100
    local down = refuser()
    local gw = gateway.start{ sections = {
      policy = { script = ds.policy("try.lua") },
      delivery = { retry_min = "1h", retry_max = "1h", active_limit = LIMIT,
        max_per_destination = 10 },
      dns = { resolver = ds.DEAD_RESOLVER },
      ["domain:bulk.example"] = { next_hop = "127.0.0.1:" .. down.port },
    } }
    assert.is_true(gw:kill("KILL"))
    local want = {}
    for i = 1, N do
      local qid = string.format("0000000001%06x", i)
      want[i] = "u" .. i .. "@bulk.example"
      write_deferred(gw:spool(), qid, want[i])
    end
    gw:restart()
    -- every message is tried or deferred (the next hop is dead after 3
    -- failures): the pass goes through the whole spool, LIMIT at a time
    gw:wait_log_count("event=delivery .* status=deferred", N, 60)
    gw:wait_log("event=queue_pass seen=" .. N .. " ", 20)
    assert.are.equal(3, #down.accepts(), "connections to the dead next hop")
    local full = gw:log_lines("event=active_full")
    assert.truthy(#full >= 1, "the set never filled up; log:\n" .. gw:log())
    for _, line in ipairs(gw:log_lines("event=active_full ")) do
      assert.truthy(tonumber(ds.field(line, "held")) <= LIMIT, line)
    end
    for _, line in ipairs(gw:log_lines("event=queue_pass ")) do
      assert.truthy(tonumber(ds.field(line, "held")) <= LIMIT, line)
    end
    assert.are.equal(N, #gw:spool_files("queue"))

    -- the next hop comes back; a flush forgets that it was dead
    down.stop()
    local up = ds.receiver{ port = down.port }
    ds.flush(gw)
    -- (the queue, not the maildir, is polled: reading 2000 messages again
    -- and again would cost more than the delivery)
    ds.wait_queue_empty(gw, nil, 60)
    local _, count = up:rcpts()
    for _, r in ipairs(want) do
      assert(count[r] == 1, r .. " arrived " .. tostring(count[r]) .. " times")
    end
    for _, line in ipairs(gw:log_lines("event=queue_pass ")) do
      assert.truthy(tonumber(ds.field(line, "held")) <= LIMIT, line)
    end
  end)
end)
