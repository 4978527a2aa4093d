-- PROXY protocol (README "Scaling out"): connections from proxy_networks
-- must start with a v1 or v2 header, read before the banner within
-- proxy_timeout; every other connection is plain SMTP. Relay control,
-- limits and logs then see the original client. The last block runs
-- Debian's HAProxy (send-proxy-v2, round robin) in front of two gateways.

local gateway = require "harness"
local client = require "smtp_client"
local h = require "helpers"
local socket = require "socket"
local R = h.R

local V2_SIG = "\r\n\r\n\0\r\nQUIT\n"

local function v1(src, sport)
  local proto = src:find(":", 1, true) and "TCP6" or "TCP4"
  local dst = proto == "TCP6" and "::1" or "127.0.0.1"
  return string.format("PROXY %s %s %s %d 25\r\n", proto, src, dst, sport or 40000)
end

local function u16(n) return string.char(math.floor(n / 256), n % 256) end

-- A v2 PROXY header for an IPv6 client 2001:db8::N.
local function v2_inet6(n, sport)
  local src = "\32\1\13\184" .. string.rep("\0", 11) .. string.char(n)
  local dst = string.rep("\0", 15) .. "\1"
  return V2_SIG .. "\33\33" .. u16(36) .. src .. dst .. u16(sport) .. u16(25)
end

local function v2_local()
  return V2_SIG .. "\32\0" .. u16(0)
end

-- Connects from `bind`, sends `header` (in pieces of `step` octets when
-- given) and reads the banner.
local function via_proxy(gw, header, opts)
  opts = opts or {}
  local c = client.connect(gw:port(), { bind = opts.bind or "127.0.0.1", banner = false })
  local step = opts.step or #header
  for i = 1, #header, step do
    assert(c:send(header:sub(i, i + step - 1)))
    if opts.step then socket.sleep(0.01) end
  end
  if opts.after then assert(c:send(opts.after)) end
  c.banner_code, c.banner = c:read_reply()
  return c
end

local function rcpt_reply(c, addr)
  c:ehlo()
  c:cmd("MAIL FROM:<me@example.org>", R.mail_ok)
  local _, text = c:cmd("RCPT TO:<" .. addr .. ">")
  return text
end

describe("PROXY protocol", function()
  local gw
  teardown(h.cleanup)
  after_each(client.close_all)
  setup(function()
    gw = gateway.start { ini_extra = {
      proxy_networks = "127.0.0.1/32",
      proxy_timeout = "1s",
      relay_networks = "10.1.0.0/16",
      max_connections_per_ip = 1,
    } }
  end)

  it("takes the client from a v1 header: logs it and relays by it", function()
    local c = via_proxy(gw, v1("10.1.2.3", 40001))
    assert.are.equal(R.banner, c.banner)
    assert.are.equal(R.rcpt_ok, rcpt_reply(c, "user@other.example"))
    assert.is_truthy(gw:wait_log("event=connect .*client=10%.1%.2%.3:40001 proxy=127%.0%.0%.1:%d+"))
  end)

  it("denies relaying to a client the header says is outside relay_networks", function()
    local c = via_proxy(gw, v1("192.0.2.7", 40002))
    assert.are.equal(R.banner, c.banner)
    assert.are.equal(h.relay_denied("user@other.example"), rcpt_reply(c, "user@other.example"))
  end)

  it("takes an IPv6 client from a v2 header read an octet at a time", function()
    local c = via_proxy(gw, v2_inet6(5, 40003), { step = 1 })
    assert.are.equal(R.banner, c.banner)
    assert.is_truthy(gw:wait_log("event=connect .*client=2001:db8::5:40003 proxy=127%.0%.0%.1"))
  end)

  it("keeps the balancer's own address for a v2 LOCAL header", function()
    local c = via_proxy(gw, v2_local())
    assert.are.equal(R.banner, c.banner)
    c:cmd("QUIT", "^221")
  end)

  it("leaves what follows the header to SMTP, not a byte more or less", function()
    local gw2 = gateway.start { ini_extra = { proxy_networks = "127.0.0.1/32",
      smtp_sync = "no" } }
    local c = via_proxy(gw2, v1("10.1.2.4"), { after = "EHLO pipelined.test\r\n" })
    assert.are.equal(R.banner, c.banner)
    local code = c:read_reply()
    assert.are.equal(250, code)
  end)

  it("counts connections per original client, not per balancer", function()
    local a = via_proxy(gw, v1("192.0.2.10"))
    local b = via_proxy(gw, v1("192.0.2.11"))
    assert.are.equal(R.banner, a.banner)
    assert.are.equal(R.banner, b.banner)
    local again = via_proxy(gw, v1("192.0.2.10"))
    assert.are.equal(R.too_many_conns .. " from 192.0.2.10", again.banner)
  end)

  it("closes a balancer connection that does not start with a header", function()
    local c = client.connect(gw:port(), { bind = "127.0.0.1", banner = false })
    assert(c:send("EHLO not-a-header.test\r\n"))
    assert.is_nil(c:read_reply())
    assert.is_truthy(gw:wait_log("event=proxy_error .*reason=\"not a PROXY protocol header\""))
  end)

  it("closes a balancer connection whose header does not come in time", function()
    local c = client.connect(gw:port(), { bind = "127.0.0.1", banner = false })
    assert(c:send("PROXY TCP4 192.0.2.7"))
    assert.is_nil(c:read_reply(10))
    assert.is_truthy(gw:wait_log("event=proxy_error .*reason=\"no PROXY header in time\""))
  end)

  it("closes on a malformed v1 header", function()
    local c = client.connect(gw:port(), { bind = "127.0.0.1", banner = false })
    assert(c:send("PROXY TCP4 192.0.2.7 127.0.0.1 40000 025\r\n"))
    assert.is_nil(c:read_reply())
    assert.is_truthy(gw:wait_log("event=proxy_error .*reason=\"v1: bad address or port\""))
  end)

  it("does not honour a header from a client outside proxy_networks", function()
    local c = client.connect(gw:port(), { bind = "127.0.0.2" })
    assert.are.equal(R.banner, c.banner)
    local code = c:cmd("PROXY TCP4 10.1.9.9 127.0.0.1 40000 25")
    assert.are.equal(502, code)
    assert.are.equal(h.relay_denied("user@other.example"), rcpt_reply(c, "user@other.example"))
    assert.is_truthy(gw:wait_log("event=connect .*client=127%.0%.0%.2:"))
    assert.is_nil(gw:log():find("client=10%.1%.9%.9"))
  end)
end)

