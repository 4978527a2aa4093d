-- require.lua: mandatory encryption both ways, without certificate checks.
-- Inbound, a client must STARTTLS before MAIL (level "encrypt": 530 until
-- it does); outbound, delivery needs TLS but accepts any server certificate
-- ("encrypt"). A [domain:NAME] section's `tls = LEVEL` replaces the outbound
-- level for that domain (up or down) and, at verify, also requires a trusted
-- client certificate from sessions that send mail to it (550 5.7.1).
-- Choose it for a relay between known systems that all speak TLS, where a
-- passive eavesdropper must see nothing but certificates are not managed.

local gateway = require "gateway"

local policy = {}

function policy.server_tls()
  return gateway.ENCRYPT
end

function policy.client_tls(ctx)
  return gateway.domain_level(ctx, gateway.ENCRYPT)
end

function policy.rcpt(ctx)
  return gateway.rcpt_tls_verdict(ctx)
end

return policy
