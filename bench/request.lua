-- wrk script of `make bench`: the requests of the file named by REQ_FILE (written by rig.py),
-- sent in turn. Per request: the path, header lines, a blank line, the body on one line;
-- requests are separated by a line with a single "%".

local requests = {}

local function parse(block)
  local lines = {}
  for line in (block .. "\n"):gmatch("(.-)\n") do lines[#lines + 1] = line end
  local headers, i = {}, 2
  while lines[i] ~= nil and lines[i] ~= "" do
    local name, value = lines[i]:match("^([^:]+):%s*(.*)$")
    headers[name] = value
    i = i + 1
  end
  return wrk.format("POST", lines[1], headers, lines[i + 1] or "")
end

-- in init: wrk.host (the Host header) is known only from then on
init = function(args)
  local f = assert(io.open(os.getenv("REQ_FILE"), "r"))
  local text = f:read("*a")
  f:close()
  for block in (text .. "%\n"):gmatch("(.-)%%\n") do
    if block:match("%S") then requests[#requests + 1] = parse(block) end
  end
end

-- DELAY_MS (optional): each connection waits this long between its requests (a fixed offered load)
local pause = tonumber(os.getenv("DELAY_MS") or "")
if pause then
  delay = function() return pause end
end

local n = 0
request = function()
  n = n % #requests + 1
  return requests[n]
end
