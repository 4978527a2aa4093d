-- Issue 12: what [domain:NAME] tls and tls_in mean to the stock scripts on
-- the wire, when the gateway asks for client certificates, and the check
-- that `smtpgw -t`, every start and every reload run (README "Policies":
-- "Stock scripts", "Writing, testing, checking and reloading a policy",
-- "Hot reload"; "gateway.ini": [domain:NAME], ask_client_cert).
--
-- Clients: 127.0.0.2 is an ordinary client, 127.0.0.1 the relay_networks
-- one (relay_networks = 127.0.0.1/32). TLS sessions go through
-- spec/support/tls_client.py; whether the server sends a
-- CertificateRequest is read from `openssl s_client -msg`.

local gateway = require "harness"
local client = require "smtp_client"
local h = require "helpers"
local tlss = require "tls_support"
local ps = require "policy_support"
local R = h.R

local q = gateway.shell_quote
local cmd = ps.cmd

local MUST_TLS = "530 5.7.0 Must issue a STARTTLS command first"

local function need_cert(addr)
  return "550 5.7.1 <" .. addr .. ">: Recipient address rejected: " ..
    "TLS with a verified client certificate required"
end

local INI = {
  relay_domains = "example.test, partner.example",
  relay_networks = "127.0.0.1/32",
}

-- A plaintext session from `ip`: MAIL, then RCPT to addr must get `want`.
local function plain_rcpt(gw, ip, addr, want)
  local c = h.session(gw, { bind = ip })
  c:cmd("MAIL FROM:<sender@example.org>", R.mail_ok)
  c:cmd("RCPT TO:<" .. addr .. ">", want)
  c:cmd("QUIT", R.bye)
  c:close()
end

-- A TLS session (tls: cert, key) with RCPT to addr wanting `want`.
local function tls_rcpt(gw, tls, addr, want)
  ps.session(gw:port(), ps.concat(ps.tls_steps(tls), {
    cmd("MAIL FROM:<sender@example.org>"),
    cmd("RCPT TO:<" .. addr .. ">"),
    cmd("QUIT"),
  }), ps.concat(ps.TLS_WANT, { R.mail_ok, want, R.bye }))
end

-- openssl s_client -msg: did a CertificateRequest arrive, and the output.
local function cert_request(gw)
  local out = tlss.s_client(gw:port(), "-msg -tls1_3")
  assert(out:find("ServerHello", 1, true), "no handshake:\n" .. out)
  return out:find("CertificateRequest", 1, true) ~= nil, out
end

