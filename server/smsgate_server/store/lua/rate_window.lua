-- A fixed-window counter: take one unit if the window has room, or give one back.
-- KEYS[1] the window's counter. ARGV[1] 'take' | 'give', ARGV[2] limit,
-- ARGV[3] TTL ms (the window plus slack).
-- Returns 1 when taken or given back, 0 when the window is full.
if ARGV[1] == 'give' then
  -- Only a counter that still exists: DECR would create one without a TTL.
  if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('DECR', KEYS[1]) end
  return 1
end
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n >= tonumber(ARGV[2]) then return 0 end
redis.call('INCR', KEYS[1])
if n == 0 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return 1
