-- DNSSEC-signed test zones on loopback, for the DANE specs (and any spec
-- that needs secure or insecure DNS answers): ldns-keygen and
-- ldns-signzone (ldnsutils) sign each zone in a temporary directory, and
-- Debian's unbound serves them from auth-zone: on 127.0.0.1 at a free
-- port. Nothing is recursed or forwarded: "." is refused, and only the
-- zones given are answered. Started and stopped by PID through procs.lua.
--
--   local dnssec = require "dnssec_zone"
--   local z = dnssec.start{
--     zones = {
--       { name = "example.test",            -- signed (NSEC3) by default
--         records = { "@ MX 10 mx",          -- relative to the zone,
--                     "mx A 127.0.0.1",      -- as in a zone file
--                     "_25._tcp.mx TLSA " .. dnssec.tlsa(crt, 3, 1, 1) },
--         break_rrsig = { "_25._tcp.bad TLSA" } }, -- RRSIG made invalid
--       { name = "insecure.test", signed = false, records = { ... } },
--     },
--   }
--   z:resolver()      --> "127.0.0.1@PORT", for [dns] resolver
--   z:trust_anchor()  --> a file of the signed zones' KSK DNSKEYs, for
--                         [dns] trust_anchor (an unsigned zone is then
--                         insecure: no anchor covers it)
--   z:stop()
--
-- `break_rrsig` names "OWNER TYPE" (OWNER relative to the zone): the
-- signature over that RRset gets one octet changed after signing, so a
-- validating resolver finds it bogus while the zone still loads.

local gateway = require "harness"
local dns_server = require "dns_server"

local M = {}

local q = gateway.shell_quote

local function sh(cmd)
  local out, code = gateway.run(cmd .. " 2>&1")
  if code ~= 0 then
    error("command failed (exit " .. tostring(code) .. "): " .. cmd .. "\n" .. out, 3)
  end
  return out
end

