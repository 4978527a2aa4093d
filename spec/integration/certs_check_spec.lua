-- `smtpgw certs` as a monitoring check (README "Monitoring certificates"):
-- exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN, a Nagios status line first,
-- with real certificates made by openssl (the dated ones by `openssl ca`,
-- which takes a start and an end date: `req -x509` cannot back-date).

local gateway = require "harness"
local json = require "dkjson"

local q = gateway.shell_quote

local function sh(cmd)
  local out, code = gateway.run(cmd)
  assert(code == 0, "command failed: " .. cmd .. "\n" .. out)
  return out
end

-- "YYYYMMDDHHMMSSZ", `days` from now.
local function stamp(days)
  return os.date("!%Y%m%d%H%M%SZ", os.time() + math.floor(days * 86400))
end

-- A self-signed EC pair NAME.crt + NAME.key in `dir`, valid from `from`
-- to `to` days from now.
local function dated(dir, name, from, to)
  local work = dir .. "/.ca-" .. name
  sh("mkdir -p " .. q(work) .. " && : >" .. q(work .. "/index.txt") ..
    " && echo 01 >" .. q(work .. "/serial"))
  gateway.write_file(work .. "/ca.cnf", table.concat({
    "[ca]", "default_ca = d", "[d]", "dir = " .. work,
    "database = " .. work .. "/index.txt", "new_certs_dir = " .. work,
    "serial = " .. work .. "/serial", "default_md = sha256",
    "policy = p", "unique_subject = no", "[p]", "commonName = supplied", "" }, "\n"))
  local key, crt = dir .. "/" .. name .. ".key", dir .. "/" .. name .. ".crt"
  sh("openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes" ..
    " -subj /CN=" .. name .. ".test.example -keyout " .. q(key) ..
    " -out " .. q(work .. "/csr") .. " 2>&1 && chmod 600 " .. q(key) ..
    " && openssl ca -batch -notext -config " .. q(work .. "/ca.cnf") ..
    " -selfsign -keyfile " .. q(key) .. " -in " .. q(work .. "/csr") ..
    " -startdate " .. stamp(from) .. " -enddate " .. stamp(to) ..
    " -out " .. q(crt) .. " 2>&1")
  sh("rm -rf " .. q(work))
  return { crt = crt, key = key }
end

