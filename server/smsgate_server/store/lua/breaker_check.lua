-- A provider account's breaker, asked whether a call may go through now.
-- KEYS[1] the breaker hash (keys.breaker_key).
-- ARGV[1] now (ms; 0: Redis's own clock, shared by every replica), ARGV[2] the
-- caller's token (one per gate instance), ARGV[3] probe lease (ms).
-- Open until its cooldown ends, then half-open: the probe goes to one caller at
-- a time, for a lease, so a prober that died frees it when the lease ends; the
-- holder asking again is refused like anyone else (two calls of one process
-- asking at once must not both probe).
-- Fields: st state (0 closed, 1 open, 2 half-open), until (ms, end of the
-- cooldown), pr the probe holder's token, pe the end of its lease (ms), fs
-- failures ever recorded (breaker_record.lua).
-- Returns {state, 1 when the caller holds the probe, ms until the answer may
-- change (0: unknown), now, fs}.
local now = tonumber(ARGV[1])
if now == 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local b = redis.call('HMGET', KEYS[1], 'st', 'until', 'pr', 'pe', 'fs')
local st = tonumber(b[1]) or 0
local fs = tonumber(b[5]) or 0
if st == 0 then
  return {0, 0, 0, now, fs}
end
if st == 1 then
  local untl = tonumber(b[2]) or 0
  if now < untl then
    return {1, 0, untl - now, now, fs}
  end
end
local holder, lease_end = b[3] or '', tonumber(b[4]) or 0
if st == 1 or holder == '' or now >= lease_end then
  redis.call('HSET', KEYS[1], 'st', 2, 'pr', ARGV[2], 'pe', now + tonumber(ARGV[3]))
  return {2, 1, 0, now, fs}
end
return {2, 0, lease_end - now, now, fs}
