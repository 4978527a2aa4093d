-- Deadlines a drip cannot stretch (README "Deadlines and stress mode"):
-- a command line must end within command_timeout of its first octet, the
-- wait for a command is bounded, DATA has a minimum rate and a total
-- bound, the STARTTLS handshake has its own deadline, and under stress
-- (above 80 % of max_connections) the waits shrink, idle sessions first.
-- Each bound is measured on a real socket: closed no earlier than the
-- bound and no later than the bound plus SLACK.

local gateway = require "harness"
local client = require "smtp_client"
local h = require "helpers"
local R = h.R

-- What a loaded, sanitized build on a shared machine may add to a bound.
local SLACK = 1.5

-- Sends `piece` every `every` seconds until the server answers or closes
-- (or `limit` seconds pass). Returns the seconds from the first piece to
-- that moment and the reply (code, text), or nil, "closed"; nil when the
-- server said nothing within the limit.
local function drip(c, piece, every, limit)
  local t0 = gateway.now()
  while gateway.now() - t0 < limit do
    c:send(piece) -- fails once the server has closed: that is the point
    local code, text = c:read_reply(every)
    if code then return gateway.now() - t0, code, text end
    if text == "closed" then return gateway.now() - t0, nil, "closed" end
  end
  return nil
end

local function assert_within(elapsed, bound, what)
  assert(elapsed, what .. ": still served after the limit (the drip stretched it)")
  assert(elapsed >= bound - 0.2, string.format("%s: closed after %.2f s, before its %.1f s bound",
    what, elapsed, bound))
  assert(elapsed <= bound + SLACK, string.format("%s: closed after %.2f s, bound %.1f s + %.1f s",
    what, elapsed, bound, SLACK))
end

