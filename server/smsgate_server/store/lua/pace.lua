-- A provider account's pace: token buckets of messages and of calls per second,
-- shared by every replica, and the factor (0-1] by which the vendor's throttles
-- lowered both rates for a while (AIMD).
-- KEYS[1] the pace hash (keys.pace_key).
-- ARGV[1] 'take' or 'throttle', ARGV[2] now (ms; 0: Redis's clock), ARGV[3]
-- messages of the call, ARGV[4] configured messages per second (0: no limit),
-- ARGV[5] configured calls per second (0: no limit), ARGV[6] bucket size in
-- seconds of the rate, ARGV[7] the factor's floor, ARGV[8] the factor's step
-- back up, ARGV[9] the interval of a step (ms).
-- Fields: m and c tokens of messages and calls, at when they were counted
-- (ms), f the factor (absent: 1), fa when it last changed (ms), fd when a
-- throttle last lowered it (ms).
-- take: the call goes when the buckets hold min(messages, size) message tokens
-- and one call token; it takes all its messages, going into debt if it must (a
-- call larger than the bucket still goes once the bucket is full, and later
-- calls wait out the debt). Otherwise nothing is taken.
-- throttle: halve the factor (not below the floor), unless it was lowered less
-- than a step's interval ago: the calls in flight when a vendor starts to
-- throttle all come back throttled, and they are one signal, not many.
-- The factor grows back by the step per interval since it last changed.
-- Returns {ms to wait (take: 0 when taken; throttle: 0 when it lowered the
-- factor, 1 when the signal was one already counted), the factor as
-- a string (Lua numbers would come back truncated)}.
local now = tonumber(ARGV[2])
if now == 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local n, rate_m, rate_c = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local burst, floor, step, interval =
  tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local b = redis.call('HMGET', KEYS[1], 'm', 'c', 'at', 'f', 'fa', 'fd')
local f, fa = tonumber(b[4]) or 1, tonumber(b[5]) or now
if f < 1 and now > fa then
  local steps = math.floor((now - fa) / interval)
  if steps > 0 then
    f = math.min(1, f + steps * step)
    fa = fa + steps * interval
  end
end

-- Idle accounts leave nothing behind: a missing hash is full buckets at full
-- rate, so it may go once both are true.
local function keep(full_in_ms)
  local recover_ms = 0
  if f < 1 then
    recover_ms = math.ceil((1 - f) / step) * interval
  end
  redis.call('PEXPIRE', KEYS[1], math.ceil(math.max(full_in_ms, recover_ms)) + 1000)
end

if ARGV[1] == 'throttle' then
  if b[6] and now - tonumber(b[6]) < interval then
    return {1, tostring(f)}
  end
  f = math.max(floor, f / 2)
  redis.call('HSET', KEYS[1], 'f', tostring(f), 'fa', now, 'fd', now)
  keep(burst * 1000)
  return {0, tostring(f)}
end

local at = tonumber(b[3]) or now
local elapsed = math.max(0, now - at)
local wait, full_in = 0, 0
local tokens = {}
for i, rate in ipairs({rate_m * f, rate_c * f}) do
  local need = 1
  if i == 1 then
    need = n
  end
  if rate > 0 then
    local size = math.max(rate * burst, 1)
    local have = tonumber(b[i]) or size
    have = math.min(size, have + elapsed * rate / 1000)
    local want = math.min(need, size)
    if have < want then
      wait = math.max(wait, math.ceil((want - have) * 1000 / rate))
    end
    tokens[i] = have - need
    full_in = math.max(full_in, (size - tokens[i]) * 1000 / rate)
  else
    tokens[i] = 0
  end
end
if wait > 0 then
  return {wait, tostring(f)}
end
redis.call('HSET', KEYS[1], 'm', tostring(tokens[1]), 'c', tostring(tokens[2]), 'at', now,
  'f', tostring(f), 'fa', fa)
keep(full_in)
return {0, tostring(f)}
