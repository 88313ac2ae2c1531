-- Issue a code for one (app, phone, scope) if the resend policy allows it, and
-- invalidate the code it replaces. All keys share the phone's slot.
-- KEYS[1] code hash (c:<scope>), KEYS[2] cooldown (cd:<scope>), KEYS[3] send log (n),
-- KEYS[4] id index of the new code (i:<nonce>).
-- ARGV[1] key prefix, ARGV[2] now ms, ARGV[3] nonce, ARGV[4] code hash, ARGV[5] attempts,
-- ARGV[6] validity ms, ARGV[7] cooldown ms, ARGV[8] per-hour cap, ARGV[9] per-day cap,
-- ARGV[10] scope.
-- Returns {'ok'} | {'cooldown', ms to wait} | {'caps', ms to wait for the hour cap,
-- ms to wait for the day cap} (0 = that cap is not reached).
-- Times are compared with ARGV[2] (the server's clock); Redis TTLs only clean up.
local prefix, now, nonce = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local validity, cooldown = tonumber(ARGV[6]), tonumber(ARGV[7])
local HOUR, DAY = 3600000, 86400000

local ready = tonumber(redis.call('GET', KEYS[2]) or '0')
if ready > now then return {'cooldown', ready - now} end

redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - DAY)
-- How long until fewer than `cap` sends lie within `window`: the entry whose
-- leaving brings the count under the cap is the (count - cap + 1)-th oldest.
local function wait(window, cap)
  local since = '(' .. (now - window)
  local count = redis.call('ZCOUNT', KEYS[3], since, '+inf')
  if count < cap then return 0 end
  local e = redis.call('ZRANGEBYSCORE', KEYS[3], since, '+inf', 'WITHSCORES',
    'LIMIT', count - cap, 1)
  return math.max(tonumber(e[2]) + window - now, 1)
end
local hour, day = wait(HOUR, tonumber(ARGV[8])), wait(DAY, tonumber(ARGV[9]))
if hour > 0 or day > 0 then return {'caps', hour, day} end

-- Invalidate the code this one replaces (resend policy 'invalidate').
local old = redis.call('HGET', KEYS[1], 'n')
if old then redis.call('DEL', prefix .. 'i:' .. old) end
redis.call('HSET', KEYS[1], 'n', nonce, 'h', ARGV[4], 'left', ARGV[5], 'exp', now + validity)
redis.call('PEXPIRE', KEYS[1], validity)
redis.call('SET', KEYS[4], ARGV[10], 'PX', validity)
if cooldown > 0 then redis.call('SET', KEYS[2], now + cooldown, 'PX', cooldown) end
redis.call('ZADD', KEYS[3], now, nonce)
redis.call('PEXPIRE', KEYS[3], DAY)
return {'ok'}
