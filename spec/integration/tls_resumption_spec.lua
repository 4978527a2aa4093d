-- Inbound TLS session resumption (README "TLS", "Session resumption"):
-- session tickets at TLS 1.2 and 1.3 with keys the master shares with every
-- worker, the self-test at start and reload, [tls] session_lifetime, and no
-- ticket for a client that showed a certificate. The clients are Debian's
-- openssl s_client: -reconnect at TLS 1.2, -sess_out / -sess_in at TLS 1.3.
-- The key ring's rotation is unit-tested in spec/c/test_tls_resume.c.

local gateway = require "harness"
local tlss = require "tls_support"

local q = gateway.shell_quote

local SELFTEST_OK = "event=tls_resumption status=ok versions=TLSv1.2,TLSv1.3"

local function count(text, plain)
  local n, from = 0, 1
  while true do
    local s, e = text:find(plain, from, true)
    if not s then return n end
    n, from = n + 1, e + 1
  end
end

-- openssl s_client -starttls smtp with more arguments; returns its output.
-- It sends QUIT and reads until the server closes: at TLS 1.3 the tickets
-- come after the handshake, and a client that closed at once could miss
-- them.
local function s_client(gw, extra)
  local out = gateway.run("printf 'QUIT\\n' | timeout -k 5 30 openssl s_client" ..
    " -starttls smtp -connect " .. q("127.0.0.1:" .. gw:port()) ..
    " -ign_eof -crlf " .. (extra or ""))
  return out
end

-- The event=tls lines of the run, as { proc =, resumed = } in order.
local function tls_lines(gw)
  local out = {}
  for _, line in ipairs(gw:log_lines("event=tls ")) do
    out[#out + 1] = { proc = line:match(" proc=(%S+)"),
      resumed = line:match(" resumed=(%S+)"), line = line }
  end
  return out
end

