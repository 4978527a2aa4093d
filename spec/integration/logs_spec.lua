-- Logs (README "Logs"): a run of mixed fates read back from the log. The
-- same mail goes through two gateways at once, one writing Postfix's lines
-- ([log] format = postfix), read by Debian's pflogsumm, the other smtpgw's
-- key=value lines, read field by field by the parser below. Fates: sent
-- (STARTTLS), deferred then sent, bounced (5xx at the receiver), expired
-- (max_queue_lifetime), rejected (relay access denied, a recipient without
-- a domain) and sent after a TLS downgrade (may, handshake failing). Also:
-- [log] destination = syslog, and a fatal start-up error as a log line.

local gateway = require "harness"
local tls = require "tls_support"
local ds = require "delivery_support"
local h = require "helpers"
local procs = require "procs"
local tools = require "tools"

local R = h.R
local q = gateway.shell_quote

-- How many of each fate, per gateway.
local N = { ok = 40, busy = 10, reject = 10, dead = 5, broken = 10,
            relay = 15, fqdn = 10 }
local RECEIVED = N.ok + N.busy + N.reject + N.dead + N.broken
local DSNS = N.reject + N.dead
local DOMAINS = "ok.example, busy.example, reject.example, dead.example, " ..
  "broken.example, origin.example"

local function options(format, r)
  return {
    ini_extra = { relay_domains = DOMAINS, relay_networks = "10.0.0.0/8" },
    sections = {
      log = format and { format = format } or nil,
      policy = { script = ds.policy("try.lua") },
      delivery = { retry_min = "1s", retry_max = "1s",
                   max_queue_lifetime = "6s" },
      dns = { resolver = ds.DEAD_RESOLVER },
      ["domain:ok.example"] = { next_hop = r.ok:addr() },
      ["domain:origin.example"] = { next_hop = r.ok:addr() },
      ["domain:busy.example"] = { next_hop = r.busy:addr() },
      ["domain:reject.example"] = { next_hop = r.reject:addr() },
      ["domain:dead.example"] = { next_hop = "127.0.0.1:9" },
      ["domain:broken.example"] = { next_hop = r.broken:addr() },
    },
  }
end

