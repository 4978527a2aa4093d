-- Self-test of the spec harness (spec/support): the checks every other spec
-- relies on must be able to fail.

local gateway = require "harness"
local client = require "smtp_client"
local h = require "helpers"

describe("harness", function()
  after_each(h.cleanup)

  it("builds gateway.ini from defaults and overrides", function()
    local text = gateway.ini_text { relay_networks = "10.0.0.0/8", max_errors = 3,
      hostname = false }
    assert.truthy(text:find("^%[gateway%]\n"))
    assert.truthy(text:find("\nlisten = 127.0.0.1:0\n", 1, true))
    assert.truthy(text:find("\nrelay_networks = 10.0.0.0/8\n", 1, true))
    assert.truthy(text:find("\nmax_errors = 3\n", 1, true))
    assert.falsy(text:find("hostname", 1, true))
  end)

  it("parses a queue file", function()
    local env, body = gateway.parse_queue_file(
      "smtpgw-queue-file: 1\nid: 00ff\nsender: <a@b>\nrcpt: <c@d>\nrcpt: <e@f>\n\n" ..
      "Received: from x\r\n\tby y; id 00ff\r\nSubject: s\r\n\r\nbody\r\n")
    assert.are.equal("00ff", env.id)
    assert.are.same({ "<c@d>", "<e@f>" }, env.rcpt)
    assert.are.equal("from x by y; id 00ff", gateway.header(body, "received"))
    assert.are.equal("s", gateway.header(body, "Subject"))
  end)

  it("stop() raises when the log holds a sanitizer report", function()
    local gw = gateway.start()
    local f = assert(io.open(gw.logfile, "a"))
    f:write("==1==ERROR: AddressSanitizer: heap-use-after-free (injected by the harness test)\n")
    f:close()
    local ok, err = pcall(gw.stop, gw)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("sanitizer report", 1, true), tostring(err))
    assert.is_false(gw:alive())
    gateway.rm_rf(gw:dir())
  end)

  it("stop() raises when the gateway died by itself", function()
    local gw = gateway.start()
    gateway.run("kill -KILL " .. gw.pid)
    assert.truthy(gateway.wait_for(function() return not gw:alive() end, 10))
    local ok, err = pcall(gw.stop, gw)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("exited by itself", 1, true), tostring(err))
    gateway.rm_rf(gw:dir())
  end)

  it("start() fails with the log when the binary exits early", function()
    local ok, err = pcall(gateway.start, { raw_ini = "[gateway]\nlisten = nonsense\n" })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("before listening", 1, true), tostring(err))
  end)

  it("the client sees a closed connection and a timeout", function()
    local gw = gateway.start()
    local c = client.connect(gw:port())
    local code, err = c:read_reply(0.3)
    assert.is_nil(code)
    assert.are.equal("timeout", err)
    c:cmd("QUIT", h.R.bye)
    assert.is_true(c:closed())
    assert.is_nil(c:read_reply(0.1))
  end)
end)
