-- Statistics (README "Operating": "Statistics and metrics"): after a known
-- run (5 messages accepted, 1 recipient refused, 3 recipients delivered, 2
-- deferred) `smtpgw stats --json` and the Prometheus endpoint give those
-- numbers, promtool accepts the endpoint's text, the endpoint answers
-- nothing but GET /metrics, and the counters survive a worker killed and
-- restarted. Static next_hop routes; the resolver is a dead loopback port.

local gateway = require "harness"
local ds = require "delivery_support"
local h = require "helpers"
local json = require "dkjson"
local socket = require "socket"

local q = gateway.shell_quote

local function stats_cmd(gw, ...)
  local args = {}
  for i, a in ipairs({ ... }) do args[i] = q(a) end
  return gateway.run("timeout -k 5 30 " .. q(gateway.bin()) .. " -c " .. q(gw.ini) ..
    " stats " .. table.concat(args, " ") .. " </dev/null 2>&1")
end

local function stats_json(gw)
  local out, code = stats_cmd(gw, "--json")
  assert(code == 0, "stats --json exited " .. code .. ": " .. out)
  local doc, _, err = json.decode(out)
  assert(doc, "stats --json is not JSON (" .. tostring(err) .. "):\n" .. out)
  return doc
end

-- One HTTP exchange with the metrics endpoint: the raw request, the whole
-- response (the server closes the connection).
local function http(port, request)
  local c = assert(socket.tcp())
  c:settimeout(10)
  assert(c:connect("127.0.0.1", port))
  assert(c:send(request))
  local data, err, partial = c:receive("*a")
  c:close()
  return data or partial, err
end

