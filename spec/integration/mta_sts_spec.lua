-- MTA-STS (RFC 8461) outbound, with real components on loopback (README
-- "MTA-STS"): unbound serves the _mta-sts TXT records, the MX records and
-- the addresses (spec/support/dns_server.lua); Python's http.server with
-- ssl serves the policies on port 443 of a loopback address of its own
-- (spec/support/https_server.py) with a certificate of a test CA made by
-- openssl, which is the gateway's ca_file; a STARTTLS receiver on port 25
-- of another loopback address is every MX host, with a certificate of the
-- same CA for the MX names. The gateway runs the stock try.lua, which
-- follows an enforce policy (level sts). The last spec signs its zones
-- (spec/support/dnssec_zone.lua) to show DANE and MTA-STS together.

local gateway = require "harness"
local ds = require "delivery_support"
local dns_server = require "dns_server"
local dnssec = require "dnssec_zone"
local tlss = require "tls_support"
local procs = require "procs"
local tools = require "tools"
local json = require "dkjson"
local json_quote -- below

local q = gateway.shell_quote

-- Every MX name the receiver's certificate carries; other.*.test names
-- resolve to it too but are not in the certificate.
local MX_NAMES = { "mx.good.test", "mx.evil.test", "mx.cached.test" }
-- The policy hosts the web server's certificate carries (not
-- mta-sts.wrongcert.test).
local STS_DOMAINS = { "good.test", "outside.test", "trial.test", "trial2.test",
  "badcert.test", "redirect.test", "html.test", "big.test", "restart.test",
  "seeded.test", "renew.test", "refresh.test", "both.test", "nodane.test" }

local function random_loopback()
  return string.format("127.%d.%d.%d", math.random(64, 250), math.random(1, 250),
    math.random(2, 250))
end

