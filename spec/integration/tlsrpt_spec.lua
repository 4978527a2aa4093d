-- SMTP TLS reporting (RFC 8460, README "TLS-RPT"): a day of real
-- deliveries to loopback receivers that offer STARTTLS, do not offer it,
-- or break the handshake, under may and encrypt; the counts in the spool
-- (`tlsrpt` prints the JSON report), then the reports sent (`tlsrpt
-- --send`) to the rua= of each domain's _smtp._tls TXT record, served by
-- the loopback DNS fixture, and decoded at the receiving end with Python's
-- email, gzip and json (spec/support/tlsrpt_report.py). A day left from
-- before a restart is reported at start. The reports go out despite
-- TLS failures (RFC 8460 §5.3.1): they carry "TLS-Required: No", which
-- lifts the sink's dane-only here, and their own sessions are not counted.

local gateway = require "harness"
local tls = require "tls_support"
local ds = require "delivery_support"
local dns_server = require "dns_server"
local tools = require "tools"
local json = require "dkjson"

local q = gateway.shell_quote

local RUA = "tlsrpt@reports.example"

local function txt(domain, text)
  return "_smtp._tls." .. domain .. '. TXT "' .. text .. '"'
end

local function today()
  return os.date("!%Y-%m-%d")
end

-- `smtpgw tlsrpt ARGS`: output and exit code.
local function tlsrpt_cmd(gw, args)
  return gateway.run("timeout -k 5 30 " .. q(gateway.bin()) .. " -c " ..
    q(gw.ini) .. " tlsrpt " .. (args or "") .. " </dev/null")
end

-- The printed report of one domain, once `want(report)` holds (the counts
-- reach the spool at `queue flush`).
local function wait_report(gw, domain, want)
  local report, out
  local ok = gateway.wait_for(function()
    ds.flush(gw)
    local code
    out, code = tlsrpt_cmd(gw, "--domain " .. domain)
    report = code == 0 and json.decode(out) or nil
    return report ~= nil and want(report)
  end, 20, 0.5)
  assert(ok, "no report for " .. domain .. " as wanted; last output:\n" ..
    tostring(out) .. "\nlog:\n" .. gw:log())
  return report
end

