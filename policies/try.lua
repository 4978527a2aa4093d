-- try.lua: opportunistic TLS both ways. Inbound STARTTLS is offered but
-- plaintext is accepted (level "may"); outbound TLS is tried and plaintext
-- is the fallback ("may"), except to a destination whose MX hosts publish
-- DNSSEC-signed TLSA records ("dane": TLS authenticated by them; a failed
-- TLSA lookup defers), else to a domain that publishes an MTA-STS policy
-- in enforce mode ("sts": verified TLS to the MX hosts it names).
-- Per recipient domain, from gateway.ini: [domain:NAME] `tls = LEVEL` is the
-- outbound level for NAME only (it wins over DANE and MTA-STS); `tls_in = encrypt`
-- refuses mail addressed to NAME on a session without TLS (530 5.7.0),
-- `tls_in = verify` also without a trusted client certificate (550 5.7.1),
-- from every client.
-- Choose it for a public MX: it never refuses a sender for lack of TLS, and
-- you raise the bar only for the domains that need it.

local gateway = require "gateway"

local policy = {}

function policy.server_tls()
  return gateway.MAY
end

function policy.client_tls(ctx) -- [domain:NAME] tls, else DANE, else MTA-STS, else may
  return gateway.domain_level(ctx, gateway.dane(ctx, gateway.mta_sts(ctx, gateway.MAY)))
end

function policy.rcpt(ctx) -- [domain:NAME] tls_in: none, encrypt or verify
  return gateway.rcpt_tls_verdict(ctx, gateway.domain_tls_in(ctx))
end

return policy
