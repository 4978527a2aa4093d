-- try.lua: opportunistic TLS both ways. Inbound STARTTLS is offered but
-- plaintext is accepted (level "may"); outbound TLS is tried and plaintext
-- is the fallback ("may"). A [domain:NAME] section's `tls = LEVEL` sets the
-- outbound level for that domain and, at encrypt or verify, refuses its
-- recipients inbound on a session without TLS (530) or, at verify, without a
-- trusted client certificate (550 5.7.1).
-- Choose it for a public MX: it never refuses a sender for lack of TLS, and
-- you raise the bar only for the domains that need it.

local gateway = require "gateway"

local policy = {}

function policy.server_tls()
  return gateway.MAY
end

function policy.client_tls(ctx)
  return gateway.domain_level(ctx, gateway.MAY)
end

function policy.rcpt(ctx)
  return gateway.rcpt_tls_verdict(ctx)
end

return policy
