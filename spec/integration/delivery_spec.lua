-- Accepting mail end to end: smtplib, swaks and raw sockets; the queue file
-- format (README "Spool") and the queued log line.

local gateway = require "harness"
local client = require "smtp_client"
local tools = require "tools"
local h = require "helpers"

describe("delivery", function()
  local gw

  setup(function()
    gw = gateway.start()
  end)

  teardown(h.cleanup)
  after_each(client.close_all)

  it("smtplib sends a message and gets 250 2.0.0 Ok: queued as ID", function()
    local msg = "From: <me@example.org>\r\nTo: <user@example.test>\r\n" ..
      "Subject: smtplib\r\nMessage-ID: <smtplib-1@example.org>\r\n\r\n" ..
      "Hello from smtplib.\r\nSecond line.\r\n"
    local r = tools.smtplib { port = gw:port(), from = "me@example.org",
      to = { "user@example.test", "other@example.test" }, msg = msg,
      ehlo = "client.example" }
    assert.is_nil(r.error, r.raw)
    assert.are.equal(220, r.by.connect[1].code)
    assert.are.equal(250, r.by.mail[1].code)
    assert.are.equal("2.1.0 Ok", r.by.mail[1].text)
    assert.are.equal(2, #r.by.rcpt)
    assert.are.equal("2.1.5 Ok", r.by.rcpt[1].text)
    assert.are.equal("2.1.5 Ok", r.by.rcpt[2].text)
    assert.are.equal(250, r.by.data[1].code)
    local qid = r.by.data[1].text:match("^2%.0%.0 Ok: queued as (%x+)$")
    assert.is_not_nil(qid, r.by.data[1].text)
    assert.are.equal(16, #qid)
    assert.are.equal(221, r.by.quit[1].code)

    -- the queue file exists under its id, tmp/ is empty
    local data = gw:queue_file(qid)
    assert.is_not_nil(data, "no spool/queue/" .. qid)
    assert.are.same({}, gw:spool_files("tmp"))

    local env, body = gateway.parse_queue_file(data)
    assert.are.equal("smtpgw-queue-file", env._order[1])
    assert.are.equal("1", env["smtpgw-queue-file"])
    assert.are.equal(qid, env.id)
    assert.truthy(tonumber(env.arrival), "arrival: " .. tostring(env.arrival))
    assert.truthy(math.abs(tonumber(env.arrival) - os.time()) < 600)
    assert.are.equal("127.0.0.1", env.client)
    assert.are.equal("client.example", env.helo)
    assert.are.equal("<me@example.org>", env.sender)
    assert.are.same({ "<user@example.test>", "<other@example.test>" }, env.rcpt)
    assert.are.equal("0", env.smtputf8)

    -- the message follows, with a Received: header naming the queue id first
    assert.truthy(body:find("^Received: "), body:sub(1, 200))
    local received = gateway.header(body, "Received")
    assert.truthy(received:find(qid, 1, true), "Received: " .. received)
    assert.truthy(received:find("client.example", 1, true), "Received: " .. received)
    assert.truthy(received:find("127.0.0.1", 1, true), "Received: " .. received)
    assert.truthy(received:find(h.HOST, 1, true), "Received: " .. received)
    assert.truthy(body:find("Message-ID: <smtplib-1@example.org>", 1, true))
    assert.truthy(body:find("Hello from smtplib.\r\nSecond line.\r\n", 1, true), body)
    -- no end-of-data marker stored
    assert.falsy(body:find("\r\n%.\r\n$"))

    -- log
    local line = gw:wait_log("[^\n]*event=queued[^\n]*qid=" .. qid .. "[^\n]*")
    assert.truthy(line:find("from=<me@example.org>", 1, true), line)
    assert.truthy(line:find("nrcpt=2", 1, true), line)
    assert.truthy(line:match(" sid=%d+"), line)
    assert.truthy(line:match("^%d%d%d%d%-%d%d%-%d%dT"), line)
    assert.truthy(line:find("level=info", 1, true), line)
  end)

  it("swaks delivers a message (exit 0)", function()
    local out, code, qid = tools.swaks { port = gw:port(), from = "swaks@example.org",
      to = "user@example.test", extra = { "--header", "Subject: swaks test" } }
    assert.are.equal(0, code, out)
    assert.is_not_nil(qid, out)
    local env, body = gateway.parse_queue_file(gw:queue_file(qid))
    assert.are.equal("<swaks@example.org>", env.sender)
    assert.are.same({ "<user@example.test>" }, env.rcpt)
    assert.are.equal("swaks.example", env.helo)
    assert.truthy(body:find("Subject: swaks test", 1, true), body)
  end)

  it("stores a dot-stuffed line unstuffed", function()
    local c = h.session(gw)
    local qid = h.deliver(c, "me@example.org", { "user@example.test" },
      "Subject: dots\r\n\r\nfirst\r\n..leading dot\r\n...two dots\r\n")
    c:cmd("QUIT", h.R.bye)
    local _, body = gateway.parse_queue_file(gw:queue_file(qid))
    assert.truthy(body:find("\r\nfirst\r\n.leading dot\r\n..two dots\r\n", 1, true), body)
    assert.falsy(body:find("..leading", 1, true), body)
  end)

  it("stores a 300 KiB message byte for byte, sent in odd-sized writes", function()
    -- deterministic pseudo-random printable lines, some starting with "."
    local seed = 12345
    local function rnd(n)
      seed = (seed * 1103515245 + 12345) % 2147483648
      return seed % n
    end
    local lines = { "Subject: big", "X-Test: bytes", "" }
    local size = 0
    while size < 300 * 1024 do
      local len = rnd(990)
      local chars = {}
      for i = 1, len do chars[i] = string.char(32 + rnd(95)) end
      local l = table.concat(chars)
      if rnd(10) == 0 then l = "." .. l end
      lines[#lines + 1] = l
      size = size + #l + 2
    end
    local plain = table.concat(lines, "\r\n") .. "\r\n"
    local stuffed = {}
    for i, l in ipairs(lines) do
      stuffed[i] = l:sub(1, 1) == "." and ("." .. l) or l
    end
    local wire = table.concat(stuffed, "\r\n") .. "\r\n.\r\n"

    local c = h.session(gw)
    h.envelope(c, "me@example.org", { "user@example.test" })
    c:cmd("DATA", h.R.data)
    local i, step = 1, 1
    while i <= #wire do
      step = 1 + rnd(20000)
      assert(c:send(wire:sub(i, i + step - 1)))
      i = i + step
    end
    local qid = c:expect(h.R.queued):match(h.R.queued)
    local _, body = gateway.parse_queue_file(gw:queue_file(qid))
    -- strip the prepended Received: header (first field plus continuations)
    local rest = body:gsub("^Received:[^\n]*\n", "", 1)
    while rest:match("^[ \t]") do rest = rest:gsub("^[^\n]*\n", "", 1) end
    assert.are.equal(#plain, #rest)
    assert.is_true(plain == rest, "stored message differs from the one sent")
  end)

  it("accepts several messages in one session, each with its own id", function()
    local c = h.session(gw)
    local ids = {}
    for i = 1, 3 do
      ids[i] = h.deliver(c, "me@example.org", { "user" .. i .. "@example.test" },
        h.message("msg " .. i))
    end
    c:cmd("QUIT", h.R.bye)
    assert.are_not.equal(ids[1], ids[2])
    assert.are_not.equal(ids[2], ids[3])
    for i = 1, 3 do
      local env, body = gateway.parse_queue_file(gw:queue_file(ids[i]))
      assert.are.same({ "<user" .. i .. "@example.test>" }, env.rcpt)
      assert.truthy(body:find("Subject: msg " .. i, 1, true))
    end
    -- queue ids are time-ordered
    assert.truthy(ids[1] < ids[2] and ids[2] < ids[3],
      table.concat(ids, " "))
  end)

  it("accepts the null sender <> and records it", function()
    local c = h.session(gw)
    c:cmd("MAIL FROM:<>", h.R.mail_ok)
    c:cmd("RCPT TO:<user@example.test>", h.R.rcpt_ok)
    local code, text = h.data(c, h.message("bounce"))
    assert.are.equal(250, code, text)
    local qid = text:match(h.R.queued)
    local env = gateway.parse_queue_file(gw:queue_file(qid))
    assert.are.equal("<>", env.sender)
  end)

  it("records BODY=8BITMIME and keeps 8-bit content", function()
    local c = h.session(gw)
    c:cmd("MAIL FROM:<me@example.org> BODY=8BITMIME", h.R.mail_ok)
    c:cmd("RCPT TO:<user@example.test>", h.R.rcpt_ok)
    local code, text = h.data(c, "Subject: 8bit\r\n\r\ncaf\xc3\xa9 \xff\xfe\r\n")
    assert.are.equal(250, code, text)
    local env, body = gateway.parse_queue_file(gw:queue_file(text:match(h.R.queued)))
    assert.are.equal("8BITMIME", env.body)
    assert.truthy(body:find("caf\xc3\xa9 \xff\xfe\r\n", 1, true))
  end)

  it("queues concurrent clients' messages with unique ids", function()
    local before = #gw:spool_files("queue")
    local results = tools.smtplib_parallel(6, { port = gw:port(), count = 3,
      to = { "user@example.test" } })
    local ids = {}
    for i, r in ipairs(results) do
      assert.is_nil(r.error, "client " .. i .. ": " .. tostring(r.error) .. "\n" .. r.raw)
      assert.are.equal(3, #r.by.data)
      for _, d in ipairs(r.by.data) do
        local qid = d.text:match("^2%.0%.0 Ok: queued as (%x+)$")
        assert.is_not_nil(qid, d.text)
        assert.is_nil(ids[qid], "duplicate queue id " .. qid)
        ids[qid] = true
        assert.is_not_nil(gw:queue_file(qid), "missing queue file " .. qid)
      end
    end
    assert.are.equal(before + 18, #gw:spool_files("queue"))
    assert.are.same({}, gw:spool_files("tmp"))
  end)

  it("logs connect and disconnect with the session counters", function()
    local c = h.session(gw)
    h.deliver(c, "me@example.org", { "user@example.test" }, h.message("log"))
    c:cmd("QUIT", h.R.bye)
    assert.is_true(c:closed())
    local line = gw:wait_log("[^\n]*event=disconnect[^\n]*messages=1[^\n]*")
    local sid = line:match(" sid=(%d+)")
    assert.is_not_nil(sid, line)
    assert.truthy(line:find("client=127.0.0.1:%d+"), line)
    assert.truthy(line:find("commands=%d+"), line)
    assert.truthy(line:find("errors=0", 1, true), line)
    assert.truthy(gw:log():find("event=connect sid=" .. sid .. " client=127.0.0.1:", 1, true))
  end)

  it("removes the spool file when the client disconnects mid-DATA", function()
    local c = h.session(gw)
    local before = #gw:spool_files("queue")
    h.envelope(c, "me@example.org", { "user@example.test" })
    c:cmd("DATA", h.R.data)
    c:send("Subject: cut\r\n\r\n" .. string.rep("partial line\r\n", 200))
    gateway.sleep(0.2)
    c:close()
    local empty = gateway.wait_for(function() return #gw:spool_files("tmp") == 0 end, 10)
    assert.truthy(empty, "tmp/ not emptied: " .. table.concat(gw:spool_files("tmp"), " "))
    assert.are.equal(before, #gw:spool_files("queue"))
  end)
end)
