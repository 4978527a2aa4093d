-- partner_verify.lua: a partner domain verified both ways; everyone else as
-- policies/try.lua. Use it from gateway.ini (paths are relative to the ini):
--
--   [gateway]
--   relay_domains = partner.example   ; we accept the partner's mail
--
--   [policy]
--   script = policies/partner_verify.lua
--
--   [domain:partner.example]          ; optional: a static route
--   next_hop = 192.0.2.25:25
--
-- Outbound: mail to partner.example and to its subdomains leaves only over
-- TLS with a server certificate that verifies ("verify"), whatever a
-- [domain:...] section says. Inbound: mail for partner.example is accepted
-- only from TLS sessions whose client certificate verifies: 530 5.7.0 on a
-- plaintext session, 550 5.7.1 on a TLS session without a trusted
-- certificate. The gateway asks for client certificates because its check
-- sees the rcpt answer for partner.example (a relay domain) change with
-- the certificate; a partner it never accepts mail for would need
-- `[tls] ask_client_cert = yes`. Other domains: STARTTLS offered,
-- plaintext accepted, and their [domain:NAME] tls (outbound) and tls_in
-- (inbound) honoured as by try.lua.

local gateway = require "gateway"

local PARTNER = "partner.example"

local policy = {}

function policy.server_tls()
  return gateway.MAY
end

function policy.client_tls(ctx)
  if gateway.domain_matches(ctx.domain, PARTNER)
    or gateway.domain_matches(ctx.domain, "." .. PARTNER) then
    return gateway.VERIFY
  end
  return gateway.domain_level(ctx, gateway.MAY)
end

function policy.rcpt(ctx)
  if gateway.domain_matches(ctx.domain, PARTNER) then
    return gateway.rcpt_tls_verdict(ctx, gateway.VERIFY)
  end
  return gateway.rcpt_tls_verdict(ctx)
end

return policy