-- `count` messages to `rcpts` in one plaintext session; their queue ids.
local function submit(gw, rcpts, count)
  local r = tools.smtplib{ port = gw:port(), from = "sender@origin.example",
    to = rcpts, count = count }
  local ids = {}
  for _, st in ipairs(r.by.data or {}) do
    ids[#ids + 1] = st.code == 250 and st.text:match("queued as (%x+)") or nil
  end
  assert(#ids == count, "not queued:\n" .. r.raw)
  return ids
end

local function summary(report)
  local p = report.policies[1]
  return p.summary["total-successful-session-count"],
    p.summary["total-failure-session-count"], p
end

local function decode(path)
  local out = gateway.run(q(tools.PYTHON) .. " " ..
    q(tools.SUPPORT .. "/tlsrpt_report.py") .. " " .. q(path))
  local obj = json.decode(out:match("(%b{})%s*$") or "")
  assert(obj and not obj.error, "cannot decode " .. path .. ": " .. out)
  return obj
end

-- The report mails the receiver got, by TLS-Report-Domain.
local function reports_at(r, n)
  local by = {}
  for _, m in ipairs(r:wait_messages(n, 20)) do
    local d = decode(r.maildir .. "/" .. m.name .. ".eml")
    d.envelope = m
    by[d.tls_report_domain] = d
  end
  return by
end

describe("TLS-RPT", function()
  local dir, cert, dns

  setup(function()
    dir = gateway.mktempdir()
    cert = tls.self_signed(dir, "mx", { cn = "mx.tls.example",
      san = "DNS:mx.tls.example" })
    dns = dns_server.start{
      zones = { ["example."] = "static" },
      data = {
        txt("tls.example", "v=TLSRPTv1; rua=mailto:" .. RUA),
        txt("plain.example", "v=TLSRPTv1;rua=mailto:" .. RUA ..
          ",mailto:second@reports.example"),
        txt("enc.example", "v=TLSRPTv1; rua=mailto:" .. RUA),
        txt("broken.example", "v=TLSRPTv1; rua=mailto:" .. RUA),
        txt("broken.example", "v=TLSRPTv1; rua=mailto:other@reports.example"),
        "reports.example. A 127.0.0.1",
      },
    }
  end)

  teardown(function()
    if dns then dns:stop() end
    gateway.rm_rf(dir)
  end)
  after_each(ds.cleanup)

  local function start(receivers, extra)
    local s = ds.sections("try.lua", {
      dns = { resolver = dns:resolver() },
      -- one connection a message: a session each (a reused connection
      -- is no new session, and reuse would depend on timing here)
      delivery = { retry_min = "1h", retry_max = "1h", reuse_max_messages = 1 },
      tlsrpt = { enable = "yes", organization = "Spec Org",
        contact = "tlsrpt-admin@test.example" },
      ["domain:tls.example"] = { next_hop = receivers.tls:addr() },
      ["domain:norecord.example"] = { next_hop = receivers.tls:addr() },
      ["domain:plain.example"] = { next_hop = receivers.plain:addr() },
      ["domain:enc.example"] = { next_hop = receivers.plain:addr(),
        tls = "encrypt" },
      ["domain:broken.example"] = { next_hop = receivers.broken:addr() },
      -- dane-only to an address: deferred, unless TLS-Required: No
      ["domain:reports.example"] = { next_hop = receivers.sink:addr(),
        tls = "dane-only" },
    })
    for k, v in pairs(extra or {}) do s.tlsrpt[k] = v end
    return gateway.start{ sections = s }
  end

  it("counts a day of sessions, prints the report and sends it gzip'd to rua=", function()
    local r = {
      tls = ds.receiver{ cert = cert },
      plain = ds.receiver(),
      broken = ds.receiver{ cert = cert, break_tls = true },
      sink = ds.receiver(),
    }
    local gw = start(r)
    -- three messages (three sessions) to tls.example, two to
    -- plain.example, in one connection each; one to three other domains
    local qids = submit(gw, { "u@tls.example" }, 3)
    assert.are.equal(3, #qids)
    assert.are.equal(2, #submit(gw, { "p@plain.example" }, 2))
    local enc = submit(gw, { "b@broken.example", "n@norecord.example",
      "e@enc.example" }, 1)[1]

    ds.wait_delivery(gw, "u@tls.example", "sent", 3)
    ds.wait_delivery(gw, "p@plain.example", "sent", 2)
    ds.wait_delivery(gw, "b@broken.example", "sent") -- may: plaintext after
    ds.wait_delivery(gw, "n@norecord.example", "sent")
    ds.wait_delivery(gw, "e@enc.example", "deferred")
    -- no retry of it (the others of its message are done): the counts
    -- stay as they are
    assert.are.equal(0, select(2, ds.queue_cmd(gw, "delete", enc)))

    -- the counts, as `tlsrpt` prints them (JSON, RFC 8460 §4.4)
    local t = wait_report(gw, "tls.example", function(rep)
      return summary(rep) == 3 end)
    local ok, failed, pol = summary(t)
    assert.are.same({ 3, 0 }, { ok, failed })
    assert.are.equal("Spec Org", t["organization-name"])
    assert.are.equal("tlsrpt-admin@test.example", t["contact-info"])
    assert.are.equal(today() .. "T00:00:00Z", t["date-range"]["start-datetime"])
    assert.are.equal(today() .. "T23:59:59Z", t["date-range"]["end-datetime"])
    assert.are.equal("no-policy-found", pol.policy["policy-type"])
    assert.are.equal("tls.example", pol.policy["policy-domain"])
    assert.is_nil(pol["failure-details"])

    local p = wait_report(gw, "plain.example", function(rep)
      return select(2, summary(rep)) == 2 end)
    ok, failed, pol = summary(p)
    assert.are.same({ 0, 2 }, { ok, failed })
    local fd = pol["failure-details"]
    assert.are.equal(1, #fd, json.encode(p))
    assert.are.equal("starttls-not-supported", fd[1]["result-type"])
    assert.are.equal(2, fd[1]["failed-session-count"])
    assert.are.equal("127.0.0.1", fd[1]["receiving-ip"])
    assert.are.equal("127.0.0.1", fd[1]["sending-mta-ip"])
    assert.are.equal("127.0.0.1", fd[1]["receiving-mx-hostname"])

    local b = wait_report(gw, "broken.example", function(rep)
      return select(2, summary(rep)) == 1 end)
    ok, failed, pol = summary(b)
    assert.are.same({ 0, 1 }, { ok, failed }) -- the plaintext retry is none
    assert.are.equal("validation-failure",
      pol["failure-details"][1]["result-type"])
    assert.truthy(pol["failure-details"][1]["failure-reason-code"])

    local e = wait_report(gw, "enc.example", function(rep)
      return select(2, summary(rep)) == 1 end)
    assert.are.equal("starttls-not-supported",
      select(3, summary(e))["failure-details"][1]["result-type"])

    -- every domain of the day at once: a JSON array
    local out, code = tlsrpt_cmd(gw, "--date " .. today())
    assert.are.equal(0, code, out)
    local all = json.decode(out)
    local domains = {}
    for _, rep in ipairs(all) do domains[#domains + 1] = rep.policies[1].policy["policy-domain"] end
    table.sort(domains)
    assert.are.same({ "broken.example", "enc.example", "norecord.example",
      "plain.example", "tls.example" }, domains)

    -- sent now (not at midnight): one mail per domain with a record
    out, code = tlsrpt_cmd(gw, "--send")
    assert.are.equal(0, code, out)
    assert.truthy(out:find("tlsrpt --send: sent SIGUSR1", 1, true), out)
    gw:wait_log_count("event=tlsrpt .*status=queued", 3, 20)
    gw:wait_log("event=tlsrpt domain=broken.example .*status=none .*reason=\"more than one")
    gw:wait_log("event=tlsrpt domain=norecord.example .*status=none")
    local by = reports_at(r.sink, 3)

    local m = assert(by["plain.example"], "no report for plain.example")
    assert.are.equal("multipart/report", m.content_type)
    assert.are.equal("tlsrpt", m.report_type)
    assert.are.same({ "text/plain", "application/tlsrpt+gzip" }, m.parts)
    assert.are.equal("mx.test.example", m.tls_report_submitter)
    assert.are.equal("No", m.tls_required)
    assert.are.equal("", m.envelope.from) -- the null sender: never bounced
    table.sort(m.envelope.rcpts)
    assert.are.same({ "second@reports.example", RUA }, m.envelope.rcpts)
    local rep = m.report
    assert.truthy(m.subject:match("^Report Domain: plain%.example Submitter: " ..
      "mx%.test%.example Report%-ID: <(.+)>$"), m.subject)
    assert.are.equal("<" .. rep["report-id"] .. ">",
      m.subject:match("Report%-ID: (<.+>)$"))
    -- RFC 8460 §5.3: sender!policy-domain!begin!end!unique.json.gz
    local begin, stop = m.filename:match(
      "^mx%.test%.example!plain%.example!(%d+)!(%d+)!%w+%.json%.gz$")
    assert.truthy(begin, m.filename)
    assert.are.equal(0, tonumber(begin) % 86400)
    assert.truthy(tonumber(stop) > tonumber(begin))
    ok, failed = summary(rep)
    assert.are.same({ 0, 2 }, { ok, failed })
    assert.are.equal("starttls-not-supported",
      rep.policies[1]["failure-details"][1]["result-type"])
    assert.are.equal(3, select(1, summary(by["tls.example"].report)))
    assert.are.equal(1, select(2, summary(by["enc.example"].report)))

    -- reported: not again; the report deliveries (in plaintext, at may
    -- by TLS-Required: No) left no counts of their own (RFC 8460 §5.3.1)
    for _, l in ipairs(gw:wait_log_count("event=delivery .*to=<" .. RUA ..
      ">.*status=sent", 3)) do
      assert.truthy(l:find(" tls=may:none", 1, true), l)
    end
    ds.flush(gw)
    out, code = tlsrpt_cmd(gw, "--domain reports.example")
    assert.are.equal(1, code, out)
    assert.truthy(out:find("no counts", 1, true), out)
    assert.are.equal(0, select(2, tlsrpt_cmd(gw, "--send")))
    -- the request is taken; a run with nothing left to report logs nothing
    assert.truthy(gateway.wait_for(function()
      return not gateway.exists(gw:spool() .. "/tlsrpt/send-" .. today())
    end, 20), "the second --send was not taken")
    local runs = gw:log_lines("event=tlsrpt_run ")
    assert.are.equal(1, #runs, gw:log())
    assert.truthy(runs[1]:find(" queued=3 none=2 deferred=0", 1, true), runs[1])
    assert.are.equal(3, #r.sink:messages())
    -- but `tlsrpt` still prints the whole day
    assert.are.equal(2, select(2, summary(json.decode(
      (tlsrpt_cmd(gw, "--domain plain.example"))))))
  end)

  it("reports a finished day left from before a restart, at start", function()
    local r = { tls = ds.receiver{ cert = cert }, plain = ds.receiver(),
      broken = ds.receiver(), sink = ds.receiver() }
    local gw = start(r, { send_delay = "0" })
    assert(gw:kill("TERM"))
    local day = os.date("!%Y-%m-%d", os.time() - 86400)
    local path = gw:spool() .. "/tlsrpt/" .. day
    assert.are.equal(0, select(2, gateway.run("mkdir -p " .. q(path))))
    gateway.write_file(path .. "/tls.example", "smtpgw-tlsrpt: 1\n" ..
      "S\t5\tno-policy-found\ttls.example\t\t\t-\t\t\t\t\n" ..
      "F\t2\tno-policy-found\ttls.example\t\t\tcertificate-expired\t" ..
      "mx.tls.example\t192.0.2.1\t192.0.2.2\tcertificate has expired\n" ..
      "S\t1\tno-policy-found\ttls.example\t\t\t-\t\t\t\t\n" ..
      "F\t1\tno-policy-found\ttls.exa") -- torn by a crash: skipped
    gateway.run("id -u smtpgw >/dev/null 2>&1 && chown -R smtpgw " ..
      q(gw:spool() .. "/tlsrpt"))
    gw:restart()
    gw:wait_log("event=tlsrpt domain=tls%.example date=" .. day:gsub("%-", "%%-") ..
      " status=queued", 20)
    local m = reports_at(r.sink, 1)["tls.example"]
    local ok, failed, pol = summary(m.report)
    assert.are.same({ 6, 2 }, { ok, failed })
    assert.are.equal(day .. "T00:00:00Z", m.report["date-range"]["start-datetime"])
    assert.are.equal(day .. "T23:59:59Z", m.report["date-range"]["end-datetime"])
    local d = pol["failure-details"][1]
    assert.are.equal("certificate-expired", d["result-type"])
    assert.are.equal("mx.tls.example", d["receiving-mx-hostname"])
    assert.are.equal("192.0.2.1", d["receiving-ip"])
    assert.are.equal("192.0.2.2", d["sending-mta-ip"])
    assert.are.equal("certificate has expired", d["failure-reason-code"])
    assert.truthy(gateway.exists(path .. "/tls.example.sent"))
    assert.falsy(gateway.exists(path .. "/tls.example"))
  end)

  it("tlsrpt refuses bad arguments and --send when reporting is off", function()
    local gw = gateway.start{}
    local out, code = tlsrpt_cmd(gw, "--date 2026-02-30")
    assert.are_not.equal(0, code, out)
    out, code = tlsrpt_cmd(gw, "--send --domain x.example")
    assert.are_not.equal(0, code, out)
    out, code = tlsrpt_cmd(gw, "--send")
    assert.are.equal(1, code, out)
    assert.truthy(out:find("enable is no", 1, true), out)
    out, code = tlsrpt_cmd(gw, "")
    assert.are.equal(0, code, out)
    assert.are.same({}, json.decode(out))
  end)
end)
