-- Message lifetimes in the queue runner (issue 8, "Defects to fix on the
-- way"): admitting a message (a new one, a DSN just synced, `queue flush`)
-- never runs the scheduler from inside a callback that still holds a
-- message, so a message the scheduler frees (it was deleted with `queue
-- delete`) is never touched again. The gateway runs under ASan: a
-- use-after-free is a sanitizer report, and stopping the gateway raises.

local gateway = require "harness"
local ds = require "delivery_support"

-- A queue file in the spool's own format, as a crash leaves it.
local function write_queue_file(spool, qid, sender, rcpts)
  local lines = { "smtpgw-queue-file: 1", "id: " .. qid, "arrival: " .. os.time(),
    "client: 127.0.0.1", "helo: client.example", "sender: <" .. sender .. ">" }
  for _, r in ipairs(rcpts) do lines[#lines + 1] = "rcpt: <" .. r .. ">" end
  lines[#lines + 1] = "body: 7BIT"
  lines[#lines + 1] = "smtputf8: 0"
  gateway.write_file(spool .. "/queue/" .. qid, table.concat(lines, "\n") ..
    "\n\nSubject: lifetimes\r\n\r\nbody\r\n")
end

describe("delivery: message lifetimes", function()
  after_each(ds.cleanup)

  -- The trigger of the issue, made deterministic. One round of the queue
  -- runner, with room for two transactions, takes e.test and c.test (b.test
  -- waits for room). e.test's client_tls fails at once; c.test's holds the
  -- loop for a moment, long enough for the spec to `queue delete` the
  -- message, and then fails too. The round ends: the bounce owed for
  -- a.test goes to the sync thread as a DSN and b.test is due, with room
  -- now. When the DSN is synced, its callback must not start b.test's
  -- transaction itself: that finds the file gone and frees the message
  -- the callback is still using.
  it("a DSN synced after its message was deleted, with another recipient due", function()
    local dir = gateway.mktempdir()
    local script = dir .. "/hold.lua"
    gateway.write_file(script, table.concat({
      "local policy = {}",
      "function policy.client_tls(ctx, host)",
      "  if ctx.domain == 'e.test' then error('no level for e.test') end",
      "  if ctx.domain == 'c.test' then",
      "    host.log('holding the loop for c.test')",
      "    local stop = host.now() + 0.6",
      "    while host.now() < stop do end",
      "    error('no level for c.test')",
      "  end",
      "  return 'none'",
      "end",
      "return policy", "" }, "\n"))
    local gw = gateway.start{ dir = dir, sections = {
      policy = { script = script, max_time = "5s", max_instructions = 1000000000 },
      delivery = { max_connections = 2, retry_min = "1h", retry_max = "1h" },
      dns = { resolver = ds.DEAD_RESOLVER },
      ["domain:b.test"] = { next_hop = "127.0.0.1:9" },
    } }
    assert.is_true(gw:kill("KILL"))
    local qid = "00000000000c0001"
    write_queue_file(gw:spool(), qid, "sender@origin.example",
      { "a@a.test", "e@e.test", "c@c.test", "b@b.test" })
    gateway.write_file(gw:spool() .. "/state/" .. qid,
      "0 bounced 550 5.1.1 <a@a.test>: no such user\n")

    gw:restart()
    gw:wait_log("event=policy_log[^\n]*holding the loop for c%.test")
    local out, code = ds.queue_cmd(gw, "delete", qid)
    assert.are.equal(0, code, out)
    -- the precondition: deleted while c.test's hook still held the loop
    -- (its failure is logged the moment it returns)
    assert.is_nil(gw:log():find("event=policy_error[^\n]*domain c%.test"),
      "queue delete came after c.test's hook had returned; log:\n" .. gw:log())

    gw:wait_log("event=dropped qid=" .. qid)
    -- the DSN for a.test was queued and is being delivered on its own
    ds.wait_delivery(gw, "sender@origin.example", "deferred")
    assert.truthy(gw:alive(), "the gateway died; log:\n" .. gw:log())
    assert.falsy(gateway.exists(gw:spool() .. "/queue/" .. qid))
    assert.truthy(gateway.wait_for(function()
      return not gateway.exists(gw:spool() .. "/state/" .. qid)
    end), "state/" .. qid .. " left behind")
    gw:stop() -- raises on a sanitizer report
  end)

  -- A queue file that cannot be opened for a moment (here: the queue
  -- manager is out of descriptors) is not a deleted one: its recipients
  -- wait for their next attempt, and the message stays in the spool.
  it("a queue file that cannot be opened for a moment is retried, not dropped", function()
    local dir = gateway.mktempdir()
    local wrapper = dir .. "/smtpgw-64-fds"
    gateway.write_file(wrapper, "#!/bin/sh\nexec prlimit --nofile=64:64 -- " ..
      gateway.shell_quote(gateway.bin()) .. " \"$@\"\n")
    assert(select(2, gateway.run("chmod 755 " .. gateway.shell_quote(wrapper))) == 0)
    -- one next hop per domain (each its own destination, so that none
    -- waits for another's window): refused at once
    local sections = {
      delivery = { max_connections = 200, retry_min = "1h", retry_max = "1h" },
      dns = { resolver = ds.DEAD_RESOLVER },
    }
    local rcpts = {}
    for i = 1, 60 do
      rcpts[i] = "u@d" .. i .. ".test"
      sections["domain:d" .. i .. ".test"] = { next_hop = "127.0.0." .. (i + 1) .. ":9" }
    end
    local gw = gateway.start{ dir = dir, bin = wrapper, ini_extra = { workers = 1 },
      sections = sections }
    -- one transaction per domain, each holding the queue file open while
    -- it starts: more of them than the queue manager has descriptors
    local qid = ds.submit(gw, "sender@origin.example", rcpts)
    -- the round is over: the message was removed, or every recipient has
    -- its deferral
    assert.truthy(gateway.wait_for(function()
      return not gateway.exists(gw:spool() .. "/queue/" .. qid) or
        #ds.delivery_lines(gw, nil, "deferred") >= #rcpts
    end, 30), "the round never ended; log:\n" .. gw:log())
    for _, r in ipairs(rcpts) do
      assert.are.equal(1, #ds.delivery_lines(gw, r, "deferred"), r .. "; log:\n" .. gw:log())
    end
    assert.is_nil(gw:log():find("event=dropped", 1, true), gw:log())
    assert.is_nil(gw:log():find("event=removed", 1, true), gw:log())
    assert.truthy(gateway.exists(gw:spool() .. "/queue/" .. qid), "queue/" .. qid ..
      " is gone; log:\n" .. gw:log())
    -- the refusals were the descriptors (else this spec shows nothing)
    assert.truthy(gw:log():find("Too many open files", 1, true), gw:log())
    gw:stop()
  end)

  -- The same, when the message is being taken in (a worker's notice, a
  -- DSN just synced): it is read again at the next retry, not left in the
  -- spool until a `queue flush` or a restart.
  it("a message that cannot be read when it is added is read again later", function()
    local r = ds.receiver()
    local dir = gateway.mktempdir()
    local spool = dir .. "/spool"
    assert(select(2, gateway.run("mkdir -p " .. gateway.shell_quote(spool .. "/queue"))) == 0)
    local ini = dir .. "/gateway.ini"
    gateway.write_file(ini, gateway.ini_text({ spool = spool }, {
      delivery = { retry_min = "1s", retry_max = "1s" },
      dns = { resolver = ds.DEAD_RESOLVER },
      ["domain:far.test"] = { next_hop = r:addr() },
    }))
    local qid = "00000000000d0002"
    write_queue_file(spool, qid, "sender@origin.example", { "v@far.test" })
    local driver = gateway.bin():gsub("smtpgw$", "delivery_driver")
    local out, code = gateway.run("timeout -k 5 40 " .. gateway.shell_quote(driver) ..
      " -c " .. gateway.shell_quote(ini) .. " --starve 0.2 --add " .. qid ..
      " --timeout 20 </dev/null")
    assert.is_nil(gateway.sanitizer_report(out), out)
    assert.are.equal(0, code, out)
    -- the add found no descriptor (else this spec shows nothing)
    assert.truthy(out:find("Too many open files", 1, true), out)
    assert.truthy(out:find("queued=0", 1, true), out)
    assert.are.same({ "v@far.test" }, r:wait_messages(1)[1].rcpts)
    gateway.rm_rf(dir)
  end)

  -- A queue manager scans the spool at start while workers tell it about
  -- the messages they commit: the same message can be named twice. Driven
  -- through spec/c/delivery_driver.c (delivery_load, then delivery_add of
  -- the same id, as the queue manager's loop would).
  it("a message it already holds, added again, is delivered once", function()
    local r = ds.receiver()
    local dir = gateway.mktempdir()
    local spool = dir .. "/spool"
    assert(select(2, gateway.run("mkdir -p " .. gateway.shell_quote(spool .. "/queue"))) == 0)
    local ini = dir .. "/gateway.ini"
    gateway.write_file(ini, gateway.ini_text({ spool = spool }, {
      dns = { resolver = ds.DEAD_RESOLVER },
      ["domain:far.test"] = { next_hop = r:addr() },
    }))
    local qid = "00000000000d0001"
    write_queue_file(spool, qid, "sender@origin.example", { "u@far.test" })
    local driver = gateway.bin():gsub("smtpgw$", "delivery_driver")
    local out, code = gateway.run("timeout -k 5 40 " .. gateway.shell_quote(driver) ..
      " -c " .. gateway.shell_quote(ini) .. " --load --add " .. qid .. " --add " .. qid ..
      " </dev/null")
    assert.is_nil(gateway.sanitizer_report(out), out)
    assert.are.equal(0, code, out)
    assert.truthy(out:find("queued=0", 1, true), out)
    local msgs = r:wait_messages(1)
    assert.are.same({ "u@far.test" }, msgs[1].rcpts)
    assert.are.equal(1, #r:messages(), "delivered more than once:\n" .. out)
    gateway.rm_rf(dir)
  end)
end)
