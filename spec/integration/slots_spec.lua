-- Connection slots (README "Connection limits"): per-client limits by
-- prefix, the per-client connection rate limit, the slots reserved for
-- relay_networks clients, and refusals logged without flooding. Real
-- sockets bound to 127.x addresses; the IPv6 /64 logic, which loopback
-- cannot show (only ::1), is proven by spec/c/test_limits.c.

local gateway = require "harness"
local client = require "smtp_client"
local h = require "helpers"
local R = h.R

local function from(ip)
  return R.too_many_conns .. " from " .. ip
end

-- Connects from `ip` and returns the client and the first reply's text.
local function try(gw, ip)
  local c = client.connect(gw:port(), { bind = ip, banner = false })
  local _, text = c:read_reply()
  return c, text
end

local function refused(gw, ip, want)
  local c, text = try(gw, ip)
  assert.are.equal(want, text)
  c:read_line(5) -- the gateway closes after its 421
  assert.is_true(c:closed())
  c:close()
end

describe("slots", function()
  teardown(h.cleanup)
  after_each(client.close_all)

  describe("gateway.ini", function()
    local dirs = {}
    after_each(function()
      for _, d in ipairs(dirs) do gateway.rm_rf(d) end
      dirs = {}
    end)

    local function check(lines)
      local out, code, path, dir = gateway.check_config(
        "[gateway]\nlisten = 127.0.0.1:0\n" .. table.concat(lines, "\n") .. "\n")
      dirs[#dirs + 1] = dir
      assert.is_nil(gateway.sanitizer_report(out), out)
      return out, code, path
    end

    it("-t accepts the slot keys", function()
      local out, code = check({ "client_prefix_v4 = 24", "client_prefix_v6 = 48",
        "client_connection_rate_limit = 30", "reserved_connections = 10%" })
      assert.are.equal(0, code, out)
      out, code = check({ "max_connections = 100", "reserved_connections = 20" })
      assert.are.equal(0, code, out)
    end)

    it("refuses a reserve that leaves internet clients nothing, naming the line", function()
      local out, code, path = check({ "max_connections = 10", "reserved_connections = 10" })
      assert.are.equal(1, code, out)
      assert.truthy(out:find(path .. ":4: reserved_connections", 1, true), out)
      out, code = check({ "reserved_connections = 100%" })
      assert.are.equal(1, code, out)
      assert.truthy(out:find(":3: reserved_connections", 1, true), out)
    end)

    it("refuses prefixes out of range", function()
      local out, code = check({ "client_prefix_v4 = 33" })
      assert.are.equal(1, code, out)
      assert.truthy(out:find(":3: client_prefix_v4", 1, true), out)
      out, code = check({ "client_prefix_v6 = 129" })
      assert.are.equal(1, code, out)
    end)
  end)

  describe("client_prefix_v4 = 24, max_connections_per_ip = 2", function()
    local gw
    teardown(h.cleanup)
    setup(function()
      gw = gateway.start { ini_extra = { client_prefix_v4 = 24,
        max_connections_per_ip = 2, relay_networks = "127.0.1.9/32" } }
    end)

    it("counts 127.0.1.1 and 127.0.1.2 as one client", function()
      local a = client.connect(gw:port(), { bind = "127.0.1.1" })
      local b = client.connect(gw:port(), { bind = "127.0.1.2" })
      assert.are.equal(R.banner, a.banner)
      assert.are.equal(R.banner, b.banner)
      refused(gw, "127.0.1.3", from("127.0.1.3"))
      local line = gw:wait_log("[^\n]*event=refused reason=max_connections_per_ip[^\n]*")
      assert.truthy(line:find("client=127.0.1.3:", 1, true), line)
      assert.truthy(line:find("prefix=127.0.1.0/24", 1, true), line)
      -- another /24 is another client
      local d = client.connect(gw:port(), { bind = "127.0.2.1" })
      assert.are.equal(R.banner, d.banner)
      -- a relay_networks client inside the full /24 has no per-client limit
      local e = client.connect(gw:port(), { bind = "127.0.1.9" })
      assert.are.equal(R.banner, e.banner)
      -- one of the two leaves: the /24 is served again
      a:cmd("QUIT", R.bye)
      a:close()
      assert.is_true(gateway.wait_for(function()
        local c, text = try(gw, "127.0.1.4")
        c:close()
        return text == R.banner
      end, 10, 0.2))
      b:cmd("NOOP", R.ok)
    end)
  end)

  describe("client_connection_rate_limit = 3", function()
    local gw
    teardown(h.cleanup)
    setup(function()
      gw = gateway.start { ini_extra = { client_connection_rate_limit = 3,
        relay_networks = "127.0.3.200/32", workers = 2 } }
    end)

    it("refuses the 4th connection within a minute, every other client unaffected", function()
      for _ = 1, 3 do
        local c = client.connect(gw:port(), { bind = "127.0.3.1" })
        assert.are.equal(R.banner, c.banner)
        c:cmd("QUIT", R.bye)
        c:close()
      end
      for _ = 1, 3 do refused(gw, "127.0.3.1", from("127.0.3.1")) end
      local other = client.connect(gw:port(), { bind = "127.0.3.2" })
      assert.are.equal(R.banner, other.banner)
      for _ = 1, 6 do -- relay_networks clients are exempt
        local c = client.connect(gw:port(), { bind = "127.0.3.200" })
        assert.are.equal(R.banner, c.banner)
        c:close()
      end
    end)

    it("logs identical refusals once per worker, then how many it did not log", function()
      -- each of the 2 workers throttles its own lines: 3 refusals give 1 or
      -- 2 full lines, and the rest are counted in a suppressed=N line
      local function lines()
        return gw:log_lines("event=refused reason=client_connection_rate_limit")
      end
      local function accounted()
        local n = 0
        for _, l in ipairs(lines()) do
          n = n + (tonumber(l:match("suppressed=(%d+)")) or 1)
        end
        return n
      end
      assert.is_true(gateway.wait_for(function() return accounted() == 3 end, 25),
        table.concat(lines(), "\n"))
      local full = 0
      for _, l in ipairs(lines()) do
        assert.truthy(l:find("prefix=127.0.3.1/32", 1, true), l)
        if not l:find("suppressed=", 1, true) then
          full = full + 1
          assert.truthy(l:find("client=127.0.3.1:", 1, true), l)
        end
      end
      assert.is_true(full >= 1 and full <= 2, table.concat(lines(), "\n"))
    end)
  end)

  describe("max_connections = 10, reserved_connections = 3", function()
    local gw
    teardown(h.cleanup)
    setup(function()
      gw = gateway.start { ini_extra = { max_connections = 10,
        reserved_connections = 3, relay_networks = "127.0.5.250/32" } }
    end)

    it("internet clients get 7 slots; a relay_networks client still gets its mail through", function()
      local held = {}
      for i = 1, 7 do
        held[i] = client.connect(gw:port(), { bind = "127.0.5." .. i })
        assert.are.equal(R.banner, held[i].banner)
      end
      refused(gw, "127.0.5.8", R.too_many_conns)
      gw:wait_log("event=refused reason=reserved_connections client=127.0.5.8:")
      local relay = h.session(gw, { bind = "127.0.5.250" })
      local qid = h.deliver(relay, "me@example.org", { "user@elsewhere.example" },
        h.message("through the reserve"))
      assert.is_not_nil(gw:queue_file(qid))
      -- the reserve holds 3 relay sessions, then nobody gets in
      local more = {}
      for i = 1, 2 do
        more[i] = client.connect(gw:port(), { bind = "127.0.5.250" })
        assert.are.equal(R.banner, more[i].banner)
      end
      refused(gw, "127.0.5.250", R.too_many_conns)
      gw:wait_log("event=refused reason=max_connections client=127.0.5.250:")
      for _, c in ipairs(held) do c:cmd("NOOP", R.ok) end
    end)
  end)

  describe("across 2 workers", function()
    local gw
    teardown(h.cleanup)
    setup(function()
      gw = gateway.start { ini_extra = { workers = 2, max_connections = 4,
        reserved_connections = 0, max_connections_per_ip = 2, client_prefix_v4 = 24,
        relay_networks = "127.0.7.250/32" } }
    end)

    -- The worker process that serves client c (its local port is unique).
    local function server_pid(c)
      local _, port = c.sock:getsockname()
      local out = gateway.run("ss -tnpH state established '( dport = :" ..
        port .. " )'")
      return tonumber(out:match("pid=(%d+)"))
    end

    local function open(ips)
      local cs, pids, distinct = {}, {}, 0
      for i, ip in ipairs(ips) do
        cs[i] = client.connect(gw:port(), { bind = ip })
        assert.are.equal(R.banner, cs[i].banner)
        local pid = server_pid(cs[i])
        assert.is_not_nil(pid, "no server process for " .. ip)
        if not pids[pid] then distinct = distinct + 1 end
        pids[pid] = (pids[pid] or 0) + 1
      end
      return cs, pids, distinct
    end

    local function close_all(cs)
      for _, c in ipairs(cs) do c:cmd("QUIT", R.bye) c:close() end
      assert.is_true(gateway.wait_for(function()
        local c, text = try(gw, "127.0.9.9")
        c:close()
        return text == R.banner
      end, 10, 0.2))
    end

    it("max_connections and max_connections_per_ip hold across workers, not twice over", function()
      local ips = { "127.0.6.1", "127.0.6.2", "127.0.8.1", "127.0.8.2" }
      local cs, _, distinct
      for _ = 1, 10 do -- until both workers hold some of the four
        cs, _, distinct = open(ips)
        if distinct == 2 then break end
        close_all(cs)
      end
      assert.are.equal(2, distinct, "every connection went to one worker")
      refused(gw, "127.0.9.1", R.too_many_conns)
      cs[4]:cmd("QUIT", R.bye)
      cs[4]:close()
      assert.is_true(gateway.wait_for(function()
        local c, text = try(gw, "127.0.6.3") -- the /24 holds 2 already
        c:close()
        return text == from("127.0.6.3")
      end, 10, 0.2))
      close_all({ cs[1], cs[2], cs[3] })
    end)

    it("a worker killed with -9 gives its slots back", function()
      local cs, pids = open({ "127.0.10.1", "127.0.11.1", "127.0.12.1", "127.0.13.1" })
      refused(gw, "127.0.9.2", R.too_many_conns)
      local victim = server_pid(cs[1])
      local held = pids[victim]
      gateway.run("kill -KILL " .. victim)
      gw:wait_log("event=connections_freed msg=\"" .. held .. " connection slot")
      -- exactly the dead worker's slots are free again
      local fresh = {}
      for i = 1, held do
        fresh[i] = client.connect(gw:port(), { bind = "127.0." .. (20 + i) .. ".1" })
        assert.are.equal(R.banner, fresh[i].banner)
      end
      refused(gw, "127.0.9.3", R.too_many_conns)
      for _, c in ipairs(cs) do
        if server_pid(c) then c:cmd("NOOP", R.ok) end
      end
    end)
  end)

  describe("IPv6: client_prefix_v6 = 64, max_connections_per_ip = 1", function()
    teardown(h.cleanup)

    it("counts ::1 by its /64 and names the prefix", function()
      if not client.have_ipv6() then
        pending("::1 is not available on this machine")
        return
      end
      local gw = gateway.start { ini_extra = { listen = "[::1]:0",
        max_connections_per_ip = 1, relay_networks = "127.0.0.1/32" } }
      local a = client.connect(gw:port(), { host = "::1" })
      assert.are.equal(R.banner, a.banner)
      local b = client.connect(gw:port(), { host = "::1", banner = false })
      local _, text = b:read_reply()
      assert.are.equal(from("::1"), text)
      local line = gw:wait_log("[^\n]*event=refused reason=max_connections_per_ip[^\n]*")
      assert.truthy(line:find("prefix=::/64", 1, true), line)
      a:cmd("NOOP", R.ok)
    end)
  end)

  describe("reload", function()
    local gw
    teardown(h.cleanup)
    setup(function()
      gw = gateway.start { ini_extra = { max_connections = 3, reserved_connections = 0,
        relay_networks = "127.0.0.250/32" } }
    end)

    local function reload(extra)
      local n = #gw:log_lines("event=reload status=ok")
      gateway.write_file(gw.ini, gateway.ini_text(extra))
      gw:signal("HUP")
      gw:wait_log_count("event=reload status=ok", n + 1)
    end

    it("counts old and new workers' sessions together, and never past the table made at start", function()
      local held = {}
      for i = 1, 2 do
        held[i] = client.connect(gw:port(), { bind = "127.0.15." .. i })
        assert.are.equal(R.banner, held[i].banner)
      end
      -- the workers holding these two retire; new ones take over
      reload({ listen = gw:addr(), max_connections = 2, reserved_connections = 0,
        relay_networks = "127.0.0.250/32" })
      refused(gw, "127.0.15.3", R.too_many_conns)
      -- above the start value: logged, and the table's 3 slots stay the limit
      reload({ listen = gw:addr(), max_connections = 10, reserved_connections = 0,
        relay_networks = "127.0.0.250/32" })
      gw:wait_log("max_connections above 3 %(the connection table made at start%) " ..
        "takes effect at the next restart")
      local third = client.connect(gw:port(), { bind = "127.0.15.4" })
      assert.are.equal(R.banner, third.banner)
      refused(gw, "127.0.15.5", R.too_many_conns)
      for _, c in ipairs(held) do c:cmd("NOOP", R.ok) end
    end)
  end)
end)