-- Every fate's mail, through sessions of at most 5 refusals each (under
-- max_errors).
local function submit(gw)
  local c = h.session(gw, { helo_name = "client.example" })
  for _, d in ipairs({ "ok", "busy", "reject", "dead", "broken" }) do
    for i = 1, N[d] do
      h.deliver(c, "s" .. i .. "@origin.example", { d .. i .. "@" .. d .. ".example" },
        h.message(d .. " " .. i))
    end
  end
  c:cmd("QUIT", R.bye)
  local refusals = {}
  for i = 1, N.relay do
    local to = "r" .. i .. "@elsewhere.example"
    refusals[#refusals + 1] = { to, h.relay_denied(to) }
  end
  for i = 1, N.fqdn do
    local to = "nodomain" .. i
    refusals[#refusals + 1] = { to, h.need_fqdn(to) }
  end
  for i, r in ipairs(refusals) do
    if (i - 1) % 5 == 0 then c = h.session(gw, { helo_name = "client.example" }) end
    c:cmd("MAIL FROM:<x" .. i .. "@origin.example>", R.mail_ok)
    c:cmd("RCPT TO:<" .. r[1] .. ">", r[2])
    c:cmd("RSET", R.ok)
    if i % 5 == 0 then c:cmd("QUIT", R.bye) end
  end
end

-- ---------------------------------------------------------------- key=value

-- One smtpgw line → { stamp=, proc=, level=, event=, f = {key = value} },
-- or nil when it is not one. Values: bare, or "quoted" with \" and \\.
local function parse_kv(line)
  local stamp, rest = line:match("^(%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ)(.*)$")
  if not stamp then return nil end
  local f, order, pos = {}, {}, 1
  while pos <= #rest do
    local key, after = rest:match("^ ([%w_]+)=()", pos)
    if not key then return nil end
    local value
    if rest:sub(after, after) == '"' then
      local buf, i = {}, after + 1
      while true do
        local ch = rest:sub(i, i)
        if ch == "" then return nil end
        if ch == "\\" then buf[#buf + 1] = rest:sub(i + 1, i + 1); i = i + 2
        elseif ch == '"' then i = i + 1; break
        else buf[#buf + 1] = ch; i = i + 1 end
      end
      value, pos = table.concat(buf), i
    else
      local v, nxt = rest:match("^([^ ]*)()", after)
      value, pos = v, nxt
    end
    f[key] = value
    order[#order + 1] = key
  end
  return { stamp = stamp, proc = f.proc, level = f.level, event = f.event,
           f = f, order = order }
end

local function delays_ok(e)
  local a, b, c, d = e.f.delays:match("^([%d.]+)/([%d.]+)/([%d.]+)/([%d.]+)$")
  assert(a, "delays: " .. tostring(e.f.delays))
  local sum = tonumber(a) + tonumber(b) + tonumber(c) + tonumber(d)
  local total = tonumber(e.f.delay)
  assert(total, "delay: " .. tostring(e.f.delay))
  -- two significant digits each: the parts add up to the whole, roughly
  assert(math.abs(sum - total) <= 0.05 + 0.1 * total,
    string.format("delays %s do not add up to delay %s", e.f.delays, e.f.delay))
end

describe("logs", function()
  local dir, r, gw_pf, gw_kv

  lazy_setup(function()
    dir = gateway.mktempdir()
    local pki = tls.make_pki(dir .. "/pki")
    r = {
      ok = ds.receiver{ cert = pki.a },
      busy = ds.receiver{ rcpt_reply = "450 4.2.0 busy" },
      reject = ds.receiver{ rcpt_reply = "550 5.1.1 no such user" },
      broken = ds.receiver{ cert = pki.a, break_tls = true },
    }
    gw_pf = gateway.start(options("postfix", r))
    gw_kv = gateway.start(options(nil, r))
    submit(gw_pf)
    submit(gw_kv)
    -- deferred first; then the same address accepts
    gw_pf:wait_log_count("to=<busy%d+@busy%.example>, relay=[^\n]*status=deferred", N.busy, 15)
    gw_kv:wait_log_count("event=delivery [^\n]*to=<busy%d+@busy%.example>[^\n]*status=deferred",
      N.busy, 15)
    local port = r.busy.port
    r.busy:stop()
    r.busy = ds.receiver{ port = port }
    ds.flush(gw_pf)
    ds.flush(gw_kv)
    -- every message done, the DSNs too (dead.example expires after 6 s)
    for _, gw in ipairs({ gw_pf, gw_kv }) do
      ds.wait_queue_empty(gw, nil, 25)
    end
    gw_pf:wait_log_count("%]: %x+: removed", RECEIVED + DSNS)
    gw_kv:wait_log_count("event=removed ", RECEIVED + DSNS)
  end)

  lazy_teardown(function()
    ds.cleanup()
    gateway.cleanup()
    if dir then gateway.rm_rf(dir) end
  end)

  it("format = postfix: pflogsumm counts what happened", function()
    local out, code = gateway.run("pflogsumm " .. q(gw_pf.logfile) .. " 2>&1")
    assert.are.equal(0, code, out)
    local function count(what)
      return tonumber(out:match("\n%s*(%d+)%s+" .. what .. "\n") or
                      out:match("\n%s*(%d+)%s+" .. what .. "%s"))
    end
    assert.are.equal(RECEIVED, count("received"), out)
    assert.are.equal(RECEIVED - N.reject - N.dead + DSNS, count("delivered"), out)
    assert.are.equal(N.busy + N.dead, count("deferred"), out)
    assert.are.equal(N.reject, count("bounced"), out)
    assert.are.equal(N.relay + N.fqdn, count("rejected"), out)
    assert.truthy(out:find("Relay access denied", 1, true), out)
  end)

  it("format = postfix: Postfix's own lines, with the syslog prefix", function()
    local log = gw_pf:log()
    local host = gateway.HOSTNAME:gsub("%p", "%%%0")
    local prefix = "%a%a%a [ %d]%d %d%d:%d%d:%d%d " .. host .. " postfix/"
    for line in log:gmatch("[^\n]+") do
      assert.truthy(line:find("^" .. prefix .. "[%w-]+%[%d+%]: "), line)
    end
    local function n(p) return #gw_pf:log_lines(p) end
    assert.are.equal(RECEIVED, n("postfix/smtpd%[%d+%]: %x+: client=unknown%[127%.0%.0%.1%]$"))
    -- (queue active) each time a message enters the active set: once, and
    -- again for a deferred one each time it is retried (as Postfix's)
    local active = {}
    for _, line in ipairs(gw_pf:log_lines(
        "postfix/qmgr%[%d+%]: %x+: from=<[^>]*>, size=%d+, nrcpt=1 %(queue active%)$")) do
      active[line:match("postfix/qmgr%[%d+%]: (%x+): ")] = true
    end
    local n_active = 0
    for _ in pairs(active) do n_active = n_active + 1 end
    assert.are.equal(RECEIVED + DSNS, n_active)
    assert.are.equal(N.dead, n("postfix/qmgr%[%d+%]: %x+: from=<s%d+@origin%.example>, " ..
      "status=expired, returned to sender$"))
    assert.are.equal(DSNS, n("postfix/bounce%[%d+%]: %x+: sender non%-delivery notification: %x+$"))
    -- smtpd's client= before qmgr's (queue active): pflogsumm's sizes and
    -- senders need that order across processes
    local seen_client = {}
    for line in log:gmatch("[^\n]+") do
      local qid = line:match("postfix/smtpd%[%d+%]: (%x+): client=")
      if qid then seen_client[qid] = true end
      qid = line:match("postfix/qmgr%[%d+%]: (%x+): from=<([^>]*)>")
      local from = line:match("from=<([^>]*)>, size=")
      if qid and from ~= "" and line:find("(queue active)", 1, true) then
        assert.truthy(seen_client[qid], "(queue active) before client= for " .. qid)
      end
    end
    -- the shape fail2ban's postfix filter reads
    local rej = gw_pf:log_lines("NOQUEUE: reject: RCPT from ")
    assert.are.equal(N.relay + N.fqdn, #rej)
    assert.truthy(rej[1]:find("postfix/smtpd%[%d+%]: NOQUEUE: reject: RCPT from " ..
      "unknown%[127%.0%.0%.1%]: 554 5%.7%.1 <r1@elsewhere%.example>: Relay access denied; " ..
      "from=<x1@origin%.example> to=<r1@elsewhere%.example> proto=ESMTP helo=<client%.example>$"),
      rej[1])
    local sent = gw_pf:log_lines("status=sent")[1]
    assert.truthy(sent:find("postfix/smtp%[%d+%]: %x+: to=<[^>]+>, relay=[^,]+%[127%.0%.0%.1%]:%d+, " ..
      "delay=[%d.]+, delays=[%d.]+/[%d.]+/[%d.]+/[%d.]+, dsn=2%.0%.0, status=sent %(250 "), sent)
  end)

  it("format = smtpgw: every line parses, and the fields tell each fate", function()
    local events, by_qid = {}, {}
    for line in gw_kv:log():gmatch("[^\n]+") do
      local e = parse_kv(line)
      assert(e, "not a key=value line: " .. line)
      assert.truthy(e.proc and e.level and e.event, line)
      assert.are.same({ "proc", "level", "event" }, { e.order[1], e.order[2], e.order[3] })
      -- a queue id is a field of its own, never inside msg=
      assert.falsy((e.f.msg or ""):find("%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x"), line)
      events[e.event] = events[e.event] or {}
      table.insert(events[e.event], e)
      if e.f.qid then
        by_qid[e.f.qid] = by_qid[e.f.qid] or {}
        table.insert(by_qid[e.f.qid], e)
      end
    end
    local function count(event, pred)
      local n = 0
      for _, e in ipairs(events[event] or {}) do
        if not pred or pred(e) then n = n + 1 end
      end
      return n
    end

    -- received: the worker's queued line, with the client's facts
    assert.are.equal(RECEIVED, count("queued", function(e)
      return e.f.helo == "client.example" and e.f.proto == "ESMTP" and
        e.f.from:match("^<s%d+@origin%.example>$") and e.f.nrcpt == "1" and
        tonumber(e.f.size) > 0 and e.f.client == "127.0.0.1"
    end))
    -- every message (and DSN) taken in by the queue manager (again at
    -- each retry of a deferred one) and removed once
    local active = {}
    for _, e in ipairs(events.active or {}) do active[e.f.qid] = true end
    local n_active = 0
    for _ in pairs(active) do n_active = n_active + 1 end
    assert.are.equal(RECEIVED + DSNS, n_active)
    assert.truthy(count("active") >= RECEIVED + DSNS)
    assert.are.equal(RECEIVED + DSNS, count("removed"))

    -- deliveries: the Postfix fields on every line
    for _, e in ipairs(events.delivery) do
      for _, k in ipairs({ "qid", "from", "to", "relay", "delay", "delays", "dsn",
                           "size", "status", "reply" }) do
        assert.truthy(e.f[k], k .. " missing: " .. table.concat(e.order, " "))
      end
      delays_ok(e)
      assert.truthy(e.f.dsn:match("^[245]%.%d+%.%d+$"), e.f.dsn)
    end
    local function fate(status, domain)
      return count("delivery", function(e)
        return e.f.status == status and (not domain or e.f.to:find("@" .. domain .. ">", 1, true))
      end)
    end
    assert.are.equal(N.ok, fate("sent", "ok.example"))
    assert.are.equal(N.busy, fate("sent", "busy.example"))
    assert.are.equal(N.broken, fate("sent", "broken.example"))
    assert.are.equal(DSNS, fate("sent", "origin.example"))
    assert.are.equal(N.reject, count("delivery", function(e)
      return e.f.status == "bounced" and e.f.dsn == "5.1.1" and
        e.f.relay:find(":" .. r.reject.port, 1, true)
    end))
    assert.are.equal(N.dead, count("delivery", function(e)
      return e.f.status == "expired" and e.f.dsn == "4.4.7" and e.f.relay == "none"
    end))
    assert.are.equal(N.dead, count("expired"))
    -- deferred: every busy and every dead message at least once
    local deferred = {}
    for _, e in ipairs(events.delivery) do
      if e.f.status == "deferred" then deferred[e.f.qid] = true end
    end
    local nd = 0
    for _ in pairs(deferred) do nd = nd + 1 end
    assert.are.equal(N.busy + N.dead, nd)
    -- sent with STARTTLS, and in plaintext after the downgrade
    assert.are.equal(N.ok, fate("sent", "ok.example") and count("delivery", function(e)
      return e.f.status == "sent" and e.f.to:find("@ok.example>", 1, true) and
        e.f.tls:match("^may:TLSv1%.[23]$")
    end))
    assert.are.equal(N.broken, count("tls_downgrade", function(e) return by_qid[e.f.qid] end))

    -- bounces: the original's qid and the DSN's, which was sent to the sender
    assert.are.equal(DSNS, count("bounce"))
    for _, b in ipairs(events.bounce) do
      local orig = by_qid[b.f.qid]
      local dsn = by_qid[b.f.dsn_qid]
      assert.truthy(orig and dsn, "unknown qid in " .. table.concat(b.order, " "))
      local sent
      for _, e in ipairs(dsn) do
        if e.event == "delivery" and e.f.status == "sent" then sent = e end
      end
      assert.truthy(sent, "DSN " .. b.f.dsn_qid .. " not sent")
      assert.are.equal(b.f.to, sent.f.to)
      assert.are.equal("<>", sent.f.from)
    end

    -- rejects: an access decision, with the client's helo, from and to
    assert.are.equal(N.relay + N.fqdn, count("reject", function(e)
      return e.f.kind == "access" and e.f.stage == "RCPT" and e.f.helo == "client.example" and
        e.f.proto == "ESMTP" and e.f.from:match("^<x%d+@origin%.example>$") and
        (e.f.to:match("^<r%d+@elsewhere%.example>$") or e.f.to:match("^<nodomain%d+>$")) and
        e.f.client == "127.0.0.1"
    end))
  end)
end)

describe("logs: destination", function()
  after_each(function()
    ds.cleanup()
    gateway.cleanup()
  end)

  it("syslog: RFC 3164 datagrams on the socket, facility mail, nothing on stderr", function()
    local dir = gateway.mktempdir()
    local sock, file = dir .. "/log.sock", dir .. "/syslog.txt"
    local sink = procs.start({ tools.PYTHON, tools.SUPPORT .. "/syslog_sink.py", sock, file },
      { ready = "listening (%d+)", dir = dir })
    local ok, err = pcall(function()
      local gw = gateway.start{
        sections = { log = { format = "postfix", destination = "syslog",
                             syslog_socket = sock },
                     ["domain:example.test"] = { next_hop = "127.0.0.1:9" } },
        log_reader = function() return gateway.read_file(file) or "" end,
      }
      local c = h.session(gw)
      h.deliver(c, "me@example.org", { "you@example.test" }, h.message("via syslog"))
      c:cmd("QUIT", R.bye)
      local line = gw:wait_log("(<22>%a%a%a [ %d]%d %d%d:%d%d:%d%d postfix/smtpd%[%d+%]: " ..
        "connect from unknown%[127%.0%.0%.1%])")
      assert.truthy(line)
      gw:wait_log("<22>[^\n]* postfix/smtpd%[%d+%]: %x+: client=unknown%[127%.0%.0%.1%]\n")
      -- a warning's severity (the dead resolver defers the delivery)
      gw:wait_log("<20>[^\n]* postfix/smtp%[%d+%]: %x+: to=<you@example%.test>[^\n]*status=deferred")
      gw:stop()
      assert.are.equal("", gateway.read_file(gw.logfile) or "")
    end)
    sink:stop()
    gateway.rm_rf(dir)
    if not ok then error(err, 0) end
  end)

  it("a fatal start-up error is a level=fatal line naming FILE:LINE", function()
    local dir = gateway.mktempdir()
    local ini = dir .. "/gateway.ini"
    gateway.write_file(ini, gateway.ini_text() .. "\n[log]\nformat = loud\n")
    local out, code = gateway.run(q(gateway.bin()) .. " -c " .. q(ini) .. " 2>&1")
    assert.are.equal(1, code, out)
    assert.truthy(out:find("^%d%d%d%d%-[^\n]* proc=master level=fatal event=start msg=\"" ..
      ini:gsub("%p", "%%%0") .. ":%d+: format: 'loud' is not a log format"), out)
    gateway.rm_rf(dir)
  end)
end)