local function scrape(port)
  local resp = http(port, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
  local head, body = resp:match("^(.-)\r\n\r\n(.*)$")
  assert(head, "no HTTP head in:\n" .. resp)
  return head, body
end

-- "name{labels} value" lines into a table keyed by "name{labels}".
local function series(body)
  local out = {}
  for line in body:gmatch("[^\n]+") do
    if line:sub(1, 1) ~= "#" then
      local key, value = line:match("^(%S+) (%S+)$")
      assert(key, "not a sample line: " .. line)
      out[key] = tonumber(value)
    end
  end
  return out
end

local function metrics_port(gw)
  return tonumber(gw:wait_log("event=metrics_listen addr=127%.0%.0%.1:(%d+)"))
end

describe("statistics", function()
  after_each(ds.cleanup)

  local function known_run()
    local ok = ds.receiver()
    local busy = ds.receiver{ rcpt_reply = "450 4.2.0 busy" }
    local gw = gateway.start{ sections = {
      policy = { script = ds.policy("try.lua") },
      delivery = { retry_min = "1h", retry_max = "2h" },
      dns = { resolver = ds.DEAD_RESOLVER },
      metrics = { listen = "127.0.0.1:0" },
      ["domain:ok.example"] = { next_hop = ok:addr() },
      ["domain:busy.example"] = { next_hop = busy:addr() },
    } }
    for i = 1, 3 do ds.submit(gw, "s@origin.example", { "r" .. i .. "@ok.example" }) end
    for i = 4, 5 do ds.submit(gw, "s@origin.example", { "r" .. i .. "@busy.example" }) end
    -- one recipient refused, in a plaintext session
    local c = h.session(gw)
    c:cmd("MAIL FROM:<s@origin.example>", h.R.mail_ok)
    c:cmd("RCPT TO:<nodomain>", h.need_fqdn("nodomain"))
    c:cmd("QUIT", h.R.bye)
    c:close()
    for i = 1, 3 do ds.wait_delivery(gw, "r" .. i .. "@ok.example", "sent") end
    for i = 4, 5 do ds.wait_delivery(gw, "r" .. i .. "@busy.example", "deferred") end
    ok:wait_messages(3)
    return gw, ok, busy
  end

  it("stats --json and the table count a known run", function()
    local gw, ok, busy = known_run()
    local s = stats_json(gw)
    local n = s.counters
    assert.is_true(s.running)
    assert.are.equal(6, n.connections)
    assert.are.equal(5, n.received)
    assert.are.equal(6, n.sessions.may)
    assert.are.equal(5, n.tls_sessions.may)
    assert.are.equal(1, n.rejects.rcpt["5xx"])
    assert.are.equal(0, n.rejects.rcpt["4xx"])
    assert.are.same({ sent = 3, deferred = 2, bounced = 0, expired = 0 }, n.recipients)
    -- the receivers offer no STARTTLS: plaintext connections at may, one
    -- per connection the receivers saw (connection reuse: not one per
    -- message)
    assert.are.equal(ok:connections() + busy:connections(), n.outbound.may.plaintext)
    assert.are.equal(0, n.outbound.may.tls)
    assert.are.equal(0, n.policy_errors.rcpt)
    -- the queue, counted now: two deferred messages for busy.example
    assert.are.equal(2, s.queue.deferred)
    assert.are.equal(0, s.queue.active)
    assert.are.equal(2, s.queue.recipients)
    assert.are.equal("busy.example", s.queue.domains[1].domain)
    assert.are.equal(2, s.queue.domains[1].messages)
    assert.are.equal(2, s.queue.domains[1].age[1]) -- younger than 5 minutes

    local out, code = stats_cmd(gw)
    assert.are.equal(0, code, out)
    assert.truthy(out:find("running", 1, true), out)
    assert.truthy(out:find("messages received%s+5\n"), out)
    assert.truthy(out:find("\n%s+busy%.example%s+2%s+2"), out)
  end)

  it("/metrics gives the same numbers, and promtool accepts the text", function()
    local gw = known_run()
    local port = metrics_port(gw)
    local head, body = scrape(port)
    assert.truthy(head:find("^HTTP/1%.0 200 OK"), head)
    assert.truthy(head:find("Content-Type: text/plain; version=0.0.4", 1, true), head)
    local m = series(body)
    assert.are.equal(5, m["smtpgw_messages_received_total"])
    assert.are.equal(6, m["smtpgw_inbound_connections_total"])
    assert.are.equal(3, m['smtpgw_recipients_total{result="sent"}'])
    assert.are.equal(2, m['smtpgw_recipients_total{result="deferred"}'])
    assert.are.equal(1, m['smtpgw_inbound_rejects_total{stage="rcpt",class="5xx"}'])
    assert.are.equal(5, m['smtpgw_inbound_tls_sessions_total{level="may"}'])
    assert.are.equal(2, m['smtpgw_queue_messages{queue="deferred"}'])
    assert.are.equal(2, m['smtpgw_queue_domain_messages{domain="busy.example"}'])
    assert.truthy(body:find("# TYPE smtpgw_recipients_total counter\n", 1, true), body)

    local dir = gateway.mktempdir()
    gateway.write_file(dir .. "/metrics.txt", body)
    local out, code = gateway.run("promtool check metrics < " .. q(dir .. "/metrics.txt"))
    gateway.rm_rf(dir)
    assert.are.equal(0, code, "promtool check metrics:\n" .. out)
    assert.are.equal("", out)
  end)

  it("the endpoint answers GET /metrics only: 404, 405, 400", function()
    local gw = gateway.start{ sections = { metrics = { listen = "127.0.0.1:0" } } }
    local port = metrics_port(gw)
    assert.truthy(http(port, "GET / HTTP/1.1\r\n\r\n"):find("^HTTP/1%.0 404 Not Found\r\n"))
    local r405 = http(port, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
    assert.truthy(r405:find("^HTTP/1%.0 405 Method Not Allowed\r\n"), r405)
    assert.truthy(r405:find("\r\nAllow: GET\r\n", 1, true), r405)
    assert.truthy(http(port, "HELO there\r\n\r\n"):find("^HTTP/1%.0 400 Bad Request\r\n"))
    assert.truthy(http(port, "GET /metrics HTTP/1.0\n\n"):find("^HTTP/1%.0 200 OK\r\n"))
    -- run as the gateway's children are: not root
    local kids = gw:wait_children(4)
    assert.truthy(kids.metrics, "no metrics child: " .. gw:log())
    assert.are.equal(kids.qmgr.uid, kids.metrics.uid)
  end)

  it("counters survive a worker killed -9 and restarted", function()
    local gw = known_run()
    local before = stats_json(gw).counters
    local kids = gw:wait_children(3)
    local victim = kids.worker1
    assert(gateway.run("kill -KILL " .. victim.pid))
    gw:wait_log("event=child_exit role=worker[^\n]* signal=9")
    -- its successor takes the freed slot (the same name): up to 1 s later
    assert.truthy(gateway.wait_for(function()
      local w = gw:children().worker1
      return w and w.pid ~= victim.pid
    end, 10), "worker1 not restarted: " .. gw:log())
    local after = stats_json(gw).counters
    assert.are.equal(before.received, after.received)
    assert.are.equal(before.connections, after.connections)
    assert.are.equal(1, after.child_deaths.worker)
    -- and the restarted worker adds to them: every message counts
    for i = 6, 7 do ds.submit(gw, "s@origin.example", { "r" .. i .. "@ok.example" }) end
    assert.are.equal(before.received + 2, stats_json(gw).counters.received)
  end)

  -- A spool made by hand, its gateway stopped (nobody delivers meanwhile):
  -- the scan's counts, per domain (case folded; a message owing two
  -- domains counts in each), by age column, the top 20 then (other).
  it("the queue's shape: top domains, (other), ages, hold, corrupt, unreadable", function()
    local gw = gateway.start{ sections = { dns = { resolver = ds.DEAD_RESOLVER } } }
    assert.is_true(gw:kill("TERM"))
    local spool, n, now = gw:spool(), 0, os.time()
    local function message(dir, age, rcpts, state)
      n = n + 1
      local id = string.format("00000000000b%04x", n)
      local lines = { "smtpgw-queue-file: 1", "id: " .. id, "arrival: " .. (now - age),
        "client: 127.0.0.1", "helo: client.example", "sender: <s@origin.example>" }
      for _, r in ipairs(rcpts) do lines[#lines + 1] = "rcpt: <" .. r .. ">" end
      lines[#lines + 1] = "body: unspecified\nsmtputf8: 0\n"
      gateway.write_file(spool .. "/" .. dir .. "/" .. id,
        table.concat(lines, "\n") .. "\nSubject: x\r\n\r\nbody\r\n")
      if state then gateway.write_file(spool .. "/state/" .. id, state) end
      return id
    end
    message("queue", 60, { "a@big.example", "b@big.example" }, "1 sent t=" .. now .. " 250 ok\n")
    message("queue", 7 * 60, { "c@big.example", "d@MID.example" })
    message("queue", 2 * 86400, { "e@big.example" },
      "0 deferred t=" .. now .. " 4.4.1 refused\n")
    message("queue", 60, { "f@mid.example" })
    for i = 1, 22 do message("queue", 60, { string.format("x@s%02d.example", i) }) end
    message("hold", 60, { "h@big.example" })
    assert(gateway.run("mkdir -p " .. q(spool .. "/corrupt")))
    gateway.write_file(spool .. "/corrupt/00000000000c0001", "garbage\n")
    gateway.write_file(spool .. "/queue/00000000000c0002", "garbage\n")
    gateway.write_file(spool .. "/queue/not-a-queue-file", "garbage\n")

    local s = stats_json(gw).queue
    assert.are.same({ 25, 1, 1, 1, 2 }, { s.active, s.deferred, s.hold, s.corrupt, s.unreadable })
    assert.are.equal(27, s.recipients)
    assert.are.equal(now - 2 * 86400, s.oldest_arrival)
    assert.are.same({ 5, 10, 20, 40, 80, 160, 320, 640, 1280 }, s.age_minutes)
    assert.are.equal(20, #s.domains)
    assert.are.same({ domain = "big.example", messages = 3, recipients = 3,
      age = { 1, 1, 0, 0, 0, 0, 0, 0, 0, 1 } }, s.domains[1])
    assert.are.same({ domain = "mid.example", messages = 2, recipients = 2,
      age = { 1, 1, 0, 0, 0, 0, 0, 0, 0, 0 } }, s.domains[2])
    assert.are.equal("s01.example", s.domains[3].domain)
    assert.are.equal("s18.example", s.domains[20].domain)
    assert.are.same({ domain = "(other)", messages = 4, recipients = 4,
      age = { 4, 0, 0, 0, 0, 0, 0, 0, 0, 0 } }, s.other)

    local out, code = stats_cmd(gw)
    assert.are.equal(0, code, out)
    assert.truthy(out:find("not running", 1, true), out)
    assert.truthy(out:find("active 25, deferred 1, hold 1, corrupt 1; 27 recipient(s)", 1, true), out)
    assert.truthy(out:find("%s+T%s+5%s+10%s+20%s+40%s+80%s+160%s+320%s+640%s+1280%s+1280%+\n"), out)
    assert.truthy(out:find("\n%s+TOTAL%s+26%s+24%s+1%s+0%s+0%s+0%s+0%s+0%s+0%s+0%s+1\n"), out)
    assert.truthy(out:find("\n%s+big%.example%s+3%s+1%s+1%s"), out)
    assert.truthy(out:find("\n%s+%(other%)%s+4%s+4%s"), out)
  end)

  it("stats on a spool where no gateway ran says so", function()
    local dir = gateway.mktempdir()
    gateway.write_file(dir .. "/gateway.ini", gateway.ini_text())
    local out, code = stats_cmd({ ini = dir .. "/gateway.ini" })
    gateway.rm_rf(dir)
    assert.are.equal(1, code, out)
    assert.truthy(out:find("no gateway has run on this spool", 1, true), out)
  end)
end)
