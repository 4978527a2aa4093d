-- REQUIRETLS (RFC 8689, README "REQUIRETLS"), both ways, against real
-- clients (Python's smtplib) and loopback receivers
-- (spec/support/smtp_receiver.py, --requiretls to advertise it after
-- STARTTLS): the EHLO keyword only under TLS, the MAIL parameter refused in
-- plaintext and kept in the queue file under TLS; outbound, a REQUIRETLS
-- message goes only to an authenticated hop that offers REQUIRETLS, and is
-- otherwise bounced with 5.7.30 (5.7.10 when no TLS session could be
-- had, RFC 8689 §4.2.1) and a DSN that requires TLS too;
-- "TLS-Required: No".

local gateway = require "harness"
local tls = require "tls_support"
local ds = require "delivery_support"
local dns_server = require "dns_server"
local dnssec = require "dnssec_zone"
local tools = require "tools"
local json = require "dkjson"

local FROM = "sender@origin.example"

-- A message with REQUIRETLS on MAIL FROM, over STARTTLS, to one address
-- or a list; its queue id.
local function submit_requiretls(gw, rcpts, headers)
  if type(rcpts) == "string" then rcpts = { rcpts } end
  local msg = table.concat(headers or {}, "\r\n") ..
    (headers and "\r\n" or "") ..
    "From: <" .. FROM .. ">\r\nTo: <" .. rcpts[1] .. ">\r\n" ..
    "Subject: requiretls spec\r\n\r\nOnly over TLS, please.\r\n"
  local r = tools.smtplib{ port = gw:port(), from = FROM, to = rcpts,
    msg = msg, starttls = true, mail_options = { "REQUIRETLS" } }
  local data = r.by.data and r.by.data[1]
  local qid = data and data.code == 250 and
    data.text:match("queued as (%x+)")
  assert(qid, "not queued:\n" .. r.raw)
  return qid
end

-- The MAIL commands a receiver got, "tls|plain MAIL FROM:<...> [REQUIRETLS]"
-- (SIZE= left out).
local function mail_lines(r)
  local out = {}
  for _, c in ipairs(r:commands()) do
    if c.verb == "MAIL" then
      out[#out + 1] = (c.tls and "tls " or "plain ") .. c.line:gsub(" SIZE=%d+", "")
    end
  end
  return out
end

-- Did the receiver's session get as far as TLS (an EHLO under it)?
local function saw_tls(r)
  for _, c in ipairs(r:commands()) do
    if c.tls and c.verb == "EHLO" then return true end
  end
  return false
end

describe("REQUIRETLS", function()
  local dir, pki, selfsigned

  setup(function()
    dir = gateway.mktempdir()
    pki = tls.make_pki(dir .. "/pki") -- a.test.example, b.test.example
    selfsigned = tls.self_signed(dir, "self", { cn = "a.test.example",
      san = "DNS:a.test.example" })
  end)

  teardown(function() gateway.rm_rf(dir) end)
  after_each(ds.cleanup)

  -- Static routes by address, with tls_name: the hop is named by the
  -- configuration, and its certificate verifies against the test CA.
  local function authenticated(r)
    return { next_hop = "[127.0.0.1]:" .. r.port, tls_name = "a.test.example" }
  end

  local function start(domains, extra)
    local s = ds.sections("try.lua", {
      tls = { ca_file = pki.ca.crt },
      delivery = { retry_min = "1h", retry_max = "1h" },
    })
    for k, v in pairs(domains) do s["domain:" .. k] = v end
    for k, v in pairs(extra or {}) do s[k] = v end
    return gateway.start{ sections = s }
  end

  describe("inbound", function()
    it("advertises REQUIRETLS only after STARTTLS", function()
      local gw = gateway.start{}
      local plain = tools.smtplib{ port = gw:port(), to = { "u@example.test" } }
      local secure = tools.smtplib{ port = gw:port(), to = { "u@example.test" },
        starttls = true }
      assert.is_nil(plain.esmtp_features.requiretls, plain.raw)
      assert.truthy(plain.esmtp_features.starttls, plain.raw)
      assert.truthy(secure.tls_version, secure.raw)
      assert.are.equal("", secure.esmtp_features.requiretls, secure.raw)
      assert.is_nil(secure.esmtp_features.starttls, secure.raw)
    end)

    it("refuses MAIL ... REQUIRETLS in plaintext, keeps it with the message under TLS", function()
      local dead = dns_server.free_port() -- nothing listens: deferred, kept
      local gw = start({ ["kept.example"] = { next_hop = "[127.0.0.1]:" .. dead } })
      local r = tools.smtplib{ port = gw:port(), from = FROM,
        to = { "u@kept.example" }, mail_options = { "REQUIRETLS" } }
      local mail = r.by.mail[1]
      assert.are.equal(530, mail.code, r.raw)
      assert.are.equal("5.7.10 REQUIRETLS needs a TLS session: issue STARTTLS first",
        mail.text)
      gw:wait_log("event=reject .*stage=MAIL .*code=530")

      local qid = submit_requiretls(gw, "u@kept.example")
      local env = gateway.parse_queue_file(gw:queue_file(qid))
      assert.are.equal("1", env.requiretls)
      -- and one without it has no such line
      local other = ds.submit(gw, FROM, { "v@kept.example" })
      assert.is_nil(gateway.parse_queue_file(gw:queue_file(other)).requiretls)
    end)
  end)

  describe("outbound", function()
    -- One message to five domains, each its own hop (README "REQUIRETLS").
    it("relays only to authenticated hops that offer REQUIRETLS; bounces the rest with 5.7.30 and a REQUIRETLS DSN", function()
      local ok_r = ds.receiver{ cert = pki.a, requiretls = true }
      local no_r = ds.receiver{ cert = pki.a } -- authenticated, no REQUIRETLS
      local self_r = ds.receiver{ cert = selfsigned, requiretls = true }
      local plain_r = ds.receiver()
      local mx_r = ds.receiver{ cert = pki.a, requiretls = true }
      local back = ds.receiver{ cert = pki.a, requiretls = true }
      local dns = dns_server.start{
        zones = { ["example."] = "static", ["test.example."] = "static" },
        data = { "mx.example. MX 10 a.test.example.", "a.test.example. A 127.0.0.1" },
      }
      local ok, err = pcall(function()
        local gw = start({
          ["ok.example"] = authenticated(ok_r),
          ["no.example"] = authenticated(no_r),
          ["self.example"] = authenticated(self_r),
          ["plain.example"] = { next_hop = plain_r:addr(), tls = "none" },
          -- no brackets: the MX of mx.example, at the receiver's port
          ["mx.example"] = { next_hop = "mx.example:" .. mx_r.port },
          ["origin.example"] = authenticated(back),
        }, { dns = { resolver = dns:resolver() } })
        local qid = submit_requiretls(gw, { "u@ok.example", "u@no.example",
          "u@self.example", "u@plain.example", "u@mx.example" })

        -- authenticated (a configured hop, a verified certificate) and
        -- offered: sent, with the parameter
        local line = ds.wait_delivery(gw, "u@ok.example", "sent")
        assert.truthy(line:find(" tls=verify:TLSv1", 1, true), line)
        assert.truthy(line:find(" verified=yes", 1, true), line)
        assert.are.same({ "tls MAIL FROM:<" .. FROM .. "> REQUIRETLS" }, mail_lines(ok_r))

        -- not offered: 5.7.30, nothing sent
        line = ds.wait_delivery(gw, "u@no.example", "bounced")
        assert.truthy(line:find(" dsn=5.7.30 ", 1, true), line)
        assert.truthy(ds.field(line, "reply"):find(
          "^5%.7%.30 REQUIRETLS support required: 127%.0%.0%.1%[127%.0%.0%.1%]:%d+: " ..
          "REQUIRETLS: the server does not offer REQUIRETLS"), line)
        assert.are.same({}, mail_lines(no_r))

        -- a certificate that does not verify: bounced at once, not
        -- deferred; no TLS session: 5.7.10 (RFC 8689 §4.2.1)
        line = ds.wait_delivery(gw, "u@self.example", "bounced")
        assert.truthy(line:find(" dsn=5.7.10 ", 1, true), line)
        assert.truthy(ds.field(line, "reply"):find(
          "^5%.7%.10 REQUIRETLS needs a TLS session: .*TLS: "), line)
        assert.are.same({}, mail_lines(self_r))

        -- tls = none is raised to verify: never plaintext
        line = ds.wait_delivery(gw, "u@plain.example", "bounced")
        assert.truthy(line:find(" dsn=5.7.10 ", 1, true), line)
        assert.truthy(line:find(" tls=verify:none", 1, true), line)
        assert.are.same({}, mail_lines(plain_r))

        -- found by an MX answer nothing vouches for: verified and offered,
        -- but not authenticated
        line = ds.wait_delivery(gw, "u@mx.example", "bounced")
        assert.truthy(line:find("relay=a.test.example[127.0.0.1]", 1, true), line)
        assert.truthy(saw_tls(mx_r), "no TLS session at the MX receiver")
        assert.truthy(ds.field(line, "reply"):find(
          "the MX host name is vouched for neither by DNSSEC nor by MTA-STS", 1, true), line)
        assert.are.same({}, mail_lines(mx_r))

        -- one DSN, back with REQUIRETLS (RFC 8689 §5), headers only
        local bounce = ds.wait_delivery(gw, FROM, "sent")
        assert.truthy(bounce:find(" tls=verify:TLSv1", 1, true), bounce)
        local dsn = back:wait_messages(1)[1]
        assert.are.equal("", dsn.from)
        assert.are.same({ "tls MAIL FROM:<> REQUIRETLS" }, mail_lines(back))
        local _, n = dsn.text:gsub("Status: 5%.7%.30", "")
        assert.are.equal(2, n, dsn.text)
        _, n = dsn.text:gsub("Status: 5%.7%.10", "")
        assert.are.equal(2, n, dsn.text)
        assert.truthy(dsn.text:find("text/rfc822-headers", 1, true), dsn.text)
        assert.falsy(dsn.text:find("Only over TLS, please.", 1, true), dsn.text)
        ds.wait_queue_empty(gw, { qid })
      end)
      dns:stop()
      assert(ok, err)
    end)

  end)

  -- MX routes on a DNSSEC-signed zone (spec/support/dnssec_zone.lua): a
  -- secure MX answer vouches for the host's name (RFC 8689 §4.2.1), DANE
  -- authenticates the host itself; TLS-Required: No lifts dane-only; TLS
  -- reports name the TLSA records.
  describe("with DNSSEC", function()
    it("relays to a DANE-authenticated MX host and to a verified one a secure MX answer chose; TLS-Required: No lifts dane-only", function()
      local ee = tls.self_signed(dir, "mx-ee", { cn = "mx-ee.example.test",
        san = "DNS:mx-ee.example.test" })
      local ca_leaf = tls.signed(dir, "mx-ca", pki.ca, { cn = "mx-ca.example.test",
        san = "DNS:mx-ca.example.test", eku = "serverAuth" })
      local r_ee = ds.receiver{ cert = ee, requiretls = true }
      local r_ca = ds.receiver{ cert = ca_leaf, requiretls = true }
      local r_plain = ds.receiver()
      local function tcp(port, host) return "_" .. port .. "._tcp." .. host end
      local zone = dnssec.start{ zones = {
        { name = "example.test", records = {
          "dane MX 10 mx-ee", "mx-ee A 127.0.0.1",
          tcp(r_ee.port, "mx-ee") .. " TLSA " .. dnssec.tlsa(ee.crt, 3, 1, 1),
          "ca MX 10 mx-ca", "mx-ca A 127.0.0.1",
          "only MX 10 mx-none", "mx-none A 127.0.0.1",
        } } } }
      local ok, err = pcall(function()
        local gw = start({
          ["dane.example.test"] = { next_hop = "dane.example.test:" .. r_ee.port,
            tls = "dane" },
          ["ca.example.test"] = { next_hop = "ca.example.test:" .. r_ca.port },
          ["only.example.test"] = { next_hop = "only.example.test:" .. r_plain.port,
            tls = "dane-only" },
        }, { dns = { resolver = zone:resolver(), trust_anchor = zone:trust_anchor() },
             tlsrpt = { enable = "yes" } })
        submit_requiretls(gw, { "u@dane.example.test", "u@ca.example.test" })
        local line = ds.wait_delivery(gw, "u@dane.example.test", "sent", 1, 20)
        assert.truthy(line:find(" verified=dane-ee ", 1, true), line)
        assert.are.same({ "tls MAIL FROM:<" .. FROM .. "> REQUIRETLS" }, mail_lines(r_ee))
        line = ds.wait_delivery(gw, "u@ca.example.test", "sent", 1, 20)
        assert.truthy(line:find(" tls=verify:TLSv1", 1, true), line)
        assert.truthy(line:find(" verified=yes ", 1, true), line)
        assert.are.same({ "tls MAIL FROM:<" .. FROM .. "> REQUIRETLS" }, mail_lines(r_ca))

        -- dane-only without TLSA records defers; with TLS-Required: No
        -- the recipient's DANE policy is set aside
        ds.submit(gw, FROM, { "a@only.example.test" })
        ds.wait_delivery(gw, "a@only.example.test", "deferred", 1, 20)
        ds.submit(gw, FROM, { "b@only.example.test" }, { extra_headers = { "TLS-Required: No" } })
        line = ds.wait_delivery(gw, "b@only.example.test", "sent", 1, 20)
        assert.truthy(line:find(" tls=may:none", 1, true), line)

        -- TLS-RPT: the DANE session under the TLSA policy, dane-only's
        -- deferral as dane-required
        local rep
        assert(gateway.wait_for(function()
          ds.flush(gw)
          local out = gateway.run(gateway.shell_quote(gateway.bin()) .. " -c " ..
            gateway.shell_quote(gw.ini) .. " tlsrpt --domain dane.example.test")
          rep = json.decode(out)
          return rep and rep.policies and #rep.policies > 0
        end, 15, 0.5), "no TLS report for dane.example.test")
        local pol = rep.policies[1]
        assert.are.equal("tlsa", pol.policy["policy-type"])
        assert.are.equal(dnssec.tlsa(ee.crt, 3, 1, 1):upper(),
          pol.policy["policy-string"][1]:upper())
        assert.are.same({ "mx-ee.example.test" }, pol.policy["mx-host"])
        assert.are.equal(1, pol.summary["total-successful-session-count"])
        local out = gateway.run(gateway.shell_quote(gateway.bin()) .. " -c " ..
          gateway.shell_quote(gw.ini) .. " tlsrpt --domain only.example.test")
        local only = json.decode(out)
        assert.truthy(only and only.policies, out)
        local found
        for _, p in ipairs(only.policies) do
          for _, d in ipairs(p["failure-details"] or {}) do
            if d["result-type"] == "dane-required" then found = p end
          end
        end
        assert.truthy(found, out)
        assert.are.equal("tlsa", found.policy["policy-type"])
      end)
      zone:stop()
      assert(ok, err)
    end)
  end)

  describe("TLS-Required: No", function()
    it("goes to a plaintext hop; with the REQUIRETLS parameter the header is ignored", function()
      local r = ds.receiver()
      local gw = start({ ["plain.example"] = { next_hop = r:addr() } })
      ds.submit(gw, FROM, { "u@plain.example" }, { extra_headers = { "TLS-Required: No" } })
      local sent = ds.wait_delivery(gw, "u@plain.example", "sent")
      assert.truthy(sent:find(" tls=may:none", 1, true), sent)
      local m = r:wait_messages(1)[1]
      assert.truthy(m.text:find("TLS-Required: No", 1, true)) -- kept on the way

      submit_requiretls(gw, "v@plain.example", { "TLS-Required: no" })
      local line = ds.wait_delivery(gw, "v@plain.example", "bounced")
      assert.truthy(line:find(" dsn=5.7.10 ", 1, true), line)
      assert.are.equal(1, #r:messages())
    end)

    -- DANE: "with DNSSEC" above; MTA-STS: mta_sts_spec.lua ("TLS-Required:
    -- No sets an enforce policy aside").
  end)
end)
