-- Outbound delivery outcomes (README "Delivery"): a 4xx is retried and
-- delivered later, a 5xx bounces with an RFC 3464 DSN to the sender, kill -9
-- in the middle of delivery loses no recipient, and the `queue` command
-- lists and deletes a deferred message. Static next_hop routes only; the
-- resolver is a dead loopback port.

local gateway = require "harness"
local ds = require "delivery_support"
local h = require "helpers"

local function sections(extra)
  local s = {
    policy = { script = ds.policy("try.lua") },
    delivery = { retry_min = "1s", retry_max = "2s" },
    dns = { resolver = ds.DEAD_RESOLVER },
  }
  for k, v in pairs(extra or {}) do s[k] = v end
  return s
end

-- The MIME parts of a multipart message: list of { headers =, body = }
-- (headers: the header section's text).
local function mime_parts(text)
  local ctype = gateway.header(text, "Content-Type") or ""
  local boundary = ctype:match('boundary="([^"]+)"') or ctype:match("boundary=([^;%s]+)")
  assert(boundary, "no boundary in Content-Type: " .. ctype)
  local parts = {}
  local delim = "\r\n--" .. boundary
  local pos = text:find(delim, 1, true)
  assert(pos, "no first boundary --" .. boundary)
  while true do
    local after = pos + #delim
    if text:sub(after, after + 1) == "--" then break end -- the close delimiter
    local start = text:find("\r\n", after, true)
    assert(start, "boundary line without CRLF")
    start = start + 2
    local nxt = text:find(delim, start, true)
    assert(nxt, "part without a following boundary")
    local part = text:sub(start, nxt - 1)
    local hs, he = part:find("\r\n\r\n", 1, true)
    local headers, body
    if part:sub(1, 2) == "\r\n" then
      headers, body = "", part:sub(3)
    elseif hs then
      headers, body = part:sub(1, hs - 1), part:sub(he + 1)
    else
      headers, body = part, ""
    end
    parts[#parts + 1] = { headers = headers, body = body }
    pos = nxt
  end
  return parts
end

describe("outbound delivery: outcomes and the queue", function()
  after_each(ds.cleanup)

  it("4xx: deferred, retried, and delivered once the receiver accepts", function()
    local busy = ds.receiver{ rcpt_reply = "450 4.2.0 busy" }
    local port = busy.port
    local gw = gateway.start{ sections = sections{
      ["domain:later.example"] = { next_hop = busy:addr() },
    } }
    local qid = ds.submit(gw, "sender@origin.example", { "liam@later.example" })

    local d = ds.wait_delivery(gw, "liam@later.example", "deferred")
    assert.truthy(d:find("qid=" .. qid, 1, true), d)
    assert.truthy(d:find("450 4.2.0 busy", 1, true), d)
    assert.truthy(d:find(" attempt=1", 1, true), d)
    assert.are.same({}, busy:messages())
    assert.truthy(gateway.exists(gw:spool() .. "/queue/" .. qid))

    -- the same address now accepts (a new receiver on the same port)
    busy:stop()
    local ok = ds.receiver{ port = port }
    assert.are.equal(port, ok.port)
    ds.flush(gw)
    local sent = ds.wait_delivery(gw, "liam@later.example", "sent", 1, 20)
    assert.truthy(sent:find("qid=" .. qid, 1, true), sent)
    local n = tonumber(ds.field(sent, "attempt"))
    assert.truthy(n and n >= 2, sent)
    local msgs = ok:wait_messages(1)
    assert.are.equal(1, #msgs)
    assert.are.same({ "liam@later.example" }, msgs[1].rcpts)
    ds.wait_queue_empty(gw, { qid })
    -- queue/ID goes first, state/ID right after it (a crash in between
    -- leaves an orphan state file, which recovery removes)
    assert.truthy(gateway.wait_for(function()
      return not gateway.exists(gw:spool() .. "/state/" .. qid)
    end, 10), "state/" .. qid .. " left behind")

    -- in the log: deferred before sent
    local log = gw:log()
    local pd = log:find(" to=<liam@later.example>[^\n]*status=deferred")
    local ps = log:find(" to=<liam@later.example>[^\n]*status=sent")
    assert.truthy(pd and ps and pd < ps, log)
    ds.assert_one_line_per_attempt(gw)
  end)

  it("5xx: bounces with a DSN to the sender and removes the message", function()
    local reject = ds.receiver{ rcpt_reply = "550 5.1.1 no such user" }
    local home = ds.receiver() -- the sender's domain
    local gw = gateway.start{ sections = sections{
      ["domain:gone.example"] = { next_hop = reject:addr() },
      ["domain:origin.example"] = { next_hop = home:addr() },
    } }
    local qid = ds.submit(gw, "sender@origin.example", { "mike@gone.example" },
      { subject = "will bounce" })

    local b = ds.wait_delivery(gw, "mike@gone.example", "bounced")
    assert.truthy(b:find("qid=" .. qid, 1, true), b)
    assert.truthy(b:find("550 5.1.1 no such user", 1, true), b)
    assert.are.same({}, reject:messages())

    -- the DSN arrives at the sender's domain, from the null sender
    local dsn = home:wait_messages(1, 20)[1]
    assert.are.equal("", dsn.from)
    assert.are.same({ "sender@origin.example" }, dsn.rcpts)
    local text = dsn.text
    local hs = assert(text:find("\r\n\r\n", 1, true), "DSN without a header section")
    local header = text:sub(1, hs + 1)
    local from = gateway.header(header, "From") or ""
    assert.truthy(from:find("MAILER-DAEMON", 1, true), "From: " .. from)
    assert.truthy((gateway.header(header, "To") or ""):find("sender@origin.example", 1, true))
    local ctype = gateway.header(header, "Content-Type") or ""
    assert.truthy(ctype:lower():find("multipart/report", 1, true), ctype)
    assert.truthy(ctype:lower():find("report%-type=\"?delivery%-status"), ctype)

    local status
    for _, part in ipairs(mime_parts(text)) do
      local pt = (gateway.header(part.headers .. "\r\n", "Content-Type") or ""):lower()
      if pt:find("message/delivery-status", 1, true) then status = part.body end
    end
    assert.truthy(status, "no message/delivery-status part:\n" .. text)
    assert.truthy(status:find("Final%-Recipient: rfc822; ?mike@gone%.example"), status)
    assert.truthy(status:find("Action: failed", 1, true), status)
    assert.truthy(status:find("Status: 5.1.1", 1, true), status)
    assert.truthy(status:find("550 5.1.1 no such user", 1, true), status)
    assert.truthy(text:find("Subject: will bounce", 1, true), "original headers not returned")

    -- the original is gone from the queue; the DSN was delivered too
    ds.wait_queue_empty(gw)
    assert.falsy(gateway.exists(gw:spool() .. "/state/" .. qid))
    local dl = ds.wait_delivery(gw, "sender@origin.example", "sent")
    assert.falsy(dl:find("qid=" .. qid, 1, true), "the DSN has its own queue id: " .. dl)
    -- a bounce is never bounced, nor sent twice
    assert.are.equal(1, #home:messages())

    -- a message from the null sender bounces without a DSN
    local q0 = ds.submit(gw, "", { "nora@gone.example" })
    ds.wait_delivery(gw, "nora@gone.example", "bounced")
    ds.wait_queue_empty(gw)
    assert.are.equal(1, #home:messages())
    assert.are.equal(1, #ds.delivery_lines(gw, "sender@origin.example"))
    assert.falsy(gateway.exists(gw:spool() .. "/state/" .. q0))
    ds.assert_one_line_per_attempt(gw)
  end)

  it("a bounce recorded before a crash but whose DSN never reached the spool is sent after restart", function()
    local home = ds.receiver() -- the sender's domain
    local gw = gateway.start{ sections = sections{
      ["domain:origin.example"] = { next_hop = home:addr() },
    } }
    assert.is_true(gw:kill("KILL"))
    -- the spool as a crash leaves it: "bounced" written, the DSN not yet
    -- synced (no "notified"); and one whose DSN was already queued
    local function queue_file(qid, subject)
      gateway.write_file(gw:spool() .. "/queue/" .. qid, table.concat({
        "smtpgw-queue-file: 1", "id: " .. qid, "arrival: " .. os.time(),
        "client: 127.0.0.1", "helo: client.example",
        "sender: <sender@origin.example>", "rcpt: <mike@gone.example>",
        "body: unspecified", "smtputf8: 0", "" }, "\n") .. "\n" ..
        "Subject: " .. subject .. "\r\n\r\nbody\r\n")
    end
    local owed, settled = "00000000000a0001", "00000000000a0002"
    queue_file(owed, "owed a bounce")
    gateway.write_file(gw:spool() .. "/state/" .. owed,
      "0 bounced 550 5.1.1 no such user\n")
    queue_file(settled, "bounce already sent")
    gateway.write_file(gw:spool() .. "/state/" .. settled,
      "0 bounced 550 5.1.1 no such user\n0 notified DSN queued as 00000000000a0003\n")

    gw:restart()
    local dsn = home:wait_messages(1, 20)[1]
    assert.are.equal("", dsn.from)
    assert.are.same({ "sender@origin.example" }, dsn.rcpts)
    assert.truthy(dsn.text:find("Final%-Recipient: rfc822; ?mike@gone%.example"), dsn.text)
    assert.truthy(dsn.text:find("Status: 5.1.1", 1, true), dsn.text)
    assert.truthy(dsn.text:find("Subject: owed a bounce", 1, true), dsn.text)
    ds.wait_queue_empty(gw, { owed, settled })
    -- exactly one DSN: the settled message was not bounced a second time
    ds.wait_queue_empty(gw, nil, 20)
    assert.are.equal(1, #home:messages())
  end)

  it("a queue file that cannot be read as one is moved to corrupt/, not retried forever", function()
    local gw = gateway.start{ sections = sections{} }
    assert.is_true(gw:kill("KILL"))
    local qid = "00000000000b0001"
    gateway.write_file(gw:spool() .. "/queue/" .. qid,
      "smtpgw-queue-file: 1\nid: " .. qid .. "\nthis line is not a header\n\nbody\r\n")
    gw:restart()
    gw:wait_log("event=spool_corrupt")
    assert.truthy(gateway.exists(gw:spool() .. "/corrupt/" .. qid))
    assert.falsy(gateway.exists(gw:spool() .. "/queue/" .. qid))
    local out, code = ds.queue_cmd(gw)
    assert.are.equal(0, code, out)
    assert.truthy(out:find("0 messages queued", 1, true), out)
  end)

  it("a message that has looped (over 50 Received: headers) bounces with 5.4.6 and is not relayed", function()
    local next_hop = ds.receiver()
    local home = ds.receiver() -- the sender's domain
    local gw = gateway.start{ sections = sections{
      ["domain:far.example"] = { next_hop = next_hop:addr() },
      ["domain:origin.example"] = { next_hop = home:addr() },
    } }
    local received = {}
    for i = 1, 51 do
      received[i] = "Received: from hop" .. i .. ".example by hop" .. (i + 1) .. ".example"
    end
    local qid = ds.submit(gw, "sender@origin.example", { "nina@far.example" },
      { subject = "looping", extra_headers = received })
    gw:wait_log("event=loop[^\n]*nina@far%.example")
    local line = gw:log():match("[^\n]*event=loop[^\n]*nina@far%.example[^\n]*")
    assert.truthy(line:find("5.4.6 too many hops (52 Received: headers)", 1, true), line)
    local dsn = home:wait_messages(1, 20)[1]
    assert.truthy(dsn.text:find("Status: 5.4.6", 1, true), dsn.text)
    ds.wait_queue_empty(gw, { qid })
    assert.are.same({}, next_hop:messages())
  end)

  it("a message with 50 Received: headers is still relayed", function()
    local next_hop = ds.receiver()
    local gw = gateway.start{ sections = sections{
      ["domain:far.example"] = { next_hop = next_hop:addr() },
    } }
    local received = {}
    -- 49 here, and the gateway's own makes 50
    for i = 1, 49 do received[i] = "Received: from hop" .. i .. ".example" end
    ds.submit(gw, "sender@origin.example", { "olga@far.example" },
      { subject = "long path", extra_headers = received })
    ds.wait_delivery(gw, "olga@far.example", "sent")
    assert.are.equal(1, #next_hop:wait_messages(1, 20))
  end)

  it("a recipient held back by a concurrency limit is tried at once, not backed off with the others", function()
    local live = ds.receiver()
    local dead = ds.receiver()
    local dead_addr = dead:addr()
    dead:stop() -- nothing answers there any more
    local gw = gateway.start{ sections = sections{
      delivery = { max_connections = 1, retry_min = "1h", retry_max = "1h" },
      ["domain:dead.example"] = { next_hop = dead_addr },
      ["domain:live.example"] = { next_hop = live:addr() },
    } }
    -- one transaction at a time: dead.example (first) is deferred for an
    -- hour; live.example must not wait that hour with it
    ds.submit(gw, "sender@origin.example", { "pat@dead.example", "quinn@live.example" },
      { subject = "held back" })
    ds.wait_delivery(gw, "pat@dead.example", "deferred")
    ds.wait_delivery(gw, "quinn@live.example", "sent", 1, 20)
    assert.are.same({ "quinn@live.example" }, live:wait_messages(1, 20)[1].rcpts)
  end)

  it("kill -9 during delivery, then restart: every recipient arrives", function()
    -- a slow receiver: it stores each message and waits before its 250
    local slow = ds.receiver{ data_delay = 0.3 }
    local gw = gateway.start{ sections = sections{
      delivery = { retry_min = "1s", retry_max = "2s", max_per_destination = 2 },
      ["domain:bulk.example"] = { next_hop = slow:addr() },
    } }
    local want = {}
    local N = 16
    local c = h.session(gw)
    for i = 1, N do
      local rcpts = { "u" .. i .. "a@bulk.example", "u" .. i .. "b@bulk.example" }
      for _, r in ipairs(rcpts) do want[#want + 1] = r end
      h.deliver(c, "sender@origin.example", rcpts,
        "Subject: bulk " .. i .. "\r\n\r\nmessage " .. i .. "\r\n")
    end
    c:close()

    -- some delivered, most not yet: kill -9
    slow:wait_messages(3, 20)
    assert.is_true(gw:kill("KILL"))
    local before = #slow:messages()
    assert.truthy(before < N, "all " .. N .. " messages went out before the kill")
    assert.truthy(#gw:spool_files("queue") > 0, "nothing left in the queue at the kill")

    gw:restart()
    local ok, missing = slow:wait_rcpts(want, 20)
    assert(ok, "lost after kill -9 and restart: " .. table.concat(missing or {}, " ") ..
      "\nlog:\n" .. gw:log())
    ds.wait_queue_empty(gw, nil, 20)

    local out, code = ds.queue_cmd(gw)
    assert.are.equal(0, code, out)
    assert.truthy(out:find("^0 messages queued\n?$") or out:find("\n0 messages queued"), out)
    -- duplicates are allowed (a transaction cut off by the kill after the
    -- receiver stored it), but at worst one per recipient
    local _, count = slow:rcpts()
    for r, n in pairs(count) do
      assert.truthy(n <= 2, r .. " arrived " .. n .. " times")
    end
  end)

  it("queue lists a deferred message with its recipients and last error; queue delete removes it", function()
    local busy = ds.receiver{ rcpt_reply = "451 4.3.0 try again later" }
    local gw = gateway.start{ sections = sections{
      delivery = { retry_min = "1h", retry_max = "2h" },
      ["domain:slow.example"] = { next_hop = busy:addr() },
    } }
    local qid = ds.submit(gw, "nina@origin.example", { "oscar@slow.example", "paul@slow.example" })
    ds.wait_delivery(gw, "oscar@slow.example", "deferred")
    ds.wait_delivery(gw, "paul@slow.example", "deferred")

    local out, code = ds.queue_cmd(gw)
    assert.are.equal(0, code, out)
    assert.truthy(out:find(qid, 1, true), out)
    assert.truthy(out:find("<nina@origin.example>", 1, true), out)
    assert.truthy(out:find("1 message queued", 1, true), out)
    for _, r in ipairs({ "oscar@slow.example", "paul@slow.example" }) do
      local line = out:match("[^\n]*<" .. r:gsub("%p", "%%%0") .. ">[^\n]*")
      assert.truthy(line, "recipient " .. r .. " not listed:\n" .. out)
      assert.truthy(line:find("451 4.3.0 try again later", 1, true),
        "no last error for " .. r .. ": " .. line)
      assert.falsy(line:find("sent", 1, true), line)
    end

    local dout, dcode = ds.queue_cmd(gw, "delete", qid)
    assert.are.equal(0, dcode, dout)
    assert.falsy(gateway.exists(gw:spool() .. "/queue/" .. qid))
    local out2 = ds.queue_cmd(gw)
    assert.falsy(out2:find(qid, 1, true), out2)
    assert.truthy(out2:find("0 messages queued", 1, true), out2)
    -- deleting it again: no such message
    local _, code3 = ds.queue_cmd(gw, "delete", qid)
    assert.are.equal(1, code3)

    -- the running gateway drops it at its next attempt: nothing is sent,
    -- and it is not attempted again and again
    local qid_lines = #gw:log_lines("qid=" .. qid)
    busy:stop()
    local ok = ds.receiver{ port = busy.port }
    ds.flush(gw)
    -- a later message is delivered, the deleted one is not
    local q2 = ds.submit(gw, "nina@origin.example", { "quinn@slow.example" })
    ds.wait_delivery(gw, "quinn@slow.example", "sent")
    ds.wait_queue_empty(gw, { q2 })
    local _, count = ok:rcpts()
    assert.is_nil(count["oscar@slow.example"])
    assert.is_nil(count["paul@slow.example"])
    for _, line in ipairs(ds.delivery_lines(gw, nil, "sent")) do
      assert.falsy(line:find("qid=" .. qid, 1, true), line)
    end
    ds.flush(gw)
    local q3 = ds.submit(gw, "nina@origin.example", { "rita@slow.example" })
    ds.wait_delivery(gw, "rita@slow.example", "sent")
    ds.wait_queue_empty(gw, { q3 })
    local after = ds.delivery_lines(gw)
    local again = {}
    for _, line in ipairs(after) do
      if line:find("qid=" .. qid, 1, true) then again[#again + 1] = line end
    end
    assert.truthy(#again <= qid_lines, "the deleted message is still being attempted:\n" ..
      table.concat(again, "\n"))
    assert.falsy(gateway.exists(gw:spool() .. "/queue/" .. qid))
    assert.falsy(gateway.exists(gw:spool() .. "/state/" .. qid), "state/" .. qid .. " came back")
    assert.truthy(gw:alive())
    ds.assert_one_line_per_attempt(gw)
  end)
end)
