-- The outbound TLS client configs (README "TLS", `tls-probe`), against a
-- real STARTTLS receiver that is not smtpgw: Python's ssl module (OpenSSL)
-- in spec/support/smtp_receiver.py.

local gateway = require "harness"
local procs = require "procs"
local tls = require "tls_support"
local tools = require "tools"
local q = gateway.shell_quote

describe("tls-probe: outbound client configs", function()
  local dir, pki, selfsigned

  -- A receiver with `args`; returns its port.
  local function receiver(args)
    local p = procs.start(q(tools.PYTHON) .. " " .. q(tools.SUPPORT .. "/smtp_receiver.py") ..
      " --maildir " .. q(dir .. "/mail") .. " " .. args, { ready = "listening (%d+)" })
    return tonumber(p.ready[1])
  end

  -- Runs tls-probe with a config whose ca_file is the test CA.
  local function probe(port, extra)
    local ini = dir .. "/probe.ini"
    gateway.write_file(ini, "[gateway]\nhostname = probe.test.example\n" ..
      "listen = 127.0.0.1:0\n[tls]\nca_file = " .. pki.ca.crt .. "\n")
    return gateway.run(q(gateway.bin()) .. " -c " .. q(ini) ..
      " tls-probe 127.0.0.1:" .. port .. " " .. (extra or ""))
  end

  setup(function()
    dir = gateway.mktempdir()
    pki = tls.make_pki(dir .. "/pki") -- a: a.test.example, signed by pki.ca
    selfsigned = tls.self_signed(dir .. "/pki", "selfsigned",
      { cn = "selfsigned.test", san = "DNS:selfsigned.test" })
  end)

  teardown(function()
    procs.stop_all()
    os.execute("rm -rf " .. q(dir))
  end)

  it("encrypt: TLS with a self-signed certificate, nothing checked", function()
    local port = receiver("--cert " .. q(selfsigned.crt) .. " --key " .. q(selfsigned.key))
    local out, code = probe(port, "--level encrypt --name selfsigned.test")
    assert.are.equal(0, code, out)
    assert.truthy(out:find("Untrusted TLS connection established to 127.0.0.1:" ..
      port .. ": TLSv1.3 with cipher ", 1, true), out)
  end)

  it("verify: a self-signed certificate fails the chain check", function()
    local port = receiver("--cert " .. q(selfsigned.crt) .. " --key " .. q(selfsigned.key))
    local out, code = probe(port, "--level verify --name selfsigned.test")
    assert.are.equal(1, code, out)
    assert.truthy(out:find("failed: certificate verification failed", 1, true), out)
  end)

  it("verify: a certificate from the test CA with the right name verifies", function()
    local port = receiver("--cert " .. q(pki.a.crt) .. " --key " .. q(pki.a.key))
    local out, code = probe(port, "--level verify --name a.test.example --repeat 2")
    assert.are.equal(0, code, out)
    local _, n = out:gsub("Verified TLS connection established to 127%.0%.0%.1:" ..
      port .. ": TLSv1%.[23] with cipher %S+ resumed=%a+", "")
    assert.are.equal(2, n, out)
  end)

  it("verify: a name mismatch fails", function()
    local port = receiver("--cert " .. q(pki.a.crt) .. " --key " .. q(pki.a.key))
    local out, code = probe(port, "--level verify --name other.test")
    assert.are.equal(1, code, out)
    assert.truthy(out:find("name `other.test' not present in server certificate", 1, true), out)
  end)

  it("a server that does not offer STARTTLS is reported, not used in plaintext", function()
    local port = receiver("--no-starttls")
    local out, code = probe(port, "--level encrypt")
    assert.are.equal(1, code, out)
    assert.truthy(out:find("STARTTLS not offered", 1, true), out)
  end)

  it("a broken handshake is a failure with its reason", function()
    local port = receiver("--break-tls --cert " .. q(pki.a.crt) .. " --key " .. q(pki.a.key))
    local out, code = probe(port, "--level encrypt")
    assert.are.equal(1, code, out)
    assert.truthy(out:find("TLS to 127.0.0.1:" .. port .. " failed: ", 1, true), out)
  end)
end)
