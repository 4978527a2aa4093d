-- STARTTLS, the inbound TLS levels and the certificate store (README
-- "Command line", "gateway.ini" [tls], the STARTTLS rows of "SMTP
-- behaviour", "TLS"). server_level = none is in commands_spec.lua.
--
-- The certificates are made here with the openssl CLI (EC P-256): a test CA,
-- a client certificate it signed (clientAuth), a self-signed "rogue" client
-- certificate, and the server pairs a.test.example and b.test.example. TLS
-- sessions are driven by spec/support/tls_client.py (Python's ssl module),
-- smtplib, swaks and openssl s_client.

local lfs = require "lfs"
local json = require "dkjson"
local gateway = require "harness"
local client = require "smtp_client"
local h = require "helpers"
local tools = require "tools"
local tlss = require "tls_support"
local R = h.R

local HOST = gateway.HOSTNAME
local q = gateway.shell_quote

local READY = "220 2.0.0 Ready to start TLS"
local TLS_ACTIVE = "554 5.5.1 Error: TLS already active"
local STARTTLS_SYNTAX = "501 5.5.4 Syntax: STARTTLS"
local IN_TX = "503 5.5.1 Error: MAIL transaction in progress"
local MUST_TLS = "530 5.7.0 Must issue a STARTTLS command first"
local NO_CERT = "421 4.7.1 " .. HOST .. " Error: No client certificate presented"
local UNTRUSTED = "421 4.7.1 " .. HOST .. " Error: Client certificate not trusted"

local function esc(s) return (s:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0")) end

-- ------------------------------------------------------------ scripts

local function cmd(line) return { op = "cmd", line = line } end

-- EHLO, STARTTLS, the handshake (tls: sni, cert, key, ca) and, unless
-- ehlo_after is false, EHLO again.
local function tls_steps(tls, ehlo_after)
  local t = { op = "tls" }
  for k, v in pairs(tls or {}) do t[k] = v end
  local s = { cmd("EHLO client.example"), cmd("STARTTLS"), t }
  if ehlo_after ~= false then s[#s + 1] = cmd("EHLO client.example") end
  return s
end
local TLS_WANT = { "^250%-", READY, true, "^250%-" }

local function transaction_steps(subject)
  return { cmd("MAIL FROM:<sender@example.org>"), cmd("RCPT TO:<user@example.test>"),
    cmd("DATA"), { op = "send", data = h.message(subject) .. ".\r\n" }, { op = "read" } }
end
local TX_WANT = { R.mail_ok, R.rcpt_ok, R.data, true, R.queued }

local function concat(...)
  local out = {}
  for _, list in ipairs({ ... }) do
    for _, v in ipairs(list) do out[#out + 1] = v end
  end
  return out
end

-- Runs the steps against port and checks the replies: want[i] is the exact
-- text of step i, a pattern (starting with "^"), or true (not checked).
-- Every step must have run without error. Returns the result.
local function session(port, steps, want)
  local r = tools.tls_session(port, steps)
  local ctx = "\n-- tls_client.py output:\n" .. r.raw
  assert(r.banner and r.banner.text == R.banner, "banner" .. ctx)
  for i, w in ipairs(want) do
    local st = r.steps[i]
    assert(st, "step " .. i .. " did not run (" .. tostring(r.error) .. ")" .. ctx)
    if type(w) == "string" then
      local ok
      if w:sub(1, 1) == "^" then ok = st.text and st.text:find(w) else ok = st.text == w end
      assert(ok, string.format("step %d (%s): expected %q, got %q%s", i,
        st.line or st.op, w, tostring(st.text), ctx))
    end
  end
  assert(r.error == nil, "tls_client.py: " .. tostring(r.error) .. ctx)
  assert(#r.steps == #steps, "not every step ran" .. ctx)
  return r
end

-- The step of `r` that made the TLS handshake.
local function tls_step(r)
  for _, st in ipairs(r.steps) do
    if st.op == "tls" then return st end
  end
  error("no tls step in the result")
end

local function qid_of(r)
  local text = r.steps[#r.steps].text
  return (assert(text and text:match(R.queued), "not queued: " .. tostring(text)))
end

-- The event=tls log line of the session that queued `qid`.
local function tls_line_of(gw, qid)
  local sid = gw:wait_log("event=queued sid=(%d+) qid=" .. qid .. " ")
  return (gw:wait_log("([^\n]*event=tls sid=" .. sid .. " [^\n]*)"))
end

-- Reads a certificate store table of `smtpgw certs`: { name = { label =
-- value } } (labels as printed: "subject", "dns names", "days left", ...).
local function parse_cert_table(text)
  local out, cur = {}, nil
  for line in (text .. "\n"):gmatch("(.-)\n") do
    local label, value = line:match("^%s+(%S.-)%s%s+(.-)%s*$")
    if label and cur then
      cur[label] = value
    elseif line:match("^%S") then
      cur = {}
      out[line:match("^(%S+)")] = cur
    end
  end
  return out
end

-- ------------------------------------------------------------- the spec

describe("TLS", function()
  local pki, pki_root

  setup(function()
    pki_root = gateway.mktempdir()
    pki = tlss.make_pki(pki_root .. "/pki")
  end)

  teardown(function()
    h.cleanup()
    gateway.rm_rf(pki_root)
  end)

  after_each(client.close_all)

  -- ------------------------------------------------------ Default Cert
  describe("the Default Cert", function()
    it("is RSA 4096, SHA-256, self-signed for the hostname, key 0600, and kept across a restart", function()
      local gw = gateway.start({ sections = { tls = { cert_dir = false } } })
      finally(function() gw:stop() end)
      local certs = gw:dir() .. "/certs"
      assert.truthy(gw:log():find("event=cert_created", 1, true), gw:log())

      local out, pem = tlss.s_client(gw:port())
      assert(pem, "s_client showed no certificate:\n" .. out)
      local text = tlss.x509_text(pem)
      assert.truthy(text:find("Public Key Algorithm: rsaEncryption", 1, true), text)
      assert.truthy(text:find("Public-Key: (4096 bit)", 1, true), text)
      assert.truthy(text:find("Signature Algorithm: sha256WithRSAEncryption", 1, true), text)
      local subject = text:match("\n%s*Subject: ([^\n]*)")
      local issuer = text:match("\n%s*Issuer: ([^\n]*)")
      assert.are.equal("CN = " .. HOST, subject)
      assert.are.equal(subject, issuer)
      assert.are.equal("DNS:" .. HOST,
        text:match("X509v3 Subject Alternative Name:[^\n]*\n%s*([^\n]*)"))
      -- self-signed for real: it verifies against itself
      local vout, vcode = gateway.run("openssl verify -CAfile " ..
        q(certs .. "/default.crt") .. " " .. q(certs .. "/default.crt"))
      assert.are.equal(0, vcode, vout)

      assert.are.equal("rw-------", lfs.attributes(certs .. "/default.key", "permissions"))
      local fp = tlss.fingerprint(pem)
      assert.are.equal(tlss.file_fingerprint(certs .. "/default.crt"), fp)

      -- 10 years, seen through `certs --json`
      local jout, jcode = gateway.run(q(gateway.bin()) .. " -c " .. q(gw.ini) ..
        " certs --json 2>/dev/null")
      assert.are.equal(0, jcode, jout)
      local list = json.decode(jout)
      assert(type(list) == "table" and list[1], jout)
      assert.are.equal("default", list[1].name)
      assert.is_true(list[1].days_left >= 3640, jout)

      -- a restart serves the same certificate and does not make another
      assert.is_true(gw:kill("TERM"))
      assert.are.equal(0, gw:exit_code())
      gw:restart()
      assert.falsy(gw:log():find("event=cert_created", 1, true), gw:log())
      local out2, pem2 = tlss.s_client(gw:port())
      assert(pem2, "s_client showed no certificate:\n" .. out2)
      assert.are.equal(fp, tlss.fingerprint(pem2))
      assert.are.equal(fp, tlss.file_fingerprint(certs .. "/default.crt"))
    end)
  end)

  -- ------------------------------------------------------ level may
  describe("at server_level = may", function()
    local gw

    setup(function()
      gw = gateway.start()
    end)

    teardown(function()
      if gw then gw:stop() end
    end)

    it("smtplib starttls() then a message is queued; the log says peer=Anonymous", function()
      local r = tools.smtplib({ port = gw:port(), starttls = true })
      assert.is_nil(r.error, r.raw)
      assert.are.equal(220, r.by.starttls[1].code, r.raw)
      assert.are.equal("2.0.0 Ready to start TLS", r.by.starttls[1].text)
      assert.truthy(tostring(r.tls_version):match("^TLSv1%.[23]$"), r.raw)
      assert.is_nil(r.esmtp_features.starttls, "STARTTLS still offered after TLS: " .. r.raw)
      local data = r.by.data[1]
      local qid = data.code == 250 and data.text:match("^2%.0%.0 Ok: queued as (%x+)$")
      assert(qid, "not queued: " .. r.raw)
      local line = tls_line_of(gw, qid)
      assert.truthy(line:find(" peer=Anonymous", 1, true), line)
      assert.truthy(line:find(" version=TLSv1%.[23] "), line)
      assert.truthy(line:find("Anonymous TLS connection established from 127.0.0.1", 1, true), line)
    end)

    it("swaks --tls delivers", function()
      local out, code, qid = tools.swaks({ port = gw:port(), extra = { "--tls" } })
      assert.are.equal(0, code, out)
      assert.truthy(out:find("TLS started", 1, true), out)
      assert(qid, "not queued:\n" .. out)
      assert(#gw:queue_file(qid) > 0)
    end)

    it("discards plaintext pipelined after STARTTLS (CVE-2011-0411) and stops offering STARTTLS", function()
      local r = session(gw:port(), {
        cmd("EHLO x"),
        { op = "send", data = "STARTTLS\r\nRSET\r\n" },
        { op = "read" },
        { op = "tls" },
        cmd("EHLO y"),
        cmd("NOOP"),
      }, { "^250%-", true, READY, true, "^250%-", R.ok })
      local st = tls_step(r)
      assert.are.equal("", st.plain_leftover, "replied in plaintext after 220: " .. r.raw)
      local ehlo = r.steps[5]
      assert.truthy(ehlo.lines[1]:find("^250%-" .. esc(HOST)), ehlo.text)
      local ext = {}
      for i = 2, #ehlo.lines do ext[ehlo.lines[i]:sub(5)] = true end
      assert.is_true(ext.PIPELINING, ehlo.text)
      assert.is_nil(ext.STARTTLS, ehlo.text)
      gw:wait_log("event=starttls_pipelining [^\n]*discarded=6")
    end)

    it("requires EHLO again after STARTTLS", function()
      session(gw:port(), concat(tls_steps(nil, false), {
        cmd("MAIL FROM:<sender@example.org>"),
        cmd("EHLO client.example"),
        cmd("MAIL FROM:<sender@example.org>"),
      }), { "^250%-", READY, true, R.need_helo, "^250%-", R.mail_ok })
    end)

    it("answers a second STARTTLS with 554 5.5.1 and the session goes on", function()
      local r = session(gw:port(), concat(tls_steps(), { cmd("STARTTLS") },
        transaction_steps("tls twice")),
        concat(TLS_WANT, { TLS_ACTIVE }, TX_WANT))
      qid_of(r)
    end)

    it("answers STARTTLS with an argument 501 and inside a transaction 503", function()
      session(gw:port(), {
        cmd("EHLO client.example"),
        cmd("STARTTLS now"),
        cmd("MAIL FROM:<sender@example.org>"),
        cmd("STARTTLS"),
        cmd("RSET"),
        cmd("STARTTLS"),
        { op = "tls" },
        cmd("EHLO client.example"),
      }, { "^250%-", STARTTLS_SYNTAX, R.mail_ok, IN_TX, R.ok, READY, true, "^250%-" })
    end)

    it("does not ask for a client certificate: a client holding one is Anonymous", function()
      local r = session(gw:port(), concat(
        tls_steps({ cert = pki.client.crt, key = pki.client.key }),
        transaction_steps("not asked")), concat(TLS_WANT, TX_WANT))
      local line = tls_line_of(gw, qid_of(r))
      assert.truthy(line:find(" peer=Anonymous", 1, true), line)
    end)

    it("a failed handshake ends only that connection", function()
      local before = #gw:log_lines("event=tls_failed")
      local c = h.session(gw)
      c:cmd("STARTTLS", READY)
      assert(c:send("this is no TLS ClientHello, just text\r\n\r\n"))
      -- whatever the server answers (an alert), it closes
      local closed = gateway.wait_for(function()
        c:_fill(0.2)
        return c.eof
      end, 10)
      assert.is_true(closed, "connection still open after a failed handshake")
      gw:wait_log_count("event=tls_failed", before + 1)
      assert.is_true(gw:alive())
      -- a new connection still works, with TLS
      local r = session(gw:port(), concat(tls_steps(), transaction_steps("after failure")),
        concat(TLS_WANT, TX_WANT))
      qid_of(r)
    end)
  end)

  -- ------------------------------------------------------ level encrypt
  describe("at server_level = encrypt", function()
    local gw

    setup(function()
      gw = gateway.start({ sections = { tls = { server_level = "encrypt" } } })
    end)

    teardown(function()
      if gw then gw:stop() end
    end)

    it("answers 530 before STARTTLS to all but EHLO, HELO, STARTTLS, NOOP, QUIT, HELP", function()
      local c = h.session(gw, { helo = false })
      local lines = c:ehlo("client.example")
      local offered = false
      for _, l in ipairs(lines) do offered = offered or l == "STARTTLS" end
      assert.is_true(offered, "STARTTLS not offered")
      c:cmd("MAIL FROM:<sender@example.org>", MUST_TLS)
      c:cmd("RCPT TO:<user@example.test>", MUST_TLS)
      c:cmd("DATA", MUST_TLS)
      c:cmd("RSET", MUST_TLS)
      c:cmd("VRFY user@example.test", MUST_TLS)
      c:cmd("NOOP", R.ok)
      c:cmd("HELP", R.help)
      c:cmd("HELO client.example", "^250 ")
      c:cmd("EHLO client.example", "^250%-")
      c:cmd("QUIT", R.bye)
      assert.is_true(c:closed())
      h.assert_nothing_queued(gw, c)
    end)

    it("queues the transaction after STARTTLS and EHLO", function()
      local r = session(gw:port(), concat(tls_steps(), transaction_steps("encrypt")),
        concat(TLS_WANT, TX_WANT))
      local line = tls_line_of(gw, qid_of(r))
      assert.truthy(line:find(" peer=Anonymous", 1, true), line)
    end)
  end)

  -- ------------------------------------------------------ level verify
  describe("at server_level = verify", function()
    local gw

    setup(function()
      gw = gateway.start({ sections = { tls = { server_level = "verify", ca_file = pki.ca.crt } } })
    end)

    teardown(function()
      if gw then gw:stop() end
    end)

    it("answers 530 before STARTTLS", function()
      local c = h.session(gw)
      c:cmd("MAIL FROM:<sender@example.org>", MUST_TLS)
      c:cmd("NOOP", R.ok)
    end)

    it("queues mail from a client whose certificate verifies (peer=Trusted)", function()
      local r = session(gw:port(), concat(
        tls_steps({ cert = pki.client.crt, key = pki.client.key }),
        transaction_steps("trusted")), concat(TLS_WANT, TX_WANT))
      local line = tls_line_of(gw, qid_of(r))
      assert.truthy(line:find(" peer=Trusted ", 1, true), line)
      assert.truthy(line:find("peer_subject=[^\n]*CN=client%.test%.example"), line)
      assert.truthy(line:find("peer_issuer=[^\n]*smtpgw Test CA"), line)
      assert.truthy(line:find("Trusted TLS connection established from 127.0.0.1", 1, true), line)
    end)

    it("without a client certificate the first command after TLS gets 421 and the connection closes", function()
      local r = session(gw:port(), concat(tls_steps(nil, false),
        { cmd("EHLO client.example"), { op = "closed" } }),
        { "^250%-", READY, true, NO_CERT })
      local last = r.steps[#r.steps]
      assert.is_true(last.closed, "still open or more data: " .. r.raw)
      gw:wait_log("event=tls [^\n]*peer=Anonymous")
    end)

    it("with an untrusted certificate the first command after TLS gets 421 and the connection closes", function()
      local r = session(gw:port(), concat(
        tls_steps({ cert = pki.rogue.crt, key = pki.rogue.key }, false),
        { cmd("NOOP"), { op = "closed" } }),
        { "^250%-", READY, true, UNTRUSTED })
      local last = r.steps[#r.steps]
      assert.is_true(last.closed, "still open or more data: " .. r.raw)
      local line = gw:wait_log("([^\n]*event=tls [^\n]*peer=Untrusted[^\n]*)")
      assert.truthy(line:find("rogue.test.example", 1, true), line)
      assert.truthy(line:find(" peer_reason=", 1, true), line)
    end)
  end)

  -- ------------------------------------------------------ ask_client_cert
  describe("with ask_client_cert = yes at level may", function()
    local gw

    setup(function()
      gw = gateway.start({ sections = { tls = { ask_client_cert = "yes", ca_file = pki.ca.crt } } })
    end)

    teardown(function()
      if gw then gw:stop() end
    end)

    it("accepts mail from a client whose certificate does not verify and logs it Untrusted", function()
      local r = session(gw:port(), concat(
        tls_steps({ cert = pki.rogue.crt, key = pki.rogue.key }),
        transaction_steps("untrusted but may")), concat(TLS_WANT, TX_WANT))
      local line = tls_line_of(gw, qid_of(r))
      assert.truthy(line:find(" peer=Untrusted ", 1, true), line)
      assert.truthy(line:find("peer_subject=[^\n]*CN=rogue%.test%.example"), line)
    end)

    it("logs a certificate that verifies as Trusted and no certificate as Anonymous", function()
      local r = session(gw:port(), concat(
        tls_steps({ cert = pki.client.crt, key = pki.client.key }),
        transaction_steps("trusted at may")), concat(TLS_WANT, TX_WANT))
      local line = tls_line_of(gw, qid_of(r))
      assert.truthy(line:find(" peer=Trusted ", 1, true), line)
      r = session(gw:port(), concat(tls_steps(), transaction_steps("anonymous at may")),
        concat(TLS_WANT, TX_WANT))
      line = tls_line_of(gw, qid_of(r))
      assert.truthy(line:find(" peer=Anonymous", 1, true), line)
    end)
  end)

  -- ------------------------------------------------------ SNI
  describe("with two pairs in cert_dir", function()
    local gw

    setup(function()
      local dir = gateway.mktempdir() .. "/store"
      tlss.install(pki.a, dir)
      tlss.install(pki.b, dir)
      gw = gateway.start({ sections = { tls = { cert_dir = dir } } })
      gw.store_root = dir:match("^(.*)/store$")
    end)

    teardown(function()
      if gw then
        gw:stop()
        gateway.rm_rf(gw.store_root)
      end
    end)

    for _, n in ipairs({ "a", "b" }) do
      local name = n .. ".test.example"
      it("serves the " .. n .. " certificate to SNI " .. name, function()
        local r = session(gw:port(), concat(
          tls_steps({ sni = name, ca = pki.ca.crt }), { cmd("QUIT") }),
          concat(TLS_WANT, { R.bye }))
        local pem = tls_step(r).peer_cert
        assert(pem, "no peer certificate: " .. r.raw)
        assert.are.equal("CN=" .. name, tlss.subject(pem))
        assert.are.same({ name }, tlss.dns_names(pem))
        assert.are.equal(tlss.file_fingerprint(pki[n].crt), tlss.fingerprint(pem))
        gw:wait_log("event=tls [^\n]* sni=" .. esc(name) .. " ")
      end)
    end

    it("serves the first pair by name to a client without SNI", function()
      local r = session(gw:port(), concat(tls_steps(), { cmd("QUIT") }),
        concat(TLS_WANT, { R.bye }))
      assert.are.equal("CN=a.test.example", tlss.subject(tls_step(r).peer_cert))
    end)
  end)

  -- ------------------------------------------------------ the store
  describe("the certificate store", function()
    local root

    setup(function()
      root = gateway.mktempdir()
    end)

    teardown(function()
      gateway.rm_rf(root)
    end)

    local function write_ini(name, dir)
      local ini = root .. "/" .. name .. ".ini"
      gateway.write_file(ini, gateway.ini_text({}, { tls = { cert_dir = dir } }))
      return ini
    end

    it("refuses to start with a private key readable by group or others", function()
      local dir = root .. "/open"
      local _, key = tlss.install(pki.a, dir)
      tlss.sh("chmod 644 " .. q(key))
      local ini = write_ini("open", dir)
      local out, code = gateway.run("timeout -k 5 8 " .. q(gateway.bin()) .. " -c " ..
        q(ini) .. " >/dev/null 2>" .. q(root .. "/stderr") .. " </dev/null")
      local err = gateway.read_file(root .. "/stderr") or ""
      assert.are_not.equal(0, code, out .. err)
      assert.are_not.equal(124, code, "it started (killed by timeout): " .. err)
      assert.truthy(err:find(key, 1, true), err)
      assert.truthy(err:find("readable by group or others", 1, true), err)
      assert.falsy(err:find("event=listen", 1, true), err)
    end)

    describe("with a CA-signed pair and one that expires in 10 days", function()
      local ini, soon, t0

      setup(function()
        local dir = root .. "/store"
        tlss.install(pki.a, dir)
        soon = tlss.self_signed(dir, "soon", { cn = "soon.test.example", days = 10,
          san = "DNS:soon.test.example,DNS:www.soon.test.example" })
        ini = write_ini("store", dir)
        t0 = os.time()
      end)

      -- (exit 1: a monitoring check's WARNING, for the one that expires
      -- soon; spec/integration/certs_check_spec.lua has the others)
      local function certs(args)
        local out, code = gateway.run(q(gateway.bin()) .. " -c " .. q(ini) ..
          " certs" .. args .. " 2>/dev/null </dev/null")
        assert.are.equal(1, code, out)
        return out
      end

      -- certs --json, by name
      local function certs_json()
        local out = certs(" --json")
        local list = json.decode(out)
        assert(type(list) == "table", "not JSON: " .. out)
        assert.are.equal(2, #list, out)
        local by = {}
        for _, e in ipairs(list) do by[e.name] = e end
        assert(by.a and by.soon, out)
        return by, out
      end

      it("`certs --json` describes every pair", function()
        local by, out = certs_json()
        local a, s = by.a, by.soon
        assert.are.equal("CN=a.test.example", a.subject)
        assert.are.same({ "a.test.example" }, a.dns_names)
        assert.are.equal("CN=smtpgw Test CA", a.issuer)
        assert.are.equal("EC", a.key_type)
        assert.are.equal(256, a.key_bits)
        assert.are.equal("ecdsa-with-SHA256", a.signature_algorithm)
        assert.is_false(a.self_signed)
        assert.are.equal(365 * 86400, a.not_after - a.not_before)
        assert.is_true(math.abs(a.not_after - (t0 + 365 * 86400)) < 600, out)
        assert.is_true(a.days_left == 364 or a.days_left == 365, out)
        assert.are.equal("string", type(a.sha256))

        assert.are.equal("CN=soon.test.example", s.subject)
        assert.are.same({ "soon.test.example", "www.soon.test.example" }, s.dns_names)
        assert.are.equal("CN=soon.test.example", s.issuer)
        assert.is_true(s.self_signed)
        assert.is_true(s.days_left == 9 or s.days_left == 10, out)
      end)

      it("`certs` prints the same as a table and warns about the one that expires soon", function()
        local out = certs("")
        local tab = parse_cert_table(out)
        local ta, ts = tab.a, tab.soon
        assert(ta and ts, "no entries a and soon in:\n" .. out)
        assert.are.equal("CN=a.test.example", ta.subject, out)
        assert.are.equal("a.test.example", ta["dns names"], out)
        assert.are.equal("CN=smtpgw Test CA", ta.issuer, out)
        assert.truthy((ta.key or ""):find("^EC 256$"), out)
        assert.are.equal("ecdsa-with-SHA256", ta.signature, out)
        assert.are.equal("no", ta["self-signed"], out)
        assert.truthy((ta["days left"] or ""):find("^36[45]$"), out)
        assert.truthy((ts["days left"] or ""):find("^1?[09]%f[%D].*WARNING"), out)
        assert.are.equal("yes", ts["self-signed"], out)
        assert.truthy((ts["dns names"] or ""):find("www.soon.test.example", 1, true), out)
      end)

      it("the SHA-256 fingerprints of `certs` and `certs --json` are openssl's", function()
        local by = certs_json()
        local tab = parse_cert_table(certs(""))
        for _, e in ipairs({ { "a", pki.a.crt }, { "soon", soon.crt } }) do
          local want = tlss.file_fingerprint(e[2])
          assert.are.equal(want, by[e[1]].sha256)
          assert.are.equal(want, tab[e[1]] and tab[e[1]].sha256)
        end
      end)

      it("the gateway logs event=cert_expiry at start for the one that expires soon", function()
        local gw = gateway.start({ raw_ini = gateway.read_file(ini) })
        finally(function() gw:stop() end)
        local line = gw:wait_log("([^\n]*event=cert_expiry[^\n]*)")
        assert.truthy(line:find(" cert=soon ", 1, true), line)
        assert.truthy(line:find(" days_left=1?[09] "), line)
        assert.are.equal(1, #gw:log_lines("event=cert_expiry"), gw:log())
      end)
    end)
  end)

  -- ------------------------------------------------------ SIGHUP
  describe("SIGHUP", function()
    it("re-reads cert_dir for new connections and keeps the old store when the new one is broken", function()
      local root = gateway.mktempdir()
      local dir = root .. "/store"
      tlss.install(pki.a, dir)
      local gw = gateway.start({ sections = { tls = { cert_dir = dir } } })
      finally(function()
        gw:stop()
        gateway.rm_rf(root)
      end)

      local function served(sni)
        local r = session(gw:port(), concat(tls_steps({ sni = sni }), { cmd("QUIT") }),
          concat(TLS_WANT, { R.bye }))
        return tlss.subject(tls_step(r).peer_cert)
      end

      assert.are.equal("CN=a.test.example", served("b.test.example"))

      tlss.install(pki.b, dir)
      gw:signal("HUP")
      gw:wait_log_count("event=reload", 1)
      assert.are.equal("CN=b.test.example", served("b.test.example"))
      assert.are.equal("CN=a.test.example", served("a.test.example"))

      -- a broken store: the old certificates stay in use
      tlss.sh("chmod 644 " .. q(dir .. "/a.key"))
      gw:signal("HUP")
      local lines = gw:wait_log_count("event=reload", 2)
      assert.truthy(lines[2]:find("status=failed", 1, true), lines[2])
      assert.truthy(lines[2]:find("readable by group or others", 1, true), lines[2])
      assert.truthy(lines[2]:find("a.key", 1, true), lines[2])
      assert.is_true(gw:alive())
      assert.are.equal("CN=b.test.example", served("b.test.example"))
      local r = session(gw:port(), concat(tls_steps(), transaction_steps("after broken HUP")),
        concat(TLS_WANT, TX_WANT))
      qid_of(r)
    end)
  end)
end)
