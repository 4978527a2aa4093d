-- Hot reload of gateway.ini and the policy (README "Hot reload", "Command
-- line": SIGHUP and `smtpgw -c FILE reload`): a broken script is refused and
-- the running one stays in charge, a good one takes over for new
-- connections, a session keeps the configuration it started with, and
-- nothing is refused or dropped while the gateway reloads under load
-- (spec/support/smtp_load.py, Python threads with smtplib).

local json = require "dkjson"
local gateway = require "harness"
local client = require "smtp_client"
local h = require "helpers"
local tools = require "tools"
local ps = require "policy_support"
local R = h.R

local q = gateway.shell_quote

local RELOAD_OK = "event=reload status=ok"
local RELOAD_FAILED = "event=reload status=failed"

-- Version n of the test policy: its rcpt hook refuses probe@example.test
-- with a text naming n, and, with opts.marker, marker@example.test too.
local function version_script(n, opts)
  opts = opts or {}
  local lines = {
    "-- test policy, version " .. n,
    "local gateway = require 'gateway'",
    "local policy = {}",
    "function policy.rcpt(ctx)",
    "  if ctx.recipient == 'probe@example.test' then",
    "    return gateway.reject(550, '5.7.1 probe refused by version " .. n .. "')",
    "  end",
  }
  if opts.marker then
    lines[#lines + 1] = "  if ctx.recipient == 'marker@example.test' then"
    lines[#lines + 1] = "    return gateway.reject(550, '5.7.1 marker refused by version " .. n .. "')"
    lines[#lines + 1] = "  end"
  end
  lines[#lines + 1] = "  return gateway.accept()"
  lines[#lines + 1] = "end"
  lines[#lines + 1] = "return policy"
  return ps.lines(lines)
end

local function probe_refused(n)
  return "550 5.7.1 probe refused by version " .. n
end

-- A new session: RCPT probe@example.test must get `want`; then a message
-- for user@example.test is queued.
local function probe(gw, want)
  local c = h.session(gw)
  c:cmd("MAIL FROM:<sender@example.org>", R.mail_ok)
  c:cmd("RCPT TO:<probe@example.test>", want)
  c:cmd("RCPT TO:<user@example.test>", R.rcpt_ok)
  local code, text = h.data(c, h.message("probe"))
  assert(code == 250 and text:match(R.queued), tostring(text))
  c:cmd("QUIT", R.bye)
  c:close()
end

-- Sends SIGHUP and waits for the n-th reload line of `status`; returns it.
local function hup(gw, pattern, n)
  gw:signal("HUP")
  local lines = gw:wait_log_count(pattern, n)
  return lines[n]
end

describe("hot reload", function()
  teardown(function()
    client.close_all()
    ps.stop_all()
    h.cleanup()
  end)

  after_each(function()
    client.close_all()
    ps.stop_all()
    h.cleanup()
  end)

  it("refuses a broken script with FILE:LINE and keeps the old decisions; a fixed one takes over", function()
    local gw, script = ps.start_with_script(version_script(1))
    probe(gw, probe_refused(1))

    -- a syntax error
    local broken = ps.lines {
      "local gateway = require 'gateway'",
      "local policy = {}",
      "function policy.rcpt(ctx)",
      "  return gateway.reject(550, '5.7.1 never loaded'",
      "end -- @syntax",
      "return policy",
    }
    ps.write_script(script, broken)
    local line = hup(gw, RELOAD_FAILED, 1)
    local reason = ps.log_value(line, "reason")
    local where = script .. ":" .. ps.line_of(broken, "@syntax") .. ":"
    assert.are.equal(where, reason:sub(1, #where), line)
    assert.truthy(line:find(" level=error ", 1, true), line)
    probe(gw, probe_refused(1))

    -- a script without hooks
    ps.write_script(script, "return { _not_a_hook = true }\n")
    line = hup(gw, RELOAD_FAILED, 2)
    assert.are.equal(script .. ": the script returns no hook (server_tls, client_tls, connect, " ..
      "helo, mail, rcpt)", ps.log_value(line, "reason"), line)
    probe(gw, probe_refused(1))

    -- a bad gateway.ini (the script itself is fine by now)
    ps.write_script(script, version_script(99))
    local ini_text = gateway.read_file(gw.ini)
    gateway.write_file(gw.ini, ini_text .. "\n[policy]\nno_such_key = 1\n")
    line = hup(gw, RELOAD_FAILED, 3)
    assert.truthy(ps.log_value(line, "reason"):find(gw.ini .. ":", 1, true), line)
    probe(gw, probe_refused(1))
    gateway.write_file(gw.ini, ini_text)
    assert.are.equal(0, #gw:log_lines(RELOAD_OK))

    -- fixed: the new decision applies to new connections
    ps.write_script(script, version_script(2))
    line = hup(gw, RELOAD_OK, 1)
    assert.are.equal(script, ps.log_value(line, "script"), line)
    assert.truthy(line:find(" generation=%d+"), line)
    probe(gw, probe_refused(2))
    assert.are.equal(3, #gw:log_lines(RELOAD_FAILED))
    assert.are.equal(0, #gw:log_lines("event=policy_error"))
  end)

  it("`smtpgw -c FILE reload` signals the pid in SPOOL/smtpgw.pid, waits and says the outcome", function()
    local gw, script = ps.start_with_script(version_script(1))
    local pidfile = gateway.read_file(gw:spool() .. "/smtpgw.pid")
    assert.are.equal(tostring(gw.pid), pidfile and pidfile:match("^(%d+)\n$"))
    probe(gw, probe_refused(1))

    ps.write_script(script, version_script(2))
    local out, err, code = ps.smtpgw("-c " .. q(gw.ini) .. " reload")
    assert.are.equal(0, code, out .. err)
    local ok_line = gw:wait_log_count(RELOAD_OK, 1)[1]
    assert.are.equal("reload: ok, generation " .. ps.log_value(ok_line, "generation") .. "\n", out)
    probe(gw, probe_refused(2))

    -- a broken script through the command: exit 1 naming FILE:LINE,
    -- version 2 stays
    ps.write_script(script, "return {\n")
    out, err, code = ps.smtpgw("-c " .. q(gw.ini) .. " reload")
    assert.are.equal(1, code, out .. err)
    assert.truthy(err:find("reload: failed: " .. script .. ":2:", 1, true), err)
    local line = gw:wait_log_count(RELOAD_FAILED, 1)[1]
    assert.truthy(ps.log_value(line, "reason"):find(script .. ":2:", 1, true), line)
    probe(gw, probe_refused(2))
    assert.is_true(gw:alive())
  end)

  it("`smtpgw -c FILE reload` without a running gateway exits 1", function()
    local dir = gateway.mktempdir()
    finally(function() gateway.rm_rf(dir) end)
    local ini = dir .. "/gateway.ini"
    gateway.write_file(ini, gateway.ini_text())
    local out, err, code = ps.smtpgw("-c " .. q(ini) .. " reload")
    assert.are.equal(1, code, out .. err)
    assert.truthy(err:find("smtpgw.pid", 1, true), err)
  end)

  it("a session keeps the decisions of the configuration it started with", function()
    local gw, script = ps.start_with_script(version_script(1))
    -- opened under version 1, which accepts the marker
    local old = h.session(gw)
    old:cmd("MAIL FROM:<sender@example.org>", R.mail_ok)

    ps.write_script(script, version_script(2, { marker = true }))
    hup(gw, RELOAD_OK, 1)

    local new = h.session(gw)
    new:cmd("MAIL FROM:<sender@example.org>", R.mail_ok)
    new:cmd("RCPT TO:<marker@example.test>", "550 5.7.1 marker refused by version 2")
    new:cmd("RCPT TO:<probe@example.test>", probe_refused(2))

    old:cmd("RCPT TO:<marker@example.test>", R.rcpt_ok)
    old:cmd("RCPT TO:<probe@example.test>", probe_refused(1))
    local code, text = h.data(old, h.message("old session"))
    local qid = text and text:match(R.queued)
    assert(code == 250 and qid, tostring(text))
    local env = gateway.parse_queue_file(gw:queue_file(qid))
    assert.are.same({ "<marker@example.test>" }, env.rcpt)
    -- a second transaction of the old session: still version 1
    old:cmd("MAIL FROM:<sender@example.org>", R.mail_ok)
    old:cmd("RCPT TO:<marker@example.test>", R.rcpt_ok)
    old:cmd("RSET", R.ok)

    -- another reload while the old session is still open: it still keeps
    -- version 1, new sessions get version 3
    ps.write_script(script, version_script(3, { marker = true }))
    hup(gw, RELOAD_OK, 2)
    old:cmd("MAIL FROM:<sender@example.org>", R.mail_ok)
    old:cmd("RCPT TO:<probe@example.test>", probe_refused(1))
    old:cmd("QUIT", R.bye)
    assert.is_true(old:closed())
    new:cmd("RCPT TO:<probe@example.test>", probe_refused(2))
    new:cmd("QUIT", R.bye)
    probe(gw, probe_refused(3))
  end)

  it("refuses and drops nothing while reloading 20 times under load", function()
    local RELOADS, THREADS = 20, 4
    local gw, script = ps.start_with_script(version_script(0))
    local dir = gateway.mktempdir()
    finally(function()
      ps.stop_all()
      gateway.rm_rf(dir)
    end)
    local stop_file, result_file = dir .. "/stop", dir .. "/result.json"
    local load = ps.spawn({ tools.PYTHON, tools.SUPPORT .. "/smtp_load.py",
      "--port", tostring(gw:port()), "--threads", tostring(THREADS),
      "--stop-file", stop_file, "--out", result_file,
      "--probe", "probe@example.test", "--max-seconds", "120" }, { dir = dir })
    assert(gateway.wait_for(function()
      return (gateway.read_file(load.out) or ""):find("ready", 1, true)
        or load:done()
    end, 20), "load client not ready")
    assert.is_nil(load:done(), "load client ended early: " ..
      tostring(gateway.read_file(load.err)))

    local function queued() return #gw:log_lines("event=queued ") end
    -- Waits until THREADS + 1 more messages are queued: at most THREADS
    -- transactions were under way at the last reload, so at least one of
    -- them began after it.
    local function some_load()
      local want = queued() + THREADS + 1
      local ok = gateway.wait_for(function() return queued() >= want end, 30)
      assert(ok, "the load stalled: " .. queued() .. " queued, " .. want ..
        " wanted; client stderr:\n" .. tostring(gateway.read_file(load.err)))
    end

    some_load()
    local before = queued()
    for i = 1, RELOADS do
      ps.write_script(script, version_script(i))
      hup(gw, RELOAD_OK, i)
      some_load()
    end
    local during = queued() - before

    gateway.write_file(stop_file, "stop\n")
    assert(gateway.wait_for(function() return gateway.read_file(result_file) end, 60),
      "the load client wrote no result; stderr:\n" .. tostring(gateway.read_file(load.err)))
    local result = json.decode(gateway.read_file(result_file))
    assert(result, "bad result file")
    gateway.wait_for(function() return load:done() end, 10)
    assert.are.equal(0, load:done(), gateway.read_file(load.err))

    -- every transaction got its 250
    assert.are.equal(0, result.failed, json.encode(result.failures))
    assert.are.equal(result.transactions, result.ok)
    assert.is_true(result.ok > 0)
    assert.is_true(during >= RELOADS * (THREADS + 1),
      "only " .. during .. " messages were queued during the reloads")
    -- and every one of them is in the queue, once
    local in_queue = {}
    for _, id in ipairs(gw:spool_files("queue")) do in_queue[id] = true end
    local seen = {}
    for _, id in ipairs(result.queued_ids) do
      assert.is_true(in_queue[id] == true, "reported as queued but not in the queue: " .. id)
      assert.is_nil(seen[id], "queue id reported twice: " .. id)
      seen[id] = true
    end
    assert.are.equal(result.ok, #result.queued_ids)

    -- every probe got a decision of one of the versions, and every version
    -- decided some
    local versions, n_probes = {}, 0
    for text, count in pairs(result.probe_replies) do
      local v = text:match("^550 5%.7%.1 probe refused by version (%d+)$")
      assert(v, "probe reply from no version: " .. text)
      versions[tonumber(v)] = (versions[tonumber(v)] or 0) + count
      n_probes = n_probes + count
    end
    assert.are.equal(result.transactions, n_probes)
    for v = 0, RELOADS do
      assert(versions[v], "no transaction saw version " .. v .. ": " .. json.encode(result.probe_replies))
    end

    -- the log: 20 good reloads, no failed one, no policy error
    assert.are.equal(RELOADS, #gw:log_lines(RELOAD_OK))
    assert.are.equal(0, #gw:log_lines(RELOAD_FAILED))
    assert.are.equal(0, #gw:log_lines("event=policy_error"))
    local gens = {}
    for _, l in ipairs(gw:log_lines(RELOAD_OK)) do
      gens[#gens + 1] = tonumber(l:match(" generation=(%d+)"))
    end
    for i = 2, #gens do
      assert.are.equal(gens[i - 1] + 1, gens[i], "generations: " .. table.concat(gens, " "))
    end

    -- a new connection sees the last version
    probe(gw, probe_refused(RELOADS))
    assert.is_true(gw:alive())
    gw:stop()
  end)
end)
