-- Certificates and certificate inspection for the TLS specs, all through the
-- openssl CLI.
--
--   local tlss = require "tls_support"
--   local pki = tlss.make_pki(gateway.mktempdir() .. "/pki")
--   -- pki.ca, pki.client.crt/.key, pki.rogue, pki.a, pki.b (SNI pairs)
--   tlss.install(pki.a, certdir, "a")      -- certdir/a.crt + a.key (0600)
--   tlss.x509_text(pem) / tlss.fingerprint(pem) / tlss.subject(pem) ...

local gateway = require "harness"

local M = {}

local q = gateway.shell_quote
local run = gateway.run

local function sh(cmd)
  local out, code = run(cmd)
  if code ~= 0 then
    error("command failed (exit " .. tostring(code) .. "): " .. cmd .. "\n" .. out, 2)
  end
  return out
end
M.sh = sh

local EC = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"

local serial = 0
local function next_serial()
  serial = serial + 1
  return string.format("0x%x%04x", os.time(), serial)
end

-- A self-signed certificate: M.self_signed(dir, name, { cn =, days =,
-- san = "DNS:x,DNS:y", eku = "clientAuth" }) -> { crt =, key =, cn = }.
function M.self_signed(dir, name, o)
  local crt, key = dir .. "/" .. name .. ".crt", dir .. "/" .. name .. ".key"
  local cmd = "openssl req -x509 " .. EC .. " -sha256 -days " .. (o.days or 365) ..
    " -subj " .. q("/CN=" .. o.cn) .. " -keyout " .. q(key) .. " -out " .. q(crt)
  if o.san then cmd = cmd .. " -addext " .. q("subjectAltName=" .. o.san) end
  if o.eku then cmd = cmd .. " -addext " .. q("extendedKeyUsage=" .. o.eku) end
  sh(cmd .. " 2>&1 && chmod 600 " .. q(key))
  return { crt = crt, key = key, cn = o.cn, name = name }
end