local function policy(mode, mx, max_age)
  local lines = { "version: STSv1", "mode: " .. mode }
  for _, m in ipairs(mx) do lines[#lines + 1] = "mx: " .. m end
  lines[#lines + 1] = "max_age: " .. tostring(max_age or 86400)
  return table.concat(lines, "\r\n") .. "\r\n"
end

function json_quote(s)
  local escaped = s:gsub('[%c"\\]', function(c)
    return string.format("\\u%04x", c:byte())
  end)
  return '"' .. escaped .. '"'
end

-- The web server's answers: { ["mta-sts.D"] = { status=, type=, body=,
-- repeat=, location= } } as JSON for https_server.py.
local function web_config(answers)
  local parts = {}
  for host, a in pairs(answers) do
    local fields = {}
    for k, v in pairs(a) do
      local value = type(v) == "number" and tostring(v) or json_quote(tostring(v))
      fields[#fields + 1] = json_quote(k) .. ": " .. value
    end
    parts[#parts + 1] = json_quote(host .. "/.well-known/mta-sts.txt") .. ": {" ..
      table.concat(fields, ", ") .. "}"
  end
  return "{" .. table.concat(parts, ",\n") .. "}\n"
end

local ANSWERS = {
  ["mta-sts.good.test"] = { body = policy("enforce", { "mx.good.test" }) },
  ["mta-sts.outside.test"] = { body = policy("enforce", { "*.outside.test" }) },
  ["mta-sts.trial.test"] = { body = policy("testing", { "*.trial.test" }) },
  ["mta-sts.trial2.test"] = { body = policy("testing", { "other.trial2.test" }) },
  ["mta-sts.badcert.test"] = { body = policy("enforce", { "other.badcert.test" }) },
  ["mta-sts.redirect.test"] = { status = 301, location = "https://mta-sts.good.test/.well-known/mta-sts.txt",
    body = "moved\n" },
  ["mta-sts.html.test"] = { type = "text/html", body = policy("enforce", { "*.nowhere.test" }) },
  ["mta-sts.big.test"] = { body = "# padding to pass 64 KiB\n", ["repeat"] = 3000 },
  ["mta-sts.wrongcert.test"] = { body = policy("enforce", { "*.nowhere.test" }) },
  ["mta-sts.restart.test"] = { body = policy("enforce", { "mx.good.test" }) },
  ["mta-sts.seeded.test"] = { status = 500, body = "broken\n" },
  ["mta-sts.renew.test"] = { body = policy("enforce", { "mx.good.test" }) },
  ["mta-sts.refresh.test"] = { body = policy("enforce", { "mx.good.test" }, 604800) },
  -- with DANE (signed zones): policies that name none of their MX hosts
  ["mta-sts.both.test"] = { body = policy("enforce", { "*.nowhere.test" }) },
  ["mta-sts.nodane.test"] = { body = policy("enforce", { "*.nowhere.test" }) },
}

-- The zone: an MX and a TXT record per domain, and the addresses.
local function dns_data(rx_ip, web_ip)
  local data = {}
  local function add(rr) data[#data + 1] = rr end
  local function sts(domain, id, mx)
    add(domain .. ". MX 10 " .. mx .. ".")
    if id then add("_mta-sts." .. domain .. '. 0 TXT "v=STSv1; id=' .. id .. ';"') end
    add("mta-sts." .. domain .. ". A " .. web_ip)
  end
  for _, name in ipairs(MX_NAMES) do add(name .. ". A " .. rx_ip) end
  add("other.trial2.test. A " .. rx_ip)
  add("other.badcert.test. A " .. rx_ip)
  sts("good.test", "g1", "mx.good.test")
  sts("outside.test", "o1", "mx.evil.test")
  sts("trial.test", "t1", "mx.evil.test")
  sts("trial2.test", "t2", "other.trial2.test")
  sts("badcert.test", "b1", "other.badcert.test")
  sts("redirect.test", "r1", "mx.good.test")
  sts("html.test", "h1", "mx.good.test")
  sts("big.test", "z1", "mx.good.test")
  sts("wrongcert.test", "w1", "mx.good.test")
  sts("restart.test", "s1", "mx.good.test")
  sts("seeded.test", "new2", "mx.good.test")
  sts("renew.test", "new3", "mx.good.test")
  sts("refresh.test", "same4", "mx.good.test")
  sts("plain.test", nil, "mx.good.test")
  return data
end

local function zones()
  local z = {}
  for _, d in ipairs({ "good.test", "evil.test", "cached.test", "outside.test", "trial.test",
    "trial2.test", "badcert.test", "redirect.test", "html.test", "big.test", "wrongcert.test",
    "restart.test", "seeded.test", "renew.test", "refresh.test", "plain.test" }) do
    z[d .. "."] = "static"
  end
  return z
end

-- A cache file as the gateway writes it (README "Spool").
local function cache_text(id, fetched, body)
  return "smtpgw-sts-cache: 1\nid: " .. id .. "\nfetched: " .. tostring(fetched) .. "\n\n" .. body
end

describe("MTA-STS", function()
  local dir, pki, rx, web, dns, gw, web_log, web_conf, mx_cert, rx_ip, web_ip

  local function write_web(answers)
    gateway.write_file(web_conf .. ".tmp", web_config(answers))
    os.rename(web_conf .. ".tmp", web_conf)
  end

  local function fetches(host)
    local n = 0
    for line in (gateway.read_file(web_log) or ""):gmatch("[^\n]+") do
      if line:find(host .. " /.well-known/mta-sts.txt", 1, true) == 1 then n = n + 1 end
    end
    return n
  end

  local function start_gateway()
    gw = gateway.start{ sections = ds.sections("try.lua", {
      dns = { resolver = dns:resolver() },
      tls = { ca_file = pki.ca.crt },
      tlsrpt = { enable = "yes" }, -- counts only: no _smtp._tls records here
    }) }
    return gw
  end

  -- The TLS report of `domain` today (`smtpgw tlsrpt`), once `want(report)`
  -- holds (the counts reach the spool at `queue flush`).
  local function tls_report(domain, want)
    local report, out
    local ok = gateway.wait_for(function()
      ds.flush(gw)
      local code
      out, code = gateway.run("timeout -k 5 30 " .. q(gateway.bin()) .. " -c " ..
        q(gw.ini) .. " tlsrpt --domain " .. domain .. " </dev/null")
      report = code == 0 and json.decode(out) or nil
      return report ~= nil and want(report)
    end, 20, 0.5)
    assert(ok, "no TLS report for " .. domain .. " as wanted:\n" .. tostring(out))
    return report
  end

  local function line_with(pattern)
    for _, l in ipairs(gw:log_lines(pattern)) do return l end
    return nil
  end

  setup(function()
    dir = gateway.mktempdir()
    pki = tlss.make_pki(dir .. "/pki")
    local mx_san = {}
    for _, n in ipairs(MX_NAMES) do mx_san[#mx_san + 1] = "DNS:" .. n end
    mx_cert = tlss.signed(pki.dir, "mx", pki.ca, { cn = MX_NAMES[1], eku = "serverAuth",
      san = table.concat(mx_san, ",") })
    local web_san = {}
    for _, d in ipairs(STS_DOMAINS) do web_san[#web_san + 1] = "DNS:mta-sts." .. d end
    local web_cert = tlss.signed(pki.dir, "web", pki.ca, { cn = "mta-sts.good.test",
      eku = "serverAuth", san = table.concat(web_san, ",") })
    for _ = 1, 5 do
      rx_ip, web_ip = random_loopback(), random_loopback()
      local ok, r = pcall(ds.receiver, { host = rx_ip, port = 25, cert = mx_cert })
      if ok and rx_ip ~= web_ip then rx = r break end
      if ok then r:stop() end
    end
    assert(rx, "no loopback address with port 25 free")
    web_log, web_conf = dir .. "/web.log", dir .. "/web.json"
    write_web(ANSWERS)
    web = procs.start({ tools.PYTHON, tools.SUPPORT .. "/https_server.py", "--host", web_ip,
      "--port", "443", "--cert", web_cert.crt, "--key", web_cert.key, "--config", web_conf,
      "--log", web_log }, { ready = "listening (%d+)" })
    dns = dns_server.start{ zones = zones(), data = dns_data(rx_ip, web_ip) }
  end)

  teardown(function()
    ds.cleanup()
    if web then web:stop() end
    if dns then dns:stop() end
    gateway.rm_rf(dir)
  end)

  after_each(function()
    if gw then gw:stop() end
    gw = nil
  end)

  it("enforce, an MX in the policy, a certificate that verifies: sent at level sts", function()
    start_gateway()
    ds.submit(gw, "sender@origin.example", { "ann@good.test", "bob@plain.test" })
    local sent = ds.wait_delivery(gw, "ann@good.test", "sent", 1, 30)
    assert.truthy(sent:find("tls=sts:TLSv1.3 verified=yes", 1, true), sent)
    assert.truthy(sent:find("relay=mx.good.test[", 1, true), sent)
    local plain = ds.wait_delivery(gw, "bob@plain.test", "sent", 1, 30)
    assert.truthy(plain:find("tls=may:TLSv1", 1, true), plain)
    local pol = assert(line_with("event=mta_sts_policy[^\n]*domain=good%.test"), gw:log())
    assert.truthy(pol:find("id=g1 mode=enforce max_age=86400 mx=mx.good.test", 1, true), pol)
    assert.are.equal(1, fetches("mta-sts.good.test"))
    local cache = gateway.read_file(gw:spool() .. "/sts/good.test")
    assert.truthy(cache and cache:find("^smtpgw%-sts%-cache: 1\nid: g1\nfetched: %d+\n\nversion: STSv1"), cache)
    assert.are.same({}, gw:log_lines("event=mta_sts_failure"))

    -- explain reads the cache: which mechanism decides
    local function explain(rcpt)
      local out, code = gateway.run(q(gateway.bin()) .. " -c " .. q(gw.ini) ..
        " explain --client 127.0.0.1 --rcpt " .. rcpt)
      assert.are.equal(0, code, out)
      return out
    end
    local out = explain("ann@good.test")
    assert.truthy(out:find("\nmta%-sts +enforce, id g1, cached until %d+%-"), out)
    assert.truthy(out:find("\noutbound +sts%s+decided by client_tls\n"), out)
    assert.truthy(out:find("\nmechanism +MTA%-STS %(enforce, id g1%): verified TLS for the MX host name, " ..
      "only MX hosts mx%.good%.test\n"), out)
    out = explain("bob@plain.test")
    assert.truthy(out:find("\nmta%-sts +none cached for plain%.test"), out)
    assert.truthy(out:find("\noutbound +may%s+decided by client_tls\n"), out)
    assert.truthy(out:find("\nmechanism +the level may\n"), out)
  end)

  -- Submits to rcpt under an enforce policy that refuses its MX host:
  -- the mail waits with `reply` in the reason, the failure of `result` is
  -- logged, and the receiver got nothing for it.
  local function refused(rcpt, reply, result)
    start_gateway()
    ds.submit(gw, "sender@origin.example", { rcpt })
    local line = ds.wait_delivery(gw, rcpt, "deferred", 1, 30)
    for _, text in ipairs(reply) do
      assert.truthy(line:find(text, 1, true), line)
    end
    local domain = rcpt:match("@(.*)$")
    local f = assert(line_with("event=mta_sts_failure[^\n]*domain=" .. domain:gsub("%.", "%%.")), gw:log())
    assert.truthy(f:find(result, 1, true), f)
    -- the delivery line names the policy's reason too
    assert.are.equal(ds.field(f, "reason"), ds.field(line, "reason"), line)
    local _, count = rx:rcpts()
    assert.is_nil(count[rcpt])
  end

  it("enforce: an MX outside the policy is not used, the mail waits with the reason", function()
    refused("cat@outside.test", { "4.7.5 MX host mx.evil.test is not in the MTA-STS policy of outside.test " ..
      "(mode enforce, id o1, mx *.outside.test)", "tls=sts:none" },
      "mode=enforce id=o1 result=validation-failure mx=mx.evil.test")
  end)

  it("enforce: a certificate not valid for the MX name defers, with the policy named", function()
    refused("dan@badcert.test", { "4.7.5 Cannot start TLS with other.badcert.test[",
      "(MTA-STS policy of badcert.test: enforce, id b1)" }, "result=certificate-host-mismatch")
  end)

  it("testing: sent at the usual level, and the failures logged", function()
    start_gateway()
    ds.submit(gw, "sender@origin.example", { "eve@trial.test", "fay@trial2.test" })
    local sent = ds.wait_delivery(gw, "eve@trial.test", "sent", 1, 30)
    assert.truthy(sent:find("tls=may:TLSv1.3", 1, true), sent)
    ds.wait_delivery(gw, "fay@trial2.test", "sent", 1, 30)
    local f = assert(line_with("event=mta_sts_failure[^\n]*domain=trial%.test"), gw:log())
    assert.truthy(f:find("mode=testing id=t1 result=validation-failure mx=mx.evil.test", 1, true), f)
    assert.truthy(f:find('msg="delivered as usual (mode testing)"', 1, true), f)
    -- its MX is in the policy, but not in the certificate: what enforce
    -- would have refused, found after the handshake
    f = assert(line_with("event=mta_sts_failure[^\n]*domain=trial2%.test"), gw:log())
    assert.truthy(f:find("mode=testing id=t2 result=certificate-host-mismatch mx=other.trial2.test", 1, true), f)
    -- and counted as failures under the policy, for TLS-RPT (RFC 8460 §4.3)
    local function sts_failure(rep, result)
      local pol = rep.policies and rep.policies[1]
      local d = pol and pol["failure-details"] and pol["failure-details"][1]
      return pol and pol.policy["policy-type"] == "sts" and d and
        d["result-type"] == result and pol
    end
    local pol = sts_failure(tls_report("trial.test", function(rep)
      return sts_failure(rep, "validation-failure") end), "validation-failure")
    assert.truthy(pol.policy["policy-string"][2] == "mode: testing", json.encode(pol))
    assert.are.same({ "*.trial.test" }, pol.policy["mx-host"])
    assert.are.equal("mx.evil.test", pol["failure-details"][1]["receiving-mx-hostname"])
    assert.are.equal(1, pol.summary["total-failure-session-count"], json.encode(pol))
    assert.are.equal(0, pol.summary["total-successful-session-count"], json.encode(pol))
    pol = sts_failure(tls_report("trial2.test", function(rep)
      return sts_failure(rep, "certificate-host-mismatch") end), "certificate-host-mismatch")
    assert.are.equal(1, pol.summary["total-failure-session-count"], json.encode(pol))
    assert.are.equal(0, pol.summary["total-successful-session-count"], json.encode(pol))
  end)

  -- RFC 8689 §4.2.2: TLS-Required: No sets the recipient's policy aside
  it("TLS-Required: No sets an enforce policy aside: sent to an MX outside it", function()
    start_gateway()
    ds.submit(gw, "sender@origin.example", { "cy@outside.test" },
      { extra_headers = { "TLS-Required: No" } })
    local sent = ds.wait_delivery(gw, "cy@outside.test", "sent", 1, 30)
    assert.truthy(sent:find("relay=mx.evil.test[", 1, true), sent)
    assert.truthy(sent:find(" tls=may:TLSv1", 1, true), sent)
  end)

  it("a policy that cannot be had is no policy: redirect, media type, size, web certificate", function()
    start_gateway()
    local good_before = fetches("mta-sts.good.test")
    local rcpts = { "gus@redirect.test", "hal@html.test", "ivy@big.test", "jon@wrongcert.test" }
    ds.submit(gw, "sender@origin.example", rcpts)
    for _, r in ipairs(rcpts) do
      local sent = ds.wait_delivery(gw, r, "sent", 1, 30)
      assert.truthy(sent:find("tls=may:", 1, true), sent)
    end
    local function failed(domain)
      return assert(line_with("event=mta_sts_fetch_failed[^\n]*domain=" .. domain:gsub("%.", "%%.")),
        gw:log())
    end
    local r = failed("redirect.test")
    assert.truthy(r:find("result=sts-policy-fetch-error", 1, true) and
      r:find("HTTP status 301", 1, true) and r:find("cached=no", 1, true), r)
    r = failed("html.test")
    assert.truthy(r:find('result=sts-policy-invalid reason="media type \\"text/html\\"', 1, true), r)
    r = failed("big.test")
    assert.truthy(r:find("result=sts-policy-fetch-error", 1, true) and r:find("65536", 1, true), r)
    r = failed("wrongcert.test")
    assert.truthy(r:find("result=sts-webpki-invalid", 1, true), r)
    -- the redirect was not followed
    assert.are.equal(1, fetches("mta-sts.redirect.test"))
    assert.are.equal(good_before, fetches("mta-sts.good.test"))
  end)

  it("the cache survives a restart: the same id is not fetched again", function()
    start_gateway()
    ds.submit(gw, "sender@origin.example", { "kim@restart.test" })
    ds.wait_delivery(gw, "kim@restart.test", "sent", 1, 30)
    assert.are.equal(1, fetches("mta-sts.restart.test"))
    assert.is_true(gw:kill("TERM"))
    -- the policy server now fails; the cached policy must still apply
    local answers = {}
    for k, v in pairs(ANSWERS) do answers[k] = v end
    answers["mta-sts.restart.test"] = { status = 500, body = "down\n" }
    write_web(answers)
    local ok, err = pcall(function()
      gw:restart()
      ds.submit(gw, "sender@origin.example", { "lou@restart.test" })
      local sent = ds.wait_delivery(gw, "lou@restart.test", "sent", 1, 30)
      assert.truthy(sent:find("tls=sts:TLSv1.3 verified=yes", 1, true), sent)
      assert.are.equal(1, fetches("mta-sts.restart.test"))
    end)
    write_web(ANSWERS)
    if not ok then error(err, 0) end
  end)

  it("a failed fetch leaves a cached policy in force; a new id is fetched", function()
    start_gateway()
    -- the queue manager makes SPOOL/sts when it starts
    assert.truthy(gateway.wait_for(function() return gateway.exists(gw:spool() .. "/sts") end),
      "no " .. gw:spool() .. "/sts")
    local now = os.time()
    -- seeded.test: the TXT says id new2, its server answers 500: the
    -- cached enforce policy (id old1) stays
    gateway.write_file(gw:spool() .. "/sts/seeded.test",
      cache_text("old1", now - 60, policy("enforce", { "mx.good.test" })))
    -- renew.test: cached testing policy old3; the TXT says new3, whose
    -- policy is enforce
    gateway.write_file(gw:spool() .. "/sts/renew.test",
      cache_text("old3", now - 60, policy("testing", { "*.nowhere.test" })))
    -- refresh.test: the same id, but fetched 2 days ago (max_age a week):
    -- used at once, and fetched again beside
    gateway.write_file(gw:spool() .. "/sts/refresh.test",
      cache_text("same4", now - 2 * 86400, policy("enforce", { "mx.good.test" }, 604800)))
    ds.submit(gw, "sender@origin.example", { "max@seeded.test", "ned@renew.test", "oli@refresh.test" })
    local sent = ds.wait_delivery(gw, "max@seeded.test", "sent", 1, 30)
    assert.truthy(sent:find("tls=sts:TLSv1.3 verified=yes", 1, true), sent)
    local f = assert(line_with("event=mta_sts_fetch_failed[^\n]*domain=seeded%.test"), gw:log())
    assert.truthy(f:find("id=new2 result=sts-policy-fetch-error", 1, true) and f:find("cached=yes", 1, true), f)
    assert.truthy(gateway.read_file(gw:spool() .. "/sts/seeded.test"):find("\nid: old1\n", 1, true))

    sent = ds.wait_delivery(gw, "ned@renew.test", "sent", 1, 30)
    assert.truthy(sent:find("tls=sts:TLSv1.3", 1, true), sent)
    assert.truthy(gateway.wait_for(function()
      return (gateway.read_file(gw:spool() .. "/sts/renew.test") or ""):find("\nid: new3\n", 1, true)
    end), gateway.read_file(gw:spool() .. "/sts/renew.test"))

    sent = ds.wait_delivery(gw, "oli@refresh.test", "sent", 1, 30)
    assert.truthy(sent:find("tls=sts:TLSv1.3", 1, true), sent)
    assert.truthy(gateway.wait_for(function()
      local c = gateway.read_file(gw:spool() .. "/sts/refresh.test") or ""
      local t = tonumber(c:match("\nfetched: (%d+)\n"))
      return t and t >= now
    end), "refresh.test was not fetched again: " .. tostring(gateway.read_file(web_log)))
    assert.are.equal(1, fetches("mta-sts.refresh.test"))
  end)

  -- RFC 8461 §2: where DANE applies, it wins. Both domains publish an
  -- enforce policy that names none of their MX hosts, in signed zones;
  -- both.test's MX has a TLSA record for the receiver's key, nodane.test's
  -- has none (a secure denial). Under the level dane, the first is
  -- DANE's and goes out; the second is MTA-STS's, and waits.
  it("with DANE: a host DANE authenticates is DANE's, the others follow the MTA-STS policy", function()
    local zone = dnssec.start{ zones = {
      { name = "both.test", records = {
        "@ MX 10 mx", "mx A " .. rx_ip,
        "_25._tcp.mx TLSA " .. dnssec.tlsa(mx_cert.crt, 3, 1, 1),
        '_mta-sts TXT "v=STSv1; id=d1;"', "mta-sts A " .. web_ip } },
      { name = "nodane.test", records = {
        "@ MX 10 mx", "mx A " .. rx_ip,
        '_mta-sts TXT "v=STSv1; id=n1;"', "mta-sts A " .. web_ip } },
    } }
    local ok, err = pcall(function()
      gw = gateway.start{ sections = ds.sections("try.lua", {
        dns = { resolver = zone:resolver(), trust_anchor = zone:trust_anchor() },
        tls = { ca_file = pki.ca.crt },
        ["domain:both.test"] = { tls = "dane" },
        ["domain:nodane.test"] = { tls = "dane" },
      }) }
      ds.submit(gw, "sender@origin.example", { "pat@both.test", "quinn@nodane.test" })
      local sent = ds.wait_delivery(gw, "pat@both.test", "sent", 1, 30)
      assert.truthy(sent:match(" tls=dane:TLSv1%.[23] verified=dane%-ee "), sent)
      local line = ds.wait_delivery(gw, "quinn@nodane.test", "deferred", 1, 30)
      assert.truthy(line:find("4.7.5 MX host mx.nodane.test is not in the MTA-STS policy of nodane.test", 1, true),
        line)
      -- both policies were fetched; only nodane.test's was applied
      assert.truthy(line_with("event=mta_sts_policy[^\n]*domain=both%.test"), gw:log())
      assert.is_nil(line_with("event=mta_sts_failure[^\n]*domain=both%.test"), gw:log())
      local _, count = rx:rcpts()
      assert.are.equal(1, count["pat@both.test"])
      assert.is_nil(count["quinn@nodane.test"])
    end)
    zone:stop()
    if not ok then error(err, 0) end
  end)
end)
