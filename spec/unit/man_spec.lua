-- The man pages (src/man/, README "Man pages") against the code, so they
-- cannot drift: every key of src/core/config.c's key table (and every
-- [domain:NAME] key) has an entry in gateway.ini(5) that names its default,
-- every subcommand and long option of src/main.c has one in smtpgw(8), and
-- `mandoc -Tlint` finds nothing in any page.

local function root()
  local src = debug.getinfo(1, "S").source:sub(2)
  return (src:match("^(.*)/spec/unit/[^/]+$") or ".")
end

local ROOT = root()
local PAGES = { "smtpgw.8", "gateway.ini.5", "smtpgw-policy.7" }

local function read(path)
  local f = assert(io.open(ROOT .. "/" .. path, "rb"))
  local text = f:read("*a")
  f:close()
  return text
end

-- The braced block after `head` (a pattern) in src/core/config.c.
local function config_block(head, what)
  return assert(read("src/core/config.c"):match(head .. "%s*(%b{})"),
    "no " .. what .. " in src/core/config.c")
end

-- { { section =, name =, default = }, ... } from the keys[] table, in order.
local function config_keys()
  local body = config_block("static const struct key_def keys%[%]%s*=", "keys[] table")
  local keys = {}
  for entry in body:sub(2, -2):gmatch("%b{}") do
    local section, name = entry:match('^{%s*"([^"]+)"%s*,%s*"([^"]+)"')
    local default = entry:match('"([^"]*)"%s*}$')
    assert(section and name, "cannot read key entry " .. entry)
    keys[#keys + 1] = { section = section, name = name, default = default }
  end
  assert(#keys > 20, "read only " .. #keys .. " keys")
  return keys
end

-- The keys of a [domain:NAME] section: on_domain_key's strcmp(name, "X").
local function domain_keys()
  local body = config_block("\nstatic int on_domain_key%b()", "on_domain_key()")
  local keys = {}
  for name in body:gmatch('strcmp%(name,%s*"([%w_]+)"%)') do
    keys[#keys + 1] = { section = "domain:NAME", name = name }
  end
  assert(#keys >= 2, "read only " .. #keys .. " domain keys")
  return keys
end

-- gateway.ini(5): { [section] = { [key] = text of its entry } }, from each
-- ".Ss [section]" and its ".It Cm key" entries.
local function man_keys()
  local out, section, key = {}, nil, nil
  for line in read("src/man/gateway.ini.5"):gmatch("[^\n]*") do
    local ss = line:match("^%.Ss%s+%[(.-)%]")
    if ss then
      section, key = ss, nil
      out[section] = out[section] or {}
    elseif line:match("^%.Sh") or line:match("^%.El") then
      if line:match("^%.Sh") then section = nil end
      key = nil
    elseif section and line:match("^%.It ") then
      key = line:match("^%.It Cm ([%w_]+)")
      if key then out[section][key] = "" end
    elseif section and key then
      out[section][key] = out[section][key] .. line:gsub("\\&", "") .. "\n"
    end
  end
  return out
end

describe("man pages", function()
  it("gateway.ini(5) has an entry for every key of the key table, with its default", function()
    local man, problems = man_keys(), {}
    for _, k in ipairs(config_keys()) do
      local entry = man[k.section] and man[k.section][k.name]
      if not entry then
        problems[#problems + 1] = "missing: [" .. k.section .. "] " .. k.name
      elseif k.default ~= "" and not entry:find(k.default, 1, true) then
        problems[#problems + 1] = "does not name its default " .. k.default ..
          ": [" .. k.section .. "] " .. k.name
      end
    end
    assert.are.same({}, problems, "src/man/gateway.ini.5 against src/core/config.c")
  end)

  it("gateway.ini(5) has an entry for every [domain:NAME] key", function()
    local man, missing = man_keys(), {}
    for _, k in ipairs(domain_keys()) do
      if not (man["domain:NAME"] and man["domain:NAME"][k.name]) then
        missing[#missing + 1] = "[domain:NAME] " .. k.name
      end
    end
    assert.are.same({}, missing, "keys missing from src/man/gateway.ini.5")
  end)

  it("gateway.ini(5) names no key the code does not have", function()
    local known = {}
    for _, k in ipairs(config_keys()) do known[k.section .. " " .. k.name] = true end
    for _, k in ipairs(domain_keys()) do known[k.section .. " " .. k.name] = true end
    local stale = {}
    for section, keys in pairs(man_keys()) do
      for name in pairs(keys) do
        if not known[section .. " " .. name] then
          stale[#stale + 1] = "[" .. section .. "] " .. name
        end
      end
    end
    table.sort(stale)
    assert.are.same({}, stale)
  end)

  it("smtpgw(8) has an entry for every subcommand and long option of src/main.c", function()
    local main, page = read("src/main.c"), read("src/man/smtpgw.8")
    local missing, n = {}, 0
    for word in main:gmatch('strcmp%(word,%s*"([%w_-]+)"%)') do
      n = n + 1
      if not (page:find("\n.It Cm " .. word .. " ", 1, true) or
              page:find("\n.It Cm " .. word .. "\n", 1, true)) then
        missing[#missing + 1] = word
      end
    end
    for opt in main:gmatch('{"([%w-]+)",%s*[%w_]+_argument') do
      n = n + 1
      if not page:find("Fl \\-" .. opt, 1, true) then
        missing[#missing + 1] = "--" .. opt
      end
    end
    assert.is_true(n >= 8, "read only " .. n .. " commands and options")
    assert.are.same({}, missing)
  end)

  it("mandoc -Tlint finds nothing in any page", function()
    local own = {}
    for _, p in ipairs(PAGES) do own[p:gsub("%.(%d)$", " %1")] = true end
    for _, page in ipairs(PAGES) do
      local path = ROOT .. "/src/man/" .. page
      local p = assert(io.popen("mandoc -Tlint '" .. path .. "' 2>&1; echo \"rc=$?\""))
      local out = p:read("*a")
      p:close()
      assert.falsy(out:find("not found", 1, true) and out:find("mandoc: command", 1, true),
        "mandoc is missing (Debian package mandoc)")
      local bad = {}
      for line in out:gmatch("[^\n]+") do
        -- Our own pages are not installed where mandoc looks for them
        -- (the sources are here); nor is a mandoc.db.
        local xr = line:match("referenced manual not found: Xr (%S+ %d)")
        if not (line:match("^rc=") or (xr and own[xr]) or
                line:find("outdated mandoc.db", 1, true)) then
          bad[#bad + 1] = line
        end
      end
      assert.are.same({}, bad, page)
    end
  end)
end)