describe("certs as a monitoring check", function()
  local root, n = nil, 0

  setup(function() root = gateway.mktempdir() end)
  teardown(function() gateway.rm_rf(root) end)

  -- A fresh store with the pairs `make(dir)` puts there; returns the ini.
  local function store(make)
    n = n + 1
    local dir = root .. "/store" .. n
    sh("mkdir -p " .. q(dir))
    make(dir)
    local ini = root .. "/gw" .. n .. ".ini"
    gateway.write_file(ini, "[gateway]\n[tls]\ncert_dir = " .. dir .. "\n")
    return ini, dir
  end

  local function certs(ini, args, as)
    local cmd = q(gateway.bin()) .. " -c " .. q(ini) .. " certs " .. (args or "") ..
      " 2>" .. q(root .. "/stderr") .. " </dev/null"
    if as then cmd = "setpriv --reuid=" .. as .. " --regid=" .. as .. " --clear-groups " .. cmd end -- as: a uid
    local out, code = gateway.run("cd / && " .. cmd)
    return out, code, gateway.read_file(root .. "/stderr") or ""
  end

  local function status_line(out)
    return out:match("^([^\n]*)")
  end

  it("is OK (0) with a valid pair, and says which expires next", function()
    local ini = store(function(d) dated(d, "good", -1, 365) end)
    local out, code = certs(ini)
    assert.are.equal(0, code, out)
    local line = status_line(out)
    assert.truthy(line:find("^CERTS OK %- 1 certificate, the next to expire: good in 36[45] days | 'good'=36[45];30:;0:$"), line)
    assert.truthy(out:find("\n  private key  matches\n", 1, true), out)
    assert.truthy(out:find("\n  status       OK\n", 1, true), out)
  end)

  it("is WARNING (1) within 30 days, and --warn-days moves the threshold", function()
    local ini = store(function(d)
      dated(d, "good", -1, 365)
      dated(d, "soon", -1, 10.5)
    end)
    local out, code = certs(ini)
    assert.are.equal(1, code, out)
    assert.truthy(status_line(out):find("^CERTS WARNING %- soon: expires in 10 days | "), out)
    out, code = certs(ini, "--warn-days 7")
    assert.are.equal(0, code, out)
    assert.truthy(status_line(out):find("'soon'=10;7:;0:", 1, true), out)
    out, code = certs(ini, "--warn-days 400 --json")
    assert.are.equal(1, code, out)
    local list = assert(json.decode(out), out)
    assert.are.equal("warning", list[1].status)
    assert.are.equal("warning", list[2].status)
    assert.truthy(list[2].problem:find("^expires in 10 days"), out)
  end)

  it("is CRITICAL (2) for an expired certificate, and names the day", function()
    local ini = store(function(d)
      dated(d, "good", -1, 365)
      dated(d, "old", -60, -30)
    end)
    local out, code = certs(ini)
    assert.are.equal(2, code, out)
    local day = os.date("!%Y-%m-%d", os.time() - 30 * 86400)
    assert.are.equal(1, status_line(out):find("CERTS CRITICAL - old: expired on " .. day .. " | ", 1, true), out)
    assert.truthy(out:find("days left    %-30 EXPIRED"), out)
    local list = json.decode((certs(ini, "--json")))
    assert.are.equal("ok", list[1].status)
    assert.are.same({ "critical", "expired on " .. day }, { list[2].status, list[2].problem })
  end)

  it("is CRITICAL (2) for a certificate not valid yet", function()
    local ini = store(function(d) dated(d, "future", 30, 400) end)
    local out, code = certs(ini)
    assert.are.equal(2, code, out)
    assert.truthy(status_line(out):find("future: not valid before " ..
      os.date("!%Y-%m-%d", os.time() + 30 * 86400), 1, true), out)
  end)

  it("is CRITICAL (2) when a key is missing, does not match, is not a key or is readable by others", function()
    local ini, dir = store(function(d)
      local a = dated(d, "nokey", -1, 365)
      os.remove(a.key)
      local b = dated(d, "other", -1, 365)
      dated(d, "swapped", -1, 365)
      sh("cp " .. q(b.key) .. " " .. q(d .. "/swapped.key"))
      local c = dated(d, "junk", -1, 365)
      gateway.write_file(c.key, "not a key\n")
      local e = dated(d, "open", -1, 365)
      sh("chmod 644 " .. q(e.key))
    end)
    local out, code = certs(ini)
    assert.are.equal(2, code, out)
    local line = status_line(out)
    assert.truthy(line:find("nokey: " .. dir .. "/nokey.crt: no private key beside it (" ..
      dir .. "/nokey.key)", 1, true), line)
    assert.truthy(line:find("swapped: " .. dir .. "/swapped.key: private key does not match " ..
      dir .. "/swapped.crt", 1, true), line)
    assert.truthy(line:find("junk: " .. dir .. "/junk.key: not a PEM private key", 1, true), line)
    assert.truthy(line:find("open: " .. dir .. "/open.key: private key is readable by group or others (mode 0644)", 1, true), line)
    assert.falsy(line:find("other:", 1, true), line)
    local by = {}
    for _, e in ipairs(json.decode((certs(ini, "--json")))) do by[e.name] = e end
    assert.are.equal("missing", by.nokey.private_key)
    assert.are.equal("does not match", by.swapped.private_key)
    assert.are.equal("unusable", by.junk.private_key)
    assert.are.equal("readable by others", by.open.private_key)
    assert.are.equal("matches", by.other.private_key)
    assert.are.equal("ok", by.other.status)
  end)

  it("is CRITICAL (2) for a .crt that is not a certificate or a lone .key, and still lists the others", function()
    local ini, dir = store(function(d)
      dated(d, "good", -1, 365)
      gateway.write_file(d .. "/bad.crt", "junk\n")
      local lone = dated(d, "lone", -1, 365)
      os.remove(lone.crt)
    end)
    local out, code = certs(ini)
    assert.are.equal(2, code, out)
    local line = status_line(out)
    assert.truthy(line:find("bad: " .. dir .. "/bad.crt: not a PEM certificate", 1, true), line)
    assert.truthy(line:find("lone: " .. dir .. "/lone.key: no certificate beside it (" ..
      dir .. "/lone.crt)", 1, true), line)
    assert.truthy(out:find("\ngood\n", 1, true), out)
  end)

  it("checks the [tls] certificate lines too", function()
    local ini, dir = store(function(d)
      dated(d, "good", -1, 365)
      sh("mkdir -p " .. q(d .. "/live"))
      dated(d .. "/live", "fullchain", -60, -1)
    end)
    gateway.write_file(ini, "[gateway]\n[tls]\ncertificate = " .. dir .. "/live/fullchain.crt " ..
      dir .. "/live/fullchain.key\ncert_dir = " .. dir .. "\n")
    local out, code = certs(ini)
    assert.are.equal(2, code, out)
    assert.are.equal(1, status_line(out):find("CERTS CRITICAL - " .. dir .. "/live/fullchain.crt: expired on ", 1, true), out)
    assert.truthy(out:find("\ngood\n", 1, true), out)
  end)

  it("is WARNING (1) for an empty store (the gateway would make the Default Cert)", function()
    local ini = store(function() end)
    local out, code = certs(ini)
    assert.are.equal(1, code, out)
    assert.truthy(status_line(out):find("^CERTS WARNING %- no certificates in "), out)
  end)

  it("is UNKNOWN (3) for a configuration it cannot read or a usage error", function()
    local out, code = certs(root .. "/missing.ini")
    assert.are.equal(3, code, out)
    assert.truthy(status_line(out):find("^CERTS UNKNOWN %- .*missing.ini"), out)
    local ini = store(function(d) dated(d, "good", -1, 365) end)
    for _, args in ipairs({ "--warn-days", "--warn-days x", "--warn-days -1", "--bogus", "--json --json" }) do
      local o, c, err = certs(ini, args)
      assert.are.equal(3, c, args .. ": " .. o)
      assert.truthy(err:find("usage:", 1, true), args .. ": " .. err)
    end
  end)

  it("is UNKNOWN (3) when the caller may not read a key", function()
    if gateway.run("id -u") ~= "0\n" then
      pending("needs root, to run it as nobody (uid 65534)")
      return
    end
    local ini, dir = store(function(d) dated(d, "good", -1, 365) end)
    sh("chmod 755 " .. q(root) .. " " .. q(dir) .. " && chmod 644 " .. q(ini))
    local out, code = certs(ini, "", 65534) -- nobody
    assert.are.equal(3, code, out)
    assert.truthy(status_line(out):find("good: key not checked: " .. dir ..
      "/good.key: Permission denied (run as root)", 1, true), out)
    -- an expiring one is still a WARNING, which outranks UNKNOWN
    dated(dir, "soon", -1, 5)
    sh("chmod 644 " .. q(dir .. "/soon.crt"))
    out, code = certs(ini, "", 65534)
    assert.are.equal(1, code, out)
  end)
end)
