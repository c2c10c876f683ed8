-- wrk script of bench/p3.sh: sends pre-signed channel requests (mkt-bench-p3 sign), each once.
-- wrk's Lua has no HMAC and the gateway refuses a nonce it has seen, so every request is signed
-- ahead with its own nonce; thread k of n sends lines k, k+n, k+2n, ... of the file.
-- Environment:
--   P3_REQUESTS  the file: target<TAB>channel_id<TAB>timestamp<TAB>nonce<TAB>signature lines
--   P3_THREADS   wrk's -t (each thread needs to know its share)
--   P3_RATE      requests/s for the whole run (0: as fast as possible); paced per thread on a
--                monotonic clock, so the rate holds whatever the latency (open loop, as long as
--                connections are free)
-- When a thread runs out of lines it sends them again: the gateway refuses those replays (401),
-- which wrk counts as non-2xx responses and bench/p3.sh reports as a failed run.
local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } p3_timespec;
  int clock_gettime(int clock_id, p3_timespec *tp);
]]

local file = os.getenv("P3_REQUESTS")
local nthreads = tonumber(os.getenv("P3_THREADS") or "1")
local rate = tonumber(os.getenv("P3_RATE") or "0")

local next_thread_id = 0
function setup(thread)
  thread:set("thread_id", next_thread_id)
  next_thread_id = next_thread_id + 1
end

local requests = {}
local count = 0
local index = 0
local interval_ms = 0
local next_at = nil
local now_ts = ffi.new("p3_timespec")

local function now_ms()
  ffi.C.clock_gettime(1, now_ts) -- CLOCK_MONOTONIC
  return tonumber(now_ts.tv_sec) * 1000 + tonumber(now_ts.tv_nsec) / 1e6
end

function init(args)
  local line_no = 0
  for line in io.lines(file) do
    if line_no % nthreads == thread_id then
      local target, channel, ts, nonce, sig = line:match("^(%S+)\t(%S+)\t(%S+)\t(%S+)\t(%S+)$")
      count = count + 1
      requests[count] = wrk.format("GET", target, {
        ["X-Channel-Id"] = channel,
        ["X-Timestamp"] = ts,
        ["X-Nonce"] = nonce,
        ["X-Signature"] = sig,
      })
    end
    line_no = line_no + 1
  end
  if rate > 0 then interval_ms = 1000 * nthreads / rate end
end

function request()
  index = index + 1
  if index > count then index = 1 end
  return requests[index]
end

if rate > 0 then
  function delay()
    local now = now_ms()
    if next_at == nil then next_at = now end
    local wait = next_at - now
    next_at = next_at + interval_ms
    -- Behind schedule (every connection was busy): send at once, without trying to catch up by
    -- bursting, so the rate stays the asked one.
    if wait < -1000 then next_at = now + interval_ms end
    if wait <= 0 then return 0 end
    return wait
  end
end
