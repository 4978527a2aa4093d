-- A raw SMTP client over luasocket for the integration specs: it sends bytes
-- exactly as given and reads replies exactly as they arrive (so CR/LF
-- handling can be asserted), with a timeout on every read.
--
--   local client = require "smtp_client"
--   local c = client.connect(gw:port())          -- reads the 220 banner
--   c:send("EHLO x\r\n")
--   local code, text, lines = c:read_reply()
--   c:expect("^250 ")                             -- next reply matches
--   c:cmd("NOOP", "250 2.0.0 Ok")                 -- send + exact reply
--   assert(c:closed())

local socket = require "socket"

local M = {}
M.TIMEOUT = 10

local Client = {}
Client.__index = Client

local open_clients = setmetatable({}, { __mode = "k" })

-- connect(port, opts): opts.host (default 127.0.0.1), opts.bind (local
-- address, e.g. "127.0.0.2"), opts.timeout, opts.banner = false to skip
-- reading the banner.
function M.connect(port, opts)
  opts = opts or {}
  local host = opts.host or "127.0.0.1"
  local sock, err
  local family = host:find(":", 1, true) and "inet6" or "inet"
  if opts.bind then
    sock, err = socket.connect(host, port, opts.bind, 0, family)
  else
    sock, err = socket.connect(host, port, nil, nil, family)
  end
  if not sock then
    error(string.format("connect to %s port %s failed: %s", host,
      tostring(port), tostring(err)), 2)
  end
  sock:setoption("tcp-nodelay", true)
  local self = setmetatable({
    sock = sock,
    buf = "",
    eof = false,
    err = nil,
    timeout = opts.timeout or M.TIMEOUT,
    transcript = {},
  }, Client)
  open_clients[self] = true
  if opts.banner ~= false then
    self.banner_code, self.banner = self:read_reply()
    if not self.banner_code then
      error("no banner: " .. tostring(self.banner), 2)
    end
  end
  return self
end

