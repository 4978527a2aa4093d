-- The process model (README "Processes"): a master that locks the spool
-- and supervises, inbound workers, one queue manager; unprivileged
-- children; restarts after kill -9; reload under 500 held sessions;
-- shutdown with live sessions; the watchdog.
local gateway = require "harness"
local h = require "helpers"
local ds = require "delivery_support"
local dns_server = require "dns_server"
local procs = require "procs"
local tools = require "tools"
local json = require "dkjson"
local R = h.R

local q = gateway.shell_quote
local is_root = (io.popen("id -u"):read("*l")) == "0"

local function status_of(pid)
  local text = gateway.read_file("/proc/" .. pid .. "/status")
  assert(text, "no process " .. tostring(pid))
  local out = {}
  for k, v in text:gmatch("([%w_]+):%s*([^\n]*)") do out[k] = v end
  return out
end

-- Every process whose parent is `pid`.
local function children_of(pid)
  local out = {}
  local p = io.popen("ps -o pid= --ppid " .. pid)
  for line in p:lines() do out[#out + 1] = tonumber(line) end
  p:close()
  return out
end

local function smtpgw(args)
  return gateway.run("timeout 30 " .. q(gateway.bin()) .. " " .. args .. " 2>&1")
end

-- A relay to a receiver: mail for example.test goes to `r`.
-- Deliveries one destination may have in flight at once: all a kill -9 of
-- the queue manager can cut between the receiver's 250 and the spool's
-- record of it, so the most messages it may deliver twice (at least once,
-- as Postfix: nothing acknowledged is lost).
local IN_FLIGHT = 3

local function relay_gateway(r, extra)
  local ini = { workers = 2 }
  for k, v in pairs(extra or {}) do ini[k] = v end
  return gateway.start { ini_extra = ini,
    sections = { ["domain:example.test"] = { next_hop = r:addr() },
                 delivery = { retry_min = "1s", max_per_destination = IN_FLIGHT } } }
end

-- Runs spec/support/smtp_load.py against gw until stop() is called.
local function load(gw, threads)
  local dir = gateway.mktempdir()
  local self = { dir = dir, stop_file = dir .. "/stop", out = dir .. "/result.json" }
  self.proc = procs.start({ tools.PYTHON, tools.SUPPORT .. "/smtp_load.py",
    "--port", tostring(gw:port()), "--threads", tostring(threads or 4),
    "--stop-file", self.stop_file, "--out", self.out, "--max-seconds", "90" },
    { dir = dir, ready = "(ready)" })
  function self.stop()
    gateway.write_file(self.stop_file, "")
    assert(gateway.wait_for(function() return gateway.read_file(self.out) end, 60),
      "load did not stop")
    self.proc:stop()
    return json.decode(gateway.read_file(self.out))
  end
  return self
end

local function queued_count(gw) return #gw:log_lines("event=queued ") end

local function wait_more_queued(gw, n)
  local want = queued_count(gw) + n
  assert(gateway.wait_for(function() return queued_count(gw) >= want end, 30),
    "the load stalled at " .. queued_count(gw) .. " queued")
end

-- Every id was delivered: the receiver holds a message whose Received:
-- line names it, and at most `repeats` ids came twice (0 unless the queue
-- manager was killed mid-delivery). Counted at the receiver, not in the
-- log: a kill -9 loses the log lines of the loop turn it interrupts (the
-- log is written once per turn, README "Logs").
local function assert_delivered(r, qids, repeats)
  local function copies()
    local n = {}
    for _, m in ipairs(r:messages()) do
      local id = (m.text or ""):match("%(smtpgw%) with %S+ id (%x+)")
      if id then n[id] = (n[id] or 0) + 1 end
    end
    return n
  end
  local n
  gateway.wait_for(function()
    n = copies()
    for _, qid in ipairs(qids) do
      if not n[qid] then return false end
    end
    return true
  end, 30)
  local twice = {}
  for _, qid in ipairs(qids) do
    assert(n[qid], "qid " .. qid .. " (acknowledged with 250) was never delivered")
    assert(n[qid] <= 2, "qid " .. qid .. " delivered " .. n[qid] .. " times")
    if n[qid] > 1 then twice[#twice + 1] = qid end
  end
  assert(#twice <= repeats, #twice .. " ids delivered twice (at most " .. repeats ..
    " may be): " .. table.concat(twice, " "))
end

-- kill -9 of child `name` ("worker1", "qmgr"); waits for its exit line and
-- for its successor's event=ready (another pid, same name).
local function kill_and_wait_replaced(gw, kids, name, role, slot)
  gateway.run("kill -KILL " .. kids[name].pid)
  gw:wait_log("event=child_exit role=" .. role .. " slot=" .. slot .. " [^\n]*signal=9")
  assert(gateway.wait_for(function()
    local c = gw:children()[name]
    return c and c.pid ~= kids[name].pid
  end, 15), name .. " was not restarted")
end

describe("processes", function()
  after_each(function()
    ds.cleanup()
    procs.stop_all()
    h.cleanup()
    gateway.cleanup()
  end)

  it("a second instance on the same spool refuses and the first goes on untouched", function()
    local gw = gateway.start()
    local c = h.session(gw)
    h.envelope(c, "sender@example.org", { "user@example.test" })
    c:cmd("DATA", R.data)
    assert(c:send("Subject: in flight\r\n\r\nfirst half\r\n"))
    local pidfile = gateway.read_file(gw:spool() .. "/smtpgw.pid")

    local out, code = smtpgw("-c " .. q(gw.ini))
    assert.are.equal(1, code, out)
    assert.truthy(out:find("spool " .. gw:spool() .. " is in use by pid " .. gw.pid, 1, true), out)

    -- the first one's client, mid-DATA, still gets its 250
    assert(c:send("second half\r\n.\r\n"))
    local rcode, text = c:read_reply()
    assert.are.equal(250, rcode, text)
    assert.truthy(text:match(R.queued), text)
    assert.are.equal(pidfile, gateway.read_file(gw:spool() .. "/smtpgw.pid"))
    out, code = smtpgw("-c " .. q(gw.ini) .. " reload")
    assert.are.equal(0, code, out)
    assert.truthy(gw:alive())
  end)

  it("as root, every child runs as [gateway] user without capabilities; the master alone is root", function()
    if not is_root then
      pending("needs root")
      return
    end
    local gw = gateway.start { ini_extra = { workers = 2, user = "smtpgw" },
      sections = { tls = { cert_dir = false } } } -- its own Default Cert
    local uid = tonumber((io.popen("id -u smtpgw"):read("*l")))
    local kids = gw:wait_children(3)
    local pids = children_of(gw.pid)
    assert.are.equal(3, #pids, "children: " .. table.concat(pids, " "))
    for _, pid in ipairs(pids) do
      local st = status_of(pid)
      local u = tostring(uid)
      assert.are.same({ u, u, u, u }, { st.Uid:match("(%d+)%s+(%d+)%s+(%d+)%s+(%d+)") },
        "pid " .. pid .. " Uid: " .. st.Uid)
      assert.truthy(st.Gid:match("^(%d+)") ~= "0", "pid " .. pid .. " Gid: " .. st.Gid)
      assert.are.equal("0000000000000000", st.CapEff, "pid " .. pid)
      assert.are.equal("0000000000000000", st.CapPrm, "pid " .. pid)
      assert.are.equal("1", st.NoNewPrivs, "pid " .. pid)
    end
    for name, c in pairs(kids) do
      assert.are.equal(uid, c.uid, name)
    end
    assert.truthy(status_of(gw.pid).Uid:match("^0%s"), "the master is root")

    -- the key the master made is root's alone, and the user cannot read it
    local key = gw:dir() .. "/certs/default.key"
    local perm = gateway.run("stat -c '%a %U' " .. q(key))
    assert.are.equal("600 root\n", perm)
    local _, code = gateway.run("setpriv --reuid=smtpgw --regid=smtpgw --clear-groups " ..
      "cat " .. q(key) .. " >/dev/null 2>&1")
    assert.are_not.equal(0, code, "smtpgw could read the key")

    -- STARTTLS works (the children hold the key), and still after a reload
    local function starttls_ok()
      local r = tools.smtplib { port = gw:port(), from = "a@example.org",
        to = { "user@example.test" }, msg = "Subject: t\r\n\r\nx\r\n", starttls = true }
      assert(r.error == nil, tostring(r.error) .. "\n" .. r.raw)
    end
    starttls_ok()
    local out, rc = smtpgw("-c " .. q(gw.ini) .. " reload")
    assert.are.equal(0, rc, out)
    gw:wait_log_count("event=ready [^\n]*generation=2", 3)
    starttls_ok()
    for _, pid in ipairs(children_of(gw.pid)) do
      assert.are.equal("0000000000000000", status_of(pid).CapEff)
    end
  end)

  it("kill -9 of a worker under load: restarted, every message that got 250 is delivered", function()
    local r = ds.receiver { no_starttls = true }
    local gw = relay_gateway(r)
    local kids = gw:wait_children(3)
    local l = load(gw, 4)
    wait_more_queued(gw, 20)
    kill_and_wait_replaced(gw, kids, "worker1", "worker", 1)
    wait_more_queued(gw, 20)
    local result = l.stop()
    local repeats = 0
    assert.truthy(result.ok > 40, json.encode(result))
    -- ids are unique across workers and restarts
    local seen = {}
    for _, qid in ipairs(result.queued_ids) do
      assert.is_nil(seen[qid], "id " .. qid .. " given twice")
      seen[qid] = true
    end
    assert_delivered(r, result.queued_ids, repeats)
  end)

  it("kill -9 of the queue manager: restarted, deliveries resume, none lost, only those in flight repeated", function()
    local r = ds.receiver { no_starttls = true }
    local gw = relay_gateway(r)
    local kids = gw:wait_children(3)
    local l = load(gw, 4)
    wait_more_queued(gw, 20)
    kill_and_wait_replaced(gw, kids, "qmgr", "qmgr", 0)
    wait_more_queued(gw, 20)
    local result = l.stop()
    local repeats = IN_FLIGHT
    assert.truthy(result.ok > 60, json.encode(result))
    assert_delivered(r, result.queued_ids, repeats)
    ds.wait_queue_empty(gw, result.queued_ids)
  end)

  it("SIGHUP during 500 concurrent sessions refuses and drops none", function()
    local gw = gateway.start { ini_extra = { workers = 2, max_connections = 2000,
      max_connections_per_ip = 2000 } }
    gw:wait_children(3)
    local dir = gateway.mktempdir()
    local go, out = dir .. "/go", dir .. "/result.json"
    local held = procs.start({ tools.PYTHON, tools.SUPPORT .. "/held_sessions.py",
      "--port", tostring(gw:port()), "--sessions", "500", "--go-file", go,
      "--out", out }, { dir = dir, ready = "ready (%d+)" })
    assert.are.equal("500", held.ready[1])

    gw:signal("HUP")
    gw:wait_log("event=reload status=ok")
    gw:wait_log_count("event=ready [^\n]*generation=2", 3)
    -- a new client is served by the new generation meanwhile
    local c = h.session(gw)
    c:cmd("QUIT", R.bye)

    gateway.write_file(go, "")
    assert(gateway.wait_for(function() return gateway.read_file(out) end, 120),
      "held sessions did not finish")
    local result = json.decode(gateway.read_file(out))
    assert.are.equal(500, result.ok, json.encode(result.failures))
    assert.are.equal(0, #gw:log_lines("event=reject stage=CONNECT"))
    -- the retired workers finished their sessions and left
    gw:wait_log_count("event=child_exit role=worker [^\n]*status=0", 2, 30)
  end)

  -- The old single process freed its listener before the queue's last
  -- commit callbacks ran, and those destroyed sessions that then touched
  -- it: sessions whose end of data is being synced when the second
  -- SIGTERM comes are the ones that matter.
  it("a second SIGTERM with live sessions, some being synced, stops at once and cleanly", function()
    local gw = gateway.start { ini_extra = { workers = 2 } }
    gw:wait_children(3)
    local clients = {}
    for i = 1, 30 do
      local c = h.session(gw)
      if i % 3 ~= 0 then
        h.envelope(c, "s@example.org", { "user@example.test" })
        c:cmd("DATA", R.data)
      end
      clients[#clients + 1] = c
    end
    -- ends of data, replies unread, then the two signals at once
    for i, c in ipairs(clients) do
      if i % 3 ~= 0 then assert(c:send("Subject: x\r\n\r\n" .. ("y"):rep(5000) .. "\r\n.\r\n")) end
    end
    gateway.run("kill -TERM " .. gw.pid .. "; kill -TERM " .. gw.pid)
    assert(gateway.wait_for(function() return not gw:alive() end, 15), "still running")
    assert.are.equal(0, gw:exit_code())
    assert.is_nil(gateway.sanitizer_report(gw:log()), gw:log())
    gw.stopped = true
  end)

  it("the watchdog kills a worker whose loop stopped turning, and it is replaced", function()
    local gw = gateway.start { ini_extra = { workers = 2, watchdog_timeout = "2s" } }
    local kids = gw:wait_children(3)
    gateway.run("kill -STOP " .. kids.worker2.pid)
    gw:wait_log("event=watchdog role=worker slot=2 pid=" .. kids.worker2.pid)
    gw:wait_log("event=child_exit role=worker slot=2 [^\n]*signal=9")
    assert(gateway.wait_for(function()
      local c = gw:children().worker2
      return c and c.pid ~= kids.worker2.pid
    end, 15), "worker2 was not replaced")
    for _ = 1, 4 do
      local c = h.session(gw)
      c:cmd("QUIT", R.bye)
    end
  end)

  it("a reload hands the queue manager a changed [dns] resolver", function()
    local r = ds.receiver { no_starttls = true }
    local function sections(resolver)
      return { dns = { resolver = resolver }, delivery = { retry_min = "1s", retry_max = "2s" },
        ["domain:moved.example"] = { next_hop = "relay.moved.test:" .. r.port } }
    end
    local extra = { relay_domains = "example.test, moved.example" }
    local gw = gateway.start { ini_extra = extra, sections = sections(ds.DEAD_RESOLVER) }
    local qid = ds.submit(gw, "s@example.org", { "u@moved.example" }, { starttls = false })
    ds.wait_delivery(gw, "u@moved.example", "deferred")

    local dns = dns_server.start { zones = { ["moved.test."] = "static" },
      data = { "relay.moved.test. A 127.0.0.1" } }
    finally(function() dns:stop() end)
    gateway.write_file(gw.ini, gateway.ini_text(extra, sections(dns:resolver())))
    local out, code = smtpgw("-c " .. q(gw.ini) .. " reload")
    assert.are.equal(0, code, out)
    gw:wait_log("event=ready role=qmgr [^\n]*generation=2")
    ds.wait_delivery(gw, "u@moved.example", "sent", 1, 20)
    r:wait_rcpts({ "u@moved.example" })
    ds.wait_queue_empty(gw, { qid })
  end)

  it("runs the same started as an ordinary user, children keeping that uid", function()
    if not is_root then
      pending("needs root to become another user")
      return
    end
    local dir = gateway.mktempdir()
    local certs = gateway.shared_cert_dir()
    gateway.run("mkdir -p " .. q(dir .. "/certs") .. " && cp " .. q(certs .. "/shared.crt") ..
      " " .. q(certs .. "/shared.key") .. " " .. q(dir .. "/certs/") ..
      " && chown -R nobody:nogroup " .. q(dir))
    local wrapper = dir .. "/as-nobody.sh"
    gateway.write_file(wrapper, "#!/bin/sh\nexec setpriv --reuid=nobody --regid=nogroup " ..
      "--clear-groups " .. q(gateway.bin()) .. " \"$@\"\n")
    gateway.run("chmod 755 " .. q(wrapper))
    local gw = gateway.start { dir = dir, bin = wrapper,
      ini_extra = { workers = 2 }, sections = { tls = { cert_dir = dir .. "/certs" } } }
    local nobody = tonumber((io.popen("id -u nobody"):read("*l")))
    local kids = gw:wait_children(3)
    for name, c in pairs(kids) do assert.are.equal(nobody, c.uid, name) end
    local c = h.session(gw)
    h.deliver(c, "s@example.org", { "user@example.test" }, h.message("as nobody"))
    c:cmd("QUIT", R.bye)
    local out, code = gateway.run("timeout 30 setpriv --reuid=nobody --regid=nogroup " ..
      "--clear-groups " .. q(gateway.bin()) .. " -c " .. q(gw.ini) .. " reload 2>&1")
    assert.are.equal(0, code, out)
  end)
end)
