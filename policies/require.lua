-- require.lua: mandatory encryption both ways, without certificate checks.
-- Inbound, a client must STARTTLS before MAIL (level "encrypt": 530 until
-- it does); outbound, delivery needs TLS but accepts any server certificate
-- ("encrypt").
-- Per recipient domain, from gateway.ini: [domain:NAME] `tls = LEVEL`
-- replaces the outbound level for NAME (up or down); `tls_in = verify`
-- refuses mail addressed to NAME from a client without a trusted client
-- certificate (550 5.7.1).
-- Choose it for a relay between known systems that all speak TLS, where a
-- passive eavesdropper must see nothing but certificates are not managed.

local gateway = require "gateway"

local policy = {}

function policy.server_tls()
  return gateway.ENCRYPT
end

function policy.client_tls(ctx) -- [domain:NAME] tls, else this default
  return gateway.domain_level(ctx, gateway.ENCRYPT)
end

function policy.rcpt(ctx) -- [domain:NAME] tls_in: none, encrypt or verify
  return gateway.rcpt_tls_verdict(ctx, gateway.domain_tls_in(ctx))
end

return policy
