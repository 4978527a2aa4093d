-- gateway: the helper module of smtpgw's Lua policies (README.md, "Policies").
--
--   local gateway = require "gateway"
--
-- TLS levels, verdict builders, domain and CIDR helpers, and the pieces the
-- stock scripts (policies/*.lua) share. Every function is pure: no globals,
-- no I/O, no state. The module runs inside the policy sandbox (LuaJIT 2.1,
-- Lua 5.1 semantics, only the base, string, table and math libraries), so the
-- CIDR arithmetic below uses plain arithmetic, never the `bit` library.
--
-- Errors: a function raises (error()) only on a bug in the policy itself,
-- such as a malformed verdict, a level name with a typo or a malformed CIDR
-- pattern; the gateway answers that 451 4.3.0 (README, "Hooks"). Data that
-- comes from the SMTP client (an address, a client IP) never raises: a
-- malformed value simply does not match.

local type, tostring, tonumber, error, ipairs, pairs = type, tostring, tonumber, error, ipairs, pairs
local floor = math.floor
local find, sub, lower, match, format, gmatch =
  string.find, string.sub, string.lower, string.match, string.format, string.gmatch

local M = {}

-- ------------------------------------------------------------------ levels

M.NONE = "none"
M.MAY = "may"
M.ENCRYPT = "encrypt"
M.VERIFY = "verify"
-- Outbound only (client_tls, a [domain:...] tls), README "DANE": DANE
-- where the MX host publishes secure TLSA records, else as may; and DANE
-- or defer.
M.DANE = "dane"
M.DANE_ONLY = "dane-only"
-- Outbound only, README "MTA-STS": as the destination's MTA-STS policy
-- says (enforce: verify with the MX host name, and only the MX hosts the
-- policy names; where the domain publishes no enforce policy: may). See
-- mta_sts() below.
M.STS = "sts"

-- The levels, weakest first, by what they guarantee: dane and sts only
-- what may does (they fall back to may without TLSA records, or without
-- an enforce policy), dane-only an authenticated peer, as verify.
M.LEVELS = { M.NONE, M.MAY, M.DANE, M.STS, M.ENCRYPT, M.VERIFY, M.DANE_ONLY }

local RANK = { none = 1, may = 2, dane = 2, sts = 2, encrypt = 3, verify = 4, ["dane-only"] = 4 }

-- describe(v): a value for an error message.
local function describe(v)
  if type(v) == "string" then
    return format("%q", v)
  end
  return tostring(v)
end

-- level(s): the level s names, in lower case ("VERIFY" -> "verify"); nil
-- when s is not a string naming one of the seven. Level names are
-- case-insensitive everywhere, as in gateway.ini and in what a hook returns.
function M.level(s)
  if type(s) ~= "string" then
    return nil
  end
  local l = lower(s)
  if RANK[l] == nil then
    return nil
  end
  return l
end

-- is_level(s): true when s names one of the seven levels (any case).
function M.is_level(s)
  return M.level(s) ~= nil
end

local function rank(s, fname)
  local l = M.level(s)
  if l == nil then
    error(format("gateway.%s: not a TLS level: %s (expected none, may, encrypt, verify, dane, dane-only or sts)",
      fname, describe(s)), 3)
  end
  return RANK[l]
end

-- level_rank(s): 1 (none), 2 (may, dane, sts), 3 (encrypt), 4 (verify,
-- dane-only); raises on anything that is not a level.
function M.level_rank(s)
  local r = rank(s, "level_rank")
  return r
end

-- at_least(level, min): level is min or stronger; raises when either is not
-- a level.
function M.at_least(level, min)
  local ok = rank(level, "at_least") >= rank(min, "at_least")
  return ok
end

-- ---------------------------------------------------------------- verdicts

local function check_code(fname, code, lo, hi, what)
  if type(code) ~= "number" or code ~= floor(code) or code < lo or code > hi then
    error(format("gateway.%s: code must be %s, got %s", fname, what, describe(code)), 3)
  end
end

local function check_text(fname, text)
  if type(text) ~= "string" then
    error(format("gateway.%s: text must be a string, got %s", fname, describe(text)), 3)
  end
  if text == "" then
    error(format("gateway.%s: text must not be empty", fname), 3)
  end
  if find(text, "[%z\1-\31\127]") then
    error(format("gateway.%s: text must be one line without control characters, got %s",
      fname, describe(text)), 3)
  end
end

-- accept(): the verdict "accept".
function M.accept()
  return "accept"
end

-- reject(code, text): { action = "reject", code = code, text = text }.
-- code: an integer 400..599; text: a non-empty line without control
-- characters (CR, LF, NUL, ...), e.g. "5.7.1 not here".
function M.reject(code, text)
  check_code("reject", code, 400, 599, "an integer from 400 to 599")
  check_text("reject", text)
  return { action = "reject", code = code, text = text }
end

-- tempfail(code, text): { action = "tempfail", code = code, text = text };
-- code: an integer 400..499; text as for reject.
function M.tempfail(code, text)
  check_code("tempfail", code, 400, 499, "an integer from 400 to 499")
  check_text("tempfail", text)
  return { action = "tempfail", code = code, text = text }
end

-- is_verdict(v): true when v is a verdict a hook may return ("accept" or a
-- table with exactly the keys action, code and text, valid as reject() /
-- tempfail() require); otherwise false and a message.
function M.is_verdict(v)
  if v == "accept" then
    return true
  end
  if type(v) ~= "table" then
    return false, "a verdict is \"accept\" or a table, got " .. describe(v)
  end
  for k in pairs(v) do
    if k ~= "action" and k ~= "code" and k ~= "text" then
      return false, "unknown verdict field " .. describe(k)
    end
  end
  local hi
  if v.action == "reject" then
    hi = 599
  elseif v.action == "tempfail" then
    hi = 499
  else
    return false, "verdict action must be \"reject\" or \"tempfail\", got " .. describe(v.action)
  end
  local code, text = v.code, v.text
  if type(code) ~= "number" or code ~= floor(code) or code < 400 or code > hi then
    return false, format("%s code must be an integer from 400 to %d, got %s", v.action, hi, describe(code))
  end
  if type(text) ~= "string" or text == "" or find(text, "[%z\1-\31\127]") then
    return false, v.action .. " text must be a non-empty line without control characters, got " .. describe(text)
  end
  return true
end

-- ----------------------------------------------------------------- domains

-- domain_of(address): the part after the last "@", lower case; nil when the
-- address is not a string, has no "@" or nothing after it. Surrounding angle
-- brackets are ignored ("<u@Example.COM>" -> "example.com").
function M.domain_of(address)
  if type(address) ~= "string" then
    return nil
  end
  local inner = match(address, "^<(.*)>$")
  if inner then
    address = inner
  end
  local d = match(address, "@([^@]*)$")
  if d == nil or d == "" then
    return nil
  end
  return lower(d)
end

-- domain_matches(domain, pattern): case-insensitive. "example.com" matches
-- that domain only; ".example.com" matches its subdomains only (a.example.com,
-- a.b.example.com), not example.com itself. A domain that is not a string
-- (say ctx.domain where there is none) matches nothing; a pattern that is not
-- a non-empty string raises.
function M.domain_matches(domain, pattern)
  if type(pattern) ~= "string" or pattern == "" or pattern == "." then
    error("gateway.domain_matches: pattern must be a domain or .domain, got " .. describe(pattern), 2)
  end
  if type(domain) ~= "string" or domain == "" then
    return false
  end
  domain, pattern = lower(domain), lower(pattern)
  if sub(pattern, 1, 1) == "." then
    return #domain > #pattern and sub(domain, -#pattern) == pattern
  end
  return domain == pattern
end

-- -------------------------------------------------------------------- CIDR

-- parse_v4(s): the 4 bytes of a dotted quad, or nil. Strict: four decimal
-- parts 0..255 without leading zeros ("010.0.0.1" is not an address).
local function parse_v4(s)
  local a, b, c, d = match(s, "^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  if not a then
    return nil
  end
  local out = { a, b, c, d }
  for i = 1, 4 do
    local p = out[i]
    if #p > 3 or (#p > 1 and sub(p, 1, 1) == "0") then
      return nil
    end
    local n = tonumber(p)
    if n > 255 then
      return nil
    end
    out[i] = n
  end
  return out
end

-- v6_groups(part, allow_v4): the 16-bit groups of a colon-separated run
-- ("" -> none); a dotted quad is allowed as the last field when allow_v4.
local function v6_groups(part, allow_v4, out)
  if part == "" then
    return out
  end
  local fields = {}
  for f in gmatch(part .. ":", "([^:]*):") do
    fields[#fields + 1] = f
  end
  for i = 1, #fields do
    local f = fields[i]
    if find(f, ".", 1, true) then
      if i ~= #fields or not allow_v4 then
        return nil
      end
      local q = parse_v4(f)
      if not q then
        return nil
      end
      out[#out + 1] = q[1] * 256 + q[2]
      out[#out + 1] = q[3] * 256 + q[4]
    elseif match(f, "^%x%x?%x?%x?$") then
      out[#out + 1] = tonumber(f, 16)
    else
      return nil
    end
  end
  return out
end

-- parse_v6(s): the 16 bytes of an IPv6 address (RFC 4291 text forms: full,
-- "::"-compressed, trailing dotted quad; hex in any case), or nil. Zone ids
-- ("%eth0") and brackets are not addresses.
local function parse_v6(s)
  if find(s, "[^%x:%.]") then
    return nil
  end
  local groups
  local a, b = find(s, "::", 1, true)
  if a then
    local tail = sub(s, b + 1)
    if find(tail, "::", 1, true) then
      return nil
    end
    local head = v6_groups(sub(s, 1, a - 1), false, {})
    local rest = head and v6_groups(tail, true, {})
    if not rest or #head + #rest > 7 then
      return nil
    end
    groups = head
    for _ = 1, 8 - #head - #rest do
      groups[#groups + 1] = 0
    end
    for i = 1, #rest do
      groups[#groups + 1] = rest[i]
    end
  else
    groups = v6_groups(s, true, {})
    if not groups or #groups ~= 8 then
      return nil
    end
  end
  local bytes = {}
  for i = 1, 8 do
    bytes[2 * i - 1] = floor(groups[i] / 256)
    bytes[2 * i] = groups[i] % 256
  end
  return bytes
end

-- parse_ip(s): the address's bytes (4 or 16 of them), or nil.
local function parse_ip(s)
  if type(s) ~= "string" then
    return nil
  end
  if find(s, ":", 1, true) then
    return parse_v6(s)
  end
  return parse_v4(s)
end

-- ip_family(ip): 4 or 6 for a valid address string, else nil.
function M.ip_family(ip)
  local bytes = parse_ip(ip)
  if bytes == nil then
    return nil
  end
  return #bytes == 4 and 4 or 6
end

-- parse_cidr(cidr): bytes, prefix length; raises when cidr is not
-- "ADDRESS/LEN" or a bare ADDRESS (taken as /32 or /128).
local function parse_cidr(cidr, fname)
  if type(cidr) ~= "string" then
    error(format("gateway.%s: CIDR must be a string, got %s", fname, describe(cidr)), 3)
  end
  local addr, len = match(cidr, "^([^/]*)/(%d%d?%d?)$")
  if not addr then
    if find(cidr, "/", 1, true) then
      addr = nil
    else
      addr = cidr
    end
  end
  local bytes = addr and parse_ip(addr)
  if not bytes then
    error(format("gateway.%s: not a CIDR network: %s", fname, describe(cidr)), 3)
  end
  local bits = #bytes * 8
  local prefix = len and tonumber(len) or bits
  if prefix > bits then
    error(format("gateway.%s: prefix length over %d in %s", fname, bits, describe(cidr)), 3)
  end
  return bytes, prefix
end

-- same_prefix(net, prefix, ip): the first prefix bits of the byte arrays net
-- and ip are equal (arrays of the same length).
local function same_prefix(net, prefix, ip)
  local full = floor(prefix / 8)
  for i = 1, full do
    if net[i] ~= ip[i] then
      return false
    end
  end
  local rest = prefix - full * 8
  if rest > 0 then
    local d = 2 ^ (8 - rest)
    return floor(net[full + 1] / d) == floor(ip[full + 1] / d)
  end
  return true
end

-- cidr_contains(cidr, ip): ip lies in the network cidr ("10.0.0.0/8",
-- "2001:db8::/32", "::1/128"; a bare address means /32 or /128; host bits
-- set in the network part are ignored, "10.1.2.3/8" = "10.0.0.0/8").
-- An IPv4 ip never matches an IPv6 network and vice versa (so
-- "::ffff:10.0.0.1" is not in "10.0.0.0/8"). A malformed ip (or one that is
-- not a string) gives false; a malformed cidr raises.
function M.cidr_contains(cidr, ip)
  local net, prefix = parse_cidr(cidr, "cidr_contains")
  local addr = parse_ip(ip)
  if addr == nil or #addr ~= #net then
    return false
  end
  return same_prefix(net, prefix, addr)
end

-- in_networks(list, ip): ip lies in one of the CIDR networks of the array
-- list. Raises when list is not a table or one of its entries is malformed
-- (every entry is checked, whatever ip is); a malformed ip gives false.
function M.in_networks(list, ip)
  if type(list) ~= "table" then
    error("gateway.in_networks: list must be an array of CIDR strings, got " .. describe(list), 2)
  end
  local addr = parse_ip(ip)
  local found = false
  for _, cidr in ipairs(list) do
    local net, prefix = parse_cidr(cidr, "in_networks")
    if not found and addr ~= nil and #addr == #net and same_prefix(net, prefix, addr) then
      found = true
    end
  end
  return found
end

-- ------------------------------------------------------ stock script parts

-- section_level(ctx, key, default): the level of key `key` of the recipient
-- domain's [domain:...] section (lower case), else default.
local function section_level(ctx, key, default)
  local section = type(ctx) == "table" and ctx.section or nil
  local level = type(section) == "table" and M.level(section[key]) or nil
  if level ~= nil then
    return level
  end
  return default
end

-- domain_level(ctx, default): the OUTBOUND level of the recipient domain:
-- the `tls` key of its [domain:...] section (ctx.section.tls) when it is a
-- level, else default (lower case either way). default must be a level or
-- nil.
function M.domain_level(ctx, default)
  if default ~= nil and not M.is_level(default) then
    error("gateway.domain_level: default is not a TLS level: " .. describe(default), 2)
  end
  return section_level(ctx, "tls", M.level(default))
end

-- mta_sts(ctx, level): "sts" when the recipient domain publishes an
-- MTA-STS policy in enforce mode (ctx.mta_sts.mode == "enforce", client_tls
-- only), else level (lower case). level must be a level. A policy in
-- testing mode changes nothing here: the gateway delivers at the level
-- chosen and logs what enforce would have refused (README "MTA-STS").
function M.mta_sts(ctx, level)
  if not M.is_level(level) then
    error("gateway.mta_sts: level is not a TLS level: " .. describe(level), 2)
  end
  local sts = type(ctx) == "table" and ctx.mta_sts or nil
  if type(sts) == "table" and sts.mode == "enforce" then
    return M.STS
  end
  return M.level(level)
end

-- dane(ctx, level): "dane" when DNSSEC says the destination publishes
-- TLSA records (ctx.dane == "secure") or their lookup failed
-- (ctx.dane == "bogus": under dane that host is skipped, and the mail
-- waits rather than go out unauthenticated, RFC 7672 §2.2), else level
-- (lower case): ctx.dane "insecure" or absent (client_tls only; README
-- "DANE"). level must be a level. DANE comes before MTA-STS (RFC 8461
-- §2): gateway.dane(ctx, gateway.mta_sts(ctx, gateway.MAY)).
function M.dane(ctx, level)
  if not M.is_level(level) then
    error("gateway.dane: level is not a TLS level: " .. describe(level), 2)
  end
  local state = type(ctx) == "table" and ctx.dane or nil
  if state == "secure" or state == "bogus" then
    return M.DANE
  end
  return M.level(level)
end

-- domain_tls_in(ctx): what mail addressed to the recipient domain needs on
-- the way in: the `tls_in` key of its [domain:...] section
-- (ctx.section.tls_in) when it is "encrypt" or "verify"; else "none" (no
-- tls_in, or no section).
function M.domain_tls_in(ctx)
  local level = section_level(ctx, "tls_in", M.NONE)
  if level ~= M.ENCRYPT and level ~= M.VERIFY then
    return M.NONE
  end
  return level
end

-- rcpt_tls_verdict(ctx [, level]): the stock scripts' rcpt rule. level is
-- what mail to the recipient needs inbound (any case; none and may need
-- nothing), by default domain_tls_in(ctx). It applies to every client,
-- relay_networks included:
--   level encrypt or verify, session in plaintext
--     -> reject(530, "5.7.0 Must issue a STARTTLS command first")
--   level verify, TLS active, ctx.tls.peer ~= "trusted"
--     -> reject(550, "5.7.1 <RECIPIENT>: Recipient address rejected: TLS
--        with a verified client certificate required")
--   otherwise -> "accept"
function M.rcpt_tls_verdict(ctx, level)
  if level == nil then
    level = M.domain_tls_in(ctx)
  else
    rank(level, "rcpt_tls_verdict")
    level = M.level(level)
  end
  if level ~= M.ENCRYPT and level ~= M.VERIFY then
    return M.accept()
  end
  local tls = type(ctx) == "table" and ctx.tls or nil
  if type(tls) ~= "table" or tls.active ~= true then
    return M.reject(530, "5.7.0 Must issue a STARTTLS command first")
  end
  if level == M.VERIFY and tls.peer ~= "trusted" then
    return M.reject(550, format("5.7.1 <%s>: Recipient address rejected: "
      .. "TLS with a verified client certificate required", tostring(ctx.recipient)))
  end
  return M.accept()
end

return M
