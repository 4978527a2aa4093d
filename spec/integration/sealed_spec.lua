-- make check runs the specs in a network namespace that has only `lo`
-- (spec/run.sh): nothing a spec starts can reach a packet off the machine.
-- Where the run could not be sealed (not root), these are pending and
-- run.sh has printed a warning.
local socket = require("socket")

local sealed = os.getenv("SMTPGW_SEALED") == "1"

describe("the spec run's network", function()
  if not sealed then
    pending("not sealed (needs root): see the warning at the top of the run")
    return
  end

  it("has no interface but lo", function()
    local p = assert(io.popen("ip -o link show"))
    local names = {}
    for line in p:lines() do
      names[#names + 1] = line:match("^%d+:%s*([^:@]+)")
    end
    p:close()
    assert.same({ "lo" }, names)
  end)

  it("cannot reach an address off the machine, v4 or v6", function()
    for _, addr in ipairs({ { "192.0.2.1", 53, socket.udp }, { "8.8.8.8", 53, socket.tcp },
                            { "2001:db8::1", 53, socket.tcp6 } }) do
      local s = assert(addr[3]())
      s:settimeout(2)
      local ok, err
      if addr[3] == socket.udp then
        ok, err = s:setpeername(addr[1], addr[2])
        if ok then ok, err = s:send("x") end
      else
        ok, err = s:connect(addr[1], addr[2])
      end
      s:close()
      assert.is_nil(ok, addr[1] .. " was reachable")
      assert.truthy(tostring(err):find("unreachable"), addr[1] .. ": " .. tostring(err))
    end
  end)

  it("still has loopback, v4 and v6", function()
    for _, a in ipairs({ { socket.tcp, "127.0.0.1" }, { socket.tcp6, "::1" } }) do
      local srv = assert(a[1]())
      assert(srv:bind(a[2], 0))
      assert(srv:listen(1))
      local _, port = srv:getsockname()
      local c = assert(a[1]())
      c:settimeout(2)
      assert(c:connect(a[2], port))
      c:close()
      srv:close()
    end
  end)
end)
