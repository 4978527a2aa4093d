-- gateway.ini checking (README "gateway.ini" and "Command line"): every
-- unknown section, unknown key or bad value names FILE:LINE; -t exits 1 and
-- the gateway refuses to start.

local gateway = require "harness"
local h = require "helpers"

-- A valid file with `bad` inserted as line 4 (after [gateway], listen, spool).
local function with_line(bad)
  return "[gateway]\nlisten = 127.0.0.1:0\nspool = spool\n" .. bad .. "\nhostname = mx.test.example\n"
end

local dirs = {}
local function check(text, opts)
  local out, code, path, dir = gateway.check_config(text, opts)
  dirs[#dirs + 1] = dir
  return out, code, path
end

local function assert_error_at(text, line, what)
  local out, code, path = check(text)
  assert.are.equal(1, code, "exit status for " .. what .. "; output:\n" .. out)
  local prefix = path .. ":" .. line .. ":"
  assert.truthy(out:find(prefix, 1, true),
    what .. ": expected " .. prefix .. " in:\n" .. out)
  assert.is_nil(gateway.sanitizer_report(out), out)
  return out
end

describe("config", function()
  after_each(function()
    for _, d in ipairs(dirs) do gateway.rm_rf(d) end
    dirs = {}
  end)
  teardown(h.cleanup)

  it("-t accepts a valid file with exit 0", function()
    local out, code = check(gateway.ini_text())
    assert.are.equal(0, code, out)
    assert.is_nil(gateway.sanitizer_report(out), out)
  end)

  it("-t accepts every documented key, comments, lists and durations", function()
    local text = table.concat({
      "; a comment",
      "# another comment",
      "[gateway]",
      "hostname = mx.test.example",
      "listen = 127.0.0.1:0, [::1]:0",
      "spool = spool",
      "relay_domains = example.test, .example.net example.org",
      "relay_networks = 127.0.0.0/8, ::1/128 10.0.0.0/8",
      "max_message_size = 0",
      "max_recipients = 100",
      "max_connections = 10",
      "max_connections_per_ip = 5",
      "max_errors = 5",
      "command_timeout = 5m",
      "data_timeout = 1h",
      "",
    }, "\n")
    local out, code = check(text)
    assert.are.equal(0, code, out)
    for _, d in ipairs({ "30", "30s", "2m", "1h" }) do
      out, code = check("[gateway]\ncommand_timeout = " .. d .. "\n")
      assert.are.equal(0, code, "command_timeout = " .. d .. ": " .. out)
    end
  end)

  it("reports an unknown key with its line", function()
    assert_error_at(with_line("bogus_key = 1"), 4, "unknown key")
  end)

  it("reports an unknown section with its line", function()
    assert_error_at("[gateway]\nlisten = 127.0.0.1:0\n\n[nope]\nx = 1\n", 4, "unknown section")
  end)

  it("reports max_recipients = abc", function()
    assert_error_at(with_line("max_recipients = abc"), 4, "max_recipients = abc")
  end)

  it("reports max_recipients = -1 and a trailing garbage number", function()
    assert_error_at(with_line("max_recipients = -1"), 4, "max_recipients = -1")
    assert_error_at(with_line("max_errors = 10x"), 4, "max_errors = 10x")
  end)

  it("reports listen = nonsense", function()
    assert_error_at("[gateway]\nlisten = nonsense\n", 2, "listen = nonsense")
  end)

  it("reports a listen port out of range", function()
    assert_error_at("[gateway]\n\nlisten = 127.0.0.1:70000\n", 3, "listen port 70000")
  end)

  it("reports relay_networks = 10.0.0.0/33", function()
    assert_error_at(with_line("relay_networks = 10.0.0.0/33"), 4, "relay_networks /33")
  end)

  it("reports a bad address in relay_networks", function()
    assert_error_at(with_line("relay_networks = 127.0.0.0/8, 300.1.2.3/8"), 4,
      "relay_networks 300.1.2.3")
    assert_error_at(with_line("relay_networks = ::1/129"), 4, "relay_networks ::1/129")
  end)

  it("reports a bad duration", function()
    assert_error_at(with_line("command_timeout = 5x"), 4, "command_timeout = 5x")
    assert_error_at(with_line("data_timeout = soon"), 4, "data_timeout = soon")
  end)

  it("[delivery] reuse_max_messages and reuse_idle_time: accepted in range, else the line", function()
    local ok = "[gateway]\nlisten = 127.0.0.1:0\n[delivery]\nreuse_max_messages = 1\n" ..
      "reuse_idle_time = 0\n"
    local out, code = check(ok)
    assert.are.equal(0, code, out)
    out, code = check("[delivery]\nreuse_max_messages = 100000\nreuse_idle_time = 300s\n")
    assert.are.equal(0, code, out)
    local function bad(line) return "[gateway]\nlisten = 127.0.0.1:0\n[delivery]\n" .. line .. "\n" end
    assert_error_at(bad("reuse_max_messages = 0"), 4, "reuse_max_messages = 0")
    assert_error_at(bad("reuse_max_messages = 100001"), 4, "reuse_max_messages = 100001")
    assert_error_at(bad("reuse_idle_time = 301s"), 4, "reuse_idle_time = 301s")
    assert_error_at(bad("reuse_idle_time = soon"), 4, "reuse_idle_time = soon")
  end)

  it("reports a line that is neither section, key nor comment", function()
    assert_error_at("[gateway]\nlisten = 127.0.0.1:0\nthis is not ini\n", 3, "garbage line")
  end)

  it("-t fails with exit 1 on a missing file", function()
    local out, code = check(nil, { path = "/nonexistent/smtpgw/gateway.ini" })
    assert.are.equal(1, code, out)
    assert.truthy(out:find("/nonexistent/smtpgw/gateway.ini", 1, true), out)
  end)

  it("the gateway refuses to start on a bad file, with the same message", function()
    local text = with_line("max_recipients = abc")
    local tout, tcode, tpath = check(text)
    assert.are.equal(1, tcode, tout)
    local out, code, path, dir = gateway.run_config(text)
    dirs[#dirs + 1] = dir
    assert.are_not.equal(0, code, out)
    assert.are_not.equal(124, code, "the gateway started on a bad file:\n" .. out)
    assert.truthy(out:find(path .. ":4:", 1, true), out)
    -- same message as -t (modulo the file name)
    local function msg(s, p)
      local line = s:match("[^\n]*" .. p:gsub("%p", "%%%0") .. ":4:[^\n]*")
      return line and (line:gsub(p:gsub("%p", "%%%0"), "FILE", 1))
    end
    -- the start-up error is a log line (level=fatal) whose msg= is -t's text
    local fatal = out:match('level=fatal event=start msg="(.-)"\n')
    assert.truthy(fatal, out)
    assert.are.equal(msg(tout, tpath), msg(fatal:gsub("\\(.)", "%1"), path))
    assert.is_nil(gateway.sanitizer_report(out), out)
  end)

  it("the gateway refuses to start on an unknown section", function()
    local out, code, path, dir = gateway.run_config("[gateway]\nlisten = 127.0.0.1:0\n[smtp]\n")
    dirs[#dirs + 1] = dir
    assert.are_not.equal(0, code, out)
    assert.are_not.equal(124, code, "the gateway started on a bad file:\n" .. out)
    assert.truthy(out:find(path .. ":3:", 1, true), out)
  end)
end)
