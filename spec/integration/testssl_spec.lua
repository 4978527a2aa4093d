-- testssl.sh (Debian's testssl.sh, run as `testssl`) against the gateway's
-- STARTTLS: no protocol below TLS 1.2, no cipher it rates weak.

local gateway = require "harness"
local q = gateway.shell_quote

describe("testssl --starttls smtp", function()
  local gw

  teardown(function()
    if gw then gw:stop() end
    gateway.cleanup()
  end)

  it("finds only TLS 1.2 and 1.3 and nothing rated low or worse", function()
    gw = gateway.start()
    local json = gw:dir() .. "/testssl.json"
    local out, code = gateway.run("timeout 300 testssl --quiet --color 0 --warnings off" ..
      " --nodns none --starttls smtp -p -s -f --jsonfile " .. q(json) ..
      " 127.0.0.1:" .. gw:port() .. " >/dev/null 2>&1")
    assert(code == 0, "testssl exited " .. tostring(code) .. ": " .. tostring(out))
    local text = assert(gateway.read_file(json), "no testssl JSON")
    local findings = {}
    -- One object per line: {"id":"...", ..., "severity":"...", "finding":"..."}
    for obj in text:gmatch("%b{}") do
      local id = obj:match('"id"%s*:%s*"([^"]*)"')
      local sev = obj:match('"severity"%s*:%s*"([^"]*)"')
      local finding = obj:match('"finding"%s*:%s*"([^"]*)"')
      if id then findings[id] = { sev = sev, finding = finding } end
    end
    for _, old in ipairs({ "SSLv2", "SSLv3", "TLS1", "TLS1_1" }) do
      assert.truthy(findings[old], "no finding for " .. old)
      assert.are.equal("not offered", findings[old].finding, old)
    end
    assert.truthy(findings.TLS1_2.finding:find("^offered"), findings.TLS1_2.finding)
    assert.truthy(findings.TLS1_3.finding:find("^offered"), findings.TLS1_3.finding)
    assert.are.equal("offered", findings.cipherlist_STRONG.finding)
    local bad = {}
    for id, f in pairs(findings) do
      if f.sev == "LOW" or f.sev == "MEDIUM" or f.sev == "HIGH" or f.sev == "CRITICAL" then
        bad[#bad + 1] = id .. " " .. f.sev .. ": " .. tostring(f.finding)
      end
    end
    assert.are.same({}, bad)
  end)
end)
