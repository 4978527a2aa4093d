-- The certificate store (README "TLS", "Certificates"): [tls] certificate
-- lines (certbot's live/ layout), cert_dir pairs, the errors `-t` and a
-- reload give for a bad store (FILE:LINE, the files, what is wrong), the
-- Default Cert only when nothing is configured, and ca_file where verify
-- can be used. What is served is read back with openssl s_client.

local gateway = require "harness"
local tls = require "tls_support"
local h = require "helpers"
local ds = require "delivery_support"

local q = gateway.shell_quote
local sh = tls.sh
local smtpgw, line_of = h.smtpgw, h.line_of

-- A gateway.ini in `dir` with [tls] `tls_lines` (a list of "key = value").
local function write_ini(dir, tls_lines, extra)
  local ini = dir .. "/gateway.ini"
  gateway.write_file(ini, table.concat({
    "[gateway]",
    "hostname = " .. gateway.HOSTNAME,
    "listen = 127.0.0.1:0",
    "workers = 1",
    "greet_pause = 0",
    "spool = spool",
    "relay_domains = example.test",
    "[dns]",
    "resolver = 127.0.0.1@9",
    "[tls]",
    table.concat(tls_lines, "\n"),
    extra or "",
  }, "\n") .. "\n")
  return ini
end

-- The fingerprint of the certificate served to a client with SNI `name`.
local function served(gw, name)
  local out, pem = tls.s_client(gw:port(), name and ("-servername " .. q(name)) or "")
  assert(pem, "no certificate from s_client:\n" .. out)
  return tls.fingerprint(pem)
end

-- certbot's layout: archive/NAME/{fullchainN,privkeyN}.pem, and live/NAME/
-- holding symlinks to the newest (what `certbot renew` does).
local function certbot_issue(root, pair, ca, n)
  local archive, live = root .. "/archive/mx", root .. "/live/mx"
  sh("mkdir -p " .. q(archive) .. " " .. q(live) ..
    " && cat " .. q(pair.crt) .. " " .. q(ca.crt) .. " > " .. q(archive .. "/fullchain" .. n .. ".pem") ..
    " && cp " .. q(pair.key) .. " " .. q(archive .. "/privkey" .. n .. ".pem") ..
    " && chmod 600 " .. q(archive .. "/privkey" .. n .. ".pem") ..
    " && ln -sfn ../../archive/mx/fullchain" .. n .. ".pem " .. q(live .. "/fullchain.pem") ..
    " && ln -sfn ../../archive/mx/privkey" .. n .. ".pem " .. q(live .. "/privkey.pem"))
  return live .. "/fullchain.pem", live .. "/privkey.pem"
end

describe("certificate store", function()
  local pki, pkidir

  setup(function()
    pkidir = gateway.mktempdir()
    pki = tls.make_pki(pkidir .. "/pki") -- a, b: signed by pki.ca
  end)

  teardown(function() gateway.rm_rf(pkidir) end)
  after_each(h.cleanup)

  it("serves certbot's fullchain.pem + privkey.pem, and the renewed pair after a reload", function()
    local dir = gateway.mktempdir()
    local fullchain, privkey = certbot_issue(dir .. "/letsencrypt", pki.a, pki.ca, 1)
    local ini = write_ini(dir, {
      "certificate = " .. fullchain .. " " .. privkey,
      "cert_dir = " .. dir .. "/empty",
    })
    sh("mkdir " .. q(dir .. "/empty"))
    local out, code = smtpgw(ini, "-t")
    assert.are.equal(0, code, out)
    local gw = gateway.start{ dir = dir, raw_ini = gateway.read_file(ini) }
    assert.are.equal(tls.file_fingerprint(pki.a.crt), served(gw))
    assert.is_nil(gw:log():find("event=cert_created", 1, true), gw:log())
    assert.truthy(gw:log():find("event=cert cert=" .. fullchain, 1, true), gw:log())

    certbot_issue(dir .. "/letsencrypt", pki.b, pki.ca, 2) -- certbot renew
    out, code = smtpgw(gw.ini, "reload")
    assert.are.equal(0, code, out)
    assert.truthy(out:match("^reload: ok, generation %d+"), out)
    local want = tls.file_fingerprint(pki.b.crt)
    local got
    assert.truthy(gateway.wait_for(function()
      got = served(gw)
      return got == want
    end), "still served " .. tostring(got))
  end)

  it("serves certificate lines first, then cert_dir pairs by SNI", function()
    local dir = gateway.mktempdir()
    tls.install(pki.b, dir .. "/certs", "b")
    local ini = write_ini(dir, { "certificate = " .. pki.a.crt .. " " .. pki.a.key })
    local gw = gateway.start{ dir = dir, raw_ini = gateway.read_file(ini) }
    assert.are.equal(tls.file_fingerprint(pki.a.crt), served(gw))
    assert.are.equal(tls.file_fingerprint(pki.b.crt), served(gw, "b.test.example"))
  end)

  describe("-t and reload refuse a bad store, naming the ini line and the files", function()
    local function case(setup_fn, want_text, want_line_key)
      local dir = gateway.mktempdir()
      local tls_lines = setup_fn(dir)
      local ini = write_ini(dir, tls_lines)
      local out, code = smtpgw(ini, "-t")
      assert.are.equal(1, code, out)
      local line = want_line_key and line_of(ini, want_line_key)
      local prefix = ini .. (line and (":" .. line) or "") .. ": "
      assert.truthy(out:find(prefix .. want_text(dir), 1, true),
        "wanted: " .. prefix .. want_text(dir) .. "\ngot: " .. out)
      gateway.rm_rf(dir)
    end

    it("a .crt without its .key", function()
      case(function(dir)
        sh("mkdir " .. q(dir .. "/c") .. " && cp " .. q(pki.a.crt) .. " " .. q(dir .. "/c/a.crt"))
        return { "cert_dir = c" }
      end, function(dir)
        return dir .. "/c/a.crt: no private key beside it (" .. dir .. "/c/a.key)"
      end, "cert_dir = c")
    end)

    it("a .key without its .crt", function()
      case(function(dir)
        tls.install(pki.a, dir .. "/c", "a")
        sh("cp " .. q(pki.b.key) .. " " .. q(dir .. "/c/z.key"))
        return { "cert_dir = c" }
      end, function(dir)
        return dir .. "/c/z.key: no certificate beside it (" .. dir .. "/c/z.crt)"
      end, "cert_dir = c")
    end)

    it("a key that does not match its certificate", function()
      case(function(dir)
        sh("mkdir " .. q(dir .. "/c") .. " && cp " .. q(pki.a.crt) .. " " .. q(dir .. "/c/a.crt") ..
          " && cp " .. q(pki.b.key) .. " " .. q(dir .. "/c/a.key"))
        return { "cert_dir = c" }
      end, function(dir)
        return dir .. "/c/a.key: private key does not match " .. dir .. "/c/a.crt"
      end, "cert_dir = c")
    end)

    it("a certificate line whose key does not match", function()
      case(function()
        return { "certificate = " .. pki.a.crt .. " " .. pki.b.key, "cert_dir = " .. pkidir }
      end, function()
        return pki.b.key .. ": private key does not match " .. pki.a.crt
      end, "certificate = ")
    end)

    it("a file that is not PEM, and one that is missing", function()
      case(function(dir)
        gateway.write_file(dir .. "/junk.pem", "not a certificate\n")
        return { "certificate = junk.pem " .. pki.a.key }
      end, function(dir)
        return dir .. "/junk.pem: not a PEM certificate"
      end, "certificate = ")
      case(function()
        return { "certificate = /nonexistent/fullchain.pem " .. pki.a.key }
      end, function()
        return "/nonexistent/fullchain.pem: cannot read: No such file or directory"
      end, "certificate = ")
    end)

    it("a key others can read", function()
      case(function(dir)
        tls.install(pki.a, dir .. "/c", "a")
        sh("chmod 644 " .. q(dir .. "/c/a.key"))
        return { "cert_dir = c" }
      end, function(dir)
        return dir .. "/c/a.key: private key is readable by group or others (mode 0644)"
      end, "cert_dir = c")
    end)

    it("a cert_dir that does not exist (and it is not created)", function()
      local made
      case(function(dir)
        made = dir .. "/certz"
        return { "cert_dir = certz" }
      end, function(dir)
        return "cert_dir " .. dir .. "/certz: No such file or directory (it is not created"
      end, "cert_dir = certz")
      assert.is_false(gateway.exists(made))
    end)

    it("a certificate line without its key file", function()
      case(function()
        return { "certificate = " .. pki.a.crt }
      end, function()
        return "certificate: '" .. pki.a.crt .. "' is not CERTFILE KEYFILE"
      end, "certificate = ")
    end)

    it("reload keeps serving the old certificate", function()
      local dir = gateway.mktempdir()
      tls.install(pki.a, dir .. "/certs", "a")
      local ini = write_ini(dir, { "cert_dir = certs" })
      local gw = gateway.start{ dir = dir, raw_ini = gateway.read_file(ini) }
      local before = served(gw)
      sh("cp " .. q(pki.b.key) .. " " .. q(dir .. "/certs/a.key"))
      local out, code = smtpgw(gw.ini, "reload")
      assert.are.equal(1, code, out)
      assert.truthy(out:find("reload: failed: " .. gw.ini .. ":" .. line_of(ini, "cert_dir") ..
        ": " .. dir .. "/certs/a.key: private key does not match " .. dir .. "/certs/a.crt", 1, true), out)
      assert.truthy(gw:log():find("event=reload status=failed", 1, true))
      assert.are.equal(before, served(gw))
      assert.are.equal(tls.file_fingerprint(pki.a.crt), before)
      -- the running workers were not replaced
      assert.is_nil(gw:log():find("event=retire", 1, true), gw:log())
    end)
  end)

  describe("the Default Cert", function()
    it("is not made when a certificate line is configured (no certs/ created)", function()
      local dir = gateway.mktempdir()
      local ini = write_ini(dir, { "certificate = " .. pki.a.crt .. " " .. pki.a.key })
      local gw = gateway.start{ dir = dir, raw_ini = gateway.read_file(ini) }
      assert.are.equal(tls.file_fingerprint(pki.a.crt), served(gw))
      assert.is_false(gateway.exists(dir .. "/certs"))
      assert.is_nil(gw:log():find("cert_created", 1, true))
    end)

    it("-t with nothing configured is fine, makes nothing, and says the Default Cert comes at start", function()
      local dir = gateway.mktempdir()
      local ini = write_ini(dir, { "server_level = may" })
      local out, code = smtpgw(ini, "-t")
      assert.are.equal(0, code, out)
      assert.truthy(out:find("no certificate configured: the Default Cert will be made in " ..
        dir .. "/certs at start", 1, true), out)
      assert.is_false(gateway.exists(dir .. "/certs"))
    end)
  end)

  describe("ca_file", function()
    it("missing is an error where verify can be used", function()
      local dir = gateway.mktempdir()
      local ini = write_ini(dir, { "cert_dir = " .. pkidir .. "/certs", "ca_file = missing-ca.pem" },
        "[domain:partner.example]\ntls = verify\n")
      tls.install(pki.a, pkidir .. "/certs", "a")
      local out, code = smtpgw(ini, "-t")
      assert.are.equal(1, code, out)
      assert.truthy(out:find(ini .. ":" .. line_of(ini, "ca_file") .. ": ca_file " .. dir ..
        "/missing-ca.pem: No such file or directory; verify needs trust anchors " ..
        "([domain:partner.example] tls = verify)", 1, true), out)
      -- under the stock require_verify policy too
      ini = write_ini(dir, { "cert_dir = " .. pkidir .. "/certs", "ca_file = missing-ca.pem" },
        "[policy]\nscript = " .. ds.policy("require_verify.lua") .. "\n")
      out, code = smtpgw(ini, "-t")
      assert.are.equal(1, code, out)
      assert.truthy(out:find("verify needs trust anchors (the policy script may choose verify)", 1, true), out)
      -- an inbound requirement on one domain
      ini = write_ini(dir, { "cert_dir = " .. pkidir .. "/certs", "ca_file = missing-ca.pem" },
        "[domain:partner.example]\ntls_in = verify\n")
      out, code = smtpgw(ini, "-t")
      assert.are.equal(1, code, out)
      assert.truthy(out:find("verify needs trust anchors ([domain:partner.example] tls_in = verify)",
        1, true), out)
      -- and not where nothing can verify, ask_client_cert = no included
      ini = write_ini(dir, { "cert_dir = " .. pkidir .. "/certs", "ca_file = missing-ca.pem",
        "ask_client_cert = no" })
      out, code = smtpgw(ini, "-t")
      assert.are.equal(0, code, out)
    end)
  end)
end)
