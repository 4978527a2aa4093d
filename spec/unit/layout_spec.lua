-- The source layout (README "Source layout"): a file in src/X/ includes
-- only from its own folder and the folders below it; inbound/ and
-- outbound/ never include each other; proto/ does no I/O, and neither do
-- the queue manager's pure modules (PURE below), which include nothing of
-- the project but each other and proto/.
local lfs = require "lfs"

local ORDER = { proto = 0, core = 1, net = 2, policy = 3, spool = 4,
  inbound = 5, outbound = 5, cli = 6, proc = 6 }

-- Pure modules outside proto/: no I/O, no event loop, no clock.
local PURE = { ["outbound/scheduler.c"] = true, ["outbound/scheduler.h"] = true,
  ["outbound/idmap.c"] = true, ["outbound/idmap.h"] = true }

local function io_line(line)
  return line:match("#include <unistd%.h>") or line:match("#include <sys/socket%.h>")
    or line:match("%f[%w_]fopen%s*%(") or line:match("%f[%w_]read%s*%(%s*fd")
    or line:match("#include <ev%.h>")
end

local function root()
  local src = debug.getinfo(1, "S").source:sub(2)
  return (src:match("^(.*)/spec/unit/[^/]+$") or ".")
end

local function sources()
  local out = {}
  local base = root() .. "/src"
  for dir in lfs.dir(base) do
    local path = base .. "/" .. dir
    if ORDER[dir] and lfs.attributes(path, "mode") == "directory" then
      for f in lfs.dir(path) do
        if f:match("%.[ch]$") then out[#out + 1] = { dir = dir, file = path .. "/" .. f, name = dir .. "/" .. f } end
      end
    end
  end
  table.sort(out, function(a, b) return a.name < b.name end)
  return out
end

local function includes(file)
  local out = {}
  for line in io.lines(file) do
    local dir = line:match('^#include "([%w_]+)/[%w_]+%.h"')
    if dir then out[#out + 1] = dir end
  end
  return out
end

describe("src/ layout", function()
  local files = sources()

  it("has the folders of every layer", function()
    local seen = {}
    for _, f in ipairs(files) do seen[f.dir] = true end
    for dir in pairs(ORDER) do assert.truthy(seen[dir], "no src/" .. dir) end
  end)

  it("includes only from the same folder or a lower one", function()
    local bad = {}
    for _, f in ipairs(files) do
      for _, dir in ipairs(includes(f.file)) do
        local ok = dir == f.dir or (ORDER[dir] and ORDER[dir] < ORDER[f.dir])
        if not ok then bad[#bad + 1] = f.name .. " includes " .. dir .. "/" end
      end
    end
    assert.are.same({}, bad)
  end)

  it("keeps proto/ free of I/O", function()
    local bad = {}
    for _, f in ipairs(files) do
      if f.dir == "proto" then
        for line in io.lines(f.file) do
          if io_line(line) then bad[#bad + 1] = f.name .. ": " .. line end
        end
      end
    end
    assert.are.same({}, bad)
  end)

  it("keeps the queue manager's scheduler pure", function()
    local bad, seen = {}, 0
    for _, f in ipairs(files) do
      if PURE[f.name] then
        seen = seen + 1
        for line in io.lines(f.file) do
          local inc = line:match('^#include "([%w_/]+%.h)"')
          if io_line(line) or line:match("#include <time%.h>")
            or (inc and not PURE[inc:gsub("%.h$", ".c")] and not PURE[inc]
              and not inc:match("^proto/")) then
            bad[#bad + 1] = f.name .. ": " .. line
          end
        end
      end
    end
    assert.are.equal(4, seen)
    assert.are.same({}, bad)
  end)
end)