-- ------------------------------------------------------------ HAProxy

local function free_port()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end

local function haproxy_start(dir, port, backends)
  local lines = {
    "global", "  maxconn 100", "  nbthread 1",
    "defaults", "  mode tcp", "  timeout connect 5s", "  timeout client 30s",
    "  timeout server 30s",
    "frontend smtp", "  bind 127.0.0.1:" .. port, "  default_backend gateways",
    "backend gateways", "  balance roundrobin",
  }
  for i, p in ipairs(backends) do
    lines[#lines + 1] = string.format("  server gw%d 127.0.0.1:%d send-proxy-v2", i, p)
  end
  local cfg = dir .. "/haproxy.cfg"
  local f = assert(io.open(cfg, "w"))
  f:write(table.concat(lines, "\n"), "\n")
  f:close()
  local p = assert(io.popen(string.format(
    "haproxy -db -f %s >%s/haproxy.log 2>&1 & echo $!", cfg, dir)))
  local pid = tonumber(p:read("*l"))
  p:close()
  assert(pid, "haproxy did not start")
  local up = gateway.wait_for(function()
    local s = socket.connect("127.0.0.1", port)
    if s then s:close() return true end
    return false
  end, 10)
  assert(up, "haproxy is not listening on " .. port)
  return pid
end

describe("two gateways behind HAProxy with send-proxy-v2", function()
  local gws, pid, dir
  teardown(function()
    if pid then os.execute("kill " .. pid .. " 2>/dev/null") end
    h.cleanup()
  end)
  after_each(client.close_all)
  setup(function()
    gws = {}
    for i = 1, 2 do
      gws[i] = gateway.start { ini_extra = {
        proxy_networks = "127.0.0.1/32",
        relay_networks = "127.0.0.9/32",
        workers = 1,
      } }
    end
    dir = gws[1]:dir()
    local port = free_port()
    pid = haproxy_start(dir, port, { gws[1]:port(), gws[2]:port() })
    gws.front = port
  end)

  it("each gateway sees, logs and relays by the real client", function()
    for _ = 1, 4 do
      local c = client.connect(gws.front, { bind = "127.0.0.9" })
      assert.are.equal(R.banner, c.banner)
      assert.are.equal(R.rcpt_ok, rcpt_reply(c, "user@other.example"))
      c:cmd("QUIT", "^221")
      c:close()
    end
    -- Round robin: each gateway had some of the four, and all four were
    -- logged with the real client and the balancer.
    local pattern = "event=connect [^\n]*client=127%.0%.0%.9:%d+ proxy=127%.0%.0%.1:"
    for i = 1, 2 do
      assert.is_truthy(gws[i]:wait_log_count(pattern, 1))
    end
    local total = gateway.wait_for(function()
      local n = 0
      for i = 1, 2 do
        for _ in gws[i]:log():gmatch(pattern) do n = n + 1 end
      end
      return n == 4
    end, 10)
    assert.is_truthy(total, "not all four sessions logged with the real client")
    local c = client.connect(gws.front, { bind = "127.0.0.10" })
    assert.are.equal(R.banner, c.banner)
    assert.are.equal(h.relay_denied("user@other.example"), rcpt_reply(c, "user@other.example"))
  end)
end)
