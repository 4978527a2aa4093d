-- gateway.testing: fixtures for busted specs of smtpgw policies.
--
--   local t = require "gateway.testing"
--   local policy = dofile("policies/try.lua")
--
--   local ctx = t.ctx{ stage = "rcpt", recipient = "u@partner.example",
--                      section = { tls = "verify" },
--                      tls = { active = true, peer = "trusted" } }
--   assert.are.equal("accept", policy.rcpt(ctx, t.host()))
--
-- t.ctx builds a ctx of exactly the shape the gateway passes to a hook at a
-- stage (README.md, "ctx"); t.check_shape tells whether a table has that
-- shape; t.host is a host whose log lines are kept in host.logs and whose
-- clock stands still. Pure Lua (base, string, table, math), like the
-- policies themselves.

local gateway = require "gateway"

local type, pairs, ipairs, tostring, error, setmetatable =
  type, pairs, ipairs, tostring, error, setmetatable
local format, lower, match, sub, find = string.format, string.lower, string.match, string.sub, string.find
local sort, concat = table.sort, table.concat

local M = {}

-- ------------------------------------------------------------------ shape

M.STAGES = { "server_tls", "connect", "helo", "mail", "rcpt", "client_tls" }
M.INBOUND = { "server_tls", "connect", "helo", "mail", "rcpt" }

local function set(list)
  local s = {}
  for _, v in ipairs(list) do
    s[v] = true
  end
  return s
end

local STAGE_SET = set(M.STAGES)

-- Every field a ctx can have: its type, the stages it exists at, and whether
-- it is required there. `when = "active"`: the field exists only while the
-- sibling `active` is true (tls.version, tls.cipher, tls.sni) and must be
-- absent otherwise; `required` applies while it exists. `values`: the
-- allowed strings. `pattern`: a Lua pattern the string must match. `lower`:
-- must be lower case.
local FIELDS = {
  stage = { type = "string", stages = M.STAGES, required = true, values = M.STAGES },
  hostname = { type = "string", stages = M.STAGES, required = true },
  client = {
    type = "table", stages = M.INBOUND, required = true,
    order = { "ip", "port", "trusted" },
    fields = {
      ip = { type = "string", required = true },
      port = { type = "number", required = true },
      trusted = { type = "boolean", required = true },
    },
  },
  helo = { type = "string", stages = { "helo", "mail", "rcpt" }, required = true },
  tls = {
    type = "table", stages = M.INBOUND, required = true,
    order = { "active", "version", "cipher", "peer", "sni" },
    fields = {
      active = { type = "boolean", required = true },
      version = { type = "string", required = true, when = "active" },
      cipher = { type = "string", required = true, when = "active" },
      peer = { type = "string", required = true, values = { "none", "untrusted", "trusted" } },
      sni = { type = "string", required = false, when = "active" },
    },
  },
  sender = { type = "string", stages = { "mail", "rcpt", "client_tls" }, required = true },
  recipient = { type = "string", stages = { "rcpt", "client_tls" }, required = true },
  domain = { type = "string", stages = { "rcpt", "client_tls" }, required = true, lower = true },
  section = {
    type = "table", stages = { "rcpt", "client_tls" }, required = false,
    order = { "name", "tls", "tls_in", "next_hop" },
    fields = {
      name = { type = "string", required = true, pattern = "^domain:%.?[^%s%.][^%s]*$" },
      tls = { type = "string", required = false },
      tls_in = { type = "string", required = false },
      next_hop = { type = "string", required = false },
    },
  },
  -- `list`: an array of values of that type, nothing else in it
  mta_sts = {
    type = "table", stages = { "client_tls" }, required = false,
    order = { "mode", "mx" },
    fields = {
      mode = { type = "string", required = true, values = { "enforce", "testing", "none" } },
      mx = { type = "table", required = true, list = "string" },
    },
  },
  dane = { type = "string", stages = { "client_tls" }, required = false,
    values = { "secure", "insecure", "bogus" } },
}

