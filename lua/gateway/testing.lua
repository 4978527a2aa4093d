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
local format, lower, match = string.format, string.lower, string.match
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
    order = { "name", "tls", "next_hop" },
    fields = {
      name = { type = "string", required = true, pattern = "^domain:%.?[^%s%.][^%s]*$" },
      tls = { type = "string", required = false },
      next_hop = { type = "string", required = false },
    },
  },
}

-- The order in which check_shape looks at the top-level fields (the README's).
M.ORDER = { "stage", "hostname", "client", "helo", "tls", "sender", "recipient", "domain", "section" }

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
-- return a level, the other hooks a verdict (gateway.is_verdict); else
-- t.run raises. An absent hook gives the gateway's default: server_tls
-- opts.server_level (default "may", i.e. [tls] server_level), client_tls
-- "may", the others "accept". host defaults to t.host().
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
      return gateway.MAY
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
  else
    local ok, msg = gateway.is_verdict(result)
    if not ok then
      error(format("gateway.testing.run: %s returned a malformed verdict: %s", stage, msg), 2)
    end
  end
  return result
end

return M