describe("[domain:NAME] tls and tls_in with the stock scripts", function()
  local suite = ps.pki_suite() -- suite.pki: the test PKI

  describe("try.lua, partner at tls = verify only", function()
    local gw
    setup(function()
      gw = ps.start_stock("try", { ini_extra = INI, sections = {
        ["domain:partner.example"] = { tls = "verify" },
        tls = { ca_file = suite.pki.ca.crt },
      } })
    end)
    teardown(function() if gw then gw:stop() end end)

    it("accepts inbound plaintext mail to the partner, from anyone and from a relay client", function()
      plain_rcpt(gw, "127.0.0.2", "user@partner.example", R.rcpt_ok)
      plain_rcpt(gw, "127.0.0.1", "user@partner.example", R.rcpt_ok)
    end)

    it("accepts it over TLS without a client certificate, and asks for none", function()
      tls_rcpt(gw, nil, "user@partner.example", R.rcpt_ok)
      local asked, out = cert_request(gw)
      assert.is_false(asked, out)
    end)

    it("keeps verify as the outbound level (explain)", function()
      local out, err, code = ps.smtpgw("-c " .. q(gw.ini) ..
        " explain --client 127.0.0.2 --rcpt user@partner.example")
      assert.are.equal(0, code, out .. err)
      assert.truthy(out:find("outbound%s+verify%s+decided by client_tls"), out)
      assert.truthy(out:find("rcpt%s+accept%s+decided by rcpt"), out)
      assert.truthy(out:find("clientcert not asked: nothing needs one (ask_client_cert = auto)", 1, true), out)
    end)
  end)

  describe("try.lua, partner at tls_in = encrypt", function()
    local gw
    setup(function()
      gw = ps.start_stock("try", { ini_extra = INI, sections = {
        ["domain:partner.example"] = { tls_in = "encrypt" },
      } })
    end)
    teardown(function() if gw then gw:stop() end end)

    it("refuses plaintext 530 5.7.0, from a relay_networks client too; other domains go on", function()
      plain_rcpt(gw, "127.0.0.2", "user@partner.example", MUST_TLS)
      plain_rcpt(gw, "127.0.0.1", "user@partner.example", MUST_TLS)
      plain_rcpt(gw, "127.0.0.2", "user@example.test", R.rcpt_ok)
    end)

    it("accepts it over TLS without a client certificate", function()
      tls_rcpt(gw, nil, "user@partner.example", R.rcpt_ok)
    end)
  end)

  describe("try.lua, partner at tls_in = verify", function()
    local gw
    setup(function()
      gw = ps.start_stock("try", { ini_extra = INI, sections = {
        ["domain:partner.example"] = { tls = "encrypt", tls_in = "verify" },
        tls = { ca_file = suite.pki.ca.crt },
      } })
    end)
    teardown(function() if gw then gw:stop() end end)

    it("asks for a client certificate (a CertificateRequest) without ask_client_cert", function()
      local asked, out = cert_request(gw)
      assert.is_true(asked, out)
      -- libtls has no call for the list of acceptable CA names
      assert.truthy(out:find("No client certificate CA names sent", 1, true), out)
    end)

    it("accepts a client with a trusted certificate", function()
      tls_rcpt(gw, { cert = suite.pki.client.crt, key = suite.pki.client.key }, "user@partner.example", R.rcpt_ok)
    end)

    it("refuses one without a certificate or with an untrusted one 550 5.7.1, and plaintext 530", function()
      tls_rcpt(gw, nil, "user@partner.example", need_cert("user@partner.example"))
      tls_rcpt(gw, { cert = suite.pki.rogue.crt, key = suite.pki.rogue.key }, "user@partner.example",
        need_cert("user@partner.example"))
      plain_rcpt(gw, "127.0.0.1", "user@partner.example", MUST_TLS)
      tls_rcpt(gw, nil, "user@example.test", R.rcpt_ok)
    end)

    it("says why in explain", function()
      local out, err, code = ps.smtpgw("-c " .. q(gw.ini) ..
        " explain --client 127.0.0.2 --rcpt user@partner.example --tls TLSv1.3")
      assert.are.equal(0, code, out .. err)
      assert.truthy(out:find("section    [domain:partner.example] tls = encrypt tls_in = verify", 1, true), out)
      assert.truthy(out:find("clientcert asked: tls_in = verify in [domain:partner.example]", 1, true), out)
      assert.truthy(out:find("outbound%s+encrypt"), out)
    end)
  end)

  describe("require.lua and require_verify.lua, partner at tls = verify / encrypt", function()
    it("accept TLS mail to the partner without a client certificate, and ask for none", function()
      for _, case in ipairs({ { "require", "verify" }, { "require_verify", "encrypt" } }) do
        local gw = ps.start_stock(case[1], { ini_extra = INI, sections = {
          ["domain:partner.example"] = { tls = case[2] },
          tls = { ca_file = suite.pki.ca.crt },
        } })
        local c = h.session(gw, { bind = "127.0.0.1" }) -- their inbound level: encrypt
        c:cmd("MAIL FROM:<sender@example.org>", MUST_TLS)
        c:close()
        tls_rcpt(gw, nil, "user@partner.example", R.rcpt_ok)
        local asked, out = cert_request(gw)
        assert.is_false(asked, case[1] .. ":\n" .. out)
        gw:stop()
      end
    end)
  end)

  describe("ask_client_cert", function()
    it("= no wins over tls_in = verify; = yes asks with nothing needing it", function()
      local gw = ps.start_stock("try", { ini_extra = INI, sections = {
        ["domain:partner.example"] = { tls_in = "verify" },
        tls = { ca_file = suite.pki.ca.crt, ask_client_cert = "no" },
      } })
      local asked, out = cert_request(gw)
      assert.is_false(asked, out)
      gw:stop()
      gw = ps.start_stock("try", { ini_extra = INI, sections = {
        tls = { ca_file = suite.pki.ca.crt, ask_client_cert = "yes" },
      } })
      asked, out = cert_request(gw)
      assert.is_true(asked, out)
      gw:stop()
    end)
  end)

  describe("a policy whose server_tls may return VERIFY (any case)", function()
    local SCRIPT = ps.lines {
      "local policy = {}",
      "function policy.server_tls(ctx)",
      "  if ctx.client.trusted then return 'VERIFY' end",
      "  return 'May'",
      "end",
      "return policy",
    }

    it("makes the gateway ask for client certificates, and its levels work", function()
      local gw = ps.start_with_script(SCRIPT, { ini_extra = INI, sections = { tls = { ca_file = suite.pki.ca.crt } } })
      local asked, out = cert_request(gw)
      assert.is_true(asked, out)
      -- 127.0.0.2 gets "May": plaintext accepted
      plain_rcpt(gw, "127.0.0.2", "user@example.test", R.rcpt_ok)
      -- 127.0.0.1 gets "VERIFY": a trusted certificate passes
      tls_rcpt(gw, { cert = suite.pki.client.crt, key = suite.pki.client.key }, "user@example.test", R.rcpt_ok)
      local lines = gw:log_lines("event=policy_error")
      assert.are.equal(0, #lines, table.concat(lines, "\n"))
      local e, err, code = ps.smtpgw("-c " .. q(gw.ini) .. " explain --client 127.0.0.2 --rcpt user@example.test")
      assert.are.equal(0, code, e .. err)
      assert.truthy(e:find("clientcert asked: server_tls returns verify (server_tls client 127.0.0.1 " ..
        "(relay_networks) in plaintext)", 1, true), e)
      gw:stop()
    end)
  end)
end)

-- ------------------------------------------------------------------ -t

-- The failing scripts of the check, each with a marker on the line the
-- message must name.
local BAD = {
  {
    name = "server_tls returning a bad value",
    text = ps.lines {
      "local policy = {}",
      "function policy.server_tls(ctx) -- @def",
      "  if ctx.client.trusted then return 'maybe' end",
      "  return 'may'",
      "end",
      "return policy",
    },
    marker = "@def",
    message = 'server_tls returned "maybe", not a level (none, may, encrypt, verify) ' ..
      "(check: server_tls client 127.0.0.1 (relay_networks) in plaintext)",
  },
  {
    name = "client_tls indexing ctx.client",
    text = ps.lines {
      "local gateway = require 'gateway'",
      "local policy = {}",
      "function policy.client_tls(ctx)",
      "  if ctx.client.ip == '10.0.0.1' then -- @index",
      "    return gateway.VERIFY",
      "  end",
      "  return gateway.domain_level(ctx, gateway.MAY)",
      "end",
      "return policy",
    },
    marker = "@index",
    message = "attempt to index field 'client' (a nil value) (check: client_tls " ..
      "<user@partner.example> [domain:partner.example] from <sender@example.org>)",
  },
  {
    name = "a misspelt hook (clinet_tls)",
    text = ps.lines {
      "local policy = {}",
      "function policy.server_tls() return 'may' end",
      "function policy.clinet_tls(ctx) -- @typo",
      "  return 'verify'",
      "end",
      "return policy",
    },
    marker = "@typo",
    message = "clinet_tls is not a hook; did you mean client_tls?",
  },
  {
    name = "a verdict that is no verdict, only for a trusted client certificate",
    text = ps.lines {
      "local policy = {}",
      "function policy.rcpt(ctx) -- @rcpt",
      "  if ctx.tls.peer == 'trusted' then return { action = 'refuse' } end",
      "  return 'accept'",
      "end",
      "return policy",
    },
    marker = "@rcpt",
    message = 'rcpt returned a bad verdict (action "refuse", code 0) (check: rcpt <user@partner.example> ' ..
      "[domain:partner.example] client 192.0.2.10 over TLS, client certificate trusted)",
  },
  {
    name = "an endless loop, stopped by the budget",
    text = ps.lines {
      "local policy = {}",
      "function policy.mail(ctx)",
      "  while ctx.sender == '' do end -- @loop",
      "  return 'accept'",
      "end",
      "return policy",
    },
    marker = "@loop",
    message = "mail budget exceeded (max_instructions) (check: mail from <> client 192.0.2.10 in plaintext)",
  },
}

describe("smtpgw -t runs the policy", function()
  local dir
  before_each(function() dir = gateway.mktempdir() end)
  after_each(function() gateway.rm_rf(dir) end)

  local function check(text)
    return ps.check_script(dir, text, INI, { ["domain:partner.example"] = { tls = "verify" } })
  end

  for _, bad in ipairs(BAD) do
    it("fails on " .. bad.name .. " with FILE:LINE: message", function()
      local out, err, code, script, took = check(bad.text)
      assert.are.equal(1, code, out .. err)
      local want = script .. ":" .. ps.line_of(bad.text, bad.marker) .. ": " .. bad.message .. "\n"
      assert.are.equal(want, err)
      assert.are.equal("", out)
      assert(took < 5, "-t took " .. took .. " s")
    end)
  end

  it("fails at max_memory on a hook that grows a module table call by call, in bounded time", function()
    local text = ps.lines {
      "local kept = {}",
      "local policy = {}",
      "function policy.rcpt(ctx)",
      "  kept[#kept + 1] = string.rep('x', 1024 * 1024) .. #kept -- @grow",
      "  return 'accept'",
      "end",
      "return policy",
    }
    local out, err, code, script, took = ps.check_script(dir, text, INI, { policy = { max_memory = "16M" } })
    assert.are.equal(1, code, out .. err)
    local want = script .. ":" .. ps.line_of(text, "@grow") .. ": "
    assert.are.equal(want, err:sub(1, #want), err)
    assert.truthy(err:find("budget exceeded (max_memory)", 1, true) or err:find("not enough memory", 1, true), err)
    assert(took < 5, "-t took " .. took .. " s")
  end)

  it("passes on each stock script with tls and tls_in sections, and on names starting with _", function()
    for _, name in ipairs({ "try", "require", "require_verify" }) do
      local ini = dir .. "/gateway.ini"
      gateway.write_file(ini, gateway.ini_text(INI, {
        policy = { script = ps.stock(name) },
        ["domain:partner.example"] = { tls = "verify", tls_in = "verify" },
        ["domain:.sub.example"] = { tls = "NONE", tls_in = "Encrypt" },
      }))
      local out, err, code = ps.smtpgw("-c " .. q(ini) .. " -t")
      assert.are.equal(0, code, name .. ": " .. out .. err)
    end
    local out, err, code = check("return { _version = 2, rcpt = function() return 'accept' end }\n")
    assert.are.equal(0, code, out .. err)
  end)

  it("refuses tls_in values other than encrypt and verify with FILE:LINE", function()
    local ini = dir .. "/gateway.ini"
    gateway.write_file(ini, "[domain:partner.example]\ntls_in = may\n")
    local out, err, code = ps.smtpgw("-c " .. q(ini) .. " -t")
    assert.are.equal(1, code, out .. err)
    assert.are.equal(ini .. ":2: tls_in: 'may' is not encrypt or verify (leave tls_in out for no requirement)\n", err)
  end)
end)

-- ------------------------------------------------------------------ reload

describe("a reload that fails the check", function()
  teardown(function()
    client.close_all()
    ps.stop_all()
    h.cleanup()
  end)

  it("leaves the old policy in charge, and `smtpgw reload` prints FILE:LINE", function()
    local GOOD = ps.lines {
      "local gateway = require 'gateway'",
      "local policy = {}",
      "function policy.rcpt(ctx)",
      "  if ctx.recipient == 'probe@example.test' then",
      "    return gateway.reject(550, '5.7.1 probe refused by the old policy')",
      "  end",
      "  return gateway.accept()",
      "end",
      "return policy",
    }
    local gw, script = ps.start_with_script(GOOD, { ini_extra = INI, sections = {
      ["domain:partner.example"] = { tls = "verify" },
    } })
    local function probe()
      plain_rcpt(gw, "127.0.0.2", "probe@example.test", "550 5.7.1 probe refused by the old policy")
    end
    probe()
    for _, bad in ipairs(BAD) do
      ps.write_script(script, bad.text)
      local out, err, code = ps.smtpgw("-c " .. q(gw.ini) .. " reload")
      assert.are.equal(1, code, bad.name .. ": " .. out .. err)
      local want = "reload: failed: " .. script .. ":" .. ps.line_of(bad.text, bad.marker) .. ": " ..
        bad.message .. "\n"
      assert.are.equal(want, err)
      probe()
    end
    assert.are.equal(#BAD, #gw:log_lines("event=reload status=failed"))
    assert.are.equal(0, #gw:log_lines("event=reload status=ok"))
    assert.are.equal(0, #gw:log_lines("event=policy_error"))
    assert.is_true(gw:alive())
  end)
end)