-- The order in which check_shape looks at the top-level fields (the README's).
M.ORDER = { "stage", "hostname", "client", "helo", "tls", "sender", "recipient", "domain", "section",
  "mta_sts", "dane" }

local function copy_spec(spec)
  local out = {}
  for k, v in pairs(spec) do
    if k == "fields" then
      local f = {}
      for name, sub in pairs(v) do
        f[name] = copy_spec(sub)
      end
      out[k] = f
    elseif k ~= "stages" then
      out[k] = v
    end
  end
  return out
end

-- SHAPE[stage][field] = { type = "string"|"number"|"boolean"|"table",
--   required = true|false, when = "active" (tls.version/cipher/sni),
--   values = {...}, pattern = "...", lower = true, fields = {...} (tables) }
M.SHAPE = {}
for _, stage in ipairs(M.STAGES) do
  M.SHAPE[stage] = {}
end
for name, spec in pairs(FIELDS) do
  for _, stage in ipairs(spec.stages) do
    M.SHAPE[stage][name] = copy_spec(spec)
  end
end

local function describe(v)
  if type(v) == "string" then
    return format("%q", v)
  end
  return tostring(v)
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do
    keys[#keys + 1] = k
  end
  sort(keys, function(a, b)
    if type(a) == type(b) and (type(a) == "string" or type(a) == "number") then
      return a < b
    end
    return type(a) < type(b)
  end)
  return keys
end

local function key_path(prefix, k)
  if type(k) == "string" and match(k, "^[%a_][%w_]*$") then
    return prefix .. k
  end
  return prefix .. "[" .. describe(k) .. "]"
end

local function check_value(path, spec, v)
  if type(v) ~= spec.type then
    return format("%s: expected %s, got %s", path, spec.type, type(v))
  end
  if spec.values then
    local ok = false
    for _, allowed in ipairs(spec.values) do
      if v == allowed then
        ok = true
      end
    end
    if not ok then
      return format("%s: expected one of %s, got %s", path, concat(spec.values, ", "), describe(v))
    end
  end
  if spec.pattern and not match(v, spec.pattern) then
    return format("%s: malformed value %s", path, describe(v))
  end
  if spec.lower and v ~= lower(v) then
    return format("%s: must be lower case, got %s", path, describe(v))
  end
  return nil
end

local check_fields

-- check_list(t, kind, path): the message when t is not an array of values
-- of type kind (keys 1..n, nothing else), or nil.
local function check_list(t, kind, path)
  local n = #t
  for k, v in pairs(t) do
    if type(k) ~= "number" or k < 1 or k > n or k ~= math.floor(k) then
      return format("%s: unknown field %s in a list", path, describe(k))
    end
    if type(v) ~= kind then
      return format("%s[%d]: expected %s, got %s", path, k, kind, type(v))
    end
  end
  return nil
end

-- check_field(t, name, spec, prefix, stage): the message when field `name`
-- of table t does not fit spec, or nil.
local function check_field(t, name, spec, prefix, stage)
  local v, path = t[name], prefix .. name
  if spec.when == "active" and t.active ~= true then
    if v ~= nil then
      return format("%s: must be absent while %sactive is not true", path, prefix)
    end
    return nil
  end
  if v == nil then
    if spec.required then
      return format("%s: missing (required at stage %q)", path, stage)
    end
    return nil
  end
  local msg = check_value(path, spec, v)
  if msg == nil and spec.list then
    msg = check_list(v, spec.list, path)
  end
  if msg == nil and spec.fields then
    msg = check_fields(v, spec.fields, spec.order, path .. ".", stage)
  end
  return msg
end

-- check_fields(t, fields, order, prefix, stage): the message for the first
-- field of table t (known ones in `order`, then unknown ones by name) that
-- does not fit `fields`, or nil.
function check_fields(t, fields, order, prefix, stage)
  for _, name in ipairs(order) do
    local spec = fields[name]
    if spec ~= nil then -- else a field of other stages, reported below if present
      local msg = check_field(t, name, spec, prefix, stage)
      if msg then
        return msg
      end
    end
  end
  for _, k in ipairs(sorted_keys(t)) do
    if type(k) ~= "string" or fields[k] == nil then
      local path = key_path(prefix, k)
      local other = prefix == "" and type(k) == "string" and FIELDS[k]
      if other then
        return format("%s: not a field at stage %q (only at %s)", path, stage, concat(other.stages, ", "))
      end
      return format("%s: unknown field at stage %q", path, stage)
    end
  end
  return nil
end

-- check_shape(ctx): true when ctx has exactly the shape of M.SHAPE[ctx.stage]
-- (every required field, no unknown field, every type right, and the few
-- value rules of SHAPE); else false and a message naming the first field
-- that differs.
function M.check_shape(ctx)
  if type(ctx) ~= "table" then
    return false, "ctx: expected table, got " .. type(ctx)
  end
  local stage = ctx.stage
  if stage == nil then
    return false, "stage: missing"
  end
  local msg = check_value("stage", FIELDS.stage, stage)
  if msg then
    return false, msg
  end
  msg = check_fields(ctx, M.SHAPE[stage], M.ORDER, "", stage)
  if msg then
    return false, msg
  end
  local tls = ctx.tls
  if tls and tls.active ~= true and tls.peer ~= "none" then
    return false, format("tls.peer: must be \"none\" while tls.active is not true, got %s", describe(tls.peer))
  end
  return true
end

-- --------------------------------------------------------------- fixtures

-- t.NIL in t.ctx overrides removes a default field:
--   t.ctx{ stage = "rcpt", tls = { active = true, sni = "mx.example.test", cipher = t.NIL } }
M.NIL = setmetatable({}, { __tostring = function()
  return "gateway.testing.NIL"
end })

M.DEFAULTS = {
  hostname = "mx.example.test",
  client = { ip = "192.0.2.10", port = 40000, trusted = false },
  helo = "client.example.org",
  tls = { active = false, peer = "none" },
  tls_active = { version = "TLSv1.3", cipher = "TLS_AES_256_GCM_SHA384" },
  sender = "sender@example.org",
  recipient = "user@example.test",
  now = 1764000000.25,
}

local function deep_copy(v)
  if type(v) ~= "table" or v == M.NIL then
    return v
  end
  local out = {}
  for k, x in pairs(v) do
    out[k] = deep_copy(x)
  end
  return out
end

-- merge(base, over): base with over's fields laid on it, recursing into
-- tables present in both; M.NIL removes a field. base is modified.
local function merge(base, over)
  for k, v in pairs(over) do
    if v == M.NIL then
      base[k] = nil
    elseif type(v) == "table" and type(base[k]) == "table" then
      merge(base[k], v)
    else
      base[k] = deep_copy(v)
    end
  end
  return base
end

local function has_stage(spec_stages, stage)
  for _, s in ipairs(spec_stages) do
    if s == stage then
      return true
    end
  end
  return false
end

-- t.ctx(overrides [, opts]): a fresh ctx for overrides.stage (default
-- "rcpt") with the defaults of M.DEFAULTS for every field of that stage,
-- overrides deep-merged on top (t.NIL removes a field). Then:
--   * domain = domain_of(recipient) when not given;
--   * tls.version/tls.cipher are filled in when tls.active is true;
--   * section.name = "domain:" .. domain when a section is given without one.
-- The result must pass t.check_shape, else t.ctx raises with its message
-- (opts.check = false builds it anyway).
function M.ctx(overrides, opts)
  overrides = overrides or {}
  if type(overrides) ~= "table" then
    error("gateway.testing.ctx: overrides must be a table, got " .. type(overrides), 2)
  end
  local stage = overrides.stage
  if stage == nil then
    stage = "rcpt"
  end
  if not STAGE_SET[stage] then
    error(format("gateway.testing.ctx: stage must be one of %s, got %s",
      concat(M.STAGES, ", "), describe(stage)), 2)
  end
  local d = M.DEFAULTS
  local ctx = { stage = stage, hostname = d.hostname }
  if has_stage(FIELDS.client.stages, stage) then
    ctx.client = deep_copy(d.client)
    ctx.tls = deep_copy(d.tls)
  end
  if has_stage(FIELDS.helo.stages, stage) then
    ctx.helo = d.helo
  end
  if has_stage(FIELDS.sender.stages, stage) then
    ctx.sender = d.sender
  end
  if has_stage(FIELDS.recipient.stages, stage) then
    ctx.recipient = d.recipient
  end
  merge(ctx, overrides)
  ctx.stage = stage

  if has_stage(FIELDS.domain.stages, stage) and ctx.domain == nil and overrides.domain ~= M.NIL then
    ctx.domain = gateway.domain_of(ctx.recipient)
  end
  local tls = ctx.tls
  if type(tls) == "table" and tls.active == true then
    local given = type(overrides.tls) == "table" and overrides.tls or {}
    for k, v in pairs(d.tls_active) do
      if tls[k] == nil and given[k] ~= M.NIL then
        tls[k] = v
      end
    end
  end
  local section = ctx.section
  if type(section) == "table" and section.name == nil and type(ctx.domain) == "string"
    and not (type(overrides.section) == "table" and overrides.section.name == M.NIL) then
    section.name = "domain:" .. ctx.domain
  end

  if not (opts and opts.check == false) then
    local ok, msg = M.check_shape(ctx)
    if not ok then
      error("gateway.testing.ctx: " .. msg, 2)
    end
  end
  return ctx
end

-- t.host([opts]): a host for hook calls.
--   host.log(message)  appends message to host.logs (a string or a number,
--                      as the gateway's luaL_checkstring; else raises)
--   host.now()         host.clock: opts.now, default M.DEFAULTS.now
--   host.logs          the messages logged so far, in order
--   host.clock         set it to move the clock
function M.host(opts)
  if opts ~= nil and type(opts) ~= "table" then
    error("gateway.testing.host: opts must be a table, got " .. type(opts), 2)
  end
  opts = opts or {}
  local now = opts.now
  if now == nil then
    now = M.DEFAULTS.now
  end
  if type(now) ~= "number" then
    error("gateway.testing.host: now must be a number, got " .. type(now), 2)
  end
  local host = { logs = {}, clock = now }
  function host.log(message)
    local t = type(message)
    if t ~= "string" and t ~= "number" then
      error("host.log: message must be a string, got " .. t, 2)
    end
    host.logs[#host.logs + 1] = tostring(message)
  end
  function host.now()
    return host.clock
  end
  return host
end

-- ------------------------------------------------------------ hook calls

local LEVEL_HOOKS = { server_tls = true, client_tls = true }

-- t.run(policy, ctx [, host [, opts]]): calls the hook named ctx.stage as the
-- gateway would and checks its answer: server_tls and client_tls must
-- return a level (any case; t.run returns it in lower case, as the gateway
-- reads it; "sts" only from client_tls), the other hooks a verdict
-- (gateway.is_verdict); else t.run raises. An absent hook gives the
-- gateway's default: server_tls opts.server_level (default "may", i.e.
-- [tls] server_level), client_tls "may" ("dane" where ctx.dane is
-- "secure" or "bogus", else "sts" where ctx.mta_sts is an enforce
-- policy), the others "accept". host defaults to t.host().
function M.run(policy, ctx, host, opts)
  if type(policy) ~= "table" then
    error("gateway.testing.run: policy must be a table of hooks, got " .. type(policy), 2)
  end
  if type(ctx) ~= "table" or not STAGE_SET[ctx.stage] then
    error("gateway.testing.run: ctx.stage must be one of " .. concat(M.STAGES, ", "), 2)
  end
  local stage = ctx.stage
  local hook = policy[stage]
  if hook == nil then
    if stage == "server_tls" then
      return opts and opts.server_level or gateway.MAY
    elseif stage == "client_tls" then
      return gateway.dane(ctx, gateway.mta_sts(ctx, gateway.MAY))
    end
    return gateway.accept()
  end
  if type(hook) ~= "function" then
    error(format("gateway.testing.run: hook %s is a %s, not a function", stage, type(hook)), 2)
  end
  local result = hook(ctx, host or M.host())
  if LEVEL_HOOKS[stage] then
    if not gateway.is_level(result) then
      error(format("gateway.testing.run: %s returned %s, not a level", stage, describe(result)), 2)
    end
    result = gateway.level(result)
    if stage == "server_tls" and (result == gateway.DANE or result == gateway.DANE_ONLY
        or result == gateway.STS) then
      error(format("gateway.testing.run: server_tls returned %s, an outbound level", describe(result)), 2)
    end
  else
    local ok, msg = gateway.is_verdict(result)
    if not ok then
      error(format("gateway.testing.run: %s returned a malformed verdict: %s", stage, msg), 2)
    end
  end
  return result
end

-- ------------------------------------------------------------- fixtures
--
-- The ctxs `smtpgw -t` (and every start and reload) calls each hook with:
-- every stage, from an untrusted IPv4 and IPv6 client and a relay_networks
-- client, in plaintext and over TLS with each kind of client certificate,
-- with a sender and the null sender, and for rcpt and client_tls a
-- recipient in each [domain:...] section, in each relay domain and in a
-- domain of no section; client_tls also with each kind of MTA-STS policy
-- the domain may publish (none known, enforce, testing, none), and with
-- each DANE state (ctx.dane secure, insecure, bogus) beside no MTA-STS
-- policy and beside an enforce one.

M.FIXTURE_CLIENTS = {
  { ip = "192.0.2.10", port = 40000, trusted = false },
  { ip = "2001:db8::10", port = 40000, trusted = false },
}
M.FIXTURE_TLS = {
  { active = false, peer = "none" },
  { active = true, peer = "none", sni = true }, -- sni: the hostname
  { active = true, peer = "untrusted" },
  { active = true, peer = "trusted" },
}
M.FIXTURE_SENDERS = { "sender@example.org", "" }
-- ctx.mta_sts for client_tls: false (the field absent), then each mode;
-- mx patterns are made for the recipient's domain.
M.FIXTURE_MTA_STS = { false, "enforce", "testing", "none" }
-- ctx.dane for client_tls, each with FIXTURE_DANE_STS[1] and [2]
-- (ctx.mta_sts absent, then enforce); false: absent (the list above).
M.FIXTURE_DANE = { false, "secure", "insecure", "bogus" }
M.FIXTURE_DANE_STS = { 1, 2 }
-- Domains tried, in order, for "a recipient in no section".
M.FIXTURE_UNLISTED = { "example.test", "unlisted.invalid" }

-- section_index(sections): lower-case name -> name, for find_section.
local function section_index(sections)
  local index = {}
  for name in pairs(sections) do
    if type(name) == "string" and name ~= "" and name ~= "." then
      index[lower(name)] = name
    end
  end
  return index
end

-- find_section(domain, index): the exact name, else the longest ".NAME"
-- that covers domain (its suffixes from the longest down).
local function find_section(domain, index)
  domain = lower(domain)
  if index[domain] then
    return index[domain]
  end
  local pos = 1
  while true do
    local dot = find(domain, ".", pos + 1, true)
    if dot == nil then
      return nil
    end
    if index[sub(domain, dot)] then
      return index[sub(domain, dot)]
    end
    pos = dot
  end
end

-- section_for(domain, sections): the key of `sections` (a map of section
-- names, "partner.example" or ".sub.example", to their keys) the gateway
-- picks for domain: the exact name, else the longest ".NAME" that covers
-- it (case-insensitive); nil when none does.
function M.section_for(domain, sections)
  if type(domain) ~= "string" or domain == "" or type(sections) ~= "table" then
    return nil
  end
  return find_section(domain, section_index(sections))
end

-- A domain a pattern stands for: "sub.example" for ".sub.example" -> "sub.sub.example".
local function pattern_domain(name)
  return sub(name, 1, 1) == "." and "sub" .. lower(name) or lower(name)
end

-- The recipient domains of the fixtures: one per section (".NAME" gives
-- sub.NAME), then those of `extra` (the same way), then the first of
-- FIXTURE_UNLISTED that no section covers; each once.
local function fixture_domains(sections, extra, index)
  local out, seen = {}, {}
  local function add(d)
    if not seen[d] then
      seen[d] = true
      out[#out + 1] = d
    end
  end
  for _, name in ipairs(sorted_keys(sections)) do
    if type(name) == "string" then
      add(pattern_domain(name))
    end
  end
  for _, name in ipairs(extra) do
    if type(name) == "string" and name ~= "" and name ~= "." then
      add(pattern_domain(name))
    end
  end
  for _, d in ipairs(M.FIXTURE_UNLISTED) do
    if find_section(d, index) == nil and not seen[d] then
      add(d)
      break
    end
  end
  return out
end

local function fixture_clients(trusted_ip)
  local out = {}
  for i, c in ipairs(M.FIXTURE_CLIENTS) do
    out[i] = c
  end
  if trusted_ip then
    out[#out + 1] = { ip = trusted_ip, port = 40000, trusted = true }
  end
  return out
end

-- plan(...): the fixture list as small tables { stage, client, tls,
-- sender, domain (indexes), group }; fixtures that differ only in
-- tls.peer (over TLS) share a group.
local function plans(n_clients, n_domains)
  local out = {}
  local function add(p)
    out[#out + 1] = p
    p.group = #out
    return p
  end
  local function each_tls(base, first_tls)
    local group
    for tls = first_tls, #M.FIXTURE_TLS do
      local p = add({ stage = base.stage, client = base.client, sender = base.sender,
        domain = base.domain, tls = tls })
      if M.FIXTURE_TLS[tls].active then
        group = group or p.group
        p.group = group
      end
    end
  end
  for _, stage in ipairs({ "server_tls", "connect" }) do
    for c = 1, n_clients do
      add({ stage = stage, client = c, tls = 1 })
    end
  end
  for c = 1, n_clients do
    each_tls({ stage = "helo", client = c }, 1)
  end
  for c = 1, n_clients do
    for s = 1, #M.FIXTURE_SENDERS do
      each_tls({ stage = "mail", client = c, sender = s }, 1)
    end
  end
  for d = 1, n_domains do
    for c = 1, n_clients do
      each_tls({ stage = "rcpt", client = c, sender = 1, domain = d }, 1)
    end
  end
  for d = 1, n_domains do
    for s = 1, #M.FIXTURE_SENDERS do
      for m = 1, #M.FIXTURE_MTA_STS do
        add({ stage = "client_tls", sender = s, domain = d, mta_sts = m, dane = 1 })
      end
      for k = 2, #M.FIXTURE_DANE do
        for _, m in ipairs(M.FIXTURE_DANE_STS) do
          add({ stage = "client_tls", sender = s, domain = d, mta_sts = m, dane = k })
        end
      end
    end
  end
  return out
end

-- The ctx.mta_sts of a fixture, or nil.
local function fixture_mta_sts(mode, domain)
  if not mode then
    return nil
  end
  if mode == "none" then
    return { mode = mode, mx = {} }
  end
  return { mode = mode, mx = { "mx." .. domain, "*." .. domain } }
end

local function describe_fixture(ctx)
  local parts = { ctx.stage }
  if ctx.recipient then
    parts[#parts + 1] = "<" .. ctx.recipient .. ">"
    parts[#parts + 1] = ctx.section and "[" .. ctx.section.name .. "]" or "(no section)"
  end
  if ctx.stage == "mail" or ctx.stage == "client_tls" then
    parts[#parts + 1] = "from <" .. ctx.sender .. ">"
  end
  if ctx.mta_sts then
    parts[#parts + 1] = "MTA-STS " .. ctx.mta_sts.mode
  end
  if ctx.dane then
    parts[#parts + 1] = "DANE " .. ctx.dane
  end
  if ctx.client then
    parts[#parts + 1] = "client " .. ctx.client.ip .. (ctx.client.trusted and " (relay_networks)" or "")
    if ctx.tls.active then
      parts[#parts + 1] = "over TLS, client certificate " .. ctx.tls.peer
    else
      parts[#parts + 1] = "in plaintext"
    end
  end
  return concat(parts, " ")
end

-- t.fixtures([opts]): an iterator over the fixtures; each step gives
-- ctx, group, description:
--   for ctx, group, desc in t.fixtures{ sections = { ["partner.example"] =
--       { tls = "verify", tls_in = "encrypt" } } } do ... end
-- opts.sections: the [domain:...] sections, name -> keys (as ctx.section
--   has them, without name); opts.domains: more recipient domains (the
--   gateway passes relay_domains; ".NAME" stands for sub.NAME);
--   opts.hostname: ctx.hostname (default M.DEFAULTS.hostname);
--   opts.trusted_ip: the address of the relay_networks client (default
--   "127.0.0.1"; false: none).
-- Each ctx is fresh, built by t.ctx. group is a number shared by the
-- fixtures that differ only in tls.peer; description says in words what
-- the ctx is ("rcpt <user@partner.example> [domain:partner.example] client
-- 192.0.2.10 over TLS, client certificate none").
-- want_table(v, what): v, or {} for nil; raises (at the caller's caller)
-- when v is something else.
local function want_table(v, what)
  if v == nil then
    return {}
  end
  if type(v) ~= "table" then
    error(format("gateway.testing.fixtures: %s must be a table, got %s", what, type(v)), 3)
  end
  return v
end

function M.fixtures(opts)
  opts = want_table(opts, "opts")
  local sections = want_table(opts.sections, "opts.sections")
  local hostname = opts.hostname or M.DEFAULTS.hostname
  local trusted_ip = opts.trusted_ip
  if trusted_ip == nil then
    trusted_ip = "127.0.0.1"
  end
  local clients = fixture_clients(trusted_ip)
  local extra = want_table(opts.domains, "opts.domains")
  local index = section_index(sections)
  local domains = fixture_domains(sections, extra, index)
  local list = plans(#clients, #domains)
  local i = 0
  return function()
    i = i + 1
    local p = list[i]
    if p == nil then
      return nil
    end
    local over = { stage = p.stage, hostname = hostname }
    if p.client then
      over.client = clients[p.client]
      local tls = M.FIXTURE_TLS[p.tls]
      over.tls = { active = tls.active, peer = tls.peer, sni = tls.sni and hostname or nil }
    end
    if p.sender then
      over.sender = M.FIXTURE_SENDERS[p.sender]
    end
    if p.domain then
      local domain = domains[p.domain]
      over.recipient = "user@" .. domain
      local name = find_section(domain, index)
      if name ~= nil then
        local section = deep_copy(sections[name])
        section.name = section.name or "domain:" .. name
        over.section = section
      end
      if p.mta_sts then
        over.mta_sts = fixture_mta_sts(M.FIXTURE_MTA_STS[p.mta_sts], domain)
      end
      if p.dane then
        over.dane = M.FIXTURE_DANE[p.dane] or nil
      end
    end
    local ctx = M.ctx(over)
    return ctx, p.group, describe_fixture(ctx)
  end
end

-- t.check(policy [, opts [, host]]): runs every fixture of t.fixtures(opts)
-- through t.run (opts.server_level as there), as `smtpgw -t` does; raises
-- at the first error or bad answer, naming the fixture. Returns the number
-- of fixtures.
function M.check(policy, opts, host)
  host = host or M.host()
  local n = 0
  for ctx, _, desc in M.fixtures(opts) do
    local ok, err = pcall(M.run, policy, ctx, host, opts)
    if not ok then
      error("gateway.testing.check: " .. desc .. ": " .. tostring(err), 2)
    end
    n = n + 1
  end
  return n
end

return M
