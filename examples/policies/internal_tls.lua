-- internal_tls.lua: internal networks and internal domains must use TLS.
-- Use it from gateway.ini (paths are relative to the ini):
--
--   [policy]
--   script = policies/internal_tls.lua
--
-- Inbound: clients from the private networks below must STARTTLS before
-- MAIL ("encrypt", else 530); everyone else is offered STARTTLS ("may").
-- Outbound: every domain under internal.example (a.internal.example, ...)
-- gets "encrypt"; every other domain "may". This policy does not consult
-- [domain:...] tls settings.

local gateway = require "gateway"

local INTERNAL_NETWORKS = {
  "10.0.0.0/8",
  "172.16.0.0/12",
  "192.168.0.0/16",
  "fd00::/8",
}

local INTERNAL_DOMAINS = ".internal.example"

local policy = {}

function policy.server_tls(ctx)
  if gateway.in_networks(INTERNAL_NETWORKS, ctx.client.ip) then
    return gateway.ENCRYPT
  end
  return gateway.MAY
end

function policy.client_tls(ctx)
  if gateway.domain_matches(ctx.domain, INTERNAL_DOMAINS) then
    return gateway.ENCRYPT
  end
  return gateway.MAY
end

return policy
