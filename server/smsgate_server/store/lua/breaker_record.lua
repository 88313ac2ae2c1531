-- What one call to a provider account did, fed to its breaker.
-- KEYS[1] the breaker hash (keys.breaker_key).
-- ARGV[1] now (ms; 0: Redis's clock), ARGV[2] the caller's token, ARGV[3] '1'
-- when the call failed, ARGV[4] its error code ('' when it did not fail),
-- ARGV[5] failures in a row that open it, ARGV[6] the window (ms), ARGV[7]
-- calls the window needs before its rate counts, ARGV[8] the failure rate that
-- opens it (0-1], ARGV[9] cooldown (ms), ARGV[10] (optional) successful calls
-- that ended before this one and were not recorded yet (dispatch/guard.py
-- sends a closed breaker's successes in bulk): counted first, closed only;
-- ARGV[11] (optional) the failure count (fs) the caller knew when the newest
-- of the successes sent (ARGV[10]'s, and this call's when it did not fail)
-- ended ('': this call's end, now).
-- Closed: the call counts in the window (WINDOW_SLOTS buckets of a tenth of it,
-- fields wb<i> bucket number, wc<i> calls, wf<i> failures, reused in turn, so
-- the hash never grows) and in the run of failures (cf); either threshold
-- opens it. Successes end the run, but only of the failures recorded before
-- them: those counted after ARGV[11]'s fs (other replicas' while they waited)
-- stay in it. Open: results of calls begun before it opened change nothing.
-- Half-open: only the probe holder's result counts; success closes it,
-- failure opens it again for another cooldown.
-- Also kept: opens (times opened), oa (when it last opened), lc and lt (code
-- and time of the last failure), fs (failures ever recorded, in any state).
-- Returns {state after, 1 when this call opened it, cooldown end (ms, 0 unless
-- open), now, fs}.
local WINDOW_SLOTS = 10
local now = tonumber(ARGV[1])
if now == 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local failed = ARGV[3] == '1'
local b = redis.call('HMGET', KEYS[1], 'st', 'until', 'pr', 'cf', 'fs')
local st = tonumber(b[1]) or 0
local fs = tonumber(b[5]) or 0

local function clear_window()
  local fields = {}
  for i = 0, WINDOW_SLOTS - 1 do
    fields[#fields + 1] = 'wb' .. i
    fields[#fields + 1] = 'wc' .. i
    fields[#fields + 1] = 'wf' .. i
  end
  redis.call('HDEL', KEYS[1], unpack(fields))
end

local function open()
  local untl = now + tonumber(ARGV[9])
  redis.call('HSET', KEYS[1], 'st', 1, 'until', untl, 'oa', now, 'cf', 0)
  redis.call('HINCRBY', KEYS[1], 'opens', 1)
  redis.call('HDEL', KEYS[1], 'pr', 'pe')
  clear_window()
  return {1, 1, untl, now, fs}
end

local before = fs
if failed then
  redis.call('HSET', KEYS[1], 'lc', ARGV[4], 'lt', now)
  fs = redis.call('HINCRBY', KEYS[1], 'fs', 1)
end
if st == 1 then
  return {1, 0, tonumber(b[2]) or 0, now, fs}
end
if st == 2 then
  if b[3] ~= ARGV[2] then
    return {2, 0, 0, now, fs}
  end
  if failed then
    return open()
  end
  redis.call('HSET', KEYS[1], 'st', 0, 'cf', 0)
  redis.call('HDEL', KEYS[1], 'until', 'pr', 'pe')
  clear_window()
  return {0, 0, 0, now, fs}
end

local width = math.max(1, math.floor(tonumber(ARGV[6]) / WINDOW_SLOTS))
local bucket = math.floor(now / width)
local slot = bucket % WINDOW_SLOTS
if tonumber(redis.call('HGET', KEYS[1], 'wb' .. slot)) ~= bucket then
  redis.call('HSET', KEYS[1], 'wb' .. slot, bucket, 'wc' .. slot, 0, 'wf' .. slot, 0)
end
local earlier = tonumber(ARGV[10] or '0') or 0
redis.call('HINCRBY', KEYS[1], 'wc' .. slot, 1 + earlier)
local cf = tonumber(b[4]) or 0
-- The run of failures left after the successes of this call: those recorded
-- after the newest of them ended (none when it ended now).
local kept = cf
if earlier > 0 or not failed then
  local seen = tonumber(ARGV[11] or '')
  kept = seen and math.min(cf, math.max(before - seen, 0)) or 0
end
local run = 0
if failed then
  redis.call('HINCRBY', KEYS[1], 'wf' .. slot, 1)
  run = kept + 1
  redis.call('HSET', KEYS[1], 'cf', run)
elseif kept ~= cf then
  redis.call('HSET', KEYS[1], 'cf', kept)
end
if not failed then
  return {0, 0, 0, now, fs}
end
if run >= tonumber(ARGV[5]) then
  return open()
end
local calls, failures = 0, 0
for i = 0, WINDOW_SLOTS - 1 do
  local w = redis.call('HMGET', KEYS[1], 'wb' .. i, 'wc' .. i, 'wf' .. i)
  local wb = tonumber(w[1])
  if wb and wb > bucket - WINDOW_SLOTS then
    calls = calls + (tonumber(w[2]) or 0)
    failures = failures + (tonumber(w[3]) or 0)
  end
end
if calls >= tonumber(ARGV[7]) and failures >= tonumber(ARGV[8]) * calls then
  return open()
end
return {0, 0, 0, now, fs}
