-- The queue manager's system calls per relayed message (README
-- "Performance" (d), issue 9), traced with strace on the running queue
-- manager while messages go to a receiver that takes everything at the
-- first attempt: each queue file is opened once and read in one read
-- (admission reads it whole and keeps it for the first attempt), nothing
-- is written to state/, and libev never re-adds a descriptor it already
-- watches (no failing epoll_ctl: the SMTP client re-arms its connection only
-- when what it waits for changes).

local gateway = require "harness"
local ds = require "delivery_support"
local tools = require "tools"

local N = 12

local function sections(receiver)
  local s = ds.sections("try.lua")
  s["domain:a.example"] = { next_hop = receiver:addr() }
  return s
end

local function traced(pid)
  local status = gateway.read_file("/proc/" .. pid .. "/status") or ""
  local tracer = tonumber(status:match("TracerPid:%s*(%d+)") or "0")
  return tracer ~= 0
end

local function gone(pid)
  return not gateway.exists("/proc/" .. pid)
end

describe("queue manager system calls", function()
  after_each(ds.cleanup)

  it("per message at the first attempt: one open and one read of the queue file, no state file, no failing epoll_ctl", function()
    if select(2, gateway.run("command -v strace && strace -qq -o /dev/null true")) ~= 0 then
      pending("strace is missing or cannot trace here (ptrace refused)")
      return
    end
    local r = ds.receiver()
    local gw = gateway.start{ sections = sections(r) }
    local qmgr = assert(gateway.wait_for(function() return gw:children().qmgr end),
      "no qmgr").pid
    local dir = gateway.mktempdir()
    local trace = dir .. "/qmgr.trace"
    local out, code = gateway.run("strace -f -qq -yy -o " .. gateway.shell_quote(trace) ..
      " -e trace=openat,pread64,newfstatat,epoll_ctl -p " .. qmgr ..
      " >/dev/null 2>&1 & echo $!")
    assert.are.equal(0, code, out)
    local strace = assert(tonumber(out:match("(%d+)")), out)
    if not gateway.wait_for(function() return traced(qmgr) or gone(strace) end, 10)
        or gone(strace) then
      gateway.run("kill " .. strace .. " 2>/dev/null")
      gateway.rm_rf(dir)
      pending("strace cannot attach to the queue manager here")
      return
    end
    local msg = "From: <s@origin.example>\r\nSubject: t\r\n\r\n" ..
      string.rep("0123456789abcdef\r\n", 100)
    local res = tools.smtplib{ port = gw:port(), from = "s@origin.example",
      to = { "u@a.example" }, count = N, msg = msg, ehlo = "client.example" }
    assert(res.error == nil, tostring(res.error) .. "\n" .. res.raw)
    local qids = {}
    for _, d in ipairs(res.by.data or {}) do
      qids[#qids + 1] = assert(d.text:match("queued as (%x+)$"), res.raw)
    end
    assert.are.equal(N, #qids)
    gw:wait_log_count("event=delivery .*status=sent", N, 30)
    ds.wait_queue_empty(gw, qids)
    gateway.run("kill -INT " .. strace)
    assert(gateway.wait_for(function() return gone(strace) end, 10), "strace did not stop")
    local calls = assert(gateway.read_file(trace))
    gateway.rm_rf(dir)
    for _, qid in ipairs(qids) do
      local opens, reads, stats = 0, 0, 0
      for line in calls:gmatch("[^\n]+") do
        if line:find('/spool/queue>, "' .. qid .. '"', 1, true) and line:find("openat(", 1, true) then
          opens = opens + 1
        end
        if line:find("/spool/queue/" .. qid .. ">", 1, true) then
          if line:find("pread64(", 1, true) then reads = reads + 1 end
          if line:find("newfstatat(", 1, true) then stats = stats + 1 end
        end
        -- looked for once (no earlier attempt may have recorded anything),
        -- never created
        assert.falsy(line:find('/spool/state>, "' .. qid .. '", O_WRONLY', 1, true), line)
      end
      assert.are.equal(1, opens, qid .. " opened " .. opens .. " times")
      assert.are.equal(1, reads, qid .. " read " .. reads .. " times")
      assert.are.equal(0, stats, qid .. ": a file read whole needs no fstat")
    end
    assert.falsy(calls:find("EEXIST", 1, true),
      "a failing epoll_ctl:\n" .. (calls:match("[^\n]*EEXIST[^\n]*") or ""))
    assert.are.equal(N, #r:messages())
  end)
end)
