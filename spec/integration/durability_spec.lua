-- Durability of the spool (README "Spool"): a 250 means the message survives
-- kill -9; anything not acknowledged is removed at the next start.

local gateway = require "harness"
local client = require "smtp_client"
local h = require "helpers"
local R = h.R

-- Waits until a file shows up in SPOOL/tmp (the message being received).
local function wait_tmp_file(gw)
  return gateway.wait_for(function() return #gw:spool_files("tmp") > 0 end, 5)
end

describe("durability", function()
  after_each(h.cleanup)

  it("keeps an acknowledged message across kill -9 and logs spool_recover", function()
    local gw = gateway.start()
    local c = h.session(gw)
    local qid = h.deliver(c, "me@example.org", { "user@example.test" },
      h.message("durable", { "must survive kill -9" }))
    local before = gw:queue_file(qid)
    assert.is_not_nil(before)

    assert.is_true(gw:kill("KILL"))
    c:close()
    gw:restart()
    gw:wait_log("event=spool_recover[^\n]* queued=1 partial_removed=0")

    assert.are.same({ qid }, gw:spool_files("queue"))
    assert.are.same({}, gw:spool_files("tmp"))
    assert.are.equal(before, gw:queue_file(qid))
    local env, body = gateway.parse_queue_file(gw:queue_file(qid))
    assert.are.equal(qid, env.id)
    assert.truthy(body:find("must survive kill -9\r\n", 1, true))

    -- the restarted gateway serves, with a new, later id
    local c2 = h.session(gw)
    local qid2 = h.deliver(c2, "me@example.org", { "user@example.test" }, h.message("after"))
    assert.are_not.equal(qid, qid2)
    assert.truthy(qid2 > qid, qid .. " then " .. qid2)
    assert.are.equal(2, #gw:spool_files("queue"))
  end)

  it("drops a message cut off mid-DATA by kill -9", function()
    local gw = gateway.start()
    local c = h.session(gw)
    h.envelope(c, "me@example.org", { "user@example.test" })
    c:cmd("DATA", R.data)
    c:send("Subject: cut off\r\n\r\n" .. string.rep("this message never ends\r\n", 400))
    local had_tmp = wait_tmp_file(gw)
    local ntmp = #gw:spool_files("tmp")

    assert.is_true(gw:kill("KILL"))
    c:close()
    assert.are.same({}, gw:spool_files("queue"))
    gw:restart()
    local removed = gw:wait_log("event=spool_recover[^\n]* queued=0 partial_removed=(%d+)")
    if had_tmp then
      assert.truthy(tonumber(removed) >= 1, "partial_removed=" .. removed)
      assert.are.equal(ntmp, tonumber(removed))
    end
    assert.are.same({}, gw:spool_files("queue"))
    assert.are.same({}, gw:spool_files("tmp"))
  end)

  it("recovers acknowledged messages and drops partial ones together", function()
    local gw = gateway.start()
    local c1 = h.session(gw)
    local q1 = h.deliver(c1, "me@example.org", { "a@example.test" }, h.message("one"))
    local q2 = h.deliver(c1, "me@example.org", { "b@example.test" }, h.message("two"))
    local c2 = h.session(gw)
    h.envelope(c2, "me@example.org", { "c@example.test" })
    c2:cmd("DATA", R.data)
    c2:send("Subject: partial\r\n\r\npartial\r\n")
    assert.truthy(wait_tmp_file(gw), "no tmp/ file while receiving")

    assert.is_true(gw:kill("KILL"))
    gw:restart()
    gw:wait_log("event=spool_recover[^\n]* queued=2 partial_removed=1")
    local want = { q1, q2 }
    table.sort(want)
    assert.are.same(want, gw:spool_files("queue"))
    assert.are.same({}, gw:spool_files("tmp"))
  end)

  it("removes stray files in tmp/ at start-up and never takes them for messages", function()
    local gw = gateway.start()
    local c = h.session(gw)
    local qid = h.deliver(c, "me@example.org", { "user@example.test" }, h.message("keep"))
    c:cmd("QUIT", R.bye)
    assert.is_true(gw:kill("TERM"))
    assert.are.equal(0, gw:exit_code())
    -- a leftover that looks like a finished message
    gateway.write_file(gw:spool() .. "/tmp/0123456789abcdef", gw:queue_file(qid))
    gateway.write_file(gw:spool() .. "/tmp/junk", "junk\n")
    gw:restart()
    gw:wait_log("event=spool_recover[^\n]* queued=1 partial_removed=2")
    assert.are.same({}, gw:spool_files("tmp"))
    assert.are.same({ qid }, gw:spool_files("queue"))
  end)

  it("exits with status 0 on SIGTERM with an open session", function()
    local gw = gateway.start()
    local c = h.session(gw)
    local qid = h.deliver(c, "me@example.org", { "user@example.test" }, h.message("term"))
    c:cmd("MAIL FROM:<me@example.org>", R.mail_ok)
    assert.is_true(gw:kill("TERM"), "gateway did not exit on SIGTERM")
    assert.are.equal(0, gw:exit_code(), gw:log())
    assert.is_nil(gateway.sanitizer_report(gw:log()), gw:log())
    assert.is_not_nil(gw:queue_file(qid))
  end)

  it("creates the spool directory relative to the ini file", function()
    local gw = gateway.start { ini_extra = { spool = "deep/spool" } }
    local c = h.session(gw)
    local qid = h.deliver(c, "me@example.org", { "user@example.test" }, h.message("deep"))
    assert.is_not_nil(gateway.read_file(gw:dir() .. "/deep/spool/queue/" .. qid))
  end)

  -- The queue file is written in 16 KiB pieces (a small message in one
  -- write at the end of data): every size around and past a piece, with
  -- dot-stuffed lines, lands byte for byte.
  it("writes messages of every size around its 16 KiB writes byte for byte", function()
    local gw = gateway.start()
    local c = h.session(gw)
    for _, n in ipairs({ 0, 1, 195, 199, 200, 201, 202, 203, 204, 205, 210, 409, 410, 1300 }) do
      local lines = {}
      for i = 1, n do
        local text = string.format("%05d ", i) .. string.rep(string.char(97 + i % 26), 72)
        lines[i] = (i % 7 == 0) and ("." .. text) or text
      end
      local raw = h.message("size " .. n, lines)
      local qid = h.deliver(c, "me@example.org", { "user@example.test" },
        (raw:gsub("\r\n%.", "\r\n..")))
      local env, body = gateway.parse_queue_file(gw:queue_file(qid))
      assert.are.equal(qid, env.id)
      assert.truthy(body:find("^Received: "), "size " .. n)
      assert.are.equal(raw, body:sub(-#raw), "size " .. n)
      assert.are.equal(raw, body:sub(body:find("\r\nFrom: ", 1, true) + 2), "size " .. n)
    end
  end)
end)
