-- require_verify.lua: mandatory encryption inbound ("encrypt": 530 until
-- STARTTLS), and outbound TLS with a server certificate that verifies
-- against [tls] ca_file for the next hop's name ("verify").
-- Per recipient domain, from gateway.ini: [domain:NAME] `tls = LEVEL`
-- replaces the outbound level for NAME (e.g. `tls = encrypt` for a partner
-- with a self-signed certificate); `tls_in = verify` refuses mail addressed
-- to NAME from a client without a trusted client certificate (550 5.7.1).
-- Choose it for a smarthost or gateway whose next hops all present
-- certificates from a CA you trust: it also stops an active attacker.

local gateway = require "gateway"

local policy = {}

function policy.server_tls()
  return gateway.ENCRYPT
end

function policy.client_tls(ctx) -- [domain:NAME] tls, else this default
  return gateway.domain_level(ctx, gateway.VERIFY)
end

function policy.rcpt(ctx) -- [domain:NAME] tls_in: none, encrypt or verify
  return gateway.rcpt_tls_verdict(ctx, gateway.domain_tls_in(ctx))
end

return policy
