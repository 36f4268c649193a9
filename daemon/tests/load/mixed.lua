-- wrk script: a mix of recognize, register, list and delete against deepstackd.
-- Per 20 requests: 13 recognize, 3 register, 3 list, 1 delete (of a user this connection's
-- thread registered). Counts answers by route and status; `done` prints a JSON summary.
-- Photos come from the DEEPSTACK_PHOTOS directory (target/testdata).

local boundary = "wrk-load-boundary-5b2e"
local photos_dir = os.getenv("DEEPSTACK_PHOTOS") or "target/testdata"
local threads = {}
local counter = 0

local function read(name)
  local f = assert(io.open(photos_dir .. "/" .. name, "rb"))
  local data = f:read("*a")
  f:close()
  return data
end

local function multipart(parts)
  local out = {}
  for _, p in ipairs(parts) do
    local name, value, filename = p[1], p[2], p[3]
    out[#out + 1] = "--" .. boundary .. "\r\n"
    if filename then
      out[#out + 1] = 'Content-Disposition: form-data; name="' .. name .. '"; filename="' ..
        filename .. '"\r\nContent-Type: application/octet-stream\r\n\r\n'
    else
      out[#out + 1] = 'Content-Disposition: form-data; name="' .. name .. '"\r\n\r\n'
    end
    out[#out + 1] = value .. "\r\n"
  end
  out[#out + 1] = "--" .. boundary .. "--\r\n"
  return table.concat(out)
end

function setup(thread)
  thread:set("id", #threads + 1)
  threads[#threads + 1] = thread
end

local recognize_body, register_photo, headers
local registered = {}
local next_user, next_delete = 0, 1
stats = {}
stats_text = ""
bad_bodies = 0

function init(args)
  recognize_body = multipart({ { "image", read("obama2.jpg"), "obama2.jpg" } })
  register_photo = read("biden.jpg")
  headers = { ["Content-Type"] = "multipart/form-data; boundary=" .. boundary }
end

local schedule = { "recognize", "recognize", "register", "recognize", "list", "recognize",
  "recognize", "register", "recognize", "list", "recognize", "recognize", "delete",
  "recognize", "recognize", "register", "recognize", "list", "recognize", "recognize" }

function request()
  counter = counter + 1
  local op = schedule[(counter - 1) % #schedule + 1]
  if op == "delete" and next_delete > #registered then op = "list" end
  if op == "recognize" then
    return wrk.format("POST", "/v1/vision/face/recognize", headers, recognize_body)
  elseif op == "register" then
    next_user = next_user + 1
    local userid = "load-t" .. id .. "-" .. next_user
    registered[#registered + 1] = userid
    local body = multipart({ { "image", register_photo, "biden.jpg" }, { "userid", userid } })
    return wrk.format("POST", "/v1/vision/face/register", headers, body)
  elseif op == "delete" then
    local userid = registered[next_delete]
    next_delete = next_delete + 1
    return wrk.format("POST", "/v1/vision/face/delete", headers,
      multipart({ { "userid", userid } }))
  else
    return wrk.format("POST", "/v1/vision/face/list", headers, multipart({}))
  end
end

function response(status, hdrs, body)
  -- wrk does not say which request an answer belongs to (connections interleave), so the
  -- route is told from the body: each route's success answer has its own field.
  local op
  if string.find(body, '"predictions"', 1, true) then op = "recognize"
  elseif string.find(body, '"message"', 1, true) then op = "register"
  elseif string.find(body, '"faces"', 1, true) then op = "list"
  elseif body == '{"success":true,"duration":0}' then op = "delete"
  else op = "error:" .. (string.match(body, '"error":"([^"]*)"') or body) end
  local key = tostring(status)
  stats[op] = stats[op] or {}
  stats[op][key] = (stats[op][key] or 0) + 1
  if status == 200 and not string.find(body, '"success":true', 1, true) then
    bad_bodies = bad_bodies + 1
  end
  -- wrk 4.1 crashes copying nested tables between threads (thread:get): hand over a string.
  local lines = {}
  for o, by_status in pairs(stats) do
    for st, n in pairs(by_status) do lines[#lines + 1] = o .. "\t" .. st .. "\t" .. n end
  end
  stats_text = table.concat(lines, "\n")
end

function done(summary, latency, requests)
  local totals, non200 = {}, 0
  for _, t in ipairs(threads) do
    for line in string.gmatch(t:get("stats_text") or "", "[^\n]+") do
      local op, status, n = string.match(line, "^(.*)\t(%d+)\t(%d+)$")
      n = tonumber(n)
      totals[op] = totals[op] or {}
      totals[op][status] = (totals[op][status] or 0) + n
      if status ~= "200" then non200 = non200 + n end
    end
    non200 = non200 + t:get("bad_bodies")
  end
  local secs = summary.duration / 1e6
  io.write(string.format(
    "RESULT requests=%d seconds=%.1f rps=%.1f p50_ms=%.1f p90_ms=%.1f p99_ms=%.1f max_ms=%.1f " ..
    "socket_errors=%d non200_or_bad=%d\n",
    summary.requests, secs, summary.requests / secs,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    non200))
  for op, by_status in pairs(totals) do
    local parts = {}
    for status, n in pairs(by_status) do parts[#parts + 1] = status .. ":" .. n end
    io.write("ROUTE " .. op .. " " .. table.concat(parts, " ") .. "\n")
  end
end