-- Saves a TLS 1.3 session to a new file; returns its path and the worker
-- that issued it (its proc= name).
local function new_session(gw)
  local before = #tls_lines(gw)
  local path = gw:dir() .. "/session." .. tostring(before + 1)
  local out = s_client(gw, "-tls1_3 -sess_out " .. q(path))
  assert.truthy(out:find("New, TLSv1.3", 1, true), out)
  assert.truthy(out:find("TLS session ticket:", 1, true), out)
  assert.truthy(out:find("221 ", 1, true), out)
  local lines = gw:wait_log_count("event=tls ", before + 1)
  assert(gateway.exists(path), "s_client saved no session:\n" .. out)
  local last = lines[#lines]
  assert.are.equal("no", last:match(" resumed=(%S+)"), last)
  return path, last:match(" proc=(%S+)")
end

-- Offers the saved session; returns s_client's output and the last
-- event=tls line as { proc =, resumed = }.
local function offer(gw, path)
  local before = #tls_lines(gw)
  local out = s_client(gw, "-tls1_3 -sess_in " .. q(path))
  gw:wait_log_count("event=tls ", before + 1)
  local lines = tls_lines(gw)
  return out, lines[#lines]
end

describe("TLS session resumption", function()
  after_each(function() gateway.cleanup() end)

  describe("with the defaults", function()
    local gw
    before_each(function()
      gw = gateway.start()
      gw:wait_children(3)
    end)

    it("passes its loopback self-test at start, before it listens", function()
      local log = gw:log()
      local s = log:find(SELFTEST_OK .. " lifetime=3600s", 1, true)
      assert.truthy(s, log)
      assert.truthy(s < log:find("event=listen", 1, true), log)
    end)

    it("resumes every reconnect at TLS 1.2 (openssl s_client -reconnect)", function()
      local out = s_client(gw, "-tls1_2 -reconnect")
      assert.are.equal(1, count(out, "New, TLSv1.2"), out)
      assert.are.equal(5, count(out, "Reused, TLSv1.2"), out)
      local lines = gw:wait_log_count("event=tls ", 6)
      local resumed = 0
      for _, l in ipairs(tls_lines(gw)) do
        if l.resumed == "yes" then resumed = resumed + 1 end
      end
      assert.are.equal(5, resumed, table.concat(lines, "\n"))
    end)

    it("resumes a saved TLS 1.3 session (s_client -sess_out, then -sess_in)", function()
      local path = new_session(gw)
      for _ = 1, 2 do
        local out, line = offer(gw, path)
        assert.truthy(out:find("Reused, TLSv1.3", 1, true), out)
        assert.are.equal("yes", line.resumed, line.line)
      end
    end)

    it("sends a new ticket after each TLS 1.3 resumption (for single-use tickets)", function()
      local path = new_session(gw)
      for i = 1, 3 do
        local before = #tls_lines(gw)
        local next_path = path .. "." .. i
        local out = s_client(gw, "-tls1_3 -sess_in " .. q(path) .. " -sess_out " .. q(next_path))
        assert.truthy(out:find("Reused, TLSv1.3", 1, true), out)
        assert.truthy(out:find("Post-Handshake New Session Ticket arrived", 1, true), out)
        local lines = gw:wait_log_count("event=tls ", before + 1)
        assert.truthy(lines[#lines]:find(" resumed=yes ", 1, true), lines[#lines])
        path = next_path -- each ticket is used once, as RFC 8446 C.4 asks
      end
    end)

    it("resumes on a worker other than the one that issued the ticket", function()
      local path, issuer = new_session(gw)
      local pid = assert(gw:children()[issuer], issuer).pid
      -- The issuer stopped, only the other worker can take the connection.
      gateway.run("kill -STOP " .. pid)
      local ok, out, line = pcall(offer, gw, path)
      gateway.run("kill -CONT " .. pid)
      assert(ok, out)
      assert.truthy(out:find("Reused, TLSv1.3", 1, true), out)
      assert.are_not.equal(issuer, line.proc, line.line)
      assert.are.equal("yes", line.resumed, line.line)
    end)

    it("still resumes a ticket from before a reload, and tests itself again", function()
      local path, issuer = new_session(gw)
      local old_pid = gw:children()[issuer].pid
      gw:signal("HUP")
      gw:wait_log("event=reload status=ok")
      gw:wait_log_count(SELFTEST_OK, 2)
      -- Only new workers listen now: every resumption below is theirs.
      assert(gateway.wait_for(function()
        local n = 0
        for name, c in pairs(gw:children()) do
          if name:match("^worker") and c.generation == 2 then n = n + 1 end
        end
        return n >= 2
      end), gw:log())
      gw:wait_log_count("event=retire", 2)
      local out, line = offer(gw, path)
      assert.truthy(out:find("Reused, TLSv1.3", 1, true), out)
      assert.are.equal("yes", line.resumed, line.line)
      assert.are_not.equal(old_pid, gw:children()[line.proc].pid)
    end)
  end)

  it("is off with session_lifetime = 0: no ticket, and the self-test says why", function()
    local gw = gateway.start({ sections = { tls = { session_lifetime = "0" } } })
    gw:wait_log('event=tls_resumption status=unavailable reason="%[tls%] session_lifetime = 0"')
    local out = s_client(gw, "-tls1_2 -reconnect")
    assert.are.equal(0, count(out, "Reused,"), out)
    assert.are.equal(0, count(out, "TLS session ticket:"), out)
  end)

  it("issues no ticket to a client that presented a certificate", function()
    local pki = tlss.make_pki(gateway.mktempdir() .. "/pki")
    local gw = gateway.start({ sections = { tls = { ask_client_cert = "yes",
      ca_file = pki.ca.crt } } })
    gw:wait_log(SELFTEST_OK)
    -- With a certificate: checked on every connection, never resumed.
    local out = s_client(gw, "-tls1_2 -reconnect -cert " .. q(pki.client.crt) ..
      " -key " .. q(pki.client.key))
    assert.are.equal(0, count(out, "Reused,"), out)
    local lines = gw:wait_log_count("event=tls .* peer=Trusted", 6)
    for _, l in ipairs(lines) do assert.truthy(l:find(" resumed=no ", 1, true), l) end
    -- At TLS 1.3 too: the handshake completes, no ticket follows it.
    local path = gw:dir() .. "/with-cert.session"
    out = s_client(gw, "-tls1_3 -sess_out " .. q(path) .. " -cert " ..
      q(pki.client.crt) .. " -key " .. q(pki.client.key))
    assert.truthy(out:find("New, TLSv1.3", 1, true), out)
    assert.truthy(out:find("221 ", 1, true), out)
    assert.falsy(out:find("TLS session ticket:", 1, true), out)
    assert.falsy(gateway.exists(path), out)
    gw:wait_log_count("event=tls .* peer=Trusted", 7)
    -- Without one: resumed (as Anonymous, which it is).
    out = s_client(gw, "-tls1_2 -reconnect")
    assert.are.equal(5, count(out, "Reused, TLSv1.2"), out)
  end)
end)