describe("deadlines", function()
  teardown(h.cleanup)
  after_each(client.close_all)

  describe("command_timeout = 2s", function()
    local gw
    teardown(h.cleanup)
    setup(function()
      gw = gateway.start { ini_extra = { command_timeout = "2s" } }
    end)

    it("a command dripped a byte every 0.4 s is closed 2 s after its first byte", function()
      local c = h.session(gw)
      local elapsed, code, text = drip(c, "N", 0.4, 8)
      assert_within(elapsed, 2, "drip")
      assert.are.equal(421, code)
      assert.are.equal(R.timeout, text)
      assert.is_true(c:closed())
      gw:wait_log("event=timeout [^\n]*stage=command_line after=EHLO")
    end)

    it("junk without CRLF is closed within the deadline too", function()
      local c = h.session(gw)
      local elapsed, code, text = drip(c, string.rep("x", 64), 0.3, 8)
      assert_within(elapsed, 2, "junk")
      assert.are.equal(R.timeout, text)
      assert.are.equal(421, code)
    end)

    it("an over-long line being discarded does not reset the deadline", function()
      local c = h.session(gw)
      c:send(string.rep("y", 2000)) -- past 512 octets: discarded as it comes
      local elapsed, code = drip(c, "y", 0.3, 8)
      assert.is_not_nil(elapsed, "still served after 8 s")
      assert.are.equal(421, code)
      assert.truthy(elapsed <= 2 + SLACK, string.format("closed after %.2f s", elapsed))
    end)

    it("the wait for a command is bounded: an idle client goes after 2 s", function()
      local c = h.session(gw)
      local t0 = gateway.now()
      c:expect_line(R.timeout, 10)
      assert_within(gateway.now() - t0, 2, "idle")
      assert.is_true(c:closed())
      gw:wait_log("event=timeout [^\n]*stage=command after=EHLO")
    end)

    it("a client that answers in time is not closed (each command has its own wait)", function()
      local c = h.session(gw)
      local t0 = gateway.now()
      for _ = 1, 3 do
        gateway.sleep(1.2)
        c:send("MAIL FROM:<me@example.org>\r\n")
        c:expect_line(R.mail_ok)
        c:cmd("RSET", R.ok)
      end
      -- and a line in two halves, well within the line's deadline
      c:send("NO")
      gateway.sleep(0.5)
      c:send("OP\r\n")
      c:expect_line(R.ok)
      assert.truthy(gateway.now() - t0 > 4, "took longer than two deadlines in all")
    end)
  end)

  describe("DATA: data_timeout = 2s, no minimum rate", function()
    local gw
    teardown(h.cleanup)
    setup(function()
      gw = gateway.start { ini_extra = { command_timeout = "30s", data_timeout = "2s",
        min_data_rate = 0 } }
    end)

    it("a message dripped a byte every 0.3 s ends 2 s after the 354, nothing queued", function()
      local c = h.session(gw)
      h.envelope(c, "me@example.org", { "user@example.test" })
      c:cmd("DATA", R.data)
      local elapsed, code, text = drip(c, "z", 0.3, 8)
      assert_within(elapsed, 2, "DATA drip")
      assert.are.equal(421, code)
      assert.are.equal(R.timeout, text)
      assert.is_true(c:closed())
      h.assert_nothing_queued(gw, c)
      gw:wait_log("event=timeout [^\n]*stage=data after=DATA")
    end)

    it("a message sent at once is queued", function()
      local c = h.session(gw)
      h.deliver(c, "me@example.org", { "user@example.test" }, h.message("fast"))
    end)
  end)

  describe("DATA: min_data_rate = 2000, data_rate_window = 1s", function()
    local gw
    teardown(h.cleanup)
    setup(function()
      gw = gateway.start { ini_extra = { command_timeout = "30s", data_timeout = "60s",
        min_data_rate = 2000, data_rate_window = "1s" } }
    end)

    it("a client at 400 bytes/s is closed at the end of the first window after the grace", function()
      local c = h.session(gw)
      h.envelope(c, "me@example.org", { "user@example.test" })
      c:cmd("DATA", R.data)
      local line = string.rep("s", 98) .. "\r\n"
      local elapsed, code, text = drip(c, line, 0.25, 8)
      -- grace [0, 1 s], then the window [1 s, 2 s] carries 400 < 2000 octets
      assert_within(elapsed, 2, "slow DATA")
      assert.are.equal(421, code)
      assert.are.equal(R.timeout, text)
      h.assert_nothing_queued(gw, c)
      gw:wait_log("event=timeout [^\n]*stage=data_rate after=DATA [^\n]*bytes=%d+")
    end)

    it("a client above the rate for several windows is queued", function()
      local c = h.session(gw)
      h.envelope(c, "me@example.org", { "user@example.test" })
      c:cmd("DATA", R.data)
      c:send("Subject: steady\r\n\r\n")
      local line = string.rep("f", 998) .. "\r\n"
      local t0 = gateway.now()
      while gateway.now() - t0 < 3.5 do -- 4 KB every 0.25 s: 16 KB/s
        assert(c:send(line .. line .. line .. line))
        gateway.sleep(0.25)
      end
      c:send(".\r\n")
      c:expect(R.queued)
    end)
  end)

  describe("STARTTLS: handshake_timeout = 2s", function()
    local gw
    teardown(h.cleanup)
    setup(function()
      gw = gateway.start { ini_extra = { command_timeout = "30s" },
        sections = { tls = { handshake_timeout = "2s" } } }
    end)

    it("a handshake dripped a byte every 0.3 s is cut 2 s after the 220", function()
      local c = h.session(gw)
      c:cmd("STARTTLS", "220 2.0.0 Ready to start TLS")
      -- a TLS record header announcing 512 octets, then the octets slowly
      c:send("\22\3\1\2\0")
      local elapsed, code, text = drip(c, "\0", 0.3, 8)
      assert.is_nil(code, "the server said something: " .. tostring(text))
      assert_within(elapsed, 2, "handshake drip")
      gw:wait_log("event=timeout [^\n]*stage=tls")
    end)
  end)

  describe("many drips: 200 connections, 20 per address", function()
    -- SPEC_DRIPS=1000 runs the issue's full size (needs ulimit -n > 2100)
    local N = tonumber(os.getenv("SPEC_DRIPS") or "") or 200
    local gw
    teardown(h.cleanup)
    setup(function()
      gw = gateway.start { ini_extra = { command_timeout = "3s", max_connections = N + 10,
        max_connections_per_ip = 50 } }
    end)

    it("are all closed within their deadline while a normal client is served", function()
      local socket = require "socket"
      local every = 0.5
      local live, opened = {}, {}
      for i = 1, N do
        local c = client.connect(gw:port(), { bind = "127.0.1." .. (i % math.ceil(N / 20) + 1) })
        c:send("EHLO drip" .. i .. "\r\n")
        local code = c:read_reply()
        assert.are.equal(250, code)
        c.sock:settimeout(0)
        live[#live + 1] = c
        opened[c] = gateway.now() -- its command line starts with the next byte
      end
      local first_byte, closed_after = {}, {}
      local t0 = gateway.now()
      -- a normal client meanwhile
      local normal = h.session(gw)
      h.deliver(normal, "me@example.org", { "user@example.test" }, h.message("normal"))
      while #live > 0 and gateway.now() - t0 < 15 do
        local still = {}
        for _, c in ipairs(live) do
          local now = gateway.now()
          if not first_byte[c] then first_byte[c] = now end
          c.sock:send("d")
          local data, err, partial = c.sock:receive("*a")
          local got = data or partial or ""
          if err == "closed" or got:find("^421 4%.4%.2 ") then
            closed_after[#closed_after + 1] = now - first_byte[c]
            c:close()
          else
            still[#still + 1] = c
          end
        end
        live = still
        socket.sleep(every / 4)
      end
      assert.are.equal(0, #live, #live .. " dripping connections still open after 15 s")
      local worst = 0
      for _, d in ipairs(closed_after) do worst = math.max(worst, d) end
      assert.are.equal(N, #closed_after)
      if os.getenv("SPEC_VERBOSE") then io.stderr:write(string.format("worst %.2f s\n", worst)) end
      assert.truthy(worst <= 3 + SLACK + every, string.format("the last closed %.2f s after its first byte", worst))
      -- (lines reach the log at the end of the worker's loop turn)
      assert.are.equal(N, #gw:wait_log_count("event=timeout [^\n]*stage=command_line", N))
    end)
  end)

  describe("stress: max_connections = 10, stress_timeout = 1s", function()
    local gw
    teardown(h.cleanup)
    setup(function()
      -- one worker: which sessions go first is each worker's own choice
      gw = gateway.start { ini_extra = { command_timeout = "30s", max_connections = 10,
        stress_timeout = "1s", workers = 1 } }
    end)

    it("above 80 % the longest idle sessions go within the stress timeout until the load is 70 %", function()
      -- one client in the middle of a command line when stress begins
      local busy = h.session(gw)
      busy:send("NOO")
      local idle = {}
      for i = 1, 8 do idle[i] = h.session(gw, { helo = i % 2 == 0 }) end
      -- 9 of 10 sessions: stress on
      gw:wait_log("event=stress state=on")
      local t0 = gateway.now()
      -- the two idle the longest go first; at 7 of 10 stress is off again
      for i = 1, 2 do
        idle[i]:expect_line(R.timeout, 10)
        assert.is_true(idle[i]:closed())
      end
      local took = gateway.now() - t0
      assert.truthy(took <= 1 + SLACK, string.format("idle sessions closed after %.2f s", took))
      gw:wait_log("event=stress state=off sessions=7")
      -- the others are back on the normal wait, the busy one on its line
      for i = 3, 8 do idle[i]:cmd("NOOP", R.ok) end
      busy:send("P\r\n")
      busy:expect_line(R.ok)
      assert.are.equal(2, #gw:wait_log_count("event=timeout [^\n]*stage=command [^\n]*stress=on", 2))
      assert.are.equal(1, #gw:log_lines("event=stress state=on"))
    end)

    it("under stress one error ends the session (hard error limit 1)", function()
      local others = {}
      for i = 1, 8 do others[i] = h.session(gw, { helo = false }) end
      local c = client.connect(gw:port()) -- the 9th of 10: stress on
      gw:wait_log_count("event=stress state=on", 2)
      c:cmd("BOGUS", R.unknown)
      c:expect_line(R.too_many_errors)
      assert.is_true(c:closed())
    end)
  end)
end)
