-- Unit specs of lua/gateway/init.lua (the policies' helper module); no engine.

local gateway = require "gateway"

describe("gateway levels", function()
  it("names the seven levels", function()
    assert.are.equal("none", gateway.NONE)
    assert.are.equal("may", gateway.MAY)
    assert.are.equal("encrypt", gateway.ENCRYPT)
    assert.are.equal("verify", gateway.VERIFY)
    assert.are.equal("dane", gateway.DANE)
    assert.are.equal("dane-only", gateway.DANE_ONLY)
    assert.are.equal("sts", gateway.STS)
    assert.are.same({ "none", "may", "dane", "sts", "encrypt", "verify", "dane-only" }, gateway.LEVELS)
  end)

  it("is_level accepts exactly the seven names, in any case", function()
    for _, l in ipairs(gateway.LEVELS) do
      assert.is_true(gateway.is_level(l))
      assert.is_true(gateway.is_level(l:upper()))
    end
    assert.is_true(gateway.is_level("Verify"))
    assert.is_true(gateway.is_level("mAy"))
    assert.is_true(gateway.is_level("DANE-Only"))
    for _, v in ipairs({ " may", "may ", "", "secure", "dane_only", "daneonly", "maybe", "verified" }) do
      assert.is_false(gateway.is_level(v), v)
    end
    assert.is_false(gateway.is_level(nil))
    assert.is_false(gateway.is_level(1))
    assert.is_false(gateway.is_level({}))
    assert.is_false(gateway.is_level(true))
  end)

  it("level gives the lower-case name, or nil", function()
    assert.are.equal("may", gateway.level("MAY"))
    assert.are.equal("verify", gateway.level("Verify"))
    assert.are.equal("none", gateway.level("none"))
    for _, v in ipairs({ "maybe", "", " may", 1, true, {} }) do
      assert.is_nil(gateway.level(v), tostring(v))
    end
    assert.is_nil(gateway.level(nil))
  end)

  it("level_rank and at_least take any case", function()
    assert.are.equal(4, gateway.level_rank("VERIFY"))
    assert.is_true(gateway.at_least("Encrypt", "MAY"))
    assert.is_false(gateway.at_least("may", "ENCRYPT"))
  end)

  it("level_rank orders none < may < encrypt < verify", function()
    assert.are.equal(1, gateway.level_rank("none"))
    assert.are.equal(2, gateway.level_rank("may"))
    assert.are.equal(3, gateway.level_rank("encrypt"))
    assert.are.equal(4, gateway.level_rank("verify"))
  end)

  it("level_rank ranks dane as may and dane-only as verify (what they guarantee)", function()
    assert.are.equal(2, gateway.level_rank("dane"))
    assert.are.equal(4, gateway.level_rank("dane-only"))
    assert.is_true(gateway.at_least("dane-only", "encrypt"))
    assert.is_false(gateway.at_least("dane", "encrypt"))
  end)

  it("level_rank raises on a non-level, naming it", function()
    assert.has_error(function() gateway.level_rank("verfy") end,
      'gateway.level_rank: not a TLS level: "verfy" (expected none, may, encrypt, verify, dane, dane-only or sts)')
    assert.has_error(function() gateway.level_rank(nil) end)
    assert.has_error(function() gateway.level_rank(3) end)
  end)

  it("at_least compares levels", function()
    assert.is_true(gateway.at_least("verify", "encrypt"))
    assert.is_true(gateway.at_least("encrypt", "encrypt"))
    assert.is_false(gateway.at_least("may", "encrypt"))
    assert.is_true(gateway.at_least("none", "none"))
    assert.is_false(gateway.at_least("none", "may"))
    for _, a in ipairs(gateway.LEVELS) do
      assert.is_true(gateway.at_least(a, "none"))
      assert.is_true(gateway.at_least("verify", a))
    end
  end)

  it("at_least raises when either side is not a level", function()
    assert.has_error(function() gateway.at_least("high", "may") end)
    assert.has_error(function() gateway.at_least("may", nil) end)
  end)

  it("reports a level error at the caller's line", function()
    -- (not a tail call: a tail call leaves no caller's line to report)
    local ok, err = pcall(function() local r = gateway.level_rank("x"); return r end)
    assert.is_false(ok)
    assert.matches("gateway_spec.lua:%d+: gateway.level_rank", err)
  end)
end)

describe("gateway verdicts", function()
  it("accept() is the string accept", function()
    assert.are.equal("accept", gateway.accept())
  end)

  it("reject builds the table", function()
    assert.are.same({ action = "reject", code = 550, text = "5.7.1 no" }, gateway.reject(550, "5.7.1 no"))
    assert.are.same({ action = "reject", code = 450, text = "4.7.1 later" }, gateway.reject(450, "4.7.1 later"))
    assert.are.same({ action = "reject", code = 400, text = "x" }, gateway.reject(400, "x"))
    assert.are.same({ action = "reject", code = 599, text = "x" }, gateway.reject(599, "x"))
  end)

  it("tempfail builds the table", function()
    assert.are.same({ action = "tempfail", code = 451, text = "4.3.0 try again" },
      gateway.tempfail(451, "4.3.0 try again"))
    assert.are.same({ action = "tempfail", code = 499, text = "x" }, gateway.tempfail(499, "x"))
  end)

  it("reject refuses codes outside 4xx/5xx", function()
    for _, code in ipairs({ 250, 399, 600, 0, -550, 550.5 }) do
      assert.has_error(function() gateway.reject(code, "5.7.1 no") end,
        "gateway.reject: code must be an integer from 400 to 599, got " .. tostring(code))
    end
    assert.has_error(function() gateway.reject("550", "5.7.1 no") end,
      'gateway.reject: code must be an integer from 400 to 599, got "550"')
    assert.has_error(function() gateway.reject(nil, "x") end)
    assert.has_error(function() gateway.reject(0 / 0, "x") end)
    assert.has_error(function() gateway.reject(math.huge, "x") end)
  end)

  it("tempfail refuses anything but 4xx", function()
    for _, code in ipairs({ 550, 500, 399, 250, 450.1 }) do
      assert.has_error(function() gateway.tempfail(code, "4.7.1 later") end,
        "gateway.tempfail: code must be an integer from 400 to 499, got " .. tostring(code))
    end
  end)

  it("refuses a text that is not one non-empty line", function()
    assert.has_error(function() gateway.reject(550, nil) end,
      "gateway.reject: text must be a string, got nil")
    assert.has_error(function() gateway.reject(550, 42) end,
      "gateway.reject: text must be a string, got 42")
    assert.has_error(function() gateway.reject(550, "") end,
      "gateway.reject: text must not be empty")
    for _, text in ipairs({ "a\r\n550 b", "a\nb", "a\rb", "a\0b", "tab\there", "bell\7", "del\127" }) do
      assert.has_error(function() gateway.reject(550, text) end)
      assert.has_error(function() gateway.tempfail(450, text) end)
    end
    local ok, err = pcall(gateway.tempfail, 450, "two\nlines")
    assert.is_false(ok)
    assert.matches("gateway.tempfail: text must be one line without control characters", err, 1, true)
  end)

  it("accepts UTF-8 text", function()
    assert.are.equal("5.7.1 Empfänger abgelehnt", gateway.reject(550, "5.7.1 Empfänger abgelehnt").text)
  end)

  it("reports a verdict error at the caller's line", function()
    local ok, err = pcall(function() local v = gateway.reject(250, "ok"); return v end)
    assert.is_false(ok)
    assert.matches("gateway_spec.lua:%d+: gateway.reject: code", err)
  end)

  it("is_verdict accepts what the builders make", function()
    assert.is_true(gateway.is_verdict("accept"))
    assert.is_true(gateway.is_verdict(gateway.reject(554, "5.7.1 no")))
    assert.is_true(gateway.is_verdict(gateway.reject(421, "4.7.0 bye")))
    assert.is_true(gateway.is_verdict(gateway.tempfail(450, "4.2.0 later")))
  end)

  it("is_verdict refuses malformed verdicts with a message", function()
    local bad = {
      { nil, "a verdict is \"accept\" or a table, got nil" },
      { "reject", "a verdict is \"accept\" or a table, got \"reject\"" },
      { "ACCEPT", nil },
      { true, nil },
      { {}, "verdict action must be \"reject\" or \"tempfail\", got nil" },
      { { action = "accept" }, nil },
      { { action = "reject", code = 250, text = "x" }, "reject code must be an integer from 400 to 599, got 250" },
      { { action = "tempfail", code = 550, text = "x" }, "tempfail code must be an integer from 400 to 499, got 550" },
      { { action = "reject", code = 550 }, nil },
      { { action = "reject", code = 550, text = "" }, nil },
      { { action = "reject", code = 550, text = "a\nb" }, nil },
      { { action = "reject", code = 550, text = "x", extra = 1 }, "unknown verdict field \"extra\"" },
      { { action = "reject", code = 550, text = "x", [1] = "y" }, "unknown verdict field 1" },
    }
    for i, case in ipairs(bad) do
      local ok, msg = gateway.is_verdict(case[1])
      assert.is_false(ok, "case " .. i)
      assert.is_string(msg, "case " .. i)
      if case[2] then
        assert.are.equal(case[2], msg, "case " .. i)
      end
    end
  end)
end)

describe("gateway.domain_of", function()
  it("takes the lower-cased part after the last @", function()
    assert.are.equal("example.com", gateway.domain_of("user@example.com"))
    assert.are.equal("example.com", gateway.domain_of("User@Example.COM"))
    assert.are.equal("b.example", gateway.domain_of('"a@x"@b.example'))
    assert.are.equal("sub.partner.example", gateway.domain_of("u@SUB.Partner.Example"))
    assert.are.equal("[192.0.2.1]", gateway.domain_of("u@[192.0.2.1]"))
  end)

  it("ignores surrounding angle brackets", function()
    assert.are.equal("example.com", gateway.domain_of("<u@Example.com>"))
  end)

  it("gives nil without a domain", function()
    assert.is_nil(gateway.domain_of("postmaster"))
    assert.is_nil(gateway.domain_of("user@"))
    assert.is_nil(gateway.domain_of(""))
    assert.is_nil(gateway.domain_of("<>"))
    assert.is_nil(gateway.domain_of(nil))
    assert.is_nil(gateway.domain_of(42))
    assert.is_nil(gateway.domain_of({}))
  end)
end)

describe("gateway.domain_matches", function()
  it("matches a plain pattern exactly, ignoring case", function()
    assert.is_true(gateway.domain_matches("example.com", "example.com"))
    assert.is_true(gateway.domain_matches("Example.COM", "example.com"))
    assert.is_true(gateway.domain_matches("example.com", "EXAMPLE.com"))
    assert.is_false(gateway.domain_matches("a.example.com", "example.com"))
    assert.is_false(gateway.domain_matches("badexample.com", "example.com"))
    assert.is_false(gateway.domain_matches("example.com.evil", "example.com"))
  end)

  it("matches a .pattern against subdomains only", function()
    assert.is_true(gateway.domain_matches("a.example.com", ".example.com"))
    assert.is_true(gateway.domain_matches("a.b.example.com", ".example.com"))
    assert.is_true(gateway.domain_matches("A.Example.Com", ".EXAMPLE.com"))
    assert.is_false(gateway.domain_matches("example.com", ".example.com"))
    assert.is_false(gateway.domain_matches("badexample.com", ".example.com"))
    assert.is_false(gateway.domain_matches(".example.com", ".example.com"))
  end)

  it("matches nothing for a domain that is not a non-empty string", function()
    assert.is_false(gateway.domain_matches(nil, "example.com"))
    assert.is_false(gateway.domain_matches("", "example.com"))
    assert.is_false(gateway.domain_matches(5, ".example.com"))
  end)

  it("raises on a pattern that is not a domain", function()
    assert.has_error(function() gateway.domain_matches("example.com", nil) end,
      "gateway.domain_matches: pattern must be a domain or .domain, got nil")
    assert.has_error(function() gateway.domain_matches("example.com", "") end)
    assert.has_error(function() gateway.domain_matches("example.com", ".") end)
    assert.has_error(function() gateway.domain_matches("example.com", {}) end)
  end)
end)

describe("gateway.cidr_contains (IPv4)", function()
  it("matches within the prefix", function()
    assert.is_true(gateway.cidr_contains("10.0.0.0/8", "10.0.0.1"))
    assert.is_true(gateway.cidr_contains("10.0.0.0/8", "10.255.255.255"))
    assert.is_false(gateway.cidr_contains("10.0.0.0/8", "11.0.0.0"))
    assert.is_false(gateway.cidr_contains("10.0.0.0/8", "9.255.255.255"))
  end)

  it("handles prefixes that end inside a byte", function()
    assert.is_true(gateway.cidr_contains("172.16.0.0/12", "172.16.0.1"))
    assert.is_true(gateway.cidr_contains("172.16.0.0/12", "172.31.255.255"))
    assert.is_false(gateway.cidr_contains("172.16.0.0/12", "172.32.0.0"))
    assert.is_false(gateway.cidr_contains("172.16.0.0/12", "172.15.255.255"))
    assert.is_true(gateway.cidr_contains("192.0.2.128/25", "192.0.2.200"))
    assert.is_false(gateway.cidr_contains("192.0.2.128/25", "192.0.2.127"))
    assert.is_true(gateway.cidr_contains("128.0.0.0/1", "255.1.2.3"))
    assert.is_false(gateway.cidr_contains("128.0.0.0/1", "127.255.255.255"))
    assert.is_true(gateway.cidr_contains("192.0.2.6/31", "192.0.2.7"))
    assert.is_false(gateway.cidr_contains("192.0.2.6/31", "192.0.2.8"))
  end)

  it("/0 matches every IPv4 address and /32 exactly one", function()
    assert.is_true(gateway.cidr_contains("0.0.0.0/0", "0.0.0.0"))
    assert.is_true(gateway.cidr_contains("0.0.0.0/0", "255.255.255.255"))
    assert.is_true(gateway.cidr_contains("0.0.0.0/0", "192.0.2.1"))
    assert.is_true(gateway.cidr_contains("192.0.2.1/32", "192.0.2.1"))
    assert.is_false(gateway.cidr_contains("192.0.2.1/32", "192.0.2.0"))
    assert.is_false(gateway.cidr_contains("192.0.2.1/32", "192.0.2.2"))
  end)

  it("takes a bare address as /32 and ignores host bits in the network", function()
    assert.is_true(gateway.cidr_contains("192.0.2.1", "192.0.2.1"))
    assert.is_false(gateway.cidr_contains("192.0.2.1", "192.0.2.2"))
    assert.is_true(gateway.cidr_contains("10.1.2.3/8", "10.200.0.1"))
  end)

  it("never matches an IPv6 address against an IPv4 network", function()
    assert.is_false(gateway.cidr_contains("0.0.0.0/0", "::1"))
    assert.is_false(gateway.cidr_contains("10.0.0.0/8", "::ffff:10.0.0.1"))
    assert.is_false(gateway.cidr_contains("0.0.0.0/0", "::"))
  end)

  it("gives false for a malformed IPv4 address", function()
    for _, ip in ipairs({ "10.0.0", "10.0.0.0.1", "10.0.0.256", "10.0.0.-1", "010.0.0.1", "10.0.0.01",
      "10.0.0.1 ", " 10.0.0.1", "10.0.0.1/32", "1e1.0.0.1", "0x0a.0.0.1", "10..0.1", "", "localhost",
      "10.0.0.1000" }) do
      assert.is_false(gateway.cidr_contains("0.0.0.0/0", ip), ip)
    end
    assert.is_false(gateway.cidr_contains("0.0.0.0/0", nil))
    assert.is_false(gateway.cidr_contains("0.0.0.0/0", 167772161))
    assert.is_false(gateway.cidr_contains("0.0.0.0/0", {}))
  end)

  it("raises on a malformed IPv4 network", function()
    for _, cidr in ipairs({ "10.0.0.0/33", "10.0.0.0/", "/8", "10.0.0/8", "10.0.0.0/8/8", "10.0.0.0/-1",
      "10.0.0.0/ 8", "10.0.0.0/0x8", "256.0.0.0/8", "10.0.0.0/1234", "", "any" }) do
      assert.has_error(function() gateway.cidr_contains(cidr, "10.0.0.1") end, nil, cidr)
    end
    assert.has_error(function() gateway.cidr_contains(nil, "10.0.0.1") end,
      "gateway.cidr_contains: CIDR must be a string, got nil")
    assert.has_error(function() gateway.cidr_contains("10.0.0.0/33", "10.0.0.1") end,
      'gateway.cidr_contains: prefix length over 32 in "10.0.0.0/33"')
    assert.has_error(function() gateway.cidr_contains("10.0.0/8", "10.0.0.1") end,
      'gateway.cidr_contains: not a CIDR network: "10.0.0/8"')
  end)

  it("raises on a malformed network even when the address is malformed too", function()
    assert.has_error(function() gateway.cidr_contains("10.0.0.0/99", "nonsense") end)
  end)
end)

describe("gateway.cidr_contains (IPv6)", function()
  it("matches within the prefix", function()
    assert.is_true(gateway.cidr_contains("2001:db8::/32", "2001:db8::1"))
    assert.is_true(gateway.cidr_contains("2001:db8::/32", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"))
    assert.is_false(gateway.cidr_contains("2001:db8::/32", "2001:db9::1"))
    assert.is_false(gateway.cidr_contains("2001:db8::/32", "2001:db7:ffff::1"))
  end)

  it("handles prefixes that end inside a byte or a group", function()
    assert.is_true(gateway.cidr_contains("fd00::/8", "fd12:3456::1"))
    assert.is_false(gateway.cidr_contains("fd00::/8", "fc00::1"))
    assert.is_true(gateway.cidr_contains("fc00::/7", "fc00::1"))
    assert.is_true(gateway.cidr_contains("fc00::/7", "fdff::1"))
    assert.is_false(gateway.cidr_contains("fc00::/7", "fe00::1"))
    assert.is_true(gateway.cidr_contains("fe80::/10", "febf::1"))
    assert.is_false(gateway.cidr_contains("fe80::/10", "fec0::1"))
    assert.is_true(gateway.cidr_contains("2001:db8:abcd:12::/63", "2001:db8:abcd:13::5"))
    assert.is_false(gateway.cidr_contains("2001:db8:abcd:12::/63", "2001:db8:abcd:14::5"))
    assert.is_true(gateway.cidr_contains("2001:db8::8000/113", "2001:db8::ffff"))
    assert.is_false(gateway.cidr_contains("2001:db8::8000/113", "2001:db8::7fff"))
  end)

  it("/0 matches every IPv6 address and /128 exactly one", function()
    assert.is_true(gateway.cidr_contains("::/0", "::"))
    assert.is_true(gateway.cidr_contains("::/0", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"))
    assert.is_true(gateway.cidr_contains("::/0", "2001:db8::1"))
    assert.is_true(gateway.cidr_contains("::1/128", "::1"))
    assert.is_true(gateway.cidr_contains("::1/128", "0:0:0:0:0:0:0:1"))
    assert.is_true(gateway.cidr_contains("::1/128", "0000:0000:0000:0000:0000:0000:0000:0001"))
    assert.is_false(gateway.cidr_contains("::1/128", "::2"))
    assert.is_false(gateway.cidr_contains("::1/128", "::"))
    assert.is_false(gateway.cidr_contains("::1/128", "1::"))
    assert.is_true(gateway.cidr_contains("2001:db8::7/128", "2001:db8::7"))
    assert.is_true(gateway.cidr_contains("2001:db8::7", "2001:db8::7"))
    assert.is_false(gateway.cidr_contains("2001:db8::7", "2001:db8::8"))
  end)

  it("understands every placement of ::", function()
    assert.is_true(gateway.cidr_contains("1::/128", "1:0:0:0:0:0:0:0"))
    assert.is_true(gateway.cidr_contains("1:2::8/128", "1:2:0:0:0:0:0:8"))
    assert.is_true(gateway.cidr_contains("1:2:3:4:5:6:7::/128", "1:2:3:4:5:6:7:0"))
    assert.is_true(gateway.cidr_contains("::2:3:4:5:6:7:8/128", "0:2:3:4:5:6:7:8"))
    assert.is_true(gateway.cidr_contains("1::7:8/128", "1:0:0:0:0:0:7:8"))
  end)

  it("ignores the case of hex digits", function()
    assert.is_true(gateway.cidr_contains("2001:DB8::/32", "2001:db8::1"))
    assert.is_true(gateway.cidr_contains("2001:db8::/32", "2001:DB8::ABCD"))
    assert.is_true(gateway.cidr_contains("FD00::/8", "fD12::Ab"))
    assert.is_true(gateway.cidr_contains("2001:db8::abcd/128", "2001:DB8:0:0:0:0:0:AbCd"))
  end)

  it("reads an embedded dotted quad in the last 32 bits", function()
    assert.is_true(gateway.cidr_contains("::ffff:0:0/96", "::ffff:192.0.2.1"))
    assert.is_true(gateway.cidr_contains("::ffff:192.0.2.0/120", "::ffff:192.0.2.77"))
    assert.is_false(gateway.cidr_contains("::ffff:192.0.2.0/120", "::ffff:192.0.3.77"))
    assert.is_true(gateway.cidr_contains("::ffff:c000:0201/128", "::ffff:192.0.2.1"))
    assert.is_true(gateway.cidr_contains("64:ff9b::/96", "64:ff9b::198.51.100.1"))
    assert.is_true(gateway.cidr_contains("1:2:3:4:5:6:c000:201/128", "1:2:3:4:5:6:192.0.2.1"))
  end)

  it("never matches an IPv4 address against an IPv6 network", function()
    assert.is_false(gateway.cidr_contains("::/0", "10.0.0.1"))
    assert.is_false(gateway.cidr_contains("::ffff:0:0/96", "10.0.0.1"))
  end)

  it("gives false for a malformed IPv6 address", function()
    for _, ip in ipairs({
      ":", ":::", "1:::2", "1::2::3", ":1::2", "1::2:", "1:2:3:4:5:6:7", "1:2:3:4:5:6:7:8:9",
      "1::2:3:4:5:6:7:8", "12345::", "g::1", "::1%eth0", "[::1]", "fe80::1%1", "1:2:3:4:5:6:7:8::",
      "::1.2.3", "::1.2.3.4.5", "::256.0.0.1", "1.2.3.4::", "::1.2.3.4:5", "1:2:3:4:5:6:7:1.2.3.4",
      ":: 1", "::-1", "::+1", "::0x1",
    }) do
      assert.is_false(gateway.cidr_contains("::/0", ip), ip)
    end
  end)

  it("raises on a malformed IPv6 network", function()
    for _, cidr in ipairs({ "2001:db8::/129", "2001:db8::/", "2001:db8:::/32", "2001:db8::g/32",
      "::1/128/1", "[::1]/128" }) do
      assert.has_error(function() gateway.cidr_contains(cidr, "::1") end, nil, cidr)
    end
    assert.has_error(function() gateway.cidr_contains("::/129", "::1") end,
      'gateway.cidr_contains: prefix length over 128 in "::/129"')
  end)
end)

describe("gateway.ip_family", function()
  it("tells IPv4 from IPv6 and nonsense", function()
    assert.are.equal(4, gateway.ip_family("192.0.2.1"))
    assert.are.equal(6, gateway.ip_family("2001:db8::1"))
    assert.are.equal(6, gateway.ip_family("::ffff:192.0.2.1"))
    assert.is_nil(gateway.ip_family("192.0.2"))
    assert.is_nil(gateway.ip_family("2001:db8::1::"))
    assert.is_nil(gateway.ip_family(nil))
  end)
end)

describe("gateway.in_networks", function()
  local nets = { "127.0.0.0/8", "192.0.2.0/24", "::1/128", "2001:db8::/32" }

  it("matches when any network contains the address", function()
    assert.is_true(gateway.in_networks(nets, "127.0.0.1"))
    assert.is_true(gateway.in_networks(nets, "192.0.2.99"))
    assert.is_true(gateway.in_networks(nets, "::1"))
    assert.is_true(gateway.in_networks(nets, "2001:DB8:1::2"))
    assert.is_false(gateway.in_networks(nets, "198.51.100.1"))
    assert.is_false(gateway.in_networks(nets, "::2"))
  end)

  it("gives false for an empty list or a malformed address", function()
    assert.is_false(gateway.in_networks({}, "127.0.0.1"))
    assert.is_false(gateway.in_networks(nets, "not an ip"))
    assert.is_false(gateway.in_networks(nets, nil))
  end)

  it("raises on a list that is not a table or holds a malformed network", function()
    assert.has_error(function() gateway.in_networks("10.0.0.0/8", "10.0.0.1") end,
      'gateway.in_networks: list must be an array of CIDR strings, got "10.0.0.0/8"')
    assert.has_error(function() gateway.in_networks(nil, "10.0.0.1") end)
    -- every entry is checked, also after a match and for a malformed ip
    assert.has_error(function() gateway.in_networks({ "10.0.0.0/8", "10.0.0.0/40" }, "10.0.0.1") end,
      'gateway.in_networks: prefix length over 32 in "10.0.0.0/40"')
    assert.has_error(function() gateway.in_networks({ "bogus" }, "nonsense") end)
    assert.has_error(function() gateway.in_networks({ 10 }, "10.0.0.1") end)
  end)
end)

describe("gateway levels: sts", function()
  it("is an outbound level ranked as may (it falls back to may without an enforce policy)", function()
    assert.are.equal("sts", gateway.STS)
    assert.are.equal("sts", gateway.level("STS"))
    assert.is_true(gateway.is_level("Sts"))
    assert.are.equal(2, gateway.level_rank("sts"))
    assert.is_false(gateway.at_least("sts", "encrypt"))
    assert.is_true(gateway.at_least("sts", "may"))
  end)
end)

describe("gateway.mta_sts", function()
  local enforce = { mode = "enforce", mx = { "mx.example.test" } }

  it("gives sts for an enforce policy, else the level it was given", function()
    assert.are.equal("sts", gateway.mta_sts({ mta_sts = enforce }, "may"))
    assert.are.equal("sts", gateway.mta_sts({ mta_sts = enforce }, "none"))
    assert.are.equal("may", gateway.mta_sts({}, "MAY"))
    assert.are.equal("verify", gateway.mta_sts({ mta_sts = { mode = "testing", mx = {} } }, "verify"))
    assert.are.equal("encrypt", gateway.mta_sts({ mta_sts = { mode = "none", mx = {} } }, "encrypt"))
    assert.are.equal("may", gateway.mta_sts(nil, "may"))
    assert.are.equal("may", gateway.mta_sts({ mta_sts = "enforce" }, "may"))
  end)

  it("raises on a level that is not one", function()
    assert.has_error(function() gateway.mta_sts({}, "strict") end,
      'gateway.mta_sts: level is not a TLS level: "strict"')
    assert.has_error(function() gateway.mta_sts({}, nil) end)
  end)
end)

describe("gateway.domain_level", function()
  it("takes section.tls when it is a level", function()
    for _, l in ipairs(gateway.LEVELS) do
      assert.are.equal(l, gateway.domain_level({ section = { name = "domain:x.example", tls = l } }, "may"))
    end
  end)

  it("gives the section's level and the default in lower case", function()
    assert.are.equal("verify", gateway.domain_level({ section = { name = "domain:x", tls = "VERIFY" } }, "may"))
    assert.are.equal("may", gateway.domain_level({}, "MAY"))
  end)

  it("reads tls only, never tls_in", function()
    assert.are.equal("may", gateway.domain_level({ section = { name = "domain:x", tls_in = "verify" } }, "may"))
    assert.are.equal("none", gateway.domain_level({ section = { name = "domain:x", tls = "none",
      tls_in = "verify" } }, "may"))
  end)

  it("falls back to the default without a section, without tls, or with a bad level", function()
    assert.are.equal("may", gateway.domain_level({}, "may"))
    assert.are.equal("encrypt", gateway.domain_level({ section = { name = "domain:x" } }, "encrypt"))
    assert.are.equal("may", gateway.domain_level({ section = { name = "domain:x", tls = "verified" } }, "may"))
    assert.are.equal("may", gateway.domain_level({ section = { name = "domain:x", tls = 3 } }, "may"))
    assert.are.equal("may", gateway.domain_level({ section = "verify" }, "may"))
    assert.is_nil(gateway.domain_level({}))
    assert.is_nil(gateway.domain_level(nil))
  end)

  it("raises on a default that is not a level", function()
    assert.has_error(function() gateway.domain_level({}, "secure") end,
      'gateway.domain_level: default is not a TLS level: "secure"')
  end)
end)

describe("gateway.domain_tls_in", function()
  local function ctx(section)
    return { stage = "rcpt", recipient = "u@partner.example", domain = "partner.example", section = section }
  end

  it("takes section.tls_in when it is encrypt or verify, in any case", function()
    assert.are.equal("encrypt", gateway.domain_tls_in(ctx({ name = "domain:partner.example", tls_in = "encrypt" })))
    assert.are.equal("verify", gateway.domain_tls_in(ctx({ name = "domain:partner.example", tls_in = "Verify" })))
  end)

  it("is none without a section, without tls_in, for none/may or a bad value", function()
    assert.are.equal("none", gateway.domain_tls_in(ctx(nil)))
    assert.are.equal("none", gateway.domain_tls_in(ctx({ name = "domain:partner.example", tls = "verify" })))
    for _, v in ipairs({ "none", "may", "strict", 3, true }) do
      assert.are.equal("none", gateway.domain_tls_in(ctx({ name = "domain:partner.example", tls_in = v })))
    end
    assert.are.equal("none", gateway.domain_tls_in(nil))
    assert.are.equal("none", gateway.domain_tls_in({ section = "verify" }))
  end)
end)

describe("gateway.rcpt_tls_verdict", function()
  local function ctx(level, active, peer, recipient)
    return {
      stage = "rcpt",
      recipient = recipient or "user@partner.example",
      domain = "partner.example",
      tls = { active = active, peer = peer or "none" },
      section = level and { name = "domain:partner.example", tls_in = level } or nil,
    }
  end
  local R530 = { action = "reject", code = 530, text = "5.7.0 Must issue a STARTTLS command first" }
  local function r550(addr)
    return { action = "reject", code = 550,
      text = "5.7.1 <" .. addr .. ">: Recipient address rejected: TLS with a verified client certificate required" }
  end

  it("accepts without a section or below encrypt, in plaintext too", function()
    assert.are.equal("accept", gateway.rcpt_tls_verdict(ctx(nil, false)))
    assert.are.equal("accept", gateway.rcpt_tls_verdict(ctx("none", false)))
    assert.are.equal("accept", gateway.rcpt_tls_verdict(ctx("may", false)))
  end)

  it("refuses plaintext under encrypt and verify with 530 5.7.0", function()
    assert.are.same(R530, gateway.rcpt_tls_verdict(ctx("encrypt", false)))
    assert.are.same(R530, gateway.rcpt_tls_verdict(ctx("verify", false)))
  end)

  it("accepts any TLS session under encrypt", function()
    assert.are.equal("accept", gateway.rcpt_tls_verdict(ctx("encrypt", true, "none")))
    assert.are.equal("accept", gateway.rcpt_tls_verdict(ctx("encrypt", true, "untrusted")))
  end)

  it("wants a trusted client certificate under verify (550 5.7.1 with the address)", function()
    assert.are.same(r550("user@partner.example"), gateway.rcpt_tls_verdict(ctx("verify", true, "none")))
    assert.are.same(r550("x@partner.example"),
      gateway.rcpt_tls_verdict(ctx("verify", true, "untrusted", "x@partner.example")))
    assert.are.equal("accept", gateway.rcpt_tls_verdict(ctx("verify", true, "trusted")))
  end)

  it("reads tls_in, not the outbound tls", function()
    local c = ctx(nil, false)
    c.section = { name = "domain:partner.example", tls = "verify" }
    assert.are.equal("accept", gateway.rcpt_tls_verdict(c))
    c.tls = { active = true, peer = "none" }
    assert.are.equal("accept", gateway.rcpt_tls_verdict(c))
  end)

  it("applies to relay_networks clients as to anyone", function()
    local c = ctx("encrypt", false)
    c.client = { ip = "127.0.0.1", port = 1, trusted = true }
    assert.are.same(R530, gateway.rcpt_tls_verdict(c))
  end)

  it("takes a level in any case", function()
    assert.are.same(R530, gateway.rcpt_tls_verdict(ctx(nil, false), "ENCRYPT"))
    assert.are.same(r550("user@partner.example"), gateway.rcpt_tls_verdict(ctx(nil, true, "none"), "Verify"))
    assert.are.same(R530, gateway.rcpt_tls_verdict(ctx("ENCRYPT", false)))
  end)

  it("takes an explicit level over the section's", function()
    assert.are.same(R530, gateway.rcpt_tls_verdict(ctx(nil, false), "encrypt"))
    assert.are.same(r550("user@partner.example"), gateway.rcpt_tls_verdict(ctx("may", true, "untrusted"), "verify"))
    assert.are.equal("accept", gateway.rcpt_tls_verdict(ctx("verify", false), "may"))
    assert.has_error(function() gateway.rcpt_tls_verdict(ctx(nil, false), "strict") end)
  end)

  it("treats a ctx without tls as plaintext", function()
    assert.are.same(R530, gateway.rcpt_tls_verdict({ recipient = "a@b", section = { tls_in = "verify" } }))
  end)

  it("returns well-formed verdicts", function()
    for _, level in ipairs({ "none", "may", "encrypt", "verify" }) do
      for _, active in ipairs({ true, false }) do
        for _, peer in ipairs({ "none", "untrusted", "trusted" }) do
          assert.is_true(gateway.is_verdict(gateway.rcpt_tls_verdict(ctx(level, active, peer))))
        end
      end
    end
  end)
end)

describe("gateway.dane", function()
  it("gives dane where ctx.dane is secure or bogus, else the level it was given", function()
    assert.are.equal("dane", gateway.dane({ dane = "secure" }, "may"))
    assert.are.equal("dane", gateway.dane({ dane = "bogus" }, "may"))
    assert.are.equal("dane", gateway.dane({ dane = "secure" }, "sts"))
    assert.are.equal("may", gateway.dane({ dane = "insecure" }, "MAY"))
    assert.are.equal("verify", gateway.dane({}, "verify"))
    assert.are.equal("may", gateway.dane(nil, "may"))
    assert.are.equal("may", gateway.dane({ dane = true }, "may"))
  end)

  it("comes before MTA-STS in the stock order (RFC 8461 §2)", function()
    local enforce = { mode = "enforce", mx = { "mx.example.test" } }
    local function level(ctx) return gateway.dane(ctx, gateway.mta_sts(ctx, gateway.MAY)) end
    assert.are.equal("dane", level({ dane = "secure", mta_sts = enforce }))
    assert.are.equal("sts", level({ dane = "insecure", mta_sts = enforce }))
    assert.are.equal("may", level({ dane = "insecure" }))
  end)

  it("raises on a level that is not one", function()
    assert.has_error(function() gateway.dane({}, "strict") end,
      'gateway.dane: level is not a TLS level: "strict"')
    assert.has_error(function() gateway.dane({ dane = "secure" }, nil) end)
  end)
end)
