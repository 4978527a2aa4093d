-- `make install` (README "Install"): the files it puts down, the installed
-- binary finding its own share/ (never the source tree) from another
-- directory, the installed policies running a real gateway, the systemd
-- unit (its syntax, and the gateway under its capability bounding set and
-- NoNewPrivileges), the installed gateway.ini, and `make uninstall`. The
-- sanitized binary is installed (INSTALL_BIN), so nothing is rebuilt.

local gateway = require "harness"
local h = require "helpers"
local lfs = require "lfs"

local q = gateway.shell_quote

local function source_root()
  local src = debug.getinfo(1, "S").source:sub(2)
  local dir = src:match("^(.*)/spec/integration/[^/]+$") or "."
  if dir:sub(1, 1) ~= "/" then dir = lfs.currentdir() .. "/" .. dir end
  return dir
end

local ROOT = source_root()

local function sh(cmd)
  local out, code = gateway.run(cmd)
  assert(code == 0, "command failed (exit " .. tostring(code) .. "): " .. cmd .. "\n" .. out)
  return out
end

-- make TARGET VAR=value ... in the source tree, without the MAKEFLAGS of
-- a `make check` this may run under.
local function make(target, vars)
  local words = {}
  for k, v in pairs(vars) do words[#words + 1] = k .. "=" .. q(v) end
  table.sort(words)
  return sh("env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s -C " .. q(ROOT) ..
    " " .. target .. " " .. table.concat(words, " ") .. " 2>&1")
end

local function mode(path)
  return lfs.attributes(path, "permissions")
end

-- True (and the spec pending) when the command `tool` is missing.
local function missing(tool, why)
  if gateway.run("command -v " .. tool) ~= "" then return false end
  pending(tool .. " is missing" .. (why or ""))
  return true
end

-- The [Service] keys of a unit file: { key = { value, ... } }.
local function unit_keys(text)
  local out, section = {}, nil
  for line in text:gmatch("[^\n]+") do
    local s = line:match("^%[(.+)%]$")
    if s then section = s
    elseif section == "Service" and not line:match("^%s*#") then
      local k, v = line:match("^(%w+)=(.*)$")
      if k then
        out[k] = out[k] or {}
        table.insert(out[k], v)
      end
    end
  end
  return out
end

describe("make install", function()
  local tmp, stage, bin

  setup(function()
    tmp = gateway.mktempdir()
    stage = tmp .. "/stage"
    make("install", { DESTDIR = stage, PREFIX = "/usr", SYSCONFDIR = "/etc",
      INSTALL_BIN = gateway.bin() })
    bin = stage .. "/usr/sbin/smtpgw"
  end)

  teardown(function()
    h.cleanup()
    gateway.rm_rf(tmp)
  end)

  it("puts the binary, lua/, policies/, the man pages, the unit and a gateway.ini under DESTDIR", function()
    local want = {
      ["usr/sbin/smtpgw"] = "rwxr-xr-x",
      ["usr/share/smtpgw/lua/gateway/init.lua"] = "rw-r--r--",
      ["usr/share/smtpgw/lua/gateway/testing.lua"] = "rw-r--r--",
      ["usr/share/smtpgw/policies/try.lua"] = "rw-r--r--",
      ["usr/share/smtpgw/policies/require.lua"] = "rw-r--r--",
      ["usr/share/smtpgw/policies/require_verify.lua"] = "rw-r--r--",
      ["usr/share/man/man8/smtpgw.8"] = "rw-r--r--",
      ["usr/share/man/man5/gateway.ini.5"] = "rw-r--r--",
      ["usr/share/man/man7/smtpgw-policy.7"] = "rw-r--r--",
      ["usr/lib/systemd/system/smtpgw.service"] = "rw-r--r--",
      ["usr/share/doc/smtpgw/examples/gateway.ini"] = "rw-r--r--",
      ["usr/share/doc/smtpgw/examples/policies/partner_verify.lua"] = "rw-r--r--",
      ["etc/smtpgw/gateway.ini"] = "rw-r--r--",
      ["etc/smtpgw/certs"] = "rwxr-xr-x",
      ["var/spool/smtpgw"] = "rwxr-xr-x",
    }
    local wrong = {}
    for path, perm in pairs(want) do
      if mode(stage .. "/" .. path) ~= perm then
        wrong[#wrong + 1] = path .. ": " .. tostring(mode(stage .. "/" .. path))
      end
    end
    table.sort(wrong)
    assert.are.same({}, wrong)
    for _, page in ipairs({ "man8/smtpgw.8", "man5/gateway.ini.5", "man7/smtpgw-policy.7" }) do
      assert.are.equal(gateway.read_file(ROOT .. "/src/man/" .. page:match("/(.*)")),
        gateway.read_file(stage .. "/usr/share/man/" .. page))
    end
    -- the default paths of the examples, rewritten to PREFIX=/usr
    local unit = gateway.read_file(stage .. "/usr/lib/systemd/system/smtpgw.service")
    assert.truthy(unit:find("\nExecStart=/usr/sbin/smtpgw -c /etc/smtpgw/gateway.ini\n", 1, true), unit)
    assert.falsy(unit:find("/usr/local", 1, true), unit)
    local ini = gateway.read_file(stage .. "/etc/smtpgw/gateway.ini")
    assert.truthy(ini:find("\nscript = /usr/share/smtpgw/policies/try.lua\n", 1, true), ini)
  end)

  it("--version and --help answer on stdout with 0; an unknown option is an error", function()
    local out, code = gateway.run("cd / && " .. q(bin) .. " --version 2>/dev/null")
    assert.are.equal(0, code, out)
    assert.truthy(out:find("^smtpgw %S+\n"), out)
    for _, lib in ipairs({ "\nlibtls API %d+, OpenSSL 3", "\nLuaJIT 2", "\nlibunbound 1%.", "\nlibev 4%." }) do
      assert.truthy(out:find(lib), lib .. " in:\n" .. out)
    end
    assert.truthy(out:find("\nshare " .. stage .. "/usr/share/smtpgw\n", 1, true), out)
    out, code = gateway.run("cd / && " .. q(bin) .. " --help 2>/dev/null")
    assert.are.equal(0, code, out)
    assert.truthy(out:find("^usage: smtpgw %-c FILE"), out)
    assert.truthy(out:find("--warn-days", 1, true), out)
    out, code = gateway.run("cd / && " .. q(bin) .. " --bogus 2>&1 >/dev/null")
    assert.are.equal(1, code, out)
    assert.truthy(out:find("unrecognized option '--bogus'", 1, true), out)
    assert.truthy(out:find("usage: smtpgw", 1, true), out)
  end)

  it("reads lua/ and the policies from its own share/ and never touches the source tree", function()
    if missing("strace") then return end
    if select(2, gateway.run("strace -qq -o /dev/null true")) ~= 0 then
      pending("strace cannot trace here (ptrace refused)")
      return
    end
    local ini = tmp .. "/t.ini"
    gateway.write_file(ini, gateway.ini_text({}, { policy = {
      script = stage .. "/usr/share/smtpgw/policies/require_verify.lua" } }))
    local trace = tmp .. "/strace.txt"
    -- (LeakSanitizer cannot run under ptrace)
    local out, code = gateway.run("cd / && ASAN_OPTIONS=detect_leaks=0 " ..
      "strace -f -qq -s 512 -o " .. q(trace) .. " " ..
      q(bin) .. " -c " .. q(ini) .. " -t")
    assert.are.equal(0, code, out)
    assert.truthy(out:find(": ok (policy " .. stage .. "/usr/share/smtpgw/policies/require_verify.lua)", 1, true), out)
    local calls = assert(gateway.read_file(trace))
    -- every .lua file it opened (the check's own state reads
    -- gateway.testing too) is the staged one
    local share, opened, seen = stage .. "/usr/share/smtpgw/", {}, {}
    for path in calls:gmatch('openat%([^,]*, "([^"]+%.lua)"[^\n]*= %d+') do
      assert.are.equal(1, path:find(share, 1, true), path)
      seen[path:sub(#share + 1)] = true
    end
    for name in pairs(seen) do opened[#opened + 1] = name end
    table.sort(opened)
    assert.truthy(seen["lua/gateway/init.lua"] and seen["policies/require_verify.lua"],
      table.concat(opened, " "))
    assert.falsy(calls:find(ROOT .. "/", 1, true), "the source tree was touched:\n" ..
      (calls:match("[^\n]*" .. ROOT:gsub("%p", "%%%0") .. "/[^\n]*") or ""))
  end)

  it("runs from / with the installed policies and queues a message", function()
    local gw = gateway.start({ bin = bin, sections = { policy = {
      script = stage .. "/usr/share/smtpgw/policies/try.lua" } } })
    local c = h.session(gw)
    local qid = h.deliver(c, "me@example.org", { "user@example.test" }, h.message("installed"))
    gw:wait_log("event=queued [^\n]*qid=" .. qid)
    c:close()
    gw:stop()
  end)

  it("keeps an existing gateway.ini, and `make uninstall` keeps it and the spool", function()
    local ini = stage .. "/etc/smtpgw/gateway.ini"
    local mine = gateway.read_file(ini) .. "; edited by the admin\n"
    gateway.write_file(ini, mine)
    local out = make("install", { DESTDIR = stage, PREFIX = "/usr", SYSCONFDIR = "/etc",
      INSTALL_BIN = gateway.bin() })
    assert.truthy(out:find("gateway.ini exists: kept", 1, true), out)
    assert.are.equal(mine, gateway.read_file(ini))
    local copy = tmp .. "/copy"
    sh("cp -a " .. q(stage) .. " " .. q(copy))
    make("uninstall", { DESTDIR = copy, PREFIX = "/usr", SYSCONFDIR = "/etc" })
    for _, gone in ipairs({ "usr/sbin/smtpgw", "usr/share/smtpgw", "usr/share/doc/smtpgw",
        "usr/share/man/man8/smtpgw.8", "usr/lib/systemd/system/smtpgw.service" }) do
      assert.is_nil(lfs.attributes(copy .. "/" .. gone), gone)
    end
    assert.are.equal(mine, gateway.read_file(copy .. "/etc/smtpgw/gateway.ini"))
    assert.are.equal("directory", lfs.attributes(copy .. "/var/spool/smtpgw", "mode"))
  end)
end)

describe("the systemd unit and the installed gateway.ini", function()
  local tmp, prefix, unit_text

  setup(function()
    tmp = gateway.mktempdir()
    prefix = tmp .. "/prefix"
    -- no DESTDIR: the paths in the unit and the ini are the real ones
    make("install", { PREFIX = prefix, SYSCONFDIR = prefix .. "/etc",
      SPOOLDIR = prefix .. "/spool", INSTALL_BIN = gateway.bin() })
    unit_text = assert(gateway.read_file(prefix .. "/lib/systemd/system/smtpgw.service"))
  end)

  teardown(function()
    h.cleanup()
    gateway.rm_rf(tmp)
  end)

  it("the installed gateway.ini passes -t with the installed policy", function()
    if os.getenv("SMTPGW_SEALED") ~= "1" then
      -- -t binds its listen addresses, port 25 on loopback
      pending("needs the specs' own network namespace (spec/run.sh as root)")
      return
    end
    local ini = prefix .. "/etc/smtpgw/gateway.ini"
    local out, code = gateway.run("cd / && " .. q(prefix .. "/sbin/smtpgw") .. " -c " .. q(ini) .. " -t")
    assert.are.equal(0, code, out)
    assert.are.equal(ini .. ": no certificate configured: the Default Cert will be made in " ..
      prefix .. "/etc/smtpgw/certs at start\n" ..
      ini .. ": ok (policy " .. prefix .. "/share/smtpgw/policies/try.lua)\n", out)
  end)

  it("has the hardening and the commands it should", function()
    local k = unit_keys(unit_text)
    local sbin, ini = prefix .. "/sbin/smtpgw", prefix .. "/etc/smtpgw/gateway.ini"
    assert.are.same({ sbin .. " -c " .. ini }, k.ExecStart)
    assert.are.same({ sbin .. " -c " .. ini .. " -t" }, k.ExecStartPre)
    assert.are.same({ sbin .. " -c " .. ini .. " reload" }, k.ExecReload)
    assert.are.same({ "on-failure" }, k.Restart)
    assert.are.same({ "yes" }, k.NoNewPrivileges)
    assert.are.same({ "strict" }, k.ProtectSystem)
    assert.are.same({ "yes" }, k.ProtectHome)
    assert.are.same({ "yes" }, k.PrivateTmp)
    assert.are.same({ prefix .. "/spool -" .. prefix .. "/etc/smtpgw/certs" }, k.ReadWritePaths)
    assert.are.same({ "CAP_NET_BIND_SERVICE CAP_CHOWN CAP_SETUID CAP_SETGID CAP_DAC_OVERRIDE CAP_KILL" },
      k.CapabilityBoundingSet)
  end)

  it("passes systemd-analyze verify", function()
    if missing("systemd-analyze", " (package systemd): the keys are checked above") then return end
    -- systemd-analyze runs `man` for Documentation=: pointed at the
    -- installed pages when man is there.
    local man = gateway.run("command -v man") ~= "" and
      ("MANPATH=" .. q(prefix .. "/share/man") .. " ") or ""
    local opt = man == "" and " --man=no" or ""
    local out, code = gateway.run("cd / && " .. man .. "systemd-analyze verify" .. opt .. " " ..
      q(prefix .. "/lib/systemd/system/smtpgw.service"))
    assert.are.equal(0, code, out)
    assert.are.equal("", out)
  end)

  -- The gateway under the unit's CapabilityBoundingSet and NoNewPrivileges
  -- (setpriv: what systemd would set), started as root.
  describe("under the unit's capability bounding set", function()
    local caps

    local function wrapper(name, set)
      local path = tmp .. "/" .. name
      gateway.write_file(path, "#!/bin/sh\nexec setpriv --bounding-set=-all" .. set ..
        " --no-new-privs -- " .. q(prefix .. "/sbin/smtpgw") .. ' "$@"\n')
      sh("chmod 755 " .. q(path))
      return path
    end

    -- false (and the spec pending) unless root and the user exist
    local function can_drop()
      if gateway.run("id -u") ~= "0\n" or gateway.run("id -u smtpgw 2>/dev/null") == "" then
        pending("needs root and the user smtpgw (make user)")
        return false
      end
      caps = {}
      for cap in unit_keys(unit_text).CapabilityBoundingSet[1]:gmatch("CAP_(%S+)") do
        caps[#caps + 1] = cap:lower()
      end
      return true
    end

    local function set_of(list, without)
      local s = ""
      for _, c in ipairs(list) do
        if c ~= without then s = s .. ",+" .. c end
      end
      return s
    end

    it("starts, drops to the user, queues, reloads and stops", function()
      if not can_drop() then return end
      local uid = tonumber((gateway.run("id -u smtpgw")))
      local gw = gateway.start({ bin = wrapper("bounded", set_of(caps)), ini_extra = { workers = 1 },
        sections = { policy = { script = prefix .. "/share/smtpgw/policies/try.lua" } } })
      local kids = gw:wait_children(2)
      for name, kid in pairs(kids) do
        assert.are.equal(uid, kid.uid, name)
        local status = gateway.read_file("/proc/" .. kid.pid .. "/status") or ""
        assert.truthy(status:find("\nCapEff:%s+0+\n"), name .. ":\n" .. status)
      end
      local status = gateway.read_file("/proc/" .. gw.pid .. "/status")
      local bnd = tonumber(status:match("\nCapBnd:%s+(%x+)"), 16)
      -- CHOWN 0, DAC_OVERRIDE 1, KILL 5, SETGID 6, SETUID 7, NET_BIND_SERVICE 10
      assert.are.equal(2^0 + 2^1 + 2^5 + 2^6 + 2^7 + 2^10, bnd)
      assert.truthy(status:find("\nNoNewPrivs:%s+1\n"), status)
      local c = h.session(gw)
      h.deliver(c, "me@example.org", { "user@example.test" }, h.message("bounded"))
      c:close()
      local out, code = gateway.run("cd / && " .. q(gw.bin) .. " -c " .. q(gw.ini) .. " reload")
      assert.are.equal(0, code, out)
      assert.truthy(out:find("^reload: ok, generation 2"), out)
      gw:wait_log("event=ready [^\n]*role=worker [^\n]*generation=2")
      gw:stop() -- raises unless it exits 0 within 15 s of SIGTERM
    end)

    -- Each of these is needed at start; CAP_SETUID and CAP_SETGID for the
    -- children, CAP_KILL to stop them (README "systemd").
    local needed = {
      { "chown", "chown: Operation not permitted" },
      { "dac_override", "chown: Permission denied" },
    }
    if os.getenv("SMTPGW_SEALED") == "1" then
      -- port 25 is free only in the spec's own network namespace
      needed[#needed + 1] = { "net_bind_service", "Permission denied", "127.0.0.1:25" }
    end
    for _, n in ipairs(needed) do
      it("does not start without CAP_" .. n[1]:upper(), function()
        if not can_drop() then return end
        local dir = gateway.mktempdir()
        finally(function() gateway.rm_rf(dir) end)
        gateway.write_file(dir .. "/gateway.ini", gateway.ini_text({ listen = n[3] or "127.0.0.1:0" }))
        local out, code = gateway.run("cd / && timeout -k 5 30 " ..
          q(wrapper("without_" .. n[1], set_of(caps, n[1]))) .. " -c " ..
          q(dir .. "/gateway.ini") .. " </dev/null")
        assert.are.equal(1, code, out)
        assert.truthy(out:find(n[2], 1, true), out)
        assert.falsy(out:find("event=ready", 1, true), out)
      end)
    end
  end)
end)
