-- The outbound SMTP client (src/smtp_client.c) against real receivers:
-- Postfix's smtp-sink and spec/support/smtp_receiver.py (Python's ssl, i.e.
-- OpenSSL, for STARTTLS). Each case runs build/check/client_driver (the
-- client on an ev loop, sanitized) once and reads its one result line.

local harness = require "harness"
local procs = require "procs"
local tlss = require "tls_support"
local tools = require "tools"
local socket = require "socket"
local q = harness.shell_quote

local SMTP_SINK = "/usr/sbin/smtp-sink"

-- build/check/client_driver, next to the smtpgw binary under test.
local function driver_bin()
  local bin = os.getenv("SMTPGW_CLIENT_DRIVER")
  if bin and bin ~= "" then return bin end
  return (harness.bin():match("^(.*)/[^/]+$") or "build/check") .. "/client_driver"
end

-- Splits the driver's line into { outcome =, code =, reply =, ...,
-- rcpts = { { rcpt =, code =, reply = }, ... } }.
local function parse_result(line)
  local r = { rcpts = {} }
  local cur = r
  local pos = 1
  while pos <= #line do
    local key, rest = line:match("^%s*([%w_]+)=()", pos)
    if not key then break end
    local value
    if line:sub(rest, rest) == '"' then
      local buf, i = {}, rest + 1
      while i <= #line do
        local ch = line:sub(i, i)
        if ch == "\\" then
          buf[#buf + 1] = line:sub(i + 1, i + 1)
          i = i + 2
        elseif ch == '"' then
          i = i + 1
          break
        else
          buf[#buf + 1] = ch
          i = i + 1
        end
      end
      value, pos = table.concat(buf), i
    else
      local s, e = line:find("^%S*", rest)
      value, pos = line:sub(s, e), e + 1
    end
    if key == "rcpt" then
      cur = { rcpt = value }
      r.rcpts[#r.rcpts + 1] = cur
    elseif key == "code" then
      cur.code = tonumber(value)
    else
      cur[key] = value
    end
  end
  return r
end

describe("smtp_client", function()
  local dir, pki, selfsigned, body_file
  local n = 0

  local function fresh(name)
    n = n + 1
    return dir .. "/" .. name .. n
  end

  -- Runs the driver; returns the parsed result and the whole output.
  -- Any sanitizer report fails the spec.
  local function deliver(o)
    local args = { q(driver_bin()), "--addr", q(o.addr or ("127.0.0.1:" .. o.port)),
      "--level", o.level or "may", "--from", q(o.from or "sender@example.org"),
      "--body", q(o.body or body_file), "--timeout", tostring(o.timeout or 10) }
    if o.host then args[#args + 1] = "--host " .. q(o.host) end
    if o.ca then args[#args + 1] = "--ca " .. q(o.ca) end
    if o.offset then args[#args + 1] = "--offset " .. o.offset end
    for _, flag in ipairs(o.flags or {}) do args[#args + 1] = flag end
    for _, r in ipairs(o.rcpts or { "user@example.test" }) do
      args[#args + 1] = "--rcpt " .. q(r)
    end
    local out, code = harness.run("timeout -k 5 60 " .. table.concat(args, " "))
    local report = harness.sanitizer_report(out)
    assert(report == nil, "sanitizer report:\n" .. tostring(report))
    assert.are.equal(0, code, out)
    local line = out:match("(outcome=[^\n]*)")
    assert(line, "no result line:\n" .. out)
    return parse_result(line), out
  end

  -- smtp_receiver.py with `args`; returns its port and maildir.
  local function receiver(args, maildir)
    maildir = maildir or fresh("mail")
    local p = procs.start(q(tools.PYTHON) .. " " .. q(tools.SUPPORT .. "/smtp_receiver.py") ..
      " --maildir " .. q(maildir) .. " " .. (args or ""), { ready = "listening (%d+)" })
    return tonumber(p.ready[1]), maildir
  end

  local function tls_args(pair)
    return "--cert " .. q(pair.crt) .. " --key " .. q(pair.key)
  end

  local function free_port()
    local s = assert(socket.bind("127.0.0.1", 0))
    local _, port = s:getsockname()
    s:close()
    return tonumber(port)
  end

  -- smtp-sink on a free port, dumping each message under a new directory.
  local function sink(args)
    local port, dump = free_port(), fresh("sink")
    -- as root, smtp-sink insists on a user to switch to
    local user = harness.run("id -u"):match("^0%s") and " -u root" or ""
    procs.start(SMTP_SINK .. user .. " -d " .. q(dump .. "/%M.") .. " " .. (args or "") ..
      " 127.0.0.1:" .. port .. " 100")
    assert(harness.wait_for(function()
      local c = socket.tcp()
      c:settimeout(0.5)
      local ok = c:connect("127.0.0.1", port)
      c:close()
      return ok
    end, 10), "smtp-sink did not listen on " .. port)
    return port, dump
  end

  -- The messages stored by a receiver, in order: { eml =, env = }.
  local function stored(maildir)
    local out = {}
    for i = 1, 100 do
      local eml = harness.read_file(maildir .. "/" .. i .. ".eml")
      if not eml then break end
      out[#out + 1] = { eml = eml, env = harness.read_file(maildir .. "/" .. i .. ".env") }
    end
    return out
  end

  -- A receiver's --transcript where every command came in a read of its
  -- own (no PIPELINING); returns its text.
  local function assert_lockstep(transcript)
    local t = harness.read_file(transcript)
    local seen = {}
    for c in t:gmatch("(%d+) [^\n]*\n") do
      assert.is_nil(seen[c], "two commands in one write:\n" .. t)
      seen[c] = true
    end
    return t
  end

  -- The message in an smtp-sink dump: what follows its Received: header.
  local function sink_message(dump)
    local pos = assert(dump:find("\nReceived: ", 1, true), dump)
    pos = dump:find("\n", pos + 1, true)
    while dump:sub(pos + 1, pos + 1) == "\t" do
      pos = dump:find("\n", pos + 1, true)
    end
    return dump:sub(pos + 1)
  end

  local function write_body(text)
    local path = fresh("body")
    harness.write_file(path, text)
    return path
  end

  local BODY = "From: sender@example.org\r\nTo: user@example.test\r\n" ..
    "Subject: client spec\r\n\r\nfirst line\r\n.a line that starts with a dot\r\n" ..
    "..two dots\r\n.\r\nlast line\r\n"

  setup(function()
    dir = harness.mktempdir()
    pki = tlss.make_pki(dir .. "/pki")
    selfsigned = tlss.self_signed(dir .. "/pki", "selfsigned",
      { cn = "selfsigned.test", san = "DNS:selfsigned.test" })
    body_file = dir .. "/body.eml"
    harness.write_file(body_file, BODY)
  end)

  after_each(function()
    procs.stop_all()
  end)

  teardown(function()
    procs.stop_all()
    os.execute("rm -rf " .. q(dir))
  end)

  describe("plaintext", function()
    it("delivers to smtp-sink: the message arrives as sent, dot lines intact", function()
      local port, dump = sink()
      local r = deliver{ port = port, host = "sink.test", level = "none",
        rcpts = { "a@example.test", "b@example.test" } }
      assert.are.equal("DONE", r.outcome, r.reply)
      assert.are.equal(250, r.code)
      assert.are.equal("none", r.tls_version)
      assert.are.equal(2, #r.rcpts)
      for _, rc in ipairs(r.rcpts) do assert.are.equal(250, rc.code, rc.reply) end
      local files = harness.list_dir(dump)
      assert.are.equal(1, #files)
      local text = harness.read_file(dump .. "/" .. files[1])
      assert.truthy(text:find("X-Mail-Args: <sender@example.org>", 1, true), text)
      assert.truthy(text:find("X-Rcpt-Args: <a@example.test>\nX-Rcpt-Args: <b@example.test>", 1, true), text)
      -- smtp-sink stores LF line ends and adds an empty line at the end
      assert.are.equal(BODY:gsub("\r\n", "\n") .. "\n", sink_message(text))
      assert.truthy(text:find("\n.a line that starts with a dot\n..two dots\n.\nlast line\n", 1, true))
    end)

    it("delivers to the Python receiver byte for byte, with SIZE and PIPELINING", function()
      local transcript = fresh("transcript")
      local port, maildir = receiver("--transcript " .. q(transcript))
      local r = deliver{ port = port, level = "none",
        rcpts = { "a@example.test", "b@example.test" } }
      assert.are.equal("DONE", r.outcome, r.reply)
      assert.are.equal("250 2.0.0 stored as 1", r.reply)
      local msgs = stored(maildir)
      assert.are.equal(1, #msgs)
      assert.are.equal(BODY, msgs[1].eml)
      assert.truthy(msgs[1].env:find("from: <sender@example.org> SIZE=" .. #BODY .. "\n", 1, true), msgs[1].env)
      -- RFC 2920: MAIL, every RCPT and DATA in one write
      local t = harness.read_file(transcript)
      local chunk = {}
      for c, cmd in t:gmatch("(%d+) (%u+)[^\n]*\n") do chunk[#chunk + 1] = { tonumber(c), cmd } end
      local seq, at = {}, {}
      for _, e in ipairs(chunk) do seq[#seq + 1] = e[2]; at[e[2]] = at[e[2]] or e[1] end
      assert.are.same({ "EHLO", "MAIL", "RCPT", "RCPT", "DATA", "QUIT" }, seq)
      assert.are.equal(chunk[2][1], chunk[3][1], t)
      assert.are.equal(chunk[2][1], chunk[4][1], t)
      assert.are.equal(chunk[2][1], chunk[5][1], t)
    end)

    it("sends one command at a time without PIPELINING", function()
      local transcript = fresh("transcript")
      local port, maildir = receiver("--no-pipelining --transcript " .. q(transcript))
      local r = deliver{ port = port, level = "none",
        rcpts = { "a@example.test", "b@example.test" } }
      assert.are.equal("DONE", r.outcome, r.reply)
      assert.are.equal(1, #stored(maildir))
      assert_lockstep(transcript)
    end)

    it("gives each recipient its own RCPT reply", function()
      local port, maildir = receiver("--reject-rcpt nobody@example.test")
      local r = deliver{ port = port, level = "none",
        rcpts = { "nobody@example.test", "user@example.test" } }
      assert.are.equal("DONE", r.outcome, r.reply)
      assert.are.equal(550, r.rcpts[1].code)
      assert.are.equal("550 5.1.1 <nobody@example.test>: Recipient address rejected: User unknown",
        r.rcpts[1].reply)
      assert.are.equal(250, r.rcpts[2].code)
      assert.are.equal("250 2.0.0 stored as 1", r.rcpts[2].reply)
      local msgs = stored(maildir)
      assert.are.equal(1, #msgs)
      assert.truthy(msgs[1].env:find("rcpt: <user@example.test>", 1, true))
      assert.falsy(msgs[1].env:find("nobody", 1, true))
    end)

    it("skips DATA when no recipient is accepted", function()
      local port, maildir = receiver("--rcpt-reply '450 4.2.0 busy'")
      local r = deliver{ port = port, level = "none",
        rcpts = { "a@example.test", "b@example.test" } }
      assert.are.equal("DONE", r.outcome, r.reply)
      assert.are.equal(450, r.code)
      for _, rc in ipairs(r.rcpts) do assert.are.equal("450 4.2.0 busy", rc.reply) end
      assert.are.equal(0, #stored(maildir))
    end)

    it("gives every recipient smtp-sink's refusal of MAIL", function()
      local port = sink("-f MAIL")
      local r = deliver{ port = port, level = "none",
        rcpts = { "a@example.test", "b@example.test" } }
      assert.are.equal("DONE", r.outcome, r.reply)
      assert.are.equal(500, r.code)
      for _, rc in ipairs(r.rcpts) do
        assert.are.equal(500, rc.code)
        assert.are.equal(r.reply, rc.reply)
      end
    end)

    it("gives the accepted recipients the end-of-data refusal", function()
      local port = sink("-f .")
      local r = deliver{ port = port, level = "none" }
      assert.are.equal("DONE", r.outcome, r.reply)
      assert.are.equal(500, r.code)
      assert.are.equal(500, r.rcpts[1].code)
    end)

    it("refuses a message over the receiver's SIZE without sending MAIL", function()
      local transcript = fresh("transcript")
      local port, maildir = receiver("--size 20 --transcript " .. q(transcript))
      local r = deliver{ port = port, level = "none" }
      assert.are.equal("DONE", r.outcome, r.reply)
      assert.are.equal(552, r.rcpts[1].code)
      assert.are.equal("552 5.3.4 Message size exceeds fixed limit of the receiving server",
        r.rcpts[1].reply)
      assert.are.equal(0, #stored(maildir))
      assert.falsy(harness.read_file(transcript):find("MAIL", 1, true))
    end)

    it("refuses SMTPUTF8 mail to a receiver without SMTPUTF8", function()
      local port, maildir = receiver("")
      local r = deliver{ port = port, level = "none", flags = { "--smtputf8" } }
      assert.are.equal("DONE", r.outcome, r.reply)
      assert.are.equal(553, r.rcpts[1].code)
      assert.are.equal("553 5.6.7 SMTPUTF8 not supported by the receiving server", r.rcpts[1].reply)
      assert.are.equal(0, #stored(maildir))
    end)

    it("declares BODY=8BITMIME when the receiver offers it", function()
      local port, maildir = receiver("")
      local r = deliver{ port = port, level = "none", flags = { "--8bitmime" } }
      assert.are.equal("DONE", r.outcome, r.reply)
      assert.truthy(stored(maildir)[1].env:find("SIZE=" .. #BODY .. " BODY=8BITMIME", 1, true))
    end)

    it("ends the last line and turns bare LF and CR into CRLF", function()
      local port, maildir = receiver("")
      local body = write_body("Subject: x\r\n\r\nbare\nlf\n.dot after lf\rcr\r\r\nno final newline")
      local r = deliver{ port = port, level = "none", body = body }
      assert.are.equal("DONE", r.outcome, r.reply)
      assert.are.equal("Subject: x\r\n\r\nbare\r\nlf\r\n.dot after lf\r\ncr\r\n\r\nno final newline\r\n",
        stored(maildir)[1].eml)
    end)

    it("sends the message from --offset on (the spool's envelope stays home)", function()
      local port, maildir = receiver("")
      local head = "smtpgw-queue-file: 1\nsender: <x@y>\n\n"
      local body = write_body(head .. BODY)
      local r = deliver{ port = port, level = "none", body = body, offset = #head }
      assert.are.equal("DONE", r.outcome, r.reply)
      assert.are.equal(BODY, stored(maildir)[1].eml)
    end)

    it("delivers a 1 MiB message with many dot lines intact", function()
      local port, maildir = receiver("")
      local parts, size = { "Subject: big\r\n\r\n" }, 0
      local i = 0
      while size < 1024 * 1024 do
        i = i + 1
        local line
        if i % 3 == 0 then line = "." .. string.rep("d", i % 50) .. "\r\n"
        elseif i % 7 == 0 then line = ".\r\n"
        elseif i % 11 == 0 then line = "..\r\n"
        else line = string.rep(string.char(65 + i % 26), 1 + (i * 37) % 900) .. "\r\n" end
        parts[#parts + 1] = line
        size = size + #line
      end
      local text = table.concat(parts)
      local r = deliver{ port = port, level = "none", body = write_body(text) }
      assert.are.equal("DONE", r.outcome, r.reply)
      local got = stored(maildir)[1].eml
      assert.are.equal(#text, #got)
      assert.is_true(text == got, "the stored message differs from the one sent")
    end)

    it("delivers over IPv6 loopback", function()
      local port, maildir = receiver("--host ::1")
      local r = deliver{ addr = "[::1]:" .. port, level = "none" }
      assert.are.equal("DONE", r.outcome, r.reply)
      assert.are.equal(BODY, stored(maildir)[1].eml)
    end)
  end)

  describe("connection failures", function()
    it("a 421 banner is CONNECT_FAILED with that reply", function()
      local port = sink("-Q CONNECT")
      local r = deliver{ port = port }
      assert.are.equal("CONNECT_FAILED", r.outcome)
      assert.are.equal(421, r.code)
      assert.truthy(r.reply:find("^421 "), r.reply)
      assert.are.equal(0, r.rcpts[1].code)
    end)

    it("a dead port is CONNECT_FAILED", function()
      local port = free_port()
      local r = deliver{ port = port, host = "dead.test" }
      assert.are.equal("CONNECT_FAILED", r.outcome)
      assert.are.equal("connect to dead.test[127.0.0.1]:" .. port .. ": Connection refused", r.reply)
    end)

    it("a connect that fails at once is reported from the loop", function()
      local r = deliver{ port = 25, flags = { "--bad-family" } }
      assert.are.equal("CONNECT_FAILED", r.outcome)
      assert.truthy(r.reply:find("Address family not supported", 1, true), r.reply)
    end)

    it("no banner within the timeout is CONNECT_FAILED", function()
      local server = assert(socket.bind("127.0.0.1", 0)) -- never accepts
      local _, port = server:getsockname()
      local t0 = socket.gettime()
      local r = deliver{ port = tonumber(port), host = "mute.test", timeout = 1 }
      server:close()
      assert.are.equal("CONNECT_FAILED", r.outcome)
      assert.are.equal("conversation with mute.test[127.0.0.1]:" .. port ..
        " timed out while receiving the initial server greeting", r.reply)
      assert.is_true(socket.gettime() - t0 < 8)
    end)

    it("no end-of-data reply within the timeout is LOST, with the RCPT replies known", function()
      local port = receiver("--data-delay 4")
      local r = deliver{ port = port, level = "none", timeout = 1 }
      assert.are.equal("LOST", r.outcome)
      assert.truthy(r.reply:find("timed out while sending end of data", 1, true), r.reply)
      assert.are.equal(250, r.rcpts[1].code)
    end)

    it("an aborted client reports nothing and frees everything", function()
      local port = receiver("--data-delay 4")
      local _, out = deliver{ port = port, level = "none", flags = { "--abort-after 0.5" } }
      assert.truthy(out:find("outcome=ABORTED", 1, true), out)
    end)

    it("an aborted client inside TLS frees its TLS context too", function()
      local port = receiver("--data-delay 4 " .. tls_args(selfsigned))
      local _, out = deliver{ port = port, level = "encrypt", flags = { "--abort-after 0.5" } }
      assert.truthy(out:find("outcome=ABORTED", 1, true), out)
    end)
  end)

  describe("servers that refuse or misbehave", function()
    -- spec/support/smtp_script.py with `steps`; returns its port and log.
    local function script(steps)
      local log = fresh("script.log")
      local args = { q(tools.PYTHON), q(tools.SUPPORT .. "/smtp_script.py"), "--log", q(log) }
      for _, s in ipairs(steps) do args[#args + 1] = q(s) end
      local p = procs.start(table.concat(args, " "), { ready = "listening (%d+)" })
      return tonumber(p.ready[1]), log
    end

    local EHLO_PIPELINING = "send:250-peer.test\\r\\n250-PIPELINING\\r\\n250 STARTTLS\\r\\n"

    it("a 554 banner is CONNECT_FAILED, multi-line reply joined, QUIT sent", function()
      local port, log = script{ "send:554-5.3.2 first\\r\\n554 5.3.2 second\\r\\n", "line",
        "send:221 bye\\r\\n" }
      local r = deliver{ port = port }
      assert.are.equal("CONNECT_FAILED", r.outcome)
      assert.are.equal(554, r.code)
      assert.are.equal("554 5.3.2 first 5.3.2 second", r.reply)
      assert.are.equal("QUIT\r\n", harness.read_file(log))
    end)

    it("a reply dripped line by line is timed whole, not per byte", function()
      -- each line comes within the 2 s step timeout of the one before; the
      -- whole reply does not
      local steps = { "send:220 peer.test\\r\\n", "line" }
      for _ = 1, 6 do
        steps[#steps + 1] = "send:250-slow\\r\\n"
        steps[#steps + 1] = "sleep:0.8"
      end
      steps[#steps + 1] = "send:250 done\\r\\n"
      local port = script(steps)
      local r = deliver{ port = port, level = "none", timeout = 2 }
      assert.are.equal("LOST", r.outcome)
      -- in the EHLO reply, not later (per byte, EHLO would have finished)
      assert.truthy(r.reply:find("EHLO", 1, true), r.reply)
    end)

    it("may: a refused STARTTLS goes on in plaintext and says why", function()
      local port, log = script{ "send:220 peer.test\\r\\n", "line",
        "send:250-peer.test\\r\\n250 STARTTLS\\r\\n", "line",
        "send:454 4.7.0 TLS not available due to local problem\\r\\n", "line", "close" }
      local r = deliver{ port = port, level = "may" }
      assert.are.equal("454 4.7.0 TLS not available due to local problem", r.starttls_refused)
      assert.are.equal("none", r.tls_version)
      -- it went on in plaintext: the next command after STARTTLS was MAIL
      assert.truthy((harness.read_file(log) or ""):find("STARTTLS\r\nMAIL FROM:", 1, true))
    end)

    it("an EHLO reply of more than 100 lines is LOST: reply too long", function()
      local port = script{ "send:220 peer.test\\r\\n", "line",
        "send:" .. string.rep("250-x\\r\\n", 100) .. "250 end\\r\\n" }
      local r = deliver{ port = port, level = "none" }
      assert.are.equal("LOST", r.outcome)
      assert.truthy(r.reply:find("^reply too long"), r.reply)
    end)

    it("a reply line over 512 octets is LOST: reply too long", function()
      local port = script{ "send:220 peer.test\\r\\n", "line",
        "send:250-" .. string.rep("x", 600) .. "\\r\\n250 end\\r\\n" }
      local r = deliver{ port = port, level = "none" }
      assert.are.equal("LOST", r.outcome)
      assert.truthy(r.reply:find("^reply too long"), r.reply)
    end)

    it("plaintext after the 220 to STARTTLS is refused (CVE-2011-0411)", function()
      local port = script{ "send:220 peer.test\\r\\n", "line", EHLO_PIPELINING, "line",
        "send:220 go ahead\\r\\n250 injected\\r\\n" }
      local r = deliver{ port = port, level = "encrypt" }
      assert.are.equal("TLS_FAILED", r.outcome)
      assert.truthy(r.reply:find("sent bytes after its 220 to STARTTLS", 1, true), r.reply)
    end)

    it("a handshake that never completes is TLS_FAILED after the timeout", function()
      local port = script{ "send:220 peer.test\\r\\n", "line", EHLO_PIPELINING, "line",
        "send:220 go ahead\\r\\n" }
      local r = deliver{ port = port, level = "may", host = "mute.test", timeout = 1 }
      assert.are.equal("TLS_FAILED", r.outcome)
      assert.are.equal("TLS handshake with mute.test[127.0.0.1]:" .. port .. " timed out", r.reply)
    end)

    it("may: a refused STARTTLS goes on in plaintext", function()
      local port, log = script{ "send:220 peer.test\\r\\n", "line", EHLO_PIPELINING, "line",
        "send:454 4.7.0 TLS not available due to local problem\\r\\n", "line", "line", "line",
        "send:550 5.7.1 go away\\r\\n503 5.5.1 need MAIL\\r\\n503 5.5.1 need RCPT\\r\\n",
        "line", "send:221 bye\\r\\n" }
      local r = deliver{ port = port, level = "may" }
      assert.are.equal("DONE", r.outcome, r.reply)
      assert.are.equal("none", r.tls_version)
      assert.are.equal(550, r.code)
      assert.are.equal("550 5.7.1 go away", r.rcpts[1].reply)
      assert.truthy(harness.read_file(log):find("STARTTLS\r\nMAIL FROM:", 1, true))
    end)

    it("encrypt: a refused STARTTLS is TLS_FAILED with the reply", function()
      local port = script{ "send:220 peer.test\\r\\n", "line", EHLO_PIPELINING, "line",
        "send:454 4.7.0 TLS not available due to local problem\\r\\n", "line", "send:221 bye\\r\\n" }
      local r = deliver{ port = port, level = "encrypt" }
      assert.are.equal("TLS_FAILED", r.outcome)
      assert.are.equal(454, r.code)
      assert.are.equal("454 4.7.0 TLS not available due to local problem", r.reply)
    end)

    it("a 354 to pipelined DATA without recipients gets an empty message", function()
      local port, log = script{ "send:220 peer.test\\r\\n", "line", EHLO_PIPELINING, "line", "line", "line",
        "send:250 2.1.0 ok\\r\\n550 5.1.1 unknown\\r\\n354 go ahead\\r\\n", "line",
        "send:554 5.5.1 no valid recipients\\r\\n", "line", "send:221 bye\\r\\n" }
      local r = deliver{ port = port, level = "none" }
      assert.are.equal("DONE", r.outcome, r.reply)
      assert.are.equal(550, r.rcpts[1].code)
      assert.truthy(harness.read_file(log):find("\r\nDATA\r\n.\r\nQUIT\r\n$"), harness.read_file(log))
    end)

    it("falls back to HELO when EHLO is refused", function()
      local port, dump = sink("-f EHLO")
      local r = deliver{ port = port, level = "may" }
      assert.are.equal("DONE", r.outcome, r.reply)
      local files = harness.list_dir(dump)
      local text = harness.read_file(dump .. "/" .. files[1])
      assert.truthy(text:find("X-Client-Proto: SMTP\n", 1, true), text)
    end)

    it("encrypt: HELO only means TLS_NOT_OFFERED", function()
      local port = sink("-f EHLO")
      local r = deliver{ port = port, level = "encrypt" }
      assert.are.equal("TLS_NOT_OFFERED", r.outcome)
    end)

    it("a refusal in the middle of the message ends it (smtp-sink -A)", function()
      local port = sink("-A 0")
      local big = write_body("Subject: big\r\n\r\n" .. string.rep(string.rep("x", 998) .. "\r\n", 1100))
      local r = deliver{ port = port, level = "none", body = big }
      assert.are.equal("DONE", r.outcome, r.reply)
      assert.are.equal(550, r.code)
      assert.are.equal(550, r.rcpts[1].code)
    end)

    it("a server that refuses mid-message and hangs up is heard out", function()
      -- the client's write fails (EPIPE); the 554 is still there to read
      local port = script{ "send:220 peer.test\\r\\n", "line", EHLO_PIPELINING, "line", "line", "line",
        "send:250 2.1.0 ok\\r\\n250 2.1.5 ok\\r\\n354 go ahead\\r\\n", "line",
        "send:554 5.3.4 too big for me\\r\\n", "close" }
      local big = write_body("Subject: big\r\n\r\n" .. string.rep(string.rep("y", 998) .. "\r\n", 2100))
      local r = deliver{ port = port, level = "none", body = big }
      assert.are.equal("DONE", r.outcome, r.reply)
      assert.are.equal(554, r.code)
      assert.are.equal("554 5.3.4 too big for me", r.rcpts[1].reply)
    end)

    it("a connection lost at the end of data is LOST", function()
      local port = sink("-q .")
      local r = deliver{ port = port, level = "none", host = "sink.test" }
      assert.are.equal("LOST", r.outcome)
      assert.are.equal("lost connection with sink.test[127.0.0.1]:" .. port ..
        " while sending end of data -- message may be sent more than once", r.reply)
      assert.are.equal(250, r.rcpts[1].code)
    end)

    it("a 421 to DATA covers the accepted recipients", function()
      local port = sink("-Q DATA")
      local r = deliver{ port = port, level = "none" }
      assert.are.equal("DONE", r.outcome, r.reply)
      assert.are.equal(421, r.code)
      assert.are.equal(421, r.rcpts[1].code)
    end)
  end)

  describe("TLS levels", function()
    it("may: STARTTLS when offered", function()
      local port, maildir = receiver(tls_args(selfsigned))
      local r = deliver{ port = port, level = "may", host = "selfsigned.test" }
      assert.are.equal("DONE", r.outcome, r.reply)
      assert.are.equal("TLSv1.3", r.tls_version)
      assert.are_not.equal("none", r.tls_cipher)
      assert.are.equal("no", r.tls_verified)
      local msgs = stored(maildir)
      assert.truthy(msgs[1].env:find("tls: TLSv1.3", 1, true), msgs[1].env)
      assert.are.equal(BODY, msgs[1].eml)
    end)

    it("may: plaintext when STARTTLS is not offered", function()
      local port, maildir = receiver("--no-starttls " .. tls_args(selfsigned))
      local r = deliver{ port = port, level = "may" }
      assert.are.equal("DONE", r.outcome, r.reply)
      assert.are.equal("none", r.tls_version)
      assert.truthy(stored(maildir)[1].env:find("tls: none", 1, true))
    end)

    it("may: plaintext with --no-tls even when offered", function()
      local port, maildir = receiver(tls_args(selfsigned))
      local r = deliver{ port = port, level = "may", flags = { "--no-tls" } }
      assert.are.equal("DONE", r.outcome, r.reply)
      assert.truthy(stored(maildir)[1].env:find("tls: none", 1, true))
    end)

    it("may: a failed handshake is TLS_FAILED", function()
      local port, maildir = receiver("--break-tls " .. tls_args(selfsigned))
      local r = deliver{ port = port, level = "may" }
      assert.are.equal("TLS_FAILED", r.outcome)
      assert.truthy(#r.reply > 0)
      assert.are.equal(0, #stored(maildir))
    end)

    it("encrypt: TLS_NOT_OFFERED by a plaintext receiver", function()
      local port, maildir = receiver("")
      local r = deliver{ port = port, level = "encrypt", host = "plain.test" }
      assert.are.equal("TLS_NOT_OFFERED", r.outcome)
      assert.are.equal("TLS is required, but was not offered by plain.test[127.0.0.1]:" .. port, r.reply)
      assert.are.equal(0, #stored(maildir))
    end)

    it("encrypt: delivers to a self-signed receiver", function()
      local port, maildir = receiver(tls_args(selfsigned))
      local r = deliver{ port = port, level = "encrypt", host = "whatever.test" }
      assert.are.equal("DONE", r.outcome, r.reply)
      assert.are.equal("TLSv1.3", r.tls_version)
      assert.are.equal("no", r.tls_verified)
      assert.truthy(stored(maildir)[1].env:find("tls: TLSv1.3", 1, true))
    end)

    it("verify: a self-signed receiver is TLS_FAILED with the reason", function()
      local port, maildir = receiver(tls_args(selfsigned))
      local r = deliver{ port = port, level = "verify", host = "selfsigned.test", ca = pki.ca.crt }
      assert.are.equal("TLS_FAILED", r.outcome)
      assert.truthy(r.reply:find("certificate verification failed", 1, true), r.reply)
      assert.are.equal(0, #stored(maildir))
    end)

    it("verify: a certificate of the test CA with the right name is delivered, verified", function()
      local port, maildir = receiver(tls_args(pki.a))
      local r = deliver{ port = port, level = "verify", host = "a.test.example", ca = pki.ca.crt }
      assert.are.equal("DONE", r.outcome, r.reply)
      assert.are.equal("yes", r.tls_verified)
      assert.are.equal("TLSv1.3", r.tls_version)
      assert.truthy(stored(maildir)[1].env:find("tls: TLSv1.3", 1, true))
    end)

    it("verify: a name mismatch is TLS_FAILED", function()
      local port, maildir = receiver(tls_args(pki.a))
      local r = deliver{ port = port, level = "verify", host = "other.test", ca = pki.ca.crt }
      assert.are.equal("TLS_FAILED", r.outcome)
      assert.are.equal("name `other.test' not present in server certificate", r.reply)
      assert.are.equal(0, #stored(maildir))
    end)

    it("verify: a receiver without STARTTLS is TLS_NOT_OFFERED", function()
      local port = receiver("--no-starttls " .. tls_args(pki.a))
      local r = deliver{ port = port, level = "verify", host = "a.test.example", ca = pki.ca.crt }
      assert.are.equal("TLS_NOT_OFFERED", r.outcome)
    end)

    it("verify: pipelines and streams a large message inside TLS", function()
      local port, maildir = receiver(tls_args(pki.a))
      local text = "Subject: tls\r\n\r\n" .. string.rep(".line\r\n", 40000)
      local r = deliver{ port = port, level = "verify", host = "a.test.example", ca = pki.ca.crt,
        body = write_body(text) }
      assert.are.equal("DONE", r.outcome, r.reply)
      assert.is_true(text == stored(maildir)[1].eml)
    end)
  end)

  -- README "Connection reuse": the driver's --repeat runs the same
  -- transaction again with a connection cache; a result line each.
  describe("connection reuse", function()
    -- Every result of the run, and the idle connections left at its end.
    local function deliver_each(o)
      local _, out = deliver(o)
      local rs = {}
      for line in out:gmatch("(outcome=[^\n]*)") do rs[#rs + 1] = parse_result(line) end
      return rs, tonumber(out:match("\nidle=(%d+)")), out
    end

    -- A receiver logging its commands: port, maildir, and a reader of
    -- { { conn =, mode =, line =, verb = }, ... }.
    local function logged_receiver(args)
      local log = fresh("commands")
      local port, maildir = receiver("--command-log " .. q(log) .. " " .. (args or ""))
      return port, maildir, function()
        local out = {}
        for conn, mode, line in (harness.read_file(log) or ""):gmatch("(%d+) (%a+) ([^\n]*)\n") do
          out[#out + 1] = { conn = tonumber(conn), mode = mode, line = line,
            verb = line:match("^[%u-]+") }
        end
        return out
      end
    end

    local function verbs(cmds, conn)
      local out = {}
      for _, c in ipairs(cmds) do
        if not conn or c.conn == conn then out[#out + 1] = c.verb end
      end
      return table.concat(out, " ")
    end

    local function reused(rs)
      local out = {}
      for i, r in ipairs(rs) do out[i] = r.reused end
      return table.concat(out, " ")
    end

    local REUSE = { "--reuse-max 10", "--reuse-idle 5" }
    local function flags(...)
      local out = { ... }
      for _, f in ipairs(REUSE) do out[#out + 1] = f end
      return out
    end

    it("carries the next transactions on the same connection, RSET pipelined with MAIL, RCPT and DATA", function()
      local transcript = fresh("transcript")
      local port, maildir, cmds = logged_receiver("--transcript " .. q(transcript))
      local rs, idle = deliver_each{ port = port, level = "none",
        rcpts = { "a@example.test", "b@example.test" }, flags = flags("--repeat 3") }
      assert.are.equal(3, #rs)
      for _, r in ipairs(rs) do
        assert.are.equal("DONE", r.outcome, r.reply)
        assert.are.equal(250, r.rcpts[1].code)
        assert.are.equal(250, r.rcpts[2].code)
      end
      assert.are.equal("no yes yes", reused(rs))
      assert.are.equal(1, idle)
      assert.are.equal(3, #stored(maildir))
      -- one connection; QUIT only when the cache let it go
      assert.are.equal("EHLO MAIL RCPT RCPT DATA RSET MAIL RCPT RCPT DATA " ..
        "RSET MAIL RCPT RCPT DATA QUIT", verbs(cmds()))
      -- RFC 2920: RSET, MAIL, both RCPTs and DATA came in one read
      local t = harness.read_file(transcript)
      local groups, cur = {}, nil
      for c, verb in t:gmatch("(%d+) (%u+)[^\n]*\n") do
        if verb == "RSET" or verb == "EHLO" or verb == "QUIT" then cur = { c = c, ok = true }; groups[#groups + 1] = cur end
        if verb ~= "QUIT" and c ~= cur.c then cur.ok = false end
      end
      assert.are.equal(4, #groups, t)
      for i = 2, 3 do assert.is_true(groups[i].ok, "not one write:\n" .. t) end
    end)

    it("reuses a verified TLS connection with its TLS state, with no new handshake", function()
      local port, maildir, cmds = logged_receiver(tls_args(pki.a))
      local rs = deliver_each{ port = port, level = "verify", host = "a.test.example",
        ca = pki.ca.crt, flags = flags("--repeat 2") }
      assert.are.equal("no yes", reused(rs))
      for _, r in ipairs(rs) do
        assert.are.equal("DONE", r.outcome, r.reply)
        assert.are.equal("yes", r.tls_verified)
        assert.are.equal("TLSv1.3", r.tls_version)
      end
      assert.are.equal(2, #stored(maildir))
      assert.are.equal("EHLO STARTTLS EHLO MAIL RCPT DATA RSET MAIL RCPT DATA QUIT", verbs(cmds()))
      for _, c in ipairs(cmds()) do
        if c.verb ~= "EHLO" and c.verb ~= "STARTTLS" then assert.are.equal("tls", c.mode, c.line) end
      end
    end)

    it("carries at most --reuse-max transactions on one connection", function()
      local port, maildir, cmds = logged_receiver()
      local rs = deliver_each{ port = port, level = "none",
        flags = { "--repeat 5", "--reuse-max 2", "--reuse-idle 5" } }
      assert.are.equal("no yes no yes no", reused(rs))
      assert.are.equal(5, #stored(maildir))
      local c = cmds()
      assert.are.equal(3, c[#c].conn)
      assert.are.equal("EHLO MAIL RCPT DATA RSET MAIL RCPT DATA QUIT", verbs(c, 1))
      assert.are.equal("EHLO MAIL RCPT DATA QUIT", verbs(c, 3))
    end)

    it("replaces a connection whose RSET is refused, and the transaction goes through", function()
      local port, maildir, cmds = logged_receiver("--rset-reply '421 4.3.2 going down'")
      local rs = deliver_each{ port = port, level = "none", flags = flags("--repeat 2") }
      assert.are.equal("DONE", rs[2].outcome, rs[2].reply)
      assert.are.equal(250, rs[2].rcpts[1].code)
      assert.are.equal("no no", reused(rs))
      assert.are.equal(2, #stored(maildir))
      local c = cmds()
      -- RSET went with MAIL, RCPT and DATA; nothing more on that one
      assert.are.equal("EHLO MAIL RCPT DATA RSET", verbs(c, 1):gsub(" MAIL RCPT DATA$", ""))
      assert.are.equal("EHLO MAIL RCPT DATA", verbs(c, 2):gsub(" QUIT$", ""))
    end)

    it("does not use a connection the receiver closed while it was idle", function()
      local port, maildir, cmds = logged_receiver("--idle-close 0.2")
      local rs, idle = deliver_each{ port = port, level = "none",
        flags = flags("--repeat 2", "--pause 1.5") }
      assert.are.equal("no no", reused(rs))
      assert.are.equal("DONE", rs[2].outcome, rs[2].reply)
      assert.are.equal(2, #stored(maildir))
      assert.are.equal(1, idle)
      assert.are.equal("EHLO MAIL RCPT DATA CLOSED-IDLE", verbs(cmds(), 1))
    end)

    it("says QUIT to a connection idle for --reuse-idle", function()
      local port, maildir, cmds = logged_receiver()
      local rs, idle = deliver_each{ port = port, level = "none",
        flags = { "--repeat 2", "--pause 1", "--reuse-max 10", "--reuse-idle 0.2" } }
      assert.are.equal("no no", reused(rs))
      assert.are.equal(2, #stored(maildir))
      assert.are.equal(1, idle)
      assert.are.equal("EHLO MAIL RCPT DATA QUIT", verbs(cmds(), 1))
    end)

    it("without PIPELINING waits for RSET's reply before MAIL", function()
      local transcript = fresh("transcript")
      local port, maildir = logged_receiver("--no-pipelining --transcript " .. q(transcript))
      local rs = deliver_each{ port = port, level = "none", flags = flags("--repeat 2") }
      assert.are.equal("no yes", reused(rs))
      assert.are.equal(2, #stored(maildir))
      local t = assert_lockstep(transcript)
      assert.truthy(t:find(" RSET\n", 1, true), t)
    end)

    it("after every recipient was refused (DATA pipelined and refused) the connection serves again", function()
      local port, maildir, cmds = logged_receiver("--reject-rcpt a@example.test")
      local rs = deliver_each{ port = port, level = "none", rcpts = { "a@example.test" },
        flags = flags("--repeat 2") }
      assert.are.equal("no yes", reused(rs))
      for _, r in ipairs(rs) do
        assert.are.equal("DONE", r.outcome, r.reply)
        assert.are.equal(550, r.rcpts[1].code)
      end
      assert.are.equal(0, #stored(maildir))
      -- RFC 2920 3.1: the 554 to DATA, and no message after it
      assert.are.equal("EHLO MAIL RCPT DATA RSET MAIL RCPT DATA QUIT", verbs(cmds()))
    end)

    it("does not keep a connection in plaintext after a downgrade (may, --no-tls)", function()
      local port, maildir, cmds = logged_receiver(tls_args(selfsigned))
      local rs, idle = deliver_each{ port = port, level = "may",
        flags = flags("--repeat 2", "--no-tls") }
      assert.are.equal("no no", reused(rs))
      assert.are.equal(2, #stored(maildir))
      assert.are.equal(0, idle)
      assert.are.equal("EHLO MAIL RCPT DATA QUIT", verbs(cmds(), 1))
    end)

    it("keeps a may connection to a receiver that offers no STARTTLS", function()
      local port, maildir = logged_receiver("--no-starttls " .. tls_args(selfsigned))
      local rs = deliver_each{ port = port, level = "may", flags = flags("--repeat 2") }
      assert.are.equal("no yes", reused(rs))
      assert.are.equal("none", rs[2].tls_version)
      assert.are.equal(2, #stored(maildir))
    end)

    it("a refusal made before MAIL (SIZE) still probes with RSET and keeps the connection", function()
      local port, maildir, cmds = logged_receiver("--size 100")
      local big = write_body("Subject: big\r\n\r\n" .. string.rep("x", 200) .. "\r\n")
      local rs = deliver_each{ port = port, level = "none", body = big, flags = flags("--repeat 2") }
      assert.are.equal("no yes", reused(rs))
      assert.are.equal(552, rs[2].rcpts[1].code)
      assert.are.equal(0, #stored(maildir))
      assert.are.equal("EHLO RSET QUIT", verbs(cmds()))
    end)
  end)
end)
