-- What `smtpgw -t` checks beyond the ini (README "Command line"): the
-- spool can be made and used by the user the children run as, every listen
-- address can be bound (unless the gateway holding the spool runs), sizes
-- with units (10M); and the Received: header's protocol (RFC 3848).

local socket = require "socket"
local gateway = require "harness"
local tools = require "tools"
local h = require "helpers"

local q = gateway.shell_quote
local line_of = h.line_of

local function check(extra, sections)
  local out, code, path, dir = gateway.check_config(gateway.ini_text(extra, sections))
  assert.is_nil(gateway.sanitizer_report(out), out)
  return out, code, path, dir
end

local function is_root()
  local out = gateway.run("id -u")
  return out:match("^0%s") ~= nil
end

describe("-t", function()
  after_each(h.cleanup)

  it("refuses a spool the children's user cannot use", function()
    local dir = gateway.mktempdir()
    local ini = dir .. "/gateway.ini"
    local spool, want
    if is_root() then
      -- root makes and chowns the spool, but the user must get through
      -- the directories above it
      spool = dir .. "/locked/spool"
      assert(os.execute("mkdir -m 700 " .. q(dir .. "/locked")))
      want = ": spool " .. spool .. ": user smtpgw cannot reach it (Permission denied)"
    else
      spool = dir .. "/spool"
      assert(os.execute("mkdir -m 500 " .. q(spool)))
      want = ": spool " .. spool .. ": not writable: Permission denied"
    end
    gateway.write_file(ini, gateway.ini_text({ spool = spool }))
    local out, code = gateway.check_config(nil, { path = ini })
    assert.are.equal(1, code, out)
    assert.truthy(out:find(ini .. ":" .. line_of(ini, "spool =") .. want, 1, true), out)
    gateway.rm_rf(dir)
  end)

  it("refuses a spool that cannot be created", function()
    local out, code, path = check({ spool = "gateway.ini/spool" })
    assert.are.equal(1, code, out)
    assert.truthy(out:find(path .. ":" .. line_of(path, "spool =") .. ": spool " ..
      path .. "/spool: " .. path .. " is not a directory", 1, true), out)
  end)

  it("refuses a listen address that is in use", function()
    local busy = assert(socket.bind("127.0.0.1", 0))
    local _, port = busy:getsockname()
    local out, code, path = check({ listen = "127.0.0.1:" .. port })
    busy:close()
    assert.are.equal(1, code, out)
    assert.truthy(out:find(path .. ":" .. line_of(path, "listen =") .. ": listen 127.0.0.1:" ..
      port .. ": Address already in use", 1, true), out)
  end)

  it("does not bind what the running gateway holds, and says so", function()
    local gw = gateway.start{}
    local out, code = gateway.check_config(nil, { path = gw.ini })
    assert.are.equal(0, code, out)
    assert.truthy(out:find(gw.ini .. ": listen not checked: the gateway (pid " .. gw.pid ..
      ") holding " .. gw:spool() .. "/lock has them", 1, true), out)
    assert.truthy(out:find(gw.ini .. ": ok", 1, true), out)
  end)

  it("reads sizes with units: 10M, 512k, 1G (powers of 1024)", function()
    local out, code = check({ max_message_size = "10M" })
    assert.are.equal(0, code, out)
    out, code = check({ max_message_size = "10X" })
    assert.are.equal(1, code, out)
    assert.truthy(out:find(":%d+: max_message_size: '10X' is not a size %(e%.g%. 36700160, 512k, 10M, 1G%)"), out)
    local gw = gateway.start{ ini_extra = { max_message_size = "512k" } }
    local c = h.session(gw, { helo = false })
    local ext = c:ehlo("client.example")
    assert.truthy(table.concat(ext, "\n"):find("\nSIZE 524288\n", 1, true), table.concat(ext, "\n"))
    c:close()
  end)
end)

describe("Received:", function()
  after_each(h.cleanup)

  -- Sends one message; returns its Received: header.
  local function received(gw, opts)
    local r = tools.smtplib { port = gw:port(), from = "me@origin.example",
      to = { "user@example.test" }, ehlo = "client.example",
      starttls = opts.starttls, smtputf8 = opts.smtputf8,
      msg = "Subject: r\r\n\r\nbody\r\n" }
    assert(r.error == nil, tostring(r.error) .. "\n" .. r.raw)
    local qid = r.by.data[1].text:match("queued as (%x+)")
    local _, body = gateway.parse_queue_file(gw:queue_file(qid))
    return gateway.header(body, "Received")
  end

  it("says ESMTPS over TLS (RFC 3848) with the TLS in use, ESMTP without", function()
    local gw = gateway.start{}
    local over_tls = received(gw, { starttls = true })
    assert.truthy(over_tls:match("^from client%.example %(unknown %[127%.0%.0%.1%]%) " ..
      "%(using TLSv1%.[23] with cipher %S+ %(%d+/%d+ bits%)%) by " .. gateway.HOSTNAME:gsub("%.", "%%.") ..
      " %(smtpgw%) with ESMTPS id %x+"), over_tls)
    local plain = received(gw, { starttls = false })
    assert.truthy(plain:find(" with ESMTP id ", 1, true), plain)
    assert.is_nil(plain:find("using TLS", 1, true), plain)
    local utf8 = received(gw, { starttls = true, smtputf8 = true })
    assert.truthy(utf8:find(" with UTF8SMTPS id ", 1, true), utf8)
  end)
end)