-- The association data of a certificate file as "USAGE SELECTOR MTYPE HEX"
-- (selector 0: the certificate, 1: its SubjectPublicKeyInfo; matching
-- type 0: the DER itself, 1: SHA-256, 2: SHA-512), computed by openssl.
function M.tlsa(crt, usage, selector, mtype)
  local der = selector == 0
    and ("openssl x509 -in " .. q(crt) .. " -outform DER")
    or ("openssl x509 -in " .. q(crt) .. " -noout -pubkey | openssl pkey -pubin -outform DER")
  local digest = ({ [0] = "od -An -v -tx1", [1] = "openssl dgst -sha256 -r",
    [2] = "openssl dgst -sha512 -r" })[mtype]
  local out = sh(der .. " | " .. digest)
  local hex = (mtype == 0 and out or out:match("^(%x+)") or ""):gsub("%s", "")
  local want = ({ [1] = 64, [2] = 128 })[mtype]
  assert(#hex > 0 and (want == nil or #hex == want), "no TLSA data for " .. crt .. ": " .. out)
  return string.format("%d %d %d %s", usage, selector, mtype, hex)
end

local function zone_text(z)
  local lines = {
    "$ORIGIN " .. z.name .. ".",
    "$TTL 300",
    "@ IN SOA ns." .. z.name .. ". hostmaster." .. z.name .. ". 1 3600 600 86400 300",
    "@ IN NS ns." .. z.name .. ".",
    "ns IN A 127.0.0.1",
  }
  for _, rr in ipairs(z.records or {}) do lines[#lines + 1] = rr end
  return table.concat(lines, "\n") .. "\n"
end

-- Changes one base64 character in the middle of the signature of each
-- "OWNER TYPE" RRset named (ldns-signzone writes one RR a line:
-- "owner. TTL IN RRSIG TYPE alg labels ttl exp inc tag signer. SIG").
local function break_signatures(path, origin, targets)
  if not targets or #targets == 0 then return end
  local text = assert(gateway.read_file(path))
  for _, target in ipairs(targets) do
    local owner, rrtype = target:match("^(%S+)%s+(%S+)$")
    assert(owner, "break_rrsig wants \"OWNER TYPE\": " .. target)
    local fqdn = (owner == "@" and "" or owner .. ".") .. origin .. "."
    local done = false
    text = text:gsub("([^\n]*)\n", function(line)
      local o, t, sig = line:match("^(%S+)%s+%d+%s+IN%s+RRSIG%s+(%S+)%s.*%s(%S+)$")
      if done or not o or o:lower() ~= fqdn:lower() or t:upper() ~= rrtype:upper() then
        return nil
      end
      done = true
      local i = math.floor(#sig / 2)
      local c = sig:sub(i, i)
      local swapped = c == "A" and "B" or "A"
      return line:sub(1, #line - #sig) .. sig:sub(1, i - 1) .. swapped .. sig:sub(i + 1) .. "\n"
    end)
    assert(done, "no RRSIG " .. rrtype .. " for " .. fqdn .. " in " .. path)
  end
  gateway.write_file(path, text)
end

-- Writes and (unless signed == false) signs one zone; returns the zone
-- file unbound serves and the KSK's .key file (nil when unsigned).
local function build_zone(dir, z)
  local base = dir .. "/" .. z.name
  gateway.write_file(base .. ".zone", zone_text(z))
  if z.signed == false then return base .. ".zone", nil end
  local cd = "cd " .. q(dir) .. " && "
  local ksk = sh(cd .. "ldns-keygen -a ECDSAP256SHA256 -k " .. q(z.name)):match("(%S+)")
  local zsk = sh(cd .. "ldns-keygen -a ECDSAP256SHA256 " .. q(z.name)):match("(%S+)")
  sh(cd .. "ldns-signzone -n -f " .. q(base .. ".signed") .. " " .. q(base .. ".zone") ..
    " " .. q(zsk) .. " " .. q(ksk))
  break_signatures(base .. ".signed", z.name, z.break_rrsig)
  return base .. ".signed", dir .. "/" .. ksk .. ".key"
end

local function config_text(dir, port, served)
  local lines = dns_server.server_lines(dir, port)
  -- nothing but the zones below: every other name is refused, never
  -- recursed; a transparent local zone lets auth-zone answer its own
  lines[#lines + 1] = '  local-zone: "." refuse'
  for _, s in ipairs(served) do
    lines[#lines + 1] = '  local-zone: "' .. s.name .. '." transparent'
  end
  for _, s in ipairs(served) do
    lines[#lines + 1] = "auth-zone:"
    lines[#lines + 1] = '  name: "' .. s.name .. '."'
    lines[#lines + 1] = '  zonefile: "' .. s.file .. '"'
    lines[#lines + 1] = "  for-downstream: yes"
    lines[#lines + 1] = "  for-upstream: no"
  end
  lines[#lines + 1] = "remote-control:"
  lines[#lines + 1] = "  control-enable: no"
  return table.concat(lines, "\n") .. "\n"
end

-- resolver(), log() and stop() are dns_server's
local Zones = setmetatable({}, { __index = dns_server.Server })
Zones.__index = Zones

-- dnssec.start{ zones = { ... } } (see above) → zones; raises when unbound
-- does not come up.
function M.start(opts)
  local dir = gateway.mktempdir()
  local served, anchors = {}, {}
  for _, z in ipairs(opts.zones) do
    local file, key = build_zone(dir, z)
    served[#served + 1] = { name = z.name, file = file }
    if key then anchors[#anchors + 1] = assert(gateway.read_file(key)) end
  end
  local anchor = dir .. "/trust-anchor.keys"
  gateway.write_file(anchor, table.concat(anchors, ""))
  local server = dns_server.launch(dir, function(port)
    return config_text(dir, port, served)
  end)
  server.anchor = anchor
  return setmetatable(server, Zones)
end

function Zones:trust_anchor()
  return self.anchor
end

-- dig's answer for NAME TYPE (with +dnssec), for failure messages.
function Zones:dig(name, rrtype)
  return (gateway.run("dig +dnssec +norecurse +time=2 +tries=1 @127.0.0.1 -p " .. self.port ..
    " " .. q(name) .. " " .. q(rrtype) .. " 2>&1"))
end

return M
