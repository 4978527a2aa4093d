-- Test certificates made with the openssl CLI: a CA, and leaf pairs signed
-- by it or self-signed. Keys are EC P-256 (fast) and mode 0600.

local gateway = require "gateway"
local q = gateway.shell_quote

local M = {}

local function sh(cmd)
  local out, code = gateway.run(cmd)
  assert(code == 0, cmd .. "\n" .. tostring(out))
  return out
end

-- pki.ca(dir) → { dir, crt, key }
function M.ca(dir, cn)
  sh("mkdir -p " .. q(dir))
  local ca = { dir = dir, crt = dir .. "/ca.crt", key = dir .. "/ca.key" }
  sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes" ..
    " -days 30 -subj " .. q("/CN=" .. (cn or "smtpgw Test CA")) ..
    " -keyout " .. q(ca.key) .. " -out " .. q(ca.crt) .. " 2>&1")
  return ca
end

-- pki.leaf(dir, name, { ca = ca | nil (self-signed), days = n,
--   usage = "serverAuth" | "clientAuth" }) → { crt, key } named NAME.crt/key
function M.leaf(dir, name, opts)
  opts = opts or {}
  sh("mkdir -p " .. q(dir))
  local crt, key = dir .. "/" .. name .. ".crt", dir .. "/" .. name .. ".key"
  local ext = dir .. "/" .. name .. ".ext"
  gateway.write_file(ext, "subjectAltName=DNS:" .. name ..
    "\nextendedKeyUsage=" .. (opts.usage or "serverAuth") .. "\n")
  local days = tostring(opts.days or 30)
  if opts.ca then
    local csr = dir .. "/" .. name .. ".csr"
    sh("openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes" ..
      " -subj " .. q("/CN=" .. name) .. " -keyout " .. q(key) ..
      " -out " .. q(csr) .. " 2>&1")
    sh("openssl x509 -req -in " .. q(csr) .. " -CA " .. q(opts.ca.crt) ..
      " -CAkey " .. q(opts.ca.key) .. " -CAcreateserial -days " .. days ..
      " -extfile " .. q(ext) .. " -out " .. q(crt) .. " 2>&1")
    os.remove(csr)
  else
    sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes" ..
      " -days " .. days .. " -subj " .. q("/CN=" .. name) ..
      " -addext " .. q("subjectAltName=DNS:" .. name) ..
      " -keyout " .. q(key) .. " -out " .. q(crt) .. " 2>&1")
  end
  os.remove(ext)
  sh("chmod 600 " .. q(key))
  return { crt = crt, key = key }
end

return M