-- A certificate signed by the test CA `ca` ({crt, key}): M.signed(dir,
-- name, ca, { cn =, days =, san =, eku = }).
function M.signed(dir, name, ca, o)
  local base = dir .. "/" .. name
  local crt, key, csr, ext = base .. ".crt", base .. ".key", base .. ".csr", base .. ".ext"
  local lines = { "basicConstraints = critical, CA:FALSE",
    "keyUsage = critical, digitalSignature",
    "subjectKeyIdentifier = hash", "authorityKeyIdentifier = keyid" }
  if o.eku then lines[#lines + 1] = "extendedKeyUsage = " .. o.eku end
  if o.san then lines[#lines + 1] = "subjectAltName = " .. o.san end
  gateway.write_file(ext, table.concat(lines, "\n") .. "\n")
  sh("openssl req -new " .. EC .. " -subj " .. q("/CN=" .. o.cn) ..
    " -keyout " .. q(key) .. " -out " .. q(csr) .. " 2>&1" ..
    " && chmod 600 " .. q(key) ..
    " && openssl x509 -req -sha256 -days " .. (o.days or 365) ..
    " -in " .. q(csr) .. " -CA " .. q(ca.crt) .. " -CAkey " .. q(ca.key) ..
    " -set_serial " .. next_serial() .. " -extfile " .. q(ext) ..
    " -out " .. q(crt) .. " 2>&1")
  os.remove(csr)
  os.remove(ext)
  return { crt = crt, key = key, cn = o.cn, name = name }
end

-- The test PKI (EC P-256 everywhere) in `dir`:
--   ca      "smtpgw Test CA" (self-signed, CA:TRUE)
--   client  CN=client.test.example, signed by ca, extendedKeyUsage=clientAuth
--   rogue   CN=rogue.test.example, self-signed, clientAuth
--   a, b    CN=a.test.example / b.test.example, signed by ca, serverAuth,
--           subjectAltName DNS:<cn>
-- A self-signed CA (CA:TRUE, keyCertSign): M.ca(dir, name, cn) ->
-- { crt = DIR/NAME.crt, key = DIR/NAME.key, cn = }; `dir` is made.
function M.ca(dir, name, cn)
  sh("mkdir -p " .. q(dir))
  local ca = { crt = dir .. "/" .. name .. ".crt", key = dir .. "/" .. name .. ".key", cn = cn }
  sh("openssl req -x509 " .. EC .. " -sha256 -days 365 -subj " .. q("/CN=" .. ca.cn) ..
    " -addext 'basicConstraints=critical,CA:TRUE'" ..
    " -addext 'keyUsage=critical,keyCertSign,cRLSign'" ..
    " -keyout " .. q(ca.key) .. " -out " .. q(ca.crt) ..
    " 2>&1 && chmod 600 " .. q(ca.key))
  return ca
end

function M.make_pki(dir)
  local ca = M.ca(dir, "ca", "smtpgw Test CA")
  local pki = { dir = dir, ca = ca }
  pki.client = M.signed(dir, "client", ca, { cn = "client.test.example", eku = "clientAuth" })
  pki.rogue = M.self_signed(dir, "rogue", { cn = "rogue.test.example", eku = "clientAuth" })
  for _, n in ipairs({ "a", "b" }) do
    local cn = n .. ".test.example"
    pki[n] = M.signed(dir, n, ca, { cn = cn, eku = "serverAuth", san = "DNS:" .. cn })
  end
  return pki
end

-- Copies a pair into a certificate store as NAME.crt + NAME.key (key 0600).
function M.install(pair, cert_dir, name)
  name = name or pair.name
  local crt, key = cert_dir .. "/" .. name .. ".crt", cert_dir .. "/" .. name .. ".key"
  sh("mkdir -p " .. q(cert_dir) .. " && cp " .. q(pair.crt) .. " " .. q(crt) ..
    " && cp " .. q(pair.key) .. " " .. q(key) .. " && chmod 600 " .. q(key))
  return crt, key
end

-- The first PEM certificate block in `text` (e.g. s_client -showcerts).
function M.first_pem(text)
  return text and text:match("%-%-%-%-%-BEGIN CERTIFICATE%-%-%-%-%-.-%-%-%-%-%-END CERTIFICATE%-%-%-%-%-")
end

-- Runs `openssl x509 -noout ARGS` on a PEM text (or, with opts.file, on a
-- file) and returns the output.
local function x509(pem, args)
  local path = os.tmpname()
  gateway.write_file(path, pem)
  local out, code = run("openssl x509 -noout " .. args .. " -in " .. q(path))
  os.remove(path)
  if code ~= 0 then error("openssl x509 " .. args .. " failed: " .. out, 3) end
  return out
end

function M.x509_text(pem) return x509(pem, "-text") end

-- "AB:CD:..." (the SHA-256 fingerprint as openssl prints it).
function M.fingerprint(pem)
  local out = x509(pem, "-fingerprint -sha256")
  return (assert(out:match("Fingerprint=([%x:]+)"), out))
end

-- The subject as openssl prints it with -nameopt RFC2253 (e.g.
-- "CN=a.test.example").
function M.subject(pem)
  local out = x509(pem, "-subject -nameopt RFC2253")
  return (assert(out:match("subject=%s*([^\n]*)"), out))
end

-- The DNS names of the subjectAltName extension, as a list.
function M.dns_names(pem)
  local out = x509(pem, "-ext subjectAltName")
  local names = {}
  for n in out:gmatch("DNS:([^,%s]+)") do names[#names + 1] = n end
  return names
end

function M.file_fingerprint(path)
  return M.fingerprint(assert(gateway.read_file(path), "cannot read " .. path))
end

-- openssl s_client -starttls smtp against 127.0.0.1:port (stdin closed, so it
-- ends after the handshake). Returns the output and the first certificate
-- the server presented (PEM, or nil). extra: more s_client arguments.
function M.s_client(port, extra)
  local out, code = run("timeout -k 5 30 openssl s_client -starttls smtp -connect " ..
    q("127.0.0.1:" .. port) .. " -showcerts " .. (extra or "") .. " </dev/null")
  return out, M.first_pem(out), code
end

return M
