-- wrk script for bench/run.py: POSTs pre-generated webhook bodies in rotation, giving every event
-- a fresh log_id (streamer ignores redelivered log_ids, so reused bodies would measure dedup).
--
--   wrk -t1 -c32 -d8s -s bench/wrk_logs.lua URL -- BODIES_FILE RUN_ID TOKEN MARKERS_PER_EVENT
--
-- BODIES_FILE holds one JSON body per line in which every log_id is the marker @@LOGID@@
-- (MARKERS_PER_EVENT occurrences per event: envelope log_id, data.log_id, data._id).

local MARKER = "@@LOGID@@"
local bodies, per_event, prefix = {}, 1, ""
local index, sequence = 0, 0
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("thread_number", threads)
end

local function split(line)
  local parts, start = {}, 1
  while true do
    local first, last = string.find(line, MARKER, start, true)
    if not first then
      parts[#parts + 1] = string.sub(line, start)
      return parts
    end
    parts[#parts + 1] = string.sub(line, start, first - 1)
    start = last + 1
  end
end

function init(args)
  for line in io.lines(args[1]) do
    bodies[#bodies + 1] = split(line)
  end
  prefix = "900" .. args[2] .. string.format("%02d", thread_number)
  per_event = tonumber(args[4])
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. args[3]
end

function request()
  index = index % #bodies + 1
  local parts = bodies[index]
  local out, log_id = { parts[1] }, nil
  for i = 2, #parts do
    if (i - 2) % per_event == 0 then
      sequence = sequence + 1
      log_id = prefix .. string.format("%030d", sequence)
    end
    out[#out + 1] = log_id
    out[#out + 1] = parts[i]
  end
  return wrk.format(nil, nil, nil, table.concat(out))
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT requests=%d duration_us=%d status_errors=%d socket_errors=%d "
                         .. "p50_us=%d p99_us=%d\n",
                         summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
                         latency:percentile(50), latency:percentile(99)))
end
