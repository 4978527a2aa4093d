-- require_verify.lua: mandatory encryption inbound ("encrypt": 530 until
-- STARTTLS), and outbound TLS with a server certificate that verifies
-- against [tls] ca_file for the next hop's name ("verify"). A
-- [domain:NAME] section's `tls = LEVEL` replaces the outbound level for that
-- domain (e.g. `tls = encrypt` for a partner with a self-signed
-- certificate) and, at verify, also requires a trusted client certificate
-- from sessions that send mail to it (550 5.7.1).
-- Choose it for a smarthost or gateway whose next hops all present
-- certificates from a CA you trust: it also stops an active attacker.

local gateway = require "gateway"

local policy = {}

function policy.server_tls()
  return gateway.ENCRYPT
end

function policy.client_tls(ctx)
  return gateway.domain_level(ctx, gateway.VERIFY)
end

function policy.rcpt(ctx)
  return gateway.rcpt_tls_verdict(ctx)
end

return policy
