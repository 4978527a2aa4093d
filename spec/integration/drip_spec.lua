-- Issue 10's acceptance for slots and deadlines: 1 000 connections from 50
-- loopback addresses (127.0.0.2 ... 127.0.0.51) dripping an octet every 2 s
-- (in command mode, as junk without a line end, and inside DATA) take every
-- slot internet clients may have, and each is closed within its deadline
-- (command_timeout from its first octet; data_timeout from the 354), while
-- a relay_networks client (127.0.0.1) still gets its mail through on the
-- reserved slots. The clients are spec/support/drip_clients.py (one epoll
-- loop); the gateway runs with its default 2+ workers, so the slots are
-- counted across them.

local gateway = require "harness"
local h = require "helpers"
local procs = require "procs"
local tools = require "tools"
local json = require "dkjson"
local R = h.R

local COUNT, ADDRS, EVERY = 1000, 50, 2
local COMMAND_TIMEOUT, DATA_TIMEOUT = 6, 8
-- What 1 000 sessions on a loaded, sanitized build may add to a deadline.
local SLACK = 3

describe("1 000 dripping connections", function()
  local gw, drip, dir
  teardown(function()
    procs.stop_all()
    h.cleanup()
    if dir then gateway.rm_rf(dir) end
  end)

  setup(function()
    gw = gateway.start { ini_extra = {
      relay_networks = "127.0.0.1/32",
      max_connections = 1000, -- 5 % (50) reserved for relay_networks
      command_timeout = COMMAND_TIMEOUT .. "s",
      data_timeout = DATA_TIMEOUT .. "s",
      data_rate_window = "2s",
      stress_timeout = "4s",
    } }
    dir = gateway.mktempdir()
  end)

  it("are all closed within their deadlines while a relay client's mail gets through", function()
    -- the clients and the gateway each raise their soft limit to the hard one
    local hard = tonumber((gateway.run("ulimit -Hn")):match("%d+") or "") or math.huge
    assert(hard >= COUNT + 100, "RLIMIT_NOFILE hard limit " .. hard ..
      " is too low for " .. COUNT .. " client sockets")
    local out, ready = dir .. "/drip.json", dir .. "/ready"
    drip = procs.start({ tools.PYTHON, tools.SUPPORT .. "/drip_clients.py",
      "--port", tostring(gw:port()), "--count", tostring(COUNT),
      "--first", "2", "--addrs", tostring(ADDRS), "--every", tostring(EVERY),
      "--limit", "45", "--ready", ready, "--out", out }, { dir = dir })
    assert(gateway.wait_for(function()
      return gateway.exists(ready) or drip:done()
    end, 30), "the drip clients never all got a banner or a refusal")
    assert.is_nil(drip:done(), "drip clients ended early: " ..
      tostring(gateway.read_file(drip.err)))

    -- every internet slot is taken: the relay client uses the reserve
    local relay = h.session(gw, { bind = "127.0.0.1" })
    local qid = h.deliver(relay, "me@example.org", { "user@elsewhere.example" },
      h.message("through the reserve"))
    relay:cmd("QUIT", R.bye)
    local relayed_at = gateway.now()
    assert.is_not_nil(gw:queue_file(qid))

    assert(gateway.wait_for(function() return drip:done() end, 60),
      "the drip clients did not finish")
    local result = assert(json.decode(gateway.read_file(out) or ""),
      "no result from the drip clients: " .. tostring(gateway.read_file(drip.err)))

    local refused, admitted, late, open, wrong = 0, 0, {}, {}, {}
    local first_close, worst = math.huge, 0
    for _, c in ipairs(result.conns) do
      if c.refused ~= json.null and c.refused then
        refused = refused + 1
        assert.are.equal(R.too_many_conns, c.refused)
      else
        admitted = admitted + 1
        if c.closed == json.null or not c.closed then
          open[#open + 1] = c.ip .. " " .. c.mode
        else
          local bound = c.mode == "data" and DATA_TIMEOUT or COMMAND_TIMEOUT
          local took = c.closed - c.start
          worst = math.max(worst, took)
          first_close = math.min(first_close, c.closed)
          if took > bound + SLACK then
            late[#late + 1] = string.format("%s %s %.1f s", c.ip, c.mode, took)
          end
          if not tostring(c.last):find("^421 4%.4%.2 ") then
            wrong[#wrong + 1] = c.ip .. " " .. c.mode .. ": " .. tostring(c.last)
          end
        end
      end
    end
    print(string.format("# drip: %d admitted, %d refused, slowest close %.1f s " ..
      "after its deadline began", admitted, refused, worst))
    assert.are.equal(COUNT, admitted + refused)
    -- internet clients stop at max_connections - 50 reserved
    assert.truthy(admitted >= 950 and refused >= 1,
      admitted .. " admitted, " .. refused .. " refused")
    assert.are.same({}, open)
    assert.are.same({}, late)
    assert.are.same({}, wrong)
    -- the mail went through while the drippers held their slots
    assert.truthy(relayed_at < first_close, string.format(
      "relayed %.1f s after the first dripper was closed", relayed_at - first_close))
    -- the refusals are logged without a flood: one line per worker and
    -- 10 s, then a count of those not logged one by one
    local function logged()
      local lines, n = gw:log_lines("event=refused reason=reserved_connections"), 0
      for _, l in ipairs(lines) do
        n = n + (tonumber(l:match("suppressed=(%d+)")) or 1)
      end
      return n, lines
    end
    assert.is_true(gateway.wait_for(function() return logged() == refused end, 15),
      "refusals logged or counted: " .. logged() .. " of " .. refused)
    local _, lines = logged()
    assert.truthy(#lines <= 8, table.concat(lines, "\n"))
  end)
end)