-- Reads whatever is available within `timeout` seconds into the buffer.
-- Returns true when new data arrived.
function Client:_fill(timeout)
  if self.eof then return false end
  local r = socket.select({ self.sock }, nil, math.max(timeout, 0))
  if not r or #r == 0 then
    -- select can miss luasocket's own buffer; try a non-blocking read anyway
  end
  self.sock:settimeout(0)
  local data, err, partial = self.sock:receive(65536)
  local got = data or partial
  if got and #got > 0 then
    self.buf = self.buf .. got
    self.transcript[#self.transcript + 1] = "S: " .. got
  end
  if err and err ~= "timeout" then
    self.eof = true
    self.err = err
  end
  return got ~= nil and #got > 0
end

-- One line including its line ending; nil, "closed"|"timeout" otherwise.
function Client:read_line(timeout)
  local deadline = socket.gettime() + (timeout or self.timeout)
  while true do
    local nl = self.buf:find("\n", 1, true)
    if nl then
      local line = self.buf:sub(1, nl)
      self.buf = self.buf:sub(nl + 1)
      return line
    end
    if self.eof then return nil, "closed" end
    local left = deadline - socket.gettime()
    if left <= 0 then return nil, "timeout" end
    self:_fill(math.min(left, 0.5))
  end
end

-- Reads one complete reply (all "NNN-" lines and the final "NNN " line).
-- Returns code (number), text (lines without CRLF joined by "\n"), lines;
-- or nil, "closed"/"timeout", partial text. Raises on a malformed reply.
function Client:read_reply(timeout)
  local lines = {}
  local deadline = socket.gettime() + (timeout or self.timeout)
  while true do
    local line, err = self:read_line(math.max(deadline - socket.gettime(), 0))
    if not line then
      return nil, err, table.concat(lines, "\n") .. self.buf
    end
    if line:sub(-2) ~= "\r\n" then
      error("reply line not terminated by CRLF: " .. string.format("%q", line), 2)
    end
    line = line:sub(1, -3)
    local code, sep = line:match("^(%d%d%d)([ -])")
    if not code and line:match("^%d%d%d$") then code, sep = line, " " end
    if not code then
      error("malformed reply line: " .. string.format("%q", line), 2)
    end
    if #lines > 0 and code ~= lines[1]:sub(1, 3) then
      error("multi-line reply changes code: " .. string.format("%q", line), 2)
    end
    lines[#lines + 1] = line
    if sep == " " then
      return tonumber(code), table.concat(lines, "\n"), lines
    end
  end
end

-- Reads the next reply and asserts that its full text matches the Lua
-- pattern `pattern`. Returns text, lines.
function Client:expect(pattern, timeout)
  local code, text, lines = self:read_reply(timeout)
  if not code then
    error(string.format("expected reply matching %q, got %s (%q)", pattern,
      tostring(text), tostring(lines)), 2)
  end
  if not text:find(pattern) then
    error(string.format("expected reply matching %q, got %q", pattern, text), 2)
  end
  return text, lines
end

-- Reads the next reply and asserts it is exactly `want` (single line).
function Client:expect_line(want, timeout)
  local code, text = self:read_reply(timeout)
  if not code then
    error(string.format("expected %q, got %s (%q)", want, tostring(text),
      tostring(select(3, self:read_reply(0)) or "")), 2)
  end
  if text ~= want then
    error(string.format("expected %q, got %q", want, text), 2)
  end
  return text
end

-- Sends bytes exactly as given in one send call.
function Client:send(data)
  self.transcript[#self.transcript + 1] = "C: " .. data
  self.sock:settimeout(self.timeout)
  local i = 1
  while i <= #data do
    local n, err, last = self.sock:send(data, i)
    if not n then
      if err == "timeout" and last and last >= i then
        i = last + 1
      else
        return nil, err
      end
    else
      i = n + 1
    end
  end
  return true
end

-- Sends "line\r\n"; when `want` is given the reply must equal it exactly
-- (or match it as a pattern when want starts with "^"). Returns the reply.
function Client:cmd(line, want, timeout)
  local ok, err = self:send(line .. "\r\n")
  if not ok then error("send failed: " .. tostring(err), 2) end
  if want == nil then return self:read_reply(timeout) end
  local code, text, lines = self:read_reply(timeout)
  if not code then
    error(string.format("%s: expected %q, got %s", line:sub(1, 60), want,
      tostring(text)), 2)
  end
  local ok2
  if want:sub(1, 1) == "^" then ok2 = text:find(want) ~= nil else ok2 = text == want end
  if not ok2 then
    error(string.format("%s: expected %q, got %q", line:sub(1, 60), want, text), 2)
  end
  return code, text, lines
end

-- EHLO helper: returns the list of reply lines without "250-"/"250 ".
function Client:ehlo(name)
  local _, text, lines = self:cmd("EHLO " .. (name or "client.test"), "^250")
  local out = {}
  for i, l in ipairs(lines) do out[i] = l:sub(5) end
  return out, text
end

-- Waits until the server closes the connection. Returns true when it
-- closed with nothing more to read; false, data when data arrived instead
-- (data is left unread in the buffer too); nil, "timeout" when still open.
function Client:closed(timeout)
  local deadline = socket.gettime() + (timeout or self.timeout)
  while not self.eof do
    local left = deadline - socket.gettime()
    if left <= 0 then return nil, "timeout" end
    self:_fill(math.min(left, 0.5))
    if #self.buf > 0 then return false, self.buf end
  end
  if #self.buf > 0 then return false, self.buf end
  return true
end

-- Anything the server sent that has not been read yet (waits briefly).
function Client:pending_data(wait)
  self:_fill(wait or 0.2)
  return self.buf
end

function Client:close()
  if self.sock then
    self.sock:close()
    self.sock = nil
  end
  open_clients[self] = nil
end

function Client:transcript_text()
  return table.concat(self.transcript)
end

-- Closes every client still open (for after_each).
function M.close_all()
  local list = {}
  for c in pairs(open_clients) do list[#list + 1] = c end
  for _, c in ipairs(list) do c:close() end
end

-- Is ::1 usable on this machine?
function M.have_ipv6()
  local s = socket.tcp6 and socket.tcp6()
  if not s then return false end
  local ok = s:bind("::1", 0)
  s:close()
  return ok and true or false
end

return M
